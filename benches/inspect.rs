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

use aho_corasick::automaton::Automaton;
use aho_corasick::{Anchored, MatchKind, dfa, nfa::contiguous};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vpcfw::inspect::{Inspector, Rule, RuleAction, RuleScope, RuleSet, ScopeDirection};
use vpcfw::policy::{Eni, Policy};

const PATTERNS: [&str; 100] = [
    "169.254.169.254",
    "metadata.google.internal",
    "/latest/meta-data",
    "/computemetadata/v1",
    "100.100.100.200",
    "fd00:ec2::254",
    "/latest/api/token",
    "x-aws-ec2-metadata-token",
    "file://",
    "gopher://",
    "dict://",
    "127.0.0.1",
    "0x7f000001",
    "2130706433",
    "[::1]",
    "0177.0.0.1",
    "169.254.170.2",
    "/latest/user-data",
    "iam/security-credentials",
    "union select",
    "union all select",
    "' or '1'='1",
    "\" or \"1\"=\"1",
    " or 1=1",
    "sleep(",
    "benchmark(",
    "waitfor delay",
    "information_schema",
    "pg_sleep",
    "xp_cmdshell",
    "load_file(",
    "into outfile",
    "@@version",
    "char(",
    "group_concat(",
    "drop table",
    "insert into",
    "'; --",
    "/**/",
    "0x3a",
    "having 1=1",
    "order by 1--",
    "sysobjects",
    "utl_http",
    "dbms_pipe",
    "<script",
    "javascript:",
    "onerror=",
    "onload=",
    "<iframe",
    "<svg",
    "document.cookie",
    "alert(",
    "eval(",
    "string.fromcharcode",
    "vbscript:",
    "expression(",
    "<object",
    "<embed",
    "srcdoc=",
    "onmouseover=",
    "../",
    "..\\",
    "%2e%2e%2f",
    "%2e%2e/",
    "..%2f",
    "%252e%252e",
    "/etc/passwd",
    "/etc/shadow",
    "c:\\windows",
    "win.ini",
    "/proc/self/environ",
    "boot.ini",
    "web-inf/web.xml",
    "; cat ",
    "| nc ",
    "&& wget",
    "$(curl",
    "`id`",
    "/bin/sh",
    "/bin/bash",
    "cmd.exe",
    "powershell",
    "${jndi:",
    "${lower:",
    "${env:",
    "${::-j}",
    "ldap://",
    "rmi://",
    "php://input",
    "data://text",
    "expect://",
    "<?php",
    "base64_decode(",
    "system(",
    "passthru(",
    "shell_exec(",
    "/.git/config",
    "/.env",
    "wp-config.php",
];

/// A benign 1460-byte HTTP request (headers and a JSON body) that contains no pattern.
fn payload(seed: u64) -> Vec<u8> {
    let mut s = format!(
        "POST /api/v2/orders/{seed}/items?include=details&page=2 HTTP/1.1\r\nHost: shop.example.com\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
         Accept: application/json, text/plain, */*\r\nAccept-Language: en-US,en;q=0.5\r\n\
         Accept-Encoding: gzip, deflate, br\r\nContent-Type: application/json\r\n\
         Cookie: session=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U; theme=dark\r\n\
         Connection: keep-alive\r\n\r\n{{\"items\":["
    );
    let words = [
        "the",
        "customer",
        "order",
        "shipping",
        "address",
        "street",
        "quantity",
        "price",
        "currency",
        "EUR",
        "description",
        "blue",
        "cotton",
        "shirt",
        "size",
        "medium",
        "delivery",
        "express",
        "notes",
        "please",
        "leave",
        "at",
        "door",
        "gift",
        "wrap",
        "yes",
        "coupon",
        "SPRING",
        "discount",
        "total",
    ];
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    while s.len() < 1460 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let a = words[(x >> 33) as usize % words.len()];
        let b = words[(x >> 20) as usize % words.len()];
        s.push_str(&format!(
            "{{\"sku\":\"A{}\",\"note\":\"{a} {b}\"}},",
            (x >> 40) % 10000
        ));
    }
    s.truncate(1460);
    s.into_bytes()
}

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
    RuleSet {
        file: "bench".into(),
        rules: PATTERNS
            .iter()
            .enumerate()
            .map(|(i, p)| Rule {
                name: format!("r{i}"),
                action: if i % 2 == 0 {
                    RuleAction::Block
                } else {
                    RuleAction::Count
                },
                pattern: p.as_bytes().to_vec(),
                lowercase,
                scope: RuleScope {
                    protocol: 6,
                    ports: vec![(80, 80)],
                    direction: ScopeDirection::Ingress,
                    enis: vec![],
                    groups: vec![],
                },
                path: format!("ByteMatchRules[{i}]"),
            })
            .collect(),
    }
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
