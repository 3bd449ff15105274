/*
 * CMA's thread-local state, in C so that it gets the initial-exec TLS model
 * (stable Rust gives a cdylib global-dynamic TLS, whose first access from a
 * thread may call malloc through __tls_get_addr). Initial-exec TLS lives in
 * the static TLS block set up when the thread starts: reading it is one
 * instruction and can never allocate.
 *
 * Keep in sync with `ThreadState` in src/tls.rs.
 */
#include <stddef.h>
#include <stdint.h>

struct cma_tls {
    void *heap;          /* the thread's heap; `cma_no_heap` until its first
                            allocation, and again after it exits */
    uint32_t last_error; /* CmaError of the thread's last cma_* call */
    uint32_t flags;      /* CMA-internal state (see src/tls.rs) */
};

/* `NO_HEAP` in src/heap/thread.rs: a heap that owns nothing, so the malloc
 * fast path needs no null check. Hidden: it stays out of the library's
 * dynamic symbols. */
extern char cma_no_heap[] __attribute__((visibility("hidden")));

__attribute__((tls_model("initial-exec"), visibility("hidden")))
__thread struct cma_tls cma_tls_state = { .heap = cma_no_heap };

/* Returns the calling thread's state (used where the inline-asm fast access
 * of src/tls.rs is not available). */
__attribute__((visibility("hidden")))
struct cma_tls *cma_tls_get(void) {
    return &cma_tls_state;
}
