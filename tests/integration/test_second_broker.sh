# SPDX-License-Identifier: MIT
# One broker per instance: a second one exits 2 with "already running
# (pid N)" and touches nothing of the first, however many times it is
# tried; a broker of another instance on the same socket path exits 2 too,
# leaving the live socket alone.  Against a first broker that is alive but
# stopped (SIGSTOP), with its lock's and its socket's backlogs full, a
# second broker still decides at once: exit 2 within 5 s, never a hang.
. "$(dirname "$0")/lib.sh"

# expect_refused MESSAGE ARGS...: mbrokerd ARGS exits 2 saying MESSAGE,
# within 5 s (after which it gets SIGTERM, then SIGKILL).
expect_refused() {
	local message=$1 status=0 pid t0
	shift
	t0=$(now_ms)
	"$BIN/mbrokerd" "$@" 2>"$T/refused.log" &
	pid=$!
	CHILDREN+=("$pid")
	if ! wait_until 5 sh -c "! kill -0 $pid"; then
		kill -TERM "$pid"
		wait_until 2 sh -c "! kill -0 $pid" ||
			fail "mbrokerd $* hangs and ignores SIGTERM"
		fail "mbrokerd $* still running after 5 s"
	fi
	wait "$pid" || status=$?
	[ $status -eq 2 ] || fail "mbrokerd $* exited $status, not 2"
	grep -q "$message" "$T/refused.log" ||
		fail "no '$message': $(cat "$T/refused.log")"
	assert_between "$(elapsed_since "$t0")" 0 5000 "time to refuse"
}

start_broker
# The lock's backlog must not fill with the refused: each is told the pid.
for i in 1 2 3 4 5 6 7 8 9 10; do
	expect_refused "already running (pid $BROKER_PID)" \
		--socket "$T/other.sock" --instance "$INSTANCE"
done
[ ! -e "$T/other.sock" ] || fail "second broker created a socket"
expect_refused "another broker listens on $SOCK" \
	--socket "$SOCK" --instance "$INSTANCE-b"
ls /dev/shm | grep -q "mbroker\.$INSTANCE-b\." &&
	fail "the refused broker left names: $(ls /dev/shm)"
mbctl ping >/dev/null || fail "first broker stopped answering"

# Stopped: nothing answers, the backlogs fill (clients that connected and
# wait fill the socket's), and a newcomer must still decide at once.
EXTRA_CLEANUP="kill -CONT $BROKER_PID 2>/dev/null"
kill -STOP "$BROKER_PID"
python3 - "$SOCK" >"$T/filler.log" 2>&1 <<'PY' &
import socket, sys, time
held = []
while True:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.setblocking(False)
    try:
        s.connect(sys.argv[1])
    except BlockingIOError:
        break
    held.append(s)
print("held", len(held), flush=True)
time.sleep(600)
PY
CHILDREN+=("$!")
wait_until 10 grep -q held "$T/filler.log" || fail "no filler: $(cat "$T/filler.log")"
for i in 1 2 3 4 5 6 7 8 9 10 11 12; do
	expect_refused "instance $INSTANCE: already running" \
		--socket "$T/other.sock" --instance "$INSTANCE"
done
expect_refused "another broker listens on $SOCK (it accepts nobody: stopped?)" \
	--socket "$SOCK" --instance "$INSTANCE-c"
ls /dev/shm | grep -q "mbroker\.$INSTANCE-c\." &&
	fail "the refused broker left names: $(ls /dev/shm)"
kill -CONT "$BROKER_PID"
mbctl ping >/dev/null || fail "first broker stopped answering"
shutdown_clean
