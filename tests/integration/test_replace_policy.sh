# SPDX-License-Identifier: MIT
# A replace that cannot happen leaves the serving generation alone, and one
# whose two copies do not fit follows the policy (docs/protocol.md,
# "Replace"): a new file with a bad header (format_error) or none at all
# (io_error) is refused with the model and the generation serving, which
# serves on, untouched, alone in list and /dev/shm, counted in
# replace_failures; under --max-shm-bytes too small for two copies the
# availability policy refuses with no_space naming the bytes needed, and
# the resource policy (asked in the request, or --replace-policy) unloads
# first (the holder hears `unload` and the signal, and acks), then loads:
# later attaches get the new bytes.
. "$(dirname "$0")/replace_lib.sh"

make_model --seed 1 "$T/m1.safetensors" 2000000
make_model --seed 2 "$T/m2.safetensors" 2000000
SIZE=$(stat -c %s "$T/m2.safetensors")
printf '\020\000\000\000\000\000\000\000{"x":garbage!!}' >"$T/bad.safetensors"
FILES=("$T/m1.safetensors" "$T/m2.safetensors")

# serves_only_generation G FILE: list shows generation G alone, READY;
# /dev/shm holds its segment alone; a new attach gets G with FILE's bytes.
serves_only_generation() {
	state_is w READY || fail "state $(model_state w)"
	generation_count_is w 1 || fail "generations: $(generations w)"
	generations w | grep "\"generation\":$1," >/dev/null ||
		fail "generations: $(generations w)"
	[ "$(model_segments w | wc -l)" -eq 1 ] &&
		[ -n "$(segment_of_generation w "$1")" ] ||
		fail "segments: $(model_segments w)"
	hold "$HOLDER_FD" "$HOLDER_LOG"
	tail -n1 "$HOLDER_LOG" | grep -qx "attached $1 $(basename "$2")" ||
		fail "attach: $(tail -n1 "$HOLDER_LOG")"
}

# 1. Failed replaces: a bad header, a missing file (with and without wait).
start_broker --model "w=$T/m1.safetensors"
wait_until 10 state_is w READY || fail "no model"
start_holder w "${FILES[@]}"
hold "$HOLDER_FD" "$HOLDER_LOG"
holder_says "$HOLDER_LOG" '^attached 1 m1.safetensors$' ||
	fail "first attach: $(cat "$HOLDER_LOG")"

reply=$(request '{"op":"load","name":"w","path":"'"$T"'/bad.safetensors","replace":true,"wait":true}') &&
	fail "a bad header replaced: $reply"
reply_has "$reply" '"code":"format_error"' "bad header"
reply_has "$reply" '"model":"w"' "bad header, model"
reply_has "$reply" '"generation":1[,}]' "bad header, generation serving"
serves_only_generation 1 "$T/m1.safetensors"

reply=$(request '{"op":"load","name":"w","path":"'"$T"'/missing.safetensors","replace":true,"wait":true}') &&
	fail "a missing file replaced: $reply"
reply_has "$reply" '"code":"io_error"' "missing file"
reply_has "$reply" '"model":"w"' "missing file, model"
reply_has "$reply" '"generation":1[,}]' "missing file, generation serving"
reply=$(request '{"op":"load","name":"w","path":"'"$T"'/missing.safetensors","replace":true}') &&
	fail "a missing file replaced without wait: $reply"
reply_has "$reply" '"code":"io_error"' "missing file without wait"
serves_only_generation 1 "$T/m1.safetensors"
[ "$(stat_of replace_failures)" = 3 ] ||
	fail "replace_failures $(stat_of replace_failures), not 3"
[ "$(stat_of replaces)" = 0 ] || fail "replaces $(stat_of replaces)"
echo verify >&"$HOLDER_FD"
expect_holder "$HOLDER_LOG" '^verified 1 m1.safetensors$' 2
holder_says "$HOLDER_LOG" '^(event|signal) ' &&
	fail "a failed replace told the holder: $(cat "$HOLDER_LOG")"
echo quit >&"$HOLDER_FD"
shutdown_clean

# 2a. availability: two copies do not fit the budget.
start_broker --max-shm-bytes 3M --model "w=$T/m1.safetensors"
wait_until 10 state_is w READY || fail "no model"
start_holder w "${FILES[@]}"
hold "$HOLDER_FD" "$HOLDER_LOG"
reply=$(request '{"op":"load","name":"w","path":"'"$T"'/m2.safetensors","replace":true,"wait":true}') &&
	fail "two copies over the budget: $reply"
reply_has "$reply" '"code":"no_space"' "availability"
reply_has "$reply" '"needed":'$SIZE "availability, needed"
reply_has "$reply" '"message":"[^"]*'$SIZE' bytes' "availability, message"
reply_has "$reply" '"generation":1[,}]' "availability, generation serving"
serves_only_generation 1 "$T/m1.safetensors"
holder_says "$HOLDER_LOG" '^(event|signal) ' &&
	fail "a refused replace told the holder: $(cat "$HOLDER_LOG")"

# 2b. resource, asked in the request: unload (the holder acks), then load.
request '{"op":"load","name":"w","path":"'"$T"'/m2.safetensors","replace":true,"wait":true,"policy":"resource","timeout":20}' \
	>"$T/resource.reply" &
replacer=$!
CHILDREN+=("$replacer")
expect_holder "$HOLDER_LOG" '^event \{"event":"unload","model":"w","generation":1,'
expect_holder "$HOLDER_LOG" '^signal 10$'
# The gap: nobody gets the model until the new one is READY.
reply=$(request '{"op":"attach","name":"w"}') && fail "attach in the gap: $reply"
reply_has "$reply" '"code":"(unloading|unknown_model|not_ready)"' "attach in the gap"
echo ack >&"$HOLDER_FD"
expect_holder "$HOLDER_LOG" '^acked$'
wait "$replacer" || fail "resource replace: $(cat "$T/resource.reply")"
reply=$(cat "$T/resource.reply")
reply_has "$reply" '"state":"READY"' "resource replace"
gen=$(echo "$reply" | json_int generation)
[ "$gen" -gt 1 ] || fail "resource replace, generation: $reply"
serves_only_generation "$gen" "$T/m2.safetensors"
echo quit >&"$HOLDER_FD"
shutdown_clean

# 2c. --replace-policy resource is the default the request may override.
start_broker --max-shm-bytes 3M --replace-policy resource \
	--model "w=$T/m1.safetensors"
wait_until 10 state_is w READY || fail "no model"
start_holder w "${FILES[@]}"
reply=$(request '{"op":"load","name":"w","path":"'"$T"'/m2.safetensors","replace":true,"wait":true,"policy":"availability"}') &&
	fail "availability asked, over the budget: $reply"
reply_has "$reply" '"code":"no_space"' "availability over --replace-policy"
reply=$(request '{"op":"load","name":"w","path":"'"$T"'/m2.safetensors","replace":true,"wait":true}') ||
	fail "--replace-policy resource: $reply"
gen=$(echo "$reply" | json_int generation)
serves_only_generation "$gen" "$T/m2.safetensors"
echo quit >&"$HOLDER_FD"
shutdown_clean
