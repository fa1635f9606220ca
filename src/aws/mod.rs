//! Loading a VPC snapshot from `aws ec2 describe-*` JSON (SPEC §1).
//!
//! A snapshot is a directory of JSON files as the AWS CLI prints them. Every `*.json` file
//! below the directory is read (in path order); each is an object whose known top-level keys
//! (`Vpcs`, `Subnets`, `NetworkAcls`, `SecurityGroups`, `SecurityGroupRules`,
//! `NetworkInterfaces`, `RouteTables`, `PrefixLists`, and `PrefixListId` + `Entries`) are
//! merged. Unknown keys and fields are ignored. A malformed known structure is a [`LoadError`]
//! naming the file, the JSON path and what was expected, and nothing is loaded.
//!
//! [`SnapshotBuilder`] is the pure core (documents in, [`Snapshot`] out); [`load_dir`] is the
//! only function here that touches the file system.

mod raw;

use crate::policy::{
    Action, ConntrackTimeouts, Eni, NaclEntry, NetworkAcl, Peer, Policy, Ports, PrefixList, Route,
    RouteTable, RouteTarget, SecurityGroup, SgRule, Subnet, Traffic, Vpc,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// Where in the input a message points: a file, a JSON path inside it, a line and column.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    /// The file (as given to the loader).
    pub file: Option<String>,
    /// The JSON path, e.g. `NetworkAcls[0].Entries[3].PortRange.From`.
    pub path: Option<String>,
    /// 1-based line, for syntax errors.
    pub line: Option<usize>,
    /// 1-based column, for syntax errors.
    pub column: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(file) = &self.file {
            write!(f, "{file}")?;
            sep = ":";
        }
        if let (Some(line), Some(col)) = (self.line, self.column) {
            write!(f, "{sep}{line}:{col}")?;
            sep = ":";
        }
        if let Some(path) = &self.path {
            if sep.is_empty() {
                write!(f, "{path}")?;
            } else {
                write!(f, "{sep} {path}")?;
            }
        }
        Ok(())
    }
}

/// A snapshot that could not be loaded: where, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// Where the problem is.
    pub location: Location,
    /// What is wrong, and what was expected.
    pub message: String,
}

impl LoadError {
    /// A file that is not valid JSON: its name, the line and column serde stopped at.
    pub(crate) fn invalid_json(file: &str, e: &serde_json::Error) -> Self {
        LoadError {
            location: Location {
                file: Some(file.to_owned()),
                line: Some(e.line()),
                column: Some(e.column()),
                path: None,
            },
            message: format!("invalid JSON: {}", describe_serde(e)),
        }
    }
    fn at(file: &str, path: impl Into<String>, message: impl Into<String>) -> Self {
        LoadError {
            location: Location {
                file: Some(file.to_owned()),
                path: Some(path.into()),
                ..Location::default()
            },
            message: message.into(),
        }
    }
    fn global(message: impl Into<String>) -> Self {
        LoadError {
            location: Location::default(),
            message: message.into(),
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let loc = self.location.to_string();
        if loc.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{loc}: {}", self.message)
        }
    }
}

impl std::error::Error for LoadError {}

/// Something the loader accepted but the user should know (e.g. a stale group reference).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Where.
    pub location: Location,
    /// What, and what the engine does about it.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let loc = self.location.to_string();
        if loc.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{loc}: {}", self.message)
        }
    }
}

/// A loaded snapshot: the policy and the warnings raised while reading it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// The normalised policy.
    pub policy: Policy,
    /// Warnings (stale references, `-1` ports, …).
    pub warnings: Vec<Warning>,
}

/// Reads every `*.json` file below `dir` (recursively, in path order) into a [`Snapshot`].
pub fn load_dir(dir: &Path) -> Result<Snapshot, LoadError> {
    let meta = std::fs::metadata(dir).map_err(|e| {
        LoadError::global(format!(
            "{}: cannot read snapshot directory: {e}",
            dir.display()
        ))
    })?;
    if !meta.is_dir() {
        return Err(LoadError::global(format!(
            "{}: not a directory (a snapshot is a directory of JSON files)",
            dir.display()
        )));
    }
    let mut files = Vec::new();
    collect_json(dir, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(LoadError::global(format!(
            "{}: no *.json files in the snapshot directory",
            dir.display()
        )));
    }
    let mut builder = SnapshotBuilder::new();
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|e| LoadError {
            location: Location {
                file: Some(file.display().to_string()),
                ..Location::default()
            },
            message: format!("cannot read file: {e}"),
        })?;
        builder.add_document(&file.display().to_string(), &text)?;
    }
    builder.finish()
}

fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| LoadError::global(format!("{}: cannot list directory: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| {
            LoadError::global(format!("{}: cannot list directory: {e}", dir.display()))
        })?;
        let path = entry.path();
        let ty = entry
            .file_type()
            .map_err(|e| LoadError::global(format!("{}: {e}", path.display())))?;
        if ty.is_dir() {
            collect_json(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

/// Which kind of object an id names, for duplicate detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Vpc,
    Subnet,
    Nacl,
    Eni,
    RouteTable,
}

/// A route whose destination is a prefix list, expanded once every list is known.
struct PendingPlRoute {
    table: usize,
    list: String,
    target: RouteTarget,
    blackhole: bool,
    file: String,
    path: String,
}

/// Accumulates snapshot documents, then validates and normalises them into a [`Snapshot`].
#[derive(Default)]
pub struct SnapshotBuilder {
    policy: Policy,
    warnings: Vec<Warning>,
    /// (kind, id) → where it was first described.
    seen: BTreeMap<(Kind, String), String>,
    /// group id → index in `policy.security_groups`.
    groups: HashMap<String, usize>,
    /// groups described by `SecurityGroups` or `SecurityGroupRules` (not merely carried).
    described_groups: BTreeSet<String>,
    /// (group, rule) pairs that reference other groups or lists, for the stale check.
    references: Vec<(Peer, Location)>,
    pending_routes: Vec<PendingPlRoute>,
    /// prefix list id → index in `policy.prefix_lists`.
    lists: HashMap<String, usize>,
    /// (subnet, VPC) pairs named by ENIs, for subnets that are not described.
    eni_vpcs: Vec<(String, String)>,
}

impl SnapshotBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        SnapshotBuilder::default()
    }

    /// Parses one file's text and adds what it describes. `name` is used in messages.
    pub fn add_document(&mut self, name: &str, text: &str) -> Result<(), LoadError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| LoadError::invalid_json(name, &e))?;
        if !value.is_object() {
            return Err(LoadError {
                location: Location { file: Some(name.to_owned()), ..Location::default() },
                message: "expected a JSON object at the top level (as `aws ec2 describe-… --output json` prints)".into(),
            });
        }
        let doc: raw::Document = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            LoadError::at(
                name,
                path,
                format!("expected {}", describe_serde(e.inner())),
            )
        })?;
        self.add(name, doc)
    }

    fn note_id(&mut self, kind: Kind, id: &str, file: &str, path: &str) -> Result<(), LoadError> {
        let here = format!("{file}: {path}");
        if let Some(prev) = self.seen.get(&(kind, id.to_owned())) {
            return Err(LoadError::at(
                file,
                path,
                format!("{id} is described twice (first at {prev})"),
            ));
        }
        self.seen.insert((kind, id.to_owned()), here);
        Ok(())
    }

    fn warn(&mut self, file: &str, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning {
            location: Location {
                file: Some(file.to_owned()),
                path: Some(path.into()),
                ..Location::default()
            },
            message: message.into(),
        });
    }

    fn add(&mut self, f: &str, doc: raw::Document) -> Result<(), LoadError> {
        each(doc.vpcs, "Vpcs", |p, v| self.add_vpc(f, p, v))?;
        each(doc.subnets, "Subnets", |p, v| self.add_subnet(f, p, v))?;
        each(doc.network_acls, "NetworkAcls", |p, v| {
            self.add_nacl(f, p, v)
        })?;
        each(doc.security_groups, "SecurityGroups", |p, v| {
            self.add_group(f, p, v)
        })?;
        each(doc.security_group_rules, "SecurityGroupRules", |p, v| {
            self.add_group_rule(f, p, v)
        })?;
        each(doc.network_interfaces, "NetworkInterfaces", |p, v| {
            self.add_eni(f, p, v)
        })?;
        each(doc.route_tables, "RouteTables", |p, v| {
            self.add_route_table(f, p, v)
        })?;
        for (i, l) in doc.prefix_lists.unwrap_or_default().into_iter().enumerate() {
            let p = format!("PrefixLists[{i}]");
            let id = required(f, &p, "PrefixListId", l.prefix_list_id)?;
            let cidrs = match l.cidrs {
                None => None,
                Some(c) => Some(
                    c.iter()
                        .enumerate()
                        .map(|(j, s)| parse_cidr(f, &format!("{p}.Cidrs[{j}]"), s))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            self.add_list(id, cidrs);
        }
        match (doc.prefix_list_id, doc.entries) {
            (Some(id), entries) => {
                let mut cidrs = Vec::new();
                for (j, e) in entries.unwrap_or_default().into_iter().enumerate() {
                    let p = format!("Entries[{j}]");
                    let c = required(f, &p, "Cidr", e.cidr)?;
                    cidrs.push(parse_cidr(f, &format!("{p}.Cidr"), &c)?);
                }
                self.add_list(id, Some(cidrs));
            }
            (None, Some(_)) => {
                return Err(LoadError::at(
                    f,
                    "Entries",
                    "a prefix-list entries file needs a top-level \"PrefixListId\" beside \"Entries\" (get-managed-prefix-list-entries output with the id added)",
                ));
            }
            (None, None) => {}
        }
        Ok(())
    }

    fn add_list(&mut self, id: String, cidrs: Option<Vec<IpNet>>) {
        match self.lists.get(&id) {
            Some(&i) => {
                let list = &mut self.policy.prefix_lists[i];
                if let Some(new) = cidrs {
                    let all = list.cidrs.get_or_insert_with(Vec::new);
                    for c in new {
                        if !all.contains(&c) {
                            all.push(c);
                        }
                    }
                }
            }
            None => {
                self.lists
                    .insert(id.clone(), self.policy.prefix_lists.len());
                self.policy.prefix_lists.push(PrefixList { id, cidrs });
            }
        }
    }

    fn add_vpc(&mut self, f: &str, p: &str, v: raw::Vpc) -> Result<(), LoadError> {
        let id = required(f, p, "VpcId", v.vpc_id)?;
        self.note_id(Kind::Vpc, &id, f, p)?;
        let primary = v
            .cidr_block
            .as_deref()
            .map(|c| parse_v4(f, &format!("{p}.CidrBlock"), c))
            .transpose()?;
        let mut secondary = Vec::new();
        for (i, a) in v
            .cidr_block_association_set
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if !state_is_live(a.cidr_block_state.as_ref()) {
                continue;
            }
            if let Some(c) = a.cidr_block {
                let net = parse_v4(
                    f,
                    &format!("{p}.CidrBlockAssociationSet[{i}].CidrBlock"),
                    &c,
                )?;
                if Some(net) != primary && !secondary.contains(&net) {
                    secondary.push(net);
                }
            }
        }
        let v6 = ipv6_associations(f, p, v.ipv6_cidr_block_association_set)?;
        self.policy.vpcs.push(Vpc {
            id,
            primary_cidr: primary,
            secondary_cidrs: secondary,
            ipv6_cidrs: v6,
        });
        Ok(())
    }

    fn add_subnet(&mut self, f: &str, p: &str, s: raw::Subnet) -> Result<(), LoadError> {
        let id = required(f, p, "SubnetId", s.subnet_id)?;
        self.note_id(Kind::Subnet, &id, f, p)?;
        let vpc_id = required(f, p, "VpcId", s.vpc_id)?;
        let cidr = s
            .cidr_block
            .as_deref()
            .map(|c| parse_v4(f, &format!("{p}.CidrBlock"), c))
            .transpose()?;
        let v6 = ipv6_associations(f, p, s.ipv6_cidr_block_association_set)?;
        self.policy.subnets.push(Subnet {
            id,
            vpc_id,
            cidr,
            ipv6_cidrs: v6,
        });
        Ok(())
    }

    fn add_nacl(&mut self, f: &str, p: &str, n: raw::NetworkAcl) -> Result<(), LoadError> {
        let id = required(f, p, "NetworkAclId", n.network_acl_id)?;
        self.note_id(Kind::Nacl, &id, f, p)?;
        let vpc_id = required(f, p, "VpcId", n.vpc_id)?;
        let subnet_ids = n
            .associations
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| a.subnet_id)
            .collect();
        let mut entries = Vec::new();
        let mut numbers: HashMap<(bool, u32), usize> = HashMap::new();
        for (i, e) in n.entries.unwrap_or_default().into_iter().enumerate() {
            let ep = format!("{p}.Entries[{i}]");
            let entry = self.nacl_entry(f, &ep, e)?;
            if let Some(prev) = numbers.insert((entry.egress, entry.rule_number), i) {
                return Err(LoadError::at(
                    f,
                    format!("{ep}.RuleNumber"),
                    format!(
                        "duplicate {} rule number {} in {id} (also at {p}.Entries[{prev}]); rule numbers must be unique per direction",
                        if entry.egress { "egress" } else { "ingress" },
                        entry.rule_number
                    ),
                ));
            }
            entries.push(entry);
        }
        entries.sort_by_key(|e| (e.egress, e.rule_number));
        self.policy.nacls.push(NetworkAcl {
            id,
            vpc_id,
            is_default: n.is_default.unwrap_or(false),
            subnet_ids,
            entries,
        });
        Ok(())
    }

    fn nacl_entry(&mut self, f: &str, p: &str, e: raw::NaclEntry) -> Result<NaclEntry, LoadError> {
        let number = required(f, p, "RuleNumber", e.rule_number)?;
        if !(1..=32768).contains(&number) {
            return Err(LoadError::at(
                f,
                format!("{p}.RuleNumber"),
                format!(
                    "expected a rule number from 1 to 32766 (32767/32768 for the default `*` entries), found {number}"
                ),
            ));
        }
        let egress = required(f, p, "Egress", e.egress)?;
        let action_text = required(f, p, "RuleAction", e.rule_action)?;
        let action = match action_text.to_ascii_lowercase().as_str() {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            _ => {
                return Err(LoadError::at(
                    f,
                    format!("{p}.RuleAction"),
                    format!("expected \"allow\" or \"deny\", found {action_text:?}"),
                ));
            }
        };
        let cidr = match (e.cidr_block, e.ipv6_cidr_block) {
            (Some(_), Some(_)) => {
                return Err(LoadError::at(
                    f,
                    p,
                    "an entry has either CidrBlock or Ipv6CidrBlock, not both",
                ));
            }
            (Some(c), None) => IpNet::V4(parse_v4(f, &format!("{p}.CidrBlock"), &c)?),
            (None, Some(c)) => IpNet::V6(parse_v6(f, &format!("{p}.Ipv6CidrBlock"), &c)?),
            (None, None) => {
                return Err(LoadError::at(
                    f,
                    p,
                    "expected a CidrBlock or an Ipv6CidrBlock",
                ));
            }
        };
        let proto_raw = required(f, p, "Protocol", e.protocol)?;
        let proto = parse_protocol(f, &format!("{p}.Protocol"), &proto_raw)?;
        let traffic = match proto {
            None => Traffic::All,
            Some(pr @ (6 | 17)) => {
                let pp = format!("{p}.PortRange");
                let Some(range) = e.port_range else {
                    return Err(LoadError::at(
                        f,
                        pp,
                        format!("expected a PortRange {{From, To}} (required for protocol {pr})"),
                    ));
                };
                let from = required(f, &pp, "From", range.from)?;
                let to = required(f, &pp, "To", range.to)?;
                Traffic::Ports {
                    proto: pr,
                    ports: self.port_range(f, &pp, "From", "To", from, to)?,
                }
            }
            Some(1) => self.nacl_icmp(f, p, 1, e.icmp_type_code)?,
            Some(58) if cidr.addr().is_ipv6() => self.nacl_icmp(f, p, 58, e.icmp_type_code)?,
            Some(58) => Traffic::Icmp {
                proto: 58,
                icmp_type: None,
                code: None,
            },
            Some(other) => Traffic::Proto(other),
        };
        Ok(NaclEntry {
            rule_number: number as u32,
            egress,
            action,
            cidr,
            traffic,
        })
    }

    fn nacl_icmp(
        &mut self,
        f: &str,
        p: &str,
        proto: u8,
        tc: Option<raw::IcmpTypeCode>,
    ) -> Result<Traffic, LoadError> {
        let Some(tc) = tc else {
            self.warn(f, p, format!("protocol {proto} entry without IcmpTypeCode: treated as all ICMP types and codes"));
            return Ok(Traffic::Icmp {
                proto,
                icmp_type: None,
                code: None,
            });
        };
        let tp = format!("{p}.IcmpTypeCode");
        icmp_traffic(f, &tp, "Type", "Code", proto, tc.icmp_type, tc.code)
    }

    /// A TCP/UDP port range; `-1` means 0 (From) / 65535 (To) with a warning.
    fn port_range(
        &mut self,
        f: &str,
        p: &str,
        from_name: &str,
        to_name: &str,
        from: i64,
        to: i64,
    ) -> Result<Ports, LoadError> {
        let mut port = |name: &str, v: i64, minus_one: u16| -> Result<u16, LoadError> {
            match v {
                -1 => {
                    self.warnings.push(Warning {
                        location: Location {
                            file: Some(f.to_owned()),
                            path: Some(format!("{p}.{name}")),
                            ..Location::default()
                        },
                        message: format!("port -1 read as {minus_one}"),
                    });
                    Ok(minus_one)
                }
                0..=65535 => Ok(v as u16),
                _ => Err(LoadError::at(
                    f,
                    format!("{p}.{name}"),
                    format!("expected a port from 0 to 65535, found {v}"),
                )),
            }
        };
        let lo = port(from_name, from, 0)?;
        let hi = port(to_name, to, u16::MAX)?;
        if lo > hi {
            return Err(LoadError::at(
                f,
                format!("{p}.{from_name}"),
                format!("expected {from_name} ≤ {to_name}, found {lo} > {hi}"),
            ));
        }
        Ok(Ports { from: lo, to: hi })
    }

    fn sg_traffic(
        &mut self,
        f: &str,
        p: &str,
        proto: &raw::StrOrInt,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Traffic, LoadError> {
        let proto = parse_protocol(f, &format!("{p}.IpProtocol"), proto)?;
        Ok(match proto {
            None => Traffic::All,
            Some(pr @ (6 | 17)) => match (from, to) {
                (None, None) => Traffic::Ports {
                    proto: pr,
                    ports: Ports::ALL,
                },
                (from, to) => Traffic::Ports {
                    proto: pr,
                    ports: self.port_range(
                        f,
                        p,
                        "FromPort",
                        "ToPort",
                        from.unwrap_or(0),
                        to.unwrap_or(65535),
                    )?,
                },
            },
            Some(pr @ (1 | 58)) => icmp_traffic(f, p, "FromPort", "ToPort", pr, from, to)?,
            Some(other) => Traffic::Proto(other),
        })
    }

    fn group_index(&mut self, id: &str) -> usize {
        if let Some(&i) = self.groups.get(id) {
            return i;
        }
        let i = self.policy.security_groups.len();
        self.policy.security_groups.push(SecurityGroup {
            id: id.to_owned(),
            ..SecurityGroup::default()
        });
        self.groups.insert(id.to_owned(), i);
        i
    }

    fn push_rule(&mut self, group: usize, egress: bool, rule: SgRule, loc: Location) {
        if matches!(rule.peer, Peer::Group(_) | Peer::PrefixList(_)) {
            self.references.push((rule.peer.clone(), loc));
        }
        let g = &mut self.policy.security_groups[group];
        let list = if egress {
            &mut g.egress
        } else {
            &mut g.ingress
        };
        match list
            .iter_mut()
            .find(|r| r.traffic == rule.traffic && r.peer == rule.peer)
        {
            // The same rule in both forms (describe-security-groups and -rules): keep one,
            // preferring the form that names it.
            Some(existing) => {
                if existing.id.is_none() {
                    existing.id = rule.id;
                }
            }
            None => list.push(rule),
        }
    }

    fn add_group(&mut self, f: &str, p: &str, g: raw::SecurityGroup) -> Result<(), LoadError> {
        let id = required(f, p, "GroupId", g.group_id)?;
        self.described_groups.insert(id.clone());
        let gi = self.group_index(&id);
        if self.policy.security_groups[gi].name.is_none() {
            self.policy.security_groups[gi].name = g.group_name;
        }
        for (egress, perms, key) in [
            (false, g.ip_permissions, "IpPermissions"),
            (true, g.ip_permissions_egress, "IpPermissionsEgress"),
        ] {
            for (i, perm) in perms.unwrap_or_default().into_iter().enumerate() {
                let pp = format!("{p}.{key}[{i}]");
                let proto = required(f, &pp, "IpProtocol", perm.ip_protocol.clone())?;
                let traffic = self.sg_traffic(f, &pp, &proto, perm.from_port, perm.to_port)?;
                let mut peers: Vec<(Peer, String)> = Vec::new();
                for (j, r) in perm.ip_ranges.unwrap_or_default().into_iter().enumerate() {
                    let rp = format!("{pp}.IpRanges[{j}]");
                    let c = required(f, &rp, "CidrIp", r.cidr_ip)?;
                    peers.push((
                        Peer::Cidr(IpNet::V4(parse_v4(f, &format!("{rp}.CidrIp"), &c)?)),
                        rp,
                    ));
                }
                for (j, r) in perm.ipv6_ranges.unwrap_or_default().into_iter().enumerate() {
                    let rp = format!("{pp}.Ipv6Ranges[{j}]");
                    let c = required(f, &rp, "CidrIpv6", r.cidr_ipv6)?;
                    peers.push((
                        Peer::Cidr(IpNet::V6(parse_v6(f, &format!("{rp}.CidrIpv6"), &c)?)),
                        rp,
                    ));
                }
                for (j, r) in perm
                    .prefix_list_ids
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                {
                    let rp = format!("{pp}.PrefixListIds[{j}]");
                    peers.push((
                        Peer::PrefixList(required(f, &rp, "PrefixListId", r.prefix_list_id)?),
                        rp,
                    ));
                }
                for (j, r) in perm
                    .user_id_group_pairs
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                {
                    let rp = format!("{pp}.UserIdGroupPairs[{j}]");
                    match r.group_id {
                        Some(gid) => peers.push((Peer::Group(gid), rp)),
                        None => {
                            let name = r.group_name.unwrap_or_default();
                            self.warn(f, rp, format!("group pair without GroupId (EC2-Classic name {name:?}): matches nothing"));
                        }
                    }
                }
                for (peer, rp) in peers {
                    let loc = Location {
                        file: Some(f.to_owned()),
                        path: Some(rp),
                        ..Location::default()
                    };
                    self.push_rule(
                        gi,
                        egress,
                        SgRule {
                            id: None,
                            traffic,
                            peer,
                        },
                        loc,
                    );
                }
            }
        }
        Ok(())
    }

    fn add_group_rule(
        &mut self,
        f: &str,
        p: &str,
        r: raw::SecurityGroupRule,
    ) -> Result<(), LoadError> {
        let gid = required(f, p, "GroupId", r.group_id)?;
        let egress = required(f, p, "IsEgress", r.is_egress)?;
        let proto = required(f, p, "IpProtocol", r.ip_protocol)?;
        let traffic = self.sg_traffic(f, p, &proto, r.from_port, r.to_port)?;
        let mut peers = Vec::new();
        if let Some(c) = r.cidr_ipv4 {
            peers.push(Peer::Cidr(IpNet::V4(parse_v4(
                f,
                &format!("{p}.CidrIpv4"),
                &c,
            )?)));
        }
        if let Some(c) = r.cidr_ipv6 {
            peers.push(Peer::Cidr(IpNet::V6(parse_v6(
                f,
                &format!("{p}.CidrIpv6"),
                &c,
            )?)));
        }
        if let Some(l) = r.prefix_list_id {
            peers.push(Peer::PrefixList(l));
        }
        if let Some(g) = r.referenced_group_info {
            peers.push(Peer::Group(required(
                f,
                &format!("{p}.ReferencedGroupInfo"),
                "GroupId",
                g.group_id,
            )?));
        }
        let peer = match peers.len() {
            1 => peers.pop().expect("one peer"),
            0 => {
                return Err(LoadError::at(
                    f,
                    p,
                    "expected one of CidrIpv4, CidrIpv6, PrefixListId or ReferencedGroupInfo",
                ));
            }
            _ => {
                return Err(LoadError::at(
                    f,
                    p,
                    "a security group rule has exactly one of CidrIpv4, CidrIpv6, PrefixListId or ReferencedGroupInfo, found several",
                ));
            }
        };
        self.described_groups.insert(gid.clone());
        let gi = self.group_index(&gid);
        let loc = Location {
            file: Some(f.to_owned()),
            path: Some(p.to_owned()),
            ..Location::default()
        };
        self.push_rule(
            gi,
            egress,
            SgRule {
                id: r.security_group_rule_id,
                traffic,
                peer,
            },
            loc,
        );
        Ok(())
    }

    fn add_eni(&mut self, f: &str, p: &str, e: raw::NetworkInterface) -> Result<(), LoadError> {
        let id = required(f, p, "NetworkInterfaceId", e.network_interface_id)?;
        self.note_id(Kind::Eni, &id, f, p)?;
        let subnet_id = required(f, p, "SubnetId", e.subnet_id)?;
        let mut v4: Vec<Ipv4Addr> = Vec::new();
        if let Some(a) = e.private_ip_address {
            v4.push(parse_addr_v4(f, &format!("{p}.PrivateIpAddress"), &a)?);
        }
        let mut secondary = e.private_ip_addresses.unwrap_or_default();
        // Primary first, then the others in the order given.
        secondary.sort_by_key(|a| !a.primary.unwrap_or(false));
        for (i, a) in secondary.into_iter().enumerate() {
            let ap = format!("{p}.PrivateIpAddresses[{i}]");
            let s = required(f, &ap, "PrivateIpAddress", a.private_ip_address)?;
            let addr = parse_addr_v4(f, &format!("{ap}.PrivateIpAddress"), &s)?;
            if !v4.contains(&addr) {
                v4.push(addr);
            }
        }
        let mut v6: Vec<Ipv6Addr> = Vec::new();
        for (i, a) in e.ipv6_addresses.unwrap_or_default().into_iter().enumerate() {
            let ap = format!("{p}.Ipv6Addresses[{i}]");
            let s = required(f, &ap, "Ipv6Address", a.ipv6_address)?;
            let addr: Ipv6Addr = s.parse().map_err(|_| {
                LoadError::at(
                    f,
                    format!("{ap}.Ipv6Address"),
                    format!("expected an IPv6 address, found {s:?}"),
                )
            })?;
            if !v6.contains(&addr) {
                v6.push(addr);
            }
        }
        let mut groups = Vec::new();
        for (i, g) in e.groups.unwrap_or_default().into_iter().enumerate() {
            let gid = required(f, &format!("{p}.Groups[{i}]"), "GroupId", g.group_id)?;
            if !groups.contains(&gid) {
                groups.push(gid);
            }
        }
        let mut conntrack = ConntrackTimeouts::default();
        if let Some(c) = e.connection_tracking_configuration {
            let cp = format!("{p}.ConnectionTrackingConfiguration");
            conntrack.tcp_established = timeout(
                f,
                &cp,
                "TcpEstablishedTimeout",
                c.tcp_established_timeout,
                60,
                432_000,
            )?;
            conntrack.udp = timeout(f, &cp, "UdpTimeout", c.udp_timeout, 30, 60)?;
            conntrack.udp_stream =
                timeout(f, &cp, "UdpStreamTimeout", c.udp_stream_timeout, 60, 180)?;
        }
        if let Some(vpc) = e.vpc_id {
            // Kept for subnets that are not described: the ENI's VPC then names the subnet's.
            self.eni_vpcs.push((subnet_id.clone(), vpc));
        }
        self.policy.enis.push(Eni {
            id,
            subnet_id,
            owner_id: e.owner_id,
            private_ipv4: v4,
            ipv6: v6,
            groups,
            instance_id: e.attachment.and_then(|a| a.instance_id),
            conntrack,
        });
        Ok(())
    }

    fn add_route_table(&mut self, f: &str, p: &str, t: raw::RouteTable) -> Result<(), LoadError> {
        let id = required(f, p, "RouteTableId", t.route_table_id)?;
        self.note_id(Kind::RouteTable, &id, f, p)?;
        let vpc_id = required(f, p, "VpcId", t.vpc_id)?;
        let mut main = false;
        let mut subnet_ids = Vec::new();
        for a in t.associations.unwrap_or_default() {
            main |= a.main.unwrap_or(false);
            if let Some(s) = a.subnet_id {
                subnet_ids.push(s);
            }
        }
        let table = self.policy.route_tables.len();
        let mut routes = Vec::new();
        for (i, r) in t.routes.unwrap_or_default().into_iter().enumerate() {
            let rp = format!("{p}.Routes[{i}]");
            let blackhole = r
                .state
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("blackhole"));
            let target = match r.target_id() {
                Some("local") => RouteTarget::Local,
                Some(t) => RouteTarget::Gateway(t.to_owned()),
                None if blackhole => RouteTarget::Gateway("-".to_owned()),
                None => {
                    return Err(LoadError::at(
                        f,
                        &rp,
                        "expected a route target (GatewayId, NatGatewayId, VpcPeeringConnectionId, …)",
                    ));
                }
            };
            let dest = match (
                &r.destination_cidr_block,
                &r.destination_ipv6_cidr_block,
                &r.destination_prefix_list_id,
            ) {
                (Some(c), None, None) => {
                    IpNet::V4(parse_v4(f, &format!("{rp}.DestinationCidrBlock"), c)?)
                }
                (None, Some(c), None) => {
                    IpNet::V6(parse_v6(f, &format!("{rp}.DestinationIpv6CidrBlock"), c)?)
                }
                (None, None, Some(l)) => {
                    self.pending_routes.push(PendingPlRoute {
                        table,
                        list: l.clone(),
                        target,
                        blackhole,
                        file: f.to_owned(),
                        path: rp,
                    });
                    continue;
                }
                (None, None, None) => {
                    return Err(LoadError::at(
                        f,
                        &rp,
                        "expected a destination (DestinationCidrBlock, DestinationIpv6CidrBlock or DestinationPrefixListId)",
                    ));
                }
                _ => {
                    return Err(LoadError::at(
                        f,
                        &rp,
                        "a route has exactly one destination, found several",
                    ));
                }
            };
            routes.push(Route {
                destination: dest,
                target,
                blackhole,
            });
        }
        self.policy.route_tables.push(RouteTable {
            id,
            vpc_id,
            main,
            subnet_ids,
            routes,
        });
        Ok(())
    }

    /// Validates the cross-references and returns the snapshot.
    pub fn finish(mut self) -> Result<Snapshot, LoadError> {
        if self.policy.enis.is_empty() {
            return Err(LoadError::global(
                "the snapshot has no network interfaces: add `aws ec2 describe-network-interfaces` output (a NetworkInterfaces array)",
            ));
        }
        // Prefix-list routes.
        for r in std::mem::take(&mut self.pending_routes) {
            match self
                .lists
                .get(&r.list)
                .and_then(|&i| self.policy.prefix_lists[i].cidrs.clone())
            {
                Some(cidrs) => {
                    for c in cidrs {
                        self.policy.route_tables[r.table].routes.push(Route {
                            destination: c,
                            target: r.target.clone(),
                            blackhole: r.blackhole,
                        });
                    }
                }
                None => self.warn(
                    &r.file,
                    format!("{}.DestinationPrefixListId", r.path),
                    format!(
                        "prefix list {} has no entries in the snapshot: the route is ignored",
                        r.list
                    ),
                ),
            }
        }
        // Subnets known only through their ENIs.
        let known: BTreeSet<String> = self.policy.subnets.iter().map(|s| s.id.clone()).collect();
        for (subnet, vpc) in std::mem::take(&mut self.eni_vpcs) {
            if !known.contains(&subnet) && !self.policy.subnets.iter().any(|s| s.id == subnet) {
                self.policy.subnets.push(Subnet {
                    id: subnet,
                    vpc_id: vpc,
                    cidr: None,
                    ipv6_cidrs: Vec::new(),
                });
            }
        }
        for eni in &self.policy.enis {
            if !self.policy.subnets.iter().any(|s| s.id == eni.subnet_id) {
                return Err(LoadError::global(format!(
                    "{}: subnet {} is not in the snapshot and the interface has no VpcId (add describe-subnets output)",
                    eni.id, eni.subnet_id
                )));
            }
        }
        // One address, one ENI.
        let mut owners: HashMap<IpAddr, &str> = HashMap::new();
        for eni in &self.policy.enis {
            for a in eni.addresses() {
                if let Some(prev) = owners.insert(a, &eni.id) {
                    return Err(LoadError::global(format!(
                        "address {a} belongs to both {prev} and {}",
                        eni.id
                    )));
                }
            }
        }
        // A subnet has at most one NACL; a VPC at most one default NACL and one main table.
        let mut nacl_of: HashMap<&str, &str> = HashMap::new();
        for n in &self.policy.nacls {
            for s in &n.subnet_ids {
                if let Some(prev) = nacl_of.insert(s, &n.id)
                    && prev != n.id
                {
                    return Err(LoadError::global(format!(
                        "subnet {s} is associated with two network ACLs ({prev} and {}); a subnet has exactly one",
                        n.id
                    )));
                }
            }
        }
        let mut default_of: HashMap<&str, &str> = HashMap::new();
        for n in self.policy.nacls.iter().filter(|n| n.is_default) {
            if let Some(prev) = default_of.insert(&n.vpc_id, &n.id) {
                return Err(LoadError::global(format!(
                    "VPC {} has two default network ACLs ({prev} and {})",
                    n.vpc_id, n.id
                )));
            }
        }
        let mut table_of: HashMap<&str, &str> = HashMap::new();
        let mut main_of: HashMap<&str, &str> = HashMap::new();
        for t in &self.policy.route_tables {
            for s in &t.subnet_ids {
                if let Some(prev) = table_of.insert(s, &t.id)
                    && prev != t.id
                {
                    return Err(LoadError::global(format!(
                        "subnet {s} is associated with two route tables ({prev} and {})",
                        t.id
                    )));
                }
            }
            if t.main
                && let Some(prev) = main_of.insert(&t.vpc_id, &t.id)
            {
                return Err(LoadError::global(format!(
                    "VPC {} has two main route tables ({prev} and {})",
                    t.vpc_id, t.id
                )));
            }
        }
        // Stale references: kept (AWS keeps them), match nothing, reported.
        let carried: BTreeSet<&str> = self
            .policy
            .enis
            .iter()
            .flat_map(|e| e.groups.iter().map(String::as_str))
            .collect();
        let mut stale = Vec::new();
        for (peer, loc) in &self.references {
            match peer {
                Peer::Group(g)
                    if !self.described_groups.contains(g) && !carried.contains(g.as_str()) =>
                {
                    stale.push(Warning {
                        location: loc.clone(),
                        message: format!("security group {g} is not in the snapshot (stale reference): the rule matches nothing"),
                    });
                }
                Peer::PrefixList(l)
                    if self
                        .lists
                        .get(l)
                        .is_none_or(|&i| self.policy.prefix_lists[i].cidrs.is_none()) =>
                {
                    stale.push(Warning {
                        location: loc.clone(),
                        message: format!("prefix list {l} has no entries in the snapshot: the rule matches nothing"),
                    });
                }
                _ => {}
            }
        }
        self.warnings.extend(stale);
        for eni in &self.policy.enis {
            for g in &eni.groups {
                if !self.described_groups.contains(g) {
                    self.warnings.push(Warning {
                        location: Location::default(),
                        message: format!("{}: security group {g} has no rules in the snapshot: it allows nothing", eni.id),
                    });
                }
            }
        }
        Ok(Snapshot {
            policy: self.policy,
            warnings: self.warnings,
        })
    }
}

/// The live IPv6 CIDR blocks of an `Ipv6CidrBlockAssociationSet` (VPCs and subnets).
fn ipv6_associations(
    f: &str,
    p: &str,
    set: Option<Vec<raw::Ipv6CidrAssociation>>,
) -> Result<Vec<Ipv6Net>, LoadError> {
    let mut out = Vec::new();
    for (i, a) in set.unwrap_or_default().into_iter().enumerate() {
        if !state_is_live(a.ipv6_cidr_block_state.as_ref()) {
            continue;
        }
        if let Some(c) = a.ipv6_cidr_block {
            out.push(parse_v6(
                f,
                &format!("{p}.Ipv6CidrBlockAssociationSet[{i}].Ipv6CidrBlock"),
                &c,
            )?);
        }
    }
    Ok(out)
}

/// Calls `add` with the JSON path (`Key[i]`) of every item of an optional top-level array.
fn each<T>(
    items: Option<Vec<T>>,
    key: &str,
    mut add: impl FnMut(&str, T) -> Result<(), LoadError>,
) -> Result<(), LoadError> {
    for (i, item) in items.unwrap_or_default().into_iter().enumerate() {
        add(&format!("{key}[{i}]"), item)?;
    }
    Ok(())
}

fn state_is_live(state: Option<&raw::BlockState>) -> bool {
    state
        .and_then(|s| s.state.as_deref())
        .is_none_or(|s| matches!(s, "associated" | "associating"))
}

fn required<T>(f: &str, p: &str, field: &str, v: Option<T>) -> Result<T, LoadError> {
    v.ok_or_else(|| {
        LoadError::at(
            f,
            format!("{p}.{field}"),
            format!("missing required field {field}"),
        )
    })
}

fn timeout(
    f: &str,
    p: &str,
    field: &str,
    v: Option<i64>,
    lo: u32,
    hi: u32,
) -> Result<Option<u32>, LoadError> {
    match v {
        None => Ok(None),
        Some(v) if (i64::from(lo)..=i64::from(hi)).contains(&v) => Ok(Some(v as u32)),
        Some(v) => Err(LoadError::at(
            f,
            format!("{p}.{field}"),
            format!("expected a timeout from {lo} to {hi} seconds, found {v}"),
        )),
    }
}

/// Protocol names and numbers; `None` = all protocols.
fn parse_protocol(f: &str, p: &str, v: &raw::StrOrInt) -> Result<Option<u8>, LoadError> {
    let bad = |found: String| {
        LoadError::at(
            f,
            p,
            format!(
                "expected a protocol name (tcp, udp, icmp, icmpv6, all), a number from 0 to 255 or -1, found {found}"
            ),
        )
    };
    match v {
        raw::StrOrInt::Int(-1) => Ok(None),
        raw::StrOrInt::Int(n) => u8::try_from(*n).map(Some).map_err(|_| bad(n.to_string())),
        raw::StrOrInt::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "-1" | "all" => Ok(None),
            "tcp" => Ok(Some(6)),
            "udp" => Ok(Some(17)),
            "icmp" => Ok(Some(1)),
            "icmpv6" => Ok(Some(58)),
            other => other
                .parse::<u8>()
                .map(Some)
                .map_err(|_| bad(format!("{s:?}"))),
        },
    }
}

/// ICMP type/code: `-1` = all; a type of `-1` needs a code of `-1`.
fn icmp_traffic(
    f: &str,
    p: &str,
    type_name: &str,
    code_name: &str,
    proto: u8,
    icmp_type: Option<i64>,
    code: Option<i64>,
) -> Result<Traffic, LoadError> {
    let field = |name: &str, v: Option<i64>| -> Result<Option<u8>, LoadError> {
        match v {
            None | Some(-1) => Ok(None),
            Some(v @ 0..=255) => Ok(Some(v as u8)),
            Some(v) => Err(LoadError::at(
                f,
                format!("{p}.{name}"),
                format!(
                    "expected an ICMP {} from -1 to 255, found {v}",
                    name.to_ascii_lowercase()
                ),
            )),
        }
    };
    let t = field(type_name, icmp_type)?;
    let c = field(code_name, code)?;
    if t.is_none() && c.is_some() {
        return Err(LoadError::at(
            f,
            format!("{p}.{code_name}"),
            format!(
                "expected {code_name} -1 when {type_name} is -1 (all ICMP types means all codes), found {}",
                c.unwrap_or(0)
            ),
        ));
    }
    Ok(Traffic::Icmp {
        proto,
        icmp_type: t,
        code: c,
    })
}

fn parse_cidr(f: &str, p: &str, s: &str) -> Result<IpNet, LoadError> {
    let net: IpNet = s.trim().parse().map_err(|_| {
        LoadError::at(
            f,
            p,
            format!("expected a CIDR block such as 10.0.0.0/16 or 2001:db8::/56, found {s:?}"),
        )
    })?;
    Ok(net.trunc())
}

fn parse_v4(f: &str, p: &str, s: &str) -> Result<Ipv4Net, LoadError> {
    match parse_cidr(f, p, s)? {
        IpNet::V4(n) => Ok(n),
        IpNet::V6(_) => Err(LoadError::at(
            f,
            p,
            format!("expected an IPv4 CIDR block, found IPv6 {s:?}"),
        )),
    }
}

fn parse_v6(f: &str, p: &str, s: &str) -> Result<Ipv6Net, LoadError> {
    match parse_cidr(f, p, s)? {
        IpNet::V6(n) => Ok(n),
        IpNet::V4(_) => Err(LoadError::at(
            f,
            p,
            format!("expected an IPv6 CIDR block, found IPv4 {s:?}"),
        )),
    }
}

fn parse_addr_v4(f: &str, p: &str, s: &str) -> Result<Ipv4Addr, LoadError> {
    s.trim()
        .parse()
        .map_err(|_| LoadError::at(f, p, format!("expected an IPv4 address, found {s:?}")))
}

/// Turns serde's "invalid type: string "x", expected i64" into "an integer, found …".
pub(crate) fn describe_serde(e: &serde_json::Error) -> String {
    let text = e.to_string();
    // serde_json appends " at line L column C"; the path already says where.
    let text = text.split(" at line ").next().unwrap_or(&text).to_owned();
    match text.split_once(", expected ") {
        Some((found, expected)) => format!(
            "{expected}, found {}",
            found.trim_start_matches("invalid type: ")
        ),
        None => text,
    }
}
