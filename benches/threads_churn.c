/*
 * threads_churn: many short-lived threads.
 *
 * 2000 threads in all (at the default scale), THREADS of them alive at a
 * time: whenever one ends the next starts.  Each thread allocates 2000
 * blocks (8..2048 bytes, skewed to small), frees half of them in random
 * order, allocates 1000 more, then frees everything and exits -- so the
 * allocator's per-thread setup and teardown (caches, heaps, arenas) is
 * exercised once per thread.
 *
 *     threads_churn [THREADS [SCALE]]    default scale: 2000 threads
 */
#include "bench.h"

#define BLOCKS 2000

typedef struct {
    uint64_t id;
    uint64_t sum;
} job_t;

typedef struct {
    void *p;
    uint32_t size;
    uint32_t tag;
} slot_t;

static void *worker(void *arg)
{
    job_t *j = (job_t *)arg;
    rng_t r = rng_seed(9000 + j->id);
    slot_t *s = (slot_t *)xmalloc(BLOCKS * sizeof(slot_t));
    uint64_t sum = 0;
    uint32_t tag = (uint32_t)(j->id << 16);

    for (int i = 0; i < BLOCKS; i++) {
        size_t n = size_skewed(&r, 8, 2048);
        s[i].p = xmalloc(n);
        s[i].size = (uint32_t)n;
        s[i].tag = tag++;
        block_fill(s[i].p, n, s[i].tag);
    }
    for (int k = 0; k < BLOCKS; k++) { /* free about half, random order */
        slot_t *b = &s[rng_below(&r, BLOCKS)];
        if (!b->p) continue;
        sum += block_check(b->p, b->size, b->tag);
        free(b->p);
        b->p = NULL;
    }
    for (int i = 0, added = 0; i < BLOCKS && added < BLOCKS / 2; i++) {
        if (s[i].p) continue;
        size_t n = size_skewed(&r, 8, 2048);
        s[i].p = xmalloc(n);
        s[i].size = (uint32_t)n;
        s[i].tag = tag++;
        block_fill(s[i].p, n, s[i].tag);
        added++;
    }
    for (int i = 0; i < BLOCKS; i++) {
        if (!s[i].p) continue;
        sum += block_check(s[i].p, s[i].size, s[i].tag);
        free(s[i].p);
    }
    free(s);
    j->sum = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse("threads_churn", argc, argv, 1);
    uint64_t total = scaled(a.scale, 2000);
    int conc = a.threads;
    job_t *jobs = (job_t *)xcalloc(total, sizeof(job_t));
    pthread_t *t = (pthread_t *)xcalloc((size_t)conc, sizeof(pthread_t));

    double t0 = now_s();
    for (uint64_t i = 0; i < total; i++) {
        if (i >= (uint64_t)conc) pthread_join(t[i % (uint64_t)conc], NULL);
        jobs[i].id = i;
        spawn(&t[i % (uint64_t)conc], worker, &jobs[i]);
    }
    for (uint64_t i = total > (uint64_t)conc ? total - (uint64_t)conc : 0; i < total; i++)
        pthread_join(t[i % (uint64_t)conc], NULL);
    double el = now_s() - t0;
    uint64_t sum = 0;
    for (uint64_t i = 0; i < total; i++) sum += jobs[i].sum;
    free(jobs);
    free(t);
    return bench_finish(sum, el);
}
