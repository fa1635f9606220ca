//! The engine: the path of a packet through a VPC (SPEC §3), with per-ENI connection
//! tracking (SPEC §4), fragments (SPEC §5) and hot reload.
//!
//! [`Firewall::process`] takes the time as a parameter and a described [`Packet`], and
//! returns a [`Verdict`] naming the stage and the rule that decided. Nothing here reads a
//! clock, spawns a thread or performs I/O.

use crate::compile::{CompiledEni, CompiledPolicy, RuleRef, SgFamily, SgSide};
use crate::conntrack::{Direction, Entry, FlowKey, TcpFlags, Time, Tracking};
use crate::matcher::{Addr, Key};
use crate::policy::Action;
use crate::wire;
use hashbrown::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// How long the verdict of a first fragment is kept for the fragments that follow (SPEC §5).
pub const FRAGMENT_WINDOW_SECS: u32 = 60;
/// At most this many first-fragment verdicts are remembered; beyond it, new ones are not
/// recorded (their later fragments are rejected) until old ones expire.
pub const MAX_FRAGMENT_RECORDS: usize = 65_536;

/// The layer-4 part of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP or UDP ports (UDP: `flags` is empty).
    Ports {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// TCP flags.
        flags: TcpFlags,
    },
    /// ICMP or ICMPv6.
    Icmp {
        /// Type.
        icmp_type: u8,
        /// Code.
        code: u8,
        /// Query identifier (echo/timestamp), 0 otherwise.
        id: u16,
    },
    /// No transport header the engine reads (other protocols, non-first fragments).
    None,
}

/// IP fragmentation of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fragment {
    /// IP identification (16 bits for IPv4, 32 for IPv6).
    pub id: u32,
    /// Fragment offset in bytes (0 for the first fragment).
    pub offset: u32,
    /// More fragments follow.
    pub more: bool,
}

/// What the engine needs of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address (same family as `src`).
    pub dst: IpAddr,
    /// IP protocol of the upper layer.
    pub proto: u8,
    /// Ports or ICMP fields.
    pub l4: L4,
    /// Length in bytes (for flow logs and counters).
    pub len: u32,
    /// Fragmentation, when the packet is a fragment.
    pub fragment: Option<Fragment>,
}

impl Packet {
    /// A TCP packet.
    pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: TcpFlags) -> Packet {
        Packet {
            src,
            dst,
            proto: 6,
            l4: L4::Ports {
                sport,
                dport,
                flags,
            },
            len: 0,
            fragment: None,
        }
    }
    /// A UDP packet.
    pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Packet {
        Packet {
            src,
            dst,
            proto: 17,
            l4: L4::Ports {
                sport,
                dport,
                flags: TcpFlags(0),
            },
            len: 0,
            fragment: None,
        }
    }
    /// An ICMP (IPv4) or ICMPv6 (IPv6) packet, by the family of `src`.
    pub fn icmp(src: IpAddr, dst: IpAddr, icmp_type: u8, code: u8, id: u16) -> Packet {
        let proto = if src.is_ipv4() { 1 } else { 58 };
        Packet {
            src,
            dst,
            proto,
            l4: L4::Icmp {
                icmp_type,
                code,
                id,
            },
            len: 0,
            fragment: None,
        }
    }
    /// A packet of any other protocol.
    pub fn other(src: IpAddr, dst: IpAddr, proto: u8) -> Packet {
        Packet {
            src,
            dst,
            proto,
            l4: L4::None,
            len: 0,
            fragment: None,
        }
    }

    fn ports(&self) -> (u16, u16) {
        match self.l4 {
            L4::Ports { sport, dport, .. } => (sport, dport),
            L4::Icmp {
                icmp_type, code, ..
            } => (u16::from(icmp_type), u16::from(code)),
            L4::None => (0, 0),
        }
    }

    fn flags(&self) -> TcpFlags {
        match self.l4 {
            L4::Ports { flags, .. } if self.proto == 6 => flags,
            _ => TcpFlags(0),
        }
    }
}

/// ACCEPT or REJECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// The packet is delivered.
    Accept,
    /// The packet is dropped.
    Reject,
}

impl Decision {
    /// `"ACCEPT"` or `"REJECT"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Accept => "ACCEPT",
            Decision::Reject => "REJECT",
        }
    }
}

/// The step of SPEC §3 that decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// A never-filtered address (metadata, DNS, time sync).
    Exempt,
    /// The source ENI's security groups.
    SgEgress,
    /// The source subnet's NACL, outbound.
    NaclEgress,
    /// The source subnet's route table.
    Route,
    /// The destination subnet's NACL, inbound.
    NaclIngress,
    /// The destination ENI's security groups.
    SgIngress,
    /// The instance's connection-tracking allowance is exhausted.
    ConntrackAllowance,
    /// The packet is malformed (or a fragment without its first fragment).
    Malformed,
}

impl Stage {
    /// Every stage, in the order of [`Stage::index`].
    pub const ALL: [Stage; 8] = [
        Stage::Exempt,
        Stage::SgEgress,
        Stage::NaclEgress,
        Stage::Route,
        Stage::NaclIngress,
        Stage::SgIngress,
        Stage::ConntrackAllowance,
        Stage::Malformed,
    ];
    /// The SPEC §7 name: `exempt`, `sg-egress`, `nacl-egress`, `route`, `nacl-ingress`,
    /// `sg-ingress`, `conntrack-allowance`, `malformed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Exempt => "exempt",
            Stage::SgEgress => "sg-egress",
            Stage::NaclEgress => "nacl-egress",
            Stage::Route => "route",
            Stage::NaclIngress => "nacl-ingress",
            Stage::SgIngress => "sg-ingress",
            Stage::ConntrackAllowance => "conntrack-allowance",
            Stage::Malformed => "malformed",
        }
    }
    /// Position in [`Stage::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a packet was rejected (or, for accepts, `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not rejected.
    None,
    /// No security-group rule allows it and no live entry admits it.
    NoSgRule,
    /// A NACL entry denies it.
    NaclDeny,
    /// The subnet has no NACL (no association and no default NACL).
    NoNacl,
    /// The matching route is a blackhole.
    Blackhole,
    /// No route matches the destination.
    NoRoute,
    /// The subnet has no route table.
    NoRouteTable,
    /// The connection-tracking allowance is exhausted.
    Allowance,
    /// A non-first fragment whose first fragment was not seen within the window.
    FragmentWithoutFirst,
    /// The frame's headers are truncated or inconsistent.
    Malformed(wire::Error),
}

impl Reason {
    /// A short human explanation.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::None => "",
            Reason::NoSgRule => "no security group rule allows it",
            Reason::NaclDeny => "denied by a network ACL entry",
            Reason::NoNacl => "the subnet has no network ACL",
            Reason::Blackhole => "the route is a blackhole",
            Reason::NoRoute => "no route to the destination",
            Reason::NoRouteTable => "the subnet has no route table",
            Reason::Allowance => "connection tracking allowance exceeded",
            Reason::FragmentWithoutFirst => "fragment without its first fragment",
            Reason::Malformed(e) => e.as_str(),
        }
    }
}

/// How a security-group step let a packet through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SgPass {
    /// A live connection-tracking entry admitted it.
    Tracked,
    /// Untracked flow (literal `/0` rules both ways): judged by the rules, no entry.
    Untracked(RuleRef),
    /// A rule allowed it and it created an entry.
    NewEntry(RuleRef),
    /// A rule allowed it; it creates no entry (TCP RST, ICMP reply or error).
    Rule(RuleRef),
}

impl SgPass {
    /// The rule that allowed it, if a rule did.
    pub fn rule(self) -> Option<RuleRef> {
        match self {
            SgPass::Tracked => None,
            SgPass::Untracked(r) | SgPass::NewEntry(r) | SgPass::Rule(r) => Some(r),
        }
    }
    /// Whether the flow is tracked at this ENI.
    pub fn tracked(self) -> bool {
        !matches!(self, SgPass::Untracked(_))
    }
}

/// The engine's answer for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Verdict {
    /// ACCEPT or REJECT.
    pub decision: Decision,
    /// The deciding stage; `None` for an ACCEPT that crossed every step.
    pub stage: Option<Stage>,
    /// The deciding rule (a NACL entry, a route), when one decided.
    pub rule: Option<RuleRef>,
    /// Why it was rejected.
    pub reason: Reason,
    /// The source ENI (index into `Policy::enis`).
    pub src_eni: Option<u32>,
    /// The destination ENI.
    pub dst_eni: Option<u32>,
    /// How the source ENI's security groups passed it, if they did.
    pub sg_egress: Option<SgPass>,
    /// The NACL entry that allowed it out of the source subnet, if that step ran and passed.
    pub nacl_egress: Option<RuleRef>,
    /// The route it took, if the route step ran and passed.
    pub route: Option<RuleRef>,
    /// The NACL entry that allowed it into the destination subnet.
    pub nacl_ingress: Option<RuleRef>,
    /// How the destination ENI's security groups passed it, if they did.
    pub sg_ingress: Option<SgPass>,
}

impl Verdict {
    fn accept(stage: Option<Stage>, src_eni: Option<u32>, dst_eni: Option<u32>) -> Verdict {
        Verdict {
            decision: Decision::Accept,
            stage,
            rule: None,
            reason: Reason::None,
            src_eni,
            dst_eni,
            sg_egress: None,
            nacl_egress: None,
            route: None,
            nacl_ingress: None,
            sg_ingress: None,
        }
    }
}

impl Packet {
    /// The packet a parsed frame describes. `len` is the IP datagram's length; fragments carry
    /// their offset in bytes. IPv6 fragments are keyed without the protocol (a non-first
    /// fragment's next header need not be the upper layer's).
    pub fn from_meta(m: &wire::PacketMeta) -> Packet {
        let l4 = match m.transport {
            wire::Transport::Tcp {
                src_port,
                dst_port,
                flags,
                ..
            } => L4::Ports {
                sport: src_port,
                dport: dst_port,
                flags: TcpFlags(flags.0),
            },
            wire::Transport::Udp { src_port, dst_port } => L4::Ports {
                sport: src_port,
                dport: dst_port,
                flags: TcpFlags(0),
            },
            wire::Transport::Icmp { ty, code, ident } => L4::Icmp {
                icmp_type: ty,
                code,
                id: ident.unwrap_or(0),
            },
            wire::Transport::None => L4::None,
        };
        let f = m.fragment;
        Packet {
            src: m.src_ip(),
            dst: m.dst_ip(),
            proto: m.protocol,
            l4,
            len: m.ip_total_len() as u32,
            fragment: f.is_fragment().then_some(Fragment {
                id: f.ident,
                offset: u32::from(f.offset) * 8,
                more: f.more,
            }),
        }
    }
}

/// A frame the engine does not judge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Not an IP packet (ARP, another EtherType): nothing for the firewall to decide.
    NotIp,
    /// An IP packet the engine cannot place (see [`InputError`]).
    Input(InputError),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::NotIp => f.write_str("not an IPv4 or IPv6 packet"),
            FrameError::Input(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for FrameError {}

/// A packet the engine cannot judge at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputError {
    /// Neither address belongs to an ENI of the snapshot.
    NotInVpc {
        /// Source.
        src: IpAddr,
        /// Destination.
        dst: IpAddr,
    },
    /// Source and destination are of different IP families.
    MixedFamilies,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::NotInVpc { src, dst } => write!(
                f,
                "neither {src} nor {dst} is an address of a network interface in the snapshot"
            ),
            InputError::MixedFamilies => {
                f.write_str("source and destination are of different IP families")
            }
        }
    }
}

impl std::error::Error for InputError {}

/// Counters, readable at any time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets judged.
    pub packets: u64,
    /// Packets accepted.
    pub accepted: u64,
    /// Packets rejected, by [`Stage::index`].
    pub rejected: [u64; 8],
    /// Packets dropped because the allowance was exhausted (the AWS metric name).
    pub conntrack_allowance_exceeded: u64,
}

/// One tracked flow, as reported by [`Firewall::entries`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowInfo {
    /// The key.
    pub key: FlowKey,
    /// The entry.
    pub entry: Entry,
}

/// Per-ENI connection-tracking zones, stable across reloads (by ENI id).
#[derive(Clone, Debug, Default)]
struct Zones {
    by_id: std::collections::HashMap<String, u32>,
    /// zone → ENI index in the current policy (`None` once the ENI is gone).
    current: Vec<Option<u32>>,
    /// ENI index in the current policy → zone.
    of_eni: Vec<u32>,
}

impl Zones {
    fn assign(&mut self, policy: &CompiledPolicy) {
        self.current.iter_mut().for_each(|c| *c = None);
        self.of_eni.clear();
        for (i, eni) in policy.policy().enis.iter().enumerate() {
            let next = self.by_id.len() as u32;
            let zone = *self.by_id.entry(eni.id.clone()).or_insert(next);
            if zone as usize >= self.current.len() {
                self.current.resize(zone as usize + 1, None);
            }
            self.current[zone as usize] = Some(i as u32);
            self.of_eni.push(zone);
        }
    }
}

/// (source, destination, protocol — 0 for IPv6, identification).
type FragKey = (IpAddr, IpAddr, u8, u32);

/// The mutable part of the engine.
#[derive(Clone, Debug, Default)]
struct State {
    flows: HashMap<FlowKey, Entry>,
    zones: Zones,
    /// Entries held per allowance group (instance) of the current policy.
    held: Vec<u32>,
    fragments: HashMap<FragKey, (Time, Verdict)>,
    stats: Stats,
}

/// The firewall engine: a compiled policy plus connection-tracking state.
#[derive(Clone, Debug)]
pub struct Firewall {
    policy: Arc<CompiledPolicy>,
    allowance: Option<u32>,
    state: State,
}

/// The family-specific matcher key of a packet.
#[derive(Clone, Copy, Debug)]
enum FamKey {
    V4(Key<u32>),
    V6(Key<u128>),
}

impl FamKey {
    fn of(p: &Packet) -> Option<FamKey> {
        let (sport, dport) = p.ports();
        match (p.src, p.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Some(FamKey::V4(Key {
                src: u32::from(s),
                dst: u32::from(d),
                sport,
                dport,
                proto: p.proto,
            })),
            (IpAddr::V6(s), IpAddr::V6(d)) => Some(FamKey::V6(Key {
                src: u128::from(s),
                dst: u128::from(d),
                sport,
                dport,
                proto: p.proto,
            })),
            _ => None,
        }
    }

    fn reversed(self) -> FamKey {
        fn rev<A: Addr>(k: Key<A>) -> Key<A> {
            Key {
                src: k.dst,
                dst: k.src,
                sport: k.dport,
                dport: k.sport,
                proto: k.proto,
            }
        }
        match self {
            FamKey::V4(k) => FamKey::V4(rev(k)),
            FamKey::V6(k) => FamKey::V6(rev(k)),
        }
    }
}

impl SgSide {
    fn first_match(&self, k: &FamKey) -> Option<RuleRef> {
        fn go<A: Addr>(f: &SgFamily<A>, k: &Key<A>) -> Option<RuleRef> {
            f.all
                .matcher
                .first_match(k)
                .map(|i| f.all.origin[i as usize])
        }
        match k {
            FamKey::V4(k) => go(&self.v4, k),
            FamKey::V6(k) => go(&self.v6, k),
        }
    }
    fn zero_allows(&self, k: &FamKey) -> bool {
        match k {
            FamKey::V4(k) => self.v4.zero.is_match(k),
            FamKey::V6(k) => self.v6.zero.is_match(k),
        }
    }
    fn zero_all_ports(&self, k: &FamKey) -> bool {
        let (flags, proto) = match k {
            FamKey::V4(k) => (self.v4.zero_all_ports, k.proto),
            FamKey::V6(k) => (self.v6.zero_all_ports, k.proto),
        };
        match proto {
            6 => flags[0],
            17 => flags[1],
            _ => false,
        }
    }
}

/// Whether a TCP/UDP packet without a live entry is untracked at this ENI (SPEC §4): it could
/// be the request of an untracked flow, or the response of one.
fn untracked(eni: &CompiledEni, dir: Direction, key: &FamKey) -> bool {
    let own = &eni.sg[dir as usize];
    let opposite = &eni.sg[dir.reverse() as usize];
    (own.zero_allows(key) && opposite.zero_all_ports(key))
        || (opposite.zero_allows(&key.reversed()) && own.zero_all_ports(key))
}

impl Firewall {
    /// An engine over `policy`; `allowance` caps live tracked entries per instance.
    pub fn new(policy: CompiledPolicy, allowance: Option<u32>) -> Firewall {
        let mut fw = Firewall {
            policy: Arc::new(policy),
            allowance,
            state: State::default(),
        };
        fw.state.zones.assign(&fw.policy);
        fw.state.held = vec![0; fw.policy.instances as usize];
        fw
    }

    /// The current compiled policy.
    pub fn policy(&self) -> &CompiledPolicy {
        &self.policy
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.state.stats
    }

    /// Replaces the policy for the next packet. Live tracked entries survive (and keep
    /// admitting their flows); entries of ENIs that no longer exist are dropped.
    pub fn reload(&mut self, policy: CompiledPolicy) {
        self.policy = Arc::new(policy);
        let st = &mut self.state;
        st.zones.assign(&self.policy);
        let zones = &st.zones;
        st.flows.retain(|k, _| {
            zones
                .current
                .get(k.zone as usize)
                .copied()
                .flatten()
                .is_some()
        });
        st.held = vec![0; self.policy.instances as usize];
        for k in st.flows.keys() {
            if let Some(eni) = zones.current[k.zone as usize] {
                st.held[self.policy.enis[eni as usize].instance as usize] += 1;
            }
        }
        // Fragment verdicts name rules of the old policy; later fragments are judged afresh.
        st.fragments.clear();
    }

    /// Live tracked entries at `now`, for inspection and tests.
    pub fn entries(&self, now: Time) -> Vec<FlowInfo> {
        let p = &self.policy;
        let mut out: Vec<FlowInfo> = self
            .state
            .flows
            .iter()
            .filter(|(k, e)| {
                self.state.zones.current[k.zone as usize]
                    .is_some_and(|i| e.is_alive(now, &p.enis[i as usize].timeouts))
            })
            .map(|(k, e)| FlowInfo { key: *k, entry: *e })
            .collect();
        out.sort_by_key(|f| (f.key.zone, f.entry.last_seen));
        out
    }

    /// The id of the ENI that owns connection-tracking zone `zone`, if it still exists.
    pub fn zone_eni(&self, zone: u32) -> Option<&str> {
        let i = self
            .state
            .zones
            .current
            .get(zone as usize)
            .copied()
            .flatten()?;
        Some(&self.policy.policy().enis[i as usize].id)
    }

    /// Judges one Ethernet frame at time `now`. A truncated or inconsistent frame is rejected
    /// with stage `malformed` and counted (SPEC §5); it never creates state.
    pub fn process_frame(
        &mut self,
        now: Time,
        frame: &[u8],
    ) -> Result<(Packet, Verdict), FrameError> {
        match wire::parse(frame) {
            Ok(meta) => {
                let pkt = Packet::from_meta(&meta);
                self.process(now, &pkt)
                    .map(|v| (pkt, v))
                    .map_err(FrameError::Input)
            }
            Err(wire::Error::UnsupportedEtherType) => Err(FrameError::NotIp),
            Err(e) => {
                let v = Verdict {
                    decision: Decision::Reject,
                    stage: Some(Stage::Malformed),
                    reason: Reason::Malformed(e),
                    ..Verdict::accept(None, None, None)
                };
                self.state.stats.packets += 1;
                count(&mut self.state.stats, &v);
                let unknown = std::net::Ipv4Addr::UNSPECIFIED.into();
                Ok((
                    Packet {
                        src: unknown,
                        dst: unknown,
                        proto: 0,
                        l4: L4::None,
                        len: frame.len() as u32,
                        fragment: None,
                    },
                    v,
                ))
            }
        }
    }

    /// Judges one packet at time `now` (SPEC §3–§5).
    pub fn process(&mut self, now: Time, pkt: &Packet) -> Result<Verdict, InputError> {
        let p = &*self.policy;
        let key = FamKey::of(pkt).ok_or(InputError::MixedFamilies)?;
        let src_eni = p.eni_of(pkt.src);
        let dst_eni = p.eni_of(pkt.dst);
        if src_eni.is_none() && dst_eni.is_none() {
            return Err(InputError::NotInVpc {
                src: pkt.src,
                dst: pkt.dst,
            });
        }
        let st = &mut self.state;
        st.stats.packets += 1;

        // SPEC §3 step 1: exempt addresses are never filtered, fragments included.
        if p.is_exempt(pkt.src) || p.is_exempt(pkt.dst) {
            let v = Verdict::accept(Some(Stage::Exempt), src_eni, dst_eni);
            count(&mut st.stats, &v);
            return Ok(v);
        }

        // SPEC §5: a non-first fragment takes its first fragment's verdict.
        let frag_key = pkt.fragment.map(|f| {
            (
                pkt.src,
                pkt.dst,
                if pkt.src.is_ipv6() { 0 } else { pkt.proto },
                f.id,
            )
        });
        if let (Some(f), Some(fk)) = (pkt.fragment, frag_key)
            && f.offset > 0
        {
            let v = match st.fragments.get(&fk) {
                Some(&(seen, v)) if now < seen.plus_secs(FRAGMENT_WINDOW_SECS) => v,
                _ => Verdict {
                    decision: Decision::Reject,
                    stage: Some(Stage::Malformed),
                    reason: Reason::FragmentWithoutFirst,
                    ..Verdict::accept(None, src_eni, dst_eni)
                },
            };
            count(&mut st.stats, &v);
            return Ok(v);
        }

        let v = judge(p, self.allowance, st, now, pkt, &key, src_eni, dst_eni);
        count(&mut st.stats, &v);
        if let (Some(f), Some(fk)) = (pkt.fragment, frag_key)
            && f.more
        {
            if st.fragments.len() >= MAX_FRAGMENT_RECORDS {
                st.fragments
                    .retain(|_, (seen, _)| now < seen.plus_secs(FRAGMENT_WINDOW_SECS));
            }
            if st.fragments.len() < MAX_FRAGMENT_RECORDS {
                st.fragments.insert(fk, (now, v));
            }
        }
        Ok(v)
    }
}

fn count(stats: &mut Stats, v: &Verdict) {
    match (v.decision, v.stage) {
        (Decision::Accept, _) => stats.accepted += 1,
        (Decision::Reject, Some(s)) => stats.rejected[s.index()] += 1,
        (Decision::Reject, None) => {}
    }
}

fn reject(stage: Stage, rule: Option<RuleRef>, reason: Reason, base: Verdict) -> Verdict {
    Verdict {
        decision: Decision::Reject,
        stage: Some(stage),
        rule,
        reason,
        ..base
    }
}

/// SPEC §3, steps 2–6.
#[allow(clippy::too_many_arguments)]
fn judge(
    p: &CompiledPolicy,
    allowance: Option<u32>,
    st: &mut State,
    now: Time,
    pkt: &Packet,
    key: &FamKey,
    src_eni: Option<u32>,
    dst_eni: Option<u32>,
) -> Verdict {
    // 1. exempt: handled by the caller.
    let mut v = Verdict::accept(None, src_eni, dst_eni);
    let subnet = |eni: Option<u32>| eni.map(|e| p.enis[e as usize].subnet);
    let (src_subnet, dst_subnet) = (subnet(src_eni), subnet(dst_eni));
    let same_subnet = src_subnet.is_some() && src_subnet == dst_subnet;

    // 2. sg-egress
    if let Some(e) = src_eni {
        match sg_step(p, allowance, st, now, e, Direction::Egress, pkt, key) {
            Ok(pass) => v.sg_egress = Some(pass),
            Err((stage, reason)) => return reject(stage, None, reason, v),
        }
    }
    // 3. nacl-egress
    if let (Some(s), false) = (src_subnet, same_subnet) {
        match nacl_step(p, s, Direction::Egress, key) {
            Ok(rule) => v.nacl_egress = Some(rule),
            Err((rule, reason)) => return reject(Stage::NaclEgress, rule, reason, v),
        }
    }
    // 4. route
    if let Some(s) = src_subnet {
        let Some(table) = p.subnets[s as usize].route_table else {
            return reject(Stage::Route, None, Reason::NoRouteTable, v);
        };
        let routes = &p.routes[table as usize];
        let hit = match key {
            FamKey::V4(k) => routes
                .v4
                .iter()
                .find(|(pfx, _)| pfx.contains(k.dst))
                .map(|r| r.1),
            FamKey::V6(k) => routes
                .v6
                .iter()
                .find(|(pfx, _)| pfx.contains(k.dst))
                .map(|r| r.1),
        };
        let Some(route) = hit else {
            return reject(Stage::Route, None, Reason::NoRoute, v);
        };
        if p.policy().route_tables[table as usize].routes[route as usize].blackhole {
            return reject(
                Stage::Route,
                Some(RuleRef::Route { table, route }),
                Reason::Blackhole,
                v,
            );
        }
        v.route = Some(RuleRef::Route { table, route });
        if dst_eni.is_none() {
            return v;
        }
    }
    // 5. nacl-ingress
    if let (Some(s), false) = (dst_subnet, same_subnet) {
        match nacl_step(p, s, Direction::Ingress, key) {
            Ok(rule) => v.nacl_ingress = Some(rule),
            Err((rule, reason)) => return reject(Stage::NaclIngress, rule, reason, v),
        }
    }
    // 6. sg-ingress
    if let Some(e) = dst_eni {
        match sg_step(p, allowance, st, now, e, Direction::Ingress, pkt, key) {
            Ok(pass) => v.sg_ingress = Some(pass),
            Err((stage, reason)) => return reject(stage, None, reason, v),
        }
    }
    v
}

/// A NACL list of subnet `subnet`: `Ok(entry)` when an allow entry matches first.
fn nacl_step(
    p: &CompiledPolicy,
    subnet: u32,
    dir: Direction,
    key: &FamKey,
) -> Result<RuleRef, (Option<RuleRef>, Reason)> {
    let Some(n) = p.subnets[subnet as usize].nacl else {
        return Err((None, Reason::NoNacl));
    };
    let list = &p.nacls[n as usize].lists[dir as usize];
    let hit = match key {
        FamKey::V4(k) => list
            .v4
            .matcher
            .first_match(k)
            .map(|i| (list.v4.origin[i as usize], list.action_v4[i as usize])),
        FamKey::V6(k) => list
            .v6
            .matcher
            .first_match(k)
            .map(|i| (list.v6.origin[i as usize], list.action_v6[i as usize])),
    };
    match hit {
        Some((rule, Action::Allow)) => Ok(rule),
        Some((rule, Action::Deny)) => Err((Some(rule), Reason::NaclDeny)),
        None => Err((
            Some(RuleRef::NaclImplicitDeny {
                nacl: n,
                egress: dir == Direction::Egress,
            }),
            Reason::NaclDeny,
        )),
    }
}

/// A security-group step at ENI `eni` (SPEC §4).
#[allow(clippy::too_many_arguments)]
fn sg_step(
    p: &CompiledPolicy,
    allowance: Option<u32>,
    st: &mut State,
    now: Time,
    eni: u32,
    dir: Direction,
    pkt: &Packet,
    key: &FamKey,
) -> Result<SgPass, (Stage, Reason)> {
    let ce = &p.enis[eni as usize];
    let zone = st.zones.of_eni[eni as usize];
    let flags = pkt.flags();
    let icmp = match pkt.l4 {
        L4::Icmp { icmp_type, id, .. } => (icmp_type, id),
        _ => (0, 0),
    };
    let ports = match pkt.l4 {
        L4::Ports { sport, dport, .. } => (sport, dport),
        _ => (0, 0),
    };
    let tracking = Tracking::of(zone, dir, pkt.proto, pkt.src, pkt.dst, ports, icmp);
    let stage = match dir {
        Direction::Egress => Stage::SgEgress,
        Direction::Ingress => Stage::SgIngress,
    };

    if let Some(k) = tracking.key()
        && let Some(e) = st.flows.get_mut(k)
    {
        let admits = e.admits(&tracking, dir);
        if !e.is_alive(now, &ce.timeouts) || (admits && e.restarted_by(flags)) {
            st.flows.remove(k);
            st.held[ce.instance as usize] -= 1;
        } else if admits {
            e.advance(dir, flags, now);
            return Ok(SgPass::Tracked);
        }
    }

    let side = &ce.sg[dir as usize];
    let rule = side.first_match(key);
    if matches!(pkt.proto, 6 | 17) && untracked(ce, dir, key) {
        // The /0 rule (request) or the /0 all-ports rule (response) allows it.
        return rule.map(SgPass::Untracked).ok_or((stage, Reason::NoSgRule));
    }
    let Some(rule) = rule else {
        return Err((stage, Reason::NoSgRule));
    };
    let (Some(k), Some(entry)) = (tracking.key(), Entry::new(&tracking, dir, flags, now)) else {
        return Ok(SgPass::Rule(rule));
    };
    if let Some(cap) = allowance {
        if st.held[ce.instance as usize] >= cap {
            expire_instance(p, st, now, ce.instance);
        }
        if st.held[ce.instance as usize] >= cap {
            st.stats.conntrack_allowance_exceeded += 1;
            return Err((Stage::ConntrackAllowance, Reason::Allowance));
        }
    }
    st.flows.insert(*k, entry);
    st.held[ce.instance as usize] += 1;
    Ok(SgPass::NewEntry(rule))
}

/// Removes the dead entries of one allowance group.
fn expire_instance(p: &CompiledPolicy, st: &mut State, now: Time, instance: u32) {
    let zones = &st.zones;
    let held = &mut st.held;
    st.flows.retain(|k, e| {
        let Some(eni) = zones.current[k.zone as usize] else {
            return false;
        };
        let ce = &p.enis[eni as usize];
        if ce.instance != instance || e.is_alive(now, &ce.timeouts) {
            return true;
        }
        held[instance as usize] -= 1;
        false
    });
}
