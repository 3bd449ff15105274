//! Thread lifecycle of heaps: a thread gets its heap on its first
//! allocation (adopting an exited thread's heap when one is waiting), and
//! gives it back to the core when it exits, through a pthread key destructor.
//! After that, the thread's allocations go through the core under its lock.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use crate::backend::{self, Core};
use crate::diag;
use crate::heap::backed_tails;
use crate::heap::collect::{self, CoreAccess};
use crate::heap::heap::{
    Heap, HeapState, INTERIORS_BUSY, INTERIORS_GIVEN, INTERIORS_PENDING, INTERIORS_WANTED,
};
use crate::heap::interiors;
use crate::heap::page_ops;
use crate::heap::remote;
use crate::heap::runs;
use crate::heap::secure;
use crate::os::clock::now_ms;
use crate::purge;
use crate::settings;
use crate::tls;

/// A heap in static memory.
pub struct StaticHeap(pub Heap);
// SAFETY: the special heaps are only mutated under the core lock (CORE_HEAP)
// or never (NO_HEAP).
unsafe impl Sync for StaticHeap {}

/// The heap pointer of threads without a heap of their own: before their
/// first allocation (the initial value of the TLS word, see csrc/tls.c) and
/// after their exit destructor. It owns no pages and its direct table is
/// empty, so their mallocs reach the slow path, which gives the thread a
/// heap or (once it has exited) serves it from `CORE_HEAP`.
#[unsafe(export_name = "cma_no_heap")]
pub static NO_HEAP: StaticHeap = StaticHeap(Heap::new());

/// The heap the core allocates from, under its lock, for threads without a
/// heap of their own. Its pages' owner never equals any thread's heap
/// pointer, so every free of its blocks goes through its inbox.
pub static CORE_HEAP: StaticHeap = StaticHeap(Heap::new());

#[inline]
pub fn no_heap() -> *mut Heap {
    NO_HEAP.0.as_ptr()
}

/// True when `heap` (a TLS heap pointer) is a heap of the thread's own.
#[inline]
pub fn is_own(heap: *mut Heap) -> bool {
    !heap.is_null() && heap != no_heap()
}

/// malloc requests below this size take the fast path: 0 until CMA is
/// initialised, and in secure mode (whose checks are on the slow path);
/// else one more than the smaller of the fast-path sizes and the
/// allocation limit. Threads without a heap fail the fast path on
/// `NO_HEAP`'s empty direct table instead. Every malloc reads it: it has a
/// cache line of its own, so no write to a neighbour (the purge thread's
/// futex word, say) takes that line away from the threads.
static FAST_BOUND: ReadMostly = ReadMostly(AtomicUsize::new(0));

#[repr(C, align(64))]
struct ReadMostly(AtomicUsize);

/// True when a malloc of `size` bytes may take the fast path. On x86_64 a
/// compare with the bound in memory (a relaxed load, see `sync::peek`) and
/// a branch.
#[inline(always)]
pub fn below_fast_bound(size: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: reads the aligned static word FAST_BOUND, nothing else.
        unsafe {
            core::arch::asm!(
                "cmp {size}, qword ptr [rip + {bound}]",
                "jae {above}",
                size = in(reg) size,
                bound = sym FAST_BOUND,
                above = label { return false; },
                options(nostack, readonly),
            );
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        size < FAST_BOUND.0.load(Ordering::Relaxed)
    }
}

/// Opens (or narrows) the malloc fast path to the current settings and
/// allocation limit.
pub fn refresh_fast_bound() {
    let bound = if settings::secure() {
        0
    } else {
        settings::fast_limit() + 1
    };
    FAST_BOUND.0.store(bound, Ordering::Relaxed);
}

#[inline]
pub fn core_heap() -> &'static Heap {
    &CORE_HEAP.0
}

static EXIT_KEY: AtomicU32 = AtomicU32::new(0);
static EXIT_KEY_READY: AtomicBool = AtomicBool::new(false);

/// Registers the special heaps for statistics. Part of initialisation.
pub fn register_special_heaps() {
    NO_HEAP.0.set_state(HeapState::Special);
    CORE_HEAP.0.set_state(HeapState::Special);
    backend::registry::register(&CORE_HEAP.0);
}

/// Creates the pthread key whose destructor releases a thread's heap, and
/// attaches the calling thread's heap to it. Called once, early (glibc
/// allocates key storage with calloc beyond the first 32 keys).
pub fn create_exit_key() {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; the destructor is a C-ABI fn.
    if unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) } != 0 {
        diag::warn(&[b"cannot create the thread-exit key; exiting threads keep their memory"]);
        return;
    }
    EXIT_KEY.store(key, Ordering::Relaxed);
    EXIT_KEY_READY.store(true, Ordering::Release);
    let heap = tls::heap();
    if is_own(heap) {
        attach_exit_key(heap);
    }
}

fn attach_exit_key(heap: *mut Heap) {
    if EXIT_KEY_READY.load(Ordering::Acquire) {
        // SAFETY: the key was created; a non-null value makes glibc call the
        // destructor at thread exit.
        unsafe {
            libc::pthread_setspecific(EXIT_KEY.load(Ordering::Relaxed), heap as *const c_void)
        };
    }
}

/// Returns the calling thread's heap, giving it one first if it has none.
/// Returns null when no heap can be had (out of memory, or the thread is
/// past its exit): the caller then allocates through the core.
#[cold]
pub fn acquire() -> *mut Heap {
    let heap = tls::heap();
    if is_own(heap) {
        return heap;
    }
    if tls::has_exited() {
        return core::ptr::null_mut();
    }
    crate::init::ensure();
    let mut core = backend::lock();
    let heap = core.registry.acquire();
    if heap.is_null() {
        return heap;
    }
    // SAFETY: the registry hands out valid heaps, now exclusively ours.
    let h = unsafe { &*heap };
    h.thread_id
        .store(diag::current_thread_id(), Ordering::Relaxed);
    tls::set_heap(heap);
    drop(core);
    attach_exit_key(heap);
    heap
}

/// The pthread key destructor: from here on the thread allocates through
/// the core, and its heap, emptied of what can be returned, waits for a new
/// thread to adopt it.
extern "C" fn on_thread_exit(value: *mut c_void) {
    let heap = value as *mut Heap;
    if !is_own(heap) {
        return;
    }
    tls::set_heap(no_heap());
    tls::set_exited();
    let _errno = crate::os::errno::ErrnoGuard::save();
    // SAFETY: the exiting thread's own heap; no other thread uses it as owner.
    let h = unsafe { &*heap };
    if secure::enabled() {
        remote::release_quarantine(h);
    }
    // Blocks kept for other heaps go to their owners now: an orphan may
    // wait long for a new thread. Blocks pooled for runs go back to their
    // page, so an orphan's pages can empty.
    remote::return_foreign(h);
    runs::give_back(h, &mut CoreAccess::Take);
    let cpus = crate::os::cpus::count();
    let mut core = backend::lock();
    // The heap keeps its pages, empty ones included, so the thread that
    // adopts it starts with a current page in every class it used: a
    // program that keeps starting threads does not go to the core for
    // pages at all. Otherwise the empty pages, the span cache and the
    // inside of free blocks are given back now (the last in one batch:
    // mem_threads peak 121.6 -> 115.5 MiB, its time within noise; it took
    // 12% longer with an madvise per block). See `stays_warm`.
    let warm = stays_warm(&mut core, h, cpus);
    let result = if !warm {
        collect::release_empty_pages(h, &mut core, true).map(|()| drain_span_cache(h, &mut core))
    } else {
        collect::collect_inbox(h, &mut CoreAccess::Held(&mut core))
    };
    if let Err(block) = result {
        drop(core);
        diag::fatal(diag::Call::Free, block, diag::HeapError::Corrupted);
    }
    core.registry.orphan(h, now_ms(), warm);
    if !warm {
        // Nobody will use its free blocks soon: their insides go back now,
        // from this thread, once it left the lock (see below).
        h.interiors.store(INTERIORS_WANTED, Ordering::Relaxed);
        ORPHAN_INTERIORS_WANTED.store(true, Ordering::Relaxed);
    }
    purge::after_release(&mut core);
    drop(core);
    if !warm {
        give_back_orphan_interiors();
    }
    purge::kick();
}

/// Set when blocks were freed to an orphan's inbox (see `take_orphan_mail`).
static ORPHAN_MAIL: AtomicBool = AtomicBool::new(false);

/// Another thread freed blocks of an orphaned heap: nobody takes its inbox
/// until a new thread adopts it, so the purge (the background thread, or
/// the next release to the core) collects it and gives back the pages it
/// empties. Without this, a program whose main thread frees what its
/// finished workers left kept all of it: mem_threads held 70 MiB for good
/// after freeing its last block (glibc: 40 MiB).
pub fn note_orphan_mail() {
    if !ORPHAN_MAIL.load(Ordering::Relaxed) && !ORPHAN_MAIL.swap(true, Ordering::AcqRel) {
        purge::request();
    }
}

/// True (once) when orphans got mail since the last call.
pub fn take_orphan_mail() -> bool {
    ORPHAN_MAIL.load(Ordering::Relaxed) && ORPHAN_MAIL.swap(false, Ordering::AcqRel)
}

/// What `trim_orphans` did.
pub struct OrphansTrimmed {
    /// When the next orphan becomes due, if one waits.
    pub next_due_ms: Option<u64>,
    /// Some orphan now waits for the inside of its free blocks to go back
    /// (`give_back_orphan_interiors`, without the core lock).
    pub interiors_wanted: bool,
}

/// Set when some orphan's free-block insides are due (`INTERIORS_WANTED`).
static ORPHAN_INTERIORS_WANTED: AtomicBool = AtomicBool::new(false);

/// Gives the free memory of heaps orphaned at least `delay_ms` ago (all,
/// when `force`) back to the core, and that of already trimmed orphans
/// whose inbox got blocks since. The inside of their free blocks is only
/// marked due here: that is a walk over every free block and system calls,
/// done without the core lock (`give_back_orphan_interiors`). With the
/// core lock held.
pub fn trim_orphans(core: &mut Core, now_ms: u64, delay_ms: u64, force: bool) -> OrphansTrimmed {
    let mut next_due: Option<u64> = None;
    let mut interiors_wanted = false;
    let mut heap = core.registry.first_orphan();
    while !heap.is_null() {
        // SAFETY: orphans are registered heaps (never unmapped) that only the
        // core, whose lock we hold, works on.
        let h = unsafe { &*heap };
        heap = h.orphan_next.load(Ordering::Relaxed);
        let stage = h.interiors.load(Ordering::Relaxed);
        if stage == INTERIORS_BUSY {
            continue; // another thread walks its pages; it comes back later
        }
        let due = h
            .orphaned_at_ms
            .load(Ordering::Relaxed)
            .saturating_add(delay_ms);
        let is_due = force || now_ms >= due;
        let trimmed = h.trimmed.load(Ordering::Relaxed);
        if trimmed {
            if h.inbox.load(Ordering::Relaxed) != 0 {
                release_heap_memory(h, core);
            }
        } else if is_due {
            release_heap_memory(h, core);
            core.registry.mark_trimmed(h);
        }
        // A cold orphan, trimmed at its thread's exit, still gives back the
        // inside of its free blocks once due (malloc_trim: again, always).
        let interiors_wait = stage == INTERIORS_PENDING || stage == INTERIORS_WANTED;
        if is_due && (interiors_wait || force) {
            h.interiors.store(INTERIORS_WANTED, Ordering::Relaxed);
            interiors_wanted = true;
        } else if !is_due && (interiors_wait || !trimmed) {
            next_due = Some(next_due.map_or(due, |d: u64| d.min(due)));
        }
    }
    if interiors_wanted {
        ORPHAN_INTERIORS_WANTED.store(true, Ordering::Release);
    }
    OrphansTrimmed {
        next_due_ms: next_due,
        interiors_wanted,
    }
}

/// Gives back the OS pages inside the free blocks of every orphan whose
/// turn came (`trim_orphans`), if any did since the last call. Call
/// without the core lock. Returns the bytes given back.
pub fn give_back_orphan_interiors() -> usize {
    if !ORPHAN_INTERIORS_WANTED.swap(false, Ordering::Acquire) {
        return 0;
    }
    give_back_wanted_interiors()
}

/// `malloc_trim`'s part, after its purge marked every orphan: gives back
/// their free blocks' insides, and returns only once no orphan is busy
/// (the purge thread may be working on one this trim marked), waiting at
/// most `TRIM_WAIT_MS`. Call without the core lock. Returns the bytes this
/// thread gave back, or 1 when it only waited for another thread's work.
pub fn trim_orphan_interiors() -> usize {
    ORPHAN_INTERIORS_WANTED.store(false, Ordering::Relaxed);
    let mut bytes = give_back_wanted_interiors();
    for _ in 0..TRIM_WAIT_MS {
        let busy = {
            let core = backend::lock();
            !first_orphan_in(&core, INTERIORS_BUSY).is_null()
        };
        if !busy {
            break;
        }
        bytes = bytes.max(1);
        crate::os::clock::sleep_ms(1);
    }
    bytes
}

/// How long `malloc_trim` waits for another thread's work on an orphan (a
/// bound: that thread holds no lock, and finishes unless it was killed
/// inside the allocator).
const TRIM_WAIT_MS: u32 = 1000;

/// Works through the orphans marked `INTERIORS_WANTED`, one at a time. The
/// core lock is held only to pick an orphan and mark it busy (nobody adopts
/// it or touches its pages meanwhile) and to mark it done: other threads
/// do not wait for the walk and its system calls (an orphan with 7000 free
/// 12 KiB blocks held the lock 16-20 ms when this ran under it, with an
/// madvise per block).
fn give_back_wanted_interiors() -> usize {
    let mut bytes = 0;
    loop {
        let heap = {
            let core = backend::lock();
            let heap = first_orphan_in(&core, INTERIORS_WANTED);
            if heap.is_null() {
                return bytes;
            }
            // SAFETY: a registered orphan (never unmapped), ours under the lock.
            unsafe { &*heap }
                .interiors
                .store(INTERIORS_BUSY, Ordering::Relaxed);
            heap
        };
        // SAFETY: as above; marked busy, its pages are ours alone until it
        // is marked done (only blocks other threads free reach it, through
        // its inbox).
        let h = unsafe { &*heap };
        bytes += interiors::give_back(h);
        let _core = backend::lock();
        h.interiors.store(INTERIORS_GIVEN, Ordering::Relaxed);
        if h.inbox.load(Ordering::Relaxed) != 0 {
            note_orphan_mail(); // freed while it was busy: the purge collects them
        }
    }
}

/// The first orphan whose `interiors` stage is `stage`, or null. With the
/// core lock.
fn first_orphan_in(core: &Core, stage: u8) -> *mut Heap {
    let mut heap = core.registry.first_orphan();
    while !heap.is_null() {
        // SAFETY: orphans are registered heaps, never unmapped.
        let h = unsafe { &*heap };
        if h.interiors.load(Ordering::Relaxed) == stage {
            return heap;
        }
        heap = h.orphan_next.load(Ordering::Relaxed);
    }
    heap
}

/// Takes the pages that have waited in any heap's span cache for at least
/// `delay_ms` (all, when `force`) back into the core. Returns when the next
/// cached page becomes due, if one waits. With the core lock held.
pub fn take_idle_span_caches(
    core: &mut Core,
    now_ms: u64,
    delay_ms: u64,
    force: bool,
) -> Option<u64> {
    let mut next_due: Option<u64> = None;
    backend::registry::for_each_heap(|heap| {
        // SAFETY: registered heaps are never unmapped.
        let h = unsafe { &*heap };
        for slot in &h.span_cache {
            if slot.page.load(Ordering::Relaxed).is_null() {
                continue;
            }
            let due = slot
                .cached_at_ms
                .load(Ordering::Relaxed)
                .saturating_add(delay_ms);
            if !force && now_ms < due {
                next_due = Some(next_due.map_or(due, |d: u64| d.min(due)));
                continue;
            }
            let page = slot.take();
            if page.is_null() {
                continue; // its owner took it back first
            }
            // SAFETY: swapped out of the slot: the page is ours alone.
            let page = unsafe { &*page };
            let allocs = page.take_allocs();
            h.stats.taken_allocs[page.class.get() as usize].fetch_add(allocs, Ordering::Relaxed);
            page.free.set(core::ptr::null_mut());
            core.free_page_span(page);
        }
    });
    next_due
}

/// `malloc_trim` for the calling thread: every page of its heap without a
/// live block, its span cache and the blocks it keeps for other heaps go
/// back (to the core, and to their owners), and the OS pages inside the
/// free blocks of its other pages to the OS. Returns the bytes of those.
pub fn trim_current() -> usize {
    let heap = tls::heap();
    if !is_own(heap) {
        return 0;
    }
    // SAFETY: the calling thread's own heap.
    let h = unsafe { &*heap };
    runs::give_back(h, &mut CoreAccess::Take);
    release_heap_memory(h, &mut backend::lock());
    interiors::give_back(h)
}

/// Returns a heap's free memory: foreign blocks to their owners, empty pages
/// and the span cache to the core. The caller owns the heap (its thread, or
/// the core for an orphan) and holds the core lock.
fn release_heap_memory(h: &Heap, core: &mut Core) {
    remote::return_foreign(h);
    if let Err(block) = collect::release_empty_pages(h, core, false) {
        diag::fatal(diag::Call::Free, block, diag::HeapError::Corrupted);
    }
    drain_span_cache(h, core);
    // Pages with live blocks stay; their never-carved tails need not.
    backed_tails::give_back_due(h);
}

/// Gives the pages of a heap's span cache back to the core. The caller
/// owns the heap and holds the core lock.
fn drain_span_cache(h: &Heap, core: &mut Core) {
    h.drain_span_cache(|page| {
        page_ops::fold_allocs(page, h);
        page.free.set(core::ptr::null_mut());
        core.free_page_span(page);
    });
}

/// Orphaned heaps kept with all their pages (beyond these, an exiting
/// thread's empty pages go back to the core).
const ORPHANS_KEPT_WARM: usize = 4;

/// Whether the heap of the thread exiting now waits warm, with its pages,
/// for the next thread (with the core lock held): while fewer than
/// `ORPHANS_KEPT_WARM` orphans do, and only while the other threads' heaps
/// and those orphans are no more than the CPUs plus that many.
///
/// More heaps in use than that means more threads than CPUs, started
/// together (a burst of threads the program will not start again at that
/// rate, or a program that keeps more threads alive than it has CPUs): an
/// orphan kept warm then holds its memory while the threads still running
/// grow theirs, and the peak is the sum of both. As threads end, those
/// still running become fewer, and the last ones to exit stay warm again.
/// threads_churn 8 (8 threads at a time on 2 CPUs; 15 interleaved runs):
/// peak RSS 6132 -> 5228 KiB (glibc 4340), time 0.257 -> 0.269 s: the
/// first threads to end give their memory back while the others of the
/// first batch still run, instead of waiting warm at the peak. (Counting
/// this thread's heap among the others gave the same peak; allowing one
/// more heap, 5364 KiB.)
///
/// A heap still with its first thread was built for such a burst. One
/// that threads have handed on, in a program that keeps more threads
/// alive than that all along, goes cold for crowding only once in
/// `CROWDED_COLD_SPACING` exits: each cold heap is faulted in again by
/// the thread that adopts it. With every crowded exit cold, threads_churn
/// 32 (32 threads at a time) took 1.30 s instead of 0.40 for 17.2 MiB
/// instead of 19.7; spaced so, 0.47 s against 0.43 for 19.3 MiB against
/// 20.0 (9 interleaved runs; 0.50 against 0.44 in another 9), and
/// threads_churn 8 keeps its gain (5292 KiB, 15 runs). Sparing
/// adopted heaps altogether gave threads_churn 8 only 5648 KiB: its later
/// crowds are of adopted heaps.
fn stays_warm(core: &mut Core, heap: &Heap, cpus: usize) -> bool {
    let registry = &mut core.registry;
    let exits_since = registry.count_exit();
    if registry.warm_count() >= ORPHANS_KEPT_WARM {
        return false;
    }
    let others = registry.live_count().saturating_sub(1);
    if others + registry.warm_count() <= cpus + ORPHANS_KEPT_WARM {
        return true;
    }
    if heap.adopted.load(Ordering::Relaxed) && exits_since < CROWDED_COLD_SPACING {
        return true;
    }
    registry.note_crowded_cold();
    false
}

/// A heap that threads have handed on goes cold for crowding (see
/// `stays_warm`) at most once in this many exits.
const CROWDED_COLD_SPACING: u32 = 32;

/// Fork support: in the child, only the forking thread exists.
pub fn after_fork_in_child(core: &mut Core) {
    let heap = tls::heap();
    core.registry.lose_other_threads_heaps(heap);
    // An orphan another thread was giving memory back from: that thread
    // does not exist here, so the work is due again.
    loop {
        let orphan = first_orphan_in(core, INTERIORS_BUSY);
        if orphan.is_null() {
            break;
        }
        // SAFETY: orphans are registered heaps (never unmapped), ours under
        // the lock.
        unsafe { &*orphan }
            .interiors
            .store(INTERIORS_WANTED, Ordering::Relaxed);
        ORPHAN_INTERIORS_WANTED.store(true, Ordering::Relaxed);
    }
    if is_own(heap) {
        // SAFETY: the child's only thread owns this heap.
        unsafe {
            (*heap)
                .thread_id
                .store(diag::current_thread_id(), Ordering::Relaxed)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;

    /// malloc_trim does not return while another thread still gives back
    /// an orphan's memory (it may be one the trim itself marked).
    #[test]
    fn malloc_trim_waits_for_an_orphan_another_thread_works_on() {
        let heap = {
            let mut core = backend::lock();
            let heap = core.registry.acquire();
            assert!(!heap.is_null());
            // SAFETY: a registered heap, never unmapped, ours under the lock.
            let h = unsafe { &*heap };
            core.registry.orphan(h, now_ms(), false);
            h.interiors.store(INTERIORS_BUSY, Ordering::Relaxed);
            heap as usize
        };
        let worker = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(40));
            let _core = backend::lock();
            // SAFETY: as above.
            unsafe { &*(heap as *const Heap) }
                .interiors
                .store(INTERIORS_GIVEN, Ordering::Relaxed);
        });
        let started = std::time::Instant::now();
        let bytes = trim_orphan_interiors();
        let waited = started.elapsed();
        worker.join().unwrap();
        assert!(
            bytes >= 1,
            "a trim that waited for released memory reports it"
        );
        assert!(
            waited >= std::time::Duration::from_millis(30),
            "returned after {waited:?}, while the orphan was still busy"
        );
    }
}
