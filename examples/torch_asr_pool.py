# SPDX-License-Identifier: MIT
"""A pool of PyTorch speech-recognition workers that costs one copy of the
weights: N processes run torchaudio's wav2vec2_base (a CTC head of 32
characters, 378 MB of fp32 weights, the file examples/torch_asr_build.py
writes) on speech espeak-ng says, every parameter of every worker a tensor
over the broker's read-only mapping of the safetensors file.

    build/mbrokerd --socket /tmp/mb/broker.sock --model asr=/tmp/asr.safetensors &
    PYTHONPATH=bindings/python python3 examples/torch_asr_pool.py \\
        --socket /tmp/mb/broker.sock --model asr --workers 8 --passes 3
    PYTHONPATH=bindings/python python3 examples/torch_asr_pool.py \\
        --private /tmp/asr.safetensors --workers 8 --passes 3

Shared (--socket, --model): each worker attaches the model and builds it
with every parameter a torch.frombuffer tensor over the numpy view
Attachment.tensor gives: no copy, which it checks (every data_ptr() lies
inside the mapping).  Private (--private FILE): each worker reads the file
into tensors of its own and load_state_dict copies them into the model,
the usual way.  The logits of both are bitwise the same.

Each worker runs --passes passes (0: passes without end), then holds the
model.  A shared worker follows the broker between two passes: after a
replace (`mbctl load asr NEW --replace`) it attaches the new generation,
builds the model over it and lets go of the old one; after an unload or a
shutdown it drops the model, acks and exits 0 (the broker's unload signal
is ignored: the event is acted on after the pass in flight).  A private
worker holds until the pool is stopped (SIGTERM or SIGINT to the pool).
The pool exits when every worker has exited: 0 when all exited 0.

Output, one line per event (key=value): "built" (tensors, bytes, the
mapping's generation; private: model_kb, the Pss its copy added), "pass"
(generation, ms, logits: sha256 of the logits' bytes), "first" (ms from
the worker's start to its first logits), "held", "switch" (or "stay" when
the new generation cannot be attached), "unloaded"; once every worker
holds, "memory": model_pss_kb (shared: the Pss of the mapping's pages in
every worker, read from /proc/PID/smaps; private: the sum of model_kb),
model_bytes (one copy: the file's bytes), model_ratio, pss_kb (the
whole-process Pss of the workers and the pool's own process).
"""
import argparse
import ctypes
import gc
import hashlib
import json
import multiprocessing
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import wave

import numpy as np

# One BLAS thread per worker, set before torch loads OpenBLAS: the pool's
# workers are the parallelism, and BLAS threads of their own would only
# fight them for the cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import torch  # noqa: E402

import mbroker
from torch_asr_model import asr_model

_DTYPES = {"F32": torch.float32, "F16": torch.float16,
           "BF16": torch.bfloat16, "I64": torch.int64}


def _dtype(name):
    if name not in _DTYPES:
        raise ValueError(f"dtype {name} is not one this example reads")
    return _DTYPES[name]


def _nbytes(tensor):
    return tensor.numel() * tensor.element_size()


def _install(model, tensors):
    """Puts each tensor in place of the model's own parameter or buffer of
    that name, sharing its storage (a parameter wraps it, no copy)."""
    own = model.state_dict(keep_vars=True)
    if set(own) != set(tensors):
        raise ValueError(f"the file's tensors are not the model's: "
                         f"{sorted(set(own) ^ set(tensors))[:4]}")
    for key, tensor in tensors.items():
        if tensor.shape != own[key].shape:
            raise ValueError(f"{key}: shape {tuple(tensor.shape)}, the "
                             f"model has {tuple(own[key].shape)}")
        path, _, leaf = key.rpartition(".")
        module = model.get_submodule(path)
        if leaf in module._parameters:
            module._parameters[leaf] = torch.nn.Parameter(
                tensor, requires_grad=False)
        else:
            module._buffers[leaf] = tensor


def mapping_range(att):
    """The addresses [low, high) of att's mapping in this process."""
    low = np.frombuffer(att.data, dtype=np.uint8, count=1) \
        .__array_interface__["data"][0]
    return low, low + att.size


def shared_model(att):
    """The model with every parameter and buffer a tensor over att's
    read-only mapping.  Raises RuntimeError if any was copied."""
    model = asr_model(initialise=False)
    with warnings.catch_warnings():
        # torch.frombuffer warns that the mapping is not writable: torch
        # has no read-only tensors.  Safe here: inference (eval,
        # inference_mode) never writes a weight, and a write would fault
        # on the read-only pages, never change what other workers see.
        warnings.filterwarnings("ignore",
                                message="The given buffer is not writable")
        tensors = {name: torch.frombuffer(att.tensor(name),
                                          dtype=_dtype(info.dtype))
                   .view(info.shape)
                   for name, info in att.tensors.items()}
    _install(model, tensors)
    low, high = mapping_range(att)
    for name, tensor in model.state_dict().items():
        start = tensor.data_ptr()
        if not low <= start <= start + _nbytes(tensor) <= high:
            raise RuntimeError(f"{name} is a copy, not in the mapping")
    return model.eval()


def read_safetensors(path):
    """The tensors of a safetensors file, read into tensors this process
    owns."""
    tensors = {}
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        for name, desc in header.items():
            if name == "__metadata__":
                continue
            begin, end = desc["data_offsets"]
            tensor = torch.empty(desc["shape"], dtype=_dtype(desc["dtype"]))
            f.seek(8 + length + begin)
            got = f.readinto(tensor.reshape(-1).view(torch.uint8).numpy())
            if got != end - begin or _nbytes(tensor) != end - begin:
                raise ValueError(f"{path}: {name} is cut short")
            tensors[name] = tensor
    return tensors


def private_model(path):
    """The usual way: the file read into tensors of this process, which
    load_state_dict copies into the model's own."""
    model = asr_model(initialise=False)
    model.load_state_dict(read_safetensors(path))
    return model.eval()


def pss_kb(pid="self"):
    """The whole Pss of a process."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def range_pss_kb(pid, low, high):
    """The Pss of the mappings of a process that overlap [low, high)."""
    total, inside = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start < high and low < end
            elif inside and head == "Pss:":
                total += int(line.split()[1])
    return total


def speech(text, rate=16000):
    """text said by espeak-ng, as 16 kHz mono float samples in [-1, 1)."""
    with tempfile.TemporaryDirectory() as tmp:
        said, wav = os.path.join(tmp, "said.wav"), os.path.join(tmp, "16k.wav")
        subprocess.run(["espeak-ng", "-w", said, text], check=True)
        # -D: no dither, so the same text always gives the same samples.
        subprocess.run(["sox", "-D", said, "-r", str(rate), "-c", "1",
                        "-b", "16", wav], check=True)
        with wave.open(wav) as w:
            samples = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return samples.astype(np.float32) / 32768.0


class Worker:
    """One process of the pool: its model, its passes, its reports."""

    def __init__(self, index, opts, samples, reports):
        self.index = index
        self.opts = opts
        self.audio = torch.from_numpy(samples).unsqueeze(0)
        self.reports = reports
        self.started = time.monotonic()
        self.passes = 0
        self.model = None
        self.client = None
        self.att = None

    def report(self, event, **fields):
        self.reports.put(dict(fields, event=event, worker=self.index,
                              pid=os.getpid()))

    def one_pass(self):
        t0 = time.monotonic()
        with torch.inference_mode():
            logits, _ = self.model(self.audio)
        ms = (time.monotonic() - t0) * 1000
        self.passes += 1
        digest = hashlib.sha256(logits.numpy().tobytes()).hexdigest()[:16]
        self.report("pass", generation=self.generation(), ms=round(ms, 1),
                    logits=digest, shape="x".join(map(str, logits.shape)))
        if self.passes == 1:
            self.report("first", ms=round(
                (time.monotonic() - self.started) * 1000, 1))

    def generation(self):
        return self.att.generation if self.att else 0

    def wants_pass(self):
        return self.opts.passes == 0 or self.passes < self.opts.passes

    def run_private(self):
        before = pss_kb()
        self.model = private_model(self.opts.private)
        # The file's tensors are freed: give their heap pages back, so
        # what is measured is the model's copy, not the allocator's rest.
        ctypes.CDLL(None).malloc_trim(0)
        self.report("built", tensors=len(self.model.state_dict()),
                    bytes=os.path.getsize(self.opts.private),
                    model_kb=pss_kb() - before)
        while self.wants_pass():
            self.one_pass()
        self.report("held")
        while True:
            signal.pause()

    def build_shared(self):
        self.model = None
        self.model = shared_model(self.att)
        gc.collect()  # the old generation's tensors, and so its pages
        low, high = mapping_range(self.att)
        self.report("built", generation=self.att.generation,
                    tensors=len(self.att.tensors), bytes=self.att.size,
                    low=low, high=high)

    def follow(self):
        """Acts on the broker's events; False once the worker let go."""
        for event in self.client.events():
            if event.type == "replaced":
                old = self.generation()
                t0 = time.monotonic()
                try:
                    att = self.client.follow_replace(self.att, event)
                except (mbroker.BrokerError, TimeoutError) as e:
                    # Still mapped: serve the old generation until the
                    # event that follows (an unload, another replace).
                    self.report("stay", generation=old,
                                error=getattr(e, "code", "timeout"))
                    continue
                if att is not self.att:
                    self.att = att
                    self.build_shared()
                    self.report("switch", old=old, new=self.generation(),
                                ms=round((time.monotonic() - t0) * 1000, 1))
            elif event.type in ("unload", "shutdown"):
                self.model = None
                gc.collect()
                self.client.ack()
                self.report("unloaded", reason=event.type)
                return False
            elif event.type == "broker_lost":
                raise mbroker.BrokerLost("the broker went away")
        return True

    def run_shared(self):
        self.client = mbroker.connect(self.opts.socket, timeout=10)
        self.client.timeout = 30
        mbroker.handle_unload_signal(self.client, ack=False)
        self.att = self.client.attach_wait(self.opts.model, 60)
        self.build_shared()
        held = False
        while self.follow():
            if self.wants_pass():
                self.one_pass()
                continue
            if not held:
                self.report("held")
                held = True
            select.select([self.client], [], [])
        self.client.close()


def _work(index, opts, samples, reports):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    torch.set_num_threads(1)
    worker = Worker(index, opts, samples, reports)
    if opts.private:
        worker.run_private()
    else:
        worker.run_shared()


def _say(msg):
    fields = " ".join(f"{k}={v}" for k, v in msg.items()
                      if k not in ("event",))
    os.write(1, f"{msg['event']} {fields}\n".encode())


def _memory(opts, built):
    """The pool's cost once every worker holds the model."""
    if opts.private:
        model_kb = sum(b["model_kb"] for b in built.values())
    else:
        model_kb = sum(range_pss_kb(pid, b["low"], b["high"])
                       for pid, b in built.items())
    one = next(iter(built.values()))["bytes"]
    whole = pss_kb() + sum(pss_kb(pid) for pid in built)
    _say({"event": "memory", "mode": "private" if opts.private else "shared",
          "workers": len(built), "model_bytes": one, "model_pss_kb": model_kb,
          "model_ratio": f"{model_kb * 1024 / one:.3f}", "pss_kb": whole})


def _options():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--socket", help="the broker's socket (shared mode)")
    p.add_argument("--model", default="asr", help="the model's name")
    p.add_argument("--private", metavar="FILE",
                   help="each worker loads FILE itself instead")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--passes", type=int, default=1,
                   help="passes per worker before it holds (0: no end)")
    p.add_argument("--text", default="one two three")
    opts = p.parse_args()
    if bool(opts.socket) == bool(opts.private):
        p.error("give --socket (shared) or --private FILE")
    return opts


def main():
    opts = _options()
    samples = speech(opts.text)
    # fork: the workers share the pages of the runtime imported above.
    ctx = multiprocessing.get_context("fork")
    reports = ctx.Queue()
    workers = [ctx.Process(target=_work, args=(i, opts, samples, reports))
               for i in range(opts.workers)]
    stopping = []

    def stop(signum, frame):
        stopping.append(signum)
        for w in workers:
            if w.exitcode is None:
                w.terminate()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for w in workers:
        w.start()
    built, held = {}, set()
    measured = False
    while any(w.exitcode is None for w in workers) or not reports.empty():
        try:
            msg = reports.get(timeout=0.2)
        except queue.Empty:
            continue
        _say(msg)
        if msg["event"] == "built":
            built[msg["pid"]] = msg
        elif msg["event"] == "held":
            held.add(msg["pid"])
            if len(held) == opts.workers and not measured:
                _memory(opts, built)
                measured = True
    for w in workers:
        w.join()
    failed = [i for i, w in enumerate(workers) if w.exitcode != 0]
    if failed and not stopping:
        for i in failed:
            print(f"worker {i} exited {workers[i].exitcode}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
