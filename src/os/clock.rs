//! A cheap millisecond clock for purge timing (CLOCK_MONOTONIC_COARSE, read
//! through the vDSO: no system call).

/// Milliseconds since an arbitrary start, monotonic.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Sleeps for about `ms` milliseconds (nanosleep: no allocation, no lock).
pub fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec; a null remainder is allowed (an
    // interrupted sleep just ends early).
    unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) };
}
