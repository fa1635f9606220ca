//! The Internet checksum (RFC 1071), pseudo-headers and incremental update (RFC 1624).
//!
//! Sums are accumulated in a `u64` of 16-bit big-endian words and folded at the end, so any
//! number of pieces (a pseudo-header, a header, a payload) can be added before [`finish`].

/// Adds the bytes of `data` (as big-endian 16-bit words, an odd last byte padded with zero) to
/// the running sum `acc`.
///
/// Pieces other than the last must have an even length for the words to line up.
#[inline]
pub fn add(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

/// Folds a running sum to 16 bits (ones' complement addition), without complementing it.
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for a running sum: the ones' complement of the folded sum.
#[inline]
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// The checksum of `data` alone (e.g. an IPv4 header or an ICMPv4 message).
#[inline]
pub fn of(data: &[u8]) -> u16 {
    finish(add(0, data))
}

/// The running sum of the IPv4 pseudo-header (source, destination, protocol, upper-layer length).
#[inline]
pub fn pseudo_header_v4(src: u32, dst: u32, protocol: u8, len: u32) -> u64 {
    u64::from(src >> 16)
        + u64::from(src & 0xffff)
        + u64::from(dst >> 16)
        + u64::from(dst & 0xffff)
        + u64::from(protocol)
        + u64::from(len)
}

/// The running sum of the IPv6 pseudo-header (RFC 8200 §8.1).
#[inline]
pub fn pseudo_header_v6(src: u128, dst: u128, next_header: u8, len: u32) -> u64 {
    let mut acc = u64::from(next_header) + u64::from(len >> 16) + u64::from(len & 0xffff);
    for a in [src, dst] {
        for i in 0..4 {
            acc += (a >> (32 * i)) as u32 as u64;
        }
    }
    acc
}

/// Updates a checksum field after one 16-bit word it covers changed from `old` to `new`
/// (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`).
#[inline]
pub fn update(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!checksum) + u64::from(!old) + u64::from(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &data)), 0xddf2);
        assert_eq!(of(&data), !0xddf2);
        // Split into even pieces, the sum is the same.
        assert_eq!(fold(add(add(0, &data[..2]), &data[2..])), 0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(add(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
        assert_eq!(fold(add(0, &[0xab])), 0xab00);
        assert_eq!(fold(add(0, &[])), 0);
    }

    /// A real IPv4 header (from a capture) whose checksum field is 0xb861.
    #[test]
    fn ipv4_header_checksum() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(of(&h), 0, "a correct header sums to zero");
        h[10] = 0;
        h[11] = 0;
        assert_eq!(of(&h), 0xb861);
    }

    #[test]
    fn pseudo_headers_equal_explicit_bytes() {
        let (s4, d4) = (0x0a00_0001u32, 0xc0a8_0102u32);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&s4.to_be_bytes());
        bytes.extend_from_slice(&d4.to_be_bytes());
        bytes.extend_from_slice(&[0, 6, 0x01, 0x2c]);
        assert_eq!(fold(pseudo_header_v4(s4, d4, 6, 300)), fold(add(0, &bytes)));

        let (s6, d6) = (0x2001_0db8_0000_0000_0000_0000_0000_0001u128, u128::MAX - 5);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&s6.to_be_bytes());
        bytes.extend_from_slice(&d6.to_be_bytes());
        bytes.extend_from_slice(&70000u32.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(
            fold(pseudo_header_v6(s6, d6, 58, 70000)),
            fold(add(0, &bytes))
        );
    }

    #[test]
    fn incremental_update_matches_recompute() {
        // Every old/new value of the TTL/protocol word in a fixed header.
        let base = [
            0x45u8, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 0x0a, 0x00,
            0x00, 0x01, 0x0a, 0x00, 0x00, 0x02,
        ];
        for ttl in 1..=255u8 {
            let mut h = base;
            h[8] = ttl;
            let c = of(&h);
            let mut h2 = h;
            h2[8] = ttl - 1;
            let updated = update(
                c,
                u16::from_be_bytes([ttl, 1]),
                u16::from_be_bytes([ttl - 1, 1]),
            );
            assert_eq!(updated, of(&h2), "ttl {ttl}");
        }
    }
}
