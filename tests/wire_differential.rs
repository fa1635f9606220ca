//! Differential test: `vpcfw::wire::parse` against etherparse on generated frames, their
//! truncations and byte mutations.
//!
//! Where both accept a frame, every [`PacketMeta`] field must agree, after these intended
//! differences (vpcfw's choices, see DESIGN.md "Wire parsing"):
//!
//! 1. **First fragments**: vpcfw reads the L4 header of a first fragment (the ports decide the
//!    verdict of the whole datagram); etherparse leaves a fragmented payload unparsed.
//! 2. **Authentication Header**: etherparse walks AH (IPv4 and IPv6) as an extension header;
//!    vpcfw reports protocol 51 (AWS rules name AH as a protocol). Frames with AH are skipped.
//! 3. **After a non-first IPv6 fragment**: vpcfw stops at the Fragment header (what follows is
//!    the middle of the datagram); etherparse walks on into the fragment data. Compared only
//!    when the Fragment header announces an upper-layer protocol.
//! 4. **IPv6 payload length 0**: etherparse takes the rest of the buffer as the payload (a
//!    jumbogram or an offloaded super-frame); for vpcfw the payload is empty, as the header
//!    says (jumbograms need more than an Ethernet MTU; offloaded frames carry real lengths).
//! 5. **IGMP**: etherparse reads (and rejects short) IGMP headers; vpcfw reads no IGMP header
//!    (protocol 2 is judged by protocol number only). Frames with protocol 2 are skipped.
//! 6. **ICMP timestamp length**: both need the 20 bytes of a timestamp message, but etherparse
//!    checks only code 0 and rejects longer ones too; vpcfw checks every code and ignores extra
//!    bytes.
//!
//! Where only etherparse accepts, vpcfw's error must be one of its deliberate strictnesses:
//! a second VLAN tag or an 802.1ad/0x9100 outer tag, a fragment past 65535 bytes or a TCP
//! fragment at offset 8 (RFC 1858), two Fragment headers, more than 8 extension headers, a
//! UDP length of 0 (jumbogram, impossible on Ethernet), a first fragment too short for its L4
//! header (the tiny-fragment attack, RFC 1858 / RFC 7112). etherparse accepting what vpcfw
//! rejects for any other reason, or rejecting what vpcfw accepts, fails the test.

#[path = "wire_support/etherparse_meta.rs"]
mod etherparse_meta;

use etherparse_meta::etherparse_meta;
use proptest::prelude::*;
use vpcfw::wire::{
    Error, EthernetRepr, ExtHeader, IpRepr, Ipv4Repr, Ipv6Repr, L4Repr, MacAddr, PacketBuilder,
    PacketMeta, TcpFlags, TcpRepr, Transport, parse,
};

/// One generated extension header: kind (0 HBH, 1 routing, 2 dest opts, 3 fragment), data
/// length, fragment offset/M/id.
type ExtSpec = (u8, u8, u16, bool, u32);

#[derive(Debug, Clone)]
struct FrameSpec {
    vlan: Option<u16>,
    v6: bool,
    addrs: (u128, u128),
    ttl: u8,
    v4_options: u8,
    v4_frag: (u16, bool, bool, u16),
    ext: Vec<ExtSpec>,
    l4_kind: u8,
    ports: (u16, u16),
    tcp: (u32, u32, u8, u8),
    icmp: (u8, u8, u16),
    raw_protocol: u8,
    payload_len: usize,
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    let ext = prop::collection::vec(
        (
            0u8..4,
            0u8..24,
            prop_oneof![Just(0u16), 0u16..8192],
            any::<bool>(),
            any::<u32>(),
        ),
        0..4,
    );
    (
        (
            prop::option::of(0u16..4096),
            any::<bool>(),
            any::<(u128, u128)>(),
            any::<u8>(),
        ),
        (
            prop_oneof![Just(0u8), 0u8..41],
            (
                prop_oneof![3 => Just(0u16), 1 => 0u16..8192],
                any::<bool>(),
                any::<bool>(),
                any::<u16>(),
            ),
        ),
        ext,
        (
            0u8..5,
            any::<(u16, u16)>(),
            any::<(u32, u32, u8)>(),
            0u8..41,
        ),
        (any::<(u8, u8, u16)>(), any::<u8>(), 0usize..80),
    )
        .prop_map(
            |((vlan, v6, addrs, ttl), (v4_options, v4_frag), ext, l4, rest)| {
                let (l4_kind, ports, (seq, ack, flags), tcp_opts) = l4;
                let (icmp, raw_protocol, payload_len) = rest;
                FrameSpec {
                    vlan,
                    v6,
                    addrs,
                    ttl,
                    v4_options,
                    v4_frag,
                    ext,
                    l4_kind,
                    ports,
                    tcp: (seq, ack, flags, tcp_opts),
                    icmp,
                    raw_protocol,
                    payload_len,
                }
            },
        )
}

const OPTION_BYTES: [u8; 64] = [1; 64]; // IPv4 NOP options / IPv6 filler bytes

fn build(spec: &FrameSpec) -> Vec<u8> {
    let ext: Vec<ExtHeader<'_>> = spec
        .ext
        .iter()
        .map(|&(kind, len, offset, more, ident)| {
            // PadN-shaped option bytes for HBH/dest opts: type 1 (PadN), length, zeros.
            let data = &OPTION_BYTES[..usize::from(len)];
            match kind {
                0 => ExtHeader::HopByHop(data),
                1 => ExtHeader::Routing {
                    routing_type: 4,
                    segments_left: 0,
                    data,
                },
                2 => ExtHeader::DestinationOptions(data),
                _ => ExtHeader::Fragment {
                    offset,
                    more,
                    ident,
                },
            }
        })
        .collect();
    let ip = if spec.v6 {
        IpRepr::V6(Ipv6Repr {
            hop_limit: spec.ttl,
            ext_headers: &ext,
            ..Ipv6Repr::new(spec.addrs.0, spec.addrs.1)
        })
    } else {
        let (frag_offset, more_fragments, dont_fragment, ident) = spec.v4_frag;
        IpRepr::V4(Ipv4Repr {
            ttl: spec.ttl,
            ident,
            dont_fragment,
            more_fragments,
            frag_offset,
            options: &OPTION_BYTES[..usize::from(spec.v4_options)],
            ..Ipv4Repr::new(spec.addrs.0 as u32, spec.addrs.1 as u32)
        })
    };
    let (seq, ack, flags, tcp_opts) = spec.tcp;
    let l4 = match spec.l4_kind {
        0 => L4Repr::Tcp(TcpRepr {
            seq,
            ack,
            options: &OPTION_BYTES[..usize::from(tcp_opts)],
            ..TcpRepr::new(spec.ports.0, spec.ports.1, TcpFlags(flags))
        }),
        1 => L4Repr::Udp {
            src_port: spec.ports.0,
            dst_port: spec.ports.1,
        },
        2 => L4Repr::Icmp {
            ty: spec.icmp.0,
            code: spec.icmp.1,
            ident: spec.icmp.2,
            seq: 1,
        },
        3 => L4Repr::Icmp {
            ty: 128 + spec.icmp.0 % 2,
            code: 0,
            ident: spec.icmp.2,
            seq: 1,
        },
        _ => L4Repr::Raw {
            protocol: spec.raw_protocol,
        },
    };
    let payload = vec![0xa5; spec.payload_len];
    PacketBuilder {
        ethernet: Some(EthernetRepr {
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            dst: MacAddr([2, 0, 0, 0, 0, 2]),
            vlan_id: spec.vlan,
        }),
        ip,
        l4,
        payload: &payload,
    }
    .to_vec()
    .expect("generated specs fit")
}

/// The raw next-header values of the IPv6 extension chain as written in `frame` (walking past
/// fragments too), to spot AH and what follows a non-first Fragment header.
fn v6_next_after_fragment(frame: &[u8], meta: &PacketMeta) -> Option<u8> {
    // The Fragment header is the 8 bytes before the upper layer in a non-first fragment.
    let at = usize::from(meta.l4_offset).checked_sub(8)?;
    frame.get(at).copied()
}

/// How a frame was compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Both parsed it; every field agrees.
    SameFields,
    /// Both rejected it.
    BothRejected,
    /// Only vpcfw rejected it, for one of its deliberate strictnesses.
    DeliberatelyRejected,
    /// One of the documented differences: not compared.
    Skipped,
}

/// Compares one frame; returns a description of a disagreement (with the frame in hex).
fn compare(frame: &[u8]) -> Result<Outcome, String> {
    compare_fields(frame).map_err(|e| {
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        format!("{e}\nframe {hex}")
    })
}

fn compare_fields(frame: &[u8]) -> Result<Outcome, String> {
    let ours = parse(frame);
    if let Ok(m) = &ours {
        if m.version == vpcfw::wire::IpVersion::V6 && m.is_non_first_fragment() {
            let next = v6_next_after_fragment(frame, m).unwrap_or(0);
            if matches!(next, 43 | 44 | 51 | 60) {
                return Ok(Outcome::Skipped); // difference 3
            }
        }
        if m.protocol == 51 {
            return Ok(Outcome::Skipped); // difference 2
        }
        if m.protocol == 2 {
            return Ok(Outcome::Skipped); // difference 5
        }
    }
    let theirs = etherparse_meta(frame);
    if let Ok((e, _)) = &theirs
        && e.version == vpcfw::wire::IpVersion::V6
        && e.ip_len == 0
    {
        return Ok(Outcome::Skipped); // difference 4
    }
    match (ours, theirs) {
        (Ok(mut m), Ok((e, notes))) => {
            if notes.auth_header || m.protocol == 51 {
                return Ok(Outcome::Skipped); // difference 2
            }
            if m.fragment.is_first() {
                // Difference 1: forget the L4 header vpcfw read.
                m.transport = Transport::None;
                m.payload_offset = m.l4_offset;
                m.payload_len = (m.l3_end() - usize::from(m.l4_offset)) as u16;
            }
            if m == e {
                Ok(Outcome::SameFields)
            } else {
                Err(format!("fields differ:\n vpcfw {m:?}\n ether {e:?}"))
            }
        }
        (Err(err), Ok((e, notes))) => {
            // A first fragment must hold its whole L4 header (RFC 1858 / RFC 7112), which
            // etherparse does not read in fragments.
            let first_fragment_l4 = e.fragment.is_first()
                && matches!(
                    err,
                    Error::Truncated | Error::BadTcpOffset | Error::BadUdpLength
                );
            // Difference 6: etherparse checks the timestamp length for code 0 only.
            let short_timestamp = err == Error::Truncated
                && e.protocol == 1
                && matches!(e.icmp(), Some((13 | 14, code)) if code != 0);
            let deliberate = first_fragment_l4
                || short_timestamp
                || match err {
                    Error::TooManyVlanTags => true,
                    Error::UnsupportedEtherType => notes.link_exts > 0,
                    Error::BadFragment | Error::ExtHeaderChainTooLong => true,
                    Error::BadUdpLength => udp_length_zero(frame),
                    _ => false,
                };
            if deliberate {
                Ok(Outcome::DeliberatelyRejected)
            } else {
                Err(format!("only etherparse accepts; vpcfw: {err}"))
            }
        }
        (Ok(m), Err(_)) if timestamp_longer_than_20(&m) => Ok(Outcome::Skipped), // difference 6
        (Ok(m), Err(why)) => Err(format!("only vpcfw accepts ({why}): {m:?}")),
        (Err(_), Err(_)) => Ok(Outcome::BothRejected),
    }
}

/// Whether `m` is an ICMP timestamp request/reply of more than 20 bytes.
fn timestamp_longer_than_20(m: &PacketMeta) -> bool {
    m.protocol == 1 && matches!(m.icmp(), Some((13 | 14, _))) && m.payload_len > 12
}

/// Whether the frame's UDP length field (where vpcfw would read it) is zero.
fn udp_length_zero(frame: &[u8]) -> bool {
    // Re-parse leniently: find the UDP header as etherparse did.
    match etherparse::SlicedPacket::from_ethernet(frame) {
        Ok(p) => matches!(p.transport, Some(etherparse::TransportSlice::Udp(u)) if u.length() == 0),
        Err(_) => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn agrees_on_generated_frames(spec in frame_spec()) {
        let frame = build(&spec);
        compare(&frame).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn agrees_on_truncations(spec in frame_spec(), cut in any::<prop::sample::Index>()) {
        let frame = build(&spec);
        let n = cut.index(frame.len() + 1);
        compare(&frame[..n]).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn agrees_on_mutations(
        spec in frame_spec(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut frame = build(&spec);
        for (at, value) in edits {
            let i = at.index(frame.len());
            frame[i] = value;
        }
        compare(&frame).map_err(TestCaseError::fail)?;
    }

    /// Random bytes (mostly rejected by both) never panic and never disagree.
    #[test]
    fn agrees_on_noise(mut bytes in prop::collection::vec(any::<u8>(), 0..120), et in 0usize..4) {
        if bytes.len() >= 14 {
            let ethertype: [[u8; 2]; 4] = [[0x08, 0x00], [0x86, 0xdd], [0x81, 0x00], [0x08, 0x06]];
            bytes[12..14].copy_from_slice(&ethertype[et]);
        }
        compare(&bytes).map_err(TestCaseError::fail)?;
    }
}

/// The generator reaches every interesting kind of frame (so the properties above are not
/// vacuous): each parser outcome below occurs in a fixed sample.
#[test]
fn generator_covers_the_cases() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut same_fields = 0;
    let (mut v4, mut v6, mut vlan, mut first, mut non_first, mut ext2, mut tcp, mut udp, mut icmp) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0);
    for _ in 0..2000 {
        let spec = frame_spec().new_tree(&mut runner).unwrap().current();
        let frame = build(&spec);
        same_fields += usize::from(compare(&frame) == Ok(Outcome::SameFields));
        let Ok(m) = parse(&frame) else {
            continue;
        };
        match m.version {
            vpcfw::wire::IpVersion::V4 => v4 += 1,
            vpcfw::wire::IpVersion::V6 => v6 += 1,
        }
        vlan += usize::from(m.vlan_id.is_some());
        first += usize::from(m.fragment.is_first());
        non_first += usize::from(m.is_non_first_fragment());
        ext2 += usize::from(m.version == vpcfw::wire::IpVersion::V6 && m.ip_header_len() >= 56);
        match m.transport {
            Transport::Tcp { .. } => tcp += 1,
            Transport::Udp { .. } => udp += 1,
            Transport::Icmp { .. } => icmp += 1,
            Transport::None => {}
        }
    }
    for (name, n) in [
        ("v4", v4),
        ("v6", v6),
        ("vlan", vlan),
        ("first fragments", first),
        ("non-first fragments", non_first),
        ("v6 with 2+ ext headers", ext2),
        ("tcp", tcp),
        ("udp", udp),
        ("icmp", icmp),
    ] {
        assert!(n >= 20, "only {n} {name}");
    }
    // Most generated frames are compared field by field (not skipped or rejected).
    assert!(
        same_fields >= 1000,
        "only {same_fields} of 2000 compared field by field"
    );
}
