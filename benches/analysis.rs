//! Issue #9 targets: on a snapshot with 50 ENIs, 16 security groups of 60 rules on each ENI and
//! 40-entry NACLs, `lint` and `diff` finish in ≤ 2 s and `explain` in ≤ 50 ms.
//!
//! `cargo bench --bench analysis`

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;
use vpcfw::analysis::{diff::diff, lint::lint};
use vpcfw::compile::CompiledPolicy;
use vpcfw::explain::{explain, parse_flow};
use vpcfw::policy::*;

/// A deterministic pseudo-random sequence (xorshift), so every run sees the same snapshot.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SUBNETS: usize = 5;
const ENIS: usize = 50;
const GROUPS: usize = 32;
const GROUPS_PER_ENI: usize = 16;
const RULES_PER_GROUP: usize = 60;
const NACL_ENTRIES: u32 = 40;

fn cidr(rng: &mut Rng) -> ipnet::IpNet {
    let len = [8u8, 12, 16, 20, 24, 28, 32][rng.below(7) as usize];
    let addr = Ipv4Addr::from((10u32 << 24) | (rng.next() as u32 & 0x00ff_ffff));
    ipnet::IpNet::V4(ipnet::Ipv4Net::new(addr, len).unwrap().trunc())
}

fn traffic(rng: &mut Rng) -> Traffic {
    match rng.below(10) {
        0 => Traffic::All,
        1 => Traffic::Icmp {
            proto: 1,
            icmp_type: Some(8),
            code: None,
        },
        2..=5 => {
            let p = [22u16, 80, 443, 3306, 5432, 6379, 8080, 9000][rng.below(8) as usize];
            Traffic::Ports {
                proto: 6,
                ports: Ports { from: p, to: p },
            }
        }
        6 | 7 => {
            let lo = rng.below(60000) as u16;
            Traffic::Ports {
                proto: 6,
                ports: Ports {
                    from: lo,
                    to: lo + rng.below(2000) as u16,
                },
            }
        }
        _ => {
            let lo = rng.below(60000) as u16;
            Traffic::Ports {
                proto: 17,
                ports: Ports {
                    from: lo,
                    to: lo + rng.below(100) as u16,
                },
            }
        }
    }
}

fn snapshot(seed: u64) -> Policy {
    let mut rng = Rng(seed);
    let mut p = Policy::default();
    p.vpcs.push(Vpc {
        id: "vpc-1".into(),
        primary_cidr: Some("10.0.0.0/8".parse().unwrap()),
        secondary_cidrs: vec![],
        ipv6_cidrs: vec![],
    });
    for s in 0..SUBNETS {
        p.subnets.push(Subnet {
            id: format!("subnet-{s}"),
            vpc_id: "vpc-1".into(),
            cidr: Some(format!("10.{s}.0.0/16").parse().unwrap()),
            ipv6_cidrs: vec![],
        });
        let mut entries = Vec::new();
        for egress in [false, true] {
            for i in 0..NACL_ENTRIES {
                entries.push(NaclEntry {
                    rule_number: (i + 1) * 10,
                    egress,
                    action: if rng.below(4) == 0 {
                        Action::Deny
                    } else {
                        Action::Allow
                    },
                    cidr: cidr(&mut rng),
                    traffic: traffic(&mut rng),
                });
            }
            entries.push(NaclEntry {
                rule_number: 32767,
                egress,
                action: Action::Deny,
                cidr: "0.0.0.0/0".parse().unwrap(),
                traffic: Traffic::All,
            });
        }
        p.nacls.push(NetworkAcl {
            id: format!("acl-{s}"),
            vpc_id: "vpc-1".into(),
            is_default: false,
            subnet_ids: vec![format!("subnet-{s}")],
            entries,
        });
    }
    p.route_tables.push(RouteTable {
        id: "rtb-1".into(),
        vpc_id: "vpc-1".into(),
        main: true,
        subnet_ids: vec![],
        routes: vec![
            Route {
                destination: "10.0.0.0/8".parse().unwrap(),
                target: RouteTarget::Local,
                blackhole: false,
            },
            Route {
                destination: "0.0.0.0/0".parse().unwrap(),
                target: RouteTarget::Gateway("igw-1".into()),
                blackhole: false,
            },
        ],
    });
    for g in 0..GROUPS {
        let rules = |rng: &mut Rng| -> Vec<SgRule> {
            (0..RULES_PER_GROUP)
                .map(|_| SgRule {
                    id: None,
                    traffic: traffic(rng),
                    peer: match rng.below(20) {
                        0 => Peer::Cidr("0.0.0.0/0".parse().unwrap()),
                        1 => Peer::Group(format!("sg-{}", rng.below(GROUPS as u64))),
                        _ => Peer::Cidr(cidr(rng)),
                    },
                })
                .collect()
        };
        let ingress = rules(&mut rng);
        let egress = rules(&mut rng);
        p.security_groups.push(SecurityGroup {
            id: format!("sg-{g}"),
            name: None,
            ingress,
            egress,
        });
    }
    for e in 0..ENIS {
        let s = e % SUBNETS;
        let mut groups: Vec<String> = Vec::new();
        while groups.len() < GROUPS_PER_ENI {
            let g = format!("sg-{}", rng.below(GROUPS as u64));
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        p.enis.push(Eni {
            id: format!("eni-{e}"),
            subnet_id: format!("subnet-{s}"),
            owner_id: None,
            private_ipv4: vec![Ipv4Addr::new(10, s as u8, 1, e as u8 + 10)],
            ipv6: vec![],
            groups,
            instance_id: None,
            conntrack: ConntrackTimeouts::default(),
        });
    }
    p
}

/// The same snapshot after a typical change: one NACL entry and two security-group rules.
fn changed(mut p: Policy) -> Policy {
    p.nacls[1].entries[3].action = match p.nacls[1].entries[3].action {
        Action::Allow => Action::Deny,
        Action::Deny => Action::Allow,
    };
    p.security_groups[2].ingress[5].traffic = Traffic::Ports {
        proto: 6,
        ports: Ports {
            from: 5432,
            to: 5432,
        },
    };
    p.security_groups[7].egress.pop();
    p
}

fn bench(c: &mut Criterion) {
    let old = snapshot(0x5eed);
    let new = changed(old.clone());
    let rules: usize = old.enis[0]
        .groups
        .iter()
        .map(|g| {
            old.security_groups
                .iter()
                .find(|x| x.id == *g)
                .unwrap()
                .ingress
                .len()
        })
        .sum();
    eprintln!(
        "snapshot: {ENIS} ENIs, {GROUPS_PER_ENI} groups x {RULES_PER_GROUP} rules per ENI ({rules} ingress rules on eni-0), {NACL_ENTRIES}-entry NACLs"
    );
    let t = std::time::Instant::now();
    let compiled = CompiledPolicy::compile(old.clone()).unwrap();
    eprintln!("compile: {:?}", t.elapsed());
    if std::env::var_os("VPCFW_BENCH_ONCE").is_some() {
        let flow = parse_flow("tcp 10.1.1.11:40000 -> 10.2.1.12:443").unwrap();
        let t = std::time::Instant::now();
        black_box(explain(&compiled, &flow).unwrap());
        eprintln!("explain once: {:?}", t.elapsed());
        let t = std::time::Instant::now();
        black_box(lint(&old));
        eprintln!("lint once: {:?}", t.elapsed());
        let t = std::time::Instant::now();
        black_box(diff(&old, &new));
        eprintln!("diff once: {:?}", t.elapsed());
    }
    let flow = parse_flow("tcp 10.1.1.11:40000 -> 10.2.1.12:443").unwrap();
    let mut g = c.benchmark_group("analysis");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("lint", |b| b.iter(|| black_box(lint(black_box(&old)))));
    g.bench_function("diff", |b| {
        b.iter(|| black_box(diff(black_box(&old), black_box(&new))))
    });
    g.bench_function("explain", |b| {
        b.iter(|| black_box(explain(black_box(&compiled), &flow).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
