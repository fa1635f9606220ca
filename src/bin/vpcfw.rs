//! `vpcfw`: AWS VPC Network ACLs and Security Groups, offline and exact.

use clap::{Parser, Subcommand};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vpcfw::aws;
use vpcfw::compile::CompiledPolicy;
use vpcfw::events::{self, Event};
use vpcfw::firewall::Firewall;
use vpcfw::flowlog::FlowLog;

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
        } => {
            let opts = EvalOptions {
                allowance,
                trace,
                quiet,
                flow_log,
                flow_log_interval,
            };
            eval(&snapshot, events.as_deref(), &opts)
        }
        Command::Explain {
            snapshot,
            flow,
            json,
        } => explain(&snapshot, &flow, json),
        Command::Diff {
            snapshot,
            snapshot_new,
            json,
        } => diff(&snapshot, &snapshot_new, json),
        Command::Lint { snapshot, json } => lint(&snapshot, json),
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

fn explain(snapshot: &Path, flow: &str, json: bool) -> ExitCode {
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
    match vpcfw::explain::explain(&policy, &packet) {
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
    let input: Box<dyn Read> = match events_file {
        None => Box::new(io::stdin().lock()),
        Some(f) => match std::fs::File::open(f) {
            Ok(file) => Box::new(file),
            Err(e) => {
                eprintln!("vpcfw: cannot open events file {}: {e}", f.display());
                return ExitCode::from(2);
            }
        },
    };
    let mut sink = match &opts.flow_log {
        None => None,
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Some(FlowLogSink {
                log: FlowLog::new(opts.flow_log_interval),
                file: io::BufWriter::new(f),
                path: path.clone(),
            }),
            Err(e) => {
                eprintln!("vpcfw: cannot create flow log {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let mut fw = Firewall::new(policy, opts.allowance);
    let mut reader = BufReader::with_capacity(1 << 16, input);
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("vpcfw: reading events: {e}");
                return ExitCode::from(2);
            }
        }
        line_no += 1;
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let answer = match std::str::from_utf8(&buf) {
            Err(_) => serde_json::json!({"error": format!("line {line_no}: not valid UTF-8")}),
            Ok(line) => match events::parse_event(line) {
                Err(e) => serde_json::json!({"error": format!("line {line_no}: {e}")}),
                Ok(Event::Reload { dir }) => match load(Path::new(&dir), quiet) {
                    Ok(p) => {
                        if let Some(s) = &mut sink
                            && let Err(e) = s.log.flush(fw.policy(), &mut s.file)
                        {
                            return s.fail(e);
                        }
                        fw.reload(p);
                        serde_json::json!({"reload": "ok"})
                    }
                    Err(e) => serde_json::json!({"reload": "error", "error": e}),
                },
                Ok(Event::Packet { t, packet }) => match fw.process(t, &packet) {
                    Ok(v) => {
                        if let Some(s) = &mut sink
                            && let Err(e) = s.log.record(fw.policy(), t, &packet, &v, &mut s.file)
                        {
                            return s.fail(e);
                        }
                        events::answer(fw.policy(), &v, trace)
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
