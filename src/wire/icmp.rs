//! ICMP (RFC 792) and ICMPv6 (RFC 4443) headers: both start with type, code, checksum and four
//! bytes whose meaning depends on the type (identifier and sequence number for queries).

use super::{Error, Result, be16, protocol, put16};

/// Length of the ICMP/ICMPv6 header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;

/// ICMP echo reply.
pub const ECHO_REPLY: u8 = 0;
/// ICMP echo request.
pub const ECHO_REQUEST: u8 = 8;
/// ICMP timestamp request.
pub const TIMESTAMP_REQUEST: u8 = 13;
/// ICMP timestamp reply.
pub const TIMESTAMP_REPLY: u8 = 14;
/// Length of an ICMP timestamp request or reply (header and three timestamps).
pub const TIMESTAMP_LEN: usize = 20;
/// ICMP time exceeded.
pub const TIME_EXCEEDED: u8 = 11;
/// ICMPv6 echo request.
pub const V6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply.
pub const V6_ECHO_REPLY: u8 = 129;
/// ICMPv6 time exceeded.
pub const V6_TIME_EXCEEDED: u8 = 3;

/// Whether messages of `ty` under `protocol` (1 = ICMP, 58 = ICMPv6) carry an identifier that
/// conntrack keys on: ICMP echo and timestamp (8/0, 13/14), ICMPv6 echo (128/129).
pub const fn is_query(protocol: u8, ty: u8) -> bool {
    match protocol {
        protocol::ICMP => {
            matches!(
                ty,
                ECHO_REQUEST | ECHO_REPLY | TIMESTAMP_REQUEST | TIMESTAMP_REPLY
            )
        }
        protocol::ICMPV6 => matches!(ty, V6_ECHO_REQUEST | V6_ECHO_REPLY),
        _ => false,
    }
}

view!(
    /// A read/write view of an ICMP or ICMPv6 message.
    IcmpPacket
);

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Checks that the 8-byte header is present ([`Error::Truncated`]).
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// Bytes 4–5: the identifier of a query message.
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// Bytes 6–7: the sequence number of a query message.
    pub fn seq_number(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }

    /// The body after the 8-byte header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        put16(self.buffer.as_mut(), 2, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echo request, id 0x0102, seq 3, payload "hi".
    static ECHO: [u8; 10] = [8, 0, 0xf7, 0xf9, 0x01, 0x02, 0x00, 0x03, b'h', b'i'];

    #[test]
    fn fields() {
        let mut buf = ECHO;
        let mut p = IcmpPacket::new_checked(&mut buf[..]).unwrap();
        assert_eq!(p.msg_type(), ECHO_REQUEST);
        assert_eq!(p.code(), 0);
        assert_eq!(p.checksum(), 0xf7f9);
        assert_eq!(p.ident(), 0x0102);
        assert_eq!(p.seq_number(), 3);
        assert_eq!(p.payload(), b"hi");
        p.set_checksum(0);
        assert_eq!(p.checksum(), 0);
    }

    #[test]
    fn truncated() {
        for n in 0..8 {
            assert_eq!(
                IcmpPacket::new_checked(&ECHO[..n]).unwrap_err(),
                Error::Truncated
            );
        }
        assert!(
            IcmpPacket::new_checked(&ECHO[..8])
                .unwrap()
                .payload()
                .is_empty()
        );
    }

    #[test]
    fn queries() {
        for t in 0..=255u8 {
            assert_eq!(is_query(1, t), [0, 8, 13, 14].contains(&t), "icmp {t}");
            assert_eq!(is_query(58, t), [128, 129].contains(&t), "icmpv6 {t}");
            assert!(!is_query(6, t));
        }
    }
}
