//! The glibc introspection calls and the CMA_STATS report, checked against
//! what the test allocated. Scenarios that need a fresh process (settings
//! are read at start, the report is written at exit) run this same binary
//! again as a child with `CMA_TEST_SCENARIO` set.

use std::ffi::c_void;
use std::hint::black_box;
use std::process::Command;

use cma as _;

#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

unsafe extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn calloc(count: usize, size: usize) -> *mut c_void;
    fn free(ptr: *mut c_void);
    fn free_sized(ptr: *mut c_void, size: usize);
    fn aligned_alloc(align: usize, size: usize) -> *mut c_void;
    fn malloc_usable_size(ptr: *mut c_void) -> usize;
    fn mallinfo2() -> MallInfo2;
    fn mallopt(param: i32, value: i32) -> i32;
    fn malloc_trim(pad: usize) -> i32;
    fn malloc_info(options: i32, stream: *mut libc::FILE) -> i32;
    fn cma_checked_free(ptr: *mut c_void) -> i32;
    fn cma_checked_block_size(ptr: *const c_void, out: *mut usize) -> i32;
}

const CMA_ERROR_DOUBLE_FREE: i32 = 4;

/// Runs the scenario `name` in a child process with `env` set; returns how
/// it ended, and its stderr.
fn run_scenario(name: &str, env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "scenario", "--nocapture", "--test-threads=1"])
        .env("TEST_SCENARIO", name);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the scenario `name` in a child process with `env` set; returns its
/// stderr (and asserts it succeeded).
fn child(name: &str, env: &[(&str, &str)]) -> String {
    let (status, stderr) = run_scenario(name, env);
    assert!(status.success(), "scenario {name} failed: {stderr}");
    stderr
}

/// Runs the scenario `name` in a child process, which must end by SIGABRT;
/// returns its stderr.
fn child_aborts(name: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    let (status, stderr) = run_scenario(name, &[]);
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "scenario {name}: {stderr}"
    );
    stderr
}

/// The 64 KiB slice `p` lies in: the page of a block of at most 8 KiB.
fn page_of(p: *mut c_void) -> usize {
    p as usize & !0xffff
}

/// `count` blocks of 96 bytes; the first page they fill is full (every block
/// live). Returns them, and the address of that page.
fn fill_a_page(count: usize) -> (Vec<*mut c_void>, usize) {
    let blocks: Vec<*mut c_void> = (0..count).map(|_| touched(96)).collect();
    let page = page_of(blocks[0]);
    (blocks, page)
}

const LIVE_SMALL: usize = 300;
const SMALL_SIZE: usize = 48;

/// A block of `size` bytes, every byte written (so its pages are backed).
/// (black_box: the compiler may drop an allocation it sees unused.)
fn touched(size: usize) -> *mut c_void {
    let p = black_box(unsafe { malloc(size) });
    assert!(!p.is_null());
    unsafe { std::ptr::write_bytes(p.cast::<u8>(), 1, size) };
    p
}

/// Allocates `count` touched blocks of `size` bytes, then frees them all.
fn touch_and_free(count: usize, size: usize) {
    let blocks: Vec<*mut c_void> = (0..count).map(|_| touched(size)).collect();
    for p in blocks {
        unsafe { free(p) };
    }
}

/// The first block of a page of 48 KiB blocks (eight slices), set up on
/// the span a page of 40 KiB blocks has just emptied (all of it touched).
fn page_on_a_backed_span() -> usize {
    let old: Vec<*mut c_void> = (0..8).map(|_| touched(40 * 1024)).collect();
    for p in old {
        unsafe { free(p) };
    }
    black_box(unsafe { malloc(48 * 1024) }) as usize
}

/// OS pages resident in that page's span after its first block.
fn resident_tail(page: usize) -> usize {
    resident_pages(page + 48 * 1024, page + 512 * 1024)
}

/// How many OS pages of `[from, to)` (page-aligned) are resident.
fn resident_pages(from: usize, to: usize) -> usize {
    let mut map = vec![0u8; (to - from) / 4096];
    let rc = unsafe { libc::mincore(from as *mut c_void, to - from, map.as_mut_ptr()) };
    assert_eq!(rc, 0);
    map.iter().filter(|&&m| m & 1 != 0).count()
}

/// The CPUs in this process's affinity mask (what CMA counts).
fn affinity_cpus() -> usize {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    assert_eq!(unsafe { libc::sched_getaffinity(0, size, &mut set) }, 0);
    unsafe { libc::CPU_COUNT(&set) as usize }
}

/// The whole OS pages inside a block of `size` bytes at `block` after the
/// one holding its first words (what a trim gives back of a free block):
/// how many are resident, and how many there are.
fn inner_pages(block: usize, size: usize) -> (usize, usize) {
    let from = (block + 16).next_multiple_of(4096);
    let to = (block + size) / 4096 * 4096;
    (resident_pages(from, to), (to - from) / 4096)
}

/// Entry point of the child processes (does nothing in a normal run).
#[test]
fn scenario() {
    match std::env::var("TEST_SCENARIO").as_deref() {
        Ok("report") => unsafe {
            // Live at exit: LIVE_SMALL blocks of 48 bytes, 2 large, 1 huge.
            for _ in 0..LIVE_SMALL {
                touched(SMALL_SIZE);
            }
            for size in [300_000usize, 400_000, 5 << 20] {
                touched(size);
            }
            // And some churn that is freed again.
            for i in 0..1000 {
                free(black_box(malloc(i * 7 + 1)));
            }
            // Like GNU coreutils' close_stdout: an exit handler, run before
            // CMA's, closes stderr. The report must come out all the same.
            extern "C" fn close_stderr() {
                unsafe { libc::close(2) };
            }
            assert_eq!(libc::atexit(close_stderr), 0);
        },
        Ok("trim") => unsafe {
            // 32 MiB freed (below the size purged at once): trim releases it.
            touch_and_free(128, 256 << 10);
            assert!(mallinfo2().keepcost > 0, "freed memory waits for a purge");
            assert_eq!(malloc_trim(0), 1, "something to release");
            assert_eq!(mallinfo2().keepcost, 0, "nothing left to purge");
            assert_eq!(malloc_trim(0), 0, "nothing left to release");
        },
        Ok("background_purge") => {
            // Each step frees 16 MiB of 256 KiB blocks (enough to start the
            // purge thread), then waits without calling the allocator: only
            // the background thread can give that memory back.
            fn release_16_mib() {
                touch_and_free(64, 256 << 10);
            }
            /// Waits until `done` holds of mallinfo2 (the delay is 50 ms;
            /// a loaded machine gets 100 times that).
            fn wait_until(step: &str, done: impl Fn(&MallInfo2) -> bool) {
                for _ in 0..500 {
                    if done(&unsafe { mallinfo2() }) {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                panic!("{step}: still {:?} after 5 s", unsafe { mallinfo2() });
            }
            fn wait_until_purged(step: &str) {
                wait_until(step, |m| m.keepcost == 0);
            }
            let mapped_before = unsafe { mallinfo2() }.arena;
            release_16_mib();
            wait_until_purged("first release (starts the thread)");
            // The thread now sleeps with nothing due: a release must wake it.
            release_16_mib();
            wait_until_purged("release while the thread sleeps with nothing due");
            // The thread sleeps until the first release is due; the second,
            // 20 ms later, must be purged on its own time too.
            release_16_mib();
            std::thread::sleep(std::time::Duration::from_millis(20));
            release_16_mib();
            wait_until_purged("second release while the thread waits for the first");
            // The segments those blocks emptied are unmapped too (after two
            // delays empty), not only purged: the address space comes back.
            // (One segment more than before may stay: it can hold what libc
            // allocated for the purge thread, started after `mapped_before`.
            // Keeping even the two emptied segments the core used to keep
            // for reuse would be 8 MiB more.)
            const SEGMENT: usize = 4 << 20;
            wait_until("empty segments unmapped", |m| {
                m.arena <= mapped_before + SEGMENT
            });
        }
        Ok("span_cache") => unsafe {
            // Four pages of 120 KiB blocks (1 MiB each, 8 blocks a page),
            // emptied: a thread keeps at most 512 KiB of empty pages for
            // itself; the rest goes back to the core, where a purge (or
            // another size) can use it.
            const BLOCK: usize = 120 << 10;
            let before = mallinfo2().keepcost;
            touch_and_free(32, BLOCK);
            let returned = mallinfo2().keepcost - before;
            assert!(
                returned >= (4 << 20) - (512 << 10),
                "only {returned} bytes of 4 MiB of emptied pages reached the core"
            );
        },
        Ok("large_steps") => unsafe {
            // A 200 KiB buffer grown and shrunk 64 bytes at a time, within
            // the same 64 KiB slices most of the way, contents kept.
            let mut len = 200 << 10;
            let mut p = black_box(malloc(len)).cast::<u8>();
            std::ptr::write_bytes(p, 7, len);
            for step in 0..4000 {
                len = if step < 2000 { len + 64 } else { len - 64 };
                p = libc::realloc(p.cast(), len).cast::<u8>();
                assert!(!p.is_null());
                assert_eq!(*p, 7);
                assert_eq!(*p.add((200 << 10) - 1), 7);
            }
            free(p.cast());
        },
        Ok("dirty_budget") => unsafe {
            // 64 MiB of 256 KiB blocks freed, with no purge delay due and no
            // background thread: the memory left backed stays within the
            // budget (16 MiB when almost nothing is in use), not 64 MiB.
            touch_and_free(256, 256 << 10);
            let waiting = mallinfo2().keepcost;
            assert!(waiting > 0 && waiting <= 16 << 20, "{waiting} bytes wait");
        },
        Ok("dirty_first") => unsafe {
            // A clean free span of 3 slices (X, purged) and a dirty one of 6
            // (Y, just freed), each between live blocks: a 3-slice request
            // takes the dirty one, whose pages need no faults.
            const THREE_SLICES: usize = 150 << 10;
            const SIX_SLICES: usize = 350 << 10;
            let before = touched(THREE_SLICES);
            let x = touched(THREE_SLICES);
            let between = touched(THREE_SLICES);
            let y = touched(SIX_SLICES);
            let after = touched(THREE_SLICES);
            free(x);
            malloc_trim(0);
            free(y);
            let z = black_box(malloc(THREE_SLICES));
            assert_eq!(z, y, "took {z:?}: x (clean) is {x:?}, y (dirty) is {y:?}");
            for p in [before, between, after, z] {
                free(p);
            }
        },
        Ok("calloc_fresh") => unsafe {
            // calloc of blocks carved from a fresh page: they are zero
            // already, so only the OS page holding the link written at
            // carving is backed, not the rest of the block.
            const SIZE: usize = 14000;
            for _ in 0..2 {
                let p = black_box(calloc(1, SIZE)).cast::<u8>();
                assert!(!p.is_null());
                let first_whole_page = (p as usize).next_multiple_of(4096) + 4096;
                let mut resident = [0u8; 1];
                assert_eq!(
                    libc::mincore(first_whole_page as *mut c_void, 4096, resident.as_mut_ptr()),
                    0
                );
                assert_eq!(resident[0] & 1, 0, "calloc touched a fresh block");
                assert!(std::slice::from_raw_parts(p, SIZE).iter().all(|&b| b == 0));
            }
        },
        Ok("calloc_on_a_used_span") => unsafe {
            // Four pages of 4 KiB blocks, every byte written, all freed: the
            // spans of those that are not current go back (to the heap's
            // span cache or the core) and are set up again for 4.5 KiB
            // blocks. calloc must zero
            // them: their memory is not fresh.
            let old: Vec<*mut c_void> = (0..64).map(|_| black_box(malloc(4096))).collect();
            for &p in &old {
                std::ptr::write_bytes(p.cast::<u8>(), 0xab, 4096);
            }
            let (low, high) = (
                old.iter().map(|&p| p as usize).min().unwrap(),
                old.iter().map(|&p| p as usize).max().unwrap() + 4096,
            );
            for &p in &old {
                free(p);
            }
            let mut reused = 0;
            let new: Vec<*mut u8> = (0..28)
                .map(|_| black_box(calloc(1, 4608)).cast::<u8>())
                .collect();
            for &p in &new {
                assert!(!p.is_null());
                assert!(
                    std::slice::from_raw_parts(p, 4608).iter().all(|&b| b == 0),
                    "calloc returned dirty memory"
                );
                reused += usize::from((low..high).contains(&(p as usize)));
            }
            assert!(
                reused > 0,
                "no block came from the freed span: the test proves nothing"
            );
            for p in new {
                free(p.cast());
            }
        },
        Ok("trim_interiors") => unsafe {
            // 64 blocks of 20 KiB, every byte written; all but every eighth
            // freed, so every page still holds live blocks. malloc_trim
            // gives back the OS pages inside the freed blocks (all but the
            // one holding each block's link), and the kept blocks are intact.
            const SIZE: usize = 20 * 1024;
            let blocks: Vec<*mut u8> = (0..64).map(|_| touched(SIZE).cast::<u8>()).collect();
            let resident = |p: *mut u8| inner_pages(p as usize, SIZE).0;
            let freed: Vec<*mut u8> = (0..64).filter(|i| i % 8 != 0).map(|i| blocks[i]).collect();
            for &p in &freed {
                free(p.cast());
            }
            let before: usize = freed.iter().map(|&p| resident(p)).sum();
            assert!(
                before > 100,
                "only {before} OS pages of the freed blocks resident"
            );
            assert_eq!(malloc_trim(0), 1);
            let after: usize = freed.iter().map(|&p| resident(p)).sum();
            assert_eq!(after, 0, "{after} of {before} OS pages still resident");
            for i in (0..64).step_by(8) {
                let kept = std::slice::from_raw_parts(blocks[i], SIZE);
                assert!(kept.iter().all(|&b| b == 1), "a live block changed");
            }
            // The freed blocks serve again, and calloc's are zero.
            let again: Vec<*mut u8> = (0..freed.len())
                .map(|_| touched(SIZE).cast::<u8>())
                .collect();
            let zeroed = black_box(calloc(1, SIZE)).cast::<u8>();
            assert!(
                std::slice::from_raw_parts(zeroed, SIZE)
                    .iter()
                    .all(|&b| b == 0)
            );
            for p in again.into_iter().chain([zeroed]) {
                free(p.cast());
            }
            for i in (0..64).step_by(8) {
                free(blocks[i].cast());
            }
        },
        Ok("orphan_interiors") => unsafe {
            // Six threads each write 32 blocks of 20 KiB, free all but every
            // eighth and exit together: six orphans, four kept warm and two
            // trimmed at exit (cold). Once the (short) purge delay has
            // passed, the purge has given back the inside of the freed
            // blocks of both kinds, and the kept blocks are intact.
            const SIZE: usize = 20 * 1024;
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
            let workers: Vec<_> = (0..6)
                .map(|_| {
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        let blocks: Vec<usize> = (0..32).map(|_| touched(SIZE) as usize).collect();
                        let (kept, freed): (Vec<usize>, Vec<usize>) =
                            (0..32).partition(|i| i % 8 == 0);
                        for &i in &freed {
                            free(blocks[i] as *mut c_void);
                        }
                        barrier.wait();
                        (
                            kept.iter().map(|&i| blocks[i]).collect::<Vec<_>>(),
                            freed.iter().map(|&i| blocks[i]).collect::<Vec<_>>(),
                        )
                    })
                })
                .collect();
            let results: Vec<(Vec<usize>, Vec<usize>)> =
                workers.into_iter().map(|w| w.join().unwrap()).collect();
            let inner = |p: usize| inner_pages(p, SIZE);
            let all_resident = || -> usize {
                results
                    .iter()
                    .flat_map(|(_, freed)| freed.iter())
                    .map(|&p| inner(p).0)
                    .sum()
            };
            match std::env::var("GIVEN_BACK_BY").as_deref() {
                // malloc_trim: every orphan, before it returns.
                Ok("trim") => assert_eq!(malloc_trim(0), 1),
                // No background thread: the first release to the core after
                // the delay runs the purge, and the releasing thread gives
                // the insides back once it left the core lock.
                Ok("release") => {
                    std::thread::sleep(std::time::Duration::from_millis(60));
                    free(touched(1 << 20));
                }
                // Nothing more: the two threads that exited last found four
                // orphans kept warm already; theirs (cold) went back at their
                // exit, the warm ones wait for the purge (not for a long
                // while here).
                Ok("exit") => {
                    let gone = results
                        .iter()
                        .filter(|(_, freed)| freed.iter().all(|&p| inner(p).0 == 0))
                        .count();
                    let kept = results
                        .iter()
                        .filter(|(_, freed)| freed.iter().all(|&p| inner(p).0 == inner(p).1))
                        .count();
                    assert_eq!(
                        (gone, kept),
                        (2, 4),
                        "threads whose freed insides went / stayed"
                    );
                    for (kept, _) in &results {
                        for &p in kept {
                            let bytes = std::slice::from_raw_parts(p as *const u8, SIZE);
                            assert!(bytes.iter().all(|&b| b == 1), "a live block changed");
                        }
                    }
                    return;
                }
                // The purge thread runs once the delay is due: wait for it
                // (up to 3 s on a loaded machine), then name what is left.
                _ => {
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
                    while all_resident() > 0 && std::time::Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                }
            }
            for (thread, (kept, freed)) in results.iter().enumerate() {
                let (resident, pages) = freed
                    .iter()
                    .map(|&p| inner(p))
                    .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                assert_eq!(
                    resident, 0,
                    "thread {thread}: {resident} of {pages} OS pages inside its freed blocks resident"
                );
                for &p in kept {
                    let bytes = std::slice::from_raw_parts(p as *const u8, SIZE);
                    assert!(bytes.iter().all(|&b| b == 1), "a live block changed");
                    free(p as *mut c_void);
                }
            }
        },
        Ok("trim_whole") => unsafe {
            // Blocks of 20 KiB start on OS pages (a page of the class starts
            // on a slice). Every fourth is kept, so each page (eight blocks
            // or more) keeps live ones and stays with the heap; malloc_trim
            // gives every freed one back whole, link and tag included. They
            // are still freed blocks (a second free, from this thread or
            // another, is a double free), and they serve again before any
            // new memory does.
            const SIZE: usize = 20 * 1024;
            let blocks: Vec<*mut u8> = (0..64).map(|_| touched(SIZE).cast::<u8>()).collect();
            let freed: Vec<*mut u8> = (0..64).filter(|i| i % 4 != 0).map(|i| blocks[i]).collect();
            for &p in &freed {
                free(p.cast());
            }
            assert_eq!(malloc_trim(0), 1);
            for &p in &freed {
                let resident = resident_pages(p as usize, p as usize + SIZE);
                assert_eq!(resident, 0, "{resident} OS pages of a freed block resident");
                assert_eq!(cma_checked_free(p.cast()), CMA_ERROR_DOUBLE_FREE);
                let mut size = 0;
                assert_eq!(
                    cma_checked_block_size(p.cast(), &mut size),
                    CMA_ERROR_DOUBLE_FREE
                );
            }
            let other = freed[3] as usize;
            let from_other =
                std::thread::spawn(move || cma_checked_free(other as *mut c_void)).join();
            assert_eq!(from_other.unwrap(), CMA_ERROR_DOUBLE_FREE);
            let again: Vec<*mut u8> = (0..freed.len())
                .map(|_| touched(SIZE).cast::<u8>())
                .collect();
            let reused = again.iter().filter(|p| freed.contains(p)).count();
            assert_eq!(reused, freed.len(), "the given blocks serve again first");
            for i in (0..64).step_by(4) {
                let kept = std::slice::from_raw_parts(blocks[i], SIZE);
                assert!(kept.iter().all(|&b| b == 1), "a live block changed");
            }
            for p in again
                .into_iter()
                .chain((0..64).step_by(4).map(|i| blocks[i]))
            {
                free(p.cast());
            }
        },
        Ok("runs") => unsafe {
            // Nineteen in twenty of 8192 nodes of 64 bytes are freed, so
            // their pages are sparse; 600-byte blocks (of the 640-byte
            // class) are then cut from the freed nodes (runs of ten, sized
            // by the request: 624 bytes usable after a 16-byte header)
            // instead of from new pages. Runs never cover a live node, are
            // counted as one block of 640 bytes, and are freed (from any
            // thread, by realloc, by free_sized) like any other block; a
            // second free is a double free.
            const NODE: usize = 64;
            const NODES: usize = 8192;
            const SIZE: usize = 600;
            const RUNS: usize = 200;
            let nodes: Vec<usize> = (0..NODES)
                .map(|i| {
                    let p = malloc(NODE).cast::<u8>();
                    std::ptr::write_bytes(p, (i % 251) as u8, NODE);
                    p as usize
                })
                .collect();
            let kept: Vec<usize> = (0..NODES).step_by(20).collect();
            // Another thread frees the node after every sixth kept one (64,
            // as many as it keeps) and keeps them for its own reuse
            // (foreign cache): tagged free but on no free list, so no run
            // may cover them.
            let held: Vec<usize> = (0..NODES)
                .filter(|i| i % 120 == 1)
                .take(64)
                .map(|i| nodes[i])
                .collect();
            let (go, wait) = std::sync::mpsc::channel::<()>();
            let holder = std::thread::spawn(move || {
                free(black_box(malloc(100)));
                for &p in &held {
                    free(p as *mut c_void);
                }
                wait.recv().unwrap();
                let again: Vec<usize> = (0..held.len()).map(|_| malloc(NODE) as usize).collect();
                for &p in &again {
                    std::ptr::write_bytes(p as *mut u8, 0x5a, NODE);
                }
                again
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            for (i, &p) in nodes.iter().enumerate() {
                if i % 20 != 0 && !(i % 120 == 1 && i / 120 < 64) {
                    free(p as *mut c_void);
                }
            }
            let mut runs: Vec<usize> = Vec::with_capacity(RUNS);
            let before = mallinfo2().uordblks;
            runs.extend((0..RUNS).map(|_| malloc(SIZE) as usize));
            assert_eq!(mallinfo2().uordblks - before, RUNS * 640);
            for &p in &runs {
                assert_eq!(malloc_usable_size(p as *mut c_void), 624, "not a run");
                let (from, to) = (p - 16, p + 624);
                for &i in &kept {
                    let node = nodes[i];
                    assert!(
                        node + NODE <= from || node >= to,
                        "a run covers a live node"
                    );
                }
                std::ptr::write_bytes(p as *mut u8, 0xa5, 624);
            }
            go.send(()).unwrap();
            let again = holder.join().unwrap();
            for &p in &runs {
                let run = std::slice::from_raw_parts(p as *const u8, 624);
                assert!(run.iter().all(|&b| b == 0xa5), "a run covers a held node");
            }
            for &p in &again {
                free(p as *mut c_void);
            }
            drop(again);
            let with_runs = mallinfo2().uordblks;
            for &i in &kept {
                let node = std::slice::from_raw_parts(nodes[i] as *const u8, NODE);
                assert!(
                    node.iter().all(|&b| b == (i % 251) as u8),
                    "a live node changed"
                );
            }
            // calloc clears a block of the size of its class: its run is
            // cut for the class (eleven blocks, 688 bytes usable), and the
            // class's 640 bytes are zero.
            let cleared = libc::calloc(1, SIZE).cast::<u8>();
            assert_eq!(
                malloc_usable_size(cleared.cast()),
                688,
                "not a class-sized run"
            );
            assert!(
                std::slice::from_raw_parts(cleared, 640)
                    .iter()
                    .all(|&b| b == 0)
            );
            free(cleared.cast());
            // A block start inside a run, or its header, is no block.
            for inside in [runs[5] + 48, runs[5] + 48 + 5 * 64, runs[5] - 16] {
                assert_eq!(cma_checked_free(inside as *mut c_void), 3, "inside a run");
            }
            let grown = libc::realloc(runs[0] as *mut c_void, 2000).cast::<u8>();
            assert!(
                std::slice::from_raw_parts(grown, 624)
                    .iter()
                    .all(|&b| b == 0xa5)
            );
            free(grown.cast());
            assert_eq!(
                cma_checked_free(runs[0] as *mut c_void),
                CMA_ERROR_DOUBLE_FREE
            );
            let other = runs[1];
            std::thread::spawn(move || free(other as *mut c_void))
                .join()
                .unwrap();
            assert_eq!(
                cma_checked_free(runs[1] as *mut c_void),
                CMA_ERROR_DOUBLE_FREE
            );
            let mut size = 0;
            assert_eq!(
                cma_checked_block_size(runs[1] as *const c_void, &mut size),
                CMA_ERROR_DOUBLE_FREE
            );
            free_sized(runs[2] as *mut c_void, SIZE);
            for &p in &runs[3..] {
                free(p as *mut c_void);
            }
            assert_eq!(
                mallinfo2().uordblks,
                with_runs - RUNS * 640,
                "freed runs still counted"
            );
            for &i in &kept {
                free(nodes[i] as *mut c_void);
            }
        },
        Ok("carve_one") => unsafe {
            // The first block of a fresh page of 12 KiB blocks backs its
            // own pages only: the block after it is carved (and its link
            // written, backing its first OS page) when it is asked for.
            let first = black_box(malloc(12288));
            assert!(!first.is_null());
            let next_page = (first as usize + 12288) as *mut c_void;
            let mut resident = [0u8; 1];
            assert_eq!(libc::mincore(next_page, 4096, resident.as_mut_ptr()), 0);
            assert_eq!(resident[0] & 1, 0, "the next block is backed ahead");
            let second = black_box(malloc(12288));
            assert_eq!(second, next_page, "blocks of a page are consecutive");
            assert_eq!(libc::mincore(next_page, 4096, resident.as_mut_ptr()), 0);
            assert_eq!(resident[0] & 1, 1);
            free(second);
            free(first);
        },
        Ok("backed_tail") => unsafe {
            // A page of 48 KiB blocks (eight slices) set up on the span
            // that a page of 40 KiB blocks has just emptied: its tail is
            // resident, though only its first block is carved. Once the
            // tail has waited (a fiftieth of the purge delay) it is given
            // back, the next time the thread asks for a page.
            let page = page_on_a_backed_span();
            let before = resident_tail(page);
            assert!(
                before >= 32,
                "only {before} OS pages of the tail were resident"
            );
            std::thread::sleep(std::time::Duration::from_millis(40));
            let other = touched(20 * 1024);
            assert_eq!(resident_tail(page), 0, "{before} OS pages were resident");
            free(other);
            free(page as *mut c_void);
        },
        Ok("orphan_mail") => unsafe {
            // A worker allocates 8 MB and exits; malloc_trim trims its
            // orphaned heap at once. Then this thread frees the blocks:
            // they go to the orphan's inbox, which no thread will take.
            // The purge takes it and gives the emptied pages back.
            fn resident_bytes() -> usize {
                let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
                let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
                pages * 4096
            }
            let blocks: Vec<usize> =
                std::thread::spawn(|| (0..4000).map(|_| touched(2000) as usize).collect())
                    .join()
                    .unwrap();
            malloc_trim(0);
            let full = resident_bytes();
            for &p in &blocks {
                free(p as *mut c_void);
            }
            for _ in 0..500 {
                if resident_bytes() + (6 << 20) < full {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            panic!(
                "{full} bytes resident with the blocks, {} 5 s after",
                resident_bytes()
            );
        },
        Ok("backed_tail_orphan") => unsafe {
            // The same page set up by a thread that then exits, its block
            // still live: when the orphaned heap is trimmed, the tail goes
            // back with its empty pages.
            let (page, before) = std::thread::spawn(|| {
                let page = page_on_a_backed_span();
                (page, resident_tail(page))
            })
            .join()
            .unwrap();
            assert!(
                before >= 32,
                "only {before} OS pages of the tail were resident"
            );
            std::thread::sleep(std::time::Duration::from_millis(40));
            malloc_trim(0);
            assert_eq!(resident_tail(page), 0, "{before} OS pages were resident");
            free(page as *mut c_void);
        },
        Ok("borrow") => unsafe {
            // 200 freed blocks of 288 bytes wait in their page. Blocks of 256
            // bytes asked for while that class has none free are taken from
            // them (or another class at most three quarters as large again,
            // and below twice the class underneath) instead of new memory;
            // one asked with 256-byte alignment never is (288 would not keep
            // it). A sized free with the size asked for accepts them.
            let idle: Vec<*mut c_void> = (0..200).map(|_| touched(288)).collect();
            for p in idle {
                free(p);
            }
            let wanted: Vec<*mut c_void> = (0..200).map(|_| touched(256)).collect();
            let sizes: Vec<usize> = wanted.iter().map(|&p| malloc_usable_size(p)).collect();
            let borrowed = sizes.iter().filter(|&&size| size > 256).count();
            assert!(borrowed >= 150, "{borrowed} of 200 blocks borrowed");
            let in_range = |size: &usize| (256..=448).contains(size);
            assert!(sizes.iter().all(in_range), "{sizes:?}");
            let aligned = black_box(aligned_alloc(256, 256));
            assert_eq!(aligned as usize % 256, 0);
            assert_eq!(malloc_usable_size(aligned), 256);
            free(aligned);
            for p in wanted {
                free_sized(p, 256);
            }
        },
        Ok("full_page_frees") => unsafe {
            // All but one block of a full page freed (the owner's frees
            // into a page out of its queue): once the current page is full,
            // the next requests are served from it again.
            let (blocks, page) = fill_a_page(1000);
            let on_page: Vec<_> = blocks
                .iter()
                .copied()
                .filter(|&p| page_of(p) == page)
                .collect();
            assert!(on_page.len() > 600, "{}", on_page.len());
            for &p in &on_page[1..] {
                free(p);
            }
            let again: Vec<*mut c_void> = (0..2000).map(|_| touched(96)).collect();
            let reused = again.iter().filter(|&&p| page_of(p) == page).count();
            assert_eq!(reused, on_page.len() - 1);
            let rest = blocks
                .into_iter()
                .filter(|&p| page_of(p) != page || p == on_page[0]);
            for p in again.into_iter().chain(rest) {
                free(p);
            }
        },
        Ok("full_page_interior") => unsafe {
            // A pointer inside a block of a full page: "invalid pointer".
            let (blocks, _) = fill_a_page(1000);
            free(blocks[5].cast::<u8>().add(16).cast());
        },
        Ok("full_page_double_free") => unsafe {
            // Another thread frees a block of a full page (it waits for the
            // owner in the other thread's cache), then the owner frees it
            // again: "double free".
            let (blocks, _) = fill_a_page(1000);
            let block = blocks[5] as usize;
            std::thread::spawn(move || free(block as *mut c_void))
                .join()
                .unwrap();
            free(block as *mut c_void);
        },
        Ok("run_in_full_page") => unsafe {
            // Runs cut from sparse pages of 64-byte nodes, then more nodes
            // asked for: the pages the runs were cut from have no free
            // block left and leave their queue (full). A block start inside
            // a run is still no block: "invalid pointer".
            let nodes: Vec<usize> = (0..8192).map(|_| touched(64) as usize).collect();
            for (i, &p) in nodes.iter().enumerate() {
                if i % 20 != 0 {
                    free(p as *mut c_void);
                }
            }
            let runs: Vec<usize> = (0..200).map(|_| touched(600) as usize).collect();
            assert!(
                runs.iter()
                    .all(|&p| malloc_usable_size(p as *mut c_void) == 624),
                "not runs"
            );
            let more: Vec<usize> = (0..8000).map(|_| touched(64) as usize).collect();
            black_box(&more);
            free((runs[100] + 48) as *mut c_void);
        },
        Ok("borrow_behind") => unsafe {
            // Two pages of 416-byte blocks: the first has 120 idle blocks
            // and waits behind the second, whose blocks are all live.
            // Requests of 352 bytes take the idle ones from behind. (Sizes
            // the test's own vectors never ask for.)
            let blocks: Vec<*mut c_void> = (0..300).map(|_| touched(416)).collect();
            let first = page_of(blocks[0]);
            let (idle, live): (Vec<_>, Vec<_>) = blocks.iter().partition(|&&p| page_of(p) == first);
            assert!(
                idle.len() > 120 && live.len() > 100,
                "{} {}",
                idle.len(),
                live.len()
            );
            for &p in &idle[..120] {
                free(p);
            }
            let wanted: Vec<*mut c_void> = (0..100).map(|_| touched(352)).collect();
            let from_idle = wanted.iter().filter(|&&p| page_of(p) == first).count();
            assert_eq!(from_idle, 100, "blocks borrowed from behind");
            for p in wanted
                .into_iter()
                .chain(idle[120..].iter().copied())
                .chain(live)
            {
                free(p);
            }
        },
        Ok("borrow_foreign") => unsafe {
            // This thread frees 64 blocks of 288 bytes that another thread
            // allocated: they wait in its foreign cache for its own
            // requests of that class. Its requests of 256 bytes, with no
            // block of their own free, take them before new memory.
            free(touched(1));
            let theirs: Vec<usize> =
                std::thread::spawn(|| (0..64).map(|_| touched(288) as usize).collect())
                    .join()
                    .unwrap();
            for &p in &theirs {
                free(p as *mut c_void);
            }
            let mine: Vec<*mut c_void> = (0..64).map(|_| touched(256)).collect();
            let reused = mine
                .iter()
                .filter(|&&p| theirs.contains(&(p as usize)))
                .count();
            assert!(reused >= 48, "{reused} of 64 cached blocks reused");
            for p in mine {
                free_sized(p, 256);
            }
        },
        Ok("burst_exit") => unsafe {
            // More threads than the CPUs plus the four warm orphans, alive
            // at once, each with 32 blocks of 20 KiB written and all but
            // every eighth freed, then ending one at a time. While the
            // other threads' heaps and the warm orphans are more than the
            // CPUs plus four, an ending thread's fresh heap does not wait
            // warm: the inside of its freed blocks goes back at its exit.
            // So the first three to end give theirs back (more heaps are
            // alive than the workers: this thread's, maybe the harness's),
            // four later ones keep theirs warm, one after the other, and
            // those after them give theirs back again.
            //
            // A second burst adopts those heaps. Adopted heaps go cold for
            // crowding at most once in 32 exits, so four of its first five
            // threads to end keep theirs warm.
            const SIZE: usize = 20 * 1024;
            let threads = affinity_cpus() + 8;
            let burst = || {
                let turn = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
                let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads + 1));
                let workers: Vec<_> = (0..threads)
                    .map(|id| {
                        let (turn, barrier) = (turn.clone(), barrier.clone());
                        std::thread::spawn(move || {
                            let blocks: Vec<usize> =
                                (0..32).map(|_| touched(SIZE) as usize).collect();
                            for (i, &p) in blocks.iter().enumerate() {
                                if i % 8 != 0 {
                                    free(p as *mut c_void);
                                }
                            }
                            barrier.wait();
                            while turn.load(std::sync::atomic::Ordering::Acquire) != id {
                                std::thread::yield_now();
                            }
                            blocks
                        })
                    })
                    .collect();
                barrier.wait();
                let mut warm = Vec::new();
                for (id, worker) in workers.into_iter().enumerate() {
                    turn.store(id, std::sync::atomic::Ordering::Release);
                    let blocks = worker.join().unwrap();
                    let freed = || blocks.iter().enumerate().filter(|(i, _)| i % 8 != 0);
                    let (resident, pages) = freed()
                        .map(|(_, &p)| inner_pages(p, SIZE))
                        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                    assert!(
                        resident == 0 || resident == pages,
                        "thread {id}: {resident} of {pages} OS pages inside its freed blocks resident"
                    );
                    if resident == pages {
                        warm.push(id);
                    }
                    for (i, &p) in blocks.iter().enumerate() {
                        if i % 8 == 0 {
                            free(p as *mut c_void);
                        }
                    }
                }
                warm
            };
            let warm = burst();
            assert_eq!(warm.len(), 4, "threads whose heaps waited warm: {warm:?}");
            assert!(warm[0] >= 3, "the first to end kept theirs: {warm:?}");
            assert_eq!(warm[3] - warm[0], 3, "warm ones not in a row: {warm:?}");
            let warm = burst();
            assert_eq!(warm.len(), 4, "second burst, warm: {warm:?}");
            assert!(
                warm[3] <= 4,
                "second burst: adopted heaps went cold: {warm:?}"
            );
        },
        Ok("exit_gives_back") => {
            // Six threads, alive at once, each with one page in each of 40
            // classes, all emptied; then they exit. Four heaps wait, warm,
            // for new threads; the other two give their pages back to the
            // core with their memory already given back to the OS, so
            // (with no purge due) nothing of them waits to be purged.
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
            let threads: Vec<_> = (0..6)
                .map(|_| {
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        for class in 1..=40 {
                            touch_and_free(20, class * 16);
                        }
                        barrier.wait();
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            let waiting = unsafe { mallinfo2() }.keepcost;
            assert!(waiting < 1 << 20, "{waiting} bytes wait for a purge");
        }
        Ok("mallinfo") => unsafe {
            let before = mallinfo2();
            let blocks: Vec<*mut c_void> = (0..2000).map(|_| black_box(malloc(1000))).collect();
            let huge = black_box(malloc(8 << 20));
            let during = mallinfo2();
            assert!(
                during.uordblks >= before.uordblks + 2000 * 1000,
                "{before:?} {during:?}"
            );
            assert!(during.hblks == before.hblks + 1 && during.hblkhd >= before.hblkhd + (8 << 20));
            assert!(during.arena >= during.uordblks);
            for p in blocks {
                free(p);
            }
            free(huge);
            let after = mallinfo2();
            assert!(
                after.uordblks <= before.uordblks + 1000 && after.hblks == before.hblks,
                "{after:?}"
            );
        },
        _ => {}
    }
}

/// `key value` pairs of the report lines that start with `prefix`.
fn fields<'a>(report: &'a str, prefix: &str) -> Vec<Vec<(&'a str, u64)>> {
    report
        .lines()
        .filter_map(|line| line.strip_prefix("cma-stats: "))
        .filter(|line| line.starts_with(prefix))
        .map(|line| {
            // The large and huge rows start with a bare label.
            let line = line
                .strip_prefix("large ")
                .or_else(|| line.strip_prefix("huge "))
                .unwrap_or(line);
            let words: Vec<&str> = line.split_whitespace().collect();
            words
                .chunks(2)
                .filter_map(|pair| Some((pair[0], pair.get(1)?.parse::<u64>().ok()?)))
                .collect()
        })
        .collect()
}

fn get(row: &[(&str, u64)], key: &str) -> u64 {
    row.iter()
        .find(|(k, _)| *k == key)
        .unwrap_or_else(|| panic!("no {key} in {row:?}"))
        .1
}

#[test]
fn stats_report_at_exit_adds_up() {
    let report = child("report", &[("CMA_STATS", "1")]);
    let totals = &fields(&report, "allocations")[0];
    let (allocs, frees, live) = (
        get(totals, "allocations"),
        get(totals, "frees"),
        get(totals, "live_blocks"),
    );
    assert_eq!(allocs, frees + live, "allocations = frees + live\n{report}");
    assert!(live >= LIVE_SMALL as u64 + 3, "{report}");
    assert!(get(totals, "peak_bytes") >= get(totals, "live_bytes"));
    let live_bytes = get(totals, "live_bytes");
    assert!(
        live_bytes >= (LIVE_SMALL * SMALL_SIZE + 700_000 + (5 << 20)) as u64,
        "{report}"
    );

    let mapped = &fields(&report, "mapped_bytes")[0];
    assert!(get(mapped, "mapped_bytes") >= live_bytes);
    assert!(get(mapped, "rss_bytes") > 0);
    let lock = &fields(&report, "lock_acquisitions")[0];
    assert!(get(lock, "lock_acquisitions") > 0);
    assert!(get(lock, "lock_contended") <= get(lock, "lock_acquisitions"));

    let classes = fields(&report, "class");
    let class_48 = classes
        .iter()
        .find(|row| get(row, "block_size") == SMALL_SIZE as u64)
        .expect("48-byte class row");
    assert!(get(class_48, "live") >= LIVE_SMALL as u64, "{report}");
    assert!(get(class_48, "peak_bytes") >= get(class_48, "live_bytes"));
    // Utilization: the blocks carved in the class's pages (live or free)
    // fit in those pages (a 48-byte page is one 64 KiB slice).
    let (pages, carved) = (
        get(class_48, "pages"),
        get(class_48, "live") + get(class_48, "free_blocks"),
    );
    assert!(pages >= 1, "{report}");
    assert!(carved <= pages * (64 << 10) / SMALL_SIZE as u64, "{report}");
    let large = &fields(&report, "large")[0];
    let huge = &fields(&report, "huge")[0];
    assert_eq!(get(large, "live"), 2, "{report}");
    assert_eq!(get(huge, "live"), 1, "{report}");
    // Every allocation is in exactly one row.
    let requests: u64 = classes.iter().map(|row| get(row, "requests")).sum::<u64>()
        + get(large, "requests")
        + get(huge, "requests");
    assert_eq!(
        requests,
        allocs + get(totals, "internal_blocks"),
        "{report}"
    );
}

#[test]
fn settings_are_reported_and_unknown_ones_warned_about() {
    let out = child(
        "none",
        &[
            ("CMA_VERBOSE", "1"),
            ("CMA_PURGE_DELAY_MS", "250"),
            ("CMA_NO_SUCH_SETTING", "1"),
        ],
    );
    assert!(
        out.contains("cma: settings:") && out.contains("CMA_PURGE_DELAY_MS=250"),
        "{out}"
    );
    assert!(out.contains("unknown setting CMA_NO_SUCH_SETTING"), "{out}");
    let out = child("none", &[("CMA_SECURE", "maybe")]);
    assert!(out.contains("CMA_SECURE: expected"), "{out}");
}

#[test]
fn emptied_pages_beyond_a_small_cache_go_back_to_the_core() {
    child(
        "span_cache",
        &[
            ("CMA_BACKGROUND_PURGE", "0"),
            ("CMA_PURGE_DELAY_MS", "600000"),
        ],
    );
}

/// Resizing a large block within its slices needs no lock: 4000 steps
/// took the core lock 4000 times when every one went through the core.
#[test]
fn large_realloc_within_its_slices_skips_the_core_lock() {
    let report = child("large_steps", &[("CMA_STATS", "1")]);
    let lock = &fields(&report, "lock_acquisitions")[0];
    assert!(get(lock, "lock_acquisitions") < 200, "{report}");
}

#[test]
fn freed_memory_kept_backed_stays_within_the_budget() {
    child(
        "dirty_budget",
        &[
            ("CMA_BACKGROUND_PURGE", "0"),
            ("CMA_PURGE_DELAY_MS", "600000"),
        ],
    );
}

#[test]
fn a_dirty_span_is_reused_before_a_clean_one() {
    child("dirty_first", &[("CMA_BACKGROUND_PURGE", "0")]);
}

#[test]
fn blocks_of_4_kib_and_more_are_carved_one_at_a_time() {
    child("carve_one", &[]);
}

#[test]
fn medium_blocks_are_cut_from_the_free_blocks_of_sparse_small_pages() {
    child("runs", &[]);
}

#[test]
fn malloc_trim_gives_back_the_inside_of_free_blocks() {
    child("trim_interiors", &[]);
}

#[test]
fn malloc_trim_gives_back_free_blocks_whole_and_still_catches_double_frees() {
    child("trim_whole", &[]);
}

#[test]
fn the_purge_gives_back_the_inside_of_orphans_free_blocks() {
    child("orphan_interiors", &[("CMA_PURGE_DELAY_MS", "20")]);
}

#[test]
fn malloc_trim_gives_back_the_inside_of_orphans_free_blocks() {
    child(
        "orphan_interiors",
        &[("CMA_BACKGROUND_PURGE", "0"), ("GIVEN_BACK_BY", "trim")],
    );
}

#[test]
fn a_cold_orphan_gives_back_its_free_blocks_insides_at_exit() {
    child(
        "orphan_interiors",
        &[
            ("CMA_BACKGROUND_PURGE", "0"),
            ("CMA_PURGE_DELAY_MS", "100000"),
            ("GIVEN_BACK_BY", "exit"),
        ],
    );
}

#[test]
fn without_the_purge_thread_a_release_gives_back_orphans_block_insides() {
    child(
        "orphan_interiors",
        &[
            ("CMA_BACKGROUND_PURGE", "0"),
            ("CMA_PURGE_DELAY_MS", "20"),
            ("GIVEN_BACK_BY", "release"),
        ],
    );
}

#[test]
fn calloc_does_not_touch_fresh_blocks() {
    child("calloc_fresh", &[]);
}

#[test]
fn calloc_zeroes_blocks_of_a_span_set_up_again() {
    child("calloc_on_a_used_span", &[]);
}

#[test]
fn the_uncarved_tail_of_a_page_on_a_backed_span_is_given_back() {
    child(
        "backed_tail",
        &[("CMA_BACKGROUND_PURGE", "0"), ("CMA_PURGE_DELAY_MS", "500")],
    );
}

#[test]
fn blocks_freed_to_a_trimmed_orphan_are_collected_by_the_purge() {
    child("orphan_mail", &[("CMA_PURGE_DELAY_MS", "20")]);
}

#[test]
fn an_orphan_trimmed_gives_back_its_pages_tails() {
    child(
        "backed_tail_orphan",
        &[("CMA_BACKGROUND_PURGE", "0"), ("CMA_PURGE_DELAY_MS", "500")],
    );
}

#[test]
fn a_class_out_of_blocks_borrows_idle_ones_of_a_slightly_larger_class() {
    child("borrow", &[]);
}

#[test]
fn frees_into_a_full_page_are_checked_and_serve_again() {
    child("full_page_frees", &[]);
    let interior = child_aborts("full_page_interior");
    assert!(interior.contains("free(): invalid pointer"), "{interior}");
    let double = child_aborts("full_page_double_free");
    assert!(double.contains("free(): double free"), "{double}");
}

#[test]
fn a_block_start_inside_a_run_of_a_full_page_is_an_invalid_pointer() {
    let stderr = child_aborts("run_in_full_page");
    assert!(stderr.contains("free(): invalid pointer"), "{stderr}");
}

#[test]
fn a_class_out_of_blocks_borrows_from_a_page_behind_the_current_one() {
    child("borrow_behind", &[]);
}

#[test]
fn a_class_out_of_blocks_borrows_from_the_foreign_cache_of_a_larger_class() {
    child("borrow_foreign", &[]);
}

#[test]
fn threads_beyond_the_cpus_do_not_wait_warm_at_exit() {
    child(
        "burst_exit",
        &[
            ("CMA_BACKGROUND_PURGE", "0"),
            ("CMA_PURGE_DELAY_MS", "100000"),
        ],
    );
}

#[test]
fn exiting_threads_beyond_the_warm_ones_give_their_memory_back() {
    child(
        "exit_gives_back",
        &[
            ("CMA_BACKGROUND_PURGE", "0"),
            ("CMA_PURGE_DELAY_MS", "1000000"),
        ],
    );
}

#[test]
fn mallinfo2_follows_live_memory() {
    child("mallinfo", &[]);
}

#[test]
fn mallopt_answers_like_glibc() {
    assert_eq!(unsafe { mallopt(1, 64) }, 1, "M_MXFAST in range");
    assert_eq!(unsafe { mallopt(1, 100_000) }, 0, "M_MXFAST out of range");
    assert_eq!(unsafe { mallopt(-3, 1 << 20) }, 1, "M_MMAP_THRESHOLD");
    assert_eq!(unsafe { mallopt(-8, 0) }, 0, "M_ARENA_MAX 0");
    assert_eq!(unsafe { mallopt(4242, 1) }, 1, "unknown parameter");
}

#[test]
fn malloc_trim_releases_freed_memory() {
    child("trim", &[("CMA_BACKGROUND_PURGE", "0")]);
}

#[test]
fn background_thread_purges_an_idle_program() {
    child("background_purge", &[("CMA_PURGE_DELAY_MS", "50")]);
}

#[test]
fn malloc_info_writes_glibc_shaped_xml() {
    let keep: Vec<*mut c_void> = (0..100).map(|i| unsafe { malloc(16 + i * 8) }).collect();
    for &p in keep.iter().step_by(2) {
        unsafe { free(p) };
    }
    let mut buf: *mut libc::c_char = std::ptr::null_mut();
    let mut len = 0usize;
    let stream = unsafe { libc::open_memstream(&mut buf, &mut len) };
    assert_eq!(unsafe { malloc_info(0, stream) }, 0);
    unsafe { libc::fclose(stream) };
    let xml = unsafe { std::ffi::CStr::from_ptr(buf) }
        .to_string_lossy()
        .into_owned();
    unsafe { free(buf.cast()) };
    assert!(
        xml.starts_with("<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n"),
        "{xml}"
    );
    assert!(xml.trim_end().ends_with("</malloc>"), "{xml}");
    assert!(
        xml.contains("<size from=") && xml.contains("<total type=\"mmap\""),
        "{xml}"
    );
    assert_eq!(xml.matches("<heap").count(), xml.matches("</heap>").count());
    assert_eq!(unsafe { malloc_info(1, stream) }, -1, "options must be 0");
    for &p in keep.iter().skip(1).step_by(2) {
        unsafe { free(p) };
    }
}
