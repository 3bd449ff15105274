/* fault.c: one heap misuse per run, which CMA must end with SIGABRT after
 * one diagnostic line on stderr:
 *
 *     cma: <call>(): <reason> (pointer 0x<hex>, thread <tid>)
 *
 * Usage: fault --list              the cases: name|abort|modes|call|reason
 *                                  (call: one name, or alternatives a/b)
 *        fault CASE [--threads]
 *
 * A run announces on stdout the pointer(s) the diagnostic may name
 * ("pointer 0x...") and the id of the thread about to misuse the heap
 * ("thread N"), performs exactly one misuse and, if it survives, prints
 * "NOT DETECTED" and exits 0. With --threads, six hammer threads (faults.h)
 * malloc, realloc and free blocks of their own and each other's the whole
 * time: the diagnostic and the abort must come all the same, without a hang.
 * run.sh checks the signal, the line, the pointer and the thread.
 *
 * Built twice: the plain build (malloc family; run with LD_PRELOAD) and the
 * -DFAULTS_LINKED build (-lcma), whose cases go through the cma_* API.
 *
 * The cases (CAT: small, medium, large, huge; see faults.h for the sizes):
 *   CALL.{stack,static,glibc,mmap}            not CMA's memory: invalid pointer
 *   CALL.{interior16,interior_half,misaligned1,misaligned8}.CAT
 *                                             inside a live block: invalid pointer
 *   CALL.freed.CAT                            already freed: double free
 *       CALL: free, realloc, malloc_usable_size, free_sized (plain build),
 *             cma_free, cma_realloc, cma_block_size (linked build)
 *   FREE.freed_then_churn.{small,medium}      freed, other classes churned,
 *                                             freed again: double free
 *   FREE.freed_by_other_thread.CAT            another thread frees, then the
 *                                             owner: double free
 *   FREE.other_thread_frees_freed.CAT         the owner frees, then another
 *                                             thread: double free
 *   ALLOC.uaf_{junk,first_byte,zeros}.{small,medium}
 *                                             a freed block's first 16 bytes
 *                                             overwritten, then mallocs of its
 *                                             class: malloc(), corrupted heap
 *                                             metadata, naming that block
 *   ALLOC.uaf_junk_then_frees.{small,medium}  the same with frees of another
 *                                             class in between (either call)
 *   ALLOC.uaf_junk_foreign_cache.small        the block in another thread's
 *                                             cache, which allocates
 *   ALLOC.uaf_junk_inbox.{small,medium}       the block in its owner's inbox
 *   ALLOC.uaf_data_start.{small,medium}       secure mode only: one byte of a
 *                                             freed block's data written
 *                                             (byte 16): malloc(), freed block
 *                                             written to (use after free)
 *   ALLOC.uaf_data_end_then_frees.{small,medium}
 *                                             secure mode only: its last byte,
 *                                             with frees in between (either)
 *   ALLOC.uaf_then_thread_exit.{small,medium} secure mode only: a thread
 *                                             writes into a block it freed,
 *                                             then exits: thread_exit(),
 *                                             freed block written to
 *   FREE.overflow{1..16}.{small,medium}       secure mode only: 1..16 bytes
 *                                             written past the usable size:
 *                                             buffer overflow past the end of
 *                                             the block
 *       FREE, ALLOC: free and malloc (plain build), cma_free and cma_malloc
 *       (linked build; damage found while allocating is named malloc())
 */
#include <malloc.h>

#include "faults.h"

/* ---- the calls a misuse goes through --------------------------------------
 * Through volatile function pointers: GCC would otherwise see the double
 * free or the free of a static and warn (-Wfree-nonheap-object,
 * -Wuse-after-free) or fold the call. */

#ifdef FAULTS_LINKED
static void *(*volatile malloc_fn)(size_t) = cma_malloc; /* reported as malloc() */
#define FREE_OP OP_CMA_FREE
#else
static void *(*volatile malloc_fn)(size_t) = malloc;
#define FREE_OP OP_FREE
#endif
static void (*volatile free_fn)(void *) = free;
static void *(*volatile realloc_fn)(void *, size_t) = realloc;
static size_t (*volatile usable_fn)(void *) = malloc_usable_size;
#ifdef FAULTS_LINKED
static void (*volatile cma_free_fn)(void *) = cma_free;
static void *(*volatile cma_realloc_fn)(void *, size_t) = cma_realloc;
static size_t (*volatile cma_block_size_fn)(const void *) = cma_block_size;
#endif

/* C23 free_sized is not in this glibc's headers (nor in its library): it is
 * CMA's, looked up at run time. */
static void call_free_sized(void *p, size_t size)
{
    void *sym = dlsym(RTLD_DEFAULT, "free_sized");
    Dl_info info;
    if (sym == NULL || dladdr(sym, &info) == 0 || strstr(info.dli_fname, "libcma") == NULL)
        setup_failed("free_sized is not CMA's (%s)", sym == NULL ? "not found" : info.dli_fname);
    void (*fn)(void *, size_t);
    memcpy(&fn, &sym, sizeof fn);
    fn(p, size);
}

enum op {
    OP_FREE,
    OP_REALLOC,
    OP_USABLE_SIZE,
    OP_FREE_SIZED,
    OP_CMA_FREE,
    OP_CMA_REALLOC,
    OP_CMA_BLOCK_SIZE,
};

static const struct {
    const char *name; /* as the diagnostic names the call */
    bool linked;      /* a cma_* call: the linked build's */
} ops[] = {
    [OP_FREE] = {"free", false},
    [OP_REALLOC] = {"realloc", false},
    [OP_USABLE_SIZE] = {"malloc_usable_size", false},
    [OP_FREE_SIZED] = {"free_sized", false},
    [OP_CMA_FREE] = {"cma_free", true},
    [OP_CMA_REALLOC] = {"cma_realloc", true},
    [OP_CMA_BLOCK_SIZE] = {"cma_block_size", true},
};

/* The misuse itself. `size` is what free_sized is told. */
static void misuse(enum op op, void *p, size_t size)
{
    switch (op) {
    case OP_FREE: free_fn(p); break;
    case OP_REALLOC: opaque(realloc_fn(p, 100)); break;
    case OP_USABLE_SIZE: opaque_size(usable_fn(p)); break;
    case OP_FREE_SIZED: call_free_sized(p, size); break;
#ifdef FAULTS_LINKED
    case OP_CMA_FREE: cma_free_fn(p); break;
    case OP_CMA_REALLOC: opaque(cma_realloc_fn(p, 100)); break;
    case OP_CMA_BLOCK_SIZE: opaque_size(cma_block_size_fn(p)); break;
#else
    default: setup_failed("call %s needs the linked build", ops[op].name);
#endif
    }
}

/* ---- the cases ------------------------------------------------------------ */

#define INVALID "invalid pointer"
#define DOUBLE "double free"
#define CORRUPTED "corrupted heap metadata"
#define OVERFLOW "buffer overflow past the end of the block"
#define USE_AFTER_FREE "freed block written to (use after free)"

struct fcase;
typedef void (*case_fn)(const struct fcase *c, unsigned char *stack);

struct fcase {
    char name[64];
    const char *call;   /* the call the diagnostic must name */
    const char *reason; /* and its reason */
    bool secure_only;   /* a secure-mode feature */
    case_fn run;
    enum op op;
    int kind; /* enum bad_kind, for the generic cases */
    int cat;  /* enum category, or -1 */
    int param;
};

static struct fcase cases[512];
static int case_count;

static struct fcase *add_case(case_fn run, const char *call, const char *reason,
                              const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static struct fcase *add_case(case_fn run, const char *call, const char *reason,
                              const char *fmt, ...)
{
    if (case_count == (int)(sizeof cases / sizeof cases[0]))
        setup_failed("too many cases");
    struct fcase *c = &cases[case_count++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->name, sizeof c->name, fmt, ap);
    va_end(ap);
    c->call = call;
    c->reason = reason;
    c->run = run;
    c->cat = -1;
    return c;
}

/* 1 and 2: a call on a bad pointer of one kind (faults.h: make_bad). */
static void run_bad_pointer(const struct fcase *c, unsigned char *stack)
{
    struct bad b = make_bad((enum bad_kind)c->kind, c->cat, stack, true);
    misuse(c->op, b.ptr, b.size != 0 ? b.size : 64);
}

/* 2: a double free after the block sat on its page's free list while the
 * thread allocated and freed blocks of other classes (small to large). A
 * live block of the same class keeps the page from being emptied and
 * recycled meanwhile. */
static void run_double_after_churn(const struct fcase *c, unsigned char *stack)
{
    static const size_t churn_sizes[] = {24, 200, 3000, 20000, 50000, 300000};
    const size_t size = categories[c->cat].size;
    (void)stack;
    void *keep = ALLOC(size);
    void *p = ALLOC(size);
    if (keep == NULL || p == NULL)
        setup_failed("malloc(%zu)", size);
    free_block(p);

    void *held[16] = {NULL};
    uint64_t rng = 12345;
    for (int i = 0; i < 3000; i++) {
        uint64_t r = rng_next(&rng);
        void **slot = &held[r % 16];
        if (*slot != NULL) {
            FREE(*slot);
            *slot = NULL;
        } else {
            size_t n = churn_sizes[(r >> 8) % 6];
            *slot = opaque(ALLOC(n));
            if (*slot == NULL)
                setup_failed("churn malloc(%zu)", n);
            memset(*slot, 0x5c, n < 32 ? n : 32); /* n may be 24 */
        }
    }
    for (int i = 0; i < 16; i++)
        FREE(held[i]);

    announce_pointer(p);
    announce_thread();
    misuse(c->op, p, size);
}

/* 2: cross-thread double frees. The helper thread stays alive, holding in
 * its foreign cache or outbox whatever it freed. */
struct cross {
    void *p;
    size_t size;
    enum op op;
};

static void legit_free_job(void *arg)
{
    free_block(((struct cross *)arg)->p);
}

/* Announced before the first free: see make_bad. */
static void misuse_job(void *arg)
{
    struct cross *x = (struct cross *)arg;
    misuse(x->op, x->p, x->size);
}

/* The owner allocates; another thread frees; the owner frees again. */
static void run_remote_then_owner(const struct fcase *c, unsigned char *stack)
{
    static struct helper h;
    struct cross x = {ALLOC(categories[c->cat].size), categories[c->cat].size, c->op};
    (void)stack;
    if (x.p == NULL)
        setup_failed("malloc(%zu)", x.size);
    block_fill(x.p, x.size, 1);
    helper_start(&h);
    announce_pointer(x.p);
    announce_thread();
    watch_address(x.p);
    helper_run(&h, legit_free_job, &x);
    misuse_job(&x);
}

/* The owner allocates and frees; another thread frees again. */
static void run_owner_then_remote(const struct fcase *c, unsigned char *stack)
{
    static struct helper h;
    struct cross x = {ALLOC(categories[c->cat].size), categories[c->cat].size, c->op};
    (void)stack;
    if (x.p == NULL)
        setup_failed("malloc(%zu)", x.size);
    block_fill(x.p, x.size, 2);
    helper_start(&h);
    announce_pointer(x.p);
    say("thread %ld\n", atomic_load(&h.tid));
    watch_address(x.p);
    free_block(x.p);
    helper_run(&h, misuse_job, &x);
}

/* 3: a use-after-free write over a free block's first 16 bytes (its encoded
 * link), then mallocs of its class until CMA reports the damage. */
enum smash { SMASH_JUNK, SMASH_FIRST_BYTE, SMASH_ZEROS, SMASH_DATA_START, SMASH_DATA_END };

/* The last byte SMASH_DATA_END writes: set by the case. */
static size_t data_end_offset;

static void smash(void *p, enum smash how)
{
    volatile unsigned char *b = (volatile unsigned char *)p;
    switch (how) {
    case SMASH_JUNK:
        for (int i = 0; i < 16; i++)
            b[i] = (unsigned char)"use-after-free!!"[i];
        break;
    case SMASH_FIRST_BYTE:
        b[0] ^= 0xff; /* a one-byte change whatever the byte held */
        break;
    case SMASH_ZEROS:
        for (int i = 0; i < 16; i++)
            b[i] = 0;
        break;
    case SMASH_DATA_START: /* past the link and tag words */
        b[16] = 0x5a;
        break;
    case SMASH_DATA_END:
        b[data_end_offset] = 0x5a;
        break;
    }
}

static void malloc_until_caught(size_t size)
{
    for (int i = 0; i < 1000; i++)
        if (malloc_fn(size) == NULL)
            setup_failed("malloc(%zu) failed after the use-after-free write", size);
}

/* The same, with a malloc and free of another class (64 bytes) after each
 * malloc: frees move a quarantine along (secure mode), so the damaged block
 * leaves it. CMA may then report the damage from the free that lets the
 * block go, or from a malloc. */
static void malloc_and_free_until_caught(size_t size)
{
    for (int i = 0; i < 1000; i++) {
        if (malloc_fn(size) == NULL)
            setup_failed("malloc(%zu) failed after the use-after-free write", size);
        void *other = malloc_fn(64);
        if (other == NULL)
            setup_failed("malloc(64) failed after the use-after-free write");
        free_block(other);
    }
}

/* The freed block is the head of its page's free list; a live block of the
 * class keeps the page in use. */
static void run_use_after_free(const struct fcase *c, unsigned char *stack)
{
    const size_t size = categories[c->cat].size;
    (void)stack;
    void *keep = malloc_fn(size);
    void *p = malloc_fn(size);
    if (keep == NULL || p == NULL)
        setup_failed("malloc(%zu)", size);
    data_end_offset = size - 1;
    free_block(p);
    smash(p, (enum smash)(c->param % 8));
    announce_pointer(p);
    announce_thread();
    if (c->param >= 8)
        malloc_and_free_until_caught(size);
    else
        malloc_until_caught(size);
}

/* The same with the freed block in another thread's foreign cache: the
 * helper, which has a heap of its own (it allocated before), frees the main
 * thread's small block (and keeps it for its own reuse), smashes it, then
 * allocates the class. */
static void uaf_foreign_job(void *arg)
{
    struct cross *x = (struct cross *)arg;
    free_block(malloc_fn(32));
    free_block(x->p);
    smash(x->p, SMASH_JUNK);
    announce_pointer(x->p);
    announce_thread();
    malloc_until_caught(x->size);
}

static void run_use_after_free_foreign(const struct fcase *c, unsigned char *stack)
{
    static struct helper h;
    const size_t size = categories[c->cat].size;
    (void)stack;
    void *keep = malloc_fn(size);
    struct cross x = {malloc_fn(size), size, FREE_OP};
    if (keep == NULL || x.p == NULL)
        setup_failed("malloc(%zu)", size);
    helper_start(&h);
    helper_run(&h, uaf_foreign_job, &x);
}

/* The same with the freed block waiting in its owner's inbox: another
 * thread frees it and exits (which sends what it freed for other threads to
 * their owners); the owner smashes it, then allocates the class until the
 * inbox is collected. */
static void *free_and_exit_thread(void *arg)
{
    free_block(arg);
    return NULL;
}

static void run_use_after_free_inbox(const struct fcase *c, unsigned char *stack)
{
    const size_t size = categories[c->cat].size;
    (void)stack;
    void *keep = malloc_fn(size);
    void *p = malloc_fn(size);
    pthread_t thread;
    if (keep == NULL || p == NULL)
        setup_failed("malloc(%zu)", size);
    if (pthread_create(&thread, NULL, free_and_exit_thread, p) != 0 ||
        pthread_join(thread, NULL) != 0)
        setup_failed("pthread_create/join");
    smash(p, SMASH_JUNK);
    announce_pointer(p);
    announce_thread();
    malloc_until_caught(size);
}

/* Secure mode: a thread frees a block of its own (into its quarantine),
 * writes into it, and exits: its exit checks the quarantine it leaves. */
static void *uaf_then_exit_thread(void *arg)
{
    size_t size = *(size_t *)arg;
    void *p = malloc_fn(size);
    if (p == NULL)
        setup_failed("malloc(%zu)", size);
    free_block(p);
    smash(p, SMASH_DATA_START);
    announce_pointer(p);
    announce_thread();
    return NULL;
}

static void run_use_after_free_at_exit(const struct fcase *c, unsigned char *stack)
{
    static size_t size;
    pthread_t thread;
    (void)stack;
    size = categories[c->cat].size;
    if (pthread_create(&thread, NULL, uaf_then_exit_thread, &size) != 0 ||
        pthread_join(thread, NULL) != 0)
        setup_failed("pthread_create/join");
}

/* 4 (secure mode): a linear overflow of `param` bytes past the usable size
 * of a block into its neighbour, a live block; then the block is freed, then
 * the neighbour. Either free may report it (the diagnostic may name either
 * block). The neighbour is the block at the next higher address among a
 * batch of the class (the order of fresh blocks is random in secure mode). */
static int compare_pointers(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static void run_overflow(const struct fcase *c, unsigned char *stack)
{
    enum { N = 24 };
    const size_t size = categories[c->cat].size;
    uintptr_t blocks[N];
    (void)stack;
    for (int i = 0; i < N; i++) {
        blocks[i] = (uintptr_t)malloc_fn(size);
        if (blocks[i] == 0)
            setup_failed("malloc(%zu)", size);
        memset((void *)blocks[i], 0x11, size);
    }
    qsort(blocks, N, sizeof blocks[0], compare_pointers);
    int best = -1;
    for (int i = 0; i + 1 < N; i++)
        if (best < 0 || blocks[i + 1] - blocks[i] < blocks[best + 1] - blocks[best])
            best = i;
    unsigned char *p = (unsigned char *)blocks[best], *q = (unsigned char *)blocks[best + 1];
    size_t usable = usable_fn(p);
    if (usable < size || p + usable > q)
        setup_failed("usable size %zu of %p: not between %zu and the neighbour %p", usable,
                      (void *)p, size, (void *)q);

    volatile unsigned char *end = p + usable;
    for (int i = 0; i < c->param; i++)
        end[i] ^= 0xa5; /* every byte changes, whatever it held */
    announce_pointer(p);
    announce_pointer(q);
    announce_thread();
    misuse(c->op, p, size);
    misuse(c->op, q, size);
}

static void register_cases(void)
{
    for (int op = 0; op < (int)(sizeof ops / sizeof ops[0]); op++) {
#ifdef FAULTS_LINKED
        if (!ops[op].linked)
            continue;
#else
        if (ops[op].linked)
            continue;
#endif
        for (int k = 0; k < BAD_KINDS; k++) {
            const char *reason = bad_kinds[k].freed ? DOUBLE : INVALID;
            for (int cat = 0; cat < (bad_kinds[k].per_category ? CATEGORIES : 1); cat++) {
                struct fcase *c;
                if (bad_kinds[k].per_category)
                    c = add_case(run_bad_pointer, ops[op].name, reason, "%s.%s.%s",
                                 ops[op].name, bad_kinds[k].name, categories[cat].name);
                else
                    c = add_case(run_bad_pointer, ops[op].name, reason, "%s.%s", ops[op].name,
                                 bad_kinds[k].name);
                c->op = (enum op)op;
                c->kind = k;
                c->cat = bad_kinds[k].per_category ? cat : -1;
            }
        }
    }
    /* The cases beyond the bad-pointer table free with free() and allocate
     * with malloc() in the plain build, with cma_free() and cma_malloc() in
     * the linked one (damage found while allocating is reported as malloc()
     * either way). */
    const char *fr = ops[FREE_OP].name;
#ifdef FAULTS_LINKED
    const char *al = "cma_malloc";
#else
    const char *al = "malloc";
#endif
    struct fcase *c;
    for (int cat = SMALL; cat <= MEDIUM; cat++) {
        c = add_case(run_double_after_churn, fr, DOUBLE, "%s.freed_then_churn.%s", fr,
                     categories[cat].name);
        c->op = FREE_OP;
        c->cat = cat;
    }
    for (int cat = 0; cat < CATEGORIES; cat++) {
        c = add_case(run_remote_then_owner, fr, DOUBLE, "%s.freed_by_other_thread.%s", fr,
                     categories[cat].name);
        c->op = FREE_OP;
        c->cat = cat;
        c = add_case(run_owner_then_remote, fr, DOUBLE, "%s.other_thread_frees_freed.%s", fr,
                     categories[cat].name);
        c->op = FREE_OP;
        c->cat = cat;
    }
    static const char *smash_names[] = {"junk", "first_byte", "zeros"};
    for (int cat = SMALL; cat <= MEDIUM; cat++)
        for (int how = 0; how < 3; how++) {
            c = add_case(run_use_after_free, "malloc", CORRUPTED, "%s.uaf_%s.%s", al,
                         smash_names[how], categories[cat].name);
            c->cat = cat;
            c->param = how;
        }
    for (int cat = SMALL; cat <= MEDIUM; cat++) {
        static char either[32];
        snprintf(either, sizeof either, "malloc/%s", fr);
        c = add_case(run_use_after_free, either, CORRUPTED, "%s.uaf_junk_then_frees.%s", al,
                     categories[cat].name);
        c->cat = cat;
        c->param = 8 + SMASH_JUNK;
    }
    c = add_case(run_use_after_free_foreign, "malloc", CORRUPTED,
                 "%s.uaf_junk_foreign_cache.small", al);
    c->cat = SMALL;
    for (int cat = SMALL; cat <= MEDIUM; cat++) {
        c = add_case(run_use_after_free_inbox, "malloc", CORRUPTED, "%s.uaf_junk_inbox.%s", al,
                     categories[cat].name);
        c->cat = cat;
    }
    /* Secure mode: a write into a freed block's data (the quarantine keeps
     * it zeroed) is found by an allocation's check of the quarantine, or
     * when the block leaves it. */
    for (int cat = SMALL; cat <= MEDIUM; cat++) {
        static char either[32];
        snprintf(either, sizeof either, "malloc/%s", fr);
        c = add_case(run_use_after_free, "malloc", USE_AFTER_FREE, "%s.uaf_data_start.%s", al,
                     categories[cat].name);
        c->cat = cat;
        c->param = SMASH_DATA_START;
        c->secure_only = true;
        c = add_case(run_use_after_free, either, USE_AFTER_FREE, "%s.uaf_data_end_then_frees.%s",
                     al, categories[cat].name);
        c->cat = cat;
        c->param = 8 + SMASH_DATA_END;
        c->secure_only = true;
        c = add_case(run_use_after_free_at_exit, "thread_exit", USE_AFTER_FREE,
                     "%s.uaf_then_thread_exit.%s", al, categories[cat].name);
        c->cat = cat;
        c->secure_only = true;
    }
    for (int cat = SMALL; cat <= MEDIUM; cat++)
        for (int k = 1; k <= 16; k++) {
            c = add_case(run_overflow, fr, OVERFLOW, "%s.overflow%d.%s", fr, k,
                         categories[cat].name);
            c->op = FREE_OP;
            c->cat = cat;
            c->param = k;
            c->secure_only = true;
        }
}

int main(int argc, char **argv)
{
    unsigned char stack[256] __attribute__((aligned(16)));
    memset(stack, 0, sizeof stack);
    register_cases();

    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (int i = 0; i < case_count; i++)
            say("%s|abort|%s|%s|%s\n", cases[i].name, cases[i].secure_only ? "secure" : "both",
                cases[i].call, cases[i].reason);
        return 0;
    }
    bool threads = argc == 3 && strcmp(argv[2], "--threads") == 0;
    if (argc < 2 || argc > 3 || (argc == 3 && !threads)) {
        say("usage: %s --list | CASE [--threads]\n", argv[0]);
        return EXIT_SETUP;
    }
    const struct fcase *c = NULL;
    for (int i = 0; i < case_count; i++)
        if (strcmp(cases[i].name, argv[1]) == 0)
            c = &cases[i];
    if (c == NULL)
        setup_failed("no case %s", argv[1]);

    if (threads)
        hammer_start(true);
    say("case %s%s: expecting \"cma: %s(): %s\"\n", c->name, threads ? " (hammered)" : "",
        c->call, c->reason);
    c->run(c, stack);
    exit_if_reused();
    say("NOT DETECTED\n");
    if (threads)
        say("(the hammer threads did %ld operations)\n", hammer_total_ops());
    _exit(0);
}
