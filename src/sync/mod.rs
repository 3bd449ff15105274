//! Synchronisation primitives that never allocate: futex wait/wake and the
//! FIFO ticket lock that guards CMA's shared core.
//!
//! The lock protocol in a paragraph: a thread takes a ticket from
//! `next_ticket` and owns the lock when `now_serving` reaches its ticket;
//! unlocking advances `now_serving` by one, so the lock is handed over in
//! ticket order. The waiter next in line spins briefly; the others, and it
//! too once its spin runs out, sleep on a futex *slot* chosen by their
//! ticket (`ticket % 32`) after setting that slot's bit in a sleeper bitmap
//! kept in the same atomic word as `now_serving`. Unlocking is a single
//! atomic add on that word, which also tells the unlocker whether the next
//! ticket's slot has a sleeper: only then does it bump the slot's futex word
//! and wake it, so an uncontended unlock makes no system call, and a
//! contended one wakes the next ticket holder and (almost always) no one
//! else. [`ticket_lock`] has the details and the no-lost-wake-up argument.
//!
//! Nothing here allocates, and the lock is usable inside `malloc`.
//!
//! Under `--cfg loom` (the model-checking build of `tests/loom_*.rs`), the
//! atomics come from loom and the futex is a loom model with the kernel's
//! semantics, so loom explores the protocol's interleavings.

pub mod futex;
pub mod peek;
pub mod ticket_lock;

pub use ticket_lock::{LockStats, TicketGuard, TicketLock};

// The primitives the lock is built from: `core`'s, or loom's model-checked
// ones in a loom build.
#[cfg(not(loom))]
use core::{
    hint::spin_loop,
    sync::atomic::{AtomicU32, AtomicU64},
};
#[cfg(loom)]
use loom::{
    hint::spin_loop,
    sync::atomic::{AtomicU32, AtomicU64},
};
