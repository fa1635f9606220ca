//! etherparse as a second opinion: the same [`PacketMeta`] fields, read through
//! `etherparse::SlicedPacket` (shared by `tests/wire_differential.rs` and `benches/parse.rs`).

use etherparse::{Ipv6ExtensionSlice, LinkExtSlice, NetSlice, SlicedPacket, TransportSlice};
use vpcfw::wire::{Fragment, IpVersion, PacketMeta, TcpFlags, Transport, icmp};

/// What etherparse saw besides the [`PacketMeta`] fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Notes {
    /// VLAN (or MACsec) tags walked.
    pub link_exts: usize,
    /// An IPsec Authentication Header was walked as an extension header.
    pub auth_header: bool,
}

/// Offset of `part` in `whole` (both from the same frame).
fn offset(whole: &[u8], part: &[u8]) -> u16 {
    (part.as_ptr() as usize - whole.as_ptr() as usize) as u16
}

/// The ICMP/ICMPv6 transport fields, with the identifier of a query from bytes 5–8.
fn icmp_transport(protocol: u8, ty: u8, code: u8, rest: [u8; 4]) -> Transport {
    let ident = icmp::is_query(protocol, ty).then(|| u16::from_be_bytes([rest[0], rest[1]]));
    Transport::Icmp { ty, code, ident }
}

/// Parses `frame` with etherparse into the fields vpcfw reads; `Err` when etherparse rejects it
/// or it is not IP.
pub fn etherparse_meta(frame: &[u8]) -> Result<(PacketMeta, Notes), String> {
    let p = SlicedPacket::from_ethernet(frame).map_err(|e| e.to_string())?;
    let mut notes = Notes {
        link_exts: p.link_exts.len(),
        auth_header: false,
    };
    let vlan_id = p.link_exts.iter().find_map(|x| match x {
        LinkExtSlice::Vlan(v) => Some(v.vlan_identifier().value()),
        _ => None,
    });
    let (version, src, dst, ttl, ip_len, fragment, l3, payload) = match p.net.as_ref() {
        Some(NetSlice::Ipv4(s)) => {
            let h = s.header();
            notes.auth_header = s.extensions().auth.is_some();
            let fragment = Fragment {
                ident: u32::from(h.identification()),
                offset: h.fragments_offset().value(),
                more: h.more_fragments(),
                dont_fragment: h.dont_fragment(),
            };
            let (src, dst) = (
                u32::from_be_bytes(h.source()),
                u32::from_be_bytes(h.destination()),
            );
            let l3 = offset(frame, h.slice());
            (
                IpVersion::V4,
                u128::from(src),
                u128::from(dst),
                h.ttl(),
                h.total_len(),
                fragment,
                l3,
                s.payload(),
            )
        }
        Some(NetSlice::Ipv6(s)) => {
            let h = s.header();
            let mut fragment = Fragment::default();
            for ext in s.extensions().clone().into_iter() {
                match ext {
                    Ipv6ExtensionSlice::Fragment(f) => {
                        fragment.ident = f.identification();
                        fragment.offset = f.fragment_offset().value();
                        fragment.more = f.more_fragments();
                    }
                    Ipv6ExtensionSlice::Authentication(_) => notes.auth_header = true,
                    _ => {}
                }
            }
            let (src, dst) = (
                u128::from_be_bytes(h.source()),
                u128::from_be_bytes(h.destination()),
            );
            let l3 = offset(frame, h.slice());
            (
                IpVersion::V6,
                src,
                dst,
                h.hop_limit(),
                h.payload_length(),
                fragment,
                l3,
                s.payload(),
            )
        }
        Some(NetSlice::Arp(_)) => return Err("arp".into()),
        None => return Err("not ip".into()),
    };
    let l4_offset = offset(frame, payload.payload);
    let (transport, payload_offset, payload_len) = match p.transport.as_ref() {
        Some(TransportSlice::Tcp(t)) => (
            Transport::Tcp {
                src_port: t.source_port(),
                dst_port: t.destination_port(),
                flags: TcpFlags(t.slice()[13]),
                seq: t.sequence_number(),
                ack: t.acknowledgment_number(),
            },
            offset(frame, t.payload()),
            t.payload().len(),
        ),
        Some(TransportSlice::Udp(u)) => (
            Transport::Udp {
                src_port: u.source_port(),
                dst_port: u.destination_port(),
            },
            offset(frame, u.payload()),
            u.payload().len(),
        ),
        Some(TransportSlice::Icmpv4(i)) => {
            let t = icmp_transport(1, i.type_u8(), i.code_u8(), i.bytes5to8());
            (t, offset(frame, i.payload()), i.payload().len())
        }
        Some(TransportSlice::Icmpv6(i)) => {
            let t = icmp_transport(58, i.type_u8(), i.code_u8(), i.bytes5to8());
            (t, offset(frame, i.payload()), i.payload().len())
        }
        // IGMP and unparsed protocols: vpcfw reads no header.
        Some(TransportSlice::Igmp(_)) | None => (Transport::None, l4_offset, payload.payload.len()),
    };
    let meta = PacketMeta {
        src,
        dst,
        version,
        protocol: payload.ip_number.0,
        ttl,
        transport,
        fragment,
        vlan_id,
        ip_len,
        ttl_offset: l3 + if version == IpVersion::V4 { 8 } else { 7 },
        l3_offset: l3,
        l4_offset,
        payload_offset,
        payload_len: payload_len as u16,
    };
    Ok((meta, notes))
}
