//! The shared heap core, guarded by one FIFO futex ticket lock: segments and
//! their spans, large blocks (a span each), the registry of thread heaps,
//! and the bookkeeping of huge blocks. Thread heaps come here only on their
//! slow paths: for a fresh page, to give an empty page back, for large and
//! huge blocks, and at thread start and exit.

pub mod huge;
pub mod page;
pub mod region_map;
pub mod registry;
pub mod segment;
pub mod spans;

use core::sync::atomic::Ordering;

use crate::backend::huge::FreedHuge;
use crate::backend::page::{NO_OWNER, Page, PageKind};
use crate::backend::registry::Registry;
use crate::backend::segment::Segment;
use crate::backend::spans::Spans;
use crate::config::SLICE_SIZE;
use crate::diag::HeapError;
use crate::os::clock::now_ms;
use crate::sync::{TicketGuard, TicketLock};

pub struct Core {
    pub spans: Spans,
    pub registry: Registry,
    pub freed_huge: FreedHuge,
    /// Large and huge blocks (the small ones are counted by their pages).
    pub large: BlockCount,
    pub huge: BlockCount,
    /// Bytes the core has handed out (spans of pages, large and huge
    /// blocks): the statistics take a fresh look at the peak whenever this
    /// passes `next_peak_sample`.
    pub held_bytes: usize,
    pub next_peak_sample: usize,
    /// When the next purge is due (ms; `u64::MAX`: nothing waits).
    pub next_purge_ms: u64,
}

/// Live blocks of one kind, their usable bytes, and allocations ever made.
#[derive(Clone, Copy, Default)]
pub struct BlockCount {
    pub live: usize,
    pub bytes: usize,
    pub allocs: u64,
}

impl BlockCount {
    pub const fn new() -> BlockCount {
        BlockCount {
            live: 0,
            bytes: 0,
            allocs: 0,
        }
    }

    pub fn allocated(&mut self, bytes: usize) {
        self.live += 1;
        self.bytes += bytes;
        self.allocs += 1;
    }

    pub fn freed(&mut self, bytes: usize) {
        self.live -= 1;
        self.bytes -= bytes;
    }

    pub fn resized(&mut self, old: usize, new: usize) {
        self.bytes = self.bytes - old + new;
    }
}

impl Core {
    pub const fn new() -> Core {
        Core {
            spans: Spans::new(),
            registry: Registry::new(),
            freed_huge: FreedHuge::new(),
            large: BlockCount::new(),
            huge: BlockCount::new(),
            held_bytes: 0,
            next_peak_sample: 0,
            next_purge_ms: u64::MAX,
        }
    }

    /// A span of `slices` slices for a page of blocks (set up by the caller).
    pub fn alloc_page_span(&mut self, slices: usize) -> *mut Page {
        let span = self.spans.alloc(slices, 1);
        if !span.is_null() {
            self.held_bytes += slices * SLICE_SIZE;
        }
        span
    }

    /// Gives a page's span back.
    pub fn free_page_span(&mut self, page: &Page) {
        self.held_bytes -= page.slice_count() * SLICE_SIZE;
        self.spans.free(page, now_ms());
    }

    /// Allocates a large block: a span of its own, slice-aligned (so any
    /// alignment up to `SLICE_SIZE` is honoured; more with `align`).
    /// Returns the block's span head, or null when out of memory.
    pub fn alloc_large(&mut self, size: usize, align: usize) -> *mut Page {
        let slices = size.max(1).div_ceil(SLICE_SIZE);
        let align_slices = (align / SLICE_SIZE).max(1);
        let span = self.spans.alloc(slices, align_slices);
        if span.is_null() {
            return span;
        }
        // SAFETY: a span head fresh from the span allocator, ours under the lock.
        let page = unsafe { &*span };
        set_up_large(page, slices);
        self.large.allocated(page.block_size());
        self.held_bytes += page.block_size();
        span
    }

    /// Frees the large block at `addr` whose span head is `page`.
    pub fn free_large(&mut self, page: &Page, addr: usize) -> Result<usize, HeapError> {
        let size = validate_large(page, addr)?;
        self.large.freed(size);
        self.held_bytes -= size;
        self.spans.free(page, now_ms());
        Ok(size)
    }

    /// Resizes a large block in place to hold `new_size` bytes, by freeing
    /// its tail or taking the free slices after it. Returns success.
    pub fn resize_large(&mut self, head: &Page, new_size: usize) -> bool {
        let old_slices = head.slice_count();
        let new_slices = new_size.max(1).div_ceil(SLICE_SIZE);
        if new_slices == old_slices {
            return true;
        }
        if new_slices < old_slices {
            self.spans.shrink(head, new_slices, now_ms());
        } else if !self.spans.grow(head, new_slices - old_slices) {
            return false;
        }
        let old_bytes = head.block_size();
        set_up_large(head, new_slices);
        self.large.resized(old_bytes, head.block_size());
        self.held_bytes = self.held_bytes - old_bytes + head.block_size();
        true
    }
}

impl Default for Core {
    fn default() -> Core {
        Core::new()
    }
}

fn set_up_large(page: &Page, slices: usize) {
    let bytes = slices * SLICE_SIZE;
    let segment = Segment::of(page as *const Page as usize);
    let start = segment as usize + page.slice_index as usize * SLICE_SIZE;
    page.slice_count.store(slices as u32, Ordering::Relaxed);
    page.block_size.store(bytes as u32, Ordering::Relaxed);
    page.start.store(start, Ordering::Relaxed);
    page.set_block_check(bytes);
    page.reserved.set(1);
    page.set_carved(1);
    page.allocs.store(0, Ordering::Relaxed);
    page.set_used(1);
    page.heap.store(NO_OWNER, Ordering::Relaxed);
    page.set_kind(PageKind::Large);
}

/// Checks that `addr` is the live large block of span `page`; returns its
/// usable size. Call with the core lock held.
pub fn validate_large(head: &Page, addr: usize) -> Result<usize, HeapError> {
    match head.kind() {
        PageKind::Large if head.start() == addr => Ok(head.block_size()),
        PageKind::Large | PageKind::None => Err(HeapError::InvalidPointer),
        PageKind::Free => Err(HeapError::DoubleFree),
        PageKind::Small => Err(HeapError::InvalidPointer),
    }
}

/// The core, behind its lock.
pub static CORE: TicketLock<Core> = TicketLock::new(Core::new());

/// Takes the core lock.
#[inline]
pub fn lock() -> TicketGuard<'static, Core> {
    CORE.lock()
}
