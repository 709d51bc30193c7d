# SPDX-License-Identifier: MIT
# The Python client (bindings/python) against a real broker, with the
# system python3 and Debian's python3-numpy: zero-copy numpy views of
# tensors, refusals with their codes, an unload acked by a Python worker.
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
shutdown_clean
