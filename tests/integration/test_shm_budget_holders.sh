# SPDX-License-Identifier: MIT
# The --max-shm-bytes budget counts what workers still map: after an
# unload timed out (its segment unlinked, a worker still mapping it) its
# bytes stay reserved, so a load that would take the budget past what is
# really live is refused with no_space; once the last holder is gone the
# bytes come back and the same load fits.
. "$(dirname "$0")/lib.sh"

reserved_is() { [ "$(mbctl --json stats | json_int bytes_reserved)" = "$1" ]; }

make_model --raw "$T/a.bin" 6000000
make_model --raw "$T/b.bin" 5000000
start_broker --max-shm-bytes 10M
load a "$T/a.bin"
start_worker a --no-ack
wait_attached 1
mbctl unload a --timeout 0.3 >/dev/null 2>&1 && fail "the unload did not time out"
state_is a ERROR || fail "a is $(model_state a)"
reserved_is 6000000 ||
	fail "a's bytes left the budget while a worker maps them: $(mbctl --json stats)"
err=$(mbctl load b "$T/b.bin" --wait 2>&1) && fail "a load over the live budget worked"
case "$err" in
*"model needs 5000000 bytes, the --max-shm-bytes budget of 10485760 has 4485760 free"*) ;;
*) fail "message: $err" ;;
esac

kill -9 "$WORKER_PID"
wait_attached 0
wait_until 10 reserved_is 0 ||
	fail "the bytes did not come back: $(mbctl --json stats)"
assert_log "its last holder let go; 6000000 bytes back"
load b "$T/b.bin"
state_is b READY || fail "b is $(model_state b)"
mbctl unload a >/dev/null || fail "the second unload of a failed"
shutdown_clean
