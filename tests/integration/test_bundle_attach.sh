# SPDX-License-Identifier: MIT
# A bundle (a model made of a directory's files) attached from a real
# broker by the C library and the Python client: mbworker verifies each
# of its 20 members' checksums and the bundle's and reads a tensor of a
# sharded checkpoint through its index, and with --populate has the
# attach fill its page tables and says so; a Python worker with keep_fds
# reads a member through its /proc/self/fd path and through the member
# directory, which is gone after close; no descriptor of the bundle stays
# open in the broker's clients.  Skipped by a broker that loads no
# directories (format_error).
. "$(dirname "$0")/lib.sh"

mkdir -p "$T/b/sub/deeper"
for i in $(seq 0 13); do
	head -c $((1000 + 4099 * i)) /dev/urandom >"$T/b/f$(printf %02d "$i")"
done
: >"$T/b/empty"
echo "a file in a subdirectory" >"$T/b/sub/file"
head -c 5000 /dev/urandom >"$T/b/sub/deeper/x"
make_model "$T/b/model-00001-of-00002.safetensors" 100000
make_model --seed 2 "$T/b/model-00002-of-00002.safetensors" 50000
/usr/bin/python3 - "$T/b" <<'PY'
import json, struct, sys
root, weight_map = sys.argv[1], {}
for shard in ("model-00001-of-00002.safetensors",
              "model-00002-of-00002.safetensors"):
    with open(f"{root}/{shard}", "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        names = [k for k in json.loads(f.read(n)) if k != "__metadata__"]
    for name in names:
        weight_map.setdefault(name, shard)
with open(f"{root}/model.safetensors.index.json", "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)
PY
[ "$(find "$T/b" -type f | wc -l)" -eq 20 ] || fail "the bundle is not 20 files"

start_broker
if ! mbctl load b "$T/b" --wait >"$T/load.log" 2>&1; then
	grep -q "format_error\|not a regular file\|invalid model file" "$T/load.log" &&
		skip "this broker loads no directory: $(cat "$T/load.log")"
	fail "load: $(cat "$T/load.log")"
fi

total=$(find "$T/b" -type f -exec cat {} + | wc -c)
start_worker b --verbose --passes 2 --tensor layers.0.weight
worker_exited_with "$WORKER_PID" 0
grep -q "attached b generation 1, $total bytes, .* checksum ok" "$WORKER_LOG" ||
	fail "attach: $(cat "$WORKER_LOG")"
grep -q "^tensor layers.0.weight F32 .* of model-00001-of-00002.safetensors, first bytes" \
	"$WORKER_LOG" || fail "tensor: $(cat "$WORKER_LOG")"
grep -q "pass 2 generation 1 checksum ok" "$WORKER_LOG" ||
	fail "passes: $(cat "$WORKER_LOG")"
start_worker b --populate --passes 1
worker_exited_with "$WORKER_PID" 0
grep -q "attached b generation 1, $total bytes, .* populated, checksum ok" \
	"$WORKER_LOG" || fail "populate: $(cat "$WORKER_LOG")"

PYTHONPATH="$(dirname "$0")/../../bindings/python" /usr/bin/python3 - \
	"$SOCK" "$T/b" >"$T/python.log" 2>&1 <<'PY' || fail "python: $(cat "$T/python.log")"
import os, sys
import mbroker
sock, root = sys.argv[1:]
client = mbroker.connect(sock, timeout=10)
model = client.attach("b", keep_fds=True)
assert len(model.members) == 20, model.members
for m in model.members:
    with open(os.path.join(root, m.name), "rb") as f:
        body = f.read()
    assert bytes(m.data) == body, m.name
    with open(m.path, "rb") as f:
        assert f.read() == body, m.name
top = model.member_dir()
with open(os.path.join(top, "sub", "file"), "rb") as f:
    assert f.read() == b"a file in a subdirectory\n"
assert model.tensor("layers.0.weight").size > 0
client.close()
assert not os.path.exists(top), top
print("python ok")
PY
grep -q "^python ok$" "$T/python.log" || fail "python: $(cat "$T/python.log")"
wait_until 10 state_is b READY || fail "b is $(model_state b)"
shutdown_clean
