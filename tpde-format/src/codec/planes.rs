//! Byte planes (spec §5.4): the most-significant byte of every element, then
//! the next byte, ... then the least-significant. Float exponents and high
//! mantissa bits land together, which zstd compresses far better than
//! interleaved bytes (17–19% on real fp32/bf16 weights).

/// Appends the byte planes of `natural` (little-endian elements of `width`
/// bytes) to `out`. `natural.len()` must be a multiple of `width`.
pub fn to_planes(natural: &[u8], width: usize, out: &mut Vec<u8>) {
    let n = natural.len() / width;
    let start = out.len();
    out.resize(start + n * width, 0);
    let dst = &mut out[start..];
    if width == 1 {
        dst.copy_from_slice(natural);
        return;
    }
    for (k, plane) in dst.chunks_exact_mut(n.max(1)).enumerate().take(width) {
        let byte = width - 1 - k;
        for (d, e) in plane.iter_mut().zip(natural.chunks_exact(width)) {
            *d = e[byte];
        }
    }
}

/// Writes the little-endian elements whose byte planes are `planes` into `out`.
/// `planes.len() == out.len()` and both are multiples of `width`.
pub fn from_planes(planes: &[u8], width: usize, out: &mut [u8]) {
    let n = out.len() / width;
    if width == 1 {
        out.copy_from_slice(planes);
        return;
    }
    for (k, plane) in planes.chunks_exact(n.max(1)).enumerate().take(width) {
        let byte = width - 1 - k;
        for (e, &p) in out.chunks_exact_mut(width).zip(plane) {
            e[byte] = p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_put_most_significant_bytes_first() {
        // Two u16 elements 0x0102 and 0x0304, little-endian.
        let natural = [0x02, 0x01, 0x04, 0x03];
        let mut planes = Vec::new();
        to_planes(&natural, 2, &mut planes);
        assert_eq!(planes, [0x01, 0x03, 0x02, 0x04]);
        let mut back = [0u8; 4];
        from_planes(&planes, 2, &mut back);
        assert_eq!(back, natural);
    }

    #[test]
    fn planes_round_trip_every_width() {
        for w in [1usize, 2, 4, 8] {
            let natural: Vec<u8> = (0..w * 37).map(|i| (i * 31 + 7) as u8).collect();
            let mut planes = Vec::new();
            to_planes(&natural, w, &mut planes);
            let mut back = vec![0u8; natural.len()];
            from_planes(&planes, w, &mut back);
            assert_eq!(back, natural, "width {w}");
        }
    }
}
