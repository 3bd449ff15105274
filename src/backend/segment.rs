//! Segments: `SEGMENT_SIZE`-aligned mappings cut into 64 KiB slices. The
//! header (slice 0) holds one `Page` descriptor per slice, so the descriptor
//! of any address in a segment is found by address arithmetic alone.

use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::backend::page::{NO_OWNER, Page, PageKind};
use crate::backend::region_map::{self, Region};
use crate::config::{SEGMENT_MASK, SEGMENT_SIZE, SLICE_SHIFT, SLICE_SIZE, SLICES_PER_SEGMENT};
use crate::os::mmap;

/// Secret mixed into segment cookies.
static SECRET: AtomicUsize = AtomicUsize::new(0x2545_f491_4f6c_dd1d);

/// Sets the cookie secret; before the first segment is created.
pub fn init_secret(secret: usize) {
    SECRET.store(secret, Ordering::Relaxed);
}

/// One descriptor per slice. Descriptor 0 stands for the header slice
/// itself: a span of kind `None`, so an address in the header is nobody's
/// block. Its block fields are never used, and hold the segment's own:
/// the cookie (`address ^ secret`, in `check_magic`, checked whenever a
/// pointer is located in the segment) and the core's list of segments
/// (`next`, `prev`, under the core lock). The header is exactly two OS
/// pages: a third, for these few words alone, would be backed in every
/// segment.
#[repr(C)]
pub struct Segment {
    pub pages: [Page; SLICES_PER_SEGMENT],
}

const _: () = assert!(core::mem::size_of::<Segment>() <= SLICE_SIZE);
const _: () = assert!(core::mem::size_of::<Segment>() == 2 * crate::config::OS_PAGE_SIZE);
const _: () = assert!(core::mem::offset_of!(Segment, pages) == 0);

/// Applies the CMA_THP setting to a fresh mapping.
pub fn advise_huge_pages(base: *mut u8, len: usize) {
    match crate::settings::thp() {
        crate::settings::THP_ON => mmap::advise_huge_pages(base, len, true),
        crate::settings::THP_OFF => mmap::advise_huge_pages(base, len, false),
        _ => {}
    }
}

impl Segment {
    /// The segment holding `addr` (meaningful only if the region map says
    /// the chunk is a segment).
    #[inline(always)]
    pub fn of(addr: usize) -> *mut Segment {
        (addr & !SEGMENT_MASK) as *mut Segment
    }

    /// The head descriptor of the span holding `addr`, in a segment.
    #[inline(always)]
    pub fn page_of(addr: usize) -> *mut Page {
        Segment::page_in(Segment::of(addr) as usize, addr)
    }

    /// The head descriptor of the span holding `addr`, in `segment` (the
    /// base of the segment holding `addr`, mapped: callers checked it).
    #[inline(always)]
    pub fn page_in(segment: usize, addr: usize) -> *mut Page {
        let index = (addr >> SLICE_SHIFT) & (SLICES_PER_SEGMENT - 1);
        let slice = (segment + index * core::mem::size_of::<Page>()) as *const Page;
        // SAFETY: callers checked that `segment` is mapped; its header holds
        // a descriptor for every slice.
        unsafe { (*slice).head.load(Ordering::Relaxed) }
    }

    /// Maps and initialises a segment whose usable slices form one free span
    /// (not yet binned: the caller links it). Returns null when out of memory.
    pub fn create() -> *mut Segment {
        let base = mmap::map_aligned(SEGMENT_SIZE, SEGMENT_SIZE);
        if base.is_null() {
            return ptr::null_mut();
        }
        let segment = base as *mut Segment;
        for index in 0..SLICES_PER_SEGMENT {
            // SAFETY: fresh mapping of SEGMENT_SIZE bytes, exclusively ours and
            // large enough for the header; the field is plain data.
            unsafe { ptr::addr_of_mut!((*segment).pages[index].slice_index).write(index as u32) };
        }
        // SAFETY: zeroed memory is a valid `Segment` (atomics, cells, raw
        // pointers, integers); nobody else sees it yet.
        let seg = unsafe { &*segment };
        seg.cookie().store(
            (base as usize ^ SECRET.load(Ordering::Relaxed)) as u64,
            Ordering::Relaxed,
        );
        for page in seg.pages.iter() {
            page.heap.store(NO_OWNER, Ordering::Relaxed);
            page.head
                .store(page as *const Page as *mut Page, Ordering::Relaxed);
        }
        seg.pages[0].set_kind(PageKind::None);
        advise_huge_pages(base, SEGMENT_SIZE);
        region_map::set(base as usize, SEGMENT_SIZE, Region::Segment);
        segment
    }

    /// Unmaps a segment whose slices are all free and unlinked.
    pub fn destroy(segment: *mut Segment) {
        region_map::clear(segment as usize, SEGMENT_SIZE);
        mmap::unmap(segment.cast(), SEGMENT_SIZE);
    }

    /// True when the cookie matches (the header was not overwritten).
    pub fn cookie_ok(&self) -> bool {
        self.cookie().load(Ordering::Relaxed)
            == (self as *const Segment as usize ^ SECRET.load(Ordering::Relaxed)) as u64
    }

    fn cookie(&self) -> &AtomicU64 {
        &self.pages[0].check_magic
    }

    /// The next segment in the core's list (under the core lock).
    pub fn next(&self) -> *mut Segment {
        self.pages[0].next.get().cast()
    }

    pub fn set_next(&self, next: *mut Segment) {
        self.pages[0].next.set(next.cast());
    }

    /// The previous segment in the core's list (under the core lock).
    pub fn prev(&self) -> *mut Segment {
        self.pages[0].prev.get().cast()
    }

    pub fn set_prev(&self, prev: *mut Segment) {
        self.pages[0].prev.set(prev.cast());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::HeapError;
    use crate::heap::free::locate;

    /// The cookie lives in the header's own descriptor (the header is two
    /// OS pages, not three), and an overwritten cookie is still reported:
    /// an address in the segment is then located as corrupted metadata,
    /// not as a plain invalid pointer. (A segment of its own, never linked
    /// into the core, so no other test meets it smashed.)
    #[test]
    fn a_smashed_cookie_is_corrupted_metadata() {
        let segment = Segment::create();
        assert!(!segment.is_null());
        // SAFETY: created above, mapped, ours alone until destroyed.
        let seg = unsafe { &*segment };
        let inside = segment as usize + 3 * SLICE_SIZE + 64;
        assert!(seg.cookie_ok());
        assert!(matches!(locate(inside), Err(HeapError::InvalidPointer)));
        let cookie = seg.cookie().load(Ordering::Relaxed);
        seg.cookie().store(cookie ^ 1, Ordering::Relaxed);
        assert!(!seg.cookie_ok());
        assert!(matches!(locate(inside), Err(HeapError::Corrupted)));
        seg.cookie().store(cookie, Ordering::Relaxed);
        assert!(matches!(locate(inside), Err(HeapError::InvalidPointer)));
        Segment::destroy(segment);
    }
}
