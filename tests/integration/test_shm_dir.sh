# SPDX-License-Identifier: MIT
# --shm-dir: segments live in another tmpfs (as root the test mounts one
# with huge=within_size, as the docs tell operators to; otherwise a
# directory of /dev/shm).  Workers attach and verify as usual, the pages
# are huge ones where the mount allows, a dead broker's segments there are
# removed at the next start, and a clean shutdown leaves the directory
# empty.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -eq 0 ]; then
	DIR="$T/huge"
	mkdir "$DIR"
	mount -t tmpfs -o huge=within_size,size=256M,mode=0700 tmpfs "$DIR"
	EXTRA_CLEANUP="umount '$DIR'"
else
	echo "not root: a plain directory of /dev/shm instead of a huge mount" >&2
	DIR="/dev/shm/mbt-dir-$$"
	mkdir -m 0700 "$DIR"
	EXTRA_CLEANUP="rm -rf '$DIR'"
fi
make_model "$T/m.safetensors" 8388608
start_broker --shm-dir "$DIR"
load m "$T/m.safetensors"
ls "$DIR" | grep -q "^mbroker\.$INSTANCE\.model\.m\." ||
	fail "the segment is not in $DIR: $(ls -la "$DIR")"
instance_shm | grep -q '\.model\.' && fail "a segment went to /dev/shm"
# Huge pages need contiguous memory, which the kernel may not have at
# once after other tests: compact and reload a few times before failing.
huge_backed() {
	[ "$(awk '/^ShmemHugePages:/ {print $2}' /proc/meminfo)" -ge 8192 ]
}
if [ "$(id -u)" -eq 0 ]; then
	for try in 1 2 3; do
		huge_backed && break
		mbctl unload m >/dev/null
		echo 1 >/proc/sys/vm/compact_memory
		load m "$T/m.safetensors"
	done
	huge_backed || fail "no huge pages back the segment after 3 tries: \
$(grep -i huge /proc/meminfo)"
fi
start_worker m
wait_attached 1
wait_until 10 grep -q "checksum ok" "$WORKER_LOG" || fail "worker: $(cat "$WORKER_LOG")"

kill -9 "$BROKER_PID"
wait "$BROKER_PID" 2>/dev/null || true
kill -9 "$WORKER_PID" 2>/dev/null || true  # it may have left already
: >"$BROKER_LOG"
start_broker --shm-dir "$DIR"
assert_log "removed $DIR/mbroker\.$INSTANCE\.model\.m\..* left by a dead broker"
load m "$T/m.safetensors"
shutdown_clean
[ -z "$(ls "$DIR")" ] || fail "left in $DIR: $(ls "$DIR")"
