//! The thread front end: per-thread heaps in front of the locked core, with
//! the malloc and free fast paths.

pub mod alloc;
pub mod backed_tails;
pub mod block;
pub mod collect;
pub mod free;
#[allow(clippy::module_inception)]
pub mod heap;
pub mod interiors;
pub mod page_ops;
pub mod realloc;
pub mod remote;
pub mod runs;
pub mod secure;
pub mod size_class;
pub mod thread;

pub use heap::Heap;

/// The exported C entry points, for the lib tests that drive the heap the
/// way a program does.
#[cfg(test)]
pub mod c_entry {
    unsafe extern "C" {
        pub fn malloc(size: usize) -> *mut u8;
        pub fn free(ptr: *mut u8);
    }
}
