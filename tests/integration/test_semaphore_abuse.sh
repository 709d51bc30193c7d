# SPDX-License-Identifier: MIT
# A worker that posts the ack semaphore without letting go, many times:
# the broker decides who is done from its own per-worker records, so the
# wait for the worker that still holds the model is neither ended early
# nor made to hang; the unload times out naming only that worker.
. "$(dirname "$0")/lib.sh"

make_model "$T/m.safetensors" 4000000
start_broker --shutdown-timeout 10
load m "$T/m.safetensors"
start_worker m --no-ack
holder=$WORKER_PID
wait_attached 1

t0=$(now_ms)
mbctl unload m --timeout 1 >"$T/unload.out" 2>&1 &
unload_cli=$!
CHILDREN+=("$unload_cli")
wait_until 10 grep -q "model m: unloading" "$BROKER_LOG" ||
	fail "unload did not start"
"$BIN/mbfault" post "/mbroker.$INSTANCE.ack" 50 >/dev/null ||
	fail "cannot post the semaphore"
status=0
wait "$unload_cli" || status=$?
elapsed=$(elapsed_since "$t0")
[ $status -eq 1 ] || fail "unload exited $status: $(cat "$T/unload.out")"
assert_between "$elapsed" 950 3000 "unload with a lying semaphore"
grep -q "still attached: pids \[$holder\]" "$T/unload.out" ||
	fail "unload reply: $(cat "$T/unload.out")"
state_is m ERROR || fail "m is $(model_state m)"
kill -9 "$holder"
wait_attached 0
shutdown_clean
