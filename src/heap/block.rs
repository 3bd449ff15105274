//! A free block's two words, and the per-process secrets that protect them.
//!
//! Word 0 links the block into a free list; the link is encoded with secret
//! keys, so a use-after-free write cannot forge a pointer and a smashed link
//! decodes to an address outside its page, which `Page::pop` detects.
//! Word 1 holds a tag (the block's address mixed with a third secret) while
//! the block is free and 0 while it is allocated: a free that finds the tag
//! already there is a double free. Blocks are at least 16 bytes, so both
//! words always fit.

use core::cell::UnsafeCell;

use crate::config::CHECKS;
use crate::sync::peek;
use core::sync::atomic::{AtomicUsize, Ordering};

#[repr(C)]
pub struct Block {
    /// Encoded address of the next free block (see `encode`).
    pub link: usize,
    /// `tag_of(self)` while free; 0 once handed out.
    pub tag: AtomicUsize,
}

/// The secrets, written once during initialisation (before any block is
/// carved and before `init` publishes readiness with a release store), then
/// only read: plain loads, so the compiler can keep them in registers.
struct Keys {
    link: usize,
    tag: usize,
    run: usize,
}

struct KeyCell(UnsafeCell<Keys>);
// SAFETY: written only by `init_keys`, which runs once, before any reader
// (see `Keys`); read-only afterwards.
unsafe impl Sync for KeyCell {}

static KEYS: KeyCell = KeyCell(UnsafeCell::new(Keys {
    link: 0x5a5a_5a5a_a5a5_a5a5,
    tag: 0x7c3a_91d2_e84f_b605,
    run: 0x3d1f_06b9_72c4_8ae1,
}));

#[inline(always)]
fn keys() -> &'static Keys {
    // SAFETY: see `KeyCell`: no write can overlap this read.
    unsafe { &*KEYS.0.get() }
}

const LINK_ROTATION: u32 = 19;

/// Installs fresh secrets. Must run once, before the first block is carved
/// and before any other thread can allocate.
pub fn init_keys(seed: u64) {
    use crate::os::random::mix64;
    let link = mix64(seed);
    let tag = mix64(link) | 1;
    let run = mix64(tag);
    // SAFETY: called once during single-threaded initialisation (stage one,
    // under the init state machine), before any reader exists.
    unsafe {
        *KEYS.0.get() = Keys {
            link: link as usize,
            tag: tag as usize,
            run: run as usize,
        }
    };
}

/// Encodes the address of the next block (0 for the end of a list).
#[inline(always)]
pub fn encode(next: usize) -> usize {
    if !CHECKS {
        return next;
    }
    (next ^ keys().link).rotate_left(LINK_ROTATION)
}

/// Decodes a link written by `encode`.
#[inline(always)]
pub fn decode(link: usize) -> usize {
    if !CHECKS {
        return link;
    }
    link.rotate_right(LINK_ROTATION) ^ keys().link
}

/// The tag a free block at `addr` carries in word 1.
#[inline(always)]
pub fn tag_of(addr: usize) -> usize {
    addr ^ keys().tag
}

/// The mark word 0 of a run's first block carries while the run is live
/// (see `runs`): its address mixed with a secret of its own.
#[inline]
pub fn run_mark(addr: usize) -> usize {
    (addr ^ keys().run).rotate_left(LINK_ROTATION)
}

impl Block {
    /// True when the block carries its free tag (it is free, or a program
    /// wrote the 1-in-2^64 secret value at exactly this place).
    #[inline(always)]
    pub fn is_tagged_free(&self) -> bool {
        let addr = self as *const Block as usize;
        // SAFETY: `tag` is this block's second word, an aligned AtomicUsize.
        CHECKS
            && unsafe {
                peek::word_equals::<{ core::mem::offset_of!(Block, tag) }>(
                    self as *const Block as *const u8,
                    tag_of(addr),
                )
            }
    }

    /// Marks the block free and links it before `next`.
    #[inline(always)]
    pub fn set_free(&mut self, next: *mut Block) {
        self.link = encode(next as usize);
        if CHECKS {
            self.tag
                .store(tag_of(self as *const Block as usize), Ordering::Relaxed);
        }
    }

    /// The next block of its list, decoded (unchecked).
    #[inline(always)]
    pub fn next(&self) -> usize {
        decode(self.link)
    }

    /// Clears the free tag as the block is handed out.
    #[inline(always)]
    pub fn clear_tag(&self) {
        if CHECKS {
            self.tag.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_and_differ_from_plain() {
        for addr in [0usize, 16, 0x7fff_0000_1230, usize::MAX & !15] {
            assert_eq!(decode(encode(addr)), addr);
        }
        assert_ne!(
            encode(0),
            0,
            "the end of a list must not encode as zero memory"
        );
    }
}
