//! Every real AWS document in `../shared/aws-examples` either loads, or fails with a message
//! that names the file and where (line and column for invalid JSON, the JSON path otherwise).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use vpcfw::aws::{self, SnapshotBuilder};
use vpcfw::compile::CompiledPolicy;
use vpcfw::conntrack::{TcpFlags, Time};
use vpcfw::firewall::{Decision, Firewall, Packet, Stage};
use vpcfw::policy::{Peer, Traffic};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/aws-examples")
}

/// Documents that must fail, and a piece of the message each must carry.
const FAILING: &[(&str, &str)] = &[
    // Upstream samples that are not valid JSON: the error names line and column.
    (
        "awscli_describe-security-groups.json",
        ":53:9: invalid JSON: trailing comma",
    ),
    (
        "awscli_describe-security-groups_ec2classic_2018.json",
        ":23:9: invalid JSON: trailing comma",
    ),
    (
        "awscli_describe-security-groups_vpc_2018.json",
        ":53:9: invalid JSON: trailing comma",
    ),
    (
        "awscli_describe-stale-security-groups.json",
        ":23:26: invalid JSON",
    ),
    // SPEC §1: an ICMP type of -1 with a code other than -1 is an error (Batfish's own
    // "code-only" test group).
    (
        "batfish_SecurityGroupTest.json",
        "SecurityGroups[11].IpPermissions[0].ToPort: expected ToPort -1 when FromPort is -1",
    ),
    // SPEC §1: `Entries` without a `PrefixListId` is an error (the CLI prints no id).
    (
        "awscli_get-managed-prefix-list-entries.json",
        "Entries: a prefix-list entries file needs a top-level \"PrefixListId\"",
    ),
];

#[test]
fn every_document_loads_or_fails_clearly() {
    let mut names: Vec<String> = std::fs::read_dir(examples())
        .expect("../shared/aws-examples")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 45,
        "expected the full example set, found {}",
        names.len()
    );
    for name in &names {
        let text = std::fs::read_to_string(examples().join(name)).expect("read");
        let mut b = SnapshotBuilder::new();
        let result = b.add_document(name, &text);
        match FAILING.iter().find(|(n, _)| n == name) {
            Some((_, needle)) => {
                let err = result.expect_err(name).to_string();
                assert!(
                    err.starts_with(name.as_str()),
                    "{name}: message does not name the file: {err}"
                );
                assert!(
                    err.contains(needle),
                    "{name}: {err}\n  does not contain {needle}"
                );
            }
            None => {
                if let Err(e) = result {
                    panic!("{name} should load: {e}");
                }
            }
        }
    }
}

#[test]
fn prefix_list_entries_load_with_their_id() {
    let text =
        std::fs::read_to_string(examples().join("awscli_get-managed-prefix-list-entries.json"))
            .unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["PrefixListId"] = serde_json::json!("pl-0123456abcabcabc1");
    let mut b = SnapshotBuilder::new();
    b.add_document("entries.json", &doc.to_string()).unwrap();
}

fn load_set(prefix: &str) -> aws::Snapshot {
    let dir = tempdir(prefix);
    for e in std::fs::read_dir(examples())
        .unwrap()
        .filter_map(Result::ok)
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(prefix) && n.ends_with(".json") {
            std::fs::copy(e.path(), dir.join(&n)).unwrap();
        }
    }
    let snap = aws::load_dir(&dir);
    std::fs::remove_dir_all(&dir).ok();
    snap.unwrap_or_else(|e| panic!("{prefix}: {e}"))
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vpcfw-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn hybrid_cloud_account_export() {
    let snap = load_set("batfish_hybrid-cloud-aws_");
    let p = &snap.policy;
    assert_eq!(p.enis.len(), 9);
    assert!(p.vpcs.len() >= 2 && p.subnets.len() >= 4 && !p.nacls.is_empty());
    // sg-331ad04e lists /32 hosts and 0.0.0.0/0 for TCP 22 in one permission.
    let g = p
        .security_groups
        .iter()
        .find(|g| g.id == "sg-331ad04e")
        .unwrap();
    assert!(
        g.ingress
            .iter()
            .any(|r| r.peer == Peer::Cidr("0.0.0.0/0".parse().unwrap())
                && r.traffic
                    == Traffic::Ports {
                        proto: 6,
                        ports: vpcfw::policy::Ports { from: 22, to: 22 }
                    })
    );
    // A reference to a group that is not in the export is kept, reported, and matches nothing.
    assert!(
        snap.warnings
            .iter()
            .any(|w| w.message.contains("sg-cf3f86b3") && w.message.contains("stale"))
    );

    // The export has no route tables: traffic leaving an ENI is rejected at the route step,
    // while traffic from outside is judged by the NACL and the security groups.
    let mut fw = Firewall::new(CompiledPolicy::compile(snap.policy).unwrap(), None);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let v = fw
        .process(
            Time(0),
            &Packet::tcp(
                ip("192.168.1.186"),
                ip("192.168.2.22"),
                40000,
                22,
                TcpFlags(TcpFlags::SYN),
            ),
        )
        .unwrap();
    assert_eq!(
        (v.decision, v.stage),
        (Decision::Reject, Some(Stage::Route))
    );
    let v = fw
        .process(
            Time(0),
            &Packet::tcp(
                ip("203.0.113.9"),
                ip("192.168.1.186"),
                40000,
                22,
                TcpFlags(TcpFlags::SYN),
            ),
        )
        .unwrap();
    assert_eq!(v.decision, Decision::Accept, "{v:?}");
}

#[test]
fn nat_gateway_export() {
    let snap = load_set("batfish_test-nat-gateway_");
    assert!(!snap.policy.enis.is_empty());
    CompiledPolicy::compile(snap.policy).unwrap();
}

#[test]
fn malformed_fields_name_their_json_path() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"NetworkAcls":[{"NetworkAclId":"acl-1","VpcId":"vpc-1","Entries":[
                {"RuleNumber":100,"Egress":false,"Protocol":"6","RuleAction":"allow","CidrBlock":"0.0.0.0/0","PortRange":{"From":"x","To":80}}]}]}"#,
            "NetworkAcls[0].Entries[0].PortRange.From: expected i64, found string \"x\"",
        ),
        (
            r#"{"NetworkAcls":[{"NetworkAclId":"acl-1","VpcId":"vpc-1","Entries":[
                {"RuleNumber":100,"Egress":false,"Protocol":"6","RuleAction":"allow","CidrBlock":"0.0.0.0/0","PortRange":{"From":70000,"To":80}}]}]}"#,
            "NetworkAcls[0].Entries[0].PortRange.From: expected a port from 0 to 65535, found 70000",
        ),
        (
            r#"{"NetworkAcls":[{"NetworkAclId":"acl-1","VpcId":"vpc-1","Entries":[
                {"RuleNumber":100,"Egress":false,"Protocol":"-1","RuleAction":"allow","CidrBlock":"0.0.0.0/0"},
                {"RuleNumber":100,"Egress":false,"Protocol":"-1","RuleAction":"deny","CidrBlock":"10.0.0.0/8"}]}]}"#,
            "NetworkAcls[0].Entries[1].RuleNumber: duplicate ingress rule number 100",
        ),
        (
            r#"{"NetworkAcls":[{"NetworkAclId":"acl-1","VpcId":"vpc-1","Entries":[
                {"RuleNumber":100,"Egress":false,"Protocol":"-1","RuleAction":"allow","CidrBlock":"0.0.0.0/0","Ipv6CidrBlock":"::/0"}]}]}"#,
            "NetworkAcls[0].Entries[0]: an entry has either CidrBlock or Ipv6CidrBlock, not both",
        ),
        (
            r#"{"NetworkAcls":[{"NetworkAclId":"acl-1","VpcId":"vpc-1","Entries":[
                {"RuleNumber":100,"Egress":false,"Protocol":"1","RuleAction":"allow","CidrBlock":"0.0.0.0/0","IcmpTypeCode":{"Type":-1,"Code":5}}]}]}"#,
            "NetworkAcls[0].Entries[0].IcmpTypeCode.Code: expected Code -1 when Type is -1",
        ),
        (
            r#"{"SecurityGroups":[{"GroupId":"sg-1","IpPermissions":[{"IpProtocol":"tcpp","FromPort":1,"ToPort":2,"IpRanges":[{"CidrIp":"1.2.3.4/32"}]}]}]}"#,
            "SecurityGroups[0].IpPermissions[0].IpProtocol: expected a protocol name",
        ),
        (
            r#"{"SecurityGroups":[{"GroupId":"sg-1","IpPermissions":[{"IpProtocol":"tcp","FromPort":1,"ToPort":2,"IpRanges":[{"CidrIp":"1.2.3.400/32"}]}]}]}"#,
            "SecurityGroups[0].IpPermissions[0].IpRanges[0].CidrIp: expected a CIDR block",
        ),
        (
            r#"{"SecurityGroupRules":[{"GroupId":"sg-1","IsEgress":false,"IpProtocol":"tcp","FromPort":22,"ToPort":22,"CidrIpv4":"10.0.0.0/8","CidrIpv6":"::/0"}]}"#,
            "SecurityGroupRules[0]: a security group rule has exactly one of",
        ),
        (
            r#"{"NetworkInterfaces":[{"NetworkInterfaceId":"eni-1","SubnetId":"subnet-1","ConnectionTrackingConfiguration":{"UdpTimeout":10}}]}"#,
            "NetworkInterfaces[0].ConnectionTrackingConfiguration.UdpTimeout: expected a timeout from 30 to 60 seconds, found 10",
        ),
        ("[1, 2]", "expected a JSON object at the top level"),
    ];
    for (doc, needle) in cases {
        let err = SnapshotBuilder::new()
            .add_document("doc.json", doc)
            .expect_err(needle)
            .to_string();
        assert!(err.starts_with("doc.json: "), "{err}");
        assert!(err.contains(needle), "{err}\n  does not contain {needle}");
    }
}

#[test]
fn canonicalisation() {
    let doc = r#"{"SecurityGroups":[{"GroupId":"sg-1","IpPermissions":[
        {"IpProtocol":"TCP","FromPort":22,"ToPort":22,"IpRanges":[{"CidrIp":"10.0.0.5/24"},{"CidrIp":"1.2.3.4/0"}]},
        {"IpProtocol":"50","FromPort":1,"ToPort":2,"IpRanges":[{"CidrIp":"10.0.0.0/8"}]},
        {"IpProtocol":"all","IpRanges":[{"CidrIp":"10.0.0.0/8"}]}]}]}"#;
    let mut b = SnapshotBuilder::new();
    b.add_document("sg.json", doc).unwrap();
    b.add_document(
        "eni.json",
        r#"{"NetworkInterfaces":[{"NetworkInterfaceId":"eni-1","SubnetId":"subnet-1","VpcId":"vpc-1","PrivateIpAddress":"10.0.0.9","Groups":[{"GroupId":"sg-1"}]}]}"#,
    )
    .unwrap();
    let snap = b.finish().unwrap();
    let g = &snap.policy.security_groups[0];
    assert_eq!(
        g.ingress[0].peer,
        Peer::Cidr("10.0.0.0/24".parse().unwrap())
    );
    assert_eq!(g.ingress[1].peer, Peer::Cidr("0.0.0.0/0".parse().unwrap()));
    assert_eq!(g.ingress[2].traffic, Traffic::Proto(50));
    assert_eq!(g.ingress[3].traffic, Traffic::All);
}

#[test]
fn snapshot_level_errors() {
    let finish = |docs: &[&str]| {
        let mut b = SnapshotBuilder::new();
        for (i, d) in docs.iter().enumerate() {
            b.add_document(&format!("d{i}.json"), d).unwrap();
        }
        b.finish().map(|_| ()).map_err(|e| e.to_string())
    };
    let eni = r#"{"NetworkInterfaces":[{"NetworkInterfaceId":"eni-1","SubnetId":"subnet-1","VpcId":"vpc-1","PrivateIpAddress":"10.0.0.9"}]}"#;
    assert!(
        finish(&[r#"{"Vpcs":[]}"#])
            .unwrap_err()
            .contains("no network interfaces")
    );
    let two_nacls = r#"{"NetworkAcls":[
        {"NetworkAclId":"acl-1","VpcId":"vpc-1","Associations":[{"SubnetId":"subnet-1"}],"Entries":[]},
        {"NetworkAclId":"acl-2","VpcId":"vpc-1","Associations":[{"SubnetId":"subnet-1"}],"Entries":[]}]}"#;
    assert!(
        finish(&[eni, two_nacls])
            .unwrap_err()
            .contains("associated with two network ACLs")
    );
    let dup_addr = r#"{"NetworkInterfaces":[{"NetworkInterfaceId":"eni-2","SubnetId":"subnet-1","VpcId":"vpc-1","PrivateIpAddress":"10.0.0.9"}]}"#;
    assert!(
        finish(&[eni, dup_addr])
            .unwrap_err()
            .contains("belongs to both")
    );
    let mut b = SnapshotBuilder::new();
    b.add_document("a.json", eni).unwrap();
    let err = b.add_document("b.json", eni).unwrap_err().to_string();
    assert!(err.contains("b.json: NetworkInterfaces[0]: eni-1 is described twice (first at a.json: NetworkInterfaces[0])"), "{err}");
    assert!(finish(&[eni]).is_ok());
}
