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

pub mod reference;

use std::fmt;
use std::hash::Hash;

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

/// Why a matcher could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildError {
    message: String,
}

impl BuildError {
    /// A build error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        BuildError {
            message: message.into(),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BuildError {}

/// The compiled classifier.
///
/// Until the compiled structures land this is the linear evaluator; its interface is the
/// one the engine depends on, so swapping the internals changes no answer.
#[derive(Clone, Debug)]
pub struct Matcher<A: Addr> {
    inner: reference::Linear<A>,
}

impl<A: Addr> Matcher<A> {
    /// Builds a matcher over `rules` (index = priority) with the default configuration.
    pub fn build(rules: Vec<Rule<A>>) -> Result<Self, BuildError> {
        Ok(Matcher {
            inner: reference::Linear::new(rules),
        })
    }
    /// The highest-priority (lowest index) rule matching `key`.
    #[inline]
    pub fn first_match(&self, key: &Key<A>) -> Option<RuleId> {
        self.inner.first_match(key)
    }
    /// Whether any rule matches `key`.
    #[inline]
    pub fn is_match(&self, key: &Key<A>) -> bool {
        self.inner.first_match(key).is_some()
    }
    /// The rules the matcher was built from, in priority order.
    pub fn rules(&self) -> &[Rule<A>] {
        self.inner.rules()
    }
    /// Number of rules.
    pub fn len(&self) -> usize {
        self.inner.rules().len()
    }
    /// Whether the matcher has no rules (it then matches nothing).
    pub fn is_empty(&self) -> bool {
        self.inner.rules().is_empty()
    }
}
