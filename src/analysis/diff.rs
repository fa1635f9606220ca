//! `vpcfw diff`: what changes if a new snapshot is applied.
//!
//! For every ordered pair of ENIs (by id, present in both snapshots), every address pair of one
//! family, and for traffic between each ENI and the outside, the exact regions of new-connection
//! traffic (protocol × port or ICMP type/code, and the outside peer's address range) whose verdict
//! changes, each with one concrete example flow and what happens to live connections in it:
//! a security-group change leaves tracked connections running until they idle out (AWS keeps
//! their entries) but cuts untracked ones at once; a NACL or route change applies to every packet
//! at once.
//!
//! A request is allowed when every step of SPEC §3 allows it with no state: the source ENI's
//! egress rules, the source subnet's outbound NACL (across subnets), a non-blackhole route, the
//! destination subnet's inbound NACL and the destination ENI's ingress rules. Exempt addresses
//! are never filtered and are left out.

use super::lint::{nacl_allowed, peer_nets};
use super::space::{ADDR, HBox, PROTO, Region, X, Y, rule_box};
use crate::compile::{EXEMPT_V4, EXEMPT_V6};
use crate::explain::proto_name;
use crate::policy::{Eni, NaclEntry, Peer, Policy, RouteTable, SgRule};
use ipnet::IpNet;
use serde::Serialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::rc::Rc;

/// One region of traffic whose verdict changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Source ENI id, or `outside`.
    pub src: String,
    /// Destination ENI id, or `outside`.
    pub dst: String,
    /// `ACCEPT -> REJECT` or `REJECT -> ACCEPT`.
    pub change: String,
    /// The region: protocol(s), ports or ICMP type/code, and the outside peer's range.
    pub region: String,
    /// One flow inside the region (in `vpcfw explain --flow` syntax).
    pub example: String,
    /// What happens to live connections in the region.
    pub live_connections: String,
    /// The region as bounds (inclusive): protocol, destination port or ICMP type, ICMP code,
    /// and for traffic with the outside the peer's first and last address.
    pub bounds: Bounds,
}

/// The inclusive bounds of a [`Change`]'s region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bounds {
    /// Protocol numbers.
    pub proto: [u8; 2],
    /// Destination port (TCP/UDP; for reply changes, the client's port) or ICMP type.
    pub port_or_type: [u16; 2],
    /// ICMP code.
    pub code: [u16; 2],
    /// The outside peer's address range, for changes between an ENI and the outside.
    pub peer: Option<[IpAddr; 2]>,
}

impl Bounds {
    fn of(b: &HBox, peer_v6: Option<bool>) -> Bounds {
        let addr = |x: u128, v6: bool| {
            if v6 {
                IpAddr::V6(Ipv6Addr::from(x))
            } else {
                IpAddr::V4(Ipv4Addr::from(x as u32))
            }
        };
        Bounds {
            proto: [b.lo[PROTO] as u8, b.hi[PROTO] as u8],
            port_or_type: [b.lo[X] as u16, b.hi[X] as u16],
            code: [b.lo[Y] as u16, b.hi[Y] as u16],
            peer: peer_v6.map(|v6| [addr(b.lo[ADDR], v6), addr(b.hi[ADDR], v6)]),
        }
    }
    /// Whether a packet (protocol, port or type, code, outside peer) lies inside.
    pub fn contains(&self, proto: u8, port_or_type: u16, code: u16, peer: Option<IpAddr>) -> bool {
        let ok = |r: [u16; 2], v: u16| r[0] <= v && v <= r[1];
        let peer_ok = match (self.peer, peer) {
            (None, _) => true,
            (Some([lo, hi]), Some(p)) => match (lo, hi, p) {
                (IpAddr::V4(lo), IpAddr::V4(hi), IpAddr::V4(p)) => lo <= p && p <= hi,
                (IpAddr::V6(lo), IpAddr::V6(hi), IpAddr::V6(p)) => lo <= p && p <= hi,
                _ => false,
            },
            (Some(_), None) => false,
        };
        self.proto[0] <= proto
            && proto <= self.proto[1]
            && ok(self.port_or_type, port_or_type)
            && ok(self.code, code)
            && peer_ok
    }
}

/// The components of the SPEC §3 path that a change can come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Sg,
    Stateless,
}

/// Per-snapshot lookups, memoised (each is asked for many ENI pairs).
struct View<'a> {
    p: &'a Policy,
    enis: HashMap<&'a str, &'a Eni>,
    sg: Memo<Side, Rc<Vec<HBox>>>,
    nacl: Memo<Side, Option<Rc<NaclView>>>,
    routes: Memo<(String, bool), Rc<RouteView>>,
}

/// A memo table.
type Memo<K, V> = RefCell<HashMap<K, V>>;
/// (ENI or subnet id, egress, IPv6).
type Side = (String, bool, bool);
/// The destinations a subnet routes, and its routes as (destination box, blackhole).
type RouteView = (Region, Vec<(HBox, bool)>);

/// One NACL list: its entries as (rule number, deny?, box), and the region it allows.
struct NaclView {
    entries: Vec<(u32, bool, HBox)>,
    allowed: Region,
}

impl<'a> View<'a> {
    fn new(p: &'a Policy) -> Self {
        View {
            p,
            enis: p.enis.iter().map(|e| (e.id.as_str(), e)).collect(),
            sg: RefCell::default(),
            nacl: RefCell::default(),
            routes: RefCell::default(),
        }
    }

    fn vpc_of(&self, subnet: &str) -> Option<&'a str> {
        self.p
            .subnets
            .iter()
            .find(|s| s.id == subnet)
            .map(|s| s.vpc_id.as_str())
    }

    fn nacl_entries(&self, subnet: &str, egress: bool, v6: bool) -> Option<Vec<&'a NaclEntry>> {
        let vpc = self.vpc_of(subnet);
        let n = self
            .p
            .nacls
            .iter()
            .find(|n| n.subnet_ids.iter().any(|s| s == subnet))
            .or_else(|| {
                self.p
                    .nacls
                    .iter()
                    .find(|n| n.is_default && Some(n.vpc_id.as_str()) == vpc)
            })?;
        let mut l: Vec<&NaclEntry> = n
            .entries
            .iter()
            .filter(|e| e.egress == egress && e.cidr.addr().is_ipv6() == v6)
            .collect();
        l.sort_by_key(|e| e.rule_number);
        Some(l)
    }

    fn route_table(&self, subnet: &str) -> Option<&'a RouteTable> {
        let vpc = self.vpc_of(subnet);
        self.p
            .route_tables
            .iter()
            .find(|t| t.subnet_ids.iter().any(|s| s == subnet))
            .or_else(|| {
                self.p
                    .route_tables
                    .iter()
                    .find(|t| t.main && Some(t.vpc_id.as_str()) == vpc)
            })
    }

    /// The security-group rules of one direction of an ENI, as raw boxes (peer in ADDR).
    fn compute_sg_boxes(&self, eni: &Eni, egress: bool, v6: bool) -> Vec<HBox> {
        let mut out = Vec::new();
        for g in &eni.groups {
            let Some(group) = self.p.security_groups.iter().find(|x| x.id == *g) else {
                continue;
            };
            let list: &Vec<SgRule> = if egress {
                &group.egress
            } else {
                &group.ingress
            };
            for r in list {
                for net in peer_nets(self.p, &r.peer) {
                    if net.addr().is_ipv6() == v6 {
                        out.push(rule_box(&r.traffic, &net));
                    }
                }
            }
        }
        out
    }

    /// Destination addresses the subnet's routes deliver (longest prefix, blackholes removed).
    fn compute_routed(&self, subnet: &str, v6: bool) -> Region {
        let Some(t) = self.route_table(subnet) else {
            return Region::empty();
        };
        let mut routes: Vec<_> = t
            .routes
            .iter()
            .filter(|r| r.destination.addr().is_ipv6() == v6)
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.destination.prefix_len()));
        let mut seen = Region::empty();
        let mut ok = Region::empty();
        for r in routes {
            let b = addr_box(&r.destination, v6);
            if !r.blackhole {
                let mut new = Region::of(b);
                new.subtract(&seen);
                ok.add(&new);
            }
            seen.add_box(b);
        }
        ok
    }

    /// The security-group rules of one direction of an ENI as raw boxes (memoised).
    fn sg_boxes(&self, eni: &Eni, egress: bool, v6: bool) -> Rc<Vec<HBox>> {
        let key = (eni.id.clone(), egress, v6);
        if let Some(b) = self.sg.borrow().get(&key) {
            return Rc::clone(b);
        }
        let b = Rc::new(self.compute_sg_boxes(eni, egress, v6));
        self.sg.borrow_mut().insert(key, Rc::clone(&b));
        b
    }

    fn nacl_view(&self, subnet: &str, egress: bool, v6: bool) -> Option<Rc<NaclView>> {
        let key = (subnet.to_owned(), egress, v6);
        if let Some(n) = self.nacl.borrow().get(&key) {
            return n.clone();
        }
        let n = self.nacl_entries(subnet, egress, v6).map(|l| {
            Rc::new(NaclView {
                entries: l
                    .iter()
                    .map(|e| {
                        (
                            e.rule_number,
                            e.action == crate::policy::Action::Deny,
                            rule_box(&e.traffic, &e.cidr),
                        )
                    })
                    .collect(),
                allowed: nacl_allowed(&l),
            })
        });
        self.nacl.borrow_mut().insert(key, n.clone());
        n
    }

    /// The region a subnet's NACL list allows (`None`: the subnet has no NACL).
    fn nacl_allowed(&self, subnet: &str, egress: bool, v6: bool) -> Option<Region> {
        self.nacl_view(subnet, egress, v6)
            .map(|n| n.allowed.clone())
    }

    /// The boxes of the NACL entries that differ from `other`'s (number, action or match).
    fn nacl_boxes(&self, subnet: &str, egress: bool, v6: bool) -> Option<Vec<(u32, bool, HBox)>> {
        self.nacl_view(subnet, egress, v6)
            .map(|n| n.entries.clone())
    }

    fn route_view(&self, subnet: &str, v6: bool) -> Rc<RouteView> {
        let key = (subnet.to_owned(), v6);
        if let Some(r) = self.routes.borrow().get(&key) {
            return Rc::clone(r);
        }
        let list = self
            .route_table(subnet)
            .map(|t| {
                t.routes
                    .iter()
                    .filter(|r| r.destination.addr().is_ipv6() == v6)
                    .map(|r| (addr_box(&r.destination, v6), r.blackhole))
                    .collect()
            })
            .unwrap_or_default();
        let r = Rc::new((self.compute_routed(subnet, v6), list));
        self.routes.borrow_mut().insert(key, Rc::clone(&r));
        r
    }

    /// Destination addresses the subnet's routes deliver.
    fn routed(&self, subnet: &str, v6: bool) -> Region {
        self.route_view(subnet, v6).0.clone()
    }

    /// Whether a packet from the subnet to `d` is routed (not blackholed, a route exists).
    fn routes_to(&self, subnet: &str, d: IpAddr) -> bool {
        let v = addr_value(d);
        self.route_view(subnet, d.is_ipv6())
            .0
            .boxes()
            .iter()
            .any(|b| b.lo[ADDR] <= v && v <= b.hi[ADDR])
    }

    /// The routes as (destination box, blackhole).
    fn route_boxes(&self, subnet: &str, v6: bool) -> Vec<(HBox, bool)> {
        self.route_view(subnet, v6).1.clone()
    }

    /// Whether the ENI has a literal /0 both ways for the protocol (flows would be untracked).
    fn untracked_possible(&self, eni: &Eni, v6: bool) -> bool {
        let zero = |r: &SgRule| matches!(&r.peer, Peer::Cidr(n) if n.prefix_len() == 0 && n.addr().is_ipv6() == v6);
        let groups: Vec<_> = eni
            .groups
            .iter()
            .filter_map(|g| self.p.security_groups.iter().find(|x| x.id == *g))
            .collect();
        groups.iter().any(|g| g.ingress.iter().any(zero))
            && groups.iter().any(|g| g.egress.iter().any(zero))
    }
}

fn addr_box(net: &IpNet, v6: bool) -> HBox {
    let mut b = HBox::all(v6);
    let r = rule_box(&crate::policy::Traffic::All, net);
    b.lo[ADDR] = r.lo[ADDR];
    b.hi[ADDR] = r.hi[ADDR];
    b
}

fn addr_value(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn point_box(v6: bool) -> HBox {
    let mut b = HBox::all(v6);
    b.lo[ADDR] = 0;
    b.hi[ADDR] = 0;
    b
}

/// Projected boxes (ADDR collapsed to 0) of `boxes` that contain `addr`, clipped to `within`.
fn at_within(boxes: &[HBox], addr: u128, within: &Region) -> Region {
    let mut r = Region::empty();
    for b in boxes
        .iter()
        .filter(|b| b.lo[ADDR] <= addr && addr <= b.hi[ADDR])
    {
        let mut b = *b;
        b.lo[ADDR] = 0;
        b.hi[ADDR] = 0;
        for w in within.boxes() {
            if let Some(i) = b.intersect(w) {
                r.add_box(i);
            }
        }
    }
    r
}

/// The allowed request region between two fixed addresses, within `within` (ADDR collapsed),
/// split into the security-group part and the stateless (NACL + route) part.
fn pair_allowed(
    v: &View,
    a: &Eni,
    s: IpAddr,
    b: &Eni,
    d: IpAddr,
    within: &Region,
) -> (Region, Region) {
    let v6 = s.is_ipv6();
    let (sv, dv) = (addr_value(s), addr_value(d));
    let sg = at_within(&v.sg_boxes(a, true, v6), dv, within).intersect(&at_within(
        &v.sg_boxes(b, false, v6),
        sv,
        within,
    ));
    let mut stateless = within.clone();
    if a.subnet_id != b.subnet_id {
        let out = v
            .nacl_allowed(&a.subnet_id, true, v6)
            .map(|r| at_within(r.boxes(), dv, within))
            .unwrap_or_default();
        let inn = v
            .nacl_allowed(&b.subnet_id, false, v6)
            .map(|r| at_within(r.boxes(), sv, within))
            .unwrap_or_default();
        stateless = out.intersect(&inn);
    }
    if !v.routes_to(&a.subnet_id, d) {
        stateless = Region::empty();
    }
    (sg, stateless)
}

/// Items in one list and not the other (multiset difference both ways), by `key`.
fn changed<T: Copy, K: Ord>(old: &[T], new: &[T], key: impl Fn(&T) -> K) -> Vec<T> {
    let (mut a, mut b) = (old.to_vec(), new.to_vec());
    a.sort_by_key(&key);
    b.sort_by_key(&key);
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    loop {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => match key(x).cmp(&key(y)) {
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Less => {
                    out.push(*x);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    out.push(*y);
                    j += 1;
                }
            },
            (Some(x), None) => {
                out.push(*x);
                i += 1;
            }
            (None, Some(y)) => {
                out.push(*y);
                j += 1;
            }
            (None, None) => return out,
        }
    }
}

fn changed_boxes(old: &[HBox], new: &[HBox]) -> Vec<HBox> {
    changed(old, new, |b| (b.lo, b.hi))
}

fn changed_entries(old: &[(u32, bool, HBox)], new: &[(u32, bool, HBox)]) -> Vec<HBox> {
    changed(old, new, |(n, deny, b)| (*n, *deny, b.lo, b.hi))
        .into_iter()
        .map(|e| e.2)
        .collect()
}

fn changed_routes(old: &[(HBox, bool)], new: &[(HBox, bool)]) -> Vec<HBox> {
    changed(old, new, |(b, blackhole)| (b.lo, b.hi, *blackhole))
        .into_iter()
        .map(|r| r.0)
        .collect()
}

/// What differs between the snapshots, per ENI side and per NACL list, computed once.
#[derive(Default)]
struct Changes {
    sg: HashMap<Side, Vec<HBox>>,
    /// `None`: the list exists in one snapshot only.
    nacl: HashMap<Side, Option<Vec<HBox>>>,
}

impl Changes {
    fn sg(
        &self,
        vo: &View,
        vn: &View,
        (ao, an): (&Eni, &Eni),
        egress: bool,
        v6: bool,
    ) -> Vec<HBox> {
        match self.sg.get(&(ao.id.clone(), egress, v6)) {
            Some(c) => c.clone(),
            None => changed_boxes(&vo.sg_boxes(ao, egress, v6), &vn.sg_boxes(an, egress, v6)),
        }
    }
    fn nacl(
        &self,
        vo: &View,
        vn: &View,
        subnet: &str,
        egress: bool,
        v6: bool,
    ) -> Option<Vec<HBox>> {
        match self.nacl.get(&(subnet.to_owned(), egress, v6)) {
            Some(c) => c.clone(),
            None => match (
                vo.nacl_boxes(subnet, egress, v6),
                vn.nacl_boxes(subnet, egress, v6),
            ) {
                (Some(x), Some(y)) => Some(changed_entries(&x, &y)),
                (None, None) => Some(Vec::new()),
                _ => None,
            },
        }
    }
    fn precompute(vo: &View, vn: &View, common: &[(&Eni, &Eni)]) -> Changes {
        let mut c = Changes::default();
        for &(ao, an) in common {
            for egress in [false, true] {
                for v6 in [false, true] {
                    let sg = c.sg(vo, vn, (ao, an), egress, v6);
                    c.sg.insert((ao.id.clone(), egress, v6), sg);
                    let key = (ao.subnet_id.clone(), egress, v6);
                    if !c.nacl.contains_key(&key) {
                        let n = c.nacl(vo, vn, &ao.subnet_id, egress, v6);
                        c.nacl.insert(key, n);
                    }
                }
            }
        }
        c
    }
}

/// Adds the boxes of `changed` that contain `addr`, projected (ADDR collapsed), to `c`.
fn add_at(c: &mut Region, changed: &[HBox], addr: u128) {
    for b in changed
        .iter()
        .filter(|b| b.lo[ADDR] <= addr && addr <= b.hi[ADDR])
    {
        let mut b = *b;
        b.lo[ADDR] = 0;
        b.hi[ADDR] = 0;
        c.add_box(b);
    }
}

/// Where a request between two fixed addresses can change verdict: inside the boxes of the
/// rules, entries and routes that differ between the snapshots (outside them every component
/// matches the same rules in both). Empty when nothing on the path changed.
fn pair_candidates(
    ch: &Changes,
    vo: &View,
    vn: &View,
    (ao, an): (&Eni, &Eni),
    (bo, bn): (&Eni, &Eni),
    s: IpAddr,
    d: IpAddr,
) -> Region {
    let v6 = s.is_ipv6();
    let (sv, dv) = (addr_value(s), addr_value(d));
    let everything = Region::of(point_box(v6));
    if ao.subnet_id != an.subnet_id
        || bo.subnet_id != bn.subnet_id
        || vo.routes_to(&ao.subnet_id, d) != vn.routes_to(&an.subnet_id, d)
    {
        return everything;
    }
    let mut c = Region::empty();
    add_at(&mut c, &ch.sg(vo, vn, (ao, an), true, v6), dv);
    add_at(&mut c, &ch.sg(vo, vn, (bo, bn), false, v6), sv);
    if ao.subnet_id != bo.subnet_id {
        for (subnet, egress, addr) in [(&ao.subnet_id, true, dv), (&bo.subnet_id, false, sv)] {
            match ch.nacl(vo, vn, subnet, egress, v6) {
                Some(x) => add_at(&mut c, &x, addr),
                None => return everything,
            }
        }
    }
    c
}

/// Replies of connections allowed under the old snapshot: their path back (NACLs and routes;
/// the security groups admit them by state) is checked on the clients' possible ports. A reply
/// region that becomes rejected cuts the live connections at once.
fn replies(
    ch: &Changes,
    vo: &View,
    vn: &View,
    (ao, bo): (&Eni, &Eni),
    (an, bn): (&Eni, &Eni),
    (s, d): (IpAddr, IpAddr),
    out: &mut Vec<Change>,
) {
    let v6 = s.is_ipv6();
    // Where the reply path can differ: changed NACL entries and routes on it.
    let everything = Region::of(point_box(v6));
    let mut c = Region::empty();
    if ao.subnet_id != an.subnet_id
        || bo.subnet_id != bn.subnet_id
        || vo.routes_to(&bo.subnet_id, s) != vn.routes_to(&bn.subnet_id, s)
    {
        c = everything.clone();
    } else if ao.subnet_id != bo.subnet_id {
        for (subnet, egress, addr) in [
            (&bo.subnet_id, true, addr_value(s)),
            (&ao.subnet_id, false, addr_value(d)),
        ] {
            match ch.nacl(vo, vn, subnet, egress, v6) {
                Some(x) => add_at(&mut c, &x, addr),
                None => c = everything.clone(),
            }
        }
    }
    if c.is_empty() {
        return;
    }
    for (proto, name) in [(6u128, "tcp"), (17u128, "udp")] {
        let mut p = point_box(v6);
        p.lo[PROTO] = proto;
        p.hi[PROTO] = proto;
        let only = Region::of(p);
        // A service of this protocol that old connections may use.
        let (sg, stateless) = pair_allowed(vo, ao, s, bo, d, &only);
        let Some(service) = sg.intersect(&stateless).boxes().first().copied() else {
            continue;
        };
        let within = c.intersect(&only);
        let back_old = pair_allowed(vo, bo, d, ao, s, &within).1;
        let back_new = pair_allowed(vn, bn, d, an, s, &within).1;
        let mut cut = back_old;
        cut.subtract(&back_new);
        for b in Region::from_boxes(cut.boxes()).boxes() {
            let service_port = service.lo[X];
            out.push(Change {
                src: bo.id.clone(),
                dst: ao.id.clone(),
                change: "ACCEPT -> REJECT (replies)".to_owned(),
                region: format!("{name} to client ports {}", range(b.lo[X], b.hi[X])),
                example: example_flow_ports(name, (d, service_port), (s, b.lo[X])),
                live_connections: format!(
                    "cut at once: replies of {} -> {} connections (e.g. {name} port {service_port}) are now dropped by a NACL or route",
                    ao.id, bo.id
                ),
                bounds: Bounds::of(b, None),
            });
        }
    }
}

fn example_flow_ports(name: &str, (s, sp): (IpAddr, u128), (d, dp): (IpAddr, u128)) -> String {
    let ep = |a: IpAddr, port: u128| match a {
        IpAddr::V4(_) => format!("{a}:{port}"),
        IpAddr::V6(_) => format!("[{a}]:{port}"),
    };
    format!("{name} {} -> {}", ep(s, sp), ep(d, dp))
}

/// Addresses that are not "outside": every ENI address of either snapshot and the exempt ones.
fn not_outside(views: [&View; 2], v6: bool) -> Region {
    let mut r = Region::empty();
    let mut add = |a: IpAddr| {
        if a.is_ipv6() == v6 {
            let mut b = HBox::all(v6);
            b.lo[ADDR] = addr_value(a);
            b.hi[ADDR] = addr_value(a);
            r.add_box(b);
        }
    };
    for v in views {
        v.p.enis
            .iter()
            .flat_map(|e| e.addresses())
            .for_each(&mut add);
        v.p.vpcs
            .iter()
            .filter_map(|x| x.dns_address())
            .for_each(|a| add(IpAddr::V4(a)));
    }
    EXEMPT_V4.iter().for_each(|a| add(IpAddr::V4(*a)));
    EXEMPT_V6.iter().for_each(|a| add(IpAddr::V6(*a)));
    r
}

/// Allowed requests between an ENI and the outside (peer in ADDR) within `within`, split as in
/// [`pair_allowed`].
fn outside_allowed(
    v: &View,
    e: &Eni,
    inbound: bool,
    v6: bool,
    within: &Region,
) -> (Region, Region) {
    let mut sg = Region::empty();
    for b in v.sg_boxes(e, !inbound, v6).iter() {
        for w in within.boxes() {
            if let Some(i) = b.intersect(w) {
                sg.add_box(i);
            }
        }
    }
    let mut stateless = v
        .nacl_allowed(&e.subnet_id, !inbound, v6)
        .map(|r| r.intersect(within))
        .unwrap_or_default();
    if !inbound {
        stateless = stateless.intersect(&v.routed(&e.subnet_id, v6));
    }
    (sg, stateless)
}

/// Where traffic between an ENI and the outside can change verdict (see [`pair_candidates`]).
fn outside_candidates(vo: &View, vn: &View, ao: &Eni, an: &Eni, inbound: bool, v6: bool) -> Region {
    if ao.subnet_id != an.subnet_id {
        return Region::of(HBox::all(v6));
    }
    let mut c = Region::empty();
    changed_boxes(
        &vo.sg_boxes(ao, !inbound, v6),
        &vn.sg_boxes(an, !inbound, v6),
    )
    .into_iter()
    .for_each(|b| c.add_box(b));
    match (
        vo.nacl_boxes(&ao.subnet_id, !inbound, v6),
        vn.nacl_boxes(&an.subnet_id, !inbound, v6),
    ) {
        (Some(x), Some(y)) => changed_entries(&x, &y)
            .into_iter()
            .for_each(|b| c.add_box(b)),
        (None, None) => {}
        _ => return Region::of(HBox::all(v6)),
    }
    if !inbound {
        changed_routes(
            &vo.route_boxes(&ao.subnet_id, v6),
            &vn.route_boxes(&an.subnet_id, v6),
        )
        .into_iter()
        .for_each(|b| c.add_box(b));
    }
    c
}

/// Computes every change between `old` and `new`.
pub fn diff(old: &Policy, new: &Policy) -> Vec<Change> {
    let (vo, vn) = (View::new(old), View::new(new));
    let mut out = Vec::new();
    let common: Vec<(&Eni, &Eni)> = old
        .enis
        .iter()
        .filter_map(|e| vn.enis.get(e.id.as_str()).map(|n| (e, *n)))
        .collect();
    let ch = Changes::precompute(&vo, &vn, &common);
    for &(ao, an) in &common {
        for &(bo, bn) in &common {
            if ao.id == bo.id {
                continue;
            }
            for s in ao.addresses().filter(|s| an.addresses().any(|x| x == *s)) {
                for d in bo
                    .addresses()
                    .filter(|d| d.is_ipv6() == s.is_ipv6() && bn.addresses().any(|x| x == *d))
                {
                    replies(&ch, &vo, &vn, (ao, bo), (an, bn), (s, d), &mut out);
                    let within = pair_candidates(&ch, &vo, &vn, (ao, an), (bo, bn), s, d);
                    if within.is_empty() {
                        continue;
                    }
                    let before = pair_allowed(&vo, ao, s, bo, d, &within);
                    let after = pair_allowed(&vn, an, s, bn, d, &within);
                    let untracked = vo.untracked_possible(ao, s.is_ipv6())
                        || vo.untracked_possible(bo, s.is_ipv6());
                    report(
                        &ao.id,
                        &bo.id,
                        Some(s),
                        Some(d),
                        before,
                        after,
                        untracked,
                        &mut out,
                    );
                }
            }
        }
        for v6 in [false, true] {
            let skip = not_outside([&vo, &vn], v6);
            for inbound in [true, false] {
                let mut within = outside_candidates(&vo, &vn, ao, an, inbound, v6);
                within.subtract(&skip);
                if within.is_empty() {
                    continue;
                }
                let before = outside_allowed(&vo, ao, inbound, v6, &within);
                let after = outside_allowed(&vn, an, inbound, v6, &within);
                let untracked = vo.untracked_possible(ao, v6);
                let own = an.addresses().find(|a| a.is_ipv6() == v6);
                let Some(own) = own else { continue };
                if inbound {
                    report_outside(
                        "outside", &ao.id, own, true, before, after, untracked, &mut out,
                    );
                } else {
                    report_outside(
                        &ao.id, "outside", own, false, before, after, untracked, &mut out,
                    );
                }
            }
        }
    }
    out
}

impl Region {
    fn from_boxes(boxes: &[HBox]) -> Region {
        let mut r = Region::empty();
        boxes.iter().for_each(|b| r.add_box(*b));
        r
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    src: &str,
    dst: &str,
    s: Option<IpAddr>,
    d: Option<IpAddr>,
    before: (Region, Region),
    after: (Region, Region),
    untracked: bool,
    out: &mut Vec<Change>,
) {
    let (sa, da) = (s.expect("pair"), d.expect("pair"));
    let flow = |b: &HBox| example_flow(b, sa, da);
    emit(src, dst, before, after, untracked, &flow, None, out);
}

#[allow(clippy::too_many_arguments)]
fn report_outside(
    src: &str,
    dst: &str,
    own: IpAddr,
    inbound: bool,
    before: (Region, Region),
    after: (Region, Region),
    untracked: bool,
    out: &mut Vec<Change>,
) {
    let v6 = own.is_ipv6();
    let peer = |b: &HBox| -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::from(b.lo[ADDR]))
        } else {
            IpAddr::V4(Ipv4Addr::from(b.lo[ADDR] as u32))
        }
    };
    let flow = |b: &HBox| {
        if inbound {
            example_flow(b, peer(b), own)
        } else {
            example_flow(b, own, peer(b))
        }
    };
    emit(src, dst, before, after, untracked, &flow, Some(v6), out);
}

#[allow(clippy::too_many_arguments)]
fn emit(
    src: &str,
    dst: &str,
    before: (Region, Region),
    after: (Region, Region),
    untracked: bool,
    flow: &dyn Fn(&HBox) -> String,
    peer_v6: Option<bool>,
    out: &mut Vec<Change>,
) {
    let total = |r: &(Region, Region)| r.0.intersect(&r.1);
    let (old, new) = (total(&before), total(&after));
    for (from, to, verb) in [
        (&old, &new, "ACCEPT -> REJECT"),
        (&new, &old, "REJECT -> ACCEPT"),
    ] {
        let mut changed = from.clone();
        changed.subtract(to);
        let changed = Region::from_boxes(changed.boxes());
        for b in changed.boxes().iter().filter_map(real_values) {
            let b = &b;
            let live = if verb == "REJECT -> ACCEPT" {
                "newly allowed".to_owned()
            } else {
                // Which part rejects now: the security groups alone, or NACLs/routes?
                let part = if after.1.covers(b) {
                    Part::Sg
                } else {
                    Part::Stateless
                };
                match (part, untracked) {
                    (Part::Sg, false) => "survive: tracked connections keep their entries until they idle out; new ones are rejected".to_owned(),
                    (Part::Sg, true) => "tracked connections survive; untracked ones (literal /0 rules both ways) are cut at once".to_owned(),
                    (Part::Stateless, _) => "cut at once: a NACL or route change applies to every packet".to_owned(),
                }
            };
            out.push(Change {
                src: src.to_owned(),
                dst: dst.to_owned(),
                change: verb.to_owned(),
                region: region_text(b, peer_v6),
                example: flow(b),
                live_connections: live,
                bounds: Bounds::of(b, peer_v6),
            });
        }
    }
}

/// ICMP types and codes are 8-bit: clip a single-protocol ICMP box to them (`None` if nothing
/// real is left).
fn real_values(b: &HBox) -> Option<HBox> {
    let mut b = *b;
    if b.lo[PROTO] == b.hi[PROTO] && matches!(b.lo[PROTO], 1 | 58) {
        for d in [X, Y] {
            if b.lo[d] > 255 {
                return None;
            }
            b.hi[d] = b.hi[d].min(255);
        }
    }
    Some(b)
}

fn range(lo: u128, hi: u128) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

fn region_text(b: &HBox, peer_v6: Option<bool>) -> String {
    let mut s = if b.lo[PROTO] == b.hi[PROTO] {
        proto_name(b.lo[PROTO] as u8)
    } else if b.lo[PROTO] == 0 && b.hi[PROTO] == 255 {
        "all protocols".into()
    } else {
        format!("protocols {}", range(b.lo[PROTO], b.hi[PROTO]))
    };
    if b.lo[PROTO] == b.hi[PROTO] {
        match b.lo[PROTO] {
            6 | 17 => s.push_str(&format!(" ports {}", range(b.lo[X], b.hi[X]))),
            1 | 58 => {
                if !(b.lo[X] == 0 && b.hi[X] >= 255) {
                    s.push_str(&format!(" type {}", range(b.lo[X], b.hi[X].min(255))));
                }
                if !(b.lo[Y] == 0 && b.hi[Y] >= 255) {
                    s.push_str(&format!(" code {}", range(b.lo[Y], b.hi[Y].min(255))));
                }
            }
            _ => {}
        }
    }
    if let Some(v6) = peer_v6 {
        let a = |x: u128| {
            if v6 {
                Ipv6Addr::from(x).to_string()
            } else {
                Ipv4Addr::from(x as u32).to_string()
            }
        };
        let full = if v6 { u128::MAX } else { u128::from(u32::MAX) };
        if b.lo[ADDR] == 0 && b.hi[ADDR] == full {
            s.push_str(", any peer");
        } else {
            s.push_str(&format!(", peers {} - {}", a(b.lo[ADDR]), a(b.hi[ADDR])));
        }
    }
    s
}

fn example_flow(b: &HBox, s: IpAddr, d: IpAddr) -> String {
    let ep = |a: IpAddr, port: u128| match a {
        IpAddr::V4(_) => format!("{a}:{port}"),
        IpAddr::V6(_) => format!("[{a}]:{port}"),
    };
    let proto = b.lo[PROTO];
    match proto {
        6 | 17 => format!(
            "{} {} -> {}",
            proto_name(proto as u8),
            ep(s, 40000),
            ep(d, b.lo[X])
        ),
        1 | 58 => format!(
            "{} {s} -> {d} type {} code {}",
            proto_name(proto as u8),
            b.lo[X].min(255),
            b.lo[Y].min(255)
        ),
        p => format!("{p} {s} -> {d}"),
    }
}
