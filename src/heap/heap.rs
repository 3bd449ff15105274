//! A heap: what one thread allocates from without locks. It owns pages of
//! every size class (each class a queue, the first page the current one), a
//! direct table from small request sizes to the current page, an inbox where
//! other threads leave the blocks of this heap they free, and counters.

use core::ptr;
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

use crate::backend::page::{Owned, Page, SLOW_FLAG};
use crate::config::SLICE_SIZE;
use crate::heap::block::Block;
use crate::heap::runs::RunPool;
use crate::heap::secure::QUARANTINE_SLOTS;
use crate::heap::size_class::{CLASS_COUNT, DIRECT_SLOTS, FOREIGN_CLASSES, direct_slot_range};

/// The descriptor every empty direct-table entry points to: it has no free
/// blocks, so the fast path falls through to the slow path without a check.
pub struct EmptyPage(pub Page);
// SAFETY: the empty page is never written: its free list stays null.
unsafe impl Sync for EmptyPage {}
pub static EMPTY_PAGE: EmptyPage = EmptyPage(Page::empty());

#[inline(always)]
pub fn empty_page() -> *mut Page {
    &EMPTY_PAGE.0 as *const Page as *mut Page
}

/// What a heap adds to the process-wide statistics beyond its pages'
/// own counts (`Page::allocs`, `Page::used`), which the statistics walk
/// reads directly: so the malloc and free fast paths keep no counters of
/// their own. Written by the owning thread (relaxed load and store);
/// read by anyone.
#[repr(C)]
pub struct HeapStats {
    /// Allocations per size class counted by pages that have since been set
    /// up again, or handed out from the foreign cache.
    pub class_allocs: [AtomicU64; CLASS_COUNT],
    /// Blocks (and their usable bytes) this thread freed into other heaps'
    /// inboxes: still counted as live by their pages until collected.
    pub remote_blocks: AtomicU64,
    pub remote_bytes: AtomicU64,
    /// Blocks (and bytes) collected from this heap's inbox.
    pub drained_blocks: AtomicU64,
    pub drained_bytes: AtomicU64,
    /// Blocks (and bytes) of other heaps that this thread freed and then
    /// handed out again itself (live again; counted in `remote_*` too).
    pub reused_blocks: AtomicU64,
    pub reused_bytes: AtomicU64,
    /// Blocks (and bytes) in this heap's secure-mode quarantine: freed, but
    /// still counted as live by their pages.
    pub quarantined_blocks: AtomicU64,
    pub quarantined_bytes: AtomicU64,
    /// Allocations per class of pages the purge thread took from this
    /// heap's span cache (atomic adds: not the owner's counters).
    pub taken_allocs: [AtomicU64; CLASS_COUNT],
    /// Blocks (and bytes) libc allocated on CMA's own behalf (the stack
    /// bookkeeping of the purge thread), left out of the statistics.
    pub internal_blocks: AtomicU64,
    pub internal_bytes: AtomicU64,
    /// Runs (see `runs`; atomic adds, in `SHARED_STATS` only): the blocks
    /// of a live run past its first, which its page counts as live too;
    /// and the free blocks (and bytes) a heap took off a page's free list
    /// to cut runs from, which the page counts as live until cut or given
    /// back.
    pub run_extra_blocks: AtomicU64,
    pub pooled_blocks: AtomicU64,
    pub pooled_bytes: AtomicU64,
}

impl HeapStats {
    pub const fn new() -> HeapStats {
        HeapStats {
            class_allocs: [const { AtomicU64::new(0) }; CLASS_COUNT],
            remote_blocks: AtomicU64::new(0),
            remote_bytes: AtomicU64::new(0),
            drained_blocks: AtomicU64::new(0),
            drained_bytes: AtomicU64::new(0),
            reused_blocks: AtomicU64::new(0),
            reused_bytes: AtomicU64::new(0),
            quarantined_blocks: AtomicU64::new(0),
            quarantined_bytes: AtomicU64::new(0),
            taken_allocs: [const { AtomicU64::new(0) }; CLASS_COUNT],
            internal_blocks: AtomicU64::new(0),
            internal_bytes: AtomicU64::new(0),
            run_extra_blocks: AtomicU64::new(0),
            pooled_blocks: AtomicU64::new(0),
            pooled_bytes: AtomicU64::new(0),
        }
    }

    /// Adds to an owner-written counter (no read-modify-write); wrapping,
    /// so `u64::MAX` subtracts one.
    #[inline]
    pub fn bump(counter: &AtomicU64, by: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(by),
            Ordering::Relaxed,
        );
    }
}

impl Default for HeapStats {
    fn default() -> HeapStats {
        HeapStats::new()
    }
}

/// The `remote_*` counters of threads that have no heap of their own (not
/// yet allocated, or past their exit): updated with atomic adds.
pub static SHARED_STATS: HeapStats = HeapStats::new();

/// Blocks of one other heap this thread freed, waiting to be sent (see
/// `remote`). Owner-only.
#[repr(C)]
pub struct Outbox {
    pub owner: Owned<*mut Heap>,
    pub head: Owned<*mut Block>,
    pub tail: Owned<*mut Block>,
    pub count: Owned<u32>,
}

impl Outbox {
    pub const fn new() -> Outbox {
        Outbox {
            owner: Owned::new(ptr::null_mut()),
            head: Owned::new(ptr::null_mut()),
            tail: Owned::new(ptr::null_mut()),
            count: Owned::new(0),
        }
    }
}

/// Outboxes per heap (one per recent destination heap).
pub const OUTBOX_SLOTS: usize = 4;

/// Pages of one size class with (possibly) free blocks; the first is the one
/// allocated from.
#[repr(C)]
pub struct PageQueue {
    pub first: Owned<*mut Page>,
    pub last: Owned<*mut Page>,
}

impl PageQueue {
    pub const fn new() -> PageQueue {
        PageQueue {
            first: Owned::new(ptr::null_mut()),
            last: Owned::new(ptr::null_mut()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first.get().is_null()
    }

    pub fn push_front(&self, page: &Page) {
        let p = page as *const Page as *mut Page;
        page.prev.set(ptr::null_mut());
        page.next.set(self.first.get());
        if self.first.get().is_null() {
            self.last.set(p);
        } else {
            // SAFETY: queued pages are live descriptors owned by this heap.
            unsafe { (*self.first.get()).prev.set(p) };
        }
        self.first.set(p);
        page.in_queue.set(true);
    }

    pub fn push_back(&self, page: &Page) {
        let p = page as *const Page as *mut Page;
        page.next.set(ptr::null_mut());
        page.prev.set(self.last.get());
        if self.last.get().is_null() {
            self.first.set(p);
        } else {
            // SAFETY: queued pages are live descriptors owned by this heap.
            unsafe { (*self.last.get()).next.set(p) };
        }
        self.last.set(p);
        page.in_queue.set(true);
    }

    pub fn remove(&self, page: &Page) {
        let (prev, next) = (page.prev.get(), page.next.get());
        if prev.is_null() {
            self.first.set(next);
        } else {
            // SAFETY: queued pages are live descriptors owned by this heap.
            unsafe { (*prev).next.set(next) };
        }
        if next.is_null() {
            self.last.set(prev);
        } else {
            // SAFETY: as above.
            unsafe { (*next).prev.set(prev) };
        }
        page.next.set(ptr::null_mut());
        page.prev.set(ptr::null_mut());
        page.in_queue.set(false);
    }
}

impl Default for PageQueue {
    fn default() -> PageQueue {
        PageQueue::new()
    }
}

/// An orphan's `Heap::interiors`: not given back since it was orphaned.
pub const INTERIORS_PENDING: u8 = 0;
/// Due: a thread without the core lock is to give them back
/// (`thread::give_back_orphan_interiors`).
pub const INTERIORS_WANTED: u8 = 1;
/// A thread is walking the orphan's pages without the core lock: nobody
/// adopts the orphan or touches its pages meanwhile.
pub const INTERIORS_BUSY: u8 = 2;
/// Given back (a `malloc_trim` does it again).
pub const INTERIORS_GIVEN: u8 = 3;

/// Empty pages a heap keeps for itself, at most, and their bytes at most:
/// enough that a thread whose pages empty and refill (blocks freed by other
/// threads, short-lived bursts) rarely needs the core lock. The bytes are
/// those of as many single-slice pages: a page of big blocks (up to 1 MiB)
/// that empties goes back to the core, whose spans any size can use. (At
/// 2 MiB, realloc_chain's peak RSS was 14.3 MiB instead of 10.4: its
/// emptied pages of one size waited in the cache while it took fresh spans
/// for the next.)
pub const SPAN_CACHE_SLOTS: usize = 8;
pub const SPAN_CACHE_MAX_BYTES: usize = SPAN_CACHE_SLOTS * SLICE_SIZE;

/// Only single-slice pages (blocks up to 8 KiB) hold the extra count: a
/// malloc/free loop on a hot small size never gives its page back, while an
/// emptied page of big blocks goes to the span cache (and, once idle, to
/// the OS) at once.
fn gain_current(page: &Page) {
    if page.slice_count() == 1 {
        page.set_used(page.used() + 1);
        page.is_current.store(true, Ordering::Relaxed);
    }
}

fn lose_current(page: &Page) {
    if page.is_current.load(Ordering::Relaxed) {
        page.is_current.store(false, Ordering::Relaxed);
        page.set_used(page.used() - 1);
    }
}

/// A slot of a heap's span cache.
#[repr(C)]
pub struct CachedSpan {
    pub page: AtomicPtr<Page>,
    /// The page's length in slices and class, and when it was cached; read
    /// without touching the page (which the purge thread may take).
    pub slices: AtomicU32,
    pub class: AtomicU8,
    pub cached_at_ms: AtomicU64,
}

impl CachedSpan {
    pub const fn new() -> CachedSpan {
        CachedSpan {
            page: AtomicPtr::new(ptr::null_mut()),
            slices: AtomicU32::new(0),
            class: AtomicU8::new(0),
            cached_at_ms: AtomicU64::new(0),
        }
    }

    /// Takes the page out of the slot (null if it is empty).
    pub fn take(&self) -> *mut Page {
        self.page.swap(ptr::null_mut(), Ordering::Acquire)
    }
}

/// Lifecycle of a heap structure (heaps are never unmapped, only reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum HeapState {
    /// Owned by a live thread.
    Live = 0,
    /// Its thread exited; waiting in the core to be adopted by a new thread.
    Orphaned = 1,
    /// Left behind in a forked child by a thread that does not exist there;
    /// never adopted (its state may be mid-update), only freed into.
    Lost = 2,
    /// Special heaps of the core (see `heap::thread`).
    Special = 3,
}

#[repr(C)]
pub struct Heap {
    /// Current page for each small request size (`direct_slot`).
    pub direct: [Owned<*mut Page>; DIRECT_SLOTS],
    pub stats: HeapStats,
    /// Pages with free blocks, per size class.
    pub queues: [PageQueue; CLASS_COUNT],
    pub state: AtomicU8,
    /// Kernel id of the owning thread (diagnostics, stats).
    pub thread_id: AtomicU64,
    /// Every heap ever created, linked once and never unlinked.
    pub registry_next: AtomicPtr<Heap>,
    /// The core's list of orphaned heaps (under the core lock).
    pub orphan_next: AtomicPtr<Heap>,
    /// When the heap was orphaned (ms), and whether the core has since
    /// taken back its free memory (under the core lock).
    pub orphaned_at_ms: AtomicU64,
    pub trimmed: AtomicBool,
    /// Whether a thread ever adopted it: false while its first thread owns
    /// it (under the core lock).
    pub adopted: AtomicBool,
    /// How far the orphan is with giving back the inside of its free blocks
    /// since it was orphaned (`INTERIORS_*`, see `interiors`; under the
    /// core lock).
    pub interiors: AtomicU8,
    /// Empty pages kept for reuse without the core lock (see
    /// `take_cached_span`): unlinked, all blocks free. The owner fills and
    /// takes slots; the purge thread may take a slot that has waited past
    /// the purge delay (so an idle thread's cache goes back too): whoever
    /// swaps the pointer out owns the page.
    pub span_cache: [CachedSpan; SPAN_CACHE_SLOTS],
    /// Blocks of other heaps freed by this thread, waiting to be sent.
    pub outbox: [Outbox; OUTBOX_SLOTS],
    /// Blocks of other heaps freed by this thread and kept for its own
    /// reuse, per small class (see `remote`).
    pub foreign: [Owned<*mut Block>; FOREIGN_CLASSES],
    pub foreign_count: [Owned<u32>; FOREIGN_CLASSES],
    /// Whether `foreign` takes blocks: only once the thread has allocated
    /// through the slow path. A thread that starts by freeing blocks dealt
    /// to it by another (cache-scratch style) must not reuse them: they
    /// share cache lines with the blocks of other threads.
    pub keeps_foreign: Owned<bool>,
    /// Secure mode: blocks freed by this thread waiting to be reused (see
    /// `secure::quarantine`); slots are atomic so the statistics can read.
    pub quarantine: [AtomicUsize; QUARANTINE_SLOTS],
    pub quarantine_next: Owned<usize>,
    /// The slot `secure::patrol` checks next.
    pub patrol_next: Owned<usize>,
    /// Pseudo-random state for secure mode's shuffled free lists.
    pub rng: Owned<u64>,
    /// Free blocks of a sparse small page taken to cut runs from (see
    /// `runs`). Owner-only, but for its count of freed runs (atomic: any
    /// thread may free a run).
    pub runs: RunPool,
    /// When the first never-carved tail of a page set up on a backed span
    /// is due to be given back (ms; `u64::MAX`: none waits). See
    /// `backed_tails`.
    pub tails_due_ms: Owned<u64>,
    /// The block `page_ops::extend` last carved first from memory known to
    /// be zero (0: none). calloc clears it, allocates, and skips zeroing
    /// when it gets that very block: carved during its own call, the block
    /// is zero but for its link word.
    pub fresh_block: Owned<usize>,
    _pad: [u8; 64],
    /// Blocks of this heap freed by other threads: a lock-free stack of
    /// encoded links, pushed by anyone, taken whole by the owner.
    pub inbox: AtomicUsize,
    _pad_after: [u8; 56],
}

impl Heap {
    pub const fn new() -> Heap {
        Heap {
            direct: [const { Owned::new(&EMPTY_PAGE.0 as *const Page as *mut Page) }; DIRECT_SLOTS],
            stats: HeapStats::new(),
            queues: [const { PageQueue::new() }; CLASS_COUNT],
            state: AtomicU8::new(HeapState::Live as u8),
            thread_id: AtomicU64::new(0),
            registry_next: AtomicPtr::new(ptr::null_mut()),
            orphan_next: AtomicPtr::new(ptr::null_mut()),
            orphaned_at_ms: AtomicU64::new(0),
            trimmed: AtomicBool::new(false),
            adopted: AtomicBool::new(false),
            interiors: AtomicU8::new(INTERIORS_PENDING),
            span_cache: [const { CachedSpan::new() }; SPAN_CACHE_SLOTS],
            outbox: [const { Outbox::new() }; OUTBOX_SLOTS],
            foreign: [const { Owned::new(ptr::null_mut()) }; FOREIGN_CLASSES],
            foreign_count: [const { Owned::new(0) }; FOREIGN_CLASSES],
            keeps_foreign: Owned::new(false),
            quarantine: [const { AtomicUsize::new(0) }; QUARANTINE_SLOTS],
            quarantine_next: Owned::new(0),
            patrol_next: Owned::new(0),
            rng: Owned::new(0),
            runs: RunPool::new(),
            tails_due_ms: Owned::new(u64::MAX),
            fresh_block: Owned::new(0),
            _pad: [0; 64],
            inbox: AtomicUsize::new(0),
            _pad_after: [0; 56],
        }
    }

    pub fn state(&self) -> HeapState {
        match self.state.load(Ordering::Relaxed) {
            0 => HeapState::Live,
            1 => HeapState::Orphaned,
            2 => HeapState::Lost,
            _ => HeapState::Special,
        }
    }

    pub fn set_state(&self, state: HeapState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Points the direct-table entries of `class` at its current page (or
    /// the empty page). Classes above the table's range have no entries.
    fn update_direct(&self, class: usize) {
        let first = self.queues[class].first.get();
        let page = if first.is_null() { empty_page() } else { first };
        let (lo, hi) = direct_slot_range(class);
        if lo >= DIRECT_SLOTS {
            return;
        }
        for slot in &self.direct[lo..=hi.min(DIRECT_SLOTS - 1)] {
            slot.set(page);
        }
    }

    // The current page of a class (the first of its queue) holds one extra
    // count in `used`, so it never reaches zero while current: the free fast
    // path's "page became empty" branch is then taken only by pages that
    // really can be given back, never by the page a malloc/free loop keeps
    // reusing. The queue operations below maintain that count and the
    // direct table. A page that loses the extra count may be left empty in
    // its queue; it is reused by the next refill or given back at exit.

    /// Makes `page` (queued or not) the current page of `class`.
    pub fn make_current(&self, class: usize, page: &Page) {
        let queue = &self.queues[class];
        let old = queue.first.get();
        if ptr::eq(old, page) {
            return;
        }
        if page.in_queue.get() {
            queue.remove(page);
        }
        queue.push_front(page);
        gain_current(page);
        if !old.is_null() {
            // SAFETY: queued pages are live descriptors owned by this heap.
            lose_current(unsafe { &*old });
        }
        self.update_direct(class);
    }

    /// Calls `f` on every queued page of the classes in `classes`, in queue
    /// order. `f` may take the page it is given out of its queue. By the
    /// heap's owner only.
    pub fn for_each_queued_page(&self, classes: core::ops::Range<usize>, mut f: impl FnMut(&Page)) {
        for queue in &self.queues[classes] {
            let mut page = queue.first.get();
            while !page.is_null() {
                // SAFETY: queued pages are live descriptors owned by this heap.
                let p = unsafe { &*page };
                page = p.next.get();
                f(p);
            }
        }
    }

    /// Appends `page` to the queue of `class`.
    pub fn enqueue_back(&self, class: usize, page: &Page) {
        let queue = &self.queues[class];
        let was_empty = queue.is_empty();
        queue.push_back(page);
        if was_empty {
            gain_current(page);
            self.update_direct(class);
        }
    }

    /// Takes `page` out of the queue of `class`.
    pub fn dequeue(&self, class: usize, page: &Page) {
        let queue = &self.queues[class];
        let was_first = ptr::eq(queue.first.get(), page);
        queue.remove(page);
        if was_first {
            lose_current(page);
            let next = queue.first.get();
            if !next.is_null() {
                // SAFETY: queued pages are live descriptors owned by this heap.
                gain_current(unsafe { &*next });
            }
            self.update_direct(class);
        }
    }

    /// Keeps an empty, unlinked page for reuse; false when the cache is full.
    pub fn cache_span(&self, page: &Page, now_ms: u64) -> bool {
        let bytes = page.slice_count() * SLICE_SIZE;
        let mut cached = 0;
        let mut free_slot = None;
        for (i, slot) in self.span_cache.iter().enumerate() {
            if slot.page.load(Ordering::Relaxed).is_null() {
                free_slot.get_or_insert(i);
            } else {
                cached += slot.slices.load(Ordering::Relaxed) as usize * SLICE_SIZE;
            }
        }
        let Some(i) = free_slot else {
            return false;
        };
        if cached + bytes > SPAN_CACHE_MAX_BYTES {
            return false;
        }
        let slot = &self.span_cache[i];
        slot.slices
            .store(page.slice_count() as u32, Ordering::Relaxed);
        slot.class.store(page.class.get(), Ordering::Relaxed);
        slot.cached_at_ms.store(now_ms, Ordering::Relaxed);
        slot.page
            .store(page as *const Page as *mut Page, Ordering::Release);
        true
    }

    /// Takes a cached empty page of exactly `slices` slices, preferring one
    /// last used for `class` (whose blocks are carved and linked already).
    pub fn take_cached_span(&self, slices: usize, class: usize) -> *mut Page {
        let mut best = None;
        for (i, slot) in self.span_cache.iter().enumerate() {
            if slot.slices.load(Ordering::Relaxed) as usize == slices
                && !slot.page.load(Ordering::Relaxed).is_null()
            {
                best = Some(i);
                if slot.class.load(Ordering::Relaxed) as usize == class {
                    break;
                }
            }
        }
        // The purge thread may have taken it meanwhile: then there is none.
        best.map_or(ptr::null_mut(), |i| self.span_cache[i].take())
    }

    /// Empties the span cache through `release`.
    pub fn drain_span_cache(&self, mut release: impl FnMut(&Page)) {
        for slot in &self.span_cache {
            let page = slot.take();
            if !page.is_null() {
                // SAFETY: a cached page, now exclusively ours.
                release(unsafe { &*page });
            }
        }
    }

    /// What this heap's pages hold in `Page::heap` when not full: its
    /// address, with `SLOW_FLAG` in secure mode.
    #[inline]
    pub fn owner_word(&self) -> usize {
        self.as_ptr() as usize
            | if crate::settings::secure() {
                SLOW_FLAG
            } else {
                0
            }
    }

    pub fn as_ptr(&self) -> *mut Heap {
        self as *const Heap as *mut Heap
    }
}

impl Default for Heap {
    fn default() -> Heap {
        Heap::new()
    }
}

const _: () = assert!(
    core::mem::align_of::<Heap>() >= 4,
    "the low bits of heap addresses hold page flags"
);
