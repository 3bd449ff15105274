//! Text reports of the statistics, written without allocating: the
//! `CMA_STATS=1` report at exit, glibc's `malloc_stats` and `malloc_info`.
//!
//! The `CMA_STATS` report is one `cma-stats:` line per fact, `key value`
//! pairs, so programs and tests can parse it:
//!
//! ```text
//! cma-stats: allocations 1234 frees 1200 live_blocks 34 live_bytes 5678 peak_bytes 9999 internal_blocks 1
//! cma-stats: mapped_bytes 8388608 peak_mapped_bytes 8388608 segments 2 rss_bytes 3145728
//! cma-stats: lock_acquisitions 40 lock_contended 2 lock_futex_waits 1 lock_longest_queue 1
//! cma-stats: class 3 block_size 64 requests 100 live 7 live_bytes 448 peak_bytes 1024 pages 1 free_blocks 57
//! cma-stats: large requests 2 live 1 live_bytes 262144 peak_bytes 524288
//! cma-stats: huge requests 1 live 0 live_bytes 0 peak_bytes 10485760
//! ```
//!
//! Class rows appear for classes that were used; `pages` are the pages of
//! the class and `free_blocks` the blocks carved in them that are not
//! handed out (memory the class holds but does not use). Per-class live counts
//! include blocks freed by another thread but not yet collected by their
//! owner; the totals line does not. The rows also count the blocks libc
//! allocated on CMA's behalf (`internal_blocks`), which the totals leave
//! out.

use core::sync::atomic::{AtomicI32, Ordering};

use crate::backend;
use crate::heap::size_class::CLASS_COUNT;
use crate::os::stderr::Line;
use crate::stats::{self, HUGE_ROW, LARGE_ROW};

/// Where the `CMA_STATS` report goes: stderr, or a duplicate of it made at
/// start (`keep_stderr_for_report`).
static REPORT_FD: AtomicI32 = AtomicI32::new(2);

/// Keeps a duplicate of stderr for the report at exit: programs may close
/// fd 2 in their own exit handlers (GNU coreutils' `close_stdout` does),
/// which run before CMA's. Close-on-exec; only with `CMA_STATS=1`.
pub fn keep_stderr_for_report() {
    // SAFETY: fcntl on a descriptor number; failure leaves fd 2 in use.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    if fd >= 0 {
        REPORT_FD.store(fd, Ordering::Relaxed);
    }
}

/// Writes the `CMA_STATS` report to stderr.
pub fn write_stats_report() {
    let d = stats::read_detail();
    let snapshot = stats::read();
    let lock = backend::CORE.stats();
    emit_report(|line| {
        line.str("cma-stats: allocations")
            .num(snapshot.allocs)
            .str(" frees")
            .num(snapshot.frees)
            .str(" live_blocks")
            .num(d.live_blocks.max(0) as u64)
            .str(" live_bytes")
            .num(snapshot.current_bytes)
            .str(" peak_bytes")
            .num(snapshot.peak_bytes)
            .str(" internal_blocks")
            .num(d.internal_blocks);
    });
    emit_report(|line| {
        line.str("cma-stats: mapped_bytes")
            .num(d.mapped_bytes)
            .str(" peak_mapped_bytes")
            .num(stats::peak_mapped().max(d.mapped_bytes))
            .str(" segments")
            .num(d.segments)
            .str(" dirty_bytes")
            .num(d.dirty_bytes)
            .str(" rss_bytes")
            .num(rss_bytes());
    });
    emit_report(|line| {
        line.str("cma-stats: lock_acquisitions")
            .num(lock.acquisitions)
            .str(" lock_contended")
            .num(lock.contended)
            .str(" lock_futex_waits")
            .num(lock.futex_waits)
            .str(" lock_longest_queue")
            .num(lock.max_queue as u64);
    });
    for (index, row) in d.rows.iter().enumerate() {
        if row.requests == 0 && row.live == 0 {
            continue;
        }
        emit_report(|line| {
            line.str("cma-stats: ");
            match index {
                LARGE_ROW => line.str("large"),
                HUGE_ROW => line.str("huge"),
                _ => line
                    .str("class")
                    .num(index as u64)
                    .str(" block_size")
                    .num(stats::row_block_size(index) as u64),
            };
            line.str(" requests")
                .num(row.requests)
                .str(" live")
                .num(row.live.max(0) as u64)
                .str(" live_bytes")
                .num(row.live_bytes.max(0) as u64)
                .str(" peak_bytes")
                .num(stats::peak_of_row(index));
            if index < CLASS_COUNT {
                // How well the class's pages are used: carved blocks not
                // handed out stay resident (fragmentation).
                line.str(" pages")
                    .num(row.pages)
                    .str(" free_blocks")
                    .num(row.free.max(0) as u64);
            }
        });
    }
}

/// glibc's `malloc_stats`: a short summary on stderr, in glibc's layout.
pub fn write_malloc_stats() {
    let d = stats::read_detail();
    let huge = &d.rows[HUGE_ROW];
    let in_use = (d.live_bytes - huge.live_bytes).max(0) as u64;
    let system = d.mapped_bytes - huge.live_bytes.max(0) as u64;
    emit(|line| {
        line.str("Arena 0:");
    });
    emit(|line| {
        line.str("system bytes     =").num(system);
    });
    emit(|line| {
        line.str("in use bytes     =").num(in_use);
    });
    emit(|line| {
        line.str("Total (incl. mmap):");
    });
    emit(|line| {
        line.str("system bytes     =").num(d.mapped_bytes);
    });
    emit(|line| {
        line.str("in use bytes     =")
            .num(d.live_bytes.max(0) as u64);
    });
    emit(|line| {
        line.str("max mmap regions =").num(huge.live.max(0) as u64);
    });
    emit(|line| {
        line.str("max mmap bytes   =")
            .num(stats::peak_of_row(HUGE_ROW));
    });
}

/// glibc's `malloc_info(0, stream)`: the XML document glibc writes, with
/// one heap and CMA's free blocks per size class in `<sizes>`.
pub fn write_malloc_info(stream: *mut libc::FILE) {
    let d = stats::read_detail();
    let huge = &d.rows[HUGE_ROW];
    let mut free_count = 0u64;
    let mut free_bytes = 0u64;
    let out = |line: &Line| {
        // SAFETY: `line` is NUL-terminated by `nul_terminated`; the caller passes a
        // valid stream.
        unsafe { libc::fputs(line.as_c_str().as_ptr(), stream) };
    };
    out(Line::new()
        .str("<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n")
        .nul_terminated());
    for (index, row) in d.rows.iter().enumerate().take(CLASS_COUNT) {
        if row.free <= 0 {
            continue;
        }
        let size = stats::row_block_size(index) as u64;
        let from = if index == 0 {
            1
        } else {
            stats::row_block_size(index - 1) as u64 + 1
        };
        free_count += row.free as u64;
        free_bytes += row.free as u64 * size;
        out(Line::new()
            .str("  <size from=\"")
            .dec(from)
            .str("\" to=\"")
            .dec(size)
            .str("\" total=\"")
            .dec(row.free as u64 * size)
            .str("\" count=\"")
            .dec(row.free as u64)
            .str("\"/>\n")
            .nul_terminated());
    }
    out(Line::new()
        .str("</sizes>\n<total type=\"fast\" count=\"0\" size=\"0\"/>\n")
        .nul_terminated());
    let system = d.mapped_bytes - huge.live_bytes.max(0) as u64;
    let totals = |line: &mut Line, count: u64, bytes: u64| {
        line.str("<total type=\"rest\" count=\"")
            .dec(count)
            .str("\" size=\"")
            .dec(bytes)
            .str("\"/>\n");
    };
    let systems = |line: &mut Line, current: u64, max: u64| {
        line.str("<system type=\"current\" size=\"")
            .dec(current)
            .str("\"/>\n<system type=\"max\" size=\"")
            .dec(max)
            .str("\"/>\n<aspace type=\"total\" size=\"")
            .dec(current)
            .str("\"/>\n<aspace type=\"mprotect\" size=\"")
            .dec(current)
            .str("\"/>\n");
    };
    let mut line = Line::new();
    totals(&mut line, free_count, free_bytes);
    systems(&mut line, system, stats::peak_mapped().max(system));
    line.str("</heap>\n<total type=\"fast\" count=\"0\" size=\"0\"/>\n");
    totals(&mut line, free_count, free_bytes);
    line.str("<total type=\"mmap\" count=\"")
        .dec(huge.live.max(0) as u64)
        .str("\" size=\"")
        .dec(huge.live_bytes.max(0) as u64)
        .str("\"/>\n");
    systems(
        &mut line,
        d.mapped_bytes,
        stats::peak_mapped().max(d.mapped_bytes),
    );
    line.str("</malloc>\n");
    out(line.nul_terminated());
}

/// The process's resident set size, from /proc/self/statm (0 if unreadable).
fn rss_bytes() -> u64 {
    let mut buf = [0u8; 128];
    // SAFETY: a NUL-terminated path; `buf` is a valid buffer of its length;
    // the descriptor is closed before returning.
    let read = unsafe {
        let fd = libc::open(
            c"/proc/self/statm".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return 0;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    if read <= 0 {
        return 0;
    }
    // "size resident shared ...": the second field, in pages.
    let text = &buf[..read as usize];
    let mut fields = text.split(|&b| b == b' ');
    let resident = fields
        .nth(1)
        .and_then(crate::os::env::parse_size)
        .unwrap_or(0);
    (resident * crate::config::OS_PAGE_SIZE) as u64
}

/// Builds one line of the `CMA_STATS` report with `fill` and writes it.
fn emit_report(fill: impl FnOnce(&mut Line)) {
    let mut line = Line::new();
    fill(&mut line);
    line.str("\n");
    crate::os::stderr::write_all(REPORT_FD.load(Ordering::Relaxed), line.as_bytes());
}

/// Builds one line with `fill` and writes it to stderr with a newline.
fn emit(fill: impl FnOnce(&mut Line)) {
    let mut line = Line::new();
    fill(&mut line);
    line.str("\n");
    line.write_to_stderr();
}
