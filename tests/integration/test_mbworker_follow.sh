# SPDX-License-Identifier: MIT
# mbworker follows replacements (needs a broker that replaces, issue 10):
# two workers move to each new generation as `mbctl reload` makes it, every
# pass of theirs reads one whole, checksum-valid generation that never goes
# back, and each says at exit that it was replaced twice and served 0 ms
# without a model; a --no-follow worker stays on the first generation,
# which `mbctl list` shows draining with its pid, while the generation in
# between, held by nobody, is gone at once.
. "$(dirname "$0")/lib.sh"

make_model "$T/m.safetensors" 2000000
start_broker --model "w=$T/m.safetensors"
wait_until 10 state_is w READY || fail "no model"
start_worker w --verbose --interval 5
follower1=$WORKER_PID log1=$WORKER_LOG
start_worker w --verbose --interval 5
follower2=$WORKER_PID log2=$WORKER_LOG
start_worker w --verbose --no-follow
stayer=$WORKER_PID stayer_log=$WORKER_LOG
wait_attached 3
g1=$(mbctl --json list | json_int generation)

# reload_and_follow: a replace, and both followers on its generation,
# which it puts in GEN.
reload_and_follow() {
	local from gen
	from=$(mbctl --json list | json_int generation)
	mbctl reload w --wait --drain-timeout 60 >"$T/reload.out" ||
		fail "reload: $(cat "$T/reload.out")"
	gen=$(mbctl --json list | json_int generation)
	[ "$gen" -gt "$from" ] || fail "reload left generation $gen"
	for log in "$log1" "$log2"; do
		wait_until 10 grep -q "followed w from generation $from to $gen, checksum ok" "$log" ||
			fail "a worker did not follow to $gen: $(tail -n 3 "$log")"
	done
	GEN=$gen
}
reload_and_follow
g2=$GEN
reload_and_follow
g3=$GEN

# The stayer holds g1 (draining); g2, held by nobody, is gone.
mbctl list >"$T/list"
grep -q "^  draining  *DRAINING .* $g1 *1  deadline in .*, pids $stayer$" "$T/list" ||
	fail "list does not show $g1 draining: $(cat "$T/list")"
awk -v g="$g2" '/^  / && $5 == g { found = 1 } END { exit !found }' "$T/list" &&
	fail "$g2 still listed: $(cat "$T/list")"
segments=$(instance_shm | grep -c "\.model\.w\.")
[ "$segments" -eq 2 ] || fail "$segments segments of w, not 2: $(instance_shm)"
# A pass of the stayer after the last reload still reads g1, whole.
n=$(grep -c "pass .* generation $g1 checksum ok" "$stayer_log")
wait_until 10 sh -c "[ \$(grep -c 'pass .* generation $g1 checksum ok' '$stayer_log') -gt $n ]" ||
	fail "the --no-follow worker stopped reading $g1"

mbctl unload w >/dev/null || fail "unload failed"
for pid in "$follower1" "$follower2" "$stayer"; do
	worker_exited_with "$pid" 0
done
for log in "$log1" "$log2"; do
	grep -q "^mbworker: replaced 2 time(s), served without a model 0 ms$" "$log" ||
		fail "exit line: $(grep replaced "$log")"
	grep "pass [0-9]* generation" "$log" | grep -v "checksum ok$" &&
		fail "a pass read a bad generation"
	# Generations never go back, and the last passes read g3.
	sed -n 's/.* pass [0-9]* generation \([0-9]*\) .*/\1/p' "$log" |
		sort -c -n || fail "a pass read an older generation"
	grep "pass [0-9]* generation" "$log" | tail -n 1 | grep -q "generation $g3 " ||
		fail "last pass: $(grep pass "$log" | tail -n 1)"
done
grep -q "^mbworker: replaced 0 time(s), served without a model 0 ms$" "$stayer_log" ||
	fail "--no-follow exit line: $(grep replaced "$stayer_log")"
grep -q "generation $g2\|generation $g3" "$stayer_log" &&
	fail "the --no-follow worker followed"
shutdown_clean
