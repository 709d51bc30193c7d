# SPDX-License-Identifier: MIT
# Names that are not ours are never used or removed: the instance's lock
# held by another user, a file squatting on the socket path, a socket
# directory others can write, and a stranger's file under the instance's
# prefix at start-up.  Each start is refused with exit 2 and a message saying why,
# or goes on leaving the stranger's file alone.
. "$(dirname "$0")/lib.sh"

expect_refused() {
	local message=$1 status=0
	shift
	"$BIN/mbrokerd" --instance "$INSTANCE" "$@" 2>"$T/refused.log" ||
		status=$?
	[ $status -eq 2 ] || fail "mbrokerd $* exited $status, not 2"
	grep -q "$message" "$T/refused.log" ||
		fail "no '$message': $(cat "$T/refused.log")"
}

mkdir -m 0777 "$T/open"
expect_refused "socket directory $T/open has mode 0777, writable by others" \
	--socket "$T/open/b.sock"
: >"$T/not-a-socket"
expect_refused "$T/not-a-socket exists and is not a socket" \
	--socket "$T/not-a-socket"
[ -f "$T/not-a-socket" ] || fail "the squatting file was removed"
assert_no_shm

if [ "$(id -u)" -ne 0 ]; then
	skip "the foreign-owner cases need root (setpriv, chown)"
fi
setpriv --reuid 65534 --regid 65534 --clear-groups \
	"$BIN/mbfault" squat "$INSTANCE" >"$T/squat.log" 2>&1 &
squatter=$!
CHILDREN+=("$squatter")
wait_until 10 grep -q squatting "$T/squat.log" || fail "no squatter"
expect_refused "already running (pid $squatter), held by uid 65534" \
	--socket "$SOCK"
kill "$squatter"
wait "$squatter" || true

# A symlink planted where the registry mirror goes: never followed, never
# removed, and the start is refused saying so.
ln -s "$T/target" "/dev/shm/mbroker.$INSTANCE.registry"
echo keep >"$T/target"
expect_refused "registry.* (a name that is not ours; left untouched)" \
	--socket "$SOCK"
[ -L "/dev/shm/mbroker.$INSTANCE.registry" ] || fail "the symlink was removed"
[ "$(cat "$T/target")" = keep ] || fail "the symlink's target was touched"
rm -f "/dev/shm/mbroker.$INSTANCE.registry"

stranger="/dev/shm/mbroker.$INSTANCE.model.x.1-deadbeef"
: >"$stranger"
chown 65534 "$stranger"
start_broker
assert_log "$stranger is not ours; left alone"
[ -e "$stranger" ] || fail "the stranger's file was removed"
mbctl shutdown >/dev/null || fail "shutdown failed"
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS"
[ "$(instance_shm)" = "$(basename "$stranger")" ] ||
	fail "expected only the stranger's file: $(instance_shm)"
