/*
 * trim_latency: does giving memory back stall the other threads?
 *
 * A worker thread writes 8000 blocks of 12 KiB (at the default scale),
 * frees seven of every eight and exits: its pages keep one live block in
 * eight, so the memory inside the freed blocks can only go back block by
 * block (one madvise each).  Then the main thread calls malloc_trim(0)
 * while a probe thread allocates and frees 16 blocks of 1..2 MiB in a
 * loop (blocks that size come from the allocator's shared structures,
 * under its lock where it has one) and records the slowest round.
 *
 * Output (besides the common lines):
 *     trim_ms            how long malloc_trim(0) took
 *     probe_worst_ms     the probe's slowest round while it ran
 *     probe_rounds       rounds the probe completed meanwhile
 *     rss_kb.before_trim / rss_kb.after_trim
 *     trim_from          which object defined malloc_trim
 * elapsed_s is trim_ms in seconds.
 *
 *     trim_latency [THREADS [SCALE]]   THREADS is ignored (1 probe)
 *
 * Not in the suite (scripts/bench.sh): scripts/bench-trim.sh runs it
 * against the peers; see docs/MEMORY.md.
 */
#include "bench.h"

#include <unistd.h>

#define BLOCK (12 * 1024)

static size_t count;
static void **kept;

static void *worker(void *arg)
{
    (void)arg;
    void **v = (void **)xmalloc(count * sizeof *v);
    for (size_t i = 0; i < count; i++) {
        v[i] = xmalloc(BLOCK);
        block_fill(v[i], BLOCK, (uint32_t)i);
    }
    for (size_t i = 0; i < count; i++) {
        if (i % 8)
            free(v[i]);
        else
            kept[i / 8] = v[i];
    }
    free(v);
    return NULL;
}

static atomic_int stop_probe;
static atomic_int probe_armed;
static double probe_worst;
static uint64_t probe_rounds;

static void *probe(void *arg)
{
    (void)arg;
    void *q[16];
    while (!atomic_load(&stop_probe)) {
        double t = now_s();
        for (int k = 0; k < 16; k++) {
            q[k] = xmalloc((1u << 20) + (size_t)k * 65536);
            ((volatile char *)q[k])[0] = 1;
        }
        for (int k = 0; k < 16; k++) free(q[k]);
        t = now_s() - t;
        if (atomic_load(&probe_armed)) {
            if (t > probe_worst) probe_worst = t;
            probe_rounds++;
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse("trim_latency", argc, argv, 1);
    count = (size_t)scaled(a.scale, 8000);
    kept = (void **)xcalloc(count / 8 + 1, sizeof *kept);
    int (*trim)(size_t) = (int (*)(size_t))dlsym(RTLD_DEFAULT, "malloc_trim");
    if (!trim) {
        fprintf(stderr, "no malloc_trim in this process\n");
        return 2;
    }
    Dl_info info;
    const char *from = dladdr((void *)trim, &info) && info.dli_fname ? info.dli_fname : "?";
    const char *slash = strrchr(from, '/');

    /* The probe first, so the worker's heap (or arena) stays its own. */
    pthread_t p, w;
    spawn(&p, probe, NULL);
    usleep(20000);
    spawn(&w, worker, NULL);
    pthread_join(w, NULL);
    usleep(20000);
    print_rss("before_trim");

    atomic_store(&probe_armed, 1);
    double t = now_s();
    trim(0);
    t = now_s() - t;
    usleep(5000);
    atomic_store(&probe_armed, 0);
    atomic_store(&stop_probe, 1);
    pthread_join(p, NULL);
    print_rss("after_trim");
    printf("trim_from: %s\n", slash ? slash + 1 : from);
    printf("trim_ms: %.2f\nprobe_worst_ms: %.2f\nprobe_rounds: %llu\n", t * 1e3,
           probe_worst * 1e3, (unsigned long long)probe_rounds);

    uint64_t sum = 0;
    for (size_t i = 0; i < count / 8 + (count % 8 != 0); i++) {
        if (!kept[i]) continue;
        sum += block_check(kept[i], BLOCK, (uint32_t)(i * 8));
        free(kept[i]);
    }
    free(kept);
    return bench_finish(sum, t);
}
