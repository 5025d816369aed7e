//! The process's memory allocator: mimalloc, with its return of freed memory to the OS delayed.
//!
//! Why: burn-flex's activations and its convolution's per-task scratch are 46–310 MB blocks at
//! 224 px. glibc serves every block above 32 MB (its mmap threshold's ceiling) with a fresh
//! `mmap` and gives it back with `munmap` on free, so each training step faulted in and zeroed
//! gigabytes of new pages: 26 M page faults an epoch, 78 of its 141 CPU seconds in the
//! kernel (BENCHMARKS.md, "flex at 224 px"). mimalloc keeps freed blocks in its arenas for reuse.
//!
//! `DISTILL_ALLOCATOR=system` selects the system allocator instead, for the whole process (the
//! choice is made at the first allocation, before `main`, and never changes, so no block is
//! freed by the allocator that did not make it); `bench-allocator.sh` compares the two with the
//! same binary. mimalloc's own `MIMALLOC_*` variables are honoured; `MIMALLOC_PURGE_DELAY`
//! replaces the delay set here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

use mimalloc::MiMalloc;

/// The environment variable that picks the allocator: `mimalloc` (the default) or `system`.
pub const ENV: &str = "DISTILL_ALLOCATOR";

/// How long mimalloc keeps freed memory before purging it (giving the pages back), in ms.
/// Training frees and asks again for the same big buffers every step, so the delay must outlast
/// a step: mimalloc's own default, 10 ms, and 1 s both fall short of a 224 px step on two cores
/// (≈ 1.3 s for lenet5, more for resnet18), and the purged pages came back as fresh, zeroed huge
/// pages (17 % of the cycles at 1 s). Memory a finished phase leaves (the labelling's decode
/// cache, an evaluation pass) still goes back. Arenas purge after ten times this
/// (`arena_purge_mult`). BENCHMARKS.md, "The process allocator", compares 1 s, 10 s and never.
pub const PURGE_DELAY_MS: i64 = 10_000;

/// mimalloc's option numbers (`mi_option_t` in its mimalloc.h, the same in v2 and v3; the
/// crate names only some of them).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

const UNDECIDED: u8 = 0;
const MIMALLOC: u8 = 1;
const SYSTEM: u8 = 2;

static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// The allocator `main` installs: mimalloc or the system's, as [`ENV`] said at start-up.
pub struct Distill;

#[cold]
fn decide() -> u8 {
    // Inside the allocator nothing may allocate: read the variable with libc's getenv, which
    // does not. The first allocation happens on the main thread before any other thread
    // exists, so the compare-exchange only guards against a surprise.
    // SAFETY: the name is a NUL-terminated literal; the result is only read, before any thread
    // could change the environment.
    let choice = unsafe {
        let v = libc::getenv(c"DISTILL_ALLOCATOR".as_ptr());
        if !v.is_null() && std::ffi::CStr::from_ptr(v).to_bytes() == b"system" {
            SYSTEM
        } else {
            MIMALLOC
        }
    };
    if choice == MIMALLOC {
        // SAFETY: getenv as above; mi_option_set may be called at any time.
        unsafe {
            if libc::getenv(c"MIMALLOC_PURGE_DELAY".as_ptr()).is_null() {
                libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _);
            }
        }
    }
    match CHOICE.compare_exchange(UNDECIDED, choice, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => choice,
        Err(earlier) => earlier,
    }
}

#[inline]
fn choice() -> u8 {
    match CHOICE.load(Ordering::Relaxed) {
        UNDECIDED => decide(),
        c => c,
    }
}

// SAFETY: every call forwards to one of two sound allocators, the same one for the whole
// process (`CHOICE` is set once, before the first block exists).
unsafe impl GlobalAlloc for Distill {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        unsafe {
            if choice() == SYSTEM {
                System.alloc(layout)
            } else {
                MiMalloc.alloc(layout)
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        unsafe {
            if choice() == SYSTEM {
                System.alloc_zeroed(layout)
            } else {
                MiMalloc.alloc_zeroed(layout)
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded to the allocator that made `ptr`.
        unsafe {
            if choice() == SYSTEM {
                System.dealloc(ptr, layout)
            } else {
                MiMalloc.dealloc(ptr, layout)
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded to the allocator that made `ptr`.
        unsafe {
            if choice() == SYSTEM {
                System.realloc(ptr, layout, new_size)
            } else {
                MiMalloc.realloc(ptr, layout, new_size)
            }
        }
    }
}

/// Refuses a [`ENV`] value that names no allocator. The allocator itself cannot complain: it
/// decides before `main`, and anything but `system` means mimalloc.
pub fn check_env() -> Result<(), String> {
    match std::env::var_os(ENV) {
        None => Ok(()),
        Some(v) if v == "mimalloc" || v == "system" => Ok(()),
        Some(v) => Err(format!(
            "{ENV}={v:?} is not an allocator: use mimalloc (the default) or system"
        )),
    }
}

/// What `distill doctor` reports: which allocator runs, and with what purge delay.
pub fn describe() -> String {
    if choice() == SYSTEM {
        return format!("system allocator ({ENV}=system)");
    }
    // SAFETY: plain reads of mimalloc's version and one option.
    let (version, delay) = unsafe {
        (
            libmimalloc_sys::mi_version(),
            libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
        )
    };
    format!(
        "mimalloc {}.{}.{}, purge delay {delay} ms",
        version / 10_000,
        version / 100 % 100,
        version % 100
    )
}
