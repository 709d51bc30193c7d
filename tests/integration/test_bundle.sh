# SPDX-License-Identifier: MIT
# A bundle: a directory loaded as one model, one segment per file.  A load
# of a directory of 20 files (a subdirectory, a 0-byte file, a
# .safetensors) is READY with format bundle, its member count and size;
# a raw client attaches it and gets every descriptor, 8 in the attach
# reply and the rest through the members op, maps each and finds the
# files' bytes, their checksums and the bundle's checksum; the memory op
# sums a holder's Pss over every member.  A reload after a file changed
# is a new generation with a new checksum; an unload, an eviction and an
# idle unload (keep-alive) each leave /dev/shm clean.  Refused: a symlink that leaves the directory (format_error
# naming it), a fifo, 257 files (limit), a tree of 4100 empty directories
# (limit), a load past the broker's 2048
# segments (limit), a file path as a bundle and a
# directory as raw (format_error), a bundle over --max-shm-bytes
# (no_space with the bytes it needs).  After kill -9 of the broker with a
# bundle loaded, the next start removes every segment it left; with
# --model-dir the directory is a catalog entry, autoloaded by an attach.
# An unload during a bundle's load counts every segment it removes.
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
CLIENT="$(dirname "$0")/../tools/bundle_client.py"
B="$T/bundle"
mkdir -p "$B/sub/deep" "$B/empty-dir"
for i in $(seq 1 16); do
	head -c $((i * 4099)) /dev/urandom >"$B/f$i.bin"
done
: >"$B/zero"
make_model "$B/sub/model.safetensors" 300000
make_model --raw "$B/sub/deep/tail" 70001
printf 'tokenizer' >"$B/sub/tok.json"
NFILES=20
total=$(find "$B" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')

# json_get EXPR: EXPR of the JSON on stdin (python, as j).
json_get() {
	"$PY" -c 'import json, sys; j = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}
listed() { # FIELD: the list's field of model b
	mbctl --json list | json_get "[m for m in j['models'] if m['name'] == 'b'][0]['$1']"
}
bundle_shm() {
	instance_shm | grep -c "^mbroker\.$INSTANCE\.model\.b\." || true
}
# refused CODE TEXT ARGS...: mbctl --json load ARGS fails with CODE,
# its message holding TEXT.
refused() {
	local code=$1 text=$2 reply
	shift 2
	reply=$(mbctl --json load "$@" 2>&1) && fail "load $* worked: $reply"
	case "$reply" in *"\"code\":\"$code\""*) ;;
	*) fail "load $*: $reply is not $code" ;; esac
	case "$reply" in *"$text"*) ;;
	*) fail "load $*: $reply lacks '$text'" ;; esac
}

start_broker --max-shm-bytes 8000000
mbctl load b "$B" --wait >"$T/out" || fail "load of $B: $(cat "$T/out")"
[ "$(listed format)" = bundle ] || fail "format $(listed format)"
[ "$(listed members)" = $NFILES ] || fail "members $(listed members)"
[ "$(listed size)" = "$total" ] || fail "size $(listed size), not $total"
[ "$(listed tensors)" = 16 ] || fail "tensors $(listed tensors)"
[ "$(bundle_shm)" = $NFILES ] || fail "segments: $(instance_shm)"
for seg in $(instance_shm | grep "^mbroker\.$INSTANCE\.model\.b\."); do
	[ "$(stat -c %a "/dev/shm/$seg")" = 400 ] ||
		fail "$seg is mode $(stat -c %a "/dev/shm/$seg")"
done
sum1=$(listed checksum)

# Every descriptor, in pages, and the bytes behind each.
"${LIBMBROKER_ENV[@]}" "$PY" "$CLIENT" "$SOCK" b "$B" "$BIN/libmbroker.so" >"$T/client.out" 2>&1 ||
	fail "client: $(cat "$T/client.out")"
grep -qx "ok $NFILES $sum1" "$T/client.out" || fail "client: $(cat "$T/client.out")"

# One holder: the memory op gives the model's bytes once and the holder's
# Pss over all its member segments (all of it, as it alone maps them).
"${LIBMBROKER_ENV[@]}" "$PY" "$CLIENT" --hold "$SOCK" b "$B" "$BIN/libmbroker.so" >"$T/hold.out" 2>&1 &
HOLDER=$!
CHILDREN+=("$HOLDER")
wait_until 20 grep -q "^held" "$T/hold.out" || fail "holder: $(cat "$T/hold.out")"
mbctl --json memory >"$T/memory.json" || fail "memory failed"
"$PY" - "$T/memory.json" "$total" "$HOLDER" <<'PY' || fail "memory: $(cat "$T/memory.json")"
import json, sys
m = [x for x in json.load(open(sys.argv[1]))["models"] if x["name"] == "b"][0]
total, pid = int(sys.argv[2]), int(sys.argv[3])
assert m["bytes"] == total, m
h = [x for x in m["holders"] if x["pid"] == pid][0]
# Every page of every member (pages round each file up).
assert total <= h["pss_kb"] * 1024 <= total + 21 * 4096, (h, total)
PY
kill "$HOLDER"
wait_attached 0

# A reload after a file changed: a new generation, a new checksum.
head -c 4099 /dev/urandom >"$B/f1.bin"
mbctl reload b --wait >"$T/out" || fail "reload: $(cat "$T/out")"
[ "$(listed generation)" -gt 1 ] || fail "generation $(listed generation)"
sum2=$(listed checksum)
[ "$sum2" != "$sum1" ] || fail "the checksum did not change"
wait_until 20 sh -c "[ \"\$(ls /dev/shm | grep -c '^mbroker\.$INSTANCE\.model\.b\.')\" = $NFILES ]" ||
	fail "after the reload: $(instance_shm)"
"${LIBMBROKER_ENV[@]}" "$PY" "$CLIENT" "$SOCK" b "$B" "$BIN/libmbroker.so" >"$T/client.out" 2>&1 ||
	fail "client after the reload: $(cat "$T/client.out")"
grep -qx "ok $NFILES $sum2" "$T/client.out" || fail "client: $(cat "$T/client.out")"

# Unload: no segment left.
mbctl unload b >/dev/null || fail "unload failed"
[ "$(bundle_shm)" = 0 ] || fail "after unload: $(instance_shm)"

# A load that needs the room evicts the bundle nobody holds, every one of
# its segments; with keep-alive 0 a bundle goes once its holder lets go.
b_gone() {
	[ -z "$(model_state b)" ] && [ "$(bundle_shm)" = 0 ]
}
mbctl load b "$B" --wait >/dev/null || fail "load b"
make_model --raw "$T/big.bin" 7500000
mbctl load big "$T/big.bin" --wait >/dev/null || fail "load big (evicting b)"
b_gone || fail "b not evicted: $(model_state b), $(instance_shm)"
assert_log "model b: evicted to make room for big"
mbctl unload big >/dev/null || fail "unload big"
mbctl load b "$B" --keep-alive 0 --wait >/dev/null || fail "load b, keep-alive 0"
"${LIBMBROKER_ENV[@]}" "$PY" "$CLIENT" "$SOCK" b "$B" "$BIN/libmbroker.so" \
	>"$T/client.out" 2>&1 || fail "client: $(cat "$T/client.out")"
wait_until 20 b_gone || fail "b not unloaded idle: $(instance_shm)"

# Refusals, each leaving nothing behind.
E="$T/escape"
mkdir -p "$E/in"
printf 'x' >"$E/in/ok"
printf 'secret' >"$T/secret"
ln -s ../../secret "$E/in/leak"
refused format_error "member in/leak of $E resolves outside it" x "$E" --wait
rm "$E/in/leak"
ln -s ok "$E/in/alias" # a symlink that stays inside is followed
mkfifo "$E/in/fifo"
refused format_error "member in/fifo of $E is not a regular file" x "$E" --wait
rm "$E/in/fifo"
printf 'not safetensors' >"$E/bad.safetensors"
refused format_error "member bad.safetensors of $E" x "$E" --wait
rm "$E/bad.safetensors"
mbctl load e "$E" --wait >/dev/null || fail "load of $E"
[ "$(mbctl --json list | json_get "[m for m in j['models'] if m['name'] == 'e'][0]['members']")" = 2 ] ||
	fail "e: $(mbctl --json list)"
mbctl unload e >/dev/null || fail "unload e"
refused format_error "is not a directory" x "$B/f2.bin" --format bundle --wait
refused format_error "is a directory" x "$B" --format raw --wait
mkdir "$T/nofile" "$T/nofile/empty"
refused format_error "holds no file" x "$T/nofile" --wait
M="$T/many"
mkdir "$M"
for i in $(seq 1 257); do : >"$M/$i"; done
refused limit "holds 257 files; a bundle has at most 256" x "$M" --wait
# A tree of empty directories is walked on the broker's control loop: past
# 4096 entries the walk stops (200000 took the broker 2.4 s to walk).
W="$T/wide"
mkdir "$W"
printf x >"$W/file"
(cd "$W" && seq 1 4100 | xargs mkdir)
refused limit "holds more than 4096 files and directories" x "$W" --wait
rm "$M/257"
# 256 files load; eight such bundles are the broker's 2048 segments, and
# a ninth is refused.
for i in 1 2 3 4 5 6 7 8; do
	mbctl load "many$i" "$M" --wait >/dev/null || fail "bundle $i of 256 files"
done
refused limit "needs 256 segment(s); the broker holds 2048 of its most 2048" \
	many9 "$M" --wait
for i in 1 2 3 4 5 6 7 8; do
	mbctl unload "many$i" >/dev/null || fail "unload many$i"
done
H="$T/huge"
mkdir "$H"
make_model --raw "$H/a" 5000000
make_model --raw "$H/b" 5000000
refused no_space '"needed":10000000' x "$H" --wait
[ -z "$(instance_shm | grep '\.model\.')" ] || fail "refusals left: $(instance_shm)"

# kill -9 with a bundle loaded: the next start of the instance removes
# every segment the dead broker left.
mbctl load b "$B" --wait >/dev/null || fail "load b again"
[ "$(bundle_shm)" = $NFILES ] || fail "segments: $(instance_shm)"
kill -9 "$BROKER_PID"
wait "$BROKER_PID" 2>/dev/null || true
[ "$(bundle_shm)" = $NFILES ] || fail "after kill -9: $(instance_shm)"
start_broker --model-dir "$T" --autoload
[ "$(bundle_shm)" = 0 ] || fail "the restart left: $(instance_shm)"

# With --model-dir, the subdirectory is a catalog entry of format bundle,
# and an attach of its name loads it (--autoload).
mbctl --json catalog | json_get "[m for m in j['models'] if m['name'] == 'bundle'][0]['format'] + ' ' + str([m for m in j['models'] if m['name'] == 'bundle'][0]['size'])" >"$T/entry"
[ "$(cat "$T/entry")" = "bundle $total" ] || fail "catalog entry: $(cat "$T/entry")"
"${LIBMBROKER_ENV[@]}" "$PY" "$CLIENT" "$SOCK" bundle "$B" "$BIN/libmbroker.so" \
	>"$T/client.out" 2>&1 || fail "autoload: $(cat "$T/client.out")"
grep -q "^ok $NFILES " "$T/client.out" || fail "autoload: $(cat "$T/client.out")"
shutdown_clean

# An unload while a bundle loads stops it: its reply counts every segment
# the load had made (it said 1), and none is left.
start_broker --load-rate 2000000
S="$T/slow"
mkdir "$S"
for i in 1 2 3 4; do make_model --raw "$S/f$i" 1000000; done
slow_shm() {
	instance_shm | grep -c "^mbroker\.$INSTANCE\.model\.slow\." || true
}
mbctl load slow "$S" >/dev/null || fail "load slow"
wait_until 20 sh -c "[ \"\$(ls /dev/shm | grep -c '^mbroker\.$INSTANCE\.model\.slow\.')\" -ge 2 ]" ||
	fail "slow: no second segment: $(instance_shm)"
made=$(slow_shm)
mbctl --json unload slow >"$T/unload.json" || fail "unload slow: $(cat "$T/unload.json")"
[ "$(json_int segments_unlinked <"$T/unload.json")" -ge "$made" ] ||
	fail "$made segments made; the unload says $(cat "$T/unload.json")"
[ "$(slow_shm)" = 0 ] || fail "after the unload: $(instance_shm)"
shutdown_clean
