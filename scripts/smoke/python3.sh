#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Workload: allocation-heavy Python. A threaded script (written here into the
# working directory) and a python3 -c one-liner with many small objects.
# PYTHONMALLOC=malloc sends every Python object allocation to malloc (instead
# of pymalloc's arenas), so the allocator under test sees all of them.
# shellcheck source=lib.sh
. "$SMOKE_DIR/lib.sh"

export PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1

cat >threads.py <<'PY'
import hashlib
import json
import math
import queue
import random
import sys
import threading

NTHREADS = 6
sys.set_int_max_str_digits(0)
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 6


def build(rng, tid, rnd, n):
    """A dict of mixed, nested values of many sizes."""
    d = {}
    for i in range(n):
        key = "k%d-%d-%d-%s" % (tid, rnd, i, "x" * rng.randrange(0, 40))
        d[key] = {
            "f": rng.random(),
            "i": rng.getrandbits(rng.choice((8, 64, 300, 1500))),
            "s": str(i) * rng.randrange(1, 30),
            "l": [rng.randrange(1000) for _ in range(rng.randrange(0, 24))],
            "t": ["a" * (i % 7), i, None, True],
        }
    return d


def worker(tid, results, q_in, q_out):
    rng = random.Random(1000 + tid)
    h = hashlib.sha256()
    total = 0
    for rnd in range(ROUNDS):
        d = build(rng, tid, rnd, 1500 + 250 * tid)
        s = json.dumps(d, sort_keys=True)
        d2 = json.loads(s)
        if d2 != d:
            raise RuntimeError("thread %d: json round trip differs" % tid)
        h.update(s.encode())
        # Sort by a big-int field, then by string length.
        items = sorted(d2.items(), key=lambda kv: (kv[1]["i"], kv[0]))
        h.update("".join(k for k, _ in items).encode())
        by_len = sorted(items, key=lambda kv: (len(kv[1]["s"]), kv[0]), reverse=True)
        h.update(by_len[0][0].encode())
        # Big integers: factorials, products, powers, conversions to text.
        f = math.factorial(1500 + 37 * tid + rnd)
        p = 1
        for _, v in items[:200]:
            p = (p * (v["i"] | 1)) % (1 << 8192)
        total += len(str(f)) + p.bit_length()
        h.update(str(f % (10**400) + p).encode())
        # String building and slicing.
        parts = []
        for k, v in items[:2000]:
            parts.append("%s=%s;" % (k, v["s"][: v["l"][0] if v["l"] else 3]))
        blob = "".join(parts)
        h.update(blob[::-1].encode())
        h.update(blob.upper().replace("X", "yz").encode())
        # Hand objects to another thread (freed there) and take some back.
        q_out.put((tid, rnd, [dict(v) for _, v in items[:300]], blob))
        del d, d2, s, items, by_len, parts, blob
        got = q_in.get()
        h.update(repr((got[0], got[1], len(got[2]), len(got[3]))).encode())
        del got
    results[tid] = (h.hexdigest(), total)


def guarded(tid, results, q_in, q_out):
    # An exception in a thread does not fail the process by itself.
    try:
        worker(tid, results, q_in, q_out)
    except BaseException:
        import traceback
        traceback.print_exc()
        results[tid] = None
        sys.stdout.flush()
        import os
        os._exit(3)


def main():
    queues = [queue.Queue() for _ in range(NTHREADS)]
    results = [None] * NTHREADS
    threads = [
        threading.Thread(
            target=guarded,
            args=(t, results, queues[t], queues[(t + 1) % NTHREADS]),
        )
        for t in range(NTHREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = hashlib.sha256()
    for tid, r in enumerate(results):
        if r is None:
            raise SystemExit("thread %d produced no result" % tid)
        print("thread %d: %s %d" % (tid, r[0], r[1]))
        final.update(r[0].encode())
    print("digest:", final.hexdigest())


main()
PY

echo "== threads.py, PYTHONMALLOC=malloc"
PYTHONMALLOC=malloc python3 threads.py 5
echo "== threads.py, pymalloc"
python3 threads.py 2

echo "== python3 -c, many small objects"
PYTHONMALLOC=malloc python3 -c '
import gc, hashlib
h = hashlib.sha256()
for rnd in range(3):
    objs = [(i, str(i), [i] * (i % 5), {"k": i}) for i in range(200000)]
    s = {o[1] for o in objs if o[0] % 3}
    d = {o[1]: o for o in objs[::2]}
    for k in list(d)[::3]:
        del d[k]
    tree = None
    for i in range(100000):
        tree = (tree, i, "n%d" % (i % 97))
    depth = 0
    while tree is not None:
        tree = tree[0]
        depth += 1
    h.update(("%d %d %d %d" % (len(objs), len(s), len(d), depth)).encode())
    h.update(",".join(sorted(s)[:5000]).encode())
    del objs, s, d
    gc.collect()
print("small objects:", h.hexdigest())
'
