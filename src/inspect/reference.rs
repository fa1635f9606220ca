//! The obviously correct model of inspection, for tests and fuzzing: the stream policy written
//! out with a byte buffer, a naive search of every rule at every end position, and a naive
//! scope test.

use super::{Hit, MAX_SEARCH_LEN, Outcome, RuleAction, RuleId, RuleSet};
use crate::policy::Policy;

/// What the model found in one payload: the fields of [`Outcome`] plus the occurrences counted
/// per rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReferenceOutcome {
    /// The fields [`Outcome`] reports.
    pub outcome: Outcome,
    /// Occurrences counted per rule id (block rules included), in this payload.
    pub matches: Vec<u64>,
}

/// The stream policy, naively: the in-order bytes since the last restart, kept in a buffer.
#[derive(Clone, Debug, Default)]
pub struct ReferenceStream {
    synced: bool,
    next_seq: u32,
    /// The in-order bytes since the last restart (only the last `MAX_SEARCH_LEN` are kept:
    /// no occurrence ending later can reach further back).
    run: Vec<u8>,
    blocked: Option<RuleId>,
}

impl ReferenceStream {
    /// A new, unsynchronised stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// A SYN with sequence number `seq` (ignored once synchronised).
    pub fn syn(&mut self, seq: u32) {
        if !self.synced {
            self.synced = true;
            self.next_seq = seq.wrapping_add(1);
        }
    }

    /// A segment whose first payload byte has sequence number `seq`, judged by the rules
    /// `scope` of `rules`.
    pub fn segment(
        &mut self,
        rules: &RuleSet,
        scope: &[RuleId],
        seq: u32,
        payload: &[u8],
    ) -> ReferenceOutcome {
        let mut r = ReferenceOutcome {
            matches: vec![0; rules.rules.len()],
            ..Default::default()
        };
        if let Some(rule) = self.blocked {
            r.outcome.block = Some(Hit { rule, end: 0 });
            r.outcome.already_blocked = true;
            return r;
        }
        if payload.is_empty() {
            return r;
        }
        if !self.synced {
            self.synced = true;
            self.next_seq = seq;
        }
        // Distance of `seq` from the next expected byte, as a signed 32-bit serial number.
        let ahead = seq.wrapping_sub(self.next_seq);
        let skip = if ahead == 0 {
            0
        } else if ahead < 1 << 31 {
            r.outcome.gap = true;
            self.run.clear();
            self.next_seq = seq;
            0
        } else {
            let behind = (ahead as u64 ^ 0xffff_ffff) + 1; // 2^32 - ahead
            if behind >= payload.len() as u64 {
                r.outcome.retransmission = true;
                return r;
            }
            behind as usize
        };
        let new = &payload[skip..];
        self.next_seq = self.next_seq.wrapping_add(new.len() as u32);
        let before = self.run.len();
        self.run.extend_from_slice(new);
        let block = search(rules, scope, &self.run, before, skip, &mut r);
        if self.run.len() > MAX_SEARCH_LEN {
            self.run.drain(..self.run.len() - MAX_SEARCH_LEN);
        }
        self.blocked = block;
        r
    }
}

/// A datagram on its own.
pub fn reference_datagram(rules: &RuleSet, scope: &[RuleId], payload: &[u8]) -> ReferenceOutcome {
    let mut r = ReferenceOutcome {
        matches: vec![0; rules.rules.len()],
        ..Default::default()
    };
    search(rules, scope, payload, 0, 0, &mut r);
    r
}

/// Every occurrence ending in `text[from..]`, end by end: counts them, stops after the first
/// end with a `block` occurrence. `offset` maps `text[from]` to its payload offset.
fn search(
    rules: &RuleSet,
    scope: &[RuleId],
    text: &[u8],
    from: usize,
    offset: usize,
    r: &mut ReferenceOutcome,
) -> Option<RuleId> {
    let mut ids: Vec<RuleId> = scope.to_vec();
    ids.sort();
    r.outcome.scanned = (text.len() - from) as u32;
    for end in from + 1..=text.len() {
        let mut blocked = None;
        for &id in &ids {
            let rule = &rules.rules[usize::from(id.0)];
            let p = &rule.pattern;
            if p.len() > end {
                continue;
            }
            let window = &text[end - p.len()..end];
            let found = if rule.lowercase {
                window.eq_ignore_ascii_case(p)
            } else {
                window == p.as_slice()
            };
            if !found {
                continue;
            }
            r.matches[usize::from(id.0)] += 1;
            let hit = Hit {
                rule: id,
                end: (end - from + offset) as u32,
            };
            match rule.action {
                RuleAction::Block => {
                    if blocked.is_none() {
                        blocked = Some(hit);
                    }
                }
                RuleAction::Count => {
                    r.outcome.counted += 1;
                    if r.outcome.count.is_none() {
                        r.outcome.count = Some(hit);
                    }
                }
            }
        }
        if let Some(hit) = blocked {
            r.outcome.block = Some(hit);
            r.outcome.scanned = (end - from) as u32;
            return Some(hit.rule);
        }
    }
    None
}

/// The rules whose scope covers a packet, by reading every rule's scope directly.
pub fn reference_scope(
    rules: &RuleSet,
    policy: &Policy,
    proto: u8,
    dport: u16,
    src_eni: Option<u32>,
    dst_eni: Option<u32>,
) -> Vec<RuleId> {
    let at = |r: &super::Rule, eni: Option<u32>| -> bool {
        let Some(e) = eni.and_then(|e| policy.enis.get(e as usize)) else {
            return false;
        };
        let s = &r.scope;
        (s.enis.is_empty() && s.groups.is_empty())
            || s.enis.contains(&e.id)
            || e.groups.iter().any(|g| s.groups.contains(g))
    };
    rules
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            let s = &r.scope;
            s.protocol == proto
                && (s.ports.is_empty() || s.ports.iter().any(|&(f, t)| (f..=t).contains(&dport)))
                && ((s.direction.ingress() && at(r, dst_eni))
                    || (s.direction.egress() && at(r, src_eni)))
        })
        .map(|(i, _)| RuleId(i as u16))
        .collect()
}
