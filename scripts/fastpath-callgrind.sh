#!/usr/bin/env bash
# Instructions per malloc+free pair on the fast path, counted by callgrind.
#
#   scripts/fastpath-callgrind.sh [--n1 N] [--n2 N] [--no-docs]
#
# Builds benches/fastpath.c (N malloc+free pairs of 16..256 bytes in a tight
# loop, one thread) and a variant with the pair compiled out (the bare loop),
# runs each under `valgrind --tool=callgrind` for two values of N, with every
# allocator preloaded (glibc: none; jemalloc, mimalloc, tcmalloc from Debian;
# CMA from target/release/libcma.so or $CMA_LIB, when present, and without
# $CMA_LIB also CMA built with its default-mode checks compiled out), and prints
#
#   per pair, loop included = (Ir(N2) - Ir(N1)) / (N2 - N1)
#   per pair, net           = that - the same quotient for the bare loop
#
# so start-up, teardown and the loop itself cancel.  Two variants: "hot",
# with one block of every size 16..256 kept allocated around the loop (no
# size class ever becomes empty: the pure fast path), and "empty", with only
# the loop's block live (an allocator that does work when a page or span
# becomes empty does it on every free).  Writes/updates the fastpath section
# of docs/BENCHMARKS.md (between its BEGIN/END markers) unless --no-docs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD="$ROOT/benches/build"
DOC="$ROOT/docs/BENCHMARKS.md"
N1=200000
N2=1200000
WRITE_DOCS=1
LIBDIR=/usr/lib/x86_64-linux-gnu

while [ $# -gt 0 ]; do
    case "$1" in
    --n1) N1="$2"; shift 2 ;;
    --n2) N2="$2"; shift 2 ;;
    --no-docs) WRITE_DOCS=0; shift ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
if [ "$N2" -le "$N1" ]; then
    echo "--n2 must be larger than --n1" >&2
    exit 2
fi

# ---- prerequisites -------------------------------------------------------
"$ROOT/scripts/install-deps.sh" --no-cargo

# ---- build ---------------------------------------------------------------
mkdir -p "$BUILD"
CFLAGS=(-O2 -pthread -Wall -Wextra)
cc "${CFLAGS[@]}" -o "$BUILD/fastpath" benches/fastpath.c
cc "${CFLAGS[@]}" -DFASTPATH_NOOP -o "$BUILD/fastpath-noop" benches/fastpath.c

# ---- allocators ----------------------------------------------------------
names=(glibc jemalloc mimalloc tcmalloc)
libs=("" "$LIBDIR/libjemalloc.so.2" "$LIBDIR/libmimalloc.so.2" "$LIBDIR/libtcmalloc_minimal.so.4")
CMA_PATH="${CMA_LIB:-$ROOT/target/release/libcma.so}"
CMA_NOTE=""
if [ -f "$CMA_PATH" ]; then
    cp "$CMA_PATH" "$BUILD/libcma-callgrind.so"
    names+=(cma)
    libs+=("$BUILD/libcma-callgrind.so")
    CMA_DESC="$(realpath --relative-to="$ROOT" "$CMA_PATH") ($(date -r "$CMA_PATH" '+%Y-%m-%d %H:%M'), sha256 $(sha256sum "$CMA_PATH" | cut -c1-16)…)"
else
    CMA_NOTE="CMA not measured: $CMA_PATH not found"
    echo "!! $CMA_NOTE"
fi
# With the default build: the same library with the default-mode checks
# compiled out (as scripts/bench-variants.sh builds it), to show what those
# checks cost per pair.
UNCHECKED_PATH="$ROOT/target/unchecked/release/libcma.so"
if [ -z "${CMA_LIB:-}" ] && [ -f "$CMA_PATH" ]; then
    echo "== building the unchecked variant (target/unchecked/release/libcma.so)"
    CARGO_TARGET_DIR=target/unchecked cargo rustc -q --release --lib --no-default-features \
        --features override,unchecked --crate-type cdylib
    cp "$UNCHECKED_PATH" "$BUILD/libcma-unchecked-callgrind.so"
    names+=(cma-unchecked)
    libs+=("$BUILD/libcma-unchecked-callgrind.so")
    CMA_DESC="$CMA_DESC; cma-unchecked: target/unchecked/release/libcma.so ($(date -r "$UNCHECKED_PATH" '+%Y-%m-%d %H:%M'), the \`unchecked\` feature: default-mode checks compiled out)"
fi

# Ir of one run: callgrind's "totals:" line.
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
ir() { # lib exe n ballast
    local out="$TMP/cg.out"
    rm -f "$out"
    if ! LD_PRELOAD="$1" valgrind -q --tool=callgrind --callgrind-out-file="$out" \
        "$2" "$3" "$4" >"$TMP/stdout" 2>"$TMP/stderr"; then
        echo "FAILED"
        return
    fi
    awk '/^totals:/ { print $2; found = 1 } END { if (!found) print "FAILED" }' "$out"
}
quot() { # i1 i2 -> per pair
    if [ "$1" = FAILED ] || [ "$2" = FAILED ]; then echo FAILED; return; fi
    awk -v a="$1" -v b="$2" -v n1="$N1" -v n2="$N2" 'BEGIN { printf "%.1f", (b - a) / (n2 - n1) }'
}

echo "== bare loop"
bare="$(quot "$(ir "" "$BUILD/fastpath-noop" "$N1" 1)" "$(ir "" "$BUILD/fastpath-noop" "$N2" 1)")"
echo "   $bare instructions per iteration"

rows=()
for i in "${!names[@]}"; do
    name="${names[$i]}"
    lib="${libs[$i]}"
    echo "== $name"
    hot="$(quot "$(ir "$lib" "$BUILD/fastpath" "$N1" 1)" "$(ir "$lib" "$BUILD/fastpath" "$N2" 1)")"
    empty="$(quot "$(ir "$lib" "$BUILD/fastpath" "$N1" 0)" "$(ir "$lib" "$BUILD/fastpath" "$N2" 0)")"
    rows+=("$name $hot $empty")
done

# ---- report --------------------------------------------------------------
ROWS="$(printf '%s\n' "${rows[@]}")"
export N1 N2 BARE="$bare" CMA_NOTE CMA_DESC="${CMA_DESC:-}" WRITE_DOCS DOC ROWS
python3 - <<'PY'
import os, datetime, subprocess

n1, n2, bare = os.environ["N1"], os.environ["N2"], os.environ["BARE"]
rows = [line.split() for line in os.environ["ROWS"].splitlines() if line.strip()]

def net(x):
    try:
        return f"{float(x) - float(bare):.1f}"
    except ValueError:
        return x

def ver(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    return r.stdout.strip() or "?"

pkgs = {"glibc": "libc6", "jemalloc": "libjemalloc2", "mimalloc": "libmimalloc2.0",
        "tcmalloc": "libtcmalloc-minimal4"}
lines = ["| allocator | version | hot: net | hot: loop included | empty: net | empty: loop included |",
         "| :--- | :--- | ---: | ---: | ---: | ---: |"]
for name, hot, empty in rows:
    v = ver(pkgs[name]) if name in pkgs else "local build"
    lines.append(f"| **{name}** | {v} | {net(hot)} | {hot} | {net(empty)} | {empty} |")
table = "\n".join(lines)
print()
print(table)
print(f"\nbare loop: {bare} instructions per iteration")

begin = "<!-- BEGIN fastpath-callgrind (scripts/fastpath-callgrind.sh) -->"
end = "<!-- END fastpath-callgrind -->"
when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
cma = os.environ.get("CMA_NOTE") or (f"CMA: {os.environ['CMA_DESC']}" if os.environ.get("CMA_DESC") else "")
section = f"""{begin}
## Fast path: instructions per malloc+free (callgrind)

Measured by `scripts/fastpath-callgrind.sh` on {when}: `benches/fastpath.c` does N
malloc+free pairs of 16..256 bytes (sizes from a fixed pseudo-random table) in a tight loop
on one thread, run under `valgrind --tool=callgrind` with the allocator preloaded, for
N = {n1} and N = {n2}. Per pair = (Ir(N2) − Ir(N1)) / (N2 − N1), so start-up and teardown
cancel; **net** also subtracts the same quotient for the loop with the pair compiled out
({bare} instructions per iteration), leaving the malloc+free calls themselves (call, PLT
jump and return included). **hot**: one block of every size 16..256 stays allocated around
the loop, so no size class ever becomes empty (the pure fast path). **empty**: the loop's
block is the only one live, so an allocator that does work whenever a page or span becomes
empty does it on every free (mimalloc retires its page).
{(chr(10) + cma + chr(10)) if cma else ""}
{table}

Instruction counts are not time (they ignore cache misses and branch mispredictions), but
they are exact and immune to the noise of a shared machine, which makes them the right
gauge for fast-path work.
{end}"""

if os.environ.get("WRITE_DOCS") == "1":
    path = os.environ["DOC"]
    old = open(path).read() if os.path.exists(path) else "# CMA benchmarks\n"
    i, j = old.find(begin), old.find(end)
    if i >= 0 and j >= 0:
        new = old[:i] + section + old[j + len(end):]
    else:
        new = old.rstrip() + "\n\n" + section + "\n"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").write(new)
    print(f"\nupdated the fastpath section of {os.path.relpath(path)}")
PY
