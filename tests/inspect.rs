//! Payload inspection (issue #8): segmentation, overlap, case, retransmission, reordering,
//! wrap-around, scopes, and the loader's errors; the stream scanner and the scope table are
//! held equal to the naive models of `vpcfw::inspect::reference`.

use proptest::prelude::*;
use vpcfw::inspect::{
    Inspector, ReferenceStream, Rule, RuleAction, RuleId, RuleScope, RuleSet, ScopeDirection,
    ScopeId, reference_datagram, reference_scope,
};
use vpcfw::policy::{Eni, Policy};

fn eni(id: &str, groups: &[&str]) -> Eni {
    Eni {
        id: id.into(),
        subnet_id: "subnet-1".into(),
        owner_id: None,
        private_ipv4: vec![],
        ipv6: vec![],
        groups: groups.iter().map(|g| g.to_string()).collect(),
        instance_id: None,
        conntrack: Default::default(),
    }
}

fn policy() -> Policy {
    Policy {
        enis: vec![
            eni("eni-web", &["sg-web"]),
            eni("eni-app", &["sg-app"]),
            eni("eni-db", &["sg-db", "sg-app"]),
        ],
        ..Policy::default()
    }
}

fn rule(name: &str, action: RuleAction, pattern: &[u8], lowercase: bool) -> Rule {
    Rule {
        name: name.into(),
        action,
        pattern: pattern.to_vec(),
        lowercase,
        scope: RuleScope::any(6, ScopeDirection::Both),
        path: String::new(),
    }
}

fn set(rules: Vec<Rule>) -> RuleSet {
    let mut rules = rules;
    for (i, r) in rules.iter_mut().enumerate() {
        r.path = format!("ByteMatchRules[{i}]");
    }
    RuleSet {
        file: "inspection.json".into(),
        rules,
    }
}

/// The inspector and the one scope of tcp traffic into eni-web.
fn compile(rules: &RuleSet) -> (Inspector, ScopeId) {
    let (insp, warnings) = Inspector::compile(rules, &policy()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let scope = insp.scope_of(6, 80, None, Some(0)).expect("in scope");
    (insp, scope)
}

const IMDS: &[u8] = b"169.254.169.254";

fn imds_rules() -> RuleSet {
    set(vec![rule("imds", RuleAction::Block, IMDS, false)])
}

#[test]
fn pattern_split_at_every_boundary_across_two_segments() {
    let rules = imds_rules();
    let (insp, scope) = compile(&rules);
    let text = b"GET /fetch?url=http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\n";
    let end = text.windows(IMDS.len()).position(|w| w == IMDS).unwrap() + IMDS.len();
    for k in 0..=text.len() {
        let mut st = insp.stream(Some(scope));
        insp.tcp_syn(&mut st, 1000);
        let a = insp.tcp_segment(&mut st, 1001, &text[..k]);
        let b = insp.tcp_segment(&mut st, 1001 + k as u32, &text[k..]);
        let hit = a
            .block
            .or(b.block)
            .unwrap_or_else(|| panic!("split at {k}: not found"));
        assert_eq!(hit.rule, RuleId(0));
        if end <= k {
            assert!(a.is_block() && b.already_blocked, "split {k}");
            assert_eq!(hit.end as usize, end);
        } else {
            assert!(!a.is_block() && b.is_block(), "split {k}");
            assert_eq!(hit.end as usize, end - k);
        }
        assert_eq!(st.blocked_by(), Some(RuleId(0)));
    }
}

#[test]
fn pattern_split_at_every_pair_of_boundaries_across_three_segments() {
    let rules = imds_rules();
    let (insp, scope) = compile(&rules);
    let text = b"x=169.254.169.254;";
    for i in 0..=text.len() {
        for j in i..=text.len() {
            let mut st = insp.stream(Some(scope));
            insp.tcp_syn(&mut st, u32::MAX - 5);
            let mut seq = (u32::MAX - 5).wrapping_add(1);
            let mut blocks = 0;
            for part in [&text[..i], &text[i..j], &text[j..]] {
                let o = insp.tcp_segment(&mut st, seq, part);
                if o.block.is_some() && !o.already_blocked {
                    blocks += 1;
                }
                seq = seq.wrapping_add(part.len() as u32);
            }
            assert_eq!(blocks, 1, "splits {i} {j}");
            assert_eq!(st.blocked_by(), Some(RuleId(0)));
        }
    }
}

#[test]
fn overlapping_patterns_are_all_reported() {
    let rules = set(vec![
        rule("he", RuleAction::Count, b"he", false),
        rule("she", RuleAction::Count, b"she", false),
        rule("his", RuleAction::Count, b"his", false),
        rule("hers", RuleAction::Count, b"hers", false),
        rule("aa", RuleAction::Count, b"aa", false),
    ]);
    let (insp, scope) = compile(&rules);
    let mut st = insp.stream(Some(scope));
    let o = insp.tcp_segment(&mut st, 7, b"ushers aaaa");
    // she and he end at 4, hers at 6, aa at 9, 10, 11.
    assert_eq!(o.counted, 6);
    assert_eq!(o.count.unwrap().rule, RuleId(0));
    assert_eq!(o.count.unwrap().end, 4);
    let c = insp.counters();
    let by_name: Vec<u64> = c.rules.iter().map(|r| r.2).collect();
    assert_eq!(by_name, vec![1, 1, 0, 1, 3]);
}

#[test]
fn block_stops_the_scan_and_marks_the_stream() {
    let rules = set(vec![
        rule("early-count", RuleAction::Count, b"GET", false),
        rule("imds", RuleAction::Block, IMDS, false),
        rule("late-count", RuleAction::Count, b"HTTP", false),
    ]);
    let (insp, scope) = compile(&rules);
    let mut st = insp.stream(Some(scope));
    let o = insp.tcp_segment(&mut st, 1, b"GET /169.254.169.254 HTTP/1.1");
    assert_eq!(o.block.unwrap().rule, RuleId(1));
    assert_eq!(o.block.unwrap().end, 20);
    assert_eq!(o.counted, 1, "HTTP lies after the block and is not scanned");
    assert_eq!(o.scanned, 20);
    let later = insp.tcp_segment(&mut st, 30, b"GET again");
    assert!(later.already_blocked && later.is_block());
    assert_eq!(later.counted, 0);
    assert_eq!(insp.counters().rules[2].2, 0);
}

#[test]
fn lowercase_rules_ignore_ascii_case_and_none_rules_do_not() {
    let rules = set(vec![
        rule("union", RuleAction::Count, b"Union Select", true),
        rule("admin-exact", RuleAction::Count, b"Admin", false),
        rule("digits", RuleAction::Count, b"1=1", false),
    ]);
    let (insp, scope) = compile(&rules);
    let mut st = insp.stream(Some(scope));
    let o = insp.tcp_segment(&mut st, 1, b"q=1' UNION sELECT x or 1=1 admin ADMIN Admin");
    assert_eq!(o.counted, 3);
    let c: Vec<u64> = insp.counters().rules.iter().map(|r| r.2).collect();
    assert_eq!(c, vec![1, 1, 1]);
    // Split case-insensitive occurrence across segments.
    let mut st = insp.stream(Some(scope));
    assert_eq!(insp.tcp_segment(&mut st, 1, b"xx uNiOn S").counted, 0);
    assert_eq!(insp.tcp_segment(&mut st, 11, b"eLeCt yy").counted, 1);
}

#[test]
fn retransmissions_are_skipped_and_overlaps_scan_only_new_bytes() {
    let rules = set(vec![
        rule("abc", RuleAction::Count, b"abc", false),
        rule("cd", RuleAction::Count, b"cd", false),
    ]);
    let (insp, scope) = compile(&rules);
    let mut st = insp.stream(Some(scope));
    insp.tcp_syn(&mut st, 99);
    assert_eq!(insp.tcp_segment(&mut st, 100, b"xxabc").counted, 1);
    // A full retransmission: skipped, not counted again.
    let o = insp.tcp_segment(&mut st, 100, b"xxabc");
    assert!(o.retransmission && o.counted == 0 && o.scanned == 0);
    let o = insp.tcp_segment(&mut st, 102, b"abc");
    assert!(o.retransmission);
    // A partial overlap: "abc" is old, "d" is new and completes "cd".
    let o = insp.tcp_segment(&mut st, 102, b"abcd");
    assert!(!o.retransmission && !o.gap);
    assert_eq!(o.scanned, 1);
    assert_eq!(o.counted, 1);
    assert_eq!(o.count.unwrap().rule, RuleId(1));
    assert_eq!(o.count.unwrap().end, 4);
    assert_eq!(st.next_seq(), Some(106));
    let c = insp.counters();
    assert_eq!(
        (c.rules[0].2, c.rules[1].2, c.retransmissions, c.gaps),
        (1, 1, 2, 0)
    );
}

#[test]
fn out_of_order_segments_reset_at_the_gap_and_are_counted() {
    let rules = imds_rules();
    let (insp, scope) = compile(&rules);
    let mut st = insp.stream(Some(scope));
    insp.tcp_syn(&mut st, 0);
    assert!(!insp.tcp_segment(&mut st, 1, b"GET /?u=169.254.").is_block());
    // The third segment overtakes the second: a gap, the automaton restarts.
    let o = insp.tcp_segment(&mut st, 1 + 16 + 7, b"/ HTTP/1.1");
    assert!(o.gap && !o.is_block());
    // The second arrives late: it lies below the next expected byte, so it is skipped.
    let o = insp.tcp_segment(&mut st, 17, b"169.254");
    assert!(o.retransmission && !o.is_block());
    assert_eq!(insp.counters().gaps, 1);
    // After the gap, in-order bytes are matched again.
    let o = insp.tcp_segment(&mut st, 34, b"Host: 169.254.169.254");
    assert!(o.is_block());
}

#[test]
fn sequence_numbers_wrap_around() {
    let rules = imds_rules();
    let (insp, scope) = compile(&rules);
    for isn in [u32::MAX - 8, u32::MAX - 1, u32::MAX, 0x7fff_fff0] {
        let mut st = insp.stream(Some(scope));
        insp.tcp_syn(&mut st, isn);
        let seq = isn.wrapping_add(1);
        assert!(!insp.tcp_segment(&mut st, seq, b"abcdefgh169.2").is_block());
        // A retransmission across the wrap is still recognised as old.
        assert!(
            insp.tcp_segment(&mut st, seq, b"abcdefgh169.2")
                .retransmission
        );
        let o = insp.tcp_segment(&mut st, seq.wrapping_add(13), b"54.169.254");
        assert!(o.is_block(), "isn {isn}");
        assert_eq!(o.block.unwrap().end, 10);
    }
}

#[test]
fn later_syns_do_not_move_a_synchronised_stream() {
    let rules = imds_rules();
    let (insp, scope) = compile(&rules);
    let mut st = insp.stream(Some(scope));
    insp.tcp_syn(&mut st, 10);
    insp.tcp_segment(&mut st, 11, b"169.254.");
    insp.tcp_syn(&mut st, 10);
    assert!(insp.tcp_segment(&mut st, 19, b"169.254").is_block());
}

#[test]
fn udp_datagrams_are_matched_one_by_one() {
    let mut r = rule("dns-exfil", RuleAction::Block, b"secret", true);
    r.scope = RuleScope::any(17, ScopeDirection::Egress);
    let rules = set(vec![r]);
    let (insp, _) = Inspector::compile(&rules, &policy()).unwrap();
    assert_eq!(
        insp.scope_of(17, 53, None, Some(0)),
        None,
        "ingress is out of scope"
    );
    let scope = insp.scope_of(17, 53, Some(1), None).unwrap();
    assert!(insp.datagram(scope, b"xSECRETx").is_block());
    assert!(!insp.datagram(scope, b"sec").is_block());
    assert!(
        !insp.datagram(scope, b"ret").is_block(),
        "no state across datagrams"
    );
}

#[test]
fn patterns_across_lowercase_chunk_boundaries() {
    // Payloads longer than the scanner's lowercasing chunk, with the pattern at every offset
    // around the chunk boundary, in a class that mixes case modes.
    let rules = set(vec![
        rule("ci", RuleAction::Count, b"MetaData", true),
        rule("cs", RuleAction::Count, b"Token", false),
    ]);
    let (insp, scope) = compile(&rules);
    for at in 2030..2060 {
        let mut text = vec![b'.'; 4200];
        text[at..at + 8].copy_from_slice(b"mEtAdAtA");
        text[at + 2000..at + 2005].copy_from_slice(b"Token");
        let mut st = insp.stream(Some(scope));
        let o = insp.tcp_segment(&mut st, 1, &text);
        assert_eq!(o.counted, 2, "at {at}");
        assert_eq!(o.count.unwrap().end as usize, at + 8);
        let d = insp.datagram(scope, &text);
        assert_eq!(d.counted, 2);
    }
}

#[test]
fn scopes_select_rules_by_protocol_port_direction_and_eni() {
    let mut a = rule("web-in-80", RuleAction::Block, b"aaa", false);
    a.scope.direction = ScopeDirection::Ingress;
    a.scope.ports = vec![(80, 80), (8080, 8090)];
    a.scope.enis = vec!["eni-web".into()];
    let mut b = rule("app-group-out", RuleAction::Count, b"bbb", false);
    b.scope.direction = ScopeDirection::Egress;
    b.scope.groups = vec!["sg-app".into()];
    let mut c = rule("udp-all", RuleAction::Count, b"ccc", false);
    c.scope = RuleScope::any(17, ScopeDirection::Both);
    let rules = set(vec![a, b, c]);
    let (insp, warnings) = Inspector::compile(&rules, &policy()).unwrap();
    assert!(warnings.is_empty());
    let rules_of = |proto, port, s, d| {
        insp.scope_of(proto, port, s, d)
            .map(|x| insp.scope_rules(x).to_vec())
            .unwrap_or_default()
    };
    assert_eq!(rules_of(6, 80, None, Some(0)), vec![RuleId(0)]);
    assert_eq!(
        rules_of(6, 8085, Some(1), Some(0)),
        vec![RuleId(0), RuleId(1)]
    );
    assert_eq!(
        rules_of(6, 81, Some(2), None),
        vec![RuleId(1)],
        "eni-db carries sg-app"
    );
    assert_eq!(rules_of(6, 81, None, Some(0)), vec![]);
    assert_eq!(rules_of(6, 80, None, Some(1)), vec![], "not eni-web");
    assert_eq!(
        rules_of(17, 53, None, None),
        vec![],
        "no ENI on either side"
    );
    assert_eq!(rules_of(17, 53, None, Some(2)), vec![RuleId(2)]);
    assert_eq!(rules_of(1, 0, Some(0), Some(1)), vec![]);
    // The same rule set at two places is one class.
    assert_eq!(
        insp.scope_of(6, 80, None, Some(0)),
        insp.scope_of(6, 8080, None, Some(0))
    );
}

#[test]
fn rules_built_in_code_are_checked_too() {
    let empty = set(vec![rule("e", RuleAction::Count, b"", false)]);
    let e = Inspector::compile(&empty, &policy()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "inspection.json: ByteMatchRules[0].SearchString: expected a search string of 1 to 200 bytes, found 0 bytes"
    );
    let mut icmp = rule("i", RuleAction::Count, b"x", false);
    icmp.scope.protocol = 1;
    let e = Inspector::compile(&set(vec![icmp]), &policy()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "inspection.json: ByteMatchRules[0].Scope.Protocol: expected tcp (6) or udp (17), found 1"
    );
}

#[test]
fn unknown_enis_and_groups_are_warnings() {
    let mut a = rule("x", RuleAction::Block, b"x", false);
    a.scope.enis = vec!["eni-gone".into()];
    a.scope.groups = vec!["sg-gone".into()];
    let (insp, warnings) = Inspector::compile(&set(vec![a]), &policy()).unwrap();
    let text: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        text,
        vec![
            "inspection.json: ByteMatchRules[0].Scope.NetworkInterfaceIds[0]: ENI eni-gone is not in the snapshot: it matches nothing",
            "inspection.json: ByteMatchRules[0].Scope.GroupIds[0]: no ENI carries security group sg-gone is not in the snapshot: it matches nothing",
        ]
    );
    assert_eq!(insp.scope_of(6, 80, Some(0), Some(1)), None);
}

// ---- the rules file ----

const GOOD: &str = r#"{"ByteMatchRules": [
  {"Name": "imds-ssrf", "Action": "block", "SearchString": "169.254.169.254",
   "PositionalConstraint": "CONTAINS",
   "TextTransformations": [{"Priority": 0, "Type": "NONE"}],
   "FieldToMatch": {"UriPath": {}},
   "Scope": {"Protocol": "tcp", "DestinationPorts": [{"From": 80, "To": 80}, {"From": 8080, "To": 8080}],
             "Direction": "ingress", "GroupIds": ["sg-web"]}},
  {"Name": "sqli-union", "Action": "count", "SearchStringBase64": "dW5pb24gc2VsZWN0",
   "PositionalConstraint": "CONTAINS", "TextTransformations": "LOWERCASE",
   "Scope": {"Protocol": "udp", "Direction": "both", "NetworkInterfaceIds": ["eni-app"]}}
]}"#;

#[test]
fn the_documented_example_loads() {
    let rules = RuleSet::parse("inspection.json", GOOD).unwrap();
    assert_eq!(rules.rules.len(), 2);
    let r = &rules.rules[1];
    assert_eq!(r.pattern, b"union select");
    assert!(r.lowercase);
    assert_eq!(r.scope.protocol, 17);
    assert_eq!(rules.rules[0].scope.ports, vec![(80, 80), (8080, 8080)]);
    let (insp, w) = Inspector::compile(&rules, &policy()).unwrap();
    assert!(w.is_empty());
    let s = insp.scope_of(6, 8080, None, Some(0)).unwrap();
    let mut st = insp.stream(Some(s));
    assert!(
        insp.tcp_segment(&mut st, 1, b"GET /?x=http://169.254.169.254/ HTTP/1.1")
            .is_block()
    );
    assert_eq!(insp.scope_of(6, 8080, None, Some(1)), None);
    let u = insp.scope_of(17, 9999, Some(1), None).unwrap();
    assert_eq!(insp.datagram(u, b"1 UNION SELECT 2").counted, 1);
}

fn load_err(text: &str) -> String {
    RuleSet::parse("inspection.json", text)
        .unwrap_err()
        .to_string()
}

/// One rule with `field` replaced (or removed, when `value` is None).
fn with(field: &str, value: Option<&str>) -> String {
    let mut fields: Vec<(String, String)> = vec![
        ("Name".into(), r#""r""#.into()),
        ("Action".into(), r#""block""#.into()),
        ("SearchString".into(), r#""abc""#.into()),
        ("PositionalConstraint".into(), r#""CONTAINS""#.into()),
        (
            "Scope".into(),
            r#"{"Protocol": "tcp", "Direction": "ingress"}"#.into(),
        ),
    ];
    fields.retain(|(k, _)| k != field);
    if let Some(v) = value {
        fields.push((field.into(), v.into()));
    }
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("\"{k}\": {v}"))
        .collect();
    format!("{{\"ByteMatchRules\": [{{{}}}]}}", body.join(", "))
}

#[test]
fn loader_errors_name_file_path_and_expectation() {
    let cases: Vec<(String, &str)> = vec![
        (
            "{\"ByteMatchRules\": [,]}".into(),
            "inspection.json:1:21: invalid JSON: expected value",
        ),
        (
            "[1]".into(),
            "inspection.json: expected a JSON object with a ByteMatchRules array at the top level",
        ),
        (
            "{}".into(),
            "inspection.json: missing required field ByteMatchRules (an array of rules)",
        ),
        (
            "{\"ByteMatchRules\": 3}".into(),
            "inspection.json: ByteMatchRules: expected a sequence, found integer `3`",
        ),
        (
            with("Name", Some("7")),
            "inspection.json: ByteMatchRules[0].Name: expected a string, found integer `7`",
        ),
        (
            with("Name", None),
            "inspection.json: ByteMatchRules[0].Name: missing required field Name",
        ),
        (
            with("Name", Some("\"\"")),
            "inspection.json: ByteMatchRules[0].Name: expected a non-empty rule name",
        ),
        (
            with("Action", Some("\"allow\"")),
            "inspection.json: ByteMatchRules[0].Action: expected \"block\" or \"count\", found \"allow\"",
        ),
        (
            with("SearchString", None),
            "inspection.json: ByteMatchRules[0].SearchString: missing required field SearchString (or SearchStringBase64)",
        ),
        (
            with("SearchStringBase64", Some("\"YWJj\"")),
            "inspection.json: ByteMatchRules[0]: expected one of SearchString or SearchStringBase64, found both",
        ),
        (
            with("SearchString", Some("\"\"")),
            "inspection.json: ByteMatchRules[0].SearchString: expected a search string of 1 to 200 bytes, found 0 bytes",
        ),
        (
            with("SearchString", Some(&format!("\"{}\"", "x".repeat(201)))),
            "inspection.json: ByteMatchRules[0].SearchString: expected a search string of 1 to 200 bytes, found 201 bytes",
        ),
        (
            with("PositionalConstraint", Some("\"STARTS_WITH\"")),
            "inspection.json: ByteMatchRules[0].PositionalConstraint: expected \"CONTAINS\" (the only constraint a byte stream supports), found \"STARTS_WITH\"",
        ),
        (
            with("PositionalConstraint", None),
            "inspection.json: ByteMatchRules[0].PositionalConstraint: missing required field PositionalConstraint",
        ),
        (
            with("TextTransformations", Some("\"URL_DECODE\"")),
            "inspection.json: ByteMatchRules[0].TextTransformations: expected \"NONE\" or \"LOWERCASE\", found \"URL_DECODE\"",
        ),
        (
            with("TextTransformations", Some("[{\"Priority\": 0}]")),
            "inspection.json: ByteMatchRules[0].TextTransformations[0].Type: missing required field Type",
        ),
        (
            with("Scope", None),
            "inspection.json: ByteMatchRules[0].Scope: missing required field Scope",
        ),
        (
            with(
                "Scope",
                Some("{\"Protocol\": \"icmp\", \"Direction\": \"ingress\"}"),
            ),
            "inspection.json: ByteMatchRules[0].Scope.Protocol: expected \"tcp\" or \"udp\", found \"icmp\"",
        ),
        (
            with(
                "Scope",
                Some("{\"Protocol\": \"tcp\", \"Direction\": \"inbound\"}"),
            ),
            "inspection.json: ByteMatchRules[0].Scope.Direction: expected \"ingress\", \"egress\" or \"both\", found \"inbound\"",
        ),
        (
            with("Scope", Some("{\"Protocol\": \"tcp\"}")),
            "inspection.json: ByteMatchRules[0].Scope.Direction: missing required field Direction",
        ),
        (
            with(
                "Scope",
                Some(
                    "{\"Protocol\": \"tcp\", \"Direction\": \"both\", \"DestinationPorts\": [{\"From\": 1, \"To\": 70000}]}",
                ),
            ),
            "inspection.json: ByteMatchRules[0].Scope.DestinationPorts[0].To: expected a port from 0 to 65535, found 70000",
        ),
        (
            with(
                "Scope",
                Some(
                    "{\"Protocol\": \"tcp\", \"Direction\": \"both\", \"DestinationPorts\": [{\"From\": 90, \"To\": 80}]}",
                ),
            ),
            "inspection.json: ByteMatchRules[0].Scope.DestinationPorts[0]: expected From <= To, found From 90 and To 80",
        ),
        (
            with(
                "Scope",
                Some(
                    "{\"Protocol\": \"tcp\", \"Direction\": \"both\", \"DestinationPorts\": [{\"From\": 80}]}",
                ),
            ),
            "inspection.json: ByteMatchRules[0].Scope.DestinationPorts[0].To: missing required field To",
        ),
    ];
    for (text, want) in &cases {
        assert_eq!(&load_err(text), want, "input: {text}");
    }
    let b64 = load_err(
        &with("SearchString", None)
            .replace("\"Name\"", "\"SearchStringBase64\": \"YW*j\", \"Name\""),
    );
    assert_eq!(
        b64,
        "inspection.json: ByteMatchRules[0].SearchStringBase64: expected standard base64 (A-Z a-z 0-9 + /, = padding), found \"YW*j\""
    );
    let two = format!(
        "{{\"ByteMatchRules\": [{}, {}]}}",
        &with("Action", Some("\"count\""))[20..with("Action", Some("\"count\"")).len() - 2],
        &with("Action", Some("\"block\""))[20..with("Action", Some("\"block\"")).len() - 2],
    );
    assert_eq!(
        load_err(&two),
        "inspection.json: ByteMatchRules[1].Name: rule name \"r\" is used twice (first at ByteMatchRules[0])"
    );
    let missing = RuleSet::load(std::path::Path::new("/nonexistent/inspection.json")).unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("/nonexistent/inspection.json: cannot read inspection rules:")
    );
}

// ---- properties against the naive models ----

fn arb_rules() -> impl Strategy<Value = RuleSet> {
    let pattern = prop::collection::vec(prop::sample::select(b"abAB.9".to_vec()), 1..6);
    prop::collection::vec((pattern, any::<bool>(), any::<bool>(), 0u8..4), 1..8).prop_map(|v| {
        set(v
            .into_iter()
            .enumerate()
            .map(|(i, (p, lower, block, _))| {
                let action = if block && i % 3 == 0 {
                    RuleAction::Block
                } else {
                    RuleAction::Count
                };
                rule(&format!("r{i}"), action, &p, lower)
            })
            .collect())
    })
}

/// A segment: where it starts relative to the next expected byte (negative = overlap or
/// retransmission, positive = gap) and its bytes.
fn arb_segments() -> impl Strategy<Value = Vec<(i8, Vec<u8>)>> {
    let bytes = prop::collection::vec(prop::sample::select(b"abAB.9x".to_vec()), 0..24);
    let shift = prop_oneof![6 => Just(0i8), 1 => -12i8..0, 1 => 1i8..6];
    prop::collection::vec((shift, bytes), 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn stream_scanner_equals_the_naive_model(
        rules in arb_rules(),
        segments in arb_segments(),
        isn in prop_oneof![Just(u32::MAX - 20), any::<u32>()],
        syn in any::<bool>(),
    ) {
        let (insp, scope) = compile(&rules);
        let in_scope = insp.scope_rules(scope).to_vec();
        prop_assert_eq!(in_scope.len(), rules.rules.len());
        let mut st = insp.stream(Some(scope));
        let mut model = ReferenceStream::new();
        let mut next = isn.wrapping_add(1);
        if syn {
            insp.tcp_syn(&mut st, isn);
            model.syn(isn);
        }
        let mut totals = vec![0u64; rules.rules.len()];
        for (shift, bytes) in &segments {
            let seq = next.wrapping_add(*shift as i32 as u32);
            let got = insp.tcp_segment(&mut st, seq, bytes);
            let want = model.segment(&rules, &in_scope, seq, bytes);
            prop_assert_eq!(got, want.outcome, "segment at {} {:?}", seq, bytes);
            for (t, m) in totals.iter_mut().zip(&want.matches) {
                *t += m;
            }
            let end = seq.wrapping_add(bytes.len() as u32);
            if (end.wrapping_sub(next) as i32) > 0 {
                next = end;
            }
        }
        let counted: Vec<u64> = insp.counters().rules.iter().map(|r| r.2).collect();
        prop_assert_eq!(counted, totals);
    }

    #[test]
    fn long_segments_through_the_prefilter_equal_the_naive_model(
        rules in arb_rules(),
        segments in prop::collection::vec((prop_oneof![4 => Just(0i8), 1 => -40i8..0, 1 => 1i8..40], prop::collection::vec(prop::sample::select(b"abAB.9xyz-".to_vec()), 0..700)), 1..6),
        prefilter in any::<bool>(),
    ) {
        // Payloads long enough for Teddy's vector path (and for the lowercasing chunks), with
        // the prefilter on and off.
        let (insp, _) = Inspector::compile_tuned(&rules, &policy(), true, prefilter).unwrap();
        let scope = insp.scope_of(6, 80, None, Some(0)).unwrap();
        let ids = insp.scope_rules(scope).to_vec();
        let mut st = insp.stream(Some(scope));
        let mut model = ReferenceStream::new();
        let mut next = 5000u32;
        for (shift, bytes) in &segments {
            let seq = next.wrapping_add(*shift as i32 as u32);
            let got = insp.tcp_segment(&mut st, seq, bytes);
            let want = model.segment(&rules, &ids, seq, bytes);
            prop_assert_eq!(got, want.outcome);
            let end = seq.wrapping_add(bytes.len() as u32);
            if (end.wrapping_sub(next) as i32) > 0 {
                next = end;
            }
        }
    }

    #[test]
    fn datagrams_equal_the_naive_model(rules in arb_rules(), payload in prop::collection::vec(prop::sample::select(b"abAB.9x".to_vec()), 0..64)) {
        let (insp, scope) = compile(&rules);
        let ids = insp.scope_rules(scope).to_vec();
        let got = insp.datagram(scope, &payload);
        let want = reference_datagram(&rules, &ids, &payload);
        prop_assert_eq!(got, want.outcome);
    }

    #[test]
    fn scope_table_equals_reading_every_rule(
        scopes in prop::collection::vec((
            prop_oneof![Just(6u8), Just(17u8)],
            prop::collection::vec((0u16..12, 0u16..6), 0..3),
            0u8..3,
            prop::collection::vec(0usize..4, 0..2),
            prop::collection::vec(0usize..4, 0..2),
        ), 1..8),
        probes in prop::collection::vec((prop_oneof![Just(6u8), Just(17u8), Just(1u8)], 0u16..20, prop::option::of(0u32..4), prop::option::of(0u32..4)), 32),
    ) {
        let enis = ["eni-web", "eni-app", "eni-db", "eni-gone"];
        let groups = ["sg-web", "sg-app", "sg-db", "sg-gone"];
        let rules = set(scopes.iter().enumerate().map(|(i, (proto, ports, dir, e, g))| {
            let mut r = rule(&format!("r{i}"), RuleAction::Count, b"x", false);
            r.scope = RuleScope {
                protocol: *proto,
                ports: ports.iter().map(|&(from, len)| (from, from + len)).collect(),
                direction: [ScopeDirection::Ingress, ScopeDirection::Egress, ScopeDirection::Both][*dir as usize],
                enis: e.iter().map(|&k| enis[k].to_string()).collect(),
                groups: g.iter().map(|&k| groups[k].to_string()).collect(),
            };
            r
        }).collect());
        let p = policy();
        let (insp, _) = Inspector::compile(&rules, &p).unwrap();
        for (proto, port, s, d) in probes {
            let got = insp.scope_of(proto, port, s, d).map(|x| insp.scope_rules(x).to_vec()).unwrap_or_default();
            prop_assert_eq!(got, reference_scope(&rules, &p, proto, port, s, d));
        }
    }
}
