# SPDX-License-Identifier: MIT
# A worker that never acknowledges: SIGTERM ends the shutdown at the
# timeout plus a small margin, the broker exits 1 naming that pid, every
# name is unlinked anyway, and the worker that did ack is not blamed.
. "$(dirname "$0")/lib.sh"

make_model "$T/m.safetensors" 4000000
start_broker --shutdown-timeout 1
load m "$T/m.safetensors"
start_worker m --no-ack
deaf=$WORKER_PID
start_worker m
good=$WORKER_PID
wait_attached 2

t0=$(now_ms)
kill -TERM "$BROKER_PID"
wait_broker_exit 10
elapsed=$(elapsed_since "$t0")
[ "$BROKER_STATUS" -eq 1 ] || fail "broker exited $BROKER_STATUS, not 1"
assert_between "$elapsed" 950 2500 "shutdown with a deaf worker"
assert_log "pids \[$deaf\] did not release"
grep "did not release" "$BROKER_LOG" | grep -q "$good" &&
	fail "the acking worker $good was blamed"
worker_exited_with "$good" 0
assert_no_shm
# The deaf worker still maps the (unlinked) weights; it is not harmed.
kill -0 "$deaf" || fail "the deaf worker died"
