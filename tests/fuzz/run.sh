#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# run.sh - runs each libFuzzer target for a bounded time from its seeds
# (tests/fuzz/seeds/<target>) and prints its executions per second and
# total runs.  A crash leaves its input as BUILD/crash-* and fails; turn
# it into a regression test by adding it to the seeds and to the unit or
# corpus tests.
#   tests/fuzz/run.sh BUILD_DIR SECONDS
set -uo pipefail

BUILD=$1
SECONDS_EACH=$2
root=$(cd "$(dirname "$0")" && pwd)
failed=0
passed=0
for target in request safetensors; do
	work="$BUILD/corpus/$target"
	mkdir -p "$work"
	"$BUILD/fuzz_$target" -max_total_time="$SECONDS_EACH" -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$BUILD/" \
		"$work" "$root/seeds/$target" >"$BUILD/fuzz_$target.log" 2>&1
	status=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$BUILD/fuzz_$target.log")
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$BUILD/fuzz_$target.log")
	if [ $status -ne 0 ]; then
		failed=$((failed + 1))
		echo "fuzz_$target: FAILED (exit $status); see $BUILD/fuzz_$target.log"
		grep -E "ERROR|SUMMARY|crash-" "$BUILD/fuzz_$target.log" | head -5
	else
		passed=$((passed + 1))
		echo "fuzz_$target: ${runs:-?} runs in ${SECONDS_EACH} s, ${rate:-?} exec/s, no crash"
	fi
done
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
