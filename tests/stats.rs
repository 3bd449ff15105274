//! The counters are exact when threads are quiescent. A test binary of its
//! own, without the libtest harness (`harness = false` in Cargo.toml): the
//! harness's main thread allocates while a test starts (its bookkeeping of
//! running tests), which landed inside the measured window now and then.
//! The test allocates nothing inside the measured windows but the blocks it
//! counts.

mod common;

use common::*;
use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn stats() -> (usize, usize, usize, usize) {
    let (mut a, mut f, mut c, mut p) = (0, 0, 0, 0);
    unsafe { cma_get_extended_stats(&mut a, &mut f, &mut c, &mut p) };
    (a, f, c, p)
}

const BLOCKS: usize = 1000;

fn main() {
    counters_are_exact_at_quiescence();
    println!("test counters_are_exact_at_quiescence ... ok");
}

fn counters_are_exact_at_quiescence() {
    // A second thread, started before measuring, that frees what it is
    // handed (cross-thread frees) and reports back through atomics.
    // handoff.0: 1 = go free, 2 = exit; handoff.1: 1 = started, 2 = freed.
    let handoff = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let to_free: Arc<Vec<AtomicUsize>> =
        Arc::new((0..BLOCKS / 2).map(|_| AtomicUsize::new(0)).collect());
    let freer = {
        let (handoff, to_free) = (handoff.clone(), to_free.clone());
        std::thread::spawn(move || {
            handoff.1.store(1, Ordering::Release);
            while handoff.0.load(Ordering::Acquire) == 0 {
                std::hint::spin_loop();
            }
            for slot in to_free.iter() {
                unsafe { free(slot.load(Ordering::Relaxed) as *mut c_void) };
            }
            handoff.1.store(2, Ordering::Release);
            while handoff.0.load(Ordering::Acquire) != 2 {
                std::hint::spin_loop();
            }
        })
    };
    let mut blocks: Vec<(usize, usize)> = Vec::with_capacity(BLOCKS);
    let mut rng = Rng::new(9);
    // The thread's own start-up allocations must be over before measuring.
    while handoff.1.load(Ordering::Acquire) == 0 {
        std::hint::spin_loop();
    }

    let (a0, f0, c0, _) = stats();
    for _ in 0..BLOCKS {
        let len = rng.size();
        let p = unsafe { malloc(len) };
        blocks.push((p as usize, unsafe { malloc_usable_size(p) }));
    }
    let usable: usize = blocks.iter().map(|b| b.1).sum();
    let (a1, f1, c1, p1) = stats();
    assert_eq!(a1 - a0, BLOCKS, "allocations counted");
    assert_eq!(f1, f0, "no frees");
    assert_eq!(c1 - c0, usable, "current bytes are the usable sizes");
    assert!(p1 >= c1);

    // Half freed by the other thread, half here.
    for (slot, block) in to_free.iter().zip(&blocks) {
        slot.store(block.0, Ordering::Relaxed);
    }
    handoff.0.store(1, Ordering::Release);
    while handoff.1.load(Ordering::Acquire) != 2 {
        std::hint::spin_loop();
    }
    for block in &blocks[BLOCKS / 2..] {
        unsafe { free(block.0 as *mut c_void) };
    }
    let (a2, f2, c2, p2) = stats();
    assert_eq!((a2 - a0, f2 - f0), (BLOCKS, BLOCKS), "allocs and frees");
    assert_eq!(f2 - f0, BLOCKS, "every free counted, local and remote");
    assert_eq!(c2, c0, "current bytes back where they were");
    assert!(p2 >= c1, "the peak remembers the high point");

    handoff.0.store(2, Ordering::Release);
    freer.join().unwrap();

    // Enough blocks of one class to fill more pages than the thread's span
    // cache keeps: freeing them sends pages back to the core, and the
    // counts those pages held must survive the trip.
    const MANY: usize = 30_000;
    let mut many: Vec<usize> = Vec::with_capacity(MANY);
    let (a3, f3, c3, _) = stats();
    for _ in 0..MANY {
        many.push(unsafe { malloc(48) } as usize);
    }
    for &p in &many {
        unsafe { free(p as *mut c_void) };
    }
    let (a4, f4, c4, _) = stats();
    assert_eq!(
        (a4 - a3, f4 - f3),
        (MANY, MANY),
        "pages returned to the core keep their counts"
    );
    assert_eq!(c4, c3, "current bytes back where they were");
}
