# SPDX-License-Identifier: MIT
# The socket's directory is the broker's alone.  A directory of another
# uid, one others can write (0777, or sticky 1777 like /tmp), a symlink,
# one of ours with another mode than 0700, or without --allow-gid's group
# and 0750, is refused and left as it was: exit 2, a message saying why,
# nothing created.  An existing 0750 directory of that group (systemd's
# RuntimeDirectory= with RuntimeDirectoryMode=0750 and Group=) is used,
# and the group reaches the socket.  The default path is a
# runtime directory of the user's own: root's /run/mbroker, else
# $XDG_RUNTIME_DIR, else /run/user/<uid> when it is the user's own, else
# /tmp/mbroker-<uid>, which a squatter can block but not take over; the
# broker, mbctl, the Python client and mbroker-service agree on it.  Needs root (chown,
# other uids, a private mount namespace for /run and /tmp).
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "skipping: needs root" >&2
	exit 77
fi
NOBODY=65534
GROUP=4242
chmod 0711 "$T"
mode_of() {
	stat -c '%a %u %g' "$1"
}

# expect_refused DIR MESSAGE [ARGS...]: a broker on DIR/b.sock exits 2
# saying MESSAGE, creates nothing and leaves DIR's mode alone (a broker
# that starts ends after 10 s).
expect_refused() {
	local dir=$1 message=$2 status=0 before
	shift 2
	before=$(mode_of "$dir")
	timeout 10 "$BIN/mbrokerd" --instance "$INSTANCE" --socket "$dir/b.sock" \
		"$@" 2>"$T/refused.log" || status=$?
	[ $status -eq 2 ] || fail "socket in $dir: exit $status, not 2"
	grep -q "socket directory $dir $message" "$T/refused.log" ||
		fail "no '$message': $(cat "$T/refused.log")"
	[ ! -e "$dir/b.sock" ] || fail "a socket was created in $dir"
	[ "$(mode_of "$dir")" = "$before" ] || fail "$dir changed: $(mode_of "$dir")"
	assert_no_shm
}

mkdir -m 0700 "$T/foreign" && chown $NOBODY:$NOBODY "$T/foreign"
expect_refused "$T/foreign" "belongs to uid $NOBODY, not to us (uid 0)"
mkdir "$T/open" && chmod 0777 "$T/open"
expect_refused "$T/open" "has mode 0777, writable by others"
mkdir "$T/sticky" && chmod 1777 "$T/sticky"
expect_refused "$T/sticky" "has mode 1777, writable by others"
mkdir -m 0700 "$T/mine" && ln -s "$T/mine" "$T/link"
expect_refused "$T/link" "is a symlink"

# Ours but open to others, or not shared with the client group: refused,
# never changed (it may be a home directory, or /run).
mkdir "$T/wide" && chmod 0755 "$T/wide"
expect_refused "$T/wide" "has mode 0755, not 0700"
mkdir -m 0700 "$T/run"
expect_refused "$T/run" \
	"has mode 0700 and group 0, not 0750 and the client group $GROUP" \
	--allow-gid $GROUP
# As RuntimeDirectoryMode=0750 and Group= make it: used as it is.
chgrp $GROUP "$T/run" && chmod 0750 "$T/run"
SOCK="$T/run/b.sock"
start_broker --allow-gid $GROUP
[ "$(mode_of "$T/run")" = "750 0 $GROUP" ] || fail "run: $(mode_of "$T/run")"
[ "$(mode_of "$SOCK")" = "660 0 $GROUP" ] || fail "socket: $(mode_of "$SOCK")"
setpriv --reuid 5001 --regid $GROUP --groups $GROUP "$BIN/mbctl" \
	--socket "$SOCK" ping >/dev/null || fail "the group cannot reach the socket"
shutdown_clean
# Created by the broker: 0750 and the group at once.
SOCK="$T/new/b.sock"
start_broker --allow-gid $GROUP
[ "$(mode_of "$T/new")" = "750 0 $GROUP" ] || fail "new: $(mode_of "$T/new")"
shutdown_clean

# The default path, in a private mount namespace with empty /run and /tmp.
if ! unshare -m true 2>/dev/null; then
	echo "skipping the default path: no private mount namespace" >&2
	exit 77
fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cat >"$T/default.sh" <<'INNER'
set -eu
BIN=$1 INST=$2 ROOT=$3
DEFAULT_SOCKET=$(sed -n '/^default_socket()/,/^}/p' "$ROOT/scripts/mbroker-service")
# The tree may itself live under /tmp (a CI clone): keep it and the
# binaries reachable under /mnt before /tmp and /run are emptied.
mount -t tmpfs -o mode=0755 tmpfs /mnt
mkdir /mnt/root /mnt/bin
mount --bind "$ROOT" /mnt/root
mount --bind "$BIN" /mnt/bin
ROOT=/mnt/root BIN=/mnt/bin
cd /
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -m 0755 /run/user
mount -t tmpfs -o mode=1777 tmpfs /tmp
# $! names the subshell that runs `as`, not always the broker: kill it by
# its instance.
trap 'pkill -9 -f -- "mbrokerd --instance $INST\$" || true' EXIT
bad() {
	echo "FAIL: $*"
	exit 1
}
# as UID [VAR=VALUE...] -- CMD...: CMD as UID with only those variables
# of the socket path set.
as() {
	local uid=$1
	shift
	setpriv --reuid "$uid" --regid "$uid" --clear-groups \
		env -u MBROKER_SOCKET -u XDG_RUNTIME_DIR "$@"
}
# agree WANT UID [VAR=VALUE...]: a broker started without --socket
# listens on WANT, and mbctl, the Python client and mbroker-service find
# it there.
agree() {
	local want=$1 uid=$2 i=0 py svc
	shift 2
	as "$uid" "$@" "$BIN/mbrokerd" --instance "$INST" &
	BROKER=$!
	until as "$uid" "$@" "$BIN/mbctl" ping >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -lt 500 ] || bad "no broker answers for uid $uid $*"
		sleep 0.02
	done
	[ -S "$want" ] || bad "uid $uid $*: no socket at $want"
	py=$(as "$uid" "$@" /usr/bin/python3 -c "import sys
sys.path.insert(0, '$ROOT/bindings/python')
import mbroker; print(mbroker.default_socket_path())")
	[ "$py" = "$want" ] || bad "uid $uid $*: Python says $py, not $want"
	svc=$(as "$uid" "$@" sh -uc "$DEFAULT_SOCKET
default_socket")
	[ "$svc" = "$want" ] || bad "uid $uid $*: mbroker-service says $svc"
	as "$uid" "$@" "$BIN/mbctl" shutdown >/dev/null
	wait $BROKER || bad "uid $uid $*: broker exited $?"
	echo "ok $want"
}
agree /run/mbroker/default.sock 0
agree /run/mbroker/default.sock 0 XDG_RUNTIME_DIR=/run/user/0
mkdir -m 0700 /run/user/xdg && chown 65534 /run/user/xdg
agree /run/user/xdg/mbroker/default.sock 65534 XDG_RUNTIME_DIR=/run/user/xdg
mkdir -m 0700 /run/user/65534 && chown 65534 /run/user/65534
agree /run/user/65534/mbroker/default.sock 65534
chown 0 /run/user/65534
agree /tmp/mbroker-65534/default.sock 65534
rm -rf /tmp/mbroker-65534
# A squatter of /tmp/mbroker-<uid> blocks the broker, visibly.
mkdir -m 0777 /tmp/mbroker-65534 && chown 4242 /tmp/mbroker-65534
status=0
as 65534 "$BIN/mbrokerd" --instance "$INST" 2>/tmp/squat.log || status=$?
[ $status -eq 2 ] || bad "the squatted directory: exit $status, not 2"
grep -q "socket directory /tmp/mbroker-65534 belongs to uid 4242" /tmp/squat.log ||
	bad "squatted: $(cat /tmp/squat.log)"
[ ! -e /tmp/mbroker-65534/default.sock ] || bad "a socket in the squatted directory"
echo "ok squatter refused"
INNER
unshare -m bash "$T/default.sh" "$BIN" "$INSTANCE-d" "$ROOT" \
	>"$T/default.log" 2>&1 || fail "default path: $(cat "$T/default.log")"
[ "$(grep -c '^ok ' "$T/default.log")" -eq 6 ] ||
	fail "default path: $(cat "$T/default.log")"
! ls /dev/shm | grep -q "mbroker\.$INSTANCE-d\." ||
	fail "left in /dev/shm: $(ls /dev/shm | grep "$INSTANCE-d")"
