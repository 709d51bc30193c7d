# SPDX-License-Identifier: MIT
"""fake_broker.py - a stand-in for mbrokerd that plays the broker's part of
docs/protocol.md just far enough to test clients against what the real one
does not do yet, or cannot be made to do on purpose: it answers hello,
grants attaches of any name with a memfd whose every byte is the current
generation, logs every attach, detach and load in order, answers list with
a canned model and load with what ``load_reply`` says, and sends the events
a test asks for to every connection.

As a module (bindings/python/tests): ``FakeBroker(path)``.  As a program
(integration tests): ``fake_broker.py SOCKET LIST_JSON`` serves until
killed, answering list with the model in LIST_JSON and a load with that
model (an error when the request's policy is "availability"), and printing
each load request on stdout, one JSON line each."""
import json
import os
import socket
import sys
import threading

SIZE = 8192
MAX_MESSAGE = 160 * 1024


class FakeBroker:
    """Serves every connection on path, each in a thread of its own."""

    def __init__(self, path, listed=None):
        self.generation = 1
        self.refuse = None  # when set, the wire code attaches get
        self.listed = listed  # the model object list returns
        self.on_load = None  # request -> reply, for load
        self.log = []
        self._next_id = 0
        self._lock = threading.Lock()
        self._conns = []
        self._listen = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._listen.bind(path)
        self._listen.listen(8)
        self._connected = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self._listen.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            self._connected.set()
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    def _serve(self, conn):
        while True:
            try:
                data = conn.recv(MAX_MESSAGE)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                reply, fds = self._answer(json.loads(data))
            socket.send_fds(conn, [json.dumps(reply).encode()], fds)
            for fd in fds:
                os.close(fd)

    def _answer(self, req):
        op, reply, fds = req.get("op"), {"ok": True}, []
        if op == "attach" and self.refuse:
            reply = {"ok": False, "error": {"code": self.refuse,
                                            "message": "refused by the fake"}}
        elif op == "attach":
            self._next_id += 1
            self.log.append(f"attach {req['name']} {self.generation} "
                            f"#{self._next_id}")
            fd = os.memfd_create("fake-model")
            os.write(fd, bytes([self.generation & 0xff]) * SIZE)
            fds = [fd]
            reply.update(attachment=self._next_id, name=req["name"],
                         format="raw", generation=self.generation, size=SIZE,
                         checksum="0")
        elif op == "detach":
            self.log.append(f"detach #{req['attachment']}")
        elif op == "list":
            reply.update(models=[self.listed] if self.listed else [],
                         total=1 if self.listed else 0)
        elif op == "load":
            self.log.append(json.dumps(req, sort_keys=True))
            reply = self.on_load(req) if self.on_load else reply
        reply["id"] = req.get("id")
        return reply, fds

    def event(self, **fields):
        """Sends an event to every connection."""
        self._connected.wait(10)
        with self._lock:
            for conn in self._conns:
                conn.send(json.dumps(fields).encode())

    def close(self):
        self._listen.close()
        with self._lock:
            for conn in self._conns:
                conn.close()


def _canned_load(listed):
    """The program's answer to load: the listed model, or no_space for
    the availability policy (naming the generation still serving)."""
    def answer(req):
        print(json.dumps(req, sort_keys=True), flush=True)
        if req.get("policy") == "availability":
            return {"ok": False, "model": listed["name"],
                    "generation": listed["generation"],
                    "error": {"code": "no_space",
                              "message": "two copies need 16384 bytes"}}
        return dict(listed, ok=True, gap=req.get("policy") == "resource")
    return answer


if __name__ == "__main__":
    with open(sys.argv[2]) as f:
        model = json.load(f)
    fake = FakeBroker(sys.argv[1], model)
    fake.on_load = _canned_load(model)
    threading.Event().wait()
