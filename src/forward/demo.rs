//! `vpcfw demo`: the bundled three-tier VPC with real traffic.
//!
//! One network namespace per ENI of `examples/three-tier` (the snapshot is compiled into the
//! binary, so an installed `vpcfw` needs no checkout), plus one for the internet and the AWS
//! service addresses; each namespace gets the ENI's TAP device with its addresses and a
//! default route through the subnet's gateway. The forwarder runs in this process, real
//! TCP, UDP and ICMP exchanges are driven from threads that entered the namespaces, and the
//! table shows for each flow what was expected, what the client observed and which stage and
//! rule decided (from the forwarder's verdict trace). Everything is removed at the end, on
//! failure, and on Ctrl-C.

use super::Attach;
use super::lab::{self, Iface, Lab, Observed, Server};
use super::run::{Control, Forwarder, RunConfig};
use crate::aws::SnapshotBuilder;
use crate::compile::CompiledPolicy;
use crate::tap::{self, Epoll, EpollEvents, SignalFd};
use serde_json::Value;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::thread::JoinHandle;
use std::time::Duration;

/// The bundled snapshot's files, embedded at build time.
pub const SNAPSHOT: [(&str, &str); 6] = [
    (
        "describe-vpcs.json",
        include_str!("../../examples/three-tier/describe-vpcs.json"),
    ),
    (
        "describe-subnets.json",
        include_str!("../../examples/three-tier/describe-subnets.json"),
    ),
    (
        "describe-network-acls.json",
        include_str!("../../examples/three-tier/describe-network-acls.json"),
    ),
    (
        "describe-security-groups.json",
        include_str!("../../examples/three-tier/describe-security-groups.json"),
    ),
    (
        "describe-network-interfaces.json",
        include_str!("../../examples/three-tier/describe-network-interfaces.json"),
    ),
    (
        "describe-route-tables.json",
        include_str!("../../examples/three-tier/describe-route-tables.json"),
    ),
];

/// The bundled payload byte-match rules (`examples/three-tier/inspection.json`): `imds-ssrf`
/// blocks TCP to ports 80 and 8080 carrying `169.254.169.254`, `sqli-union-select` counts.
pub const INSPECTION: &str = include_str!("../../examples/three-tier/inspection.json");

/// The bundled three-tier snapshot, compiled.
pub fn three_tier() -> Result<CompiledPolicy, String> {
    let mut b = SnapshotBuilder::new();
    for (name, text) in SNAPSHOT {
        b.add_document(name, text).map_err(|e| e.to_string())?;
    }
    let snap = b.finish().map_err(|e| e.to_string())?;
    CompiledPolicy::compile(snap.policy).map_err(|e| e.to_string())
}

const WEB: &str = "eni-0e1f2a3b4c5d6d001";
const APP0: &str = "eni-0e1f2a3b4c5d6d002";
const APP1: &str = "eni-0e1f2a3b4c5d6d003";
const DB: &str = "eni-0e1f2a3b4c5d6d004";

/// One row of the demo.
struct Flow {
    /// What is tried, in words.
    what: &'static str,
    /// The client's namespace (short name).
    from: &'static str,
    proto: Proto,
    src: IpAddr,
    /// The client's source port (0: any).
    sport: u16,
    dst: SocketAddr,
    expect_pass: bool,
    /// Show the verdict of the reply direction (a stateful reply) instead of the request.
    reply: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
    Ping,
    /// An HTTP `GET` of this target ([`lab::http_requests`]).
    Http(&'static str),
}

fn a(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("literal socket address")
}

/// The demo's HTTP requests to the app server: a normal one, and one whose URL names the
/// instance metadata address (the 2019 SSRF), which the `imds-ssrf` rule blocks.
const IMDS_CLEAN: &str = "/fetch?url=http://example.com/";
const IMDS_SSRF: &str =
    "/fetch?url=http://169.254.169.254/latest/meta-data/iam/security-credentials/";

fn flows() -> Vec<Flow> {
    let f = |what, from, proto, src: &str, dst: &str, expect_pass, reply| Flow {
        what,
        from,
        proto,
        src: a(src),
        sport: 0,
        dst: sa(dst),
        expect_pass,
        reply,
    };
    let http = |what, sport, target, expect_pass| Flow {
        what,
        from: "web",
        proto: Proto::Http(target),
        src: a("10.0.1.10"),
        sport,
        dst: sa("10.0.2.10:8080"),
        expect_pass,
        reply: false,
    };
    use Proto::*;
    vec![
        f(
            "web -> app :8080",
            "web",
            Tcp,
            "10.0.1.10",
            "10.0.2.10:8080",
            true,
            false,
        ),
        f(
            "  its reply app -> web (stateful)",
            "web",
            Tcp,
            "10.0.1.10",
            "10.0.2.10:8080",
            true,
            true,
        ),
        http(
            "HTTP web -> app :8080 GET /fetch?url=http://example.com/",
            41080,
            IMDS_CLEAN,
            true,
        ),
        http(
            "HTTP web -> app :8080 GET /fetch?url=http://169.254.169.254/… (SSRF)",
            41169,
            IMDS_SSRF,
            false,
        ),
        f(
            "app -> db :5432",
            "app0",
            Tcp,
            "10.0.2.10",
            "10.0.3.20:5432",
            true,
            false,
        ),
        f(
            "  its reply db -> app (stateful, db has no outbound rule)",
            "app0",
            Tcp,
            "10.0.2.10",
            "10.0.3.20:5432",
            true,
            true,
        ),
        f(
            "app eth1 -> db :5432 (group reference)",
            "app1",
            Tcp,
            "10.0.2.11",
            "10.0.3.20:5432",
            true,
            false,
        ),
        f(
            "web -> db :5432 (skips the app tier)",
            "web",
            Tcp,
            "10.0.1.10",
            "10.0.3.20:5432",
            false,
            false,
        ),
        f(
            "internet -> web :443 (untracked)",
            "inet",
            Tcp,
            "198.51.100.23",
            "10.0.1.10:443",
            true,
            false,
        ),
        f(
            "internet -> web [v6] :443",
            "inet",
            Tcp,
            "2001:db8:ffff::23",
            "[2001:db8:3a1e:4b01::10]:443",
            true,
            false,
        ),
        f(
            "internet -> web :8443 (NACL allows, SG does not)",
            "inet",
            Tcp,
            "198.51.100.23",
            "10.0.1.10:8443",
            false,
            false,
        ),
        f(
            "block-listed 192.0.2.66 -> web :443",
            "inet",
            Tcp,
            "192.0.2.66",
            "10.0.1.10:443",
            false,
            false,
        ),
        f(
            "app -> internet :443 (via NAT route)",
            "app0",
            Tcp,
            "10.0.2.10",
            "198.51.100.80:443",
            true,
            false,
        ),
        f(
            "app -> 10.1.0.5 :443 (decommissioned peering)",
            "app0",
            Tcp,
            "10.0.2.10",
            "10.1.0.5:443",
            false,
            false,
        ),
        f(
            "db -> internet :443 (db may not initiate)",
            "db",
            Tcp,
            "10.0.3.20",
            "198.51.100.80:443",
            false,
            false,
        ),
        f(
            "udp web -> Amazon DNS 10.0.0.2:53",
            "web",
            Udp,
            "10.0.1.10",
            "10.0.0.2:53",
            true,
            false,
        ),
        f(
            "udp web -> app :8080",
            "web",
            Udp,
            "10.0.1.10",
            "10.0.2.10:8080",
            false,
            false,
        ),
        f(
            "ping app -> metadata 169.254.169.254",
            "app0",
            Ping,
            "10.0.2.10",
            "169.254.169.254:0",
            true,
            false,
        ),
        f(
            "ping internet -> web",
            "inet",
            Ping,
            "198.51.100.23",
            "10.0.1.10:0",
            false,
            false,
        ),
    ]
}

/// Runs the demo; the exit status is 0 when every flow behaved as expected.
pub fn main() -> ExitCode {
    if !tap::is_root() {
        eprintln!(
            "vpcfw demo: needs root (it creates network namespaces and TAP devices): run `sudo vpcfw demo`"
        );
        return ExitCode::from(1);
    }
    if let Some(why) = lab::unavailable() {
        eprintln!("vpcfw demo: cannot run here: {why}");
        return ExitCode::from(1);
    }
    // Ctrl-C and SIGTERM are handled by a thread that cleans up; block them before any
    // other thread starts.
    let signals = match SignalFd::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vpcfw demo: signalfd: {e}");
            return ExitCode::from(1);
        }
    };
    let prefix = format!("vfd{}", std::process::id() % 10_000_000);
    let lab = Lab::new(&prefix);
    let created = lab.created();
    let watcher = std::thread::Builder::new()
        .name("demo-signals".into())
        .spawn(move || {
            let Ok(ep) = Epoll::new() else { return };
            if ep
                .add(std::os::fd::AsRawFd::as_raw_fd(&signals), 0)
                .is_err()
            {
                return;
            }
            let mut ev = EpollEvents::with_capacity(1);
            loop {
                if ep.wait(&mut ev, None).is_err() {
                    return;
                }
                if ev.tokens().next().is_some() && signals.read().is_some() {
                    eprintln!("\nvpcfw demo: interrupted, removing the namespaces");
                    created.cleanup();
                    std::process::exit(130);
                }
            }
        });
    if let Err(e) = watcher {
        eprintln!("vpcfw demo: {e}");
        return ExitCode::from(1);
    }
    // `run` owns the lab: its namespaces are removed when it returns, whatever happened.
    match run(lab, &prefix) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("vpcfw demo: {e}");
            ExitCode::from(1)
        }
    }
}

/// The namespaces: short name, port attachment, interface configuration.
/// A namespace: short name, what its port is attached to, addresses, routes.
type Node = (
    &'static str,
    Attach,
    Vec<&'static str>,
    Vec<Vec<&'static str>>,
);

fn topology() -> Vec<Node> {
    vec![
        (
            "web",
            Attach::Eni(WEB.into()),
            vec!["10.0.1.10/24", "2001:db8:3a1e:4b01::10/64"],
            vec![
                vec!["default", "via", "10.0.1.1"],
                vec!["default", "via", "fe80::1"],
            ],
        ),
        (
            "app0",
            Attach::Eni(APP0.into()),
            vec!["10.0.2.10/24"],
            vec![vec!["default", "via", "10.0.2.1"]],
        ),
        (
            "app1",
            Attach::Eni(APP1.into()),
            vec!["10.0.2.11/24"],
            vec![vec!["default", "via", "10.0.2.1"]],
        ),
        (
            "db",
            Attach::Eni(DB.into()),
            vec!["10.0.3.20/24"],
            vec![vec!["default", "via", "10.0.3.1"]],
        ),
        (
            "inet",
            Attach::Internet,
            // Internet hosts, the Amazon DNS and metadata stand-ins.
            vec![
                "198.51.100.23/32",
                "192.0.2.66/32",
                "198.51.100.80/32",
                "10.0.0.2/32",
                "169.254.169.254/32",
                "2001:db8:ffff::23/128",
            ],
            vec![
                vec!["10.0.0.0/16", "src", "198.51.100.23"],
                vec!["2001:db8:3a1e:4b00::/56"],
            ],
        ),
    ]
}

/// The three-tier namespaces (`web`, `app0`, `app1`, `db`, `inet`) with the forwarder
/// running between them in a thread of this process. Dropping it stops the forwarder and
/// removes the namespaces (the TAP devices go with their descriptors).
pub struct Running {
    control: Control,
    thread: Option<JoinHandle<io::Result<Forwarder>>>,
    inspection: Option<String>,
    /// The namespaces (removed when dropped).
    pub lab: Lab,
}

impl Running {
    /// Opens one TAP per node (named `PREFIX` + short name, at most 15 characters), moves
    /// each into a new namespace of `lab`, configures it and starts the forwarder with
    /// `cfg` (its ports are replaced by the topology's). With `verbose`, prints the layout.
    pub fn start(
        lab: Lab,
        prefix: &str,
        policy: CompiledPolicy,
        mut cfg: RunConfig,
        verbose: bool,
    ) -> Result<Running, String> {
        let topo = topology();
        cfg.ports = topo
            .iter()
            .map(|(n, at, _, _)| (format!("{prefix}{n}"), at.clone()))
            .collect();
        let mut fwd = Forwarder::open(&cfg, policy)?;
        for (i, (name, attach, addrs, routes)) in topo.iter().enumerate() {
            let ns = lab.add(name)?;
            let iface = Iface {
                mac: Some(fwd.router().ports()[i].peer_mac),
                addrs: addrs.iter().map(|s| s.to_string()).collect(),
                routes: routes
                    .iter()
                    .map(|r| r.iter().map(|s| s.to_string()).collect())
                    .collect(),
            };
            lab.attach(fwd.taps()[i].name(), &ns, &iface)?;
            if verbose {
                let what = match attach {
                    Attach::Eni(id) => id.clone(),
                    Attach::Internet => "internet + AWS services stand-in".into(),
                };
                println!("  namespace {ns:<18} {what:<26} {}", addrs.join(" "));
            }
        }
        let control = fwd.control();
        let inspection = fwd
            .firewall()
            .inspector()
            .map(|i| super::run::describe_inspection(Some(i)));
        let thread = std::thread::Builder::new()
            .name("forwarder".into())
            .spawn(move || fwd.run(None).map(|()| fwd))
            .map_err(|e| e.to_string())?;
        Ok(Running {
            control,
            thread: Some(thread),
            inspection,
            lab,
        })
    }

    /// The loaded payload-inspection rules in one line, if any (read when started).
    pub fn inspector_summary(&self) -> Option<&str> {
        self.inspection.as_deref()
    }

    /// The full name of namespace `short` (`web`, `app0`, `app1`, `db`, `inet`).
    pub fn ns(&self, short: &str) -> String {
        self.lab.ns(short)
    }

    /// The forwarder's control handle (reload, stop).
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Stops the forwarder (flushing its flow log and trace) and returns it.
    pub fn stop(&mut self) -> Result<Forwarder, String> {
        self.control.stop();
        let t = self
            .thread
            .take()
            .ok_or("the forwarder was already stopped")?;
        t.join()
            .map_err(|_| "the forwarder thread panicked".to_string())?
            .map_err(|e| format!("forwarder: {e}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

fn run(lab: Lab, prefix: &str) -> Result<bool, String> {
    let policy = three_tier()?;
    let dir = std::env::temp_dir().join(format!("{prefix}-demo"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cfg = RunConfig::new(Vec::new());
    let trace_path = dir.join("trace.jsonl");
    let flow_path = dir.join("flow-log.txt");
    let rules_path = dir.join(crate::inspect::RULES_FILE);
    std::fs::write(&rules_path, INSPECTION)
        .map_err(|e| format!("{}: {e}", rules_path.display()))?;
    cfg.inspection = Some(rules_path);
    cfg.trace = Some(trace_path.clone());
    cfg.flow_log = Some(flow_path.clone());
    println!(
        "vpcfw demo: the bundled three-tier VPC (examples/three-tier), real traffic through TAP devices\n"
    );
    let mut running = Running::start(lab, prefix, policy, cfg, true)?;
    if let Some(i) = running.inspector_summary() {
        println!("  payload inspection: {i}");
    }
    let lab = &running.lab;

    // Servers: every port a flow tries, so a blocked flow is the network's doing.
    let ns = |n: &str| lab.ns(n);
    let mut servers = Vec::new();
    // The app server answers HTTP requests and echoes anything else.
    servers.push(
        Server::http(&ns("app0"), sa("10.0.2.10:8080"))
            .map_err(|e| format!("server 10.0.2.10:8080: {e}"))?,
    );
    let tcp_servers = [
        ("db", "10.0.3.20:5432"),
        ("web", "10.0.1.10:443"),
        ("web", "10.0.1.10:8443"),
        ("web", "[2001:db8:3a1e:4b01::10]:443"),
        ("inet", "198.51.100.80:443"),
    ];
    for (n, addr) in tcp_servers {
        servers.push(Server::tcp(&ns(n), sa(addr)).map_err(|e| format!("server {addr}: {e}"))?);
    }
    for (n, addr) in [("inet", "10.0.0.2:53"), ("app0", "10.0.2.10:8080")] {
        servers.push(Server::udp(&ns(n), sa(addr)).map_err(|e| format!("server {addr}: {e}"))?);
    }

    let flows = flows();
    let timeout = Duration::from_millis(2000);
    let mut observed = Vec::new();
    for f in &flows {
        if f.reply {
            // Observed together with its request (the row above).
            observed.push(observed.last().cloned().unwrap_or(Observed::TimedOut));
            continue;
        }
        let src = SocketAddr::new(f.src, f.sport);
        let o = match f.proto {
            Proto::Tcp => lab::tcp_exchange(&ns(f.from), src, f.dst, timeout),
            Proto::Http(target) => lab::http_requests(&ns(f.from), src, f.dst, &[target], timeout)
                .pop()
                .unwrap_or(Observed::TimedOut),
            Proto::Udp => lab::udp_exchange(&ns(f.from), src, f.dst, timeout),
            Proto::Ping => match f.dst.ip() {
                IpAddr::V4(d) => lab::ping(&ns(f.from), d, timeout),
                IpAddr::V6(_) => Observed::Failed("IPv6 ping".into()),
            },
        };
        observed.push(o);
    }
    drop(servers);
    let fwd = running.stop()?;

    let trace: Vec<Value> = std::fs::read_to_string(&trace_path)
        .map_err(|e| format!("{}: {e}", trace_path.display()))?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let w = flows
        .iter()
        .map(|f| f.what.chars().count())
        .max()
        .unwrap_or(0);
    println!(
        "\n{:<w$} {:<8} {:<10} decided by",
        "flow", "expected", "observed"
    );
    let mut good = 0;
    for (f, o) in flows.iter().zip(&observed) {
        let expected = if f.expect_pass { "pass" } else { "blocked" };
        let ok = (o == &Observed::Passed) == f.expect_pass && !matches!(o, Observed::Failed(_));
        good += usize::from(ok);
        let label = format!("{} {}", o.label(), if ok { "✓" } else { "✗" });
        println!(
            "{:<w$} {:<8} {:<10} {}",
            f.what,
            expected,
            label,
            decided_by(&trace, f)
        );
    }
    println!("\nflow logs (AWS version 2 default format):");
    let flow_log = std::fs::read_to_string(&flow_path).unwrap_or_default();
    for l in flow_log.lines() {
        println!("  {l}");
    }
    let st = fwd.firewall().stats();
    let rs = fwd.router().stats();
    println!(
        "\nforwarder: {} frames, {} forwarded, {} ARP and {} neighbour replies; firewall judged {} packets, accepted {}",
        rs.frames, rs.forwarded, rs.arp_replies, rs.nd_replies, st.packets, st.accepted
    );
    if let Some(c) = fwd.inspection_counters() {
        let rules: Vec<String> = c
            .rules
            .iter()
            .map(|(name, action, n)| {
                let verb = match action {
                    crate::inspect::RuleAction::Block => "blocked",
                    crate::inspect::RuleAction::Count => "counted",
                };
                format!("{name} {verb} {n}")
            })
            .collect();
        println!(
            "payload inspection: {}; {} packets rejected at stage inspection",
            rules.join(", "),
            st.rejected[crate::firewall::Stage::Inspection.index()]
        );
    }
    println!(
        "{good}/{} flows as expected; namespaces and TAP devices removed",
        flows.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(good == flows.len())
}

/// The stage and rule that decided a flow, from the forwarder's trace: for a rejection the
/// rejecting stage and rule; for an acceptance how the last security-group step passed it.
fn decided_by(trace: &[Value], f: &Flow) -> String {
    let dst = f.dst.ip().to_string();
    let src = f.src.to_string();
    let (proto, port) = match f.proto {
        Proto::Tcp | Proto::Http(_) => (6, Some(f.dst.port())),
        Proto::Udp => (17, Some(f.dst.port())),
        Proto::Ping => (1, None),
    };
    let of_flow = |t: &&Value| {
        let (s, d, pk, ck) = if f.reply {
            (&dst, &src, "sport", "dport")
        } else {
            (&src, &dst, "dport", "sport")
        };
        t["src"] == s.as_str()
            && t["dst"] == d.as_str()
            && t["proto"] == proto
            && port.is_none_or(|p| t[pk] == p)
            && (f.sport == 0 || t[ck] == f.sport)
            && (f.proto != Proto::Ping || t["type"] == 8)
    };
    // A flow with a fixed client port is one connection: the packet that decided it is its
    // first rejected one (an HTTP request blocked after the handshake), else its first.
    let rejected = || {
        trace
            .iter()
            .filter(of_flow)
            .find(|t| t["action"] == "REJECT")
    };
    let hit = match f.sport {
        0 => trace.iter().find(of_flow),
        _ => rejected().or_else(|| trace.iter().find(of_flow)),
    };
    let Some(t) = hit else {
        return "(no packet reached the firewall)".into();
    };
    let stage = t["stage"].as_str().unwrap_or("");
    if t["action"] == "REJECT" {
        let rule = t["rule"]
            .as_str()
            .unwrap_or_else(|| t["reason"].as_str().unwrap_or(""));
        return format!("REJECT {stage} {rule}");
    }
    if stage == "exempt" {
        return "ACCEPT exempt (never filtered)".into();
    }
    let path = t["path"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let want = if f.reply { "sg-egress" } else { "sg-ingress" };
    let step = path.iter().find(|s| s["stage"] == want);
    match step {
        Some(s) => {
            let via = s["via"].as_str().unwrap_or("");
            match s["rule"].as_str() {
                Some(r) => format!("ACCEPT {want} {r} ({via})"),
                None => format!("ACCEPT {want} by {via}"),
            }
        }
        None => {
            let r = path
                .iter()
                .find(|s| s["stage"] == "route")
                .and_then(|s| s["rule"].as_str())
                .unwrap_or("");
            format!("ACCEPT leaves the VPC by {r}")
        }
    }
}
