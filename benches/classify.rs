//! Classification throughput, build time and memory (issue #3).
//!
//! Sets: ClassBench acl1/fw1/ipc1 at 40, 1K, 10K and 100K rules with their own traces
//! (`../shared/classbench`), and two AWS-shaped synthetic sets: a 40-entry NACL and the union
//! of 16 security groups × 60 rules. For each set, single thread:
//!
//! * `classify/<set>/one`: `Matcher::first_match`, one key at a time over the whole trace;
//! * `classify/<set>/burst`: `Matcher::first_match_burst`, 32 keys per call;
//! * `classify/<set>/linear`: the reference linear scan (baseline). At 10K it runs over the
//!   first 4,096 trace keys only, and it is skipped at 100K (about 50 µs a lookup).
//!
//! Throughput is in trace keys (elements) per second. Build time (median of several builds
//! below 10K rules, one build above) and memory are printed once per set on stderr.
//! `VPCFW_BENCH_CHOICE=1` adds `choice/<set>/<algorithm>`: each structure forced, over the
//! sets where each is feasible, which is how the size thresholds were chosen.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use vpcfw::matcher::reference::Linear;
use vpcfw::matcher::{Algorithm, Config, Key, Matcher, Rule, classbench, synth};

struct Set {
    name: String,
    rules: Vec<Rule<u32>>,
    keys: Vec<Key<u32>>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/classbench")
}

fn classbench_set(family: &str, size: &str) -> Set {
    let gz = if size == "100k" { ".gz" } else { "" };
    let rules =
        classbench::load_filters(dir().join(format!("{family}_{size}{gz}"))).expect("filters");
    let keys = classbench::load_trace(dir().join(format!("{family}_{size}_trace{gz}")))
        .expect("trace")
        .into_iter()
        .map(|t| t.key)
        .collect();
    Set {
        name: format!("{family}_{size}"),
        rules,
        keys,
    }
}

fn sets() -> Vec<Set> {
    let mut v = Vec::new();
    for size in ["40", "1k", "10k", "100k"] {
        for family in ["acl1", "fw1", "ipc1"] {
            v.push(classbench_set(family, size));
        }
    }
    let nacl = synth::nacl40(40);
    let keys = synth::keys_for(&nacl, 8192, 7);
    v.push(Set {
        name: "aws_nacl40".into(),
        rules: nacl,
        keys,
    });
    let sg = synth::sg_union(960, 16, 60);
    let keys = synth::keys_for(&sg, 8192, 9);
    v.push(Set {
        name: "aws_sg960".into(),
        rules: sg,
        keys,
    });
    v
}

fn build(rules: &[Rule<u32>], config: Config) -> (Matcher<u32>, Duration) {
    let runs = if rules.len() >= 10_000 { 1 } else { 5 };
    let mut times = Vec::new();
    let mut m = None;
    for _ in 0..runs {
        let r = rules.to_vec();
        let t = Instant::now();
        m = Some(
            Matcher::builder()
                .configure(config.clone())
                .build(r)
                .expect("build"),
        );
        times.push(t.elapsed());
    }
    times.sort();
    (m.expect("built"), times[times.len() / 2])
}

fn bench_one(g: &mut BenchmarkGroup<'_, WallTime>, id: &str, m: &Matcher<u32>, keys: &[Key<u32>]) {
    g.bench_function(id, |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for k in keys {
                acc = acc.wrapping_add(u64::from(m.first_match(black_box(k)).unwrap_or(u32::MAX)));
            }
            acc
        })
    });
}

fn classify(c: &mut Criterion) {
    let choice = std::env::var_os("VPCFW_BENCH_CHOICE").is_some();
    for set in sets() {
        let (m, t) = build(&set.rules, Config::new());
        eprintln!(
            "build {:<12} rules={:<6} keys={:<6} algorithm={:?} build={:.3} ms memory={:.2} MiB",
            set.name,
            set.rules.len(),
            set.keys.len(),
            m.algorithm(),
            t.as_secs_f64() * 1e3,
            m.memory_usage() as f64 / (1 << 20) as f64
        );
        let mut g = c.benchmark_group(format!("classify/{}", set.name));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        g.throughput(Throughput::Elements(set.keys.len() as u64));
        bench_one(&mut g, "one", &m, &set.keys);
        let mut out = vec![None; set.keys.len()];
        g.bench_function("burst", |b| {
            b.iter(|| {
                m.first_match_burst(black_box(&set.keys), &mut out);
                out[out.len() - 1]
            })
        });
        if set.rules.len() < 50_000 {
            let keys = if set.rules.len() >= 5_000 {
                &set.keys[..4096]
            } else {
                &set.keys[..]
            };
            let lin = Linear::new(set.rules.clone());
            g.throughput(Throughput::Elements(keys.len() as u64));
            g.bench_function("linear", |b| {
                b.iter(|| {
                    let mut acc = 0u64;
                    for k in keys {
                        acc = acc.wrapping_add(u64::from(
                            lin.first_match(black_box(k)).unwrap_or(u32::MAX),
                        ));
                    }
                    acc
                })
            });
        }
        g.finish();
        if choice {
            let mut g = c.benchmark_group(format!("choice/{}", set.name));
            g.sample_size(10)
                .warm_up_time(Duration::from_millis(300))
                .measurement_time(Duration::from_secs(1));
            g.throughput(Throughput::Elements(set.keys.len() as u64));
            for alg in [
                Algorithm::Linear,
                Algorithm::Bitset,
                Algorithm::Tree,
                Algorithm::TupleMerge,
            ] {
                let feasible = match alg {
                    Algorithm::Linear => set.rules.len() <= 1000,
                    Algorithm::Bitset => set.rules.len() <= 10_000,
                    // Forced, the tree has no replication budget: fw1_10k alone takes 9 s.
                    Algorithm::Tree => set.rules.len() <= 2_000,
                    _ => true,
                };
                if !feasible {
                    continue;
                }
                let (m, t) = build(&set.rules, Config::new().algorithm(Some(alg)));
                eprintln!(
                    "choice {:<12} {:?}: build={:.3} ms memory={:.2} MiB",
                    set.name,
                    alg,
                    t.as_secs_f64() * 1e3,
                    m.memory_usage() as f64 / (1 << 20) as f64
                );
                bench_one(&mut g, &format!("{alg:?}"), &m, &set.keys);
            }
            g.finish();
        }
    }
}

criterion_group!(benches, classify);
criterion_main!(benches);
