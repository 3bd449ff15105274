/* rule_zero_checked.c: rule zero (the ancestor hung; CMA must not), with the
 * checked API. Six threads run the stress workload (stress_workload.h) while
 * a seventh, the prober, keeps handing cma_checked_free a block it already
 * freed (CMA_ERROR_DOUBLE_FREE) and pointers CMA never gave out: a stack
 * address, a static, an interior and a misaligned pointer
 * (CMA_ERROR_INVALID_POINTER). Every error must come back as a return value
 * with no lock left held: the six workers all finish and succeed, and the
 * counters are exact afterwards (the rejected frees counted nothing).
 *
 * Usage: rule_zero_checked [ROUNDS]   (default 100)
 * The -DCMA_PLAIN build has no checked API: it runs the workers only.
 */
#include <sched.h>
#include <stdatomic.h>

#include "stress_workload.h"

#ifndef CMA_PLAIN
/* No worker asks for this size (they ask for at most 456 bytes), and a live
 * block of the same size is pinned for the whole run: so no other thread can
 * be handed the freed probe block between its free and the probe. */
enum { PROBE_SIZE = 2000 };

struct prober {
    pthread_t thread;
    atomic_bool stop;
    atomic_long probes;
    int wrong;
    char first_wrong[200];
};

static unsigned char static_block[64] __attribute__((aligned(64)));

static void prober_failed(struct prober *pr, const char *what)
{
    if (pr->wrong++ == 0)
        snprintf(pr->first_wrong, sizeof pr->first_wrong, "%s", what);
}

static void expect(struct prober *pr, const char *what, enum CmaError got, enum CmaError want)
{
    enum CmaError last = cma_last_error();
    if (got == want && last == want)
        return;
    if (pr->wrong++ == 0)
        snprintf(pr->first_wrong, sizeof pr->first_wrong,
                 "cma_checked_free(%s) returned %d, last error %d; expected %d", what, (int)got,
                 (int)last, (int)want);
}

static void *prober_thread(void *arg)
{
    struct prober *pr = (struct prober *)arg;
    unsigned char stack_block[64] __attribute__((aligned(64)));
    unsigned char *pin = (unsigned char *)cma_malloc(PROBE_SIZE);

    if (pin == NULL) {
        prober_failed(pr, "cma_malloc of the pinned block failed");
        return NULL;
    }
    while (!atomic_load(&pr->stop)) {
        void *freed = cma_malloc(PROBE_SIZE);
        if (freed == NULL) {
            prober_failed(pr, "cma_malloc of the probe block failed");
            break;
        }
        cma_free(freed);
        expect(pr, "an already freed block", cma_checked_free(freed), CMA_ERROR_DOUBLE_FREE);
        expect(pr, "a stack address", cma_checked_free(opaque(stack_block)),
               CMA_ERROR_INVALID_POINTER);
        expect(pr, "a static", cma_checked_free(static_block), CMA_ERROR_INVALID_POINTER);
        expect(pr, "a pointer into a live block", cma_checked_free(pin + 16),
               CMA_ERROR_INVALID_POINTER);
        expect(pr, "a misaligned pointer", cma_checked_free(pin + 1),
               CMA_ERROR_INVALID_POINTER);
        atomic_fetch_add(&pr->probes, 1);
    }
    cma_free(pin);
    return NULL;
}
#endif

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 100;
    struct stress_worker workers[STRESS_WORKERS];
#ifndef CMA_PLAIN
    long probes_during_work = 0;
#endif

    checks_begin("rule_zero_checked");
    CHECK_MSG(rounds > 0, "round count %d is positive", rounds);
#ifdef CMA_PLAIN
    printf("skip (CMA API only): the cma_checked_free prober\n");
#endif

    watchdog_start("round", 20);
    /* Settles glibc's thread-stack cache (see threads_warm_up). */
    threads_warm_up(STRESS_WORKERS + 1);

    for (int round = 1; round <= rounds; round++) {
        watchdog_mark(round);
        stress_prepare();
        struct counters before = stress_counters();
#ifndef CMA_PLAIN
        struct prober pr = {.wrong = 0};
        REQUIRE(pthread_create(&pr.thread, NULL, prober_thread, &pr) == 0);
        while (atomic_load(&pr.probes) == 0 && pr.wrong == 0)
            sched_yield();
        long probes_at_start = atomic_load(&pr.probes);
#endif
        stress_start(workers);
#ifndef CMA_PLAIN
        /* On a loaded machine the workers may finish within one time slice
         * of the prober: wait (at most a second) until it has probed since
         * they started, so every round overlaps them. */
        for (int i = 0; i < 1000 && atomic_load(&pr.probes) == probes_at_start; i++)
            usleep(1000);
#endif
        int failed = stress_join(workers);
#ifndef CMA_PLAIN
        probes_during_work += atomic_load(&pr.probes) - probes_at_start;
        atomic_store(&pr.stop, true);
        pthread_join(pr.thread, NULL);
        CHECK_MSG(pr.wrong == 0, "round %d: %ld probes, each got its error back (%d wrong%s%s)",
                  round, (long)pr.probes, pr.wrong, pr.wrong ? ": " : "", pr.first_wrong);
#endif
        struct counters after = stress_counters();
        if (!counters_balanced(before, after))
            counters_print("counters", before, after);
        CHECK_MSG(failed == 0 && counters_balanced(before, after),
                  "round %d: %d/%d workers finished and succeeded, outstanding unchanged",
                  round, STRESS_WORKERS - failed, STRESS_WORKERS);
    }
#ifndef CMA_PLAIN
    CHECK_MSG(probes_during_work >= rounds,
              "the prober ran while the workers did (%ld probes during %d runs)",
              probes_during_work, rounds);
#endif
    return checks_done("rule_zero_checked");
}
