//! The span allocator: free runs of slices binned by length, split on
//! allocation and coalesced with free neighbours on release. Lives inside the
//! core and is only used with the core's lock held.
//!
//! Free spans remember whether their memory may still be backed by physical
//! pages (`committed`) and when they were freed. `purge` gives the memory of
//! spans free for long enough back to the OS (madvise, the mapping stays) and
//! unmaps empty segments beyond a few (and those after a while);
//! `dirty_bytes` says how much memory a purge could give back.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::backend::page::{NO_OWNER, Page, PageKind};
use crate::backend::segment::Segment;
use crate::config::{FIRST_USABLE_SLICE, SLICE_SIZE, SLICES_PER_SEGMENT, USABLE_SLICES};
use crate::os::mmap;

/// Empty segments kept mapped (their memory purged) for reuse, as long as
/// they have been empty for less than `EMPTY_SEGMENT_IDLE_DELAYS` purge
/// delays: a program whose memory goes up and down keeps them, one that has
/// gone quiet gives back their headers and address space too.
const KEEP_EMPTY_SEGMENTS: usize = 2;
const EMPTY_SEGMENT_IDLE_DELAYS: u64 = 2;
/// Beyond this many, an emptied segment is unmapped at once.
const MAX_EMPTY_SEGMENTS: usize = 8;
/// A dirty free span up to this many times the length asked for is taken
/// before a clean span that fits better: its pages are still backed, so
/// they need no page faults, and the clean span stays unbacked. (Taking
/// dirty spans of any length first splits long dirty runs for short
/// requests: realloc_chain then grew into fresh spans, peak RSS +8%.
/// Best fit alone made mem_steady fault 65,000-100,000 times a second,
/// three to four times as often, refaulting clean spans while dirty ones
/// waited to be purged. The price is address space: docs/MEMORY.md.)
const DIRTY_REACH: usize = 4;

pub struct Spans {
    /// Free spans by state (`CLEAN`: decommitted, `DIRTY`: maybe backed)
    /// and length in slices (index 1..=USABLE_SLICES). Of two spans of the
    /// same length the dirty one is reused first: its pages need no faults,
    /// and every dirty span reused is one less to purge.
    bins: [[*mut Page; SLICES_PER_SEGMENT]; 2],
    /// Bit n of `nonempty[state]` set when `bins[state][n]` is non-empty.
    nonempty: [u64; 2],
    /// All segments (a doubly linked list through `Segment::next/prev`).
    segments: *mut Segment,
    pub segment_count: usize,
    /// Segments whose slices are all free.
    pub empty_segments: usize,
    /// Bytes of free spans whose memory may still be backed.
    pub dirty_bytes: usize,
}

// SAFETY: `Spans` is only reachable through the core's lock.
unsafe impl Send for Spans {}

/// What a purge did.
#[derive(Clone, Copy, Default)]
pub struct Purged {
    /// Bytes given back to the OS (decommitted or unmapped).
    pub bytes: usize,
    /// When the oldest span still dirty becomes due (ms), if any.
    pub next_due_ms: Option<u64>,
}

impl Purged {
    /// Records that something becomes due at `ms`.
    fn note_due(&mut self, ms: u64) {
        self.next_due_ms = Some(self.next_due_ms.map_or(ms, |d| d.min(ms)));
    }
}

impl Spans {
    pub const fn new() -> Spans {
        Spans {
            bins: [[ptr::null_mut(); SLICES_PER_SEGMENT]; 2],
            nonempty: [0; 2],
            segments: ptr::null_mut(),
            segment_count: 0,
            empty_segments: 0,
            dirty_bytes: 0,
        }
    }

    /// Allocates a span of `slices` slices whose first slice index is a
    /// multiple of `align_slices` (a power of two). Returns its head
    /// descriptor (kind `None`, so no neighbour merges it before the caller
    /// sets it up; `is_zero` says whether its memory is known to be zero),
    /// or null when the OS refuses memory, or when no segment could ever
    /// hold such a run (see `fits_in_segment`; adding segments would not
    /// help, so it must not loop).
    pub fn alloc(&mut self, slices: usize, align_slices: usize) -> *mut Page {
        debug_assert!((1..=USABLE_SLICES).contains(&slices));
        if !fits_in_segment(slices, align_slices) {
            return ptr::null_mut();
        }
        loop {
            if let Some((span, start)) = self.find(slices, align_slices) {
                return self.carve(span, start, slices);
            }
            if !self.add_segment() {
                return ptr::null_mut();
            }
        }
    }

    /// Returns a span (freed at `now_ms`; its memory maybe backed when
    /// `backed`, else decommitted) to the bins, merging it with free
    /// neighbours.
    pub fn free(&mut self, head: &Page, now_ms: u64, backed: bool) {
        let mut backed = backed;
        let segment = Segment::of(head as *const Page as usize);
        let mut start = head.slice_index as usize;
        let mut count = head.slice_count();
        // SAFETY: descriptors of the same mapped segment.
        let pages = unsafe { &(*segment).pages };
        if start > FIRST_USABLE_SLICE {
            let left = pages[start - 1].head.load(Ordering::Relaxed);
            // SAFETY: head pointers always point into the same segment's header.
            let left = unsafe { &*left };
            if left.kind() == PageKind::Free {
                backed |= left.committed.get();
                self.unbin_free(left);
                start = left.slice_index as usize;
                count += left.slice_count();
            }
        }
        let end = start + count;
        if end < SLICES_PER_SEGMENT {
            let right = pages[end].head.load(Ordering::Relaxed);
            // SAFETY: as above.
            let right = unsafe { &*right };
            if right.kind() == PageKind::Free {
                backed |= right.committed.get();
                self.unbin_free(right);
                count += right.slice_count();
            }
        }
        let merged = self.set_span(segment, start, count, PageKind::Free);
        // SAFETY: `merged` is a head descriptor in the segment.
        let merged_ref = unsafe { &*merged };
        merged_ref.is_zero.set(false);
        merged_ref.committed.set(backed);
        merged_ref.freed_at_ms.set(now_ms);
        self.bin_free(merged_ref);
        if count == USABLE_SLICES && self.empty_segments > MAX_EMPTY_SEGMENTS {
            self.release_segment(segment, merged_ref);
        }
    }

    /// Shrinks the allocated span `head` to its first `keep` slices, freeing
    /// the rest.
    pub fn shrink(&mut self, head: &Page, keep: usize, now_ms: u64) {
        let count = head.slice_count();
        debug_assert!(keep >= 1 && keep < count);
        let segment = Segment::of(head as *const Page as usize);
        let start = head.slice_index as usize;
        head.slice_count.store(keep as u32, Ordering::Relaxed);
        let tail = self.set_span(segment, start + keep, count - keep, PageKind::Large);
        // SAFETY: `set_span` returns a head descriptor in the mapped segment.
        self.free(unsafe { &*tail }, now_ms, true);
    }

    /// Grows the allocated span `head` by `extra` slices in place if the
    /// span right after it is free and long enough. Returns success.
    pub fn grow(&mut self, head: &Page, extra: usize) -> bool {
        let span = head as *const Page as *mut Page;
        let segment = Segment::of(span as usize);
        let end = head.slice_index as usize + head.slice_count();
        if end >= SLICES_PER_SEGMENT {
            return false;
        }
        // SAFETY: descriptors of the same mapped segment.
        let right = unsafe { &*(*segment).pages[end].head.load(Ordering::Relaxed) };
        if right.kind() != PageKind::Free || right.slice_count() < extra {
            return false;
        }
        // The carved slices join `head`'s span.
        self.carve(right as *const Page as *mut Page, end, extra);
        head.slice_count
            .store((head.slice_count() + extra) as u32, Ordering::Relaxed);
        for index in end..end + extra {
            // SAFETY: as above.
            unsafe { (*segment).pages[index].head.store(span, Ordering::Relaxed) };
        }
        true
    }

    /// Calls `visit` for every segment (under the core lock).
    pub fn for_each_segment(&self, mut visit: impl FnMut(*mut Segment)) {
        let mut segment = self.segments;
        while !segment.is_null() {
            visit(segment);
            // SAFETY: segments in the list are mapped until unlinked under the lock.
            segment = unsafe { (*segment).next() };
        }
    }

    /// Gives back the memory of free spans freed at least `delay_ms` before
    /// `now_ms` (all of them when `force`): their pages are decommitted, and
    /// empty segments beyond `KEEP_EMPTY_SEGMENTS` are unmapped, the kept
    /// ones too after `EMPTY_SEGMENT_IDLE_DELAYS` delays empty (not by a
    /// `keep_dirty` purge, which only trims the backed reserve). With
    /// `keep_dirty`, stops early once no more than that many bytes wait.
    pub fn purge(
        &mut self,
        now_ms: u64,
        delay_ms: u64,
        force: bool,
        keep_dirty: Option<usize>,
    ) -> Purged {
        let mut purged = Purged::default();
        let mut segment = self.segments;
        while !segment.is_null() {
            if keep_dirty.is_some_and(|keep| self.dirty_bytes <= keep) {
                break;
            }
            // SAFETY: listed segments are mapped; read `next` before a
            // possible unmap of this one.
            let next = unsafe { (*segment).next() };
            // SAFETY: as above.
            let pages = unsafe { &(*segment).pages };
            let mut index = FIRST_USABLE_SLICE;
            while index < SLICES_PER_SEGMENT {
                let page = &pages[index];
                let count = page.slice_count().max(1);
                if page.kind() != PageKind::Free {
                    index += count;
                    continue;
                }
                let freed_at = page.freed_at_ms.get();
                let due = freed_at.saturating_add(delay_ms);
                if page.committed.get() {
                    if !force && now_ms < due {
                        purged.note_due(due);
                        index += count;
                        continue;
                    }
                    purged.bytes += self.decommit(page);
                }
                if count == USABLE_SLICES {
                    // An empty segment: unmapped beyond the few kept for
                    // reuse, and those too once empty for a while (not in a
                    // purge that only trims the dirty reserve).
                    let idle_due = freed_at.saturating_add(EMPTY_SEGMENT_IDLE_DELAYS * delay_ms);
                    let timed = keep_dirty.is_none();
                    let beyond_kept =
                        self.empty_segments > KEEP_EMPTY_SEGMENTS && (force || now_ms >= due);
                    if beyond_kept || (timed && (force || now_ms >= idle_due)) {
                        self.release_segment(segment, page);
                        break;
                    }
                    if timed {
                        purged.note_due(idle_due);
                    }
                }
                index += count;
            }
            segment = next;
        }
        purged
    }

    /// Decommits a free span's memory; returns the bytes.
    fn decommit(&mut self, page: &Page) -> usize {
        let bytes = page.slice_count() * SLICE_SIZE;
        let segment = Segment::of(page as *const Page as usize);
        mmap::decommit(
            (segment as usize + page.slice_index as usize * SLICE_SIZE) as *mut u8,
            bytes,
        );
        let span = page as *const Page as *mut Page;
        self.bin_remove(span);
        page.committed.set(false);
        self.bin_push(span);
        page.is_zero.set(true);
        self.dirty_bytes -= bytes;
        bytes
    }

    /// Finds a free span holding an aligned run of `slices`: the shortest
    /// dirty span up to `DIRTY_REACH` times as long, else the best fit (the
    /// shortest span that holds it), a dirty one before a clean one of the
    /// same length.
    fn find(&self, slices: usize, align: usize) -> Option<(*mut Page, usize)> {
        let fits = !((1u64 << slices) - 1);
        let reach = match slices * DIRTY_REACH {
            bins if bins >= 64 => u64::MAX,
            bins => (1u64 << bins) - 1,
        };
        self.shortest_in(self.nonempty[DIRTY] & fits & reach, &[DIRTY], slices, align)
            .or_else(|| {
                let candidates = (self.nonempty[DIRTY] | self.nonempty[CLEAN]) & fits;
                self.shortest_in(candidates, &[DIRTY, CLEAN], slices, align)
            })
    }

    /// The first span that holds the run, trying the bins whose bits are set
    /// in `bins` from the shortest up, and in each the `states` in order.
    fn shortest_in(
        &self,
        mut bins: u64,
        states: &[usize],
        slices: usize,
        align: usize,
    ) -> Option<(*mut Page, usize)> {
        while bins != 0 {
            let bin = bins.trailing_zeros() as usize;
            bins &= bins - 1;
            for &state in states {
                if let Some(found) = self.find_in_bin(state, bin, slices, align) {
                    return Some(found);
                }
            }
        }
        None
    }

    fn find_in_bin(
        &self,
        state: usize,
        bin: usize,
        slices: usize,
        align: usize,
    ) -> Option<(*mut Page, usize)> {
        let mut span = self.bins[state][bin];
        while !span.is_null() {
            // SAFETY: binned spans are head descriptors of mapped segments.
            let head = unsafe { &*span };
            let start = head.slice_index as usize;
            let aligned = start.next_multiple_of(align);
            if aligned + slices <= start + head.slice_count() {
                return Some((span, aligned));
            }
            if align == 1 {
                break;
            }
            span = head.next.get();
        }
        None
    }

    /// Takes `[start, start + slices)` out of the free span `span`; the parts
    /// before and after stay free, with the span's state.
    fn carve(&mut self, span: *mut Page, start: usize, slices: usize) -> *mut Page {
        // SAFETY: binned span head of a mapped segment.
        let head = unsafe { &*span };
        self.unbin_free(head);
        let segment = Segment::of(span as usize);
        let span_start = head.slice_index as usize;
        let span_end = span_start + head.slice_count();
        let (is_zero, committed, freed_at) = (
            head.is_zero.get(),
            head.committed.get(),
            head.freed_at_ms.get(),
        );
        let rest = |spans: &mut Spans, from: usize, to: usize| {
            let part = spans.set_span(segment, from, to - from, PageKind::Free);
            // SAFETY: head descriptor in the segment.
            let part = unsafe { &*part };
            part.is_zero.set(is_zero);
            part.committed.set(committed);
            part.freed_at_ms.set(freed_at);
            spans.bin_free(part);
        };
        if start > span_start {
            rest(self, span_start, start);
        }
        if start + slices < span_end {
            rest(self, start + slices, span_end);
        }
        let taken = self.set_span(segment, start, slices, PageKind::None);
        // SAFETY: head descriptor in the segment.
        unsafe { (*taken).is_zero.set(is_zero) };
        taken
    }

    /// Bins a free span and counts it (dirty bytes, empty segments).
    fn bin_free(&mut self, page: &Page) {
        let count = page.slice_count();
        if page.committed.get() {
            self.dirty_bytes += count * SLICE_SIZE;
        }
        if count == USABLE_SLICES {
            self.empty_segments += 1;
        }
        self.bin_push(page as *const Page as *mut Page);
    }

    /// Unbins a free span and uncounts it.
    fn unbin_free(&mut self, page: &Page) {
        let count = page.slice_count();
        if page.committed.get() {
            self.dirty_bytes -= count * SLICE_SIZE;
        }
        if count == USABLE_SLICES {
            self.empty_segments -= 1;
        }
        self.bin_remove(page as *const Page as *mut Page);
    }

    /// Makes `[start, start + count)` one span of `kind`: every slice's head
    /// pointer names its first descriptor. Returns that head.
    fn set_span(
        &mut self,
        segment: *mut Segment,
        start: usize,
        count: usize,
        kind: PageKind,
    ) -> *mut Page {
        // SAFETY: `segment` is mapped; indices are within its slices.
        let pages = unsafe { &(*segment).pages };
        let head = &pages[start] as *const Page as *mut Page;
        for page in &pages[start..start + count] {
            page.head.store(head, Ordering::Relaxed);
        }
        let head_ref = &pages[start];
        head_ref.slice_count.store(count as u32, Ordering::Relaxed);
        head_ref.set_kind(kind);
        head_ref.heap.store(NO_OWNER, Ordering::Relaxed);
        head_ref.check_limit.store(0, Ordering::Relaxed);
        head
    }

    fn bin_push(&mut self, span: *mut Page) {
        // SAFETY: head descriptor of a free span, owned by the core.
        let head = unsafe { &*span };
        let bin = head.slice_count();
        let state = state_of(head);
        let list = &mut self.bins[state][bin];
        head.prev.set(ptr::null_mut());
        head.next.set(*list);
        if !list.is_null() {
            // SAFETY: binned head descriptor.
            unsafe { (**list).prev.set(span) };
        }
        *list = span;
        self.nonempty[state] |= 1 << bin;
    }

    fn bin_remove(&mut self, span: *mut Page) {
        // SAFETY: binned head descriptor.
        let head = unsafe { &*span };
        let bin = head.slice_count();
        let state = state_of(head);
        let (prev, next) = (head.prev.get(), head.next.get());
        if prev.is_null() {
            self.bins[state][bin] = next;
        } else {
            // SAFETY: binned head descriptor.
            unsafe { (*prev).next.set(next) };
        }
        if !next.is_null() {
            // SAFETY: binned head descriptor.
            unsafe { (*next).prev.set(prev) };
        }
        if self.bins[state][bin].is_null() {
            self.nonempty[state] &= !(1 << bin);
        }
        head.next.set(ptr::null_mut());
        head.prev.set(ptr::null_mut());
    }

    fn add_segment(&mut self) -> bool {
        let segment = Segment::create();
        if segment.is_null() {
            return false;
        }
        // SAFETY: freshly created, exclusively ours.
        let seg = unsafe { &*segment };
        seg.set_next(self.segments);
        if !self.segments.is_null() {
            // SAFETY: listed segments are mapped.
            unsafe { (*self.segments).set_prev(segment) };
        }
        self.segments = segment;
        self.segment_count += 1;
        let span = self.set_span(segment, FIRST_USABLE_SLICE, USABLE_SLICES, PageKind::Free);
        // SAFETY: head descriptor in the new segment.
        let span = unsafe { &*span };
        span.is_zero.set(true);
        span.committed.set(false);
        self.bin_free(span);
        true
    }

    /// Unmaps an empty segment, whose single free span is `span`.
    fn release_segment(&mut self, segment: *mut Segment, span: &Page) {
        self.unbin_free(span);
        // SAFETY: listed, mapped segment; we hold the core lock.
        let seg = unsafe { &*segment };
        let (prev, next) = (seg.prev(), seg.next());
        if prev.is_null() {
            self.segments = next;
        } else {
            // SAFETY: listed segment.
            unsafe { (*prev).set_next(next) };
        }
        if !next.is_null() {
            // SAFETY: listed segment.
            unsafe { (*next).set_prev(prev) };
        }
        self.segment_count -= 1;
        Segment::destroy(segment);
    }
}

/// True when a run of `slices` slices starting at a multiple of
/// `align_slices` fits in an empty segment (whose first slice holds the
/// header).
pub fn fits_in_segment(slices: usize, align_slices: usize) -> bool {
    FIRST_USABLE_SLICE.next_multiple_of(align_slices) + slices <= SLICES_PER_SEGMENT
}

const CLEAN: usize = 0;
const DIRTY: usize = 1;

/// Which bins a free span belongs in.
fn state_of(span: &Page) -> usize {
    if span.committed.get() { DIRTY } else { CLEAN }
}

impl Default for Spans {
    fn default() -> Spans {
        Spans::new()
    }
}
