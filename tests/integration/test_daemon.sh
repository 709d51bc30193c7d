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
kill -TERM "$pid"
# Not our child: once it exits it is a zombie until init reaps it.
daemon_gone() {
	! kill -0 "$pid" 2>/dev/null || grep -q '^State:.*Z' "/proc/$pid/status"
}
wait_until 10 daemon_gone || fail "daemon did not stop"
[ ! -e "$T/broker.pid" ] || fail "pid file left"
assert_no_shm
