/* fork_stress.c: fork 1000 times while threads hammer the heap, and threads
 * that exit with full caches, leaving their blocks to the main thread.
 *
 * 1. Four threads malloc, realloc and free blocks of every category (small
 *    to huge) and swap blocks through shared mailboxes (so they free each
 *    other's), while the main thread forks 1000 times. Each child:
 *    verifies and frees a block the parent allocated just before the fork
 *    (small, medium, large or huge, in turn) and a block it takes out of a
 *    mailbox (allocated by a thread that does not exist in the child);
 *    allocates, verifies and frees blocks of every category; runs a thread
 *    that does the same; and _exits. A child stuck on a lock held at fork
 *    time is killed after 10 s and reported as hung.
 * 2. 200 threads, 10 at a time, each allocate 48 blocks of every category,
 *    free half of them and exit holding the rest, which the main thread
 *    verifies and frees after the join.
 * 3. Thread exit with full caches: 200 threads, 10 at a time, each free 100
 *    small blocks the main thread allocated (filling their foreign caches
 *    and leaving a partly filled outbox), churn a little and exit without
 *    allocating again. The main thread then allocates and verifies blocks of
 *    those classes, which come back through the exited threads' caches.
 * After parts 2 and 3, the number of outstanding blocks (CMA's counters,
 * found with dlsym) must be back to where it was.
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

/* A block with its size and seed in its first 16 bytes; a pattern after
 * them (every byte up to 4 KiB, then one per 4 KiB up to 64 KiB, then one
 * per 64 KiB: a thousand children cannot fault in every page of their large
 * and huge blocks in reasonable time) and in its last byte. */
struct header {
    size_t size;
    uint64_t seed;
};

static size_t stride_of(size_t i)
{
    return i < 4 * KiB ? 1 : i < 64 * KiB ? 4 * KiB : 64 * KiB;
}

static void *block_new(size_t size, uint64_t seed)
{
    if (size < sizeof(struct header))
        size = sizeof(struct header);
    unsigned char *p = (unsigned char *)malloc(size);
    if (p == NULL)
        return NULL;
    struct header h = {size, seed};
    memcpy(p, &h, sizeof h);
    for (size_t i = sizeof h; i < size; i += stride_of(i))
        p[i] = pattern_byte((unsigned)seed, i);
    p[size - 1] = pattern_byte((unsigned)seed, size - 1);
    return p;
}

/* True when the block holds the header and pattern it was made with. */
static bool block_good(const void *block)
{
    const unsigned char *p = (const unsigned char *)block;
    struct header h;
    memcpy(&h, p, sizeof h);
    if (h.size < sizeof h || h.size > 64 * MiB)
        return false;
    for (size_t i = sizeof h; i < h.size; i += stride_of(i))
        if (p[i] != pattern_byte((unsigned)h.seed, i))
            return false;
    return p[h.size - 1] == pattern_byte((unsigned)h.seed, h.size - 1);
}

/* Sizes: mostly small, some medium, a few large, rarely huge. */
static size_t pick_size(uint64_t *rng, bool huge_ok)
{
    uint64_t r = rng_next(rng);
    if (huge_ok && r % 500 == 0)
        return 2 * MiB + 1 + (r >> 12) % (6 * MiB);
    if (r % 50 == 0)
        return 128 * KiB + 1 + (r >> 12) % (2 * MiB - 128 * KiB);
    if (r % 8 == 0)
        return KiB + 1 + (r >> 12) % (127 * KiB);
    return 1 + (r >> 12) % KiB;
}

/* One block of each category, for the children and the short-lived threads. */
static const size_t category_sizes[] = {200, 40000, MiB + 4321, 3 * MiB + 1234};

/* ---- part 1: fork while other threads allocate ---- */

enum { CHURN_THREADS = 4, FORKS = 1000, SLOTS = 32, MAILBOXES = 16 };
enum {
    CHILD_OK = 0,
    CHILD_GIFT_BAD = 10,
    CHILD_MAILBOX_BAD = 11,
    CHILD_BLOCK_BAD = 12,
    CHILD_THREAD_BAD = 13,
};

static atomic_bool churn_stop;
static atomic_long churn_ops;
static atomic_int churn_failures;
static _Atomic(void *) mailbox[MAILBOXES];

static void *churn_thread(void *arg)
{
    uint64_t rng = 0xF0F0ULL + (uint64_t)(intptr_t)arg;
    uint64_t seed = (uint64_t)(intptr_t)arg << 40;
    void *slots[SLOTS] = {NULL};
    /* Lowest priority: they run on any idle core (and so are often in the
     * middle of a malloc when the main thread forks), but the forking
     * thread and its children do not wait behind them. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
    while (!atomic_load_explicit(&churn_stop, memory_order_relaxed)) {
        uint64_t r = rng_next(&rng);
        void **slot = &slots[r % SLOTS];
        if (*slot == NULL) {
            *slot = block_new(pick_size(&rng, true), seed++);
            if (*slot == NULL)
                atomic_fetch_add(&churn_failures, 1);
        } else if (!block_good(*slot)) {
            atomic_fetch_add(&churn_failures, 1);
            *slot = NULL;
        } else if ((r >> 20) % 8 == 0) {
            *slot = atomic_exchange(&mailbox[(r >> 24) % MAILBOXES], *slot);
            if (*slot != NULL && !block_good(*slot)) {
                atomic_fetch_add(&churn_failures, 1);
                *slot = NULL;
            }
        } else if ((r >> 20) % 8 == 1) {
            /* realloc: the block moves or grows with its contents. */
            struct header h;
            memcpy(&h, *slot, sizeof h);
            size_t size = pick_size(&rng, false);
            if (size < sizeof h)
                size = sizeof h;
            unsigned char *p = (unsigned char *)realloc(*slot, size);
            if (p == NULL) {
                atomic_fetch_add(&churn_failures, 1);
                continue;
            }
            size_t kept = size < h.size ? size : h.size;
            bool ok = memcmp(p, &h, sizeof h) == 0;
            for (size_t i = sizeof h; ok && i < kept && i < 4096; i++)
                ok = p[i] == pattern_byte((unsigned)h.seed, i);
            if (!ok)
                atomic_fetch_add(&churn_failures, 1);
            free(p);
            *slot = block_new(size, seed++);
        } else {
            free(*slot);
            *slot = NULL;
        }
        atomic_fetch_add_explicit(&churn_ops, 1, memory_order_relaxed);
    }
    for (int i = 0; i < SLOTS; i++) {
        if (slots[i] != NULL && !block_good(slots[i]))
            atomic_fetch_add(&churn_failures, 1);
        free(slots[i]);
    }
    return NULL;
}

/* Blocks of every category and some random ones, verified and freed. */
static bool child_work(uint64_t seed)
{
    void *blocks[16];
    uint64_t rng = seed;
    bool ok = true;
    for (int k = 0; k < 16; k++) {
        size_t size = k < 4 ? category_sizes[k] : pick_size(&rng, false);
        blocks[k] = block_new(size, seed + (uint64_t)k);
        ok = ok && blocks[k] != NULL;
    }
    for (int k = 15; k >= 0; k--) {
        ok = ok && (blocks[k] == NULL || block_good(blocks[k]));
        free(blocks[k]);
    }
    return ok;
}

static void *child_thread(void *arg)
{
    return child_work((uint64_t)(intptr_t)arg) ? arg : NULL;
}

static void child_main(int n, void *gift)
{
    if (!block_good(gift))
        _exit(CHILD_GIFT_BAD);
    free(gift);
    /* A block a parent thread (absent here) allocated or freed last. */
    void *foreign = atomic_exchange(&mailbox[n % MAILBOXES], NULL);
    if (foreign != NULL) {
        if (!block_good(foreign))
            _exit(CHILD_MAILBOX_BAD);
        free(foreign);
    }
    if (!child_work(0xC0DEULL + (uint64_t)n * 64))
        _exit(CHILD_BLOCK_BAD);
    pthread_t thread;
    void *result = NULL;
    if (pthread_create(&thread, NULL, child_thread, (void *)(intptr_t)(n + 1)) != 0 ||
        pthread_join(thread, &result) != 0 || result == NULL)
        _exit(CHILD_THREAD_BAD);
    _exit(CHILD_OK);
}

static void test_fork_while_hammering(void)
{
    pthread_t threads[CHURN_THREADS];
    for (int t = 0; t < CHURN_THREADS; t++)
        REQUIRE(pthread_create(&threads[t], NULL, churn_thread, (void *)(intptr_t)t) == 0);
    while (atomic_load(&churn_ops) < 2000)
        sched_yield();

    long ops_before = atomic_load(&churn_ops);
    int bad = 0, first_bad = -1;
    char why[200] = "";
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int n = 0; n < FORKS; n++) {
        watchdog_mark(n);
        void *gift = block_new(category_sizes[n % 4] + (size_t)n, (uint64_t)n);
        REQUIRE(gift != NULL);
        fflush(stdout);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0)
            child_main(n, gift);
        free(gift);
        int status = wait_child(pid);
        if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != CHILD_OK) {
            if (bad++ == 0) {
                first_bad = n;
                describe_status(why, sizeof why, status,
                                "10: parent's block bad, 11: mailbox block bad, "
                                "12: block bad or malloc failed, 13: thread failed");
            }
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    long during = atomic_load(&churn_ops) - ops_before;

    atomic_store(&churn_stop, true);
    for (int t = 0; t < CHURN_THREADS; t++)
        pthread_join(threads[t], NULL);
    for (int i = 0; i < MAILBOXES; i++) {
        void *p = atomic_exchange(&mailbox[i], NULL);
        if (p != NULL && !block_good(p))
            atomic_fetch_add(&churn_failures, 1);
        free(p);
    }

    double seconds = (double)(end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9;
    CHECK_MSG(bad == 0, "%d children forked while %d threads hammer the heap (%.1f s): %d failed "
              "(first: #%d, %s)", FORKS, CHURN_THREADS, seconds, bad, first_bad, why);
    CHECK_MSG(during > 0, "the threads kept working during the forks (%ld operations)", during);
    CHECK_MSG(atomic_load(&churn_failures) == 0,
              "the parent's threads saw every block intact and every call served (%d failures)",
              atomic_load(&churn_failures));
}

/* ---- part 2: threads leave their blocks to the main thread ---- */

enum { LEAVERS = 200, BATCH = 10, PER_LEAVER = 48 };

struct leaver {
    pthread_t thread;
    int index;
    void *kept[PER_LEAVER / 2];
    int failures;
};

static struct leaver leavers[LEAVERS];

static void *leaver_thread(void *arg)
{
    struct leaver *me = (struct leaver *)arg;
    uint64_t rng = 0xABCDULL + (uint64_t)me->index;
    void *blocks[PER_LEAVER];
    for (int k = 0; k < PER_LEAVER; k++) {
        /* Every category, the first four by name. */
        size_t size = k < 4 ? category_sizes[k] : pick_size(&rng, false);
        blocks[k] = block_new(size, (uint64_t)me->index * PER_LEAVER + (uint64_t)k);
        if (blocks[k] == NULL)
            me->failures++;
    }
    for (int k = 0; k < PER_LEAVER; k++) {
        if (k % 2 == 0) {
            me->kept[k / 2] = blocks[k]; /* left to the main thread */
        } else if (blocks[k] != NULL) {
            if (!block_good(blocks[k]))
                me->failures++;
            free(blocks[k]);
        }
    }
    return NULL;
}

static void test_threads_leave_blocks(void)
{
    int failures = 0, corrupt = 0;
    threads_warm_up(BATCH);
    struct counters before = counters_now();
    for (int first = 0; first < LEAVERS; first += BATCH) {
        watchdog_mark(FORKS + first);
        for (int i = first; i < first + BATCH; i++) {
            leavers[i].index = i;
            REQUIRE(pthread_create(&leavers[i].thread, NULL, leaver_thread, &leavers[i]) == 0);
        }
        for (int i = first; i < first + BATCH; i++) {
            pthread_join(leavers[i].thread, NULL);
            failures += leavers[i].failures;
        }
        /* Freed after the whole batch exited: the owners are gone. */
        for (int i = first; i < first + BATCH; i++)
            for (int k = 0; k < PER_LEAVER / 2; k++) {
                void *p = leavers[i].kept[k];
                if (p != NULL && !block_good(p))
                    corrupt++;
                free(p);
            }
    }
    struct counters after = counters_now();
    CHECK_MSG(failures == 0, "%d threads allocated blocks of every category, no failure",
              LEAVERS);
    CHECK_MSG(corrupt == 0, "the %d blocks they left to the main thread were intact (%d corrupt)",
              LEAVERS * PER_LEAVER / 2, corrupt);
    if (!counters_balanced(before, after))
        counters_print("leavers", before, after);
    CHECK_MSG(counters_balanced(before, after), "outstanding count back to where it was");
}

/* ---- part 3: threads exit with full caches ---- */

enum { CACHE_THREADS = 200, GIVEN = 100 };

struct cacher {
    pthread_t thread;
    int index;
    void *given[GIVEN]; /* allocated by the main thread, freed by this one */
    void *left[4];      /* allocated by this one, freed by the main thread */
    int failures;
};

static struct cacher cachers[CACHE_THREADS];

static void *cacher_thread(void *arg)
{
    struct cacher *me = (struct cacher *)arg;
    /* Its own heap first: a thread that never allocated has no cache. */
    void *own[8];
    for (int k = 0; k < 8; k++)
        own[k] = block_new(24 + (size_t)k * 100, (uint64_t)k);
    /* Other threads' blocks: the first 64 of a class fill its foreign
     * cache, the rest go to an outbox that is not full when it exits. */
    for (int k = 0; k < GIVEN; k++) {
        if (me->given[k] != NULL && !block_good(me->given[k]))
            me->failures++;
        free(me->given[k]);
    }
    for (int k = 0; k < 8; k++) {
        if (own[k] == NULL || !block_good(own[k]))
            me->failures++;
        if (k % 2 == 0)
            free(own[k]);
        else
            me->left[k / 2] = own[k];
    }
    return NULL;
}

static void test_exit_with_full_caches(void)
{
    int failures = 0, corrupt = 0, bad_reuse = 0;
    threads_warm_up(BATCH);
    struct counters before = counters_now();
    for (int first = 0; first < CACHE_THREADS; first += BATCH) {
        watchdog_mark(FORKS + LEAVERS + first);
        for (int i = first; i < first + BATCH; i++) {
            struct cacher *c = &cachers[i];
            c->index = i;
            /* Two small classes (one kept in foreign caches, one medium
             * class that always goes to the outbox). */
            for (int k = 0; k < GIVEN; k++)
                c->given[k] = block_new(k < 80 ? 48 : 2000, (uint64_t)(i * GIVEN + k));
            REQUIRE(pthread_create(&c->thread, NULL, cacher_thread, c) == 0);
        }
        for (int i = first; i < first + BATCH; i++) {
            pthread_join(cachers[i].thread, NULL);
            failures += cachers[i].failures;
            for (int k = 0; k < 4; k++) {
                if (cachers[i].left[k] == NULL || !block_good(cachers[i].left[k]))
                    corrupt++;
                free(cachers[i].left[k]);
            }
        }
        /* The blocks come back through the exited threads' caches: the
         * main thread allocates the classes again, and each block is its
         * own. */
        void *again[2 * BATCH * GIVEN];
        int n = 0;
        for (int k = 0; k < 2 * BATCH * GIVEN; k++) {
            again[n] = block_new(k % 5 == 0 ? 2000 : 48, 777 + (uint64_t)k);
            if (again[n] == NULL)
                bad_reuse++;
            else
                n++;
        }
        for (int k = 0; k < n; k++) {
            if (!block_good(again[k]))
                bad_reuse++;
            free(again[k]);
        }
    }
    struct counters after = counters_now();
    CHECK_MSG(failures == 0 && corrupt == 0,
              "%d threads exited with full foreign caches and outboxes (%d failures, %d of the "
              "blocks they left corrupt)",
              CACHE_THREADS, failures, corrupt);
    CHECK_MSG(bad_reuse == 0, "their classes allocate again, every block intact (%d bad)",
              bad_reuse);
    if (!counters_balanced(before, after))
        counters_print("full caches", before, after);
    CHECK_MSG(counters_balanced(before, after), "outstanding count back to where it was");
}

int main(void)
{
    checks_begin("fork_stress");
    counters_now(); /* fails now, not in a child, if CMA is not loaded */
    /* Marks: each fork, then each batch. A hung child is killed after 10 s,
     * so 30 s without a mark is a hang of this process. */
    watchdog_start("step", 30);
    test_fork_while_hammering();
    test_threads_leave_blocks();
    test_exit_with_full_caches();
    return checks_done("fork_stress");
}
