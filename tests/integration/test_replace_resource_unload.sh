# SPDX-License-Identifier: MIT
# An operator's unload during the gap of a resource replace (two copies do
# not fit, so the replace unloads the model first, docs/protocol.md
# "Replace"): as an unload during any replace, it wins.  The unload is
# answered UNINITIALIZED and the model stays gone, nothing of it in list
# or /dev/shm; the replace is answered `cancelled`, not a model loaded
# again behind the operator's back.
. "$(dirname "$0")/replace_lib.sh"

make_model --seed 1 "$T/m1.safetensors" 2000000
make_model --seed 2 "$T/m2.safetensors" 2000000
FILES=("$T/m1.safetensors" "$T/m2.safetensors")

start_broker --max-shm-bytes 3M --model "w=$T/m1.safetensors"
wait_until 10 state_is w READY || fail "no model"
start_holder w "${FILES[@]}"
hold "$HOLDER_FD" "$HOLDER_LOG"
request '{"op":"load","name":"w","path":"'"$T"'/m2.safetensors","replace":true,"wait":true,"policy":"resource","timeout":20}' \
	>"$T/resource.reply" &
replacer=$!
CHILDREN+=("$replacer")
expect_holder "$HOLDER_LOG" '^event \{"event":"unload","model":"w","generation":1,'
state_is w UNLOADING || fail "the resource replace does not unload: $(model_state w)"
mbctl --json unload w --timeout 20 >"$T/unload.reply" 2>&1 &
unloader=$!
CHILDREN+=("$unloader")
wait_until 10 grep -q "model w: already unloading; joined" "$BROKER_LOG" ||
	fail "the unload did not join"
echo ack >&"$HOLDER_FD"
expect_holder "$HOLDER_LOG" '^acked$'
wait "$unloader" || fail "unload: $(cat "$T/unload.reply")"
grep -q '"state":"UNINITIALIZED"' "$T/unload.reply" ||
	fail "unload: $(cat "$T/unload.reply")"
wait "$replacer" && fail "the replace loaded w after the unload: $(cat "$T/resource.reply")"
reply_has "$(cat "$T/resource.reply")" '"code":"cancelled"' "the replace"
[ -z "$(model_state w)" ] || fail "w after its unload: $(mbctl --json list)"
[ -z "$(model_segments w)" ] || fail "left in /dev/shm: $(model_segments w)"
echo quit >&"$HOLDER_FD"
shutdown_clean
