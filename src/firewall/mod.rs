//! The engine: the path of a packet through a VPC (SPEC §3), with per-ENI connection
//! tracking (SPEC §4), fragments (SPEC §5) and hot reload.
//!
//! [`Firewall::process`] takes the time as a parameter and a described [`Packet`], and
//! returns a [`Verdict`] naming the stage and the rule that decided. Nothing here reads a
//! clock, spawns a thread or performs I/O.

mod flow;
mod stats;

pub use flow::{EXTENSION_BYTES, INITIAL_CAPACITY, SWEEP_BUDGET, SWEEP_EVERY};
pub use stats::{Hits, InstanceStats, RuleHits, Stats};

use crate::compile::{CompiledEni, CompiledPolicy, RuleRef, SgFamily, SgSide};
use crate::conntrack::table::{FlowKeyV6, Hashed};
use crate::conntrack::{Direction, Entry, FlowKey, TcpFlags, Time, Tracking};
use crate::inspect::{Inspector, Outcome, RuleAction, RuleId};
use crate::matcher::{Addr, Key};
use crate::policy::Action;
use crate::wire;
use flow::{Conntrack, Flow, Inserted, NO_RULE, PathResult, STREAM_ARRIVING, STREAM_LEAVING};
use hashbrown::HashMap;
use stats::{Counters, RuleIds};
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
    /// A payload byte-match rule (optional; [`crate::inspect`]) blocks the flow.
    Inspection,
    /// The instance's connection-tracking allowance is exhausted.
    ConntrackAllowance,
    /// The packet is malformed (or a fragment without its first fragment).
    Malformed,
}

impl Stage {
    /// Number of stages.
    pub const COUNT: usize = 9;
    /// Every stage, in the order of [`Stage::index`].
    pub const ALL: [Stage; Stage::COUNT] = [
        Stage::Exempt,
        Stage::SgEgress,
        Stage::NaclEgress,
        Stage::Route,
        Stage::NaclIngress,
        Stage::SgIngress,
        Stage::Inspection,
        Stage::ConntrackAllowance,
        Stage::Malformed,
    ];
    /// The SPEC §7 name: `exempt`, `sg-egress`, `nacl-egress`, `route`, `nacl-ingress`,
    /// `sg-ingress`, `inspection`, `conntrack-allowance`, `malformed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Exempt => "exempt",
            Stage::SgEgress => "sg-egress",
            Stage::NaclEgress => "nacl-egress",
            Stage::Route => "route",
            Stage::NaclIngress => "nacl-ingress",
            Stage::SgIngress => "sg-ingress",
            Stage::Inspection => "inspection",
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
    /// A payload byte-match rule with action `block` matched this packet or an earlier packet
    /// of its flow (the rule is [`Verdict::inspection`]).
    ByteMatch,
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
            Reason::ByteMatch => "a byte-match rule blocks the flow",
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
    /// The payload byte-match rule that blocked the packet (stage `inspection`) or, for an
    /// accepted packet, the first `count` rule that matched it.
    pub inspection: Option<InspectMatch>,
}

/// A payload byte-match rule that matched a packet ([`crate::inspect`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InspectMatch {
    /// The rule (name: [`Inspector::rule_name`]).
    pub rule: RuleId,
    /// `block` or `count`.
    pub action: RuleAction,
    /// Where it was decided: `true` at the destination ENI (the packet arriving), `false` at
    /// the source ENI (the packet leaving; also a destination outside the VPC).
    pub at_destination: bool,
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
            inspection: None,
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

/// (source, destination, IPv6, protocol — 0 for IPv6, identification).
type FragKey = (u128, u128, bool, u8, u32);

/// The most frames [`Firewall::process_burst`] prepares at once.
pub const BURST: usize = crate::conntrack::table::BATCH;

/// A packet in the engine's internal form (addresses as integers, ports and ICMP fields split
/// the way the matcher and connection tracking read them).
#[derive(Clone, Copy, Debug)]
struct Pk {
    v6: bool,
    src: u128,
    dst: u128,
    proto: u8,
    /// Matcher ports: TCP/UDP ports, ICMP (type, code), else (0, 0).
    mports: (u16, u16),
    /// Tracking ports: TCP/UDP ports, else (0, 0).
    tports: (u16, u16),
    /// Tracking ICMP fields: (type, identifier), else (0, 0).
    icmp: (u8, u16),
    flags: TcpFlags,
    /// TCP sequence number (payload inspection), else 0.
    seq: u32,
    len: u32,
    fragment: Option<Fragment>,
    /// Whether the NACL and route steps depend only on the flow key and direction (TCP/UDP with
    /// ports, other protocols without), so that their outcome may be cached in the entry.
    cacheable: bool,
}

impl Pk {
    fn from_packet(p: &Packet) -> Option<Pk> {
        let (v6, src, dst) = match (p.src, p.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                (false, u128::from(u32::from(s)), u128::from(u32::from(d)))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => (true, u128::from(s), u128::from(d)),
            _ => return None,
        };
        let (tports, icmp) = match p.l4 {
            L4::Ports { sport, dport, .. } => ((sport, dport), (0, 0)),
            L4::Icmp { icmp_type, id, .. } => ((0, 0), (icmp_type, id)),
            L4::None => ((0, 0), (0, 0)),
        };
        let cacheable = match (p.proto, p.l4) {
            (6 | 17, L4::Ports { .. }) => true,
            (1 | 6 | 17 | 58, _) => false,
            (_, l4) => l4 == L4::None,
        };
        Some(Pk {
            v6,
            src,
            dst,
            proto: p.proto,
            mports: p.ports(),
            tports,
            icmp,
            flags: p.flags(),
            seq: 0,
            len: p.len,
            fragment: p.fragment,
            cacheable,
        })
    }

    /// Exactly `Pk::from_packet(&Packet::from_meta(m))`, without building the packet.
    #[inline]
    fn from_meta(m: &wire::PacketMeta) -> Pk {
        let proto = m.protocol;
        let mut seq = 0;
        let (mports, tports, icmp, flags, l4_ports, l4_none) = match m.transport {
            wire::Transport::Tcp {
                src_port,
                dst_port,
                flags,
                seq: s,
                ..
            } => {
                seq = s;
                (
                    (src_port, dst_port),
                    (src_port, dst_port),
                    (0, 0),
                    if proto == 6 { flags.0 } else { 0 },
                    true,
                    false,
                )
            }
            wire::Transport::Udp { src_port, dst_port } => (
                (src_port, dst_port),
                (src_port, dst_port),
                (0, 0),
                0,
                true,
                false,
            ),
            wire::Transport::Icmp { ty, code, ident } => (
                (u16::from(ty), u16::from(code)),
                (0, 0),
                (ty, ident.unwrap_or(0)),
                0,
                false,
                false,
            ),
            wire::Transport::None => ((0, 0), (0, 0), (0, 0), 0, false, true),
        };
        let cacheable = match proto {
            6 | 17 => l4_ports,
            1 | 58 => false,
            _ => l4_none,
        };
        let f = m.fragment;
        Pk {
            v6: m.version == wire::IpVersion::V6,
            src: m.src,
            dst: m.dst,
            proto,
            mports,
            tports,
            icmp,
            flags: TcpFlags(flags),
            seq,
            len: m.ip_total_len() as u32,
            fragment: f.is_fragment().then_some(Fragment {
                id: f.ident,
                offset: u32::from(f.offset) * 8,
                more: f.more,
            }),
            cacheable,
        }
    }

    fn ip(&self, a: u128) -> IpAddr {
        if self.v6 {
            IpAddr::V6(std::net::Ipv6Addr::from(a))
        } else {
            IpAddr::V4(std::net::Ipv4Addr::from(a as u32))
        }
    }

    fn famkey(&self) -> FamKey {
        let (sport, dport) = self.mports;
        if self.v6 {
            FamKey::V6(Key {
                src: self.src,
                dst: self.dst,
                sport,
                dport,
                proto: self.proto,
            })
        } else {
            FamKey::V4(Key {
                src: self.src as u32,
                dst: self.dst as u32,
                sport,
                dport,
                proto: self.proto,
            })
        }
    }
}

/// One ENI's side of a packet: its zone, allowance group, direction and hashed table key.
#[derive(Clone, Copy, Debug)]
struct Side {
    eni: u32,
    group: u32,
    zone: u32,
    dir: Direction,
    hashed: Option<Hashed<FlowKeyV6>>,
}

impl Side {
    /// The packet's tracking classification at this side.
    #[inline]
    fn tracking(&self, pk: &Pk) -> Tracking {
        Tracking::of(
            self.zone,
            self.dir,
            pk.proto,
            pk.ip(pk.src),
            pk.ip(pk.dst),
            pk.tports,
            pk.icmp,
        )
    }
}

/// Working arrays of one burst.
#[derive(Clone, Debug)]
struct Scratch {
    metas: [wire::PacketMeta; BURST],
    parsed: [Option<wire::Error>; BURST],
    pks: [Option<Pk>; BURST],
    sides: [[Option<Side>; 2]; BURST],
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            metas: [wire::PacketMeta::EMPTY; BURST],
            parsed: [None; BURST],
            pks: [None; BURST],
            sides: [[None; 2]; BURST],
        }
    }
}

/// The mutable part of the engine.
#[derive(Clone, Debug)]
struct State {
    zones: Zones,
    ct: Conntrack,
    addr_v4: HashMap<u32, u32>,
    addr_v6: HashMap<u128, u32>,
    /// By allowance group: the instance id, or the ENI id of an unattached ENI.
    instance_names: Vec<String>,
    fragments: HashMap<FragKey, (Time, Verdict)>,
    counters: Counters,
    /// Policy generation (bumped by every reload): cached paths of other generations are stale.
    generation: u32,
    /// The latest time a packet was judged at.
    clock: Time,
}

/// The firewall engine: a compiled policy plus connection-tracking state.
///
/// The engine owns its state: every call that judges takes `&mut self`, and nothing on the
/// packet path allocates or locks (beyond the first-fragment records of SPEC §5 and the
/// growth of a connection-tracking table, which are off the common path).
#[derive(Clone, Debug)]
pub struct Firewall {
    policy: Arc<CompiledPolicy>,
    allowance: Option<u32>,
    /// Dense ids of the current policy's rules.
    ids: RuleIds,
    state: State,
    /// The burst working arrays (taken while a burst runs).
    scratch: Option<Box<Scratch>>,
    /// The payload-inspection stage, if rules are loaded.
    inspector: Option<Arc<Inspector>>,
    /// Tag of the inspector's stream states in flow entries (never 0, the tag of a new entry).
    inspect_tag: u8,
}

/// The family-specific matcher key of a packet.
#[derive(Clone, Copy, Debug)]
enum FamKey {
    V4(Key<u32>),
    V6(Key<u128>),
}

impl FamKey {
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

fn instance_names(p: &CompiledPolicy) -> Vec<String> {
    let mut names = vec![String::new(); p.instances as usize];
    for (e, ce) in p.policy().enis.iter().zip(&p.enis) {
        let n = &mut names[ce.instance as usize];
        if n.is_empty() {
            *n = e.instance_id.clone().unwrap_or_else(|| e.id.clone());
        }
    }
    names
}

impl State {
    /// Everything derived from the policy: zones, rule ids, address maps, tables.
    fn adopt(&mut self, old: Option<&CompiledPolicy>, ids: &mut RuleIds, p: &CompiledPolicy) {
        self.zones.assign(p);
        let new_ids = RuleIds::new(p.policy());
        match old {
            Some(old) => self.counters.remap(old, ids, p, &new_ids),
            None => self.counters.hits = vec![Hits::default(); new_ids.refs.len()],
        }
        *ids = new_ids;
        self.addr_v4 = p.addr_v4.iter().map(|(a, e)| (*a, *e)).collect();
        self.addr_v6 = p.addr_v6.iter().map(|(a, e)| (*a, *e)).collect();
        self.instance_names = instance_names(p);
        self.ct.reload(p, &self.zones.current, self.clock);
        self.generation = self.generation.wrapping_add(1);
        // Fragment verdicts name rules of the old policy; later fragments are judged afresh.
        self.fragments.clear();
    }

    #[inline]
    fn eni_of(&self, v6: bool, a: u128) -> Option<u32> {
        if v6 {
            self.addr_v6.get(&a).copied()
        } else {
            self.addr_v4.get(&(a as u32)).copied()
        }
    }

    /// Writes the side of `eni` (if any) to `out`.
    #[inline(always)]
    fn fill_side(
        &self,
        p: &CompiledPolicy,
        pk: &Pk,
        eni: Option<u32>,
        dir: Direction,
        out: &mut Option<Side>,
    ) {
        *out = eni.map(|e| self.side(p, pk, e, dir));
    }

    #[inline(always)]
    fn side(&self, p: &CompiledPolicy, pk: &Pk, eni: u32, dir: Direction) -> Side {
        let zone = self.zones.of_eni[eni as usize];
        // The table key straight from the integer addresses (no `IpAddr` round trip).
        let key = flow::key_from(
            zone, dir, pk.proto, pk.v6, pk.src, pk.dst, pk.tports, pk.icmp,
        );
        Side {
            eni,
            group: p.enis[eni as usize].instance,
            zone,
            dir,
            hashed: key.map(|k| self.ct.hash(&k)),
        }
    }

    #[inline]
    fn prefetch(&self, side: &Option<Side>) {
        if let Some(Side {
            group,
            hashed: Some(h),
            ..
        }) = side
        {
            self.ct.groups[*group as usize].table.prefetch(h);
        }
    }
}

#[inline]
fn is_exempt(p: &CompiledPolicy, v6: bool, a: u128) -> bool {
    // Every exempt address is link-local (169.254.0.0/16, fd00:ec2::/32) or a VPC's DNS
    // address (base + 2); one bit of a 64-bit filter on the address's low byte rules most
    // addresses out before the list is read.
    if p.exempt_filter & (1u64 << (a as u8 & 63)) == 0 {
        return false;
    }
    if v6 {
        p.exempt_v6.contains(&a)
    } else {
        p.exempt_v4.contains(&(a as u32))
    }
}

impl Firewall {
    /// An engine over `policy`; `allowance` caps live tracked entries per instance.
    pub fn new(policy: CompiledPolicy, allowance: Option<u32>) -> Firewall {
        let mut state = State {
            zones: Zones::default(),
            ct: Conntrack::new(allowance),
            addr_v4: HashMap::new(),
            addr_v6: HashMap::new(),
            instance_names: Vec::new(),
            fragments: HashMap::new(),
            counters: Counters::default(),
            generation: 0,
            clock: Time(0),
        };
        let mut ids = RuleIds::default();
        state.adopt(None, &mut ids, &policy);
        Firewall {
            policy: Arc::new(policy),
            allowance,
            ids,
            state,
            scratch: Some(Box::default()),
            inspector: None,
            inspect_tag: 1,
        }
    }

    /// Installs (or, with `None`, removes) the payload-inspection stage ([`crate::inspect`]):
    /// packets the SG/NACL steps accept are inspected when a rule's scope covers them. The
    /// inspector must be compiled against the current policy's ENIs (after [`reload`](Self::reload)
    /// to a policy with other ENIs, install one compiled against it). Streams inspected under
    /// earlier rules restart at their next segment; flows already blocked stay blocked.
    pub fn set_inspector(&mut self, inspector: Option<Arc<Inspector>>) {
        self.inspector = inspector;
        self.inspect_tag = match self.inspect_tag.wrapping_add(1) {
            0 => 1,
            t => t,
        };
    }

    /// The payload-inspection stage, if installed.
    pub fn inspector(&self) -> Option<&Inspector> {
        self.inspector.as_deref()
    }

    /// The current compiled policy.
    pub fn policy(&self) -> &CompiledPolicy {
        &self.policy
    }

    /// A stable, readable name for a rule of the current policy (see
    /// [`CompiledPolicy::rule_name`]).
    pub fn rule_name(&self, r: RuleRef) -> String {
        self.policy.rule_name(r)
    }

    /// A consistent snapshot of the counters (see [`Stats`]). Occupancy is judged at the time
    /// of the latest packet; this walks the connection-tracking tables (it is not meant for the
    /// packet path).
    pub fn stats(&self) -> Stats {
        let st = &self.state;
        let c = &st.counters;
        let instances: Vec<InstanceStats> = st
            .ct
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let live = st.ct.live_count(i, st.clock) as u64;
                InstanceStats {
                    name: st.instance_names.get(i).cloned().unwrap_or_default(),
                    stored: g.table.len() as u64,
                    live,
                    allowance: self.allowance,
                    available: self.allowance.map(|a| u64::from(a).saturating_sub(live)),
                    exceeded: g.exceeded,
                }
            })
            .collect();
        Stats {
            packets: c.packets,
            accepted: c.accepted,
            rejected: c.rejected,
            drops: c.reasons(),
            conntrack_allowance_exceeded: c.exceeded,
            conntrack_allowance_available: self.allowance.map(|_| {
                instances
                    .iter()
                    .filter_map(|i| i.available)
                    .min()
                    .unwrap_or(0)
            }),
            instances,
            rules: c
                .hits
                .iter()
                .enumerate()
                .filter(|(_, h)| h.packets > 0)
                .map(|(i, h)| RuleHits {
                    rule: self.ids.rule(i as u32),
                    hits: *h,
                })
                .collect(),
            generation: u64::from(st.generation),
            inspection: self.inspector.as_ref().map(|i| i.counters()),
        }
    }

    /// Replaces the policy for the next packet. Live tracked entries survive (and keep
    /// admitting their flows); entries of ENIs that no longer exist are dropped; cached NACL
    /// and route outcomes of the old policy are never used again.
    pub fn reload(&mut self, policy: CompiledPolicy) {
        let old = std::mem::replace(&mut self.policy, Arc::new(policy));
        self.state.adopt(Some(&old), &mut self.ids, &self.policy);
    }

    /// Live tracked entries at `now`, for inspection and tests.
    pub fn entries(&self, now: Time) -> Vec<FlowInfo> {
        let mut out = Vec::new();
        self.state
            .ct
            .for_each_live(now, |key, entry| out.push(FlowInfo { key, entry }));
        out.sort_by_key(|f| {
            let k = &f.key;
            (
                k.zone,
                f.entry.last_seen,
                (k.proto, k.query, k.request_in),
                (k.local, k.remote, k.local_port, k.remote_port),
            )
        });
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

    /// Judges one Ethernet frame at time `now` on the fast path (cached NACL and route
    /// outcomes for live flows). A truncated or inconsistent frame is rejected with stage
    /// `malformed` and counted (SPEC §5); it never creates state. Also returns the packet the
    /// frame describes.
    pub fn process_frame(
        &mut self,
        now: Time,
        frame: &[u8],
    ) -> Result<(Packet, Verdict), FrameError> {
        let mut meta = wire::PacketMeta::EMPTY;
        let v = self.judge_frame(now, frame, &mut meta)?;
        if v.stage == Some(Stage::Malformed) && matches!(v.reason, Reason::Malformed(_)) {
            let unknown = std::net::Ipv4Addr::UNSPECIFIED.into();
            return Ok((
                Packet {
                    src: unknown,
                    dst: unknown,
                    proto: 0,
                    l4: L4::None,
                    len: frame.len() as u32,
                    fragment: None,
                },
                v,
            ));
        }
        Ok((Packet::from_meta(&meta), v))
    }

    /// [`process_frame`](Self::process_frame) without building the [`Packet`]: the verdict only.
    #[inline]
    pub fn verdict_frame(&mut self, now: Time, frame: &[u8]) -> Result<Verdict, FrameError> {
        let mut meta = wire::PacketMeta::EMPTY;
        self.judge_frame(now, frame, &mut meta)
    }

    /// Judges up to `frames.len()` frames at time `now`, in order, writing each answer (as
    /// [`verdict_frame`](Self::verdict_frame) gives it) to `out`; returns how many were judged
    /// (`min(frames.len(), out.len())`). Frames are taken [`BURST`] at a time: each burst is
    /// parsed, its connection-tracking keys hashed once and their slots prefetched, then the
    /// frames are judged one after the other (so a frame sees the state its predecessors left).
    pub fn process_burst(
        &mut self,
        now: Time,
        frames: &[&[u8]],
        out: &mut [Result<Verdict, FrameError>],
    ) -> usize {
        let n = frames.len().min(out.len());
        for (frames, out) in frames[..n].chunks(BURST).zip(out[..n].chunks_mut(BURST)) {
            self.burst(now, frames, out);
        }
        n
    }

    fn burst(&mut self, now: Time, frames: &[&[u8]], out: &mut [Result<Verdict, FrameError>]) {
        // The burst's working arrays live in the engine (allocated once), so a burst neither
        // allocates nor initialises kilobytes of stack.
        let mut sc = self.scratch.take().unwrap_or_default();
        let p = &*self.policy;
        let st = &self.state;
        for (i, frame) in frames.iter().enumerate() {
            let meta = &mut sc.metas[i];
            if let Err(e) = wire::parse_into(frame, meta) {
                sc.parsed[i] = Some(e);
                sc.pks[i] = None;
                sc.sides[i] = [None, None];
                continue;
            }
            sc.parsed[i] = None;
            let pk = Pk::from_meta(meta);
            let src_eni = st.eni_of(pk.v6, pk.src);
            let dst_eni = st.eni_of(pk.v6, pk.dst);
            // Built in place (a side is 136 bytes: no copy through a temporary).
            let [s, d] = &mut sc.sides[i];
            st.fill_side(p, &pk, src_eni, Direction::Egress, s);
            st.fill_side(p, &pk, dst_eni, Direction::Ingress, d);
            st.prefetch(s);
            st.prefetch(d);
            sc.pks[i] = Some(pk);
        }
        for (i, o) in out.iter_mut().enumerate().take(frames.len()) {
            *o = match (sc.parsed[i], &sc.pks[i]) {
                (Some(e), _) => self.malformed(e),
                (None, Some(pk)) => {
                    let [s, d] = &sc.sides[i];
                    let payload = payload_of(frames[i], &sc.metas[i]);
                    self.run(now, pk, true, Some((s.as_ref(), d.as_ref())), payload)
                        .map_err(FrameError::Input)
                }
                (None, None) => unreachable!("a frame is either parsed or not"),
            };
        }
        self.scratch = Some(sc);
    }

    #[inline]
    fn judge_frame(
        &mut self,
        now: Time,
        frame: &[u8],
        meta: &mut wire::PacketMeta,
    ) -> Result<Verdict, FrameError> {
        match wire::parse_into(frame, meta) {
            Ok(()) => {
                let pk = Pk::from_meta(meta);
                self.run(now, &pk, true, None, payload_of(frame, meta))
                    .map_err(FrameError::Input)
            }
            Err(e) => self.malformed(e),
        }
    }

    /// The answer for a frame that does not parse.
    fn malformed(&mut self, e: wire::Error) -> Result<Verdict, FrameError> {
        if e == wire::Error::UnsupportedEtherType {
            return Err(FrameError::NotIp);
        }
        let v = Verdict {
            decision: Decision::Reject,
            stage: Some(Stage::Malformed),
            reason: Reason::Malformed(e),
            ..Verdict::accept(None, None, None)
        };
        let c = &mut self.state.counters;
        c.packets += 1;
        c.decided(false, v.stage, v.reason);
        Ok(v)
    }

    /// Judges one packet at time `now` (SPEC §3–§5). This is the reference path: every step is
    /// evaluated by its rules (no cached outcomes); [`process_frame`](Self::process_frame),
    /// [`verdict_frame`](Self::verdict_frame) and [`process_burst`](Self::process_burst) give
    /// the same answers faster.
    pub fn process(&mut self, now: Time, pkt: &Packet) -> Result<Verdict, InputError> {
        let pk = Pk::from_packet(pkt).ok_or(InputError::MixedFamilies)?;
        self.run(now, &pk, false, None, &[])
    }

    /// [`process`](Self::process) for a packet with a payload, for the inspection stage: `seq`
    /// is the TCP sequence number (ignored for other protocols) and `payload` the bytes after
    /// the transport header.
    pub fn process_with_payload(
        &mut self,
        now: Time,
        pkt: &Packet,
        seq: u32,
        payload: &[u8],
    ) -> Result<Verdict, InputError> {
        let mut pk = Pk::from_packet(pkt).ok_or(InputError::MixedFamilies)?;
        pk.seq = seq;
        self.run(now, &pk, false, None, payload)
    }

    /// Judges a packet in internal form; `cache` uses and refreshes the cached NACL and route
    /// outcomes of live entries; `sides` are the ENI sides when already prepared.
    #[inline]
    fn run(
        &mut self,
        now: Time,
        pk: &Pk,
        cache: bool,
        sides: Option<(Option<&Side>, Option<&Side>)>,
        payload: &[u8],
    ) -> Result<Verdict, InputError> {
        let p = &*self.policy;
        let st = &mut self.state;
        let (src_eni, dst_eni) = match &sides {
            Some((s, d)) => (s.map(|s| s.eni), d.map(|d| d.eni)),
            None => (st.eni_of(pk.v6, pk.src), st.eni_of(pk.v6, pk.dst)),
        };
        if src_eni.is_none() && dst_eni.is_none() {
            return Err(InputError::NotInVpc {
                src: pk.ip(pk.src),
                dst: pk.ip(pk.dst),
            });
        }
        st.counters.packets += 1;
        if now > st.clock {
            st.clock = now;
        }
        st.ct.tick(now);

        // SPEC §3 step 1: exempt addresses are never filtered, fragments included.
        if is_exempt(p, pk.v6, pk.src) || is_exempt(p, pk.v6, pk.dst) {
            let v = Verdict::accept(Some(Stage::Exempt), src_eni, dst_eni);
            st.counters.decided(true, v.stage, v.reason);
            return Ok(v);
        }

        // SPEC §5: a non-first fragment takes its first fragment's verdict.
        let frag_key = pk.fragment.map(|f| {
            (
                pk.src,
                pk.dst,
                pk.v6,
                if pk.v6 { 0 } else { pk.proto },
                f.id,
            )
        });
        if let (Some(f), Some(fk)) = (pk.fragment, frag_key)
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
            st.counters
                .decided(v.decision == Decision::Accept, v.stage, v.reason);
            return Ok(v);
        }

        let own;
        let (src_side, dst_side) = match sides {
            Some(s) => s,
            None => {
                own = (
                    src_eni.map(|e| st.side(p, pk, e, Direction::Egress)),
                    dst_eni.map(|e| st.side(p, pk, e, Direction::Ingress)),
                );
                (own.0.as_ref(), own.1.as_ref())
            }
        };
        let mut v = judge(p, &self.ids, st, now, pk, src_side, dst_side, cache);
        if let Some(insp) = &self.inspector
            && v.decision == Decision::Accept
            && matches!(pk.proto, 6 | 17)
        {
            inspect_step(
                insp,
                self.inspect_tag,
                st,
                now,
                pk,
                payload,
                src_side,
                dst_side,
                &mut v,
            );
        }
        st.counters
            .decided(v.decision == Decision::Accept, v.stage, v.reason);
        if let (Some(f), Some(fk)) = (pk.fragment, frag_key)
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

fn reject(stage: Stage, rule: Option<RuleRef>, reason: Reason, base: Verdict) -> Verdict {
    Verdict {
        decision: Decision::Reject,
        stage: Some(stage),
        rule,
        reason,
        ..base
    }
}

fn refuse(r: Refused, base: Verdict) -> Verdict {
    Verdict {
        inspection: r.inspection,
        ..reject(r.stage, None, r.reason, base)
    }
}

/// The transport payload of a parsed frame (TCP and UDP only; empty otherwise).
#[inline]
fn payload_of<'a>(frame: &'a [u8], m: &wire::PacketMeta) -> &'a [u8] {
    match m.transport {
        wire::Transport::Tcp { .. } | wire::Transport::Udp { .. } => {
            let start = usize::from(m.payload_offset);
            frame
                .get(start..start + usize::from(m.payload_len))
                .unwrap_or(&[])
        }
        _ => &[],
    }
}

/// The inspection stage ([`crate::inspect`]) for a TCP or UDP packet the SG/NACL steps
/// accepted. A packet outside every rule's scope costs a bit test. The stream state lives in
/// the flow entry of the destination ENI (slot "arriving") when the packet has one there,
/// else in the source ENI's (slot "leaving"); a packet without an entry (untracked, or a reply
/// that creates none) is inspected on its own. A `block` match rejects the packet and marks the
/// entry, so every later packet of the flow, both ways, is rejected at its security-group step.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn inspect_step(
    insp: &Inspector,
    tag: u8,
    st: &mut State,
    now: Time,
    pk: &Pk,
    payload: &[u8],
    src: Option<&Side>,
    dst: Option<&Side>,
    v: &mut Verdict,
) {
    let Some(scope) = insp.scope_of(pk.proto, pk.mports.1, v.src_eni, v.dst_eni) else {
        return;
    };
    let syn = pk.proto == 6 && pk.flags.0 & TcpFlags::SYN != 0;
    if payload.is_empty() && !syn {
        return;
    }
    let has_entry = |p: Option<SgPass>| matches!(p, Some(SgPass::Tracked | SgPass::NewEntry(_)));
    let holder = if has_entry(v.sg_ingress) {
        dst.map(|d| (d, STREAM_ARRIVING))
    } else if has_entry(v.sg_egress) {
        src.map(|s| (s, STREAM_LEAVING))
    } else {
        None
    };
    let at_destination = match holder {
        Some((_, slot)) => slot == STREAM_ARRIVING,
        None => v.dst_eni.is_some(),
    };
    let outcome: Outcome = match holder.and_then(|(s, slot)| s.hashed.map(|h| (s.group, h, slot))) {
        Some((group, h, slot)) => {
            let live = flow::Live {
                timeouts: &st.ct.timeouts,
            };
            let table = &mut st.ct.groups[group as usize].table;
            table
                .update_hashed_mut(&h, now.0, &live, |f| {
                    let mut s = f.stream(slot);
                    if s.tag() != tag && s.blocked_by().is_none() {
                        s = insp.stream(Some(scope));
                        s.set_tag(tag);
                    }
                    let o = if pk.proto == 6 {
                        if syn {
                            insp.tcp_syn(&mut s, pk.seq);
                        }
                        let seq = if syn { pk.seq.wrapping_add(1) } else { pk.seq };
                        insp.tcp_segment(&mut s, seq, payload)
                    } else if let Some(rule) = s.blocked_by() {
                        Outcome {
                            block: Some(crate::inspect::Hit { rule, end: 0 }),
                            already_blocked: true,
                            ..Outcome::default()
                        }
                    } else {
                        let o = insp.datagram(scope, payload);
                        if let Some(b) = o.block {
                            s.mark_blocked(b.rule);
                        }
                        o
                    };
                    f.set_stream(slot, &s);
                    o
                })
                .unwrap_or_default()
        }
        None => insp.datagram(scope, payload),
    };
    let hit = |h: crate::inspect::Hit, action| InspectMatch {
        rule: h.rule,
        action,
        at_destination,
    };
    if let Some(b) = outcome.block {
        *v = Verdict {
            inspection: Some(hit(b, RuleAction::Block)),
            ..reject(Stage::Inspection, None, Reason::ByteMatch, *v)
        };
    } else if let Some(c) = outcome.count {
        v.inspection = Some(hit(c, RuleAction::Count));
    }
}

// Outcomes of SPEC §3 steps 3–5 (a cached path's outcome code; 0 means "not cached").
/// Passed the NACL and route steps; the destination ENI's security groups decide.
const PATH_PASS: u8 = 1;
/// Passed the route step towards a destination outside the VPC: ACCEPT.
const PATH_ACCEPT_OUT: u8 = 2;
const PATH_NACL_EGRESS_DENY: u8 = 3;
const PATH_NACL_EGRESS_NO_NACL: u8 = 4;
const PATH_NO_ROUTE_TABLE: u8 = 5;
const PATH_NO_ROUTE: u8 = 6;
const PATH_BLACKHOLE: u8 = 7;
const PATH_NACL_INGRESS_DENY: u8 = 8;
const PATH_NACL_INGRESS_NO_NACL: u8 = 9;

/// What the NACL and route steps need to know about a packet; computes their outcome at most
/// once per packet.
struct PathCtx<'a> {
    p: &'a CompiledPolicy,
    ids: &'a RuleIds,
    key: &'a FamKey,
    src_subnet: Option<u32>,
    dst_subnet: Option<u32>,
    same_subnet: bool,
    dst_is_eni: bool,
    result: Option<PathResult>,
}

impl PathCtx<'_> {
    #[inline]
    fn get(&mut self) -> PathResult {
        match self.result {
            Some(r) => r,
            None => {
                let r = self.compute();
                self.result = Some(r);
                r
            }
        }
    }

    /// One NACL step of the path at `subnet`: the deciding rule's id goes to `rule`; `Err` is
    /// the outcome code when the step rejects.
    fn nacl(&self, subnet: u32, dir: Direction, rule: &mut u32) -> Result<(), u8> {
        match nacl_step(self.p, subnet, dir, self.key) {
            Ok(r) => {
                *rule = self.ids.id(r);
                Ok(())
            }
            Err((r, reason)) => {
                *rule = r.map_or(NO_RULE, |r| self.ids.id(r));
                Err(match (dir, reason == Reason::NoNacl) {
                    (Direction::Egress, true) => PATH_NACL_EGRESS_NO_NACL,
                    (Direction::Egress, false) => PATH_NACL_EGRESS_DENY,
                    (Direction::Ingress, true) => PATH_NACL_INGRESS_NO_NACL,
                    (Direction::Ingress, false) => PATH_NACL_INGRESS_DENY,
                })
            }
        }
    }

    /// SPEC §3 steps 3–5 by the rules.
    fn compute(&self) -> PathResult {
        let (p, ids, key) = (self.p, self.ids, self.key);
        let mut rules = [NO_RULE; 3];
        let done = |outcome, rules| PathResult { outcome, rules };
        // 3. nacl-egress
        if let (Some(s), false) = (self.src_subnet, self.same_subnet)
            && let Err(code) = self.nacl(s, Direction::Egress, &mut rules[0])
        {
            return done(code, rules);
        }
        // 4. route
        if let Some(s) = self.src_subnet {
            let Some(table) = p.subnets[s as usize].route_table else {
                return done(PATH_NO_ROUTE_TABLE, rules);
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
                return done(PATH_NO_ROUTE, rules);
            };
            rules[1] = ids.id(RuleRef::Route { table, route });
            if p.policy().route_tables[table as usize].routes[route as usize].blackhole {
                return done(PATH_BLACKHOLE, rules);
            }
            if !self.dst_is_eni {
                return done(PATH_ACCEPT_OUT, rules);
            }
        }
        // 5. nacl-ingress
        if let (Some(s), false) = (self.dst_subnet, self.same_subnet)
            && let Err(code) = self.nacl(s, Direction::Ingress, &mut rules[2])
        {
            return done(code, rules);
        }
        done(PATH_PASS, rules)
    }
}

/// Applies a path outcome to the verdict: `Ok(v)` to go on to step 6, `Err(v)` when decided.
#[inline]
fn apply_path(
    ids: &RuleIds,
    counters: &mut Counters,
    len: u32,
    r: PathResult,
    mut v: Verdict,
) -> Result<Verdict, Verdict> {
    for id in r.rules {
        if id != NO_RULE {
            counters.hit(id, len);
        }
    }
    let rule = |i: usize| (r.rules[i] != NO_RULE).then(|| ids.rule(r.rules[i]));
    match r.outcome {
        PATH_PASS => {
            v.nacl_egress = rule(0);
            v.route = rule(1);
            v.nacl_ingress = rule(2);
            Ok(v)
        }
        PATH_ACCEPT_OUT => {
            v.nacl_egress = rule(0);
            v.route = rule(1);
            Err(v)
        }
        PATH_NACL_EGRESS_DENY => Err(reject(Stage::NaclEgress, rule(0), Reason::NaclDeny, v)),
        PATH_NACL_EGRESS_NO_NACL => Err(reject(Stage::NaclEgress, rule(0), Reason::NoNacl, v)),
        PATH_NACL_INGRESS_DENY | PATH_NACL_INGRESS_NO_NACL => {
            v.nacl_egress = rule(0);
            v.route = rule(1);
            let reason = if r.outcome == PATH_NACL_INGRESS_DENY {
                Reason::NaclDeny
            } else {
                Reason::NoNacl
            };
            Err(reject(Stage::NaclIngress, rule(2), reason, v))
        }
        code => {
            v.nacl_egress = rule(0);
            let reason = match code {
                PATH_NO_ROUTE_TABLE => Reason::NoRouteTable,
                PATH_NO_ROUTE => Reason::NoRoute,
                _ => Reason::Blackhole,
            };
            Err(reject(Stage::Route, rule(1), reason, v))
        }
    }
}

/// SPEC §3, steps 2–6.
#[allow(clippy::too_many_arguments)]
#[inline]
fn judge(
    p: &CompiledPolicy,
    ids: &RuleIds,
    st: &mut State,
    now: Time,
    pk: &Pk,
    src: Option<&Side>,
    dst: Option<&Side>,
    cache: bool,
) -> Verdict {
    // 1. exempt: handled by the caller.
    let (src_eni, dst_eni) = (src.map(|s| s.eni), dst.map(|d| d.eni));
    let v = Verdict::accept(None, src_eni, dst_eni);
    let subnet = |eni: Option<u32>| eni.map(|e| p.enis[e as usize].subnet);
    let (src_subnet, dst_subnet) = (subnet(src_eni), subnet(dst_eni));
    let key = pk.famkey();
    let mut ctx = PathCtx {
        p,
        ids,
        key: &key,
        src_subnet,
        dst_subnet,
        same_subnet: src_subnet.is_some() && src_subnet == dst_subnet,
        dst_is_eni: dst_eni.is_some(),
        result: None,
    };
    let cache = cache && pk.cacheable;
    steps(p, st, now, pk, src, dst, cache, &mut ctx, v)
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn steps(
    p: &CompiledPolicy,
    st: &mut State,
    now: Time,
    pk: &Pk,
    src: Option<&Side>,
    dst: Option<&Side>,
    cache: bool,
    ctx: &mut PathCtx<'_>,
    mut v: Verdict,
) -> Verdict {
    // 2. sg-egress
    if let Some(side) = src {
        match sg_step(p, st, now, side, Direction::Egress, pk, ctx, cache) {
            Ok(pass) => v.sg_egress = Some(pass),
            Err(r) => return refuse(r, v),
        }
    } else if cache
        && let Some(Side {
            group,
            hashed: Some(h),
            ..
        }) = dst
    {
        // From outside the VPC: the destination's entry may hold the path of this direction.
        let live = st.ct.live();
        if let Some(f) = st.ct.groups[*group as usize]
            .table
            .get_hashed(h, now.0, &live)
            && let Some(r) = f.path(st.generation, Direction::Ingress)
        {
            ctx.result = Some(r);
        }
    }
    // 3.–5. nacl-egress, route, nacl-ingress
    let path = ctx.get();
    v = match apply_path(ctx.ids, &mut st.counters, pk.len, path, v) {
        Ok(v) => v,
        Err(v) => return v,
    };
    // 6. sg-ingress
    if let Some(side) = dst {
        match sg_step(p, st, now, side, Direction::Ingress, pk, ctx, cache) {
            Ok(pass) => v.sg_ingress = Some(pass),
            Err(r) => return refuse(r, v),
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

/// What the update of a live entry found.
enum Found {
    /// The entry admitted the packet and advanced; its new deadline.
    Tracked(u64),
    /// A SYN in TIME_WAIT or CLOSE: the entry ends, the packet is a new flow.
    Restart,
    /// The entry does not admit the packet.
    NotAdmitted,
    /// The flow was blocked by a byte-match rule.
    Blocked(RuleId),
}

/// Why a security-group step refused a packet.
struct Refused {
    stage: Stage,
    reason: Reason,
    inspection: Option<InspectMatch>,
}

impl Refused {
    fn new(stage: Stage, reason: Reason) -> Refused {
        Refused {
            stage,
            reason,
            inspection: None,
        }
    }
}

/// A security-group step at one ENI (SPEC §4). With `cache`, a live entry's cached path of
/// this direction is used (or computed and stored), and a new entry is created with it.
#[allow(clippy::too_many_arguments)]
fn sg_step(
    p: &CompiledPolicy,
    st: &mut State,
    now: Time,
    side: &Side,
    dir: Direction,
    pk: &Pk,
    ctx: &mut PathCtx<'_>,
    cache: bool,
) -> Result<SgPass, Refused> {
    let ce = &p.enis[side.eni as usize];
    let flags = pk.flags;
    let stage = match dir {
        Direction::Egress => Stage::SgEgress,
        Direction::Ingress => Stage::SgIngress,
    };
    let generation = st.generation;
    // Only the egress side's entry caches paths, and the ingress side's when the packet comes
    // from outside the VPC: those are the entries a packet of that direction is judged at first.
    let caches = cache && (dir == Direction::Egress || src_is_outside(ctx));

    if let Some(h) = &side.hashed {
        // TCP and UDP packets are always admitted by their flow's entry (`Tracking::Stream`):
        // the full classification is only needed for the other protocols.
        let tracking = (!matches!(pk.proto, 6 | 17)).then(|| side.tracking(pk));
        let live = flow::Live {
            timeouts: &st.ct.timeouts,
        };
        // The engine owns its tables (`&mut self`): the update needs no slot lock.
        let table = &mut st.ct.groups[side.group as usize].table;
        let found = table.update_hashed_mut(h, now.0, &live, |f| {
            let mut e = f.entry();
            if let Some(t) = &tracking
                && !e.admits(t, dir)
            {
                return Found::NotAdmitted;
            }
            if e.restarted_by(flags) {
                return Found::Restart;
            }
            if let Some(rule) = f.blocked() {
                return Found::Blocked(rule);
            }
            e.advance(dir, flags, now);
            f.set_entry(&e);
            if caches {
                match f.path(generation, dir) {
                    Some(r) if ctx.result.is_none() => ctx.result = Some(r),
                    Some(_) => {}
                    None => f.set_path(generation, dir, ctx.get()),
                }
            }
            Found::Tracked(f.deadline(&ce.timeouts))
        });
        match found {
            Some(Found::Tracked(deadline)) => {
                st.ct.note_deadline(side.group, deadline);
                return Ok(SgPass::Tracked);
            }
            Some(Found::Restart) => {
                table.remove_hashed(h);
            }
            Some(Found::Blocked(rule)) => {
                return Err(Refused {
                    stage: Stage::Inspection,
                    reason: Reason::ByteMatch,
                    inspection: Some(InspectMatch {
                        rule,
                        action: RuleAction::Block,
                        at_destination: dir == Direction::Ingress,
                    }),
                });
            }
            Some(Found::NotAdmitted) | None => {}
        }
    }

    let key = ctx.key;
    let side_rules = &ce.sg[dir as usize];
    let rule = side_rules.first_match(key);
    if matches!(pk.proto, 6 | 17) && untracked(ce, dir, key) {
        // The /0 rule (request) or the /0 all-ports rule (response) allows it.
        let rule = rule.ok_or(Refused::new(stage, Reason::NoSgRule))?;
        st.counters.hit(ctx.ids.id(rule), pk.len);
        return Ok(SgPass::Untracked(rule));
    }
    let Some(rule) = rule else {
        return Err(Refused::new(stage, Reason::NoSgRule));
    };
    let (Some(h), Some(entry)) = (side.hashed, Entry::new(&side.tracking(pk), dir, flags, now))
    else {
        st.counters.hit(ctx.ids.id(rule), pk.len);
        return Ok(SgPass::Rule(rule));
    };
    let path = if caches { ctx.get() } else { PathResult::NONE };
    let flow = Flow::new(&entry, generation, dir, path);
    let deadline = flow.deadline(&ce.timeouts);
    match st.ct.insert(side.group, &h, flow, now, deadline) {
        Inserted::Ok => {
            st.counters.hit(ctx.ids.id(rule), pk.len);
            Ok(SgPass::NewEntry(rule))
        }
        Inserted::Exceeded => {
            st.counters.exceeded += 1;
            Err(Refused::new(Stage::ConntrackAllowance, Reason::Allowance))
        }
    }
}

#[inline]
fn src_is_outside(ctx: &PathCtx<'_>) -> bool {
    ctx.src_subnet.is_none()
}
