#!/usr/bin/env bash
# preload-smoke.sh: run real programs (python3, git, gcc, sqlite3, perl,
# make -j2) under scripts/cma-run and compare them with a run under glibc's
# malloc. See --help.
set -euo pipefail

prog=${0##*/}
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
smoke_dir=$here/smoke
cma_run=$here/cma-run

all_workloads=(python3 git gcc sqlite3 perl make)
# Functions the allocator must interpose (glibc's manual, "Replacing malloc").
required_syms=(malloc free calloc realloc posix_memalign aligned_alloc memalign valloc malloc_usable_size)

usage() {
    cat <<EOF
Usage: $prog [--lib PATH] [--timeout SEC] [--only NAME[,NAME...]] [--keep] [--no-deps]

Checks that the allocator, preloaded with scripts/cma-run, is really in
effect (mapped into preloaded processes and their children, and binding
malloc, free, ...), then runs each workload twice, each time in a fresh
temporary directory: once with glibc's malloc and once under cma-run. A
workload fails on any difference in stdout or stderr, on a non-zero exit
status, on a signal and on a timeout.

Workloads: preload ${all_workloads[*]}
Scripts of the workloads: $smoke_dir/

Options:
  --lib PATH       library to preload (default: what cma-run finds: \$CMA_LIB,
                   PREFIX/lib/libcma.so, target/release/libcma.so)
  --timeout SEC    limit for each run (default 120)
  --only LIST      run only these workloads (comma-separated)
  --keep           keep the temporary directory (kept anyway on failure)
  --no-deps        do not run install-deps.sh; only check that tools exist
  -h, --help       show this help

Exit status: 0 all passed, 1 a workload failed, 2 setup error.
Environment variables CMA_* are passed to the preloaded runs.
EOF
}

die() {
    printf '%s: error: %s\n' "$prog" "$1" >&2
    exit 2
}

lib_arg=
limit=120
only=
keep=0
deps=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --lib) [[ $# -ge 2 ]] || die "--lib needs a path"; lib_arg=$2; shift ;;
        --lib=*) lib_arg=${1#*=} ;;
        --timeout) [[ $# -ge 2 ]] || die "--timeout needs seconds"; limit=$2; shift ;;
        --timeout=*) limit=${1#*=} ;;
        --only) [[ $# -ge 2 ]] || die "--only needs a list"; only=$2; shift ;;
        --only=*) only=${1#*=} ;;
        --keep) keep=1 ;;
        --no-deps) deps=0 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done
[[ $limit =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive number of seconds"

selected=(preload "${all_workloads[@]}")
if [[ -n $only ]]; then
    IFS=, read -r -a selected <<<"$only"
    for w in "${selected[@]}"; do
        [[ $w == preload || -f $smoke_dir/$w.sh ]] || die "unknown workload '$w' (have: preload ${all_workloads[*]})"
    done
fi

if [[ -n $lib_arg && ! -f $lib_arg ]]; then die "--lib $lib_arg: no such file"; fi

# Tools.
if [[ $deps -eq 1 ]]; then
    "$here/install-deps.sh" --no-cargo || die "installing dependencies failed"
else
    "$here/install-deps.sh" --check --no-cargo >/dev/null || die "tools are missing; run $here/install-deps.sh"
fi

# The library.
if [[ -n $lib_arg ]]; then
    CMA_LIB=$(readlink -f -- "$lib_arg")
    export CMA_LIB
fi
lib=$("$cma_run" --print-lib) || die "no library to test (see above); use --lib PATH"

# No core dumps from crashing runs.
ulimit -c 0

work=$(mktemp -d "${TMPDIR:-/tmp}/cma-smoke.XXXXXX")
keep_work=$keep
bg_pid=
cleanup() {
    if [[ -n $bg_pid ]]; then kill "$bg_pid" 2>/dev/null || true; fi
    if [[ $keep_work -eq 0 ]]; then rm -rf -- "$work"; fi
}
trap cleanup EXIT

# Environment of every run: nothing from the caller's environment leaks in
# (GIT_DIR, LD_PRELOAD, locale, ...), except PATH, pyenv's variables, and
# CMA_* (allocator settings, and CMA_LIB for cma-run).
base_env=(PATH="$PATH" LC_ALL=C LANG=C TZ=UTC TERM=dumb SMOKE_LIB="$lib" SMOKE_DIR="$smoke_dir")
for v in PYENV_ROOT PYENV_VERSION; do
    if [[ -n ${!v:-} ]]; then base_env+=("$v=${!v}"); fi
done
while IFS= read -r v; do
    base_env+=("$v=${!v}")
done < <(compgen -e | grep '^CMA_' || true)

passed=0
failed=0
failed_names=()

now() { printf '%s' "${EPOCHREALTIME/[.,]/}"; }  # microseconds
secs() { printf '%d.%d' $(($1 / 1000000)) $(($1 % 1000000 / 100000)); }

# describe_status RC [ELAPSED_US]: human-readable exit status of a run under
# timeout (124: timed out; 137 after the limit: killed by timeout -k).
describe_status() {
    local rc=$1 us=${2:-0}
    if [[ $rc -eq 124 ]] || [[ $rc -eq 137 && $us -ge $((limit * 1000000)) ]]; then
        printf 'timed out after %ss (status %d)' "$limit" "$rc"
    elif [[ $rc -gt 128 ]]; then
        printf 'killed by SIG%s (status %d)' "$(kill -l $((rc - 128)) 2>/dev/null || echo "?")" "$rc"
    else
        printf 'exit status %d' "$rc"
    fi
}

show_file() { # LABEL FILE: the last 40 lines of FILE, indented
    local lines
    lines=$(wc -l <"$2")
    printf '  --- %s (%s, %d lines%s) ---\n' "$1" "$2" "$lines" "$([[ $lines -gt 40 ]] && echo ', last 40 shown')"
    tail -n 40 -- "$2" | sed 's/^/  | /'
}

fail() { # NAME REASON
    failed=$((failed + 1))
    failed_names+=("$1")
    keep_work=1
    printf 'FAIL %s: %s\n' "$1" "$2"
}

# ---------------------------------------------------------------------------
# preload: is the library mapped into preloaded processes, and does it bind
# the malloc family?
check_preload() {
    local dir=$work/preload problems=()
    mkdir -p "$dir"
    # 1. A preloaded sleep (cma-run execs it, so $! is sleep once exec'ed).
    local sleep_bin
    sleep_bin=$(readlink -f -- "$(command -v sleep)")
    env -i "${base_env[@]}" HOME="$dir" "$cma_run" sleep 60 </dev/null >"$dir/sleep.out" 2>"$dir/sleep.err" &
    bg_pid=$!
    local i exe=
    for ((i = 0; i < 100; i++)); do
        exe=$(readlink -f "/proc/$bg_pid/exe" 2>/dev/null || true)
        [[ $exe == "$sleep_bin" ]] && break
        sleep 0.05
    done
    if [[ $exe != "$sleep_bin" ]]; then
        problems+=("the preloaded sleep did not start (see $dir/sleep.err)")
    elif ! grep -qF -- "$lib" "/proc/$bg_pid/maps"; then
        problems+=("$lib is not mapped into a preloaded sleep process")
    fi
    kill "$bg_pid" 2>/dev/null || true
    wait "$bg_pid" 2>/dev/null || true
    bg_pid=

    # 2. A child of a preloaded shell inherits it; a baseline process has not.
    local n
    n=$(env -i "${base_env[@]}" HOME="$dir" "$cma_run" sh -c 'cat /proc/self/maps' </dev/null 2>"$dir/child.err" | grep -cF -- "$lib" || true)
    [[ $n -gt 0 ]] || problems+=("$lib is not mapped into a child of a preloaded shell")
    n=$(env -i "${base_env[@]}" HOME="$dir" sh -c 'cat /proc/self/maps' </dev/null | grep -cF -- "$lib" || true)
    [[ $n -eq 0 ]] || problems+=("$lib is mapped into a process that was not preloaded (is it preloaded globally?)")

    # 3. The malloc family binds to the library.
    if ! gcc -O2 -o "$dir/interpose" "$smoke_dir/interpose.c" -ldl 2>"$dir/gcc.err"; then
        problems+=("compiling interpose.c failed: $(head -n 3 "$dir/gcc.err")")
    else
        local rc=0
        env -i "${base_env[@]}" HOME="$dir" timeout -k 5 "$limit" "$cma_run" "$dir/interpose" \
            </dev/null >"$dir/interpose.out" 2>"$dir/interpose.err" || rc=$?
        if [[ $rc -ne 0 ]]; then
            problems+=("the interpose check program under cma-run: $(describe_status "$rc"): $(head -n 5 "$dir/interpose.err")")
        fi
        local sym file missing=()
        for sym in "${required_syms[@]}"; do
            file=$(sed -n "s/^$sym //p" "$dir/interpose.out")
            if [[ -z $file || $file == - || $(readlink -f -- "$file") != "$lib" ]]; then
                missing+=("$sym${file:+ (from $file)}")
            fi
        done
        [[ ${#missing[@]} -eq 0 ]] || problems+=("not interposed by $lib: ${missing[*]}")
        file=$(sed -n 's/^pvalloc //p' "$dir/interpose.out")
        if [[ $rc -eq 0 && $(readlink -f -- "$file" 2>/dev/null) != "$lib" ]]; then
            printf 'note: pvalloc is not interposed (it comes from %s)\n' "$file"
        fi
        # Baseline: without the preload, malloc is glibc's.
        env -i "${base_env[@]}" HOME="$dir" "$dir/interpose" </dev/null >"$dir/interpose-glibc.out" 2>&1 || true
        file=$(sed -n 's/^malloc //p' "$dir/interpose-glibc.out")
        [[ $file == *libc.so* ]] || problems+=("without the preload, malloc comes from '$file', not libc")
    fi

    if [[ ${#problems[@]} -eq 0 ]]; then
        passed=$((passed + 1))
        printf 'PASS preload (mapped into preloaded processes and their children; binds %s)\n' "${required_syms[*]}"
    else
        fail preload "the preload is not in effect"
        printf '  - %s\n' "${problems[@]}"
    fi
}

# ---------------------------------------------------------------------------
# run_once NAME MODE: runs workload NAME in a fresh directory $work/NAME/run
# (the same path in both modes, so that paths in the output agree), then
# moves the directory to $work/NAME/MODE. Sets run_rc and run_us.
run_once() {
    local name=$1 mode=$2 base=$work/$1
    local dir=$base/run tmp=$base/tmp
    mkdir -p "$dir" "$tmp"
    local -a cmd=(env -i "${base_env[@]}" HOME="$dir" TMPDIR="$tmp" SMOKE_MODE="$mode")
    if [[ $mode == preload ]]; then cmd+=("$cma_run"); fi
    cmd+=(bash "$smoke_dir/$name.sh")
    local t0
    t0=$(now)
    run_rc=0
    (cd "$dir" && exec timeout -k 10 "$limit" "${cmd[@]}") </dev/null >"$base/$mode.out" 2>"$base/$mode.err" || run_rc=$?
    run_us=$(($(now) - t0))
    mv -- "$dir" "$base/$mode"
    rm -rf -- "$tmp"
}

run_workload() {
    local name=$1 base=$work/$1
    mkdir -p "$base"
    run_once "$name" glibc
    local g_rc=$run_rc g_us=$run_us
    run_once "$name" preload
    local p_rc=$run_rc p_us=$run_us
    local times
    times="glibc $(secs "$g_us")s, preload $(secs "$p_us")s"

    if [[ $p_rc -ne 0 ]]; then
        fail "$name" "preloaded run: $(describe_status "$p_rc" "$p_us") ($times)"
        show_file "stderr of the preloaded run" "$base/preload.err"
        [[ $g_rc -eq 0 ]] || printf '  (the glibc run failed too: %s)\n' "$(describe_status "$g_rc" "$g_us")"
        return
    fi
    if [[ $g_rc -ne 0 ]]; then
        fail "$name" "glibc baseline run: $(describe_status "$g_rc" "$g_us") -- a broken workload or machine, not the allocator ($times)"
        show_file "stderr of the glibc run" "$base/glibc.err"
        return
    fi
    local what=()
    cmp -s "$base/glibc.out" "$base/preload.out" || what+=(stdout)
    cmp -s "$base/glibc.err" "$base/preload.err" || what+=(stderr)
    if [[ ${#what[@]} -gt 0 ]]; then
        fail "$name" "${what[*]} differs from the glibc run ($times)"
        local s
        for s in "${what[@]}"; do
            local f=out
            [[ $s == stderr ]] && f=err
            printf '  --- diff of %s: glibc (-) vs preload (+), first 40 lines ---\n' "$s"
            diff -u --label glibc --label preload "$base/glibc.$f" "$base/preload.$f" | sed -n '1,40s/^/  | /p' || true
        done
        show_file "stderr of the preloaded run" "$base/preload.err"
        return
    fi
    if [[ ! -s $base/glibc.out ]]; then
        fail "$name" "the workload printed nothing, so there was nothing to compare"
        return
    fi
    passed=$((passed + 1))
    printf 'PASS %s (%s)\n' "$name" "$times"
}

printf '%s: preloading %s; each run limited to %ss; work dir %s\n' "$prog" "$lib" "$limit" "$work"
start=$(now)
for w in "${selected[@]}"; do
    if [[ $w == preload ]]; then
        check_preload
    else
        run_workload "$w"
    fi
done

total=$(secs $(($(now) - start)))
if [[ $failed -gt 0 ]]; then
    printf '%s: failed: %s; outputs kept in %s\n' "$prog" "${failed_names[*]}" "$work"
elif [[ $keep -eq 1 ]]; then
    printf '%s: outputs kept in %s\n' "$prog" "$work"
fi
printf '%s: %ss in all, preloading %s\n' "$prog" "$total" "$lib"
printf 'smoke: %d passed, %d failed\n' "$passed" "$failed"
[[ $failed -eq 0 ]]
