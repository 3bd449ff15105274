//! Giving memory back to the OS.
//!
//! Memory the core gets back (free spans, empty segments) stays backed for
//! `CMA_PURGE_DELAY_MS`, so a program that frees and soon allocates again
//! does not pay for page faults; after that delay it is decommitted
//! (`madvise(MADV_DONTNEED)`: the mapping stays, the physical pages go), and
//! empty segments beyond a couple are unmapped (those too after two delays
//! empty). Heaps of exited threads that nobody adopted within the delay
//! give back their empty pages as well, and so do the span caches of
//! threads that went idle.
//!
//! A purge runs when the core is next used after the delay, at once when
//! more free memory waits than `dirty_budget` allows (an eighth of what is
//! in use: then the oldest goes first, whatever its age, until seven
//! eighths of the budget are left), from `malloc_trim`, and from a small
//! background thread, so memory also comes back from a program that went
//! idle. The thread is started lazily, only once enough memory waits
//! (`BACKGROUND_THRESHOLD`), so small programs never get one; it sleeps in
//! the kernel when there is nothing to do. `CMA_BACKGROUND_PURGE=0` turns it
//! off (for programs that must stay single-threaded).

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::backend::{self, Core};
use crate::heap::thread;
use crate::os::clock::now_ms;
use crate::settings;
use crate::sync::futex;

/// Free memory allowed to wait for the delay is an eighth of what the core
/// has handed out (spans and huge blocks in use), and at least
/// `MIN_DIRTY_BUDGET`: a program with a steady live size that churns
/// through big blocks keeps a bounded reserve of backed free pages instead
/// of a delay's worth of its churn. (Not a share of the mapped bytes: those
/// grow with fragmentation, and the reserve would grow with them.)
const DIRTY_BUDGET_SHIFT: u32 = 3;
const MIN_DIRTY_BUDGET: usize = 16 << 20;

fn dirty_budget(core: &Core) -> usize {
    (core.held_bytes >> DIRTY_BUDGET_SHIFT).max(MIN_DIRTY_BUDGET)
}
/// The background thread starts once this much memory waits for a purge.
const BACKGROUND_THRESHOLD: usize = 4 << 20;

/// Runs a purge if one is due. Called with the core lock held, whenever
/// memory went back to the core.
pub fn after_release(core: &mut Core) {
    let now = now_ms();
    let budget = dirty_budget(core);
    if core.spans.dirty_bytes > budget {
        // Down to seven eighths, not further: what is purged beyond the
        // overflow is soon taken again and faulted back in (mem_steady, 30
        // s: 745,000 page faults when purging down to half, 457,000 now;
        // the same peak RSS).
        purge_oldest(core, now, budget / 8 * 7);
    }
    // Inside a running purge (pages it takes from a heap come back here)
    // nothing more: it sets the next due time when it is done.
    if !core.purging {
        if purge_wanted(core, now) {
            run(core, now, false);
        } else if core.next_purge_ms == u64::MAX {
            core.next_purge_ms = now + settings::purge_delay_ms();
        }
    }
    let waiting =
        core.spans.dirty_bytes >= BACKGROUND_THRESHOLD || core.registry.orphan_count() > 0;
    if waiting && background_would_oversleep(core) {
        WORK.store(1, Ordering::Release);
    }
}

/// True when a purge is due, or orphans got mail since the last purge
/// (taken here either way: the purge collects every trimmed orphan's
/// inbox, so it must not stay set to start another one).
fn purge_wanted(core: &Core, now: u64) -> bool {
    let mail = thread::take_orphan_mail();
    mail || now >= core.next_purge_ms
}

/// True when the background thread is not running yet, or sleeps past the
/// next purge. Only then does `kick` wake it: a program that frees big
/// blocks all the time would otherwise wake it (a futex call and a context
/// switch) at every release, although its timeout already covers them.
fn background_would_oversleep(core: &Core) -> bool {
    STATE.load(Ordering::Acquire) != RUNNING
        || core.next_purge_ms < SLEEP_UNTIL.load(Ordering::Relaxed)
}

/// Purges what is due (everything when `force`); returns the bytes given
/// back. With the core lock held. Not nested: the pages a purge takes from
/// orphans and span caches go back through `after_release`, and a purge
/// started there would work on the very heap being emptied.
pub fn run(core: &mut Core, now: u64, force: bool) -> usize {
    if core.purging {
        return 0;
    }
    core.purging = true;
    let delay = settings::purge_delay_ms();
    let orphans = thread::trim_orphans(core, now, delay, force);
    let caches_pending = thread::take_idle_span_caches(core, now, delay, force);
    core.purging = false;
    let purged = core.spans.purge(now, delay, force, None);
    core.next_purge_ms = [purged.next_due_ms, orphans.next_due_ms, caches_pending]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(u64::MAX);
    if orphans.interiors_wanted {
        // Their free-block insides go back without the core lock: on the
        // background thread (woken, or started by the next `kick`), or in
        // `kick` itself when there is none.
        WORK.store(1, Ordering::Release);
        request();
    }
    purged.bytes
}

/// Decommits free spans, oldest first (in passes of halving age), until at
/// most `target` bytes wait. With the core lock held.
fn purge_oldest(core: &mut Core, now: u64, target: usize) {
    let mut age = settings::purge_delay_ms();
    loop {
        age /= 2;
        core.spans.purge(now, age, false, Some(target));
        if core.spans.dirty_bytes <= target || age == 0 {
            return;
        }
    }
}

/// `malloc_trim`: the calling thread's free memory, then everything the core
/// holds, back to the OS now. Returns the bytes given back.
pub fn trim_now() -> usize {
    let own = thread::trim_current();
    let core_bytes = run(&mut backend::lock(), now_ms(), true);
    own + core_bytes + thread::trim_orphan_interiors()
}

// ---- the background thread ------------------------------------------------

const NOT_STARTED: u8 = 0;
const STARTING: u8 = 1;
const RUNNING: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(NOT_STARTED);
/// Set under the core lock when a purge may have work (see `after_release`).
static WORK: AtomicU8 = AtomicU8::new(0);
/// The thread sleeps on this word; bumped to wake it.
static WAKE: AtomicU32 = AtomicU32::new(0);
/// When the thread next looks at the core by itself (ms; `u64::MAX`: not
/// until woken). Written by the thread under the core lock before it
/// sleeps, read by `after_release` under the same lock, so a release that
/// makes a purge due earlier always sees it and wakes the thread. (The
/// thread reads `WAKE` before taking the lock: a wake between its unlock
/// and its futex wait is not lost.)
static SLEEP_UNTIL: AtomicU64 = AtomicU64::new(u64::MAX);

/// Starts or wakes the background thread if work appeared. Call without the
/// core lock (starting a thread allocates).
pub fn kick() {
    if WORK.swap(0, Ordering::Acquire) == 0 {
        return;
    }
    if !settings::background_purge() {
        thread::give_back_orphan_interiors();
        return;
    }
    match STATE.load(Ordering::Acquire) {
        RUNNING => {
            WAKE.fetch_add(1, Ordering::Release);
            futex::wake_one(&WAKE);
        }
        NOT_STARTED
            if STATE
                .compare_exchange(NOT_STARTED, STARTING, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok() =>
        {
            start();
        }
        _ => {}
    }
}

/// Asks for a purge soon (orphans got mail): wakes the background thread
/// if it runs (never with `CMA_BACKGROUND_PURGE=0`: `kick` does not start
/// it then), else the next release to the core purges. Callable with the
/// core lock held: it never starts the thread (that allocates) and never
/// takes a lock.
pub fn request() {
    if STATE.load(Ordering::Acquire) == RUNNING {
        WAKE.fetch_add(1, Ordering::Release);
        futex::wake_one(&WAKE);
    }
}

/// In a forked child the thread does not exist: it will be started again
/// when needed.
pub fn after_fork_in_child() {
    STATE.store(NOT_STARTED, Ordering::Relaxed);
    WORK.store(0, Ordering::Relaxed);
    SLEEP_UNTIL.store(u64::MAX, Ordering::Relaxed);
}

fn start() {
    let _errno = crate::os::errno::ErrnoGuard::save();
    // SAFETY: plain pthread calls on local, initialised objects; the thread
    // body is a C-ABI function that never returns; all signals are blocked
    // while the thread is created, so it starts with them blocked (it must
    // never run a program's signal handler), and the mask is restored.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        libc::pthread_attr_setstacksize(&mut attr, 64 << 10);
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut tid: libc::pthread_t = 0;
        // libc allocates the new thread's TLS bookkeeping (with calloc, so
        // through the slow path): CMA's own, left out of the statistics.
        crate::tls::set_internal(true);
        let rc = libc::pthread_create(&mut tid, &attr, background, core::ptr::null_mut());
        crate::tls::set_internal(false);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        // On failure purges still run on allocator activity.
        STATE.store(
            if rc == 0 { RUNNING } else { NOT_STARTED },
            Ordering::Release,
        );
    }
}

extern "C" fn background(_: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: naming the calling thread; the name is a NUL-terminated literal.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"cma-purge".as_ptr()) };
    loop {
        let seen = WAKE.load(Ordering::Acquire);
        let next_due = {
            let mut core = backend::lock();
            let now = now_ms();
            if purge_wanted(&core, now) {
                run(&mut core, now, false);
            }
            SLEEP_UNTIL.store(core.next_purge_ms, Ordering::Relaxed);
            core.next_purge_ms
        };
        thread::give_back_orphan_interiors();
        if next_due == u64::MAX {
            futex::wait(&WAKE, seen);
        } else {
            let wait_ms = next_due.saturating_sub(now_ms()).max(1);
            futex::wait_timeout(&WAKE, seen, wait_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::c_entry::{free, malloc};

    /// A purge asked for while one runs (by a release to the core that the
    /// running purge made) does nothing; once it is done, purges work.
    #[test]
    fn a_purge_started_inside_another_does_nothing() {
        // SAFETY: a plain allocation, freed once: a freed 1 MiB block is a
        // backed free span of the core.
        unsafe { free(malloc(1 << 20)) };
        let mut core = backend::lock();
        let waiting = core.spans.dirty_bytes;
        assert!(waiting >= 1 << 20, "{waiting} bytes wait");
        core.purging = true;
        assert_eq!(run(&mut core, now_ms(), true), 0);
        assert_eq!(core.spans.dirty_bytes, waiting);
        core.purging = false;
        assert!(run(&mut core, now_ms(), true) >= 1 << 20);
    }
}
