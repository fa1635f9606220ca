//! # vpcfw
//!
//! AWS VPC **Network ACLs** (stateless, ordered, first match) and **Security Groups**
//! (stateful, allow-only union), evaluated exactly as AWS does: describe a policy, or load an
//! `aws ec2 describe-*` JSON snapshot, compile it, and judge packets with per-ENI connection
//! tracking. Every verdict names the stage and the rule that decided.
//!
//! ```
//! use vpcfw::aws::SnapshotBuilder;
//! use vpcfw::compile::CompiledPolicy;
//! use vpcfw::conntrack::{TcpFlags, Time};
//! use vpcfw::firewall::{Decision, Firewall, Packet, Stage};
//!
//! let mut snapshot = SnapshotBuilder::new();
//! snapshot.add_document("vpc.json", r#"{
//!   "Vpcs": [{"VpcId": "vpc-1", "CidrBlock": "10.0.0.0/16"}],
//!   "Subnets": [{"SubnetId": "subnet-1", "VpcId": "vpc-1", "CidrBlock": "10.0.1.0/24"}],
//!   "RouteTables": [{"RouteTableId": "rtb-1", "VpcId": "vpc-1", "Associations": [{"Main": true}],
//!     "Routes": [{"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local", "State": "active"},
//!                {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-1", "State": "active"}]}],
//!   "NetworkAcls": [{"NetworkAclId": "acl-1", "VpcId": "vpc-1", "IsDefault": true, "Entries": [
//!     {"RuleNumber": 100, "Egress": false, "Protocol": "-1", "RuleAction": "allow", "CidrBlock": "0.0.0.0/0"},
//!     {"RuleNumber": 100, "Egress": true, "Protocol": "-1", "RuleAction": "allow", "CidrBlock": "0.0.0.0/0"}]}],
//!   "SecurityGroups": [{"GroupId": "sg-web",
//!     "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
//!                        "IpRanges": [{"CidrIp": "203.0.113.0/24"}]}],
//!     "IpPermissionsEgress": []}],
//!   "NetworkInterfaces": [{"NetworkInterfaceId": "eni-1", "SubnetId": "subnet-1",
//!     "PrivateIpAddress": "10.0.1.10", "Groups": [{"GroupId": "sg-web"}]}]
//! }"#)?;
//! let policy = CompiledPolicy::compile(snapshot.finish()?.policy)?;
//! let mut fw = Firewall::new(policy, None);
//!
//! let client = "203.0.113.7".parse()?;
//! let server = "10.0.1.10".parse()?;
//! // The request is allowed by the ingress rule and creates a tracked entry...
//! let syn = Packet::tcp(client, server, 40000, 443, TcpFlags(TcpFlags::SYN));
//! assert_eq!(fw.process(Time::from_secs(1), &syn)?.decision, Decision::Accept);
//! // ...so the reply leaves although the group has no egress rule at all.
//! let syn_ack = Packet::tcp(server, client, 443, 40000, TcpFlags(TcpFlags::SYN | TcpFlags::ACK));
//! assert_eq!(fw.process(Time::from_secs(1), &syn_ack)?.decision, Decision::Accept);
//! // A connection the group does not allow is rejected at the security-group step.
//! let ssh = Packet::tcp(client, server, 40001, 22, TcpFlags(TcpFlags::SYN));
//! assert_eq!(fw.process(Time::from_secs(2), &ssh)?.stage, Some(Stage::SgIngress));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules: [`policy`] (the plain description), [`aws`] (loading AWS CLI JSON),
//! [`compile`] (policy → matchers), [`matcher`] (the classifier and its linear reference),
//! [`conntrack`] (flow state machines), [`firewall`] (the engine), [`events`] (the
//! `vpcfw eval` line protocol), [`capture`] (pcap and pcapng files), [`replay`] (what
//! `vpcfw replay` counts and writes).
#![warn(missing_docs)]

pub mod analysis;
pub mod aws;
pub mod capture;
pub mod compile;
pub mod conntrack;
pub mod events;
pub mod explain;
pub mod firewall;
pub mod flowlog;
pub mod forward;
pub mod inspect;
pub mod matcher;
pub mod policy;
pub mod replay;
#[cfg(target_os = "linux")]
pub mod tap;
pub mod wire;
