/*
 * aligned: posix_memalign and aligned_alloc churn.
 *
 * A working set of 8192 slots; each step frees the block in a random slot
 * and allocates a new one with an alignment of 16, 32, ..., 4096 bytes
 * (each power equally likely) and a size of 8 B .. 16 KiB (skewed small;
 * one time in 4 an exact multiple of the alignment).  Steps alternate
 * between posix_memalign and aligned_alloc (whose size is rounded up to a
 * multiple of the alignment, as C11 asks).  Every block's alignment is
 * checked (misaligned blocks are counted and printed as "misaligned: N";
 * they leave the checksum alone) and its contents are written and read
 * back.  Blocks are freed in random order.
 *
 * With THREADS > 1 each thread runs its own copy, the steps divided.
 *
 *     aligned [THREADS [SCALE]]    default scale: 2M steps in all
 */
#include "bench.h"

#include <stdint.h>

#define SLOTS 8192

/* Misaligned blocks are counted apart from content errors: they do not
 * change the checksum, and bench.sh reports them on their own. */
static atomic_ulong misaligned;

typedef struct {
    void *p;
    uint32_t size;
    uint32_t tag;
} slot_t;

typedef struct {
    int id;
    uint64_t steps;
    uint64_t sum;
} worker_t;

static void *aligned_block(rng_t *r, uint64_t i, size_t *size_out)
{
    size_t align = (size_t)16 << rng_below(r, 9); /* 16 .. 4096 */
    size_t n = size_skewed(r, 8, 16 * 1024);
    void *p = NULL;
    if (rng_chance(r, 1, 4)) n = align * rng_range(r, 1, 4);
    if (i & 1) {
        n = (n + align - 1) & ~(align - 1);
        p = aligned_alloc(align, n);
    } else {
        int rc = posix_memalign(&p, align, n);
        if (rc) p = NULL;
    }
    if (!p) {
        fprintf(stderr, "aligned allocation of %zu bytes at %zu failed\n", n, align);
        exit(4);
    }
    if ((uintptr_t)p & (align - 1)) atomic_fetch_add_explicit(&misaligned, 1, memory_order_relaxed);
    *size_out = n;
    return p;
}

static void *run(void *arg)
{
    worker_t *w = (worker_t *)arg;
    rng_t r = rng_seed(4096 + (uint64_t)w->id);
    slot_t *slots = (slot_t *)xcalloc(SLOTS, sizeof(slot_t));
    uint64_t sum = 0;
    uint32_t tag = (uint32_t)w->id << 28;

    for (uint64_t i = 0; i < w->steps; i++) {
        slot_t *s = &slots[rng_below(&r, SLOTS)];
        if (s->p) {
            sum += block_check(s->p, s->size, s->tag);
            free(s->p);
        }
        size_t n;
        s->p = aligned_block(&r, i, &n);
        s->size = (uint32_t)n;
        s->tag = tag++;
        block_fill(s->p, n, s->tag);
    }
    for (size_t k = 0; k < SLOTS; k++) {
        if (!slots[k].p) continue;
        sum += block_check(slots[k].p, slots[k].size, slots[k].tag);
        free(slots[k].p);
    }
    free(slots);
    w->sum = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse("aligned", argc, argv, 1);
    uint64_t total = scaled(a.scale, 2000000);
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
    uint64_t sum = 0;
    for (int i = 0; i < a.threads; i++) {
        if (a.threads > 1) pthread_join(t[i], NULL);
        sum += w[i].sum;
    }
    double el = now_s() - t0;
    printf("misaligned: %lu\n", atomic_load(&misaligned));
    free(w);
    free(t);
    return bench_finish(sum, el);
}
