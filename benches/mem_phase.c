/*
 * mem_phase: can memory freed as one size class be reused for another?
 *
 *   build  2M nodes of 16..128 bytes (uniform), linked into a list in
 *          random order (each node points to the next);
 *   free   90% of them, chosen at random (the list is relinked over the
 *          survivors);
 *   reuse  allocate 200..1000-byte objects until they hold as many bytes
 *          as were freed;
 *   end    free everything.
 * An allocator that can reuse the freed space for the new sizes stays
 * near the build-phase RSS after "reuse"; one that cannot grows by the
 * freed amount.
 *
 * Output: rss_kb.build, rss_kb.free, rss_kb.reuse, rss_kb.end, and
 * live_kb.build / live_kb.reuse (requested bytes live at those points).
 *
 *     mem_phase [THREADS [SCALE]]    THREADS is ignored (1);
 *                                    default scale: 2M nodes
 */
#include "bench.h"

typedef struct node {
    struct node *next;
    uint32_t size;
    uint32_t id;
} node_t;

static void node_fill(node_t *n)
{
    block_fill((char *)n + sizeof(node_t), n->size - sizeof(node_t), n->id);
}

static uint64_t node_check(node_t *n)
{
    return block_check((char *)n + sizeof(node_t), n->size - sizeof(node_t), n->id);
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse("mem_phase", argc, argv, 1);
    size_t count = (size_t)scaled(a.scale, 2000000);
    rng_t r = rng_seed(2024);
    node_t **v = (node_t **)xmalloc(count * sizeof(node_t *));
    uint64_t sum = 0, live = 0, freed = 0;

    double t0 = now_s();
    /* build */
    for (size_t i = 0; i < count; i++) {
        uint32_t sz = (uint32_t)rng_range(&r, 16, 128);
        node_t *n = (node_t *)xmalloc(sz);
        n->size = sz;
        n->id = (uint32_t)i;
        n->next = NULL;
        node_fill(n);
        v[i] = n;
        live += sz;
    }
    for (size_t i = count - 1; i > 0; i--) { /* link in random order */
        size_t j = rng_below(&r, i + 1);
        node_t *t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
    for (size_t i = 0; i + 1 < count; i++) v[i]->next = v[i + 1];
    double t1 = now_s();
    print_rss("build");
    printf("live_kb.build: %llu\n", (unsigned long long)(live / 1024));

    /* free 90%, walking the list */
    double t2 = now_s();
    node_t *head = NULL, **tail = &head;
    size_t kept = 0;
    for (node_t *n = v[0], *next; n; n = next) {
        next = n->next;
        sum += node_check(n);
        if (rng_below(&r, 10) == 0) {
            *tail = n;
            tail = &n->next;
            v[kept++] = n;
        } else {
            freed += n->size;
            live -= n->size;
            free(n);
        }
    }
    *tail = NULL;
    double t3 = now_s();
    print_rss("free");

    /* reuse: other sizes, as many bytes as were freed */
    double t4 = now_s();
    size_t cap = kept + freed / 200 + 1, total = kept;
    v = (node_t **)xrealloc(v, cap * sizeof(node_t *));
    for (uint64_t added = 0; added < freed;) {
        uint32_t sz = (uint32_t)rng_range(&r, 200, 1000);
        node_t *n = (node_t *)xmalloc(sz);
        n->size = sz;
        n->id = (uint32_t)(count + total);
        n->next = NULL;
        node_fill(n);
        v[total++] = n;
        added += sz;
        live += sz;
    }
    double t5 = now_s();
    print_rss("reuse");
    printf("live_kb.reuse: %llu\n", (unsigned long long)(live / 1024));

    /* end */
    double t6 = now_s();
    for (size_t i = 0; i < total; i++) {
        sum += node_check(v[i]);
        free(v[i]);
    }
    double t7 = now_s();
    print_rss("end");
    free(v);
    return bench_finish(sum, (t1 - t0) + (t3 - t2) + (t5 - t4) + (t7 - t6));
}
