//! [`Algorithm::Linear`](super::Algorithm::Linear): a branch-free scan over rules stored
//! column-wise in blocks of [`LANES`].
//!
//! Every field is kept as 32-bit lanes: an address as `BITS / 32` words of (network, mask),
//! each port range as (lo, hi), the protocol as (value, mask). One block of 16 rules is
//! checked with one compare per column: 10 compares for IPv4 (16 lanes of AVX-512, or two
//! halves of AVX2), the first set bit of the resulting lane mask is the first match inside
//! the block, and the first block with a match ends the scan. Padding lanes can never match
//! (their source-port range is empty).

use std::marker::PhantomData;

use super::{Addr, Key, Rule, RuleId};

/// Rules per block.
pub(crate) const LANES: usize = 16;

/// The instruction set a block is scanned with, picked once at build time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Portable scalar loop over the columns.
    Scalar,
    /// Two 8-lane AVX2 halves per block.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// One 16-lane AVX-512F compare chain per block.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub(crate) fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Kernel::Avx2;
            }
        }
        Kernel::Scalar
    }

    /// Every kernel this CPU can run (for tests).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Kernel> {
        let mut v = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                v.push(Kernel::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(Kernel::Avx512);
            }
        }
        v
    }
}

/// Column-wise rule blocks.
#[derive(Clone, Debug)]
pub(crate) struct Block<A: Addr> {
    /// `blocks × cols × LANES` words, block-major: block `b`, column `c`, lane `l` is at
    /// `(b * cols + c) * LANES + l`.
    data: Vec<u32>,
    blocks: usize,
    kernel: Kernel,
    _addr: PhantomData<A>,
}

/// Number of 32-bit words per address of family `A`.
pub(crate) const fn words<A: Addr>() -> usize {
    A::BITS as usize / 32
}

/// Columns per block: (net, mask) per address word for two addresses, then sport lo/hi,
/// dport lo/hi, proto value/mask.
const fn cols<A: Addr>() -> usize {
    4 * words::<A>() + 6
}

/// Splits an address into 32-bit words, most significant first.
#[inline(always)]
fn split<A: Addr, const W: usize>(a: A) -> [u32; W] {
    let v = a.to_u128();
    std::array::from_fn(|j| (v >> (32 * (W - 1 - j))) as u32)
}

impl<A: Addr> Block<A> {
    /// Lays out `rules` for the fastest kernel of this CPU.
    pub(crate) fn new(rules: &[Rule<A>]) -> Self {
        Self::with_kernel(rules, Kernel::detect())
    }

    /// Lays out `rules` for `kernel`.
    pub(crate) fn with_kernel(rules: &[Rule<A>], kernel: Kernel) -> Self {
        let mut data = Vec::new();
        let blocks = layout(rules.iter(), &mut data);
        Block {
            data,
            blocks,
            kernel,
            _addr: PhantomData,
        }
    }

    /// Heap bytes held.
    pub(crate) fn memory_usage(&self) -> usize {
        self.data.capacity() * size_of::<u32>()
    }

    /// The lowest-index rule matching `key`.
    #[inline]
    pub(crate) fn first_match(&self, key: &Key<A>) -> Option<RuleId> {
        match words::<A>() {
            1 => self.scan::<1>(key),
            4 => self.scan::<4>(key),
            _ => unreachable!("addresses are 32 or 128 bits"),
        }
    }

    #[inline(always)]
    fn scan<const W: usize>(&self, key: &Key<A>) -> Option<RuleId> {
        scan::<W>(self.kernel, &self.data, self.blocks, &KeyWords::new(key))
    }
}

/// Appends `rules` to `data` as column-wise blocks (the last one padded with lanes that
/// never match) and returns the number of blocks written.
pub(crate) fn layout<'a, A: Addr>(
    rules: impl ExactSizeIterator<Item = &'a Rule<A>>,
    data: &mut Vec<u32>,
) -> usize {
    let w = words::<A>();
    let cols = cols::<A>();
    let blocks = rules.len().div_ceil(LANES);
    let start = data.len();
    data.resize(start + blocks * cols * LANES, 0);
    let data = &mut data[start..];
    let mut rules = rules;
    for b in 0..blocks {
        for l in 0..LANES {
            let at = |c: usize| (b * cols + c) * LANES + l;
            let Some(r) = rules.next() else {
                // Padding: sport range 1..=0 is empty, so the lane never matches.
                data[at(4 * w)] = 1;
                continue;
            };
            let (sv, sm) = (r.src.addr().to_u128(), A::mask(r.src.len()).to_u128());
            let (dv, dm) = (r.dst.addr().to_u128(), A::mask(r.dst.len()).to_u128());
            for j in 0..w {
                let sh = 32 * (w - 1 - j);
                data[at(2 * j)] = (sv >> sh) as u32;
                data[at(2 * j + 1)] = (sm >> sh) as u32;
                data[at(2 * w + 2 * j)] = (dv >> sh) as u32;
                data[at(2 * w + 2 * j + 1)] = (dm >> sh) as u32;
            }
            data[at(4 * w)] = u32::from(r.sport.lo);
            data[at(4 * w + 1)] = u32::from(r.sport.hi);
            data[at(4 * w + 2)] = u32::from(r.dport.lo);
            data[at(4 * w + 3)] = u32::from(r.dport.hi);
            data[at(4 * w + 4)] = u32::from(r.proto.unwrap_or(0));
            data[at(4 * w + 5)] = if r.proto.is_some() { 0xff } else { 0 };
        }
    }
    blocks
}

/// Scans `blocks` blocks at the start of `data` with `kernel`: the first matching lane,
/// counted from the first block.
#[inline(always)]
pub(crate) fn scan<const W: usize>(
    kernel: Kernel,
    data: &[u32],
    blocks: usize,
    k: &KeyWords<W>,
) -> Option<RuleId> {
    assert!(data.len() >= blocks * (4 * W + 6) * LANES);
    match kernel {
        Kernel::Scalar => scan_scalar::<W>(data, blocks, k),
        // SAFETY: the kernel was chosen by `Kernel::detect`/`available`, which checked that
        // the CPU supports AVX2; the length contract is asserted above.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { x86::scan_avx2::<W>(data, blocks, k) },
        // SAFETY: as above, for AVX-512F.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { x86::scan_avx512::<W>(data, blocks, k) },
    }
}

/// A key split into 32-bit lanes.
pub(crate) struct KeyWords<const W: usize> {
    src: [u32; W],
    dst: [u32; W],
    sport: u32,
    dport: u32,
    proto: u32,
}

impl<const W: usize> KeyWords<W> {
    /// Splits `key`; `W` must be `A::BITS / 32`.
    #[inline(always)]
    pub(crate) fn new<A: Addr>(key: &Key<A>) -> Self {
        KeyWords {
            src: split::<A, W>(key.src),
            dst: split::<A, W>(key.dst),
            sport: u32::from(key.sport),
            dport: u32::from(key.dport),
            proto: u32::from(key.proto),
        }
    }
}

fn scan_scalar<const W: usize>(data: &[u32], blocks: usize, k: &KeyWords<W>) -> Option<RuleId> {
    let cols = 4 * W + 6;
    for b in 0..blocks {
        let blk = &data[b * cols * LANES..(b + 1) * cols * LANES];
        let col = |c: usize| &blk[c * LANES..(c + 1) * LANES];
        let mut bits = 0u32;
        for l in 0..LANES {
            let mut ok = true;
            for j in 0..W {
                ok &= k.src[j] & col(2 * j + 1)[l] == col(2 * j)[l];
                ok &= k.dst[j] & col(2 * W + 2 * j + 1)[l] == col(2 * W + 2 * j)[l];
            }
            let p = 4 * W;
            ok &= col(p)[l] <= k.sport && k.sport <= col(p + 1)[l];
            ok &= col(p + 2)[l] <= k.dport && k.dport <= col(p + 3)[l];
            ok &= k.proto & col(p + 5)[l] == col(p + 4)[l];
            bits |= u32::from(ok) << l;
        }
        if bits != 0 {
            return Some((b * LANES) as RuleId + bits.trailing_zeros());
        }
    }
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{KeyWords, LANES};
    use crate::matcher::RuleId;

    /// # Safety
    /// The CPU must support AVX-512F, and `data.len() >= blocks * (4W+6) * LANES`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scan_avx512<const W: usize>(
        data: &[u32],
        blocks: usize,
        k: &KeyWords<W>,
    ) -> Option<RuleId> {
        let cols = 4 * W + 6;
        debug_assert!(data.len() >= blocks * cols * LANES);
        let src: [__m512i; W] = std::array::from_fn(|j| _mm512_set1_epi32(k.src[j] as i32));
        let dst: [__m512i; W] = std::array::from_fn(|j| _mm512_set1_epi32(k.dst[j] as i32));
        let sport = _mm512_set1_epi32(k.sport as i32);
        let dport = _mm512_set1_epi32(k.dport as i32);
        let proto = _mm512_set1_epi32(k.proto as i32);
        let p = 4 * W;
        for b in 0..blocks {
            let base = data.as_ptr().wrapping_add(b * cols * LANES);
            macro_rules! col {
                ($c:expr) => {
                    // SAFETY: column `$c` of block `b` is 16 in-bounds u32 (caller's length
                    // contract); `loadu` has no alignment requirement.
                    unsafe { _mm512_loadu_si512(base.add($c * LANES).cast()) }
                };
            }
            let mut m: __mmask16 = 0xffff;
            for j in 0..W {
                m = _mm512_mask_cmpeq_epi32_mask(
                    m,
                    _mm512_and_si512(src[j], col!(2 * j + 1)),
                    col!(2 * j),
                );
                m = _mm512_mask_cmpeq_epi32_mask(
                    m,
                    _mm512_and_si512(dst[j], col!(2 * W + 2 * j + 1)),
                    col!(2 * W + 2 * j),
                );
            }
            m = _mm512_mask_cmple_epu32_mask(m, col!(p), sport);
            m = _mm512_mask_cmple_epu32_mask(m, sport, col!(p + 1));
            m = _mm512_mask_cmple_epu32_mask(m, col!(p + 2), dport);
            m = _mm512_mask_cmple_epu32_mask(m, dport, col!(p + 3));
            m = _mm512_mask_cmpeq_epi32_mask(m, _mm512_and_si512(proto, col!(p + 5)), col!(p + 4));
            if m != 0 {
                return Some((b * LANES) as RuleId + u32::from(m).trailing_zeros());
            }
        }
        None
    }

    /// # Safety
    /// The CPU must support AVX2, and `data.len() >= blocks * (4W+6) * LANES`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scan_avx2<const W: usize>(
        data: &[u32],
        blocks: usize,
        k: &KeyWords<W>,
    ) -> Option<RuleId> {
        let cols = 4 * W + 6;
        debug_assert!(data.len() >= blocks * cols * LANES);
        let src: [__m256i; W] = std::array::from_fn(|j| _mm256_set1_epi32(k.src[j] as i32));
        let dst: [__m256i; W] = std::array::from_fn(|j| _mm256_set1_epi32(k.dst[j] as i32));
        // Ports and protocols are below 2^16, so signed compares are exact.
        let sport = _mm256_set1_epi32(k.sport as i32);
        let dport = _mm256_set1_epi32(k.dport as i32);
        let proto = _mm256_set1_epi32(k.proto as i32);
        let p = 4 * W;
        for b in 0..blocks {
            let mut bits = 0u32;
            for h in 0..2 {
                let base = data.as_ptr().wrapping_add(b * cols * LANES + h * 8);
                macro_rules! col {
                    ($c:expr) => {
                        // SAFETY: lanes 8h..8h+8 of column `$c` of block `b` are in bounds
                        // (caller's length contract); `loadu` has no alignment requirement.
                        unsafe { _mm256_loadu_si256(base.add($c * LANES).cast()) }
                    };
                }
                let mut ok = _mm256_set1_epi32(-1);
                for j in 0..W {
                    let s =
                        _mm256_cmpeq_epi32(_mm256_and_si256(src[j], col!(2 * j + 1)), col!(2 * j));
                    let d = _mm256_cmpeq_epi32(
                        _mm256_and_si256(dst[j], col!(2 * W + 2 * j + 1)),
                        col!(2 * W + 2 * j),
                    );
                    ok = _mm256_and_si256(ok, _mm256_and_si256(s, d));
                }
                let bad = _mm256_or_si256(
                    _mm256_or_si256(
                        _mm256_cmpgt_epi32(col!(p), sport),
                        _mm256_cmpgt_epi32(sport, col!(p + 1)),
                    ),
                    _mm256_or_si256(
                        _mm256_cmpgt_epi32(col!(p + 2), dport),
                        _mm256_cmpgt_epi32(dport, col!(p + 3)),
                    ),
                );
                let pr = _mm256_cmpeq_epi32(_mm256_and_si256(proto, col!(p + 5)), col!(p + 4));
                ok = _mm256_andnot_si256(bad, _mm256_and_si256(ok, pr));
                bits |= (_mm256_movemask_ps(_mm256_castsi256_ps(ok)) as u32) << (8 * h);
            }
            if bits != 0 {
                return Some((b * LANES) as RuleId + bits.trailing_zeros());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::reference::Linear;
    use crate::matcher::{PortRange, Prefix};

    fn rules_v4() -> Vec<Rule<u32>> {
        let mut v = Vec::new();
        for i in 0..37u32 {
            v.push(Rule {
                src: Prefix::new(0x0a00_0000 | (i << 8), 24 - (i % 3) as u8 * 8),
                dst: Prefix::new(0xc0a8_0000 | i, if i % 2 == 0 { 32 } else { 0 }),
                sport: if i % 5 == 0 {
                    PortRange::new(1024, 65535)
                } else {
                    PortRange::ANY
                },
                dport: PortRange::new(i as u16 * 10, i as u16 * 10 + (i % 4) as u16),
                proto: if i % 7 == 0 {
                    None
                } else {
                    Some(6 + (i % 2) as u8 * 11)
                },
            });
        }
        v.push(Rule::any());
        v
    }

    fn keys_v4(rules: &[Rule<u32>]) -> Vec<Key<u32>> {
        let mut keys = Vec::new();
        for r in rules {
            for d in [0u16, 1, 3] {
                for proto in [6u8, 17, 1] {
                    keys.push(Key {
                        src: r.src.addr() | 5,
                        dst: r.dst.addr(),
                        sport: r.sport.lo.saturating_add(d),
                        dport: r.dport.lo.saturating_add(d),
                        proto,
                    });
                }
            }
        }
        keys
    }

    #[test]
    fn every_kernel_agrees_with_reference_v4() {
        let rules = rules_v4();
        let lin = Linear::new(rules.clone());
        let keys = keys_v4(&rules);
        for kernel in Kernel::available() {
            for n in [0, 1, 15, 16, 17, rules.len() - 1, rules.len()] {
                let blk = Block::with_kernel(&rules[..n], kernel);
                let lin = Linear::new(rules[..n].to_vec());
                for k in &keys {
                    assert_eq!(
                        blk.first_match(k),
                        lin.first_match(k),
                        "{kernel:?} n={n} {k:?}"
                    );
                }
            }
        }
        assert!(
            keys.iter()
                .any(|k| lin.first_match(k).is_some_and(|i| i < 37))
        );
    }

    #[test]
    fn every_kernel_agrees_with_reference_v6() {
        let rules: Vec<Rule<u128>> = rules_v4()
            .iter()
            .enumerate()
            .map(|(i, r)| Rule {
                src: Prefix::new(
                    u128::from(r.src.addr()) << 96 | i as u128,
                    r.src.len() + (i % 2) as u8 * 96,
                ),
                dst: Prefix::new(u128::from(r.dst.addr()) << 64, r.dst.len() * 4),
                sport: r.sport,
                dport: r.dport,
                proto: r.proto,
            })
            .collect();
        let keys: Vec<Key<u128>> = keys_v4(&rules_v4())
            .into_iter()
            .enumerate()
            .map(|(i, k)| Key {
                src: u128::from(k.src) << 96 | (i % 40) as u128,
                dst: u128::from(k.dst) << 64 | 0xffff,
                sport: k.sport,
                dport: k.dport,
                proto: k.proto,
            })
            .collect();
        let lin = Linear::new(rules.clone());
        for kernel in Kernel::available() {
            let blk = Block::with_kernel(&rules, kernel);
            for k in &keys {
                assert_eq!(blk.first_match(k), lin.first_match(k), "{kernel:?} {k:?}");
            }
        }
    }

    #[test]
    fn empty_ranges_and_padding_never_match() {
        let mut r = Rule::<u32>::any();
        r.dport = PortRange::new(10, 9);
        for kernel in Kernel::available() {
            let blk = Block::with_kernel(&[r], kernel);
            for v in [0u16, 1, 9, 10, 65535] {
                let k = Key {
                    src: 0u32,
                    dst: 0,
                    sport: v,
                    dport: v,
                    proto: 0,
                };
                assert_eq!(blk.first_match(&k), None, "{kernel:?}");
            }
            let blk = Block::with_kernel(&[Rule::<u32>::any()], kernel);
            let k = Key {
                src: 0,
                dst: 0,
                sport: 1,
                dport: 0,
                proto: 0,
            };
            assert_eq!(blk.first_match(&k), Some(0), "{kernel:?}");
        }
    }
}
