/* api.h: the CMA API for the C tests that use it, or its malloc-family
 * stand-in in -DCMA_PLAIN builds (see cma_plain.h). */
#ifndef CMA_TESTS_API_H
#define CMA_TESTS_API_H

#include <stdbool.h>

#include "check.h"

#ifdef CMA_PLAIN
#include "cma_plain.h"
/* Plain malloc reports no CMA error: these checks are skipped in this build. */
#define LAST_ERROR_IS(code) true
#define CHECK_LAST_ERROR(code) ((void)0)
#else
#include "cma.h"
#define LAST_ERROR_IS(code) (cma_last_error() == (code))
#define CHECK_LAST_ERROR(code)                                                   \
    do {                                                                         \
        enum CmaError last_ = cma_last_error();                                  \
        CHECK_MSG(last_ == (code), "cma_last_error() == %s (got %d)", #code,     \
                  (int)last_);                                                   \
    } while (0)
#endif

#endif
