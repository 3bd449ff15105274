/*
 * fragment: a fragmentation-heavy mix of lifetimes and sizes.
 *
 * Three pools of slots with different turnover: every step replaces the
 * block in a random slot of one pool, chosen 80% short / 18% medium /
 * 2% long, so blocks live about 2.5K, 90K and 1M steps respectively
 * (geometric lifetimes, as in real programs).
 *
 *   short   2048 slots,  16 B .. 4 KiB, skewed small; 1 in 4000 is big
 *           (128 KiB .. 2 MiB, touched one word per page)
 *   medium  16000 slots, 16 B .. 64 KiB, skewed small
 *   long    20000 slots, 16 B .. 16 KiB, log-uniform
 *
 * The size mix drifts through 8 phases (sizes multiplied by 1, 3, 1/2, 5,
 * ...), so freed space of one phase fits the next phase's blocks badly.
 * Peak RSS is the figure to watch (bench.sh takes it from wait4); the
 * program also prints its own peak of live bytes and the RSS at the end,
 * before the final frees.
 *
 * With THREADS > 1 each thread runs its own copy on its own pools, the
 * steps divided between them.
 *
 *     fragment [THREADS [SCALE]]    default scale: 1.6M steps in all
 */
#include "bench.h"

typedef struct {
    void *p;
    uint32_t size;
    uint32_t tag;
} slot_t;

typedef struct {
    slot_t *s;
    size_t n;
} pool_t;

typedef struct {
    int id;
    uint64_t steps;
    uint64_t sum;
    uint64_t live_peak;
} worker_t;

static const int phase_mul[8] = { 2, 6, 1, 10, 2, 3, 1, 4 }; /* halves */

static size_t pick_size(rng_t *r, int pool, int phase)
{
    size_t n;
    if (pool == 0) {
        if (rng_chance(r, 1, 4000)) return size_loguniform(r, 128 * 1024, 2 * 1024 * 1024);
        n = size_skewed(r, 16, 4096);
    } else if (pool == 1) {
        n = size_skewed(r, 16, 64 * 1024);
    } else {
        n = size_loguniform(r, 16, 16 * 1024);
    }
    n = n * (size_t)phase_mul[phase] / 2;
    if (n < 16) n = 16;
    if (n > 64 * 1024 && pool != 0) n = 64 * 1024;
    return n;
}

static void *run(void *arg)
{
    worker_t *w = (worker_t *)arg;
    rng_t r = rng_seed(31337 + (uint64_t)w->id);
    pool_t pools[3] = { { NULL, 2048 }, { NULL, 16000 }, { NULL, 20000 } };
    uint64_t sum = 0, live = 0, live_peak = 0;
    uint32_t tag = (uint32_t)w->id << 28;

    for (int k = 0; k < 3; k++) pools[k].s = (slot_t *)xcalloc(pools[k].n, sizeof(slot_t));
    for (uint64_t i = 0; i < w->steps; i++) {
        uint64_t u = rng_below(&r, 100);
        int pool = u < 80 ? 0 : u < 98 ? 1 : 2;
        int phase = (int)(i * 8 / w->steps);
        slot_t *s = &pools[pool].s[rng_below(&r, pools[pool].n)];
        if (s->p) {
            sum += block_check(s->p, s->size, s->tag);
            free(s->p);
            live -= s->size;
        }
        size_t n = pick_size(&r, pool, phase);
        s->p = xmalloc(n);
        s->size = (uint32_t)n;
        s->tag = tag++;
        block_fill(s->p, n, s->tag);
        live += n;
        if (live > live_peak) live_peak = live;
    }
    if (w->id == 0) print_rss("end");
    for (int k = 0; k < 3; k++) {
        for (size_t j = 0; j < pools[k].n; j++) {
            slot_t *s = &pools[k].s[j];
            if (!s->p) continue;
            sum += block_check(s->p, s->size, s->tag);
            free(s->p);
        }
        free(pools[k].s);
    }
    w->sum = sum;
    w->live_peak = live_peak;
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse("fragment", argc, argv, 1);
    uint64_t total = scaled(a.scale, 1600000);
    worker_t *w = (worker_t *)xcalloc((size_t)a.threads, sizeof(worker_t));
    pthread_t *t = (pthread_t *)xcalloc((size_t)a.threads, sizeof(pthread_t));

    double t0 = now_s();
    for (int i = 0; i < a.threads; i++) {
        w[i].id = i;
        w[i].steps = total / (uint64_t)a.threads;
        if (a.threads == 1)
            run(&w[i]);
        else
            spawn(&t[i], run, &w[i]);
    }
    uint64_t sum = 0, live_peak = 0;
    for (int i = 0; i < a.threads; i++) {
        if (a.threads > 1) pthread_join(t[i], NULL);
        sum += w[i].sum;
        live_peak += w[i].live_peak;
    }
    double el = now_s() - t0;
    printf("live_kb.peak: %llu\n", (unsigned long long)(live_peak / 1024));
    free(w);
    free(t);
    return bench_finish(sum, el);
}
