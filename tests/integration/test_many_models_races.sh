# SPDX-License-Identifier: MIT
# Many models, ordering under concurrency (issue 11), on five brokers:
#
# 1. Two loads competing for one room.  The room is checked, and idle
#    models evicted, when each load request arrives (load.c load_room,
#    residency.c residency_make_room); a load counts against the budget
#    once its loader thread claims its segment (segment.c segment_create,
#    under segment_lock), after reading the file's header, and that claim
#    decides between two loads that both passed the check.  A model
#    loading is never evicted.  So with room for one more model, two
#    loads of different models at once (two `mbctl load --wait` started
#    together, or two clients released together; their safetensors
#    headers take tens of ms to read, so in practice both pass the check
#    and the claim decides): exactly one ends READY, the other gets
#    no_space (at its reply, leaving nothing, or from its load, leaving
#    the model in ERROR).  The racing pair is pinned, so the winner, once
#    READY, is no candidate for the loser.  With the room free, nothing
#    is evicted; with it held by one idle model, exactly that one is
#    evicted, once a race, whichever load wins.
# 2. An eviction racing an attach of its victim (--autoload).  An
#    eviction ends within the request that caused it (unload.c
#    unload_idle: an unload with nobody to wait for, finished at once), so
#    an attach never sees the victim UNLOADING: it finds it gone and
#    loads it again, its room made as for any load.  a attached while b
#    (which evicted it) loads: no_space, nothing else being evictable;
#    once b is READY and idle, a's attaches evict b and get a READY a of
#    a new generation, one load for all.  Sent at the same moment, the
#    outcome depends on who comes first (an attach that comes first gets
#    the a that serves, and holding it leaves b no room), but every
#    attach either attaches a or gets no_space (or unloading), every load
#    of b ends READY or with no_space, exactly one of a and b ends READY,
#    and nothing hangs or crashes.
# 3. Autoload during a shutdown.  The shutdown unloads every model, which
#    cancels a load in progress: the attaches waiting for it get
#    cancelled (or shutting_down) at once; an attach during the shutdown
#    gets shutting_down and loads nothing; the broker exits 0 and
#    /dev/shm is clean.
# 4. --keep-alive 0 racing an attach: one client detaches and attaches
#    again 50 times as fast as it can.  The idle unload runs on the
#    broker's loop after the detach (residency_schedule) and, like an
#    eviction, ends at once, so the next attach finds the model READY or
#    gone and, with --autoload, loads it again: every attach succeeds (an
#    `unloading` would be retried, and is allowed) with the file's bytes,
#    and every generation it loaded is unloaded idle again.
# 5. Two loads at once with room for one free and an idle model that
#    could make room for the other: docs/protocol.md has no_space only
#    "even after evicting what may be evicted", so both end READY, the
#    idle model evicted once.  FAILS today: the second load passes its
#    check before the first claims its segment (load.c load_room counts
#    claimed segments only), then loses the claim and fails with no_space
#    (segment.c segment_create; nothing evicts then), the idle model
#    still READY.
. "$(dirname "$0")/lib.sh"

D="$T/models"
mkdir -p "$D"
seed=0
for name in p h a b; do
	seed=$((seed + 1))
	make_model --raw --seed "$seed" "$D/$name.bin" 1048576
done
# 20,000 tensors: a header of 1.7 MB, which the loader reads (tens of ms)
# before it claims the segment.
for name in v x y; do
	seed=$((seed + 1))
	make_model --tensors 20000 --seed "$seed" "$D/$name.safetensors" 1048576
done
S=$(stat -c %s "$D/x.safetensors")
make_model --raw "$D/slow.bin" 4000000
make_model --raw "$D/late.bin" 100000
make_model --raw "$D/k.bin" 100000
ATTACHER=(/usr/bin/python3 "$(dirname "$0")/../tools/attacher.py" "$SOCK")
PYTHONPATH=$(cd "$(dirname "$0")/../../bindings/python" && pwd)
export PYTHONPATH
# Each request bounded: a reply never sent fails the test, never hangs it.
MBCTL=(timeout 20 "$BIN/mbctl" --socket "$SOCK")

# at_once.py SOCKET OP:NAME...: one client per request (OP load, with
# wait, or attach), all connected first, then released together; prints
# "OP NAME ok generation G" or "OP NAME error CODE: MESSAGE" for each, in
# the order given.  Attachments are held until every request has its
# reply.
cat >"$T/at_once.py" <<'PY'
import sys
import threading
import mbroker

sock, specs = sys.argv[1], [s.split(":") for s in sys.argv[2:]]
clients = [mbroker.connect(sock, timeout=10) for _ in specs]
released = threading.Barrier(len(specs))
said = [""] * len(specs)


def run(i, op, name):
    client = clients[i]
    client.timeout = 15
    released.wait()
    try:
        if op == "load":
            gen = client.request("load", name=name, wait=True)["generation"]
        else:
            gen = client.attach(name).generation
        said[i] = "%s %s ok generation %d" % (op, name, gen)
    except mbroker.BrokerError as e:
        said[i] = "%s %s error %s: %s" % (op, name, e.code, e)
    except Exception as e:  # a timeout, a lost broker
        said[i] = "%s %s error %s: %s" % (op, name, type(e).__name__, e)


threads = [threading.Thread(target=run, args=(i, op, name))
           for i, (op, name) in enumerate(specs)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("\n".join(said))
PY
at_once() { # OP:NAME...: their lines in $T/race
	timeout 30 /usr/bin/python3 "$T/at_once.py" "$SOCK" "$@" >"$T/race" 2>&1 ||
		fail "at_once $*: $(cat "$T/race")"
}

stat_of() { # NAME: the counter NAME of stats
	mbctl --json stats | json_int "$1"
}
# ready_models: the names of the READY models, sorted, on one line.
ready_models() {
	mbctl --json list | /usr/bin/python3 -c '
import json, sys
print(" ".join(sorted(m["name"] for m in json.load(sys.stdin)["models"]
                      if m["state"] == "READY")))'
}
expect_ready() {
	[ "$(ready_models)" = "$1" ] || fail "READY: '$(ready_models)', not '$1'"
}
sorted() { # WORDS...: on one line, sorted
	printf '%s\n' "$@" | sort | xargs
}
gone() {
	[ -z "$(model_state "$1")" ]
}
# forget NAME: unloads NAME (READY or ERROR) if it is there at all.
forget() {
	gone "$1" || "${MBCTL[@]}" unload "$1" >/dev/null 2>&1 ||
		fail "unload $1 failed"
	gone "$1" || fail "$1 is still $(model_state "$1")"
}
alive() {
	mbctl ping >/dev/null 2>&1 || fail "the broker no longer answers ($1)"
}
load_ok() {
	"${MBCTL[@]}" load "$1" --wait >"$T/out" 2>&1 || fail "load $1: $(cat "$T/out")"
}
# mbctl_load NAME: mbctl load NAME --wait in the background, its output in
# $T/lNAME; sets LOAD_PID.
mbctl_load() {
	"${MBCTL[@]}" load "$1" --wait >"$T/l$1" 2>&1 &
	LOAD_PID=$!
	CHILDREN+=("$LOAD_PID")
}
# load_said NAME PID: waits for mbctl_load's PID and appends its outcome
# to $T/race as at_once says it ("load NAME ok" or "load NAME error
# no_space: ..."; anything else fails).
load_said() {
	local status=0
	wait "$2" || status=$?
	if [ "$status" -eq 0 ]; then
		echo "load $1 ok" >>"$T/race"
	elif [ "$status" -eq 1 ] && grep -q "(not enough shared memory)" "$T/l$1"; then
		echo "load $1 error no_space: $(cat "$T/l$1")" >>"$T/race"
	else
		fail "load $1 exited $status: $(cat "$T/l$1")"
	fi
}

# --- 1. Two loads for one room ---------------------------------------
# p pinned and h held; the budget has room for one of x and y besides
# (or for v alone).
start_broker --model-dir "$D" --max-shm-bytes $((2 * 1048576 + S + S / 2)) \
	--pin p --pin x --pin y
load_ok p
load_ok h
start_worker h
wait_attached 1

# race_loads mbctl|clients: loads x and y at once; exactly one ends
# READY, the other gets no_space.  Sets WINNER and LOSER.
race_loads() {
	local px
	if [ "$1" = mbctl ]; then
		: >"$T/race"
		mbctl_load x
		px=$LOAD_PID
		mbctl_load y
		load_said x "$px"
		load_said y "$LOAD_PID"
	else
		at_once load:x load:y
	fi
	if grep -q "^load x ok" "$T/race" &&
		grep -q "^load y error no_space: " "$T/race"; then
		WINNER=x LOSER=y
	elif grep -q "^load y ok" "$T/race" &&
		grep -q "^load x error no_space: " "$T/race"; then
		WINNER=y LOSER=x
	else
		fail "not one READY and one no_space: $(cat "$T/race")"
	fi
	state_is "$WINNER" READY || fail "winner $WINNER is $(model_state "$WINNER")"
	# The loser left nothing (refused at its reply) or an ERROR.
	gone "$LOSER" || state_is "$LOSER" ERROR ||
		fail "loser $LOSER is $(model_state "$LOSER")"
}

# Room for one, free: no eviction, whichever wins.
for how in mbctl clients mbctl clients; do
	race_loads "$how"
	expect_ready "$(sorted h p "$WINNER")"
	[ "$(stat_of evictions)" = 0 ] ||
		fail "an eviction with room free: $(grep evicted "$BROKER_LOG")"
	forget x
	forget y
done
# Room for one, held by the idle v: v is evicted, once, for the winner.
races=0
for how in mbctl clients mbctl clients; do
	races=$((races + 1))
	load_ok v
	expect_ready "h p v"
	race_loads "$how"
	expect_ready "$(sorted h p "$WINNER")"
	[ "$(stat_of evictions)" = "$races" ] ||
		fail "race $races: evictions $(stat_of evictions), not $races"
	[ "$(grep -c "evicted to make room for" "$BROKER_LOG")" = "$races" ] ||
		fail "evicted lines: $(grep "evicted" "$BROKER_LOG")"
	[ "$(grep -c "model v: evicted to make room for" "$BROKER_LOG")" = "$races" ] ||
		fail "not v evicted: $(grep "evicted" "$BROKER_LOG")"
	forget x
	forget y
done
[ "$(stat_of bytes_reserved)" = $((2 * 1048576)) ] ||
	fail "bytes held after the races: $(mbctl --json stats)"
alive "after the load races"
shutdown_clean

# --- 2. An eviction racing an attach of its victim -------------------
# p pinned and h held take two of three and a half models' room: a and b
# do not fit together.  Loads copy at 2 MB/s (half a second).
: >"$BROKER_LOG"
start_broker --model-dir "$D" --autoload --max-shm-bytes 3584K \
	--load-rate 2M --pin p
load_ok p
start_worker h
wait_attached 1

# attach_a [COUNT]: COUNT attaches of a at once (attacher.py); each
# attaches a or gets no_space (or unloading); their lines in $T/att.
attach_a() {
	timeout 20 "${ATTACHER[@]}" a --count "${1:-1}" >"$T/att" 2>&1 || true
	[ -s "$T/att" ] || fail "the attaches of a said nothing"
	local ok="attached a generation [0-9]+ pid [0-9]+"

	if grep -v -E "^($ok|error (no_space|unloading): .*)$" "$T/att"; then
		fail "attach of a: $(cat "$T/att")"
	fi
}
generation_of() { # NAME: the generation the list shows for NAME
	mbctl --json list | /usr/bin/python3 -c '
import json, sys
print([m["generation"] for m in json.load(sys.stdin)["models"]
       if m["name"] == sys.argv[1]][0])' "$1"
}
# a_generation FILE: the one generation the attaches in FILE got.
a_generation() {
	local gens
	gens=$(grep -E "^(attached a|attach a ok) " "$1" |
		grep -o "generation [0-9]*" | sort -u)
	[ "$(echo "$gens" | wc -l)" -eq 1 ] || fail "generations: $(cat "$1")"
	echo "${gens#generation }"
}
segment_claimed() { # NAME: NAME's segment exists (its bytes count)
	instance_shm | grep -q "\.model\.$1\."
}

attach_a
grep -q "^attached a " "$T/att" || fail "a did not autoload: $(cat "$T/att")"
gen_a=$(a_generation "$T/att")
expect_ready "a h p"
# b's load evicts the idle a; while b loads (its segment claimed), an
# attach of a finds it gone, and its load no room: no_space.
mbctl_load b
wait_until 10 segment_claimed b || fail "b's segment never appeared"
gone a || fail "a is $(model_state a) while b loads"
assert_log "model a: evicted to make room for b"
if state_is b LOADING; then
	attach_a
	grep -q "^error no_space: " "$T/att" ||
		fail "attach of a while b loads: $(cat "$T/att")"
fi
wait "$LOAD_PID" || fail "load b: $(cat "$T/lb")"
expect_ready "b h p"
[ "$(stat_of evictions)" = 1 ] || fail "evictions: $(mbctl --json stats)"
# Once b is READY and idle: the attaches evict it, a loads again, of a
# new generation, the same for every attach.
attach_a 3
[ "$(grep -c "^attached a " "$T/att")" -eq 3 ] || fail "attach of a: $(cat "$T/att")"
gen=$(a_generation "$T/att")
[ "$gen" -gt "$gen_a" ] || fail "a's generation $gen is not newer than $gen_a"
assert_log "model b: evicted to make room for a"
[ "$(stat_of evictions)" = 2 ] || fail "evictions: $(mbctl --json stats)"
expect_ready "a h p"

# At the same moment (mbctl and attacher.py started together, or
# at_once): whoever comes first, the outcomes above, at most the two
# evictions that room for each needs.
round=0
for how in mbctl clients mbctl clients mbctl clients; do
	round=$((round + 1))
	evictions=$(stat_of evictions)
	gen_a=$(generation_of a)
	if [ "$how" = mbctl ]; then
		mbctl_load b
		attach_a 3
		sed 's/^attached a /attach a ok /; s/^error /attach a error /' \
			"$T/att" >"$T/race"
		load_said b "$LOAD_PID"
	else
		at_once load:b attach:a attach:a attach:a
	fi
	said="load b (ok|error no_space: )|attach a (ok generation [0-9]+|error (no_space|unloading): )"
	if grep -v -E "^($said).*$" "$T/race"; then
		fail "round $round: $(cat "$T/race")"
	fi
	alive "round $round"
	ready=$(ready_models)
	[ "$ready" = "a h p" ] || [ "$ready" = "b h p" ] ||
		fail "round $round: READY '$ready': $(cat "$T/race")"
	[ "$(($(stat_of evictions) - evictions))" -le 2 ] ||
		fail "round $round: $(grep evicted "$BROKER_LOG")"
	# The attaches that went through got the a that served or a new one.
	if grep -q "^attach a ok" "$T/race"; then
		[ "$(a_generation "$T/race")" -ge "$gen_a" ] ||
			fail "round $round: an older a: $(cat "$T/race")"
	fi
	forget b
	if ! state_is a READY; then
		forget a
		attach_a
		grep -q "^attached a " "$T/att" || fail "a: $(cat "$T/att")"
	fi
done
alive "after the attach races"
shutdown_clean

# --- 3. Autoload during the shutdown ---------------------------------
# slow takes about four seconds to copy; a worker that never acks keeps
# the shutdown going (until it is killed).
: >"$BROKER_LOG"
start_broker --model-dir "$D" --autoload --load-rate 1M
start_worker late --no-ack
wait_attached 1
timeout 20 "${ATTACHER[@]}" slow --count 2 >"$T/waiting" 2>&1 &
waiting=$!
CHILDREN+=("$waiting")
wait_until 10 state_is slow LOADING || fail "slow is $(model_state slow)"
mbctl shutdown --timeout 20 >"$T/shutdown" 2>&1 &
shutdown=$!
CHILDREN+=("$shutdown")
# The waiting attaches get their error at once, not at the shutdown's end.
wait_until 5 sh -c "! kill -0 $waiting" ||
	fail "the waiting attaches got no reply: $(cat "$T/waiting")"
[ "$(grep -c -E "^error (cancelled|shutting_down): " "$T/waiting")" -eq 2 ] ||
	fail "the waiting attaches: $(cat "$T/waiting")"
"$BIN/mbctl" --socket "$SOCK" --json stats | grep -q '"shutting_down":true' ||
	fail "the shutdown ended already: $(cat "$T/shutdown")"
# A new attach, of the model that was loading and of one never loaded.
for name in slow k; do
	timeout 20 "${ATTACHER[@]}" "$name" >"$T/att" 2>&1 &&
		fail "$name attached during the shutdown"
	grep -q "^error shutting_down: " "$T/att" ||
		fail "attach of $name during the shutdown: $(cat "$T/att")"
done
grep -q "model k: loading" "$BROKER_LOG" && fail "k loaded during the shutdown"
assert_log "model slow: load ended by an unload"
kill "$WORKER_PID"
wait_broker_exit 20
[ "$BROKER_STATUS" -eq 0 ] || fail "broker exited $BROKER_STATUS, not 0"
status=0
wait "$shutdown" || status=$?
[ "$status" -eq 0 ] || fail "mbctl shutdown exited $status: $(cat "$T/shutdown")"
assert_no_shm

# --- 4. --keep-alive 0 racing an attach ------------------------------
# One client: attach k (checking its bytes), detach, 50 times; an
# `unloading` is retried.
: >"$BROKER_LOG"
start_broker --model-dir "$D" --autoload --keep-alive 0
timeout 30 /usr/bin/python3 - "$SOCK" "$D/k.bin" >"$T/loop" 2>&1 <<'PY' ||
import sys
import mbroker
sock, path = sys.argv[1:]
want = open(path, "rb").read()
client = mbroker.connect(sock, timeout=10)
client.timeout = 10
retries = 0
for i in range(50):
    while True:
        try:
            att = client.attach("k")
            break
        except mbroker.BrokerError as e:
            if e.code != "unloading" or retries >= 100:
                print("error %s: %s" % (e.code, e))
                sys.exit(1)
            retries += 1
    if att.data.tobytes() != want:
        print("attach %d: not the file's bytes" % i)
        sys.exit(1)
    print("attached k generation %d" % att.generation)
    att.detach()
print("retries %d" % retries)
PY
	fail "the attach loop: $(cat "$T/loop")"
[ "$(grep -c "^attached k generation " "$T/loop")" -eq 50 ] ||
	fail "not 50 attaches: $(cat "$T/loop")"
awk '/^attached/ { if ($4 < last) exit 1; last = $4 }' "$T/loop" ||
	fail "generations went back: $(cat "$T/loop")"
gens=$(awk '/^attached/ { print $4 }' "$T/loop" | sort -u | wc -l)
[ "$(stat_of attaches)" = 50 ] && [ "$(stat_of detaches)" = 50 ] ||
	fail "stats: $(mbctl --json stats)"
[ "$(stat_of autoloads)" = "$gens" ] ||
	fail "$gens generations, autoloads $(stat_of autoloads)"
# The last one goes too: every generation loaded was unloaded idle.
wait_until 10 gone k || fail "k is still $(model_state k)"
[ "$(stat_of idle_unloads)" = "$gens" ] ||
	fail "$gens generations, idle_unloads $(stat_of idle_unloads)"
[ "$(stat_of bytes_reserved)" = 0 ] || fail "bytes held: $(mbctl --json stats)"
shutdown_clean

# --- 5. Room for one free, and an idle model for the other -----------
# v idle, room for one of x and y besides: both fit once v is evicted.
: >"$BROKER_LOG"
start_broker --model-dir "$D" --max-shm-bytes $((2 * S + S / 2)) \
	--pin x --pin y
load_ok v
at_once load:x load:y
grep -q "^load x ok" "$T/race" && grep -q "^load y ok" "$T/race" ||
	fail "room for both once the idle v goes: $(cat "$T/race");" \
		"READY: $(ready_models); evictions $(stat_of evictions)"
expect_ready "x y"
[ "$(stat_of evictions)" = 1 ] || fail "evictions: $(mbctl --json stats)"
assert_log "model v: evicted to make room for"
shutdown_clean
