#!/usr/bin/env bash
# Short-lived blocks next to the sparse pages a phase change leaves behind:
# nanoseconds per malloc+free of 200..1000 bytes and of 32..128 bytes under
# glibc, jemalloc, mimalloc, tcmalloc and CMA side by side
# (benches/phase_churn.c; not part of the scripts/bench.sh suite).
#
#   scripts/bench-phase-churn.sh [RUNS]   default 5 runs per allocator, interleaved
#
# Prints a markdown table of medians and their ratio to glibc. Exit status 1
# when a run failed or reported errors.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNS="${1:-5}"
# shellcheck source=scripts/side-by-side.sh
source "$ROOT/scripts/side-by-side.sh"
build_bench phase_churn
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT

# shellcheck disable=SC2016 # an awk program, for awk to expand
run_rounds "$RUNS" phase_churn '/^medium_ns/{m=$2} /^small_ns/{s=$2} /^errors/{e=$2}
    END{print m, s, e}' "$OUT"

median_table "$OUT" "medium ns;1;.1f;ratio" "small ns;1;.1f;ratio"
