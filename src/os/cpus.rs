//! How many CPUs the process may run on: the CPUs of its affinity mask,
//! read once (a raw system call: nothing is allocated).

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::os::errno::ErrnoGuard;

/// The count once read; 0 before.
static CPUS: AtomicUsize = AtomicUsize::new(0);

/// Assumed when the kernel does not tell (a mask of more than 4096 CPUs).
const UNKNOWN: usize = 64;

/// The number of CPUs in the process's affinity mask (at least 1), read on
/// the first call.
pub fn count() -> usize {
    let cached = CPUS.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    let mut mask = [0u64; 64];
    let _errno = ErrnoGuard::save();
    // SAFETY: the kernel writes at most `size_of_val(&mask)` bytes into
    // `mask`, which lives on this stack frame.
    let written = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            0,
            core::mem::size_of_val(&mask),
            mask.as_mut_ptr(),
        )
    };
    let cpus = if written > 0 {
        let set: u32 = mask.iter().map(|word| word.count_ones()).sum();
        (set as usize).max(1)
    } else {
        UNKNOWN
    };
    CPUS.store(cpus, Ordering::Relaxed);
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count agrees with the affinity mask libc reads (CPU_COUNT).
    #[test]
    fn counts_the_affinity_mask() {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; the call fills it.
        let expected = unsafe {
            let mut set: libc::cpu_set_t = core::mem::zeroed();
            assert_eq!(
                libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut set),
                0
            );
            libc::CPU_COUNT(&set) as usize
        };
        assert_eq!(count(), expected);
        assert_eq!(count(), expected, "cached");
    }
}
