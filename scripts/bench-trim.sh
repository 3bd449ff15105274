#!/usr/bin/env bash
# malloc_trim with free blocks inside pages that stay in use, while another
# thread keeps allocating: how long the trim takes, how long the other
# thread waits at worst, and the RSS before and after, under glibc,
# jemalloc, mimalloc, tcmalloc and CMA side by side
# (benches/trim_latency.c; not part of the scripts/bench.sh suite).
#
#   scripts/bench-trim.sh [RUNS]     default 5 runs per allocator, interleaved
#
# Prints a markdown table of medians. Only glibc and CMA define malloc_trim
# for their own heaps; under the other three the bench calls glibc's, which
# finds nothing of theirs to give back. Exit status 1 when a run failed or
# reported errors.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNS="${1:-5}"
# shellcheck source=scripts/side-by-side.sh
source "$ROOT/scripts/side-by-side.sh"
build_bench trim_latency
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT

# shellcheck disable=SC2016 # an awk program, for awk to expand
run_rounds "$RUNS" trim_latency '/^trim_ms/{t=$2} /^probe_worst_ms/{w=$2}
    /^rss_kb.before_trim/{b=$2} /^rss_kb.after_trim/{f=$2} /^errors/{e=$2}
    END{print t, w, b, f, e}' "$OUT"

median_table "$OUT" "malloc_trim ms;1;.1f" "other thread's worst wait ms;1;.2f" \
    "RSS before MiB;1024;.1f" "RSS after MiB;1024;.1f"
