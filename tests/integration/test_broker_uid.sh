# SPDX-License-Identifier: MIT
# Clients check who serves the socket (SO_PEERCRED) before saying
# anything: a broker running as another user (here nobody, as one who
# bound the path first would) is refused by mbctl (exit 3), the C library
# (MB_EPEER, through mbworker) and the Python client (UntrustedBroker),
# each naming the uid; told to expect that uid (--broker-uid,
# MBROKER_BROKER_UID, broker_uid=) they connect, and an expectation of
# another uid is refused again.  Needs root to run a broker as nobody.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -ne 0 ] || ! command -v setpriv >/dev/null; then
	echo "SKIP: needs root and setpriv to run a broker as another user"
	exit 77
fi
OTHER=$(id -u nobody)
chmod 0711 "$T"
mkdir -m 0700 "$T/other"
make_model "$T/other/m.safetensors" 100000
chown -R "$OTHER" "$T/other"
SOCK="$T/other/b.sock"
setpriv --reuid="$OTHER" --regid="$(id -g nobody)" --clear-groups \
	"$BIN/mbrokerd" --socket "$SOCK" --instance "$INSTANCE-o" \
	--model "m=$T/other/m.safetensors" 2>>"$BROKER_LOG" &
BROKER_PID=$!
CHILDREN+=("$BROKER_PID")
wait_until 20 mbctl --broker-uid "$OTHER" ping || fail "broker did not start"
wait_until 20 sh -c "'$BIN/mbctl' --socket '$SOCK' --broker-uid $OTHER list |
	grep -q READY" || fail "model not READY"

# mbctl: refused by default and when told another uid.
for args in "" "--broker-uid 4242"; do
	status=0
	# shellcheck disable=SC2086
	mbctl $args ping >/dev/null 2>"$T/mbctl.err" || status=$?
	[ "$status" -eq 3 ] || fail "mbctl $args ping exited $status, not 3"
	grep -q "served by uid $OTHER" "$T/mbctl.err" ||
		fail "mbctl message: $(cat "$T/mbctl.err")"
done
MBROKER_BROKER_UID=4242 mbctl ping >/dev/null 2>&1 &&
	fail "MBROKER_BROKER_UID=4242 was not enforced"
mbctl --broker-uid "$OTHER" ping >/dev/null || fail "--broker-uid refused"
MBROKER_BROKER_UID=$OTHER mbctl ping >/dev/null ||
	fail "MBROKER_BROKER_UID refused"

# The C library, through mbworker.
status=0
"$BIN/mbworker" --socket "$SOCK" --model m --passes 1 >/dev/null \
	2>"$T/worker.err" || status=$?
[ "$status" -ne 0 ] || fail "mbworker trusted a broker of uid $OTHER"
grep -q "served by an unexpected user" "$T/worker.err" ||
	fail "mbworker message: $(cat "$T/worker.err")"
MBROKER_BROKER_UID=$OTHER "$BIN/mbworker" --socket "$SOCK" --model m \
	--passes 1 >"$T/worker.out" 2>&1 ||
	fail "mbworker with MBROKER_BROKER_UID: $(cat "$T/worker.out")"

# The Python client.
PYTHONPATH="$(dirname "$0")/../../bindings/python" /usr/bin/python3 - \
	"$SOCK" "$OTHER" >"$T/python.log" 2>&1 <<'PY' || fail "python: $(cat "$T/python.log")"
import os, sys
import mbroker
sock, other = sys.argv[1], int(sys.argv[2])
for kwargs in ({}, {"broker_uid": 4242}):
    try:
        mbroker.connect(sock, **kwargs)
    except mbroker.UntrustedBroker as e:
        assert e.uid == other and f"served by uid {other}" in str(e), e
    else:
        raise SystemExit(f"connected with {kwargs}")
with mbroker.connect(sock, broker_uid=other) as c:
    c.attach("m").detach()
os.environ["MBROKER_BROKER_UID"] = str(other)
with mbroker.connect(sock) as c:
    c.request("ping")
PY

mbctl --broker-uid "$OTHER" shutdown >/dev/null || fail "shutdown failed"
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS"
