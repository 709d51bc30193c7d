# SPDX-License-Identifier: MIT
# scripts/mbroker-service for plain shells, with LSB exit codes: start
# (twice is fine), status reading the broker's own state, stop within the
# shutdown timeout plus a margin (twice is fine), status 3 when stopped,
# 1 when the broker died leaving its pid file, 2 for usage; and the
# broker's own exit codes: 0 clean, 1 timed out, 2 usage or failed start.
. "$(dirname "$0")/lib.sh"

SERVICE="$(dirname "$0")/../../scripts/mbroker-service"
export MBROKERD="$BIN/mbrokerd" MBCTL="$BIN/mbctl" MBROKER_SOCKET="$SOCK" \
	MBROKER_INSTANCE="$INSTANCE" MBROKER_SHUTDOWN_TIMEOUT=2
make_model "$T/m.safetensors" 1000000
export MBROKER_OPTS="--model m=$T/m.safetensors"
code() { local s=0; "$@" >"$T/out" 2>&1 || s=$?; echo $s; }

[ "$(code "$SERVICE" start)" = 0 ] || fail "start: $(cat "$T/out")"
BROKER_PID=$(cat "$SOCK.pid")
CHILDREN+=("$BROKER_PID")
[ "$(code "$SERVICE" start)" = 0 ] || fail "second start: $(cat "$T/out")"
grep -q "already running (pid $BROKER_PID)" "$T/out" || fail "$(cat "$T/out")"
wait_until 10 state_is m READY || fail "preload"
[ "$(code "$SERVICE" status)" = 0 ] || fail "status: $(cat "$T/out")"
grep -q "mbrokerd running (pid $BROKER_PID): 1 model(s), 0 worker(s)" "$T/out" ||
	fail "status said: $(cat "$T/out")"
t0=$(now_ms)
[ "$(code "$SERVICE" stop)" = 0 ] || fail "stop: $(cat "$T/out")"
assert_between "$(elapsed_since "$t0")" 0 7000 "stop"
[ "$(code "$SERVICE" status)" = 3 ] || fail "status when stopped: $(cat "$T/out")"
[ "$(code "$SERVICE" stop)" = 0 ] || fail "second stop"
assert_no_shm

[ "$(code "$SERVICE" restart)" = 0 ] || fail "restart: $(cat "$T/out")"
BROKER_PID=$(cat "$SOCK.pid")
CHILDREN+=("$BROKER_PID")
kill -9 "$BROKER_PID"
dead() { [ "$(code "$SERVICE" status)" = 1 ]; }
wait_until 10 dead || fail "status after a kill: $(cat "$T/out")"
[ "$(code "$SERVICE" bogus)" = 2 ] || fail "usage"
rm -f "$SOCK.pid"

# The broker's exit codes, each once: 2 for usage, 2 for a failed start.
[ "$(code "$BIN/mbrokerd" --bogus)" = 2 ] || fail "usage exit"
[ "$(code "$BIN/mbrokerd" --socket "$T/nodir/x/y.sock" --instance "$INSTANCE-c")" = 2 ] ||
	fail "failed start exit: $(cat "$T/out")"
grep -q "start-up failed" "$T/out" || fail "$(cat "$T/out")"
