//! A multi-threaded Rust program whose global allocator is `cma::Cma`:
//! collections, cross-thread frees, over-aligned layouts, realloc growth.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc;

#[global_allocator]
static GLOBAL: cma::Cma = cma::Cma;

#[test]
fn collections_across_threads() {
    let (tx, rx) = mpsc::channel::<Vec<u64>>();
    let producers: Vec<_> = (0..4u64)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..2000u64 {
                    let v: Vec<u64> = (0..(i % 300)).map(|x| x * t + i).collect();
                    tx.send(v).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut total = 0u64;
    let mut count = 0;
    for v in rx {
        total = total.wrapping_add(v.iter().sum::<u64>());
        count += 1;
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(count, 8000);
    // The same sum computed without the allocator in the loop.
    let mut expected = 0u64;
    for t in 0..4u64 {
        for i in 0..2000u64 {
            for x in 0..(i % 300) {
                expected = expected.wrapping_add(x * t + i);
            }
        }
    }
    assert_eq!(total, expected);
}

#[test]
fn over_aligned_layouts_and_realloc() {
    for align in [32usize, 64, 4096, 1 << 16, 1 << 21] {
        for size in [1usize, 100, 5000, 300_000, 3 << 20] {
            let layout = Layout::from_size_align(size, align).unwrap();
            let p = unsafe { GLOBAL.alloc(layout) };
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "size {size} align {align}");
            unsafe { p.write_bytes(0xab, size) };
            let q = unsafe { GLOBAL.realloc(p, layout, size * 2) };
            assert_eq!(q as usize % align, 0);
            let kept = unsafe { std::slice::from_raw_parts(q, size) };
            assert!(kept.iter().all(|&b| b == 0xab));
            unsafe { GLOBAL.dealloc(q, Layout::from_size_align(size * 2, align).unwrap()) };
        }
    }
    let z = unsafe { GLOBAL.alloc_zeroed(Layout::from_size_align(1 << 20, 64).unwrap()) };
    assert!(
        unsafe { std::slice::from_raw_parts(z, 1 << 20) }
            .iter()
            .all(|&b| b == 0)
    );
    unsafe { GLOBAL.dealloc(z, Layout::from_size_align(1 << 20, 64).unwrap()) };
}

#[test]
fn growing_strings() {
    let mut s = String::new();
    for i in 0..200_000 {
        s.push(char::from(b'a' + (i % 26) as u8));
    }
    assert_eq!(s.len(), 200_000);
    assert!(
        s.bytes()
            .enumerate()
            .all(|(i, b)| b == b'a' + (i % 26) as u8)
    );
}
