//! The scanner of one scope class: one DFA per case mode, resumable from a saved state, with a
//! grouped Teddy prefilter that skips bytes while every DFA is in its start state.
//!
//! Skipping argument (why the prefilter may move the search forward without losing a match or
//! changing the state a later segment resumes from): at position `i` every DFA is in its start
//! state, so no pattern occurrence that is still in progress began before `i`. A group's
//! leftmost-first search over `chunk[i..]` returns the leftmost start of any occurrence lying
//! *entirely* inside the chunk; the minimum over all groups, `c`, means no occurrence of any
//! pattern starts in `[i, c)` and ends inside the chunk. An occurrence may still start in
//! `[i, c)` and end beyond the chunk, but only if it starts in the last `L - 1` bytes (`L` the
//! longest pattern). So the DFAs may restart (in the start state) at `min(c, n - (L - 1))`: every
//! occurrence starting there or later is found as before, and at the end of the chunk each DFA
//! is in the same state as after a byte-by-byte walk (its state names the longest suffix of the
//! text that is a pattern prefix; that suffix starts at or after `n - (L - 1)`, or it would be a
//! whole occurrence inside the chunk).

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, MatchKind, Span, StartKind, packed};

/// Bytes lowercased (into a stack buffer) per step of a scope with case-insensitive rules.
pub(crate) const CHUNK: usize = 2048;

/// At most this many patterns per Teddy prefilter group, split evenly (100 patterns: 4 groups of
/// 25; measured in DESIGN.md, `## Payload inspection`).
pub(crate) const GROUP: usize = 32;

/// At most this many prefilter groups per class (their answers are cached on the stack).
const MAX_GROUPS: usize = 32;

/// The patterns of one case mode of a class.
#[derive(Clone, Debug)]
pub(crate) struct Part {
    dfa: DFA,
    start: StateID,
    /// The largest state id reachable from the start state (saved ids are checked against it).
    max_sid: u32,
    /// The DFA reads ASCII-lowercased input (its patterns were lowercased at compile time).
    fold: bool,
    /// Pattern id → rule id.
    rules: Vec<u16>,
    /// The prefilter groups (empty when the part has no prefilter).
    groups: Vec<packed::Searcher>,
}

/// How a scan is built: the automaton options the benchmark compares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    pub byte_classes: bool,
    pub prefilter: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            byte_classes: true,
            prefilter: true,
        }
    }
}

impl Part {
    fn build(patterns: &[Vec<u8>], rules: Vec<u16>, fold: bool, opt: Options) -> Option<Part> {
        let dfa = aho_corasick::dfa::Builder::new()
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Unanchored)
            .byte_classes(opt.byte_classes)
            .prefilter(false)
            .build(patterns)
            .ok()?;
        let start = dfa.start_state(Anchored::No).ok()?;
        // Every state reachable from the start state, to bound saved ids.
        let mut seen = std::collections::HashSet::new();
        let mut todo = vec![start];
        seen.insert(start);
        let mut max_sid = start.as_u32();
        while let Some(s) = todo.pop() {
            for b in 0..=255u8 {
                let t = dfa.next_state(Anchored::No, s, b);
                if seen.insert(t) {
                    max_sid = max_sid.max(t.as_u32());
                    todo.push(t);
                }
            }
        }
        let mut groups = Vec::new();
        if opt.prefilter {
            // Even groups of at most GROUP patterns (more per group past MAX_GROUPS / 2 groups).
            let k = patterns.len().div_ceil(GROUP).clamp(1, MAX_GROUPS / 2);
            let per = patterns.len().div_ceil(k);
            for chunk in patterns.chunks(per) {
                let mut config = packed::Config::new();
                config
                    .match_kind(packed::MatchKind::LeftmostFirst)
                    .heuristic_pattern_limits(false);
                match config.builder().extend(chunk).build() {
                    Some(s) => groups.push(s),
                    None => {
                        groups.clear();
                        break;
                    }
                }
            }
        }
        Some(Part {
            dfa,
            start,
            max_sid,
            fold,
            rules,
            groups,
        })
    }
}

/// The compiled patterns of one scope class: one or two parts (case-folded, exact).
#[derive(Clone, Debug)]
pub(crate) struct Class {
    parts: Vec<Part>,
    /// The longest pattern, in bytes.
    max_len: usize,
    /// Every part has a prefilter.
    prefilter: bool,
    /// Some part reads lowercased input.
    fold: bool,
}

/// A cached prefilter answer: no occurrence of the group starts in `[from, at)`; `at` is the
/// leftmost start found (the chunk length when none).
#[derive(Clone, Copy)]
struct Cached {
    from: usize,
    at: usize,
}

impl Class {
    /// Builds the class of `patterns` (rule id, bytes, lowercase). Patterns of `LOWERCASE`
    /// rules are lowercased here; a pattern without ASCII letters joins whichever part exists.
    pub(crate) fn build(patterns: &[(u16, &[u8], bool)], opt: Options) -> Result<Class, String> {
        let letters = |p: &[u8]| p.iter().any(u8::is_ascii_alphabetic);
        let any_fold = patterns.iter().any(|(_, p, l)| *l && letters(p));
        let any_exact = patterns.iter().any(|(_, p, l)| !*l && letters(p));
        let mut folded: (Vec<Vec<u8>>, Vec<u16>) = Default::default();
        let mut exact: (Vec<Vec<u8>>, Vec<u16>) = Default::default();
        for &(rule, p, lower) in patterns {
            let to_fold = if letters(p) {
                lower
            } else {
                any_fold || !any_exact
            };
            if to_fold {
                folded.0.push(p.to_ascii_lowercase());
                folded.1.push(rule);
            } else {
                exact.0.push(p.to_vec());
                exact.1.push(rule);
            }
        }
        let mut parts = Vec::new();
        for ((pats, rules), fold) in [(folded, true), (exact, false)] {
            if pats.is_empty() {
                continue;
            }
            let part = Part::build(&pats, rules, fold, opt)
                .ok_or_else(|| "the automaton could not be built (too many states)".to_owned())?;
            parts.push(part);
        }
        let max_len = patterns.iter().map(|(_, p, _)| p.len()).max().unwrap_or(1);
        let prefilter = !parts.is_empty() && parts.iter().all(|p| !p.groups.is_empty());
        let groups: usize = parts.iter().map(|p| p.groups.len()).sum();
        debug_assert!(groups <= MAX_GROUPS);
        Ok(Class {
            fold: parts.iter().any(|p| p.fold),
            parts,
            max_len,
            prefilter: prefilter && groups <= MAX_GROUPS,
        })
    }

    /// The start states, as saved in a stream.
    pub(crate) fn start(&self) -> [u32; 2] {
        let mut s = [0; 2];
        for (k, p) in self.parts.iter().enumerate() {
            s[k] = p.start.as_u32();
        }
        s
    }

    /// Whether `sids` are states this class can be in (a state saved by another compilation is
    /// not; the caller restarts the stream).
    pub(crate) fn valid(&self, sids: &[u32; 2]) -> bool {
        self.parts.iter().zip(sids).all(|(p, &s)| s <= p.max_sid)
    }

    /// Memory of the automata and prefilters, in bytes.
    pub(crate) fn memory_usage(&self) -> usize {
        self.parts
            .iter()
            .map(|p| {
                p.dfa.memory_usage() + p.groups.iter().map(|g| g.memory_usage()).sum::<usize>()
            })
            .sum()
    }

    /// Scans `data` from the saved states `sids`, calling `hit(rule, end)` for every occurrence
    /// (`end` = offset in `data` just past its last byte), position by position. When `hit`
    /// returns true (a block), the scan stops after the other occurrences ending at the same
    /// position and returns `Some(end)`; `sids` then hold the states at that position.
    pub(crate) fn scan(
        &self,
        sids: &mut [u32; 2],
        data: &[u8],
        hit: &mut impl FnMut(u16, usize) -> bool,
    ) -> Option<usize> {
        if !self.fold {
            return self.scan_chunk(sids, data, data, 0, hit);
        }
        let mut lower = [0u8; CHUNK];
        for (k, raw) in data.chunks(CHUNK).enumerate() {
            let low = &mut lower[..raw.len()];
            for (d, s) in low.iter_mut().zip(raw) {
                *d = s.to_ascii_lowercase();
            }
            if let Some(end) = self.scan_chunk(sids, raw, low, k * CHUNK, hit) {
                return Some(end);
            }
        }
        None
    }

    fn scan_chunk(
        &self,
        sids: &mut [u32; 2],
        raw: &[u8],
        low: &[u8],
        base: usize,
        hit: &mut impl FnMut(u16, usize) -> bool,
    ) -> Option<usize> {
        let n = raw.len();
        // The prefilter never moves the search into the last `max_len - 1` bytes.
        let tail = n.saturating_sub(self.max_len - 1);
        let mut cache = [Cached { from: 0, at: 0 }; MAX_GROUPS];
        let mut fresh = [true; MAX_GROUPS];
        let mut cur = [StateID::ZERO; 2];
        for (k, p) in self.parts.iter().enumerate() {
            cur[k] = StateID::new(sids[k] as usize).unwrap_or(p.start);
        }
        let mut i = 0;
        while i < n {
            if self.prefilter && i < tail && self.parts.iter().zip(&cur).all(|(p, s)| *s == p.start)
            {
                let mut cand = n;
                let mut g = 0;
                for p in &self.parts {
                    let hay = if p.fold { low } else { raw };
                    for s in &p.groups {
                        let c = &mut cache[g];
                        if fresh[g] || i < c.from || i > c.at {
                            c.at = s.find_in(hay, Span::from(i..n)).map_or(n, |m| m.start());
                            c.from = i;
                            fresh[g] = false;
                        }
                        cand = cand.min(c.at);
                        g += 1;
                    }
                }
                i = cand.min(tail);
                if i >= n {
                    break;
                }
            }
            let mut stop = false;
            for (k, p) in self.parts.iter().enumerate() {
                let byte = if p.fold { low[i] } else { raw[i] };
                let s = p.dfa.next_state(Anchored::No, cur[k], byte);
                cur[k] = s;
                if p.dfa.is_match(s) {
                    for m in 0..p.dfa.match_len(s) {
                        let rule = p.rules[p.dfa.match_pattern(s, m).as_usize()];
                        stop |= hit(rule, base + i + 1);
                    }
                }
            }
            i += 1;
            if stop {
                for (k, s) in cur.iter().enumerate().take(self.parts.len()) {
                    sids[k] = s.as_u32();
                }
                return Some(base + i);
            }
        }
        for (k, s) in cur.iter().enumerate().take(self.parts.len()) {
            sids[k] = s.as_u32();
        }
        None
    }
}
