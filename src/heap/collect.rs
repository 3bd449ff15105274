//! The owner's bookkeeping after frees: taking blocks other threads left in
//! the inbox, putting full pages back in their queue, and giving empty pages
//! back to the core.

use core::sync::atomic::Ordering;

use crate::backend::page::{FULL_FLAG, Page, PageKind};
use crate::backend::region_map;
use crate::backend::segment::Segment;
use crate::backend::{self, Core};
use crate::config::{CHECKS, SLICE_SIZE};
use crate::heap::block::Block;
use crate::heap::heap::{Heap, HeapStats};
use crate::heap::page_ops;
use crate::os::decommit_batch::DecommitBatch;
use crate::purge;

/// How a heap operation reaches the core: the caller holds the lock
/// already, or the operation takes it when it needs it.
pub enum CoreAccess<'a> {
    Held(&'a mut Core),
    Take,
}

impl CoreAccess<'_> {
    pub fn with<R>(&mut self, f: impl FnOnce(&mut Core) -> R) -> R {
        match self {
            CoreAccess::Held(core) => f(core),
            CoreAccess::Take => f(&mut backend::lock()),
        }
    }
}

/// Frees every block other threads pushed into `heap`'s inbox into its
/// page. Each entry is checked to be a free-tagged block of this heap's
/// pages; on a bad one, returns it as `Err` (the inbox was corrupted, by a
/// use-after-free write for example).
pub fn collect_inbox(heap: &Heap, core: &mut CoreAccess) -> Result<(), usize> {
    if heap.inbox.load(Ordering::Relaxed) == 0 {
        return Ok(());
    }
    let mut entry = heap.inbox.swap(0, Ordering::Acquire);
    while entry != 0 {
        if !region_map::is_segment(entry) {
            return Err(entry);
        }
        // SAFETY: `entry` lies in a mapped segment.
        let page = unsafe { &*Segment::page_of(entry) };
        let block = entry as *mut Block;
        // SAFETY: the block lies in one of our segments; reading its words is
        // safe, and the checks below decide whether to trust them.
        let tagged = unsafe { (*block).is_tagged_free() };
        if CHECKS
            && (page.kind() != PageKind::Small
                || page.owner() != heap.as_ptr() as usize
                || !page.is_block_start(entry)
                || !tagged
                || page.is_given(entry))
        {
            return Err(entry);
        }
        // SAFETY: as above.
        let next = unsafe { (*block).next() };
        HeapStats::bump(&heap.stats.drained_blocks, 1);
        HeapStats::bump(&heap.stats.drained_bytes, page.block_size() as u64);
        // SAFETY: checked above: a free-tagged carved block of this heap's
        // page, handed over by the thread that freed it.
        unsafe { free_to_page(heap, page, block, core) };
        entry = next;
    }
    Ok(())
}

/// Puts a block of `heap`'s page back on the page's free list, and does the
/// page's bookkeeping.
///
/// # Safety
/// `block` is a live (not free-tagged) carved block of `page`, which `heap`
/// owns and the calling thread operates on.
pub unsafe fn free_to_page(heap: &Heap, page: &Page, block: *mut Block, core: &mut CoreAccess) {
    if page.heap.load(Ordering::Relaxed) & FULL_FLAG != 0 {
        unfull(heap, page);
    }
    // SAFETY: a carved block of this page, owned by this heap's thread.
    unsafe { (*block).set_free(page.free.get()) };
    page.free.set(block);
    if page.count_free_is_last() {
        retire(heap, page, core, false);
    }
}

/// A full page got a block back: requeue it. Its other flags stay.
pub fn unfull(heap: &Heap, page: &Page) {
    let owner = page.heap.load(Ordering::Relaxed);
    page.heap.store(owner & !FULL_FLAG, Ordering::Relaxed);
    heap.enqueue_back(page.class.get() as usize, page);
}

/// Takes a page out of its queue because it has no free block left; the
/// owner's next free into it takes the slow path (`FULL_FLAG`). The flags it
/// has stay: `SLOW_FLAG` says a run lives in it or a block went back to the
/// OS, and the owner's free into a page with only `FULL_FLAG` checks
/// neither (`free::free_into_full_page`).
pub fn mark_full(heap: &Heap, page: &Page) {
    heap.dequeue(page.class.get() as usize, page);
    let owner = page.heap.load(Ordering::Relaxed);
    page.heap.store(owner | FULL_FLAG, Ordering::Relaxed);
}

/// All blocks of the page are free and it is not its class's current page
/// (which holds an extra count): give its span back to the core.
#[inline(never)]
pub fn page_emptied(heap: &Heap, page: &Page) {
    retire(heap, page, &mut CoreAccess::Take, false);
}

/// Gives an empty page's span back to the core: kept in the heap's span
/// cache if there is room, unless `decommitted` (its memory already given
/// back to the OS), which sends it to the core counted clean.
fn retire(heap: &Heap, page: &Page, core: &mut CoreAccess, decommitted: bool) {
    if page.in_queue.get() {
        heap.dequeue(page.class.get() as usize, page);
    }
    // Kept whole (still a page of its class, every block free and tagged):
    // a stale pointer into it is still recognised as a double free. Not
    // with given blocks (on no free list: they would be lost to the cache's
    // next user).
    let given = page.given.load(Ordering::Relaxed) != 0;
    if decommitted || given || !heap.cache_span(page, crate::os::clock::now_ms()) {
        page.given.store(0, Ordering::Relaxed);
        page_ops::fold_allocs(page, heap);
        page.free.set(core::ptr::null_mut());
        core.with(|core| {
            if decommitted {
                core.free_page_span_decommitted(page);
            } else {
                core.free_page_span(page);
            }
            purge::after_release(core);
        });
        if let CoreAccess::Take = core {
            purge::kick();
        }
    }
}

/// At thread exit: collect the inbox and retire every empty page, so an
/// orphaned heap holds only pages with live blocks and its bounded span
/// cache (warm pages for the thread that adopts it).
///
/// With `decommit_small` (a heap that will not wait warm for a new thread)
/// its empty single-slice pages go back to the core with their memory
/// given back to the OS now, instead of waiting backed for the purge
/// delay. A new thread that needs pages meanwhile carves fresh memory page
/// by page as it uses it, and leaves such idle spans alone. (With 8
/// threads started and ended in turn, threads_churn's peak RSS went from
/// 7.8 to 6.4 MiB. Pages of bigger blocks keep their memory: mem_threads,
/// whose threads allocate 4 MiB each in blocks up to 32 KiB and whose
/// next threads reuse those pages at once, ran 19% longer when they were
/// given back too.)
///
/// Their memory goes back in one batch (`DecommitBatch`: one system call
/// and one TLB flush for up to 64 pages, instead of one madvise each, made
/// while the other threads wait for the core lock): with every exiting
/// thread's heap sent back so, threads_churn 8 ran in 1.28 s instead of
/// 1.54.
pub fn release_empty_pages(
    heap: &Heap,
    core: &mut Core,
    decommit_small: bool,
) -> Result<(), usize> {
    let mut access = CoreAccess::Held(core);
    collect_inbox(heap, &mut access)?;
    let decommits = |p: &Page| decommit_small && p.live_blocks() == 0 && p.slice_count() == 1;
    if decommit_small {
        let mut batch = DecommitBatch::new();
        heap.for_each_queued_page(0..heap.queues.len(), |p| {
            if decommits(p) {
                batch.add(p.start(), SLICE_SIZE);
            }
        });
        batch.flush();
    }
    heap.for_each_queued_page(0..heap.queues.len(), |p| {
        if p.live_blocks() == 0 {
            retire(heap, p, &mut access, decommits(p));
        }
    });
    Ok(())
}
