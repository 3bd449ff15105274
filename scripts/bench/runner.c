/*
 * runner: runs one benchmark process and reports its wall time and peak RSS
 * (wait4's ru_maxrss).  Used by scripts/bench/driver.py.
 *
 *     runner REPORT_FILE PRELOAD PROGRAM [ARGS...]
 *
 * PRELOAD is the library to put in LD_PRELOAD for the program only ("-" for
 * none).  The report file gets "key value" lines: maxrss_kb, wall_s, cpu_s
 * (user + system time of the whole process), and either exit N or signal N.
 *
 * Why a wrapper: a child's ru_maxrss starts from the RSS of the process that
 * forked it (and is kept across exec), so measuring straight from Python
 * would put a floor of the interpreter's ~25 MiB under every figure; this
 * process is about 1 MiB.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s REPORT_FILE PRELOAD|- PROGRAM [ARGS...]\n", argv[0]);
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        if (strcmp(argv[2], "-") != 0)
            setenv("LD_PRELOAD", argv[2], 1);
        else
            unsetenv("LD_PRELOAD");
        execv(argv[3], argv + 3);
        perror("execv");
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            perror("wait4");
            return 2;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    FILE *f = fopen(argv[1], "w");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    fprintf(f, "maxrss_kb %ld\nwall_s %.6f\ncpu_s %.6f\n", ru.ru_maxrss,
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9,
            (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6);
    if (WIFSIGNALED(status))
        fprintf(f, "signal %d\n", WTERMSIG(status));
    else
        fprintf(f, "exit %d\n", WEXITSTATUS(status));
    fclose(f);
    return 0;
}
