/*
 * prodcons: producer-consumer message passing (every free is cross-thread).
 *
 * THREADS producer/consumer pairs (so 2 x THREADS threads).  A producer
 * mallocs messages (16..4096 bytes, skewed to small), fills them and
 * pushes them into its pair's queue, a bounded ring guarded by a mutex and
 * two condition variables; messages are pushed and popped in batches of up
 * to 32 so the queue's locking stays a small part of the cost.  The
 * consumer checks each message, folds it into the checksum and frees it.
 *
 *     prodcons [THREADS [SCALE]]     default scale: 4M messages in all
 */
#include "bench.h"

#define RING 1024 /* messages; a power of two */
#define BATCH 32

typedef struct {
    uint64_t seq;
    uint32_t size;
    uint32_t producer;
} msg_t;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    uint64_t head, tail; /* head: next to pop; tail: next to push */
    msg_t *ring[RING];
    int done;
    int id;
    uint64_t count;
    uint64_t sum;
    char pad[64];
} pair_t;

static uint64_t msg_tag(const msg_t *m) { return ((uint64_t)m->producer << 40) ^ m->seq; }

static void *producer(void *arg)
{
    pair_t *q = (pair_t *)arg;
    rng_t r = rng_seed(77 + (uint64_t)q->id);
    msg_t *batch[BATCH];
    uint64_t seq = 0;

    while (seq < q->count) {
        int n = 0;
        while (n < BATCH && seq < q->count) {
            size_t sz = size_skewed(&r, 16, 4096);
            msg_t *m = (msg_t *)xmalloc(sz);
            m->seq = seq++;
            m->size = (uint32_t)sz;
            m->producer = (uint32_t)q->id;
            block_fill((char *)m + sizeof(msg_t), sz - sizeof(msg_t), msg_tag(m));
            batch[n++] = m;
        }
        pthread_mutex_lock(&q->mu);
        for (int i = 0; i < n; i++) {
            while (q->tail - q->head == RING) pthread_cond_wait(&q->not_full, &q->mu);
            q->ring[q->tail++ % RING] = batch[i];
        }
        pthread_cond_signal(&q->not_empty);
        pthread_mutex_unlock(&q->mu);
    }
    pthread_mutex_lock(&q->mu);
    q->done = 1;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

static void *consumer(void *arg)
{
    pair_t *q = (pair_t *)arg;
    msg_t *batch[BATCH];
    uint64_t sum = 0, expect = 0;

    for (;;) {
        int n = 0;
        pthread_mutex_lock(&q->mu);
        while (q->head == q->tail && !q->done) pthread_cond_wait(&q->not_empty, &q->mu);
        while (n < BATCH && q->head != q->tail) batch[n++] = q->ring[q->head++ % RING];
        int finished = n == 0 && q->done;
        pthread_cond_signal(&q->not_full);
        pthread_mutex_unlock(&q->mu);
        if (finished) break;
        for (int i = 0; i < n; i++) {
            msg_t *m = batch[i];
            if (m->seq != expect++ || m->producer != (uint32_t)q->id)
                atomic_fetch_add(&bench_errors, 1);
            sum += block_check((char *)m + sizeof(msg_t), m->size - sizeof(msg_t), msg_tag(m));
            free(m);
        }
    }
    q->sum = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse("prodcons", argc, argv, 1);
    int np = a.threads;
    uint64_t total = scaled(a.scale, 4000000);
    pair_t *pairs = (pair_t *)xcalloc((size_t)np, sizeof(pair_t));
    pthread_t *t = (pthread_t *)xcalloc(2 * (size_t)np, sizeof(pthread_t));

    for (int i = 0; i < np; i++) {
        pthread_mutex_init(&pairs[i].mu, NULL);
        pthread_cond_init(&pairs[i].not_empty, NULL);
        pthread_cond_init(&pairs[i].not_full, NULL);
        pairs[i].id = i;
        pairs[i].count = total / (uint64_t)np;
    }
    double t0 = now_s();
    for (int i = 0; i < np; i++) {
        spawn(&t[2 * i], consumer, &pairs[i]);
        spawn(&t[2 * i + 1], producer, &pairs[i]);
    }
    uint64_t sum = 0;
    for (int i = 0; i < 2 * np; i++) pthread_join(t[i], NULL);
    double el = now_s() - t0;
    for (int i = 0; i < np; i++) {
        sum += pairs[i].sum;
        pthread_mutex_destroy(&pairs[i].mu);
        pthread_cond_destroy(&pairs[i].not_empty);
        pthread_cond_destroy(&pairs[i].not_full);
    }
    free(pairs);
    free(t);
    return bench_finish(sum, el);
}
