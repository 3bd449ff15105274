//! The malloc family, exported under the C library's names so that
//! LD_PRELOAD (or linking libcma) replaces the system allocator. glibc
//! semantics: 16-byte alignment for every size, malloc(0) a unique block,
//! errno ENOMEM on failure, EINVAL from posix_memalign for bad alignments,
//! free preserving errno.

use core::ffi::{c_int, c_void};
use core::ptr;

use crate::api::entry::{self, array_size, is_power_of_two, out_of_memory};
use crate::config::{MIN_ALIGN, OS_PAGE_SIZE};
use crate::diag::Call;
use crate::heap::alloc;

#[unsafe(no_mangle)]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    alloc::malloc(size, malloc_slow).cast()
}

#[inline(never)]
fn malloc_slow(size: usize) -> *mut u8 {
    let block = alloc::allocate(size, MIN_ALIGN, false);
    if block.is_null() {
        return out_of_memory().cast();
    }
    block
}

/// # Safety
/// `ptr` must be null or a live block; anything else ends the process with
/// a diagnostic.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: forwarded; validated by the heap layer.
    unsafe { entry::free_or_die(ptr, Call::Free) }
}

#[unsafe(no_mangle)]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    let Some(bytes) = array_size(count, size) else {
        return out_of_memory();
    };
    let block = alloc::allocate(bytes, MIN_ALIGN, true);
    if block.is_null() {
        return out_of_memory();
    }
    block.cast()
}

/// # Safety
/// `ptr` must be null or a live block.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    match entry::realloc_or_die(ptr, size, Call::Realloc) {
        Ok(block) => block,
        Err(entry::OutOfMemory) => out_of_memory(),
    }
}

/// # Safety
/// `ptr` must be null or a live block.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match array_size(count, size) {
        // SAFETY: forwarded contract.
        Some(bytes) => unsafe { realloc(ptr, bytes) },
        None => out_of_memory(),
    }
}

/// # Safety
/// `out` must be valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(
    out: *mut *mut c_void,
    alignment: usize,
    size: usize,
) -> c_int {
    if !is_power_of_two(alignment) || alignment % core::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    let block = alloc::allocate(size, alignment.max(MIN_ALIGN), false);
    if block.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller passes a writable out-pointer.
    unsafe { *out = block.cast() };
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn aligned_alloc(alignment: usize, size: usize) -> *mut c_void {
    if !is_power_of_two(alignment) {
        crate::os::errno::set(libc::EINVAL);
        return ptr::null_mut();
    }
    aligned(alignment, size)
}

/// glibc's memalign: an alignment that is not a power of two is rounded up
/// to one.
#[unsafe(no_mangle)]
pub extern "C" fn memalign(alignment: usize, size: usize) -> *mut c_void {
    let Some(alignment) = alignment.max(MIN_ALIGN).checked_next_power_of_two() else {
        return out_of_memory();
    };
    aligned(alignment, size)
}

#[unsafe(no_mangle)]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    aligned(OS_PAGE_SIZE, size)
}

/// Page-aligned, with the size rounded up to whole pages (1 page for 0).
#[unsafe(no_mangle)]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let Some(rounded) = size.max(1).checked_next_multiple_of(OS_PAGE_SIZE) else {
        return out_of_memory();
    };
    aligned(OS_PAGE_SIZE, rounded)
}

fn aligned(alignment: usize, size: usize) -> *mut c_void {
    let block = alloc::allocate(size, alignment.max(MIN_ALIGN), false);
    if block.is_null() {
        return out_of_memory();
    }
    block.cast()
}

/// # Safety
/// `ptr` must be null or a live block.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    entry::usable_size_or_die(ptr, Call::UsableSize)
}

/// C23 free_sized: frees a block allocated with `size` bytes.
///
/// # Safety
/// `ptr` must be null or a live block of at least `size` usable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free_sized(ptr: *mut c_void, size: usize) {
    // SAFETY: forwarded; validated by the entry layer.
    unsafe { entry::free_sized_or_die(ptr, size, MIN_ALIGN, Call::FreeSized) }
}

/// C23 free_aligned_sized: frees a block from aligned_alloc.
///
/// # Safety
/// `ptr` must be null or a live block.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free_aligned_sized(ptr: *mut c_void, alignment: usize, size: usize) {
    // SAFETY: forwarded; validated by the entry layer.
    unsafe { entry::free_sized_or_die(ptr, size, alignment.max(MIN_ALIGN), Call::FreeSized) }
}

/// Gives free memory back to the OS now: the calling thread's empty pages
/// and everything the core holds (`pad` is ignored: CMA keeps no top pad).
/// Returns 1 if memory was released, 0 otherwise, as glibc does.
#[unsafe(no_mangle)]
pub extern "C" fn malloc_trim(pad: usize) -> c_int {
    let _ = pad;
    let _errno = crate::os::errno::ErrnoGuard::save();
    (crate::purge::trim_now() > 0) as c_int
}
