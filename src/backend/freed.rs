//! Recently freed large and huge blocks: a second free of one is reported
//! as a double free, not an invalid pointer, also after its memory went
//! back to the OS or became part of another span (where the page
//! descriptors no longer know it), until a large or huge block covers the
//! address again. Small blocks need no such list: a freed small block
//! keeps its free tag.

use crate::diag::HeapError;

/// The addresses of the last large and huge blocks freed.
pub struct FreedBlocks {
    slots: [usize; 64],
    next: usize,
}

impl FreedBlocks {
    pub const fn new() -> FreedBlocks {
        FreedBlocks {
            slots: [0; 64],
            next: 0,
        }
    }

    /// Remembers a block just freed (forgetting the oldest).
    pub fn record(&mut self, ptr: usize) {
        self.slots[self.next % self.slots.len()] = ptr;
        self.next = self.next.wrapping_add(1);
    }

    /// Forgets the addresses in `start..end`: a live block covers them
    /// now, and a pointer there is its interior (an invalid pointer), or its
    /// start.
    pub fn forget_range(&mut self, start: usize, end: usize) {
        for slot in self.slots.iter_mut() {
            if (start..end).contains(slot) {
                *slot = 0;
            }
        }
    }

    pub fn contains(&self, ptr: usize) -> bool {
        ptr != 0 && self.slots.contains(&ptr)
    }

    /// Classifies a pointer that failed validation.
    pub fn error_for(&self, ptr: usize, error: HeapError) -> HeapError {
        if error == HeapError::InvalidPointer && self.contains(ptr) {
            HeapError::DoubleFree
        } else {
            error
        }
    }
}

impl Default for FreedBlocks {
    fn default() -> FreedBlocks {
        FreedBlocks::new()
    }
}
