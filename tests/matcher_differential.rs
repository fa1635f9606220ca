//! Compiled matcher == linear reference: property tests over arbitrary rule sets (IPv4 and
//! IPv6, every structure), AWS-shaped sets, and the ClassBench traces in
//! `../shared/classbench`.
//!
//! The normal run checks the 40/100/1K sets on every trace header and the 10K sets on a sample
//! of their trace (plus, on every header, that the answer matches and is at or before the
//! header's source rule). `cargo test --release -- --ignored` checks the 10K and 100K sets on
//! every header against the reference.

use std::path::PathBuf;

use proptest::prelude::*;
use vpcfw::matcher::classbench::{self, TraceEntry};
use vpcfw::matcher::reference::Linear;
use vpcfw::matcher::{
    Addr, Algorithm, BuildErrorKind, Config, Key, LINEAR_MAX_RULES, Matcher, PortRange, Prefix,
    Rule, synth,
};

const ALGORITHMS: [Option<Algorithm>; 5] = [
    None,
    Some(Algorithm::Linear),
    Some(Algorithm::Bitset),
    Some(Algorithm::Tree),
    Some(Algorithm::TupleMerge),
];

fn build<A: Addr>(
    rules: &[Rule<A>],
    alg: Option<Algorithm>,
    bucket_limit: Option<usize>,
) -> Matcher<A> {
    Matcher::builder()
        .configure(Config::new().algorithm(alg).bucket_limit(bucket_limit))
        .build(rules.to_vec())
        .expect("build")
}

/// The partitioned forest of [`Algorithm::Tree`], forced at any size.
fn forest<A: Addr>(rules: &[Rule<A>], bucket_limit: Option<usize>) -> Matcher<A> {
    Matcher::builder()
        .configure(
            Config::new()
                .algorithm(Some(Algorithm::Tree))
                .bucket_limit(bucket_limit)
                .tree_partition_above(Some(0)),
        )
        .build(rules.to_vec())
        .expect("build")
}

/// Checks every query of `m` against the reference on `keys`.
fn check<A: Addr>(m: &Matcher<A>, lin: &Linear<A>, keys: &[Key<A>]) -> Result<(), TestCaseError> {
    let mut out = vec![None; keys.len()];
    m.first_match_burst(keys, &mut out);
    for (k, burst) in keys.iter().zip(&out) {
        let want = lin.first_match(k);
        prop_assert_eq!(m.first_match(k), want, "{:?} {:?}", m.algorithm(), k);
        prop_assert_eq!(*burst, want, "burst {:?} {:?}", m.algorithm(), k);
        prop_assert_eq!(m.is_match(k), want.is_some());
        if let Some(any) = m.any_match(k) {
            prop_assert!(
                m.rules()[any as usize].matches(k),
                "any_match {} does not match {:?}",
                any,
                k
            );
        }
    }
    Ok(())
}

/// Address bits drawn from a small pool so that rules nest and keys land on boundaries.
fn addr_pool<A: Addr>() -> impl Strategy<Value = A> {
    let top = |v: u128| A::from_u128(v << (A::BITS as u32 - 8).min(120));
    prop_oneof![
        Just(A::from_u128(0)),
        Just(A::from_u128(u128::MAX)),
        (0u128..4).prop_map(move |v| top(v * 0x40)),
        (0u128..16)
            .prop_map(move |v| top(0x0a).to_u128().wrapping_add(v))
            .prop_map(A::from_u128),
        any::<u128>().prop_map(A::from_u128),
    ]
}

fn prefix<A: Addr>() -> impl Strategy<Value = Prefix<A>> {
    let bits = A::BITS;
    (
        addr_pool::<A>(),
        prop_oneof![
            Just(0u8),
            Just(bits),
            Just(bits - 1),
            Just(bits / 4),
            0..=bits
        ],
    )
        .prop_map(|(a, l)| Prefix::new(a, l))
}

/// Port ranges: wildcards, exact values, small and nested ranges, ICMP-style small numbers,
/// the extremes, and (rarely) empty ranges.
fn ports() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        4 => Just(PortRange::ANY),
        4 => (0u16..20).prop_map(PortRange::exact),
        2 => (0u16..20, 0u16..10).prop_map(|(lo, w)| PortRange::new(lo, lo + w)),
        1 => Just(PortRange::exact(65535)),
        1 => (0u16..=65535, 0u16..=65535).prop_map(|(a, b)| PortRange::new(a.min(b), a.max(b))),
        1 => (1u16..20).prop_map(|v| PortRange::new(v, v - 1)),
    ]
}

fn proto() -> impl Strategy<Value = Option<u8>> {
    prop_oneof![3 => Just(None), 3 => Just(Some(6)), 2 => Just(Some(17)), 1 => Just(Some(1)), 1 => any::<u8>().prop_map(Some)]
}

fn rule<A: Addr>() -> impl Strategy<Value = Rule<A>> {
    (prefix::<A>(), prefix::<A>(), ports(), ports(), proto()).prop_map(
        |(src, dst, sport, dport, proto)| Rule {
            src,
            dst,
            sport,
            dport,
            proto,
        },
    )
}

/// Rule lists with duplicates: some rules are repeated copies of earlier ones.
fn rules<A: Addr>(max: usize) -> impl Strategy<Value = Vec<Rule<A>>> {
    (
        prop::collection::vec(rule::<A>(), 0..max),
        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    )
        .prop_map(|(mut v, dups)| {
            if !v.is_empty() {
                for d in dups {
                    let r = v[d.index(v.len())];
                    v.push(r);
                }
            }
            v
        })
}

/// Keys at and around every rule's corners, plus random ones.
fn keys_near<A: Addr>(rules: &[Rule<A>], random: &[Key<A>]) -> Vec<Key<A>> {
    let mut keys = random.to_vec();
    let last = |p: &Prefix<A>| {
        A::from_u128(
            p.addr().to_u128() | (A::mask(A::BITS).to_u128() & !A::mask(p.len()).to_u128()),
        )
    };
    for (i, r) in rules.iter().enumerate().take(64) {
        let proto = r.proto.unwrap_or(i as u8);
        keys.push(Key {
            src: r.src.addr(),
            dst: r.dst.addr(),
            sport: r.sport.lo,
            dport: r.dport.lo,
            proto,
        });
        keys.push(Key {
            src: last(&r.src),
            dst: last(&r.dst),
            sport: r.sport.hi,
            dport: r.dport.hi,
            proto,
        });
        keys.push(Key {
            src: A::from_u128(last(&r.src).to_u128().wrapping_add(1)),
            dst: r.dst.addr(),
            sport: r.sport.hi.wrapping_add(1),
            dport: r.dport.lo.wrapping_sub(1),
            proto: proto.wrapping_add(1),
        });
    }
    keys
}

fn key<A: Addr>() -> impl Strategy<Value = Key<A>> {
    (
        addr_pool::<A>(),
        addr_pool::<A>(),
        ports(),
        ports(),
        any::<u8>(),
    )
        .prop_map(|(src, dst, s, d, proto)| Key {
            src,
            dst,
            sport: s.lo,
            dport: d.hi,
            proto,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn v4_every_structure(rules in rules::<u32>(90), random in prop::collection::vec(key::<u32>(), 0..40), limit in prop_oneof![Just(None), (1usize..4).prop_map(Some)]) {
        let lin = Linear::new(rules.clone());
        let keys = keys_near(&rules, &random);
        for alg in ALGORITHMS {
            check(&build(&rules, alg, limit), &lin, &keys)?;
        }
        check(&forest(&rules, limit), &lin, &keys)?;
    }

    #[test]
    fn v6_every_structure(rules in rules::<u128>(90), random in prop::collection::vec(key::<u128>(), 0..40), limit in prop_oneof![Just(None), (1usize..4).prop_map(Some)]) {
        let lin = Linear::new(rules.clone());
        let keys = keys_near(&rules, &random);
        for alg in ALGORITHMS {
            check(&build(&rules, alg, limit), &lin, &keys)?;
        }
        check(&forest(&rules, limit), &lin, &keys)?;
    }

    #[test]
    fn aws_shaped_sets_at_every_size(seed in 1u64..u64::MAX, n in prop_oneof![1usize..80, 500usize..1200, 4000usize..4300]) {
        let rules = synth::sg_union(seed, 1, n);
        let keys = synth::keys_for(&rules, 300, seed ^ 1);
        let lin = Linear::new(rules.clone());
        check(&build(&rules, None, None), &lin, &keys)?;
        check(&build(&rules, Some(Algorithm::TupleMerge), None), &lin, &keys)?;
        check(&forest(&rules, None), &lin, &keys)?;
    }
}

#[test]
fn structure_is_chosen_by_size() {
    let algorithm = |n: usize| build(&synth::sg_union(3, 1, n), None, None).algorithm();
    assert_eq!(algorithm(0), Algorithm::Linear);
    assert_eq!(algorithm(LINEAR_MAX_RULES), Algorithm::Linear);
    assert_eq!(algorithm(LINEAR_MAX_RULES + 1), Algorithm::Tree);
    assert_eq!(
        algorithm(vpcfw::matcher::TREE_SINGLE_MAX_RULES + 1),
        Algorithm::Tree
    );
    // A tree that would exceed its memory budget gives way to tuple hashing.
    let rules = synth::sg_union(3, 1, 2000);
    let m = Matcher::builder()
        .configure(Config::new().max_memory(Some(400 << 10)))
        .build(rules)
        .unwrap();
    assert_eq!(m.algorithm(), Algorithm::TupleMerge);
}

#[test]
fn limits_name_the_offending_rule() {
    let rules = synth::sg_union(5, 1, 200);
    let e = Matcher::builder()
        .configure(Config::new().max_rules(Some(150)))
        .build(rules.clone())
        .unwrap_err();
    assert_eq!(e.kind(), &BuildErrorKind::TooManyRules { limit: 150 });
    assert_eq!(e.rule(), Some(150));
    let small = Matcher::builder()
        .configure(Config::new().algorithm(Some(Algorithm::Linear)))
        .build(rules.clone())
        .unwrap();
    // A memory limit the tree cannot meet falls back to a smaller structure...
    let tree = build(&rules, None, None);
    assert_eq!(tree.algorithm(), Algorithm::Tree);
    assert!(tree.memory_usage() > small.memory_usage());
    let m = Matcher::builder()
        .configure(Config::new().max_memory(Some(small.memory_usage())))
        .build(rules.clone())
        .unwrap();
    assert_ne!(m.algorithm(), Algorithm::Tree);
    assert!(m.memory_usage() <= small.memory_usage());
    // ...and one nothing meets is an error, as is a forced structure over the limit.
    let e = Matcher::builder()
        .configure(Config::new().max_memory(Some(100)))
        .build(rules.clone())
        .unwrap_err();
    assert!(
        matches!(e.kind(), BuildErrorKind::MemoryLimit { limit: 100, needed } if *needed > 100),
        "{e}"
    );
    let cfg = Config::new()
        .max_memory(Some(small.memory_usage()))
        .algorithm(Some(Algorithm::Bitset));
    assert!(Matcher::builder().configure(cfg).build(rules).is_err());
}

#[test]
fn matcher_is_send_sync_clone() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Matcher<u32>>();
    assert_traits::<Matcher<u128>>();
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/classbench")
}

fn load(name: &str) -> (Vec<Rule<u32>>, Vec<TraceEntry>) {
    let gz = if name.ends_with("100k") { ".gz" } else { "" };
    let rules = classbench::load_filters(data_dir().join(format!("{name}{gz}"))).expect("filters");
    let trace =
        classbench::load_trace(data_dir().join(format!("{name}_trace{gz}"))).expect("trace");
    (rules, trace)
}

/// Checks a ClassBench set: every header's answer matches and is at or before its source
/// rule; every `stride`-th header (and the random trace, every `stride`-th) equals the
/// reference.
fn classbench_set(name: &str, stride: usize) {
    let (rules, trace) = load(name);
    let lin = Linear::new(rules.clone());
    let m = Matcher::build(rules.clone()).expect("build");
    let keys: Vec<Key<u32>> = trace.iter().map(|t| t.key).collect();
    let mut out = vec![None; keys.len()];
    m.first_match_burst(&keys, &mut out);
    for (i, (t, burst)) in trace.iter().zip(&out).enumerate() {
        let got = m.first_match(&t.key);
        assert_eq!(got, *burst, "{name} line {}: burst", i + 1);
        let id = got.unwrap_or_else(|| panic!("{name} line {}: no match for {:?}", i + 1, t.key));
        assert!(
            id <= t.filter && rules[id as usize].matches(&t.key),
            "{name} line {}: {id} for {:?}",
            i + 1,
            t
        );
        if i % stride == 0 {
            assert_eq!(
                got,
                lin.first_match(&t.key),
                "{name} line {}: {:?}",
                i + 1,
                t.key
            );
        }
    }
    let random = classbench::load_trace(data_dir().join("random20k_trace")).expect("random trace");
    for t in random.iter().step_by(stride) {
        assert_eq!(
            m.first_match(&t.key),
            lin.first_match(&t.key),
            "{name} random {:?}",
            t.key
        );
    }
}

#[test]
fn classbench_small_sets_full() {
    for size in ["40", "100", "1k"] {
        for family in ["acl1", "fw1", "ipc1"] {
            classbench_set(&format!("{family}_{size}"), 1);
        }
    }
}

#[test]
fn classbench_10k_sampled() {
    for family in ["acl1", "fw1", "ipc1"] {
        classbench_set(&format!("{family}_10k"), 401);
    }
}

#[test]
#[ignore = "slow: run with --release -- --ignored"]
fn classbench_10k_full() {
    for family in ["acl1", "fw1", "ipc1"] {
        classbench_set(&format!("{family}_10k"), 1);
    }
}

#[test]
#[ignore = "slow: run with --release -- --ignored"]
fn classbench_100k_full() {
    for family in ["acl1", "fw1", "ipc1"] {
        classbench_set(&format!("{family}_100k"), 1);
    }
}

#[test]
fn classbench_every_structure_on_1k() {
    for family in ["acl1", "fw1", "ipc1"] {
        let (rules, trace) = load(&format!("{family}_1k"));
        let lin = Linear::new(rules.clone());
        let keys: Vec<Key<u32>> = trace.iter().step_by(7).map(|t| t.key).collect();
        for alg in ALGORITHMS {
            check(&build(&rules, alg, None), &lin, &keys).unwrap();
        }
    }
}
