# SPDX-License-Identifier: MIT
# Descriptors.  At start the broker raises RLIMIT_NOFILE to its hard limit
# and checks that every connection fits with the reserve kept for models:
# a --max-connections that does not fit is refused (exit 2, saying what to
# change), the default is lowered, and the log says what was chosen (the
# reserve is 2752: 64 of its own, one per segment for BROKER_MAX_SEGMENTS
# = 2048, two per model for a load, 128 for a bundle's walk).  Then a
# non-root broker (as root, run as another uid) with 4096 descriptors
# serves a client that reads its replies (240 attaches, 12 at a time),
# then faces 8 clients that each send 250 attaches and never read a reply:
# each is dropped at 16 unread descriptors with the reason logged, while
# a worker still attaches and the broker serves on.  Before the bound, the
# descriptors in flight to those clients (charged to the broker's uid)
# made every later attach fail with ETOOMANYREFS.
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
mkdir -p -m 0700 "$T/run"
SOCK="$T/run/broker.sock"

# expect_refused LIMIT MESSAGE ARGS...: the broker exits 2 saying MESSAGE.
expect_refused() {
	local limit=$1 message=$2 status=0
	shift 2
	timeout 10 prlimit --nofile="$limit" "$BIN/mbrokerd" --socket "$SOCK" \
		--instance "$INSTANCE" "$@" 2>"$T/refused.log" || status=$?
	[ $status -eq 2 ] || fail "a start with $limit descriptors exited $status"
	grep -q -- "$message" "$T/refused.log" ||
		fail "no '$message': $(cat "$T/refused.log")"
}
expect_refused 1000:1000 "RLIMIT_NOFILE is 1000 (hard limit 1000) but 1024 connection(s) need 21184 descriptors (18 each and 2752 kept for models): raise the limit (ulimit -n, LimitNOFILE=) or lower --max-connections" \
	--max-connections 1024
expect_refused 300:300 "RLIMIT_NOFILE is 300 (hard limit 300) but 1 connection(s) need 2770"
[ ! -e "$SOCK" ] || fail "a refused start left its socket"

# The soft limit is raised to the hard one, the default lowered to fit
# (not under valgrind, which keeps a program's limit where it started).
BASE_WRAPPER=("${BROKER_WRAPPER[@]}")
if [ "${MB_VALGRIND:-}" != 1 ]; then
	BROKER_LOG="$T/lowered.log"
	BROKER_WRAPPER=(prlimit --nofile=256:4096 "${BASE_WRAPPER[@]}")
	start_broker
	assert_log "max-connections lowered from 1024 to 74 to fit RLIMIT_NOFILE 4096"
	assert_log "descriptors: RLIMIT_NOFILE 4096 (was 256, hard limit 4096), 74 connection(s) of 18 each, 2752 kept for models"
	grep -q "^Max open files *4096 *4096" "/proc/$BROKER_PID/limits" ||
		fail "limit not raised: $(grep "open files" "/proc/$BROKER_PID/limits")"
	shutdown_clean
fi

# Clients that never read their attach replies.
BROKER_LOG="$T/broker.log"
BROKER_WRAPPER=(prlimit --nofile=4096:4096 "${BASE_WRAPPER[@]}")
if [ "$(id -u)" -eq 0 ]; then
	chown 5001:5001 "$T/run"
	BROKER_WRAPPER=(prlimit --nofile=4096:4096 setpriv --reuid 5001
		--regid 5001 --clear-groups "${BASE_WRAPPER[@]}")
	# valgrind writes its reports beside the logs.
	chown 5001 "$T"
	# mbctl and mbworker trust a broker of another uid only when told.
	export MBROKER_BROKER_UID=5001
fi
make_model "$T/m.bin" 100000
chmod 0644 "$T/m.bin"
start_broker
load m "$T/m.bin"
cat >"$T/hostile.py" <<'PY'
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
s.send(b'{"id":1,"op":"hello","version":1}')
s.recv(65536)
sent = 0
try:
    for i in range(250):
        s.send(json.dumps({"id": i + 2, "op": "attach", "name": "m"}).encode())
        sent += 1
except OSError:
    pass
print("sent", sent, flush=True)
time.sleep(3600)  # holds the socket, reads nothing
PY
# A client that reads its replies is never dropped, even when it sends 12
# attaches at a time before reading.
cat >"$T/reader.py" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
s.send(b'{"id":1,"op":"hello","version":1}')
s.recv(65536)
ok = 0
for round in range(20):
    for i in range(12):
        s.send(json.dumps({"id": i + 2, "op": "attach", "name": "m"}).encode())
    for i in range(12):
        reply = json.loads(s.recv(65536))
        ok += reply["ok"]
    s.send(b'{"id":99,"op":"ack"}')
    s.recv(65536)
print("ok", ok)
PY
"$PY" "$T/reader.py" "$SOCK" >"$T/reader.out" 2>&1 ||
	fail "a reading client: $(cat "$T/reader.out")"
grep -qx "ok 240" "$T/reader.out" || fail "reading client: $(cat "$T/reader.out")"
for i in 1 2 3 4 5 6 7 8; do
	"$PY" "$T/hostile.py" "$SOCK" >"$T/hostile$i.out" 2>&1 &
	CHILDREN+=("$!")
done
all_sent() {
	[ "$(cat "$T"/hostile*.out | grep -c "^sent")" -eq 8 ]
}
wait_until 30 all_sent || fail "the clients did not finish: $(cat "$T"/hostile*.out)"
"$BIN/mbworker" --socket "$SOCK" --model m --passes 1 >"$T/worker.log" 2>&1 ||
	fail "a worker cannot attach: $(cat "$T/worker.log")"
grep -q "attached m" "$T/worker.log" || fail "worker: $(cat "$T/worker.log")"
mbctl ping >/dev/null || fail "the broker does not answer"
dropped() {
	[ "$(grep -c "16 descriptors unread, queued or in flight; dropping the client" "$BROKER_LOG")" -eq 8 ]
}
wait_until 20 dropped ||
	fail "$(grep -c "dropping the client" "$BROKER_LOG") of 8 clients dropped"
shutdown_clean
