#!/usr/bin/env bash
# c_tests/faults/run.sh: CMA's fault-injection tests (called by c_tests/run.sh).
#
# Usage: c_tests/faults/run.sh [--lib-dir DIR] [--jobs N] [--only GLOB]
#        (default DIR: target/release; N: the number of CPUs; GLOB matches
#        case names, e.g. 'free.freed.*')
#
# Programs, built into c_tests/build/faults/ (logs in its logs/):
#   fault.plain     fault.c, plain malloc family, run with LD_PRELOAD
#   fault.linked    fault.c -DFAULTS_LINKED, linked with -lcma (cma_* calls)
#   checked.linked  checked.c, linked with -lcma (the checked API)
#   secure.plain    secure.c, run with LD_PRELOAD (secure-mode properties)
# Each program lists its cases (PROGRAM --list: name|kind|modes|call|reason).
# Every case runs without and with --threads (six threads hammering the
# heap), and with CMA_SECURE unset and =1 (modes "both") or only with
# CMA_SECURE=1 (modes "secure"), each under `timeout 10`. A case of kind
#   abort  passes when the process is killed by SIGABRT within 5 s and its
#          stderr is exactly one line
#            cma: <call>(): <reason> (pointer 0x<hex>, thread <tid>)
#          with the expected call (or one of the alternatives a/b) and
#          reason, a pointer the program announced on stdout
#          ("pointer 0x...") and the thread it announced ("thread N"): the
#          one that misused the heap;
#   ok     passes when the program exits 0 with nothing on stderr.
# A failed run whose freed test block was handed out again to a hammer
# thread (it says "REUSED", or exits 5: see faults.h) proves nothing and is
# run again, up to 3 runs in all.
# Prints one PASS/FAIL/XFAIL line per run, then a summary; exits non-zero if
# anything failed (an expected failure that passes, XPASS, fails too).
set -u

here=$(cd "$(dirname "$0")" && pwd)
c_tests=$(dirname "$here")
root=$(dirname "$c_tests")
lib_dir=$root/target/release
jobs=$(nproc 2>/dev/null || echo 2)
only='*'

usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
        --lib-dir) [ $# -ge 2 ] || usage; lib_dir=$2; shift 2 ;;
        --jobs) [ $# -ge 2 ] || usage; jobs=$2; shift 2 ;;
        --only) [ $# -ge 2 ] || usage; only=$2; shift 2 ;;
        -h|--help) usage ;;
        *) echo "faults/run.sh: unknown argument: $1" >&2; usage ;;
    esac
done

abs_lib_dir=$(cd "$lib_dir" 2>/dev/null && pwd) || { echo "faults/run.sh: no directory $lib_dir" >&2; exit 2; }
lib_dir=$abs_lib_dir
[ -f "$lib_dir/libcma.so" ] || { echo "faults/run.sh: $lib_dir/libcma.so is missing" >&2; exit 2; }

# Known gaps of the library: "PROGRAM-GLOB|CASE-GLOB|MODE-GLOB|why". A run
# matching one that fails is XFAIL (not counted as a failure); one that
# passes is XPASS, which fails the run so that the line gets removed here.
# MODE is "default" or "secure", followed by "+threads" for the hammered
# variant.
# Example: "fault.*|*.overflow*|secure*|overflow detection not implemented yet".
expected_failures=(
)

build=$c_tests/build/faults
logs=$build/logs
mkdir -p "$logs"
rm -f "$logs"/*

flags=(-O2 -g -Wall -Wextra -Werror -pthread -D_GNU_SOURCE -I"$root/include" -I"$c_tests" -I"$here")
# shellcheck disable=SC2054 # -Wl,-rpath,DIR is one argument
linked_libs=(-L"$lib_dir" -lcma -Wl,-rpath,"$lib_dir")

# program          source     build   run
programs=(
    "fault.plain     fault.c    plain   preload"
    "fault.linked    fault.c    linked  linked"
    "checked.linked  checked.c  linked  linked"
    "secure.plain    secure.c   plain   preload"
)

build_one() {
    local name=$1 source=$2 kind=$3 extra=()
    [ "$kind" = linked ] && extra=(-DFAULTS_LINKED "${linked_libs[@]}")
    cc "${flags[@]}" "$here/$source" "${extra[@]}" -o "$build/$name" >"$logs/$name.build.log" 2>&1
}

echo "== faults: building into $build (library: $lib_dir)"
pids=()
for entry in "${programs[@]}"; do
    read -r name source kind _ <<<"$entry"
    build_one "$name" "$source" "$kind" &
    pids+=($!)
done
build_failed=0
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        read -r name _ <<<"${programs[$i]}"
        echo "FAIL $name: build failed"
        sed 's/^/    | /' "$logs/$name.build.log" | tail -n 20
        build_failed=$((build_failed + 1))
    fi
done
[ "$build_failed" -eq 0 ] || { echo "== faults: $build_failed programs failed to build"; exit 1; }

# The runs: "program|case|kind|call|reason|secure|threads|run".
runs=()
for entry in "${programs[@]}"; do
    read -r name _ _ how <<<"$entry"
    list=$("$build/$name" --list) || { echo "FAIL $name --list"; exit 1; }
    while IFS='|' read -r case kind modes call reason; do
        # shellcheck disable=SC2254
        case $case in $only) ;; *) continue ;; esac
        secures="0 1"
        [ "$modes" = secure ] && secures=1
        for secure in $secures; do
            for threads in "" --threads; do
                runs+=("$name|$case|$kind|$call|$reason|$secure|$threads|$how")
            done
        done
    done <<<"$list"
done

# Strips leading zeros from a hex number (no 0x), for comparison.
hex_norm() {
    local h=${1,,}
    while [ "${#h}" -gt 1 ] && [ "${h:0:1}" = 0 ]; do h=${h:1}; done
    echo "$h"
}

# check_abort OUT ERR RC CALL REASON TOOK: prints why the run failed, or
# nothing if it passed.
check_abort() {
    local out=$1 err=$2 rc=$3 call=$4 reason=$5 took=$6
    case $rc in
        134) ;;
        0)
            if grep -q '^NOT DETECTED' "$out"; then
                echo "not detected: the misuse survived (exit 0)"
            else
                echo "exit 0 without the misuse?"
            fi
            return ;;
        124) echo "timed out after 10 s (hang?)"; return ;;
        137) echo "SIGKILL (timeout -k, or the OOM killer)"; return ;;
        2) grep -m1 '^SETUP FAILED' "$out" || echo 'setup failed'; return ;;
        3) grep -m1 '^HAMMER FAILED' "$out" || echo 'a hammer thread failed'; return ;;
        *)
            if [ "$rc" -gt 128 ]; then
                echo "killed by signal $((rc - 128)), not SIGABRT"
            else
                echo "exit status $rc"
            fi
            return ;;
    esac
    local lines
    lines=$(wc -l <"$err")
    if [ "$lines" -ne 1 ] || [ -n "$(tail -c 1 "$err")" ]; then
        echo "SIGABRT, but stderr holds $lines lines (want exactly one line): $(head -c 300 "$err" | tr '\n' '|')"
        return
    fi
    local line
    line=$(<"$err")
    local re='^cma: ([a-z_]+)\(\): (.+) \(pointer 0x([0-9a-f]+), thread ([0-9]+)\)$'
    if ! [[ $line =~ $re ]]; then
        echo "SIGABRT, but stderr is not a diagnostic line: $line"
        return
    fi
    local got_call=${BASH_REMATCH[1]} got_reason=${BASH_REMATCH[2]}
    local got_ptr=${BASH_REMATCH[3]} got_tid=${BASH_REMATCH[4]}
    # CALL may list alternatives: "malloc/free".
    if [[ "/$call/" != *"/$got_call/"* ]] || [ "$got_reason" != "$reason" ]; then
        echo "wrong diagnostic: \"$got_call(): $got_reason\", want \"$call(): $reason\" ($line)"
        return
    fi
    local announced ok=0 p
    announced=$(sed -n 's/^pointer 0x\([0-9a-fA-F]*\)$/\1/p' "$out")
    for p in $announced; do
        [ "$(hex_norm "$p")" = "$(hex_norm "$got_ptr")" ] && ok=1
    done
    if [ "$ok" -eq 0 ]; then
        echo "wrong pointer: the line names 0x$got_ptr, want $(echo "$announced" | sed 's/^/0x/' | paste -sd/ -) ($line)"
        return
    fi
    local tid
    tid=$(sed -n 's/^thread \([0-9]*\)$/\1/p' "$out" | tail -n 1)
    if [ "$got_tid" != "$tid" ]; then
        echo "wrong thread: the line names thread $got_tid, want $tid, the one that misused the heap ($line)"
        return
    fi
    if awk -v t="$took" 'BEGIN { exit !(t > 5) }'; then
        echo "took $took s to abort (want < 5 s)"
        return
    fi
}

# check_ok OUT ERR RC: prints why the run failed, or nothing.
check_ok() {
    local out=$1 err=$2 rc=$3
    if [ "$rc" -eq 124 ]; then
        echo "timed out after 10 s (hang?)"
    elif [ "$rc" -gt 128 ]; then
        echo "killed by signal $((rc - 128)) ($(head -c 200 "$err" | tr '\n' '|'))"
    elif [ "$rc" -ne 0 ]; then
        echo "exit status $rc: $(grep -m1 -E '^(FAIL|SETUP FAILED|HAMMER FAILED)' "$out" || tail -n 1 "$out")"
    elif [ -s "$err" ]; then
        echo "unexpected stderr: $(head -c 200 "$err" | tr '\n' '|')"
    fi
}

# run_one INDEX: runs one entry of `runs`, prints its line and records
# its verdict in logs/INDEX.verdict.
run_one() {
    local i=$1
    local prog case kind call reason secure threads how
    IFS='|' read -r prog case kind call reason secure threads how <<<"${runs[$i]}"
    local mode=default
    [ "$secure" = 1 ] && mode=secure
    [ -n "$threads" ] && mode+=+threads
    local label="$prog $case [$mode]"
    local cmd=(env -u CMA_SECURE -u CMA_VERBOSE -u CMA_ALLOC_LIMIT)
    [ "$secure" = 1 ] && cmd+=(CMA_SECURE=1)
    [ "$how" = preload ] && cmd+=(LD_PRELOAD="$lib_dir/libcma.so")
    local out=$logs/$i.out err=$logs/$i.err rc took why attempt retried=""
    local args=("$case")
    [ -n "$threads" ] && args+=("$threads")
    for attempt in 1 2 3; do
        local start=$EPOCHREALTIME
        # The braces' 2>/dev/null silences bash's own "Aborted" job notice.
        { timeout -k 2 10 "${cmd[@]}" "$build/$prog" "${args[@]}" >"$out" 2>"$err"; rc=$?; } 2>/dev/null
        took=$(awk -v s="$start" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.2f", e - s }')
        if [ "$kind" = abort ]; then
            why=$(check_abort "$out" "$err" "$rc" "$call" "$reason" "$took")
        else
            why=$(check_ok "$out" "$err" "$rc")
        fi
        # A hammer thread was handed the test's freed block (faults.h,
        # note_block): the run proves nothing either way; run it again.
        if [ -n "$why" ] && { [ "$rc" -eq 5 ] || grep -q '^REUSED' "$out"; }; then
            retried+=" (run $attempt: $(grep -m1 '^REUSED' "$out" || echo "exit status $rc"))"
            why="the freed test block was handed out again to a hammer thread in 3 runs"
            continue
        fi
        break
    done
    local note=""
    [ -n "$retried" ] && note=" [run again:$retried]"
    local xfail="" entry
    for entry in "${expected_failures[@]}"; do
        local xp xc xm xwhy
        IFS='|' read -r xp xc xm xwhy <<<"$entry"
        # shellcheck disable=SC2053
        if [[ $prog == $xp && $case == $xc && $mode == $xm ]]; then
            xfail=$xwhy
            break
        fi
    done
    local verdict line
    if [ -z "$why" ] && [ -z "$xfail" ]; then
        verdict=PASS line="PASS $label (${took} s)$note"
    elif [ -z "$why" ]; then
        verdict=FAIL line="FAIL $label: XPASS: passes, but is listed as an expected failure ($xfail): remove it from expected_failures in c_tests/faults/run.sh"
    elif [ -n "$xfail" ]; then
        verdict=XFAIL line="XFAIL $label: $why [expected: $xfail]"
    else
        verdict=FAIL line="FAIL $label: $why$note (logs: $logs/$i.out, $i.err)"
    fi
    echo "$line"
    echo "$verdict $line" >"$logs/$i.verdict"
}

ulimit -c 0 # SIGABRT must not leave core files behind
echo "== faults: ${#runs[@]} runs, $jobs at a time"
started=$EPOCHREALTIME
running=0
for i in "${!runs[@]}"; do
    run_one "$i" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

passed=0 failed=0 xfailed=0
failures=()
for i in "${!runs[@]}"; do
    if [ ! -f "$logs/$i.verdict" ]; then
        failed=$((failed + 1))
        failures+=("FAIL ${runs[$i]}: no verdict (runner error)")
        continue
    fi
    read -r verdict line <"$logs/$i.verdict"
    case $verdict in
        PASS) passed=$((passed + 1)) ;;
        XFAIL) xfailed=$((xfailed + 1)) ;;
        *) failed=$((failed + 1)); failures+=("$line") ;;
    esac
done
took=$(awk -v s="$started" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.0f", e - s }')
echo "== faults: $passed passed, $failed failed, $xfailed expected failures in $took s (logs in $logs)"
for f in "${failures[@]}"; do
    echo "   $f"
done
[ "$failed" -eq 0 ]
