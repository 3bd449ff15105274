//! Initialisation: lazy, on the first call from any thread (the dynamic
//! loader may call malloc before any constructor runs), and also from a
//! load-time constructor so fork handlers are in place before main.
//!
//! Stage 1 (secrets, settings, the special heaps) never allocates, so a
//! thread that finds another one initialising may wait for it. Stage 2
//! (pthread key, fork handlers) may call malloc, which by then works.

use core::sync::atomic::{AtomicU8, Ordering};

use crate::backend::{self, huge, segment};
use crate::config::OS_PAGE_SIZE;
use crate::diag;
use crate::heap::{block, thread};
use crate::os::{mmap, random};
use crate::settings;

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);

/// Makes sure CMA is initialised.
#[inline]
pub fn ensure() {
    if STATE.load(Ordering::Acquire) != READY {
        initialise();
    }
}

#[cold]
#[inline(never)]
fn initialise() {
    match STATE.compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Acquire) {
        Ok(_) => {
            stage_one();
            STATE.store(READY, Ordering::Release);
            stage_two();
        }
        Err(BUSY) => {
            while STATE.load(Ordering::Acquire) != READY {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
        Err(_) => {}
    }
}

fn stage_one() {
    if mmap::page_size() != OS_PAGE_SIZE {
        diag::fatal_internal("unsupported OS page size (CMA is built for 4 KiB pages)");
    }
    let seed = random::seed();
    block::init_keys(seed);
    huge::init_secret(random::mix64(seed ^ 0x6875_6765) as usize);
    segment::init_secret(random::mix64(seed ^ 0x7365_676d) as usize);
    settings::load();
    thread::register_special_heaps();
    thread::refresh_fast_bound();
}

fn stage_two() {
    thread::create_exit_key();
    // SAFETY: the handlers are C-ABI functions that stay valid forever.
    let rc =
        unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    if rc != 0 {
        diag::warn(&[
            b"cannot register fork handlers; fork() while other threads allocate is unsafe",
        ]);
    }
    settings::report_if_verbose();
    if settings::stats_at_exit() {
        crate::report::keep_stderr_for_report();
        // SAFETY: registering a C-ABI function that stays valid forever.
        if unsafe { libc::atexit(report_at_exit) } != 0 {
            diag::warn(&[b"cannot register the CMA_STATS report"]);
        }
    }
}

extern "C" fn report_at_exit() {
    crate::report::write_stats_report();
}

/// Before fork: hold the core lock, so the child gets a consistent core.
extern "C" fn fork_prepare() {
    backend::CORE.fork_prepare();
}

extern "C" fn fork_parent() {
    // SAFETY: runs in the parent after fork, where fork_prepare took the lock.
    unsafe { backend::CORE.fork_parent() };
}

extern "C" fn fork_child() {
    // SAFETY: runs in the child, whose only thread is the one that forked.
    unsafe { backend::CORE.fork_child() };
    crate::purge::after_fork_in_child();
    thread::after_fork_in_child(&mut backend::lock());
}

/// Initialises at load time, before main, so fork handlers are registered
/// even in programs that fork before allocating.
#[ctor::ctor(unsafe)]
fn initialise_at_load() {
    ensure();
}
