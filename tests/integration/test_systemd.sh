# SPDX-License-Identifier: MIT
# systemd's side of Type=notify, played by a datagram socket as
# NOTIFY_SOCKET: READY=1 only once the preload is over (never while the
# model is LOADING, and an attach succeeds right after it), STATUS= lines
# while loading, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 when the
# shutdown starts.  The unit file runs the broker as its own account
# and passes systemd-analyze verify.
. "$(dirname "$0")/lib.sh"

make_model "$T/m.safetensors" 6000000
"$BIN/mbfault" notify-listen "$T/notify.sock" >"$T/notify.log" &
listener=$!
CHILDREN+=("$listener")
wait_until 10 grep -q listening "$T/notify.log" || fail "no listener"
notified() { grep -q "$1" "$T/notify.log"; }

NOTIFY_SOCKET="$T/notify.sock" WATCHDOG_USEC=200000 \
	start_broker --model "m=$T/m.safetensors" --load-rate 3M
wait_until 10 notified "STATUS=loading m" || fail "no STATUS while loading"
state_is m LOADING || fail "m is $(model_state m)"
notified "READY=1" && fail "READY=1 while the preload still runs"
wait_until 20 notified "READY=1" || fail "no READY=1"
grep -q "READY=1 STATUS=serving 1 model(s) MAINPID=$BROKER_PID" "$T/notify.log" ||
	fail "READY line: $(cat "$T/notify.log")"
"$BIN/mbworker" --socket "$SOCK" --model m --passes 1 >/dev/null ||
	fail "attach right after READY=1 failed"
watchdogs() { [ "$(grep -c "^WATCHDOG=1$" "$T/notify.log")" -ge 3 ]; }
wait_until 10 watchdogs || fail "no watchdog keep-alives"

kill -TERM "$BROKER_PID"
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS"
wait_until 5 notified "STOPPING=1 STATUS=shutting down (on SIGTERM)" ||
	fail "no STOPPING=1: $(cat "$T/notify.log")"
assert_no_shm

# The unit runs as its own account, where the 0400 seal holds (root
# ignores it: test_sealed_uid), and shares the socket with its group.
UNIT="$(dirname "$0")/../../contrib/systemd/mbrokerd.service"
grep -q "^User=mbroker$" "$UNIT" || fail "the unit does not run as user mbroker"
grep -q "^ExecStart=.* --allow-gid mbroker " "$UNIT" &&
	grep -q "^Group=mbroker$" "$UNIT" &&
	grep -q "^RuntimeDirectoryMode=0750$" "$UNIT" ||
	fail "the unit does not share the socket with group mbroker"
if command -v systemd-analyze >/dev/null; then
	sed "s|/usr/local/sbin/mbrokerd|$BIN/mbrokerd|" \
		"$(dirname "$0")/../../contrib/systemd/mbrokerd.service" \
		>"$T/mbrokerd.service"
	# --man=no: the man page is checked by the install test, not here.
	systemd-analyze verify --man=no "$T/mbrokerd.service" >"$T/verify.log" 2>&1 ||
		fail "systemd-analyze verify: $(cat "$T/verify.log")"
else
	echo "systemd-analyze not installed: the unit was not verified" >&2
fi
