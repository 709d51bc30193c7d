# SPDX-License-Identifier: MIT
# A worker killed with SIGKILL while attached: its connection closes, the
# broker releases its attachment at once and keeps serving the others, and
# a later shutdown neither waits for it nor fails because of it.
. "$(dirname "$0")/lib.sh"

make_model "$T/m.safetensors" 4000000
start_broker --shutdown-timeout 10
load m "$T/m.safetensors"
start_worker m
victim=$WORKER_PID
start_worker m
survivor=$WORKER_PID
wait_attached 2

kill -9 "$victim"
wait_attached 1
mbctl workers | grep -q "^$victim " && fail "killed worker still listed"
mbctl workers | grep -q "^$survivor .*m(gen 1)" || fail "survivor not listed"
assert_log "client pid $victim .* gone"

t0=$(now_ms)
mbctl shutdown >/dev/null || fail "shutdown failed"
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS"
assert_between "$(elapsed_since "$t0")" 0 3000 "shutdown after a kill"
worker_exited_with "$survivor" 0
assert_no_shm
