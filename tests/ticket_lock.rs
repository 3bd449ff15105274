//! Tests of the futex ticket lock (`cma::sync`): mutual exclusion, FIFO
//! order, sleeping waiters, fork handlers, self-deadlock detection, and the
//! futex wrappers underneath.
//!
//! Every test runs under a watchdog: a hang (a lost wake-up) aborts the test
//! binary instead of stalling it. (Under `--cfg loom` the lock is loom's
//! model, tested by `loom_ticket_lock.rs` instead.)
#![cfg(not(loom))]

use cma::sync::{LockStats, TicketLock, futex};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `body` on its own thread; aborts the process if it takes longer
/// than `limit` (a hang must fail the run, not stall it).
fn with_timeout(limit: Duration, body: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        body();
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(limit) {
        // Finished, or panicked (the sender was dropped): join reports which.
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            // Straight to stderr: the harness's output capture dies with us.
            let _ = writeln!(
                std::io::stderr(),
                "{}: hung for {limit:?}: lost wake-up or deadlock",
                thread::current().name().unwrap_or("test")
            );
            std::process::abort();
        }
    }
}

/// Spins (yielding) until `condition` holds; panics after 10 s.
fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        thread::yield_now();
    }
}

// ---------------------------------------------------------------------------
// Mutual exclusion and order

static COUNTER: TicketLock<u64> = TicketLock::new(0);

#[test]
fn counter_is_exact_with_8_threads() {
    const THREADS: u64 = 8;
    const ROUNDS: u64 = 100_000;
    with_timeout(Duration::from_secs(60), || {
        // All threads start together, so that they really contend.
        let start = Barrier::new(THREADS as usize);
        thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    start.wait();
                    for _ in 0..ROUNDS {
                        let mut count = COUNTER.lock();
                        // A non-atomic read-modify-write: lost updates show
                        // up if two threads are ever inside together.
                        let seen = *count;
                        std::hint::black_box(&mut *count);
                        *count = seen + 1;
                    }
                });
            }
        });
        assert_eq!(*COUNTER.lock(), THREADS * ROUNDS);
        let stats = COUNTER.stats();
        assert_eq!(stats.acquisitions, THREADS * ROUNDS + 1);
        assert!(stats.contended <= stats.acquisitions);
        assert!(stats.max_queue < THREADS as u32);
        assert_eq!(COUNTER.queue_len(), 0);
    });
}

#[test]
fn tickets_are_served_in_the_order_taken() {
    const THREADS: u32 = 6;
    with_timeout(Duration::from_secs(20), || {
        let lock = Arc::new(TicketLock::new([u32::MAX; THREADS as usize]));
        let served = Arc::new(AtomicU32::new(0));
        let holder = lock.lock();
        let mut threads = Vec::new();
        for id in 0..THREADS {
            let (queued, served) = (Arc::clone(&lock), Arc::clone(&served));
            threads.push(thread::spawn(move || {
                let mut order = queued.lock();
                order[served.fetch_add(1, Relaxed) as usize] = id;
            }));
            // Thread `id` holds ticket `id + 1` before the next one starts:
            // the holder's ticket plus one per queued thread.
            wait_until("the thread to take its ticket", || {
                lock.queue_len() == id + 2
            });
        }
        drop(holder);
        for thread in threads {
            thread.join().unwrap();
        }
        let order = *lock.lock();
        assert_eq!(order, core::array::from_fn(|i| i as u32));
        assert_eq!(lock.stats().max_queue, THREADS);
        assert_eq!(lock.stats().contended, u64::from(THREADS));
    });
}

#[test]
fn waiters_sleep_in_the_kernel_when_the_holder_is_slow() {
    const THREADS: u64 = 4;
    const ROUNDS: u64 = 25;
    with_timeout(Duration::from_secs(20), || {
        let lock = TicketLock::new(0u64);
        let start = Barrier::new(THREADS as usize);
        thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    start.wait();
                    for _ in 0..ROUNDS {
                        let mut count = lock.lock();
                        // Far longer than the spin: waiters must sleep.
                        thread::sleep(Duration::from_micros(200));
                        *count += 1;
                    }
                });
            }
        });
        assert_eq!(*lock.lock(), THREADS * ROUNDS);
        let stats = lock.stats();
        assert_eq!(stats.acquisitions, THREADS * ROUNDS + 1);
        assert!(stats.contended > 0, "{stats:?}");
        assert!(stats.futex_waits > 0, "no waiter slept: {stats:?}");
        assert!(stats.max_queue >= 2, "{stats:?}");
    });
}

#[test]
fn more_waiters_than_wait_slots_share_slots_safely() {
    // More threads than the lock's 32 futex slots: tickets t and t + 32
    // sleep on the same slot, and waking it must not strand either.
    const THREADS: u64 = 40;
    const ROUNDS: u64 = 10;
    with_timeout(Duration::from_secs(20), || {
        let lock = TicketLock::new(0u64);
        let start = AtomicBool::new(false);
        thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    wait_until("the start", || start.load(Relaxed));
                    for _ in 0..ROUNDS {
                        let mut count = lock.lock();
                        thread::sleep(Duration::from_micros(20));
                        *count += 1;
                    }
                });
            }
            start.store(true, Relaxed);
        });
        assert_eq!(*lock.lock(), THREADS * ROUNDS);
        let stats = lock.stats();
        assert!(stats.futex_waits > 0, "{stats:?}");
        assert!(stats.max_queue <= THREADS as u32, "{stats:?}");
    });
}

#[test]
fn try_lock_takes_only_a_free_lock() {
    with_timeout(Duration::from_secs(10), || {
        let lock = TicketLock::new(5u32);
        {
            let mut value = lock.try_lock().expect("a free lock");
            *value += 1;
            assert!(lock.try_lock().is_none(), "held by this thread");
            thread::scope(|scope| {
                let other = scope.spawn(|| lock.try_lock().is_none());
                assert!(other.join().unwrap(), "held by another thread");
            });
            assert_eq!(lock.queue_len(), 1);
        }
        assert_eq!(*lock.try_lock().expect("free again"), 6);
        assert_eq!(*lock.lock(), 6);
        assert_eq!(lock.stats().acquisitions, 3);
        assert_eq!(lock.stats().contended, 0);
    });
}

#[test]
fn uncontended_use_records_no_contention() {
    let lock = TicketLock::new(());
    for _ in 0..1000 {
        drop(lock.lock());
    }
    let expected = LockStats {
        acquisitions: 1000,
        ..LockStats::default()
    };
    assert_eq!(lock.stats(), expected);
    assert_eq!(lock.queue_len(), 0);
}

// ---------------------------------------------------------------------------
// Fork and self-deadlock: child processes

/// How a child process ended, and what it wrote to stderr.
struct ChildOutcome {
    status: libc::c_int,
    stderr: Vec<u8>,
}

/// Forks; the child runs `child` with its stderr on a pipe, then `_exit`s
/// with the code `child` returns (if it returns). Waits at most 10 s for it.
///
/// `before_fork`/`after_fork_parent` run around `fork` in the parent, the
/// way `pthread_atfork` handlers would.
fn fork_child(
    before_fork: impl FnOnce(),
    after_fork_parent: impl FnOnce(),
    child: impl FnOnce() -> i32,
) -> ChildOutcome {
    let mut pipe = [0; 2];
    // SAFETY: `pipe` has room for the two descriptors.
    assert_eq!(
        unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) },
        0
    );
    let [read_end, write_end] = pipe;
    before_fork();
    // SAFETY: the child only calls async-signal-safe code (the lock, dup2,
    // write, _exit, abort) before it exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: plain descriptor operations in the child.
        unsafe {
            libc::dup2(write_end, 2);
            libc::close(read_end);
        }
        exit_child(child());
    }
    after_fork_parent();
    assert!(pid > 0, "fork failed");
    // SAFETY: closing our copy of the write end, so EOF can be seen.
    unsafe { libc::close(write_end) };

    let status = wait_for_exit(pid, Duration::from_secs(10));
    let mut stderr = Vec::new();
    // SAFETY: non-blocking reads into a local buffer: other tests' children
    // may hold a copy of the write end, so EOF may never come.
    unsafe {
        libc::fcntl(read_end, libc::F_SETFL, libc::O_NONBLOCK);
        let mut buffer = [0u8; 512];
        loop {
            let n = libc::read(read_end, buffer.as_mut_ptr().cast(), buffer.len());
            if n <= 0 {
                break;
            }
            stderr.extend_from_slice(&buffer[..n as usize]);
        }
        libc::close(read_end);
    }
    ChildOutcome { status, stderr }
}

/// `waitpid` with a time limit: kills the child and panics when exceeded.
fn wait_for_exit(pid: libc::pid_t, limit: Duration) -> libc::c_int {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if reaped == pid {
            return status;
        }
        assert_eq!(reaped, 0, "waitpid failed");
        if start.elapsed() > limit {
            // SAFETY: `pid` is our child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("child process hung for {limit:?}");
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Ends the child process with `code`, running nothing else.
fn exit_child(code: i32) -> ! {
    // SAFETY: _exit ends the process at once; nothing is left to run.
    unsafe { libc::_exit(code) }
}

#[test]
fn forked_child_can_lock_while_parent_threads_contend() {
    const FORKS: u32 = 20;
    with_timeout(Duration::from_secs(20), || {
        let lock = Arc::new(TicketLock::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let contenders: Vec<_> = (0..3)
            .map(|_| {
                let (lock, stop, rounds) = (lock.clone(), stop.clone(), rounds.clone());
                thread::spawn(move || {
                    while !stop.load(Relaxed) {
                        let mut count = lock.lock();
                        *count += 1;
                        rounds.fetch_add(1, Relaxed);
                    }
                })
            })
            .collect();
        wait_until("the contenders to run", || rounds.load(Relaxed) > 1000);

        for _ in 0..FORKS {
            let outcome = fork_child(
                || lock.fork_prepare(),
                // SAFETY: `fork_prepare` took the lock on this thread.
                || unsafe { lock.fork_parent() },
                || {
                    // SAFETY: the freshly forked child, on the forking
                    // thread, after `fork_prepare`.
                    unsafe { lock.fork_child() };
                    if lock.queue_len() != 0 {
                        return 2;
                    }
                    for _ in 0..3 {
                        let mut count = lock.lock();
                        *count += 1;
                    }
                    if lock.try_lock().is_none() {
                        return 3;
                    }
                    0
                },
            );
            assert!(
                libc::WIFEXITED(outcome.status) && libc::WEXITSTATUS(outcome.status) == 0,
                "child failed: status {:#x}, stderr {:?}",
                outcome.status,
                String::from_utf8_lossy(&outcome.stderr)
            );
        }

        stop.store(true, SeqCst);
        for contender in contenders {
            contender.join().unwrap();
        }
        // The children's increments stayed in the children.
        assert_eq!(*lock.lock(), rounds.load(SeqCst));
    });
}

/// Asserts that the child died of SIGABRT after writing exactly `message`.
fn assert_aborted_with(outcome: &ChildOutcome, message: &str) {
    assert!(
        libc::WIFSIGNALED(outcome.status) && libc::WTERMSIG(outcome.status) == libc::SIGABRT,
        "child was not aborted: status {:#x}",
        outcome.status
    );
    assert_eq!(String::from_utf8_lossy(&outcome.stderr), message);
}

#[test]
fn locking_twice_aborts_with_a_diagnostic() {
    with_timeout(Duration::from_secs(20), || {
        let lock = TicketLock::new(0u32);
        let outcome = fork_child(
            || {},
            || {},
            || {
                let _first = lock.lock();
                let _second = lock.lock();
                0
            },
        );
        assert_aborted_with(
            &outcome,
            "cma: ticket lock: self-deadlock: this thread already holds the lock\n",
        );
        // The parent's lock is untouched.
        assert_eq!(lock.queue_len(), 0);
    });
}

#[test]
fn fork_handlers_without_prepare_abort_with_a_diagnostic() {
    with_timeout(Duration::from_secs(20), || {
        let lock = TicketLock::new(0u32);
        let parent = fork_child(
            || {},
            || {},
            || {
                // SAFETY: deliberately broken: the lock is not held. The
                // lock must detect that and abort.
                unsafe { lock.fork_parent() };
                0
            },
        );
        assert_aborted_with(
            &parent,
            "cma: ticket lock: fork_parent: this thread does not hold the lock\n",
        );
        let child = fork_child(
            || {},
            || {},
            || {
                // SAFETY: deliberately broken, as above.
                unsafe { lock.fork_child() };
                0
            },
        );
        assert_aborted_with(
            &child,
            "cma: ticket lock: fork_child: this thread does not hold the lock\n",
        );
    });
}

// ---------------------------------------------------------------------------
// The futex wrappers

fn errno() -> i32 {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: i32) {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = value };
}

#[test]
fn futex_wait_returns_at_once_when_the_word_differs() {
    let word = AtomicU32::new(7);
    set_errno(1234);
    futex::wait(&word, 8); // the kernel says EAGAIN
    assert_eq!(errno(), 1234, "futex::wait changed errno");
    assert_eq!(futex::wake_all(&word), 0);
    assert_eq!(futex::wake_one(&word), 0);
    assert_eq!(errno(), 1234, "futex::wake changed errno");
}

#[test]
fn futex_wake_releases_a_sleeper() {
    with_timeout(Duration::from_secs(10), || {
        let word = AtomicU32::new(0);
        let asleep = AtomicBool::new(false);
        thread::scope(|scope| {
            scope.spawn(|| {
                asleep.store(true, SeqCst);
                while word.load(SeqCst) == 0 {
                    futex::wait(&word, 0);
                }
            });
            wait_until("the sleeper", || asleep.load(SeqCst));
            // Let it reach the kernel (not required for correctness).
            thread::sleep(Duration::from_millis(20));
            word.store(1, SeqCst);
            futex::wake_one(&word);
        });
    });
}
