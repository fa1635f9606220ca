//! Packet capture files: a strict, streaming reader for pcap and pcapng, and writers for both.
//!
//! [`CaptureReader`] reads classic pcap (either byte order, microsecond or nanosecond
//! timestamps) and pcapng (Section Header, Interface Description, Enhanced, Simple and obsolete
//! Packet Blocks; other blocks are skipped; several sections, each with its own byte order). Only
//! the Ethernet link type is accepted, since the firewall judges Ethernet frames.
//!
//! The reader is strict and never panics: a file that ends inside a header or a record, a block
//! whose lengths disagree, a record claiming more than [`MAX_FRAME_LEN`] bytes (an allocation
//! bomb in a damaged file) or a packet on an interface that was never described is a
//! [`CaptureError`] naming the byte offset of the header, record or block at fault. It reads
//! from any `io::Read` (buffered inside), one record at a time, reusing one buffer.
//!
//! [`CaptureWriter`] writes classic pcap (either byte order, either resolution) or pcapng (one
//! section, one Ethernet interface), for `vpcfw replay --accepted/--rejected` and `vpcfw pcap`.
//!
//! Why not the `pcap-file` crate: it did not panic on our random inputs, but its errors carry no
//! offset (a bare `UnexpectedEof` for every kind of truncation) and its reader buffers ahead, so
//! the offset of the failing record cannot be recovered from outside.

use crate::conntrack::Time;
use std::fmt;
use std::io::{self, BufReader, Read, Write};

/// `LINKTYPE_ETHERNET`: the only link type read and written.
pub const LINKTYPE_ETHERNET: u16 = 1;
/// Records claiming more captured bytes than this are rejected (the largest snapshot length
/// tcpdump and Wireshark use is 262,144).
pub const MAX_FRAME_LEN: u32 = 262_144;
/// pcapng blocks longer than this are rejected.
pub const MAX_BLOCK_LEN: u32 = 16 << 20;

const PCAP_MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NANOS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BYTE_ORDER: u32 = 0x1a2b_3c4d;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_OBSOLETE_PB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
const PCAPNG_OPT_TSRESOL: u16 = 9;
const PCAPNG_OPT_TSOFFSET: u16 = 14;

/// The container of a capture file, with what its timestamps can express.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap (libpcap).
    Pcap {
        /// Big-endian headers (magic `a1 b2 ..` on disk).
        big_endian: bool,
        /// Nanosecond timestamps (magic `a1b23c4d`) rather than microseconds.
        nanos: bool,
    },
    /// pcapng.
    PcapNg {
        /// Big-endian blocks (of the first section, when reading).
        big_endian: bool,
        /// Nanosecond timestamps (`if_tsresol` 9) rather than microseconds (the default).
        nanos: bool,
    },
}

impl Format {
    /// Whether timestamps are kept to the nanosecond.
    pub fn nanos(self) -> bool {
        match self {
            Format::Pcap { nanos, .. } | Format::PcapNg { nanos, .. } => nanos,
        }
    }
}

/// What went wrong in a capture file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Reading failed.
    Io,
    /// The file starts with neither a pcap nor a pcapng magic number.
    NotACapture,
    /// The file ends inside a header, record or block.
    Truncated,
    /// A header, record or block is inconsistent or unsupported.
    Invalid,
}

/// An error in a capture file, at a byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureError {
    /// Offset of the file header, record or block at fault.
    pub offset: u64,
    /// The kind of error.
    pub kind: ErrorKind,
    /// What was found, in one line.
    pub message: String,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for CaptureError {}

/// One captured frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Capture time (nanoseconds since the Unix epoch, as the file records it).
    pub time: Time,
    /// The captured bytes (an Ethernet frame, possibly cut at the snapshot length).
    pub data: &'a [u8],
    /// The frame's length on the wire.
    pub orig_len: u32,
}

/// The unit of a pcapng interface's timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TsUnit {
    /// 10^-n seconds.
    Decimal(u8),
    /// 2^-n seconds.
    Binary(u8),
}

impl TsUnit {
    fn to_nanos(self, ts: u64) -> u64 {
        let ts = u128::from(ts);
        let ns = match self {
            TsUnit::Decimal(n) if n <= 9 => ts * 10u128.pow(u32::from(9 - n)),
            TsUnit::Decimal(n) => ts / 10u128.pow(u32::from(n - 9)),
            TsUnit::Binary(n) => (ts * 1_000_000_000) >> n,
        };
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
    fn finer_than_micros(self) -> bool {
        match self {
            TsUnit::Decimal(n) => n > 6,
            TsUnit::Binary(n) => n > 19,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Interface {
    link_type: u16,
    snaplen: u32,
    unit: TsUnit,
    offset_secs: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Pcap { nanos: bool },
    PcapNg,
}

/// A strict, streaming reader of pcap and pcapng files of Ethernet frames.
pub struct CaptureReader<R: Read> {
    src: BufReader<R>,
    buf: Vec<u8>,
    /// Bytes consumed: the offset of the next record or block.
    offset: u64,
    big_endian: bool,
    layout: Layout,
    format: Format,
    interfaces: Vec<Interface>,
    /// Time of the last frame (a Simple Packet Block has none of its own).
    last_time: Time,
}

impl<R: Read> fmt::Debug for CaptureReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureReader")
            .field("offset", &self.offset)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// Byte-order-aware reads from a slice whose length the caller has checked.
#[derive(Clone, Copy)]
struct Endian(bool);

impl Endian {
    fn u16(self, b: &[u8], at: usize) -> u16 {
        let v = [b[at], b[at + 1]];
        if self.0 {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        }
    }
    fn u32(self, b: &[u8], at: usize) -> u32 {
        let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if self.0 {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    }
}

impl<R: Read> CaptureReader<R> {
    /// Reads the file header (pcap) or the first Section Header Block (pcapng).
    pub fn new(src: R) -> Result<CaptureReader<R>, CaptureError> {
        let mut r = CaptureReader {
            src: BufReader::with_capacity(1 << 18, src),
            buf: Vec::with_capacity(2048),
            offset: 0,
            big_endian: false,
            layout: Layout::PcapNg,
            format: Format::PcapNg {
                big_endian: false,
                nanos: false,
            },
            interfaces: Vec::new(),
            last_time: Time(0),
        };
        let got = r.fill(0, 4)?;
        if got < 4 {
            return Err(r.error(
                0,
                if got == 0 {
                    ErrorKind::NotACapture
                } else {
                    ErrorKind::Truncated
                },
                format!("file of {got} bytes: too short for a pcap or pcapng header"),
            ));
        }
        let magic = [r.buf[0], r.buf[1], r.buf[2], r.buf[3]];
        let (le, be) = (u32::from_le_bytes(magic), u32::from_be_bytes(magic));
        if le == PCAPNG_SHB {
            r.section_header(4)?;
            return Ok(r);
        }
        let (big_endian, nanos) = match (le, be) {
            (PCAP_MAGIC_MICROS, _) => (false, false),
            (PCAP_MAGIC_NANOS, _) => (false, true),
            (_, PCAP_MAGIC_MICROS) => (true, false),
            (_, PCAP_MAGIC_NANOS) => (true, true),
            _ => {
                return Err(r.error(
                    0,
                    ErrorKind::NotACapture,
                    format!(
                        "not a pcap or pcapng file (it starts with {:02x} {:02x} {:02x} {:02x})",
                        magic[0], magic[1], magic[2], magic[3]
                    ),
                ));
            }
        };
        r.require(4, 24, "pcap file header")?;
        let e = Endian(big_endian);
        let (major, link) = (e.u16(&r.buf, 4), e.u32(&r.buf, 20));
        if major != 2 {
            return Err(r.error(
                0,
                ErrorKind::Invalid,
                format!("pcap version {major}: only version 2 is supported"),
            ));
        }
        // The upper bits of the link-type field may carry FCS information.
        if link & 0xffff != u32::from(LINKTYPE_ETHERNET) {
            return Err(r.error(
                20,
                ErrorKind::Invalid,
                format!(
                    "link type {}: only Ethernet (1) is supported",
                    link & 0xffff
                ),
            ));
        }
        r.offset = 24;
        r.big_endian = big_endian;
        r.layout = Layout::Pcap { nanos };
        r.format = Format::Pcap { big_endian, nanos };
        Ok(r)
    }

    /// The file's format. For pcapng, `nanos` is true once an interface with timestamps finer
    /// than a microsecond has been described.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Bytes consumed so far: the offset of the next record or block.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next frame, or `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        match self.layout {
            Layout::Pcap { nanos } => self.next_pcap(nanos),
            Layout::PcapNg => self.next_pcapng(),
        }
    }

    fn error(&self, offset: u64, kind: ErrorKind, message: String) -> CaptureError {
        CaptureError {
            offset,
            kind,
            message,
        }
    }

    /// Reads into `buf[from..to]` (resizing `buf` to `to`); returns how many bytes were read
    /// (fewer than asked only at the end of the file).
    fn fill(&mut self, from: usize, to: usize) -> Result<usize, CaptureError> {
        self.buf.resize(to, 0);
        let mut got = 0;
        while from + got < to {
            match self.src.read(&mut self.buf[from + got..to]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let at = self.offset + (from + got) as u64;
                    return Err(self.error(at, ErrorKind::Io, format!("read error: {e}")));
                }
            }
        }
        self.buf.truncate(from + got);
        Ok(got)
    }

    /// Like [`fill`](Self::fill), but the end of the file is an error naming `what`.
    fn require(&mut self, from: usize, to: usize, what: &str) -> Result<(), CaptureError> {
        let got = self.fill(from, to)?;
        if from + got < to {
            return Err(self.error(
                self.offset,
                ErrorKind::Truncated,
                format!(
                    "truncated {what}: {to} bytes needed, the file ends after {}",
                    from + got
                ),
            ));
        }
        Ok(())
    }

    /// Reads the first `len` bytes of a record or block into `buf`: `false` at the end of the
    /// file, an error if it ends inside them.
    fn record_header(&mut self, len: usize, what: &str) -> Result<bool, CaptureError> {
        let got = self.fill(0, len)?;
        if got > 0 && got < len {
            self.require(got, len, what)?;
        }
        Ok(got > 0)
    }

    fn next_pcap(&mut self, nanos: bool) -> Result<Option<Frame<'_>>, CaptureError> {
        if !self.record_header(16, "packet record header")? {
            return Ok(None);
        }
        let e = Endian(self.big_endian);
        let (secs, frac) = (e.u32(&self.buf, 0), e.u32(&self.buf, 4));
        let (caplen, orig_len) = (e.u32(&self.buf, 8), e.u32(&self.buf, 12));
        if caplen > MAX_FRAME_LEN {
            return Err(self.error(
                self.offset,
                ErrorKind::Invalid,
                format!(
                    "packet record claims {caplen} captured bytes (at most {MAX_FRAME_LEN} are accepted)"
                ),
            ));
        }
        let len = caplen as usize;
        self.require(16, 16 + len, "packet record")?;
        self.offset += 16 + u64::from(caplen);
        let ns = if nanos {
            u64::from(frac)
        } else {
            u64::from(frac) * 1000
        };
        let time = Time(u64::from(secs) * 1_000_000_000 + ns);
        Ok(Some(Frame {
            time,
            data: &self.buf[16..16 + len],
            orig_len,
        }))
    }

    /// Reads a Section Header Block whose first `have` bytes are in `buf`.
    fn section_header(&mut self, have: usize) -> Result<(), CaptureError> {
        self.require(have, 12, "pcapng section header")?;
        let magic = u32::from_le_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]]);
        let big_endian = match magic {
            PCAPNG_BYTE_ORDER => false,
            m if m.swap_bytes() == PCAPNG_BYTE_ORDER => true,
            _ => {
                return Err(self.error(
                    self.offset,
                    ErrorKind::NotACapture,
                    format!("pcapng section header with a bad byte-order magic {magic:08x}"),
                ));
            }
        };
        let e = Endian(big_endian);
        let len = e.u32(&self.buf, 4);
        if !(28..=MAX_BLOCK_LEN).contains(&len) || !len.is_multiple_of(4) {
            return Err(self.error(
                self.offset,
                ErrorKind::Invalid,
                format!("pcapng section header of length {len}"),
            ));
        }
        self.require(12, len as usize, "pcapng section header")?;
        let major = e.u16(&self.buf, 12);
        if major != 1 {
            return Err(self.error(
                self.offset,
                ErrorKind::Invalid,
                format!("pcapng version {major}: only version 1 is supported"),
            ));
        }
        self.check_trailer(e, len)?;
        if self.offset == 0 {
            self.format = Format::PcapNg {
                big_endian,
                nanos: false,
            };
        }
        self.big_endian = big_endian;
        self.interfaces.clear();
        self.offset += u64::from(len);
        Ok(())
    }

    fn check_trailer(&self, e: Endian, len: u32) -> Result<(), CaptureError> {
        let trailer = e.u32(&self.buf, len as usize - 4);
        if trailer != len {
            return Err(self.error(
                self.offset,
                ErrorKind::Invalid,
                format!("pcapng block length {len} at its start but {trailer} at its end"),
            ));
        }
        Ok(())
    }

    fn next_pcapng(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        loop {
            if !self.record_header(8, "pcapng block header")? {
                return Ok(None);
            }
            let e = Endian(self.big_endian);
            let kind = e.u32(&self.buf, 0);
            if kind == PCAPNG_SHB {
                self.section_header(8)?;
                continue;
            }
            let len = e.u32(&self.buf, 4);
            if !(12..=MAX_BLOCK_LEN).contains(&len) || !len.is_multiple_of(4) {
                return Err(self.error(
                    self.offset,
                    ErrorKind::Invalid,
                    format!(
                        "pcapng block of type {kind} with length {len} (a multiple of 4 from 12 to {MAX_BLOCK_LEN} expected)"
                    ),
                ));
            }
            self.require(8, len as usize, "pcapng block")?;
            self.check_trailer(e, len)?;
            let body = 8..len as usize - 4;
            let frame = match kind {
                PCAPNG_IDB => {
                    self.interface(e, body)?;
                    None
                }
                PCAPNG_EPB | PCAPNG_OBSOLETE_PB => Some(self.packet_block(e, kind, body)?),
                PCAPNG_SPB => Some(self.simple_block(e, body)?),
                _ => None,
            };
            self.offset += u64::from(len);
            if let Some((time, data, orig_len)) = frame {
                self.last_time = time;
                return Ok(Some(Frame {
                    time,
                    data: &self.buf[data],
                    orig_len,
                }));
            }
        }
    }

    fn invalid(&self, message: String) -> CaptureError {
        self.error(self.offset, ErrorKind::Invalid, message)
    }

    fn interface(&mut self, e: Endian, body: std::ops::Range<usize>) -> Result<(), CaptureError> {
        if body.len() < 8 {
            return Err(self.invalid("pcapng interface description shorter than 8 bytes".into()));
        }
        let b = &self.buf[body.clone()];
        let mut iface = Interface {
            link_type: e.u16(b, 0),
            snaplen: e.u32(b, 4),
            unit: TsUnit::Decimal(6),
            offset_secs: 0,
        };
        let mut at = 8;
        while at + 4 <= b.len() {
            let (code, olen) = (e.u16(b, at), usize::from(e.u16(b, at + 2)));
            let value = at + 4..at + 4 + olen;
            if value.end > b.len() {
                return Err(self.invalid(format!(
                    "pcapng interface option {code} of {olen} bytes runs past its block"
                )));
            }
            match (code, olen) {
                (0, _) => break,
                (PCAPNG_OPT_TSRESOL, 1) => {
                    let v = b[value.start];
                    iface.unit = match (v & 0x80 != 0, v & 0x7f) {
                        (false, n) if n <= 38 => TsUnit::Decimal(n),
                        (true, n) if n <= 64 => TsUnit::Binary(n),
                        _ => {
                            return Err(
                                self.invalid(format!("pcapng timestamp resolution byte {v:#04x}"))
                            );
                        }
                    };
                }
                (PCAPNG_OPT_TSOFFSET, 8) => {
                    let lo = u64::from(e.u32(b, value.start));
                    let hi = u64::from(e.u32(b, value.start + 4));
                    let (hi, lo) = if e.0 { (lo, hi) } else { (hi, lo) };
                    iface.offset_secs = (hi << 32 | lo) as i64;
                }
                _ => {}
            }
            at = value.start + olen.div_ceil(4) * 4;
        }
        if let Format::PcapNg { nanos, .. } = &mut self.format {
            *nanos |= iface.unit.finer_than_micros();
        }
        self.interfaces.push(iface);
        Ok(())
    }

    /// The Ethernet interface `id`, or an error.
    fn ethernet(&self, id: u32) -> Result<Interface, CaptureError> {
        let Some(iface) = self.interfaces.get(id as usize) else {
            return Err(self.invalid(format!(
                "packet on interface {id}, but the section describes {} interfaces",
                self.interfaces.len()
            )));
        };
        if iface.link_type != LINKTYPE_ETHERNET {
            return Err(self.invalid(format!(
                "packet on interface {id} of link type {}: only Ethernet (1) is supported",
                iface.link_type
            )));
        }
        Ok(*iface)
    }

    /// An Enhanced Packet Block or an obsolete Packet Block: (time, data range, length).
    fn packet_block(
        &self,
        e: Endian,
        kind: u32,
        body: std::ops::Range<usize>,
    ) -> Result<(Time, std::ops::Range<usize>, u32), CaptureError> {
        if body.len() < 20 {
            return Err(self.invalid(format!(
                "pcapng packet block of {} body bytes (at least 20 expected)",
                body.len()
            )));
        }
        let b = &self.buf[body.clone()];
        let id = if kind == PCAPNG_EPB {
            e.u32(b, 0)
        } else {
            u32::from(e.u16(b, 0))
        };
        let iface = self.ethernet(id)?;
        let ts = u64::from(e.u32(b, 4)) << 32 | u64::from(e.u32(b, 8));
        let (caplen, orig_len) = (e.u32(b, 12), e.u32(b, 16));
        if caplen as usize > b.len() - 20 || caplen > MAX_FRAME_LEN {
            return Err(self.invalid(format!(
                "pcapng packet block claims {caplen} captured bytes but holds {}",
                b.len() - 20
            )));
        }
        let ns = iface.unit.to_nanos(ts);
        let time = Time(ns.saturating_add_signed(iface.offset_secs.saturating_mul(1_000_000_000)));
        let start = body.start + 20;
        Ok((time, start..start + caplen as usize, orig_len))
    }

    /// A Simple Packet Block (interface 0, no timestamp: the previous frame's time).
    fn simple_block(
        &self,
        e: Endian,
        body: std::ops::Range<usize>,
    ) -> Result<(Time, std::ops::Range<usize>, u32), CaptureError> {
        if body.len() < 4 {
            return Err(self.invalid("pcapng simple packet block without its length".into()));
        }
        let iface = self.ethernet(0)?;
        let orig_len = e.u32(&self.buf, body.start);
        let mut caplen = orig_len.min(MAX_FRAME_LEN);
        if iface.snaplen > 0 {
            caplen = caplen.min(iface.snaplen);
        }
        let room = body.len() - 4;
        if caplen as usize > room {
            return Err(self.invalid(format!(
                "pcapng simple packet block of a {orig_len}-byte packet holds only {room} bytes"
            )));
        }
        let start = body.start + 4;
        Ok((self.last_time, start..start + caplen as usize, orig_len))
    }
}

/// Writes Ethernet frames to a pcap or pcapng stream.
#[derive(Debug)]
pub struct CaptureWriter<W: Write> {
    out: W,
    format: Format,
    block: Vec<u8>,
}

/// Appends `v` to `b` in the chosen byte order.
fn put_u16(b: &mut Vec<u8>, big_endian: bool, v: u16) {
    b.extend_from_slice(&if big_endian {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    });
}

/// Appends `v` to `b` in the chosen byte order.
fn put_u32(b: &mut Vec<u8>, big_endian: bool, v: u32) {
    b.extend_from_slice(&if big_endian {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    });
}

impl<W: Write> CaptureWriter<W> {
    /// Writes the file header (pcap) or the section header and one Ethernet interface (pcapng).
    pub fn new(mut out: W, format: Format) -> io::Result<CaptureWriter<W>> {
        let mut h = Vec::with_capacity(64);
        match format {
            Format::Pcap { big_endian, nanos } => {
                let be = big_endian;
                put_u32(
                    &mut h,
                    be,
                    if nanos {
                        PCAP_MAGIC_NANOS
                    } else {
                        PCAP_MAGIC_MICROS
                    },
                );
                put_u16(&mut h, be, 2);
                put_u16(&mut h, be, 4);
                put_u32(&mut h, be, 0); // thiszone
                put_u32(&mut h, be, 0); // sigfigs
                put_u32(&mut h, be, MAX_FRAME_LEN);
                put_u32(&mut h, be, u32::from(LINKTYPE_ETHERNET));
            }
            Format::PcapNg { big_endian, nanos } => {
                let be = big_endian;
                for v in [PCAPNG_SHB, 28, PCAPNG_BYTE_ORDER] {
                    put_u32(&mut h, be, v);
                }
                put_u16(&mut h, be, 1);
                put_u16(&mut h, be, 0);
                h.extend_from_slice(&[0xff; 8]); // section length: unknown
                put_u32(&mut h, be, 28);
                let idb_len = if nanos { 32 } else { 20 };
                put_u32(&mut h, be, PCAPNG_IDB);
                put_u32(&mut h, be, idb_len);
                put_u16(&mut h, be, LINKTYPE_ETHERNET);
                put_u16(&mut h, be, 0);
                put_u32(&mut h, be, 0); // snaplen: none
                if nanos {
                    put_u16(&mut h, be, PCAPNG_OPT_TSRESOL);
                    put_u16(&mut h, be, 1);
                    h.extend_from_slice(&[9, 0, 0, 0]);
                    put_u32(&mut h, be, 0); // opt_endofopt
                }
                put_u32(&mut h, be, idb_len);
            }
        }
        out.write_all(&h)?;
        Ok(CaptureWriter {
            out,
            format,
            block: h,
        })
    }

    /// Appends one frame captured at `time` whose length on the wire was `orig_len`.
    /// Timestamps past the year 2106 cannot be written to a classic pcap (an error).
    pub fn write_frame(&mut self, time: Time, data: &[u8], orig_len: u32) -> io::Result<()> {
        let caplen = u32::try_from(data.len())
            .ok()
            .filter(|&l| l <= MAX_FRAME_LEN)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a frame of {} bytes is too long to write", data.len()),
                )
            })?;
        let b = &mut self.block;
        b.clear();
        match self.format {
            Format::Pcap { big_endian, nanos } => {
                let secs = u32::try_from(time.0 / 1_000_000_000).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "timestamp beyond what a pcap file can hold",
                    )
                })?;
                let ns = (time.0 % 1_000_000_000) as u32;
                put_u32(b, big_endian, secs);
                put_u32(b, big_endian, if nanos { ns } else { ns / 1000 });
                put_u32(b, big_endian, caplen);
                put_u32(b, big_endian, orig_len);
                b.extend_from_slice(data);
            }
            Format::PcapNg { big_endian, nanos } => {
                let ts = if nanos { time.0 } else { time.0 / 1000 };
                let len = 32 + caplen.div_ceil(4) * 4;
                for v in [PCAPNG_EPB, len, 0, (ts >> 32) as u32, ts as u32, caplen] {
                    put_u32(b, big_endian, v);
                }
                put_u32(b, big_endian, orig_len);
                b.extend_from_slice(data);
                b.resize(len as usize - 4, 0);
                put_u32(b, big_endian, len);
            }
        }
        self.out.write_all(b)
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_FORMATS: [Format; 8] = [
        Format::Pcap {
            big_endian: false,
            nanos: false,
        },
        Format::Pcap {
            big_endian: true,
            nanos: false,
        },
        Format::Pcap {
            big_endian: false,
            nanos: true,
        },
        Format::Pcap {
            big_endian: true,
            nanos: true,
        },
        Format::PcapNg {
            big_endian: false,
            nanos: false,
        },
        Format::PcapNg {
            big_endian: true,
            nanos: false,
        },
        Format::PcapNg {
            big_endian: false,
            nanos: true,
        },
        Format::PcapNg {
            big_endian: true,
            nanos: true,
        },
    ];

    fn frames() -> Vec<(Time, Vec<u8>)> {
        (0..5u8)
            .map(|i| {
                let t = Time(1_700_000_000_123_456_789 + u64::from(i) * 1_000_001_001);
                (t, (0..(14 + i * 7)).map(|b| b ^ i).collect())
            })
            .collect()
    }

    fn write(format: Format) -> Vec<u8> {
        let mut w = CaptureWriter::new(Vec::new(), format).unwrap();
        for (t, f) in frames() {
            w.write_frame(t, &f, f.len() as u32 + 4).unwrap();
        }
        w.finish().unwrap()
    }

    type Frames = Vec<(Time, Vec<u8>, u32)>;

    fn read_with_format(bytes: &[u8]) -> Result<(Frames, Format), CaptureError> {
        let mut r = CaptureReader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(f) = r.next_frame()? {
            out.push((f.time, f.data.to_vec(), f.orig_len));
        }
        assert_eq!(r.offset(), bytes.len() as u64);
        Ok((out, r.format()))
    }

    fn read_all(bytes: &[u8]) -> Result<Frames, CaptureError> {
        read_with_format(bytes).map(|r| r.0)
    }

    #[test]
    fn every_format_round_trips() {
        for format in ALL_FORMATS {
            let bytes = write(format);
            let (got, read_format) = read_with_format(&bytes).unwrap();
            assert_eq!(read_format, format);
            assert_eq!(got.len(), 5);
            for ((t, f), (gt, gf, orig)) in frames().iter().zip(&got) {
                let want = if format.nanos() {
                    t.0
                } else {
                    t.0 / 1000 * 1000
                };
                assert_eq!(gt.0, want, "{format:?}");
                assert_eq!(gf, f);
                assert_eq!(*orig as usize, f.len() + 4);
            }
        }
    }

    #[test]
    fn big_endian_files_are_really_big_endian() {
        let be = write(Format::Pcap {
            big_endian: true,
            nanos: false,
        });
        assert_eq!(be[..4], [0xa1, 0xb2, 0xc3, 0xd4]);
        let le = write(Format::Pcap {
            big_endian: false,
            nanos: true,
        });
        assert_eq!(le[..4], [0x4d, 0x3c, 0xb2, 0xa1]);
        let ng = write(Format::PcapNg {
            big_endian: true,
            nanos: false,
        });
        assert_eq!(ng[8..12], [0x1a, 0x2b, 0x3c, 0x4d]);
    }

    #[test]
    fn every_cut_is_an_error_or_a_prefix() {
        for format in ALL_FORMATS {
            let bytes = write(format);
            let whole = read_all(&bytes).unwrap();
            for cut in 0..bytes.len() {
                match read_all(&bytes[..cut]) {
                    Ok(got) => {
                        // Only at a record boundary, with the frames before it.
                        assert_eq!(got[..], whole[..got.len()], "{format:?} cut {cut}");
                    }
                    Err(e) => {
                        assert!(e.offset <= cut as u64, "{format:?} cut {cut}: {e}");
                        assert!(
                            matches!(e.kind, ErrorKind::Truncated | ErrorKind::NotACapture),
                            "{format:?} cut {cut}: {e}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn truncation_names_the_record() {
        let bytes = write(Format::Pcap {
            big_endian: false,
            nanos: false,
        });
        // Record 0 starts at 24 and holds 16 + 14 bytes; record 1 starts at 54.
        let mut r = CaptureReader::new(&bytes[..60]).unwrap();
        assert!(r.next_frame().unwrap().is_some());
        let e = r.next_frame().unwrap_err();
        assert_eq!((e.offset, e.kind), (54, ErrorKind::Truncated));
        assert_eq!(
            e.to_string(),
            "at byte 54: truncated packet record header: 16 bytes needed, the file ends after 6"
        );
    }

    #[test]
    fn not_a_capture() {
        let e = CaptureReader::new(&b"{\"t\": 0}\n"[..]).unwrap_err();
        assert_eq!((e.offset, e.kind), (0, ErrorKind::NotACapture));
        assert!(e.message.contains("7b 22 74 22"), "{e}");
        let e = CaptureReader::new(&b""[..]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotACapture);
    }

    #[test]
    fn absurd_lengths_are_refused_before_allocating() {
        let mut bytes = write(Format::Pcap {
            big_endian: false,
            nanos: false,
        });
        bytes[24 + 8..24 + 12].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        let mut r = CaptureReader::new(&bytes[..]).unwrap();
        let e = r.next_frame().unwrap_err();
        assert_eq!((e.offset, e.kind), (24, ErrorKind::Invalid));
        let mut ng = write(Format::PcapNg {
            big_endian: false,
            nanos: false,
        });
        // The first EPB follows the 28-byte SHB and the 20-byte IDB.
        ng[52..56].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        let mut r = CaptureReader::new(&ng[..]).unwrap();
        let e = r.next_frame().unwrap_err();
        assert_eq!((e.offset, e.kind), (48, ErrorKind::Invalid));
    }

    #[test]
    fn non_ethernet_is_refused() {
        let mut bytes = write(Format::Pcap {
            big_endian: false,
            nanos: false,
        });
        bytes[20] = 101; // LINKTYPE_RAW
        let e = CaptureReader::new(&bytes[..]).unwrap_err();
        assert!(e.message.contains("link type 101"), "{e}");
        let mut ng = write(Format::PcapNg {
            big_endian: false,
            nanos: false,
        });
        ng[36] = 101;
        let mut r = CaptureReader::new(&ng[..]).unwrap();
        let e = r.next_frame().unwrap_err();
        assert!(e.message.contains("link type 101"), "{e}");
    }

    /// A pcapng file by hand: a skipped block, an IDB with a binary resolution and an offset,
    /// a Simple Packet Block, then a second section in the other byte order.
    #[test]
    fn pcapng_blocks_by_hand() {
        let mut b = Vec::new();
        let le = false;
        for v in [PCAPNG_SHB, 28, PCAPNG_BYTE_ORDER, 1, u32::MAX, u32::MAX, 28] {
            put_u32(&mut b, le, v);
        }
        // A Name Resolution Block (type 4) of 16 bytes: skipped.
        for v in [4, 16, 0, 16] {
            put_u32(&mut b, le, v);
        }
        // IDB: Ethernet, snaplen 8, tsresol 2^-10, tsoffset 100 s.
        for v in [PCAPNG_IDB, 44, 1, 8] {
            put_u32(&mut b, le, v);
        }
        put_u16(&mut b, le, PCAPNG_OPT_TSRESOL);
        put_u16(&mut b, le, 1);
        b.extend_from_slice(&[0x8a, 0, 0, 0]);
        put_u16(&mut b, le, PCAPNG_OPT_TSOFFSET);
        put_u16(&mut b, le, 8);
        b.extend_from_slice(&100u64.to_le_bytes());
        put_u32(&mut b, le, 0);
        put_u32(&mut b, le, 44);
        // EPB at 1536/1024 s.
        for v in [PCAPNG_EPB, 36, 0, 0, 1536, 4, 4] {
            put_u32(&mut b, le, v);
        }
        b.extend_from_slice(&[1, 2, 3, 4]);
        put_u32(&mut b, le, 36);
        // SPB of a 10-byte packet, cut at the snapshot length 8.
        for v in [PCAPNG_SPB, 24, 10] {
            put_u32(&mut b, le, v);
        }
        b.extend_from_slice(&[9; 8]);
        put_u32(&mut b, le, 24);
        // A second, big-endian section with a nanosecond interface.
        b.extend(write(Format::PcapNg {
            big_endian: true,
            nanos: true,
        }));
        let got = read_all(&b).unwrap();
        assert_eq!(got.len(), 2 + 5);
        assert_eq!(got[0], (Time(101_500_000_000), vec![1, 2, 3, 4], 4));
        assert_eq!(got[1], (Time(101_500_000_000), vec![9; 8], 10));
        assert_eq!(got[2].0, frames()[0].0);
        // An SPB before any interface is an error naming its block.
        let spb_at = 28 + 16;
        let mut bad = b[..spb_at].to_vec();
        bad.extend_from_slice(&b[spb_at + 44 + 36..spb_at + 44 + 36 + 24]);
        let e = read_all(&bad).unwrap_err();
        assert_eq!((e.offset, e.kind), (spb_at as u64, ErrorKind::Invalid));
        assert!(e.message.contains("interface 0"), "{e}");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid = [
            write(Format::Pcap {
                big_endian: false,
                nanos: false,
            }),
            write(Format::PcapNg {
                big_endian: true,
                nanos: true,
            }),
        ];
        for i in 0..4000 {
            let mut bytes = valid[i % 2].clone();
            if i % 4 < 2 {
                // Flip a few bytes of a valid file.
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
            } else {
                // Keep the magic, randomise the rest.
                let n = 12 + (next() % 300) as usize;
                bytes.resize(n, 0);
                for b in &mut bytes[12..] {
                    *b = next() as u8;
                }
            }
            if let Ok(mut r) = CaptureReader::new(&bytes[..]) {
                while let Ok(Some(f)) = r.next_frame() {
                    assert!(f.data.len() <= MAX_FRAME_LEN as usize);
                }
                assert!(r.offset() <= bytes.len() as u64);
            }
        }
    }
}
