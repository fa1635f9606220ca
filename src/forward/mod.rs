//! The VPC router, sans I/O: frames in, frames out.
//!
//! A [`Router`] owns a set of *ports* — one per ENI (a TAP whose other side is the instance's
//! interface) and optionally one "internet" port standing in for the internet gateway and the
//! AWS services behind the exempt addresses. For each frame that arrives on a port,
//! [`Router::handle`] decides, as the AWS hypervisor and VPC router do:
//!
//! * **ARP** requests from an ENI are answered with the router's MAC for the subnet's gateway
//!   (base + 1) and for every address the subnet's route table routes (including blackholed
//!   routes, so that the firewall can reject at the `route` stage); requests from the internet
//!   port are answered for every ENI address. **IPv6 Neighbor Solicitations** are answered
//!   likewise (the gateway is `fe80::1` and the subnet's base + 1), other neighbour-discovery
//!   and multicast traffic is absorbed.
//! * **IP** frames are checked against their port (the source/destination check: an ENI may
//!   only send from its own addresses; the internet port never from an ENI's address), judged
//!   by the [`Firewall`] (SPEC §3: security groups, NACLs, the route table with longest prefix
//!   match, blackholes and `local`), and when accepted delivered to the destination ENI's
//!   port, or to the internet port when the destination is outside the VPC, with the MAC
//!   addresses rewritten and the TTL / hop limit decremented.
//!
//! Nothing here reads a clock or performs I/O; [`run`] is the edge that moves frames between
//! TAP devices and this module. The frame is rewritten in place (no allocation per frame).

#[cfg(target_os = "linux")]
pub mod demo;
#[cfg(target_os = "linux")]
pub mod lab;
#[cfg(target_os = "linux")]
pub mod run;

use crate::compile::CompiledPolicy;
use crate::conntrack::Time;
use crate::firewall::{Decision, Firewall, Packet, Verdict};
use crate::wire::{
    self, ArpOperation, EthernetRepr, Frame, IpRepr, IpVersion, Ipv6Repr, L4Repr, MacAddr,
    PacketBuilder, PacketMeta, Transport,
};
use std::net::IpAddr;

/// The MAC address of the VPC router on every port (locally administered).
pub const ROUTER_MAC: MacAddr = MacAddr([0x02, 0x76, 0x70, 0x63, 0x66, 0x01]);

/// The router's IPv6 link-local address (the IPv6 default gateway of every subnet).
pub const ROUTER_LINK_LOCAL: u128 = 0xfe80_0000_0000_0000_0000_0000_0000_0001;

/// What a port is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attach {
    /// The network interface with this id (`eni-…`).
    Eni(String),
    /// The internet gateway stand-in: destinations outside the VPC and the exempt service
    /// addresses (DNS, metadata) are delivered here.
    Internet,
}

/// One port of the router.
#[derive(Clone, Debug)]
pub struct Port {
    /// A name for logs and metrics (the TAP device's name).
    pub name: String,
    /// What it is attached to.
    pub attach: Attach,
    /// The MAC address of the interface on the other side (set on the device at start,
    /// learned from the frames it sends afterwards).
    pub peer_mac: MacAddr,
    /// Index of the ENI in the current policy (`None` for the internet port, or when the ENI
    /// is gone after a reload: the port then drops everything).
    eni: Option<u32>,
}

/// Why a frame was not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The firewall rejected it (the verdict says where).
    Rejected,
    /// Malformed headers (or an inconsistent virtio-net header).
    Malformed,
    /// Neither IP nor ARP.
    NotIp,
    /// Link-local, multicast or neighbour-discovery traffic the router absorbs.
    Local,
    /// An ARP request or Neighbor Solicitation the router does not answer.
    NotAnswered,
    /// The source address does not belong to the port (source/destination check).
    Spoofed,
    /// The ENI of the port is not in the current policy.
    Detached,
    /// The firewall cannot place the packet (no ENI on either side, mixed families).
    NotInVpc,
    /// Accepted, but the destination ENI has no port.
    NoPort,
    /// Accepted and leaving the VPC, but there is no internet port.
    NoInternet,
    /// TTL or hop limit exhausted.
    TtlExpired,
}

impl DropReason {
    /// Every reason, in the order of [`DropReason::index`].
    pub const ALL: [DropReason; 11] = [
        DropReason::Rejected,
        DropReason::Malformed,
        DropReason::NotIp,
        DropReason::Local,
        DropReason::NotAnswered,
        DropReason::Spoofed,
        DropReason::Detached,
        DropReason::NotInVpc,
        DropReason::NoPort,
        DropReason::NoInternet,
        DropReason::TtlExpired,
    ];

    /// A stable lowercase name (metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Rejected => "rejected",
            DropReason::Malformed => "malformed",
            DropReason::NotIp => "not_ip",
            DropReason::Local => "local",
            DropReason::NotAnswered => "not_answered",
            DropReason::Spoofed => "spoofed",
            DropReason::Detached => "detached",
            DropReason::NotInVpc => "not_in_vpc",
            DropReason::NoPort => "no_port",
            DropReason::NoInternet => "no_internet",
            DropReason::TtlExpired => "ttl_expired",
        }
    }

    /// Position in [`DropReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send the (rewritten in place) frame out of this port.
    Forward(u16),
    /// Send the `len` bytes written into the reply buffer back out of the input port.
    Reply(usize),
    /// Drop it.
    Drop(DropReason),
}

/// The answer of [`Router::handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handled {
    /// What to do.
    pub outcome: Outcome,
    /// The packet and the firewall's verdict, when the firewall judged the frame.
    pub judged: Option<(Packet, Verdict)>,
}

impl Handled {
    fn drop(reason: DropReason) -> Handled {
        Handled {
            outcome: Outcome::Drop(reason),
            judged: None,
        }
    }
}

/// Counters of the router (the firewall keeps its own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Frames handled.
    pub frames: u64,
    /// Frames forwarded.
    pub forwarded: u64,
    /// ARP replies sent.
    pub arp_replies: u64,
    /// Neighbor Advertisements sent.
    pub nd_replies: u64,
    /// Frames dropped, by [`DropReason::index`].
    pub dropped: [u64; 11],
}

/// The VPC router over a set of ports.
#[derive(Clone, Debug)]
pub struct Router {
    ports: Vec<Port>,
    /// ENI index in the current policy → port.
    eni_port: Vec<Option<u16>>,
    internet: Option<u16>,
    /// Skip the firewall (a null forwarder, for measuring the I/O path alone).
    bypass: bool,
    stats: RouterStats,
}

/// The default MAC of the interface behind port `i` (locally administered, "ENI" + index).
pub fn default_peer_mac(i: usize) -> MacAddr {
    MacAddr([0x02, 0x45, 0x4e, 0x49, (i >> 8) as u8, i as u8])
}

impl Router {
    /// A router with one port per `(name, attach)`, in order (port numbers are positions).
    /// Fails when an ENI is not in `policy`, is attached twice, or there are two internet
    /// ports (or more than 65535 ports).
    pub fn new(policy: &CompiledPolicy, ports: Vec<(String, Attach)>) -> Result<Router, String> {
        if ports.len() > usize::from(u16::MAX) {
            return Err("too many ports".into());
        }
        let mut internet = None;
        let mut list = Vec::with_capacity(ports.len());
        for (i, (name, attach)) in ports.into_iter().enumerate() {
            match &attach {
                Attach::Internet if internet.is_some() => {
                    return Err(format!("port {name}: a second internet port"));
                }
                Attach::Internet => internet = Some(i as u16),
                Attach::Eni(id) => {
                    if list
                        .iter()
                        .any(|p: &Port| matches!(&p.attach, Attach::Eni(o) if o == id))
                    {
                        return Err(format!("port {name}: {id} is attached to two ports"));
                    }
                    if !policy.policy().enis.iter().any(|e| &e.id == id) {
                        return Err(format!(
                            "port {name}: network interface {id} is not in the snapshot"
                        ));
                    }
                }
            }
            list.push(Port {
                name,
                attach,
                peer_mac: default_peer_mac(i),
                eni: None,
            });
        }
        let mut r = Router {
            ports: list,
            eni_port: Vec::new(),
            internet,
            bypass: false,
            stats: RouterStats::default(),
        };
        r.reload(policy);
        Ok(r)
    }

    /// Skips the firewall: every IP frame that passes the port checks is delivered by its
    /// destination address alone (the null forwarder of the throughput benchmark).
    pub fn set_bypass(&mut self, bypass: bool) {
        self.bypass = bypass;
    }

    /// Re-resolves the ports' ENIs in a new policy (call with the policy given to
    /// [`Firewall::reload`]). Ports whose ENI is gone drop everything; returns their names.
    pub fn reload(&mut self, policy: &CompiledPolicy) -> Vec<String> {
        let enis = &policy.policy().enis;
        self.eni_port = vec![None; enis.len()];
        let mut gone = Vec::new();
        for (i, port) in self.ports.iter_mut().enumerate() {
            port.eni = match &port.attach {
                Attach::Internet => None,
                Attach::Eni(id) => {
                    let found = enis.iter().position(|e| &e.id == id).map(|x| x as u32);
                    if found.is_none() {
                        gone.push(port.name.clone());
                    }
                    found
                }
            };
            if let Some(e) = port.eni {
                self.eni_port[e as usize] = Some(i as u16);
            }
        }
        gone
    }

    /// The ports, by number.
    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    /// Counters.
    pub fn stats(&self) -> RouterStats {
        self.stats
    }

    /// Handles one Ethernet `frame` that arrived on port `in_port` at `now`. A forwarded
    /// frame is rewritten in place; a reply (ARP, Neighbor Advertisement) is written into
    /// `reply` (at least 128 bytes). `fw` judges every IP packet (unless bypassed).
    pub fn handle(
        &mut self,
        fw: &mut Firewall,
        now: Time,
        in_port: u16,
        frame: &mut [u8],
        reply: &mut [u8],
    ) -> Handled {
        self.stats.frames += 1;
        let h = self.handle_inner(fw, now, in_port, frame, reply);
        match h.outcome {
            Outcome::Forward(_) => self.stats.forwarded += 1,
            Outcome::Reply(_) => {}
            Outcome::Drop(r) => self.stats.dropped[r.index()] += 1,
        }
        h
    }

    /// Counts a frame dropped before it reached [`Router::handle`] (e.g. a bad virtio-net
    /// header).
    pub fn count_drop(&mut self, reason: DropReason) {
        self.stats.frames += 1;
        self.stats.dropped[reason.index()] += 1;
    }

    fn handle_inner(
        &mut self,
        fw: &mut Firewall,
        now: Time,
        in_port: u16,
        frame: &mut [u8],
        reply: &mut [u8],
    ) -> Handled {
        let Some(port) = self.ports.get(usize::from(in_port)) else {
            return Handled::drop(DropReason::Detached);
        };
        let port_eni = port.eni;
        if matches!(port.attach, Attach::Eni(_)) && port_eni.is_none() {
            return Handled::drop(DropReason::Detached);
        }
        let meta = match wire::parse_frame(frame) {
            Ok(Frame::Arp { arp, vlan_id }) => {
                return self.arp(fw.policy(), in_port, arp, vlan_id, reply);
            }
            Ok(Frame::Ip(meta)) => meta,
            Err(wire::Error::UnsupportedEtherType) => return Handled::drop(DropReason::NotIp),
            Err(_) => {
                // Let the firewall count it (stage `malformed`).
                let judged = fw.process_frame(now, frame).ok();
                return Handled {
                    outcome: Outcome::Drop(DropReason::Malformed),
                    judged,
                };
            }
        };
        let src = meta.src_ip();
        let dst = meta.dst_ip();
        if is_local_only(&meta) {
            if let Some(len) = self.neighbor_solicitation(fw.policy(), in_port, frame, &meta, reply)
            {
                return Handled {
                    outcome: Outcome::Reply(len),
                    judged: None,
                };
            }
            return Handled::drop(DropReason::Local);
        }
        let policy = fw.policy();
        let src_eni = policy.eni_of(src);
        // The source/destination check.
        if src_eni != port_eni {
            return Handled::drop(DropReason::Spoofed);
        }
        let mac = wire::EthernetFrame::new_unchecked(&*frame).src_addr();
        if port_eni.is_some() && !mac.is_multicast() {
            self.ports[usize::from(in_port)].peer_mac = mac;
        }
        if meta.ttl <= 1 {
            return Handled::drop(DropReason::TtlExpired);
        }
        let (out, judged) = if self.bypass {
            let dst_eni = fw.policy().eni_of(dst);
            (dst_eni, None)
        } else {
            let pkt = Packet::from_meta(&meta);
            // The transport payload and TCP sequence number, for the inspection stage.
            let (seq, payload) = match meta.transport {
                wire::Transport::Tcp { seq, .. } => (seq, transport_payload(frame, &meta)),
                wire::Transport::Udp { .. } => (0, transport_payload(frame, &meta)),
                _ => (0, &[][..]),
            };
            match fw.process_with_payload(now, &pkt, seq, payload) {
                Err(_) => return Handled::drop(DropReason::NotInVpc),
                Ok(v) if v.decision == Decision::Reject => {
                    return Handled {
                        outcome: Outcome::Drop(DropReason::Rejected),
                        judged: Some((pkt, v)),
                    };
                }
                Ok(v) => (v.dst_eni, Some((pkt, v))),
            }
        };
        let out_port = match out {
            Some(e) => match self.eni_port.get(e as usize).copied().flatten() {
                Some(p) => p,
                None => {
                    return Handled {
                        outcome: Outcome::Drop(DropReason::NoPort),
                        judged,
                    };
                }
            },
            None => match self.internet {
                Some(p) if p != in_port => p,
                _ => {
                    return Handled {
                        outcome: Outcome::Drop(DropReason::NoInternet),
                        judged,
                    };
                }
            },
        };
        if wire::decrement_ttl(frame, &meta).is_err() {
            return Handled {
                outcome: Outcome::Drop(DropReason::TtlExpired),
                judged,
            };
        }
        let mut eth = wire::EthernetFrame::new_unchecked(&mut *frame);
        eth.set_dst_addr(self.ports[usize::from(out_port)].peer_mac);
        eth.set_src_addr(ROUTER_MAC);
        Handled {
            outcome: Outcome::Forward(out_port),
            judged,
        }
    }

    /// Whether the router answers for IPv4 address `target` on `in_port`.
    fn answers_v4(&self, policy: &CompiledPolicy, in_port: u16, sender: u32, target: u32) -> bool {
        let port = &self.ports[usize::from(in_port)];
        let target_ip = IpAddr::V4(target.into());
        let Some(eni) = port.eni else {
            // Internet side: every address of an ENI (the igw routes to the VPC).
            return matches!(port.attach, Attach::Internet)
                && policy.eni_of(target_ip).is_some()
                && policy.eni_of(IpAddr::V4(sender.into())).is_none();
        };
        // Never for the ENI's own addresses (gratuitous ARP, conflicts).
        if policy.eni_of(target_ip) == Some(eni) {
            return false;
        }
        let ce = &policy.enis[eni as usize];
        let subnet = &policy.policy().subnets[ce.subnet as usize];
        if let Some(net) = subnet.cidr
            && target == u32::from(net.network()).wrapping_add(1)
        {
            return true;
        }
        let Some(t) = policy.subnets[ce.subnet as usize].route_table else {
            return false;
        };
        policy.routes[t as usize]
            .v4
            .iter()
            .any(|(p, _)| p.contains(target))
    }

    /// Whether the router answers Neighbor Solicitations for `target` on `in_port`.
    fn answers_v6(&self, policy: &CompiledPolicy, in_port: u16, target: u128) -> bool {
        let port = &self.ports[usize::from(in_port)];
        let target_ip = IpAddr::V6(target.into());
        let Some(eni) = port.eni else {
            return matches!(port.attach, Attach::Internet) && policy.eni_of(target_ip).is_some();
        };
        if target == ROUTER_LINK_LOCAL {
            return true;
        }
        if policy.eni_of(target_ip) == Some(eni) || target >> 118 == 0xfe80 >> 6 {
            return false;
        }
        let ce = &policy.enis[eni as usize];
        let subnet = &policy.policy().subnets[ce.subnet as usize];
        if subnet
            .ipv6_cidrs
            .iter()
            .any(|n| target == u128::from(n.network()).wrapping_add(1))
        {
            return true;
        }
        let Some(t) = policy.subnets[ce.subnet as usize].route_table else {
            return false;
        };
        policy.routes[t as usize]
            .v6
            .iter()
            .any(|(p, _)| p.contains(target))
    }

    fn arp(
        &mut self,
        policy: &CompiledPolicy,
        in_port: u16,
        arp: wire::ArpRepr,
        vlan_id: Option<u16>,
        reply: &mut [u8],
    ) -> Handled {
        if arp.operation != ArpOperation::Request || arp.sender_ip == 0 {
            return Handled::drop(DropReason::Local);
        }
        let port = &self.ports[usize::from(in_port)];
        // The sender must be the port's ENI (or, on the internet port, no ENI).
        if policy.eni_of(IpAddr::V4(arp.sender_ip.into())) != port.eni {
            return Handled::drop(DropReason::Spoofed);
        }
        if !self.answers_v4(policy, in_port, arp.sender_ip, arp.target_ip) {
            return Handled::drop(DropReason::NotAnswered);
        }
        let port = &mut self.ports[usize::from(in_port)];
        if !arp.sender_mac.is_multicast() {
            port.peer_mac = arp.sender_mac;
        }
        let eth = EthernetRepr {
            src: ROUTER_MAC,
            dst: arp.sender_mac,
            vlan_id,
        };
        match wire::emit_arp_frame(&eth, &arp.reply(ROUTER_MAC), reply) {
            Ok(len) => {
                self.stats.arp_replies += 1;
                Handled {
                    outcome: Outcome::Reply(len),
                    judged: None,
                }
            }
            Err(_) => Handled::drop(DropReason::Malformed),
        }
    }

    /// Answers a Neighbor Solicitation the router owns the target of; `None` otherwise.
    fn neighbor_solicitation(
        &mut self,
        policy: &CompiledPolicy,
        in_port: u16,
        frame: &[u8],
        meta: &PacketMeta,
        reply: &mut [u8],
    ) -> Option<usize> {
        // ICMPv6 135, hop limit 255, a real (not unspecified: DAD) source.
        if meta.version != IpVersion::V6
            || meta.protocol != wire::protocol::ICMPV6
            || !matches!(
                meta.transport,
                Transport::Icmp {
                    ty: 135,
                    code: 0,
                    ..
                }
            )
            || meta.ttl != 255
            || meta.src == 0
        {
            return None;
        }
        let body = frame.get(usize::from(meta.l4_offset) + 8..meta.l3_end())?;
        let target = u128::from_be_bytes(body.get(..16)?.try_into().ok()?);
        // The solicitation's source link-layer address option, else the frame's source.
        let mut mac = wire::EthernetFrame::new_unchecked(frame).src_addr();
        let mut opts = &body[16..];
        while opts.len() >= 8 && opts[1] != 0 {
            let len = usize::from(opts[1]) * 8;
            if opts.len() < len {
                break;
            }
            if opts[0] == 1 {
                mac = MacAddr(opts[2..8].try_into().ok()?);
            }
            opts = &opts[len..];
        }
        let src_ip = IpAddr::V6(meta.src.into());
        let port = &self.ports[usize::from(in_port)];
        let link_local_src = meta.src >> 118 == 0xfe80 >> 6;
        if !link_local_src && policy.eni_of(src_ip) != port.eni {
            return None;
        }
        if !self.answers_v6(policy, in_port, target) {
            return None;
        }
        let router = target == ROUTER_LINK_LOCAL;
        let flags: u16 = (if router { 0x8000 } else { 0 }) | 0x4000 | 0x2000;
        let mut payload = [0u8; 24];
        payload[..16].copy_from_slice(&target.to_be_bytes());
        payload[16] = 2;
        payload[17] = 1;
        payload[18..24].copy_from_slice(&ROUTER_MAC.0);
        let b = PacketBuilder {
            ethernet: Some(EthernetRepr {
                src: ROUTER_MAC,
                dst: mac,
                vlan_id: meta.vlan_id,
            }),
            ip: IpRepr::V6(Ipv6Repr {
                hop_limit: 255,
                ..Ipv6Repr::new(target, meta.src)
            }),
            l4: L4Repr::Icmp {
                ty: 136,
                code: 0,
                ident: flags,
                seq: 0,
            },
            payload: &payload,
        };
        let len = b.emit(reply).ok()?;
        self.stats.nd_replies += 1;
        Some(len)
    }
}

/// Traffic the router absorbs instead of routing: IPv6 link-local sources, multicast and
/// broadcast destinations, neighbour discovery.
fn is_local_only(meta: &PacketMeta) -> bool {
    match meta.version {
        IpVersion::V4 => {
            let d = meta.dst_v4();
            d >> 28 == 0xe || d == u32::MAX
        }
        IpVersion::V6 => {
            meta.dst >> 120 == 0xff
                || meta.src >> 118 == 0xfe80 >> 6
                || meta.dst >> 118 == 0xfe80 >> 6
                || matches!(meta.transport, Transport::Icmp { ty: 133..=137, .. })
        }
    }
}

/// The bytes after the transport header of a parsed frame (empty if the lengths disagree).
fn transport_payload<'a>(frame: &'a [u8], meta: &wire::PacketMeta) -> &'a [u8] {
    let start = usize::from(meta.payload_offset);
    frame
        .get(start..start + usize::from(meta.payload_len))
        .unwrap_or(&[])
}

#[cfg(test)]
mod tests;
