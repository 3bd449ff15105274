//! The page descriptor: one per 64 KiB slice of a segment, kept out of line
//! in the segment header so that no overflow out of a block can reach it.
//!
//! A span is a run of slices; its first descriptor (the head) describes it:
//! a free span owned by the core, a page of equal-sized blocks owned by a
//! thread heap, or a single large block. Every descriptor of a span points
//! to the head, so any address inside the span finds it in one load.
//!
//! Access rules: the fields in `Owned` cells are touched only by the page's
//! owner (the owning heap's thread, or the core under its lock for spans no
//! heap owns). The atomic fields are written by the owner and read, without
//! synchronisation, by other threads validating a pointer (remote frees,
//! `malloc_usable_size`); relaxed loads and stores compile to plain moves.

use core::cell::UnsafeCell;
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

use crate::heap::block::Block;

/// A value only the page's owner may touch (see the module docs).
#[repr(transparent)]
pub struct Owned<T>(UnsafeCell<T>);

impl<T: Copy> Owned<T> {
    pub const fn new(value: T) -> Owned<T> {
        Owned(UnsafeCell::new(value))
    }

    #[inline(always)]
    pub fn get(&self) -> T {
        // SAFETY: only the owner accesses this cell, never concurrently.
        unsafe { *self.0.get() }
    }

    #[inline(always)]
    pub fn set(&self, value: T) {
        // SAFETY: only the owner accesses this cell, never concurrently.
        unsafe { *self.0.get() = value }
    }
}

/// What a span is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PageKind {
    /// Not a span: slice 0 (the segment header) or not yet set up.
    None = 0,
    /// A free span in the core's bins.
    Free = 1,
    /// A page of equal-sized blocks owned by a thread heap.
    Small = 2,
    /// A span holding one large block.
    Large = 3,
}

/// Bits of `Page::counts` holding the live-block count (a page never holds
/// 2^16 blocks: see `size_class`); the bits above count allocations and wrap
/// after 2^48 of them.
pub const USED_BITS: u32 = 16;
pub const USED_MASK: u64 = (1 << USED_BITS) - 1;
/// What one allocation adds to `Page::counts`.
pub const ONE_ALLOC: u64 = (1 << USED_BITS) + 1;

/// `Page::heap` value of spans no thread owns (free spans, large blocks).
/// No thread's heap pointer can equal it, so the free fast path never
/// mistakes such a span for one of its own; and with `FULL_FLAG` masked off
/// it is 0: only pages of small blocks have an owner.
pub const NO_OWNER: usize = 1;
/// Set in `Page::heap` while the page is full and out of its queue, so the
/// owner's next free of one of its blocks takes the slow path and requeues it.
pub const FULL_FLAG: usize = 1;
/// Set in `Page::heap` of every page in secure mode, so every free takes
/// the slow path, where the secure-mode checks are.
pub const SLOW_FLAG: usize = 2;
/// The flag bits of `Page::heap` (heaps are at least 8-byte aligned).
pub const OWNER_FLAGS: usize = FULL_FLAG | SLOW_FLAG;

#[repr(C, align(64))]
pub struct Page {
    // ---- first cache line: read-mostly, read by every thread that frees
    // one of the page's blocks (written only when the page is set up, and
    // `check_limit` as blocks are carved)
    /// The head descriptor of the span this slice belongs to.
    pub head: AtomicPtr<Page>,
    /// Owning heap's address (`| FULL_FLAG` while full), or `NO_OWNER`.
    pub heap: AtomicUsize,
    /// Address of the first block.
    pub start: AtomicUsize,
    /// Block check (see `is_block_start`): the multiplier, and the limit
    /// the product must stay under (`capacity * check_unit`).
    pub check_magic: AtomicU64,
    pub check_limit: AtomicU64,
    /// Size of each block in bytes (the whole span for a large block).
    pub block_size: AtomicU32,
    /// Length of the span in slices (head descriptors only).
    pub slice_count: AtomicU32,
    /// Index of this slice in its segment.
    pub slice_index: u32,
    pub kind: AtomicU8,
    /// Size class (for `Small` pages).
    pub class: Owned<u8>,
    /// True while this is its class's current page (holding the extra
    /// count in `used`); read by statistics.
    pub is_current: AtomicBool,
    _pad_given: u8,
    /// Blocks whose memory went back to the OS whole (see
    /// `heap::interiors`), one bit per block index: free, but on no free
    /// list. Written by the owner; read by any thread that frees a block
    /// (a free of one of them is a double free).
    pub given: AtomicU32,
    /// Live runs cut from the page's blocks (see `heap::runs`): while
    /// any is, the owner word carries `SLOW_FLAG`, so every free into the
    /// page is checked against them. Added to by the owner, taken from by
    /// whichever thread frees a run.
    pub live_runs: AtomicU32,

    // ---- second cache line: written by the owner on every malloc and free
    // (apart from the first line, so other threads' frees do not bounce it)
    /// Blocks ready to hand out; the owner's frees push here too, so a
    /// block freed is the next one handed out (warm in the cache).
    pub free: Owned<*mut Block>,
    /// Two counters in one word, written only by the owner and read by
    /// statistics (see `USED_BITS`): the low bits count the live blocks
    /// (including ones freed remotely but not yet collected, plus one while
    /// the page is its class's current page); the high bits count the
    /// blocks handed out since the page was set up (folded into the heap's
    /// totals when it is set up again). One word, so malloc bumps both with
    /// a single add and free's decrement sets the flag it branches on.
    pub counts: AtomicU64,
    /// Blocks carved into the free lists so far.
    pub capacity: AtomicU32,
    /// Queue links (heap page queues, or core free-span bins).
    pub next: Owned<*mut Page>,
    pub prev: Owned<*mut Page>,
    /// `check_magic * block_size - 2^64`: the product of the block check for
    /// the offset of block k is `k * check_unit`.
    pub check_unit: Owned<u64>,
    /// When the span became free (ms, core clock), for delayed purging.
    /// On a small page in use: when it was set up, while the never-carved
    /// tail of its backed span waits to be given back (`backed_tails`).
    pub freed_at_ms: Owned<u64>,
    /// Blocks that fit in the span.
    pub reserved: Owned<u32>,
    /// True while linked in its heap's queue.
    pub in_queue: Owned<bool>,
    /// True while the span's memory is backed (not purged).
    pub committed: Owned<bool>,
    /// True when the memory of the span is known to be all zero. For a
    /// small page: true while its never-carved blocks are (it was set up on
    /// a zero span; carving writes only the blocks it carves).
    pub is_zero: Owned<bool>,
}

impl Page {
    /// A descriptor with no blocks: the direct-table entry of a size with no
    /// page yet, so the malloc fast path needs no null check.
    pub const fn empty() -> Page {
        Page {
            head: AtomicPtr::new(core::ptr::null_mut()),
            free: Owned::new(core::ptr::null_mut()),
            counts: AtomicU64::new(0),
            block_size: AtomicU32::new(0),
            heap: AtomicUsize::new(NO_OWNER),
            start: AtomicUsize::new(0),
            check_magic: AtomicU64::new(0),
            check_limit: AtomicU64::new(0),
            kind: AtomicU8::new(PageKind::None as u8),
            class: Owned::new(0),
            in_queue: Owned::new(false),
            next: Owned::new(core::ptr::null_mut()),
            prev: Owned::new(core::ptr::null_mut()),
            reserved: Owned::new(0),
            capacity: AtomicU32::new(0),
            check_unit: Owned::new(0),
            slice_count: AtomicU32::new(0),
            slice_index: 0,
            freed_at_ms: Owned::new(0),
            committed: Owned::new(false),
            is_zero: Owned::new(false),
            is_current: AtomicBool::new(false),
            _pad_given: 0,
            given: AtomicU32::new(0),
            live_runs: AtomicU32::new(0),
        }
    }

    #[inline(always)]
    pub fn kind(&self) -> PageKind {
        match self.kind.load(Ordering::Relaxed) {
            1 => PageKind::Free,
            2 => PageKind::Small,
            3 => PageKind::Large,
            _ => PageKind::None,
        }
    }

    #[inline(always)]
    pub fn set_kind(&self, kind: PageKind) {
        self.kind.store(kind as u8, Ordering::Relaxed)
    }

    /// Live blocks, as the owner sees them.
    #[inline(always)]
    pub fn used(&self) -> u32 {
        (self.counts.load(Ordering::Relaxed) & USED_MASK) as u32
    }

    /// Sets the live-block count (owner only: a plain load and store).
    #[inline(always)]
    pub fn set_used(&self, used: u32) {
        debug_assert!(u64::from(used) <= USED_MASK);
        let counts = self.counts.load(Ordering::Relaxed);
        self.counts
            .store(counts & !USED_MASK | u64::from(used), Ordering::Relaxed)
    }

    /// Blocks handed out since the page was set up (any thread may ask).
    #[inline(always)]
    pub fn allocs(&self) -> u64 {
        self.counts.load(Ordering::Relaxed) >> USED_BITS
    }

    /// Returns the allocation count and restarts it from zero (by the owner,
    /// or by whoever holds the page alone).
    pub fn take_allocs(&self) -> u64 {
        let counts = self.counts.load(Ordering::Relaxed);
        self.counts.store(counts & USED_MASK, Ordering::Relaxed);
        counts >> USED_BITS
    }

    /// Counts a block handed out by the owner: one live block more and one
    /// allocation more, in a single add to memory.
    #[inline(always)]
    pub fn count_alloc(&self) {
        let counts = self.counts.load(Ordering::Relaxed);
        self.counts
            .store(counts.wrapping_add(ONE_ALLOC), Ordering::Relaxed);
    }

    /// Counts a run cut from blocks the page already counts as live (see
    /// `runs`): one allocation more, no live block more.
    pub fn count_run_alloc(&self) {
        let counts = self.counts.load(Ordering::Relaxed);
        self.counts
            .store(counts.wrapping_add(1 << USED_BITS), Ordering::Relaxed);
    }

    /// Counts a block the owner got back; true when that was the last live
    /// one. On x86_64 a 16-bit decrement of the live count in memory and a
    /// branch on its zero flag (the statistics' 64-bit loads see the word
    /// before or after, never torn, and only the owner writes it).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub fn count_free_is_last(&self) -> bool {
        // SAFETY: `counts` is this descriptor's own, aligned word; only the
        // owner (the caller) writes it, so the non-atomic read-modify-write
        // of its low 16 bits cannot lose a concurrent update.
        unsafe {
            core::arch::asm!(
                "dec word ptr [{page} + {offset}]",
                "jz {last}",
                page = in(reg) self as *const Page,
                offset = const core::mem::offset_of!(Page, counts),
                last = label { return true; },
                options(nostack),
            );
        }
        false
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    pub fn count_free_is_last(&self) -> bool {
        let counts = self.counts.load(Ordering::Relaxed) - 1;
        self.counts.store(counts, Ordering::Relaxed);
        counts & USED_MASK == 0
    }

    /// Live blocks as statistics see them (without the current page's
    /// extra count).
    pub fn live_blocks(&self) -> u32 {
        self.used() - self.is_current.load(Ordering::Relaxed) as u32
    }

    /// True when the page's owner word is exactly `heap` (no flags: not full,
    /// not in secure mode): the free fast path's test.
    #[inline(always)]
    pub fn owned_by(&self, heap: usize) -> bool {
        // SAFETY: `heap` is this descriptor's aligned AtomicUsize.
        unsafe {
            crate::sync::peek::word_equals::<{ core::mem::offset_of!(Page, heap) }>(
                self as *const Page as *const u8,
                heap,
            )
        }
    }

    /// The owning heap's address without flags (0 for spans no heap owns).
    #[inline(always)]
    pub fn owner(&self) -> usize {
        self.heap.load(Ordering::Relaxed) & !OWNER_FLAGS
    }

    #[inline(always)]
    pub fn block_size(&self) -> usize {
        self.block_size.load(Ordering::Relaxed) as usize
    }

    #[inline(always)]
    pub fn start(&self) -> usize {
        self.start.load(Ordering::Relaxed)
    }

    /// True when this span is a large block starting at `addr` (the
    /// descriptor says so; the caller decides whether that may race).
    #[inline]
    pub fn is_large_block_at(&self, addr: usize) -> bool {
        self.kind() == PageKind::Large && self.start() == addr
    }

    #[inline(always)]
    pub fn slice_count(&self) -> usize {
        self.slice_count.load(Ordering::Relaxed) as usize
    }

    /// True when `addr` is the start of one of the first `capacity` blocks
    /// of this page (live or free). Reads only this descriptor, never the
    /// block. `addr` must lie in the page's span (so the offset is below
    /// 2^32): one multiplication and one comparison check both that the
    /// offset is a multiple of the block size and that the block is carved.
    ///
    /// Why it works (Lemire, Kaser & Kurz, "Faster remainder by direct
    /// computation", 2019): with `c = check_magic`, `c * d = 2^64 + e` for
    /// block size `d` and some `0 < e <= d`. For an offset `n = k * d`, the
    /// product `n * c mod 2^64` is `k * e`; for any offset not a multiple of
    /// `d` it is at least `c`, far above every `k * e` of a carved block.
    #[inline(always)]
    pub fn is_block_start(&self, addr: usize) -> bool {
        if !crate::config::CHECKS {
            return true;
        }
        let offset = addr.wrapping_sub(self.start()) as u64;
        offset.wrapping_mul(self.check_magic.load(Ordering::Relaxed))
            < self.check_limit.load(Ordering::Relaxed)
    }

    /// True when `addr`, a block start of this small page, is one of its
    /// blocks whose memory went back to the OS (`given`).
    #[inline]
    pub fn is_given(&self, addr: usize) -> bool {
        let given = self.given.load(Ordering::Relaxed);
        given != 0 && given & (1 << self.block_index(addr)) != 0
    }

    /// The index of the block starting at `addr` in this small page.
    #[inline]
    pub fn block_index(&self, addr: usize) -> usize {
        (addr - self.start()) / self.block_size()
    }

    /// `is_block_start` for the page's owner, with plain loads the compiler
    /// can fold into the comparisons.
    ///
    /// # Safety
    /// The calling thread owns the page (its heap is `self.heap`): only the
    /// owner writes these fields, so reading them plainly cannot race.
    #[inline(always)]
    pub unsafe fn owner_is_block_start(&self, addr: usize) -> bool {
        if !crate::config::CHECKS {
            return true;
        }
        // SAFETY: see above; the fields are only written by this thread.
        let (start, magic, limit) = unsafe {
            (
                self.start.as_ptr().read(),
                self.check_magic.as_ptr().read(),
                self.check_limit.as_ptr().read(),
            )
        };
        (addr.wrapping_sub(start) as u64).wrapping_mul(magic) < limit
    }

    /// Sets the block check up for blocks of `block_size` bytes, none carved.
    pub fn set_block_check(&self, block_size: usize) {
        let d = block_size as u64;
        let magic = u64::MAX / d + 1 + d.is_power_of_two() as u64;
        self.check_magic.store(magic, Ordering::Relaxed);
        self.check_unit.set(magic.wrapping_mul(d));
        self.check_limit.store(0, Ordering::Relaxed);
    }

    /// Marks the first `capacity` blocks as carved (for the block check).
    pub fn set_carved(&self, capacity: usize) {
        self.capacity.store(capacity as u32, Ordering::Relaxed);
        self.check_limit
            .store(capacity as u64 * self.check_unit.get(), Ordering::Relaxed);
    }
}

const _: () = assert!(core::mem::size_of::<Page>() == 128);
const _: () = assert!(core::mem::offset_of!(Page, free) == 64);
