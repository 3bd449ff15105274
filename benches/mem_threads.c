/*
 * mem_threads: memory left behind by many threads that have exited.
 *
 * 200 threads in all (at the default scale), THREADS (default 8) alive at
 * a time.  Each allocates 4 MiB in blocks of 16 B .. 32 KiB (skewed small,
 * so both small and medium blocks), frees 90% of them in random order,
 * hands the surviving 10% to the main thread and exits.  Survivors pin the
 * pages (and per-thread heaps or caches) of threads that are gone; an
 * allocator that abandons or cannot reuse those grows here.
 *
 * Output:
 *     rss_kb.threads_done   all threads joined, the survivors still live
 *     live_kb.survivors     bytes the survivors hold
 *     rss_kb.after_trim     then after malloc_trim(0), survivors still live
 *                           (trim_from: which object defined malloc_trim)
 *     rss_kb.end            after the main thread freed the survivors
 *
 *     mem_threads [THREADS [SCALE]]     default 8 1
 */
#include "bench.h"

#define BYTES_PER_THREAD (4u << 20)

typedef struct {
    void *p;
    uint32_t size;
    uint32_t tag;
} slot_t;

typedef struct {
    uint64_t id;
    slot_t *kept;
    size_t nkept;
    uint64_t kept_bytes;
    uint64_t sum;
} job_t;

static void *worker(void *arg)
{
    job_t *j = (job_t *)arg;
    rng_t r = rng_seed(123 + j->id);
    size_t cap = 4096, n = 0;
    slot_t *s = (slot_t *)xmalloc(cap * sizeof(slot_t));
    uint64_t bytes = 0, sum = 0;
    uint32_t tag = (uint32_t)(j->id << 20);

    while (bytes < BYTES_PER_THREAD) {
        if (n == cap) {
            cap *= 2;
            s = (slot_t *)xrealloc(s, cap * sizeof(slot_t));
        }
        size_t sz = size_skewed(&r, 16, 32 * 1024);
        s[n] = (slot_t){ xmalloc(sz), (uint32_t)sz, tag++ };
        block_fill(s[n].p, sz, s[n].tag);
        bytes += sz;
        n++;
    }
    /* shuffle, then free the first 90% and keep the rest */
    for (size_t i = n - 1; i > 0; i--) {
        size_t k = rng_below(&r, i + 1);
        slot_t t = s[i];
        s[i] = s[k];
        s[k] = t;
    }
    size_t nfree = n - n / 10;
    for (size_t i = 0; i < nfree; i++) {
        sum += block_check(s[i].p, s[i].size, s[i].tag);
        free(s[i].p);
    }
    j->nkept = n - nfree;
    j->kept = (slot_t *)xmalloc(j->nkept * sizeof(slot_t));
    memcpy(j->kept, s + nfree, j->nkept * sizeof(slot_t));
    for (size_t i = 0; i < j->nkept; i++) j->kept_bytes += j->kept[i].size;
    free(s);
    j->sum = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse("mem_threads", argc, argv, 8);
    uint64_t total = scaled(a.scale, 200);
    int conc = a.threads;
    job_t *jobs = (job_t *)xcalloc(total, sizeof(job_t));
    pthread_t *t = (pthread_t *)xcalloc((size_t)conc, sizeof(pthread_t));

    print_rss("start");
    double t0 = now_s();
    for (uint64_t i = 0; i < total; i++) {
        if (i >= (uint64_t)conc) pthread_join(t[i % (uint64_t)conc], NULL);
        jobs[i].id = i;
        spawn(&t[i % (uint64_t)conc], worker, &jobs[i]);
    }
    for (uint64_t i = total > (uint64_t)conc ? total - (uint64_t)conc : 0; i < total; i++)
        pthread_join(t[i % (uint64_t)conc], NULL);
    double t1 = now_s();
    print_rss("threads_done");
    uint64_t kept = 0, sum = 0;
    for (uint64_t i = 0; i < total; i++) kept += jobs[i].kept_bytes;
    printf("live_kb.survivors: %llu\n", (unsigned long long)(kept / 1024));
    trim_and_print_rss("after_trim");

    double t2 = now_s();
    for (uint64_t i = 0; i < total; i++) {
        for (size_t k = 0; k < jobs[i].nkept; k++) {
            slot_t *s = &jobs[i].kept[k];
            sum += block_check(s->p, s->size, s->tag);
            free(s->p);
        }
        free(jobs[i].kept);
        sum += jobs[i].sum;
    }
    double t3 = now_s();
    print_rss("end");
    free(jobs);
    free(t);
    return bench_finish(sum, (t1 - t0) + (t3 - t2));
}
