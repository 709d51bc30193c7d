# SPDX-License-Identifier: MIT
# contrib/supervisord/mbroker.conf under a real supervisord: the broker and
# its pool of 4 workers come up (workers retry until the broker listens),
# and `supervisorctl stop all` stops the workers first, then the broker
# with SIGTERM inside stopwaitsecs: a clean shutdown, nothing left.
. "$(dirname "$0")/lib.sh"

command -v supervisord >/dev/null ||
	fail "supervisord is missing (scripts/install-deps.sh installs it)"
make_model "$T/m.safetensors" 2000000
mkdir "$T/logs"
CONF="$T/supervisord.conf"
cat >"$CONF" <<CONF
[supervisord]
logfile=$T/supervisord.log
pidfile=$T/supervisord.pid
[unix_http_server]
file=$T/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://$T/supervisor.sock
CONF
sed -e "s|/usr/local/sbin/mbrokerd|$BIN/mbrokerd --instance $INSTANCE|" \
	-e "s|/usr/local/bin/mbworker|$BIN/mbworker|" \
	-e "s|/run/mbroker/default.sock|$SOCK|" \
	-e "s|/srv/models/whisper.safetensors|$T/m.safetensors|" \
	-e "s|/var/log/mbroker|$T/logs|" \
	"$(dirname "$0")/../../contrib/supervisord/mbroker.conf" >>"$CONF"
supervisord -n -c "$CONF" &
CHILDREN+=("$!")
wait_until 20 mbctl ping || fail "no broker under supervisord: $(cat "$T/supervisord.log")"
wait_until 20 attached_is 4 || fail "the pool did not attach: $(mbctl workers)"
BROKER_LOG="$T/logs/mbrokerd.log"
supervisorctl -c "$CONF" stop all >"$T/stop.log" 2>&1 ||
	fail "stop all: $(cat "$T/stop.log")"
grep -q "mbrokerd: stopped" "$T/stop.log" || fail "$(cat "$T/stop.log")"
assert_log "exiting with status 0"
assert_no_shm
supervisorctl -c "$CONF" shutdown >/dev/null 2>&1 || true
