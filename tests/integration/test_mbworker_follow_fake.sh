# SPDX-License-Identifier: MIT
# mbworker's side of a replace, against tests/tools/fake_broker.py (no
# broker needed): on each "replaced" event it attaches the new generation,
# checks its checksum and only then detaches the old one (the fake logs the
# order), its passes then read the new generation, and at exit it says how
# many times it was replaced and that it served 0 ms without a model; with
# --no-follow it stays where it was; a new generation whose bytes are not
# what the broker advertised ends it with status 3.
. "$(dirname "$0")/lib.sh"

echo '{"name":"w","state":"READY","format":"raw","generation":1,"size":8192}' \
	>"$T/model.json"
# Under `make asan` the library it loads for checksums is instrumented:
# the sanitizer runtime then comes after Python's own libraries.
MB_BIN="$BIN" ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0:detect_leaks=0" \
	/usr/bin/python3 "$(dirname "$0")/../tools/fake_broker.py" \
	"$SOCK" "$T/model.json" >"$T/requests.log" 2>"$T/fake.log" &
CHILDREN+=($!)
wait_until 10 mbctl ping || fail "the fake broker did not start"

start_worker w --verbose --interval 5
follower=$WORKER_PID follower_log=$WORKER_LOG
start_worker w --verbose --interval 5 --no-follow
stayer=$WORKER_PID stayer_log=$WORKER_LOG
wait_until 10 grep -q "pass 1 generation 1 checksum ok" "$follower_log" ||
	fail "no pass: $(cat "$follower_log")"
wait_until 10 grep -q "pass 1 generation 1 checksum ok" "$stayer_log" ||
	fail "no pass: $(cat "$stayer_log")"

for gen in 2 3; do
	mbctl reload w >/dev/null || fail "reload"
	wait_until 10 grep -q "followed w from generation $((gen - 1)) to $gen, checksum ok" "$follower_log" ||
		fail "did not follow to $gen: $(tail -n 3 "$follower_log")"
	wait_until 10 grep -q "pass [0-9]* generation $gen checksum ok" "$follower_log" ||
		fail "no pass of $gen: $(tail -n 3 "$follower_log")"
done
mbctl unload w >/dev/null || fail "unload"
worker_exited_with "$follower" 0
worker_exited_with "$stayer" 0
grep -q "^mbworker: replaced 2 time(s), served without a model 0 ms$" "$follower_log" ||
	fail "exit line: $(cat "$follower_log")"
sed -n 's/.* pass [0-9]* generation \([0-9]*\) .*/\1/p' "$follower_log" |
	sort -c -n || fail "a pass read an older generation"
grep "pass [0-9]* generation" "$follower_log" | grep -v "checksum ok$" &&
	fail "a pass read bytes that do not match"
grep -q "^mbworker: replaced 0 time(s), served without a model 0 ms$" "$stayer_log" &&
	! grep -q "generation [23]" "$stayer_log" ||
	fail "--no-follow: $(cat "$stayer_log")"

# The fake saw a newer generation attached before each detach, and one
# detach per follow.
awk '/^attach w / { gen[$4] = $3; if ($3 > newest) newest = $3 }
	/^detach / { if (!(newest > gen[$2])) bad = 1; n++ }
	END { exit bad || n != 2 }' "$T/requests.log" ||
	fail "attaches and detaches: $(grep "tach" "$T/requests.log")"

# A new generation that does not verify: exit 3, said on stderr.
start_worker w --interval 5
wait_until 10 grep -q "attached w generation 3" "$WORKER_LOG" ||
	fail "no attach: $(cat "$WORKER_LOG")"
"$BIN/mbctl" --socket "$SOCK" load w /m.corrupt --replace >/dev/null ||
	fail "corrupt reload"
worker_exited_with "$WORKER_PID" 3
grep -q "checksum mismatch on w generation 4" "$WORKER_LOG" ||
	fail "mismatch: $(cat "$WORKER_LOG")"
