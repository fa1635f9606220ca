//! Snapshot loading: arbitrary bytes as a document, and structured snapshots with hostile
//! values. Loading either succeeds or returns an error (no panic); whatever loads compiles and
//! judges packets without panicking.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use vpcfw::aws::SnapshotBuilder;
use vpcfw::compile::CompiledPolicy;
use vpcfw::conntrack::{TcpFlags, Time};
use vpcfw::firewall::{Firewall, Packet};

#[derive(Arbitrary, Debug)]
enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    All,
    Num(i16),
    Name(String),
}

#[derive(Arbitrary, Debug)]
struct NaclEntry {
    number: i32,
    egress: bool,
    proto: Proto,
    cidr: u8,
    from: i32,
    to: i32,
    icmp: Option<(i16, i16)>,
    allow: bool,
    v6: bool,
}

#[derive(Arbitrary, Debug)]
struct SgRule {
    group: u8,
    egress: bool,
    proto: Proto,
    from: Option<i32>,
    to: Option<i32>,
    peer: u8,
}

#[derive(Arbitrary, Debug)]
struct Eni {
    subnet: u8,
    groups: u8,
    addr: u8,
    secondary: Option<u8>,
    instance: Option<u8>,
    timeouts: Option<(Option<i64>, Option<i64>, Option<i64>)>,
}

#[derive(Arbitrary, Debug)]
struct Snap {
    nacl: Vec<NaclEntry>,
    second_nacl_on_subnet: bool,
    sg: Vec<SgRule>,
    enis: Vec<Eni>,
    blackhole: bool,
    packets: Vec<(u8, u8, u8, u16, u16, u8)>,
}

const CIDRS: [&str; 8] = ["0.0.0.0/0", "10.0.0.0/16", "10.0.1.5/24", "10.0.2.0/24", "203.0.113.0/24", "not-a-cidr", "10.0.0.0/33", "::/0"];

fn proto(p: &Proto) -> Value {
    match p {
        Proto::Tcp => json!("tcp"),
        Proto::Udp => json!("udp"),
        Proto::Icmp => json!("icmp"),
        Proto::Icmpv6 => json!("icmpv6"),
        Proto::All => json!("-1"),
        Proto::Num(n) => json!(n.to_string()),
        Proto::Name(s) => json!(s),
    }
}

fn documents(s: &Snap) -> Vec<Value> {
    let entries: Vec<Value> = s
        .nacl
        .iter()
        .take(64)
        .map(|e| {
            let mut v = json!({"RuleNumber": e.number, "Egress": e.egress, "Protocol": proto(&e.proto),
                "RuleAction": if e.allow { "allow" } else { "deny" }, "PortRange": {"From": e.from, "To": e.to}});
            let cidr = CIDRS[usize::from(e.cidr) % CIDRS.len()];
            v[if e.v6 { "Ipv6CidrBlock" } else { "CidrBlock" }] = json!(cidr);
            if let Some((t, c)) = e.icmp {
                v["IcmpTypeCode"] = json!({"Type": t, "Code": c});
            }
            v
        })
        .collect();
    let groups: Vec<Value> = (0..3)
        .map(|g| {
            let perms = |egress: bool| -> Vec<Value> {
                s.sg.iter()
                    .take(64)
                    .filter(|r| r.group % 3 == g && r.egress == egress)
                    .map(|r| {
                        let mut p = json!({"IpProtocol": proto(&r.proto)});
                        if let Some(f) = r.from {
                            p["FromPort"] = json!(f);
                        }
                        if let Some(t) = r.to {
                            p["ToPort"] = json!(t);
                        }
                        match r.peer % 4 {
                            0 => p["IpRanges"] = json!([{"CidrIp": CIDRS[usize::from(r.peer / 4) % CIDRS.len()]}]),
                            1 => p["Ipv6Ranges"] = json!([{"CidrIpv6": "2001:db8::/32"}]),
                            2 => p["UserIdGroupPairs"] = json!([{"GroupId": format!("sg-{}", r.peer % 5)}]),
                            _ => p["PrefixListIds"] = json!([{"PrefixListId": "pl-1"}]),
                        }
                        p
                    })
                    .collect()
            };
            json!({"GroupId": format!("sg-{g}"), "IpPermissions": perms(false), "IpPermissionsEgress": perms(true)})
        })
        .collect();
    let enis: Vec<Value> = s
        .enis
        .iter()
        .take(16)
        .enumerate()
        .map(|(i, e)| {
            let mut v = json!({
                "NetworkInterfaceId": format!("eni-{i}"),
                "SubnetId": format!("subnet-{}", e.subnet % 3),
                "VpcId": "vpc-1",
                "PrivateIpAddress": format!("10.0.{}.{}", e.subnet % 3, e.addr),
                "Groups": (0..3).filter(|g| e.groups & (1 << g) != 0).map(|g| json!({"GroupId": format!("sg-{g}")})).collect::<Vec<_>>(),
            });
            if let Some(s2) = e.secondary {
                v["PrivateIpAddresses"] = json!([{"PrivateIpAddress": format!("10.0.{}.{}", e.subnet % 3, s2), "Primary": false}]);
            }
            if let Some(inst) = e.instance {
                v["Attachment"] = json!({"InstanceId": format!("i-{inst}")});
            }
            if let Some((a, b, c)) = e.timeouts {
                v["ConnectionTrackingConfiguration"] = json!({"TcpEstablishedTimeout": a, "UdpTimeout": b, "UdpStreamTimeout": c});
            }
            v
        })
        .collect();
    let mut associations = vec![json!({"SubnetId": "subnet-1"})];
    if s.second_nacl_on_subnet {
        associations.push(json!({"SubnetId": "subnet-2"}));
    }
    let subnets: Vec<Value> =
        (0..3).map(|i| json!({"SubnetId": format!("subnet-{i}"), "VpcId": "vpc-1", "CidrBlock": format!("10.0.{i}.0/24")})).collect();
    vec![
        json!({"Vpcs": [{"VpcId": "vpc-1", "CidrBlock": "10.0.0.0/16"}]}),
        json!({ "Subnets": subnets }),
        json!({"NetworkAcls": [
            {"NetworkAclId": "acl-1", "VpcId": "vpc-1", "IsDefault": true, "Entries": entries},
            {"NetworkAclId": "acl-2", "VpcId": "vpc-1", "Associations": associations, "Entries": []}]}),
        json!({"SecurityGroups": groups}),
        json!({"PrefixListId": "pl-1", "Entries": [{"Cidr": "203.0.113.0/24"}]}),
        json!({"NetworkInterfaces": enis}),
        json!({"RouteTables": [{"RouteTableId": "rtb-1", "VpcId": "vpc-1", "Associations": [{"Main": true}], "Routes": [
            {"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local", "State": "active"},
            {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-1", "State": if s.blackhole { "blackhole" } else { "active" }}]}]}),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        // Raw text as a document.
        if let Ok(text) = std::str::from_utf8(rest) {
            let mut b = SnapshotBuilder::new();
            if b.add_document("fuzz.json", text).is_ok() {
                if let Ok(snap) = b.finish() {
                    let _ = CompiledPolicy::compile(snap.policy);
                }
            }
        }
        return;
    }
    let Ok(s) = Snap::arbitrary(&mut Unstructured::new(rest)) else { return };
    let mut b = SnapshotBuilder::new();
    for (i, d) in documents(&s).iter().enumerate() {
        if b.add_document(&format!("{i}.json"), &d.to_string()).is_err() {
            return;
        }
    }
    let Ok(snap) = b.finish() else { return };
    let Ok(policy) = CompiledPolicy::compile(snap.policy) else { return };
    let mut fw = Firewall::new(policy, Some(4));
    for (i, &(src, dst, proto, sport, dport, flags)) in s.packets.iter().take(32).enumerate() {
        let addr = |x: u8| -> std::net::IpAddr { if x % 4 == 3 { [203, 0, 113, x].into() } else { [10, 0, x % 3, x / 3].into() } };
        let (a, b) = (addr(src), addr(dst));
        let pkt = match proto % 4 {
            0 => Packet::tcp(a, b, sport, dport, TcpFlags(flags)),
            1 => Packet::udp(a, b, sport, dport),
            2 => Packet::icmp(a, b, flags, 0, sport),
            _ => Packet::other(a, b, proto),
        };
        let _ = fw.process(Time::from_secs(i as u64), &pkt);
    }
});
