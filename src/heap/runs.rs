//! Runs: a medium block cut out of neighbouring free blocks of a sparse
//! page of small blocks.
//!
//! A size-class heap cannot give memory freed as one class to another:
//! after a program frees most of a large structure of small nodes, every
//! page still holds a few live ones, and new objects of other sizes need
//! new pages (mem_phase: 90% of 2 M nodes of 16–128 bytes freed at random,
//! then as many bytes of 200–1000-byte objects: 1.58× glibc's peak, which
//! coalesces the freed nodes). So when a medium class (129..=1024 bytes)
//! is out of free blocks and would otherwise carve memory, the heap takes
//! the free list of one of its sparse pages of 32–128-byte blocks (at
//! least three quarters of it free) into a bitmap, its *pool*, and hands
//! out runs of neighbouring free blocks from it.
//!
//! A run of `k` blocks starting at block `h` is one allocation: the caller
//! gets `h + 16`, which is never a block start (blocks here are at least
//! 32 bytes), so every free of it misses the fast path's block check and
//! reaches `locate`. Block `h` holds the run's mark (its address mixed
//! with a secret) and `k`; the page counts all `k` blocks as live. A free
//! claims the header (swapping the free tag in for `k`, so a second free
//! is a double free) and frees the `k` blocks into the page, as the owner,
//! or towards the owner like any other thread's frees.
//!
//! A run's inner blocks are block starts of their page: while a page has
//! a live run (`Page::live_runs`), its owner word carries `SLOW_FLAG`, so
//! every free into it is checked, and one inside a run is an invalid
//! pointer (`covers`).
//!
//! The pool's blocks are live to the page (it never empties while it is a
//! source) and keep their free tags (a free of one is a double free). The
//! pool goes back to the page's free list when a run does not fit, when the
//! thread exits, on malloc_trim, and when runs come straight back (see
//! `CHURN_WINDOW`). Not in secure mode (no canary room) nor in the
//! unchecked build (no block check to miss).

use core::sync::atomic::{AtomicU32, Ordering};

use crate::backend::page::{Owned, Page, SLOW_FLAG};
use crate::config::{CHECKS, SLICE_SIZE, SMALL_MAX};
use crate::diag::HeapError;
use crate::heap::block::{Block, run_mark, tag_of};
use crate::heap::collect::{self, CoreAccess};
use crate::heap::heap::{Heap, SHARED_STATS};
use crate::heap::size_class::{block_size, class_of};
use crate::heap::{page_ops, remote, secure, thread};
use crate::sync::peek;
use crate::tls;

/// Bytes before the caller's part of a run: the mark and the block count.
pub const HEADER: usize = 16;
/// The smallest blocks a run is made of (16-byte blocks would put the
/// caller's pointer on a block start).
const SOURCE_MIN: usize = 32;
/// The largest: the small classes whose pages fill up with nodes.
const SOURCE_MAX: usize = 128;
/// Blocks in the biggest source page (one slice of 32-byte blocks).
const POOL_BITS: usize = SLICE_SIZE / SOURCE_MIN;
const POOL_WORDS: usize = POOL_BITS / 64;
/// Runs pay off when they stay live (a program past a phase change builds
/// new structures in the freed space). When as many runs are freed as are
/// cut (at least half of `CHURN_WINDOW` cuts), each allocation would be a
/// trip through the slow path for memory that comes straight back: the
/// next `CHURN_PAUSE` calls of `take` serve no run, and the medium classes
/// get pages of their own (a loop of malloc and free of 200..1000 bytes
/// next to sparse pages ran 34 times slower before).
const CHURN_WINDOW: u32 = 64;
const CHURN_PAUSE: u32 = 1024;
/// Most blocks in one run (a 1024-byte request of 32-byte blocks takes 33).
const MAX_RUN_BLOCKS: usize = 64;
/// Pages looked at per source class.
const PAGES_LOOKED_AT: usize = 8;

/// A heap's pool: free blocks of one of its pages, one bit per block.
#[repr(C)]
pub struct RunPool {
    page: Owned<*mut Page>,
    bits: [Owned<u64>; POOL_WORDS],
    count: Owned<u32>,
    /// The word the next search starts from.
    cursor: Owned<u32>,
    /// Runs cut, and runs of this heap freed (by any thread), since the
    /// last look at the two (see `CHURN_WINDOW`).
    cut: Owned<u32>,
    freed: AtomicU32,
    /// Calls of `take` left that serve no run (see `CHURN_PAUSE`).
    pause: Owned<u32>,
}

impl RunPool {
    pub const fn new() -> RunPool {
        RunPool {
            page: Owned::new(core::ptr::null_mut()),
            bits: [const { Owned::new(0) }; POOL_WORDS],
            count: Owned::new(0),
            cursor: Owned::new(0),
            cut: Owned::new(0),
            freed: AtomicU32::new(0),
            pause: Owned::new(0),
        }
    }

    /// Marks block `index` pooled; false when it already was.
    fn mark(&self, index: usize) -> bool {
        let word = &self.bits[index / 64];
        let bit = 1u64 << (index % 64);
        let before = word.get();
        word.set(before | bit);
        before & bit == 0
    }
}

impl Default for RunPool {
    fn default() -> RunPool {
        RunPool::new()
    }
}

/// True when requests of `class` may be served by a run.
#[inline]
pub fn serves(class: usize) -> bool {
    CHECKS && block_size(class) > SOURCE_MAX && block_size(class) <= SMALL_MAX && !secure::enabled()
}

/// A run for a request of `class` (see `serves`) from the heap's sparse
/// pages, or null: long enough for `bytes` (at most the class's block
/// size), the bytes the caller asked for. Sized by the request, not its
/// class, a run needs one block fewer every so often (mem_phase: peak RSS
/// 207.7 -> 202.3 MB). The caller owns the heap.
#[cold]
pub fn take(heap: &Heap, class: usize, bytes: usize, core: &mut CoreAccess) -> *mut u8 {
    let pool = &heap.runs;
    if pool.pause.get() > 0 {
        pool.pause.set(pool.pause.get() - 1);
        return core::ptr::null_mut();
    }
    if pool.cut.get() >= CHURN_WINDOW {
        let freed = pool.freed.swap(0, Ordering::Relaxed);
        let churning = freed.saturating_mul(2) >= pool.cut.get();
        pool.cut.set(0);
        if churning {
            give_back(heap, core);
            pool.pause.set(CHURN_PAUSE);
            return core::ptr::null_mut();
        }
    }
    let need = bytes.min(block_size(class)) + HEADER;
    if !pool.page.get().is_null() {
        let run = cut(heap, need);
        if !run.is_null() {
            return run;
        }
        let tried = pool.page.get();
        give_back(heap, core);
        // SAFETY: still a page of this heap (it held pooled blocks).
        let tried = unsafe { &*tried };
        if tried.in_queue.get() {
            heap.dequeue(tried.class.get() as usize, tried);
            heap.enqueue_back(tried.class.get() as usize, tried);
        }
    }
    // Only a class out of free blocks looks, at a few dozen page
    // descriptors at most, so a heap without sparse pages pays little.
    let source = sparse_page(heap);
    // SAFETY: a queued page of this heap, which the caller owns.
    if source.is_null() || !fill(heap, unsafe { &*source }) {
        return core::ptr::null_mut();
    }
    cut(heap, need)
}

/// A queued page of 32–128-byte blocks, not its class's current one, with
/// at least three quarters of its carved blocks free (biggest blocks
/// first: fewer blocks per run).
fn sparse_page(heap: &Heap) -> *mut Page {
    for class in (class_of(SOURCE_MIN)..=class_of(SOURCE_MAX)).rev() {
        let first = heap.queues[class].first.get();
        if first.is_null() {
            continue;
        }
        // SAFETY: queued pages belong to this heap.
        let mut page = unsafe { (*first).next.get() };
        for _ in 0..PAGES_LOOKED_AT {
            if page.is_null() {
                break;
            }
            // SAFETY: as above.
            let p = unsafe { &*page };
            let carved = p.capacity.load(Ordering::Relaxed);
            if carved >= 64
                && p.used() * 4 <= carved
                && !p.free.get().is_null()
                && !p.is_current.load(Ordering::Relaxed)
            {
                return page;
            }
            page = p.next.get();
        }
    }
    core::ptr::null_mut()
}

/// Takes `page`'s free list into the pool (empty before); false, leaving
/// the page as it was, when a link does not lead to a block of the page
/// (the pop that meets it reports the damage).
fn fill(heap: &Heap, page: &Page) -> bool {
    let pool = &heap.runs;
    let count = match free_blocks_by_tag(pool, page) {
        Some(count) => count,
        None => {
            clear_bits(pool);
            match free_blocks_by_list(pool, page) {
                Some(count) => count,
                None => {
                    clear_bits(pool);
                    return false;
                }
            }
        }
    };
    page.free.set(core::ptr::null_mut());
    page.set_used(page.used() + count);
    pool.page.set(page as *const Page as *mut Page);
    pool.count.set(count);
    pool.cursor.set(0);
    count_pooled(i64::from(count), page.block_size());
    true
}

/// Adds `blocks` of `size` bytes to the statistics' pooled counts (takes
/// them away when negative: the counters wrap, and are read as signed).
fn count_pooled(blocks: i64, size: usize) {
    SHARED_STATS
        .pooled_blocks
        .fetch_add(blocks as u64, Ordering::Relaxed);
    SHARED_STATS
        .pooled_bytes
        .fetch_add((blocks * size as i64) as u64, Ordering::Relaxed);
}

/// Marks the page's free-tagged blocks in the pool, in address order (a
/// walk of the free list, in the order the blocks were freed, misses the
/// cache at every link: it took 17% of mem_phase's time). The count when
/// it is exactly the free list's length (carved blocks not live), so the
/// tagged blocks are the listed ones; else None. Blocks freed by other
/// threads are tagged but not listed (they wait in an inbox or in another
/// thread's foreign cache, and the page counts them live); a damaged tag
/// would miss one: either way the counts differ.
fn free_blocks_by_tag(pool: &RunPool, page: &Page) -> Option<u32> {
    let size = page.block_size();
    let start = page.start();
    let carved = page.capacity.load(Ordering::Relaxed);
    let listed = carved.checked_sub(page.used())?;
    let mut count = 0u32;
    for index in 0..carved as usize {
        let block = start + index * size;
        // SAFETY: a carved block of the page: its two words are mapped.
        if unsafe { (*(block as *const Block)).is_tagged_free() } {
            pool.mark(index);
            count += 1;
        }
    }
    (count == listed).then_some(count)
}

/// Marks the blocks on the page's free list in the pool; their count, or
/// None on a damaged list (see `page_ops::walk_free_list`).
fn free_blocks_by_list(pool: &RunPool, page: &Page) -> Option<u32> {
    page_ops::walk_free_list(page, |index| pool.mark(index))
}

fn clear_bits(pool: &RunPool) {
    for word in &pool.bits {
        word.set(0);
    }
}

/// A run of at least `need` bytes from the pool, or null.
fn cut(heap: &Heap, need: usize) -> *mut u8 {
    let pool = &heap.runs;
    // SAFETY: the pool's page is a page of this heap while it has blocks.
    let page = unsafe { &*pool.page.get() };
    let size = page.block_size();
    let blocks = need.div_ceil(size);
    if blocks > MAX_RUN_BLOCKS || blocks > pool.count.get() as usize {
        return core::ptr::null_mut();
    }
    let Some(first) = find_run(pool, blocks) else {
        return core::ptr::null_mut();
    };
    for index in first..first + blocks {
        let word = &pool.bits[index / 64];
        word.set(word.get() & !(1u64 << (index % 64)));
    }
    pool.cursor.set((first / 64) as u32);
    pool.count.set(pool.count.get() - blocks as u32);
    if pool.count.get() == 0 {
        pool.page.set(core::ptr::null_mut());
    }
    let header = page.start() + first * size;
    for index in 1..blocks {
        // SAFETY: a pooled (free, carved) block of the page: its free tag
        // goes, so the run's free can claim it.
        unsafe { (*((header + index * size) as *const Block)).clear_tag() };
    }
    let head = header as *mut Block;
    // SAFETY: as above; the first block becomes the run's header.
    unsafe {
        (*head).link = run_mark(header);
        (*head).tag.store(blocks, Ordering::Relaxed);
    }
    page.count_run_alloc();
    pool.cut.set(pool.cut.get() + 1);
    if page.live_runs.fetch_add(1, Ordering::Relaxed) == 0 {
        let owner = page.heap.load(Ordering::Relaxed);
        page.heap.store(owner | SLOW_FLAG, Ordering::Relaxed);
    }
    count_pooled(-(blocks as i64), size);
    SHARED_STATS
        .run_extra_blocks
        .fetch_add(blocks as u64 - 1, Ordering::Relaxed);
    (header + HEADER) as *mut u8
}

/// The first index of `blocks` neighbouring pooled blocks, searching from
/// the cursor's word round to it.
fn find_run(pool: &RunPool, blocks: usize) -> Option<usize> {
    let from = pool.cursor.get() as usize;
    find_run_from(pool, blocks, from, POOL_WORDS).or_else(|| find_run_from(pool, blocks, 0, from))
}

fn find_run_from(pool: &RunPool, blocks: usize, from: usize, to: usize) -> Option<usize> {
    let mut start = 0;
    let mut length = 0;
    for w in from..to {
        let word = pool.bits[w].get();
        if word == 0 {
            length = 0;
            continue;
        }
        for bit in 0..64 {
            if word & (1 << bit) == 0 {
                length = 0;
                continue;
            }
            if length == 0 {
                start = w * 64 + bit;
            }
            length += 1;
            if length == blocks {
                return Some(start);
            }
        }
    }
    None
}

/// Gives the pool's blocks back to its page's free list (thread exit,
/// malloc_trim, or a run that does not fit). The caller owns the heap.
pub fn give_back(heap: &Heap, core: &mut CoreAccess) {
    let pool = &heap.runs;
    let page = pool.page.get();
    if page.is_null() {
        return;
    }
    pool.page.set(core::ptr::null_mut());
    // SAFETY: the pool's page is a page of this heap (it holds its blocks).
    let page = unsafe { &*page };
    let size = page.block_size();
    count_pooled(-i64::from(pool.count.get()), size);
    pool.count.set(0);
    for (w, word) in pool.bits.iter().enumerate() {
        let mut bits = word.get();
        word.set(0);
        while bits != 0 {
            let index = w * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let block = (page.start() + index * size) as *mut Block;
            // SAFETY: a pooled block of a page this heap owns, counted live.
            unsafe { collect::free_to_page(heap, page, block, core) };
        }
    }
}

/// The run whose caller's part starts at `addr` (not a block start of
/// `page`, a small page), as `locate` sees it: its block count, or why
/// `addr` is no live run.
pub fn locate(page: &Page, addr: usize) -> Result<usize, HeapError> {
    let header = addr.wrapping_sub(HEADER);
    if !CHECKS
        || addr % 16 != 0
        || page.block_size() < SOURCE_MIN
        || page.block_size() > SOURCE_MAX
        || !page.is_block_start(header)
    {
        return Err(HeapError::InvalidPointer);
    }
    // SAFETY: a carved block of one of our pages.
    let (marked, blocks) = unsafe { read_header(header) };
    if blocks == tag_of(header) {
        // The run was freed (its mark stays until its first block is
        // linked into a list), or this is a free block's inside.
        return Err(HeapError::DoubleFree);
    }
    if marked {
        let carved = page.capacity.load(Ordering::Relaxed) as usize;
        if (2..=MAX_RUN_BLOCKS).contains(&blocks) && page.block_index(header) + blocks <= carved {
            return Ok(blocks);
        }
        return Err(HeapError::Corrupted);
    }
    Err(HeapError::InvalidPointer)
}

/// True when `addr`, a block start of `page`, lies inside a live run (its
/// header included): a free of it is an invalid pointer. Reads the blocks
/// before it, nearest first, up to the longest run, for a run's mark.
pub fn covers(page: &Page, addr: usize) -> bool {
    if page.live_runs.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let size = page.block_size();
    for back in 0..MAX_RUN_BLOCKS {
        let Some(header) = addr.checked_sub(back * size).filter(|&h| h >= page.start()) else {
            return false;
        };
        // SAFETY: a carved block of the page (at or before `addr`, which is
        // one).
        let (marked, blocks) = unsafe { read_header(header) };
        if marked {
            // Runs do not overlap: no run before this one reaches `addr`.
            // A freed run keeps its mark until its first block is linked
            // into a list (its tag says so): none of its blocks is in a
            // live run meanwhile.
            return (2..=MAX_RUN_BLOCKS).contains(&blocks) && back < blocks;
        }
    }
    false
}

/// Whether block `header` carries a run's mark, and its second word (a
/// run's block count, a free tag, 0 or data).
///
/// # Safety
/// `header` is a carved block of one of our pages (its two words mapped).
unsafe fn read_header(header: usize) -> (bool, usize) {
    // SAFETY: the caller's; both words may be written by another thread
    // meanwhile (a free of the run, a pop), so both are read with relaxed
    // atomic loads, like the free tags.
    unsafe {
        (
            peek::word_equals::<0>(header as *const u8, run_mark(header)),
            (*(header as *const Block)).tag.load(Ordering::Relaxed),
        )
    }
}

/// The caller's bytes in a run of `blocks` blocks of `page`.
pub fn usable(page: &Page, blocks: usize) -> usize {
    blocks * page.block_size() - HEADER
}

/// Frees the run at `addr` of `blocks` blocks (found by `locate`).
pub fn free(page: &Page, addr: usize, blocks: usize) -> Result<(), HeapError> {
    let header = addr - HEADER;
    let size = page.block_size();
    // SAFETY: the run's first block (checked by `locate`); its tag word is
    // only accessed atomically while the run may be freed twice at once.
    let tag = unsafe { &(*(header as *const Block)).tag };
    if tag
        .compare_exchange(blocks, tag_of(header), Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return Err(HeapError::DoubleFree);
    }
    // Every block tagged free before the run stops counting as live: a
    // free of one of them meanwhile (an interior pointer, from another
    // thread) is then still a double free, never a second claim.
    for index in 1..blocks {
        let block = (header + index * size) as *const Block;
        // SAFETY: a block of the run, which this free claimed whole.
        unsafe {
            (*block)
                .tag
                .store(tag_of(block as usize), Ordering::Relaxed)
        };
    }
    SHARED_STATS
        .run_extra_blocks
        .fetch_sub(blocks as u64 - 1, Ordering::Relaxed);
    page.live_runs.fetch_sub(1, Ordering::Relaxed);
    let owner = page.owner();
    // SAFETY: heaps are never unmapped: the owner stays valid.
    let owner_heap = unsafe { &*(owner as *const Heap) };
    owner_heap.runs.freed.fetch_add(1, Ordering::Relaxed);
    let me = tls::heap();
    if owner == me as usize && thread::is_own(me) {
        // SAFETY: the calling thread's own heap.
        let heap = unsafe { &*me };
        for index in 0..blocks {
            let block = (header + index * size) as *mut Block;
            // SAFETY: a block of the run, claimed above, of a page this
            // thread's heap owns.
            unsafe { collect::free_to_page(heap, page, block, &mut CoreAccess::Take) };
        }
        return Ok(());
    }
    let me = if thread::is_own(me) {
        me
    } else {
        thread::acquire()
    };
    for index in 0..blocks {
        let block = (header + index * size) as *mut Block;
        remote::deliver(me, page, owner_heap, block);
    }
    Ok(())
}
