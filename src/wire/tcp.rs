//! TCP headers (RFC 9293).

use core::fmt;

use super::{Error, Result, be16, be32, put16};

/// Length of a TCP header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// The TCP flags byte (CWR ECE URG ACK PSH RST SYN FIN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronise sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push function.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// The acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// The urgent pointer is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN echo.
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x80);
    /// No flag.
    pub const EMPTY: TcpFlags = TcpFlags(0);

    /// The raw byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set.
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

/// The letters of SPEC §7 (`F S R P A U`, then `E C` for ECE and CWR), in bit order.
impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in "FSRPAUEC".chars().enumerate() {
            if self.0 & (1 << i) != 0 {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

view!(
    /// A read/write view of a TCP segment.
    TcpPacket
);

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Checks that 20 bytes are present ([`Error::Truncated`]), that the data offset is at
    /// least 5 ([`Error::BadTcpOffset`]) and that the options fit ([`Error::Truncated`]).
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        let Some(h) = b.first_chunk::<MIN_HEADER_LEN>() else {
            return Err(Error::Truncated);
        };
        let header_len = usize::from(h[12] >> 4) * 4;
        if header_len < MIN_HEADER_LEN {
            return Err(Error::BadTcpOffset);
        }
        if header_len > b.len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// The sequence number.
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }

    /// The acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), 8)
    }

    /// The header length in bytes (data offset × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[12] >> 4) * 4
    }

    /// The flags byte.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[13])
    }

    /// The window size.
    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), 14)
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 16)
    }

    /// The urgent pointer.
    pub fn urgent(&self) -> u16 {
        be16(self.buffer.as_ref(), 18)
    }

    /// The options bytes.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// The payload (everything after the header).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        put16(self.buffer.as_mut(), 16, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 40000 → 443, seq 1, ack 2, data offset 6 (an MSS option), SYN|ACK, window 65535,
    /// then 3 payload bytes.
    static SEGMENT: [u8; 27] = [
        0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 2, 0x60, 0x12, 0xff, 0xff, 0x12, 0x34, 0,
        7, //
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
        b'a', b'b', b'c',
    ];

    #[test]
    fn fields() {
        let mut buf = SEGMENT;
        let mut t = TcpPacket::new_checked(&mut buf[..]).unwrap();
        assert_eq!(t.src_port(), 40000);
        assert_eq!(t.dst_port(), 443);
        assert_eq!(t.seq_number(), 1);
        assert_eq!(t.ack_number(), 2);
        assert_eq!(t.header_len(), 24);
        assert_eq!(t.flags(), TcpFlags::SYN | TcpFlags::ACK);
        assert_eq!(t.window(), 65535);
        assert_eq!(t.checksum(), 0x1234);
        assert_eq!(t.urgent(), 7);
        assert_eq!(t.options(), &[2, 4, 5, 0xb4]);
        assert_eq!(t.payload(), b"abc");
        t.set_checksum(0xbeef);
        assert_eq!(t.checksum(), 0xbeef);
    }

    #[test]
    fn malformed() {
        for n in 0..24 {
            assert_eq!(
                TcpPacket::new_checked(&SEGMENT[..n]).unwrap_err(),
                Error::Truncated,
                "{n}"
            );
        }
        for off in 0..5 {
            let mut b = SEGMENT;
            b[12] = off << 4;
            assert_eq!(
                TcpPacket::new_checked(&b[..]).unwrap_err(),
                Error::BadTcpOffset
            );
        }
        let mut b = SEGMENT;
        b[12] = 0xf0; // 60 bytes of header in a 27-byte buffer
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn flags() {
        let f = TcpFlags::SYN | TcpFlags::ACK;
        assert!(f.contains(TcpFlags::SYN) && !f.contains(TcpFlags::SYN | TcpFlags::FIN));
        assert!(f.intersects(TcpFlags::SYN | TcpFlags::FIN));
        assert!(!TcpFlags::EMPTY.intersects(TcpFlags::RST));
        assert_eq!(f.to_string(), "SA");
        assert_eq!(TcpFlags(0xff).to_string(), "FSRPAUEC");
        assert_eq!(TcpFlags::EMPTY.to_string(), "");
        assert_eq!(TcpFlags(0x29).bits(), 0x29);
    }
}
