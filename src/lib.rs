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

// The allocator itself uses only `core` (the crate is `no_std`, so nothing
// can allocate by accident). std is linked for its panic handler (with
// panic = "abort") and for the tests.
extern crate std;

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
mod settings;
#[cfg(not(loom))]
mod stats;
#[cfg(not(loom))]
mod tls;

#[cfg(not(loom))]
pub use api::error::CmaError;
