#!/usr/bin/env bash
# Compare how glibc, jemalloc, mimalloc, tcmalloc and CMA handle heap misuse.
#
#   scripts/misuse-compare.sh                 run, print the table (~30 s)
#   scripts/misuse-compare.sh --docs          the same, and write docs/MISUSE.md
#   scripts/misuse-compare.sh --only 'free.*' [--runs N]   some cases; N runs each
#   scripts/misuse-compare.sh --help
#
# Installs what is missing through scripts/install-deps.sh (among them
# Debian's libjemalloc2, libmimalloc2.0, libtcmalloc-minimal4, gcc,
# python3), builds c_tests/faults/fault.c as
# c_tests/faults/run.sh builds fault.plain, into c_tests/build/misuse/, and
# runs its cases of kind abort that run in the default mode (not the
# secure-only ones), without --threads, under glibc (no preload), jemalloc,
# mimalloc, tcmalloc and CMA (target/release/libcma.so or $CMA_LIB, from
# `make lib`) with LD_PRELOAD: N times each (default 3), two runs at a time,
# each under `timeout 10` in a clean environment (env -i PATH=...
# LIBC_FATAL_STDERR_=1). A run is
#   caught   killed by SIGABRT (or SIGILL/SIGTRAP) with a message on stderr
#   crashed  killed by a signal without one (SIGSEGV, SIGBUS, a bare abort)
#   silent   exited 0 with nothing on stderr: the misuse returned and
#            fault.c printed NOT DETECTED
#   hung     still running after 10 s
#   n/a      cannot run there: free_sized (C23) is CMA's only; under glibc a
#            glibc block is not another allocator's
#   other    anything else, e.g. died before the misuse (no "pointer" line
#            on stdout), a warning without a stop: listed as a problem
# A case counts as caught only if every run caught it; one whose runs
# differ counts as "varied". Prints a table (rows: groups of cases; cells:
# caught/cases plus the other outcomes) and the problems, and writes every
# run to c_tests/build/misuse/results.tsv (logs in its logs/).
#
# Exit status: 0 when CMA caught every case with the expected diagnostic
# and no run was "other"; 1 otherwise; 2 on usage or setup errors.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ARGS="$*"
BUILD="$ROOT/c_tests/build/misuse"
LOGS="$BUILD/logs"
PROG="$BUILD/fault.plain"
LIBDIR=/usr/lib/x86_64-linux-gnu
CMA_LIB="${CMA_LIB:-$ROOT/target/release/libcma.so}"
CC="${CC:-cc}"
CFLAGS=(-O2 -g -Wall -Wextra -Werror -pthread -D_GNU_SOURCE -I"$ROOT/include" -I"$ROOT/c_tests"
    -I"$ROOT/c_tests/faults")
JOBS=2 RUNS=3 docs=0 only='*'

usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case $1 in
    --docs) docs=1; shift ;;
    --only) [ $# -ge 2 ] || usage; only=$2; shift 2 ;;
    --runs) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || usage; RUNS=$2; shift 2 ;;
    -h | --help) usage ;;
    *) echo "misuse-compare.sh: unknown argument: $1" >&2; usage ;;
    esac
done
[ "$docs" = 0 ] || [ "$only" = '*' ] || { echo "misuse-compare.sh: --docs runs every case (no --only)" >&2; exit 2; }

# ---- prerequisites -------------------------------------------------------
"$ROOT/scripts/install-deps.sh" --no-cargo
[ -f "$CMA_LIB" ] || { echo "misuse-compare.sh: $CMA_LIB is missing (make lib)" >&2; exit 2; }
CMA_LIB="$(cd "$(dirname "$CMA_LIB")" && pwd)/$(basename "$CMA_LIB")"
# name=library to preload (empty: none)
ALLOCS=(glibc= "jemalloc=$LIBDIR/libjemalloc.so.2" "mimalloc=$LIBDIR/libmimalloc.so.2"
    "tcmalloc=$LIBDIR/libtcmalloc_minimal.so.4" "cma=$CMA_LIB")

# ---- build ---------------------------------------------------------------
mkdir -p "$LOGS" && rm -f "$LOGS"/*
echo "== building $PROG: $CC ${CFLAGS[*]}"
"$CC" "${CFLAGS[@]}" "$ROOT/c_tests/faults/fault.c" -o "$PROG"
# Each preload must be in effect (ld.so lists what it would map).
for entry in "${ALLOCS[@]}"; do
    lib=${entry#*=}
    [ -z "$lib" ] || LD_TRACE_LOADED_OBJECTS=1 LD_PRELOAD="$lib" "$PROG" | grep -F "$lib" >/dev/null ||
        { echo "misuse-compare.sh: LD_PRELOAD=$lib does not load" >&2; exit 2; }
done

# ---- run -------------------------------------------------------------------
"$PROG" --list >"$BUILD/list"
cases=()
while IFS='|' read -r name kind modes _; do
    # shellcheck disable=SC2254
    case $name in $only) ;; *) continue ;; esac
    [ "$kind" = abort ] && [ "$modes" != secure ] && cases+=("$name")
done <"$BUILD/list"
[ "${#cases[@]}" -gt 0 ] || { echo "misuse-compare.sh: no case matches $only" >&2; exit 2; }

# run_one ALLOC LIB CASE RUN: one run; stdout, stderr and status in LOGS/.
run_one() {
    local base="$LOGS/$1.$3.$4" cmd=(env -i "PATH=$PATH" LIBC_FATAL_STDERR_=1) rc=0
    [ -z "$2" ] || cmd+=("LD_PRELOAD=$2")
    # The braces' 2>/dev/null silences bash's own "Segmentation fault" notice.
    { timeout -k 2 10 "${cmd[@]}" "$PROG" "$3" >"$base.out" 2>"$base.err" || rc=$?; } 2>/dev/null
    echo "$rc" >"$base.rc"
}

ulimit -c 0 # no core files (nor timeout's "dumped core" line on stderr)
echo "== ${#cases[@]} cases x ${#ALLOCS[@]} allocators x $RUNS runs, $JOBS at a time"
started=$SECONDS running=0
for run in $(seq "$RUNS"); do
    for c in "${cases[@]}"; do
        for entry in "${ALLOCS[@]}"; do
            run_one "${entry%%=*}" "${entry#*=}" "$c" "$run" &
            running=$((running + 1))
            [ "$running" -lt "$JOBS" ] || { wait -n || true; running=$((running - 1)); }
        done
    done
done
wait
echo "== runs done in $((SECONDS - started)) s"

# ---- report ------------------------------------------------------------------
printf '%s\n' "${cases[@]}" >"$BUILD/cases" && printf '%s\n' "${ALLOCS[@]}" >"$BUILD/allocators"
export ROOT BUILD LOGS RUNS DOCS=$docs BUILD_CMD="$CC ${CFLAGS[*]/#-I$ROOT\//-I}" \
    COMMAND="scripts/misuse-compare.sh${ARGS:+ $ARGS}"
exec python3 - <<'PY'
import collections, datetime, hashlib, os, re, signal, subprocess
E = os.environ
ROOT, BUILD, LOGS, RUNS = E["ROOT"], E["BUILD"], E["LOGS"], int(E["RUNS"])
sh = lambda c: subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
read = lambda p: open(p, errors="replace").read()
cases, allocs = read(f"{BUILD}/cases").split(), dict(l.split("=", 1) for l in read(f"{BUILD}/allocators").splitlines())
names = list(allocs)
expect = {l.split("|")[0]: l.split("|")[3:5] for l in read(f"{BUILD}/list").splitlines()}
GROUPS = [  # row label, regular expression matched at the start of the case name
    ("free: stack pointer", r"free\.stack$"), ("free: static data", r"free\.static$"), ("free: page from mmap", r"free\.mmap$"),
    ("free/realloc/malloc_usable_size: a glibc block", r"(free|realloc|malloc_usable_size)\.glibc$"),
    ("free: interior pointer, small/medium", r"free\.interior\w*\.(small|medium)$"),
    ("free: interior pointer, large/huge", r"free\.interior\w*\.(large|huge)$"), ("free: misaligned pointer", r"free\.misaligned"),
    ("double free, small/medium", r"free\.freed(_then_churn)?\.(small|medium)$"), ("double free, large/huge", r"free\.freed\.(large|huge)$"),
    ("double free across threads", r"free\.(freed_by_other_thread|other_thread_frees_freed)\."),
    ("realloc: stack/static/mmap pointer", r"realloc\.(stack|static|mmap)$"),
    ("realloc: interior/misaligned pointer", r"realloc\.(interior|misaligned)"), ("realloc of a freed block", r"realloc\.freed\."),
    ("malloc_usable_size: stack/static/mmap", r"malloc_usable_size\.(stack|static|mmap)$"),
    ("malloc_usable_size: interior/misaligned", r"malloc_usable_size\.(interior|misaligned)"),
    ("malloc_usable_size of a freed block", r"malloc_usable_size\.freed\."), ("free_sized (C23): all of the above", r"free_sized\."),
    ("use-after-free write, then mallocs", r"malloc\.uaf_(junk|first_byte|zeros)(_then_frees)?\."),
    ("use-after-free write, block in another thread's cache/inbox", r"malloc\.uaf_junk_(foreign|inbox)"),
]
group = lambda c: next((g for g, rx in GROUPS if re.match(rx, c)), "other cases")
CMA_RE = r"^cma: (\w+)\(\): (.+) \(pointer 0x[0-9a-f]+, thread \d+\)$"
FATAL = {128 + s for s in (signal.SIGABRT, signal.SIGILL, signal.SIGTRAP)}
runs, outcome, detail, problems, failures = [], {}, {}, [], []
def note(msg, fails=False):  # failures: CMA's misses and "other" runs
    problems.append(msg)
    if fails: failures.append(msg)
for c in cases:
    for a in names:
        seen = []
        for i in range(1, RUNS + 1):
            b = f"{LOGS}/{a}.{c}.{i}"
            rc, out, err = int(read(b + ".rc")), read(b + ".out"), read(b + ".err").strip()
            line = err.splitlines()[0] if err else ""
            how = f"signal {signal.Signals(rc - 128).name}" if rc > 128 and rc not in (124, 137) else f"exit {rc}"
            if rc in (124, 137): o = "hung"
            elif rc == 2 and re.search(r"SETUP FAILED: (free_sized is not CMA|malloc resolves to glibc)", out):
                o, line = "n/a", out.split("SETUP FAILED: ")[1].splitlines()[0]
            elif rc > 128 and not re.search(r"^pointer 0x", out, re.M): o, line = "other", f"died before the misuse: {line}"
            elif rc == 0 and "NOT DETECTED" in out and not err: o = "silent"
            elif rc in FATAL and err: o = "caught"
            elif rc > 128: o = "crashed"
            else: o, line = "other", (line or (out.strip().splitlines() or [""])[-1])
            if o == "other": note(f"{a} {c} run {i}: {how}: {line!r} (logs: {b}.*)", True)
            if a == "cma" and o == "caught":
                m, (call, reason) = re.match(CMA_RE, line), expect[c]
                if not m or m[1] not in call.split("/") or m[2] != reason or len(err.splitlines()) != 1:
                    note(f"cma {c} run {i}: wrong diagnostic {err!r}, want {call}(): {reason}", True)
            seen.append(o)
            runs.append((c, group(c), a, str(i), o, how, line))
        outcome[c, a] = detail[c, a] = seen[0] if len(set(seen)) == 1 else "varied"
        if outcome[c, a] == "varied":
            detail[c, a] = "varied: " + ", ".join(f"{o} {k}x" for o, k in collections.Counter(seen).items())
            note(f"{a} {c}: runs differ ({detail[c, a][8:]})")
        if a == "cma" and outcome[c, a] != "caught":
            note(f"cma {c}: not caught in every run ({', '.join(seen)})", True)
with open(f"{BUILD}/results.tsv", "w") as f:
    f.write("case\tgroup\tallocator\trun\toutcome\tstatus\tstderr (first line) or why\n")
    f.writelines("\t".join(r) + "\n" for r in runs)
common = [c for c in cases if all(outcome[c, a] != "n/a" for a in names)]
def cell(cs, a):
    n = collections.Counter(outcome[c, a] for c in cs)
    if n["n/a"] == len(cs): return "n/a"
    return f"{n['caught']}/{len(cs) - n['n/a']}" + "".join(
        f" {k[0]}{n[k]}" for k in ("crashed", "silent", "hung", "varied", "other") if n[k])
table = [["misuse (cases)"] + names]
for g in [g for g, _ in GROUPS + [("other cases", "")]]:
    cs = [c for c in cases if group(c) == g]
    if cs: table.append([f"{g} ({len(cs)})"] + [cell(cs, a) for a in names])
table.append([f"total ({len(cases)})"] + [cell(cases, a) for a in names])
table.append([f"total, the cases all can run ({len(common)})"] + [cell(common, a) for a in names])
w = [max(len(r[i]) for r in table) for i in range(len(names) + 1)]
LEGEND = (f"cells: cases caught in every run ({RUNS} per case) / cases run; c crashed, s silent, h hung, "
          "v varied from run to run, o other; n/a: cannot run there")
print("\n".join("  ".join(x.ljust(w[i]) for i, x in enumerate(r)) for r in [table[0], ["-" * x for x in w]] + table[1:]))
print(f"{LEGEND}\nevery run: {BUILD}/results.tsv")
for p in problems: print("NOTE:", p)
if E["DOCS"] == "1":
    norm = lambda s: re.sub(r"thread \d+", "thread N", re.sub(r"0x[0-9a-f]+", "0x…", s))
    ver = lambda p: sh(f"dpkg-query -W -f='${{Version}}' {p}") or "?"
    pk = {"glibc": "libc6", "jemalloc": "libjemalloc2", "mimalloc": "libmimalloc2.0", "tcmalloc": "libtcmalloc-minimal4"}
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    osn = next((l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release") if l.startswith("PRETTY_NAME")), "?")
    git = sh(f"git -C {ROOT} log -1 --format='%h %s'") + (" (working tree has local changes)" if sh(f"git -C {ROOT} status --porcelain") else "")
    L = ["# Heap misuse: CMA and its peers", "", "Generated by `scripts/misuse-compare.sh --docs`; do not edit by hand.", "",
         "## Run", "", f"- Command: `{E['COMMAND']}`", f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
         f"- Machine: {os.cpu_count()} CPUs, {cpu}; kernel {os.uname().release}; {osn}", f"- Repository: {git}",
         f"- Program: `c_tests/faults/fault.c` built as `c_tests/faults/run.sh` builds fault.plain (`{E['BUILD_CMD']}`); its "
         f"{len(cases)} cases of kind abort that run in the default mode, without `--threads`, {RUNS} times each under each "
         "allocator, each run under `timeout 10` in a clean environment (`env -i PATH=... LIBC_FATAL_STDERR_=1`: every "
         "allocator with its default settings; glibc's fatal messages go to stderr rather than the terminal)", "- Allocators:"]
    for a in names:
        L.append(f"  - **{a}**: " + (f"Debian {pk[a]} {ver(pk[a])}, " if a in pk else "")
                 + (f"LD_PRELOAD={allocs[a].removeprefix(ROOT + '/')}" if allocs[a] else "no preload")
                 + (f" (sha256 {hashlib.sha256(open(allocs[a], 'rb').read()).hexdigest()[:16]}…)" if a == "cma" else ""))
    L += ["", "## Results", "", LEGEND + ".", "", "| " + " | ".join(table[0]) + " |", "|---" + "|---:" * len(names) + "|"]
    L += ["| " + " | ".join(r) + " |" for r in table[1:]] + ["", "<details><summary>Each case (see `fault --list` and "
          "fault.c; every run, with its status and message: c_tests/build/misuse/results.tsv)</summary>", "",
          "| case | " + " | ".join(names) + " |", "|---" + "|---" * len(names) + "|"]
    L += [f"| {c} | " + " | ".join(detail[c, a] for a in names) + " |" for c in cases] + ["", "</details>", "",
          "## Outcomes", "",
          "- **caught**: killed by SIGABRT (SIGILL or SIGTRAP would count too) after the allocator printed a message on "
          "stderr (fault.c writes nothing there): the misuse was reported and stopped. Any message counts; the messages are "
          "listed below, to judge how precise they are.",
          "- **crashed** (c): killed by a signal without a message (SIGSEGV, SIGBUS, or a bare abort), after the misuse: "
          "it did damage, but nothing says what or where.",
          "- **silent** (s): the misuse returned (free, realloc and malloc_usable_size returned; after a use-after-free "
          "write, 1000 mallocs of the block's size class returned) and fault.c printed `NOT DETECTED` and exited 0, "
          "with nothing on stderr: the heap may be corrupt, and the program goes on.",
          "- **hung** (h): still running after 10 s. **varied** (v): the runs of the case did not all end the same way (see "
          "Notes). Where a wild pointer lands depends on the address-space layout (ASLR): such outcomes can also change from "
          "one invocation of the script to the next.",
          "- **other** (o): anything else: died before the misuse, an unexpected exit status, a message without a stop (see Notes).",
          "- **n/a**: cannot run there: none of the peers has `free_sized` (C23; glibc 2.36 lacks it), and under glibc a "
          "glibc block is not another allocator's block.", "", "## What each allocator printed", ""]
    for a in names:
        got = [r for r in runs if r[2] == a and r[3] == "1" and r[4] == "caught"]
        msgs = collections.Counter(norm(r[6]) for r in got)
        L.append(f"- **{a}**: " + (f"for example (`{got[0][0]}`): `{got[0][6]}`. The messages of the {len(got)} cases it caught (run 1): "
                 + "; ".join(f"`{m}` ×{k}" for m, k in msgs.most_common()) if got else "caught nothing"))
    L += ["", "## Notes", ""] + [f"- {p}" for p in problems]
    if not any(p.startswith("cma ") for p in problems): L.append("- CMA caught every case, in every run, with the expected diagnostic.")
    open(f"{ROOT}/docs/MISUSE.md", "w").write("\n".join(L) + "\n")
    print(f"wrote {ROOT}/docs/MISUSE.md")
raise SystemExit(1 if failures else 0)
PY
