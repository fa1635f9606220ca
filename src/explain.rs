//! `vpcfw explain`: the whole SPEC §3 path of one flow and of its reply, step by step.
//!
//! The verdicts come from the engine itself ([`Firewall::process`] on a fresh engine: the
//! request at t = 0, then its reply), so an explanation never disagrees with `vpcfw eval`.
//! Each step is then annotated from the policy: every NACL entry considered, in rule-number
//! order, with why it did or did not match; every security-group rule that allows the packet
//! (not only the first); which literal-`/0` rules make a TCP/UDP flow untracked; the route.
//!
//! # JSON (stable)
//!
//! ```text
//! {"request": PATH, "reply": PATH | null, "payload": PATH (only with a payload, see explain_with)}
//! PATH  = {"flow": "tcp 10.0.1.10:40000 -> 10.0.2.20:443", "src_eni": id|null, "dst_eni": id|null,
//!          "action": "ACCEPT"|"REJECT", "stage": stage|null, "rule": name|null, "reason": text|null,
//!          "steps": [STEP…]}
//! STEP  = {"stage": "exempt"|"sg-egress"|"nacl-egress"|"route"|"nacl-ingress"|"sg-ingress"|"inspection",
//!          "status": "pass"|"reject"|"skipped"|"not-reached", "note": text, …}
//!   sg-*:   "eni", "via": "conntrack"|"new-entry"|"untracked"|"rule"|null,
//!           "allowed_by": [{"rule": name, "text": "tcp 443 from 0.0.0.0/0"}…],
//!           "untracked_by": [name…]   (the /0 rules that make the flow untracked; empty if tracked)
//!   nacl-*: "nacl": id|null, "entries": [{"rule": name, "text": "100 allow tcp 443 0.0.0.0/0",
//!           "matched": bool, "why_not": text|null}…]  (in evaluation order, up to the deciding one)
//!   route:  "route_table": id|null, "route": name|null
//!   inspection (only with inspection rules): "status" also "skipped" (no rule covers the
//!           packet), "rules_in_scope": [name…], "matched": {"rule": name, "action": "block"|"count"}|null
//! ```

use crate::compile::{CompiledPolicy, RuleRef};
use crate::conntrack::{Direction, TcpFlags, Time};
use crate::firewall::{Decision, Firewall, InputError, L4, Packet, SgPass, Stage, Verdict};
use crate::inspect::Inspector;
use crate::policy::{Action, NaclEntry, Peer, Policy, SgRule, Traffic};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

/// Parses a flow: `tcp 10.0.1.10:40000 -> 10.0.2.20:443`, `udp [2001:db8::1]:5353 -> [2001:db8::2]:53`,
/// `icmp 10.0.1.10 -> 10.0.2.20 type 8 code 0`, `icmpv6 … type 128`, `47 10.0.1.10 -> 192.0.2.1`.
/// TCP flows start with a SYN unless `flags S…` is given.
pub fn parse_flow(s: &str) -> Result<Packet, String> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let arrow = words
        .iter()
        .position(|w| *w == "->")
        .ok_or("expected `PROTO SRC -> DST`, e.g. `tcp 10.0.1.10:40000 -> 10.0.2.20:443`")?;
    if arrow != 2 || words.len() < 4 {
        return Err(
            "expected `PROTO SRC -> DST`, e.g. `tcp 10.0.1.10:40000 -> 10.0.2.20:443`".into(),
        );
    }
    let proto = match words[0].to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" => 58,
        p => p.parse::<u8>().map_err(|_| {
            format!("unknown protocol {p:?}: expected tcp, udp, icmp, icmpv6 or a number")
        })?,
    };
    // Trailing `key value` options: `flags SA`, `type 8`, `code 0`, `id 7`.
    let rest = &words[4..];
    if !rest.len().is_multiple_of(2) {
        return Err("options come in pairs, e.g. `type 8 code 0` or `flags SA`".into());
    }
    let mut opts: Vec<(&str, &str)> = rest.chunks(2).map(|c| (c[0], c[1])).collect();
    let mut take = |name: &str| {
        opts.iter()
            .position(|(k, _)| *k == name)
            .map(|i| opts.remove(i).1)
    };
    let number = |name: &str, v: Option<&str>, max: u64| -> Result<Option<u64>, String> {
        v.map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or(format!("`{name}`: expected 0-{max}, found {v:?}"))
        })
        .transpose()
    };
    let packet = match proto {
        6 | 17 => {
            let (src, sport) = endpoint(words[1])?;
            let (dst, dport) = endpoint(words[3])?;
            same_family(src, dst)?;
            let flags = match take("flags") {
                Some(f) if proto == 6 => TcpFlags::parse(f).ok_or(format!(
                    "`flags`: expected letters from S A F R P U, found {f:?}"
                ))?,
                Some(_) => return Err("`flags` is only meaningful for tcp".into()),
                None if proto == 6 => TcpFlags(TcpFlags::SYN),
                None => TcpFlags(0),
            };
            Packet {
                src,
                dst,
                proto,
                l4: L4::Ports {
                    sport,
                    dport,
                    flags,
                },
                len: 0,
                fragment: None,
            }
        }
        1 | 58 => {
            let src = address(words[1])?;
            let dst = address(words[3])?;
            same_family(src, dst)?;
            let default_type = if proto == 1 { 8 } else { 128 };
            let icmp_type = number("type", take("type"), 255)?.unwrap_or(default_type) as u8;
            let code = number("code", take("code"), 255)?.unwrap_or(0) as u8;
            let id = number("id", take("id"), 65535)?.unwrap_or(0) as u16;
            // The protocol as written (ICMP over IPv6 is expressible), the fields as ICMP.
            Packet {
                proto,
                ..Packet::icmp(src, dst, icmp_type, code, id)
            }
        }
        _ => {
            let src = address(words[1])?;
            let dst = address(words[3])?;
            same_family(src, dst)?;
            Packet::other(src, dst, proto)
        }
    };
    match opts.first() {
        Some((k, _)) => Err(format!("unknown option `{k}` for this protocol")),
        None => Ok(packet),
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> Result<(), String> {
    if a.is_ipv4() == b.is_ipv4() {
        Ok(())
    } else {
        Err("source and destination must be of the same IP family".into())
    }
}

fn address(s: &str) -> Result<IpAddr, String> {
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("expected an IP address, found {s:?}"))
}

fn endpoint(s: &str) -> Result<(IpAddr, u16), String> {
    let (a, p) = s
        .rsplit_once(':')
        .ok_or(format!("expected ADDRESS:PORT, found {s:?}"))?;
    let port = p
        .parse()
        .map_err(|_| format!("expected a port from 0 to 65535 in {s:?}"))?;
    Ok((address(a)?, port))
}

/// The flow in the `parse_flow` syntax.
pub fn flow_text(p: &Packet) -> String {
    let ep = |a: IpAddr, port: u16| match a {
        IpAddr::V4(_) => format!("{a}:{port}"),
        IpAddr::V6(_) => format!("[{a}]:{port}"),
    };
    match p.l4 {
        L4::Ports {
            sport,
            dport,
            flags,
        } => {
            let name = if p.proto == 6 { "tcp" } else { "udp" };
            let mut s = format!("{name} {} -> {}", ep(p.src, sport), ep(p.dst, dport));
            if p.proto == 6 {
                let _ = write!(s, " flags {}", flag_letters(flags));
            }
            s
        }
        L4::Icmp {
            icmp_type,
            code,
            id,
        } => {
            let name = if p.proto == 1 { "icmp" } else { "icmpv6" };
            format!(
                "{name} {} -> {} type {icmp_type} code {code} id {id}",
                p.src, p.dst
            )
        }
        L4::None => format!("{} {} -> {}", p.proto, p.src, p.dst),
    }
}

fn flag_letters(f: TcpFlags) -> String {
    [
        (TcpFlags::SYN, 'S'),
        (TcpFlags::ACK, 'A'),
        (TcpFlags::FIN, 'F'),
        (TcpFlags::RST, 'R'),
        (TcpFlags::PSH, 'P'),
        (TcpFlags::URG, 'U'),
    ]
    .iter()
    .filter(|(b, _)| f.has(*b))
    .map(|(_, c)| *c)
    .collect()
}

/// The reply a flow's destination would send, if the protocol has one.
pub fn reply_of(p: &Packet) -> Option<Packet> {
    let l4 = match p.l4 {
        L4::Ports {
            sport,
            dport,
            flags,
        } => {
            let flags = if p.proto != 6 {
                TcpFlags(0)
            } else if flags.is_syn_only() {
                TcpFlags(TcpFlags::SYN | TcpFlags::ACK)
            } else {
                TcpFlags(TcpFlags::ACK)
            };
            L4::Ports {
                sport: dport,
                dport: sport,
                flags,
            }
        }
        L4::Icmp {
            icmp_type,
            code,
            id,
        } => {
            let reply = match (p.proto, icmp_type) {
                (1, 8) => 0,
                (1, 13) => 14,
                (58, 128) => 129,
                _ => return None,
            };
            L4::Icmp {
                icmp_type: reply,
                code,
                id,
            }
        }
        L4::None => L4::None,
    };
    Some(Packet {
        src: p.dst,
        dst: p.src,
        l4,
        ..*p
    })
}

/// Explains `flow` and its reply as JSON (see the module docs for the schema).
pub fn explain(policy: &CompiledPolicy, flow: &Packet) -> Result<Value, InputError> {
    explain_with(policy, None, flow, &[])
}

/// [`explain`] with the payload-inspection stage: with `inspector`, every path gains an
/// `inspection` step, and a non-empty `payload` adds a `"payload"` path: after the request and
/// its reply, the same flow sends `payload` (TCP: a `PA` segment right after the handshake,
/// sequence number ISN + 1; UDP: a second datagram), judged by the same engine.
pub fn explain_with(
    policy: &CompiledPolicy,
    inspector: Option<Arc<Inspector>>,
    flow: &Packet,
    payload: &[u8],
) -> Result<Value, InputError> {
    let mut fw = Firewall::new(policy.clone(), None);
    fw.set_inspector(inspector);
    let insp = fw.inspector().map(|_| ());
    let v = fw.process(Time(0), flow)?;
    let request = path(policy, fw.inspector(), flow, &v);
    let reply = match reply_of(flow) {
        Some(r) => {
            let rv = fw.process(Time(0), &r)?;
            path(policy, fw.inspector(), &r, &rv)
        }
        None => Value::Null,
    };
    let mut out = json!({"request": request, "reply": reply});
    if !payload.is_empty() && insp.is_some() && matches!(flow.proto, 6 | 17) {
        let data = match flow.l4 {
            L4::Ports { sport, dport, .. } => Packet {
                l4: L4::Ports {
                    sport,
                    dport,
                    flags: TcpFlags(if flow.proto == 6 {
                        TcpFlags::PSH | TcpFlags::ACK
                    } else {
                        0
                    }),
                },
                ..*flow
            },
            _ => *flow,
        };
        let dv = fw.process_with_payload(Time(0), &data, 1, payload)?;
        let mut p = path(policy, fw.inspector(), &data, &dv);
        p["payload_len"] = json!(payload.len());
        out["payload"] = p;
    }
    Ok(out)
}

/// The `inspection` step of a path.
fn inspection_step(insp: &Inspector, p: &Packet, v: &Verdict) -> Value {
    let dport = match p.l4 {
        L4::Ports { dport, .. } => dport,
        _ => 0,
    };
    let scope = insp.scope_of(p.proto, dport, v.src_eni, v.dst_eni);
    let in_scope: Vec<&str> = scope
        .map(|s| {
            insp.scope_rules(s)
                .iter()
                .map(|r| insp.rule_name(*r))
                .collect()
        })
        .unwrap_or_default();
    let matched = v
        .inspection
        .map(|m| json!({"rule": insp.rule_name(m.rule), "action": m.action.as_str()}));
    let (status, note) = if v.stage == Some(Stage::Inspection) {
        (
            "reject",
            "a block rule matched: this packet and every later packet of the flow are dropped",
        )
    } else if v.decision == Decision::Reject || v.stage == Some(Stage::Exempt) {
        ("not-reached", "")
    } else if scope.is_none() {
        (
            "skipped",
            "no byte-match rule covers this protocol, port and ENI",
        )
    } else if matched.is_some() {
        ("pass", "a count rule matched (counted only)")
    } else {
        (
            "pass",
            "inspected: no rule matched (TCP streams are matched across segments)",
        )
    };
    json!({"stage": "inspection", "status": status, "note": note, "rules_in_scope": in_scope, "matched": matched})
}

fn path(cp: &CompiledPolicy, insp: Option<&Inspector>, p: &Packet, v: &Verdict) -> Value {
    let policy = cp.policy();
    let eni_id = |i: Option<u32>| i.map(|i| policy.enis[i as usize].id.clone());
    let subnet_of = |i: Option<u32>| i.map(|i| policy.enis[i as usize].subnet_id.clone());
    let same_subnet = v.src_eni.is_some() && subnet_of(v.src_eni) == subnet_of(v.dst_eni);
    let order = [
        Stage::SgEgress,
        Stage::NaclEgress,
        Stage::Route,
        Stage::NaclIngress,
        Stage::SgIngress,
    ];
    let decided = v.stage.and_then(|s| order.iter().position(|o| *o == s));
    let mut steps = Vec::new();
    if v.stage == Some(Stage::Exempt) {
        steps.push(json!({"stage": "exempt", "status": "pass", "note": "a never-filtered address (metadata, time sync or Amazon DNS): nothing else is evaluated"}));
    } else {
        for (i, stage) in order.iter().enumerate() {
            let applies = match stage {
                Stage::SgEgress => v.src_eni.is_some(),
                Stage::NaclEgress => v.src_eni.is_some() && !same_subnet,
                Stage::Route => v.src_eni.is_some(),
                Stage::NaclIngress => v.dst_eni.is_some() && !same_subnet,
                Stage::SgIngress => v.dst_eni.is_some(),
                _ => false,
            };
            let reached = match decided {
                Some(d) => i <= d,
                None => !(v.dst_eni.is_none() && i > 2),
            };
            let status = if !applies {
                "skipped"
            } else if !reached {
                "not-reached"
            } else if decided == Some(i) && v.decision == Decision::Reject {
                "reject"
            } else {
                "pass"
            };
            let mut step = json!({"stage": stage.as_str(), "status": status, "note": note(*stage, applies, same_subnet, v)});
            if applies && reached {
                match stage {
                    Stage::SgEgress | Stage::SgIngress => sg_detail(cp, p, v, *stage, &mut step),
                    Stage::NaclEgress | Stage::NaclIngress => {
                        nacl_detail(cp, p, v, *stage, &mut step)
                    }
                    _ => route_detail(cp, v, &mut step),
                }
            }
            steps.push(step);
        }
    }
    if let Some(insp) = insp {
        steps.push(inspection_step(insp, p, v));
    }
    let rule = match (v.rule, v.inspection, insp) {
        (Some(r), _, _) => Some(cp.rule_name(r)),
        (None, Some(m), Some(i)) if v.stage == Some(Stage::Inspection) => {
            Some(i.rule_name(m.rule).to_string())
        }
        _ => None,
    };
    json!({
        "flow": flow_text(p),
        "src_eni": eni_id(v.src_eni),
        "dst_eni": eni_id(v.dst_eni),
        "action": v.decision.as_str(),
        "stage": v.stage.map(|s| s.as_str()),
        "rule": rule,
        "reason": (v.decision == Decision::Reject).then(|| v.reason.as_str()),
        "steps": steps,
    })
}

fn note(stage: Stage, applies: bool, same_subnet: bool, v: &Verdict) -> &'static str {
    match (stage, applies) {
        (Stage::SgEgress | Stage::Route, false) => "the source is outside the VPC",
        (Stage::NaclEgress | Stage::NaclIngress, false) if same_subnet => {
            "both ENIs are in one subnet: NACLs are not evaluated"
        }
        (Stage::NaclEgress, false) => "the source is outside the VPC",
        (Stage::NaclIngress | Stage::SgIngress, false) => "the destination is outside the VPC",
        (Stage::Route, true) if v.dst_eni.is_none() && v.route.is_some() => {
            "the route leaves the VPC: accepted here"
        }
        _ => "",
    }
}

fn sg_detail(cp: &CompiledPolicy, p: &Packet, v: &Verdict, stage: Stage, step: &mut Value) {
    let policy = cp.policy();
    let (dir, eni, pass) = match stage {
        Stage::SgEgress => (Direction::Egress, v.src_eni, v.sg_egress),
        _ => (Direction::Ingress, v.dst_eni, v.sg_ingress),
    };
    let Some(eni) = eni else { return };
    let e = &policy.enis[eni as usize];
    step["eni"] = json!(e.id);
    step["via"] = json!(pass.map(|pass| match pass {
        SgPass::Tracked => "conntrack",
        SgPass::NewEntry(_) => "new-entry",
        SgPass::Untracked(_) => "untracked",
        SgPass::Rule(_) => "rule",
    }));
    let peer = if dir == Direction::Egress {
        p.dst
    } else {
        p.src
    };
    let allowed: Vec<Value> = sg_rules(policy, eni, dir)
        .filter(|(_, r)| {
            peer_matches(policy, &r.peer, peer) && traffic_why_not(&r.traffic, p).is_none()
        })
        .map(|(name, r)| json!({"rule": name, "text": sg_text(r, dir)}))
        .collect();
    step["allowed_by"] = json!(allowed);
    let untracked_by: Vec<String> = match pass {
        Some(SgPass::Untracked(_)) => untracked_rules(policy, eni, dir, p),
        _ => Vec::new(),
    };
    step["untracked_by"] = json!(untracked_by);
    if pass == Some(SgPass::Tracked) {
        step["note"] = json!("admitted by a live connection-tracking entry of this ENI");
    } else if pass.is_none() && v.stage == Some(Stage::ConntrackAllowance) {
        step["note"] =
            json!("allowed by the rules, but the instance's connection-tracking allowance is full");
    } else if pass.is_none() {
        step["note"] =
            json!("no rule of the ENI's security groups allows it, and no live entry admits it");
    }
}

/// The /0 rules that make this TCP/UDP packet untracked at the ENI (SPEC §4).
fn untracked_rules(policy: &Policy, eni: u32, dir: Direction, p: &Packet) -> Vec<String> {
    let zero = |r: &SgRule| matches!(&r.peer, Peer::Cidr(n) if n.prefix_len() == 0 && n.addr().is_ipv4() == p.src.is_ipv4());
    let all_ports = |r: &SgRule| match r.traffic {
        Traffic::All => true,
        Traffic::Ports { proto, ports } => {
            proto == p.proto && ports.from == 0 && ports.to == u16::MAX
        }
        _ => false,
    };
    let reversed = reply_of(p).filter(|_| matches!(p.proto, 6 | 17));
    let mut out = Vec::new();
    let own: Vec<(String, &SgRule)> = sg_rules(policy, eni, dir)
        .filter(|(_, r)| zero(r))
        .collect();
    let opp: Vec<(String, &SgRule)> = sg_rules(policy, eni, dir.reverse())
        .filter(|(_, r)| zero(r))
        .collect();
    let req_own: Vec<&String> = own
        .iter()
        .filter(|(_, r)| traffic_why_not(&r.traffic, p).is_none())
        .map(|(n, _)| n)
        .collect();
    let req_opp: Vec<&String> = opp
        .iter()
        .filter(|(_, r)| all_ports(r))
        .map(|(n, _)| n)
        .collect();
    if !req_own.is_empty() && !req_opp.is_empty() {
        out.extend(req_own.into_iter().chain(req_opp).cloned());
    } else if let Some(rev) = reversed {
        let resp_opp: Vec<&String> = opp
            .iter()
            .filter(|(_, r)| traffic_why_not(&r.traffic, &rev).is_none())
            .map(|(n, _)| n)
            .collect();
        let resp_own: Vec<&String> = own
            .iter()
            .filter(|(_, r)| all_ports(r))
            .map(|(n, _)| n)
            .collect();
        out.extend(resp_opp.into_iter().chain(resp_own).cloned());
    }
    out
}

/// Every rule of the ENI's groups in one direction, with its name.
fn sg_rules(policy: &Policy, eni: u32, dir: Direction) -> impl Iterator<Item = (String, &SgRule)> {
    policy.enis[eni as usize]
        .groups
        .iter()
        .filter_map(move |g| policy.security_groups.iter().find(|x| x.id == *g))
        .flat_map(move |g| {
            let list = if dir == Direction::Egress {
                &g.egress
            } else {
                &g.ingress
            };
            list.iter().enumerate().map(move |(i, r)| {
                let name = match &r.id {
                    Some(id) => format!("{}:{dir}:{id}", g.id),
                    None => format!("{}:{dir}:{i}", g.id),
                };
                (name, r)
            })
        })
}

fn peer_matches(policy: &Policy, peer: &Peer, addr: IpAddr) -> bool {
    match peer {
        Peer::Cidr(n) => n.contains(&addr),
        Peer::PrefixList(l) => policy
            .prefix_lists
            .iter()
            .filter(|x| x.id == *l)
            .filter_map(|x| x.cidrs.as_ref())
            .flatten()
            .any(|n| n.contains(&addr)),
        Peer::Group(g) => policy
            .enis
            .iter()
            .any(|e| e.groups.contains(g) && e.addresses().any(|a| a == addr)),
    }
}

/// Why `t` does not match the packet's protocol/ports/type/code, or `None` when it does.
fn traffic_why_not(t: &Traffic, p: &Packet) -> Option<String> {
    let (ports, icmp) = match p.l4 {
        L4::Ports { dport, .. } => (Some(dport), None),
        L4::Icmp {
            icmp_type, code, ..
        } => (None, Some((icmp_type, code))),
        L4::None => (None, None),
    };
    match *t {
        Traffic::All => None,
        Traffic::Proto(x) | Traffic::Ports { proto: x, .. } | Traffic::Icmp { proto: x, .. }
            if x != p.proto =>
        {
            Some(format!("protocol {} is not {}", p.proto, proto_name(x)))
        }
        Traffic::Ports { ports: r, .. } => match ports {
            Some(d) if (r.from..=r.to).contains(&d) => None,
            Some(d) => Some(format!("port {d} is not in {}", range_text(r.from, r.to))),
            None => Some("no port to match".into()),
        },
        Traffic::Icmp {
            icmp_type, code, ..
        } => {
            let (pt, pc) = icmp.unwrap_or((0, 0));
            match (icmp_type, code) {
                (Some(t), _) if t != pt => Some(format!("ICMP type {pt} is not {t}")),
                (_, Some(c)) if c != pc => Some(format!("ICMP code {pc} is not {c}")),
                _ => None,
            }
        }
        Traffic::Proto(_) => None,
    }
}

/// `tcp`, `udp`, `icmp`, `icmpv6`, or `proto N`.
pub(crate) fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        p => format!("proto {p}"),
    }
}

fn range_text(from: u16, to: u16) -> String {
    if from == to {
        from.to_string()
    } else {
        format!("{from}-{to}")
    }
}

/// `tcp 443`, `all`, `icmp type 8`, `icmp 3/4`, `proto 47`.
pub fn traffic_text(t: &Traffic) -> String {
    match *t {
        Traffic::All => "all".into(),
        Traffic::Ports { proto, ports } => {
            format!("{} {}", proto_name(proto), range_text(ports.from, ports.to))
        }
        Traffic::Icmp {
            proto,
            icmp_type: None,
            ..
        } => format!("{} all", proto_name(proto)),
        Traffic::Icmp {
            proto,
            icmp_type: Some(t),
            code: None,
        } => format!("{} type {t}", proto_name(proto)),
        Traffic::Icmp {
            proto,
            icmp_type: Some(t),
            code: Some(c),
        } => format!("{} {t}/{c}", proto_name(proto)),
        Traffic::Proto(p) => proto_name(p),
    }
}

fn peer_text(p: &Peer) -> String {
    match p {
        Peer::Cidr(n) => n.to_string(),
        Peer::PrefixList(l) | Peer::Group(l) => l.clone(),
    }
}

fn sg_text(r: &SgRule, dir: Direction) -> String {
    let word = if dir == Direction::Egress {
        "to"
    } else {
        "from"
    };
    format!("{} {word} {}", traffic_text(&r.traffic), peer_text(&r.peer))
}

fn nacl_text(e: &NaclEntry) -> String {
    let action = if e.action == Action::Allow {
        "allow"
    } else {
        "deny"
    };
    format!(
        "{} {action} {} {}",
        e.rule_number,
        traffic_text(&e.traffic),
        e.cidr
    )
}

fn nacl_detail(cp: &CompiledPolicy, p: &Packet, v: &Verdict, stage: Stage, step: &mut Value) {
    let policy = cp.policy();
    let (egress, eni) = match stage {
        Stage::NaclEgress => (true, v.src_eni),
        _ => (false, v.dst_eni),
    };
    let Some(eni) = eni else { return };
    let Some(nacl_idx) = nacl_of(cp, eni) else {
        step["nacl"] = Value::Null;
        step["note"] =
            json!("the subnet has no network ACL (no association and no default NACL): denied");
        return;
    };
    let n = &policy.nacls[nacl_idx];
    step["nacl"] = json!(n.id);
    let peer = if egress { p.dst } else { p.src };
    let mut entries = Vec::new();
    let mut list: Vec<&NaclEntry> = n.entries.iter().filter(|e| e.egress == egress).collect();
    list.sort_by_key(|e| e.rule_number);
    let mut decided = false;
    for e in list {
        let why_not = if e.cidr.addr().is_ipv4() != peer.is_ipv4() {
            Some(format!(
                "an IPv{} entry",
                if e.cidr.addr().is_ipv4() { 4 } else { 6 }
            ))
        } else if !e.cidr.contains(&peer) {
            Some(format!("{peer} is not in {}", e.cidr))
        } else {
            traffic_why_not(&e.traffic, p)
        };
        let matched = why_not.is_none();
        entries.push(json!({
            "rule": format!("{}:{}:{}", n.id, if egress { "egress" } else { "ingress" }, e.rule_number),
            "text": nacl_text(e),
            "matched": matched,
            "why_not": why_not,
        }));
        if matched {
            decided = true;
            break;
        }
    }
    if !decided {
        entries.push(json!({
            "rule": format!("{}:{}:implicit-deny", n.id, if egress { "egress" } else { "ingress" }),
            "text": "* deny all (no entry matched)",
            "matched": true,
            "why_not": null,
        }));
    }
    step["entries"] = json!(entries);
}

fn nacl_of(cp: &CompiledPolicy, eni: u32) -> Option<usize> {
    let policy = cp.policy();
    let e = &policy.enis[eni as usize];
    let vpc = policy
        .subnets
        .iter()
        .find(|s| s.id == e.subnet_id)
        .map(|s| s.vpc_id.as_str());
    policy
        .nacls
        .iter()
        .position(|n| n.subnet_ids.contains(&e.subnet_id))
        .or_else(|| {
            policy
                .nacls
                .iter()
                .position(|n| n.is_default && Some(n.vpc_id.as_str()) == vpc)
        })
}

fn route_detail(cp: &CompiledPolicy, v: &Verdict, step: &mut Value) {
    let route = v.route.or(match v.rule {
        Some(r @ RuleRef::Route { .. }) => Some(r),
        _ => None,
    });
    if let Some(RuleRef::Route { table, .. }) = route {
        step["route_table"] = json!(cp.policy().route_tables[table as usize].id);
    }
    step["route"] = json!(route.map(|r| cp.rule_name(r)));
    if route.is_none() && v.stage == Some(Stage::Route) {
        step["note"] = json!(v.reason.as_str());
    }
}

/// Renders an explanation as a compact, readable text table.
pub fn render_text(x: &Value) -> String {
    let mut s = String::new();
    for (title, path) in [
        ("request", &x["request"]),
        ("reply", &x["reply"]),
        ("payload", &x["payload"]),
    ] {
        if path.is_null() && title == "payload" {
            continue;
        }
        if path.is_null() {
            let _ = writeln!(s, "{title}: none (this ICMP type has no reply)");
            continue;
        }
        let enis = format!(
            "{} -> {}",
            path["src_eni"].as_str().unwrap_or("outside"),
            path["dst_eni"].as_str().unwrap_or("outside")
        );
        let mut verdict = path["action"].as_str().unwrap_or("").to_owned();
        if let Some(stage) = path["stage"].as_str() {
            let _ = write!(verdict, " at {stage}");
        }
        if let Some(rule) = path["rule"].as_str() {
            let _ = write!(verdict, " ({rule})");
        }
        let _ = writeln!(
            s,
            "{title}: {}   [{enis}]   => {verdict}",
            path["flow"].as_str().unwrap_or("")
        );
        for step in path["steps"].as_array().into_iter().flatten() {
            let stage = step["stage"].as_str().unwrap_or("");
            let status = step["status"].as_str().unwrap_or("");
            let mut line = format!("  {stage:<13}{status:<12}");
            if let Some(eni) = step["eni"].as_str() {
                let _ = write!(line, "{eni} ");
            }
            if let Some(via) = step["via"].as_str() {
                let _ = write!(line, "via {via} ");
            }
            if let Some(n) = step["nacl"].as_str() {
                let _ = write!(line, "{n} ");
            }
            if let Some(r) = step["route"].as_str() {
                let _ = write!(line, "{r} ");
            }
            if let Some(m) = step["matched"].as_object() {
                let _ = write!(
                    line,
                    "{} {} ",
                    m.get("action").and_then(Value::as_str).unwrap_or(""),
                    m.get("rule").and_then(Value::as_str).unwrap_or("")
                );
            }
            if let Some(note) = step["note"].as_str().filter(|n| !n.is_empty()) {
                let _ = write!(line, "— {note}");
            }
            let _ = writeln!(s, "{}", line.trim_end());
            for e in step["entries"].as_array().into_iter().flatten() {
                let mark = if e["matched"].as_bool() == Some(true) {
                    "=>"
                } else {
                    "  "
                };
                let why = e["why_not"]
                    .as_str()
                    .map(|w| format!("  ({w})"))
                    .unwrap_or_default();
                let _ = writeln!(s, "      {mark} {}{why}", e["text"].as_str().unwrap_or(""));
            }
            for a in step["allowed_by"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    s,
                    "      allowed by {}: {}",
                    a["rule"].as_str().unwrap_or(""),
                    a["text"].as_str().unwrap_or("")
                );
            }
            let untracked: Vec<&str> = step["untracked_by"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !untracked.is_empty() {
                let _ = writeln!(s, "      untracked because of {}", untracked.join(", "));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_parse_and_print() {
        for (text, printed) in [
            (
                "tcp 10.0.1.10:40000 -> 10.0.2.20:443",
                "tcp 10.0.1.10:40000 -> 10.0.2.20:443 flags S",
            ),
            (
                "udp [2001:db8::1]:5353 -> [2001:db8::2]:53",
                "udp [2001:db8::1]:5353 -> [2001:db8::2]:53",
            ),
            (
                "icmp 10.0.1.10 -> 10.0.2.20 type 8 code 0",
                "icmp 10.0.1.10 -> 10.0.2.20 type 8 code 0 id 0",
            ),
            (
                "icmpv6 2001:db8::1 -> 2001:db8::2",
                "icmpv6 2001:db8::1 -> 2001:db8::2 type 128 code 0 id 0",
            ),
            ("47 10.0.1.10 -> 192.0.2.1", "47 10.0.1.10 -> 192.0.2.1"),
            (
                "tcp 10.0.1.10:1 -> 10.0.2.20:2 flags A",
                "tcp 10.0.1.10:1 -> 10.0.2.20:2 flags A",
            ),
        ] {
            assert_eq!(flow_text(&parse_flow(text).unwrap()), printed);
        }
        for bad in [
            "tcp 10.0.1.10 -> 10.0.2.20:443",
            "xyz 1.2.3.4 -> 1.2.3.5",
            "tcp 10.0.0.1:1 10.0.0.2:2",
            "tcp 10.0.0.1:1 -> [::1]:2",
        ] {
            assert!(parse_flow(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replies() {
        let r = reply_of(&parse_flow("tcp 10.0.1.10:40000 -> 10.0.2.20:443").unwrap()).unwrap();
        assert_eq!(
            flow_text(&r),
            "tcp 10.0.2.20:443 -> 10.0.1.10:40000 flags SA"
        );
        let r = reply_of(&parse_flow("icmp 10.0.1.10 -> 10.0.2.20 type 13 id 4").unwrap()).unwrap();
        assert_eq!(
            flow_text(&r),
            "icmp 10.0.2.20 -> 10.0.1.10 type 14 code 0 id 4"
        );
        assert!(
            reply_of(&parse_flow("icmp 10.0.1.10 -> 10.0.2.20 type 3 code 4").unwrap()).is_none()
        );
    }
}
