# SPDX-License-Identifier: MIT
"""A multiprocessing pool of Python workers sharing one model through
mbroker: each worker process attaches the model once (one physical copy
for the whole pool) and serves requests from its read-only tensors.  When
the model is replaced (`mbctl reload whisper`), each worker moves to the
new generation between two requests: it attaches the new one, then lets
go of the old, so it never serves without a model.

    build/mbrokerd --socket /tmp/mb/broker.sock --model whisper=model.safetensors &
    PYTHONPATH=bindings/python python3 examples/python_pool.py /tmp/mb/broker.sock whisper [REQUESTS]
"""
import multiprocessing
import sys

import numpy as np

import mbroker

_client = None
_model = None


def _attach(socket_path, name):
    """Pool initializer: one connection and one attachment per process."""
    global _client, _model
    _client = mbroker.connect(socket_path)
    # On unload or shutdown the broker signals: let go of everything.
    mbroker.handle_unload_signal(_client)
    _model = _client.attach(name)


def _follow():
    """Between two requests: moves to a new generation the broker
    replaced the model with, if any (no signal comes for that)."""
    global _model
    for event in _client.events():
        if event.type == "replaced":
            _model = _client.follow_replace(_model, event)


def infer(seed):
    """A stand-in for inference: a pass over one tensor's bytes, read
    through the shared mapping (no copy)."""
    _follow()
    name = sorted(_model.tensors)[seed % len(_model.tensors)]
    weights = np.frombuffer(_model.tensor_bytes(name), dtype=np.uint8)
    return seed, name, float(weights.mean()), _model.generation


def main():
    socket_path, name = sys.argv[1], sys.argv[2]
    requests = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    with multiprocessing.Pool(4, initializer=_attach,
                              initargs=(socket_path, name)) as pool:
        for seed, name, score, generation in pool.imap(infer,
                                                        range(requests)):
            print(f"request {seed}: {name} {score:.3f} "
                  f"(generation {generation})", flush=True)


if __name__ == "__main__":
    main()
