/*
 * calloc_sparse: does calloc back memory the program never writes?
 *
 * Programs calloc tables (hash buckets, bitmaps, arrays indexed sparsely)
 * and write only part of them.  Memory fresh from the OS is zero already;
 * an allocator that clears it anyway backs every page of the block.
 *
 * Round 1 callocs 2000 blocks (at the default scale) of 4..128 KiB,
 * checks a sample of their bytes for zero (reads do not back pages) and
 * writes one word into each.  RSS is read.  Then everything is freed and
 * round 2 callocs the same sizes again: now the memory has been used, and
 * must read as zero all the same (checked at every 512th byte).
 *
 * Output (besides the common lines):
 *     rss_kb.round1     after round 1's callocs and writes
 *     rss_kb.round2     after round 2's
 *     requested_kb      bytes requested per round
 * elapsed_s covers both rounds.
 *
 *     calloc_sparse [THREADS [SCALE]]   THREADS is ignored (1)
 *
 * Not in the suite (scripts/bench.sh): run it by hand, see docs/MEMORY.md.
 */
#include "bench.h"

static size_t size_of_block(size_t i)
{
    static const size_t kib[] = {4, 6, 10, 16, 24, 40, 64, 100, 128};
    return kib[i % (sizeof kib / sizeof kib[0])] * 1024 - 16 * (i % 7);
}

static uint64_t round_of_callocs(unsigned char **v, size_t n, uint64_t seed)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        size_t size = size_of_block(i);
        v[i] = (unsigned char *)calloc(1, size);
        if (!v[i]) {
            fprintf(stderr, "calloc(1, %zu) failed\n", size);
            exit(2);
        }
        for (size_t off = 0; off < size; off += 512)
            if (v[i][off] != 0) atomic_fetch_add(&bench_errors, 1);
        if (v[i][size - 1] != 0) atomic_fetch_add(&bench_errors, 1);
        st64(v[i], mix64(seed + i));
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t x = ld64(v[i]);
        if (x != mix64(seed + i)) atomic_fetch_add(&bench_errors, 1);
        sum = mix64(sum ^ x);
    }
    return sum;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse("calloc_sparse", argc, argv, 1);
    size_t n = (size_t)scaled(a.scale, 2000);
    unsigned char **v = (unsigned char **)xcalloc(n, sizeof(void *));
    size_t requested = 0;
    for (size_t i = 0; i < n; i++) requested += size_of_block(i);

    double t0 = now_s();
    uint64_t sum = round_of_callocs(v, n, 1);
    print_rss("round1");
    for (size_t i = 0; i < n; i++) {
        memset(v[i], 0xa5, size_of_block(i)); /* dirty: round 2 reuses it */
        free(v[i]);
    }
    sum ^= round_of_callocs(v, n, 2);
    print_rss("round2");
    for (size_t i = 0; i < n; i++) free(v[i]);
    double el = now_s() - t0;
    free(v);
    printf("requested_kb: %zu\n", requested / 1024);
    return bench_finish(sum, el);
}
