# SPDX-License-Identifier: MIT
# pocketsphinx through the broker, honestly: 4 C workers decode LibriVox
# clips and an espeak-ng sentence with the en-us model attached as a
# bundle, and their transcripts are exactly those of a decoder opened
# from disk.  Their memory table shows what is shared: the members
# pocketsphinx maps in place (mdef, sendump) are mappings of the broker's
# segments in every worker, one copy across the four by Pss (as the
# broker's memory request says too).  An unload, then a shutdown, while
# they decode ends each worker with exit 0 and leaves /dev/shm clean.
. "$(dirname "$0")/lib.sh"

POOL="$BIN/examples/pocketsphinx_pool"
MODEL=/usr/share/pocketsphinx/model/en-us
LIBRIVOX=/usr/share/pocketsphinx/test/data/librivox
[ -x "$POOL" ] || fail "no $POOL (the default build makes it)"
if [ ! -d "$MODEL/en-us" ] || [ ! -f "$LIBRIVOX/transcription" ] ||
	! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then
	skip "pocketsphinx-en-us, pocketsphinx-testdata, espeak-ng or sox missing (scripts/install-deps.sh installs them)"
fi

SENTENCE="hello world this is a test"
espeak-ng -v en-us -s 120 -w "$T/say.wav" "$SENTENCE" ||
	fail "espeak-ng cannot speak"
sox "$T/say.wav" -r 16000 -c 1 -b 16 -e signed "$T/say.raw" ||
	fail "sox cannot convert"
CLIPS=("$LIBRIVOX/sense_and_sensibility_01_austen_64kb-0880.wav"
	"$LIBRIVOX/sense_and_sensibility_01_austen_64kb-0930.wav"
	"$T/say.raw")

# transcripts FILE: "clip: text" per clip, once when every worker heard
# the same (a clip decoded two ways shows up twice).
transcripts() {
	sed -n 's/^worker [0-9]* clip //p' "$1" | sort -u
}

# The reference: one decoder opened from disk (pocketsphinx is
# deterministic; the broker's four must agree among themselves too).
"$POOL" --mode disk --workers 1 "${CLIPS[@]}" >"$T/disk.out" 2>"$T/disk.err" ||
	fail "disk mode: $(cat "$T/disk.err")"

# Room for a clip in hand on a busy machine.
start_broker --shutdown-timeout 30
mbctl load en-us "$MODEL" --wait >/dev/null || fail "load of the bundle failed"
# Member directories go under $T: a worker killed by the trap leaves none.
export TMPDIR="$T"
"$POOL" --mode broker --socket "$SOCK" --workers 4 "${CLIPS[@]}" \
	>"$T/broker.out" 2>"$T/broker.err" ||
	fail "broker mode: $(cat "$T/broker.err")"
cat "$T/broker.out"

# Transcripts: 3 clips by 1 worker from disk, by 4 through the broker,
# one text per clip, not empty, and the broker's the same as the disk's.
for mode in disk broker; do
	want=$((${#CLIPS[@]} * $([ $mode = disk ] && echo 1 || echo 4)))
	[ "$(grep -c '^worker [0-9]* clip ' "$T/$mode.out")" -eq "$want" ] ||
		fail "$mode: not $want transcripts: $(cat "$T/$mode.out")"
	[ "$(transcripts "$T/$mode.out" | wc -l)" -eq ${#CLIPS[@]} ] ||
		fail "$mode: workers disagree: $(transcripts "$T/$mode.out")"
	if transcripts "$T/$mode.out" | grep -q ': *$'; then
		fail "$mode: an empty transcript: $(transcripts "$T/$mode.out")"
	fi
done
[ "$(transcripts "$T/broker.out")" = "$(transcripts "$T/disk.out")" ] ||
	fail "broker and disk transcripts differ:
$(diff <(transcripts "$T/disk.out") <(transcripts "$T/broker.out"))"

# What was said, next to what was heard (pocketsphinx is no oracle:
# only the equality above is asserted).
for clip in 0880 0930; do
	echo "reference $clip: $(grep "$clip)" "$LIBRIVOX/transcription" |
		sed 's/<s> //; s/ <\/s>.*//')"
done
echo "reference say: $SENTENCE"

# The shared part of the memory table: in every worker mdef and sendump
# are mapped in place from the broker's segments (not read into the
# heap), and by Pss the four hold about one copy of them between them.
in_place=$(($(stat -c %s "$MODEL/en-us/mdef") + $(stat -c %s "$MODEL/en-us/sendump")))
lines=$(grep -c '^worker [0-9] mapped in place (.*): en-us/mdef en-us/sendump$' \
	"$T/broker.out" || true)
[ "$lines" -eq 4 ] || fail "mdef and sendump are not mapped in place in 4 workers"
pss_sum=0
for pss in $(sed -n 's/^worker [0-9] mapped in place (rss=[0-9]* pss=\([0-9]*\)).*/\1/p' \
	"$T/broker.out"); do
	pss_sum=$((pss_sum + pss))
done
assert_between "$pss_sum" $((in_place * 9 / 10)) $((in_place * 11 / 10)) \
	"Pss of the members mapped in place, summed over 4 workers (one copy: $in_place)"
grep -q "^memory sum: .* workers=4$" "$T/broker.out" ||
	fail "no memory table for 4 workers"

# An unload while they decode: each finishes its clip, frees its
# decoder, acknowledges and exits 0; the bundle's segments are gone.
start_pool() {
	setsid "$POOL" --mode broker --socket "$SOCK" --workers 4 --rounds 0 \
		"$T/say.raw" >"$T/$1.out" 2>&1 &
	POOL_PID=$!
	EXTRA_CLEANUP="kill -9 -- -$POOL_PID 2>/dev/null"
}
all_decoding() {
	[ "$(sed -n 's/^worker \([0-9]*\) clip .*/\1/p' "$1" | sort -u | wc -l)" -eq 4 ]
}
pool_stopped_by() {
	wait_until 30 sh -c "! kill -0 $POOL_PID" ||
		fail "the pool still runs after $1: $(tail -n 5 "$T/$2.out")"
	status=0
	wait "$POOL_PID" || status=$?
	EXTRA_CLEANUP=
	[ "$status" -eq 0 ] || fail "the pool exited $status after $1: $(cat "$T/$2.out")"
	[ "$(grep -c "^worker [0-9]: stopped by $1 after [1-9][0-9]* clip(s), decoder freed, acknowledged$" \
		"$T/$2.out")" -eq 4 ] || fail "not 4 workers stopped by $1: $(cat "$T/$2.out")"
}
start_pool unload
wait_until 40 all_decoding "$T/unload.out" ||
	fail "the workers do not decode: $(tail -n 5 "$T/unload.out")"
mbctl unload en-us --timeout 30 >/dev/null || fail "unload failed"
pool_stopped_by "an unload" unload
wait_until 10 sh -c "! ls /dev/shm | grep -q '^mbroker\.$INSTANCE\.model\.'" ||
	fail "segments left after the unload: $(instance_shm)"

# A shutdown while they decode: the same, and the broker exits 0.
mbctl load en-us "$MODEL" --wait >/dev/null || fail "reload of the bundle failed"
start_pool shutdown
wait_until 40 all_decoding "$T/shutdown.out" ||
	fail "the workers do not decode: $(tail -n 5 "$T/shutdown.out")"
# The broker's own account (the memory request) agrees: 4 holders with
# one copy of the members mapped in place between them.
mbctl --json memory >"$T/memory.json" || fail "memory failed"
[ "$(grep -o '"pid":' "$T/memory.json" | wc -l)" -eq 4 ] ||
	fail "not 4 holders: $(cat "$T/memory.json")"
assert_between "$(json_int holders_pss_kb <"$T/memory.json")" \
	$((in_place * 9 / 10240)) $((in_place * 11 / 10240)) \
	"the broker's holders_pss_kb of en-us (one copy: $((in_place / 1024)) kB)"
shutdown_clean
pool_stopped_by "a shutdown" shutdown
