//! Huge blocks: each is its own mapping, aligned to a chunk (SEGMENT_SIZE),
//! with a header page in front of the block. The region map marks the
//! mapping's chunks, so a pointer is recognised without reading memory that
//! might not be ours; the header is validated against a secret before it is
//! trusted. Freed mappings go straight back to the OS.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::backend::Core;
use crate::backend::freed::FreedBlocks;
use crate::backend::region_map::{self, Region};
use crate::config::{OS_PAGE_SIZE, SEGMENT_SIZE};
use crate::diag::HeapError;
use crate::os::mmap;

/// The header at the start of a huge mapping.
#[repr(C)]
struct Header {
    /// `header address ^ user pointer ^ secret`.
    magic: usize,
    /// The pointer handed out.
    user: usize,
    /// Length of the whole mapping.
    map_len: usize,
}

static SECRET: AtomicUsize = AtomicUsize::new(0x3c6e_f372_fe94_f82b);

/// Sets the secret that validates headers; before the first huge block.
pub fn init_secret(secret: usize) {
    SECRET.store(secret, Ordering::Relaxed);
}

fn magic_of(header: usize, user: usize) -> usize {
    header ^ user ^ SECRET.load(Ordering::Relaxed)
}

/// Distance from the mapping start to the block for `align`.
fn user_offset(align: usize) -> usize {
    align.max(OS_PAGE_SIZE)
}

fn round_to_os_page(n: usize) -> Option<usize> {
    n.checked_add(OS_PAGE_SIZE - 1)
        .map(|v| v & !(OS_PAGE_SIZE - 1))
}

/// Maps a huge block of at least `size` bytes aligned to `align` (a power of
/// two). Returns the block and its usable size, or null when the OS
/// refuses. Its memory is zero.
pub fn alloc(size: usize, align: usize) -> (*mut u8, usize) {
    let offset = user_offset(align);
    // At least one byte, so the block lies inside its mapping even for 0.
    let Some(map_len) = offset
        .checked_add(size.max(1))
        .and_then(round_to_os_page)
        .and_then(|len| len.checked_add(guard()))
    else {
        return (core::ptr::null_mut(), 0);
    };
    let base = mmap::map_aligned(map_len, align.max(SEGMENT_SIZE));
    if base.is_null() {
        return (base, 0);
    }
    arm_guard(base as usize, map_len);
    let user = base as usize + offset;
    // SAFETY: the header page is the start of our fresh mapping.
    unsafe {
        base.cast::<Header>().write(Header {
            magic: magic_of(base as usize, user),
            user,
            map_len,
        })
    };
    region_map::set_huge(base as usize, map_len);
    crate::backend::segment::advise_huge_pages(base, map_len);
    (user as *mut u8, map_len - offset - guard())
}

/// Secure mode ends every huge mapping in an inaccessible guard page.
fn guard() -> usize {
    if crate::settings::secure() {
        OS_PAGE_SIZE
    } else {
        0
    }
}

/// Makes the last page of a mapping the guard page (secure mode).
fn arm_guard(base: usize, map_len: usize) {
    if guard() > 0 {
        mmap::protect_none((base + map_len - guard()) as *mut u8, guard());
    }
}

/// Makes the guard page of a mapping ordinary memory again.
fn disarm_guard(base: usize, map_len: usize) {
    if guard() > 0 {
        mmap::protect_read_write((base + map_len - guard()) as *mut u8, guard());
    }
}

/// Usable bytes of a mapping of `map_len` bytes whose block starts `offset`
/// bytes in.
fn usable_in(map_len: usize, offset: usize) -> usize {
    map_len - offset - guard()
}

/// Usable bytes of a validated huge block.
fn usable_of(header: &Header) -> usize {
    usable_in(
        header.map_len,
        header.user - header as *const Header as usize,
    )
}

/// Finds and validates the header of the huge block `ptr`. Must be called
/// with the core lock held, so the mapping cannot vanish meanwhile.
fn header_of(ptr: usize) -> Result<&'static Header, HeapError> {
    let mut chunk = ptr & !(SEGMENT_SIZE - 1);
    loop {
        match region_map::lookup(chunk) {
            Region::HugeHead => break,
            Region::HugeTail if chunk >= SEGMENT_SIZE => chunk -= SEGMENT_SIZE,
            _ => return Err(HeapError::InvalidPointer),
        }
    }
    // SAFETY: a HugeHead chunk starts with the header page of a live mapping
    // (the map entry is cleared, under the core lock, before unmapping).
    let header = unsafe { &*(chunk as *const Header) };
    if header.magic != magic_of(chunk, header.user) {
        return Err(HeapError::Corrupted);
    }
    if header.user != ptr {
        return Err(HeapError::InvalidPointer);
    }
    Ok(header)
}

/// Records, under the core lock, a huge block just mapped at `ptr`.
pub fn note_allocated(core: &mut Core, ptr: *mut u8, usable: usize) {
    core.freed.forget_range(ptr as usize, ptr as usize + usable);
    core.huge.allocated(usable);
    core.held_bytes += usable;
}

/// Usable size of huge block `ptr`, under the core lock.
pub fn usable_size(freed: &FreedBlocks, ptr: usize) -> Result<usize, HeapError> {
    header_of(ptr)
        .map(usable_of)
        .map_err(|e| freed.error_for(ptr, e))
}

/// Unlinks huge block `ptr` under the core lock and returns the mapping to
/// unmap (after the lock is released) and the usable size.
pub fn detach(core: &mut Core, ptr: usize) -> Result<(usize, usize, usize), HeapError> {
    let header = header_of(ptr).map_err(|e| core.freed.error_for(ptr, e))?;
    let base = header as *const Header as usize;
    let (map_len, usable) = (header.map_len, usable_of(header));
    region_map::clear(base, map_len);
    core.freed.record(ptr);
    core.huge.freed(usable);
    core.held_bytes -= usable;
    Ok((base, map_len, usable))
}

/// Unmaps a mapping returned by `detach`.
pub fn release(base: usize, map_len: usize) {
    mmap::unmap(base as *mut u8, map_len);
}

/// Resizes a detached huge mapping (see `detach`) to hold `new_size` bytes,
/// in place when possible, else by moving its pages to a new chunk-aligned
/// range. Returns the new user pointer, or None with the mapping untouched.
/// The caller re-attaches the result with `reattach`.
pub fn resize(
    base: usize,
    map_len: usize,
    user: usize,
    new_size: usize,
) -> Option<(usize, usize, usize)> {
    let offset = user - base;
    let new_len = offset
        .checked_add(new_size)
        .and_then(round_to_os_page)?
        .checked_add(guard())?;
    if new_len == map_len {
        return Some((base, map_len, user));
    }
    disarm_guard(base, map_len);
    let resized = resize_mapping(base, map_len, offset, new_len);
    match resized {
        Some((new_base, len, _)) => arm_guard(new_base, len),
        None => arm_guard(base, map_len),
    }
    resized
}

fn resize_mapping(
    base: usize,
    map_len: usize,
    offset: usize,
    new_len: usize,
) -> Option<(usize, usize, usize)> {
    let user = base + offset;
    if new_len < map_len {
        mmap::unmap((base + new_len) as *mut u8, map_len - new_len);
        return Some((base, new_len, user));
    }
    if mmap::remap_in_place(base as *mut u8, map_len, new_len) {
        return Some((base, new_len, user));
    }
    let align = if offset > OS_PAGE_SIZE { offset } else { 1 };
    let target = mmap::map_aligned(new_len, align.max(SEGMENT_SIZE));
    if target.is_null() {
        return None;
    }
    if !mmap::remap_to(base as *mut u8, map_len, new_len, target) {
        mmap::unmap(target, new_len);
        return None;
    }
    let new_base = target as usize;
    Some((new_base, new_len, new_base + offset))
}

/// Writes the header and map entries of a (possibly moved) huge mapping
/// taken out with `detach`, under the core lock.
pub fn reattach(core: &mut Core, base: usize, map_len: usize, user: usize) {
    // SAFETY: `base` starts a live mapping of ours whose first page is the header.
    unsafe {
        (base as *mut Header).write(Header {
            magic: magic_of(base, user),
            user,
            map_len,
        })
    };
    let usable = usable_in(map_len, user - base);
    core.freed.forget_range(user, user + usable);
    core.huge.live += 1;
    core.huge.bytes += usable;
    core.held_bytes += usable;
    region_map::set_huge(base, map_len);
}
