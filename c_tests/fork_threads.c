/* fork_threads.c: fork while other threads allocate, and threads that exit
 * while holding cached blocks.
 *
 * 1. Four threads malloc and free blocks of varied sizes while the main thread
 *    forks 200 times. Each child frees a block inherited from the parent,
 *    runs a few thousand mallocs and frees (large and huge blocks included),
 *    allocates from a new thread too, and _exits. A child that deadlocks on
 *    a lock held at fork time by a parent thread is killed after 10 s and
 *    reported as hung; the parent checks every child's exit status.
 * 2. 200 short-lived threads (8 at a time) each allocate 64 blocks, free
 *    half and exit holding the rest, which the main thread verifies and frees
 *    after the join. The outstanding count must come back to where it was.
 * 3. Thread turnover: 1000 rounds of 6 threads that allocate and free only
 *    their own blocks and exit together.
 *
 * Plain malloc only: runs linked with -lcma and with LD_PRELOAD=libcma.so.
 */
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#include "cma_dl.h"
#include "child.h"
#include "common.h"
#include "dl_counters.h"

/* A block with its pattern seed. */
struct block {
    unsigned char *p;
    size_t size;
    unsigned seed;
};

/* Blocks over 64 KiB get one pattern byte per 4 KiB (per 64 KiB over 8 MiB)
 * and their last byte: enough to catch a misplaced or shared block, without
 * faulting in every page of every large block in 200 children. */
static size_t block_stride(size_t size)
{
    return size <= 64 * KiB ? 1 : size <= 8 * MiB ? 4 * KiB : 64 * KiB;
}

static void block_fill(struct block *b)
{
    size_t stride = block_stride(b->size);
    for (size_t i = 0; i < b->size; i += stride)
        b->p[i] = pattern_byte(b->seed, i);
    b->p[b->size - 1] = pattern_byte(b->seed, b->size - 1);
}

static bool block_ok(const struct block *b)
{
    size_t stride = block_stride(b->size);
    for (size_t i = 0; i < b->size; i += stride)
        if (b->p[i] != pattern_byte(b->seed, i))
            return false;
    return b->p[b->size - 1] == pattern_byte(b->seed, b->size - 1);
}

/* Which sizes a churn draws: mostly small, some medium (up to 64 KiB), and
 * optionally a few large (1 MiB) and huge (32 MiB) ones. */
enum size_mix { SMALL_MEDIUM, UP_TO_LARGE, UP_TO_HUGE };

static size_t pick_size(uint64_t *rng, enum size_mix mix)
{
    uint64_t r = rng_next(rng);
    if (mix == UP_TO_HUGE && r % 1000 == 0)
        return 32 * MiB + r % 4096;
    if (mix != SMALL_MEDIUM && r % 100 == 0)
        return MiB + r % 100000;
    if (r % 16 == 0)
        return 4096 + r % 60000;
    return 1 + r % 2048;
}

enum { SLOTS = 32 };

/* One malloc-or-free step on a slot table; false if a block was corrupt or a
 * malloc failed. */
static bool churn_step(struct block slots[SLOTS], uint64_t *rng, unsigned seed,
                       enum size_mix mix)
{
    struct block *b = &slots[rng_next(rng) % SLOTS];
    if (b->p != NULL) {
        bool ok = block_ok(b);
        free(b->p);
        b->p = NULL;
        return ok;
    }
    b->size = pick_size(rng, mix);
    b->seed = seed;
    b->p = (unsigned char *)malloc(b->size);
    if (b->p == NULL)
        return false;
    block_fill(b);
    return true;
}

static bool churn_release(struct block slots[SLOTS])
{
    bool ok = true;
    for (int i = 0; i < SLOTS; i++) {
        if (slots[i].p != NULL) {
            ok = ok && block_ok(&slots[i]);
            free(slots[i].p);
            slots[i].p = NULL;
        }
    }
    return ok;
}

/* ---- part 1: fork while other threads allocate ---- */

enum { CHURN_THREADS = 4, FORKS = 200, CHILD_OPS = 3000 };
enum { CHILD_OK = 0, CHILD_GIFT_CORRUPT = 10, CHILD_BLOCK_BAD = 11, CHILD_THREAD_BAD = 12 };

static atomic_bool churn_stop;
static atomic_long churn_ops;
static atomic_int churn_failures;

static void *churn_thread(void *arg)
{
    uint64_t rng = 0xC0FFEEULL + (uint64_t)(intptr_t)arg;
    struct block slots[SLOTS] = {{NULL, 0, 0}};
    unsigned seed = 0;
    /* Lowest priority: the threads still run on any idle core (and so are
     * mid-malloc at many forks), but the forking thread and its children do
     * not wait for CPU behind them. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
    while (!atomic_load(&churn_stop)) {
        if (!churn_step(slots, &rng, seed++, UP_TO_LARGE))
            atomic_fetch_add(&churn_failures, 1);
        atomic_fetch_add(&churn_ops, 1);
    }
    if (!churn_release(slots))
        atomic_fetch_add(&churn_failures, 1);
    return NULL;
}

static void *child_thread(void *arg)
{
    uint64_t rng = (uint64_t)(intptr_t)arg;
    struct block slots[SLOTS] = {{NULL, 0, 0}};
    bool ok = true;
    for (int k = 0; k < 500; k++)
        ok = churn_step(slots, &rng, (unsigned)k, UP_TO_LARGE) && ok;
    ok = churn_release(slots) && ok;
    return ok ? arg : NULL;
}

/* The child: free the inherited block, churn, allocate from a new thread. */
static void child_main(int n, struct block gift)
{
    if (!block_ok(&gift))
        _exit(CHILD_GIFT_CORRUPT);
    free(gift.p);

    uint64_t rng = 0xF00DULL + (uint64_t)n;
    struct block slots[SLOTS] = {{NULL, 0, 0}};
    bool ok = true;
    for (int k = 0; k < CHILD_OPS; k++)
        ok = churn_step(slots, &rng, (unsigned)k, UP_TO_HUGE) && ok;
    /* Make sure every child has large and huge blocks, whatever the PRNG. */
    struct block big[2] = {{malloc(2 * MiB), 2 * MiB, 1}, {malloc(48 * MiB), 48 * MiB, 2}};
    for (int i = 0; i < 2; i++) {
        ok = ok && big[i].p != NULL;
        if (big[i].p != NULL)
            block_fill(&big[i]);
    }
    for (int i = 0; i < 2; i++) {
        ok = ok && big[i].p != NULL && block_ok(&big[i]);
        free(big[i].p);
    }
    ok = churn_release(slots) && ok;
    if (!ok)
        _exit(CHILD_BLOCK_BAD);

    pthread_t thread;
    void *result = NULL;
    if (pthread_create(&thread, NULL, child_thread, (void *)(intptr_t)(n + 1)) != 0 ||
        pthread_join(thread, &result) != 0 || result == NULL)
        _exit(CHILD_THREAD_BAD);
    _exit(CHILD_OK);
}

static void test_fork_while_allocating(void)
{
    pthread_t threads[CHURN_THREADS];
    for (int t = 0; t < CHURN_THREADS; t++)
        REQUIRE(pthread_create(&threads[t], NULL, churn_thread, (void *)(intptr_t)t) == 0);
    while (atomic_load(&churn_ops) < 1000)
        sched_yield();

    long ops_before = atomic_load(&churn_ops);
    int bad = 0, first_bad = -1;
    char why[160] = "";
    for (int n = 0; n < FORKS; n++) {
        watchdog_mark(n);
        struct block gift = {malloc(1000 + (size_t)n), 1000 + (size_t)n, (unsigned)n};
        REQUIRE(gift.p != NULL);
        block_fill(&gift);
        fflush(stdout);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0)
            child_main(n, gift);
        free(gift.p);
        int status = wait_child(pid);
        if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (bad++ == 0) {
                first_bad = n;
                describe_status(why, sizeof why, status,
                                "10: inherited block corrupt, 11: block corrupt or "
                                "malloc failed, 12: thread in the child failed");
            }
        }
    }
    long forked_during = atomic_load(&churn_ops) - ops_before;

    atomic_store(&churn_stop, true);
    for (int t = 0; t < CHURN_THREADS; t++)
        pthread_join(threads[t], NULL);

    CHECK_MSG(bad == 0, "%d children forked while %d threads allocate: %d failed "
              "(first: #%d, %s)", FORKS, CHURN_THREADS, bad, first_bad, why);
    CHECK_MSG(forked_during > 0, "the threads kept allocating during the forks (%ld ops)",
              forked_during);
    CHECK_MSG(atomic_load(&churn_failures) == 0, "the parent's threads saw no corrupt block");
}

/* ---- part 2: threads exiting with cached blocks ---- */

enum { SHORT_THREADS = 200, BATCH = 8, PER_THREAD = 64 };

struct short_lived {
    pthread_t thread;
    int index;
    struct block kept[PER_THREAD / 2];
    int failures;
};

static struct short_lived lives[SHORT_THREADS];

static void *short_thread(void *arg)
{
    struct short_lived *me = (struct short_lived *)arg;
    uint64_t rng = 0xABCDEFULL + (uint64_t)me->index;
    struct block blocks[PER_THREAD];

    for (int k = 0; k < PER_THREAD; k++) {
        size_t size = k == 0 ? MiB : pick_size(&rng, UP_TO_LARGE);
        blocks[k] = (struct block){malloc(size), size, (unsigned)(me->index * PER_THREAD + k)};
        if (blocks[k].p == NULL)
            me->failures++;
        else
            block_fill(&blocks[k]);
    }
    for (int k = 0; k < PER_THREAD; k++) {
        if (k % 2 == 0) {
            me->kept[k / 2] = blocks[k]; /* left for the main thread */
        } else if (blocks[k].p != NULL) {
            if (!block_ok(&blocks[k]))
                me->failures++;
            free(blocks[k].p);
        }
    }
    return NULL;
}

static void test_threads_exit_holding_blocks(void)
{
    int failures = 0, corrupt = 0;

    threads_warm_up(BATCH);
    struct counters before = counters_now();
    for (int first = 0; first < SHORT_THREADS; first += BATCH) {
        watchdog_mark(FORKS + first);
        for (int i = first; i < first + BATCH; i++) {
            lives[i].index = i;
            REQUIRE(pthread_create(&lives[i].thread, NULL, short_thread, &lives[i]) == 0);
        }
        for (int i = first; i < first + BATCH; i++) {
            pthread_join(lives[i].thread, NULL);
            failures += lives[i].failures;
            for (int k = 0; k < PER_THREAD / 2; k++) {
                struct block *b = &lives[i].kept[k];
                if (b->p != NULL && !block_ok(b))
                    corrupt++;
                free(b->p);
            }
        }
    }
    struct counters after = counters_now();

    CHECK_MSG(failures == 0, "%d short-lived threads allocated and freed without failure",
              SHORT_THREADS);
    CHECK_MSG(corrupt == 0, "the %d blocks they left behind were intact (%d corrupt)",
              SHORT_THREADS * PER_THREAD / 2, corrupt);
    if (!counters_balanced(before, after))
        counters_print("short-lived threads", before, after);
    CHECK_MSG(counters_balanced(before, after), "outstanding count back to where it was");
}

/* ---- part 3: thread turnover ---- */

enum { TURNOVER_THREADS = 6, TURNOVER_ROUNDS = 1000, TURNOVER_OPS = 384 };

static atomic_int turnover_failures;

/* Short-lived on purpose (tens of microseconds): the exits of one round
 * overlap each other and the starts of the next. Sizes as in the stress
 * test; every block carries a pattern unique to its thread. */
static void *turnover_thread(void *arg)
{
    const unsigned base = (unsigned)(intptr_t)arg * TURNOVER_OPS;
    struct block slots[SLOTS] = {{NULL, 0, 0}};
    bool ok = true;
    for (int k = 0; k < TURNOVER_OPS; k++) {
        struct block *b = &slots[k % SLOTS];
        if (b->p != NULL) {
            ok = block_ok(b) && ok;
            free(b->p);
            b->p = NULL;
            continue;
        }
        size_t size = (size_t)((k % 17) + 1) * 24;
        *b = (struct block){malloc(size), size, base + (unsigned)k};
        if (b->p == NULL)
            ok = false;
        else
            block_fill(b);
    }
    ok = churn_release(slots) && ok;
    if (!ok)
        atomic_fetch_add(&turnover_failures, 1);
    return NULL;
}

/* Rounds of six threads that malloc and free only their own blocks, then
 * exit together: the thread-exit path racing with other exits and with new
 * threads taking over the memory. */
static void test_thread_turnover(void)
{
    pthread_t threads[TURNOVER_THREADS];

    threads_warm_up(TURNOVER_THREADS);
    struct counters before = counters_now();
    for (int round = 0; round < TURNOVER_ROUNDS; round++) {
        watchdog_mark(FORKS + SHORT_THREADS + round);
        for (int t = 0; t < TURNOVER_THREADS; t++) {
            intptr_t id = (intptr_t)round * TURNOVER_THREADS + t;
            REQUIRE(pthread_create(&threads[t], NULL, turnover_thread, (void *)id) == 0);
        }
        for (int t = 0; t < TURNOVER_THREADS; t++)
            pthread_join(threads[t], NULL);
    }
    struct counters after = counters_now();

    CHECK_MSG(atomic_load(&turnover_failures) == 0,
              "%d rounds of %d threads: every block intact, every malloc served",
              TURNOVER_ROUNDS, TURNOVER_THREADS);
    if (!counters_balanced(before, after))
        counters_print("thread turnover", before, after);
    CHECK_MSG(counters_balanced(before, after), "outstanding count back to where it was");
}

int main(void)
{
    checks_begin("fork_threads");
    counters_now(); /* fails now, not in a child, if CMA is not loaded */
    /* Marks: the forks, then the batches of short-lived threads, then the
     * turnover rounds. A hung child is killed after 10 s, so 30 s without a
     * mark is a hang of this process. */
    watchdog_start("step", 30);
    test_fork_while_allocating();
    test_threads_exit_holding_blocks();
    test_thread_turnover();
    return checks_done("fork_threads");
}
