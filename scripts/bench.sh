#!/usr/bin/env bash
# Benchmark CMA against glibc, jemalloc, mimalloc and tcmalloc, side by side.
#
#   scripts/bench.sh                 full run (~10-15 min): 3 runs per config,
#                                    mem_steady 60 s; writes docs/BENCHMARKS.md
#                                    and docs/bench.svg
#   scripts/bench.sh --quick         ~3 min: smaller scale, mem_steady 3 s;
#                                    report under benches/build/report/
#   scripts/bench.sh --only larson,aligned [--runs 5] [--docs|--no-docs]
#   scripts/bench.sh --help          all options
#
# Installs what is missing through scripts/install-deps.sh (among them
# Debian's libjemalloc2, libmimalloc2.0, libtcmalloc-minimal4, gnuplot-nox,
# gcc, python3), builds benches/*.c into
# benches/build/, then runs scripts/bench/driver.py, which runs every bench x
# thread count under every allocator, interleaved run by run, checks that all
# of them printed the same checksum, and prints/writes the tables and chart.
# CMA is target/release/libcma.so (or $CMA_LIB, or --cma PATH); when it is
# missing or fails a smoke test the run goes on without it and says so.
#
# Exit status: 0 when every checksum matched and no peer failed; 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD="$ROOT/benches/build"
CC="${CC:-cc}"
CFLAGS=(-O2 -pthread -Wall -Wextra)

for arg in "$@"; do
    case "$arg" in
    -h | --help) exec python3 "$ROOT/scripts/bench/driver.py" --help ;;
    esac
done

# ---- prerequisites -------------------------------------------------------
"$ROOT/scripts/install-deps.sh" --no-cargo --with gnuplot:gnuplot-nox

# ---- build ---------------------------------------------------------------
mkdir -p "$BUILD"
echo "== building benches/*.c with $CC ${CFLAGS[*]}"
for src in "$ROOT"/benches/*.c; do
    name="$(basename "$src" .c)"
    "$CC" "${CFLAGS[@]}" -o "$BUILD/$name" "$src"
done
"$CC" "${CFLAGS[@]}" -o "$BUILD/runner" "$ROOT/scripts/bench/runner.c"

# ---- run -----------------------------------------------------------------
exec python3 "$ROOT/scripts/bench/driver.py" --command "scripts/bench.sh $*" \
    --cflags "${CFLAGS[*]}" "$@"
