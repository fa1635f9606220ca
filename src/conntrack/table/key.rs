//! Concrete flow keys: zone, protocol, a kind byte, two addresses and two ports, packed without padding.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::pod::Pod;

macro_rules! flow_key {
    ($(#[$doc:meta])* $name:ident, $addr:ty, $bytes:literal, $size:literal) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name {
            zone: u32,
            proto: u8,
            kind: u8,
            local_port: u16,
            remote_port: u16,
            local: [u8; $bytes],
            remote: [u8; $bytes],
            /// Explicit padding to the `u32` alignment, always zero, so that the type has no padding bytes.
            reserved: u16,
        }

        impl $name {
            /// Size of the key in bytes (no padding: every byte takes part in hashing and equality).
            pub const SIZE: usize = $size;

            /// A key. `kind` is a byte the caller defines (e.g. 5-tuple, ICMP query, other protocol);
            /// `local_port` carries the ICMP identifier for ICMP query flows; unused fields are zero.
            #[allow(clippy::too_many_arguments)]
            pub const fn new(
                zone: u32,
                proto: u8,
                kind: u8,
                local: $addr,
                remote: $addr,
                local_port: u16,
                remote_port: u16,
            ) -> Self {
                Self {
                    zone,
                    proto,
                    kind,
                    local_port,
                    remote_port,
                    local: local.octets(),
                    remote: remote.octets(),
                    reserved: 0,
                }
            }

            /// The zone (the table's user decides what it is, e.g. an ENI index).
            pub const fn zone(&self) -> u32 {
                self.zone
            }

            /// The IP protocol number.
            pub const fn proto(&self) -> u8 {
                self.proto
            }

            /// The caller-defined kind byte.
            pub const fn kind(&self) -> u8 {
                self.kind
            }

            /// The local address.
            pub const fn local(&self) -> $addr {
                <$addr>::from_octets(self.local)
            }

            /// The remote address.
            pub const fn remote(&self) -> $addr {
                <$addr>::from_octets(self.remote)
            }

            /// The local port, or the ICMP identifier.
            pub const fn local_port(&self) -> u16 {
                self.local_port
            }

            /// The remote port.
            pub const fn remote_port(&self) -> u16 {
                self.remote_port
            }
        }

        const _: () = assert!(std::mem::size_of::<$name>() == $size);

        // SAFETY: `repr(C)` with fields at offsets 0 (u32), 4, 5 (u8), 6, 8 (u16), 10 and 10 + N (byte
        // arrays of N bytes) and an explicit trailing `u16`, ending at a multiple of 4 (the alignment):
        // there is no padding (the size assertion above checks the arithmetic). All fields are integers,
        // so every bit pattern is a value, and the derived equality compares every field, i.e. every byte.
        unsafe impl Pod for $name {}
    };
}

flow_key!(
    /// An IPv4 flow key: zone (u32), protocol, kind, local and remote address, local port (or ICMP
    /// identifier) and remote port; 20 bytes, 3 words in a slot.
    FlowKeyV4,
    Ipv4Addr,
    4,
    20
);

flow_key!(
    /// An IPv6 flow key: zone (u32), protocol, kind, local and remote address, local port (or ICMP
    /// identifier) and remote port; 44 bytes, 6 words in a slot.
    FlowKeyV6,
    Ipv6Addr,
    16,
    44
);
