//! A small network lab for the demo, the end-to-end tests and the throughput benchmark:
//! network namespaces named with a unique prefix, TAP devices moved into them and configured
//! as an instance's interface, sockets opened inside a namespace from a thread of this
//! process, and a cleanup that removes everything it created (also when dropped).
//!
//! Namespaces and links are managed with iproute2's `ip` command; nothing here touches a
//! namespace or device the lab did not create.

use crate::tap;
use crate::wire::MacAddr;
use std::io;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How long one `ip` command may take before it is killed (a hard bound for tests and CI).
pub const IP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs `ip ARGS…` (killed after [`IP_TIMEOUT`]); the error carries the command and its
/// standard error.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let cmd = || format!("ip {}", args.join(" "));
    let mut child = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e} (is iproute2 installed?)", cmd()))?;
    let deadline = std::time::Instant::now() + IP_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{}: no answer after {IP_TIMEOUT:?}", cmd()));
            }
            Err(e) => return Err(format!("{}: {e}", cmd())),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    Err(format!("{}: {}", cmd(), err.trim()))
}

/// Why the lab cannot run here, if it cannot: not root, no `/dev/net/tun`, no `ip netns`.
pub fn unavailable() -> Option<String> {
    if !tap::is_root() {
        return Some("needs root (network namespaces and TAP devices)".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    match Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => None,
        _ => Some("`ip netns` is not available (iproute2)".into()),
    }
}

/// The namespaces a lab created, shared with a signal handler thread for cleanup.
#[derive(Clone, Debug, Default)]
pub struct Created(Arc<Mutex<Vec<String>>>);

impl Created {
    /// Kills the processes left in each namespace and deletes it. Idempotent.
    pub fn cleanup(&self) {
        let names: Vec<String> = match self.0.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for ns in names.iter().rev() {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A set of namespaces with a common unique prefix.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    created: Created,
}

/// How to configure a TAP device as an instance's interface inside a namespace.
#[derive(Clone, Debug, Default)]
pub struct Iface {
    /// The interface's MAC address (what the router delivers to).
    pub mac: Option<MacAddr>,
    /// Addresses with prefix length, e.g. `10.0.1.10/24`.
    pub addrs: Vec<String>,
    /// Routes, each as `ip route` arguments, e.g. `["default", "via", "10.0.1.1"]`.
    pub routes: Vec<Vec<String>>,
}

impl Lab {
    /// A lab whose namespaces are named `PREFIX-NAME` (keep the prefix unique, e.g. with the
    /// process id).
    pub fn new(prefix: &str) -> Lab {
        Lab {
            prefix: prefix.to_string(),
            created: Created::default(),
        }
    }

    /// The handle a signal handler uses to clean up.
    pub fn created(&self) -> Created {
        self.created.clone()
    }

    /// The full name of namespace `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Creates namespace `name` with its loopback up; returns its full name.
    pub fn add(&self, name: &str) -> Result<String, String> {
        let ns = self.ns(name);
        ip(&["netns", "add", &ns])?;
        if let Ok(mut g) = self.created.0.lock() {
            g.push(ns.clone());
        }
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        // No duplicate address detection: addresses are usable at once.
        let _ = ip(&[
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.accept_dad=0",
        ]);
        Ok(ns)
    }

    /// Moves TAP device `dev` into namespace `ns` and configures it.
    pub fn attach(&self, dev: &str, ns: &str, iface: &Iface) -> Result<(), String> {
        ip(&["link", "set", dev, "netns", ns])?;
        if let Some(mac) = iface.mac {
            ip(&["-n", ns, "link", "set", dev, "address", &mac.to_string()])?;
        }
        ip(&["-n", ns, "link", "set", dev, "up"])?;
        for a in &iface.addrs {
            if a.contains(':') {
                ip(&["-n", ns, "addr", "add", a, "dev", dev, "nodad"])?;
            } else {
                ip(&["-n", ns, "addr", "add", a, "dev", dev])?;
            }
        }
        for r in &iface.routes {
            let mut args = vec!["-n", ns];
            if r.iter().any(|x| x.contains(':')) {
                args.push("-6");
            }
            args.extend(["route", "add"]);
            args.extend(r.iter().map(String::as_str));
            args.extend(["dev", dev]);
            ip(&args)?;
        }
        Ok(())
    }

    /// Runs `f` in a new thread that has entered namespace `ns` (its sockets live there).
    pub fn spawn_in<T: Send + 'static>(
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<JoinHandle<io::Result<T>>> {
        let ns = ns.to_string();
        std::thread::Builder::new()
            .name(format!("in-{ns}"))
            .spawn(move || {
                tap::enter_netns(&ns)?;
                Ok(f())
            })
    }

    /// Runs `f` in namespace `ns` and waits for it.
    pub fn run_in<T: Send + 'static>(
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        Self::spawn_in(ns, f)?
            .join()
            .map_err(|_| io::Error::other("thread panicked"))?
    }

    /// Removes every namespace (and the processes in them).
    pub fn cleanup(&self) {
        self.created.cleanup();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// What a client saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The exchange completed (connected, and the echo came back).
    Passed,
    /// Nothing came back in time (dropped somewhere).
    TimedOut,
    /// Anything else (refused, unreachable, …), with the error.
    Failed(String),
}

impl Observed {
    /// `"pass"`, `"blocked"` (timed out) or `"error: …"`.
    pub fn label(&self) -> String {
        match self {
            Observed::Passed => "pass".into(),
            Observed::TimedOut => "blocked".into(),
            Observed::Failed(e) => format!("error: {e}"),
        }
    }
}

fn observed(r: io::Result<()>) -> Observed {
    match r {
        Ok(()) => Observed::Passed,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Observed::TimedOut
        }
        Err(e) => Observed::Failed(e.to_string()),
    }
}

/// In namespace `ns`: connects from `src` (port 0: any) to `dst`, sends a line and waits for
/// its echo, all within `timeout`.
pub fn tcp_exchange(
    ns: &str,
    src: std::net::SocketAddr,
    dst: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> Observed {
    let r = Lab::run_in(ns, move || -> io::Result<()> {
        use std::io::{Read, Write};
        let mut s = tap::tcp_connect_from(src, dst, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"hello vpcfw\n")?;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf)?;
        if &buf != b"hello vpcfw\n" {
            return Err(io::Error::other("wrong echo"));
        }
        Ok(())
    });
    observed(r.and_then(|x| x))
}

/// In namespace `ns`: sends a datagram from `src` to `dst` and waits for its echo.
pub fn udp_exchange(
    ns: &str,
    src: std::net::SocketAddr,
    dst: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> Observed {
    let r = Lab::run_in(ns, move || -> io::Result<()> {
        let s = std::net::UdpSocket::bind(src)?;
        s.set_read_timeout(Some(timeout))?;
        s.send_to(b"hello vpcfw", dst)?;
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf)?;
        if from != dst || &buf[..n] != b"hello vpcfw" {
            return Err(io::Error::other("wrong echo"));
        }
        Ok(())
    });
    observed(r.and_then(|x| x))
}

/// In namespace `ns`: one ICMP echo request to `dst`, waiting for the reply.
pub fn ping(ns: &str, dst: std::net::Ipv4Addr, timeout: std::time::Duration) -> Observed {
    let ident = (std::process::id() & 0xffff) as u16;
    match Lab::run_in(ns, move || tap::ping_v4(dst, ident, 1, timeout)) {
        Ok(Ok(true)) => Observed::Passed,
        Ok(Ok(false)) => Observed::TimedOut,
        Ok(Err(e)) | Err(e) => Observed::Failed(e.to_string()),
    }
}

/// In namespace `ns`: connects from `src` (port 0: any) to `dst` and sends one HTTP/1.1 `GET`
/// request per target on the same connection, in turn, each waiting up to `timeout` for a
/// `200` response ([`Server::http`]'s). A request without an answer does not end the
/// connection: the next one is still sent on it (to show that a blocked flow stays blocked).
/// Returns one outcome per target; when the connection cannot be made, every target gets
/// the connection's outcome.
pub fn http_requests(
    ns: &str,
    src: std::net::SocketAddr,
    dst: std::net::SocketAddr,
    targets: &[&str],
    timeout: std::time::Duration,
) -> Vec<Observed> {
    let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
    let n = targets.len();
    let r = Lab::run_in(ns, move || -> io::Result<Vec<Observed>> {
        let mut s = tap::tcp_connect_from(src, dst, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        let mut got = Vec::with_capacity(targets.len());
        for t in &targets {
            got.push(observed(http_get_on(&mut s, dst, t, timeout)));
        }
        Ok(got)
    });
    match r.and_then(|x| x) {
        Ok(v) => v,
        Err(e) => vec![observed(Err(e)); n],
    }
}

/// One `GET target` on an open connection and its `200` response, within `timeout`.
fn http_get_on(
    s: &mut std::net::TcpStream,
    host: std::net::SocketAddr,
    target: &str,
    timeout: std::time::Duration,
) -> io::Result<()> {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + timeout;
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: vpcfw-lab\r\nAccept: */*\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            if !head.starts_with("HTTP/1.1 200 ") {
                return Err(io::Error::other(format!(
                    "unexpected response: {}",
                    head.lines().next().unwrap_or("")
                )));
            }
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(());
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut chunk)? {
            0 => return Err(io::Error::other("connection closed")),
            k => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Request methods [`Server::http`] answers as HTTP.
const HTTP_METHODS: [&[u8]; 4] = [b"GET ", b"HEAD ", b"POST ", b"PUT "];

/// What [`Server::http`] does with the bytes received so far on a connection: the reply to
/// send and how many bytes it used (`None`: wait for more).
fn http_or_echo(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let http = HTTP_METHODS.iter().any(|m| buf.starts_with(m));
    let maybe = HTTP_METHODS
        .iter()
        .any(|m| m.len() > buf.len() && m.starts_with(buf));
    if !http {
        // Not (yet) an HTTP request: echo it, unless it may still become one.
        return (!maybe && !buf.is_empty()).then(|| (buf.to_vec(), buf.len()));
    }
    let end = find(buf, b"\r\n\r\n")? + 4;
    let line = String::from_utf8_lossy(&buf[..end]);
    let line = line.lines().next().unwrap_or("");
    let body = format!("vpcfw lab app server: {line}\n");
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    Some((reply.into_bytes(), end))
}

/// An echo server (TCP or UDP) running in a namespace until dropped.
pub struct Server {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    /// A TCP echo server on `addr` in namespace `ns`: each connection gets back what it sends
    /// until it closes. Returns once the socket is listening.
    pub fn tcp(ns: &str, addr: std::net::SocketAddr) -> io::Result<Server> {
        Self::tcp_with(ns, addr, |mut c, stop| {
            use std::io::{Read, Write};
            let mut buf = vec![0u8; 65536];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if c.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) if timed_out(&e) => {}
                    Err(_) => return,
                }
            }
        })
    }

    /// A minimal HTTP/1.1 server on `addr` in namespace `ns` (the demo's app server): every
    /// request on a connection (kept alive; requests without a body) gets `200 OK` with a
    /// one-line text body quoting its request line. Bytes that do not begin an HTTP request
    /// (`GET `, `HEAD `, `POST `, `PUT `) are echoed back, so [`tcp_exchange`] works on the same
    /// port. Returns once the socket is listening.
    pub fn http(ns: &str, addr: std::net::SocketAddr) -> io::Result<Server> {
        Self::tcp_with(ns, addr, |mut c, stop| {
            use std::io::{Read, Write};
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 65536];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if timed_out(&e) => continue,
                    Err(_) => return,
                }
                while let Some((reply, used)) = http_or_echo(&buf) {
                    if c.write_all(&reply).is_err() {
                        return;
                    }
                    buf.drain(..used);
                }
            }
        })
    }

    /// A TCP server on `addr` in namespace `ns` that runs `conn` on a thread per connection.
    /// Connections use blocking writes (a bulk echo must not be cut by a full send buffer) and
    /// a 100 ms read timeout, so `conn` notices the stop flag.
    fn tcp_with(
        ns: &str,
        addr: std::net::SocketAddr,
        conn: fn(std::net::TcpStream, Arc<std::sync::atomic::AtomicBool>),
    ) -> io::Result<Server> {
        Self::start(ns, move |stop| {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(move || -> io::Result<()> {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok((c, _)) = l.accept() else {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        continue;
                    };
                    c.set_nonblocking(false)?;
                    c.set_read_timeout(Some(std::time::Duration::from_millis(100)))?;
                    let stop = stop.clone();
                    std::thread::spawn(move || conn(c, stop));
                }
                Ok(())
            })
        })
    }

    /// A UDP echo server on `addr` in namespace `ns`.
    pub fn udp(ns: &str, addr: std::net::SocketAddr) -> io::Result<Server> {
        Self::start(ns, move |stop| {
            let s = std::net::UdpSocket::bind(addr)?;
            s.set_read_timeout(Some(std::time::Duration::from_millis(20)))?;
            Ok(move || -> io::Result<()> {
                let mut buf = [0u8; 2048];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok((n, from)) = s.recv_from(&mut buf) {
                        let _ = s.send_to(&buf[..n], from);
                    }
                }
                Ok(())
            })
        })
    }

    fn start<F, L>(ns: &str, setup: F) -> io::Result<Server>
    where
        F: FnOnce(Arc<std::sync::atomic::AtomicBool>) -> io::Result<L> + Send + 'static,
        L: FnOnce() -> io::Result<()>,
    {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let s = stop.clone();
        let ns2 = ns.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("srv-{ns}"))
            .spawn(move || -> io::Result<()> {
                let ready = tap::enter_netns(&ns2).and_then(|()| setup(s));
                match ready {
                    Ok(serve) => {
                        let _ = tx.send(Ok(()));
                        serve()
                    }
                    Err(e) => {
                        let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        Err(e)
                    }
                }
            })?;
        rx.recv()
            .map_err(|_| io::Error::other("server thread died"))??;
        Ok(Server {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A read that ended by the socket's timeout (not an error of the connection).
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::http_or_echo;

    #[test]
    fn http_requests_are_answered_and_anything_else_echoed() {
        let first: &[u8] = b"GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n";
        let req = [first, b"GET /d HTTP/1.1\r\n"].concat();
        let req = req.as_slice();
        let (reply, used) = http_or_echo(req).unwrap();
        let reply = String::from_utf8(reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("GET /a?b=c HTTP/1.1\n"), "{reply}");
        let body = reply.split("\r\n\r\n").nth(1).unwrap();
        assert!(reply.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert_eq!(used, first.len());
        // The second request is incomplete: wait.
        assert_eq!(http_or_echo(&req[used..]), None);
        // A prefix of a method: wait; anything else: echoed whole.
        assert_eq!(http_or_echo(b"GE"), None);
        assert_eq!(http_or_echo(b""), None);
        assert_eq!(
            http_or_echo(b"hello vpcfw\n"),
            Some((b"hello vpcfw\n".to_vec(), 12))
        );
        assert_eq!(http_or_echo(b"GEX"), Some((b"GEX".to_vec(), 3)));
    }
}
