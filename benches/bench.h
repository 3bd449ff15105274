/*
 * bench.h - shared helpers for the CMA allocator benchmarks.
 *
 * Every benchmark is a standalone C program:
 *
 *     NAME [THREADS [SCALE [EXTRA...]]]
 *
 * and prints "key: value" lines on stdout, at least:
 *
 *     bench: NAME
 *     threads: T
 *     scale: S
 *     checksum: 16 hex digits   (from data written into and read back from
 *                                the allocated blocks; independent of thread
 *                                scheduling, so every correct allocator prints
 *                                the same value for the same arguments)
 *     errors: N                 (blocks whose contents did not read back as
 *                                written; the program exits 3 when N > 0)
 *     elapsed_s: seconds        (wall time of the measured part)
 *
 * Memory benchmarks add "rss_kb.POINT: N" lines (VmRSS at named points).
 * scripts/bench.sh parses these lines; keep the format stable.
 */
#ifndef CMA_BENCH_H
#define CMA_BENCH_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_UNUSED __attribute__((unused))

/* ------------------------------------------------------------------ */
/* Random numbers: splitmix64, one independent stream per seed.        */
/* ------------------------------------------------------------------ */

typedef struct {
    uint64_t s;
} rng_t;

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline rng_t rng_seed(uint64_t seed)
{
    rng_t r = { mix64(seed + 0x632be59bd9b4e019ULL) };
    return r;
}

static inline uint64_t rng_next(rng_t *r)
{
    r->s += 0x9e3779b97f4a7c15ULL;
    return mix64(r->s);
}

/* Uniform in [0, n). */
static inline uint64_t rng_below(rng_t *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

/* Uniform in [lo, hi]. */
static inline uint64_t rng_range(rng_t *r, uint64_t lo, uint64_t hi)
{
    return lo + rng_below(r, hi - lo + 1);
}

/* True with probability num/den. */
static inline int rng_chance(rng_t *r, uint64_t num, uint64_t den)
{
    return rng_below(r, den) < num;
}

static inline unsigned log2_floor(uint64_t x)
{
    return 63u - (unsigned)__builtin_clzll(x | 1);
}

/*
 * Size in [lo, hi], skewed to small: the power of two is the smaller of two
 * uniform draws over the doublings, then uniform inside the doubling.  Half
 * or more of the draws land in the lowest quarter of the doublings.
 */
static inline size_t size_skewed(rng_t *r, size_t lo, size_t hi)
{
    unsigned a = log2_floor(lo), b = log2_floor(hi);
    unsigned e1 = a + (unsigned)rng_below(r, b - a + 1);
    unsigned e2 = a + (unsigned)rng_below(r, b - a + 1);
    unsigned e = e1 < e2 ? e1 : e2;
    size_t base = (size_t)1 << e;
    size_t s = base + (size_t)rng_below(r, base);
    if (s < lo) s = lo;
    if (s > hi) s = hi;
    return s;
}

/* Size in [lo, hi], log-uniform (each doubling equally likely). */
static inline size_t size_loguniform(rng_t *r, size_t lo, size_t hi)
{
    unsigned a = log2_floor(lo), b = log2_floor(hi);
    unsigned e = a + (unsigned)rng_below(r, b - a + 1);
    size_t base = (size_t)1 << e;
    size_t s = base + (size_t)rng_below(r, base);
    if (s < lo) s = lo;
    if (s > hi) s = hi;
    return s;
}

/* ------------------------------------------------------------------ */
/* Block contents: write a pattern derived from a tag, read it back.    */
/* ------------------------------------------------------------------ */

/* Blocks up to this size get one word per cache line, bigger ones one
 * word per page (plus the last word), so huge blocks cost page faults
 * rather than memory bandwidth. */
#define BENCH_DENSE_LIMIT (64u * 1024u)

static atomic_ulong bench_errors;

static inline void st64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint64_t ld64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline size_t block_stride(size_t n)
{
    return n <= BENCH_DENSE_LIMIT ? 64 : 4096;
}

/* Write the pattern for (tag) into the n-byte block p. */
static inline void block_fill(void *p, size_t n, uint64_t tag)
{
    unsigned char *b = (unsigned char *)p;
    if (n < 8) {
        for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(tag >> (8 * i)) ^ 0x5a;
        return;
    }
    size_t stride = block_stride(n);
    /* Strided words up to the last word, which never overlaps them. */
    for (size_t off = 0; off + 16 <= n; off += stride) st64(b + off, tag + off);
    st64(b + n - 8, ~tag ^ (uint64_t)n);
}

/*
 * Read the pattern back; count mismatches in bench_errors and return a hash
 * of the words read (so the checksum depends on what the memory held).
 */
static inline uint64_t block_check(const void *p, size_t n, uint64_t tag)
{
    const unsigned char *b = (const unsigned char *)p;
    uint64_t h = (uint64_t)n * 0x9e3779b97f4a7c15ULL;
    int bad = 0;
    if (n < 8) {
        for (size_t i = 0; i < n; i++) {
            unsigned char want = (unsigned char)(tag >> (8 * i)) ^ 0x5a;
            bad |= b[i] != want;
            h = (h ^ b[i]) * 0x100000001b3ULL;
        }
    } else {
        size_t stride = block_stride(n);
        for (size_t off = 0; off + 16 <= n; off += stride) {
            uint64_t v = ld64(b + off);
            bad |= v != tag + off;
            h = (h ^ v) * 0x100000001b3ULL;
        }
        uint64_t v = ld64(b + n - 8);
        bad |= v != (~tag ^ (uint64_t)n);
        h ^= v;
    }
    if (bad) atomic_fetch_add_explicit(&bench_errors, 1, memory_order_relaxed);
    return mix64(h);
}

/* ------------------------------------------------------------------ */
/* Time, RSS, arguments, output.                                        */
/* ------------------------------------------------------------------ */

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void sleep_s(double s)
{
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A "Vm...:" field of /proc/self/status in kB, or -1. Uses no malloc. */
static BENCH_UNUSED long proc_status_kb(const char *field)
{
    char buf[4096];
    FILE *f = fopen("/proc/self/status", "r");
    long kb = -1;
    size_t len = strlen(field);
    if (!f) return -1;
    while (fgets(buf, sizeof buf, f)) {
        if (strncmp(buf, field, len) == 0 && buf[len] == ':') {
            kb = strtol(buf + len + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static BENCH_UNUSED long rss_kb(void) { return proc_status_kb("VmRSS"); }

static BENCH_UNUSED void print_rss(const char *point)
{
    printf("rss_kb.%s: %ld\n", point, rss_kb());
    fflush(stdout);
}

/* Calls malloc_trim(0) if the process has one (looked up at run time:
 * the preloaded allocator's, else glibc's), prints which object defined
 * it as "trim_from: LIB" and the RSS at `point` ("trim_from: none" and
 * -1 when there is none). */
static BENCH_UNUSED void trim_and_print_rss(const char *point)
{
    int (*trim)(size_t) = (int (*)(size_t))dlsym(RTLD_DEFAULT, "malloc_trim");
    if (!trim) {
        printf("trim_from: none\nrss_kb.%s: -1\n", point);
        return;
    }
    Dl_info info;
    const char *from = dladdr((void *)trim, &info) && info.dli_fname ? info.dli_fname : "?";
    const char *slash = strrchr(from, '/');
    printf("trim_from: %s\n", slash ? slash + 1 : from);
    trim(0);
    print_rss(point);
}

typedef struct {
    const char *name;
    int threads;
    double scale;
} bench_args_t;

static BENCH_UNUSED bench_args_t bench_parse(const char *name, int argc, char **argv,
                                             int default_threads)
{
    bench_args_t a = { name, default_threads, 1.0 };
    if (argc > 1) a.threads = atoi(argv[1]);
    if (argc > 2) a.scale = atof(argv[2]);
    if (a.threads < 1 || a.threads > 1024 || !(a.scale > 0)) {
        fprintf(stderr, "usage: %s [THREADS (1..1024) [SCALE (>0)]] ...\n", name);
        exit(2);
    }
    printf("bench: %s\nthreads: %d\nscale: %g\n", name, a.threads, a.scale);
    fflush(stdout);
    return a;
}

/* Scale a base count, at least 1. */
static inline uint64_t scaled(double scale, uint64_t base)
{
    double v = (double)base * scale;
    return v < 1 ? 1 : (uint64_t)v;
}

/* Print checksum, errors and time; returns the exit code for main. */
static BENCH_UNUSED int bench_finish(uint64_t checksum, double elapsed)
{
    unsigned long errs = atomic_load(&bench_errors);
    printf("checksum: %016llx\n", (unsigned long long)checksum);
    printf("errors: %lu\n", errs);
    printf("elapsed_s: %.6f\n", elapsed);
    fflush(stdout);
    if (errs) {
        fprintf(stderr, "%lu blocks did not read back as written: the allocator returned "
                        "overlapping or wrong memory\n", errs);
        return 3;
    }
    return 0;
}

static BENCH_UNUSED void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p && n) {
        fprintf(stderr, "malloc(%zu) failed\n", n);
        exit(4);
    }
    return p;
}

static BENCH_UNUSED void *xcalloc(size_t n, size_t m)
{
    void *p = calloc(n, m);
    if (!p && n && m) {
        fprintf(stderr, "calloc(%zu, %zu) failed\n", n, m);
        exit(4);
    }
    return p;
}

static BENCH_UNUSED void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q && n) {
        fprintf(stderr, "realloc(%zu) failed\n", n);
        exit(4);
    }
    return q;
}

static BENCH_UNUSED void spawn(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int rc = pthread_create(t, NULL, fn, arg);
    if (rc) {
        fprintf(stderr, "pthread_create: %s\n", strerror(rc));
        exit(4);
    }
}

#endif
