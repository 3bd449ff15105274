//! C++ operator new and delete in every standard form, exported by libcma
//! so C++ programs allocate straight from CMA.
//!
//! The throwing operators are jumps into csrc/new_delete.cpp, whose C++
//! frames carry the failure path (new_handler loop, std::bad_alloc): a C++
//! exception cannot unwind through a Rust frame of a panic=abort crate, and
//! a naked jump leaves no frame. The rest is plain Rust.

use core::ffi::c_void;

use crate::api::entry;
use crate::config::MIN_ALIGN;
use crate::diag::{self, Call};
use crate::heap::{alloc, free};

unsafe extern "C" {
    fn cma_cpp_new(size: usize) -> *mut c_void;
    fn cma_cpp_new_aligned(size: usize, align: usize) -> *mut c_void;
}

/// Exports `$name` as a jump to `$target` (same arguments).
macro_rules! jump {
    ($name:literal, $target:ident) => {
        const _: () = {
            #[unsafe(naked)]
            #[unsafe(export_name = $name)]
            extern "C" fn trampoline() {
        core::arch::naked_asm!("jmp {f}", f = sym $target)
            }
        };
    };
}

// operator new(size_t), new[](size_t): may throw std::bad_alloc.
jump!("_Znwm", cma_cpp_new);
jump!("_Znam", cma_cpp_new);
// operator new(size_t, align_val_t), new[](size_t, align_val_t).
jump!("_ZnwmSt11align_val_t", cma_cpp_new_aligned);
jump!("_ZnamSt11align_val_t", cma_cpp_new_aligned);

/// operator new(size_t, const nothrow_t&), and the array form.
#[unsafe(export_name = "_ZnwmRKSt9nothrow_t")]
pub extern "C" fn new_nothrow(size: usize, _: *const c_void) -> *mut c_void {
    cma_cxx_new(size, 0)
}

#[unsafe(export_name = "_ZnamRKSt9nothrow_t")]
pub extern "C" fn new_array_nothrow(size: usize, _: *const c_void) -> *mut c_void {
    cma_cxx_new(size, 0)
}

/// operator new(size_t, align_val_t, const nothrow_t&), and the array form.
#[unsafe(export_name = "_ZnwmSt11align_val_tRKSt9nothrow_t")]
pub extern "C" fn new_aligned_nothrow(size: usize, align: usize, _: *const c_void) -> *mut c_void {
    cma_cxx_new(size, align)
}

#[unsafe(export_name = "_ZnamSt11align_val_tRKSt9nothrow_t")]
pub extern "C" fn new_array_aligned_nothrow(
    size: usize,
    align: usize,
    _: *const c_void,
) -> *mut c_void {
    cma_cxx_new(size, align)
}

/// A block for operator new: at least `size` bytes aligned to `align` (0:
/// the default), or null. Never throws.
#[unsafe(no_mangle)]
pub extern "C" fn cma_cxx_new(size: usize, align: usize) -> *mut c_void {
    if align <= MIN_ALIGN {
        return alloc::malloc(size, allocate_aligned_16).cast();
    }
    if !align.is_power_of_two() {
        return core::ptr::null_mut();
    }
    alloc::allocate(size, align, false).cast()
}

fn allocate_aligned_16(size: usize) -> *mut u8 {
    alloc::allocate(size, MIN_ALIGN, false)
}

/// Plain operator delete (every unsized form).
///
/// # Safety
/// Any pointer may be passed: misuse ends the process with a diagnostic.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cma_cxx_delete(ptr: *mut c_void) {
    // SAFETY: validated by the heap layer.
    unsafe { free::free(ptr.cast(), Call::OperatorDelete) }
}

macro_rules! delete {
    ($name:literal, $($arg:ident: $ty:ty),*) => {
        const _: () = {
            /// # Safety
            /// Any pointer may be passed: misuse ends the process.
            #[unsafe(export_name = $name)]
            pub unsafe extern "C" fn operator_delete(ptr: *mut c_void, $($arg: $ty),*) {
                $(let _ = $arg;)*
                // SAFETY: validated by the heap layer.
                unsafe { cma_cxx_delete(ptr) }
            }
        };
    };
}

delete!("_ZdlPv",);
delete!("_ZdaPv",);
delete!("_ZdlPvRKSt9nothrow_t", nothrow: *const c_void);
delete!("_ZdaPvRKSt9nothrow_t", nothrow: *const c_void);
delete!("_ZdlPvSt11align_val_t", align: usize);
delete!("_ZdaPvSt11align_val_t", align: usize);
delete!("_ZdlPvSt11align_val_tRKSt9nothrow_t", align: usize, nothrow: *const c_void);
delete!("_ZdaPvSt11align_val_tRKSt9nothrow_t", align: usize, nothrow: *const c_void);

/// Sized operator delete: a size the block was not allocated with is
/// diagnosed.
///
/// # Safety
/// Any pointer may be passed: misuse ends the process with a diagnostic.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cma_cxx_delete_sized(ptr: *mut c_void, size: usize, align: usize) {
    // SAFETY: validated by the entry layer.
    unsafe { entry::free_sized_or_die(ptr, size, align.max(MIN_ALIGN), Call::OperatorDelete) }
}

macro_rules! delete_sized {
    ($name:literal, $aligned:literal) => {
        const _: () = {
            /// # Safety
            /// Any pointer may be passed: misuse ends the process.
            #[unsafe(export_name = $name)]
            pub unsafe extern "C" fn operator_delete_sized(
                ptr: *mut c_void,
                size: usize,
                align: usize,
            ) {
                let align = if $aligned { align } else { 0 };
                // SAFETY: validated by the entry layer.
                unsafe { cma_cxx_delete_sized(ptr, size, align) }
            }
        };
    };
}

delete_sized!("_ZdlPvm", false);
delete_sized!("_ZdaPvm", false);
delete_sized!("_ZdlPvmSt11align_val_t", true);
delete_sized!("_ZdaPvmSt11align_val_t", true);

/// Out of memory in a throwing operator new, in a process without a C++
/// runtime to throw std::bad_alloc with.
#[unsafe(no_mangle)]
pub extern "C" fn cma_cxx_no_runtime() -> ! {
    diag::fatal_internal("operator new: out of memory, and no C++ runtime to throw std::bad_alloc")
}
