# SPDX-License-Identifier: MIT
# --log-format json: every line the broker writes is one JSON object
# (time, level, pid, message), and every lifecycle event is there: load
# start and end with bytes and duration, attach and detach with the pid,
# the unload, each shutdown step, memory before and after.  A message
# longer than a line is cut at a character and still parses.
. "$(dirname "$0")/lib.sh"

make_model "$T/m.safetensors" 1000000
start_broker --log-format json
load m "$T/m.safetensors"
"$BIN/mbworker" --socket "$SOCK" --model m --passes 1 >"$T/w.log" ||
	fail "worker failed"
worker=$(sed -n 's/^mbworker\[\([0-9]*\)\].*/\1/p' "$T/w.log" | head -n1)
mbctl unload m >/dev/null
load m "$T/m.safetensors"
# A path longer than a log line, of quotes, backslashes and two-byte
# characters: its lines are cut, still JSON, and say they were cut.
long="$T"
for _ in $(seq 12); do long="$long/$(printf '"\\\303\251%.0s' $(seq 40))"; done
mbctl load long "$long" --wait >/dev/null 2>&1 && fail "load of $long succeeded"
mbctl unload long >/dev/null || fail "unload of the failed load"
shutdown_clean
/usr/bin/python3 - "$BROKER_LOG" "$worker" <<'PY' || fail "log: $(cat "$BROKER_LOG")"
import json, re, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert all(set(l) == {"time", "level", "pid", "message"} for l in lines)
text = "\n".join(l["message"] for l in lines)
cut = [l["message"] for l in lines
       if re.match(r"model long: (loading|load failed)", l["message"])]
assert len(cut) == 2 and all(m.endswith("...") for m in cut), cut
for pattern in [r"model m: loading .* as safetensors",
                r"model m: READY, 1001352 bytes in \d+ ms",
                r"model m: attached by pid %s" % sys.argv[2],
                r"model m: detached by pid %s" % sys.argv[2],
                r"model m: unloaded in \d+ ms, 1001352 bytes freed.*Shmem \d+ kB -> \d+ kB",
                r"shutdown requested by pid \d+: 1 model\(s\)",
                r"shutdown complete in \d+ ms.*Shmem \d+ kB -> \d+ kB",
                r"exiting with status 0"]:
    assert re.search(pattern, text), pattern
PY
