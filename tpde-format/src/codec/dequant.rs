//! Quantized bases (spec §6.4): integer codes and F32 scales predict an F32
//! target as `f32(q) × scale` — "ship the int8 model, then the residual to
//! full precision".
//!
//! The product is one IEEE binary32 multiplication, rounded to nearest even,
//! with subnormals kept: exactly what `f32 * f32` is in Rust (no fused
//! operations, no flush to zero) and what `__fmul_rn` is on a GPU. Only NaN
//! results differ between platforms (which payload survives), so every NaN
//! result is replaced by the canonical quiet NaN `0x7fc00000`: the predictor
//! is then the same bits on every reader. (The combine step is exact
//! whatever the predictor; it only has to be reproducible.)

use std::ops::Range;

use crate::format::{Dtype, ScaleAxis};

/// The predictor of every NaN product.
pub const CANONICAL_NAN: u32 = 0x7fc0_0000;

/// How many scales a target of `shape` needs along `axis` (`None` when the
/// axis needs a dimension the shape lacks, or on overflow).
pub fn scale_count(shape: &[u64], axis: ScaleAxis) -> Option<u64> {
    match axis {
        ScaleAxis::Tensor => Some(1),
        ScaleAxis::Rows => shape.first().copied(),
        ScaleAxis::Columns => shape
            .get(1..)?
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d)),
    }
}

/// Checks a quantized base against its target (spec §6.4.1).
pub fn check(
    target: (Dtype, &[u64]),
    q: (Dtype, &[u64]),
    scale: (Dtype, &[u64]),
    axis: ScaleAxis,
) -> Result<(), &'static str> {
    if target.0 != Dtype::F32 {
        return Err("a quantized base predicts only an F32 tensor");
    }
    if !matches!(q.0, Dtype::I8 | Dtype::U8) {
        return Err("quantized codes must be I8 or U8");
    }
    if q.1 != target.1 {
        return Err("quantized codes differ from the tensor in shape");
    }
    if scale.0 != Dtype::F32 {
        return Err("quantization scales must be F32");
    }
    let have = scale.1.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    match (have, scale_count(target.1, axis)) {
        (Some(h), Some(w)) if h == w => Ok(()),
        _ => Err("scale count does not fit the tensor's shape along the scale axis"),
    }
}

/// The scales elements `range` of a target with `row_elems` elements per
/// row use: indices `[lo, hi)` of the scale tensor.
pub fn scale_range(axis: ScaleAxis, row_elems: u64, range: Range<u64>) -> Range<u64> {
    if range.is_empty() {
        return 0..0;
    }
    if axis == ScaleAxis::Tensor {
        return 0..1; // also for a 0-d tensor, which has no rows
    }
    if row_elems == 0 {
        return 0..0; // an empty tensor: no elements, no scales
    }
    let (first, last) = (range.start, range.end - 1);
    match axis {
        ScaleAxis::Tensor => 0..1,
        ScaleAxis::Rows => first / row_elems..last / row_elems + 1,
        ScaleAxis::Columns if first / row_elems == last / row_elems => {
            first % row_elems..last % row_elems + 1
        }
        ScaleAxis::Columns => 0..row_elems,
    }
}

/// One predicted element's bits: `f32(q) × scale`, NaN made canonical.
#[inline]
pub fn dequant(q: u8, signed: bool, scale: f32) -> u32 {
    let x = if signed {
        f32::from(q as i8)
    } else {
        f32::from(q)
    };
    let v = x * scale;
    if v.is_nan() {
        CANONICAL_NAN
    } else {
        v.to_bits()
    }
}

/// Fills `out` (little-endian F32) with the predictor of target elements
/// `start .. start + q.len()`, from their codes `q` and the scales
/// `scales` (little-endian F32) whose first is scale index `scale_lo`
/// (as [`scale_range`] gives).
// Plain values, not a struct: the GPU crate's CPU reference calls this with
// fields of its own job descriptors.
#[allow(clippy::too_many_arguments)]
pub fn predict(
    q: &[u8],
    signed: bool,
    scales: &[u8],
    scale_lo: u64,
    axis: ScaleAxis,
    row_elems: u64,
    start: u64,
    out: &mut [u8],
) {
    let scale = |k: u64| {
        let at = ((k - scale_lo) * 4) as usize;
        f32::from_le_bytes([scales[at], scales[at + 1], scales[at + 2], scales[at + 3]])
    };
    // Element by element, the scale index cost a 64-bit division and the
    // loop could not vectorize (a quarter of decoding MiniLM against its
    // int8 release): instead, runs of elements that share a scale (a
    // tensor, a row), or rows whose scales are consecutive (columns).
    let n = q.len();
    if n == 0 {
        return; // no elements, maybe no scales
    }
    let row = row_elems.max(1); // 0 only for an empty tensor: n = 0
    let mut i = 0usize;
    match axis {
        ScaleAxis::Tensor => fill(q, signed, scale(0), out),
        ScaleAxis::Rows => {
            let (mut r, mut off) = (start / row, start % row);
            while i < n {
                let len = (row - off).min((n - i) as u64) as usize;
                fill(
                    &q[i..i + len],
                    signed,
                    scale(r),
                    &mut out[4 * i..4 * (i + len)],
                );
                (i, r, off) = (i + len, r + 1, 0);
            }
        }
        ScaleAxis::Columns => {
            let mut k = start % row;
            while i < n {
                let len = (row - k).min((n - i) as u64) as usize;
                let at = ((k - scale_lo) * 4) as usize;
                let s = &scales[at..at + 4 * len];
                let o = &mut out[4 * i..4 * (i + len)];
                for ((o, &c), s) in o
                    .chunks_exact_mut(4)
                    .zip(&q[i..i + len])
                    .zip(s.chunks_exact(4))
                {
                    let s = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                    o.copy_from_slice(&dequant(c, signed, s).to_le_bytes());
                }
                (i, k) = (i + len, 0);
            }
        }
    }
}

/// `out` = the predictor of codes `q` that share the scale `s`; one loop
/// per signedness, so each vectorizes.
fn fill(q: &[u8], signed: bool, s: f32, out: &mut [u8]) {
    let each = |signed: bool, out: &mut [u8]| {
        for (o, &c) in out.chunks_exact_mut(4).zip(q) {
            o.copy_from_slice(&dequant(c, signed, s).to_le_bytes());
        }
    };
    if signed {
        each(true, out)
    } else {
        each(false, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_are_ieee_binary32_and_nans_canonical() {
        assert_eq!(dequant(0x80, true, 0.5), (-64.0f32).to_bits());
        assert_eq!(dequant(0x80, false, 0.5), 64.0f32.to_bits());
        assert_eq!(dequant(0, true, -1.0), (-0.0f32).to_bits());
        assert_eq!(dequant(3, true, f32::from_bits(1)), 3); // subnormal kept
        assert_eq!(dequant(127, true, f32::MAX), f32::INFINITY.to_bits());
        assert_eq!(dequant(0, true, f32::INFINITY), CANONICAL_NAN);
        assert_eq!(dequant(1, true, f32::from_bits(0xffc1_2345)), CANONICAL_NAN);
        assert_eq!(dequant(1, true, f32::from_bits(0x7f80_0001)), CANONICAL_NAN);
        // Rounded to nearest even: 3 × (1 + 2^-23) = 3 + 1.5 ulp (ulp 2^-22
        // in [2, 4)), a tie between mantissas ...001 and ...002: the even one.
        let s = f32::from_bits(0x3f80_0001);
        assert_eq!(dequant(3, true, s), 0x4040_0002);
    }

    /// The run-wise loops against the definition, element by element, on
    /// every axis, signedness and a range of starts and lengths that begin
    /// and end mid-row.
    #[test]
    fn predict_is_the_elementwise_definition() {
        let (rows, row_elems) = (7u64, 5u64);
        let n = (rows * row_elems) as usize;
        let q: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
        for axis in [ScaleAxis::Tensor, ScaleAxis::Rows, ScaleAxis::Columns] {
            let count = scale_count(&[rows, row_elems], axis).unwrap();
            let all: Vec<u8> = (0..count)
                .flat_map(|k| (0.5f32 + k as f32 * 0.37).to_le_bytes())
                .collect();
            for signed in [false, true] {
                for start in 0..n {
                    for end in start..=n {
                        let r = scale_range(axis, row_elems, start as u64..end as u64);
                        let scales = &all[(r.start * 4) as usize..(r.end * 4) as usize];
                        let mut out = vec![0u8; 4 * (end - start)];
                        let codes = &q[start..end];
                        predict(
                            codes,
                            signed,
                            scales,
                            r.start,
                            axis,
                            row_elems,
                            start as u64,
                            &mut out,
                        );
                        for (i, o) in out.chunks_exact(4).enumerate() {
                            let e = (start + i) as u64;
                            let k = match axis {
                                ScaleAxis::Tensor => 0,
                                ScaleAxis::Rows => e / row_elems,
                                ScaleAxis::Columns => e % row_elems,
                            } as usize;
                            let s = f32::from_le_bytes(all[4 * k..4 * k + 4].try_into().unwrap());
                            let want = dequant(q[e as usize], signed, s);
                            assert_eq!(
                                o,
                                want.to_le_bytes(),
                                "{axis:?} {signed} {start}..{end} at {e}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn scale_ranges_and_counts_follow_the_axis() {
        assert_eq!(scale_count(&[4, 3], ScaleAxis::Rows), Some(4));
        assert_eq!(scale_count(&[4, 3, 2], ScaleAxis::Columns), Some(6));
        assert_eq!(scale_count(&[], ScaleAxis::Columns), None);
        assert_eq!(scale_count(&[], ScaleAxis::Tensor), Some(1));
        assert_eq!(scale_range(ScaleAxis::Rows, 3, 2..7), 0..3);
        assert_eq!(scale_range(ScaleAxis::Columns, 3, 4..6), 1..3);
        assert_eq!(scale_range(ScaleAxis::Columns, 3, 2..4), 0..3);
        assert_eq!(scale_range(ScaleAxis::Tensor, 3, 5..9), 0..1);
        assert_eq!(scale_range(ScaleAxis::Rows, 3, 5..5), 0..0);
    }

    #[test]
    fn predict_picks_each_elements_scale() {
        // A [2, 3] tensor, codes 1..=6, per-row scales 1 and 10, then
        // per-column scales 1, 2, 3; elements 1..5 only.
        let q = [1u8, 2, 3, 4, 5, 6];
        let f = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let mut out = vec![0u8; 16];
        predict(
            &q[1..5],
            true,
            &f(&[1.0, 10.0]),
            0,
            ScaleAxis::Rows,
            3,
            1,
            &mut out,
        );
        assert_eq!(out, f(&[2.0, 3.0, 40.0, 50.0]));
        predict(
            &q[1..5],
            true,
            &f(&[1.0, 2.0, 3.0]),
            0,
            ScaleAxis::Columns,
            3,
            1,
            &mut out,
        );
        assert_eq!(out, f(&[4.0, 9.0, 4.0, 10.0]));
        // Scales handed over from index 1 on.
        let mut out = vec![0u8; 8];
        predict(
            &q[4..6],
            true,
            &f(&[2.0, 3.0]),
            1,
            ScaleAxis::Columns,
            3,
            4,
            &mut out,
        );
        assert_eq!(out, f(&[10.0, 18.0]));
    }
}
