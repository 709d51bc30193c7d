# SPDX-License-Identifier: MIT
# mbctl's replace commands, against tests/tools/fake_broker.py (no broker
# needed): `load --replace` and `reload` send the load requests of
# docs/protocol.md (reload without a path), a refused replace names the
# generation still serving, bad options are usage errors, and `list`
# shows a row per generation while a model has more than one.
. "$(dirname "$0")/lib.sh"

cat >"$T/model.json" <<'JSON'
{"name":"w","state":"READY","format":"raw","generation":2,"size":8192,
 "attached":3,"checksum":"00000000000000ab","tensors":0,"load_ms":5,
 "generations":[
  {"generation":1,"role":"draining","size":8192,
   "checksum":"00000000000000aa","attached":2,"pids":[123,456],
   "drain_deadline_ms":4200},
  {"generation":2,"role":"current","size":8192,
   "checksum":"00000000000000ab","attached":1,"pids":[789]},
  {"generation":3,"role":"next","size":8192,
   "bytes_done":4096,"attached":0,"pids":[]}]}
JSON
/usr/bin/python3 "$(dirname "$0")/../tools/fake_broker.py" "$SOCK" \
	"$T/model.json" >"$T/requests.log" 2>"$T/fake.log" &
CHILDREN+=($!)
wait_until 10 mbctl ping || fail "the fake broker did not start"

# requests N: the N-th load request the fake received.
request() {
	sed -n "${1}p" "$T/requests.log"
}

mbctl reload w >"$T/out" || fail "reload: $(cat "$T/out")"
[ "$(request 1)" = '{"id": 2, "name": "w", "op": "load", "replace": true, "wait": false}' ] ||
	fail "reload sent $(request 1)"
grep -q "^w LOADING generation 3; generation 2 serves until it is READY" "$T/out" ||
	fail "reload said $(cat "$T/out")"

mbctl reload w --wait --policy resource --drain-timeout 3 >"$T/out" 2>&1 ||
	fail "reload --wait: $(cat "$T/out")"
[ "$(request 2)" = '{"id": 2, "name": "w", "op": "load", "policy": "resource", "replace": true, "timeout": 3.0, "wait": true}' ] ||
	fail "reload --wait sent $(request 2)"
grep -q "^w READY: generation 2, .* (unloaded first: a gap in service)" "$T/out" ||
	fail "reload --wait said $(cat "$T/out")"

(cd "$T" && "$BIN/mbctl" --socket "$SOCK" load w m.bin --replace \
	--drain-timeout 2.5) >/dev/null || fail "load --replace failed"
[ "$(request 3)" = "{\"id\": 2, \"name\": \"w\", \"op\": \"load\", \"path\": \"$T/m.bin\", \"replace\": true, \"timeout\": 2.5, \"wait\": false}" ] ||
	fail "load --replace sent $(request 3)"

status=0
mbctl load w /m.bin --replace --policy availability --wait >"$T/out" 2>&1 ||
	status=$?
[ "$status" -eq 1 ] || fail "a refused replace exited $status"
grep -q "two copies need 16384 bytes (not enough shared memory)" "$T/out" &&
	grep -q "w still serves generation 2" "$T/out" ||
	fail "a refused replace said $(cat "$T/out")"

for bad in "load w /m.bin --policy resource" "load w /m.bin --replace --policy fast" \
	"load w /m.bin --replace --drain-timeout -1" "reload w --replace" "reload"; do
	status=0
	# shellcheck disable=SC2086
	mbctl $bad >/dev/null 2>&1 || status=$?
	[ "$status" -eq 2 ] || fail "mbctl $bad exited $status, not 2"
done
[ "$(wc -l <"$T/requests.log")" -eq 4 ] || fail "usage errors sent requests"

mbctl list >"$T/list" || fail "list failed"
grep -q "^w  *READY  *raw .* 2  *3  xxh3 00000000000000ab" "$T/list" &&
	grep -q "^  draining  *DRAINING .* 1  *2  deadline in 4.2 s, pids 123 456$" "$T/list" &&
	grep -q "^  current  *READY .* 2  *1  xxh3 00000000000000ab$" "$T/list" &&
	grep -q "^  next  *LOADING .* 3  *0  50% loaded$" "$T/list" ||
	fail "list: $(cat "$T/list")"
