# SPDX-License-Identifier: MIT
# A client written from docs/protocol.md alone (tests/tools/protocol_client.py,
# the system python3, standard library only) against real brokers: every
# operation and event, every error code it can provoke, every member of
# every reply (no more, no fewer), the descriptor an attach passes, and each
# stated limit at its bound and one past it. The client starts its brokers
# on instances "$INSTANCE-N" (so lib.sh's cleanup removes their names) and
# writes their pids to $T/pids, which the cleanup kills.
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
[ -x "$PY" ] || fail "no $PY"
EXTRA_CLEANUP='[ -f "$T/pids" ] && while read -r p; do kill -9 "$p" 2>/dev/null; done <"$T/pids"'

start=$(now_ms)
"$PY" "$(dirname "$0")/../tools/protocol_client.py" "$BIN" "$T" "$INSTANCE" \
	>"$T/client.log" 2>&1 || fail "the document and the broker disagree:
$(grep -E 'MISMATCH|Error|Traceback' "$T/client.log" | head -n 40)"
elapsed=$(($(now_ms) - start))
[ "$elapsed" -lt 25000 ] || fail "took $elapsed ms"
assert_no_shm
