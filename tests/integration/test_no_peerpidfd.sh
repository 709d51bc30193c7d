# SPDX-License-Identifier: MIT
# A kernel without SO_PEERPIDFD (before 6.5, such as Debian 12's), made
# here by a getsockopt shim preloaded into the broker: each worker is
# still identified (it holds its end of the socket), so a hung worker and
# one that ignores the signal are killed at --kill-after while one that
# acks is left alone; a client that exited before the broker accepted it
# is never signalled, and the log says why, within the budget of all
# clients' lines (100, then 10 a second), however many there are.
. "$(dirname "$0")/lib.sh"

command -v cc >/dev/null || { echo "skipping: no C compiler for the shim" >&2; exit 77; }
if [ "${MB_VALGRIND:-}" = 1 ]; then
	echo "skipping: valgrind has no pidfd_open, so nothing is identified" >&2
	exit 77
fi
cat >"$T/shim.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>

/* SO_PEERPIDFD unknown, as before Linux 6.5; all else as the kernel says. */
int
getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	static int (*real)(int, int, int, void *, socklen_t *);
	static int said;

	if (level == SOL_SOCKET && name == 77) {
		if (!said++)
			fprintf(stderr, "shim: SO_PEERPIDFD hidden\n");
		errno = ENOPROTOOPT;
		return -1;
	}
	if (real == NULL)
		real = (int (*)(int, int, int, void *, socklen_t *))dlsym(
			RTLD_NEXT, "getsockopt");
	return real(fd, level, name, val, len);
}
C
cc -shared -fPIC -o "$T/shim.so" "$T/shim.c" -ldl || fail "cannot build the shim"
# An ASan broker wants its runtime first; the shim only adds a symbol.
BROKER_WRAPPER=(env LD_PRELOAD="$T/shim.so"
	ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
	"${BROKER_WRAPPER[@]}")

make_model "$T/m.safetensors" 4000000
start_broker --shutdown-timeout 10 --kill-after 0.3
assert_log "shim: SO_PEERPIDFD hidden"
load m "$T/m.safetensors"

# Accepted after it exited: no pidfd, no signal, and the log says why.
kill -STOP "$BROKER_PID"
"$BIN/mbfault" connect-exit "$SOCK"
kill -CONT "$BROKER_PID"
wait_until 10 grep -q "will not be signalled, only told on its socket: it exited before the broker accepted it" \
	"$BROKER_LOG" || fail "no line for a client gone before accept"

# 300 more, 100 at a time while the broker is stopped; a ping answered
# after them means all were accepted.
t0=$(now_ms)
for batch in 1 2 3; do
	kill -STOP "$BROKER_PID"
	for i in $(seq 100); do "$BIN/mbfault" connect-exit "$SOCK"; done
	kill -CONT "$BROKER_PID"
	mbctl ping >/dev/null || fail "the broker does not answer"
done
lines=$(grep -c "will not be signalled" "$BROKER_LOG" || true)
assert_between "$lines" 1 $((100 + $(elapsed_since "$t0") / 100 + 1)) \
	"lines for 301 clients gone before accept"

start_worker m
acker=$WORKER_PID
start_worker m --no-ack
deaf=$WORKER_PID
start_worker m
hung=$WORKER_PID
wait_attached 3
kill -STOP "$hung"
t0=$(now_ms)
kill -TERM "$BROKER_PID"
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS, not 0"
assert_between "$(elapsed_since "$t0")" 250 3000 "shutdown with --kill-after"
for pid in "$deaf" "$hung"; do
	assert_log "killed pid $pid, which still held it 0.3 s"
	worker_exited_with "$pid" 137
done
worker_exited_with "$acker" 0
grep -q "acknowledged" "$T/worker1.log" || fail "the acker: $(cat "$T/worker1.log")"
if grep "will not be signalled" "$BROKER_LOG" | grep -qv "exited before"; then
	fail "a worker was not identified: $(grep "will not be signalled" "$BROKER_LOG")"
fi
assert_no_shm

# A client holding many descriptors cannot stall the broker: it searches
# only the first 1024 of them for the client's socket (it searched all,
# two system calls each: 200 connections of a client with 19,000
# descriptors kept a ping waiting 8 s).  Such a client is not signalled.
start_broker
ulimit -n 20000 2>/dev/null || skip "cannot raise RLIMIT_NOFILE to 20000"
/usr/bin/python3 - "$SOCK" "$BIN/mbctl" <<'PY' || fail "see above"
import os, socket, subprocess, sys, time

path, mbctl = sys.argv[1], sys.argv[2]
null = os.open("/dev/null", os.O_RDONLY)
held = [os.dup(null) for _ in range(19000)]
conns = []
for _ in range(200):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(path)
    conns.append(s)
t0 = time.monotonic()
r = subprocess.run([mbctl, "--socket", path, "--timeout", "3", "ping"],
                   capture_output=True, text=True)
if r.returncode != 0:
    sys.exit("FAIL [test_no_peerpidfd]: ping behind 200 connections of a "
             "client with 19,000 descriptors: exit %d after %.1f s: %s"
             % (r.returncode, time.monotonic() - t0, r.stderr))
PY
assert_log "will not be signalled, only told on its socket: it holds too many descriptors to search for its socket"
shutdown_clean
