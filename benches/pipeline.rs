//! Frames through the whole engine (issue #5): parse + connection tracking + NACL, route and
//! security-group steps, on one thread.
//!
//! Policy (built as AWS JSON, loaded and compiled like a snapshot): one VPC, two subnets, four
//! ENIs in each (each its own instance); every subnet's NACL has 40 entries (20 per direction,
//! the flows' allow entries after 19 deny entries that do not match them); every ENI carries 16
//! security groups of 60 rules (960 rules per ENI), no `/0` rule, so every flow is tracked.
//! Traffic: TCP between clients (10.0.1.10–13) and servers (10.0.2.10–13) on port 443, so each
//! packet crosses two ENIs (two connection-tracking entries), two NACLs and a route.
//!
//! Workloads, 8192 frames per iteration:
//! - `established`: data frames of 4096 established flows, both directions;
//! - `new`: SYNs of flows never seen (the source port of each frame is rewritten before each
//!   iteration, 2 bytes per frame, in every variant; every 7 iterations the clock jumps 121 s so
//!   the old SYN_SENT entries expire);
//! - `mix`: 4 established data frames for each new-flow SYN.
//!
//! Variants: `reference` (`wire::parse` + `Packet::from_meta` + `Firewall::process`, every step by
//! its rules: the path the differential test holds the fast path to), `frame`
//! (`Firewall::process_frame`), `verdict` (`Firewall::verdict_frame`), `burst`
//! (`Firewall::process_burst`, 32 frames at a time).
//!
//! `pipeline/inspect` (issue #8): the payload-inspection stage through `process_burst`. The
//! same policy; 1024 established flows, each judged once per iteration on a data segment
//! with a 1460-byte benign HTTP request payload (64 distinct, none containing a pattern),
//! in order (the sequence numbers are rewritten before each iteration, 4 bytes per frame, in
//! every variant). The inspector: the 100 patterns of `benches/common/http.rs`, `LOWERCASE`,
//! half `block` and half `count`, scoped to tcp/443 ingress at the server ENIs `eni-s0` and
//! `eni-s1`. Flows `in_scope` go to those two servers, flows `out_of_scope` to the other two
//! (port 443 too: the ENI, not the port bitmap, puts them out of scope); each is run with
//! the inspector installed (`on`) and without one (`off`), and the out-of-scope flows also
//! with the same rules scoped to tcp/80 at every ENI instead (`on_port80`: the port bitmap
//! rejects them). Frames/s; payload bytes inspected per second = frames/s × 1460.
//!
//! `cargo bench --bench pipeline` (all), `-- established` (a subset).
//! `VPCFW_BENCH_CPU_TIME=1` times by thread CPU time instead of wall time (Linux only): on a machine
//! shared with other work, the time this thread actually ran.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::time::Duration;

mod common;
use common::clock;
#[path = "common/http.rs"]
mod http;
use vpcfw::aws::SnapshotBuilder;
use vpcfw::compile::CompiledPolicy;
use vpcfw::conntrack::{TcpFlags, Time};
use vpcfw::firewall::{Decision, Firewall, FrameError, Packet, Verdict};
use vpcfw::inspect::{Inspector, RuleScope, ScopeDirection};
use vpcfw::replay::{packet_frame, packet_frame_with};
use vpcfw::wire;

const FRAMES: usize = 8192;
const FLOWS: usize = 4096;
const CLIENTS: usize = 4;
const SERVERS: usize = 4;
const GROUPS_PER_ENI: usize = 16;
const RULES_PER_GROUP_DIR: usize = 30;

fn client(i: usize) -> String {
    format!("10.0.1.{}", 10 + i % CLIENTS)
}

fn server(i: usize) -> String {
    format!("10.0.2.{}", 10 + (i / CLIENTS) % SERVERS)
}

/// A small deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }
    /// A CIDR that never covers 10.0.1.0/24 or 10.0.2.0/24.
    fn cidr(&mut self) -> String {
        let len = 16 + self.next() % 17;
        let base = match self.next() % 3 {
            0 => 0xac10_0000 | (self.next() & 0x000f_ffff), // 172.16/12
            1 => 0xc0a8_0000 | (self.next() & 0xffff),      // 192.168/16
            _ => 0x0a00_0000 | ((10 + self.next() % 200) << 16) | (self.next() & 0xffff), // 10.10-209
        };
        let mask = if len == 32 {
            u32::MAX
        } else {
            !(u32::MAX >> len)
        };
        format!("{}/{len}", std::net::Ipv4Addr::from(base & mask))
    }
    fn ports(&mut self) -> (u32, u32) {
        let from = 1 + self.next() % 60_000;
        (from, from + self.next() % 2000)
    }
}

fn sg_rule(proto: &str, from: u32, to: u32, cidr: &str) -> Value {
    json!({"IpProtocol": proto, "FromPort": from, "ToPort": to, "IpRanges": [{"CidrIp": cidr}]})
}

fn filler_rules(rng: &mut Lcg) -> Vec<Value> {
    (0..RULES_PER_GROUP_DIR)
        .map(|_| {
            let (from, to) = rng.ports();
            let proto = if rng.next().is_multiple_of(2) {
                "tcp"
            } else {
                "udp"
            };
            sg_rule(proto, from, to, &rng.cidr())
        })
        .collect()
}

fn nacl(
    id: &str,
    subnet: &str,
    out_peer: &str,
    out_ports: (u32, u32),
    in_peer: &str,
    in_ports: (u32, u32),
    rng: &mut Lcg,
) -> Value {
    let mut entries = Vec::new();
    for egress in [true, false] {
        for n in 0..19u32 {
            let (from, to) = rng.ports();
            entries.push(json!({"RuleNumber": 10 + n * 10, "Protocol": "6", "Egress": egress,
                "RuleAction": "deny", "CidrBlock": rng.cidr(), "PortRange": {"From": from, "To": to}}));
        }
        let (peer, (from, to)) = if egress {
            (out_peer, out_ports)
        } else {
            (in_peer, in_ports)
        };
        entries.push(json!({"RuleNumber": 500, "Protocol": "6", "Egress": egress,
            "RuleAction": "allow", "CidrBlock": peer, "PortRange": {"From": from, "To": to}}));
    }
    json!({"NetworkAclId": id, "VpcId": "vpc-1", "IsDefault": false,
        "Associations": [{"SubnetId": subnet, "NetworkAclId": id}], "Entries": entries})
}

fn policy() -> CompiledPolicy {
    let mut rng = Lcg(42);
    let mut groups = Vec::new();
    let mut enis = Vec::new();
    for (tier, subnet, count) in [("c", "subnet-a", CLIENTS), ("s", "subnet-b", SERVERS)] {
        for g in 0..GROUPS_PER_ENI {
            let mut ingress = filler_rules(&mut rng);
            let mut egress = filler_rules(&mut rng);
            if g == GROUPS_PER_ENI / 2 {
                // The rules the traffic needs, in the middle of the union.
                if tier == "c" {
                    egress[RULES_PER_GROUP_DIR / 2] = sg_rule("tcp", 443, 443, "10.0.2.0/24");
                } else {
                    ingress[RULES_PER_GROUP_DIR / 2] = sg_rule("tcp", 443, 443, "10.0.1.0/24");
                }
            }
            groups.push(json!({"GroupId": format!("sg-{tier}{g}"), "VpcId": "vpc-1",
                "IpPermissions": ingress, "IpPermissionsEgress": egress}));
        }
        for i in 0..count {
            let addr = if tier == "c" {
                client(i)
            } else {
                server(i * CLIENTS)
            };
            enis.push(json!({"NetworkInterfaceId": format!("eni-{tier}{i}"), "SubnetId": subnet,
                "VpcId": "vpc-1", "PrivateIpAddress": addr,
                "PrivateIpAddresses": [{"Primary": true, "PrivateIpAddress": addr}],
                "Groups": (0..GROUPS_PER_ENI).map(|g| json!({"GroupId": format!("sg-{tier}{g}")})).collect::<Vec<_>>(),
                "Attachment": {"InstanceId": format!("i-{tier}{i}")}}));
        }
    }
    let doc = json!({
        "Vpcs": [{"VpcId": "vpc-1", "CidrBlock": "10.0.0.0/16"}],
        "Subnets": [
            {"SubnetId": "subnet-a", "VpcId": "vpc-1", "CidrBlock": "10.0.1.0/24"},
            {"SubnetId": "subnet-b", "VpcId": "vpc-1", "CidrBlock": "10.0.2.0/24"}
        ],
        "NetworkAcls": [
            nacl("acl-a", "subnet-a", "10.0.2.0/24", (443, 443), "10.0.2.0/24", (1024, 65535), &mut rng),
            nacl("acl-b", "subnet-b", "10.0.1.0/24", (1024, 65535), "10.0.1.0/24", (443, 443), &mut rng)
        ],
        "SecurityGroups": groups,
        "NetworkInterfaces": enis,
        "RouteTables": [{"RouteTableId": "rtb-1", "VpcId": "vpc-1",
            "Associations": [{"Main": true, "RouteTableId": "rtb-1"}],
            "Routes": [{"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local", "State": "active"}]}]
    });
    let mut b = SnapshotBuilder::new();
    b.add_document("bench.json", &doc.to_string())
        .expect("benchmark snapshot loads");
    CompiledPolicy::compile(b.finish().expect("benchmark snapshot loads").policy).expect("compiles")
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let p = Packet::tcp(
        src.parse().unwrap(),
        dst.parse().unwrap(),
        sport,
        dport,
        TcpFlags(flags),
    );
    let mut p = p;
    p.len = 100;
    packet_frame(&p).expect("frame")
}

const PSH_ACK: u8 = 0x18;

/// An engine with `FLOWS` established flows, and their data frames (both directions).
fn established(policy: &CompiledPolicy) -> (Firewall, Vec<Vec<u8>>) {
    let mut fw = Firewall::new(policy.clone(), None);
    let mut frames = Vec::with_capacity(2 * FLOWS);
    for i in 0..FLOWS {
        let (c, s, port) = (client(i), server(i), 20_000 + i as u16);
        for (a, b, sp, dp, f) in [
            (&c, &s, port, 443, 0x02),
            (&s, &c, 443, port, 0x12),
            (&c, &s, port, 443, 0x10),
        ] {
            let v = fw
                .verdict_frame(Time(0), &tcp(a, b, sp, dp, f))
                .expect("judged");
            assert_eq!(v.decision, Decision::Accept, "setup");
        }
        frames.push(tcp(&c, &s, port, 443, PSH_ACK));
        frames.push(tcp(&s, &c, 443, port, PSH_ACK));
    }
    (fw, frames)
}

/// SYN frames of new flows (ports rewritten per iteration by [`Workload::next`]).
fn syns(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| tcp(&client(i), &server(i), 1024, 443, 0x02))
        .collect()
}

/// Frames of one workload, with the positions of SYNs whose source port changes each iteration.
struct Workload {
    frames: Vec<Vec<u8>>,
    syns: Vec<usize>,
    round: u64,
    now: Time,
}

/// Offset of the TCP source port in the frames built here (Ethernet + IPv4 without options).
const SPORT: usize = 14 + 20;

impl Workload {
    fn new(frames: Vec<Vec<u8>>, syns: Vec<usize>) -> Workload {
        for &i in &syns {
            assert_eq!(wire::parse(&frames[i]).unwrap().l4_offset as usize, SPORT);
        }
        Workload {
            frames,
            syns,
            round: 0,
            now: Time::from_secs(1),
        }
    }

    /// Advances to the next iteration: SYNs get fresh source ports (unique for 7 iterations;
    /// then the clock jumps past the SYN_SENT timeout), the clock moves 1 ms.
    fn next(&mut self) -> Time {
        self.round += 1;
        let r = (self.round % 7) as usize;
        if r == 0 {
            self.now = self.now.plus_secs(121);
        }
        self.now = Time(self.now.0 + 1_000_000);
        for (k, &i) in self.syns.iter().enumerate() {
            let port = (1024 + r * FRAMES + k) as u16;
            self.frames[i][SPORT..SPORT + 2].copy_from_slice(&port.to_be_bytes());
        }
        self.now
    }
}

fn workload(name: &str, policy: &CompiledPolicy) -> (Firewall, Workload) {
    let (fw, data) = established(policy);
    match name {
        "established" => (fw, Workload::new(data, Vec::new())),
        "new" => (fw, Workload::new(syns(FRAMES), (0..FRAMES).collect())),
        _ => {
            let mut frames = Vec::with_capacity(FRAMES);
            let mut positions = Vec::new();
            let new = syns(FRAMES / 5 + 1);
            let (mut d, mut s) = (0, 0);
            for i in 0..FRAMES {
                if i % 5 == 4 {
                    positions.push(i);
                    frames.push(new[s].clone());
                    s += 1;
                } else {
                    frames.push(data[d % data.len()].clone());
                    d += 1;
                }
            }
            (fw, Workload::new(frames, positions))
        }
    }
}

fn pipeline(c: &mut Criterion) {
    let policy = policy();
    for name in ["established", "new", "mix"] {
        let mut g = c.benchmark_group(format!("pipeline/{name}"));
        g.throughput(Throughput::Elements(FRAMES as u64));
        g.sample_size(20);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(4));
        for variant in ["reference", "frame", "verdict", "burst"] {
            let (mut fw, mut w) = workload(name, &policy);
            let mut out: Vec<Result<Verdict, FrameError>> = vec![Err(FrameError::NotIp); FRAMES];
            g.bench_function(BenchmarkId::from_parameter(variant), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t0 = clock();
                        std::hint::black_box(run(variant, name, &mut fw, &mut w, &mut out));
                        total += clock() - t0;
                    }
                    total
                })
            });
        }
        g.finish();
    }
}

/// One iteration: every frame of the workload through one variant; returns the accepted count.
fn run(
    variant: &str,
    name: &str,
    fw: &mut Firewall,
    w: &mut Workload,
    out: &mut [Result<Verdict, FrameError>],
) -> usize {
    let now = w.next();
    let mut accepted = 0usize;
    match variant {
        "reference" => {
            for f in &w.frames {
                let m = wire::parse(f).expect("parses");
                let v = fw.process(now, &Packet::from_meta(&m)).expect("judged");
                accepted += usize::from(v.decision == Decision::Accept);
            }
        }
        "frame" => {
            for f in &w.frames {
                let (_, v) = fw.process_frame(now, f).expect("judged");
                accepted += usize::from(v.decision == Decision::Accept);
            }
        }
        "verdict" => {
            for f in &w.frames {
                let v = fw.verdict_frame(now, f).expect("judged");
                accepted += usize::from(v.decision == Decision::Accept);
            }
        }
        _ => {
            let refs: [&[u8]; 32] = [&[]; 32];
            let mut refs = refs;
            for (chunk, out) in w.frames.chunks(32).zip(out.chunks_mut(32)) {
                for (r, f) in refs.iter_mut().zip(chunk) {
                    *r = f.as_slice();
                }
                assert_eq!(
                    fw.process_burst(now, &refs[..chunk.len()], out),
                    chunk.len()
                );
            }
            accepted = out
                .iter()
                .filter(|v| matches!(v, Ok(v) if v.decision == Decision::Accept))
                .count();
        }
    }
    assert_eq!(
        accepted, FRAMES,
        "{name}/{variant}: every frame is accepted"
    );
    accepted
}

/// Established flows of the inspection benchmark per workload.
const INSPECT_FLOWS: usize = 1024;
/// The payload of every inspected data segment.
const PAYLOAD: usize = 1460;
/// The clients' initial sequence number.
const ISN: u32 = 1000;
/// Offset of the TCP sequence number in the frames built here.
const SEQ: usize = SPORT + 4;

/// The 100-pattern inspector, scoped to tcp/443 arriving at `eni-s0` and `eni-s1`, or (with
/// `port80`) to tcp/80 arriving anywhere.
fn inspector(policy: &CompiledPolicy, port80: bool) -> Inspector {
    let rules = http::rules(
        true,
        RuleScope {
            protocol: 6,
            ports: vec![if port80 { (80, 80) } else { (443, 443) }],
            direction: ScopeDirection::Ingress,
            enis: if port80 {
                vec![]
            } else {
                vec!["eni-s0".into(), "eni-s1".into()]
            },
            groups: vec![],
        },
    );
    let (insp, warnings) = Inspector::compile(&rules, policy.policy()).expect("rules compile");
    assert!(warnings.is_empty(), "{warnings:?}");
    insp
}

/// The flows of one inspection workload: client→server data segments of flows to the servers
/// `eni-s0`/`eni-s1` (`in_scope`) or `eni-s2`/`eni-s3`, with their source ports.
fn inspect_flows(in_scope: bool) -> Vec<(String, String, u16)> {
    (0..FLOWS)
        .filter(|i| ((i / CLIENTS) % SERVERS < 2) == in_scope)
        .take(INSPECT_FLOWS)
        .map(|i| (client(i), server(i), 20_000 + i as u16))
        .collect()
}

/// An engine (with `insp` installed, if given) in which every flow is established (SYN,
/// SYN-ACK, ACK), and each flow's first data segment, `seq` ISN + 1.
fn inspect_workload(
    policy: &CompiledPolicy,
    insp: Option<&std::sync::Arc<Inspector>>,
    flows: &[(String, String, u16)],
    payloads: &[Vec<u8>],
) -> (Firewall, Vec<Vec<u8>>) {
    let mut fw = Firewall::new(policy.clone(), None);
    fw.set_inspector(insp.cloned());
    let seg = |a: &str, b: &str, sp, dp, f, seq, pl: &[u8]| {
        let mut p = Packet::tcp(a.parse().unwrap(), b.parse().unwrap(), sp, dp, TcpFlags(f));
        p.len = 40;
        packet_frame_with(&p, Some(seq), pl).expect("frame")
    };
    let mut frames = Vec::with_capacity(flows.len());
    for (k, (c, s, port)) in flows.iter().enumerate() {
        for f in [
            seg(c, s, *port, 443, 0x02, ISN, &[]),
            seg(s, c, 443, *port, 0x12, 7, &[]),
            seg(c, s, *port, 443, 0x10, ISN + 1, &[]),
        ] {
            let v = fw.verdict_frame(Time(0), &f).expect("judged");
            assert_eq!(v.decision, Decision::Accept, "setup");
        }
        let pl = &payloads[k % payloads.len()];
        assert_eq!(pl.len(), PAYLOAD);
        frames.push(seg(c, s, *port, 443, PSH_ACK, ISN + 1, pl));
        assert_eq!(
            wire::parse(&frames[k]).unwrap().payload_len as usize,
            PAYLOAD
        );
    }
    (fw, frames)
}

fn inspection(c: &mut Criterion) {
    let policy = policy();
    let insp = std::sync::Arc::new(inspector(&policy, false));
    let insp80 = std::sync::Arc::new(inspector(&policy, true));
    let payloads: Vec<Vec<u8>> = (0..64).map(http::payload).collect();
    // The rules see the traffic they cover: a request naming the metadata address, on a flow
    // to `eni-s0`, is blocked; on a flow to `eni-s2`, it is not inspected.
    {
        let mut bad = payloads[0].clone();
        bad[100..115].copy_from_slice(b"169.254.169.254");
        for (in_scope, want) in [(true, Decision::Reject), (false, Decision::Accept)] {
            let flows = &inspect_flows(in_scope)[..1];
            let (mut fw, frames) = inspect_workload(&policy, Some(&insp), flows, &[bad.clone()]);
            let v = fw.verdict_frame(Time(1), &frames[0]).expect("judged");
            assert_eq!(v.decision, want, "in scope: {in_scope}");
        }
    }
    for scope in ["in_scope", "out_of_scope"] {
        let flows = inspect_flows(scope == "in_scope");
        assert_eq!(flows.len(), INSPECT_FLOWS);
        let mut g = c.benchmark_group(format!("pipeline/inspect/{scope}"));
        g.throughput(Throughput::Elements(INSPECT_FLOWS as u64));
        g.sample_size(20);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(4));
        // `on_port80`: rules for tcp/80 only, so these port-443 flows fail the port bitmap test.
        let variants: &[&str] = match scope {
            "in_scope" => &["off", "on"],
            _ => &["off", "on", "on_port80"],
        };
        for &variant in variants {
            let installed = match variant {
                "on" => Some(&insp),
                "on_port80" => Some(&insp80),
                _ => None,
            };
            let (mut fw, mut frames) = inspect_workload(&policy, installed, &flows, &payloads);
            let before = (insp.counters(), insp80.counters());
            let mut out: Vec<Result<Verdict, FrameError>> =
                vec![Err(FrameError::NotIp); INSPECT_FLOWS];
            let mut seq = ISN + 1;
            let mut now = Time::from_secs(1);
            g.bench_function(BenchmarkId::from_parameter(variant), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // The next segment of every flow: in order, never a retransmission.
                        now = Time(now.0 + 1_000_000);
                        for f in &mut frames {
                            f[SEQ..SEQ + 4].copy_from_slice(&seq.to_be_bytes());
                        }
                        let t0 = clock();
                        std::hint::black_box(burst(&mut fw, now, &frames, &mut out));
                        total += clock() - t0;
                        seq = seq.wrapping_add(PAYLOAD as u32);
                    }
                    total
                })
            });
            // Every byte was scanned in order (no gap, no retransmission) and nothing matched.
            let after = (insp.counters(), insp80.counters());
            assert_eq!(after, before, "{scope}: no match, gap or retransmission");
        }
        g.finish();
    }
}

/// Every frame through `process_burst`, 32 at a time; all must be accepted.
fn burst(
    fw: &mut Firewall,
    now: Time,
    frames: &[Vec<u8>],
    out: &mut [Result<Verdict, FrameError>],
) -> usize {
    let mut refs: [&[u8]; 32] = [&[]; 32];
    for (chunk, out) in frames.chunks(32).zip(out.chunks_mut(32)) {
        for (r, f) in refs.iter_mut().zip(chunk) {
            *r = f.as_slice();
        }
        assert_eq!(
            fw.process_burst(now, &refs[..chunk.len()], out),
            chunk.len()
        );
    }
    let accepted = out
        .iter()
        .filter(|v| matches!(v, Ok(v) if v.decision == Decision::Accept))
        .count();
    assert_eq!(accepted, frames.len(), "every frame is accepted");
    accepted
}

criterion_group!(benches, pipeline, inspection);
criterion_main!(benches);
