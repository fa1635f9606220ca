//! The inspection stage inside the engine (issue #8): arbitrary TCP and UDP packets with
//! arbitrary payloads and sequence numbers, on a few flows of the bundled three-tier snapshot
//! (tracked web -> app on 8080, untracked internet -> web on 443, app -> db on 5432, UDP), with
//! byte-match rules whose patterns the input can easily hit, time jumps and rule reloads.
//! Checks:
//! - no panic;
//! - the reference path (`process_with_payload` on described packets) and the fast path
//!   (`verdict_frame` on the frames those packets make) give the same verdict for every packet;
//! - a packet rejected at the inspection stage names a `block` rule of the installed rules, and
//!   a `count` match is only reported on accepted packets.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "three_tier.rs"]
mod three_tier;
use std::net::IpAddr;
use std::sync::Arc;
use vpcfw::compile::CompiledPolicy;
use vpcfw::conntrack::{TcpFlags, Time};
use vpcfw::firewall::{Decision, Firewall, Packet, Stage};
use vpcfw::inspect::{Inspector, RuleAction, RuleSet};
use vpcfw::replay::packet_frame_with;


/// Two rule sets over a small alphabet, so that inputs hit patterns, overlaps and splits.
const RULES: [&str; 2] = [
    r#"{"ByteMatchRules": [
        {"Name": "bad", "Action": "block", "SearchString": "bad", "PositionalConstraint": "CONTAINS",
         "Scope": {"Protocol": "tcp", "DestinationPorts": [{"From": 443, "To": 443}, {"From": 8080, "To": 8080}], "Direction": "ingress"}},
        {"Name": "ab", "Action": "count", "SearchString": "AB", "PositionalConstraint": "CONTAINS", "TextTransformations": "LOWERCASE",
         "Scope": {"Protocol": "tcp", "Direction": "both"}},
        {"Name": "dab", "Action": "block", "SearchString": "dab", "PositionalConstraint": "CONTAINS",
         "Scope": {"Protocol": "udp", "Direction": "both"}},
        {"Name": "abd", "Action": "block", "SearchString": "abd", "PositionalConstraint": "CONTAINS",
         "Scope": {"Protocol": "tcp", "DestinationPorts": [{"From": 5432, "To": 5432}], "Direction": "egress"}}
    ]}"#,
    r#"{"ByteMatchRules": [
        {"Name": "aa", "Action": "block", "SearchString": "aa", "PositionalConstraint": "CONTAINS", "TextTransformations": "LOWERCASE",
         "Scope": {"Protocol": "tcp", "Direction": "both"}},
        {"Name": "b", "Action": "count", "SearchString": "b", "PositionalConstraint": "CONTAINS",
         "Scope": {"Protocol": "tcp", "Direction": "ingress"}}
    ]}"#,
];

fn setup() -> &'static (CompiledPolicy, [Arc<Inspector>; 2]) {
    static CACHE: std::sync::OnceLock<(CompiledPolicy, [Arc<Inspector>; 2])> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| {
        let p = three_tier::compile(&[]);
        let insp = |i: usize| {
            let rules = RuleSet::parse("inspection.json", RULES[i]).expect("rules parse");
            Arc::new(Inspector::compile(&rules, p.policy()).expect("rules compile").0)
        };
        let both = [insp(0), insp(1)];
        (p, both)
    })
}

/// (client, server, client port, server port, protocol).
const FLOWS: [(&str, &str, u16, u16, u8); 5] = [
    ("10.0.1.10", "10.0.2.10", 40000, 8080, 6),
    ("198.51.100.23", "10.0.1.10", 51000, 443, 6),
    ("10.0.2.10", "10.0.3.20", 40200, 5432, 6),
    ("10.0.1.10", "203.0.113.9", 41000, 443, 6),
    ("10.0.2.10", "10.0.3.20", 5353, 53, 17),
];

#[derive(Arbitrary, Debug)]
enum Event {
    Packet { flow: u8, reply: bool, flags: u8, seq: u16, payload: Vec<u8>, dt: u8 },
    Rules { set: u8 },
}

fuzz_target!(|events: Vec<Event>| {
    let (policy, inspectors) = setup();
    let mut described = Firewall::new(policy.clone(), Some(64));
    let mut frames = Firewall::new(policy.clone(), Some(64));
    let mut installed: Option<Arc<Inspector>> = Some(inspectors[0].clone());
    described.set_inspector(installed.clone());
    frames.set_inspector(installed.clone());
    let mut now = Time(0);
    for ev in events.iter().take(96) {
        match ev {
            Event::Rules { set } => {
                installed = match set % 3 {
                    2 => None,
                    i => Some(inspectors[usize::from(i)].clone()),
                };
                described.set_inspector(installed.clone());
                frames.set_inspector(installed.clone());
            }
            Event::Packet { flow, reply, flags, seq, payload, dt } => {
                now = Time(now.0 + u64::from(*dt) * 50_000_000);
                let (c, s, cp, sp, proto) = FLOWS[usize::from(*flow) % FLOWS.len()];
                let (src, dst, sport, dport) = if *reply { (s, c, sp, cp) } else { (c, s, cp, sp) };
                let (src, dst): (IpAddr, IpAddr) = (src.parse().expect("address"), dst.parse().expect("address"));
                let p = if proto == 6 {
                    Packet::tcp(src, dst, sport, dport, TcpFlags(*flags))
                } else {
                    Packet::udp(src, dst, sport, dport)
                };
                // Sequence numbers near each other (and near the wrap) so that streams line up.
                let seq = u32::from(*seq).wrapping_sub(1 << 15);
                let payload = &payload[..payload.len().min(200)];
                let v = described.process_with_payload(now, &p, seq, payload).expect("judged");
                let frame = packet_frame_with(&p, Some(seq), payload).expect("frame");
                let w = frames.verdict_frame(now, &frame).expect("judged");
                assert_eq!(v, w, "described and frame paths disagree on {p:?} seq {seq} payload {payload:?}");
                if let Some(m) = v.inspection {
                    match v.stage {
                        Some(Stage::Inspection) => {
                            assert_eq!(v.decision, Decision::Reject);
                            assert_eq!(m.action, RuleAction::Block);
                        }
                        _ => {
                            assert_eq!(v.decision, Decision::Accept);
                            assert_eq!(m.action, RuleAction::Count);
                            assert!(installed.is_some(), "a count match without rules");
                        }
                    }
                }
            }
        }
    }
});
