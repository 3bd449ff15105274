//! Allocation. The fast path (`malloc`) pops a block from the current page
//! of the thread's heap: no lock, no atomic read-modify-write. Everything
//! else — medium sizes, refilling, alignment, large and huge blocks, threads
//! without a heap — is in `allocate`.

use core::ptr;

use crate::backend::page::Page;
use crate::backend::{self, huge};
use crate::config::{LARGE_MAX, MEDIUM_MAX, MIN_ALIGN, SLICE_SIZE};
use crate::diag::{self, Call, HeapError};
use crate::heap::backed_tails;
use crate::heap::collect::{self, CoreAccess};
use crate::heap::heap::{Heap, SHARED_STATS};
use crate::heap::page_ops;
use crate::heap::remote;
use crate::heap::runs;
use crate::heap::secure;
use crate::heap::size_class::{
    CLASS_COUNT, SLOT_CLASS, aligned_class, block_size, class_of, direct_slot, page_slices_of,
};
use crate::heap::thread;
use crate::settings;
use crate::stats;
use crate::tls;
use core::sync::atomic::Ordering;

/// malloc's fast path: a small request served from the current page of the
/// thread's heap. Anything else goes to `slow` (tail-called), which also
/// reports failure as its caller needs (errno, or the CMA last error).
#[inline(always)]
pub fn malloc(size: usize, slow: fn(usize) -> *mut u8) -> *mut u8 {
    let heap = tls::heap();
    if thread::below_fast_bound(size) {
        // SAFETY: the TLS heap pointer is the thread's heap or `NO_HEAP`.
        let heap = unsafe { &*heap };
        let slot = direct_slot(size);
        // SAFETY: the bound is at most SMALL_MAX + 1, so the slot is within
        // the table.
        let page = unsafe { heap.direct.get_unchecked(slot) }.get();
        // SAFETY: direct entries point to pages of this heap or the empty page.
        let block = unsafe { (*page).free.get() };
        if page_ops::can_pop(page, block) {
            // SAFETY: as above.
            return unsafe { page_ops::take(page, block) };
        }
        return current_page_empty(size, heap, slot, slow);
    }
    slow(size)
}

/// malloc's fast path found the current page empty (or its free list
/// corrupted): blocks of the class that this thread freed for other threads
/// come first, then the slow path.
#[inline(never)]
fn current_page_empty(
    size: usize,
    heap: &Heap,
    slot: usize,
    slow: fn(usize) -> *mut u8,
) -> *mut u8 {
    // SAFETY: direct entries point to pages of this heap or the empty page.
    unsafe { page_ops::empty_or_corrupted(heap.direct[slot].get()) };
    let block = remote::pop_foreign(heap, SLOT_CLASS[slot] as usize);
    if !block.is_null() {
        return block;
    }
    slow(size)
}

/// The general allocator: `size` bytes aligned to `align` (a power of two),
/// zeroed when `zero`. Returns null when the request exceeds the limit or
/// memory is exhausted (the caller sets errno).
#[inline(never)]
pub fn allocate(size: usize, align: usize, zero: bool) -> *mut u8 {
    if size > settings::size_limit() {
        return ptr::null_mut();
    }
    if tls::is_internal() {
        return allocate_internal(size, align, zero);
    }
    let heap = thread::acquire();
    if heap.is_null() {
        return allocate_through_core(size, align, zero);
    }
    // SAFETY: `acquire` returns the calling thread's own heap.
    let heap = unsafe { &*heap };
    heap.keeps_foreign.set(true);
    if secure::enabled() {
        secure::patrol(heap);
    }
    let size = secure::padded(size);
    let block = match route(size, align) {
        Route::Class(class, borrow) => {
            if zero {
                heap.fresh_block.set(0);
            }
            // calloc clears the whole class block: a stand-in must have
            // room for it.
            let stand_in = borrow.then_some(if zero { block_size(class) } else { size });
            let block = alloc_in_class(heap, class, stand_in, &mut CoreAccess::Take);
            let fresh = zero && !block.is_null() && block as usize == heap.fresh_block.get();
            Block::class(block, block_size(class), fresh)
        }
        Route::Large => alloc_large(size, align),
        Route::Huge => alloc_huge(size, align),
    };
    block.finish(zero)
}

/// Allocation for a thread without a heap: from the core's heap, under the
/// core lock.
#[cold]
fn allocate_through_core(size: usize, align: usize, zero: bool) -> *mut u8 {
    crate::init::ensure();
    let size = secure::padded(size);
    let block = match route(size, align) {
        Route::Class(class, _) => {
            let mut core = backend::lock();
            let heap = thread::core_heap();
            let block = alloc_in_class(heap, class, None, &mut CoreAccess::Held(&mut core));
            Block::new(block, block_size(class), false)
        }
        Route::Large => alloc_large(size, align),
        Route::Huge => alloc_huge(size, align),
    };
    block.finish(zero)
}

/// An allocation libc makes on CMA's behalf: served like any other, then
/// recorded so the statistics leave it out.
#[cold]
fn allocate_internal(size: usize, align: usize, zero: bool) -> *mut u8 {
    tls::set_internal(false);
    let block = allocate(size, align, zero);
    tls::set_internal(true);
    if !block.is_null()
        && let Ok(bytes) = crate::heap::free::block_bytes(block)
    {
        SHARED_STATS.internal_blocks.fetch_add(1, Ordering::Relaxed);
        SHARED_STATS
            .internal_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
    block
}

/// The usable size `allocate(size, align)` gives (0 when it cannot).
pub fn usable_size_for(size: usize, align: usize) -> usize {
    let padded = secure::padded(size);
    match route(padded, align.max(MIN_ALIGN)) {
        Route::Class(class, _) => secure::usable(block_size(class)),
        Route::Large => secure::usable(backend::span_usable_bytes(backend::large_slices(padded))),
        Route::Huge => {
            let offset = align.max(crate::config::OS_PAGE_SIZE);
            // Secure mode pads huge requests too (they carry no canary).
            (offset + padded.max(1)).next_multiple_of(crate::config::OS_PAGE_SIZE) - offset
        }
    }
}

enum Route {
    /// A size class, and whether a block of a slightly larger class may
    /// stand in (not when the class was picked for its alignment).
    Class(usize, bool),
    Large,
    Huge,
}

/// Where a request of `size` bytes aligned to `align` is served from.
fn route(size: usize, align: usize) -> Route {
    if align <= MIN_ALIGN && size <= MEDIUM_MAX {
        return Route::Class(class_of(size), true);
    }
    if align <= SLICE_SIZE
        && let Some(class) = aligned_class(size, align)
    {
        // Pages start on a slice boundary, so every block of a class whose
        // size is a multiple of `align` is aligned.
        return Route::Class(class, false);
    }
    if size <= LARGE_MAX && align <= LARGE_MAX && backend::large_fits(size, align) {
        return Route::Large;
    }
    Route::Huge
}

/// A block just allocated on a slow path.
struct Block {
    ptr: *mut u8,
    /// Bytes of the block (a small or large block's whole size; a huge
    /// block's usable size).
    bytes: usize,
    /// Known to be all zero already (fresh from the OS).
    zeroed: bool,
    /// A huge block (no canary: it ends in a guard page in secure mode).
    huge: bool,
}

impl Block {
    fn new(ptr: *mut u8, bytes: usize, zeroed: bool) -> Block {
        Block {
            ptr,
            bytes,
            zeroed,
            huge: false,
        }
    }

    /// A block of a size class; `fresh` when it was carved during this
    /// call from memory known to be zero, so all of it is zero but its
    /// link word (`take` already cleared the tag word).
    fn class(ptr: *mut u8, bytes: usize, fresh: bool) -> Block {
        if fresh {
            // SAFETY: a block of at least 16 bytes, ours.
            unsafe { ptr.cast::<usize>().write(0) };
        }
        Block::new(ptr, bytes, fresh)
    }

    /// Zeroes the block if asked and it is not known to be zero, and arms
    /// its secure-mode canary.
    fn finish(self, zero: bool) -> *mut u8 {
        if self.ptr.is_null() {
            return self.ptr;
        }
        if zero && !self.zeroed {
            // SAFETY: the block is ours and `bytes` long.
            unsafe { ptr::write_bytes(self.ptr, 0, self.bytes) };
        }
        if !self.huge {
            secure::arm(self.ptr, self.bytes);
        }
        self.ptr
    }
}

/// A block of `class` from `heap`: the current page first, then the
/// thread's foreign cache, else the slow path. With `stand_in`, the bytes
/// the caller needs, a block of a larger class or a run may stand in for
/// one of `class` (see `refill`).
pub fn alloc_in_class(
    heap: &Heap,
    class: usize,
    stand_in: Option<usize>,
    core: &mut CoreAccess,
) -> *mut u8 {
    let page = heap.queues[class].first.get();
    if !page.is_null() {
        // SAFETY: queued pages belong to this heap, owned by the caller.
        let block = unsafe { page_ops::pop(page) };
        if !block.is_null() {
            return block;
        }
    }
    let block = remote::pop_foreign(heap, class);
    if !block.is_null() {
        return block;
    }
    refill(heap, class, stand_in, core)
}

/// A block for a request of `class` once its current page and foreign
/// cache are out: first from the blocks other threads gave back, then from
/// a queued page with free blocks (taking full ones out), then (with
/// `stand_in`) an idle block of a slightly larger class, then (with
/// `stand_in`, for a medium class) a run of free blocks of a sparse small
/// page, long enough for the `stand_in` bytes, then from a queued page
/// carved further, then from a fresh page. Null when out of memory.
#[cold]
fn refill(heap: &Heap, class: usize, stand_in: Option<usize>, core: &mut CoreAccess) -> *mut u8 {
    remote::flush_all(heap);
    if let Err(block) = collect::collect_inbox(heap, core) {
        corrupted_inbox(block);
    }
    let page = match page_with_free_block(heap, class) {
        Ok(page) => page,
        Err(extendable) => {
            if let Some(bytes) = stand_in {
                let block = borrow_bigger(heap, class);
                if !block.is_null() {
                    return block;
                }
                if runs::serves(class) {
                    let run = runs::take(heap, class, bytes, core);
                    if !run.is_null() {
                        return run;
                    }
                }
            }
            grow(heap, class, extendable, core)
        }
    };
    if page.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: a page of this heap with a free block.
    unsafe { page_ops::pop(page) }
}

/// The first queued page of `class` with free blocks, made current (freed
/// blocks first: memory already touched is reused before more of a page
/// is carved); full pages met on the way leave the queue. Else the first
/// page that can be carved further, if any.
fn page_with_free_block(heap: &Heap, class: usize) -> Result<*mut Page, *mut Page> {
    let mut page = heap.queues[class].first.get();
    let mut extendable: *mut Page = ptr::null_mut();
    while !page.is_null() {
        // SAFETY: queued pages belong to this heap.
        let p = unsafe { &*page };
        let next = p.next.get();
        if !p.free.get().is_null() {
            heap.make_current(class, p);
            return Ok(page);
        }
        if p.given.load(Ordering::Relaxed) != 0 {
            page_ops::reclaim_given(p);
            heap.make_current(class, p);
            return Ok(page);
        }
        if !page_ops::fully_carved(p) {
            if extendable.is_null() {
                extendable = page;
            }
        } else {
            collect::mark_full(heap, p);
        }
        page = next;
    }
    Err(extendable)
}

/// A page of `class` with new blocks: `extendable` carved further, else a
/// page from the heap's span cache, else a fresh one from the core (null
/// when out of memory).
fn grow(heap: &Heap, class: usize, extendable: *mut Page, core: &mut CoreAccess) -> *mut Page {
    if !extendable.is_null() {
        // SAFETY: a queued page of this heap (found by the caller).
        let p = unsafe { &*extendable };
        page_ops::extend(p, heap);
        heap.make_current(class, p);
        return extendable;
    }
    backed_tails::give_back_due(heap);
    let slices = page_slices_of(class);
    let cached = heap.take_cached_span(slices, class);
    if !cached.is_null() {
        // SAFETY: an empty page of this heap's span cache.
        let p = unsafe { &*cached };
        // Set up again for another class, its span is backed beyond what
        // the new class carves (the same class finds its blocks carved,
        // and its tail as it was).
        let other_class = p.class.get() as usize != class;
        if other_class {
            page_ops::init_small(p, heap, class, false);
        }
        if p.free.get().is_null() {
            page_ops::extend(p, heap);
        }
        let tail_waits = p.freed_at_ms.get() != 0;
        backed_tails::note_set_up(heap, p, other_class || tail_waits);
        heap.make_current(class, p);
        return cached;
    }
    let page = core.with(|core| {
        let span = core.alloc_page_span(slices);
        stats::sample_peak_if_grown(core);
        span
    });
    if page.is_null() {
        return page;
    }
    // SAFETY: a fresh span from the core, now owned by this heap.
    let p = unsafe { &*page };
    page_ops::init_small(p, heap, class, p.is_zero.get());
    page_ops::extend(p, heap);
    backed_tails::note_set_up(heap, p, p.committed.get());
    heap.make_current(class, p);
    page
}

/// A block at most this much larger (in quarters of the size of the class
/// asked for) may stand in for it.
const BORROW_QUARTERS: usize = 7;
/// Pages looked at in the queue of each larger class. A class whose count
/// swings (random replacement) has free blocks scattered over several
/// pages, while its current page, in front, is the one it fills: looking
/// only there, mem_steady kept 4% more memory, fragment 3%, larson 2%.
const BORROW_PAGES: usize = 4;

/// An idle block of a slightly larger class (freed, so already backed):
/// from one of the first pages in its queue, or from the thread's foreign
/// cache of that class. A class out of free blocks borrows one instead of
/// carving fresh memory. Neighbouring classes then share their idle
/// blocks, and the heap keeps backed about the most their sum was live at
/// once, not the sum of each class's own high-water mark (prodcons,
/// threads_churn: the count live in each class swings, and each class's
/// swings up would otherwise each keep their own memory). Not in secure
/// mode (the canary sits at the end of the block of the class asked for).
fn borrow_bigger(heap: &Heap, class: usize) -> *mut u8 {
    if secure::enabled() || class == 0 {
        return ptr::null_mut();
    }
    // At most `BORROW_QUARTERS` quarters of the size, so the waste stays
    // small; and less than twice the blocks of the class below, which
    // every request of `class` exceeds: a sized free of the size asked
    // for then still passes (it accepts sizes above half the usable one).
    let limit = (block_size(class) * BORROW_QUARTERS / 4).min(2 * block_size(class - 1));
    let mut bigger = class + 1;
    while bigger < CLASS_COUNT && block_size(bigger) <= limit {
        let mut page = heap.queues[bigger].first.get();
        let mut looked = 0;
        while !page.is_null() && looked < BORROW_PAGES {
            // SAFETY: queued pages belong to this heap, owned by the caller.
            let p = unsafe { &*page };
            if page_ops::has_idle_blocks(p) {
                // SAFETY: as above; the page has a free block.
                return unsafe { page_ops::pop(page) };
            }
            page = p.next.get();
            looked += 1;
        }
        let block = remote::pop_foreign(heap, bigger);
        if !block.is_null() {
            return block;
        }
        bigger += 1;
    }
    ptr::null_mut()
}

#[cold]
fn corrupted_inbox(block: usize) -> ! {
    diag::fatal(Call::Malloc, block, HeapError::Corrupted)
}

/// A large block: a span of its own from the core.
fn alloc_large(size: usize, align: usize) -> Block {
    let mut core = backend::lock();
    let span = core.alloc_large(size, align);
    if span.is_null() {
        return Block::new(ptr::null_mut(), 0, false);
    }
    // SAFETY: a live large span head, under the lock.
    let page = unsafe { &*span };
    let zeroed = page.is_zero.get();
    page.is_zero.set(false);
    let block = Block::new(page.start() as *mut u8, page.block_size(), zeroed);
    stats::sample_peak_if_grown(&mut core);
    block
}

/// A huge block: a mapping of its own.
fn alloc_huge(size: usize, align: usize) -> Block {
    let (ptr, usable) = huge::alloc(size, align);
    if !ptr.is_null() {
        let mut core = backend::lock();
        huge::note_allocated(&mut core, ptr, usable);
        stats::sample_peak_if_grown(&mut core);
    }
    Block {
        ptr,
        bytes: usable,
        zeroed: true,
        huge: true,
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::Ordering;

    use crate::backend::segment::Segment;
    use crate::heap::c_entry::{free, malloc};
    use crate::heap::page_ops;

    /// Once the current page of a class has no free block left, a free
    /// block in another page of the class is used before the current page
    /// is carved further: memory already touched comes first (larson with
    /// 8 threads peaked 9% lower once refill worked this way).
    #[test]
    fn refill_reuses_a_freed_block_before_carving() {
        const SIZE: usize = 3500; // a class few other tests use
        let mut blocks = [core::ptr::null_mut::<u8>(); 256];
        let mut taken = 0;
        // Allocate until the current page has used up what it carved while
        // it still has blocks to carve, and an earlier block lies in another
        // page.
        let (current, earlier) = loop {
            assert!(taken < blocks.len(), "no such state in 256 blocks");
            // SAFETY: a plain allocation, freed below.
            let block = unsafe { malloc(SIZE) };
            assert!(!block.is_null());
            blocks[taken] = block;
            taken += 1;
            // SAFETY: a live small block: its page descriptor is mapped.
            let page = unsafe { &*Segment::page_of(block as usize) };
            let elsewhere = blocks[..taken]
                .iter()
                .position(|&b| !core::ptr::eq(Segment::page_of(b as usize), page));
            if let Some(index) = elsewhere
                && page.free.get().is_null()
                && !page_ops::fully_carved(page)
            {
                break (page, index);
            }
        };
        let carved = current.capacity.load(Ordering::Relaxed);
        let freed = blocks[earlier];
        // SAFETY: a live block of this test, freed once (taken out below).
        unsafe { free(freed) };
        blocks[earlier] = blocks[taken - 1];
        taken -= 1;
        // SAFETY: a plain allocation, freed below.
        let block = unsafe { malloc(SIZE) };
        blocks[taken] = block;
        taken += 1;
        assert_eq!(
            current.capacity.load(Ordering::Relaxed),
            carved,
            "the current page was carved although another page had a free block"
        );
        assert!(!core::ptr::eq(Segment::page_of(block as usize), current));
        for &block in &blocks[..taken] {
            // SAFETY: live blocks of this test, each freed once.
            unsafe { free(block) };
        }
    }
}
