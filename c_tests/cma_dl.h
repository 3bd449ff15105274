/* cma_dl.h: CMA's counters looked up at run time with dlsym (C and C++).
 *
 * Programs built without -lcma (the plain-malloc builds run with
 * LD_PRELOAD=libcma.so, and the malloc-family tests in every build) read CMA's
 * counters this way. A failed lookup means CMA is not the process's allocator,
 * so nothing the test could check would be about CMA: it stops with a FAIL.
 * Call these from one thread at a time (they cache the lookup).
 */
#ifndef CMA_TESTS_CMA_DL_H
#define CMA_TESTS_CMA_DL_H

#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static inline void *cma_dl_lookup(const char *name)
{
    void *sym = dlsym(RTLD_DEFAULT, name);
    if (sym == NULL) {
        printf("FAIL dlsym(RTLD_DEFAULT, \"%s\") found nothing: "
               "libcma is not loaded (LD_PRELOAD not in effect?)\n", name);
        fflush(stdout);
        _exit(1);
    }
    return sym;
}

static inline void cma_dl_get_stats(size_t *allocs, size_t *frees)
{
    static void (*fn)(size_t *, size_t *);
    if (fn == NULL) {
        void *sym = cma_dl_lookup("cma_get_stats");
        memcpy(&fn, &sym, sizeof fn); /* object pointer -> function pointer */
    }
    fn(allocs, frees);
}

static inline void cma_dl_get_extended_stats(size_t *allocs, size_t *frees,
                                             size_t *current, size_t *peak)
{
    static void (*fn)(size_t *, size_t *, size_t *, size_t *);
    if (fn == NULL) {
        void *sym = cma_dl_lookup("cma_get_extended_stats");
        memcpy(&fn, &sym, sizeof fn);
    }
    fn(allocs, frees, current, peak);
}

#endif
