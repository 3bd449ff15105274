# shellcheck shell=bash
# Sourced by the scripts that run one bench outside the suite under every
# allocator (bench-calloc.sh, bench-trim.sh). Given ROOT, it installs what
# is missing, builds libcma.so if needed (or takes CMA_LIB) and defines:
#   LIB[name]    the library each allocator preloads (glibc: none)
#   ORDER        the allocators, in the order each round runs them
#   build_bench  NAME: compiles benches/NAME.c into benches/build/NAME
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
