# SPDX-License-Identifier: MIT
# A model replaced twice under live traffic (issue 10's proof): 8 workers
# run back-to-back passes over generation 1, each pass checking the
# checksum of everything it read; the model is replaced by two files of
# different content.  Every pass of every worker reads one whole,
# checksum-valid generation (never a mix, never zeros, never an error),
# generations never go back, every worker ends on the newest and held a
# model at every moment; one generation's segment remains, the budget and
# Shmem return to one copy.
. "$(dirname "$0")/lib.sh"

size=16000000
for seed in 1 2 3; do
	make_model --seed "$seed" "$T/m$seed.safetensors" "$size"
done
start_broker
load w "$T/m1.safetensors"
shmem_at_rest() { mbctl --json stats | json_int shmem_kb; }
workers=()
logs=()
for _ in $(seq 8); do
	start_worker w --verbose --interval 0
	workers+=("$WORKER_PID")
	logs+=("$WORKER_LOG")
done
wait_attached 8
g1=$(mbctl --json list | json_int generation)
# Every worker has done passes over generation 1 before the first replace.
for log in "${logs[@]}"; do
	wait_until 20 grep -q "pass [0-9]* generation $g1 checksum ok" "$log" ||
		fail "a worker made no pass over $g1: $(tail -n 3 "$log")"
done
shmem_before=$(shmem_at_rest)

# replace_with FILE: a replace under load, all 8 workers on the new
# generation (put in GEN) and the old one drained.
replace_with() {
	local from gen
	from=$(mbctl --json list | json_int generation)
	mbctl load w "$1" --replace --wait --drain-timeout 60 >"$T/replace.out" ||
		fail "replace with $1: $(cat "$T/replace.out")"
	gen=$(mbctl --json list | json_int generation)
	[ "$gen" -gt "$from" ] || fail "the replace left generation $gen"
	for log in "${logs[@]}"; do
		wait_until 20 grep -q "followed w from generation $from to $gen, checksum ok" "$log" ||
			fail "a worker did not follow to $gen: $(tail -n 3 "$log")"
		n=$(grep -c "pass [0-9]* generation $gen checksum ok" "$log" || true)
		wait_until 20 sh -c "[ \$(grep -c 'pass [0-9]* generation $gen checksum ok' '$log') -gt $n ]" ||
			fail "no pass over $gen: $(tail -n 3 "$log")"
	done
	wait_until 20 sh -c "[ \$('$BIN/mbctl' --socket '$SOCK' --json list | grep -o '\"role\"' | wc -l) -eq 1 ]" ||
		fail "the old generation did not drain: $(mbctl list)"
	GEN=$gen
}
replace_with "$T/m2.safetensors"
replace_with "$T/m3.safetensors"
g3=$GEN

# One generation, one segment, one copy in the budget and in Shmem.
segments=$(instance_shm | grep -c "\.model\.w\.")
[ "$segments" -eq 1 ] || fail "$segments segments of w: $(instance_shm)"
instance_shm | grep -q "\.model\.w\.$g3-" || fail "the segment left is not $g3's"
reserved=$(mbctl --json stats | json_int bytes_reserved)
one=$(stat -c %s "$T/m3.safetensors")
[ "$reserved" -eq "$one" ] || fail "$reserved bytes reserved, not $one"
shmem_after=$(shmem_at_rest)
[ $((shmem_after - shmem_before)) -lt $((size / 1024 / 2)) ] ||
	fail "Shmem $shmem_before kB at rest, $shmem_after kB after two replaces"
[ "$(mbctl --json stats | json_int replaces)" -eq 2 ] || fail "replaces not counted"

mbctl unload w >/dev/null || fail "unload failed"
for pid in "${workers[@]}"; do
	worker_exited_with "$pid" 0
done
for log in "${logs[@]}"; do
	grep -q "^mbworker: replaced 2 time(s), served without a model 0 ms$" "$log" ||
		fail "exit line: $(grep replaced "$log")"
	passes=$(grep -c "pass [0-9]* generation" "$log")
	ok=$(grep -c "pass [0-9]* generation [0-9]* checksum ok$" "$log")
	[ "$passes" -gt 0 ] && [ "$passes" -eq "$ok" ] ||
		fail "$((passes - ok)) of $passes passes did not read a whole generation"
	grep -qi "error\|mismatch" "$log" && fail "a worker saw an error: $(grep -i "error\|mismatch" "$log")"
	sed -n 's/.* pass [0-9]* generation \([0-9]*\) .*/\1/p' "$log" |
		sort -c -n || fail "a pass read an older generation"
	grep "pass [0-9]* generation" "$log" | tail -n 1 | grep -q "generation $g3 " ||
		fail "last pass: $(grep pass "$log" | tail -n 1)"
done
shutdown_clean
