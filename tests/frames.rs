//! The engine on real Ethernet frames: the same answers as for described packets, malformed
//! frames rejected and counted without state, fragments following their first fragment.

use std::path::Path;
use vpcfw::aws;
use vpcfw::compile::CompiledPolicy;
use vpcfw::conntrack::Time;
use vpcfw::firewall::Firewall;
use vpcfw::firewall::{Decision, FrameError, Reason, Stage};
use vpcfw::wire::{
    self, EthernetRepr, IpRepr, Ipv4Repr, L4Repr, MacAddr, PacketBuilder, TcpFlags, TcpRepr,
};

fn three_tier() -> Firewall {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/three-tier");
    Firewall::new(
        CompiledPolicy::compile(aws::load_dir(&dir).unwrap().policy).unwrap(),
        None,
    )
}

const ETH: EthernetRepr = EthernetRepr {
    src: MacAddr([2, 0, 0, 0, 0, 1]),
    dst: MacAddr([2, 0, 0, 0, 0, 2]),
    vlan_id: None,
};

fn v4(s: &str) -> u32 {
    u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
}

fn tcp_frame(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    PacketBuilder {
        ethernet: Some(ETH),
        ip: IpRepr::V4(Ipv4Repr::new(v4(src), v4(dst))),
        l4: L4Repr::Tcp(TcpRepr::new(sport, dport, TcpFlags(flags))),
        payload: b"",
    }
    .to_vec()
    .unwrap()
}

#[test]
fn frames_are_judged_like_described_packets() {
    let mut fw = three_tier();
    // web -> app 8080: allowed, tracked; the reply passes by state.
    let (_, v) = fw
        .process_frame(
            Time(0),
            &tcp_frame("10.0.1.10", "10.0.2.10", 40100, 8080, 0x02),
        )
        .unwrap();
    assert_eq!((v.decision, v.stage), (Decision::Accept, None));
    let (_, v) = fw
        .process_frame(
            Time(1),
            &tcp_frame("10.0.2.10", "10.0.1.10", 8080, 40100, 0x12),
        )
        .unwrap();
    assert_eq!(v.decision, Decision::Accept);
    // web -> db: the db subnet's NACL denies.
    let (pkt, v) = fw
        .process_frame(
            Time(2),
            &tcp_frame("10.0.1.10", "10.0.3.20", 40400, 5432, 0x02),
        )
        .unwrap();
    assert_eq!(v.stage, Some(Stage::NaclIngress));
    assert_eq!(pkt.len, 40);
}

#[test]
fn malformed_frames_are_rejected_counted_and_stateless() {
    let mut fw = three_tier();
    let good = tcp_frame("10.0.1.10", "10.0.2.10", 40100, 8080, 0x02);
    for cut in [14, 20, 33, 40, 53] {
        let (_, v) = fw.process_frame(Time(0), &good[..cut]).unwrap();
        assert_eq!(
            (v.decision, v.stage),
            (Decision::Reject, Some(Stage::Malformed)),
            "cut at {cut}"
        );
        assert!(matches!(v.reason, Reason::Malformed(_)));
    }
    // IHL below 5.
    let mut bad = good.clone();
    bad[14] = 0x43;
    let (_, v) = fw.process_frame(Time(0), &bad).unwrap();
    assert_eq!(v.reason, Reason::Malformed(wire::Error::BadIhl));
    assert_eq!(fw.stats().rejected[Stage::Malformed.index()], 6);
    assert!(
        fw.entries(Time(0)).is_empty(),
        "a malformed frame created state"
    );
    // An ARP frame is not the firewall's business.
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(
        fw.process_frame(Time(0), &arp).unwrap_err(),
        FrameError::NotIp
    );
}

fn fragment(
    src: &str,
    dst: &str,
    ident: u16,
    offset: u16,
    more: bool,
    l4: L4Repr<'static>,
) -> Vec<u8> {
    let mut ip = Ipv4Repr::new(v4(src), v4(dst));
    ip.ident = ident;
    ip.frag_offset = offset;
    ip.more_fragments = more;
    PacketBuilder {
        ethernet: Some(ETH),
        ip: IpRepr::V4(ip),
        l4,
        payload: &[0u8; 64],
    }
    .to_vec()
    .unwrap()
}

#[test]
fn non_first_fragments_follow_their_first_fragment() {
    let mut fw = three_tier();
    let first = fragment(
        "198.51.100.23",
        "10.0.1.10",
        7,
        0,
        true,
        L4Repr::Tcp(TcpRepr::new(51000, 443, TcpFlags(0x02))),
    );
    let rest = fragment(
        "198.51.100.23",
        "10.0.1.10",
        7,
        11,
        false,
        L4Repr::Raw { protocol: 6 },
    );
    let (_, v) = fw.process_frame(Time(0), &first).unwrap();
    assert_eq!(v.decision, Decision::Accept);
    let (_, v) = fw.process_frame(Time::from_secs(59), &rest).unwrap();
    assert_eq!(v.decision, Decision::Accept);
    // After the 60 s window the follower is on its own: rejected.
    let (_, v) = fw.process_frame(Time::from_secs(61), &rest).unwrap();
    assert_eq!(
        (v.stage, v.reason),
        (Some(Stage::Malformed), Reason::FragmentWithoutFirst)
    );
    // A rejected first fragment takes its followers with it.
    let first = fragment(
        "198.51.100.23",
        "10.0.1.10",
        8,
        0,
        true,
        L4Repr::Tcp(TcpRepr::new(51000, 22, TcpFlags(0x02))),
    );
    let rest = fragment(
        "198.51.100.23",
        "10.0.1.10",
        8,
        11,
        false,
        L4Repr::Raw { protocol: 6 },
    );
    let (_, v) = fw.process_frame(Time::from_secs(100), &first).unwrap();
    assert_eq!(v.stage, Some(Stage::NaclIngress));
    let (_, v2) = fw.process_frame(Time::from_secs(100), &rest).unwrap();
    assert_eq!(v2, v);
}
