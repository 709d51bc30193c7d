# SPDX-License-Identifier: MIT
# A worker that dies at each stage of its life: before hello, between its
# attach request and the reply, while attached (test_worker_kill), while the
# broker waits for acks, and right after acking.  Each time the broker
# releases what it held at once, keeps serving, and a later shutdown
# neither waits for the dead nor fails because of them.
. "$(dirname "$0")/lib.sh"

make_model "$T/m.safetensors" 4000000
start_broker --shutdown-timeout 10
load m "$T/m.safetensors"
connections_are() {
	[ "$(mbctl --json stats | json_int connections)" = "$1" ]
}

"$BIN/mbfault" connect-exit "$SOCK"
wait_until 10 connections_are 1 || fail "a client dead before hello lingers"

"$BIN/mbfault" attach-exit "$SOCK" m
wait_until 10 connections_are 1 || fail "a client dead mid-attach lingers"
wait_attached 0
[ "$(mbctl --json list | json_int attached)" = 0 ] ||
	fail "the dead client's attachment was kept"
mbctl ping >/dev/null || fail "broker stopped serving"

# Dying while the broker waits for acks ends that wait at once.
start_worker m --no-ack
deaf=$WORKER_PID
start_worker m --ack-delay 100
wait_attached 2
t0=$(now_ms)
mbctl shutdown >"$T/shutdown.out" 2>&1 &
shutdown_cli=$!
CHILDREN+=("$shutdown_cli")
wait_until 10 grep -q "shutdown requested" "$BROKER_LOG" ||
	fail "shutdown did not start"
kill -9 "$deaf"
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS"
assert_between "$(elapsed_since "$t0")" 0 3000 "shutdown after a death"
wait "$shutdown_cli" || fail "mbctl shutdown failed: $(cat "$T/shutdown.out")"
# The acking worker acked, then exited: its EOF after the ack is harmless.
worker_exited_with "$WORKER_PID" 0
grep -q "acknowledged" "$WORKER_LOG" || fail "the slow worker did not ack"
assert_no_shm
