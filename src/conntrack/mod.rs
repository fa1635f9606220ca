//! Connection tracking (SPEC §4): flow keys, the TCP/UDP/ICMP state machines and idle
//! timeouts. This module holds flow state only and knows nothing of policy: whether a packet
//! may create an entry is decided by the caller, which then uses [`Entry::new`] and
//! [`Entry::advance`].
//!
//! Time is always a parameter ([`Time`]); nothing here reads a clock.

pub mod table;

use std::fmt;
use std::net::IpAddr;

/// A point on the caller's monotonic clock, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// `secs` seconds after the clock's origin; `None` for negative, NaN or absurdly large
    /// values (beyond ~584 years).
    pub fn from_secs_f64(secs: f64) -> Option<Time> {
        if secs.is_nan() || !(0.0..=1.8e10).contains(&secs) {
            return None;
        }
        Some(Time((secs * 1e9).round() as u64))
    }
    /// Whole seconds.
    pub const fn from_secs(secs: u64) -> Time {
        Time(secs.saturating_mul(1_000_000_000))
    }
    /// Seconds since the origin.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
    /// `self + secs` seconds, saturating.
    #[inline]
    pub fn plus_secs(self, secs: u32) -> Time {
        Time(self.0.saturating_add(u64::from(secs) * 1_000_000_000))
    }
}

/// Which way a packet crosses an ENI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Leaving the ENI (security-group egress rules).
    Egress = 0,
    /// Arriving at the ENI (security-group ingress rules).
    Ingress = 1,
}

impl Direction {
    /// The other direction.
    #[inline]
    pub fn reverse(self) -> Direction {
        match self {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        }
    }
    /// `"egress"` or `"ingress"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TCP header flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;

    /// Whether every flag in `mask` is set.
    #[inline]
    pub fn has(self, mask: u8) -> bool {
        self.0 & mask == mask
    }
    /// A SYN without ACK (a connection request).
    #[inline]
    pub fn is_syn_only(self) -> bool {
        self.has(Self::SYN) && !self.has(Self::ACK)
    }
    /// Parses flag letters (`S` SYN, `A` ACK, `F` FIN, `R` RST, `P` PSH, `U` URG, `E` ECE,
    /// `C` CWR; case-insensitive). `None` for any other character.
    pub fn parse(letters: &str) -> Option<TcpFlags> {
        let mut bits = 0;
        for c in letters.chars() {
            bits |= match c.to_ascii_uppercase() {
                'F' => Self::FIN,
                'S' => Self::SYN,
                'R' => Self::RST,
                'P' => Self::PSH,
                'A' => Self::ACK,
                'U' => Self::URG,
                'E' => Self::ECE,
                'C' => Self::CWR,
                _ => return None,
            };
        }
        Some(TcpFlags(bits))
    }
}

/// Idle timeouts of one ENI, in seconds, with AWS defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// ESTABLISHED (`TcpEstablishedTimeout`, default 432000).
    pub tcp_established: u32,
    /// UDP before it is a stream (`UdpTimeout`, default 30).
    pub udp: u32,
    /// UDP stream (`UdpStreamTimeout`, default 180).
    pub udp_stream: u32,
}

impl Timeouts {
    /// TCP SYN_SENT.
    pub const SYN_SENT: u32 = 120;
    /// TCP SYN_RECV.
    pub const SYN_RECV: u32 = 60;
    /// TCP FIN_WAIT.
    pub const FIN_WAIT: u32 = 120;
    /// TCP TIME_WAIT.
    pub const TIME_WAIT: u32 = 120;
    /// TCP CLOSE (after RST).
    pub const CLOSE: u32 = 10;
    /// ICMP query entries.
    pub const ICMP: u32 = 30;
    /// Any other protocol.
    pub const OTHER: u32 = 600;
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: 432_000,
            udp: 30,
            udp_stream: 180,
        }
    }
}

/// TCP connection states (SPEC §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// A SYN was seen.
    SynSent,
    /// The SYN+ACK answer was seen.
    SynRecv,
    /// The handshake completed, or the flow was picked up mid-stream.
    Established,
    /// One side sent a FIN (the side is kept).
    FinWait {
        /// The side that sent the first FIN.
        first_fin: Direction,
    },
    /// Both sides sent a FIN.
    TimeWait,
    /// An RST was seen.
    Close,
}

/// Protocol state of a tracked flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowState {
    /// TCP.
    Tcp(TcpState),
    /// UDP: completed request/response transactions and the direction of the last packet.
    Udp {
        /// Completed transactions, saturating at 2 (then the flow is a stream for good).
        transactions: u8,
        /// Direction of the previous packet.
        last: Direction,
    },
    /// An ICMP echo or timestamp query.
    IcmpQuery,
    /// Any other protocol (keyed by protocol and addresses only).
    Other,
}

impl FlowState {
    /// The idle timeout of this state, seconds.
    pub fn timeout(&self, t: &Timeouts) -> u32 {
        match *self {
            FlowState::Tcp(TcpState::SynSent) => Timeouts::SYN_SENT,
            FlowState::Tcp(TcpState::SynRecv) => Timeouts::SYN_RECV,
            FlowState::Tcp(TcpState::Established) => t.tcp_established,
            FlowState::Tcp(TcpState::FinWait { .. }) => Timeouts::FIN_WAIT,
            FlowState::Tcp(TcpState::TimeWait) => Timeouts::TIME_WAIT,
            FlowState::Tcp(TcpState::Close) => Timeouts::CLOSE,
            FlowState::Udp { transactions, .. } if transactions >= 2 => t.udp_stream,
            FlowState::Udp { .. } => t.udp,
            FlowState::IcmpQuery => Timeouts::ICMP,
            FlowState::Other => Timeouts::OTHER,
        }
    }

    /// A short name (`SYN_SENT`, `ESTABLISHED`, `UDP`, `UDP_STREAM`, `ICMP`, `OTHER`, …).
    pub fn name(&self) -> &'static str {
        match *self {
            FlowState::Tcp(TcpState::SynSent) => "SYN_SENT",
            FlowState::Tcp(TcpState::SynRecv) => "SYN_RECV",
            FlowState::Tcp(TcpState::Established) => "ESTABLISHED",
            FlowState::Tcp(TcpState::FinWait { .. }) => "FIN_WAIT",
            FlowState::Tcp(TcpState::TimeWait) => "TIME_WAIT",
            FlowState::Tcp(TcpState::Close) => "CLOSE",
            FlowState::Udp { transactions, .. } if transactions >= 2 => "UDP_STREAM",
            FlowState::Udp { .. } => "UDP",
            FlowState::IcmpQuery => "ICMP",
            FlowState::Other => "OTHER",
        }
    }
}

/// The role of an ICMP query message in its exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueryRole {
    /// Echo request, timestamp request, ICMPv6 echo request: may create an entry.
    Request,
    /// The matching reply: only ever belongs to an existing entry.
    Reply,
}

/// The connection-tracking identity of a packet at one ENI.
///
/// Addresses are seen from the ENI: `local` is the ENI's side, so a request and its reply
/// have the same key. ICMP queries also carry which side asked (`request_in`), since an echo
/// request from either side starts its own exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The ENI's connection-tracking zone.
    pub zone: u32,
    /// IP protocol.
    pub proto: u8,
    /// ICMP query kind (the request type: 8, 13 or 128); 0 otherwise.
    pub query: u8,
    /// ICMP queries: whether the request arrived at the ENI (`true`) or left it.
    pub request_in: bool,
    /// The ENI's address.
    pub local: IpAddr,
    /// The peer's address.
    pub remote: IpAddr,
    /// TCP/UDP: the ENI's port; ICMP: the query identifier; other protocols: 0.
    pub local_port: u16,
    /// TCP/UDP: the peer's port; otherwise 0.
    pub remote_port: u16,
}

/// What connection tracking makes of a packet at an ENI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracking {
    /// TCP or UDP: the 5-tuple; any packet of either direction belongs to the entry.
    Stream(FlowKey),
    /// An ICMP query message.
    Query(FlowKey, QueryRole),
    /// Any other protocol: (protocol, addresses); either direction belongs.
    Pair(FlowKey),
    /// ICMP errors and other ICMP types: never tracked, always judged by rules.
    Untrackable,
}

impl Tracking {
    /// Classifies a packet crossing the ENI `zone` in direction `dir`.
    ///
    /// `ports` are (source, destination) for TCP/UDP; `icmp` is (type, identifier) for ICMP
    /// (protocol 1) and ICMPv6 (58).
    pub fn of(
        zone: u32,
        dir: Direction,
        proto: u8,
        src: IpAddr,
        dst: IpAddr,
        ports: (u16, u16),
        icmp: (u8, u16),
    ) -> Tracking {
        let (local, remote) = match dir {
            Direction::Egress => (src, dst),
            Direction::Ingress => (dst, src),
        };
        let mut key = FlowKey {
            zone,
            proto,
            query: 0,
            request_in: false,
            local,
            remote,
            local_port: 0,
            remote_port: 0,
        };
        match proto {
            6 | 17 => {
                let (lp, rp) = match dir {
                    Direction::Egress => (ports.0, ports.1),
                    Direction::Ingress => (ports.1, ports.0),
                };
                key.local_port = lp;
                key.remote_port = rp;
                Tracking::Stream(key)
            }
            1 | 58 => {
                let (kind, role) = match (proto, icmp.0) {
                    (1, 8) => (8, QueryRole::Request),
                    (1, 0) => (8, QueryRole::Reply),
                    (1, 13) => (13, QueryRole::Request),
                    (1, 14) => (13, QueryRole::Reply),
                    (58, 128) => (128, QueryRole::Request),
                    (58, 129) => (128, QueryRole::Reply),
                    _ => return Tracking::Untrackable,
                };
                key.query = kind;
                key.local_port = icmp.1;
                // A request arriving, or a reply leaving, belongs to an exchange asked from outside.
                key.request_in = (role == QueryRole::Request) == (dir == Direction::Ingress);
                Tracking::Query(key, role)
            }
            _ => Tracking::Pair(key),
        }
    }

    /// The key, if the packet is trackable.
    pub fn key(&self) -> Option<&FlowKey> {
        match self {
            Tracking::Stream(k) | Tracking::Query(k, _) | Tracking::Pair(k) => Some(k),
            Tracking::Untrackable => None,
        }
    }
}

/// One tracked flow at one ENI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Protocol state.
    pub state: FlowState,
    /// Direction of the packet that created the entry.
    pub origin: Direction,
    /// When the last packet of the flow was accepted.
    pub last_seen: Time,
}

impl Entry {
    /// The entry a packet creates when no live entry exists and the rules allow it; `None`
    /// when the packet creates nothing (a TCP RST, an ICMP reply or error).
    ///
    /// A TCP packet other than a SYN is picked up mid-stream: the entry starts ESTABLISHED
    /// and then takes the packet's own transition (a FIN leaves it in FIN_WAIT).
    pub fn new(tracking: &Tracking, dir: Direction, flags: TcpFlags, now: Time) -> Option<Entry> {
        let state = match tracking {
            Tracking::Stream(k) if k.proto == 6 => {
                if flags.has(TcpFlags::RST) {
                    return None;
                }
                if flags.is_syn_only() {
                    FlowState::Tcp(TcpState::SynSent)
                } else {
                    FlowState::Tcp(TcpState::Established)
                }
            }
            Tracking::Stream(_) => FlowState::Udp {
                transactions: 0,
                last: dir,
            },
            Tracking::Query(_, QueryRole::Request) => FlowState::IcmpQuery,
            Tracking::Query(_, QueryRole::Reply) | Tracking::Untrackable => return None,
            Tracking::Pair(_) => FlowState::Other,
        };
        let mut e = Entry {
            state,
            origin: dir,
            last_seen: now,
        };
        if let FlowState::Tcp(TcpState::Established) = e.state {
            e.state = FlowState::Tcp(tcp_transition(TcpState::Established, dir, dir, flags));
        }
        Some(e)
    }

    /// Whether the entry is alive at `now` under the ENI's current timeouts
    /// (`now < last_seen + timeout`).
    #[inline]
    pub fn is_alive(&self, now: Time, timeouts: &Timeouts) -> bool {
        now < self.last_seen.plus_secs(self.state.timeout(timeouts))
    }

    /// Whether a packet with this tracking role, crossing in `dir`, belongs to the entry.
    #[inline]
    pub fn admits(&self, tracking: &Tracking, dir: Direction) -> bool {
        match tracking {
            Tracking::Stream(_) | Tracking::Pair(_) => true,
            Tracking::Query(_, QueryRole::Request) => dir == self.origin,
            Tracking::Query(_, QueryRole::Reply) => dir != self.origin,
            Tracking::Untrackable => false,
        }
    }

    /// Whether this packet (a SYN without ACK in TIME_WAIT or CLOSE) ends the entry, so that
    /// it is judged as a new flow.
    #[inline]
    pub fn restarted_by(&self, flags: TcpFlags) -> bool {
        matches!(
            self.state,
            FlowState::Tcp(TcpState::TimeWait | TcpState::Close)
        ) && flags.is_syn_only()
    }

    /// Applies an accepted packet of the flow: the state transition, then `last_seen = now`.
    pub fn advance(&mut self, dir: Direction, flags: TcpFlags, now: Time) {
        self.state = match self.state {
            FlowState::Tcp(s) => FlowState::Tcp(tcp_transition(s, self.origin, dir, flags)),
            FlowState::Udp { transactions, last } => {
                let completed = last == self.origin && dir != self.origin;
                FlowState::Udp {
                    transactions: if completed {
                        transactions.saturating_add(1).min(2)
                    } else {
                        transactions
                    },
                    last: dir,
                }
            }
            s => s,
        };
        self.last_seen = now;
    }
}

/// The TCP transition table of SPEC §4.
fn tcp_transition(state: TcpState, origin: Direction, dir: Direction, flags: TcpFlags) -> TcpState {
    if flags.has(TcpFlags::RST) {
        return TcpState::Close;
    }
    let fin = flags.has(TcpFlags::FIN);
    match state {
        TcpState::SynSent if dir != origin && flags.has(TcpFlags::SYN | TcpFlags::ACK) => {
            TcpState::SynRecv
        }
        TcpState::SynRecv | TcpState::Established if fin => TcpState::FinWait { first_fin: dir },
        TcpState::SynRecv
            if dir == origin && flags.has(TcpFlags::ACK) && !flags.has(TcpFlags::SYN) =>
        {
            TcpState::Established
        }
        TcpState::FinWait { first_fin } if fin && dir != first_fin => TcpState::TimeWait,
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Egress as Out, Ingress as In};

    const T: Timeouts = Timeouts {
        tcp_established: 432_000,
        udp: 30,
        udp_stream: 180,
    };

    fn f(s: &str) -> TcpFlags {
        TcpFlags::parse(s).expect("flags")
    }

    fn tcp(dir: Direction) -> Tracking {
        Tracking::of(
            0,
            dir,
            6,
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            (40000, 443),
            (0, 0),
        )
    }

    type Steps<'a> = &'a [(Direction, &'a str)];

    /// Runs (direction, flags) steps from a fresh entry created by the first one.
    fn run(steps: &[(Direction, &str)]) -> Vec<&'static str> {
        let (d0, f0) = steps[0];
        let mut e = Entry::new(&tcp(d0), d0, f(f0), Time(0)).expect("creates");
        let mut out = vec![e.state.name()];
        for &(d, fl) in &steps[1..] {
            e.advance(d, f(fl), Time(0));
            out.push(e.state.name());
        }
        out
    }

    #[test]
    fn tcp_table() {
        let cases: &[(Steps, &[&str])] = &[
            (
                &[(Out, "S"), (In, "SA"), (Out, "A")],
                &["SYN_SENT", "SYN_RECV", "ESTABLISHED"],
            ),
            // SYN+ACK from the originator does not advance SYN_SENT.
            (&[(Out, "S"), (Out, "SA")], &["SYN_SENT", "SYN_SENT"]),
            // The final ACK must come from the originator.
            (
                &[(Out, "S"), (In, "SA"), (In, "A")],
                &["SYN_SENT", "SYN_RECV", "SYN_RECV"],
            ),
            (
                &[
                    (Out, "S"),
                    (In, "SA"),
                    (Out, "A"),
                    (Out, "FA"),
                    (Out, "FA"),
                    (In, "FA"),
                ],
                &[
                    "SYN_SENT",
                    "SYN_RECV",
                    "ESTABLISHED",
                    "FIN_WAIT",
                    "FIN_WAIT",
                    "TIME_WAIT",
                ],
            ),
            (
                &[(Out, "S"), (In, "SA"), (In, "F")],
                &["SYN_SENT", "SYN_RECV", "FIN_WAIT"],
            ),
            (&[(Out, "S"), (In, "R")], &["SYN_SENT", "CLOSE"]),
            (&[(Out, "S"), (Out, "RA")], &["SYN_SENT", "CLOSE"]),
            // A FIN in SYN_SENT changes nothing.
            (&[(Out, "S"), (Out, "F")], &["SYN_SENT", "SYN_SENT"]),
            // Loose pickup.
            (&[(In, "A")], &["ESTABLISHED"]),
            (&[(In, "PA")], &["ESTABLISHED"]),
            (&[(In, "FA"), (Out, "FA")], &["FIN_WAIT", "TIME_WAIT"]),
            (&[(In, "SA")], &["ESTABLISHED"]),
        ];
        for (steps, want) in cases {
            assert_eq!(run(steps), *want, "steps {steps:?}");
        }
    }

    #[test]
    fn rst_creates_nothing_and_syn_restarts() {
        assert!(Entry::new(&tcp(Out), Out, f("R"), Time(0)).is_none());
        assert!(Entry::new(&tcp(Out), Out, f("RA"), Time(0)).is_none());
        let mut e = Entry::new(&tcp(Out), Out, f("S"), Time(0)).unwrap();
        assert!(!e.restarted_by(f("S")));
        e.advance(In, f("R"), Time(0));
        assert!(e.restarted_by(f("S")));
        assert!(!e.restarted_by(f("SA")));
    }

    #[test]
    fn tcp_timeouts() {
        let at = |secs| Time::from_secs(secs);
        let e = Entry::new(&tcp(Out), Out, f("S"), at(100)).unwrap();
        assert!(e.is_alive(at(219), &T));
        assert!(!e.is_alive(at(220), &T));
        let mut e = e;
        e.advance(In, f("SA"), at(150));
        assert!(e.is_alive(at(209), &T) && !e.is_alive(at(210), &T));
        e.advance(Out, f("A"), at(160));
        assert!(e.is_alive(at(160 + 431_999), &T) && !e.is_alive(at(160 + 432_000), &T));
        let short = Timeouts {
            tcp_established: 60,
            ..T
        };
        assert!(!e.is_alive(at(220), &short) && e.is_alive(at(219), &short));
        e.advance(In, f("R"), at(200));
        assert!(e.is_alive(at(209), &T) && !e.is_alive(at(210), &T));
    }

    #[test]
    fn udp_stream_after_second_transaction() {
        let k = Tracking::of(
            0,
            Out,
            17,
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            (5000, 53),
            (0, 0),
        );
        let mut e = Entry::new(&k, Out, TcpFlags(0), Time(0)).unwrap();
        assert_eq!(e.state.timeout(&T), 30);
        e.advance(Out, TcpFlags(0), Time(0)); // two requests in a row: no transaction yet
        assert_eq!(e.state.name(), "UDP");
        e.advance(In, TcpFlags(0), Time(0)); // first completed
        e.advance(In, TcpFlags(0), Time(0)); // a second reply in a row completes nothing
        assert_eq!(e.state.name(), "UDP");
        e.advance(Out, TcpFlags(0), Time(0));
        e.advance(In, TcpFlags(0), Time(0)); // second completed
        assert_eq!(e.state.name(), "UDP_STREAM");
        assert_eq!(e.state.timeout(&T), 180);
        e.advance(Out, TcpFlags(0), Time(0));
        assert_eq!(
            e.state.timeout(&Timeouts {
                udp_stream: 60,
                ..T
            }),
            60
        );
        // An entry created by an inbound request counts its transactions the other way.
        let mut e = Entry::new(&k, In, TcpFlags(0), Time(0)).unwrap();
        e.advance(Out, TcpFlags(0), Time(0));
        e.advance(In, TcpFlags(0), Time(0));
        e.advance(Out, TcpFlags(0), Time(0));
        assert_eq!(e.state.name(), "UDP_STREAM");
    }

    #[test]
    fn icmp_queries() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let req_out = Tracking::of(3, Out, 1, a, b, (0, 0), (8, 7));
        let rep_in = Tracking::of(3, In, 1, b, a, (0, 0), (0, 7));
        let req_in = Tracking::of(3, In, 1, b, a, (0, 0), (8, 7));
        assert_eq!(req_out.key(), rep_in.key());
        assert_ne!(req_out.key(), req_in.key());
        let e = Entry::new(&req_out, Out, TcpFlags(0), Time(0)).unwrap();
        assert!(e.admits(&rep_in, In));
        assert!(e.admits(&req_out, Out));
        assert_eq!(e.state.timeout(&T), 30);
        assert!(Entry::new(&rep_in, In, TcpFlags(0), Time(0)).is_none());
        // Timestamp and ICMPv6 echo.
        assert!(matches!(
            Tracking::of(0, Out, 1, a, b, (0, 0), (13, 1)),
            Tracking::Query(_, QueryRole::Request)
        ));
        assert!(matches!(
            Tracking::of(0, In, 1, b, a, (0, 0), (14, 1)),
            Tracking::Query(_, QueryRole::Reply)
        ));
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(matches!(
            Tracking::of(0, Out, 58, v6a, v6b, (0, 0), (128, 1)),
            Tracking::Query(_, QueryRole::Request)
        ));
        // Errors and echo types of the other family are never tracked.
        for (p, t) in [(1, 3), (1, 11), (1, 128), (58, 8), (58, 1), (58, 135)] {
            assert_eq!(
                Tracking::of(0, Out, p, a, b, (0, 0), (t, 0)),
                Tracking::Untrackable,
                "proto {p} type {t}"
            );
        }
    }

    #[test]
    fn other_protocols_pair_and_600s() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "192.0.2.10".parse().unwrap();
        let out = Tracking::of(1, Out, 47, a, b, (0, 0), (0, 0));
        let back = Tracking::of(1, In, 47, b, a, (0, 0), (0, 0));
        assert_eq!(out.key(), back.key());
        let e = Entry::new(&out, Out, TcpFlags(0), Time::from_secs(0)).unwrap();
        assert!(e.is_alive(Time::from_secs(599), &T) && !e.is_alive(Time::from_secs(600), &T));
    }

    #[test]
    fn time_parsing() {
        assert_eq!(Time::from_secs_f64(0.1), Some(Time(100_000_000)));
        assert_eq!(Time::from_secs_f64(12.5), Some(Time(12_500_000_000)));
        assert_eq!(Time::from_secs_f64(-1.0), None);
        assert_eq!(Time::from_secs_f64(f64::NAN), None);
        assert_eq!(Time::from_secs_f64(f64::INFINITY), None);
        assert_eq!(TcpFlags::parse("x"), None);
        assert_eq!(TcpFlags::parse("sa"), Some(TcpFlags(0x12)));
    }
}
