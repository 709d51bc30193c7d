# SPDX-License-Identifier: MIT
# The timeout errors exactly as docs/protocol.md shows them, against a
# worker that never acks: an unload's reply has only id, ok and error at
# the top level, and inside error, beside code and message, every member
# of the unload reply with state ERROR, plus pids naming the worker; a
# shutdown's the same with the shutdown reply's members.
. "$(dirname "$0")/lib.sh"

make_model "$T/m.safetensors" 1000000
start_broker --shutdown-timeout 5
load m "$T/m.safetensors"
start_worker m --no-ack
wait_attached 1

# check_reply JSON WANT_ERROR_MEMBERS: the error reply's shape, in python3
# (which scripts/install-deps.sh installs for the Python client).
check_reply() {
	python3 - "$1" "$2" "$WORKER_PID" <<'EOF' || fail "reply: $1"
import json, sys
reply, want, pid = json.loads(sys.argv[1]), sys.argv[2].split(), int(sys.argv[3])
assert sorted(reply) == ["error", "id", "ok"], sorted(reply)
assert reply["ok"] is False
err = reply["error"]
assert sorted(err) == sorted(["code", "message", "pids"] + want), sorted(err)
assert err["code"] == "timeout" and err["pids"] == [pid], err
assert all(type(v) is int for k, v in err.items()
           if k not in ("code", "message", "pids", "model", "state")), err
EOF
}

status=0
out=$(mbctl --json unload m --timeout 0.2 2>/dev/null) || status=$?
[ $status -eq 1 ] || fail "unload exited $status: $out"
check_reply "$out" "model generation state freed_bytes shmem_before_kb \
shmem_after_kb waited_ms segments_unlinked"
case "$out" in *'"state":"ERROR"'*) ;; *) fail "unload state: $out" ;; esac

status=0
out=$(mbctl --json shutdown --timeout 0.2 2>/dev/null) || status=$?
[ $status -eq 1 ] || fail "shutdown exited $status: $out"
check_reply "$out" "elapsed_ms models_unloaded freed_bytes shmem_before_kb \
shmem_after_kb elapsed_us notify_us wait_us release_us"
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 1 ] || fail "broker exited $BROKER_STATUS, not 1"
assert_no_shm
