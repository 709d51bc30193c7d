# SPDX-License-Identifier: MIT
# The drain of a replaced generation at its deadline (docs/protocol.md,
# "Replace"): a holder that never lets go is named in the log, the old
# generation shows "state":"ERROR" in list's generations, its segment
# leaves /dev/shm while the holder still reads the right bytes through its
# mapping, and bytes_reserved counts it until the holder detaches; with
# --kill-after shorter than the drain timeout the holder is SIGKILLed and
# the generation freed before its deadline.
. "$(dirname "$0")/replace_lib.sh"

make_model --seed 1 "$T/m1.safetensors" 1000000
make_model --seed 2 "$T/m2.safetensors" 2000000
FILES=("$T/m1.safetensors" "$T/m2.safetensors")
SIZE1=$(stat -c %s "$T/m1.safetensors")
SIZE2=$(stat -c %s "$T/m2.safetensors")

generation_in_error() {
	generations w | grep "\"generation\":$1,.*\"state\":\"ERROR\"" >/dev/null
}

# 7a. A holder that never detaches: the deadline passes.
start_broker --model "w=$T/m1.safetensors"
wait_until 10 state_is w READY || fail "no model"
start_holder w "${FILES[@]}"
hold "$HOLDER_FD" "$HOLDER_LOG"
old_segment=$(segment_of_generation w 1)
reply=$(request '{"op":"load","name":"w","path":"'"$T"'/m2.safetensors","replace":true,"wait":true,"timeout":1}') ||
	fail "replace: $reply"
t0=$(now_ms)
g2=$(echo "$reply" | json_int generation)
expect_holder "$HOLDER_LOG" '^event \{"event":"replaced","model":"w","old_generation":1,"generation":'"$g2"',"timeout_ms":[0-9]+\}$'
timeout_ms=$(grep '"event":"replaced"' "$HOLDER_LOG" | json_int timeout_ms)
assert_between "$timeout_ms" 500 1000 "the event's timeout_ms"
line=$(generations w | grep '"generation":1,') || fail "no generation 1: $(generations w)"
reply_has "$line" '"role":"draining"' "generation 1 before its deadline"
left=$(echo "$line" | json_int drain_deadline_ms)
assert_between "$left" 1 1000 "drain_deadline_ms"
reply_has "$line" '"attached":1,' "generation 1 before its deadline"
echo "$line" | grep -q '"state":"ERROR"' && fail "ERROR before the deadline: $line"
[ "$(stat_of bytes_reserved)" = $((SIZE1 + SIZE2)) ] ||
	fail "bytes_reserved $(stat_of bytes_reserved) while both serve"

wait_until 5 generation_in_error 1 || fail "no ERROR at the deadline: $(generations w)"
assert_between "$(elapsed_since "$t0")" 900 5000 "the deadline came after (ms)"
wait_until 5 grep -q "generation 1 still held .* by pids \[$HOLDER_PID\]" "$BROKER_LOG" ||
	fail "the log does not name pid $HOLDER_PID"
line=$(generations w | grep '"generation":1,')
echo "$line" | grep -q '"segment"' && fail "an unlinked segment is still named: $line"
ls /dev/shm | grep -qx "${old_segment}" && fail "$old_segment still in /dev/shm"
[ -n "$(segment_of_generation w "$g2")" ] || fail "the new segment is gone"
state_is w READY || fail "the model is $(model_state w) after the drain timed out"
echo verify >&"$HOLDER_FD"
expect_holder "$HOLDER_LOG" '^verified 1 m1.safetensors$'
[ "$(stat_of drain_timeouts)" = 1 ] || fail "drain_timeouts $(stat_of drain_timeouts)"
[ "$(stat_of bytes_reserved)" = $((SIZE1 + SIZE2)) ] ||
	fail "bytes_reserved $(stat_of bytes_reserved) while the holder maps generation 1"
hold "$HOLDER_FD" "$HOLDER_LOG"
holder_says "$HOLDER_LOG" "^attached $g2 m2.safetensors\$" || fail "$(cat "$HOLDER_LOG")"
echo detach-all >&"$HOLDER_FD"
expect_holder "$HOLDER_LOG" '^detached 1$'
wait_until 5 generation_count_is w 1 || fail "after the detach: $(generations w)"
wait_until 5 stat_is bytes_reserved "$SIZE2" ||
	fail "bytes_reserved $(stat_of bytes_reserved) after the detach, not $SIZE2"
kill -0 "$HOLDER_PID" || fail "the holder died without --kill-after"
echo quit >&"$HOLDER_FD"
shutdown_clean

# 7b. --kill-after shorter than the drain timeout: SIGKILL, then freed.
start_broker --kill-after 0.5 --model "w=$T/m1.safetensors"
wait_until 10 state_is w READY || fail "no model"
start_holder w "${FILES[@]}"
hold "$HOLDER_FD" "$HOLDER_LOG"
old_segment=$(segment_of_generation w 1)
reply=$(request '{"op":"load","name":"w","path":"'"$T"'/m2.safetensors","replace":true,"wait":true,"timeout":20}') ||
	fail "replace: $reply"
t0=$(now_ms)
expect_holder "$HOLDER_LOG" '"event":"replaced"'
wait_until 10 sh -c "! kill -0 $HOLDER_PID" || fail "the holder was not killed"
status=0
wait "$HOLDER_PID" 2>/dev/null || status=$?
[ "$status" -eq 137 ] || fail "the holder exited $status, not by SIGKILL"
assert_between "$(elapsed_since "$t0")" 300 10000 "killed after (ms)"
assert_log "killed pid $HOLDER_PID"
wait_until 5 generation_count_is w 1 || fail "after the kill: $(generations w)"
ls /dev/shm | grep -qx "${old_segment}" && fail "$old_segment still in /dev/shm"
[ "$(stat_of bytes_reserved)" = "$SIZE2" ] || fail "bytes_reserved $(stat_of bytes_reserved)"
[ "$(stat_of drain_timeouts)" = 0 ] || fail "drain_timeouts $(stat_of drain_timeouts)"
shutdown_clean
