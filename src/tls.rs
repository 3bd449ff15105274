//! Thread-local state, stored in C with the initial-exec TLS model (see
//! csrc/tls.c): reading it never calls into the dynamic loader and never
//! allocates, so it is safe from inside malloc on any thread, at any time.

/// Mirror of `struct cma_tls` in csrc/tls.c.
#[repr(C)]
pub struct ThreadState {
    /// The thread's heap: `thread::NO_HEAP` (which owns nothing) until the
    /// thread's first allocation, and again after it exits.
    pub heap: *mut crate::heap::Heap,
    pub last_error: u32,
    /// `INTERNAL` and `EXITED`.
    pub flags: u32,
}

/// While set, the thread's allocation slow path records its blocks as CMA's
/// own (libc allocating on CMA's behalf), which statistics leave out.
pub const INTERNAL: u32 = 1;
/// Set once the thread's exit destructor has run: it allocates through the
/// core from then on, and does not take a heap again.
pub const EXITED: u32 = 2;

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

/// Returns the calling thread's heap pointer (`thread::NO_HEAP` while it
/// has none). On x86_64 this is two instructions, no call.
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

/// Marks (or unmarks) the calling thread as allocating on CMA's behalf.
pub fn set_internal(on: bool) {
    // SAFETY: `state()` is valid for the calling thread.
    unsafe {
        let flags = &mut (*state()).flags;
        *flags = if on {
            *flags | INTERNAL
        } else {
            *flags & !INTERNAL
        };
    }
}

/// True while the calling thread allocates on CMA's behalf.
pub fn is_internal() -> bool {
    // SAFETY: `state()` is valid for the calling thread.
    unsafe { (*state()).flags & INTERNAL != 0 }
}

/// Marks the calling thread as past its exit destructor.
pub fn set_exited() {
    // SAFETY: `state()` is valid for the calling thread.
    unsafe { (*state()).flags |= EXITED }
}

/// True once the calling thread's exit destructor has run.
pub fn has_exited() -> bool {
    // SAFETY: `state()` is valid for the calling thread.
    unsafe { (*state()).flags & EXITED != 0 }
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
