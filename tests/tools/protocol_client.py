#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""protocol_client.py - an independent client of the mbroker control
protocol, written from docs/protocol.md alone (standard library only).

It starts its own brokers (mbrokerd from the build directory given on the
command line, each on a private instance and a 0700 socket directory under
a work directory), exercises every operation, event, error code and limit
the document describes, and checks each reply against the document: the
members and their types, the bounds (at the bound and one past it), the
descriptor an attach passes, the events and the unload signal. Each
mismatch is printed as "MISMATCH: ..."; the exit status is 1 if there was
one. Every broker it starts has its pid written to WORK/pids and an
instance named INSTANCE_PREFIX-N, so the caller can clean up even if this
process dies; it removes them itself on the way out, and its holder
children die with it (PR_SET_PDEATHSIG).

Usage: protocol_client.py BUILD_DIR WORK_DIR [INSTANCE_PREFIX]
       protocol_client.py --hold[-fork] SOCKET MODEL   (a holder child)
"""

import array
import ctypes
import fcntl
import json
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys
import time

MAX_REPLY = 163840
FAILURES = []
SIGNALS = []
HOLDERS = []


def check(cond, what):
    """Records a mismatch between the document and the broker."""
    if not cond:
        FAILURES.append(what)
        print("MISMATCH: " + what, flush=True)
    return cond


def wait_for(pred, seconds, what):
    """Polls PRED every 10 ms until it holds or SECONDS pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return check(False, what)


def model_slots(data, fields):
    """The (slot, model object) pairs of the mirror's used model slots;
    a slot being rewritten (odd seq) is read as it stands."""
    slots = []
    for i in range(fields[3]):
        off = fields[5] + i * fields[4]
        seq, length = struct.unpack("<QQ", data[off:off + 16])
        if length and seq % 2 == 0:
            slots.append((i, json.loads(data[off + 16:off + 16 + length])))
    return slots


class Closed(Exception):
    """The broker closed the connection."""


class Conn:
    """One connection: requests, replies matched by id, queued events."""

    def __init__(self, path, hello=True, role=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(10)
        self.sock.connect(path)
        cred = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", cred)
        if uid not in (0, os.getuid()):
            raise RuntimeError("untrusted broker uid %d" % uid)
        self.events = []
        self.held = []
        self.next_id = 1
        self.hello_reply = None
        if hello:
            req = {"op": "hello", "version": 1}
            if role is not None:
                req["role"] = role
            self.hello_reply = self.ok(req)

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.send(data)

    def recv(self, timeout=10):
        """The next message and the descriptors it carried."""
        self.sock.settimeout(timeout)
        data, anc, _flags, _addr = self.sock.recvmsg(
            MAX_REPLY + 1, socket.CMSG_SPACE(16 * 4))
        if not data:
            raise Closed()
        check(len(data) <= MAX_REPLY, "a message of %d bytes > 163840"
              % len(data))
        fds = []
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(array.array("i", payload[:len(payload)
                                                    - len(payload) % 4]))
        return json.loads(data.decode("utf-8")), fds

    def next_msg(self, timeout=10):
        """The next reply (not an event), events queued."""
        while True:
            if self.held:
                return self.held.pop(0)
            msg, fds = self.recv(timeout)
            if "event" in msg:
                check("id" not in msg and "ok" not in msg,
                      "event with id/ok: %r" % msg)
                self.events.append(msg)
                continue
            return msg, fds

    def reply_to(self, rid, timeout=10):
        """The reply with id RID; other replies are held for later."""
        skipped = []
        try:
            while True:
                msg, fds = self.next_msg(timeout)
                if msg.get("id") == rid:
                    return msg, fds
                skipped.append((msg, fds))
        finally:
            self.held = skipped + self.held

    def send(self, req):
        if "id" not in req:
            req = dict(req, id=self.next_id)
            self.next_id += 1
        self.send_raw(json.dumps(req).encode())
        return req["id"]

    def call(self, req, timeout=10, want_fds=False):
        rid = self.send(req)
        msg, fds = self.reply_to(rid, timeout)
        if want_fds:
            return msg, fds
        for fd in fds:
            check(False, "descriptor on a reply to %s" % req.get("op"))
            os.close(fd)
        return msg

    def ok(self, req, **kw):
        msg = self.call(req, **kw)
        check(msg.get("ok") is True, "%s: expected ok, got %r"
              % (req.get("op"), trim(msg)))
        return msg

    def err(self, req, code, inner=(), **kw):
        msg = self.call(req, **kw)
        check_error(msg, code, req.get("op"), inner)
        return msg

    def raw_err(self, data, code="bad_request", what=""):
        """Sends bytes that are no valid request: an error, id null."""
        self.send_raw(data)
        msg, _ = self.next_msg()
        check_error(msg, code, what)
        check("id" in msg and msg["id"] is None,
              "%s: id should be null: %r" % (what, trim(msg)))
        return msg

    def event(self, timeout=5):
        deadline = time.monotonic() + timeout
        while not self.events:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                msg, fds = self.recv(left)
            except socket.timeout:
                return None
            if "event" in msg:
                self.events.append(msg)
            else:
                self.held.append((msg, fds))
        return self.events.pop(0)


def trim(msg):
    text = json.dumps(msg)
    return text if len(text) < 400 else text[:400] + "..."


def check_error(msg, code, what, inner=()):
    """An error reply: CODE, a message, and inside `error` nothing but
    code, message and INNER (None: not checked here)."""
    check(msg.get("ok") is False, "%s: expected error %s, got %r"
          % (what, code, trim(msg)))
    err = msg.get("error")
    if not check(isinstance(err, dict), "%s: error not an object" % what):
        return
    check(err.get("code") == code, "%s: expected %s, got %r"
          % (what, code, trim(msg)))
    check(isinstance(err.get("message"), str)
          and len(err["message"].encode()) <= 1023,
          "%s: message missing or longer than 1023 bytes" % what)
    check(set(msg) == {"id", "ok", "error"},
          "%s: top level of an error holds %r" % (what, sorted(msg)))
    if inner is not None:
        check(set(err) == {"code", "message"} | set(inner),
              "%s %s: error holds %r" % (what, code, sorted(err)))


def members(msg, spec, what, exact=True):
    """Checks that MSG has each member of SPEC with its type; with EXACT,
    nothing else besides id and ok."""
    for name, kind in spec.items():
        if not check(name in msg, "%s: no member %s in %r"
                     % (what, name, trim(msg))):
            continue
        val = msg[name]
        if kind is int:
            good = isinstance(val, int) and not isinstance(val, bool)
        else:
            good = isinstance(val, kind)
        check(good, "%s: %s is %r, not %s" % (what, name, val,
                                             kind.__name__))
    if exact:
        extra = set(msg) - set(spec) - {"id", "ok"}
        check(not extra, "%s: members not in the document: %s"
              % (what, sorted(extra)))


HELLO = {"version": int, "broker": str, "instance": str, "pid": int,
         "ack_semaphore": str, "signal": int, "shutting_down": bool,
         "rights": str, "max_message": int}
STATS = {n: int for n in (
    "pid", "uptime_ms", "models", "workers", "connections", "bytes_shared",
    "shmem_kb", "abandoned_loads", "bytes_reserved", "max_shm_bytes",
    "loads", "load_failures", "unloads", "unload_timeouts", "replaces",
    "replace_failures", "drain_timeouts", "attaches", "detaches", "acks",
    "evictions", "idle_unloads", "autoloads")}
STATS.update(instance=str, version=str, shutting_down=bool)
UNLOAD = {"model": str, "generation": int, "state": str,
          "freed_bytes": int, "shmem_before_kb": int, "shmem_after_kb": int,
          "waited_ms": int, "segments_unlinked": int}
SHUTDOWN = {n: int for n in (
    "elapsed_ms", "models_unloaded", "freed_bytes", "shmem_before_kb",
    "shmem_after_kb", "elapsed_us", "notify_us", "wait_us", "release_us")}
ATTACH = {"attachment": int, "name": str, "format": str, "generation": int,
          "size": int, "checksum": str}
ATTACH_BUNDLE = dict(ATTACH, members=list, descriptors=dict)
MEMBER = {"name": str, "format": str, "size": int, "checksum": str}
MEMBERS = {"attachment": int, "from": int, "count": int}
WORKER = {"pid": int, "uid": int, "gid": int, "exited": bool, "conn": int,
          "role": str, "attachments": list}


def check_model(m, what):
    """A model object, as the table of docs/protocol.md says."""
    state = m.get("state")
    spec = {"name": str, "format": str, "state": str, "generation": int,
            "size": int, "attached": int, "path": str, "pids": list,
            "generations": list, "pinned": bool, "keep_alive_ms": int,
            "reason": str}
    if state == "LOADING":
        spec["bytes_done"] = int
    if state in ("READY", "UNLOADING"):
        spec.update(checksum=str, tensors=int, load_ms=int)
    if state == "READY":
        spec["idle_ms"] = int
    if state == "ERROR":
        spec["error"] = str
    if m.get("format") == "bundle" and state in ("READY", "UNLOADING"):
        spec["members"] = int
    members(m, spec, what + " model", exact=False)
    extra = set(m) - set(spec) - {"segment", "id", "ok"}
    check(not extra, "%s model: members not in the document: %s"
          % (what, sorted(extra)))
    check(state in ("LOADING", "READY", "UNLOADING", "ERROR"),
          "%s: state %r" % (what, state))
    check(m.get("format") in ("raw", "safetensors", "bundle"),
          "%s: format" % what)
    check(m.get("reason") in ("preload", "explicit", "autoload"),
          "%s: reason %r" % (what, m.get("reason")))
    check(m.get("keep_alive_ms", -1) >= -1 and m.get("idle_ms", 0) >= 0,
          "%s: keep_alive_ms %r, idle_ms %r" % (what, m.get("keep_alive_ms"),
                                                m.get("idle_ms")))
    if "checksum" in m:
        c = m["checksum"]
        check(len(c) == 16 and all(x in "0123456789abcdef" for x in c),
              "%s: checksum %r is not 16 lowercase hex digits" % (what, c))
    if "segment" in m:
        check(m["segment"].startswith("/mbroker.%s.model.%s.%d-" % (
            INSTANCE_OF[0], m["name"], m["generation"])),
            "%s: segment name %r" % (what, m["segment"]))
    for g in m.get("generations", []):
        check_generation(g, m, what)


def check_generation(g, m, what):
    """An item of a model's generations, as docs/protocol.md says."""
    role = g.get("role")
    spec = {"generation": int, "role": str, "size": int, "attached": int,
            "path": str, "pids": list}
    if "bytes_done" in g:
        spec["bytes_done"] = int
    if role == "draining":
        spec["drain_deadline_ms"] = int
    members(g, spec, what + " generation", exact=False)
    extra = set(g) - set(spec) - {"checksum", "segment", "state"}
    check(not extra, "%s generation: members not in the document: %s"
          % (what, sorted(extra)))
    check(role in ("next", "current", "draining"),
          "%s: generation role %r" % (what, role))
    if role == "current":
        check(g["generation"] == m["generation"],
              "%s: the current generation is not the model's" % what)
    if "segment" in g:
        check(g["segment"].startswith("/mbroker.%s.model.%s.%d-" % (
            INSTANCE_OF[0], m["name"], g["generation"])),
            "%s: generation segment name %r" % (what, g["segment"]))


INSTANCE_OF = [None]
PREFIX = ["pc-%d" % os.getpid()]


class Broker:
    """A broker on a private instance, killed and cleaned up by stop()."""

    count = 0

    def __init__(self, build, work, *args):
        Broker.count += 1
        self.instance = "%s-%d" % (PREFIX[0], Broker.count)
        INSTANCE_OF[0] = self.instance
        d = os.path.join(work, "b%d" % Broker.count)
        os.mkdir(d, 0o700)
        self.sock = os.path.join(d, "s.sock")
        self.log = open(os.path.join(work, "broker%d.log" % Broker.count),
                        "w")
        self.proc = subprocess.Popen(
            [os.path.join(build, "mbrokerd"), "--socket", self.sock,
             "--instance", self.instance] + list(args),
            stderr=self.log, stdout=self.log)
        with open(os.path.join(work, "pids"), "a") as f:
            f.write("%d\n" % self.proc.pid)
        deadline = time.monotonic() + 20
        while True:
            try:
                Conn(self.sock).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("broker did not start")
                time.sleep(0.02)

    def conn(self, **kw):
        return Conn(self.sock, **kw)

    def wait_exit(self, seconds):
        try:
            return self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            check(False, "broker still running after %s s" % seconds)
            return None

    def shm_names(self):
        return sorted(n for n in os.listdir("/dev/shm")
                      if n.startswith("mbroker.%s." % self.instance)
                      or n.startswith("sem.mbroker.%s." % self.instance))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for n in self.shm_names():
            try:
                os.unlink(os.path.join("/dev/shm", n))
            except OSError:
                pass
        self.log.close()


def safetensors(tensors):
    """A safetensors file of float32 tensors given as name -> count."""
    header, offset, data = {}, 0, b""
    for name, count in tensors.items():
        header[name] = {"dtype": "F32", "shape": [count],
                        "data_offsets": [offset, offset + 4 * count]}
        data += struct.pack("<%df" % count, *range(count))
        offset += 4 * count
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def padded_request(size, rid=1, op="ping"):
    """A valid request of exactly SIZE bytes: strings of at most 4000
    bytes, then spaces (JSON whitespace) before the closing brace."""
    body, i = '{"id":%d,"op":"%s"' % (rid, op), 0
    while size - len(body) - 1 > 4100:
        body += ',"k%d":"%s"' % (i, "x" * 4000)
        i += 1
    body += " " * (size - len(body) - 1) + "}"
    assert len(body) == size, (len(body), size)
    return body.encode()


def libc_sem():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sem_open.restype = ctypes.c_void_p
    libc.sem_open.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.sem_post.argtypes = [ctypes.c_void_p]
    libc.sem_close.argtypes = [ctypes.c_void_p]
    return libc


def hold(sock, model, fork=False):
    """The holder child: attaches MODEL, says so, never acks. With FORK,
    a child of it keeps the connection, writes its pid to WORK/pids (for
    the caller's cleanup) and says so, and the holder exits."""
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda *_: None)
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    c = Conn(sock, role="worker")
    msg, fds = c.call({"op": "attach", "name": model}, want_fds=True)
    if fork:
        if os.fork() != 0:
            os._exit(0)
        ctypes.CDLL(None).prctl(1, 0)
        work = os.path.dirname(os.path.dirname(sock))
        with open(os.path.join(work, "pids"), "a") as f:
            f.write("%d\n" % os.getpid())
        print("forked %d" % os.getpid(), flush=True)
    print("ready" if msg.get("ok") else "failed", flush=True)
    while True:
        time.sleep(1)


def start_holder(broker, model):
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                          "--hold", broker.sock, model],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    HOLDERS.append(p)
    line = p.stdout.readline().strip()
    check(line == "ready", "holder child could not attach %s" % model)
    return p


# ---------------------------------------------------------------------
# The parts of the protocol, each against a broker of its own options.

def part_framing(b):
    """hello, ping, ids, framing and the request limits."""
    c = b.conn(hello=False)
    c.err({"op": "ping"}, "bad_request")
    c.err({"op": "hello", "version": 2}, "version_mismatch")
    c.err({"op": "hello"}, "bad_request")
    for version in ("1", 1.0, True):
        c.err({"op": "hello", "version": version}, "bad_request")
    for role in ("", "a" * 16, "Worker", "w1", 5):
        c.err({"op": "hello", "version": 1, "role": role}, "bad_request")
    h = c.ok({"op": "hello", "version": 1, "role": "a" * 15})
    members(h, HELLO, "hello")
    check(h["version"] == 1, "hello version")
    check(h["broker"] == "mbrokerd 0.1.0", "hello broker %r" % h["broker"])
    check(h["instance"] == b.instance, "hello instance")
    check(h["pid"] == b.proc.pid, "hello pid")
    check(h["ack_semaphore"] == "/mbroker.%s.ack" % b.instance,
          "ack_semaphore %r" % h["ack_semaphore"])
    check(h["signal"] == signal.SIGUSR1, "signal %r" % h["signal"])
    check(h["shutting_down"] is False, "shutting_down")
    check(h["rights"] == "admin", "rights %r as root" % h["rights"])
    check(h["max_message"] == 65536, "max_message %r" % h["max_message"])
    h2 = c.ok({"op": "hello", "version": 1})
    members(h2, HELLO, "second hello")
    p = c.ok({"op": "ping"})
    check(set(p) == {"id", "ok"}, "ping reply %r" % p)
    c.err({"op": "nosuchop"}, "bad_request")
    c.err({"id": 3}, "bad_request")
    # ids
    for rid in (2**63 - 1, -2**63, 0):
        r = c.call({"op": "ping", "id": rid})
        check(r.get("id") == rid, "id %d not repeated: %r" % (rid, r))
    for raw in (b'{"op":"ping"}', b'{"id":7.0,"op":"ping"}',
                b'{"id":"7","op":"ping"}', b'{"id":null,"op":"ping"}',
                b'{"id":9223372036854775808,"op":"ping"}',
                b'{"id":-9223372036854775809,"op":"ping"}',
                b'{"id":1e2,"op":"ping"}'):
        c.raw_err(raw, what="id %s" % raw.decode())
    # records that are no request
    c.raw_err(b'{"id":1,"op":"ping","op":"ping"}', what="duplicate key")
    c.raw_err(b'{"id":1,"op":"ping","x":"a\\u0000"}', what="\\u0000")
    c.raw_err(b'{"id":1,"op":"ping","x":"a\x00"}', what="raw NUL")
    c.raw_err(b'{"id":1,"op":"ping","x":"\xff"}', what="invalid UTF-8")
    c.raw_err(b'[1,2]', what="array")
    c.raw_err(b'{"id":1,', what="truncated JSON")
    # strings: 4096 bytes pass, 4097 do not, escapes counted as written
    for n, good in ((4096, True), (4097, False)):
        for form in ("value", "key", "escaped"):
            if form == "value":
                raw = '{"id":5,"op":"ping","x":"%s"}' % ("v" * n)
            elif form == "key":
                raw = '{"id":5,"op":"ping","%s":1}' % ("k" * n)
            else:
                raw = '{"id":5,"op":"ping","x":"%s%s"}' % (
                    "\\u00e9", "v" * (n - 6))
            if good:
                c.send_raw(raw.encode())
                r, _ = c.next_msg()
                check(r.get("ok") is True and r.get("id") == 5,
                      "string %s of %d bytes refused: %r" % (form, n,
                                                             trim(r)))
            else:
                c.raw_err(raw.encode(), what="string %s %d" % (form, n))
    # nesting: 16 levels pass, 17 do not
    for depth, good in ((16, True), (17, False)):
        nest = "[" * (depth - 1) + "]" * (depth - 1)
        raw = '{"id":6,"op":"ping","x":%s}' % nest
        if good:
            c.send_raw(raw.encode())
            r, _ = c.next_msg()
            check(r.get("ok") is True, "nesting %d refused" % depth)
        else:
            c.raw_err(raw.encode(), what="nesting %d" % depth)
    # message size: max_message passes, one more does not
    c.send_raw(padded_request(65536, rid=11))
    r, _ = c.next_msg()
    check(r.get("ok") is True and r.get("id") == 11,
          "request of 65536 bytes: %r" % trim(r))
    c.raw_err(padded_request(65537, rid=12), what="request of 65537")
    c.raw_err(padded_request(200000, rid=13), what="request of 200000")
    for raw in (b'{"id":1,"op":"ping","x":"\\ud800"}',
                b'{"id":1,"op":"ping","x":"\xc0\xaf"}',
                b'{"id":1,"op":"ping","x":"\xed\xa0\x80"}'):
        c.raw_err(raw, what="lone surrogate or overlong UTF-8 %r" % raw)
    c.ok({"op": "ping"})
    # a descriptor sent by a client is closed unread; the request answers
    rfd, wfd = os.pipe()
    c.sock.sendmsg([b'{"id":40,"op":"ping"}'],
                   [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                     array.array("i", [rfd]))])
    os.close(rfd)
    r, _ = c.next_msg()
    check(r.get("id") == 40 and r.get("ok") is True, "ping with a fd")
    # the broker closed its copy: writing to a pipe without readers fails
    try:
        os.write(wfd, b"x")
        check(False, "the broker kept a descriptor a client sent")
    except BrokenPipeError:
        pass
    os.close(wfd)
    # an empty record ends the connection
    c.send_raw(b"")
    try:
        msg, _ = c.recv(5)
        check(False, "empty record answered: %r" % msg)
    except Closed:
        pass
    c.close()


def part_models(b, work):
    """load (each format, with and without wait), attach, detach, ack,
    list, stats, workers and their errors."""
    c = b.conn(role="worker")
    raw = write(os.path.join(work, "m.bin"), os.urandom(1 << 20))
    st = write(os.path.join(work, "m.safetensors"),
               safetensors({"a": 16, "b": 100}))
    st_as_raw = write(os.path.join(work, "t.data"),
                      safetensors({"c": 8}))
    m = c.ok({"op": "load", "name": "raw", "path": raw, "wait": True})
    check_model(m, "load wait")
    check(m["state"] == "READY" and m["size"] == 1 << 20
          and m["format"] == "raw" and m["tensors"] == 0,
          "raw load reply %r" % trim(m))
    m = c.ok({"op": "load", "name": "st", "path": st, "format": "auto",
              "wait": True})
    check(m.get("format") == "safetensors" and m.get("tensors") == 2,
          "auto safetensors %r" % trim(m))
    m = c.ok({"op": "load", "name": "st2", "path": st_as_raw,
              "format": "safetensors"})
    check_model(m, "load no wait")
    check(m["state"] in ("LOADING", "READY"), "load without wait state")
    check(m["size"] == os.path.getsize(st_as_raw), "size without wait")
    upper = write(os.path.join(work, "u.SAFETENSORS"), safetensors({"u": 4}))
    m = c.ok({"op": "load", "name": "up", "path": upper, "wait": True})
    check(m.get("format") == "raw", "auto for *.SAFETENSORS: %r"
          % m.get("format"))
    c.ok({"op": "unload", "name": "up"})
    m = c.ok({"op": "load", "name": "st3", "path": st, "format": "raw",
              "wait": True})
    check(m.get("format") == "raw", "format raw forced")
    wait_for(lambda: c.ok({"op": "list"})["total"] == 4, 5, "list total")
    lst = c.ok({"op": "list"})
    members(lst, {"models": list, "total": int}, "list")
    for mo in lst["models"]:
        check_model(mo, "list")
    wait_for(lambda: all(x["state"] == "READY" for x in
                         c.ok({"op": "list"})["models"]), 5, "all READY")
    # load errors
    for name in ("", "a" * 65, ".", "..", "a/b", "é"):
        c.err({"op": "load", "name": name, "path": raw}, "bad_name")
    c.ok({"op": "load", "name": "a" * 64, "path": raw, "wait": True})
    c.ok({"op": "unload", "name": "a" * 64})
    c.err({"op": "load", "name": "x", "path": "rel/file"}, "bad_request")
    c.err({"op": "load", "name": "x", "path": raw, "format": "gguf"},
          "bad_request")
    c.err({"op": "load", "name": "x"}, "bad_request")
    c.err({"op": "load", "name": "x", "path": raw, "wait": "yes"},
          "bad_request")
    for name in (5, None):
        c.err({"op": "load", "name": name, "path": raw}, "bad_request")
    c.err({"op": "load", "name": "raw", "path": raw}, "exists")
    c.err({"op": "load", "name": "x", "path": "/" + "p" * 4095},
          "bad_request")
    long_missing = "/" + "p" * 4094
    e = c.err({"op": "load", "name": "x", "path": long_missing,
               "wait": True}, "io_error", ("model",))
    members(e["error"], {"code": str, "message": str, "model": str},
            "failed load error")
    check(len(e["error"]["message"].encode()) == 1023,
          "a long message is cut at %d bytes, not 1023"
          % len(e["error"]["message"].encode()))
    missing = os.path.join(work, "missing")
    c.err({"op": "load", "name": "x", "path": missing}, "io_error",
          ("model",))
    c.err({"op": "load", "name": "x", "path": missing, "wait": True},
          "io_error", ("model",))
    # a directory is a bundle: as a single file, it is format_error
    c.err({"op": "load", "name": "x", "path": work, "format": "raw",
           "wait": True}, "format_error", ("model",))
    bad = write(os.path.join(work, "bad.safetensors"), b"\xff" * 16)
    e = c.err({"op": "load", "name": "x", "path": bad, "wait": True},
              "format_error", ("model",))
    check(e["error"].get("model") == "x", "failed load: model member")
    # a failed load without wait: the model goes to ERROR
    r = c.call({"op": "load", "name": "y", "path": bad})
    if r.get("ok"):
        wait_for(lambda: any(x["name"] == "y" and x["state"] == "ERROR"
                             for x in c.ok({"op": "list"})["models"]),
                 5, "failed load without wait shows ERROR")
        y = [x for x in c.ok({"op": "list"})["models"] if x["name"] == "y"]
        if y:
            check_model(y[0], "ERROR")
            check(y[0]["size"] == 0, "ERROR model size %r" % y[0]["size"])
        c.err({"op": "attach", "name": "y"}, "not_ready")
        u = c.ok({"op": "unload", "name": "y"})
        members(u, UNLOAD, "unload of ERROR")
        check(u["freed_bytes"] == 0 and u["segments_unlinked"] == 0,
              "unload of a failed load frees nothing: %r" % u)
    else:
        check_error(r, "format_error", "load bad without wait",
                    ("model",))
    # attach: the descriptor, read-only, the bytes
    r, fds = c.call({"op": "attach", "name": "raw"}, want_fds=True)
    members(r, ATTACH, "attach")
    check(len(fds) == 1, "attach passes %d descriptors" % len(fds))
    if fds:
        fd = fds[0]
        check(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY,
              "the descriptor is not read-only")
        check(os.fstat(fd).st_size >= r["size"], "segment smaller than size")
        mm = mmap.mmap(fd, r["size"], mmap.MAP_SHARED, mmap.PROT_READ)
        with open(raw, "rb") as f:
            check(mm[:] == f.read(), "attached bytes differ from the file")
        mm.close()
        try:
            mmap.mmap(fd, r["size"], mmap.MAP_SHARED,
                      mmap.PROT_READ | mmap.PROT_WRITE)
            check(False, "a writable mapping of the segment succeeded")
        except OSError:
            pass
        os.close(fd)
    att = r.get("attachment")
    r2, fds2 = c.call({"op": "attach", "name": "st"}, want_fds=True)
    if fds2:
        mm = mmap.mmap(fds2[0], r2["size"], mmap.MAP_SHARED, mmap.PROT_READ)
        with open(st, "rb") as f:
            check(mm[:] == f.read(), "safetensors segment is not the file")
        mm.close()
        os.close(fds2[0])
    c.err({"op": "attach", "name": "nope"}, "unknown_model")
    # bad_name is load's alone: a name no model has is unknown_model
    for req, code in (({"op": "attach", "name": "a/b"}, "unknown_model"),
                      ({"op": "attach", "name": 5}, "bad_request"),
                      ({"op": "unload", "name": "a/b"}, "unknown_model"),
                      ({"op": "unload", "name": 5}, "bad_request"),
                      ({"op": "unload", "name": "nope"}, "unknown_model"),
                      ({"op": "unload"}, "bad_request"),
                      ({"op": "shutdown", "timeout": -1}, "bad_request"),
                      ({"op": "list", "offset": 1.5}, "bad_request"),
                      ({"op": "detach"}, "bad_request"),
                      ({"op": "workers", "offset": -1}, "bad_request")):
        c.err(req, code)
    c.err({"op": "attach"}, "bad_request")
    # list pids, workers
    lst = c.ok({"op": "list"})
    rawm = [x for x in lst["models"] if x["name"] == "raw"][0]
    check(r["checksum"] == rawm["checksum"]
          and r["generation"] == rawm["generation"]
          and r["size"] == rawm["size"] and r["format"] == "raw",
          "attach %r and list %r disagree" % (trim(r), trim(rawm)))
    check(rawm["attached"] == 1 and rawm["pids"] == [os.getpid()],
          "list attached/pids %r" % trim(rawm))
    check(rawm.get("segment", "").lstrip("/") in b.shm_names(),
          "segment %r not in /dev/shm" % rawm.get("segment"))
    w = c.ok({"op": "workers"})
    members(w, {"workers": list, "total": int}, "workers")
    for item in w["workers"]:
        members(item, WORKER, "workers item")
    mine = [x for x in w["workers"] if x["pid"] == os.getpid()]
    check(len(mine) == 1 and mine[0]["role"] == "worker"
          and len(mine[0]["attachments"]) == 2, "workers: %r" % trim(w))
    if mine:
        for a in mine[0]["attachments"]:
            members(a, {"attachment": int, "model": str, "generation": int},
                    "workers attachment")
    # a connection that is no worker and holds nothing is not listed;
    # one that holds an attachment is, with role "client" when it gave
    # none; a second hello replaces the role
    other = b.conn()
    r, fds = other.call({"op": "attach", "name": "raw"}, want_fds=True)
    for fd in fds:
        os.close(fd)
    roles = [x["role"] for x in other.ok({"op": "workers"})["workers"]]
    check(sorted(roles) == ["client", "worker"], "roles %r" % roles)
    other.ok({"op": "hello", "version": 1, "role": "admin"})
    roles = [x["role"] for x in other.ok({"op": "workers"})["workers"]]
    check(sorted(roles) == ["admin", "worker"], "roles %r" % roles)
    other.ok({"op": "ack"})
    other.close()
    other = b.conn()
    w = other.ok({"op": "workers"})
    check(all(x["role"] == "worker" or x["attachments"]
              for x in w["workers"]), "workers lists a plain client")
    s = other.ok({"op": "stats"})
    members(s, STATS, "stats")
    check(s["version"] == "0.1.0" and s["instance"] == b.instance
          and s["pid"] == b.proc.pid, "stats identity %r" % trim(s))
    check(s["workers"] == 1 and s["connections"] == 2,
          "stats workers/connections %r" % trim(s))
    check(s["bytes_shared"] == sum(x["size"] for x in lst["models"]
                                   if x["state"] in ("READY", "UNLOADING")),
          "bytes_shared %r" % s["bytes_shared"])
    other.close()
    # detach, ack
    d = c.ok({"op": "detach", "attachment": att})
    check(set(d) == {"id", "ok"}, "detach reply %r" % d)
    c.err({"op": "detach", "attachment": att}, "not_attached")
    other = b.conn()
    r, fds = other.call({"op": "attach", "name": "raw"}, want_fds=True)
    for fd in fds:
        os.close(fd)
    c.err({"op": "detach", "attachment": r["attachment"]}, "not_attached")
    other.close()
    c.err({"op": "detach", "attachment": "1"}, "bad_request")
    a = c.ok({"op": "ack", "id": 0})
    members(a, {"released": int}, "ack")
    check(a["released"] == 1, "ack released %r" % a)
    a = c.ok({"op": "ack"})
    check(a.get("released") == 0, "second ack released %r" % a)
    # offset
    c.err({"op": "list", "offset": -1}, "bad_request")
    c.err({"op": "list", "offset": "1"}, "bad_request")
    r = c.ok({"op": "list", "offset": 1000})
    check(r["models"] == [] and "next" not in r, "list past the end %r" % r)
    r = c.ok({"op": "workers", "offset": 1000})
    check(r["workers"] == [] and "next" not in r, "workers past the end")
    # timeout bounds
    c.err({"op": "unload", "name": "st3", "timeout": -1}, "bad_request")
    c.err({"op": "unload", "name": "st3", "timeout": 86400.001},
          "bad_request")
    c.err({"op": "unload", "name": "st3", "timeout": "1"}, "bad_request")
    c.ok({"op": "unload", "name": "st3", "timeout": 86400})
    c.ok({"op": "unload", "name": "st2", "timeout": 0})
    c.err({"op": "unload", "name": "st2"}, "unknown_model")
    # at most 16 attach replies unread: the 17th closes the connection
    for n, closed in ((16, False), (17, True)):
        k = b.conn()
        before = c.ok({"op": "stats"})["attaches"]
        for i in range(n):
            k.send({"op": "attach", "name": "raw", "id": 100 + i})
        # read nothing until the broker has granted 16 (and, for 17, has
        # dropped the connection)
        wait_for(lambda: c.ok({"op": "stats"})["attaches"] >= before + 16,
                 10, "16 attaches not granted")
        if closed:
            wait_for(lambda: c.ok({"op": "stats"})["connections"] == 1, 10,
                     "17 unread attach replies did not close")
        got, was_closed = 0, False
        try:
            while got < n:
                msg, fds = k.next_msg(2)
                for fd in fds:
                    os.close(fd)
                got += 1
            k.ok({"op": "ping"})
        except (Closed, ConnectionResetError, socket.timeout):
            was_closed = True
        check(was_closed == closed, "%d unread attach replies: closed=%s"
              % (n, was_closed))
        k.close()
    # 256 messages of any kind queued: the connection is closed and its
    # attachments released
    k = b.conn()
    r, fds = k.call({"op": "attach", "name": "raw"}, want_fds=True)
    for fd in fds:
        os.close(fd)
    k.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    closed = False
    try:
        for i in range(2000):
            k.send({"op": "stats", "id": i})
    except OSError:
        closed = True
    time.sleep(0.3)
    try:
        while True:
            k.recv(2)
    except (Closed, ConnectionResetError):
        closed = True
    except socket.timeout:
        pass
    check(closed, "2000 unread replies did not close the connection")
    k.close()
    wait_for(lambda: c.ok({"op": "stats"})["connections"] == 1, 5,
             "closed connections are gone from stats")
    check(c.ok({"op": "stats"})["workers"] == 0,
          "a dropped connection's attachment was not released")
    # a worker that forked and exited: its child holds the connection
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                          "--hold-fork", b.sock, "raw"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    child = int(p.stdout.readline().split()[1])
    check(p.stdout.readline().strip() == "ready", "forked holder")
    p.wait()
    w = [x for x in c.ok({"op": "workers"})["workers"] if x["pid"] == p.pid]
    check(len(w) == 1 and w[0]["exited"] is True,
          "workers of an exited pid whose child holds on: %r" % w)
    m = [x for x in c.ok({"op": "list"})["models"] if x["name"] == "raw"]
    check(m and m[0]["pids"] == [p.pid], "model pids %r" % m)
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: c.ok({"op": "stats"})["workers"] == 0, 5,
             "the forked child's death released its attachment")
    c.ok({"op": "unload", "name": "st"})
    c.ok({"op": "unload", "name": "raw"})
    c.close()


def part_bundle(b, work):
    """load of a directory (a bundle), its model object, attach and the
    members op with their descriptors, and their errors."""
    c = b.conn(role="worker")
    d = os.path.join(work, "bundle")
    os.makedirs(os.path.join(d, "sub"))
    files = {"a.bin": os.urandom(5000), "zero": b"",
             "sub/m.safetensors": safetensors({"w": 64})}
    for i in range(7):
        files["sub/f%d" % i] = os.urandom(100 + i)
    for name, data in files.items():
        write(os.path.join(d, name), data)
    names = sorted(files, key=lambda n: n.encode())
    m = c.ok({"op": "load", "name": "bun", "path": d, "wait": True})
    check_model(m, "bundle load")
    check(m["format"] == "bundle" and m.get("members") == len(files) and
          m["size"] == sum(len(x) for x in files.values()) and
          m["tensors"] == 1, "bundle model %r" % trim(m))
    r, fds = c.call({"op": "attach", "name": "bun"}, want_fds=True)
    members(r, ATTACH_BUNDLE, "bundle attach")
    check(r.get("descriptors") == {"from": 0, "count": 8},
          "bundle attach descriptors %r" % r.get("descriptors"))
    check(len(fds) == 8, "bundle attach passes %d descriptors" % len(fds))
    listed = r.get("members", [])
    for x in listed:
        members(x, MEMBER, "bundle attach member")
    check([x.get("name") for x in listed] == names,
          "bundle members %r" % [x.get("name") for x in listed])
    page, more = c.call({"op": "members", "attachment": r["attachment"],
                         "from": 8}, want_fds=True)
    members(page, MEMBERS, "members")
    check(page.get("from") == 8 and page.get("count") == 2 and
          len(more) == 2, "members page %r, %d descriptors"
          % (page, len(more)))
    for fd, x in zip(fds + more, listed):
        check(os.fstat(fd).st_size == x["size"] and
              fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY,
              "member %s: segment" % x["name"])
        if x["size"]:
            mm = mmap.mmap(fd, x["size"], mmap.MAP_SHARED, mmap.PROT_READ)
            check(mm[:] == files[x["name"]], "member %s: bytes" % x["name"])
            mm.close()
        os.close(fd)
    att = r["attachment"]
    for bad in (10, -1, "8", None):
        c.err({"op": "members", "attachment": att, "from": bad},
              "bad_request")
    c.err({"op": "members", "attachment": att + 99, "from": 0},
          "not_attached")
    one = write(os.path.join(work, "one.bin"), b"x" * 100)
    c.ok({"op": "load", "name": "one", "path": one, "wait": True})
    r1, fds1 = c.call({"op": "attach", "name": "one"}, want_fds=True)
    members(r1, ATTACH, "single-file attach")
    for fd in fds1:
        os.close(fd)
    c.err({"op": "members", "attachment": r1["attachment"], "from": 0},
          "bad_request")
    c.ok({"op": "ack"})
    c.err({"op": "load", "name": "x", "path": one, "format": "bundle"},
          "format_error", ("model",))
    many = os.path.join(work, "many")
    os.mkdir(many)
    for i in range(257):
        write(os.path.join(many, str(i)), b"")
    c.err({"op": "load", "name": "x", "path": many}, "limit", ("model",))
    u = c.ok({"op": "unload", "name": "bun"})
    members(u, UNLOAD, "unload of a bundle")
    check(u["segments_unlinked"] == len(files), "unload of a bundle %r" % u)


def part_pages(b, work):
    """256 models with long paths (list pages, the model limit), 256
    attachments on a connection (the limit), and workers pages."""
    c = b.conn()
    d = work
    while len(d) < 3950:
        d = os.path.join(d, "d" * min(200, 3950 - len(d)))
    os.makedirs(d, exist_ok=True)
    names = []
    for i in range(256):
        p = write(os.path.join(d, "f%03d" % i), bytes([i]) * 64)
        name = ("m%03d" % i) + "n" * 60
        names.append(name)
        c.send({"op": "load", "name": name, "path": p, "wait": True,
                "id": 1000 + i})
        if i % 16 == 15:
            for j in range(i - 15, i + 1):
                r, _ = c.reply_to(1000 + j)
                check(r.get("ok") is True, "load %d: %r" % (j, trim(r)))
    p = write(os.path.join(work, "extra"), b"x" * 64)
    c.err({"op": "load", "name": "extra", "path": p}, "limit")
    models, offset, pages = [], 0, 0
    while True:
        req = {"op": "list"}
        if offset:
            req["offset"] = offset
        r = c.ok(req)
        pages += 1
        check(r["total"] == 256, "list total %r" % r["total"])
        check(len(json.dumps(r, separators=(",", ":"))) <= MAX_REPLY
              - 1024 + 64, "list page over the limit minus 1 KiB")
        models += r["models"]
        if "next" not in r:
            break
        check(r["next"] == offset + len(r["models"]),
              "next %r after offset %d + %d" % (r["next"], offset,
                                                len(r["models"])))
        offset = r["next"]
    check(pages > 1, "256 long models in %d page" % pages)
    check(sorted(x["name"] for x in models) == sorted(names),
          "pages lost or repeated models")
    for x in models[:3]:
        check_model(x, "paged list")
    # attachments: 256 pass, the 257th is `limit`; 7 such connections
    conns = []
    for k in range(7):
        w = b.conn(role="worker")
        for i in range(256):
            w.send({"op": "attach", "name": names[i], "id": i})
            r, fds = w.reply_to(i)
            for fd in fds:
                os.close(fd)
            if not check(r.get("ok") is True, "attach %d: %r" % (i, trim(r))):
                break
        conns.append(w)
    conns[0].err({"op": "attach", "name": names[0]}, "limit")
    items, offset, pages = [], 0, 0
    while True:
        r = c.ok({"op": "workers", "offset": offset})
        pages += 1
        items += r["workers"]
        if "next" not in r:
            break
        offset = r["next"]
    check(pages > 1, "workers of 7 x 256 attachments in %d page" % pages)
    check(len(items) == 7 and r["total"] == 7, "workers items %d total %r"
          % (len(items), r["total"]))
    for w in conns:
        check(w.ok({"op": "ack"}).get("released") == 256, "ack of 256")
        w.close()
    c.close()


def part_loading(b, work):
    """A slow load: LOADING, progress, already_loading, not_ready, a load
    cancelled by an unload and by the shutdown."""
    big = write(os.path.join(work, "big.bin"), b"\x01" * (8 << 20))
    c = b.conn()
    m = c.ok({"op": "load", "name": "big", "path": big})
    check(m["state"] == "LOADING" and m["size"] == 8 << 20
          and "bytes_done" in m, "LOADING reply %r" % trim(m))
    check_model(m, "LOADING")
    c.err({"op": "load", "name": "big", "path": big}, "already_loading")
    c.err({"op": "attach", "name": "big"}, "not_ready")
    time.sleep(0.5)
    m = [x for x in c.ok({"op": "list"})["models"] if x["name"] == "big"][0]
    check(0 < m.get("bytes_done", 0) < m["size"] == 8 << 20,
          "progress %r/%r" % (m.get("bytes_done"), m["size"]))
    # a waiting load of another name, then the unload that cancels it
    w = b.conn()
    wid = w.send({"op": "load", "name": "big2", "path": big, "wait": True})
    time.sleep(0.2)
    u = c.ok({"op": "unload", "name": "big2", "timeout": 2})
    members(u, UNLOAD, "unload of a LOADING model")
    check(u["segments_unlinked"] == 1 and u["freed_bytes"] == 8 << 20,
          "unload of a loading model: freed %r unlinked %r"
          % (u["freed_bytes"], u["segments_unlinked"]))
    r, _ = w.reply_to(wid)
    check_error(r, "cancelled", "waiting load cancelled by unload", ("model",))
    # an unload ends a load at once: the name is free again
    k = b.conn()
    c.ok({"op": "unload", "name": "big", "timeout": 3})
    c.err({"op": "attach", "name": "big"}, "unknown_model")
    # shutdown during a load: a waiting load gets cancelled
    wid = w.send({"op": "load", "name": "big3", "path": big, "wait": True})
    time.sleep(0.2)
    sid = c.send({"op": "shutdown", "timeout": 2})
    r, _ = w.reply_to(wid)
    check_error(r, "cancelled", "waiting load cancelled by shutdown",
                ("model",))
    ev = k.event(2)
    check(ev is not None and ev.get("event") == "shutdown",
          "shutdown event %r" % ev)
    r, _ = c.reply_to(sid)
    members(r, SHUTDOWN, "shutdown during a load")
    check(b.wait_exit(5) == 0, "exit status after a clean shutdown")
    check(b.shm_names() == [], "left in /dev/shm: %r" % b.shm_names())


def part_unload(b, work):
    """Events, the unload signal, the ack semaphore, timeouts, joins,
    --kill-after and a shutdown with a holder."""
    signal.signal(signal.SIGUSR1, lambda *_: SIGNALS.append(1))
    model = write(os.path.join(work, "u.bin"), b"\x02" * 65536)
    c = b.conn()
    w = b.conn(role="worker")
    sem_name = w.hello_reply["ack_semaphore"].encode()
    libc = libc_sem()
    sem = libc.sem_open(sem_name, 0)
    check(bool(sem), "sem_open(%r, 0) failed" % sem_name)
    check("sem" + w.hello_reply["ack_semaphore"].replace("/", ".")
          in b.shm_names(), "no semaphore in /dev/shm")
    # an unload answered by ack + post
    gen = c.ok({"op": "load", "name": "u", "path": model, "wait": True})
    r, fds = w.call({"op": "attach", "name": "u"}, want_fds=True)
    for fd in fds:
        os.close(fd)
    del SIGNALS[:]
    t0 = time.monotonic()
    uid = c.send({"op": "unload", "name": "u"})
    ev = w.event(3)
    check(ev == {"event": "unload", "model": "u",
                 "generation": gen["generation"], "timeout_ms": 5000},
          "unload event %r" % ev)
    wait_for(lambda: SIGNALS, 2, "no unload signal")
    check(w.ok({"op": "ack", "id": 0}).get("released") == 1, "ack")
    if sem:
        libc.sem_post(sem)
    u, _ = c.reply_to(uid)
    members(u, UNLOAD, "unload")
    check(time.monotonic() - t0 < 2, "unload slow after ack")
    check(u["state"] == "UNINITIALIZED" and u["freed_bytes"] == 65536
          and u["segments_unlinked"] == 1, "unload reply %r" % u)
    # a post without a message releases nothing: timeout, members
    c.ok({"op": "load", "name": "u", "path": model, "wait": True})
    r, fds = w.call({"op": "attach", "name": "u"}, want_fds=True)
    for fd in fds:
        os.close(fd)
    uid = c.send({"op": "unload", "name": "u", "timeout": 0.5})
    w.event(2)
    if sem:
        libc.sem_post(sem)
    u, _ = c.reply_to(uid)
    check_error(u, "timeout", "unload with a holder", None)
    if u.get("error"):
        e = dict(u["error"])
        members(e, dict(UNLOAD, code=str, message=str, pids=list),
                "timeout error")
        check(e.get("state") == "ERROR" and e.get("pids") == [os.getpid()],
              "timeout error %r" % e)
        check(e.get("freed_bytes") == 0, "freed_bytes %r while a worker "
              "holds the segment" % e.get("freed_bytes"))
        check(500 <= e.get("waited_ms", 0) < 1500, "waited_ms %r"
              % e.get("waited_ms"))
    m = [x for x in c.ok({"op": "list"})["models"] if x["name"] == "u"]
    check(m and m[0]["state"] == "ERROR", "after timeout: %r" % m)
    check(m and m[0]["size"] == 65536 and m[0]["attached"] == 1
          and "segment" not in m[0], "ERROR after an unload timeout: %r"
          % m)
    if m:
        check_model(m[0], "ERROR after timeout")
    # a model in ERROR that a worker still holds cannot be loaded again
    c.err({"op": "load", "name": "u", "path": model}, "exists")
    c.err({"op": "attach", "name": "u"}, "not_ready")
    st = c.ok({"op": "stats"})
    check(st["bytes_reserved"] == 65536 and st["bytes_shared"] == 0,
          "while a worker maps an unlinked segment: reserved %r shared %r"
          % (st["bytes_reserved"], st["bytes_shared"]))
    w.ok({"op": "ack"})
    check(c.ok({"op": "stats"})["bytes_reserved"] == 0,
          "bytes still reserved after the holder let go")
    u = c.ok({"op": "unload", "name": "u"})
    check(u["freed_bytes"] == 0 and u["segments_unlinked"] == 0,
          "second unload of a timed-out model: %r" % u)
    # a second unload joins the first: same reply, the first's deadline
    c.ok({"op": "load", "name": "j", "path": model, "wait": True})
    for _ in range(2):
        r, fds = w.call({"op": "attach", "name": "j"}, want_fds=True)
        for fd in fds:
            os.close(fd)
    k = b.conn()
    t0 = time.monotonic()
    id1 = c.send({"op": "unload", "name": "j", "timeout": 0.6})
    time.sleep(0.05)
    k.err({"op": "attach", "name": "j"}, "unloading")
    k.err({"op": "load", "name": "j", "path": model}, "unloading")
    id2 = k.send({"op": "unload", "name": "j", "timeout": 0})
    id3 = k.send({"op": "unload", "name": "j", "timeout": 5})
    m = [x for x in c.ok({"op": "list"})["models"] if x["name"] == "j"]
    check(m and m[0]["state"] == "UNLOADING" and m[0]["attached"] == 2,
          "list during an unload: %r" % m)
    if m:
        check_model(m[0], "UNLOADING")
    r1, _ = c.reply_to(id1)
    r2, _ = k.reply_to(id2)
    r3, _ = k.reply_to(id3)
    el = time.monotonic() - t0
    check_error(r1, "timeout", "first unload", None)
    check(r1 == dict(r2, id=id1) == dict(r3, id=id1),
          "joined unload replies differ: %r vs %r vs %r"
          % (trim(r1), trim(r2), trim(r3)))
    check(0.55 < el < 3, "joined unloads ended at %.2f s" % el)
    check(w.event(1) is not None and w.event(0.3) is None,
          "one unload event for two attachments and three unloads")
    check(w.ok({"op": "ack"}).get("released") == 2, "ack of two")
    c.ok({"op": "unload", "name": "j"})
    k.close()
    # --kill-after 1: a holder that never acks is killed at 1 s
    c.ok({"op": "load", "name": "k", "path": model, "wait": True})
    h = start_holder(b, "k")
    t0 = time.monotonic()
    u = c.ok({"op": "unload", "name": "k", "timeout": 3}, timeout=10)
    el = time.monotonic() - t0
    check(u.get("killed") == [h.pid], "killed %r, holder %d"
          % (u.get("killed"), h.pid))
    check(0.9 < el < 2.9, "kill-after 1 s took %.2f s" % el)
    check(h.wait(5) == -signal.SIGKILL, "holder not killed")
    # --kill-after kills only the process that connected: one that exited,
    # its forked child holding the connection, is named, `killed` is empty
    c.ok({"op": "load", "name": "f", "path": model, "wait": True})
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                          "--hold-fork", b.sock, "f"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    child = int(p.stdout.readline().split()[1])
    p.stdout.readline()
    p.wait()
    t0 = time.monotonic()
    u = c.err({"op": "unload", "name": "f", "timeout": 1.5}, "timeout",
              None)
    check(time.monotonic() - t0 > 1.4, "unload of a forked holder ended "
          "early")
    check(u["error"].get("killed") == [] and u["error"].get("pids")
          == [p.pid], "forked holder: %r" % trim(u))
    try:
        os.kill(child, signal.SIGKILL)
    except ProcessLookupError:
        check(False, "--kill-after killed the child of a worker")
    wait_for(lambda: c.ok({"op": "unload", "name": "f"}).get("ok"), 3,
             "unload after the forked holder died")
    # an unload whose timeout is shorter than --kill-after: no one killed
    c.ok({"op": "load", "name": "k", "path": model, "wait": True})
    h = start_holder(b, "k")
    u = c.call({"op": "unload", "name": "k", "timeout": 0.5})
    check_error(u, "timeout", "unload shorter than kill-after", None)
    check(h.poll() is None and "killed" not in u.get("error", {}),
          "holder killed before kill-after")
    h.kill()
    h.wait()
    wait_for(lambda: c.ok({"op": "unload", "name": "k"}).get("ok"), 3,
             "unload after the holder died")
    # the counters: loads that became READY, unloads that ended in time or
    # at their deadline, attaches granted, ack requests
    st = c.ok({"op": "stats"})
    got = {k: st[k] for k in ("loads", "load_failures", "unloads",
                              "unload_timeouts", "attaches", "detaches",
                              "acks")}
    check(got == {"loads": 6, "load_failures": 0, "unloads": 6,
                  "unload_timeouts": 4, "attaches": 7, "detaches": 0,
                  "acks": 3}, "counters %r" % got)
    # a detach releases as an ack does: the unload ends at once
    c.ok({"op": "load", "name": "d", "path": model, "wait": True})
    r, fds = w.call({"op": "attach", "name": "d"}, want_fds=True)
    for fd in fds:
        os.close(fd)
    t0 = time.monotonic()
    uid = c.send({"op": "unload", "name": "d", "timeout": 5})
    check(w.event(2) is not None, "no unload event")
    w.ok({"op": "detach", "attachment": r["attachment"]})
    u, _ = c.reply_to(uid)
    check(u.get("ok") is True and time.monotonic() - t0 < 2,
          "unload after a detach: %r" % trim(u))
    check(c.ok({"op": "stats"})["detaches"] == 1, "detaches counter")
    # shutdown: events to every hello'd client, joined shutdown, joined
    # unload shorter than the shutdown does not shorten it, timeout error
    c.ok({"op": "load", "name": "s", "path": model, "wait": True})
    h = start_holder(b, "s")
    r, fds = w.call({"op": "attach", "name": "s"}, want_fds=True)
    for fd in fds:
        os.close(fd)
    other = b.conn()
    t0 = time.monotonic()
    sid = c.send({"op": "shutdown", "timeout": 0.9})
    for conn in (w, other):
        ev = conn.event(2)
        check(ev == {"event": "shutdown", "timeout_ms": 900},
              "shutdown event %r" % ev)
    check(w.event(0.1) is None, "an unload event in a shutdown")
    r = other.call({"op": "load", "name": "z", "path": model})
    check_error(r, "shutting_down", "load during shutdown")
    r = other.call({"op": "attach", "name": "s"})
    check_error(r, "shutting_down", "attach during shutdown")
    other.err({"op": "unload", "name": "nope"}, "unknown_model")
    hl = other.ok({"op": "hello", "version": 1})
    check(hl.get("shutting_down") is True, "hello during shutdown")
    uid = other.send({"op": "unload", "name": "s", "timeout": 0.1})
    jid = other.send({"op": "shutdown", "timeout": 0.1})
    r, _ = c.reply_to(sid)
    u, _ = other.reply_to(uid)
    j, _ = other.reply_to(jid)
    check(u.get("error", {}).get("code") == "timeout",
          "an unload joined to the shutdown: %r" % trim(u))
    el = time.monotonic() - t0
    check(0.85 < el < 3, "shutdown of 0.9 s ended at %.2f s" % el)
    check_error(r, "timeout", "shutdown with a holder", None)
    if r.get("error"):
        members(r["error"], dict(SHUTDOWN, code=str, message=str,
                                 pids=list), "shutdown timeout error")
        check(sorted(r["error"].get("pids", [])) == sorted([h.pid,
                                                           os.getpid()]),
              "shutdown pids %r"
              % r["error"].get("pids"))
    check(j.get("error", {}).get("code") == "timeout", "joined shutdown %r"
          % trim(j))
    check(b.wait_exit(5) == 1, "exit status after a shutdown timeout")
    check(h.poll() is None, "a shutdown shorter than --kill-after killed")
    h.kill()
    h.wait()
    if sem:
        libc.sem_close(sem)
    check(b.shm_names() == [], "left in /dev/shm: %r" % b.shm_names())


def part_options(b, work):
    """--max-message 1024, --max-connections 3, --idle-timeout 1,
    --max-shm-bytes and --model-dir."""
    inside = os.path.join(work, "models")
    ok = write(os.path.join(inside, "a.bin"), b"\x03" * 4096)
    big = write(os.path.join(inside, "b.bin"), b"\x03" * (1 << 20))
    out = write(os.path.join(work, "out.bin"), b"\x03" * 4096)
    c = b.conn()
    check(c.hello_reply["max_message"] == 1024, "max_message %r"
          % c.hello_reply["max_message"])
    c.send_raw(padded_request(1024, rid=3))
    r, _ = c.next_msg()
    check(r.get("id") == 3 and r.get("ok"), "1024-byte request refused")
    c.raw_err(padded_request(1025, rid=4), what="1025-byte request")
    c.ok({"op": "load", "name": "a", "path": ok, "wait": True})
    c.err({"op": "load", "name": "o", "path": out}, "permission_denied")
    # over the budget, with or without wait: refused at once (no_space,
    # the bytes needed), nothing left; "a", though nobody holds it, is not
    # evicted: that would not make room
    for req in ({"op": "load", "name": "b", "path": big},
                {"op": "load", "name": "b2", "path": big, "wait": True}):
        r = c.call(req)
        check_error(r, "no_space", "load over --max-shm-bytes",
                    ("model", "needed"))
        check(r.get("error", {}).get("needed") == 1 << 20,
              "no_space needed %r" % r)
    c.err({"op": "load", "name": "m", "path": inside + "/missing"},
          "io_error", ("model",))
    # the catalog: a.bin and b.bin of the model dir (not out.bin), sorted
    cat = c.ok({"op": "catalog"})
    members(cat, {"models": list, "total": int}, "catalog")
    for x in cat["models"]:
        members(x, {"name": str, "path": str, "format": str, "size": int,
                    "loaded": bool}, "catalog item")
    check([(x["name"], x["format"], x["size"], x["loaded"])
           for x in cat["models"]] == [("a", "raw", 4096, True),
                                       ("b", "raw", 1 << 20, False)],
          "catalog %r" % cat["models"])
    for op, pinned in (("pin", True), ("unpin", False)):
        r = c.ok({"op": op, "name": "zz"})
        members(r, {"name": str, "pinned": bool, "loaded": bool}, op)
        check(r["pinned"] is pinned and r["loaded"] is False,
              "%s of a name not loaded: %r" % (op, r))
    c.err({"op": "pin", "name": "a/b"}, "bad_name")
    # a failed load stays in ERROR; one refused at its reply leaves nothing
    states = {x["name"]: x["state"] for x in c.ok({"op": "list"})["models"]}
    check(states == {"a": "READY", "m": "ERROR"},
          "after failed loads: %r" % states)
    check(all(x["size"] == 0 for x in c.ok({"op": "list"})["models"]
              if x["state"] == "ERROR"), "size of a failed load not 0")
    s = c.ok({"op": "stats"})
    check(s["evictions"] == 0, "evictions %r that made no room"
          % s["evictions"])
    check(s["loads"] == 1 and s["load_failures"] == 1,
          "counters: loads %r, load_failures %r (refusals do not count)"
          % (s["loads"], s["load_failures"]))
    check(s["max_shm_bytes"] == 65536 and s["bytes_reserved"] == 4096,
          "budget stats %r %r" % (s["max_shm_bytes"], s["bytes_reserved"]))
    # connections: 3 pass, the 4th gets `limit` with id null, then closed
    c2 = b.conn()
    c3 = b.conn(hello=False)
    c4 = b.conn(hello=False)
    msg, _ = c4.recv(3)
    check_error(msg, "limit", "connection over --max-connections")
    check(msg.get("id", 0) is None, "limit id %r" % msg.get("id", 0))
    try:
        c4.recv(3)
        check(False, "connection over the limit kept open")
    except (Closed, ConnectionResetError):
        pass
    c4.close()
    # idle: no hello within 1 s: bad_request, id null, closed
    t0 = time.monotonic()
    msg, _ = c3.recv(5)
    check(0.8 < time.monotonic() - t0 < 3, "idle timeout after %.2f s"
          % (time.monotonic() - t0))
    check_error(msg, "bad_request", "idle connection")
    check(msg.get("id", 0) is None, "idle id %r" % msg.get("id", 0))
    try:
        c3.recv(3)
        check(False, "idle connection kept open")
    except (Closed, ConnectionResetError):
        pass
    c3.close()
    c2.close()
    # the registry mirror, while this connection holds model a
    r, fds = c.call({"op": "attach", "name": "a"}, want_fds=True)
    for fd in fds:
        os.close(fd)
    with open("/dev/shm/mbroker.%s.registry" % b.instance, "rb") as f:
        head = f.read(64)
    check(head[:8] == b"MBREG002", "mirror magic %r" % head[:8])
    fields = struct.unpack("<8sQQIIQIIQQ", head)
    check(fields[3] == 256 and fields[4] == 8192 and fields[7] == 48
          and fields[6] == 3, "mirror header %r" % (fields,))
    listed = {x["name"]: x for x in c.ok({"op": "list"})["models"]}
    # idle_ms grows with time: the mirror's is as of its slot's rewrite.
    for x in listed.values():
        for key in ("pids", "id", "ok", "idle_ms"):
            x.pop(key, None)
        for g in x.get("generations", []):
            g.pop("pids", None)
    mirror = {}

    def mirror_matches():
        # A model's slot is rewritten just after the reply that changed
        # it: it may lag that reply by a moment.
        with open("/dev/shm/mbroker.%s.registry" % b.instance, "rb") as f:
            mirror["data"] = f.read()
        mirror["slots"] = model_slots(mirror["data"], fields)
        for _, x in mirror["slots"]:
            x.pop("idle_ms", None)
        return {x["name"]: x for _, x in mirror["slots"]} == listed
    wait_for(mirror_matches, 5, "the mirror's model slots never matched "
             "list: %r" % listed)
    data = mirror["data"]
    check(len(data) == fields[9], "mirror size %d, header %d"
          % (len(data), fields[9]))
    st = os.stat("/dev/shm/mbroker.%s.registry" % b.instance)
    check(st.st_mode & 0o777 == 0o600, "mirror mode %o" % st.st_mode)
    check(st.st_blocks * 512 >= st.st_size, "mirror pages not reserved: "
          "%d of %d bytes" % (st.st_blocks * 512, st.st_size))
    check(abs(st.st_size - (2 << 20) - 48 * 3) < 64 << 10,
          "mirror of %d bytes, not about 2 MiB + 48 x 3" % st.st_size)
    broker_rec = json.loads(data[64:64 + fields[2]])
    check(broker_rec == {"instance": b.instance, "pid": b.proc.pid,
                         "shutting_down": False},
          "mirror broker record %r" % broker_rec)
    slot_of = {x["name"]: i for i, x in mirror["slots"]}
    held = []
    for j in range(fields[6]):
        off = fields[8] + j * fields[7]
        _seq, pid = struct.unpack("<Qq", data[off:off + 16])
        words = struct.unpack("<4Q", data[off + 16:off + 48])
        if pid:
            held.append((pid, [i for i in range(256)
                               if words[i // 64] >> (i % 64) & 1]))
    check(held == [(os.getpid(), [slot_of.get("a")])], "mirror worker "
          "slots %r, model a in slot %r" % (held, slot_of.get("a")))
    c.ok({"op": "ack"})
    s = c.ok({"op": "shutdown"})
    members(s, SHUTDOWN, "shutdown")
    # every model the shutdown removed, the failed loads in ERROR too
    check(s["models_unloaded"] == 2 and s["freed_bytes"] == 4096,
          "shutdown reply %r" % s)
    check(b.wait_exit(5) == 0, "exit status after shutdown")


def check_max_message_bounds(build, work):
    """--max-message out of 1024..163840 fails the start (exit 2)."""
    for n in (1023, 163841):
        d = os.path.join(work, "mm%d" % n)
        os.mkdir(d, 0o700)
        p = subprocess.Popen([os.path.join(build, "mbrokerd"), "--socket",
                              os.path.join(d, "s.sock"), "--instance",
                              "%s-mm%d" % (PREFIX[0], n),
                              "--max-message", str(n)],
                             stderr=subprocess.DEVNULL)
        with open(os.path.join(work, "pids"), "a") as f:
            f.write("%d\n" % p.pid)
        try:
            check(p.wait(10) == 2, "--max-message %d: exit %r"
                  % (n, p.returncode))
        except subprocess.TimeoutExpired:
            check(False, "--max-message %d accepted" % n)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()


def part_max_message(b, work):
    """--max-message 163840, the largest: a request of that size passes,
    one byte more does not; --signal USR2 is said in hello."""
    c = b.conn()
    check(c.hello_reply["signal"] == signal.SIGUSR2, "signal %r"
          % c.hello_reply["signal"])
    check(c.hello_reply["max_message"] == 163840, "max_message %r"
          % c.hello_reply["max_message"])
    c.send_raw(padded_request(163840, rid=3))
    r, _ = c.next_msg()
    check(r.get("id") == 3 and r.get("ok"), "163840-byte request refused")
    c.raw_err(padded_request(163841, rid=4), what="163841-byte request")
    c.ok({"op": "ping"})
    # a shutdown longer than --kill-after kills a holder that never acks
    model = write(os.path.join(work, "k.bin"), b"\x04" * 4096)
    c.ok({"op": "load", "name": "k", "path": model, "wait": True})
    h = start_holder(b, "k")
    t0 = time.monotonic()
    r = c.ok({"op": "shutdown", "timeout": 3})
    el = time.monotonic() - t0
    members(r, SHUTDOWN, "shutdown after a kill")
    check(0.45 < el < 2.5, "kill-after 0.5 in a shutdown at %.2f s" % el)
    check(h.wait(5) == -signal.SIGKILL, "holder not killed")
    check(b.wait_exit(5) == 0, "exit status after a shutdown that killed")


def main():
    if sys.argv[1] in ("--hold", "--hold-fork"):
        hold(sys.argv[2], sys.argv[3], sys.argv[1] == "--hold-fork")
        return 0
    build, work = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:
        PREFIX[0] = sys.argv[3]
    check_max_message_bounds(build, work)
    os.mkdir(os.path.join(work, "models"))
    parts = [
        (part_framing, []),
        (part_models, []),
        (part_bundle, []),
        (part_pages, []),
        (part_loading, ["--load-rate", "4M"]),
        (part_unload, ["--kill-after", "1", "--shutdown-timeout", "5"]),
        (part_max_message, ["--max-message", "163840", "--signal", "USR2",
                            "--kill-after", "0.5"]),
        (part_options, ["--max-message", "1024", "--max-connections", "3",
                        "--idle-timeout", "1", "--max-shm-bytes", "65536",
                        "--model-dir", os.path.join(work, "models")]),
    ]
    only = os.environ.get("PART")
    for func, args in parts:
        if only and only not in func.__name__:
            continue
        t0 = time.monotonic()
        b = Broker(build, work, *args)
        try:
            if func is part_framing:
                func(b)
            else:
                func(b, work)
        except Exception as exc:  # noqa: BLE001 - reported as a mismatch
            import traceback
            traceback.print_exc()
            check(False, "%s raised %r" % (func.__name__, exc))
        finally:
            for h in HOLDERS:
                if h.poll() is None:
                    h.kill()
                    h.wait()
            b.stop()
        print("%s: %.2f s" % (func.__name__, time.monotonic() - t0),
              flush=True)
    print("%d mismatch(es)" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
