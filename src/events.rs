//! The `vpcfw eval` line protocol (SPEC §7): JSON event lines in, one JSON answer line out.
//!
//! Packet event:
//! `{"t": 12.5, "src": "10.0.1.10", "dst": "10.0.2.20", "proto": "tcp", "sport": 40000, "dport": 443, "flags": "S", "len": 60}`;
//! ICMP events carry `type`, `code` and `id` (absent: 0); other protocols only `proto`.
//! Control event: `{"t": 20.0, "reload": "DIR2"}`.
//!
//! Beyond SPEC, a packet event may describe a fragment with
//! `"frag": {"id": 7, "offset": 1480, "more": true}` (offset in bytes; 0 for the first), and,
//! for the payload-inspection stage ([`crate::inspect`]), a TCP or UDP payload with
//! `"payload": "GET /?u=169.254.169.254 HTTP/1.1"` (text, as UTF-8) or `"payload_b64": "…"`
//! (standard base64), and the TCP sequence number of its first byte with `"seq": 1001`
//! (a SYN's `seq` is its ISN).
//!
//! When the inspection stage decides (stage `inspection`), the answer's `rule` is the
//! byte-match rule's `Name`; an accepted packet that matched a `count` rule carries
//! `"inspection": {"rule": NAME, "action": "count"}`.
//!
//! This module only parses and renders; the caller owns the engine and any file access.

use crate::compile::CompiledPolicy;
use crate::conntrack::{TcpFlags, Time};
use crate::firewall::{Decision, Fragment, L4, Packet, SgPass, Stage, Verdict};
use crate::inspect::Inspector;
use serde_json::{Map, Value, json};
use std::net::IpAddr;

/// One parsed input line.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Judge a packet at time `t`.
    Packet {
        /// When.
        t: Time,
        /// What.
        packet: Packet,
        /// TCP sequence number of the payload's first byte (of the SYN itself for a SYN), when
        /// given.
        seq: Option<u32>,
        /// Transport payload (for the inspection stage); empty when the event has none.
        payload: Vec<u8>,
    },
    /// Replace the snapshot with the directory `dir`.
    Reload {
        /// The new snapshot directory (relative to the current directory).
        dir: String,
    },
}

/// Parses one event line. The error is a one-line message naming the field.
pub fn parse_event(line: &str) -> Result<Event, String> {
    if line.trim().is_empty() {
        return Err("empty line: expected a JSON event object".into());
    }
    let v: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(o) = v else {
        return Err("expected a JSON object".into());
    };
    if let Some(dir) = o.get("reload") {
        let Value::String(dir) = dir else {
            return Err("\"reload\": expected a directory path string".into());
        };
        if let Some(t) = o.get("t") {
            time(t)?;
        }
        return Ok(Event::Reload { dir: dir.clone() });
    }
    let t = time(o.get("t").ok_or("missing \"t\" (seconds)")?)?;
    let src = addr(&o, "src")?;
    let dst = addr(&o, "dst")?;
    if src.is_ipv4() != dst.is_ipv4() {
        return Err("\"src\" and \"dst\" must be of the same IP family".into());
    }
    let proto = protocol(o.get("proto").ok_or("missing \"proto\"")?)?;
    let len = match o.get("len") {
        None | Some(Value::Null) => 0,
        Some(v) => int(v, "len", 0, u64::from(u32::MAX))? as u32,
    };
    let fragment = match o.get("frag") {
        None | Some(Value::Null) => None,
        Some(Value::Object(f)) => Some(Fragment {
            id: int(
                f.get("id").unwrap_or(&json!(0)),
                "frag.id",
                0,
                u64::from(u32::MAX),
            )? as u32,
            offset: int(
                f.get("offset").unwrap_or(&json!(0)),
                "frag.offset",
                0,
                65535,
            )? as u32,
            more: match f.get("more") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err("\"frag.more\": expected true or false".into()),
            },
        }),
        Some(_) => {
            return Err("\"frag\": expected an object {\"id\", \"offset\", \"more\"}".into());
        }
    };
    let non_first = fragment.is_some_and(|f| f.offset > 0);
    let l4 = match proto {
        6 | 17 if non_first => L4::None,
        6 | 17 => {
            let sport = int(
                o.get("sport")
                    .ok_or("missing \"sport\" (required for tcp and udp)")?,
                "sport",
                0,
                65535,
            )? as u16;
            let dport = int(
                o.get("dport")
                    .ok_or("missing \"dport\" (required for tcp and udp)")?,
                "dport",
                0,
                65535,
            )? as u16;
            let flags = match o.get("flags") {
                None | Some(Value::Null) => TcpFlags(0),
                Some(Value::String(s)) => TcpFlags::parse(s).ok_or_else(|| {
                    format!("\"flags\": expected letters from S A F R P U E C, found {s:?}")
                })?,
                Some(_) => {
                    return Err(
                        "\"flags\": expected a string of flag letters such as \"SA\"".into(),
                    );
                }
            };
            if proto == 17 && flags != TcpFlags(0) {
                return Err("\"flags\" is only meaningful for tcp".into());
            }
            L4::Ports {
                sport,
                dport,
                flags,
            }
        }
        1 | 58 if non_first => L4::None,
        1 | 58 => {
            let opt = |name: &str, max: u64| -> Result<u64, String> {
                match o.get(name) {
                    None | Some(Value::Null) => Ok(0),
                    Some(v) => int(v, name, 0, max),
                }
            };
            let icmp_type = int(
                o.get("type")
                    .ok_or("missing \"type\" (required for icmp)")?,
                "type",
                0,
                255,
            )? as u8;
            L4::Icmp {
                icmp_type,
                code: opt("code", 255)? as u8,
                id: opt("id", 65535)? as u16,
            }
        }
        _ => L4::None,
    };
    let seq = match o.get("seq") {
        None | Some(Value::Null) => None,
        Some(v) => Some(int(v, "seq", 0, u64::from(u32::MAX))? as u32),
    };
    let payload = match (o.get("payload"), o.get("payload_b64")) {
        (None | Some(Value::Null), None | Some(Value::Null)) => Vec::new(),
        (Some(Value::String(s)), None | Some(Value::Null)) => s.as_bytes().to_vec(),
        (None | Some(Value::Null), Some(Value::String(b))) => crate::inspect::base64_decode(b)
            .ok_or_else(|| {
                format!("\"payload_b64\": expected standard base64 (A-Z a-z 0-9 + /, = padding), found {b:?}")
            })?,
        (Some(_), Some(_)) => {
            return Err("give either \"payload\" or \"payload_b64\", not both".into());
        }
        (Some(_), _) => return Err("\"payload\": expected a string (the bytes as text)".into()),
        (_, Some(_)) => return Err("\"payload_b64\": expected a base64 string".into()),
    };
    if !payload.is_empty() && !matches!(proto, 6 | 17) {
        return Err("\"payload\" is only inspected for tcp and udp".into());
    }
    Ok(Event::Packet {
        t,
        seq,
        payload,
        packet: Packet {
            src,
            dst,
            proto,
            l4,
            len,
            fragment,
        },
    })
}

fn time(v: &Value) -> Result<Time, String> {
    v.as_f64()
        .and_then(Time::from_secs_f64)
        .ok_or_else(|| format!("\"t\": expected a non-negative number of seconds, found {v}"))
}

fn addr(o: &Map<String, Value>, name: &str) -> Result<IpAddr, String> {
    match o.get(name) {
        None => Err(format!("missing \"{name}\" (an IP address)")),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| format!("\"{name}\": expected an IP address, found {s:?}")),
        Some(v) => Err(format!(
            "\"{name}\": expected an IP address string, found {v}"
        )),
    }
}

fn int(v: &Value, name: &str, lo: u64, hi: u64) -> Result<u64, String> {
    match v.as_u64() {
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(format!(
            "\"{name}\": expected an integer from {lo} to {hi}, found {v}"
        )),
    }
}

fn protocol(v: &Value) -> Result<u8, String> {
    let bad = || {
        format!(
            "\"proto\": expected tcp, udp, icmp, icmpv6 or a protocol number from 0 to 255, found {v}"
        )
    };
    match v {
        Value::Number(_) => v
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .ok_or_else(bad),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(6),
            "udp" => Ok(17),
            "icmp" => Ok(1),
            "icmpv6" | "ipv6-icmp" => Ok(58),
            other => other.parse::<u8>().map_err(|_| bad()),
        },
        _ => Err(bad()),
    }
}

/// The answer line for a verdict: `action`, `stage`, then `rule` and `reason` when a
/// rule or a reason decided. With `trace`, a `path` array describes every step that ran.
pub fn answer(policy: &CompiledPolicy, v: &Verdict, trace: bool) -> Value {
    answer_with(policy, None, v, trace)
}

/// [`answer`] naming the byte-match rules of `inspector` (the one the engine ran).
pub fn answer_with(
    policy: &CompiledPolicy,
    inspector: Option<&Inspector>,
    v: &Verdict,
    trace: bool,
) -> Value {
    let mut o = Map::new();
    o.insert("action".into(), json!(v.decision.as_str()));
    o.insert(
        "stage".into(),
        v.stage.map_or(Value::Null, |s| json!(s.as_str())),
    );
    let inspect_name = |m: crate::firewall::InspectMatch| {
        inspector.map_or_else(
            || format!("byte-match rule {}", m.rule.0),
            |i| i.rule_name(m.rule).to_string(),
        )
    };
    if let Some(r) = v.rule {
        o.insert("rule".into(), json!(policy.rule_name(r)));
    } else if let (Some(Stage::Inspection), Some(m)) = (v.stage, v.inspection) {
        o.insert("rule".into(), json!(inspect_name(m)));
    }
    if let (Decision::Accept, Some(m)) = (v.decision, v.inspection) {
        o.insert(
            "inspection".into(),
            json!({"rule": inspect_name(m), "action": m.action.as_str()}),
        );
    }
    if v.decision == Decision::Reject {
        o.insert("reason".into(), json!(v.reason.as_str()));
    }
    let eni = |i: Option<u32>| i.map(|i| policy.policy().enis[i as usize].id.clone());
    if let Some(tracked) = [v.sg_egress, v.sg_ingress]
        .iter()
        .flatten()
        .map(|p| p.tracked())
        .reduce(|a, b| a && b)
    {
        o.insert("tracked".into(), json!(tracked));
    }
    if trace {
        let mut path = Vec::new();
        let sg = |stage: &str, eni: Option<String>, pass: SgPass| {
            let (via, rule) = match pass {
                SgPass::Tracked => ("conntrack", None),
                SgPass::Untracked(r) => ("untracked", Some(r)),
                SgPass::NewEntry(r) => ("new-entry", Some(r)),
                SgPass::Rule(r) => ("rule", Some(r)),
            };
            let mut s = json!({"stage": stage, "eni": eni, "via": via});
            if let Some(r) = rule {
                s["rule"] = json!(policy.rule_name(r));
            }
            s
        };
        if let Some(pass) = v.sg_egress {
            path.push(sg("sg-egress", eni(v.src_eni), pass));
        }
        for (stage, r) in [
            ("nacl-egress", v.nacl_egress),
            ("route", v.route),
            ("nacl-ingress", v.nacl_ingress),
        ] {
            if let Some(r) = r {
                path.push(json!({"stage": stage, "rule": policy.rule_name(r)}));
            }
        }
        if let Some(pass) = v.sg_ingress {
            path.push(sg("sg-ingress", eni(v.dst_eni), pass));
        }
        if let Some(m) = v.inspection {
            let at = if m.at_destination {
                v.dst_eni
            } else {
                v.src_eni
            };
            path.push(json!({"stage": "inspection", "eni": eni(at), "rule": inspect_name(m), "action": m.action.as_str()}));
        }
        o.insert("src_eni".into(), json!(eni(v.src_eni)));
        o.insert("dst_eni".into(), json!(eni(v.dst_eni)));
        o.insert("path".into(), Value::Array(path));
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spec_examples() {
        let e = parse_event(r#"{"t": 12.5, "src": "10.0.1.10", "dst": "10.0.2.20", "proto": "tcp", "sport": 40000, "dport": 443, "flags": "S", "len": 60}"#).unwrap();
        let Event::Packet { t, packet, .. } = e else {
            panic!("packet")
        };
        assert_eq!(t, Time(12_500_000_000));
        assert_eq!(
            packet.l4,
            L4::Ports {
                sport: 40000,
                dport: 443,
                flags: TcpFlags(TcpFlags::SYN)
            }
        );
        assert_eq!(packet.len, 60);
        let e = parse_event(r#"{"t": 13.0, "src": "10.0.1.10", "dst": "10.0.2.20", "proto": "icmp", "type": 8, "code": 0, "id": 7}"#).unwrap();
        assert!(matches!(
            e,
            Event::Packet {
                packet: Packet {
                    proto: 1,
                    l4: L4::Icmp {
                        icmp_type: 8,
                        code: 0,
                        id: 7
                    },
                    ..
                },
                ..
            }
        ));
        let e = parse_event(r#"{"t": 14.0, "src": "10.0.1.10", "dst": "192.0.2.1", "proto": 47}"#)
            .unwrap();
        assert!(matches!(
            e,
            Event::Packet {
                packet: Packet {
                    proto: 47,
                    l4: L4::None,
                    ..
                },
                ..
            }
        ));
        assert_eq!(
            parse_event(r#"{"t": 20.0, "reload": "DIR2"}"#).unwrap(),
            Event::Reload { dir: "DIR2".into() }
        );
    }

    #[test]
    fn payloads_and_sequence_numbers() {
        let e = parse_event(r#"{"t": 1, "src": "10.0.1.10", "dst": "10.0.2.10", "proto": "tcp", "sport": 1, "dport": 80, "flags": "PA", "seq": 4294967295, "payload": "GET /"}"#).unwrap();
        let Event::Packet { seq, payload, .. } = e else {
            panic!("packet")
        };
        assert_eq!(
            (seq, payload.as_slice()),
            (Some(u32::MAX), b"GET /".as_slice())
        );
        let e = parse_event(r#"{"t": 1, "src": "10.0.1.10", "dst": "10.0.2.10", "proto": "udp", "sport": 1, "dport": 53, "payload_b64": "AAEC/w=="}"#).unwrap();
        let Event::Packet { seq, payload, .. } = e else {
            panic!("packet")
        };
        assert_eq!((seq, payload), (None, vec![0, 1, 2, 255]));
        for (line, needle) in [
            (
                r#"{"t":1,"src":"10.0.0.1","dst":"10.0.0.2","proto":"tcp","sport":1,"dport":2,"seq":-1}"#,
                "\"seq\"",
            ),
            (
                r#"{"t":1,"src":"10.0.0.1","dst":"10.0.0.2","proto":"tcp","sport":1,"dport":2,"payload":7}"#,
                "\"payload\": expected a string",
            ),
            (
                r#"{"t":1,"src":"10.0.0.1","dst":"10.0.0.2","proto":"tcp","sport":1,"dport":2,"payload_b64":"!!"}"#,
                "base64",
            ),
            (
                r#"{"t":1,"src":"10.0.0.1","dst":"10.0.0.2","proto":"tcp","sport":1,"dport":2,"payload":"a","payload_b64":"YQ=="}"#,
                "not both",
            ),
            (
                r#"{"t":1,"src":"10.0.0.1","dst":"10.0.0.2","proto":"icmp","type":8,"payload":"a"}"#,
                "tcp and udp",
            ),
        ] {
            let err = parse_event(line).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn rejects_bad_lines_with_a_reason() {
        for (line, needle) in [
            ("", "empty"),
            ("   ", "empty"),
            ("{", "invalid JSON"),
            ("[1]", "object"),
            (
                r#"{"src":"10.0.0.1","dst":"10.0.0.2","proto":"tcp","sport":1,"dport":2}"#,
                "\"t\"",
            ),
            (
                r#"{"t":-1,"src":"10.0.0.1","dst":"10.0.0.2","proto":"tcp","sport":1,"dport":2}"#,
                "\"t\"",
            ),
            (
                r#"{"t":1,"dst":"10.0.0.2","proto":"tcp","sport":1,"dport":2}"#,
                "\"src\"",
            ),
            (
                r#"{"t":1,"src":"10.0.0.300","dst":"10.0.0.2","proto":"tcp","sport":1,"dport":2}"#,
                "\"src\"",
            ),
            (
                r#"{"t":1,"src":"10.0.0.1","dst":"::1","proto":"tcp","sport":1,"dport":2}"#,
                "family",
            ),
            (
                r#"{"t":1,"src":"10.0.0.1","dst":"10.0.0.2","proto":"tcpx","sport":1,"dport":2}"#,
                "\"proto\"",
            ),
            (
                r#"{"t":1,"src":"10.0.0.1","dst":"10.0.0.2","proto":256}"#,
                "\"proto\"",
            ),
            (
                r#"{"t":1,"src":"10.0.0.1","dst":"10.0.0.2","proto":"tcp","sport":1,"dport":65536}"#,
                "\"dport\"",
            ),
            (
                r#"{"t":1,"src":"10.0.0.1","dst":"10.0.0.2","proto":"tcp","sport":-1,"dport":1}"#,
                "\"sport\"",
            ),
            (
                r#"{"t":1,"src":"10.0.0.1","dst":"10.0.0.2","proto":"tcp","sport":1}"#,
                "\"dport\"",
            ),
            (
                r#"{"t":1,"src":"10.0.0.1","dst":"10.0.0.2","proto":"tcp","sport":1,"dport":2,"flags":"SX"}"#,
                "\"flags\"",
            ),
            (
                r#"{"t":1,"src":"10.0.0.1","dst":"10.0.0.2","proto":"icmp"}"#,
                "\"type\"",
            ),
            (
                r#"{"t":1,"src":"10.0.0.1","dst":"10.0.0.2","proto":"icmp","type":300}"#,
                "\"type\"",
            ),
            (r#"{"t":1,"reload":5}"#, "reload"),
        ] {
            let err = parse_event(line).expect_err(line);
            assert!(err.contains(needle), "{line}: {err}");
        }
    }
}
