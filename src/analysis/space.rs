//! Exact set algebra over the header space a NACL or security-group rule sees.
//!
//! A rule matches a box in four dimensions — protocol, peer address, and two 16-bit fields
//! (TCP/UDP destination port, or ICMP type and code) — within one address family. Sets of
//! packets are unions of disjoint boxes ([`Region`]); subtraction splits a box into at most two
//! pieces per dimension, so every answer is exact (nothing is sampled).

use crate::policy::Traffic;
use ipnet::IpNet;

/// Dimension indices.
pub const PROTO: usize = 0;
/// Peer address (IPv4 as its 32-bit value, IPv6 as 128 bits).
pub const ADDR: usize = 1;
/// Destination port, or ICMP type.
pub const X: usize = 2;
/// ICMP code (unused — full — for other protocols).
pub const Y: usize = 3;

/// An axis-aligned box: inclusive bounds per dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HBox {
    /// Lower bounds.
    pub lo: [u128; 4],
    /// Upper bounds (inclusive).
    pub hi: [u128; 4],
}

impl HBox {
    /// The whole space of one family.
    pub fn all(v6: bool) -> HBox {
        HBox {
            lo: [0; 4],
            hi: [255, addr_max(v6), 65535, 65535],
        }
    }

    /// Whether the box contains the point.
    pub fn contains(&self, p: [u128; 4]) -> bool {
        (0..4).all(|d| self.lo[d] <= p[d] && p[d] <= self.hi[d])
    }

    /// The intersection, if not empty.
    pub fn intersect(&self, o: &HBox) -> Option<HBox> {
        let mut r = *self;
        for d in 0..4 {
            r.lo[d] = r.lo[d].max(o.lo[d]);
            r.hi[d] = r.hi[d].min(o.hi[d]);
            if r.lo[d] > r.hi[d] {
                return None;
            }
        }
        Some(r)
    }

    /// `self \ o` as disjoint boxes (at most 8).
    pub fn subtract(&self, o: &HBox) -> Vec<HBox> {
        let Some(i) = self.intersect(o) else {
            return vec![*self];
        };
        let mut out = Vec::new();
        let mut rest = *self;
        for d in 0..4 {
            if rest.lo[d] < i.lo[d] {
                let mut b = rest;
                b.hi[d] = i.lo[d] - 1;
                out.push(b);
            }
            if i.hi[d] < rest.hi[d] {
                let mut b = rest;
                b.lo[d] = i.hi[d] + 1;
                out.push(b);
            }
            rest.lo[d] = i.lo[d];
            rest.hi[d] = i.hi[d];
        }
        out
    }

    /// A point inside the box (its lowest corner).
    pub fn example(&self) -> [u128; 4] {
        self.lo
    }
}

fn addr_max(v6: bool) -> u128 {
    if v6 { u128::MAX } else { u128::from(u32::MAX) }
}

/// A set of packets: a union of disjoint boxes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Region {
    boxes: Vec<HBox>,
}

impl Region {
    /// The empty set.
    pub fn empty() -> Region {
        Region::default()
    }
    /// One box.
    pub fn of(b: HBox) -> Region {
        Region { boxes: vec![b] }
    }
    /// The disjoint boxes.
    pub fn boxes(&self) -> &[HBox] {
        &self.boxes
    }
    /// Whether no packet is in the set.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }
    /// Whether the point is in the set.
    pub fn contains(&self, p: [u128; 4]) -> bool {
        self.boxes.iter().any(|b| b.contains(p))
    }
    /// Removes `b` from the set.
    pub fn subtract_box(&mut self, b: &HBox) {
        self.boxes = self.boxes.iter().flat_map(|x| x.subtract(b)).collect();
    }
    /// Removes every box of `o`.
    pub fn subtract(&mut self, o: &Region) {
        for b in &o.boxes {
            if self.is_empty() {
                break;
            }
            self.subtract_box(b);
        }
    }
    /// Adds `b` (kept disjoint).
    pub fn add_box(&mut self, b: HBox) {
        let mut new = Region::of(b);
        new.subtract(self);
        self.boxes.extend(new.boxes);
    }
    /// Adds every box of `o`.
    pub fn add(&mut self, o: &Region) {
        for b in &o.boxes {
            self.add_box(*b);
        }
    }
    /// The intersection with `o`.
    pub fn intersect(&self, o: &Region) -> Region {
        let mut out = Vec::new();
        for a in &self.boxes {
            for b in &o.boxes {
                if let Some(i) = a.intersect(b) {
                    out.push(i);
                }
            }
        }
        Region { boxes: out }
    }
    /// Whether every packet of `b` is in the set.
    pub fn covers(&self, b: &HBox) -> bool {
        let mut rest = Region::of(*b);
        rest.subtract(self);
        rest.is_empty()
    }
}

/// The protocol and X/Y bounds a rule's traffic matches (the address dimension left full).
pub fn traffic_box(t: &Traffic, v6: bool) -> HBox {
    let mut b = HBox::all(v6);
    let exact = |b: &mut HBox, d: usize, v: u8| {
        b.lo[d] = u128::from(v);
        b.hi[d] = u128::from(v);
    };
    match *t {
        Traffic::All => {}
        Traffic::Ports { proto, ports } => {
            exact(&mut b, PROTO, proto);
            b.lo[X] = u128::from(ports.from);
            b.hi[X] = u128::from(ports.to);
        }
        Traffic::Icmp {
            proto,
            icmp_type,
            code,
        } => {
            exact(&mut b, PROTO, proto);
            if let Some(t) = icmp_type {
                exact(&mut b, X, t);
            }
            if let Some(c) = code {
                exact(&mut b, Y, c);
            }
        }
        Traffic::Proto(p) => exact(&mut b, PROTO, p),
    }
    b
}

/// The box of a rule with traffic `t` and peer CIDR `net` (in `net`'s family).
pub fn rule_box(t: &Traffic, net: &IpNet) -> HBox {
    let v6 = matches!(net, IpNet::V6(_));
    let mut b = traffic_box(t, v6);
    let (lo, hi) = match net {
        IpNet::V4(n) => (
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    };
    b.lo[ADDR] = lo;
    b.hi[ADDR] = hi;
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Boxes in a tiny space (every dimension 0..4) so sets can be enumerated.
    fn small_box() -> impl Strategy<Value = HBox> {
        prop::array::uniform4((0u128..4, 0u128..4)).prop_map(|dims| {
            let mut b = HBox {
                lo: [0; 4],
                hi: [0; 4],
            };
            for (d, (a, c)) in dims.into_iter().enumerate() {
                b.lo[d] = a.min(c);
                b.hi[d] = a.max(c);
            }
            b
        })
    }

    fn points() -> impl Iterator<Item = [u128; 4]> {
        (0..256u128).map(|i| [i & 3, (i >> 2) & 3, (i >> 4) & 3, (i >> 6) & 3])
    }

    proptest! {
        /// Region operations agree with point-by-point set semantics.
        #[test]
        fn region_algebra_matches_enumeration(
            a in prop::collection::vec(small_box(), 0..6),
            b in prop::collection::vec(small_box(), 0..6),
        ) {
            let mut ra = Region::empty();
            a.iter().for_each(|x| ra.add_box(*x));
            let mut rb = Region::empty();
            b.iter().for_each(|x| rb.add_box(*x));
            let in_a = |p: [u128; 4]| a.iter().any(|x| x.contains(p));
            let in_b = |p: [u128; 4]| b.iter().any(|x| x.contains(p));
            let mut diff = ra.clone();
            diff.subtract(&rb);
            let inter = ra.intersect(&rb);
            for p in points() {
                prop_assert_eq!(ra.contains(p), in_a(p));
                prop_assert_eq!(diff.contains(p), in_a(p) && !in_b(p));
                prop_assert_eq!(inter.contains(p), in_a(p) && in_b(p));
            }
            // Boxes stay disjoint.
            for (i, x) in ra.boxes().iter().enumerate() {
                for y in &ra.boxes()[i + 1..] {
                    prop_assert!(x.intersect(y).is_none());
                }
            }
            for x in &b {
                prop_assert_eq!(ra.covers(x), points().filter(|p| x.contains(*p)).all(in_a));
            }
        }
    }
}
