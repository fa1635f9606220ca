//! ARP over Ethernet for IPv4 (RFC 826): the only kind the VPC router answers.

use super::ethernet::MacAddr;
use super::{Error, Result, be16, be32, put16, put32};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// The ARP operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// 1: who has `target_ip`?
    Request,
    /// 2: `sender_ip` is at `sender_mac`.
    Reply,
    /// Any other operation code.
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(v: u16) -> Self {
        match v {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            v => ArpOperation::Unknown(v),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(op: ArpOperation) -> u16 {
        match op {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(v) => v,
        }
    }
}

view!(
    /// A read/write view of an ARP packet.
    ArpPacket
);

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Checks that the buffer holds 28 bytes and that the packet is Ethernet/IPv4 ARP
    /// (hardware type 1, protocol type 0x0800, address lengths 6 and 4).
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if be16(b, 0) != 1 || be16(b, 2) != 0x0800 || b[4] != 6 || b[5] != 4 {
            return Err(Error::BadArp);
        }
        Ok(())
    }

    /// The operation.
    pub fn operation(&self) -> ArpOperation {
        be16(self.buffer.as_ref(), 6).into()
    }

    fn mac(&self, at: usize) -> MacAddr {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[at..at + 6]);
        MacAddr(m)
    }

    /// The sender hardware address.
    pub fn sender_mac(&self) -> MacAddr {
        self.mac(8)
    }

    /// The sender protocol address (IPv4, as an integer).
    pub fn sender_ip(&self) -> u32 {
        be32(self.buffer.as_ref(), 14)
    }

    /// The target hardware address.
    pub fn target_mac(&self) -> MacAddr {
        self.mac(18)
    }

    /// The target protocol address (IPv4, as an integer).
    pub fn target_ip(&self) -> u32 {
        be32(self.buffer.as_ref(), 24)
    }
}

/// The fields of an Ethernet/IPv4 ARP packet, parsed or to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    /// Request, reply or other.
    pub operation: ArpOperation,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender IPv4 address.
    pub sender_ip: u32,
    /// Target hardware address (zero in a request).
    pub target_mac: MacAddr,
    /// Target IPv4 address.
    pub target_ip: u32,
}

impl ArpRepr {
    /// Reads the fields of a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> ArpRepr {
        ArpRepr {
            operation: packet.operation(),
            sender_mac: packet.sender_mac(),
            sender_ip: packet.sender_ip(),
            target_mac: packet.target_mac(),
            target_ip: packet.target_ip(),
        }
    }

    /// The reply that the owner of `target_ip` (whose address is `mac`) sends to this request.
    pub fn reply(&self, mac: MacAddr) -> ArpRepr {
        ArpRepr {
            operation: ArpOperation::Reply,
            sender_mac: mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    /// Writes the 28-byte packet at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let b = buf.get_mut(..PACKET_LEN).ok_or(Error::BufferTooSmall)?;
        put16(b, 0, 1);
        put16(b, 2, 0x0800);
        b[4] = 6;
        b[5] = 4;
        put16(b, 6, self.operation.into());
        b[8..14].copy_from_slice(&self.sender_mac.0);
        put32(b, 14, self.sender_ip);
        b[18..24].copy_from_slice(&self.target_mac.0);
        put32(b, 24, self.target_ip);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Who has 10.0.0.1? Tell 10.0.0.10 (02:00:00:00:00:0a).
    static REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype, ptype, hlen, plen, op
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 10, 0, 0, 10, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 1, // target
    ];

    #[test]
    fn parse_request() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        let r = ArpRepr::parse(&p);
        assert_eq!(r.operation, ArpOperation::Request);
        assert_eq!(r.sender_mac, MacAddr([2, 0, 0, 0, 0, 0x0a]));
        assert_eq!(r.sender_ip, 0x0a00_000a);
        assert_eq!(r.target_mac, MacAddr::default());
        assert_eq!(r.target_ip, 0x0a00_0001);
    }

    #[test]
    fn reply_roundtrip() {
        let req = ArpRepr::parse(&ArpPacket::new_checked(&REQUEST[..]).unwrap());
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let rep = req.reply(mac);
        let mut buf = [0u8; 28];
        rep.emit(&mut buf).unwrap();
        assert_eq!(&buf[6..8], &[0, 2]);
        assert_eq!(&buf[8..14], &mac.0);
        assert_eq!(&buf[14..18], &[10, 0, 0, 1]);
        assert_eq!(&buf[18..24], &REQUEST[8..14]);
        assert_eq!(&buf[24..28], &[10, 0, 0, 10]);
        assert_eq!(
            ArpRepr::parse(&ArpPacket::new_checked(&buf[..]).unwrap()),
            rep
        );
        assert_eq!(rep.emit(&mut [0u8; 27]), Err(Error::BufferTooSmall));
    }

    #[test]
    fn malformed() {
        for n in 0..28 {
            assert_eq!(
                ArpPacket::new_checked(&REQUEST[..n]).unwrap_err(),
                Error::Truncated
            );
        }
        for (i, v) in [(1, 6), (2, 0x86), (4, 8), (5, 16)] {
            let mut b = REQUEST;
            b[i] = v;
            assert_eq!(
                ArpPacket::new_checked(&b[..]).unwrap_err(),
                Error::BadArp,
                "byte {i}"
            );
        }
    }

    #[test]
    fn operations() {
        for v in 0..5u16 {
            assert_eq!(u16::from(ArpOperation::from(v)), v);
        }
        assert_eq!(ArpOperation::from(2), ArpOperation::Reply);
        assert_eq!(ArpOperation::from(3), ArpOperation::Unknown(3));
    }
}
