//! The atomics the table is built on: `std`'s, or `loom`'s when compiled with `--cfg loom` so that the
//! slot protocol can be model-checked (`tests/conntrack_loom.rs`).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

/// Waits a little before retrying a slot another thread holds; `spins` counts the calls for one wait.
///
/// Spins on the CPU first (lock holders keep a slot for a few nanoseconds), then yields the thread so that a
/// preempted holder can run. Under loom every wait is a yield, which is how loom learns that the thread
/// cannot make progress on its own.
#[inline]
pub(crate) fn backoff(spins: &mut u32) {
    #[cfg(loom)]
    {
        *spins = spins.wrapping_add(1);
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    {
        *spins = spins.saturating_add(1);
        if *spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// An atomic alone on its cache lines (128 bytes: adjacent-line prefetchers pair lines), so that the
/// live count and the sweep cursor do not share a line with each other or with the slots.
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);
