# SPDX-License-Identifier: MIT
# A holder that the broker loses while it tells holders something: the
# `replaced` event of a replace, or the `unload` event of an unload, finds
# the holder's socket refusing messages (it shut its reading side, so the
# send fails at once), or a holder that never reads has 256 events queued.
# The broker drops that client, releasing what it held, and goes on: the
# replace and the unload are answered, the broker keeps answering, the
# dropped holder's generation goes, and the shutdown leaves /dev/shm empty.
. "$(dirname "$0")/replace_lib.sh"

make_model --seed 1 "$T/m1.safetensors" 100000
make_model --seed 2 "$T/m2.safetensors" 100000

# deaf_holder MODEL HOW: a Python worker that attaches MODEL, then stops
# reading: HOW "shut" shuts its reading side, "never" just never reads,
# "later" shuts its reading side once $T/deaf.shut exists (deaf_shut).
# Sets DEAF_PID once it holds MODEL.
cat >"$T/deaf.py" <<'EOF'
import os, signal, socket, sys, time
import mbroker
client = mbroker.Client(sys.argv[1])
signal.signal(client.hello.get("signal", signal.SIGUSR1), signal.SIG_IGN)
client.attach(sys.argv[2])
if sys.argv[3] == "shut":
    client._sock.shutdown(socket.SHUT_RD)
open(sys.argv[4], "w").close()
if sys.argv[3] == "later":
    while not os.path.exists(sys.argv[4] + ".shut"):
        time.sleep(0.01)
    client._sock.shutdown(socket.SHUT_RD)
    open(sys.argv[4] + ".done", "w").close()
while True:
    time.sleep(60)
EOF
deaf_holder() {
	rm -f "$T/deaf.ready"
	"$PY" "$T/deaf.py" "$SOCK" "$1" "$2" "$T/deaf.ready" 2>>"$T/deaf.err" &
	DEAF_PID=$!
	CHILDREN+=("$DEAF_PID")
	wait_until 10 test -e "$T/deaf.ready" ||
		fail "the deaf holder did not attach: $(cat "$T/deaf.err")"
}

# deaf_shut: a "later" deaf holder shuts its reading side now.
deaf_shut() {
	touch "$T/deaf.ready.shut"
	wait_until 10 test -e "$T/deaf.ready.done" || fail "the holder did not shut"
}

# abandoned_generation NAME: NAME has a generation whose drain timed out.
abandoned_generation() {
	generations "$1" | grep -q '"state":"ERROR"'
}

# answers: the broker still runs and answers.
answers() {
	kill -0 "$BROKER_PID" 2>/dev/null || fail "the broker died"
	mbctl ping >/dev/null || fail "the broker does not answer"
}

# 1. A replace whose replaced event cannot be sent.
start_broker --model "w=$T/m1.safetensors"
wait_until 10 state_is w READY || fail "no model"
deaf_holder w shut
reply=$(request '{"op":"load","name":"w","path":"'"$T/m2.safetensors"'","replace":true,"wait":true,"timeout":30}') ||
	fail "replace: $reply"
answers
wait_until 10 generation_count_is w 1 || fail "generations: $(generations w)"
wait_until 10 segments_are w "$(segment_of_generation w 2) " ||
	fail "segments: $(model_segments w)"
assert_log "client pid $DEAF_PID (conn [0-9]*, worker) gone"
shutdown_clean

# 2. An unload whose unload event cannot be sent.
start_broker --model "w=$T/m1.safetensors"
wait_until 10 state_is w READY || fail "no model"
deaf_holder w shut
reply=$(request '{"op":"unload","name":"w","timeout":10}') ||
	fail "unload: $reply"
answers
[ -z "$(model_state w)" ] || fail "after the unload: $(mbctl --json list)"
shutdown_clean

# 3. Replaces one after another while a holder of generation 1 never reads
# its socket: it is dropped once its events fill the queue, the broker
# serves on.
start_broker --model "w=$T/m1.safetensors"
wait_until 10 state_is w READY || fail "no model"
deaf_holder w never
"$PY" - "$SOCK" "$T/m2.safetensors" >"$T/flood.out" 2>&1 <<'EOF' ||
import sys
import mbroker
admin = mbroker.Client(sys.argv[1], role="admin", timeout=10)
admin.timeout = 10
for i in range(1500):
    admin.request("load", name="w", path=sys.argv[2], replace=True,
                  wait=True, timeout=86400)
print("replaced", i + 1, "times")
EOF
	fail "replace flood: $(tail -n 5 "$T/flood.out")"
answers
assert_log "pid $DEAF_PID (uid [0-9]*): .*dropping the client"
wait_until 10 generation_count_is w 1 || fail "generations: $(generations w)"
shutdown_clean

# 4. A generation whose drain timed out (ERROR, still held) is told of the
# next replace too; its holder is lost right then, and it is its last.
start_broker --model "w=$T/m1.safetensors"
wait_until 10 state_is w READY || fail "no model"
deaf_holder w later
reply=$(request '{"op":"load","name":"w","path":"'"$T/m2.safetensors"'","replace":true,"wait":true,"timeout":0}') ||
	fail "replace: $reply"
wait_until 10 abandoned_generation w ||
	fail "generation 1 did not time out: $(generations w)"
deaf_shut
reply=$(request '{"op":"load","name":"w","path":"'"$T/m1.safetensors"'","replace":true,"wait":true,"timeout":30}') ||
	fail "second replace: $reply"
answers
wait_until 10 generation_count_is w 1 || fail "generations: $(generations w)"
shutdown_clean
