//! UDP headers (RFC 768).

use super::{Error, Result, be16, put16};

/// Length of a UDP header.
pub const HEADER_LEN: usize = 8;

view!(
    /// A read/write view of a UDP datagram.
    UdpPacket
);

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Checks that the 8-byte header is present ([`Error::Truncated`]) and that the length
    /// field is between 8 and the buffer length ([`Error::BadUdpLength`]).
    ///
    /// The first fragment of a fragmented datagram fails the second check (its length field
    /// covers the whole datagram); [`super::parse`] checks only the header there.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        let Some(h) = b.first_chunk::<HEADER_LEN>() else {
            return Err(Error::Truncated);
        };
        let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        if len < HEADER_LEN || len > b.len() {
            return Err(Error::BadUdpLength);
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

    /// The length field (header and payload).
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// Whether the payload is empty (the length field is 8).
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// The checksum field (0 = none, IPv4 only).
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }

    /// The payload, as long as the length field says (bytes after it are ignored).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        put16(self.buffer.as_mut(), 6, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 5353 → 53, length 11 (3 payload bytes), then one trailing byte.
    static DATAGRAM: [u8; 12] = [
        0x14, 0xe9, 0x00, 0x35, 0x00, 0x0b, 0xab, 0xcd, 1, 2, 3, 0xff,
    ];

    #[test]
    fn fields() {
        let mut buf = DATAGRAM;
        let mut u = UdpPacket::new_checked(&mut buf[..]).unwrap();
        assert_eq!(u.src_port(), 5353);
        assert_eq!(u.dst_port(), 53);
        assert_eq!(u.len(), 11);
        assert!(!u.is_empty());
        assert_eq!(u.checksum(), 0xabcd);
        assert_eq!(u.payload(), &[1, 2, 3]);
        u.set_checksum(0);
        assert_eq!(u.checksum(), 0);
    }

    #[test]
    fn malformed() {
        for n in 0..8 {
            assert_eq!(
                UdpPacket::new_checked(&DATAGRAM[..n]).unwrap_err(),
                Error::Truncated
            );
        }
        assert_eq!(
            UdpPacket::new_checked(&DATAGRAM[..10]).unwrap_err(),
            Error::BadUdpLength
        );
        for len in 0..8 {
            let mut b = DATAGRAM;
            b[5] = len;
            assert_eq!(
                UdpPacket::new_checked(&b[..]).unwrap_err(),
                Error::BadUdpLength
            );
        }
        let mut b = DATAGRAM;
        b[5] = 8;
        assert!(UdpPacket::new_checked(&b[..]).unwrap().is_empty());
    }
}
