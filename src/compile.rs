//! Compiling a [`Policy`] into what the engine evaluates: per-NACL and per-ENI matchers,
//! address and route lookups, and the facts connection tracking needs (the literal `/0`
//! rules that make flows untracked).
//!
//! This is the only module that sees both the policy and the matcher. Prefix lists and
//! security-group references are expanded here, so a compiled policy is immutable and needs
//! no further lookups on the packet path.

use crate::conntrack::{Direction, Timeouts};
use crate::matcher::{self, Addr, BuildError, Matcher, PortRange, Prefix};
use crate::policy::{Action, Peer, Policy, RouteTarget, Traffic};
use ipnet::IpNet;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Addresses that are never filtered (SPEC §3 step 1), besides each VPC's DNS address.
pub const EXEMPT_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 169, 123),
    Ipv4Addr::new(169, 254, 169, 253),
];
/// IPv6 addresses that are never filtered.
pub const EXEMPT_V6: [Ipv6Addr; 3] = [
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x123),
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x253),
];

/// A policy that cannot be compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError(pub String);

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CompileError {}

/// Default [`CompileLimits::max_rules_per_eni`]: 1M matcher rules for one ENI and direction.
/// AWS caps an ENI at 1,000 security-group rules per direction and family (a prefix-list rule
/// counts as its list's size), so this leaves room for 1,000 rules each referencing a group of
/// 1,000 member addresses, or a few rules referencing groups of ~100K addresses.
pub const DEFAULT_MAX_RULES_PER_ENI: usize = 1_000_000;
/// Default [`CompileLimits::max_total_rules`]: 4M matcher rules over all distinct
/// security-group sets (ENIs with the same groups share one compiled copy).
pub const DEFAULT_MAX_TOTAL_RULES: usize = 4_000_000;

/// Bounds on how far compilation may expand a policy. Security-group references expand to one
/// matcher rule per member address and prefix-list references to one per entry, so a small
/// snapshot (thousands of ENIs in a group that references itself) could otherwise ask for
/// billions of rules. The counts are computed before anything is built; a policy over a limit
/// is refused with a [`CompileError`] naming the ENI, the direction, the largest contributor
/// and the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CompileLimits {
    /// Most matcher rules the security groups of one ENI may expand to in one direction (both
    /// families together).
    pub max_rules_per_eni: usize,
    /// Most matcher rules all security-group sets may expand to together. ENIs carrying the same
    /// list of groups share one compiled copy and count once.
    pub max_total_rules: usize,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_rules_per_eni: DEFAULT_MAX_RULES_PER_ENI,
            max_total_rules: DEFAULT_MAX_TOTAL_RULES,
        }
    }
}

impl From<BuildError> for CompileError {
    fn from(e: BuildError) -> Self {
        CompileError(e.to_string())
    }
}

/// Which NACL entry or security-group rule a matcher rule came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleRef {
    /// Entry `entry` of NACL `nacl` (indices into the policy).
    Nacl {
        /// Index into `Policy::nacls`.
        nacl: u32,
        /// Index into that NACL's `entries`.
        entry: u32,
    },
    /// The implicit final deny of a NACL without a `*` entry for the packet's family.
    NaclImplicitDeny {
        /// Index into `Policy::nacls`.
        nacl: u32,
        /// Which list.
        egress: bool,
    },
    /// Rule `rule` of security group `group`'s `dir` list.
    Sg {
        /// Index into `Policy::security_groups`.
        group: u32,
        /// Which list.
        dir: Direction,
        /// Index into that list.
        rule: u32,
    },
    /// Route `route` of route table `table`.
    Route {
        /// Index into `Policy::route_tables`.
        table: u32,
        /// Index into that table's routes.
        route: u32,
    },
}

/// One family's rules of one list, with where each came from.
#[derive(Clone, Debug)]
pub(crate) struct Family<A: Addr> {
    pub matcher: Matcher<A>,
    /// Origin of each matcher rule (same index); shared by the ENIs that share the matcher.
    pub origin: Arc<[RuleRef]>,
}

impl<A: Addr> Family<A> {
    fn build(rules: Vec<(matcher::Rule<A>, RuleRef)>) -> Result<Self, CompileError> {
        let (rules, origin): (Vec<_>, Vec<_>) = rules.into_iter().unzip();
        Ok(Family {
            matcher: Matcher::build(rules)?,
            origin: origin.into(),
        })
    }
}

/// One direction of a NACL.
#[derive(Clone, Debug)]
pub(crate) struct NaclList {
    pub v4: Family<u32>,
    pub v6: Family<u128>,
    /// Action of each entry, by matcher rule index, per family.
    pub action_v4: Vec<Action>,
    pub action_v6: Vec<Action>,
}

#[derive(Clone, Debug)]
pub(crate) struct CompiledNacl {
    /// [egress, ingress] indexed by `Direction as usize`.
    pub lists: [NaclList; 2],
}

/// One direction of an ENI's security-group union, for one family.
#[derive(Clone, Debug)]
pub(crate) struct SgFamily<A: Addr> {
    /// Every rule of every group.
    pub all: Family<A>,
    /// Only the rules whose peer is the literal `/0` CIDR of the family.
    pub zero: Matcher<A>,
    /// Whether a literal `/0` rule allows all ports of TCP (index 0) and UDP (index 1).
    pub zero_all_ports: [bool; 2],
}

#[derive(Clone, Debug)]
pub(crate) struct SgSide {
    pub v4: SgFamily<u32>,
    pub v6: SgFamily<u128>,
}

#[derive(Clone, Debug)]
pub(crate) struct CompiledEni {
    /// Index into `CompiledPolicy::subnets`.
    pub subnet: u32,
    /// Allowance group: ENIs of one instance share one.
    pub instance: u32,
    pub timeouts: Timeouts,
    /// [egress, ingress].
    pub sg: [SgSide; 2],
}

#[derive(Clone, Debug)]
pub(crate) struct CompiledSubnet {
    /// Index into `CompiledPolicy::nacls`, `None` when neither an association nor a default
    /// NACL exists (every NACL step then denies).
    pub nacl: Option<u32>,
    /// Index into `Policy::route_tables`.
    pub route_table: Option<u32>,
}

/// Routes of one table, longest prefix first.
#[derive(Clone, Debug, Default)]
pub(crate) struct CompiledRoutes {
    pub v4: Vec<(Prefix<u32>, u32)>,
    pub v6: Vec<(Prefix<u128>, u32)>,
}

/// The compiled, immutable form of a policy.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    pub(crate) policy: Policy,
    pub(crate) enis: Vec<CompiledEni>,
    pub(crate) addr_v4: HashMap<u32, u32>,
    pub(crate) addr_v6: HashMap<u128, u32>,
    pub(crate) subnets: Vec<CompiledSubnet>,
    pub(crate) nacls: Vec<CompiledNacl>,
    pub(crate) routes: Vec<CompiledRoutes>,
    pub(crate) exempt_v4: Vec<u32>,
    pub(crate) exempt_v6: Vec<u128>,
    /// Bit `a & 63` of the low byte of every exempt address (either family): a packet whose
    /// addresses miss it is not exempt.
    pub(crate) exempt_filter: u64,
    /// Number of allowance groups (instances).
    pub(crate) instances: u32,
}

pub(crate) fn v4(a: Ipv4Addr) -> u32 {
    u32::from(a)
}

pub(crate) fn v6(a: Ipv6Addr) -> u128 {
    u128::from(a)
}

/// The matcher fields of a rule's traffic: (protocol, source-port field, destination-port field).
fn traffic_fields(t: &Traffic) -> (Option<u8>, PortRange, PortRange) {
    let icmp = |v: Option<u8>| v.map_or(PortRange::ANY, |x| PortRange::exact(u16::from(x)));
    match *t {
        Traffic::All => (None, PortRange::ANY, PortRange::ANY),
        Traffic::Ports { proto, ports } => (
            Some(proto),
            PortRange::ANY,
            PortRange::new(ports.from, ports.to),
        ),
        Traffic::Icmp {
            proto,
            icmp_type,
            code,
        } => (Some(proto), icmp(icmp_type), icmp(code)),
        Traffic::Proto(p) => (Some(p), PortRange::ANY, PortRange::ANY),
    }
}

/// A rule matching `peer` on the side the direction looks at: the source for ingress, the
/// destination for egress.
fn rule_for<A: Addr>(t: &Traffic, peer: Prefix<A>, dir: Direction) -> matcher::Rule<A> {
    let (proto, sport, dport) = traffic_fields(t);
    let (src, dst) = match dir {
        Direction::Ingress => (peer, Prefix::any()),
        Direction::Egress => (Prefix::any(), peer),
    };
    matcher::Rule {
        src,
        dst,
        sport,
        dport,
        proto,
    }
}

fn prefix_v4(n: &ipnet::Ipv4Net) -> Prefix<u32> {
    Prefix::new(v4(n.network()), n.prefix_len())
}

fn prefix_v6(n: &ipnet::Ipv6Net) -> Prefix<u128> {
    Prefix::new(v6(n.network()), n.prefix_len())
}

impl CompiledPolicy {
    /// Compiles `policy` with the default [`CompileLimits`]. Fails when an ENI's subnet is
    /// missing, when security-group expansion exceeds the limits, or when a matcher refuses to
    /// build.
    pub fn compile(policy: Policy) -> Result<CompiledPolicy, CompileError> {
        Self::compile_with(policy, &CompileLimits::default())
    }

    /// Compiles `policy`, refusing expansions beyond `limits` before building them.
    pub fn compile_with(
        policy: Policy,
        limits: &CompileLimits,
    ) -> Result<CompiledPolicy, CompileError> {
        let p = &policy;
        // Addresses of the ENIs carrying each group, for group references.
        let mut members: HashMap<&str, (Vec<u32>, Vec<u128>)> = HashMap::new();
        for eni in &p.enis {
            for g in &eni.groups {
                let m = members.entry(g.as_str()).or_default();
                m.0.extend(eni.private_ipv4.iter().map(|a| v4(*a)));
                m.1.extend(eni.ipv6.iter().map(|a| v6(*a)));
            }
        }
        let lists: HashMap<&str, &[IpNet]> = p
            .prefix_lists
            .iter()
            .filter_map(|l| l.cidrs.as_deref().map(|c| (l.id.as_str(), c)))
            .collect();
        let group_index: HashMap<&str, u32> = p
            .security_groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.id.as_str(), i as u32))
            .collect();

        // NACLs.
        let mut nacls = Vec::with_capacity(p.nacls.len());
        for (ni, n) in p.nacls.iter().enumerate() {
            let list = |egress: bool| -> Result<NaclList, CompileError> {
                let dir = if egress {
                    Direction::Egress
                } else {
                    Direction::Ingress
                };
                let (mut r4, mut r6, mut a4, mut a6) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                // Entries are sorted by rule number already (policy invariant); keep it explicit.
                let mut order: Vec<usize> = (0..n.entries.len())
                    .filter(|&i| n.entries[i].egress == egress)
                    .collect();
                order.sort_by_key(|&i| n.entries[i].rule_number);
                for i in order {
                    let e = &n.entries[i];
                    let origin = RuleRef::Nacl {
                        nacl: ni as u32,
                        entry: i as u32,
                    };
                    match &e.cidr {
                        IpNet::V4(c) => {
                            r4.push((rule_for(&e.traffic, prefix_v4(c), dir), origin));
                            a4.push(e.action);
                        }
                        IpNet::V6(c) => {
                            r6.push((rule_for(&e.traffic, prefix_v6(c), dir), origin));
                            a6.push(e.action);
                        }
                    }
                }
                Ok(NaclList {
                    v4: Family::build(r4)?,
                    v6: Family::build(r6)?,
                    action_v4: a4,
                    action_v6: a6,
                })
            };
            nacls.push(CompiledNacl {
                lists: [list(true)?, list(false)?],
            });
        }

        // Subnets: explicit NACL association, else the VPC's default; explicit route-table
        // association, else the VPC's main table.
        let mut subnet_index: HashMap<&str, u32> = HashMap::new();
        let mut subnets = Vec::with_capacity(p.subnets.len());
        for s in &p.subnets {
            let nacl = p
                .nacls
                .iter()
                .position(|n| n.subnet_ids.contains(&s.id))
                .or_else(|| {
                    p.nacls
                        .iter()
                        .position(|n| n.is_default && n.vpc_id == s.vpc_id)
                })
                .map(|i| i as u32);
            let route_table = p
                .route_tables
                .iter()
                .position(|t| t.subnet_ids.contains(&s.id))
                .or_else(|| {
                    p.route_tables
                        .iter()
                        .position(|t| t.main && t.vpc_id == s.vpc_id)
                })
                .map(|i| i as u32);
            subnet_index.insert(s.id.as_str(), subnets.len() as u32);
            subnets.push(CompiledSubnet { nacl, route_table });
        }

        // Routes, longest prefix first (stable: equal lengths keep table order).
        let routes = p
            .route_tables
            .iter()
            .map(|t| {
                let mut r = CompiledRoutes::default();
                for (i, route) in t.routes.iter().enumerate() {
                    match &route.destination {
                        IpNet::V4(c) => r.v4.push((prefix_v4(c), i as u32)),
                        IpNet::V6(c) => r.v6.push((prefix_v6(c), i as u32)),
                    }
                }
                r.v4.sort_by_key(|(pfx, _)| std::cmp::Reverse(pfx.len()));
                r.v6.sort_by_key(|(pfx, _)| std::cmp::Reverse(pfx.len()));
                r
            })
            .collect();

        // Security-group expansion, counted before anything is built: once per distinct group
        // list and direction (ENIs with the same list share one compiled side).
        let mut distinct: HashSet<(&[String], Direction)> = HashSet::new();
        let mut total_rules = 0usize;
        for eni in &p.enis {
            for dir in [Direction::Egress, Direction::Ingress] {
                if !distinct.insert((eni.groups.as_slice(), dir)) {
                    continue;
                }
                let (n, largest) = expansion(p, &eni.groups, dir, &group_index, &members, &lists);
                let why = |what: String, limit: usize| {
                    let mut m = format!(
                        "{}: the {dir} rules of security groups {} expand to {n} matcher rules{what}, over the limit of {limit}",
                        eni.id,
                        eni.groups.join(", ")
                    );
                    if let Some(l) = &largest {
                        m.push_str(&format!(" (largest: {l})"));
                    }
                    CompileError(m)
                };
                if n > limits.max_rules_per_eni {
                    return Err(why(String::new(), limits.max_rules_per_eni));
                }
                total_rules = total_rules.saturating_add(n);
                if total_rules > limits.max_total_rules {
                    return Err(why(
                        format!(
                            ", bringing the policy's distinct security-group sets to {total_rules}"
                        ),
                        limits.max_total_rules,
                    ));
                }
            }
        }

        // ENIs. Sides are shared by ENIs with the same group list (same rules, same order).
        let mut sides: HashMap<(&[String], Direction), SgSide> = HashMap::new();
        let mut instance_ids: HashMap<&str, u32> = HashMap::new();
        let mut instances = 0u32;
        let mut enis = Vec::with_capacity(p.enis.len());
        let mut addr_v4 = HashMap::new();
        let mut addr_v6 = HashMap::new();
        for (ei, eni) in p.enis.iter().enumerate() {
            let subnet = *subnet_index.get(eni.subnet_id.as_str()).ok_or_else(|| {
                CompileError(format!(
                    "{}: subnet {} is not in the policy",
                    eni.id, eni.subnet_id
                ))
            })?;
            let instance = match &eni.instance_id {
                Some(i) => *instance_ids.entry(i.as_str()).or_insert_with(|| {
                    instances += 1;
                    instances - 1
                }),
                None => {
                    instances += 1;
                    instances - 1
                }
            };
            let d = Timeouts::default();
            let timeouts = Timeouts {
                tcp_established: eni.conntrack.tcp_established.unwrap_or(d.tcp_established),
                udp: eni.conntrack.udp.unwrap_or(d.udp),
                udp_stream: eni.conntrack.udp_stream.unwrap_or(d.udp_stream),
            };
            let side = |dir: Direction| -> Result<SgSide, CompileError> {
                let (mut r4, mut r6) = (Vec::new(), Vec::new());
                let (mut z4, mut z6) = (Vec::new(), Vec::new());
                let (mut all4, mut all6) = ([false; 2], [false; 2]);
                for g in &eni.groups {
                    let Some(&gi) = group_index.get(g.as_str()) else {
                        continue;
                    };
                    let group = &p.security_groups[gi as usize];
                    let rules = match dir {
                        Direction::Egress => &group.egress,
                        Direction::Ingress => &group.ingress,
                    };
                    for (ri, rule) in rules.iter().enumerate() {
                        let origin = RuleRef::Sg {
                            group: gi,
                            dir,
                            rule: ri as u32,
                        };
                        match &rule.peer {
                            Peer::Cidr(IpNet::V4(c)) => {
                                let r = rule_for(&rule.traffic, prefix_v4(c), dir);
                                if c.prefix_len() == 0 {
                                    z4.push(r);
                                    mark_all_ports(&rule.traffic, &mut all4);
                                }
                                r4.push((r, origin));
                            }
                            Peer::Cidr(IpNet::V6(c)) => {
                                let r = rule_for(&rule.traffic, prefix_v6(c), dir);
                                if c.prefix_len() == 0 {
                                    z6.push(r);
                                    mark_all_ports(&rule.traffic, &mut all6);
                                }
                                r6.push((r, origin));
                            }
                            Peer::PrefixList(l) => {
                                for c in lists.get(l.as_str()).copied().unwrap_or_default() {
                                    match c {
                                        IpNet::V4(c) => r4.push((
                                            rule_for(&rule.traffic, prefix_v4(c), dir),
                                            origin,
                                        )),
                                        IpNet::V6(c) => r6.push((
                                            rule_for(&rule.traffic, prefix_v6(c), dir),
                                            origin,
                                        )),
                                    }
                                }
                            }
                            Peer::Group(g) => {
                                if let Some((a4, a6)) = members.get(g.as_str()) {
                                    for &a in a4 {
                                        r4.push((
                                            rule_for(&rule.traffic, Prefix::new(a, 32), dir),
                                            origin,
                                        ));
                                    }
                                    for &a in a6 {
                                        r6.push((
                                            rule_for(&rule.traffic, Prefix::new(a, 128), dir),
                                            origin,
                                        ));
                                    }
                                }
                            }
                        }
                    }
                }
                Ok(SgSide {
                    v4: SgFamily {
                        all: Family::build(r4)?,
                        zero: Matcher::build(z4)?,
                        zero_all_ports: all4,
                    },
                    v6: SgFamily {
                        all: Family::build(r6)?,
                        zero: Matcher::build(z6)?,
                        zero_all_ports: all6,
                    },
                })
            };
            for a in &eni.private_ipv4 {
                addr_v4.insert(v4(*a), ei as u32);
            }
            for a in &eni.ipv6 {
                addr_v6.insert(v6(*a), ei as u32);
            }
            let mut shared = |dir: Direction| -> Result<SgSide, CompileError> {
                if let Some(s) = sides.get(&(eni.groups.as_slice(), dir)) {
                    return Ok(s.clone());
                }
                let s = side(dir)?;
                sides.insert((eni.groups.as_slice(), dir), s.clone());
                Ok(s)
            };
            let sg = [shared(Direction::Egress)?, shared(Direction::Ingress)?];
            enis.push(CompiledEni {
                subnet,
                instance,
                timeouts,
                sg,
            });
        }

        let mut exempt_v4: Vec<u32> = EXEMPT_V4.iter().map(|a| v4(*a)).collect();
        exempt_v4.extend(p.vpcs.iter().filter_map(|v| v.dns_address()).map(v4));
        let exempt_v6: Vec<u128> = EXEMPT_V6.iter().map(|a| v6(*a)).collect();
        let exempt_filter = exempt_v4
            .iter()
            .map(|a| u128::from(*a))
            .chain(exempt_v6.iter().copied())
            .fold(0u64, |f, a| f | 1u64 << (a as u8 & 63));

        Ok(CompiledPolicy {
            enis,
            addr_v4,
            addr_v6,
            subnets,
            nacls,
            routes,
            exempt_v4,
            exempt_v6,
            exempt_filter,
            instances,
            policy,
        })
    }

    /// The policy this was compiled from.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The ENI (index into `Policy::enis`) owning `addr`, if any.
    pub fn eni_of(&self, addr: IpAddr) -> Option<u32> {
        match addr {
            IpAddr::V4(a) => self.addr_v4.get(&v4(a)).copied(),
            IpAddr::V6(a) => self.addr_v6.get(&v6(a)).copied(),
        }
    }

    /// Whether `addr` is never filtered (metadata, time sync, DNS…).
    pub fn is_exempt(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.exempt_v4.contains(&v4(a)),
            IpAddr::V6(a) => self.exempt_v6.contains(&v6(a)),
        }
    }

    /// A stable, readable name for a rule: `acl-…:ingress:140`, `sg-…:egress:3` (or the
    /// `sgr-…` id when the snapshot names the rule), `rtb-…:10.0.99.0/24`.
    pub fn rule_name(&self, r: RuleRef) -> String {
        let p = &self.policy;
        match r {
            RuleRef::Nacl { nacl, entry } => {
                let n = &p.nacls[nacl as usize];
                let e = &n.entries[entry as usize];
                format!(
                    "{}:{}:{}",
                    n.id,
                    if e.egress { "egress" } else { "ingress" },
                    e.rule_number
                )
            }
            RuleRef::NaclImplicitDeny { nacl, egress } => {
                format!(
                    "{}:{}:implicit-deny",
                    p.nacls[nacl as usize].id,
                    if egress { "egress" } else { "ingress" }
                )
            }
            RuleRef::Sg { group, dir, rule } => {
                let g = &p.security_groups[group as usize];
                let list = match dir {
                    Direction::Egress => &g.egress,
                    Direction::Ingress => &g.ingress,
                };
                match &list[rule as usize].id {
                    Some(id) => format!("{}:{dir}:{id}", g.id),
                    None => format!("{}:{dir}:{rule}", g.id),
                }
            }
            RuleRef::Route { table, route } => {
                let t = &p.route_tables[table as usize];
                let r = &t.routes[route as usize];
                let target = match &r.target {
                    RouteTarget::Local => "local",
                    RouteTarget::Gateway(g) => g.as_str(),
                };
                format!("{}:{}:{}", t.id, r.destination, target)
            }
        }
    }
}

/// How many matcher rules the `dir` rules of `groups` expand to (both families), and a
/// description of the rule that contributes most (when it expands to more than one).
fn expansion(
    p: &Policy,
    groups: &[String],
    dir: Direction,
    group_index: &HashMap<&str, u32>,
    members: &HashMap<&str, (Vec<u32>, Vec<u128>)>,
    lists: &HashMap<&str, &[IpNet]>,
) -> (usize, Option<String>) {
    let mut n = 0usize;
    let mut largest: Option<(usize, String)> = None;
    for g in groups {
        let Some(&gi) = group_index.get(g.as_str()) else {
            continue;
        };
        let group = &p.security_groups[gi as usize];
        let rules = match dir {
            Direction::Egress => &group.egress,
            Direction::Ingress => &group.ingress,
        };
        for (ri, rule) in rules.iter().enumerate() {
            let (k, what) = match &rule.peer {
                Peer::Cidr(_) => (1, None),
                Peer::PrefixList(l) => {
                    let k = lists.get(l.as_str()).map_or(0, |c| c.len());
                    (k, Some(format!("prefix list {l}, {k} entries")))
                }
                Peer::Group(r) => {
                    let k = members
                        .get(r.as_str())
                        .map_or(0, |(a, b)| a.len() + b.len());
                    (k, Some(format!("group {r}, {k} member addresses")))
                }
            };
            n = n.saturating_add(k);
            if let Some(what) = what
                && k > 1
                && largest.as_ref().is_none_or(|(m, _)| k > *m)
            {
                largest = Some((k, format!("{} {dir} rule {ri} references {what}", group.id)));
            }
        }
    }
    (n, largest.map(|(_, s)| s))
}

fn mark_all_ports(t: &Traffic, flags: &mut [bool; 2]) {
    match *t {
        Traffic::All => *flags = [true, true],
        Traffic::Ports { proto: 6, ports } if ports.from == 0 && ports.to == u16::MAX => {
            flags[0] = true
        }
        Traffic::Ports { proto: 17, ports } if ports.from == 0 && ports.to == u16::MAX => {
            flags[1] = true
        }
        _ => {}
    }
}
