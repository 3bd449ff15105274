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
    void *heap;          /* the thread's heap, NULL until its first allocation */
    size_t fast_bound;   /* malloc sizes below this take the fast path; 0 until
                            the thread has a heap, and again after it exits */
    uint32_t last_error; /* CmaError of the thread's last cma_* call */
    uint32_t flags;      /* CMA-internal state (see src/tls.rs) */
};

__attribute__((tls_model("initial-exec"), visibility("hidden")))
__thread struct cma_tls cma_tls_state;

/* Returns the calling thread's state (used where the inline-asm fast access
 * of src/tls.rs is not available). */
__attribute__((visibility("hidden")))
struct cma_tls *cma_tls_get(void) {
    return &cma_tls_state;
}
