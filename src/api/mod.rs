//! The C ABI: the `cma_*` API of include/cma.h and, with the `override`
//! feature, the malloc family that replaces the system allocator.

pub mod cma;
#[cfg(all(feature = "override", not(loom)))]
pub mod cxx;
pub mod entry;
pub mod error;
pub mod global_alloc;
#[cfg(all(feature = "override", not(loom)))]
pub mod introspection;
#[cfg(all(feature = "override", not(loom)))]
pub mod malloc_family;
