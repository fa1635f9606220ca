use super::*;
use crate::wire::fixtures::*;
use crate::wire::{ArpOperation, Ipv4Packet, parse, parse_frame, parse_ip};

const M1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const M2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const A: u32 = 0x0a00_010a;
const B: u32 = 0x0a00_0214;
const S6: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0001;
const D6: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0002;

fn eth(vlan_id: Option<u16>) -> Option<EthernetRepr> {
    Some(EthernetRepr {
        src: M1,
        dst: M2,
        vlan_id,
    })
}

fn check(b: PacketBuilder<'_>, want: &[u8]) {
    assert_eq!(b.len().unwrap(), want.len());
    assert_eq!(b.to_vec().unwrap(), want);
    // One byte short of room is an error, not a panic.
    let mut short = vec![0; want.len() - 1];
    assert_eq!(b.emit(&mut short), Err(Error::BufferTooSmall));
}

#[test]
fn ipv4_tcp() {
    check(
        PacketBuilder {
            ethernet: eth(None),
            ip: IpRepr::V4(Ipv4Repr {
                ident: 0x1234,
                dont_fragment: true,
                ..Ipv4Repr::new(A, B)
            }),
            l4: L4Repr::Tcp(TcpRepr {
                seq: 0x0102_0304,
                ack: 0,
                ..TcpRepr::new(40000, 443, TcpFlags::SYN)
            }),
            payload: b"data",
        },
        &IPV4_TCP,
    );
}

#[test]
fn vlan_ipv6_udp() {
    check(
        PacketBuilder {
            ethernet: eth(Some(100)),
            ip: IpRepr::V6(Ipv6Repr {
                hop_limit: 255,
                ..Ipv6Repr::new(S6, D6)
            }),
            l4: L4Repr::Udp {
                src_port: 5353,
                dst_port: 53,
            },
            payload: &[0x12, 0x34, 0x01, 0x00, 0x00, 0x01],
        },
        &VLAN_IPV6_UDP,
    );
}

#[test]
fn ipv4_options_icmp() {
    let frame = &IPV4_OPTIONS_ICMP[..IPV4_OPTIONS_ICMP.len() - 14]; // without padding
    check(
        PacketBuilder {
            ethernet: eth(None),
            ip: IpRepr::V4(Ipv4Repr {
                ttl: 2,
                ident: 7,
                options: &[0x94, 0x04, 0, 0],
                ..Ipv4Repr::new(A, B)
            }),
            l4: L4Repr::Icmp {
                ty: 8,
                code: 0,
                ident: 0x4242,
                seq: 1,
            },
            payload: b"ping",
        },
        frame,
    );
    // Options are padded to a multiple of four.
    let b = PacketBuilder {
        ethernet: None,
        ip: IpRepr::V4(Ipv4Repr {
            options: &[0x94, 0x04],
            ..Ipv4Repr::new(A, B)
        }),
        l4: L4Repr::Raw { protocol: 47 },
        payload: &[],
    };
    assert_eq!(parse_ip(&b.to_vec().unwrap()).unwrap().ip_header_len(), 24);
}

#[test]
fn ipv6_icmpv6() {
    check(
        PacketBuilder {
            ethernet: Some(EthernetRepr {
                src: M2,
                dst: M1,
                vlan_id: None,
            }),
            ip: IpRepr::V6(Ipv6Repr::new(D6, S6)),
            l4: L4Repr::Icmp {
                ty: 129,
                code: 0,
                ident: 0x0bad,
                seq: 9,
            },
            payload: b"pong",
        },
        &IPV6_ICMPV6,
    );
}

#[test]
fn ipv6_extension_headers() {
    let tcp = L4Repr::Tcp(TcpRepr {
        seq: 100,
        ack: 200,
        ..TcpRepr::new(50000, 22, TcpFlags::PSH | TcpFlags::ACK)
    });
    // Caller options of 10 bytes (a PadN of 8) grow the Destination Options header to 16 bytes.
    let ext = [
        ExtHeader::HopByHop(&[]),
        ExtHeader::DestinationOptions(&[1, 8, 0, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let b = PacketBuilder {
        ethernet: eth(None),
        ip: IpRepr::V6(Ipv6Repr {
            ext_headers: &ext,
            ..Ipv6Repr::new(S6, D6)
        }),
        l4: tcp,
        payload: b"x",
    };
    let v = b.to_vec().unwrap();
    assert_eq!(parse(&v).unwrap().ip_header_len(), 40 + 8 + 16);
    assert_eq!(
        &v[62..78],
        &[6, 1, 1, 8, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0],
        "options + PadN(4)"
    );
    let ext = [ExtHeader::HopByHop(&[]), ExtHeader::DestinationOptions(&[])];
    let b = PacketBuilder {
        ip: IpRepr::V6(Ipv6Repr {
            ext_headers: &ext,
            ..Ipv6Repr::new(S6, D6)
        }),
        ..b
    };
    let v = b.to_vec().unwrap();
    assert_eq!(
        &v[54..62],
        &[60, 0, 1, 4, 0, 0, 0, 0],
        "hop-by-hop with PadN(4)"
    );
    assert_eq!(
        &v[62..70],
        &[6, 0, 1, 4, 0, 0, 0, 0],
        "destination options with PadN(4)"
    );
    // A Pad1 when one byte is missing.
    let one = [ExtHeader::DestinationOptions(&[5, 3, 0, 0, 0])];
    let b = PacketBuilder {
        ip: IpRepr::V6(Ipv6Repr {
            ext_headers: &one,
            ..Ipv6Repr::new(S6, D6)
        }),
        ..b
    };
    assert_eq!(&b.to_vec().unwrap()[54..62], &[6, 0, 5, 3, 0, 0, 0, 0]);
}

#[test]
fn ipv6_routing_and_fragments() {
    let ext = [
        ExtHeader::Routing {
            routing_type: 0,
            segments_left: 0,
            data: &[],
        },
        ExtHeader::Fragment {
            offset: 0,
            more: true,
            ident: 0xcafe_f00d,
        },
    ];
    let b = PacketBuilder {
        ethernet: eth(None),
        ip: IpRepr::V6(Ipv6Repr {
            ext_headers: &ext,
            ..Ipv6Repr::new(S6, D6)
        }),
        l4: L4Repr::Udp {
            src_port: 7,
            dst_port: 9,
        },
        payload: b"abcd",
    };
    let mut v = b.to_vec().unwrap();
    // The fixture's UDP header describes the whole 100-byte datagram (length 100, checksum 0).
    v[74..78].copy_from_slice(&[0, 100, 0, 0]);
    assert_eq!(v, IPV6_ROUTING_FIRST_FRAGMENT);

    let ext = [ExtHeader::Fragment {
        offset: 12,
        more: false,
        ident: 0xcafe_f00d,
    }];
    check(
        PacketBuilder {
            ethernet: eth(None),
            ip: IpRepr::V6(Ipv6Repr {
                ext_headers: &ext,
                ..Ipv6Repr::new(S6, D6)
            }),
            l4: L4Repr::Raw { protocol: 6 },
            payload: &[0, 1, 2, 3, 4, 5, 6, 7],
        },
        &IPV6_LAST_FRAGMENT,
    );
}

#[test]
fn ipv4_fragments() {
    let data: Vec<u8> = (16..40).collect();
    check(
        PacketBuilder {
            ethernet: eth(None),
            ip: IpRepr::V4(Ipv4Repr {
                ident: 0xbeef,
                frag_offset: 3,
                ..Ipv4Repr::new(A, B)
            }),
            l4: L4Repr::Raw { protocol: 6 },
            payload: &data,
        },
        &IPV4_LAST_FRAGMENT,
    );
    let b = PacketBuilder {
        ethernet: None,
        ip: IpRepr::V4(Ipv4Repr {
            frag_offset: 0x2000,
            ..Ipv4Repr::new(A, B)
        }),
        l4: L4Repr::Raw { protocol: 6 },
        payload: &[],
    };
    assert_eq!(b.to_vec(), Err(Error::TooLong));
}

#[test]
fn arp_reply_frame() {
    let Frame::Arp { arp, .. } = parse_frame(&VLAN_ARP_REQUEST).unwrap() else {
        panic!("not ARP");
    };
    let router = MacAddr([2, 0, 0, 0, 0, 0xfe]);
    let reply = arp.reply(router);
    let eth = EthernetRepr {
        src: router,
        dst: arp.sender_mac,
        vlan_id: Some(7),
    };
    let mut buf = [0u8; 64];
    let n = emit_arp_frame(&eth, &reply, &mut buf).unwrap();
    assert_eq!(n, 46);
    let Frame::Arp { vlan_id, arp: back } = parse_frame(&buf[..n]).unwrap() else {
        panic!("not ARP");
    };
    assert_eq!(vlan_id, Some(7));
    assert_eq!(back.operation, ArpOperation::Reply);
    assert_eq!((back.sender_mac, back.sender_ip), (router, 0x0a00_0101));
    assert_eq!((back.target_mac, back.target_ip), (M2, A));
    assert_eq!(&buf[..6], &M2.0);
    assert_eq!(
        emit_arp_frame(&eth, &reply, &mut buf[..45]),
        Err(Error::BufferTooSmall)
    );
    assert_eq!(
        emit_arp_frame(&eth, &reply, &mut buf[..17]),
        Err(Error::BufferTooSmall)
    );
}

#[test]
fn checksums_verify() {
    use crate::wire::checksum;
    // TCP/UDP/ICMPv6 over IPv4 and IPv6, with odd payload lengths: re-summing the pseudo-header
    // and the segment gives zero.
    let payload = [0xa5u8; 33];
    for l4 in [
        L4Repr::Tcp(TcpRepr::new(1, 2, TcpFlags::ACK)),
        L4Repr::Tcp(TcpRepr {
            options: &[2, 4, 5, 0xb4, 1],
            ..TcpRepr::new(3, 4, TcpFlags::SYN)
        }),
        L4Repr::Udp {
            src_port: 5,
            dst_port: 6,
        },
        L4Repr::Icmp {
            ty: 128,
            code: 0,
            ident: 1,
            seq: 2,
        },
    ] {
        for ip in [
            IpRepr::V4(Ipv4Repr::new(A, B)),
            IpRepr::V6(Ipv6Repr::new(S6, D6)),
        ] {
            let v = PacketBuilder {
                ethernet: None,
                ip,
                l4,
                payload: &payload,
            }
            .to_vec()
            .unwrap();
            let m = parse_ip(&v).unwrap();
            let seg = &v[usize::from(m.l4_offset)..];
            let len = seg.len() as u32;
            let sum = match m.version {
                IpVersion::V4 if m.protocol == protocol::ICMP => 0,
                IpVersion::V4 => checksum::pseudo_header_v4(A, B, m.protocol, len),
                IpVersion::V6 => checksum::pseudo_header_v6(S6, D6, m.protocol, len),
            };
            assert_eq!(
                checksum::finish(checksum::add(sum, seg)),
                0,
                "{l4:?} {ip:?}"
            );
            if m.version == IpVersion::V4 {
                assert!(Ipv4Packet::new_checked(&v[..]).unwrap().verify_checksum());
            }
        }
    }
}

#[test]
fn too_long() {
    let big = vec![0u8; 65536];
    let b = PacketBuilder {
        ethernet: None,
        ip: IpRepr::V4(Ipv4Repr::new(A, B)),
        l4: L4Repr::Raw { protocol: 253 },
        payload: &big[..65535 - 20],
    };
    assert_eq!(b.len(), Ok(65535));
    let b = PacketBuilder {
        payload: &big[..65535 - 19],
        ..b
    };
    assert_eq!(b.len(), Err(Error::TooLong));
    let b = PacketBuilder {
        ip: IpRepr::V6(Ipv6Repr::new(S6, D6)),
        payload: &big[..65535],
        ..b
    };
    assert_eq!(b.len(), Ok(65575));
    let b = PacketBuilder { payload: &big, ..b };
    assert_eq!(b.len(), Err(Error::TooLong));
    let opts = [1u8; 41];
    let b = PacketBuilder {
        ip: IpRepr::V4(Ipv4Repr {
            options: &opts,
            ..Ipv4Repr::new(A, B)
        }),
        payload: &[],
        ..b
    };
    assert_eq!(b.len(), Err(Error::TooLong));
    let b = PacketBuilder {
        ip: IpRepr::V4(Ipv4Repr::new(A, B)),
        l4: L4Repr::Tcp(TcpRepr {
            options: &opts,
            ..TcpRepr::new(1, 2, TcpFlags::SYN)
        }),
        ..b
    };
    assert_eq!(b.len(), Err(Error::TooLong));
    let huge = [ExtHeader::DestinationOptions(&big[..2047])];
    let b = PacketBuilder {
        ip: IpRepr::V6(Ipv6Repr {
            ext_headers: &huge,
            ..Ipv6Repr::new(S6, D6)
        }),
        l4: L4Repr::Raw { protocol: 59 },
        ..b
    };
    assert_eq!(b.to_vec(), Err(Error::TooLong));
}

#[test]
fn decrement_ttl_v4() {
    let mut f = IPV4_TCP;
    let m = parse(&f).unwrap();
    assert_eq!(decrement_ttl(&mut f, &m), Ok(63));
    assert_eq!(f[22], 63);
    let p = Ipv4Packet::new_checked(&f[14..]).unwrap();
    assert!(p.verify_checksum());
    assert_eq!(&f[..22], &IPV4_TCP[..22]);
    assert_eq!(&f[25..], &IPV4_TCP[25..]);
    // Down to 1, the checksum stays right at every step; then it expires.
    let mut ttl = 63;
    while ttl > 1 {
        ttl = decrement_ttl(&mut f, &m).unwrap();
        assert!(
            Ipv4Packet::new_checked(&f[14..]).unwrap().verify_checksum(),
            "ttl {ttl}"
        );
    }
    assert_eq!(decrement_ttl(&mut f, &m), Err(Error::TtlExpired));
    assert_eq!(f[22], 1);
    f[22] = 0;
    assert_eq!(decrement_ttl(&mut f, &m), Err(Error::TtlExpired));
    // A buffer that does not hold the header `meta` describes.
    assert_eq!(decrement_ttl(&mut f[..30], &m), Err(Error::Truncated));
}

#[test]
fn decrement_ttl_matches_recompute_for_every_header() {
    // Every TTL, with identifications that push the checksum through its extremes.
    for ttl in 2..=255u8 {
        for ident in [0u16, 1, 0x7fff, 0xfffe, 0xffff] {
            let b = PacketBuilder {
                ethernet: None,
                ip: IpRepr::V4(Ipv4Repr {
                    ttl,
                    ident,
                    ..Ipv4Repr::new(0xffff_ffff, 0)
                }),
                l4: L4Repr::Raw { protocol: 255 },
                payload: &[],
            };
            let mut v = b.to_vec().unwrap();
            let m = parse_ip(&v).unwrap();
            decrement_ttl(&mut v, &m).unwrap();
            let want = PacketBuilder {
                ip: IpRepr::V4(Ipv4Repr {
                    ttl: ttl - 1,
                    ident,
                    ..Ipv4Repr::new(0xffff_ffff, 0)
                }),
                ..b
            };
            let want = want.to_vec().unwrap();
            // RFC 1624 may give the other zero (0x0000 vs 0xffff) only where a recomputed sum
            // can never be zero; both must verify.
            assert!(
                Ipv4Packet::new_checked(&v[..]).unwrap().verify_checksum(),
                "{ttl} {ident}"
            );
            assert_eq!(v[..10], want[..10]);
            assert_eq!(v[12..], want[12..]);
        }
    }
}

#[test]
fn decrement_hop_limit_v6() {
    let mut f = VLAN_IPV6_UDP;
    let m = parse(&f).unwrap();
    assert_eq!(decrement_ttl(&mut f, &m), Ok(254));
    assert_eq!(f[usize::from(m.ttl_offset)], 254);
    assert_eq!(f[..25], VLAN_IPV6_UDP[..25]);
    assert_eq!(f[26..], VLAN_IPV6_UDP[26..]);
    f[25] = 1;
    assert_eq!(decrement_ttl(&mut f, &m), Err(Error::TtlExpired));
    assert_eq!(decrement_ttl(&mut f[..50], &m), Err(Error::Truncated));
}
