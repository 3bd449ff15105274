//! CMA: a fast, hardened general-purpose memory allocator.
//!
//! Layers, bottom to top (each a module):
//! - [`os`]: the operating system: mmap/munmap/madvise, environment, stderr.
//! - [`sync`]: futex wait/wake and the FIFO ticket lock guarding the core.
//! - [`backend`]: the shared heap core (segments, spans, large and huge blocks,
//!   the ownership map, the heap registry), every mutation under the lock.
//! - [`heap`]: per-thread heaps in front of the core; the malloc and free
//!   fast paths.
//! - [`api`]: the C ABI: the `cma_*` API and the malloc family.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
// Without `override` (a Rust program using `cma::Cma` only), the pieces
// behind the C entry points (sized frees, malloc_trim, ...) go unused.
#![cfg_attr(not(feature = "override"), allow(dead_code))]

// The allocator itself uses only `core` (the crate is `no_std`, so nothing
// can allocate by accident). With the `std` feature (Rust users, tests),
// std supplies the panic handler; without it (the C libraries), CMA's own.
#[cfg(any(feature = "std", test))]
extern crate std;

/// A panic is a bug in CMA: say so in one line and end the process (panics
/// abort; nothing may unwind through the C ABI or allocate here).
#[cfg(not(any(feature = "std", test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    os::stderr::write_all(2, b"cma: internal error (panic); aborting\n");
    // SAFETY: abort(3) has no preconditions and does not return.
    unsafe { libc::abort() }
}

pub mod sync;

// The loom build (`--cfg loom`) model-checks the lock alone: the allocator
// needs `const` locks, which loom's atomics cannot give.
#[cfg(not(loom))]
mod api;
#[cfg(not(loom))]
mod backend;
#[cfg(not(loom))]
mod config;
#[cfg(not(loom))]
mod diag;
#[cfg(not(loom))]
mod heap;
#[cfg(not(loom))]
mod init;
#[cfg(not(loom))]
mod os;
#[cfg(not(loom))]
mod purge;
#[cfg(not(loom))]
mod report;
#[cfg(not(loom))]
mod settings;
#[cfg(not(loom))]
mod stats;
#[cfg(not(loom))]
mod tls;

#[cfg(not(loom))]
pub use api::error::CmaError;
#[cfg(not(loom))]
pub use api::global_alloc::Cma;
