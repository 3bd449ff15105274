//! Settings: read once from the environment at initialisation (without
//! allocating), plus the runtime knobs of the CMA API.
//!
//! | variable          | meaning                                              |
//! |-------------------|------------------------------------------------------|
//! | CMA_SECURE        | 1: secure mode (shuffled free lists, ...)            |
//! | CMA_ALLOC_LIMIT   | requests above this many bytes fail (k/m/g suffixes) |
//! | CMA_VERBOSE       | 1: print the effective settings at start             |

use core::ffi::CStr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::config::{MAX_REQUEST, SMALL_MAX};
use crate::diag;
use crate::os::env;
use crate::os::stderr::Line;

/// Largest request the malloc fast path serves: min(SMALL_MAX, limit).
static FAST_LIMIT: AtomicUsize = AtomicUsize::new(SMALL_MAX);
/// Largest request served at all: min(MAX_REQUEST, limit).
static SIZE_LIMIT: AtomicUsize = AtomicUsize::new(MAX_REQUEST);
/// The limit as set (0: none).
static ALLOC_LIMIT: AtomicUsize = AtomicUsize::new(0);
static SECURE: AtomicBool = AtomicBool::new(false);
static VERBOSE: AtomicBool = AtomicBool::new(false);
static THREAD_SAFE: AtomicBool = AtomicBool::new(true);

#[inline(always)]
pub fn fast_limit() -> usize {
    FAST_LIMIT.load(Ordering::Relaxed)
}

#[inline(always)]
pub fn size_limit() -> usize {
    SIZE_LIMIT.load(Ordering::Relaxed)
}

pub fn alloc_limit() -> usize {
    ALLOC_LIMIT.load(Ordering::Relaxed)
}

/// Requests larger than `limit` bytes fail from now on; 0 removes the limit.
pub fn set_alloc_limit(limit: usize) {
    let size_limit = if limit == 0 {
        MAX_REQUEST
    } else {
        limit.min(MAX_REQUEST)
    };
    ALLOC_LIMIT.store(limit, Ordering::Relaxed);
    SIZE_LIMIT.store(size_limit, Ordering::Relaxed);
    FAST_LIMIT.store(size_limit.min(SMALL_MAX), Ordering::Relaxed);
}

#[inline(always)]
pub fn secure() -> bool {
    SECURE.load(Ordering::Relaxed)
}

pub fn set_thread_safety(enabled: bool) {
    THREAD_SAFE.store(enabled, Ordering::Relaxed);
}

pub fn thread_safety() -> bool {
    THREAD_SAFE.load(Ordering::Relaxed)
}

/// Every CMA_* variable CMA understands.
const KNOWN: &[&[u8]] = &[
    b"CMA_SECURE",
    b"CMA_ALLOC_LIMIT",
    b"CMA_VERBOSE",
    b"CMA_LIB",
];

/// Reads the environment. Runs once, during initialisation.
pub fn load() {
    if let Some(value) = read_bool(c"CMA_SECURE") {
        SECURE.store(value, Ordering::Relaxed);
    }
    if let Some(value) = env::get(c"CMA_ALLOC_LIMIT") {
        match env::parse_size(value) {
            Some(limit) => set_alloc_limit(limit),
            None => diag::warn(&[b"CMA_ALLOC_LIMIT: not a size: ", value]),
        }
    }
    if let Some(value) = read_bool(c"CMA_VERBOSE") {
        VERBOSE.store(value, Ordering::Relaxed);
    }
    env::for_each_name_with_prefix(b"CMA_", |name| {
        if !KNOWN.contains(&name) {
            diag::warn(&[b"unknown setting ", name, b" (ignored)"]);
        }
    });
}

fn read_bool(name: &CStr) -> Option<bool> {
    let value = env::get(name)?;
    let parsed = env::parse_bool(value);
    if parsed.is_none() {
        diag::warn(&[
            name.to_bytes(),
            b": expected 1/0, true/false, yes/no or on/off, got ",
            value,
        ]);
    }
    parsed
}

/// Prints the effective settings when CMA_VERBOSE=1.
pub fn report_if_verbose() {
    if !VERBOSE.load(Ordering::Relaxed) {
        return;
    }
    let mut line = Line::new();
    line.str("cma: settings: CMA_SECURE=")
        .dec(secure() as u64)
        .str(" CMA_ALLOC_LIMIT=")
        .dec(alloc_limit() as u64)
        .str("\n");
    line.write_to_stderr();
}
