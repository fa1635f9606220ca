//! Flow logs reproduce AWS's documented records (VPC User Guide, "Flow log record examples",
//! saved in `../shared/aws-examples/awsdocs_flowlogs_v2_default_records.txt`).

use std::net::IpAddr;
use vpcfw::aws::SnapshotBuilder;
use vpcfw::compile::CompiledPolicy;
use vpcfw::conntrack::Time;
use vpcfw::firewall::{Firewall, Packet};
use vpcfw::flowlog::{FlowLog, parse_record};

/// The FLX example's ENI: SG allows inbound ICMP; the NACL allows inbound ICMP and, unless
/// `nacl_out_icmp`, denies outbound ICMP.
fn policy(nacl_out_icmp: bool, sg_in_icmp: bool) -> CompiledPolicy {
    let out_action = if nacl_out_icmp { "allow" } else { "deny" };
    let sg_in = if sg_in_icmp {
        r#"[{"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]"#
    } else {
        "[]"
    };
    let doc = format!(
        r#"{{
        "Vpcs": [{{"VpcId": "vpc-1", "CidrBlock": "172.31.0.0/16"}}],
        "Subnets": [{{"SubnetId": "subnet-1", "VpcId": "vpc-1", "CidrBlock": "172.31.16.0/20"}}],
        "RouteTables": [{{"RouteTableId": "rtb-1", "VpcId": "vpc-1", "Associations": [{{"Main": true}}], "Routes": [
            {{"DestinationCidrBlock": "172.31.0.0/16", "GatewayId": "local", "State": "active"}},
            {{"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-1", "State": "active"}}]}}],
        "NetworkAcls": [{{"NetworkAclId": "acl-1", "VpcId": "vpc-1", "IsDefault": true, "Entries": [
            {{"RuleNumber": 100, "Egress": false, "Protocol": "1", "RuleAction": "allow", "CidrBlock": "0.0.0.0/0", "IcmpTypeCode": {{"Type": -1, "Code": -1}}}},
            {{"RuleNumber": 100, "Egress": true, "Protocol": "1", "RuleAction": "{out_action}", "CidrBlock": "0.0.0.0/0", "IcmpTypeCode": {{"Type": -1, "Code": -1}}}}]}}],
        "SecurityGroups": [{{"GroupId": "sg-1", "IpPermissions": {sg_in}, "IpPermissionsEgress": []}}],
        "NetworkInterfaces": [{{"NetworkInterfaceId": "eni-1235b8ca123456789", "OwnerId": "123456789010",
            "SubnetId": "subnet-1", "PrivateIpAddress": "172.31.16.139", "Groups": [{{"GroupId": "sg-1"}}]}}]
    }}"#
    );
    let mut b = SnapshotBuilder::new();
    b.add_document("flx.json", &doc).unwrap();
    CompiledPolicy::compile(b.finish().unwrap().policy).unwrap()
}

/// Four pings of 84 bytes (one identifier, as `ping` sends) and their replies, spanning the
/// documented start and end times; records at 600 s.
fn ping(policy: CompiledPolicy) -> Vec<String> {
    let host: IpAddr = "203.0.113.12".parse().unwrap();
    let eni: IpAddr = "172.31.16.139".parse().unwrap();
    let mut fw = Firewall::new(policy, None);
    let mut log = FlowLog::new(600);
    let mut out = Vec::new();
    let requests = [1432917027u64, 1432917070, 1432917090, 1432917142];
    let replies = [1432917094u64, 1432917100, 1432917120, 1432917142];
    let mut events: Vec<(u64, Packet)> = Vec::new();
    for (&rq, &rp) in requests.iter().zip(&replies) {
        let mut req = Packet::icmp(host, eni, 8, 0, 7);
        req.len = 84;
        let mut rep = Packet::icmp(eni, host, 0, 0, 7);
        rep.len = 84;
        events.push((rq, req));
        events.push((rp, rep));
    }
    // Stable: a request and a reply in the same second keep request-first order.
    events.sort_by_key(|(t, _)| *t);
    for (t, p) in events {
        let v = fw.process(Time::from_secs(t), &p).unwrap();
        log.record(fw.policy(), Time::from_secs(t), &p, &v, &mut out)
            .unwrap();
    }
    log.flush(fw.policy(), &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn o9_reply_dropped_by_nacl_gives_accept_and_reject_records() {
    assert_eq!(
        ping(policy(false, true)),
        [
            "2 123456789010 eni-1235b8ca123456789 203.0.113.12 172.31.16.139 0 0 1 4 336 1432917027 1432917142 ACCEPT OK",
            "2 123456789010 eni-1235b8ca123456789 172.31.16.139 203.0.113.12 0 0 1 4 336 1432917094 1432917142 REJECT OK",
        ]
    );
    // Both lines are exactly the ones AWS documents.
    let documented = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/aws-examples/awsdocs_flowlogs_v2_default_records.txt"
    ))
    .unwrap();
    for line in ping(policy(false, true)) {
        assert!(
            documented
                .lines()
                .any(|l| l.split_whitespace().eq(line.split_whitespace())),
            "{line}"
        );
    }
}

#[test]
fn o10_nacl_allows_replies_two_accept_records() {
    let lines = ping(policy(true, true));
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l.ends_with("ACCEPT OK")), "{lines:?}");
}

#[test]
fn o11_security_group_denies_single_reject_record() {
    // The replies have no entry and are sent by the ENI itself: ICMP echo replies with no
    // outbound rule are rejected at sg-egress, so AWS's "single REJECT record" is the request.
    let lines = ping(policy(false, false));
    assert_eq!(
        lines[0],
        "2 123456789010 eni-1235b8ca123456789 203.0.113.12 172.31.16.139 0 0 1 4 336 1432917027 1432917142 REJECT OK"
    );
    for l in &lines {
        let r = parse_record(l).unwrap().unwrap();
        assert_eq!(r.action.as_str(), "REJECT");
    }
}
