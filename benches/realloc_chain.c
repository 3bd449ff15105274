/*
 * realloc_chain: buffers grown (and shrunk) through long chains of realloc.
 *
 * One round runs four kinds of chain, each on 4 buffers interleaved (so a
 * buffer seldom sits alone at the end of the heap), with a few small
 * unrelated allocations in between that stay alive to the end of the
 * round and get in the way of growing in place:
 *
 *   bytewise  strings appended one byte at a time, 1 B .. 48 KiB
 *   steps     grown 16..64 bytes at a time,        1 B .. 1 MiB
 *   chunks    appended 1..8 KiB at a time,          1 B .. 1 MiB
 *   shrink    1 MiB shrunk 16..4096 bytes at a time, down to 1 B
 *
 * Appended bytes are written, and after each realloc the first byte and
 * the last byte written are checked; at the end of every chain the whole
 * buffer is hashed (so a realloc that loses data changes the checksum).
 *
 *     realloc_chain [THREADS [SCALE]]   default scale: 16 rounds in all
 */
#include "bench.h"

#define NBUF 4
#define MIB (1u << 20)

static inline unsigned char byte_at(uint64_t chain, size_t i)
{
    /* Cheap (the writes are part of the timed loop) but position dependent:
     * data moved to the wrong offset or lost reads back differently. */
    return (unsigned char)(chain * 29 + i + (i >> 8) * 3 + (i >> 16) * 7);
}

typedef struct {
    unsigned char *p;
    size_t len;
    uint64_t chain;
} buf_t;

typedef struct {
    int id;
    uint64_t rounds;
    uint64_t sum;
} worker_t;

static void check_edges(buf_t *b)
{
    if (b->len == 0) return;
    if (b->p[0] != byte_at(b->chain, 0) || b->p[b->len - 1] != byte_at(b->chain, b->len - 1))
        atomic_fetch_add(&bench_errors, 1);
}

/* Resize b to newlen, writing the new bytes when growing. */
static void resize(buf_t *b, size_t newlen)
{
    unsigned char *q = (unsigned char *)realloc(b->p, newlen);
    if (!q) {
        fprintf(stderr, "realloc(%zu) failed\n", newlen);
        exit(4);
    }
    b->p = q;
    for (size_t i = b->len; i < newlen; i++) q[i] = byte_at(b->chain, i);
    b->len = newlen;
    check_edges(b);
}

static uint64_t hash_buf(buf_t *b)
{
    uint64_t h = b->len;
    size_t i = 0;
    for (; i < b->len; i++) {
        if (b->p[i] != byte_at(b->chain, i)) {
            atomic_fetch_add(&bench_errors, 1);
            break;
        }
    }
    for (i = 0; i + 8 <= b->len; i += 8) h = mix64(h ^ ld64(b->p + i));
    for (; i < b->len; i++) h = mix64(h ^ b->p[i]);
    return h;
}

/* Small allocations that stay alive to the end of the round. */
typedef struct {
    void **v;
    size_t n, cap;
} litter_t;

static void litter_add(litter_t *l, rng_t *r)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->v = (void **)realloc(l->v, l->cap * sizeof(void *));
        if (!l->v) exit(4);
    }
    size_t n = size_skewed(r, 16, 256);
    void *p = xmalloc(n);
    memset(p, 0xab, n);
    l->v[l->n++] = p;
}

static void *run(void *arg)
{
    worker_t *w = (worker_t *)arg;
    rng_t r = rng_seed(555 + (uint64_t)w->id);
    uint64_t sum = 0, chain = (uint64_t)w->id << 32;
    litter_t litter = { NULL, 0, 0 };

    for (uint64_t round = 0; round < w->rounds; round++) {
        buf_t b[NBUF];
        /* bytewise */
        for (int k = 0; k < NBUF; k++) b[k] = (buf_t){ NULL, 0, chain++ };
        for (size_t len = 1; len <= 48 * 1024; len++) {
            for (int k = 0; k < NBUF; k++) resize(&b[k], len);
            if ((len & 1023) == 0) litter_add(&litter, &r);
        }
        for (int k = 0; k < NBUF; k++) {
            sum += hash_buf(&b[k]);
            free(b[k].p);
        }
        /* steps */
        for (int k = 0; k < NBUF; k++) b[k] = (buf_t){ NULL, 0, chain++ };
        for (int live = NBUF; live > 0;) {
            live = 0;
            for (int k = 0; k < NBUF; k++) {
                if (b[k].len >= MIB) continue;
                size_t n = b[k].len + rng_range(&r, 16, 64);
                resize(&b[k], n > MIB ? MIB : n);
                live++;
            }
            if (rng_chance(&r, 1, 512)) litter_add(&litter, &r);
        }
        for (int k = 0; k < NBUF; k++) sum += hash_buf(&b[k]);
        /* shrink: the step buffers, from 1 MiB down to 1 B */
        for (int live = NBUF; live > 0;) {
            live = 0;
            for (int k = 0; k < NBUF; k++) {
                if (b[k].len <= 1) continue;
                size_t d = rng_range(&r, 16, 4096);
                resize(&b[k], b[k].len > d + 1 ? b[k].len - d : 1);
                live++;
            }
            if (rng_chance(&r, 1, 64)) litter_add(&litter, &r);
        }
        for (int k = 0; k < NBUF; k++) {
            sum += hash_buf(&b[k]);
            free(b[k].p);
        }
        /* chunks */
        for (int k = 0; k < NBUF; k++) b[k] = (buf_t){ NULL, 0, chain++ };
        for (int live = NBUF; live > 0;) {
            live = 0;
            for (int k = 0; k < NBUF; k++) {
                if (b[k].len >= MIB) continue;
                size_t n = b[k].len + rng_range(&r, 1, 8192);
                resize(&b[k], n > MIB ? MIB : n);
                live++;
            }
            litter_add(&litter, &r);
        }
        for (int k = 0; k < NBUF; k++) {
            sum += hash_buf(&b[k]);
            free(b[k].p);
        }
        for (size_t i = 0; i < litter.n; i++) free(litter.v[i]);
        litter.n = 0;
    }
    free(litter.v);
    w->sum = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse("realloc_chain", argc, argv, 1);
    uint64_t total = scaled(a.scale, 16);
    worker_t *w = (worker_t *)xcalloc((size_t)a.threads, sizeof(worker_t));
    pthread_t *t = (pthread_t *)xcalloc((size_t)a.threads, sizeof(pthread_t));

    double t0 = now_s();
    for (int i = 0; i < a.threads; i++) {
        w[i].id = i;
        w[i].rounds = total / (uint64_t)a.threads ? total / (uint64_t)a.threads : 1;
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
