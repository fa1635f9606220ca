//! Model-checks the table's slot protocol with loom: every interleaving (up to a preemption bound) of small
//! concurrent scenarios on a two- or three-slot table, with loom's model of relaxed and acquire/release
//! atomics and fences.
//!
//! Run (own target directory, since `--cfg loom` rebuilds every crate):
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --test conntrack_loom`
//! The preemption bound defaults to 3; `LOOM_MAX_PREEMPTIONS` overrides it.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use vpcfw::conntrack::table::{Insert, Table};

/// Values are `[x, !x]`: a torn copy breaks the pair. Alive iff `x` is odd; reclaimable iff `x == 7`.
type V = [u64; 2];
type T = Table<u64, V>;

fn val(x: u64) -> V {
    [x, !x]
}

fn intact(v: &V) -> bool {
    v[1] == !v[0]
}

struct Live;

impl vpcfw::conntrack::table::Liveness<u64, V> for Live {
    fn alive(&self, _: &u64, v: &V, _: u64) -> bool {
        assert!(intact(v), "torn value {v:?}");
        v[0] % 2 == 1
    }
    fn reclaimable(&self, _: &u64, v: &V, _: u64) -> bool {
        v[0] == 7
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

fn table(capacity: usize, slots: usize) -> Arc<T> {
    Arc::new(T::with_seed(capacity, slots, 11))
}

fn inserted(r: Insert<u64, V>) -> bool {
    matches!(r, Insert::Inserted { .. })
}

#[test]
fn update_and_get_never_see_a_torn_value() {
    model(|| {
        let t = table(2, 2);
        assert!(inserted(t.insert(&1, val(1), 0, &Live)));
        let t2 = t.clone();
        let w = thread::spawn(move || t2.update(&1, 0, &Live, |v| *v = val(3)));
        let seen = t.get(&1, 0, &Live).expect("a live entry is always found");
        assert!(seen == val(1) || seen == val(3), "{seen:?}");
        assert_eq!(w.join().unwrap(), Some(()));
        assert_eq!(t.get(&1, 0, &Live), Some(val(3)));
    });
}

#[test]
fn two_inserts_of_one_key_have_one_winner() {
    model(|| {
        let t = table(2, 2);
        let t2 = t.clone();
        let a = thread::spawn(move || t2.insert(&5, val(1), 0, &Live));
        let b = t.insert(&5, val(3), 0, &Live);
        let a = a.join().unwrap();
        match (a, b) {
            (Insert::Inserted { reclaimed: None }, Insert::Exists(v)) => assert_eq!(v, val(1)),
            (Insert::Exists(v), Insert::Inserted { reclaimed: None }) => assert_eq!(v, val(3)),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.len(), 1);
    });
}

#[test]
fn remove_races_update_and_lookup() {
    model(|| {
        let t = table(2, 2);
        assert!(inserted(t.insert(&1, val(1), 0, &Live)));
        let t2 = t.clone();
        let r = thread::spawn(move || t2.remove(&1));
        let u = t.update(&1, 0, &Live, |v| *v = val(3));
        let removed = r.join().unwrap().expect("the entry was there to remove");
        match u {
            Some(()) => assert_eq!(removed, val(3), "update came first"),
            None => assert_eq!(removed, val(1), "remove came first"),
        }
        assert_eq!(t.get(&1, 0, &Live), None);
        assert!(t.is_empty());
    });
}

#[test]
fn sweep_and_insert_reclaim_a_dead_entry_once() {
    model(|| {
        let t = table(2, 2);
        assert!(inserted(t.insert(&1, val(2), 0, &Live))); // dead
        assert!(inserted(t.insert(&2, val(1), 0, &Live)));
        let t2 = t.clone();
        let sweeper = thread::spawn(move || {
            let mut gone = Vec::new();
            t2.sweep(0, 2, &Live, |k, v| gone.push((k, v)));
            gone
        });
        let ins = t.insert(&1, val(5), 0, &Live);
        let gone = sweeper.join().unwrap();
        match ins {
            Insert::Inserted { reclaimed: Some(r) } => {
                assert_eq!(r, (1, val(2)));
                assert!(gone.is_empty(), "{gone:?}");
            }
            Insert::Inserted { reclaimed: None } => assert_eq!(gone, vec![(1, val(2))]),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.get(&1, 0, &Live), Some(val(5)));
        assert_eq!(t.get(&2, 0, &Live), Some(val(1)));
        assert_eq!(t.len(), 2);
    });
}

#[test]
fn full_table_admits_one_of_two_inserts_by_eviction() {
    model(|| {
        let t = table(1, 2);
        assert!(inserted(t.insert(&1, val(7), 0, &Live))); // reclaimable
        let t2 = t.clone();
        let a = thread::spawn(move || t2.insert(&2, val(1), 0, &Live));
        let b = t.insert(&3, val(3), 0, &Live);
        let a = a.join().unwrap();
        let winners = [(2, a), (3, b)]
            .into_iter()
            .filter(|(_, r)| match r {
                Insert::Inserted { reclaimed } => {
                    assert_eq!(*reclaimed, Some((1, val(7))));
                    true
                }
                Insert::Full => false,
                other => panic!("{other:?}"),
            })
            .count();
        assert_eq!(winners, 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&1, 0, &Live), None);
    });
}

#[test]
fn bound_shrinking_races_inserts_and_lookups() {
    // Three keys in two slots: at least two share a home, so bounds are raised and lowered.
    model(|| {
        let t = table(2, 2);
        assert!(inserted(t.insert(&10, val(1), 0, &Live)));
        assert!(inserted(t.insert(&11, val(1), 0, &Live)));
        let t2 = t.clone();
        let a = thread::spawn(move || {
            assert_eq!(t2.remove(&10), Some(val(1)));
            t2.sweep(0, 2, &Live, |k, _| panic!("nothing is dead: {k}"));
        });
        let b = loop {
            match t.insert(&12, val(3), 0, &Live) {
                Insert::Full => thread::yield_now(), // until the removal frees a place
                other => break other,
            }
        };
        assert_eq!(b, Insert::Inserted { reclaimed: None });
        assert_eq!(t.get(&12, 0, &Live), Some(val(3)));
        assert_eq!(t.get(&11, 0, &Live), Some(val(1)));
        a.join().unwrap();
        assert_eq!(t.get(&12, 0, &Live), Some(val(3)));
        assert_eq!(t.get(&11, 0, &Live), Some(val(1)));
        assert_eq!(t.get(&10, 0, &Live), None);
        assert_eq!(t.len(), 2);
    });
}
