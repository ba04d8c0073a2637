//! A bound on every single allocation while a target's body runs:
//! `ALLOCATION_BYTES_BASE` plus `ALLOCATION_FACTOR` times the input's length.
//!
//! A decoder that believes a length field before the bytes behind it have
//! arrived allocates what the field claims: gigabytes from a few bytes.
//! libFuzzer's own `-malloc_limit_mb` cannot see that without a sanitizer
//! (it needs the sanitizer's malloc hooks), and an untouched allocation does
//! not show in the RSS either. So the fuzz targets, and the corpus replay
//! under `cargo test`, install [`Bounded`] as their global allocator: an
//! allocation over the bound fails, and Rust aborts the process with
//! "memory allocation of N bytes failed", which libFuzzer reports as a crash
//! with its input.
//!
//! Legitimate allocations stay far below the bound: the decoders hold at
//! most a few times the input, and the fixed costs (a tokio runtime, the
//! NBD server's buffers and in-memory exports) fit in the base.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;

/// What any input may allocate at once.
pub const ALLOCATION_BYTES_BASE: usize = 1 << 20;
/// And per byte of input.
pub const ALLOCATION_FACTOR: usize = 16;

thread_local! {
    /// The bound on this thread; `usize::MAX` outside a body.
    static LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// What is running, named in the message when an allocation is refused.
    static INPUT: Cell<&'static str> = const { Cell::new("") };
}

/// Names the input about to run on this thread, for the message printed
/// when the bound refuses an allocation (the process aborts right after,
/// so the corpus replay cannot say which file it was reading otherwise).
pub fn name_input(name: &'static str) {
    INPUT.set(name);
}

/// The system allocator, refusing allocations over the bound of the body
/// running on the calling thread.
pub struct Bounded;

fn allowed(size: usize) -> bool {
    let limit = LIMIT.try_with(Cell::get).unwrap_or(usize::MAX);
    if size <= limit {
        return true;
    }
    // Formatted straight into unbuffered stderr: nothing is allocated.
    let input = INPUT.try_with(Cell::get).unwrap_or("");
    let _ = writeln!(
        std::io::stderr(),
        "ferrite-fuzzing: refused an allocation of {size} bytes, over the bound of {limit} \
         for this input {input}"
    );
    false
}

// SAFETY: every call is forwarded unchanged to `System`, or refused with a
// null pointer, which `GlobalAlloc` allows for any request.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !allowed(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !allowed(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !allowed(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` was allocated by `System` (through this allocator).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Bounds allocations on this thread, for an input of `input_len` bytes,
/// until the returned guard is dropped.
pub(crate) fn bound(input_len: usize) -> Bound {
    let limit = input_len
        .saturating_mul(ALLOCATION_FACTOR)
        .saturating_add(ALLOCATION_BYTES_BASE);
    Bound {
        previous: LIMIT.replace(limit),
    }
}

pub(crate) struct Bound {
    previous: usize,
}

impl Drop for Bound {
    fn drop(&mut self) {
        LIMIT.set(self.previous);
    }
}
