//! Building frames into a caller buffer (for tests, benchmarks and the router) and the in-place
//! TTL / hop-limit decrement of a forwarded packet.
//!
//! [`PacketBuilder`] writes Ethernet (optionally tagged) + IPv4/IPv6 (with options or extension
//! headers) + TCP/UDP/ICMP/ICMPv6 or raw bytes, and computes the IPv4 header checksum and the
//! TCP, UDP and ICMPv6 pseudo-header checksums (and the ICMPv4 checksum). The L4 checksum covers
//! the bytes written: for the first fragment of a datagram it is not the datagram's checksum.
//! With a Routing header, the pseudo-header uses the IPv6 header's destination.

use super::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, MacAddr};
#[cfg(test)]
use super::meta::Frame;
use super::meta::{IpVersion, PacketMeta};
use super::tcp::TcpFlags;
use super::{ArpRepr, Error, Result, checksum, ipv4, ipv6, protocol, put16, put32};

/// An Ethernet header to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetRepr {
    /// Source address.
    pub src: MacAddr,
    /// Destination address.
    pub dst: MacAddr,
    /// An 802.1Q tag with this VLAN id (PCP and DEI zero), if any.
    pub vlan_id: Option<u16>,
}

impl EthernetRepr {
    /// The header length: 14, or 18 with a tag.
    pub const fn header_len(&self) -> usize {
        if self.vlan_id.is_some() { 18 } else { 14 }
    }

    /// Writes the header with `ethertype` at the start of `buf`; returns its length.
    pub fn emit(&self, ethertype: u16, buf: &mut [u8]) -> Result<usize> {
        let len = self.header_len();
        let b = buf.get_mut(..len).ok_or(Error::BufferTooSmall)?;
        b[0..6].copy_from_slice(&self.dst.0);
        b[6..12].copy_from_slice(&self.src.0);
        if let Some(vid) = self.vlan_id {
            put16(b, 12, ETHERTYPE_VLAN);
            put16(b, 14, vid & 0x0fff);
        }
        put16(b, len - 2, ethertype);
        Ok(len)
    }
}

/// Writes an Ethernet frame carrying `arp` into `buf`; returns the frame length (no padding).
pub fn emit_arp_frame(eth: &EthernetRepr, arp: &ArpRepr, buf: &mut [u8]) -> Result<usize> {
    let l2 = eth.emit(super::ethernet::ETHERTYPE_ARP, buf)?;
    arp.emit(buf.get_mut(l2..).ok_or(Error::BufferTooSmall)?)?;
    Ok(l2 + super::arp::PACKET_LEN)
}

/// An IPv4 header to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr<'a> {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Time to live.
    pub ttl: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment flag.
    pub dont_fragment: bool,
    /// More Fragments flag.
    pub more_fragments: bool,
    /// Fragment offset in units of 8 bytes (≤ 8191).
    pub frag_offset: u16,
    /// Options (padded with zero bytes to a multiple of 4; at most 40 bytes).
    pub options: &'a [u8],
}

impl Ipv4Repr<'_> {
    /// An unfragmented header with TTL 64, identification 0 and no options.
    pub const fn new(src: u32, dst: u32) -> Self {
        Ipv4Repr {
            src,
            dst,
            ttl: 64,
            ident: 0,
            dont_fragment: false,
            more_fragments: false,
            frag_offset: 0,
            options: &[],
        }
    }
}

/// An IPv6 extension header to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtHeader<'a> {
    /// Hop-by-Hop Options with these option bytes (padded with Pad1/PadN).
    HopByHop(&'a [u8]),
    /// Routing header of `routing_type`, with type-specific `data` (padded with zeros).
    Routing {
        /// Routing type.
        routing_type: u8,
        /// Segments left.
        segments_left: u8,
        /// Type-specific data after the first four bytes.
        data: &'a [u8],
    },
    /// Destination Options with these option bytes (padded with Pad1/PadN).
    DestinationOptions(&'a [u8]),
    /// Fragment header.
    Fragment {
        /// Offset in units of 8 bytes (≤ 8191).
        offset: u16,
        /// The M flag.
        more: bool,
        /// Identification.
        ident: u32,
    },
}

impl ExtHeader<'_> {
    /// The protocol number that announces this header.
    pub const fn protocol(&self) -> u8 {
        match self {
            ExtHeader::HopByHop(_) => protocol::HOP_BY_HOP,
            ExtHeader::Routing { .. } => protocol::IPV6_ROUTING,
            ExtHeader::DestinationOptions(_) => protocol::IPV6_DEST_OPTS,
            ExtHeader::Fragment { .. } => protocol::IPV6_FRAGMENT,
        }
    }

    /// The encoded length (a multiple of 8).
    pub const fn len(&self) -> usize {
        match self {
            ExtHeader::HopByHop(o) | ExtHeader::DestinationOptions(o) => {
                (2 + o.len()).div_ceil(8) * 8
            }
            ExtHeader::Routing { data, .. } => (4 + data.len()).div_ceil(8) * 8,
            ExtHeader::Fragment { .. } => ipv6::FRAGMENT_HEADER_LEN,
        }
    }

    /// Always false: every extension header has at least 8 bytes.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Writes the header, announcing `next_header`, into `b` (exactly [`len`](Self::len) bytes).
    fn emit(&self, next_header: u8, b: &mut [u8]) -> Result<()> {
        let len = self.len();
        if len > 2048 {
            return Err(Error::TooLong);
        }
        b.fill(0);
        b[0] = next_header;
        b[1] = (len / 8 - 1) as u8;
        match *self {
            ExtHeader::HopByHop(opts) | ExtHeader::DestinationOptions(opts) => {
                b[2..2 + opts.len()].copy_from_slice(opts);
                let pad = len - 2 - opts.len();
                if pad >= 2 {
                    // PadN: type 1, length, zeros. (A single byte of padding is Pad1: zero.)
                    b[2 + opts.len()] = 1;
                    b[3 + opts.len()] = (pad - 2) as u8;
                }
            }
            ExtHeader::Routing {
                routing_type,
                segments_left,
                data,
            } => {
                b[2] = routing_type;
                b[3] = segments_left;
                b[4..4 + data.len()].copy_from_slice(data);
            }
            ExtHeader::Fragment {
                offset,
                more,
                ident,
            } => {
                if offset > 0x1fff {
                    return Err(Error::TooLong);
                }
                put16(b, 2, offset << 3 | u16::from(more));
                put32(b, 4, ident);
            }
        }
        Ok(())
    }
}

/// An IPv6 header to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Repr<'a> {
    /// Source address.
    pub src: u128,
    /// Destination address.
    pub dst: u128,
    /// Hop limit.
    pub hop_limit: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
    /// Extension headers, in order.
    pub ext_headers: &'a [ExtHeader<'a>],
}

impl Ipv6Repr<'_> {
    /// A header with hop limit 64, flow label 0 and no extension headers.
    pub const fn new(src: u128, dst: u128) -> Self {
        Ipv6Repr {
            src,
            dst,
            hop_limit: 64,
            flow_label: 0,
            ext_headers: &[],
        }
    }
}

/// An IP header to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpRepr<'a> {
    /// IPv4.
    V4(Ipv4Repr<'a>),
    /// IPv6.
    V6(Ipv6Repr<'a>),
}

/// A TCP header to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// Window.
    pub window: u16,
    /// Options (padded with zero bytes to a multiple of 4; at most 40 bytes).
    pub options: &'a [u8],
}

impl TcpRepr<'_> {
    /// A header with these ports and flags, sequence 1, acknowledgment 0, window 65535.
    pub const fn new(src_port: u16, dst_port: u16, flags: TcpFlags) -> Self {
        TcpRepr {
            src_port,
            dst_port,
            seq: 1,
            ack: 0,
            flags,
            window: 65535,
            options: &[],
        }
    }
}

/// An upper-layer header to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Repr<'a> {
    /// TCP.
    Tcp(TcpRepr<'a>),
    /// UDP.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP over IPv4 (protocol 1), ICMPv6 over IPv6 (protocol 58).
    Icmp {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
        /// Bytes 4–5 (the identifier of a query).
        ident: u16,
        /// Bytes 6–7 (the sequence number of a query).
        seq: u16,
    },
    /// No upper-layer header: the payload follows the IP header, announced as `protocol`.
    Raw {
        /// The protocol number to announce.
        protocol: u8,
    },
}

impl L4Repr<'_> {
    fn header_len(&self) -> Result<usize> {
        Ok(match self {
            L4Repr::Tcp(TcpRepr { options, .. }) => {
                let len = 20 + options.len().div_ceil(4) * 4;
                if len > 60 {
                    return Err(Error::TooLong);
                }
                len
            }
            L4Repr::Udp { .. } | L4Repr::Icmp { .. } => 8,
            L4Repr::Raw { .. } => 0,
        })
    }

    fn protocol(&self, version: IpVersion) -> u8 {
        match (self, version) {
            (L4Repr::Tcp(_), _) => protocol::TCP,
            (L4Repr::Udp { .. }, _) => protocol::UDP,
            (L4Repr::Icmp { .. }, IpVersion::V4) => protocol::ICMP,
            (L4Repr::Icmp { .. }, IpVersion::V6) => protocol::ICMPV6,
            (L4Repr::Raw { protocol }, _) => *protocol,
        }
    }
}

/// A whole frame (or raw IP packet, without `ethernet`) to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketBuilder<'a> {
    /// The Ethernet header; `None` emits a raw IP packet.
    pub ethernet: Option<EthernetRepr>,
    /// The IP header.
    pub ip: IpRepr<'a>,
    /// The upper-layer header.
    pub l4: L4Repr<'a>,
    /// The payload after the upper-layer header.
    pub payload: &'a [u8],
}

/// The lengths of the parts of a frame to emit.
struct Layout {
    l2: usize,
    ip: usize,
    l4: usize,
    total: usize,
}

impl PacketBuilder<'_> {
    fn layout(&self) -> Result<Layout> {
        let l2 = self.ethernet.map_or(0, |e| e.header_len());
        let ip = match &self.ip {
            IpRepr::V4(v4) => {
                let len = ipv4::MIN_HEADER_LEN + v4.options.len().div_ceil(4) * 4;
                if len > 60 || v4.frag_offset > 0x1fff {
                    return Err(Error::TooLong);
                }
                len
            }
            IpRepr::V6(v6) => {
                ipv6::HEADER_LEN + v6.ext_headers.iter().map(ExtHeader::len).sum::<usize>()
            }
        };
        let l4 = self.l4.header_len()?;
        let datagram = match self.ip {
            IpRepr::V4(_) => ip + l4 + self.payload.len(),
            IpRepr::V6(_) => ip - ipv6::HEADER_LEN + l4 + self.payload.len(),
        };
        if datagram > 65535 {
            return Err(Error::TooLong);
        }
        Ok(Layout {
            l2,
            ip,
            l4,
            total: l2 + ip + l4 + self.payload.len(),
        })
    }

    /// The length of the frame [`emit`](Self::emit) writes.
    pub fn len(&self) -> Result<usize> {
        Ok(self.layout()?.total)
    }

    /// Always false: a frame has at least an IP header.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Writes the frame at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let lay = self.layout()?;
        let buf = buf.get_mut(..lay.total).ok_or(Error::BufferTooSmall)?;
        let version = match self.ip {
            IpRepr::V4(_) => IpVersion::V4,
            IpRepr::V6(_) => IpVersion::V6,
        };
        let proto = self.l4.protocol(version);
        if let Some(eth) = &self.ethernet {
            let ethertype = match version {
                IpVersion::V4 => ETHERTYPE_IPV4,
                IpVersion::V6 => ETHERTYPE_IPV6,
            };
            eth.emit(ethertype, buf)?;
        }
        let (ip, rest) = buf[lay.l2..].split_at_mut(lay.ip);
        let (l4, payload) = rest.split_at_mut(lay.l4);
        payload.copy_from_slice(self.payload);
        let l4_len = (lay.l4 + self.payload.len()) as u32;
        let pseudo = match &self.ip {
            IpRepr::V4(v4) => {
                emit_ipv4(v4, proto, (lay.ip + l4_len as usize) as u16, ip);
                checksum::pseudo_header_v4(v4.src, v4.dst, proto, l4_len)
            }
            IpRepr::V6(v6) => {
                emit_ipv6(
                    v6,
                    proto,
                    (lay.ip - ipv6::HEADER_LEN + l4_len as usize) as u16,
                    ip,
                )?;
                checksum::pseudo_header_v6(v6.src, v6.dst, proto, l4_len)
            }
        };
        let checksum_at = match self.l4 {
            L4Repr::Tcp(TcpRepr {
                src_port,
                dst_port,
                seq,
                ack,
                flags,
                window,
                options,
            }) => {
                l4.fill(0);
                put16(l4, 0, src_port);
                put16(l4, 2, dst_port);
                put32(l4, 4, seq);
                put32(l4, 8, ack);
                l4[12] = ((lay.l4 / 4) as u8) << 4;
                l4[13] = flags.bits();
                put16(l4, 14, window);
                l4[20..20 + options.len()].copy_from_slice(options);
                Some(16)
            }
            L4Repr::Udp { src_port, dst_port } => {
                put16(l4, 0, src_port);
                put16(l4, 2, dst_port);
                put16(l4, 4, l4_len as u16);
                put16(l4, 6, 0);
                Some(6)
            }
            L4Repr::Icmp {
                ty,
                code,
                ident,
                seq,
            } => {
                l4[0] = ty;
                l4[1] = code;
                put16(l4, 2, 0);
                put16(l4, 4, ident);
                put16(l4, 6, seq);
                Some(2)
            }
            L4Repr::Raw { .. } => None,
        };
        if let Some(at) = checksum_at {
            let initial = if proto == protocol::ICMP { 0 } else { pseudo };
            let mut c = checksum::finish(checksum::add(checksum::add(initial, l4), payload));
            if proto == protocol::UDP && c == 0 {
                c = 0xffff;
            }
            put16(l4, at, c);
        }
        Ok(lay.total)
    }

    /// Emits into a new vector (convenient in tests; the parse path never allocates).
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        let mut v = vec![0; self.len()?];
        self.emit(&mut v)?;
        Ok(v)
    }
}

/// Writes an IPv4 header of `total_len` (options included) into `ip` (exactly its length).
fn emit_ipv4(v4: &Ipv4Repr<'_>, proto: u8, total_len: u16, ip: &mut [u8]) {
    ip.fill(0);
    ip[0] = 0x40 | (ip.len() / 4) as u8;
    ip[20..20 + v4.options.len()].copy_from_slice(v4.options);
    put16(ip, 2, total_len);
    ip[8] = v4.ttl;
    ip[9] = proto;
    put16(ip, 4, v4.ident);
    let flags = (u16::from(v4.dont_fragment) << 14) | (u16::from(v4.more_fragments) << 13);
    put16(ip, 6, flags | v4.frag_offset);
    put32(ip, 12, v4.src);
    put32(ip, 16, v4.dst);
    let c = checksum::of(ip);
    put16(ip, ipv4::CHECKSUM_OFFSET, c);
}

/// Writes an IPv6 header of `payload_len` and its extension headers into `ip`.
fn emit_ipv6(v6: &Ipv6Repr<'_>, proto: u8, payload_len: u16, ip: &mut [u8]) -> Result<()> {
    let (fixed, mut ext) = ip.split_at_mut(ipv6::HEADER_LEN);
    put32(fixed, 0, 6 << 28 | (v6.flow_label & 0x000f_ffff));
    put16(fixed, 4, payload_len);
    fixed[6] = v6.ext_headers.first().map_or(proto, ExtHeader::protocol);
    fixed[7] = v6.hop_limit;
    fixed[8..24].copy_from_slice(&v6.src.to_be_bytes());
    fixed[24..40].copy_from_slice(&v6.dst.to_be_bytes());
    for (i, h) in v6.ext_headers.iter().enumerate() {
        let next = v6.ext_headers.get(i + 1).map_or(proto, ExtHeader::protocol);
        let (this, rest) = ext.split_at_mut(h.len());
        h.emit(next, this)?;
        ext = rest;
    }
    Ok(())
}

/// Decrements the TTL (IPv4, updating the header checksum incrementally per RFC 1624) or the hop
/// limit (IPv6) of the packet that `meta` describes, in `buf` (the buffer `meta` was parsed
/// from). Returns the new value.
///
/// A TTL of 0 or 1 is left as it is and gives [`Error::TtlExpired`] (the router answers ICMP
/// time exceeded instead of forwarding); a buffer too short for `meta` gives
/// [`Error::Truncated`].
pub fn decrement_ttl(buf: &mut [u8], meta: &PacketMeta) -> Result<u8> {
    let l3 = usize::from(meta.l3_offset);
    match meta.version {
        IpVersion::V4 => {
            let h = buf
                .get_mut(l3..l3 + ipv4::MIN_HEADER_LEN)
                .ok_or(Error::Truncated)?;
            let ttl = h[ipv4::TTL_OFFSET];
            if ttl <= 1 {
                return Err(Error::TtlExpired);
            }
            let proto = h[ipv4::TTL_OFFSET + 1];
            let old = u16::from_be_bytes([ttl, proto]);
            let new = u16::from_be_bytes([ttl - 1, proto]);
            let c = u16::from_be_bytes([h[ipv4::CHECKSUM_OFFSET], h[ipv4::CHECKSUM_OFFSET + 1]]);
            h[ipv4::TTL_OFFSET] = ttl - 1;
            put16(h, ipv4::CHECKSUM_OFFSET, checksum::update(c, old, new));
            Ok(ttl - 1)
        }
        IpVersion::V6 => {
            let h = buf
                .get_mut(l3..l3 + ipv6::HEADER_LEN)
                .ok_or(Error::Truncated)?;
            let hop = h[ipv6::HOP_LIMIT_OFFSET];
            if hop <= 1 {
                return Err(Error::TtlExpired);
            }
            h[ipv6::HOP_LIMIT_OFFSET] = hop - 1;
            Ok(hop - 1)
        }
    }
}

#[cfg(test)]
mod tests;
