# SPDX-License-Identifier: MIT
# What the seal of a loaded model (mode 0400) really stops, with the broker
# run as an unprivileged user (nobody, through setpriv): no process of
# that uid can open the segment for writing, by its name or through the
# broker's /proc/PID/fd; root can (CAP_DAC_OVERRIDE ignores the mode), and
# so can the owner after a chmod, as docs/security.md says.  Needs root.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "skipping: needs root to run the broker as another user" >&2
	exit 77
fi
NOBODY=65534
as_nobody() {
	setpriv --reuid $NOBODY --regid $NOBODY --clear-groups "$@"
}
# opens_for_writing PATH: whether an O_RDWR open of PATH succeeds.
opens_for_writing() {
	"$@" sh -c 'exec 3<>"$0"' "$OPEN_PATH" 2>>"$T/open.log"
}

chmod 0711 "$T"
mkdir -m 0700 "$T/n"
make_model "$T/n/m.safetensors" 1000000
chown -R $NOBODY:$NOBODY "$T/n"
SOCK="$T/n/b.sock"
BROKER_WRAPPER=(setpriv --reuid $NOBODY --regid $NOBODY --clear-groups)
# mbctl trusts a broker of another uid only when told.
export MBROKER_BROKER_UID=$NOBODY
start_broker
load m "$T/n/m.safetensors"
seg=$(instance_shm | grep "^mbroker\.$INSTANCE\.model\.m\.")
[ -n "$seg" ] || fail "no segment: $(instance_shm)"
[ "$(stat -c '%a %u' "/dev/shm/$seg")" = "400 $NOBODY" ] ||
	fail "segment: $(stat -c '%a %u' "/dev/shm/$seg")"
fd=$(ls -l "/proc/$BROKER_PID/fd" | grep -F "/dev/shm/$seg" | awk '{print $9}' | head -n1)
[ -n "$fd" ] || fail "the broker holds no descriptor of $seg"

OPEN_PATH="/dev/shm/$seg"
opens_for_writing as_nobody && fail "the broker's uid reopened $seg for writing"
OPEN_PATH="/proc/$BROKER_PID/fd/$fd"
opens_for_writing as_nobody &&
	fail "the broker's uid reopened $seg for writing through /proc"
[ "$(grep -c "Permission denied" "$T/open.log")" -eq 2 ] ||
	fail "refusals: $(cat "$T/open.log")"
# Where the seal does not hold, as documented: root, and the owner once
# it has changed the mode back.
OPEN_PATH="/dev/shm/$seg"
opens_for_writing env || fail "root could not open $seg for writing"
as_nobody chmod 0600 "/dev/shm/$seg"
opens_for_writing as_nobody || fail "the owner could not after a chmod"
as_nobody chmod 0400 "/dev/shm/$seg"
mbctl unload m >/dev/null || fail "unload failed"
shutdown_clean
