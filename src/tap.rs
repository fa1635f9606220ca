//! The Linux edge of the forwarder: TAP devices (with the virtio-net header and offloads),
//! epoll, signalfd, eventfd, network namespaces and a raw ICMP socket for the demo's pings.
//!
//! Every `unsafe` block and every ioctl of the crate lives here, each with a `// SAFETY:`
//! comment. [`VirtioNetHdr`] is plain parsing and emitting (no I/O) and is tested with bytes.
//!
//! A TAP opened with [`TapOptions::vnet_hdr`] prefixes every frame read or written with a
//! 10-byte `struct virtio_net_hdr`. With offloads negotiated by `TUNSETOFFLOAD`, the kernel
//! hands the forwarder TCP (and, on kernels ≥ 6.2, UDP) super-frames of up to 64 KiB whose
//! transport checksum is *partial* (only the pseudo-header sum is filled in, the header says
//! where to finish it). The forwarder passes such frames on unchanged apart from the MAC
//! addresses and the TTL, so the header stays valid and no checksum is ever verified.

use crate::wire::MacAddr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Length of `struct virtio_net_hdr` (without `num_buffers`), the TAP default.
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the transport checksum is partial and must be finished
/// from `csum_start` / `csum_offset`.
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified.
pub const VNET_F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO, fragments; obsolete).
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN` flag bit of `gso_type`.
pub const GSO_ECN: u8 = 0x80;

/// The virtio-net header that precedes each frame on a TAP opened with `IFF_VNET_HDR`
/// (little-endian fields on little-endian hosts; TAP uses the host's order by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    /// `VNET_F_NEEDS_CSUM`, `VNET_F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`, possibly with [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers to replicate in each segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (from the start of the Ethernet frame).
    pub csum_start: u16,
    /// Where the checksum is stored, from `csum_start`.
    pub csum_offset: u16,
}

/// Why a virtio-net header does not fit its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VnetError {
    /// Fewer than [`VNET_HDR_LEN`] bytes.
    Truncated,
    /// The partial-checksum position lies outside the frame.
    BadCsumPosition,
    /// An unknown GSO type, or a GSO frame with a zero segment size.
    BadGso,
}

impl VirtioNetHdr {
    /// Reads the header at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<VirtioNetHdr, VnetError> {
        let b = buf
            .first_chunk::<VNET_HDR_LEN>()
            .ok_or(VnetError::Truncated)?;
        let le = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Ok(VirtioNetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        })
    }

    /// Writes the header at the start of `buf` (at least [`VNET_HDR_LEN`] bytes).
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), VnetError> {
        let b = buf
            .first_chunk_mut::<VNET_HDR_LEN>()
            .ok_or(VnetError::Truncated)?;
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        Ok(())
    }

    /// Whether the transport checksum is partial (must not be verified).
    pub fn needs_csum(&self) -> bool {
        self.flags & VNET_F_NEEDS_CSUM != 0
    }

    /// Whether the frame is a GSO super-frame.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }

    /// Checks the header against the Ethernet frame that follows it (`frame_len` bytes): a
    /// partial checksum must lie inside the frame, a GSO type must be known and have a segment
    /// size. The kernel refuses such frames on write; the forwarder drops them on read.
    pub fn check(&self, frame_len: usize) -> Result<(), VnetError> {
        if self.needs_csum()
            && usize::from(self.csum_start) + usize::from(self.csum_offset) + 2 > frame_len
        {
            return Err(VnetError::BadCsumPosition);
        }
        match self.gso_type & !GSO_ECN {
            GSO_NONE => Ok(()),
            GSO_TCPV4 | GSO_TCPV6 | GSO_UDP | GSO_UDP_L4 if self.gso_size > 0 => Ok(()),
            _ => Err(VnetError::BadGso),
        }
    }

    /// The number of wire packets the frame stands for: 1, or for a super-frame the payload
    /// after `hdr_len` divided into `gso_size` segments.
    pub fn segments(&self, frame_len: usize) -> u32 {
        if !self.is_gso() || self.gso_size == 0 {
            return 1;
        }
        let payload = frame_len.saturating_sub(usize::from(self.hdr_len));
        payload.div_ceil(usize::from(self.gso_size)).max(1) as u32
    }
}

/// How to open a TAP device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapOptions {
    /// Prefix frames with the virtio-net header (`IFF_VNET_HDR`).
    pub vnet_hdr: bool,
    /// Negotiate checksum and segmentation offloads (`TUNSETOFFLOAD`; needs `vnet_hdr`).
    pub offload: bool,
    /// Open one queue of a multi-queue device (`IFF_MULTI_QUEUE`).
    pub multi_queue: bool,
}

impl Default for TapOptions {
    fn default() -> Self {
        TapOptions {
            vnet_hdr: true,
            offload: true,
            multi_queue: false,
        }
    }
}

/// The `TUN_F_*` offload sets tried in order (the first the kernel accepts wins).
const OFFLOAD_SETS: [u32; 3] = [
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_USO4 | libc::TUN_F_USO6,
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
    libc::TUN_F_CSUM,
];

/// `struct ifreq` as the TUN ioctls and `SIOCSIFHWADDR` read it: a name and a 24-byte union.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> io::Result<IfReq> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', '\0', ' ']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "interface name {name:?}: expected 1-{} characters without '/', spaces or NUL",
                    libc::IFNAMSIZ - 1
                ),
            ));
        }
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        for (d, s) in req.name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        Ok(req)
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// One queue of a TAP device. Closing it (dropping the last queue) removes the device.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
    vnet_hdr: bool,
    offloads: u32,
}

impl Tap {
    /// Creates (or attaches to) the TAP device `name` in the calling thread's network
    /// namespace, non-blocking.
    pub fn open(name: &str, opts: TapOptions) -> io::Result<Tap> {
        let mut req = IfReq::new(name)?;
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if opts.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        if opts.multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        req.data[..2].copy_from_slice(&(flags as libc::c_short).to_ne_bytes());
        // SAFETY: the path is a NUL-terminated literal; open has no other preconditions.
        let raw = cvt(unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        })
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/net/tun: {e}")))?;
        // SAFETY: `raw` is a descriptor we just opened and own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` is one (name + 24-byte
        // union, the kernel's layout) and lives across the call.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) })
            .map_err(|e| io::Error::new(e.kind(), format!("TUNSETIFF {name}: {e}")))?;
        let len = req.name.iter().position(|&c| c == 0).unwrap_or(0);
        let actual: String = req.name[..len].iter().map(|&c| c as u8 as char).collect();
        let mut tap = Tap {
            fd,
            name: actual,
            vnet_hdr: opts.vnet_hdr,
            offloads: 0,
        };
        if opts.vnet_hdr {
            let size: libc::c_int = VNET_HDR_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer, which is valid.
            cvt(unsafe {
                libc::ioctl(
                    tap.fd.as_raw_fd(),
                    libc::TUNSETVNETHDRSZ,
                    &size as *const libc::c_int,
                )
            })?;
            if opts.offload {
                for set in OFFLOAD_SETS {
                    // SAFETY: TUNSETOFFLOAD takes the flag word by value.
                    let r = unsafe {
                        libc::ioctl(
                            tap.fd.as_raw_fd(),
                            libc::TUNSETOFFLOAD,
                            libc::c_ulong::from(set),
                        )
                    };
                    if r == 0 {
                        tap.offloads = set;
                        break;
                    }
                }
            }
        }
        Ok(tap)
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether frames carry the virtio-net header.
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// The `TUN_F_*` offloads the kernel accepted (0 without).
    pub fn offloads(&self) -> u32 {
        self.offloads
    }

    /// Whether UDP segmentation offload (USO) was negotiated.
    pub fn has_uso(&self) -> bool {
        self.offloads & libc::TUN_F_USO4 != 0
    }

    /// Sets the device's MAC address (the address the peer stack uses), `SIOCSIFHWADDR`.
    pub fn set_mac(&self, mac: MacAddr) -> io::Result<()> {
        let mut req = IfReq::new(&self.name)?;
        req.data[..2].copy_from_slice(&(libc::ARPHRD_ETHER).to_ne_bytes());
        req.data[2..8].copy_from_slice(&mac.0);
        // SAFETY: SIOCSIFHWADDR reads a `struct ifreq` whose union holds a `sockaddr`
        // (family + address bytes); `req` has that layout and outlives the call.
        cvt(unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SIOCSIFHWADDR,
                &req as *const IfReq,
            )
        })
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("SIOCSIFHWADDR {}: {e}", self.name)))
    }

    /// Reads one frame (with its virtio-net header when enabled). `WouldBlock` when none is
    /// waiting.
    #[inline]
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one frame (with its virtio-net header when enabled).
    #[inline]
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// An epoll instance; registered descriptors are reported by a caller-chosen token.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

/// Room for the events of one [`Epoll::wait`].
pub struct EpollEvents {
    events: Vec<libc::epoll_event>,
    len: usize,
}

impl EpollEvents {
    /// Room for `n` events.
    pub fn with_capacity(n: usize) -> EpollEvents {
        EpollEvents {
            events: vec![libc::epoll_event { events: 0, u64: 0 }; n.max(1)],
            len: 0,
        }
    }

    /// The tokens of the descriptors that are ready.
    pub fn tokens(&self) -> impl Iterator<Item = u64> + '_ {
        self.events[..self.len].iter().map(|e| e.u64)
    }
}

impl Epoll {
    /// A new epoll instance.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no memory preconditions.
        let raw = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `raw` is a new descriptor we own.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    /// Watches `fd` for readability (level-triggered), reported as `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the call; the kernel copies it.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })
            .map(drop)
    }

    /// Waits up to `timeout` (`None`: forever) for ready descriptors. An interrupted wait
    /// returns no events.
    pub fn wait(&self, events: &mut EpollEvents, timeout: Option<Duration>) -> io::Result<()> {
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
        // SAFETY: the buffer holds `events.events.len()` initialised epoll_event values and
        // stays borrowed mutably for the call.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.events.as_mut_ptr(),
                events.events.len() as libc::c_int,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            events.len = 0;
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        events.len = n as usize;
        Ok(())
    }
}

/// SIGINT, SIGTERM and SIGHUP delivered through a descriptor (blocked for the calling thread
/// and the threads it spawns afterwards).
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

/// A signal [`SignalFd`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT or SIGTERM: stop.
    Stop,
    /// SIGHUP: reload.
    Hangup,
}

impl SignalFd {
    /// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and opens a descriptor that
    /// reports them.
    pub fn new() -> io::Result<SignalFd> {
        // SAFETY: a zeroed sigset_t is a valid argument to sigemptyset, which initialises it;
        // sigaddset/pthread_sigmask/signalfd read the initialised set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, s);
            }
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            let raw = cvt(libc::signalfd(
                -1,
                &set,
                libc::SFD_NONBLOCK | libc::SFD_CLOEXEC,
            ))?;
            Ok(SignalFd {
                fd: OwnedFd::from_raw_fd(raw),
            })
        }
    }

    /// The next pending signal, if any.
    pub fn read(&self) -> Option<Signal> {
        // SAFETY: signalfd_siginfo is plain data; zeroed is a valid value.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: `info` is valid for writes of `size` bytes.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n as usize != size {
            return None;
        }
        Some(if info.ssi_signo == libc::SIGHUP as u32 {
            Signal::Hangup
        } else {
            Signal::Stop
        })
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// An eventfd: another thread wakes the forwarder's loop with it.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new, non-blocking eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd has no memory preconditions.
        let raw = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `raw` is a new descriptor we own.
        Ok(EventFd {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    /// Wakes the waiter.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64. A full counter (EAGAIN) already wakes.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64; EAGAIN when nothing was pending.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Moves the calling thread into the network namespace `/run/netns/NAME` (as `ip netns`
/// names them). Sockets the thread creates afterwards live in that namespace. Use it only in
/// a thread of its own.
pub fn enter_netns(name: &str) -> io::Result<()> {
    let path = format!("/run/netns/{name}");
    let file =
        std::fs::File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    // SAFETY: `file` is an open namespace file; setns changes only the calling thread.
    cvt(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) })
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("setns {path}: {e}")))
}

/// Whether the process runs with effective user id 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Sends one ICMP echo request (IPv4, raw socket: needs root in the namespace) to `dst` and
/// waits up to `timeout` for the matching echo reply. `Ok(true)` when it came.
pub fn ping_v4(
    dst: std::net::Ipv4Addr,
    ident: u16,
    seq: u16,
    timeout: Duration,
) -> io::Result<bool> {
    // SAFETY: socket has no memory preconditions.
    let raw = cvt(unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    })?;
    // SAFETY: `raw` is a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut msg = [0u8; 16];
    msg[0] = 8;
    msg[4..6].copy_from_slice(&ident.to_be_bytes());
    msg[6..8].copy_from_slice(&seq.to_be_bytes());
    msg[8..16].copy_from_slice(b"vpcfw-pi");
    let c = crate::wire::checksum::of(&msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `msg` and `addr` are valid for the lengths given during the call.
    cvt(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) as libc::c_int
    })?;
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as libc::c_int) };
        if r <= 0 {
            continue;
        }
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            continue;
        }
        let p = &buf[..n as usize];
        let ihl = usize::from(p[0] & 0x0f) * 4;
        if p.len() < ihl + 8 || p[9] != 1 || p[12..16] != dst.octets() {
            continue;
        }
        let icmp = &p[ihl..];
        if icmp[0] == 0 && icmp[4..6] == ident.to_be_bytes() && icmp[6..8] == seq.to_be_bytes() {
            return Ok(true);
        }
    }
}

fn sockaddr(a: &std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        std::net::SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Connects a TCP socket bound to `src` (port 0: any) to `dst` within `timeout` (std cannot
/// bind before connecting). The stream is returned in blocking mode.
pub fn tcp_connect_from(
    src: std::net::SocketAddr,
    dst: std::net::SocketAddr,
    timeout: Duration,
) -> io::Result<std::net::TcpStream> {
    let family = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket has no memory preconditions.
    let raw = cvt(unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    })?;
    // SAFETY: `raw` is a new descriptor we own; the TcpStream takes it over.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(raw) };
    let (s, slen) = sockaddr(&src);
    // SAFETY: `s` is a valid socket address of `slen` bytes.
    cvt(unsafe { libc::bind(raw, (&s as *const libc::sockaddr_storage).cast(), slen) })?;
    let (d, dlen) = sockaddr(&dst);
    // SAFETY: `d` is a valid socket address of `dlen` bytes.
    let r = unsafe { libc::connect(raw, (&d as *const libc::sockaddr_storage).cast(), dlen) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let mut pfd = libc::pollfd {
            fd: raw,
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let n = cvt(unsafe { libc::poll(&mut pfd, 1, ms) })?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        }
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_header_round_trips() {
        let h = VirtioNetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut b = [0u8; VNET_HDR_LEN];
        h.emit(&mut b).unwrap();
        assert_eq!(VirtioNetHdr::parse(&b).unwrap(), h);
        assert!(h.needs_csum() && h.is_gso());
        assert_eq!(h.segments(66 + 1448 * 3), 3);
        assert_eq!(h.segments(66 + 1448 * 3 + 1), 4);
        assert_eq!(VirtioNetHdr::default().segments(60), 1);
        assert_eq!(VirtioNetHdr::parse(&b[..9]), Err(VnetError::Truncated));
    }

    #[test]
    fn vnet_header_checks_its_frame() {
        let mut h = VirtioNetHdr {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        assert_eq!(h.check(52), Ok(()));
        assert_eq!(h.check(51), Err(VnetError::BadCsumPosition));
        h.gso_type = GSO_TCPV6;
        assert_eq!(h.check(100), Err(VnetError::BadGso));
        h.gso_size = 1440;
        assert_eq!(h.check(100), Ok(()));
        h.gso_type = 9;
        assert_eq!(h.check(100), Err(VnetError::BadGso));
        h.gso_type = GSO_TCPV4 | GSO_ECN;
        assert_eq!(h.check(100), Ok(()));
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(IfReq::new("").is_err());
        assert!(IfReq::new("abcdefghijklmnop").is_err());
        assert!(IfReq::new("a/b").is_err());
        assert!(IfReq::new("tap0").is_ok());
    }
}
