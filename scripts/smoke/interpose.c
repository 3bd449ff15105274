/* Prints, for each function of the malloc family, the file of the loaded
 * object that defines the symbol the program binds to. Under a working
 * LD_PRELOAD of an allocator, that is the allocator for all of them. Also
 * makes a few calls through them and checks the basic contracts, so that a
 * library that exports the names but cannot serve a request is caught here
 * rather than in a workload. Built and run by scripts/preload-smoke.sh. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[] = {
    "malloc", "free", "calloc", "realloc", "posix_memalign", "aligned_alloc",
    "memalign", "valloc", "pvalloc", "malloc_usable_size",
};

static int failures;

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "interpose: check failed: %s\n", what);
        failures++;
    }
}

int main(void) {
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        Dl_info info;
        void *sym = dlsym(RTLD_DEFAULT, names[i]);
        if (sym && dladdr(sym, &info) && info.dli_fname)
            printf("%s %s\n", names[i], info.dli_fname);
        else
            printf("%s -\n", names[i]);
    }

    /* Minimal contracts; the real tests are elsewhere. */
    char *p = malloc(100);
    check(p != NULL, "malloc(100)");
    if (p) {
        memset(p, 'a', 100);
        check(malloc_usable_size(p) >= 100, "malloc_usable_size >= 100");
        p = realloc(p, 100000);
        check(p != NULL && p[99] == 'a', "realloc keeps the contents");
        free(p);
    }
    unsigned char *z = calloc(1000, 10);
    check(z != NULL, "calloc(1000, 10)");
    if (z) {
        int zero = 1;
        for (size_t i = 0; i < 10000; i++) zero &= z[i] == 0;
        check(zero, "calloc memory is zeroed");
        free(z);
    }
    void *a = NULL;
    check(posix_memalign(&a, 4096, 5000) == 0 && ((uintptr_t)a & 4095) == 0,
          "posix_memalign(4096) is aligned");
    free(a);
    a = aligned_alloc(64, 640);
    check(a != NULL && ((uintptr_t)a & 63) == 0, "aligned_alloc(64) is aligned");
    free(a);
    a = memalign(256, 10);
    check(a != NULL && ((uintptr_t)a & 255) == 0, "memalign(256) is aligned");
    free(a);
    free(NULL);
    return failures ? 1 : 0;
}
