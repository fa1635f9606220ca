//! `vpcfw replay` and `vpcfw pcap` end to end: replay of a capture made from eval events agrees
//! with `vpcfw eval` frame by frame, in its summary, its flow logs and its pcap outputs, for
//! every capture format; truncated and garbage files fail cleanly with the offset.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use vpcfw::capture::{CaptureReader, CaptureWriter, ErrorKind, Format};
use vpcfw::conntrack::Time;
use vpcfw::events::{self, Event};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vpcfw")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn snapshot() -> String {
    root().join("examples/three-tier").display().to_string()
}

fn events_file() -> PathBuf {
    root().join("examples/three-tier/events.jsonl")
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vpcfw-replay-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(bin()).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    out
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn eval(events: &Path, extra: &[&str]) -> Vec<Value> {
    let (ev, snap) = (events.display().to_string(), snapshot());
    let mut args = vec!["eval", "--snapshot", &snap, "--events", &ev];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `vpcfw pcap` of `events` into `out` with extra format flags.
fn make_pcap(events: &Path, out: &Path, flags: &[&str]) {
    let (ev, o) = (events.display().to_string(), out.display().to_string());
    let mut args = vec!["pcap", "--events", &ev, "--out", &o];
    args.extend_from_slice(flags);
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `vpcfw replay --json` on `pcap` with `extra` options; returns (exit code, summary,
/// stderr).
fn replay(pcap: &Path, extra: &[&str]) -> (i32, Value, String) {
    let (p, snap) = (pcap.display().to_string(), snapshot());
    let mut args = vec!["replay", "--snapshot", &snap, "--pcap", &p, "--json"];
    args.extend_from_slice(extra);
    let out = run(&args);
    let summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "summary is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (
        out.status.code().unwrap(),
        summary,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The summary counts that eval's answers imply.
fn counts_of(answers: &[Value]) -> (u64, u64, BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let (mut accepted, mut errors) = (0, 0);
    let (mut stages, mut rules) = (BTreeMap::new(), BTreeMap::new());
    for a in answers {
        match a["action"].as_str() {
            Some("ACCEPT") => accepted += 1,
            Some("REJECT") => {
                *stages
                    .entry(a["stage"].as_str().unwrap().to_owned())
                    .or_default() += 1;
                if let Some(r) = a["rule"].as_str() {
                    *rules.entry(r.to_owned()).or_default() += 1;
                }
            }
            _ => errors += 1,
        }
    }
    (accepted, errors, stages, rules)
}

fn check_summary_matches(summary: &Value, answers: &[Value]) {
    let (accepted, errors, stages, rules) = counts_of(answers);
    assert_eq!(summary["frames"], answers.len() as u64);
    assert_eq!(summary["accepted"], accepted);
    assert_eq!(
        summary["judged"],
        answers.len() as u64 - errors,
        "{summary:#}"
    );
    let rejected = summary["rejected"].as_object().unwrap();
    for (stage, n) in rejected {
        let want = if stage == "total" {
            stages.values().sum()
        } else {
            stages.get(stage).copied().unwrap_or(0)
        };
        assert_eq!(n.as_u64(), Some(want), "rejected at {stage}");
    }
    let top = summary["top_rejecting_rules"].as_array().unwrap();
    assert_eq!(top.len(), rules.len().min(vpcfw::replay::TOP_RULES));
    for t in top {
        assert_eq!(
            t["packets"].as_u64(),
            rules.get(t["rule"].as_str().unwrap()).copied(),
            "{t}"
        );
    }
    assert_eq!(
        summary["conntrack_allowance_exceeded"],
        stages.get("conntrack-allowance").copied().unwrap_or(0)
    );
}

/// "Allowed most" and the conntrack passes agree with the steps of eval's traced answers.
fn check_allowing_rules(summary: &Value, traced: &[Value]) {
    let (mut rules, mut tracked) = (BTreeMap::<String, u64>::new(), 0);
    for a in traced.iter().filter(|a| a["action"] == "ACCEPT") {
        for step in a["path"].as_array().unwrap() {
            if step["stage"] == "route" {
                continue;
            }
            match step["rule"].as_str() {
                Some(r) => *rules.entry(r.to_owned()).or_default() += 1,
                None if step["via"] == "conntrack" => tracked += 1,
                None => panic!("a step without a rule: {step}"),
            }
        }
    }
    assert_eq!(summary["tracked_passes"], tracked);
    assert!(tracked > 0);
    let top = summary["top_allowing_rules"].as_array().unwrap();
    assert_eq!(top.len(), rules.len().min(vpcfw::replay::TOP_RULES));
    let mut counts: Vec<u64> = rules.values().copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    for (t, want) in top.iter().zip(counts) {
        assert_eq!(t["packets"].as_u64(), Some(want), "{t}");
        assert_eq!(
            t["packets"].as_u64(),
            rules.get(t["rule"].as_str().unwrap()).copied(),
            "{t}"
        );
    }
}

/// The Done-when test of issue 5: a pcap generated from the three-tier traffic, replayed,
/// answers as `vpcfw eval` does on the same events, line for line, and its summary counts
/// are eval's answers counted.
#[test]
fn replay_agrees_with_eval_on_three_tier() {
    let d = scratch("done-when");
    let (pcap, verdicts) = (d.join("three-tier.pcap"), d.join("verdicts.jsonl"));
    make_pcap(&events_file(), &pcap, &[]);
    let v = verdicts.display().to_string();
    let (code, summary, stderr) = replay(&pcap, &["--verdicts", &v]);
    assert_eq!(code, 0, "{stderr}");
    let replayed = lines(&verdicts);
    let evaluated = eval(&events_file(), &[]);
    assert_eq!(replayed.len(), evaluated.len());
    assert!(evaluated.len() >= 20);
    for (i, (r, e)) in replayed.iter().zip(&evaluated).enumerate() {
        for field in ["action", "stage", "rule"] {
            assert_eq!(r.get(field), e.get(field), "frame {}: {field}", i + 1);
        }
        assert_eq!(r, e, "frame {}", i + 1);
    }
    check_summary_matches(&summary, &evaluated);
    check_allowing_rules(&summary, &eval(&events_file(), &["--trace"]));
    // The example exercises more than one outcome.
    assert!(summary["accepted"].as_u64().unwrap() > 0);
    assert!(summary["rejected"]["nacl-ingress"].as_u64().unwrap() > 0);
    assert!(summary["rejected"]["route"].as_u64().unwrap() > 0);
    assert_eq!(summary["error"], Value::Null);
}

/// Every capture format the reader takes gives the same verdicts.
/// Payloads survive `vpcfw pcap` and are inspected by `vpcfw replay` as by `vpcfw eval`: the
/// bundled example's byte-match rules block an SSRF request split across two segments and count
/// a SQL-injection pattern, frame for frame the same answers.
#[test]
fn replay_inspects_payloads_as_eval_does() {
    let d = scratch("payloads");
    let source = root().join("tests/cases/inspection-imds-ssrf/events.jsonl");
    let text = std::fs::read_to_string(source).unwrap();
    // Only the packet lines (the case's last lines are deliberate errors).
    let packets: Vec<&str> = text
        .lines()
        .filter(|l| events::parse_event(l).is_ok())
        .collect();
    let events = d.join("events.jsonl");
    std::fs::write(&events, packets.join("\n") + "\n").unwrap();
    let pcap = d.join("payloads.pcap");
    make_pcap(&events, &pcap, &[]);
    let verdicts = d.join("verdicts.jsonl");
    let v = verdicts.display().to_string();
    let (code, summary, stderr) = replay(&pcap, &["--verdicts", &v]);
    assert_eq!(code, 0, "{stderr}");
    let evaluated = eval(&events, &[]);
    assert_eq!(lines(&verdicts), evaluated);
    let blocked = evaluated
        .iter()
        .filter(|a| a["stage"] == "inspection" && a["rule"] == "imds-ssrf")
        .count();
    assert_eq!(blocked, 3, "{evaluated:?}");
    check_summary_matches(&summary, &evaluated);
    assert_eq!(
        summary["top_counting_byte_match_rules"],
        serde_json::json!([{"rule": "sqli-union-select", "packets": 1}])
    );
}

#[test]
fn every_capture_format_replays_the_same() {
    let d = scratch("formats");
    let evaluated = eval(&events_file(), &[]);
    for flags in [
        &[][..],
        &["--big-endian"],
        &["--nanos"],
        &["--nanos", "--big-endian"],
        &["--pcapng"],
        &["--pcapng", "--big-endian", "--nanos"],
    ] {
        let pcap = d.join(format!("{}.cap", flags.join("")));
        make_pcap(&events_file(), &pcap, flags);
        let head = std::fs::read(&pcap).unwrap()[..4].to_vec();
        let want_head: &[u8] = match flags {
            [] => &[0xd4, 0xc3, 0xb2, 0xa1],
            ["--big-endian"] => &[0xa1, 0xb2, 0xc3, 0xd4],
            ["--nanos"] => &[0x4d, 0x3c, 0xb2, 0xa1],
            ["--nanos", "--big-endian"] => &[0xa1, 0xb2, 0x3c, 0x4d],
            _ => &[0x0a, 0x0d, 0x0d, 0x0a],
        };
        assert_eq!(head, want_head, "{flags:?}");
        let verdicts = d.join("v.jsonl");
        let v = verdicts.display().to_string();
        let (code, summary, stderr) = replay(&pcap, &["--verdicts", &v]);
        assert_eq!(code, 0, "{flags:?}: {stderr}");
        assert_eq!(lines(&verdicts), evaluated, "{flags:?}");
        check_summary_matches(&summary, &evaluated);
    }
}

/// The events with a `len` on every packet, so that flow-log byte counts are comparable.
fn events_with_len(d: &Path) -> PathBuf {
    let text = std::fs::read_to_string(events_file()).unwrap();
    let out: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v["len"] = (120 + 37 * i).into();
            format!("{v}\n")
        })
        .collect();
    let p = d.join("events-len.jsonl");
    std::fs::write(&p, out).unwrap();
    p
}

#[test]
fn flow_logs_equal_evals() {
    let d = scratch("flowlog");
    let events = events_with_len(&d);
    let pcap = d.join("t.pcap");
    make_pcap(&events, &pcap, &["--nanos"]);
    for interval in ["60", "1"] {
        let (ef, rf) = (d.join("eval.log"), d.join("replay.log"));
        let (e, r) = (ef.display().to_string(), rf.display().to_string());
        eval(
            &events,
            &["--flow-log", &e, "--flow-log-interval", interval],
        );
        let (code, _, stderr) = replay(&pcap, &["--flow-log", &r, "--flow-log-interval", interval]);
        assert_eq!(code, 0, "{stderr}");
        let (want, got) = (
            std::fs::read_to_string(&ef).unwrap(),
            std::fs::read_to_string(&rf).unwrap(),
        );
        assert!(want.lines().count() > 10, "{want}");
        assert!(want.lines().any(|l| l.ends_with("REJECT OK")));
        assert_eq!(got, want, "interval {interval}");
    }
}

fn read_capture(path: &Path) -> (Format, Vec<(Time, Vec<u8>, u32)>) {
    let bytes = std::fs::read(path).unwrap();
    let mut r = CaptureReader::new(&bytes[..]).unwrap();
    let mut frames = Vec::new();
    while let Some(f) = r.next_frame().unwrap() {
        frames.push((f.time, f.data.to_vec(), f.orig_len));
    }
    (r.format(), frames)
}

#[test]
fn accepted_and_rejected_captures_split_the_input() {
    let d = scratch("split");
    for (flags, nanos) in [(&["--pcapng"][..], true), (&[][..], false)] {
        let pcap = d.join("in.cap");
        make_pcap(&events_file(), &pcap, flags);
        let (a, r, v) = (d.join("a.pcap"), d.join("r.pcap"), d.join("v.jsonl"));
        let (aa, rr, vv) = (
            a.display().to_string(),
            r.display().to_string(),
            v.display().to_string(),
        );
        let (code, summary, _) = replay(
            &pcap,
            &["--accepted", &aa, "--rejected", &rr, "--verdicts", &vv],
        );
        assert_eq!(code, 0);
        let (_, input) = read_capture(&pcap);
        let verdicts = lines(&v);
        let (fa, accepted) = read_capture(&a);
        let (fr, rejected) = read_capture(&r);
        for f in [fa, fr] {
            assert_eq!(
                f,
                Format::Pcap {
                    big_endian: false,
                    nanos
                }
            );
        }
        let want = |action: &str| -> Vec<_> {
            input
                .iter()
                .zip(&verdicts)
                .filter(|(_, v)| v["action"] == action)
                .map(|(f, _)| f.clone())
                .collect()
        };
        assert_eq!(accepted, want("ACCEPT"));
        assert_eq!(rejected, want("REJECT"));
        assert_eq!(accepted.len() as u64, summary["accepted"].as_u64().unwrap());
        assert_eq!(
            rejected.len() as u64,
            summary["rejected"]["total"].as_u64().unwrap()
        );
        // Replaying the accepted frames alone accepts what does not depend on state
        // the rejected frames never created: at least the capture reads back whole.
        let (code, again, _) = replay(&a, &[]);
        assert_eq!(code, 0);
        assert_eq!(again["frames"], accepted.len() as u64);
    }
}

/// Writes a little-endian microsecond pcap of `frames`.
fn write_capture(path: &Path, frames: impl IntoIterator<Item = (Time, Vec<u8>)>) {
    let format = Format::Pcap {
        big_endian: false,
        nanos: false,
    };
    let mut w = CaptureWriter::new(std::fs::File::create(path).unwrap(), format).unwrap();
    for (t, f) in frames {
        w.write_frame(t, &f, f.len() as u32).unwrap();
    }
    w.finish().unwrap();
}

/// Frames that are not judged keep their line in `--verdicts`; malformed frames are counted by
/// reason.
#[test]
fn unjudged_and_malformed_frames() {
    let d = scratch("odd");
    let pcap = d.join("odd.pcap");
    let packet = |line: &str| match events::parse_event(line).unwrap() {
        Event::Packet { packet, .. } => vpcfw::replay::packet_frame(&packet).unwrap(),
        Event::Reload { .. } => unreachable!("a packet line"),
    };
    let good = packet(
        r#"{"t":0,"src":"10.0.1.10","dst":"10.0.2.10","proto":"tcp","sport":40100,"dport":8080,"flags":"S"}"#,
    );
    let outside =
        packet(r#"{"t":0,"src":"192.0.2.1","dst":"192.0.2.2","proto":"udp","sport":1,"dport":2}"#);
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x43;
    let frames = [
        good.clone(),
        arp,
        outside,
        good[..30].to_vec(),
        bad_ihl,
        good,
    ];
    write_capture(
        &pcap,
        frames
            .iter()
            .enumerate()
            .map(|(i, f)| (Time::from_secs(i as u64), f.clone())),
    );
    let v = d.join("v.jsonl");
    let (code, s, _) = replay(&pcap, &["--verdicts", &v.display().to_string()]);
    assert_eq!(code, 0);
    let answers = lines(&v);
    assert_eq!(answers.len(), 6);
    assert_eq!(answers[0]["action"], "ACCEPT");
    assert!(
        answers[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("frame 2: not an IPv4")
    );
    assert!(
        answers[2]["error"]
            .as_str()
            .unwrap()
            .contains("192.0.2.1 nor 192.0.2.2")
    );
    assert_eq!(answers[3]["stage"], "malformed");
    assert_eq!(answers[3]["reason"], "truncated");
    assert_eq!(answers[4]["reason"], "bad-ihl");
    // A retransmitted SYN of a live connection.
    assert_eq!(answers[5]["action"], "ACCEPT");
    assert_eq!((&s["frames"], &s["judged"]), (&6.into(), &4.into()));
    assert_eq!((&s["not_ip"], &s["outside_vpc"]), (&1.into(), &1.into()));
    assert_eq!(s["rejected"]["malformed"], 2);
    assert_eq!(
        s["malformed"],
        serde_json::json!({"bad-ihl": 1, "truncated": 1})
    );
    let text = run(&[
        "replay",
        "--snapshot",
        &snapshot(),
        "--pcap",
        &pcap.display().to_string(),
    ]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("      truncated                        1"),
        "{text}"
    );
    assert!(
        text.contains("not IP                                 1"),
        "{text}"
    );
}

/// The byte offsets at which each record of a capture ends (the header's end first).
fn record_ends(bytes: &[u8]) -> Vec<usize> {
    let mut r = CaptureReader::new(bytes).unwrap();
    let mut ends = vec![r.offset() as usize];
    while r.next_frame().unwrap().is_some() {
        ends.push(r.offset() as usize);
    }
    ends
}

#[test]
fn truncated_captures_report_the_offset_and_what_was_read() {
    let d = scratch("cut");
    let evaluated = eval(&events_file(), &[]);
    for flags in [&[][..], &["--pcapng"]] {
        let pcap = d.join("whole.cap");
        make_pcap(&events_file(), &pcap, flags);
        let bytes = std::fs::read(&pcap).unwrap();
        let ends = record_ends(&bytes);
        // Where a file may end: after the header, a block or a record.
        let mut boundaries = ends.clone();
        if flags == ["--pcapng"] {
            // The Interface Description Block (20 bytes) after the section header.
            boundaries.insert(1, ends[0] + 20);
        }
        let cuts: Vec<usize> = (0..bytes.len())
            .filter(|c| c % 13 == 0 || *c < 64)
            .collect();
        for cut in cuts {
            let cut_file = d.join("cut.cap");
            std::fs::write(&cut_file, &bytes[..cut]).unwrap();
            let v = d.join("v.jsonl");
            let _ = std::fs::remove_file(&v);
            let (code, s, stderr) = replay(&cut_file, &["--verdicts", &v.display().to_string()]);
            // Frames wholly before the cut are read and judged as eval judges them.
            let whole = ends.iter().filter(|&&e| e <= cut).count().saturating_sub(1);
            assert_eq!(s["frames"], whole as u64, "{flags:?} cut {cut}");
            assert_eq!(lines(&v)[..], evaluated[..whole], "{flags:?} cut {cut}");
            if boundaries.contains(&cut) {
                assert_eq!(code, 0, "{flags:?} cut {cut}: {stderr}");
                continue;
            }
            assert_eq!(code, 2, "{flags:?} cut {cut}");
            let at = boundaries
                .iter()
                .rev()
                .find(|&&e| e <= cut)
                .copied()
                .unwrap_or(0);
            assert_eq!(s["error"]["offset"], at as u64, "{flags:?} cut {cut}: {s}");
            assert!(
                stderr.contains(&format!("at byte {at}: ")),
                "{flags:?} cut {cut}: {stderr}"
            );
            assert!(
                stderr.contains("truncated") || stderr.contains("too short"),
                "{stderr}"
            );
        }
    }
}

#[test]
fn garbage_is_not_a_capture() {
    let d = scratch("garbage");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let file = d.join("g.bin");
    let mut inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        std::fs::read(events_file()).unwrap(),
        b"\xd4\xc3\xb2\xa1".to_vec(),
    ];
    for _ in 0..12 {
        let n = (next() % 4000) as usize;
        inputs.push((0..n).map(|_| next() as u8).collect());
    }
    // A valid header followed by noise.
    let mut noisy = Vec::new();
    CaptureWriter::new(
        &mut noisy,
        Format::Pcap {
            big_endian: true,
            nanos: false,
        },
    )
    .unwrap();
    noisy.extend((0..3000).map(|_| next() as u8));
    inputs.push(noisy);
    for bytes in inputs {
        std::fs::write(&file, &bytes).unwrap();
        let (code, s, stderr) = replay(&file, &[]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("at byte "), "{stderr}");
        assert!(s["error"]["offset"].as_u64().unwrap() <= bytes.len() as u64);
        if bytes.len() > 100 && bytes[0] != 0xa1 {
            assert!(stderr.contains("not a pcap or pcapng file"), "{stderr}");
        }
    }
    // A capture of random frames: every frame is accounted for, nothing panics.
    let base = {
        let mut f = vec![
            2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0, 0, 40,
        ];
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&[10, 0, 1, 10, 10, 0, 2, 10]);
        f.extend_from_slice(&[0; 20]);
        f
    };
    let frames: Vec<(Time, Vec<u8>)> = (0..500u64)
        .map(|i| {
            let mut f = base.clone();
            for _ in 0..(next() % 5) {
                let at = (next() as usize) % f.len();
                f[at] = next() as u8;
            }
            f.truncate((next() as usize) % (f.len() + 1));
            (Time(i), f)
        })
        .collect();
    write_capture(&file, frames);
    let (code, s, stderr) = replay(&file, &[]);
    assert_eq!(code, 0, "{stderr}");
    let sum = |k: &str| s[k].as_u64().unwrap();
    assert_eq!(sum("frames"), 500);
    assert_eq!(sum("judged") + sum("not_ip") + sum("outside_vpc"), 500);
    let malformed: u64 = s["malformed"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(malformed, s["rejected"]["malformed"].as_u64().unwrap());
    assert!(malformed > 100, "{s:#}");
}

#[test]
fn pcap_skips_reloads_and_bad_lines_with_a_warning() {
    let d = scratch("pcap-cmd");
    let events = d.join("e.jsonl");
    std::fs::write(
        &events,
        concat!(
            r#"{"t": 1, "src": "10.0.1.10", "dst": "10.0.2.10", "proto": "icmp", "type": 8, "id": 7, "len": 84}"#,
            "\n",
            r#"{"t": 2, "reload": "elsewhere"}"#,
            "\n",
            "not json\n",
            r#"{"t": 3, "src": "2001:db8::1", "dst": "2001:db8::2", "proto": "icmp", "type": 8}"#,
            "\n",
            r#"{"t": 4.000001, "src": "10.0.1.10", "dst": "10.0.2.10", "proto": 47, "len": 100}"#,
            "\n",
        ),
    )
    .unwrap();
    let out = d.join("o.pcap");
    let o = run(&[
        "pcap",
        "--events",
        &events.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    assert!(o.status.success());
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(stderr.contains("line 2 skipped: a reload"), "{stderr}");
    assert!(stderr.contains("line 3 skipped: invalid JSON"), "{stderr}");
    assert!(
        stderr.contains("line 4 skipped: protocol 1 over IPv6"),
        "{stderr}"
    );
    assert!(stderr.contains("2 of 5 lines written"), "{stderr}");
    let (_, frames) = read_capture(&out);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].0, Time::from_secs(1));
    assert_eq!(frames[1].0, Time(4_000_001_000));
    // Ethernet header + the IP lengths asked for.
    assert_eq!((frames[0].1.len(), frames[1].1.len()), (14 + 84, 14 + 100));
}

#[test]
fn capture_errors_name_kind_and_offset() {
    // The library error, as the CLI prints it.
    let e = CaptureReader::new(&b"\x0a\x0d\x0d\x0a\x1c\0\0\0MAGI"[..]).unwrap_err();
    assert_eq!((e.kind, e.offset), (ErrorKind::NotACapture, 0));
    assert!(e.to_string().starts_with("at byte 0: "), "{e}");
}
