//! [`PacketMeta`] and the one-pass parsers [`parse`], [`parse_ip`] and [`parse_frame`].

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::arp::{ArpPacket, ArpRepr};
use super::ethernet::{
    ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN, HEADER_LEN,
    VLAN_HEADER_LEN,
};
use super::icmp;
use super::ipv6::{self, walk_ext_headers};
use super::tcp::TcpFlags;
use super::{Error, Result, be32, protocol};

/// The IP version of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpVersion {
    /// IPv4: addresses are in the low 32 bits of [`PacketMeta::src`] / [`PacketMeta::dst`].
    V4,
    /// IPv6.
    V6,
}

/// Fragment information of a packet.
///
/// An unfragmented IPv4 packet still carries its identification; an IPv6 packet without a
/// Fragment header has `ident` 0. An IPv6 "atomic fragment" (a Fragment header with offset 0
/// and M clear) is not a fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Fragment {
    /// The identification: 16 bits for IPv4, 32 bits for IPv6 (from the Fragment header).
    pub ident: u32,
    /// The fragment offset in units of 8 bytes.
    pub offset: u16,
    /// The More Fragments flag (IPv4 MF, IPv6 M).
    pub more: bool,
    /// The IPv4 Don't Fragment flag (always false for IPv6).
    pub dont_fragment: bool,
}

impl Fragment {
    /// Whether the packet is a fragment (first or not) of a larger datagram.
    pub const fn is_fragment(&self) -> bool {
        self.offset != 0 || self.more
    }

    /// Whether this is the first fragment of a fragmented datagram (it carries the L4 header).
    pub const fn is_first(&self) -> bool {
        self.offset == 0 && self.more
    }

    /// Whether this is a non-first fragment: it carries no L4 header, so no ports.
    pub const fn is_non_first(&self) -> bool {
        self.offset != 0
    }
}

/// The upper-layer header as parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// No upper-layer header was parsed: a non-first fragment, or a protocol other than TCP,
    /// UDP, ICMP and ICMPv6.
    None,
    /// A TCP header.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Flags byte.
        flags: TcpFlags,
        /// Sequence number.
        seq: u32,
        /// Acknowledgment number.
        ack: u32,
    },
    /// A UDP header.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// An ICMP (protocol 1) or ICMPv6 (protocol 58) header.
    Icmp {
        /// Message type.
        ty: u8,
        /// Message code.
        code: u8,
        /// The identifier of a query (ICMP 8/0/13/14, ICMPv6 128/129), else `None`.
        ident: Option<u16>,
    },
}

/// Everything the firewall, conntrack, flow logs and the router read from one IP packet.
///
/// Offsets are counted from the start of the buffer given to the parser (the Ethernet frame for
/// [`parse`], the IP header for [`parse_ip`]); the IP datagram ends at
/// [`l3_end`](Self::l3_end), before any link padding. The extension-header bound keeps every
/// offset below 65536.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PacketMeta {
    /// Source address (IPv4: the address as an integer, in the low 32 bits).
    pub src: u128,
    /// Destination address (IPv4: as for `src`).
    pub dst: u128,
    /// IP version.
    pub version: IpVersion,
    /// The upper-layer protocol (for IPv6, after the extension headers).
    pub protocol: u8,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    /// The upper-layer header.
    pub transport: Transport,
    /// Fragment information.
    pub fragment: Fragment,
    /// The VLAN id of an 802.1Q-tagged frame.
    pub vlan_id: Option<u16>,
    /// IPv4 total length or IPv6 payload length, as in the header.
    pub ip_len: u16,
    /// Offset of the TTL / hop limit byte (the router decrements it).
    pub ttl_offset: u16,
    /// Offset of the IP header (14 or 18 in an Ethernet frame, 0 for [`parse_ip`]).
    pub l3_offset: u16,
    /// Offset of the upper-layer header (after IPv4 options or IPv6 extension headers).
    pub l4_offset: u16,
    /// Offset of the upper-layer payload (after the TCP/UDP/ICMP header; equal to `l4_offset`
    /// when [`transport`](Self::transport) is [`Transport::None`]).
    pub payload_offset: u16,
    /// Length of the upper-layer payload (for UDP, as the UDP length says).
    pub payload_len: u16,
}

impl PacketMeta {
    /// A placeholder (IPv4, all addresses, lengths and offsets zero, no transport) for
    /// [`parse_into`] to overwrite.
    pub const EMPTY: PacketMeta = PacketMeta {
        src: 0,
        dst: 0,
        version: IpVersion::V4,
        protocol: 0,
        ttl: 0,
        transport: Transport::None,
        fragment: Fragment {
            ident: 0,
            offset: 0,
            more: false,
            dont_fragment: false,
        },
        vlan_id: None,
        ip_len: 0,
        ttl_offset: 0,
        l3_offset: 0,
        l4_offset: 0,
        payload_offset: 0,
        payload_len: 0,
    };

    /// The source address.
    pub fn src_ip(&self) -> IpAddr {
        match self.version {
            IpVersion::V4 => IpAddr::V4(Ipv4Addr::from(self.src as u32)),
            IpVersion::V6 => IpAddr::V6(Ipv6Addr::from(self.src)),
        }
    }

    /// The destination address.
    pub fn dst_ip(&self) -> IpAddr {
        match self.version {
            IpVersion::V4 => IpAddr::V4(Ipv4Addr::from(self.dst as u32)),
            IpVersion::V6 => IpAddr::V6(Ipv6Addr::from(self.dst)),
        }
    }

    /// The IPv4 source address as an integer (the low 32 bits of `src`; meaningful for IPv4).
    pub const fn src_v4(&self) -> u32 {
        self.src as u32
    }

    /// The IPv4 destination address as an integer (meaningful for IPv4).
    pub const fn dst_v4(&self) -> u32 {
        self.dst as u32
    }

    /// Whether the packet is a fragment (first or not).
    pub const fn is_fragment(&self) -> bool {
        self.fragment.is_fragment()
    }

    /// Whether the packet is a non-first fragment (no L4 header, no ports).
    pub const fn is_non_first_fragment(&self) -> bool {
        self.fragment.is_non_first()
    }

    /// TCP or UDP source and destination ports.
    pub const fn ports(&self) -> Option<(u16, u16)> {
        match self.transport {
            Transport::Tcp {
                src_port, dst_port, ..
            }
            | Transport::Udp { src_port, dst_port } => Some((src_port, dst_port)),
            _ => None,
        }
    }

    /// The TCP flags (empty when the packet is not TCP with a header).
    pub const fn tcp_flags(&self) -> TcpFlags {
        match self.transport {
            Transport::Tcp { flags, .. } => flags,
            _ => TcpFlags::EMPTY,
        }
    }

    /// ICMP/ICMPv6 type and code.
    pub const fn icmp(&self) -> Option<(u8, u8)> {
        match self.transport {
            Transport::Icmp { ty, code, .. } => Some((ty, code)),
            _ => None,
        }
    }

    /// The identifier of an ICMP/ICMPv6 query (echo, timestamp).
    pub const fn icmp_ident(&self) -> Option<u16> {
        match self.transport {
            Transport::Icmp { ident, .. } => ident,
            _ => None,
        }
    }

    /// The two port fields as the matcher reads them: TCP/UDP source and destination ports;
    /// ICMP type and code; `(0, 0)` otherwise.
    pub const fn match_ports(&self) -> (u16, u16) {
        match self.transport {
            Transport::Tcp {
                src_port, dst_port, ..
            }
            | Transport::Udp { src_port, dst_port } => (src_port, dst_port),
            Transport::Icmp { ty, code, .. } => (ty as u16, code as u16),
            Transport::None => (0, 0),
        }
    }

    /// Length of the IP header including options or extension headers.
    pub const fn ip_header_len(&self) -> usize {
        (self.l4_offset - self.l3_offset) as usize
    }

    /// Length of the upper-layer header (0 for [`Transport::None`]).
    pub const fn l4_header_len(&self) -> usize {
        (self.payload_offset - self.l4_offset) as usize
    }

    /// The size of the IP datagram (header and payload) in bytes, as flow logs count it.
    pub const fn ip_total_len(&self) -> usize {
        match self.version {
            IpVersion::V4 => self.ip_len as usize,
            IpVersion::V6 => ipv6::HEADER_LEN + self.ip_len as usize,
        }
    }

    /// Offset of the end of the IP datagram in the parsed buffer (link padding follows).
    pub const fn l3_end(&self) -> usize {
        self.l3_offset as usize + self.ip_total_len()
    }
}

/// A parsed Ethernet frame: an IP packet or an ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Frame {
    /// IPv4 or IPv6.
    Ip(PacketMeta),
    /// Ethernet/IPv4 ARP.
    Arp {
        /// The VLAN id of an 802.1Q-tagged frame.
        vlan_id: Option<u16>,
        /// The ARP fields.
        arp: ArpRepr,
    },
}

/// Reads the Ethernet header: (EtherType, offset of the payload, VLAN id).
#[inline(always)]
fn link(frame: &[u8]) -> Result<(u16, usize, Option<u16>)> {
    let Some(eth) = frame.first_chunk::<HEADER_LEN>() else {
        return Err(Error::Truncated);
    };
    let ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    if ethertype != ETHERTYPE_VLAN {
        return Ok((ethertype, HEADER_LEN, None));
    }
    let Some(tagged) = frame.first_chunk::<VLAN_HEADER_LEN>() else {
        return Err(Error::Truncated);
    };
    let inner = u16::from_be_bytes([tagged[16], tagged[17]]);
    if inner == ETHERTYPE_VLAN || inner == ETHERTYPE_QINQ {
        return Err(Error::TooManyVlanTags);
    }
    let vlan = u16::from_be_bytes([tagged[14], tagged[15]]) & 0x0fff;
    Ok((inner, VLAN_HEADER_LEN, Some(vlan)))
}

/// Parses an Ethernet II frame (at most one 802.1Q tag) carrying IPv4 or IPv6.
///
/// Any other EtherType, ARP included, is [`Error::UnsupportedEtherType`]; see [`parse_frame`].
#[inline]
pub fn parse(frame: &[u8]) -> Result<PacketMeta> {
    let mut meta = PacketMeta::EMPTY;
    parse_into(frame, &mut meta)?;
    Ok(meta)
}

/// Like [`parse`], but writes into `meta` (for a burst of frames parsed into one array).
///
/// On error, `meta` holds unspecified (but valid) values.
#[inline(never)]
pub fn parse_into(frame: &[u8], meta: &mut PacketMeta) -> Result<()> {
    let (ethertype, l3, vlan) = link(frame)?;
    meta.vlan_id = vlan;
    match ethertype {
        ETHERTYPE_IPV4 => ipv4_into(frame, l3, meta),
        ETHERTYPE_IPV6 => ipv6_into(frame, l3, meta),
        _ => Err(Error::UnsupportedEtherType),
    }
}

/// Parses an Ethernet II frame carrying IPv4, IPv6 or Ethernet/IPv4 ARP.
pub fn parse_frame(frame: &[u8]) -> Result<Frame> {
    let (ethertype, l3, vlan) = link(frame)?;
    if ethertype == ETHERTYPE_ARP {
        let packet = ArpPacket::new_checked(&frame[l3..])?;
        return Ok(Frame::Arp {
            vlan_id: vlan,
            arp: ArpRepr::parse(&packet),
        });
    }
    parse(frame).map(Frame::Ip)
}

/// Parses a raw IPv4 or IPv6 packet (no link header); the version nibble decides.
#[inline]
pub fn parse_ip(packet: &[u8]) -> Result<PacketMeta> {
    let mut meta = PacketMeta::EMPTY;
    match packet.first().map(|b| b >> 4) {
        None => return Err(Error::Truncated),
        Some(4) => ipv4_into(packet, 0, &mut meta)?,
        Some(6) => ipv6_into(packet, 0, &mut meta)?,
        Some(_) => return Err(Error::BadVersion),
    }
    Ok(meta)
}

/// Parses the upper-layer header at the start of `seg` (the rest of the IP payload, which
/// starts at `meta.l4_offset`) into `meta.transport`, `payload_offset` and `payload_len`.
///
/// `whole` is false in a first fragment, where the UDP length covers more than `seg`.
#[inline(always)]
fn l4_into(protocol: u8, seg: &[u8], whole: bool, meta: &mut PacketMeta) -> Result<()> {
    let (transport, header_len, payload_len) = match protocol {
        protocol::TCP => {
            let Some(h) = seg.first_chunk::<20>() else {
                return Err(Error::Truncated);
            };
            let header_len = usize::from(h[12] >> 4) * 4;
            if header_len < 20 {
                return Err(Error::BadTcpOffset);
            }
            if header_len > seg.len() {
                return Err(Error::Truncated);
            }
            let transport = Transport::Tcp {
                src_port: u16::from_be_bytes([h[0], h[1]]),
                dst_port: u16::from_be_bytes([h[2], h[3]]),
                flags: TcpFlags(h[13]),
                seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            };
            (transport, header_len, seg.len() - header_len)
        }
        protocol::UDP => {
            let Some(h) = seg.first_chunk::<8>() else {
                return Err(Error::Truncated);
            };
            let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            if len < 8 || (whole && len > seg.len()) {
                return Err(Error::BadUdpLength);
            }
            let transport = Transport::Udp {
                src_port: u16::from_be_bytes([h[0], h[1]]),
                dst_port: u16::from_be_bytes([h[2], h[3]]),
            };
            (transport, 8, if whole { len } else { seg.len() } - 8)
        }
        protocol::ICMP | protocol::ICMPV6 => {
            let Some(h) = seg.first_chunk::<8>() else {
                return Err(Error::Truncated);
            };
            let ty = h[0];
            // A timestamp request/reply carries three 32-bit timestamps (RFC 792): 20 bytes.
            if protocol == protocol::ICMP
                && matches!(ty, icmp::TIMESTAMP_REQUEST | icmp::TIMESTAMP_REPLY)
                && seg.len() < icmp::TIMESTAMP_LEN
            {
                return Err(Error::Truncated);
            }
            let ident = icmp::is_query(protocol, ty).then(|| u16::from_be_bytes([h[4], h[5]]));
            (
                Transport::Icmp {
                    ty,
                    code: h[1],
                    ident,
                },
                8,
                seg.len() - 8,
            )
        }
        _ => (Transport::None, 0, seg.len()),
    };
    meta.transport = transport;
    meta.payload_offset = meta.l4_offset + header_len as u16;
    meta.payload_len = payload_len as u16;
    Ok(())
}

/// The upper layer of a possibly fragmented packet: checks the fragment against the 65535-byte
/// datagram limit and RFC 1858, and parses the L4 header unless this is a non-first fragment.
#[inline(always)]
fn fragment_l4_into(protocol: u8, seg: &[u8], meta: &mut PacketMeta) -> Result<()> {
    let frag = meta.fragment;
    if frag.offset == 0 {
        return l4_into(protocol, seg, !frag.more, meta);
    }
    if usize::from(frag.offset) * 8 + seg.len() > 65535
        || (protocol == protocol::TCP && frag.offset == 1)
    {
        return Err(Error::BadFragment);
    }
    meta.transport = Transport::None;
    meta.payload_offset = meta.l4_offset;
    meta.payload_len = seg.len() as u16;
    Ok(())
}

/// Parses the IPv4 packet at `buf[l3..]` into `meta` (all fields but `vlan_id`).
#[inline(always)]
fn ipv4_into(buf: &[u8], l3: usize, meta: &mut PacketMeta) -> Result<()> {
    let ip = buf.get(l3..).unwrap_or_default();
    let Some(h) = ip.first_chunk::<20>() else {
        return Err(Error::Truncated);
    };
    if h[0] >> 4 != 4 {
        return Err(Error::BadVersion);
    }
    let header_len = usize::from(h[0] & 0x0f) * 4;
    if header_len < 20 {
        return Err(Error::BadIhl);
    }
    let total = u16::from_be_bytes([h[2], h[3]]);
    if usize::from(total) < header_len || usize::from(total) > ip.len() {
        return Err(Error::BadTotalLength);
    }
    let frag_word = u16::from_be_bytes([h[6], h[7]]);
    meta.fragment = Fragment {
        ident: u32::from(u16::from_be_bytes([h[4], h[5]])),
        offset: frag_word & 0x1fff,
        more: frag_word & 0x2000 != 0,
        dont_fragment: frag_word & 0x4000 != 0,
    };
    let protocol = h[9];
    meta.src = u128::from(u32::from_be_bytes([h[12], h[13], h[14], h[15]]));
    meta.dst = u128::from(u32::from_be_bytes([h[16], h[17], h[18], h[19]]));
    meta.version = IpVersion::V4;
    meta.protocol = protocol;
    meta.ttl = h[8];
    meta.ip_len = total;
    meta.ttl_offset = (l3 + 8) as u16;
    meta.l3_offset = l3 as u16;
    meta.l4_offset = (l3 + header_len) as u16;
    fragment_l4_into(protocol, &ip[header_len..usize::from(total)], meta)
}

/// Parses the IPv6 packet at `buf[l3..]` into `meta` (all fields but `vlan_id`).
#[inline(always)]
fn ipv6_into(buf: &[u8], l3: usize, meta: &mut PacketMeta) -> Result<()> {
    let ip = buf.get(l3..).unwrap_or_default();
    let Some(h) = ip.first_chunk::<{ ipv6::HEADER_LEN }>() else {
        return Err(Error::Truncated);
    };
    if h[0] >> 4 != 6 {
        return Err(Error::BadVersion);
    }
    let payload_len = u16::from_be_bytes([h[4], h[5]]);
    let end = ipv6::HEADER_LEN + usize::from(payload_len);
    if end > ip.len() {
        return Err(Error::BadTotalLength);
    }
    let payload = &ip[ipv6::HEADER_LEN..end];
    let chain = walk_ext_headers(h[6], payload)?;
    meta.fragment = match chain.fragment {
        Some(f) => Fragment {
            ident: f.ident,
            offset: f.offset,
            more: f.more,
            dont_fragment: false,
        },
        None => Fragment::default(),
    };
    meta.src = u128::from(be32(h, 8)) << 96
        | u128::from(be32(h, 12)) << 64
        | u128::from(be32(h, 16)) << 32
        | u128::from(be32(h, 20));
    meta.dst = u128::from(be32(h, 24)) << 96
        | u128::from(be32(h, 28)) << 64
        | u128::from(be32(h, 32)) << 32
        | u128::from(be32(h, 36));
    meta.version = IpVersion::V6;
    meta.protocol = chain.protocol;
    meta.ttl = h[ipv6::HOP_LIMIT_OFFSET];
    meta.ip_len = payload_len;
    meta.ttl_offset = (l3 + ipv6::HOP_LIMIT_OFFSET) as u16;
    meta.l3_offset = l3 as u16;
    meta.l4_offset = (l3 + ipv6::HEADER_LEN + chain.len) as u16;
    fragment_l4_into(chain.protocol, &payload[chain.len..], meta)
}

#[cfg(test)]
mod tests;
