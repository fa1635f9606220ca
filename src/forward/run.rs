//! The forwarder's I/O loop (`vpcfw run`): one TAP device per port, epoll, bursts of up to
//! [`BURST`] frames per device, the [`Router`] and the [`Firewall`] in between, flow logs,
//! a verdict trace, Prometheus metrics on a loopback port, and atomic reloads.
//!
//! Buffers are allocated once at start; the loop itself does not allocate per frame (the
//! optional flow log and trace do, per record and per line).

use super::{Attach, DropReason, Outcome, Router};
use crate::aws;
use crate::compile::CompiledPolicy;
use crate::conntrack::Time;
use crate::firewall::{Firewall, Packet, Stage, Verdict};
use crate::flowlog::FlowLog;
use crate::inspect::{self, Inspector, RuleAction};
use crate::tap::{
    Epoll, EpollEvents, EventFd, Signal, SignalFd, Tap, TapOptions, VNET_HDR_LEN, VirtioNetHdr,
};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Frames read from one device before they are processed and sent on.
pub const BURST: usize = 32;
/// Room for one frame: the largest IP datagram, a tagged Ethernet header and the virtio-net
/// header.
pub const FRAME_ROOM: usize = 65_535 + 18 + VNET_HDR_LEN + 64;

/// What `vpcfw run` is told.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The snapshot directory reloaded on SIGHUP (and by [`Control::reload`] without a path).
    pub snapshot: Option<PathBuf>,
    /// TAP device name and what it is attached to, one per port.
    pub ports: Vec<(String, Attach)>,
    /// Cap on live tracked connections per instance.
    pub allowance: Option<u32>,
    /// Flow-log file (AWS version 2 default format).
    pub flow_log: Option<PathBuf>,
    /// Flow-log aggregation interval, seconds.
    pub flow_log_interval: u32,
    /// Serve Prometheus text metrics here (loopback addresses only).
    pub metrics: Option<SocketAddr>,
    /// Write one JSON line per judged packet here (the verdict with its whole path).
    pub trace: Option<PathBuf>,
    /// Bypass the firewall (the null forwarder of the throughput benchmark).
    pub null: bool,
    /// Payload byte-match rules file ([`crate::inspect`]); `None`: the snapshot directory's
    /// `inspection.json` when it has one (at start and at every reload).
    pub inspection: Option<PathBuf>,
    /// TAP options (virtio-net header, offloads, multi-queue).
    pub tap: TapOptions,
}

impl RunConfig {
    /// A configuration with the given ports and defaults elsewhere.
    pub fn new(ports: Vec<(String, Attach)>) -> RunConfig {
        RunConfig {
            snapshot: None,
            ports,
            allowance: None,
            flow_log: None,
            flow_log_interval: crate::flowlog::DEFAULT_INTERVAL_SECS,
            metrics: None,
            trace: None,
            null: false,
            inspection: None,
            tap: TapOptions::default(),
        }
    }
}

enum Request {
    Reload(Option<PathBuf>, mpsc::Sender<Result<(), String>>),
}

struct Shared {
    wake: EventFd,
    stop: AtomicBool,
    requests: Mutex<Vec<Request>>,
}

/// A handle to a running forwarder, usable from any thread.
#[derive(Clone)]
pub struct Control(Arc<Shared>);

impl Control {
    /// Asks the loop to stop; [`Forwarder::run`] then flushes and returns.
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
        self.0.wake.notify();
    }

    /// Reloads the snapshot directory `dir` (the configured one when `None`) and its
    /// inspection rules, and waits for the loop to apply them. On error the old policy and
    /// the old rules stay and the message says why.
    pub fn reload(&self, dir: Option<&Path>) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.0
            .requests
            .lock()
            .map_err(|_| "forwarder gone".to_string())?
            .push(Request::Reload(dir.map(Path::to_path_buf), tx));
        self.0.wake.notify();
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| "the forwarder did not answer the reload".to_string())?
    }
}

/// Loads and compiles a snapshot directory; the message names what failed.
pub fn load_policy(dir: &Path) -> Result<CompiledPolicy, String> {
    let snap = aws::load_dir(dir).map_err(|e| e.to_string())?;
    CompiledPolicy::compile(snap.policy).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Loads and compiles the inspection rules for `policy`: `file` when given, else
/// `dir/inspection.json` when `dir` has one; `Ok(None)` when there are none. Warnings are
/// printed to standard error. The message names what failed.
pub fn load_inspection(
    dir: Option<&Path>,
    file: Option<&Path>,
    policy: &CompiledPolicy,
) -> Result<Option<Arc<Inspector>>, String> {
    let Some(dir) = dir.or(file.and_then(Path::parent)) else {
        return Ok(None);
    };
    match inspect::load_for(dir, file, policy.policy()).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some((insp, warnings)) => {
            for w in &warnings {
                eprintln!("vpcfw: warning: {w}");
            }
            Ok(Some(Arc::new(insp)))
        }
    }
}

/// One line about the loaded inspection rules, for the log.
pub fn describe_inspection(insp: Option<&Inspector>) -> String {
    match insp {
        None => "no inspection rules".into(),
        Some(i) => format!(
            "{} inspection rules from {} ({} scope classes)",
            i.rules_len(),
            i.file(),
            i.scopes_len()
        ),
    }
}

/// The latest metrics text, shared with the metrics thread.
type MetricsText = Arc<Mutex<String>>;

/// Counters of the I/O edge.
#[derive(Clone, Copy, Debug, Default)]
pub struct IoStats {
    /// Frames read.
    pub rx_frames: u64,
    /// Bytes read (frames without the virtio-net header).
    pub rx_bytes: u64,
    /// Wire packets read (super-frames count their segments).
    pub rx_segments: u64,
    /// Frames written.
    pub tx_frames: u64,
    /// Bytes written.
    pub tx_bytes: u64,
    /// Failed writes (the peer device is down, …).
    pub tx_errors: u64,
    /// Failed reads other than "nothing waiting".
    pub rx_errors: u64,
    /// Reloads applied.
    pub reloads: u64,
    /// Reloads that failed (the old policy stayed).
    pub reload_failures: u64,
}

/// Inspection counters of the inspectors replaced by reloads, so the totals the forwarder
/// reports never go back: per (rule name, action), gaps, retransmissions.
#[derive(Clone, Debug, Default)]
struct InspectCarry {
    rules: Vec<(String, RuleAction, u64)>,
    gaps: u64,
    retransmissions: u64,
}

impl InspectCarry {
    fn add(&mut self, c: &inspect::Counters) {
        for (name, action, n) in &c.rules {
            match self
                .rules
                .iter_mut()
                .find(|(m, a, _)| m == name && a == action)
            {
                Some(r) => r.2 += n,
                None => self.rules.push((name.clone(), *action, *n)),
            }
        }
        self.gaps += c.gaps;
        self.retransmissions += c.retransmissions;
    }

    /// `current` plus what was carried: the current rules first, in rule order, then rules of
    /// earlier rule sets that are no longer loaded.
    fn total(&self, current: Option<&inspect::Counters>) -> Option<inspect::Counters> {
        if current.is_none() && self.rules.is_empty() && self.gaps + self.retransmissions == 0 {
            return None;
        }
        let mut out = current.cloned().unwrap_or_default();
        for (name, action, n) in &self.rules {
            match out
                .rules
                .iter_mut()
                .find(|(m, a, _)| m == name && a == action)
            {
                Some(r) => r.2 += n,
                None => out.rules.push((name.clone(), *action, *n)),
            }
        }
        out.gaps += self.gaps;
        out.retransmissions += self.retransmissions;
        Some(out)
    }
}

/// The forwarder: devices open, ready to [`run`](Forwarder::run).
pub struct Forwarder {
    router: Router,
    fw: Firewall,
    taps: Vec<Tap>,
    vnet: bool,
    epoll: Epoll,
    shared: Arc<Shared>,
    snapshot: Option<PathBuf>,
    inspection: Option<PathBuf>,
    /// The firewall is bypassed (no inspection rules are loaded).
    null: bool,
    inspect_carry: InspectCarry,
    flow: Option<(FlowLog, BufWriter<File>)>,
    flow_interval: u64,
    flow_current: u64,
    trace: Option<BufWriter<File>>,
    metrics: Option<MetricsText>,
    io: IoStats,
    start: Instant,
    /// Unix time at `start`, nanoseconds: the clock the firewall and flow logs see is
    /// monotonic but starts at the wall-clock time, so flow-log records carry Unix times.
    epoch: u64,
    bufs: Vec<Box<[u8]>>,
    lens: [usize; BURST],
    reply: Box<[u8]>,
}

impl Forwarder {
    /// Opens every TAP device of `cfg` (in the calling thread's network namespace), sets the
    /// peer MAC addresses, loads the inspection rules ([`RunConfig::inspection`], compiled
    /// against `policy`), opens the flow log and trace files and starts the metrics thread.
    pub fn open(cfg: &RunConfig, policy: CompiledPolicy) -> Result<Forwarder, String> {
        let inspector = if cfg.null {
            None
        } else {
            load_inspection(cfg.snapshot.as_deref(), cfg.inspection.as_deref(), &policy)
                .map_err(|e| format!("inspection rules: {e}"))?
        };
        let mut router = Router::new(&policy, cfg.ports.clone())?;
        router.set_bypass(cfg.null);
        let mut taps = Vec::with_capacity(cfg.ports.len());
        for (i, (name, _)) in cfg.ports.iter().enumerate() {
            let tap = Tap::open(name, cfg.tap).map_err(|e| format!("TAP {name}: {e}"))?;
            tap.set_mac(router.ports()[i].peer_mac)
                .map_err(|e| format!("TAP {name}: {e}"))?;
            taps.push(tap);
        }
        let io_err = |what: &str, e: io::Error| format!("{what}: {e}");
        let epoll = Epoll::new().map_err(|e| io_err("epoll", e))?;
        let shared = Arc::new(Shared {
            wake: EventFd::new().map_err(|e| io_err("eventfd", e))?,
            stop: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
        });
        let create = |p: &PathBuf| {
            File::create(p)
                .map(BufWriter::new)
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        let flow = match &cfg.flow_log {
            Some(p) => Some((FlowLog::new(cfg.flow_log_interval), create(p)?)),
            None => None,
        };
        let trace = cfg.trace.as_ref().map(create).transpose()?;
        let metrics = match cfg.metrics {
            Some(addr) => Some(serve_metrics(addr, shared.clone())?),
            None => None,
        };
        let mut fw = Firewall::new(policy, cfg.allowance);
        fw.set_inspector(inspector);
        Ok(Forwarder {
            router,
            fw,
            vnet: cfg.tap.vnet_hdr,
            taps,
            epoll,
            shared,
            snapshot: cfg.snapshot.clone(),
            inspection: if cfg.null {
                None
            } else {
                cfg.inspection.clone()
            },
            null: cfg.null,
            inspect_carry: InspectCarry::default(),
            flow,
            flow_interval: u64::from(cfg.flow_log_interval.max(1)),
            flow_current: 0,
            trace,
            metrics,
            io: IoStats::default(),
            start: Instant::now(),
            epoch: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            bufs: (0..BURST)
                .map(|_| vec![0u8; FRAME_ROOM].into_boxed_slice())
                .collect(),
            lens: [0; BURST],
            reply: vec![0u8; 256].into_boxed_slice(),
        })
    }

    /// The TAP devices, by port number.
    pub fn taps(&self) -> &[Tap] {
        &self.taps
    }

    /// A handle to stop or reload the forwarder from another thread.
    pub fn control(&self) -> Control {
        Control(self.shared.clone())
    }

    /// The firewall (counters, live entries).
    pub fn firewall(&self) -> &Firewall {
        &self.fw
    }

    /// The router (ports, counters).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The I/O counters.
    pub fn io_stats(&self) -> IoStats {
        self.io
    }

    /// The payload-inspection counters since start, summed over every rule set loaded (a
    /// reload does not reset them); `None` when no rules were ever loaded.
    pub fn inspection_counters(&self) -> Option<inspect::Counters> {
        let current = self.fw.inspector().map(Inspector::counters);
        self.inspect_carry.total(current.as_ref())
    }

    fn now(&self) -> Time {
        Time(self.epoch + self.start.elapsed().as_nanos() as u64)
    }

    /// Runs until [`Control::stop`] or (with `signals`) SIGINT/SIGTERM; SIGHUP reloads the
    /// configured snapshot. Flushes the flow log and the trace before returning.
    pub fn run(&mut self, signals: Option<&SignalFd>) -> io::Result<()> {
        let n = self.taps.len() as u64;
        for (i, t) in self.taps.iter().enumerate() {
            self.epoll
                .add(std::os::fd::AsRawFd::as_raw_fd(t), i as u64)?;
        }
        self.epoll
            .add(std::os::fd::AsRawFd::as_raw_fd(&self.shared.wake), n)?;
        if let Some(s) = signals {
            self.epoll.add(std::os::fd::AsRawFd::as_raw_fd(s), n + 1)?;
        }
        let mut events = EpollEvents::with_capacity(self.taps.len() + 2);
        let mut last_publish = Instant::now();
        self.publish();
        while !self.shared.stop.load(Ordering::SeqCst) {
            self.epoll
                .wait(&mut events, Some(Duration::from_millis(250)))?;
            for token in events.tokens() {
                if token < n {
                    self.service(token as u16);
                } else if token == n {
                    self.shared.wake.drain();
                    self.requests();
                } else {
                    while let Some(sig) = signals.and_then(SignalFd::read) {
                        match sig {
                            Signal::Stop => self.shared.stop.store(true, Ordering::SeqCst),
                            Signal::Hangup => {
                                if let Err(e) = self.reload(None) {
                                    eprintln!(
                                        "vpcfw: reload failed, the old policy and inspection rules stay: {e}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
            if last_publish.elapsed() >= Duration::from_millis(250) {
                last_publish = Instant::now();
                self.tick()?;
            }
        }
        self.finish()
    }

    /// Periodic work: flow-log intervals, file flushes, metrics.
    fn tick(&mut self) -> io::Result<()> {
        let secs = self.now().0 / 1_000_000_000;
        let interval = secs / self.flow_interval;
        if let Some((log, out)) = &mut self.flow
            && interval != self.flow_current
        {
            log.flush(self.fw.policy(), out)?;
            out.flush()?;
        }
        self.flow_current = interval;
        if let Some(t) = &mut self.trace {
            t.flush()?;
        }
        self.publish();
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some((log, out)) = &mut self.flow {
            log.flush(self.fw.policy(), out)?;
            out.flush()?;
        }
        if let Some(t) = &mut self.trace {
            t.flush()?;
        }
        self.publish();
        Ok(())
    }

    fn requests(&mut self) {
        let pending: Vec<Request> = match self.shared.requests.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(_) => return,
        };
        for r in pending {
            match r {
                Request::Reload(dir, answer) => {
                    let res = self.reload(dir.as_deref());
                    if let Err(e) = &res {
                        eprintln!(
                            "vpcfw: reload failed, the old policy and inspection rules stay: {e}"
                        );
                    }
                    let _ = answer.send(res);
                }
            }
        }
    }

    /// Loads `dir` (or the configured snapshot) and its inspection rules (the configured
    /// file, else `dir/inspection.json` if present), compiled against the new policy, and
    /// swaps both in atomically between bursts. If either fails to load, neither changes.
    fn reload(&mut self, dir: Option<&Path>) -> Result<(), String> {
        let dir = match dir.or(self.snapshot.as_deref()) {
            Some(d) => d.to_path_buf(),
            None => return Err("no snapshot directory to reload".into()),
        };
        let loaded = load_policy(&dir).and_then(|policy| {
            let insp = if self.null {
                None
            } else {
                load_inspection(Some(&dir), self.inspection.as_deref(), &policy)
                    .map_err(|e| format!("inspection rules: {e}"))?
            };
            Ok((policy, insp))
        });
        let (policy, inspector) = match loaded {
            Ok(p) => p,
            Err(e) => {
                self.io.reload_failures += 1;
                return Err(e);
            }
        };
        // Every port's ENI must still exist, or the reload is refused as a whole.
        let mut check = self.router.clone();
        let gone = check.reload(&policy);
        if !gone.is_empty() {
            self.io.reload_failures += 1;
            return Err(format!(
                "{}: the network interfaces of ports {} are not in the new snapshot",
                dir.display(),
                gone.join(", ")
            ));
        }
        if let Some((log, out)) = &mut self.flow {
            // Records name ENIs of the policy they were made under.
            log.flush(self.fw.policy(), out)
                .map_err(|e| format!("flow log: {e}"))?;
        }
        self.router.reload(&policy);
        if let Some(old) = self.fw.inspector() {
            self.inspect_carry.add(&old.counters());
        }
        self.fw.reload(policy);
        self.fw.set_inspector(inspector);
        self.io.reloads += 1;
        eprintln!(
            "vpcfw: reloaded {}; {}",
            dir.display(),
            describe_inspection(self.fw.inspector())
        );
        Ok(())
    }

    /// Reads a burst from port `port`, routes it and sends it on.
    fn service(&mut self, port: u16) {
        let now = self.now();
        let tap = &self.taps[usize::from(port)];
        let mut n = 0;
        while n < BURST {
            match tap.recv(&mut self.bufs[n]) {
                Ok(len) => {
                    self.lens[n] = len;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.io.rx_errors += 1;
                    break;
                }
            }
        }
        let off = if self.vnet { VNET_HDR_LEN } else { 0 };
        for i in 0..n {
            let len = self.lens[i];
            let buf = &mut self.bufs[i][..len];
            if len < off {
                self.router.count_drop(DropReason::Malformed);
                continue;
            }
            let frame_len = len - off;
            self.io.rx_frames += 1;
            self.io.rx_bytes += frame_len as u64;
            let mut segments = 1;
            let mut gso_hdr_len = 0;
            if self.vnet {
                match VirtioNetHdr::parse(buf).and_then(|h| h.check(frame_len).map(|()| h)) {
                    Ok(h) => {
                        segments = h.segments(frame_len);
                        gso_hdr_len = usize::from(h.hdr_len);
                    }
                    Err(_) => {
                        self.router.count_drop(DropReason::Malformed);
                        continue;
                    }
                }
            }
            self.io.rx_segments += u64::from(segments);
            let (_, frame) = buf.split_at_mut(off);
            let h = self
                .router
                .handle(&mut self.fw, now, port, frame, &mut self.reply[off..]);
            if let Some((pkt, v)) = &h.judged {
                if let Some((log, out)) = &mut self.flow {
                    // A super-frame stands for `segments` wire packets, each with its own
                    // copy of the headers (Ethernet excluded: `pkt.len` is the IP length).
                    let l2 = frame_len.saturating_sub(pkt.len as usize);
                    let extra = (u64::from(segments) - 1) * gso_hdr_len.saturating_sub(l2) as u64;
                    let bytes = u64::from(pkt.len) + extra;
                    // A failed write is reported at the next flush; the frame is not held up.
                    let _ = log.record_counted(
                        self.fw.policy(),
                        now,
                        pkt,
                        v,
                        u64::from(segments),
                        bytes,
                        out,
                    );
                }
                if let Some(t) = &mut self.trace {
                    let name = &self.router.ports()[usize::from(port)].name;
                    let line = trace_line(self.fw.policy(), self.fw.inspector(), now, name, pkt, v);
                    let _ = writeln!(t, "{line}");
                }
            }
            match h.outcome {
                Outcome::Forward(out) => {
                    let whole = &self.bufs[i][..len];
                    if self.taps[usize::from(out)].send(whole).is_ok() {
                        self.io.tx_frames += 1;
                        self.io.tx_bytes += frame_len as u64;
                    } else {
                        self.io.tx_errors += 1;
                    }
                }
                Outcome::Reply(rlen) => {
                    self.reply[..off].fill(0);
                    if self.taps[usize::from(port)]
                        .send(&self.reply[..off + rlen])
                        .is_ok()
                    {
                        self.io.tx_frames += 1;
                        self.io.tx_bytes += rlen as u64;
                    } else {
                        self.io.tx_errors += 1;
                    }
                }
                Outcome::Drop(_) => {}
            }
        }
    }

    /// Renders the metrics text for the metrics thread.
    fn publish(&self) {
        let Some(m) = &self.metrics else { return };
        let insp = self.inspection_counters();
        let text = render_metrics(&self.fw, &self.router, &self.io, insp.as_ref());
        if let Ok(mut g) = m.lock() {
            *g = text;
        }
    }
}

/// One trace line: the packet, where it came in, and the eval answer with its path (a
/// byte-match rule named as `inspector` names it).
pub fn trace_line(
    policy: &CompiledPolicy,
    inspector: Option<&Inspector>,
    now: Time,
    port: &str,
    pkt: &Packet,
    v: &Verdict,
) -> serde_json::Value {
    let mut o = crate::events::answer_with(policy, inspector, v, true);
    o["t"] = serde_json::json!(now.as_secs_f64());
    o["port"] = serde_json::json!(port);
    o["src"] = serde_json::json!(pkt.src.to_string());
    o["dst"] = serde_json::json!(pkt.dst.to_string());
    o["proto"] = serde_json::json!(pkt.proto);
    match pkt.l4 {
        crate::firewall::L4::Ports { sport, dport, .. } => {
            o["sport"] = serde_json::json!(sport);
            o["dport"] = serde_json::json!(dport);
        }
        crate::firewall::L4::Icmp {
            icmp_type, code, ..
        } => {
            o["type"] = serde_json::json!(icmp_type);
            o["code"] = serde_json::json!(code);
        }
        crate::firewall::L4::None => {}
    }
    o
}

/// The Prometheus text exposition of the counters; `inspection` are the payload-inspection
/// counters to show ([`Forwarder::inspection_counters`]), if rules are or were loaded.
pub fn render_metrics(
    fw: &Firewall,
    router: &Router,
    io: &IoStats,
    inspection: Option<&inspect::Counters>,
) -> String {
    let mut s = String::with_capacity(4096);
    let mut counter = |name: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(s, "# HELP vpcfw_{name} {help}\n# TYPE vpcfw_{name} counter");
        for (labels, v) in samples {
            let _ = writeln!(s, "vpcfw_{name}{labels} {v}");
        }
    };
    let one = |v: u64| vec![(String::new(), v)];
    let st = fw.stats();
    counter(
        "packets_judged_total",
        "Packets judged by the firewall.",
        &one(st.packets),
    );
    counter(
        "packets_accepted_total",
        "Packets the firewall accepted.",
        &one(st.accepted),
    );
    let by_stage: Vec<(String, u64)> = Stage::ALL
        .iter()
        .map(|s| {
            (
                format!("{{stage=\"{}\"}}", s.as_str()),
                st.rejected[s.index()],
            )
        })
        .collect();
    counter(
        "packets_rejected_total",
        "Packets the firewall rejected, by deciding stage.",
        &by_stage,
    );
    counter(
        "conntrack_allowance_exceeded_total",
        "Packets dropped because the instance's connection-tracking allowance was full.",
        &one(st.conntrack_allowance_exceeded),
    );
    let rs = router.stats();
    counter(
        "frames_total",
        "Frames the router handled.",
        &one(rs.frames),
    );
    counter(
        "frames_forwarded_total",
        "Frames delivered to another port.",
        &one(rs.forwarded),
    );
    counter(
        "arp_replies_total",
        "ARP replies sent.",
        &one(rs.arp_replies),
    );
    counter(
        "nd_replies_total",
        "Neighbor Advertisements sent.",
        &one(rs.nd_replies),
    );
    let drops: Vec<(String, u64)> = DropReason::ALL
        .iter()
        .map(|r| {
            (
                format!("{{reason=\"{}\"}}", r.as_str()),
                rs.dropped[r.index()],
            )
        })
        .collect();
    counter(
        "frames_dropped_total",
        "Frames the router dropped, by reason.",
        &drops,
    );
    counter(
        "rx_frames_total",
        "Frames read from TAP devices.",
        &one(io.rx_frames),
    );
    counter(
        "rx_bytes_total",
        "Bytes read from TAP devices.",
        &one(io.rx_bytes),
    );
    counter(
        "rx_segments_total",
        "Wire packets read (a segmentation-offload super-frame counts its segments).",
        &one(io.rx_segments),
    );
    counter(
        "tx_frames_total",
        "Frames written to TAP devices.",
        &one(io.tx_frames),
    );
    counter(
        "tx_bytes_total",
        "Bytes written to TAP devices.",
        &one(io.tx_bytes),
    );
    counter(
        "tx_errors_total",
        "Failed writes to TAP devices.",
        &one(io.tx_errors),
    );
    counter(
        "rx_errors_total",
        "Failed reads from TAP devices.",
        &one(io.rx_errors),
    );
    counter(
        "reloads_total",
        "Snapshot reloads applied.",
        &one(io.reloads),
    );
    counter(
        "reload_failures_total",
        "Snapshot reloads that failed (the old policy and inspection rules stayed).",
        &one(io.reload_failures),
    );
    if let Some(c) = inspection {
        let rules: Vec<(String, u64)> = c
            .rules
            .iter()
            .map(|(name, action, n)| {
                (
                    format!(
                        "{{rule=\"{}\",action=\"{}\"}}",
                        label_value(name),
                        action.as_str()
                    ),
                    *n,
                )
            })
            .collect();
        counter(
            "inspection_matches_total",
            "Payload byte-match occurrences, by rule (for block rules: the streams or datagrams they blocked).",
            &rules,
        );
        counter(
            "inspection_gaps_total",
            "TCP segments that started beyond the next expected byte (the inspection automaton restarted).",
            &one(c.gaps),
        );
        counter(
            "inspection_retransmissions_total",
            "TCP segments skipped by inspection as retransmissions (their bytes were scanned).",
            &one(c.retransmissions),
        );
    }
    s
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Starts the metrics thread: answers every connection on `addr` with the latest text.
fn serve_metrics(addr: SocketAddr, shared: Arc<Shared>) -> Result<MetricsText, String> {
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--metrics {addr}: expected a loopback address (127.0.0.1 or ::1)"
        ));
    }
    let listener = TcpListener::bind(addr).map_err(|e| format!("--metrics {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("--metrics {addr}: {e}"))?;
    let text: MetricsText = Arc::new(Mutex::new(String::new()));
    let t = text.clone();
    std::thread::Builder::new()
        .name("vpcfw-metrics".into())
        .spawn(move || {
            while !shared.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                        let mut req = [0u8; 1024];
                        let _ = conn.read(&mut req);
                        let body = t.lock().map(|g| g.clone()).unwrap_or_default();
                        let _ = write!(
                            conn,
                            "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .map_err(|e| format!("metrics thread: {e}"))?;
    Ok(text)
}
