# SPDX-License-Identifier: MIT
# The metrics endpoint cannot starve the broker: a request with endless
# headers is refused at 8 KiB and the broker's peak RSS barely moves;
# 100 idle connections hold at most 16 descriptors, are closed 5 s after
# their accept, and meanwhile `mbctl list` and a load work; a client
# trickling its request is closed too; once they are gone a scrape
# succeeds again.  Everything on 127.0.0.1.
. "$(dirname "$0")/lib.sh"

command -v curl >/dev/null || fail "curl is needed (scripts/install-deps.sh installs it)"
make_model "$T/m.safetensors" 1000000
start_broker --metrics-listen 127.0.0.1:0
wait_until 10 grep -q "metrics on http://127.0.0.1:" "$BROKER_LOG" || fail "no metrics"
URL=$(sed -n 's/.*metrics on \(http:[^ ]*\)$/\1/p' "$BROKER_LOG")
PORT=${URL##*:}
PORT=${PORT%%/*}
curl -sSf --max-time 5 "$URL" >/dev/null || fail "first scrape of $URL failed"

/usr/bin/python3 - "$BROKER_PID" "$PORT" "$BIN/mbctl" "$SOCK" "$T/m.safetensors" <<'PY' ||
import os, socket, subprocess, sys, time

pid, port, mbctl, sock, model = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]

def fail(msg):
    sys.exit("FAIL [test_metrics_limits]: " + msg)

def status_kb(field):
    for line in open("/proc/%s/status" % pid):
        if line.startswith(field + ":"):
            return int(line.split()[1])

def nfds():
    return len(os.listdir("/proc/%s/fd" % pid))

def ctl(*args):
    return subprocess.run([mbctl, "--socket", sock, *args], timeout=30,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

# 1. Endless headers: 64 MiB offered, the broker stops reading at 8 KiB.
hwm = status_kb("VmHWM")
s = socket.create_connection(("127.0.0.1", port), timeout=10)
line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
sent, deadline = 0, time.monotonic() + 60
try:
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    while sent < 64 << 20 and time.monotonic() < deadline:
        s.sendall(line * 64)
        sent += len(line) * 64
except OSError:
    pass
try:
    reply = s.recv(100)
except OSError:
    reply = b""
s.close()
growth = status_kb("VmHWM") - hwm
print("headers: %d bytes sent, peak RSS +%d kB, reply %r" % (sent, growth, reply[:12]))
if growth > 16 << 10:
    fail("peak RSS grew by %d kB for %d bytes of headers" % (growth, sent))
if sent >= 64 << 20 and not reply.startswith(b"HTTP/1.1 431"):
    fail("64 MiB of headers taken without a 431: %r" % reply[:40])

# 2. 100 idle connections: at most 16 accepted, closed after the timeout.
base = nfds()
idle = []
for _ in range(100):
    c = socket.socket()
    c.settimeout(5)
    try:
        c.connect(("127.0.0.1", port))
    except OSError:
        c.close()
        continue
    idle.append(c)
deadline = time.monotonic() + 10
while nfds() < base + 16 and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.5)
held = nfds() - base
print("idle: %d connected, broker holds %d more descriptors" % (len(idle), held))
if held > 16:
    fail("%d idle connections hold %d descriptors" % (len(idle), held))
t0 = time.monotonic()
r = ctl("list")
if r.returncode != 0:
    fail("mbctl list failed meanwhile: %s" % r.stderr)
r = ctl("load", "m", model, "--wait")
if r.returncode != 0:
    fail("load failed meanwhile: %s" % r.stderr)
if time.monotonic() - t0 > 10:
    fail("list and load took %.1f s" % (time.monotonic() - t0))
closed = 0
deadline = time.monotonic() + 20
for c in idle:
    c.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        if c.recv(1) == b"":
            closed += 1
    except OSError:
        pass
    if closed >= 16:
        break
print("idle: %d closed by the broker" % closed)
if closed < 16:
    fail("only %d idle connections closed within 20 s" % closed)
for c in idle:
    c.close()

# 3. A head trickled a byte at a time: closed 5 s after the accept anyway.
s = socket.create_connection(("127.0.0.1", port), timeout=10)
t0 = time.monotonic()
s.sendall(b"GET /metrics HTTP/1.1\r\n")
s.settimeout(0.5)
alive = True
while alive and time.monotonic() - t0 < 20:
    try:
        s.sendall(b"X")
        alive = s.recv(1) != b""
    except socket.timeout:
        pass
    except OSError:
        alive = False
took = time.monotonic() - t0
s.close()
print("trickle: closed after %.1f s" % took)
if alive or took > 15:
    fail("a trickling client was still served after %.1f s" % took)
PY
	fail "metrics limits"
wait_until 30 curl -sf --max-time 5 "$URL" || fail "no scrape after the idle connections left"
state_is m READY || fail "m is $(model_state m)"
mbctl unload m >/dev/null
shutdown_clean
