/* stress_workload.h: the ancestor's threaded reallocation stress workload
 * (/work/shared/STRESS_SPEC.md), shared by stress.c and rule_zero_checked.c.
 *
 * Each worker runs the same 384 iterations over its own 32 slots; iteration i
 * works on slot i % 32 with size ((i % 17) + 1) * 24 and pattern byte
 * (slot % 251) + 1: malloc and fill an empty slot, else realloc it to
 * size + 48 when i % 3 == 0, else free it. Every call must succeed and report
 * CMA_OK. Beyond the ancestor's first-byte checks, the whole block is verified
 * before each realloc and free and after each realloc, and at the end.
 */
#ifndef CMA_TESTS_STRESS_WORKLOAD_H
#define CMA_TESTS_STRESS_WORKLOAD_H

#include <stdarg.h>

#include "api.h"
#include "common.h"

#define STRESS_WORKERS 6
#define STRESS_SLOTS 32
#define STRESS_ITERATIONS 384

struct stress_slot {
    unsigned char *ptr;
    size_t size;
    unsigned char pattern;
};

struct stress_worker {
    pthread_t thread;
    bool ok;
    char failure[200];
};

/* Records the first failure, frees what the worker still holds (the slot of
 * a failed realloc still holds its old, valid block) and returns false. */
static bool stress_fail(struct stress_worker *w, struct stress_slot *slots,
                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->failure, sizeof w->failure, fmt, ap);
    va_end(ap);
    for (int s = 0; s < STRESS_SLOTS; s++)
        cma_free(slots[s].ptr);
    return false;
}

static bool stress_run(struct stress_worker *w)
{
    struct stress_slot slots[STRESS_SLOTS] = {{NULL, 0, 0}};

    for (int i = 0; i < STRESS_ITERATIONS; i++) {
        int slot = i % STRESS_SLOTS;
        size_t size = (size_t)((i % 17) + 1) * 24;
        unsigned char pattern = (unsigned char)((slot % 251) + 1);
        struct stress_slot *s = &slots[slot];

        if (s->ptr == NULL) {
            unsigned char *p = (unsigned char *)cma_malloc(size);
            if (p == NULL || !LAST_ERROR_IS(CMA_OK)) {
                s->ptr = p;
                return stress_fail(w, slots, "iteration %d: malloc(%zu) = %p failed", i, size,
                                   (void *)p);
            }
            memset(p, pattern, size);
            *s = (struct stress_slot){p, size, pattern};
        } else if (i % 3 == 0) {
            size_t new_size = size + 48;
            if (!bytes_are(s->ptr, s->size, s->pattern))
                return stress_fail(w, slots, "iteration %d: slot %d corrupt before realloc", i,
                                   slot);
            unsigned char *p = (unsigned char *)cma_realloc(s->ptr, new_size);
            if (p == NULL)
                return stress_fail(w, slots, "iteration %d: realloc(%zu -> %zu) returned NULL",
                                   i, s->size, new_size);
            s->ptr = p;
            if (!LAST_ERROR_IS(CMA_OK))
                return stress_fail(w, slots, "iteration %d: realloc reported an error", i);
            size_t kept = new_size < s->size ? new_size : s->size;
            if (!bytes_are(p, kept, s->pattern))
                return stress_fail(w, slots, "iteration %d: realloc(%zu -> %zu) lost contents",
                                   i, s->size, new_size);
            if (new_size > s->size)
                memset(p + s->size, s->pattern, new_size - s->size);
            s->size = new_size;
        } else {
            if (!bytes_are(s->ptr, s->size, s->pattern))
                return stress_fail(w, slots, "iteration %d: slot %d corrupt before free", i, slot);
            unsigned char *p = s->ptr;
            s->ptr = NULL;
            cma_free(p);
            if (!LAST_ERROR_IS(CMA_OK))
                return stress_fail(w, slots, "iteration %d: free reported an error", i);
        }
    }

    for (int slot = 0; slot < STRESS_SLOTS; slot++) {
        struct stress_slot *s = &slots[slot];
        if (s->ptr != NULL && !bytes_are(s->ptr, s->size, s->pattern))
            return stress_fail(w, slots, "final check: slot %d (%zu bytes) corrupt", slot,
                               s->size);
    }
    for (int slot = 0; slot < STRESS_SLOTS; slot++) {
        unsigned char *p = slots[slot].ptr;
        slots[slot].ptr = NULL;
        cma_free(p);
        if (p != NULL && !LAST_ERROR_IS(CMA_OK))
            return stress_fail(w, slots, "final free of slot %d reported an error", slot);
    }
    return true;
}

static void *stress_thread(void *arg)
{
    struct stress_worker *w = (struct stress_worker *)arg;
    w->ok = stress_run(w);
    return NULL;
}

static void stress_start(struct stress_worker workers[STRESS_WORKERS])
{
    for (int t = 0; t < STRESS_WORKERS; t++) {
        workers[t] = (struct stress_worker){.ok = false};
        if (pthread_create(&workers[t].thread, NULL, stress_thread, &workers[t]) != 0) {
            perror("pthread_create");
            abort();
        }
    }
}

/* Joins the workers; returns how many reported failure (each one printed). */
static int stress_join(struct stress_worker workers[STRESS_WORKERS])
{
    int failed = 0;
    for (int t = 0; t < STRESS_WORKERS; t++) {
        pthread_join(workers[t].thread, NULL);
        if (!workers[t].ok) {
            printf("     worker %d failed: %s\n", t, workers[t].failure);
            failed++;
        }
    }
    return failed;
}

static struct counters stress_counters(void)
{
    struct counters c;
    cma_get_stats(&c.allocs, &c.frees);
    return c;
}

/* Before each run: thread safety on, no allocation limit (CMA API only). */
static void stress_prepare(void)
{
#ifndef CMA_PLAIN
    cma_set_thread_safety(true);
    cma_set_alloc_limit(0);
#endif
}

#endif
