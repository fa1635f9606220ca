//! Payload inspection: byte-match rules that survive TCP segmentation (issue #8).
//!
//! An optional stage after the security-group/NACL decision, in the spirit of AWS WAF's
//! `ByteMatchStatement`: a set of byte patterns, each with an action (`block` or `count`), an
//! optional ASCII case-insensitivity and a scope, compiled once into one Aho-Corasick DFA per
//! *scope class*. For TCP the DFA state lives in a 16-byte [`StreamState`] per direction of a
//! flow (meant to sit in the conntrack entry), so a pattern split across segments is found; a
//! UDP datagram is matched on its own.
//!
//! # The rules file
//!
//! A JSON object with a `ByteMatchRules` array, conventionally `inspection.json` beside (or
//! inside) the snapshot directory. The snapshot loader ignores the unknown top-level key, so the
//! file may live in the snapshot directory itself.
//!
//! ```json
//! {"ByteMatchRules": [
//!   {"Name": "imds-ssrf", "Action": "block",
//!    "SearchString": "169.254.169.254", "PositionalConstraint": "CONTAINS",
//!    "TextTransformations": [{"Priority": 0, "Type": "NONE"}],
//!    "Scope": {"Protocol": "tcp", "DestinationPorts": [{"From": 80, "To": 80}, {"From": 8080, "To": 8080}],
//!              "Direction": "ingress", "GroupIds": ["sg-0e1f2a3b4c5d6c002"]}},
//!   {"Name": "sqli-union", "Action": "count",
//!    "SearchStringBase64": "dW5pb24gc2VsZWN0", "PositionalConstraint": "CONTAINS",
//!    "TextTransformations": "LOWERCASE",
//!    "Scope": {"Protocol": "tcp", "Direction": "both"}}
//! ]}
//! ```
//!
//! | field | meaning |
//! |---|---|
//! | `Name` | required, unique: shown in statistics, verdicts and `explain` |
//! | `Action` | `block` (drop the packet and every later packet of the flow) or `count` |
//! | `SearchString` / `SearchStringBase64` | exactly one: the bytes searched for, 1–200 bytes (text as UTF-8, or standard base64 for binary) |
//! | `PositionalConstraint` | `CONTAINS` (required; the other WAF constraints name positions a byte stream does not have and are rejected) |
//! | `TextTransformations` | optional: `NONE` (default, exact bytes) or `LOWERCASE` (ASCII letters match in either case: the pattern is lowercased when compiled and so is the input); WAF's list form `[{"Priority": 0, "Type": "LOWERCASE"}]` or a bare string |
//! | `Scope.Protocol` | `tcp` or `udp` |
//! | `Scope.DestinationPorts` | optional list of `{"From": p, "To": q}` (inclusive) matched against the *packet's* destination port; absent means every port |
//! | `Scope.Direction` | `ingress` (packets arriving at an ENI: the packet's destination ENI), `egress` (packets leaving an ENI: its source ENI), or `both` |
//! | `Scope.NetworkInterfaceIds`, `Scope.GroupIds` | optional: the rule applies only at the listed ENIs and at ENIs carrying one of the listed security groups; both absent means every ENI. An id not in the snapshot matches nothing (a warning) |
//!
//! Unknown fields are ignored (so WAF's `FieldToMatch` may stay). Any error names the file, the
//! JSON path and what was expected, e.g.
//! `inspection.json: ByteMatchRules[2].PositionalConstraint: expected "CONTAINS" (…), found "STARTS_WITH"`.
//!
//! # Scope classes
//!
//! A packet is in the scope of every rule whose protocol and destination ports cover it and
//! whose direction and ENIs match its source ENI (egress) or destination ENI (ingress). The
//! distinct sets of rules a packet can be in the scope of are the *scope classes*; each gets one
//! DFA (two when it mixes case-sensitive and case-insensitive patterns with letters), so a
//! stream needs one saved state whatever the overlap of the scopes. [`Inspector::scope_of`]
//! rejects a packet outside every scope with a protocol test and one bit test of a per-protocol
//! port bitmap, without touching an automaton.
//!
//! # In the engine
//!
//! [`crate::firewall::Firewall::set_inspector`] installs an inspector; packets the SG/NACL steps
//! accept are then inspected (stage `inspection`). A tracked flow keeps one [`StreamState`] per
//! direction in its connection-tracking entry: at the destination ENI's entry for packets
//! arriving there, else (a destination outside the VPC) at the source ENI's. A `block` match
//! rejects the packet and marks the entry, so every later packet of the flow, both ways, is
//! rejected (stage `inspection`, reason `ByteMatch`) — also after the rules are replaced or
//! removed. A packet without an entry (an untracked flow) is matched on its own, like a UDP
//! datagram. IP fragments are not reassembled: a first fragment's payload is inspected, later
//! fragments take its verdict (SPEC §5).
//!
//! # Stream policy (TCP)
//!
//! A [`StreamState`] follows one direction of one connection:
//! - the SYN (or SYN-ACK) sets the next expected sequence number to ISN + 1
//!   ([`Inspector::tcp_syn`]); a stream first seen mid-connection starts at its first segment;
//! - only in-order bytes advance the automaton: a segment entirely below the next expected
//!   sequence number is a retransmission and is skipped (its bytes were scanned); a segment that
//!   overlaps it is scanned from the first new byte;
//! - a segment starting beyond it (a gap: loss, or reordering) restarts the automaton in its
//!   start state, is counted ([`Counters::gaps`], [`Outcome::gap`]), and scanning resumes at
//!   that segment: a pattern split across the gap is not found;
//! - sequence numbers compare modulo 2^32 (a segment more than 2^31 ahead counts as behind);
//! - a `block` match marks the stream blocked: the rest of the segment is not scanned, and every
//!   later call returns the block at once.
//!
//! Within one call, occurrences are taken in order of their end position; all occurrences
//! ending at or before the first `block` occurrence are counted, later ones are not scanned.
//! UDP: each datagram starts from the start state ([`Inspector::datagram`]).
//!
//! The policy is that of a non-reassembling inspector: a sender that deliberately sends
//! overlapping segments with different contents, or out-of-window data that the receiver drops,
//! can hide a pattern from it. [`Counters::gaps`] shows such streams.

mod reference;
mod rules;
mod scan;

pub use reference::{ReferenceOutcome, ReferenceStream, reference_datagram, reference_scope};
pub(crate) use rules::base64_decode;
pub use rules::{MAX_RULES, MAX_SEARCH_LEN, Rule, RuleAction, RuleScope, RuleSet, ScopeDirection};

use crate::aws::{LoadError, Location, Warning};
use crate::policy::Policy;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// The conventional name of the rules file in a snapshot directory.
pub const RULES_FILE: &str = "inspection.json";

/// Loads and compiles the inspection rules for `policy`: from `file` when given, else from
/// `snapshot_dir/inspection.json` when that exists; `Ok(None)` when there is neither. Returns
/// the compiler's warnings beside the inspector.
pub fn load_for(
    snapshot_dir: &std::path::Path,
    file: Option<&std::path::Path>,
    policy: &Policy,
) -> Result<Option<(Inspector, Vec<Warning>)>, LoadError> {
    let default = snapshot_dir.join(RULES_FILE);
    let path = match file {
        Some(f) => f,
        None if default.is_file() => default.as_path(),
        None => return Ok(None),
    };
    let rules = RuleSet::load(path)?;
    Inspector::compile(&rules, policy).map(Some)
}

/// The index of a rule in its [`RuleSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId(pub u16);

/// A scope class: the set of rules that applies to a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeId(pub u16);

/// One occurrence of a rule's pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The rule.
    pub rule: RuleId,
    /// Offset in the payload passed in, just past the last byte of the occurrence (the
    /// occurrence may have begun in earlier segments).
    pub end: u32,
}

/// What inspecting one segment or datagram found. Allocation-free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The `block` occurrence that ends first in this payload (lowest rule id on a tie): drop
    /// the packet and mark the flow. Also set, with `end` 0, when the stream was blocked by an
    /// earlier segment (`already_blocked`).
    pub block: Option<Hit>,
    /// The stream was blocked before this call; nothing was scanned.
    pub already_blocked: bool,
    /// The first `count` occurrence (by end, then rule id).
    pub count: Option<Hit>,
    /// How many `count` occurrences were counted.
    pub counted: u32,
    /// New bytes scanned.
    pub scanned: u32,
    /// The segment started beyond the next expected byte: the automaton was restarted.
    pub gap: bool,
    /// The segment lay entirely below the next expected byte and was skipped.
    pub retransmission: bool,
}

impl Outcome {
    /// Whether the packet must be dropped.
    pub fn is_block(&self) -> bool {
        self.block.is_some()
    }
}

const SYNCED: u8 = 1;
const BLOCKED: u8 = 2;
const NO_SCOPE: u16 = u16::MAX;

/// The inspection state of one direction of one TCP connection: 16 bytes of plain data, meant to
/// live inside the conntrack entry's value.
///
/// Made by [`Inspector::stream`]; advanced by [`Inspector::tcp_syn`] and
/// [`Inspector::tcp_segment`]. It belongs to the [`Inspector`] that made it: after a reload
/// of the rules, make new states (a state from another compilation is detected when its
/// automaton state is out of range and restarted like a gap, but it could resume in a wrong
/// state of the new automaton).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamState {
    /// Automaton state of each part of the class; `sid[0]` holds the blocking rule once blocked.
    sid: [u32; 2],
    next_seq: u32,
    scope: u16,
    flags: u8,
    /// A tag its owner may use ([`StreamState::tag`]); the inspector never reads it.
    tag: u8,
}

const _: () = assert!(std::mem::size_of::<StreamState>() == 16);

// SAFETY: `StreamState` is `repr(C)` with fields [u32; 2], u32, u16, u8, u8 at offsets 0, 8, 12,
// 14, 15 — 16 bytes, no padding (size asserted above); no pointers or interior mutability; every
// bit pattern is a value (an out-of-range state or scope is detected and handled by the
// `Inspector`), so a byte copy is a valid, equal value.
unsafe impl crate::conntrack::table::Pod for StreamState {}

impl Default for StreamState {
    /// A stream outside every scope.
    fn default() -> Self {
        StreamState {
            sid: [0; 2],
            next_seq: 0,
            scope: NO_SCOPE,
            flags: 0,
            tag: 0,
        }
    }
}

impl StreamState {
    /// The scope class, if the stream is inspected.
    pub fn scope(&self) -> Option<ScopeId> {
        (self.scope != NO_SCOPE).then_some(ScopeId(self.scope))
    }

    /// The rule that blocked the stream, if any.
    pub fn blocked_by(&self) -> Option<RuleId> {
        (self.flags & BLOCKED != 0).then_some(RuleId(self.sid[0] as u16))
    }

    /// The next expected sequence number, once known.
    pub fn next_seq(&self) -> Option<u32> {
        (self.flags & SYNCED != 0).then_some(self.next_seq)
    }

    /// Marks the stream blocked by `rule` (a UDP flow whose datagram matched a `block` rule,
    /// or a flow blocked by its other direction): every later [`Inspector::tcp_segment`]
    /// returns the block at once.
    pub fn mark_blocked(&mut self, rule: RuleId) {
        self.flags |= BLOCKED;
        self.sid[0] = u32::from(rule.0);
    }

    /// The owner's tag (0 in a new state): the engine stores the generation of the rules the
    /// state belongs to, so that a state of earlier rules is never resumed.
    pub fn tag(&self) -> u8 {
        self.tag
    }

    /// Sets the owner's tag.
    pub fn set_tag(&mut self, tag: u8) {
        self.tag = tag;
    }

    /// The 16-byte little-endian encoding (for storage in a flow entry).
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.sid[0].to_le_bytes());
        b[4..8].copy_from_slice(&self.sid[1].to_le_bytes());
        b[8..12].copy_from_slice(&self.next_seq.to_le_bytes());
        b[12..14].copy_from_slice(&self.scope.to_le_bytes());
        b[14] = self.flags;
        b[15] = self.tag;
        b
    }

    /// The state [`StreamState::to_bytes`] encoded. Every byte string decodes to a state;
    /// an out-of-range automaton state or scope is handled by the [`Inspector`].
    pub fn from_bytes(b: &[u8; 16]) -> StreamState {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        StreamState {
            sid: [word(0), word(4)],
            next_seq: word(8),
            scope: u16::from_le_bytes([b[12], b[13]]),
            flags: b[14],
            tag: b[15],
        }
    }

    /// The blocking rule of an encoded state, reading only its flags (for the per-packet check
    /// of a flow's mark).
    #[inline]
    pub fn blocked_in(b: &[u8; 16]) -> Option<RuleId> {
        (b[14] & BLOCKED != 0).then(|| RuleId(u16::from_le_bytes([b[0], b[1]])))
    }
}

/// A compiled rule as the inspector keeps it.
#[derive(Debug)]
struct RuleInfo {
    name: String,
    action: RuleAction,
    matches: AtomicU64,
}

/// Counters since compilation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Per rule, in rule order: name, action, occurrences counted (for `block` rules, the
    /// occurrences that blocked a stream or datagram).
    pub rules: Vec<(String, RuleAction, u64)>,
    /// Segments that started beyond the next expected byte (automaton restarted).
    pub gaps: u64,
    /// Segments skipped as retransmissions.
    pub retransmissions: u64,
}

/// Per protocol: which destination ports some rule covers, and the port classes.
#[derive(Clone, Debug)]
struct PortMap {
    /// One bit per port: some rule of this protocol covers it.
    covered: Vec<u64>,
    /// Sorted starts of the elementary port intervals (the first is 0).
    bounds: Vec<u16>,
    /// Offset of this protocol's cells in `Inspector::cells`.
    offset: usize,
}

/// The compiled inspection stage. Shared by worker threads (`&self` everywhere; counters are
/// relaxed atomics touched only on matches, gaps and retransmissions).
#[derive(Debug)]
pub struct Inspector {
    file: String,
    rules: Vec<RuleInfo>,
    classes: Vec<scan::Class>,
    class_rules: Vec<Vec<RuleId>>,
    ports: [PortMap; 2],
    /// Per ENI (index into `Policy::enis`): its ingress class and egress class (0 = no rule).
    eni_in: Vec<u16>,
    eni_out: Vec<u16>,
    n_in: usize,
    n_out: usize,
    /// (protocol, port class, ingress class, egress class) → scope class or `NO_SCOPE`.
    cells: Vec<u16>,
    gaps: AtomicU64,
    retransmissions: AtomicU64,
}

/// The most cells of the scope table (protocol × port class × ENI classes).
const MAX_CELLS: usize = 1 << 22;

fn bitset(len: usize) -> Vec<u64> {
    vec![0; len.div_ceil(64)]
}

fn set(b: &mut [u64], i: usize) {
    b[i / 64] |= 1 << (i % 64);
}

fn test(b: &[u64], i: usize) -> bool {
    b[i / 64] & (1 << (i % 64)) != 0
}

/// Interns rule sets: the empty set is 0.
fn intern(map: &mut HashMap<Vec<u64>, u16>, list: &mut Vec<Vec<u64>>, s: Vec<u64>) -> Option<u16> {
    if let Some(&id) = map.get(&s) {
        return Some(id);
    }
    let id = u16::try_from(list.len()).ok()?;
    map.insert(s.clone(), id);
    list.push(s);
    Some(id)
}

impl Inspector {
    /// Compiles `rules` against the ENIs of `policy` (for `NetworkInterfaceIds` / `GroupIds`).
    /// Returns the warnings (ids not in the snapshot) beside it.
    pub fn compile(
        rules: &RuleSet,
        policy: &Policy,
    ) -> Result<(Inspector, Vec<Warning>), LoadError> {
        Self::compile_with(rules, policy, scan::Options::default())
    }

    /// As [`Inspector::compile`], choosing the automaton options (for the benchmark).
    #[doc(hidden)]
    pub fn compile_tuned(
        rules: &RuleSet,
        policy: &Policy,
        byte_classes: bool,
        prefilter: bool,
    ) -> Result<(Inspector, Vec<Warning>), LoadError> {
        Self::compile_with(
            rules,
            policy,
            scan::Options {
                byte_classes,
                prefilter,
            },
        )
    }

    fn compile_with(
        set_: &RuleSet,
        policy: &Policy,
        opt: scan::Options,
    ) -> Result<(Inspector, Vec<Warning>), LoadError> {
        let file = set_.file.as_str();
        let fail = |path: &str, message: String| LoadError {
            location: Location {
                file: Some(file.to_owned()),
                path: (!path.is_empty()).then(|| path.to_owned()),
                ..Location::default()
            },
            message,
        };
        let n = set_.rules.len();
        if n > MAX_RULES {
            return Err(fail(
                "ByteMatchRules",
                format!("expected at most {MAX_RULES} rules, found {n}"),
            ));
        }
        let mut warnings = Vec::new();
        // ENIs of each rule (None = every ENI).
        let mut rule_enis: Vec<Option<Vec<bool>>> = Vec::with_capacity(n);
        for r in &set_.rules {
            let s = &r.scope;
            if r.pattern.is_empty() || r.pattern.len() > MAX_SEARCH_LEN {
                return Err(fail(
                    &format!("{}.SearchString", r.path),
                    format!(
                        "expected a search string of 1 to {MAX_SEARCH_LEN} bytes, found {} bytes",
                        r.pattern.len()
                    ),
                ));
            }
            if s.protocol != 6 && s.protocol != 17 {
                return Err(fail(
                    &format!("{}.Scope.Protocol", r.path),
                    format!("expected tcp (6) or udp (17), found {}", s.protocol),
                ));
            }
            if s.enis.is_empty() && s.groups.is_empty() {
                rule_enis.push(None);
                continue;
            }
            let mut warn = |field: &str, i: usize, id: &str, what: &str| {
                warnings.push(Warning {
                    location: Location {
                        file: Some(file.to_owned()),
                        path: Some(format!("{}.Scope.{field}[{i}]", r.path)),
                        ..Location::default()
                    },
                    message: format!("{what} {id} is not in the snapshot: it matches nothing"),
                });
            };
            for (i, id) in s.enis.iter().enumerate() {
                if !policy.enis.iter().any(|e| &e.id == id) {
                    warn("NetworkInterfaceIds", i, id, "ENI");
                }
            }
            for (i, id) in s.groups.iter().enumerate() {
                if !policy.enis.iter().any(|e| e.groups.contains(id)) {
                    warn("GroupIds", i, id, "no ENI carries security group");
                }
            }
            rule_enis.push(Some(
                policy
                    .enis
                    .iter()
                    .map(|e| {
                        s.enis.contains(&e.id) || e.groups.iter().any(|g| s.groups.contains(g))
                    })
                    .collect(),
            ));
        }
        // ENI classes per direction: interned rule sets, 0 = empty (also "not an ENI").
        let eni_classes = |ingress: bool| {
            let mut map = HashMap::new();
            let mut list = Vec::new();
            intern(&mut map, &mut list, bitset(n));
            let mut of = Vec::with_capacity(policy.enis.len());
            for e in 0..policy.enis.len() {
                let mut b = bitset(n);
                for (r, rule) in set_.rules.iter().enumerate() {
                    let d = rule.scope.direction;
                    let dir_ok = if ingress { d.ingress() } else { d.egress() };
                    if dir_ok && rule_enis[r].as_ref().is_none_or(|v| v[e]) {
                        set(&mut b, r);
                    }
                }
                of.push(intern(&mut map, &mut list, b));
            }
            (of, list)
        };
        let (eni_in, in_sets) = eni_classes(true);
        let (eni_out, out_sets) = eni_classes(false);
        let (Some(eni_in), Some(eni_out)) = (
            eni_in.into_iter().collect::<Option<Vec<u16>>>(),
            eni_out.into_iter().collect::<Option<Vec<u16>>>(),
        ) else {
            return Err(fail(
                "",
                "too many distinct ENI scopes (more than 65535)".into(),
            ));
        };
        // Port classes per protocol.
        let mut class_map: HashMap<Vec<u64>, u16> = HashMap::new();
        let mut class_sets: Vec<Vec<u64>> = Vec::new();
        let mut cells = Vec::new();
        let mut ports: Vec<PortMap> = Vec::new();
        for proto in [6u8, 17] {
            let mut covered = vec![0u64; 1024];
            let mut bounds = vec![0u16];
            let ranges = |r: &Rule| -> Vec<(u16, u16)> {
                if r.scope.ports.is_empty() {
                    vec![(0, 65535)]
                } else {
                    r.scope.ports.clone()
                }
            };
            for r in set_.rules.iter().filter(|r| r.scope.protocol == proto) {
                for (from, to) in ranges(r) {
                    bounds.push(from);
                    if to < 65535 {
                        bounds.push(to + 1);
                    }
                    for p in from..=to {
                        set(&mut covered, usize::from(p));
                    }
                }
            }
            bounds.sort_unstable();
            bounds.dedup();
            let offset = cells.len();
            let total = offset + bounds.len() * in_sets.len() * out_sets.len();
            if total > MAX_CELLS {
                return Err(fail(
                    "ByteMatchRules",
                    format!(
                        "the scopes combine into {total} cells (port intervals × ENI classes), more than {MAX_CELLS}: use fewer distinct port ranges or ENI lists"
                    ),
                ));
            }
            for &b in &bounds {
                let mut port_set = bitset(n);
                for (i, r) in set_.rules.iter().enumerate() {
                    if r.scope.protocol == proto
                        && ranges(r).iter().any(|&(f, t)| (f..=t).contains(&b))
                    {
                        set(&mut port_set, i);
                    }
                }
                for ins in &in_sets {
                    for outs in &out_sets {
                        let s: Vec<u64> = port_set
                            .iter()
                            .zip(ins.iter().zip(outs))
                            .map(|(p, (a, b))| p & (a | b))
                            .collect();
                        if s.iter().all(|w| *w == 0) {
                            cells.push(NO_SCOPE);
                            continue;
                        }
                        let id = intern(&mut class_map, &mut class_sets, s)
                            .filter(|&id| id != NO_SCOPE)
                            .ok_or_else(|| fail("", "too many distinct scope classes".into()))?;
                        cells.push(id);
                    }
                }
            }
            ports.push(PortMap {
                covered,
                bounds,
                offset,
            });
        }
        let mut classes = Vec::with_capacity(class_sets.len());
        let mut class_rules = Vec::with_capacity(class_sets.len());
        for s in &class_sets {
            let members: Vec<(u16, &[u8], bool)> = (0..n)
                .filter(|&i| test(s, i))
                .map(|i| {
                    (
                        i as u16,
                        set_.rules[i].pattern.as_slice(),
                        set_.rules[i].lowercase,
                    )
                })
                .collect();
            class_rules.push(members.iter().map(|m| RuleId(m.0)).collect());
            classes.push(scan::Class::build(&members, opt).map_err(|e| fail("ByteMatchRules", e))?);
        }
        let [tcp, udp]: [PortMap; 2] = ports.try_into().expect("two protocols");
        Ok((
            Inspector {
                file: file.to_owned(),
                rules: set_
                    .rules
                    .iter()
                    .map(|r| RuleInfo {
                        name: r.name.clone(),
                        action: r.action,
                        matches: AtomicU64::new(0),
                    })
                    .collect(),
                classes,
                class_rules,
                ports: [tcp, udp],
                eni_in,
                eni_out,
                n_in: in_sets.len(),
                n_out: out_sets.len(),
                cells,
                gaps: AtomicU64::new(0),
                retransmissions: AtomicU64::new(0),
            },
            warnings,
        ))
    }

    /// The rules file this was compiled from.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Number of rules.
    pub fn rules_len(&self) -> usize {
        self.rules.len()
    }

    /// Number of scope classes (automata).
    pub fn scopes_len(&self) -> usize {
        self.classes.len()
    }

    /// A rule's `Name`.
    pub fn rule_name(&self, rule: RuleId) -> &str {
        self.rules
            .get(usize::from(rule.0))
            .map_or("?", |r| r.name.as_str())
    }

    /// A rule's action.
    pub fn rule_action(&self, rule: RuleId) -> Option<RuleAction> {
        self.rules.get(usize::from(rule.0)).map(|r| r.action)
    }

    /// The rules of a scope class, in rule order.
    pub fn scope_rules(&self, scope: ScopeId) -> &[RuleId] {
        self.class_rules
            .get(usize::from(scope.0))
            .map_or(&[], |v| v.as_slice())
    }

    /// Memory of the automata and prefilters, in bytes.
    pub fn memory_usage(&self) -> usize {
        self.classes
            .iter()
            .map(scan::Class::memory_usage)
            .sum::<usize>()
            + self.cells.len() * 2
    }

    /// The scope class of a packet: `proto` (6 or 17), its destination port, and the ENIs it
    /// leaves (`src_eni`) and reaches (`dst_eni`), as indices into `Policy::enis`
    /// ([`crate::compile::CompiledPolicy::eni_of`]). `None`: no rule applies — a protocol test
    /// and one bit test for a port no rule covers.
    #[inline]
    pub fn scope_of(
        &self,
        proto: u8,
        dport: u16,
        src_eni: Option<u32>,
        dst_eni: Option<u32>,
    ) -> Option<ScopeId> {
        let map = match proto {
            6 => &self.ports[0],
            17 => &self.ports[1],
            _ => return None,
        };
        let p = usize::from(dport);
        if map.covered[p / 64] & (1 << (p % 64)) == 0 {
            return None;
        }
        self.scope_slow(map, dport, src_eni, dst_eni)
    }

    #[inline(never)]
    fn scope_slow(
        &self,
        map: &PortMap,
        dport: u16,
        src_eni: Option<u32>,
        dst_eni: Option<u32>,
    ) -> Option<ScopeId> {
        let class = |table: &[u16], e: Option<u32>| {
            e.and_then(|e| table.get(e as usize))
                .map_or(0, |&c| usize::from(c))
        };
        let ic = class(&self.eni_in, dst_eni);
        let oc = class(&self.eni_out, src_eni);
        if ic == 0 && oc == 0 {
            // No rule at either ENI in the packet's direction: no scope, whatever the port.
            return None;
        }
        let pc = map.bounds.partition_point(|&b| b <= dport) - 1;
        let c = self.cells[map.offset + (pc * self.n_in + ic) * self.n_out + oc];
        (c != NO_SCOPE).then_some(ScopeId(c))
    }

    /// A new stream of `scope` (from [`Inspector::scope_of`]; `None` makes a stream that is not
    /// inspected), not yet synchronised to a sequence number.
    pub fn stream(&self, scope: Option<ScopeId>) -> StreamState {
        match scope.and_then(|s| self.classes.get(usize::from(s.0)).map(|c| (s, c))) {
            Some((s, c)) => StreamState {
                sid: c.start(),
                next_seq: 0,
                scope: s.0,
                flags: 0,
                tag: 0,
            },
            None => StreamState::default(),
        }
    }

    /// A SYN (or SYN-ACK) of the stream with sequence number `seq`: the first data byte is
    /// `seq + 1`. Ignored once the stream is synchronised (a later SYN in the same connection
    /// cannot move the stream back).
    pub fn tcp_syn(&self, st: &mut StreamState, seq: u32) {
        if st.flags & SYNCED == 0 {
            st.next_seq = seq.wrapping_add(1);
            st.flags |= SYNCED;
        }
    }

    /// Inspects the payload of a TCP segment with sequence number `seq` (of its first payload
    /// byte) under the stream policy described in the module docs.
    #[inline]
    pub fn tcp_segment(&self, st: &mut StreamState, seq: u32, payload: &[u8]) -> Outcome {
        if st.scope == NO_SCOPE {
            return Outcome::default();
        }
        self.tcp_segment_inspected(st, seq, payload)
    }

    #[inline(never)]
    fn tcp_segment_inspected(&self, st: &mut StreamState, seq: u32, payload: &[u8]) -> Outcome {
        let mut out = Outcome::default();
        if let Some(rule) = st.blocked_by() {
            out.block = Some(Hit { rule, end: 0 });
            out.already_blocked = true;
            return out;
        }
        if payload.is_empty() {
            return out;
        }
        let Some(class) = self.classes.get(usize::from(st.scope)) else {
            *st = StreamState::default();
            return out;
        };
        if st.flags & SYNCED == 0 {
            st.next_seq = seq;
            st.flags |= SYNCED;
        }
        let ahead = seq.wrapping_sub(st.next_seq) as i32;
        let mut skip = 0usize;
        if ahead > 0 || !class.valid(&st.sid) {
            if ahead > 0 {
                out.gap = true;
                self.gaps.fetch_add(1, Ordering::Relaxed);
            }
            st.sid = class.start();
            st.next_seq = seq;
        } else if ahead < 0 {
            let behind = u64::from(ahead.unsigned_abs());
            if behind >= payload.len() as u64 {
                out.retransmission = true;
                self.retransmissions.fetch_add(1, Ordering::Relaxed);
                return out;
            }
            skip = behind as usize;
        }
        let data = &payload[skip..];
        let blocked = self.run(class, &mut st.sid, data, skip, &mut out);
        st.next_seq = st.next_seq.wrapping_add(data.len() as u32);
        if let Some(hit) = blocked {
            st.flags |= BLOCKED;
            st.sid[0] = u32::from(hit.rule.0);
        }
        out
    }

    /// Inspects a UDP datagram (or any payload on its own) of `scope`.
    pub fn datagram(&self, scope: ScopeId, payload: &[u8]) -> Outcome {
        let mut out = Outcome::default();
        if let Some(class) = self.classes.get(usize::from(scope.0)) {
            let mut sid = class.start();
            self.run(class, &mut sid, payload, 0, &mut out);
        }
        out
    }

    /// Scans `data` (which starts `offset` bytes into the payload) and fills `out`.
    fn run(
        &self,
        class: &scan::Class,
        sid: &mut [u32; 2],
        data: &[u8],
        offset: usize,
        out: &mut Outcome,
    ) -> Option<Hit> {
        out.scanned = data.len() as u32;
        let mut block: Option<Hit> = None;
        let mut count: Option<Hit> = None;
        let mut counted = 0u32;
        let stopped = class.scan(sid, data, &mut |rule, end| {
            let Some(info) = self.rules.get(usize::from(rule)) else {
                return false;
            };
            info.matches.fetch_add(1, Ordering::Relaxed);
            let hit = Hit {
                rule: RuleId(rule),
                end: (offset + end) as u32,
            };
            let better =
                |cur: Option<Hit>| cur.is_none_or(|c| (hit.end, hit.rule) < (c.end, c.rule));
            match info.action {
                RuleAction::Block => {
                    if better(block) {
                        block = Some(hit);
                    }
                    true
                }
                RuleAction::Count => {
                    counted += 1;
                    if better(count) {
                        count = Some(hit);
                    }
                    false
                }
            }
        });
        debug_assert_eq!(stopped.is_some(), block.is_some());
        if let Some(end) = stopped {
            out.scanned = end as u32;
        }
        out.block = block;
        out.count = count;
        out.counted = counted;
        block
    }

    /// The counters since compilation.
    pub fn counters(&self) -> Counters {
        Counters {
            rules: self
                .rules
                .iter()
                .map(|r| (r.name.clone(), r.action, r.matches.load(Ordering::Relaxed)))
                .collect(),
            gaps: self.gaps.load(Ordering::Relaxed),
            retransmissions: self.retransmissions.load(Ordering::Relaxed),
        }
    }
}
