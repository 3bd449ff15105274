//! Shared by the integration tests: the C API, a deterministic random
//! generator, and pattern fill/check helpers. Test binaries link the crate
//! with its `override` feature, so the process's malloc *is* CMA.
#![allow(dead_code)]

use std::ffi::c_void;

// Links the crate (and with it the malloc family and the CMA API) into the
// test binary even though the tests call it only through C symbols.
use cma as _;

unsafe extern "C" {
    pub fn malloc(size: usize) -> *mut c_void;
    pub fn calloc(count: usize, size: usize) -> *mut c_void;
    pub fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    pub fn free(ptr: *mut c_void);
    pub fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32;
    pub fn aligned_alloc(align: usize, size: usize) -> *mut c_void;
    pub fn memalign(align: usize, size: usize) -> *mut c_void;
    pub fn malloc_usable_size(ptr: *mut c_void) -> usize;
    pub fn free_sized(ptr: *mut c_void, size: usize);
    pub fn free_aligned_sized(ptr: *mut c_void, align: usize, size: usize);
    pub fn cma_checked_free(ptr: *mut c_void) -> i32;
    pub fn cma_checked_block_size(ptr: *const c_void, out: *mut usize) -> i32;
    pub fn cma_get_extended_stats(
        allocs: *mut usize,
        frees: *mut usize,
        current: *mut usize,
        peak: *mut usize,
    );
    pub fn cma_last_error() -> i32;
}

pub const CMA_OK: i32 = 0;
pub const CMA_ERROR_INVALID_POINTER: i32 = 3;
pub const CMA_ERROR_DOUBLE_FREE: i32 = 4;

/// xorshift64*: deterministic, seeded per test.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A size drawn across every size category: mostly small, some medium,
    /// a few large, rarely huge.
    pub fn size(&mut self) -> usize {
        match self.below(1000) {
            0..=699 => self.below(257) as usize,
            700..=949 => 257 + self.below(16 * 1024) as usize,
            950..=994 => 16 * 1024 + self.below(600 * 1024) as usize,
            _ => 1024 * 1024 + self.below(5 * 1024 * 1024) as usize,
        }
    }
}

/// The byte stored at `offset` of a block with pattern `seed`.
pub fn pattern_byte(seed: u64, offset: usize) -> u8 {
    (seed as u8) ^ (offset as u8).wrapping_mul(31) ^ ((offset >> 8) as u8)
}

/// Fills `len` bytes at `ptr` with pattern `seed`.
///
/// # Safety
/// `ptr` must be valid for `len` bytes.
pub unsafe fn fill(ptr: *mut c_void, len: usize, seed: u64) {
    let bytes = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) };
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = pattern_byte(seed, i);
    }
}

/// Checks `len` bytes at `ptr` against pattern `seed`.
///
/// # Safety
/// `ptr` must be valid for `len` bytes.
pub unsafe fn check(ptr: *const c_void, len: usize, seed: u64) -> bool {
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    bytes
        .iter()
        .enumerate()
        .all(|(i, &b)| b == pattern_byte(seed, i))
}
