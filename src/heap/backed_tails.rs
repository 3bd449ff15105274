//! The never-carved tails of pages set up on spans that were still backed.
//!
//! A page of big blocks spans several slices (room for at least eight
//! blocks). Set up on a span freed a moment ago, all of it is resident at
//! once, while its class may only ever carve a block or two: mem_steady
//! kept 7 MiB of its 106 MiB peak in such tails. Giving the tail back at
//! set-up cost dearly where spans change hands quickly (realloc_chain ran
//! 17% longer, refaulting what it had just given back), so a tail is given
//! back only once it has waited a while (`wait_ms`: 10 ms by default, as
//! mimalloc's purge delay), by the page's owner the next time it goes for
//! a fresh page (so no other thread ever races with its carving).
//!
//! A page whose tail waits carries the time it was set up in
//! `Page::freed_at_ms` (otherwise unused while a page is in use; zero when
//! nothing waits); the heap keeps the earliest due time.

use core::sync::atomic::Ordering;

use crate::backend;
use crate::backend::page::Page;
use crate::config::OS_PAGE_SIZE;
use crate::heap::heap::Heap;
use crate::heap::size_class::{CLASS_COUNT, page_slices_of};
use crate::os::{clock::now_ms, mmap};
use crate::settings;

/// The first class whose pages span more than one slice.
const FIRST_MULTI_SLICE_CLASS: usize = {
    let mut class = 0;
    while page_slices_of(class) == 1 {
        class += 1;
    }
    class
};

/// How long a tail waits: a fiftieth of the purge delay (10 ms by
/// default). Pages of big blocks change hands within tens of
/// milliseconds in a busy server (mem_steady); a tail that waited the
/// whole purge delay was given back almost never.
fn wait_ms() -> u64 {
    settings::purge_delay_ms() / 50
}

/// Called for a page of `heap` just set up, with its first blocks carved:
/// if its span may still be backed (`backed`: a span of the heap's own
/// cache, or one the core had not purged) and has several slices, its
/// tail waits to be given back.
pub fn note_set_up(heap: &Heap, page: &Page, backed: bool) {
    if !backed || page.slice_count() == 1 || no_tail(page) {
        page.freed_at_ms.set(0);
        return;
    }
    let now = now_ms().max(1);
    page.freed_at_ms.set(now);
    let due = now.saturating_add(wait_ms());
    if due < heap.tails_due_ms.get() {
        heap.tails_due_ms.set(due);
    }
}

/// Gives back the tails that have waited `wait_ms`, if any is due. By the
/// heap's owner only (its thread, or the core for an orphan).
#[inline]
pub fn give_back_due(heap: &Heap) {
    if heap.tails_due_ms.get() != u64::MAX {
        give_back_due_slow(heap);
    }
}

#[cold]
fn give_back_due_slow(heap: &Heap) {
    let now = now_ms();
    if now < heap.tails_due_ms.get() {
        return;
    }
    let delay = wait_ms();
    let mut next_due = u64::MAX;
    heap.for_each_queued_page(FIRST_MULTI_SLICE_CLASS..CLASS_COUNT, |p| {
        let set_up = p.freed_at_ms.get();
        if set_up != 0 {
            let due = set_up.saturating_add(delay);
            if due <= now {
                give_back_tail(p);
            } else {
                next_due = next_due.min(due);
            }
        }
    });
    // A page that left the heap meanwhile took its waiting tail along (its
    // span went back whole); the due time only overestimates then.
    heap.tails_due_ms.set(next_due);
}

/// True when no whole OS page lies past the carved blocks (not the same
/// as `page_ops::fully_carved`: the last block may still be uncarved).
fn no_tail(page: &Page) -> bool {
    tail_start(page) >= span_end(page)
}

/// The first OS page no carved block reaches into.
fn tail_start(page: &Page) -> usize {
    let carved = page.capacity.load(Ordering::Relaxed) as usize * page.block_size();
    (page.start() + carved).next_multiple_of(OS_PAGE_SIZE)
}

fn span_end(page: &Page) -> usize {
    page.start() + backend::span_usable_bytes(page.slice_count())
}

fn give_back_tail(page: &Page) {
    let (from, end) = (tail_start(page), span_end(page));
    if from < end {
        mmap::decommit(from as *mut u8, end - from);
    }
    page.freed_at_ms.set(0);
}
