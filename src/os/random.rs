//! Process secrets for free-list encoding and block tags, without system
//! calls that could block or allocate: the kernel's AT_RANDOM bytes mixed
//! with the time stamp counter and addresses (ASLR).

/// SplitMix64 step: a good 64-bit mixer.
pub const fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Returns 64 bits of entropy for seeding; different in every process.
pub fn seed() -> u64 {
    let mut s = 0u64;
    // SAFETY: getauxval has no preconditions; AT_RANDOM, when present, points
    // to 16 random bytes placed by the kernel on the initial stack.
    let at_random = unsafe { libc::getauxval(libc::AT_RANDOM) } as *const u64;
    if !at_random.is_null() {
        // SAFETY: the 16 bytes at AT_RANDOM stay valid for the process's life.
        s ^= unsafe {
            at_random.read_unaligned() ^ at_random.add(1).read_unaligned().rotate_left(32)
        };
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    s ^= mix64(ts.tv_sec as u64 ^ ((ts.tv_nsec as u64) << 20));
    let stack_probe = 0u8;
    s ^= mix64(&stack_probe as *const u8 as u64);
    s ^= mix64(seed as fn() -> u64 as usize as u64);
    // SAFETY: getpid has no preconditions.
    s ^= mix64(unsafe { libc::getpid() } as u64);
    mix64(s)
}

/// A small, fast pseudo-random generator (xorshift64*), for randomised slot
/// order in secure mode. Not for cryptographic use.
#[derive(Clone, Copy)]
pub struct Rng(u64);

impl Rng {
    pub const fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x2545_f491_4f6c_dd1d
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        ((self.next_u64() >> 32) as usize * bound) >> 32
    }
}
