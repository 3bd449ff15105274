/* child.h: waiting for a forked child with a deadline (the fork tests).
 *
 * A child that deadlocks after fork (say, on a lock some other thread held
 * when the parent forked) must fail the test, not hang it.
 */
#ifndef CMA_TESTS_CHILD_H
#define CMA_TESTS_CHILD_H

#include <signal.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

#define CHILD_HUNG (-1)
#define CHILD_WAIT_FAILED (-2)

/* Waits up to 10 s for the child; a child still running then is hung: it is
 * killed. Returns its wait status, CHILD_HUNG or CHILD_WAIT_FAILED. */
static inline int wait_child(pid_t pid)
{
    const struct timespec tick = {0, 200 * 1000};
    for (int i = 0; i < 50000; i++) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0)
            return CHILD_WAIT_FAILED;
        nanosleep(&tick, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return CHILD_HUNG;
}

/* Describes what wait_child returned; `exit_codes` explains the program's
 * own exit statuses. */
static inline void describe_status(char *out, size_t size, int status, const char *exit_codes)
{
    if (status == CHILD_HUNG)
        snprintf(out, size, "hung for 10 s (killed)");
    else if (status == CHILD_WAIT_FAILED)
        snprintf(out, size, "waitpid failed");
    else if (WIFSIGNALED(status))
        snprintf(out, size, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(out, size, "exit status %d (%s)", WEXITSTATUS(status), exit_codes);
}

#endif
