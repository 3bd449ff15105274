//! Freeing, and the ownership checks every pointer passes first.
//!
//! A pointer is trusted only after the region map says CMA owns its chunk,
//! the page descriptor (out of line, in the segment header) says it is the
//! start of a carved block, and the block is not already tagged free. The
//! fast path does exactly these checks for a block of the calling thread's
//! own heap, and `free_into_full_page` the same for one of its full pages;
//! other threads' blocks go to their owner (`remote`); everything else
//! (pages with runs or given blocks, secure mode, large and huge blocks,
//! errors) goes to `free_checked`.

use core::sync::atomic::Ordering;

use crate::backend::page::{FULL_FLAG, Page, PageKind};
use crate::backend::region_map::{self, Region};
use crate::backend::segment::Segment;
use crate::backend::{self, huge};
use crate::config::MIN_ALIGN;
use crate::diag::{self, Call, HeapError};
use crate::heap::block::Block;
use crate::heap::collect::{self, CoreAccess};
use crate::heap::heap::Heap;
use crate::heap::page_ops;
use crate::heap::remote::{self, Foreign};
use crate::heap::runs;
use crate::heap::secure;
use crate::purge;
use crate::tls;

/// free's fast path: a block of the calling thread's heap, in a page that
/// is neither full nor about to become empty.
///
/// # Safety
/// Any pointer value may be passed: invalid ones end the process with a
/// diagnostic naming `call`.
#[inline(always)]
pub unsafe fn free(ptr: *mut u8, call: Call) {
    let addr = ptr as usize;
    if let Some(segment) = region_map::segment_of(addr) {
        // SAFETY: the chunk is one of our segments, whose header is mapped.
        let page = unsafe { &*Segment::page_in(segment, addr) };
        let heap = tls::heap();
        if page.owned_by(heap as usize)
            // SAFETY: the page's owner is this thread's heap, checked first.
            && unsafe { page.owner_is_block_start(addr) }
        {
            let block = addr as *mut Block;
            // SAFETY: `addr` is a carved block of a page owned by this thread.
            if !unsafe { (*block).is_tagged_free() } {
                // SAFETY: as above.
                unsafe { (*block).set_free(page.free.get()) };
                page.free.set(block);
                if !page.count_free_is_last() {
                    return;
                }
                // SAFETY: as above.
                return collect::page_emptied(unsafe { &*heap }, page);
            }
        } else {
            return not_mine(addr, page, heap, call);
        }
    }
    free_slow(ptr, call)
}

/// free of a block in a page the calling thread does not own (or a full
/// page it does own).
#[inline(never)]
fn not_mine(addr: usize, page: &Page, heap: *mut Heap, call: Call) {
    if page.heap.load(Ordering::Relaxed) == heap as usize | FULL_FLAG {
        return free_into_full_page(addr, page, heap, call);
    }
    match remote::free_foreign(page, addr, heap, call) {
        Foreign::Sent => {}
        Foreign::DoubleFree => diag::fatal(call, addr, HeapError::DoubleFree),
        Foreign::Overflow => diag::fatal(call, addr, HeapError::Overflow),
        Foreign::Mine | Foreign::Other => free_slow(addr as *mut u8, call),
    }
}

/// The owner's free into one of its pages that was full (out of its
/// queue): the fast path's checks, then the page goes back in its queue.
/// Only the full flag is set, so the page has no run, no given block, and
/// secure mode is off.
fn free_into_full_page(addr: usize, page: &Page, heap: *mut Heap, call: Call) {
    // SAFETY: the page's owner is this thread's heap (its owner word says
    // so, with only the full flag besides).
    if unsafe { page.owner_is_block_start(addr) } {
        let block = addr as *mut Block;
        // SAFETY: a carved block of a page this thread owns.
        if !unsafe { (*block).is_tagged_free() } {
            // SAFETY: as above; the block is live.
            unsafe { collect::free_to_page(&*heap, page, block, &mut CoreAccess::Take) };
            return;
        }
    }
    free_slow(addr as *mut u8, call)
}

#[inline(never)]
fn free_slow(ptr: *mut u8, call: Call) {
    if let Err(error) = free_checked(ptr, call) {
        diag::fatal(call, ptr as usize, error);
    }
}

/// Frees `ptr` (null is fine), or reports why it cannot be freed; on an
/// error nothing changes and no lock is held. `call` is named if the free
/// finds damage elsewhere (secure mode checks the block leaving the
/// quarantine), which ends the process.
pub fn free_checked(ptr: *mut u8, call: Call) -> Result<(), HeapError> {
    let addr = ptr as usize;
    if addr == 0 {
        return Ok(());
    }
    let _errno = crate::os::errno::ErrnoGuard::save();
    match locate(addr)? {
        Location::Small(page) => free_small(page, addr, call),
        Location::Run(page, blocks) => runs::free(page, addr, blocks),
        Location::Large(page) => {
            let mut core = backend::lock();
            let size = core.validate_large(page, addr)?;
            secure::check(addr, size)?;
            secure::scrub_large(addr, size);
            core.free_large(page, addr)?;
            purge::after_release(&mut core);
            drop(core);
            purge::kick();
            Ok(())
        }
        Location::Huge => {
            let (base, len, _) = huge::detach(&mut backend::lock(), addr)?;
            huge::release(base, len);
            Ok(())
        }
    }
}

/// Where a pointer lives, once found to be inside CMA's memory.
pub enum Location {
    /// A carved block of a small page (maybe free: check its tag).
    Small(&'static Page),
    /// A run of this many blocks of a small page (see `runs`).
    Run(&'static Page, usize),
    /// In a large span (validated under the lock).
    Large(&'static Page),
    /// In a huge mapping (validated under the lock).
    Huge,
}

#[inline]
pub fn locate(addr: usize) -> Result<Location, HeapError> {
    match region_map::lookup(addr) {
        Region::Segment => {
            // SAFETY: the chunk is one of our segments, whose header is mapped.
            if !unsafe { (*Segment::of(addr)).cookie_ok() } {
                return Err(HeapError::Corrupted);
            }
            // SAFETY: as above.
            let page: &'static Page = unsafe { &*Segment::page_of(addr) };
            match page.kind() {
                PageKind::Small if page.is_block_start(addr) => {
                    if runs::covers(page, addr) {
                        return Err(HeapError::InvalidPointer);
                    }
                    Ok(Location::Small(page))
                }
                PageKind::Small => match runs::locate(page, addr) {
                    Ok(blocks) => Ok(Location::Run(page, blocks)),
                    Err(HeapError::InvalidPointer) => Err(invalid_or_freed(addr)),
                    Err(error) => Err(error),
                },
                PageKind::None => Err(invalid_or_freed(addr)),
                PageKind::Large => Ok(Location::Large(page)),
                PageKind::Free if addr % MIN_ALIGN == 0 => Err(HeapError::DoubleFree),
                PageKind::Free => Err(HeapError::InvalidPointer),
            }
        }
        Region::HugeHead | Region::HugeTail => Ok(Location::Huge),
        Region::Foreign => Err(invalid_or_freed(addr)),
    }
}

/// An address that is no block now: a double free if a large or huge block
/// was freed there recently (its memory unmapped, or in another span now).
fn invalid_or_freed(addr: usize) -> HeapError {
    if addr % MIN_ALIGN == 0 && backend::lock().freed.contains(addr) {
        HeapError::DoubleFree
    } else {
        HeapError::InvalidPointer
    }
}

/// Frees a carved block of a small page: locally if the calling thread
/// owns the page, else towards its owner.
fn free_small(page: &Page, addr: usize, call: Call) -> Result<(), HeapError> {
    match remote::free_foreign(page, addr, tls::heap(), call) {
        Foreign::Sent => Ok(()),
        Foreign::DoubleFree => Err(HeapError::DoubleFree),
        Foreign::Other => Err(HeapError::InvalidPointer),
        Foreign::Overflow => Err(HeapError::Overflow),
        Foreign::Mine => {
            let block = addr as *mut Block;
            // SAFETY: a carved block of a page this thread owns.
            if unsafe { (*block).is_tagged_free() } || page.is_given(addr) {
                return Err(HeapError::DoubleFree);
            }
            if secure::enabled() {
                secure::check(addr, page.block_size())?;
                if !remote::claim(block) {
                    return Err(HeapError::DoubleFree);
                }
                remote::quarantine_or_deliver(tls::heap(), addr, page.block_size(), call);
                return Ok(());
            }
            // SAFETY: the calling thread's heap owns the page.
            let heap = unsafe { &*tls::heap() };
            page_ops::settle_slow_flag(page);
            // SAFETY: a live carved block of a page this thread's heap owns.
            unsafe { collect::free_to_page(heap, page, block, &mut CoreAccess::Take) };
            Ok(())
        }
    }
}

/// Returns the size of the live block `ptr` as the statistics count it (the
/// whole block, secure-mode canary included), or why it is not one.
pub fn block_bytes(ptr: *const u8) -> Result<usize, HeapError> {
    let addr = ptr as usize;
    match locate(addr)? {
        Location::Small(page) => Ok(page.block_size()),
        Location::Run(page, blocks) => Ok(blocks * page.block_size()),
        Location::Large(page) => backend::lock().validate_large(page, addr),
        Location::Huge => huge::usable_size(&backend::lock().freed, addr),
    }
}

/// Returns the usable size of the live block `ptr`, or why it is not one.
pub fn usable_size(ptr: *const u8) -> Result<usize, HeapError> {
    let addr = ptr as usize;
    match locate(addr)? {
        Location::Small(page) => {
            let block = addr as *const Block;
            // SAFETY: a carved block of one of our pages.
            if unsafe { (*block).is_tagged_free() } || page.is_given(addr) {
                Err(HeapError::DoubleFree)
            } else {
                secure::check(addr, page.block_size())?;
                Ok(secure::usable(page.block_size()))
            }
        }
        Location::Run(page, blocks) => Ok(runs::usable(page, blocks)),
        Location::Large(page) => {
            let size = backend::lock().validate_large(page, addr)?;
            secure::check(addr, size)?;
            Ok(secure::usable(size))
        }
        Location::Huge => huge::usable_size(&backend::lock().freed, addr),
    }
}
