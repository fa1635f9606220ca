//! The engine's connection-tracking state: one [`Table`] per allowance group (instance), the
//! plain-old-data flow value stored in it, and how liveness is judged (zone → current ENI →
//! timeouts).
//!
//! # Keying
//!
//! Every table is keyed by [`FlowKeyV6`] (44 bytes). IPv4 flows use IPv4-mapped addresses
//! (`::ffff:a.b.c.d`) and a family bit in the key's kind byte, so that an IPv4 and an IPv6 flow
//! can never share a key. One table per instance therefore counts both families, and its exact
//! live count *is* the allowance check: an insert that returns [`Insert::Full`] at the
//! allowance is a `conntrack-allowance` drop.
//!
//! # Capacity
//!
//! A table starts at [`INITIAL_CAPACITY`] entries (or the allowance, if smaller) and, when an
//! insert finds it full below the allowance (or with no allowance at all), the engine moves its
//! entries into a table twice the size (capped at the allowance). The engine owns its state
//! exclusively (`&mut self`), so the move needs no coordination; it is off the common path.
//!
//! # Expiry
//!
//! Entries that are not alive are absent for every operation. The engine sweeps a small slice
//! of one table every [`SWEEP_EVERY`] packets (round robin over the tables), and sweeps a whole
//! table when an insert at the allowance finds it full, since SPEC §4 says that any expired
//! entry frees its slot. That full sweep also records the earliest deadline of the live entries
//! (lowered by every later refresh), so a flood against a full table costs one comparison per
//! refused packet until an entry can actually have expired.

use crate::compile::CompiledPolicy;
#[cfg(test)]
use crate::conntrack::Tracking;
use crate::conntrack::table::{FlowKeyV6, Insert, Liveness, Pod, Table};
use crate::conntrack::{Direction, Entry, FlowKey, FlowState, TcpState, Time, Timeouts};
use crate::inspect::{RuleId, StreamState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Entries a table holds at first (or the allowance, if smaller).
pub const INITIAL_CAPACITY: usize = 256;
/// Packets between two incremental sweep steps.
pub const SWEEP_EVERY: u32 = 256;
/// Slots examined by one incremental sweep step.
pub const SWEEP_BUDGET: usize = 128;

/// Bytes of the flow value that hold payload-inspection state: one 16-byte
/// [`crate::inspect::StreamState`] per direction of the packet at the entry's ENI (arriving,
/// leaving). Zero in a new entry.
pub const EXTENSION_BYTES: usize = 32;

/// Stream slot of packets arriving at the entry's ENI.
pub(crate) const STREAM_ARRIVING: usize = 0;
/// Stream slot of packets leaving the entry's ENI.
pub(crate) const STREAM_LEAVING: usize = 1;

/// No rule (in a cached path).
pub(crate) const NO_RULE: u32 = u32::MAX;

/// The cached result of SPEC §3 steps 3–5 for one direction of a flow: an outcome code
/// ([`super::path`]) and the dense ids of the NACL-egress, route and NACL-ingress rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PathResult {
    /// 0: not cached; see `super::PATH_*`.
    pub outcome: u8,
    /// [nacl-egress, route, nacl-ingress] rule ids, [`NO_RULE`] where none.
    pub rules: [u32; 3],
}

impl PathResult {
    pub(crate) const NONE: PathResult = PathResult {
        outcome: 0,
        rules: [NO_RULE; 3],
    };
}

/// The value stored per tracked flow: 72 bytes (9 words), no padding.
///
/// `path` caches, per direction of the packet at this ENI ([`Direction`] index), the outcome
/// of the NACL and route steps for the flow, valid while `generation` equals the engine's
/// policy generation (bumped by every reload). `ext` holds the payload-inspection streams
/// ([`EXTENSION_BYTES`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flow {
    /// `Entry::last_seen`, nanoseconds.
    pub last_seen: u64,
    /// Policy generation the cached paths belong to.
    pub generation: u32,
    /// `FlowState` code (see [`state_code`]).
    pub state: u8,
    /// `Entry::origin` as a `Direction` index.
    pub origin: u8,
    /// Outcome code of each direction's cached path (0: none).
    pub outcome: [u8; 2],
    /// Rule ids of each direction's cached path.
    pub rules: [[u32; 3]; 2],
    /// Payload-inspection streams ([`EXTENSION_BYTES`]).
    pub ext: [u8; EXTENSION_BYTES],
}

const _: () = assert!(std::mem::size_of::<Flow>() == 72);

// SAFETY: `repr(C)` with fields at offsets 0 (u64), 8 (u32), 12, 13 (u8), 14 ([u8; 2]),
// 16 ([[u32; 3]; 2], 24 bytes) and 40 ([u8; 32]), ending at 72, a multiple of the alignment
// (8): no padding (the size assertion above checks the arithmetic). Every field is an integer
// or an array of integers, so every bit pattern is a value and equality is bytewise.
unsafe impl Pod for Flow {}

fn dir_index(d: Direction) -> u8 {
    d as u8
}

fn dir_of(i: u8) -> Direction {
    if i == 0 {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

/// A one-byte code for a [`FlowState`].
pub(crate) fn state_code(s: FlowState) -> u8 {
    match s {
        FlowState::Tcp(TcpState::SynSent) => 1,
        FlowState::Tcp(TcpState::SynRecv) => 2,
        FlowState::Tcp(TcpState::Established) => 3,
        FlowState::Tcp(TcpState::FinWait { first_fin }) => 4 + dir_index(first_fin),
        FlowState::Tcp(TcpState::TimeWait) => 6,
        FlowState::Tcp(TcpState::Close) => 7,
        FlowState::Udp { transactions, last } => 8 + transactions.min(2) * 2 + dir_index(last),
        FlowState::IcmpQuery => 14,
        FlowState::Other => 15,
    }
}

/// The [`FlowState`] of a code written by [`state_code`].
pub(crate) fn state_of(c: u8) -> FlowState {
    match c {
        1 => FlowState::Tcp(TcpState::SynSent),
        2 => FlowState::Tcp(TcpState::SynRecv),
        3 => FlowState::Tcp(TcpState::Established),
        4 | 5 => FlowState::Tcp(TcpState::FinWait {
            first_fin: dir_of(c - 4),
        }),
        6 => FlowState::Tcp(TcpState::TimeWait),
        7 => FlowState::Tcp(TcpState::Close),
        8..=13 => FlowState::Udp {
            transactions: (c - 8) / 2,
            last: dir_of((c - 8) % 2),
        },
        14 => FlowState::IcmpQuery,
        _ => FlowState::Other,
    }
}

impl Flow {
    /// A new flow value for `entry`, with `path` cached for direction `dir` (if cached).
    pub(crate) fn new(entry: &Entry, generation: u32, dir: Direction, path: PathResult) -> Flow {
        let mut f = Flow {
            last_seen: 0,
            generation,
            state: 0,
            origin: 0,
            outcome: [0; 2],
            rules: [[NO_RULE; 3]; 2],
            ext: [0; EXTENSION_BYTES],
        };
        f.set_entry(entry);
        f.set_path(generation, dir, path);
        f
    }

    /// The connection-tracking entry.
    #[inline]
    pub(crate) fn entry(&self) -> Entry {
        Entry {
            state: state_of(self.state),
            origin: dir_of(self.origin),
            last_seen: Time(self.last_seen),
        }
    }

    /// Stores `e` (state, origin, last seen); the cached paths are kept.
    #[inline]
    pub(crate) fn set_entry(&mut self, e: &Entry) {
        self.state = state_code(e.state);
        self.origin = dir_index(e.origin);
        self.last_seen = e.last_seen.0;
    }

    /// The cached path of direction `dir`, if it belongs to policy generation `generation`.
    #[inline]
    pub(crate) fn path(&self, generation: u32, dir: Direction) -> Option<PathResult> {
        let d = dir as usize;
        (self.generation == generation && self.outcome[d] != 0).then(|| PathResult {
            outcome: self.outcome[d],
            rules: self.rules[d],
        })
    }

    /// Caches `path` for direction `dir` under `generation` (forgetting the other direction's
    /// path if it belongs to another generation).
    #[inline]
    pub(crate) fn set_path(&mut self, generation: u32, dir: Direction, path: PathResult) {
        if self.generation != generation {
            self.generation = generation;
            self.outcome = [0; 2];
        }
        let d = dir as usize;
        self.outcome[d] = path.outcome;
        self.rules[d] = path.rules;
    }

    /// The inspection stream of `slot` ([`STREAM_ARRIVING`] or [`STREAM_LEAVING`]).
    #[inline]
    pub(crate) fn stream(&self, slot: usize) -> StreamState {
        StreamState::from_bytes(
            self.ext[slot * 16..slot * 16 + 16]
                .try_into()
                .expect("16 bytes"),
        )
    }

    /// Stores the inspection stream of `slot`.
    #[inline]
    pub(crate) fn set_stream(&mut self, slot: usize, s: &StreamState) {
        self.ext[slot * 16..slot * 16 + 16].copy_from_slice(&s.to_bytes());
    }

    /// The byte-match rule that blocked the flow (either direction), if one did.
    #[inline]
    pub(crate) fn blocked(&self) -> Option<RuleId> {
        let half =
            |i: usize| -> &[u8; 16] { self.ext[i * 16..i * 16 + 16].try_into().expect("16 bytes") };
        StreamState::blocked_in(half(0)).or_else(|| StreamState::blocked_in(half(1)))
    }

    /// When the entry stops being alive under `t`.
    #[inline]
    pub(crate) fn deadline(&self, t: &Timeouts) -> u64 {
        Time(self.last_seen)
            .plus_secs(state_of(self.state).timeout(t))
            .0
    }
}

/// Kind byte of a table key: ICMP query kind (0 none, 1 echo, 2 timestamp, 3 ICMPv6 echo) in
/// bits 0–1, `request_in` in bit 2, IPv4 in bit 3.
const KIND_REQUEST_IN: u8 = 1 << 2;
const KIND_V4: u8 = 1 << 3;

fn query_bits(q: u8) -> u8 {
    match q {
        8 => 1,
        13 => 2,
        128 => 3,
        _ => 0,
    }
}

fn query_of(bits: u8) -> u8 {
    [0, 8, 13, 128][usize::from(bits & 3)]
}

#[cfg(test)]
fn mapped(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// The table key of a conntrack [`FlowKey`] (the reference for [`key_from`]).
#[cfg(test)]
pub(crate) fn table_key(k: &FlowKey) -> FlowKeyV6 {
    let v4 = if k.local.is_ipv4() { KIND_V4 } else { 0 };
    let kind = query_bits(k.query) | if k.request_in { KIND_REQUEST_IN } else { 0 } | v4;
    FlowKeyV6::new(
        k.zone,
        k.proto,
        kind,
        mapped(k.local),
        mapped(k.remote),
        k.local_port,
        k.remote_port,
    )
}

/// The conntrack [`FlowKey`] a table key stands for.
pub(crate) fn flow_key(k: &FlowKeyV6) -> FlowKey {
    let v4 = k.kind() & KIND_V4 != 0;
    let addr = |a: Ipv6Addr| -> IpAddr {
        if v4 {
            IpAddr::V4(a.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED))
        } else {
            IpAddr::V6(a)
        }
    };
    FlowKey {
        zone: k.zone(),
        proto: k.proto(),
        query: query_of(k.kind()),
        request_in: k.kind() & KIND_REQUEST_IN != 0,
        local: addr(k.local()),
        remote: addr(k.remote()),
        local_port: k.local_port(),
        remote_port: k.remote_port(),
    }
}

/// Liveness of the engine's entries: the zone's current ENI's timeouts (a zone whose ENI is
/// gone has none, so its entries are dead).
pub(crate) struct Live<'a> {
    pub timeouts: &'a [Option<Timeouts>],
}

impl Live<'_> {
    #[inline]
    fn timeouts_of(&self, zone: u32) -> Option<&Timeouts> {
        self.timeouts.get(zone as usize).and_then(Option::as_ref)
    }
}

impl Liveness<FlowKeyV6, Flow> for Live<'_> {
    #[inline]
    fn alive(&self, key: &FlowKeyV6, value: &Flow, now: u64) -> bool {
        self.timeouts_of(key.zone())
            .is_some_and(|t| now < value.deadline(t))
    }

    /// SPEC §4: only expired entries free a slot; a live entry (established or not) is never
    /// evicted.
    #[inline]
    fn reclaimable(&self, key: &FlowKeyV6, value: &Flow, now: u64) -> bool {
        !self.alive(key, value, now)
    }
}

/// Liveness that records the earliest deadline of the live entries it is asked about.
struct Probe<'a> {
    live: Live<'a>,
    earliest: std::cell::Cell<u64>,
}

impl Liveness<FlowKeyV6, Flow> for Probe<'_> {
    fn alive(&self, key: &FlowKeyV6, value: &Flow, now: u64) -> bool {
        let Some(t) = self.live.timeouts_of(key.zone()) else {
            return false;
        };
        let d = value.deadline(t);
        if now < d {
            self.earliest.set(self.earliest.get().min(d));
            true
        } else {
            false
        }
    }
}

/// Every entry is alive: for copying tables exactly.
struct Forever;

impl Liveness<FlowKeyV6, Flow> for Forever {
    fn alive(&self, _: &FlowKeyV6, _: &Flow, _: u64) -> bool {
        true
    }
}

/// One allowance group's table and counters.
#[derive(Debug)]
pub(crate) struct Group {
    pub table: Table<FlowKeyV6, Flow>,
    /// The earliest time at which an entry of a table found full (all entries live) can expire;
    /// 0 when unknown. Every deadline set since then lowers it.
    pub full_until: u64,
    /// Packets refused because this group's allowance was exhausted.
    pub exceeded: u64,
}

/// A table for `capacity` entries (load factor at most 0.8), with the engine's seed.
fn new_table(capacity: usize, seed: u64) -> Table<FlowKeyV6, Flow> {
    let capacity = capacity.max(1);
    Table::with_seed(capacity, capacity.saturating_add(capacity / 4), seed)
}

/// The engine's connection-tracking state.
#[derive(Debug)]
pub(crate) struct Conntrack {
    /// By instance (allowance group) of the current policy.
    pub groups: Vec<Group>,
    /// The allowance, as a table capacity (`usize::MAX`: none).
    pub allowance: usize,
    /// By zone: the timeouts of the zone's current ENI, `None` once the ENI is gone.
    pub timeouts: Vec<Option<Timeouts>>,
    /// By zone: the current instance of the zone's ENI (`u32::MAX` once gone).
    pub instance: Vec<u32>,
    /// One hash seed for every table, so a key hashed for one table is valid in its successor.
    pub seed: u64,
    /// A one-slot table with that seed, to hash keys with.
    hasher: Table<FlowKeyV6, Flow>,
    /// Packets since the last incremental sweep step.
    pub since_sweep: u32,
    /// The table the next sweep step examines.
    pub sweep_group: usize,
}

impl Clone for Conntrack {
    fn clone(&self) -> Self {
        let groups = self
            .groups
            .iter()
            .map(|g| {
                let table = new_table(g.table.capacity(), self.seed);
                g.table.for_each(|k, v| {
                    let _ = table.insert(k, *v, 0, &Forever);
                });
                Group {
                    table,
                    full_until: g.full_until,
                    exceeded: g.exceeded,
                }
            })
            .collect();
        Conntrack {
            groups,
            allowance: self.allowance,
            timeouts: self.timeouts.clone(),
            instance: self.instance.clone(),
            seed: self.seed,
            hasher: new_table(1, self.seed),
            since_sweep: self.since_sweep,
            sweep_group: self.sweep_group,
        }
    }
}

/// What [`Conntrack::insert`] did.
pub(crate) enum Inserted {
    /// Stored.
    Ok,
    /// The instance's allowance is exhausted.
    Exceeded,
}

impl Conntrack {
    pub(crate) fn new(allowance: Option<u32>) -> Conntrack {
        use std::hash::BuildHasher;
        let seed = foldhash::fast::RandomState::default().hash_one(0x7ab1e_u64);
        Conntrack {
            groups: Vec::new(),
            allowance: allowance.map_or(usize::MAX, |a| a as usize),
            timeouts: Vec::new(),
            instance: Vec::new(),
            seed,
            hasher: new_table(1, seed),
            since_sweep: 0,
            sweep_group: 0,
        }
    }

    fn fresh_group(&self) -> Group {
        Group {
            table: new_table(INITIAL_CAPACITY.min(self.allowance), self.seed),
            full_until: 0,
            exceeded: 0,
        }
    }

    /// The liveness judge for the current policy.
    #[inline]
    pub(crate) fn live(&self) -> Live<'_> {
        Live {
            timeouts: &self.timeouts,
        }
    }

    /// Hashes a key (valid for every table of this engine).
    #[inline]
    pub(crate) fn hash(&self, k: &FlowKeyV6) -> crate::conntrack::table::Hashed<FlowKeyV6> {
        // Every table shares the seed, so this hash is valid in all of them.
        self.hasher.hash(k)
    }

    /// Notes that an entry of `group` now lives until `deadline` (keeps the full-table bound
    /// honest).
    #[inline]
    pub(crate) fn note_deadline(&mut self, group: u32, deadline: u64) {
        let g = &mut self.groups[group as usize];
        if deadline < g.full_until {
            g.full_until = deadline;
        }
    }

    /// Inserts `flow` under the hashed key `h` into `group`, growing the table below the
    /// allowance and reclaiming expired entries at it.
    pub(crate) fn insert(
        &mut self,
        group: u32,
        h: &crate::conntrack::table::Hashed<FlowKeyV6>,
        flow: Flow,
        now: Time,
        deadline: u64,
    ) -> Inserted {
        let gi = group as usize;
        if self.allowance == 0 {
            self.groups[gi].exceeded += 1;
            return Inserted::Exceeded;
        }
        loop {
            let live = Live {
                timeouts: &self.timeouts,
            };
            let g = &mut self.groups[gi];
            match g.table.insert_hashed(h, flow, now.0, &live) {
                Insert::Inserted { .. } => {
                    if deadline < g.full_until {
                        g.full_until = deadline;
                    }
                    return Inserted::Ok;
                }
                Insert::Exists(_) => {
                    // A live entry that did not admit the packet: replaced, as a map insert would.
                    g.table.update_hashed(h, now.0, &live, |v| *v = flow);
                    return Inserted::Ok;
                }
                Insert::Full => {}
            }
            if g.table.capacity() < self.allowance {
                let capacity = g.table.capacity().saturating_mul(2).min(self.allowance);
                self.grow(gi, capacity, now);
                continue;
            }
            // At the allowance: any expired entry of the table frees its slot (SPEC §4).
            if now.0 >= g.full_until {
                let probe = Probe {
                    live,
                    earliest: std::cell::Cell::new(u64::MAX),
                };
                let slots = g.table.slots();
                let swept = g.table.sweep(now.0, slots, &probe, |_, _| {});
                if swept.reclaimed > 0 {
                    continue;
                }
                g.full_until = probe.earliest.get();
            }
            g.exceeded += 1;
            return Inserted::Exceeded;
        }
    }

    /// Moves group `gi`'s live entries into a table for `capacity` entries.
    fn grow(&mut self, gi: usize, capacity: usize, now: Time) {
        let live = Live {
            timeouts: &self.timeouts,
        };
        let table = new_table(capacity, self.seed);
        self.groups[gi].table.for_each(|k, v| {
            if live.alive(k, v, now.0) {
                let _ = table.insert(k, *v, now.0, &live);
            }
        });
        self.groups[gi].table = table;
    }

    /// One incremental sweep step, every [`SWEEP_EVERY`] calls.
    #[inline]
    pub(crate) fn tick(&mut self, now: Time) {
        self.since_sweep += 1;
        if self.since_sweep < SWEEP_EVERY || self.groups.is_empty() {
            return;
        }
        self.since_sweep = 0;
        self.sweep_group = (self.sweep_group + 1) % self.groups.len();
        let live = Live {
            timeouts: &self.timeouts,
        };
        self.groups[self.sweep_group]
            .table
            .sweep(now.0, SWEEP_BUDGET, &live, |_, _| {});
    }

    /// Adopts a new policy: `zone_eni` maps each zone to its ENI in `policy` (or `None`).
    /// Tables are kept (re-indexed) when the instances of the surviving zones are grouped as
    /// before, else rebuilt by re-inserting the surviving entries (most recently seen first;
    /// an instance that now holds more than its allowance keeps only that many). Entries of
    /// zones whose ENI is gone are dropped. `now` judges liveness for a rebuild.
    pub(crate) fn reload(&mut self, policy: &CompiledPolicy, zone_eni: &[Option<u32>], now: Time) {
        let instances = policy.instances as usize;
        let old_instance = std::mem::take(&mut self.instance);
        self.timeouts = zone_eni
            .iter()
            .map(|e| e.map(|i| policy.enis[i as usize].timeouts))
            .collect();
        self.instance = zone_eni
            .iter()
            .map(|e| e.map_or(u32::MAX, |i| policy.enis[i as usize].instance))
            .collect();
        // old instance → new instance, and back; any conflict means regrouping.
        let mut forward = vec![u32::MAX; self.groups.len()];
        let mut backward = vec![u32::MAX; instances];
        let mut regroup = false;
        let mut gone = false;
        for (z, &oi) in old_instance.iter().enumerate() {
            if oi == u32::MAX {
                continue;
            }
            let ni = self.instance[z];
            if ni == u32::MAX {
                gone = true;
                continue;
            }
            let (o, n) = (oi as usize, ni as usize);
            if o >= forward.len() {
                regroup = true;
                continue;
            }
            if (forward[o] != u32::MAX && forward[o] != ni)
                || (backward[n] != u32::MAX && backward[n] != oi)
            {
                regroup = true;
            }
            forward[o] = ni;
            backward[n] = oi;
        }
        let old_groups = std::mem::take(&mut self.groups);
        if !regroup {
            let mut slots: Vec<Option<Group>> = old_groups.into_iter().map(Some).collect();
            self.groups = (0..instances)
                .map(|n| match backward[n] {
                    u32::MAX => None,
                    o => slots[o as usize].take(),
                })
                .map(|g| g.unwrap_or_else(|| self.fresh_group()))
                .collect();
            for g in &mut self.groups {
                // Timeouts may have changed: the full-table bound is recomputed when needed.
                g.full_until = 0;
            }
            if gone {
                let instance = &self.instance;
                for g in &self.groups {
                    let mut dead = Vec::new();
                    g.table.for_each(|k, _| {
                        if instance.get(k.zone() as usize) == Some(&u32::MAX) {
                            dead.push(*k);
                        }
                    });
                    for k in dead {
                        g.table.remove(&k);
                    }
                }
            }
        } else {
            let mut exceeded = vec![0u64; instances];
            let mut all: Vec<(FlowKeyV6, Flow)> = Vec::new();
            let live = self.live();
            for (o, g) in old_groups.iter().enumerate() {
                if forward[o] != u32::MAX {
                    exceeded[forward[o] as usize] += g.exceeded;
                }
                g.table.for_each(|k, v| {
                    if live.alive(k, v, now.0) {
                        all.push((*k, *v));
                    }
                });
            }
            drop(old_groups);
            all.sort_by_key(|(_, v)| std::cmp::Reverse(v.last_seen));
            self.groups = (0..instances).map(|_| self.fresh_group()).collect();
            for (k, v) in all {
                let gi = self.instance[k.zone() as usize];
                let h = self.hash(&k);
                // Beyond the allowance the entry is dropped (least recently seen go first).
                let _ = self.insert(gi, &h, v, now, 0);
            }
            for (g, e) in self.groups.iter_mut().zip(exceeded) {
                g.exceeded = e;
                g.full_until = 0;
            }
        }
        if self.groups.len() < instances {
            let fresh: Vec<Group> = (self.groups.len()..instances)
                .map(|_| self.fresh_group())
                .collect();
            self.groups.extend(fresh);
        }
        self.sweep_group = 0;
    }

    /// Live entries at `now`.
    pub(crate) fn for_each_live(&self, now: Time, mut f: impl FnMut(FlowKey, Entry)) {
        let live = self.live();
        for g in &self.groups {
            g.table.for_each(|k, v| {
                if live.alive(k, v, now.0) {
                    f(flow_key(k), v.entry());
                }
            });
        }
    }

    /// Live entries of group `gi` at `now`.
    pub(crate) fn live_count(&self, gi: usize, now: Time) -> usize {
        let live = self.live();
        let mut n = 0;
        self.groups[gi].table.for_each(|k, v| {
            if live.alive(k, v, now.0) {
                n += 1;
            }
        });
        n
    }
}

/// The table key of a tracking classification, if trackable (the reference for [`key_from`]).
#[cfg(test)]
pub(crate) fn key_of(t: &Tracking) -> Option<FlowKeyV6> {
    t.key().map(table_key)
}

/// Exactly `key_of(&Tracking::of(zone, dir, proto, src, dst, ports, icmp))` with the addresses
/// as integers (`v6` false: IPv4 in the low 32 bits), built without `IpAddr` round trips.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn key_from(
    zone: u32,
    dir: Direction,
    proto: u8,
    v6: bool,
    src: u128,
    dst: u128,
    ports: (u16, u16),
    icmp: (u8, u16),
) -> Option<FlowKeyV6> {
    let ingress = dir == Direction::Ingress;
    let (local, remote) = if ingress { (dst, src) } else { (src, dst) };
    let (map, family) = if v6 {
        (u128::MAX, 0)
    } else {
        (u128::from(u32::MAX), KIND_V4)
    };
    // `::ffff:a.b.c.d` for IPv4.
    let mapped = |a: u128| -> Ipv6Addr {
        if v6 {
            Ipv6Addr::from(a)
        } else {
            Ipv6Addr::from((0xffff_u128 << 32) | (a & map))
        }
    };
    let (kind, local_port, remote_port) = match proto {
        6 | 17 => {
            let (lp, rp) = if ingress { (ports.1, ports.0) } else { ports };
            (family, lp, rp)
        }
        1 | 58 => {
            let (query, request) = match (proto, icmp.0) {
                (1, 8) => (8, true),
                (1, 0) => (8, false),
                (1, 13) => (13, true),
                (1, 14) => (13, false),
                (58, 128) => (128, true),
                (58, 129) => (128, false),
                _ => return None,
            };
            // A request arriving, or a reply leaving, belongs to an exchange asked from outside.
            let request_in = if request == ingress {
                KIND_REQUEST_IN
            } else {
                0
            };
            (family | query_bits(query) | request_in, icmp.1, 0)
        }
        _ => (family, 0, 0),
    };
    Some(FlowKeyV6::new(
        zone,
        proto,
        kind,
        mapped(local),
        mapped(remote),
        local_port,
        remote_port,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::Direction::{Egress, Ingress};

    #[test]
    fn state_codes_round_trip() {
        let mut states = vec![
            FlowState::Tcp(TcpState::SynSent),
            FlowState::Tcp(TcpState::SynRecv),
            FlowState::Tcp(TcpState::Established),
            FlowState::Tcp(TcpState::FinWait { first_fin: Egress }),
            FlowState::Tcp(TcpState::FinWait { first_fin: Ingress }),
            FlowState::Tcp(TcpState::TimeWait),
            FlowState::Tcp(TcpState::Close),
            FlowState::IcmpQuery,
            FlowState::Other,
        ];
        for t in 0..=2 {
            for last in [Egress, Ingress] {
                states.push(FlowState::Udp {
                    transactions: t,
                    last,
                });
            }
        }
        let mut codes: Vec<u8> = states.iter().map(|s| state_code(*s)).collect();
        for s in &states {
            assert_eq!(state_of(state_code(*s)), *s);
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), states.len());
    }

    proptest::proptest! {
        /// The integer-address key builder equals the reference (tracking, then `IpAddr` keys).
        #[test]
        fn key_from_equals_key_of_tracking(
            zone in 0u32..8,
            ingress: bool,
            proto in proptest::sample::select(vec![0u8, 1, 6, 17, 47, 58, 132]),
            v6: bool,
            src: u128,
            dst: u128,
            ports: (u16, u16),
            icmp_type in proptest::sample::select(vec![0u8, 3, 8, 13, 14, 128, 129, 135]),
            ident: u16,
        ) {
            let dir = if ingress { Ingress } else { Egress };
            let (src, dst) = if v6 { (src, dst) } else { (u128::from(src as u32), u128::from(dst as u32)) };
            let ip = |a: u128| -> IpAddr {
                if v6 { IpAddr::V6(Ipv6Addr::from(a)) } else { IpAddr::V4(Ipv4Addr::from(a as u32)) }
            };
            let (ports, icmp) = match proto {
                6 | 17 => (ports, (0, 0)),
                1 | 58 => ((0, 0), (icmp_type, ident)),
                _ => ((0, 0), (0, 0)),
            };
            let reference = key_of(&Tracking::of(zone, dir, proto, ip(src), ip(dst), ports, icmp));
            proptest::prop_assert_eq!(
                key_from(zone, dir, proto, v6, src, dst, ports, icmp),
                reference
            );
        }
    }

    #[test]
    fn keys_round_trip_and_families_never_collide() {
        let k4 = FlowKey {
            zone: 3,
            proto: 1,
            query: 13,
            request_in: true,
            local: "10.0.0.1".parse().unwrap(),
            remote: "192.0.2.9".parse().unwrap(),
            local_port: 7,
            remote_port: 0,
        };
        assert_eq!(flow_key(&table_key(&k4)), k4);
        let k6 = FlowKey {
            local: IpAddr::V6("10.0.0.1".parse::<Ipv4Addr>().unwrap().to_ipv6_mapped()),
            remote: IpAddr::V6("192.0.2.9".parse::<Ipv4Addr>().unwrap().to_ipv6_mapped()),
            ..k4
        };
        assert_eq!(flow_key(&table_key(&k6)), k6);
        assert_ne!(table_key(&k4), table_key(&k6));
    }
}
