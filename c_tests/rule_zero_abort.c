/* rule_zero_abort.c: rule zero (the ancestor hung; CMA must not), with plain
 * free(). A child process keeps six threads busy with malloc and free, then
 * its main thread frees a bad pointer: a block it already freed, or a static.
 * CMA must end the child with SIGABRT within 5 s (a hang is killed and fails)
 * and write ONE line to stderr: "cma: ", naming the call ("free(") and the
 * problem ("double free" / "invalid pointer"), with the pointer in 0x form.
 *
 * Plain malloc only (no cma.h): runs linked with -lcma and with
 * LD_PRELOAD=libcma.so. The child is forked from this process, so it runs
 * with whichever of the two is in effect.
 */
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#include "cma_dl.h"
#include "common.h"

enum { BUSY_THREADS = 6, DEADLINE_MS = 5000, CHILD_SURVIVED = 3 };

static atomic_long busy_ops[BUSY_THREADS];
static int some_static;

static void *busy_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    uint64_t rng = 99 + (uint64_t)t;
    for (;;) {
        size_t size = 1 + rng_next(&rng) % 5000;
        unsigned char *p = (unsigned char *)malloc(size);
        if (p != NULL)
            p[0] = p[size - 1] = (unsigned char)t;
        free(p);
        atomic_fetch_add(&busy_ops[t], 1);
    }
    return NULL;
}

/* The child: six busy threads, then the bad free. Never returns. */
static void child_main(bool double_free, int pointer_fd)
{
    const struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);

    pthread_t threads[BUSY_THREADS];
    for (int t = 0; t < BUSY_THREADS; t++)
        if (pthread_create(&threads[t], NULL, busy_thread, (void *)(intptr_t)t) != 0)
            _exit(2);
    for (int t = 0; t < BUSY_THREADS; t++)
        while (atomic_load(&busy_ops[t]) < 1000)
            sched_yield();

    void *bad = &some_static;
    if (double_free) {
        bad = malloc(64);
        free(bad);
    }
    char line[64];
    int n = snprintf(line, sizeof line, "%p\n", bad);
    if (write(pointer_fd, line, (size_t)n) != n)
        _exit(2);
    close(pointer_fd);

    free(opaque(bad));
    _exit(CHILD_SURVIVED);
}

static long ms_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000;
}

/* A pipe from the child, read into a buffer until EOF. */
struct sink {
    int fd;
    char *buf;
    size_t cap;
    size_t len;
};

/* Reads the pipes until both reach EOF (the child is gone) or the deadline. */
static void read_until_eof(struct sink sinks[2], const struct timespec *start)
{
    while ((sinks[0].fd >= 0 || sinks[1].fd >= 0) && ms_since(start) < DEADLINE_MS) {
        struct pollfd pfd[2] = {{sinks[0].fd, POLLIN, 0}, {sinks[1].fd, POLLIN, 0}};
        if (poll(pfd, 2, 50) <= 0)
            continue;
        for (int i = 0; i < 2; i++) {
            struct sink *s = &sinks[i];
            if (s->fd < 0 || pfd[i].revents == 0)
                continue;
            ssize_t r = read(s->fd, s->buf + s->len, s->cap - 1 - s->len);
            if (r <= 0) {
                close(s->fd);
                s->fd = -1; /* poll ignores negative descriptors */
            } else {
                s->len += (size_t)r;
            }
            s->buf[s->len] = '\0';
        }
    }
    for (int i = 0; i < 2; i++)
        if (sinks[i].fd >= 0)
            close(sinks[i].fd);
}

/* True when some 0x... number in text equals value. */
static bool mentions_pointer(const char *text, uintptr_t value)
{
    for (const char *s = strstr(text, "0x"); s != NULL; s = strstr(s + 2, "0x"))
        if ((uintptr_t)strtoull(s, NULL, 16) == value)
            return true;
    return false;
}

static void run_scenario(const char *name, bool double_free, const char *phrase)
{
    int err[2], ptr[2];
    REQUIRE(pipe(err) == 0 && pipe(ptr) == 0);
    fflush(stdout);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(err[0]);
        close(ptr[0]);
        dup2(err[1], STDERR_FILENO);
        close(err[1]);
        child_main(double_free, ptr[1]);
    }
    close(err[1]);
    close(ptr[1]);

    static char stderr_text[4096], pointer_text[64];
    struct sink sinks[2] = {{err[0], stderr_text, sizeof stderr_text, 0},
                            {ptr[0], pointer_text, sizeof pointer_text, 0}};
    stderr_text[0] = pointer_text[0] = '\0';
    read_until_eof(sinks, &start);

    int status = 0;
    pid_t r;
    while ((r = waitpid(pid, &status, WNOHANG)) == 0 && ms_since(&start) < DEADLINE_MS)
        usleep(1000);
    long elapsed = ms_since(&start);
    if (r == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }

    printf("     %s: child stderr: %s%s", name, stderr_text,
           strchr(stderr_text, '\n') ? "" : "(no complete line)\n");
    CHECK_MSG(r == pid, "%s: the child ended within 5 s (%s after %ld ms)", name,
              r == pid ? "ended" : "hung, killed", elapsed);
    CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
              "%s: killed by SIGABRT (%s %d)", name,
              WIFSIGNALED(status) ? "signal" : "exit status",
              WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    char *newline = strchr(stderr_text, '\n');
    CHECK_MSG(newline != NULL && newline[1] == '\0', "%s: stderr holds exactly one line", name);
    CHECK_MSG(strncmp(stderr_text, "cma: ", 5) == 0, "%s: the line starts with \"cma: \"", name);
    CHECK_MSG(strstr(stderr_text, "free(") != NULL, "%s: it names the call, free()", name);
    CHECK_MSG(strstr(stderr_text, phrase) != NULL, "%s: it says \"%s\"", name, phrase);
    uintptr_t pointer = (uintptr_t)strtoull(pointer_text, NULL, 16);
    CHECK_MSG(pointer != 0 && mentions_pointer(stderr_text, pointer),
              "%s: it shows the pointer %#lx", name, (unsigned long)pointer);
}

int main(void)
{
    checks_begin("rule_zero_abort");
    cma_dl_lookup("cma_get_stats"); /* fails unless CMA is the allocator */
    /* free() on a heap block that was already freed. */
    run_scenario("double free", true, "double free");
    /* free() on a static CMA never handed out. */
    run_scenario("invalid pointer", false, "invalid pointer");
    return checks_done("rule_zero_abort");
}
