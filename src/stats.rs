//! Process-wide statistics, folded from the per-heap counters on read (no
//! shared atomic on the fast path). Exact whenever no thread is allocating.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::backend::registry;
use crate::heap::heap::{Counters, SHARED_COUNTERS};

/// The highest `current_bytes` seen when sampled.
static PEAK_BYTES: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub allocs: u64,
    pub frees: u64,
    /// Usable bytes of live blocks.
    pub current_bytes: u64,
    /// The peak of `current_bytes`, sampled whenever a heap takes memory
    /// from the core (a fresh page, a large or a huge block) and on every
    /// read; a short-lived peak between samples may be missed by at most a
    /// page's worth of blocks per thread.
    pub peak_bytes: u64,
}

fn add(total: &mut Snapshot, bytes: &mut i64, counters: &Counters) {
    total.allocs += counters.allocs.load(Ordering::Relaxed);
    total.frees += counters.frees.load(Ordering::Relaxed);
    *bytes += counters.bytes.load(Ordering::Relaxed);
}

fn current() -> Snapshot {
    let mut total = Snapshot::default();
    let mut bytes = 0i64;
    add(&mut total, &mut bytes, &SHARED_COUNTERS);
    registry::for_each_heap(|heap| {
        // SAFETY: registered heaps are never unmapped.
        add(&mut total, &mut bytes, unsafe { &(*heap).counters });
    });
    total.current_bytes = bytes.max(0) as u64;
    total
}

/// Reads the statistics.
pub fn read() -> Snapshot {
    let mut snapshot = current();
    let previous = PEAK_BYTES.fetch_max(snapshot.current_bytes, Ordering::Relaxed);
    snapshot.peak_bytes = previous.max(snapshot.current_bytes);
    snapshot
}

/// Updates the peak (called when memory is taken from the core).
pub fn sample_peak() {
    PEAK_BYTES.fetch_max(current().current_bytes, Ordering::Relaxed);
}
