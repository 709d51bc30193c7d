# SPDX-License-Identifier: MIT
# The main job end to end: a safetensors model preloaded and a raw one
# loaded on request, 4 workers attach and verify their checksums through
# read-only mappings, then `mbctl shutdown` signals them, they ack, the
# broker exits 0 and /dev/shm holds nothing of the instance.
. "$(dirname "$0")/lib.sh"

make_model "$T/model.safetensors" 20000000
make_model --raw "$T/raw.bin" 3000001
start_broker --model "weights=$T/model.safetensors" --shutdown-timeout 10
wait_until 20 state_is weights READY || fail "weights not READY"
out=$(mbctl load raw "$T/raw.bin" --wait) || fail "raw load: $out"
case "$out" in *"raw READY"*"xxh3"*) ;; *) fail "load reply: $out" ;; esac
state_is raw READY || fail "raw not READY"

# The segments are sealed read-only and named after the instance.
ls -l /dev/shm | grep -q -- "-r-------- .* mbroker\.$INSTANCE\.model\.weights\." ||
	fail "weights segment is not mode 0400: $(ls -l /dev/shm)"
[ -e "/dev/shm/mbroker.$INSTANCE.registry" ] || fail "no registry mirror"
[ -e "/dev/shm/sem.mbroker.$INSTANCE.ack" ] || fail "no ack semaphore"

pids=()
for i in 1 2 3 4; do
	start_worker weights
	pids+=("$WORKER_PID")
done
wait_attached 4
for i in 1 2 3 4; do
	wait_until 10 grep -q "checksum ok" "$T/worker$i.log" ||
		fail "worker $i did not verify its checksum"
done
workers=$(mbctl workers)
for pid in "${pids[@]}"; do
	echo "$workers" | grep -q "^$pid .*weights(gen 1)" ||
		fail "workers does not list $pid: $workers"
done
[ "$(mbctl --json list | json_int attached)" = 4 ] || fail "attached != 4"

t0=$(now_ms)
out=$(mbctl shutdown) || fail "mbctl shutdown failed: $out"
case "$out" in "shutdown complete"*"2 model(s)"*) ;; *) fail "reply: $out" ;; esac
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS"
assert_between "$(elapsed_since "$t0")" 0 5000 "shutdown time"
for pid in "${pids[@]}"; do
	worker_exited_with "$pid" 0
done
grep -q "acknowledged" "$T/worker1.log" || fail "worker 1 did not ack"
assert_log "shutdown complete"
assert_log "Shmem"
assert_no_shm
[ ! -e "$SOCK" ] || fail "socket left behind"
