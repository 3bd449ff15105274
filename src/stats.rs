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
use crate::config::{SEGMENT_SIZE, SLICES_PER_SEGMENT};
use crate::heap::heap::{HeapStats, SHARED_STATS};
use crate::heap::secure;
use crate::heap::size_class::{CLASS_COUNT, block_size_of};

/// The highest `current_bytes` seen by a sample, in all and per class
/// (then large and huge blocks).
static PEAK_BYTES: AtomicU64 = AtomicU64::new(0);
static PEAK_CLASS_BYTES: [AtomicU64; CLASS_COUNT + 2] =
    [const { AtomicU64::new(0) }; CLASS_COUNT + 2];
/// The most memory mapped from the OS at a sample.
static PEAK_MAPPED: AtomicU64 = AtomicU64::new(0);

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

/// One row of the detailed statistics: a size class, or large or huge
/// blocks.
#[derive(Clone, Copy, Default)]
pub struct Row {
    /// Allocations ever made.
    pub requests: u64,
    /// Live blocks and their bytes (blocks freed into another thread's
    /// inbox count here until collected).
    pub live: i64,
    pub live_bytes: i64,
    /// Free blocks carved in pages (small classes only).
    pub free: i64,
    /// Pages holding blocks of the class (small classes only).
    pub pages: u64,
}

/// Everything a reading adds up.
pub struct Detail {
    /// Size classes, then large blocks, then huge blocks.
    pub rows: [Row; CLASS_COUNT + 2],
    pub allocs: u64,
    pub live_blocks: i64,
    pub live_bytes: i64,
    /// Memory mapped from the OS: segments and huge mappings.
    pub mapped_bytes: u64,
    pub segments: u64,
    /// Free memory the core holds still backed (a purge would return it).
    pub dirty_bytes: u64,
    /// Blocks libc allocated on CMA's behalf: in the rows, not in the
    /// totals.
    pub internal_blocks: u64,
}

pub const LARGE_ROW: usize = CLASS_COUNT;
pub const HUGE_ROW: usize = CLASS_COUNT + 1;

impl Detail {
    fn heap(&mut self, stats: &HeapStats) {
        for (row, (folded, taken)) in self
            .rows
            .iter_mut()
            .zip(stats.class_allocs.iter().zip(&stats.taken_allocs))
        {
            row.requests += folded.load(Ordering::Relaxed) + taken.load(Ordering::Relaxed);
        }
        // Blocks freed into an inbox or kept by the freeing thread are still
        // counted by their page until collected or handed out again; blocks
        // in quarantine are freed; libc's allocations for CMA are not the
        // program's.
        let pending = |freed: &AtomicU64, drained: &AtomicU64, reused: &AtomicU64| {
            freed.load(Ordering::Relaxed) as i64
                - drained.load(Ordering::Relaxed) as i64
                - reused.load(Ordering::Relaxed) as i64
        };
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
        self.live_blocks -= stats.quarantined_blocks.load(Ordering::Relaxed) as i64;
        self.live_bytes -= stats.quarantined_bytes.load(Ordering::Relaxed) as i64;
        let internal = stats.internal_blocks.load(Ordering::Relaxed);
        self.internal_blocks += internal;
        self.allocs = self.allocs.wrapping_sub(internal);
        self.live_blocks -= internal as i64;
        self.live_bytes -= stats.internal_bytes.load(Ordering::Relaxed) as i64;
        // A run is one live block, however many blocks of its page it
        // spans; blocks pooled to cut runs from are free.
        self.live_blocks -= stats.run_extra_blocks.load(Ordering::Relaxed) as i64;
        self.live_blocks -= stats.pooled_blocks.load(Ordering::Relaxed) as i64;
        self.live_bytes -= stats.pooled_bytes.load(Ordering::Relaxed) as i64;
    }
}

/// Adds everything up. Needs the core (segments stay mapped meanwhile).
fn detail(core: &Core) -> Detail {
    let mut d = Detail {
        rows: [Row::default(); CLASS_COUNT + 2],
        allocs: 0,
        live_blocks: 0,
        live_bytes: 0,
        mapped_bytes: 0,
        segments: 0,
        dirty_bytes: core.spans.dirty_bytes as u64,
        internal_blocks: 0,
    };
    core.spans.for_each_segment(|segment| {
        d.segments += 1;
        // SAFETY: listed segments stay mapped while the core lock is held.
        let pages = unsafe { &(*segment).pages };
        for page in &pages[1..SLICES_PER_SEGMENT] {
            let is_head = core::ptr::eq(page.head.load(Ordering::Relaxed), page);
            if is_head && page.kind() == PageKind::Small {
                let row = &mut d.rows[page.class.get() as usize];
                let live = page.live_blocks() as i64;
                row.requests += page.allocs();
                row.live += live;
                row.live_bytes += live * page.block_size() as i64;
                row.free += page.capacity.load(Ordering::Relaxed) as i64 - live;
                row.pages += 1;
            }
        }
    });
    for (row, count) in [(LARGE_ROW, &core.large), (HUGE_ROW, &core.huge)] {
        d.rows[row].requests = count.allocs;
        d.rows[row].live = count.live as i64;
        d.rows[row].live_bytes = count.bytes as i64;
    }
    // The heaps add the counts of pages they no longer hold to the rows:
    // the totals are summed after them.
    d.heap(&SHARED_STATS);
    registry::for_each_heap(|heap| {
        // SAFETY: registered heaps are never unmapped.
        d.heap(unsafe { &(*heap).stats });
    });
    for row in &d.rows {
        d.allocs = d.allocs.wrapping_add(row.requests);
        d.live_blocks += row.live;
        d.live_bytes += row.live_bytes;
    }
    d.mapped_bytes = d.segments * SEGMENT_SIZE as u64 + core.huge.bytes as u64;
    if secure::enabled() {
        // Small and large blocks carry a canary the caller cannot use.
        d.live_bytes -= (d.live_blocks - core.huge.live as i64) * secure::CANARY_BYTES as i64;
    }
    note_peaks(&d);
    d
}

fn note_peaks(d: &Detail) {
    PEAK_BYTES.fetch_max(d.live_bytes.max(0) as u64, Ordering::Relaxed);
    PEAK_MAPPED.fetch_max(d.mapped_bytes, Ordering::Relaxed);
    for (peak, row) in PEAK_CLASS_BYTES.iter().zip(&d.rows) {
        peak.fetch_max(row.live_bytes.max(0) as u64, Ordering::Relaxed);
    }
}

/// The detailed statistics (under the core lock).
pub fn read_detail() -> Detail {
    detail(&backend::lock())
}

/// The peak of `current_bytes` of row `row`, and of the mapped memory.
pub fn peak_of_row(row: usize) -> u64 {
    PEAK_CLASS_BYTES[row].load(Ordering::Relaxed)
}

pub fn peak_mapped() -> u64 {
    PEAK_MAPPED.load(Ordering::Relaxed)
}

/// Reads the statistics.
pub fn read() -> Snapshot {
    let d = read_detail();
    let live_blocks = d.live_blocks.max(0) as u64;
    let current_bytes = d.live_bytes.max(0) as u64;
    Snapshot {
        allocs: d.allocs,
        frees: d.allocs.saturating_sub(live_blocks),
        current_bytes,
        peak_bytes: PEAK_BYTES.load(Ordering::Relaxed).max(current_bytes),
    }
}

/// Samples the peak if the core has handed out noticeably more memory than
/// at the last sample. Called with the core lock held, after it grew.
pub fn sample_peak_if_grown(core: &mut Core) {
    if core.held_bytes < core.next_peak_sample {
        return;
    }
    detail(core);
    core.next_peak_sample = core.held_bytes + (core.held_bytes / 16).max(1 << 20);
}

/// The block size of row `row`, for reports (0 for large and huge rows).
pub fn row_block_size(row: usize) -> usize {
    if row < CLASS_COUNT {
        block_size_of(row)
    } else {
        0
    }
}
