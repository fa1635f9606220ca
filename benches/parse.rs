//! Parse-only throughput (issue #5, wire): frames/s through `vpcfw::wire::parse`, and the same
//! fields read with pnet_packet (as it comes, and with the validation vpcfw needs on top) and
//! with etherparse, in one run.
//!
//! Each iteration parses a batch of 256 distinct frames (addresses and ports vary) of one kind;
//! throughput is in frames.

#[path = "../tests/wire_support/etherparse_meta.rs"]
mod etherparse_meta;
#[path = "../tests/wire_support/pnet_meta.rs"]
mod pnet_meta;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vpcfw::wire::{
    EthernetRepr, ExtHeader, IpRepr, Ipv4Repr, Ipv6Repr, L4Repr, MacAddr, PacketBuilder,
    PacketMeta, TcpFlags, TcpRepr, parse, parse_into,
};

const BATCH: usize = 256;

#[derive(Clone, Copy)]
/// The frame kinds, all carrying TCP.
enum Kind {
    Ipv4,
    Ipv6,
    Ipv6TwoExt,
    VlanIpv4,
}

/// 256 PSH|ACK segments with 6 payload bytes (a 60-byte IPv4 frame), varied addresses and
/// ports.
fn frames(kind: Kind) -> Vec<Vec<u8>> {
    let ext = [ExtHeader::HopByHop(&[]), ExtHeader::DestinationOptions(&[])];
    (0..BATCH as u32)
        .map(|i| {
            let v4 = Ipv4Repr::new(0x0a00_0000 | i, 0x0a01_0000 | (i * 7));
            let v6 = Ipv6Repr::new(
                0x2001_0db8 << 96 | u128::from(i),
                0x2001_0db8 << 96 | 1 << 64,
            );
            let (ip, vlan_id) = match kind {
                Kind::Ipv4 => (IpRepr::V4(v4), None),
                Kind::VlanIpv4 => (IpRepr::V4(v4), Some(100)),
                Kind::Ipv6 => (IpRepr::V6(v6), None),
                Kind::Ipv6TwoExt => (
                    IpRepr::V6(Ipv6Repr {
                        ext_headers: &ext,
                        ..v6
                    }),
                    None,
                ),
            };
            PacketBuilder {
                ethernet: Some(EthernetRepr {
                    src: MacAddr([2, 0, 0, 0, 0, 1]),
                    dst: MacAddr([2, 0, 0, 0, 0, 2]),
                    vlan_id,
                }),
                ip,
                l4: L4Repr::Tcp(TcpRepr {
                    seq: i * 1000,
                    ack: 1,
                    ..TcpRepr::new(32768 + i as u16, 443, TcpFlags::ACK | TcpFlags::PSH)
                }),
                payload: b"abcdef",
            }
            .to_vec()
            .expect("bench frames fit")
        })
        .collect()
}

fn run(
    c: &mut Criterion,
    name: &str,
    frames: &[Vec<u8>],
    parser: impl Fn(&[u8]) -> Option<PacketMeta>,
) {
    // Every parser must read the same fields as vpcfw on these frames.
    for f in frames {
        assert_eq!(parser(f), parse(f).ok(), "{name}");
    }
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(frames.len() as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            for f in frames {
                if let Some(meta) = parser(black_box(f)) {
                    black_box(&meta);
                }
            }
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    let vpcfw = |f: &[u8]| parse(f).ok();
    let etherparse = |f: &[u8]| etherparse_meta::etherparse_meta(f).ok().map(|(m, _)| m);
    let kinds = [
        ("ipv4_tcp", Kind::Ipv4),
        ("ipv6_tcp", Kind::Ipv6),
        ("ipv6_2ext_tcp", Kind::Ipv6TwoExt),
        ("vlan_ipv4_tcp", Kind::VlanIpv4),
    ];
    for (name, kind) in kinds {
        run(c, &format!("vpcfw/{name}"), &frames(kind), vpcfw);
    }
    // parse_into: the same parse writing into one reused PacketMeta (the burst form).
    for (name, kind) in kinds {
        let frames = frames(kind);
        let mut group = c.benchmark_group("parse");
        group.throughput(Throughput::Elements(frames.len() as u64));
        group.bench_function(format!("vpcfw_into/{name}"), |b| {
            let mut meta = PacketMeta::EMPTY;
            b.iter(|| {
                for f in &frames {
                    let _ = black_box(parse_into(black_box(f), &mut meta));
                }
                black_box(&meta);
            })
        });
        group.finish();
    }
    let v4 = frames(Kind::Ipv4);
    run(c, "pnet_lax/ipv4_tcp", &v4, pnet_meta::pnet_lax);
    run(c, "pnet_validated/ipv4_tcp", &v4, pnet_meta::pnet_validated);
    for (name, kind) in kinds {
        run(c, &format!("etherparse/{name}"), &frames(kind), etherparse);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
