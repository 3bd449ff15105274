//! A FIFO ticket lock that sleeps on futexes, for CMA's shared core.
//!
//! # Protocol
//!
//! Two counters order the threads: `next_ticket` (the ticket the next
//! arrival takes) and `now_serving` (the ticket that owns the lock). To lock,
//! a thread takes `t = next_ticket++` and waits until `now_serving == t`; to
//! unlock, it does `now_serving += 1`. Tickets are served in the order they
//! were taken, so no thread starves.
//!
//! A waiter that is next in line first spins a little (`SPIN_LIMIT` = 100
//! checks): the lock is likely to come within one short critical section.
//! Waiters further back cannot get it that soon, so they sleep at once and
//! leave the CPU to the holder.
//!
//! Sleepers use `SLOTS` = 32 futex words, the *wait slots*: ticket `t`
//! sleeps on slot `t % SLOTS`, so that an unlock can wake the next ticket
//! holder and nobody else. A slot's futex word is an *epoch* that the
//! unlocker bumps before waking the slot.
//!
//! `now_serving` lives in the high 32 bits of one 64-bit atomic word,
//! `serving`, whose low `SLOTS` bits are the *sleeper bitmap*: bit `s` says
//! "someone may be asleep on slot `s`". So a single atomic read-modify-write
//! both hands the lock over and tells the unlocker whether the next ticket's
//! slot has a sleeper: an uncontended unlock makes no system call, and a
//! contended one wakes the next ticket's slot only if someone sleeps there.
//!
//! Waiter with ticket `t`, on slot `s = t % SLOTS`, bit `b = 1 << s`:
//!
//! ```text
//! loop {
//!     D: e = slots[s].load()              // the epoch, read first
//!     E: w = serving.fetch_or(b)          // register as a sleeper, and look
//!        if now_serving(w) == t: return   // our turn: the lock is ours
//!     F: futex_wait(slots[s], e)          // sleep unless the epoch moved
//!        if now_serving(serving.load()) == t: return
//! }
//! ```
//!
//! Unlocker, handing over to ticket `n` (its own plus one), slot
//! `s = n % SLOTS`, bit `b = 1 << s`:
//!
//! ```text
//!     A: w = serving.fetch_add(1 << 32)   // now_serving = n: lock released
//!        if w & b == 0: return            // nobody asleep on slot s
//!     G: serving.fetch_and(!b)            // clear the bit ...
//!     B: slots[s].fetch_add(1)            // ... bump the epoch ...
//!     C: futex_wake_all(slots[s])         // ... and wake the slot
//! ```
//!
//! # Why no wake-up is lost
//!
//! Take a waiter W with ticket `t` that runs E and sees that `t` is not
//! served. The unlock that serves `t` runs A later than E in the modification
//! order of `serving` (A made `now_serving == t`, and E did not see it).
//! Between E and A, W's bit is either still set when A reads it, or was
//! cleared by some G in between.
//!
//! 1. A sees the bit: that unlocker runs G, B and C. E is a release and A
//!    an acquire that reads E's write or a later one in its release sequence
//!    (every write to `serving` is a read-modify-write, except in
//!    `fork_child`, where no other thread exists), so D happens before B:
//!    W's epoch `e` predates B. Then the futex's
//!    atomic compare-and-enqueue settles the race: either F compares after B
//!    and returns at once, or W is queued before B, hence before C, and C
//!    wakes it. W then finds `now_serving == t` or loops.
//! 2. A G in between cleared the bit (an unlocker handing over to another
//!    ticket of the same slot). By the same argument with G in place of A,
//!    that unlocker's B and C come after W read its epoch, so W's F returns
//!    (woken, or not sleeping at all); W loops and re-registers with a fresh
//!    E, and the argument starts again from the new E.
//!
//! Each wake-up makes W run E again, and every unlocker clears bits only
//! before bumping and waking, so a cleared registration always comes with a
//! wake of its slot: W never sleeps with its ticket served. Waking the whole
//! slot, not one thread, matters when more than `SLOTS` threads wait:
//! tickets `t` and `t + SLOTS` then share a slot, and a single wake could
//! pick the wrong one and strand `t`. The others just re-register and sleep.
//!
//! A bit may stay set after its waiter has got the lock (it saw its turn at
//! E): the next unlock to that slot then makes one needless wake. That is
//! the price of never clearing bits on the waiter's side, which could erase
//! another waiter's registration.
//!
//! `tests/loom_ticket_lock.rs` checks this protocol with loom, on locks of
//! one and two slots. (loom does not explore load buffering, so the
//! acquire/release pairs of E with A and G rest on the argument above.)
//!
//! Tickets are `u32` and wrap; `SLOTS` divides 2³², so `t % SLOTS` is
//! unchanged by wrapping. At most 2³² − 1 threads may queue at once.
//!
//! # Owner, fork, statistics
//!
//! The holder's identity (`pthread_self`) is recorded so that a thread
//! locking twice aborts with a diagnostic instead of deadlocking silently.
//! The `fork_*` methods serve `pthread_atfork` handlers. Statistics are
//! updated by the holder, under the lock, with plain loads and stores (no
//! read-modify-write on the uncontended path).

use super::{AtomicU32, AtomicU64, futex, spin_loop};
use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
// The owner and the statistics are not part of the hand-over protocol (only
// the holder writes them), so they are `core` atomics even under loom, which
// keeps loom's models small.
use core::sync::atomic as plain;

/// Number of futex wait slots (a power of two, at most 32: one bit each in
/// the low half of `serving`).
#[cfg(not(loom))]
const SLOTS: usize = 32;
/// Under loom, at most two slots, so that a few threads already share one;
/// a model picks one or two with [`TicketLock::with_wait_slots`].
#[cfg(loom)]
const SLOTS: usize = 2;

/// How many times the next-in-line waiter checks `now_serving` before going
/// to sleep.
#[cfg(not(loom))]
const SPIN_LIMIT: u32 = 100;
/// Under loom, one check: spinning only multiplies the interleavings.
#[cfg(loom)]
const SPIN_LIMIT: u32 = 1;

/// One ticket, in the units of the `serving` word.
const ONE_TICKET: u64 = 1 << 32;

const _: () = assert!(SLOTS.is_power_of_two() && SLOTS <= 32);

/// `now_serving` from the `serving` word.
fn now_serving(serving: u64) -> u32 {
    (serving >> 32) as u32
}

/// A FIFO ticket lock protecting a `T`; waiters sleep on futexes.
///
/// Only a [`TicketGuard`] holds it: the lock is released when the guard is
/// dropped. Locking it twice from one thread aborts the process with a
/// diagnostic.
pub struct TicketLock<T: ?Sized> {
    /// The ticket the next arrival takes.
    next_ticket: AtomicU32,
    /// `now_serving << 32 | sleeper bitmap` (see the module docs).
    serving: AtomicU64,
    /// The holder's thread id, 0 when the lock is free.
    owner: plain::AtomicUsize,
    /// The futex words waiters sleep on: one epoch per slot.
    slots: [AtomicU32; SLOTS],
    /// How many of the slots are used: a loom model may use fewer.
    #[cfg(loom)]
    slots_used: usize,
    /// Contention statistics, written only by the holder.
    stats: Counters,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to the `T` to one thread at a time, so
// sharing the lock moves the `T` between threads: that needs `T: Send`, and
// nothing more (as for `std::sync::Mutex`).
unsafe impl<T: ?Sized + Send> Sync for TicketLock<T> {}
// SAFETY: the lock owns its `T`, and its other fields are atomics.
unsafe impl<T: ?Sized + Send> Send for TicketLock<T> {}

/// Contention statistics of a [`TicketLock`], from [`TicketLock::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockStats {
    /// Times the lock was taken (by `lock` or `try_lock`).
    pub acquisitions: u64,
    /// Acquisitions that found the lock held and had to wait (spin or sleep).
    pub contended: u64,
    /// Futex waits made by waiters (each one a trip to the kernel).
    pub futex_waits: u64,
    /// The longest queue an arrival met: tickets ahead of its own, the
    /// holder's included (0 when it found the lock free).
    pub max_queue: u32,
}

/// The live counters behind [`LockStats`].
///
/// Only the lock holder writes them, so each update is a plain load and
/// store; readers get a consistent-enough snapshot without taking the lock.
struct Counters {
    acquisitions: plain::AtomicU64,
    contended: plain::AtomicU64,
    futex_waits: plain::AtomicU64,
    max_queue: plain::AtomicU32,
}

impl Counters {
    const fn new() -> Self {
        Self {
            acquisitions: plain::AtomicU64::new(0),
            contended: plain::AtomicU64::new(0),
            futex_waits: plain::AtomicU64::new(0),
            max_queue: plain::AtomicU32::new(0),
        }
    }
}

/// How one acquisition went, for the statistics.
#[derive(Clone, Copy)]
struct Arrival {
    /// Tickets ahead of ours when we took it.
    queue: u32,
    /// Futex waits made while waiting.
    futex_waits: u64,
}

impl<T> TicketLock<T> {
    /// Creates an unlocked lock holding `value`.
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Self {
        Self {
            next_ticket: AtomicU32::new(0),
            serving: AtomicU64::new(0),
            owner: plain::AtomicUsize::new(0),
            slots: [const { AtomicU32::new(0) }; SLOTS],
            stats: Counters::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// Creates an unlocked lock holding `value` (loom's atomics are not
    /// `const`).
    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        Self::with_wait_slots(value, SLOTS)
    }

    /// Creates an unlocked lock holding `value` whose waiters use only
    /// `slots` (1 or 2) wait slots: with one, every waiter shares a slot;
    /// with two, a wake must pick the right one. Only in loom models.
    #[cfg(loom)]
    pub fn with_wait_slots(value: T, slots: usize) -> Self {
        assert!(slots.is_power_of_two() && slots <= SLOTS);
        Self {
            next_ticket: AtomicU32::new(0),
            serving: AtomicU64::new(0),
            owner: plain::AtomicUsize::new(0),
            slots: core::array::from_fn(|_| AtomicU32::new(0)),
            slots_used: slots,
            stats: Counters::new(),
            data: UnsafeCell::new(value),
        }
    }
}

impl<T: ?Sized> TicketLock<T> {
    /// Takes the lock, waiting in FIFO order behind earlier arrivals.
    ///
    /// Aborts the process with a diagnostic if this thread already holds
    /// the lock (that would deadlock).
    pub fn lock(&self) -> TicketGuard<'_, T> {
        let me = current_thread();
        // Only this thread ever stores `me` here, and it clears it before
        // releasing the lock, so seeing `me` means we hold the lock.
        if self.owner.load(Relaxed) == me {
            fatal(b"cma: ticket lock: self-deadlock: this thread already holds the lock\n");
        }
        let ticket = self.next_ticket.fetch_add(1, Relaxed);
        let serving = now_serving(self.serving.load(Acquire));
        let mut arrival = Arrival {
            queue: ticket.wrapping_sub(serving),
            futex_waits: 0,
        };
        if serving != ticket {
            arrival.futex_waits = self.wait_for_turn(ticket);
        }
        self.acquired(me, arrival)
    }

    /// Takes the lock if it is free and nobody is queued; never waits.
    ///
    /// Returns `None` if the lock is held, including by this thread.
    pub fn try_lock(&self) -> Option<TicketGuard<'_, T>> {
        let me = current_thread();
        let serving = now_serving(self.serving.load(Acquire));
        // Taking ticket `serving` when it is the next one to hand out means
        // nobody holds or awaits the lock: `now_serving` can only move past
        // our ticket when we unlock, so the lock is ours.
        self.next_ticket
            .compare_exchange(serving, serving.wrapping_add(1), Relaxed, Relaxed)
            .ok()?;
        let arrival = Arrival {
            queue: 0,
            futex_waits: 0,
        };
        Some(self.acquired(me, arrival))
    }

    /// A snapshot of the contention statistics.
    pub fn stats(&self) -> LockStats {
        let stats = &self.stats;
        LockStats {
            acquisitions: stats.acquisitions.load(Relaxed),
            contended: stats.contended.load(Relaxed),
            futex_waits: stats.futex_waits.load(Relaxed),
            max_queue: stats.max_queue.load(Relaxed),
        }
    }

    /// A snapshot of how many threads hold or wait for the lock (the number
    /// of tickets taken and not yet released).
    pub fn queue_len(&self) -> u32 {
        let serving = now_serving(self.serving.load(Relaxed));
        self.next_ticket.load(Relaxed).wrapping_sub(serving)
    }

    /// `pthread_atfork` prepare handler: takes the lock and keeps it held
    /// across `fork`, so the child gets the protected data in a consistent
    /// state. Follow with [`fork_parent`](Self::fork_parent) in the parent
    /// and [`fork_child`](Self::fork_child) in the child.
    pub fn fork_prepare(&self) {
        core::mem::forget(self.lock());
    }

    /// `pthread_atfork` parent handler: releases the lock taken by
    /// [`fork_prepare`](Self::fork_prepare).
    ///
    /// Aborts with a diagnostic if this thread does not hold the lock.
    ///
    /// # Safety
    ///
    /// The lock was taken by `fork_prepare` on this thread, and no guard of
    /// it is alive: the hold that `fork_prepare` kept is given up here.
    pub unsafe fn fork_parent(&self) {
        self.expect_held(b"cma: ticket lock: fork_parent: this thread does not hold the lock\n");
        self.unlock();
    }

    /// `pthread_atfork` child handler: makes the lock free again in the
    /// child, forgetting the parent's waiters (they do not exist here).
    ///
    /// Aborts with a diagnostic if this thread does not hold the lock.
    ///
    /// # Safety
    ///
    /// Called in a freshly forked child, by the thread that forked, after
    /// [`fork_prepare`](Self::fork_prepare) took the lock in the parent; no
    /// guard of it is alive. The child has only this thread, so nobody else
    /// can be using the lock.
    pub unsafe fn fork_child(&self) {
        self.expect_held(b"cma: ticket lock: fork_child: this thread does not hold the lock\n");
        // Tickets restart at 0; the statistics are kept, as history.
        self.owner.store(0, Relaxed);
        self.next_ticket.store(0, Relaxed);
        for slot in &self.slots {
            slot.store(0, Relaxed);
        }
        self.serving.store(0, Release);
    }

    /// The slot that `ticket` sleeps on.
    fn slot_of(&self, ticket: u32) -> usize {
        #[cfg(not(loom))]
        let slots = SLOTS;
        #[cfg(loom)]
        let slots = self.slots_used;
        ticket as usize % slots
    }

    /// The sleeper-bitmap bit of `ticket`'s slot.
    fn sleeper_bit(&self, ticket: u32) -> u64 {
        1 << self.slot_of(ticket)
    }

    /// Waits (spins, then sleeps) until `ticket` is served; returns how many
    /// futex waits that took. See the module docs for the protocol: the
    /// labels D, E, F are the waiter's steps there.
    #[cold]
    fn wait_for_turn(&self, ticket: u32) -> u64 {
        // Spin only while next in line: only then can the lock come soon.
        for _ in 0..SPIN_LIMIT {
            spin_loop();
            let serving = now_serving(self.serving.load(Acquire));
            if serving == ticket {
                return 0;
            }
            if ticket.wrapping_sub(serving) > 1 {
                break;
            }
        }
        let slot = &self.slots[self.slot_of(ticket)];
        let bit = self.sleeper_bit(ticket);
        let mut futex_waits = 0;
        loop {
            // D: read the epoch before registering, so that any wake of the
            // slot issued after our registration is seen by `futex::wait`.
            let epoch = slot.load(Relaxed);
            // E: register as a sleeper on the slot and check our turn, in one
            // step. Release pairs with the unlocker's acquire at A or G.
            let serving = self.serving.fetch_or(bit, AcqRel);
            if now_serving(serving) == ticket {
                return futex_waits;
            }
            // F: sleep unless the slot was bumped since D.
            futex::wait(slot, epoch);
            futex_waits += 1;
            if now_serving(self.serving.load(Acquire)) == ticket {
                return futex_waits;
            }
        }
    }

    /// Records the new holder and the statistics; makes the guard.
    fn acquired(&self, me: usize, arrival: Arrival) -> TicketGuard<'_, T> {
        self.owner.store(me, Relaxed);
        let stats = &self.stats;
        // We hold the lock: nobody else writes the counters now.
        let acquisitions = stats.acquisitions.load(Relaxed);
        stats.acquisitions.store(acquisitions + 1, Relaxed);
        if arrival.queue != 0 {
            let contended = stats.contended.load(Relaxed);
            stats.contended.store(contended + 1, Relaxed);
            let waits = stats.futex_waits.load(Relaxed);
            stats
                .futex_waits
                .store(waits + arrival.futex_waits, Relaxed);
            if arrival.queue > stats.max_queue.load(Relaxed) {
                stats.max_queue.store(arrival.queue, Relaxed);
            }
        }
        TicketGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Releases the lock to the next ticket and wakes it if it sleeps. Only
    /// the guard's `Drop` and `fork_parent` call it, on behalf of the holder.
    fn unlock(&self) {
        self.owner.store(0, Relaxed);
        // A: hand over. Release publishes the critical section to the next
        // holder; acquire pairs with waiters' registrations (E).
        let serving = self.serving.fetch_add(ONE_TICKET, AcqRel);
        let next = now_serving(serving).wrapping_add(1);
        if serving & self.sleeper_bit(next) != 0 {
            self.wake_slot(next);
        }
    }

    /// Wakes everyone asleep on `ticket`'s slot (steps G, B, C of the
    /// protocol).
    #[cold]
    fn wake_slot(&self, ticket: u32) {
        // G: clear the bit first: a waiter registering after this keeps its
        // bit, and one registered before is woken by B and C below.
        self.serving.fetch_and(!self.sleeper_bit(ticket), AcqRel);
        let slot = &self.slots[self.slot_of(ticket)];
        // B: move the epoch, so that a waiter between its D and F does not
        // go to sleep ...
        slot.fetch_add(1, Release);
        // C: ... and wake those already asleep. Wake them all: a later ticket
        // sharing the slot must not take the only wake-up.
        futex::wake_all(slot);
    }

    /// Aborts with `message` unless this thread holds the lock.
    fn expect_held(&self, message: &[u8]) {
        if self.owner.load(Relaxed) != current_thread() {
            fatal(message);
        }
    }
}

impl<T: ?Sized> fmt::Debug for TicketLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketLock")
            .field("queue_len", &self.queue_len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Proof that this thread holds a [`TicketLock`]; gives access to the data
/// and releases the lock when dropped.
///
/// Not `Send`: the lock belongs to the thread that took it.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct TicketGuard<'a, T: ?Sized> {
    lock: &'a TicketLock<T>,
    /// Makes the guard `!Send`: the owner id is the locking thread's.
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a shared guard only gives out `&T`, which is safe to share between
// threads when `T: Sync`.
unsafe impl<T: ?Sized + Sync> Sync for TicketGuard<'_, T> {}

impl<T: ?Sized> Deref for TicketGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard proves we hold the lock, so no other reference
        // to the data exists, and `&self` only lends a shared one.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for TicketGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves we hold the lock, and `&mut self` makes
        // this the only reference to the data.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for TicketGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for TicketGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// This thread's identity, never 0.
#[cfg(not(loom))]
fn current_thread() -> usize {
    // SAFETY: pthread_self has no preconditions and cannot fail. After fork,
    // the child's only thread keeps the forking thread's id.
    unsafe { libc::pthread_self() as usize }
}

/// This thread's identity, never 0. loom runs its threads on one OS thread,
/// so `pthread_self` cannot tell them apart: number them instead.
#[cfg(loom)]
fn current_thread() -> usize {
    static NEXT_ID: plain::AtomicUsize = plain::AtomicUsize::new(1);
    loom::thread_local! {
        static ID: usize = NEXT_ID.fetch_add(1, Relaxed);
    }
    ID.with(|id| *id)
}

/// Writes `message` to stderr and aborts. Allocates nothing.
#[cold]
fn fatal(message: &[u8]) -> ! {
    // SAFETY: `message` is a valid buffer of `message.len()` bytes; a short
    // or failed write to stderr is acceptable on the way to abort.
    unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}
