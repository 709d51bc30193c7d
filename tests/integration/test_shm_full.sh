# SPDX-License-Identifier: MIT
# A /dev/shm that another process fills must not kill the broker.  In a
# private mount namespace with a 16 MiB tmpfs on /dev/shm: a broker that
# cannot reserve its registry mirror refuses to start (exit 2, the reason
# in its log, nothing left behind); a broker that started before /dev/shm
# filled up survives registry changes that need mirror space it would
# otherwise have had to take then (loads refused under long paths, an
# attach and a detach), refuses the loads with no_space, and shuts down
# cleanly; of two loads that fit one at a time, started at once, one
# succeeds.  Needs root and unshare(1); exits 77 (SKIP) without them.
if [ -z "${MB_SHM_FULL_NS:-}" ]; then
	if [ "$(id -u)" -ne 0 ] ||
		! unshare -m --propagation private true 2>/dev/null; then
		echo "SKIP [$(basename "$0" .sh)]: needs root and unshare -m" >&2
		exit 77
	fi
	MB_SHM_FULL_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi
. "$(dirname "$0")/lib.sh"

mount -t tmpfs -o size=16M,mode=1777 tmpfs /dev/shm ||
	{ echo "SKIP [$TEST_NAME]: cannot mount a tmpfs on /dev/shm" >&2; exit 77; }

# fill LEAVE_KB: fills /dev/shm until about LEAVE_KB are free.
fill() {
	local free_kb
	free_kb=$(df -k --output=avail /dev/shm | tail -n1)
	head -c $(((free_kb - $1) * 1024)) /dev/zero >/dev/shm/filler 2>/dev/null || true
}

# 1. Too little room for the mirror: no start, a clear reason.
fill 1024
status=0
timeout 20 "$BIN/mbrokerd" --socket "$SOCK" --instance "$INSTANCE" \
	2>>"$BROKER_LOG" || status=$?
[ "$status" -eq 2 ] || fail "broker started (or died) with a full /dev/shm: $status"
assert_log "cannot reserve .* bytes in /dev/shm for the registry mirror"
assert_no_shm
rm -f /dev/shm/filler

# 2. Started in time, then /dev/shm fills up.
long="$T"
for i in $(seq 14); do long="$long/$(printf 'd%.0s' $(seq 199))"; done
mkdir -p "$long"
make_model --raw "$T/a.bin" 1048576
make_model --raw "$long/big.bin" 4194304
start_broker
load a "$T/a.bin"
fill 0
for i in $(seq 12); do
	err=$(mbctl load "x$i" "$long/big.bin" --wait 2>&1) &&
		fail "a load into a full /dev/shm worked"
	case "$err" in
	*"model needs 4194304 bytes, /dev/shm has"*) ;;
	*) fail "load x$i: $err" ;;
	esac
done
start_worker a
wait_attached 1
kill "$WORKER_PID"
wait_attached 0
kill -0 "$BROKER_PID" 2>/dev/null || fail "the broker died"
mbctl ping >/dev/null || fail "the broker stopped answering"
# Refused before they began (the room is checked first): none is left.
[ "$(mbctl list | grep -c ' ERROR ')" -eq 0 ] || fail "list: $(mbctl list)"
state_is a READY || fail "a is $(model_state a)"
rm -f /dev/shm/filler
shutdown_clean

# 3. Two loads that fit one at a time, started at once: one is READY, the
# other refused with no_space (not both, as when their pages raced).  Over
# 64 MiB, so that each is filled by two threads.
mount -o remount,size=160M /dev/shm || fail "cannot grow the tmpfs"
make_model --raw "$T/c.bin" 100663296
start_broker
for round in 1 2 3; do
	mbctl load "c$round" "$T/c.bin" --wait >"$T/c.out" 2>&1 &
	first=$!
	mbctl load "d$round" "$T/c.bin" --wait >"$T/d.out" 2>&1 &
	second=$!
	status=0
	wait "$first" || status=$((status + 1))
	wait "$second" || status=$((status + 2))
	case "$status:$(cat "$T/c.out" "$T/d.out")" in
	[12]:*"model needs 100663296 bytes, /dev/shm has"*) ;;
	*) fail "round $round ($status): $(cat "$T/c.out" "$T/d.out")" ;;
	esac
	# The refused one is in ERROR, or gone when the room check before
	# its start refused it.
	for name in "c$round" "d$round"; do
		[ -z "$(model_state "$name")" ] || mbctl unload "$name" >/dev/null ||
			fail "unload of $name failed"
	done
done
shutdown_clean
