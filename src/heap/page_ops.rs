//! Operations on a page of equal-sized blocks, by its owner: set-up,
//! carving more blocks, and popping a block (the heart of malloc).

use core::sync::atomic::Ordering;

use crate::backend::page::{Page, PageKind};
use crate::backend::segment::Segment;
use crate::config::SLICE_SIZE;
use crate::diag::{self, Call, HeapError};
use crate::heap::block::Block;
use crate::heap::heap::Heap;
use crate::heap::size_class::block_size_of;
use crate::os::random::Rng;
use crate::settings;

/// Bytes of new blocks carved at a time: small, so a fresh page is touched
/// (and backed by physical memory) only as it is used.
const EXTEND_BYTES: usize = 4096;
const MIN_EXTEND_BLOCKS: usize = 4;

/// Pops a block from the page's free list, or returns null when the list is
/// empty. Checks the next link before trusting it: a link smashed by a
/// use-after-free write or an overflow decodes outside the page.
///
/// # Safety
/// `page` is a small page owned by the calling thread's heap (or the empty
/// page).
#[inline(always)]
pub unsafe fn pop(page: *mut Page) -> *mut u8 {
    // SAFETY: the caller owns the page.
    let page = unsafe { &*page };
    let block = page.free.get();
    if block.is_null() {
        return block.cast();
    }
    // SAFETY: blocks on the free list are carved blocks of this page.
    let next = unsafe { (*block).next() };
    if next.wrapping_sub(page.start()) >= page.carved_bytes.load(Ordering::Relaxed) as usize
        && next != 0
    {
        corrupted_link(block as usize);
    }
    // SAFETY: as above.
    unsafe { (*block).clear_tag() };
    page.free.set(next as *mut Block);
    page.used.set(page.used.get() + 1);
    block.cast()
}

#[cold]
#[inline(never)]
fn corrupted_link(block: usize) -> ! {
    diag::fatal(Call::Malloc, block, HeapError::Corrupted)
}

/// Sets up a span fresh from the core as a page of `class` owned by `heap`.
pub fn init_small(page: &Page, heap: &Heap, class: usize) {
    let block_size = block_size_of(class);
    let segment = Segment::of(page as *const Page as usize);
    let start = segment as usize + page.slice_index as usize * SLICE_SIZE;
    let span_bytes = page.slice_count() * SLICE_SIZE;
    page.block_size.store(block_size as u32, Ordering::Relaxed);
    page.start.store(start, Ordering::Relaxed);
    page.divisor_magic
        .store(Page::divisor_magic_for(block_size), Ordering::Relaxed);
    page.carved_bytes.store(0, Ordering::Relaxed);
    page.reserved.set((span_bytes / block_size) as u32);
    page.capacity.set(0);
    page.free.set(core::ptr::null_mut());
    page.local_free.set(core::ptr::null_mut());
    page.used.set(0);
    page.class.set(class as u8);
    page.in_queue.set(false);
    page.set_kind(PageKind::Small);
    page.heap.store(heap.as_ptr() as usize, Ordering::Relaxed);
}

/// True when all blocks of the page have been carved.
pub fn fully_carved(page: &Page) -> bool {
    page.capacity.get() >= page.reserved.get()
}

/// Carves the next few never-used blocks of the page onto its free list.
pub fn extend(page: &Page, heap: &Heap) {
    let block_size = page.block_size();
    let capacity = page.capacity.get() as usize;
    let remaining = page.reserved.get() as usize - capacity;
    let count = (EXTEND_BYTES / block_size)
        .max(MIN_EXTEND_BLOCKS)
        .min(remaining);
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
        heap.rng.set(rng.next());
        for &i in &order[..count] {
            let block = (first + i as usize * block_size) as *mut Block;
            // SAFETY: the block lies in the page's span, never handed out.
            unsafe { (*block).set_free(next) };
            next = block;
        }
        commit_carved(page, capacity + count, next);
        return;
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
    page.capacity.set(capacity as u32);
    page.carved_bytes
        .store((capacity * page.block_size()) as u32, Ordering::Relaxed);
    page.free.set(free);
}

/// Makes blocks the owner freed available for allocation again.
pub fn collect_local(page: &Page) {
    if page.free.get().is_null() {
        page.free.set(page.local_free.get());
        page.local_free.set(core::ptr::null_mut());
    }
}
