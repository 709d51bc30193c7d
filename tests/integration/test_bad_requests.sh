# SPDX-License-Identifier: MIT
# Hostile input on the control socket: every message of the corpus
# (tests/corpus/requests, each named after the error code it must get),
# 100k nested brackets, the largest record the kernel will carry (a 10 MB
# one cannot be sent on SOCK_SEQPACKET at all), a message sent byte by
# byte, a flood of requests whose replies are never read, a client that
# never says hello, more clients than --max-connections.  Afterwards a
# fresh client is served, the attached worker still holds its model and
# the registry is unchanged.
. "$(dirname "$0")/lib.sh"

CORPUS="$(dirname "$0")/../corpus/requests"
make_model "$T/m.safetensors" 1000000
start_broker --idle-timeout 0.5 --max-connections 8
load m "$T/m.safetensors"
start_worker m
wait_attached 1
before=$(mbctl --json list)

"$BIN/mbfault" corpus "$SOCK" "$CORPUS"/*.msg >"$T/corpus.out"
[ "$(wc -l <"$T/corpus.out")" -eq "$(ls "$CORPUS"/*.msg | wc -l)" ] ||
	fail "corpus run incomplete: $(cat "$T/corpus.out")"
while read -r file code; do
	[ "${file%%.*}" = "$code" ] || fail "$file got '$code'"
done <"$T/corpus.out"

"$BIN/mbfault" hostile "$SOCK" >"$T/hostile.out"
grep -qx "nested bad_request" "$T/hostile.out" || fail "$(cat "$T/hostile.out")"
grep -q "^huge 10485760 unsendable" "$T/hostile.out" ||
	fail "a 10 MB record went through: $(cat "$T/hostile.out")"
grep -q "^huge [0-9]* bad_request$" "$T/hostile.out" ||
	fail "the largest record was not refused: $(cat "$T/hostile.out")"
grep -qx "bytewise 20/20 bad_request" "$T/hostile.out" ||
	fail "$(cat "$T/hostile.out")"
grep -q "^flood dropped after" "$T/hostile.out" || fail "$(cat "$T/hostile.out")"
grep -qx "silent bad_request then closed" "$T/hostile.out" ||
	fail "$(cat "$T/hostile.out")"
assert_log "no hello within 0.5 s; closing"
assert_log "256 replies unread; dropping the client"

# Over --max-connections: refused with a reason, served again after.
"$BIN/mbfault" hold "$SOCK" 20 >"$T/hold.log" &
holder=$!
CHILDREN+=("$holder")
wait_until 10 grep -q "refused .* client(s): 8 connections already" "$BROKER_LOG" ||
	fail "no refusal logged"
status=0
err=$(mbctl ping 2>&1) || status=$?
[ $status -eq 3 ] || fail "ping while full exited $status: $err"
case "$err" in *"limit"*) ;; *) fail "refusal: $err" ;; esac
kill "$holder"
wait "$holder" 2>/dev/null || true

fresh_ping() { mbctl ping >/dev/null; }
wait_until 10 fresh_ping || fail "a fresh client is not served"
attached_is 1 || fail "the worker lost its attachment"
[ "$(mbctl --json list)" = "$before" ] || fail "the registry changed"
mbctl ping >/dev/null
shutdown_clean
