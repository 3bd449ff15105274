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
//! A free block keeps its first two words (the link and the free tag), so
//! the OS page that holds them stays; the whole OS pages after it, up to
//! the block's end, are decommitted. Their contents are free memory: the
//! next owner of the block gets zeroed pages (secure mode keeps freed
//! blocks zero anyway, and calloc still clears a reused block).

use core::sync::atomic::Ordering;

use crate::backend::page::Page;
use crate::config::OS_PAGE_SIZE;
use crate::heap::block::{Block, decode};
use crate::heap::heap::Heap;
use crate::heap::size_class::{CLASS_COUNT, block_size_of, class_of};
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
    heap.for_each_queued_page(FIRST_CLASS..CLASS_COUNT, |p| give_back_page(p, &mut batch));
    batch.flush();
    batch.bytes
}

/// Walks the page's free list, decommitting the inside of each block. A
/// link that does not lead to a block of the page ends the walk: the pop
/// that meets it reports the damage.
fn give_back_page(page: &Page, batch: &mut DecommitBatch) {
    let size = page.block_size();
    let start = page.start();
    let carved = page.capacity.load(Ordering::Relaxed) as usize;
    let end = start + carved * size;
    let mut block = page.free.get() as usize;
    let mut steps = 0;
    while block != 0 && steps < carved {
        if block < start || block >= end || (block - start) % size != 0 {
            break;
        }
        let from = (block + core::mem::size_of::<Block>()).next_multiple_of(OS_PAGE_SIZE);
        let to = (block + size) / OS_PAGE_SIZE * OS_PAGE_SIZE;
        if to > from {
            batch.add(from, to - from);
        }
        // SAFETY: a block of the page, checked above; its first OS page
        // (holding the link) is never decommitted.
        block = decode(unsafe { (*(block as *const Block)).link });
        steps += 1;
    }
}

const _: () = assert!(block_size_of(FIRST_CLASS) > OS_PAGE_SIZE * 2);
