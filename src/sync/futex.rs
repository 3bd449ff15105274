//! Futex wait and wake on a 32-bit atomic word.
//!
//! A futex lets a thread sleep in the kernel until another thread wakes it,
//! keyed by the address of a word in memory. [`wait`] compares the word with
//! the value the caller last saw and goes to sleep only if they are still
//! equal; the kernel makes that comparison and the enqueueing of the sleeper
//! one atomic step with respect to [`wake_one`] and [`wake_all`] on the same
//! word. That is what closes the check-then-sleep race: a waker that changes
//! the word *before* waking either makes the comparison fail (the waiter
//! does not sleep) or finds the waiter already queued (the waiter is woken).
//!
//! The operations are the process-private ones (`FUTEX_*_PRIVATE`): the words
//! are never shared with another process, which lets the kernel skip the
//! shared-mapping lookup.
//!
//! [`wait`] may return without a wake (a signal, a changed word, or a
//! spurious wake-up): callers re-check their condition in a loop.
//!
//! errno is preserved: the allocator runs inside `malloc` and `free`, whose
//! callers must not see errno change behind their back.
//!
//! Under `--cfg loom` the system calls are replaced by a model with the same
//! semantics that loom can check (see `model` below).

use super::AtomicU32;

/// Sleeps until `word` is woken, unless it no longer holds `expected`.
///
/// Returns when woken by [`wake_one`] or [`wake_all`], immediately if `word`
/// differs from `expected`, and sometimes for no reason (signals, spurious
/// wake-ups). The caller re-checks its condition and calls again if needed.
#[inline]
pub fn wait(word: &AtomicU32, expected: u32) {
    imp::wait(word, expected);
}

/// Like [`wait`], but returns after at most `timeout_ms` milliseconds.
#[cfg(not(loom))]
#[inline]
pub fn wait_timeout(word: &AtomicU32, expected: u32, timeout_ms: u64) {
    imp::wait_timeout(word, expected, timeout_ms);
}

/// Wakes at most one thread sleeping on `word`; returns how many were woken.
#[inline]
pub fn wake_one(word: &AtomicU32) -> usize {
    imp::wake(word, 1)
}

/// Wakes every thread sleeping on `word`; returns how many were woken.
#[inline]
pub fn wake_all(word: &AtomicU32) -> usize {
    imp::wake(word, i32::MAX)
}

/// The real futex: Linux system calls.
#[cfg(not(loom))]
mod imp {
    use super::AtomicU32;

    // libc has the parts but not these combinations.
    const FUTEX_WAIT_PRIVATE: i32 = libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG;
    const FUTEX_WAKE_PRIVATE: i32 = libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG;

    pub(super) fn wait(word: &AtomicU32, expected: u32) {
        // Every outcome (woken, EAGAIN because the word changed, EINTR) is a
        // return to the caller's loop, so the result is not inspected.
        futex(word, FUTEX_WAIT_PRIVATE, expected as i32, core::ptr::null());
    }

    pub(super) fn wait_timeout(word: &AtomicU32, expected: u32, timeout_ms: u64) {
        let timeout = libc::timespec {
            tv_sec: (timeout_ms / 1000) as libc::time_t,
            tv_nsec: ((timeout_ms % 1000) * 1_000_000) as libc::c_long,
        };
        // As for `wait`; ETIMEDOUT is one more way back to the caller's loop.
        futex(word, FUTEX_WAIT_PRIVATE, expected as i32, &timeout);
    }

    pub(super) fn wake(word: &AtomicU32, count: i32) -> usize {
        // Waking cannot fail on a valid word; a negative result would mean
        // "nobody was woken" all the same.
        usize::try_from(futex(word, FUTEX_WAKE_PRIVATE, count, core::ptr::null())).unwrap_or(0)
    }

    /// `futex(word, op, value, timeout, NULL, 0)`, with errno left as it was.
    fn futex(
        word: &AtomicU32,
        op: i32,
        value: i32,
        timeout: *const libc::timespec,
    ) -> libc::c_long {
        // SAFETY: __errno_location returns this thread's errno slot, valid for
        // the whole life of the thread.
        let errno = unsafe { libc::__errno_location() };
        // SAFETY: `errno` points to this thread's errno (see above).
        let saved = unsafe { *errno };
        // SAFETY: `word` is a live, aligned 32-bit atomic for the duration of
        // the call, and the kernel only reads it (FUTEX_WAIT) or uses its
        // address as a key (FUTEX_WAKE). A null timeout means "no timeout";
        // the last two arguments are ignored by these operations; `timeout`
        // is null or points to a live timespec (a relative one for WAIT).
        let result = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                op,
                value,
                timeout,
                core::ptr::null::<u32>(),
                0u32,
            )
        };
        // SAFETY: as above; restores the caller's errno.
        unsafe { *errno = saved };
        result
    }
}

/// A loom-checkable model of the futex, with the kernel's semantics.
///
/// A table of sleepers `(word address, thread)` stands for the kernel's
/// futex queues, and a loom mutex for its hash-bucket lock: [`wait`] compares
/// the word and registers itself under that mutex, then parks; a wake removes
/// the sleepers registered on that word, under the same mutex, and unparks
/// them. A wake that lands between the registration and the `park` leaves
/// loom's park token behind, so `park` returns at once, exactly as the kernel
/// never misses a waiter that it has queued. A sleeper nobody wakes stays
/// parked, which loom reports as a deadlock: lost wake-ups are caught.
///
/// Only the model's own bookkeeping allocates; it is never part of the
/// allocator (it exists only in builds with `--cfg loom`).
#[cfg(loom)]
mod imp {
    use super::AtomicU32;
    use core::sync::atomic::Ordering::SeqCst;
    use loom::sync::Mutex;
    use loom::thread::Thread;

    /// At most this many threads sleep at once (loom's own thread limit).
    const MAX_SLEEPERS: usize = loom::MAX_THREADS;

    type Sleepers = [Option<(usize, Thread)>; MAX_SLEEPERS];

    loom::lazy_static! {
        /// The "kernel" futex queues, one table for every word.
        static ref SLEEPERS: Mutex<Sleepers> = Mutex::new(Default::default());
    }

    fn key(word: &AtomicU32) -> usize {
        core::ptr::from_ref(word).addr()
    }

    pub(super) fn wait(word: &AtomicU32, expected: u32) {
        let me = loom::thread::current();
        {
            let mut sleepers = SLEEPERS.lock().unwrap();
            // The kernel reads the word behind a full barrier.
            if word.load(SeqCst) != expected {
                return;
            }
            let free = sleepers
                .iter_mut()
                .find(|entry| entry.is_none())
                .expect("futex model: more sleepers than loom threads");
            *free = Some((key(word), me.clone()));
        }
        loom::thread::park();
        // Leave no stale registration behind if loom ever returned from
        // `park` without an unpark (a spurious wake-up, which is allowed).
        let mut sleepers = SLEEPERS.lock().unwrap();
        for entry in sleepers.iter_mut() {
            if entry.as_ref().is_some_and(|(_, t)| t.id() == me.id()) {
                *entry = None;
            }
        }
    }

    pub(super) fn wake(word: &AtomicU32, count: i32) -> usize {
        let mut sleepers = SLEEPERS.lock().unwrap();
        let mut woken = 0;
        for entry in sleepers.iter_mut() {
            if woken == count as usize {
                break;
            }
            if entry.as_ref().is_some_and(|(k, _)| *k == key(word)) {
                if let Some((_, thread)) = entry.take() {
                    thread.unpark();
                }
                woken += 1;
            }
        }
        woken
    }
}
