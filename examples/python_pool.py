# SPDX-License-Identifier: MIT
"""A multiprocessing pool of Python workers sharing one model through
mbroker: each worker process attaches the model once (one physical copy
for the whole pool) and serves requests from its read-only tensors.

    build/mbrokerd --socket /tmp/mb/broker.sock --model whisper=model.safetensors &
    PYTHONPATH=bindings/python python3 examples/python_pool.py /tmp/mb/broker.sock whisper
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


def infer(seed):
    """A stand-in for inference: a pass over one tensor's bytes, read
    through the shared mapping (no copy)."""
    name = sorted(_model.tensors)[seed % len(_model.tensors)]
    weights = np.frombuffer(_model.tensor_bytes(name), dtype=np.uint8)
    return seed, name, float(weights.mean())


def main():
    socket_path, name = sys.argv[1], sys.argv[2]
    with multiprocessing.Pool(4, initializer=_attach,
                              initargs=(socket_path, name)) as pool:
        for seed, name, score in pool.imap(infer, range(8)):
            print(f"request {seed}: {name} {score:.3f}")


if __name__ == "__main__":
    main()
