//! `vpcfw`: AWS VPC Network ACLs and Security Groups, offline and exact.

use clap::{Parser, Subcommand};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use vpcfw::aws;
use vpcfw::capture::{CaptureError, CaptureReader, CaptureWriter, Format};
use vpcfw::compile::CompiledPolicy;
use vpcfw::events::{self, Event};
use vpcfw::firewall::Firewall;
use vpcfw::flowlog::FlowLog;
use vpcfw::inspect::Inspector;
use vpcfw::replay::{self, Summary};

#[derive(Parser)]
#[command(
    name = "vpcfw",
    version,
    about = "AWS VPC Network ACLs and Security Groups, enforced exactly as AWS does"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Judge JSON event lines against a snapshot: one JSON answer line per input line.
    Eval {
        /// Snapshot directory of `aws ec2 describe-*` JSON files.
        #[arg(long, value_name = "DIR")]
        snapshot: PathBuf,
        /// Event file (JSON lines); standard input when absent.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
        /// Cap on live tracked connections per instance.
        #[arg(long, value_name = "N")]
        allowance: Option<u32>,
        /// Add the whole path (every step, its rule, the ENIs) to each answer.
        #[arg(long)]
        trace: bool,
        /// Payload byte-match rules (`ByteMatchRules` JSON, see `vpcfw::inspect`); default:
        /// `inspection.json` in the snapshot directory, when there is one.
        #[arg(long, value_name = "FILE")]
        inspection: Option<PathBuf>,
        /// Write VPC Flow Log records (version 2 default format) to this file.
        #[arg(long, value_name = "FILE")]
        flow_log: Option<PathBuf>,
        /// Flow-log aggregation interval in seconds.
        #[arg(long, value_name = "SECS", default_value_t = vpcfw::flowlog::DEFAULT_INTERVAL_SECS)]
        flow_log_interval: u32,
        /// Do not print load warnings.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Find shadowed and redundant rules, missing return paths, exposed ports, untracked flows,
    /// stale references and quota problems. Exit status: 0 clean, 1 warnings, 2 errors.
    Lint {
        /// Snapshot directory of `aws ec2 describe-*` JSON files.
        #[arg(long, value_name = "DIR")]
        snapshot: PathBuf,
        /// Print JSON: {"findings": [{code, severity, resources, message, hint}], "summary": {...}}.
        #[arg(long)]
        json: bool,
    },
    /// Show the traffic whose verdict changes between two snapshots, with an example flow per
    /// region and what happens to live connections. Exit status: 0 no change, 1 changes, 2 error.
    Diff {
        /// The snapshot in force.
        #[arg(long, value_name = "OLD")]
        snapshot: PathBuf,
        /// The snapshot to apply.
        #[arg(long, value_name = "NEW")]
        snapshot_new: PathBuf,
        /// Print JSON: {"changes": [{src, dst, change, region, example, live_connections}]}.
        #[arg(long)]
        json: bool,
    },
    /// Judge every frame of a pcap or pcapng capture (Ethernet) as if sent by its source ENI,
    /// at its capture time; print a summary. Exit status: 0, or 2 when the capture is
    /// truncated or not a capture (after the summary of what was read) or a file fails.
    Replay(ReplayOptions),
    /// Turn `vpcfw eval` event lines into an Ethernet capture (timestamps = `t`); reload lines
    /// and lines that describe no frame are skipped with a warning.
    Pcap {
        /// Event file (JSON lines); standard input when absent.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
        /// The capture to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Write pcapng instead of classic pcap.
        #[arg(long)]
        pcapng: bool,
        /// Nanosecond timestamps (default: microseconds).
        #[arg(long)]
        nanos: bool,
        /// Big-endian headers (default: little-endian).
        #[arg(long)]
        big_endian: bool,
    },
    /// Forward real traffic between TAP devices, one per ENI, through the VPC router and the
    /// firewall; SIGHUP reloads the snapshot, SIGINT/SIGTERM stop (Linux, needs root).
    Run(RunArgs),
    /// Build a network namespace per ENI of the bundled three-tier VPC, drive real traffic
    /// through the forwarder, print what passed and which rule decided, and clean up (root).
    Demo,
    /// Explain the whole path of one flow and of its reply: every step, every rule considered.
    Explain {
        /// Snapshot directory of `aws ec2 describe-*` JSON files.
        #[arg(long, value_name = "DIR")]
        snapshot: PathBuf,
        /// The flow, e.g. "tcp 10.0.1.10:40000 -> 10.0.2.20:443", "icmp 10.0.1.10 -> 10.0.2.20 type 8",
        /// "udp [2001:db8::1]:5353 -> [2001:db8::2]:53", "47 10.0.1.10 -> 192.0.2.1".
        #[arg(long)]
        flow: String,
        /// Print JSON (schema in the `vpcfw::explain` docs) instead of a table.
        #[arg(long)]
        json: bool,
        /// Also send this payload (text) on the flow after the handshake and explain the
        /// inspection stage's verdict on it.
        #[arg(long, value_name = "TEXT")]
        payload: Option<String>,
        /// Payload byte-match rules (`ByteMatchRules` JSON, see `vpcfw::inspect`); default:
        /// `inspection.json` in the snapshot directory, when there is one.
        #[arg(long, value_name = "FILE")]
        inspection: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Eval {
            snapshot,
            events,
            allowance,
            trace,
            flow_log,
            flow_log_interval,
            quiet,
            inspection,
        } => {
            let opts = EvalOptions {
                allowance,
                trace,
                quiet,
                inspection,
                flow_log,
                flow_log_interval,
            };
            eval(&snapshot, events.as_deref(), &opts)
        }
        Command::Explain {
            snapshot,
            flow,
            json,
            payload,
            inspection,
        } => explain(
            &snapshot,
            &flow,
            json,
            payload.as_deref(),
            inspection.as_deref(),
        ),
        Command::Diff {
            snapshot,
            snapshot_new,
            json,
        } => diff(&snapshot, &snapshot_new, json),
        Command::Lint { snapshot, json } => lint(&snapshot, json),
        Command::Replay(opts) => replay(&opts),
        Command::Run(args) => run(args),
        Command::Demo => demo(),
        Command::Pcap {
            events,
            out,
            pcapng,
            nanos,
            big_endian,
        } => {
            let format = if pcapng {
                Format::PcapNg { big_endian, nanos }
            } else {
                Format::Pcap { big_endian, nanos }
            };
            pcap(events.as_deref(), &out, format)
        }
    }
}

/// Loads and compiles the payload-inspection rules for `policy` (`file`, else the snapshot's
/// `inspection.json` when it has one), printing warnings unless `quiet`.
fn load_inspector(
    dir: &Path,
    file: Option<&Path>,
    policy: &CompiledPolicy,
    quiet: bool,
) -> Result<Option<Arc<Inspector>>, String> {
    match vpcfw::inspect::load_for(dir, file, policy.policy()).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some((insp, warnings)) => {
            if !quiet {
                for w in &warnings {
                    eprintln!("warning: {w}");
                }
            }
            Ok(Some(Arc::new(insp)))
        }
    }
}

/// Loads and compiles a snapshot directory, printing warnings unless `quiet`.
fn load(dir: &Path, quiet: bool) -> Result<CompiledPolicy, String> {
    let snap = aws::load_dir(dir).map_err(|e| e.to_string())?;
    if !quiet {
        for w in &snap.warnings {
            eprintln!("warning: {w}");
        }
    }
    CompiledPolicy::compile(snap.policy).map_err(|e| format!("{}: {e}", dir.display()))
}

fn diff(old: &Path, new: &Path, json: bool) -> ExitCode {
    let load_policy = |dir: &Path| aws::load_dir(dir).map(|s| s.policy);
    let (old, new) = match (load_policy(old), load_policy(new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("vpcfw: cannot load snapshot: {e}");
            return ExitCode::from(2);
        }
    };
    let changes = vpcfw::analysis::diff::diff(&old, &new);
    if json {
        println!("{:#}", serde_json::json!({ "changes": changes }));
    } else if changes.is_empty() {
        println!("no change in what new connections may do");
    } else {
        let mut last = (String::new(), String::new());
        for c in &changes {
            if (c.src.as_str(), c.dst.as_str()) != (last.0.as_str(), last.1.as_str()) {
                println!("{} -> {}", c.src, c.dst);
                last = (c.src.clone(), c.dst.clone());
            }
            println!("  {}  {}", c.change, c.region);
            println!("      e.g. {}", c.example);
            println!("      live connections: {}", c.live_connections);
        }
        println!("{} changed regions", changes.len());
    }
    ExitCode::from(u8::from(!changes.is_empty()))
}

fn lint(snapshot: &Path, json: bool) -> ExitCode {
    use vpcfw::analysis::lint::{self, Severity};
    let snap = match aws::load_dir(snapshot) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vpcfw: cannot load snapshot: {e}");
            return ExitCode::from(2);
        }
    };
    let findings = lint::lint(&snap.policy);
    let count = |sev| findings.iter().filter(|f| f.severity == sev).count();
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    if json {
        let summary = serde_json::json!({"errors": errors, "warnings": warnings, "info": count(Severity::Info)});
        println!(
            "{:#}",
            serde_json::json!({"findings": findings, "summary": summary})
        );
    } else {
        print!("{}", lint::render_text(&findings));
    }
    ExitCode::from(if errors > 0 {
        2
    } else if warnings > 0 {
        1
    } else {
        0
    })
}

fn explain(
    snapshot: &Path,
    flow: &str,
    json: bool,
    payload: Option<&str>,
    inspection: Option<&Path>,
) -> ExitCode {
    let packet = match vpcfw::explain::parse_flow(flow) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vpcfw: --flow: {e}");
            return ExitCode::from(2);
        }
    };
    let policy = match load(snapshot, true) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vpcfw: cannot load snapshot: {e}");
            return ExitCode::from(2);
        }
    };
    let inspector = match load_inspector(snapshot, inspection, &policy, true) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("vpcfw: cannot load inspection rules: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(p) = payload {
        if inspector.is_none() {
            eprintln!(
                "vpcfw: --payload needs inspection rules: give --inspection FILE or put {} in {}",
                vpcfw::inspect::RULES_FILE,
                snapshot.display()
            );
            return ExitCode::from(2);
        }
        if !matches!(packet.proto, 6 | 17) || p.is_empty() {
            eprintln!("vpcfw: --payload: expected a non-empty payload on a tcp or udp flow");
            return ExitCode::from(2);
        }
    }
    let payload = payload.unwrap_or("").as_bytes();
    match vpcfw::explain::explain_with(&policy, inspector, &packet, payload) {
        Ok(x) if json => println!("{x:#}"),
        Ok(x) => print!("{}", vpcfw::explain::render_text(&x)),
        Err(e) => {
            eprintln!("vpcfw: {e}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

struct EvalOptions {
    allowance: Option<u32>,
    trace: bool,
    quiet: bool,
    inspection: Option<PathBuf>,
    flow_log: Option<PathBuf>,
    flow_log_interval: u32,
}

/// Flow-log output of `eval`: the aggregator and its file.
struct FlowLogSink {
    log: FlowLog,
    file: io::BufWriter<std::fs::File>,
    path: PathBuf,
}

impl FlowLogSink {
    /// Creates the flow-log file `path`, or `None` when no flow log was asked for.
    fn create(path: Option<&Path>, interval: u32) -> Result<Option<FlowLogSink>, ExitCode> {
        let Some(path) = path else {
            return Ok(None);
        };
        Ok(Some(FlowLogSink {
            log: FlowLog::new(interval),
            file: create(path, "flow log")?,
            path: path.to_owned(),
        }))
    }

    fn fail(&self, e: io::Error) -> ExitCode {
        eprintln!("vpcfw: writing flow log {}: {e}", self.path.display());
        ExitCode::from(2)
    }
}

fn eval(snapshot: &Path, events_file: Option<&Path>, opts: &EvalOptions) -> ExitCode {
    let (trace, quiet) = (opts.trace, opts.quiet);
    let policy = match load(snapshot, quiet) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vpcfw: cannot load snapshot: {e}");
            return ExitCode::from(2);
        }
    };
    let input = match open_events(events_file) {
        Ok(i) => i,
        Err(code) => return code,
    };
    let mut sink = match FlowLogSink::create(opts.flow_log.as_deref(), opts.flow_log_interval) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let inspector = match load_inspector(snapshot, opts.inspection.as_deref(), &policy, quiet) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("vpcfw: cannot load inspection rules: {e}");
            return ExitCode::from(2);
        }
    };
    let mut fw = Firewall::new(policy, opts.allowance);
    fw.set_inspector(inspector);
    let mut reader = BufReader::with_capacity(1 << 16, input);
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        match next_line(&mut reader, &mut buf) {
            Ok(true) => {}
            Ok(false) => break,
            Err(code) => return code,
        }
        line_no += 1;
        let answer = match std::str::from_utf8(&buf) {
            Err(_) => serde_json::json!({"error": format!("line {line_no}: not valid UTF-8")}),
            Ok(line) => match events::parse_event(line) {
                Err(e) => serde_json::json!({"error": format!("line {line_no}: {e}")}),
                Ok(Event::Reload { dir }) => match load(Path::new(&dir), quiet).and_then(|p| {
                    let dir = Path::new(&dir);
                    let insp = load_inspector(dir, opts.inspection.as_deref(), &p, quiet)?;
                    Ok((p, insp))
                }) {
                    Ok((p, insp)) => {
                        if let Some(s) = &mut sink
                            && let Err(e) = s.log.flush(fw.policy(), &mut s.file)
                        {
                            return s.fail(e);
                        }
                        fw.reload(p);
                        fw.set_inspector(insp);
                        serde_json::json!({"reload": "ok"})
                    }
                    Err(e) => serde_json::json!({"reload": "error", "error": e}),
                },
                Ok(Event::Packet {
                    t,
                    packet,
                    seq,
                    payload,
                }) => match fw.process_with_payload(t, &packet, seq.unwrap_or(0), &payload) {
                    Ok(v) => {
                        if let Some(s) = &mut sink
                            && let Err(e) = s.log.record(fw.policy(), t, &packet, &v, &mut s.file)
                        {
                            return s.fail(e);
                        }
                        events::answer_with(fw.policy(), fw.inspector(), &v, trace)
                    }
                    Err(e) => serde_json::json!({"error": format!("line {line_no}: {e}")}),
                },
            },
        };
        let written = serde_json::to_writer(&mut out, &answer)
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| {
                if reader.buffer().is_empty() {
                    out.flush()
                } else {
                    Ok(())
                }
            });
        if let Err(e) = written {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("vpcfw: writing answers: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(s) = &mut sink
        && let Err(e) = s
            .log
            .flush(fw.policy(), &mut s.file)
            .and_then(|()| s.file.flush())
    {
        return s.fail(e);
    }
    match out.flush() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vpcfw: writing answers: {e}");
            ExitCode::from(2)
        }
    }
}

/// The event lines: the file, or standard input when there is none.
fn open_events(events_file: Option<&Path>) -> Result<Box<dyn Read>, ExitCode> {
    match events_file {
        None => Ok(Box::new(io::stdin().lock())),
        Some(f) => match std::fs::File::open(f) {
            Ok(file) => Ok(Box::new(file)),
            Err(e) => {
                eprintln!("vpcfw: cannot open events file {}: {e}", f.display());
                Err(ExitCode::from(2))
            }
        },
    }
}

/// Reads the next event line into `buf`, without its line ending; `false` at the end.
fn next_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> Result<bool, ExitCode> {
    buf.clear();
    match reader.read_until(b'\n', buf) {
        Ok(0) => return Ok(false),
        Ok(_) => {}
        Err(e) => {
            eprintln!("vpcfw: reading events: {e}");
            return Err(ExitCode::from(2));
        }
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(true)
}

/// Creates an output file (`what` names it in the error).
fn create(path: &Path, what: &str) -> Result<io::BufWriter<std::fs::File>, ExitCode> {
    match std::fs::File::create(path) {
        Ok(f) => Ok(io::BufWriter::with_capacity(1 << 16, f)),
        Err(e) => {
            eprintln!("vpcfw: cannot create {what} {}: {e}", path.display());
            Err(ExitCode::from(2))
        }
    }
}

/// The options of `vpcfw replay`.
#[derive(clap::Args)]
struct ReplayOptions {
    /// Snapshot directory of `aws ec2 describe-*` JSON files.
    #[arg(long, value_name = "DIR")]
    snapshot: PathBuf,
    /// The capture: pcap (either byte order, micro- or nanosecond) or pcapng.
    #[arg(long, value_name = "FILE")]
    pcap: PathBuf,
    /// Write VPC Flow Log records (version 2 default format) to this file.
    #[arg(long, value_name = "FILE")]
    flow_log: Option<PathBuf>,
    /// Flow-log aggregation interval in seconds.
    #[arg(long, value_name = "SECS", default_value_t = vpcfw::flowlog::DEFAULT_INTERVAL_SECS)]
    flow_log_interval: u32,
    /// Write one JSON line per frame: the `vpcfw eval` answer, or {"error": ...} for a
    /// frame that is not judged (not IP, outside the VPC).
    #[arg(long, value_name = "FILE")]
    verdicts: Option<PathBuf>,
    /// Write the accepted frames to this pcap.
    #[arg(long, value_name = "FILE")]
    accepted: Option<PathBuf>,
    /// Write the rejected frames (malformed ones included) to this pcap.
    #[arg(long, value_name = "FILE")]
    rejected: Option<PathBuf>,
    /// Cap on live tracked connections per instance.
    #[arg(long, value_name = "N")]
    allowance: Option<u32>,
    /// Payload byte-match rules (`ByteMatchRules` JSON, see `vpcfw::inspect`); default:
    /// `inspection.json` in the snapshot directory, when there is one.
    #[arg(long, value_name = "FILE")]
    inspection: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Print neither load warnings nor progress.
    #[arg(long, short)]
    quiet: bool,
}

type PcapOut = CaptureWriter<io::BufWriter<std::fs::File>>;

/// The files `replay` writes besides the summary.
struct ReplayOutputs {
    verdicts: Option<io::BufWriter<std::fs::File>>,
    accepted: Option<PcapOut>,
    rejected: Option<PcapOut>,
    flow_log: Option<FlowLogSink>,
}

impl ReplayOutputs {
    fn create(opts: &ReplayOptions, format: Format) -> Result<ReplayOutputs, ExitCode> {
        let capture = |path: &Option<PathBuf>, what: &str| -> Result<Option<PcapOut>, ExitCode> {
            let Some(path) = path else {
                return Ok(None);
            };
            CaptureWriter::new(create(path, what)?, format)
                .map(Some)
                .map_err(|e| {
                    eprintln!("vpcfw: writing {what} {}: {e}", path.display());
                    ExitCode::from(2)
                })
        };
        Ok(ReplayOutputs {
            verdicts: match &opts.verdicts {
                Some(p) => Some(create(p, "verdicts file")?),
                None => None,
            },
            accepted: capture(&opts.accepted, "accepted capture")?,
            rejected: capture(&opts.rejected, "rejected capture")?,
            flow_log: FlowLogSink::create(opts.flow_log.as_deref(), opts.flow_log_interval)?,
        })
    }

    /// Writes what frame number `n` gives to each output.
    fn frame(
        &mut self,
        fw: &Firewall,
        n: u64,
        frame: &vpcfw::capture::Frame<'_>,
        outcome: &replay::FrameOutcome,
    ) -> io::Result<()> {
        if let Some(out) = &mut self.verdicts {
            let line = replay::answer_line(fw.policy(), fw.inspector(), n, outcome);
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
        let Ok((packet, verdict)) = outcome else {
            return Ok(());
        };
        let pcap = match verdict.decision {
            vpcfw::firewall::Decision::Accept => &mut self.accepted,
            vpcfw::firewall::Decision::Reject => &mut self.rejected,
        };
        if let Some(w) = pcap {
            w.write_frame(frame.time, frame.data, frame.orig_len)?;
        }
        if let Some(s) = &mut self.flow_log {
            s.log
                .record(fw.policy(), frame.time, packet, verdict, &mut s.file)?;
        }
        Ok(())
    }

    fn finish(self, policy: &CompiledPolicy) -> io::Result<()> {
        if let Some(mut out) = self.verdicts {
            out.flush()?;
        }
        for w in [self.accepted, self.rejected].into_iter().flatten() {
            w.finish()?;
        }
        if let Some(mut s) = self.flow_log {
            s.log.flush(policy, &mut s.file)?;
            s.file.flush()?;
        }
        Ok(())
    }
}

/// Progress on standard error: frames and megabytes, at most every 2 s.
struct Progress {
    enabled: bool,
    total: Option<u64>,
    last: std::time::Instant,
    shown: bool,
}

impl Progress {
    fn tick(&mut self, frames: u64, offset: u64) {
        if !self.enabled || !frames.is_multiple_of(1024) || self.last.elapsed().as_secs_f64() < 2.0
        {
            return;
        }
        self.last = std::time::Instant::now();
        let mb = |b: u64| b as f64 / 1e6;
        match self.total {
            Some(t) if t > 0 => eprint!(
                "\rvpcfw: {frames} frames, {:.1} of {:.1} MB ({:.0}%)  ",
                mb(offset),
                mb(t),
                offset as f64 * 100.0 / t as f64
            ),
            _ => eprint!("\rvpcfw: {frames} frames, {:.1} MB  ", mb(offset)),
        }
        self.shown = true;
    }

    fn done(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

fn replay(opts: &ReplayOptions) -> ExitCode {
    use std::io::IsTerminal;
    let policy = match load(&opts.snapshot, opts.quiet) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vpcfw: cannot load snapshot: {e}");
            return ExitCode::from(2);
        }
    };
    let file = match std::fs::File::open(&opts.pcap) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("vpcfw: cannot open {}: {e}", opts.pcap.display());
            return ExitCode::from(2);
        }
    };
    let mut progress = Progress {
        enabled: !opts.quiet && io::stderr().is_terminal(),
        total: file.metadata().ok().map(|m| m.len()),
        last: std::time::Instant::now(),
        shown: false,
    };
    let inspector = match load_inspector(
        &opts.snapshot,
        opts.inspection.as_deref(),
        &policy,
        opts.quiet,
    ) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("vpcfw: cannot load inspection rules: {e}");
            return ExitCode::from(2);
        }
    };
    let mut fw = Firewall::new(policy, opts.allowance);
    fw.set_inspector(inspector);
    let mut summary = Summary::default();
    let reader = CaptureReader::new(file);
    // Outputs keep every timestamp: nanoseconds unless the input has only microseconds.
    let nanos = match reader.as_ref().map(|r| r.format()) {
        Ok(Format::Pcap { nanos, .. }) => nanos,
        Ok(Format::PcapNg { .. }) => true,
        Err(_) => false,
    };
    let format = Format::Pcap {
        big_endian: false,
        nanos,
    };
    let mut outputs = match ReplayOutputs::create(opts, format) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let failure = match reader {
        Err(e) => Some(e),
        Ok(mut reader) => loop {
            let frame = match reader.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break None,
                Err(e) => break Some(e),
            };
            let outcome = fw.process_frame(frame.time, frame.data);
            summary.add(frame.time, frame.data.len(), &outcome);
            if let Err(e) = outputs.frame(&fw, summary.frames, &frame, &outcome) {
                eprintln!("vpcfw: writing output: {e}");
                return ExitCode::from(2);
            }
            progress.tick(summary.frames, reader.offset());
        },
    };
    progress.done();
    if let Err(e) = outputs.finish(fw.policy()) {
        eprintln!("vpcfw: writing output: {e}");
        return ExitCode::from(2);
    }
    replay_end(opts, fw.policy(), fw.inspector(), &summary, failure)
}

/// Prints the summary (with the capture error, if any) and gives the exit status.
fn replay_end(
    opts: &ReplayOptions,
    policy: &CompiledPolicy,
    inspector: Option<&Inspector>,
    summary: &Summary,
    failure: Option<CaptureError>,
) -> ExitCode {
    let text = if opts.json {
        let mut j = summary.to_json_with(policy, inspector);
        j["error"] = match &failure {
            Some(e) => serde_json::json!({"offset": e.offset, "message": e.message}),
            None => serde_json::Value::Null,
        };
        format!("{j:#}\n")
    } else {
        summary.render_text_with(policy, inspector)
    };
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            eprintln!("vpcfw: writing the summary: {e}");
            return ExitCode::from(2);
        }
        _ => {}
    }
    match failure {
        None => ExitCode::SUCCESS,
        Some(e) => {
            eprintln!(
                "vpcfw: {}: {e} (the summary covers the {} frames before it)",
                opts.pcap.display(),
                summary.frames
            );
            ExitCode::from(2)
        }
    }
}

fn pcap(events_file: Option<&Path>, out_path: &Path, format: Format) -> ExitCode {
    let input = match open_events(events_file) {
        Ok(i) => i,
        Err(code) => return code,
    };
    let out = match create(out_path, "capture") {
        Ok(o) => o,
        Err(code) => return code,
    };
    let fail = |e: io::Error| {
        eprintln!("vpcfw: writing {}: {e}", out_path.display());
        ExitCode::from(2)
    };
    let mut w = match CaptureWriter::new(out, format) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    let mut reader = BufReader::with_capacity(1 << 16, input);
    let (mut buf, mut line_no, mut skipped) = (Vec::new(), 0u64, 0u64);
    loop {
        match next_line(&mut reader, &mut buf) {
            Ok(true) => {}
            Ok(false) => break,
            Err(code) => return code,
        }
        line_no += 1;
        let parsed = std::str::from_utf8(&buf)
            .map_err(|_| "not valid UTF-8".to_owned())
            .and_then(events::parse_event);
        let frame = match parsed {
            Ok(Event::Packet {
                t,
                packet,
                seq,
                payload,
            }) => replay::packet_frame_with(&packet, seq, &payload).map(|f| (t, f)),
            Ok(Event::Reload { .. }) => Err("a reload has no frame".to_owned()),
            Err(e) => Err(e),
        };
        match frame {
            Ok((t, f)) => {
                if let Err(e) = w.write_frame(t, &f, f.len() as u32) {
                    return fail(e);
                }
            }
            Err(e) => {
                skipped += 1;
                eprintln!("vpcfw: warning: line {line_no} skipped: {e}");
            }
        }
    }
    if let Err(e) = w.finish() {
        return fail(e);
    }
    if skipped > 0 {
        eprintln!(
            "vpcfw: {} of {line_no} lines written as frames, {skipped} skipped",
            line_no - skipped
        );
    }
    ExitCode::SUCCESS
}

/// Options of `vpcfw run`.
#[derive(clap::Args)]
struct RunArgs {
    /// Snapshot directory of `aws ec2 describe-*` JSON files (reloaded on SIGHUP).
    #[arg(long, value_name = "DIR")]
    snapshot: PathBuf,
    /// A TAP device for an ENI, `eni-…=NAME` (repeat); default: every ENI of the snapshot,
    /// named `vf-` and the last 8 characters of its id.
    #[arg(long = "tap", value_name = "ENI=NAME")]
    taps: Vec<String>,
    /// A TAP device for destinations outside the VPC and the exempt service addresses
    /// (an internet gateway stand-in).
    #[arg(long, value_name = "NAME")]
    internet: Option<String>,
    /// Cap on live tracked connections per instance.
    #[arg(long, value_name = "N")]
    allowance: Option<u32>,
    /// Write VPC Flow Log records (version 2 default format) to this file.
    #[arg(long, value_name = "FILE")]
    flow_log: Option<PathBuf>,
    /// Flow-log aggregation interval in seconds.
    #[arg(long, value_name = "SECS", default_value_t = vpcfw::flowlog::DEFAULT_INTERVAL_SECS)]
    flow_log_interval: u32,
    /// Serve Prometheus text metrics on this loopback address, e.g. 127.0.0.1:9101.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// Write one JSON line per judged packet (the verdict and its whole path) to this file.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Bypass the firewall: deliver by destination address alone (for measuring the I/O path).
    #[arg(long)]
    null: bool,
    /// Open the TAP devices without the virtio-net header (no offloads; 1500-byte frames).
    #[arg(long)]
    no_vnet_hdr: bool,
    /// Payload byte-match rules (`ByteMatchRules` JSON, see `vpcfw::inspect`), reloaded with
    /// the snapshot on SIGHUP; default: `inspection.json` in the snapshot directory, when
    /// there is one.
    #[arg(long, value_name = "FILE")]
    inspection: Option<PathBuf>,
    /// Worker threads; above 1 every TAP device gets one queue per worker (multi-queue), and
    /// the kernel spreads flows over the queues by a symmetric flow hash.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,
}

#[cfg(target_os = "linux")]
fn run(args: RunArgs) -> ExitCode {
    use vpcfw::forward::Attach;
    use vpcfw::forward::run::{Forwarder, RunConfig, describe_inspection, load_policy};
    let fail = |e: String| {
        eprintln!("vpcfw run: {e}");
        ExitCode::from(2)
    };
    let policy = match load_policy(&args.snapshot) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let mut ports = Vec::new();
    if args.taps.is_empty() {
        for e in &policy.policy().enis {
            let tail = &e.id[e.id.len().saturating_sub(8)..];
            ports.push((format!("vf-{tail}"), Attach::Eni(e.id.clone())));
        }
    }
    for t in &args.taps {
        match t.split_once('=') {
            Some((eni, name)) if !eni.is_empty() && !name.is_empty() => {
                ports.push((name.to_string(), Attach::Eni(eni.to_string())));
            }
            _ => return fail(format!("--tap {t}: expected ENI=NAME, e.g. eni-0abc=tap0")),
        }
    }
    if let Some(name) = &args.internet {
        ports.push((name.clone(), Attach::Internet));
    }
    let mut cfg = RunConfig::new(ports);
    cfg.snapshot = Some(args.snapshot.clone());
    cfg.allowance = args.allowance;
    cfg.flow_log = args.flow_log;
    cfg.flow_log_interval = args.flow_log_interval;
    cfg.metrics = args.metrics;
    cfg.trace = args.trace;
    cfg.null = args.null;
    cfg.inspection = args.inspection;
    cfg.workers = usize::from(args.workers);
    if args.no_vnet_hdr {
        cfg.tap.vnet_hdr = false;
        cfg.tap.offload = false;
    }
    // Block the signals before any thread starts, so only the loop receives them.
    let signals = match vpcfw::tap::SignalFd::new() {
        Ok(s) => s,
        Err(e) => return fail(format!("signalfd: {e}")),
    };
    let mut fwd = match Forwarder::open(&cfg, policy) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    for (tap, (_, attach)) in fwd.taps().iter().zip(&cfg.ports) {
        let what = match attach {
            Attach::Eni(id) => id.as_str(),
            Attach::Internet => "internet",
        };
        eprintln!(
            "vpcfw: {} -> {what} (vnet_hdr {}, offloads {:#x}, queues {})",
            tap.name(),
            tap.vnet_hdr(),
            tap.offloads(),
            fwd.workers()
        );
    }
    if !args.null {
        eprintln!("vpcfw: {}", describe_inspection(fwd.firewall().inspector()));
    }
    eprintln!(
        "vpcfw: forwarding; SIGHUP reloads {} (and its inspection rules), SIGINT/SIGTERM stop",
        args.snapshot.display()
    );
    match fwd.run(Some(&signals)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("{e}")),
    }
}

#[cfg(not(target_os = "linux"))]
fn run(_args: RunArgs) -> ExitCode {
    eprintln!("vpcfw run: TAP devices need Linux");
    ExitCode::from(2)
}

#[cfg(target_os = "linux")]
fn demo() -> ExitCode {
    vpcfw::forward::demo::main()
}

#[cfg(not(target_os = "linux"))]
fn demo() -> ExitCode {
    eprintln!("vpcfw demo: network namespaces and TAP devices need Linux");
    ExitCode::from(2)
}
