//! Compile-time layout constants shared by every layer.

/// Segments are `SEGMENT_SIZE`-aligned regions from which pages are carved;
/// the segment (and its metadata) of any small or large block is found by
/// masking the pointer.
pub const SEGMENT_SHIFT: usize = 22;
pub const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT; // 4 MiB
pub const SEGMENT_MASK: usize = SEGMENT_SIZE - 1;

/// A segment is cut into slices; a span (page) is a run of whole slices.
pub const SLICE_SHIFT: usize = 16;
pub const SLICE_SIZE: usize = 1 << SLICE_SHIFT; // 64 KiB
pub const SLICES_PER_SEGMENT: usize = SEGMENT_SIZE / SLICE_SIZE; // 64
/// Slice 0 holds the segment header; spans use slices 1..64.
pub const FIRST_USABLE_SLICE: usize = 1;
pub const USABLE_SLICES: usize = SLICES_PER_SEGMENT - FIRST_USABLE_SLICE;

/// Every block is aligned to this (glibc's malloc guarantee on x86_64).
pub const MIN_ALIGN: usize = 16;

/// Requests up to this size are served from the per-thread direct table.
pub const SMALL_MAX: usize = 1024;
/// Requests up to this size are blocks in size-classed pages; above it they
/// get a span of their own (a "large" block). A page holds eight blocks of
/// its class at least, so a class of 64..128 KiB needed a 0.5..1 MiB page
/// for its one or two live blocks, and the blocks freed in it stayed
/// backed; as spans of their own they go back to the core at once and
/// coalesce (mem_steady: peak RSS -4.6%; at 32 KiB, fragment +3.8%).
pub const MEDIUM_MAX: usize = 64 * 1024;
/// Requests above this size are mapped directly ("huge" blocks).
pub const LARGE_MAX: usize = 2 * 1024 * 1024;

/// The largest size any allocation may have: beyond it, pointer differences
/// within the block would overflow `isize`.
pub const MAX_REQUEST: usize = isize::MAX as usize - 2 * SEGMENT_SIZE;

/// The OS page size CMA assumes for its own metadata layout (checked at
/// start-up against sysconf).
pub const OS_PAGE_SIZE: usize = 4096;

/// Virtual address bits a user-space pointer can have on this target.
#[cfg(target_arch = "x86_64")]
pub const ADDRESS_BITS: usize = 47;
#[cfg(not(target_arch = "x86_64"))]
pub const ADDRESS_BITS: usize = 48;

/// The default-mode heap checks (see the `unchecked` feature): on in every
/// real build.
pub const CHECKS: bool = !cfg!(feature = "unchecked");
