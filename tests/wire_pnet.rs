//! Why vpcfw does not parse with pnet_packet (DESIGN.md "Wire parsing"): on valid frames pnet
//! reads the same fields, but it accepts inconsistent headers that vpcfw must reject.

#[path = "wire_support/pnet_meta.rs"]
mod pnet_meta;

use pnet_meta::{pnet_lax, pnet_validated};
use vpcfw::wire::{
    Error, EthernetRepr, IpRepr, Ipv4Repr, L4Repr, MacAddr, PacketBuilder, TcpFlags, TcpRepr, parse,
};

fn frame(payload: &[u8], options: &'static [u8]) -> Vec<u8> {
    PacketBuilder {
        ethernet: Some(EthernetRepr {
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            dst: MacAddr([2, 0, 0, 0, 0, 2]),
            vlan_id: None,
        }),
        ip: IpRepr::V4(Ipv4Repr {
            ident: 99,
            options,
            ..Ipv4Repr::new(0x0a00_0001, 0x0a00_0002)
        }),
        l4: L4Repr::Tcp(TcpRepr {
            seq: 7,
            ack: 8,
            ..TcpRepr::new(1234, 443, TcpFlags::ACK)
        }),
        payload,
    }
    .to_vec()
    .unwrap()
}

#[test]
fn same_fields_on_valid_frames() {
    for (payload, options) in [(&b""[..], &[][..]), (b"hello", &[1, 1, 1, 1][..])] {
        let f = frame(payload, options);
        let ours = parse(&f).unwrap();
        assert_eq!(pnet_lax(&f), Some(ours));
        assert_eq!(pnet_validated(&f), Some(ours));
    }
}

#[test]
fn pnet_alone_accepts_inconsistent_headers() {
    let valid = frame(b"hello", &[]);
    let cases: [(&str, usize, u8, Error); 4] = [
        ("IHL 3", 14, 0x43, Error::BadIhl),
        (
            "total length beyond the frame",
            17,
            200,
            Error::BadTotalLength,
        ),
        ("TCP data offset 2", 46, 0x20, Error::BadTcpOffset),
        (
            "TCP data offset 15 beyond the segment",
            46,
            0xf0,
            Error::Truncated,
        ),
    ];
    for (name, at, value, err) in cases {
        let mut f = valid.clone();
        f[at] = value;
        assert_eq!(parse(&f), Err(err), "{name}");
        assert!(pnet_lax(&f).is_some(), "pnet rejects {name}");
        assert_eq!(pnet_validated(&f), None, "{name}");
    }
}
