# SPDX-License-Identifier: MIT
# A load leaves the model file's pages in the page cache as it found them,
# so a loaded model does not cost its size twice in RAM: a file dropped
# from the cache first is not cached after its load; a file fully cached
# stays cached; of a file half cached, that half stays and no more; with
# --keep-file-cache everything the load read stays.  The loaded bytes are
# the file's either way.  Counts with fincore(1) (util-linux) and drops a
# file with dd iflag=nocache; exits 77 (SKIP) without fincore or where the
# model's filesystem keeps pages a drop was asked for (tmpfs).
. "$(dirname "$0")/lib.sh"

command -v fincore >/dev/null || skip "needs fincore (util-linux)"
size=$((16 << 20))

cached() { fincore --bytes --noheadings --output RES "$1" | tr -d ' '; }
uncache() { sync "$1" && dd if="$1" iflag=nocache count=0 status=none; }
# load_checked NAME FILE: loads FILE as NAME; its checksum must be the
# file's (the same bytes as the fully cached first model's).
load_checked() {
	local out
	out=$(mbctl load "$1" "$2" --wait) || fail "load of $1: $out"
	case "$out" in *"xxh3 $sum"*) ;; *) fail "load of $1: $out" ;; esac
}

make_model --raw "$T/cold.bin" "$size"
cp "$T/cold.bin" "$T/warm.bin"
cp "$T/cold.bin" "$T/half.bin"
cp "$T/cold.bin" "$T/kept.bin"
uncache "$T/cold.bin"
[ "$(cached "$T/cold.bin")" = 0 ] ||
	skip "the page cache keeps $T/cold.bin after a drop (tmpfs?)"

start_broker
cat "$T/warm.bin" >/dev/null
out=$(mbctl load warm "$T/warm.bin" --wait) || fail "load of warm: $out"
sum=$(echo "$out" | grep -o 'xxh3 [0-9a-f]*' | cut -d' ' -f2)
[ -n "$sum" ] || fail "no checksum in '$out'"
# 1. Cached before: stays cached.
[ "$(cached "$T/warm.bin")" = "$size" ] ||
	fail "a cached file lost pages in its load: $(cached "$T/warm.bin") of $size"

# 2. Cold: the load's own pages go.
load_checked cold "$T/cold.bin"
[ "$(cached "$T/cold.bin")" = 0 ] ||
	fail "a cold file stays cached after its load: $(cached "$T/cold.bin") bytes"

# 3. The first half cached: exactly that half stays.
sync "$T/half.bin"
cat "$T/half.bin" >/dev/null
dd if="$T/half.bin" iflag=nocache bs=1M skip=8 count=0 status=none
[ "$(cached "$T/half.bin")" = $((size / 2)) ] ||
	skip "cannot cache half of a file: $(cached "$T/half.bin") bytes of $size"
load_checked half "$T/half.bin"
[ "$(cached "$T/half.bin")" = $((size / 2)) ] ||
	fail "half-cached file: $((size / 2)) bytes cached before its load, $(cached "$T/half.bin") after"
mbctl shutdown >/dev/null
wait_broker_exit 20

# 4. --keep-file-cache: today's page cache, everything read stays.
start_broker --keep-file-cache
uncache "$T/kept.bin"
load_checked kept "$T/kept.bin"
[ "$(cached "$T/kept.bin")" = "$size" ] ||
	fail "--keep-file-cache: $(cached "$T/kept.bin") of $size bytes cached"
mbctl shutdown >/dev/null
wait_broker_exit 20
assert_no_shm
