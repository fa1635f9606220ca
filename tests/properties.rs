//! Property tests of the engine over small random VPCs (built as AWS JSON, so the loader is
//! exercised too).

use proptest::prelude::*;
use serde_json::{Value, json};
use std::net::IpAddr;
use vpcfw::aws::SnapshotBuilder;
use vpcfw::compile::CompiledPolicy;
use vpcfw::conntrack::{TcpFlags, Time};
use vpcfw::firewall::{Decision, Firewall, Packet, SgPass, Stage, Verdict};

const ADDRS: [&str; 5] = [
    "10.0.1.10",
    "10.0.1.11",
    "10.0.2.10",
    "203.0.113.7",
    "198.51.100.1",
];
const CIDRS: [&str; 6] = [
    "0.0.0.0/0",
    "10.0.0.0/16",
    "10.0.1.0/24",
    "10.0.2.10/32",
    "203.0.113.0/24",
    "10.0.1.11/32",
];
const PORTS: [(u16, u16); 5] = [(22, 22), (80, 443), (0, 65535), (1024, 65535), (443, 443)];
const PROTOS: [&str; 4] = ["-1", "6", "17", "1"];

#[derive(Clone, Debug)]
struct NaclRule {
    number: u32,
    egress: bool,
    proto: usize,
    cidr: usize,
    ports: usize,
    allow: bool,
}

#[derive(Clone, Debug)]
struct SgRule {
    group: usize,
    egress: bool,
    proto: usize,
    /// 0..CIDRS.len() is a CIDR, then sg-1, sg-2.
    peer: usize,
    ports: usize,
}

fn nacl_rule() -> impl Strategy<Value = NaclRule> {
    (
        1u32..300,
        any::<bool>(),
        0..PROTOS.len(),
        0..CIDRS.len(),
        0..PORTS.len(),
        any::<bool>(),
    )
        .prop_map(|(number, egress, proto, cidr, ports, allow)| NaclRule {
            number,
            egress,
            proto,
            cidr,
            ports,
            allow,
        })
}

fn sg_rule() -> impl Strategy<Value = SgRule> {
    (
        0..2usize,
        any::<bool>(),
        0..PROTOS.len(),
        0..CIDRS.len() + 2,
        0..PORTS.len(),
    )
        .prop_map(|(group, egress, proto, peer, ports)| SgRule {
            group,
            egress,
            proto,
            peer,
            ports,
        })
}

fn nacl_entries(rules: &[NaclRule]) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    rules
        .iter()
        .filter(|r| seen.insert((r.egress, r.number)))
        .map(|r| {
            let mut e = json!({
                "RuleNumber": r.number, "Egress": r.egress, "Protocol": PROTOS[r.proto],
                "RuleAction": if r.allow { "allow" } else { "deny" }, "CidrBlock": CIDRS[r.cidr],
            });
            match PROTOS[r.proto] {
                "6" | "17" => {
                    e["PortRange"] = json!({"From": PORTS[r.ports].0, "To": PORTS[r.ports].1})
                }
                "1" => e["IcmpTypeCode"] = json!({"Type": -1, "Code": -1}),
                _ => {}
            }
            e
        })
        .collect()
}

fn snapshot(nacl: &[Value], sg: &[SgRule]) -> CompiledPolicy {
    let groups: Vec<Value> = (0..2)
        .map(|g| {
            let perms = |egress: bool| -> Vec<Value> {
                sg.iter()
                    .filter(|r| r.group == g && r.egress == egress)
                    .map(|r| {
                        let mut p = json!({"IpProtocol": PROTOS[r.proto]});
                        match PROTOS[r.proto] {
                            "6" | "17" => {
                                p["FromPort"] = json!(PORTS[r.ports].0);
                                p["ToPort"] = json!(PORTS[r.ports].1);
                            }
                            "1" => {
                                p["FromPort"] = json!(-1);
                                p["ToPort"] = json!(-1);
                            }
                            _ => {}
                        }
                        if r.peer < CIDRS.len() {
                            p["IpRanges"] = json!([{"CidrIp": CIDRS[r.peer]}]);
                        } else {
                            p["UserIdGroupPairs"] = json!([{"GroupId": format!("sg-{}", r.peer - CIDRS.len() + 1)}]);
                        }
                        p
                    })
                    .collect()
            };
            json!({"GroupId": format!("sg-{}", g + 1), "IpPermissions": perms(false), "IpPermissionsEgress": perms(true)})
        })
        .collect();
    let docs = [
        json!({"Vpcs": [{"VpcId": "vpc-1", "CidrBlock": "10.0.0.0/16"}]}),
        json!({"Subnets": [
            {"SubnetId": "subnet-a", "VpcId": "vpc-1", "CidrBlock": "10.0.1.0/24"},
            {"SubnetId": "subnet-b", "VpcId": "vpc-1", "CidrBlock": "10.0.2.0/24"}]}),
        json!({"RouteTables": [{"RouteTableId": "rtb-1", "VpcId": "vpc-1", "Associations": [{"Main": true}],
            "Routes": [{"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local", "State": "active"},
                       {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-1", "State": "active"}]}]}),
        json!({"NetworkAcls": [{"NetworkAclId": "acl-1", "VpcId": "vpc-1", "IsDefault": true, "Entries": nacl}]}),
        json!({"SecurityGroups": groups}),
        json!({"NetworkInterfaces": [
            {"NetworkInterfaceId": "eni-a1", "SubnetId": "subnet-a", "VpcId": "vpc-1", "PrivateIpAddress": "10.0.1.10", "Groups": [{"GroupId": "sg-1"}]},
            {"NetworkInterfaceId": "eni-a2", "SubnetId": "subnet-a", "VpcId": "vpc-1", "PrivateIpAddress": "10.0.1.11", "Groups": [{"GroupId": "sg-2"}]},
            {"NetworkInterfaceId": "eni-b1", "SubnetId": "subnet-b", "VpcId": "vpc-1", "PrivateIpAddress": "10.0.2.10", "Groups": [{"GroupId": "sg-1"}, {"GroupId": "sg-2"}]}]}),
    ];
    let mut b = SnapshotBuilder::new();
    for (i, d) in docs.iter().enumerate() {
        b.add_document(&format!("{i}.json"), &d.to_string())
            .expect("generated document loads");
    }
    CompiledPolicy::compile(b.finish().expect("generated snapshot loads").policy).expect("compiles")
}

#[derive(Clone, Debug)]
struct Ev {
    dt: u32,
    src: usize,
    dst: usize,
    proto: u8,
    sport: u16,
    dport: u16,
    flags: u8,
}

fn event() -> impl Strategy<Value = Ev> {
    (
        prop_oneof![Just(0u32), 1u32..40, 100u32..700],
        0..3usize,
        0..ADDRS.len(),
        prop_oneof![Just(6u8), Just(17u8), Just(1u8)],
        prop_oneof![Just(22u16), Just(443), Just(40000), Just(5000)],
        prop_oneof![Just(22u16), Just(443), Just(40000), Just(5000), Just(0)],
        prop_oneof![
            Just(0x02u8),
            Just(0x12),
            Just(0x10),
            Just(0x11),
            Just(0x04),
            Just(0x18)
        ],
    )
        .prop_map(|(dt, src, dst, proto, sport, dport, flags)| Ev {
            dt,
            src,
            dst,
            proto,
            sport,
            dport,
            flags,
        })
}

fn packet(e: &Ev) -> Packet {
    let (s, d): (IpAddr, IpAddr) = (ADDRS[e.src].parse().unwrap(), ADDRS[e.dst].parse().unwrap());
    match e.proto {
        6 => Packet::tcp(s, d, e.sport, e.dport, TcpFlags(e.flags)),
        17 => Packet::udp(s, d, e.sport, e.dport),
        _ => Packet::icmp(s, d, if e.flags & 1 == 0 { 8 } else { 0 }, 0, e.sport),
    }
}

fn run(fw: &mut Firewall, events: &[Ev], mut between: impl FnMut(&mut Firewall)) -> Vec<Verdict> {
    let mut t = Time(0);
    events
        .iter()
        .map(|e| {
            between(fw);
            t = t.plus_secs(e.dt);
            fw.process(t, &packet(e)).expect("src is always an ENI")
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Reloading the same snapshot, before every packet, never changes an answer.
    #[test]
    fn reload_of_the_same_snapshot_changes_nothing(
        nacl in prop::collection::vec(nacl_rule(), 0..12),
        sg in prop::collection::vec(sg_rule(), 0..12),
        events in prop::collection::vec(event(), 1..40),
        allowance in prop::option::of(1u32..4),
    ) {
        let policy = snapshot(&nacl_entries(&nacl), &sg);
        let plain = run(&mut Firewall::new(policy.clone(), allowance), &events, |_| {});
        let reloaded = run(&mut Firewall::new(policy.clone(), allowance), &events, |fw| fw.reload(policy.clone()));
        prop_assert_eq!(plain, reloaded);
    }

    /// NACL evaluation order comes from rule numbers, not from the order of the entries.
    #[test]
    fn nacl_order_is_by_rule_number(
        nacl in prop::collection::vec(nacl_rule(), 0..12),
        sg in prop::collection::vec(sg_rule(), 0..12),
        events in prop::collection::vec(event(), 1..30),
        seed in any::<u64>(),
    ) {
        let entries = nacl_entries(&nacl);
        let mut shuffled = entries.clone();
        // A deterministic shuffle from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let a = run(&mut Firewall::new(snapshot(&entries, &sg), None), &events, |_| {});
        let b = run(&mut Firewall::new(snapshot(&shuffled, &sg), None), &events, |_| {});
        prop_assert_eq!(a, b);
    }

    /// A packet that created a tracked entry has its reply admitted at both security-group
    /// steps while the entry lives (NACLs and routes may still drop it: they are stateless).
    #[test]
    fn replies_of_tracked_flows_pass_the_security_groups(
        nacl in prop::collection::vec(nacl_rule(), 0..12),
        sg in prop::collection::vec(sg_rule(), 4..16),
        mut e in event(),
        to_eni in 0..3usize,
        later in 0u32..30,
    ) {
        e.dst = to_eni;
        let mut fw = Firewall::new(snapshot(&nacl_entries(&nacl), &sg), None);
        let pkt = packet(&e);
        let v = fw.process(Time(0), &pkt).unwrap();
        let created = v.decision == Decision::Accept
            && v.sg_egress.is_some_and(|p| matches!(p, SgPass::NewEntry(_)))
            && v.sg_ingress.is_none_or(|p| matches!(p, SgPass::NewEntry(_)));
        if !created {
            return Ok(());
        }
        let reply = match pkt.l4 {
            vpcfw::firewall::L4::Ports { sport, dport, .. } if pkt.proto == 6 => Packet::tcp(pkt.dst, pkt.src, dport, sport, TcpFlags(TcpFlags::ACK)),
            vpcfw::firewall::L4::Ports { sport, dport, .. } => Packet::udp(pkt.dst, pkt.src, dport, sport),
            vpcfw::firewall::L4::Icmp { id, .. } => Packet::icmp(pkt.dst, pkt.src, 0, 0, id),
            vpcfw::firewall::L4::None => unreachable!(),
        };
        let r = fw.process(Time::from_secs(u64::from(later)), &reply).unwrap();
        prop_assert!(!matches!(r.stage, Some(Stage::SgEgress | Stage::SgIngress)), "reply {:?} after {:?}", r, v);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// `explain` annotates each step from the policy, independently of the compiled matchers:
    /// its first matching NACL entry is the engine's deciding entry, and it lists an allowing
    /// security-group rule exactly when the engine passed the step by a rule.
    #[test]
    fn explain_agrees_with_the_engine(
        nacl in prop::collection::vec(nacl_rule(), 0..12),
        sg in prop::collection::vec(sg_rule(), 0..12),
        e in event(),
    ) {
        let policy = snapshot(&nacl_entries(&nacl), &sg);
        let pkt = packet(&e);
        let x = vpcfw::explain::explain(&policy, &pkt).unwrap();
        let v = Firewall::new(policy.clone(), None).process(Time(0), &pkt).unwrap();
        let req = &x["request"];
        prop_assert_eq!(req["action"].as_str(), Some(v.decision.as_str()));
        for step in req["steps"].as_array().unwrap() {
            let stage = step["stage"].as_str().unwrap();
            let status = step["status"].as_str().unwrap();
            if let Some(entries) = step["entries"].as_array() {
                let decided = entries.iter().find(|e| e["matched"] == true).unwrap();
                let engine = match stage {
                    "nacl-egress" if status == "pass" => v.nacl_egress,
                    "nacl-ingress" if status == "pass" => v.nacl_ingress,
                    _ => v.rule,
                };
                let name = engine.map(|r| policy.rule_name(r));
                prop_assert_eq!(decided["rule"].as_str(), name.as_deref(), "{}", stage);
            }
            if let Some(allowed) = step["allowed_by"].as_array() {
                let via = step["via"].as_str();
                let by_rule = matches!(via, Some("new-entry" | "untracked" | "rule"));
                if by_rule {
                    prop_assert!(!allowed.is_empty(), "{} passed by a rule but explain lists none", stage);
                }
                if status == "reject" && v.stage != Some(Stage::ConntrackAllowance) {
                    prop_assert!(allowed.is_empty(), "{} rejected but explain lists {:?}", stage, allowed);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    /// `diff` is exact: a new connection's verdict (a fresh engine's answer) differs between the
    /// two snapshots exactly on the points some reported region contains, for every ENI pair and
    /// for traffic with the outside.
    #[test]
    fn diff_matches_the_engine_point_by_point(
        nacl_old in prop::collection::vec(nacl_rule(), 0..8),
        nacl_new in prop::collection::vec(nacl_rule(), 0..8),
        sg_old in prop::collection::vec(sg_rule(), 0..10),
        sg_new in prop::collection::vec(sg_rule(), 0..10),
    ) {
        let old = snapshot(&nacl_entries(&nacl_old), &sg_old);
        let new = snapshot(&nacl_entries(&nacl_new), &sg_new);
        let changes = vpcfw::analysis::diff::diff(old.policy(), new.policy());
        let eni_name = |p: &CompiledPolicy, a: &str| p.eni_of(a.parse().unwrap()).map(|i| p.policy().enis[i as usize].id.clone());
        // Every port boundary of the generator, and ICMP types.
        let ports = [0u16, 21, 22, 23, 79, 80, 443, 444, 1023, 1024, 40000, 65535];
        for s in ADDRS {
            for d in ADDRS {
                let (src_eni, dst_eni) = (eni_name(&old, s), eni_name(&old, d));
                if src_eni.is_none() && dst_eni.is_none() || s == d {
                    continue;
                }
                let (sa, da): (IpAddr, IpAddr) = (s.parse().unwrap(), d.parse().unwrap());
                let mut probes: Vec<(u8, u16, Packet)> = ports.iter().flat_map(|&p| [
                    (6u8, p, Packet::tcp(sa, da, 40000, p, TcpFlags(TcpFlags::SYN))),
                    (17u8, p, Packet::udp(sa, da, 40000, p)),
                ]).collect();
                probes.push((1, 8, Packet::icmp(sa, da, 8, 0, 1)));
                probes.push((47, 0, Packet::other(sa, da, 47)));
                for (proto, port, pkt) in probes {
                    let v_old = Firewall::new(old.clone(), None).process(Time(0), &pkt).unwrap().decision;
                    let v_new = Firewall::new(new.clone(), None).process(Time(0), &pkt).unwrap().decision;
                    let src = src_eni.clone().unwrap_or_else(|| "outside".into());
                    let dst = dst_eni.clone().unwrap_or_else(|| "outside".into());
                    let peer = if src_eni.is_none() { Some(sa) } else if dst_eni.is_none() { Some(da) } else { None };
                    let reported = changes.iter().any(|c| c.src == src && c.dst == dst
                        && !c.change.contains("replies")
                        && c.bounds.contains(proto, port, 0, peer));
                    prop_assert_eq!(reported, v_old != v_new, "{} -> {} proto {} port {}: {:?} -> {:?}; changes {:#?}", s, d, proto, port, v_old, v_new, changes);
                }
            }
        }
    }
}
