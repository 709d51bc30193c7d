# SPDX-License-Identifier: MIT
# What a worker sees through libmbroker: a tensor found by name whose bytes
# are the file's bytes at the header's offset, the registry mirror readable
# by anyone without a connection, `list` naming the attached pids, mb_ack
# called from inside the signal handler, and --ack-delay stretching the
# shutdown by that much but no more.
. "$(dirname "$0")/lib.sh"

make_model --tensors 4 "$T/m.safetensors" 4000000
start_broker --shutdown-timeout 10
load m "$T/m.safetensors"

# The header says where layers.2.weight starts; the worker must read the
# same bytes there through its mapping.
hlen=$(od -An -t u8 -N 8 "$T/m.safetensors" | tr -d ' ')
offset=$((8 + hlen + 2 * 1000000))
want=$(od -An -t x1 -j "$offset" -N 8 "$T/m.safetensors" | sed 's/^ //')
out=$("$BIN/mbworker" --socket "$SOCK" --model m --tensor layers.2.weight \
	--passes 1) || fail "mbworker --tensor failed: $out"
case "$out" in
*"tensor layers.2.weight F32 [250000] 1000000 bytes at offset $offset, first bytes $want"*) ;;
*) fail "tensor view: $out (want offset $offset, bytes $want)" ;;
esac
"$BIN/mbworker" --socket "$SOCK" --model m --tensor nope --passes 1 \
	>/dev/null 2>"$T/nope.err" && fail "a missing tensor was found"
grep -q "no tensor nope" "$T/nope.err" || fail "missing tensor message"

start_worker m --ack-in-handler
in_handler=$WORKER_PID
in_handler_log=$WORKER_LOG
start_worker m --ack-delay 300
slow=$WORKER_PID
wait_attached 2
pids=$(mbctl --json list | grep -o '"pids":\[[0-9,]*\]')
case "$pids" in *"$in_handler"*) ;; *) fail "list pids: $pids" ;; esac
case "$pids" in *"$slow"*) ;; *) fail "list pids: $pids" ;; esac

mirror="/dev/shm/mbroker.$INSTANCE.registry"
[ "$(head -c 8 "$mirror")" = MBREG002 ] || fail "mirror magic"
tail -c +65 "$mirror" | tr -d '\0' | grep -q '"name":"m","format":"safetensors","state":"READY"' ||
	fail "mirror: $(tail -c +65 "$mirror" | tr -d '\0' | head -c 300)"

# The handler is armed once the worker says it attached; from then on only
# the signal (not the shutdown event) makes that worker ack, in the handler.
wait_until 20 grep -q "checksum ok" "$in_handler_log" ||
	fail "worker 1: $(cat "$in_handler_log")"
t0=$(now_ms)
mbctl shutdown >/dev/null || fail "shutdown failed"
elapsed=$(elapsed_since "$t0")
wait_broker_exit 10
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS"
assert_between "$elapsed" 290 3000 "shutdown with a 300 ms ack delay"
worker_exited_with "$in_handler" 0
worker_exited_with "$slow" 0
grep -q "acknowledged in the signal handler" "$in_handler_log" ||
	fail "worker 1: $(cat "$in_handler_log")"
assert_no_shm
