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

python3 - "$OUT" "${ORDER[@]}" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, *vals = line.split()
    if len(vals) != 4:
        print(f"{name}: a run failed", file=sys.stderr)
        sys.exit(1)
    rows.setdefault(name, []).append(
        (int(vals[0]) / 1024, int(vals[1]) / 1024, float(vals[2]), int(vals[3])))
med = lambda name, i: statistics.median(r[i] for r in rows[name])
base = med("glibc", 0)
print("| allocator | RSS after round 1 MiB | ×glibc | RSS after round 2 MiB | time s | errors |")
print("| :--- | ---: | ---: | ---: | ---: | ---: |")
errors = 0
for name in sys.argv[2:]:
    e = sum(r[3] for r in rows[name])
    errors += e
    print(f"| {name} | {med(name, 0):.1f} | {med(name, 0) / base:.2f} | "
          f"{med(name, 1):.1f} | {med(name, 2):.3f} | {e} |")
sys.exit(1 if errors else 0)
PY
