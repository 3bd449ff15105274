//! Heap-error diagnostics. A detected misuse either ends the process at once
//! with one line on stderr (this module) or, through the `cma_checked_*`
//! functions, becomes an error code. Callers must have released every lock
//! before calling `fatal`: an abort handler that allocates must not find the
//! heap locked.

use crate::os::stderr::Line;

/// What was wrong with a pointer or the heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapError {
    /// Not a block CMA handed out (foreign, interior, misaligned).
    InvalidPointer,
    /// The block is already free.
    DoubleFree,
    /// CMA's metadata or a free block's link was damaged.
    Corrupted,
    /// The canary after a block's usable size was overwritten (secure mode).
    Overflow,
    /// A sized free (free_sized, sized operator delete) named a size the
    /// block was not allocated with.
    SizeMismatch,
    UseAfterFree,
}

impl HeapError {
    pub const fn reason(self) -> &'static str {
        match self {
            HeapError::InvalidPointer => "invalid pointer",
            HeapError::DoubleFree => "double free",
            HeapError::Corrupted => "corrupted heap metadata",
            HeapError::Overflow => "buffer overflow past the end of the block",
            HeapError::SizeMismatch => "size does not match the block",
            HeapError::UseAfterFree => "freed block written to (use after free)",
        }
    }
}

/// The API call that found a problem, named in the diagnostic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Malloc,
    Free,
    FreeSized,
    Realloc,
    UsableSize,
    CmaFree,
    CmaCheckedFree,
    CmaRealloc,
    CmaBlockSize,
    OperatorDelete,
    /// A thread's exit, which empties its secure-mode quarantine.
    ThreadExit,
}

impl Call {
    pub const fn name(self) -> &'static str {
        match self {
            Call::Malloc => "malloc",
            Call::Free => "free",
            Call::FreeSized => "free_sized",
            Call::Realloc => "realloc",
            Call::UsableSize => "malloc_usable_size",
            Call::CmaFree => "cma_free",
            Call::CmaCheckedFree => "cma_checked_free",
            Call::CmaRealloc => "cma_realloc",
            Call::CmaBlockSize => "cma_block_size",
            Call::OperatorDelete => "operator delete",
            Call::ThreadExit => "thread_exit",
        }
    }
}

/// Reports `error` about `ptr` found in `call`, then aborts the process.
/// Writes one line without allocating:
/// `cma: free(): double free (pointer 0x..., thread 1234)`.
#[cold]
#[inline(never)]
pub fn fatal(call: Call, ptr: usize, error: HeapError) -> ! {
    let mut line = Line::new();
    line.str("cma: ")
        .str(call.name())
        .str("(): ")
        .str(error.reason())
        .str(" (pointer ")
        .hex(ptr)
        .str(", thread ")
        .dec(current_thread_id())
        .str(")\n");
    line.write_to_stderr();
    abort()
}

/// Reports an internal failure that leaves CMA unable to continue safely
/// (for example, its own metadata cannot be mapped), then aborts.
#[cold]
#[inline(never)]
pub fn fatal_internal(message: &str) -> ! {
    let mut line = Line::new();
    line.str("cma: ")
        .str(message)
        .str(" (thread ")
        .dec(current_thread_id())
        .str(")\n");
    line.write_to_stderr();
    abort()
}

/// Prints a one-line warning (settings problems and the like).
#[cold]
pub fn warn(parts: &[&[u8]]) {
    let mut line = Line::new();
    line.str("cma: warning: ");
    for part in parts {
        line.bytes(part);
    }
    line.str("\n");
    line.write_to_stderr();
}

/// Ends the process with SIGABRT. The signal is raised even if the program
/// blocked or ignored it, so a heap error can never be survived by accident.
fn abort() -> ! {
    // SAFETY: abort(3) has no preconditions and does not return.
    unsafe { libc::abort() }
}

/// The kernel's id of the calling thread (as shown by ps -L, gdb, /proc).
pub fn current_thread_id() -> u64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}
