/* common.h: helpers shared by CMA's C tests: byte patterns, a PRNG, counter
 * comparisons and optimiser barriers. */
#ifndef CMA_TESTS_COMMON_H
#define CMA_TESTS_COMMON_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* Hides a pointer from the optimiser, which may otherwise delete a malloc/free
 * pair whose block is never used, or warn about (and fold) a deliberate
 * misuse such as freeing a static. */
static inline void *opaque(void *p)
{
    __asm__ volatile("" : "+r"(p) : : "memory");
    return p;
}

/* Hides a size from the optimiser, so that absurd sizes (SIZE_MAX) reach
 * the allocator instead of drawing -Walloc-size-larger-than errors. */
static inline size_t opaque_size(size_t n)
{
    __asm__ volatile("" : "+r"(n));
    return n;
}

/* Forces memory (errno included) to be read again after the calls before it:
 * GCC assumes free() never writes errno and would fold errno checks. */
#define COMPILER_BARRIER() __asm__ volatile("" : : : "memory")

static inline bool is_aligned(const void *p, size_t alignment)
{
    return ((uintptr_t)p & (alignment - 1)) == 0;
}

static inline size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

/* xorshift64*: deterministic pseudo-random numbers from a seed. */
static inline uint64_t rng_next(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 0x2545F4914F6CDD1DULL;
}

/* A position-dependent pattern: unlike a constant byte, it also catches data
 * that was copied to the wrong offset. */
static inline unsigned char pattern_byte(unsigned seed, size_t i)
{
    return (unsigned char)((i ^ (i >> 8) ^ (i >> 16)) * 31u + seed);
}

static inline void pattern_fill(void *p, size_t n, unsigned seed)
{
    unsigned char *b = (unsigned char *)p;
    for (size_t i = 0; i < n; i++)
        b[i] = pattern_byte(seed, i);
}

static inline bool pattern_ok(const void *p, size_t n, unsigned seed)
{
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != pattern_byte(seed, i))
            return false;
    return true;
}

/* True when all n bytes at p equal value. */
static inline bool bytes_are(const void *p, size_t n, unsigned char value)
{
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != value)
            return false;
    return true;
}

/* CMA's two process-wide counters (cma_get_stats). */
struct counters {
    size_t allocs;
    size_t frees;
};

/* The stress tests' condition: the number of outstanding blocks (allocations
 * minus frees) is unchanged, and neither counter went down. */
static inline bool counters_balanced(struct counters before, struct counters after)
{
    return after.allocs - after.frees == before.allocs - before.frees &&
           after.allocs >= before.allocs && after.frees >= before.frees;
}

static inline void counters_print(const char *label, struct counters before,
                                  struct counters after)
{
    printf("     %s: allocs %zu -> %zu, frees %zu -> %zu, outstanding %zu -> %zu\n",
           label, before.allocs, after.allocs, before.frees, after.frees,
           before.allocs - before.frees, after.allocs - after.frees);
}

static inline void *idle_thread(void *arg)
{
    return arg;
}

/* Creating a thread mallocs its TLS vector (through CMA); glibc caches the
 * stacks of joined threads with their vectors, up to a fixed budget. After
 * one batch of n threads the cache is in its steady state, and later batches
 * of at most n threads leave the outstanding count unchanged: call this
 * before reading the counters that a threaded check compares. */
static inline void threads_warm_up(int n)
{
    pthread_t threads[64];
    for (int i = 0; i < n && i < 64; i++)
        if (pthread_create(&threads[i], NULL, idle_thread, NULL) != 0) {
            perror("pthread_create");
            abort();
        }
    for (int i = 0; i < n && i < 64; i++)
        pthread_join(threads[i], NULL);
}

/* CMA reads its settings once, at start: a test that needs one (a short
 * purge delay, say) sets it and starts itself again, unless it is set
 * already (by that first start, or by whoever runs the test). Returns only
 * in the run that has it; exits 2 if the program cannot start again. */
static inline void run_with_setting(char **argv, const char *name, const char *value)
{
    if (getenv(name) != NULL)
        return;
    setenv(name, value, 1);
    execv("/proc/self/exe", argv);
    perror("execv");
    exit(2);
}

/* A watchdog thread: when watchdog_mark() has not been called for `seconds`
 * seconds, it prints a FAIL line naming the last mark and ends the program,
 * so that a hang (the ancestor's failure) says where it happened instead of
 * running into the runner's timeout. Uses write(2): a hung thread may hold
 * stdout's lock. Start it before reading any counters: it is a thread too. */
static atomic_long watchdog_stage;
static const char *watchdog_label = "stage";

static inline void watchdog_mark(long stage)
{
    atomic_store(&watchdog_stage, stage);
}

static inline void *watchdog_thread(void *arg)
{
    const int seconds = (int)(intptr_t)arg;
    const struct timespec tick = {0, 100 * 1000 * 1000};
    long last = atomic_load(&watchdog_stage);
    for (int idle = 0;; idle++) {
        nanosleep(&tick, NULL);
        long now = atomic_load(&watchdog_stage);
        if (now != last) {
            last = now;
            idle = 0;
        } else if (idle >= seconds * 10) {
            char line[160];
            int n = snprintf(line, sizeof line, "FAIL watchdog: %s %ld made no progress for %d s "
                             "(hang)\n", watchdog_label, now, seconds);
            if (write(STDOUT_FILENO, line, (size_t)n) < 0)
                _exit(3);
            _exit(1);
        }
    }
    return NULL;
}

static inline void watchdog_start(const char *label, int seconds)
{
    pthread_t thread;
    watchdog_label = label;
    if (pthread_create(&thread, NULL, watchdog_thread, (void *)(intptr_t)seconds) != 0) {
        perror("pthread_create");
        abort();
    }
    pthread_detach(thread);
}

#endif
