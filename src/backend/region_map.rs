//! The map of CMA's own address space: one byte per 4 MiB chunk of the
//! user address space saying whether CMA owns it and how. Ownership checks
//! (is this pointer one of ours?) consult the map before touching anything
//! the pointer points to, so a foreign pointer never makes CMA read memory
//! that is not its own.
//!
//! The map lives in .bss: its pages are only backed when written, and an
//! untouched entry reads as "not ours" even before initialisation.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::config::{ADDRESS_BITS, SEGMENT_SHIFT, SEGMENT_SIZE};
use crate::sync::peek;

/// What CMA keeps in a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Region {
    /// Not CMA's memory.
    Foreign = 0,
    /// A segment: small, medium and large blocks; metadata at the chunk start.
    Segment = 1,
    /// The first chunk of a huge mapping; its header at the chunk start.
    HugeHead = 2,
    /// A later chunk of a huge mapping.
    HugeTail = 3,
}

const ENTRIES: usize = 1 << (ADDRESS_BITS - SEGMENT_SHIFT);

/// The entries, as plain bytes so the (large) zero initialiser is cheap to
/// compile; every access goes through `entry`, as an atomic.
struct RegionMap(UnsafeCell<[u8; ENTRIES]>);

// SAFETY: every access is an atomic byte access (see `entry`).
unsafe impl Sync for RegionMap {}

static MAP: RegionMap = RegionMap(UnsafeCell::new([0; ENTRIES]));

#[inline(always)]
fn entry(index: usize) -> &'static AtomicU8 {
    debug_assert!(index < ENTRIES);
    // SAFETY: `index` is in bounds; the byte is only ever accessed atomically.
    unsafe { AtomicU8::from_ptr((MAP.0.get() as *mut u8).add(index)) }
}

/// Returns what CMA keeps in the chunk holding `addr`. Any address, even
/// non-canonical ones, may be asked about.
#[inline(always)]
pub fn lookup(addr: usize) -> Region {
    let index = addr >> SEGMENT_SHIFT;
    if index >= ENTRIES {
        return Region::Foreign;
    }
    match entry(index).load(Ordering::Relaxed) {
        1 => Region::Segment,
        2 => Region::HugeHead,
        3 => Region::HugeTail,
        _ => Region::Foreign,
    }
}

/// True when `addr` lies in a segment.
#[inline(always)]
pub fn is_segment(addr: usize) -> bool {
    segment_of(addr).is_some()
}

/// The segment holding `addr`, when the map says the chunk is one (the
/// fast-path check: the base comes from the index already computed).
#[inline(always)]
pub fn segment_of(addr: usize) -> Option<usize> {
    // Opaque, or LLVM tests `addr >> 47` for the bound and computes the
    // index and the base again from `addr` (three instructions more).
    let index = peek::opaque(addr >> SEGMENT_SHIFT);
    if index < ENTRIES
        // SAFETY: below ENTRIES, the byte is an entry of the map.
        && unsafe { peek::byte_at_equals::<{ Region::Segment as u8 }>(MAP.0.get().cast(), index) }
    {
        Some(index << SEGMENT_SHIFT)
    } else {
        None
    }
}

/// Records `region` for every chunk of `[start, start + len)`; `start` is
/// chunk-aligned. Called before the memory is handed out.
pub fn set(start: usize, len: usize, region: Region) {
    debug_assert!(start % SEGMENT_SIZE == 0);
    let first = start >> SEGMENT_SHIFT;
    let count = len.div_ceil(SEGMENT_SIZE);
    for i in first..first + count {
        if i < ENTRIES {
            entry(i).store(region as u8, Ordering::Release);
        }
    }
}

/// Marks a huge mapping: its first chunk as the head, the rest as tail.
pub fn set_huge(start: usize, len: usize) {
    set(start, len, Region::HugeTail);
    set(start, SEGMENT_SIZE, Region::HugeHead);
}

/// Forgets `[start, start + len)` before it is unmapped.
pub fn clear(start: usize, len: usize) {
    set(start, len, Region::Foreign);
}
