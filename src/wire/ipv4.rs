//! IPv4 headers (RFC 791): options are skipped by IHL, fragments are described, not reassembled.

use super::{Error, Result, be16, be32, checksum, put16};

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Offset of the TTL byte in the header.
pub const TTL_OFFSET: usize = 8;
/// Offset of the header checksum in the header.
pub const CHECKSUM_OFFSET: usize = 10;

view!(
    /// A read/write view of an IPv4 packet.
    Ipv4Packet
);

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks, in this order: 20 bytes are present ([`Error::Truncated`]), the version is 4
    /// ([`Error::BadVersion`]), IHL ≥ 5 ([`Error::BadIhl`]), and the header length ≤ the total
    /// length ≤ the buffer length ([`Error::BadTotalLength`]). Bytes after the total length
    /// (link-layer padding) are allowed and ignored.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        let Some(h) = b.first_chunk::<MIN_HEADER_LEN>() else {
            return Err(Error::Truncated);
        };
        if h[0] >> 4 != 4 {
            return Err(Error::BadVersion);
        }
        let header_len = usize::from(h[0] & 0x0f) * 4;
        if header_len < MIN_HEADER_LEN {
            return Err(Error::BadIhl);
        }
        let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if total < header_len || total > b.len() {
            return Err(Error::BadTotalLength);
        }
        Ok(())
    }

    /// The version field (4 in a checked packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// The header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[0] & 0x0f) * 4
    }

    /// The DSCP/ECN byte (formerly type of service).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// The total length of the datagram (header and payload).
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// The Don't Fragment flag.
    pub fn dont_fragment(&self) -> bool {
        self.buffer.as_ref()[6] & 0x40 != 0
    }

    /// The More Fragments flag.
    pub fn more_fragments(&self) -> bool {
        self.buffer.as_ref()[6] & 0x20 != 0
    }

    /// The fragment offset in units of 8 bytes.
    pub fn frag_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), 6) & 0x1fff
    }

    /// The time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[TTL_OFFSET]
    }

    /// The upper-layer protocol number.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[9]
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), CHECKSUM_OFFSET)
    }

    /// The source address as an integer.
    pub fn src_addr(&self) -> u32 {
        be32(self.buffer.as_ref(), 12)
    }

    /// The destination address as an integer.
    pub fn dst_addr(&self) -> u32 {
        be32(self.buffer.as_ref(), 16)
    }

    /// The options bytes (between the fixed header and IHL × 4).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// The payload: from the end of the header to the total length (padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }

    /// Whether the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::of(&self.buffer.as_ref()[..self.header_len()]) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the TTL (the checksum is not updated; see [`super::decrement_ttl`]).
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[TTL_OFFSET] = ttl;
    }

    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        put16(self.buffer.as_mut(), CHECKSUM_OFFSET, value);
    }

    /// Computes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let len = self.header_len();
        let c = checksum::of(&self.buffer.as_ref()[..len]);
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10.0.0.1 → 10.0.0.2, TCP, with 4 bytes of options (NOP NOP NOP EOL), id 0x1234, DF,
    /// total length 28 (a 4-byte payload), then 2 bytes of link padding.
    static WITH_OPTIONS: [u8; 30] = [
        0x46, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, // .. checksum
        10, 0, 0, 1, 10, 0, 0, 2, // addresses
        0x01, 0x01, 0x01, 0x00, // options
        0xde, 0xad, 0xbe, 0xef, // payload
        0x00, 0x00, // padding
    ];

    /// A non-first fragment: MF set, offset 185 (1480 bytes), UDP.
    static FRAGMENT: [u8; 24] = [
        0x45, 0x00, 0x00, 0x18, 0xab, 0xcd, 0x20, 0xb9, 0x01, 0x11, 0x00, 0x00, //
        192, 168, 1, 1, 192, 168, 1, 2, //
        1, 2, 3, 4,
    ];

    #[test]
    fn options_and_padding() {
        let mut buf = WITH_OPTIONS;
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.tos(), 0);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_fragment() && !p.more_fragments());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 6);
        assert_eq!(p.src_addr(), 0x0a00_0001);
        assert_eq!(p.dst_addr(), 0x0a00_0002);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_ne!(p.checksum(), 0);
        p.set_ttl(1);
        assert!(!p.verify_checksum());
    }

    #[test]
    fn fragment_fields() {
        let p = Ipv4Packet::new_checked(&FRAGMENT[..]).unwrap();
        assert!(p.more_fragments() && !p.dont_fragment());
        assert_eq!(p.frag_offset(), 185);
        assert_eq!(p.ident(), 0xabcd);
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
    }

    #[test]
    fn malformed() {
        for n in 0..20 {
            assert_eq!(
                Ipv4Packet::new_checked(&WITH_OPTIONS[..n]).unwrap_err(),
                Error::Truncated
            );
        }
        // Total length 28 but only 27 bytes.
        assert_eq!(
            Ipv4Packet::new_checked(&WITH_OPTIONS[..27]).unwrap_err(),
            Error::BadTotalLength
        );
        for ihl in 0..5 {
            let mut b = WITH_OPTIONS;
            b[0] = 0x40 | ihl;
            assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::BadIhl);
        }
        let mut b = WITH_OPTIONS;
        b[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            Error::BadVersion
        );
        // IHL 15 (60 bytes) beyond total length 28.
        let mut b = WITH_OPTIONS;
        b[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            Error::BadTotalLength
        );
        // Total length below the header length.
        let mut b = WITH_OPTIONS;
        b[3] = 23;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            Error::BadTotalLength
        );
        // Exactly the header, no payload: fine.
        b[3] = 24;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap().payload(),
            &[] as &[u8]
        );
    }
}
