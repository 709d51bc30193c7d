# SPDX-License-Identifier: MIT
# mbworker attaching a bundle (a model made of many files), against
# tests/tools/fake_broker.py serving a directory as the broker does (no
# broker needed): it maps all 11 members (descriptors in two messages),
# verifies each member's checksum and the bundle's, reads every member in
# its passes, prints a tensor of a safetensors member with the member it
# lies in, and ends with status 3 when the bundle's checksum is not the
# one its members give; mbctl list says how many files it has.
. "$(dirname "$0")/lib.sh"

mkdir -p "$T/b/sub"
for i in 0 1 2 3 4 5 6 7; do
	head -c $((1000 + 5000 * i)) /dev/urandom >"$T/b/raw$i"
done
: >"$T/b/empty"
head -c 70000 /dev/urandom >"$T/b/sub/deep"
make_model "$T/b/model.safetensors" 100000
echo '{"name":"b","state":"READY","format":"bundle","generation":1,"size":1,"checksum":"0123456789abcdef","tensors":2,"members":11}' \
	>"$T/model.json"
MB_BIN="$BIN" ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0:detect_leaks=0" \
	/usr/bin/python3 "$(dirname "$0")/../tools/fake_broker.py" \
	"$SOCK" "$T/model.json" "b=$T/b" >"$T/requests.log" 2>"$T/fake.log" &
CHILDREN+=($!)
wait_until 10 mbctl ping || fail "the fake broker did not start"

total=$(find "$T/b" -type f -exec cat {} + | wc -c)
start_worker b --verbose --interval 5 --passes 2 --tensor layers.0.weight
worker_exited_with "$WORKER_PID" 0
grep -q "attached b generation 1, $total bytes, .* checksum ok" "$WORKER_LOG" ||
	fail "attach: $(cat "$WORKER_LOG")"
grep -q "^tensor layers.0.weight F32 .* at offset [0-9]* of model.safetensors, first bytes" \
	"$WORKER_LOG" || fail "tensor: $(cat "$WORKER_LOG")"
grep -q "pass 2 generation 1 checksum ok" "$WORKER_LOG" ||
	fail "passes: $(cat "$WORKER_LOG")"
grep -q "^members #1 8$" "$T/requests.log" ||
	fail "second page: $(cat "$T/requests.log")"

mbctl list | grep -q "^b  *READY  *bundle .* xxh3 0123456789abcdef, 11 members, 2 tensors$" ||
	fail "list: $(mbctl list)"

# A bundle checksum that the members do not give: exit 3.
"$BIN/mbctl" --socket "$SOCK" load b /m.corrupt --replace >/dev/null ||
	fail "corrupt reload"
start_worker b
worker_exited_with "$WORKER_PID" 3
grep -q "checksum mismatch on b" "$WORKER_LOG" ||
	fail "mismatch: $(cat "$WORKER_LOG")"
