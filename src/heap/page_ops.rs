//! Operations on a page of equal-sized blocks, by its owner: set-up,
//! carving more blocks, and popping a block (the heart of malloc).

use core::sync::atomic::Ordering;

use crate::backend;
use crate::backend::page::{Page, PageKind, SLOW_FLAG};
use crate::backend::segment::Segment;
use crate::config::{CHECKS, SEGMENT_SHIFT, SLICE_SIZE};
use crate::diag::{self, Call, HeapError};
use crate::heap::block::{Block, decode};
use crate::heap::heap::{Heap, HeapStats};
use crate::heap::size_class::block_size_of;
use crate::os::random::Rng;
use crate::settings;

/// Bytes of new blocks carved at a time: small, so a fresh page is touched
/// (and backed by physical memory) only as it is used.
const EXTEND_BYTES: usize = 4096;
/// Blocks of 4 KiB and more are carved one at a time: carving writes a link
/// into each block, so every block carved ahead is an OS page backed ahead
/// (four blocks at a time kept 12 KiB more for a program's one stdio
/// buffer, and 2% of `fragment`'s peak).
const MIN_EXTEND_BLOCKS: usize = 1;
/// In secure mode at least four, which `extend` links in a random order:
/// one at a time, big blocks would come out in address order.
const SECURE_MIN_EXTEND_BLOCKS: usize = 4;

/// Pops a block from the page's free list, or returns null when the list is
/// empty. The block must lie in the page's segment before it is touched: a
/// link smashed by a use-after-free write or an overflow (even a partial
/// one: the rotation in `encode` spreads low-order damage into the high
/// bits) decodes to an address elsewhere, and is caught when it comes up
/// (`corrupted_link` then finds the block whose link was damaged).
///
/// # Safety
/// `page` is a small page owned by the calling thread's heap (or the empty
/// page).
#[inline(always)]
pub unsafe fn pop(page: *mut Page) -> *mut u8 {
    // SAFETY: the caller owns the page.
    let block = unsafe { (*page).free.get() };
    if !can_pop(page, block) {
        // SAFETY: as for `pop`.
        return unsafe { empty_or_corrupted(page) };
    }
    // SAFETY: as for `pop`.
    unsafe { take(page, block) }
}

/// True when `block`, the head of the page's free list, can be popped; false
/// when the list is empty or its head is outside the page's segment (see
/// `empty_or_corrupted`). One test for both: null is never in the segment.
#[inline(always)]
pub fn can_pop(page: *mut Page, block: *mut Block) -> bool {
    if CHECKS {
        (block as usize ^ page as usize) >> SEGMENT_SHIFT == 0
    } else {
        !block.is_null()
    }
}

/// Pops `block`, the head of the page's free list, which `can_pop` accepted.
///
/// # Safety
/// As for `pop`.
#[inline(always)]
pub unsafe fn take(page: *mut Page, block: *mut Block) -> *mut u8 {
    // SAFETY: the caller owns the page.
    let page = unsafe { &*page };
    // SAFETY: the block lies in the page's segment (a carved block unless
    // the list was forged, which needs the secret key).
    let next = unsafe { (*block).next() };
    // SAFETY: as above.
    unsafe { (*block).clear_tag() };
    page.free.set(next as *mut Block);
    page.count_alloc();
    block.cast()
}

/// After `can_pop` said no: returns null when the page's free list is empty,
/// and ends the process when its head lies outside the page's segment.
///
/// # Safety
/// As for `pop`.
#[cold]
#[inline(never)]
pub unsafe fn empty_or_corrupted(page: *mut Page) -> *mut u8 {
    // SAFETY: the caller owns the page.
    let page = unsafe { &*page };
    let block = page.free.get() as usize;
    if block != 0 {
        corrupted_link(page, block);
    }
    core::ptr::null_mut()
}

/// A link of the page's free list led out of its segment: names the block
/// that holds the damaged link (already handed out by the pop before, so
/// found by looking for it among the page's blocks), else the bad link.
#[cold]
#[inline(never)]
fn corrupted_link(page: &Page, bad_link: usize) -> ! {
    let start = page.start();
    let size = page.block_size();
    let damaged = (0..page.capacity.load(Ordering::Relaxed) as usize)
        .map(|i| start + i * size)
        // SAFETY: carved blocks of the page: mapped and committed.
        .find(|&block| decode(unsafe { (block as *const usize).read_volatile() }) == bad_link);
    diag::fatal(
        Call::Malloc,
        damaged.unwrap_or(bad_link),
        HeapError::Corrupted,
    )
}

/// Sets up a span as a page of `class` owned by `heap`; `zero` says whether
/// all of its memory is known to be zero.
pub fn init_small(page: &Page, heap: &Heap, class: usize, zero: bool) {
    fold_allocs(page, heap);
    let block_size = block_size_of(class);
    let segment = Segment::of(page as *const Page as usize);
    let start = segment as usize + page.slice_index as usize * SLICE_SIZE;
    let span_bytes = backend::span_usable_bytes(page.slice_count());
    page.block_size.store(block_size as u32, Ordering::Relaxed);
    page.start.store(start, Ordering::Relaxed);
    page.set_block_check(block_size);
    page.reserved.set((span_bytes / block_size) as u32);
    page.set_carved(0);
    page.free.set(core::ptr::null_mut());
    page.set_used(0);
    page.class.set(class as u8);
    page.in_queue.set(false);
    page.set_kind(PageKind::Small);
    page.is_zero.set(zero);
    page.given.store(0, Ordering::Relaxed);
    page.live_runs.store(0, Ordering::Relaxed);
    page.heap.store(heap.owner_word(), Ordering::Relaxed);
}

/// Puts the lowest of the page's given blocks (`interiors`: its memory went
/// back to the OS) on its free list again, linked and tagged afresh. Once
/// none is left (and no run lives in the page), the owner's frees take the
/// fast path again. The caller owns the page, which has no other free
/// block.
pub fn reclaim_given(page: &Page) {
    let given = page.given.load(Ordering::Relaxed);
    let index = given.trailing_zeros() as usize;
    let block = (page.start() + index * page.block_size()) as *mut Block;
    let rest = given & (given - 1);
    page.given.store(rest, Ordering::Relaxed);
    // SAFETY: a carved block of the page, free and on no list.
    unsafe { (*block).set_free(page.free.get()) };
    page.free.set(block);
    if rest == 0 {
        settle_slow_flag(page);
    }
}

/// The owner takes `SLOW_FLAG` off the page's owner word once nothing
/// keeps it there: a live run (see `runs`), a given block (see
/// `interiors`), secure mode. Its other flags stay.
pub fn settle_slow_flag(page: &Page) {
    let owner = page.heap.load(Ordering::Relaxed);
    if owner & SLOW_FLAG != 0
        && page.live_runs.load(Ordering::Relaxed) == 0
        && page.given.load(Ordering::Relaxed) == 0
        && !settings::secure()
    {
        page.heap.store(owner & !SLOW_FLAG, Ordering::Relaxed);
    }
}

/// Walks the page's free list, calling `first_time` with each block's
/// index; `first_time` says whether the index is new. The number of
/// blocks, or None when a link does not lead to a carved block of the page
/// (the pop that meets it reports the damage) or a block comes twice.
/// The caller owns the page.
pub fn walk_free_list(page: &Page, mut first_time: impl FnMut(usize) -> bool) -> Option<u32> {
    let size = page.block_size();
    let start = page.start();
    let end = start + page.capacity.load(Ordering::Relaxed) as usize * size;
    let mut count = 0u32;
    let mut block = page.free.get() as usize;
    while block != 0 {
        if block < start || block >= end || (block - start) % size != 0 {
            return None;
        }
        if !first_time((block - start) / size) {
            return None;
        }
        count += 1;
        // SAFETY: a carved block of the page, checked above.
        block = decode(unsafe { (*(block as *const Block)).link });
    }
    Some(count)
}

/// Moves the page's allocation count into its heap's totals (before the
/// page is set up again or its span leaves the heap).
pub fn fold_allocs(page: &Page, heap: &Heap) {
    let allocs = page.take_allocs();
    HeapStats::bump(&heap.stats.class_allocs[page.class.get() as usize], allocs);
}

/// True when all blocks of the page have been carved.
pub fn fully_carved(page: &Page) -> bool {
    page.capacity.load(Ordering::Relaxed) >= page.reserved.get()
}

/// Blocks carved at a time for pages of `block_size`.
fn extend_count(block_size: usize) -> usize {
    let min = if settings::secure() {
        SECURE_MIN_EXTEND_BLOCKS
    } else {
        MIN_EXTEND_BLOCKS
    };
    (EXTEND_BYTES / block_size).max(min)
}

/// True when the page has idle blocks: more free than one carving adds.
/// Carving happens only on an empty free list, so some of them were freed,
/// not just carved, and wait while the page's class is below its
/// high-water mark. (A class that is still growing has only freshly carved
/// blocks, which it is about to use itself. Also counting a page whose top
/// block was freed kept 1-4% less memory in prodcons, larson and fragment,
/// but borrowed so often that larson 1 ran 12% more instructions.)
pub fn has_idle_blocks(page: &Page) -> bool {
    let carved = page.capacity.load(Ordering::Relaxed) as usize;
    let free = carved.saturating_sub(page.live_blocks() as usize);
    free > extend_count(page.block_size()) && !page.free.get().is_null()
}

/// Carves the next few never-used blocks of the page onto its free list.
pub fn extend(page: &Page, heap: &Heap) {
    let block_size = page.block_size();
    let capacity = page.capacity.load(Ordering::Relaxed) as usize;
    let remaining = page.reserved.get() as usize - capacity;
    let count = extend_count(block_size).min(remaining);
    if count == 0 {
        return;
    }
    let first = page.start() + capacity * block_size;
    let mut next = page.free.get();
    if settings::secure() {
        // Shuffled slot order: an attacker cannot predict which block the
        // next malloc returns. Link the fresh blocks in a random permutation
        // by a Fisher–Yates walk over their indices.
        let mut rng = Rng::new(heap.rng.get());
        let mut order = [0u16; 256];
        let count = count.min(order.len());
        for (i, slot) in order.iter_mut().take(count).enumerate() {
            *slot = i as u16;
        }
        for i in (1..count).rev() {
            order.swap(i, rng.below(i + 1));
        }
        heap.rng.set(rng.next_u64());
        for &i in &order[..count] {
            let block = (first + i as usize * block_size) as *mut Block;
            // SAFETY: the block lies in the page's span, never handed out.
            unsafe { (*block).set_free(next) };
            next = block;
        }
        commit_carved(page, capacity + count, next);
        return;
    }
    // Never carved before, so zero when the page's memory was: calloc need
    // not clear the first block but for its link (see `Heap::fresh_block`).
    if page.is_zero.get() {
        heap.fresh_block.set(first);
    }
    // Link in address order, last block first, so the list runs upwards.
    for i in (0..count).rev() {
        let block = (first + i * block_size) as *mut Block;
        // SAFETY: the block lies in the page's span, never handed out.
        unsafe { (*block).set_free(next) };
        next = block;
    }
    commit_carved(page, capacity + count, next);
}

fn commit_carved(page: &Page, capacity: usize, free: *mut Block) {
    page.set_carved(capacity);
    page.free.set(free);
}
