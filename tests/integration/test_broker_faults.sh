# SPDX-License-Identifier: MIT
# The broker itself fails: SIGKILL during a load (the partial segment is
# never attachable and the next start removes it), SIGKILL during the
# shutdown wait (the next start removes everything; the deaf worker keeps
# its valid mapping), a second SIGTERM during the shutdown (it neither
# restarts nor cuts the wait), and a registry mirror full of garbage from
# a dead broker (removed and replaced at start).
. "$(dirname "$0")/lib.sh"

make_model --raw "$T/big.bin" 8000000
make_model "$T/m.safetensors" 2000000
loading_shown() {
	mbctl list | grep -q "^big .*LOADING .*[1-9][0-9]*% loaded"
}

# SIGKILL during a load.
start_broker --load-rate 2M
mbctl load big "$T/big.bin" >/dev/null || fail "load request failed"
wait_until 10 loading_shown || fail "no load in progress"
kill -9 "$BROKER_PID"
wait "$BROKER_PID" 2>/dev/null || true
instance_shm | grep -q '\.model\.big\.' || fail "expected the partial segment"
: >"$BROKER_LOG"
start_broker
assert_log "model\.big\..* left by a dead broker"
[ -z "$(model_state big)" ] || fail "the half-loaded model is listed"
err=$("$BIN/mbworker" --socket "$SOCK" --model big 2>&1) && fail "attach worked"
case "$err" in *"no such model"*) ;; *) fail "attach: $err" ;; esac
instance_shm | grep -q '\.model\.' && fail "the partial segment survived"

# SIGKILL during the shutdown wait.
load m "$T/m.safetensors"
start_worker m --no-ack
deaf=$WORKER_PID
wait_attached 1
kill -TERM "$BROKER_PID"
wait_until 10 grep -q "shutdown on SIGTERM" "$BROKER_LOG" || fail "no shutdown"
kill -9 "$BROKER_PID"
wait "$BROKER_PID" 2>/dev/null || true
kill -0 "$deaf" || fail "the deaf worker died with the broker"
: >"$BROKER_LOG"
start_broker --shutdown-timeout 1
assert_log "left by a dead broker"
instance_shm | grep -q '\.model\.' && fail "the dead broker's segment survived"
kill -9 "$deaf"

# A second SIGTERM during the shutdown wait changes nothing.
load m "$T/m.safetensors"
start_worker m --no-ack
wait_attached 1
t0=$(now_ms)
kill -TERM "$BROKER_PID"
wait_until 10 grep -q "shutdown on SIGTERM" "$BROKER_LOG" || fail "no shutdown"
kill -TERM "$BROKER_PID"
wait_broker_exit 10
assert_between "$(elapsed_since "$t0")" 950 2500 "shutdown with two SIGTERMs"
[ "$BROKER_STATUS" -eq 1 ] || fail "broker exited $BROKER_STATUS, not 1"
assert_log "shutdown already in progress (on SIGTERM)"
[ "$(grep -c 'model m: unloading' "$BROKER_LOG")" -eq 1 ] ||
	fail "the second SIGTERM restarted the sequence"
assert_no_shm
kill -9 "$WORKER_PID"

# Garbage where the registry mirror goes.
head -c 3000 /dev/urandom >"/dev/shm/mbroker.$INSTANCE.registry"
: >"$BROKER_LOG"
start_broker
assert_log "removed /dev/shm/mbroker.$INSTANCE.registry (3000 bytes)"
[ "$(head -c 8 "/dev/shm/mbroker.$INSTANCE.registry")" = MBREG002 ] ||
	fail "the registry mirror was not rebuilt"
shutdown_clean
