# SPDX-License-Identifier: MIT
# A replace racing what else can happen to its model (docs/protocol.md,
# "Replace", Races): an unload or the shutdown while the new generation
# loads (slowed by --load-rate) cancels it (`cancelled`) and removes
# everything; a second replace while one loads is already_loading, one
# after the switch drains the older generations side by side, each holder
# hearing one `replaced` per generation it holds; a holder of an old
# generation killed by SIGKILL releases it at once; and a worker attaching
# and detaching as fast as it can through a replace is never refused and
# always maps one whole generation's bytes.
. "$(dirname "$0")/replace_lib.sh"

make_model --seed 1 "$T/m1.safetensors" 1000000
make_model --seed 2 "$T/m2.safetensors" 2000000
make_model --seed 3 "$T/m3.safetensors" 1000000
make_model --seed 4 "$T/big.safetensors" 16000000
FILES=("$T/m1.safetensors" "$T/m2.safetensors" "$T/m3.safetensors")

has_next_generation() {
	generations w | grep '"role":"next"' >/dev/null
}

# replace_in_background FILE TAG: a replace of w by FILE with wait, its
# reply in $T/TAG.reply; sets REPLACER.
replace_in_background() {
	request '{"op":"load","name":"w","path":"'"$1"'","replace":true,"wait":true,"timeout":30}' \
		>"$T/$2.reply" &
	REPLACER=$!
	CHILDREN+=("$REPLACER")
}

# replacer_cancelled TAG: the replace was answered `cancelled`.
replacer_cancelled() {
	wait "$REPLACER" && fail "$1: the replace was not cancelled: $(cat "$T/$1.reply")"
	reply_has "$(cat "$T/$1.reply")" '"code":"cancelled"' "$1: the replace"
}

# 3. An unload while a replace loads.
start_broker --load-rate 4M --model "w=$T/m1.safetensors"
wait_until 10 state_is w READY || fail "no model"
start_holder w "${FILES[@]}"
hold "$HOLDER_FD" "$HOLDER_LOG"
replace_in_background "$T/big.safetensors" unload-race
wait_until 10 has_next_generation || fail "the replace does not load: $(generations w)"
[ "$(model_segments w | wc -l)" -eq 2 ] || fail "segments while loading: $(model_segments w)"
mbctl --json unload w --timeout 10 >"$T/unload.reply" 2>&1 &
unloader=$!
CHILDREN+=("$unloader")
expect_holder "$HOLDER_LOG" '^event \{"event":"unload","model":"w","generation":1,'
echo ack >&"$HOLDER_FD"
wait "$unloader" || fail "unload: $(cat "$T/unload.reply")"
replacer_cancelled unload-race
[ -z "$(model_state w)" ] || fail "after the unload: $(mbctl --json list)"
[ -z "$(model_segments w)" ] || fail "left in /dev/shm: $(model_segments w)"
holder_says "$HOLDER_LOG" '"event":"replaced"' &&
	fail "a cancelled replace told the holder: $(cat "$HOLDER_LOG")"
echo quit >&"$HOLDER_FD"
shutdown_clean

# 4. The shutdown while a replace loads.
start_broker --load-rate 4M --model "w=$T/m1.safetensors"
wait_until 10 state_is w READY || fail "no model"
start_holder w "${FILES[@]}"
hold "$HOLDER_FD" "$HOLDER_LOG"
replace_in_background "$T/big.safetensors" shutdown-race
wait_until 10 has_next_generation || fail "the replace does not load: $(generations w)"
mbctl shutdown >"$T/shutdown.reply" 2>&1 &
stopper=$!
CHILDREN+=("$stopper")
expect_holder "$HOLDER_LOG" '^event \{"event":"shutdown"'
echo ack >&"$HOLDER_FD"
wait "$stopper" || fail "shutdown: $(cat "$T/shutdown.reply")"
replacer_cancelled shutdown-race
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS, not 0"
assert_no_shm
echo quit >&"$HOLDER_FD"

# 5. A replace while one loads; one after the switch: three generations.
start_broker --load-rate 1M --model "w=$T/m1.safetensors"
wait_until 10 state_is w READY || fail "no model"
start_holder w "${FILES[@]}"
A_FD=$HOLDER_FD A_LOG=$HOLDER_LOG
start_holder w "${FILES[@]}"
B_FD=$HOLDER_FD B_LOG=$HOLDER_LOG
start_holder w "${FILES[@]}"
C_FD=$HOLDER_FD C_LOG=$HOLDER_LOG
hold "$A_FD" "$A_LOG"
hold "$C_FD" "$C_LOG"
replace_in_background "$T/m2.safetensors" first
wait_until 10 has_next_generation || fail "the replace does not load: $(generations w)"
reply=$(request '{"op":"load","name":"w","path":"'"$T"'/m3.safetensors","replace":true,"wait":true}') &&
	fail "a replace beside a replace: $reply"
reply_has "$reply" '"code":"already_loading"' "a replace while one loads"
wait "$REPLACER" || fail "first replace: $(cat "$T/first.reply")"
g2=$(json_int generation <"$T/first.reply")
[ "$g2" -gt 1 ] || fail "first replace: $(cat "$T/first.reply")"
expect_holder "$A_LOG" '^event \{"event":"replaced","model":"w","old_generation":1,"generation":'"$g2"','
expect_holder "$C_LOG" '^event \{"event":"replaced","model":"w","old_generation":1,"generation":'"$g2"','
hold "$B_FD" "$B_LOG"
hold "$C_FD" "$C_LOG"
holder_says "$B_LOG" "^attached $g2 m2.safetensors\$" || fail "B: $(cat "$B_LOG")"
holder_says "$C_LOG" "^attached $g2 m2.safetensors\$" || fail "C: $(cat "$C_LOG")"
reply=$(request '{"op":"load","name":"w","path":"'"$T"'/m3.safetensors","replace":true,"wait":true,"timeout":30}') ||
	fail "second replace: $reply"
g3=$(echo "$reply" | json_int generation)
[ "$g3" -gt "$g2" ] || fail "second replace: $reply"
expect_holder "$A_LOG" '^event \{"event":"replaced","model":"w","old_generation":1,"generation":'"$g3"','
expect_holder "$B_LOG" '^event \{"event":"replaced","model":"w","old_generation":'"$g2"',"generation":'"$g3"','
expect_holder "$C_LOG" '^event \{"event":"replaced","model":"w","old_generation":1,"generation":'"$g3"','
expect_holder "$C_LOG" '^event \{"event":"replaced","model":"w","old_generation":'"$g2"',"generation":'"$g3"','
for log in "$A_LOG" "$B_LOG" "$C_LOG"; do
	want=$(grep -c '^attached' "$log")
	[ "$log" = "$C_LOG" ] && want=3 # 1 -> g2, 1 -> g3, g2 -> g3
	[ "$log" = "$A_LOG" ] && want=2 # 1 -> g2, 1 -> g3
	[ "$(grep -c '"event":"replaced"' "$log")" -eq "$want" ] ||
		fail "$(basename "$log"): not one event per generation and replace: $(cat "$log")"
done
generation_count_is w 3 || fail "three generations: $(generations w)"
for g in "$g3 current" "$g2 draining" "1 draining"; do
	set -- $g
	generations w | grep "\"generation\":$1,.*\"role\":\"$2\"" >/dev/null ||
		fail "generation $1 not $2: $(generations w)"
	[ -n "$(segment_of_generation w "$1")" ] || fail "no segment of $1: $(model_segments w)"
done
for fd in "$A_FD" "$B_FD" "$C_FD"; do
	echo verify >&"$fd"
done
expect_holder "$A_LOG" '^verified 1 m1.safetensors$'
expect_holder "$C_LOG" "^verified $g2 m2.safetensors\$"
hold "$A_FD" "$A_LOG"
holder_says "$A_LOG" "^attached $g3 m3.safetensors\$" || fail "A: $(cat "$A_LOG")"
for fd in "$A_FD" "$B_FD" "$C_FD"; do
	echo detach-all >&"$fd"
done
wait_until 10 generation_count_is w 1 || fail "after the detaches: $(generations w)"
wait_until 10 segments_are w "$(segment_of_generation w "$g3") " ||
	fail "segments after the detaches: $(model_segments w)"
[ "$(stat_of replaces)" = 2 ] || fail "replaces $(stat_of replaces)"
[ "$(stat_of drain_timeouts)" = 0 ] || fail "drain_timeouts $(stat_of drain_timeouts)"
for fd in "$A_FD" "$B_FD" "$C_FD"; do
	echo quit >&"$fd"
done
shutdown_clean

# 6. A holder of the old generation killed during its drain frees it at once.
start_broker --model "w=$T/m1.safetensors"
wait_until 10 state_is w READY || fail "no model"
start_holder w "${FILES[@]}"
hold "$HOLDER_FD" "$HOLDER_LOG"
old_segment=$(segment_of_generation w 1)
reply=$(request '{"op":"load","name":"w","path":"'"$T"'/m2.safetensors","replace":true,"wait":true,"timeout":60}') ||
	fail "replace: $reply"
expect_holder "$HOLDER_LOG" '"event":"replaced"'
generation_count_is w 2 || fail "draining: $(generations w)"
kill -9 "$HOLDER_PID"
wait "$HOLDER_PID" 2>/dev/null || true
t0=$(now_ms)
wait_until 5 generation_count_is w 1 || fail "the dead holder's generation: $(generations w)"
wait_until 5 sh -c "! ls /dev/shm | grep -qx '$old_segment'" ||
	fail "$old_segment still in /dev/shm"
[ "$(elapsed_since "$t0")" -lt 5000 ] || fail "freed only after $(elapsed_since "$t0") ms"
[ "$(stat_of drain_timeouts)" = 0 ] || fail "drain_timeouts $(stat_of drain_timeouts)"
shutdown_clean

# 8. Attaches through a replace: never refused, never a mix.
start_broker --load-rate 8M --model "w=$T/m1.safetensors"
wait_until 10 state_is w READY || fail "no model"
"$PY" "$REPLACE_CLIENT" churn "$SOCK" w "$T/stop" "${FILES[@]}" >"$T/churn.log" 2>&1 &
churner=$!
CHILDREN+=("$churner")
attaches_over() {
	[ "$(stat_of attaches)" -gt "$1" ]
}
wait_until 10 attaches_over 20 || fail "the churn does not attach: $(cat "$T/churn.log")"
before=$(stat_of attaches)
reply=$(request '{"op":"load","name":"w","path":"'"$T"'/m2.safetensors","replace":true,"wait":true}') ||
	fail "replace under churn: $reply"
after=$(stat_of attaches)
[ "$after" -gt $((before + 5)) ] || fail "the churn stalled while the replace loaded: $before -> $after attaches"
g2=$(echo "$reply" | json_int generation)
wait_until 10 attaches_over $((after + 20)) || fail "the churn stalled after the switch"
touch "$T/stop"
wait "$churner" || fail "churn: $(cat "$T/churn.log")"
grep -qx "1 m1.safetensors [0-9]*" "$T/churn.log" || fail "churn: $(cat "$T/churn.log")"
grep -qx "$g2 m2.safetensors [0-9]*" "$T/churn.log" || fail "churn: $(cat "$T/churn.log")"
[ "$(wc -l <"$T/churn.log")" -eq 2 ] || fail "churn: $(cat "$T/churn.log")"
echo "churn (generation, file, attaches): $(tr "\n" " " <"$T/churn.log"); $before -> $after attaches while the replace loaded"
wait_until 10 generation_count_is w 1 || fail "after the churn: $(generations w)"
shutdown_clean
