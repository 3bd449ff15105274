//! Secure mode (`CMA_SECURE=1`, read at start): checks too costly for the
//! default mode, on every allocation and free (both take their slow paths:
//! the malloc fast path is closed and every page carries `SLOW_FLAG`).
//!
//! - A canary word at the end of every small and large block (usable sizes
//!   shrink by `CANARY_BYTES`): a write past the usable size is reported
//!   when the block is freed, resized or its size is asked.
//! - Freed blocks are zeroed, and wait in a per-thread quarantine of
//!   `QUARANTINE_SLOTS` blocks before they can be handed out again (they
//!   keep their free tag meanwhile, so a double free is still caught). A
//!   block leaving the quarantine must still be all zero but its tag, and
//!   every allocation checks the start of one quarantined block: a write
//!   through a stale pointer is reported, naming the freed block.
//! - Slots of fresh pages are handed out in random order (`page_ops::extend`).
//! - Freed large blocks are zeroed (their pages go back to the OS).
//! - Guard pages: huge blocks end in an inaccessible page.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::backend::segment::Segment;
use crate::diag::{self, Call, HeapError};
use crate::heap::block::tag_of;
use crate::heap::heap::Heap;
use crate::settings;

/// Bytes reserved at the end of each block in secure mode (keeps 16-byte
/// alignment of the usable size).
pub const CANARY_BYTES: usize = 16;
/// Blocks a thread keeps in quarantine.
pub const QUARANTINE_SLOTS: usize = 64;

#[inline]
pub fn enabled() -> bool {
    settings::secure()
}

/// The request size to serve for `size` user bytes.
#[inline]
pub fn padded(size: usize) -> usize {
    if enabled() {
        size.saturating_add(CANARY_BYTES)
    } else {
        size
    }
}

/// The usable size of a block of `block_size` bytes (small or large).
#[inline]
pub fn usable(block_size: usize) -> usize {
    if enabled() {
        block_size - CANARY_BYTES
    } else {
        block_size
    }
}

/// The canary: the two words right after the usable size.
fn canary_slot(block: usize, block_size: usize) -> *mut [usize; 2] {
    (block + block_size - CANARY_BYTES) as *mut [usize; 2]
}

/// The canary of a block: its end address mixed with a secret.
fn canary_of(block: usize, block_size: usize) -> usize {
    tag_of(block + block_size).rotate_left(29)
}

/// Writes the canary of a block just handed out.
pub fn arm(block: *mut u8, block_size: usize) {
    if enabled() && !block.is_null() {
        let addr = block as usize;
        // SAFETY: the block is ours and `block_size` bytes long.
        unsafe { canary_slot(addr, block_size).write([canary_of(addr, block_size); 2]) };
    }
}

/// Checks the canary of a live block.
pub fn check(block: usize, block_size: usize) -> Result<(), HeapError> {
    if !enabled() {
        return Ok(());
    }
    // SAFETY: the caller validated `block` as a live block of `block_size`.
    let canary = unsafe { canary_slot(block, block_size).read() };
    if canary == [canary_of(block, block_size); 2] {
        Ok(())
    } else {
        Err(HeapError::Overflow)
    }
}

/// Zeroes a large block being freed, by giving its pages back to the OS
/// (they read as zero when next touched): cheaper than writing them, and
/// the memory leaves the process at once. Large blocks are whole slices.
pub fn scrub_large(block: usize, block_size: usize) {
    if enabled() {
        crate::os::mmap::decommit(block as *mut u8, block_size);
    }
}

/// Zeroes a claimed block entering the quarantine: everything but its tag
/// word (word 1), so the block stays tagged as free.
pub fn scrub_for_quarantine(block: usize, block_size: usize) {
    let words = block as *mut usize;
    // SAFETY: a claimed block of `block_size` (at least 16) bytes.
    unsafe {
        words.write(0);
        ptr::write_bytes((block + 16) as *mut u8, 0, block_size - 16);
    }
}

/// Checks that a quarantined block is as `scrub_for_quarantine` left it, in
/// its first `limit` bytes: a damaged link or tag word is corrupted
/// metadata, any other byte written is a use after free.
pub fn check_quarantined(block: usize, block_size: usize, limit: usize) -> Result<(), HeapError> {
    let words = block as *const usize;
    // SAFETY: a quarantined block of `block_size` (at least 16) bytes,
    // claimed by this thread: nobody else writes it, but a stale pointer.
    let (link, tag) = unsafe { (words.read_volatile(), words.add(1).read_volatile()) };
    if link != 0 || tag != tag_of(block) {
        return Err(HeapError::Corrupted);
    }
    let end = limit.min(block_size) / size_of::<usize>();
    // SAFETY: as above; `end` words lie inside the block.
    let dirty = (2..end).any(|i| unsafe { words.add(i).read_volatile() } != 0);
    if dirty {
        Err(HeapError::UseAfterFree)
    } else {
        Ok(())
    }
}

/// Bytes of a quarantined block each allocation checks.
const PATROL_BYTES: usize = 256;

/// Checks the start of the next quarantined block of the calling thread's
/// heap (one per allocation, round robin); ends the process if it was
/// written to since it was freed.
pub fn patrol(heap: &Heap) {
    let index = heap.patrol_next.get();
    heap.patrol_next.set(index.wrapping_add(1));
    let block = heap.quarantine[index % QUARANTINE_SLOTS].load(Ordering::Relaxed);
    if block == 0 {
        return;
    }
    // SAFETY: a quarantined block is claimed: its page is a live small page.
    let block_size = unsafe { (*Segment::page_of(block)).block_size() };
    if let Err(error) = check_quarantined(block, block_size, PATROL_BYTES) {
        diag::fatal(Call::Malloc, block, error);
    }
}

/// Puts a freed (tagged) block of this thread's heap in quarantine; returns
/// the block the quarantine lets go of, to be freed for real, if any.
pub fn quarantine(heap: &Heap, block: usize) -> usize {
    let index = heap.quarantine_next.get();
    let slot = &heap.quarantine[index % QUARANTINE_SLOTS];
    let evicted = slot.swap(block, Ordering::Relaxed);
    heap.quarantine_next.set(index.wrapping_add(1));
    evicted
}
