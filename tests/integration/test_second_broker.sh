# SPDX-License-Identifier: MIT
# One broker per instance: a second one exits 2 with "already running
# (pid N)" and touches nothing of the first; a broker of another instance
# on the same socket path exits 2 too, leaving the live socket alone.
. "$(dirname "$0")/lib.sh"

# expect_refused MESSAGE ARGS...: mbrokerd ARGS exits 2 saying MESSAGE.
expect_refused() {
	local message=$1 status=0
	shift
	"$BIN/mbrokerd" "$@" 2>"$T/refused.log" || status=$?
	[ $status -eq 2 ] || fail "mbrokerd $* exited $status, not 2"
	grep -q "$message" "$T/refused.log" ||
		fail "no '$message': $(cat "$T/refused.log")"
}

start_broker
expect_refused "already running (pid $BROKER_PID)" \
	--socket "$T/other.sock" --instance "$INSTANCE"
[ ! -e "$T/other.sock" ] || fail "second broker created a socket"
expect_refused "another broker listens on $SOCK" \
	--socket "$SOCK" --instance "$INSTANCE-b"
ls /dev/shm | grep -q "mbroker\.$INSTANCE-b\." &&
	fail "the refused broker left names: $(ls /dev/shm)"

mbctl ping >/dev/null || fail "first broker stopped answering"
shutdown_clean
