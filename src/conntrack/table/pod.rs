//! Plain-old-data keys and values, copied into and out of atomic 64-bit words.

use std::mem::{MaybeUninit, size_of};

use super::sync::{AtomicU64, Ordering};

/// A plain-old-data type the table may copy word by word: keys and values.
///
/// The table stores a key or a value as a run of atomic 64-bit words, copies it out while another thread
/// may be writing it, and only turns the copy back into a `T` once the slot's version shows that no write
/// overlapped. Keys are compared and hashed as bytes.
///
/// # Safety
///
/// An implementor must be plain data:
/// - no padding bytes (every byte of every value is initialised: add explicit reserved fields instead);
/// - no pointers, references, or interior mutability, and no `Drop`;
/// - a byte-for-byte copy of a value is a valid value equal to it;
/// - for a key type, two keys are equal exactly when their bytes are equal.
pub unsafe trait Pod: Copy + Send + Sync + 'static {}

// SAFETY: primitive integers have no padding, every bit pattern is a value, and equality is bytewise.
unsafe impl Pod for u8 {}
// SAFETY: as for u8.
unsafe impl Pod for u16 {}
// SAFETY: as for u8.
unsafe impl Pod for u32 {}
// SAFETY: as for u8.
unsafe impl Pod for u64 {}
// SAFETY: as for u8.
unsafe impl Pod for u128 {}
// SAFETY: an array of padding-free plain data has no padding (its stride is the element's size).
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

/// How many 64-bit words hold a `T`.
pub(crate) const fn words_for<T>() -> usize {
    size_of::<T>().div_ceil(8)
}

/// Word `i` of `t`'s bytes (native byte order), zero-filled past the end of `t`.
#[inline(always)]
fn word<T: Pod>(t: &T, i: usize) -> u64 {
    let n = size_of::<T>();
    let off = i * 8;
    let len = n.saturating_sub(off).min(8);
    let mut bytes = [0u8; 8];
    if len > 0 {
        // SAFETY: `len > 0` implies `off + len <= n`, so the source range lies inside `*t`; `T: Pod` has
        // no padding, so all of its bytes are initialised; the destination is a local 8-byte array and
        // `len <= 8`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (t as *const T).cast::<u8>().add(off),
                bytes.as_mut_ptr(),
                len,
            )
        };
    }
    u64::from_ne_bytes(bytes)
}

/// Writes the words of `t` into `out`, zero-filling the tail of the last word and any further words.
#[inline(always)]
pub(crate) fn encode<T: Pod>(t: &T, out: &mut [u64]) {
    for (i, w) in out.iter_mut().enumerate() {
        *w = word(t, i);
    }
}

/// Stores the words of `t` into `atoms` with relaxed stores (the caller holds the slot's write lock and
/// orders the stores with fences around them).
#[inline(always)]
pub(crate) fn store<T: Pod>(atoms: &[AtomicU64], t: &T) {
    for (i, a) in atoms.iter().enumerate() {
        a.store(word(t, i), Ordering::Relaxed);
    }
}

/// Copies `atoms` (relaxed loads) into an uninitialised `T`. The copy may be torn if a writer is active:
/// the caller validates the slot's version before calling `assume_init` on it.
#[inline(always)]
pub(crate) fn load<T: Pod>(atoms: &[AtomicU64]) -> MaybeUninit<T> {
    let n = size_of::<T>();
    let mut out = MaybeUninit::<T>::uninit();
    let dst = out.as_mut_ptr().cast::<u8>();
    for (i, a) in atoms.iter().enumerate() {
        let off = i * 8;
        let len = n.saturating_sub(off).min(8);
        let bytes = a.load(Ordering::Relaxed).to_ne_bytes();
        // SAFETY: `off + len <= n`, so the destination range lies inside `out`'s storage, which is
        // writable; the source is a local 8-byte array and `len <= 8`. Writing bytes into a
        // `MaybeUninit` is always allowed.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.add(off), len) };
    }
    out
}
