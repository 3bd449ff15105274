// stress_cpp.cpp: the threaded reallocation stress test of STRESS_SPEC.md in
// the ancestor's C++ shape: std::thread workers, a std::vector of slots, the
// counters read before and after. It includes only cma.h, which proves the
// generated header is usable from C++ unchanged.
//
// Usage: stress_cpp [ROUNDS]   (default 100)
#ifdef CMA_PLAIN
#include "cma_plain.h"  // malloc-family build, run with LD_PRELOAD=libcma.so
#else
#include "cma.h"
#endif

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int kWorkers = 6;
constexpr int kSlots = 32;
constexpr int kIterations = 384;

struct Slot {
    unsigned char* ptr = nullptr;
    std::size_t size = 0;
    unsigned char pattern = 0;
};

struct Counters {
    std::size_t allocs = 0;
    std::size_t frees = 0;
};

// True when the calling thread's last CMA call reported success. The plain
// build has no CMA error to read: the check is skipped there.
bool last_ok() {
#ifdef CMA_PLAIN
    return true;
#else
    return cma_last_error() == CMA_OK;
#endif
}

bool all_bytes(const Slot& s, std::size_t n) {
    for (std::size_t i = 0; i < n; i++)
        if (s.ptr[i] != s.pattern) return false;
    return true;
}

class Worker {
public:
    // Runs the sequence; on failure frees what it holds and returns false.
    bool run() {
        for (int i = 0; i < kIterations; i++) {
            if (!step(i)) {
                release();
                return false;
            }
        }
        for (int slot = 0; slot < kSlots; slot++) {
            if (slots_[slot].ptr && !all_bytes(slots_[slot], slots_[slot].size)) {
                failure_ = "final check: slot " + std::to_string(slot) + " corrupt";
                release();
                return false;
            }
        }
        for (Slot& s : slots_) {
            unsigned char* p = s.ptr;
            s.ptr = nullptr;
            cma_free(p);
            if (p && !last_ok()) {
                failure_ = "final free reported an error";
                release();
                return false;
            }
        }
        return true;
    }

    const std::string& failure() const { return failure_; }

private:
    bool fail(int i, const char* what) {
        failure_ = "iteration " + std::to_string(i) + ": " + what;
        return false;
    }

    bool step(int i) {
        const int slot = i % kSlots;
        const std::size_t size = static_cast<std::size_t>((i % 17) + 1) * 24;
        const auto pattern = static_cast<unsigned char>((slot % 251) + 1);
        Slot& s = slots_[slot];

        if (!s.ptr) {
            auto* p = static_cast<unsigned char*>(cma_malloc(size));
            s.ptr = p;
            if (!p || !last_ok()) return fail(i, "cma_malloc failed");
            std::memset(p, pattern, size);
            s.size = size;
            s.pattern = pattern;
        } else if (i % 3 == 0) {
            const std::size_t new_size = size + 48;
            if (!all_bytes(s, s.size)) return fail(i, "block corrupt before realloc");
            auto* p = static_cast<unsigned char*>(cma_realloc(s.ptr, new_size));
            if (!p) return fail(i, "cma_realloc returned NULL");
            s.ptr = p;
            if (!last_ok()) return fail(i, "cma_realloc reported an error");
            if (!all_bytes(s, new_size < s.size ? new_size : s.size))
                return fail(i, "cma_realloc lost contents");
            if (new_size > s.size) std::memset(p + s.size, s.pattern, new_size - s.size);
            s.size = new_size;
        } else {
            if (!all_bytes(s, s.size)) return fail(i, "block corrupt before free");
            unsigned char* p = s.ptr;
            s.ptr = nullptr;
            cma_free(p);
            if (!last_ok()) return fail(i, "cma_free reported an error");
        }
        return true;
    }

    void release() {
        for (Slot& s : slots_) {
            cma_free(s.ptr);
            s.ptr = nullptr;
        }
    }

    std::vector<Slot> slots_ = std::vector<Slot>(kSlots);
    std::string failure_;
};

Counters read_counters() {
    Counters c;
    cma_get_stats(&c.allocs, &c.frees);
    return c;
}

// Runs the six workers once; returns how many failed (each one printed).
int run_round() {
#ifndef CMA_PLAIN
    cma_set_thread_safety(true);
    cma_set_alloc_limit(0);
#endif
    std::vector<Worker> workers(kWorkers);
    std::vector<char> ok(kWorkers, 0);
    {
        std::vector<std::thread> threads;
        for (int t = 0; t < kWorkers; t++)
            threads.emplace_back([&workers, &ok, t] { ok[t] = workers[t].run(); });
        for (std::thread& th : threads) th.join();
    }
    int failed = 0;
    for (int t = 0; t < kWorkers; t++) {
        if (!ok[t]) {
            std::printf("     worker %d failed: %s\n", t, workers[t].failure().c_str());
            failed++;
        }
    }
    return failed;
}

int fail(const char* what) {
    std::printf("FAIL %s\n", what);
    std::fflush(stdout);
    std::_Exit(1);
}

}  // namespace

int main(int argc, char** argv) {
    const int rounds = argc > 1 ? std::atoi(argv[1]) : 100;
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    if (rounds <= 0) fail("round count must be positive");

    // Round 0 settles glibc's thread-stack cache, whose TLS vectors are
    // malloc'd; its counters are not compared, its workers must succeed.
    if (run_round() != 0) fail("warm-up round: a worker failed");
    std::printf("ok   warm-up round: all %d workers succeeded\n", kWorkers);

    for (int round = 1; round <= rounds; round++) {
        // The containers of run_round are allocated and freed between the two
        // reads, so they do not change the outstanding count.
        const Counters before = read_counters();
        const int failed = run_round();
        const Counters after = read_counters();
        const bool balanced = after.allocs - after.frees == before.allocs - before.frees &&
                              after.allocs >= before.allocs && after.frees >= before.frees;
        std::printf("%s round %d: %d/%d workers succeeded; allocs %zu -> %zu, frees %zu -> %zu\n",
                    failed == 0 && balanced ? "ok  " : "FAIL", round, kWorkers - failed, kWorkers,
                    before.allocs, after.allocs, before.frees, after.frees);
        if (failed != 0) fail("a worker failed");
        if (!balanced) fail("outstanding count changed or a counter went down");
    }
    std::printf("stress_cpp: all %d rounds passed\n", rounds);
    return 0;
}
