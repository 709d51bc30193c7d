# SPDX-License-Identifier: MIT
# Idle unload: with --keep-alive 1 a model nobody holds is unloaded about
# a second after its last holder let go, not before (still READY just
# after the detach, gone within a bound; its log line, stats
# idle_unloads); a load's own --keep-alive 0 unloads it as soon as its
# last holder lets go; a pinned model stays however long it is idle.
. "$(dirname "$0")/lib.sh"

D="$T/models"
mkdir -p "$D"
for name in a c k; do
	make_model --raw "$D/$name.bin" 100000
done
ATTACHER=(/usr/bin/python3 "$(dirname "$0")/../tools/attacher.py" "$SOCK")
start_broker --model-dir "$D" --autoload --keep-alive 1

# member NAME KEY: member KEY of the list's model NAME (empty when absent).
member() {
	mbctl --json list | /usr/bin/python3 -c '
import json, sys
name, key = sys.argv[1:]
for m in json.load(sys.stdin)["models"]:
    if m["name"] == name and key in m:
        print(m[key])' "$@"
}
gone() {
	[ -z "$(model_state "$1")" ]
}
# use NAME: one worker attaches NAME (loading it), reads it and lets go.
use() {
	"$BIN/mbworker" --socket "$SOCK" --model "$1" --passes 1 --interval 0 \
		>"$T/worker.log" 2>&1 || fail "worker on $1: $(cat "$T/worker.log")"
}

# c is pinned before it loads; a is not.  Both are autoloaded, used once
# and let go at about the same time.
mbctl pin c >"$T/out" || fail "pin c: $(cat "$T/out")"
grep -q "^c pinned (not loaded)$" "$T/out" || fail "pin said $(cat "$T/out")"
use c
use a
t0=$(now_ms)
state_is a READY || fail "a is $(model_state a) right after the detach"
[ "$(member a keep_alive_ms)" = 1000 ] ||
	fail "keep_alive_ms of a: $(mbctl --json list)"
wait_until 10 gone a || fail "a still $(model_state a) 10 s after the detach"
elapsed=$(elapsed_since "$t0")
assert_between "$elapsed" 900 3000 "ms from the detach to a's unload"
assert_log "model a: idle for 1"
[ "$(mbctl --json stats | json_int idle_unloads)" = 1 ] ||
	fail "idle_unloads: $(mbctl --json stats)"
# The pinned c, idle as long as a was, stays.
state_is c READY || fail "the pinned c is $(model_state c)"
idle=$(member c idle_ms)
[ "${idle:-0}" -ge 1000 ] || fail "c idle for ${idle:-no} ms only"
mbctl list | grep -q "^c  *READY .* autoload  *pinned  *[0-9.]* s " ||
	fail "list: $(mbctl list)"

# A load's keep-alive 0: unloaded as soon as the last holder lets go,
# well before the broker's second.  The holders wait for it to be READY
# (k2 is no catalog name: nothing autoloads it).
"${ATTACHER[@]}" k2 --count 2 --wait 20 --hold >"$T/holders" 2>&1 &
holders=$!
CHILDREN+=("$holders")
mbctl load k2 "$D/k.bin" --keep-alive 0 --wait >/dev/null || fail "load k2 failed"
wait_until 20 sh -c "[ \$(grep -c '^attached k2 ' '$T/holders') -eq 2 ]" ||
	fail "holders: $(cat "$T/holders")"
[ "$(member k2 keep_alive_ms)" = 0 ] ||
	fail "keep_alive_ms of k2: $(mbctl --json list)"
mbctl list | grep -q "^k2  *READY .* explicit  *0 s  *in use " ||
	fail "list: $(mbctl list)"
kill "$holders"
t0=$(now_ms)
wait_until 10 gone k2 || fail "k2 still $(model_state k2) after its holders went"
elapsed=$(elapsed_since "$t0")
assert_between "$elapsed" 0 800 "ms from the holders' exit to k2's unload"
[ "$(mbctl --json stats | json_int idle_unloads)" = 2 ] ||
	fail "idle_unloads: $(mbctl --json stats)"
state_is c READY || fail "the pinned c is $(model_state c)"
shutdown_clean
