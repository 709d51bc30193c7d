# SPDX-License-Identifier: MIT
# Who may do what, with real other users (setpriv, no accounts needed):
# members of --allow-gid reach the socket and use models but may not
# administer; a supplementary group counts; members of --admin-gid may
# load and shut down; anyone else cannot reach the socket.  Refusals carry
# permission_denied and are logged with the peer's uid and pid.  Rights
# come from the kernel's credentials, so a socket opened up by mistake
# still gives a stranger nothing but hello and ping.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -ne 0 ]; then
	skip "needs root to run clients as other users"
fi
USERS=4242
ADMINS=4343
as() {
	local uid=$1 gid=$2 groups=$3
	shift 3
	setpriv --reuid "$uid" --regid "$gid" --groups "$groups" "$@"
}
mode_of() {
	stat -c '%a %g' "$1"
}

chmod 0711 "$T"
SOCK="$T/sock/broker.sock"
make_model "$T/m.safetensors" 2000000
chmod 0644 "$T/m.safetensors"
start_broker --allow-gid $USERS --admin-gid $ADMINS --shutdown-timeout 5
load m "$T/m.safetensors"
[ "$(mode_of "$T/sock")" = "750 $USERS" ] || fail "dir: $(mode_of "$T/sock")"
[ "$(mode_of "$SOCK")" = "660 $USERS" ] || fail "socket: $(mode_of "$SOCK")"
[ "$(mode_of "/dev/shm/mbroker.$INSTANCE.registry")" = "640 $USERS" ] ||
	fail "registry: $(mode_of "/dev/shm/mbroker.$INSTANCE.registry")"
[ "$(mode_of "/dev/shm/sem.mbroker.$INSTANCE.ack")" = "660 $USERS" ] ||
	fail "semaphore: $(mode_of "/dev/shm/sem.mbroker.$INSTANCE.ack")"

# A user of the group: lists, attaches (and acks), may not administer.
as 5001 $USERS $USERS "$BIN/mbctl" --socket "$SOCK" list | grep -q "^m .*READY" ||
	fail "a group member cannot list"
err=$(as 5001 $USERS $USERS "$BIN/mbctl" --socket "$SOCK" load x "$T/m.safetensors" 2>&1) &&
	fail "a group member loaded a model"
case "$err" in *"uid 5001 may not administer the broker (load)"*"permission denied"*) ;;
*) fail "refusal: $err" ;; esac
assert_log "refused load from uid 5001 pid [0-9]*: it may not administer"
err=$(as 5001 $USERS $USERS "$BIN/mbctl" --socket "$SOCK" shutdown 2>&1) &&
	fail "a group member shut the broker down"
setpriv --reuid 5001 --regid $USERS --groups $USERS "$BIN/mbworker" \
	--socket "$SOCK" --model m --interval 20 >"$T/w1.log" 2>&1 &
w1=$!
CHILDREN+=("$w1")
# Through a supplementary group only.
setpriv --reuid 5002 --regid 5002 --groups $USERS "$BIN/mbworker" \
	--socket "$SOCK" --model m --interval 20 >"$T/w2.log" 2>&1 &
w2=$!
CHILDREN+=("$w2")
wait_attached 2
mbctl workers | grep -q "^$w1 *5001 " || fail "workers: $(mbctl workers)"

# Anyone else cannot even reach the socket.
err=$(as 5004 5004 5004 "$BIN/mbctl" --socket "$SOCK" ping 2>&1) &&
	fail "a stranger reached the socket"
case "$err" in *"Permission denied"*) ;; *) fail "stranger: $err" ;; esac

# An administrator (here through a supplementary group): loads, shuts down.
as 5003 $USERS "$USERS,$ADMINS" "$BIN/mbctl" --socket "$SOCK" \
	load n "$T/m.safetensors" --wait >/dev/null || fail "an admin cannot load"
t0=$(now_ms)
as 5003 $USERS "$USERS,$ADMINS" "$BIN/mbctl" --socket "$SOCK" shutdown \
	>/dev/null || fail "an admin cannot shut down"
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS"
worker_exited_with "$w1" 0
worker_exited_with "$w2" 0
grep -q acknowledged "$T/w1.log" || fail "the group's worker did not ack"
assert_no_shm

# Without groups the directory is 0700 (the group's 0750 one is refused,
# so it goes); opened up by mistake, a stranger still gets nothing but
# hello and ping.
: >"$BROKER_LOG"
rmdir "$T/sock"
start_broker
chmod 0755 "$T/sock"
chmod 0666 "$SOCK"
as 5004 5004 5004 "$BIN/mbctl" --socket "$SOCK" ping >/dev/null ||
	fail "the stranger cannot ping"
err=$(as 5004 5004 5004 "$BIN/mbctl" --socket "$SOCK" list 2>&1) &&
	fail "a stranger listed the models"
case "$err" in *"uid 5004 may not use models (list)"*) ;; *) fail "$err" ;; esac
err=$(as 5004 5004 5004 "$BIN/mbworker" --socket "$SOCK" --model m 2>&1) &&
	fail "a stranger attached"
case "$err" in *"permission denied"*) ;; *) fail "$err" ;; esac
shutdown_clean
