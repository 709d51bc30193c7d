# SPDX-License-Identifier: MIT
# --model-dir: only files beneath it load.  A path outside, a "..", a
# symlink that climbs out, an absolute symlink and /proc are refused with
# permission_denied and logged; a symlink that stays inside is fine.  Only
# regular files load (a FIFO or a device is refused; a directory is a
# bundle, confined the same way), a file that changes
# while it loads is caught, and a newline in a path cannot forge a log
# line.  Nothing is left behind by any refusal.
. "$(dirname "$0")/lib.sh"

mkdir -p "$T/models/sub"
make_model "$T/models/ok.safetensors" 1000000
make_model --raw "$T/models/sub/deep.bin" 500000
make_model --raw "$T/outside.bin" 500000
ln -s sub/deep.bin "$T/models/inner.bin"
ln -s ../outside.bin "$T/models/climb.bin"
ln -s "$T/outside.bin" "$T/models/absolute.bin"
mkfifo "$T/models/fifo.bin"
mkdir "$T/models/dir.bin" "$T/outdir"
printf 'x' >"$T/outdir/f"
ln -s ../outdir "$T/models/climbdir"
if [ "$(id -u)" -eq 0 ]; then
	mknod "$T/models/null.bin" c 1 3
else
	echo "not root: the device case is skipped" >&2
fi
make_model --raw "$T/models/growing.bin" 4000000
start_broker --model-dir "$T/models" --load-rate 2M
expect_refusal() {
	local want=$1 err
	shift
	err=$(mbctl "$@" 2>&1) && fail "mbctl $* succeeded"
	case "$err" in *"$want"*) ;; *) fail "mbctl $*: '$err' lacks '$want'" ;; esac
}

load ok "$T/models/ok.safetensors"
load inner "$T/models/inner.bin"
expect_refusal "is not under any --model-dir (permission denied)" \
	load x "$T/outside.bin" --wait
expect_refusal "is not under any --model-dir" load x /proc/self/environ --wait
expect_refusal "resolves outside --model-dir" load x "$T/models/../outside.bin" --wait
expect_refusal "resolves outside --model-dir" load x "$T/models/climb.bin" --wait
expect_refusal "resolves outside --model-dir" load x "$T/models/absolute.bin" --wait
expect_refusal "is not a regular file" load x "$T/models/fifo.bin" --wait
expect_refusal "is a directory: load it as a bundle" load x "$T/models/dir.bin" --format raw --wait
expect_refusal "holds no file" load x "$T/models/dir.bin" --wait
# A bundle is confined the same way: a directory outside, or a symlink to
# one, is refused.
expect_refusal "is not under any --model-dir" load x "$T/outdir" --wait
expect_refusal "resolves outside --model-dir" load x "$T/models/climbdir" --wait
if [ -e "$T/models/null.bin" ]; then
	expect_refusal "is not a regular file" load x "$T/models/null.bin" --wait
fi
assert_log "refused load of $T/outside.bin from uid $(id -u)"

# A file that grows while it is read.
mbctl load grow "$T/models/growing.bin" >/dev/null || fail "load failed"
started() { mbctl list | grep -q "^grow .*LOADING .*[1-9][0-9]*% loaded"; }
wait_until 10 started || fail "the load did not start"
head -c 4096 /dev/zero >>"$T/models/growing.bin"
wait_until 20 state_is grow ERROR || fail "grow is $(model_state grow)"
mbctl list | grep -q "^grow .*ERROR .*during the load" ||
	fail "change not named: $(mbctl list)"

# A newline in a path shows as '?' in the log, on one line.
mbctl load x "$T/models/no
such" >/dev/null 2>&1 || true
wait_until 10 grep -q "no?such" "$BROKER_LOG" || fail "the newline reached the log"
grep -q "^such" "$BROKER_LOG" && fail "a client forged a log line"

[ "$(instance_shm | grep -c '\.model\.')" -eq 2 ] ||
	fail "refused loads left segments: $(instance_shm)"
shutdown_clean
