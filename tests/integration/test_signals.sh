# SPDX-License-Identifier: MIT
# A second SIGINT during the shutdown wait ends it at once: the broker
# stops waiting for the deaf worker, still unlinks every name and exits 1,
# far inside its 30 s timeout.
. "$(dirname "$0")/lib.sh"

make_model "$T/m.safetensors" 4000000
start_broker --shutdown-timeout 30
load m "$T/m.safetensors"
start_worker m --no-ack
wait_attached 1

t0=$(now_ms)
kill -INT "$BROKER_PID"
wait_until 10 grep -q "shutdown on SIGINT" "$BROKER_LOG" ||
	fail "first SIGINT did not start the shutdown"
kill -INT "$BROKER_PID"
wait_broker_exit 10
assert_between "$(elapsed_since "$t0")" 0 5000 "forced shutdown"
[ "$BROKER_STATUS" -eq 1 ] || fail "broker exited $BROKER_STATUS, not 1"
assert_log "second interrupt"
assert_no_shm
