# SPDX-License-Identifier: MIT
# One broker per instance: a second one exits 2 with "already running
# (pid N)" and touches nothing of the first; a broker of another instance
# on the same socket path exits 2 too, leaving the live socket alone.
. "$(dirname "$0")/lib.sh"

start_broker
status=0
"$BIN/mbrokerd" --socket "$T/other.sock" --instance "$INSTANCE" \
	2>"$T/second.log" || status=$?
[ $status -eq 2 ] || fail "second broker exited $status, not 2"
grep -q "already running (pid $BROKER_PID)" "$T/second.log" ||
	fail "no 'already running': $(cat "$T/second.log")"
[ ! -e "$T/other.sock" ] || fail "second broker created a socket"

status=0
"$BIN/mbrokerd" --socket "$SOCK" --instance "$INSTANCE-b" \
	2>"$T/third.log" || status=$?
[ $status -eq 2 ] || fail "broker on a busy socket exited $status, not 2"
grep -q "another broker listens on $SOCK" "$T/third.log" ||
	fail "no 'another broker listens': $(cat "$T/third.log")"
ls /dev/shm | grep -q "mbroker\.$INSTANCE-b\." &&
	fail "the refused broker left names: $(ls /dev/shm)"

mbctl ping >/dev/null || fail "first broker stopped answering"
mbctl shutdown >/dev/null || fail "shutdown failed"
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS"
assert_no_shm
