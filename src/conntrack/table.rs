//! A fixed-capacity concurrent flow table: lock-free lookups, per-slot write locks, incremental expiry.
//!
//! [`Table<K, V>`] maps plain-old-data keys ([`FlowKeyV4`], [`FlowKeyV6`], or any [`Pod`] type) to
//! plain-old-data values (the engine's flow state). It knows nothing about policy or protocols: whether an
//! entry is still alive is a caller-supplied [`Liveness`] judged at a caller-supplied time, so timeouts that
//! depend on per-zone configuration stay with the caller.
//!
//! # Shape
//!
//! - **Fixed size.** The number of slots and the capacity (the most entries it holds at once, e.g. an AWS
//!   conntrack allowance) are fixed at creation; the table never allocates afterwards. An insert past the
//!   capacity is refused with [`Insert::Full`], unless an expired or reclaimable entry can give its place.
//! - **Open addressing, no tombstones.** Linear probing; each slot's control word records, for the keys
//!   whose home is that slot, the largest displacement in use, so a lookup reads at most that many slots
//!   and a removal simply empties its slot. The sweep lowers the bound again when entries go.
//! - **Seqlock slots.** A lookup never writes: it reads the control word, the key and the value words, and
//!   re-reads the control word; a change means a concurrent write and the read is retried, so a torn entry
//!   is never returned. Writers take a lock bit in the control word of the one slot they change; inserts
//!   additionally take an insert bit in the home slot of their key, so that two inserts of one key cannot
//!   both succeed.
//! - **Incremental expiry.** [`Table::sweep`] examines a slice of the table per call, from a cursor kept in
//!   the table; entries that are not alive count as absent for every operation before the sweep reaches
//!   them.
//!
//! See the "Connection-tracking table" section of `DESIGN.md` for the slot layout and the memory-ordering
//! argument.

mod key;
mod memory;
mod pod;
mod sync;
#[doc(hidden)]
pub mod testing;

use std::marker::PhantomData;

pub use key::{FlowKeyV4, FlowKeyV6};
pub use pod::Pod;
use pod::{encode, load, store, words_for};
use sync::{AtomicU64, AtomicUsize, Ordering, Padded, backoff, fence};

// Control word layout (one per slot, the slot's first word):
//
//   bit 0        WRITE   the slot's key/value words are being written (the entry bits below may change)
//   bit 1        INSERT  an insert of a key whose home is this slot is in progress         (home role)
//   bit 2        FULL    the slot holds a published entry
//   bits 3..13   DISP    the entry's displacement from its home slot (0..=1023)
//   bits 13..23  MAXD    the largest displacement of any entry whose home is this slot      (home role)
//   bits 23..31  TAG     8 bits of the entry's hash
//   bits 31..64  VERSION 33-bit counter, advanced by every change of the entry (wraps)
//
// The "home role" bits belong to the slot as the home of other keys; the rest ("entry bits") describe the
// entry stored in the slot. Readers validate only the entry bits, so inserts of other keys that take this
// slot's insert bit or raise its bound never make a reader retry.
const WRITE: u64 = 1;
const INSERT: u64 = 1 << 1;
const FULL: u64 = 1 << 2;
const DISP_SHIFT: u32 = 3;
const MAXD_SHIFT: u32 = 13;
const DIST_BITS: u64 = 0x3ff;
const DISP_MASK: u64 = DIST_BITS << DISP_SHIFT;
const MAXD_MASK: u64 = DIST_BITS << MAXD_SHIFT;
const TAG_SHIFT: u32 = 23;
const TAG_MASK: u64 = 0xff << TAG_SHIFT;
const VERSION_ONE: u64 = 1 << 31;
const VERSION_MASK: u64 = !(VERSION_ONE - 1);
const HOME_MASK: u64 = INSERT | MAXD_MASK;
const ENTRY_MASK: u64 = !HOME_MASK;

/// The longest probe: an entry lives at most this many slots after its home slot.
pub const MAX_DISPLACEMENT: usize = DIST_BITS as usize;

/// How many slots from its home an insert into a full table examines for an entry to reclaim.
pub const EVICT_WINDOW: usize = 64;

/// The most keys [`Table::prepare`] hashes and prefetches at once.
pub const BATCH: usize = 32;

/// The most 64-bit words a key may take (64 bytes).
pub const MAX_KEY_WORDS: usize = 8;

/// Whether an entry is alive at a time, and whether a live one may be reclaimed when the table is full.
///
/// Implemented for every `Fn(&K, &V, u64) -> bool` closure (liveness only). The table calls these without
/// holding any lock; they must not call back into the same table.
pub trait Liveness<K, V> {
    /// Whether the entry is alive at `now` (e.g. `now < last_seen + timeout(state)`). An entry that is not
    /// alive is absent for lookups, updates and inserts, and the sweep reclaims it.
    fn alive(&self, key: &K, value: &V, now: u64) -> bool;

    /// Whether a live entry may be evicted to make room for an insert into a full table (e.g. a flow that
    /// never completed its handshake). Default: never.
    fn reclaimable(&self, key: &K, value: &V, now: u64) -> bool {
        let _ = (key, value, now);
        false
    }
}

impl<K, V, F: Fn(&K, &V, u64) -> bool> Liveness<K, V> for F {
    fn alive(&self, key: &K, value: &V, now: u64) -> bool {
        self(key, value, now)
    }
}

/// The outcome of [`Table::insert`].
#[must_use]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Insert<K, V> {
    /// The entry was stored. `reclaimed` is the entry that gave up its place for it, if any: the same key's
    /// expired entry, or (table full) another key's expired or reclaimable entry.
    Inserted {
        /// The entry removed to make room, with the value it had.
        reclaimed: Option<(K, V)>,
    },
    /// A live entry with this key exists; nothing changed. Carries a copy of its value.
    Exists(V),
    /// The table holds its capacity of entries and none near the key's home slot could be reclaimed (or,
    /// far less likely, no free slot lies within [`MAX_DISPLACEMENT`] of it). Nothing changed.
    Full,
}

/// What one call of [`Table::sweep`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SweepStats {
    /// Slots examined.
    pub visited: usize,
    /// Entries removed because they were not alive.
    pub reclaimed: usize,
}

/// A key hashed for one table, ready for the `*_hashed` operations (see [`Table::prepare`]).
///
/// A `Hashed` from another table finds nothing useful there (its hash used another seed) but is never
/// unsafe.
#[derive(Clone, Copy, Debug)]
pub struct Hashed<K> {
    key: K,
    hash: u64,
    words: [u64; MAX_KEY_WORDS],
}

impl<K: Copy> Hashed<K> {
    /// The key.
    pub fn key(&self) -> K {
        self.key
    }
}

/// A fixed-capacity concurrent map from `K` to `V` for flow state; see the [module docs](self).
///
/// All operations take `&self` and may run from any number of threads at once.
pub struct Table<K, V> {
    /// `slots * STRIDE` words; slot `s` is `words[s * STRIDE..(s + 1) * STRIDE]`: control word, key words,
    /// value words.
    words: memory::Words,
    slots: usize,
    capacity: usize,
    /// `min(slots - 1, MAX_DISPLACEMENT)`.
    max_probe: usize,
    seed: [u64; 2],
    /// Entries stored (published, or reserved by an insert in progress); never above `capacity`.
    count: Padded<AtomicUsize>,
    /// Where the next sweep starts (taken modulo `slots`).
    cursor: Padded<AtomicUsize>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> std::fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("slots", &self.slots)
            .field("capacity", &self.capacity)
            .field("len", &self.count.0.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Releases a home slot's insert bit when dropped (also when a caller's closure panics).
struct HomeGuard<'a>(&'a AtomicU64);

impl Drop for HomeGuard<'_> {
    fn drop(&mut self) {
        // Release: everything this insert published is visible to the next insert of the same home, which
        // takes the bit with Acquire.
        self.0.fetch_and(!INSERT, Ordering::Release);
    }
}

/// Releases a slot's write lock without changing its version when dropped: the entry was not modified
/// (used when an update's closure panics before anything is written).
struct UnlockUnchanged<'a>(&'a AtomicU64);

impl Drop for UnlockUnchanged<'_> {
    fn drop(&mut self) {
        self.0.fetch_and(!WRITE, Ordering::Release);
    }
}

#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline(always)]
fn disp_of(c: u64) -> usize {
    ((c & DISP_MASK) >> DISP_SHIFT) as usize
}

#[inline(always)]
fn maxd_of(c: u64) -> usize {
    ((c & MAXD_MASK) >> MAXD_SHIFT) as usize
}

#[inline(always)]
fn tag_bits(hash: u64) -> u64 {
    (hash & 0xff) << TAG_SHIFT
}

/// The control word of an emptied slot: home bits kept, entry bits (and the write lock) cleared, version
/// advanced.
#[inline(always)]
fn emptied(c: u64) -> u64 {
    (c & HOME_MASK) | (c & VERSION_MASK).wrapping_add(VERSION_ONE)
}

impl<K: Pod, V: Pod> Table<K, V> {
    const KEY_WORDS: usize = words_for::<K>();
    const VALUE_WORDS: usize = words_for::<V>();
    const STRIDE: usize = 1 + Self::KEY_WORDS + Self::VALUE_WORDS;
    const KEY_FITS: () = assert!(
        Self::KEY_WORDS >= 1 && Self::KEY_WORDS <= MAX_KEY_WORDS,
        "a table key takes 1 to 64 bytes"
    );

    /// Bytes one slot takes: an 8-byte control word plus the key and the value, each rounded up to whole
    /// 8-byte words.
    pub const BYTES_PER_SLOT: usize = Self::STRIDE * 8;

    /// A table for at most `capacity` entries, with `capacity * 5 / 4` slots (load factor at most 0.8) and a
    /// random hash seed.
    ///
    /// # Panics
    /// If `capacity` is 0 or the table's size overflows `usize`.
    pub fn new(capacity: usize) -> Self {
        let slots = capacity
            .checked_add(capacity / 4)
            .expect("table size overflows");
        Self::with_slots(capacity, slots)
    }

    /// A table for at most `capacity` entries in `slots` slots, with a random hash seed. Fewer slots per
    /// entry save memory; more make probes shorter (lookups read about `1 + 1/(1-α)` slots on average at
    /// load factor α).
    ///
    /// # Panics
    /// If `capacity` is 0, `slots < capacity`, or the table's size overflows `usize`.
    pub fn with_slots(capacity: usize, slots: usize) -> Self {
        let state = foldhash::fast::RandomState::default();
        use std::hash::BuildHasher;
        Self::with_seed(capacity, slots, state.hash_one(0x5eed_u64))
    }

    /// As [`with_slots`](Self::with_slots), with a fixed hash seed (reproducible layouts for tests).
    ///
    /// # Panics
    /// If `capacity` is 0, `slots < capacity`, or the table's size overflows `usize`.
    pub fn with_seed(capacity: usize, slots: usize, seed: u64) -> Self {
        let () = Self::KEY_FITS;
        assert!(capacity > 0, "a table needs a capacity of at least 1");
        assert!(
            slots >= capacity,
            "a table needs at least as many slots as its capacity"
        );
        let words = slots
            .checked_mul(Self::STRIDE)
            .expect("table size overflows");
        Self {
            words: memory::Words::zeroed(words),
            slots,
            capacity,
            max_probe: (slots - 1).min(MAX_DISPLACEMENT),
            seed: [
                folded_multiply(seed ^ 0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344),
                folded_multiply(seed ^ 0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89) | 1,
            ],
            count: Padded(AtomicUsize::new(0)),
            cursor: Padded(AtomicUsize::new(0)),
            _types: PhantomData,
        }
    }

    /// The most entries the table holds at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The number of slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Bytes of slot memory (`slots * BYTES_PER_SLOT`); the table allocates nothing else of note.
    pub fn memory_bytes(&self) -> usize {
        self.slots * Self::BYTES_PER_SLOT
    }

    /// Entries stored, including entries that are no longer alive but not yet reclaimed. Exact when no
    /// operation is in progress; while inserts run it may count their reserved places.
    pub fn len(&self) -> usize {
        self.count.0.load(Ordering::Relaxed)
    }

    /// Whether no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hashes a key for this table (once per operation: the one-key calls do it for you).
    #[inline]
    pub fn hash(&self, key: &K) -> Hashed<K> {
        let mut words = [0u64; MAX_KEY_WORDS];
        encode(key, &mut words[..Self::KEY_WORDS]);
        let [s0, s1] = self.seed;
        let mut h = s0;
        let mut i = 0;
        while i + 1 < Self::KEY_WORDS {
            h = folded_multiply(words[i] ^ h, words[i + 1] ^ s1);
            i += 2;
        }
        if i < Self::KEY_WORDS {
            h = folded_multiply(words[i] ^ h, s1.rotate_left(23));
        }
        Hashed {
            key: *key,
            hash: folded_multiply(h ^ s1, s0.rotate_left(17) ^ Self::KEY_WORDS as u64),
            words,
        }
    }

    /// Hashes `keys` into `out` and prefetches their home slots, so that the operations on them that follow
    /// overlap their cache misses. Up to [`BATCH`] keys is a good burst.
    ///
    /// # Panics
    /// If `out` is shorter than `keys`.
    pub fn prepare(&self, keys: &[K], out: &mut [Hashed<K>]) {
        assert!(
            out.len() >= keys.len(),
            "prepare: output shorter than input"
        );
        for (k, o) in keys.iter().zip(out.iter_mut()) {
            *o = self.hash(k);
            self.prefetch(o);
        }
    }

    /// Asks the CPU to start loading the home slot of a hashed key (a hint; no effect under loom or on
    /// targets without a prefetch instruction).
    #[inline]
    pub fn prefetch(&self, h: &Hashed<K>) {
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let base = self.home(h.hash) * Self::STRIDE;
            let p = self.words.as_ptr().wrapping_add(base).cast::<i8>();
            // Every cache line the slot touches: its first byte, 64 bytes on, and its last byte.
            // SAFETY: SSE, which `_mm_prefetch` needs, is part of the x86_64 baseline; a prefetch is a hint
            // that never faults and never dereferences in the language's sense, so the addresses (inside the
            // slot array) need no further guarantee.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p);
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(Self::BYTES_PER_SLOT - 1));
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom))))]
        let _ = h;
    }

    /// A copy of the live value stored under `key`, or `None` (absent, or not alive at `now`).
    #[inline]
    pub fn get(&self, key: &K, now: u64, live: &impl Liveness<K, V>) -> Option<V> {
        self.get_hashed(&self.hash(key), now, live)
    }

    /// [`get`](Self::get) for a hashed key.
    #[inline]
    pub fn get_hashed(&self, h: &Hashed<K>, now: u64, live: &impl Liveness<K, V>) -> Option<V> {
        let (_, _, v) = self.find(h)?;
        live.alive(&h.key, &v, now).then_some(v)
    }

    /// Updates the live value stored under `key` in place: `f` runs on it while the slot is locked (other
    /// threads reading this one entry wait; keep `f` short and never touch the table from it) and its result
    /// is returned. `None` (and `f` not called) if the key is absent or not alive at `now`.
    ///
    /// If `f` panics, the entry is left as it was.
    #[inline]
    pub fn update<R>(
        &self,
        key: &K,
        now: u64,
        live: &impl Liveness<K, V>,
        f: impl FnOnce(&mut V) -> R,
    ) -> Option<R> {
        self.update_hashed(&self.hash(key), now, live, f)
    }

    /// [`update`](Self::update) for a hashed key.
    pub fn update_hashed<R>(
        &self,
        h: &Hashed<K>,
        now: u64,
        live: &impl Liveness<K, V>,
        f: impl FnOnce(&mut V) -> R,
    ) -> Option<R> {
        loop {
            let (s, c, mut v) = self.find(h)?;
            if !live.alive(&h.key, &v, now) {
                return None;
            }
            let slot = self.slot(s);
            if !self.lock_entry(&slot[0], c) {
                continue; // the entry changed since we read it: look again
            }
            // The version checked by `lock_entry` is the one `v` was read at, and the lock keeps the
            // entry from changing: `v` is the current value.
            let unlock = UnlockUnchanged(&slot[0]);
            let r = f(&mut v);
            // Seqlock writer: the lock (taken by the CAS) is ordered before the value stores.
            fence(Ordering::Release);
            store(self.value_words(slot), &v);
            std::mem::forget(unlock);
            // Release: the value stores above happen before any reader's acquire load that sees the new
            // version. The subtraction clears WRITE (set, so no borrow); the addition advances the version.
            slot[0].fetch_add(VERSION_ONE - WRITE, Ordering::Release);
            return Some(r);
        }
    }

    /// [`update_hashed`](Self::update_hashed) for an owner that holds the table exclusively: no other
    /// thread can read or write it meanwhile (`&mut self`), so the entry is updated without taking the slot
    /// lock (no atomic read-modify-write). The control word ends exactly as after `update_hashed` (the
    /// version advanced once).
    ///
    /// If `f` panics, the entry is left as it was.
    #[inline]
    pub fn update_hashed_mut<R>(
        &mut self,
        h: &Hashed<K>,
        now: u64,
        live: &impl Liveness<K, V>,
        f: impl FnOnce(&mut V) -> R,
    ) -> Option<R> {
        let (s, c, mut v) = self.find(h)?;
        if !live.alive(&h.key, &v, now) {
            return None;
        }
        let r = f(&mut v);
        let slot = self.slot(s);
        store(self.value_words(slot), &v);
        // `update_hashed` sets WRITE, then adds `VERSION_ONE - WRITE`: `c + VERSION_ONE` in all.
        slot[0].store(c.wrapping_add(VERSION_ONE), Ordering::Relaxed);
        Some(r)
    }

    /// Inserts `value` under `key` unless a live entry exists (see [`Insert`]).
    ///
    /// An entry of the same key that is not alive at `now` is replaced in place. When the table already
    /// holds its capacity, the first entry within [`EVICT_WINDOW`] slots of the key's home that is not alive
    /// or that `live` deems [`reclaimable`](Liveness::reclaimable) gives its place; otherwise the insert is
    /// refused with [`Insert::Full`].
    #[inline]
    pub fn insert(&self, key: &K, value: V, now: u64, live: &impl Liveness<K, V>) -> Insert<K, V> {
        self.insert_hashed(&self.hash(key), value, now, live)
    }

    /// [`insert`](Self::insert) for a hashed key.
    pub fn insert_hashed(
        &self,
        h: &Hashed<K>,
        value: V,
        now: u64,
        live: &impl Liveness<K, V>,
    ) -> Insert<K, V> {
        let home = self.home(h.hash);
        let tag = tag_bits(h.hash);
        let home_ctrl = &self.slot(home)[0];
        let _guard = self.lock_home(home_ctrl);
        // With the insert bit held, no other insert of a key with this home runs, so no entry for `h.key`
        // appears or moves, and the home's bound changes only here.
        'existing: loop {
            let maxd = maxd_of(home_ctrl.load(Ordering::Relaxed));
            for d in 0..=maxd {
                let s = self.wrap(home + d);
                let Some((c, old)) = self.read_matching(s, tag, &h.words) else {
                    continue;
                };
                if live.alive(&h.key, &old, now) {
                    return Insert::Exists(old);
                }
                let slot = self.slot(s);
                if !self.lock_entry(&slot[0], c) {
                    continue 'existing;
                }
                // Seqlock writer: the lock (acquired by the CAS) is ordered before the value stores.
                fence(Ordering::Release);
                store(self.value_words(slot), &value);
                slot[0].fetch_add(VERSION_ONE - WRITE, Ordering::Release);
                return Insert::Inserted {
                    reclaimed: Some((h.key, old)),
                };
            }
            break;
        }
        if self.reserve() {
            for d in 0..=self.max_probe {
                let s = self.wrap(home + d);
                let ctrl = &self.slot(s)[0];
                let mut c = ctrl.load(Ordering::Relaxed);
                while c & (FULL | WRITE) == 0 {
                    let claimed = c | WRITE | ((d as u64) << DISP_SHIFT) | tag;
                    match ctrl.compare_exchange_weak(
                        c,
                        claimed,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => {
                            self.fill(s, home_ctrl, d, h, &value, FULL);
                            return Insert::Inserted { reclaimed: None };
                        }
                        Err(actual) => c = actual,
                    }
                }
            }
            self.count.0.fetch_sub(1, Ordering::Relaxed);
            return Insert::Full;
        }
        // Full: look for an entry to reclaim near the home slot.
        for d in 0..EVICT_WINDOW.min(self.max_probe + 1) {
            let s = self.wrap(home + d);
            let slot = self.slot(s);
            let Some((c, old_key, old)) = self.read_entry(s) else {
                continue;
            };
            if live.alive(&old_key, &old, now) && !live.reclaimable(&old_key, &old, now) {
                continue;
            }
            if !self.lock_entry(&slot[0], c) {
                continue; // changed meanwhile: leave it to its new owner
            }
            // The slot keeps FULL set while it changes key: readers of either key wait or skip (tag).
            let retag = (c & (DISP_MASK | TAG_MASK)) ^ (((d as u64) << DISP_SHIFT) | tag);
            self.fill(s, home_ctrl, d, h, &value, retag);
            return Insert::Inserted {
                reclaimed: Some((old_key, old)),
            };
        }
        Insert::Full
    }

    /// Removes the entry stored under `key`, alive or not, and returns its value.
    #[inline]
    pub fn remove(&self, key: &K) -> Option<V> {
        self.remove_hashed(&self.hash(key))
    }

    /// [`remove`](Self::remove) for a hashed key.
    pub fn remove_hashed(&self, h: &Hashed<K>) -> Option<V> {
        loop {
            let (s, c, v) = self.find(h)?;
            if self.take(&self.slot(s)[0], c) {
                return Some(v);
            }
        }
    }

    /// Examines the next `budget` slots (from a cursor kept in the table, wrapping around) and removes the
    /// entries that are not alive at `now`, passing each to `reclaimed` (after its slot is free, with no
    /// lock held). Also lowers the probe bounds that removals made too high. Never blocks lookups; slots
    /// being written at that moment are skipped until the next pass. Several threads may sweep at once:
    /// each call takes its own slice.
    pub fn sweep(
        &self,
        now: u64,
        budget: usize,
        live: &impl Liveness<K, V>,
        mut reclaimed: impl FnMut(K, V),
    ) -> SweepStats {
        let budget = budget.min(self.slots);
        let start = self.cursor.0.fetch_add(budget, Ordering::Relaxed) % self.slots;
        let mut stats = SweepStats {
            visited: budget,
            reclaimed: 0,
        };
        let mut s = start;
        for _ in 0..budget {
            while let Some((c, k, v)) = self.read_entry(s) {
                if live.alive(&k, &v, now) {
                    break;
                }
                if self.take(&self.slot(s)[0], c) {
                    stats.reclaimed += 1;
                    reclaimed(k, v);
                    break;
                }
            }
            self.shrink_bound(s);
            s = self.wrap(s + 1);
        }
        stats
    }

    /// Calls `f` on every stored entry, alive or not. Each entry is read consistently, but entries that
    /// change during the walk may be seen in either state; at quiescence the walk is exact.
    pub fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for s in 0..self.slots {
            if let Some((_, k, v)) = self.read_entry(s) {
                f(&k, &v);
            }
        }
    }

    // ---- internals ----

    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.slots as u128) >> 64) as usize
    }

    #[inline(always)]
    fn wrap(&self, s: usize) -> usize {
        if s >= self.slots { s - self.slots } else { s }
    }

    #[inline(always)]
    fn slot(&self, s: usize) -> &[AtomicU64] {
        &self.words[s * Self::STRIDE..(s + 1) * Self::STRIDE]
    }

    #[inline(always)]
    fn key_words<'a>(&self, slot: &'a [AtomicU64]) -> &'a [AtomicU64] {
        &slot[1..1 + Self::KEY_WORDS]
    }

    #[inline(always)]
    fn value_words<'a>(&self, slot: &'a [AtomicU64]) -> &'a [AtomicU64] {
        &slot[1 + Self::KEY_WORDS..]
    }

    /// Finds `h`'s entry: its slot, the control word it was read at, and its value.
    #[inline(always)]
    fn find(&self, h: &Hashed<K>) -> Option<(usize, u64, V)> {
        let home = self.home(h.hash);
        let tag = tag_bits(h.hash);
        // The bound may be raised by a concurrent insert after this load; that insert is then not yet
        // complete (it raises the bound before publishing), so missing its entry is a valid order.
        let maxd = maxd_of(self.slot(home)[0].load(Ordering::Relaxed));
        let mut s = home;
        for _ in 0..=maxd {
            if let Some((c, v)) = self.read_matching(s, tag, &h.words) {
                return Some((s, c, v));
            }
            s = self.wrap(s + 1);
        }
        None
    }

    /// Reads slot `s` if it holds the key `words` (with hash tag `tag`): the control word it was read at
    /// and the value. Waits while the slot is locked with a matching tag (an update of this key may be in
    /// progress); skips slots that are empty, being filled, or tagged for another key.
    #[inline(always)]
    fn read_matching(&self, s: usize, tag: u64, words: &[u64; MAX_KEY_WORDS]) -> Option<(u64, V)> {
        let slot = self.slot(s);
        let mut spins = 0;
        loop {
            // Acquire: pairs with the writer's release when it published this version, so the key and
            // value words read below are at least as new as that version.
            let c1 = slot[0].load(Ordering::Acquire);
            if c1 & (FULL | TAG_MASK) != FULL | tag {
                return None;
            }
            if c1 & WRITE != 0 {
                backoff(&mut spins);
                continue;
            }
            let key_atoms = self.key_words(slot);
            let same_key =
                (0..Self::KEY_WORDS).all(|i| key_atoms[i].load(Ordering::Relaxed) == words[i]);
            let value = same_key.then(|| load::<V>(self.value_words(slot)));
            // Acquire fence, then re-read: if any word read above came from a write that began after
            // `c1`, that writer's lock (ordered before its stores by its release fence) is visible here,
            // and the entry bits differ (WRITE set, or the version advanced).
            fence(Ordering::Acquire);
            let c2 = slot[0].load(Ordering::Relaxed);
            if (c1 ^ c2) & ENTRY_MASK != 0 {
                backoff(&mut spins);
                continue;
            }
            return value.map(|v| {
                // SAFETY: no write overlapped the copy (validated above), so its bytes are those stored by
                // the writer that published `c1`: the bytes of a valid `V` (`store` writes every byte of a
                // `Pod` value, and a `Pod` copy of a value is a valid value).
                (c1, unsafe { v.assume_init() })
            });
        }
    }

    /// Reads whatever entry slot `s` holds: its control word, key and value; `None` if it holds none or is
    /// being written (filled, replaced or updated).
    #[inline]
    fn read_entry(&self, s: usize) -> Option<(u64, K, V)> {
        let slot = self.slot(s);
        let mut spins = 0;
        loop {
            let c1 = slot[0].load(Ordering::Acquire);
            if c1 & (FULL | WRITE) != FULL {
                return None;
            }
            let k = load::<K>(self.key_words(slot));
            let v = load::<V>(self.value_words(slot));
            fence(Ordering::Acquire); // as in `read_matching`
            let c2 = slot[0].load(Ordering::Relaxed);
            if (c1 ^ c2) & ENTRY_MASK != 0 {
                backoff(&mut spins);
                continue;
            }
            // SAFETY: as in `read_matching`: an unchanged version means both copies hold the bytes of the
            // valid key and value published with `c1`.
            return Some(unsafe { (c1, k.assume_init(), v.assume_init()) });
        }
    }

    /// Takes the write lock of the entry last read at control word `c` (entry bits compared; home bits may
    /// have changed). False if the entry changed or another writer holds it.
    #[inline(always)]
    fn lock_entry(&self, ctrl: &AtomicU64, c: u64) -> bool {
        let mut cur = c;
        loop {
            // Acquire: the lock is taken before anything this writer does to the slot.
            match ctrl.compare_exchange_weak(cur, cur | WRITE, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) if (actual ^ c) & ENTRY_MASK == 0 => cur = actual,
                Err(_) => return false,
            }
        }
    }

    /// Empties the slot whose entry was last read at control word `c`; false if the entry changed
    /// meanwhile. The slot is locked while the live count goes down, so that nobody sees the entry gone
    /// before the count says so (otherwise an insert could be refused as full after a lookup missed the
    /// entry). The key and value words stay as they were: the advanced version tells readers.
    #[inline]
    fn take(&self, ctrl: &AtomicU64, c: u64) -> bool {
        if !self.lock_entry(ctrl, c) {
            return false;
        }
        self.count.0.fetch_sub(1, Ordering::Relaxed);
        let mut cur = ctrl.load(Ordering::Relaxed);
        loop {
            // Release: the count decrement happens before any acquire load that sees the slot empty.
            match ctrl.compare_exchange_weak(
                cur,
                emptied(cur),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Writes key and value into slot `s`, locked by this insert at displacement `d` from `home_ctrl`'s slot,
    /// raises the home's bound to `d` if needed, then publishes: unlock, version advanced, and `xor` applied
    /// to the entry bits (FULL for a fresh slot; the new displacement and tag for a replaced entry).
    fn fill(&self, s: usize, home_ctrl: &AtomicU64, d: usize, h: &Hashed<K>, value: &V, xor: u64) {
        let slot = self.slot(s);
        // Seqlock writer: the lock (taken by a CAS) is ordered before the data stores.
        fence(Ordering::Release);
        for (a, &w) in self.key_words(slot).iter().zip(&h.words) {
            a.store(w, Ordering::Relaxed);
        }
        store(self.value_words(slot), value);
        // Raise the bound before publishing, so that whoever sees the entry also sees the bound.
        let mut c = home_ctrl.load(Ordering::Relaxed);
        while maxd_of(c) < d {
            let raised = (c & !MAXD_MASK) | ((d as u64) << MAXD_SHIFT);
            match home_ctrl.compare_exchange_weak(c, raised, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => c = actual,
            }
        }
        let ctrl = &slot[0];
        let mut c = ctrl.load(Ordering::Relaxed);
        loop {
            let published = (((c & !WRITE) ^ xor) & !VERSION_MASK)
                | (c & VERSION_MASK).wrapping_add(VERSION_ONE);
            // Release: key, value and bound stores happen before any acquire load seeing this word.
            match ctrl.compare_exchange_weak(c, published, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => c = actual,
            }
        }
    }

    /// Takes a home slot's insert bit.
    fn lock_home<'a>(&self, ctrl: &'a AtomicU64) -> HomeGuard<'a> {
        let mut spins = 0;
        let mut c = ctrl.load(Ordering::Relaxed);
        loop {
            if c & INSERT != 0 {
                backoff(&mut spins);
                c = ctrl.load(Ordering::Relaxed);
                continue;
            }
            // Acquire: pairs with the previous holder's release of the bit.
            match ctrl.compare_exchange_weak(c, c | INSERT, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return HomeGuard(ctrl),
                Err(actual) => c = actual,
            }
        }
    }

    /// Reserves a place for a new entry; false when the table holds its capacity.
    #[inline]
    fn reserve(&self) -> bool {
        let count = &self.count.0;
        let mut n = count.load(Ordering::Relaxed);
        loop {
            if n >= self.capacity {
                return false;
            }
            match count.compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => n = actual,
            }
        }
    }

    /// The largest displacement of the entries whose home is `home`, judging by the control words after it
    /// up to `bound` (an entry being written counts).
    fn true_bound(&self, home: usize, bound: usize) -> usize {
        (1..=bound)
            .rev()
            .find(|&d| {
                let c = self.slot(self.wrap(home + d))[0].load(Ordering::Relaxed);
                c & (FULL | WRITE) != 0 && disp_of(c) == d
            })
            .unwrap_or(0)
    }

    /// Lowers the probe bound of home slot `home` to the displacement actually in use, if that is lower and
    /// no insert of this home is in progress.
    fn shrink_bound(&self, home: usize) {
        let ctrl = &self.slot(home)[0];
        let c = ctrl.load(Ordering::Relaxed);
        let bound = maxd_of(c);
        if bound == 0 || c & INSERT != 0 || self.true_bound(home, bound) == bound {
            return;
        }
        // Hold the insert bit while measuring again: only inserts of this home place entries with this
        // home, so the measurement cannot be outdated before the new bound is stored.
        if ctrl
            .compare_exchange(c, c | INSERT, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return; // busy: next pass
        }
        let guard = HomeGuard(ctrl);
        let lowered = self.true_bound(home, bound);
        let mut c = ctrl.load(Ordering::Relaxed);
        loop {
            let new = (c & !MAXD_MASK) | ((lowered as u64) << MAXD_SHIFT);
            match ctrl.compare_exchange_weak(c, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => c = actual,
            }
        }
        drop(guard);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn forever(_: &u64, _: &u64, _: u64) -> bool {
        true
    }

    #[test]
    fn slot_sizes_meet_the_budget() {
        type V = [u64; 6]; // 48-byte flow state, as in the benchmark
        assert_eq!(Table::<FlowKeyV6, V>::BYTES_PER_SLOT, 104);
        assert_eq!(Table::<FlowKeyV4, V>::BYTES_PER_SLOT, 80);
        assert_eq!(Table::<u64, u64>::BYTES_PER_SLOT, 24);
    }

    #[test]
    fn control_fields_do_not_overlap() {
        let fields = [
            WRITE,
            INSERT,
            FULL,
            DISP_MASK,
            MAXD_MASK,
            TAG_MASK,
            VERSION_MASK,
        ];
        let mut seen = 0u64;
        for f in fields {
            assert_eq!(seen & f, 0, "{f:#x} overlaps");
            seen |= f;
        }
        assert_eq!(seen, u64::MAX);
    }

    #[test]
    fn exclusive_update_equals_locked_update() {
        // The same operations through `update_hashed` and `update_hashed_mut` leave identical slots.
        let a = Table::<u64, u64>::with_seed(64, 80, 3);
        let mut b = Table::<u64, u64>::with_seed(64, 80, 3);
        for k in 0..64u64 {
            assert_eq!(
                a.insert(&k, k, 0, &forever),
                Insert::Inserted { reclaimed: None }
            );
            assert_eq!(
                b.insert(&k, k, 0, &forever),
                Insert::Inserted { reclaimed: None }
            );
        }
        let odd = |k: &u64, _: &u64, _: u64| k % 2 == 1;
        for round in 0..3u64 {
            for k in 0..70u64 {
                let h = a.hash(&k);
                let ra = a.update_hashed(&h, 0, &odd, |v| {
                    *v = v.wrapping_mul(31) + round;
                    *v
                });
                let rb = b.update_hashed_mut(&h, 0, &odd, |v| {
                    *v = v.wrapping_mul(31) + round;
                    *v
                });
                assert_eq!(ra, rb, "key {k}");
            }
        }
        let words = |t: &Table<u64, u64>| -> Vec<u64> {
            (0..t.slots())
                .flat_map(|s| t.slot(s).iter().map(|w| w.load(Ordering::Relaxed)))
                .collect()
        };
        assert_eq!(words(&a), words(&b));
    }

    #[test]
    fn probe_bound_grows_and_shrinks() {
        // One slot per entry and collisions on purpose: fill completely, then empty and sweep.
        let t = Table::<u64, u64>::with_seed(16, 16, 7);
        for k in 0..16u64 {
            assert_eq!(
                t.insert(&k, k * 10, 0, &forever),
                Insert::Inserted { reclaimed: None }
            );
        }
        assert_eq!(t.insert(&99, 0, 0, &forever), Insert::Full);
        let bounds: usize = (0..16)
            .map(|s| maxd_of(t.slot(s)[0].load(Ordering::Relaxed)))
            .sum();
        assert!(bounds > 0, "a full table has displaced entries");
        for k in 0..16u64 {
            assert_eq!(t.remove(&k), Some(k * 10));
        }
        let stats = t.sweep(0, 16, &forever, |_, _| unreachable!("nothing to reclaim"));
        assert_eq!(
            stats,
            SweepStats {
                visited: 16,
                reclaimed: 0
            }
        );
        for s in 0..16 {
            assert_eq!(maxd_of(t.slot(s)[0].load(Ordering::Relaxed)), 0, "slot {s}");
        }
        assert!(t.is_empty());
    }
}
