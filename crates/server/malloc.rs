//! glibc's allocator, tuned for a worker that serves request and response bodies. Python allocates with it
//! (Rust code in this binary uses mimalloc: see `main.rs`).
//!
//! By default glibc hands freshly freed memory at the top of a heap back to the kernel (above 128 KiB), and
//! serves allocations of 128 KiB or more with their own mappings. A worker allocates and frees bodies of
//! that size on every request, on several threads, each with its own heap: every request then faults its
//! pages in again (a 100 KB echo spent about a tenth of its time in page faults). Workers keep up to
//! [`TRIM_THRESHOLD`] of free heap and map only allocations above [`MMAP_THRESHOLD`] on their own.
//!
//! Only `rwsgi serve`'s workers do this (the Apache module never changes Apache's allocator), and not when
//! `GLIBC_TUNABLES` is set: the user's own settings win.
//!
//! The server's only unsafe code: two calls of `mallopt`, which nothing safe wraps.
#![allow(unsafe_code)]

/// Free memory a heap keeps instead of returning it to the kernel.
const TRIM_THRESHOLD: i32 = 16 << 20;
/// Allocations above this get a mapping of their own, returned to the kernel when freed.
const MMAP_THRESHOLD: i32 = 1 << 20;

/// Applies the thresholds, unless the user set glibc's tunables. Call before the worker's threads start.
pub(crate) fn tune_for_bodies() {
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    // SAFETY: mallopt only sets allocator parameters; called before the worker starts its threads.
    // Its result says whether the value was accepted; a libc that refuses keeps its defaults, which work.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
