//! Connection-tracking table benchmark (issue #4).
//!
//! Workload: a table preloaded with live flows (1M IPv6, 100K IPv4), 1 and 2 threads, each thread running
//! 95% lookups of its live flows (each refreshing last-seen and counters), 4% inserts of new flows and 1%
//! removals; one-key and batched (bursts of 32: hash + prefetch, then resolve) on [`Table`], and the same
//! workload on `dashmap`, `papaya` and `Mutex<HashMap>` (all with foldhash). Criterion reports time per
//! operation per thread; throughput is in operations per second per thread. Whenever the live set has
//! grown by 5%, and between samples, it is restored (untimed) to its preloaded size.
//!
//! Also printed (not criterion-timed): bytes per slot, and lookup latency percentiles while a sweep expires
//! 10% of a 1M-flow table, with the sweep's total work time.
//!
//! `cargo bench --bench conntrack` (all), `-- 'v6-1M/2t'` (a subset), `-- sweep` (the sweep only).
//! `VPCFW_BENCH_CPU_TIME=1` times the mixes by thread CPU time instead of wall time (Linux only).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;
use common::clock;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dashmap::DashMap;
use foldhash::fast::RandomState;
use vpcfw::conntrack::table::{BATCH, FlowKeyV4, FlowKeyV6, Hashed, Insert, Pod, Table};

/// The engine's flow state as the benchmark assumes it: last seen (ns), packets and bytes per direction,
/// protocol state, direction of origin, trackedness.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Flow {
    last_seen: u64,
    packets: [u64; 2],
    bytes: [u64; 2],
    state: u8,
    origin: u8,
    tracked: u8,
    reserved: [u8; 5],
}

// SAFETY: `repr(C)`: u64 fields at 0..40, then 3 + 5 bytes: 48 bytes, no padding; integers only.
unsafe impl Pod for Flow {}

const TIMEOUT_NS: u64 = 3_600_000_000_000;

fn alive<K>(_: &K, v: &Flow, now: u64) -> bool {
    now < v.last_seen + TIMEOUT_NS
}

fn touch(v: &mut Flow, now: u64) {
    v.last_seen = now;
    v.packets[0] += 1;
    v.bytes[0] += 1500;
}

trait Key: Pod + Eq + Hash + Send + Sync {
    fn make(id: u64) -> Self;
}

impl Key for FlowKeyV6 {
    fn make(id: u64) -> Self {
        let x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let local = Ipv6Addr::new(0x2600, 0x1f18, 0, 0, 0, 0, 0xa, (id % 4096) as u16);
        let remote = Ipv6Addr::from(((x as u128) << 64) | u128::from(id));
        FlowKeyV6::new((id % 16) as u32, 6, 0, local, remote, 443, (x >> 48) as u16)
    }
}

impl Key for FlowKeyV4 {
    fn make(id: u64) -> Self {
        let x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let local = Ipv4Addr::new(10, 0, (id >> 8) as u8 & 0x3f, id as u8);
        FlowKeyV4::new(
            (id % 16) as u32,
            17,
            0,
            local,
            Ipv4Addr::from((x >> 32) as u32 ^ id as u32),
            53,
            (x >> 16) as u16,
        )
    }
}

/// The maps under test, behind one interface: the table (one-key or batched) and the baselines.
trait Flows<K: Key>: Sync {
    fn insert(&self, k: K, v: Flow) -> bool;
    fn remove(&self, k: &K) -> bool;
    /// Looks a flow up and refreshes it; whether it was found.
    fn touch(&self, k: &K, now: u64) -> bool;
    /// Runs a burst of operations, returning how many lookups found their flow.
    fn run(&self, ops: &[Op<K>], now: u64) -> usize {
        let mut hits = 0;
        for op in ops {
            match op {
                Op::Lookup(k) => hits += usize::from(self.touch(k, now)),
                Op::Insert(k) => _ = self.insert(*k, fresh(now)),
                Op::Remove(k) => _ = self.remove(k),
            }
        }
        hits
    }
}

fn fresh(now: u64) -> Flow {
    Flow {
        last_seen: now,
        ..Flow::default()
    }
}

#[derive(Clone, Copy)]
enum Op<K> {
    Lookup(K),
    Insert(K),
    Remove(K),
}

struct OneKey<K>(Table<K, Flow>);
struct Batched<K>(Table<K, Flow>);

impl<K: Key> Flows<K> for OneKey<K> {
    fn insert(&self, k: K, v: Flow) -> bool {
        matches!(self.0.insert(&k, v, 0, &alive), Insert::Inserted { .. })
    }
    fn remove(&self, k: &K) -> bool {
        self.0.remove(k).is_some()
    }
    fn touch(&self, k: &K, now: u64) -> bool {
        self.0.update(k, now, &alive, |v| touch(v, now)).is_some()
    }
}

impl<K: Key> Flows<K> for Batched<K> {
    fn touch(&self, k: &K, now: u64) -> bool {
        self.0.update(k, now, &alive, |v| touch(v, now)).is_some()
    }
    fn insert(&self, k: K, v: Flow) -> bool {
        matches!(self.0.insert(&k, v, 0, &alive), Insert::Inserted { .. })
    }
    fn remove(&self, k: &K) -> bool {
        self.0.remove(k).is_some()
    }
    fn run(&self, ops: &[Op<K>], now: u64) -> usize {
        let t = &self.0;
        let mut hits = 0;
        let mut hashed: [Hashed<K>; BATCH] = [t.hash(&K::make(0)); BATCH];
        for burst in ops.chunks(BATCH) {
            for (op, h) in burst.iter().zip(hashed.iter_mut()) {
                let (Op::Lookup(k) | Op::Insert(k) | Op::Remove(k)) = op;
                *h = t.hash(k);
                t.prefetch(h);
            }
            for (op, h) in burst.iter().zip(&hashed) {
                match op {
                    Op::Lookup(_) => {
                        hits += usize::from(
                            t.update_hashed(h, now, &alive, |v| touch(v, now)).is_some(),
                        )
                    }
                    Op::Insert(_) => {
                        _ = t.insert_hashed(
                            h,
                            Flow {
                                last_seen: now,
                                ..Flow::default()
                            },
                            now,
                            &alive,
                        )
                    }
                    Op::Remove(_) => _ = t.remove_hashed(h),
                }
            }
        }
        hits
    }
}

impl<K: Key> Flows<K> for DashMap<K, Flow, RandomState> {
    fn insert(&self, k: K, v: Flow) -> bool {
        match self.entry(k) {
            dashmap::Entry::Vacant(e) => {
                e.insert(v);
                true
            }
            dashmap::Entry::Occupied(_) => false,
        }
    }
    fn remove(&self, k: &K) -> bool {
        DashMap::remove(self, k).is_some()
    }
    fn touch(&self, k: &K, now: u64) -> bool {
        self.get_mut(k).map(|mut v| touch(&mut v, now)).is_some()
    }
}

impl<K: Key> Flows<K> for papaya::HashMap<K, Flow, RandomState> {
    fn touch(&self, k: &K, now: u64) -> bool {
        self.pin()
            .update(*k, |v| {
                let mut v = *v;
                touch(&mut v, now);
                v
            })
            .is_some()
    }
    fn insert(&self, k: K, v: Flow) -> bool {
        self.pin().try_insert(k, v).is_ok()
    }
    fn remove(&self, k: &K) -> bool {
        self.pin().remove(k).is_some()
    }
    fn run(&self, ops: &[Op<K>], now: u64) -> usize {
        let mut hits = 0;
        for burst in ops.chunks(BATCH) {
            let m = self.pin(); // one guard per burst, to the baseline's advantage
            for op in burst {
                match op {
                    Op::Lookup(k) => {
                        let updated = m.update(*k, |v| {
                            let mut v = *v;
                            touch(&mut v, now);
                            v
                        });
                        hits += usize::from(updated.is_some());
                    }
                    Op::Insert(k) => {
                        _ = m.try_insert(
                            *k,
                            Flow {
                                last_seen: now,
                                ..Flow::default()
                            },
                        )
                    }
                    Op::Remove(k) => _ = m.remove(k),
                }
            }
        }
        hits
    }
}

impl<K: Key> Flows<K> for Mutex<HashMap<K, Flow, RandomState>> {
    fn insert(&self, k: K, v: Flow) -> bool {
        let mut m = self.lock().unwrap();
        match m.entry(k) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(v);
                true
            }
            std::collections::hash_map::Entry::Occupied(_) => false,
        }
    }
    fn remove(&self, k: &K) -> bool {
        self.lock().unwrap().remove(k).is_some()
    }
    fn touch(&self, k: &K, now: u64) -> bool {
        self.lock()
            .unwrap()
            .get_mut(k)
            .map(|v| touch(v, now))
            .is_some()
    }
}

/// One thread's share: its live keys, a key counter for new flows, and its random generator.
struct Share<K> {
    live: Vec<K>,
    target: usize,
    next_id: u64,
    rng: u64,
}

impl<K: Key> Share<K> {
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// The next burst of the 95/4/1 mix, applied to `live` as it is generated.
    fn burst(&mut self, out: &mut Vec<Op<K>>, n: usize) {
        out.clear();
        for _ in 0..n {
            let r = self.next();
            let pick = ((r >> 32) as usize * self.live.len()) >> 32;
            out.push(match r % 100 {
                0..=94 => Op::Lookup(self.live[pick]),
                95..=98 => {
                    let k = K::make(self.next_id);
                    self.next_id += 1;
                    self.live.push(k);
                    Op::Insert(k)
                }
                _ => Op::Remove(self.live.swap_remove(pick)),
            });
        }
    }

    /// Brings the live set back to its preloaded size (untimed).
    fn restore(&mut self, map: &impl Flows<K>) {
        while self.live.len() > self.target {
            let k = self.live.pop().unwrap();
            map.remove(&k);
        }
    }
}

/// Preloads `total` flows split over `threads` shares (ids interleaved so each share is spread out).
fn preload<K: Key>(map: &impl Flows<K>, total: usize, threads: usize) -> Vec<Share<K>> {
    let mut shares: Vec<Share<K>> = (0..threads)
        .map(|t| Share {
            live: Vec::with_capacity(total / threads + total / 8),
            target: 0,
            next_id: 0,
            rng: 0x2545_f491_4f6c_dd1d ^ (t as u64 + 1),
        })
        .collect();
    for id in 0..total as u64 {
        let k = K::make(id);
        assert!(map.insert(k, Flow::default()));
        shares[id as usize % threads].live.push(k);
    }
    for (t, s) in shares.iter_mut().enumerate() {
        s.target = s.live.len();
        s.next_id = (1 << 40) * (t as u64 + 1);
    }
    shares
}

/// Benchmarks one map; `state` holds the map and its shares, made and preloaded on first use (only if the
/// benchmark is selected) and kept for the next benchmark that uses the same map.
fn bench_map<K: Key, M: Flows<K>>(
    c: &mut Criterion,
    (group, name): (&str, &str),
    (flows, threads): (usize, usize),
    state: &mut Option<(M, Vec<Share<K>>)>,
    make: impl Fn() -> M,
) {
    let mut g = c.benchmark_group(format!("{group}/{threads}t"));
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(800));
    g.measurement_time(Duration::from_secs(3));
    g.bench_function(BenchmarkId::from_parameter(name), |b| {
        let (map, shares) = state.get_or_insert_with(|| {
            let map = make();
            let shares = preload(&map, flows, threads);
            (map, shares)
        });
        let map = &*map;
        b.iter_custom(|iters| {
            std::thread::scope(|s| {
                let handles: Vec<_> = shares
                    .iter_mut()
                    .map(|share| {
                        s.spawn(move || {
                            let mut ops = Vec::with_capacity(1024);
                            let (mut hits, mut lookups) = (0, 0);
                            let mut busy = Duration::ZERO;
                            let mut left = iters as usize;
                            let mut now = 1;
                            while left > 0 {
                                let n = left.min(1024);
                                share.burst(&mut ops, n);
                                lookups +=
                                    ops.iter().filter(|op| matches!(op, Op::Lookup(_))).count();
                                now += 1;
                                let t0 = clock();
                                hits += map.run(&ops, now);
                                busy += clock() - t0;
                                left -= n;
                                if share.live.len() > share.target + share.target / 20 {
                                    share.restore(map); // untimed: stay well within the capacity
                                }
                            }
                            share.restore(map);
                            assert_eq!(hits, lookups, "every lookup is of a live flow");
                            busy
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .max()
                    .unwrap()
            })
        })
    });
    g.finish();
}

fn suite<K: Key>(c: &mut Criterion, group: &str, flows: usize) {
    let capacity = flows + flows / 5;
    let hasher = RandomState::default;
    for threads in [1, 2] {
        let size = (flows, threads);
        let mut table = None;
        bench_map(c, (group, "table-onekey"), size, &mut table, || {
            OneKey::<K>(Table::new(capacity))
        });
        let mut table = table.map(|(t, shares)| (Batched(t.0), shares));
        bench_map(c, (group, "table-batched"), size, &mut table, || {
            Batched(Table::new(capacity))
        });
        drop(table);
        bench_map(c, (group, "dashmap"), size, &mut None, || {
            DashMap::<K, Flow, _>::with_capacity_and_hasher(capacity, hasher())
        });
        bench_map(c, (group, "papaya"), size, &mut None, || {
            papaya::HashMap::<K, Flow, _>::with_capacity_and_hasher(capacity, hasher())
        });
        bench_map(c, (group, "mutex-hashmap"), size, &mut None, || {
            Mutex::new(HashMap::<K, Flow, _>::with_capacity_and_hasher(
                capacity,
                hasher(),
            ))
        });
    }
}

fn mixes(c: &mut Criterion) {
    let (v6, v4) = (
        Table::<FlowKeyV6, Flow>::BYTES_PER_SLOT,
        Table::<FlowKeyV4, Flow>::BYTES_PER_SLOT,
    );
    println!(
        "bytes per slot (48-byte flow state): IPv6 key {v6} B, IPv4 key {v4} B; per live flow in these runs \
         (capacity 1.2 x flows, 1.25 slots per capacity): IPv6 {} B, IPv4 {} B",
        v6 * 3 / 2,
        v4 * 3 / 2
    );
    suite::<FlowKeyV6>(c, "v6-1M", 1_000_000);
    suite::<FlowKeyV4>(c, "v4-100K", 100_000);
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// One sweep pass over a 1M-flow table in which 10% of the flows have expired, while another thread looks
/// up live flows and records each lookup's latency. Returns the sweep's work time (sum of its calls) and the
/// latencies.
fn sweep_pass(t: &Table<FlowKeyV6, Flow>, now: u64, seed: u64) -> (Duration, Vec<u64>) {
    const BUDGET: usize = 4096;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut lat = Vec::with_capacity(4_000_000);
            let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let k = FlowKeyV6::make((rng % SWEEP_FLOWS) | 1); // odd ids: live flows
                let t0 = Instant::now();
                let hit = t.update(&k, now, &alive, |v| touch(v, now)).is_some();
                lat.push(t0.elapsed().as_nanos() as u64);
                assert!(hit);
            }
            lat
        });
        let mut work = Duration::ZERO;
        let mut reclaimed = 0;
        let mut visited = 0;
        std::thread::sleep(Duration::from_millis(5)); // the reader is up
        while visited < t.slots() {
            let t0 = Instant::now();
            let st = t.sweep(now, BUDGET, &alive, |_, _| {});
            work += t0.elapsed();
            reclaimed += st.reclaimed;
            visited += st.visited;
            std::thread::yield_now();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(reclaimed as u64, SWEEP_FLOWS / 10);
        (work, reader.join().unwrap())
    })
}

const SWEEP_FLOWS: u64 = 1_000_000;

/// Criterion times the sweep's work per pass; the lookup latency percentiles of every pass are printed
/// afterwards with their median and spread.
fn sweep_under_load(c: &mut Criterion) {
    let now = 10 * TIMEOUT_NS;
    let mut table: Option<Table<FlowKeyV6, Flow>> = None;
    let mut pcts: Vec<[u64; 3]> = Vec::new();
    let mut g = c.benchmark_group("sweep");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(100));
    g.measurement_time(Duration::from_secs(1));
    g.bench_function("expire-10pct-of-1M-v6", |b| {
        let t = table.get_or_insert_with(|| {
            let t = Table::new(SWEEP_FLOWS as usize * 6 / 5);
            for id in 0..SWEEP_FLOWS {
                let last_seen = if id % 10 == 0 { 0 } else { now };
                let r = t.insert(
                    &FlowKeyV6::make(id),
                    Flow {
                        last_seen,
                        ..Flow::default()
                    },
                    now,
                    &alive,
                );
                assert!(matches!(r, Insert::Inserted { .. }));
            }
            t
        });
        b.iter_custom(|iters| {
            let mut work = Duration::ZERO;
            for i in 0..iters {
                // Every tenth flow (re)appears as last seen long ago.
                for id in (0..SWEEP_FLOWS).step_by(10) {
                    let r = t.insert(&FlowKeyV6::make(id), Flow::default(), now, &alive);
                    assert!(matches!(r, Insert::Inserted { .. }));
                }
                let (w, mut lat) = sweep_pass(t, now, i);
                work += w;
                lat.sort_unstable();
                pcts.push([0.5, 0.99, 0.999].map(|p| percentile(&lat, p)));
            }
            work
        })
    });
    g.finish();
    if pcts.is_empty() {
        return;
    }
    let stat = |i: usize| {
        let mut v: Vec<u64> = pcts.iter().map(|p| p[i]).collect();
        v.sort_unstable();
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (p50, p99, p999) = (stat(0), stat(1), stat(2));
    println!(
        "lookup latency during sweeps, median (min..max) over {} passes: p50 {} ns ({}..{}), p99 {} ns ({}..{}), p99.9 {} ns ({}..{})",
        pcts.len(),
        p50.0,
        p50.1,
        p50.2,
        p99.0,
        p99.1,
        p99.2,
        p999.0,
        p999.1,
        p999.2
    );
}

criterion_group!(benches, mixes, sweep_under_load);
criterion_main!(benches);
