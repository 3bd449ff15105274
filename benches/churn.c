/*
 * churn: single-thread churn of mixed small sizes.
 *
 * A working set of slots; each step picks a random slot, frees what it
 * holds and (7 times in 8) puts a new block there, 8..512 bytes skewed to
 * small.  Every 64K steps a random run of slots is emptied at once (a
 * burst of frees, as when a request or a data structure goes away).
 *
 * With THREADS > 1 each thread runs its own independent churn on its own
 * working set, the steps divided between them.
 *
 *     churn [THREADS [SCALE]]      default scale: 14M steps in all
 */
#include "bench.h"

#define SLOTS 8192

typedef struct {
    int id;
    uint64_t steps;
    uint64_t sum;
} worker_t;

typedef struct {
    void *p;
    uint32_t size;
    uint32_t tag;
} slot_t;

static void *run(void *arg)
{
    worker_t *w = (worker_t *)arg;
    rng_t r = rng_seed(1000 + (uint64_t)w->id);
    slot_t *slots = (slot_t *)xcalloc(SLOTS, sizeof(slot_t));
    uint64_t sum = 0;
    uint32_t tag = 1;

    for (uint64_t i = 0; i < w->steps; i++) {
        slot_t *s = &slots[rng_below(&r, SLOTS)];
        if (s->p) {
            sum += block_check(s->p, s->size, s->tag);
            free(s->p);
            s->p = NULL;
        }
        if ((i & 7) != 7) {
            size_t n = size_skewed(&r, 8, 512);
            s->p = xmalloc(n);
            s->size = (uint32_t)n;
            s->tag = tag++;
            block_fill(s->p, n, s->tag);
        }
        if ((i & 0xffff) == 0xffff) {
            size_t start = rng_below(&r, SLOTS), len = rng_range(&r, 64, SLOTS / 4);
            for (size_t k = 0; k < len; k++) {
                slot_t *b = &slots[(start + k) % SLOTS];
                if (b->p) {
                    sum += block_check(b->p, b->size, b->tag);
                    free(b->p);
                    b->p = NULL;
                }
            }
        }
    }
    for (size_t k = 0; k < SLOTS; k++) {
        if (slots[k].p) {
            sum += block_check(slots[k].p, slots[k].size, slots[k].tag);
            free(slots[k].p);
        }
    }
    free(slots);
    w->sum = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse("churn", argc, argv, 1);
    uint64_t total = scaled(a.scale, 14000000);
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
    free(w);
    free(t);
    return bench_finish(sum, el);
}
