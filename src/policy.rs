//! The plain description of a VPC's network policy.
//!
//! These are owned, `Clone`, serde-serialisable values with no matching logic: what a VPC
//! *is* (VPCs, subnets, network interfaces, network ACLs, security groups, prefix lists and
//! route tables), already normalised (protocols are numbers, CIDRs canonical, NACL entries
//! sorted by rule number). [`crate::aws`] builds one from `aws ec2 describe-*` JSON; the
//! engine compiles one into matchers.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A whole VPC snapshot: everything the engine needs to decide.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// VPCs and their CIDR blocks.
    pub vpcs: Vec<Vpc>,
    /// Subnets.
    pub subnets: Vec<Subnet>,
    /// Network interfaces (ENIs).
    pub enis: Vec<Eni>,
    /// Network ACLs with their subnet associations.
    pub nacls: Vec<NetworkAcl>,
    /// Security groups.
    pub security_groups: Vec<SecurityGroup>,
    /// Prefix lists (AWS-managed and customer-managed) with their CIDRs.
    pub prefix_lists: Vec<PrefixList>,
    /// Route tables with their subnet associations.
    pub route_tables: Vec<RouteTable>,
}

/// A VPC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vpc {
    /// `vpc-…`.
    pub id: String,
    /// The primary IPv4 CIDR; its base address + 2 is the Amazon DNS server.
    pub primary_cidr: Option<Ipv4Net>,
    /// Further IPv4 CIDR blocks.
    pub secondary_cidrs: Vec<Ipv4Net>,
    /// IPv6 CIDR blocks.
    pub ipv6_cidrs: Vec<Ipv6Net>,
}

impl Vpc {
    /// The Amazon DNS address of this VPC (primary IPv4 CIDR base + 2), if it has one.
    pub fn dns_address(&self) -> Option<Ipv4Addr> {
        let base = u32::from(self.primary_cidr?.network());
        Some(Ipv4Addr::from(base.wrapping_add(2)))
    }
}

/// A subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// `subnet-…`.
    pub id: String,
    /// The VPC it belongs to.
    pub vpc_id: String,
    /// Its IPv4 CIDR (absent for IPv6-only subnets).
    pub cidr: Option<Ipv4Net>,
    /// Its IPv6 CIDRs.
    pub ipv6_cidrs: Vec<Ipv6Net>,
}

/// Per-ENI connection-tracking idle timeouts (`ConnectionTrackingConfiguration`), seconds.
/// `None` means the AWS default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackTimeouts {
    /// `TcpEstablishedTimeout`: 60–432000, default 432000.
    pub tcp_established: Option<u32>,
    /// `UdpTimeout`: 30–60, default 30.
    pub udp: Option<u32>,
    /// `UdpStreamTimeout`: 60–180, default 180.
    pub udp_stream: Option<u32>,
}

/// An elastic network interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eni {
    /// `eni-…`.
    pub id: String,
    /// The subnet it lives in.
    pub subnet_id: String,
    /// The owning account (`OwnerId`), for flow-log records.
    pub owner_id: Option<String>,
    /// Private IPv4 addresses, primary first.
    pub private_ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses.
    pub ipv6: Vec<Ipv6Addr>,
    /// Security groups attached to it (`sg-…`).
    pub groups: Vec<String>,
    /// The instance it is attached to (`Attachment.InstanceId`); ENIs of one instance share
    /// the connection-tracking allowance.
    pub instance_id: Option<String>,
    /// Connection-tracking timeouts.
    pub conntrack: ConntrackTimeouts,
}

impl Eni {
    /// Every address the ENI owns, IPv4 first.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.private_ipv4
            .iter()
            .copied()
            .map(IpAddr::V4)
            .chain(self.ipv6.iter().copied().map(IpAddr::V6))
    }
}

/// `allow` or `deny`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The packet passes this list.
    Allow,
    /// The packet is dropped.
    Deny,
}

/// An inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ports {
    /// First port.
    pub from: u16,
    /// Last port (≥ `from`).
    pub to: u16,
}

impl Ports {
    /// All ports, 0–65535.
    pub const ALL: Ports = Ports {
        from: 0,
        to: u16::MAX,
    };
}

/// What a rule matches beyond addresses: the protocol and its ports or ICMP type/code.
///
/// Normalised as AWS evaluates it: ports only exist for TCP and UDP, type/code only for ICMP
/// and ICMPv6; for any other protocol (and for "all protocols") ports are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Traffic {
    /// Every protocol (`-1`).
    All,
    /// TCP (6) or UDP (17) with a destination port range.
    Ports {
        /// 6 or 17.
        proto: u8,
        /// Destination ports.
        ports: Ports,
    },
    /// ICMP (1) or ICMPv6 (58) with a type and code (`None` = all).
    Icmp {
        /// 1 or 58.
        proto: u8,
        /// ICMP type, `None` for all types.
        icmp_type: Option<u8>,
        /// ICMP code, `None` for all codes (always `None` when the type is).
        code: Option<u8>,
    },
    /// Any other protocol number, all of its traffic.
    Proto(u8),
}

impl Traffic {
    /// The protocol number, `None` for all protocols.
    pub fn proto(&self) -> Option<u8> {
        match *self {
            Traffic::All => None,
            Traffic::Ports { proto, .. } | Traffic::Icmp { proto, .. } | Traffic::Proto(proto) => {
                Some(proto)
            }
        }
    }
}

/// One NACL entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NaclEntry {
    /// Rule number (1–32766 for user rules; 32767/32768 are the `*` entries).
    pub rule_number: u32,
    /// `true` for the outbound list.
    pub egress: bool,
    /// Allow or deny.
    pub action: Action,
    /// The peer CIDR: source for inbound entries, destination for outbound ones.
    pub cidr: IpNet,
    /// Protocol and ports/type/code.
    pub traffic: Traffic,
}

/// A network ACL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAcl {
    /// `acl-…`.
    pub id: String,
    /// The VPC it belongs to.
    pub vpc_id: String,
    /// Whether it is its VPC's default NACL.
    pub is_default: bool,
    /// Subnets explicitly associated with it.
    pub subnet_ids: Vec<String>,
    /// Entries of both directions, each direction in ascending rule number.
    pub entries: Vec<NaclEntry>,
}

/// The other side of a security-group rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    /// An IPv4 or IPv6 CIDR.
    Cidr(IpNet),
    /// The CIDRs of a prefix list (`pl-…`).
    PrefixList(String),
    /// Every private address of every ENI carrying this group (`sg-…`).
    Group(String),
}

/// One security-group rule (one peer of one permission).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgRule {
    /// `sgr-…` when the snapshot names it.
    pub id: Option<String>,
    /// Protocol and ports/type/code.
    pub traffic: Traffic,
    /// Source (inbound) or destination (outbound).
    pub peer: Peer,
}

/// A security group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    /// `sg-…`.
    pub id: String,
    /// `GroupName`.
    pub name: Option<String>,
    /// Inbound rules.
    pub ingress: Vec<SgRule>,
    /// Outbound rules.
    pub egress: Vec<SgRule>,
}

/// A managed or AWS prefix list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixList {
    /// `pl-…`.
    pub id: String,
    /// Its CIDRs; `None` when the snapshot only describes the list (no entries known).
    pub cidrs: Option<Vec<IpNet>>,
}

/// Where a route sends matching traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteTarget {
    /// `local`: delivered inside the VPC.
    Local,
    /// A gateway, NAT, peering, transit gateway, ENI…: leaves the VPC (the id).
    Gateway(String),
}

/// One route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination CIDR.
    pub destination: IpNet,
    /// Target.
    pub target: RouteTarget,
    /// `State: blackhole` (its target is gone): matching traffic is dropped.
    pub blackhole: bool,
}

/// A route table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    /// `rtb-…`.
    pub id: String,
    /// The VPC it belongs to.
    pub vpc_id: String,
    /// Whether it is its VPC's main table (used by subnets with no explicit association).
    pub main: bool,
    /// Subnets explicitly associated with it.
    pub subnet_ids: Vec<String>,
    /// Routes (prefix-list routes already expanded).
    pub routes: Vec<Route>,
}
