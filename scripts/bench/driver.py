#!/usr/bin/env python3
"""CMA benchmark driver: runs the suite under each allocator, interleaved,
checks checksums, and writes the report.  Started by scripts/bench.sh, which
installs the prerequisites and builds benches/build/ first; see
`scripts/bench.sh --help`.

Standard library only (Python 3.8+).
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "benches" / "build"
RUNNER = BUILD / "runner"
LIBDIR = "/usr/lib/x86_64-linux-gnu"

# name -> (library to preload or None, Debian package)
PEERS = {
    "glibc": (None, "libc6"),
    "jemalloc": (f"{LIBDIR}/libjemalloc.so.2", "libjemalloc2"),
    "mimalloc": (f"{LIBDIR}/libmimalloc.so.2", "libmimalloc2.0"),
    "tcmalloc": (f"{LIBDIR}/libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
}
ALL_ALLOCS = ["glibc", "jemalloc", "mimalloc", "tcmalloc", "cma"]

MARK_BEGIN = "<!-- BEGIN fastpath-callgrind (scripts/fastpath-callgrind.sh) -->"
MARK_END = "<!-- END fastpath-callgrind -->"
VAR_BEGIN = "<!-- BEGIN variants -->"
VAR_END = "<!-- END variants -->"


class Bench:
    def __init__(self, name, kind, threads, scale, quick_scale, what, extra=None, runs=None):
        self.name = name
        self.kind = kind  # "time" or "mem"
        self.threads = threads
        self.scale = scale
        self.quick_scale = quick_scale
        self.what = what
        self.extra = extra or (lambda opts: [])
        self.runs = runs  # None: --runs; else a function of the options


SUITE = [
    Bench("churn", "time", [1], 1.0, 0.25,
          "single thread, 8..512 B skewed small, random frees in a working set"),
    Bench("larson", "time", [1, 2, 8], 1.0, 0.25,
          "server: 8 connections of live blocks move between threads every round"),
    Bench("prodcons", "time", [1, 2, 8], 1.0, 0.25,
          "THREADS producer/consumer pairs; every free is cross-thread"),
    Bench("realloc_chain", "time", [1], 1.0, 0.25,
          "realloc growth 1 B..1 MiB bytewise/steps/chunks, and shrinking"),
    Bench("threads_churn", "time", [1, 2, 8], 1.0, 0.25,
          "2000 short-lived threads, THREADS at a time, 3000 blocks each"),
    Bench("false_sharing", "time", [1, 2, 8], 1.0, 0.25,
          "cache-scratch: objects dealt out by main, rewritten by workers"),
    Bench("fragment", "time", [1], 1.0, 0.25,
          "lifetimes short/medium/long, 16 B..64 KiB (+ rare 2 MiB); watch peak RSS"),
    Bench("aligned", "time", [1], 1.0, 0.25,
          "posix_memalign/aligned_alloc, alignment 16..4096, random frees"),
    Bench("mem_release", "mem", [1], 1.0, 0.25,
          "1 GiB in 64 KiB blocks, free all, sleep; then malloc_trim(0)",
          extra=lambda o: [str(o.release_sleep)]),
    Bench("mem_phase", "mem", [1], 1.0, 0.25,
          "2M nodes 16..128 B, free 90% at random, then 200..1000 B objects"),
    Bench("mem_threads", "mem", [8], 1.0, 0.25,
          "200 threads, 8 at a time, 4 MiB each, 10% survive the thread"),
    Bench("mem_steady", "mem", [2], 1.0, 1.0,
          "server loop with constant live data (~64 MiB), RSS sampled every second",
          extra=lambda o: [str(o.steady_seconds)], runs=lambda o: o.steady_runs),
]
BENCHES = {b.name: b for b in SUITE}

# Labels of the named points the memory benches print.
POINT_LABELS = {
    "rss_kb.start": "start",
    "rss_kb.peak": "peak",
    "rss_kb.after_free": "after free+sleep",
    "rss_kb.after_trim": "after malloc_trim",
    "rss_kb.build": "build",
    "rss_kb.free": "free 90%",
    "rss_kb.reuse": "reuse",
    "rss_kb.end": "end",
    "rss_kb.threads_done": "threads done",
    "rss_kb.warm": "after warm-up",
    "rss_kb.last": "last",
    "rss_kb.growth": "growth",
    "rss_kb.max": "max",
    "live_kb.build": "live (build)",
    "live_kb.reuse": "live (reuse)",
    "live_kb.survivors": "live survivors",
    "live_kb.mean": "live (mean)",
    "live_kb.peak": "live (peak)",
    "ops_per_s": "ops/s",
}


# Diagnostic "key: value" lines shown in the per-benchmark tables.
DIAGNOSTICS = {
    "shared_objs": "objects sharing a cache line with another thread's",
}


def log(msg=""):
    print(msg, flush=True)


def loud(msg):
    bar = "!" * 78
    print(f"\n{bar}\n!! {msg}\n{bar}\n", flush=True)


# --------------------------------------------------------------------------
# Running one benchmark process
# --------------------------------------------------------------------------

def run_once(exe, args, lib, timeout, extra_env=None):
    """Runs exe (through the runner, with LD_PRELOAD=lib for exe only, and
    extra_env on top of ours); returns a dict with the parsed output, wall
    time and peak RSS."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env.update(extra_env or {})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(mode="r", prefix="runner-", suffix=".txt") as rep:
        proc = subprocess.Popen([str(RUNNER), rep.name, lib or "-", str(exe)] + [str(a) for a in args],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        try:
            proc.wait(timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        if timed_out:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        report = dict(line.split(None, 1) for line in rep.read().splitlines() if " " in line)

    r = {"wall_s": num(report.get("wall_s")), "cpu_s": num(report.get("cpu_s")),
         "maxrss_kb": int(report.get("maxrss_kb", 0)),
         "stderr": stderr[-2000:]}
    if timed_out:
        r["status"] = f"timeout after {timeout:.0f} s"
    elif "signal" in report:
        sig = int(report["signal"])
        try:
            r["status"] = f"crash: {signal.Signals(sig).name}"
        except ValueError:
            r["status"] = f"crash: signal {sig}"
    elif "exit" not in report:
        r["status"] = f"failed: runner exit {proc.returncode}"
    elif report["exit"] == "3":
        r["status"] = "WRONG: contents did not read back"
    elif report["exit"] != "0":
        r["status"] = f"failed: exit {report['exit']}"
    else:
        r["status"] = "ok"
    kv, samples = {}, []
    for line in stdout.splitlines():
        m = re.match(r"^([A-Za-z_][\w.]*): (.*)$", line)
        if not m:
            continue
        key, val = m.group(1), m.group(2).strip()
        if key == "sample":
            parts = val.split()
            if len(parts) == 3:
                samples.append([float(parts[0]), int(parts[1]), int(parts[2])])
            continue
        kv[key] = val
    r["kv"] = kv
    if samples:
        r["samples"] = samples
    if r["status"] == "ok":
        for need in ("checksum", "elapsed_s"):
            if need not in kv:
                r["status"] = f"failed: no '{need}' in output"
    return r


# --------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------

def cma_candidate(opts):
    if opts.no_cma:
        return None, "CMA left out (--no-cma)"
    path = Path(opts.cma or os.environ.get("CMA_LIB") or ROOT / "target/release/libcma.so")
    if not path.exists():
        return None, f"CMA library not found at {path} (build it with `cargo build --release`, or set CMA_LIB)"
    return snapshot_lib(path, BUILD / "libcma-snapshot.so")


def snapshot_lib(path, snap, env=None):
    """Copies a CMA library to snap and smoke-tests the copy (with env);
    returns (snap, description) or (None, why not)."""
    # Snapshot it: a rebuild by someone else during the run must not mix versions.
    shutil.copy2(path, snap)
    digest = hashlib.sha256(snap.read_bytes()).hexdigest()[:16]
    mtime = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S")
    smoke = run_once(BUILD / "churn", [1, 0.01], str(snap), 30, env)
    desc = f"{rel(path)} (sha256 {digest}…, built {mtime}; the run used a copy)"
    if smoke["status"] != "ok" and not smoke["status"].startswith("WRONG"):
        # (a library that returns wrong memory stays in, so the run fails loudly)
        why = smoke["status"]
        tail = smoke["stderr"].strip().splitlines()[-3:]
        return None, (f"CMA library at {path} failed its smoke test (churn 1 0.01): {why}"
                      + (f" -- stderr: {' | '.join(tail)}" if tail else ""))
    return str(snap), desc


def parse_variants(spec):
    """NAME=LIBPATH[+VAR=VALUE...],... -> {name: {"lib": path, "env": {var: value}}}."""
    variants = {}
    for item in (x.strip() for x in (spec or "").split(",")):
        if not item:
            continue
        name, _, rest = item.partition("=")
        path, *assigns = rest.split("+")
        if not re.fullmatch(r"[\w.-]+", name) or name in ALL_ALLOCS or name in variants or not path:
            sys.exit(f"--variants: bad or duplicate entry {item!r} (NAME=LIBPATH[+VAR=VALUE...], "
                     f"NAME not one of {', '.join(ALL_ALLOCS)})")
        env = {}
        for a in assigns:
            var, eq, value = a.partition("=")
            if not eq or not re.fullmatch(r"[A-Za-z_]\w*", var):
                sys.exit(f"--variants: bad VAR=VALUE {a!r} in {item!r}")
            env[var] = value
        variants[name] = {"lib": path, "env": env}
    return variants


def plan(opts):
    names = [b.name for b in SUITE]
    if opts.only:
        want = [n.strip() for n in opts.only.split(",") if n.strip()]
        bad = [n for n in want if n not in BENCHES]
        if bad:
            sys.exit(f"unknown bench(es): {', '.join(bad)}; known: {', '.join(names)}")
        names = [n for n in names if n in want]
    jobs = []
    for n in names:
        b = BENCHES[n]
        scale = b.quick_scale if opts.quick else b.scale
        scale *= opts.scale
        runs = b.runs(opts) if b.runs else opts.runs
        for t in b.threads:
            jobs.append((b, t, [t, f"{scale:g}"] + b.extra(opts), runs))
    return jobs


def run_suite(opts, allocs, libs, out_dir, envs=None):
    jobs = plan(opts)
    total = sum(r * len(allocs) for _, _, _, r in jobs)
    log(f"{len(jobs)} bench configurations x {len(allocs)} allocators, {total} runs in all")
    runs = []
    raw = open(out_dir / "runs.jsonl", "w")
    done = 0
    t_start = time.monotonic()
    timeouts = {}  # allocator -> number of configurations where it timed out
    for b, t, args, nrep in jobs:
        timeout = opts.timeout + (opts.steady_seconds if b.name == "mem_steady" else 0)
        # allocator -> status of its first failure in this config; an allocator
        # that timed out in 2 configurations is not run again (a hang costs minutes)
        dead = {a: "skipped: timed out in 2 earlier configurations" for a, n in timeouts.items() if n >= 2}
        for a, st in dead.items():
            runs.append({"alloc": a, "bench": b.name, "threads": t, "args": [str(x) for x in args],
                         "rep": 0, "status": st, "kv": {}, "maxrss_kb": 0, "stderr": ""})
        line = f"{b.name:14s} t={t:<2d}"
        for rep in range(nrep):
            k = rep % len(allocs)
            order = allocs[k:] + allocs[:k]
            for a in order:
                done += 1
                if a in dead:
                    continue
                r = run_once(BUILD / b.name, args, libs[a], timeout, (envs or {}).get(a))
                r.update(alloc=a, bench=b.name, threads=t, args=[str(x) for x in args], rep=rep)
                raw.write(json.dumps(r) + "\n")
                raw.flush()
                runs.append(r)
                if r["status"] != "ok":
                    dead[a] = r["status"]
                    if r["status"].startswith("timeout"):
                        timeouts[a] = timeouts.get(a, 0) + 1
                    loud(f"{b.name} t={t} under {a}: {r['status']}\n!! {r['stderr'].strip()[-400:]}")
            elapsed = time.monotonic() - t_start
            eta = elapsed / done * (total - done) if done else 0
            status = f"{line} rep {rep + 1}/{nrep}   [{done}/{total} runs, {elapsed:5.0f} s, ~{eta:4.0f} s left]"
            if sys.stdout.isatty():
                print("\r" + status, end="", flush=True)
            elif rep == nrep - 1:
                print(status, flush=True)
        if sys.stdout.isatty():
            print(flush=True)
    raw.close()
    return runs


# --------------------------------------------------------------------------
# Aggregation and checks
# --------------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def geomean(xs):
    xs = [x for x in xs if x is not None and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def bench_of(key):
    return key[0]


def aggregate(runs):
    """(bench, threads) -> alloc -> summary dict."""
    groups = {}
    for r in runs:
        groups.setdefault((r["bench"], r["threads"]), {}).setdefault(r["alloc"], []).append(r)
    agg = {}
    for key, by_alloc in groups.items():
        agg[key] = {}
        for a, rs in by_alloc.items():
            ok = [r for r in rs if r["status"] == "ok"]
            bad = [r["status"] for r in rs if r["status"] != "ok"]
            s = {"n": len(ok), "failures": bad, "args": rs[0]["args"]}
            if ok:
                if bench_of(key) == "mem_steady":
                    # fixed duration: its "time" is seconds per million replacements
                    el = [1e6 / num(r["kv"]["ops_per_s"]) if num(r["kv"].get("ops_per_s")) else None
                          for r in ok]
                    el = [x for x in el if x is not None] or [0.0]
                else:
                    el = [num(r["kv"].get("elapsed_s")) for r in ok]
                s["time"] = med(el)
                s["spread"] = (max(el) - min(el)) / s["time"] if s["time"] else 0
                s["maxrss_kb"] = med([r["maxrss_kb"] for r in ok])
                s["cpu"] = med([r.get("cpu_s") for r in ok])
                s["checksums"] = sorted({r["kv"].get("checksum") for r in ok})
                s["misaligned"] = max(int(r["kv"].get("misaligned", 0)) for r in ok)
                points = {}
                for r in ok:
                    for k, v in r["kv"].items():
                        if k.startswith(("rss_kb.", "live_kb.")) or k == "ops_per_s":
                            points.setdefault(k, []).append(num(v))
                s["points"] = {k: med(v) for k, v in points.items()}
                s["strings"] = {k: v for k, v in ok[0]["kv"].items() if k in DIAGNOSTICS or k == "trim_from"}
                withs = [r for r in ok if r.get("samples")]
                if withs:
                    s["samples"] = withs[len(withs) // 2]["samples"]
            agg[key][a] = s
    return agg


def check_checksums(agg):
    """Returns a list of problems (strings). Every allocator must print one and
    the same checksum for the same bench and arguments."""
    problems = []
    for (bench, t), by_alloc in agg.items():
        seen = {}
        for a, s in by_alloc.items():
            for c in s.get("checksums", []):
                seen.setdefault(c, []).append(a)
            if len(s.get("checksums", [])) > 1:
                problems.append(f"{bench} t={t}: {a} printed different checksums across runs: "
                                f"{', '.join(s['checksums'])}")
        if len(seen) > 1:
            desc = "; ".join(f"{c}: {', '.join(sorted(set(v)))}" for c, v in seen.items())
            problems.append(f"{bench} t={t}: CHECKSUM MISMATCH between allocators -- {desc}")
            # the reference is glibc's checksum (else the most common one); the
            # others' numbers are not shown as results
            ref = by_alloc.get("glibc", {}).get("checksums") or [max(seen, key=lambda c: len(seen[c]))]
            for a, s in by_alloc.items():
                if s.get("checksums") and s["checksums"] != ref[:1]:
                    s["n"] = 0
                    s["failures"] = ["WRONG: checksum differs"] + s["failures"]
                    for k in ("time", "maxrss_kb", "cpu", "points", "samples"):
                        s.pop(k, None)
    return problems


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def fmt_ratio(x):
    return "–" if x is None else f"{x:.2f}"


def fmt_mib(kb):
    return "–" if kb is None else f"{kb / 1024:.1f}"


def fmt_time(s):
    if s is None:
        return "–"
    return f"{s:.3f}" if s < 10 else f"{s:.2f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def cell_status(s):
    if not s:
        return "not run"
    if s.get("n"):
        return None
    return s["failures"][0] if s.get("failures") else "not run"


def md_table(header, rows, align=None):
    align = align or (["l"] + ["r"] * (len(header) - 1))
    sep = ["---:" if x == "r" else ":---" for x in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def config_order(agg):
    order = []
    for b in SUITE:
        for t in b.threads:
            if (b.name, t) in agg:
                order.append((b.name, t))
    return order


def run_lines(meta):
    return [
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['date']}; wall time of the run: {meta['duration_s'] / 60:.1f} min",
        f"- Machine: {meta['nproc']} CPUs, {meta['cpu']}, {meta['mem']}; kernel {meta['kernel']}; {meta['os']}",
        f"- Load average at start / end: {meta['load_start']} / {meta['load_end']} "
        "(the machine is shared: other jobs add noise)",
        f"- Compiler: {meta['cc']}; benches built with `{meta['cflags']}`",
        f"- Repository: {meta['git']}",
    ]


def build_report(agg, allocs, meta, problems, notes):
    L = []
    cfgs = config_order(agg)
    time_cfgs = [c for c in cfgs if BENCHES[c[0]].kind == "time"]
    mem_cfgs = [c for c in cfgs if BENCHES[c[0]].kind == "mem"]

    L.append("# CMA benchmarks\n")
    L.append("Generated by `scripts/bench.sh`; do not edit by hand (the fastpath section at the end "
             "is written by `scripts/fastpath-callgrind.sh`).\n")
    if meta.get("quick") or meta.get("only"):
        L.append("> **Partial run** (" + ", ".join(x for x in [
            "--quick: smaller scale" if meta.get("quick") else "",
            f"--only {meta['only']}" if meta.get("only") else ""] if x)
                 + "): indicative only.\n")
    L.append("## Run\n")
    L.extend(run_lines(meta))
    L.append("- Allocators:")
    for a in ALL_ALLOCS:
        if a in meta["alloc_desc"]:
            L.append(f"  - **{a}**: {meta['alloc_desc'][a]}")
    L.append(f"- Runs per configuration: {meta['runs']} (median shown), allocators interleaved "
             "run by run, order rotated every repetition; mem_steady: "
             f"{meta['steady_runs']} run(s) of {meta['steady_seconds']:g} s")
    L.append("")

    if meta.get("cma_note"):
        L.append(f"> **CMA: not measured.** {meta['cma_note']}\n")
    if problems:
        L.append("## PROBLEMS\n")
        for p in problems:
            L.append(f"- **{p}**")
        L.append("")
    if notes:
        L.append("## Notes on this run\n")
        for n in notes:
            L.append(f"- {n}")
        L.append("")

    # ---- summary
    L.append("## Summary\n")
    L.append("Geometric means of the per-configuration ratios (lower is better; 1.00 = equal). "
             f"Time: over the time benchmarks ({len(time_cfgs)} configurations). Peak RSS: over "
             f"all {len(cfgs)} configurations, memory benchmarks included.\n")
    incomplete = [c for c in cfgs if not all(agg[c].get(a, {}).get("n") for a in allocs)]
    if incomplete:
        L.append("Geometric means are taken over the configurations that **every** allocator "
                 "completed, so that they compare like with like; left out: "
                 + ", ".join(f"{b} t={t}" for b, t in incomplete) + ".\n")
    rows = []
    for a in allocs:
        tg = geomean([ratio(agg[c].get(a, {}).get("time"), agg[c].get("glibc", {}).get("time"))
                      for c in time_cfgs if c not in incomplete])
        tm = geomean([ratio(agg[c].get(a, {}).get("time"), agg[c].get("mimalloc", {}).get("time"))
                      for c in time_cfgs if c not in incomplete])
        rg = geomean([ratio(agg[c].get(a, {}).get("maxrss_kb"), agg[c].get("glibc", {}).get("maxrss_kb"))
                      for c in cfgs if c not in incomplete])
        rm = geomean([ratio(agg[c].get(a, {}).get("maxrss_kb"), agg[c].get("mimalloc", {}).get("maxrss_kb"))
                      for c in cfgs if c not in incomplete])
        cg = geomean([ratio(agg[c].get(a, {}).get("cpu"), agg[c].get("glibc", {}).get("cpu"))
                      for c in time_cfgs if c not in incomplete])
        n_ok = sum(1 for c in cfgs if agg[c].get(a, {}).get("n"))
        rows.append([f"**{a}**", fmt_ratio(tg), fmt_ratio(tm), fmt_ratio(rg), fmt_ratio(rm), fmt_ratio(cg),
                     f"{n_ok}/{len(cfgs)}"])
    L.append(md_table(["allocator", "time ×glibc", "time ×mimalloc", "peak RSS ×glibc",
                       "peak RSS ×mimalloc", "CPU time ×glibc", "configs measured"], rows))
    L.append("\nCPU time (user + system of the whole process, from wait4) is a cross-check: on a loaded "
             "machine it moves less than wall time, but it counts spinning and misses waiting.\n")
    L.append("")

    # ---- matrices
    def matrix(title, metric, base, cfg_list):
        L.append(f"### {title}\n")
        hdr = ["bench", "threads"] + [a for a in allocs]
        rows = []
        for c in cfg_list:
            g = agg[c].get(base, {}).get(metric)
            vals = {a: ratio(agg[c].get(a, {}).get(metric), g) for a in allocs}
            best = min((v for v in vals.values() if v is not None), default=None)
            row = [c[0], str(c[1])]
            for a in allocs:
                v = vals[a]
                if v is None:
                    row.append(cell_status(agg[c].get(a)) or "–")
                else:
                    txt = fmt_ratio(v)
                    row.append(f"**{txt}**" if best is not None and v == best and len(allocs) > 1 else txt)
            rows.append(row)
        g_row = ["**geomean**", "*" if any(c in incomplete for c in cfg_list) else ""]
        for a in allocs:
            g_row.append(fmt_ratio(geomean([ratio(agg[c].get(a, {}).get(metric), agg[c].get(base, {}).get(metric))
                                            for c in cfg_list if c not in incomplete])))
        rows.append(g_row)
        L.append(md_table(hdr, rows, ["l", "r"] + ["r"] * len(allocs)))
        L.append("")

    if time_cfgs:
        matrix("Time, ratio to glibc (lower is better; best in bold)", "time", "glibc", time_cfgs)
    if "mimalloc" in allocs and time_cfgs:
        matrix("Time, ratio to mimalloc", "time", "mimalloc", time_cfgs)
    matrix("Peak RSS, ratio to glibc", "maxrss_kb", "glibc", cfgs)
    if "mimalloc" in allocs:
        matrix("Peak RSS, ratio to mimalloc", "maxrss_kb", "mimalloc", cfgs)

    L.append("![time and peak RSS ratios to glibc](bench.svg)\n")

    # ---- per bench
    L.append("## Per benchmark\n")
    L.append("Median wall time of the measured part (as the program reports it) and peak RSS "
             "(wait4's ru_maxrss of the whole process), with their ratios to glibc and to "
             "mimalloc. ± is the spread of the time over the runs, (max − min) / median. CPU s: "
             "user + system time of the whole process (median).\n")
    for c in cfgs:
        b = BENCHES[c[0]]
        s_any = next((s for s in agg[c].values() if s.get("args")), {})
        L.append(f"### {c[0]}, {c[1]} thread{'s' if c[1] != 1 else ''}\n")
        L.append(f"{b.what}. Arguments: `{' '.join(s_any.get('args', []))}`."
                 + (" Its time is seconds per million replacements (the run has a fixed duration)."
                    if c[0] == "mem_steady" else "") + "\n")
        g = agg[c].get("glibc", {})
        m = agg[c].get("mimalloc", {})
        diag = [k for k in DIAGNOSTICS if any(k in agg[c].get(a, {}).get("strings", {}) for a in allocs)]
        rows = []
        for a in allocs:
            s = agg[c].get(a, {})
            st = cell_status(s)
            if st:
                rows.append([f"**{a}**", st, "", "", "", "", "", "", ""] + [""] * len(diag))
                continue
            rows.append([
                f"**{a}**", fmt_time(s["time"]), f"{100 * s['spread']:.0f}%",
                fmt_ratio(ratio(s["time"], g.get("time"))), fmt_ratio(ratio(s["time"], m.get("time"))),
                fmt_mib(s["maxrss_kb"]),
                fmt_ratio(ratio(s["maxrss_kb"], g.get("maxrss_kb"))),
                fmt_ratio(ratio(s["maxrss_kb"], m.get("maxrss_kb"))),
                fmt_time(s.get("cpu")),
            ] + [s.get("strings", {}).get(k, "–") for k in diag])
        L.append(md_table(["allocator", "time s", "±", "×glibc", "×mimalloc", "peak RSS MiB", "×glibc",
                           "×mimalloc", "CPU s"] + [DIAGNOSTICS[k] for k in diag], rows))
        L.append("")

    # ---- memory benches
    if mem_cfgs or ("fragment", 1) in agg:
        L.append("## Memory benchmarks: RSS at named points\n")
        L.append("VmRSS read by the program itself at the points named (MiB; medians over the runs). "
                 "\"live\" is what the program holds (requested bytes).\n")
    for c in mem_cfgs + [x for x in cfgs if x[0] == "fragment"]:
        keys = []
        for a in allocs:
            for k in agg[c].get(a, {}).get("points", {}):
                if k not in keys and k != "rss_kb.start":
                    keys.append(k)
        if not keys:
            continue
        L.append(f"### {c[0]} ({c[1]} thread{'s' if c[1] != 1 else ''})\n")
        L.append(f"{BENCHES[c[0]].what}.\n")
        show_time = c[0] != "mem_steady"  # fixed duration: ops/s says it
        hdr = ["allocator"] + [POINT_LABELS.get(k, k) for k in keys] + ["peak RSS"] + (["time s"] if show_time else [])
        rows = []
        for a in allocs:
            s = agg[c].get(a, {})
            st = cell_status(s)
            if st:
                rows.append([f"**{a}**", st] + [""] * (len(hdr) - 2))
                continue
            row = [f"**{a}**"]
            for k in keys:
                v = s["points"].get(k)
                if k == "ops_per_s":
                    row.append("–" if v is None else f"{v / 1e6:.2f} M")
                elif k == "rss_kb.after_trim" and v is not None and v < 0:
                    row.append("n/a")
                else:
                    row.append(fmt_mib(v))
            row += [fmt_mib(s["maxrss_kb"])] + ([fmt_time(s["time"])] if show_time else [])
            rows.append(row)
        L.append(md_table(hdr, rows))
        L.append("")
        if c[0] in ("mem_release", "mem_threads"):
            tf = {a: agg[c].get(a, {}).get("strings", {}).get("trim_from") for a in allocs}
            tf = {a: v for a, v in tf.items() if v}
            if tf:
                L.append("malloc_trim came from: " + ", ".join(f"{a}: `{v}`" for a, v in tf.items())
                         + " (a preloaded allocator without its own malloc_trim leaves glibc's, which "
                         "trims glibc's idle heap, not the allocator's).\n")
        if c[0] == "mem_steady":
            samp = {a: agg[c].get(a, {}).get("samples") for a in allocs}
            samp = {a: v for a, v in samp.items() if v}
            if samp:
                n = max(len(v) for v in samp.values())
                step = max(1, math.ceil(n / 12))
                idx = list(range(step - 1, n, step))
                if n - 1 not in idx:
                    idx.append(n - 1)
                hdr = ["RSS MiB at t (s)"] + [str(int(next(iter(samp.values()))[i][0])) if i < len(next(iter(samp.values()))) else "?" for i in idx]
                rows = []
                for a, v in samp.items():
                    rows.append([f"**{a}**"] + [fmt_mib(v[i][1]) if i < len(v) else "–" for i in idx])
                L.append(md_table(hdr, rows))
                L.append("")

    # ---- how to read
    L.append("## How to read these numbers\n")
    L.append("""- Every ratio compares two allocators measured in the same run, interleaved run by run
  (glibc, jemalloc, mimalloc, tcmalloc, CMA, then the same rotated by one, ...), and takes
  medians; absolute times move with the load of this shared 2-core machine, the ratios much
  less. Differences under ~5-10% are within the noise; the ± column shows how much the runs
  of one cell disagreed.
- Time is the program's own measurement of its timed part (no process start-up or exit);
  for `mem_steady`, which runs for a fixed time, it is seconds per million replacements.
  Peak RSS is the whole process's maximum resident set (wait4's ru_maxrss), so it includes
  the program's own bookkeeping, identical for every allocator. CPU time (user + system,
  whole process) is shown as a cross-check that moves less with the machine's load.
- `false_sharing` also shows how many of the workers' objects shared a cache line with
  another worker's: that count does not depend on timing, while the time penalty of the
  sharing needs both cores free at once, which a loaded machine seldom gives.
- Thread counts 1, 2 and 8 on a 2-core machine: 8 is deliberately oversubscribed (threads
  are preempted while holding locks or caches).
- Every program writes data into its blocks and reads it back; the checksum of what it
  read must be the same under every allocator, so an allocator that returned overlapping
  or wrong memory cannot win a row (bench.sh fails on a mismatch).
- Benchmarks (`benches/*.c`; each file's head comment says what it does and prints):""")
    for b in SUITE:
        L.append(f"  - `{b.name}` (threads {', '.join(map(str, b.threads))}): {b.what}.")
    L.append("""- The memory benchmarks read VmRSS from /proc/self/status at the named points:
  `mem_release` after a sleep in which the program calls nothing (what the allocator gives
  back on its own, e.g. by decay), then after `malloc_trim(0)`; `mem_phase` after each phase;
  `mem_threads` once the threads are gone; `mem_steady` every second with the growth after
  the warm-up (a quarter of the run).
- Re-run: `scripts/bench.sh` (full, ~10-15 min), `scripts/bench.sh --quick` (~3 min),
  `scripts/bench.sh --only larson,aligned`. See `scripts/bench.sh --help`.
""")
    return "\n".join(L)


def variants_report(agg, variants, meta):
    """The "CMA variants" section (without its markers): each variant's time
    and peak RSS as ratios to cma's in the same run."""
    names = [v for v, d in variants.items() if d["measured"]]
    cfgs = config_order(agg)
    time_cfgs = [c for c in cfgs if BENCHES[c[0]].kind == "time"]
    incomplete = [c for c in cfgs if not all(agg[c].get(a, {}).get("n") for a in ["cma"] + names)]

    def r(c, a, metric):
        return ratio(agg[c].get(a, {}).get(metric), agg[c].get("cma", {}).get(metric))

    def gm(a, metric, cfg_list):
        return geomean([r(c, a, metric) for c in cfg_list if c not in incomplete])

    L = ["## CMA variants\n"]
    L.append("Builds and settings of CMA run as extra allocators (`--variants`), interleaved run by run "
             "with the others (same rotation, medians, checksum checks). Every ratio is to `cma` in the "
             "same run (lower is better; 1.00 = equal). Written by `scripts/bench-variants.sh --docs` "
             "(or a `scripts/bench.sh --variants ...` run: see the command); other `scripts/bench.sh` "
             "runs keep it as it is.\n")
    L.extend(run_lines(meta))
    L.append(f"- Runs per configuration: {meta['runs']} (median shown)"
             + ("; --quick: smaller scale, indicative only" if meta.get("quick") else ""))
    L.append("- Libraries:")
    L.append(f"  - **cma**: {meta['alloc_desc'].get('cma') or 'not measured: ' + str(meta.get('cma_note'))}")
    for v, d in variants.items():
        env = " ".join(f"{k}={x}" for k, x in d["env"].items())
        L.append(f"  - **{v}**: " + (d["desc"] if d["measured"] else f"not measured: {d['desc']}")
                 + (f"; its runs only with `{env}`" if env else ""))
    L.append("")
    if not names:
        return "\n".join(L)

    L.append(f"Geometric means of the ratios: time over the time benchmarks ({len(time_cfgs)} "
             f"configurations), peak RSS over all {len(cfgs)}. **cma time ×variant** is the inverse: "
             "for a variant that leaves work out, what that work costs (1.03 = 3% slower with it).\n")
    if incomplete:
        L.append("Taken over the configurations that cma and every variant completed; left out: "
                 + ", ".join(f"{b} t={t}" for b, t in incomplete) + ".\n")
    rows = []
    for v in names:
        tg = gm(v, "time", time_cfgs)
        n_ok = sum(1 for c in cfgs if agg[c].get(v, {}).get("n"))
        rows.append([f"**{v}**", fmt_ratio(tg), fmt_ratio(1 / tg if tg else None),
                     fmt_ratio(gm(v, "maxrss_kb", cfgs)), fmt_ratio(gm(v, "cpu", time_cfgs)),
                     f"{n_ok}/{len(cfgs)}"])
    L.append(md_table(["variant", "time ×cma", "cma time ×variant", "peak RSS ×cma", "CPU time ×cma",
                       "configs measured"], rows))
    L.append("")

    L.append("Per configuration: cma's median time and peak RSS, each variant's as a ratio to them; "
             "± is the spread of one cell's runs, (max − min) / median.\n")
    hdr = ["bench", "threads", "cma time s", "±"]
    hdr += [x for v in names for x in (f"{v} time ×cma", "±")]
    hdr += ["cma peak RSS MiB"] + [f"{v} peak RSS ×cma" for v in names]
    rows = []
    for c in cfgs:
        s = agg[c].get("cma", {})
        row = [c[0], str(c[1])]
        row += [cell_status(s), ""] if cell_status(s) else [fmt_time(s["time"]), f"{100 * s['spread']:.0f}%"]
        for v in names:
            sv = agg[c].get(v, {})
            row += [cell_status(sv), ""] if cell_status(sv) else [fmt_ratio(r(c, v, "time")),
                                                                  f"{100 * sv['spread']:.0f}%"]
        row.append(fmt_mib(s.get("maxrss_kb")))
        row += [cell_status(agg[c].get(v)) or fmt_ratio(r(c, v, "maxrss_kb")) for v in names]
        rows.append(row)
    g_row = ["**geomean**", "*" if incomplete else "", "", ""]
    g_row += [x for v in names for x in (fmt_ratio(gm(v, "time", time_cfgs)), "")]
    g_row += [""] + [fmt_ratio(gm(v, "maxrss_kb", cfgs)) for v in names]
    rows.append(g_row)
    L.append(md_table(hdr, rows))
    L.append("")
    return "\n".join(L)


def splice_sections(new_text, old_path):
    """Keeps the sections other scripts write into an existing report: the
    variants one (unless this run has its own), then the fastpath-callgrind one."""
    old = old_path.read_text() if old_path.exists() else ""
    for begin, end in ((VAR_BEGIN, VAR_END), (MARK_BEGIN, MARK_END)):
        i, j = old.find(begin), old.find(end)
        if i >= 0 and j >= 0 and begin not in new_text:
            new_text = new_text.rstrip() + "\n\n" + old[i:j + len(end)] + "\n"
    return new_text


def gnuplot_chart(agg, allocs, out_svg, work_dir, title_note):
    cfgs = config_order(agg)
    others = [a for a in allocs if a != "glibc"]
    if not others or "glibc" not in allocs or not shutil.which("gnuplot"):
        return False
    colors = {"jemalloc": "#d95f02", "mimalloc": "#1b9e77", "tcmalloc": "#7570b3", "cma": "#e7298a"}
    data = work_dir / "chart.dat"
    labels = []
    with open(data, "w") as f:
        f.write("# x  " + "  ".join(f"{a}_time {a}_rss" for a in others) + "\n")
        for i, c in enumerate(cfgs):
            labels.append((i, f"{c[0]} {c[1]}t" if len(BENCHES[c[0]].threads) > 1 or c[1] != 1 else c[0]))
            vals = []
            for a in others:
                for metric in ("time", "maxrss_kb"):
                    v = ratio(agg[c].get(a, {}).get(metric), agg[c].get("glibc", {}).get(metric))
                    vals.append("NaN" if v is None else f"{v:.4f}")
            f.write(f"{i} " + " ".join(vals) + "\n")
    n_time = sum(1 for c in cfgs if BENCHES[c[0]].kind == "time")
    w = 0.8 / len(others)
    xt = ", ".join(f'"{lab}" {i}' for i, lab in labels)
    plots_t, plots_r = [], []
    for k, a in enumerate(others):
        off = -0.4 + w * (k + 0.5)
        col_t, col_r = 2 + 2 * k, 3 + 2 * k
        style = f'lc rgb "{colors.get(a, "#666666")}"'
        # boxes from 1.0 to the ratio: up = slower/bigger than glibc, down = faster/smaller
        plots_t.append(f'"{data}" using ($1+{off}):(1):($1+{off}-{w / 2}):($1+{off}+{w / 2}):'
                       f'(${col_t}<1?${col_t}:1):(${col_t}<1?1:${col_t}) with boxxyerrorbars '
                       f'fs solid 0.85 noborder {style} title "{a}"')
        plots_r.append(f'"{data}" using ($1+{off}):(1):($1+{off}-{w / 2}):($1+{off}+{w / 2}):'
                       f'(${col_r}<1?${col_r}:1):(${col_r}<1?1:${col_r}) with boxxyerrorbars '
                       f'fs solid 0.85 noborder {style} notitle')
    sep = f"set arrow from {n_time - 0.5}, graph 0 to {n_time - 0.5}, graph 1 nohead dt 2 lc rgb '#888888'" if 0 < n_time < len(cfgs) else ""
    script = f"""
set terminal svg size 1400,900 dynamic noenhanced font "Helvetica,12" background rgb "white"
set output "{out_svg}"
set multiplot layout 2,1 title "CMA benchmarks: ratio to glibc (log scale; below 1 = better than glibc){title_note}"
set logscale y 2
set grid ytics lc rgb "#dddddd"
set xrange [-0.6:{len(cfgs) - 0.4}]
set xtics ({xt}) rotate by 35 right font ",10"
set key outside right top
set lmargin 10
set rmargin 18
set style fill solid 0.85 noborder
{sep}
set title "time (memory benchmarks right of the dashed line)"
set ylabel "time / glibc time"
set yrange [*:*]
plot {", ".join(plots_t)}, 1 with lines lc rgb "black" lw 1.5 title "glibc"
set title "peak RSS"
set ylabel "peak RSS / glibc peak RSS"
plot {", ".join(plots_r)}, 1 with lines lc rgb "black" lw 1.5 notitle
unset multiplot
"""
    gp = work_dir / "chart.gp"
    gp.write_text(script)
    # a PNG preview beside it (not copied to docs/)
    png = script.replace("set terminal svg size 1400,900 dynamic noenhanced", "set terminal pngcairo size 1400,900 noenhanced")
    png = png.replace(f'set output "{out_svg}"', f'set output "{work_dir / "bench-preview.png"}"')
    (work_dir / "chart-png.gp").write_text(png)
    subprocess.run(["gnuplot", str(work_dir / "chart-png.gp")], capture_output=True, text=True)
    r = subprocess.run(["gnuplot", str(gp)], capture_output=True, text=True)
    if r.returncode != 0:
        log(f"gnuplot failed: {r.stderr.strip()[-500:]}")
        return False
    return True


def rel(path):
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def machine_meta():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass
    os_name = "?"
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem": mem,
        "kernel": os.uname().release,
        "os": os_name,
        "cc": sh("cc --version | head -1"),
        "git": sh(f"git -C {ROOT} log -1 --format='%h %s' 2>/dev/null")
               + (" (working tree has local changes)" if sh(f"git -C {ROOT} status --porcelain 2>/dev/null") else ""),
    }


def loadavg():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def pkg_version(pkg):
    return sh(f"dpkg-query -W -f='${{Version}}' {pkg} 2>/dev/null") or "?"


def main():
    ap = argparse.ArgumentParser(
        prog="scripts/bench.sh", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Runs benches/*.c under glibc, jemalloc, mimalloc, tcmalloc and CMA, interleaved\n"
                    "run by run (medians), checks that all printed the same checksums, and reports\n"
                    "time and peak RSS with ratios to glibc and to mimalloc.",
        epilog="A full run (no --quick, --only or --allocs) writes docs/BENCHMARKS.md and\n"
               "docs/bench.svg; other runs write benches/build/report/ unless --docs is given.\n"
               "Raw results of every run: benches/build/results/<date>/runs.jsonl.\n"
               "Exit status 1 when a checksum differs, a block did not read back as written,\n"
               "or a peer allocator failed; CMA crashes are reported but do not fail the run.\n\n"
               "Examples:\n"
               "  scripts/bench.sh                       # full run, ~10-15 min\n"
               "  scripts/bench.sh --quick               # ~2-3 min\n"
               "  scripts/bench.sh --only larson,prodcons --runs 5\n"
               "  CMA_LIB=/path/libcma.so scripts/bench.sh --quick --allocs glibc,mimalloc,cma\n"
               "  scripts/bench.sh --allocs cma --only churn,larson \\\n"
               "      --variants cma-secure=target/release/libcma.so+CMA_SECURE=1   # see scripts/bench-variants.sh")
    ap.add_argument("--runs", type=int, default=None, help="runs per configuration (default 3)")
    ap.add_argument("--quick", action="store_true", help="smaller scale, 3 s mem_steady (~3 min)")
    ap.add_argument("--only", help="comma-separated bench names")
    ap.add_argument("--allocs", help="comma-separated subset of glibc,jemalloc,mimalloc,tcmalloc,cma")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every bench's scale")
    ap.add_argument("--steady-seconds", type=float, default=None, help="mem_steady duration (60; quick 3)")
    ap.add_argument("--steady-runs", type=int, default=1, help="mem_steady runs per allocator (1)")
    ap.add_argument("--release-sleep", type=float, default=1.5, help="mem_release sleep after free (1.5 s)")
    ap.add_argument("--timeout", type=float, default=60,
                    help="per-run timeout in seconds (60; mem_steady gets its duration on top)")
    ap.add_argument("--cma", help="CMA library (default $CMA_LIB or target/release/libcma.so)")
    ap.add_argument("--no-cma", action="store_true", help="leave CMA out")
    ap.add_argument("--variants", metavar="SPEC",
                    help="extra CMA builds/settings run like the allocators and reported as ratios to cma, "
                         "not charted: NAME=LIBPATH[+VAR=VALUE...],... (VAR=VALUE set for NAME's runs only); "
                         "glibc is then not required")
    ap.add_argument("--docs", dest="docs", action="store_true", default=None,
                    help="write docs/BENCHMARKS.md and docs/bench.svg (default for full runs)")
    ap.add_argument("--no-docs", dest="docs", action="store_false",
                    help="write the report under benches/build/report/ only")
    ap.add_argument("--report-from", help="rebuild the report from a previous run's directory (runs.jsonl)")
    ap.add_argument("--command", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cflags", default="", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.runs is None:
        opts.runs = 3
    if opts.runs < 1:
        sys.exit("--runs must be at least 1")
    if opts.steady_seconds is None:
        opts.steady_seconds = 3.0 if opts.quick else 60.0
    if opts.docs is None:
        opts.docs = not (opts.quick or opts.only or opts.allocs or opts.report_from)
    variants = parse_variants(opts.variants)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    meta = machine_meta()
    meta.update(command=(opts.command or " ".join(sys.argv)).strip(), quick=opts.quick, only=opts.only,
                runs=opts.runs, steady_runs=opts.steady_runs, steady_seconds=opts.steady_seconds,
                cflags=opts.cflags, load_start=loadavg())
    notes = []

    if opts.report_from:
        out_dir = Path(opts.report_from).resolve()
        runs = [json.loads(x) for x in open(out_dir / "runs.jsonl")]
        old_meta = json.loads((out_dir / "meta.json").read_text())
        meta = old_meta
        meta["command"] = meta["command"].strip()
        meta["alloc_desc"] = {a: d.replace(str(ROOT) + "/", "") for a, d in meta["alloc_desc"].items()}
        allocs = meta["allocs"]
        variants = meta.get("variants", {})
    else:
        out_dir = BUILD / "results" / stamp
        out_dir.mkdir(parents=True, exist_ok=True)
        wanted = [a.strip() for a in (opts.allocs or ",".join(ALL_ALLOCS)).split(",") if a.strip()]
        for a in wanted:
            if a not in ALL_ALLOCS:
                sys.exit(f"unknown allocator {a}")
        if variants and ("cma" not in wanted or opts.no_cma):
            sys.exit("--variants are compared with cma: keep cma among the allocators")
        if opts.docs and "glibc" not in wanted:
            sys.exit("--docs needs glibc (the baseline); scripts/bench-variants.sh --docs writes "
                     "the variants section alone")
        libs, desc = {}, {}
        for a in wanted:
            if a == "cma":
                continue
            lib, pkg = PEERS[a]
            if lib and not Path(lib).exists():
                loud(f"{a}: {lib} missing (package {pkg}); left out")
                continue
            libs[a] = lib
            desc[a] = (f"Debian {pkg} {pkg_version(pkg)}" + (f", LD_PRELOAD={lib}" if lib else ", no preload (baseline)"))
        if "glibc" not in libs and not variants:
            sys.exit("glibc (the baseline) must be among the allocators")
        cma_note = None
        if "cma" in wanted:
            lib, d = cma_candidate(opts)
            if lib:
                libs["cma"] = lib
                desc["cma"] = d
                log(f"CMA: {d}")
            else:
                cma_note = d
                loud(f"CMA NOT MEASURED: {d}")
        allocs = [a for a in ALL_ALLOCS if a in libs]
        for v, vd in variants.items():
            path = Path(vd["lib"])
            lib, d = (snapshot_lib(path, BUILD / f"libcma-snapshot-{v}.so", vd["env"]) if path.exists()
                      else (None, f"library not found at {path}"))
            vd.update(desc=d, measured=bool(lib))
            if lib:
                libs[v] = lib
                log(f"{v}: {d}" + "".join(f" {k}={x}" for k, x in vd["env"].items()))
            else:
                loud(f"VARIANT {v} NOT MEASURED: {d}")
        meta.update(allocs=allocs, alloc_desc=desc, cma_note=cma_note)
        if variants:
            meta["variants"] = variants
        t0 = time.monotonic()
        runs = run_suite(opts, allocs + [v for v in variants if v in libs], libs, out_dir,
                         {v: d["env"] for v, d in variants.items()})
        meta["duration_s"] = time.monotonic() - t0
        meta["load_end"] = loadavg()
        meta["date"] = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))

    agg = aggregate(runs)
    problems = check_checksums(agg)
    failures = []
    for (bench, t), by_alloc in sorted(agg.items()):
        for a, s in by_alloc.items():
            is_cma = a == "cma" or a in variants
            for st in sorted(set(s["failures"])):
                msg = f"{bench} t={t}: {a}: {st}"
                (problems if st.startswith("WRONG") or not is_cma else failures).append(msg)
            if s.get("misaligned"):
                msg = (f"{bench} t={t}: {a} returned {s['misaligned']} misaligned blocks from "
                       "posix_memalign/aligned_alloc")
                if is_cma:
                    problems.append(msg)
                else:
                    notes.append(msg + (" (known upstream bug in mimalloc 2.0.9 when size == alignment, "
                                        "microsoft/mimalloc#700; its times in `aligned` are still shown)"
                                        if a == "mimalloc" else ""))
    if failures:
        notes.extend(f"CMA failure: {f}" for f in failures)

    text = build_report(agg, allocs, meta, problems, notes)
    vtext = variants_report(agg, variants, meta) if variants else ""
    rep_dir = BUILD / "report"
    rep_dir.mkdir(parents=True, exist_ok=True)
    note = "" if "cma" in allocs else " -- CMA not measured"
    md_path = rep_dir / "BENCHMARKS.md"
    svg_ok = gnuplot_chart(agg, allocs, rep_dir / "bench.svg", rep_dir, note)
    full = text.rstrip() + f"\n\n{VAR_BEGIN}\n{vtext.rstrip()}\n{VAR_END}\n" if vtext else text
    md_path.write_text(splice_sections(full, ROOT / "docs" / "BENCHMARKS.md"))
    shutil.copy2(md_path, out_dir / "BENCHMARKS.md")

    # terminal: the report minus the machine-specific preamble
    log("")
    starts = [k for k in (text.find("## PROBLEMS"), text.find("## Notes on this run"), text.find("## Summary")) if k >= 0]
    i, j = (min(starts) if starts else -1), text.find("## How to read")
    if "glibc" in allocs:  # (a run of cma and its variants only: the variants section says it all)
        log(text[i:j] if 0 <= i < j else text)
    if vtext:
        log(vtext)
    if opts.docs:
        docs = ROOT / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copy2(md_path, docs / "BENCHMARKS.md")
        if svg_ok:
            shutil.copy2(rep_dir / "bench.svg", docs / "bench.svg")
        log(f"Report written to docs/BENCHMARKS.md{' and docs/bench.svg' if svg_ok else ''} "
            f"(raw results: {rel(out_dir)})")
    else:
        log(f"Report written to {rel(md_path)}{' and bench.svg' if svg_ok else ''} "
            f"(raw results: {rel(out_dir)}); docs/ left as it was: pass --docs to update it")
    if meta.get("cma_note"):
        loud(f"CMA NOT MEASURED: {meta['cma_note']}")
    for f in failures:
        loud(f"CMA FAILED: {f}")
    if problems:
        for p in problems:
            loud(p)
        log(f"FAILED: {len(problems)} correctness problem(s), see above")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
