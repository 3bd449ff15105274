# shellcheck shell=bash
# Sourced by the scripts that run one bench outside the suite under every
# allocator (bench-calloc.sh, bench-trim.sh, bench-phase-churn.sh). Given ROOT, it installs what
# is missing, builds libcma.so if needed (or takes CMA_LIB) and defines:
#   LIB[name]    the library each allocator preloads (glibc: none)
#   ORDER        the allocators, in the order each round runs them
#   build_bench  NAME: compiles benches/NAME.c into benches/build/NAME
#   run_rounds   the interleaved runs (below)
#   median_table their medians as a markdown table (below)
LIBDIR=/usr/lib/x86_64-linux-gnu
CMA_LIB="${CMA_LIB:-$ROOT/target/release/libcma.so}"

"$ROOT/scripts/install-deps.sh" --no-cargo
[ -f "$CMA_LIB" ] || make -s -C "$ROOT" lib

declare -A LIB=(
    [glibc]=""
    [jemalloc]="$LIBDIR/libjemalloc.so.2"
    [mimalloc]="$LIBDIR/libmimalloc.so.2"
    [tcmalloc]="$LIBDIR/libtcmalloc_minimal.so.4"
    [cma]="$CMA_LIB"
)
ORDER=(glibc jemalloc mimalloc tcmalloc cma)

build_bench() {
    mkdir -p "$ROOT/benches/build"
    cc -O2 -pthread -Wall -Wextra -o "$ROOT/benches/build/$1" "$ROOT/benches/$1.c" -ldl
}

# run_rounds RUNS NAME AWK OUT: RUNS rounds, each running benches/build/NAME
# once under every allocator in ORDER (interleaved, so a noisy machine hurts
# them alike); each run's output is reduced to one line by the awk program
# and appended to OUT as "allocator line" (just "allocator" if it failed).
run_rounds() {
    local line
    for _ in $(seq "$1"); do
        for a in "${ORDER[@]}"; do
            line="$(LD_PRELOAD="${LIB[$a]}" "$ROOT/benches/build/$2" | awk "$3")" || line=""
            echo "$a $line" >>"$4"
        done
    done
}

# median_table OUT COLUMN...: prints, for every allocator in ORDER, the
# medians of the values run_rounds wrote to OUT ("allocator v1 .. vN e",
# e a run's error count), one COLUMN "label;divisor;format" per value (the
# value divided by divisor, printed with the Python format), with ";ratio"
# appended for a column of its ratio to glibc after it, then the sum of
# the errors. Returns 1 when a run failed or reported errors.
median_table() {
    python3 - "$@" -- "${ORDER[@]}" <<'PY'
import statistics, sys
out, args = sys.argv[1], sys.argv[2:]
split = args.index("--")
columns, order = [a.split(";") for a in args[:split]], args[split + 1:]
rows = {}
for line in open(out):
    name, *vals = line.split()
    if len(vals) != len(columns) + 1:
        print(f"{name}: a run failed", file=sys.stderr)
        sys.exit(1)
    rows.setdefault(name, []).append(
        [float(v) / float(c[1]) for v, c in zip(vals, columns)] + [int(vals[-1])])
med = lambda name, i: statistics.median(r[i] for r in rows[name])
head, rule = ["allocator"], [":---"]
for c in columns:
    head += [c[0]] + (["×glibc"] if "ratio" in c[3:] else [])
    rule += ["---:"] * (2 if "ratio" in c[3:] else 1)
print("| " + " | ".join(head + ["errors"]) + " |")
print("| " + " | ".join(rule + ["---:"]) + " |")
errors = 0
for name in order:
    e = sum(r[-1] for r in rows[name])
    errors += e
    cells = [name]
    for i, c in enumerate(columns):
        cells.append(format(med(name, i), c[2]))
        if "ratio" in c[3:]:
            cells.append(f"{med(name, i) / med('glibc', i):.2f}")
    print("| " + " | ".join(cells + [str(e)]) + " |")
sys.exit(1 if errors else 0)
PY
}
