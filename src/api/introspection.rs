//! glibc's malloc introspection calls, answered from CMA's own state:
//! mallinfo2, mallinfo, malloc_stats, malloc_info, mallopt. (malloc_trim
//! is with the malloc family.)

use core::ffi::c_int;

use crate::report;
use crate::stats::{self, HUGE_ROW};

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct MallInfo2 {
    /// Bytes mapped for small and large blocks (segments).
    pub arena: usize,
    /// Free blocks carved in pages.
    pub ordblks: usize,
    pub smblks: usize,
    /// Huge blocks (each its own mapping) and their bytes.
    pub hblks: usize,
    pub hblkhd: usize,
    pub usmblks: usize,
    pub fsmblks: usize,
    /// Bytes in live small and large blocks.
    pub uordblks: usize,
    /// Bytes of segments not in live blocks.
    pub fordblks: usize,
    /// Free memory still backed that a purge (malloc_trim) would release.
    pub keepcost: usize,
}

/// glibc's `struct mallinfo` (the same fields as `int`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct MallInfo {
    pub arena: c_int,
    pub ordblks: c_int,
    pub smblks: c_int,
    pub hblks: c_int,
    pub hblkhd: c_int,
    pub usmblks: c_int,
    pub fsmblks: c_int,
    pub uordblks: c_int,
    pub fordblks: c_int,
    pub keepcost: c_int,
}

#[unsafe(no_mangle)]
pub extern "C" fn mallinfo2() -> MallInfo2 {
    let d = stats::read_detail();
    let huge = &d.rows[HUGE_ROW];
    let huge_bytes = huge.live_bytes.max(0) as usize;
    let arena = d.mapped_bytes as usize - huge_bytes;
    let in_use = (d.live_bytes.max(0) as usize).saturating_sub(huge_bytes);
    let free_blocks: i64 = d.rows.iter().map(|row| row.free.max(0)).sum();
    MallInfo2 {
        arena,
        ordblks: free_blocks as usize,
        smblks: 0,
        hblks: huge.live.max(0) as usize,
        hblkhd: huge_bytes,
        usmblks: 0,
        fsmblks: 0,
        uordblks: in_use,
        fordblks: arena.saturating_sub(in_use),
        keepcost: d.dirty_bytes as usize,
    }
}

/// The deprecated `int` version: values beyond `INT_MAX` wrap, as glibc's do.
#[unsafe(no_mangle)]
pub extern "C" fn mallinfo() -> MallInfo {
    let m = mallinfo2();
    MallInfo {
        arena: m.arena as c_int,
        ordblks: m.ordblks as c_int,
        smblks: m.smblks as c_int,
        hblks: m.hblks as c_int,
        hblkhd: m.hblkhd as c_int,
        usmblks: m.usmblks as c_int,
        fsmblks: m.fsmblks as c_int,
        uordblks: m.uordblks as c_int,
        fordblks: m.fordblks as c_int,
        keepcost: m.keepcost as c_int,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn malloc_stats() {
    report::write_malloc_stats();
}

/// Writes the XML description of the heap to `stream`. `options` must be 0
/// (else EINVAL), as for glibc.
///
/// # Safety
/// `stream` must be a valid `FILE*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_info(options: c_int, stream: *mut libc::FILE) -> c_int {
    if options != 0 || stream.is_null() {
        crate::os::errno::set(libc::EINVAL);
        return -1;
    }
    report::write_malloc_info(stream);
    0
}

/// glibc's parameters (malloc.h).
const M_MXFAST: c_int = 1;
const M_TRIM_THRESHOLD: c_int = -1;
const M_TOP_PAD: c_int = -2;
const M_MMAP_THRESHOLD: c_int = -3;
const M_MMAP_MAX: c_int = -4;
const M_CHECK_ACTION: c_int = -5;
const M_PERTURB: c_int = -6;
const M_ARENA_TEST: c_int = -7;
const M_ARENA_MAX: c_int = -8;

/// glibc's `mallopt`. CMA's design has no fastbins, arenas, mmap threshold
/// or top pad to tune, so valid values of glibc's parameters are accepted
/// (1) and change nothing; invalid ones are refused (0) where glibc refuses
/// them; unknown parameters are accepted, as glibc does.
#[unsafe(no_mangle)]
pub extern "C" fn mallopt(param: c_int, value: c_int) -> c_int {
    /// glibc's MAX_FAST_SIZE on 64-bit targets: 80 * sizeof(size_t) / 4.
    const MAX_FAST_SIZE: c_int = 160;
    let valid = match param {
        M_MXFAST => (0..=MAX_FAST_SIZE).contains(&value),
        M_MMAP_THRESHOLD => value >= 0,
        M_ARENA_TEST | M_ARENA_MAX => value > 0,
        M_TRIM_THRESHOLD | M_TOP_PAD | M_MMAP_MAX | M_CHECK_ACTION | M_PERTURB => true,
        _ => true,
    };
    valid as c_int
}
