/*
 * false_sharing: cache-scratch style passive false sharing.
 *
 * The main thread allocates OBJS small objects (8 bytes) per worker, back
 * to back, and deals them out round-robin (object j goes to worker
 * j % THREADS), so neighbouring objects -- which most allocators put in
 * the same cache line -- belong to different workers.  Each worker frees
 * the objects it was given, then many times allocates OBJS 8-byte objects,
 * writes every byte of them over and over, and frees them.  An allocator
 * whose per-thread cache takes in any freed block hands the dealt objects
 * back to the worker, which then writes into cache lines that other
 * workers write too, and those lines bounce between cores; one that keeps
 * each thread's objects apart runs at full speed.
 *
 * Also printed, as a diagnostic that does not depend on timing:
 * "shared_objs: N of M", how many of the objects the workers held in their
 * first iteration (all at the same time: a barrier waits for every worker
 * to have them) shared a 64-byte cache line with another worker's.
 *
 * The writes are divided between the workers, so the work is the same for
 * every thread count.  With 1 thread nothing can be shared (a baseline).
 *
 *     false_sharing [THREADS [SCALE]]   default scale: 512M one-byte
 *                                       writes in all
 */
#include "bench.h"

#define OBJ 8  /* bytes per object */
#define OBJS 4 /* objects per worker */
#define ITERS 1000

/* Where each worker's objects were in its first iteration. */
static uintptr_t *first_addr;
/* The workers hold their first objects at the same time, then all start
 * writing together. */
static pthread_barrier_t first;

typedef struct {
    int id;
    char *given[OBJS];
    uint64_t iters, reps;
    uint64_t sum;
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = (worker_t *)arg;
    uint64_t sum = 0;
    for (int m = 0; m < OBJS; m++) free(w->given[m]);
    for (uint64_t it = 0; it < w->iters; it++) {
        volatile unsigned char *o[OBJS];
        for (int m = 0; m < OBJS; m++) {
            o[m] = (volatile unsigned char *)xmalloc(OBJ);
            if (it == 0) first_addr[w->id * OBJS + m] = (uintptr_t)o[m];
            for (int b = 0; b < OBJ; b++) o[m][b] = (unsigned char)(w->id + m + b);
        }
        if (it == 0) pthread_barrier_wait(&first);
        for (uint64_t r = 0; r < w->reps; r++) {
            for (int m = 0; m < OBJS; m++)
                for (int b = 0; b < OBJ; b++) o[m][b] = (unsigned char)(o[m][b] + 1);
        }
        for (int m = 0; m < OBJS; m++) {
            uint64_t v = 0, want = 0;
            for (int b = 0; b < OBJ; b++) {
                v = (v << 8) | o[m][b];
                want = (want << 8) | (unsigned char)(w->id + m + b + (int)(w->reps & 0xff));
            }
            if (v != want) atomic_fetch_add(&bench_errors, 1);
            sum += mix64(v ^ (it * OBJS + (uint64_t)m));
            free((void *)o[m]);
        }
    }
    w->sum = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse("false_sharing", argc, argv, 1);
    int nt = a.threads;
    uint64_t iters = ITERS;
    uint64_t reps = scaled(a.scale, 16000) / (uint64_t)nt;
    worker_t *w = (worker_t *)xcalloc((size_t)nt, sizeof(worker_t));
    pthread_t *t = (pthread_t *)xcalloc((size_t)nt, sizeof(pthread_t));
    char **objs = (char **)xcalloc((size_t)nt * OBJS, sizeof(char *));

    first_addr = (uintptr_t *)xcalloc((size_t)nt * OBJS, sizeof(uintptr_t));
    pthread_barrier_init(&first, NULL, (unsigned)nt);
    /* The objects dealt out, allocated back to back. */
    for (int j = 0; j < nt * OBJS; j++) objs[j] = (char *)xmalloc(OBJ);

    double t0 = now_s();
    for (int i = 0; i < nt; i++) {
        w[i].id = i;
        for (int m = 0; m < OBJS; m++) w[i].given[m] = objs[m * nt + i];
        w[i].iters = iters;
        w[i].reps = reps;
        spawn(&t[i], worker, &w[i]);
    }
    uint64_t sum = 0;
    for (int i = 0; i < nt; i++) {
        pthread_join(t[i], NULL);
        sum += w[i].sum;
    }
    double el = now_s() - t0;

    /* Diagnostic (not in the checksum): how many of the workers' objects
     * shared a 64-byte line with another worker's object. */
    int shared = 0;
    for (int i = 0; i < nt * OBJS; i++) {
        for (int j = 0; j < nt * OBJS; j++) {
            if (i / OBJS != j / OBJS && first_addr[i] / 64 == first_addr[j] / 64) {
                shared++;
                break;
            }
        }
    }
    printf("shared_objs: %d of %d\n", shared, nt * OBJS);
    free(first_addr);
    pthread_barrier_destroy(&first);
    free(objs);
    free(w);
    free(t);
    return bench_finish(sum, el);
}
