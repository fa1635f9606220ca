//! The AWS CLI JSON shapes, as printed by `aws ec2 describe-… --output json`.
//!
//! Only the fields the engine uses are declared; serde ignores the rest. Every field is
//! optional here so that a missing field becomes a conversion error that names its JSON path
//! instead of a bare serde message.

use serde::Deserialize;

/// One snapshot file: an object whose known top-level keys are merged with the other files'.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Document {
    pub vpcs: Option<Vec<Vpc>>,
    pub subnets: Option<Vec<Subnet>>,
    pub network_acls: Option<Vec<NetworkAcl>>,
    pub security_groups: Option<Vec<SecurityGroup>>,
    pub security_group_rules: Option<Vec<SecurityGroupRule>>,
    pub network_interfaces: Option<Vec<NetworkInterface>>,
    pub route_tables: Option<Vec<RouteTable>>,
    pub prefix_lists: Option<Vec<PrefixList>>,
    pub prefix_list_id: Option<String>,
    pub entries: Option<Vec<PrefixListEntry>>,
}

/// A JSON value AWS prints as a string but people sometimes write as a number (`"6"` / `6`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum StrOrInt {
    Str(String),
    Int(i64),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Vpc {
    pub vpc_id: Option<String>,
    pub cidr_block: Option<String>,
    pub cidr_block_association_set: Option<Vec<CidrAssociation>>,
    pub ipv6_cidr_block_association_set: Option<Vec<Ipv6CidrAssociation>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CidrAssociation {
    pub cidr_block: Option<String>,
    pub cidr_block_state: Option<BlockState>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Ipv6CidrAssociation {
    pub ipv6_cidr_block: Option<String>,
    pub ipv6_cidr_block_state: Option<BlockState>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct BlockState {
    pub state: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Subnet {
    pub subnet_id: Option<String>,
    pub vpc_id: Option<String>,
    pub cidr_block: Option<String>,
    pub ipv6_cidr_block_association_set: Option<Vec<Ipv6CidrAssociation>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NetworkAcl {
    pub network_acl_id: Option<String>,
    pub vpc_id: Option<String>,
    pub is_default: Option<bool>,
    pub associations: Option<Vec<NaclAssociation>>,
    pub entries: Option<Vec<NaclEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NaclAssociation {
    pub subnet_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NaclEntry {
    pub rule_number: Option<i64>,
    pub egress: Option<bool>,
    pub protocol: Option<StrOrInt>,
    pub rule_action: Option<String>,
    pub cidr_block: Option<String>,
    pub ipv6_cidr_block: Option<String>,
    pub port_range: Option<PortRange>,
    pub icmp_type_code: Option<IcmpTypeCode>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PortRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct IcmpTypeCode {
    #[serde(rename = "Type")]
    pub icmp_type: Option<i64>,
    pub code: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SecurityGroup {
    pub group_id: Option<String>,
    pub group_name: Option<String>,
    pub ip_permissions: Option<Vec<IpPermission>>,
    pub ip_permissions_egress: Option<Vec<IpPermission>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct IpPermission {
    pub ip_protocol: Option<StrOrInt>,
    pub from_port: Option<i64>,
    pub to_port: Option<i64>,
    pub ip_ranges: Option<Vec<IpRange>>,
    pub ipv6_ranges: Option<Vec<Ipv6Range>>,
    pub prefix_list_ids: Option<Vec<PrefixListIdRef>>,
    pub user_id_group_pairs: Option<Vec<UserIdGroupPair>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct IpRange {
    pub cidr_ip: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Ipv6Range {
    pub cidr_ipv6: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PrefixListIdRef {
    pub prefix_list_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UserIdGroupPair {
    pub group_id: Option<String>,
    pub group_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SecurityGroupRule {
    pub security_group_rule_id: Option<String>,
    pub group_id: Option<String>,
    pub is_egress: Option<bool>,
    pub ip_protocol: Option<StrOrInt>,
    pub from_port: Option<i64>,
    pub to_port: Option<i64>,
    pub cidr_ipv4: Option<String>,
    pub cidr_ipv6: Option<String>,
    pub prefix_list_id: Option<String>,
    pub referenced_group_info: Option<ReferencedGroupInfo>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ReferencedGroupInfo {
    pub group_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NetworkInterface {
    pub network_interface_id: Option<String>,
    pub subnet_id: Option<String>,
    pub vpc_id: Option<String>,
    pub owner_id: Option<String>,
    pub private_ip_address: Option<String>,
    pub private_ip_addresses: Option<Vec<PrivateIpAddress>>,
    pub ipv6_addresses: Option<Vec<Ipv6Address>>,
    pub groups: Option<Vec<GroupIdentifier>>,
    pub attachment: Option<Attachment>,
    pub connection_tracking_configuration: Option<ConnectionTrackingConfiguration>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PrivateIpAddress {
    pub private_ip_address: Option<String>,
    pub primary: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Ipv6Address {
    pub ipv6_address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GroupIdentifier {
    pub group_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Attachment {
    pub instance_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ConnectionTrackingConfiguration {
    pub tcp_established_timeout: Option<i64>,
    pub udp_stream_timeout: Option<i64>,
    pub udp_timeout: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RouteTable {
    pub route_table_id: Option<String>,
    pub vpc_id: Option<String>,
    pub associations: Option<Vec<RouteTableAssociation>>,
    pub routes: Option<Vec<Route>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RouteTableAssociation {
    pub main: Option<bool>,
    pub subnet_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Route {
    pub destination_cidr_block: Option<String>,
    pub destination_ipv6_cidr_block: Option<String>,
    pub destination_prefix_list_id: Option<String>,
    pub gateway_id: Option<String>,
    pub nat_gateway_id: Option<String>,
    pub transit_gateway_id: Option<String>,
    pub vpc_peering_connection_id: Option<String>,
    pub network_interface_id: Option<String>,
    pub instance_id: Option<String>,
    pub egress_only_internet_gateway_id: Option<String>,
    pub local_gateway_id: Option<String>,
    pub carrier_gateway_id: Option<String>,
    pub core_network_arn: Option<String>,
    pub state: Option<String>,
}

impl Route {
    /// The target's id, in the order AWS fills them in.
    pub fn target_id(&self) -> Option<&str> {
        [
            &self.gateway_id,
            &self.nat_gateway_id,
            &self.transit_gateway_id,
            &self.vpc_peering_connection_id,
            &self.network_interface_id,
            &self.instance_id,
            &self.egress_only_internet_gateway_id,
            &self.local_gateway_id,
            &self.carrier_gateway_id,
            &self.core_network_arn,
        ]
        .into_iter()
        .find_map(|f| f.as_deref())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PrefixList {
    pub prefix_list_id: Option<String>,
    pub cidrs: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PrefixListEntry {
    pub cidr: Option<String>,
}
