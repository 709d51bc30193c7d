# SPDX-License-Identifier: MIT
# /dev/shm too small for a model: the --max-shm-bytes budget (and the real
# free space, checked the same way) refuses the load before any byte is
# copied, the error says how many bytes were needed and how many are free,
# no partial segment remains, and the broker keeps serving; once another
# model is unloaded, the same load fits.  The model loaded first is held
# by a worker, so the load cannot evict it (test_evict covers eviction).
. "$(dirname "$0")/lib.sh"

make_model --raw "$T/a.bin" 6000000
make_model --raw "$T/b.bin" 5000000
start_broker --max-shm-bytes 10M
load a "$T/a.bin"
start_worker a
holder=$WORKER_PID
wait_attached 1
err=$(mbctl load b "$T/b.bin" --wait 2>&1) && fail "over-budget load worked"
case "$err" in
*"model needs 5000000 bytes, the --max-shm-bytes budget of 10485760 has 4485760 free"*"held by pids [$holder]"*) ;;
*) fail "message: $err" ;;
esac
# Refused before it began: nothing of b is left.
[ -z "$(model_state b)" ] || fail "b is $(model_state b)"
[ "$(instance_shm | grep -c '\.model\.')" -eq 1 ] ||
	fail "a partial segment remains: $(instance_shm)"
[ "$(mbctl --json stats | json_int bytes_reserved)" = 6000000 ] ||
	fail "budget accounting is off: $(mbctl --json stats)"
mbctl ping >/dev/null || fail "broker stopped serving"

mbctl unload a >/dev/null || fail "unload of a failed"
worker_exited_with "$holder" 0
[ "$(mbctl --json stats | json_int bytes_reserved)" = 0 ] ||
	fail "unload did not give its bytes back"
load b "$T/b.bin"
state_is b READY || fail "b did not fit after a was unloaded"
shutdown_clean
