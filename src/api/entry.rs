//! The behaviour behind both front doors: the CMA API (last error per
//! thread, error codes) and the malloc family (errno), over the heap layer.

use core::ffi::{c_char, c_void};
use core::ptr;

use crate::api::error::CmaError;
use crate::config::MIN_ALIGN;
use crate::diag::{self, Call, HeapError};
use crate::heap::realloc::ReallocError;
use crate::heap::{alloc, free, realloc};
use crate::os::errno;
use crate::settings;
use crate::stats;
use crate::tls;

fn record(error: CmaError) {
    tls::set_last_error(error as u32);
}

fn code_of(error: HeapError) -> CmaError {
    match error {
        HeapError::InvalidPointer => CmaError::CmaErrorInvalidPointer,
        HeapError::DoubleFree => CmaError::CmaErrorDoubleFree,
        HeapError::Corrupted | HeapError::Overflow | HeapError::UseAfterFree => {
            CmaError::CmaErrorCorrupted
        }
        HeapError::SizeMismatch => CmaError::CmaErrorInvalidArgument,
    }
}

/// Records success or out-of-memory for an allocation result.
fn record_alloc(block: *mut u8) -> *mut c_void {
    record(if block.is_null() {
        CmaError::CmaErrorOutOfMemory
    } else {
        CmaError::CmaOk
    });
    block.cast()
}

// ---- shared by both front doors ------------------------------------------

/// calloc's size computation; None on overflow.
pub fn array_size(count: usize, size: usize) -> Option<usize> {
    count.checked_mul(size)
}

/// True for a valid alignment: a power of two (0 is not).
pub fn is_power_of_two(align: usize) -> bool {
    align.is_power_of_two()
}

/// Frees `ptr`, ending the process with a diagnostic naming `call` when it
/// is not a live block.
///
/// # Safety
/// Any pointer may be passed; see `heap::free::free`.
#[inline(always)]
pub unsafe fn free_or_die(ptr: *mut c_void, call: Call) {
    // SAFETY: forwarded; the heap layer validates the pointer.
    unsafe { free::free(ptr.cast(), call) }
}

/// No memory for the request (or it is over the limit).
pub struct OutOfMemory;

/// realloc with glibc semantics (`realloc(p, 0)` frees and returns NULL).
/// Invalid pointers end the process; on `OutOfMemory` the old block is
/// intact.
pub fn realloc_or_die(
    ptr: *mut c_void,
    size: usize,
    call: Call,
) -> Result<*mut c_void, OutOfMemory> {
    if ptr.is_null() {
        let block = alloc::allocate(size, MIN_ALIGN, false);
        return if block.is_null() {
            Err(OutOfMemory)
        } else {
            Ok(block.cast())
        };
    }
    if size == 0 {
        // SAFETY: validated by the heap layer.
        unsafe { free::free(ptr.cast(), call) };
        return Ok(ptr::null_mut());
    }
    match realloc::realloc(ptr.cast(), size, call) {
        Ok(block) => Ok(block.cast()),
        Err(ReallocError::OutOfMemory) => Err(OutOfMemory),
        Err(ReallocError::Heap(error)) => diag::fatal(call, ptr as usize, error),
    }
}

/// Frees `ptr` after checking that it was allocated with `size` bytes
/// (and `align`): a sized free with another size is diagnosed like any other
/// misuse. A block may have been resized in place by realloc, so any size
/// realloc would have left in this block is accepted too.
///
/// # Safety
/// Any pointer may be passed; see `heap::free::free`.
pub unsafe fn free_sized_or_die(ptr: *mut c_void, size: usize, align: usize, call: Call) {
    if ptr.is_null() {
        return;
    }
    let usable = match free::usable_size(ptr.cast()) {
        Ok(usable) => usable,
        Err(error) => diag::fatal(call, ptr as usize, error),
    };
    let fits_class = usable == alloc::usable_size_for(size, align);
    let kept_by_realloc = size <= usable && size > usable / 2;
    if !fits_class && !kept_by_realloc {
        diag::fatal(call, ptr as usize, HeapError::SizeMismatch);
    }
    // SAFETY: validated above.
    unsafe { free::free(ptr.cast(), call) }
}

/// The usable size of a live block (0 for null); invalid pointers end the
/// process.
pub fn usable_size_or_die(ptr: *const c_void, call: Call) -> usize {
    if ptr.is_null() {
        return 0;
    }
    match free::usable_size(ptr.cast()) {
        Ok(size) => size,
        Err(error) => diag::fatal(call, ptr as usize, error),
    }
}

// ---- the CMA API -----------------------------------------------------------

pub fn cma_malloc(size: usize) -> *mut c_void {
    record_alloc(alloc::malloc(size, allocate_aligned_16))
}

fn allocate_aligned_16(size: usize) -> *mut u8 {
    alloc::allocate(size, MIN_ALIGN, false)
}

pub fn cma_calloc(count: usize, size: usize) -> *mut c_void {
    match array_size(count, size) {
        Some(bytes) => record_alloc(alloc::allocate(bytes, MIN_ALIGN, true)),
        None => {
            record(CmaError::CmaErrorInvalidArgument);
            ptr::null_mut()
        }
    }
}

/// # Safety
/// See `cma_realloc` in src/api/cma.rs.
pub unsafe fn cma_realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    match realloc_or_die(ptr, size, Call::CmaRealloc) {
        Ok(block) => {
            record(CmaError::CmaOk);
            block
        }
        Err(OutOfMemory) => {
            record(CmaError::CmaErrorOutOfMemory);
            ptr::null_mut()
        }
    }
}

/// # Safety
/// See `cma_free` in src/api/cma.rs.
pub unsafe fn cma_free(ptr: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { free_or_die(ptr, Call::CmaFree) };
    record(CmaError::CmaOk);
}

/// # Safety
/// Any pointer may be passed.
pub unsafe fn cma_checked_free(ptr: *mut c_void) -> CmaError {
    let result = match free::free_checked(ptr.cast(), Call::CmaCheckedFree) {
        Ok(()) => CmaError::CmaOk,
        Err(error) => code_of(error),
    };
    record(result);
    result
}

pub fn cma_aligned_alloc(alignment: usize, size: usize) -> *mut c_void {
    if !is_power_of_two(alignment) {
        record(CmaError::CmaErrorInvalidArgument);
        return ptr::null_mut();
    }
    record_alloc(alloc::allocate(size, alignment.max(MIN_ALIGN), false))
}

/// # Safety
/// See `cma_block_size` in src/api/cma.rs.
pub unsafe fn cma_block_size(ptr: *const c_void) -> usize {
    let size = usable_size_or_die(ptr, Call::CmaBlockSize);
    record(CmaError::CmaOk);
    size
}

/// # Safety
/// `out_size` must be null or valid for a write.
pub unsafe fn cma_checked_block_size(ptr: *const c_void, out_size: *mut usize) -> CmaError {
    let result = if out_size.is_null() {
        Err(CmaError::CmaErrorInvalidArgument)
    } else if ptr.is_null() {
        Ok(0)
    } else {
        free::usable_size(ptr.cast()).map_err(code_of)
    };
    let code = match result {
        Ok(size) => {
            // SAFETY: checked non-null; the caller guarantees it is writable.
            unsafe { *out_size = size };
            CmaError::CmaOk
        }
        Err(code) => code,
    };
    record(code);
    code
}

/// # Safety
/// `src` must be valid for reading `n` bytes.
pub unsafe fn cma_memdup(src: *const c_void, n: usize) -> *mut c_void {
    if src.is_null() && n > 0 {
        record(CmaError::CmaErrorInvalidArgument);
        return ptr::null_mut();
    }
    let block = alloc::malloc(n, allocate_aligned_16);
    if !block.is_null() && n > 0 {
        // SAFETY: `src` is readable for n bytes (caller), `block` writable.
        unsafe { ptr::copy_nonoverlapping(src.cast::<u8>(), block, n) };
    }
    record_alloc(block)
}

/// # Safety
/// `s` must be null or a NUL-terminated string.
pub unsafe fn cma_strdup(s: *const c_char) -> *mut c_char {
    if s.is_null() {
        record(CmaError::CmaErrorInvalidArgument);
        return ptr::null_mut();
    }
    // SAFETY: NUL-terminated per the contract.
    let len = unsafe { libc::strlen(s) };
    // SAFETY: `len + 1` bytes are readable.
    unsafe { cma_memdup(s.cast(), len + 1).cast() }
}

/// # Safety
/// Each pointer must be null or valid for a write.
pub unsafe fn cma_get_extended_stats(
    allocs: *mut usize,
    frees: *mut usize,
    current_bytes: *mut usize,
    peak_bytes: *mut usize,
) {
    let snapshot = stats::read();
    for (out, value) in [
        (allocs, snapshot.allocs),
        (frees, snapshot.frees),
        (current_bytes, snapshot.current_bytes),
        (peak_bytes, snapshot.peak_bytes),
    ] {
        if !out.is_null() {
            // SAFETY: non-null out-pointers are writable (caller contract).
            unsafe { *out = value as usize };
        }
    }
    record(CmaError::CmaOk);
}

pub fn cma_set_alloc_limit(limit: usize) {
    settings::set_alloc_limit(limit);
    crate::heap::thread::refresh_fast_bound();
    record(CmaError::CmaOk);
}

pub fn cma_set_thread_safety(enabled: bool) {
    settings::set_thread_safety(enabled);
    record(CmaError::CmaOk);
}

pub fn cma_is_thread_safe_enabled() -> bool {
    record(CmaError::CmaOk);
    settings::thread_safety()
}

pub fn cma_last_error() -> CmaError {
    CmaError::from_code(tls::last_error())
}

pub fn cma_error_string(code: i32) -> *const c_char {
    record(CmaError::CmaOk);
    let text: &'static core::ffi::CStr = match code {
        0 => c"success",
        1 => c"out of memory",
        2 => c"invalid argument",
        3 => c"invalid pointer",
        4 => c"double free",
        5 => c"corrupted heap metadata",
        _ => c"unknown error",
    };
    text.as_ptr()
}

/// Sets errno to ENOMEM and returns null (the malloc family's failure).
pub fn out_of_memory() -> *mut c_void {
    errno::set(libc::ENOMEM);
    ptr::null_mut()
}
