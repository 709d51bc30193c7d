# SPDX-License-Identifier: MIT
# examples/torch_asr_pool.py (PyTorch wav2vec2, 378 MB of weights, on
# speech from espeak-ng) against a real broker: 8 workers over the shared
# mapping give bitwise the logits 8 workers with a private copy each give,
# for about one copy of the weights (the Pss of the mapping in the workers,
# and the broker's own `mbctl memory`, <= 1.05 x the file) where the
# private ones cost more than 6; an unload is acked by every worker, which
# exits 0 and leaves nothing mapped; workers passing back to back follow a
# replace by another file without a failed pass, and give the logits of
# the new weights.  The figures go to stderr.
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
"$PY" -c "import numpy, torch, torchaudio" 2>/dev/null ||
	fail "the system python3 lacks numpy, torch or torchaudio (scripts/install-deps.sh installs them)"
for tool in espeak-ng sox; do
	command -v "$tool" >/dev/null ||
		fail "$tool is missing (scripts/install-deps.sh installs it)"
done
export PYTHONPATH="$ROOT/bindings/python"
WORKERS=8

# start_pool NAME ARGS...: the example in a session of its own (killed
# whole if the test fails), its output in $T/NAME.log; sets POOL_PID.
start_pool() {
	local name=$1
	shift
	setsid "$PY" "$ROOT/examples/torch_asr_pool.py" "$@" \
		>"$T/$name.log" 2>&1 &
	POOL_PID=$!
	CHILDREN+=("$POOL_PID")
	EXTRA_CLEANUP="${EXTRA_CLEANUP:-} kill -9 -- -$POOL_PID 2>/dev/null;"
}

# wait_line NAME PATTERN: until the pool's output has a line matching
# PATTERN (a pool that dies fails at once).
wait_line() {
	local pid=$POOL_PID
	wait_until 150 sh -c "grep -q '$2' '$T/$1.log' || ! kill -0 $pid" ||
		fail "$1: no '$2' in time: $(tail -n 5 "$T/$1.log")"
	grep -q "$2" "$T/$1.log" || fail "$1 died: $(tail -n 20 "$T/$1.log")"
}

# pool_exit PID WANT: the pool exits WANT.
pool_exit() {
	local status=0
	wait_until 30 sh -c "! kill -0 $1" || fail "pool $1 does not exit"
	wait "$1" || status=$?
	[ "$status" -eq "$2" ] || fail "pool $1 exited $status, not $2"
}

# workers_passed NAME GENERATION: every worker of a 2-worker pool has a
# pass over GENERATION.
workers_passed() {
	[ "$(grep "^pass generation=$2 " "$T/$1.log" |
		grep -o ' worker=[0-9]*' | sort -u | wc -l)" -eq 2 ]
}

t0=$(now_ms)
"$PY" "$ROOT/examples/torch_asr_build.py" "$T/a.safetensors" --seed 1 &
build_a=$!
"$PY" "$ROOT/examples/torch_asr_build.py" "$T/b.safetensors" --seed 2 &
build_b=$!
CHILDREN+=("$build_a" "$build_b")
wait "$build_a" || fail "building the model of seed 1 failed"
wait "$build_b" || fail "building the model of seed 2 failed"
size=$(stat -c %s "$T/a.safetensors")
[ "$size" -ge 300000000 ] || fail "the model has $size bytes, not 300 MB"

# Private copies: 8 workers over seed 1, and 1 over seed 2 for later.
start_pool private-b --private "$T/b.safetensors" --workers 1 --passes 1
private_b=$POOL_PID
start_pool private --private "$T/a.safetensors" --workers $WORKERS --passes 1
wait_line private '^memory '
kill -TERM "$POOL_PID"
pool_exit "$POOL_PID" 0

# Shared: 8 workers over the broker's mapping, then an unload.
start_broker --model "m=$T/a.safetensors"
wait_until 30 state_is m READY || fail "m is $(model_state m)"
start_pool shared --socket "$SOCK" --model m --workers $WORKERS --passes 1
wait_line shared '^memory '
mbctl --json memory >"$T/memory.json" || fail "mbctl memory failed"
"$PY" - "$T" "$WORKERS" <<'PY' || fail "$(cat "$T/shared.log" "$T/private.log")"
import json, statistics, sys
t, workers = sys.argv[1], int(sys.argv[2])
def lines(name, event):
    out = []
    for line in open(f"{t}/{name}.log"):
        word, *fields = line.split()
        if word == event:
            out.append(dict(f.split("=", 1) for f in fields))
    return out
shared, private = lines("shared", "pass"), lines("private", "pass")
assert len(shared) == workers and len(private) == workers, (shared, private)
digests = {p["logits"] for p in shared + private}
assert len(digests) == 1, f"shared and private logits differ: {digests}"
mem = {m["mode"]: m for m in lines("shared", "memory") + lines("private", "memory")}
ratio = {k: float(m["model_pss_kb"]) * 1024 / int(m["model_bytes"])
         for k, m in mem.items()}
assert ratio["shared"] <= 1.05, f"shared model Pss {ratio['shared']:.3f} x one copy"
assert ratio["private"] > 6, f"private model Pss {ratio['private']:.3f} x one copy"
broker = json.load(open(f"{t}/memory.json"))["models"][0]
pids = sorted(int(b["pid"]) for b in lines("shared", "built"))
assert sorted(h["pid"] for h in broker["holders"]) == pids, broker
held = broker["holders_pss_kb"] * 1024 / broker["bytes"]
assert held <= 1.05, f"mbctl memory: holders' Pss {held:.3f} x the model"
def ms(name, event):
    return statistics.median(float(p["ms"]) for p in lines(name, event))
mib = {k: int(m["pss_kb"]) / 1024 for k, m in mem.items()}
print(f"figures: {workers} workers, model {int(mem['shared']['model_bytes'])} bytes; "
      f"model Pss / one copy: shared {ratio['shared']:.3f} (broker: {held:.3f}), "
      f"private {ratio['private']:.3f}; whole-process Pss: shared "
      f"{mib['shared']:.0f} MiB, private {mib['private']:.0f} MiB; "
      f"first output (median): shared {ms('shared', 'first'):.0f} ms, "
      f"private {ms('private', 'first'):.0f} ms; pass (median): shared "
      f"{ms('shared', 'pass'):.0f} ms, private {ms('private', 'pass'):.0f} ms",
      file=sys.stderr)
PY
mbctl --json unload m >"$T/unload.json" || fail "unload: $(cat "$T/unload.json")"
# Nobody maps it any more: the unload freed every byte.
[ "$(json_int freed_bytes <"$T/unload.json")" = "$size" ] ||
	fail "the unload freed less than the model: $(cat "$T/unload.json")"
pool_exit "$POOL_PID" 0
[ "$(grep -c '^unloaded reason=unload ' "$T/shared.log")" -eq $WORKERS ] ||
	fail "not every worker acked: $(cat "$T/shared.log")"

# Replace under passes: 2 workers pass back to back over seed 1; the model
# is replaced by seed 2; both move to it, no pass fails, and the logits
# are those of the private copies of each file.
load m "$T/a.safetensors"
old=$(mbctl --json list | json_int generation)
start_pool follow --socket "$SOCK" --model m --workers 2 --passes 0
wait_until 150 workers_passed follow "$old" ||
	fail "the workers do not pass: $(tail -n 5 "$T/follow.log")"
# A pass in flight ends on the old generation before its worker moves:
# the drain and the unload below wait for it, however slow the machine.
mbctl --timeout 150 load m "$T/b.safetensors" --replace --wait \
	--drain-timeout 150 >/dev/null ||
	fail "the replace failed"
new=$(mbctl --json list | json_int generation)
[ "$new" -gt "$old" ] || fail "the replace left generation $new"
wait_until 150 workers_passed follow "$new" ||
	fail "the workers stay on $old: $(tail -n 5 "$T/follow.log")"
old_released() { ! instance_shm | grep -q "\.model\.m\.$old-"; }
wait_until 10 old_released || fail "generation $old still held: $(mbctl list)"
mbctl --timeout 150 unload m --timeout 150 >/dev/null ||
	fail "the unload under passes failed"
pool_exit "$POOL_PID" 0
POOL_PID=$private_b
wait_line private-b '^memory '
kill -TERM "$private_b"
pool_exit "$private_b" 0
digest() { grep '^pass ' "$T/$1.log" | head -n1 | grep -o 'logits=[0-9a-f]*'; }
seed1=$(digest private) seed2=$(digest private-b)
[ "$seed1" != "$seed2" ] || fail "the two seeds give the same logits"
while read -r _ generation _ logits _; do
	case $generation in
	"generation=$old") want=$seed1 ;;
	"generation=$new") want=$seed2 ;;
	*) fail "a pass over $generation" ;;
	esac
	[ "$logits" = "$want" ] || fail "a pass over $generation gave $logits, not $want"
done < <(grep '^pass ' "$T/follow.log")
[ "$(grep -c "^switch old=$old new=$new " "$T/follow.log")" -eq 2 ] ||
	fail "not every worker switched: $(cat "$T/follow.log")"
shutdown_clean
echo "test_torch_pool: $(($(elapsed_since "$t0") / 1000)) s" >&2
