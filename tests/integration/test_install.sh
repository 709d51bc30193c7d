# SPDX-License-Identifier: MIT
# make install into a DESTDIR: the binaries, the versioned shared library
# with its SONAME, the static library, the header, mbroker.pc, the man
# pages and the contrib files.  A small worker builds against the
# installed header and library through pkg-config and attaches a model of
# a real broker; the library exports exactly the functions the header
# declares; make uninstall takes every file back.
. "$(dirname "$0")/lib.sh"

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST="$T/root"
make -s -C "$ROOT" BUILD="$BUILD" install DESTDIR="$DEST" PREFIX=/usr \
	>"$T/install.log" 2>&1 || fail "make install: $(cat "$T/install.log")"
for f in sbin/mbrokerd bin/mbctl bin/mbworker lib/libmbroker.a \
	lib/libmbroker.so.0.1.0 lib/libmbroker.so.0 lib/libmbroker.so \
	include/mbroker.h lib/pkgconfig/mbroker.pc share/man/man8/mbrokerd.8 \
	share/man/man1/mbctl.1 share/man/man3/libmbroker.3 \
	share/doc/mbroker/contrib/systemd/mbrokerd.service; do
	[ -e "$DEST/usr/$f" ] || fail "not installed: $f"
done
readelf -d "$DEST/usr/lib/libmbroker.so.0.1.0" | grep -q "SONAME.*\[libmbroker.so.0\]" ||
	fail "no SONAME libmbroker.so.0"

# Exactly the header's functions are exported.
grep -o "mb_[a-z_]*(" "$ROOT/include/mbroker.h" | tr -d '(' | sort -u >"$T/declared"
nm -D --defined-only "$DEST/usr/lib/libmbroker.so" | awk '{print $3}' |
	sort -u >"$T/exported"
diff "$T/declared" "$T/exported" >"$T/symbols.diff" ||
	fail "exported symbols differ from the header: $(cat "$T/symbols.diff")"

cat >"$T/worker.c" <<'C'
#include <stdio.h>
#include <mbroker.h>

int
main(int argc, char **argv)
{
	struct mb_attachment *att;
	struct mb_client *c;
	int r;

	if (argc != 3)
		return 2;
	if ((r = mb_connect(argv[1], &c)) < 0 ||
	    (r = mb_attach(c, argv[2], &att)) < 0) {
		fprintf(stderr, "%s\n", mb_strerror(r));
		return 1;
	}
	r = mb_checksum(mb_attachment_data(att), mb_attachment_size(att)) ==
	    mb_attachment_checksum(att);
	printf("%s %zu bytes, checksum %s\n", mb_attachment_name(att),
	       mb_attachment_size(att), r ? "ok" : "BAD");
	mb_close(c);
	return r ? 0 : 1;
}
C
flags=$(PKG_CONFIG_SYSROOT_DIR="$DEST" PKG_CONFIG_PATH="$DEST/usr/lib/pkgconfig" \
	pkg-config --cflags --libs mbroker) || fail "pkg-config cannot find mbroker"
case "$flags" in *"-I$DEST/usr/include"*"-lmbroker"*) ;; *) fail "flags: $flags" ;; esac
# A sanitized build's library needs the worker built the same way.
cc -Wall -Werror ${MB_SANITIZE:+-fsanitize=$MB_SANITIZE} -o "$T/worker" \
	"$T/worker.c" $flags || fail "cannot build a worker"
make_model "$T/m.safetensors" 1000000
start_broker
load m "$T/m.safetensors"
out=$(LD_LIBRARY_PATH="$DEST/usr/lib" "$T/worker" "$SOCK" m) ||
	fail "installed worker: $out"
[ "$out" = "m 1001352 bytes, checksum ok" ] || fail "worker said: $out"
LD_LIBRARY_PATH="$DEST/usr/lib" ldd "$T/worker" | grep -q "$DEST/usr/lib/libmbroker.so.0" ||
	fail "the worker did not link the installed library"
shutdown_clean

make -s -C "$ROOT" BUILD="$BUILD" uninstall DESTDIR="$DEST" PREFIX=/usr \
	>>"$T/install.log" 2>&1 || fail "make uninstall"
left=$(find "$DEST" -type f -o -type l)
[ -z "$left" ] || fail "make uninstall left: $left"
