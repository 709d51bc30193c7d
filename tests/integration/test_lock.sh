# SPDX-License-Identifier: MIT
# --lock keeps models in memory: a --max-shm-bytes budget that
# RLIMIT_MEMLOCK cannot lock is refused at start with the reason; without
# a budget, a load beyond RLIMIT_MEMLOCK is refused with no_space and the
# reason; with a soft limit below the hard one, the broker raises it, and
# then a model and every member of a bundle that fit show all their pages
# Locked in the broker's /proc/PID/smaps, and an unloaded model's pages
# are no longer locked (its mapping is gone) while the other's stay.
# Needs a hard RLIMIT_MEMLOCK of 8 MiB at least (the usual default).
. "$(dirname "$0")/lib.sh"

hard=$(ulimit -H -l)
[ "$hard" = unlimited ] || [ "$hard" -ge 8192 ] ||
	skip "the hard RLIMIT_MEMLOCK is $hard KiB, less than 8 MiB"
# "${with_memlock[@]}" WHICH KIB CMD...: CMD, in the same process, with
# RLIMIT_MEMLOCK's soft limit (-S) or both (-SH) at KIB.
with_memlock=(bash -c 'ulimit "$0" -l "$1" && shift && exec "$@"')
# locked_kb NAME: kilobytes Locked in the broker's mappings of segments
# of model NAME (each member's), or nothing when it maps none.
locked_kb() {
	awk -v seg="/dev/shm/mbroker.$INSTANCE.model.$1." '
		/^[0-9a-f]+-[0-9a-f]+ / { ours = index($NF, seg) == 1 }
		ours && /^Locked:/ { kb += $2; seen = 1 }
		END { if (seen) print kb }' "/proc/$BROKER_PID/smaps"
}

make_model --raw "$T/m.bin" 4194304
mkdir "$T/b"
make_model --raw "$T/b/one" 1000000
make_model --raw --seed 2 "$T/b/two" 300000

# A budget that cannot be locked: the broker does not start.
status=0
"${with_memlock[@]}" -SH 1024 "$BIN/mbrokerd" --socket "$SOCK" --instance "$INSTANCE" \
	--lock --max-shm-bytes 4M 2>"$T/refused.log" || status=$?
[ "$status" -eq 2 ] || fail "start with a budget above RLIMIT_MEMLOCK: exit $status"
grep -q "RLIMIT_MEMLOCK is 1048576 bytes.*less than the --max-shm-bytes budget of 4194304" \
	"$T/refused.log" || fail "no reason: $(cat "$T/refused.log")"
[ ! -e "$SOCK" ] || fail "a refused broker left its socket"

# No budget: a load beyond what may be locked is refused.
BROKER_WRAPPER=("${with_memlock[@]}" -SH 2048)
start_broker --lock
if mbctl --json load m "$T/m.bin" --wait >"$T/load.log" 2>&1; then
	fail "a 4 MiB load under a 2 MiB RLIMIT_MEMLOCK was accepted"
fi
grep -q '"no_space"' "$T/load.log" && grep -q "RLIMIT_MEMLOCK" "$T/load.log" ||
	fail "refusal: $(cat "$T/load.log")"
mbctl shutdown >/dev/null
wait_broker_exit 10

# Enough once the soft limit is raised to the hard one: every page of
# every segment is locked until its model goes.
BROKER_WRAPPER=("${with_memlock[@]}" -S 1024)
start_broker --lock --max-shm-bytes 6M
grep -q "RLIMIT_MEMLOCK .*(was 1048576)" "$BROKER_LOG" ||
	fail "the soft limit was not raised: $(cat "$BROKER_LOG")"
mbctl load m "$T/m.bin" --wait >/dev/null || fail "load m"
mbctl load b "$T/b" --wait >"$T/bundle.log" 2>&1 || fail "load b: $(cat "$T/bundle.log")"
[ "$(locked_kb m)" = 4096 ] || fail "m: $(locked_kb m) kB locked, not 4096"
[ "$(locked_kb b)" = $(((1000000 + 4095) / 4096 * 4 + (300000 + 4095) / 4096 * 4)) ] ||
	fail "b: $(locked_kb b) kB locked"
start_worker m --passes 1
worker_exited_with "$WORKER_PID" 0
mbctl unload m >/dev/null || fail "unload m"
wait_until 10 test -z "$(locked_kb m)" || fail "m still locked: $(locked_kb m) kB"
[ -n "$(locked_kb b)" ] || fail "b unlocked with m"
