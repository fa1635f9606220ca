//! The slot array: one zeroed allocation of atomic words, made once and never resized.
//!
//! Large tables are aligned to 2 MiB and, on Linux, advised to use transparent huge pages before they are
//! touched: random probes over hundreds of megabytes would otherwise miss the TLB on nearly every access.
//! The whole array is then zeroed, so it is committed at creation (bounded memory, and no page faults on
//! the packet path).

#[cfg(not(loom))]
use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
#[cfg(not(loom))]
use std::ptr::NonNull;

use super::sync::AtomicU64;

/// Huge-page size the allocation is aligned to when it is at least this large.
#[cfg(not(loom))]
const HUGE: usize = 2 << 20;

/// `len` atomic words, all zero at creation.
#[cfg(not(loom))]
pub(crate) struct Words {
    ptr: NonNull<AtomicU64>,
    len: usize,
    layout: Layout,
}

// SAFETY: `Words` owns its allocation exclusively (like a `Box<[AtomicU64]>`), and `AtomicU64` is `Send`
// and `Sync`.
#[cfg(not(loom))]
unsafe impl Send for Words {}
// SAFETY: as above: shared access only hands out `&[AtomicU64]`, which is `Sync`.
#[cfg(not(loom))]
unsafe impl Sync for Words {}

#[cfg(not(loom))]
impl Words {
    /// Allocates `len` zeroed words.
    ///
    /// # Panics
    /// If the size overflows; aborts if the allocation fails.
    pub(crate) fn zeroed(len: usize) -> Self {
        let bytes = len.checked_mul(8).expect("table size overflows").max(8);
        let align = if bytes >= HUGE {
            HUGE
        } else {
            align_of::<AtomicU64>()
        };
        let layout = Layout::from_size_align(bytes, align).expect("table size overflows");
        // Not `alloc_zeroed`: for this alignment it zeroes (touches) the pages before we can advise them.
        // SAFETY: `layout` has a non-zero size (at least 8 bytes).
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw.cast::<AtomicU64>()) else {
            handle_alloc_error(layout)
        };
        #[cfg(target_os = "linux")]
        if align == HUGE {
            // SAFETY: the range is exactly our allocation, 2 MiB aligned; MADV_HUGEPAGE only changes how the
            // kernel backs it and cannot invalidate memory. Failure (e.g. THP disabled) is harmless.
            unsafe { libc::madvise(raw.cast(), bytes, libc::MADV_HUGEPAGE) };
        }
        // Zero (and so commit) every page now, after the advice.
        // SAFETY: `raw` is a fresh allocation of `bytes` bytes, valid for writes.
        unsafe { std::ptr::write_bytes(raw, 0, bytes) };
        Self { ptr, len, layout }
    }
}

#[cfg(not(loom))]
impl std::ops::Deref for Words {
    type Target = [AtomicU64];

    fn deref(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` points to an allocation of `len` words (the layout holds at least `len * 8` bytes,
        // suitably aligned), zero-initialised, and an all-zero `AtomicU64` is a valid value (0); it lives
        // until `drop`, and only shared references are ever handed out.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(not(loom))]
impl Drop for Words {
    fn drop(&mut self) {
        // SAFETY: allocated by `alloc_zeroed` with exactly this layout, and freed only here.
        unsafe { dealloc(self.ptr.as_ptr().cast(), self.layout) };
    }
}

/// Under loom, atomics carry model state and must be constructed: a plain boxed slice.
#[cfg(loom)]
pub(crate) struct Words(Box<[AtomicU64]>);

#[cfg(loom)]
impl Words {
    pub(crate) fn zeroed(len: usize) -> Self {
        Self((0..len).map(|_| AtomicU64::new(0)).collect())
    }
}

#[cfg(loom)]
impl std::ops::Deref for Words {
    type Target = [AtomicU64];

    fn deref(&self) -> &[AtomicU64] {
        &self.0
    }
}
