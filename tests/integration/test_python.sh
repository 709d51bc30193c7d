# SPDX-License-Identifier: MIT
# The Python client (bindings/python) against a real broker, with the
# system python3 and Debian's python3-numpy: zero-copy numpy views of
# tensors, refusals with their codes, an unload acked by a Python worker,
# the example pool serving, and following a replace.
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
if ! "$PY" -c "import numpy" 2>/dev/null; then
	fail "the system python3 with numpy is missing (scripts/install-deps.sh installs it)"
fi
MB_BIN="$BIN" "$PY" -m unittest discover -s "$(dirname "$0")/../../bindings/python/tests" \
	>"$T/python.log" 2>&1 || fail "python tests: $(cat "$T/python.log")"
grep -q "^OK" "$T/python.log" || fail "$(cat "$T/python.log")"

# The example pool runs against a real broker: 4 processes, one copy.
make_model "$T/m.safetensors" 2000000
start_broker --model "w=$T/m.safetensors"
wait_until 10 state_is w READY || fail "no model for the example"
PYTHONPATH="$(dirname "$0")/../../bindings/python" "$PY" \
	"$(dirname "$0")/../../examples/python_pool.py" "$SOCK" w >"$T/pool.log" 2>&1 ||
	fail "example: $(cat "$T/pool.log")"
[ "$(grep -c '^request [0-9]*: layers\.' "$T/pool.log")" -eq 8 ] ||
	fail "example output: $(cat "$T/pool.log")"

# The pool follows a replace (needs a broker that replaces): a long run,
# the model reloaded under it; its workers move to the new generation and
# let go of the old one long before its drain deadline.
old=$(mbctl --json list | json_int generation)
setsid env PYTHONPATH="$(dirname "$0")/../../bindings/python" "$PY" \
	"$(dirname "$0")/../../examples/python_pool.py" "$SOCK" w 1000000 \
	>"$T/replace.log" 2>&1 &
POOL=$!
EXTRA_CLEANUP="kill -9 -- -$POOL 2>/dev/null"
wait_until 20 grep -q "(generation $old)" "$T/replace.log" ||
	fail "the pool does not serve: $(tail -n 5 "$T/replace.log")"
mbctl reload w --wait --drain-timeout 60 >/dev/null || fail "reload failed"
new=$(mbctl --json list | json_int generation)
[ "$new" -gt "$old" ] || fail "the reload left generation $new"
wait_until 20 grep -q "(generation $new)" "$T/replace.log" ||
	fail "the pool stays on $old: $(tail -n 5 "$T/replace.log")"
old_released() { ! instance_shm | grep -q "\.model\.w\.$old-"; }
wait_until 20 old_released || fail "generation $old still held: $(mbctl list)"
state_is w READY || fail "w is $(model_state w) after the drain"
kill -9 -- -"$POOL"
wait "$POOL" 2>/dev/null || true
EXTRA_CLEANUP=
shutdown_clean
