# SPDX-License-Identifier: MIT
# A hung worker (SIGSTOP) and one that ignores the unload signal: without
# --kill-after the shutdown ends at the timeout plus a small margin, exit
# 1 naming both pids, every name unlinked.  With --kill-after the broker
# kills exactly those two through their connections' pidfds (a worker that
# acked is left alone), says so, and the shutdown ends soon after, clean.
. "$(dirname "$0")/lib.sh"

make_model "$T/m.safetensors" 4000000
start_hung_pair() {
	start_worker m --no-ack
	deaf=$WORKER_PID
	start_worker m
	hung=$WORKER_PID
	wait_until 20 attached_is "$1" || fail "workers did not attach"
	kill -STOP "$hung"
}

start_broker --shutdown-timeout 1
load m "$T/m.safetensors"
start_hung_pair 2
t0=$(now_ms)
kill -TERM "$BROKER_PID"
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 1 ] || fail "broker exited $BROKER_STATUS, not 1"
assert_between "$(elapsed_since "$t0")" 950 2500 "shutdown with hung workers"
for pid in "$deaf" "$hung"; do
	grep "did not release" "$BROKER_LOG" | grep -q "$pid" ||
		fail "pid $pid not named"
done
assert_no_shm
kill -9 "$deaf" "$hung"

: >"$BROKER_LOG"
start_broker --shutdown-timeout 10 --kill-after 0.3
load m "$T/m.safetensors"
start_worker m
acker=$WORKER_PID
start_hung_pair 3
t0=$(now_ms)
kill -TERM "$BROKER_PID"
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS, not 0"
assert_between "$(elapsed_since "$t0")" 250 3000 "shutdown with --kill-after"
for pid in "$deaf" "$hung"; do
	assert_log "killed pid $pid, which still held it 0.3 s"
	worker_exited_with "$pid" 137
done
worker_exited_with "$acker" 0
assert_no_shm
