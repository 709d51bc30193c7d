# SPDX-License-Identifier: MIT
# A safetensors header costs the broker little memory, and none after:
# a header of 262,144 tensors (the limit, 25 MB) raises the broker's
# peak RSS by less than 4 times the header, and after the unload its RSS
# is back within 16 MB of where it was; a header of one tensor more is
# refused as format_error before anything is copied, with a peak of about
# the header.  RSS is read from /proc/PID/status.
. "$(dirname "$0")/lib.sh"

# write_header FILE N: a safetensors file of N zero-size tensors with
# 40-byte names; prints the header's length.
write_header() {
	/usr/bin/python3 - "$1" "$2" <<'PY'
import struct, sys
n = int(sys.argv[2])
body = ",".join('"layer.%034d":{"dtype":"F16","shape":[0,4],"data_offsets":[0,0]}' % i
                for i in range(n))
header = ("{" + body + "}").encode()
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header)
print(len(header))
PY
}
kb() {
	sed -n "s/^$1:[[:space:]]*\([0-9]*\) kB$/\1/p" "/proc/$BROKER_PID/status"
}
# peak_reset: VmHWM starts again from the current RSS.
peak_reset() {
	echo 5 >"/proc/$BROKER_PID/clear_refs" || fail "cannot reset VmHWM"
}

# Under ASan, freed blocks would wait in its quarantine; under valgrind
# RSS measures valgrind.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0"
if [ "${MB_VALGRIND:-}" = 1 ]; then
	echo "SKIP [$TEST_NAME]: RSS is not the broker's under valgrind" >&2
	exit 77
fi
hlen=$(write_header "$T/many.safetensors" 262144)
over=$(write_header "$T/over.safetensors" 262145)
start_broker
rss0=$(kb VmRSS)
peak_reset
hwm0=$(kb VmHWM)

mbctl load many "$T/many.safetensors" --wait >/dev/null || fail "load at the limit failed"
[ "$(mbctl --json list | json_int tensors)" = 262144 ] || fail "tensors: $(mbctl --json list)"
grow=$(($(kb VmHWM) - hwm0))
echo "header $hlen bytes: peak RSS +$grow kB, RSS loaded +$(($(kb VmRSS) - rss0)) kB"
[ $((grow * 1024)) -le $((4 * hlen)) ] ||
	fail "peak RSS grew by $grow kB for a header of $hlen bytes"
mbctl unload many >/dev/null || fail "unload failed"
after=$(($(kb VmRSS) - rss0))
echo "after the unload: RSS +$after kB"
[ "$after" -le 16384 ] || fail "RSS still $after kB above its start after the unload"

peak_reset
hwm1=$(kb VmHWM)
reply=$(mbctl --json load over "$T/over.safetensors" --wait 2>&1) && fail "one tensor over the limit loaded"
case "$reply" in
*'"code":"format_error"'*'more than 262144 tensors'*) ;;
*) fail "over the limit: $reply" ;;
esac
grow=$(($(kb VmHWM) - hwm1))
echo "header $over bytes refused: peak RSS +$grow kB"
[ $((grow * 1024)) -le $((over * 3 / 2)) ] ||
	fail "peak RSS grew by $grow kB refusing a header of $over bytes"
mbctl unload over >/dev/null
shutdown_clean
