//! Decommitting many small ranges at once: one process_madvise(2) call for
//! up to `CAPACITY` ranges. Linux 6.13 and later accept MADV_DONTNEED for
//! the calling process (named `PIDFD_SELF_THREAD`, no descriptor needed)
//! and flush the TLB once per call instead of once per range, so a trim
//! that gives back the inside of thousands of free blocks interrupts the
//! cores running the program's other threads that much less often. Where
//! the kernel refuses, each range gets its own madvise, as in
//! `mmap::decommit`.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::os::errno::ErrnoGuard;
use crate::os::mmap;

/// Ranges per system call (the kernel takes up to 1024).
const CAPACITY: usize = 64;

/// `PIDFD_SELF_THREAD` of linux/pidfd.h: the calling thread (its memory is
/// the whole process's). A negative number, never a real descriptor.
const PIDFD_SELF_THREAD: libc::c_int = -10000;

/// Set once the kernel refused a batch: madvise per range from then on.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Page-aligned ranges of CMA's own memory whose contents are no longer
/// needed, decommitted when the batch is full, flushed or dropped.
pub struct DecommitBatch {
    ranges: [libc::iovec; CAPACITY],
    len: usize,
    /// Bytes added so far.
    pub bytes: usize,
}

impl DecommitBatch {
    pub fn new() -> DecommitBatch {
        DecommitBatch {
            ranges: [libc::iovec {
                iov_base: core::ptr::null_mut(),
                iov_len: 0,
            }; CAPACITY],
            len: 0,
            bytes: 0,
        }
    }

    /// Adds `len` bytes at `start` (both multiples of the OS page size).
    pub fn add(&mut self, start: usize, len: usize) {
        if self.len == CAPACITY {
            self.flush();
        }
        self.ranges[self.len] = libc::iovec {
            iov_base: start as *mut libc::c_void,
            iov_len: len,
        };
        self.len += 1;
        self.bytes += len;
    }

    /// Decommits the ranges added since the last flush.
    pub fn flush(&mut self) {
        let ranges = &self.ranges[..self.len];
        self.len = 0;
        if ranges.is_empty() {
            return;
        }
        if !REFUSED.load(Ordering::Relaxed) {
            let total: usize = ranges.iter().map(|r| r.iov_len).sum();
            let _errno = ErrnoGuard::save();
            // SAFETY: the iovecs describe page-aligned ranges of CMA's own
            // mappings whose contents are no longer needed (see `add`); the
            // kernel only reads the array.
            let done = unsafe {
                libc::syscall(
                    libc::SYS_process_madvise,
                    PIDFD_SELF_THREAD,
                    ranges.as_ptr(),
                    ranges.len(),
                    libc::MADV_DONTNEED,
                    0,
                )
            };
            if done >= 0 && done as usize == total {
                return;
            }
            if done < 0 {
                REFUSED.store(true, Ordering::Relaxed);
            }
        }
        // Refused, or stopped part-way: every range on its own (giving back
        // a range twice does no harm).
        for r in ranges {
            mmap::decommit(r.iov_base.cast(), r.iov_len);
        }
    }
}

impl Drop for DecommitBatch {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Maps `pages` OS pages, writes every one and returns the mapping.
    fn written(pages: usize) -> *mut u8 {
        let p = mmap::map(pages * 4096);
        assert!(!p.is_null());
        // SAFETY: a fresh mapping of that many bytes.
        unsafe { core::ptr::write_bytes(p, 7, pages * 4096) };
        p
    }

    /// Which of the mapping's pages are resident (mincore).
    fn resident(p: *mut u8, pages: usize) -> [bool; 512] {
        let mut vec = [0u8; 512];
        // SAFETY: `p` is a mapping of `pages` (at most 512) OS pages.
        let rc = unsafe { libc::mincore(p.cast(), pages * 4096, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        vec.map(|v| v & 1 != 0)
    }

    /// Every other page of 300 (more than a batch holds, so batches are
    /// sent when full too) goes back, and reads zero; the pages between stay
    /// as written. Both ways: batched, and madvise per range.
    fn gives_back_every_other_page() {
        const PAGES: usize = 300;
        let p = written(PAGES);
        let mut batch = DecommitBatch::new();
        for i in (0..PAGES).step_by(2) {
            batch.add(p as usize + i * 4096, 4096);
        }
        assert_eq!(batch.bytes, PAGES / 2 * 4096);
        drop(batch);
        for (i, &resident) in resident(p, PAGES).iter().take(PAGES).enumerate() {
            assert_eq!(resident, i % 2 == 1, "page {i}");
            // SAFETY: within the mapping.
            let byte = unsafe { *p.add(i * 4096 + 100) };
            assert_eq!(byte, if i % 2 == 1 { 7 } else { 0 }, "page {i}");
        }
        mmap::unmap(p, PAGES * 4096);
    }

    #[test]
    fn a_batch_gives_back_its_ranges_and_nothing_else() {
        gives_back_every_other_page();
        // The same where the kernel refused batches (older than 6.13).
        REFUSED.store(true, Ordering::Relaxed);
        gives_back_every_other_page();
        REFUSED.store(false, Ordering::Relaxed);
    }
}
