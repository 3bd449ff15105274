//! Frees of blocks that belong to another thread's heap. The block is
//! claimed first (its free tag swapped in atomically, so two racing frees
//! cannot both succeed). Then:
//!
//! - A small block is kept by the freeing thread, in its *foreign cache*
//!   (a list per small class, at most `FOREIGN_MAX` blocks), and handed out
//!   again by that thread's own mallocs of the class. Servers whose threads
//!   free what other threads allocated keep their blocks warm in the cache
//!   of the core that uses them, instead of sending every block back.
//! - Otherwise it goes to a small per-thread outbox for its owner; a full
//!   outbox is spliced into the owner's inbox with one compare-and-swap, so
//!   a thread freeing many blocks of another pays one contended atomic per
//!   batch, not per block. The owner takes its inbox whole on its next
//!   refill (see `collect::collect_inbox`).
//!
//! Outboxes are flushed when full, when a slot is needed for another owner,
//! on the thread's allocation slow path, and at thread exit; at most
//! `OUTBOX_SLOTS * OUTBOX_BATCH` blocks per thread wait in them. Foreign
//! caches stay with the heap (an exited thread's heap is adopted whole).

use core::sync::atomic::Ordering;

use core::ptr;

use crate::backend::page::Page;
use crate::backend::region_map;
use crate::backend::segment::Segment;
use crate::config::CHECKS;
use crate::diag::{self, Call, HeapError};
use crate::heap::block::{Block, encode, tag_of};
use crate::heap::collect::{self, CoreAccess};
use crate::heap::heap::{Heap, HeapState, HeapStats, Outbox, SHARED_STATS};
use crate::heap::runs;
use crate::heap::secure;
use crate::heap::size_class::{FOREIGN_CLASSES, block_size};
use crate::heap::thread;

/// Blocks an outbox collects before it is sent.
pub const OUTBOX_BATCH: u32 = 32;
/// Blocks a thread keeps per small class for its own reuse.
pub const FOREIGN_MAX: u32 = 64;

/// What `free_foreign` found.
pub enum Foreign {
    /// Sent to its owner.
    Sent,
    /// The block is already free (tagged).
    DoubleFree,
    /// The page turned out to be the calling thread's own (a full page):
    /// free it locally.
    Mine,
    /// Not a carved block of a small page: take the fully checked path.
    Other,
    /// Secure mode: the canary after the block was overwritten.
    Overflow,
}

/// Frees block `addr` of `page`, a page the calling thread (whose heap is
/// `me`, possibly null or the dead heap) does not own.
#[inline(never)]
pub fn free_foreign(page: &Page, addr: usize, me: *mut Heap, call: Call) -> Foreign {
    // Only pages of small blocks have an owning heap (every other span has
    // `NO_OWNER`, which masks to 0): checked on the descriptor's first
    // cache line, like everything else here.
    let owner = page.owner();
    if owner == 0 || !page.is_block_start(addr) {
        return Foreign::Other;
    }
    // The owner's free goes on through `locate`, which looks for a run
    // around the block; another thread's is sent from here.
    if owner == me as usize {
        return Foreign::Mine;
    }
    if runs::covers(page, addr) {
        return Foreign::Other;
    }
    let block = addr as *mut Block;
    let size = page.block_size();
    // SAFETY: a carved block of one of our pages.
    if unsafe { (*block).is_tagged_free() } || page.is_given(addr) {
        return Foreign::DoubleFree;
    }
    if secure::check(addr, size).is_err() {
        return Foreign::Overflow;
    }
    if CHECKS && !claim(block) {
        return Foreign::DoubleFree;
    }
    // A thread that only frees (a consumer) gets a heap too, on its first
    // foreign free: its frees are then batched through its outbox, instead
    // of each one going to the owner's inbox and a shared counter. It keeps
    // no foreign blocks for reuse until it allocates (`keeps_foreign`).
    let me = if thread::is_own(me) {
        me
    } else {
        thread::acquire()
    };
    if secure::enabled() {
        return quarantine_or_deliver(me, addr, size, call);
    }
    // SAFETY: heaps are never unmapped: the owner pointer stays valid even if
    // its thread has exited.
    deliver(me, page, unsafe { &*(owner as *const Heap) }, block);
    Foreign::Sent
}

/// Hands a claimed block of another heap's `page` to the calling thread's
/// foreign cache, else towards its owner.
pub fn deliver(me: *mut Heap, page: &Page, owner: &Heap, block: *mut Block) {
    let (class, size) = (page.class.get() as usize, page.block_size());
    if class < FOREIGN_CLASSES && thread::is_own(me) {
        // SAFETY: the calling thread's own heap.
        if keep(unsafe { &*me }, class, block, size) {
            return;
        }
    }
    send(me, owner, block, size);
}

/// Secure mode: a claimed block (of any heap) is zeroed and waits in the
/// calling thread's quarantine; the block it pushes out must be as it was
/// left (else the process ends, naming `call`), and is freed for real.
pub fn quarantine_or_deliver(me: *mut Heap, addr: usize, size: usize, call: Call) -> Foreign {
    secure::scrub_for_quarantine(addr, size);
    if !thread::is_own(me) {
        release_claimed(me, addr);
        return Foreign::Sent;
    }
    // SAFETY: the calling thread's own heap.
    let heap = unsafe { &*me };
    HeapStats::bump(&heap.stats.quarantined_blocks, 1);
    HeapStats::bump(&heap.stats.quarantined_bytes, size as u64);
    let evicted = secure::quarantine(heap, addr);
    if evicted != 0 {
        leave_quarantine(me, evicted, call);
    }
    Foreign::Sent
}

/// A block leaving the quarantine: it must be as it was left, whole (else
/// the process ends, naming `call`); then it is freed for real.
fn leave_quarantine(me: *mut Heap, block: usize, call: Call) {
    // SAFETY: a quarantined block is claimed: its page is a live small page.
    let size = unsafe { (*Segment::page_of(block)).block_size() };
    if let Err(error) = secure::check_quarantined(block, size, size) {
        diag::fatal(call, block, error);
    }
    release_claimed(me, block);
}

/// Secure mode, at thread exit: every block of the thread's quarantine is
/// checked whole and freed for real, so no freed block waits in an orphaned
/// heap, unchecked, for a thread that may never come.
pub fn release_quarantine(me: &Heap) {
    for slot in &me.quarantine {
        let block = slot.swap(0, Ordering::Relaxed);
        if block != 0 {
            leave_quarantine(me.as_ptr(), block, Call::ThreadExit);
        }
    }
}

/// Frees a claimed block out of the quarantine: into its page if the
/// calling thread owns it, else towards its owner.
fn release_claimed(me: *mut Heap, addr: usize) {
    // SAFETY: a claimed block: its page is a live small page.
    let page = unsafe { &*Segment::page_of(addr) };
    let size = page.block_size();
    if thread::is_own(me) {
        // SAFETY: the calling thread's own heap.
        let heap = unsafe { &*me };
        if secure::enabled() {
            HeapStats::bump(&heap.stats.quarantined_blocks, u64::MAX);
            HeapStats::bump(&heap.stats.quarantined_bytes, (size as u64).wrapping_neg());
        }
        if page.owner() == me as usize {
            // SAFETY: a claimed carved block of a page this thread owns.
            unsafe { collect::free_to_page(heap, page, addr as *mut Block, &mut CoreAccess::Take) };
            return;
        }
    }
    // SAFETY: heaps are never unmapped.
    deliver(
        me,
        page,
        unsafe { &*(page.owner() as *const Heap) },
        addr as *mut Block,
    );
}

/// Claims a block for freeing by swapping in its free tag; false when it is
/// already free (tagged), also when another thread's free wins a race.
pub fn claim(block: *mut Block) -> bool {
    // SAFETY: a carved block of one of our pages; while it may be contended
    // its tag word is only accessed atomically.
    let tag = unsafe { &(*block).tag };
    let free_tag = tag_of(block as usize);
    let current = tag.load(Ordering::Relaxed);
    current != free_tag
        && tag
            .compare_exchange(current, free_tag, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Keeps a claimed block in the thread's foreign cache; false when full.
fn keep(me: &Heap, class: usize, block: *mut Block, size: usize) -> bool {
    let count = me.foreign_count[class].get();
    if count >= FOREIGN_MAX || !me.keeps_foreign.get() {
        return false;
    }
    // SAFETY: the block is claimed: nobody else touches its link now.
    unsafe { (*block).link = encode(me.foreign[class].get() as usize) };
    me.foreign[class].set(block);
    me.foreign_count[class].set(count + 1);
    HeapStats::bump(&me.stats.remote_blocks, 1);
    HeapStats::bump(&me.stats.remote_bytes, size as u64);
    true
}

/// Hands out a block from the thread's foreign cache for `class`, or null.
/// The block must still carry its free tag, and its link must lead into one
/// of CMA's segments (or end the list): a use-after-free write breaks one
/// or the other, and the diagnostic names the block it hit. The next block
/// itself is not touched (its tag is checked when it comes up): checking it
/// here cost a cache miss per pop, half of this function's time.
#[inline(never)]
pub fn pop_foreign(me: &Heap, class: usize) -> *mut u8 {
    let Some(head) = me.foreign.get(class) else {
        return ptr::null_mut();
    };
    let block = head.get();
    if block.is_null() {
        return ptr::null_mut();
    }
    let next = next_cached(block, Call::Malloc);
    head.set(next as *mut Block);
    me.foreign_count[class].set(me.foreign_count[class].get() - 1);
    // SAFETY: as above.
    unsafe { (*block).clear_tag() };
    let size = block_size(class) as u64;
    HeapStats::bump(&me.stats.reused_blocks, 1);
    HeapStats::bump(&me.stats.reused_bytes, size);
    HeapStats::bump(&me.stats.class_allocs[class], 1);
    block.cast()
}

/// The link of `block`, the head of a foreign-cache list, once the block is
/// found intact (see `pop_foreign`); else ends the process naming it.
fn next_cached(block: *mut Block, call: Call) -> usize {
    // SAFETY: the head is a block of our segments: put there by `keep`, or
    // a link the region map vouched for when the block before it left.
    let (tagged, next) = unsafe { ((*block).is_tagged_free(), (*block).next()) };
    if CHECKS && !(tagged && (next == 0 || region_map::is_segment(next))) {
        diag::fatal(call, block as usize, HeapError::Corrupted);
    }
    next
}

/// Sends every block of the thread's foreign cache to its owner (when its
/// heap gives its memory back).
pub fn return_foreign(me: &Heap) {
    for class in 0..FOREIGN_CLASSES {
        let mut block = me.foreign[class].get();
        while !block.is_null() {
            let next = next_cached(block, Call::Free) as *mut Block;
            // SAFETY: an intact cached block: its page is a live small page.
            let page = unsafe { &*Segment::page_of(block as usize) };
            let owner = page.owner();
            // SAFETY: heaps are never unmapped.
            let owner = unsafe { &*(owner as *const Heap) };
            to_outbox(me, owner, block);
            block = next;
        }
        me.foreign[class].set(ptr::null_mut());
        me.foreign_count[class].set(0);
    }
    flush_all(me);
}

/// Sends a claimed block to its owner, through the calling thread's outbox
/// when it has a heap.
fn send(me: *mut Heap, owner: &Heap, block: *mut Block, size: usize) {
    if !thread::is_own(me) {
        SHARED_STATS.remote_blocks.fetch_add(1, Ordering::Relaxed);
        SHARED_STATS
            .remote_bytes
            .fetch_add(size as u64, Ordering::Relaxed);
        splice(owner, block, block);
        return;
    }
    // SAFETY: the calling thread's own heap.
    let me = unsafe { &*me };
    HeapStats::bump(&me.stats.remote_blocks, 1);
    HeapStats::bump(&me.stats.remote_bytes, size as u64);
    to_outbox(me, owner, block);
}

/// Adds a claimed block to the outbox for `owner`.
fn to_outbox(me: &Heap, owner: &Heap, block: *mut Block) {
    let outbox = &me.outbox[(owner as *const Heap as usize >> 6) % me.outbox.len()];
    let owner_ptr = owner as *const Heap as *mut Heap;
    if outbox.owner.get() != owner_ptr {
        flush(outbox);
        outbox.owner.set(owner_ptr);
    }
    // SAFETY: the block is claimed: nobody else touches its link now.
    unsafe { (*block).link = encode(outbox.head.get() as usize) };
    if outbox.count.get() == 0 {
        outbox.tail.set(block);
    }
    outbox.head.set(block);
    outbox.count.set(outbox.count.get() + 1);
    if outbox.count.get() >= OUTBOX_BATCH {
        flush(outbox);
    }
}

/// Sends an outbox's blocks to their owner.
pub fn flush(outbox: &Outbox) {
    if outbox.count.get() == 0 {
        return;
    }
    // SAFETY: outbox owners are heaps, which are never unmapped.
    let owner = unsafe { &*outbox.owner.get() };
    splice(owner, outbox.head.get(), outbox.tail.get());
    outbox.head.set(core::ptr::null_mut());
    outbox.tail.set(core::ptr::null_mut());
    outbox.count.set(0);
}

/// Sends every outbox of `heap`.
pub fn flush_all(heap: &Heap) {
    for outbox in &heap.outbox {
        flush(outbox);
    }
}

/// Pushes the linked blocks `head ..= tail` onto `owner`'s inbox. An
/// orphan's inbox has no thread to take it: the purge is told.
fn splice(owner: &Heap, head: *mut Block, tail: *mut Block) {
    let mut old = owner.inbox.load(Ordering::Relaxed);
    loop {
        // SAFETY: the blocks are claimed and unpublished until the swap.
        unsafe { (*tail).link = encode(old) };
        match owner.inbox.compare_exchange_weak(
            old,
            head as usize,
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => break,
            Err(current) => old = current,
        }
    }
    if owner.state() == HeapState::Orphaned {
        thread::note_orphan_mail();
    }
}

#[cfg(test)]
mod tests {
    use crate::heap::c_entry::{free, malloc};
    use crate::heap::thread;
    use crate::tls;

    /// A thread that only frees (a consumer) gets a heap of its own on its
    /// first foreign free, so its frees are batched through its outbox
    /// instead of going one by one to the owner's inbox (prodcons-2 took 70%
    /// longer the one time this broke). A raw pthread: Rust's thread start
    /// would allocate in the new thread.
    #[test]
    fn a_thread_that_only_frees_gets_a_heap() {
        const BLOCKS: usize = 64;
        let mut blocks = [0usize; BLOCKS];
        for block in blocks.iter_mut() {
            // SAFETY: a plain allocation, freed once by the consumer.
            *block = unsafe { malloc(48) } as usize;
            assert_ne!(*block, 0);
        }
        /// Frees the blocks; returns 1 if the thread had no heap before and
        /// has one after, else 0.
        extern "C" fn consumer(arg: *mut core::ffi::c_void) -> *mut core::ffi::c_void {
            let had_heap = thread::is_own(tls::heap());
            // SAFETY: `arg` is the test's array of live blocks.
            let blocks = unsafe { &*(arg as *const [usize; BLOCKS]) };
            for &block in blocks {
                // SAFETY: live blocks of the spawning thread, freed once.
                unsafe { free(block as *mut u8) };
            }
            (!had_heap && thread::is_own(tls::heap())) as usize as *mut core::ffi::c_void
        }
        let mut id: libc::pthread_t = 0;
        let mut result: *mut core::ffi::c_void = core::ptr::null_mut();
        // SAFETY: a valid start routine and argument, which outlives the
        // thread (joined below).
        unsafe {
            assert_eq!(
                libc::pthread_create(
                    &mut id,
                    core::ptr::null(),
                    consumer,
                    blocks.as_mut_ptr().cast()
                ),
                0
            );
            assert_eq!(libc::pthread_join(id, &mut result), 0);
        }
        assert_eq!(
            result as usize, 1,
            "the freeing thread had a heap already, or got none"
        );
    }
}
