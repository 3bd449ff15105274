//! Error codes of the CMA API, and the per-thread "last error" they are
//! reported through.

/// Result of a CMA API call. Every `cma_*` function records one of these as
/// the calling thread's last error (see `cma_last_error`); `cma_checked_*`
/// functions also return it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmaError {
    /// The call succeeded.
    CmaOk = 0,
    /// Not enough memory, or the request exceeds the limit set with
    /// `cma_set_alloc_limit`.
    CmaErrorOutOfMemory = 1,
    /// An argument is invalid: a size computation overflows, an alignment is
    /// not a power of two, a NULL source with a non-zero length.
    CmaErrorInvalidArgument = 2,
    /// The pointer is not a block CMA handed out: foreign memory, a pointer
    /// into the middle of a block, a misaligned pointer.
    CmaErrorInvalidPointer = 3,
    /// The block was already freed.
    CmaErrorDoubleFree = 4,
    /// CMA found its own metadata, or the memory around a block, damaged.
    CmaErrorCorrupted = 5,
}

impl CmaError {
    /// Converts a raw code (as stored in thread-local state) back into the enum.
    pub const fn from_code(code: u32) -> CmaError {
        match code {
            0 => CmaError::CmaOk,
            1 => CmaError::CmaErrorOutOfMemory,
            2 => CmaError::CmaErrorInvalidArgument,
            3 => CmaError::CmaErrorInvalidPointer,
            4 => CmaError::CmaErrorDoubleFree,
            _ => CmaError::CmaErrorCorrupted,
        }
    }

    /// A short, static, human-readable description.
    pub const fn message(self) -> &'static str {
        match self {
            CmaError::CmaOk => "success",
            CmaError::CmaErrorOutOfMemory => "out of memory",
            CmaError::CmaErrorInvalidArgument => "invalid argument",
            CmaError::CmaErrorInvalidPointer => "invalid pointer",
            CmaError::CmaErrorDoubleFree => "double free",
            CmaError::CmaErrorCorrupted => "corrupted heap metadata",
        }
    }
}
