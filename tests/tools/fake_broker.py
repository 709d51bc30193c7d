# SPDX-License-Identifier: MIT
"""fake_broker.py - a stand-in for mbrokerd that plays the broker's part of
docs/protocol.md just far enough to test clients against what the real one
cannot be made to do on purpose: it answers hello, grants attaches of any
name with a memfd whose every byte is the current generation (as a
program, with its XXH3 checksum from $MB_BIN/libmbroker.so), logs every attach, detach and load in order, answers list
with a canned model and load with what ``on_load`` says, and sends the
events a test asks for to every connection.

As a module (bindings/python/tests): ``FakeBroker(path)``.  As a program
(integration tests): ``fake_broker.py SOCKET LIST_JSON`` serves until
killed, printing its log on stdout as it goes: "attach NAME GEN #ID",
"detach #ID", and each load, pin and unpin request as a JSON line.  It
answers list with the model in LIST_JSON, catalog with that model's
file (loaded) and pin and unpin with what they ask (loaded when the name
is the model's); a load with that model, or
no_space when the request's policy is "availability"; a load with
"replace" also makes a new generation current and sends "replaced" to
each connection holding an older one (one whose path ends in "corrupt"
is advertised with a wrong checksum); an unload sends "unload" to every
holder.

A bundle (a model made of the files of a directory, ``fake.bundles[name]
= DIR`` or ``NAME=DIR`` arguments after LIST_JSON) is attached as the
broker does it: "members" (every regular file under DIR, in bytewise
name order, with its checksum and the bundle's when checksums are on),
descriptors 8 to a message, and the rest through the "members" op (logged
"members #ID FROM"); a corrupt generation advertises a wrong bundle
checksum.  Each message of a bundle named in ``stray`` (or
``--stray=NAME``) carries one descriptor too many, as a broken broker's
would.  A forged bundle (``fake.forged[name] = [(MEMBER, BODY), ...]``, or
``--forged=NAME=JSON`` with JSON a list of [MEMBER, BODY]) is served with
its members as given, names and order unchecked, as a hostile broker
would: BODY is the member's bytes (a string, as UTF-8), or {"dir": PATH}
for a descriptor of that directory (its size as fstat gives it)."""
import ctypes
import json
import os
import socket
import struct
import sys
import threading

SIZE = 8192
MAX_MESSAGE = 160 * 1024
FDS_PER_MESSAGE = 8


def _checksummer():
    """mb_checksum from the library under test, or None."""
    try:
        lib = ctypes.CDLL(os.path.join(os.environ.get("MB_BIN", "build"),
                                       "libmbroker.so"))
    except OSError:
        return None
    lib.mb_checksum.restype = ctypes.c_uint64
    lib.mb_checksum.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return lambda data: lib.mb_checksum(data, len(data))


class FakeBroker:
    """Serves every connection on path, each in a thread of its own."""

    def __init__(self, path, listed=None, checksums=False):
        self.generation = 1
        self.corrupt = False  # advertise a wrong checksum
        self.refuse = None  # when set, the wire code attaches get
        self.listed = listed  # the model object list returns
        self.on_load = None  # request -> reply, for load
        self.on_unload = None  # request -> reply, for unload
        self.bundles = {}  # model name -> directory served as a bundle
        self.stray = set()  # bundles whose messages carry a stray descriptor
        self.forged = {}  # model name -> [(member, body)] served as given
        self._bundle_bodies = {}  # attachment -> (connection, [bytes])
        self.log = []
        self.echo = False  # print the log as it grows
        self._next_id = 0
        self._lock = threading.Lock()
        self._conns = []
        self._holders = {}  # connection -> generation it attached last
        # Only mbworker checks them; loading the library into a Python
        # test would drag a sanitizer runtime in under `make asan`.
        self._checksum = _checksummer() if checksums else None
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
                reply, fds = self._answer(json.loads(data), conn)
            socket.send_fds(conn, [json.dumps(reply).encode()], fds)
            for fd in fds:
                os.close(fd)

    @staticmethod
    def _memfd(body):
        fd = os.memfd_create("fake-model")
        os.write(fd, body)
        return fd

    def _bundle_members(self, root):
        """The members of the bundle at root: (name, bytes), in bytewise
        order of their names."""
        found = []
        for top, _, files in os.walk(root):
            for f in files:
                path = os.path.join(top, f)
                if os.path.isfile(path):
                    with open(path, "rb") as fh:
                        found.append((os.path.relpath(path, root), fh.read()))
        return sorted(found, key=lambda m: m[0].encode())

    @staticmethod
    def _descriptor(body):
        """A memfd of body's bytes, or a descriptor of directory body["dir"]."""
        if isinstance(body, dict):
            return os.open(body["dir"], os.O_RDONLY | os.O_DIRECTORY)
        return FakeBroker._memfd(body)

    @staticmethod
    def _size(body):
        return os.stat(body["dir"]).st_size if isinstance(body, dict) \
            else len(body)

    def _page(self, attachment, start):
        """The descriptors of members start.. (at most 8), and a stray."""
        _, bodies, stray = self._bundle_bodies[attachment]
        fds = [self._descriptor(b)
               for b in bodies[start:start + FDS_PER_MESSAGE]]
        return fds + ([self._memfd(b"stray")] if stray else [])

    def _attach_bundle(self, req, conn, reply):
        members = self.forged.get(req["name"]) or \
            self._bundle_members(self.bundles[req["name"]])
        self._bundle_bodies[self._next_id] = (conn, [b for _, b in members],
                                              req["name"] in self.stray)
        listed, bundle_sum = [], b""
        for name, body in members:
            checksum = self._checksum(body) if self._checksum and \
                isinstance(body, bytes) else 0
            listed.append({"name": name, "size": self._size(body),
                           "checksum": "%016x" % checksum,
                           "format": "safetensors"
                           if name.endswith(".safetensors") else "raw"})
            bundle_sum += (name.encode() + b"\0" +
                           struct.pack("<QQ", self._size(body), checksum))
        total = self._checksum(bundle_sum) if self._checksum else 0
        total ^= int(self.corrupt)
        reply.update(attachment=self._next_id, name=req["name"],
                     format="bundle", generation=self.generation,
                     size=sum(self._size(b) for _, b in members),
                     checksum="%016x" % total, members=listed,
                     descriptors={"from": 0, "count": min(
                         FDS_PER_MESSAGE, len(members))})
        return self._page(self._next_id, 0)

    def _members_page(self, req, conn):
        """The reply to a members request and its descriptors."""
        att, start = req.get("attachment"), req.get("from")
        held = self._bundle_bodies.get(att)
        if held is None or held[0] is not conn:
            return {"ok": False, "error": {"code": "not_attached",
                                           "message": "no such attachment"}}, []
        if (not isinstance(start, int) or isinstance(start, bool)
                or not 0 <= start < len(held[1])):
            return {"ok": False, "error": {"code": "bad_request",
                                           "message": "from out of range"}}, []
        self._record(f"members #{att} {start}")
        fds = self._page(att, start)
        count = min(FDS_PER_MESSAGE, len(held[1]) - start)
        return {"ok": True, "attachment": att, "from": start,
                "count": count}, fds

    def _answer(self, req, conn):
        op, reply, fds = req.get("op"), {"ok": True}, []
        if op == "attach" and self.refuse:
            reply = {"ok": False, "error": {"code": self.refuse,
                                            "message": "refused by the fake"}}
        elif op == "attach":
            self._next_id += 1
            self._record(f"attach {req['name']} {self.generation} "
                         f"#{self._next_id}")
            self._holders[conn] = self.generation
            if req["name"] in self.bundles or req["name"] in self.forged:
                fds = self._attach_bundle(req, conn, reply)
                reply["id"] = req.get("id")
                return reply, fds
            body = bytes([self.generation & 0xff]) * SIZE
            fds = [self._memfd(body)]
            checksum = self._checksum(body) if self._checksum else 0
            reply.update(attachment=self._next_id, name=req["name"],
                         format="raw", generation=self.generation, size=SIZE,
                         checksum="%016x" % (checksum ^ int(self.corrupt)))
        elif op == "members":
            reply, fds = self._members_page(req, conn)
        elif op == "detach":
            self._record(f"detach #{req['attachment']}")
            self._bundle_bodies.pop(req.get("attachment"), None)
        elif op == "list":
            reply.update(models=[self.listed] if self.listed else [],
                         total=1 if self.listed else 0)
        elif op == "catalog" and self.listed:
            reply.update(models=[{k: self.listed[k] for k in
                                  ("name", "path", "format", "size")}],
                         total=1)
            reply["models"][0]["loaded"] = True
        elif op in ("pin", "unpin"):
            self._record(json.dumps(req, sort_keys=True))
            reply.update(name=req["name"], pinned=op == "pin",
                         loaded=bool(self.listed) and
                         req["name"] == self.listed["name"])
        elif op == "load":
            self._record(json.dumps(req, sort_keys=True))
            reply = self.on_load(req) if self.on_load else reply
        elif op == "unload" and self.on_unload:
            reply = self.on_unload(req)
        reply["id"] = req.get("id")
        return reply, fds

    def _record(self, line):
        self.log.append(line)
        if self.echo:
            print(line, flush=True)

    def event(self, **fields):
        """Sends an event to every connection."""
        self._connected.wait(10)
        with self._lock:
            for conn in self._conns:
                conn.send(json.dumps(fields).encode())

    def _to_holders(self, older_than, **fields):
        """Sends an event to each connection holding an attachment of a
        generation older than older_than (the lock held)."""
        for conn, generation in self._holders.items():
            if generation >= older_than:
                continue
            event = dict(fields)
            if event["event"] == "replaced":
                event["old_generation"] = generation
            try:
                conn.send(json.dumps(event).encode())
            except OSError:
                pass

    def close(self):
        self._listen.close()
        with self._lock:
            for conn in self._conns:
                conn.close()


    def replace(self, req):
        """The program's answer to load (the lock held): the listed model,
        or no_space for the availability policy (naming the generation
        still serving); a replace makes a new generation current and
        tells the holders of older ones."""
        if req.get("policy") == "availability":
            return {"ok": False, "model": self.listed["name"],
                    "generation": self.listed["generation"],
                    "error": {"code": "no_space",
                              "message": "two copies need 16384 bytes"}}
        if req.get("replace"):
            self.generation += 1
            self.corrupt = str(req.get("path", "")).endswith("corrupt")
            self._to_holders(self.generation, event="replaced",
                             model=req["name"], generation=self.generation,
                             timeout_ms=60000)
        return dict(self.listed, ok=True, gap=req.get("policy") == "resource")

    def unload(self, req):
        """The program's answer to unload (the lock held): "unload" to
        every holder, and the reply at once."""
        self._to_holders(self.generation + 1, event="unload",
                         model=req["name"], generation=self.generation,
                         timeout_ms=10000)
        return {"ok": True, "model": req["name"], "state": "UNINITIALIZED"}


if __name__ == "__main__":
    with open(sys.argv[2]) as f:
        model = json.load(f)
    fake = FakeBroker(sys.argv[1], model, checksums=True)
    for arg in sys.argv[3:]:
        if arg.startswith("--stray="):
            fake.stray.add(arg[len("--stray="):])
        elif arg.startswith("--forged="):
            name, text = arg[len("--forged="):].split("=", 1)
            fake.forged[name] = [
                (member, body.encode() if isinstance(body, str) else body)
                for member, body in json.loads(text)]
        else:
            fake.bundles.update([arg.split("=", 1)])
    fake.on_load, fake.on_unload = fake.replace, fake.unload
    fake.echo = True
    threading.Event().wait()
