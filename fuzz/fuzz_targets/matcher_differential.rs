//! Arbitrary rule sets and keys, IPv4 and IPv6, under every builder option of
//! `matcher::Config` (forced structure or automatic choice, `max_rules`, `max_memory`,
//! `bucket_limit`). What must hold:
//! - a build either succeeds within its limits (rule count, `memory_usage`, the forced
//!   structure, never `Bitset` by automatic choice) or fails with the `BuildError` its limits
//!   explain (`TooManyRules` naming the limit and the first rule over it, `MemoryLimit` with
//!   `needed > limit`), never a panic;
//! - the compiled matcher answers exactly as `reference::Linear`: `first_match`,
//!   `first_match_burst`, `is_match`, and `any_match` names a matching rule iff one exists.
//!
//! When limits refuse a build, the same rules are built again without them (same structure and
//! bucket limit, 256 MiB of memory) so the differential check still runs. A forced `Tree` with no
//! `max_memory` has no bound of its own (the builder's contract), so it is given 256 MiB too.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vpcfw::matcher::reference::Linear;
use vpcfw::matcher::{Addr, Algorithm, BuildErrorKind, Config, Key, Matcher, PortRange, Prefix, Rule};

/// Addresses from a small pool (so rules nest and keys sit on boundaries) or raw.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum AddrPick {
    Zero,
    Max,
    /// `v` in the top byte.
    Top(u8),
    /// `10.x`-like: `0x0a` in the top byte plus a small offset.
    Near(u8),
    Raw(u128),
}

impl AddrPick {
    fn get<A: Addr>(self) -> A {
        let top = |v: u128| v << (u32::from(A::BITS) - 8);
        A::from_u128(match self {
            AddrPick::Zero => 0,
            AddrPick::Max => u128::MAX,
            AddrPick::Top(v) => top(u128::from(v & 0xc0)),
            AddrPick::Near(v) => top(0x0a) + u128::from(v % 16),
            AddrPick::Raw(v) => v,
        })
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum LenPick {
    Any,
    Host,
    Raw(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum PortPick {
    Pool(u8),
    Raw(u16),
}

const PORTS: [u16; 10] = [0, 1, 22, 53, 80, 443, 1023, 1024, 32768, 65535];

impl PortPick {
    fn get(self) -> u16 {
        match self {
            PortPick::Pool(i) => PORTS[usize::from(i) % PORTS.len()],
            PortPick::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum RangePick {
    Any,
    Exact(PortPick),
    /// May be empty (`lo > hi`): such a rule never matches.
    Range(PortPick, PortPick),
}

impl RangePick {
    fn get(self) -> PortRange {
        match self {
            RangePick::Any => PortRange::ANY,
            RangePick::Exact(p) => PortRange::exact(p.get()),
            RangePick::Range(a, b) => PortRange::new(a.get(), b.get()),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct RawRule {
    src: (AddrPick, LenPick),
    dst: (AddrPick, LenPick),
    sport: RangePick,
    dport: RangePick,
    proto: Option<u8>,
}

fn prefix<A: Addr>((a, l): (AddrPick, LenPick)) -> Prefix<A> {
    let len = match l {
        LenPick::Any => 0,
        LenPick::Host => A::BITS,
        // Lengths above the width are capped by `Prefix::new`; keep some of them.
        LenPick::Raw(v) => v % (A::BITS + 3),
    };
    Prefix::new(a.get(), len)
}

impl RawRule {
    fn get<A: Addr>(self) -> Rule<A> {
        Rule {
            src: prefix(self.src),
            dst: prefix(self.dst),
            sport: self.sport.get(),
            dport: self.dport.get(),
            proto: self.proto.map(|p| [6, 17, 1, 58, p][usize::from(p) % 5]),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum KeyPick {
    Free { src: AddrPick, dst: AddrPick, sport: PortPick, dport: PortPick, proto: u8 },
    /// A corner of rule `rule`: each field at its low or high end, or just outside it,
    /// chosen by the bits of `which`.
    Corner { rule: u16, which: u16 },
}

fn corner<A: Addr>(p: Prefix<A>, pick: u16) -> A {
    let lo = p.addr().to_u128();
    let host = !A::mask(p.len()).to_u128() & A::mask(A::BITS).to_u128();
    A::from_u128(match pick & 3 {
        0 => lo,
        1 => lo | host,
        2 => lo.wrapping_sub(1),
        _ => (lo | host).wrapping_add(1),
    })
}

fn port_corner(r: PortRange, pick: u16) -> u16 {
    match pick & 3 {
        0 => r.lo,
        1 => r.hi,
        2 => r.lo.wrapping_sub(1),
        _ => r.hi.wrapping_add(1),
    }
}

impl KeyPick {
    fn get<A: Addr>(self, rules: &[Rule<A>]) -> Key<A> {
        match self {
            KeyPick::Corner { rule, which } if !rules.is_empty() => {
                let r = rules[usize::from(rule) % rules.len()];
                Key {
                    src: corner(r.src, which),
                    dst: corner(r.dst, which >> 2),
                    sport: port_corner(r.sport, which >> 4),
                    dport: port_corner(r.dport, which >> 6),
                    proto: match (r.proto, which >> 8 & 1) {
                        (Some(p), 0) => p,
                        (Some(p), _) => p.wrapping_add(1),
                        (None, _) => (which >> 9) as u8,
                    },
                }
            }
            KeyPick::Corner { which, .. } => Key { src: A::default(), dst: A::default(), sport: which, dport: which, proto: 6 },
            KeyPick::Free { src, dst, sport, dport, proto } => {
                Key { src: src.get(), dst: dst.get(), sport: sport.get(), dport: dport.get(), proto }
            }
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum AlgPick {
    Auto,
    Linear,
    Bitset,
    Tree,
    TupleMerge,
}

impl AlgPick {
    fn get(self) -> Option<Algorithm> {
        match self {
            AlgPick::Auto => None,
            AlgPick::Linear => Some(Algorithm::Linear),
            AlgPick::Bitset => Some(Algorithm::Bitset),
            AlgPick::Tree => Some(Algorithm::Tree),
            AlgPick::TupleMerge => Some(Algorithm::TupleMerge),
        }
    }
}

/// Every option of `matcher::Config`.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct RawConfig {
    max_rules: Option<u16>,
    /// `mantissa << shift` bytes: from 0 to about 1 TiB.
    max_memory: Option<(u16, u8)>,
    algorithm: AlgPick,
    /// 0 is accepted and treated as 1.
    bucket_limit: Option<u8>,
}

impl RawConfig {
    fn get(self) -> Config {
        Config::new()
            .max_rules(self.max_rules.map(usize::from))
            .max_memory(self.max_memory.map(|(m, s)| usize::from(m) << (s % 25)))
            .algorithm(self.algorithm.get())
            .bucket_limit(self.bucket_limit.map(usize::from))
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    v6: bool,
    config: RawConfig,
    rules: Vec<RawRule>,
    /// Extra rules derived from `rules` (so sets cross the automatic thresholds of 64 and 4096
    /// rules without huge inputs): a count class and a seed.
    grow: Option<(u8, u64)>,
    keys: Vec<KeyPick>,
}

/// Counts of extra rules: around the automatic threshold of 64 (linear) and beyond; class 255
/// (rare, slow) crosses the 4096 threshold of the tree, unless `Tree` or `Bitset` is forced
/// (their build time and memory grow much faster than linearly on overlapping rules).
const GROW: [usize; 6] = [8, 57, 70, 130, 300, 700];

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn rules_of<A: Addr>(input: &Input) -> Vec<Rule<A>> {
    let mut rules: Vec<Rule<A>> = input.rules.iter().take(512).map(|r| r.get()).collect();
    if let Some((class, seed)) = input.grow {
        let heavy = matches!(input.config.algorithm, AlgPick::Tree | AlgPick::Bitset);
        let n = if class == 255 && !heavy { 4100 } else { GROW[usize::from(class) % GROW.len()] };
        let mut s = seed;
        for _ in 0..n {
            let x = splitmix(&mut s);
            // Start from a given rule (or "any") and perturb one field: nested, overlapping sets.
            let mut r = if rules.is_empty() { Rule::any() } else { rules[(x as usize) % rules.len()] };
            let y = x >> 32;
            match (x >> 16) % 6 {
                0 => r.src = Prefix::new(A::from_u128(u128::from(y) << (u32::from(A::BITS) - 32)), (y % 33) as u8),
                1 => r.dst = Prefix::new(A::from_u128(u128::from(y) << (u32::from(A::BITS) - 32)), (y % 33) as u8),
                2 => r.sport = PortRange::new(y as u16, (y as u16).saturating_add((y >> 16) as u16 % 1024)),
                3 => r.dport = PortRange::exact(PORTS[(y % 10) as usize]),
                4 => r.proto = [None, Some(6), Some(17), Some(1)][(y % 4) as usize],
                _ => {}
            }
            rules.push(r);
        }
    }
    rules
}

/// Memory for the rebuild after limits refused a build.
const FALLBACK_MEMORY: usize = 256 << 20;

fn check<A: Addr>(input: &Input) {
    let rules = rules_of::<A>(input);
    let mut cfg = input.config.get();
    // A forced tree with no memory limit may replicate overlapping rules without bound (the
    // builder's documented contract: `max_memory` is the guard). Keep the fuzzer's memory sane.
    if cfg.algorithm == Some(Algorithm::Tree) && cfg.max_memory.is_none() {
        cfg.max_memory = Some(FALLBACK_MEMORY);
    }
    let built = Matcher::builder().configure(cfg.clone()).build(rules.clone());
    let m = match built {
        Ok(m) => {
            assert_eq!(m.len(), rules.len());
            assert_eq!(m.rules(), &rules[..], "the matcher keeps the rules in order");
            if let Some(n) = cfg.max_rules {
                assert!(rules.len() <= n, "{} rules accepted over max_rules {n}", rules.len());
            }
            if let Some(b) = cfg.max_memory {
                assert!(m.memory_usage() <= b, "{} bytes accepted over max_memory {b}", m.memory_usage());
            }
            match cfg.algorithm {
                Some(a) => assert_eq!(m.algorithm(), a, "forced structure not used"),
                None => assert_ne!(m.algorithm(), Algorithm::Bitset, "bitset is never chosen automatically"),
            }
            m
        }
        Err(e) => {
            assert!(!e.to_string().is_empty(), "a build error explains itself");
            match *e.kind() {
                BuildErrorKind::TooManyRules { limit } => {
                    assert_eq!(cfg.max_rules, Some(limit), "{e}");
                    assert!(rules.len() > limit, "{e}");
                    assert_eq!(e.rule(), Some(limit as u32), "{e}");
                }
                BuildErrorKind::MemoryLimit { limit, needed } => {
                    assert!(cfg.max_rules.is_none_or(|n| rules.len() <= n), "rule limit checked first: {e}");
                    match cfg.max_memory {
                        Some(b) => {
                            assert_eq!(limit, b, "{e}");
                            assert!(needed > limit, "{e}");
                        }
                        // Without a memory limit only a forced bitset has a cap of its own.
                        None => assert_eq!(cfg.algorithm, Some(Algorithm::Bitset), "{e}"),
                    }
                }
                ref other => panic!("unexpected build error {other:?}: {e}"),
            }
            // Rebuilt without the refusing limits, but within FALLBACK_MEMORY (a forced tree has
            // no bound of its own).
            let free = Config::new()
                .algorithm(cfg.algorithm)
                .bucket_limit(cfg.bucket_limit)
                .max_memory(Some(FALLBACK_MEMORY));
            match Matcher::builder().configure(free).build(rules.clone()) {
                Ok(m) => m,
                Err(e) => {
                    assert!(matches!(e.kind(), BuildErrorKind::MemoryLimit { .. }), "{e}");
                    return;
                }
            }
        }
    };

    let lin = Linear::new(rules.clone());
    let keys: Vec<Key<A>> = input.keys.iter().take(256).map(|k| k.get(&rules)).collect();
    let mut out = vec![Some(u32::MAX); keys.len()];
    m.first_match_burst(&keys, &mut out);
    for (k, burst) in keys.iter().zip(&out) {
        let want = lin.first_match(k);
        assert_eq!(m.first_match(k), want, "first_match {:?} {k:?}", m.algorithm());
        assert_eq!(*burst, want, "first_match_burst {:?} {k:?}", m.algorithm());
        assert_eq!(m.is_match(k), want.is_some(), "is_match {:?} {k:?}", m.algorithm());
        match m.any_match(k) {
            Some(id) => assert!(rules[id as usize].matches(k), "any_match {id} does not match {k:?}"),
            None => assert_eq!(want, None, "any_match missed {k:?}"),
        }
    }
}

fuzz_target!(|input: Input| {
    if input.v6 {
        check::<u128>(&input);
    } else {
        check::<u32>(&input);
    }
});
