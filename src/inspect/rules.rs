//! The rules file: loading and validating `inspection.json` (the format is documented in
//! [`crate::inspect`]).

use crate::aws::{LoadError, Location, describe_serde};
use serde::Deserialize;

/// The longest search string accepted, in bytes (AWS WAF's limit for `SearchString`).
pub const MAX_SEARCH_LEN: usize = 200;

/// The most rules one file may hold (rule ids are 16-bit).
pub const MAX_RULES: usize = 4096;

/// What a match does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleAction {
    /// Drop the packet and every later packet of the flow.
    Block,
    /// Only count the match.
    Count,
}

impl RuleAction {
    /// `block` or `count`, as in the rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Block => "block",
            RuleAction::Count => "count",
        }
    }
}

/// Which packets a rule looks at, relative to an ENI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScopeDirection {
    /// Packets arriving at the ENI (the packet's destination ENI).
    Ingress,
    /// Packets leaving the ENI (the packet's source ENI).
    Egress,
    /// Both.
    Both,
}

impl ScopeDirection {
    pub(crate) fn ingress(self) -> bool {
        matches!(self, ScopeDirection::Ingress | ScopeDirection::Both)
    }
    pub(crate) fn egress(self) -> bool {
        matches!(self, ScopeDirection::Egress | ScopeDirection::Both)
    }
}

/// Where a rule applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleScope {
    /// IP protocol: 6 (tcp) or 17 (udp).
    pub protocol: u8,
    /// Inclusive destination-port ranges of the packet; empty means every port.
    pub ports: Vec<(u16, u16)>,
    /// Packet direction relative to the ENI.
    pub direction: ScopeDirection,
    /// ENIs (`eni-…`) the rule is limited to. With `groups` also empty, every ENI.
    pub enis: Vec<String>,
    /// Security groups (`sg-…`): the rule also applies to every ENI carrying one of them.
    pub groups: Vec<String>,
}

impl RuleScope {
    /// Every ENI, every port of `protocol`, in `direction`.
    pub fn any(protocol: u8, direction: ScopeDirection) -> RuleScope {
        RuleScope {
            protocol,
            ports: Vec::new(),
            direction,
            enis: Vec::new(),
            groups: Vec::new(),
        }
    }
}

/// One byte-match rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `Name`: unique in the file; shown in `explain`, statistics and verdicts.
    pub name: String,
    /// `Action`.
    pub action: RuleAction,
    /// The bytes searched for (decoded; not yet lowercased).
    pub pattern: Vec<u8>,
    /// `TextTransformations` `LOWERCASE`: ASCII letters match in either case.
    pub lowercase: bool,
    /// `Scope`.
    pub scope: RuleScope,
    /// The JSON path of the rule in its file (`ByteMatchRules[3]`), for messages.
    pub path: String,
}

/// A loaded rules file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// The file name given to the loader.
    pub file: String,
    /// The rules, in file order (a rule's index is its [`super::RuleId`]).
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawFile {
    byte_match_rules: Option<Vec<RawRule>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRule {
    name: Option<String>,
    action: Option<String>,
    search_string: Option<String>,
    search_string_base64: Option<String>,
    positional_constraint: Option<String>,
    text_transformations: Option<Transformations>,
    scope: Option<RawScope>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Transformations {
    One(String),
    List(Vec<RawTransformation>),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawTransformation {
    #[serde(rename = "Priority")]
    _priority: Option<i64>,
    #[serde(rename = "Type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawScope {
    protocol: Option<String>,
    destination_ports: Option<Vec<RawPortRange>>,
    direction: Option<String>,
    network_interface_ids: Option<Vec<String>>,
    group_ids: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawPortRange {
    from: Option<i64>,
    to: Option<i64>,
}

fn err(file: &str, path: impl Into<String>, message: impl Into<String>) -> LoadError {
    LoadError {
        location: Location {
            file: Some(file.to_owned()),
            path: Some(path.into()),
            ..Location::default()
        },
        message: message.into(),
    }
}

fn required<T>(file: &str, p: &str, field: &str, v: Option<T>) -> Result<T, LoadError> {
    v.ok_or_else(|| {
        err(
            file,
            format!("{p}.{field}"),
            format!("missing required field {field}"),
        )
    })
}

impl RuleSet {
    /// Reads and validates a rules file.
    pub fn load(path: &std::path::Path) -> Result<RuleSet, LoadError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| LoadError {
            location: Location {
                file: Some(name.clone()),
                ..Location::default()
            },
            message: format!("cannot read inspection rules: {e}"),
        })?;
        RuleSet::parse(&name, &text)
    }

    /// Parses and validates the text of a rules file called `file` (used in messages).
    pub fn parse(file: &str, text: &str) -> Result<RuleSet, LoadError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| LoadError::invalid_json(file, &e))?;
        if !value.is_object() {
            return Err(LoadError {
                location: Location {
                    file: Some(file.to_owned()),
                    ..Location::default()
                },
                message: "expected a JSON object with a ByteMatchRules array at the top level"
                    .into(),
            });
        }
        let raw: RawFile = serde_path_to_error::deserialize(value).map_err(|e| {
            err(
                file,
                e.path().to_string(),
                format!("expected {}", describe_serde(e.inner())),
            )
        })?;
        let Some(raw_rules) = raw.byte_match_rules else {
            return Err(LoadError {
                location: Location {
                    file: Some(file.to_owned()),
                    ..Location::default()
                },
                message: "missing required field ByteMatchRules (an array of rules)".into(),
            });
        };
        if raw_rules.len() > MAX_RULES {
            return Err(err(
                file,
                "ByteMatchRules",
                format!(
                    "expected at most {MAX_RULES} rules, found {}",
                    raw_rules.len()
                ),
            ));
        }
        let mut rules: Vec<Rule> = Vec::with_capacity(raw_rules.len());
        for (i, r) in raw_rules.into_iter().enumerate() {
            let rule = convert(file, &format!("ByteMatchRules[{i}]"), r)?;
            if let Some(prev) = rules.iter().find(|p| p.name == rule.name) {
                return Err(err(
                    file,
                    format!("{}.Name", rule.path),
                    format!(
                        "rule name {:?} is used twice (first at {})",
                        rule.name, prev.path
                    ),
                ));
            }
            rules.push(rule);
        }
        Ok(RuleSet {
            file: file.to_owned(),
            rules,
        })
    }
}

fn convert(f: &str, p: &str, r: RawRule) -> Result<Rule, LoadError> {
    let name = required(f, p, "Name", r.name)?;
    if name.is_empty() {
        return Err(err(
            f,
            format!("{p}.Name"),
            "expected a non-empty rule name",
        ));
    }
    let action = match required(f, p, "Action", r.action)?.as_str() {
        "block" | "BLOCK" | "Block" => RuleAction::Block,
        "count" | "COUNT" | "Count" => RuleAction::Count,
        other => {
            return Err(err(
                f,
                format!("{p}.Action"),
                format!("expected \"block\" or \"count\", found {other:?}"),
            ));
        }
    };
    let pattern = match (r.search_string, r.search_string_base64) {
        (Some(s), None) => s.into_bytes(),
        (None, Some(b)) => base64_decode(&b).ok_or_else(|| {
            err(
                f,
                format!("{p}.SearchStringBase64"),
                format!("expected standard base64 (A-Z a-z 0-9 + /, = padding), found {b:?}"),
            )
        })?,
        (Some(_), Some(_)) => {
            return Err(err(
                f,
                p,
                "expected one of SearchString or SearchStringBase64, found both",
            ));
        }
        (None, None) => {
            return Err(err(
                f,
                format!("{p}.SearchString"),
                "missing required field SearchString (or SearchStringBase64)",
            ));
        }
    };
    if pattern.is_empty() || pattern.len() > MAX_SEARCH_LEN {
        return Err(err(
            f,
            format!("{p}.SearchString"),
            format!(
                "expected a search string of 1 to {MAX_SEARCH_LEN} bytes, found {} bytes",
                pattern.len()
            ),
        ));
    }
    let constraint = required(f, p, "PositionalConstraint", r.positional_constraint)?;
    if constraint != "CONTAINS" {
        return Err(err(
            f,
            format!("{p}.PositionalConstraint"),
            format!(
                "expected \"CONTAINS\" (the only constraint a byte stream supports), found {constraint:?}"
            ),
        ));
    }
    let lowercase = transformations(
        f,
        &format!("{p}.TextTransformations"),
        r.text_transformations,
    )?;
    let scope = scope(f, &format!("{p}.Scope"), required(f, p, "Scope", r.scope)?)?;
    Ok(Rule {
        name,
        action,
        pattern,
        lowercase,
        scope,
        path: p.to_owned(),
    })
}

fn transformation(f: &str, p: &str, t: &str) -> Result<bool, LoadError> {
    match t {
        "NONE" => Ok(false),
        "LOWERCASE" => Ok(true),
        other => Err(err(
            f,
            p,
            format!("expected \"NONE\" or \"LOWERCASE\", found {other:?}"),
        )),
    }
}

fn transformations(f: &str, p: &str, t: Option<Transformations>) -> Result<bool, LoadError> {
    match t {
        None => Ok(false),
        Some(Transformations::One(s)) => transformation(f, p, &s),
        Some(Transformations::List(list)) => {
            let mut lower = false;
            for (i, t) in list.into_iter().enumerate() {
                let here = format!("{p}[{i}]");
                let kind = required(f, &here, "Type", t.kind)?;
                lower |= transformation(f, &format!("{here}.Type"), &kind)?;
            }
            Ok(lower)
        }
    }
}

fn scope(f: &str, p: &str, s: RawScope) -> Result<RuleScope, LoadError> {
    let protocol = match required(f, p, "Protocol", s.protocol)?.as_str() {
        "tcp" | "TCP" | "6" => 6,
        "udp" | "UDP" | "17" => 17,
        other => {
            return Err(err(
                f,
                format!("{p}.Protocol"),
                format!("expected \"tcp\" or \"udp\", found {other:?}"),
            ));
        }
    };
    let mut ports = Vec::new();
    for (i, r) in s
        .destination_ports
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let here = format!("{p}.DestinationPorts[{i}]");
        let port = |field: &str, v: Option<i64>| -> Result<u16, LoadError> {
            let v = required(f, &here, field, v)?;
            u16::try_from(v).map_err(|_| {
                err(
                    f,
                    format!("{here}.{field}"),
                    format!("expected a port from 0 to 65535, found {v}"),
                )
            })
        };
        let (from, to) = (port("From", r.from)?, port("To", r.to)?);
        if from > to {
            return Err(err(
                f,
                here,
                format!("expected From <= To, found From {from} and To {to}"),
            ));
        }
        ports.push((from, to));
    }
    let direction = match required(f, p, "Direction", s.direction)?.as_str() {
        "ingress" => ScopeDirection::Ingress,
        "egress" => ScopeDirection::Egress,
        "both" => ScopeDirection::Both,
        other => {
            return Err(err(
                f,
                format!("{p}.Direction"),
                format!("expected \"ingress\", \"egress\" or \"both\", found {other:?}"),
            ));
        }
    };
    Ok(RuleScope {
        protocol,
        ports,
        direction,
        enis: s.network_interface_ids.unwrap_or_default(),
        groups: s.group_ids.unwrap_or_default(),
    })
}

/// Decodes standard base64 (RFC 4648 alphabet, `=` padding optional, no whitespace).
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(
            base64_decode("MTY5LjI1NC4xNjkuMjU0").unwrap(),
            b"169.254.169.254"
        );
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
        assert_eq!(base64_decode("YWI").unwrap(), b"ab");
        assert!(base64_decode("Y").is_none());
        assert!(base64_decode("YW*j").is_none());
    }
}
