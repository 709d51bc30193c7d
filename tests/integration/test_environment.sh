# SPDX-License-Identifier: MIT
# A hostile environment: the broker runs out of descriptors while clients
# keep connecting (it backs off instead of spinning, and serves again once
# they go), and a storm of signals hits it during the shutdown wait (the
# deadline is monotonic and EINTR neither extends nor shortens it).
. "$(dirname "$0")/lib.sh"

make_model "$T/m.safetensors" 2000000
cpu_ticks() {
	awk '{print $14 + $15}' "/proc/$BROKER_PID/stat"
}
pause_logged() {
	[ "$(grep -c "accept: still short (pause" "$BROKER_LOG")" -ge "$1" ]
}

start_broker --log-level debug --shutdown-timeout 1
prlimit --pid "$BROKER_PID" --nofile=32:32
"$BIN/mbfault" hold "$SOCK" 64 >"$T/hold.log" 2>&1 &
holder=$!
CHILDREN+=("$holder")
wait_until 10 grep -q "pausing accepts" "$BROKER_LOG" ||
	fail "no back-off when out of descriptors"
t0=$(now_ms)
ticks0=$(cpu_ticks)
wait_until 10 pause_logged 5 || fail "the back-off stopped retrying"
ticks=$(($(cpu_ticks) - ticks0))
wall=$(elapsed_since "$t0")
hz=$(getconf CLK_TCK)
# A spinning accept loop would burn the whole interval; allow 30% of it.
[ $((ticks * 1000 / hz)) -le $((wall * 3 / 10 + 20)) ] ||
	fail "broker used $ticks ticks in $wall ms while short of descriptors"
kill "$holder"
wait "$holder" 2>/dev/null || true
wait_until 10 grep -q "accepting again after" "$BROKER_LOG" ||
	fail "accepts did not resume"
mbctl ping >/dev/null || fail "broker does not serve after the shortage"

load m "$T/m.safetensors"
start_worker m --no-ack
wait_attached 1
t0=$(now_ms)
kill -TERM "$BROKER_PID"
wait_until 10 grep -q "shutdown on SIGTERM" "$BROKER_LOG" || fail "no shutdown"
for i in $(seq 1 300); do
	kill -HUP "$BROKER_PID" 2>/dev/null || break
	kill -USR1 "$BROKER_PID" 2>/dev/null || break
	kill -WINCH "$BROKER_PID" 2>/dev/null || break
done
wait_broker_exit 10
assert_between "$(elapsed_since "$t0")" 950 2500 "shutdown under a signal storm"
[ "$BROKER_STATUS" -eq 1 ] || fail "broker exited $BROKER_STATUS, not 1"
assert_no_shm
