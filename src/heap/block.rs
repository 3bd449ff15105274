//! A free block's two words, and the per-process secrets that protect them.
//!
//! Word 0 links the block into a free list; the link is encoded with secret
//! keys, so a use-after-free write cannot forge a pointer and a smashed link
//! decodes to an address outside its page, which `Page::pop` detects.
//! Word 1 holds a tag (the block's address mixed with a third secret) while
//! the block is free and 0 while it is allocated: a free that finds the tag
//! already there is a double free. Blocks are at least 16 bytes, so both
//! words always fit.

use core::sync::atomic::{AtomicUsize, Ordering};

#[repr(C)]
pub struct Block {
    /// Encoded address of the next free block (see `encode`).
    pub link: usize,
    /// `tag_of(self)` while free; 0 once handed out.
    pub tag: AtomicUsize,
}

/// The secrets, set once at initialisation before any block exists.
struct Keys {
    link_xor: AtomicUsize,
    link_add: AtomicUsize,
    tag: AtomicUsize,
}

static KEYS: Keys = Keys {
    link_xor: AtomicUsize::new(0x5a5a_5a5a_a5a5_a5a5),
    link_add: AtomicUsize::new(0x0f1e_2d3c_4b5a_6978),
    tag: AtomicUsize::new(0x7c3a_91d2_e84f_b605),
};

const LINK_ROTATION: u32 = 19;

/// Installs fresh secrets. Must run before the first block is carved.
pub fn init_keys(seed: u64) {
    use crate::os::random::mix64;
    let a = mix64(seed);
    let b = mix64(a);
    let c = mix64(b) | 1;
    KEYS.link_xor.store(a as usize, Ordering::Relaxed);
    KEYS.link_add.store(b as usize, Ordering::Relaxed);
    KEYS.tag.store(c as usize, Ordering::Relaxed);
}

/// Encodes the address of the next block (0 for the end of a list).
#[inline(always)]
pub fn encode(next: usize) -> usize {
    (next ^ KEYS.link_xor.load(Ordering::Relaxed))
        .rotate_left(LINK_ROTATION)
        .wrapping_add(KEYS.link_add.load(Ordering::Relaxed))
}

/// Decodes a link written by `encode`.
#[inline(always)]
pub fn decode(link: usize) -> usize {
    link.wrapping_sub(KEYS.link_add.load(Ordering::Relaxed))
        .rotate_right(LINK_ROTATION)
        ^ KEYS.link_xor.load(Ordering::Relaxed)
}

/// The tag a free block at `addr` carries in word 1.
#[inline(always)]
pub fn tag_of(addr: usize) -> usize {
    addr ^ KEYS.tag.load(Ordering::Relaxed)
}

impl Block {
    /// True when the block carries its free tag (it is free, or a program
    /// wrote the 1-in-2^64 secret value at exactly this place).
    #[inline(always)]
    pub fn is_tagged_free(&self) -> bool {
        self.tag.load(Ordering::Relaxed) == tag_of(self as *const Block as usize)
    }

    /// Marks the block free and links it before `next`.
    #[inline(always)]
    pub fn set_free(&mut self, next: *mut Block) {
        self.link = encode(next as usize);
        self.tag
            .store(tag_of(self as *const Block as usize), Ordering::Relaxed);
    }

    /// The next block of its list, decoded (unchecked).
    #[inline(always)]
    pub fn next(&self) -> usize {
        decode(self.link)
    }

    /// Clears the free tag as the block is handed out.
    #[inline(always)]
    pub fn clear_tag(&self) {
        self.tag.store(0, Ordering::Relaxed);
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
