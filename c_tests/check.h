/* check.h: the CHECK macros of CMA's C tests.
 *
 * Every check prints one line ("ok   file:line: what" or "FAIL ..."); the first
 * failure ends the program with status 1. _exit, not exit: after a failure the
 * heap may be damaged, and atexit handlers or stdio teardown must not get a
 * chance to crash or hang on it. Use from one thread at a time (the main
 * thread): worker threads report their failures back instead.
 */
#ifndef CMA_TESTS_CHECK_H
#define CMA_TESTS_CHECK_H

#include <stdio.h>
#include <unistd.h>

static unsigned checks_passed;

#define CHECK_MSG(cond, ...)                                                    \
    do {                                                                        \
        int check_ok_ = (cond) ? 1 : 0;                                         \
        printf("%s %s:%d: ", check_ok_ ? "ok  " : "FAIL", __FILE__, __LINE__);  \
        printf(__VA_ARGS__);                                                    \
        putchar('\n');                                                          \
        if (!check_ok_) {                                                       \
            fflush(stdout);                                                     \
            _exit(1);                                                           \
        }                                                                       \
        checks_passed++;                                                        \
    } while (0)

#define CHECK(cond) CHECK_MSG(cond, "%s", #cond)

/* A precondition inside a loop (a thread created, a fork done): silent when
 * it holds, a failure like CHECK's when it does not. */
#define REQUIRE(cond)                                                           \
    do {                                                                        \
        if (!(cond)) {                                                          \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);              \
            fflush(stdout);                                                     \
            _exit(1);                                                           \
        }                                                                       \
    } while (0)

/* Starts a test program: line-buffered stdout (a hang still leaves the log
 * complete up to the hang) and a first line, which also makes stdio allocate
 * its buffer now rather than between two reads of CMA's counters. */
static inline void checks_begin(const char *program)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
#ifdef CMA_PLAIN
    printf("%s (plain-malloc build)\n", program);
#else
    printf("%s\n", program);
#endif
}

/* Ends a test program: prints the number of checks that passed. */
static inline int checks_done(const char *program)
{
    printf("%s: all %u checks passed\n", program, checks_passed);
    fflush(stdout);
    return 0;
}

#endif
