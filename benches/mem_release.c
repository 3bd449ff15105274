/*
 * mem_release: is memory given back to the OS after a big free?
 *
 * Allocates 1 GiB (at the default scale) in 64 KiB blocks, touches every
 * page, frees everything, then sleeps (1.5 s by default: longer than the
 * decay or purge delay of most allocators) calling nothing else, and
 * reports the RSS.  Then, as a second variant, calls malloc_trim(0) -- if
 * the process has one; the program prints which library provided it --
 * and reports the RSS again.
 *
 * Output (besides the common lines):
 *     rss_kb.start       before allocating
 *     rss_kb.peak        everything allocated and touched
 *     rss_kb.after_free  after free() of everything and the sleep
 *     rss_kb.after_trim  after malloc_trim(0)   (-1 when there is none)
 *     trim_from: LIB     the object that defined malloc_trim
 * elapsed_s covers allocating, touching and freeing (not the sleep).
 *
 *     mem_release [THREADS [SCALE [SLEEP_S]]]   THREADS is ignored (1)
 */
#include "bench.h"

#define BLOCK (64 * 1024)

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse("mem_release", argc, argv, 1);
    double pause = argc > 3 ? atof(argv[3]) : 1.5;
    size_t nblocks = (size_t)scaled(a.scale, 16384); /* 16384 x 64 KiB = 1 GiB */
    unsigned char **v = (unsigned char **)xcalloc(nblocks, sizeof(void *));
    uint64_t sum = 0;

    print_rss("start");
    double t0 = now_s();
    for (size_t i = 0; i < nblocks; i++) {
        v[i] = (unsigned char *)xmalloc(BLOCK);
        for (size_t off = 0; off < BLOCK; off += 4096) st64(v[i] + off, (uint64_t)i * BLOCK + off);
        st64(v[i] + BLOCK - 8, ~(uint64_t)i);
    }
    double t1 = now_s();
    print_rss("peak");
    double t2 = now_s();
    for (size_t i = 0; i < nblocks; i++) {
        for (size_t off = 0; off < BLOCK; off += 4096) {
            uint64_t x = ld64(v[i] + off);
            if (x != (uint64_t)i * BLOCK + off) atomic_fetch_add(&bench_errors, 1);
            sum = mix64(sum ^ x);
        }
        if (ld64(v[i] + BLOCK - 8) != ~(uint64_t)i) atomic_fetch_add(&bench_errors, 1);
        free(v[i]);
    }
    double t3 = now_s();
    sleep_s(pause);
    print_rss("after_free");

    /* Second variant: malloc_trim(0), looked up at run time. */
    trim_and_print_rss("after_trim");
    free(v);
    return bench_finish(sum, (t1 - t0) + (t3 - t2));
}
