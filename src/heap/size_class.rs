//! Size classes: 16-byte steps up to 128 bytes, then eight classes per
//! doubling (at most 12.5% apart) up to `MEDIUM_MAX`.

use crate::config::{MEDIUM_MAX, MIN_ALIGN, SLICE_SIZE, SMALL_MAX};

/// Number of size classes (block sizes 16 ..= MEDIUM_MAX).
pub const CLASS_COUNT: usize = 80;
/// Entries of a heap's direct table: one per 16 bytes up to `SMALL_MAX`.
pub const DIRECT_SLOTS: usize = SMALL_MAX / MIN_ALIGN + 1;

/// Index into the direct table for a request of `size <= SMALL_MAX` bytes.
#[inline(always)]
#[allow(clippy::manual_div_ceil)] // div_ceil adds an overflow-safe branch the fast path does not need
pub const fn direct_slot(size: usize) -> usize {
    (size + MIN_ALIGN - 1) / MIN_ALIGN
}

/// The class serving each direct slot.
pub static SLOT_CLASS: [u8; DIRECT_SLOTS] = {
    let mut table = [0u8; DIRECT_SLOTS];
    let mut slot = 0;
    while slot < DIRECT_SLOTS {
        table[slot] = class_of(slot * MIN_ALIGN) as u8;
        slot += 1;
    }
    table
};

/// Classes whose blocks a thread keeps for its own reuse when it frees
/// them for another thread (see `remote`): those of the direct table.
pub const FOREIGN_CLASSES: usize = class_of(SMALL_MAX) + 1;

/// The class of a request of `size <= MEDIUM_MAX` bytes (0 maps to class 0).
#[inline]
pub const fn class_of(size: usize) -> usize {
    if size <= 128 {
        if size == 0 { 0 } else { (size - 1) / 16 }
    } else {
        let w = size - 1;
        let bit = (usize::BITS - 1 - w.leading_zeros()) as usize; // floor(log2(w)), ≥ 7
        let sub = (w >> (bit - 3)) & 7;
        8 + (bit - 7) * 8 + sub
    }
}

/// Block size of `class`.
#[inline]
pub const fn block_size_of(class: usize) -> usize {
    if class < 8 {
        (class + 1) * 16
    } else {
        let bit = 7 + (class - 8) / 8;
        let sub = (class - 8) % 8;
        (9 + sub) << (bit - 3)
    }
}

/// Block size of each class, for run-time lookups (one load instead of
/// `block_size_of`'s arithmetic).
static BLOCK_SIZES: [u32; CLASS_COUNT] = {
    let mut table = [0u32; CLASS_COUNT];
    let mut class = 0;
    while class < CLASS_COUNT {
        table[class] = block_size_of(class) as u32;
        class += 1;
    }
    table
};

/// Block size of `class` (< `CLASS_COUNT`), looked up.
#[inline]
pub fn block_size(class: usize) -> usize {
    BLOCK_SIZES[class] as usize
}

/// Slices in a page of `class`: enough for at least eight blocks, rounded up
/// to a power of two.
pub const fn page_slices_of(class: usize) -> usize {
    let bytes = block_size_of(class) * 8;
    let slices = bytes.div_ceil(SLICE_SIZE);
    slices.next_power_of_two()
}

/// The first direct slot served by `class`, and the last.
pub const fn direct_slot_range(class: usize) -> (usize, usize) {
    let lo = if class == 0 {
        0
    } else {
        direct_slot(block_size_of(class - 1)) + 1
    };
    let hi = direct_slot(block_size_of(class));
    (lo, hi)
}

/// The smallest class at or above `class_of(size)` whose block size is a
/// multiple of `align` (so every block of a slice-aligned page is aligned),
/// if one exists within a reasonable distance.
pub fn aligned_class(size: usize, align: usize) -> Option<usize> {
    let size = size.max(align);
    if size > MEDIUM_MAX {
        return None;
    }
    let first = class_of(size);
    let mut class = first;
    while class < CLASS_COUNT && class < first + 16 {
        if block_size_of(class) % align == 0 {
            return Some(class);
        }
        class += 1;
    }
    None
}

const _: () = assert!(block_size_of(CLASS_COUNT - 1) == MEDIUM_MAX);
// A page's live-block count (plus the current page's extra one) fits in
// the low bits of `Page::counts`.
const _: () = {
    let mut class = 0;
    while class < CLASS_COUNT {
        let blocks = page_slices_of(class) * SLICE_SIZE / block_size_of(class);
        assert!(blocks < crate::backend::page::USED_MASK as usize);
        class += 1;
    }
};
const _: () = assert!(class_of(MEDIUM_MAX) == CLASS_COUNT - 1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_gets_the_smallest_fitting_class() {
        for size in 0..=MEDIUM_MAX {
            let class = class_of(size);
            assert!(class < CLASS_COUNT);
            assert!(block_size_of(class) >= size, "size {size}");
            assert_eq!(block_size_of(class) % MIN_ALIGN, 0);
            if class > 0 {
                assert!(
                    block_size_of(class - 1) < size.max(1),
                    "size {size} class {class}"
                );
            }
        }
    }

    #[test]
    fn classes_are_at_most_an_eighth_apart_above_128() {
        for class in 8..CLASS_COUNT {
            let (a, b) = (block_size_of(class - 1), block_size_of(class));
            assert!(b > a && (b - a) * 8 <= b, "{a} -> {b}");
        }
    }

    #[test]
    fn direct_slots_map_to_their_class() {
        for size in 0..=SMALL_MAX {
            let class = class_of(size);
            let (lo, hi) = direct_slot_range(class);
            assert!((lo..=hi).contains(&direct_slot(size)), "size {size}");
        }
    }

    #[test]
    fn slot_classes_match() {
        for size in 0..=SMALL_MAX {
            assert_eq!(
                SLOT_CLASS[direct_slot(size)] as usize,
                class_of(size),
                "size {size}"
            );
        }
    }

    #[test]
    fn pages_hold_at_least_eight_blocks() {
        for class in 0..CLASS_COUNT {
            assert!(page_slices_of(class) * SLICE_SIZE / block_size_of(class) >= 8);
        }
    }

    #[test]
    fn aligned_classes_are_multiples() {
        for align in [32, 64, 128, 256, 512, 1024, 4096] {
            for size in [1, 17, 100, 1000, 5000, 60000] {
                if let Some(class) = aligned_class(size, align) {
                    assert_eq!(block_size_of(class) % align, 0);
                    assert!(block_size_of(class) >= size);
                }
            }
        }
    }
}
