//! Test support (not a stable API): a value type with its own liveness, the operations of the model test,
//! and a harness that applies them to a [`Table`] and to a `Mutex<HashMap>` model and reports the first
//! disagreement. Shared by `tests/conntrack_model.rs` and the fuzz target.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Insert, Liveness, Pod, Table};

/// A test value: alive while `now < last_seen + ttl`; `reclaimable != 0` lets a full table evict it;
/// `check` is a function of the other fields, so a torn copy shows.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TestValue {
    /// When the entry was last refreshed.
    pub last_seen: u64,
    /// Idle timeout.
    pub ttl: u32,
    /// Non-zero: evictable when the table is full.
    pub reclaimable: u32,
    /// A counter the updates advance.
    pub counter: u64,
    /// [`TestValue::checksum`] of the fields above.
    pub check: u64,
}

// SAFETY: `repr(C)`, fields at offsets 0, 8, 12, 16, 24, size 32: no padding; integers only.
unsafe impl Pod for TestValue {}

impl TestValue {
    /// A value with a valid checksum.
    pub fn new(last_seen: u64, ttl: u32, reclaimable: bool, counter: u64) -> Self {
        let mut v = Self {
            last_seen,
            ttl,
            reclaimable: u32::from(reclaimable),
            counter,
            check: 0,
        };
        v.seal();
        v
    }

    /// The checksum of the fields other than `check`.
    pub fn checksum(&self) -> u64 {
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        for x in [
            self.last_seen,
            u64::from(self.ttl),
            u64::from(self.reclaimable),
            self.counter,
        ] {
            h = (h ^ x).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
        }
        h
    }

    /// Recomputes `check` after the fields changed.
    pub fn seal(&mut self) {
        self.check = self.checksum();
    }

    /// Whether `check` matches the fields (false for a torn copy).
    pub fn intact(&self) -> bool {
        self.check == self.checksum()
    }
}

/// The liveness of [`TestValue`]s.
#[derive(Clone, Copy, Debug, Default)]
pub struct TestLiveness;

impl<K> Liveness<K, TestValue> for TestLiveness {
    fn alive(&self, _: &K, v: &TestValue, now: u64) -> bool {
        now < v.last_seen.saturating_add(u64::from(v.ttl))
    }

    fn reclaimable(&self, _: &K, v: &TestValue, _: u64) -> bool {
        v.reclaimable != 0
    }
}

/// One operation of a model-test sequence. Keys are small ids mapped to real keys by the harness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Insert a fresh value (`last_seen` = now).
    Insert {
        /// Key id.
        key: u16,
        /// Idle timeout of the value.
        ttl: u32,
        /// Whether a full table may evict it.
        reclaimable: bool,
    },
    /// Look a key up.
    Get {
        /// Key id.
        key: u16,
    },
    /// Refresh a key (`last_seen` = now) and add to its counter.
    Update {
        /// Key id.
        key: u16,
        /// Added to the counter.
        add: u8,
    },
    /// Remove a key.
    Remove {
        /// Key id.
        key: u16,
    },
    /// Sweep this many slots.
    Sweep {
        /// Slots to examine.
        budget: u16,
    },
    /// Move the clock forward.
    Advance {
        /// Time step.
        by: u32,
    },
    /// Prepare a burst of keys, then look them up in order.
    GetBatch {
        /// Key ids (at most [`super::BATCH`] are used).
        keys: Vec<u16>,
    },
}

/// Applies [`Op`]s to a table and to a `Mutex<HashMap>` model and checks that they agree exactly.
///
/// The model holds what the table stores (live or not). Where the table may choose (which entry a full
/// table evicts, which entries a partial sweep reaches), the table reports its choice and the harness checks
/// that the choice was allowed before applying it to the model. The eviction window must cover the whole
/// table (`slots <= EVICT_WINDOW`) so that `Full` is exactly "full and nothing reclaimable".
pub struct Harness<K> {
    table: Table<K, TestValue>,
    model: Mutex<HashMap<K, TestValue>>,
    key_of: fn(u16) -> K,
    now: u64,
    ops: usize,
}

impl<K: Pod + Eq + std::hash::Hash + std::fmt::Debug> Harness<K> {
    /// A harness over a table with these sizes and seed; `key_of` maps ids to keys (injectively).
    ///
    /// # Panics
    /// If `slots > EVICT_WINDOW` (see the type's docs) or the table's own constraints fail.
    pub fn new(capacity: usize, slots: usize, seed: u64, key_of: fn(u16) -> K) -> Self {
        assert!(
            slots <= super::EVICT_WINDOW,
            "the eviction window must cover the table"
        );
        Self {
            table: Table::with_seed(capacity, slots, seed),
            model: Mutex::new(HashMap::new()),
            key_of,
            now: 0,
            ops: 0,
        }
    }

    /// The table under test.
    pub fn table(&self) -> &Table<K, TestValue> {
        &self.table
    }

    /// Applies `op` to both sides; `Err` describes the first disagreement.
    pub fn apply(&mut self, op: &Op) -> Result<(), String> {
        self.ops += 1;
        let live = TestLiveness;
        let now = self.now;
        let capacity = self.table.capacity();
        let mut model = self
            .model
            .lock()
            .map_err(|_| "model poisoned".to_string())?;
        let alive = |v: &TestValue| Liveness::<(), TestValue>::alive(&live, &(), v, now);
        let expect_live =
            |model: &HashMap<K, TestValue>, k: &K| model.get(k).copied().filter(alive);
        match op {
            Op::Insert {
                key,
                ttl,
                reclaimable,
            } => {
                let k = (self.key_of)(*key);
                let v = TestValue::new(now, *ttl, *reclaimable, 0);
                let got = self.table.insert(&k, v, now, &live);
                let ok = match (got, model.get(&k).copied()) {
                    (Insert::Exists(x), Some(m)) => alive(&m) && x == m,
                    (
                        Insert::Inserted {
                            reclaimed: Some((rk, rv)),
                        },
                        Some(m),
                    ) => rk == k && rv == m && !alive(&m),
                    (Insert::Inserted { reclaimed: None }, None) => model.len() < capacity,
                    (
                        Insert::Inserted {
                            reclaimed: Some((rk, rv)),
                        },
                        None,
                    ) => {
                        model.len() == capacity
                            && model.get(&rk) == Some(&rv)
                            && (!alive(&rv) || rv.reclaimable != 0)
                            && model.remove(&rk).is_some()
                    }
                    (Insert::Full, None) => {
                        model.len() == capacity
                            && model.values().all(|m| alive(m) && m.reclaimable == 0)
                    }
                    _ => false,
                };
                if !ok {
                    return Err(format!("{op:?}: table {got:?}, model {:?}", model.get(&k)));
                }
                if matches!(got, Insert::Inserted { .. }) {
                    model.insert(k, v);
                }
            }
            Op::Get { key } => {
                let k = (self.key_of)(*key);
                let got = self.table.get(&k, now, &live);
                if got != expect_live(&model, &k) {
                    return Err(format!("{op:?}: table {got:?}, model {:?}", model.get(&k)));
                }
            }
            Op::Update { key, add } => {
                let k = (self.key_of)(*key);
                let step = |v: &mut TestValue| {
                    v.last_seen = now;
                    v.counter += u64::from(*add);
                    v.seal();
                    *v
                };
                let got = self.table.update(&k, now, &live, step);
                let want = expect_live(&model, &k).map(|mut v| step(&mut v));
                if got != want {
                    return Err(format!("{op:?}: table {got:?}, model {want:?}"));
                }
                if let Some(v) = want {
                    model.insert(k, v);
                }
            }
            Op::Remove { key } => {
                let k = (self.key_of)(*key);
                let got = self.table.remove(&k);
                let want = model.remove(&k);
                if got != want {
                    return Err(format!("{op:?}: table {got:?}, model {want:?}"));
                }
            }
            Op::Sweep { budget } => {
                let mut gone = Vec::new();
                let stats = self
                    .table
                    .sweep(now, usize::from(*budget), &live, |k, v| gone.push((k, v)));
                if stats.reclaimed != gone.len()
                    || stats.visited != usize::from(*budget).min(self.table.slots())
                {
                    return Err(format!(
                        "{op:?}: stats {stats:?} for {} reclaimed",
                        gone.len()
                    ));
                }
                for (k, v) in gone {
                    if model.get(&k) != Some(&v) || alive(&v) {
                        return Err(format!(
                            "{op:?}: reclaimed {k:?} {v:?}, model {:?}",
                            model.get(&k)
                        ));
                    }
                    model.remove(&k);
                }
                let full_pass = stats.visited == self.table.slots();
                if let Some((k, v)) = model.iter().find(|(_, v)| full_pass && !alive(v)) {
                    return Err(format!("{op:?}: full sweep left {k:?} {v:?}"));
                }
            }
            Op::Advance { by } => self.now += u64::from(*by),
            Op::GetBatch { keys } => {
                let keys: Vec<K> = keys
                    .iter()
                    .take(super::BATCH)
                    .map(|&id| (self.key_of)(id))
                    .collect();
                let mut hashed = [self.table.hash(&(self.key_of)(0)); super::BATCH];
                self.table.prepare(&keys, &mut hashed);
                for (k, h) in keys.iter().zip(&hashed) {
                    let got = self.table.get_hashed(h, now, &live);
                    if got != expect_live(&model, k) || h.key() != *k {
                        return Err(format!(
                            "{op:?} at {k:?}: table {got:?}, model {:?}",
                            model.get(k)
                        ));
                    }
                }
            }
        }
        if self.table.len() != model.len() {
            return Err(format!(
                "after {op:?}: table len {}, model len {}",
                self.table.len(),
                model.len()
            ));
        }
        Ok(())
    }

    /// Checks that the table stores exactly the model's entries, each once, with intact values.
    pub fn check_contents(&self) -> Result<(), String> {
        let model = self
            .model
            .lock()
            .map_err(|_| "model poisoned".to_string())?;
        let mut seen = HashMap::new();
        let mut problem = None;
        self.table.for_each(|k, v| {
            if seen.insert(*k, *v).is_some() {
                problem.get_or_insert(format!("{k:?} stored twice"));
            }
            if !v.intact() {
                problem.get_or_insert(format!("{k:?} has a torn value {v:?}"));
            }
        });
        if let Some(p) = problem {
            return Err(p);
        }
        if seen != *model {
            return Err(format!(
                "after {} ops: table holds {seen:?}, model {model:?}",
                self.ops
            ));
        }
        Ok(())
    }
}
