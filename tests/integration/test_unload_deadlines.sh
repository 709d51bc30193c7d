# SPDX-License-Identifier: MIT
# The replies and deadlines of deferred requests, as a client sees them:
# a `load --wait` is answered when an unload with timeout 0 cancels its
# slow load, and when that load has to be abandoned; a load without wait
# reports the file's size; `freed_bytes`
# counts only what was really freed; `--kill-after S` kills S after the
# unload began and never at a deadline that comes first; a joined unload
# with a short timeout does not cut a running shutdown short.
. "$(dirname "$0")/lib.sh"

# json_field FIELD: the first FIELD's value (integer or string) on stdin.
json_field() {
	grep -o "\"$1\":\"*[^,}\"]*" | head -n1 | sed 's/.*://; s/"//'
}

make_model --raw "$T/slow.bin" 20000000
make_model "$T/w.safetensors" 100000
start_broker --load-rate 10000000 --kill-after 1

# A load without wait is answered once its size is known.
reply=$(mbctl --json load slow "$T/slow.bin")
[ "$(echo "$reply" | json_field state)" = LOADING ] || fail "load: $reply"
[ "$(echo "$reply" | json_field size)" = 20000000 ] ||
	fail "size while LOADING: $reply"

# An unload of timeout 0 during a slow load: the waiting load gets its
# answer, and the segment the cancelled load had created counts as freed.
mbctl unload slow --timeout 0 >/dev/null 2>&1 || true
mbctl load slow "$T/slow.bin" --wait >"$T/wait.out" 2>&1 &
waiter=$!
CHILDREN+=("$waiter")
wait_until 20 state_is slow LOADING || fail "slow is $(model_state slow)"
reply=$(mbctl --json unload slow --timeout 0) || fail "unload: $reply"
[ "$(echo "$reply" | json_field freed_bytes)" = 20000000 ] ||
	fail "freed_bytes of a cancelled load: $reply"
wait_until 10 sh -c "! kill -0 $waiter" || fail "load --wait got no reply"
status=0
wait "$waiter" || status=$?
[ "$status" -ne 0 ] || fail "load --wait succeeded although cancelled"
grep -q "unloaded while loading" "$T/wait.out" ||
	fail "load --wait: $(cat "$T/wait.out")"

# The same while the load reserves 2 GiB of pages, which no cancel
# interrupts (about 0.8 s here): past the 0.25 s grace the load is
# abandoned, and the waiting load is still answered at once; its thread
# cleans up alone when the reservation returns.
truncate -s 2G "$T/huge.bin"
mbctl load huge "$T/huge.bin" --wait >"$T/wait.out" 2>&1 &
waiter=$!
CHILDREN+=("$waiter")
wait_until 20 state_is huge LOADING || fail "huge is $(model_state huge)"
mbctl unload huge --timeout 0 >/dev/null 2>&1 || true
wait_until 10 sh -c "! kill -0 $waiter" || fail "load --wait got no reply"
grep -q "unloaded while loading" "$T/wait.out" ||
	fail "load --wait: $(cat "$T/wait.out")"
if grep -q "huge.bin did not stop in time" "$BROKER_LOG"; then
	wait_until 20 grep -q "abandoned load of .*huge.bin finished" \
		"$BROKER_LOG" || fail "the abandoned load never cleaned up"
	[ "$(mbctl --json stats | json_int abandoned_loads)" = 0 ] ||
		fail "abandoned_loads: $(mbctl --json stats)"
	mbctl unload huge >/dev/null || fail "unload of the ERROR left"
else
	echo "note: the 2 GiB reservation stopped within the grace" >&2
fi
rm -f "$T/huge.bin"

# --kill-after 1 with an unload of timeout 0.3: the deadline comes first,
# so the holder is named, not killed, and nothing is freed yet.
load w "$T/w.safetensors"
start_worker w --no-ack
deaf=$WORKER_PID
wait_attached 1
t0=$(now_ms)
reply=$(mbctl --json unload w --timeout 0.3 2>/dev/null) &&
	fail "unload worked: $reply"
assert_between "$(elapsed_since "$t0")" 250 2500 "unload of timeout 0.3"
kill -0 "$deaf" || fail "--kill-after 1 killed at a 0.3 s deadline"
echo "$reply" | grep -q "\"pids\":\[$deaf\]" || fail "holder not named: $reply"
[ "$(echo "$reply" | json_field freed_bytes)" = 0 ] ||
	fail "freed_bytes while a worker holds it: $reply"
[ "$(echo "$reply" | json_field segments_unlinked)" = 1 ] ||
	fail "segments_unlinked: $reply"
# A second unload: the holder is killed 1 s after it began; that unload
# unlinked nothing and freed nothing of its own.
t0=$(now_ms)
reply=$(mbctl --json unload w --timeout 10) || fail "second unload: $reply"
assert_between "$(elapsed_since "$t0")" 950 5000 "kill 1 s after the unload"
echo "$reply" | grep -q "\"killed\":\[$deaf\]" || fail "not killed: $reply"
[ "$(echo "$reply" | json_field freed_bytes)" = 0 ] ||
	fail "freed_bytes counted twice: $reply"
worker_exited_with "$deaf" 137
# With nothing attached, the whole segment is freed.
load w "$T/w.safetensors"
size=$(mbctl --json list | json_field size)
reply=$(mbctl --json unload w) || fail "unload: $reply"
[ "$(echo "$reply" | json_field freed_bytes)" = "$size" ] ||
	fail "freed_bytes of a free model: $reply (size $size)"
shutdown_clean

# A joined unload with a short timeout leaves the shutdown's deadline.
: >"$BROKER_LOG"
start_broker
load w "$T/w.safetensors"
start_worker w --no-ack
deaf=$WORKER_PID
wait_attached 1
t0=$(now_ms)
mbctl shutdown --timeout 3 >/dev/null 2>&1 &
CHILDREN+=("$!")
wait_until 10 grep -q "shutdown requested" "$BROKER_LOG" ||
	fail "the shutdown did not start"
mbctl unload w --timeout 0.2 >/dev/null 2>&1 && fail "joined unload worked"
assert_between "$(elapsed_since "$t0")" 2800 6000 "joined unload"
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 1 ] || fail "broker exited $BROKER_STATUS, not 1"
assert_between "$(elapsed_since "$t0")" 2800 6000 "shutdown of timeout 3"
assert_no_shm
