//! CMA as a Rust program's global allocator:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: cma::Cma = cma::Cma;
//! ```
//!
//! Depend on the crate with `default-features = false, features = ["std"]`
//! unless the program should also replace the C malloc family.

use core::alloc::{GlobalAlloc, Layout};

use crate::config::MIN_ALIGN;
use crate::diag::{self, Call};
use crate::heap::{alloc, free, realloc};

/// The CMA allocator, for `#[global_allocator]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cma;

// SAFETY: the methods follow GlobalAlloc's contract: blocks are at least
// `layout.size()` bytes, aligned to `layout.align()`, valid until freed, and
// `dealloc`/`realloc` accept exactly what `alloc` returned. Misuse is caught
// and ends the process with a diagnostic rather than corrupting the heap.
unsafe impl GlobalAlloc for Cma {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            alloc::malloc(layout.size(), allocate_aligned_16)
        } else {
            alloc::allocate(layout.size(), layout.align(), false)
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        alloc::allocate(layout.size(), layout.align().max(MIN_ALIGN), true)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc contract); the
        // heap layer validates it all the same.
        unsafe { free::free(ptr, Call::Free) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() > MIN_ALIGN {
            // Keep the alignment: allocate, copy, free.
            // SAFETY: the new layout is valid (GlobalAlloc contract).
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            // SAFETY: forwarded contract.
            let new = unsafe { self.alloc(new_layout) };
            if !new.is_null() {
                // SAFETY: both blocks are live and at least this long.
                unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
                // SAFETY: `ptr` is live and from this allocator.
                unsafe { self.dealloc(ptr, layout) };
            }
            return new;
        }
        match realloc::realloc(ptr, new_size.max(1), Call::Realloc) {
            Ok(block) => block,
            Err(realloc::ReallocError::OutOfMemory) => core::ptr::null_mut(),
            Err(realloc::ReallocError::Heap(error)) => {
                diag::fatal(Call::Realloc, ptr as usize, error)
            }
        }
    }
}

fn allocate_aligned_16(size: usize) -> *mut u8 {
    alloc::allocate(size, MIN_ALIGN, false)
}
