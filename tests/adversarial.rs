//! Adversarial tests (issue #7): the engine under attack through its traffic pattern, its
//! configuration and its frames. Each test is bounded: simulated time only, fixed sizes, and
//! hostile configurations either compile within the limits stated below or are refused first.
//!
//! Stated limits (checked here with a per-thread counting allocator, and a generous wall-clock
//! bound that only catches runaway work; measured figures are in the README's robustness
//! section):
//! - 100,000 security-group rules in one group: compile under [`BIG_COMPILE_BYTES`] and
//!   [`BIG_COMPILE_SECS`];
//! - a NACL with 32,766 deeply nested entries per direction (the most rule numbers AWS allows):
//!   same bounds;
//! - 5,000 ENIs sharing one self-referencing group (50,000 expanded rules): same bounds;
//! - 5,000 ENIs whose group lists differ, each expanding that group (250M rules): refused with a
//!   `CompileError` naming the ENI, the group and the limit, under [`REFUSE_BYTES`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vpcfw::aws::{Snapshot, SnapshotBuilder};
use vpcfw::compile::{CompileLimits, CompiledPolicy, DEFAULT_MAX_TOTAL_RULES};
use vpcfw::conntrack::{TcpFlags, Time};
use vpcfw::firewall::{Decision, Firewall, Packet, Reason, SgPass, Stage, Verdict};
use vpcfw::wire::{self, EthernetRepr, IpRepr, Ipv4Repr, L4Repr, MacAddr, PacketBuilder, TcpRepr};

/// Peak heap a hostile-but-acceptable configuration may take to compile.
const BIG_COMPILE_BYTES: usize = 64 << 20;
/// Wall-clock bound for one hostile compile (runaway detection, not a benchmark).
const BIG_COMPILE_SECS: u64 = 10;
/// Peak heap compilation may take before it refuses an over-limit configuration.
const REFUSE_BYTES: usize = 16 << 20;

// ---------------------------------------------------------------------------------------------
// A per-thread counting allocator: tests run on parallel threads, compilation never spawns one.

struct Counting;

thread_local! {
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = CURRENT.try_with(|c| {
        let v = c.get() + delta;
        c.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

// SAFETY: every method forwards to `System` with the same arguments and only adds bookkeeping in
// thread-local `Cell`s (const-initialised, so touching them never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            note(l.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            note(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded unchanged; `p` was allocated by `System` with `l`.
        unsafe { System.dealloc(p, l) };
        note(-(l.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            note(new as isize - l.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f`, returning its result, the peak heap growth on this thread, and the wall time.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize, Duration) {
    let start = CURRENT.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let t = Instant::now();
    let out = f();
    let took = t.elapsed();
    let peak = PEAK.with(Cell::get) - start;
    (out, peak.max(0) as usize, took)
}

// ---------------------------------------------------------------------------------------------
// Snapshots: the bundled three-tier example as JSON values, edited per test.

const NAMES: [&str; 6] = ["acls", "enis", "routes", "sgs", "subnets", "vpcs"];
const TEXTS: [&str; 6] = [
    include_str!("../examples/three-tier/describe-network-acls.json"),
    include_str!("../examples/three-tier/describe-network-interfaces.json"),
    include_str!("../examples/three-tier/describe-route-tables.json"),
    include_str!("../examples/three-tier/describe-security-groups.json"),
    include_str!("../examples/three-tier/describe-subnets.json"),
    include_str!("../examples/three-tier/describe-vpcs.json"),
];

const WEB: &str = "10.0.1.10";
const APP: &str = "10.0.2.10";
const APP2: &str = "10.0.2.11";
const DB: &str = "10.0.3.20";
const WEB_SG: usize = 0;
const APP_SG: usize = 1;

/// The example's documents, in [`NAMES`] order.
fn example() -> Vec<Value> {
    TEXTS
        .iter()
        .map(|t| serde_json::from_str(t).expect("bundled example"))
        .collect()
}

fn load(docs: &[Value]) -> Result<Snapshot, String> {
    let mut b = SnapshotBuilder::new();
    for (name, doc) in NAMES.iter().zip(docs) {
        b.add_document(name, &doc.to_string())
            .map_err(|e| e.to_string())?;
    }
    b.finish().map_err(|e| e.to_string())
}

fn compile(docs: &[Value]) -> CompiledPolicy {
    CompiledPolicy::compile(load(docs).expect("loads").policy).expect("compiles")
}

/// Loads and compiles; the error a reload would report.
fn try_compile(docs: &[Value]) -> Result<CompiledPolicy, String> {
    let snap = load(docs)?;
    CompiledPolicy::compile(snap.policy).map_err(|e| e.to_string())
}

fn sgs(docs: &mut [Value]) -> &mut Vec<Value> {
    docs[3]["SecurityGroups"]
        .as_array_mut()
        .expect("SecurityGroups")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Packet {
    Packet::tcp(ip(src), ip(dst), sport, dport, TcpFlags(flags))
}

const SYN: u8 = TcpFlags::SYN;
const SYNACK: u8 = TcpFlags::SYN | TcpFlags::ACK;
const ACK: u8 = TcpFlags::ACK;

fn judge(fw: &mut Firewall, now: Time, p: &Packet) -> Verdict {
    fw.process(now, p).expect("a packet of the VPC")
}

/// Opens a web → app:8080 connection (three-way handshake), all accepted.
fn handshake(fw: &mut Firewall, now: Time, sport: u16) {
    for (p, what) in [
        (tcp(WEB, APP, sport, 8080, SYN), "SYN"),
        (tcp(APP, WEB, 8080, sport, SYNACK), "SYN-ACK"),
        (tcp(WEB, APP, sport, 8080, ACK), "ACK"),
    ] {
        let v = judge(fw, now, &p);
        assert_eq!(v.decision, Decision::Accept, "{what} of {sport}: {v:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Traffic attacks.

#[test]
fn syn_flood_against_the_allowance_spares_established_flows() {
    const ALLOWANCE: u32 = 100;
    const ESTABLISHED: u16 = 30;
    const FLOOD: u32 = 20_000;
    let mut fw = Firewall::new(compile(&example()), Some(ALLOWANCE));
    let mut now = Time(0);
    for i in 0..ESTABLISHED {
        handshake(&mut fw, now, 40_000 + i);
    }
    // A flood of new flows from the (compromised) web instance to the app tier: each SYN is a
    // new tracked flow at web's egress and app's ingress. Established flows keep talking.
    let (mut refused, mut admitted, mut established_ok) = (0u64, 0u64, 0u64);
    for n in 0..FLOOD {
        let sport = 1024 + (n % 60_000) as u16;
        let dport = 8080;
        let v = judge(&mut fw, now, &tcp(WEB, APP, sport, dport, SYN));
        match (v.decision, v.stage) {
            (Decision::Accept, _) => admitted += 1,
            (Decision::Reject, Some(Stage::ConntrackAllowance)) => {
                assert_eq!(v.reason, Reason::Allowance);
                refused += 1;
            }
            other => panic!("flood SYN {n}: unexpected {other:?}"),
        }
        if n % 200 == 0 {
            now = now.plus_secs(1);
        }
        if n % 50 == 0 {
            for i in 0..ESTABLISHED {
                let sport = 40_000 + i;
                for p in [
                    tcp(WEB, APP, sport, 8080, ACK | TcpFlags::PSH),
                    tcp(APP, WEB, 8080, sport, ACK),
                ] {
                    let v = judge(&mut fw, now, &p);
                    assert_eq!(v.decision, Decision::Accept, "established {sport}: {v:?}");
                    established_ok += 1;
                }
            }
        }
    }
    // Simulated time stayed under SYN_SENT's 120 s, so no flood entry expired: exactly
    // ALLOWANCE - ESTABLISHED flood flows got an entry at the web instance, all others were
    // refused there, each counted once.
    assert!(now < Time(0).plus_secs(120));
    assert_eq!(admitted, u64::from(ALLOWANCE) - u64::from(ESTABLISHED));
    assert_eq!(refused, u64::from(FLOOD) - admitted);
    assert_eq!(fw.stats().conntrack_allowance_exceeded, refused);
    assert_eq!(
        fw.stats().rejected[Stage::ConntrackAllowance.index()],
        refused
    );
    assert_eq!(
        established_ok,
        u64::from(FLOOD).div_ceil(50) * u64::from(ESTABLISHED) * 2
    );
    // Refused SYNs created no state anywhere.
    let web_entries = fw
        .entries(now)
        .iter()
        .filter(|f| fw.zone_eni(f.key.zone) == Some("eni-0e1f2a3b4c5d6d001"))
        .count();
    assert_eq!(web_entries, ALLOWANCE as usize);
}

/// The example with new web → app connections forbidden (app-sg loses its 8080 rule) and
/// internet HTTPS to web forbidden (web-sg loses its 443 rule). NACLs are unchanged: NACL
/// changes apply to every packet at once, tracked or not (SPEC §4).
fn locked_down() -> Vec<Value> {
    let mut docs = example();
    let g = sgs(&mut docs);
    g[APP_SG]["IpPermissions"] = json!([]);
    let web_in = g[WEB_SG]["IpPermissions"]
        .as_array_mut()
        .expect("web-sg ingress");
    web_in.retain(|p| p["FromPort"] != json!(443));
    docs
}

#[test]
fn hundred_reloads_during_steady_traffic() {
    let open = example();
    let closed = locked_down();
    let mut fw = Firewall::new(compile(&open), None);
    let mut now = Time(0);
    let mut tracked: Vec<u16> = Vec::new();
    let mut is_open = true;
    for (round, next_port) in (0..100).zip(20_000u16..) {
        // Steady traffic: every tracked flow sends both ways, nothing is lost.
        for &sport in &tracked {
            for p in [
                tcp(WEB, APP, sport, 8080, ACK),
                tcp(APP, WEB, 8080, sport, ACK),
            ] {
                let v = judge(&mut fw, now, &p);
                assert_eq!(
                    v.decision,
                    Decision::Accept,
                    "round {round}: tracked flow {sport} lost a packet: {v:?}"
                );
            }
        }
        // New flows follow the rules in force.
        let v = judge(&mut fw, now, &tcp(WEB, APP, next_port, 8080, SYN));
        if is_open {
            assert_eq!(v.decision, Decision::Accept, "round {round}: {v:?}");
            handshake(&mut fw, now, next_port);
            tracked.push(next_port);
        } else {
            assert_eq!(
                (v.decision, v.stage),
                (Decision::Reject, Some(Stage::SgIngress)),
                "round {round}: {v:?}"
            );
        }
        // An untracked flow (internet HTTPS to web: /0 rules both ways) follows the new rules
        // on its very next packet.
        let v = judge(&mut fw, now, &tcp("198.51.100.23", WEB, 50_000, 443, ACK));
        assert!(
            matches!(v.sg_ingress, Some(SgPass::Untracked(_))) || !is_open,
            "{v:?}"
        );
        let want = if is_open {
            Decision::Accept
        } else {
            Decision::Reject
        };
        assert_eq!(v.decision, want, "round {round}: untracked HTTPS: {v:?}");
        // Reload (loaded and compiled from JSON each time, as a reload would).
        is_open = !is_open;
        fw.reload(compile(if is_open { &open } else { &closed }));
        now = now.plus_secs(1);
    }
    assert_eq!(tracked.len(), 50);
    assert_eq!(fw.stats().conntrack_allowance_exceeded, 0);
}

/// Every kind of broken snapshot a reload could meet, with what its message must name.
/// (what, the documents or the text of a bad file, words its error must contain).
type Broken = (&'static str, Result<Vec<Value>, String>, Vec<&'static str>);

fn broken_snapshots() -> Vec<Broken> {
    let mut out = Vec::new();
    // Not JSON at all: the file and the line.
    out.push((
        "bad JSON",
        Err("{\"SecurityGroups\": [".to_string()),
        vec!["sgs:1:", "invalid JSON"],
    ));
    // A CIDR that is not one.
    let mut d = example();
    sgs(&mut d)[WEB_SG]["IpPermissions"][0]["IpRanges"][0]["CidrIp"] = json!("10.0.0.0/33");
    out.push(("bad CIDR", Ok(d), vec!["sgs", "IpPermissions[0]", "CidrIp"]));
    // A port out of range.
    let mut d = example();
    sgs(&mut d)[WEB_SG]["IpPermissions"][0]["ToPort"] = json!(70_000);
    out.push(("bad port", Ok(d), vec!["sgs", "ToPort"]));
    // A field of the wrong type.
    let mut d = example();
    d[0]["NetworkAcls"][1]["Entries"][0]["RuleNumber"] = json!("ninety");
    out.push(("bad rule number", Ok(d), vec!["acls", "RuleNumber"]));
    // Compile refused: thousands of ENIs with distinct group lists, each expanding a group that
    // references itself (checked in detail below).
    out.push((
        "group blow-up",
        Ok(many_enis(3_000, 600, true)),
        vec!["sg-shared", "limit", "eni-"],
    ));
    out
}

#[test]
fn a_broken_reload_is_reported_and_the_old_engine_keeps_judging() {
    let good = compile(&example());
    let mut fw = Firewall::new(good.clone(), Some(1000));
    let mut twin = Firewall::new(good, Some(1000));
    let mut now = Time(0);
    let traffic = |sport: u16| {
        [
            tcp(WEB, APP, sport, 8080, SYN),
            tcp(APP, WEB, 8080, sport, SYNACK),
            tcp(WEB, APP, sport, 8080, ACK),
            tcp(APP, DB, sport, 5432, SYN),
            tcp(DB, APP, 5432, sport, SYNACK),
            tcp("198.51.100.23", WEB, sport, 443, SYN),
            tcp("192.0.2.66", WEB, sport, 443, SYN),
            tcp(WEB, DB, sport, 5432, SYN),
            tcp(APP2, "203.0.113.99", sport, 443, SYN),
        ]
    };
    for (i, (what, docs, must_name)) in broken_snapshots().into_iter().enumerate() {
        for p in traffic(30_000 + i as u16) {
            assert_eq!(judge(&mut fw, now, &p), judge(&mut twin, now, &p));
        }
        let err = match docs {
            Err(text) => {
                let mut b = SnapshotBuilder::new();
                b.add_document("sgs", &text)
                    .expect_err("bad JSON is refused")
                    .to_string()
            }
            Ok(docs) => match try_compile(&docs) {
                Ok(p) => {
                    fw.reload(p);
                    panic!("{what}: a broken snapshot was accepted")
                }
                Err(e) => e,
            },
        };
        for word in must_name {
            assert!(err.contains(word), "{what}: {err:?} does not name {word:?}");
        }
        now = now.plus_secs(3);
        // The old engine keeps running: same answers as the twin that never saw the reload,
        // for the flows opened before and new ones.
        for k in 0..=i as u16 {
            for p in traffic(30_000 + k) {
                assert_eq!(judge(&mut fw, now, &p), judge(&mut twin, now, &p), "{what}");
            }
        }
    }
    assert_eq!(fw.stats(), twin.stats());
    let sorted = |fw: &Firewall| {
        let mut e: Vec<String> = fw.entries(now).iter().map(|f| format!("{f:?}")).collect();
        e.sort();
        e
    };
    assert_eq!(sorted(&fw), sorted(&twin));
}

// ---------------------------------------------------------------------------------------------
// Hostile configurations.

/// `n` ENIs in a new /16-sized subnet (10.0.128.0/17), all in `sg-shared` whose `rules` ingress
/// rules (ports 1000, 1001, …) each reference `sg-shared` itself. With `distinct`, every ENI
/// also carries a group of its own, so no two ENIs share a group list.
fn many_enis(n: usize, rules: usize, distinct: bool) -> Vec<Value> {
    let mut docs = example();
    let mut subnet = docs[4]["Subnets"][1].clone();
    subnet["SubnetId"] = json!("subnet-0e1f2a3b4c5d6a0ff");
    subnet["CidrBlock"] = json!("10.0.128.0/17");
    docs[4]["Subnets"]
        .as_array_mut()
        .expect("subnets")
        .push(subnet);
    let template = docs[1]["NetworkInterfaces"][1].clone();
    let vpc = template["VpcId"].clone();
    let perms: Vec<Value> = (0..rules)
        .map(|r| {
            json!({"IpProtocol": "tcp", "FromPort": 1000 + r, "ToPort": 1000 + r,
                   "IpRanges": [], "Ipv6Ranges": [], "PrefixListIds": [],
                   "UserIdGroupPairs": [{"GroupId": "sg-shared"}]})
        })
        .collect();
    let egress = json!([{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
        "Ipv6Ranges": [], "PrefixListIds": [], "UserIdGroupPairs": []}]);
    let mut groups = vec![
        json!({"GroupId": "sg-shared", "GroupName": "shared", "VpcId": vpc,
        "IpPermissions": perms, "IpPermissionsEgress": egress}),
    ];
    let enis = docs[1]["NetworkInterfaces"].as_array_mut().expect("enis");
    for i in 0..n {
        let mut e = template.clone();
        let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 128, 4)) + i as u32).to_string();
        e["NetworkInterfaceId"] = json!(format!("eni-h{i:07}"));
        e["SubnetId"] = json!("subnet-0e1f2a3b4c5d6a0ff");
        e["PrivateIpAddress"] = json!(addr);
        e["PrivateIpAddresses"] = json!([{"Primary": true, "PrivateIpAddress": addr}]);
        e["Attachment"]["InstanceId"] = json!(format!("i-h{i:07}"));
        let mut g = vec![json!({"GroupId": "sg-shared"})];
        if distinct {
            let own = format!("sg-own{i:07}");
            g.push(json!({"GroupId": own}));
            groups.push(json!({"GroupId": own, "GroupName": own, "VpcId": vpc,
                "IpPermissions": [], "IpPermissionsEgress": []}));
        }
        e["Groups"] = json!(g);
        enis.push(e);
    }
    sgs(&mut docs).extend(groups);
    docs
}

#[test]
fn thousands_of_enis_sharing_a_self_referencing_group_compile_once() {
    // 5,000 ENIs × 10 rules referencing the group of all 5,000: 50,000 rules per ENI, one
    // shared copy.
    let docs = many_enis(5_000, 10, false);
    let snap = load(&docs).expect("loads");
    let (compiled, bytes, took) = measured(|| CompiledPolicy::compile(snap.policy));
    let compiled = compiled.expect("compiles");
    eprintln!("5,000 ENIs x 10 self-referencing rules: {took:?}, peak {bytes} bytes");
    assert!(bytes < BIG_COMPILE_BYTES, "{bytes} bytes");
    assert!(took < Duration::from_secs(BIG_COMPILE_SECS), "{took:?}");
    // The expansion is exact: member to member on the rules' ports only.
    let mut fw = Firewall::new(compiled, None);
    let (a, b) = ("10.0.128.4", "10.0.147.139"); // ENIs 0 and 4,999
    let v = judge(&mut fw, Time(0), &tcp(a, b, 5555, 1009, SYN));
    assert!(matches!(v.sg_ingress, Some(SgPass::NewEntry(_))), "{v:?}");
    let v = judge(&mut fw, Time(0), &tcp(a, b, 5555, 1010, SYN));
    assert_eq!(v.stage, Some(Stage::SgIngress), "{v:?}");
    let v = judge(&mut fw, Time(0), &tcp(WEB, b, 5555, 1009, SYN));
    assert_eq!(v.decision, Decision::Reject, "{v:?}");
}

#[test]
fn group_reference_blow_up_is_refused_before_it_is_built() {
    // 5,000 ENIs with distinct group lists × 10 rules referencing a group of 5,000 members:
    // 250M rules. Refused by the total limit, before any matcher is built.
    let docs = many_enis(5_000, 10, true);
    let snap = load(&docs).expect("loads");
    let (r, bytes, took) = measured(|| CompiledPolicy::compile(snap.policy.clone()));
    let err = r.expect_err("refused").to_string();
    eprintln!("refused in {took:?}, peak {bytes} bytes: {err}");
    assert!(bytes < REFUSE_BYTES, "{bytes} bytes before refusing");
    assert!(took < Duration::from_secs(BIG_COMPILE_SECS), "{took:?}");
    for word in [
        "eni-h",
        "ingress",
        "sg-shared",
        "5000 member addresses",
        &DEFAULT_MAX_TOTAL_RULES.to_string(),
    ] {
        assert!(err.contains(word), "{err:?} does not name {word:?}");
    }
    // The per-ENI limit names the ENI and the group too.
    let tight = CompileLimits {
        max_rules_per_eni: 40_000,
        ..CompileLimits::default()
    };
    let err = CompiledPolicy::compile_with(snap.policy, &tight)
        .expect_err("refused")
        .to_string();
    assert!(
        err.starts_with("eni-h0000000: the ingress rules of security groups sg-shared, sg-own0000000 expand to 50000 matcher rules, over the limit of 40000"),
        "{err}"
    );
    assert!(
        err.contains("sg-shared ingress rule 0 references group sg-shared, 5000 member addresses"),
        "{err}"
    );
}

/// A small deterministic generator for probes.
fn lcg(s: &mut u64) -> u32 {
    *s = s
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (*s >> 33) as u32
}

fn masked(a: u32, len: u32) -> u32 {
    if len == 0 {
        0
    } else {
        a & (u32::MAX << (32 - len))
    }
}

#[test]
fn a_hundred_thousand_rules_compile_within_bounds() {
    // One group with 100,000 ingress CIDRs on app's ENIs: /16, /20, /24, /28 and /32 prefixes
    // marching through 100.0.0.0–101.134.159.0, nested and overlapping.
    let cidrs: Vec<(u32, u32)> = (0..100_000u32)
        .map(|i| {
            let len = [16, 20, 24, 28, 32][(i % 5) as usize];
            (masked(0x6400_0000 + (i << 8), len), len)
        })
        .collect();
    let mut docs = example();
    let ranges: Vec<Value> = cidrs
        .iter()
        .map(|&(a, len)| json!({"CidrIp": format!("{}/{len}", Ipv4Addr::from(a))}))
        .collect();
    sgs(&mut docs)[APP_SG]["IpPermissions"] = json!([{"IpProtocol": "tcp", "FromPort": 8080,
        "ToPort": 8080, "IpRanges": ranges, "Ipv6Ranges": [], "PrefixListIds": [],
        "UserIdGroupPairs": []}]);
    let snap = load(&docs).expect("loads");
    let (compiled, bytes, took) = measured(|| CompiledPolicy::compile(snap.policy));
    let compiled = compiled.expect("compiles");
    eprintln!("100,000 SG rules: {took:?}, peak {bytes} bytes");
    assert!(bytes < BIG_COMPILE_BYTES, "{bytes} bytes");
    assert!(took < Duration::from_secs(BIG_COMPILE_SECS), "{took:?}");
    // Internet → app:8080 passes app-nacl (rule 120: TCP 1024-65535 from anywhere) and reaches
    // the 100K-rule group; the verdict must be that of a brute-force scan of the CIDRs.
    let mut fw = Firewall::new(compiled, None);
    let mut seed = 7u64;
    for n in 0..2_000 {
        let src = 0x63f0_0000 + lcg(&mut seed) % 0x01a0_0000;
        let want = cidrs.iter().any(|&(a, len)| masked(src, len) == a);
        let v = judge(
            &mut fw,
            Time(0),
            &tcp(&Ipv4Addr::from(src).to_string(), APP, 5555, 8080, SYN),
        );
        if want {
            assert_eq!(v.decision, Decision::Accept, "probe {n} {src:#x}: {v:?}");
        } else {
            assert_eq!(v.stage, Some(Stage::SgIngress), "probe {n} {src:#x}: {v:?}");
        }
    }
}

#[test]
fn a_nacl_of_deeply_nested_entries_compiles_within_bounds() {
    // app-nacl inbound replaced by 32,766 entries (every user rule number): entry i covers
    // 198.51.100.23 masked to i % 25 bits and ports i..=65535-i, allowing when i is odd.
    let mut docs = example();
    let nacl = &mut docs[0]["NetworkAcls"][2];
    assert_eq!(nacl["NetworkAclId"], json!("acl-0e1f2a3b4c5d6b002"));
    let entries = nacl["Entries"].as_array_mut().expect("entries");
    entries.retain(|e| e["Egress"] == json!(true) || e["RuleNumber"].as_u64() > Some(32_766));
    let base = u32::from(Ipv4Addr::new(198, 51, 100, 23));
    let rules: Vec<(u32, u32, u16)> = (1..=32_766u32)
        .map(|i| (masked(base, i % 25), i % 25, i as u16))
        .collect();
    for &(a, len, i) in &rules {
        entries.push(json!({"RuleNumber": i, "Protocol": "6", "Egress": false,
            "RuleAction": if i % 2 == 1 { "allow" } else { "deny" },
            "CidrBlock": format!("{}/{len}", Ipv4Addr::from(a)),
            "PortRange": {"From": i, "To": 65535 - i}}));
    }
    let snap = load(&docs).expect("loads");
    let (compiled, bytes, took) = measured(|| CompiledPolicy::compile(snap.policy));
    let compiled = compiled.expect("compiles");
    eprintln!("32,766 nested NACL entries: {took:?}, peak {bytes} bytes");
    assert!(bytes < BIG_COMPILE_BYTES, "{bytes} bytes");
    assert!(took < Duration::from_secs(BIG_COMPILE_SECS), "{took:?}");
    let mut fw = Firewall::new(compiled, None);
    let mut seed = 11u64;
    for n in 0..2_000 {
        // Sources near 198.51.100.23 so that many prefixes nest around them.
        let src = base ^ (1 << (lcg(&mut seed) % 32)) ^ (lcg(&mut seed) & 0xff);
        let dport = (lcg(&mut seed) % 65_536) as u16;
        let first = rules
            .iter()
            .find(|&&(a, len, i)| masked(src, len) == a && i <= dport && dport <= 65535 - i);
        let v = judge(
            &mut fw,
            Time(0),
            &tcp(&Ipv4Addr::from(src).to_string(), APP, 5555, dport, SYN),
        );
        // An allow lets the packet reach app-sg (which admits only web-sg on 8080); a deny or
        // no entry stops it at the NACL.
        let want = match first {
            Some(&(_, _, i)) if i % 2 == 1 => Stage::SgIngress,
            _ => Stage::NaclIngress,
        };
        assert_eq!(
            v.stage,
            Some(want),
            "probe {n} {src:#x}:{dport} first {first:?}: {v:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed and overlapping fragments.

fn frame(ip: Ipv4Repr<'_>, l4: L4Repr<'_>, payload: &[u8]) -> Vec<u8> {
    let eth = EthernetRepr {
        src: MacAddr([2, 0, 0, 0, 0, 1]),
        dst: MacAddr([2, 0, 0, 0, 0, 2]),
        vlan_id: None,
    };
    PacketBuilder {
        ethernet: Some(eth),
        ip: IpRepr::V4(ip),
        l4,
        payload,
    }
    .to_vec()
    .expect("builds")
}

fn v4(a: &str) -> u32 {
    u32::from(a.parse::<Ipv4Addr>().expect("address"))
}

fn syn_frame(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    frame(
        Ipv4Repr::new(v4(src), v4(dst)),
        L4Repr::Tcp(TcpRepr::new(sport, dport, wire::TcpFlags::SYN)),
        &[0; 16],
    )
}

/// A fragment of datagram `ident` from `src` to `dst` (protocol TCP): `offset` in 8-byte units,
/// `payload` raw (it holds the TCP header when `offset` is 0).
fn fragment(src: &str, dst: &str, ident: u16, offset: u16, more: bool, payload: &[u8]) -> Vec<u8> {
    let mut ip = Ipv4Repr::new(v4(src), v4(dst));
    ip.ident = ident;
    ip.frag_offset = offset;
    ip.more_fragments = more;
    frame(ip, L4Repr::Raw { protocol: 6 }, payload)
}

/// The TCP header (20 bytes, no options) of a SYN, as raw fragment payload.
fn tcp_header(sport: u16, dport: u16) -> Vec<u8> {
    let f = syn_frame(WEB, APP, sport, dport);
    f[14 + 20..14 + 40].to_vec()
}

#[test]
fn malformed_frames_are_dropped_and_counted() {
    // The frame every bad one below is derived from is good.
    let good = syn_frame(WEB, APP, 40_000, 8080);
    let mut control = Firewall::new(compile(&example()), None);
    let (_, v) = control.process_frame(Time(0), &good).expect("judged");
    assert_eq!(v.decision, Decision::Accept);
    let mut fw = Firewall::new(compile(&example()), None);
    let mut malformed = 0u64;
    let mut judge_bad = |fw: &mut Firewall, f: &[u8], what: &str| match fw.process_frame(Time(1), f)
    {
        Ok((_, v)) => {
            assert_eq!(
                (v.decision, v.stage),
                (Decision::Reject, Some(Stage::Malformed)),
                "{what}: {v:?}"
            );
            assert!(matches!(v.reason, Reason::Malformed(_)), "{what}: {v:?}");
            malformed += 1;
        }
        Err(e) => panic!("{what}: {e}"),
    };
    // Every truncation of a good frame inside its headers (the Ethernet header included).
    for cut in 0..14 + 20 + 20 {
        judge_bad(&mut fw, &good[..cut], &format!("cut at {cut}"));
    }
    // Header fields that contradict each other.
    let edits: [(&str, usize, u8); 6] = [
        ("IHL 4", 14, 0x44),
        ("version 6 in an IPv4 EtherType", 14, 0x65),
        ("total length beyond the frame", 16, 0xff),
        ("total length below the header", 17, 10),
        ("TCP data offset 4", 14 + 20 + 12, 0x40),
        ("IHL 15 with no options", 14, 0x4f),
    ];
    for (what, at, byte) in edits {
        let mut f = good.clone();
        f[at] = byte;
        if what.starts_with("total length below") {
            f[16] = 0;
        }
        judge_bad(&mut fw, &f, what);
    }
    // RFC 1858: a TCP fragment at offset 8 bytes could rewrite the flags of the first one.
    judge_bad(
        &mut fw,
        &fragment(WEB, APP, 7, 1, false, &[0; 24]),
        "TCP fragment at offset 8",
    );
    // A first fragment too short to hold the TCP header (the tiny-fragment attack).
    judge_bad(
        &mut fw,
        &fragment(WEB, APP, 8, 0, true, &tcp_header(40_001, 8080)[..8]),
        "tiny first fragment",
    );
    let expected = 14 + 20 + 20 + 6 + 2;
    assert_eq!(malformed, expected, "every bad frame judged");
    let s = fw.stats();
    assert_eq!(s.rejected[Stage::Malformed.index()], malformed);
    assert_eq!(s.packets, malformed);
    assert_eq!(s.accepted, 0);
    assert!(
        fw.entries(Time(1)).is_empty(),
        "malformed frames create no state"
    );
}

#[test]
fn overlapping_and_orphan_fragments_fail_closed() {
    let mut fw = Firewall::new(compile(&example()), None);
    let malformed = |fw: &Firewall| fw.stats().rejected[Stage::Malformed.index()];
    let run = |fw: &mut Firewall, f: &[u8]| fw.process_frame(Time(2), f).expect("judged").1;

    // A non-first fragment whose first fragment never came.
    let v = run(&mut fw, &fragment(WEB, APP, 100, 3, false, &[0; 16]));
    assert_eq!(
        (v.stage, v.reason),
        (Some(Stage::Malformed), Reason::FragmentWithoutFirst)
    );
    assert_eq!(malformed(&fw), 1);

    // Positive control: web → app:8080 in two fragments; the second follows the first.
    let mut first = tcp_header(41_000, 8080);
    first.extend([0; 4]);
    assert_eq!(
        run(&mut fw, &fragment(WEB, APP, 200, 0, true, &first)).decision,
        Decision::Accept
    );
    assert_eq!(
        run(&mut fw, &fragment(WEB, APP, 200, 3, false, &[0; 16])).decision,
        Decision::Accept
    );

    // Overlap: an allowed first fragment, then a second "first fragment" of the same datagram
    // whose TCP header names a forbidden port (app-sg allows 8080 only). The rewrite is judged on
    // its own and rejected, and the fragments after it follow the rejection: fail closed.
    assert_eq!(
        run(&mut fw, &fragment(WEB, APP, 300, 0, true, &first)).decision,
        Decision::Accept
    );
    let mut evil = tcp_header(41_000, 22);
    evil.extend([0; 4]);
    let v = run(&mut fw, &fragment(WEB, APP, 300, 0, true, &evil));
    assert_eq!(v.decision, Decision::Reject, "{v:?}");
    let v = run(&mut fw, &fragment(WEB, APP, 300, 3, false, &[0; 16]));
    assert_eq!(
        v.decision,
        Decision::Reject,
        "a fragment after a rejected overlap: {v:?}"
    );
    // An overlapping tail at offset 8 (RFC 1858) is malformed whatever came before.
    let v = run(&mut fw, &fragment(WEB, APP, 200, 1, false, &[0; 24]));
    assert_eq!(v.stage, Some(Stage::Malformed), "{v:?}");
    assert_eq!(malformed(&fw), 2);
}
