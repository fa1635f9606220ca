//! Zero-copy, strict parsing of the frames the firewall judges, and small emitters for tests and
//! the router.
//!
//! The entry points are [`parse`] (an Ethernet II frame carrying IPv4 or IPv6, with at most one
//! 802.1Q tag), [`parse_ip`] (a raw IP packet) and [`parse_frame`] (like [`parse`], but ARP frames
//! are returned too). Each yields a [`PacketMeta`]: a small `Copy` summary of everything the
//! engine, conntrack, flow logs and the router read from a packet (addresses, upper-layer
//! protocol, ports or ICMP type/code/identifier, TCP flags, fragment information, TTL and the
//! offsets and lengths of the headers and the payload).
//!
//! Parsing is strict: a header that is truncated or inconsistent with its neighbours (IHL < 5, a
//! total length beyond the buffer, a TCP data offset < 5, an IPv6 extension-header chain that runs
//! past the packet or is longer than [`ipv6::MAX_EXT_HEADERS`], …) is a typed [`Error`], never a
//! panic and never a read past the buffer. Frame padding after the IP datagram is ignored.
//! Checksums are not verified on the parse path (offloaded frames carry partial checksums); the
//! views offer `verify_checksum` where a caller wants it.
//!
//! The per-header views ([`EthernetFrame`], [`ArpPacket`], [`Ipv4Packet`], [`Ipv6Packet`],
//! [`TcpPacket`], [`UdpPacket`], [`IcmpPacket`]) follow the smoltcp style: `new_unchecked` wraps
//! any `AsRef<[u8]>`, `check_len` validates it, `new_checked` does both. Once `new_checked` has
//! succeeded no accessor can panic; accessors of a view made with `new_unchecked` over a short
//! buffer may.
//!
//! [`emit`] builds frames into a caller buffer (computing every checksum) and decrements the TTL
//! or hop limit of a forwarded packet in place.
//!
//! This module depends on nothing else in the crate.

/// Declares a smoltcp-style view `$name<T: AsRef<[u8]>>` with `new_unchecked`, `new_checked`
/// (which calls the view's own `check_len`) and `into_inner`.
macro_rules! view {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps a buffer without checking it; accessors may panic if it is too short.
            pub const fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            /// Wraps a buffer and checks it with `check_len`; once this succeeds, no accessor
            /// can panic.
            pub fn new_checked(buffer: T) -> Result<Self> {
                let view = Self::new_unchecked(buffer);
                view.check_len()?;
                Ok(view)
            }

            /// Returns the underlying buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }
    };
}

pub mod arp;
pub mod checksum;
pub mod emit;
pub mod ethernet;
#[cfg(test)]
mod fixtures;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
mod meta;
pub mod tcp;
pub mod udp;

use core::fmt;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use emit::{
    EthernetRepr, ExtHeader, IpRepr, Ipv4Repr, Ipv6Repr, L4Repr, PacketBuilder, TcpRepr,
    decrement_ttl, emit_arp_frame,
};
pub use ethernet::{EthernetFrame, MacAddr};
pub use icmp::IcmpPacket;
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use meta::{
    Fragment, Frame, IpVersion, PacketMeta, Transport, parse, parse_frame, parse_into, parse_ip,
};
pub use tcp::{TcpFlags, TcpPacket};
pub use udp::UdpPacket;

/// IP protocol numbers (IPv4 `protocol`, IPv6 `next header`) used by this module.
pub mod protocol {
    /// IPv6 Hop-by-Hop Options extension header.
    pub const HOP_BY_HOP: u8 = 0;
    /// Internet Control Message Protocol (IPv4).
    pub const ICMP: u8 = 1;
    /// Transmission Control Protocol.
    pub const TCP: u8 = 6;
    /// User Datagram Protocol.
    pub const UDP: u8 = 17;
    /// IPv6 Routing extension header.
    pub const IPV6_ROUTING: u8 = 43;
    /// IPv6 Fragment extension header.
    pub const IPV6_FRAGMENT: u8 = 44;
    /// Internet Control Message Protocol for IPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header".
    pub const IPV6_NO_NEXT_HEADER: u8 = 59;
    /// IPv6 Destination Options extension header.
    pub const IPV6_DEST_OPTS: u8 = 60;
}

/// Why a buffer could not be parsed (or a frame could not be emitted).
///
/// A tiny `Copy` value: the engine counts malformed frames by this reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The buffer ends inside a header (or inside the length a header announces for itself).
    Truncated,
    /// The EtherType is neither IPv4 nor IPv6 (nor ARP, for [`parse_frame`]).
    UnsupportedEtherType,
    /// A second VLAN tag (802.1Q or 802.1ad) follows the first; at most one is supported.
    TooManyVlanTags,
    /// The IP version nibble is not the one the EtherType announces (or neither 4 nor 6).
    BadVersion,
    /// The IPv4 header length (IHL) is below 5 words.
    BadIhl,
    /// The IPv4 total length is below the header length or beyond the buffer, or the IPv6
    /// payload length is beyond the buffer.
    BadTotalLength,
    /// A fragment would end beyond 65535 bytes, a second IPv6 fragment header was found, or a
    /// TCP fragment starts at offset 8 (RFC 1858: it could overwrite the TCP flags).
    BadFragment,
    /// An IPv6 Hop-by-Hop Options header that does not immediately follow the IPv6 header.
    HopByHopNotFirst,
    /// More IPv6 extension headers than [`ipv6::MAX_EXT_HEADERS`].
    ExtHeaderChainTooLong,
    /// The TCP data offset is below 5 words.
    BadTcpOffset,
    /// The UDP length is below 8, or (in an unfragmented packet) beyond the IP payload.
    BadUdpLength,
    /// An ARP packet that is not Ethernet/IPv4 (hardware type 1, protocol 0x0800, lengths 6/4).
    BadArp,
    /// Emitting: the output buffer is too small for the frame.
    BufferTooSmall,
    /// Emitting: a field does not fit its header (options too long, datagram over 65535 bytes).
    TooLong,
    /// Forwarding: the TTL or hop limit is 1 or 0, so the packet must not be forwarded.
    TtlExpired,
}

impl Error {
    /// A short, stable, lowercase name for statistics and logs (e.g. `"truncated"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::UnsupportedEtherType => "unsupported-ethertype",
            Error::TooManyVlanTags => "too-many-vlan-tags",
            Error::BadVersion => "bad-ip-version",
            Error::BadIhl => "bad-ihl",
            Error::BadTotalLength => "bad-total-length",
            Error::BadFragment => "bad-fragment",
            Error::HopByHopNotFirst => "hop-by-hop-not-first",
            Error::ExtHeaderChainTooLong => "ext-header-chain-too-long",
            Error::BadTcpOffset => "bad-tcp-offset",
            Error::BadUdpLength => "bad-udp-length",
            Error::BadArp => "bad-arp",
            Error::BufferTooSmall => "buffer-too-small",
            Error::TooLong => "too-long",
            Error::TtlExpired => "ttl-expired",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Error {}

/// The result type of this module.
pub type Result<T> = core::result::Result<T, Error>;

/// Reads a big-endian `u16` at `at`. Panics (like slice indexing) when out of bounds; every
/// caller checks the length first.
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian `u32` at `at` (see [`be16`]).
#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Writes a big-endian `u16` at `at` (see [`be16`]).
#[inline(always)]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes a big-endian `u32` at `at` (see [`be16`]).
#[inline(always)]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_distinct() {
        let all = [
            Error::Truncated,
            Error::UnsupportedEtherType,
            Error::TooManyVlanTags,
            Error::BadVersion,
            Error::BadIhl,
            Error::BadTotalLength,
            Error::BadFragment,
            Error::HopByHopNotFirst,
            Error::ExtHeaderChainTooLong,
            Error::BadTcpOffset,
            Error::BadUdpLength,
            Error::BadArp,
            Error::BufferTooSmall,
            Error::TooLong,
            Error::TtlExpired,
        ];
        let mut names: Vec<&str> = all.iter().map(|e| e.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert_eq!(Error::BadIhl.to_string(), "bad-ihl");
        assert!(core::mem::size_of::<Error>() == 1);
    }
}
