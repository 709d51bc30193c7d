# SPDX-License-Identifier: MIT
# What a model costs, as `mbctl memory` (the memory request) says: its
# bytes once, and for each of 4 workers holding it (each read every
# byte) the Pss of its pages in that worker from /proc/PID/smaps, about a
# quarter each, summing to about one copy; the table names each pid; a
# model nobody holds has no holders.
. "$(dirname "$0")/lib.sh"

size=8388608
make_model --raw "$T/m.bin" "$size"
make_model --raw "$T/idle.bin" 4096
start_broker
load m "$T/m.bin"
load idle "$T/idle.bin"
pids=()
for _ in 1 2 3 4; do
	start_worker m
	pids+=("$WORKER_PID")
done
wait_attached 4
for n in $(seq "$NWORKERS"); do
	wait_until 10 grep -q "checksum ok" "$T/worker$n.log" ||
		fail "worker $n did not read the model: $(cat "$T/worker$n.log")"
done
mbctl --json memory >"$T/memory.json" || fail "memory failed"
/usr/bin/python3 - "$T/memory.json" "$size" "${pids[@]}" <<'PY' || fail "memory: $(cat "$T/memory.json")"
import json, sys
reply = json.load(open(sys.argv[1]))
size, pids = int(sys.argv[2]), sorted(int(p) for p in sys.argv[3:])
models = {m["name"]: m for m in reply["models"]}
m = models["m"]
assert m["bytes"] == size, m
assert sorted(h["pid"] for h in m["holders"]) == pids, m
kb = size // 1024
for h in m["holders"]:
    # a quarter of the model each (each mapped every page), give or take
    assert kb / 4 * 0.8 <= h["pss_kb"] <= kb / 4 * 1.2, h
assert kb * 0.8 <= m["holders_pss_kb"] <= kb * 1.1, m
assert models["idle"]["holders"] == [] and models["idle"]["holders_pss_kb"] == 0
PY
mbctl memory >"$T/memory.txt" || fail "mbctl memory failed"
for pid in "${pids[@]}"; do
	grep -q "pid $pid " "$T/memory.txt" || fail "table lacks $pid: $(cat "$T/memory.txt")"
done
grep -q "^m .* once, .* in 4 holder(s)$" "$T/memory.txt" ||
	fail "table: $(cat "$T/memory.txt")"
shutdown_clean
