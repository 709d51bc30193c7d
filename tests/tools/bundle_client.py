#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""bundle_client.py - attaches a bundle (a model made of many files) over
the raw control protocol, standard library only, and checks what a worker
receives against the files it was loaded from, for test_bundle.sh.

Usage: bundle_client.py SOCKET MODEL DIR LIBMBROKER [--reopen] [--hold]

It attaches MODEL, takes the descriptors of the attach reply and asks for
the rest with the members op, page after page (socket.recvmsg with
SCM_RIGHTS); checks each page carries at most 8 and the descriptors
arrive in member order; maps each member read-only and compares its bytes
with DIR/NAME, its size and its checksum (XXH3-64, mb_checksum of
LIBMBROKER); recomputes the bundle's checksum (name, NUL, size and
checksum as 8 bytes little-endian each, member after member) and compares
it with the reply's; checks that a descriptor cannot be mapped writable
and that the members op refuses a bad "from", an unknown attachment, and
(once more) nothing else.  With --reopen it also opens /proc/self/fd/N of
each descriptor read-only (which must work) and read-write (which must
fail with EACCES).  With --hold it prints "held" and keeps the attachment
and a mapping of every member (touched, so its pages count in its Pss)
until it is killed.  Prints one "MISMATCH: ..." line per failed check and
"ok MEMBERS CHECKSUM" at the end; exit 0 when all held, 1 otherwise.
"""

import array
import ctypes
import errno
import json
import mmap
import os
import signal
import socket
import struct
import sys

FDS_PER_MESSAGE = 8
FAILED = []


def check(cond, what):
    if not cond:
        FAILED.append(what)
        print("MISMATCH: " + what, flush=True)
    return cond


class Conn:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.next_id = 1
        self.ok({"op": "hello", "version": 1})

    def call(self, req):
        """The reply to REQ (events skipped) and the descriptors it
        carried."""
        req = dict(req, id=self.next_id)
        self.next_id += 1
        self.sock.send(json.dumps(req).encode())
        while True:
            data, anc, flags, _ = self.sock.recvmsg(
                163841, socket.CMSG_SPACE(4 * (FDS_PER_MESSAGE + 8)))
            check(not flags & socket.MSG_CTRUNC, "descriptors cut off")
            fds = []
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(array.array(
                        "i", payload[:len(payload) - len(payload) % 4]))
            msg = json.loads(data.decode())
            if "event" in msg:
                continue
            check(msg.get("id") == req["id"], "reply id %r" % msg.get("id"))
            return msg, fds

    def ok(self, req):
        msg, fds = self.call(req)
        if not check(msg.get("ok") is True, "%s: %r" % (req["op"], msg)):
            sys.exit(1)
        return msg, fds

    def err(self, req, code):
        msg, fds = self.call(req)
        check(msg.get("ok") is False and
              msg.get("error", {}).get("code") == code,
              "%s %r: expected %s, got %r" % (req["op"], req, code, msg))
        check(not fds, "descriptors on an error reply")
        for fd in fds:
            os.close(fd)


def bundle_checksum(members):
    data = b""
    for m in members:
        data += m["name"].encode() + b"\0"
        data += struct.pack("<QQ", m["size"], int(m["checksum"], 16))
    return data


def check_member(m, fd, root, checksum, reopen):
    name = m["name"]
    st = os.fstat(fd)
    check(st.st_size == m["size"], "%s: segment size %d, listed %d"
          % (name, st.st_size, m["size"]))
    check(st.st_mode & 0o222 == 0, "%s: segment mode %o has a write bit"
          % (name, st.st_mode & 0o777))
    with open(os.path.join(root, name), "rb") as f:
        want = f.read()
    check(len(want) == m["size"], "%s: file has %d bytes, listed %d"
          % (name, len(want), m["size"]))
    check(m["format"] == ("safetensors" if name.endswith(".safetensors")
                          else "raw"), "%s: format %s" % (name, m["format"]))
    got = b""
    if m["size"] > 0:
        with mmap.mmap(fd, m["size"], mmap.MAP_SHARED, mmap.PROT_READ) as mp:
            got = mp[:]
        try:
            mmap.mmap(fd, m["size"], mmap.MAP_SHARED,
                      mmap.PROT_READ | mmap.PROT_WRITE).close()
            check(False, "%s: mapped writable" % name)
        except PermissionError:
            pass
    check(got == want, "%s: bytes through the mapping differ" % name)
    check("%016x" % checksum(want) == m["checksum"],
          "%s: checksum %s, file's %016x" % (name, m["checksum"],
                                             checksum(want)))
    if reopen:
        path = "/proc/self/fd/%d" % fd
        try:
            os.close(os.open(path, os.O_RDONLY))
        except OSError as e:
            check(False, "%s: read-only open of %s: %s" % (name, path, e))
        try:
            os.close(os.open(path, os.O_RDWR))
            check(False, "%s: read-write open of %s worked" % (name, path))
        except OSError as e:
            check(e.errno == errno.EACCES, "%s: read-write open of %s: %s"
                  % (name, path, e))


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    if len(args) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    sock, model, root, lib = args
    xxh = ctypes.CDLL(lib)
    xxh.mb_checksum.restype = ctypes.c_uint64
    xxh.mb_checksum.argtypes = [ctypes.c_char_p, ctypes.c_size_t]

    def checksum(data):
        return xxh.mb_checksum(data, len(data))

    c = Conn(sock)
    r, fds = c.ok({"op": "attach", "name": model})
    att = r["attachment"]
    members = r.get("members")
    if not check(isinstance(members, list) and members,
                 "attach reply without members: %r" % r):
        return 1
    n = len(members)
    check(r["format"] == "bundle", "format %r" % r["format"])
    check(r["size"] == sum(m["size"] for m in members), "size %d" % r["size"])
    check(r["descriptors"] == {"from": 0, "count": min(n, FDS_PER_MESSAGE)},
          "descriptors %r" % r["descriptors"])
    check(len(fds) == r["descriptors"]["count"], "attach reply carried %d "
          "descriptors, says %d" % (len(fds), r["descriptors"]["count"]))
    names = [m["name"] for m in members]
    check(names == sorted(names, key=lambda s: s.encode()),
          "members not in name order: %r" % names)
    while len(fds) < n:
        page, more = c.ok({"op": "members", "attachment": att,
                           "from": len(fds)})
        want = min(FDS_PER_MESSAGE, n - len(fds))
        check(page == dict(page, attachment=att, **{"from": len(fds)}) and
              page.get("count") == want, "members page %r" % page)
        check(len(more) == want, "a page of %d descriptors, not %d"
              % (len(more), want))
        if not more:
            break
        fds.extend(more)
    for m, fd in zip(members, fds):
        check_member(m, fd, root, checksum, "--reopen" in argv)
    total = checksum(bundle_checksum(members))
    check("%016x" % total == r["checksum"], "bundle checksum %s, computed "
          "%016x" % (r["checksum"], total))
    c.err({"op": "members", "attachment": att, "from": n}, "bad_request")
    c.err({"op": "members", "attachment": att, "from": -1}, "bad_request")
    c.err({"op": "members", "attachment": att, "from": "0"}, "bad_request")
    c.err({"op": "members", "attachment": att + 1000, "from": 0},
          "not_attached")
    c.err({"op": "members", "from": 0}, "bad_request")
    if "--hold" in argv:
        maps = [mmap.mmap(fd, m["size"], mmap.MAP_SHARED, mmap.PROT_READ)
                for m, fd in zip(members, fds) if m["size"] > 0]
        touched = sum(mp[i] for mp in maps for i in range(0, len(mp), 4096))
        print("held %d" % touched, flush=True)
        signal.pause()
    c.ok({"op": "detach", "attachment": att})
    for fd in fds:
        os.close(fd)
    if FAILED:
        return 1
    print("ok %d %s" % (n, r["checksum"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
