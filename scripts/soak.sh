#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# soak.sh - a bounded soak of one broker: workers that attach and then
# detach, crash or get killed, in a loop (mbfault churn), models unloaded
# and loaded again meanwhile, reference workers killed mid-pass; then 50
# workers crashing and reconnecting.  Prints the broker's RSS, open
# descriptors, /dev/shm entries and registry before and after each phase
# and exits 1 unless they came back to where they were (RSS within
# SOAK_RSS_SLACK_KB, the allocator's own caching).
#   scripts/soak.sh [BUILD_DIR]
#   SOAK_SECONDS (90) CHURN_SECONDS (30) CHURN_WORKERS (50)
set -euo pipefail

BUILD=$(cd "${1:-build}" && pwd)
SOAK_SECONDS=${SOAK_SECONDS:-90}
CHURN_SECONDS=${CHURN_SECONDS:-30}
CHURN_WORKERS=${CHURN_WORKERS:-50}
SOAK_RSS_SLACK_KB=${SOAK_RSS_SLACK_KB:-1024}
# Under a sanitizer, RSS is mostly the sanitizer's own memory.
if [ -n "${MB_SANITIZE:-}" ]; then
	SOAK_RSS_SLACK_KB=$((1 << 30))
	echo "(RSS not compared: built with -fsanitize=$MB_SANITIZE)"
fi
failed=0
. "$(dirname "$0")/lib.sh"
script_setup soak

now() { date +%s; }
field() { grep -o "\"$1\":[0-9]*" | head -n1 | cut -d: -f2; }
idle() {
	[ "$(mbctl --json stats | field workers)" = 0 ] &&
		[ "$(mbctl --json stats | field connections)" = 1 ]
}
wait_idle() {
	local deadline=$(($(now) + 30))
	until idle; do
		[ "$(now)" -lt $deadline ] || { echo "soak: broker never idle"; exit 1; }
		sleep 0.05
	done
}

# figures: RSS kB, open descriptors, /dev/shm entries, models READY.
figures() {
	wait_idle
	echo "$(awk '/^VmRSS:/ {print $2}' "/proc/$broker/status")" \
		"$(ls "/proc/$broker/fd" | wc -l)" \
		"$(ls /dev/shm | grep -cE "^(sem\.)?mbroker\.$INSTANCE\.")" \
		"$(mbctl list | grep -c ' READY ')"
}

compare() {
	local phase=$1 before=($2) after=($3)
	printf '%-8s %-18s %10s %10s\n' "$phase" "" start end
	printf '%-8s %-18s %10s %10s\n' "" "broker RSS (kB)" "${before[0]}" "${after[0]}"
	printf '%-8s %-18s %10s %10s\n' "" "open descriptors" "${before[1]}" "${after[1]}"
	printf '%-8s %-18s %10s %10s\n' "" "/dev/shm entries" "${before[2]}" "${after[2]}"
	printf '%-8s %-18s %10s %10s\n' "" "models READY" "${before[3]}" "${after[3]}"
	if [ "${before[1]}" != "${after[1]}" ] || [ "${before[2]}" != "${after[2]}" ] ||
		[ "${before[3]}" != "${after[3]}" ] ||
		[ "${after[0]}" -gt $((before[0] + SOAK_RSS_SLACK_KB)) ]; then
		echo "soak: $phase did not come back to where it started"
		failed=1
	fi
}

"$BUILD/mkmodel" "$RUN/m1.safetensors" 4000000
"$BUILD/mkmodel" --raw "$RUN/m2.bin" 2000000
"$BUILD/mbrokerd" --socket "$SOCK" --instance "$INSTANCE" \
	--shutdown-timeout 5 --log-level warn 2>"$RUN/broker.log" &
broker=$!
pids+=("$broker")
for i in $(seq 100); do mbctl ping >/dev/null 2>&1 && break; sleep 0.05; done
mbctl load m1 "$RUN/m1.safetensors" --wait >/dev/null
mbctl load m2 "$RUN/m2.bin" --wait >/dev/null
# Warm-up, so that what the allocator keeps after the first clients is in
# the baseline.
"$BUILD/mbfault" churn "$SOCK" m1 8 2 >/dev/null

echo "== mixed: $SOAK_SECONDS s of churn, reloads and kills"
before=$(figures)
"$BUILD/mbfault" churn "$SOCK" m1 8 "$SOAK_SECONDS" >"$RUN/churn1.out" &
churn=$!
pids+=("$churn")
end=$(($(now) + SOAK_SECONDS))
reloads=0
kills=0
while [ "$(now)" -lt $end ]; do
	"$BUILD/mbworker" --socket "$SOCK" --model m2 --interval 0 \
		>/dev/null 2>&1 &
	victim=$!
	mbctl unload m2 --timeout 2 >/dev/null 2>&1 || true
	mbctl load m2 "$RUN/m2.bin" --wait >/dev/null 2>&1 || true
	kill -9 "$victim" 2>/dev/null && kills=$((kills + 1))
	wait "$victim" 2>/dev/null || true
	reloads=$((reloads + 1))
done
wait "$churn" || { echo "soak: churn failed: $(cat "$RUN/churn1.out")"; failed=1; }
echo "$(cat "$RUN/churn1.out") (worker lives), $reloads unload/load cycles, $kills workers killed"
compare mixed "$before" "$(figures)"

echo "== churn: $CHURN_WORKERS workers crash and reconnect for $CHURN_SECONDS s"
before=$(figures)
"$BUILD/mbfault" churn "$SOCK" m1 "$CHURN_WORKERS" "$CHURN_SECONDS" \
	>"$RUN/churn2.out" || { echo "soak: churn failed"; failed=1; }
echo "$(cat "$RUN/churn2.out") (worker lives)"
compare churn "$before" "$(figures)"

mbctl shutdown >/dev/null || failed=1
wait "$broker" || failed=1
if ls /dev/shm | grep -qE "^(sem\.)?mbroker\.$INSTANCE\."; then
	echo "soak: names left in /dev/shm"
	failed=1
fi
if [ -s "$RUN/broker.log" ] && grep -q " error: " "$RUN/broker.log"; then
	echo "soak: the broker logged errors:"
	grep " error: " "$RUN/broker.log" | head
	failed=1
fi
[ $failed -eq 0 ] && echo "soak: passed" || echo "soak: FAILED"
exit $failed
