//! The frame fast path (cached NACL and route outcomes, one-frame and burst forms) against the
//! reference path (`wire::parse` + `Packet::from_meta` + `Firewall::process`, every step by its
//! rules) on fresh engines: random packet sequences over the bundled three-tier VPC and its
//! flawed variant, with reloads between them, time jumps and allowance pressure. Also: the
//! fast path allocates nothing, and the statistics count what they say.

use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;
use std::path::Path;
use vpcfw::aws;
use vpcfw::compile::{CompiledPolicy, RuleRef};
use vpcfw::conntrack::{TcpFlags, Time};
use vpcfw::firewall::{Decision, Firewall, Fragment, FrameError, Packet, Reason, Stage, Verdict};
use vpcfw::replay::packet_frame;
use vpcfw::wire;

/// Counts the allocations of the threads that ask for it.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers every operation to the system allocator; the counters are thread-local
// `Cell`s with const initialisers (no allocation, no re-entry).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: forwarded with the caller's arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

fn load(flawed: bool) -> CompiledPolicy {
    static CACHE: std::sync::OnceLock<[CompiledPolicy; 2]> = std::sync::OnceLock::new();
    let compile = |name: &str| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        CompiledPolicy::compile(aws::load_dir(&dir).expect("example loads").policy)
            .expect("compiles")
    };
    CACHE.get_or_init(|| [compile("three-tier"), compile("three-tier-flawed")])[usize::from(flawed)]
        .clone()
}

const ADDRS: [&str; 12] = [
    "10.0.1.10",
    "10.0.2.10",
    "10.0.2.11",
    "10.0.3.20",
    "198.51.100.23",
    "192.0.2.66",
    "10.1.0.5",
    "169.254.169.254",
    "203.0.113.9",
    "2001:db8:3a1e:4b01::10",
    "2001:db8:ffff::23",
    "2001:db8:ffff::99",
];

#[derive(Clone, Debug)]
enum Ev {
    Packet {
        src: usize,
        dst: usize,
        kind: u8,
        /// Index into a few ports, so that flows repeat.
        sport: usize,
        dport: usize,
        flags: u8,
        icmp: u8,
        frag: u8,
        len: u16,
        /// Seconds before the packet (0: same burst).
        dt: u32,
    },
    Reload {
        flawed: bool,
    },
}

const PORTS: [u16; 6] = [443, 8080, 5432, 22, 40100, 51000];
const FLAGS: [u8; 8] = [0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14, 0x01];

fn event() -> impl Strategy<Value = Ev> {
    prop_oneof![
        12 => (
            0..ADDRS.len(),
            0..ADDRS.len(),
            0u8..6,
            0..PORTS.len(),
            0..PORTS.len(),
            0..FLAGS.len(),
            0u8..6,
            0u8..12,
            0u16..200,
            prop_oneof![4 => Just(0u32), 2 => 0u32..3, 1 => 0u32..700],
        )
            .prop_map(|(src, dst, kind, sport, dport, flags, icmp, frag, len, dt)| Ev::Packet {
                src,
                dst,
                kind,
                sport,
                dport,
                flags: FLAGS[flags],
                icmp,
                frag,
                len,
                dt,
            }),
        1 => any::<bool>().prop_map(|flawed| Ev::Reload { flawed }),
    ]
}

/// The packet an event describes (same family for both ends), or `None` if it makes no frame.
fn packet(e: &Ev) -> Option<(Packet, u32)> {
    let Ev::Packet {
        src,
        dst,
        kind,
        sport,
        dport,
        flags,
        icmp,
        frag,
        len,
        dt,
    } = *e
    else {
        return None;
    };
    let a: IpAddr = ADDRS[src].parse().unwrap();
    let mut b: IpAddr = ADDRS[dst].parse().unwrap();
    if a.is_ipv4() != b.is_ipv4() {
        b = if a.is_ipv4() { ADDRS[0] } else { ADDRS[10] }
            .parse()
            .unwrap();
    }
    let (sp, dp) = (PORTS[sport], PORTS[dport]);
    let mut p = match kind {
        0 | 1 => Packet::tcp(a, b, sp, dp, TcpFlags(flags)),
        2 => Packet::udp(a, b, sp, dp),
        3 | 4 => {
            let types: [u8; 6] = if a.is_ipv4() {
                [8, 0, 13, 14, 3, 11]
            } else {
                [128, 129, 128, 129, 1, 135]
            };
            Packet::icmp(a, b, types[usize::from(icmp)], icmp % 2, sp)
        }
        _ => Packet::other(a, b, [47, 50, 132][usize::from(icmp % 3)]),
    };
    p.len = u32::from(len);
    // A few fragments: first (more), and non-first with the same identification.
    p.fragment = match frag {
        10 => Some(Fragment {
            id: 7,
            offset: 0,
            more: true,
        }),
        11 => Some(Fragment {
            id: 7,
            offset: 64,
            more: false,
        }),
        _ => None,
    };
    Some((p, dt))
}

type Answer = Result<Verdict, FrameError>;

/// Runs the events through the reference path and the three fast forms; returns the answers
/// of each and the final entries and statistics.
fn run_all(events: &[Ev], allowance: Option<u32>) {
    let good = load(false);
    let mut reference = Firewall::new(good.clone(), allowance);
    let mut one = Firewall::new(good.clone(), allowance);
    let mut verdict_only = Firewall::new(good.clone(), allowance);
    let mut burst = Firewall::new(good, allowance);
    let mut now = Time(0);
    let mut pending: Vec<(Vec<u8>, Answer)> = Vec::new();

    fn flush(burst: &mut Firewall, now: Time, pending: &mut Vec<(Vec<u8>, Answer)>) {
        let frames: Vec<&[u8]> = pending.iter().map(|(f, _)| f.as_slice()).collect();
        let mut out: Vec<Answer> = vec![Err(FrameError::NotIp); frames.len()];
        assert_eq!(burst.process_burst(now, &frames, &mut out), frames.len());
        for (i, ((_, want), got)) in pending.iter().zip(&out).enumerate() {
            assert_eq!(got, want, "burst frame {i} of {}", frames.len());
        }
        pending.clear();
    }

    for e in events {
        match e {
            Ev::Reload { flawed } => {
                flush(&mut burst, now, &mut pending);
                for fw in [&mut reference, &mut one, &mut verdict_only, &mut burst] {
                    fw.reload(load(*flawed));
                }
            }
            Ev::Packet { .. } => {
                let Some((p, dt)) = packet(e) else { continue };
                let Ok(frame) = packet_frame(&p) else {
                    continue;
                };
                if dt > 0 {
                    flush(&mut burst, now, &mut pending);
                    now = now.plus_secs(dt);
                }
                let meta = wire::parse(&frame).expect("built frames parse");
                let pkt = Packet::from_meta(&meta);
                let want: Answer = reference.process(now, &pkt).map_err(FrameError::Input);
                let got = one.process_frame(now, &frame).map(|(q, v)| {
                    assert_eq!(
                        q, pkt,
                        "process_frame describes the frame as Packet::from_meta"
                    );
                    v
                });
                assert_eq!(got, want, "process_frame vs process: {pkt:?}");
                assert_eq!(
                    verdict_only.verdict_frame(now, &frame),
                    want,
                    "verdict_frame: {pkt:?}"
                );
                pending.push((frame, want));
                if pending.len() == 40 {
                    flush(&mut burst, now, &mut pending);
                }
            }
        }
    }
    flush(&mut burst, now, &mut pending);
    // `stored` counts expired entries not yet reclaimed, which depends on each table's layout
    // (random hash seeds); everything else must agree.
    let comparable = |fw: &Firewall| {
        let mut s = fw.stats();
        s.instances.iter_mut().for_each(|i| i.stored = 0);
        s
    };
    let entries = reference.entries(now);
    let stats = comparable(&reference);
    for fw in [&one, &verdict_only, &burst] {
        assert_eq!(fw.entries(now), entries);
        assert_eq!(comparable(fw), stats);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_answers_like_the_reference(
        events in prop::collection::vec(event(), 1..120),
        allowance in prop::option::of(1u32..6),
    ) {
        run_all(&events, allowance);
    }
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let p = Packet::tcp(
        src.parse().unwrap(),
        dst.parse().unwrap(),
        sport,
        dport,
        TcpFlags(flags),
    );
    packet_frame(&p).unwrap()
}

#[test]
fn established_traffic_allocates_nothing() {
    let mut fw = Firewall::new(load(false), None);
    // 64 web -> app flows and 64 internet -> web flows, established.
    let mut frames = Vec::new();
    for i in 0..64u16 {
        let sport = 41000 + i;
        for (f, t) in [(0x02, 0), (0x12, 1), (0x10, 2)] {
            let (a, b, sp, dp) = if f == 0x12 {
                ("10.0.2.10", "10.0.1.10", 8080, sport)
            } else {
                ("10.0.1.10", "10.0.2.10", sport, 8080)
            };
            fw.verdict_frame(Time(t), &tcp(a, b, sp, dp, f)).unwrap();
        }
        frames.push(tcp("10.0.1.10", "10.0.2.10", sport, 8080, 0x18));
        frames.push(tcp("10.0.2.10", "10.0.1.10", 8080, sport, 0x18));
        frames.push(tcp("198.51.100.23", "10.0.1.10", 50000 + i, 443, 0x18));
    }
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let mut out: Vec<Answer> = vec![Err(FrameError::NotIp); refs.len()];
    // Warm up (entries created, paths cached), then count.
    fw.process_burst(Time(3), &refs, &mut out);
    let n = allocations(|| {
        for round in 0..50u64 {
            fw.process_burst(Time::from_secs(4 + round), &refs, &mut out);
            for f in &refs {
                fw.verdict_frame(Time::from_secs(4 + round), f).unwrap();
                fw.process_frame(Time::from_secs(4 + round), f).unwrap();
            }
        }
    });
    assert_eq!(n, 0, "allocations on the fast path");
    assert!(
        out.iter()
            .all(|v| v.as_ref().unwrap().decision == Decision::Accept)
    );
    // And the counting works.
    let n = allocations(|| drop(std::hint::black_box(vec![1u8; 10])));
    assert_eq!(n, 1);
}

#[test]
fn statistics_count_rules_drops_and_occupancy() {
    let policy = load(false);
    let mut fw = Firewall::new(policy.clone(), Some(2));
    // Two flows from web to app fill web's allowance of 2 (each flow also holds an entry at app).
    for (i, sport) in [40100u16, 40101, 40102].into_iter().enumerate() {
        let v = fw
            .verdict_frame(
                Time(i as u64),
                &tcp("10.0.1.10", "10.0.2.10", sport, 8080, 0x02),
            )
            .unwrap();
        let want = if i < 2 {
            Decision::Accept
        } else {
            Decision::Reject
        };
        assert_eq!(v.decision, want, "flow {i}");
    }
    // A NACL deny: the flawed-free example blocks 192.0.2.66 at web's subnet (deny 90).
    let v = fw
        .verdict_frame(Time(5), &tcp("192.0.2.66", "10.0.1.10", 52000, 443, 0x02))
        .unwrap();
    assert_eq!(v.stage, Some(Stage::NaclIngress));
    let deny = v.rule.expect("a deny entry decided");
    // A malformed frame.
    let mut bad = tcp("10.0.1.10", "10.0.2.10", 1, 2, 0x02);
    bad.truncate(30);
    fw.verdict_frame(Time(6), &bad).unwrap();

    let s = fw.stats();
    assert_eq!(s.packets, 5);
    assert_eq!(s.accepted, 2);
    assert_eq!(s.rejected[Stage::ConntrackAllowance.index()], 1);
    assert_eq!(s.rejected[Stage::NaclIngress.index()], 1);
    assert_eq!(s.rejected[Stage::Malformed.index()], 1);
    assert_eq!(s.drops_for(Reason::Allowance), 1);
    assert_eq!(s.drops_for(Reason::NaclDeny), 1);
    assert_eq!(s.drops_for(Reason::Malformed(wire::Error::Truncated)), 1);
    assert_eq!(s.conntrack_allowance_exceeded, 1);
    assert_eq!(s.conntrack_allowance_available, Some(0));
    let web = s
        .instances
        .iter()
        .find(|i| i.name == "i-0e1f2a3b4c5d6e001")
        .expect("web instance");
    assert_eq!((web.live, web.available, web.exceeded), (2, Some(0), 1));
    assert_eq!(s.rule(deny).packets, 1);
    // Each accepted SYN hit one SG rule per side, one NACL entry per side, one route
    let kinds = |f: fn(&RuleRef) -> bool| -> u64 {
        s.rules
            .iter()
            .filter(|r| f(&r.rule))
            .map(|r| r.hits.packets)
            .sum()
    };
    // (the refused third SYN reached no rule beyond its allowed egress rule, which is not
    // counted: the step refused it).
    assert_eq!(kinds(|r| matches!(r, RuleRef::Route { .. })), 2);
    assert_eq!(kinds(|r| matches!(r, RuleRef::Sg { .. })), 2 * 2);
    assert!(!fw.rule_name(deny).is_empty());

    // A reload of the same policy keeps per-rule counters (same names) and the totals.
    fw.reload(policy);
    let t = fw.stats();
    assert_eq!(t.rules, s.rules);
    assert_eq!((t.packets, t.conntrack_allowance_exceeded), (5, 1));
    assert_eq!(t.generation, s.generation + 1);
}
