/*
 * mem_steady: does RSS creep up in a long-running server with constant
 * live data?
 *
 * THREADS worker threads each own a working set of slots holding about
 * 64 MiB / THREADS of live data (at the default scale).  They replace
 * random blocks with new ones of random size -- 16 B .. 16 KiB skewed
 * small, 1 in 1000 from 64 KiB .. 1 MiB -- and keep the live bytes
 * constant: a size that would move a worker's live total more than 1%
 * away from where it started is redrawn.  Every 64 replacements one block is handed to the
 * next worker, which frees it (a few cross-thread frees, as in servers).
 * The main thread samples VmRSS every second for DURATION seconds.
 *
 * Deterministic checksum: the first 1M replacements (in all, divided
 * between the workers) fold the contents of the blocks they free into the
 * checksum; the run lasts at least until they are done, then goes on
 * until DURATION ends.
 *
 * Output:
 *     sample: T_S RSS_KB LIVE_KB     one line per second
 *     rss_kb.warm                    RSS at the end of the warm-up
 *                                    (WARMUP_S, default a quarter of the run)
 *     rss_kb.last                    RSS at the last sample
 *     rss_kb.growth                  last - warm
 *     rss_kb.max                     largest sample
 *     live_kb.mean                   mean live bytes over the samples
 *     ops_per_s                      replacements per second (all workers)
 *
 *     mem_steady [THREADS [SCALE [DURATION_S [WARMUP_S]]]]  default 2 1 10
 */
#include "bench.h"

#define CHECKED_OPS 1000000
#define HANDOFF 256 /* mailbox capacity */

typedef struct {
    void *p;
    uint32_t size;
    uint32_t tag;
} slot_t;

typedef struct {
    /* owned by the worker */
    int id;
    slot_t *slots;
    size_t nslots;
    uint64_t checked_ops;
    uint64_t sum;
    /* read by the sampler */
    _Atomic uint64_t live;
    _Atomic uint64_t ops;
    _Atomic int checked_done;
    /* mailbox: blocks handed to this worker, freed by it */
    pthread_mutex_t mu;
    slot_t box[HANDOFF];
    int nbox;
    char pad[64];
} worker_t;

static worker_t *workers;
static int nworkers;
static atomic_int stop;

static size_t pick_size(rng_t *r)
{
    if (rng_chance(r, 1, 1000)) return size_loguniform(r, 64 * 1024, 1024 * 1024);
    return size_skewed(r, 16, 16 * 1024);
}

/* Free the blocks other workers handed to w (checking them first). */
static void drain(worker_t *w)
{
    slot_t box[HANDOFF];
    int n;
    pthread_mutex_lock(&w->mu);
    n = w->nbox;
    memcpy(box, w->box, (size_t)n * sizeof(slot_t));
    w->nbox = 0;
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < n; i++) {
        block_check(box[i].p, box[i].size, box[i].tag);
        free(box[i].p);
    }
}

static void *worker(void *arg)
{
    worker_t *w = (worker_t *)arg;
    worker_t *next = &workers[(w->id + 1) % nworkers];
    rng_t r = rng_seed(777 + (uint64_t)w->id);
    uint32_t tag = (uint32_t)w->id << 26;
    uint64_t sum = 0, live = 0, ops = 0;

    for (size_t k = 0; k < w->nslots; k++) {
        size_t n = pick_size(&r);
        w->slots[k] = (slot_t){ xmalloc(n), (uint32_t)n, tag++ };
        block_fill(w->slots[k].p, n, w->slots[k].tag);
        live += n;
    }
    atomic_store(&w->live, live);
    const uint64_t target = live;
    while (!atomic_load_explicit(&stop, memory_order_relaxed) || ops < w->checked_ops) {
        slot_t *s = &w->slots[rng_below(&r, w->nslots)];
        uint64_t h = block_check(s->p, s->size, s->tag);
        if (ops < w->checked_ops) sum += h;
        live -= s->size;
        int handed = 0;
        if (nworkers > 1 && (ops & 63) == 63) {
            /* hand the old block to the next worker, which frees it */
            pthread_mutex_lock(&next->mu);
            if (next->nbox < HANDOFF) {
                next->box[next->nbox++] = *s;
                handed = 1;
            }
            pthread_mutex_unlock(&next->mu);
        }
        if (!handed) free(s->p);
        /* a new random size, redrawn (a few times at most) while it would
         * leave the live bytes more than 1% away from the start and no
         * closer to it than before */
        size_t n = pick_size(&r);
        for (int tries = 0; tries < 16; tries++) {
            int64_t off_after = (int64_t)(live + n) - (int64_t)target;
            int64_t off_before = (int64_t)(live + s->size) - (int64_t)target;
            if (off_after < 0) off_after = -off_after;
            if (off_before < 0) off_before = -off_before;
            if ((uint64_t)off_after <= target / 100 || off_after < off_before) break;
            n = pick_size(&r);
        }
        *s = (slot_t){ xmalloc(n), (uint32_t)n, tag++ };
        block_fill(s->p, n, s->tag);
        live += n;
        ops++;
        if ((ops & 255) == 0) {
            drain(w);
            atomic_store_explicit(&w->live, live, memory_order_relaxed);
            atomic_store_explicit(&w->ops, ops, memory_order_relaxed);
            if (ops >= w->checked_ops) atomic_store(&w->checked_done, 1);
        }
    }
    atomic_store(&w->ops, ops);
    atomic_store(&w->checked_done, 1);
    w->sum = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse("mem_steady", argc, argv, 2);
    double duration = argc > 3 ? atof(argv[3]) : 10;
    double warmup = argc > 4 ? atof(argv[4]) : duration / 4;
    int nsamples = (int)duration;
    int warm_idx = (int)(warmup + 0.5);
    if (nsamples < 2) nsamples = 2;
    if (warm_idx < 1) warm_idx = 1;
    if (warm_idx > nsamples) warm_idx = nsamples;
    nworkers = a.threads;

    /* the mean block is about 1650 bytes */
    size_t total_slots = (size_t)scaled(a.scale, 64ull * 1024 * 1024 / 1650);
    workers = (worker_t *)xcalloc((size_t)nworkers, sizeof(worker_t));
    pthread_t *t = (pthread_t *)xcalloc((size_t)nworkers, sizeof(pthread_t));
    long *rss = (long *)xcalloc((size_t)nsamples + 1, sizeof(long));

    double t0 = now_s();
    for (int i = 0; i < nworkers; i++) {
        worker_t *w = &workers[i];
        w->id = i;
        w->nslots = total_slots / (size_t)nworkers;
        w->slots = (slot_t *)xcalloc(w->nslots, sizeof(slot_t));
        w->checked_ops = CHECKED_OPS / (uint64_t)nworkers;
        pthread_mutex_init(&w->mu, NULL);
        spawn(&t[i], worker, w);
    }
    double live_sum = 0;
    for (int s = 1; s <= nsamples; s++) {
        double wake = t0 + s;
        double d = wake - now_s();
        if (d > 0) sleep_s(d);
        uint64_t live = 0;
        for (int i = 0; i < nworkers; i++) live += atomic_load(&workers[i].live);
        rss[s] = rss_kb();
        live_sum += (double)live;
        printf("sample: %d %ld %llu\n", s, rss[s], (unsigned long long)(live / 1024));
        fflush(stdout);
    }
    atomic_store(&stop, 1);
    uint64_t sum = 0, ops = 0;
    for (int i = 0; i < nworkers; i++) {
        pthread_join(t[i], NULL);
        sum += workers[i].sum;
        ops += workers[i].ops;
    }
    double el = now_s() - t0;
    long mx = 0;
    for (int s = 1; s <= nsamples; s++) mx = rss[s] > mx ? rss[s] : mx;
    printf("rss_kb.warm: %ld\nrss_kb.last: %ld\nrss_kb.growth: %ld\nrss_kb.max: %ld\n",
           rss[warm_idx], rss[nsamples], rss[nsamples] - rss[warm_idx], mx);
    printf("live_kb.mean: %.0f\n", live_sum / nsamples / 1024);
    printf("ops_per_s: %.0f\n", (double)ops / el);

    /* leftovers: mailboxes, then the working sets */
    for (int i = 0; i < nworkers; i++) {
        worker_t *w = &workers[i];
        for (int k = 0; k < w->nbox; k++) {
            block_check(w->box[k].p, w->box[k].size, w->box[k].tag);
            free(w->box[k].p);
        }
        for (size_t k = 0; k < w->nslots; k++) {
            block_check(w->slots[k].p, w->slots[k].size, w->slots[k].tag);
            free(w->slots[k].p);
        }
        free(w->slots);
        pthread_mutex_destroy(&w->mu);
    }
    free(rss);
    free(t);
    free(workers);
    return bench_finish(sum, el);
}
