# SPDX-License-Identifier: MIT
# --metrics-listen: a Prometheus scrape with curl on loopback shows the
# registry as it is: models by state, bytes and attached workers per
# model, the counters; only GET /metrics is served.
. "$(dirname "$0")/lib.sh"

command -v curl >/dev/null || fail "curl is needed (scripts/install-deps.sh installs it)"
make_model "$T/m.safetensors" 3000000
start_broker --metrics-listen 127.0.0.1:0
wait_until 10 grep -q "metrics on http://127.0.0.1:" "$BROKER_LOG" || fail "no metrics"
URL=$(sed -n 's/.*metrics on \(http:[^ ]*\)$/\1/p' "$BROKER_LOG")
load m "$T/m.safetensors"
start_worker m
wait_attached 1
scrape() { curl -sf "$URL" >"$T/metrics.txt"; }
scrape || fail "scrape failed"
expect() {
	grep -qx "$1" "$T/metrics.txt" || fail "metrics lack '$1': $(cat "$T/metrics.txt")"
}
size=$(mbctl --json list | json_int size)
expect "mbroker_model_bytes{model=\"m\",state=\"READY\"} $size"
expect "mbroker_model_attached{model=\"m\"} 1"
expect 'mbroker_models{state="READY"} 1'
expect 'mbroker_workers 1'
expect 'mbroker_loads_total 1'
expect 'mbroker_attaches_total 1'
expect "mbroker_reserved_bytes $size"
grep -q '^mbroker_model_load_seconds{model="m"} [0-9.]*$' "$T/metrics.txt" ||
	fail "no load duration"
grep -q '^# TYPE mbroker_unload_timeouts_total counter$' "$T/metrics.txt" ||
	fail "no TYPE line"
status=$(curl -s -o /dev/null -w '%{http_code}' "${URL%/metrics}/other")
[ "$status" = 404 ] || fail "GET /other gave $status"
mbctl unload m >/dev/null
scrape || fail "second scrape failed"
expect 'mbroker_unloads_total 1'
expect 'mbroker_models{state="READY"} 0'
shutdown_clean
