#!/usr/bin/env bash
# calloc of memory the program mostly never writes: RSS under glibc,
# jemalloc, mimalloc, tcmalloc and CMA, side by side (benches/calloc_sparse.c;
# not part of the scripts/bench.sh suite).
#
#   scripts/bench-calloc.sh [RUNS]     default 5 runs per allocator, interleaved
#
# Prints a markdown table: medians of RSS after round 1 (fresh memory) with
# its ratio to glibc, RSS after round 2 (memory used before), the time of
# both rounds, and the sum of `errors` (bytes calloc returned non-zero, or
# blocks that did not read back) over all runs, which must be 0.
# Exit status: 1 when any run reported errors or failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNS="${1:-5}"
# shellcheck source=scripts/side-by-side.sh
source "$ROOT/scripts/side-by-side.sh"
build_bench calloc_sparse
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT

# shellcheck disable=SC2016 # an awk program, for awk to expand
run_rounds "$RUNS" calloc_sparse '/^rss_kb.round1/{r1=$2} /^rss_kb.round2/{r2=$2}
    /^elapsed_s/{t=$2} /^errors/{e=$2} END{print r1, r2, t, e}' "$OUT"

median_table "$OUT" "RSS after round 1 MiB;1024;.1f;ratio" \
    "RSS after round 2 MiB;1024;.1f" "time s;1;.3f"
