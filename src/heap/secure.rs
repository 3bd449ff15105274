//! Secure mode (`CMA_SECURE=1`, read at start): checks too costly for the
//! default mode, on every allocation and free (both take their slow paths:
//! the malloc fast path is closed and every page carries `SLOW_FLAG`).
//!
//! - A canary word at the end of every small and large block (usable sizes
//!   shrink by `CANARY_BYTES`): a write past the usable size is reported
//!   when the block is freed, resized or its size is asked.
//! - Freed blocks are zeroed, and wait in a per-thread quarantine of
//!   `QUARANTINE_SLOTS` blocks before they can be handed out again (they
//!   keep their free tag meanwhile, so a double free is still caught).
//! - Slots of fresh pages are handed out in random order (`page_ops::extend`).
//! - Guard pages: huge blocks end in an inaccessible page.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::diag::HeapError;
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

/// Zeroes a block being freed (its first two words are rewritten as a free
/// block's right after).
pub fn scrub(block: usize, block_size: usize) {
    if enabled() {
        // SAFETY: a live block of `block_size` bytes the caller is freeing.
        unsafe { ptr::write_bytes(block as *mut u8, 0, block_size) };
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
