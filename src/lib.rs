//! CMA: a fast, hardened general-purpose memory allocator.
//!
//! Layers, bottom to top (each a module):
//! - [`os`]: the operating system: mmap/munmap/madvise, environment, stderr.
//! - [`sync`]: futex wait/wake and the FIFO ticket lock guarding the core.
//! - `core`: the shared heap core (segments, spans, huge blocks, ownership
//!   map), every mutation under the ticket lock.
//! - `heap`: per-thread heaps in front of the core; the malloc/free fast paths.
//! - `api`: the C ABI: the malloc family (LD_PRELOAD) and the `cma_*` API.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

// The allocator itself uses only `core` (the crate is `no_std`, so nothing
// can allocate by accident). std is linked for its panic handler (with
// panic = "abort") and for the tests.
extern crate std;

pub mod os;
pub mod sync;
