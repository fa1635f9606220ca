//! pnet_packet in the parser's role: Ethernet/IPv4/TCP read into [`PacketMeta`] through pnet's
//! views, with and without the validation vpcfw needs on top (shared by
//! `tests/wire_pnet.rs` and `benches/parse.rs`).

use pnet_packet::Packet;
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::tcp::TcpPacket;
use vpcfw::wire::{Fragment, IpVersion, PacketMeta, TcpFlags, Transport};

/// The fields of an Ethernet/IPv4/TCP frame as pnet's getters give them.
fn meta(ip: &Ipv4Packet<'_>, tcp: &TcpPacket<'_>) -> PacketMeta {
    let header_len = u16::from(ip.get_header_length()) * 4;
    let tcp_len = u16::from(tcp.get_data_offset()) * 4;
    let flags = ip.get_flags();
    PacketMeta {
        src: u128::from(u32::from(ip.get_source())),
        dst: u128::from(u32::from(ip.get_destination())),
        version: IpVersion::V4,
        protocol: ip.get_next_level_protocol().0,
        ttl: ip.get_ttl(),
        transport: Transport::Tcp {
            src_port: tcp.get_source(),
            dst_port: tcp.get_destination(),
            flags: TcpFlags(tcp.get_flags()),
            seq: tcp.get_sequence(),
            ack: tcp.get_acknowledgement(),
        },
        fragment: Fragment {
            ident: u32::from(ip.get_identification()),
            offset: ip.get_fragment_offset(),
            more: flags & 1 != 0,
            dont_fragment: flags & 2 != 0,
        },
        vlan_id: None,
        ip_len: ip.get_total_length(),
        ttl_offset: 14 + 8,
        l3_offset: 14,
        l4_offset: 14 + header_len,
        payload_offset: 14 + header_len + tcp_len,
        payload_len: (ip.payload().len() as u16).saturating_sub(tcp_len),
    }
}

/// pnet as it comes: its constructors check only the fixed header sizes (14, 20, 20 bytes);
/// lengths taken from the headers are clamped to the buffer, not checked.
pub fn pnet_lax(frame: &[u8]) -> Option<PacketMeta> {
    let eth = EthernetPacket::new(frame)?;
    if eth.get_ethertype() != EtherTypes::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new(eth.payload())?;
    let tcp = TcpPacket::new(ip.payload())?;
    Some(meta(&ip, &tcp))
}

/// pnet with the checks vpcfw needs added on top (the ones `vpcfw::wire::parse` makes for an
/// unfragmented IPv4/TCP frame): version, IHL ≥ 5, header ≤ total length ≤ buffer, TCP data
/// offset ≥ 5 and within the segment.
pub fn pnet_validated(frame: &[u8]) -> Option<PacketMeta> {
    let eth = EthernetPacket::new(frame)?;
    if eth.get_ethertype() != EtherTypes::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new(eth.payload())?;
    let header_len = usize::from(ip.get_header_length()) * 4;
    let total = usize::from(ip.get_total_length());
    if ip.get_version() != 4 || header_len < 20 || total < header_len || total > eth.payload().len()
    {
        return None;
    }
    if ip.get_fragment_offset() != 0 || ip.get_next_level_protocol() != IpNextHeaderProtocols::Tcp {
        return None;
    }
    let segment = ip.payload();
    let tcp = TcpPacket::new(segment)?;
    let tcp_len = usize::from(tcp.get_data_offset()) * 4;
    if tcp_len < 20 || tcp_len > segment.len() {
        return None;
    }
    Some(meta(&ip, &tcp))
}
