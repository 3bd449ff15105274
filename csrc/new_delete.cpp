/*
 * The throwing forms of C++ operator new (src/api/cxx.rs exports every
 * form of new and delete).
 *
 * The failure path is here, in C++ frames, because a C++ exception must be
 * able to unwind through it (Rust code cannot throw one, and CMA is built
 * with panic=abort). It uses no part of the C++ runtime at link time: the
 * new_handler and std::bad_alloc come from the program's own runtime,
 * looked up when an allocation fails. So libcma does not depend on
 * libstdc++, and C programs that preload it never load one. These
 * functions have no destructors or handlers, so unwinding through them
 * needs only their unwind tables (no personality routine).
 *
 * Nothrow forms return NULL on failure; throwing forms call the new_handler
 * until it gives up, then throw std::bad_alloc.
 */
#include <cstddef>
#include <new>
#include <dlfcn.h>

extern "C" {
/* src/api/cxx.rs: a block of at least `size` bytes aligned to `align`
 * (0: the default 16), or NULL; never throws. */
void *cma_cxx_new(std::size_t size, std::size_t align) noexcept;
/* Ends the process: out of memory and no C++ runtime to throw with. */
[[noreturn]] void cma_cxx_no_runtime(void) noexcept;
}

namespace {

using handler_getter = std::new_handler (*)();
using thrower = void (*)();

/* The program's current new_handler, if it has a C++ runtime. */
std::new_handler current_handler() {
    auto get = reinterpret_cast<handler_getter>(dlsym(RTLD_DEFAULT, "_ZSt15get_new_handlerv"));
    return get ? get() : nullptr;
}

[[noreturn]] void throw_bad_alloc() {
    auto raise = reinterpret_cast<thrower>(dlsym(RTLD_DEFAULT, "_ZSt17__throw_bad_allocv"));
    if (raise) raise();
    cma_cxx_no_runtime();
}

__attribute__((noinline)) void *new_failed(std::size_t size, std::size_t align) {
    for (;;) {
        std::new_handler handler = current_handler();
        if (!handler) throw_bad_alloc();
        handler(); /* may free memory, throw, or end the program */
        if (void *p = cma_cxx_new(size, align)) return p;
    }
}

inline void *new_throwing(std::size_t size, std::size_t align) {
    void *p = cma_cxx_new(size, align);
    return p ? p : new_failed(size, align);
}

} // namespace

/*
 * The operators, under C names: src/api/cxx.rs exports the mangled
 * operator symbols as jumps to these (so they appear in libcma's dynamic
 * symbol table, which rustc writes, and leave no frame of their own for an
 * exception to unwind through).
 */
#define CMA_HIDDEN extern "C" __attribute__((visibility("hidden")))

CMA_HIDDEN void *cma_cpp_new(std::size_t size) { return new_throwing(size, 0); }
CMA_HIDDEN void *cma_cpp_new_aligned(std::size_t size, std::size_t align) { return new_throwing(size, align); }
