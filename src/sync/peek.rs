//! Relaxed loads compared in place.
//!
//! LLVM never folds an atomic load into a comparison: `x.load(Relaxed) == v`
//! becomes a load into a register and a compare. On x86_64 an aligned
//! `cmp` with a memory operand reads memory exactly like that `mov` (a
//! relaxed atomic load), in one instruction fewer. The fast paths of malloc
//! and free make a few such comparisons of words other threads may write
//! (the region map, a page's owner, a block's free tag); these helpers do
//! them with inline assembly that compares in memory and branches.
//!
//! Elsewhere the portable relaxed loads are used.

#[cfg(not(target_arch = "x86_64"))]
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// Returns `value`, hiding from the optimiser how it was computed (an empty
/// assembly statement: no instruction), so that a value the fast path
/// needs in a register is not recomputed from its source.
#[inline(always)]
pub fn opaque(mut value: usize) -> usize {
    // SAFETY: the statement is empty: it reads and writes nothing.
    unsafe {
        core::arch::asm!("/* {0} */", inout(reg) value, options(pure, nomem, nostack, preserves_flags))
    };
    value
}

/// True when the word at `base + OFFSET` equals `value` (a relaxed load).
///
/// # Safety
/// `base + OFFSET` is the address of a live, aligned `AtomicUsize`.
#[inline(always)]
pub unsafe fn word_equals<const OFFSET: usize>(base: *const u8, value: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the caller guarantees the address; `cmp` only reads it.
        unsafe {
            core::arch::asm!(
                "cmp qword ptr [{base} + {offset}], {value}",
                "jne {differ}",
                base = in(reg) base,
                value = in(reg) value,
                offset = const OFFSET,
                differ = label { return false; },
                options(nostack, readonly),
            );
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: the caller guarantees the address.
        let word = unsafe { &*(base.add(OFFSET) as *const AtomicUsize) };
        word.load(Ordering::Relaxed) == value
    }
}

/// True when the byte at `base + index` equals `VALUE` (a relaxed load).
///
/// # Safety
/// `base + index` is the address of a live `AtomicU8`.
#[inline(always)]
pub unsafe fn byte_at_equals<const VALUE: u8>(base: *const u8, index: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the caller guarantees the address; `cmp` only reads it.
        unsafe {
            core::arch::asm!(
                "cmp byte ptr [{base} + {index}], {value}",
                "jne {differ}",
                base = in(reg) base,
                index = in(reg) index,
                value = const VALUE,
                differ = label { return false; },
                options(nostack, readonly),
            );
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: the caller guarantees the address.
        let byte = unsafe { &*(base.add(index) as *const AtomicU8) };
        byte.load(Ordering::Relaxed) == VALUE
    }
}
