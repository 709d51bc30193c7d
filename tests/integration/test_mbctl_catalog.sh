# SPDX-License-Identifier: MIT
# mbctl's commands for many models, against tests/tools/fake_broker.py (no
# broker needed): `load NAME` without a path and `--keep-alive S` send the
# load request of docs/protocol.md, `pin` and `unpin` theirs, bad options
# are usage errors that send nothing, and the catalog and list tables show
# what the broker said (list: REASON, KEEP-ALIVE, IDLE).
. "$(dirname "$0")/lib.sh"

cat >"$T/model.json" <<'JSON'
{"name":"w","state":"READY","format":"safetensors","generation":2,
 "size":3145728,"attached":0,"path":"/models/w.safetensors",
 "checksum":"00000000000000ab","tensors":4,"load_ms":5,"pinned":false,
 "keep_alive_ms":1500,"reason":"autoload","idle_ms":83000,
 "generations":[{"generation":2,"role":"current","size":3145728,
  "checksum":"00000000000000ab","attached":0,"pids":[]}]}
JSON
/usr/bin/python3 "$(dirname "$0")/../tools/fake_broker.py" "$SOCK" \
	"$T/model.json" >"$T/requests.log" 2>"$T/fake.log" &
CHILDREN+=($!)
wait_until 10 mbctl ping || fail "the fake broker did not start"

request() {
	sed -n "${1}p" "$T/requests.log"
}

mbctl load w >"$T/out" || fail "load w: $(cat "$T/out")"
[ "$(request 1)" = '{"id": 2, "name": "w", "op": "load", "wait": false}' ] ||
	fail "load without a path sent $(request 1)"
mbctl load w --keep-alive 0 --wait >/dev/null 2>&1 || fail "load --keep-alive 0"
[ "$(request 2)" = '{"id": 2, "keep_alive": 0, "name": "w", "op": "load", "wait": true}' ] ||
	fail "load --keep-alive 0 sent $(request 2)"
(cd "$T" && "$BIN/mbctl" --socket "$SOCK" load w w.bin --keep-alive 2.5) \
	>/dev/null || fail "load with a path and --keep-alive failed"
[ "$(request 3)" = "{\"id\": 2, \"keep_alive\": 2.5, \"name\": \"w\", \"op\": \"load\", \"path\": \"$T/w.bin\", \"wait\": false}" ] ||
	fail "load PATH --keep-alive sent $(request 3)"

mbctl pin w >"$T/out" || fail "pin: $(cat "$T/out")"
[ "$(request 4)" = '{"id": 2, "name": "w", "op": "pin"}' ] || fail "pin sent $(request 4)"
[ "$(cat "$T/out")" = "w pinned (loaded)" ] || fail "pin said $(cat "$T/out")"
mbctl unpin other >"$T/out" || fail "unpin: $(cat "$T/out")"
[ "$(request 5)" = '{"id": 2, "name": "other", "op": "unpin"}' ] ||
	fail "unpin sent $(request 5)"
[ "$(cat "$T/out")" = "other unpinned (not loaded)" ] || fail "unpin said $(cat "$T/out")"
mbctl --json pin w | grep -q '"pinned": *true' || fail "pin --json"

for bad in "load w --keep-alive -1" "load w --keep-alive 86401" \
	"load w --keep-alive x" "load w --keep-alive" "reload w --keep-alive 1" \
	"load" "load --wait" "pin" "pin w x" "unpin" "catalog x"; do
	status=0
	# shellcheck disable=SC2086
	mbctl $bad >/dev/null 2>&1 || status=$?
	[ "$status" -eq 2 ] || fail "mbctl $bad exited $status, not 2"
done
[ "$(wc -l <"$T/requests.log")" -eq 6 ] || fail "usage errors sent requests"

mbctl catalog >"$T/out" || fail "catalog failed"
grep -q "^NAME  *FORMAT  *SIZE  *LOADED  *PATH$" "$T/out" &&
	grep -q "^w  *safetensors  *3.0 MiB yes  */models/w.safetensors$" "$T/out" ||
	fail "catalog: $(cat "$T/out")"
mbctl --json catalog | grep -q '"loaded": *true' || fail "catalog --json"

mbctl list >"$T/out" || fail "list failed"
grep -q "^NAME  *STATE  *FORMAT  *SIZE  *REASON  *KEEP-ALIVE  *IDLE  *GEN  *ATTACHED  *DETAIL$" "$T/out" &&
	grep -q "^w  *READY  *safetensors  *3.0 MiB autoload  *1.5 s  *83 s  *2  *0  xxh3 00000000000000ab" "$T/out" ||
	fail "list: $(cat "$T/out")"
