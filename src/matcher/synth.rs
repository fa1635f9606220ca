//! Synthetic AWS-shaped rule sets and keys, for tests and benchmarks.
//!
//! Real NACL entries and security-group rules have three live fields: a protocol (or all
//! protocols), one remote CIDR and one destination port range (for ICMP: a type and code).
//! The local side and the source port are wildcards. The generators here draw such rules from
//! a fixed-seed generator, so every run sees the same sets.

use super::{Key, PortRange, Prefix, Rule};

/// A small deterministic generator (xorshift64*), so tests and benches need no RNG crate.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is remapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// One AWS-shaped IPv4 rule: protocol (TCP 70 %, UDP 18 %, ICMP 6 %, all 6 %), a remote CIDR
/// as source and a destination port range (one port, a small range, or all; ICMP: a type and
/// optional code). As in real policies, `0.0.0.0/0` only opens single well-known TCP/UDP ports,
/// and all-protocol or all-port rules come from narrower CIDRs (peers, VPC ranges).
pub fn aws_rule(rng: &mut Rng) -> Rule<u32> {
    let mut r = Rule::any();
    match rng.below(50) {
        0..35 => {
            r.proto = Some(6);
            r.dport = tcp_udp_ports(rng);
        }
        35..44 => {
            r.proto = Some(17);
            r.dport = tcp_udp_ports(rng);
        }
        44..47 => {
            r.proto = Some(1);
            r.sport = PortRange::exact([0u16, 3, 8, 11][rng.below(4) as usize]);
            if rng.below(2) == 0 {
                r.dport = PortRange::exact(rng.below(16) as u16);
            }
        }
        _ => {}
    }
    let narrow_only = r.proto.is_none() || r.dport.is_any();
    let len = loop {
        let len = [32u8, 32, 32, 24, 24, 20, 16, 16, 8, 0][rng.below(10) as usize];
        if !(narrow_only && len < 16) {
            break len;
        }
    };
    if len == 0 && !(r.proto == Some(1) || r.dport.lo == r.dport.hi) {
        r.dport = PortRange::exact(443);
    }
    r.src = Prefix::new(0x0a00_0000 | (rng.next_u64() as u32 & 0x00ff_ffff), len);
    r
}

fn tcp_udp_ports(rng: &mut Rng) -> PortRange {
    const COMMON: [u16; 10] = [22, 80, 443, 3306, 5432, 6379, 8080, 8443, 53, 123];
    match rng.below(20) {
        0..12 => PortRange::exact(COMMON[rng.below(10) as usize]),
        12..15 => PortRange::exact(1024 + rng.below(20000) as u16),
        15..18 => {
            let lo = 1024 + rng.below(30000) as u16;
            PortRange::new(lo, lo + rng.below(2000) as u16)
        }
        _ => PortRange::ANY,
    }
}

/// A 40-entry network ACL direction: AWS-shaped entries in rule-number order, the last a
/// catch-all (AWS's implicit `*` deny is then rule 39).
pub fn nacl40(seed: u64) -> Vec<Rule<u32>> {
    let mut rng = Rng::new(seed);
    let mut v: Vec<Rule<u32>> = (0..39).map(|_| aws_rule(&mut rng)).collect();
    v.push(Rule::any());
    v
}

/// The union of `groups` security groups of `per_group` AWS-shaped rules each, as one list
/// (security groups have no order, so any-match is the query that matters).
pub fn sg_union(seed: u64, groups: usize, per_group: usize) -> Vec<Rule<u32>> {
    let mut rng = Rng::new(seed);
    (0..groups * per_group)
        .map(|_| aws_rule(&mut rng))
        .collect()
}

/// `n` keys for `rules`: about 70 % drawn inside a random rule (so they hit, often a later
/// rule shadowed by none), the rest uniformly random in 10.0.0.0/8 (mostly misses or
/// catch-alls).
pub fn keys_for(rules: &[Rule<u32>], n: usize, seed: u64) -> Vec<Key<u32>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let mut k = Key {
                src: 0x0a00_0000 | (rng.next_u64() as u32 & 0x00ff_ffff),
                dst: rng.next_u64() as u32,
                sport: rng.next_u64() as u16,
                dport: rng.next_u64() as u16,
                proto: [6u8, 6, 17, 1][rng.below(4) as usize],
            };
            if !rules.is_empty() && rng.below(10) < 7 {
                let r = &rules[rng.below(rules.len() as u64) as usize];
                let host = !u32::MAX
                    .checked_shl(32 - u32::from(r.src.len()))
                    .unwrap_or(0);
                k.src = r.src.addr() | (rng.next_u64() as u32 & host);
                let pick = |rng: &mut Rng, p: PortRange| {
                    p.lo + rng.below(u64::from(p.hi - p.lo) + 1) as u16
                };
                k.sport = pick(&mut rng, r.sport);
                k.dport = pick(&mut rng, r.dport);
                k.proto = r.proto.unwrap_or(k.proto);
            }
            k
        })
        .collect()
}
