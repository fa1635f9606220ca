//! The inspection stage inside the engine (issue #8): patterns split across segments of a
//! tracked flow, the block that marks the flow both ways, `count`, scopes that keep other
//! flows untouched, UDP, traffic leaving the VPC, retransmissions and gaps, flow logs, frames
//! against described packets, and a property test against a naive search of the stream.

use proptest::prelude::*;
use std::net::IpAddr;
use std::sync::Arc;
use vpcfw::aws::SnapshotBuilder;
use vpcfw::compile::CompiledPolicy;
use vpcfw::conntrack::{TcpFlags, Time};
use vpcfw::firewall::{Decision, Firewall, FrameError, Packet, Reason, Stage, Verdict};
use vpcfw::flowlog::FlowLog;
use vpcfw::inspect::{Inspector, RuleAction, RuleSet};
use vpcfw::replay::packet_frame_with;

/// One subnet, two ENIs: `a` (10.9.1.10, sends: outbound to the VPC and TCP 443 anywhere)
/// and `b` (10.9.1.20, serves TCP 80 and UDP 53 to the VPC; no outbound rules, so replies leave
/// by connection tracking). Every flow here is tracked.
fn policy() -> CompiledPolicy {
    let doc = r#"{
        "Vpcs": [{"VpcId": "vpc-1", "CidrBlock": "10.9.0.0/16"}],
        "Subnets": [{"SubnetId": "subnet-1", "VpcId": "vpc-1", "CidrBlock": "10.9.1.0/24"}],
        "RouteTables": [{"RouteTableId": "rtb-1", "VpcId": "vpc-1", "Associations": [{"Main": true}], "Routes": [
            {"DestinationCidrBlock": "10.9.0.0/16", "GatewayId": "local", "State": "active"},
            {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-1", "State": "active"}]}],
        "NetworkAcls": [{"NetworkAclId": "acl-1", "VpcId": "vpc-1", "IsDefault": true, "Entries": [
            {"RuleNumber": 100, "Egress": false, "Protocol": "-1", "RuleAction": "allow", "CidrBlock": "0.0.0.0/0"},
            {"RuleNumber": 100, "Egress": true, "Protocol": "-1", "RuleAction": "allow", "CidrBlock": "0.0.0.0/0"}]}],
        "SecurityGroups": [
            {"GroupId": "sg-a", "IpPermissions": [], "IpPermissionsEgress": [
                {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.9.0.0/16"}]},
                {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]},
            {"GroupId": "sg-b", "IpPermissionsEgress": [], "IpPermissions": [
                {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "10.9.0.0/16"}]},
                {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "10.9.0.0/16"}]}]}],
        "NetworkInterfaces": [
            {"NetworkInterfaceId": "eni-a", "SubnetId": "subnet-1", "PrivateIpAddress": "10.9.1.10", "Groups": [{"GroupId": "sg-a"}]},
            {"NetworkInterfaceId": "eni-b", "SubnetId": "subnet-1", "PrivateIpAddress": "10.9.1.20", "Groups": [{"GroupId": "sg-b"}]}]
    }"#;
    let mut b = SnapshotBuilder::new();
    b.add_document("vpc.json", doc).unwrap();
    CompiledPolicy::compile(b.finish().unwrap().policy).unwrap()
}

const RULES: &str = r#"{"ByteMatchRules": [
    {"Name": "imds", "Action": "block", "SearchString": "169.254.169.254", "PositionalConstraint": "CONTAINS",
     "Scope": {"Protocol": "tcp", "DestinationPorts": [{"From": 80, "To": 80}], "Direction": "ingress"}},
    {"Name": "sqli", "Action": "count", "SearchString": "UNION SELECT", "PositionalConstraint": "CONTAINS",
     "TextTransformations": "LOWERCASE",
     "Scope": {"Protocol": "tcp", "DestinationPorts": [{"From": 80, "To": 80}], "Direction": "ingress"}},
    {"Name": "evil-dns", "Action": "block", "SearchString": "EVIL", "PositionalConstraint": "CONTAINS",
     "Scope": {"Protocol": "udp", "DestinationPorts": [{"From": 53, "To": 53}], "Direction": "ingress"}},
    {"Name": "exfil", "Action": "block", "SearchString": "secret", "PositionalConstraint": "CONTAINS",
     "Scope": {"Protocol": "tcp", "DestinationPorts": [{"From": 443, "To": 443}], "Direction": "egress",
               "NetworkInterfaceIds": ["eni-a"]}}
]}"#;

fn engine() -> Firewall {
    let p = policy();
    let rules = RuleSet::parse("inspection.json", RULES).unwrap();
    let (insp, warnings) = Inspector::compile(&rules, p.policy()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut fw = Firewall::new(p, None);
    fw.set_inspector(Some(Arc::new(insp)));
    fw
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const A: &str = "10.9.1.10";
const B: &str = "10.9.1.20";
const OUT: &str = "203.0.113.5";
const IMDS: &[u8] = b"169.254.169.254";

/// A TCP segment of the flow `src:sport -> dst:dport`.
#[derive(Clone, Debug)]
struct Seg {
    src: &'static str,
    dst: &'static str,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    payload: Vec<u8>,
}

fn seg(
    src: &'static str,
    dst: &'static str,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    payload: &[u8],
) -> Seg {
    Seg {
        src,
        dst,
        sport,
        dport,
        flags,
        seq,
        payload: payload.to_vec(),
    }
}

fn packet(s: &Seg) -> Packet {
    Packet::tcp(ip(s.src), ip(s.dst), s.sport, s.dport, TcpFlags(s.flags))
}

const S: u8 = TcpFlags::SYN;
const SA: u8 = TcpFlags::SYN | TcpFlags::ACK;
const AK: u8 = TcpFlags::ACK;
const PA: u8 = TcpFlags::PSH | TcpFlags::ACK;

/// The handshake of `A:40000 -> B:80` (client ISN 1000, server ISN 5000).
fn handshake() -> Vec<Seg> {
    vec![
        seg(A, B, 40000, 80, S, 1000, b""),
        seg(B, A, 80, 40000, SA, 5000, b""),
        seg(A, B, 40000, 80, AK, 1001, b""),
    ]
}

/// The client's data, cut at `cuts`, as segments from sequence number 1001.
fn data(stream: &[u8], cuts: &[usize]) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        out.push(seg(
            A,
            B,
            40000,
            80,
            PA,
            1001 + start as u32,
            &stream[start..end],
        ));
        start = end;
    }
    out
}

/// Verdicts of `segs` through described packets (`process_with_payload`).
fn run_described(fw: &mut Firewall, segs: &[Seg]) -> Vec<Verdict> {
    segs.iter()
        .enumerate()
        .map(|(i, s)| {
            fw.process_with_payload(Time(i as u64 * 1000), &packet(s), s.seq, &s.payload)
                .unwrap()
        })
        .collect()
}

fn frame(s: &Seg) -> Vec<u8> {
    packet_frame_with(&packet(s), Some(s.seq), &s.payload).unwrap()
}

/// Verdicts of `segs` as Ethernet frames, one by one.
fn run_frames(fw: &mut Firewall, segs: &[Seg]) -> Vec<Verdict> {
    segs.iter()
        .enumerate()
        .map(|(i, s)| fw.verdict_frame(Time(i as u64 * 1000), &frame(s)).unwrap())
        .collect()
}

fn blocked_by(v: &Verdict, rule: &str, fw: &Firewall) -> bool {
    v.decision == Decision::Reject
        && v.stage == Some(Stage::Inspection)
        && v.reason == Reason::ByteMatch
        && v.inspection.is_some_and(|m| {
            m.action == RuleAction::Block && fw.inspector().unwrap().rule_name(m.rule) == rule
        })
}

fn accepted(v: &Verdict) -> bool {
    v.decision == Decision::Accept
}

#[test]
fn a_pattern_split_at_every_boundary_across_two_segments_is_blocked() {
    let stream = [
        b"GET /fetch?url=http://".as_slice(),
        IMDS,
        b"/latest/ HTTP/1.1\r\n",
    ]
    .concat();
    let at = 22; // where the pattern starts
    for cut in at + 1..at + IMDS.len() {
        let mut segs = handshake();
        segs.extend(data(&stream, &[cut]));
        for frames in [false, true] {
            let mut fw = engine();
            let v = if frames {
                run_frames(&mut fw, &segs)
            } else {
                run_described(&mut fw, &segs)
            };
            assert!(v[..4].iter().all(accepted), "cut {cut}: {v:?}");
            assert!(blocked_by(&v[4], "imds", &fw), "cut {cut}: {:?}", v[4]);
            assert!(v[4].inspection.unwrap().at_destination);
        }
    }
}

#[test]
fn a_pattern_split_across_three_segments_is_blocked_at_the_last_one() {
    let stream = [b"xx".as_slice(), IMDS, b"yy"].concat();
    for i in 3..2 + IMDS.len() {
        for j in i + 1..2 + IMDS.len() {
            let mut segs = handshake();
            segs.extend(data(&stream, &[i, j]));
            let mut fw = engine();
            let v = run_described(&mut fw, &segs);
            assert!(v[..5].iter().all(accepted), "cuts {i},{j}: {v:?}");
            assert!(blocked_by(&v[5], "imds", &fw), "cuts {i},{j}: {:?}", v[5]);
        }
    }
}

#[test]
fn a_block_marks_the_flow_both_ways_and_is_counted() {
    let mut segs = handshake();
    segs.extend(data(&[b"GET /?u=".as_slice(), IMDS].concat(), &[]));
    segs.push(seg(B, A, 80, 40000, PA, 5001, b"HTTP/1.1 200 OK\r\n"));
    segs.push(seg(A, B, 40000, 80, AK, 1024, b""));
    segs.push(seg(A, B, 40000, 80, PA, 1024, b"GET / HTTP/1.1\r\n"));
    let mut fw = engine();
    let v = run_described(&mut fw, &segs);
    assert!(blocked_by(&v[3], "imds", &fw));
    // b's entry holds the mark: the server's reply is refused as it leaves b, the client's
    // next packets as they arrive at b.
    for later in &v[4..] {
        assert!(blocked_by(later, "imds", &fw), "{later:?}");
    }
    assert!(!v[4].inspection.unwrap().at_destination);
    assert!(v[5].inspection.unwrap().at_destination);
    let stats = fw.stats();
    assert_eq!(stats.rejected[Stage::Inspection.index()], 4);
    assert_eq!(stats.drops_for(Reason::ByteMatch), 4);
    let counters = stats.inspection.unwrap();
    assert_eq!(
        counters.rules[0],
        ("imds".to_string(), RuleAction::Block, 1)
    );
}

#[test]
fn count_rules_only_count_and_are_case_insensitive_when_asked() {
    let mut segs = handshake();
    segs.extend(data(b"GET /?q=1 union SeLeCt password HTTP/1.1\r\n", &[14]));
    let mut fw = engine();
    let v = run_described(&mut fw, &segs);
    assert!(v.iter().all(accepted), "{v:?}");
    assert_eq!(v[3].inspection, None);
    let m = v[4].inspection.expect("the count match");
    assert_eq!(m.action, RuleAction::Count);
    assert_eq!(fw.inspector().unwrap().rule_name(m.rule), "sqli");
    let counters = fw.stats().inspection.unwrap();
    assert_eq!(counters.rules[1].2, 1);
}

#[test]
fn flows_outside_every_scope_are_not_inspected() {
    let mut fw = engine();
    let mut segs = handshake();
    // The server's direction: its destination port (40000) is in no rule's scope.
    segs.push(seg(
        B,
        A,
        80,
        40000,
        PA,
        5001,
        &[b"a".as_slice(), IMDS, b"EVIL secret"].concat(),
    ));
    let v = run_described(&mut fw, &segs);
    assert!(v.iter().all(accepted), "{v:?}");
    assert!(v.iter().all(|v| v.inspection.is_none()));
    // UDP to port 53 is in scope of `evil-dns` only: the IMDS address passes.
    let q = Packet::udp(ip(A), ip(B), 5353, 53);
    let v = fw.process_with_payload(Time(9000), &q, 0, IMDS).unwrap();
    assert!(accepted(&v) && v.inspection.is_none());
    let c = fw.stats().inspection.unwrap();
    assert!(c.rules.iter().all(|r| r.2 == 0), "{c:?}");
    assert_eq!((c.gaps, c.retransmissions), (0, 0));
}

#[test]
fn udp_datagrams_are_matched_one_by_one_and_a_block_marks_the_flow() {
    let mut fw = engine();
    let q = Packet::udp(ip(A), ip(B), 5353, 53);
    let reply = Packet::udp(ip(B), ip(A), 53, 5353);
    let mut t = 0;
    let mut send = |fw: &mut Firewall, p: &Packet, payload: &[u8]| {
        t += 1000;
        fw.process_with_payload(Time(t), p, 0, payload).unwrap()
    };
    // Split across two datagrams: not a match (datagrams are not a stream).
    assert!(accepted(&send(&mut fw, &q, b"xxEV")));
    assert!(accepted(&send(&mut fw, &q, b"ILxx")));
    assert!(accepted(&send(&mut fw, &reply, b"answer")));
    let v = send(&mut fw, &q, b"xxEVILxx");
    assert!(blocked_by(&v, "evil-dns", &fw), "{v:?}");
    assert!(blocked_by(&send(&mut fw, &q, b"harmless"), "evil-dns", &fw));
    assert!(blocked_by(
        &send(&mut fw, &reply, b"answer"),
        "evil-dns",
        &fw
    ));
}

#[test]
fn traffic_leaving_the_vpc_is_inspected_at_its_source_and_logged_there() {
    let mut fw = engine();
    let segs = [
        seg(A, OUT, 41000, 443, S, 7, b""),
        seg(OUT, A, 443, 41000, SA, 900, b""),
        seg(A, OUT, 41000, 443, PA, 8, b"the sec"),
        seg(A, OUT, 41000, 443, PA, 15, b"ret plans"),
        seg(OUT, A, 443, 41000, PA, 901, b"ok"),
    ];
    let mut log = FlowLog::new(60);
    let mut out = Vec::new();
    let mut verdicts = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let t = Time(i as u64 * 1000);
        let p = packet(s);
        let v = fw.process_with_payload(t, &p, s.seq, &s.payload).unwrap();
        log.record(fw.policy(), t, &p, &v, &mut out).unwrap();
        verdicts.push(v);
    }
    log.flush(fw.policy(), &mut out).unwrap();
    assert!(verdicts[..3].iter().all(accepted), "{verdicts:?}");
    assert!(blocked_by(&verdicts[3], "exfil", &fw), "{:?}", verdicts[3]);
    assert!(!verdicts[3].inspection.unwrap().at_destination);
    // The reply from outside arrives at a, whose entry holds the mark.
    assert!(blocked_by(&verdicts[4], "exfil", &fw));
    let text = String::from_utf8(out).unwrap();
    let rejects: Vec<&str> = text.lines().filter(|l| l.ends_with("REJECT OK")).collect();
    assert_eq!(rejects.len(), 2, "{text}");
    assert!(rejects.iter().all(|l| l.contains(" eni-a ")), "{text}");
    assert!(
        rejects[0].contains(" 10.9.1.10 203.0.113.5 41000 443 6 1 "),
        "{text}"
    );
}

#[test]
fn blocked_packets_are_logged_as_reject_at_the_receiving_eni() {
    let mut fw = engine();
    let mut segs = handshake();
    segs.extend(data(IMDS, &[]));
    let mut log = FlowLog::new(60);
    let mut out = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let t = Time(i as u64 * 1000);
        let p = packet(s);
        let v = fw.process_with_payload(t, &p, s.seq, &s.payload).unwrap();
        log.record(fw.policy(), t, &p, &v, &mut out).unwrap();
    }
    log.flush(fw.policy(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.contains(&"2 unknown eni-a 10.9.1.10 10.9.1.20 40000 80 6 3 0 0 0 ACCEPT OK"),
        "{text}"
    );
    assert!(
        lines.contains(&"2 unknown eni-b 10.9.1.10 10.9.1.20 40000 80 6 2 0 0 0 ACCEPT OK"),
        "{text}"
    );
    assert!(
        lines.contains(&"2 unknown eni-b 10.9.1.10 10.9.1.20 40000 80 6 1 0 0 0 REJECT OK"),
        "{text}"
    );
}

#[test]
fn retransmissions_are_skipped_and_a_gap_restarts_the_match() {
    let stream = [b"ab".as_slice(), IMDS].concat();
    // A retransmission of the first part between the two halves: still found.
    let mut segs = handshake();
    segs.push(seg(A, B, 40000, 80, PA, 1001, &stream[..8]));
    segs.push(seg(A, B, 40000, 80, PA, 1001, &stream[..8]));
    segs.push(seg(A, B, 40000, 80, PA, 1009, &stream[8..]));
    let mut fw = engine();
    let v = run_described(&mut fw, &segs);
    assert!(v[..5].iter().all(accepted), "{v:?}");
    assert!(blocked_by(&v[5], "imds", &fw));
    assert_eq!(fw.stats().inspection.unwrap().retransmissions, 1);
    // The second half before the first (reordering): it opens a gap, the automaton restarts
    // there, and the first half then lies behind the stream: the split pattern is not found.
    let mut segs = handshake();
    segs.push(seg(A, B, 40000, 80, PA, 1009, &stream[8..]));
    segs.push(seg(A, B, 40000, 80, PA, 1001, &stream[..8]));
    let mut fw = engine();
    let v = run_described(&mut fw, &segs);
    assert!(v.iter().all(accepted), "{v:?}");
    let c = fw.stats().inspection.unwrap();
    assert_eq!(c.gaps, 1);
    // An overlapping retransmission that carries new bytes scans only those.
    let mut segs = handshake();
    segs.push(seg(A, B, 40000, 80, PA, 1001, &stream[..8]));
    segs.push(seg(A, B, 40000, 80, PA, 1005, &stream[4..]));
    let mut fw = engine();
    let v = run_described(&mut fw, &segs);
    assert!(blocked_by(&v[4], "imds", &fw), "{v:?}");
}

#[test]
fn streams_survive_a_policy_reload_and_restart_with_new_rules() {
    let stream = [b"ab".as_slice(), IMDS].concat();
    let mut fw = engine();
    let mut segs = handshake();
    segs.push(seg(A, B, 40000, 80, PA, 1001, &stream[..8]));
    let v = run_described(&mut fw, &segs);
    assert!(v.iter().all(accepted));
    // Same rules, new policy generation: the stream resumes.
    fw.reload(policy());
    let rest = seg(A, B, 40000, 80, PA, 1009, &stream[8..]);
    let v = fw
        .process_with_payload(Time(10_000), &packet(&rest), rest.seq, &rest.payload)
        .unwrap();
    assert!(blocked_by(&v, "imds", &fw), "{v:?}");

    // New rules: the stream restarts at its next segment (no state of other automata is
    // resumed), and a flow blocked before stays blocked.
    let mut fw = engine();
    let v = run_described(&mut fw, &segs);
    assert!(v.iter().all(accepted));
    let p = fw.policy().policy().clone();
    let rules = RuleSet::parse("inspection.json", RULES).unwrap();
    fw.set_inspector(Some(Arc::new(Inspector::compile(&rules, &p).unwrap().0)));
    let v = fw
        .process_with_payload(Time(10_000), &packet(&rest), rest.seq, &rest.payload)
        .unwrap();
    assert!(accepted(&v), "{v:?}");
    let whole = seg(A, B, 40000, 80, PA, 1009 + 9, IMDS);
    let v = fw
        .process_with_payload(Time(11_000), &packet(&whole), whole.seq, &whole.payload)
        .unwrap();
    assert!(blocked_by(&v, "imds", &fw));
    fw.set_inspector(None);
    let ack = seg(A, B, 40000, 80, AK, 1100, b"");
    let v = fw
        .process_with_payload(Time(12_000), &packet(&ack), ack.seq, b"")
        .unwrap();
    assert_eq!(v.stage, Some(Stage::Inspection), "{v:?}");
}

#[test]
fn bursts_of_frames_agree_with_one_by_one_judgement() {
    let stream = [b"GET /?a=".as_slice(), IMDS, b" union select 1"].concat();
    let mut segs = handshake();
    segs.extend(data(&stream, &[5, 12, 20, 27]));
    segs.push(seg(B, A, 80, 40000, AK, 5001, b""));
    let frames: Vec<Vec<u8>> = segs.iter().map(frame).collect();
    let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
    let mut fw = engine();
    let mut out = vec![Err(FrameError::NotIp); refs.len()];
    fw.process_burst(Time(0), &refs, &mut out);
    let burst: Vec<Verdict> = out.into_iter().map(|r| r.unwrap()).collect();
    let mut fw = engine();
    let one: Vec<Verdict> = refs
        .iter()
        .map(|f| fw.verdict_frame(Time(0), f).unwrap())
        .collect();
    assert_eq!(burst, one);
    // The pattern ends in the fourth data segment (bytes 20..27).
    assert!(one[..6].iter().all(accepted), "{one:?}");
    assert!(blocked_by(&one[6], "imds", &fw), "{one:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// In-order segments of a random stream: the engine blocks exactly at the first segment
    /// whose end brings the reassembled stream to contain the pattern (naive search), and
    /// every later segment stays blocked.
    #[test]
    fn the_engine_blocks_where_a_naive_search_of_the_stream_first_finds_the_pattern(
        parts in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(prop::sample::select(b"169.254x".to_vec()), 0..12),
                Just(IMDS.to_vec()),
            ],
            1..6,
        ),
        cuts in prop::collection::vec(1usize..40, 0..6),
    ) {
        let stream: Vec<u8> = parts.concat();
        let mut ends = Vec::new();
        let mut at = 0;
        for c in cuts {
            at += c;
            if at >= stream.len() {
                break;
            }
            ends.push(at);
        }
        let mut segs = handshake();
        segs.extend(data(&stream, &ends));
        let mut fw = engine();
        let v = run_described(&mut fw, &segs);
        let contains = |s: &[u8]| s.windows(IMDS.len()).any(|w| w == IMDS);
        let mut end = 0;
        let mut blocked = false;
        for (i, s) in segs.iter().enumerate().skip(3) {
            end += s.payload.len();
            let want_block = blocked || contains(&stream[..end]);
            prop_assert_eq!(blocked_by(&v[i], "imds", &fw), want_block, "segment {}: {:?}", i, v[i]);
            blocked = want_block;
        }
    }
}

/// The bundled example: `explain` shows the inspection step, and the payload path names the
/// deciding rule.
#[test]
fn explain_shows_the_inspection_step_and_the_blocking_rule() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/three-tier");
    let snap = vpcfw::aws::load_dir(&dir).unwrap();
    let policy = CompiledPolicy::compile(snap.policy).unwrap();
    let (insp, _) = vpcfw::inspect::load_for(&dir, None, policy.policy())
        .unwrap()
        .expect("the example has inspection.json");
    let insp = Arc::new(insp);
    let flow = vpcfw::explain::parse_flow("tcp 10.0.1.10:40000 -> 10.0.2.10:8080").unwrap();
    let x = vpcfw::explain::explain_with(
        &policy,
        Some(insp.clone()),
        &flow,
        b"GET /fetch?url=http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\n",
    )
    .unwrap();
    let last = |p: &serde_json::Value| p["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(x["request"]["action"], "ACCEPT");
    assert_eq!(last(&x["request"])["stage"], "inspection");
    assert_eq!(last(&x["reply"])["status"], "skipped");
    assert_eq!(x["payload"]["action"], "REJECT");
    assert_eq!(x["payload"]["stage"], "inspection");
    assert_eq!(x["payload"]["rule"], "imds-ssrf");
    assert_eq!(last(&x["payload"])["matched"]["action"], "block");
    let text = vpcfw::explain::render_text(&x);
    assert!(
        text.contains("=> REJECT at inspection (imds-ssrf)"),
        "{text}"
    );
    // A harmless payload passes.
    let x =
        vpcfw::explain::explain_with(&policy, Some(insp), &flow, b"GET / HTTP/1.1\r\n").unwrap();
    assert_eq!(x["payload"]["action"], "ACCEPT");
    assert_eq!(last(&x["payload"])["status"], "pass");
}
