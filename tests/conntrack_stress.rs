//! Multi-thread stress test: writers (each owning a key range, with a private model of it), readers and a
//! sweeper run at once against one table. Checked: every read value is intact and belongs to its key, no
//! entry is lost or duplicated, the sweeper only reclaims dead entries and each exactly once, and at
//! quiescence the table holds exactly what the writers' models say, with an exact count.
//!
//! Runs for `VPCFW_STRESS_MS` milliseconds per test (default 1500).

use std::collections::{HashMap, HashSet};
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use vpcfw::conntrack::table::testing::{TestLiveness, TestValue};
use vpcfw::conntrack::table::{BATCH, FlowKeyV6, Hashed, Insert, Table};

fn key(id: u32) -> FlowKeyV6 {
    let r = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (id >> 16) as u16, id as u16);
    FlowKeyV6::new(
        id % 5,
        6,
        0,
        Ipv6Addr::LOCALHOST,
        r,
        443,
        (id % 4096) as u16,
    )
}

fn id_of(k: &FlowKeyV6) -> u32 {
    let o = k.remote().octets();
    u32::from_be_bytes([o[12], o[13], o[14], o[15]])
}

/// Values carry their key id in the counter's high half and a sequence number in its low half, so every
/// value ever written under one key is distinct.
fn value(id: u32, seq: u32, alive: bool) -> TestValue {
    let ttl = if alive { u32::MAX } else { 0 };
    TestValue::new(0, ttl, false, (u64::from(id) << 32) | u64::from(seq))
}

fn duration() -> Duration {
    let ms = std::env::var("VPCFW_STRESS_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    Duration::from_millis(ms)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u32) -> u32 {
        (self.next() % u64::from(n)) as u32
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Alive(TestValue),
    /// Made dead (ttl 0) by the writer; the sweeper may reclaim it at any time.
    Dead(TestValue),
}

fn check_read(k: &FlowKeyV6, v: &TestValue) {
    assert!(v.intact(), "torn value under {k:?}: {v:?}");
    assert_eq!(
        (v.counter >> 32) as u32,
        id_of(k),
        "value of another key under {k:?}"
    );
}

/// One writer's turn: a random operation on its own keys, checked against its model.
fn writer_step(
    t: &Table<FlowKeyV6, TestValue>,
    rng: &mut Rng,
    ids: std::ops::Range<u32>,
    model: &mut HashMap<u32, State>,
    seq: &mut u32,
    now: u64,
) {
    let id = ids.start + rng.below(ids.end - ids.start);
    let k = key(id);
    *seq += 1;
    let live = TestLiveness;
    match (rng.below(10), model.get(&id).copied()) {
        (0..=2, st) => {
            let v = value(id, *seq, true);
            match (t.insert(&k, v, now, &live), st) {
                (Insert::Exists(x), Some(State::Alive(m))) => assert_eq!(x, m),
                (Insert::Inserted { reclaimed: None }, None | Some(State::Dead(_))) => {
                    model.insert(id, State::Alive(v));
                }
                (
                    Insert::Inserted {
                        reclaimed: Some((rk, rv)),
                    },
                    Some(State::Dead(m)),
                ) => {
                    assert_eq!((rk, rv), (k, m));
                    model.insert(id, State::Alive(v));
                }
                (got, st) => panic!("insert {id}: table {got:?}, model {st:?}"),
            }
        }
        (3..=5, st) => {
            let got = t.update(&k, now, &live, |v| {
                check_read(&k, v);
                v.counter = (u64::from(id) << 32) | u64::from(*seq);
                v.seal();
                *v
            });
            match st {
                Some(State::Alive(_)) => {
                    model.insert(
                        id,
                        State::Alive(got.expect("live entry not found for update")),
                    );
                }
                _ => assert_eq!(got, None, "update of a dead or absent key {id}"),
            }
        }
        (6, Some(State::Alive(_))) => {
            let got = t.update(&k, now, &live, |v| {
                v.ttl = 0;
                v.seal();
                *v
            });
            model.insert(id, State::Dead(got.expect("live entry not found for kill")));
        }
        (7, st) => {
            let got = t.remove(&k);
            match st {
                Some(State::Alive(m)) => assert_eq!(got, Some(m)),
                Some(State::Dead(m)) => {
                    assert!(got.is_none() || got == Some(m), "remove {id}: {got:?}")
                }
                None => assert_eq!(got, None),
            }
            model.remove(&id);
        }
        (_, st) => {
            let got = t.get(&k, now, &live);
            let want = match st {
                Some(State::Alive(m)) => Some(m),
                _ => None,
            };
            assert_eq!(got, want, "get {id}");
        }
    }
}

#[test]
fn readers_writers_and_sweeper_agree_with_the_writers_models() {
    const WRITERS: u32 = 2;
    const PER_WRITER: u32 = 1500;
    let t = Table::<FlowKeyV6, TestValue>::with_slots(4096, 4300);
    let stop = AtomicBool::new(false);
    let now = AtomicU64::new(0);
    let swept: Mutex<Vec<(FlowKeyV6, TestValue)>> = Mutex::new(Vec::new());
    let start = Barrier::new(WRITERS as usize + 4); // writers, 2 readers, sweeper, this thread
    let models: Vec<HashMap<u32, State>> = thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (t, stop, now, start) = (&t, &stop, &now, &start);
                s.spawn(move || {
                    let mut rng = Rng(0x1234_5678 + u64::from(w));
                    let mut model = HashMap::new();
                    let mut seq = 0;
                    let ids = w * PER_WRITER..(w + 1) * PER_WRITER;
                    start.wait();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            writer_step(
                                t,
                                &mut rng,
                                ids.clone(),
                                &mut model,
                                &mut seq,
                                now.load(Ordering::Relaxed),
                            );
                        }
                    }
                    model
                })
            })
            .collect();
        for r in 0..2u64 {
            let (t, stop, now, start) = (&t, &stop, &now, &start);
            s.spawn(move || {
                let mut rng = Rng(0xfeed + r);
                let mut hashed = [t.hash(&key(0)); BATCH];
                let mut reads = 0u64;
                start.wait();
                while !stop.load(Ordering::Relaxed) {
                    let keys: Vec<_> = (0..BATCH)
                        .map(|_| key(rng.below(WRITERS * PER_WRITER)))
                        .collect();
                    t.prepare(&keys, &mut hashed);
                    let n = now.load(Ordering::Relaxed);
                    for h in &hashed {
                        if let Some(v) = t.get_hashed(h, n, &TestLiveness) {
                            check_read(&Hashed::key(h), &v);
                            reads += 1;
                        }
                    }
                    t.for_each(|_, _| {}); // a concurrent full walk must not disturb anyone
                }
                assert!(reads > 0, "reader found nothing");
            });
        }
        {
            let (t, stop, now, start, swept) = (&t, &stop, &now, &start, &swept);
            s.spawn(move || {
                start.wait();
                while !stop.load(Ordering::Relaxed) {
                    let n = now.fetch_add(1, Ordering::Relaxed) + 1;
                    t.sweep(n, 97, &TestLiveness, |k, v| {
                        check_read(&k, &v);
                        assert_eq!(v.ttl, 0, "sweeper reclaimed a live entry {k:?}");
                        swept.lock().unwrap().push((k, v));
                    });
                }
            });
        }
        start.wait();
        thread::sleep(duration());
        stop.store(true, Ordering::Relaxed);
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });

    let swept = swept.into_inner().unwrap();
    let swept_set: HashSet<(FlowKeyV6, u64)> = swept.iter().map(|(k, v)| (*k, v.counter)).collect();
    assert_eq!(swept_set.len(), swept.len(), "an entry was reclaimed twice");
    let mut stored = HashMap::new();
    t.for_each(|k, v| {
        check_read(k, v);
        assert!(stored.insert(*k, *v).is_none(), "{k:?} stored twice");
    });
    assert_eq!(
        t.len(),
        stored.len(),
        "count differs from the entries stored"
    );
    let mut alive = 0;
    for model in &models {
        for (&id, st) in model {
            let k = key(id);
            match *st {
                State::Alive(m) => {
                    assert_eq!(stored.get(&k), Some(&m), "live entry {id} lost or changed");
                    alive += 1;
                }
                State::Dead(m) => match stored.get(&k) {
                    Some(v) => assert_eq!(*v, m),
                    None => assert!(
                        swept_set.contains(&(k, m.counter)),
                        "dead entry {id} vanished"
                    ),
                },
            }
        }
    }
    let known: HashSet<FlowKeyV6> = models
        .iter()
        .flat_map(|m| m.keys().map(|&id| key(id)))
        .collect();
    assert!(
        stored.keys().all(|k| known.contains(k)),
        "an entry nobody holds is stored"
    );
    assert!(
        alive > 0 && !swept.is_empty(),
        "the test exercised too little: {alive} live, {} swept",
        swept.len()
    );
}

#[test]
fn concurrent_inserts_of_one_key_have_exactly_one_winner() {
    const THREADS: usize = 3;
    const KEYS: u32 = 3000;
    let t =
        Table::<FlowKeyV6, TestValue>::with_slots(KEYS as usize, KEYS as usize + KEYS as usize / 8);
    let deadline = Instant::now() + duration();
    let mut rounds = 0;
    while rounds < 3 || Instant::now() < deadline {
        rounds += 1;
        let barrier = Barrier::new(THREADS);
        let wins: Vec<Vec<u32>> = thread::scope(|s| {
            let hs: Vec<_> = (0..THREADS)
                .map(|i| {
                    let (t, barrier) = (&t, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        let mut won = Vec::new();
                        for j in 0..KEYS {
                            // Different threads walk the keys in different orders.
                            let id = if i % 2 == 0 { j } else { KEYS - 1 - j };
                            match t.insert(&key(id), value(id, i as u32, true), 0, &TestLiveness) {
                                Insert::Inserted { reclaimed: None } => won.push(id),
                                Insert::Exists(v) => check_read(&key(id), &v),
                                other => panic!("insert {id}: {other:?}"),
                            }
                        }
                        won
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<u32> = wins.into_iter().flatten().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..KEYS).collect::<Vec<_>>(),
            "round {rounds}: each key must have one winner"
        );
        assert_eq!(t.len(), KEYS as usize);
        let removed = thread::scope(|s| {
            let hs: Vec<_> = (0..2u32)
                .map(|half| {
                    let t = &t;
                    s.spawn(move || {
                        (half..KEYS)
                            .step_by(2)
                            .filter(|&id| t.remove(&key(id)).is_some())
                            .count()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
        });
        assert_eq!(removed, KEYS as usize);
        assert!(t.is_empty());
    }
}

#[test]
fn capacity_is_never_exceeded_under_contention() {
    const CAP: usize = 1000;
    const THREADS: u32 = 3;
    let t = Table::<FlowKeyV6, TestValue>::with_slots(CAP, CAP + CAP / 4);
    let deadline = Instant::now() + duration();
    let mut round = 0u32;
    while round < 3 || Instant::now() < deadline {
        round += 1;
        let inserted: usize = thread::scope(|s| {
            let hs: Vec<_> = (0..THREADS)
                .map(|i| {
                    let t = &t;
                    s.spawn(move || {
                        let mut n = 0;
                        for j in 0..CAP as u32 {
                            let id = i * CAP as u32 + j;
                            match t.insert(&key(id), value(id, round, true), 0, &TestLiveness) {
                                Insert::Inserted { reclaimed: None } => n += 1,
                                Insert::Full => assert!(t.len() <= CAP),
                                other => panic!("insert {id}: {other:?}"),
                            }
                        }
                        n
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(
            inserted, CAP,
            "round {round}: exactly the capacity is admitted"
        );
        assert_eq!(t.len(), CAP);
        // Expire everything at once: the sweep must find exactly the capacity.
        let mut swept = 0;
        let kill = |_: &FlowKeyV6, _: &TestValue, _: u64| false;
        while swept < CAP {
            let s = t.sweep(0, 333, &kill, |_, _| {});
            swept += s.reclaimed;
            assert!(s.visited > 0);
        }
        assert!(t.is_empty());
    }
}
