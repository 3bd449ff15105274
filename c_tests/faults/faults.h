/* faults.h: what the fault-injection programs of c_tests/faults/ share: the
 * block categories and their sizes, the bad pointers, announcing the
 * pointer and thread a diagnostic must name, and the six hammer threads.
 *
 * Built two ways (see run.sh):
 *   plain   no -lcma, run with LD_PRELOAD=libcma.so: the malloc family only
 *   linked  -DFAULTS_LINKED, linked with -lcma: the cma_* API too, and the
 *           blocks come from cma_malloc
 */
#ifndef CMA_FAULTS_H
#define CMA_FAULTS_H

#include <dlfcn.h>
#include <sched.h>
#include <stdarg.h>
#include <sys/mman.h>

#include "common.h"

/* Each program uses some of these helpers. */
#define FAULTS_API __attribute__((unused)) static

#ifdef FAULTS_LINKED
#include <cma.h>
#define ALLOC(n) cma_malloc(n)
#define REALLOC(p, n) cma_realloc(p, n)
#define FREE(p) cma_free(p)
#else
#define ALLOC(n) malloc(n)
#define REALLOC(p, n) realloc(p, n)
#define FREE(p) free(p)
#endif

/* ---- output ---------------------------------------------------------------
 * Everything goes to stdout with write(2): no stdio buffer to lose when CMA
 * aborts the process, and no allocation of our own in the middle of a case.
 * stderr belongs to CMA's diagnostic. */

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
FAULTS_API void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line)
        n = (int)sizeof line - 1;
    if (write(STDOUT_FILENO, line, (size_t)n) < 0)
        _exit(4);
}

/* The test itself could not be set up (not a finding about CMA). */
enum { EXIT_SETUP = 2, EXIT_HAMMER = 3 };

static void setup_failed(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
FAULTS_API void setup_failed(const char *fmt, ...)
{
    char line[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    say("SETUP FAILED: %s\n", line);
    _exit(EXIT_SETUP);
}

/* The runner accepts a diagnostic that names one of the announced pointers
 * and the announced thread (the one about to misuse the heap). */
FAULTS_API void announce_pointer(const void *p)
{
    say("pointer %p\n", p);
}

FAULTS_API void announce_thread(void)
{
    say("thread %ld\n", (long)gettid());
}

/* ---- block categories -------------------------------------------------- */

enum category { SMALL, MEDIUM, LARGE, HUGE, CATEGORIES };

/* One request size per category, each of a size class that neither the
 * hammer threads (hammer_size) nor the churn of the fault cases use: a
 * freed test block cannot be handed out again to someone else by accident.
 *   small  720 bytes          (class 705..768)
 *   medium 40000 bytes        (class 36865..40960)
 *   large  1 MiB + 12345      (a span of its own)
 *   huge   6 MiB + 4321       (a mapping of its own) */
static const struct {
    const char *name;
    size_t size;
} categories[CATEGORIES] = {
    {"small", 720},
    {"medium", 40000},
    {"large", MiB + 12345},
    {"huge", 6 * MiB + 4321},
};

FAULTS_API int category_named(const char *name)
{
    for (int c = 0; c < CATEGORIES; c++)
        if (strcmp(categories[c].name, name) == 0)
            return c;
    return -1;
}

/* A pattern over a block: every byte up to 64 KiB, then one byte per 4 KiB
 * up to 1 MiB, then one per 64 KiB, and the last byte: enough to see a block
 * moved, shared or overwritten, without faulting in every page of every
 * large and huge block. */
FAULTS_API size_t fill_stride(size_t size)
{
    return size <= 64 * KiB ? 1 : size <= MiB ? 4 * KiB : 64 * KiB;
}

FAULTS_API void block_fill(void *p, size_t size, unsigned seed)
{
    unsigned char *b = (unsigned char *)p;
    for (size_t i = 0; i < size; i += fill_stride(size))
        b[i] = pattern_byte(seed, i);
    b[size - 1] = pattern_byte(seed, size - 1);
}

FAULTS_API bool block_intact(const void *p, size_t size, unsigned seed)
{
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < size; i += fill_stride(size))
        if (b[i] != pattern_byte(seed, i))
            return false;
    return b[size - 1] == pattern_byte(seed, size - 1);
}

/* ---- a freed address handed out again -----------------------------------
 * A double-free test frees a block and then frees it again. Under the
 * hammer, the freed memory of a large block (its span) or a huge one (its
 * address range) may legitimately be handed out to a hammer thread in
 * between, and then the second free is no longer a double free. Such a run
 * proves nothing either way: the hammer threads watch for the test's
 * address in every block they get, and the first to see it says "REUSED"
 * on stdout; run.sh then runs the case again (a few times at most). */

enum { EXIT_REUSED = 5 };

static _Atomic uintptr_t watched_address;
static atomic_bool watched_address_seen;   /* claimed by the reporter */
static atomic_bool watched_address_reused; /* set once reported */

/* Watch `p`, a live block about to be freed by the test. */
FAULTS_API void watch_address(const void *p)
{
    atomic_store(&watched_address, (uintptr_t)p);
}

/* A hammer thread got block p of `size` bytes (its usable size is at most
 * 12.5 % more, plus alignment). */
FAULTS_API void note_block(const void *p, size_t size)
{
    uintptr_t w = atomic_load_explicit(&watched_address, memory_order_relaxed);
    if (w != 0 && w - (uintptr_t)p < size + size / 8 + 16 &&
        !atomic_exchange(&watched_address_seen, true)) {
        say("REUSED: a hammer thread was handed block %p (%zu bytes), which holds the "
            "test's freed address %p\n", p, size, (void *)w);
        atomic_store(&watched_address_reused, true);
    }
}

/* Ends a run whose outcome is moot because of such a reuse. */
FAULTS_API void exit_if_reused(void)
{
    if (atomic_load(&watched_address_seen)) {
        while (!atomic_load(&watched_address_reused))
            sched_yield(); /* the REUSED line is on its way */
        say("the freed test block was handed out again: run again\n");
        _exit(EXIT_REUSED);
    }
}

/* ---- bad pointers -------------------------------------------------------- */

enum bad_kind {
    BAD_STACK,         /* a local array */
    BAD_STATIC,        /* a static array */
    BAD_GLIBC,         /* a block of glibc's own malloc */
    BAD_MMAP,          /* a page from mmap */
    BAD_INTERIOR16,    /* p + 16 */
    BAD_INTERIOR_HALF, /* p + size/2, rounded down to 16 (aligned, deep inside) */
    BAD_MISALIGNED1,   /* p + 1 */
    BAD_MISALIGNED8,   /* p + 8 */
    BAD_FREED,         /* p, already freed */
    BAD_KINDS
};

static const struct {
    const char *name;
    bool per_category; /* one case per category (the pointer is into a block) */
    bool freed;        /* a double free (else: not a block CMA handed out) */
} bad_kinds[BAD_KINDS] = {
    {"stack", false, false},      {"static", false, false},
    {"glibc", false, false},      {"mmap", false, false},
    {"interior16", true, false},  {"interior_half", true, false},
    {"misaligned1", true, false}, {"misaligned8", true, false},
    {"freed", true, true},
};

static unsigned char static_buffer[256] __attribute__((aligned(64)));

/* glibc's own malloc, found in libc.so.6 itself: under LD_PRELOAD (and when
 * linked with -lcma) both dlsym(RTLD_DEFAULT) and dlsym(RTLD_NEXT) from the
 * program find CMA's malloc first, so the lookup goes through libc's handle,
 * and dladdr confirms where the function lives. */
FAULTS_API void *glibc_malloc(size_t size)
{
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (libc == NULL)
        setup_failed("dlopen(libc.so.6, RTLD_NOLOAD): %s", dlerror());
    void *sym = dlsym(libc, "malloc");
    void *ours = dlsym(RTLD_DEFAULT, "malloc");
    Dl_info info;
    if (sym == NULL || dladdr(sym, &info) == 0 || strstr(info.dli_fname, "libc.so") == NULL)
        setup_failed("glibc's malloc not found in libc.so.6");
    if (sym == ours)
        setup_failed("malloc resolves to glibc's: CMA is not the process's allocator");
    void *(*fn)(size_t);
    memcpy(&fn, &sym, sizeof fn);
    void *p = fn(size);
    if (p == NULL)
        setup_failed("glibc malloc(%zu) failed", size);
    return p;
}

/* A bad pointer, and the live block it points into (NULL if none). */
struct bad {
    void *ptr;
    void *block;
    size_t size;
    unsigned seed;
};

/* The free through which a freed test block is freed the first time (the
 * legitimate free), hidden from GCC's -Wuse-after-free analysis. */
FAULTS_API void free_block(void *p)
{
    FREE(opaque(p));
}

/* Makes the bad pointer of `kind` (of category `cat` where it applies).
 * `stack` is a buffer in a frame that outlives the misuse. With `announce`,
 * announces the pointer and the calling thread: for a freed block before
 * the first free, so that the second follows right after it (the less time
 * in between, the less chance the hammer threads are handed the memory). */
FAULTS_API struct bad make_bad(enum bad_kind kind, int cat, unsigned char *stack, bool announce)
{
    struct bad b = {NULL, NULL, 0, 0};
    switch (kind) {
    case BAD_STACK: b.ptr = stack + 16; break;
    case BAD_STATIC: b.ptr = static_buffer + 64; break;
    case BAD_GLIBC: b.ptr = glibc_malloc(64); break;
    case BAD_MMAP:
        b.ptr = mmap(NULL, page_size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (b.ptr == MAP_FAILED)
            setup_failed("mmap of one page failed");
        break;
    default: break;
    }
    if (b.ptr != NULL) {
        b.ptr = opaque(b.ptr);
        if (announce) {
            announce_pointer(b.ptr);
            announce_thread();
        }
        return b;
    }
    b.size = categories[cat].size;
    b.seed = (unsigned)kind * 7 + (unsigned)cat;
    b.block = ALLOC(b.size);
    if (b.block == NULL)
        setup_failed("allocating the %s test block (%zu bytes) failed", categories[cat].name,
                      b.size);
    block_fill(b.block, b.size, b.seed);
    unsigned char *p = (unsigned char *)b.block;
    switch (kind) {
    case BAD_INTERIOR16: b.ptr = p + 16; break;
    case BAD_INTERIOR_HALF: b.ptr = p + ((b.size / 2) & ~(size_t)15); break;
    case BAD_MISALIGNED1: b.ptr = p + 1; break;
    case BAD_MISALIGNED8: b.ptr = p + 8; break;
    case BAD_FREED:
        b.ptr = b.block;
        if (announce) {
            announce_pointer(b.ptr);
            announce_thread();
        }
        watch_address(b.block);
        free_block(b.block);
        b.block = NULL; /* no live block any more */
        return b;
    default: break;
    }
    b.ptr = opaque(b.ptr);
    if (announce) {
        announce_pointer(b.ptr);
        announce_thread();
    }
    return b;
}

/* ---- another thread ------------------------------------------------------
 * A helper thread that runs one function at a time, on request, and stays
 * alive in between (its heap, foreign cache and outbox stay live too). */

struct helper {
    pthread_t thread;
    _Atomic long tid; /* its kernel thread id, once started */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    void (*job)(void *);
    void *arg;
    bool done;
};

FAULTS_API void *helper_main(void *arg)
{
    struct helper *h = (struct helper *)arg;
    atomic_store(&h->tid, (long)gettid());
    pthread_mutex_lock(&h->lock);
    for (;;) {
        while (h->job == NULL)
            pthread_cond_wait(&h->cond, &h->lock);
        void (*job)(void *) = h->job;
        pthread_mutex_unlock(&h->lock);
        job(h->arg);
        pthread_mutex_lock(&h->lock);
        h->job = NULL;
        h->done = true;
        pthread_cond_broadcast(&h->cond);
    }
    return NULL;
}

FAULTS_API void helper_start(struct helper *h)
{
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    h->job = NULL;
    h->done = false;
    atomic_store(&h->tid, 0);
    if (pthread_create(&h->thread, NULL, helper_main, h) != 0)
        setup_failed("pthread_create (helper)");
    while (atomic_load(&h->tid) == 0)
        sched_yield();
}

/* Runs job(arg) on the helper thread and waits until it is done. */
FAULTS_API void helper_run(struct helper *h, void (*job)(void *), void *arg)
{
    pthread_mutex_lock(&h->lock);
    h->arg = arg;
    h->done = false;
    h->job = job;
    pthread_cond_broadcast(&h->cond);
    while (!h->done)
        pthread_cond_wait(&h->cond, &h->lock);
    pthread_mutex_unlock(&h->lock);
}

/* ---- the hammer: six threads keeping the heap busy ------------------------
 * Each thread mallocs, verifies, reallocs and frees blocks of small and
 * medium sizes over its own slots, and swaps blocks with the other threads
 * through shared mailboxes, so that a good share of its frees and reallocs
 * are of blocks another thread allocated (cross-thread frees). Every block
 * carries its size and seed in its first 16 bytes and a pattern after them.
 *
 * Sizes: 16..512 and 1025..32768 bytes, never a test block's class (see
 * categories). No large or huge blocks: a freed large span or huge mapping
 * of a test could otherwise be handed out again to a hammer thread between
 * the two frees of a double-free test, which would make that test flaky. */

#define HAMMER_THREADS 6
#define HAMMER_SLOTS 48
#define HAMMER_MAILBOXES 32
#define HAMMER_WARM_OPS 1000

struct hammer_header {
    size_t size;
    uint64_t seed;
};

static struct {
    pthread_t threads[HAMMER_THREADS];
    atomic_bool stop;
    atomic_long ops[HAMMER_THREADS];
    atomic_int failures;
    char first_failure[200];
    atomic_flag failure_claimed;
    bool exit_on_failure; /* abort cases: a hammer failure ends the program */
    _Atomic(unsigned char *) mailbox[HAMMER_MAILBOXES];
} hammer;

FAULTS_API size_t hammer_size(uint64_t *rng)
{
    uint64_t r = rng_next(rng);
    if (r % 8 == 0)
        return 1025 + (r >> 8) % (32 * KiB - 1025 + 1);
    return 16 + (r >> 8) % (512 - 16 + 1);
}

FAULTS_API size_t hammer_checked_bytes(size_t size)
{
    return size < 256 ? size : 256;
}

FAULTS_API void hammer_fill(unsigned char *p, size_t size, uint64_t seed)
{
    struct hammer_header h = {size, seed};
    memcpy(p, &h, sizeof h);
    size_t n = hammer_checked_bytes(size);
    for (size_t i = sizeof h; i < n; i++)
        p[i] = pattern_byte((unsigned)seed, i);
    p[size - 1] = pattern_byte((unsigned)seed, size - 1);
}

/* Checks the header and pattern of a block; returns its size (0 if bad). */
FAULTS_API size_t hammer_verify(const unsigned char *p)
{
    struct hammer_header h;
    memcpy(&h, p, sizeof h);
    if (h.size < 16 || h.size > 32 * KiB)
        return 0;
    size_t n = hammer_checked_bytes(h.size);
    for (size_t i = sizeof h; i < n; i++)
        if (p[i] != pattern_byte((unsigned)h.seed, i))
            return 0;
    if (p[h.size - 1] != pattern_byte((unsigned)h.seed, h.size - 1))
        return 0;
    return h.size;
}

FAULTS_API void hammer_failed(int t, const char *what, const void *p)
{
    atomic_fetch_add(&hammer.failures, 1);
    if (!atomic_flag_test_and_set(&hammer.failure_claimed))
        snprintf(hammer.first_failure, sizeof hammer.first_failure,
                 "hammer thread %d: %s (block %p)", t, what, p);
    if (hammer.exit_on_failure) {
        say("HAMMER FAILED: hammer thread %d: %s (block %p)\n", t, what, p);
        _exit(EXIT_HAMMER);
    }
}

FAULTS_API void *hammer_thread(void *arg)
{
    const int t = (int)(intptr_t)arg;
    uint64_t rng = 0x5eed0000ULL + (uint64_t)t * 7919;
    uint64_t seed = (uint64_t)t << 32;
    unsigned char *slots[HAMMER_SLOTS] = {NULL};

    while (!atomic_load_explicit(&hammer.stop, memory_order_relaxed)) {
        uint64_t r = rng_next(&rng);
        unsigned char **slot = &slots[r % HAMMER_SLOTS];
        unsigned choice = (unsigned)(r >> 16) % 8;
        if (*slot == NULL) {
            size_t size = hammer_size(&rng);
            unsigned char *p = (unsigned char *)ALLOC(size);
            if (p == NULL) {
                hammer_failed(t, "malloc failed", NULL);
            } else {
                note_block(p, size);
                hammer_fill(p, size, seed++);
                *slot = p;
            }
        } else if (hammer_verify(*slot) == 0) {
            hammer_failed(t, "block corrupt", *slot);
            *slot = NULL; /* leaked: it cannot be trusted */
        } else if (choice == 0) {
            /* Swap with a mailbox: the block taken out is another
             * thread's, freed or reallocated here later. */
            unsigned char *got =
                atomic_exchange(&hammer.mailbox[(r >> 24) % HAMMER_MAILBOXES], *slot);
            if (got != NULL && hammer_verify(got) == 0) {
                hammer_failed(t, "block from a mailbox corrupt", got);
                got = NULL;
            }
            *slot = got;
        } else if (choice <= 2) {
            size_t old_size = hammer_verify(*slot);
            size_t size = hammer_size(&rng);
            struct hammer_header h;
            memcpy(&h, *slot, sizeof h);
            unsigned char *p = (unsigned char *)REALLOC(*slot, size);
            if (p == NULL) {
                hammer_failed(t, "realloc failed", *slot);
                continue;
            }
            note_block(p, size);
            /* The kept prefix moved along: header and pattern. */
            size_t kept = hammer_checked_bytes(old_size < size ? old_size : size);
            bool ok = memcmp(p, &h, sizeof h) == 0;
            for (size_t i = sizeof h; ok && i < kept; i++)
                ok = p[i] == pattern_byte((unsigned)h.seed, i);
            if (!ok)
                hammer_failed(t, "realloc lost the contents", p);
            hammer_fill(p, size, seed++);
            *slot = p;
        } else {
            FREE(*slot);
            *slot = NULL;
        }
        atomic_fetch_add_explicit(&hammer.ops[t], 1, memory_order_relaxed);
    }
    for (int i = 0; i < HAMMER_SLOTS; i++) {
        if (slots[i] != NULL && hammer_verify(slots[i]) == 0)
            hammer_failed(t, "block corrupt at the end", slots[i]);
        FREE(slots[i]);
    }
    return NULL;
}

/* Starts the six threads and returns once each has done
 * HAMMER_WARM_OPS operations (so they are in full swing). */
FAULTS_API void hammer_start(bool exit_on_failure)
{
    hammer.exit_on_failure = exit_on_failure;
    for (int t = 0; t < HAMMER_THREADS; t++)
        if (pthread_create(&hammer.threads[t], NULL, hammer_thread, (void *)(intptr_t)t) != 0)
            setup_failed("pthread_create (hammer thread %d)", t);
    for (int t = 0; t < HAMMER_THREADS; t++)
        while (atomic_load(&hammer.ops[t]) < HAMMER_WARM_OPS)
            sched_yield();
}

FAULTS_API long hammer_total_ops(void)
{
    long total = 0;
    for (int t = 0; t < HAMMER_THREADS; t++)
        total += atomic_load(&hammer.ops[t]);
    return total;
}

/* Stops and joins the threads, then frees what the mailboxes hold. Returns
 * the number of failures the threads saw (0: every block intact, every call
 * served). */
FAULTS_API int hammer_stop(void)
{
    atomic_store(&hammer.stop, true);
    for (int t = 0; t < HAMMER_THREADS; t++)
        pthread_join(hammer.threads[t], NULL);
    for (int i = 0; i < HAMMER_MAILBOXES; i++) {
        unsigned char *p = atomic_exchange(&hammer.mailbox[i], NULL);
        if (p != NULL && hammer_verify(p) == 0)
            hammer_failed(-1, "mailbox block corrupt at the end", p);
        FREE(p);
    }
    return atomic_load(&hammer.failures);
}

#endif
