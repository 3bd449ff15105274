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

python3 - "$OUT" "${ORDER[@]}" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, *vals = line.split()
    if len(vals) != 3:
        print(f"{name}: a run failed", file=sys.stderr)
        sys.exit(1)
    rows.setdefault(name, []).append((float(vals[0]), float(vals[1]), int(vals[2])))
med = lambda name, i: statistics.median(r[i] for r in rows[name])
print("| allocator | medium ns | ×glibc | small ns | ×glibc | errors |")
print("| :--- | ---: | ---: | ---: | ---: | ---: |")
errors = 0
for name in sys.argv[2:]:
    e = sum(r[2] for r in rows[name])
    errors += e
    print(f"| {name} | {med(name, 0):.1f} | {med(name, 0) / med('glibc', 0):.2f} | "
          f"{med(name, 1):.1f} | {med(name, 1) / med('glibc', 1):.2f} | {e} |")
sys.exit(1 if errors else 0)
PY
