//! [`Algorithm::Tree`](super::Algorithm::Tree): a HyperSplit-style binary decision tree whose
//! leaves are SIMD linear blocks.
//!
//! Every internal node splits its region of the five-dimensional key space in two at one value
//! of one field; a rule that straddles the split point goes to both sides. The split chosen is
//! the one (over all fields and all rule boundaries inside the region) that minimises the
//! larger side. Inside a region, a rule that covers the whole region hides every later rule,
//! so the list is cut after it: this keeps catch-alls and broad rules from being copied all the
//! way down. A node with at most [`LANES`] rules (one block) becomes a leaf, scanned with the
//! kernels of [`super::linear`].
//!
//! A lookup walks about log2(rules / 16) nodes, one compare each, then checks one block. The
//! burst lookup walks up to 32 keys level by level, so their node loads overlap.

use super::linear::{self, Kernel, KeyWords, LANES};
use super::{Addr, BURST, Key, Rule, RuleId, can_match, prefetch};

/// Deepest a tree may grow; a node at this depth becomes a (multi-block) leaf.
const MAX_DEPTH: usize = 40;
/// Leaf lanes allowed per rule (with a floor of 4096) before the build gives up: replication
/// beyond this makes the build slow and the tree large, and tuple hashing wins.
const REPLICATION: usize = 64;
/// `Node::field` of a leaf.
const LEAF: u8 = u8::MAX;

/// An internal node (`field` < 5: go to `child + (value >= point)`) or a leaf (`field ==
/// LEAF`: blocks `child .. child + point` of the block arena).
#[derive(Clone, Copy, Debug)]
struct Node<A: Addr> {
    point: A,
    child: u32,
    field: u8,
}

/// The compiled tree.
#[derive(Clone, Debug)]
pub(crate) struct Tree<A: Addr> {
    nodes: Vec<Node<A>>,
    /// Leaf rule blocks, laid out by [`linear::layout`].
    data: Vec<u32>,
    /// The rule id of every lane of every block (`RuleId::MAX` for padding).
    ids: Vec<RuleId>,
    kernel: Kernel,
}

type Region = [(u128, u128); 5];

/// The five field values of a key, as addresses so that one compare serves every field.
#[inline(always)]
fn values<A: Addr>(k: &Key<A>) -> [A; 5] {
    [
        k.src,
        k.dst,
        A::from_u128(u128::from(k.sport)),
        A::from_u128(u128::from(k.dport)),
        A::from_u128(u128::from(k.proto)),
    ]
}

struct Build<'a, A: Addr> {
    rules: &'a [Rule<A>],
    ranges: Vec<Region>,
    tree: Tree<A>,
    cap: usize,
    /// Leaf lanes left before the build gives up (bounds replication, hence build time).
    slots: usize,
}

impl<A: Addr> Build<'_, A> {
    fn bytes(&self) -> usize {
        self.tree.nodes.len() * size_of::<Node<A>>()
            + (self.tree.data.len() + self.tree.ids.len()) * 4
    }

    fn leaf(&mut self, at: usize, live: &[u32]) -> Result<(), usize> {
        let stride = (4 * linear::words::<A>() + 6) * LANES;
        let first = self.tree.data.len() / stride;
        let blocks = linear::layout(
            live.iter().map(|&i| &self.rules[i as usize]),
            &mut self.tree.data,
        );
        self.slots = self
            .slots
            .checked_sub(blocks * LANES)
            .ok_or_else(|| self.bytes())?;
        self.tree.ids.extend_from_slice(live);
        self.tree.ids.resize((first + blocks) * LANES, RuleId::MAX);
        self.tree.nodes[at] = Node {
            point: A::from_u128(blocks as u128),
            child: first as u32,
            field: LEAF,
        };
        let bytes = self.bytes();
        if bytes > self.cap { Err(bytes) } else { Ok(()) }
    }

    /// The best split of `live` inside `region`: (larger side, field, point).
    fn split(&self, live: &[u32], region: &Region) -> Option<(usize, usize, u128)> {
        let mut best: Option<(usize, usize, usize, u128)> = None;
        let m = live.len();
        for (f, &(rlo, rhi)) in region.iter().enumerate() {
            let mut los: Vec<u128> = live
                .iter()
                .map(|&i| self.ranges[i as usize][f].0.max(rlo))
                .collect();
            let mut his: Vec<u128> = live
                .iter()
                .map(|&i| self.ranges[i as usize][f].1.min(rhi))
                .collect();
            los.sort_unstable();
            his.sort_unstable();
            let mut cands: Vec<u128> = los.iter().copied().filter(|&v| v > rlo).collect();
            cands.extend(his.iter().filter(|&&v| v < rhi).map(|&v| v + 1));
            cands.sort_unstable();
            cands.dedup();
            for p in cands {
                let left = los.partition_point(|&v| v < p);
                let right = m - his.partition_point(|&v| v < p);
                let key = (left.max(right), left + right);
                if best.is_none_or(|b| key < (b.0, b.1)) {
                    best = Some((key.0, key.1, f, p));
                }
            }
        }
        best.map(|(cost, _, f, p)| (cost, f, p))
    }

    fn node(
        &mut self,
        at: usize,
        ids: Vec<u32>,
        region: Region,
        depth: usize,
    ) -> Result<(), usize> {
        let mut live = Vec::with_capacity(ids.len());
        for id in ids {
            live.push(id);
            let r = &self.ranges[id as usize];
            if (0..5).all(|f| r[f].0 <= region[f].0 && region[f].1 <= r[f].1) {
                break;
            }
        }
        if live.len() <= LANES || depth >= MAX_DEPTH {
            return self.leaf(at, &live);
        }
        let Some((cost, f, p)) = self.split(&live, &region).filter(|s| s.0 < live.len()) else {
            return self.leaf(at, &live);
        };
        let _ = cost;
        let child = self.tree.nodes.len();
        let blank = Node {
            point: A::default(),
            child: 0,
            field: LEAF,
        };
        self.tree.nodes.extend([blank, blank]);
        self.tree.nodes[at] = Node {
            point: A::from_u128(p),
            child: child as u32,
            field: f as u8,
        };
        let left: Vec<u32> = live
            .iter()
            .copied()
            .filter(|&i| self.ranges[i as usize][f].0 < p)
            .collect();
        let right: Vec<u32> = live
            .iter()
            .copied()
            .filter(|&i| self.ranges[i as usize][f].1 >= p)
            .collect();
        drop(live);
        let (mut lr, mut rr) = (region, region);
        lr[f].1 = p - 1;
        rr[f].0 = p;
        self.node(child, left, lr, depth + 1)?;
        self.node(child + 1, right, rr, depth + 1)
    }
}

impl<A: Addr> Tree<A> {
    /// Builds the tree; fails with the bytes reached once it would exceed `cap` or, when
    /// `bounded`, once rules are copied into more than [`REPLICATION`] leaf lanes each.
    pub(crate) fn new(rules: &[Rule<A>], cap: usize, bounded: bool) -> Result<Self, usize> {
        Self::with_kernel(rules, cap, bounded, Kernel::detect())
    }

    /// As [`Tree::new`], scanning leaves with `kernel`.
    pub(crate) fn with_kernel(
        rules: &[Rule<A>],
        cap: usize,
        bounded: bool,
        kernel: Kernel,
    ) -> Result<Self, usize> {
        let amax = A::mask(A::BITS).to_u128();
        let ranges = rules
            .iter()
            .map(|r| {
                let addr = |p: super::Prefix<A>| {
                    let lo = p.addr().to_u128();
                    (lo, lo | (amax & !A::mask(p.len()).to_u128()))
                };
                let proto = r.proto.map_or((0, 255), |p| (u128::from(p), u128::from(p)));
                [
                    addr(r.src),
                    addr(r.dst),
                    (u128::from(r.sport.lo), u128::from(r.sport.hi)),
                    (u128::from(r.dport.lo), u128::from(r.dport.hi)),
                    proto,
                ]
            })
            .collect();
        let tree = Tree {
            nodes: Vec::new(),
            data: Vec::new(),
            ids: Vec::new(),
            kernel,
        };
        let slots = if bounded {
            rules.len().saturating_mul(REPLICATION).max(1 << 12)
        } else {
            usize::MAX
        };
        let mut b = Build {
            rules,
            ranges,
            tree,
            cap,
            slots,
        };
        b.tree.nodes.push(Node {
            point: A::default(),
            child: 0,
            field: LEAF,
        });
        let ids = (0..rules.len() as u32)
            .filter(|&i| can_match(&rules[i as usize]))
            .collect();
        let region = [(0, amax), (0, amax), (0, 65535), (0, 65535), (0, 255)];
        b.node(0, ids, region, 0)?;
        let mut tree = b.tree;
        tree.nodes.shrink_to_fit();
        tree.data.shrink_to_fit();
        tree.ids.shrink_to_fit();
        Ok(tree)
    }

    /// Heap bytes held.
    pub(crate) fn memory_usage(&self) -> usize {
        self.nodes.capacity() * size_of::<Node<A>>()
            + (self.data.capacity() + self.ids.capacity()) * 4
    }

    /// The leaf reached by `v`.
    #[inline(always)]
    fn descend(&self, v: &[A; 5]) -> &Node<A> {
        let mut n = &self.nodes[0];
        while n.field != LEAF {
            n = &self.nodes[n.child as usize + usize::from(v[usize::from(n.field)] >= n.point)];
        }
        n
    }

    #[inline(always)]
    fn scan_leaf<const W: usize>(&self, leaf: &Node<A>, k: &KeyWords<W>) -> Option<RuleId> {
        let first = leaf.child as usize;
        let stride = (4 * W + 6) * LANES;
        let lane = linear::scan::<W>(
            self.kernel,
            &self.data[first * stride..],
            leaf.point.to_u128() as usize,
            k,
        )?;
        Some(self.ids[first * LANES + lane as usize])
    }

    /// The lowest-index rule matching `key`.
    #[inline]
    pub(crate) fn first_match(&self, key: &Key<A>) -> Option<RuleId> {
        let leaf = self.descend(&values(key));
        match linear::words::<A>() {
            1 => self.scan_leaf::<1>(leaf, &KeyWords::new(key)),
            _ => self.scan_leaf::<4>(leaf, &KeyWords::new(key)),
        }
    }

    /// First matches of up to [`BURST`] keys, walking the tree one level at a time for all of
    /// them so that their node loads overlap.
    pub(crate) fn first_match_burst(&self, keys: &[Key<A>], out: &mut [Option<RuleId>]) {
        let n = keys.len().min(BURST);
        let mut vals = [[A::default(); 5]; BURST];
        let mut cur = [0u32; BURST];
        for (v, k) in vals.iter_mut().zip(&keys[..n]) {
            *v = values(k);
        }
        loop {
            let mut moved = false;
            for i in 0..n {
                let nd = &self.nodes[cur[i] as usize];
                if nd.field != LEAF {
                    let c = nd.child + u32::from(vals[i][usize::from(nd.field)] >= nd.point);
                    prefetch(self.nodes.as_ptr().wrapping_add(c as usize));
                    cur[i] = c;
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        let stride = (4 * linear::words::<A>() + 6) * LANES;
        for &c in &cur[..n] {
            prefetch(
                self.data
                    .as_ptr()
                    .wrapping_add(self.nodes[c as usize].child as usize * stride),
            );
        }
        for i in 0..n {
            let leaf = &self.nodes[cur[i] as usize];
            out[i] = match linear::words::<A>() {
                1 => self.scan_leaf::<1>(leaf, &KeyWords::new(&keys[i])),
                _ => self.scan_leaf::<4>(leaf, &KeyWords::new(&keys[i])),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::reference::Linear;
    use crate::matcher::synth;

    #[test]
    fn every_kernel_agrees_with_reference() {
        let rules = synth::sg_union(11, 1, 300);
        let keys = synth::keys_for(&rules, 3000, 12);
        let lin = Linear::new(rules.clone());
        for kernel in Kernel::available() {
            let t = Tree::with_kernel(&rules, usize::MAX, true, kernel).unwrap();
            assert!(t.nodes.len() > 8, "the tree splits");
            let mut out = vec![None; BURST];
            for chunk in keys.chunks(BURST) {
                t.first_match_burst(chunk, &mut out);
                for (k, b) in chunk.iter().zip(&out) {
                    assert_eq!(t.first_match(k), lin.first_match(k), "{kernel:?} {k:?}");
                    assert_eq!(*b, lin.first_match(k), "{kernel:?} burst {k:?}");
                }
            }
        }
    }

    #[test]
    fn covering_rule_cuts_the_list_and_cap_is_enforced() {
        let mut rules = vec![Rule::<u32>::any()];
        rules.extend(synth::sg_union(3, 1, 500));
        let t = Tree::new(&rules, usize::MAX, true).unwrap();
        assert_eq!(t.nodes.len(), 1, "everything after a catch-all is dead");
        let rules = synth::sg_union(3, 1, 500);
        let full = Tree::new(&rules, usize::MAX, true).unwrap();
        assert!(Tree::new(&rules, full.memory_usage() / 2, false).is_err());
    }
}
