# SPDX-License-Identifier: MIT
"""Tests of the Python client against a real mbrokerd ($MB_BIN/mbrokerd):
a safetensors model written with numpy is seen through a zero-copy,
read-only numpy view equal to what was written; refusals raise
BrokerError with the broker's code; an unload reaches a Python worker,
which acks well within the deadline; a replace is followed by a Python
worker (needs a broker that replaces); the client's descriptor stays
readable while a request has queued an event; an ack posts the broker's
semaphore and undoes an attach it interrupted; every wait is bounded
against a stopped broker; attach_wait waits for a load; nothing is left
in /dev/shm."""
import ctypes
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import numpy as np  # noqa: E402

import mbroker  # noqa: E402

BIN = os.environ.get("MB_BIN", "build")

WORKER = """
import select, sys
sys.path.insert(0, sys.argv[2])
import mbroker
with mbroker.connect(sys.argv[1]) as client:
    mbroker.handle_unload_signal(client, ack=False)
    model = client.attach("m")
    total = float(model.tensor("encoder.weight").sum())
    print("ready", flush=True)
    while True:
        select.select([client], [], [], 5)
        for event in client.events():
            if event.type == "unload" and event.model == "m":
                client.ack()
                print("acked", flush=True)
                sys.exit(0)
"""

REPLACED_WORKER = """
import select, sys
sys.path.insert(0, sys.argv[2])
import mbroker
with mbroker.connect(sys.argv[1]) as client:
    model = client.attach("m")
    before = bytes(model.data)
    print("ready", model.generation, flush=True)
    while True:
        select.select([client], [], [], 5)
        for event in client.events():
            if event.type == "replaced":
                old = model.generation
                model = client.follow_replace(model, event)
                same = bytes(model.data) == before
                print("followed", old, event.old_generation,
                      model.generation, event.generation, client.attached,
                      "same bytes" if same else "other bytes", flush=True)
                sys.exit(0)
"""

SIGNALLED_WORKER = """
import signal, sys
sys.path.insert(0, sys.argv[2])
import mbroker
with mbroker.connect(sys.argv[1]) as client:
    mbroker.handle_unload_signal(client)
    model = client.attach("m")
    print("ready", flush=True)
    while client.attached:
        signal.pause()
    print("acked in the handler", flush=True)
"""


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        data = array.tobytes()
        header[name] = {"dtype": {"float32": "F32", "int8": "I8"}[str(array.dtype)],
                        "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.sock = os.path.join(cls.tmp.name, "b.sock")
        cls.instance = f"py-{os.getpid()}"
        rng = np.random.default_rng(7)
        cls.weights = {
            "encoder.weight": rng.standard_normal((64, 80), dtype=np.float32),
            "decoder.bias": np.arange(-100, 100, dtype=np.int8),
        }
        model = os.path.join(cls.tmp.name, "m.safetensors")
        write_safetensors(model, cls.weights)
        cls.broker = subprocess.Popen(
            [os.path.join(BIN, "mbrokerd"), "--socket", cls.sock,
             "--instance", cls.instance, "--model", f"m={model}",
             "--log-level", "warn"])
        deadline = time.monotonic() + 10
        while True:
            try:
                with mbroker.connect(cls.sock) as c:
                    if c.request("list")["models"][0]["state"] == "READY":
                        break
            except (OSError, mbroker.BrokerError, IndexError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("broker did not start")
            time.sleep(0.02)

    @classmethod
    def tearDownClass(cls):
        try:
            with mbroker.connect(cls.sock) as c:
                c.request("shutdown")
        except mbroker.BrokerLost:
            pass
        cls.broker.wait(10)
        left = [n for n in os.listdir("/dev/shm")
                if f"mbroker.{cls.instance}." in n]
        cls.tmp.cleanup()
        assert cls.broker.returncode == 0, cls.broker.returncode
        assert not left, left

    def test_tensor_is_a_zero_copy_view(self):
        with mbroker.connect(self.sock) as client:
            with client.attach("m") as model:
                self.assertEqual(model.format, "safetensors")
                view = model.tensor("encoder.weight")
                np.testing.assert_array_equal(view, self.weights["encoder.weight"])
                self.assertFalse(view.flags.owndata)
                self.assertFalse(view.flags.writeable)
                with self.assertRaises(ValueError):
                    view[0, 0] = 1.0
                np.testing.assert_array_equal(model.tensor("decoder.bias"),
                                              self.weights["decoder.bias"])
                raw = model.tensor_bytes("decoder.bias")
                self.assertEqual(bytes(raw), self.weights["decoder.bias"].tobytes())
                del view, raw

    def test_refusals_carry_the_code(self):
        with mbroker.connect(self.sock) as client:
            with self.assertRaises(mbroker.BrokerError) as cm:
                client.attach("nope")
            self.assertEqual(cm.exception.code, "unknown_model")
            self.assertEqual(client.request("ping")["ok"], True)

    def _unload_with_worker(self, script, last_line):
        """Starts a Python worker running script, unloads "m" while it is
        attached, and checks that it let go in time and said last_line;
        loads "m" again for the other tests."""
        worker = subprocess.Popen(
            [sys.executable, "-c", script, self.sock,
             os.path.join(os.path.dirname(__file__), "..")],
            stdout=subprocess.PIPE, text=True)
        self.addCleanup(worker.stdout.close)
        self.addCleanup(worker.kill)
        self.assertEqual(worker.stdout.readline().strip(), "ready")
        with mbroker.connect(self.sock) as admin:
            t0 = time.monotonic()
            reply = admin.request("unload", name="m", timeout=5)
            self.assertLess(time.monotonic() - t0, 2.0)
            self.assertEqual(reply["state"], "UNINITIALIZED")
            self.assertEqual(worker.stdout.readline().strip(), last_line)
            self.assertEqual(worker.wait(5), 0)
            admin.request("load", name="m", path=os.path.join(
                self.tmp.name, "m.safetensors"), wait=True)

    def _attached(self, admin):
        return admin.request("list")["models"][0]["attached"]

    def test_fileno_readable_while_an_event_is_queued(self):
        with mbroker.connect(self.sock) as worker, \
                mbroker.connect(self.sock) as admin:
            mbroker.handle_unload_signal(worker, ack=False)
            model = worker.attach("m")
            replies = []
            unloader = threading.Thread(target=lambda: replies.append(
                admin.request("unload", name="m", timeout=5)))
            unloader.start()
            deadline = time.monotonic() + 10
            while not select.select([worker], [], [], 0)[0]:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.01)
            # A request reads the event on its way and queues it: select
            # must still say so.
            worker.request("ping")
            self.assertTrue(select.select([worker], [], [], 0)[0])
            events = list(worker.events())
            self.assertEqual([e.type for e in events], ["unload"])
            self.assertFalse(select.select([worker], [], [], 0)[0])
            model.detach()
            unloader.join(10)
            self.assertEqual(replies[0]["state"], "UNINITIALIZED")
            admin.request("load", name="m", path=os.path.join(
                self.tmp.name, "m.safetensors"), wait=True)

    def test_ack_posts_the_semaphore(self):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.sem_open.restype = ctypes.c_void_p
        libc.sem_open.argtypes = [ctypes.c_char_p, ctypes.c_int]
        libc.sem_getvalue.argtypes = [ctypes.c_void_p,
                                      ctypes.POINTER(ctypes.c_int)]
        libc.sem_close.argtypes = [ctypes.c_void_p]
        with mbroker.connect(self.sock) as client:
            sem = libc.sem_open(client.hello["ack_semaphore"].encode(), 0)
            self.assertTrue(sem)
            self.addCleanup(libc.sem_close, sem)
            before, after = ctypes.c_int(), ctypes.c_int()
            libc.sem_getvalue(sem, ctypes.byref(before))
            client.attach("m")
            client.ack()
            libc.sem_getvalue(sem, ctypes.byref(after))
            self.assertEqual(after.value, before.value + 1)
            self.assertEqual(client.attached, 0)

    def test_ack_during_attach_undoes_it(self):
        real = socket.recv_fds
        with mbroker.connect(self.sock) as worker, \
                mbroker.connect(self.sock) as admin:
            def ack_first(*args):
                # The signal lands after the attach left, before its reply
                # is read.
                socket.recv_fds = real
                worker.ack()
                return real(*args)
            socket.recv_fds = ack_first
            self.addCleanup(setattr, socket, "recv_fds", real)
            with self.assertRaises(mbroker.AttachCancelled):
                worker.attach("m")
            self.assertEqual(worker.attached, 0)
            self.assertEqual(self._attached(admin), 0)
            worker.attach("m")
            self.assertEqual(self._attached(admin), 1)

    def test_unusable_attach_is_handed_back(self):
        real = mbroker._parse_safetensors

        def broken(buf):
            raise ValueError("unreadable header")
        mbroker._parse_safetensors = broken
        self.addCleanup(setattr, mbroker, "_parse_safetensors", real)
        with mbroker.connect(self.sock) as worker, \
                mbroker.connect(self.sock) as admin:
            with self.assertRaises(ValueError):
                worker.attach("m")
            self.assertEqual(worker.attached, 0)
            self.assertEqual(self._attached(admin), 0)

    def test_bounded_against_a_stopped_broker(self):
        with mbroker.connect(self.sock) as client, \
                mbroker.connect(self.sock) as admin:
            client.timeout = 0.3
            self.broker.send_signal(signal.SIGSTOP)
            self.addCleanup(self.broker.send_signal, signal.SIGCONT)
            for call in (lambda: mbroker.connect(self.sock, timeout=0.3),
                         lambda: client.attach("m"),
                         lambda: client.attach_wait("m", 0.4)):
                t0 = time.monotonic()
                with self.assertRaises(TimeoutError):
                    call()
                self.assertTrue(0.25 <= time.monotonic() - t0 < 5)
            self.broker.send_signal(signal.SIGCONT)
            # The late replies granted attachments nobody holds: they are
            # handed back as soon as they are read.
            client.timeout = 10
            client.request("ping")
            deadline = time.monotonic() + 10
            while self._attached(admin) != 0:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.01)

    def test_attach_wait_until_ready(self):
        with mbroker.connect(self.sock) as client:
            t0 = time.monotonic()
            with self.assertRaises(mbroker.BrokerError) as cm:
                client.attach_wait("m2", 0.3)
            self.assertEqual(cm.exception.code, "unknown_model")
            self.assertTrue(0.25 <= time.monotonic() - t0 < 5)

            def load_later():
                time.sleep(0.3)
                with mbroker.connect(self.sock) as admin:
                    admin.request("load", name="m2", path=os.path.join(
                        self.tmp.name, "m.safetensors"))
            loader = threading.Thread(target=load_later)
            loader.start()
            t0 = time.monotonic()
            model = client.attach_wait("m2", 10)
            self.assertGreaterEqual(time.monotonic() - t0, 0.25)
            loader.join()
            self.assertEqual(model.name, "m2")
            model.detach()
            client.request("unload", name="m2")

    def test_replace_is_followed_by_a_python_worker(self):
        """Needs a broker that replaces (issue 10)."""
        worker = subprocess.Popen(
            [sys.executable, "-c", REPLACED_WORKER, self.sock,
             os.path.join(os.path.dirname(__file__), "..")],
            stdout=subprocess.PIPE, text=True)
        self.addCleanup(worker.stdout.close)
        self.addCleanup(worker.kill)
        ready = worker.stdout.readline().split()
        self.assertEqual(ready[0], "ready")
        old = int(ready[1])
        with mbroker.connect(self.sock) as admin:
            reply = admin.request("load", name="m", replace=True, wait=True,
                                  timeout=5)
            new = reply["generation"]
            self.assertGreater(new, old)
            # The worker held the new generation before it let go of the
            # old one, and reads the same bytes through it.
            self.assertEqual(worker.stdout.readline().split(),
                             ["followed", str(old), str(old), str(new),
                              str(new), "1", "same", "bytes"])
            self.assertEqual(worker.wait(5), 0)
            model = admin.request("list")["models"][0]
            self.assertEqual((model["state"], model["generation"]),
                             ("READY", new))

    def test_unload_reaches_a_python_worker(self):
        self._unload_with_worker(WORKER, "acked")

    def test_unload_signal_acks_in_the_handler(self):
        self._unload_with_worker(SIGNALLED_WORKER, "acked in the handler")

if __name__ == "__main__":
    unittest.main()
