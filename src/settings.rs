//! Settings: read once from the environment at initialisation (without
//! allocating), plus the runtime knobs of the CMA API. README.md has the
//! table; `CMA_VERBOSE=1` prints the effective values at start.

use core::ffi::CStr;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

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
static STATS_AT_EXIT: AtomicBool = AtomicBool::new(false);
static THREAD_SAFE: AtomicBool = AtomicBool::new(true);
static PURGE_DELAY_MS: AtomicU64 = AtomicU64::new(DEFAULT_PURGE_DELAY_MS);
static BACKGROUND_PURGE: AtomicBool = AtomicBool::new(true);
/// Transparent huge pages for CMA's mappings: `THP_DEFAULT` leaves the
/// kernel's policy alone.
static THP: AtomicU8 = AtomicU8::new(THP_DEFAULT);

pub const DEFAULT_PURGE_DELAY_MS: u64 = 500;
pub const THP_DEFAULT: u8 = 0;
pub const THP_ON: u8 = 1;
pub const THP_OFF: u8 = 2;

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

pub fn stats_at_exit() -> bool {
    STATS_AT_EXIT.load(Ordering::Relaxed)
}

pub fn set_thread_safety(enabled: bool) {
    THREAD_SAFE.store(enabled, Ordering::Relaxed);
}

pub fn thread_safety() -> bool {
    THREAD_SAFE.load(Ordering::Relaxed)
}

pub fn purge_delay_ms() -> u64 {
    PURGE_DELAY_MS.load(Ordering::Relaxed)
}

pub fn background_purge() -> bool {
    BACKGROUND_PURGE.load(Ordering::Relaxed)
}

pub fn thp() -> u8 {
    THP.load(Ordering::Relaxed)
}

/// Every CMA_* variable CMA understands (`CMA_LIB` is cma-run's).
const KNOWN: &[&[u8]] = &[
    b"CMA_ALLOC_LIMIT",
    b"CMA_BACKGROUND_PURGE",
    b"CMA_LIB",
    b"CMA_PURGE_DELAY_MS",
    b"CMA_SECURE",
    b"CMA_STATS",
    b"CMA_THP",
    b"CMA_VERBOSE",
];

/// Reads the environment. Runs once, during initialisation.
pub fn load() {
    read_bool(c"CMA_SECURE", &SECURE);
    read_bool(c"CMA_VERBOSE", &VERBOSE);
    read_bool(c"CMA_STATS", &STATS_AT_EXIT);
    read_bool(c"CMA_BACKGROUND_PURGE", &BACKGROUND_PURGE);
    if let Some(limit) = read_size(c"CMA_ALLOC_LIMIT") {
        set_alloc_limit(limit);
    }
    if let Some(ms) = read_size(c"CMA_PURGE_DELAY_MS") {
        PURGE_DELAY_MS.store(ms as u64, Ordering::Relaxed);
    }
    let thp = AtomicBool::new(false);
    if read_bool(c"CMA_THP", &thp) {
        let value = if thp.load(Ordering::Relaxed) {
            THP_ON
        } else {
            THP_OFF
        };
        THP.store(value, Ordering::Relaxed);
    }
    env::for_each_name_with_prefix(b"CMA_", |name| {
        if !KNOWN.contains(&name) {
            diag::warn(&[b"unknown setting ", name, b" (ignored)"]);
        }
    });
}

/// Reads a boolean setting into `into`; true when the variable was set and
/// valid.
fn read_bool(name: &CStr, into: &AtomicBool) -> bool {
    let Some(value) = env::get(name) else {
        return false;
    };
    match env::parse_bool(value) {
        Some(parsed) => {
            into.store(parsed, Ordering::Relaxed);
            true
        }
        None => {
            diag::warn(&[
                name.to_bytes(),
                b": expected 1/0, true/false, yes/no or on/off, got ",
                value,
            ]);
            false
        }
    }
}

fn read_size(name: &CStr) -> Option<usize> {
    let value = env::get(name)?;
    let parsed = env::parse_size(value);
    if parsed.is_none() {
        diag::warn(&[
            name.to_bytes(),
            b": not a number (k, m, g suffixes allowed): ",
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
        .str(" CMA_PURGE_DELAY_MS=")
        .dec(purge_delay_ms())
        .str(" CMA_BACKGROUND_PURGE=")
        .dec(background_purge() as u64)
        .str(" CMA_THP=")
        .str(match thp() {
            THP_ON => "1",
            THP_OFF => "0",
            _ => "default",
        })
        .str(" CMA_STATS=")
        .dec(stats_at_exit() as u64)
        .str("\n");
    line.write_to_stderr();
}
