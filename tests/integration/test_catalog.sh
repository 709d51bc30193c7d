# SPDX-License-Identifier: MIT
# The catalog of --model-dir: `mbctl catalog` lists DIR/NAME.safetensors,
# DIR/NAME.bin and the subdirectories DIR/NAME/ (bundles, their size the
# total of their files), sorted by name, with format, size, path and
# whether each is loaded (the first dir that has a name wins, .safetensors
# before .bin); other files, empty directories, invalid names and files
# outside every --model-dir are not in it, and no name reaches them (a
# slash, "..", a symlink that climbs out); `load NAME` without a path
# loads the catalog's file, or directory as a bundle.
. "$(dirname "$0")/lib.sh"

D1="$T/models"
D2="$T/more"
mkdir -p "$D1/sub" "$D2"
make_model "$D1/alpha.safetensors" 100000
make_model --raw "$D1/beta.bin" 200000
make_model "$D1/both.safetensors" 120000
make_model --raw "$D1/both.bin" 130000
make_model --raw "$D1/sub/deep.bin" 50000
make_model --raw "$D1/bad name.bin" 50000
make_model --raw "$D1/notes.txt" 50000
mkdir "$D1/dir.bin"
make_model --raw "$T/secret.bin" 60000
ln -s ../secret.bin "$D1/climb.bin"
make_model "$D2/beta.safetensors" 70000
make_model --raw "$D2/zeta.bin" 80000
size_of() { stat -c %s "$1"; }
start_broker --model-dir "$D1" --model-dir "$D2"

# The table: one row per model, LOADED no.
mbctl catalog >"$T/catalog" || fail "catalog failed"
head -n1 "$T/catalog" | grep -q "^NAME  *FORMAT  *SIZE  *LOADED  *PATH$" ||
	fail "catalog header: $(cat "$T/catalog")"
row() { # NAME FORMAT SIZE PATH LOADED
	grep -q "^$1  *$2  *$3 B  *$5  *$4\$" "$T/catalog" ||
		fail "catalog lacks $1 ($2, $3 B, $5, $4): $(cat "$T/catalog")"
}
row alpha safetensors "$(size_of "$D1/alpha.safetensors")" "$D1/alpha.safetensors" no
row beta raw 200000 "$D1/beta.bin" no
row both safetensors "$(size_of "$D1/both.safetensors")" "$D1/both.safetensors" no
row zeta raw 80000 "$D2/zeta.bin" no
row sub bundle 50000 "$D1/sub" no
names=$(awk 'NR > 1 { print $1 }' "$T/catalog" | tr '\n' ' ')
case "$names" in
"alpha beta both sub "*) ;;
*) fail "catalog not sorted or holds strangers: $names" ;;
esac
for stranger in deep notes bad dir dir.bin secret; do
	grep -q "^$stranger " "$T/catalog" && fail "$stranger is in the catalog"
done
# A symlink that climbs out is never reachable: not listed, or not loadable.
if grep -q "^climb " "$T/catalog"; then
	echo "note: climb.bin (a symlink out of $D1) is listed" >&2
fi

# --json passes the reply through: the catalog objects, sorted, and total.
mbctl --json catalog >"$T/catalog.json" || fail "catalog --json failed"
/usr/bin/python3 - "$T/catalog.json" "$D1" "$D2" <<'PY' || fail "catalog --json: $(cat "$T/catalog.json")"
import json, sys
reply = json.load(open(sys.argv[1]))
d1, d2 = sys.argv[2], sys.argv[3]
got = {m["name"]: m for m in reply["models"]}
names = [m["name"] for m in reply["models"]]
assert names == sorted(names), names
assert reply["total"] == len(names), reply
assert got["beta"] == {"name": "beta", "path": d1 + "/beta.bin",
                       "format": "raw", "size": 200000,
                       "loaded": False}, got["beta"]
assert got["zeta"]["path"] == d2 + "/zeta.bin", got["zeta"]
assert got["both"]["format"] == "safetensors", got["both"]
assert got["sub"] == {"name": "sub", "path": d1 + "/sub",
                      "format": "bundle", "size": 50000,
                      "loaded": False}, got["sub"]
assert not {"deep", "notes", "bad name", "dir", "dir.bin",
            "secret"} & set(got)
PY

# load NAME without a path: the catalog's file, in its format.
mbctl load beta --wait >"$T/out" || fail "load beta: $(cat "$T/out")"
grep -q "^beta READY: generation [0-9]*, 200000 B" "$T/out" ||
	fail "load said $(cat "$T/out")"
listed() { # NAME MEMBER VALUE: the list's model NAME has MEMBER == VALUE
	mbctl --json list | /usr/bin/python3 -c '
import json, sys
name, member, value = sys.argv[1:]
mods = [m for m in json.load(sys.stdin)["models"] if m["name"] == name]
sys.exit(0 if mods and str(mods[0].get(member)) == value else 1)' "$@"
}
listed beta path "$D1/beta.bin" && listed beta format raw ||
	fail "beta not loaded from $D1/beta.bin: $(mbctl --json list)"
"$BIN/mbworker" --socket "$SOCK" --model beta --passes 1 --interval 0 \
	>"$T/worker.log" 2>&1 || fail "worker on beta: $(cat "$T/worker.log")"
mbctl load both --wait >/dev/null || fail "load both failed"
listed both path "$D1/both.safetensors" && listed both format safetensors ||
	fail "both not loaded from its .safetensors: $(mbctl --json list)"
mbctl load sub --wait >/dev/null || fail "load sub (a bundle) failed"
listed sub path "$D1/sub" && listed sub format bundle && listed sub members 1 ||
	fail "sub not loaded as a bundle of $D1/sub: $(mbctl --json list)"
mbctl catalog >"$T/catalog" || fail "catalog failed"
row sub bundle 50000 "$D1/sub" yes
row beta raw 200000 "$D1/beta.bin" yes
row both safetensors "$(size_of "$D1/both.safetensors")" "$D1/both.safetensors" yes
row alpha safetensors "$(size_of "$D1/alpha.safetensors")" "$D1/alpha.safetensors" no

# Names that are no catalog model are refused; nothing is loaded.
refused() { # NAME [TEXT]: load NAME fails (saying TEXT); NAME is not READY
	local status=0
	mbctl load "$1" --wait >"$T/out" 2>&1 || status=$?
	[ "$status" -eq 1 ] || fail "load '$1' exited $status: $(cat "$T/out")"
	[ -z "${2:-}" ] || grep -q "$2" "$T/out" ||
		fail "load '$1' said $(cat "$T/out"), not $2"
	if state_is "$1" READY; then fail "'$1' is READY"; fi
}
refused "sub/deep" "(invalid model name)"
refused "../secret" "(invalid model name)"
refused "secret"
refused "notes"
refused "climb"
refused "nothere"
refused x
status=0
mbctl load x "$T/secret.bin" --wait >"$T/out" 2>&1 || status=$?
[ "$status" -eq 1 ] && grep -q "(permission denied)" "$T/out" ||
	fail "a file outside --model-dir: exit $status, $(cat "$T/out")"
if state_is x READY; then fail "$T/secret.bin was loaded"; fi
[ "$(grep -c "model [a-z]*: loading" "$BROKER_LOG")" -eq 3 ] ||
	fail "loads besides beta, both and sub: $(grep "loading" "$BROKER_LOG")"
shutdown_clean
