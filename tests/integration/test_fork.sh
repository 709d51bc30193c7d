# SPDX-License-Identifier: MIT
# A worker that forks after attaching: the child inherits the mapping and
# the connection.  The lease is the connection: it ends when an ack or a
# detach arrives on it, or when every process holding it has closed it.
# The parent dying while the child lives keeps the lease (the child still
# reads the weights) and the child's ack ends it; the child dying changes
# nothing for the parent; when both ack, the second ack is harmless.
. "$(dirname "$0")/lib.sh"

make_model "$T/m.safetensors" 4000000
start_broker --shutdown-timeout 5
load m "$T/m.safetensors"

# fork_worker: starts `mbfault fork`; sets PARENT, CHILD, FORK_LOG.
fork_worker() {
	FORK_LOG="$T/fork$RANDOM.log"
	"$BIN/mbfault" fork "$SOCK" m >"$FORK_LOG" 2>&1 &
	CHILDREN+=("$!")
	wait_until 10 grep -q "child .* ready" "$FORK_LOG" || fail "fork failed"
	PARENT=$(sed -n 's/^parent \([0-9]*\) child.*/\1/p' "$FORK_LOG")
	CHILD=$(sed -n 's/^parent [0-9]* child \([0-9]*\)/\1/p' "$FORK_LOG")
	CHILDREN+=("$CHILD")
}

# Parent dies, child lives: still attached, the child acks at shutdown.
fork_worker
kill -9 "$PARENT"
exited_listed() {
	mbctl --json workers | grep -q "\"pid\":$PARENT,\"exited\":true"
}
wait_until 10 exited_listed || fail "workers does not show $PARENT exited"
attached_is 1 || fail "the lease ended with the parent though the child holds it"
t0=$(now_ms)
mbctl shutdown >/dev/null || fail "shutdown failed"
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS"
assert_between "$(elapsed_since "$t0")" 0 3000 "shutdown released by the child"
wait_until 10 grep -q "child $CHILD acked on event" "$FORK_LOG" ||
	fail "child did not ack: $(cat "$FORK_LOG")"
assert_no_shm

# Child dies: nothing changes; the parent acks on the signal.
start_broker --shutdown-timeout 5
load m "$T/m.safetensors"
fork_worker
kill -9 "$CHILD"
# Nobody reaps the child (its parent waits for the signal), so it stays a
# zombie, whose descriptors are closed: dead is gone or state Z.
dead() { [ ! -e "/proc/$1" ] || grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
wait_until 10 dead "$CHILD" || fail "child $CHILD still runs after SIGKILL"
attached_is 1 || fail "the child's death released the parent's lease"
mbctl shutdown >/dev/null || fail "shutdown failed"
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS"
wait_until 10 grep -q "parent $PARENT acked on signal" "$FORK_LOG" ||
	fail "parent did not ack: $(cat "$FORK_LOG")"
assert_no_shm

# Both ack: one release, no error, a clean shutdown.
start_broker --shutdown-timeout 5
load m "$T/m.safetensors"
fork_worker
mbctl shutdown >/dev/null || fail "shutdown failed"
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS"
wait_until 10 grep -q "parent $PARENT acked" "$FORK_LOG" || fail "parent"
wait_until 10 grep -q "child $CHILD acked" "$FORK_LOG" || fail "child"
assert_no_shm
