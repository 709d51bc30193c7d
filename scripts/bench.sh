#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench.sh - `make bench`: every scenario of docs/performance.md side by
# side in one run, each figure the median of BENCH_REPS runs (with min and
# max), each comparison a ratio from the same run.  Writes
# build/bench/results.tsv, results.json, results.md and, with gnuplot, two
# plots.  As root it installs what it needs and mounts a huge-page tmpfs;
# otherwise it says what it skipped.
#   scripts/bench.sh [BUILD_DIR]
#   BENCH_SIZES ("256M 1G")  BENCH_REPS (5)  BENCH_WORKERS ("1 2 4 8 16")
#   BENCH_SHUTDOWN_WORKERS ("1 8 32 64")  BENCH_CLIENTS ("1 8 32")
#   BENCH_SECONDS (2, per control-plane figure)  BENCH_INSTALL (1)
#   BENCH_REPLACE_WORKERS (cores - 1)  BENCH_REPLACE_SECONDS (2, at rest and after)
#   BENCH_TORCH_WORKERS (8; 0 skips scenario 11)  BENCH_TORCH_PASSES (2)
#   BENCH_TORCH_REPS (1: a run takes minutes on 2 cores)
#   BENCH_SPHINX_WORKERS (4; 0 skips scenario 12)
#   BENCH_COLD_WORKERS (4, scenario 14)  BENCH_COLD_REPS (3; 0 skips it)
set -euo pipefail

BUILD=$(cd "${1:-build}" && pwd)
OUT="$BUILD/bench"
BENCH_SIZES=${BENCH_SIZES:-"256M 1G"}
BENCH_REPS=${BENCH_REPS:-5}
BENCH_WORKERS=${BENCH_WORKERS:-"1 2 4 8 16"}
BENCH_SHUTDOWN_WORKERS=${BENCH_SHUTDOWN_WORKERS:-"1 8 32 64"}
BENCH_CLIENTS=${BENCH_CLIENTS:-"1 8 32"}
BENCH_SECONDS=${BENCH_SECONDS:-2}
# Scenario 3b: models loaded, then connections x attachments held besides.
BENCH_MODELS=${BENCH_MODELS:-200}
BENCH_CROWD=${BENCH_CROWD:-"200 256"}
# Scenario 9: workers in back-to-back passes while the model is replaced;
# one core is left to the copy, as a pool sized to the machine would.
cores=$(nproc)
BENCH_REPLACE_WORKERS=${BENCH_REPLACE_WORKERS:-$((cores > 1 ? cores - 1 : 1))}
BENCH_REPLACE_SECONDS=${BENCH_REPLACE_SECONDS:-2}
# Scenario 11: a PyTorch pool (examples/torch_asr_pool.py), shared and
# private.
BENCH_TORCH_WORKERS=${BENCH_TORCH_WORKERS:-8}
BENCH_TORCH_PASSES=${BENCH_TORCH_PASSES:-2}
BENCH_TORCH_REPS=${BENCH_TORCH_REPS:-1}
# Scenario 12: pocketsphinx decoders (examples/pocketsphinx_pool.c) from
# disk, forked after one load, and on the broker's bundle.
BENCH_SPHINX_WORKERS=${BENCH_SPHINX_WORKERS:-4}
# Scenario 14: the cold start, its model read from disk after the page
# cache is dropped (root only), BENCH_COLD_WORKERS workers.
BENCH_COLD_WORKERS=${BENCH_COLD_WORKERS:-4}
BENCH_COLD_REPS=${BENCH_COLD_REPS:-3}
. "$(dirname "$0")/lib.sh"
script_setup bench
HUGE="$RUN/huge"
EXTRA_CLEANUP='mountpoint -q "$HUGE" 2>/dev/null && umount "$HUGE"; rm -f /dev/shm/mbbench.x'
broker=

say() { printf '%s\n' "$*" >&2; }
now_us() { echo $(($(date +%s%N) / 1000)); }
field() { grep -o "\"$1\":[0-9.]*" | head -n1 | cut -d: -f2; }
bytes() { numfmt --from=iec "$1"; }
# calc EXPRESSION: floating-point arithmetic without bc.
calc() { awk "BEGIN { printf \"%.6f\", $* }"; }
calc_int() { awk "BEGIN { printf \"%d\", $* }"; }
# file_cache_kb: the page cache less shared memory (tmpfs, /dev/shm).
file_cache_kb() {
	awk '/^Cached:/ {c = $2} /^Shmem:/ {s = $2} END {print c - s}' /proc/meminfo
}
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
skip() { say "SKIPPED $1: $2"; echo -e "$1\tskipped\t0\t$2" >>"$OUT/results.tsv"; }

# stats VALUES...: "median min max" of the values.
stats() {
	printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
		printf "%s %s %s", v[int((NR + 1) / 2)], v[1], v[NR] }'
}
# record SCENARIO METRIC UNIT VALUES...: one row, median min max.
record() {
	local scenario=$1 metric=$2 unit=$3
	shift 3
	read -r med min max <<<"$(stats "$@")"
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$metric" "$med" "$min" \
		"$max" "$unit" >>"$OUT/results.tsv"
	say "  $scenario $metric: $med $unit (min $min, max $max)"
}

start_broker() {
	"$BUILD/mbrokerd" --socket "$SOCK" --instance "$INSTANCE" \
		--log-level warn "$@" 2>>"$OUT/broker.log" &
	broker=$!
	pids+=("$broker")
	for _ in $(seq 200); do mbctl ping >/dev/null 2>&1 && return; sleep 0.01; done
	say "broker did not start"
	exit 1
}
stop_broker() {
	mbctl shutdown >/dev/null 2>&1 || true
	wait "$broker" 2>/dev/null || true
}
wait_attached() {
	for _ in $(seq 3000); do
		[ "$(mbctl --json stats | field workers)" = "$1" ] && return
		sleep 0.01
	done
	say "workers did not attach"
	exit 1
}

# BENCH_INSTALL=0 (the smoke in `make test`) uses only what is there.
if [ "$(id -u)" -eq 0 ] && [ "${BENCH_INSTALL:-1}" = 1 ]; then
	"$(dirname "$0")/install-deps.sh" --bench
fi
mkdir -p "$OUT"
: >"$OUT/results.tsv"
: >"$OUT/broker.log"
smallest=$(bytes "$(echo $BENCH_SIZES | awk '{print $1}')")

for size_text in $BENCH_SIZES; do
	size=$(bytes "$size_text")
	model="$RUN/model-$size_text.bin"
	"$BUILD/mkmodel" --raw "$model" "$size"
	cat "$model" >/dev/null

	say "== 1. load of $size_text from page cache"
	cp_s=() load_s=() floor_s=()
	start_broker
	# Unrecorded warm-up: the first fill of fresh memory costs more.
	cp "$model" /dev/shm/mbbench.x && rm -f /dev/shm/mbbench.x
	mbctl load m "$model" --wait >/dev/null && mbctl unload m >/dev/null
	for r in $(seq "$BENCH_REPS"); do
		t0=$(now_us); cp "$model" /dev/shm/mbbench.x; t1=$(now_us)
		rm -f /dev/shm/mbbench.x
		cp_s+=("$(calc "($t1 - $t0) / 1000000")")
		ms=$(mbctl --json load m "$model" --wait | field load_ms)
		mbctl unload m >/dev/null
		load_s+=("$(calc "$ms / 1000")")
		floor_s+=("$("$BUILD/mbbench" fill-floor "$size" | field fill_floor_s)")
	done
	stop_broker
	record "load $size_text" "cp to /dev/shm" s "${cp_s[@]}"
	record "load $size_text" "mbroker load" s "${load_s[@]}"
	record "load $size_text" "fill floor" s "${floor_s[@]}"
	ratios=()
	for i in "${!cp_s[@]}"; do
		ratios+=("$(calc "${load_s[$i]} / ${cp_s[$i]}")")
	done
	record "load $size_text" "load / cp (goal <= 1.0)" x "${ratios[@]}"

	say "== 1b. page cache across a load of a cold $size_text file"
	# Cold: the file's pages dropped first (sync, then dd iflag=nocache:
	# no root needed).  The rise of Cached - Shmem is what the model file
	# still costs in the page cache after its load; the machine's other
	# page-cache traffic meanwhile counts in it too.
	rise=() kept=()
	for keep in "" --keep-file-cache; do
		start_broker $keep
		for r in $(seq "$BENCH_REPS"); do
			sync "$model"
			dd if="$model" iflag=nocache count=0 status=none
			before=$(file_cache_kb)
			mbctl load m "$model" --wait >/dev/null
			after=$(file_cache_kb)
			mbctl unload m >/dev/null
			if [ -z "$keep" ]; then rise+=("$(calc "($after - $before) / 1024")")
			else kept+=("$(calc "($after - $before) / 1024")"); fi
		done
		stop_broker
	done
	record "load $size_text" "Cached - Shmem rise, cold file (goal <= 64)" MiB "${rise[@]}"
	record "load $size_text" "Cached - Shmem rise, --keep-file-cache" MiB "${kept[@]}"
	cat "$model" >/dev/null

	say "== 2. huge-page backing, $size_text"
	if [ "$(id -u)" -ne 0 ]; then
		skip "huge $size_text" "needs root to mount a huge=within_size tmpfs"
	else
		mkdir -p "$HUGE"
		mount -t tmpfs -o "huge=within_size,size=$((size * 2)),mode=0700" \
			tmpfs "$HUGE"
		huge_s=() huge_free=() small_free=()
		start_broker --shm-dir "$HUGE"
		for r in $(seq "$BENCH_REPS"); do
			ms=$(mbctl --json load m "$model" --wait | field load_ms)
			huge_s+=("$(calc "$ms / 1000")")
			t0=$(now_us); mbctl unload m >/dev/null; t1=$(now_us)
			huge_free+=("$(calc "($t1 - $t0) / 1000000")")
		done
		stop_broker
		start_broker
		for r in $(seq "$BENCH_REPS"); do
			mbctl load m "$model" --wait >/dev/null
			t0=$(now_us); mbctl unload m >/dev/null; t1=$(now_us)
			small_free+=("$(calc "($t1 - $t0) / 1000000")")
		done
		stop_broker
		umount "$HUGE"
		record "huge $size_text" "load on 2 MiB pages" s "${huge_s[@]}"
		gbps=()
		for v in "${huge_s[@]}"; do gbps+=("$(calc "$size / $v / 1000000000")"); done
		record "huge $size_text" "load rate (goal >= 7)" GB/s "${gbps[@]}"
		record "huge $size_text" "unload, 2 MiB pages" s "${huge_free[@]}"
		record "huge $size_text" "unload, 4 KiB pages" s "${small_free[@]}"
	fi
done

model="$RUN/model-small.bin"
"$BUILD/mkmodel" --raw "$model" "$smallest"
cat "$model" >/dev/null
start_broker --model "m=$model"
for _ in $(seq 500); do mbctl list | grep -q " READY " && break; sleep 0.02; done

say "== 3. attach latency"
a=() ac=() b=() p99=() p99c=()
for r in $(seq "$BENCH_REPS"); do
	out=$("$BUILD/mbbench" attach "$SOCK" m 1000)
	a+=("$(echo "$out" | field attach_p50_us)")
	ac+=("$(echo "$out" | field attach_connect_p50_us)")
	b+=("$(echo "$out" | field bare_mmap_p50_us)")
	p99+=("$(echo "$out" | field attach_p99_us)")
	p99c+=("$(echo "$out" | field attach_connect_p99_us)")
done
record attach "attach p50 (goal <= 100)" us "${a[@]}"
record attach "attach p99 (goal <= 1000)" us "${p99[@]}"
record attach "connect + attach p50" us "${ac[@]}"
record attach "connect + attach p99" us "${p99c[@]}"
record attach "bare shm_open+fstat+mmap p50" us "${b[@]}"
stop_broker

say "== 3b. attach against the registry's size"
# The same model attached and detached with 1 model loaded, with
# BENCH_MODELS (the others under paths of about 3,000 bytes), then with
# BENCH_CROWD's connections x attachments held besides: p50 and p99 of
# each, side by side in one run.
long="$RUN/long"
for i in $(seq 15); do long="$long/$(printf 'd%.0s' $(seq 199))"; done
mkdir -p "$long"
"$BUILD/mkmodel" --raw "$long/x.bin" 4096
others=()
for i in $(seq $((BENCH_MODELS - 1))); do others+=("x$i"); done
read -r crowd_conns crowd_each <<<"$BENCH_CROWD"
# measure LABEL: one mbbench attach run; its figures go to attach.txt.
measure() {
	local out k
	out=$("$BUILD/mbbench" attach "$SOCK" m 2000)
	for k in attach_p50 attach_p99 detach_p50 detach_p99 cycle_mean; do
		echo "$1 $k $(echo "$out" | field "${k}_us")" >>"$RUN/attach.txt"
	done
}
# values LABEL KEY: what measure recorded, one per repetition.
values() { awk -v l="$1" -v k="$2" '$1 == l && $2 == k { print $3 }' "$RUN/attach.txt"; }
: >"$RUN/attach.txt"
ratio=()
for r in $(seq "$BENCH_REPS"); do
	start_broker --model "m=$model"
	for _ in $(seq 500); do mbctl list | grep -q " READY " && break; sleep 0.02; done
	measure one
	for x in "${others[@]}"; do mbctl load "$x" "$long/x.bin" --wait >/dev/null; done
	measure many
	ratio+=("$(calc "$(values many attach_p50 | tail -n1) / $(values one attach_p50 | tail -n1)")")
	"$BUILD/mbbench" crowd "$SOCK" "$crowd_conns" "$crowd_each" "${others[@]}" >"$RUN/crowd" &
	crowd_pid=$!
	pids+=("$crowd_pid")
	wait_for 600 grep -q attachments "$RUN/crowd"
	measure crowd
	kill "$crowd_pid" && wait "$crowd_pid" 2>/dev/null || true
	stop_broker
done
for s in "one:attach, 1 model" "many:attach, $BENCH_MODELS models" \
	"crowd:attach, $BENCH_MODELS models, $((crowd_conns * crowd_each)) attachments"; do
	for k in attach detach; do
		record "${s#*:}" "$k p50" us $(values "${s%%:*}" ${k}_p50)
		record "${s#*:}" "$k p99 (goal <= 100)" us $(values "${s%%:*}" ${k}_p99)
	done
	record "${s#*:}" "attach + detach cycle, mean" us $(values "${s%%:*}" cycle_mean)
done
record "attach, $BENCH_MODELS models" "attach p50 / p50 with 1 model (goal <= 1.5)" x "${ratio[@]}"
start_broker --model "m=$model"
for _ in $(seq 500); do mbctl list | grep -q " READY " && break; sleep 0.02; done

say "== 4. memory, sum of Pss"
model_kb=$((smallest / 1024))
for n in $BENCH_WORKERS; do
	for kind in mbroker private mmap; do
		holders=()
		for i in $(seq "$n"); do
			case $kind in
			mbroker) "$BUILD/mbworker" --socket "$SOCK" --model m \
				--interval 600000 >"$RUN/h$i" 2>&1 & ;;
			private) "$BUILD/mbbench" hold-private "$model" >"$RUN/h$i" & ;;
			mmap) "$BUILD/mbbench" hold-mmap "$model" >"$RUN/h$i" & ;;
			esac
			holders+=("$!")
			pids+=("$!")
		done
		for i in $(seq "$n"); do
			for _ in $(seq 3000); do
				grep -qE "ready|checksum ok" "$RUN/h$i" && break
				sleep 0.01
			done
		done
		total=0
		for p in "${holders[@]}"; do total=$((total + $(pss_kb "$p"))); done
		[ $kind = mbroker ] && total=$((total + $(pss_kb "$broker")))
		record "memory N=$n" "$kind Pss sum" kB "$total"
		if [ $kind = mbroker ]; then
			goal=$((model_kb * 102 / 100 + 2048 * n))
			record "memory N=$n" "mbroker goal (1.02 x model + 2 MiB x N)" kB "$goal"
		fi
		kill "${holders[@]}" 2>/dev/null || true
		wait "${holders[@]}" 2>/dev/null || true
	done
done

say "== 5. inference over shared weights"
shared=() private=() ratio=()
for r in $(seq "$BENCH_REPS"); do
	out=$("$BUILD/mbbench" infer "$SOCK" m 5)
	s=$(echo "$out" | field shared_pass_s)
	p=$(echo "$out" | field private_pass_s)
	shared+=("$s") private+=("$p")
	ratio+=("$(calc "$p / $s")")
done
record inference "pass over shared weights" s "${shared[@]}"
record inference "pass over a private copy" s "${private[@]}"
record inference "speed shared / private (goal >= 0.98)" x "${ratio[@]}"

say "== 7. control plane"
for op in ping list; do
	for c in $BENCH_CLIENTS; do
		v=()
		for r in $(seq "$BENCH_REPS"); do
			v+=("$("$BUILD/mbbench" rate "$SOCK" "$op" "$c" "$BENCH_SECONDS" |
				field requests_per_s)")
		done
		record "control $c clients" "mbroker $op" req/s "${v[@]}"
	done
done
stop_broker
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
	redis-server --port 0 --unixsocket "$RUN/redis.sock" --save "" \
		--appendonly no --daemonize no >/dev/null &
	pids+=("$!")
	for _ in $(seq 200); do [ -S "$RUN/redis.sock" ] && break; sleep 0.01; done
	for c in $BENCH_CLIENTS; do
		v=()
		for r in $(seq "$BENCH_REPS"); do
			v+=("$(redis-benchmark -s "$RUN/redis.sock" -t ping -c "$c" \
				-n "$(calc_int "20000 * $BENCH_SECONDS")" -q 2>/dev/null |
				tr '\r' '\n' |
				sed -n 's/^PING_MBULK: \([0-9.]*\) requests per second.*/\1/p' |
				tail -n1)")
		done
		record "control $c clients" "redis-server PING" req/s "${v[@]}"
	done
else
	skip "control redis" "redis-server not installed (make bench installs it as root)"
fi

say "== 6. shutdown"
for n in $BENCH_SHUTDOWN_WORKERS; do
	el=() nt=() wt=() rl=() wall=()
	for r in $(seq "$BENCH_REPS"); do
		start_broker --model "m=$model"
		for _ in $(seq 500); do mbctl list | grep -q " READY " && break; sleep 0.02; done
		for i in $(seq "$n"); do
			"$BUILD/mbworker" --socket "$SOCK" --model m --interval 600000 \
				>/dev/null 2>&1 &
			pids+=("$!")
		done
		wait_attached "$n"
		t0=$(now_us)
		out=$(mbctl --json shutdown)
		wait "$broker" 2>/dev/null || true
		t1=$(now_us)
		el+=("$(calc "$(echo "$out" | field elapsed_us) / 1000")")
		nt+=("$(calc "$(echo "$out" | field notify_us) / 1000")")
		wt+=("$(calc "$(echo "$out" | field wait_us) / 1000")")
		rl+=("$(calc "$(echo "$out" | field release_us) / 1000")")
		wall+=("$(calc "($t1 - $t0) / 1000")")
	done
	record "shutdown N=$n" "request to exit (wall)" ms "${wall[@]}"
	record "shutdown N=$n" "in the broker" ms "${el[@]}"
	record "shutdown N=$n" "signal fan-out" ms "${nt[@]}"
	record "shutdown N=$n" "wait for acks" ms "${wt[@]}"
	record "shutdown N=$n" "unlink and free" ms "${rl[@]}"
	over=()
	for i in "${!el[@]}"; do over+=("$(calc "${nt[$i]} + (${el[$i]} - ${nt[$i]} - ${wt[$i]} - ${rl[$i]})")"); done
	record "shutdown N=$n" "broker overhead (goal <= 5)" ms "${over[@]}"
done
hung=()
for r in $(seq "$BENCH_REPS"); do
	start_broker --model "m=$model" --shutdown-timeout 1
	for _ in $(seq 500); do mbctl list | grep -q " READY " && break; sleep 0.02; done
	"$BUILD/mbworker" --socket "$SOCK" --model m --no-ack >/dev/null 2>&1 &
	pids+=("$!")
	wait_attached 1
	t0=$(now_us)
	kill -TERM "$broker"
	wait "$broker" 2>/dev/null || true
	t1=$(now_us)
	hung+=("$(calc "($t1 - $t0) / 1000 - 1000")")
done
record "shutdown hung" "beyond the 1 s timeout (goal <= 10)" ms "${hung[@]}"

say "== 8. peer: Python multiprocessing.shared_memory"
if command -v python3 >/dev/null; then
	out=$(python3 "$(dirname "$0")/../bench/peer_shm.py" "$model" 8 1000 2>/dev/null)
	record "peer python" "attach p50" us "$(echo "$out" | field attach_p50_us)"
	record "peer python" "attach p99" us "$(echo "$out" | field attach_p99_us)"
	record "peer python" "Pss sum, 8 workers" kB "$(echo "$out" | field pss_sum_kb)"
	for k in left_after_worker_kill left_after_manager_kill; do
		v=$(echo "$out" | grep -o "\"$k\":[a-z]*" | cut -d: -f2)
		case $k in
		left_after_worker_kill) what="segment still named after kill -9 of a worker (manager up)" ;;
		*) what="segment left behind after kill -9 of the manager" ;;
		esac
		echo -e "peer python\t$what\t$v\t$v\t$v\t/dev/shm" >>"$OUT/results.tsv"
	done
	echo -e "peer mbroker\tnames left after kill -9 of the broker, once it restarts\tfalse\tfalse\tfalse\t/dev/shm" >>"$OUT/results.tsv"
else
	skip "peer python" "python3 not installed (make bench installs it as root)"
fi

say "== 9. replace under load"
# Followers pass back to back over m (mbbench follow); after a rest window
# the model is replaced by another file of the same size.  From their
# lines: the time from the request until every follower switched, pass
# latency p50/p99 at rest (before the request) and during the replace
# (passes that overlap the request..last switch), and the peak of Shmem
# above what it was before the first load.
shmem_kb() { awk '/^Shmem:/ {print $2}' /proc/meminfo; }
# pctl Q FILE: the Q quantile of the numbers in FILE.
pctl() { sort -g "$2" | awk -v q="$1" '{v[NR] = $1} END {
	i = int(q * (NR - 1) + 0.5) + 1; print (NR ? v[i] : 0) }'; }
other="$RUN/model-small-2.bin"
"$BUILD/mkmodel" --raw --seed 2 "$other" "$smallest"
cat "$other" >/dev/null
switch_s=() rest50=() rest99=() dur50=() dur99=() p99x=() peak=()
start_broker
for r in $(seq "$BENCH_REPS"); do
	base=$(shmem_kb)
	files=("$model" "$other")
	mbctl load m "${files[$((r % 2))]}" --wait >/dev/null
	span=$(calc "3 * $BENCH_REPLACE_SECONDS + 1")
	followers=()
	for i in $(seq "$BENCH_REPLACE_WORKERS"); do
		"$BUILD/mbbench" follow "$SOCK" m "$span" >"$RUN/follow.$i" &
		followers+=("$!")
	done
	pids+=("${followers[@]}")
	wait_attached "$BENCH_REPLACE_WORKERS"
	sleep "$BENCH_REPLACE_SECONDS"
	( top=0; while :; do v=$(shmem_kb); [ "$v" -gt "$top" ] && top=$v &&
		echo "$top" >"$RUN/shmem.peak"; sleep 0.01; done ) &
	sampler=$!
	t_req=$(date +%s.%N)
	mbctl load m "${files[$(((r + 1) % 2))]}" --replace --wait >/dev/null
	wait "${followers[@]}"
	kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
	cat "$RUN"/follow.[0-9]* >"$RUN/followers.all"
	last=$(awk '$1 == "switch" { if ($2 > t) t = $2 } END { printf "%.6f", t }' "$RUN/followers.all")
	n=$(grep -c '^switch' "$RUN/followers.all" || true)
	[ "$n" -eq "$BENCH_REPLACE_WORKERS" ] ||
		{ say "only $n of $BENCH_REPLACE_WORKERS followers switched"; exit 1; }
	awk -v t="$t_req" '$1 == "pass" && $2 + $3 < t { print $3 * 1000 }' \
		"$RUN/followers.all" | tail -n +2 >"$RUN/rest.ms"
	awk -v t="$t_req" -v e="$last" '$1 == "pass" && $2 + $3 >= t && $2 <= e { print $3 * 1000 }' \
		"$RUN/followers.all" >"$RUN/during.ms"
	switch_s+=("$(calc "$last - $t_req")")
	rest50+=("$(pctl 0.5 "$RUN/rest.ms")") rest99+=("$(pctl 0.99 "$RUN/rest.ms")")
	dur50+=("$(pctl 0.5 "$RUN/during.ms")") dur99+=("$(pctl 0.99 "$RUN/during.ms")")
	p99x+=("$(calc "$(pctl 0.99 "$RUN/during.ms") / $(pctl 0.99 "$RUN/rest.ms")")")
	peak+=("$(calc "($(cat "$RUN/shmem.peak") - $base) / ($smallest / 1024)")")
	mbctl unload m >/dev/null
done
stop_broker
record "replace under load" "request to every worker switched" s "${switch_s[@]}"
record "replace under load" "pass p50 at rest" ms "${rest50[@]}"
record "replace under load" "pass p99 at rest" ms "${rest99[@]}"
record "replace under load" "pass p50 during the replace" ms "${dur50[@]}"
record "replace under load" "pass p99 during the replace" ms "${dur99[@]}"
record "replace under load" "p99 during / at rest (goal <= 1.1)" x "${p99x[@]}"
record "replace under load" "peak Shmem / model (goal <= 2 + 2 MiB per worker)" x "${peak[@]}"

say "== 10. many models: autoload and eviction"
# A cold attach (--autoload loads the model inside it) against an explicit
# load followed by an attach; then a load that must evict one idle model
# against the same load with the room already there.
catalog="$RUN/catalog"
mkdir -p "$catalog"
for name in a b c; do
	"$BUILD/mkmodel" --raw --seed 7 "$catalog/$name.bin" "$smallest"
	cat "$catalog/$name.bin" >/dev/null
done
cold=() explicit=() ratio=() plain=() evicting=() cost=()
for r in $(seq "$BENCH_REPS"); do
	start_broker --model-dir "$catalog" --autoload \
		--max-shm-bytes "$((smallest * 5 / 2))"
	c=$("$BUILD/mbbench" first-attach "$SOCK" a | field attach_s)
	t0=$(now_us)
	mbctl load b --wait >/dev/null
	a=$("$BUILD/mbbench" first-attach "$SOCK" b | field attach_s)
	t1=$(now_us)
	cold+=("$(calc "$c * 1000")")
	explicit+=("$(calc "($t1 - $t0) / 1000")")
	ratio+=("$(calc "$c * 1000000 / ($t1 - $t0)")")
	# c needs room: a (least recently used, held by nobody) goes.
	t0=$(now_us); mbctl load c --wait >/dev/null; t1=$(now_us)
	evicting+=("$(calc "($t1 - $t0) / 1000")")
	mbctl unload c >/dev/null
	t0=$(now_us); mbctl load c --wait >/dev/null; t1=$(now_us)
	plain+=("$(calc "($t1 - $t0) / 1000")")
	cost+=("$(calc "${evicting[-1]} - ${plain[-1]}")")
	stop_broker
done
record "many models" "cold attach (autoload inside)" ms "${cold[@]}"
record "many models" "explicit load, then attach" ms "${explicit[@]}"
record "many models" "cold attach / explicit load + attach" x "${ratio[@]}"
record "many models" "load that evicts one model" ms "${evicting[@]}"
record "many models" "the same load with room" ms "${plain[@]}"
record "many models" "eviction cost (difference)" ms "${cost[@]}"

say "== 11. PyTorch ASR pool: the shared mapping against private copies"
# BENCH_TORCH_WORKERS workers of examples/torch_asr_pool.py (wav2vec2_base,
# 378 MB of fp32 weights) each run BENCH_TORCH_PASSES passes on a second
# of espeak-ng speech over the broker's mapping, then as many workers with
# a private copy each; from each pool's lines: the Pss of the model's
# pages in all its workers over one copy, the whole-process Pss of the
# pool, each worker's time from its start to its first logits, and the
# passes.  The shared pool is let go by an unload, which every worker acks.
examples="$(dirname "$0")/../examples"
# torch_pool MODE ARGS...: one run of the pool, held until it reports its
# memory; its lines in $RUN/torch-MODE.log.
torch_pool() {
	local mode=$1 pool
	shift
	setsid env PYTHONPATH="$(dirname "$0")/../bindings/python" \
		/usr/bin/python3 "$examples/torch_asr_pool.py" "$@" \
		--workers "$BENCH_TORCH_WORKERS" --passes "$BENCH_TORCH_PASSES" \
		>"$RUN/torch-$mode.log" 2>&1 &
	pool=$!
	pids+=("$pool")
	EXTRA_CLEANUP="$EXTRA_CLEANUP; kill -9 -- -$pool 2>/dev/null"
	wait_for 900 grep -q '^memory ' "$RUN/torch-$mode.log" ||
		{ say "the $mode pool failed: $(tail -n 5 "$RUN/torch-$mode.log")"; exit 1; }
	if [ "$mode" = shared ]; then
		mbctl --timeout 900 unload asr --timeout 900 >/dev/null
	else
		kill -TERM "$pool"
	fi
	wait "$pool" || { say "the $mode pool exited $?"; exit 1; }
}
# torch_field MODE EVENT KEY: KEY of each EVENT line of MODE's pool.
torch_field() {
	awk -v e="$2" -v k="$3" '$1 == e { for (i = 2; i <= NF; i++)
		if (index($i, k "=") == 1) print substr($i, length(k) + 2) }' \
		"$RUN/torch-$1.log"
}
if [ "$BENCH_TORCH_WORKERS" -eq 0 ]; then
	skip "torch ASR pool" "BENCH_TORCH_WORKERS=0"
elif ! /usr/bin/python3 -c "import numpy, torch, torchaudio" 2>/dev/null ||
	! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then
	skip "torch ASR pool" "python3-torch, torchaudio, espeak-ng or sox missing (scripts/install-deps.sh installs them)"
else
	asr="$RUN/asr.safetensors"
	/usr/bin/python3 "$examples/torch_asr_build.py" "$asr" --seed 1
	start_broker
	declare -A t_ratio t_whole t_first t_pass
	for r in $(seq "$BENCH_TORCH_REPS"); do
		mbctl load asr "$asr" --wait >/dev/null
		torch_pool shared --socket "$SOCK" --model asr
		torch_pool private --private "$asr"
		for mode in shared private; do
			t_ratio[$mode]+=" $(torch_field "$mode" memory model_ratio)"
			t_whole[$mode]+=" $(calc "$(torch_field "$mode" memory pss_kb) / 1024")"
			t_first[$mode]+=" $(torch_field "$mode" first ms)"
			t_pass[$mode]+=" $(torch_field "$mode" pass ms)"
		done
	done
	stop_broker
	scenario="torch ASR pool N=$BENCH_TORCH_WORKERS"
	record "$scenario" "one copy of the weights" MiB "$(calc "$(stat -c %s "$asr") / 1048576")"
	record "$scenario" "model Pss sum / one copy, shared (goal <= 1.05)" x ${t_ratio[shared]}
	record "$scenario" "model Pss sum / one copy, private" x ${t_ratio[private]}
	record "$scenario" "whole-process Pss sum, shared" MiB ${t_whole[shared]}
	record "$scenario" "whole-process Pss sum, private" MiB ${t_whole[private]}
	record "$scenario" "time to first output per worker, shared" ms ${t_first[shared]}
	record "$scenario" "time to first output per worker, private" ms ${t_first[private]}
	record "$scenario" "pass, shared" ms ${t_pass[shared]}
	record "$scenario" "pass, private" ms ${t_pass[private]}
fi

# Scenario 12: BENCH_SPHINX_WORKERS pocketsphinx decoders of the en-us
# model decode two LibriVox clips, from the model's files on disk, forked
# after one decoder was made, and on the broker's bundle of the same
# directory through member paths; from each pool's "memory sum" line: the
# model bytes the decoders map in place (Pss summed), their private heap
# and their whole Pss.  pocketsphinx parses most of its model into its own
# heap, so the broker saves it nothing (docs/engines.md).
sphinx_model=/usr/share/pocketsphinx/model/en-us
sphinx_clips=/usr/share/pocketsphinx/test/data/librivox
# sphinx_field MODE KEY: KEY of MODE's "memory sum" line.
sphinx_field() {
	sed -n 's/^memory sum: //p' "$RUN/sphinx-$1.log" | tr ' ' '\n' |
		sed -n "s/^$2=//p"
}
if [ "$BENCH_SPHINX_WORKERS" -eq 0 ]; then
	skip "pocketsphinx pool" "BENCH_SPHINX_WORKERS=0"
elif [ ! -x "$BUILD/examples/pocketsphinx_pool" ] || [ ! -d "$sphinx_model" ] ||
	[ ! -d "$sphinx_clips" ]; then
	skip "pocketsphinx pool" "pocketsphinx, pocketsphinx-en-us or pocketsphinx-testdata missing (scripts/install-deps.sh installs them)"
else
	start_broker
	mbctl load en-us "$sphinx_model" --wait >/dev/null
	for mode in disk fork broker; do
		"$BUILD/examples/pocketsphinx_pool" --mode "$mode" \
			--workers "$BENCH_SPHINX_WORKERS" --socket "$SOCK" \
			"$sphinx_clips"/*0880*.wav "$sphinx_clips"/*0930*.wav \
			>"$RUN/sphinx-$mode.log" 2>&1 ||
			{ say "the $mode pool failed: $(tail -n 5 "$RUN/sphinx-$mode.log")"; exit 1; }
	done
	stop_broker
	scenario="pocketsphinx pool N=$BENCH_SPHINX_WORKERS"
	for mode in disk fork broker; do
		record "$scenario" "model mapped in place, Pss sum, $mode" MiB \
			"$(calc "$(sphinx_field "$mode" in_place_pss) / 1048576")"
		record "$scenario" "private heap sum, $mode" MiB \
			"$(calc "$(sphinx_field "$mode" heap_private) / 1048576")"
		record "$scenario" "whole-process Pss sum, $mode" MiB \
			"$(calc "$(sphinx_field "$mode" pss) / 1048576")"
	done
fi

say "== 13. warm workers: the first pass against the next ones"
# For each size: mbbench warm attaches the model plainly and with
# MB_ATTACH_POPULATE in turn, 3 times each per repetition, and times the
# attach, the first pass over every weight and the median of the 3 passes
# after it.  A plain attach leaves the page tables empty, so its first
# pass takes a minor fault per fault-around block: the baseline.
for size_text in $BENCH_SIZES; do
	model="$RUN/model-$size_text.bin"
	start_broker --model "m=$model"
	for _ in $(seq 1000); do mbctl list | grep -q " READY " && break; sleep 0.02; done
	plain=() populated=() a_plain=() a_pop=() cost=()
	for r in $(seq "$BENCH_REPS"); do
		out=$("$BUILD/mbbench" warm "$SOCK" m 3)
		plain+=("$(calc "$(echo "$out" | field first_plain_s) / $(echo "$out" | field steady_plain_s)")")
		populated+=("$(calc "$(echo "$out" | field first_populate_s) / $(echo "$out" | field steady_populate_s)")")
		a_plain+=("$(calc "$(echo "$out" | field attach_plain_s) * 1000")")
		a_pop+=("$(calc "$(echo "$out" | field attach_populate_s) * 1000")")
		cost+=("$(calc "($(echo "$out" | field attach_populate_s) - $(echo "$out" | field attach_plain_s)) * 1000 * 1073741824 / $(bytes "$size_text")")")
	done
	stop_broker
	record "warm $size_text" "first pass / steady pass, plain attach (baseline)" x "${plain[@]}"
	record "warm $size_text" "first pass / steady pass, populate (goal <= 1.1)" x "${populated[@]}"
	record "warm $size_text" "attach, plain" ms "${a_plain[@]}"
	record "warm $size_text" "attach with populate" ms "${a_pop[@]}"
	record "warm $size_text" "populate cost per GiB" ms "${cost[@]}"
done

say "== 14. cold start"
# As root, for each size: the page cache dropped before each run, cp of
# the model file to /dev/shm against the broker's load of it; then the
# time from the broker's start (--model) to BENCH_COLD_WORKERS workers,
# started with it, having each made a first pass, plain and populated.
# drop_caches: empties the page cache, as a cold machine has it.
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# cold_start plain|populate: sets cold_s to the time from the broker's
# start to every worker's first pass done.
cold_start() {
	local t0 i workers=() last
	drop_caches
	t0=$(date +%s.%N)
	for i in $(seq "$BENCH_COLD_WORKERS"); do
		"$BUILD/mbbench" first-pass "$SOCK" m "$1" >"$RUN/cold.$i" &
		workers+=("$!")
	done
	pids+=("${workers[@]}")
	start_broker --model "m=$model"
	wait "${workers[@]}"
	last=$(cat "$RUN"/cold.[0-9]* | grep -o '"first_pass_done_s":[0-9.]*' |
		cut -d: -f2 | sort -g | tail -n1)
	stop_broker
	cold_s=$(calc "$last - $t0")
}
if [ "$BENCH_COLD_REPS" -eq 0 ]; then
	skip "cold start" "BENCH_COLD_REPS=0"
elif [ "$(id -u)" -ne 0 ] || [ ! -w /proc/sys/vm/drop_caches ]; then
	for size_text in $BENCH_SIZES; do
		skip "cold $size_text" "needs root to drop the page cache (/proc/sys/vm/drop_caches)"
	done
else
	for size_text in $BENCH_SIZES; do
		model="$RUN/model-$size_text.bin"
		cp_s=() load_s=() ratio=() plain=() populated=()
		start_broker
		for r in $(seq "$BENCH_COLD_REPS"); do
			drop_caches
			t0=$(now_us); cp "$model" /dev/shm/mbbench.x; t1=$(now_us)
			rm -f /dev/shm/mbbench.x
			cp_s+=("$(calc "($t1 - $t0) / 1000000")")
			drop_caches
			ms=$(mbctl --json load m "$model" --wait | field load_ms)
			mbctl unload m >/dev/null
			load_s+=("$(calc "$ms / 1000")")
			ratio+=("$(calc "${load_s[-1]} / ${cp_s[-1]}")")
		done
		stop_broker
		for r in $(seq "$BENCH_COLD_REPS"); do
			cold_start plain
			plain+=("$cold_s")
			cold_start populate
			populated+=("$cold_s")
		done
		record "cold $size_text" "cp to /dev/shm, cold cache" s "${cp_s[@]}"
		record "cold $size_text" "mbroker load, cold cache" s "${load_s[@]}"
		record "cold $size_text" "cold load / cold cp" x "${ratio[@]}"
		record "cold $size_text" "broker start to $BENCH_COLD_WORKERS first passes, plain" s "${plain[@]}"
		record "cold $size_text" "broker start to $BENCH_COLD_WORKERS first passes, populate" s "${populated[@]}"
	done
fi

"$(dirname "$0")/bench-report.sh" "$OUT"
