# SPDX-License-Identifier: MIT
# Clients that ask for large replies and never read them cannot grow the
# broker without bound: 48 models under 3.8 KB paths make each `list`
# reply a 160 KiB page; 8 clients each send 200 `list` requests (under the
# 256-message bound) and read nothing.  Each is dropped once about 512 KiB
# of replies wait for it, the broker's peak RSS grows by less than 64 MiB
# (it grew by 250 MiB before, and 1024 such clients would have taken
# 40 GiB), and a fresh client is served.
. "$(dirname "$0")/lib.sh"

dir=$T
while [ ${#dir} -lt 3600 ]; do
	dir="$dir/$(printf 'd%.0s' $(seq 250))"
done
mkdir -p "$dir"
head -c 4096 /dev/urandom >"$dir/m.bin"
# Under ASan, freed blocks would wait in its quarantine.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0"
start_broker
for i in $(seq 48); do
	mbctl load "m$i" "$dir/m.bin" --wait >/dev/null
done

/usr/bin/python3 - "$BROKER_PID" "$SOCK" <<'PY' || fail "see above"
import socket, sys, time

pid, path = sys.argv[1], sys.argv[2]

def fail(msg):
    sys.exit("FAIL [test_reply_flood]: " + msg)

def hwm_kb():
    for line in open("/proc/%s/status" % pid):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

def client():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(path)
    s.send(b'{"id":0,"op":"hello","version":1}')
    s.recv(200000)
    return s

before = hwm_kb()
flooders = [client() for _ in range(8)]
for s in flooders:
    s.settimeout(5)
    for _ in range(200):
        try:
            s.send(b'{"id":1,"op":"list"}')
        except OSError:
            break
# Read what was sent until each is closed (or, before, until a deadline).
deadline = time.monotonic() + 10
for s in flooders:
    s.settimeout(max(deadline - time.monotonic(), 0.1))
    try:
        while s.recv(200000):
            pass
    except OSError:
        pass
grown = (hwm_kb() - before) // 1024
if grown >= 64:
    fail("peak RSS grew by %d MiB" % grown)
s = client()
s.send(b'{"id":2,"op":"ping"}')
if s.recv(200000) != b'{"id":2,"ok":true}':
    fail("a fresh client was not served")
print("peak RSS grew by %d MiB" % grown)
PY
wait_until 10 grep -q "KiB of replies unread; dropping the client" "$BROKER_LOG" ||
	fail "no drop logged"
shutdown_clean
