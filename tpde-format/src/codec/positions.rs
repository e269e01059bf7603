//! Gap-encoded positions (spec §5.5): the "position delta encoding" behind
//! the name. Positions are chunk-relative and strictly increasing; each is
//! stored as its gap `p[i] - p[i-1] - 1` (the first as `p[0]`) in unsigned
//! LEB128, so runs of nearby changes cost one byte each.

/// Longest LEB128 encoding of a `u32`.
pub const MAX_VARINT_LEN: usize = 5;

/// Appends the gap encoding of strictly increasing `positions` to `out`.
pub fn encode(positions: &[u32], out: &mut Vec<u8>) {
    let mut next = 0u32; // smallest position the next one may take
    for &p in positions {
        let mut gap = p - next;
        next = p.wrapping_add(1);
        while gap >= 0x80 {
            out.push((gap as u8) | 0x80);
            gap >>= 7;
        }
        out.push(gap as u8);
    }
}

/// Decodes exactly `count` positions from `bytes`, each `< limit`, into `out`
/// (cleared first). Fails unless every byte is consumed (spec §5.5).
pub fn decode(
    bytes: &[u8],
    count: usize,
    limit: u64,
    out: &mut Vec<u32>,
) -> Result<(), &'static str> {
    out.clear();
    // `count` was checked against the chunk's element count by the caller,
    // so this reservation is bounded by the chunk size.
    out.reserve_exact(count);
    let mut it = bytes.iter();
    let mut next: u64 = 0;
    for _ in 0..count {
        let mut gap: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&b) = it.next() else {
                return Err("positions stream ends early");
            };
            if shift >= 7 * MAX_VARINT_LEN as u32 {
                return Err("position varint longer than 5 bytes");
            }
            gap |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let p = next + gap; // both < 2^36: no overflow
        if p >= limit {
            return Err("position past the end of the chunk");
        }
        out.push(p as u32); // p < limit <= u32::MAX + 1
        next = p + 1;
    }
    if it.next().is_some() {
        return Err("trailing bytes after the last position");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_positions_cost_one_byte_each() {
        let mut out = Vec::new();
        encode(&[0, 1, 2, 3], &mut out);
        assert_eq!(out, [0, 0, 0, 0]);
    }

    #[test]
    fn gaps_use_leb128() {
        let mut out = Vec::new();
        encode(&[5, 300], &mut out);
        // 5, then gap 300-5-1 = 294 = 0b1_0010_0110 -> 0xa6 0x02
        assert_eq!(out, [5, 0xa6, 0x02]);
        let mut back = Vec::new();
        decode(&out, 2, 301, &mut back).unwrap();
        assert_eq!(back, [5, 300]);
    }

    #[test]
    fn decode_rejects_out_of_range_and_trailing_and_long_varints() {
        let mut v = Vec::new();
        assert!(decode(&[5], 1, 5, &mut v).is_err());
        assert!(decode(&[1, 1], 1, 10, &mut v).is_err());
        assert!(decode(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01], 1, u64::MAX, &mut v).is_err());
        assert!(decode(&[0x80], 1, 10, &mut v).is_err());
    }
}
