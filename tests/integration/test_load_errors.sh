# SPDX-License-Identifier: MIT
# Every bad load gets a clear error and leaves no segment: a missing file
# (io_error), a directory as a file (format_error: load it as a bundle),
# an empty file, a broken safetensors header, an
# invalid name, a name already loaded.  The broker keeps serving throughout.
. "$(dirname "$0")/lib.sh"

start_broker
expect_refusal() {
	local want=$1 err
	shift
	err=$(mbctl "$@" 2>&1) && fail "mbctl $* succeeded"
	case "$err" in *"$want"*) ;; *) fail "mbctl $*: '$err' lacks '$want'" ;; esac
}
: >"$T/empty.bin"
printf '\377\377\000\000\000\000\000\000{}' >"$T/bad.safetensors"
printf '\025\000\000\000\000\000\000\000{"a":{"dtype":"Q9"}} ' >"$T/dtype.safetensors"
make_model "$T/ok.safetensors" 1000000

expect_refusal "cannot open $T/missing" load x "$T/missing" --wait
reply=$(mbctl --json load x "$T/missing" --wait 2>&1) && fail "missing file loaded"
case "$reply" in *'"code":"io_error"'*) ;; *) fail "missing file: $reply" ;; esac
expect_refusal "is a directory: load it as a bundle" load x "$T" --format raw --wait
expect_refusal "is empty" load x "$T/empty.bin" --wait
expect_refusal "runs past the end of the file" load x "$T/bad.safetensors" --wait
expect_refusal "unknown dtype 'Q9'" load x "$T/dtype.safetensors" --wait
expect_refusal "invalid model name" load "bad/name" "$T/ok.safetensors"
expect_refusal "invalid model name" load ".." "$T/ok.safetensors"
state_is x ERROR || fail "x is $(model_state x), not ERROR"
mbctl list | grep -q "^x .*ERROR .*unknown dtype" || fail "ERROR reason not listed"

load x "$T/ok.safetensors"
expect_refusal "already loaded" load x "$T/ok.safetensors"
expect_refusal "no model called nothing-here" unload nothing-here
[ "$(instance_shm | grep -c '\.model\.')" -eq 1 ] ||
	fail "failed loads left segments: $(instance_shm)"
mbctl ping >/dev/null || fail "broker stopped answering"
shutdown_clean
