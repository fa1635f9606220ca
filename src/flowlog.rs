//! VPC Flow Logs in the AWS version 2 default format (SPEC §6).
//!
//! ```text
//! version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status
//! 2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK
//! ```
//!
//! [`FlowLog`] aggregates verdicts into one record per (ENI, 5-tuple, action) per interval
//! (default 60 s). Each ENI on a packet's path gets its own record: the sending ENI's action is
//! REJECT when the packet was rejected at `sg-egress` or `nacl-egress`, else ACCEPT; the
//! receiving ENI gets a record only when the packet reached `nacl-ingress`, REJECT when it was
//! rejected there or at `sg-ingress`. Exempt traffic, malformed packets and drops at
//! `conntrack-allowance` are not logged. An ENI's own IPv4 address is logged as its primary
//! private address, as AWS does.
//!
//! Records are created once per flow and interval; the per-packet work is one hash lookup.

use crate::compile::CompiledPolicy;
use crate::conntrack::Time;
use crate::firewall::{Decision, L4, Packet, Stage, Verdict};
use hashbrown::HashMap;
use std::fmt;
use std::io;
use std::net::IpAddr;

/// Default aggregation interval, seconds.
pub const DEFAULT_INTERVAL_SECS: u32 = 60;

/// One flow-log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `account-id`: the ENI's owner, or `unknown`.
    pub account_id: String,
    /// `interface-id`.
    pub interface_id: String,
    /// `srcaddr`.
    pub srcaddr: IpAddr,
    /// `dstaddr`.
    pub dstaddr: IpAddr,
    /// `srcport` (0 for ICMP and other protocols).
    pub srcport: u16,
    /// `dstport`.
    pub dstport: u16,
    /// `protocol`.
    pub protocol: u8,
    /// `packets`.
    pub packets: u64,
    /// `bytes`.
    pub bytes: u64,
    /// `start`: seconds of the first packet in the interval.
    pub start: u64,
    /// `end`: seconds of the last packet in the interval.
    pub end: u64,
    /// `ACCEPT` or `REJECT`.
    pub action: Decision,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "2 {} {} {} {} {} {} {} {} {} {} {} {} OK",
            self.account_id,
            self.interface_id,
            self.srcaddr,
            self.dstaddr,
            self.srcport,
            self.dstport,
            self.protocol,
            self.packets,
            self.bytes,
            self.start,
            self.end,
            self.action.as_str()
        )
    }
}

/// A line that is not a version 2 default-format record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// Parses one record line; `Ok(None)` for `NODATA`/`SKIPDATA` lines (fields are `-`).
pub fn parse_record(line: &str) -> Result<Option<Record>, ParseError> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 14 {
        return Err(ParseError(format!("expected 14 fields, found {}", f.len())));
    }
    if f[0] != "2" {
        return Err(ParseError(format!("version: expected 2, found {:?}", f[0])));
    }
    match f[13] {
        "OK" => {}
        "NODATA" | "SKIPDATA" => return Ok(None),
        s => {
            return Err(ParseError(format!(
                "log-status: expected OK, NODATA or SKIPDATA, found {s:?}"
            )));
        }
    }
    fn num<T: std::str::FromStr>(s: &str, name: &str) -> Result<T, ParseError> {
        s.parse()
            .map_err(|_| ParseError(format!("{name}: expected a number, found {s:?}")))
    }
    fn addr(s: &str, name: &str) -> Result<IpAddr, ParseError> {
        s.parse()
            .map_err(|_| ParseError(format!("{name}: expected an IP address, found {s:?}")))
    }
    Ok(Some(Record {
        account_id: f[1].to_owned(),
        interface_id: f[2].to_owned(),
        srcaddr: addr(f[3], "srcaddr")?,
        dstaddr: addr(f[4], "dstaddr")?,
        srcport: num(f[5], "srcport")?,
        dstport: num(f[6], "dstport")?,
        protocol: num(f[7], "protocol")?,
        packets: num(f[8], "packets")?,
        bytes: num(f[9], "bytes")?,
        start: num(f[10], "start")?,
        end: num(f[11], "end")?,
        action: match f[12] {
            "ACCEPT" => Decision::Accept,
            "REJECT" => Decision::Reject,
            s => {
                return Err(ParseError(format!(
                    "action: expected ACCEPT or REJECT, found {s:?}"
                )));
            }
        },
    }))
}

/// The aggregation key of a record: the ENI (index into the policy) and what AWS logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    eni: u32,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    proto: u8,
    accept: bool,
}

#[derive(Clone, Copy, Debug)]
struct Counts {
    packets: u64,
    bytes: u64,
    start: u64,
    end: u64,
}

/// Aggregates verdicts into flow-log records per interval.
#[derive(Debug)]
pub struct FlowLog {
    interval: u64,
    /// Index of the interval being aggregated.
    current: Option<u64>,
    order: Vec<Key>,
    counts: HashMap<Key, Counts>,
}

impl FlowLog {
    /// An aggregator with an interval of `interval_secs` (at least 1).
    pub fn new(interval_secs: u32) -> FlowLog {
        FlowLog {
            interval: u64::from(interval_secs.max(1)),
            current: None,
            order: Vec::new(),
            counts: HashMap::new(),
        }
    }

    /// Adds one judged packet. When `now` starts a new interval, the records of the previous
    /// one are written to `out` first.
    pub fn record(
        &mut self,
        policy: &CompiledPolicy,
        now: Time,
        pkt: &Packet,
        v: &Verdict,
        out: &mut impl io::Write,
    ) -> io::Result<()> {
        self.record_counted(policy, now, pkt, v, 1, u64::from(pkt.len), out)
    }

    /// Like [`record`](Self::record) for a packet that stands for `packets` wire packets of
    /// `bytes` bytes in all (a segmentation-offload super-frame judged once).
    #[allow(
        clippy::too_many_arguments,
        reason = "record's arguments plus the two counts"
    )]
    pub fn record_counted(
        &mut self,
        policy: &CompiledPolicy,
        now: Time,
        pkt: &Packet,
        v: &Verdict,
        packets: u64,
        bytes: u64,
        out: &mut impl io::Write,
    ) -> io::Result<()> {
        let secs = now.0 / 1_000_000_000;
        let interval = secs / self.interval;
        if self.current.is_some_and(|c| c != interval) {
            self.flush(policy, out)?;
        }
        self.current = Some(interval);
        if matches!(
            v.stage,
            Some(Stage::Exempt | Stage::Malformed | Stage::ConntrackAllowance)
        ) {
            return Ok(());
        }
        let (sport, dport) = match pkt.l4 {
            L4::Ports { sport, dport, .. } => (sport, dport),
            _ => (0, 0),
        };
        // A byte-match block is recorded as REJECT at the ENI where it was decided: the
        // destination (the packet arrived there) or the source (it was leaving).
        let blocked_at_source =
            v.stage == Some(Stage::Inspection) && !v.inspection.is_some_and(|m| m.at_destination);
        let rejected_at = |stages: &[Stage]| {
            v.decision == Decision::Reject && v.stage.is_some_and(|s| stages.contains(&s))
        };
        let mut add = |eni: u32, accept: bool, src: IpAddr, dst: IpAddr| {
            let key = Key {
                eni,
                src,
                dst,
                sport,
                dport,
                proto: pkt.proto,
                accept,
            };
            let c = self.counts.entry(key).or_insert_with(|| {
                self.order.push(key);
                Counts {
                    packets: 0,
                    bytes: 0,
                    start: secs,
                    end: secs,
                }
            });
            c.packets += packets;
            c.bytes += bytes;
            c.end = secs;
        };
        if let Some(e) = v.src_eni {
            let src = primary(policy, e, pkt.src);
            add(
                e,
                !rejected_at(&[Stage::SgEgress, Stage::NaclEgress]) && !blocked_at_source,
                src,
                pkt.dst,
            );
        }
        if let Some(e) = v.dst_eni {
            let reached = !rejected_at(&[Stage::SgEgress, Stage::NaclEgress, Stage::Route])
                && !blocked_at_source;
            if reached {
                let dst = primary(policy, e, pkt.dst);
                add(
                    e,
                    !rejected_at(&[Stage::NaclIngress, Stage::SgIngress, Stage::Inspection]),
                    pkt.src,
                    dst,
                );
            }
        }
        Ok(())
    }

    /// Writes every pending record to `out` (one line each) and starts empty. Call before a
    /// reload (records name ENIs of the policy they were made under) and at the end.
    pub fn flush(&mut self, policy: &CompiledPolicy, out: &mut impl io::Write) -> io::Result<()> {
        for r in self.drain(policy) {
            writeln!(out, "{r}")?;
        }
        Ok(())
    }

    /// Takes the pending records, in the order their flows were first seen.
    pub fn drain(&mut self, policy: &CompiledPolicy) -> Vec<Record> {
        let enis = &policy.policy().enis;
        let out = self
            .order
            .drain(..)
            .filter_map(|k| {
                let c = self.counts.get(&k)?;
                let eni = enis.get(k.eni as usize)?;
                Some(Record {
                    account_id: eni.owner_id.clone().unwrap_or_else(|| "unknown".to_owned()),
                    interface_id: eni.id.clone(),
                    srcaddr: k.src,
                    dstaddr: k.dst,
                    srcport: k.sport,
                    dstport: k.dport,
                    protocol: k.proto,
                    packets: c.packets,
                    bytes: c.bytes,
                    start: c.start,
                    end: c.end,
                    action: if k.accept {
                        Decision::Accept
                    } else {
                        Decision::Reject
                    },
                })
            })
            .collect();
        self.counts.clear();
        out
    }
}

/// The address AWS logs for ENI `eni`'s own side: its primary private IPv4 for IPv4 traffic.
fn primary(policy: &CompiledPolicy, eni: u32, addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => policy.policy().enis[eni as usize]
            .private_ipv4
            .first()
            .map_or(addr, |a| IpAddr::V4(*a)),
        IpAddr::V6(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_documented_records_round_trip() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/aws-examples/awsdocs_flowlogs_v2_default_records.txt"
        ))
        .expect("example records");
        let mut n = 0;
        for line in text.lines().filter(|l| l.starts_with("2 ")) {
            match parse_record(line).expect(line) {
                Some(r) => {
                    assert_eq!(
                        r.to_string(),
                        line.split_whitespace().collect::<Vec<_>>().join(" ")
                    );
                    n += 1;
                }
                None => assert!(line.ends_with("NODATA") || line.ends_with("SKIPDATA")),
            }
        }
        assert!(n >= 4, "expected several OK records, found {n}");
    }

    #[test]
    fn rejects_other_formats() {
        assert!(parse_record("3 a b").is_err());
        assert!(parse_record("2 1 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 40 1 2 MAYBE OK").is_err());
        assert!(parse_record("2 1 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 40 1 2 ACCEPT LATE").is_err());
        assert!(parse_record("2 1 eni-1 10.0.0.x 10.0.0.2 1 2 6 1 40 1 2 ACCEPT OK").is_err());
    }
}
