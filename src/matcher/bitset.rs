//! [`Algorithm::Bitset`](super::Algorithm::Bitset): per-field elementary intervals with rule
//! bitsets (Lakshman–Stiliadis).
//!
//! Each of the five fields is cut into elementary intervals at every rule boundary. Every
//! interval maps to the bitset of rules (bit `i` = rule `i`) whose range covers it; equal
//! bitsets are stored once in one arena, so an interval is just an offset. A lookup finds the
//! five intervals (branch-free binary searches; a 256-entry table for the protocol), then ANDs
//! the five bitsets word by word: the first set bit is the first match, and the scan stops at
//! the first non-zero word.

use super::{Addr, BURST, Key, Rule, RuleId, can_match, prefetch};

/// One field: sorted interval starts (the first interval, starting at 0, is implicit) and the
/// arena offset of each interval's bitset (`offs.len() == bounds.len() + 1`).
#[derive(Clone, Debug)]
struct Field<T> {
    bounds: Vec<T>,
    offs: Vec<u32>,
}

impl<T: Copy + Ord> Field<T> {
    /// Arena offset of the bitset for value `v`.
    #[inline(always)]
    fn get(&self, v: T) -> usize {
        self.offs[rank(&self.bounds, v)] as usize
    }

    fn memory_usage(&self) -> usize {
        self.bounds.capacity() * size_of::<T>() + self.offs.capacity() * size_of::<u32>()
    }
}

/// Number of elements of the sorted slice `b` that are `<= v`, by a branch-free binary search.
#[inline(always)]
fn rank<T: Copy + Ord>(b: &[T], v: T) -> usize {
    if b.is_empty() {
        return 0;
    }
    let mut base = 0usize;
    let mut n = b.len();
    while n > 1 {
        let half = n / 2;
        base = if b[base + half] <= v {
            base + half
        } else {
            base
        };
        n -= half;
    }
    base + usize::from(b[base] <= v)
}

/// The compiled bitset classifier.
#[derive(Clone, Debug)]
pub(crate) struct Bitset<A: Addr> {
    /// 64-bit words per bitset.
    words: usize,
    /// Every distinct bitset, `words` words each.
    arena: Vec<u64>,
    src: Field<A>,
    dst: Field<A>,
    sport: Field<u16>,
    dport: Field<u16>,
    /// Arena offset per protocol number.
    proto: Vec<u32>,
}

/// Interns bitsets into the arena, giving up once it would exceed `cap` bytes.
struct Interner {
    words: usize,
    arena: Vec<u64>,
    seen: foldhash::HashMap<Box<[u64]>, u32>,
    cap: usize,
}

impl Interner {
    fn intern(&mut self, set: &[u64]) -> Result<u32, usize> {
        if let Some(&o) = self.seen.get(set) {
            return Ok(o);
        }
        let o = self.arena.len();
        let bytes = (o + self.words) * size_of::<u64>();
        if bytes > self.cap || o + self.words > u32::MAX as usize {
            return Err(bytes);
        }
        self.arena.extend_from_slice(set);
        self.seen.insert(set.into(), o as u32);
        Ok(o as u32)
    }

    /// Sweeps the inclusive ranges `(rule, lo, hi)` of one field over `0..=max`, returning
    /// the interval starts after 0 and each interval's bitset offset.
    fn field(
        &mut self,
        ranges: &[(usize, u128, u128)],
        max: u128,
    ) -> Result<(Vec<u128>, Vec<u32>), usize> {
        // (point, rule, entering?) — a rule enters at `lo` and leaves at `hi + 1`.
        let mut ev: Vec<(u128, usize, bool)> = Vec::with_capacity(ranges.len() * 2);
        for &(id, lo, hi) in ranges {
            ev.push((lo, id, true));
            if hi < max {
                ev.push((hi + 1, id, false));
            }
        }
        ev.sort_unstable_by_key(|e| e.0);
        let mut cur = vec![0u64; self.words];
        let (mut bounds, mut offs) = (Vec::new(), Vec::new());
        let mut i = 0;
        let mut p = 0u128;
        loop {
            while let Some(&(at, id, enter)) = ev.get(i)
                && at == p
            {
                if enter {
                    cur[id / 64] |= 1 << (id % 64);
                } else {
                    cur[id / 64] &= !(1 << (id % 64));
                }
                i += 1;
            }
            let off = self.intern(&cur)?;
            if offs.last() != Some(&off) {
                if !offs.is_empty() {
                    bounds.push(p);
                }
                offs.push(off);
            }
            match ev.get(i) {
                Some(e) => p = e.0,
                None => break,
            }
        }
        Ok((bounds, offs))
    }
}

impl<A: Addr> Bitset<A> {
    /// Compiles `rules`; fails with a lower bound on the bytes needed if the bitsets would
    /// take more than `cap` bytes.
    pub(crate) fn new(rules: &[Rule<A>], cap: usize) -> Result<Self, usize> {
        let words = rules.len().div_ceil(64).max(1);
        let mut int = Interner {
            words,
            arena: Vec::new(),
            seen: Default::default(),
            cap,
        };
        let live: Vec<(usize, &Rule<A>)> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| can_match(r))
            .collect();
        let amax = A::mask(A::BITS).to_u128();
        let addr = |int: &mut Interner, pick: fn(&Rule<A>) -> super::Prefix<A>| {
            let ranges: Vec<_> = live
                .iter()
                .map(|&(i, r)| {
                    let p = pick(r);
                    let lo = p.addr().to_u128();
                    (i, lo, lo | (amax & !A::mask(p.len()).to_u128()))
                })
                .collect();
            let (b, offs) = int.field(&ranges, amax)?;
            Ok::<_, usize>(Field {
                bounds: b.into_iter().map(A::from_u128).collect(),
                offs,
            })
        };
        let src = addr(&mut int, |r| r.src)?;
        let dst = addr(&mut int, |r| r.dst)?;
        let port = |int: &mut Interner, pick: fn(&Rule<A>) -> super::PortRange| {
            let ranges: Vec<_> = live
                .iter()
                .map(|&(i, r)| (i, u128::from(pick(r).lo), u128::from(pick(r).hi)))
                .collect();
            let (b, offs) = int.field(&ranges, u128::from(u16::MAX))?;
            Ok::<_, usize>(Field {
                bounds: b.into_iter().map(|v| v as u16).collect(),
                offs,
            })
        };
        let sport = port(&mut int, |r| r.sport)?;
        let dport = port(&mut int, |r| r.dport)?;
        let ranges: Vec<_> = live
            .iter()
            .map(|&(i, r)| match r.proto {
                Some(p) => (i, u128::from(p), u128::from(p)),
                None => (i, 0, 255),
            })
            .collect();
        let (b, offs) = int.field(&ranges, 255)?;
        let pf = Field {
            bounds: b.into_iter().map(|v| v as u8).collect(),
            offs,
        };
        let proto = (0..=255u8).map(|p| pf.get(p) as u32).collect();
        Ok(Bitset {
            words,
            arena: int.arena,
            src,
            dst,
            sport,
            dport,
            proto,
        })
    }

    /// Heap bytes held.
    pub(crate) fn memory_usage(&self) -> usize {
        self.arena.capacity() * size_of::<u64>()
            + self.src.memory_usage()
            + self.dst.memory_usage()
            + self.sport.memory_usage()
            + self.dport.memory_usage()
            + self.proto.capacity() * size_of::<u32>()
    }

    /// Arena offsets of the five bitsets for `key`.
    #[inline(always)]
    fn offsets(&self, key: &Key<A>) -> [usize; 5] {
        [
            self.src.get(key.src),
            self.dst.get(key.dst),
            self.sport.get(key.sport),
            self.dport.get(key.dport),
            self.proto[usize::from(key.proto)] as usize,
        ]
    }

    /// First set bit of the AND of the five bitsets at `o`.
    #[inline(always)]
    fn scan(&self, o: [usize; 5]) -> Option<RuleId> {
        let w = self.words;
        let a = &self.arena;
        let (s, d, sp, dp, p) = (
            &a[o[0]..o[0] + w],
            &a[o[1]..o[1] + w],
            &a[o[2]..o[2] + w],
            &a[o[3]..o[3] + w],
            &a[o[4]..o[4] + w],
        );
        for i in 0..w {
            let x = s[i] & d[i] & sp[i] & dp[i] & p[i];
            if x != 0 {
                return Some((i * 64) as RuleId + x.trailing_zeros());
            }
        }
        None
    }

    /// The lowest-index rule matching `key`.
    #[inline]
    pub(crate) fn first_match(&self, key: &Key<A>) -> Option<RuleId> {
        self.scan(self.offsets(key))
    }

    /// First matches of up to [`BURST`] keys: all interval searches first (independent, so
    /// they overlap), with the first bitset words prefetched, then the AND scans.
    pub(crate) fn first_match_burst(&self, keys: &[Key<A>], out: &mut [Option<RuleId>]) {
        let mut offs = [[0usize; 5]; BURST];
        for (o, k) in offs.iter_mut().zip(keys) {
            *o = self.offsets(k);
            for &x in o.iter() {
                prefetch(self.arena.as_ptr().wrapping_add(x));
            }
        }
        for (o, slot) in offs.iter().zip(out.iter_mut()).take(keys.len()) {
            *slot = self.scan(*o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::reference::Linear;
    use crate::matcher::{PortRange, Prefix};

    #[test]
    fn rank_counts_bounds_at_or_below() {
        let b = [3u32, 7, 7, 10];
        for (v, want) in [
            (0, 0),
            (2, 0),
            (3, 1),
            (6, 1),
            (7, 3),
            (9, 3),
            (10, 4),
            (u32::MAX, 4),
        ] {
            assert_eq!(rank(&b, v), want, "v={v}");
        }
        assert_eq!(rank::<u32>(&[], 5), 0);
        for n in 1..20u32 {
            let b: Vec<u32> = (0..n).map(|i| i * 2 + 1).collect();
            for v in 0..2 * n + 2 {
                assert_eq!(rank(&b, v), b.iter().filter(|&&x| x <= v).count());
            }
        }
    }

    #[test]
    fn intervals_split_at_every_boundary() {
        let rules = vec![
            Rule {
                dport: PortRange::new(80, 80),
                proto: Some(6),
                ..Rule::<u32>::any()
            },
            Rule {
                dport: PortRange::new(0, 1023),
                ..Rule::any()
            },
            Rule {
                src: Prefix::new(0xffff_ff00, 24),
                dport: PortRange::new(65535, 65535),
                ..Rule::any()
            },
            Rule {
                src: Prefix::new(0, 1),
                sport: PortRange::new(5, 4),
                ..Rule::any()
            },
        ];
        let b = Bitset::new(&rules, usize::MAX).unwrap();
        let lin = Linear::new(rules);
        for src in [
            0u32,
            1,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_feff,
            0xffff_ff00,
            u32::MAX,
        ] {
            for dport in [0u16, 79, 80, 81, 1023, 1024, 65534, 65535] {
                for proto in [0u8, 6, 17, 255] {
                    let k = Key {
                        src,
                        dst: src,
                        sport: 4,
                        dport,
                        proto,
                    };
                    assert_eq!(b.first_match(&k), lin.first_match(&k), "{k:?}");
                }
            }
        }
    }

    #[test]
    fn memory_cap_is_enforced() {
        let rules: Vec<Rule<u32>> = (0..300u32)
            .map(|i| Rule {
                src: Prefix::new(i << 20, 12),
                ..Rule::any()
            })
            .collect();
        let need = Bitset::new(&rules, usize::MAX).unwrap().arena.len() * 8;
        assert!(Bitset::new(&rules, need / 2).is_err());
        assert!(Bitset::new(&rules, need).is_ok());
    }
}
