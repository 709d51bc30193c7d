# SPDX-License-Identifier: MIT
# lib.sh - what the demo, soak and bench scripts share: a private run
# directory, socket and instance, a trap that kills what they started and
# removes the instance's names whatever happens, the mbctl wrapper, and a
# poll with a deadline.  Source it with BUILD set, then call script_setup.

# script_setup NAME: RUN, SOCK, INSTANCE and the EXIT trap.  Anything a
# script must undo besides goes in EXTRA_CLEANUP (evaluated first).
script_setup() {
	RUN=$(mktemp -d "/tmp/mbroker-$1.XXXXXX")
	SOCK="$RUN/broker.sock"
	INSTANCE="$1-$$"
	pids=()
	trap script_cleanup EXIT
}

script_cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ -n "${EXTRA_CLEANUP:-}" ]; then
		eval "$EXTRA_CLEANUP" || true
	fi
	rm -f /dev/shm/mbroker."$INSTANCE".* /dev/shm/sem.mbroker."$INSTANCE".*
	rm -rf "$RUN"
}

mbctl() { "$BUILD/mbctl" --socket "$SOCK" "$@"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# wait_for SECONDS COMMAND...: polls every 20 ms until COMMAND succeeds.
wait_for() {
	local deadline=$(($(now_ms) + $1 * 1000))
	shift
	until "$@" >/dev/null 2>&1; do
		[ "$(now_ms)" -lt $deadline ] || return 1
		sleep 0.02
	done
}
