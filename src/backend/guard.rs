//! Secure mode's protection of spans.
//!
//! - Guard pages: the last OS page of every span the core hands out (a
//!   page of blocks, or a large block) is made inaccessible, so a linear
//!   overflow that runs off the end of the span faults at once instead of
//!   reaching its neighbour. Blocks are laid out in front of it (`bytes`
//!   tells how much a span loses). Huge blocks have their own (`huge`).
//!   mprotect splits the segment's mapping; should the kernel refuse (too
//!   many mappings), the span simply goes without its guard.
//! - Scrubbing: a span coming back to the core gives its memory back to the
//!   OS, so nothing carved from it later sees old contents.

use crate::backend::page::Page;
use crate::backend::segment::Segment;
use crate::config::{OS_PAGE_SIZE, SLICE_SIZE};
use crate::os::mmap;
use crate::settings;

/// Bytes at the end of each span kept for the guard (0 unless secure).
#[inline]
pub fn bytes() -> usize {
    if settings::secure() { OS_PAGE_SIZE } else { 0 }
}

/// The guard page of the span headed by `head`.
fn guard_of(head: &Page) -> *mut u8 {
    let segment = Segment::of(head as *const Page as usize) as usize;
    let end = segment + (head.slice_index as usize + head.slice_count()) * SLICE_SIZE;
    (end - OS_PAGE_SIZE) as *mut u8
}

/// Protects the guard page of a span being handed out.
pub fn arm(head: &Page) {
    if settings::secure() {
        mmap::protect_none(guard_of(head), OS_PAGE_SIZE);
    }
}

/// Secure mode: gives the memory of a span coming back to the OS (it reads
/// as zero when next touched).
pub fn scrub(head: &Page) {
    if settings::secure() {
        let segment = Segment::of(head as *const Page as usize) as usize;
        let start = segment + head.slice_index as usize * SLICE_SIZE;
        mmap::decommit(start as *mut u8, head.slice_count() * SLICE_SIZE);
    }
}

/// Makes the guard page of a span coming back usable again.
pub fn disarm(head: &Page) {
    if settings::secure() {
        mmap::protect_read_write(guard_of(head), OS_PAGE_SIZE);
    }
}
