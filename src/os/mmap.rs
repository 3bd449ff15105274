//! Memory mappings: reserve, release, decommit and resize address space.
//! CMA gets all its memory here, never from the system malloc.

use core::ptr;

/// Maps `size` bytes of zeroed, readable and writable memory, or returns
/// null. The kernel commits pages on first touch.
pub fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing has no preconditions.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Maps `size` bytes aligned to `align` (a power of two, at least the OS page
/// size), trimming the excess, or returns null.
pub fn map_aligned(size: usize, align: usize) -> *mut u8 {
    let Some(padded) = size.checked_add(align) else {
        return ptr::null_mut();
    };
    // Try the exact size first: the kernel often returns aligned addresses
    // next to our previous mappings.
    let p = map(size);
    if p.is_null() || (p as usize) & (align - 1) == 0 {
        return p;
    }
    unmap(p, size);
    let raw = map(padded);
    if raw.is_null() {
        return raw;
    }
    let start = (raw as usize + align - 1) & !(align - 1);
    let lead = start - raw as usize;
    let trail = padded - lead - size;
    if lead > 0 {
        unmap(raw, lead);
    }
    if trail > 0 {
        unmap((start + size) as *mut u8, trail);
    }
    start as *mut u8
}

/// Returns a mapping (or part of one) to the OS.
pub fn unmap(p: *mut u8, size: usize) {
    // SAFETY: callers pass ranges CMA mapped itself and no longer uses.
    unsafe {
        libc::munmap(p.cast(), size);
    }
}

/// The OS page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size <= 0 { 4096 } else { size as usize }
}

/// Releases the physical memory behind a range while keeping it mapped; the
/// next touch gets zeroed pages.
pub fn decommit(p: *mut u8, size: usize) {
    // SAFETY: callers pass page-aligned ranges of CMA's own mappings whose
    // contents are no longer needed.
    unsafe {
        libc::madvise(p.cast(), size, libc::MADV_DONTNEED);
    }
}

/// Asks for (or against) transparent huge pages on a range; a hint, errors
/// are ignored.
pub fn advise_huge_pages(p: *mut u8, size: usize, enable: bool) {
    let advice = if enable {
        libc::MADV_HUGEPAGE
    } else {
        libc::MADV_NOHUGEPAGE
    };
    // SAFETY: a hint on CMA's own mapping; it cannot change its contents.
    unsafe {
        libc::madvise(p.cast(), size, advice);
    }
}

/// Makes a range inaccessible (a guard page); a failure (too many mappings)
/// only loses the guard.
pub fn protect_none(p: *mut u8, size: usize) {
    // SAFETY: callers pass page-aligned ranges of CMA's own mappings that no
    // block overlaps.
    unsafe {
        libc::mprotect(p.cast(), size, libc::PROT_NONE);
    }
}

/// Makes a range readable and writable again.
pub fn protect_read_write(p: *mut u8, size: usize) {
    // SAFETY: callers pass page-aligned ranges of CMA's own mappings.
    unsafe {
        libc::mprotect(p.cast(), size, libc::PROT_READ | libc::PROT_WRITE);
    }
}

/// Resizes a mapping without moving it. Returns false (mapping unchanged)
/// when the address space after it is taken.
pub fn remap_in_place(p: *mut u8, old_size: usize, new_size: usize) -> bool {
    // SAFETY: callers pass a whole mapping CMA owns.
    let q = unsafe { libc::mremap(p.cast(), old_size, new_size, 0) };
    q != libc::MAP_FAILED
}

/// Moves a mapping's pages to `target` (a mapping of at least `new_size`
/// bytes CMA reserved, which is replaced), resizing it. Returns success; on
/// failure the old mapping is unchanged and `target` still mapped.
pub fn remap_to(p: *mut u8, old_size: usize, new_size: usize, target: *mut u8) -> bool {
    // SAFETY: `p` is a whole mapping CMA owns and `target` a range CMA
    // reserved for it; MREMAP_FIXED atomically replaces the reservation.
    let q = unsafe {
        libc::mremap(
            p.cast(),
            old_size,
            new_size,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            target as *mut libc::c_void,
        )
    };
    q != libc::MAP_FAILED
}
