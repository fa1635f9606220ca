//! The forwarder's I/O loops (`vpcfw run`): one TAP device per port, with one queue per worker
//! thread (`IFF_MULTI_QUEUE`); each worker waits on its queues with epoll, reads bursts of up
//! to [`BURST`] frames, routes and judges a burst with the shared [`Router`] and [`Firewall`]
//! under one lock, then writes the frames on. The calling thread handles signals, atomic
//! reloads, flow-log intervals and the Prometheus metrics on a loopback port.
//!
//! Buffers are allocated once at start; the loops do not allocate per frame (the optional
//! flow log and trace do, per record and per line).

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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
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
    /// Worker threads, each servicing one queue of every TAP device (1 to [`MAX_WORKERS`];
    /// above 1 the devices are opened multi-queue).
    pub workers: usize,
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
            workers: 1,
        }
    }
}

enum Request {
    Reload(Option<PathBuf>, mpsc::Sender<Result<(), String>>),
}

struct Shared {
    /// Wakes the control thread (requests, stop).
    wake: EventFd,
    /// Readable once the forwarder stops (never drained): wakes every worker.
    halt: EventFd,
    stop: AtomicBool,
    requests: Mutex<Vec<Request>>,
}

impl Shared {
    /// Stops the workers and the control thread.
    fn halt(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify();
        self.halt.notify();
    }
}

/// A handle to a running forwarder, usable from any thread.
#[derive(Clone)]
pub struct Control(Arc<Shared>);

impl Control {
    /// Asks the loop to stop; [`Forwarder::run`] then flushes and returns.
    pub fn stop(&self) {
        self.0.halt();
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

impl IoStats {
    /// Adds `o`'s counters to these.
    pub fn add(&mut self, o: &IoStats) {
        self.rx_frames += o.rx_frames;
        self.rx_bytes += o.rx_bytes;
        self.rx_segments += o.rx_segments;
        self.tx_frames += o.tx_frames;
        self.tx_bytes += o.tx_bytes;
        self.tx_errors += o.tx_errors;
        self.rx_errors += o.rx_errors;
        self.reloads += o.reloads;
        self.reload_failures += o.reload_failures;
    }
}

/// Inspection counters of the inspectors replaced by reloads, so the totals the forwarder
/// reports never go back: per (rule name, action), gaps, retransmissions.
#[derive(Clone, Debug, Default)]
struct InspectCarry {
    rules: Vec<(String, RuleAction, u64)>,
    gaps: u64,
    retransmissions: u64,
}

/// Adds each (rule name, action) count of `from` to the same rule's count in `into`, appending
/// the rules `into` lacks.
fn add_rule_counts(into: &mut Vec<(String, RuleAction, u64)>, from: &[(String, RuleAction, u64)]) {
    for (name, action, n) in from {
        match into.iter_mut().find(|(m, a, _)| m == name && a == action) {
            Some(r) => r.2 += n,
            None => into.push((name.clone(), *action, *n)),
        }
    }
}

impl InspectCarry {
    fn add(&mut self, c: &inspect::Counters) {
        add_rule_counts(&mut self.rules, &c.rules);
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
        add_rule_counts(&mut out.rules, &self.rules);
        out.gaps += self.gaps;
        out.retransmissions += self.retransmissions;
        Some(out)
    }
}

/// Room for one reply frame (an ARP reply or a Neighbor Advertisement), virtio-net header
/// included.
const REPLY_ROOM: usize = 256;

/// Most workers: a multi-queue TAP device has at most 256 queues.
pub const MAX_WORKERS: usize = 256;

/// Locks the core; a worker that panicked while holding it left it whole (every update under
/// the lock is a counter or a table operation that completes), so the poison is ignored.
fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What every worker shares, behind one mutex taken once per burst: the router, the firewall
/// (so connection tracking, the per-instance allowance and fragment records stay exact however
/// the kernel spreads flows over queues), the flow log, the trace and the counters. Reading
/// and writing frames, the system calls that take nearly all of the forwarder's time, happen
/// outside it.
struct Core {
    router: Router,
    fw: Firewall,
    inspect_carry: InspectCarry,
    flow: Option<(FlowLog, BufWriter<File>)>,
    flow_current: u64,
    trace: Option<BufWriter<File>>,
    /// Reloads applied and failed (the frame counters are the workers').
    reloads: IoStats,
    /// Each worker's I/O counters as of its latest burst.
    workers: Vec<IoStats>,
}

impl Core {
    fn io(&self) -> IoStats {
        let mut t = self.reloads;
        for w in &self.workers {
            t.add(w);
        }
        t
    }
}

/// The forwarder's clock: monotonic, but starting at the wall-clock time, so flow-log records
/// carry Unix times.
#[derive(Clone, Copy, Debug)]
struct Clock {
    start: Instant,
    /// Unix time at `start`, nanoseconds.
    epoch: u64,
}

impl Clock {
    fn now(&self) -> Time {
        Time(self.epoch + self.start.elapsed().as_nanos() as u64)
    }
}

/// What to do with a frame once the core is released.
#[derive(Clone, Copy, Debug)]
enum Plan {
    Nothing,
    Forward(u16),
    Reply(usize),
}

/// What the workers read while they run.
struct Ctx<'a> {
    core: &'a Mutex<Core>,
    shared: &'a Shared,
    vnet: bool,
    clock: Clock,
}

/// One worker: one queue of every device, its frame buffers and its I/O counters.
struct Worker {
    index: usize,
    taps: Vec<Tap>,
    bufs: Vec<Box<[u8]>>,
    lens: [usize; BURST],
    plan: [Plan; BURST],
    replies: Box<[u8]>,
    io: IoStats,
}

impl Worker {
    fn new(index: usize, taps: Vec<Tap>) -> Worker {
        Worker {
            index,
            taps,
            bufs: (0..BURST)
                .map(|_| vec![0u8; FRAME_ROOM].into_boxed_slice())
                .collect(),
            lens: [0; BURST],
            plan: [Plan::Nothing; BURST],
            replies: vec![0u8; BURST * REPLY_ROOM].into_boxed_slice(),
            io: IoStats::default(),
        }
    }

    /// Services this worker's queues until the forwarder stops. On an error the whole
    /// forwarder stops.
    fn run(&mut self, ctx: &Ctx) -> io::Result<()> {
        let r = self.serve(ctx);
        lock(ctx.core).workers[self.index] = self.io;
        if r.is_err() {
            ctx.shared.halt();
        }
        r
    }

    fn serve(&mut self, ctx: &Ctx) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let epoll = Epoll::new()?;
        let n = self.taps.len() as u64;
        for (i, t) in self.taps.iter().enumerate() {
            epoll.add(t.as_raw_fd(), i as u64)?;
        }
        epoll.add(ctx.shared.halt.as_raw_fd(), n)?;
        let mut events = EpollEvents::with_capacity(self.taps.len() + 1);
        while !ctx.shared.stop.load(Ordering::SeqCst) {
            epoll.wait(&mut events, Some(Duration::from_millis(250)))?;
            for token in events.tokens() {
                if token < n {
                    self.service(ctx, token as u16);
                }
            }
        }
        Ok(())
    }

    /// Reads a burst from this worker's queue of port `port`; routes and judges it with the
    /// core locked once; then sends it on.
    fn service(&mut self, ctx: &Ctx, port: u16) {
        let now = ctx.clock.now();
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
        if n == 0 {
            return;
        }
        let off = if ctx.vnet { VNET_HDR_LEN } else { 0 };
        {
            let mut guard = lock(ctx.core);
            let core = &mut *guard;
            for i in 0..n {
                self.plan[i] = Plan::Nothing;
                let len = self.lens[i];
                let buf = &mut self.bufs[i][..len];
                if len < off {
                    core.router.count_drop(DropReason::Malformed);
                    continue;
                }
                let frame_len = len - off;
                self.io.rx_frames += 1;
                self.io.rx_bytes += frame_len as u64;
                let mut segments = 1;
                let mut gso_hdr_len = 0;
                if ctx.vnet {
                    match VirtioNetHdr::parse(buf).and_then(|h| h.check(frame_len).map(|()| h)) {
                        Ok(h) => {
                            segments = h.segments(frame_len);
                            gso_hdr_len = usize::from(h.hdr_len);
                        }
                        Err(_) => {
                            core.router.count_drop(DropReason::Malformed);
                            continue;
                        }
                    }
                }
                self.io.rx_segments += u64::from(segments);
                let (_, frame) = buf.split_at_mut(off);
                let reply = &mut self.replies[i * REPLY_ROOM..(i + 1) * REPLY_ROOM];
                let h = core
                    .router
                    .handle(&mut core.fw, now, port, frame, &mut reply[off..]);
                if let Some((pkt, v)) = &h.judged {
                    if let Some((log, out)) = &mut core.flow {
                        // A super-frame stands for `segments` wire packets, each with its own
                        // copy of the headers (Ethernet excluded: `pkt.len` is the IP length).
                        let l2 = frame_len.saturating_sub(pkt.len as usize);
                        let extra =
                            (u64::from(segments) - 1) * gso_hdr_len.saturating_sub(l2) as u64;
                        let bytes = u64::from(pkt.len) + extra;
                        // A failed write is reported at the next flush; the frame is not held
                        // up.
                        let _ = log.record_counted(
                            core.fw.policy(),
                            now,
                            pkt,
                            v,
                            u64::from(segments),
                            bytes,
                            out,
                        );
                    }
                    if let Some(t) = &mut core.trace {
                        let name = &core.router.ports()[usize::from(port)].name;
                        let line =
                            trace_line(core.fw.policy(), core.fw.inspector(), now, name, pkt, v);
                        let _ = writeln!(t, "{line}");
                    }
                }
                self.plan[i] = match h.outcome {
                    Outcome::Forward(out) => Plan::Forward(out),
                    Outcome::Reply(rlen) => Plan::Reply(rlen),
                    Outcome::Drop(_) => Plan::Nothing,
                };
            }
            // The sends of the previous burst are counted from here.
            core.workers[self.index] = self.io;
        }
        for i in 0..n {
            match self.plan[i] {
                Plan::Forward(out) => {
                    let whole = &self.bufs[i][..self.lens[i]];
                    if self.taps[usize::from(out)].send(whole).is_ok() {
                        self.io.tx_frames += 1;
                        self.io.tx_bytes += (whole.len() - off) as u64;
                    } else {
                        self.io.tx_errors += 1;
                    }
                }
                Plan::Reply(rlen) => {
                    let reply = &mut self.replies[i * REPLY_ROOM..(i + 1) * REPLY_ROOM];
                    reply[..off].fill(0);
                    if self.taps[usize::from(port)]
                        .send(&reply[..off + rlen])
                        .is_ok()
                    {
                        self.io.tx_frames += 1;
                        self.io.tx_bytes += rlen as u64;
                    } else {
                        self.io.tx_errors += 1;
                    }
                }
                Plan::Nothing => {}
            }
        }
    }
}

/// The forwarder's firewall, borrowed from a [`Forwarder`] (its workers wait meanwhile).
pub struct FirewallRef<'a>(MutexGuard<'a, Core>);

impl std::ops::Deref for FirewallRef<'_> {
    type Target = Firewall;
    fn deref(&self) -> &Firewall {
        &self.0.fw
    }
}

/// The forwarder's router, borrowed from a [`Forwarder`] (its workers wait meanwhile).
pub struct RouterRef<'a>(MutexGuard<'a, Core>);

impl std::ops::Deref for RouterRef<'_> {
    type Target = Router;
    fn deref(&self) -> &Router {
        &self.0.router
    }
}

/// The forwarder: devices open, ready to [`run`](Forwarder::run).
///
/// With [`RunConfig::workers`] above one, every TAP device is opened with that many queues
/// (`IFF_MULTI_QUEUE`) and each worker thread services one queue of every device. The
/// kernel's tun driver spreads the flows a namespace sends over the queues by a symmetric flow
/// hash (and sends a flow's later packets to the queue last written for it), so a flow's two
/// directions normally meet at one worker; the workers nevertheless share one engine, so the
/// verdicts are those of SPEC whichever worker a packet reaches.
pub struct Forwarder {
    core: Mutex<Core>,
    workers: Vec<Worker>,
    vnet: bool,
    shared: Arc<Shared>,
    snapshot: Option<PathBuf>,
    inspection: Option<PathBuf>,
    /// The firewall is bypassed (no inspection rules are loaded).
    null: bool,
    flow_interval: u64,
    metrics: Option<MetricsText>,
    clock: Clock,
}

impl Forwarder {
    /// Opens every TAP device of `cfg` (in the calling thread's network namespace; one queue
    /// per worker), sets the peer MAC addresses, loads the inspection rules
    /// ([`RunConfig::inspection`], compiled against `policy`), opens the flow log and trace
    /// files and starts the metrics thread.
    pub fn open(cfg: &RunConfig, policy: CompiledPolicy) -> Result<Forwarder, String> {
        if !(1..=MAX_WORKERS).contains(&cfg.workers) {
            return Err(format!(
                "{} workers: expected 1 to {MAX_WORKERS}",
                cfg.workers
            ));
        }
        let inspector = if cfg.null {
            None
        } else {
            load_inspection(cfg.snapshot.as_deref(), cfg.inspection.as_deref(), &policy)
                .map_err(|e| format!("inspection rules: {e}"))?
        };
        let mut router = Router::new(&policy, cfg.ports.clone())?;
        router.set_bypass(cfg.null);
        let mut opts = cfg.tap;
        opts.multi_queue |= cfg.workers > 1;
        let mut workers: Vec<Worker> = Vec::with_capacity(cfg.workers);
        for w in 0..cfg.workers {
            let mut taps = Vec::with_capacity(cfg.ports.len());
            for (i, (name, _)) in cfg.ports.iter().enumerate() {
                // Later queues attach to the device the first one created.
                let name = workers
                    .first()
                    .map_or(name.as_str(), |w0| w0.taps[i].name());
                let tap = Tap::open(name, opts).map_err(|e| format!("TAP {name}: {e}"))?;
                if w == 0 {
                    tap.set_mac(router.ports()[i].peer_mac)
                        .map_err(|e| format!("TAP {name}: {e}"))?;
                }
                taps.push(tap);
            }
            workers.push(Worker::new(w, taps));
        }
        let io_err = |what: &str, e: io::Error| format!("{what}: {e}");
        let shared = Arc::new(Shared {
            wake: EventFd::new().map_err(|e| io_err("eventfd", e))?,
            halt: EventFd::new().map_err(|e| io_err("eventfd", e))?,
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
            core: Mutex::new(Core {
                router,
                fw,
                inspect_carry: InspectCarry::default(),
                flow,
                flow_current: 0,
                trace,
                reloads: IoStats::default(),
                workers: vec![IoStats::default(); cfg.workers],
            }),
            workers,
            vnet: cfg.tap.vnet_hdr,
            shared,
            snapshot: cfg.snapshot.clone(),
            inspection: if cfg.null {
                None
            } else {
                cfg.inspection.clone()
            },
            null: cfg.null,
            flow_interval: u64::from(cfg.flow_log_interval.max(1)),
            metrics,
            clock: Clock {
                start: Instant::now(),
                epoch: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
            },
        })
    }

    /// The TAP devices (the first worker's queue of each), by port number.
    pub fn taps(&self) -> &[Tap] {
        &self.workers[0].taps
    }

    /// The number of workers (queues per device).
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// A handle to stop or reload the forwarder from another thread.
    pub fn control(&self) -> Control {
        Control(self.shared.clone())
    }

    /// The firewall (counters, live entries).
    pub fn firewall(&self) -> FirewallRef<'_> {
        FirewallRef(lock(&self.core))
    }

    /// The router (ports, counters).
    pub fn router(&self) -> RouterRef<'_> {
        RouterRef(lock(&self.core))
    }

    /// The I/O counters, summed over the workers.
    pub fn io_stats(&self) -> IoStats {
        lock(&self.core).io()
    }

    /// Each worker's I/O counters (as of its latest burst while running).
    pub fn worker_stats(&self) -> Vec<IoStats> {
        lock(&self.core).workers.clone()
    }

    /// The payload-inspection counters since start, summed over every rule set loaded (a
    /// reload does not reset them); `None` when no rules were ever loaded.
    pub fn inspection_counters(&self) -> Option<inspect::Counters> {
        inspection_counters(&lock(&self.core))
    }

    /// Runs until [`Control::stop`] or (with `signals`) SIGINT/SIGTERM; SIGHUP reloads the
    /// configured snapshot. The workers run on threads of their own; the calling thread
    /// handles signals, reloads, flow-log intervals and metrics. Flushes the flow log and the
    /// trace before returning.
    pub fn run(&mut self, signals: Option<&SignalFd>) -> io::Result<()> {
        let mut workers = std::mem::take(&mut self.workers);
        let ctx = Ctx {
            core: &self.core,
            shared: &self.shared,
            vnet: self.vnet,
            clock: self.clock,
        };
        let ctx = &ctx;
        let result = std::thread::scope(|s| {
            let mut handles = Vec::with_capacity(workers.len());
            let mut result = Ok(());
            for w in workers.iter_mut() {
                let spawned = std::thread::Builder::new()
                    .name(format!("vpcfw-worker-{}", w.index))
                    .spawn_scoped(s, move || w.run(ctx));
                match spawned {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if result.is_ok() {
                result = self.control_loop(signals);
            }
            self.shared.halt();
            for h in handles {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("a forwarder worker panicked")));
                if result.is_ok() {
                    result = r;
                }
            }
            result
        });
        self.workers = workers;
        let flushed = self.finish();
        result.and(flushed)
    }

    /// The calling thread's part of [`run`](Self::run): signals, requests, periodic work.
    fn control_loop(&self, signals: Option<&SignalFd>) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let epoll = Epoll::new()?;
        epoll.add(self.shared.wake.as_raw_fd(), 0)?;
        if let Some(s) = signals {
            epoll.add(s.as_raw_fd(), 1)?;
        }
        let mut events = EpollEvents::with_capacity(2);
        let mut last_publish = Instant::now();
        self.publish();
        while !self.shared.stop.load(Ordering::SeqCst) {
            epoll.wait(&mut events, Some(Duration::from_millis(250)))?;
            for token in events.tokens() {
                if token == 0 {
                    self.shared.wake.drain();
                    self.requests();
                } else {
                    while let Some(sig) = signals.and_then(SignalFd::read) {
                        match sig {
                            Signal::Stop => self.shared.halt(),
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
        Ok(())
    }

    /// Periodic work: flow-log intervals, file flushes, metrics.
    fn tick(&self) -> io::Result<()> {
        let secs = self.clock.now().0 / 1_000_000_000;
        let interval = secs / self.flow_interval;
        {
            let mut guard = lock(&self.core);
            let core = &mut *guard;
            if let Some((log, out)) = &mut core.flow
                && interval != core.flow_current
            {
                log.flush(core.fw.policy(), out)?;
                out.flush()?;
            }
            core.flow_current = interval;
            if let Some(t) = &mut core.trace {
                t.flush()?;
            }
        }
        self.publish();
        Ok(())
    }

    fn finish(&self) -> io::Result<()> {
        {
            let mut guard = lock(&self.core);
            let core = &mut *guard;
            if let Some((log, out)) = &mut core.flow {
                log.flush(core.fw.policy(), out)?;
                out.flush()?;
            }
            if let Some(t) = &mut core.trace {
                t.flush()?;
            }
        }
        self.publish();
        Ok(())
    }

    fn requests(&self) {
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
    /// swaps both in atomically between bursts (the workers keep forwarding under the old
    /// policy while the new one compiles). If either fails to load, neither changes.
    fn reload(&self, dir: Option<&Path>) -> Result<(), String> {
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
        let mut guard = lock(&self.core);
        let core = &mut *guard;
        let (policy, inspector) = match loaded {
            Ok(p) => p,
            Err(e) => {
                core.reloads.reload_failures += 1;
                return Err(e);
            }
        };
        // Every port's ENI must still exist, or the reload is refused as a whole.
        let mut check = core.router.clone();
        let gone = check.reload(&policy);
        if !gone.is_empty() {
            core.reloads.reload_failures += 1;
            return Err(format!(
                "{}: the network interfaces of ports {} are not in the new snapshot",
                dir.display(),
                gone.join(", ")
            ));
        }
        if let Some((log, out)) = &mut core.flow {
            // Records name ENIs of the policy they were made under.
            log.flush(core.fw.policy(), out)
                .map_err(|e| format!("flow log: {e}"))?;
        }
        core.router.reload(&policy);
        if let Some(old) = core.fw.inspector() {
            core.inspect_carry.add(&old.counters());
        }
        core.fw.reload(policy);
        core.fw.set_inspector(inspector);
        core.reloads.reloads += 1;
        eprintln!(
            "vpcfw: reloaded {}; {}",
            dir.display(),
            describe_inspection(core.fw.inspector())
        );
        Ok(())
    }

    /// Renders the metrics text for the metrics thread.
    fn publish(&self) {
        let Some(m) = &self.metrics else { return };
        let text = {
            let core = lock(&self.core);
            let insp = inspection_counters(&core);
            render_metrics(
                &core.fw,
                &core.router,
                &core.io(),
                &core.workers,
                insp.as_ref(),
            )
        };
        if let Ok(mut g) = m.lock() {
            *g = text;
        }
    }
}

/// The inspection counters of the current rules plus those carried over reloads.
fn inspection_counters(core: &Core) -> Option<inspect::Counters> {
    let current = core.fw.inspector().map(Inspector::counters);
    core.inspect_carry.total(current.as_ref())
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

/// The Prometheus text exposition of the counters: `io` summed over the workers, `workers`
/// each worker's, and `inspection` the payload-inspection counters to show
/// ([`Forwarder::inspection_counters`]), if rules are or were loaded.
pub fn render_metrics(
    fw: &Firewall,
    router: &Router,
    io: &IoStats,
    workers: &[IoStats],
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
    let per_worker = |f: fn(&IoStats) -> u64| -> Vec<(String, u64)> {
        workers
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("{{worker=\"{i}\"}}"), f(w)))
            .collect()
    };
    counter(
        "worker_rx_frames_total",
        "Frames read from TAP devices, by worker (one queue of every device each).",
        &per_worker(|w| w.rx_frames),
    );
    counter(
        "worker_tx_frames_total",
        "Frames written to TAP devices, by worker.",
        &per_worker(|w| w.tx_frames),
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
