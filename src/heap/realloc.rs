//! realloc: in place when the block's size class, its span's neighbours or
//! its mapping allow, else allocate, copy and free. A failed realloc leaves
//! the old block intact.

use core::ptr;

use crate::backend::page::Page;
use crate::backend::{self, guard, huge};
use crate::config::{LARGE_MAX, MEDIUM_MAX, MIN_ALIGN};
use crate::diag::{Call, HeapError};
use crate::heap::alloc;
use crate::heap::block::Block;
use crate::heap::free::{self, Location, locate};
use crate::heap::runs;
use crate::heap::secure;
use crate::settings;

pub enum ReallocError {
    /// `ptr` is not a live block.
    Heap(HeapError),
    /// No memory (or over the limit); the old block is untouched.
    OutOfMemory,
}

impl From<HeapError> for ReallocError {
    fn from(error: HeapError) -> ReallocError {
        ReallocError::Heap(error)
    }
}

/// Resizes the live block `ptr` (not null) to `size` bytes (not 0); `call`
/// is named if damage elsewhere is found on the way (see `free_checked`).
// Any pointer value may be passed: it is validated against CMA's metadata
// (`locate`) before its memory is read.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn realloc(ptr: *mut u8, size: usize, call: Call) -> Result<*mut u8, ReallocError> {
    let addr = ptr as usize;
    let location = locate(addr)?;
    let usable = match location {
        Location::Small(page) => {
            // SAFETY: a carved block of one of our pages.
            if unsafe { (*(addr as *const Block)).is_tagged_free() } || page.is_given(addr) {
                return Err(HeapError::DoubleFree.into());
            }
            secure::check(addr, page.block_size())?;
            secure::usable(page.block_size())
        }
        Location::Run(page, blocks) => runs::usable(page, blocks),
        Location::Large(page) => {
            if fits_its_slices(page, addr, size) {
                return Ok(ptr);
            }
            let mut core = backend::lock();
            let bytes = core.validate_large(page, addr)?;
            secure::check(addr, bytes)?;
            let padded = secure::padded(size);
            if padded > MEDIUM_MAX
                && padded <= LARGE_MAX
                && size <= settings::size_limit()
                && core.resize_large(page, padded)
            {
                secure::arm(ptr, page.block_size());
                return Ok(ptr);
            }
            secure::usable(bytes)
        }
        Location::Huge => {
            let usable = huge::usable_size(&backend::lock().freed, addr)?;
            if size > LARGE_MAX && size <= settings::size_limit() {
                return resize_huge(ptr, usable, size);
            }
            usable
        }
    };
    if size > settings::size_limit() {
        return Err(ReallocError::OutOfMemory);
    }
    if size <= usable && size > usable / 2 {
        return Ok(ptr);
    }
    let new = alloc::allocate(size, MIN_ALIGN, false);
    if new.is_null() {
        return Err(ReallocError::OutOfMemory);
    }
    // SAFETY: both blocks are live and at least `min(usable, size)` long.
    unsafe { ptr::copy_nonoverlapping(ptr, new, usable.min(size)) };
    free::free_checked(ptr, call)?;
    Ok(new)
}

/// True when `addr` is the live large block of `head` and `size` bytes
/// fill the same number of slices: the block is resized where it is with
/// nothing to change, and without the core lock (a chain of small steps on
/// a big buffer took the lock at every step). Any other case, and secure
/// mode or guard pages, go through the core.
fn fits_its_slices(head: &Page, addr: usize, size: usize) -> bool {
    !secure::enabled()
        && guard::bytes() == 0
        && head.is_large_block_at(addr)
        && size > MEDIUM_MAX
        && size <= LARGE_MAX
        && size <= settings::size_limit()
        && backend::large_slices(size) == head.slice_count()
}

/// Grows or shrinks a huge mapping, moving its pages (not copying bytes)
/// when it cannot grow where it is.
fn resize_huge(ptr: *mut u8, usable: usize, size: usize) -> Result<*mut u8, ReallocError> {
    if size <= usable && size > usable / 2 {
        return Ok(ptr);
    }
    let (base, map_len, _) = huge::detach(&mut backend::lock(), ptr as usize)?;
    let user = ptr as usize;
    let (new_base, new_len, new_user) = match huge::resize(base, map_len, user, size) {
        Some(resized) => resized,
        None => {
            huge::reattach(&mut backend::lock(), base, map_len, user);
            return Err(ReallocError::OutOfMemory);
        }
    };
    huge::reattach(&mut backend::lock(), new_base, new_len, new_user);
    Ok(new_user as *mut u8)
}
