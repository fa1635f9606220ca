//! Arbitrary frames: parsing never panics and never points past the frame; whatever parses
//! re-serialises (with the builder) to a frame that parses to the same header fields; and the
//! engine judges any frame without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vpcfw::wire::{self, EthernetRepr, Frame, IpRepr, IpVersion, Ipv4Repr, Ipv6Repr, L4Repr, MacAddr, PacketBuilder, TcpRepr, Transport};

fuzz_target!(|frame: &[u8]| {
    let parsed = wire::parse_frame(frame);
    let Ok(Frame::Ip(m)) = parsed else { return };
    // Offsets stay inside the frame and in order.
    assert!(usize::from(m.l3_offset) <= usize::from(m.l4_offset));
    assert!(usize::from(m.l4_offset) <= usize::from(m.payload_offset));
    assert!(m.l3_end() <= frame.len(), "datagram end {} past frame {}", m.l3_end(), frame.len());
    assert!(usize::from(m.payload_offset) + usize::from(m.payload_len) <= frame.len());
    assert!(usize::from(m.ttl_offset) < frame.len());
    assert_eq!(wire::parse(frame), Ok(m), "parse and parse_frame disagree");

    // Re-serialise what was understood (unfragmented packets with a parsed transport).
    if m.fragment.is_fragment() {
        return;
    }
    let l4 = match m.transport {
        Transport::Tcp { src_port, dst_port, flags, seq, ack } => {
            let mut t = TcpRepr::new(src_port, dst_port, flags);
            t.seq = seq;
            t.ack = ack;
            L4Repr::Tcp(t)
        }
        Transport::Udp { src_port, dst_port } => L4Repr::Udp { src_port, dst_port },
        // The builder announces ICMP by family (1 over IPv4, 58 over IPv6); the other pairing
        // (e.g. protocol 58 inside IPv4) parses fine but cannot be rebuilt that way.
        Transport::Icmp { .. } if (m.version == IpVersion::V4) != (m.protocol == 1) => return,
        Transport::Icmp { ty, code, ident } => L4Repr::Icmp { ty, code, ident: ident.unwrap_or(0), seq: 0 },
        Transport::None => return,
    };
    let payload = &frame[usize::from(m.payload_offset)..usize::from(m.payload_offset) + usize::from(m.payload_len)];
    let ip = match m.version {
        IpVersion::V4 => {
            let mut r = Ipv4Repr::new(m.src as u32, m.dst as u32);
            r.ttl = m.ttl;
            r.ident = m.fragment.ident as u16;
            r.dont_fragment = m.fragment.dont_fragment;
            IpRepr::V4(r)
        }
        IpVersion::V6 => {
            let mut r = Ipv6Repr::new(m.src, m.dst);
            r.hop_limit = m.ttl;
            IpRepr::V6(r)
        }
    };
    let eth = EthernetRepr { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 2]), vlan_id: m.vlan_id };
    let Ok(again) = (PacketBuilder { ethernet: Some(eth), ip, l4, payload }).to_vec() else { return };
    let r = wire::parse(&again).expect("a built frame parses");
    assert_eq!((r.src, r.dst, r.version, r.protocol, r.ttl, r.vlan_id), (m.src, m.dst, m.version, m.protocol, m.ttl, m.vlan_id));
    match (r.transport, m.transport) {
        (Transport::Tcp { src_port: a, dst_port: b, flags: f, .. }, Transport::Tcp { src_port: c, dst_port: d, flags: g, .. }) => {
            assert_eq!((a, b, f), (c, d, g));
        }
        (x, y) => assert_eq!(x, y),
    }
    assert_eq!(r.payload_len, m.payload_len);
});
