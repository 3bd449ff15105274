//! Recently freed large and huge blocks: a second free of one is reported
//! as a double free, not an invalid pointer, also after its memory went
//! back to the OS or became part of another span (where the page
//! descriptors no longer know it). Small blocks need no such list: a freed
//! small block keeps its free tag.

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

    /// Forgets `ptr`: a block lives there again.
    pub fn forget(&mut self, ptr: usize) {
        for slot in self.slots.iter_mut() {
            if *slot == ptr {
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
