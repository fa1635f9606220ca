//! Arbitrary byte-match rules and TCP segment sequences (in order, overlapping, retransmitted,
//! beyond a gap, across the 2^32 wrap) and datagrams: the inspector never panics and equals the
//! naive model of `vpcfw::inspect::reference` (outcome of every segment, per-rule counters), and
//! the rules-file parser never panics on arbitrary text.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vpcfw::inspect::{
    Inspector, ReferenceStream, Rule, RuleAction, RuleScope, RuleSet, ScopeDirection,
    reference_datagram,
};
use vpcfw::policy::{Eni, Policy};

#[derive(Arbitrary, Debug)]
struct Pattern {
    bytes: Vec<u8>,
    lowercase: bool,
    block: bool,
}

#[derive(Arbitrary, Debug)]
struct Segment {
    /// Start relative to the next expected byte (negative: overlap / retransmission; positive: gap).
    shift: i16,
    /// A far jump (beyond 2^31: an old segment in serial arithmetic).
    far: bool,
    syn: bool,
    bytes: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    patterns: Vec<Pattern>,
    isn: u32,
    syn: bool,
    prefilter: bool,
    segments: Vec<Segment>,
    rules_text: String,
}

fuzz_target!(|input: Input| {
    let _ = RuleSet::parse("fuzz.json", &input.rules_text);
    let rules: Vec<Rule> = input
        .patterns
        .iter()
        .take(12)
        .filter(|p| !p.bytes.is_empty())
        .enumerate()
        .map(|(i, p)| Rule {
            name: format!("r{i}"),
            action: if p.block { RuleAction::Block } else { RuleAction::Count },
            pattern: p.bytes.iter().take(24).copied().collect(),
            lowercase: p.lowercase,
            scope: RuleScope::any(6, ScopeDirection::Ingress),
            path: format!("ByteMatchRules[{i}]"),
        })
        .collect();
    if rules.is_empty() {
        return;
    }
    let rules = RuleSet { file: "fuzz".into(), rules };
    let policy = Policy {
        enis: vec![Eni {
            id: "eni-1".into(),
            subnet_id: "subnet-1".into(),
            owner_id: None,
            private_ipv4: vec![],
            ipv6: vec![],
            groups: vec![],
            instance_id: None,
            conntrack: Default::default(),
        }],
        ..Policy::default()
    };
    let (insp, _) = Inspector::compile_tuned(&rules, &policy, true, input.prefilter)
        .expect("rules of 1..=24 bytes always compile");
    let scope = insp.scope_of(6, 443, None, Some(0)).expect("every rule is in scope");
    assert_eq!(insp.scope_of(6, 443, Some(0), None), None, "egress is out of scope");
    let ids = insp.scope_rules(scope).to_vec();
    let mut st = insp.stream(Some(scope));
    let mut model = ReferenceStream::new();
    if input.syn {
        insp.tcp_syn(&mut st, input.isn);
        model.syn(input.isn);
    }
    let mut next = input.isn.wrapping_add(1);
    let mut totals = vec![0u64; rules.rules.len()];
    for seg in input.segments.iter().take(16) {
        let mut seq = next.wrapping_add(i32::from(seg.shift) as u32);
        if seg.far {
            seq = seq.wrapping_add(0x8000_0000);
        }
        if seg.syn {
            insp.tcp_syn(&mut st, seq.wrapping_sub(1));
            model.syn(seq.wrapping_sub(1));
        }
        let bytes = &seg.bytes[..seg.bytes.len().min(5000)];
        let got = insp.tcp_segment(&mut st, seq, bytes);
        let want = model.segment(&rules, &ids, seq, bytes);
        assert_eq!(got, want.outcome, "segment at {seq}");
        for (t, m) in totals.iter_mut().zip(&want.matches) {
            *t += m;
        }
        let d = insp.datagram(scope, bytes);
        let dw = reference_datagram(&rules, &ids, bytes);
        assert_eq!(d, dw.outcome, "datagram");
        for (t, m) in totals.iter_mut().zip(&dw.matches) {
            *t += m;
        }
        if let Some(n) = st.next_seq() {
            next = n;
        }
    }
    let counted: Vec<u64> = insp.counters().rules.iter().map(|r| r.2).collect();
    assert_eq!(counted, totals);
});
