/* secure.c: the properties of secure mode (CMA_SECURE=1) that are not
 * misuse detections: the order of the blocks of a fresh page is random,
 * freed memory is zeroed, and spans end in guard pages.
 *
 * Usage: secure --list              the cases: name|ok|secure|-|-
 *        secure CASE [--threads]
 *
 * Plain malloc family: run with LD_PRELOAD=libcma.so and CMA_SECURE=1.
 * Exits 0 when every check passed. With --threads, the six hammer threads
 * of faults.h run throughout (they never use the sizes tested here).
 */
#include <malloc.h>
#include <signal.h>
#include <sys/wait.h>

#include "faults.h"

static void *(*volatile malloc_fn)(size_t) = malloc;
static void (*volatile free_fn)(void *) = free;

static int compare_pointers(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* Consecutive mallocs of one size, from fresh pages, must not come out in
 * address order. The stride is the distance between neighbouring blocks
 * (the smallest gap between the sorted addresses); in address order, every
 * block would be one stride above the one before. At most half of them may
 * be (a random order of a page's fresh blocks gives about 1 in 36 for
 * 112-byte blocks, 1 in 4 or so for medium ones, whose pages are carved 4
 * blocks at a time). */
static void check_shuffled(const char *name, size_t size, int n)
{
    uintptr_t order[64], sorted[64];
    REQUIRE(n <= 64);
    for (int i = 0; i < n; i++) {
        order[i] = (uintptr_t)malloc_fn(size);
        REQUIRE(order[i] != 0);
        sorted[i] = order[i];
    }
    qsort(sorted, (size_t)n, sizeof sorted[0], compare_pointers);
    uintptr_t stride = UINTPTR_MAX;
    for (int i = 0; i + 1 < n; i++)
        if (sorted[i + 1] - sorted[i] < stride)
            stride = sorted[i + 1] - sorted[i];
    int in_order = 0;
    for (int i = 0; i + 1 < n; i++)
        if (order[i + 1] == order[i] + stride)
            in_order++;
    printf("     %s: %d mallocs of %zu bytes, stride %zu: %d of %d steps go one block up\n",
           name, n, size, (size_t)stride, in_order, n - 1);
    CHECK_MSG(in_order <= (n - 1) / 2,
              "%s: the blocks do not come out in address order (%d of %d steps in order)", name,
              in_order, n - 1);
    for (int i = 0; i < n; i++)
        free_fn((void *)order[i]);
}

/* Freed memory is zeroed: blocks filled with 0xa5 and freed, then 256
 * blocks of 64 bytes allocated and freed (to move a quarantine of freed
 * blocks along, if there is one), then as many blocks as were freed
 * allocated again. Every block handed out again (same address) must read
 * zero after its first 16 bytes (where a free block keeps its link).
 * Reading a fresh block's indeterminate bytes is defined for unsigned char;
 * nothing is read through a stale pointer. */
static void check_zeroed(const char *name, size_t size, int n, bool threads)
{
    uintptr_t freed[16];
    REQUIRE(n <= 16);
    for (int i = 0; i < n; i++) {
        unsigned char *p = (unsigned char *)malloc_fn(size);
        REQUIRE(p != NULL);
        memset(p, 0xa5, size);
        freed[i] = (uintptr_t)p;
    }
    for (int i = 0; i < n; i++)
        free_fn((void *)freed[i]);
    void *flush[256];
    for (int i = 0; i < 256; i++)
        REQUIRE((flush[i] = malloc_fn(64)) != NULL);
    for (int i = 0; i < 256; i++)
        free_fn(flush[i]);
    int reused = 0, dirty = 0;
    size_t first_dirty = 0;
    for (int i = 0; i < n; i++) {
        unsigned char *p = (unsigned char *)malloc_fn(size);
        REQUIRE(p != NULL);
        bool was_freed = false;
        for (int j = 0; j < n; j++)
            was_freed = was_freed || freed[j] == (uintptr_t)p;
        if (!was_freed)
            continue;
        reused++;
        volatile unsigned char *b = p;
        for (size_t k = 16; k < size; k++)
            if (b[k] != 0) {
                if (dirty++ == 0)
                    first_dirty = k;
                break;
            }
    }
    if (reused == 0 && threads) {
        /* The hammer threads took the memory (a large block's span can
         * become one of their pages): inconclusive, run.sh runs it again. */
        say("REUSED: none of the %d freed blocks came back (taken by the hammer threads?)\n", n);
        _exit(EXIT_REUSED);
    }
    CHECK_MSG(reused > 0, "%s: %d of %d freed blocks were handed out again", name, reused, n);
    CHECK_MSG(dirty == 0,
              "%s: freed memory was zeroed: %d of %d reused blocks still hold old data "
              "(first at offset %zu)",
              name, dirty, reused, first_dirty);
}

/* Writes one byte at `p` in a child process, which must die of SIGSEGV. */
static bool write_faults(volatile unsigned char *p)
{
    fflush(stdout);
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        *p = 1;
        _exit(0);
    }
    int status;
    REQUIRE(waitpid(child, &status, 0) == child);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV;
}

/* Guard pages: a write just past the end of a span's last block faults.
 * A large block's span ends in its guard page, right after the canary. In a
 * page of 2048-byte blocks (requests of 2032 bytes plus the canary) the
 * blocks fill the 64 KiB slice up to its last 4 KiB, the guard: the block
 * at offset 29 * 2048 in the slice is the last, and the byte after it is
 * the guard's first. */
static void check_guarded(const char *name, size_t size, int n)
{
    unsigned char *blocks[64];
    REQUIRE(n <= 64);
    unsigned char *last = NULL;
    for (int i = 0; i < n; i++) {
        REQUIRE((blocks[i] = (unsigned char *)malloc_fn(size)) != NULL);
        size_t block_size = malloc_usable_size(blocks[i]) + 16;
        uintptr_t end = (uintptr_t)blocks[i] + block_size;
        if (size > 128 * KiB || (end & 0xffff) == 61440)
            last = blocks[i];
    }
    CHECK_MSG(last != NULL, "%s: found the last block of a span", name);
    unsigned char *past = last + malloc_usable_size(last) + 16;
    CHECK_MSG((uintptr_t)past % 4096 == 0, "%s: the block ends at a page boundary (%p)", name,
              (void *)past);
    CHECK_MSG(!write_faults(past - 1), "%s: the block's last byte (its canary's) can be written",
              name);
    CHECK_MSG(write_faults(past), "%s: the byte after the block is a guard page (SIGSEGV)", name);
    for (int i = 0; i < n; i++)
        free_fn(blocks[i]);
}

enum property { SHUFFLED, ZEROED, GUARDED };

static const struct {
    const char *name;
    enum property property;
    size_t size;
    int n;
} cases[] = {
    {"secure.shuffled.small", SHUFFLED, 112, 64},
    {"secure.shuffled.medium", SHUFFLED, 40000, 24},
    {"secure.zeroed.small", ZEROED, 720, 16},
    {"secure.zeroed.medium", ZEROED, 40000, 8},
    {"secure.zeroed.large", ZEROED, MiB + 12345, 4},
    {"secure.guarded.small", GUARDED, 2032, 64},
    {"secure.guarded.large", GUARDED, MiB + 12345, 1},
};

int main(int argc, char **argv)
{
    const int count = (int)(sizeof cases / sizeof cases[0]);
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (int i = 0; i < count; i++)
            say("%s|ok|secure|-|-\n", cases[i].name);
        return 0;
    }
    bool threads = argc == 3 && strcmp(argv[2], "--threads") == 0;
    if (argc < 2 || argc > 3 || (argc == 3 && !threads)) {
        say("usage: %s --list | CASE [--threads]\n", argv[0]);
        return EXIT_SETUP;
    }
    int c = -1;
    for (int i = 0; i < count; i++)
        if (strcmp(cases[i].name, argv[1]) == 0)
            c = i;
    if (c < 0)
        setup_failed("no case %s", argv[1]);

    checks_begin(cases[c].name);
    const char *secure = getenv("CMA_SECURE");
    CHECK_MSG(secure != NULL && strcmp(secure, "1") == 0, "runs with CMA_SECURE=1");
    if (threads)
        hammer_start(false);
    switch (cases[c].property) {
    case SHUFFLED:
        check_shuffled(cases[c].name, cases[c].size, cases[c].n);
        break;
    case ZEROED:
        check_zeroed(cases[c].name, cases[c].size, cases[c].n, threads);
        break;
    case GUARDED:
        check_guarded(cases[c].name, cases[c].size, cases[c].n);
        break;
    }
    if (threads) {
        int failures = hammer_stop();
        CHECK_MSG(failures == 0, "the six hammer threads stopped and joined, %d failures%s%s",
                  failures, failures ? ": " : "", hammer.first_failure);
    }
    return checks_done(cases[c].name);
}
