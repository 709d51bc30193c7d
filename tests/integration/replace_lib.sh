# SPDX-License-Identifier: MIT
# replace_lib.sh - what the replace tests (test_replace_*.sh) share on top
# of lib.sh: replace requests sent as JSON through the Python client
# (tests/tools/replace_client.py), Python holders driven through a FIFO
# whose log says what they attached, read and heard, and the model
# segments of this instance in /dev/shm.
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
[ -x "$PY" ] || fail "no $PY"
export PYTHONPATH
PYTHONPATH="$(cd "$(dirname "$0")/../../bindings/python" && pwd)"
REPLACE_CLIENT="$(cd "$(dirname "$0")/../tools" && pwd)/replace_client.py"
NHOLDERS=0

# request JSON: sends one request; prints the reply (an error too) as
# JSON; its status is 0 when the broker said ok.
request() {
	"$PY" "$REPLACE_CLIENT" request "$SOCK" "$1"
}

# start_holder MODEL FILE...: starts a Python worker that holds MODEL when
# told; sets HOLDER_PID, HOLDER_LOG and HOLDER_FD (write its commands
# there: tell_holder). FILE...: the files whose bytes it recognises.
start_holder() {
	local model=$1 fifo
	shift
	NHOLDERS=$((NHOLDERS + 1))
	fifo="$T/holder$NHOLDERS.in"
	HOLDER_LOG="$T/holder$NHOLDERS.log"
	mkfifo "$fifo"
	"$PY" "$REPLACE_CLIENT" hold "$SOCK" "$model" "$HOLDER_LOG" "$@" \
		<"$fifo" >>"$T/holder$NHOLDERS.err" 2>&1 &
	HOLDER_PID=$!
	CHILDREN+=("$HOLDER_PID")
	exec {HOLDER_FD}>"$fifo"
	wait_until 10 grep -q '^ready$' "$HOLDER_LOG" ||
		fail "holder $NHOLDERS did not start: $(cat "$T/holder$NHOLDERS.err")"
}

# holder_says LOG PATTERN [COUNT]: LOG has COUNT (default 1) or more lines
# matching the extended regular expression PATTERN.
holder_says() {
	[ "$(grep -cE -- "$2" "$1")" -ge "${3:-1}" ]
}

# expect_holder LOG PATTERN [COUNT]: waits up to 10 s for holder_says.
expect_holder() {
	wait_until 10 holder_says "$@" ||
		fail "$(basename "$1") never said /$2/ (${3:-1}): $(cat "$1")"
}

# hold FD LOG: tells the holder to attach once more and waits for it.
hold() {
	local before
	before=$(grep -cE '^(attached|attach-error) ' "$2" || true)
	echo attach >&"$1"
	expect_holder "$2" '^(attached|attach-error) ' $((before + 1))
}

# model_segments NAME: the names of NAME's segments in /dev/shm, sorted.
model_segments() {
	ls /dev/shm | grep -E "^mbroker\.$INSTANCE\.model\.$1\." | sort || true
}

segments_are() {
	[ "$(model_segments "$1" | tr '\n' ' ')" = "$2" ]
}

# segment_of_generation NAME G: its segment's name in /dev/shm terms.
segment_of_generation() {
	model_segments "$1" | grep -E "\.$1\.$2-" || true
}

# generations NAME: list's "generations" of NAME, one JSON object a line.
generations() {
	mbctl --json list | "$PY" -c '
import json, sys
for m in json.load(sys.stdin)["models"]:
    if m["name"] == sys.argv[1]:
        for g in m["generations"]:
            print(json.dumps(g, sort_keys=True, separators=(",", ":")))' "$1"
}

generation_count_is() {
	[ "$(generations "$1" | wc -l)" -eq "$2" ]
}

# stat_of FIELD: the integer FIELD of stats.
stat_of() {
	mbctl --json stats | json_int "$1"
}

stat_is() {
	[ "$(stat_of "$1")" = "$2" ]
}

# reply_has REPLY PATTERN WHAT: REPLY matches the extended regexp PATTERN.
reply_has() {
	echo "$1" | grep -qE -- "$2" || fail "$3: $1"
}
