//! The registry of heaps: every heap structure ever made (they are never
//! unmapped, so a pointer to one stays valid forever: remote frees rely on
//! it), and the orphans left by exited threads, which new threads adopt
//! whole, with their pages. Mutated under the core lock; the list of all
//! heaps can be walked without it.

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::heap::heap::{Heap, HeapState, INTERIORS_BUSY, INTERIORS_PENDING};
use crate::os::mmap;

/// Head of the list of all heaps (through `Heap::registry_next`).
static ALL_HEAPS: AtomicPtr<Heap> = AtomicPtr::new(ptr::null_mut());

/// Bytes mapped at a time for heap structures.
const ARENA_BYTES: usize = 256 * 1024;

pub struct Registry {
    /// Orphans, warm ones (with their pages) first: a new thread adopts
    /// from the head.
    orphans: *mut Heap,
    orphans_tail: *mut Heap,
    orphan_count: usize,
    /// Orphans that still hold their pages (`Heap::trimmed` false).
    warm_count: usize,
    /// Heaps owned by live threads.
    live_count: usize,
    /// Thread exits since the last one whose heap went cold because too
    /// many heaps were in use (see `thread::stays_warm`).
    exits_since_crowded_cold: u32,
    arena_next: usize,
    arena_end: usize,
}

// SAFETY: only reachable through the core lock.
unsafe impl Send for Registry {}

impl Registry {
    pub const fn new() -> Registry {
        Registry {
            orphans: ptr::null_mut(),
            orphans_tail: ptr::null_mut(),
            orphan_count: 0,
            warm_count: 0,
            live_count: 0,
            exits_since_crowded_cold: 0,
            arena_next: 0,
            arena_end: 0,
        }
    }

    /// Returns a heap for a new thread: an orphan (with its pages) if there
    /// is one that no thread is giving memory back from, else a fresh heap.
    /// Null when out of memory.
    pub fn acquire(&mut self) -> *mut Heap {
        let mut before: *mut Heap = ptr::null_mut();
        let mut heap = self.orphans;
        while !heap.is_null() {
            // SAFETY: heaps are never unmapped; orphans are ours under the lock.
            let h = unsafe { &*heap };
            let next = h.orphan_next.load(Ordering::Relaxed);
            if h.interiors.load(Ordering::Relaxed) != INTERIORS_BUSY {
                self.unlink(before, heap, next);
                self.adopt(h);
                return heap;
            }
            before = heap;
            heap = next;
        }
        let heap = self.carve();
        if !heap.is_null() {
            self.live_count += 1;
            // SAFETY: `carve` returns an initialised heap that is never unmapped.
            register(unsafe { &*heap });
        }
        heap
    }

    /// Takes orphan `heap` out of the list, given the orphan `before` it
    /// (null: it is the first) and the one `after` it.
    fn unlink(&mut self, before: *mut Heap, heap: *mut Heap, after: *mut Heap) {
        if before.is_null() {
            self.orphans = after;
        } else {
            // SAFETY: a registered orphan (never unmapped), ours under the lock.
            unsafe { (*before).orphan_next.store(after, Ordering::Relaxed) };
        }
        if self.orphans_tail == heap {
            self.orphans_tail = before;
        }
    }

    /// Hands an unlinked orphan to a new thread.
    fn adopt(&mut self, h: &Heap) {
        self.orphan_count -= 1;
        self.live_count += 1;
        if !h.trimmed.load(Ordering::Relaxed) {
            self.warm_count -= 1;
        }
        h.orphan_next.store(ptr::null_mut(), Ordering::Relaxed);
        h.trimmed.store(false, Ordering::Relaxed);
        h.adopted.store(true, Ordering::Relaxed);
        // Its new thread keeps foreign blocks only once it allocates.
        h.keeps_foreign.set(false);
        h.set_state(HeapState::Live);
    }

    /// Parks the heap of an exited thread until a new thread adopts it: a
    /// `warm` heap (one that kept its pages) first in line, a cold one last,
    /// so new threads start with pages whenever some orphan has them.
    pub fn orphan(&mut self, h: &Heap, now_ms: u64, warm: bool) {
        let heap = h.as_ptr();
        h.set_state(HeapState::Orphaned);
        h.orphaned_at_ms.store(now_ms, Ordering::Relaxed);
        h.thread_id.store(0, Ordering::Relaxed);
        h.trimmed.store(!warm, Ordering::Relaxed);
        h.interiors.store(INTERIORS_PENDING, Ordering::Relaxed);
        self.warm_count += usize::from(warm);
        self.live_count -= 1;
        if warm || self.orphans.is_null() {
            h.orphan_next.store(self.orphans, Ordering::Relaxed);
            self.orphans = heap;
            if self.orphans_tail.is_null() {
                self.orphans_tail = heap;
            }
        } else {
            h.orphan_next.store(ptr::null_mut(), Ordering::Relaxed);
            // SAFETY: the tail is a registered orphan (never unmapped), ours
            // under the core lock.
            unsafe {
                (*self.orphans_tail)
                    .orphan_next
                    .store(heap, Ordering::Relaxed)
            };
            self.orphans_tail = heap;
        }
        self.orphan_count += 1;
    }

    pub fn orphan_count(&self) -> usize {
        self.orphan_count
    }

    /// Orphans still holding their pages.
    pub fn warm_count(&self) -> usize {
        self.warm_count
    }

    /// Heaps owned by live threads.
    pub fn live_count(&self) -> usize {
        self.live_count
    }

    /// Counts a thread exit; returns how many there were since the last
    /// one that went cold for crowding.
    pub fn count_exit(&mut self) -> u32 {
        self.exits_since_crowded_cold = self.exits_since_crowded_cold.saturating_add(1);
        self.exits_since_crowded_cold
    }

    /// Records that the exiting thread's heap goes cold for crowding.
    pub fn note_crowded_cold(&mut self) {
        self.exits_since_crowded_cold = 0;
    }

    /// Records that an orphan's free memory went back to the core.
    pub fn mark_trimmed(&mut self, h: &Heap) {
        if !h.trimmed.swap(true, Ordering::Relaxed) {
            self.warm_count -= 1;
        }
    }

    /// The first orphaned heap (the rest through `Heap::orphan_next`).
    pub fn first_orphan(&self) -> *mut Heap {
        self.orphans
    }

    /// In a forked child: every heap still owned by a thread other than the
    /// forking one (`keep`) is lost, since those threads do not exist here.
    pub fn lose_other_threads_heaps(&mut self, keep: *mut Heap) {
        let mut live = 0;
        for_each_heap(|heap| {
            // SAFETY: registered heaps are never unmapped.
            let h = unsafe { &*heap };
            if h.state() == HeapState::Live {
                if heap == keep {
                    live += 1;
                } else {
                    h.set_state(HeapState::Lost);
                }
            }
        });
        self.live_count = live;
    }

    /// A zeroed heap from the arena.
    fn carve(&mut self) -> *mut Heap {
        let size = core::mem::size_of::<Heap>().next_multiple_of(core::mem::align_of::<Heap>());
        if self.arena_end - self.arena_next < size {
            let arena = mmap::map(ARENA_BYTES);
            if arena.is_null() {
                return ptr::null_mut();
            }
            self.arena_next = arena as usize;
            self.arena_end = arena as usize + ARENA_BYTES;
        }
        let heap = self.arena_next as *mut Heap;
        self.arena_next += size;
        // SAFETY: fresh, suitably aligned arena memory of `size` bytes.
        unsafe { heap.write(Heap::new()) };
        heap
    }
}

impl Default for Registry {
    fn default() -> Registry {
        Registry::new()
    }
}

/// Links a heap into the list of all heaps (also used for the core's
/// special static heaps).
pub fn register(heap: &'static Heap) {
    let mut head = ALL_HEAPS.load(Ordering::Relaxed);
    loop {
        heap.registry_next.store(head, Ordering::Relaxed);
        match ALL_HEAPS.compare_exchange_weak(
            head,
            heap.as_ptr(),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => break,
            Err(current) => head = current,
        }
    }
}

/// Calls `visit` with every heap ever registered. Safe without the lock:
/// the list only grows and heaps are never unmapped.
pub fn for_each_heap(mut visit: impl FnMut(*mut Heap)) {
    let mut heap = ALL_HEAPS.load(Ordering::Acquire);
    while !heap.is_null() {
        visit(heap);
        // SAFETY: registered heaps are never unmapped.
        heap = unsafe { (*heap).registry_next.load(Ordering::Acquire) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::heap::INTERIORS_GIVEN;

    /// An orphan whose memory another thread is giving back (busy) is
    /// passed over by new threads, wherever it is in the list, and adopted
    /// once that is done.
    #[test]
    fn new_threads_pass_over_a_busy_orphan() {
        let mut registry = Registry::new();
        let heaps: [*mut Heap; 3] = core::array::from_fn(|_| registry.acquire());
        // SAFETY: fresh heaps of this registry, never unmapped.
        let [a, b, c] = heaps.map(|h| unsafe { &*h });
        registry.orphan(a, 0, true);
        registry.orphan(b, 0, true);
        registry.orphan(c, 0, false); // cold: last in line
        assert_eq!(registry.live_count(), 0);
        // The list is b, a, c (warm ones first, newest first).
        b.interiors.store(INTERIORS_BUSY, Ordering::Relaxed);
        assert_eq!(registry.acquire(), a.as_ptr());
        c.interiors.store(INTERIORS_BUSY, Ordering::Relaxed);
        let fresh = registry.acquire();
        assert!(!heaps.contains(&fresh), "a busy orphan was adopted");
        assert_eq!(registry.orphan_count(), 2);
        assert_eq!(registry.live_count(), 2, "one adopted, one fresh");
        // The tail (c) was skipped, not lost: orphaning again links behind it.
        registry.orphan(a, 0, false);
        c.interiors.store(INTERIORS_GIVEN, Ordering::Relaxed);
        assert_eq!(registry.acquire(), c.as_ptr());
        b.interiors.store(INTERIORS_GIVEN, Ordering::Relaxed);
        assert_eq!(registry.acquire(), b.as_ptr());
        assert_eq!(registry.acquire(), a.as_ptr());
        assert_eq!(registry.orphan_count(), 0);
        assert_eq!(registry.warm_count(), 0);
        assert_eq!(registry.live_count(), 4);
    }
}
