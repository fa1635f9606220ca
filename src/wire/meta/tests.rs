use super::*;
use crate::wire::fixtures::*;
use crate::wire::{ArpOperation, MacAddr};

const A: u128 = 0x0a00_010a; // 10.0.1.10
const B: u128 = 0x0a00_0214; // 10.0.2.20
const S6: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0001;
const D6: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0002;

/// Every IP fixture with the length of its IP header without options/extensions.
fn ip_fixtures() -> [(&'static str, &'static [u8]); 9] {
    [
        ("ipv4-tcp", &IPV4_TCP),
        ("vlan-ipv6-udp", &VLAN_IPV6_UDP),
        ("ipv4-options-icmp", &IPV4_OPTIONS_ICMP),
        ("ipv6-icmpv6", &IPV6_ICMPV6),
        ("ipv4-first-fragment", &IPV4_FIRST_FRAGMENT),
        ("ipv4-last-fragment", &IPV4_LAST_FRAGMENT),
        ("ipv6-two-ext-tcp", &IPV6_TWO_EXT_TCP),
        ("ipv6-routing-first-fragment", &IPV6_ROUTING_FIRST_FRAGMENT),
        ("ipv6-last-fragment", &IPV6_LAST_FRAGMENT),
    ]
}

#[test]
fn meta_is_small() {
    assert!(
        core::mem::size_of::<PacketMeta>() <= 80,
        "{}",
        core::mem::size_of::<PacketMeta>()
    );
}

#[test]
fn ipv4_tcp() {
    let m = parse(&IPV4_TCP).unwrap();
    assert_eq!(m.version, IpVersion::V4);
    assert_eq!((m.src, m.dst), (A, B));
    assert_eq!((m.src_v4(), m.dst_v4()), (0x0a00_010a, 0x0a00_0214));
    assert_eq!(m.src_ip().to_string(), "10.0.1.10");
    assert_eq!(m.dst_ip().to_string(), "10.0.2.20");
    assert_eq!(m.protocol, 6);
    assert_eq!(
        m.transport,
        Transport::Tcp {
            src_port: 40000,
            dst_port: 443,
            flags: TcpFlags::SYN,
            seq: 0x0102_0304,
            ack: 0
        }
    );
    assert_eq!(m.ports(), Some((40000, 443)));
    assert_eq!(m.match_ports(), (40000, 443));
    assert_eq!(m.tcp_flags(), TcpFlags::SYN);
    assert_eq!((m.icmp(), m.icmp_ident()), (None, None));
    assert_eq!(
        m.fragment,
        Fragment {
            ident: 0x1234,
            offset: 0,
            more: false,
            dont_fragment: true
        }
    );
    assert!(!m.is_fragment() && !m.is_non_first_fragment());
    assert_eq!(m.vlan_id, None);
    assert_eq!((m.ttl, m.ttl_offset), (64, 22));
    assert_eq!(IPV4_TCP[usize::from(m.ttl_offset)], 64);
    assert_eq!((m.ip_len, m.ip_total_len()), (44, 44));
    assert_eq!((m.l3_offset, m.l4_offset, m.payload_offset), (14, 34, 54));
    assert_eq!((m.ip_header_len(), m.l4_header_len()), (20, 20));
    assert_eq!(m.payload_len, 4);
    assert_eq!(&IPV4_TCP[54..54 + 4], b"data");
    assert_eq!(m.l3_end(), IPV4_TCP.len());
}

#[test]
fn vlan_ipv6_udp() {
    let m = parse(&VLAN_IPV6_UDP).unwrap();
    assert_eq!(m.version, IpVersion::V6);
    assert_eq!((m.src, m.dst), (S6, D6));
    assert_eq!(m.src_ip().to_string(), "2001:db8::1");
    assert_eq!(m.dst_ip().to_string(), "2001:db8::2");
    assert_eq!(m.vlan_id, Some(100));
    assert_eq!(m.protocol, 17);
    assert_eq!(
        m.transport,
        Transport::Udp {
            src_port: 5353,
            dst_port: 53
        }
    );
    assert_eq!(m.tcp_flags(), TcpFlags::EMPTY);
    assert_eq!(m.fragment, Fragment::default());
    assert_eq!((m.ttl, m.ttl_offset), (255, 25));
    assert_eq!((m.ip_len, m.ip_total_len()), (14, 54));
    assert_eq!(
        (m.l3_offset, m.l4_offset, m.payload_offset, m.payload_len),
        (18, 58, 66, 6)
    );
    assert_eq!(m.l3_end(), VLAN_IPV6_UDP.len());
}

#[test]
fn ipv4_options_icmp_with_padding() {
    let m = parse(&IPV4_OPTIONS_ICMP).unwrap();
    assert_eq!(m.protocol, 1);
    assert_eq!(
        m.transport,
        Transport::Icmp {
            ty: 8,
            code: 0,
            ident: Some(0x4242)
        }
    );
    assert_eq!(
        (m.icmp(), m.icmp_ident(), m.match_ports()),
        (Some((8, 0)), Some(0x4242), (8, 0))
    );
    assert_eq!(m.ports(), None);
    assert_eq!(m.ttl, 2);
    assert_eq!(m.ip_header_len(), 24);
    assert_eq!((m.l4_offset, m.payload_offset, m.payload_len), (38, 46, 4));
    // The 14 bytes of Ethernet padding are not payload.
    assert_eq!(m.l3_end(), IPV4_OPTIONS_ICMP.len() - 14);
    // Error messages carry no identifier.
    let mut f = IPV4_OPTIONS_ICMP;
    f[38] = 3;
    assert_eq!(
        parse(&f).unwrap().transport,
        Transport::Icmp {
            ty: 3,
            code: 0,
            ident: None
        }
    );
}

#[test]
fn ipv6_icmpv6_echo_reply() {
    let m = parse(&IPV6_ICMPV6).unwrap();
    assert_eq!((m.src, m.dst), (D6, S6));
    assert_eq!(m.protocol, 58);
    assert_eq!(
        m.transport,
        Transport::Icmp {
            ty: 129,
            code: 0,
            ident: Some(0x0bad)
        }
    );
    assert_eq!(m.payload_len, 4);
    // ICMPv6 types 0/8 are not queries (those are ICMPv4 numbers).
    let mut f = IPV6_ICMPV6;
    f[54] = 8;
    assert_eq!(parse(&f).unwrap().icmp_ident(), None);
}

#[test]
fn ipv4_first_fragment() {
    let m = parse(&IPV4_FIRST_FRAGMENT).unwrap();
    assert_eq!(
        m.fragment,
        Fragment {
            ident: 0xbeef,
            offset: 0,
            more: true,
            dont_fragment: false
        }
    );
    assert!(m.is_fragment() && m.fragment.is_first() && !m.is_non_first_fragment());
    // The UDP length (48) covers the datagram; this fragment has 16 payload bytes.
    assert_eq!(
        m.transport,
        Transport::Udp {
            src_port: 1000,
            dst_port: 2000
        }
    );
    assert_eq!(m.payload_len, 16);
}

#[test]
fn ipv4_non_first_fragment() {
    let m = parse(&IPV4_LAST_FRAGMENT).unwrap();
    assert_eq!(m.protocol, 6);
    assert_eq!(m.transport, Transport::None);
    assert_eq!(m.ports(), None);
    assert_eq!(m.match_ports(), (0, 0));
    assert_eq!(
        m.fragment,
        Fragment {
            ident: 0xbeef,
            offset: 3,
            more: false,
            dont_fragment: false
        }
    );
    assert!(m.is_fragment() && m.is_non_first_fragment() && !m.fragment.is_first());
    assert_eq!((m.l4_offset, m.payload_offset, m.payload_len), (34, 34, 24));
    assert_eq!(m.l4_header_len(), 0);
}

#[test]
fn ipv6_two_extension_headers() {
    let m = parse(&IPV6_TWO_EXT_TCP).unwrap();
    assert_eq!(m.protocol, 6);
    assert_eq!(m.ip_header_len(), 40 + 8 + 16);
    assert_eq!(
        m.transport,
        Transport::Tcp {
            src_port: 50000,
            dst_port: 22,
            flags: TcpFlags::PSH | TcpFlags::ACK,
            seq: 100,
            ack: 200
        }
    );
    assert_eq!((m.l4_offset, m.payload_offset, m.payload_len), (78, 98, 1));
    assert_eq!(IPV6_TWO_EXT_TCP[98], b'x');
    assert!(!m.is_fragment());
}

#[test]
fn ipv6_first_fragment_after_routing() {
    let m = parse(&IPV6_ROUTING_FIRST_FRAGMENT).unwrap();
    assert_eq!(m.protocol, 17);
    assert_eq!(
        m.fragment,
        Fragment {
            ident: 0xcafe_f00d,
            offset: 0,
            more: true,
            dont_fragment: false
        }
    );
    assert!(m.fragment.is_first());
    assert_eq!(
        m.transport,
        Transport::Udp {
            src_port: 7,
            dst_port: 9
        }
    );
    assert_eq!((m.l4_offset, m.payload_len), (14 + 40 + 16, 4));
}

#[test]
fn ipv6_non_first_fragment() {
    let m = parse(&IPV6_LAST_FRAGMENT).unwrap();
    assert_eq!(m.protocol, 6);
    assert_eq!(m.transport, Transport::None);
    assert_eq!(
        m.fragment,
        Fragment {
            ident: 0xcafe_f00d,
            offset: 12,
            more: false,
            dont_fragment: false
        }
    );
    assert!(m.is_non_first_fragment());
    assert_eq!((m.l4_offset, m.payload_offset, m.payload_len), (62, 62, 8));
}

#[test]
fn ipv6_atomic_fragment_is_not_a_fragment() {
    // Turn the first fragment into an atomic one (M clear): the UDP length must then fit.
    let mut f = IPV6_ROUTING_FIRST_FRAGMENT;
    f[65] = 0;
    assert_eq!(parse(&f).unwrap_err(), Error::BadUdpLength);
    f[75] = 12; // UDP length 12 = the 4 bytes present
    let m = parse(&f).unwrap();
    assert!(!m.is_fragment());
    assert_eq!(m.fragment.ident, 0xcafe_f00d);
    assert_eq!(m.ports(), Some((7, 9)));
}

#[test]
fn arp() {
    assert_eq!(
        parse(&VLAN_ARP_REQUEST).unwrap_err(),
        Error::UnsupportedEtherType
    );
    let Frame::Arp { vlan_id, arp } = parse_frame(&VLAN_ARP_REQUEST).unwrap() else {
        panic!("not ARP");
    };
    assert_eq!(vlan_id, Some(7));
    assert_eq!(arp.operation, ArpOperation::Request);
    assert_eq!(arp.sender_mac, MacAddr([2, 0, 0, 0, 0, 2]));
    assert_eq!((arp.sender_ip, arp.target_ip), (0x0a00_010a, 0x0a00_0101));
    for n in 0..VLAN_ARP_REQUEST.len() {
        assert_eq!(
            parse_frame(&VLAN_ARP_REQUEST[..n]).unwrap_err(),
            Error::Truncated,
            "cut {n}"
        );
    }
    let mut f = VLAN_ARP_REQUEST;
    f[19] = 6; // hardware type 6
    assert_eq!(parse_frame(&f).unwrap_err(), Error::BadArp);
}

#[test]
fn parse_frame_agrees_with_parse() {
    for (name, f) in ip_fixtures() {
        assert_eq!(
            parse_frame(f).unwrap(),
            Frame::Ip(parse(f).unwrap()),
            "{name}"
        );
    }
}

#[test]
fn parse_into_reuses_one_meta() {
    // Every fixture after every other, into one meta: nothing of the previous frame survives.
    let mut meta = PacketMeta::EMPTY;
    for (_, first) in ip_fixtures() {
        for (name, f) in ip_fixtures() {
            parse_into(first, &mut meta).unwrap();
            parse_into(f, &mut meta).unwrap();
            assert_eq!(meta, parse(f).unwrap(), "{name}");
        }
    }
    assert_eq!(
        parse_into(&IPV4_TCP[..20], &mut meta),
        Err(Error::Truncated)
    );
}

#[test]
fn parse_ip_agrees_with_parse() {
    for (name, f) in ip_fixtures() {
        let m = parse(f).unwrap();
        let l3 = m.l3_offset;
        let r = parse_ip(&f[usize::from(l3)..]).unwrap();
        let shifted = PacketMeta {
            vlan_id: None,
            ttl_offset: m.ttl_offset - l3,
            l3_offset: 0,
            l4_offset: m.l4_offset - l3,
            payload_offset: m.payload_offset - l3,
            ..m
        };
        assert_eq!(r, shifted, "{name}");
    }
    assert_eq!(parse_ip(&[]).unwrap_err(), Error::Truncated);
    assert_eq!(parse_ip(&[0x55; 40]).unwrap_err(), Error::BadVersion);
}

/// Cutting a frame anywhere before the end of its IP datagram is an error: `Truncated` inside
/// the link or fixed IP header, `BadTotalLength` after it (the IP length no longer fits).
#[test]
fn every_truncation_is_an_error() {
    for (name, f) in ip_fixtures() {
        let m = parse(f).unwrap();
        let fixed = usize::from(m.l3_offset) + if m.version == IpVersion::V4 { 20 } else { 40 };
        for n in 0..m.l3_end() {
            let want = if n < fixed {
                Error::Truncated
            } else {
                Error::BadTotalLength
            };
            assert_eq!(parse(&f[..n]), Err(want), "{name} cut at {n}");
        }
        assert!(parse(&f[..m.l3_end()]).is_ok(), "{name}");
    }
}

/// Shortening the IP length (so the datagram ends inside a header) is an error at every
/// length that cuts the L4 header or an extension header.
#[test]
fn ip_length_inside_a_header() {
    for (name, f) in ip_fixtures() {
        let m = parse(f).unwrap();
        let l3 = usize::from(m.l3_offset);
        let header_end = if m.is_non_first_fragment() {
            usize::from(m.l4_offset)
        } else {
            usize::from(m.payload_offset)
        };
        let fixed = if m.version == IpVersion::V4 {
            m.ip_header_len()
        } else {
            40
        };
        for end in l3 + fixed..header_end {
            let mut g = f.to_vec();
            let len = if m.version == IpVersion::V4 {
                end - l3
            } else {
                end - l3 - 40
            };
            g[l3 + 2 + 2 * usize::from(m.version == IpVersion::V6)..][..2]
                .copy_from_slice(&(len as u16).to_be_bytes());
            assert_eq!(parse(&g), Err(Error::Truncated), "{name} ending at {end}");
        }
    }
}

#[test]
fn bad_ihl() {
    for ihl in 0..5 {
        let mut f = IPV4_TCP;
        f[14] = 0x40 | ihl;
        assert_eq!(parse(&f), Err(Error::BadIhl));
    }
}

#[test]
fn bad_total_length() {
    let mut f = IPV4_TCP;
    f[17] = 45; // one byte beyond the frame
    assert_eq!(parse(&f), Err(Error::BadTotalLength));
    f[16] = 0;
    f[17] = 19; // below the 20-byte header
    assert_eq!(parse(&f), Err(Error::BadTotalLength));
    f[14] = 0x46; // IHL 6: 24 bytes > total length 20
    f[17] = 20;
    assert_eq!(parse(&f), Err(Error::BadTotalLength));
    let mut f = VLAN_IPV6_UDP;
    f[23] = 15; // IPv6 payload length one beyond the frame
    assert_eq!(parse(&f), Err(Error::BadTotalLength));
}

#[test]
fn bad_version() {
    let mut f = IPV4_TCP;
    f[14] = 0x65;
    assert_eq!(parse(&f), Err(Error::BadVersion));
    let mut f = VLAN_IPV6_UDP;
    f[18] = 0x45;
    assert_eq!(parse(&f), Err(Error::BadVersion));
}

#[test]
fn link_layer_errors() {
    let mut f = IPV4_TCP;
    f[12] = 0x88;
    f[13] = 0xcc; // LLDP
    assert_eq!(parse(&f), Err(Error::UnsupportedEtherType));
    f[13] = 0xa8; // an 802.1ad outer tag
    assert_eq!(parse(&f), Err(Error::UnsupportedEtherType));
    let mut f = VLAN_IPV6_UDP;
    for inner in [[0x81, 0x00], [0x88, 0xa8]] {
        f[16..18].copy_from_slice(&inner);
        assert_eq!(parse(&f), Err(Error::TooManyVlanTags));
    }
}

#[test]
fn bad_tcp_offset() {
    for off in 0..5 {
        let mut f = IPV4_TCP;
        f[46] = off << 4;
        assert_eq!(parse(&f), Err(Error::BadTcpOffset), "offset {off}");
    }
    // Data offset 7 (28 bytes) in a 24-byte segment.
    let mut f = IPV4_TCP;
    f[46] = 0x70;
    assert_eq!(parse(&f), Err(Error::Truncated));
    // Data offset 6 is exactly the segment: no payload.
    f[46] = 0x60;
    let m = parse(&f).unwrap();
    assert_eq!((m.payload_offset, m.payload_len), (58, 0));
}

#[test]
fn bad_udp_length() {
    for len in [0u16, 7, 15] {
        let mut f = VLAN_IPV6_UDP;
        f[62..64].copy_from_slice(&len.to_be_bytes());
        assert_eq!(parse(&f), Err(Error::BadUdpLength), "length {len}");
    }
    // A UDP length shorter than the IP payload: the rest is not UDP payload.
    let mut f = VLAN_IPV6_UDP;
    f[63] = 10;
    assert_eq!(parse(&f).unwrap().payload_len, 2);
    // A first fragment still needs a UDP length of at least 8.
    let mut f = IPV4_FIRST_FRAGMENT;
    f[38] = 0;
    f[39] = 4;
    assert_eq!(parse(&f), Err(Error::BadUdpLength));
}

#[test]
fn bad_fragments() {
    // Offset 8191 (65528 bytes) + 24 bytes > 65535.
    let mut f = IPV4_LAST_FRAGMENT;
    f[20] = 0x1f;
    f[21] = 0xff;
    assert_eq!(parse(&f), Err(Error::BadFragment));
    // Offset 8189 + 24 bytes = 65536: still too long; 8188 fits exactly.
    f[21] = 0xfd;
    assert_eq!(parse(&f), Err(Error::BadFragment));
    f[21] = 0xfc;
    assert!(parse(&f).is_ok());
    // RFC 1858: a TCP fragment at offset 1 is dropped; UDP at offset 1 is fine.
    let mut f = IPV4_LAST_FRAGMENT;
    f[21] = 1;
    assert_eq!(parse(&f), Err(Error::BadFragment));
    f[23] = 17;
    assert!(parse(&f).unwrap().is_non_first_fragment());
    let mut f = IPV6_LAST_FRAGMENT;
    f[57] = 0x08; // offset 1
    assert_eq!(parse(&f), Err(Error::BadFragment));
    f[57] = 0xf8;
    f[56] = 0xff; // offset 8191
    assert_eq!(parse(&f), Err(Error::BadFragment));
    // A first fragment too short for the TCP header (tiny-fragment attack).
    let mut f = IPV4_LAST_FRAGMENT;
    f[20] = 0x20; // MF, offset 0
    f[21] = 0;
    f[16] = 0;
    f[17] = 20 + 12;
    assert_eq!(parse(&f), Err(Error::Truncated));
}

#[test]
fn extension_header_errors() {
    // Destination options length byte 200: beyond the payload.
    let mut f = IPV6_TWO_EXT_TCP;
    f[63] = 200;
    assert_eq!(parse(&f), Err(Error::Truncated));
    // Destination options announcing a Hop-by-Hop header.
    let mut f = IPV6_TWO_EXT_TCP;
    f[62] = 0;
    assert_eq!(parse(&f), Err(Error::HopByHopNotFirst));
    // Hop-by-Hop announcing a Fragment, whose next header is another Fragment.
    let mut f = IPV6_LAST_FRAGMENT;
    f[54] = 44;
    f[57] = 0;
    assert_eq!(parse(&f), Err(Error::BadFragment));
    // No Next Header ends the walk with no upper layer.
    let mut f = IPV6_TWO_EXT_TCP;
    f[62] = 59;
    let m = parse(&f).unwrap();
    assert_eq!(
        (m.protocol, m.transport, m.payload_len),
        (59, Transport::None, 21)
    );
}

#[test]
fn too_many_extension_headers() {
    use crate::wire::emit::{ExtHeader, IpRepr, Ipv6Repr, L4Repr, PacketBuilder};
    let opts = ExtHeader::DestinationOptions(&[]);
    let chain = [opts; ipv6::MAX_EXT_HEADERS + 1];
    let build = |n: usize| {
        PacketBuilder {
            ethernet: None,
            ip: IpRepr::V6(Ipv6Repr {
                ext_headers: &chain[..n],
                ..Ipv6Repr::new(S6, D6)
            }),
            l4: L4Repr::Udp {
                src_port: 1,
                dst_port: 2,
            },
            payload: &[],
        }
        .to_vec()
        .unwrap()
    };
    let ok = parse_ip(&build(ipv6::MAX_EXT_HEADERS)).unwrap();
    assert_eq!(ok.ip_header_len(), 40 + 8 * ipv6::MAX_EXT_HEADERS);
    assert_eq!(
        parse_ip(&build(ipv6::MAX_EXT_HEADERS + 1)),
        Err(Error::ExtHeaderChainTooLong)
    );
}

#[test]
fn icmp_timestamp_needs_its_timestamps() {
    // The echo request of the fixture (8 + 4 bytes) turned into a timestamp request: too short.
    let mut f = IPV4_OPTIONS_ICMP;
    f[38] = 13;
    assert_eq!(parse(&f), Err(Error::Truncated));
    // With the IPv4 total length reaching into the padding, 20 bytes: fine.
    f[17] = 24 + 20;
    let m = parse(&f).unwrap();
    assert_eq!(
        m.transport,
        Transport::Icmp {
            ty: 13,
            code: 0,
            ident: Some(0x4242)
        }
    );
    assert_eq!(m.payload_len, 12);
}

#[test]
fn short_icmp() {
    let mut f = IPV6_ICMPV6;
    f[19] = 7; // payload length 7: the ICMPv6 header is cut
    assert_eq!(parse(&f), Err(Error::Truncated));
}
