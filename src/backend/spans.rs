//! The span allocator: free runs of slices binned by length, split on
//! allocation and coalesced with free neighbours on release. Lives inside the
//! core and is only used with the core's lock held.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::backend::page::{NO_OWNER, Page, PageKind};
use crate::backend::segment::Segment;
use crate::config::{FIRST_USABLE_SLICE, SLICES_PER_SEGMENT, USABLE_SLICES};

pub struct Spans {
    /// Free spans by length in slices (index 1..=USABLE_SLICES).
    bins: [*mut Page; SLICES_PER_SEGMENT],
    /// Bit n set when `bins[n]` is non-empty.
    nonempty: u64,
    /// All segments (a doubly linked list through `Segment::next/prev`).
    segments: *mut Segment,
    pub segment_count: usize,
    /// Segments whose slices are all free, kept for reuse.
    pub empty_segments: usize,
    /// How many empty segments to keep mapped.
    pub keep_empty_segments: usize,
}

// SAFETY: `Spans` is only reachable through the core's lock.
unsafe impl Send for Spans {}

impl Spans {
    pub const fn new() -> Spans {
        Spans {
            bins: [ptr::null_mut(); SLICES_PER_SEGMENT],
            nonempty: 0,
            segments: ptr::null_mut(),
            segment_count: 0,
            empty_segments: 0,
            keep_empty_segments: 1,
        }
    }

    /// Allocates a span of `slices` slices whose first slice index is a
    /// multiple of `align_slices` (a power of two). Returns its head
    /// descriptor (kind `None`, so no neighbour merges it before the caller
    /// sets it up), or null when the OS refuses memory.
    pub fn alloc(&mut self, slices: usize, align_slices: usize) -> *mut Page {
        debug_assert!((1..=USABLE_SLICES).contains(&slices));
        loop {
            if let Some((span, start)) = self.find(slices, align_slices) {
                return self.carve(span, start, slices);
            }
            if !self.add_segment() {
                return ptr::null_mut();
            }
        }
    }

    /// Returns a span to the bins, merging it with free neighbours. Empty
    /// segments beyond the ones kept are unmapped.
    pub fn free(&mut self, head: &Page) {
        let segment = Segment::of(head as *const Page as usize);
        let mut start = head.slice_index as usize;
        let mut count = head.slice_count();
        // SAFETY: descriptors of the same mapped segment.
        let pages = unsafe { &(*segment).pages };
        if start > FIRST_USABLE_SLICE {
            let left = pages[start - 1].head.load(Ordering::Relaxed);
            // SAFETY: head pointers always point into the same segment's header.
            if unsafe { (*left).kind() } == PageKind::Free {
                self.bin_remove(left);
                // SAFETY: as above.
                let left = unsafe { &*left };
                start = left.slice_index as usize;
                count += left.slice_count();
            }
        }
        let end = start + count;
        if end < SLICES_PER_SEGMENT {
            let right = pages[end].head.load(Ordering::Relaxed);
            // SAFETY: as above.
            if unsafe { (*right).kind() } == PageKind::Free {
                self.bin_remove(right);
                // SAFETY: as above.
                count += unsafe { (*right).slice_count() };
            }
        }
        let merged = self.set_span(segment, start, count, PageKind::Free);
        // SAFETY: `merged` is a head descriptor in the segment.
        unsafe { (*merged).is_zero.set(false) };
        if count == USABLE_SLICES {
            self.empty_segments += 1;
            if self.empty_segments > self.keep_empty_segments {
                self.release_segment(segment);
                return;
            }
        }
        self.bin_push(merged);
    }

    /// Shrinks the allocated span `span` to its first `keep` slices, freeing
    /// the rest.
    pub fn shrink(&mut self, head: &Page, keep: usize) {
        let count = head.slice_count();
        debug_assert!(keep >= 1 && keep < count);
        let segment = Segment::of(head as *const Page as usize);
        let start = head.slice_index as usize;
        head.slice_count.store(keep as u32, Ordering::Relaxed);
        let tail = self.set_span(segment, start + keep, count - keep, PageKind::Large);
        // SAFETY: `set_span` returns a head descriptor in the mapped segment.
        self.free(unsafe { &*tail });
    }

    /// Grows the allocated span `span` by `extra` slices in place if the
    /// span right after it is free and long enough. Returns success.
    pub fn grow(&mut self, head: &Page, extra: usize) -> bool {
        let span = head as *const Page as *mut Page;
        let segment = Segment::of(span as usize);
        let start = head.slice_index as usize;
        let count = head.slice_count();
        let end = start + count;
        if end >= SLICES_PER_SEGMENT {
            return false;
        }
        // SAFETY: descriptors of the same mapped segment.
        let right = unsafe { (*segment).pages[end].head.load(Ordering::Relaxed) };
        // SAFETY: as above.
        let right_ref = unsafe { &*right };
        if right_ref.kind() != PageKind::Free || right_ref.slice_count() < extra {
            return false;
        }
        let right_count = right_ref.slice_count();
        self.bin_remove(right);
        if right_count > extra {
            let rest = self.set_span(segment, end + extra, right_count - extra, PageKind::Free);
            self.bin_push(rest);
        }
        head.slice_count
            .store((count + extra) as u32, Ordering::Relaxed);
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
            segment = unsafe { (*segment).next.load(Ordering::Relaxed) };
        }
    }

    /// Finds a free span holding an aligned run of `slices`.
    fn find(&self, slices: usize, align: usize) -> Option<(*mut Page, usize)> {
        let mut candidates = self.nonempty & !((1u64 << slices) - 1);
        while candidates != 0 {
            let bin = candidates.trailing_zeros() as usize;
            candidates &= candidates - 1;
            let mut span = self.bins[bin];
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
        }
        None
    }

    /// Takes `[start, start + slices)` out of the free span `span`; the parts
    /// before and after go back to the bins.
    fn carve(&mut self, span: *mut Page, start: usize, slices: usize) -> *mut Page {
        self.bin_remove(span);
        // SAFETY: binned span head of a mapped segment.
        let head = unsafe { &*span };
        let segment = Segment::of(span as usize);
        let span_start = head.slice_index as usize;
        let span_count = head.slice_count();
        let is_zero = head.is_zero.get();
        if span_count == USABLE_SLICES {
            self.empty_segments -= 1;
        }
        if start > span_start {
            let lead = self.set_span(segment, span_start, start - span_start, PageKind::Free);
            // SAFETY: head descriptor in the segment.
            unsafe { (*lead).is_zero.set(is_zero) };
            self.bin_push(lead);
        }
        let end = start + slices;
        let span_end = span_start + span_count;
        if end < span_end {
            let tail = self.set_span(segment, end, span_end - end, PageKind::Free);
            // SAFETY: head descriptor in the segment.
            unsafe { (*tail).is_zero.set(is_zero) };
            self.bin_push(tail);
        }
        let taken = self.set_span(segment, start, slices, PageKind::None);
        // SAFETY: head descriptor in the segment.
        unsafe { (*taken).is_zero.set(is_zero) };
        taken
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
        head.prev.set(ptr::null_mut());
        head.next.set(self.bins[bin]);
        if !self.bins[bin].is_null() {
            // SAFETY: binned head descriptor.
            unsafe { (*self.bins[bin]).prev.set(span) };
        }
        self.bins[bin] = span;
        self.nonempty |= 1 << bin;
    }

    fn bin_remove(&mut self, span: *mut Page) {
        // SAFETY: binned head descriptor.
        let head = unsafe { &*span };
        let bin = head.slice_count();
        let (prev, next) = (head.prev.get(), head.next.get());
        if prev.is_null() {
            self.bins[bin] = next;
        } else {
            // SAFETY: binned head descriptor.
            unsafe { (*prev).next.set(next) };
        }
        if !next.is_null() {
            // SAFETY: binned head descriptor.
            unsafe { (*next).prev.set(prev) };
        }
        if self.bins[bin].is_null() {
            self.nonempty &= !(1 << bin);
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
        seg.next.store(self.segments, Ordering::Relaxed);
        if !self.segments.is_null() {
            // SAFETY: listed segments are mapped.
            unsafe { (*self.segments).prev.store(segment, Ordering::Relaxed) };
        }
        self.segments = segment;
        self.segment_count += 1;
        self.empty_segments += 1;
        let span = self.set_span(segment, FIRST_USABLE_SLICE, USABLE_SLICES, PageKind::Free);
        // SAFETY: head descriptor in the new segment.
        unsafe { (*span).is_zero.set(true) };
        self.bin_push(span);
        true
    }

    fn release_segment(&mut self, segment: *mut Segment) {
        // SAFETY: listed, mapped segment; we hold the core lock.
        let seg = unsafe { &*segment };
        let (prev, next) = (
            seg.prev.load(Ordering::Relaxed),
            seg.next.load(Ordering::Relaxed),
        );
        if prev.is_null() {
            self.segments = next;
        } else {
            // SAFETY: listed segment.
            unsafe { (*prev).next.store(next, Ordering::Relaxed) };
        }
        if !next.is_null() {
            // SAFETY: listed segment.
            unsafe { (*next).prev.store(prev, Ordering::Relaxed) };
        }
        self.segment_count -= 1;
        self.empty_segments -= 1;
        Segment::destroy(segment);
    }
}

impl Default for Spans {
    fn default() -> Spans {
        Spans::new()
    }
}
