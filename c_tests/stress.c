/* stress.c: the ancestor's threaded reallocation stress test (the one that
 * hung), STRESS_SPEC.md, repeated for many rounds in one process.
 *
 * Usage: stress [ROUNDS]   (default 100)
 * Each round: thread safety on, no limit, read the counters, run 6 workers
 * (stress_workload.h), join them, read the counters again. A round passes
 * when every worker reports success, the outstanding count is unchanged and
 * neither counter went down. A hang (the ancestor's bug) is reported by a
 * watchdog, naming the round, with the runner's timeout as a backstop.
 */
#include "stress_workload.h"

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 100;
    struct stress_worker workers[STRESS_WORKERS];

    checks_begin("stress");
    CHECK_MSG(rounds > 0, "round count %d is positive", rounds);

    /* A round takes milliseconds: 20 s without a new round is a hang. */
    watchdog_start("round", 20);

    /* Round 0 settles glibc's thread-stack cache (see threads_warm_up), so
     * its counters are not compared; its workers must still succeed. */
    stress_prepare();
    stress_start(workers);
    CHECK_MSG(stress_join(workers) == 0, "warm-up round: all %d workers succeeded",
              STRESS_WORKERS);

    for (int round = 1; round <= rounds; round++) {
        watchdog_mark(round);
        stress_prepare();
        struct counters before = stress_counters();
        stress_start(workers);
        int failed = stress_join(workers);
        struct counters after = stress_counters();
        CHECK_MSG(failed == 0 && counters_balanced(before, after),
                  "round %d: %d/%d workers succeeded; outstanding %zu -> %zu "
                  "(allocs +%zu, frees +%zu)",
                  round, STRESS_WORKERS - failed, STRESS_WORKERS, before.allocs - before.frees,
                  after.allocs - after.frees, after.allocs - before.allocs,
                  after.frees - before.frees);
    }
    return checks_done("stress");
}
