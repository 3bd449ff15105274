/* api_behaviour.c: the behaviours of the CMA API that the ancestor's tests
 * pinned down (STRESS_SPEC.md, "Other behaviours"), and the rest of the
 * contract of include/cma.h: last-error reporting, limits, checked frees,
 * block sizes, alignment, statistics.
 *
 * In the -DCMA_PLAIN build only the checks that the malloc family can express
 * run (calloc overflow, malloc(0), randomised stress, statistics, usable
 * sizes, strdup); the CMA-only sections are listed as skipped.
 */
#include <errno.h>
#include <sys/mman.h>

#include "api.h"
#include "common.h"

static struct counters counters_now(void)
{
    struct counters c;
    cma_get_stats(&c.allocs, &c.frees);
    return c;
}

static bool counters_equal(struct counters a, struct counters b)
{
    return a.allocs == b.allocs && a.frees == b.frees;
}

static size_t current_bytes(void)
{
    size_t current;
    cma_get_extended_stats(NULL, NULL, &current, NULL);
    return current;
}

/* cma_calloc whose count * size overflows fails without counting anything;
 * a product that wraps to exactly 0 is an overflow too. */
static void test_calloc_overflow(void)
{
    const size_t max = opaque_size(SIZE_MAX);
    const size_t cases[][2] = {{max, 2}, {2, max}, {max / 2 + 1, 2}, {(size_t)1 << 32, (size_t)1 << 32}};

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct counters before = counters_now();
        void *p = cma_calloc(cases[i][0], cases[i][1]);
        CHECK_MSG(p == NULL, "cma_calloc(%#zx, %#zx) returns NULL", cases[i][0], cases[i][1]);
        CHECK_LAST_ERROR(CMA_ERROR_INVALID_ARGUMENT);
        CHECK_MSG(counters_equal(counters_now(), before), "the failed calloc counted nothing");
    }

    /* A zero product is no overflow: a real, zero-sized, freeable block. */
    void *p = cma_calloc(0, max);
    CHECK_MSG(p != NULL, "cma_calloc(0, SIZE_MAX) returns a block");
    cma_free(p);
}

/* cma_malloc(0) returns real, unique, freeable blocks, each counted. */
static void test_malloc_zero(void)
{
    struct counters before = counters_now();
    void *p = cma_malloc(0);
    CHECK(p != NULL);
    CHECK_LAST_ERROR(CMA_OK);
    struct counters mid = counters_now();
    CHECK_MSG(mid.allocs == before.allocs + 1 && mid.frees == before.frees,
              "cma_malloc(0) counted one allocation (allocs %zu -> %zu)", before.allocs,
              mid.allocs);
    void *q = cma_malloc(0);
    CHECK_MSG(q != NULL && q != p, "a second cma_malloc(0) returns a different block");
    cma_free(q);
    cma_free(p);
    CHECK_LAST_ERROR(CMA_OK);
    struct counters after = counters_now();
    CHECK_MSG(after.allocs == before.allocs + 2 && after.frees == before.frees + 2,
              "both zero-sized blocks were counted as allocated and freed");
}

/* 1024 blocks of random size 1..4096, each with its own pattern, all verified
 * while all are live (so overlapping blocks would show), then freed: both
 * counters advance by exactly 1024. */
static void test_random_stress(void)
{
    enum { BLOCKS = 1024 };
    static unsigned char *blocks[BLOCKS];
    static size_t sizes[BLOCKS];
    uint64_t rng = 0x5eed1234abcdULL;
    int failed_calls = 0, corrupt = 0;

    struct counters before = counters_now();
    for (int i = 0; i < BLOCKS; i++) {
        sizes[i] = 1 + (size_t)(rng_next(&rng) % 4096);
        blocks[i] = (unsigned char *)cma_malloc(sizes[i]);
        if (blocks[i] == NULL || !LAST_ERROR_IS(CMA_OK)) {
            failed_calls++;
            continue;
        }
        pattern_fill(blocks[i], sizes[i], (unsigned)i);
    }
    for (int i = 0; i < BLOCKS; i++)
        if (blocks[i] != NULL && !pattern_ok(blocks[i], sizes[i], (unsigned)i))
            corrupt++;
    for (int i = 0; i < BLOCKS; i++) {
        cma_free(blocks[i]);
        if (!LAST_ERROR_IS(CMA_OK))
            failed_calls++;
    }
    struct counters after = counters_now();
    CHECK_MSG(failed_calls == 0, "random stress: all %d mallocs and frees succeeded (%d failed)",
              BLOCKS, failed_calls);
    CHECK_MSG(corrupt == 0, "random stress: every block kept its pattern (%d corrupt)", corrupt);
    CHECK_MSG(after.allocs - before.allocs == BLOCKS && after.frees - before.frees == BLOCKS,
              "random stress: allocs +%zu, frees +%zu (both must be +%d)",
              after.allocs - before.allocs, after.frees - before.frees, BLOCKS);
}

/* The current byte count is the sum of the usable sizes of live blocks: it
 * rises by exactly a block's usable size and falls back when it is freed; the
 * peak never falls below it. NULL out-pointers are skipped. */
static void test_extended_stats(void)
{
    size_t allocs, frees, cur0, peak0, cur1, peak1, cur2, peak2, peak3;

    cma_get_extended_stats(&allocs, &frees, &cur0, &peak0);
    CHECK_MSG(peak0 >= cur0, "peak %zu >= current %zu", peak0, cur0);

    void *p = cma_malloc(100000);
    CHECK(p != NULL);
    cma_get_extended_stats(NULL, NULL, &cur1, &peak1);
    CHECK_MSG(cur1 >= cur0 + 100000, "current rose by at least 100000 (%zu -> %zu)", cur0, cur1);
    CHECK_MSG(cur1 - cur0 == cma_block_size(p),
              "current rose by exactly the block's usable size (%zu vs %zu)", cur1 - cur0,
              cma_block_size(p));
    CHECK_MSG(peak1 >= cur1, "peak %zu >= current %zu", peak1, cur1);

    void *huge = cma_malloc(64 * MiB);
    CHECK(huge != NULL);
    cma_get_extended_stats(NULL, NULL, &cur2, &peak2);
    CHECK_MSG(cur2 >= cur1 + 64 * MiB, "a 64 MiB block raised current by at least 64 MiB");
    CHECK_MSG(peak2 >= cur2, "peak %zu >= current %zu", peak2, cur2);

    cma_free(huge);
    CHECK_MSG(current_bytes() == cur1, "freeing the 64 MiB block restored current (%zu vs %zu)",
              current_bytes(), cur1);
    cma_free(p);
    cma_get_extended_stats(NULL, NULL, NULL, &peak3);
    CHECK_MSG(current_bytes() == cur0, "freeing both blocks restored current (%zu vs %zu)",
              current_bytes(), cur0);
    CHECK_MSG(peak3 >= cur2, "the peak (%zu) still covers the high point (%zu)", peak3, cur2);

    size_t frees_only = 0;
    cma_get_stats(NULL, &frees_only);
    CHECK_MSG(frees_only >= frees + 2, "cma_get_stats skips a NULL out-pointer");
}

/* The usable size covers the request, and the whole of it is writable
 * without touching the neighbouring blocks. */
static void test_block_size(void)
{
    static const size_t sizes[] = {1, 15, 16, 17, 24, 100, 1000, 4095, 4096, 4097,
                                   65536, 100000, MiB + 1, 5 * MiB};
    enum { N = sizeof sizes / sizeof sizes[0] };
    unsigned char *blocks[N];
    size_t usable[N];
    bool covers = true, intact = true;

    for (int i = 0; i < N; i++) {
        blocks[i] = (unsigned char *)cma_malloc(sizes[i]);
        CHECK_MSG(blocks[i] != NULL, "cma_malloc(%zu)", sizes[i]);
        usable[i] = cma_block_size(blocks[i]);
        covers = covers && usable[i] >= sizes[i];
        memset(blocks[i], 0x40 + i, usable[i]);
    }
    CHECK_MSG(covers, "cma_block_size >= the requested size for %d sizes up to 5 MiB", N);
    for (int i = 0; i < N; i++) {
        intact = intact && bytes_are(blocks[i], usable[i], (unsigned char)(0x40 + i));
        cma_free(blocks[i]);
    }
    CHECK_MSG(intact, "filling every block to its usable size disturbed no other block");
    CHECK(cma_block_size(NULL) == 0);
}

static void test_strdup(void)
{
    const char *text = "the quick brown fox jumps over the lazy dog";
    char *s = cma_strdup(text);
    CHECK(s != NULL && s != text && strcmp(s, text) == 0);
    CHECK_LAST_ERROR(CMA_OK);
    CHECK(cma_block_size(s) >= strlen(text) + 1);
    cma_free(s);

    char *empty = cma_strdup("");
    CHECK(empty != NULL && empty[0] == '\0');
    cma_free(empty);
}

#ifndef CMA_PLAIN

/* Both tests below check "nothing changed": the counters and current bytes. */
struct snapshot {
    struct counters counters;
    size_t current;
};

static struct snapshot snapshot_now(void)
{
    return (struct snapshot){counters_now(), current_bytes()};
}

static bool snapshot_equal(struct snapshot a, struct snapshot b)
{
    return counters_equal(a.counters, b.counters) && a.current == b.current;
}

/* Requests larger than the limit fail with out-of-memory (ENOMEM for the
 * malloc family) and count nothing; a request of exactly the limit succeeds;
 * 0 removes the limit. */
static void test_alloc_limit(void)
{
    unsigned char src[8192] = {0};

    cma_set_alloc_limit(4096);
    CHECK_LAST_ERROR(CMA_OK);
    struct snapshot before = snapshot_now();
    CHECK(cma_malloc(4097) == NULL);
    CHECK_LAST_ERROR(CMA_ERROR_OUT_OF_MEMORY);
    CHECK(cma_calloc(4097, 1) == NULL);
    CHECK_LAST_ERROR(CMA_ERROR_OUT_OF_MEMORY);
    CHECK(cma_aligned_alloc(64, 4097) == NULL);
    CHECK_LAST_ERROR(CMA_ERROR_OUT_OF_MEMORY);
    CHECK(cma_realloc(NULL, 4097) == NULL);
    CHECK_LAST_ERROR(CMA_ERROR_OUT_OF_MEMORY);
    CHECK(cma_memdup(src, sizeof src) == NULL);
    CHECK_LAST_ERROR(CMA_ERROR_OUT_OF_MEMORY);
    CHECK(cma_malloc(64 * MiB) == NULL);
    CHECK_LAST_ERROR(CMA_ERROR_OUT_OF_MEMORY);
    errno = 0;
    CHECK(opaque(malloc(opaque_size(4097))) == NULL);
    CHECK_MSG(errno == ENOMEM, "malloc over the limit sets errno ENOMEM (got %d)", errno);
    CHECK_MSG(snapshot_equal(snapshot_now(), before),
              "the refused requests changed no counter and no byte count");

    void *at_limit = cma_malloc(4096);
    CHECK_MSG(at_limit != NULL, "a request of exactly the limit succeeds");
    CHECK_LAST_ERROR(CMA_OK);
    cma_free(at_limit);

    cma_set_alloc_limit(0);
    void *big = cma_malloc(64 * MiB);
    CHECK_MSG(big != NULL, "with the limit removed, 64 MiB succeeds");
    CHECK_LAST_ERROR(CMA_OK);
    cma_free(big);
}

/* A realloc over the limit fails with out-of-memory, counts nothing, and the
 * original block keeps its contents and stays a valid, resizable block. */
static void test_realloc_over_limit(void)
{
    unsigned char *p = (unsigned char *)cma_malloc(1000);
    CHECK(p != NULL);
    pattern_fill(p, 1000, 7);

    cma_set_alloc_limit(4096);
    struct snapshot before = snapshot_now();
    CHECK(cma_realloc(p, 8192) == NULL);
    CHECK_LAST_ERROR(CMA_ERROR_OUT_OF_MEMORY);
    CHECK_MSG(snapshot_equal(snapshot_now(), before), "the refused realloc counted nothing");
    CHECK_MSG(pattern_ok(p, 1000, 7), "the old block kept its contents");
    size_t size = 0;
    CHECK(cma_checked_block_size(p, &size) == CMA_OK && size >= 1000);

    unsigned char *q = (unsigned char *)cma_realloc(p, 3000);
    CHECK_MSG(q != NULL, "the old block can still be resized within the limit");
    CHECK_LAST_ERROR(CMA_OK);
    CHECK(pattern_ok(q, 1000, 7));
    cma_set_alloc_limit(0);
    cma_free(q);
    CHECK_LAST_ERROR(CMA_OK);
}

/* cma_realloc(NULL, n) allocates; cma_realloc(p, 0) frees and returns NULL. */
static void test_realloc_edges(void)
{
    struct counters before = counters_now();
    void *p = cma_realloc(NULL, 40);
    CHECK(p != NULL);
    CHECK_LAST_ERROR(CMA_OK);
    CHECK(counters_now().allocs == before.allocs + 1);
    CHECK(cma_realloc(p, 0) == NULL);
    CHECK_LAST_ERROR(CMA_OK);
    CHECK_MSG(counters_now().frees == before.frees + 1, "cma_realloc(p, 0) freed the block");
}

/* A failing call, then a successful one: the success must reset the last
 * error, whatever the call. */
static void provoke_error(void)
{
    (void)cma_calloc(opaque_size(SIZE_MAX), 2);
}

#define CHECK_RESETS_ERROR(call)                                                \
    do {                                                                        \
        provoke_error();                                                        \
        enum CmaError old_ = cma_last_error();                                  \
        call;                                                                   \
        CHECK_MSG(old_ == CMA_ERROR_INVALID_ARGUMENT && cma_last_error() == CMA_OK, \
                  "%s after an error reports CMA_OK", #call);                   \
    } while (0)

static void test_success_resets_error(void)
{
    void *p, *q;
    char *s;
    size_t n, a, f;

    CHECK_RESETS_ERROR(p = cma_malloc(8));
    CHECK_RESETS_ERROR(cma_free(p));
    CHECK_RESETS_ERROR(p = cma_calloc(2, 8));
    CHECK_RESETS_ERROR(p = cma_realloc(p, 64));
    CHECK_RESETS_ERROR((void)cma_block_size(p));
    CHECK_RESETS_ERROR((void)cma_checked_block_size(p, &n));
    CHECK_RESETS_ERROR(q = cma_aligned_alloc(64, 64));
    CHECK_RESETS_ERROR((void)cma_checked_free(q));
    CHECK_RESETS_ERROR(q = cma_memdup(p, 8));
    CHECK_RESETS_ERROR(cma_free(q));
    CHECK_RESETS_ERROR(s = cma_strdup("x"));
    CHECK_RESETS_ERROR(cma_free(s));
    CHECK_RESETS_ERROR(cma_get_stats(&a, &f));
    CHECK_RESETS_ERROR(cma_get_extended_stats(&a, &f, &n, &n));
    CHECK_RESETS_ERROR(cma_set_alloc_limit(0));
    CHECK_RESETS_ERROR(cma_set_thread_safety(true));
    CHECK_RESETS_ERROR((void)cma_is_thread_safe_enabled());
    CHECK_RESETS_ERROR((void)cma_error_string(CMA_OK));
    CHECK_RESETS_ERROR(cma_free(NULL));
    CHECK_RESETS_ERROR((void)cma_checked_free(NULL));
    CHECK_RESETS_ERROR(p = cma_realloc(p, 0));
    CHECK(p == NULL);
}

static void *other_thread_errors(void *arg)
{
    enum CmaError *seen = (enum CmaError *)arg;
    seen[0] = cma_last_error();
    (void)cma_malloc(opaque_size(SIZE_MAX));
    seen[1] = cma_last_error();
    return NULL;
}

/* The last error belongs to the calling thread. */
static void test_last_error_per_thread(void)
{
    enum CmaError seen[2];
    pthread_t thread;

    provoke_error();
    CHECK(pthread_create(&thread, NULL, other_thread_errors, seen) == 0);
    pthread_join(thread, NULL);
    CHECK_MSG(seen[0] == CMA_OK, "a new thread starts with CMA_OK (got %d)", (int)seen[0]);
    CHECK_MSG(seen[1] == CMA_ERROR_OUT_OF_MEMORY, "its own failure is its own (got %d)",
              (int)seen[1]);
    CHECK_LAST_ERROR(CMA_ERROR_INVALID_ARGUMENT);
}

static void test_memdup(void)
{
    unsigned char src[300];
    pattern_fill(src, sizeof src, 3);

    struct counters before = counters_now();
    unsigned char *p = (unsigned char *)cma_memdup(src, sizeof src);
    CHECK(p != NULL && p != src);
    CHECK_LAST_ERROR(CMA_OK);
    CHECK_MSG(memcmp(p, src, sizeof src) == 0, "cma_memdup copied the 300 bytes");
    CHECK(cma_block_size(p) >= sizeof src);
    cma_free(p);

    void *zero = cma_memdup(src, 0);
    CHECK_MSG(zero != NULL, "cma_memdup(src, 0) returns a block");
    CHECK_LAST_ERROR(CMA_OK);
    CHECK_MSG(cma_checked_free(zero) == CMA_OK, "the zero-length copy is freeable");

    struct counters mid = counters_now();
    CHECK(cma_memdup(NULL, 16) == NULL);
    CHECK_LAST_ERROR(CMA_ERROR_INVALID_ARGUMENT);
    CHECK_MSG(counters_equal(counters_now(), mid), "the refused memdup counted nothing");
    CHECK_MSG(mid.allocs == before.allocs + 2 && mid.frees == before.frees + 2,
              "each copy counted one allocation and one free");

    size_t big_size = 3 * MiB + 5;
    unsigned char *big_src = (unsigned char *)cma_malloc(big_size);
    CHECK(big_src != NULL);
    pattern_fill(big_src, big_size, 11);
    unsigned char *big = (unsigned char *)cma_memdup(big_src, big_size);
    CHECK_MSG(big != NULL && pattern_ok(big, big_size, 11), "a 3 MiB memdup copies everything");
    cma_free(big);
    cma_free(big_src);

    cma_set_alloc_limit(100);
    CHECK(cma_memdup(src, sizeof src) == NULL);
    CHECK_LAST_ERROR(CMA_ERROR_OUT_OF_MEMORY);
    cma_set_alloc_limit(0);
}

static void test_strdup_errors(void)
{
    CHECK(cma_strdup(NULL) == NULL);
    CHECK_LAST_ERROR(CMA_ERROR_INVALID_ARGUMENT);
    cma_set_alloc_limit(8);
    CHECK(cma_strdup("longer than eight bytes") == NULL);
    CHECK_LAST_ERROR(CMA_ERROR_OUT_OF_MEMORY);
    cma_set_alloc_limit(0);
}

static unsigned char static_block[64] __attribute__((aligned(64)));

/* Pointers CMA never handed out, each paired with a description. Wild values
 * near both ends of the address space must be rejected without being read. */
struct foreign {
    const void *ptr;
    const char *what;
};

static int foreign_pointers(struct foreign out[8], void *stack, void *mapping)
{
    int n = 0;
    out[n++] = (struct foreign){stack, "a stack address"};
    out[n++] = (struct foreign){static_block, "a static"};
    out[n++] = (struct foreign){mapping, "a page from mmap"};
    out[n++] = (struct foreign){(const void *)(uintptr_t)4096, "address 0x1000"};
    out[n++] = (struct foreign){(const void *)(UINTPTR_MAX & ~(uintptr_t)15), "address 0xff..f0"};
    return n;
}

/* Blocks of several size classes, filled, for the "interior pointer" cases. */
static const size_t interior_sizes[] = {256, 4096, MiB, 64 * MiB};
enum { INTERIOR = sizeof interior_sizes / sizeof interior_sizes[0] };

/* cma_checked_free reports misuse instead of ending the process, frees
 * nothing on an error, and leaves the heap usable. */
static void test_checked_free(void)
{
    unsigned char stack[64] __attribute__((aligned(64)));
    void *mapping = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct foreign foreign[8];
    int nforeign = foreign_pointers(foreign, opaque(stack), mapping);
    unsigned char *blocks[INTERIOR];

    CHECK(mapping != MAP_FAILED);
    CHECK(cma_checked_free(NULL) == CMA_OK);
    CHECK_LAST_ERROR(CMA_OK);

    for (int i = 0; i < INTERIOR; i++) {
        blocks[i] = (unsigned char *)cma_malloc(interior_sizes[i]);
        CHECK(blocks[i] != NULL);
        memset(blocks[i], 0xA0 + i, interior_sizes[i]);
    }
    struct counters before = counters_now();
    for (int i = 0; i < nforeign; i++) {
        CHECK_MSG(cma_checked_free(opaque((void *)foreign[i].ptr)) == CMA_ERROR_INVALID_POINTER,
                  "cma_checked_free(%s) == CMA_ERROR_INVALID_POINTER", foreign[i].what);
        CHECK_LAST_ERROR(CMA_ERROR_INVALID_POINTER);
    }
    for (int i = 0; i < INTERIOR; i++) {
        size_t size = interior_sizes[i];
        /* 16-aligned (and for large blocks page-aligned) interior pointers
         * look like block starts to a check that only tests alignment. */
        size_t offsets[] = {1, 16, size / 2, size >= 8192 ? 4096 : 8};
        for (int k = 0; k < 4; k++) {
            CHECK_MSG(cma_checked_free(blocks[i] + offsets[k]) == CMA_ERROR_INVALID_POINTER,
                      "cma_checked_free(block of %zu + %zu) == CMA_ERROR_INVALID_POINTER", size,
                      offsets[k]);
        }
    }
    CHECK_MSG(counters_equal(counters_now(), before), "the rejected frees counted nothing");
    bool intact = true;
    for (int i = 0; i < INTERIOR; i++)
        intact = intact && bytes_are(blocks[i], interior_sizes[i], (unsigned char)(0xA0 + i));
    CHECK_MSG(intact, "the blocks behind the rejected interior pointers are intact");

    for (int i = 0; i < INTERIOR - 1; i++) {
        CHECK_MSG(cma_checked_free(blocks[i]) == CMA_OK, "cma_checked_free(live %zu-byte block)",
                  interior_sizes[i]);
        CHECK_MSG(cma_checked_free(blocks[i]) == CMA_ERROR_DOUBLE_FREE,
                  "freeing the %zu-byte block again == CMA_ERROR_DOUBLE_FREE", interior_sizes[i]);
        CHECK_LAST_ERROR(CMA_ERROR_DOUBLE_FREE);
    }
    CHECK(cma_checked_free(blocks[INTERIOR - 1]) == CMA_OK);
    CHECK_MSG(counters_now().frees == before.frees + INTERIOR,
              "only the %d real frees were counted", INTERIOR);
    munmap(mapping, 4096);
}

/* The heap is still fully usable after all the rejected calls. */
static void test_heap_usable(void)
{
    enum { BLOCKS = 256 };
    static unsigned char *blocks[BLOCKS];
    uint64_t rng = 42;
    bool ok = true;

    struct counters before = counters_now();
    for (int i = 0; i < BLOCKS; i++) {
        size_t size = 1 + (size_t)(rng_next(&rng) % 20000);
        blocks[i] = (unsigned char *)cma_malloc(size);
        ok = ok && blocks[i] != NULL;
        if (blocks[i] != NULL)
            memset(blocks[i], i & 0xff, size < 64 ? size : 64);
    }
    for (int i = 0; i < BLOCKS; i++) {
        ok = ok && blocks[i] != NULL && bytes_are(blocks[i], 1, (unsigned char)(i & 0xff));
        cma_free(blocks[i]);
    }
    struct counters after = counters_now();
    CHECK_MSG(ok, "after the rejected calls, %d new blocks were allocated and kept data", BLOCKS);
    CHECK_MSG(after.allocs - before.allocs == BLOCKS && after.frees - before.frees == BLOCKS,
              "and counted exactly (allocs +%zu, frees +%zu)", after.allocs - before.allocs,
              after.frees - before.frees);
}

/* cma_checked_block_size reports the same errors and leaves *out_size alone
 * on every error. */
static void test_checked_block_size(void)
{
    const size_t untouched = 0x5A5A5A5A;
    unsigned char stack[64] __attribute__((aligned(64)));
    void *mapping = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct foreign foreign[8];
    int nforeign = foreign_pointers(foreign, opaque(stack), mapping);
    size_t out = untouched;

    CHECK(mapping != MAP_FAILED);
    CHECK(cma_checked_block_size(NULL, &out) == CMA_OK && out == 0);
    unsigned char *p = (unsigned char *)cma_malloc(100);
    CHECK(p != NULL);
    CHECK(cma_checked_block_size(p, &out) == CMA_OK && out >= 100 && out == cma_block_size(p));
    CHECK(cma_checked_block_size(p, NULL) == CMA_ERROR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR(CMA_ERROR_INVALID_ARGUMENT);

    for (int i = 0; i < nforeign; i++) {
        out = untouched;
        CHECK_MSG(cma_checked_block_size(foreign[i].ptr, &out) == CMA_ERROR_INVALID_POINTER &&
                      out == untouched,
                  "cma_checked_block_size(%s) == CMA_ERROR_INVALID_POINTER, size untouched",
                  foreign[i].what);
    }
    out = untouched;
    CHECK(cma_checked_block_size(p + 16, &out) == CMA_ERROR_INVALID_POINTER && out == untouched);
    CHECK(cma_checked_block_size(p + 1, &out) == CMA_ERROR_INVALID_POINTER && out == untouched);
    cma_free(p);
    CHECK(cma_checked_block_size(p, &out) == CMA_ERROR_DOUBLE_FREE && out == untouched);
    CHECK_LAST_ERROR(CMA_ERROR_DOUBLE_FREE);
    munmap(mapping, 4096);
}

/* cma_aligned_alloc honours every power-of-two alignment up to 64 MiB, for
 * any size, and rejects the others without counting anything. */
static void test_aligned_alloc(void)
{
    for (size_t align = 1; align <= 64 * MiB; align <<= 1) {
        const size_t sizes[] = {0, 1, align, align + 1, 3 * align / 2 + 24};
        bool ok = true;
        for (int k = 0; k < 5; k++) {
            if (sizes[k] > 80 * MiB)
                continue;
            unsigned char *p = (unsigned char *)cma_aligned_alloc(align, sizes[k]);
            ok = ok && p != NULL && LAST_ERROR_IS(CMA_OK) && is_aligned(p, align) &&
                 cma_block_size(p) >= sizes[k];
            if (p != NULL && sizes[k] > 0) {
                memset(p, 0x5C, sizes[k] < 2 * MiB ? sizes[k] : 4096);
                p[sizes[k] - 1] = 0x5C;
                ok = ok && p[0] == 0x5C;
            }
            cma_free(p);
        }
        CHECK_MSG(ok, "cma_aligned_alloc(%zu, sizes 0..%zu) aligned, usable and freeable", align,
                  sizes[4]);
    }

    const size_t bad[] = {0, 3, 24, 48, 1000, 4097, SIZE_MAX, SIZE_MAX / 2 + 2};
    struct counters before = counters_now();
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        CHECK_MSG(cma_aligned_alloc(opaque_size(bad[k]), 64) == NULL,
                  "cma_aligned_alloc(%#zx, 64) returns NULL", bad[k]);
        CHECK_LAST_ERROR(CMA_ERROR_INVALID_ARGUMENT);
    }
    CHECK_MSG(counters_equal(counters_now(), before), "the bad alignments counted nothing");
}

static void test_thread_safety_setting(void)
{
    cma_set_thread_safety(false);
    CHECK_LAST_ERROR(CMA_OK);
    CHECK(cma_is_thread_safe_enabled() == false);
    cma_set_thread_safety(true);
    CHECK(cma_is_thread_safe_enabled() == true);
}

static void test_error_strings(void)
{
    const char *seen[6];
    for (int code = CMA_OK; code <= CMA_ERROR_CORRUPTED; code++) {
        const char *s = cma_error_string(code);
        bool distinct = s != NULL;
        for (int k = 0; distinct && k < code; k++)
            distinct = strcmp(seen[k], s) != 0;
        CHECK_MSG(s != NULL && s[0] != '\0' && distinct, "cma_error_string(%d) = \"%s\"", code,
                  s ? s : "(null)");
        seen[code] = s;
    }
    CHECK(strcmp(cma_error_string(6), "unknown error") == 0);
    CHECK(strcmp(cma_error_string(-1), "unknown error") == 0);
}

/* Last, because the contract may be debated: a freed huge block (its mapping
 * returned to the system) is still reported as a double free. */
static void test_checked_free_huge(void)
{
    void *huge = cma_malloc(64 * MiB);
    CHECK(huge != NULL);
    CHECK(cma_checked_free(huge) == CMA_OK);
    enum CmaError again = cma_checked_free(huge);
    CHECK_MSG(again == CMA_ERROR_DOUBLE_FREE,
              "freeing a 64 MiB block again == CMA_ERROR_DOUBLE_FREE (got %d)", (int)again);
}
#endif /* !CMA_PLAIN */

int main(void)
{
    checks_begin("api_behaviour");
#ifndef CMA_PLAIN
    /* Before any other call: the setting starts on. */
    CHECK(cma_is_thread_safe_enabled() == true);
#endif
    test_calloc_overflow();
    test_malloc_zero();
    test_random_stress();
    test_extended_stats();
    test_block_size();
    test_strdup();
#ifdef CMA_PLAIN
    printf("skip (CMA API only): limits, realloc edges, last error, memdup, checked free, "
           "checked block size, aligned alloc, thread-safety setting, error strings\n");
#else
    test_alloc_limit();
    test_realloc_over_limit();
    test_realloc_edges();
    test_success_resets_error();
    test_last_error_per_thread();
    test_memdup();
    test_strdup_errors();
    test_checked_free();
    test_heap_usable();
    test_checked_block_size();
    test_aligned_alloc();
    test_thread_safety_setting();
    test_error_strings();
    test_checked_free_huge();
#endif
    return checks_done("api_behaviour");
}
