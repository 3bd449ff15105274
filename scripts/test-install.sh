#!/usr/bin/env bash
# Checks `make install` and `make uninstall` for real: installs into a
# scratch prefix, compiles a C program with `pkg-config --cflags --libs cma`
# against the installed header and library, runs it (it must really be
# using CMA), runs the installed cma-run, then uninstalls and checks that
# nothing is left.
set -euo pipefail
cd "$(dirname "$0")/.."

# Only what this script installs may be loaded or preloaded.
unset LD_PRELOAD CMA_LIB
prefix=$(mktemp -d /tmp/cma-install.XXXXXX)
trap 'rm -rf "$prefix"' EXIT

make -s install PREFIX="$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
flags=$(pkg-config --cflags --libs cma)
version=$(pkg-config --modversion cma)

cat > "$prefix/app.c" <<'C'
#define _GNU_SOURCE
#include <cma.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
int main(void) {
    char *s = cma_strdup("installed");
    size_t allocs = 0, frees = 0;
    cma_get_stats(&allocs, &frees);
    if (!s || strcmp(s, "installed") != 0 || allocs < 1 || cma_last_error() != CMA_OK) return 1;
    if (cma_checked_free(s) != CMA_OK || cma_checked_free(s) != CMA_ERROR_DOUBLE_FREE) return 2;
    /* Where the loader found cma_strdup: the script checks it is the installed file. */
    Dl_info where;
    if (!dladdr((void *)cma_strdup, &where) || !where.dli_fname) return 3;
    printf("ok %s\n", where.dli_fname);
    return 0;
}
C
# shellcheck disable=SC2086 # pkg-config output is a list of flags
cc -Wall -Werror -o "$prefix/app" "$prefix/app.c" $flags
out=$(LD_LIBRARY_PATH="$prefix/lib" "$prefix/app")
[ "${out%% *}" = ok ] || { echo "test-install: the program built with pkg-config failed: $out"; exit 1; }
soname=$(readelf -d "$prefix/lib/libcma.so.$version" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = "libcma.so.${version%%.*}" ] || { echo "test-install: soname is '$soname'"; exit 1; }
# The program names the file its cma_strdup came from (dladdr); both sides
# are resolved, so symlinks in the prefix or in /tmp cannot make them differ.
loaded=$(readlink -f "${out#ok }")
installed=$(readlink -f "$prefix/lib/libcma.so.$version")
if [ "$loaded" != "$installed" ]; then
    echo "test-install: the program loads $loaded (reported as ${out#ok }), not the installed $installed"
    LD_LIBRARY_PATH="$prefix/lib" ldd "$prefix/app" || true
    exit 1
fi
"$prefix/bin/cma-run" sh -c "grep -qF '${installed%/*}/libcma' /proc/\$\$/maps" \
    || { echo "test-install: the installed cma-run does not preload the installed library"; exit 1; }

make -s uninstall PREFIX="$prefix" >/dev/null
left=$(find "$prefix" -type f -o -type l | grep -v -e "$prefix/app" || true)
[ -z "$left" ] || { echo "test-install: make uninstall left: $left"; exit 1; }
echo "test-install: install, pkg-config build ($version), cma-run and uninstall all work"
