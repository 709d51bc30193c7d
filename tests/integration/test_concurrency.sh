# SPDX-License-Identifier: MIT
# The seed's "concurrent unload during initialisation", and its cousins,
# on loads slowed down with --load-rate: a second load of a loading name is
# refused, an attach of it is refused as not ready, list shows its
# progress; an unload during the load cancels it (the waiting load is told)
# and leaves no segment; attach during an unload is refused with its own
# code; a second unload joins the first; SIGTERM during a load ends it and
# exits clean.  The end state is always consistent.
. "$(dirname "$0")/lib.sh"

make_model --raw "$T/big.bin" 8000000
make_model "$T/m.safetensors" 2000000
start_broker --load-rate 2M --shutdown-timeout 10
progress_shown() {
	mbctl list | grep -q "^big .*LOADING .*[1-9][0-9]*% loaded"
}

mbctl load big "$T/big.bin" --wait >"$T/load.out" 2>&1 &
load_cli=$!
CHILDREN+=("$load_cli")
wait_until 10 progress_shown || fail "no LOADING progress: $(mbctl list)"
err=$(mbctl load big "$T/big.bin" 2>&1) && fail "second load worked"
case "$err" in *"already loading"*) ;; *) fail "second load: $err" ;; esac
err=$("$BIN/mbworker" --socket "$SOCK" --model big 2>&1) && fail "attach worked"
case "$err" in *"model big is LOADING"*) ;; *) fail "attach: $err" ;; esac
out=$(mbctl unload big) || fail "unload during the load failed: $out"
status=0
wait "$load_cli" || status=$?
[ $status -eq 1 ] || fail "the waiting load exited $status"
grep -q "unloaded while loading" "$T/load.out" || fail "$(cat "$T/load.out")"
[ -z "$(model_state big)" ] || fail "big still listed"
instance_shm | grep -q '\.model\.' && fail "cancelled load left a segment"

load m "$T/m.safetensors"
start_worker m --no-ack
wait_attached 1
mbctl unload m --timeout 1 >"$T/u1.out" 2>&1 &
u1=$!
CHILDREN+=("$u1")
wait_until 10 state_is m UNLOADING || fail "m not UNLOADING"
err=$("$BIN/mbworker" --socket "$SOCK" --model m 2>&1) && fail "attach worked"
case "$err" in *"model is unloading"*) ;; *) fail "attach while unloading: $err" ;; esac
mbctl unload m >"$T/u2.out" 2>&1 && fail "the joined unload did not time out"
wait "$u1" && fail "the first unload did not time out"
grep -q "timed out" "$T/u1.out" || fail "first unload: $(cat "$T/u1.out")"
grep -q "timed out" "$T/u2.out" || fail "second unload: $(cat "$T/u2.out")"
[ "$(grep -c 'model m: unloading' "$BROKER_LOG")" -eq 1 ] ||
	fail "the second unload started another sequence"
state_is m ERROR || fail "m is $(model_state m)"
kill -9 "$WORKER_PID"
wait_attached 0

mbctl load big "$T/big.bin" >/dev/null || fail "reload of big failed"
wait_until 10 progress_shown || fail "second load shows no progress"
t0=$(now_ms)
kill -TERM "$BROKER_PID"
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS"
assert_between "$(elapsed_since "$t0")" 0 2000 "SIGTERM during a load"
assert_log "load ended by an unload"
assert_no_shm
