# SPDX-License-Identifier: MIT
# mbctl against a broker that is alive but stopped (SIGSTOP): every
# request gives up after --timeout (10 s by default) with exit 3 and a
# message saying so; a request that waits by design (unload, load --wait)
# waits as long as the broker keeps answering, longer than --timeout, and
# gives up within about --timeout once the broker stops answering.
. "$(dirname "$0")/lib.sh"

EXTRA_CLEANUP='kill -CONT $BROKER_PID 2>/dev/null'
make_model "$T/m.safetensors" 100000
make_model "$T/big.safetensors" 1000000
start_broker --load-rate 400000
mbctl load m "$T/m.safetensors" --wait >/dev/null 2>&1 || fail "load of m failed"

# Stopped before the request: the hello is not answered.
kill -STOP "$BROKER_PID"
t0=$(now_ms)
status=0
mbctl --timeout 1 ping 2>"$T/ping.err" || status=$?
[ "$status" -eq 3 ] || fail "ping of a stopped broker exited $status, not 3"
assert_between "$(elapsed_since "$t0")" 900 4000 "ping with --timeout 1"
grep -q "did not answer within 1 s" "$T/ping.err" ||
	fail "ping message: $(cat "$T/ping.err")"
t0=$(now_ms)
status=0
mbctl list >/dev/null 2>&1 || status=$?
[ "$status" -eq 3 ] || fail "list of a stopped broker exited $status, not 3"
assert_between "$(elapsed_since "$t0")" 9500 16000 "list with the default --timeout"
kill -CONT "$BROKER_PID"

# An unload that waits 3 s for a slow worker outlives --timeout 1: the
# broker keeps answering meanwhile.
start_worker m --ack-delay 3000
wait_attached 1
t0=$(now_ms)
mbctl --timeout 1 unload m --timeout 20 >"$T/unload.out" 2>&1 ||
	fail "unload with a slow worker: $(cat "$T/unload.out")"
assert_between "$(elapsed_since "$t0")" 2900 15000 "unload of a slow worker"

# The same wait against a broker stopped once it began: exit 3 within
# about --timeout.
mbctl load m "$T/m.safetensors" --wait >/dev/null 2>&1 || fail "reload of m failed"
start_worker m --no-ack
wait_attached 1
mbctl --timeout 1 unload m --timeout 60 >/dev/null 2>"$T/unload.err" &
unloader=$!
CHILDREN+=("$unloader")
wait_until 10 state_is m UNLOADING || fail "the unload did not begin"
kill -STOP "$BROKER_PID"
t0=$(now_ms)
status=0
wait "$unloader" || status=$?
[ "$status" -eq 3 ] || fail "unload against a stopped broker exited $status, not 3"
assert_between "$(elapsed_since "$t0")" 900 5000 "unload once the broker stopped"
grep -q "did not answer within 1 s" "$T/unload.err" ||
	fail "unload message: $(cat "$T/unload.err")"
kill -CONT "$BROKER_PID"
{ kill -9 "$WORKER_PID" && wait "$WORKER_PID"; } 2>/dev/null || true

# load --wait of a load that takes 2.5 s (--load-rate) outlives --timeout 1;
# stopped during the next such load, it gives up.
t0=$(now_ms)
mbctl --timeout 1 --json load big "$T/big.safetensors" --wait >"$T/load.out" 2>&1 ||
	fail "slow load --wait: $(cat "$T/load.out")"
assert_between "$(elapsed_since "$t0")" 2000 15000 "load --wait of a slow load"
mbctl --timeout 1 --json load big2 "$T/big.safetensors" --wait >/dev/null \
	2>"$T/load.err" &
loader=$!
CHILDREN+=("$loader")
wait_until 10 state_is big2 LOADING || fail "the second load did not begin"
kill -STOP "$BROKER_PID"
t0=$(now_ms)
status=0
wait "$loader" || status=$?
[ "$status" -eq 3 ] || fail "load --wait against a stopped broker exited $status, not 3"
assert_between "$(elapsed_since "$t0")" 900 5000 "load --wait once the broker stopped"
kill -CONT "$BROKER_PID"
shutdown_clean
