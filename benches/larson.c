/*
 * larson: a larson-style server workload.
 *
 * There are 8 "connections" (slot arrays of live blocks, each with its own
 * random stream), whatever the thread count.  In every round each thread
 * serves the connections assigned to it: for each, a number of times it
 * frees the block in a random slot and puts a new block of random size
 * (8..1000 bytes, uniform) there.  Between rounds the connections move to
 * other threads (connection c is served by thread (c + round) % THREADS),
 * so with 2 or more threads most frees release blocks that another thread
 * allocated, and the blocks a thread allocates are freed elsewhere.
 *
 * The work is the same for every thread count: the same blocks are
 * allocated and freed, only by different threads.
 *
 *     larson [THREADS [SCALE]]     default scale: 100 rounds x 8 x 6000 steps
 */
#include "bench.h"

#define CONNS 8
#define SLOTS 4000
#define STEPS_PER_ROUND 6000

typedef struct {
    void *p;
    uint32_t size;
    uint32_t tag;
} slot_t;

typedef struct {
    rng_t r;
    uint32_t next_tag;
    slot_t slots[SLOTS];
} conn_t;

static conn_t *conns;
static int nthreads;
static uint64_t rounds;
static pthread_barrier_t barrier;

typedef struct {
    int id;
    uint64_t sum;
} worker_t;

static uint64_t replace(conn_t *c, slot_t *s)
{
    uint64_t sum = 0;
    if (s->p) {
        sum = block_check(s->p, s->size, s->tag);
        free(s->p);
    }
    size_t n = rng_range(&c->r, 8, 1000);
    s->p = xmalloc(n);
    s->size = (uint32_t)n;
    s->tag = c->next_tag++;
    block_fill(s->p, n, s->tag);
    return sum;
}

static void *run(void *arg)
{
    worker_t *w = (worker_t *)arg;
    uint64_t sum = 0;

    /* Round 0 fills the connections, then the rounds of replacement. */
    for (uint64_t round = 0; round <= rounds; round++) {
        for (int ci = 0; ci < CONNS; ci++) {
            if ((int)((uint64_t)(ci + (int)round) % (uint64_t)nthreads) != w->id) continue;
            conn_t *c = &conns[ci];
            if (round == 0) {
                for (int k = 0; k < SLOTS; k++) sum += replace(c, &c->slots[k]);
            } else {
                for (int k = 0; k < STEPS_PER_ROUND; k++)
                    sum += replace(c, &c->slots[rng_below(&c->r, SLOTS)]);
            }
        }
        pthread_barrier_wait(&barrier);
    }
    /* Tear down: the connections are freed by the thread after the last
     * owner. */
    for (int ci = 0; ci < CONNS; ci++) {
        if ((int)((uint64_t)(ci + (int)rounds + 1) % (uint64_t)nthreads) != w->id) continue;
        conn_t *c = &conns[ci];
        for (int k = 0; k < SLOTS; k++) {
            sum += block_check(c->slots[k].p, c->slots[k].size, c->slots[k].tag);
            free(c->slots[k].p);
        }
    }
    w->sum = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse("larson", argc, argv, 1);
    nthreads = a.threads;
    rounds = scaled(a.scale, 100);
    conns = (conn_t *)xcalloc(CONNS, sizeof(conn_t));
    for (int c = 0; c < CONNS; c++) {
        conns[c].r = rng_seed(4141 + (uint64_t)c);
        conns[c].next_tag = (uint32_t)c << 24;
    }
    pthread_barrier_init(&barrier, NULL, (unsigned)nthreads);
    worker_t *w = (worker_t *)xcalloc((size_t)nthreads, sizeof(worker_t));
    pthread_t *t = (pthread_t *)xcalloc((size_t)nthreads, sizeof(pthread_t));

    double t0 = now_s();
    for (int i = 0; i < nthreads; i++) {
        w[i].id = i;
        spawn(&t[i], run, &w[i]);
    }
    uint64_t sum = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(t[i], NULL);
        sum += w[i].sum;
    }
    double el = now_s() - t0;
    pthread_barrier_destroy(&barrier);
    free(w);
    free(t);
    free(conns);
    return bench_finish(sum, el);
}
