#!/usr/bin/env bash
# What CMA's own checks cost on the bench suite, measured side by side: the
# default-mode heap checks (against the same build with them compiled out)
# and secure mode (CMA_SECURE=1), in time and peak RSS.
#
#   scripts/bench-variants.sh              the time benches, 5 runs each (~5 min);
#                                          prints the ratios, docs/ left as it is
#   scripts/bench-variants.sh --docs       the same, and writes the result into the
#                                          variants section of docs/BENCHMARKS.md
#   scripts/bench-variants.sh --quick --runs 1 --only churn,larson    a short try
#
# Builds target/release/libcma.so (`make lib`) and the same library with the
# `unchecked` feature into target/unchecked/release/libcma.so, then runs
# scripts/bench.sh (which builds benches/build/ first) over the time benches
# (or --only's) with CMA alone and two variants, interleaved run by run:
#
#   cma            target/release/libcma.so, default mode
#   cma-unchecked  target/unchecked/release/libcma.so: default-mode checks compiled out
#   cma-secure     target/release/libcma.so with CMA_SECURE=1 for its runs only
#
# and reports each variant's time and peak RSS as ratios to cma's, with their
# geometric means ("cma time ×cma-unchecked" is what the default-mode checks
# cost). --docs puts that section between <!-- BEGIN variants --> and
# <!-- END variants --> in docs/BENCHMARKS.md (a later scripts/bench.sh run
# keeps it). Options: --runs N (5), --quick, --only a,b, --docs, --no-docs.
#
# Exit status: that of scripts/bench.sh (1 on a checksum mismatch); docs/ is
# only written after a run without problems.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
COMMAND="scripts/bench-variants.sh $*"
RUNS=5
ONLY=""
QUICK=()
WRITE_DOCS=0

while [ $# -gt 0 ]; do
    case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --quick) QUICK=(--quick); shift ;;
    --docs) WRITE_DOCS=1; shift ;;
    --no-docs) WRITE_DOCS=0; shift ;;
    -h | --help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$ONLY" ]; then
    ONLY="$(PYTHONDONTWRITEBYTECODE=1 python3 -c 'import sys; sys.path.insert(0, "scripts/bench"); import driver
print(",".join(b.name for b in driver.SUITE if b.kind == "time"))')"
fi

# ---- build ---------------------------------------------------------------
echo "== make lib (target/release/libcma.so)"
make lib
echo "== the same with the default-mode checks compiled out (target/unchecked/release/libcma.so)"
CARGO_TARGET_DIR=target/unchecked cargo rustc --release --lib --no-default-features \
    --features override,unchecked --crate-type cdylib

# ---- run -----------------------------------------------------------------
# (CMA_SECURE from our environment would reach every run, not only cma-secure's)
unset CMA_SECURE
status=0
scripts/bench.sh --allocs cma --cma target/release/libcma.so --only "$ONLY" --runs "$RUNS" \
    "${QUICK[@]}" --no-docs --command "$COMMAND" \
    --variants "cma-unchecked=target/unchecked/release/libcma.so,cma-secure=target/release/libcma.so+CMA_SECURE=1" \
    || status=$?

# ---- docs ----------------------------------------------------------------
if [ "$WRITE_DOCS" = 1 ]; then
    if [ "$status" -ne 0 ]; then
        echo "docs/BENCHMARKS.md left as it was: the run had problems (exit $status)" >&2
        exit "$status"
    fi
    python3 - benches/build/report/BENCHMARKS.md docs/BENCHMARKS.md <<'PY'
import sys

src, dst = sys.argv[1], sys.argv[2]
begin, end = "<!-- BEGIN variants -->", "<!-- END variants -->"
new = open(src).read()
i, j = new.find(begin), new.find(end)
if i < 0 or j < 0:
    sys.exit(f"no variants section in {src}")
section = new[i:j + len(end)]
try:
    old = open(dst).read()
except FileNotFoundError:
    old = "# CMA benchmarks\n"
i, j = old.find(begin), old.find(end)
k = old.find("<!-- BEGIN fastpath-callgrind")
if i >= 0 and j >= 0:
    out = old[:i] + section + old[j + len(end):]
elif k >= 0:  # before the fastpath section, where scripts/bench.sh keeps it
    out = old[:k] + section + "\n\n" + old[k:]
else:
    out = old.rstrip() + "\n\n" + section + "\n"
open(dst, "w").write(out)
print(f"updated the variants section of {dst}")
PY
fi
exit "$status"
