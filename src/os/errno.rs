//! errno access, so the malloc family can set it as POSIX says and `free`
//! can preserve it across the system calls it makes.

/// Returns the calling thread's errno.
#[inline]
pub fn get() -> i32 {
    // SAFETY: __errno_location always returns a valid pointer to the calling
    // thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's errno.
#[inline]
pub fn set(value: i32) {
    // SAFETY: as in `get`.
    unsafe { *libc::__errno_location() = value }
}

/// Restores errno to its value at construction when dropped.
pub struct ErrnoGuard(i32);

impl ErrnoGuard {
    #[inline]
    pub fn save() -> ErrnoGuard {
        ErrnoGuard(get())
    }
}

impl Drop for ErrnoGuard {
    #[inline]
    fn drop(&mut self) {
        set(self.0)
    }
}
