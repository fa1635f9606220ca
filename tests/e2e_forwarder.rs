//! End to end: real TCP, UDP and ICMP between network namespaces through the forwarder, on
//! the bundled three-tier VPC (see `examples/three-tier/README.md` for why each flow passes or
//! not). Needs root, `/dev/net/tun` and `ip netns`; where they are missing each test prints
//! why and returns. Every test creates its own namespaces (named with the process id and a
//! per-test tag) and TAP devices, uses only the snapshot's addresses inside them, and
//! removes everything when it ends, passes or fails.
#![cfg(target_os = "linux")]

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use vpcfw::forward::demo::{Running, three_tier};
use vpcfw::forward::lab::{self, Lab, Observed, Server};
use vpcfw::forward::run::RunConfig;

const T: Duration = Duration::from_millis(3000);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The lab for one test, or `None` (with the reason printed) where it cannot run.
fn start(tag: &str, cfg: RunConfig) -> Option<(Running, PathBuf)> {
    if let Some(why) = lab::unavailable() {
        eprintln!("skipping the forwarder end-to-end test: {why}");
        return None;
    }
    let prefix = format!("vfe{}{tag}", std::process::id() % 100_000);
    let dir = std::env::temp_dir().join(format!("{prefix}-e2e"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = cfg;
    cfg.trace = Some(dir.join("trace.jsonl"));
    cfg.flow_log = Some(dir.join("flow.log"));
    let running = Running::start(
        Lab::new(&prefix),
        &prefix,
        three_tier().unwrap(),
        cfg,
        false,
    )
    .expect("start the lab");
    Some((running, dir))
}

/// Runs `f` on a thread and fails the test if it takes longer than `limit` (a hung exchange
/// must not hang CI).
fn bounded<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("the test took longer than {limit:?}"))
}

fn trace(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("trace.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The first trace line of a packet from `src` to `dst` (addresses) with this destination port.
fn first<'a>(trace: &'a [Value], src: &str, dst: &str, dport: u16) -> &'a Value {
    trace
        .iter()
        .find(|t| t["src"] == src && t["dst"] == dst && t["dport"] == dport)
        .unwrap_or_else(|| panic!("no packet {src} -> {dst}:{dport} in the trace"))
}

fn tcp(r: &Running, from: &str, src: &str, dst: &str) -> Observed {
    lab::tcp_exchange(&r.ns(from), sa(src), sa(dst), T)
}

/// A TCP connection held open in a namespace: `exchange` sends a line and waits for the echo.
struct Held {
    tx: mpsc::Sender<mpsc::Sender<bool>>,
}

impl Held {
    fn open(ns: &str, src: &str, dst: &str) -> Held {
        let (tx, rx) = mpsc::channel::<mpsc::Sender<bool>>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (src, dst) = (sa(src), sa(dst));
        Lab::spawn_in(ns, move || {
            let mut s = match vpcfw::tap::tcp_connect_from(src, dst, T) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            s.set_read_timeout(Some(T)).unwrap();
            let _ = ready_tx.send(Ok(()));
            while let Ok(answer) = rx.recv() {
                let mut buf = [0u8; 5];
                let ok = s.write_all(b"ping\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"ping\n";
                let _ = answer.send(ok);
                if !ok {
                    return;
                }
            }
        })
        .unwrap();
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap_or_else(|e| panic!("connect {src} -> {dst}: {e}"));
        Held { tx }
    }

    fn exchange(&self) -> bool {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(tx).is_err() {
            return false;
        }
        rx.recv_timeout(Duration::from_secs(10)).unwrap_or(false)
    }
}

#[test]
fn tcp_udp_icmp_and_stateful_replies() {
    let mut cfg = RunConfig::new(Vec::new());
    let metrics = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    cfg.metrics = Some(metrics);
    let Some((mut r, dir)) = start("a", cfg) else {
        return;
    };
    let _servers = [
        Server::tcp(&r.ns("app0"), sa("10.0.2.10:8080")).unwrap(),
        Server::tcp(&r.ns("db"), sa("10.0.3.20:5432")).unwrap(),
        Server::tcp(&r.ns("web"), sa("[2001:db8:3a1e:4b01::10]:443")).unwrap(),
        Server::udp(&r.ns("inet"), sa("10.0.0.2:53")).unwrap(),
    ];
    let (web, app0, db, inet) = (r.ns("web"), r.ns("app0"), r.ns("db"), r.ns("inet"));
    let results = bounded(Duration::from_secs(60), move || {
        let t = |ns: &str, s: &str, d: &str| lab::tcp_exchange(ns, sa(s), sa(d), T);
        vec![
            // TCP web -> app, and app -> db whose replies leave by connection tracking only.
            t(&web, "10.0.1.10:0", "10.0.2.10:8080"),
            t(&app0, "10.0.2.10:0", "10.0.3.20:5432"),
            // IPv6 from the internet, through neighbour discovery on both sides.
            t(
                &inet,
                "[2001:db8:ffff::23]:0",
                "[2001:db8:3a1e:4b01::10]:443",
            ),
            // UDP to the Amazon DNS (exempt) and its answer.
            lab::udp_exchange(&web, sa("10.0.1.10:0"), sa("10.0.0.2:53"), T),
            // ICMP echo to the metadata address (exempt) and back.
            lab::ping(&app0, "169.254.169.254".parse().unwrap(), T),
            // Blocked: the db's NACL, the db's empty outbound rules, ICMP by the web NACL.
            t(&web, "10.0.1.10:0", "10.0.3.20:5432"),
            t(&db, "10.0.3.20:0", "10.0.2.10:8080"),
            lab::ping(&inet, "10.0.1.10".parse().unwrap(), T),
        ]
    });
    use Observed::{Passed, TimedOut};
    assert_eq!(
        results,
        vec![
            Passed, Passed, Passed, Passed, Passed, TimedOut, TimedOut, TimedOut
        ]
    );
    // A bulk transfer: with TSO negotiated on the TAPs, the kernel hands the forwarder
    // super-frames of many segments, which pass with their partial checksums unverified.
    let web = r.ns("web");
    let echoed = bounded(Duration::from_secs(60), move || {
        Lab::run_in(&web, || -> std::io::Result<usize> {
            let mut s = vpcfw::tap::tcp_connect_from(sa("10.0.1.10:0"), sa("10.0.2.10:8080"), T)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut w = s.try_clone()?;
            let writer = std::thread::spawn(move || w.write_all(&vec![0x5a; 4 << 20]));
            let mut got = 0;
            let mut buf = vec![0u8; 65536];
            while got < 4 << 20 {
                let n = s.read(&mut buf)?;
                if n == 0 || buf[..n].iter().any(|&b| b != 0x5a) {
                    break;
                }
                got += n;
            }
            writer.join().unwrap()?;
            Ok(got)
        })
        .unwrap()
        .unwrap()
    });
    assert_eq!(echoed, 4 << 20);
    // The metrics endpoint answers with the counters.
    let mut text = String::new();
    let mut c = TcpStream::connect_timeout(&metrics, T).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    c.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.0 200 OK"), "{text}");
    assert_metric(&text, "vpcfw_packets_judged_total ");
    assert_metric(&text, "vpcfw_arp_replies_total ");
    let fwd = r.stop().unwrap();
    let t = trace(&dir);
    let syn_ack = t
        .iter()
        .find(|x| x["src"] == "10.0.3.20" && x["sport"] == 5432 && x["dst"] == "10.0.2.10")
        .expect("the db's reply");
    assert_eq!(syn_ack["action"], "ACCEPT");
    assert_eq!(syn_ack["path"][0]["stage"], "sg-egress");
    assert_eq!(syn_ack["path"][0]["via"], "conntrack");
    let web_db = first(&t, "10.0.1.10", "10.0.3.20", 5432);
    assert_eq!(web_db["stage"], "nacl-ingress");
    assert_eq!(web_db["rule"], "acl-0e1f2a3b4c5d6b003:ingress:32767");
    assert_eq!(
        first(&t, "10.0.3.20", "10.0.2.10", 8080)["stage"],
        "sg-egress"
    );
    let io = fwd.io_stats();
    assert!(
        io.rx_segments > io.rx_frames,
        "no segmentation-offload super-frame was seen: {io:?}"
    );
    assert!(fwd.router().stats().arp_replies >= 3);
    assert!(fwd.router().stats().nd_replies >= 2);
    // Flow logs: the db ENI's REJECT of the web server's attempt is there.
    let log = std::fs::read_to_string(dir.join("flow.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("eni-0e1f2a3b4c5d6d004 10.0.1.10 10.0.3.20")
                && l.ends_with("REJECT OK")),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nacl_ephemeral_ports_decide_the_return_path() {
    let Some((mut r, dir)) = start("b", RunConfig::new(Vec::new())) else {
        return;
    };
    let _s = Server::tcp(&r.ns("app0"), sa("10.0.2.10:8080")).unwrap();
    let web = r.ns("web");
    let (high, low) = bounded(Duration::from_secs(30), move || {
        (
            lab::tcp_exchange(&web, sa("10.0.1.10:40123"), sa("10.0.2.10:8080"), T),
            // A client port below 1024: the request passes both NACLs, but the app subnet's
            // outbound list only lets replies to 1024-65535 out.
            lab::tcp_exchange(&web, sa("10.0.1.10:1000"), sa("10.0.2.10:8080"), T),
        )
    });
    assert_eq!(high, Observed::Passed);
    assert_eq!(low, Observed::TimedOut);
    r.stop().unwrap();
    let t = trace(&dir);
    assert_eq!(
        first(&t, "10.0.1.10", "10.0.2.10", 8080)["action"],
        "ACCEPT"
    );
    let reply = first(&t, "10.0.2.10", "10.0.1.10", 1000);
    assert_eq!(reply["stage"], "nacl-egress");
    assert_eq!(reply["rule"], "acl-0e1f2a3b4c5d6b002:egress:32767");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A copy of the three-tier snapshot without web-sg's inbound HTTPS rule and app-sg's inbound
/// 8080 rule.
fn tightened(dir: &Path) -> PathBuf {
    let out = dir.join("tightened");
    std::fs::create_dir_all(&out).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/three-tier");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            std::fs::copy(&p, out.join(p.file_name().unwrap())).unwrap();
        }
    }
    let f = out.join("describe-security-groups.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    for g in v["SecurityGroups"].as_array_mut().unwrap() {
        let perms = g["IpPermissions"].as_array_mut().unwrap();
        perms.retain(|p| p["FromPort"] != 443 && p["FromPort"] != 8080);
    }
    std::fs::write(&f, v.to_string()).unwrap();
    out
}

#[test]
fn reload_keeps_tracked_connections_and_cuts_untracked_ones() {
    let Some((mut r, dir)) = start("c", RunConfig::new(Vec::new())) else {
        return;
    };
    let _servers = [
        Server::tcp(&r.ns("app0"), sa("10.0.2.10:8080")).unwrap(),
        Server::tcp(&r.ns("web"), sa("10.0.1.10:443")).unwrap(),
    ];
    let (web, inet) = (r.ns("web"), r.ns("inet"));
    // Tracked: web -> app (app-sg admits it by group reference, entries at both ENIs).
    // Untracked: internet -> web HTTPS (web-sg has /0 rules both ways).
    let tracked = Held::open(&web, "10.0.1.10:0", "10.0.2.10:8080");
    let untracked = Held::open(&inet, "198.51.100.23:0", "10.0.1.10:443");
    assert!(tracked.exchange() && untracked.exchange());
    // A reload that fails keeps the old policy.
    let broken = dir.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("describe-vpcs.json"), "{\"Vpcs\": [").unwrap();
    assert!(r.control().reload(Some(&broken)).is_err());
    assert!(tracked.exchange() && untracked.exchange());
    // The new rules no longer admit either flow. Let the last exchange's delayed ACKs pass
    // first: an outbound packet of the web server after the reload would be picked up as a
    // new tracked entry (web-sg still allows all outbound) and would legitimately re-admit
    // the flow.
    std::thread::sleep(Duration::from_millis(1000));
    let new = tightened(&dir);
    r.control().reload(Some(&new)).expect("reload");
    let (t_ok, u_ok) = bounded(Duration::from_secs(30), move || {
        (tracked.exchange(), untracked.exchange())
    });
    assert!(t_ok, "the tracked connection survives the reload (SPEC §4)");
    assert!(
        !u_ok,
        "the untracked connection is judged by the new rules at once"
    );
    // A new connection is judged by the new rules too.
    assert_eq!(
        tcp(&r, "web", "10.0.1.10:0", "10.0.2.10:8080"),
        Observed::TimedOut
    );
    r.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn blackholed_destination_is_dropped_at_the_route_step() {
    let Some((mut r, dir)) = start("d", RunConfig::new(Vec::new())) else {
        return;
    };
    let app0 = r.ns("app0");
    let o = bounded(Duration::from_secs(30), move || {
        lab::tcp_exchange(&app0, sa("10.0.2.10:0"), sa("10.1.0.5:443"), T)
    });
    assert_eq!(o, Observed::TimedOut);
    r.stop().unwrap();
    let t = trace(&dir);
    let hit = first(&t, "10.0.2.10", "10.1.0.5", 443);
    assert_eq!(hit["stage"], "route");
    assert_eq!(
        hit["rule"],
        "rtb-0e1f2a3b4c5d6f000:10.1.0.0/16:pcx-0e1f2a3b4c5d68001"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn allowance_under_a_burst_keeps_established_connections() {
    allowance_under_a_burst("e", 1);
}

/// With two workers (two queues per TAP device) the allowance is still exact: the workers
/// share one engine, whichever queue the kernel steers each connection to.
#[test]
fn allowance_under_a_burst_is_exact_with_two_workers() {
    allowance_under_a_burst("g", 2);
}

fn allowance_under_a_burst(tag: &str, workers: usize) {
    const ALLOWANCE: u32 = 6;
    let mut cfg = RunConfig::new(Vec::new());
    cfg.allowance = Some(ALLOWANCE);
    cfg.workers = workers;
    let Some((mut r, dir)) = start(tag, cfg) else {
        return;
    };
    let _servers = [
        Server::tcp(&r.ns("app0"), sa("10.0.2.10:8080")).unwrap(),
        Server::tcp(&r.ns("db"), sa("10.0.3.20:5432")).unwrap(),
    ];
    // Established first: app -> db (entries at the app and db instances).
    let established = Held::open(&r.ns("app0"), "10.0.2.10:0", "10.0.3.20:5432");
    assert!(established.exchange());
    // A burst of new connections from the web instance: only ALLOWANCE can be tracked there.
    let web = r.ns("web");
    let started = Instant::now();
    let results = bounded(Duration::from_secs(60), move || {
        let handles: Vec<_> = (0..24)
            .map(|_| {
                let web = web.clone();
                std::thread::spawn(move || {
                    lab::tcp_exchange(&web, sa("10.0.1.10:0"), sa("10.0.2.10:8080"), T)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let passed = results.iter().filter(|o| **o == Observed::Passed).count();
    assert!(
        (1..=ALLOWANCE as usize).contains(&passed),
        "{passed} of 24 passed with an allowance of {ALLOWANCE}: {results:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        established.exchange(),
        "the established connection keeps working"
    );
    let fwd = r.stop().unwrap();
    assert!(fwd.firewall().stats().conntrack_allowance_exceeded > 0);
    let t = trace(&dir);
    assert!(t.iter().any(|x| x["stage"] == "conntrack-allowance"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A copy of the three-tier snapshot's JSON files (its `inspection.json` included) in `to`.
fn snapshot_copy(to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/three-tier");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
    to.to_path_buf()
}

/// The metrics text served on `addr`.
/// Fails with the whole metrics text unless it contains `sample`.
fn assert_metric(text: &str, sample: &str) {
    assert!(
        text.contains(sample),
        "no {sample:?} in the metrics:\n{text}"
    );
}

fn scrape(addr: SocketAddr) -> String {
    let mut text = String::new();
    let mut c = TcpStream::connect_timeout(&addr, T).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    c.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn payload_inspection_blocks_the_imds_ssrf_request_and_its_flow() {
    // How long a request may wait for its answer (a blocked one waits this long).
    const WAIT: Duration = Duration::from_millis(1500);
    const CLEAN: &str = "/fetch?url=http://example.com/";
    const SSRF: &str = "/fetch?url=http://169.254.169.254/latest/meta-data/";
    const PASSWD: &str = "/static/../../etc/passwd";
    let metrics = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let tag = format!("vfe{}f-rules", std::process::id() % 100_000);
    let rules_dir = std::env::temp_dir().join(tag);
    std::fs::create_dir_all(&rules_dir).unwrap();
    let rules = rules_dir.join("inspection.json");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/three-tier/inspection.json");
    std::fs::copy(&example, &rules).unwrap();
    let mut cfg = RunConfig::new(Vec::new());
    cfg.metrics = Some(metrics);
    cfg.inspection = Some(rules.clone());
    let Some((mut r, dir)) = start("f", cfg) else {
        let _ = std::fs::remove_dir_all(&rules_dir);
        return;
    };
    let _app = Server::http(&r.ns("app0"), sa("10.0.2.10:8080")).unwrap();
    let web = r.ns("web");
    let get = move |sport: u16, targets: &'static [&'static str]| {
        let web = web.clone();
        bounded(Duration::from_secs(30), move || {
            lab::http_requests(
                &web,
                sa(&format!("10.0.1.10:{sport}")),
                sa("10.0.2.10:8080"),
                targets,
                WAIT,
            )
        })
    };
    use Observed::{Passed, TimedOut};
    // A normal request passes, twice on one connection.
    assert_eq!(get(41001, &[CLEAN, CLEAN]), vec![Passed, Passed]);
    // The request naming the metadata address is dropped, and so is the rest of its flow: a
    // normal request after it on the same connection gets nothing either.
    let started = Instant::now();
    assert_eq!(get(41002, &[SSRF, CLEAN]), vec![TimedOut, TimedOut]);
    assert!(started.elapsed() < 3 * WAIT + Duration::from_secs(2));
    // A new connection is not affected.
    assert_eq!(get(41003, &[CLEAN]), vec![Passed]);
    let text = scrape(metrics);
    assert_metric(
        &text,
        "vpcfw_inspection_matches_total{rule=\"imds-ssrf\",action=\"block\"} 1\n",
    );
    assert_metric(
        &text,
        "vpcfw_inspection_matches_total{rule=\"sqli-union-select\",action=\"count\"} 0\n",
    );
    assert_metric(&text, "vpcfw_inspection_gaps_total ");
    assert_metric(&text, "vpcfw_inspection_retransmissions_total ");
    let rejected = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("vpcfw_packets_rejected_total{stage=\"inspection\"} "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no inspection stage in the metrics: {text}"))
    };
    assert!(rejected(&text) >= 2, "{text}");

    // A reload whose rules file does not load keeps the old policy and the old rules.
    let snap = snapshot_copy(&dir.join("snapshot"));
    std::fs::write(&rules, "{\"ByteMatchRules\": [{\"Name\": \"x\"}]}").unwrap();
    let err = r.control().reload(Some(&snap)).unwrap_err();
    assert!(err.contains("inspection.json"), "{err}");
    assert_eq!(get(41004, &[SSRF]), vec![TimedOut]);
    assert_eq!(get(41005, &[CLEAN, PASSWD]), vec![Passed, Passed]);
    // A reload with new rules applies them: the metadata address passes, the traversal does not.
    std::fs::write(
        &rules,
        r#"{"ByteMatchRules": [{"Name": "path-traversal", "Action": "block",
            "SearchString": "/../", "PositionalConstraint": "CONTAINS",
            "Scope": {"Protocol": "tcp", "DestinationPorts": [{"From": 8080, "To": 8080}],
                      "Direction": "ingress", "GroupIds": ["sg-0e1f2a3b4c5d6c002"]}}]}"#,
    )
    .unwrap();
    r.control().reload(Some(&snap)).expect("reload");
    assert_eq!(get(41006, &[SSRF, PASSWD]), vec![Passed, TimedOut]);
    let text = scrape(metrics);
    // Counters survive the reload: the old rule's matches stay, the new rule's are added.
    assert_metric(
        &text,
        "vpcfw_inspection_matches_total{rule=\"imds-ssrf\",action=\"block\"} 2\n",
    );
    assert_metric(
        &text,
        "vpcfw_inspection_matches_total{rule=\"path-traversal\",action=\"block\"} 1\n",
    );
    let fwd = r.stop().unwrap();
    assert_eq!(fwd.io_stats().reload_failures, 1);
    assert_eq!(
        fwd.firewall().inspector().map(|i| i.rules_len()),
        Some(1),
        "the new rules are installed"
    );

    // The trace: the blocked connection's request and everything after it from the client,
    // rejected at stage inspection by imds-ssrf; its handshake accepted.
    let t = trace(&dir);
    let blocked: Vec<&Value> = t
        .iter()
        .filter(|x| x["src"] == "10.0.1.10" && x["sport"] == 41002 && x["dport"] == 8080)
        .collect();
    let first_reject = blocked
        .iter()
        .position(|x| x["action"] == "REJECT")
        .expect("the SSRF request is rejected");
    assert!(first_reject >= 2, "the handshake passed: {blocked:?}");
    assert!(
        blocked[first_reject..]
            .iter()
            .all(|x| x["action"] == "REJECT"
                && x["stage"] == "inspection"
                && x["rule"] == "imds-ssrf"),
        "{blocked:?}"
    );
    assert!(
        blocked.len() - first_reject >= 2,
        "the second request is rejected too: {blocked:?}"
    );
    assert!(
        t.iter()
            .filter(|x| x["sport"] == 41001 || x["sport"] == 41003)
            .all(|x| x["action"] == "ACCEPT")
    );
    // Flow logs: REJECT at the app ENI for the blocked connection.
    let log = std::fs::read_to_string(dir.join("flow.log")).unwrap();
    assert!(
        log.lines().any(
            |l| l.contains("eni-0e1f2a3b4c5d6d002 10.0.1.10 10.0.2.10 41002 8080 6")
                && l.ends_with("REJECT OK")
        ),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&rules_dir);
}

/// Two workers, each servicing one queue of every (multi-queue) TAP device: many connections
/// at once, spread by the kernel over both queues, all pass with their stateful replies, and
/// the flow log and counters add up across the workers.
#[test]
fn two_workers_share_the_flows_and_one_engine() {
    const CONNECTIONS: usize = 32;
    let mut cfg = RunConfig::new(Vec::new());
    cfg.workers = 2;
    let Some((mut r, dir)) = start("h", cfg) else {
        return;
    };
    let _servers = [
        Server::tcp(&r.ns("app0"), sa("10.0.2.10:8080")).unwrap(),
        Server::tcp(&r.ns("db"), sa("10.0.3.20:5432")).unwrap(),
        Server::udp(&r.ns("inet"), sa("10.0.0.2:53")).unwrap(),
    ];
    let (web, app0, db) = (r.ns("web"), r.ns("app0"), r.ns("db"));
    let results = bounded(Duration::from_secs(60), move || {
        let mut handles: Vec<_> = (0..CONNECTIONS)
            .map(|i| {
                let (web, app0) = (web.clone(), app0.clone());
                std::thread::spawn(move || {
                    if i % 2 == 0 {
                        lab::tcp_exchange(&web, sa("10.0.1.10:0"), sa("10.0.2.10:8080"), T)
                    } else {
                        lab::tcp_exchange(&app0, sa("10.0.2.10:0"), sa("10.0.3.20:5432"), T)
                    }
                })
            })
            .collect();
        let w = web.clone();
        handles.push(std::thread::spawn(move || {
            lab::udp_exchange(&w, sa("10.0.1.10:0"), sa("10.0.0.2:53"), T)
        }));
        // Still denied, whichever worker sees it: the db's outbound rules are empty.
        handles.push(std::thread::spawn(move || {
            lab::tcp_exchange(&db, sa("10.0.3.20:0"), sa("10.0.2.10:8080"), T)
        }));
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let (denied, passed) = results.split_last().unwrap();
    assert!(passed.iter().all(|o| *o == Observed::Passed), "{results:?}");
    assert_eq!(*denied, Observed::TimedOut);
    let fwd = r.stop().unwrap();
    assert_eq!(fwd.workers(), 2);
    let per_worker = fwd.worker_stats();
    assert!(
        per_worker.iter().all(|w| w.rx_frames > 0),
        "the kernel left a queue unused over {CONNECTIONS} connections: {per_worker:?}"
    );
    let io = fwd.io_stats();
    assert_eq!(
        io.rx_frames,
        per_worker.iter().map(|w| w.rx_frames).sum::<u64>()
    );
    let st = fwd.firewall().stats();
    assert_eq!(st.packets, st.accepted + st.rejected.iter().sum::<u64>());
    // Every reply of the db came back by connection tracking, at whichever worker.
    let t = trace(&dir);
    let replies: Vec<&Value> = t
        .iter()
        .filter(|x| x["src"] == "10.0.3.20" && x["sport"] == 5432)
        .collect();
    assert!(replies.len() >= CONNECTIONS / 2, "{}", replies.len());
    assert!(replies.iter().all(|x| x["action"] == "ACCEPT"));
    let log = std::fs::read_to_string(dir.join("flow.log")).unwrap();
    assert!(log.lines().any(|l| l.ends_with("ACCEPT OK")), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
