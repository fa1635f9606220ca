//! The router with byte fixtures over the bundled three-tier snapshot: frames in, frames out.

use super::*;
use crate::firewall::Stage;
use crate::wire::{ArpRepr, Ipv4Packet, Ipv4Repr, TcpFlags, TcpRepr};

const WEB: &str = "eni-0e1f2a3b4c5d6d001";
const APP: &str = "eni-0e1f2a3b4c5d6d002";
const DB: &str = "eni-0e1f2a3b4c5d6d004";
const WEB_MAC: MacAddr = MacAddr([0x02, 0, 0, 0xd6, 0xd0, 0x01]);

fn policy() -> CompiledPolicy {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/three-tier");
    let snap = crate::aws::load_dir(std::path::Path::new(dir)).expect("snapshot");
    CompiledPolicy::compile(snap.policy).expect("compile")
}

/// Ports: 0 web, 1 app eth0, 2 db, and (with `internet`) 3 the internet.
fn setup(internet: bool) -> (Router, Firewall) {
    let p = policy();
    let mut ports = vec![
        ("web".to_string(), Attach::Eni(WEB.into())),
        ("app".to_string(), Attach::Eni(APP.into())),
        ("db".to_string(), Attach::Eni(DB.into())),
    ];
    if internet {
        ports.push(("inet".to_string(), Attach::Internet));
    }
    let r = Router::new(&p, ports).expect("router");
    (r, Firewall::new(p, None))
}

fn v4(s: &str) -> u32 {
    u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: TcpFlags, ttl: u8) -> Vec<u8> {
    PacketBuilder {
        ethernet: Some(EthernetRepr {
            src: WEB_MAC,
            dst: ROUTER_MAC,
            vlan_id: None,
        }),
        ip: IpRepr::V4(Ipv4Repr {
            ttl,
            ..Ipv4Repr::new(v4(src), v4(dst))
        }),
        l4: L4Repr::Tcp(TcpRepr::new(sport, dport, flags)),
        payload: b"hello",
    }
    .to_vec()
    .unwrap()
}

fn arp_request(sender: &str, target: &str) -> Vec<u8> {
    let arp = ArpRepr {
        operation: ArpOperation::Request,
        sender_mac: WEB_MAC,
        sender_ip: v4(sender),
        target_mac: MacAddr([0; 6]),
        target_ip: v4(target),
    };
    let mut buf = vec![0u8; 60];
    let eth = EthernetRepr {
        src: WEB_MAC,
        dst: MacAddr::BROADCAST,
        vlan_id: None,
    };
    let n = wire::emit_arp_frame(&eth, &arp, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn handle(r: &mut Router, fw: &mut Firewall, port: u16, frame: &mut [u8]) -> (Handled, Vec<u8>) {
    let mut reply = vec![0u8; 256];
    let h = r.handle(fw, Time::from_secs(1), port, frame, &mut reply);
    if let Outcome::Reply(n) = h.outcome {
        reply.truncate(n);
    }
    (h, reply)
}

#[test]
fn answers_arp_for_the_gateway_and_routed_addresses() {
    let (mut r, mut fw) = setup(false);
    let mut req = arp_request("10.0.1.10", "10.0.1.1");
    let (h, reply) = handle(&mut r, &mut fw, 0, &mut req);
    let Outcome::Reply(_) = h.outcome else {
        panic!("{h:?}")
    };
    let Ok(Frame::Arp { arp, .. }) = wire::parse_frame(&reply) else {
        panic!("not ARP")
    };
    assert_eq!(arp.operation, ArpOperation::Reply);
    assert_eq!(arp.sender_mac, ROUTER_MAC);
    assert_eq!(arp.sender_ip, v4("10.0.1.1"));
    assert_eq!(arp.target_mac, WEB_MAC);
    assert_eq!(arp.target_ip, v4("10.0.1.10"));
    assert_eq!(&reply[0..6], &WEB_MAC.0);
    // A neighbour in another subnet (local route), the internet (0.0.0.0/0 -> igw) and a
    // blackholed peering are all routed by the web subnet's table.
    for target in ["10.0.2.10", "198.51.100.1", "10.1.0.5", "10.0.1.99"] {
        let mut req = arp_request("10.0.1.10", target);
        assert!(
            matches!(
                handle(&mut r, &mut fw, 0, &mut req).0.outcome,
                Outcome::Reply(_)
            ),
            "{target}"
        );
    }
    // Its own address: no answer.
    let mut req = arp_request("10.0.1.10", "10.0.1.10");
    assert_eq!(
        handle(&mut r, &mut fw, 0, &mut req).0.outcome,
        Outcome::Drop(DropReason::NotAnswered)
    );
    // The db subnet's table has only the local route: nothing outside 10.0.0.0/16 is routed.
    let mut req = arp_request("10.0.3.20", "198.51.100.1");
    assert_eq!(
        handle(&mut r, &mut fw, 2, &mut req).0.outcome,
        Outcome::Drop(DropReason::NotAnswered)
    );
    let mut req = arp_request("10.0.3.20", "10.0.3.1");
    assert!(matches!(
        handle(&mut r, &mut fw, 2, &mut req).0.outcome,
        Outcome::Reply(_)
    ));
    // A sender that is not the port's ENI.
    let mut req = arp_request("10.0.2.10", "10.0.1.1");
    assert_eq!(
        handle(&mut r, &mut fw, 0, &mut req).0.outcome,
        Outcome::Drop(DropReason::Spoofed)
    );
    assert_eq!(r.stats().arp_replies, 6);
}

#[test]
fn forwards_allowed_traffic_with_mac_rewrite_and_ttl_decrement() {
    let (mut r, mut fw) = setup(false);
    let mut syn = tcp("10.0.1.10", "10.0.2.10", 40100, 8080, TcpFlags::SYN, 64);
    let original = syn.clone();
    let (h, _) = handle(&mut r, &mut fw, 0, &mut syn);
    assert_eq!(h.outcome, Outcome::Forward(1));
    let (_, v) = h.judged.unwrap();
    assert_eq!(v.decision, Decision::Accept);
    assert_eq!(
        &syn[0..6],
        &default_peer_mac(1).0,
        "destination: the app ENI's MAC"
    );
    assert_eq!(&syn[6..12], &ROUTER_MAC.0);
    let ip = Ipv4Packet::new_checked(&syn[14..]).unwrap();
    assert_eq!(ip.ttl(), 63);
    assert!(ip.verify_checksum());
    // Nothing else changed: the transport header and payload (and their checksum) are intact.
    assert_eq!(&syn[34..], &original[34..]);
    // The stateful reply: app-sg has no outbound rule for it, the entry lets it out.
    let mut syn_ack = tcp("10.0.2.10", "10.0.1.10", 8080, 40100, TcpFlags(0x12), 64);
    let (h, _) = handle(&mut r, &mut fw, 1, &mut syn_ack);
    assert_eq!(h.outcome, Outcome::Forward(0));
    // The web ENI's MAC was learned from its frames.
    assert_eq!(&syn_ack[0..6], &WEB_MAC.0);
}

#[test]
fn never_verifies_transport_checksums() {
    let (mut r, mut fw) = setup(false);
    let mut syn = tcp("10.0.1.10", "10.0.2.10", 40100, 8080, TcpFlags::SYN, 64);
    // A partial (offloaded) checksum: only the pseudo-header sum, or garbage.
    syn[14 + 20 + 16] ^= 0x5a;
    let (h, _) = handle(&mut r, &mut fw, 0, &mut syn);
    assert_eq!(h.outcome, Outcome::Forward(1));
}

#[test]
fn drops_what_the_firewall_rejects() {
    let (mut r, mut fw) = setup(false);
    // web -> db: the db NACL admits only the app subnet.
    let mut f = tcp("10.0.1.10", "10.0.3.20", 40400, 5432, TcpFlags::SYN, 64);
    let (h, _) = handle(&mut r, &mut fw, 0, &mut f);
    assert_eq!(h.outcome, Outcome::Drop(DropReason::Rejected));
    let (_, v) = h.judged.unwrap();
    assert_eq!(v.stage, Some(Stage::NaclIngress));
    assert_eq!(
        fw.policy().rule_name(v.rule.unwrap()),
        "acl-0e1f2a3b4c5d6b003:ingress:32767"
    );
    // app -> blackholed peering.
    let mut f = tcp("10.0.2.10", "10.1.0.5", 40501, 443, TcpFlags::SYN, 64);
    let (h, _) = handle(&mut r, &mut fw, 1, &mut f);
    assert_eq!(h.outcome, Outcome::Drop(DropReason::Rejected));
    assert_eq!(h.judged.unwrap().1.stage, Some(Stage::Route));
    // db initiating anything: no outbound rule.
    let mut f = tcp("10.0.3.20", "10.0.2.10", 40600, 8080, TcpFlags::SYN, 64);
    let (h, _) = handle(&mut r, &mut fw, 2, &mut f);
    assert_eq!(h.judged.unwrap().1.stage, Some(Stage::SgEgress));
}

#[test]
fn leaving_the_vpc_needs_an_internet_port() {
    let (mut r, mut fw) = setup(false);
    let mut f = tcp("10.0.2.10", "198.51.100.80", 40500, 443, TcpFlags::SYN, 64);
    let (h, _) = handle(&mut r, &mut fw, 1, &mut f);
    assert_eq!(h.outcome, Outcome::Drop(DropReason::NoInternet));
    let (mut r, mut fw) = setup(true);
    let mut f = tcp("10.0.2.10", "198.51.100.80", 40500, 443, TcpFlags::SYN, 64);
    let (h, _) = handle(&mut r, &mut fw, 1, &mut f);
    assert_eq!(h.outcome, Outcome::Forward(3));
    // From the internet to the web server (untracked HTTPS), but not from an ENI address.
    let mut f = tcp("198.51.100.23", "10.0.1.10", 51000, 443, TcpFlags::SYN, 64);
    assert_eq!(
        handle(&mut r, &mut fw, 3, &mut f).0.outcome,
        Outcome::Forward(0)
    );
    let mut f = tcp("10.0.2.10", "10.0.1.10", 51000, 443, TcpFlags::SYN, 64);
    assert_eq!(
        handle(&mut r, &mut fw, 3, &mut f).0.outcome,
        Outcome::Drop(DropReason::Spoofed)
    );
    // Exempt DNS goes to the services stand-in behind the internet port.
    let mut f = tcp("10.0.1.10", "10.0.0.2", 40700, 53, TcpFlags::SYN, 64);
    let (h, _) = handle(&mut r, &mut fw, 0, &mut f);
    assert_eq!(h.outcome, Outcome::Forward(3));
    assert_eq!(h.judged.unwrap().1.stage, Some(Stage::Exempt));
}

#[test]
fn checks_sources_and_ttl() {
    let (mut r, mut fw) = setup(false);
    // The web port sending as the app ENI.
    let mut f = tcp("10.0.2.10", "10.0.1.10", 8080, 40100, TcpFlags::SYN, 64);
    let (h, _) = handle(&mut r, &mut fw, 0, &mut f);
    assert_eq!(h.outcome, Outcome::Drop(DropReason::Spoofed));
    assert!(
        h.judged.is_none(),
        "spoofed frames never reach the firewall"
    );
    let mut f = tcp("10.0.1.10", "10.0.2.10", 40100, 8080, TcpFlags::SYN, 1);
    assert_eq!(
        handle(&mut r, &mut fw, 0, &mut f).0.outcome,
        Outcome::Drop(DropReason::TtlExpired)
    );
    assert_eq!(fw.stats().packets, 0);
    // Truncated: counted by the firewall as malformed.
    let mut f = tcp("10.0.1.10", "10.0.2.10", 40100, 8080, TcpFlags::SYN, 64);
    let (h, _) = handle(&mut r, &mut fw, 0, &mut f[..40]);
    assert_eq!(h.outcome, Outcome::Drop(DropReason::Malformed));
    assert_eq!(fw.stats().rejected[Stage::Malformed.index()], 1);
}

#[test]
fn bypass_delivers_by_address_alone() {
    let (mut r, mut fw) = setup(false);
    r.set_bypass(true);
    let mut f = tcp("10.0.1.10", "10.0.3.20", 40400, 5432, TcpFlags::SYN, 64);
    let (h, _) = handle(&mut r, &mut fw, 0, &mut f);
    assert_eq!(h.outcome, Outcome::Forward(2));
    assert!(h.judged.is_none());
    assert_eq!(fw.stats().packets, 0);
}

fn neighbor_solicitation(src: u128, target: u128) -> Vec<u8> {
    let mut body = [0u8; 24];
    body[..16].copy_from_slice(&target.to_be_bytes());
    body[16] = 1;
    body[17] = 1;
    body[18..24].copy_from_slice(&WEB_MAC.0);
    let snm = 0xff02_0000_0000_0000_0000_0001_ff00_0000u128 | (target & 0xff_ffff);
    PacketBuilder {
        ethernet: Some(EthernetRepr {
            src: WEB_MAC,
            dst: MacAddr([0x33, 0x33, 0xff, 0, 0, 1]),
            vlan_id: None,
        }),
        ip: IpRepr::V6(Ipv6Repr {
            hop_limit: 255,
            ..Ipv6Repr::new(src, snm)
        }),
        l4: L4Repr::Icmp {
            ty: 135,
            code: 0,
            ident: 0,
            seq: 0,
        },
        payload: &body,
    }
    .to_vec()
    .unwrap()
}

#[test]
fn answers_neighbor_solicitations() {
    let (mut r, mut fw) = setup(false);
    let web6: u128 = "2001:db8:3a1e:4b01::10"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .into();
    let link_local = 0xfe80_0000_0000_0000_0000_0000_0000_0010u128;
    let mut ns = neighbor_solicitation(link_local, ROUTER_LINK_LOCAL);
    let (h, reply) = handle(&mut r, &mut fw, 0, &mut ns);
    assert!(matches!(h.outcome, Outcome::Reply(_)), "{h:?}");
    let meta = wire::parse(&reply).unwrap();
    assert_eq!(meta.src, ROUTER_LINK_LOCAL);
    assert_eq!(meta.dst, link_local);
    assert_eq!(meta.ttl, 255);
    assert!(matches!(
        meta.transport,
        Transport::Icmp {
            ty: 136,
            code: 0,
            ..
        }
    ));
    let icmp = &reply[usize::from(meta.l4_offset)..];
    assert_eq!(icmp[4], 0xe0, "router, solicited, override");
    assert_eq!(&icmp[8..24], &ROUTER_LINK_LOCAL.to_be_bytes());
    assert_eq!(&icmp[24..32], &[2, 1, 0x02, 0x76, 0x70, 0x63, 0x66, 0x01]);
    // The ICMPv6 checksum is right: the whole message sums to zero with its pseudo-header.
    let pseudo = crate::wire::checksum::pseudo_header_v6(meta.src, meta.dst, 58, icmp.len() as u32);
    assert_eq!(
        crate::wire::checksum::fold(crate::wire::checksum::add(pseudo, icmp)),
        0xffff
    );
    // A neighbour in the subnet, from the global address: answered; DAD (unspecified source)
    // and the ENI's own address: not.
    let other = web6 + 1;
    let mut ns = neighbor_solicitation(web6, other);
    assert!(matches!(
        handle(&mut r, &mut fw, 0, &mut ns).0.outcome,
        Outcome::Reply(_)
    ));
    let mut ns = neighbor_solicitation(0, other);
    assert_eq!(
        handle(&mut r, &mut fw, 0, &mut ns).0.outcome,
        Outcome::Drop(DropReason::Local)
    );
    let mut ns = neighbor_solicitation(link_local, web6);
    assert_eq!(
        handle(&mut r, &mut fw, 0, &mut ns).0.outcome,
        Outcome::Drop(DropReason::Local)
    );
    assert_eq!(r.stats().nd_replies, 2);
}

#[test]
fn reload_detaches_ports_of_removed_enis() {
    let (mut r, _) = setup(false);
    let mut p = policy().policy().clone();
    p.enis.retain(|e| e.id != DB);
    let p = CompiledPolicy::compile(p).unwrap();
    assert_eq!(r.reload(&p), vec!["db".to_string()]);
    let mut fw = Firewall::new(p, None);
    let mut f = tcp("10.0.3.20", "10.0.2.10", 5432, 40200, TcpFlags::ACK, 64);
    assert_eq!(
        handle(&mut r, &mut fw, 2, &mut f).0.outcome,
        Outcome::Drop(DropReason::Detached)
    );
}

#[test]
fn router_construction_checks_ports() {
    let p = policy();
    assert!(
        Router::new(&p, vec![("x".into(), Attach::Eni("eni-nope".into()))])
            .unwrap_err()
            .contains("eni-nope")
    );
    assert!(
        Router::new(
            &p,
            vec![
                ("a".into(), Attach::Internet),
                ("b".into(), Attach::Internet)
            ]
        )
        .is_err()
    );
    assert!(
        Router::new(
            &p,
            vec![
                ("a".into(), Attach::Eni(WEB.into())),
                ("b".into(), Attach::Eni(WEB.into()))
            ]
        )
        .is_err()
    );
}

#[cfg(target_os = "linux")]
#[test]
fn a_forwarder_needs_one_to_256_workers() {
    for workers in [0, run::MAX_WORKERS + 1] {
        let mut cfg = run::RunConfig::new(vec![("web".to_string(), Attach::Eni(WEB.into()))]);
        cfg.workers = workers;
        // Refused before any device is opened.
        let err = run::Forwarder::open(&cfg, policy()).err().expect("refused");
        assert_eq!(err, format!("{workers} workers: expected 1 to 256"));
    }
}
