# SPDX-License-Identifier: MIT
# Segments readable by --allow-gid workers: with --allow-gid, a sealed
# segment is mode 0440 and of that group (0400 without it; no write bit
# ever), so a worker of another uid admitted by the group can reopen a
# descriptor it received through /proc/self/fd/N read-only (a library
# that wants a path gets one), while a read-write open fails with
# EACCES.  The broker runs unprivileged (a member of the group, as
# setpriv makes it) and the worker as a third uid; both through setpriv,
# no accounts needed.  Needs root.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -ne 0 ]; then
	skip "needs root to run the broker and a worker as other users"
fi
PY=/usr/bin/python3
USERS=4646
BROKER_UID=5200
WORKER_UID=5201
CLIENT="$(cd "$(dirname "$0")/../tools" && pwd)/bundle_client.py"

chmod 0711 "$T"
mkdir -m 0711 "$T/n"
chown $BROKER_UID:$BROKER_UID "$T/n"
B="$T/n/bundle"
mkdir -p "$B/sub"
make_model "$B/model.safetensors" 200000
make_model --raw "$B/sub/vocab" 30000
: >"$B/empty"
chmod -R a+rX "$B"
SOCK="$T/n/sock/broker.sock"
BROKER_WRAPPER=(setpriv --reuid $BROKER_UID --regid $BROKER_UID
	--groups $USERS)
# mbctl trusts a broker of another uid only when told.
export MBROKER_BROKER_UID=$BROKER_UID
start_broker --allow-gid $USERS
load b "$B"
segs=$(instance_shm | grep "^mbroker\.$INSTANCE\.model\.b\.") ||
	fail "no segment: $(instance_shm)"
[ "$(echo "$segs" | wc -l)" -eq 3 ] || fail "segments: $segs"
for seg in $segs; do
	[ "$(stat -c '%a %u %g' "/dev/shm/$seg")" = "440 $BROKER_UID $USERS" ] ||
		fail "$seg: $(stat -c '%a %u %g' "/dev/shm/$seg")"
done

# The worker: attaches, maps, and reopens each descriptor by its
# /proc/self/fd path, read-only only.
setpriv --reuid $WORKER_UID --regid $WORKER_UID --groups $USERS \
	"${LIBMBROKER_ENV[@]}" "$PY" "$CLIENT" --reopen "$SOCK" b "$B" "$BIN/libmbroker.so" \
	>"$T/client.out" 2>&1 || fail "worker: $(cat "$T/client.out")"
grep -q "^ok 3 " "$T/client.out" || fail "worker: $(cat "$T/client.out")"
# Nor may it open a segment by its name for writing.
seg=$(echo "$segs" | head -n1)
setpriv --reuid $WORKER_UID --regid $WORKER_UID --groups $USERS \
	sh -c 'exec 3<>"$0"' "/dev/shm/$seg" 2>/dev/null &&
	fail "the worker opened $seg for writing"
shutdown_clean
