/* runs_stress.c: medium blocks cut from the freed blocks of small ones.
 *
 * Four threads, 200 rounds each. A round builds 12000 nodes of 32..128
 * bytes, frees nine in ten at random (so the thread's pages of small blocks
 * are sparse), then allocates 1500 blocks of 129..1000 bytes: CMA cuts many
 * of them out of runs of the freed nodes (src/heap/runs.rs). Every third
 * medium block goes through a shared ring to another thread, which checks
 * it and frees it (a run freed by a thread that does not own its page) or
 * reallocates it first; every 50th is reallocated by its owner. Every block
 * keeps its pattern until freed; the outstanding count comes back to where
 * it was; and some medium blocks must have been runs (a usable size that no
 * size class has), unless CMA_SECURE is set (no runs in secure mode).
 * Meanwhile the main thread cuts runs of its own and forks: the child
 * frees and cuts runs from the pool the fork left it (fork_with_runs).
 * It runs with CMA_PURGE_DELAY_MS=20 (it sets it and starts itself again):
 * with the purge thread busy, a free found a freed run's mark, still in
 * its first block while the blocks were on their way to their owner, and
 * took a later block for part of that run (invalid pointer) in 2 of 8
 * runs before that was fixed.
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

enum { THREADS = 4, ROUNDS = 200, NODES = 12000, MEDIUMS = 1500, RING = 2048 };

struct block {
    unsigned char *p;
    size_t size;
    unsigned seed;
};

static struct {
    pthread_mutex_t lock;
    struct block slots[RING];
    int count;
} ring = {PTHREAD_MUTEX_INITIALIZER, {{0}}, 0};

static atomic_long runs_seen;
static atomic_long bad_blocks;

static bool ring_push(struct block b)
{
    pthread_mutex_lock(&ring.lock);
    bool ok = ring.count < RING;
    if (ok)
        ring.slots[ring.count++] = b;
    pthread_mutex_unlock(&ring.lock);
    return ok;
}

static bool ring_pop(struct block *b)
{
    pthread_mutex_lock(&ring.lock);
    bool ok = ring.count > 0;
    if (ok)
        *b = ring.slots[--ring.count];
    pthread_mutex_unlock(&ring.lock);
    return ok;
}

static struct block make(size_t size, unsigned seed)
{
    struct block b = {malloc(size), size, seed};
    REQUIRE(b.p != NULL);
    pattern_fill(b.p, size, seed);
    return b;
}

static void check_and_free(struct block b)
{
    if (!pattern_ok(b.p, b.size, b.seed))
        atomic_fetch_add(&bad_blocks, 1);
    free(b.p);
}

/* Grows or shrinks a block; its kept prefix must survive. */
static struct block resize(struct block b, size_t size)
{
    size_t kept = b.size < size ? b.size : size;
    unsigned char *p = realloc(b.p, size);
    REQUIRE(p != NULL);
    if (!pattern_ok(p, kept, b.seed))
        atomic_fetch_add(&bad_blocks, 1);
    struct block r = {p, size, b.seed ^ 0x5a5a5a5au};
    pattern_fill(r.p, size, r.seed);
    return r;
}

/* True when `usable` is the usable size of a size class of 129..1024
 * bytes (16-byte steps to 128, then eight classes per doubling). */
static bool is_class_size(size_t usable)
{
    for (size_t base = 128; base < 1024; base *= 2)
        for (size_t sub = 1; sub <= 8; sub++)
            if (usable == base + sub * (base / 8))
                return true;
    return false;
}

/* The main thread makes its pages sparse and cuts runs, then forks while
 * the workers run: the child checks and frees half the runs, makes sparse
 * pages again and cuts new ones, checks everything and exits 0 (1: a block
 * lost its pattern, 2: no run after the fork). */
static int fork_with_runs(void)
{
    enum { N = 8000, M = 400 };
    static struct block nodes[N], mediums[M];
    for (int i = 0; i < N; i++)
        nodes[i] = make(64, 900000u + (unsigned)i);
    for (int i = 0; i < N; i++)
        if (i % 20 != 0) {
            check_and_free(nodes[i]);
            nodes[i].p = NULL;
        }
    for (int i = 0; i < M; i++)
        mediums[i] = make(600, 950000u + (unsigned)i);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        for (int i = 0; i < M; i += 2) {
            if (!pattern_ok(mediums[i].p, mediums[i].size, mediums[i].seed))
                _exit(1);
            free(mediums[i].p);
        }
        for (int i = 0; i < N; i++)
            if (i % 20 != 0)
                nodes[i] = make(64, 970000u + (unsigned)i);
        for (int i = 0; i < N; i++)
            if (i % 20 != 0)
                free(nodes[i].p);
        int runs = 0;
        for (int i = 0; i < M; i += 2) {
            mediums[i] = make(600, 960000u + (unsigned)i);
            runs += !is_class_size(malloc_usable_size(mediums[i].p));
        }
        for (int i = 0; i < M; i++)
            if (!pattern_ok(mediums[i].p, mediums[i].size, mediums[i].seed))
                _exit(1);
        for (int i = 0; i < N; i += 20)
            if (!pattern_ok(nodes[i].p, nodes[i].size, nodes[i].seed))
                _exit(1);
        _exit(runs > 0 || getenv("CMA_SECURE") != NULL ? 0 : 2);
    }
    int status = wait_child(pid);
    for (int i = 0; i < M; i++)
        check_and_free(mediums[i]);
    for (int i = 0; i < N; i += 20)
        check_and_free(nodes[i]);
    return status;
}

static void *worker(void *arg)
{
    unsigned id = (unsigned)(intptr_t)arg;
    uint64_t rng = 0x9e3779b97f4a7c15u * (id + 1);
    static _Thread_local struct block nodes[NODES];
    static _Thread_local struct block mediums[MEDIUMS];
    long runs = 0;
    for (int round = 0; round < ROUNDS; round++) {
        unsigned seed = (id << 24) | ((unsigned)round << 16);
        for (int i = 0; i < NODES; i++)
            nodes[i] = make(32 + rng_next(&rng) % 97, seed + (unsigned)i);
        for (int i = 0; i < NODES; i++)
            if (rng_next(&rng) % 10 != 0) {
                check_and_free(nodes[i]);
                nodes[i].p = NULL;
            }
        for (int i = 0; i < MEDIUMS; i++) {
            struct block b = make(129 + rng_next(&rng) % 872, seed + 20000u + (unsigned)i);
            if (!is_class_size(malloc_usable_size(b.p)))
                runs++;
            if (i % 50 == 49)
                b = resize(b, rng_next(&rng) % 2 ? 2000 : 150);
            mediums[i] = b;
            if (i % 3 == 0 && ring_push(b))
                mediums[i].p = NULL;
            if (i % 4 == 0) {
                struct block other;
                if (ring_pop(&other)) {
                    if (rng_next(&rng) % 4 == 0)
                        other = resize(other, 64 + rng_next(&rng) % 1200);
                    check_and_free(other);
                }
            }
        }
        for (int i = 0; i < NODES; i++)
            if (nodes[i].p != NULL)
                check_and_free(nodes[i]);
        for (int i = 0; i < MEDIUMS; i++)
            if (mediums[i].p != NULL)
                check_and_free(mediums[i]);
        watchdog_mark(round);
    }
    atomic_fetch_add(&runs_seen, runs);
    return NULL;
}

int main(int argc, char **argv)
{
    (void)argc;
    run_with_setting(argv, "CMA_PURGE_DELAY_MS", "20");
    setvbuf(stdout, NULL, _IONBF, 0);
    watchdog_start("round", 30);
    threads_warm_up(THREADS);
    struct counters before = counters_now();

    pthread_t threads[THREADS];
    for (int t = 0; t < THREADS; t++)
        REQUIRE(pthread_create(&threads[t], NULL, worker, (void *)(intptr_t)t) == 0);
    int child = fork_with_runs();
    for (int t = 0; t < THREADS; t++)
        REQUIRE(pthread_join(threads[t], NULL) == 0);
    struct block left;
    while (ring_pop(&left))
        check_and_free(left);

    struct counters after = counters_now();

    char why[96];
    describe_status(why, sizeof why, child, "1: a block lost its pattern, 2: no run");
    CHECK_MSG(child >= 0 && WIFEXITED(child) && WEXITSTATUS(child) == 0,
              "a child forked amid the rounds frees, cuts and checks runs (%s)", why);
    CHECK_MSG(atomic_load(&bad_blocks) == 0, "every block kept its pattern (%ld did not)",
              atomic_load(&bad_blocks));
    if (getenv("CMA_SECURE") == NULL)
        CHECK_MSG(atomic_load(&runs_seen) > 0, "medium blocks that were runs: %ld of %d",
                  atomic_load(&runs_seen), THREADS * ROUNDS * MEDIUMS);
    if (!counters_balanced(before, after))
        counters_print("rounds", before, after);
    CHECK_MSG(counters_balanced(before, after), "outstanding count back to where it was");
    printf("runs_stress: %u checks passed\n", checks_passed);
    return 0;
}
