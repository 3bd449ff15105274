/* dl_counters.h: CMA's two counters (cma_dl.h's lookup) as common.h's
 * struct counters, for the plain-malloc tests that compare them before
 * and after their work. */
#ifndef CMA_TESTS_DL_COUNTERS_H
#define CMA_TESTS_DL_COUNTERS_H

#include "cma_dl.h"
#include "common.h"

static inline struct counters counters_now(void)
{
    struct counters c;
    cma_dl_get_stats(&c.allocs, &c.frees);
    return c;
}

#endif
