//! Arbitrary event sequences (packets, time jumps, reloads, allowance pressure) against the
//! bundled three-tier snapshot and its flawed variant. The engine never panics, and agrees with
//! a simple model of SPEC §4 where the model applies:
//! - reloading the same snapshot changes no answer (a twin engine that never reloads agrees);
//! - live tracked entries never exceed the allowance of their instance;
//! - once a packet creates an entry at its source ENI, the reversed packet (an ACK or a query
//!   reply) is never rejected at that ENI's security groups while the entry lives;
//! - malformed or untrackable input never creates state.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "three_tier.rs"]
mod three_tier;
use std::net::IpAddr;
use vpcfw::compile::CompiledPolicy;
use vpcfw::conntrack::{TcpFlags, Time};
use vpcfw::firewall::{Decision, Firewall, L4, Packet, SgPass, Stage};

const FLAWED_ACLS: &str = include_str!("../../examples/three-tier-flawed/describe-network-acls.json");
const FLAWED_SGS: &str = include_str!("../../examples/three-tier-flawed/describe-security-groups.json");

/// The two snapshots, parsed and compiled once per process.
fn load(flawed: bool) -> CompiledPolicy {
    static CACHE: std::sync::OnceLock<[CompiledPolicy; 2]> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| [compile(false), compile(true)])[usize::from(flawed)].clone()
}

fn compile(flawed: bool) -> CompiledPolicy {
    if flawed {
        three_tier::compile(&[("acls", FLAWED_ACLS), ("sgs", FLAWED_SGS)])
    } else {
        three_tier::compile(&[])
    }
}

const ADDRS: [&str; 10] = [
    "10.0.1.10", "10.0.2.10", "10.0.2.11", "10.0.3.20", "198.51.100.23", "192.0.2.66", "10.1.0.5", "169.254.169.254",
    "2001:db8:3a1e:4b01::10", "2001:db8:ffff::23",
];

#[derive(Arbitrary, Debug)]
enum Event {
    Packet { src: u8, dst: u8, proto: u8, sport: u16, dport: u16, flags: u8, dt: u16 },
    Reload { flawed: bool },
}

#[derive(Arbitrary, Debug)]
struct Input {
    allowance: Option<u8>,
    events: Vec<Event>,
}

fn packet(src: u8, dst: u8, proto: u8, sport: u16, dport: u16, flags: u8) -> Packet {
    let pick = |i: u8| -> IpAddr { ADDRS[usize::from(i) % ADDRS.len()].parse().expect("address") };
    let (mut a, mut b) = (pick(src), pick(dst));
    if a.is_ipv4() != b.is_ipv4() {
        b = a;
        a = pick(dst);
        if a.is_ipv4() != b.is_ipv4() {
            b = a;
        }
    }
    match proto % 5 {
        0 | 1 => Packet::tcp(a, b, sport, dport, TcpFlags(flags)),
        2 => Packet::udp(a, b, sport, dport),
        3 => Packet::icmp(a, b, [0, 8, 13, 14, 3, 128, 129][usize::from(flags) % 7], 0, sport),
        _ => Packet::other(a, b, [47, 50, 132][usize::from(flags) % 3]),
    }
}

fn reverse(p: &Packet) -> Option<Packet> {
    let l4 = match p.l4 {
        L4::Ports { sport, dport, .. } => L4::Ports { sport: dport, dport: sport, flags: TcpFlags(if p.proto == 6 { TcpFlags::ACK } else { 0 }) },
        L4::Icmp { icmp_type: 8, code, id } => L4::Icmp { icmp_type: 0, code, id },
        L4::Icmp { icmp_type: 13, code, id } => L4::Icmp { icmp_type: 14, code, id },
        L4::Icmp { icmp_type: 128, code, id } => L4::Icmp { icmp_type: 129, code, id },
        L4::Icmp { .. } => return None,
        L4::None => L4::None,
    };
    Some(Packet { src: p.dst, dst: p.src, l4, ..*p })
}

fuzz_target!(|input: Input| {
    let allowance = input.allowance.map(|a| u32::from(a % 8) + 1);
    let good = load(false);
    let mut fw = Firewall::new(good.clone(), allowance);
    let mut twin = Firewall::new(good.clone(), allowance);
    let mut current_is_good = true;
    let mut now = Time(0);
    for ev in input.events.iter().take(64) {
        match *ev {
            Event::Reload { flawed } => {
                // The twin only follows reloads that change the snapshot.
                if flawed || !current_is_good {
                    twin.reload(load(flawed));
                }
                fw.reload(load(flawed));
                current_is_good = !flawed;
            }
            Event::Packet { src, dst, proto, sport, dport, flags, dt } => {
                now = now.plus_secs(u32::from(dt % 700));
                let p = packet(src, dst, proto, sport, dport, flags);
                let v = fw.process(now, &p);
                let w = twin.process(now, &p);
                assert_eq!(v, w, "reloading the same snapshot changed an answer");
                let Ok(v) = v else { continue };
                if let Some(cap) = allowance {
                    // Live entries per instance (ENIs without attachment are their own).
                    let mut per_instance = std::collections::HashMap::new();
                    for f in fw.entries(now) {
                        let eni = fw.zone_eni(f.key.zone).expect("live entries belong to existing ENIs");
                        let e = fw.policy().policy().enis.iter().find(|e| e.id == eni).expect("ENI");
                        let instance = e.instance_id.clone().unwrap_or_else(|| e.id.clone());
                        *per_instance.entry(instance).or_insert(0u32) += 1;
                    }
                    assert!(per_instance.values().all(|&n| n <= cap), "an instance holds more than its allowance: {per_instance:?}");
                }
                if v.decision == Decision::Accept && matches!(v.sg_egress, Some(SgPass::NewEntry(_))) {
                    if let Some(r) = reverse(&p) {
                        let mut probe = fw.clone();
                        let rv = probe.process(now, &r).expect("the reply has an ENI");
                        assert_ne!(rv.stage, Some(Stage::SgIngress), "reply of a tracked flow rejected by the SGs: {p:?} -> {rv:?}");
                    }
                }
            }
        }
    }
});
