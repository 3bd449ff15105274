//! The allocator through its C entry points, in this very process (the test
//! binary's malloc is CMA): random operation sequences with every block's
//! contents verified, alignment, zeroing, realloc across size categories,
//! cross-thread frees, thread exit, and the checked API.

mod common;

use common::*;
use std::ffi::c_void;
use std::ptr;

struct Live {
    ptr: *mut c_void,
    len: usize,
    seed: u64,
}

/// Random malloc/calloc/realloc/aligned/free sequences, every block filled
/// with its own pattern and verified before it is resized or freed.
#[test]
fn random_sequences_keep_every_block_intact() {
    for seed in 1..=4u64 {
        let mut rng = Rng::new(seed);
        let mut live: Vec<Live> = Vec::new();
        for step in 0..20_000u64 {
            let op = rng.below(100);
            if op < 45 || live.is_empty() {
                let len = rng.size();
                let ptr = match rng.below(4) {
                    0 => unsafe { calloc(1, len) },
                    1 => {
                        let align = 1usize << (4 + rng.below(9));
                        unsafe { aligned_alloc(align, len) }
                    }
                    _ => unsafe { malloc(len) },
                };
                assert!(
                    !ptr.is_null(),
                    "allocation of {len} failed (step {step}, op {op})"
                );
                assert_eq!(ptr as usize % 16, 0);
                assert!(unsafe { malloc_usable_size(ptr) } >= len);
                unsafe { fill(ptr, len, step) };
                live.push(Live {
                    ptr,
                    len,
                    seed: step,
                });
            } else if op < 65 {
                let i = rng.below(live.len() as u64) as usize;
                let block = &mut live[i];
                assert!(
                    unsafe { check(block.ptr, block.len, block.seed) },
                    "block corrupted"
                );
                let new_len = rng.size().max(1);
                let p = unsafe { realloc(block.ptr, new_len) };
                assert!(!p.is_null(), "realloc {} -> {new_len} failed", block.len);
                let kept = block.len.min(new_len);
                assert!(
                    unsafe { check(p, kept, block.seed) },
                    "realloc lost contents"
                );
                unsafe { fill(p, new_len, step) };
                *block = Live {
                    ptr: p,
                    len: new_len,
                    seed: step,
                };
            } else {
                let i = rng.below(live.len() as u64) as usize;
                let block = live.swap_remove(i);
                assert!(
                    unsafe { check(block.ptr, block.len, block.seed) },
                    "block corrupted"
                );
                unsafe { free(block.ptr) };
            }
        }
        for block in live {
            assert!(unsafe { check(block.ptr, block.len, block.seed) });
            unsafe { free(block.ptr) };
        }
    }
}

#[test]
fn alignments_up_to_64_mib_are_honoured() {
    for shift in 4..=26 {
        let align = 1usize << shift;
        // (2 MiB less a page, aligned to 2 MiB, once hung in secure mode:
        // with its guard page it could fit no segment, and the span
        // allocator mapped segment after segment looking for one.)
        for len in [1usize, 24, 4096, 100_000, (2 << 20) - 4096, 3 << 20] {
            let mut p = ptr::null_mut();
            assert_eq!(unsafe { posix_memalign(&mut p, align, len) }, 0);
            assert_eq!(p as usize % align, 0, "align {align} len {len}");
            unsafe { fill(p, len, 7) };
            assert!(unsafe { check(p, len, 7) });
            unsafe { free(p) };
            let q = unsafe { memalign(align, len) };
            assert_eq!(q as usize % align, 0);
            unsafe { free(q) };
        }
    }
}

/// Reused memory is zeroed by calloc in every size category.
#[test]
fn calloc_zeroes_reused_memory() {
    for len in [8usize, 100, 1000, 20_000, 200_000, 3 << 20] {
        for _ in 0..4 {
            let p = unsafe { malloc(len) };
            unsafe { ptr::write_bytes(p.cast::<u8>(), 0xff, len) };
            unsafe { free(p) };
            let q = unsafe { calloc(len, 1) };
            let bytes = unsafe { std::slice::from_raw_parts(q.cast::<u8>(), len) };
            assert!(bytes.iter().all(|&b| b == 0), "calloc({len}) not zero");
            unsafe { free(q) };
        }
    }
}

/// A block grown and shrunk through every category keeps its contents.
#[test]
fn realloc_walks_through_every_size_category() {
    let sizes = [
        1usize,
        16,
        100,
        1024,
        5000,
        70_000,
        200_000,
        1 << 20,
        3 << 20,
        9 << 20,
        40 << 20,
    ];
    let mut p = unsafe { malloc(1) };
    unsafe { fill(p, 1, 3) };
    let mut len = 1;
    for &next in sizes.iter().chain(sizes.iter().rev()) {
        p = unsafe { realloc(p, next) };
        assert!(!p.is_null());
        assert!(unsafe { check(p, len.min(next), 3) }, "{len} -> {next}");
        unsafe { fill(p, next, 3) };
        len = next;
    }
    unsafe { free(p) };
}

/// Blocks allocated by one thread and freed by others, concurrently with
/// the owner allocating, all verified.
#[test]
fn cross_thread_frees_are_safe() {
    use std::sync::mpsc;
    let (tx, rx) = mpsc::sync_channel::<(usize, usize, u64)>(1024);
    let producers: Vec<_> = (0..3)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(100 + t);
                for i in 0..30_000u64 {
                    let len = rng.size().min(100_000);
                    let p = unsafe { malloc(len) };
                    unsafe { fill(p, len, i) };
                    tx.send((p as usize, len, i)).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let consumer = std::thread::spawn(move || {
        let mut count = 0;
        for (p, len, seed) in rx {
            assert!(unsafe { check(p as *const c_void, len, seed) });
            unsafe { free(p as *mut c_void) };
            count += 1;
        }
        count
    });
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(consumer.join().unwrap(), 90_000);
}

/// Threads that exit with blocks still allocated, freed later by the main
/// thread; their heaps are adopted by later threads.
#[test]
fn blocks_outlive_their_threads() {
    let mut left: Vec<(usize, usize, u64)> = Vec::new();
    for round in 0..10u64 {
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut rng = Rng::new(round * 10 + t);
                    let mut keep = Vec::new();
                    for i in 0..500u64 {
                        let len = rng.size().min(50_000);
                        let p = unsafe { malloc(len) };
                        unsafe { fill(p, len, i) };
                        if i % 3 == 0 {
                            keep.push((p as usize, len, i));
                        } else {
                            unsafe { free(p) };
                        }
                    }
                    keep
                })
            })
            .collect();
        for h in handles {
            left.extend(h.join().unwrap());
        }
    }
    for (p, len, seed) in left {
        assert!(unsafe { check(p as *const c_void, len, seed) });
        unsafe { free(p as *mut c_void) };
    }
}

/// The checked API reports misuse with error codes and the heap stays
/// usable.
#[test]
fn checked_free_reports_errors_and_heap_stays_usable() {
    let on_stack = 0u64;
    static STATIC: u64 = 0;
    for len in [48usize, 200, 3000, 100_000, 500_000, 3 << 20] {
        let p = unsafe { malloc(len) };
        let interior = unsafe { p.cast::<u8>().add(len / 2 / 16 * 16 + 16) };
        assert_eq!(
            unsafe { cma_checked_free(interior.cast()) },
            CMA_ERROR_INVALID_POINTER,
            "interior {len}"
        );
        assert_eq!(
            unsafe { cma_checked_free(p.cast::<u8>().add(1).cast()) },
            CMA_ERROR_INVALID_POINTER,
            "misaligned {len}"
        );
        let mut size = 0;
        assert_eq!(unsafe { cma_checked_block_size(p, &mut size) }, CMA_OK);
        assert!(size >= len);
        assert_eq!(unsafe { cma_checked_free(p) }, CMA_OK);
        assert_eq!(
            unsafe { cma_checked_free(p) },
            CMA_ERROR_DOUBLE_FREE,
            "double free {len}"
        );
        assert_eq!(
            unsafe { cma_checked_block_size(p, &mut size) },
            CMA_ERROR_DOUBLE_FREE
        );
        assert_eq!(unsafe { cma_last_error() }, CMA_ERROR_DOUBLE_FREE);
    }
    assert_eq!(
        unsafe { cma_checked_free(&on_stack as *const u64 as *mut c_void) },
        CMA_ERROR_INVALID_POINTER
    );
    assert_eq!(
        unsafe { cma_checked_free(&STATIC as *const u64 as *mut c_void) },
        CMA_ERROR_INVALID_POINTER
    );
    assert_eq!(unsafe { cma_checked_free(ptr::null_mut()) }, CMA_OK);
    // The heap still works.
    let p = unsafe { malloc(64) };
    unsafe { fill(p, 64, 1) };
    assert!(unsafe { check(p, 64, 1) });
    unsafe { free(p) };
}

/// A block freed by another thread is a double free for the owner too, and
/// the other way round. (A size no other allocation here uses, so the freed
/// block is not handed out again before the second free.)
#[test]
fn double_free_across_threads_is_detected() {
    const ODD_SIZE: usize = 12_345;
    let p = unsafe { malloc(ODD_SIZE) } as usize;
    std::thread::spawn(move || assert_eq!(unsafe { cma_checked_free(p as *mut c_void) }, CMA_OK))
        .join()
        .unwrap();
    assert_eq!(
        unsafe { cma_checked_free(p as *mut c_void) },
        CMA_ERROR_DOUBLE_FREE
    );
    let q = unsafe { malloc(ODD_SIZE) } as usize;
    unsafe { free(q as *mut c_void) };
    let result = std::thread::spawn(move || unsafe { cma_checked_free(q as *mut c_void) })
        .join()
        .unwrap();
    assert_eq!(result, CMA_ERROR_DOUBLE_FREE);
}

/// free_sized and free_aligned_sized accept the size (and alignment) the
/// block was asked with, in every size category and alignment (also in
/// secure mode, where blocks are padded: `make test-secure`).
#[test]
fn sized_frees_accept_the_requested_size() {
    let sizes = [
        1usize,
        100,
        4095,
        4096,
        70_000,
        200_000,
        (2 << 20) - 100,
        2 << 20,
        (2 << 20) + 100,
        5 << 20,
    ];
    for &size in &sizes {
        unsafe { free_sized(malloc(size), size) };
        for align in [16usize, 64, 4096, 65536, 1 << 20, 4 << 20] {
            let p = unsafe { aligned_alloc(align, size) };
            assert!(
                !p.is_null() && p as usize % align == 0,
                "aligned_alloc({align}, {size})"
            );
            unsafe { free_aligned_sized(p, align, size) };
        }
    }
}
