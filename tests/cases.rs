//! Data-driven SPEC cases: every folder under `tests/cases/` (and `examples/three-tier`) is
//! run through the real `vpcfw eval` binary.
//!
//! A case folder holds `snapshot/` (AWS CLI JSON), `events.jsonl`, `expected.jsonl` (one
//! object per event; every field given must equal the answer's, `"error": true` means "an
//! error field is present") and optionally `args` (extra CLI arguments). A folder with
//! `expected-error.txt` instead expects the snapshot to fail to load (exit status 2) with a
//! message containing that text.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vpcfw")
}

/// Runs one case; returns the list of mismatches.
fn run_case(dir: &Path, snapshot: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let name = dir
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    if let Ok(needle) = std::fs::read_to_string(dir.join("expected-error.txt")) {
        let needle = needle.trim();
        let out = Command::new(bin())
            .current_dir(dir)
            .args(["eval", "--snapshot", snapshot])
            .stdin(Stdio::null())
            .output()
            .expect("run vpcfw");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(2) {
            failures.push(format!(
                "{name}: expected exit status 2, got {:?} (stderr: {stderr})",
                out.status.code()
            ));
        }
        if !stderr.contains(needle) {
            failures.push(format!(
                "{name}: stderr does not contain {needle:?}: {stderr}"
            ));
        }
        if !out.stdout.is_empty() {
            failures.push(format!(
                "{name}: printed answers although the snapshot failed to load"
            ));
        }
        return failures;
    }
    let args: Vec<String> = std::fs::read_to_string(dir.join("args"))
        .map(|a| a.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let events = std::fs::read_to_string(dir.join("events.jsonl")).expect("events.jsonl");
    let expected = std::fs::read_to_string(dir.join("expected.jsonl")).expect("expected.jsonl");
    let out = Command::new(bin())
        .current_dir(dir)
        .args([
            "eval",
            "--quiet",
            "--snapshot",
            snapshot,
            "--events",
            "events.jsonl",
        ])
        .args(&args)
        .output()
        .expect("run vpcfw");
    if !out.status.success() {
        return vec![format!(
            "{name}: vpcfw failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )];
    }
    let answers: Vec<&str> = std::str::from_utf8(&out.stdout)
        .expect("utf-8")
        .lines()
        .collect();
    let event_lines: Vec<&str> = events.lines().collect();
    let expected: Vec<&str> = expected.lines().collect();
    if answers.len() != event_lines.len() {
        failures.push(format!(
            "{name}: {} event lines but {} answers",
            event_lines.len(),
            answers.len()
        ));
    }
    if expected.len() != event_lines.len() {
        failures.push(format!(
            "{name}: {} event lines but {} expected lines",
            event_lines.len(),
            expected.len()
        ));
    }
    for (i, (want, got)) in expected.iter().zip(&answers).enumerate() {
        let want: Value = serde_json::from_str(want)
            .unwrap_or_else(|e| panic!("{name}: expected line {}: {e}", i + 1));
        let got: Value = serde_json::from_str(got)
            .unwrap_or_else(|e| panic!("{name}: answer line {}: {e}", i + 1));
        let Value::Object(want) = want else {
            panic!("{name}: expected line {} is not an object", i + 1)
        };
        for (field, value) in &want {
            let ok = match (field.as_str(), value) {
                ("error", Value::Bool(true)) => got.get("error").is_some(),
                _ => got.get(field).unwrap_or(&Value::Null) == value,
            };
            if !ok {
                failures.push(format!(
                    "{name}: line {}: {}\n      expected {field} = {value}, got {got}",
                    i + 1,
                    event_lines.get(i).unwrap_or(&"?")
                ));
            }
        }
    }
    failures
}

fn case_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

#[test]
fn spec_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let dirs = case_dirs(&root);
    assert!(!dirs.is_empty(), "no cases under {}", root.display());
    let failures: Vec<String> = dirs.iter().flat_map(|d| run_case(d, "snapshot")).collect();
    assert!(
        failures.is_empty(),
        "{} mismatches in {} cases:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}

#[test]
fn three_tier_example() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/three-tier");
    let failures = run_case(&dir, ".");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
