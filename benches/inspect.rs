//! Payload inspection benchmark (issue #8).
//!
//! 100 realistic byte-match patterns (SSRF / instance-metadata strings, SQL injection, XSS, path
//! traversal, command injection, Log4Shell tokens) in one scope (tcp/80 ingress), 1460-byte
//! HTTP request payloads (64 distinct, no pattern inside) fed as consecutive in-order segments
//! of one stream. Throughput is payload bytes per second on one core.
//!
//! - `inspect/tcp_in_order/<variant>`: [`Inspector::tcp_segment`] with all rules `LOWERCASE`
//!   (`lowercase`) or `NONE` (`exact`), with the shipped options (DFA with byte classes and the
//!   grouped Teddy prefilter), without the prefilter, and without byte classes.
//! - `inspect/raw/<automaton>`: the bare resumable loop over the same bytes with no prefilter,
//!   for the automaton kinds aho-corasick offers (DFA, contiguous NFA; byte classes on/off).
//! - `inspect/out_of_scope/*`: a packet of a flow no rule covers: `scope_of` alone, and
//!   `tcp_segment` on a stream that is not inspected.
//!
//! `cargo bench --bench inspect`; `VPCFW_BENCH_CPU_TIME=1` times by thread CPU time instead of
//! wall time (Linux only), which is closer to "per core" on a shared machine.

use std::hint::black_box;
use std::time::{Duration, Instant};

mod common;
use common::{cpu_mode, thread_cpu_time};
#[path = "common/http.rs"]
mod http;
use http::{PATTERNS, payload};

use aho_corasick::automaton::Automaton;
use aho_corasick::{Anchored, MatchKind, dfa, nfa::contiguous};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vpcfw::inspect::{Inspector, RuleScope, RuleSet, ScopeDirection};
use vpcfw::policy::{Eni, Policy};

fn policy() -> Policy {
    Policy {
        enis: vec![Eni {
            id: "eni-web".into(),
            subnet_id: "subnet-1".into(),
            owner_id: None,
            private_ipv4: vec![],
            ipv6: vec![],
            groups: vec!["sg-web".into()],
            instance_id: None,
            conntrack: Default::default(),
        }],
        ..Policy::default()
    }
}

fn rules(lowercase: bool) -> RuleSet {
    http::rules(
        lowercase,
        RuleScope {
            protocol: 6,
            ports: vec![(80, 80)],
            direction: ScopeDirection::Ingress,
            enis: vec![],
            groups: vec![],
        },
    )
}

/// Times `iters` runs of `f` by wall or thread CPU time.
fn timed(iters: u64, mut f: impl FnMut()) -> Duration {
    if cpu_mode() {
        let t = thread_cpu_time();
        for _ in 0..iters {
            f();
        }
        thread_cpu_time() - t
    } else {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        t.elapsed()
    }
}

fn bench(c: &mut Criterion) {
    let payloads: Vec<Vec<u8>> = (0..64).map(payload).collect();
    let total: usize = payloads.iter().map(Vec::len).sum();
    let p = policy();

    let mut g = c.benchmark_group("inspect/tcp_in_order");
    g.throughput(Throughput::Bytes(total as u64));
    for (name, lowercase, byte_classes, prefilter) in [
        ("lowercase", true, true, true),
        ("exact", false, true, true),
        ("lowercase_no_prefilter", true, true, false),
        ("lowercase_no_byte_classes", true, false, true),
    ] {
        let rules = rules(lowercase);
        let (insp, _) = Inspector::compile_tuned(&rules, &p, byte_classes, prefilter).unwrap();
        let scope = insp.scope_of(6, 80, None, Some(0)).unwrap();
        // Nothing in the payloads matches (benign traffic).
        for pl in &payloads {
            assert_eq!(insp.datagram(scope, pl).counted, 0);
            assert!(!insp.datagram(scope, pl).is_block());
        }
        eprintln!(
            "{name}: {} patterns, {} scope classes, {} KiB of automata and prefilters",
            rules.rules.len(),
            insp.scopes_len(),
            insp.memory_usage() / 1024
        );
        let mut st = insp.stream(Some(scope));
        insp.tcp_syn(&mut st, 0);
        let mut seq = 1u32;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed(iters, || {
                    for pl in &payloads {
                        let o = insp.tcp_segment(&mut st, seq, black_box(pl));
                        seq = seq.wrapping_add(pl.len() as u32);
                        black_box(o);
                    }
                })
            })
        });
    }
    let pats: Vec<String> = PATTERNS.iter().map(|s| s.to_string()).collect();
    for bc in [true, false] {
        let d = dfa::Builder::new()
            .match_kind(MatchKind::Standard)
            .byte_classes(bc)
            .prefilter(false)
            .build(&pats)
            .unwrap();
        g.bench_function(format!("raw/dfa_byte_classes_{bc}"), |b| {
            b.iter_custom(|iters| {
                timed(iters, || {
                    black_box(walk(&d, &payloads));
                })
            })
        });
        let n = contiguous::Builder::new()
            .match_kind(MatchKind::Standard)
            .byte_classes(bc)
            .prefilter(false)
            .build(&pats)
            .unwrap();
        g.bench_function(format!("raw/contiguous_nfa_byte_classes_{bc}"), |b| {
            b.iter_custom(|iters| {
                timed(iters, || {
                    black_box(walk(&n, &payloads));
                })
            })
        });
    }
    g.finish();

    let rules = rules(true);
    let (insp, _) = Inspector::compile(&rules, &p).unwrap();
    let mut g = c.benchmark_group("inspect/out_of_scope");
    g.throughput(Throughput::Elements(1));
    g.bench_function("scope_of", |b| {
        b.iter(|| insp.scope_of(black_box(6), black_box(5432), Some(0), Some(0)))
    });
    let mut idle = insp.stream(None);
    let pl = &payloads[0];
    g.bench_function("tcp_segment_not_inspected", |b| {
        b.iter(|| insp.tcp_segment(&mut idle, black_box(1), black_box(pl)))
    });
    g.finish();
}

/// The bare resumable loop: state in, bytes, state out, matches counted.
fn walk<A: Automaton>(a: &A, payloads: &[Vec<u8>]) -> u64 {
    let mut sid = a.start_state(Anchored::No).unwrap();
    let mut m = 0u64;
    for pl in payloads {
        for &byte in pl {
            sid = a.next_state(Anchored::No, sid, byte);
            if a.is_match(sid) {
                m += a.match_len(sid) as u64;
            }
        }
    }
    m + u64::from(sid.as_u32())
}

criterion_group!(benches, bench);
criterion_main!(benches);
