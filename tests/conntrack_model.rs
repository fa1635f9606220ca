//! Model test: random operation sequences on the table and on a `Mutex<HashMap>` model must agree exactly
//! (results, length after every step, and the full contents at the end), across capacities, load factors,
//! key types, time jumps and capacity pressure.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use vpcfw::conntrack::table::testing::{Harness, Op, TestLiveness, TestValue};
use vpcfw::conntrack::table::{FlowKeyV4, FlowKeyV6, Insert, Table};

fn v4(id: u16) -> FlowKeyV4 {
    let a = Ipv4Addr::from(0x0a00_0000 | u32::from(id));
    FlowKeyV4::new(
        u32::from(id % 3),
        6,
        0,
        a,
        Ipv4Addr::new(192, 0, 2, 1),
        1024 + id,
        443,
    )
}

fn v6(id: u16) -> FlowKeyV6 {
    let b = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, id);
    FlowKeyV6::new(7, 17, 1, Ipv6Addr::LOCALHOST, b, 53, id)
}

fn op(keys: u16) -> impl Strategy<Value = Op> {
    let key = 0..keys;
    prop_oneof![
        30 => (key.clone(), prop::sample::select(vec![1u32, 5, 20, 1000]), prop::bool::weighted(0.3))
            .prop_map(|(key, ttl, reclaimable)| Op::Insert { key, ttl, reclaimable }),
        20 => key.clone().prop_map(|key| Op::Get { key }),
        15 => (key.clone(), any::<u8>()).prop_map(|(key, add)| Op::Update { key, add }),
        10 => key.clone().prop_map(|key| Op::Remove { key }),
        8 => (0u16..80).prop_map(|budget| Op::Sweep { budget }),
        10 => (0u32..25).prop_map(|by| Op::Advance { by }),
        7 => prop::collection::vec(key, 0..40).prop_map(|keys| Op::GetBatch { keys }),
    ]
}

/// (capacity, slots): full-load tables, roomy ones, tiny ones.
const SIZES: &[(usize, usize)] = &[
    (1, 1),
    (4, 4),
    (8, 10),
    (16, 16),
    (24, 32),
    (40, 50),
    (10, 64),
];

fn run<K>(size: usize, seed: u64, key_of: fn(u16) -> K, ops: &[Op]) -> Result<(), TestCaseError>
where
    K: vpcfw::conntrack::table::Pod + Eq + std::hash::Hash + std::fmt::Debug,
{
    let (capacity, slots) = SIZES[size];
    let mut h = Harness::new(capacity, slots, seed, key_of);
    for (i, op) in ops.iter().enumerate() {
        h.apply(op)
            .map_err(|e| TestCaseError::fail(format!("step {i}: {e}")))?;
    }
    h.check_contents().map_err(TestCaseError::fail)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn table_agrees_with_model_v4(size in 0..SIZES.len(), seed: u64, ops in prop::collection::vec(op(72), 1..300)) {
        run(size, seed, v4, &ops)?;
    }

    #[test]
    fn table_agrees_with_model_v6(size in 0..SIZES.len(), seed: u64, ops in prop::collection::vec(op(72), 1..300)) {
        run(size, seed, v6, &ops)?;
    }
}

fn forever(_: &FlowKeyV4, _: &TestValue, _: u64) -> bool {
    true
}

#[test]
fn expired_entries_are_absent_before_any_sweep_and_replaced_in_place() {
    let t = Table::<FlowKeyV4, TestValue>::new(4);
    let old = TestValue::new(0, 10, false, 5);
    assert_eq!(
        t.insert(&v4(1), old, 0, &TestLiveness),
        Insert::Inserted { reclaimed: None }
    );
    assert_eq!(t.get(&v4(1), 9, &TestLiveness), Some(old));
    assert_eq!(t.get(&v4(1), 10, &TestLiveness), None);
    assert_eq!(t.update(&v4(1), 10, &TestLiveness, |v| v.counter), None);
    assert_eq!(t.len(), 1, "an expired entry is stored until reclaimed");
    let new = TestValue::new(10, 10, false, 0);
    assert_eq!(
        t.insert(&v4(1), new, 10, &TestLiveness),
        Insert::Inserted {
            reclaimed: Some((v4(1), old))
        }
    );
    assert_eq!(t.len(), 1);
    assert_eq!(
        t.insert(&v4(1), old, 11, &TestLiveness),
        Insert::Exists(new)
    );
}

#[test]
fn full_table_refuses_then_reclaims_expired_or_reclaimable_entries() {
    let t = Table::<FlowKeyV4, TestValue>::with_slots(3, 8);
    let keep = TestValue::new(0, 100, false, 0);
    let spare = TestValue::new(0, 100, true, 0);
    for id in 0..3 {
        assert_eq!(
            t.insert(&v4(id), keep, 0, &TestLiveness),
            Insert::Inserted { reclaimed: None }
        );
    }
    assert_eq!(t.insert(&v4(9), keep, 0, &TestLiveness), Insert::Full);
    assert_eq!(t.insert(&v4(9), keep, 0, &forever), Insert::Full);
    // Established entries are never evicted; a reclaimable one is.
    assert_eq!(t.remove(&v4(2)), Some(keep));
    assert_eq!(
        t.insert(&v4(2), spare, 0, &TestLiveness),
        Insert::Inserted { reclaimed: None }
    );
    assert_eq!(
        t.insert(&v4(9), keep, 0, &TestLiveness),
        Insert::Inserted {
            reclaimed: Some((v4(2), spare))
        }
    );
    assert_eq!(t.insert(&v4(10), keep, 50, &TestLiveness), Insert::Full);
    // Once expired, any entry gives its place.
    assert!(matches!(
        t.insert(&v4(10), keep, 100, &TestLiveness),
        Insert::Inserted { reclaimed: Some(_) }
    ));
    assert_eq!(t.len(), 3);
}

#[test]
fn sweep_reclaims_expired_entries_incrementally() {
    let t = Table::<FlowKeyV6, TestValue>::with_slots(100, 128);
    for id in 0..100 {
        let ttl = if id % 10 == 0 { 5 } else { 50 };
        assert!(matches!(
            t.insert(&v6(id), TestValue::new(0, ttl, false, 0), 0, &TestLiveness),
            Insert::Inserted { .. }
        ));
    }
    let mut gone = Vec::new();
    let mut visited = 0;
    while visited < 128 {
        let s = t.sweep(5, 16, &TestLiveness, |k, v| gone.push((k, v)));
        assert_eq!(s.visited, 16);
        assert!(s.reclaimed <= 16);
        visited += s.visited;
    }
    gone.sort_by_key(|(k, _)| *k);
    let want: Vec<_> = (0..10)
        .map(|i| (v6(i * 10), TestValue::new(0, 5, false, 0)))
        .collect();
    assert_eq!(gone, want);
    assert_eq!(t.len(), 90);
    assert_eq!(
        t.sweep(5, 1000, &TestLiveness, |_, _| panic!("already swept"))
            .visited,
        128
    );
}

#[test]
fn update_that_panics_leaves_the_entry_unchanged_and_unlocked() {
    let t = Table::<FlowKeyV4, TestValue>::new(4);
    let v = TestValue::new(0, 100, false, 1);
    assert!(matches!(
        t.insert(&v4(3), v, 0, &TestLiveness),
        Insert::Inserted { .. }
    ));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        t.update(&v4(3), 1, &TestLiveness, |v| {
            v.counter = 99;
            panic!("closure fails")
        })
    }));
    assert!(r.is_err());
    assert_eq!(t.get(&v4(3), 1, &TestLiveness), Some(v));
    assert_eq!(t.update(&v4(3), 1, &TestLiveness, |v| v.counter), Some(1));
}

#[test]
fn keys_are_compared_on_every_field() {
    let t = Table::<FlowKeyV6, u64>::new(16);
    let base = v6(1);
    let (z, p, k, l, r, lp, rp) = (
        base.zone(),
        base.proto(),
        base.kind(),
        base.local(),
        base.remote(),
        base.local_port(),
        base.remote_port(),
    );
    let variants = [
        (8, p, k, l, r, lp, rp),
        (z, 6, k, l, r, lp, rp),
        (z, p, 2, l, r, lp, rp),
        (z, p, k, r, l, lp, rp),
        (z, p, k, l, r, rp, lp),
    ]
    .map(|(z, p, k, l, r, lp, rp)| FlowKeyV6::new(z, p, k, l, r, lp, rp));
    let all = |_: &FlowKeyV6, _: &u64, _: u64| true;
    assert_eq!(
        t.insert(&base, 0, 0, &all),
        Insert::Inserted { reclaimed: None }
    );
    for (i, k) in variants.iter().enumerate() {
        assert_eq!(t.get(k, 0, &all), None, "variant {i}");
        assert_eq!(
            t.insert(k, i as u64 + 1, 0, &all),
            Insert::Inserted { reclaimed: None }
        );
    }
    assert_eq!(t.get(&base, 0, &all), Some(0));
    assert_eq!(t.len(), 6);
}
