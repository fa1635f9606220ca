//! IPv6 headers (RFC 8200) and the walk over extension headers to the upper-layer protocol.
//!
//! The walk follows Hop-by-Hop Options (only directly after the fixed header), Routing,
//! Destination Options and Fragment headers, at most [`MAX_EXT_HEADERS`] of them. Any other next
//! header value (TCP, UDP, ICMPv6, AH, ESP, No Next Header, …) is the upper-layer protocol. A
//! Fragment header with a non-zero offset ends the walk: what follows it belongs to the middle
//! of the original packet.

use super::{Error, Result, be16, be32, protocol};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// Offset of the hop limit byte in the header.
pub const HOP_LIMIT_OFFSET: usize = 7;
/// The most extension headers a packet may carry before the upper layer.
///
/// RFC 8200 §4.1 recommends at most one of each kind (Destination Options twice): six in all;
/// eight leaves room for unusual but valid chains while bounding the work per packet.
pub const MAX_EXT_HEADERS: usize = 8;
/// Length of a Fragment extension header.
pub const FRAGMENT_HEADER_LEN: usize = 8;

view!(
    /// A read/write view of an IPv6 packet.
    Ipv6Packet
);

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Checks that the fixed header is present ([`Error::Truncated`]), that the version is 6
    /// ([`Error::BadVersion`]) and that the payload length fits in the buffer
    /// ([`Error::BadTotalLength`]). Bytes after the payload (link padding) are ignored.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        let Some(h) = b.first_chunk::<HEADER_LEN>() else {
            return Err(Error::Truncated);
        };
        if h[0] >> 4 != 6 {
            return Err(Error::BadVersion);
        }
        if HEADER_LEN + usize::from(u16::from_be_bytes([h[4], h[5]])) > b.len() {
            return Err(Error::BadTotalLength);
        }
        Ok(())
    }

    /// The version field (6 in a checked packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// The traffic class.
    pub fn traffic_class(&self) -> u8 {
        (be16(self.buffer.as_ref(), 0) >> 4) as u8
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), 0) & 0x000f_ffff
    }

    /// The payload length (extension headers included).
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// The next header field of the fixed header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[6]
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[HOP_LIMIT_OFFSET]
    }

    /// The source address as an integer.
    pub fn src_addr(&self) -> u128 {
        let b = self.buffer.as_ref();
        u128::from_be_bytes(b[8..24].try_into().unwrap_or([0; 16]))
    }

    /// The destination address as an integer.
    pub fn dst_addr(&self) -> u128 {
        let b = self.buffer.as_ref();
        u128::from_be_bytes(b[24..40].try_into().unwrap_or([0; 16]))
    }

    /// The payload (extension headers and upper layer), padding excluded.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }

    /// Walks the extension headers to the upper-layer protocol (see [`walk_ext_headers`]).
    pub fn ext_chain(&self) -> Result<ExtChain> {
        walk_ext_headers(self.next_header(), self.payload())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[HOP_LIMIT_OFFSET] = hop_limit;
    }
}

/// The fields of an IPv6 Fragment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragmentHeader {
    /// Fragment offset in units of 8 bytes.
    pub offset: u16,
    /// The M (more fragments) flag.
    pub more: bool,
    /// The 32-bit identification.
    pub ident: u32,
}

/// Where an extension-header walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExtChain {
    /// The upper-layer protocol (the next header value that is not a walked extension header).
    pub protocol: u8,
    /// The total length of the extension headers walked (the upper layer starts there, counted
    /// from the start of the IPv6 payload).
    pub len: usize,
    /// How many extension headers were walked.
    pub count: usize,
    /// The Fragment header, if one was walked.
    pub fragment: Option<FragmentHeader>,
}

/// Walks the extension headers of an IPv6 `payload` whose first header is `next_header`.
///
/// Errors: a header that runs past the payload is [`Error::Truncated`]; a Hop-by-Hop header
/// that is not the first is [`Error::HopByHopNotFirst`]; a second Fragment header is
/// [`Error::BadFragment`]; more than [`MAX_EXT_HEADERS`] headers is
/// [`Error::ExtHeaderChainTooLong`].
#[inline]
pub fn walk_ext_headers(mut next_header: u8, payload: &[u8]) -> Result<ExtChain> {
    let mut off = 0usize;
    let mut count = 0usize;
    let mut fragment = None;
    loop {
        match next_header {
            protocol::HOP_BY_HOP | protocol::IPV6_ROUTING | protocol::IPV6_DEST_OPTS => {
                if next_header == protocol::HOP_BY_HOP && count != 0 {
                    return Err(Error::HopByHopNotFirst);
                }
                if count == MAX_EXT_HEADERS {
                    return Err(Error::ExtHeaderChainTooLong);
                }
                let Some(&[nh, len]) = payload.get(off..).and_then(|r| r.first_chunk::<2>()) else {
                    return Err(Error::Truncated);
                };
                let end = off + (usize::from(len) + 1) * 8;
                if end > payload.len() {
                    return Err(Error::Truncated);
                }
                next_header = nh;
                off = end;
                count += 1;
            }
            protocol::IPV6_FRAGMENT => {
                if count == MAX_EXT_HEADERS {
                    return Err(Error::ExtHeaderChainTooLong);
                }
                let Some(h) = payload.get(off..).and_then(|r| r.first_chunk::<8>()) else {
                    return Err(Error::Truncated);
                };
                if fragment.is_some() {
                    return Err(Error::BadFragment);
                }
                let word = u16::from_be_bytes([h[2], h[3]]);
                let f = FragmentHeader {
                    offset: word >> 3,
                    more: word & 1 != 0,
                    ident: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                };
                fragment = Some(f);
                next_header = h[0];
                off += FRAGMENT_HEADER_LEN;
                count += 1;
                if f.offset != 0 {
                    // The rest is the middle of the datagram, but a Hop-by-Hop header is never
                    // legal here.
                    if next_header == protocol::HOP_BY_HOP {
                        return Err(Error::HopByHopNotFirst);
                    }
                    break;
                }
            }
            _ => break,
        }
    }
    Ok(ExtChain {
        protocol: next_header,
        len: off,
        count,
        fragment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2001:db8::1 → 2001:db8::2, hop limit 64, flow label 0x12345, traffic class 0xb8,
    /// Hop-by-Hop (8 bytes: PadN) → Routing (type 0, 8 bytes) → Destination Options (16
    /// bytes) → Fragment (offset 0, M, id 0xdeadbeef) → UDP (8 bytes), then 2 bytes padding.
    static CHAIN: [u8; 90] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x30, 0x00, 0x40, // ver/tc/fl, len 48, HBH, hop 64
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, //
        43, 0, 1, 4, 0, 0, 0, 0, // HBH → Routing: PadN(4)
        60, 0, 0, 0, 0, 0, 0, 0, // Routing → DestOpts: type 0, segments left 0
        44, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // DestOpts → Fragment: PadN(12)
        17, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef, // Fragment → UDP: offset 0, M
        0x04, 0xd2, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00, // UDP 1234 → 53
        0xee, 0xee, // padding
    ];

    #[test]
    fn fixed_header() {
        let mut buf = CHAIN;
        let mut p = Ipv6Packet::new_checked(&mut buf[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 48);
        assert_eq!(p.next_header(), 0);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), 0x2001_0db8_0000_0000_0000_0000_0000_0001);
        assert_eq!(p.dst_addr(), 0x2001_0db8_0000_0000_0000_0000_0000_0002);
        assert_eq!(p.payload().len(), 48);
        p.set_hop_limit(3);
        assert_eq!(p.hop_limit(), 3);
    }

    #[test]
    fn walks_every_kind() {
        let p = Ipv6Packet::new_checked(&CHAIN[..]).unwrap();
        let chain = p.ext_chain().unwrap();
        assert_eq!(chain.protocol, 17);
        assert_eq!(chain.len, 40);
        assert_eq!(chain.count, 4);
        assert_eq!(
            chain.fragment,
            Some(FragmentHeader {
                offset: 0,
                more: true,
                ident: 0xdead_beef
            })
        );
    }

    #[test]
    fn non_first_fragment_stops_the_walk() {
        // Fragment (offset 100, no M) → "TCP", followed by bytes that are not a TCP header.
        let payload = [6, 0, 0x03, 0x20, 0, 0, 0, 7, 0xff, 0xff];
        let chain = walk_ext_headers(protocol::IPV6_FRAGMENT, &payload).unwrap();
        assert_eq!(chain.protocol, 6);
        assert_eq!(chain.len, 8);
        assert_eq!(
            chain.fragment,
            Some(FragmentHeader {
                offset: 100,
                more: false,
                ident: 7
            })
        );
    }

    #[test]
    fn no_ext_headers() {
        let chain = walk_ext_headers(6, &[]).unwrap();
        assert_eq!(
            chain,
            ExtChain {
                protocol: 6,
                len: 0,
                count: 0,
                fragment: None
            }
        );
        // No Next Header and unknown headers (AH) are upper layers.
        assert_eq!(walk_ext_headers(59, &[]).unwrap().protocol, 59);
        assert_eq!(walk_ext_headers(51, &[]).unwrap().protocol, 51);
    }

    #[test]
    fn malformed() {
        // The payload length covers only part of the chain: every cut inside the headers.
        for cut in 0..40 {
            assert_eq!(
                walk_ext_headers(0, &CHAIN[40..40 + cut]).unwrap_err(),
                Error::Truncated
            );
        }
        // Payload length beyond the buffer.
        assert_eq!(
            Ipv6Packet::new_checked(&CHAIN[..87]).unwrap_err(),
            Error::BadTotalLength
        );
        for n in 0..40 {
            assert_eq!(
                Ipv6Packet::new_checked(&CHAIN[..n]).unwrap_err(),
                Error::Truncated
            );
        }
        let mut b = CHAIN;
        b[0] = 0x4b;
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap_err(),
            Error::BadVersion
        );
        // An ext header whose length runs past the payload.
        let mut b = CHAIN;
        b[49] = 200;
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap().ext_chain(),
            Err(Error::Truncated)
        );
        // Hop-by-Hop after Routing.
        assert_eq!(
            walk_ext_headers(43, &[0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]),
            Err(Error::HopByHopNotFirst)
        );
        // A non-first Fragment header announcing Hop-by-Hop.
        assert_eq!(
            walk_ext_headers(44, &[0, 0, 0, 8, 0, 0, 0, 1]),
            Err(Error::HopByHopNotFirst)
        );
        // Two Fragment headers.
        let two = [44, 0, 0, 1, 0, 0, 0, 1, 6, 0, 0, 1, 0, 0, 0, 1];
        assert_eq!(walk_ext_headers(44, &two), Err(Error::BadFragment));
    }

    #[test]
    fn chain_length_is_bounded() {
        // n Destination Options headers (8 bytes each) then TCP.
        let chain_of = |n: usize| {
            let mut v = Vec::new();
            for i in 0..n {
                v.extend_from_slice(&[if i + 1 == n { 6 } else { 60 }, 0, 1, 4, 0, 0, 0, 0]);
            }
            v
        };
        let ok = walk_ext_headers(60, &chain_of(MAX_EXT_HEADERS)).unwrap();
        assert_eq!(
            (ok.protocol, ok.count, ok.len),
            (6, MAX_EXT_HEADERS, MAX_EXT_HEADERS * 8)
        );
        let long = chain_of(MAX_EXT_HEADERS + 1);
        assert_eq!(
            walk_ext_headers(60, &long),
            Err(Error::ExtHeaderChainTooLong)
        );
        // The bound holds even when the headers are cut short of the buffer.
        assert_eq!(
            walk_ext_headers(60, &long[..long.len() - 4]),
            Err(Error::ExtHeaderChainTooLong)
        );
        // A fragment header as the ninth header.
        let mut frag = chain_of(MAX_EXT_HEADERS);
        let last = frag.len() - 8;
        frag[last] = 44;
        frag.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            walk_ext_headers(60, &frag),
            Err(Error::ExtHeaderChainTooLong)
        );
    }
}
