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
use super::tuple::TupleMerge;
use super::{Addr, BURST, Key, Rule, RuleId, can_match, prefetch};

/// Deepest a tree may grow; a node at this depth becomes a (multi-block) leaf.
const MAX_DEPTH: usize = 40;
/// Leaf lanes allowed per rule (with a floor of 4096) before the build gives up: replication
/// beyond this makes the build slow and the tree large, and tuple hashing wins.
const REPLICATION: usize = 64;
/// Node arrays up to this size stay in the core's L2 cache: their walks skip the prefetch.
const NODES_IN_CACHE: usize = 256 << 10;
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
    /// Every node; after the build a leaf loops to itself (see [`Tree::finish`]).
    nodes: Vec<Node<A>>,
    /// Per node: `(first block, blocks)` of a leaf, unused for internal nodes.
    leaves: Vec<(u32, u32)>,
    /// The deepest leaf's depth: every walk takes exactly this many steps.
    depth: u32,
    /// The lowest rule id in the tree (`RuleId::MAX` when empty).
    min_id: RuleId,
    /// Leaf rule blocks, laid out by [`linear::layout`].
    data: Vec<u32>,
    /// The rule id of every lane of every block (`RuleId::MAX` for padding).
    ids: Vec<RuleId>,
    kernel: Kernel,
}

type Region = [(u128, u128); 5];

/// Every rule's five fields as inclusive ranges.
fn ranges<A: Addr>(rules: &[Rule<A>]) -> Vec<Region> {
    let amax = A::mask(A::BITS).to_u128();
    rules
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
        .collect()
}

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
    ranges: &'a [Region],
    tree: Tree<A>,
    cap: usize,
    /// Leaf lanes left before the build gives up (bounds replication, hence build time).
    slots: usize,
    /// The fields a node may split on.
    fields: [bool; 5],
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
            if !self.fields[f] {
                continue;
            }
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
    #[cfg(test)]
    pub(crate) fn new(rules: &[Rule<A>], cap: usize, bounded: bool) -> Result<Self, usize> {
        Self::with_kernel(rules, cap, bounded, Kernel::detect())
    }

    /// As [`Tree::new`], scanning leaves with `kernel`.
    #[cfg(test)]
    pub(crate) fn with_kernel(
        rules: &[Rule<A>],
        cap: usize,
        bounded: bool,
        kernel: Kernel,
    ) -> Result<Self, usize> {
        let ranges = ranges(rules);
        let ids: Vec<u32> = (0..rules.len() as u32).collect();
        let slots = if bounded {
            rules.len().saturating_mul(REPLICATION).max(1 << 12)
        } else {
            usize::MAX
        };
        Self::build(rules, &ranges, ids, [true; 5], cap, slots, kernel)
    }

    /// Builds the tree over the rules `ids` (ascending) of `rules`, splitting only on
    /// `fields`, within `cap` bytes and `slots` leaf lanes.
    fn build(
        rules: &[Rule<A>],
        ranges: &[Region],
        ids: Vec<u32>,
        fields: [bool; 5],
        cap: usize,
        slots: usize,
        kernel: Kernel,
    ) -> Result<Self, usize> {
        let amax = A::mask(A::BITS).to_u128();
        let tree = Tree {
            nodes: Vec::new(),
            leaves: Vec::new(),
            depth: 0,
            min_id: ids.first().copied().unwrap_or(RuleId::MAX),
            data: Vec::new(),
            ids: Vec::new(),
            kernel,
        };
        let mut b = Build {
            rules,
            ranges,
            tree,
            cap,
            slots,
            fields,
        };
        b.tree.nodes.push(Node {
            point: A::default(),
            child: 0,
            field: LEAF,
        });
        let ids = ids
            .into_iter()
            .filter(|&i| can_match(&rules[i as usize]))
            .collect();
        let region = [(0, amax), (0, amax), (0, 65535), (0, 65535), (0, 255)];
        b.node(0, ids, region, 0)?;
        let mut tree = b.tree;
        tree.finish();
        tree.nodes.shrink_to_fit();
        tree.data.shrink_to_fit();
        tree.ids.shrink_to_fit();
        Ok(tree)
    }

    /// Turns the built tree into its lookup form: each leaf's blocks move to
    /// [`Tree::leaves`] and the leaf becomes a node that leads to itself (field 4 against
    /// point 0 always takes `child + 1`, and `child` is the leaf's index minus one). A walk
    /// then takes exactly [`Tree::depth`] steps whatever the key, with no data-dependent
    /// branch: keys that reach a shallow leaf spin on it. That trades a few extra loads for
    /// the branch mispredictions of a variable-length walk, and lets the core overlap
    /// consecutive lookups.
    fn finish(&mut self) {
        // Depth of the deepest leaf: an internal node's children come after it, so one
        // pass in index order sees every parent before its children.
        let mut depth = vec![0u32; self.nodes.len()];
        for i in 0..self.nodes.len() {
            if self.nodes[i].field != LEAF {
                let c = self.nodes[i].child as usize;
                depth[c] = depth[i] + 1;
                depth[c + 1] = depth[i] + 1;
            }
        }
        self.depth = depth.into_iter().max().unwrap_or(0);
        self.leaves = vec![(0, 0); self.nodes.len()];
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if n.field == LEAF {
                self.leaves[i] = (n.child, n.point.to_u128() as u32);
                *n = Node {
                    point: A::default(),
                    child: (i as u32).wrapping_sub(1),
                    field: 4,
                };
            }
        }
    }

    /// Heap bytes held.
    pub(crate) fn memory_usage(&self) -> usize {
        self.nodes.capacity() * size_of::<Node<A>>()
            + self.leaves.capacity() * 8
            + (self.data.capacity() + self.ids.capacity()) * 4
    }

    /// One step of a walk from node `at`.
    #[inline(always)]
    fn step(&self, at: u32, v: &[A; 5]) -> u32 {
        let n = &self.nodes[at as usize];
        n.child
            .wrapping_add(u32::from(v[usize::from(n.field)] >= n.point))
    }

    /// The leaf reached by `v`.
    #[inline(always)]
    fn descend(&self, v: &[A; 5]) -> u32 {
        let mut at = 0;
        for _ in 0..self.depth {
            at = self.step(at, v);
        }
        at
    }

    #[inline(always)]
    fn scan_leaf<const W: usize>(&self, leaf: u32, k: &KeyWords<W>) -> Option<RuleId> {
        let (first, blocks) = self.leaves[leaf as usize];
        let first = first as usize;
        let stride = (4 * W + 6) * LANES;
        let lane = linear::scan::<W>(
            self.kernel,
            &self.data[first * stride..],
            blocks as usize,
            k,
        )?;
        Some(self.ids[first * LANES + lane as usize])
    }

    /// The lowest-index rule matching `key`.
    #[cfg(test)]
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
        if self.nodes.len() * size_of::<Node<A>>() <= NODES_IN_CACHE {
            for _ in 0..self.depth {
                for i in 0..n {
                    cur[i] = self.step(cur[i], &vals[i]);
                }
            }
        } else {
            for _ in 0..self.depth {
                for i in 0..n {
                    let c = self.step(cur[i], &vals[i]);
                    prefetch(self.nodes.as_ptr().wrapping_add(c as usize));
                    cur[i] = c;
                }
            }
        }
        // Leaf blocks live in L2 at these sizes, each a few cache lines: fetch every line of a
        // leaf's first block a few keys ahead of its scan.
        const AHEAD: usize = 8;
        for &c in &cur[..n.min(AHEAD)] {
            self.prefetch_leaf(c);
        }
        for i in 0..n {
            if i + AHEAD < n {
                self.prefetch_leaf(cur[i + AHEAD]);
            }
            out[i] = match linear::words::<A>() {
                1 => self.scan_leaf::<1>(cur[i], &KeyWords::new(&keys[i])),
                _ => self.scan_leaf::<4>(cur[i], &KeyWords::new(&keys[i])),
            };
        }
    }

    /// Prefetches every cache line of the first block of leaf `leaf`.
    #[inline(always)]
    fn prefetch_leaf(&self, leaf: u32) {
        let stride = (4 * linear::words::<A>() + 6) * LANES;
        let base = self
            .data
            .as_ptr()
            .wrapping_add(self.leaves[leaf as usize].0 as usize * stride);
        for line in (0..stride).step_by(16) {
            prefetch(base.wrapping_add(line));
        }
    }
}

/// Trees over a partition of the rules: CutSplit's observation that a rule with a wide
/// address field (a short prefix) is what a cut on that field copies, so rules are grouped by
/// which of their two address fields are narrow (prefix of at least half the address bits)
/// and each group's tree splits only on the fields where its rules are narrow (plus ports
/// and protocol). A group whose tree would copy its rules more than [`REPLICATION`] times
/// (typically the few rules wide in both addresses) becomes a TupleMerge table set instead.
/// A lookup visits the members in order of their best rule and stops as soon as the match
/// found beats every rule of the remaining members.
#[derive(Clone, Debug)]
pub(crate) struct Forest<A: Addr> {
    /// Ascending by lowest rule id.
    members: Vec<Member<A>>,
}

#[derive(Clone, Debug)]
enum Member<A: Addr> {
    Tree(Tree<A>),
    /// Tuple-space hashing over `ids` (ascending): its rule `i` is rule `ids[i]`.
    Tuple {
        tables: TupleMerge<A>,
        ids: Vec<RuleId>,
    },
}

impl<A: Addr> Member<A> {
    fn min_id(&self) -> RuleId {
        match self {
            Member::Tree(t) => t.min_id,
            Member::Tuple { ids, .. } => ids[0],
        }
    }

    fn memory_usage(&self) -> usize {
        match self {
            Member::Tree(t) => t.memory_usage(),
            Member::Tuple { tables, ids } => tables.memory_usage() + ids.capacity() * 4,
        }
    }
}

impl<A: Addr> Forest<A> {
    /// Builds one tree (`partition == false`) or one member per address-width group; fails
    /// with the bytes reached once the whole would exceed `cap` or, when `bounded` and not
    /// partitioned, once rules are copied into more than [`REPLICATION`] leaf lanes each.
    /// `bucket_limit` configures the TupleMerge members.
    pub(crate) fn new(
        rules: &[Rule<A>],
        cap: usize,
        bounded: bool,
        partition: bool,
        bucket_limit: usize,
    ) -> Result<Self, usize> {
        Self::with_budget(
            rules,
            cap,
            bounded,
            partition,
            bucket_limit,
            REPLICATION,
            1 << 12,
        )
    }

    /// As [`Forest::new`], with `replication` leaf lanes per rule (at least `floor` per
    /// group) allowed before a group falls back to tuple hashing.
    fn with_budget(
        rules: &[Rule<A>],
        cap: usize,
        bounded: bool,
        partition: bool,
        bucket_limit: usize,
        replication: usize,
        floor: usize,
    ) -> Result<Self, usize> {
        let kernel = Kernel::detect();
        let ranges = ranges(rules);
        let mut groups: [Vec<u32>; 4] = Default::default();
        let narrow = A::BITS / 2;
        for (i, r) in rules.iter().enumerate() {
            let g = if partition {
                usize::from(r.src.len() >= narrow) | usize::from(r.dst.len() >= narrow) << 1
            } else {
                0
            };
            groups[g].push(i as u32);
        }
        {
            // Rules narrow in both addresses separate on either: they join the larger of the
            // two one-narrow groups, saving a member (a walk) per lookup (measured 1.4x on
            // fw1_10k bursts).
            let three = std::mem::take(&mut groups[3]);
            let to = if groups[1].len() >= groups[2].len() {
                1
            } else {
                2
            };
            groups[to].extend(three);
            groups[to].sort_unstable();
        }
        let mut members = Vec::new();
        let mut bytes = 0;
        for (g, ids) in groups.into_iter().enumerate() {
            if ids.is_empty() {
                continue;
            }
            let slots = if bounded || partition {
                ids.len().saturating_mul(replication).max(floor)
            } else {
                usize::MAX
            };
            // Groups 1 (narrow source only) and 2 (narrow destination only) leave the wide
            // address alone; groups 0 and 3 may split anywhere.
            let fields = [g != 2, g != 1, true, true, true];
            let left = cap.saturating_sub(bytes);
            let member = match Tree::build(rules, &ranges, ids.clone(), fields, left, slots, kernel)
            {
                Ok(t) => Member::Tree(t),
                Err(b) if !partition => return Err(b),
                Err(_) => {
                    let subset: Vec<Rule<A>> = ids.iter().map(|&i| rules[i as usize]).collect();
                    Member::Tuple {
                        tables: TupleMerge::new(&subset, bucket_limit),
                        ids,
                    }
                }
            };
            bytes += member.memory_usage();
            if bytes > cap {
                return Err(bytes);
            }
            members.push(member);
        }
        members.sort_by_key(Member::min_id);
        Ok(Forest { members })
    }

    /// Heap bytes held.
    pub(crate) fn memory_usage(&self) -> usize {
        self.members.iter().map(Member::memory_usage).sum::<usize>()
            + self.members.capacity() * size_of::<Member<A>>()
    }

    /// The lowest-index rule matching `key`.
    #[inline]
    pub(crate) fn first_match(&self, key: &Key<A>) -> Option<RuleId> {
        match linear::words::<A>() {
            1 => self.first_match_w::<1>(key),
            _ => self.first_match_w::<4>(key),
        }
    }

    #[inline(always)]
    fn first_match_w<const W: usize>(&self, key: &Key<A>) -> Option<RuleId> {
        let v = values(key);
        let kw = KeyWords::<W>::new(key);
        let mut best: Option<RuleId> = None;
        for m in &self.members {
            if best.is_some_and(|b| b < m.min_id()) {
                break;
            }
            let found = match m {
                Member::Tree(t) => t.scan_leaf::<W>(t.descend(&v), &kw),
                Member::Tuple { tables, ids } => tables.first_match(key).map(|i| ids[i as usize]),
            };
            if let Some(r) = found {
                best = Some(best.map_or(r, |b| b.min(r)));
            }
        }
        best
    }

    /// First matches of up to [`BURST`] keys, member by member.
    pub(crate) fn first_match_burst(&self, keys: &[Key<A>], out: &mut [Option<RuleId>]) {
        let n = keys.len().min(BURST);
        if let [Member::Tree(t)] = &self.members[..] {
            return t.first_match_burst(&keys[..n], &mut out[..n]);
        }
        out[..n].fill(None);
        let mut found = [None; BURST];
        for m in &self.members {
            let min = m.min_id();
            if out[..n].iter().all(|o| o.is_some_and(|b| b < min)) {
                break;
            }
            match m {
                Member::Tree(t) => t.first_match_burst(&keys[..n], &mut found[..n]),
                Member::Tuple { tables, ids } => {
                    for (f, (k, o)) in found.iter_mut().zip(keys[..n].iter().zip(&out[..n])) {
                        *f = if o.is_some_and(|b| b < min) {
                            None
                        } else {
                            tables.first_match(k).map(|i| ids[i as usize])
                        };
                    }
                }
            }
            for (o, f) in out[..n].iter_mut().zip(&found[..n]) {
                if let Some(r) = *f {
                    *o = Some(o.map_or(r, |b| b.min(r)));
                }
            }
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
    fn forests_agree_with_reference() {
        let mut rules = Vec::new();
        let mut rng = synth::Rng::new(5);
        for r in synth::sg_union(21, 1, 400) {
            // Spread the synthetic rules over all four address-width groups.
            let mut r = r;
            r.dst = super::super::Prefix::new(
                rng.next_u64() as u32,
                [0u8, 8, 16, 24, 32][rng.below(5) as usize],
            );
            rules.push(r);
        }
        let keys = synth::keys_for(&rules, 4000, 3);
        let lin = Linear::new(rules.clone());
        // Generous budget: trees everywhere; no budget: every group falls back to tuples.
        for (replication, floor) in [(REPLICATION, 1 << 12), (0, 0)] {
            let f =
                Forest::with_budget(&rules, usize::MAX, true, true, 4, replication, floor).unwrap();
            assert!(f.members.len() >= 3, "{} members", f.members.len());
            let tuples = f
                .members
                .iter()
                .filter(|m| matches!(m, Member::Tuple { .. }))
                .count();
            assert_eq!(tuples > 0, replication == 0);
            let mut out = vec![None; BURST];
            for chunk in keys.chunks(BURST) {
                f.first_match_burst(chunk, &mut out);
                for (k, b) in chunk.iter().zip(&out) {
                    assert_eq!(f.first_match(k), lin.first_match(k), "{k:?}");
                    assert_eq!(*b, lin.first_match(k), "burst {k:?}");
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
