//! Thread-local state, stored in C with the initial-exec TLS model (see
//! csrc/tls.c): reading it never calls into the dynamic loader and never
//! allocates, so it is safe from inside malloc on any thread, at any time.

use core::sync::atomic::AtomicUsize;
#[cfg(not(target_arch = "x86_64"))]
use core::sync::atomic::Ordering;

/// Mirror of `struct cma_tls` in csrc/tls.c.
#[repr(C)]
pub struct ThreadState {
    pub heap: *mut crate::heap::Heap,
    /// malloc requests below this size take the fast path. 0 until the
    /// thread has a heap (so the fast path needs no null check), and again
    /// after it exits. Written by other threads too (`set_alloc_limit`).
    pub fast_bound: AtomicUsize,
    pub last_error: u32,
    /// `INTERNAL`: the thread is inside CMA's own use of libc (see
    /// `set_internal`).
    pub flags: u32,
}

/// While set, the thread's allocation slow path records its blocks as CMA's
/// own (libc allocating on CMA's behalf), which statistics leave out.
pub const INTERNAL: u32 = 1;

unsafe extern "C" {
    fn cma_tls_get() -> *mut ThreadState;
}

/// Returns the calling thread's state block.
#[inline(always)]
pub fn state() -> *mut ThreadState {
    // SAFETY: cma_tls_get returns the address of the calling thread's
    // initial-exec TLS block, valid for the thread's whole life.
    unsafe { cma_tls_get() }
}

/// Returns the calling thread's heap pointer and fast-path bound (see
/// `ThreadState`). On x86_64 this is three instructions, no call.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn heap_and_bound() -> (*mut crate::heap::Heap, usize) {
    let heap: *mut crate::heap::Heap;
    let bound: usize;
    // SAFETY: the initial-exec access sequence for `cma_tls_state` (see
    // `heap`), reading its first two words.
    unsafe {
        core::arch::asm!(
            "mov {b}, qword ptr [rip + cma_tls_state@GOTTPOFF]",
            "mov {h}, qword ptr fs:[{b}]",
            "mov {b}, qword ptr fs:[{b} + 8]",
            h = out(reg) heap,
            b = out(reg) bound,
            options(nostack, readonly, preserves_flags, pure),
        );
    }
    (heap, bound)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn heap_and_bound() -> (*mut crate::heap::Heap, usize) {
    // SAFETY: `state()` is valid for the calling thread.
    unsafe {
        (
            (*state()).heap,
            (*state()).fast_bound.load(Ordering::Relaxed),
        )
    }
}

/// Returns the calling thread's heap pointer (null before its first
/// allocation). On x86_64 this is two instructions, no call.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn heap() -> *mut crate::heap::Heap {
    let heap: *mut crate::heap::Heap;
    // SAFETY: the exact initial-exec access sequence the C compiler emits
    // for `cma_tls_state.heap` (offset 0 of the struct): load the variable's
    // offset from the thread pointer out of the GOT, then read through fs.
    unsafe {
        core::arch::asm!(
            "mov {h}, qword ptr [rip + cma_tls_state@GOTTPOFF]",
            "mov {h}, qword ptr fs:[{h}]",
            h = out(reg) heap,
            options(nostack, readonly, preserves_flags, pure),
        );
    }
    heap
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn heap() -> *mut crate::heap::Heap {
    // SAFETY: `state()` is valid for the calling thread.
    unsafe { (*state()).heap }
}

/// Sets the calling thread's heap pointer.
#[inline]
pub fn set_heap(heap: *mut crate::heap::Heap) {
    // SAFETY: `state()` is valid for the calling thread.
    unsafe { (*state()).heap = heap }
}

/// The calling thread's fast-path bound, for registering with its heap.
pub fn fast_bound_slot() -> *const AtomicUsize {
    // SAFETY: `state()` is valid for the calling thread.
    unsafe { &(*state()).fast_bound }
}

/// Marks (or unmarks) the calling thread as allocating on CMA's behalf.
pub fn set_internal(on: bool) {
    // SAFETY: `state()` is valid for the calling thread.
    unsafe { (*state()).flags = if on { INTERNAL } else { 0 } }
}

/// True while the calling thread allocates on CMA's behalf.
pub fn is_internal() -> bool {
    // SAFETY: `state()` is valid for the calling thread.
    unsafe { (*state()).flags & INTERNAL != 0 }
}

/// Records the calling thread's last CMA API error code.
#[inline]
pub fn set_last_error(code: u32) {
    // SAFETY: `state()` is valid for the calling thread.
    unsafe { (*state()).last_error = code }
}

/// Returns the calling thread's last CMA API error code.
#[inline]
pub fn last_error() -> u32 {
    // SAFETY: `state()` is valid for the calling thread.
    unsafe { (*state()).last_error }
}
