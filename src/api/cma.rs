//! The CMA API: the functions of `include/cma.h`.
//!
//! Every function records the calling thread's last error (`cma_last_error`):
//! `CMA_OK` on success, the reason otherwise. Misuse that the unchecked
//! functions detect (`cma_free` of an invalid pointer, say) ends the process
//! with a diagnostic, exactly like `free`; the `cma_checked_*` functions
//! return the error instead and leave the heap usable.

use core::ffi::{c_char, c_void};

use crate::api::entry;
use crate::api::error::CmaError;

/// Allocates `size` bytes aligned to 16. `cma_malloc(0)` returns a unique,
/// freeable block. Returns NULL with `CMA_ERROR_OUT_OF_MEMORY` when memory is
/// exhausted or `size` exceeds the limit of `cma_set_alloc_limit`.
#[unsafe(no_mangle)]
pub extern "C" fn cma_malloc(size: usize) -> *mut c_void {
    entry::cma_malloc(size)
}

/// Allocates a zeroed array of `count` elements of `size` bytes. Returns NULL
/// with `CMA_ERROR_INVALID_ARGUMENT` when `count * size` overflows.
#[unsafe(no_mangle)]
pub extern "C" fn cma_calloc(count: usize, size: usize) -> *mut c_void {
    entry::cma_calloc(count, size)
}

/// Resizes `ptr` to `size` bytes, moving it if needed. `cma_realloc(NULL, n)`
/// is `cma_malloc(n)`; `cma_realloc(p, 0)` frees `p` and returns NULL. On
/// failure it returns NULL, records the reason and leaves `ptr` intact.
///
/// # Safety
/// `ptr` must be NULL or a live block from this allocator; an invalid or
/// freed pointer ends the process with a diagnostic.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cma_realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded contract, the entry layer validates the pointer.
    unsafe { entry::cma_realloc(ptr, size) }
}

/// Frees a block. NULL is ignored. An invalid pointer or a double free ends
/// the process with a one-line diagnostic on stderr.
///
/// # Safety
/// `ptr` must be NULL or a live block from this allocator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cma_free(ptr: *mut c_void) {
    // SAFETY: forwarded contract, the entry layer validates the pointer.
    unsafe { entry::cma_free(ptr) }
}

/// Frees a block and reports what happened instead of ending the process:
/// `CMA_OK` (also for NULL), `CMA_ERROR_INVALID_POINTER`,
/// `CMA_ERROR_DOUBLE_FREE` or `CMA_ERROR_CORRUPTED`. On an error nothing is
/// freed, no lock is held and the heap stays usable.
///
/// # Safety
/// Any pointer value may be passed; only blocks of this allocator are freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cma_checked_free(ptr: *mut c_void) -> CmaError {
    // SAFETY: the checked path validates the pointer before touching it.
    unsafe { entry::cma_checked_free(ptr) }
}

/// Allocates `size` bytes aligned to `alignment`, which must be a power of
/// two (any size, unlike C11's aligned_alloc). Returns NULL with
/// `CMA_ERROR_INVALID_ARGUMENT` for a bad alignment.
#[unsafe(no_mangle)]
pub extern "C" fn cma_aligned_alloc(alignment: usize, size: usize) -> *mut c_void {
    entry::cma_aligned_alloc(alignment, size)
}

/// Returns the usable size of a live block (at least the requested size),
/// or 0 for NULL. An invalid pointer ends the process with a diagnostic; use
/// `cma_checked_block_size` to get an error code instead.
///
/// # Safety
/// `ptr` must be NULL or a live block from this allocator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cma_block_size(ptr: *const c_void) -> usize {
    // SAFETY: forwarded contract, the entry layer validates the pointer.
    unsafe { entry::cma_block_size(ptr) }
}

/// Stores the usable size of `ptr` in `*out_size` and returns `CMA_OK`, or
/// returns `CMA_ERROR_INVALID_POINTER` / `CMA_ERROR_DOUBLE_FREE` (a freed
/// block) / `CMA_ERROR_INVALID_ARGUMENT` (NULL `out_size`) and leaves
/// `*out_size` untouched. NULL `ptr` gives size 0.
///
/// # Safety
/// `out_size` must be NULL or valid for a write; `ptr` may be any value.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cma_checked_block_size(
    ptr: *const c_void,
    out_size: *mut usize,
) -> CmaError {
    // SAFETY: forwarded contract.
    unsafe { entry::cma_checked_block_size(ptr, out_size) }
}

/// Returns a new block holding a copy of the `n` bytes at `src`. With
/// `n == 0` it returns a freeable block. A NULL `src` with `n > 0` returns
/// NULL with `CMA_ERROR_INVALID_ARGUMENT`.
///
/// # Safety
/// `src` must be valid for reading `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cma_memdup(src: *const c_void, n: usize) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { entry::cma_memdup(src, n) }
}

/// Returns a new block holding a copy of the NUL-terminated string `s`.
/// NULL `s` returns NULL with `CMA_ERROR_INVALID_ARGUMENT`.
///
/// # Safety
/// `s` must be NULL or point to a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cma_strdup(s: *const c_char) -> *mut c_char {
    // SAFETY: forwarded contract.
    unsafe { entry::cma_strdup(s) }
}

/// Reads the process-wide counters of successful allocations and frees
/// (every entry point counts: the malloc family and the cma_ API). Exact
/// whenever no other thread is allocating. NULL out-pointers are skipped.
///
/// # Safety
/// Each pointer must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cma_get_stats(allocs: *mut usize, frees: *mut usize) {
    // SAFETY: forwarded contract.
    unsafe {
        entry::cma_get_extended_stats(allocs, frees, core::ptr::null_mut(), core::ptr::null_mut())
    }
}

/// Like `cma_get_stats`, and also the bytes currently allocated (usable
/// sizes of live blocks) and the peak of that figure.
///
/// # Safety
/// Each pointer must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cma_get_extended_stats(
    allocs: *mut usize,
    frees: *mut usize,
    current_bytes: *mut usize,
    peak_bytes: *mut usize,
) {
    // SAFETY: forwarded contract.
    unsafe { entry::cma_get_extended_stats(allocs, frees, current_bytes, peak_bytes) }
}

/// Makes every later request larger than `limit` bytes fail with
/// `CMA_ERROR_OUT_OF_MEMORY` (errno ENOMEM for the malloc family) before any
/// shared state is touched. 0 removes the limit. Process-wide.
#[unsafe(no_mangle)]
pub extern "C" fn cma_set_alloc_limit(limit: usize) {
    entry::cma_set_alloc_limit(limit)
}

/// Records whether the caller wants the shared core locked. CMA keeps its
/// locking on in every case where skipping it could corrupt the heap, which
/// is every case once per-thread caches exist: the lock guards only the
/// rare core operations, so turning it off would gain nothing. The setting is
/// reported back by `cma_is_thread_safe_enabled`.
#[unsafe(no_mangle)]
pub extern "C" fn cma_set_thread_safety(enabled: bool) {
    entry::cma_set_thread_safety(enabled)
}

/// Returns the setting last made with `cma_set_thread_safety` (true at start).
#[unsafe(no_mangle)]
pub extern "C" fn cma_is_thread_safe_enabled() -> bool {
    entry::cma_is_thread_safe_enabled()
}

/// Returns the error recorded by the calling thread's last `cma_*` call.
#[unsafe(no_mangle)]
pub extern "C" fn cma_last_error() -> CmaError {
    entry::cma_last_error()
}

/// Returns a static, NUL-terminated description of an error code (of
/// `CmaError`; unknown codes give "unknown error").
#[unsafe(no_mangle)]
pub extern "C" fn cma_error_string(code: i32) -> *const c_char {
    entry::cma_error_string(code)
}
