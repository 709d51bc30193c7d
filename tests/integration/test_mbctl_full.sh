# SPDX-License-Identifier: MIT
# A `load --wait` longer than --timeout against a broker that is alive
# but at --max-connections: mbctl's liveness probe is refused ("limit"),
# which is an answer, so it keeps waiting and exits 0 when the load is
# done, instead of saying after --timeout that the broker is stopped.
. "$(dirname "$0")/lib.sh"

make_model "$T/big.safetensors" 1000000
start_broker --max-connections 2 --load-rate 400000
"$BIN/mbfault" hold "$SOCK" 1 >"$T/hold.out" &
holder=$!
CHILDREN+=("$holder")
wait_until 10 grep -q "holding 1" "$T/hold.out" || fail "no connection held"
t0=$(now_ms)
status=0
mbctl --json --timeout 1 load big "$T/big.safetensors" --wait \
	>"$T/load.out" 2>&1 || status=$?
[ "$status" -eq 0 ] || fail "load --wait exited $status: $(cat "$T/load.out")"
assert_between "$(elapsed_since "$t0")" 2000 15000 "a 2.5 s load"
kill "$holder"
wait "$holder" 2>/dev/null || true
shutdown_clean
