# SPDX-License-Identifier: MIT
# --daemon for plain init scripts: the command returns 0 only once the
# broker listens, the pid file names it, SIGTERM stops it, and the pid
# file and every name are removed.
. "$(dirname "$0")/lib.sh"

"$BIN/mbrokerd" --socket "$SOCK" --instance "$INSTANCE" --daemon \
	--pid-file "$T/broker.pid" 2>>"$BROKER_LOG" || fail "--daemon failed"
pid=$(cat "$T/broker.pid")
CHILDREN+=("$pid")
mbctl ping >/dev/null || fail "daemon not answering right after start"
[ "$(mbctl --json stats | json_int pid)" = "$pid" ] || fail "pid file wrong"
status=0
"$BIN/mbrokerd" --socket "$SOCK" --instance "$INSTANCE-b" --daemon \
	--pid-file "$T/broker.pid" 2>"$T/second.log" || status=$?
[ $status -eq 2 ] || fail "a second broker on the socket exited $status"
[ "$(cat "$T/broker.pid" 2>/dev/null)" = "$pid" ] ||
	fail "the refused broker removed the first one's pid file"
kill -TERM "$pid"
# Not our child: once it exits it is a zombie until init reaps it.
daemon_gone() {
	! kill -0 "$pid" 2>/dev/null || grep -q '^State:.*Z' "/proc/$pid/status"
}
wait_until 10 daemon_gone || fail "daemon did not stop"
[ ! -e "$T/broker.pid" ] || fail "pid file left"
assert_no_shm

status=0
"$BIN/mbrokerd" --socket "$SOCK" --instance "$INSTANCE" --daemon \
	--pid-file "$T/no/such/dir/broker.pid" 2>"$T/nopid.log" || status=$?
if [ $status -eq 0 ]; then
	mbctl shutdown >/dev/null 2>&1 || true
	fail "--daemon exited 0 without writing its pid file"
fi
[ $status -eq 2 ] || fail "--daemon without a pid file exited $status, not 2"
grep -q "cannot write pid file $T/no/such/dir/broker.pid: No such file or directory" \
	"$T/nopid.log" || fail "no reason given: $(cat "$T/nopid.log")"
[ ! -e "$SOCK" ] || fail "the failed broker left its socket"
wait_until 5 sh -c "! mbctl ping" || fail "a broker still answers"
assert_no_shm
