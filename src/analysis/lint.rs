//! `vpcfw lint`: what is wrong or risky in a snapshot, exactly (no sampling).
//!
//! | code | severity | finding |
//! |---|---|---|
//! | `NACL-SHADOWED` | warning (info when every blocking entry has the same action) | an entry that can never match: earlier entries cover all of its traffic |
//! | `NACL-NO-RETURN` | warning | an allowed request whose replies the opposite list does not allow on the client's ephemeral ports |
//! | `SG-REDUNDANT` | info | a security-group rule that allows nothing the other rules of an ENI's union do not |
//! | `SG-ADMIN-OPEN` | warning | an inbound rule exposing an administrative or database port to `0.0.0.0/0` or `::/0` |
//! | `SG-UNTRACKED` | info | flows that are untracked at an ENI, so a rule change cuts them at once |
//! | `STALE-REF` | warning | a rule referencing a group or prefix list that is not in the snapshot |
//! | `NACL-QUOTA` | warning / error | more than 20 (default quota) / 40 (maximum) entries in one direction |
//! | `SG-QUOTA` | warning | more than 1000 rules in one direction of an ENI's union (prefix lists weigh their entries) |

use super::space::{ADDR, PROTO, Region, X, rule_box, traffic_box};
use crate::policy::{Action, NaclEntry, NetworkAcl, Peer, Policy, SecurityGroup, SgRule, Traffic};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Probably a mistake or a risk.
    Warning,
    /// Breaks an AWS limit.
    Error,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable code (see the module docs).
    pub code: &'static str,
    /// Severity.
    pub severity: Severity,
    /// The resources involved (rule names, ENI ids, NACL ids).
    pub resources: Vec<String>,
    /// What was found.
    pub message: String,
    /// A one-line fix.
    pub hint: String,
}

/// Administrative and database ports that should not be open to the world.
pub const ADMIN_PORTS: &[(u16, &str)] = &[
    (22, "SSH"),
    (23, "Telnet"),
    (445, "SMB"),
    (1433, "SQL Server"),
    (1521, "Oracle"),
    (2375, "Docker API"),
    (3306, "MySQL"),
    (3389, "RDP"),
    (5432, "PostgreSQL"),
    (5984, "CouchDB"),
    (6379, "Redis"),
    (9200, "Elasticsearch"),
    (11211, "Memcached"),
    (27017, "MongoDB"),
];

/// Client ephemeral port ranges AWS documents (VPC User Guide, "Ephemeral ports").
pub const EPHEMERAL: &[(u16, u16, &str)] = &[
    (32768, 61000, "Linux"),
    (49152, 65535, "Windows Server 2008+"),
    (1024, 65535, "ELB, NAT gateway, Lambda"),
];

/// Runs every analysis.
pub fn lint(policy: &Policy) -> Vec<Finding> {
    let mut out = Vec::new();
    for n in &policy.nacls {
        nacl_findings(n, &mut out);
    }
    sg_findings(policy, &mut out);
    stale_refs(policy, &mut out);
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.code.cmp(b.code))
            .then(a.resources.cmp(&b.resources))
    });
    out
}

fn dir_name(egress: bool) -> &'static str {
    if egress { "egress" } else { "ingress" }
}

fn entry_name(n: &NetworkAcl, e: &NaclEntry) -> String {
    format!("{}:{}:{}", n.id, dir_name(e.egress), e.rule_number)
}

/// The entries of one direction and family, in evaluation order.
fn nacl_list(n: &NetworkAcl, egress: bool, v6: bool) -> Vec<&NaclEntry> {
    let mut l: Vec<&NaclEntry> = n
        .entries
        .iter()
        .filter(|e| e.egress == egress && e.cidr.addr().is_ipv6() == v6)
        .collect();
    l.sort_by_key(|e| e.rule_number);
    l
}

/// The exact set of packets a NACL list allows (first match; no match denies).
pub fn nacl_allowed(entries: &[&NaclEntry]) -> Region {
    let mut allowed = Region::empty();
    let mut seen = Region::empty();
    for e in entries {
        let b = rule_box(&e.traffic, &e.cidr);
        if e.action == Action::Allow {
            let mut new = Region::of(b);
            new.subtract(&seen);
            allowed.add(&new);
        }
        seen.add_box(b);
    }
    allowed
}

fn nacl_findings(n: &NetworkAcl, out: &mut Vec<Finding>) {
    for egress in [false, true] {
        let user = n
            .entries
            .iter()
            .filter(|e| e.egress == egress && e.rule_number <= 32766)
            .count();
        if user > 20 {
            out.push(Finding {
                code: "NACL-QUOTA",
                severity: if user > 40 { Severity::Error } else { Severity::Warning },
                resources: vec![n.id.clone()],
                message: format!("{user} {} entries (AWS default quota 20 per direction, maximum 40)", dir_name(egress)),
                hint: "merge adjacent CIDRs or port ranges, or move coarse filtering to security groups".into(),
            });
        }
        for v6 in [false, true] {
            let list = nacl_list(n, egress, v6);
            let mut seen = Region::empty();
            for (i, e) in list.iter().enumerate() {
                let b = rule_box(&e.traffic, &e.cidr);
                // The `*` entries (32767/32768) behind an allow-all are AWS's default NACL shape.
                if e.rule_number <= 32766 && seen.covers(&b) {
                    let blocking: Vec<&&NaclEntry> = list[..i]
                        .iter()
                        .filter(|x| rule_box(&x.traffic, &x.cidr).intersect(&b).is_some())
                        .collect();
                    let differs = blocking.iter().any(|x| x.action != e.action);
                    let mut resources = vec![entry_name(n, e)];
                    resources.extend(blocking.iter().map(|x| entry_name(n, x)));
                    out.push(Finding {
                        code: "NACL-SHADOWED",
                        severity: if differs { Severity::Warning } else { Severity::Info },
                        message: format!(
                            "entry {} can never match: earlier entries {} cover all of its traffic{}",
                            e.rule_number,
                            blocking.iter().map(|x| x.rule_number.to_string()).collect::<Vec<_>>().join(", "),
                            if differs { " and some of them take the opposite action" } else { " with the same action" }
                        ),
                        resources,
                        hint: if differs {
                            format!("renumber entry {} below the entries that shadow it, or delete it", e.rule_number)
                        } else {
                            format!("entry {} is redundant: delete it", e.rule_number)
                        },
                    });
                }
                seen.add_box(b);
            }
            return_paths(n, egress, v6, out);
        }
    }
}

/// For each allowed service request in one list, are its replies allowed back through the
/// opposite list on the client's ephemeral ports?
fn return_paths(n: &NetworkAcl, egress: bool, v6: bool, out: &mut Vec<Finding>) {
    let requests = nacl_list(n, egress, v6);
    let replies_list = nacl_list(n, !egress, v6);
    let allowed_replies = nacl_allowed(&replies_list);
    let allowed_requests = nacl_allowed(&requests);
    for e in &requests {
        let Traffic::Ports { proto, ports } = e.traffic else {
            continue;
        };
        if e.action != Action::Allow || u32::from(ports.to) - u32::from(ports.from) >= 1024 {
            continue;
        }
        // Only what this entry really allows (not shadowed parts).
        let b = rule_box(&e.traffic, &e.cidr);
        if allowed_requests.intersect(&Region::of(b)).is_empty() {
            continue;
        }
        let range_box = |lo: u16, hi: u16| {
            let mut r = traffic_box(
                &Traffic::Ports {
                    proto,
                    ports: crate::policy::Ports { from: lo, to: hi },
                },
                v6,
            );
            r.lo[ADDR] = b.lo[ADDR];
            r.hi[ADDR] = b.hi[ADDR];
            r
        };
        if EPHEMERAL
            .iter()
            .any(|(lo, hi, _)| allowed_replies.covers(&range_box(*lo, *hi)))
        {
            continue;
        }
        // Judge by the narrowest common range (Linux): wholly or partly without a return path?
        let (lo, hi, _) = EPHEMERAL[0];
        let linux = range_box(lo, hi);
        let mut missing = Region::of(linux);
        missing.subtract(&allowed_replies);
        let whole = missing.covers(&linux);
        let proto_name = if proto == 6 { "tcp" } else { "udp" };
        let who = if egress { "servers" } else { "clients" };
        let ports_text = if ports.from == ports.to {
            ports.from.to_string()
        } else {
            format!("{}-{}", ports.from, ports.to)
        };
        let example = missing.boxes().first().map(|m| {
            let addr = if v6 {
                std::net::IpAddr::from(std::net::Ipv6Addr::from(m.lo[ADDR]))
            } else {
                std::net::IpAddr::from(std::net::Ipv4Addr::from(m.lo[ADDR] as u32))
            };
            format!("{addr} port {}", m.lo[X])
        });
        let peer_word = if egress { "from" } else { "to" };
        out.push(Finding {
            code: "NACL-NO-RETURN",
            severity: if whole { Severity::Warning } else { Severity::Info },
            resources: vec![entry_name(n, e)],
            message: if whole {
                format!(
                    "{} allows {proto_name} {ports_text} {} {}, but the {} list allows no replies back {peer_word} {who} in {} on any standard ephemeral range (Linux 32768-61000, Windows 49152-65535, ELB/NAT 1024-65535)",
                    e.rule_number,
                    if egress { "to" } else { "from" },
                    e.cidr,
                    dir_name(!egress),
                    e.cidr
                )
            } else {
                format!(
                    "{} allows {proto_name} {ports_text} {} {}, but the {} list denies some replies on the Linux ephemeral range 32768-61000 (e.g. {peer_word} {})",
                    e.rule_number,
                    if egress { "to" } else { "from" },
                    e.cidr,
                    dir_name(!egress),
                    example.unwrap_or_default()
                )
            },
            hint: if whole {
                format!("add an {} allow entry for {proto_name} 1024-65535 {peer_word} {}", dir_name(!egress), e.cidr)
            } else {
                "intended if those peers are blocked on purpose; otherwise widen the return entries".into()
            },
        });
    }
}

/// Every rule of one direction of an ENI's union, expanded to boxes, with its name.
struct ExpandedRule<'a> {
    name: String,
    rule: &'a SgRule,
    region: [Region; 2],
}

fn expand<'a>(
    policy: &'a Policy,
    groups: &[&'a SecurityGroup],
    egress: bool,
) -> Vec<ExpandedRule<'a>> {
    let mut out = Vec::new();
    for g in groups {
        let list = if egress { &g.egress } else { &g.ingress };
        for (i, r) in list.iter().enumerate() {
            let name = match &r.id {
                Some(id) => format!("{}:{}:{id}", g.id, dir_name(egress)),
                None => format!("{}:{}:{i}", g.id, dir_name(egress)),
            };
            let mut region = [Region::empty(), Region::empty()];
            for net in peer_nets(policy, &r.peer) {
                let v6 = matches!(net, IpNet::V6(_));
                region[usize::from(v6)].add_box(rule_box(&r.traffic, &net));
            }
            out.push(ExpandedRule {
                name,
                rule: r,
                region,
            });
        }
    }
    out
}

/// The CIDRs a peer stands for (group references: every member address as a host prefix).
pub(crate) fn peer_nets(policy: &Policy, peer: &Peer) -> Vec<IpNet> {
    match peer {
        Peer::Cidr(n) => vec![*n],
        Peer::PrefixList(l) => policy
            .prefix_lists
            .iter()
            .filter(|x| x.id == *l)
            .filter_map(|x| x.cidrs.clone())
            .flatten()
            .collect(),
        Peer::Group(g) => policy
            .enis
            .iter()
            .filter(|e| e.groups.contains(g))
            .flat_map(|e| e.addresses().map(IpNet::from).collect::<Vec<_>>())
            .collect(),
    }
}

/// Whether box `outer` contains box `inner`.
fn contains(outer: &super::space::HBox, inner: &super::space::HBox) -> bool {
    (0..4).all(|d| outer.lo[d] <= inner.lo[d] && inner.hi[d] <= outer.hi[d])
}

fn is_zero(r: &SgRule, v6: bool) -> bool {
    matches!(&r.peer, Peer::Cidr(n) if n.prefix_len() == 0 && n.addr().is_ipv6() == v6)
}

fn sg_findings(policy: &Policy, out: &mut Vec<Finding>) {
    // ENIs with the same groups share every per-union result.
    let mut unions: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    for e in &policy.enis {
        unions
            .entry(e.groups.clone())
            .or_default()
            .push(e.id.clone());
    }
    let mut redundant: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (group_ids, enis) in &unions {
        let groups: Vec<&SecurityGroup> = group_ids
            .iter()
            .filter_map(|g| policy.security_groups.iter().find(|x| x.id == *g))
            .collect();
        let both = [
            expand(policy, &groups, false),
            expand(policy, &groups, true),
        ];
        untracked_findings(&both[0], &both[1], enis, out);
        for (egress, rules) in [(false, &both[0]), (true, &both[1])] {
            let weight: usize = rules
                .iter()
                .map(|r| match &r.rule.peer {
                    Peer::PrefixList(_) => peer_nets(policy, &r.rule.peer).len().max(1),
                    _ => 1,
                })
                .sum();
            if weight > 1000 {
                out.push(Finding {
                    code: "SG-QUOTA",
                    severity: Severity::Warning,
                    resources: enis.clone(),
                    message: format!("{weight} {} rules in the union of {} (AWS allows at most 1000 per ENI)", dir_name(egress), group_ids.join(", ")),
                    hint: "consolidate rules with prefix lists or broader CIDRs, or split the workload over more ENIs".into(),
                });
            }
            // Redundant rules: covered by the union of the others (checked from the last rule
            // back, so of two equal rules the later one is reported).
            let mut flagged = vec![false; rules.len()];
            for i in (0..rules.len()).rev() {
                let covered = (0..2).all(|f| {
                    let others = || {
                        rules
                            .iter()
                            .enumerate()
                            .filter(|(j, _)| *j != i && !flagged[*j])
                            .flat_map(|(_, o)| o.region[f].boxes())
                    };
                    let mine = rules[i].region[f].boxes();
                    // Fast paths, both exact: every box inside a single other box (covered), or a
                    // corner of a box that no other box contains (not covered).
                    if mine.iter().all(|b| others().any(|o| contains(o, b))) {
                        return true;
                    }
                    if mine.iter().any(|b| {
                        !others().any(|o| o.contains(b.lo)) || !others().any(|o| o.contains(b.hi))
                    }) {
                        return false;
                    }
                    let mut rest = rules[i].region[f].clone();
                    for o in others().filter(|o| mine.iter().any(|b| b.intersect(o).is_some())) {
                        if rest.is_empty() {
                            break;
                        }
                        rest.subtract_box(o);
                    }
                    rest.is_empty()
                });
                // An empty rule (stale reference) is reported as stale, not as redundant.
                if covered && rules[i].region.iter().any(|r| !r.is_empty()) {
                    flagged[i] = true;
                    redundant
                        .entry(rules[i].name.clone())
                        .or_default()
                        .extend(enis.iter().cloned());
                }
            }
        }
    }
    for (rule, enis) in redundant {
        out.push(Finding {
            code: "SG-REDUNDANT",
            severity: Severity::Info,
            message: format!("{rule} allows nothing that other rules of the ENI's security groups do not already allow"),
            resources: std::iter::once(rule.clone()).chain(enis).collect(),
            hint: format!("delete {rule} (keep it only if it is a literal /0 rule that makes flows untracked on purpose)"),
        });
    }
    // World-open administrative ports, per group rule.
    for g in &policy.security_groups {
        for (i, r) in g.ingress.iter().enumerate() {
            for v6 in [false, true] {
                if !is_zero(r, v6) {
                    continue;
                }
                let b = traffic_box(&r.traffic, v6);
                let open: Vec<String> = ADMIN_PORTS
                    .iter()
                    .filter(|(p, _)| {
                        b.lo[PROTO] <= 6
                            && 6 <= b.hi[PROTO]
                            && b.lo[X] <= u128::from(*p)
                            && u128::from(*p) <= b.hi[X]
                    })
                    .map(|(p, name)| format!("{p} ({name})"))
                    .collect();
                if open.is_empty() {
                    continue;
                }
                let name = match &r.id {
                    Some(id) => format!("{}:ingress:{id}", g.id),
                    None => format!("{}:ingress:{i}", g.id),
                };
                let attached: Vec<String> = policy
                    .enis
                    .iter()
                    .filter(|e| e.groups.contains(&g.id))
                    .map(|e| e.id.clone())
                    .collect();
                out.push(Finding {
                    code: "SG-ADMIN-OPEN",
                    severity: Severity::Warning,
                    message: format!(
                        "{name} exposes {} to {} ({} ENIs attached)",
                        open.join(", "),
                        if v6 { "::/0" } else { "0.0.0.0/0" },
                        attached.len()
                    ),
                    resources: std::iter::once(name).chain(attached).collect(),
                    hint: "restrict the source to known CIDRs, a prefix list or a security group (or use SSM Session Manager)".into(),
                });
            }
        }
    }
}

/// Untracked flows of an ENI union (SPEC §4): TCP/UDP requests allowed by a literal `/0` rule
/// of one direction whose opposite direction has a literal `/0` all-ports rule.
fn untracked_findings(
    ingress: &[ExpandedRule],
    egress: &[ExpandedRule],
    enis: &[String],
    out: &mut Vec<Finding>,
) {
    let all_ports = |r: &SgRule, proto: u8| match r.traffic {
        Traffic::All => true,
        Traffic::Ports { proto: p, ports } => p == proto && ports.from == 0 && ports.to == u16::MAX,
        _ => false,
    };
    for (requests, replies, word, dir) in [
        (ingress, egress, "from", "inbound"),
        (egress, ingress, "to", "outbound"),
    ] {
        for v6 in [false, true] {
            for (proto, proto_name) in [(6u8, "tcp"), (17u8, "udp")] {
                let Some(back) = replies
                    .iter()
                    .find(|r| is_zero(r.rule, v6) && all_ports(r.rule, proto))
                else {
                    continue;
                };
                let opening: Vec<&ExpandedRule> = requests
                    .iter()
                    .filter(|r| {
                        is_zero(r.rule, v6) && r.rule.traffic.proto().is_none_or(|p| p == proto)
                    })
                    .collect();
                if opening.is_empty() {
                    continue;
                }
                let ports: Vec<String> = opening
                    .iter()
                    .map(|r| match r.rule.traffic {
                        Traffic::Ports { ports, .. } if ports.from == ports.to => {
                            ports.from.to_string()
                        }
                        Traffic::Ports { ports, .. } => format!("{}-{}", ports.from, ports.to),
                        _ => "all ports".to_owned(),
                    })
                    .collect();
                let zero = if v6 { "::/0" } else { "0.0.0.0/0" };
                let mut resources: Vec<String> = enis.to_vec();
                resources.extend(opening.iter().map(|r| r.name.clone()));
                resources.push(back.name.clone());
                out.push(Finding {
                    code: "SG-UNTRACKED",
                    severity: Severity::Info,
                    message: format!(
                        "{dir} {proto_name} {} {word} {zero} is untracked ({} allows all {proto_name} replies): removing or narrowing these rules cuts live connections at once",
                        ports.join(", "),
                        back.name
                    ),
                    resources,
                    hint: "expected for public services; to keep connections across rule changes, narrow the /0 rules so the flows are tracked".into(),
                });
            }
        }
    }
}

fn stale_refs(policy: &Policy, out: &mut Vec<Finding>) {
    let carried: BTreeSet<&str> = policy
        .enis
        .iter()
        .flat_map(|e| e.groups.iter().map(String::as_str))
        .collect();
    for g in &policy.security_groups {
        for (egress, list) in [(false, &g.ingress), (true, &g.egress)] {
            for (i, r) in list.iter().enumerate() {
                let stale = match &r.peer {
                    Peer::Group(x) => (!policy.security_groups.iter().any(|s| s.id == *x)
                        && !carried.contains(x.as_str()))
                    .then(|| format!("security group {x}")),
                    Peer::PrefixList(l) => (!policy
                        .prefix_lists
                        .iter()
                        .any(|p| p.id == *l && p.cidrs.is_some()))
                    .then(|| format!("prefix list {l} (or its entries)")),
                    Peer::Cidr(_) => None,
                };
                if let Some(what) = stale {
                    let name = match &r.id {
                        Some(id) => format!("{}:{}:{id}", g.id, dir_name(egress)),
                        None => format!("{}:{}:{i}", g.id, dir_name(egress)),
                    };
                    out.push(Finding {
                        code: "STALE-REF",
                        severity: Severity::Warning,
                        message: format!("{name} references {what}, which is not in the snapshot: the rule matches nothing"),
                        resources: vec![name],
                        hint: "add the missing describe-* output to the snapshot, or delete the stale rule (aws ec2 describe-stale-security-groups)".into(),
                    });
                }
            }
        }
    }
}

/// Renders findings as text, most severe first.
pub fn render_text(findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        let sev = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        let _ = writeln!(s, "{sev:<8}{:<15}{}", f.code, f.message);
        let _ = writeln!(s, "{:23}resources: {}", "", f.resources.join(", "));
        let _ = writeln!(s, "{:23}fix: {}", "", f.hint);
    }
    let count = |sev| findings.iter().filter(|f| f.severity == sev).count();
    let _ = writeln!(
        s,
        "{} errors, {} warnings, {} notes",
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info)
    );
    s
}
