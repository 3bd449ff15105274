//! The shared heap core, guarded by one FIFO futex ticket lock: segments and
//! their spans, large blocks (a span each), the registry of thread heaps,
//! and the bookkeeping of huge blocks. Thread heaps come here only on their
//! slow paths: for a fresh page, to give an empty page back, for large and
//! huge blocks, and at thread start and exit.

pub mod freed;
pub mod guard;
pub mod huge;
pub mod page;
pub mod region_map;
pub mod registry;
pub mod segment;
pub mod spans;

use core::sync::atomic::Ordering;

use crate::backend::freed::FreedBlocks;
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
    /// The last large and huge blocks freed (double-free reports).
    pub freed: FreedBlocks,
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
    /// True while a purge runs: giving an orphan's pages back releases
    /// spans to the core, which must not start a purge inside it.
    pub purging: bool,
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
            freed: FreedBlocks::new(),
            large: BlockCount::new(),
            huge: BlockCount::new(),
            held_bytes: 0,
            next_peak_sample: 0,
            next_purge_ms: u64::MAX,
            purging: false,
        }
    }

    /// A span of `slices` slices for a page of blocks (set up by the caller).
    /// In secure mode its last OS page is a guard (`guard::bytes`).
    pub fn alloc_page_span(&mut self, slices: usize) -> *mut Page {
        let span = self.spans.alloc(slices, 1);
        if !span.is_null() {
            self.held_bytes += slices * SLICE_SIZE;
            // SAFETY: a span head fresh from the span allocator.
            guard::arm(unsafe { &*span });
        }
        span
    }

    /// Gives a page's span back. In secure mode its memory goes back to the
    /// OS at once, so whatever is carved from it next reads as zero (the
    /// page's free blocks still hold their links and tags).
    pub fn free_page_span(&mut self, page: &Page) {
        self.give_back_page_span(page, true);
    }

    /// Gives back a page's span whose memory the caller has already given
    /// back to the OS, so the core counts it clean (not waiting for a
    /// purge).
    pub fn free_page_span_decommitted(&mut self, page: &Page) {
        self.give_back_page_span(page, false);
    }

    fn give_back_page_span(&mut self, page: &Page, backed: bool) {
        let bytes = page.slice_count() * SLICE_SIZE;
        guard::disarm(page);
        if backed {
            guard::scrub(page);
        }
        self.held_bytes -= bytes;
        self.spans.free(page, now_ms(), backed);
    }

    /// Allocates a large block: a span of its own, slice-aligned (so any
    /// alignment up to `SLICE_SIZE` is honoured; more with `align`).
    /// Returns the block's span head, or null when out of memory.
    pub fn alloc_large(&mut self, size: usize, align: usize) -> *mut Page {
        let slices = large_slices(size);
        let align_slices = (align / SLICE_SIZE).max(1);
        let span = self.spans.alloc(slices, align_slices);
        if span.is_null() {
            return span;
        }
        // SAFETY: a span head fresh from the span allocator, ours under the lock.
        let page = unsafe { &*span };
        set_up_large(page, slices);
        self.freed
            .forget_range(page.start(), page.start() + page.block_size());
        guard::arm(page);
        self.large.allocated(page.block_size());
        self.held_bytes += page.block_size();
        span
    }

    /// Frees the large block at `addr` whose span head is `page`.
    pub fn free_large(&mut self, page: &Page, addr: usize) -> Result<usize, HeapError> {
        let size = self.validate_large(page, addr)?;
        self.freed.record(addr);
        guard::disarm(page);
        self.large.freed(size);
        self.held_bytes -= size;
        self.spans.free(page, now_ms(), true);
        Ok(size)
    }

    /// Resizes a large block in place to hold `new_size` bytes, by freeing
    /// its tail or taking the free slices after it. Returns success.
    /// Not in secure mode, where the guard page would have to move.
    pub fn resize_large(&mut self, head: &Page, new_size: usize) -> bool {
        if guard::bytes() != 0 {
            return false;
        }
        let old_slices = head.slice_count();
        let new_slices = large_slices(new_size);
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

/// Slices of a large block of `size` bytes (and its guard page, if any).
pub fn large_slices(size: usize) -> usize {
    (size.max(1) + guard::bytes()).div_ceil(SLICE_SIZE)
}

/// True when a block of `size` bytes aligned to `align` fits in a segment
/// as a large block (else it must be huge). Not every one up to
/// `LARGE_MAX` does: in secure mode a block of nearly 2 MiB needs a 33rd
/// slice for its guard page, and aligned to 2 MiB it must start at slice
/// 32 of 64.
pub fn large_fits(size: usize, align: usize) -> bool {
    spans::fits_in_segment(large_slices(size), (align / SLICE_SIZE).max(1))
}

/// The usable bytes of a span of `slices` slices (its guard page, in secure
/// mode, left out): the size of a large block, and the room of a page.
pub fn span_usable_bytes(slices: usize) -> usize {
    slices * SLICE_SIZE - guard::bytes()
}

fn set_up_large(page: &Page, slices: usize) {
    let bytes = span_usable_bytes(slices);
    let segment = Segment::of(page as *const Page as usize);
    let start = segment as usize + page.slice_index as usize * SLICE_SIZE;
    page.slice_count.store(slices as u32, Ordering::Relaxed);
    page.block_size.store(bytes as u32, Ordering::Relaxed);
    page.start.store(start, Ordering::Relaxed);
    page.set_block_check(bytes);
    page.reserved.set(1);
    page.set_carved(1);
    page.counts.store(1, Ordering::Relaxed);
    page.heap.store(NO_OWNER, Ordering::Relaxed);
    page.set_kind(PageKind::Large);
}

impl Core {
    /// Checks that `addr` is the live large block of span `head`; returns
    /// its block size.
    pub fn validate_large(&self, head: &Page, addr: usize) -> Result<usize, HeapError> {
        if head.is_large_block_at(addr) {
            return Ok(head.block_size());
        }
        let error = match head.kind() {
            PageKind::Free => HeapError::DoubleFree,
            PageKind::Large | PageKind::None | PageKind::Small => HeapError::InvalidPointer,
        };
        Err(self.freed.error_for(addr, error))
    }
}

/// The core, behind its lock.
pub static CORE: TicketLock<Core> = TicketLock::new(Core::new());

/// Takes the core lock.
#[inline]
pub fn lock() -> TicketGuard<'static, Core> {
    CORE.lock()
}
