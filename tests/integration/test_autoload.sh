# SPDX-License-Identifier: MIT
# --autoload: 16 workers attaching the same unloaded catalog model at the
# same moment share one load (one "loading" line, loads 1, autoloads 1)
# and all get the same generation, the model listed with reason
# "autoload"; an attach of a name no catalog has gets unknown_model, one
# whose file is broken the load's error; an attach during the shutdown
# gets shutting_down.  Without --autoload an unloaded catalog model is
# unknown_model and nothing loads.
. "$(dirname "$0")/lib.sh"

D="$T/models"
mkdir -p "$D"
make_model "$D/w.safetensors" 4000000
head -c 4096 /dev/urandom >"$D/broken.safetensors"
ATTACHER=(/usr/bin/python3 "$(dirname "$0")/../tools/attacher.py" "$SOCK")
# The load takes about a second: every attach arrives while it runs.
start_broker --model-dir "$D" --autoload --load-rate 4M

stat_is() { # NAME VALUE
	[ "$(mbctl --json stats | json_int "$1")" = "$2" ]
}
"${ATTACHER[@]}" w --count 16 >"$T/att" 2>&1 || fail "attaches: $(cat "$T/att")"
[ "$(grep -c "^attached w generation " "$T/att")" -eq 16 ] ||
	fail "not 16 attaches: $(cat "$T/att")"
[ "$(awk '{ print $4 }' "$T/att" | sort -u | wc -l)" -eq 1 ] ||
	fail "different generations: $(cat "$T/att")"
gen=$(awk 'NR == 1 { print $4 }' "$T/att")
[ "$(grep -c "model w: loading" "$BROKER_LOG")" -eq 1 ] ||
	fail "not one load: $(grep "loading" "$BROKER_LOG")"
stat_is loads 1 && stat_is autoloads 1 || fail "stats: $(mbctl --json stats)"
stat_is attaches 16 || fail "attaches: $(mbctl --json stats)"
mbctl --json list | grep -q "\"reason\":\"autoload\"" ||
	fail "reason: $(mbctl --json list)"
mbctl list | grep -Eq "^w +READY +safetensors .* autoload +forever +([0-9.]+ s|in use) +$gen " ||
	fail "list: $(mbctl list)"
[ "$(mbctl --json list | json_int generation)" = "$gen" ] || fail "generation"

# A READY model attaches without another load.
"${ATTACHER[@]}" w >"$T/att" || fail "attach: $(cat "$T/att")"
grep -q "^attached w generation $gen " "$T/att" || fail "$(cat "$T/att")"
stat_is loads 1 && stat_is autoloads 1 || fail "stats: $(mbctl --json stats)"

# No catalog model of that name: unknown_model, nothing loads.
for name in nothere "sub/w" ../w; do
	status=0
	"${ATTACHER[@]}" "$name" >"$T/att" 2>&1 || status=$?
	[ "$status" -eq 1 ] && grep -q "^error unknown_model: " "$T/att" ||
		fail "attach of '$name': $(cat "$T/att")"
done
# A broken file: the load's error, for every attach (one that comes
# after a failed load tries again).
"${ATTACHER[@]}" broken --count 3 >"$T/att" 2>&1 && fail "broken attached"
[ "$(grep -c "^error format_error: " "$T/att")" -eq 3 ] ||
	fail "attach of a broken model: $(cat "$T/att")"
[ "$(mbctl --json stats | json_int load_failures)" -ge 1 ] ||
	fail "no failed load: $(mbctl --json stats)"
mbctl unload broken >/dev/null 2>&1 || true

# During the shutdown (held up by a worker that does not let go):
# shutting_down, no load.
make_model --raw "$D/late.bin" 100000
start_worker w --no-ack
wait_attached 1
mbctl shutdown --timeout 20 >/dev/null 2>&1 &
CHILDREN+=($!)
wait_until 10 sh -c "'$BIN/mbctl' --socket '$SOCK' --json stats | grep -q '\"shutting_down\":true'" ||
	fail "the shutdown did not begin"
"${ATTACHER[@]}" late >"$T/att" 2>&1 && fail "late attached during the shutdown"
grep -q "^error shutting_down: " "$T/att" || fail "during the shutdown: $(cat "$T/att")"
grep -q "model late: loading" "$BROKER_LOG" && fail "late loaded during the shutdown"
kill "$WORKER_PID"
wait_broker_exit 20
assert_no_shm

# Without --autoload: unknown_model, nothing loads.
: >"$BROKER_LOG"
start_broker --model-dir "$D"
"${ATTACHER[@]}" w >"$T/att" 2>&1 && fail "w attached without --autoload"
grep -q "^error unknown_model: " "$T/att" || fail "without --autoload: $(cat "$T/att")"
grep -q "loading" "$BROKER_LOG" && fail "a load without --autoload"
stat_is loads 0 && stat_is autoloads 0 || fail "stats: $(mbctl --json stats)"
shutdown_clean
