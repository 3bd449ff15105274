/* orphan_trim.c: the heaps of exited threads given back while in use.
 *
 * 300 rounds of six worker threads each write 192 blocks (most of 9..48 KiB,
 * whose insides a trim gives back, some small ones), free seven in eight at
 * random and exit, leaving the rest in a shared pool. Meanwhile:
 *   - a trimmer thread calls malloc_trim(0) in a loop: it gives back the
 *     insides of the free blocks of the exited threads' heaps, one heap at a
 *     time without the core lock, while
 *   - a freer thread checks and frees pooled blocks (frees into those heaps,
 *     some of them busy being trimmed at that moment),
 *   - the next round's workers adopt those heaps and reuse their blocks, and
 *   - the main thread forks now and then: the child checks and frees a block
 *     it got from the parent, trims (an orphan busy in the parent at the
 *     fork must not make it wait), allocates from a new thread and exits.
 * It runs with CMA_PURGE_DELAY_MS=1 (it sets it and starts itself again),
 * so the purge thread works on the orphans too. Every block must keep its
 * pattern, every child must exit cleanly within 10 s, and the outstanding
 * count must come back to where it was.
 *
 * Plain malloc only: runs linked with -lcma and with LD_PRELOAD=libcma.so.
 */
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"
#include "child.h"
#include "cma_dl.h"
#include "common.h"
#include "dl_counters.h"

enum { ROUNDS = 300, WORKERS = 6, BLOCKS = 192, POOL = 8192, FORK_EVERY = 8 };

struct block {
    unsigned char *p;
    size_t size;
    unsigned seed;
};

/* Every byte of a block up to 4 KiB; past that one byte per 512 and the
 * last, so a reused block whose inside was given back is read too. */
static size_t stride_of(size_t size)
{
    return size <= 4 * KiB ? 1 : 512;
}

static void block_fill(const struct block *b)
{
    for (size_t i = 0; i < b->size; i += stride_of(b->size))
        b->p[i] = pattern_byte(b->seed, i);
    b->p[b->size - 1] = pattern_byte(b->seed, b->size - 1);
}

static bool block_ok(const struct block *b)
{
    for (size_t i = 0; i < b->size; i += stride_of(b->size))
        if (b->p[i] != pattern_byte(b->seed, i))
            return false;
    return b->p[b->size - 1] == pattern_byte(b->seed, b->size - 1);
}

/* ---- the pool of blocks the workers leave behind ---- */

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct block pool[POOL];
static int pool_count;
static atomic_int pool_full;

static void pool_put(struct block b)
{
    pthread_mutex_lock(&pool_lock);
    if (pool_count < POOL) {
        pool[pool_count++] = b;
        b.p = NULL;
    }
    pthread_mutex_unlock(&pool_lock);
    if (b.p != NULL) { /* full: the freer is behind; free it here */
        atomic_fetch_add(&pool_full, 1);
        free(b.p);
    }
}

static bool pool_take(struct block *out)
{
    pthread_mutex_lock(&pool_lock);
    bool some = pool_count > 0;
    if (some)
        *out = pool[--pool_count];
    pthread_mutex_unlock(&pool_lock);
    return some;
}

/* ---- the threads ---- */

static atomic_int corrupt, alloc_failed;
static atomic_bool helpers_stop;
static atomic_long trims;

static void *worker(void *arg)
{
    unsigned base = (unsigned)(intptr_t)arg * BLOCKS;
    uint64_t rng = 0x5EEDULL + base;
    struct block blocks[BLOCKS];
    for (int k = 0; k < BLOCKS; k++) {
        size_t size = k % 4 == 3 ? 16 + rng_next(&rng) % 512 : 9 * KiB + rng_next(&rng) % (39 * KiB);
        blocks[k] = (struct block){malloc(size), size, base + (unsigned)k};
        if (blocks[k].p == NULL) {
            atomic_fetch_add(&alloc_failed, 1);
            continue;
        }
        block_fill(&blocks[k]);
    }
    for (int k = 0; k < BLOCKS; k++) {
        if (blocks[k].p == NULL)
            continue;
        if (!block_ok(&blocks[k]))
            atomic_fetch_add(&corrupt, 1);
        if (rng_next(&rng) % 8 == 0)
            pool_put(blocks[k]);
        else
            free(blocks[k].p);
    }
    return NULL;
}

static void *trimmer(void *arg)
{
    (void)arg;
    while (!atomic_load(&helpers_stop)) {
        malloc_trim(0);
        atomic_fetch_add(&trims, 1);
    }
    return NULL;
}

static void *freer(void *arg)
{
    (void)arg;
    struct block b;
    while (!atomic_load(&helpers_stop)) {
        if (!pool_take(&b)) {
            sched_yield();
            continue;
        }
        if (!block_ok(&b))
            atomic_fetch_add(&corrupt, 1);
        free(b.p);
    }
    return NULL;
}

/* ---- the child of a fork ---- */

static void *child_thread(void *arg)
{
    struct block b = {malloc(20 * KiB), 20 * KiB, (unsigned)(intptr_t)arg};
    if (b.p == NULL)
        return NULL;
    block_fill(&b);
    bool ok = block_ok(&b);
    free(b.p);
    return ok ? arg : NULL;
}

enum { CHILD_OK = 0, CHILD_GIFT_CORRUPT = 10, CHILD_BLOCK_BAD = 11, CHILD_THREAD_BAD = 12 };

static void child_main(struct block gift)
{
    if (!block_ok(&gift))
        _exit(CHILD_GIFT_CORRUPT);
    free(gift.p);
    malloc_trim(0);
    struct block mine[32];
    for (int k = 0; k < 32; k++) {
        mine[k] = (struct block){malloc(12 * KiB + (size_t)k * 256), 12 * KiB + (size_t)k * 256,
                                 7000u + (unsigned)k};
        if (mine[k].p == NULL)
            _exit(CHILD_BLOCK_BAD);
        block_fill(&mine[k]);
    }
    for (int k = 0; k < 32; k++) {
        if (!block_ok(&mine[k]))
            _exit(CHILD_BLOCK_BAD);
        free(mine[k].p);
    }
    pthread_t thread;
    void *result = NULL;
    if (pthread_create(&thread, NULL, child_thread, (void *)(intptr_t)99) != 0 ||
        pthread_join(thread, &result) != 0 || result == NULL)
        _exit(CHILD_THREAD_BAD);
    _exit(CHILD_OK);
}

int main(int argc, char **argv)
{
    (void)argc;
    run_with_setting(argv, "CMA_PURGE_DELAY_MS", "1");
    setvbuf(stdout, NULL, _IONBF, 0);
    watchdog_start("round", 20);
    threads_warm_up(WORKERS + 2);
    struct counters before = counters_now();

    pthread_t helpers[2];
    REQUIRE(pthread_create(&helpers[0], NULL, trimmer, NULL) == 0);
    REQUIRE(pthread_create(&helpers[1], NULL, freer, NULL) == 0);

    int bad_children = 0;
    char why[96] = "";
    for (int round = 0; round < ROUNDS; round++) {
        watchdog_mark(round);
        pthread_t workers[WORKERS];
        for (int t = 0; t < WORKERS; t++)
            REQUIRE(pthread_create(&workers[t], NULL, worker,
                                   (void *)(intptr_t)(round * WORKERS + t)) == 0);
        if (round % FORK_EVERY == FORK_EVERY - 1) {
            struct block gift = {malloc(30 * KiB), 30 * KiB, 5000u + (unsigned)round};
            REQUIRE(gift.p != NULL);
            block_fill(&gift);
            pid_t pid = fork();
            REQUIRE(pid >= 0);
            if (pid == 0)
                child_main(gift);
            free(gift.p);
            int status = wait_child(pid);
            if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                if (bad_children++ == 0)
                    describe_status(why, sizeof why, status,
                                    "10: gift corrupt, 11: block corrupt or malloc failed, "
                                    "12: thread failed");
            }
        }
        for (int t = 0; t < WORKERS; t++)
            pthread_join(workers[t], NULL);
    }
    atomic_store(&helpers_stop, true);
    pthread_join(helpers[0], NULL);
    pthread_join(helpers[1], NULL);
    struct block b;
    while (pool_take(&b)) {
        if (!block_ok(&b))
            atomic_fetch_add(&corrupt, 1);
        free(b.p);
    }
    malloc_trim(0);
    struct counters after = counters_now();

    CHECK_MSG(atomic_load(&alloc_failed) == 0, "%d rounds of %d workers: every malloc succeeded",
              ROUNDS, WORKERS);
    CHECK_MSG(atomic_load(&corrupt) == 0,
              "every block kept its pattern through %ld trims (%d corrupt)",
              atomic_load(&trims), atomic_load(&corrupt));
    CHECK_MSG(atomic_load(&trims) > ROUNDS, "the trimmer ran throughout (%ld trims)",
              atomic_load(&trims));
    CHECK_MSG(bad_children == 0, "%d children forked during the rounds: %d failed (first: %s)",
              ROUNDS / FORK_EVERY, bad_children, why);
    if (!counters_balanced(before, after))
        counters_print("rounds", before, after);
    CHECK_MSG(counters_balanced(before, after), "outstanding count back to where it was");
    printf("orphan_trim: %u checks passed\n", checks_passed);
    return 0;
}
