# SPDX-License-Identifier: MIT
# tests/run.sh itself, on a tree of three tiny tests: one passes, one
# fails, one cannot run here and calls lib.sh's skip (exit 77).  The skip
# is printed with its reason and counted apart, the closing line says
# "N passed, N failed, N skipped", and only a failure makes the run fail;
# with CI=true (CI runs as root, where nothing may skip) the skip is a
# failure.
. "$(dirname "$0")/lib.sh"

tree="$T/tree"
mkdir -p "$tree/tests/integration" "$T/build"
cp "$(dirname "$0")/../run.sh" "$tree/tests/run.sh"
cp "$(dirname "$0")/lib.sh" "$tree/tests/integration/lib.sh"
echo 'exit 0' >"$tree/tests/integration/test_a.sh"
cat >"$tree/tests/integration/test_b.sh" <<'EOF'
. "$(dirname "$0")/lib.sh"
echo "some output on stderr" >&2
skip "needs a thing this machine lacks"
EOF

# run_tree CI_VALUE: runs the tree's suite; sets OUT and STATUS.
run_tree() {
	STATUS=0
	OUT=$(env CI="$1" bash "$tree/tests/run.sh" --integration "$T/build" 2>&1) ||
		STATUS=$?
}
has_line() {
	grep -qx -- "$1" <<<"$OUT" || fail "no line '$1' in: $OUT"
}

run_tree ""
[ $STATUS -eq 0 ] || fail "a skip made the run fail ($STATUS): $OUT"
has_line "SKIP test_b (needs a thing this machine lacks)"
grep -q "^PASS test_a (" <<<"$OUT" || fail "no PASS line: $OUT"
has_line "1 passed, 0 failed, 1 skipped"

echo 'exit 1' >"$tree/tests/integration/test_c.sh"
run_tree ""
[ $STATUS -ne 0 ] || fail "a failure did not make the run fail: $OUT"
has_line "1 passed, 1 failed, 1 skipped"

run_tree true
[ $STATUS -ne 0 ] || fail "a skip under CI=true did not fail the run: $OUT"
has_line "FAIL test_b (skipped, but CI=true allows no skip: needs a thing this machine lacks)"
has_line "1 passed, 2 failed, 0 skipped"
