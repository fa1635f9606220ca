//! `vpcfw lint` against the bundled examples, and its analyses against brute force.
//!
//! The brute-force oracle evaluates every elementary point of the header space: for each
//! dimension, every rule boundary (and the value after it). Any two packets between the same
//! boundaries match exactly the same rules, so checking these points is exhaustive.

use ipnet::IpNet;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::path::Path;
use vpcfw::analysis::lint::{Finding, Severity, lint, nacl_allowed};
use vpcfw::aws;
use vpcfw::policy::{
    Action, Eni, NaclEntry, NetworkAcl, Peer, Policy, Ports, SecurityGroup, SgRule, Traffic,
};

fn example(name: &str) -> Vec<Finding> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    lint(&aws::load_dir(&dir).unwrap().policy)
}

#[test]
fn the_bundled_example_has_no_warnings() {
    let findings = example("three-tier");
    let serious: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.severity >= Severity::Warning)
        .collect();
    assert!(serious.is_empty(), "{serious:#?}");
}

#[test]
fn the_flawed_example_shows_each_planted_mistake() {
    let findings = example("three-tier-flawed");
    let has = |code: &str, resource: &str, severity: Severity| {
        findings.iter().any(|f| {
            f.code == code && f.severity == severity && f.resources.iter().any(|r| r == resource)
        })
    };
    assert!(
        has(
            "NACL-SHADOWED",
            "acl-0e1f2a3b4c5d6b001:ingress:115",
            Severity::Warning
        ),
        "{findings:#?}"
    );
    assert!(
        has(
            "NACL-NO-RETURN",
            "acl-0e1f2a3b4c5d6b003:ingress:100",
            Severity::Warning
        ),
        "{findings:#?}"
    );
    assert!(
        has(
            "SG-ADMIN-OPEN",
            "sg-0e1f2a3b4c5d6c001:ingress:5",
            Severity::Warning
        ),
        "{findings:#?}"
    );
    assert!(
        has(
            "SG-REDUNDANT",
            "sg-0e1f2a3b4c5d6c002:ingress:1",
            Severity::Info
        ),
        "{findings:#?}"
    );
    assert!(
        has(
            "STALE-REF",
            "sg-0e1f2a3b4c5d6c003:ingress:1",
            Severity::Warning
        ),
        "{findings:#?}"
    );
    assert_eq!(
        findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count(),
        4,
        "{findings:#?}"
    );
}

const CIDRS: [&str; 7] = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "192.168.0.0/16",
    "10.128.0.0/9",
];

fn traffic() -> impl Strategy<Value = Traffic> {
    prop_oneof![
        Just(Traffic::All),
        (prop_oneof![Just(6u8), Just(17u8)], 0u16..100, 0u16..100).prop_map(|(proto, a, b)| {
            Traffic::Ports {
                proto,
                ports: Ports {
                    from: a.min(b) * 10,
                    to: a.max(b) * 10,
                },
            }
        }),
        (prop::option::of(0u8..4), prop::option::of(0u8..3)).prop_map(|(t, c)| Traffic::Icmp {
            proto: 1,
            icmp_type: t,
            code: if t.is_some() { c } else { None }
        }),
        Just(Traffic::Proto(47)),
    ]
}

/// Elementary points of the space spanned by `rules` (IPv4 only).
fn points(rules: &[(Traffic, IpNet)]) -> Vec<(u8, u32, u16, u16)> {
    let mut protos: BTreeSet<u8> = [0, 1, 6, 17, 47, 99].into();
    let mut addrs: BTreeSet<u32> = [0, u32::MAX].into();
    let mut xs: BTreeSet<u16> = [0, u16::MAX].into();
    let mut ys: BTreeSet<u16> = [0, u16::MAX].into();
    for (t, n) in rules {
        let IpNet::V4(n) = n else { continue };
        addrs.insert(u32::from(n.network()));
        addrs.insert(u32::from(n.broadcast()));
        addrs.insert(u32::from(n.broadcast()).saturating_add(1));
        if let Some(p) = t.proto() {
            protos.insert(p);
        }
        match *t {
            Traffic::Ports { ports, .. } => {
                xs.extend([
                    ports.from,
                    ports.to,
                    ports.to.saturating_add(1),
                    ports.from.saturating_sub(1),
                ]);
            }
            Traffic::Icmp {
                icmp_type, code, ..
            } => {
                xs.extend(
                    icmp_type
                        .map(u16::from)
                        .into_iter()
                        .flat_map(|t| [t, t + 1]),
                );
                ys.extend(code.map(u16::from).into_iter().flat_map(|c| [c, c + 1]));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for &p in &protos {
        for &a in &addrs {
            for &x in &xs {
                for &y in &ys {
                    out.push((p, a, x, y));
                }
            }
        }
    }
    out
}

/// The SPEC §2 matching rule, written out plainly.
fn matches(t: &Traffic, n: &IpNet, (p, a, x, y): (u8, u32, u16, u16)) -> bool {
    let IpNet::V4(n) = n else { return false };
    if !n.contains(&std::net::Ipv4Addr::from(a)) {
        return false;
    }
    match *t {
        Traffic::All => true,
        Traffic::Ports { proto, ports } => p == proto && ports.from <= x && x <= ports.to,
        Traffic::Icmp {
            proto,
            icmp_type,
            code,
        } => {
            p == proto
                && icmp_type.is_none_or(|t| u16::from(t) == x)
                && code.is_none_or(|c| u16::from(c) == y)
        }
        Traffic::Proto(q) => p == q,
    }
}

fn nacl(entries: &[(Traffic, usize, bool)]) -> NetworkAcl {
    NetworkAcl {
        id: "acl-1".into(),
        vpc_id: "vpc-1".into(),
        is_default: true,
        subnet_ids: vec![],
        entries: entries
            .iter()
            .enumerate()
            .map(|(i, (t, c, allow))| NaclEntry {
                rule_number: (i as u32 + 1) * 10,
                egress: false,
                action: if *allow { Action::Allow } else { Action::Deny },
                cidr: CIDRS[*c].parse().unwrap(),
                traffic: *t,
            })
            .collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    /// An entry is reported shadowed exactly when no packet has it as its first match, and the
    /// allowed region is exactly the set of packets whose first match allows.
    #[test]
    fn nacl_shadowing_and_allowed_region_are_exact(entries in prop::collection::vec((traffic(), 0..CIDRS.len(), any::<bool>()), 1..8)) {
        let n = nacl(&entries);
        let policy = Policy { nacls: vec![n.clone()], ..Policy::default() };
        let findings = lint(&policy);
        let shadowed: BTreeSet<String> = findings.iter().filter(|f| f.code == "NACL-SHADOWED").map(|f| f.resources[0].clone()).collect();
        let rules: Vec<(Traffic, IpNet)> = n.entries.iter().map(|e| (e.traffic, e.cidr)).collect();
        let list: Vec<&NaclEntry> = n.entries.iter().collect();
        let allowed = nacl_allowed(&list);
        let mut first_hits = vec![false; n.entries.len()];
        for pt in points(&rules) {
            let first = n.entries.iter().position(|e| matches(&e.traffic, &e.cidr, pt));
            if let Some(i) = first {
                first_hits[i] = true;
            }
            let allows = first.is_some_and(|i| n.entries[i].action == Action::Allow);
            let point = [u128::from(pt.0), u128::from(pt.1), u128::from(pt.2), u128::from(pt.3)];
            prop_assert_eq!(allowed.contains(point), allows, "point {:?}", pt);
        }
        for (i, e) in n.entries.iter().enumerate() {
            let name = format!("acl-1:ingress:{}", e.rule_number);
            prop_assert_eq!(shadowed.contains(&name), !first_hits[i], "{}", name);
        }
    }

    /// Dropping the rules reported redundant leaves the union unchanged, and every rule kept
    /// allows some packet no other kept rule allows.
    #[test]
    fn sg_redundancy_is_exact(rules in prop::collection::vec((traffic(), 0..CIDRS.len()), 1..8)) {
        let group = SecurityGroup {
            id: "sg-1".into(),
            name: None,
            ingress: rules.iter().map(|(t, c)| SgRule { id: None, traffic: *t, peer: Peer::Cidr(CIDRS[*c].parse().unwrap()) }).collect(),
            egress: vec![],
        };
        let eni = Eni {
            id: "eni-1".into(),
            subnet_id: "subnet-1".into(),
            owner_id: None,
            private_ipv4: vec!["10.9.9.9".parse().unwrap()],
            ipv6: vec![],
            groups: vec!["sg-1".into()],
            instance_id: None,
            conntrack: Default::default(),
        };
        let policy = Policy { security_groups: vec![group], enis: vec![eni], ..Policy::default() };
        let redundant: BTreeSet<String> = lint(&policy).iter().filter(|f| f.code == "SG-REDUNDANT").map(|f| f.resources[0].clone()).collect();
        let all: Vec<(Traffic, IpNet)> = rules.iter().map(|(t, c)| (*t, CIDRS[*c].parse().unwrap())).collect();
        let kept: Vec<usize> = (0..all.len()).filter(|i| !redundant.contains(&format!("sg-1:ingress:{i}"))).collect();
        let pts = points(&all);
        for pt in &pts {
            let in_all = all.iter().any(|(t, n)| matches(t, n, *pt));
            let in_kept = kept.iter().any(|&i| matches(&all[i].0, &all[i].1, *pt));
            prop_assert_eq!(in_all, in_kept, "point {:?}", pt);
        }
        for &i in &kept {
            let unique = pts.iter().any(|pt| matches(&all[i].0, &all[i].1, *pt)
                && !kept.iter().any(|&j| j != i && matches(&all[j].0, &all[j].1, *pt)));
            prop_assert!(unique, "kept rule {} adds nothing", i);
        }
    }
}
