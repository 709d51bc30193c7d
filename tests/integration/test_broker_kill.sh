# SPDX-License-Identifier: MIT
# A broker killed with SIGKILL while a worker is attached: the worker's
# mapping stays valid and the library reports the loss on its event fd;
# the next broker of the instance removes what the dead one left (socket,
# segment, registry, semaphore) and then shuts down clean.
. "$(dirname "$0")/lib.sh"

make_model "$T/m.safetensors" 4000000
start_broker
load m "$T/m.safetensors"
start_worker m
worker=$WORKER_PID
wait_attached 1

kill -9 "$BROKER_PID"
wait "$BROKER_PID" 2>/dev/null || true
instance_shm | grep -q "\.model\.m\." || fail "expected the dead broker's segment"
wait_until 10 grep -q "broker lost" "$WORKER_LOG" ||
	fail "worker did not see the broker go"
grep -q "broker lost .*checksum ok" "$WORKER_LOG" ||
	fail "worker's mapping did not stay valid: $(cat "$WORKER_LOG")"
worker_exited_with "$worker" 0

start_broker
assert_log "removed stale socket $SOCK"
assert_log "model\.m\..* left by a dead broker"
instance_shm | grep -q "\.model\." && fail "stale segment survived a restart"
mbctl list | grep -q "^m " && fail "the dead broker's model is listed"
shutdown_clean
