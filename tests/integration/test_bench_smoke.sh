# SPDX-License-Identifier: MIT
# A tiny smoke of `make bench` (scripts/bench.sh), so that it cannot rot:
# a 4 MiB model, one repetition, few workers, installing nothing, the
# PyTorch and pocketsphinx pools skipped (minutes of CPU; their own tests
# run them), and the cold start too (it drops the machine's page cache).
# Every scenario must run or say why it was skipped, and the report must
# come out with the figures the goals are judged on.
. "$(dirname "$0")/lib.sh"

BENCH_SIZES=4M BENCH_REPS=1 BENCH_WORKERS="1 2" BENCH_SHUTDOWN_WORKERS="1 2" \
	BENCH_CLIENTS=1 BENCH_SECONDS=0.2 BENCH_INSTALL=0 BENCH_MODELS=8 \
	BENCH_CROWD="4 16" BENCH_REPLACE_WORKERS=2 BENCH_REPLACE_SECONDS=0.3 \
	BENCH_TORCH_WORKERS=0 BENCH_SPHINX_WORKERS=0 BENCH_COLD_REPS=0 \
	"$(dirname "$0")/../../scripts/bench.sh" "$BUILD" >"$T/bench.log" 2>&1 ||
	fail "bench smoke: $(tail -20 "$T/bench.log")"
OUT="$BUILD/bench"
for metric in "load / cp" "attach p50" "mbroker Pss sum" "shared / private" \
	"mbroker ping" "broker overhead" "beyond the 1 s timeout" \
	"p50 with 1 model" "attachments" "every worker switched" \
	"p99 during / at rest" "cold attach (autoload inside)" \
	"Cached - Shmem rise" \
	"eviction cost" "torch ASR pool" "pocketsphinx pool" \
	"first pass / steady pass, plain" "first pass / steady pass, populate" \
	"attach with populate" "cold start"; do
	grep -q "$metric" "$OUT/results.md" || fail "results.md lacks '$metric'"
done
grep -q '"scenario": "attach"' "$OUT/results.json" || fail "results.json"
