# SPDX-License-Identifier: MIT
# mbctl's live views: `load --wait` reports progress while it waits (plain
# lines when stderr is not a terminal) and ends with the same READY line;
# `top` refreshes a view of the broker, models and workers.
. "$(dirname "$0")/lib.sh"

make_model --raw "$T/m.bin" 6000000
start_broker --load-rate 3M
mbctl load m "$T/m.bin" --wait >"$T/out" 2>"$T/err" || fail "load: $(cat "$T/err")"
grep -q "^m READY: " "$T/out" || fail "final line: $(cat "$T/out")"
[ "$(grep -c "^loading m: [0-9]*% (.* of 5.7 MiB, [0-9]* MB/s)$" "$T/err")" -ge 2 ] ||
	fail "progress: $(cat "$T/err")"
start_worker m
wait_attached 1
mbctl top --iterations 2 >"$T/top" || fail "top failed"
[ "$(grep -c "^mbrokerd 0.1.0, instance $INSTANCE, pid $BROKER_PID" "$T/top")" -eq 2 ] ||
	fail "top: $(cat "$T/top")"
[ "$(grep -c "^m  *READY .* 1  xxh3" "$T/top")" -eq 2 ] || fail "top models: $(cat "$T/top")"
grep -q "^$WORKER_PID .*m(gen 1)" "$T/top" || fail "top workers: $(cat "$T/top")"
shutdown_clean
