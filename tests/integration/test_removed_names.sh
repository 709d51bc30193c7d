# SPDX-License-Identifier: MIT
# Someone runs rm on the instance's names in /dev/shm (an admin, or
# systemd-logind's RemoveIPC) while a worker is attached.  The broker holds
# the lock and the segment's descriptor, so: a second broker is still
# refused, attaches keep working with valid bytes (the worker gets the
# descriptor, never the name), a worker that finds no semaphore still acks,
# the model can be unloaded and loaded again, and the shutdown tolerates
# the missing names and leaves nothing.
. "$(dirname "$0")/lib.sh"

make_model "$T/m.safetensors" 4000000
start_broker
load m "$T/m.safetensors"
start_worker m
first=$WORKER_PID
wait_attached 1
rm -f /dev/shm/mbroker."$INSTANCE".* /dev/shm/sem.mbroker."$INSTANCE".*
[ -z "$(instance_shm)" ] || fail "rm left $(instance_shm)"

status=0
"$BIN/mbrokerd" --socket "$T/other.sock" --instance "$INSTANCE" \
	2>"$T/second.log" || status=$?
[ $status -eq 2 ] || fail "a second broker started after the rm ($status)"
grep -q "already running (pid $BROKER_PID)" "$T/second.log" ||
	fail "second broker: $(cat "$T/second.log")"

start_worker m
second=$WORKER_PID
wait_attached 2
wait_until 10 grep -q "checksum ok" "$WORKER_LOG" ||
	fail "attach after the rm: $(cat "$WORKER_LOG")"

out=$(mbctl unload m) || fail "unload after the rm failed: $out"
worker_exited_with "$first" 0
worker_exited_with "$second" 0
grep -q acknowledged "$WORKER_LOG" || fail "no ack without a semaphore"
load m "$T/m.safetensors"
state_is m READY || fail "reload after the rm failed"
shutdown_clean
grep -q "cannot unlink" "$BROKER_LOG" && fail "a missing name was an error"
true
