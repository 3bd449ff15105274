//! The OS pages inside free blocks of pages that still hold live blocks.
//!
//! A page goes back to the core only once all its blocks are free. Until
//! then a free block of 8 KiB or more keeps whole OS pages backed that
//! nobody uses: after a thread frees most of its big blocks, the few it
//! keeps pin all of them. `malloc_trim` (for the calling thread's heap) and
//! the trimming of an orphan give those pages back, as glibc's
//! `malloc_trim` does for the free chunks inside its heaps. The ranges go
//! back in batches (`DecommitBatch`), and an orphan's walk runs without the
//! core lock (see `thread::give_back_orphan_interiors`).
//!
//! The blocks go back whole: they leave the free list for the page's
//! `given` bitmap (`give_back_whole`), so no link or tag needs its page.
//! In secure mode a free block keeps its first two words (the link and the
//! free tag) and the OS page that holds them (`give_back_insides`). What
//! goes back is free memory: the next owner of the block gets zeroed pages
//! (secure mode keeps freed blocks zero anyway, and calloc still clears a
//! reused block).

use core::sync::atomic::Ordering;

use crate::backend::page::Page;
use crate::backend::page::SLOW_FLAG;
use crate::config::{OS_PAGE_SIZE, SLICE_SIZE};
use crate::heap::block::Block;
use crate::heap::heap::Heap;
use crate::heap::page_ops;
use crate::heap::secure;
use crate::heap::size_class::{CLASS_COUNT, block_size_of, class_of, page_slices_of};
use crate::os::decommit_batch::DecommitBatch;

/// The smallest class whose blocks all hold a whole OS page besides the one
/// with their header, wherever they start (a block of 8 KiB, for one, holds
/// such a page only when it starts on an OS page).
const FIRST_CLASS: usize = class_of(OS_PAGE_SIZE * 2 + 1);

/// Decommits the whole OS pages inside the free blocks of the heap's
/// queued pages. The caller owns the heap (its thread, or the core for an
/// orphan). Returns the bytes given back.
pub fn give_back(heap: &Heap) -> usize {
    let mut batch = DecommitBatch::new();
    heap.for_each_queued_page(FIRST_CLASS..CLASS_COUNT, |p| {
        if secure::enabled() {
            give_back_insides(p, &mut batch);
        } else {
            give_back_whole(p, &mut batch);
        }
    });
    batch.flush();
    batch.bytes
}

/// Takes every block off the page's free list and gives its memory back
/// whole: each run of neighbouring free blocks, from the first OS page
/// boundary in it to the last (the pages at its ends hold live
/// neighbours). The blocks are marked in `Page::given`; `page_ops::
/// reclaim_given` hands them out again, one at a time, when the page has
/// no other free block. While any is marked, every free of the page's
/// blocks takes the checked path (`SLOW_FLAG`, added to the owner word
/// like `collect::mark_full` adds its flag), where a free of a given block
/// is a double free.
fn give_back_whole(page: &Page, batch: &mut DecommitBatch) {
    let Some(listed) = free_list_blocks(page) else {
        return;
    };
    if listed == 0 {
        return;
    }
    let given = page.given.load(Ordering::Relaxed) | listed;
    let size = page.block_size();
    let start = page.start();
    let mut rest = given;
    while rest != 0 {
        let first = rest.trailing_zeros() as usize;
        let len = (rest >> first).trailing_ones() as usize;
        let from = (start + first * size).next_multiple_of(OS_PAGE_SIZE);
        let to = (start + (first + len) * size) / OS_PAGE_SIZE * OS_PAGE_SIZE;
        if to > from {
            batch.add(from, to - from);
        }
        rest &= !(u32::MAX >> (32 - len) << first);
    }
    page.given.store(given, Ordering::Relaxed);
    page.free.set(core::ptr::null_mut());
    let owner = page.heap.load(Ordering::Relaxed);
    page.heap.store(owner | SLOW_FLAG, Ordering::Relaxed);
}

/// The blocks on the page's free list, one bit per block index; None on a
/// damaged list (see `page_ops::walk_free_list`). Both ways of giving back
/// walk the list through it.
fn free_list_blocks(page: &Page) -> Option<u32> {
    let mut bits = 0u32;
    page_ops::walk_free_list(page, |index| {
        let bit = 1u32 << index;
        let first_time = bits & bit == 0;
        bits |= bit;
        first_time
    })?;
    Some(bits)
}

/// Secure mode: decommits the inside of each free block, after the OS page
/// holding its link and tag, and leaves it on the free list.
fn give_back_insides(page: &Page, batch: &mut DecommitBatch) {
    let Some(mut listed) = free_list_blocks(page) else {
        return;
    };
    while listed != 0 {
        let block = page.start() + listed.trailing_zeros() as usize * page.block_size();
        let from = (block + core::mem::size_of::<Block>()).next_multiple_of(OS_PAGE_SIZE);
        let to = (block + page.block_size()) / OS_PAGE_SIZE * OS_PAGE_SIZE;
        if to > from {
            batch.add(from, to - from);
        }
        listed &= listed - 1;
    }
}

// Every page of these classes has at most 32 blocks: `Page::given` has a
// bit for each.
const _: () = {
    let mut class = FIRST_CLASS;
    while class < CLASS_COUNT {
        assert!(page_slices_of(class) * SLICE_SIZE / block_size_of(class) <= 32);
        class += 1;
    }
};
const _: () = assert!(block_size_of(FIRST_CLASS) > OS_PAGE_SIZE * 2);
