# SPDX-License-Identifier: MIT
# lib.sh - what every integration test sources: a private instance and
# socket under a temp dir, helpers to start the real binaries and poll with
# deadlines, assertions on what a user sees (exit codes, replies, the
# contents of /dev/shm), and a trap that kills every process the test
# started and removes the instance's names even when the test fails.
set -euo pipefail

BUILD=${BUILD:-build}
BIN=$(cd "$BUILD" && pwd)
TEST_NAME=$(basename "$0" .sh)
T=$(mktemp -d "/tmp/mbt.$TEST_NAME.XXXXXX")
INSTANCE="it-$$-$RANDOM"
SOCK="$T/broker.sock"
BROKER_LOG="$T/broker.log"
BROKER_PID=
CHILDREN=()
NWORKERS=0

# Under `make valgrind` the broker runs under memcheck.
BROKER_WRAPPER=()
if [ "${MB_VALGRIND:-}" = 1 ]; then
	BROKER_WRAPPER=(valgrind --quiet --error-exitcode=99 --leak-check=full
		--errors-for-leak-kinds=definite,indirect
		--show-leak-kinds=definite,indirect --log-file="$T/valgrind.%p")
fi

dump_logs() {
	for f in "$T"/*.log "$T"/valgrind.*; do
		[ -s "$f" ] || continue
		echo "----- $(basename "$f")" >&2
		tail -n 40 "$f" >&2
	done
}

cleanup() {
	local status=$?
	for pid in "${CHILDREN[@]}"; do
		kill -9 "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	if [ -n "${EXTRA_CLEANUP:-}" ]; then
		eval "$EXTRA_CLEANUP" || true
	fi
	# The glob also covers the extra instances a test names "$INSTANCE-x".
	rm -f /dev/shm/mbroker."$INSTANCE"* /dev/shm/sem.mbroker."$INSTANCE"*
	if [ $status -ne 0 ] && [ $status -ne 77 ]; then
		dump_logs
	fi
	rm -rf "$T"
	exit $status
}
trap cleanup EXIT

fail() {
	echo "FAIL [$TEST_NAME]: $*" >&2
	exit 1
}

# skip REASON: this test cannot run here (not root, ...); tests/run.sh
# counts exit 77 as a skip, and as a failure under CI=true.
skip() {
	echo "SKIP [$TEST_NAME]: $*" >&2
	exit 77
}

now_ms() {
	echo $(($(date +%s%N) / 1000000))
}

# wait_until SECONDS COMMAND...: polls every 20 ms until COMMAND succeeds.
wait_until() {
	local limit=$1
	shift
	local deadline=$(($(now_ms) + limit * 1000))
	until "$@" >/dev/null 2>&1; do
		if [ "$(now_ms)" -ge $deadline ]; then
			return 1
		fi
		sleep 0.02
	done
}

mbctl() {
	"$BIN/mbctl" --socket "$SOCK" "$@"
}

# json_int FIELD: the first integer FIELD in the JSON on stdin.
json_int() {
	grep -o "\"$1\":[0-9-]*" | head -n1 | cut -d: -f2
}

# start_broker ARGS...: starts a broker on this test's instance and waits
# until it answers.
start_broker() {
	"${BROKER_WRAPPER[@]}" "$BIN/mbrokerd" --socket "$SOCK" \
		--instance "$INSTANCE" "$@" 2>>"$BROKER_LOG" &
	BROKER_PID=$!
	CHILDREN+=("$BROKER_PID")
	wait_until 20 mbctl ping || fail "broker did not start"
}

# wait_broker_exit SECONDS: waits for the broker, sets BROKER_STATUS.
wait_broker_exit() {
	wait_until "$1" sh -c "! kill -0 $BROKER_PID" ||
		fail "broker still running after $1 s"
	BROKER_STATUS=0
	wait "$BROKER_PID" || BROKER_STATUS=$?
}

# start_worker MODEL ARGS...: starts an mbworker; sets WORKER_PID and
# WORKER_LOG.
start_worker() {
	local model=$1
	shift
	NWORKERS=$((NWORKERS + 1))
	WORKER_LOG="$T/worker$NWORKERS.log"
	"$BIN/mbworker" --socket "$SOCK" --model "$model" --interval 20 "$@" \
		>"$WORKER_LOG" 2>&1 &
	WORKER_PID=$!
	CHILDREN+=("$WORKER_PID")
}

attached_count() {
	mbctl --json stats | json_int workers
}

attached_is() {
	[ "$(attached_count)" = "$1" ]
}

# wait_attached N: until N workers hold an attachment.
wait_attached() {
	wait_until 20 attached_is "$1" ||
		fail "expected $1 attached workers, have $(attached_count)"
}

# load NAME PATH: loads and waits until READY.
load() {
	mbctl load "$1" "$2" --wait >/dev/null || fail "load of $1 failed"
}

instance_shm() {
	ls /dev/shm | grep -E "^(sem\.)?mbroker\.$INSTANCE\." || true
}

assert_no_shm() {
	local left
	left=$(instance_shm)
	[ -z "$left" ] || fail "left in /dev/shm: $left"
}

assert_log() {
	grep -q -- "$1" "$BROKER_LOG" || fail "broker log lacks '$1'"
}

make_model() {
	"$BIN/mkmodel" "$@" >/dev/null
}

# model_state NAME: the state `list` reports for NAME ("" when absent).
model_state() {
	mbctl --json list | grep -o "\"name\":\"$1\"[^}]*\"state\":\"[A-Z]*\"" |
		sed 's/.*"state":"//; s/"$//'
}

state_is() {
	[ "$(model_state "$1")" = "$2" ]
}

# elapsed_since T0_MS: milliseconds since T0_MS.
elapsed_since() {
	echo $(($(now_ms) - $1))
}

# assert_between VALUE LOW HIGH WHAT
assert_between() {
	[ "$1" -ge "$2" ] && [ "$1" -le "$3" ] ||
		fail "$4: $1 not within [$2, $3]"
}

# shutdown_clean: `mbctl shutdown` succeeds, the broker exits 0 and
# nothing of the instance is left in /dev/shm.
shutdown_clean() {
	mbctl shutdown >/dev/null || fail "mbctl shutdown failed"
	wait_broker_exit 10
	[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS, not 0"
	assert_no_shm
}

worker_exited_with() {
	local pid=$1 want=$2 status=0
	wait_until 20 sh -c "! kill -0 $pid" || fail "worker $pid still runs"
	wait "$pid" || status=$?
	[ "$status" -eq "$want" ] || fail "worker $pid exited $status, not $want"
}

# LIBMBROKER_ENV: the command prefix (an env) for a python3 that loads
# $BIN/libmbroker.so with ctypes: under `make asan` the sanitizer runtimes
# that library links must be loaded first.  The command keeps its pid.
LIBMBROKER_ENV=(env)
libmbroker_rt=$({ ldd "$BIN/libmbroker.so" 2>/dev/null || true; } |
	awk '/lib(asan|ubsan|tsan)\.so/ { print $3 }' | paste -sd:)
if [ -n "$libmbroker_rt" ]; then
	LIBMBROKER_ENV=(env LD_PRELOAD="$libmbroker_rt" ASAN_OPTIONS=detect_leaks=0
		TSAN_OPTIONS=report_bugs=0)
fi
