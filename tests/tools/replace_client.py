#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""replace_client.py - the worker's and the operator's side of a replace,
for the integration tests (tests/integration/test_replace_*.sh), through
the Python client of bindings/python as it is (no replace helper: the
`replaced` event is read as the broker sends it).

  request SOCKET JSON
      Sends one request (a JSON object without "id") and prints the reply,
      an error included, as one JSON line; exit 0 if ok, 1 if refused.
  hold SOCKET MODEL LOG FILE...
      A worker that attaches MODEL when told and keeps what it holds.  It
      reads commands, one a line, on stdin: "attach", "verify" (reads every
      held mapping again), "detach-all", "ack", "quit".  It writes to LOG,
      a line each: "attached G NAME" (NAME: the basename of the FILE whose
      bytes the mapping holds, "none" if none), "attach-error CODE",
      "verified G NAME", "detached G", "acked", "event JSON" (every event,
      as the broker sent it), "signal N" (the unload signal: it is ignored
      otherwise, the events say what to do).
  churn SOCKET MODEL STOPFILE FILE...
      Attaches and detaches MODEL as fast as it can until STOPFILE exists;
      every attach must succeed and its mapping must hold exactly the bytes
      of one FILE, the same FILE for every attach of a generation, and
      generations never go back.  Prints "G NAME COUNT" per generation;
      exit 1 (saying why) at the first attach that does not.
"""

import hashlib
import json
import os
import select
import signal
import sys

import mbroker


class RecordingClient(mbroker.Client):
    """A client that keeps every event as the broker sent it (the client
    on main parses no old_generation)."""

    def __init__(self, path, on_event):
        self._on_event = on_event
        super().__init__(path)

    def _take_event(self, msg):
        if "event" in msg:
            self._on_event(msg)
        return super()._take_event(msg)


def digests(files):
    """The sha256 of each file's bytes, mapped to its basename."""
    out = {}
    for path in files:
        with open(path, "rb") as f:
            out[hashlib.sha256(f.read()).digest()] = os.path.basename(path)
    return out


def which(att, known):
    return known.get(hashlib.sha256(att.data).digest(), "none")


def request(path, text):
    with mbroker.Client(path, role="admin") as client:
        fields = json.loads(text)
        op = fields.pop("op")
        try:
            reply = client.request(op, **fields)
        except mbroker.BrokerError as e:
            print(json.dumps(e.reply, separators=(",", ":")), flush=True)
            return 1
        print(json.dumps(reply, separators=(",", ":")), flush=True)
        return 0


def hold(path, model, log_path, files):
    known = digests(files)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def say(line):
        os.write(log, (line + "\n").encode())

    client = RecordingClient(path, lambda m: say("event " + json.dumps(m, separators=(",", ":"))))
    signum = client.hello.get("signal", signal.SIGUSR1)
    signal.signal(signum, lambda s, f: say(f"signal {s}"))
    held = []
    say("ready")
    poller = select.poll()
    poller.register(sys.stdin.fileno(), select.POLLIN)
    poller.register(client.fileno(), select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == client.fileno():
                for _ in client.events():
                    pass  # recorded as they were read
                if client.lost:
                    say("lost")
                    poller.unregister(client.fileno())
                continue
            command = sys.stdin.readline().strip()
            if command in ("", "quit"):
                client.close()
                return 0
            if command == "attach":
                try:
                    att = client.attach(model)
                except mbroker.BrokerError as e:
                    say(f"attach-error {e.code}")
                    continue
                held.append(att)
                say(f"attached {att.generation} {which(att, known)}")
            elif command == "verify":
                for att in held:
                    say(f"verified {att.generation} {which(att, known)}")
            elif command == "detach-all":
                for att in held:
                    att.detach()
                    say(f"detached {att.generation}")
                held.clear()
            elif command == "ack":
                client.ack()
                held.clear()
                say("acked")


def churn(path, model, stop, files):
    known = digests(files)
    seen = {}
    last = 0
    with mbroker.Client(path) as client:
        while not os.path.exists(stop):
            try:
                att = client.attach(model)
            except mbroker.BrokerError as e:
                print(f"attach refused: {e.code}: {e.message}")
                return 1
            name = which(att, known)
            gen = att.generation
            att.detach()
            if name == "none":
                print(f"generation {gen}: bytes of no file (a mix?)")
                return 1
            if gen < last:
                print(f"generation {gen} after {last}")
                return 1
            last = gen
            if gen in seen and seen[gen][0] != name:
                print(f"generation {gen} held {seen[gen][0]}, now {name}")
                return 1
            seen[gen] = (name, seen.get(gen, (name, 0))[1] + 1)
            for _ in client.events():
                pass
    for gen in sorted(seen):
        print(f"{gen} {seen[gen][0]} {seen[gen][1]}")
    return 0


def main(argv):
    if len(argv) >= 3 and argv[0] == "request":
        return request(argv[1], argv[2])
    if len(argv) >= 4 and argv[0] == "hold":
        return hold(argv[1], argv[2], argv[3], argv[4:])
    if len(argv) >= 4 and argv[0] == "churn":
        return churn(argv[1], argv[2], argv[3], argv[4:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
