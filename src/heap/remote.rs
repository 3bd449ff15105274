//! Frees of blocks that belong to another thread's heap. The block is
//! claimed (its free tag swapped in atomically, so two racing frees cannot
//! both succeed), then left in a small per-thread outbox for its owner; a
//! full outbox is spliced into the owner's inbox with one atomic
//! compare-and-swap, so a thread that frees many blocks of another pays one
//! contended atomic per batch, not per block. The owner takes its inbox
//! whole on its next refill (see `collect::collect_inbox`).
//!
//! Outboxes are flushed when full, when a slot is needed for another owner,
//! on the thread's allocation slow path, and at thread exit; so at most
//! `OUTBOX_SLOTS * OUTBOX_BATCH` blocks per thread wait in them.

use core::sync::atomic::Ordering;

use crate::backend::page::{FULL_FLAG, Page, PageKind};
use crate::heap::block::{Block, encode, tag_of};
use crate::heap::heap::{Heap, HeapStats, Outbox, SHARED_STATS};
use crate::heap::thread;
use crate::tls;

/// Blocks an outbox collects before it is sent.
pub const OUTBOX_BATCH: u32 = 32;

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
}

/// Frees block `addr` of `page`, a page the calling thread does not own.
#[inline(never)]
pub fn free_foreign(page: &Page, addr: usize) -> Foreign {
    if page.kind() != PageKind::Small || !page.is_block_start(addr) {
        return Foreign::Other;
    }
    let owner = page.heap.load(Ordering::Relaxed) & !FULL_FLAG;
    let me = tls::heap();
    if owner == me as usize {
        return Foreign::Mine;
    }
    let block = addr as *mut Block;
    // SAFETY: a carved block of one of our pages; while it may be contended
    // its tag word is only accessed atomically.
    let tag = unsafe { &(*block).tag };
    let current = tag.load(Ordering::Relaxed);
    if current == tag_of(addr)
        || tag
            .compare_exchange(current, tag_of(addr), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return Foreign::DoubleFree;
    }
    // SAFETY: heaps are never unmapped: the owner pointer stays valid even if
    // its thread has exited.
    let owner = unsafe { &*(owner as *const Heap) };
    send(me, owner, block, page.block_size());
    Foreign::Sent
}

/// Sends a claimed block to its owner, through the calling thread's outbox
/// when it has a heap.
fn send(me: *mut Heap, owner: &Heap, block: *mut Block, size: usize) {
    if me.is_null() || me == thread::dead_heap() {
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

/// Pushes the linked blocks `head ..= tail` onto `owner`'s inbox.
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
            Ok(_) => return,
            Err(current) => old = current,
        }
    }
}
