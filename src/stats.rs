//! Process-wide statistics. The malloc and free fast paths keep no counters:
//! every page counts the blocks it hands out and holds (`Page::allocs`,
//! `Page::used`), the core counts large and huge blocks, and each heap
//! counts what it folded from reused pages and what crossed threads. A
//! reading walks the segments' page descriptors under the core lock and
//! adds these up, so allocations, frees and current bytes are exact
//! whenever no thread is allocating.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::backend::page::PageKind;
use crate::backend::{self, Core, registry};
use crate::config::SLICES_PER_SEGMENT;
use crate::heap::heap::{HeapStats, SHARED_STATS};
use crate::heap::secure;

/// The highest `current_bytes` seen by a sample.
static PEAK_BYTES: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub allocs: u64,
    pub frees: u64,
    /// Usable bytes of live blocks.
    pub current_bytes: u64,
    /// The highest `current_bytes` sampled: at every reading, and whenever
    /// the memory the core has handed out grows by a sixteenth (or 1 MiB)
    /// past the last sample. A peak reached inside memory already handed out
    /// can be missed by at most that growth plus free space in partly used
    /// pages.
    pub peak_bytes: u64,
}

/// Counts from the pages, the core and the heaps.
#[derive(Default)]
struct Totals {
    allocs: u64,
    live_blocks: i64,
    live_bytes: i64,
}

impl Totals {
    fn heap(&mut self, stats: &HeapStats) {
        self.allocs += stats.folded_allocs.load(Ordering::Relaxed);
        self.allocs += stats.taken_allocs.load(Ordering::Relaxed);
        // Blocks freed into an inbox or kept by the freeing thread are still
        // counted by their page until collected or handed out again.
        let pending = |freed: &AtomicU64, drained: &AtomicU64, reused: &AtomicU64| {
            freed.load(Ordering::Relaxed) as i64
                - drained.load(Ordering::Relaxed) as i64
                - reused.load(Ordering::Relaxed) as i64
        };
        self.live_blocks -= stats.quarantined_blocks.load(Ordering::Relaxed) as i64;
        self.live_bytes -= stats.quarantined_bytes.load(Ordering::Relaxed) as i64;
        let internal = stats.internal_blocks.load(Ordering::Relaxed);
        self.allocs -= internal;
        self.live_blocks -= internal as i64;
        self.live_bytes -= stats.internal_bytes.load(Ordering::Relaxed) as i64;
        self.live_blocks -= pending(
            &stats.remote_blocks,
            &stats.drained_blocks,
            &stats.reused_blocks,
        );
        self.live_bytes -= pending(
            &stats.remote_bytes,
            &stats.drained_bytes,
            &stats.reused_bytes,
        );
    }
}

/// Adds everything up. Needs the core (segments stay mapped meanwhile).
fn totals(core: &Core) -> Totals {
    let mut totals = Totals::default();
    core.spans.for_each_segment(|segment| {
        // SAFETY: listed segments stay mapped while the core lock is held.
        let pages = unsafe { &(*segment).pages };
        for page in &pages[1..SLICES_PER_SEGMENT] {
            let is_head = core::ptr::eq(page.head.load(Ordering::Relaxed), page);
            if is_head && page.kind() == PageKind::Small {
                let live = page.live_blocks() as i64;
                totals.allocs += page.allocs.load(Ordering::Relaxed);
                totals.live_blocks += live;
                totals.live_bytes += live * page.block_size() as i64;
            }
        }
    });
    for count in [&core.large, &core.huge] {
        totals.allocs += count.allocs;
        totals.live_blocks += count.live as i64;
        totals.live_bytes += count.bytes as i64;
    }
    totals.heap(&SHARED_STATS);
    registry::for_each_heap(|heap| {
        // SAFETY: registered heaps are never unmapped.
        totals.heap(unsafe { &(*heap).stats });
    });
    totals
}

/// Reads the statistics.
pub fn read() -> Snapshot {
    let core = backend::lock();
    let totals = totals(&core);
    let huge_live = core.huge.live as i64;
    drop(core);
    let live_blocks = totals.live_blocks.max(0) as u64;
    let mut current_bytes = totals.live_bytes;
    if secure::enabled() {
        // Small and large blocks carry a canary the caller cannot use.
        current_bytes -= (totals.live_blocks - huge_live) * secure::CANARY_BYTES as i64;
    }
    let current_bytes = current_bytes.max(0) as u64;
    let previous_peak = PEAK_BYTES.fetch_max(current_bytes, Ordering::Relaxed);
    Snapshot {
        allocs: totals.allocs,
        frees: totals.allocs.saturating_sub(live_blocks),
        current_bytes,
        peak_bytes: previous_peak.max(current_bytes),
    }
}

/// Samples the peak if the core has handed out noticeably more memory than
/// at the last sample. Called with the core lock held, after it grew.
pub fn sample_peak_if_grown(core: &mut Core) {
    if core.held_bytes < core.next_peak_sample {
        return;
    }
    let current = totals(core).live_bytes.max(0) as u64;
    PEAK_BYTES.fetch_max(current, Ordering::Relaxed);
    core.next_peak_sample = core.held_bytes + (core.held_bytes / 16).max(1 << 20);
}
