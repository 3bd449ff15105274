/* cxx_operators.cpp: C++ operator new and delete served by CMA.
 *
 * libcma exports every standard form of operator new and delete. This
 * program checks, linked with -lcma and as a plain build under LD_PRELOAD:
 *   - the operators the program calls are CMA's (dlsym + dladdr), and the
 *     blocks they return are CMA blocks of the right size and alignment;
 *   - every form (plain, array, nothrow, aligned, sized) works and counts;
 *   - an impossible size: throwing forms throw std::bad_alloc (also the
 *     aligned forms), nothrow forms return nullptr;
 *   - the new_handler loop: a handler is called until it gives up, a
 *     handler that makes room lets the allocation succeed;
 *   - a sized delete whose size does not match the block ends the process
 *     (in a forked child) with CMA's one-line diagnostic.
 */
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "cma_dl.h"

namespace {

const std::size_t impossible = SIZE_MAX / 2;

/* Where results go, so that the compiler cannot drop an allocation whose
 * result is unused (new-expressions may be elided). */
void *volatile sink;

/* The file that defines the operator that RTLD_DEFAULT lookup finds. */
const char *definer(const char *symbol) {
    void *sym = dlsym(RTLD_DEFAULT, symbol);
    Dl_info info;
    if (sym == nullptr || dladdr(sym, &info) == 0 || info.dli_fname == nullptr) return "";
    return info.dli_fname;
}

std::size_t block_size(const void *p) {
    static std::size_t (*fn)(const void *);
    if (fn == nullptr) {
        void *sym = cma_dl_lookup("cma_block_size");
        std::memcpy(&fn, &sym, sizeof fn);
    }
    return fn(p);
}

void check_operators_are_cma() {
    const char *symbols[] = {
        "_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t",
        "_ZnwmSt11align_val_t", "_ZnamSt11align_val_t",
        "_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t",
        "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdaPvm", "_ZdlPvSt11align_val_t",
        "_ZdaPvSt11align_val_t", "_ZdlPvmSt11align_val_t", "_ZdaPvmSt11align_val_t",
        "_ZdlPvRKSt9nothrow_t", "_ZdaPvRKSt9nothrow_t",
        "_ZdlPvSt11align_val_tRKSt9nothrow_t", "_ZdaPvSt11align_val_tRKSt9nothrow_t",
    };
    for (const char *symbol : symbols)
        CHECK_MSG(std::strstr(definer(symbol), "libcma") != nullptr, "%s is defined by libcma (found in '%s')",
                  symbol, definer(symbol));
}

void check_every_form() {
    std::size_t allocs0, frees0, allocs1, frees1;
    cma_dl_get_stats(&allocs0, &frees0);

    int *one = new int(42);
    CHECK(block_size(one) >= sizeof(int));
    delete one;

    char *array = new char[1000];
    CHECK(block_size(array) >= 1000);
    delete[] array;

    long *nothrow_one = new (std::nothrow) long(7);
    CHECK(nothrow_one != nullptr && *nothrow_one == 7);
    delete nothrow_one;

    double *nothrow_array = new (std::nothrow) double[300];
    CHECK(nothrow_array != nullptr && block_size(nothrow_array) >= 300 * sizeof(double));
    delete[] nothrow_array;

    for (std::size_t align = 32; align <= (1u << 20); align <<= 3) {
        void *p = ::operator new(100, std::align_val_t(align));
        CHECK_MSG(reinterpret_cast<std::uintptr_t>(p) % align == 0, "operator new(100, align %zu) is aligned", align);
        ::operator delete(p, 100, std::align_val_t(align));
        void *q = ::operator new[](5000, std::align_val_t(align), std::nothrow);
        CHECK_MSG(q != nullptr && reinterpret_cast<std::uintptr_t>(q) % align == 0,
                  "operator new[](5000, align %zu, nothrow) is aligned", align);
        ::operator delete[](q, std::align_val_t(align));
    }

    struct alignas(256) Wide {
        char bytes[256];
    };
    Wide *wide = new Wide[3];
    CHECK(reinterpret_cast<std::uintptr_t>(wide) % 256 == 0);
    delete[] wide;

    /* Sized deletes with the right size, every size class on the way. */
    for (std::size_t size = 1; size < 300000; size = size * 3 / 2 + 1) {
        void *p = ::operator new(size);
        std::memset(p, 0xab, size);
        ::operator delete(p, size);
        void *a = ::operator new[](size);
        ::operator delete[](a, size);
    }

    /* Standard containers go through the same operators. */
    std::vector<std::string> words;
    for (int i = 0; i < 10000; i++) words.push_back(std::string(40, char('a' + i % 26)));
    std::size_t letters = 0;
    for (const std::string &w : words) letters += w.size();
    CHECK(letters == 400000);
    words.clear();
    words.shrink_to_fit();

    cma_dl_get_stats(&allocs1, &frees1);
    CHECK_MSG(allocs1 - allocs0 == frees1 - frees0 && allocs1 - allocs0 > 10000,
              "operators counted by CMA: %zu allocations, %zu frees", allocs1 - allocs0, frees1 - frees0);
}

template <typename F> bool throws_bad_alloc(F f) {
    try {
        f();
    } catch (const std::bad_alloc &) {
        return true;
    }
    return false;
}

void check_failures() {
    CHECK(throws_bad_alloc([] { sink = ::operator new(impossible); }));
    CHECK(throws_bad_alloc([] { sink = ::operator new[](impossible); }));
    CHECK(throws_bad_alloc([] { sink = ::operator new(impossible, std::align_val_t(64)); }));
    CHECK(throws_bad_alloc([] { sink = ::operator new[](impossible, std::align_val_t(4096)); }));
    CHECK(::operator new(impossible, std::nothrow) == nullptr);
    CHECK(::operator new[](impossible, std::nothrow) == nullptr);
    CHECK(::operator new(impossible, std::align_val_t(64), std::nothrow) == nullptr);
    CHECK(::operator new[](impossible, std::align_val_t(64), std::nothrow) == nullptr);
    /* A failed new leaves the heap usable. */
    std::string after(1000, 'x');
    CHECK(after.size() == 1000);
}

int handler_calls;

/* Gives up (removes itself) on its third call. */
void giving_up_handler() {
    if (++handler_calls == 3) std::set_new_handler(nullptr);
}

void set_alloc_limit(std::size_t limit) {
    static void (*fn)(std::size_t);
    if (fn == nullptr) {
        void *sym = cma_dl_lookup("cma_set_alloc_limit");
        std::memcpy(&fn, &sym, sizeof fn);
    }
    fn(limit);
}

/* Makes room on its second call: lifts CMA's per-request limit. */
void room_making_handler() {
    if (++handler_calls == 2) set_alloc_limit(0);
}

void check_new_handler() {
    handler_calls = 0;
    std::set_new_handler(giving_up_handler);
    CHECK(throws_bad_alloc([] { sink = ::operator new(impossible); }));
    CHECK_MSG(handler_calls == 3, "the handler ran until it gave up (%d calls)", handler_calls);

    /* A request over the limit fails until the handler lifts the limit:
     * operator new retries after every call and then succeeds. */
    handler_calls = 0;
    set_alloc_limit(1000);
    std::set_new_handler(room_making_handler);
    void *big = nullptr;
    CHECK(!throws_bad_alloc([&big] { big = ::operator new(5000); }));
    CHECK_MSG(big != nullptr && handler_calls == 2, "the allocation succeeded after %d handler calls", handler_calls);
    ::operator delete(big, 5000);
    std::set_new_handler(nullptr);

    /* A handler that throws its own exception: it propagates. */
    handler_calls = 0;
    std::set_new_handler([] {
        handler_calls++;
        throw std::bad_alloc();
    });
    CHECK(throws_bad_alloc([] { sink = ::operator new[](impossible); }));
    CHECK(handler_calls == 1);
    std::set_new_handler(nullptr);
}

/* A sized delete with the wrong size, in a child: it must die with CMA's
 * diagnostic on stderr. */
void check_sized_delete_mismatch() {
    int pipe_fds[2];
    REQUIRE(pipe(pipe_fds) == 0);
    std::fflush(stdout);
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        dup2(pipe_fds[1], 2);
        close(pipe_fds[0]);
        void *p = ::operator new(24);
        ::operator delete(p, 5000); /* allocated with 24 */
        _exit(0);                   /* not reached if CMA caught it */
    }
    close(pipe_fds[1]);
    char message[1024] = {0};
    std::size_t got = 0;
    ssize_t n;
    while ((n = read(pipe_fds[0], message + got, sizeof message - 1 - got)) > 0) got += std::size_t(n);
    close(pipe_fds[0]);
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "mismatched sized delete aborts (status %#x)",
              status);
    CHECK_MSG(std::strstr(message, "cma: operator delete") != nullptr &&
                  std::strstr(message, "size does not match") != nullptr,
              "diagnostic names the call and the reason: %s", message);
}

} // namespace

int main() {
    check_operators_are_cma();
    check_every_form();
    check_failures();
    check_new_handler();
    check_sized_delete_mismatch();
    std::printf("cxx_operators: %u checks passed\n", checks_passed);
    return 0;
}
