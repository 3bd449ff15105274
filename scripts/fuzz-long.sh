#!/usr/bin/env bash
# fuzz-long.sh: the long run of the property-based heap fuzzer
# (tests/prop_heap.rs). See --help.
set -euo pipefail

# All in a function, read whole before it runs: editing the script during a
# long run cannot derail it.
main() {
prog=${0##*/}
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)

cases=20000
ops=1000
thread_cases=
thread_ops=500
duration=0
seed=
only=
fork=true
round_timeout=
log_dir=$root/target/fuzz-long

usage() {
    cat <<EOF
Usage: $prog [--cases N] [--ops N] [--thread-cases N] [--thread-ops N]
       [--duration TIME] [--seed N] [--only single|threads] [--no-fork]
       [--timeout TIME] [--log-dir DIR]

Runs the property-based heap fuzzer of tests/prop_heap.rs (random
malloc/calloc/realloc/reallocarray/memalign/posix_memalign/aligned_alloc/
free sequences, frees from other threads, usable sizes, the checked API,
invalid requests, every block verified against a model) far longer than
\`make test\` does, in release mode, and reports the result.

A run is one or more rounds; a round is one \`cargo test --release --test
prop_heap\` with the counts below and its own random seed. Cases run in a
child process (proptest's fork mode), so a crash, an abort by CMA or an
assertion failure is shrunk to a minimal operation sequence, printed, and
its seed appended to proptest-regressions/prop_heap*.txt, which every later
\`cargo test\` replays first: commit that file with the fix.

Options:
  --cases N          single-thread cases per round (default $cases)
  --ops N            most operations per single-thread case (default $ops)
  --thread-cases N   four-thread cases per round (default: cases / 8)
  --thread-ops N     most operations per thread and case (default $thread_ops)
  --duration TIME    start new rounds until TIME has passed (a round is not
                     cut short); default: one round. TIME is seconds, or a
                     number with s, m or h
  --seed N           PROPTEST_RNG_SEED of the first round (then N+1, ...):
                     repeats a run exactly (default: random, printed)
  --only WHICH       run only the "single" or the "threads" property
  --no-fork          run cases in the test process: a little faster, but a
                     crash then ends the round without a shrunk case
  --timeout TIME     count a round running longer than TIME as hung and
                     stop it (default: none)
  --log-dir DIR      where each round's full output goes
                     (default: target/fuzz-long)
  -h, --help         this text

With the defaults a round takes about 40 minutes on 2 cores (about 0.1 s per
single-thread case of up to 1000 operations, 0.15 s per four-thread case of
up to 500 operations per thread).

The environment reaches the test: CMA_SECURE=1 $prog fuzzes secure mode.
A hang is only caught with --timeout (the cases have no time limit).

Exit status: 0 when every round passed, 1 when a property failed (its
minimal case is printed), 2 on a hang (--timeout), 3 on a usage or build
error.

Examples:
  $prog                                  # one round, defaults
  $prog --cases 2000 --duration 8h       # rounds of 2000 cases for 8 hours
  $prog --cases 500 --ops 200 --only threads
EOF
}

die() {
    echo "$prog: $*" >&2
    exit 3
}

# Seconds from TIME: N, Ns, Nm or Nh.
seconds() {
    case $1 in
        *[!0-9smh]* | "" | [smh]*) die "bad time: $1" ;;
        *h) echo $((${1%h} * 3600)) ;;
        *m) echo $((${1%m} * 60)) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}

number() {
    [[ $2 =~ ^[0-9]+$ ]] || die "$1 needs a number, not '$2'"
    echo "$2"
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --cases) cases=$(number "$1" "${2-}"); shift 2 ;;
        --ops) ops=$(number "$1" "${2-}"); shift 2 ;;
        --thread-cases) thread_cases=$(number "$1" "${2-}"); shift 2 ;;
        --thread-ops) thread_ops=$(number "$1" "${2-}"); shift 2 ;;
        --duration) duration=$(seconds "${2-}"); shift 2 ;;
        --seed) seed=$(number "$1" "${2-}"); shift 2 ;;
        --only)
            case ${2-} in
                single) only=single_thread_heap_model ;;
                threads) only=four_thread_heap_models ;;
                *) die "--only takes single or threads" ;;
            esac
            shift 2 ;;
        --no-fork) fork=false; shift ;;
        --timeout) round_timeout=$(seconds "${2-}"); shift 2 ;;
        --log-dir) log_dir=${2-}; [[ -n $log_dir ]] || die "--log-dir needs a directory"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

[[ $cases -ge 1 && $ops -ge 1 && $thread_ops -ge 1 ]] || die "counts must be at least 1"
thread_cases=${thread_cases:-$(( cases / 8 > 0 ? cases / 8 : 1 ))}
if [[ -z $seed ]]; then
    seed=$(od -An -N7 -tu8 /dev/urandom | tr -d ' ')
fi

cd "$root"
mkdir -p "$log_dir"
echo "$prog: building the test (release)"
cargo test --release --test prop_heap --no-run >"$log_dir/build.log" 2>&1 || {
    tail -n 30 "$log_dir/build.log" >&2
    die "build failed (full output: $log_dir/build.log)"
}
# Every round runs a copy of this binary (from the package root, where the
# regressions files live), whatever is rebuilt meanwhile.
test_bin=$(sed -n 's/^ *Executable tests\/prop_heap\.rs (\(.*\))$/\1/p' "$log_dir/build.log" | tail -n 1)
[[ -n $test_bin && -x $test_bin ]] || die "no test binary named in $log_dir/build.log"
cp "$test_bin" "$log_dir/prop_heap"
test_bin=$log_dir/prop_heap

what=${only:-both properties}
echo "$prog: $test_bin: $what; single-thread: $cases cases of up to $ops operations;" \
    "four-thread: $thread_cases cases of up to $thread_ops operations per thread;" \
    "fork: $fork"

start=$(date +%s)
round=0
total_cases=0
status=0
while :; do
    round=$((round + 1))
    round_seed=$((seed + round - 1))
    log=$log_dir/$(date +%Y%m%d-%H%M%S)-round$round-seed$round_seed.log
    echo "$prog: round $round, seed $round_seed, log $log"
    round_start=$(date +%s)
    cmd=("$test_bin" --nocapture --test-threads 1)
    # Only the properties (not the binary's other tests).
if [[ -n $only ]]; then
    cmd+=(--exact "$only")
else
    cmd+=(--exact single_thread_heap_model four_thread_heap_models)
fi
    [[ -n $round_timeout ]] && cmd=(timeout -k 30 "$round_timeout" "${cmd[@]}")
    rc=0
    PROPTEST_CASES=$cases PROP_HEAP_OPS=$ops \
        PROP_HEAP_THREAD_CASES=$thread_cases PROP_HEAP_THREAD_OPS=$thread_ops \
        PROPTEST_RNG_SEED=$round_seed PROPTEST_FORK=$fork \
        "${cmd[@]}" >"$log" 2>&1 || rc=$?
    elapsed=$(($(date +%s) - round_start))
    grep -E "^(single_thread_heap_model|four_thread_heap_models): done" "$log" |
        sed "s/^/  /" || true
    if [[ $rc -eq 0 ]]; then
        echo "  round $round passed in ${elapsed}s"
        case $only in
            single_thread_heap_model) total_cases=$((total_cases + cases)) ;;
            four_thread_heap_models) total_cases=$((total_cases + thread_cases)) ;;
            *) total_cases=$((total_cases + cases + thread_cases)) ;;
        esac
    elif [[ -n $round_timeout && ( $rc -eq 124 || $rc -eq 137 ) ]]; then
        echo "  round $round HUNG: stopped after ${round_timeout}s (seed $round_seed, log $log)"
        status=2
        break
    else
        echo "  round $round FAILED after ${elapsed}s (exit $rc); from $log:"
        # CMA's own diagnostics (a crash in a child shows only there).
        grep '^cma:' "$log" | tail -n 3 | sed "s/^/  | /" || true
        if grep -q "its seed is saved in" "$log"; then
            # The harness's report: what failed and the minimal case.
            awk '/panicked at tests\/prop_heap\.rs/ { buf = ""; on = 1 }
                 on { buf = buf "  | " $0 "\n" }
                 /its seed is saved in/ { on = 0 }
                 END { printf "%s", buf }' "$log"
            echo "  Replay: cargo test --release --test prop_heap (the saved seeds in" \
                "proptest-regressions/ run first); commit that file with the fix."
        else
            tail -n 20 "$log" | sed "s/^/  | /"
            echo "  Nothing was shrunk or saved (a crash without fork mode, a stopped run or" \
                "a harness error): repeat with --seed $round_seed and the same counts, in fork mode."
        fi
        status=1
        break
    fi
    if (($(date +%s) - start >= duration)); then
        break
    fi
done

total=$(($(date +%s) - start))
if [[ $status -eq 0 ]]; then
    echo "$prog: PASSED: $round round(s), $total_cases cases, ${total}s"
else
    echo "$prog: FAILED in round $round after ${total}s ($total_cases cases passed before)"
fi
exit $status
}

main "$@"
