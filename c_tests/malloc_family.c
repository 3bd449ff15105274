/* malloc_family.c: glibc semantics of CMA's malloc family.
 *
 * Uses only the standard functions, so the same source runs linked with
 * -lcma and as a plain-malloc build with LD_PRELOAD=libcma.so. CMA's counters
 * (looked up with dlsym) prove that CMA, not glibc, served the calls.
 */
#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>

#include "cma_dl.h"
#include "common.h"
#include "dl_counters.h"

/* C23's sized frees, which glibc 2.36's headers lack. Weak, so that the plain
 * build links without CMA and finds them at run time in the preloaded one. */
extern void free_sized(void *ptr, size_t size) __attribute__((weak));
extern void free_aligned_sized(void *ptr, size_t alignment, size_t size) __attribute__((weak));

static bool counters_equal(struct counters a, struct counters b)
{
    return a.allocs == b.allocs && a.frees == b.frees;
}

/* Stored in an out-pointer before a call that must leave it untouched. */
static char sentinel_target;
#define SENTINEL ((void *)&sentinel_target)

#define CHECK_ENOMEM(call)                                                           \
    do {                                                                             \
        errno = 0;                                                                   \
        void *r_ = (call);                                                           \
        int e_ = errno;                                                              \
        CHECK_MSG(r_ == NULL && e_ == ENOMEM, "%s: NULL, errno ENOMEM (got %p, %d)", \
                  #call, r_, e_);                                                    \
    } while (0)

static void test_cma_serves_malloc(void)
{
    struct counters before = counters_now();
    void *p = opaque(malloc(24));
    struct counters mid = counters_now();
    free(p);
    struct counters after = counters_now();
    CHECK_MSG(p != NULL && mid.allocs == before.allocs + 1 && after.frees == before.frees + 1,
              "malloc and free are CMA's: cma_get_stats counted them");
}

struct extent {
    uintptr_t start;
    size_t size;
};

static int extent_cmp(const void *a, const void *b)
{
    uintptr_t x = ((const struct extent *)a)->start, y = ((const struct extent *)b)->start;
    return x < y ? -1 : x > y;
}

/* True when no two of the n live blocks share a byte (zero-sized blocks
 * count as one byte: they must still be distinct). Sorts e. */
static bool disjoint(struct extent *e, size_t n)
{
    qsort(e, n, sizeof *e, extent_cmp);
    for (size_t i = 1; i < n; i++)
        if (e[i - 1].start + (e[i - 1].size ? e[i - 1].size : 1) > e[i].start)
            return false;
    return true;
}

/* 16-byte alignment for every size 0..4096 (all live at once, and disjoint),
 * then for sizes growing by 1/8 up to 8 MiB. */
static void test_alignment(void)
{
    enum { SMALL = 4097 };
    static struct extent live[SMALL];
    bool aligned = true;

    for (size_t n = 0; n < SMALL; n++) {
        void *p = malloc(n);
        aligned = aligned && p != NULL && is_aligned(p, 16);
        live[n] = (struct extent){(uintptr_t)p, n};
        if (p != NULL)
            memset(p, 0x11, n);
    }
    CHECK_MSG(aligned, "malloc(0..4096) all non-NULL and 16-byte aligned");
    CHECK_MSG(disjoint(live, SMALL), "the 4097 live blocks do not overlap");
    for (size_t i = 0; i < SMALL; i++)
        free((void *)live[i].start);

    size_t first_bad = 0;
    for (size_t n = SMALL; n <= 8 * MiB; n += n / 8 + 13) {
        unsigned char *p = (unsigned char *)malloc(n);
        if ((p == NULL || !is_aligned(p, 16)) && first_bad == 0)
            first_bad = n;
        if (p != NULL)
            p[0] = p[n - 1] = 1;
        free(p);
    }
    CHECK_MSG(first_bad == 0, "malloc(4097..8 MiB) all 16-byte aligned (first failure: %zu)",
              first_bad);
}

static void test_malloc_zero(void)
{
    enum { N = 64 };
    struct extent e[N];
    void *blocks[N];
    bool non_null = true;

    struct counters before = counters_now();
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(0);
        non_null = non_null && blocks[i] != NULL;
        e[i] = (struct extent){(uintptr_t)blocks[i], 0};
    }
    struct counters mid = counters_now();
    for (int i = 0; i < N; i++)
        free(blocks[i]);
    struct counters after = counters_now();
    CHECK_MSG(non_null, "%d x malloc(0) all non-NULL", N);
    /* Checked after the counters: glibc's qsort may malloc. */
    CHECK_MSG(disjoint(e, N), "... and all distinct while live");
    CHECK_MSG(mid.allocs - before.allocs == N && after.frees - mid.frees == N,
              "... each counted as an allocation, and freed");
}

/* Sizes that overflow or exceed PTRDIFF_MAX fail with ENOMEM, count nothing. */
static void test_impossible_sizes(void)
{
    const size_t size_max = opaque_size(SIZE_MAX);
    const size_t over_ptrdiff = opaque_size((size_t)PTRDIFF_MAX + 1);
    const size_t ptrdiff_max = opaque_size(PTRDIFF_MAX);
    const size_t half = opaque_size(SIZE_MAX / 2 + 1);
    const size_t page = page_size();

    struct counters before = counters_now();
    CHECK_ENOMEM(malloc(size_max));
    CHECK_ENOMEM(malloc(over_ptrdiff));
    CHECK_ENOMEM(malloc(ptrdiff_max));
    CHECK_ENOMEM(calloc(size_max, 2));
    CHECK_ENOMEM(calloc(2, size_max));
    CHECK_ENOMEM(calloc(half, 2)); /* wraps to exactly 0 */
    CHECK_ENOMEM(calloc(opaque_size((size_t)1 << 32), (size_t)1 << 32));
    CHECK_ENOMEM(realloc(NULL, size_max));
    CHECK_ENOMEM(reallocarray(NULL, size_max, 2));
    CHECK_ENOMEM(reallocarray(NULL, half, 2));
    CHECK_ENOMEM(pvalloc(size_max));
    CHECK_ENOMEM(pvalloc(size_max - page + 2)); /* rounding up to a page overflows */
    CHECK_ENOMEM(valloc(size_max));
    CHECK_ENOMEM(memalign(64, size_max));
    CHECK_ENOMEM(aligned_alloc(64, size_max - 10));
    void *out = SENTINEL;
    int r = posix_memalign(&out, 64, size_max);
    CHECK_MSG(r == ENOMEM && out == SENTINEL, "posix_memalign(64, SIZE_MAX) = ENOMEM (got %d), "
              "out-pointer untouched", r);
    CHECK_MSG(counters_equal(counters_now(), before), "the impossible requests counted nothing");
}

static void test_posix_memalign_bad_alignment(void)
{
    const size_t bad[] = {0, 1, 2, 3, sizeof(void *) / 2, 24, 48, 1000, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *out = SENTINEL;
        int r = posix_memalign(&out, opaque_size(bad[i]), 64);
        CHECK_MSG(r == EINVAL && out == SENTINEL,
                  "posix_memalign(alignment %zu) = EINVAL (got %d), out-pointer untouched",
                  bad[i], r);
    }
}

typedef void *(*aligned_fn)(size_t alignment, size_t size);

static void *via_posix_memalign(size_t alignment, size_t size)
{
    void *p = NULL;
    return posix_memalign(&p, alignment, size) == 0 ? p : NULL;
}

static void *via_aligned_alloc(size_t alignment, size_t size)
{
    return aligned_alloc(alignment, size);
}

static void *via_memalign(size_t alignment, size_t size)
{
    return memalign(alignment, size);
}

/* Every power-of-two alignment from min_align to 64 MiB is honoured, for
 * size 0 and sizes below, at and above the alignment; the blocks are usable
 * and freeable. */
static void check_aligned(const char *name, aligned_fn fn, size_t min_align)
{
    size_t bad_align = 0, bad_size = 0;
    for (size_t align = min_align; align <= 64 * MiB; align <<= 1) {
        const size_t sizes[] = {0, 1, 1000, align, 2 * align};
        for (int k = 0; k < 5; k++) {
            size_t n = sizes[k];
            if (n > 64 * MiB)
                continue;
            unsigned char *p = (unsigned char *)fn(align, n);
            if (p == NULL || !is_aligned(p, align) || malloc_usable_size(p) < n) {
                if (bad_align == 0)
                    bad_align = align, bad_size = n;
            } else if (n > 0) {
                memset(p, 0x33, n < MiB ? n : 4096);
                p[n - 1] = 0x33;
            }
            free(p);
        }
    }
    CHECK_MSG(bad_align == 0, "%s honours alignments %zu..64 MiB (first failure: %zu, size %zu)",
              name, min_align, bad_align, bad_size);
}

static void test_aligned_family(void)
{
    check_aligned("posix_memalign", via_posix_memalign, sizeof(void *));
    check_aligned("aligned_alloc", via_aligned_alloc, 1);
    check_aligned("memalign", via_memalign, 1);
}

/* valloc is page-aligned; pvalloc is too and rounds the size up to pages. */
static void test_valloc_pvalloc(void)
{
    const size_t page = page_size();
    const size_t sizes[] = {1, 100, page - 1, page, page + 1, 5000, MiB + 3, 5 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        unsigned char *v = (unsigned char *)valloc(n);
        CHECK_MSG(v != NULL && is_aligned(v, page) && malloc_usable_size(v) >= n,
                  "valloc(%zu): page-aligned, usable size >= request", n);
        memset(v, 0x44, n);
        free(v);

        size_t rounded = (n + page - 1) / page * page;
        unsigned char *p = (unsigned char *)pvalloc(n);
        CHECK_MSG(p != NULL && is_aligned(p, page) && malloc_usable_size(p) >= rounded,
                  "pvalloc(%zu): page-aligned, usable size >= %zu (got %zu)", n, rounded,
                  p ? malloc_usable_size(p) : 0);
        memset(p, 0x55, rounded);
        free(p);
    }
}

/* A failed realloc returns NULL with ENOMEM and leaves the block intact, for
 * a small and a huge block; the block is then freed normally. */
static void test_failed_realloc(void)
{
    const size_t sizes[] = {100, 16 * MiB};
    for (int i = 0; i < 2; i++) {
        size_t n = sizes[i];
        unsigned char *p = (unsigned char *)malloc(n);
        CHECK(p != NULL);
        pattern_fill(p, n, 21);
        CHECK_ENOMEM(realloc(p, opaque_size(SIZE_MAX)));
        CHECK_ENOMEM(realloc(p, opaque_size((size_t)PTRDIFF_MAX + 1)));
        CHECK_ENOMEM(reallocarray(p, 2, opaque_size(SIZE_MAX / 2 + 1)));
        CHECK_MSG(pattern_ok(p, n, 21), "the %zu-byte block survived the failed reallocs", n);
        struct counters before = counters_now();
        free(p);
        CHECK_MSG(counters_now().frees == before.frees + 1, "... and is freed normally");
    }
}

static void fill_tail(unsigned char *p, size_t from, size_t to, unsigned seed)
{
    for (size_t i = from; i < to; i++)
        p[i] = pattern_byte(seed, i);
}

/* realloc keeps the contents while the block grows from 8 B to 64 MiB
 * through every size class and shrinks back, and while it grows byte by byte. */
static void test_realloc_contents(void)
{
    const size_t path[] = {8,         24,    100,  1000, 5000, 40000, 300000, 2 * MiB, 16 * MiB,
                           64 * MiB, 16 * MiB, 2 * MiB, 300000, 40000, 5000, 1000, 100, 24, 8};
    size_t size = path[0];
    unsigned char *p = (unsigned char *)malloc(size);
    CHECK(p != NULL);
    pattern_fill(p, size, 5);
    for (size_t i = 1; i < sizeof path / sizeof path[0]; i++) {
        size_t next = path[i];
        unsigned char *q = (unsigned char *)realloc(p, next);
        CHECK_MSG(q != NULL && pattern_ok(q, next < size ? next : size, 5),
                  "realloc %zu -> %zu keeps the contents", size, next);
        fill_tail(q, size, next, 5);
        p = q;
        size = next;
    }

    bool ok = true;
    for (size_t next = size + 1; next <= 600 && ok; next++) {
        unsigned char *q = (unsigned char *)realloc(p, next);
        ok = q != NULL && pattern_ok(q, size, 5);
        if (q != NULL) {
            fill_tail(q, size, next, 5);
            p = q;
            size = next;
        }
    }
    CHECK_MSG(ok, "realloc growing one byte at a time to 600 keeps the contents");

    unsigned char *same = (unsigned char *)realloc(p, size);
    CHECK_MSG(same != NULL && pattern_ok(same, size, 5), "realloc to the same size keeps them");
    struct counters before = counters_now();
    CHECK_MSG(realloc(same, 0) == NULL, "realloc(p, 0) returns NULL (glibc)");
    CHECK_MSG(counters_now().frees == before.frees + 1, "... and frees the block");

    void *fresh = realloc(NULL, 300);
    CHECK_MSG(fresh != NULL && counters_now().allocs == before.allocs + 1 &&
                  malloc_usable_size(fresh) >= 300,
              "realloc(NULL, 300) allocates");
    memset(fresh, 0x66, 300);
    free(fresh);
}

/* calloc memory is zero: fresh, and when it reuses blocks that were filled
 * with 0xFF and freed, at every size class up to 64 MiB. */
static void test_calloc_zero(void)
{
    const size_t sizes[] = {1, 16, 100, 1000, 4096, 65536, MiB, 16 * MiB, 64 * MiB};
    enum { REUSE = 8 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        int count = n >= 16 * MiB ? 2 : REUSE;
        unsigned char *blocks[REUSE];
        bool zero = true;

        for (int k = 0; k < count; k++) {
            blocks[k] = (unsigned char *)calloc(1, n);
            zero = zero && blocks[k] != NULL && bytes_are(blocks[k], n, 0);
            if (blocks[k] != NULL)
                memset(blocks[k], 0xFF, malloc_usable_size(blocks[k]));
        }
        for (int k = 0; k < count; k++)
            free(blocks[k]);
        for (int k = 0; k < count; k++) {
            blocks[k] = (unsigned char *)calloc(n, 1);
            zero = zero && blocks[k] != NULL && bytes_are(blocks[k], n, 0);
        }
        for (int k = 0; k < count; k++)
            free(blocks[k]);
        CHECK_MSG(zero, "calloc(%zu) is zero, fresh and reusing 0xFF-filled blocks", n);
    }
    unsigned char *p = (unsigned char *)calloc(1000, 33);
    CHECK(p != NULL && bytes_are(p, 33000, 0));
    free(p);
}

/* free never changes errno, whatever it frees. */
static void test_free_keeps_errno(void)
{
    struct {
        void *p;
        const char *what;
    } blocks[] = {
        {NULL, "NULL"},
        {malloc(16), "a 16-byte block"},
        {malloc(100000), "a 100 kB block"},
        {malloc(2 * MiB), "a 2 MiB block"},
        {malloc(64 * MiB), "a 64 MiB block"},
        {aligned_alloc(4096, 8192), "a page-aligned block"},
        {calloc(1, 5 * MiB), "a 5 MiB calloc block"},
    };
    bool allocated = true;
    for (size_t i = 1; i < sizeof blocks / sizeof blocks[0]; i++)
        allocated = allocated && blocks[i].p != NULL;
    REQUIRE(allocated);
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) {
        errno = 4242;
        free(blocks[i].p);
        COMPILER_BARRIER();
        int e = errno;
        CHECK_MSG(e == 4242, "free(%s) preserves errno (got %d)", blocks[i].what, e);
    }
}

/* The usable size covers the request and all of it is writable: every block
 * is filled to its usable size while all are live, then verified. */
static void test_usable_size(void)
{
    enum { N = 1100 };
    static unsigned char *blocks[N];
    static size_t usable[N];
    bool covers = true, intact = true;

    for (size_t i = 0; i < N; i++) {
        size_t n = i < 1000 ? i * 3 : (i - 999) * 100003;
        blocks[i] = (unsigned char *)malloc(n);
        usable[i] = malloc_usable_size(blocks[i]);
        covers = covers && blocks[i] != NULL && usable[i] >= n;
        if (blocks[i] != NULL)
            memset(blocks[i], (int)(i & 0xff), usable[i]);
    }
    for (size_t i = 0; i < N; i++) {
        intact = intact && bytes_are(blocks[i], usable[i], (unsigned char)(i & 0xff));
        free(blocks[i]);
    }
    CHECK_MSG(covers, "malloc_usable_size >= request for %d sizes up to 10 MB", N);
    CHECK_MSG(intact, "each block's whole usable size is writable without touching another");
    CHECK(malloc_usable_size(NULL) == 0);
}

static void test_sized_frees(void)
{
    CHECK_MSG(free_sized != NULL && free_aligned_sized != NULL,
              "free_sized and free_aligned_sized are exported");

    const size_t sizes[] = {24, 5000, 3 * MiB};
    for (int i = 0; i < 3; i++) {
        void *p = malloc(sizes[i]);
        struct counters before = counters_now();
        free_sized(p, sizes[i]);
        CHECK_MSG(counters_now().frees == before.frees + 1, "free_sized(p, %zu) frees", sizes[i]);

        void *a = aligned_alloc(4096, sizes[i]);
        CHECK(a != NULL && is_aligned(a, 4096));
        free_aligned_sized(a, 4096, sizes[i]);
        CHECK_MSG(counters_now().frees == before.frees + 2,
                  "free_aligned_sized(p, 4096, %zu) frees", sizes[i]);
    }
    struct counters before = counters_now();
    free_sized(NULL, 0);
    CHECK_MSG(counters_equal(counters_now(), before), "free_sized(NULL, 0) does nothing");
}

/* Cross-thread frees: threads in a ring each allocate patterned blocks and
 * post them to the next thread, which verifies and frees them. */
enum { RING = 4, RING_ITEMS = 20000, MAILBOX = 64 };

struct message {
    unsigned char *p;
    size_t size;
    unsigned seed;
};

static struct mailbox {
    pthread_mutex_t lock;
    struct message items[MAILBOX];
    int count;
} boxes[RING];

static pthread_barrier_t ring_done;
static atomic_int ring_corrupt, ring_failed, ring_remote_frees;

static void consume(struct message m, bool remote)
{
    if (!pattern_ok(m.p, m.size, m.seed))
        atomic_fetch_add(&ring_corrupt, 1);
    free(m.p);
    if (remote)
        atomic_fetch_add(&ring_remote_frees, 1);
}

static void drain(struct mailbox *box)
{
    struct message local[MAILBOX];
    pthread_mutex_lock(&box->lock);
    int n = box->count;
    memcpy(local, box->items, (size_t)n * sizeof local[0]);
    box->count = 0;
    pthread_mutex_unlock(&box->lock);
    for (int i = 0; i < n; i++)
        consume(local[i], true);
}

static void *ring_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    struct mailbox *next = &boxes[(t + 1) % RING];
    uint64_t rng = 0x1234567ULL * (uint64_t)(t + 1);

    for (int k = 0; k < RING_ITEMS; k++) {
        uint64_t r = rng_next(&rng);
        size_t size = r % 500 == 0 ? MiB + r % 4096 : r % 64 == 0 ? 1 + r % 70000 : 1 + r % 2048;
        unsigned seed = (unsigned)(t * 1000003 + k); /* tells senders apart */
        unsigned char *p = (unsigned char *)malloc(size);
        if (p == NULL) {
            atomic_fetch_add(&ring_failed, 1);
            continue;
        }
        pattern_fill(p, size, seed);
        struct message m = {p, size, seed};
        pthread_mutex_lock(&next->lock);
        bool posted = next->count < MAILBOX;
        if (posted)
            next->items[next->count++] = m;
        pthread_mutex_unlock(&next->lock);
        if (!posted)
            consume(m, false);
        if (k % 8 == 0)
            drain(&boxes[t]);
    }
    pthread_barrier_wait(&ring_done);
    drain(&boxes[t]);
    return NULL;
}

static void test_cross_thread_frees(void)
{
    pthread_t threads[RING];
    for (int t = 0; t < RING; t++)
        pthread_mutex_init(&boxes[t].lock, NULL);
    pthread_barrier_init(&ring_done, NULL, RING);

    threads_warm_up(RING);
    struct counters before = counters_now();
    for (int t = 0; t < RING; t++)
        REQUIRE(pthread_create(&threads[t], NULL, ring_thread, (void *)(intptr_t)t) == 0);
    for (int t = 0; t < RING; t++)
        pthread_join(threads[t], NULL);
    struct counters after = counters_now();

    CHECK_MSG(ring_failed == 0, "cross-thread: all %d mallocs succeeded", RING * RING_ITEMS);
    CHECK_MSG(ring_corrupt == 0, "cross-thread: every block arrived intact (%d corrupt)",
              (int)ring_corrupt);
    CHECK_MSG(ring_remote_frees >= 1000,
              "cross-thread: %d blocks were freed by another thread", (int)ring_remote_frees);
    if (!counters_balanced(before, after))
        counters_print("cross-thread", before, after);
    CHECK_MSG(counters_balanced(before, after), "cross-thread: outstanding count unchanged");
    pthread_barrier_destroy(&ring_done);
}

int main(void)
{
    checks_begin("malloc_family");
    test_cma_serves_malloc();
    test_alignment();
    test_malloc_zero();
    test_impossible_sizes();
    test_posix_memalign_bad_alignment();
    test_aligned_family();
    test_valloc_pvalloc();
    test_failed_realloc();
    test_realloc_contents();
    test_calloc_zero();
    test_free_keeps_errno();
    test_usable_size();
    test_sized_frees();
    test_cross_thread_frees();
    return checks_done("malloc_family");
}
