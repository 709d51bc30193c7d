#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# demo.sh - the main job, end to end, on a private instance: makes a
# synthetic safetensors model, starts a broker, loads the model, starts 4
# reference workers that verify and read every weight, prints the memory
# picture (sum of Pss against 4 private copies), shuts down and prints the
# outcome and its timings.  Exits 0 only if everything went as promised and
# nothing is left in /dev/shm.
#   scripts/demo.sh [BUILD_DIR]    (MODEL_BYTES to change the size)
set -euo pipefail

BUILD=$(cd "${1:-build}" && pwd)
MODEL_BYTES=${MODEL_BYTES:-268435456}
WORKERS=4
DEMO="$BUILD/demo"
MODEL="$DEMO/whisper-demo.safetensors"
. "$(dirname "$0")/lib.sh"
script_setup demo

say() { printf '%s\n' "$*"; }
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
mib() { awk -v kb="$1" 'BEGIN {printf "%.1f MiB", kb / 1024}'; }

mkdir -p "$DEMO"
if [ "$(stat -c %s "$MODEL" 2>/dev/null || echo 0)" -lt "$MODEL_BYTES" ]; then
	say "== making a synthetic $((MODEL_BYTES >> 20)) MiB safetensors model"
	"$BUILD/mkmodel" --tensors 32 "$MODEL" "$MODEL_BYTES"
fi

say "== starting mbrokerd (instance $INSTANCE, log $DEMO/broker.log)"
"$BUILD/mbrokerd" --socket "$SOCK" --instance "$INSTANCE" \
	--shutdown-timeout 10 2>"$DEMO/broker.log" &
broker=$!
pids+=("$broker")
wait_for 10 mbctl ping || { say "broker did not start"; exit 1; }

say "== loading the model"
mbctl load whisper "$MODEL" --wait
mbctl list

say "== starting $WORKERS workers"
for i in $(seq 1 $WORKERS); do
	"$BUILD/mbworker" --socket "$SOCK" --model whisper --interval 200 \
		>"$DEMO/worker$i.log" 2>&1 &
	pids+=("$!")
done
attached() { [ "$(mbctl --json stats | grep -o '"workers":[0-9]*' | cut -d: -f2)" = $WORKERS ]; }
verified() { [ "$(cat "$DEMO"/worker*.log | grep -c 'checksum ok')" = $WORKERS ]; }
wait_for 30 attached || { say "workers did not attach"; exit 1; }
wait_for 30 verified || { say "workers did not verify"; exit 1; }
cat "$DEMO"/worker*.log
mbctl workers

say "== memory: sum of Pss (/proc/PID/smaps_rollup)"
model_kb=$(($(stat -c %s "$MODEL") / 1024))
total=0
printf '  %-22s %12s\n' "process" "Pss"
for i in "${!pids[@]}"; do
	kb=$(pss_kb "${pids[$i]}")
	total=$((total + kb))
	[ "$i" -eq 0 ] && name="mbrokerd" || name="mbworker $i"
	printf '  %-22s %12s\n' "$name (${pids[$i]})" "$(mib "$kb")"
done
copies=$((model_kb * WORKERS))
printf '  %-22s %12s\n' "sum, shared" "$(mib $total)"
printf '  %-22s %12s\n' "$WORKERS private copies" "$(mib $copies)"
awk -v t=$total -v c=$copies -v m=$model_kb 'BEGIN {
	printf "  shared costs %.2f x one model; %.1f x less than %d copies\n",
	       t / m, c / t, '"$WORKERS"' }'

say "== shutting down"
t0=$(now_ms)
mbctl shutdown
status=0
wait "$broker" || status=$?
say "broker exited with status $status after $(($(now_ms) - t0)) ms (wall clock)"
for i in $(seq 1 $WORKERS); do
	wait "${pids[$i]}" || { say "worker $i failed"; exit 1; }
done
grep -h "acknowledged" "$DEMO"/worker*.log
grep -E "shutdown complete|unloaded in" "$DEMO/broker.log" | sed 's/^[^ ]* //'
left=$(ls /dev/shm | grep -E "^(sem\.)?mbroker\.$INSTANCE\." || true)
if [ -n "$left" ]; then
	say "LEFT IN /dev/shm: $left"
	exit 1
fi
say "/dev/shm holds nothing of instance $INSTANCE"
[ "$status" -eq 0 ]
