//! The pure parts of `vpcfw replay` and `vpcfw pcap`: what a replay counts ([`Summary`]), the
//! answer line written for each frame ([`answer_line`]) and the frame an event describes
//! ([`packet_frame`]). The command-line tool owns the files, the engine and the loop.

use crate::compile::{CompiledPolicy, RuleRef};
use crate::conntrack::Time;
use crate::firewall::{Decision, FrameError, InputError, L4, Packet, Reason, Stage, Verdict};
use crate::inspect::{Inspector, RuleId};
use crate::wire::{
    self, EthernetRepr, ExtHeader, IpRepr, Ipv4Repr, Ipv6Repr, L4Repr, MacAddr, PacketBuilder,
    TcpFlags, TcpRepr,
};
use hashbrown::HashMap;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

/// How many rules the summary lists in each "top" table.
pub const TOP_RULES: usize = 10;

/// The outcome of one frame, as [`Firewall::process_frame`](crate::firewall::Firewall::process_frame)
/// returns it.
pub type FrameOutcome = Result<(Packet, Verdict), FrameError>;

/// What a replay has seen so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Frames read from the capture.
    pub frames: u64,
    /// Captured bytes of those frames.
    pub bytes: u64,
    /// Capture time of the first frame.
    pub first: Option<Time>,
    /// Capture time of the last frame.
    pub last: Option<Time>,
    /// Frames accepted.
    pub accepted: u64,
    /// Frames rejected, by [`Stage::index`].
    pub rejected: [u64; Stage::COUNT],
    /// Frames that are not IPv4 or IPv6 (ARP, other EtherTypes): not judged.
    pub not_ip: u64,
    /// IP frames of which neither address is an ENI of the snapshot: not judged.
    pub outside_vpc: u64,
    /// Frames rejected as malformed, by reason (`truncated`, `bad-ihl`, …, and
    /// `fragment without its first fragment`).
    pub malformed: BTreeMap<&'static str, u64>,
    /// Rejections by the rule that decided them (NACL entries, blackhole routes).
    pub rejecting_rules: HashMap<RuleRef, u64>,
    /// For accepted frames: how often each security-group rule and NACL entry let them pass a
    /// step (a frame passing two steps by rules counts for both; passes by connection tracking
    /// count under [`tracked_passes`](Self::tracked_passes)).
    pub allowing_rules: HashMap<RuleRef, u64>,
    /// Security-group steps of accepted frames passed by a live connection-tracking entry.
    pub tracked_passes: u64,
    /// Rejections at the inspection stage, by the byte-match rule that blocked.
    pub inspection_blocks: HashMap<RuleId, u64>,
    /// Accepted frames that matched a `count` byte-match rule, by rule.
    pub inspection_counts: HashMap<RuleId, u64>,
}

impl Summary {
    /// Frames judged: accepted plus rejected (malformed frames are judged: rejected).
    pub fn judged(&self) -> u64 {
        self.accepted + self.rejected.iter().sum::<u64>()
    }

    /// Frames rejected at any stage.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Drops for lack of connection-tracking allowance (the AWS metric
    /// `conntrack_allowance_exceeded`).
    pub fn conntrack_allowance_exceeded(&self) -> u64 {
        self.rejected[Stage::ConntrackAllowance.index()]
    }

    /// Counts one frame of `captured` bytes, captured at `time`, and its outcome.
    pub fn add(&mut self, time: Time, captured: usize, outcome: &FrameOutcome) {
        self.frames += 1;
        self.bytes += captured as u64;
        self.first.get_or_insert(time);
        self.last = Some(time);
        let v = match outcome {
            Err(FrameError::NotIp) => {
                self.not_ip += 1;
                return;
            }
            Err(FrameError::Input(InputError::NotInVpc { .. } | InputError::MixedFamilies)) => {
                self.outside_vpc += 1;
                return;
            }
            Ok((_, v)) => v,
        };
        match (v.decision, v.stage) {
            (Decision::Accept, _) => {
                self.accepted += 1;
                if let Some(m) = v.inspection {
                    *self.inspection_counts.entry(m.rule).or_default() += 1;
                }
                for pass in [v.sg_egress, v.sg_ingress].into_iter().flatten() {
                    match pass.rule() {
                        Some(r) => *self.allowing_rules.entry(r).or_default() += 1,
                        None => self.tracked_passes += 1,
                    }
                }
                for r in [v.nacl_egress, v.nacl_ingress].into_iter().flatten() {
                    *self.allowing_rules.entry(r).or_default() += 1;
                }
            }
            (Decision::Reject, stage) => {
                let stage = stage.unwrap_or(Stage::Malformed);
                self.rejected[stage.index()] += 1;
                if let Some(r) = v.rule {
                    *self.rejecting_rules.entry(r).or_default() += 1;
                }
                if let (Stage::Inspection, Some(m)) = (stage, v.inspection) {
                    *self.inspection_blocks.entry(m.rule).or_default() += 1;
                }
                match v.reason {
                    Reason::Malformed(e) => *self.malformed.entry(e.as_str()).or_default() += 1,
                    Reason::FragmentWithoutFirst => {
                        *self.malformed.entry(v.reason.as_str()).or_default() += 1;
                    }
                    _ => {}
                }
            }
        }
    }

    /// The `n` most frequent rules of `counts` and `inspection` (byte-match rules, named by
    /// `inspector`), named, most frequent first (ties by name).
    fn top(
        policy: &CompiledPolicy,
        inspector: Option<&Inspector>,
        counts: &HashMap<RuleRef, u64>,
        inspection: &HashMap<RuleId, u64>,
        n: usize,
    ) -> Vec<(String, u64)> {
        let byte_match = |r: RuleId| {
            inspector.map_or_else(
                || format!("byte-match rule {}", r.0),
                |i| i.rule_name(r).into(),
            )
        };
        let mut v: Vec<(String, u64)> = counts
            .iter()
            .map(|(r, c)| (policy.rule_name(*r), *c))
            .chain(inspection.iter().map(|(r, c)| (byte_match(*r), *c)))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// The summary as JSON. Every stage is listed under `rejected` (zeros included); rules are
    /// named as in `vpcfw eval` answers.
    pub fn to_json(&self, policy: &CompiledPolicy) -> Value {
        self.to_json_with(policy, None)
    }

    /// [`to_json`](Self::to_json) naming byte-match rules by `inspector`; byte-match `block`
    /// rules are among `top_rejecting_rules`, `count` rules under `top_counting_byte_match_rules`.
    pub fn to_json_with(&self, policy: &CompiledPolicy, inspector: Option<&Inspector>) -> Value {
        let mut rejected = Map::new();
        rejected.insert("total".into(), json!(self.rejected_total()));
        for s in Stage::ALL {
            rejected.insert(s.as_str().into(), json!(self.rejected[s.index()]));
        }
        let none = HashMap::new();
        let rules = |counts, inspection| {
            Summary::top(policy, inspector, counts, inspection, TOP_RULES)
                .into_iter()
                .map(|(rule, packets)| json!({"rule": rule, "packets": packets}))
                .collect::<Vec<_>>()
        };
        let secs = |t: Option<Time>| t.map(|t| t.as_secs_f64());
        json!({
            "frames": self.frames,
            "bytes": self.bytes,
            "first_time": secs(self.first),
            "last_time": secs(self.last),
            "judged": self.judged(),
            "accepted": self.accepted,
            "rejected": rejected,
            "not_ip": self.not_ip,
            "outside_vpc": self.outside_vpc,
            "malformed": self.malformed,
            "conntrack_allowance_exceeded": self.conntrack_allowance_exceeded(),
            "top_rejecting_rules": rules(&self.rejecting_rules, &self.inspection_blocks),
            "top_allowing_rules": rules(&self.allowing_rules, &none),
            "top_counting_byte_match_rules": rules(&HashMap::new(), &self.inspection_counts),
            "tracked_passes": self.tracked_passes,
        })
    }

    /// The summary as text, one fact a line.
    pub fn render_text(&self, policy: &CompiledPolicy) -> String {
        self.render_text_with(policy, None)
    }

    /// [`render_text`](Self::render_text) naming byte-match rules by `inspector`.
    pub fn render_text_with(
        &self,
        policy: &CompiledPolicy,
        inspector: Option<&Inspector>,
    ) -> String {
        let mut s = String::new();
        let mut line = |label: &str, n: u64| {
            let _ = writeln!(s, "{label:<30}{n:>10}");
        };
        line("frames read", self.frames);
        line("judged", self.judged());
        line("  accepted", self.accepted);
        line("  rejected", self.rejected_total());
        for st in Stage::ALL {
            let n = self.rejected[st.index()];
            if n > 0 {
                line(&format!("    {st}"), n);
            }
            if st == Stage::Malformed {
                for (reason, n) in &self.malformed {
                    line(&format!("      {reason}"), *n);
                }
            }
        }
        line("not IP", self.not_ip);
        line("outside the VPC", self.outside_vpc);
        line(
            "conntrack_allowance_exceeded",
            self.conntrack_allowance_exceeded(),
        );
        line("passed by conntrack (SG steps)", self.tracked_passes);
        if let (Some(a), Some(b)) = (self.first, self.last) {
            let _ = writeln!(
                s,
                "captured bytes {} over {:.3} s",
                self.bytes,
                b.0.saturating_sub(a.0) as f64 / 1e9
            );
        }
        let (none, no_rules) = (HashMap::new(), HashMap::new());
        for (title, counts, inspection) in [
            (
                "rules that rejected most",
                &self.rejecting_rules,
                &self.inspection_blocks,
            ),
            ("rules that allowed most", &self.allowing_rules, &none),
            ("byte-match count rules", &no_rules, &self.inspection_counts),
        ] {
            let top = Summary::top(policy, inspector, counts, inspection, TOP_RULES);
            if !top.is_empty() {
                let _ = writeln!(s, "{title}:");
                for (rule, n) in top {
                    let _ = writeln!(s, "  {n:>8}  {rule}");
                }
            }
        }
        s
    }
}

/// The `--verdicts` line for frame number `frame` (from 1): the `vpcfw eval` answer (SPEC §7)
/// for a judged frame, `{"error": "frame N: ..."}` for one that is not judged.
///
/// `inspector` names the byte-match rules (the one the engine ran, if any).
pub fn answer_line(
    policy: &CompiledPolicy,
    inspector: Option<&crate::inspect::Inspector>,
    frame: u64,
    outcome: &FrameOutcome,
) -> Value {
    match outcome {
        Ok((_, v)) => crate::events::answer_with(policy, inspector, v, false),
        Err(e) => json!({"error": format!("frame {frame}: {e}")}),
    }
}

const SRC_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const DST_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);

/// The Ethernet frame a described packet stands for (as `vpcfw pcap` writes it): TCP with its
/// flags, UDP, ICMP/ICMPv6 with type, code and identifier, or any other protocol with no
/// upper-layer header. `len`, when it exceeds the headers, is the IP datagram's length (the
/// rest is zero payload), so that flow-log byte counts agree with `vpcfw eval`'s. Fragments
/// (the `frag` extension of the event format) become IPv4 fragments or IPv6 Fragment headers;
/// their offset must be a multiple of 8.
pub fn packet_frame(p: &Packet) -> Result<Vec<u8>, String> {
    packet_frame_with(p, None, &[])
}

/// [`packet_frame`] with a transport payload (for the inspection stage) and, for TCP, the
/// sequence number (`None`: 1). A non-empty `payload` is the frame's payload as given (`len`
/// is then ignored).
pub fn packet_frame_with(p: &Packet, seq: Option<u32>, payload: &[u8]) -> Result<Vec<u8>, String> {
    let frag = p.fragment;
    if let Some(f) = frag
        && !f.offset.is_multiple_of(8)
    {
        return Err(format!(
            "fragment offset {} is not a multiple of 8 bytes",
            f.offset
        ));
    }
    let non_first = frag.is_some_and(|f| f.offset > 0);
    let l4 = match p.l4 {
        _ if non_first => L4Repr::Raw { protocol: p.proto },
        L4::Ports {
            sport,
            dport,
            flags,
        } if p.proto == 6 => {
            let mut tcp = TcpRepr::new(sport, dport, TcpFlags(flags.0));
            if let Some(seq) = seq {
                tcp.seq = seq;
            }
            L4Repr::Tcp(tcp)
        }
        L4::Ports { sport, dport, .. } => L4Repr::Udp {
            src_port: sport,
            dst_port: dport,
        },
        L4::Icmp {
            icmp_type,
            code,
            id,
        } => {
            if (p.proto == 1) != p.src.is_ipv4() {
                return Err(format!(
                    "protocol {} over {}: use icmp for IPv4 and icmpv6 for IPv6",
                    p.proto,
                    if p.src.is_ipv4() { "IPv4" } else { "IPv6" }
                ));
            }
            L4Repr::Icmp {
                ty: icmp_type,
                code,
                ident: id,
                seq: 0,
            }
        }
        L4::None => L4Repr::Raw { protocol: p.proto },
    };
    let mut frag_header = [ExtHeader::Fragment {
        offset: 0,
        more: false,
        ident: 0,
    }];
    let ip = match (p.src, p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = Ipv4Repr::new(s.into(), d.into());
            if let Some(f) = frag {
                ip.ident = u16::try_from(f.id)
                    .map_err(|_| format!("IPv4 fragment id {} is above 65535", f.id))?;
                ip.frag_offset = (f.offset / 8) as u16;
                ip.more_fragments = f.more;
            }
            IpRepr::V4(ip)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ip = Ipv6Repr::new(s.into(), d.into());
            if let Some(f) = frag {
                frag_header[0] = ExtHeader::Fragment {
                    offset: (f.offset / 8) as u16,
                    more: f.more,
                    ident: f.id,
                };
                ip.ext_headers = &frag_header;
            }
            IpRepr::V6(ip)
        }
        _ => return Err("source and destination are of different IP families".into()),
    };
    let mut builder = PacketBuilder {
        ethernet: Some(EthernetRepr {
            src: SRC_MAC,
            dst: DST_MAC,
            vlan_id: None,
        }),
        ip,
        l4,
        payload: &[],
    };
    // ICMP timestamp messages carry three timestamps after the 8-byte header.
    let min_payload = match l4 {
        L4Repr::Icmp { ty: 13 | 14, .. } if p.proto == 1 => 12,
        _ => 0,
    };
    let headers = builder.len().map_err(|e| e.to_string())? - 14;
    let padding;
    builder.payload = if payload.is_empty() {
        padding = vec![0u8; (p.len as usize).saturating_sub(headers).max(min_payload)];
        &padding
    } else {
        payload
    };
    builder
        .to_vec()
        .map_err(|e: wire::Error| format!("cannot build the frame: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::TcpFlags as Flags;
    use crate::firewall::Fragment;

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Every kind of packet survives the trip to a frame and back through the parser.
    #[test]
    fn frames_parse_back_to_their_packets() {
        let (a, b) = (addr("10.0.1.10"), addr("10.0.2.20"));
        let (a6, b6) = (addr("2001:db8::1"), addr("2001:db8::2"));
        let mut cases = vec![
            Packet::tcp(a, b, 40000, 443, Flags(Flags::SYN | Flags::ECE)),
            Packet::udp(a, b, 5353, 53),
            Packet::icmp(a, b, 8, 0, 7),
            Packet::icmp(a, b, 3, 4, 0),
            Packet::icmp(a, b, 13, 0, 9),
            Packet::other(a, b, 47),
            Packet::tcp(a6, b6, 1, 2, Flags(Flags::ACK | Flags::PSH)),
            Packet::icmp(a6, b6, 128, 0, 3),
            Packet::other(a6, b6, 50),
        ];
        let mut sized = Packet::tcp(a, b, 40000, 443, Flags(Flags::ACK));
        sized.len = 1500;
        cases.push(sized);
        let mut first = Packet::udp(a, b, 1, 2);
        first.fragment = Some(Fragment {
            id: 77,
            offset: 0,
            more: true,
        });
        first.len = 100;
        cases.push(first);
        let mut rest = Packet::other(a6, b6, 17);
        rest.fragment = Some(Fragment {
            id: 70_000,
            offset: 1448,
            more: false,
        });
        cases.push(rest);
        for p in cases {
            let frame = packet_frame(&p).unwrap();
            let got = Packet::from_meta(&wire::parse(&frame).unwrap());
            assert_eq!(got.l4, p.l4, "{p:?}");
            assert_eq!(
                (got.src, got.dst, got.proto, got.fragment),
                (p.src, p.dst, p.proto, p.fragment)
            );
            if p.len > 0 {
                assert_eq!(got.len, p.len, "{p:?}");
            }
        }
    }

    #[test]
    fn impossible_packets_are_errors() {
        let (a, b) = (addr("10.0.1.10"), addr("10.0.2.20"));
        let mut p = Packet::icmp(a, b, 8, 0, 1);
        p.proto = 58;
        assert!(packet_frame(&p).unwrap_err().contains("icmpv6"));
        let mut p = Packet::other(a, b, 47);
        p.fragment = Some(Fragment {
            id: 1,
            offset: 12,
            more: false,
        });
        assert!(packet_frame(&p).unwrap_err().contains("multiple of 8"));
        p.fragment = Some(Fragment {
            id: 70_000,
            offset: 8,
            more: false,
        });
        assert!(packet_frame(&p).unwrap_err().contains("65535"));
        p.fragment = None;
        p.len = 70_000;
        assert!(packet_frame(&p).is_err());
    }
}
