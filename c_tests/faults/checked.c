/* checked.c: the checked API's side of the fault cases. cma_checked_free
 * and cma_checked_block_size must return the error (and record it as the
 * last error) instead of ending the process, change nothing, hold no lock,
 * and leave the heap fully usable.
 *
 * Usage: checked --list              the cases: name|ok|modes|-|-
 *        checked CASE [--threads]
 *
 * A run makes one bad pointer (faults.h: make_bad, or a block freed by
 * another thread, or in secure mode a block overflowed into its neighbour)
 * and checks:
 *   - cma_checked_free and cma_checked_block_size return the expected code
 *     and cma_last_error() agrees; the size out-parameter is untouched;
 *   - nothing changed: the counters (cma_get_extended_stats) are the same
 *     (without --threads), a second cma_checked_free gives the same answer
 *     (not checked for a freed block under the hammer: its memory may be
 *     handed out again meanwhile), the block a bad pointer points into is
 *     intact and still frees;
 *   - the heap is fully usable: blocks of every category allocated (malloc,
 *     calloc, realloc across categories), verified and freed, every call
 *     returning CMA_OK.
 * With --threads, six hammer threads (faults.h) run throughout; afterwards
 * they must all stop and join (no lock left held) having seen no failure.
 * Exits 0 when every check passed. Linked with -lcma only.
 */
#define FAULTS_LINKED 1
#include "faults.h"

enum checked_kind {
    CK_BAD,              /* make_bad(kind, cat) */
    CK_FREED_BY_OTHER,   /* freed by another thread, then checked here */
    CK_OVERFLOW,         /* secure mode: overflow into the neighbour */
};

struct ccase {
    char name[64];
    enum checked_kind what;
    int kind;
    int cat;
    int param;
    bool secure_only;
};

static struct ccase cases[128];
static int case_count;

static struct ccase *add_case(enum checked_kind what, int kind, int cat, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static struct ccase *add_case(enum checked_kind what, int kind, int cat, const char *fmt, ...)
{
    struct ccase *c = &cases[case_count++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->name, sizeof c->name, fmt, ap);
    va_end(ap);
    c->what = what;
    c->kind = kind;
    c->cat = cat;
    return c;
}

static void register_cases(void)
{
    for (int k = 0; k < BAD_KINDS; k++) {
        if (!bad_kinds[k].per_category) {
            add_case(CK_BAD, k, -1, "checked.%s", bad_kinds[k].name);
            continue;
        }
        for (int cat = 0; cat < CATEGORIES; cat++)
            add_case(CK_BAD, k, cat, "checked.%s.%s", bad_kinds[k].name, categories[cat].name);
    }
    for (int cat = 0; cat < CATEGORIES; cat++)
        add_case(CK_FREED_BY_OTHER, BAD_FREED, cat, "checked.freed_by_other_thread.%s",
                 categories[cat].name);
    static const int overflow_bytes[] = {1, 8, 16};
    for (int cat = SMALL; cat <= MEDIUM; cat++)
        for (int i = 0; i < 3; i++) {
            struct ccase *c = add_case(CK_OVERFLOW, -1, cat, "checked.overflow%d.%s",
                                       overflow_bytes[i], categories[cat].name);
            c->param = overflow_bytes[i];
            c->secure_only = true;
        }
}

static const char *code_name(enum CmaError e)
{
    switch (e) {
    case CMA_OK: return "CMA_OK";
    case CMA_ERROR_OUT_OF_MEMORY: return "CMA_ERROR_OUT_OF_MEMORY";
    case CMA_ERROR_INVALID_ARGUMENT: return "CMA_ERROR_INVALID_ARGUMENT";
    case CMA_ERROR_INVALID_POINTER: return "CMA_ERROR_INVALID_POINTER";
    case CMA_ERROR_DOUBLE_FREE: return "CMA_ERROR_DOUBLE_FREE";
    case CMA_ERROR_CORRUPTED: return "CMA_ERROR_CORRUPTED";
    }
    return "(unknown code)";
}

/* Through a volatile pointer: GCC must not reason about a free of a freed
 * block or a static. */
static enum CmaError (*volatile checked_free_fn)(void *) = cma_checked_free;

struct snapshot {
    size_t allocs, frees, current, peak;
};

static struct snapshot snap(void)
{
    struct snapshot s;
    cma_get_extended_stats(&s.allocs, &s.frees, &s.current, &s.peak);
    return s;
}

static bool same_counters(struct snapshot a, struct snapshot b)
{
    return a.allocs == b.allocs && a.frees == b.frees && a.current == b.current;
}

/* ---- the heap is fully usable ------------------------------------------- */

struct live {
    unsigned char *p;
    size_t size;
    unsigned seed;
};

static size_t exercise_size(int cat, int i)
{
    static const size_t lo[CATEGORIES] = {1, 1025, 128 * KiB + 1, 2 * MiB + 1};
    static const size_t hi[CATEGORIES] = {KiB, 128 * KiB, 2 * MiB, 5 * MiB};
    /* Spread over the category: i = 0 the smallest, then strides. */
    return lo[cat] + (size_t)i * 7919 * (hi[cat] / 256 + 1) % (hi[cat] - lo[cat] + 1);
}

static const int exercise_count[CATEGORIES] = {64, 32, 8, 3};

/* Allocates, verifies, resizes and frees blocks of every category. */
static void exercise_heap(const char *when)
{
    struct live blocks[64 + 32 + 8 + 3];
    int n = 0, bad_calls = 0, corrupt = 0, not_zero = 0, bad_sizes = 0;
    unsigned seed = 1000;

    for (int round = 0; round < 2; round++) {
        n = 0;
        for (int cat = 0; cat < CATEGORIES; cat++)
            for (int i = 0; i < exercise_count[cat]; i++) {
                size_t size = exercise_size(cat, i + round);
                unsigned char *p;
                if (i % 4 == 1) {
                    p = (unsigned char *)cma_calloc(1, size);
                    if (p != NULL && !(bytes_are(p, size < 4096 ? size : 4096, 0) &&
                                       p[size - 1] == 0))
                        not_zero++;
                } else {
                    p = (unsigned char *)cma_malloc(size);
                }
                if (p == NULL || cma_last_error() != CMA_OK) {
                    bad_calls++;
                    continue;
                }
                blocks[n] = (struct live){p, size, seed++};
                block_fill(p, size, blocks[n].seed);
                n++;
            }
        /* Every block intact and of the right size; a few move to another
         * category through realloc, keeping their contents. */
        for (int i = 0; i < n; i++) {
            struct live *b = &blocks[i];
            size_t usable = 0;
            if (cma_checked_block_size(b->p, &usable) != CMA_OK || usable < b->size)
                bad_sizes++;
            if (!block_intact(b->p, b->size, b->seed))
                corrupt++;
            if (i % 5 == 0) {
                size_t new_size = exercise_size((i / 5 + round) % CATEGORIES, i);
                unsigned char *q = (unsigned char *)cma_realloc(b->p, new_size);
                if (q == NULL || cma_last_error() != CMA_OK) {
                    bad_calls++;
                    continue;
                }
                /* The old pattern survives in the first `kept` bytes. */
                size_t kept = new_size < b->size ? new_size : b->size;
                for (size_t j = 0; j < kept; j += fill_stride(b->size))
                    if (q[j] != pattern_byte(b->seed, j))
                        corrupt++;
                b->p = q;
                b->size = new_size;
                b->seed = seed++;
                block_fill(q, new_size, b->seed);
            }
        }
        /* Freed in an order that is neither the order of allocation nor its
         * reverse. */
        for (int step = 0; step < n; step++) {
            struct live *b = &blocks[(step * 7) % n];
            if (n % 7 == 0)
                b = &blocks[step];
            if (!block_intact(b->p, b->size, b->seed))
                corrupt++;
            if (cma_checked_free(b->p) != CMA_OK)
                bad_calls++;
        }
    }
    CHECK_MSG(bad_calls == 0 && corrupt == 0 && not_zero == 0 && bad_sizes == 0,
              "%s: 2 rounds of %d blocks of every category (malloc, calloc, realloc across "
              "categories, checked free): %d failed calls, %d corrupt, %d calloc not zeroed, "
              "%d wrong sizes",
              when, n, bad_calls, corrupt, not_zero, bad_sizes);
}

/* ---- the cases ------------------------------------------------------------ */

static void free_job(void *arg)
{
    cma_free(arg);
}

/* Checks a bad pointer with both checked calls, `times` times. */
static void check_rejected(const char *name, void *ptr, enum CmaError want_free,
                           enum CmaError want_size, int times)
{
    for (int time = 1; time <= times; time++) {
        enum CmaError got = checked_free_fn(ptr);
        enum CmaError last = cma_last_error();
        if (got != want_free)
            exit_if_reused();
        CHECK_MSG(got == want_free && last == want_free,
                  "%s: cma_checked_free(%p) #%d returned %s, last error %s (want %s)", name, ptr,
                  time, code_name(got), code_name(last), code_name(want_free));
        size_t size = 0xdeadbeef;
        got = cma_checked_block_size(ptr, &size);
        last = cma_last_error();
        CHECK_MSG(got == want_size && last == want_size && size == 0xdeadbeef,
                  "%s: cma_checked_block_size(%p) #%d returned %s, last error %s, size %s "
                  "(want %s, size untouched)",
                  name, ptr, time, code_name(got), code_name(last),
                  size == 0xdeadbeef ? "untouched" : "written", code_name(want_size));
    }
}

static int compare_pointers(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* Secure mode: overflow a block by `bytes` bytes past its usable size into
 * the live block above it; the checked frees (of the block, then of the
 * neighbour) must report CMA_ERROR_CORRUPTED, at the latest for the
 * neighbour. The two blocks are left allocated. */
static void check_overflow(const char *name, int cat, int bytes)
{
    enum { N = 24 };
    const size_t size = categories[cat].size;
    uintptr_t blocks[N];
    for (int i = 0; i < N; i++) {
        blocks[i] = (uintptr_t)cma_malloc(size);
        REQUIRE(blocks[i] != 0);
        memset((void *)blocks[i], 0x22, size);
    }
    qsort(blocks, N, sizeof blocks[0], compare_pointers);
    int best = 0;
    for (int i = 1; i + 1 < N; i++)
        if (blocks[i + 1] - blocks[i] < blocks[best + 1] - blocks[best])
            best = i;
    unsigned char *p = (unsigned char *)blocks[best], *q = (unsigned char *)blocks[best + 1];
    size_t usable = cma_block_size(p);
    CHECK_MSG(usable >= size && p + usable <= q, "%s: block %p (usable %zu), neighbour %p",
              name, (void *)p, usable, (void *)q);
    volatile unsigned char *end = p + usable;
    for (int i = 0; i < bytes; i++)
        end[i] ^= 0xa5;

    enum CmaError first = cma_checked_free(p);
    const char *which = "the block";
    if (first == CMA_OK) {
        first = cma_checked_free(q);
        which = "its neighbour";
    }
    CHECK_MSG(first == CMA_ERROR_CORRUPTED && cma_last_error() == first,
              "%s: %d bytes written past the usable size: cma_checked_free of %s returned %s "
              "(want CMA_ERROR_CORRUPTED)",
              name, bytes, which, code_name(first));
    for (int i = 0; i < N; i++)
        if (blocks[i] != (uintptr_t)p && blocks[i] != (uintptr_t)q)
            CHECK_MSG(cma_checked_free((void *)blocks[i]) == CMA_OK,
                      "%s: the other blocks free", name);
}

static void run_case(const struct ccase *c, bool threads)
{
    unsigned char stack[256] __attribute__((aligned(16)));
    static struct helper other;
    memset(stack, 0, sizeof stack);

    if (c->what == CK_OVERFLOW) {
        check_overflow(c->name, c->cat, c->param);
        exercise_heap(c->name);
        return;
    }

    struct bad b;
    if (c->what == CK_FREED_BY_OTHER) {
        size_t size = categories[c->cat].size;
        b = (struct bad){cma_malloc(size), NULL, size, 0};
        REQUIRE(b.ptr != NULL);
        helper_start(&other);
        watch_address(b.ptr);
        helper_run(&other, free_job, b.ptr);
    } else {
        b = make_bad((enum bad_kind)c->kind, c->cat, stack, false);
    }
    enum CmaError want = bad_kinds[c->kind].freed ? CMA_ERROR_DOUBLE_FREE
                                                  : CMA_ERROR_INVALID_POINTER;

    /* With the hammer, the counters move anyway: no snapshot, and so no
     * delay between a block's free and the checks of its double free. */
    struct snapshot before = threads ? (struct snapshot){0, 0, 0, 0} : snap();
    /* Twice: the first call changed nothing. Under the hammer, a freed
     * block only once: its memory may be handed out again any time after
     * the free (legitimately), the sooner the check the smaller the chance. */
    bool freed = bad_kinds[c->kind].freed;
    check_rejected(c->name, b.ptr, want, want, threads && freed ? 1 : 2);
    struct snapshot after = threads ? before : snap();
    if (!threads)
        CHECK_MSG(same_counters(before, after),
                  "%s: the rejected calls changed no counter (allocs %zu -> %zu, frees %zu -> "
                  "%zu, bytes %zu -> %zu)",
                  c->name, before.allocs, after.allocs, before.frees, after.frees,
                  before.current, after.current);

    if (b.block != NULL) {
        CHECK_MSG(block_intact(b.block, b.size, b.seed),
                  "%s: the block %p points into is intact", c->name, b.block);
        size_t usable = 0;
        CHECK_MSG(cma_checked_block_size(b.block, &usable) == CMA_OK && usable >= b.size,
                  "%s: the block is still live (usable size %zu >= %zu)", c->name, usable,
                  b.size);
    }

    exercise_heap(c->name);
    /* A pointer that never was a block is still rejected the same way after
     * all that. (Not so a freed one: its memory may since have been handed
     * out again, or mapped for something else, legitimately.) */
    if (!freed)
        check_rejected(c->name, b.ptr, want, want, 2);

    if (b.block != NULL)
        CHECK_MSG(cma_checked_free(b.block) == CMA_OK, "%s: the block frees", c->name);
}

int main(int argc, char **argv)
{
    register_cases();
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (int i = 0; i < case_count; i++)
            say("%s|ok|%s|-|-\n", cases[i].name, cases[i].secure_only ? "secure" : "both");
        return 0;
    }
    bool threads = argc == 3 && strcmp(argv[2], "--threads") == 0;
    if (argc < 2 || argc > 3 || (argc == 3 && !threads)) {
        say("usage: %s --list | CASE [--threads]\n", argv[0]);
        return EXIT_SETUP;
    }
    const struct ccase *c = NULL;
    for (int i = 0; i < case_count; i++)
        if (strcmp(cases[i].name, argv[1]) == 0)
            c = &cases[i];
    if (c == NULL)
        setup_failed("no case %s", argv[1]);

    checks_begin(c->name);
    /* A hang (a lock left held) says where it happened. */
    watchdog_start("stage", 5);
    watchdog_mark(1);
    long ops_before = 0;
    if (threads) {
        hammer_start(false);
        ops_before = hammer_total_ops();
    }
    watchdog_mark(2);
    run_case(c, threads);
    watchdog_mark(3);
    if (threads) {
        /* No lock left held: the hammer threads still make progress (each
         * of them: one stuck on a lock would not). */
        long after[HAMMER_THREADS], during = -ops_before;
        for (int t = 0; t < HAMMER_THREADS; t++) {
            after[t] = atomic_load(&hammer.ops[t]);
            during += after[t];
        }
        int stuck = HAMMER_THREADS;
        for (int ms = 0; ms < 3000 && stuck > 0; ms++) {
            stuck = 0;
            for (int t = 0; t < HAMMER_THREADS; t++)
                stuck += atomic_load(&hammer.ops[t]) == after[t];
            if (stuck > 0)
                usleep(1000);
        }
        CHECK_MSG(stuck == 0,
                  "after the checks every hammer thread still makes progress (%d stuck for 3 s; "
                  "%ld operations during the checks)",
                  stuck, during);
        int failures = hammer_stop();
        watchdog_mark(4);
        CHECK_MSG(failures == 0, "the six hammer threads stopped and joined, %d failures%s%s",
                  failures, failures ? ": " : "", hammer.first_failure);
        exercise_heap("after the hammer threads");
    }
    return checks_done(c->name);
}
