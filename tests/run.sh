#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# run.sh - runs mbroker's tests: every cmocka unit binary, then every
# integration script, and closes with "N passed, N failed, N skipped".  A
# test that cannot run here (not root, ...) exits 77 and is counted as
# skipped, with the last line it wrote on stderr as the reason; with CI=true
# (CI runs as root, so everything must run) a skip counts as a failure.
# Before and after, /dev/shm must hold nothing of a test instance.
#   tests/run.sh [--unit | --integration | --valgrind] BUILD_DIR
set -uo pipefail

mode=all
case "${1:-}" in
--unit | --integration | --valgrind)
	mode=${1#--}
	shift
	;;
esac
BUILD=${1:-build}
export BUILD
root=$(cd "$(dirname "$0")/.." && pwd)
passed=0
failed=0
skipped=0
failures=()
errlog=$(mktemp)
trap 'rm -f "$errlog"' EXIT

leftovers() {
	ls /dev/shm | grep -E '^(sem\.)?mbroker\.(it|ut)-' || true
}

# skip_reason: the last line the test wrote on stderr, without the
# "SKIP [name]: " that lib.sh's skip puts before it.
skip_reason() {
	local line
	line=$(grep -v '^[[:space:]]*$' "$errlog" | tail -n 1 | cut -c 1-200)
	line=${line#SKIP \[*\]: }
	echo "${line:-no reason given}"
}

record() {
	if [ "$1" -eq 0 ]; then
		passed=$((passed + 1))
		echo "PASS $2 (${3} ms)"
	elif [ "$1" -eq 77 ] && [ "${CI:-}" = true ]; then
		failed=$((failed + 1))
		failures+=("$2")
		echo "FAIL $2 (skipped, but CI=true allows no skip: $(skip_reason))"
	elif [ "$1" -eq 77 ]; then
		skipped=$((skipped + 1))
		echo "SKIP $2 ($(skip_reason))"
	else
		failed=$((failed + 1))
		failures+=("$2")
		echo "FAIL $2 (exit $1, ${3} ms)"
	fi
}

run_one() {
	local name=$1
	shift
	local t0 status
	t0=$(date +%s%N)
	# stderr is shown once the test ends (a pipe would wait for any
	# process the test left behind); the file keeps a skip's reason.
	"$@" 2>"$errlog"
	status=$?
	cat "$errlog" >&2
	record $status "$name" $((($(date +%s%N) - t0) / 1000000))
}

VALGRIND=(valgrind --quiet --error-exitcode=99 --leak-check=full
	--errors-for-leak-kinds=definite,indirect,possible
	--show-leak-kinds=definite,indirect,possible)

before=$(leftovers)
if [ "$mode" = all ] || [ "$mode" = unit ] || [ "$mode" = valgrind ]; then
	for t in "$BUILD"/tests/test_*; do
		[ -x "$t" ] || continue
		if [ "$mode" = valgrind ]; then
			run_one "valgrind $(basename "$t")" "${VALGRIND[@]}" "$t"
		else
			run_one "$(basename "$t")" "$t"
		fi
	done
fi
if [ "$mode" = valgrind ]; then
	run_one "valgrind broker test_lifecycle" env MB_VALGRIND=1 \
		bash "$root/tests/integration/test_lifecycle.sh"
fi
if [ "$mode" = all ] || [ "$mode" = integration ]; then
	for t in "$root"/tests/integration/test_*.sh; do
		run_one "$(basename "$t" .sh)" bash "$t"
	done
fi
after=$(leftovers)
if [ "$after" != "$before" ]; then
	echo "FAIL /dev/shm: the suite left $(echo $after)"
	failed=$((failed + 1))
fi
echo
if [ $failed -gt 0 ]; then
	echo "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
