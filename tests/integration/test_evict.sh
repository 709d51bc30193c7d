# SPDX-License-Identifier: MIT
# Eviction to make room: a --max-shm-bytes budget holds three of five
# equal catalog models (and big, two and a half of them).  A load that does not fit evicts the least
# recently used model that nobody holds and that is not pinned, exactly
# that one (its "evicted" log line, the list, stats evictions); an
# attached model is never evicted, nor one pinned by --pin or mbctl pin;
# when nothing can be evicted the load fails with no_space naming what
# holds the memory, and when evicting all that may go would not make room
# nothing goes; when the room is there, nothing is evicted.
. "$(dirname "$0")/lib.sh"

D="$T/models"
mkdir -p "$D"
for i in 1 2 3 4 5; do
	make_model --raw --seed "$i" "$D/m$i.bin" 1048576
done
make_model --raw "$D/big.bin" 2621440
ATTACHER=(/usr/bin/python3 "$(dirname "$0")/../tools/attacher.py" "$SOCK")
start_broker --model-dir "$D" --max-shm-bytes 3584K --pin m5

# ready_models: the names of the READY models, sorted, on one line.
ready_models() {
	mbctl --json list | /usr/bin/python3 -c '
import json, sys
print(" ".join(sorted(m["name"] for m in json.load(sys.stdin)["models"]
                      if m["state"] == "READY")))'
}
expect_ready() {
	[ "$(ready_models)" = "$1" ] || fail "READY: '$(ready_models)', not '$1'"
}
evictions_are() { # COUNT: the log's "evicted" lines and stats agree
	local lines
	lines=$(grep -c ": evicted to make room for " "$BROKER_LOG" || true)
	[ "$lines" -eq "$1" ] || fail "$lines evicted lines, not $1: $(grep evicted "$BROKER_LOG")"
	[ "$(mbctl --json stats | json_int evictions)" = "$1" ] ||
		fail "stats evictions: $(mbctl --json stats)"
}
load_ok() {
	mbctl load "$1" --wait >"$T/out" 2>&1 || fail "load $1: $(cat "$T/out")"
}

# Three fit: no eviction.
load_ok m1
load_ok m2
load_ok m3
expect_ready "m1 m2 m3"
evictions_are 0
# m1 is used (attached and let go); m3 is held from now on.  Least
# recently used first: m2, m1; m3 is never a candidate.
"${ATTACHER[@]}" m1 >"$T/att" || fail "attach m1: $(cat "$T/att")"
start_worker m3
wait_attached 1
holder=$WORKER_PID

load_ok m4
assert_log "model m2: evicted to make room for m4"
evictions_are 1
expect_ready "m1 m3 m4"
load_ok m5
assert_log "model m1: evicted to make room for m5"
evictions_are 2
expect_ready "m3 m4 m5"

# Pinned by --pin (m5) and by mbctl pin (m4), m3 held: nothing can go.
mbctl pin m4 >"$T/out" || fail "pin: $(cat "$T/out")"
grep -q "^m4 pinned (loaded)$" "$T/out" || fail "pin said $(cat "$T/out")"
mbctl --json list | /usr/bin/python3 -c '
import json, sys
mods = {m["name"]: m for m in json.load(sys.stdin)["models"]}
assert mods["m4"]["pinned"] and mods["m5"]["pinned"], mods
assert not mods["m3"]["pinned"], mods
assert mods["m4"]["reason"] == "explicit", mods
assert mods["m3"]["keep_alive_ms"] == -1, mods' || fail "list: $(mbctl --json list)"
mbctl list | grep -q "^m4  *READY .* explicit  *pinned " || fail "list: $(mbctl list)"
status=0
mbctl load m1 --wait >"$T/out" 2>&1 || status=$?
[ "$status" -eq 1 ] || fail "a load with no room exited $status: $(cat "$T/out")"
grep -q "(not enough shared memory)" "$T/out" || fail "not no_space: $(cat "$T/out")"
for what in m3 "$holder" m4 m5 pinned; do
	grep -q "$what" "$T/out" || fail "no_space does not name $what: $(cat "$T/out")"
done
evictions_are 2
expect_ready "m3 m4 m5"

# Unpinned, m4 is the one to go.
mbctl unpin m4 >"$T/out" || fail "unpin: $(cat "$T/out")"
grep -q "^m4 unpinned (loaded)$" "$T/out" || fail "unpin said $(cat "$T/out")"
load_ok m1
assert_log "model m4: evicted to make room for m1"
evictions_are 3
expect_ready "m1 m3 m5"
grep -q "model m3: evicted" "$BROKER_LOG" && fail "the held m3 was evicted"
grep -q "model m5: evicted" "$BROKER_LOG" && fail "the pinned m5 was evicted"

# When evicting every candidate (m1) would not make room either, nothing
# is evicted: no_space.
status=0
mbctl load big --wait >"$T/out" 2>&1 || status=$?
[ "$status" -eq 1 ] && grep -q "(not enough shared memory)" "$T/out" ||
	fail "a load that cannot fit: exit $status, $(cat "$T/out")"
evictions_are 3
expect_ready "m1 m3 m5"

# Room made by hand: a load evicts nothing.
mbctl unload m1 >/dev/null || fail "unload m1 failed"
load_ok m2
evictions_are 3
expect_ready "m2 m3 m5"
shutdown_clean
