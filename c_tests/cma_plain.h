/* cma_plain.h: the CMA API mapped onto the malloc family, for -DCMA_PLAIN
 * builds (C and C++).
 *
 * The same test source, built without -lcma and run with
 * LD_PRELOAD=libcma.so, then exercises CMA through the standard entry points.
 * The counters come from the preloaded library through dlsym (cma_dl.h),
 * which also proves the preload took effect. The CMA-only features (the last
 * error, the allocation limit, the checked functions) have no counterpart
 * here: the tests skip those checks in this build.
 */
#ifndef CMA_TESTS_CMA_PLAIN_H
#define CMA_TESTS_CMA_PLAIN_H

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "cma_dl.h"

#define cma_malloc(size) malloc(size)
#define cma_calloc(count, size) calloc(count, size)
#define cma_realloc(ptr, size) realloc(ptr, size)
#define cma_free(ptr) free(ptr)
#define cma_strdup(s) strdup(s)
#define cma_block_size(ptr) malloc_usable_size((void *)(ptr))
#define cma_get_stats(allocs, frees) cma_dl_get_stats(allocs, frees)
#define cma_get_extended_stats(allocs, frees, current, peak) \
    cma_dl_get_extended_stats(allocs, frees, current, peak)

#endif
