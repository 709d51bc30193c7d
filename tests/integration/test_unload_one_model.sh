# SPDX-License-Identifier: MIT
# Unloading one model while others stay: its workers are told and ack, the
# reply reports what was freed, the other model's worker is untouched.  A
# worker that does not ack turns the unload into ERROR naming its pid,
# with the segment unlinked anyway; once it is gone, a second unload ends
# the ERROR.  Unknown and repeated unloads get clear replies.
. "$(dirname "$0")/lib.sh"

make_model "$T/a.safetensors" 4000000
make_model --raw "$T/b.bin" 2000000
start_broker --shutdown-timeout 10
load a "$T/a.safetensors"
load b "$T/b.bin"
start_worker a
wa1=$WORKER_PID
start_worker a
wa2=$WORKER_PID
start_worker b
wb=$WORKER_PID
wait_attached 3

out=$(mbctl unload a) || fail "unload a failed: $out"
case "$out" in "a unloaded in "*"freed; Shmem "*) ;; *) fail "reply: $out" ;; esac
worker_exited_with "$wa1" 0
worker_exited_with "$wa2" 0
wait_attached 1
kill -0 "$wb" || fail "worker of b died"
[ -z "$(model_state a)" ] || fail "a still listed"
state_is b READY || fail "b not READY"
instance_shm | grep -q "\.model\.a\." && fail "a's segment not unlinked"

err=$(mbctl unload a 2>&1) && fail "unload of an unknown model succeeded"
case "$err" in *"no model called a"*) ;; *) fail "message: $err" ;; esac
status=0
"$BIN/mbworker" --socket "$SOCK" --model a >"$T/late.log" 2>&1 || status=$?
[ $status -eq 1 ] || fail "attach of an unloaded model exited $status"
grep -q "no such model" "$T/late.log" || fail "late attach: $(cat "$T/late.log")"

start_worker b --no-ack
deaf=$WORKER_PID
wait_attached 2
t0=$(now_ms)
err=$(mbctl unload b --timeout 0.5 2>&1) && fail "unload with a deaf worker succeeded"
assert_between "$(elapsed_since "$t0")" 450 3000 "unload timeout"
case "$err" in *"timed out"*"$deaf"*) ;; *) fail "message: $err" ;; esac
state_is b ERROR || fail "b is $(model_state b), not ERROR"
instance_shm | grep -q "\.model\.b\." && fail "b's segment not unlinked"
worker_exited_with "$wb" 0
err=$(mbctl load b "$T/b.bin" 2>&1) && fail "reload over a held ERROR worked"
case "$err" in *"ERROR with 1 worker(s) still attached"*) ;; *) fail "$err" ;; esac

kill -9 "$deaf"
wait_attached 0
mbctl unload b >/dev/null || fail "unload of the ERROR model failed"
[ -z "$(model_state b)" ] || fail "b still listed"
load b "$T/b.bin"
state_is b READY || fail "reload of b failed"

shutdown_clean
