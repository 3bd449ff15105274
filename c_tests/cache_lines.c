/* cache_lines.c: blocks a thread allocates never share a cache line with
 * blocks another thread allocates (passive false sharing, cache-scratch
 * style).
 *
 * The main thread allocates 8-byte objects back to back and deals them out
 * round-robin to four workers, so neighbouring objects belong to different
 * workers. Each worker frees the objects it was dealt (blocks of the main
 * thread's heap), then allocates as many 8-byte objects of its own. While
 * every worker holds its new objects, no 64-byte line may hold objects of
 * two workers: a thread that reused the dealt blocks would write into lines
 * other threads write too. Then the same round again with workers that
 * allocated before (their heaps exist), and the dealt objects reach them
 * through a shared array.
 *
 * Plain malloc only: runs linked with -lcma and with LD_PRELOAD=libcma.so.
 */
#include "common.h"

enum { WORKERS = 4, OBJS = 8, OBJ = 8, LINE = 64 };

static void *dealt[WORKERS][OBJS];
static void *mine[WORKERS][OBJS];
static pthread_barrier_t all_hold;
static bool warm_up_first;

static void *worker(void *arg)
{
    int w = (int)(intptr_t)arg;
    if (warm_up_first)
        free(opaque(malloc(OBJ)));
    for (int i = 0; i < OBJS; i++)
        free(dealt[w][i]);
    for (int i = 0; i < OBJS; i++) {
        mine[w][i] = malloc(OBJ);
        REQUIRE(mine[w][i] != NULL);
        memset(mine[w][i], w, OBJ);
    }
    /* Hold them until every worker has its own. */
    pthread_barrier_wait(&all_hold);
    pthread_barrier_wait(&all_hold);
    for (int i = 0; i < OBJS; i++)
        free(mine[w][i]);
    return NULL;
}

/* Pairs (object, object of another worker) that share a line. */
static int shared_lines(void)
{
    int shared = 0;
    for (int w = 0; w < WORKERS; w++)
        for (int i = 0; i < OBJS; i++)
            for (int v = 0; v < WORKERS; v++)
                for (int j = 0; j < OBJS; j++)
                    if (v != w && (uintptr_t)mine[w][i] / LINE == (uintptr_t)mine[v][j] / LINE)
                        shared++;
    return shared;
}

static int round_of(bool warm)
{
    pthread_t threads[WORKERS];
    warm_up_first = warm;
    for (int i = 0; i < OBJS; i++)
        for (int w = 0; w < WORKERS; w++) {
            dealt[w][i] = malloc(OBJ);
            REQUIRE(dealt[w][i] != NULL);
        }
    REQUIRE(pthread_barrier_init(&all_hold, NULL, WORKERS + 1) == 0);
    for (int w = 0; w < WORKERS; w++)
        REQUIRE(pthread_create(&threads[w], NULL, worker, (void *)(intptr_t)w) == 0);
    pthread_barrier_wait(&all_hold);
    int shared = shared_lines();
    pthread_barrier_wait(&all_hold);
    for (int w = 0; w < WORKERS; w++)
        REQUIRE(pthread_join(threads[w], NULL) == 0);
    pthread_barrier_destroy(&all_hold);
    return shared;
}

int main(void)
{
    checks_begin("cache_lines");
    int cold = round_of(false);
    CHECK_MSG(cold == 0, "workers that free dealt blocks first: %d object pairs share a line", cold);
    int warm = round_of(true);
    CHECK_MSG(warm == 0, "workers that allocated before: %d object pairs share a line", warm);
    return checks_done("cache_lines");
}
