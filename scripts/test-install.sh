#!/usr/bin/env bash
# Checks `make install` and `make uninstall` for real: installs into a
# scratch prefix, compiles a C program with `pkg-config --cflags --libs cma`
# against the installed header and library, runs it (it must really be
# using CMA), runs the installed cma-run, then uninstalls and checks that
# nothing is left.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=$(mktemp -d /tmp/cma-install.XXXXXX)
trap 'rm -rf "$prefix"' EXIT

make -s install PREFIX="$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
flags=$(pkg-config --cflags --libs cma)
version=$(pkg-config --modversion cma)

cat > "$prefix/app.c" <<'C'
#include <cma.h>
#include <stdio.h>
#include <string.h>
int main(void) {
    char *s = cma_strdup("installed");
    size_t allocs = 0, frees = 0;
    cma_get_stats(&allocs, &frees);
    if (!s || strcmp(s, "installed") != 0 || allocs < 1 || cma_last_error() != CMA_OK) return 1;
    if (cma_checked_free(s) != CMA_OK || cma_checked_free(s) != CMA_ERROR_DOUBLE_FREE) return 2;
    printf("ok\n");
    return 0;
}
C
# shellcheck disable=SC2086 # pkg-config output is a list of flags
cc -Wall -Werror -o "$prefix/app" "$prefix/app.c" $flags
out=$(LD_LIBRARY_PATH="$prefix/lib" "$prefix/app")
[ "$out" = ok ] || { echo "test-install: the program built with pkg-config failed: $out"; exit 1; }
soname=$(readelf -d "$prefix/lib/libcma.so.$version" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = "libcma.so.${version%%.*}" ] || { echo "test-install: soname is '$soname'"; exit 1; }
LD_LIBRARY_PATH="$prefix/lib" ldd "$prefix/app" | grep -q "libcma.so.${version%%.*} => $prefix/lib/" \
    || { echo "test-install: the program does not load the installed library"; exit 1; }
"$prefix/bin/cma-run" sh -c 'grep -q libcma /proc/$$/maps' \
    || { echo "test-install: the installed cma-run does not preload the installed library"; exit 1; }

make -s uninstall PREFIX="$prefix" >/dev/null
left=$(find "$prefix" -type f -o -type l | grep -v -e "$prefix/app" || true)
[ -z "$left" ] || { echo "test-install: make uninstall left: $left"; exit 1; }
echo "test-install: install, pkg-config build ($version), cma-run and uninstall all work"
