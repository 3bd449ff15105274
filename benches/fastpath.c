/*
 * fastpath: N malloc+free pairs of 16..256 bytes in a tight loop, for
 * counting instructions under callgrind (scripts/fastpath-callgrind.sh).
 *
 *     fastpath N [BALLAST]
 *
 * BALLAST 1 (the default) keeps one block of every size 16..256 allocated
 * around the loop, so no size class ever becomes empty in it; with 0 the
 * loop's block is the only one live, and an allocator that does work when
 * a page or span becomes empty (mimalloc retires its page) does it on
 * every free.
 *
 * Built twice: as is, and with -DFASTPATH_NOOP, where the malloc/free
 * pair is replaced by nothing (the size and the pointer still pass
 * through a compiler barrier), so the script can subtract the cost of
 * the bare loop.  Not part of the timed suite.
 */
#include "bench.h"

#define NSIZES 4096 /* a power of two */

static uint32_t sizes[NSIZES];

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    int ballast = argc > 2 ? atoi(argv[2]) : 1;
    rng_t r = rng_seed(16);
    uintptr_t acc = 0;
    void *keep[256 + 1] = { 0 };

    if (ballast)
        for (int s = 16; s <= 256; s++) keep[s] = malloc((size_t)s);

    for (int i = 0; i < NSIZES; i++) sizes[i] = (uint32_t)rng_range(&r, 16, 256);
    for (long i = 0; i < n; i++) {
        size_t sz = sizes[i & (NSIZES - 1)];
#ifdef FASTPATH_NOOP
        void *p = (void *)sz;
        __asm__ volatile("" : "+r"(p));
        acc += (uintptr_t)p;
        __asm__ volatile("" : : "r"(p) : "memory");
#else
        void *p = malloc(sz);
        __asm__ volatile("" : "+r"(p));
        acc += (uintptr_t)p;
        free(p);
#endif
    }
    for (int s = 16; s <= 256; s++) free(keep[s]);
    printf("fastpath: %ld pairs, ballast %d, acc %lx\n", n, ballast, (unsigned long)(acc & 0xfff));
    return 0;
}
