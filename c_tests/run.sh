#!/usr/bin/env bash
# c_tests/run.sh: builds and runs CMA's C and C++ tests (called by `make test`).
#
# Usage: c_tests/run.sh [--lib-dir DIR]      (default DIR: target/release)
#
# Every program is built into c_tests/build/ and run in several modes:
#   linked   linked with -lcma (rpath to DIR)
#   static   linked with DIR/libcma.a (the programs whose modes list it)
#   preload  a plain-malloc build (no -lcma; the cma_* programs compiled with
#            -DCMA_PLAIN, see cma_plain.h) run with LD_PRELOAD=DIR/libcma.so
# each under `timeout`, so that a hang fails. Logs: c_tests/build/logs/.
# Prints one line per program and mode, then a summary; then runs the
# fault-injection tests (c_tests/faults/run.sh, same DIR). Exits non-zero if
# anything failed.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
lib_dir=$root/target/release

usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
        --lib-dir) [ $# -ge 2 ] || usage; lib_dir=$2; shift 2 ;;
        -h|--help) usage ;;
        *) echo "run.sh: unknown argument: $1" >&2; usage ;;
    esac
done

abs_lib_dir=$(cd "$lib_dir" 2>/dev/null && pwd) || { echo "run.sh: no directory $lib_dir" >&2; exit 2; }
lib_dir=$abs_lib_dir
for f in libcma.so libcma.a; do
    [ -f "$lib_dir/$f" ] || { echo "run.sh: $lib_dir/$f is missing (cargo build --release?)" >&2; exit 2; }
done

build=$here/build
logs=$build/logs
mkdir -p "$logs"
rm -f "$logs"/*.log

flags=(-O2 -g -Wall -Wextra -Werror -pthread -D_GNU_SOURCE -I"$root/include" -I"$here")
linked_libs=(-L"$lib_dir" -lcma -Wl,-rpath,"$lib_dir")
# libcma.a is a Rust staticlib: it needs the system libraries Rust's std uses.
# -rdynamic exports CMA's symbols, so dlsym finds cma_get_stats as it would
# in libcma.so.
static_libs=(-rdynamic "$lib_dir/libcma.a" -lgcc_s -lutil -lrt -lpthread -lm -ldl)

# name      source             uses the cma_* API?  timeout (s)  modes
programs=(
    "stress             stress.c            api    120  linked static preload"
    "stress_cpp         stress_cpp.cpp      api    120  linked preload"
    "api_behaviour      api_behaviour.c     api    30   linked static preload"
    "rule_zero_checked  rule_zero_checked.c api    60   linked static preload"
    "malloc_family      malloc_family.c     plain  60   linked static preload"
    "fork_threads       fork_threads.c      plain  120  linked preload"
    "fork_stress        fork_stress.c       plain  60   linked preload"
    "orphan_trim        orphan_trim.c       plain  60   linked preload"
    "runs_stress        runs_stress.c       plain  60   linked preload"
    "rule_zero_abort    rule_zero_abort.c   plain  30   linked static preload"
    "cxx_operators      cxx_operators.cpp   plain  30   linked preload"
    "cache_lines        cache_lines.c       plain  30   linked preload"
)

# build NAME SOURCE KIND MODE: compiles c_tests/build/NAME.MODE.
build_one() {
    local name=$1 source=$2 kind=$3 mode=$4 compiler=cc extra=()
    case $source in *.cpp) compiler=c++ ;; esac
    case $mode in
        linked) extra=("${linked_libs[@]}") ;;
        static) extra=("${static_libs[@]}") ;;
        preload) [ "$kind" = api ] && extra=(-DCMA_PLAIN) ;;
    esac
    # Libraries after the source, so that the static archive resolves them.
    "$compiler" "${flags[@]}" "$here/$source" "${extra[@]}" -o "$build/$name.$mode" \
        >"$logs/$name.$mode.build.log" 2>&1
}

echo "== building into $build (library: $lib_dir)"
pids=()
targets=()
for entry in "${programs[@]}"; do
    read -r name source kind _ modes <<<"$entry"
    for mode in $modes; do
        build_one "$name" "$source" "$kind" "$mode" &
        pids+=($!)
        targets+=("$name.$mode")
    done
done
declare -A built
for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then built[${targets[$i]}]=1; fi
done

passed=0
failed=0
failures=()

report_failure() {
    local line=$1 log=$2
    echo "$line"
    failures+=("$line")
    failed=$((failed + 1))
    tail -n 20 "$log" | sed 's/^/    | /'
}

echo "== running"
for entry in "${programs[@]}"; do
    read -r name _ _ limit modes <<<"$entry"
    for mode in $modes; do
        label="$name [$mode]"
        if [ -z "${built[$name.$mode]:-}" ]; then
            report_failure "FAIL $label: build failed" "$logs/$name.$mode.build.log"
            continue
        fi
        env_cmd=(env)
        [ "$mode" = preload ] && env_cmd=(env LD_PRELOAD="$lib_dir/libcma.so")
        log=$logs/$name.$mode.log
        start=$(date +%s.%N)
        # The braces' 2>/dev/null silences bash's own "Aborted" job notice.
        { timeout -k 5 "$limit" "${env_cmd[@]}" "$build/$name.$mode" >"$log" 2>&1; rc=$?; } 2>/dev/null
        took=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
        if [ $rc -eq 0 ]; then
            echo "PASS $label (${took} s)"
            passed=$((passed + 1))
        elif [ $rc -eq 124 ]; then
            report_failure "FAIL $label: timed out after $limit s (hang?)" "$log"
        elif [ $rc -eq 137 ]; then
            report_failure "FAIL $label: SIGKILL (timeout -k after $limit s, or the OOM killer)" "$log"
        elif [ $rc -gt 128 ]; then
            report_failure "FAIL $label: killed by signal $((rc - 128)) after ${took} s" "$log"
        else
            report_failure "FAIL $label: exit status $rc after ${took} s" "$log"
        fi
    done
done

echo "== $passed passed, $failed failed (logs in $logs)"
for f in "${failures[@]}"; do
    echo "   $f"
done

# The fault-injection tests (misuses that must end the process with a
# diagnostic, and the checked API's error codes): their own runner.
"$here/faults/run.sh" --lib-dir "$lib_dir"
faults_status=$?
[ "$faults_status" -eq 0 ] || echo "== c_tests/faults/run.sh failed (status $faults_status)"

[ "$failed" -eq 0 ] && [ "$faults_status" -eq 0 ]
