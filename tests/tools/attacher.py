#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""attacher.py - attaches a model from COUNT processes at the same moment,
with the Python client (bindings/python), for the integration tests of
loading on first attach, eviction and keep-alive.

Usage: attacher.py SOCKET MODEL [--count N] [--wait S] [--hold]

Each of the N processes (1 by default) connects, and once all have, they
are released together to attach MODEL (with --wait, attach_wait for up to
S seconds: retried while it is unknown or not ready).  Each prints one
line, "attached NAME generation G pid P" or "error CODE: MESSAGE", then
lets go at once (closing its connection), or with --hold keeps the
attachment until this program is killed (the processes it forked die
with it).  Exit status: 0 when every process attached, 1 otherwise, 2
usage.
"""

import ctypes
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "bindings", "python"))
import mbroker  # noqa: E402

PR_SET_PDEATHSIG = 1


def say(line):
    """One line in one write: the processes share stdout."""
    os.write(1, (line + "\n").encode())


def attach_one(sock, model, wait, ready_w, go_r):
    """One process: connect, say so, wait for the go, attach, report.
    Returns the client and attachment (None when it failed)."""
    client = mbroker.connect(sock, timeout=10)
    os.write(ready_w, b".")
    os.close(ready_w)
    os.read(go_r, 1)  # end of file: everyone is connected
    try:
        if wait is None:
            att = client.attach(model)
        else:
            att = client.attach_wait(model, wait)
    except mbroker.BrokerError as e:
        say("error %s: %s" % (e.code, e))
        return client, None
    say("attached %s generation %d pid %d" % (att.name, att.generation,
                                               os.getpid()))
    return client, att


def child(sock, model, wait, hold, ready_w, go_r):
    """A forked process's whole life; never returns."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG,
                                           signal.SIGKILL)
    status = 1
    try:
        client, att = attach_one(sock, model, wait, ready_w, go_r)
        status = 0 if att is not None else 1
        while hold:
            signal.pause()
        client.close()
    except Exception as e:  # a lost broker, a timeout: say it, fail
        say("error %s: %s" % (type(e).__name__, e))
    os._exit(status)


def main(argv):
    args = argv[1:]
    count, wait, hold = 1, None, False
    if len(args) < 2:
        sys.exit(__doc__)
    sock, model, rest = args[0], args[1], args[2:]
    while rest:
        opt = rest.pop(0)
        if opt == "--count" and rest:
            count = int(rest.pop(0))
        elif opt == "--wait" and rest:
            wait = float(rest.pop(0))
        elif opt == "--hold":
            hold = True
        else:
            print("attacher.py: unexpected argument %r" % opt,
                  file=sys.stderr)
            return 2
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pids = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            os.close(go_w)
            os.close(ready_r)
            child(sock, model, wait, hold, ready_w, go_r)
        pids.append(pid)
    os.close(go_r)
    os.close(ready_w)
    got = 0
    while got < count:
        data = os.read(ready_r, count - got)
        if not data:
            break
        got += len(data)
    os.close(go_w)
    status = 0
    for pid in pids:
        _, st = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(st) != 0:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
