//! Counters: per-rule hits indexed by a dense rule id, drops by stage and reason, and the
//! snapshot [`Stats`] that [`Firewall::stats`](super::Firewall::stats) returns.

use super::{Reason, Stage};
use crate::compile::{CompiledPolicy, RuleRef};
use crate::conntrack::Direction;
use crate::policy::Policy;

/// A dense numbering of every rule of a policy (NACL entries, implicit NACL denies, security
/// group rules, routes), so that counting a rule is an array increment.
#[derive(Clone, Debug, Default)]
pub(crate) struct RuleIds {
    /// id → rule.
    pub refs: Vec<RuleRef>,
    nacl: Vec<u32>,
    implicit: u32,
    sg: Vec<[u32; 2]>,
    route: Vec<u32>,
}

impl RuleIds {
    pub(crate) fn new(p: &Policy) -> RuleIds {
        let mut ids = RuleIds::default();
        for (n, acl) in p.nacls.iter().enumerate() {
            ids.nacl.push(ids.refs.len() as u32);
            ids.refs
                .extend((0..acl.entries.len()).map(|e| RuleRef::Nacl {
                    nacl: n as u32,
                    entry: e as u32,
                }));
        }
        ids.implicit = ids.refs.len() as u32;
        for n in 0..p.nacls.len() as u32 {
            for egress in [true, false] {
                ids.refs.push(RuleRef::NaclImplicitDeny { nacl: n, egress });
            }
        }
        for (g, sg) in p.security_groups.iter().enumerate() {
            let mut base = [0; 2];
            for (dir, list) in [
                (Direction::Egress, &sg.egress),
                (Direction::Ingress, &sg.ingress),
            ] {
                base[dir as usize] = ids.refs.len() as u32;
                ids.refs.extend((0..list.len()).map(|r| RuleRef::Sg {
                    group: g as u32,
                    dir,
                    rule: r as u32,
                }));
            }
            ids.sg.push(base);
        }
        for (t, table) in p.route_tables.iter().enumerate() {
            ids.route.push(ids.refs.len() as u32);
            ids.refs
                .extend((0..table.routes.len()).map(|r| RuleRef::Route {
                    table: t as u32,
                    route: r as u32,
                }));
        }
        ids
    }

    /// The id of a rule of this policy.
    #[inline]
    pub(crate) fn id(&self, r: RuleRef) -> u32 {
        match r {
            RuleRef::Nacl { nacl, entry } => self.nacl[nacl as usize] + entry,
            RuleRef::NaclImplicitDeny { nacl, egress } => {
                self.implicit + 2 * nacl + u32::from(!egress)
            }
            RuleRef::Sg { group, dir, rule } => self.sg[group as usize][dir as usize] + rule,
            RuleRef::Route { table, route } => self.route[table as usize] + route,
        }
    }

    /// The rule of an id.
    #[inline]
    pub(crate) fn rule(&self, id: u32) -> RuleRef {
        self.refs[id as usize]
    }
}

/// Slots of the drops-by-reason array: the fixed reasons, then one per `wire::Error`.
const FIXED_REASONS: usize = 10;
const REASON_SLOTS: usize = FIXED_REASONS + 23;

fn reason_slot(r: Reason) -> usize {
    match r {
        Reason::None => 0,
        Reason::NoSgRule => 1,
        Reason::NaclDeny => 2,
        Reason::NoNacl => 3,
        Reason::Blackhole => 4,
        Reason::NoRoute => 5,
        Reason::NoRouteTable => 6,
        Reason::Allowance => 7,
        Reason::FragmentWithoutFirst => 8,
        Reason::ByteMatch => 9,
        Reason::Malformed(e) => (FIXED_REASONS + e as usize).min(REASON_SLOTS - 1),
    }
}

/// Hits of one rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hits {
    /// Packets.
    pub packets: u64,
    /// Bytes (the packets' IP lengths).
    pub bytes: u64,
}

/// The engine's running counters (the mutable side of [`Stats`]).
#[derive(Clone, Debug)]
pub(crate) struct Counters {
    pub packets: u64,
    pub accepted: u64,
    pub rejected: [u64; Stage::COUNT],
    /// By reason slot: the reason last counted there, and the count.
    pub reasons: [(Reason, u64); REASON_SLOTS],
    /// By rule id.
    pub hits: Vec<Hits>,
    /// Packets refused because an allowance was exhausted.
    pub exceeded: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            packets: 0,
            accepted: 0,
            rejected: [0; Stage::COUNT],
            reasons: [(Reason::None, 0); REASON_SLOTS],
            hits: Vec::new(),
            exceeded: 0,
        }
    }
}

impl Counters {
    /// Counts a rule hit.
    #[inline]
    pub(crate) fn hit(&mut self, id: u32, len: u32) {
        if let Some(h) = self.hits.get_mut(id as usize) {
            h.packets += 1;
            h.bytes += u64::from(len);
        }
    }

    /// Counts a final decision.
    #[inline]
    pub(crate) fn decided(&mut self, accept: bool, stage: Option<Stage>, reason: Reason) {
        if accept {
            self.accepted += 1;
        } else if let Some(s) = stage {
            self.rejected[s.index()] += 1;
            let slot = &mut self.reasons[reason_slot(reason)];
            slot.0 = reason;
            slot.1 += 1;
        }
    }

    /// Carries per-rule counters over to a new policy: a rule keeps its counts when the new
    /// policy has a rule of the same name ([`CompiledPolicy::rule_name`]); counts of rules
    /// that are gone are dropped.
    pub(crate) fn remap(
        &mut self,
        old: &CompiledPolicy,
        old_ids: &RuleIds,
        new: &CompiledPolicy,
        new_ids: &RuleIds,
    ) {
        let mut hits = vec![Hits::default(); new_ids.refs.len()];
        if self.hits.iter().any(|h| h.packets != 0) {
            let by_name: std::collections::HashMap<String, usize> = new_ids
                .refs
                .iter()
                .enumerate()
                .map(|(i, r)| (new.rule_name(*r), i))
                .collect();
            for (i, h) in self.hits.iter().enumerate() {
                if h.packets == 0 {
                    continue;
                }
                if let Some(&j) = by_name.get(&old.rule_name(old_ids.refs[i])) {
                    hits[j] = *h;
                }
            }
        }
        self.hits = hits;
    }
}

/// A rule and its hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleHits {
    /// The rule (name it with [`CompiledPolicy::rule_name`] or
    /// [`Firewall::rule_name`](super::Firewall::rule_name)).
    pub rule: RuleRef,
    /// Its hits.
    pub hits: Hits,
}

/// Connection-tracking occupancy of one allowance group (instance).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceStats {
    /// The instance id (`Attachment.InstanceId`), or the ENI id of an unattached ENI.
    pub name: String,
    /// Entries stored, including expired ones not yet reclaimed.
    pub stored: u64,
    /// Entries alive at the time of the last packet judged.
    pub live: u64,
    /// The allowance, if any.
    pub allowance: Option<u32>,
    /// `conntrack_allowance_available`: the allowance minus the live entries.
    pub available: Option<u64>,
    /// `conntrack_allowance_exceeded`: packets refused because the allowance was exhausted.
    pub exceeded: u64,
}

/// A consistent snapshot of the engine's counters.
///
/// Every judged packet counts once in `packets` and once in `accepted` or `rejected` (and, when
/// rejected, in `drops`). A rule's [`Hits`] count the packets that rule decided at its step —
/// allowed or denied — whatever the final verdict: the NACL entry that matched first, the
/// security-group rule that allowed a packet without a live entry, the route taken. Passes by
/// connection tracking count no rule.
///
/// Per-rule counters survive a reload for every rule whose name
/// ([`CompiledPolicy::rule_name`]) the new policy still has, and are dropped for the others.
/// Every other counter spans the engine's whole life.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets judged.
    pub packets: u64,
    /// Packets accepted.
    pub accepted: u64,
    /// Packets rejected, by [`Stage::index`].
    pub rejected: [u64; Stage::COUNT],
    /// Rejected packets by reason (reasons with a non-zero count, in a fixed order).
    pub drops: Vec<(Reason, u64)>,
    /// Packets dropped because the allowance was exhausted (the AWS metric name), all
    /// instances together.
    pub conntrack_allowance_exceeded: u64,
    /// The AWS metric `conntrack_allowance_available` of the instance closest to its
    /// allowance (the minimum over instances); `None` without an allowance.
    pub conntrack_allowance_available: Option<u64>,
    /// Per-instance connection-tracking occupancy, by allowance group of the current policy.
    pub instances: Vec<InstanceStats>,
    /// Hits of every rule of the current policy that has any, in a fixed order (NACL entries,
    /// implicit NACL denies, security-group rules, routes).
    pub rules: Vec<RuleHits>,
    /// How many policies the engine has run (1 + successful reloads).
    pub generation: u64,
    /// The payload-inspection counters (per-rule matches, gaps, retransmissions) of the
    /// installed inspector, if any; packets it blocked are also in `rejected` and `drops`
    /// (stage `inspection`, reason [`Reason::ByteMatch`]).
    pub inspection: Option<crate::inspect::Counters>,
}

impl Stats {
    /// The hits of one rule (zero when it has none).
    pub fn rule(&self, r: RuleRef) -> Hits {
        self.rules
            .iter()
            .find(|h| h.rule == r)
            .map_or_else(Hits::default, |h| h.hits)
    }

    /// Drops for one reason.
    pub fn drops_for(&self, r: Reason) -> u64 {
        self.drops
            .iter()
            .find(|(x, _)| *x == r)
            .map_or(0, |(_, n)| *n)
    }
}

impl Counters {
    pub(crate) fn reasons(&self) -> Vec<(Reason, u64)> {
        self.reasons
            .iter()
            .filter(|(_, n)| *n > 0)
            .copied()
            .collect()
    }
}
