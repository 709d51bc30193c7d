# SPDX-License-Identifier: MIT
# A client that never reads its replies is dropped once 1 MiB of them is
# queued, not only at 256 of them: with models of long paths each `list`
# reply is some 12 KB, and 200 of them unread (fewer than 256) made the
# broker hold 2.4 MB for one connection, over 2 GB for --max-connections
# of them.  A client that reads is served as before.
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
# A directory path of some 3,800 bytes, 19 components of 200.
dir=$T
for i in $(seq 19); do dir=$dir/$(printf 'd%.0s' $(seq 200)); done
mkdir -p "$dir"
start_broker
for i in 1 2 3; do
	make_model "$dir/m$i.safetensors" 4096
	load "m$i" "$dir/m$i.safetensors"
done
size=$(mbctl --json list | wc -c)
[ "$size" -gt 10000 ] || fail "a list reply is only $size bytes"

cat >"$T/unread.py" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
s.send(b'{"id":1,"op":"hello","version":1}')
s.recv(65536)
s.setblocking(False)
sent = 0
try:
    for i in range(200):
        s.send(b'{"id":%d,"op":"list"}' % (i + 2))
        sent += 1
except OSError as e:
    print("send stopped:", e)
print("sent", sent)
sys.stdout.flush()
time.sleep(float(sys.argv[2]))
PY
"$PY" "$T/unread.py" "$SOCK" 30 >"$T/unread.out" 2>&1 &
reader=$!
CHILDREN+=("$reader")
dropped() { grep -q "bytes of replies unread; dropping the client" "$BROKER_LOG"; }
wait_until 25 dropped || fail "not dropped for unread replies: $(cat "$T/unread.out")"
kill "$reader" 2>/dev/null || true
wait "$reader" 2>/dev/null || true

mbctl --json list >/dev/null || fail "a client that reads is not served"
shutdown_clean
