//! Multi-field packet classification: the rule and key types every matcher shares.
//!
//! A [`Rule`] has five fields: source prefix, destination prefix, source port range,
//! destination port range and protocol (`None` = any). For ICMP the port fields carry the
//! ICMP **type** (source-port field) and **code** (destination-port field), so one classifier
//! serves TCP/UDP port rules, ICMP type/code rules and protocol-only rules alike. Rules are
//! ordered: the index of a rule in the list it was built from is its priority (0 is highest),
//! so a NACL is built from entries sorted by rule number and a ClassBench file in line order.
//!
//! Addresses are one family per matcher: [`Matcher<u32>`] for IPv4 and [`Matcher<u128>`] for
//! IPv6, so a rule of one family can never match a packet of the other.
//!
//! [`reference::Linear`] is the obviously correct linear evaluator; every faster structure in
//! this module is tested against it.
//!
//! [`Matcher`] compiles a rule list into a structure chosen by size (see [`Algorithm`] and the
//! project's `DESIGN.md`): a SIMD linear block up to [`LINEAR_MAX_RULES`], above that a
//! decision tree with SIMD leaf blocks (a partitioned forest above [`TREE_SINGLE_MAX_RULES`]),
//! and TupleMerge-style tuple-space hashing when the tree would exceed its memory budget.

mod bitset;
pub mod classbench;
mod linear;
pub mod reference;
pub mod synth;
mod tree;
mod tuple;

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

/// The index of a rule in the slice a matcher was built from (0 = highest priority).
pub type RuleId = u32;

/// An address of one IP family, as an unsigned integer (`u32` for IPv4, `u128` for IPv6).
pub trait Addr:
    Copy + Ord + Eq + Hash + fmt::Debug + fmt::Display + Send + Sync + Default + 'static
{
    /// Number of bits in an address of this family (32 or 128).
    const BITS: u8;
    /// The network mask of a prefix of `len` bits (`len` ≤ `BITS`).
    fn mask(len: u8) -> Self;
    /// Bitwise and.
    fn and(self, other: Self) -> Self;
    /// Widens the address to 128 bits (IPv4 addresses keep their numeric value).
    fn to_u128(self) -> u128;
    /// Narrows a 128-bit value to this family, keeping the low `BITS` bits.
    fn from_u128(v: u128) -> Self;
}

impl Addr for u32 {
    const BITS: u8 = 32;
    #[inline]
    fn mask(len: u8) -> Self {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len.min(32)))
        }
    }
    #[inline]
    fn and(self, other: Self) -> Self {
        self & other
    }
    #[inline]
    fn to_u128(self) -> u128 {
        u128::from(self)
    }
    #[inline]
    fn from_u128(v: u128) -> Self {
        v as u32
    }
}

impl Addr for u128 {
    const BITS: u8 = 128;
    #[inline]
    fn mask(len: u8) -> Self {
        if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len.min(128)))
        }
    }
    #[inline]
    fn and(self, other: Self) -> Self {
        self & other
    }
    #[inline]
    fn to_u128(self) -> u128 {
        self
    }
    #[inline]
    fn from_u128(v: u128) -> Self {
        v
    }
}

/// An address prefix (`addr/len`). The address is kept canonical: host bits are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Prefix<A: Addr> {
    addr: A,
    len: u8,
}

impl<A: Addr> Prefix<A> {
    /// The prefix `addr/len`; host bits of `addr` are cleared and `len` is capped at the
    /// family's width.
    #[inline]
    pub fn new(addr: A, len: u8) -> Self {
        let len = len.min(A::BITS);
        Prefix {
            addr: addr.and(A::mask(len)),
            len,
        }
    }
    /// The prefix that contains every address (`/0`).
    #[inline]
    pub fn any() -> Self {
        Prefix {
            addr: A::default(),
            len: 0,
        }
    }
    /// The network address (host bits zero).
    #[inline]
    pub fn addr(&self) -> A {
        self.addr
    }
    /// The prefix length in bits.
    #[inline]
    #[allow(
        clippy::len_without_is_empty,
        reason = "a prefix length, not a collection size"
    )]
    pub fn len(&self) -> u8 {
        self.len
    }
    /// Whether this is the `/0` prefix.
    #[inline]
    pub fn is_any(&self) -> bool {
        self.len == 0
    }
    /// Whether `a` lies inside the prefix.
    #[inline]
    pub fn contains(&self, a: A) -> bool {
        a.and(A::mask(self.len)) == self.addr
    }
}

impl<A: Addr> fmt::Display for Prefix<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An inclusive range of 16-bit values (ports, or an ICMP type/code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// Lowest value in the range.
    pub lo: u16,
    /// Highest value in the range (≥ `lo` for a non-empty range).
    pub hi: u16,
}

impl PortRange {
    /// Every value, `0..=65535`.
    pub const ANY: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };

    /// The range `lo..=hi`.
    #[inline]
    pub const fn new(lo: u16, hi: u16) -> Self {
        PortRange { lo, hi }
    }
    /// The one-value range `v..=v`.
    #[inline]
    pub const fn exact(v: u16) -> Self {
        PortRange { lo: v, hi: v }
    }
    /// Whether `v` lies in the range.
    #[inline]
    pub fn contains(&self, v: u16) -> bool {
        self.lo <= v && v <= self.hi
    }
    /// Whether this is the full range.
    #[inline]
    pub fn is_any(&self) -> bool {
        self.lo == 0 && self.hi == u16::MAX
    }
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange::ANY
    }
}

/// One classification rule. See the module docs for how ICMP uses the port fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule<A: Addr> {
    /// Source address prefix.
    pub src: Prefix<A>,
    /// Destination address prefix.
    pub dst: Prefix<A>,
    /// Source port range (ICMP: the type).
    pub sport: PortRange,
    /// Destination port range (ICMP: the code).
    pub dport: PortRange,
    /// IP protocol number; `None` matches every protocol.
    pub proto: Option<u8>,
}

impl<A: Addr> Rule<A> {
    /// A rule that matches every packet of the family.
    pub fn any() -> Self {
        Rule {
            src: Prefix::any(),
            dst: Prefix::any(),
            sport: PortRange::ANY,
            dport: PortRange::ANY,
            proto: None,
        }
    }
    /// Whether the rule matches `key` (the definition every matcher must agree with).
    #[inline]
    pub fn matches(&self, key: &Key<A>) -> bool {
        self.proto.is_none_or(|p| p == key.proto)
            && self.src.contains(key.src)
            && self.dst.contains(key.dst)
            && self.sport.contains(key.sport)
            && self.dport.contains(key.dport)
    }
}

/// The header fields a rule is matched against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Key<A: Addr> {
    /// Source address.
    pub src: A,
    /// Destination address.
    pub dst: A,
    /// Source port (ICMP: type; other protocols: 0).
    pub sport: u16,
    /// Destination port (ICMP: code; other protocols: 0).
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
}

/// Whether a rule can match any key at all (an empty port range makes it dead).
#[inline]
fn can_match<A: Addr>(r: &Rule<A>) -> bool {
    r.sport.lo <= r.sport.hi && r.dport.lo <= r.dport.hi
}

/// Hints the CPU to bring the cache line holding `p` closer. Never faults, never changes
/// program state; a no-op off x86-64.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is part of SSE (baseline on x86-64); it is a hint that never faults,
    // whatever the address, and reads or writes no memory observable by the program.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The compiled structure behind a [`Matcher`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Rules stored column-wise in blocks of 16 and scanned with SIMD compares (AVX-512 or
    /// AVX2 when the CPU has them, chosen at build time; a scalar loop otherwise). Best for
    /// small sets.
    Linear,
    /// Per-field elementary intervals, each mapped to a deduplicated bitset of the rules that
    /// cover it (Lakshman–Stiliadis); the first set bit of the five-way AND is the first
    /// match. Memory grows with rules × intervals. Never chosen automatically: on the
    /// ClassBench 1K sets [`Algorithm::Tree`] measured 1.3–2.8× faster (see `DESIGN.md`);
    /// kept as an override and a second compiled opinion in tests.
    Bitset,
    /// A HyperSplit-style binary decision tree over the five fields whose leaves are
    /// [`Algorithm::Linear`] blocks of at most 16 rules, walked in a fixed number of
    /// branch-free steps; bursts walk it level by level for 32 keys at once. Above
    /// [`TREE_SINGLE_MAX_RULES`] rules, a forest: rules are grouped by which address fields
    /// are narrow (CutSplit's idea), each group gets a tree that splits only on its narrow
    /// fields, and a group the tree would copy too often gets tuple hashing; a lookup visits
    /// the members in priority order with early termination.
    Tree,
    /// Tuple-space hashing with merged tuples (TupleMerge): rules grouped into hash tables by
    /// relaxed prefix lengths and port/protocol exactness, tables probed in priority order
    /// with early termination. Scales to 100K rules.
    TupleMerge,
}

/// Rule-count limit up to which [`Algorithm::Linear`] is chosen automatically.
pub const LINEAR_MAX_RULES: usize = 64;
/// Rule-count limit up to which [`Algorithm::Tree`] builds one tree; above it, one member per
/// address-width group (see [`Algorithm::Tree`]). [`Config::tree_partition_above`] overrides it.
pub const TREE_SINGLE_MAX_RULES: usize = 4096;
/// Memory above which the builder gives up on [`Algorithm::Bitset`] unless
/// [`Config::max_memory`] says otherwise.
pub const BITSET_MAX_MEMORY: usize = 1 << 30;
/// Memory above which the automatic choice gives up on [`Algorithm::Tree`].
pub const TREE_MAX_MEMORY: usize = 48 << 20;

/// Build configuration. Every field is optional; `None` means the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Config {
    /// Reject rule lists longer than this.
    pub max_rules: Option<usize>,
    /// Reject a matcher whose [`Matcher::memory_usage`] would exceed this many bytes. With no
    /// algorithm override the builder first falls back to smaller structures.
    pub max_memory: Option<usize>,
    /// Force one structure instead of choosing by size. A forced structure has no budget of
    /// its own: a forced [`Algorithm::Tree`] on heavily overlapping rules can copy them into
    /// leaves thousands of times (seconds and hundreds of MiB at a few thousand rules), so set
    /// [`Config::max_memory`] with it when the rules are not trusted.
    pub algorithm: Option<Algorithm>,
    /// [`Algorithm::TupleMerge`]: how many rules a hash bucket may collect before a rule is
    /// pushed to a stricter table (default 12, at least 1).
    pub bucket_limit: Option<usize>,
    /// [`Algorithm::Tree`]: above this many rules, build a partitioned forest rather than one
    /// tree (default [`TREE_SINGLE_MAX_RULES`]; 0 always partitions).
    pub tree_partition_above: Option<usize>,
}

impl Config {
    /// The default configuration (no limits, structure chosen by size).
    pub fn new() -> Self {
        Config::default()
    }
    /// Sets [`Config::max_rules`].
    pub fn max_rules(mut self, n: Option<usize>) -> Self {
        self.max_rules = n;
        self
    }
    /// Sets [`Config::max_memory`].
    pub fn max_memory(mut self, bytes: Option<usize>) -> Self {
        self.max_memory = bytes;
        self
    }
    /// Sets [`Config::algorithm`].
    pub fn algorithm(mut self, a: Option<Algorithm>) -> Self {
        self.algorithm = a;
        self
    }
    /// Sets [`Config::bucket_limit`].
    pub fn bucket_limit(mut self, n: Option<usize>) -> Self {
        self.bucket_limit = n;
        self
    }
    /// Sets [`Config::tree_partition_above`].
    pub fn tree_partition_above(mut self, n: Option<usize>) -> Self {
        self.tree_partition_above = n;
        self
    }
}

/// The kind of a [`BuildError`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildErrorKind {
    /// More rules than [`Config::max_rules`]; [`BuildError::rule`] is the first rule over.
    TooManyRules {
        /// The configured limit.
        limit: usize,
    },
    /// The structure would need more than [`Config::max_memory`] bytes.
    MemoryLimit {
        /// The configured limit in bytes.
        limit: usize,
        /// Bytes the smallest acceptable structure needed (a lower bound when the build was
        /// abandoned part-way).
        needed: usize,
    },
    /// Any other reason, described by the message.
    Other,
}

/// Why a matcher could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildError {
    kind: BuildErrorKind,
    rule: Option<RuleId>,
    message: String,
}

impl BuildError {
    /// A build error of kind [`BuildErrorKind::Other`] with a message.
    pub fn new(message: impl Into<String>) -> Self {
        BuildError {
            kind: BuildErrorKind::Other,
            rule: None,
            message: message.into(),
        }
    }
    fn too_many(limit: usize) -> Self {
        BuildError {
            kind: BuildErrorKind::TooManyRules { limit },
            rule: Some(limit as RuleId),
            message: format!("rule {limit} exceeds the limit of {limit} rules"),
        }
    }
    fn memory(limit: usize, needed: usize) -> Self {
        BuildError {
            kind: BuildErrorKind::MemoryLimit { limit, needed },
            rule: None,
            message: format!("matcher needs at least {needed} bytes, over the limit of {limit}"),
        }
    }
    /// What went wrong.
    pub fn kind(&self) -> &BuildErrorKind {
        &self.kind
    }
    /// The offending rule, when one rule is to blame.
    pub fn rule(&self) -> Option<RuleId> {
        self.rule
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BuildError {}

/// Builds a [`Matcher`] for addresses of family `A` with a [`Config`].
#[derive(Clone, Debug)]
pub struct Builder<A: Addr> {
    config: Config,
    _addr: std::marker::PhantomData<fn() -> A>,
}

impl<A: Addr> Default for Builder<A> {
    fn default() -> Self {
        Builder {
            config: Config::default(),
            _addr: std::marker::PhantomData,
        }
    }
}

impl<A: Addr> Builder<A> {
    /// A builder with the default configuration.
    pub fn new() -> Self {
        Builder::default()
    }
    /// Replaces the configuration.
    pub fn configure(mut self, config: Config) -> Self {
        self.config = config;
        self
    }
    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// Compiles `rules` (index = priority, 0 highest).
    pub fn build(&self, rules: Vec<Rule<A>>) -> Result<Matcher<A>, BuildError> {
        let cfg = &self.config;
        if let Some(limit) = cfg.max_rules
            && rules.len() > limit
        {
            return Err(BuildError::too_many(limit));
        }
        if rules.len() >= u32::MAX as usize {
            return Err(BuildError::too_many(u32::MAX as usize - 1));
        }
        let limit = cfg.max_memory.unwrap_or(usize::MAX);
        let bucket_limit = cfg
            .bucket_limit
            .unwrap_or(tuple::DEFAULT_BUCKET_LIMIT)
            .max(1);
        let candidates: &[Algorithm] = match cfg.algorithm {
            Some(Algorithm::Linear) => &[Algorithm::Linear],
            Some(Algorithm::Bitset) => &[Algorithm::Bitset],
            Some(Algorithm::TupleMerge) => &[Algorithm::TupleMerge],
            Some(Algorithm::Tree) => &[Algorithm::Tree],
            None if rules.len() <= LINEAR_MAX_RULES => &[Algorithm::Linear],
            None => &[Algorithm::Tree, Algorithm::TupleMerge, Algorithm::Linear],
        };
        let mut needed = usize::MAX;
        for &alg in candidates {
            let engine = match alg {
                Algorithm::Linear => Engine::Linear(linear::Block::new(&rules)),
                Algorithm::Bitset => {
                    let cap = cfg.max_memory.unwrap_or(BITSET_MAX_MEMORY);
                    match bitset::Bitset::new(&rules, cap) {
                        Ok(b) => Engine::Bitset(Box::new(b)),
                        Err(n) => {
                            needed = needed.min(n);
                            continue;
                        }
                    }
                }
                Algorithm::TupleMerge => {
                    Engine::Tuple(tuple::TupleMerge::new(&rules, bucket_limit))
                }
                Algorithm::Tree => {
                    let auto = cfg.algorithm.is_none();
                    let cap = if auto {
                        limit.min(TREE_MAX_MEMORY)
                    } else {
                        limit
                    };
                    let partition =
                        rules.len() > cfg.tree_partition_above.unwrap_or(TREE_SINGLE_MAX_RULES);
                    match tree::Forest::new(&rules, cap, auto, partition, bucket_limit) {
                        Ok(t) => Engine::Tree(t),
                        Err(n) => {
                            needed = needed.min(n);
                            continue;
                        }
                    }
                }
            };
            let bytes = engine.memory_usage()
                + rules.capacity() * size_of::<Rule<A>>()
                + size_of::<Inner<A>>();
            if bytes > limit {
                needed = needed.min(bytes);
                continue;
            }
            return Ok(Matcher {
                inner: Arc::new(Inner { rules, engine }),
            });
        }
        Err(BuildError::memory(limit, needed))
    }
}

#[derive(Clone, Debug)]
enum Engine<A: Addr> {
    Linear(linear::Block<A>),
    Bitset(Box<bitset::Bitset<A>>),
    Tuple(tuple::TupleMerge<A>),
    Tree(tree::Forest<A>),
}

impl<A: Addr> Engine<A> {
    fn memory_usage(&self) -> usize {
        match self {
            Engine::Linear(e) => e.memory_usage(),
            Engine::Bitset(e) => e.memory_usage(),
            Engine::Tuple(e) => e.memory_usage(),
            Engine::Tree(e) => e.memory_usage(),
        }
    }
}

#[derive(Debug)]
struct Inner<A: Addr> {
    rules: Vec<Rule<A>>,
    engine: Engine<A>,
}

/// Most keys [`Matcher::first_match_burst`] interleaves at once.
pub const BURST: usize = 32;

/// The compiled classifier: immutable after build, cheap to clone (an `Arc` inside), and
/// shareable across threads. Its answers are exactly those of [`reference::Linear`].
#[derive(Clone, Debug)]
pub struct Matcher<A: Addr> {
    inner: Arc<Inner<A>>,
}

impl<A: Addr> Matcher<A> {
    /// Builds a matcher over `rules` (index = priority) with the default configuration.
    pub fn build(rules: Vec<Rule<A>>) -> Result<Self, BuildError> {
        Builder::new().build(rules)
    }
    /// A builder, to set limits or force a structure.
    pub fn builder() -> Builder<A> {
        Builder::new()
    }
    /// The structure chosen at build time.
    pub fn algorithm(&self) -> Algorithm {
        match self.inner.engine {
            Engine::Linear(_) => Algorithm::Linear,
            Engine::Bitset(_) => Algorithm::Bitset,
            Engine::Tuple(_) => Algorithm::TupleMerge,
            Engine::Tree(_) => Algorithm::Tree,
        }
    }
    /// The highest-priority (lowest index) rule matching `key`.
    #[inline]
    pub fn first_match(&self, key: &Key<A>) -> Option<RuleId> {
        match &self.inner.engine {
            Engine::Linear(e) => e.first_match(key),
            Engine::Bitset(e) => e.first_match(key),
            Engine::Tuple(e) => e.first_match(key),
            Engine::Tree(e) => e.first_match(key),
        }
    }
    /// Some rule matching `key`, not necessarily the first: the cheapest answer for
    /// any-match semantics (security groups) that still names a rule for explanations.
    #[inline]
    pub fn any_match(&self, key: &Key<A>) -> Option<RuleId> {
        match &self.inner.engine {
            Engine::Tuple(e) => e.any_match(key),
            _ => self.first_match(key),
        }
    }
    /// Whether any rule matches `key`.
    #[inline]
    pub fn is_match(&self, key: &Key<A>) -> bool {
        self.any_match(key).is_some()
    }
    /// First match for each key: `out[i] = self.first_match(&keys[i])`. Keys are taken
    /// [`BURST`] at a time and their memory accesses interleaved.
    ///
    /// # Panics
    /// If `out` is shorter than `keys`.
    pub fn first_match_burst(&self, keys: &[Key<A>], out: &mut [Option<RuleId>]) {
        assert!(
            out.len() >= keys.len(),
            "burst output shorter than its keys"
        );
        for (k, o) in keys.chunks(BURST).zip(out.chunks_mut(BURST)) {
            match &self.inner.engine {
                // The linear scan is compute-bound, and interleaving TupleMerge tables across
                // keys measured 1.5-2x slower than one key at a time (see DESIGN.md).
                Engine::Linear(_) | Engine::Tuple(_) => {
                    for (key, slot) in k.iter().zip(o.iter_mut()) {
                        *slot = self.first_match(key);
                    }
                }
                Engine::Bitset(e) => e.first_match_burst(k, o),
                Engine::Tree(e) => e.first_match_burst(k, o),
            }
        }
    }
    /// The rules the matcher was built from, in priority order.
    pub fn rules(&self) -> &[Rule<A>] {
        &self.inner.rules
    }
    /// Number of rules.
    pub fn len(&self) -> usize {
        self.inner.rules.len()
    }
    /// Whether the matcher has no rules (it then matches nothing).
    pub fn is_empty(&self) -> bool {
        self.inner.rules.is_empty()
    }
    /// Heap bytes held by the matcher: the compiled structure plus the rule list.
    pub fn memory_usage(&self) -> usize {
        self.inner.engine.memory_usage()
            + self.inner.rules.capacity() * size_of::<Rule<A>>()
            + size_of::<Inner<A>>()
    }
}
