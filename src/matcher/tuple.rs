//! [`Algorithm::TupleMerge`](super::Algorithm::TupleMerge): tuple-space hashing with merged
//! tuples (after Daly et al., "TupleMerge", IEEE/ACM ToN 2019).
//!
//! A *tuple* says which bits of a key a hash table looks at: a source and a destination prefix
//! length, and whether the source port, destination port and protocol are hashed exactly. A
//! rule fits a table whose tuple is no more specific than the rule's own (and at most
//! [`SLACK`] bits shorter per address), and is stored in the bucket of its masked key. Rules
//! are placed in priority order into the first table that fits and whose bucket still has room
//! (at most the bucket limit rules); otherwise a new table is opened with a *relaxed* tuple
//! (prefix lengths rounded down, so that later, slightly longer prefixes share it), or with the
//! rule's exact tuple when the relaxed table is already full for that key.
//!
//! Because rules are placed in priority order, the tables are ordered by their lowest rule
//! index, and a lookup probes them in that order, stopping as soon as the next table's lowest
//! rule cannot beat the match already found. Inside a bucket the rules are sorted by index, so
//! the first rule that matches is the bucket's answer.

use super::{Addr, Key, PortRange, Rule, RuleId, can_match};

/// Default most rules a bucket of a relaxed table may collect.
pub(crate) const DEFAULT_BUCKET_LIMIT: usize = 12;

/// Most prefix bits a table may ignore of a rule it holds.
const SLACK: u8 = 4;

/// Which fields of a key a table hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tuple {
    src: u8,
    dst: u8,
    sport: bool,
    dport: bool,
    proto: bool,
}

impl Tuple {
    /// The rule's own tuple: its prefix lengths and which of its fields are exact.
    fn of<A: Addr>(r: &Rule<A>) -> Tuple {
        Tuple {
            src: r.src.len(),
            dst: r.dst.len(),
            sport: r.sport.lo == r.sport.hi,
            dport: r.dport.lo == r.dport.hi,
            proto: r.proto.is_some(),
        }
    }

    /// A less specific tuple for a new table, so rules with slightly longer prefixes share it.
    fn relaxed(self) -> Tuple {
        let r = |l: u8| {
            if l <= SLACK {
                0
            } else {
                (l - 1) / SLACK * SLACK
            }
        };
        Tuple {
            src: r(self.src),
            dst: r(self.dst),
            ..self
        }
    }

    /// Whether a table with this tuple can hold a rule with tuple `rule`.
    fn fits(&self, rule: &Tuple) -> bool {
        self.src <= rule.src
            && self.dst <= rule.dst
            && rule.src - self.src <= SLACK
            && rule.dst - self.dst <= SLACK
            && (!self.sport || rule.sport)
            && (!self.dport || rule.dport)
            && (!self.proto || rule.proto)
    }
}

/// A rule with precomputed masks, as stored in a bucket.
#[derive(Clone, Copy, Debug)]
struct Entry<A: Addr> {
    src: A,
    smask: A,
    dst: A,
    dmask: A,
    sport: PortRange,
    dport: PortRange,
    pval: u8,
    pmask: u8,
    id: RuleId,
}

impl<A: Addr> Entry<A> {
    fn new(id: usize, r: &Rule<A>) -> Self {
        Entry {
            src: r.src.addr(),
            smask: A::mask(r.src.len()),
            dst: r.dst.addr(),
            dmask: A::mask(r.dst.len()),
            sport: r.sport,
            dport: r.dport,
            pval: r.proto.unwrap_or(0),
            pmask: if r.proto.is_some() { 0xff } else { 0 },
            id: id as RuleId,
        }
    }

    #[inline(always)]
    fn matches(&self, k: &Key<A>) -> bool {
        k.src.and(self.smask) == self.src
            && k.dst.and(self.dmask) == self.dst
            && self.dport.contains(k.dport)
            && self.sport.contains(k.sport)
            && k.proto & self.pmask == self.pval
    }
}

/// The fields a table hashes, already masked.
type HashKey<A> = (A, A, u16, u16, u8);

#[inline(always)]
fn hash<A: Addr>((s, d, sp, dp, p): HashKey<A>) -> u64 {
    const K1: u64 = 0x9e37_79b9_7f4a_7c15;
    const K2: u64 = 0xd6e8_feb8_6659_fd93;
    let fold = |x: u128| (x as u64) ^ ((x >> 64) as u64).rotate_left(17).wrapping_mul(K2);
    let h = (fold(s.to_u128()) ^ fold(d.to_u128()).rotate_left(32)).wrapping_mul(K1);
    (h ^ (h >> 29) ^ (u64::from(sp) << 24 | u64::from(dp) << 8 | u64::from(p))).wrapping_mul(K2)
}

/// One hash table: buckets in CSR form (`entries[offs[h]..offs[h + 1]]`), sorted by rule.
#[derive(Clone, Debug)]
struct Table<A: Addr> {
    smask: A,
    dmask: A,
    spmask: u16,
    dpmask: u16,
    pmask: u8,
    /// `64 - log2(slots)`: a slot is the top bits of the hash.
    shift: u32,
    /// Lowest rule index in the table.
    min_id: RuleId,
    offs: Vec<u32>,
    entries: Vec<Entry<A>>,
}

impl<A: Addr> Table<A> {
    fn new(t: Tuple, min_id: RuleId) -> Self {
        Table {
            smask: A::mask(t.src),
            dmask: A::mask(t.dst),
            spmask: if t.sport { u16::MAX } else { 0 },
            dpmask: if t.dport { u16::MAX } else { 0 },
            pmask: if t.proto { 0xff } else { 0 },
            shift: 63,
            min_id,
            offs: Vec::new(),
            entries: Vec::new(),
        }
    }

    #[inline(always)]
    fn key(&self, src: A, dst: A, sport: u16, dport: u16, proto: u8) -> HashKey<A> {
        (
            src.and(self.smask),
            dst.and(self.dmask),
            sport & self.spmask,
            dport & self.dpmask,
            proto & self.pmask,
        )
    }

    /// The masked key under which rule `r` (which fits this table) is stored.
    fn rule_key(&self, r: &Rule<A>) -> HashKey<A> {
        self.key(
            r.src.addr(),
            r.dst.addr(),
            r.sport.lo,
            r.dport.lo,
            r.proto.unwrap_or(0),
        )
    }

    #[inline(always)]
    fn slot(&self, k: &Key<A>) -> usize {
        (hash(self.key(k.src, k.dst, k.sport, k.dport, k.proto)) >> self.shift) as usize
    }

    /// The first rule in slot `h` matching `k` with an index below `best`, else `best`.
    #[inline(always)]
    fn scan(&self, h: usize, k: &Key<A>, best: RuleId) -> RuleId {
        let (a, b) = (self.offs[h] as usize, self.offs[h + 1] as usize);
        for e in &self.entries[a..b] {
            if e.id >= best {
                break;
            }
            if e.matches(k) {
                return e.id;
            }
        }
        best
    }

    /// Lays the buckets out by slot; `buckets` holds each masked key's rules in index order.
    fn finish(&mut self, rules: &[Rule<A>], buckets: &foldhash::HashMap<HashKey<A>, Vec<u32>>) {
        let bits = (buckets.len() * 2)
            .next_power_of_two()
            .trailing_zeros()
            .max(1);
        self.shift = 64 - bits;
        let slots = 1usize << bits;
        let mut placed: Vec<(usize, u32)> = buckets
            .iter()
            .flat_map(|(k, ids)| {
                let h = (hash(*k) >> self.shift) as usize;
                ids.iter().map(move |&id| (h, id))
            })
            .collect();
        placed.sort_unstable();
        self.offs = vec![0; slots + 1];
        for &(h, _) in &placed {
            self.offs[h + 1] += 1;
        }
        for h in 0..slots {
            self.offs[h + 1] += self.offs[h];
        }
        self.entries = placed
            .iter()
            .map(|&(_, id)| Entry::new(id as usize, &rules[id as usize]))
            .collect();
    }

    fn memory_usage(&self) -> usize {
        size_of::<Self>()
            + self.offs.capacity() * 4
            + self.entries.capacity() * size_of::<Entry<A>>()
    }
}

/// The compiled TupleMerge classifier.
#[derive(Clone, Debug)]
pub(crate) struct TupleMerge<A: Addr> {
    /// Ordered by lowest rule index.
    tables: Vec<Table<A>>,
}

impl<A: Addr> TupleMerge<A> {
    /// Compiles `rules` with at most `limit` rules per bucket in relaxed tables.
    pub(crate) fn new(rules: &[Rule<A>], limit: usize) -> Self {
        struct Building<A: Addr> {
            tuple: Tuple,
            table: Table<A>,
            buckets: foldhash::HashMap<HashKey<A>, Vec<u32>>,
        }
        let mut tables: Vec<Building<A>> = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            if !can_match(r) {
                continue;
            }
            let t = Tuple::of(r);
            let fitting = tables.iter().position(|b| {
                b.tuple.fits(&t)
                    && b.buckets
                        .get(&b.table.rule_key(r))
                        .is_none_or(|v| v.len() < limit)
            });
            let p = match fitting {
                Some(p) => p,
                None => {
                    let relaxed = t.relaxed();
                    let tuple = if tables.iter().any(|b| b.tuple == relaxed) {
                        t
                    } else {
                        relaxed
                    };
                    // An existing exact table is full for this key: identical masked keys can
                    // only share a bucket, so that bucket grows past the limit.
                    tables
                        .iter()
                        .position(|b| b.tuple == tuple)
                        .unwrap_or_else(|| {
                            let table = Table::new(tuple, i as RuleId);
                            tables.push(Building {
                                tuple,
                                table,
                                buckets: Default::default(),
                            });
                            tables.len() - 1
                        })
                }
            };
            let b = &mut tables[p];
            let key = b.table.rule_key(r);
            b.buckets.entry(key).or_default().push(i as u32);
        }
        let tables = tables
            .into_iter()
            .map(|mut b| {
                b.table.finish(rules, &b.buckets);
                b.table
            })
            .collect();
        TupleMerge { tables }
    }

    /// Heap bytes held.
    pub(crate) fn memory_usage(&self) -> usize {
        self.tables.iter().map(Table::memory_usage).sum::<usize>()
            + (self.tables.capacity() - self.tables.len()) * size_of::<Table<A>>()
    }

    /// The lowest-index rule matching `key`.
    #[inline]
    pub(crate) fn first_match(&self, key: &Key<A>) -> Option<RuleId> {
        let mut best = RuleId::MAX;
        for t in &self.tables {
            if t.min_id >= best {
                break;
            }
            best = t.scan(t.slot(key), key, best);
        }
        (best != RuleId::MAX).then_some(best)
    }

    /// Some rule matching `key`: the first table with a match answers.
    #[inline]
    pub(crate) fn any_match(&self, key: &Key<A>) -> Option<RuleId> {
        self.tables.iter().find_map(|t| {
            let id = t.scan(t.slot(key), key, RuleId::MAX);
            (id != RuleId::MAX).then_some(id)
        })
    }

    /// Number of hash tables (for tests and tuning).
    #[cfg(test)]
    pub(crate) fn tables(&self) -> usize {
        self.tables.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::Prefix;
    use crate::matcher::reference::Linear;

    #[test]
    fn relaxed_tuples_fit_their_rules() {
        for src in 0..=32u8 {
            for dst in [0u8, 7, 8, 9, 31, 32] {
                let t = Tuple {
                    src,
                    dst,
                    sport: true,
                    dport: false,
                    proto: true,
                };
                assert!(t.relaxed().fits(&t), "{t:?}");
                assert!(t.fits(&t));
            }
        }
        let t = Tuple {
            src: 24,
            dst: 0,
            sport: false,
            dport: true,
            proto: true,
        };
        assert!(!t.fits(&Tuple { dport: false, ..t }));
        assert!(!t.fits(&Tuple { src: 23, ..t }));
        assert!(!t.fits(&Tuple { src: 29, ..t }));
    }

    #[test]
    fn full_buckets_spill_and_priority_holds() {
        // 40 rules with one masked key in a relaxed /28 table: buckets must spill.
        let mut rules: Vec<Rule<u32>> = (0..40u32)
            .map(|i| Rule {
                src: Prefix::new(0x0a00_0000 | i, 32),
                dport: PortRange::exact(80),
                proto: Some(6),
                ..Rule::any()
            })
            .collect();
        rules.extend((0..30u16).map(|p| Rule {
            dst: Prefix::new(0x0b00_0000, 8),
            dport: PortRange::exact(p),
            ..Rule::any()
        }));
        rules.push(Rule::any());
        for limit in [1, 2, 12, 100] {
            let tm = TupleMerge::new(&rules, limit);
            assert!(tm.tables() >= 2);
            let lin = Linear::new(rules.clone());
            for i in 0..48u32 {
                for dport in [0u16, 29, 30, 80] {
                    let k = Key {
                        src: 0x0a00_0000 | i,
                        dst: 0x0b00_0001,
                        sport: 1,
                        dport,
                        proto: 6,
                    };
                    assert_eq!(
                        tm.first_match(&k),
                        lin.first_match(&k),
                        "limit={limit} {k:?}"
                    );
                    let any = tm.any_match(&k).expect("catch-all");
                    assert!(rules[any as usize].matches(&k));
                }
            }
        }
    }
}
