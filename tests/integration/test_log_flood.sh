# SPDX-License-Identifier: MIT
# Log flooding: a client that has each of 3000 requests refused gets 5
# lines in the log, then one per 10 s, and when it goes one line saying
# how many of its refusals were not logged.  Both kinds are tried: bad
# requests (any user) and requests the client has no right to make (as
# root, a client of another uid in --allow-gid asking to load).
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
USERS=4242
N=3000
cat >"$T/flood.py" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
s.send(b'{"id":1,"op":"hello","version":1}')
s.recv(65536)
refused = 0
for i in range(int(sys.argv[3])):
    s.send(sys.argv[2].encode())
    refused += b'"ok":false' in s.recv(65536)
print("refused", refused)
PY

# flood LINE REQUEST [AS...]: N refusals of REQUEST; LINE is how the log
# names each.  At most 5 lines and one per 10 s, then the summary.
flood() {
	local line=$1 request=$2 lines t0 elapsed muted
	shift 2
	t0=$(now_ms)
	"$@" "$PY" "$T/flood.py" "$SOCK" "$request" $N >"$T/flood.out" 2>&1 ||
		fail "flood: $(cat "$T/flood.out")"
	elapsed=$(elapsed_since "$t0")
	grep -qx "refused $N" "$T/flood.out" || fail "flood: $(cat "$T/flood.out")"
	summary() { grep -q "gone after $N refused request(s)" "$BROKER_LOG"; }
	wait_until 10 summary || fail "no summary line for $N refusals"
	lines=$(grep -c -- "$line" "$BROKER_LOG")
	assert_between "$lines" 5 $((5 + elapsed / 10000 + 1)) "lines for $N refusals in $elapsed ms"
	muted=$(grep -o "gone after $N refused request(s), [0-9]* of them not logged" \
		"$BROKER_LOG" | grep -o ", [0-9]*" | tr -dc 0-9)
	[ $((lines + muted)) -eq $N ] ||
		fail "$lines lines and $muted not logged for $N refusals"
}

if [ "$(id -u)" -eq 0 ]; then
	chmod 0711 "$T"
	SOCK="$T/sock/broker.sock"
	start_broker --allow-gid $USERS
else
	start_broker
fi
flood "bad request #" "{"
: >"$BROKER_LOG"
if [ "$(id -u)" -eq 0 ]; then
	flood "refused load from uid 5001" \
		'{"id":2,"op":"load","name":"x","path":"/nonexistent"}' \
		setpriv --reuid 5001 --regid $USERS --groups $USERS
fi
mbctl ping >/dev/null || fail "the broker does not answer"
shutdown_clean
