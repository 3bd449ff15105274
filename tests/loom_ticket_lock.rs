//! loom model of the ticket lock: every interleaving (up to a preemption
//! bound) of three threads locking and unlocking, with the futex replaced by
//! loom's model of it.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release --test loom_ticket_lock`.
//!
//! loom reports a lost wake-up as a deadlock (every thread parked), and a
//! broken mutual exclusion as a data race on the `UnsafeCell` counter.
//!
//! The models use locks with one or two futex wait slots (the real lock has
//! 32): with two, an unlock must wake the right slot; with one, all waiters
//! share it, as tickets `t` and `t + 32` do when more than 32 threads wait,
//! and a wake must not strand the next ticket holder.
#![cfg(loom)]

use cma::sync::TicketLock;
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::SeqCst;

/// Runs `body` under loom, exploring every interleaving with at most
/// `preemptions` preemptions (`None`: all interleavings).
fn check(preemptions: Option<usize>, body: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = preemptions;
    builder.check(body);
}

/// The preemption bound of the three-thread models: 4 takes seconds, 5 most
/// of a minute.
const THREE_THREAD_PREEMPTIONS: Option<usize> = Some(4);

type Counter = TicketLock<(UnsafeCell<u64>, AtomicBool)>;

/// A lock around a zero counter whose waiters use `slots` wait slots.
fn counter(slots: usize) -> Arc<Counter> {
    Arc::new(TicketLock::with_wait_slots(
        (UnsafeCell::new(0), AtomicBool::new(false)),
        slots,
    ))
}

/// The counter's value, read under the lock.
fn total(lock: &Counter) -> u64 {
    // SAFETY: we hold the lock, which serialises every access.
    lock.lock().0.with(|count| unsafe { *count })
}

/// The critical section: a non-atomic increment (loom checks that no two
/// run concurrently) and a flag that must never be seen set on entry.
fn increment(lock: &Counter) {
    let guard = lock.lock();
    let (count, inside) = &*guard;
    assert!(
        !inside.swap(true, SeqCst),
        "two threads in the critical section"
    );
    // SAFETY: the lock serialises every access to the counter; loom verifies
    // that these accesses are ordered by happens-before.
    count.with_mut(|count| unsafe { *count += 1 });
    inside.store(false, SeqCst);
}

/// Three threads (the model's main thread and two more) each take the lock
/// once; the lock has `slots` wait slots.
fn three_threads_lock_once(slots: usize) {
    let lock = counter(slots);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let lock = lock.clone();
            loom::thread::spawn(move || increment(&lock))
        })
        .collect();
    increment(&lock);
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(total(&lock), 3);
    let stats = lock.stats();
    assert_eq!(stats.acquisitions, 4);
    assert!(stats.max_queue <= 2, "{stats:?}");
    assert_eq!(lock.queue_len(), 0);
}

#[test]
fn three_threads_two_wait_slots() {
    check(THREE_THREAD_PREEMPTIONS, || three_threads_lock_once(2));
}

#[test]
fn three_threads_share_one_wait_slot() {
    check(THREE_THREAD_PREEMPTIONS, || three_threads_lock_once(1));
}

#[test]
fn two_threads_lock_twice_each() {
    // Tickets 0..4 over two slots: each slot is reused, so its epoch and
    // sleeper bit go through several hand-overs. Exhaustive.
    check(None, || {
        let lock = counter(2);
        let other = {
            let lock = lock.clone();
            loom::thread::spawn(move || {
                increment(&lock);
                increment(&lock);
            })
        };
        increment(&lock);
        increment(&lock);
        other.join().unwrap();
        assert_eq!(total(&lock), 4);
    });
}

#[test]
fn try_lock_never_enters_a_held_lock() {
    check(None, || {
        let lock = counter(2);
        let other = {
            let lock = lock.clone();
            loom::thread::spawn(move || increment(&lock))
        };
        let took = lock.try_lock().map(|guard| {
            let (count, inside) = &*guard;
            assert!(!inside.load(SeqCst), "try_lock entered a held lock");
            // SAFETY: serialised by the lock, as in `increment`.
            count.with_mut(|count| unsafe { *count += 1 });
        });
        other.join().unwrap();
        assert_eq!(total(&lock), 1 + u64::from(took.is_some()));
    });
}
