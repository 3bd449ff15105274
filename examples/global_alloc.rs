//! A multi-threaded Rust program on CMA as its global allocator.
//!
//! Run: `cargo run --release --example global_alloc --no-default-features --features std`

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::thread;

#[global_allocator]
static GLOBAL: cma::Cma = cma::Cma;

fn main() {
    let (tx, rx) = mpsc::channel::<Vec<String>>();
    let workers: Vec<_> = (0..4)
        .map(|id| {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut counts: HashMap<String, usize> = HashMap::new();
                for i in 0..50_000u64 {
                    let key = format!("w{id}-{}", i % 997);
                    *counts.entry(key).or_default() += 1;
                }
                // Hand a batch of strings to the main thread, which frees them.
                let batch: Vec<String> = counts.keys().take(500).cloned().collect();
                tx.send(batch).unwrap();
                counts.values().sum::<usize>()
            })
        })
        .collect();
    drop(tx);
    let mut received = BTreeMap::new();
    for batch in rx {
        for s in batch {
            *received.entry(s.len()).or_insert(0usize) += 1;
        }
    }
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let boxed: Vec<Box<[u8]>> = (0..1000)
        .map(|i| vec![i as u8; i * 37].into_boxed_slice())
        .collect();
    let bytes: usize = boxed.iter().map(|b| b.len()).sum();
    println!(
        "counted {total} keys, received {} strings, {bytes} bytes in boxes",
        received.values().sum::<usize>()
    );
    assert_eq!(total, 200_000);
}
