//! The reference classifier: a linear scan in priority order.
//!
//! It is slow on purpose and obviously correct: every compiled matcher is held equal to it by
//! property tests, a fuzz target and the ClassBench traces.

use super::{Addr, Key, Rule, RuleId};

/// Linear first-match evaluation over a rule list.
#[derive(Clone, Debug, Default)]
pub struct Linear<A: Addr> {
    rules: Vec<Rule<A>>,
}

impl<A: Addr> Linear<A> {
    /// Keeps `rules` in the given order (index = priority, 0 highest).
    pub fn new(rules: Vec<Rule<A>>) -> Self {
        Linear { rules }
    }

    /// The lowest-index rule that matches `key`.
    pub fn first_match(&self, key: &Key<A>) -> Option<RuleId> {
        self.rules
            .iter()
            .position(|r| r.matches(key))
            .map(|i| i as RuleId)
    }

    /// Every rule that matches `key`, in priority order.
    pub fn all_matches(&self, key: &Key<A>) -> Vec<RuleId> {
        (0..self.rules.len())
            .filter(|&i| self.rules[i].matches(key))
            .map(|i| i as RuleId)
            .collect()
    }

    /// The rules, in priority order.
    pub fn rules(&self) -> &[Rule<A>] {
        &self.rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::{PortRange, Prefix};

    fn rule(src: (u32, u8), dport: (u16, u16), proto: Option<u8>) -> Rule<u32> {
        Rule {
            src: Prefix::new(src.0, src.1),
            dst: Prefix::any(),
            sport: PortRange::ANY,
            dport: PortRange::new(dport.0, dport.1),
            proto,
        }
    }

    fn key(src: u32, dport: u16, proto: u8) -> Key<u32> {
        Key {
            src,
            dst: 0x0a00_0001,
            sport: 40000,
            dport,
            proto,
        }
    }

    #[test]
    fn first_match_takes_lowest_index() {
        let m = Linear::new(vec![
            rule((0x0a00_0000, 8), (22, 22), Some(6)),
            rule((0, 0), (0, 65535), None),
        ]);
        assert_eq!(m.first_match(&key(0x0a01_0203, 22, 6)), Some(0));
        assert_eq!(m.first_match(&key(0x0b01_0203, 22, 6)), Some(1));
        assert_eq!(m.first_match(&key(0x0a01_0203, 23, 17)), Some(1));
        assert_eq!(m.all_matches(&key(0x0a01_0203, 22, 6)), vec![0, 1]);
    }

    #[test]
    fn empty_matches_nothing() {
        let m: Linear<u32> = Linear::new(vec![]);
        assert_eq!(m.first_match(&key(1, 1, 6)), None);
    }

    #[test]
    fn prefix_boundaries() {
        let p = Prefix::<u32>::new(0xc000_0205, 24);
        assert_eq!(p.addr(), 0xc000_0200);
        assert!(p.contains(0xc000_02ff));
        assert!(!p.contains(0xc000_0300));
        assert!(Prefix::<u32>::new(0x0102_0304, 32).contains(0x0102_0304));
        assert!(!Prefix::<u32>::new(0x0102_0304, 32).contains(0x0102_0305));
        assert!(Prefix::<u128>::any().contains(u128::MAX));
        assert!(Prefix::<u128>::new(u128::MAX, 128).contains(u128::MAX));
    }
}
