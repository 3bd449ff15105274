/*
 * phase_churn: after a phase change, does the next workload run at full
 * speed?
 *
 *   setup   200K nodes of 32..128 bytes, nine in ten freed at random: the
 *           pages of small blocks are sparse (the state mem_phase leaves);
 *   medium  4M replacements in a ring of 64 blocks of 200..1000 bytes
 *           (each freed soon after it is allocated);
 *   small   4M replacements in a ring of 64 blocks of 32..128 bytes.
 * An allocator that serves medium blocks from the freed small ones (CMA's
 * runs) must not make the short-lived ones pay for it: a medium block
 * that comes straight back is a trip through the slow path each way.
 *
 * Output (besides the common lines):
 *     medium_ns / small_ns    nanoseconds per replacement
 *     rss_kb.setup            RSS once the nodes are freed
 * elapsed_s is the time of both loops.
 *
 *     phase_churn [THREADS [SCALE]]    THREADS is ignored (1)
 *
 * Not in the suite (scripts/bench.sh): scripts/bench-phase-churn.sh runs
 * it against the peers; see docs/MEMORY.md.
 */
#include "bench.h"

#define RING 64

static double churn(rng_t *r, uint64_t steps, size_t lo, size_t hi, uint64_t *sum)
{
    void *ring[RING] = {0};
    size_t sizes[RING] = {0};
    double t0 = now_s();
    for (uint64_t i = 0; i < steps; i++) {
        size_t k = i % RING;
        if (ring[k]) {
            *sum += block_check(ring[k], sizes[k], i - RING);
            free(ring[k]);
        }
        sizes[k] = (size_t)rng_range(r, lo, hi);
        ring[k] = xmalloc(sizes[k]);
        block_fill(ring[k], sizes[k], i);
    }
    double t = now_s() - t0;
    for (size_t k = 0; k < RING; k++)
        free(ring[k]);
    return t;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse("phase_churn", argc, argv, 1);
    size_t nodes = (size_t)scaled(a.scale, 200000);
    uint64_t steps = scaled(a.scale, 4000000);
    rng_t r = rng_seed(77);
    void **v = (void **)xmalloc(nodes * sizeof(void *));
    for (size_t i = 0; i < nodes; i++)
        v[i] = xmalloc((size_t)rng_range(&r, 32, 128));
    for (size_t i = 0; i < nodes; i++)
        if (rng_below(&r, 10) != 0) {
            free(v[i]);
            v[i] = NULL;
        }
    print_rss("setup");
    uint64_t sum = 0;
    double medium = churn(&r, steps, 200, 1000, &sum);
    double small = churn(&r, steps, 32, 128, &sum);
    printf("medium_ns: %.1f\n", medium * 1e9 / (double)steps);
    printf("small_ns: %.1f\n", small * 1e9 / (double)steps);
    for (size_t i = 0; i < nodes; i++)
        free(v[i]);
    free(v);
    return bench_finish(sum, medium + small);
}
