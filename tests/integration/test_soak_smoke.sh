# SPDX-License-Identifier: MIT
# A 10-second smoke of `make soak` (scripts/soak.sh), so that it cannot
# rot: churn, reloads and kills for 5 s, then 50 crashing workers for 5 s;
# the broker's descriptors, names and registry must come back flat.
. "$(dirname "$0")/lib.sh"

SOAK_SECONDS=5 CHURN_SECONDS=5 "$(dirname "$0")/../../scripts/soak.sh" \
	"$BUILD" >"$T/soak.log" 2>&1 || fail "soak smoke: $(cat "$T/soak.log")"
grep -q "soak: passed" "$T/soak.log" || fail "$(cat "$T/soak.log")"
