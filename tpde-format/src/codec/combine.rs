//! Combine operations on bit patterns (spec §6), and their inverses used by
//! the writer. Elements are unsigned little-endian integers of the dtype's
//! width; no float arithmetic anywhere, so every dtype is exact.

use crate::format::Op;

/// An element word: the unsigned integer of one dtype width.
pub trait Word: Copy + Eq + Default + Send + Sync + 'static {
    /// Bytes per element.
    const WIDTH: usize;
    /// Reads a little-endian element.
    fn load(b: &[u8]) -> Self;
    /// Writes a little-endian element.
    fn store(self, b: &mut [u8]);
    /// Byte `k` (0 = least significant).
    fn byte(self, k: usize) -> u8;
    /// Sets byte `k` of the zero word.
    fn from_byte(b: u8, k: usize) -> Self;
    /// Bitwise or.
    fn or(self, o: Self) -> Self;
    /// `op(base, value)` (spec §6).
    fn combine(op: Op, base: Self, value: Self) -> Self;
    /// The value `v` with `op(base, v) == target`, for the writer.
    fn delta(op: Op, base: Self, target: Self) -> Self;
}

macro_rules! word {
    ($t:ty, $s:ty) => {
        impl Word for $t {
            const WIDTH: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            fn load(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                <$t>::from_le_bytes(a)
            }
            #[inline(always)]
            fn store(self, b: &mut [u8]) {
                b.copy_from_slice(&self.to_le_bytes());
            }
            #[inline(always)]
            fn byte(self, k: usize) -> u8 {
                (self >> (8 * k)) as u8
            }
            #[inline(always)]
            fn from_byte(b: u8, k: usize) -> Self {
                (b as $t) << (8 * k)
            }
            #[inline(always)]
            fn or(self, o: Self) -> Self {
                self | o
            }
            #[inline(always)]
            fn combine(op: Op, base: Self, value: Self) -> Self {
                match op {
                    Op::Xor => base ^ value,
                    Op::Add => base.wrapping_add(value),
                    Op::Replace => value,
                    // unzigzag: (v >> 1) ^ -(v & 1)
                    Op::AddZigzag => base.wrapping_add((value >> 1) ^ (value & 1).wrapping_neg()),
                    Op::ReplaceRot => value.rotate_right(1),
                }
            }
            #[inline(always)]
            fn delta(op: Op, base: Self, target: Self) -> Self {
                match op {
                    Op::Xor => base ^ target,
                    Op::Add => target.wrapping_sub(base),
                    Op::Replace => target,
                    // zigzag: (d << 1) ^ (d >> (bits - 1)), the shift arithmetic
                    Op::AddZigzag => {
                        let d = target.wrapping_sub(base);
                        (d << 1) ^ (((d as $s) >> (<$t>::BITS - 1)) as $t)
                    }
                    Op::ReplaceRot => target.rotate_left(1),
                }
            }
        }
    };
}
word!(u8, i8);
word!(u16, i16);
word!(u32, i32);
word!(u64, i64);

/// Dispatches `$body` with `$W` bound to the word type of `$width`.
#[macro_export]
#[doc(hidden)]
macro_rules! with_word {
    ($width:expr, $W:ident => $body:expr) => {
        match $width {
            1 => {
                type $W = u8;
                $body
            }
            2 => {
                type $W = u16;
                $body
            }
            4 => {
                type $W = u32;
                $body
            }
            _ => {
                type $W = u64;
                $body
            }
        }
    };
}

/// Where a dense apply reads the base.
#[derive(Debug, Clone, Copy)]
pub enum DenseBase<'a> {
    /// `out` holds it on entry (and gets the result in place).
    InPlace,
    /// All-zero bits (a tensor without a base).
    Zero,
    /// These bytes, as long as `out`.
    Bytes(&'a [u8]),
}

/// Dense apply: `out[i] = op(out[i], value[i])` where the values are given as
/// byte planes over `out.len() / W` elements. `out` holds the base on entry.
pub fn apply_dense_planes<W: Word>(op: Op, planes: &[u8], out: &mut [u8]) {
    apply_dense_planes_over::<W>(op, planes, DenseBase::InPlace, out)
}

/// [`apply_dense_planes`] over a base read from `base`: with a base
/// elsewhere (or none), `out` is written once instead of first being filled
/// with the base (a copy or a memset of the whole output: 5–7% of decoding).
pub fn apply_dense_planes_over<W: Word>(
    op: Op,
    planes: &[u8],
    base: DenseBase<'_>,
    out: &mut [u8],
) {
    match W::WIDTH {
        1 => dense_n::<W, 1>(op, planes, base, out),
        2 => dense_n::<W, 2>(op, planes, base, out),
        4 => dense_n::<W, 4>(op, planes, base, out),
        _ => dense_n::<W, 8>(op, planes, base, out),
    }
}

/// [`apply_dense_planes`] for a width known at compile time: the plane slices
/// have a length the optimizer can see, so the gather needs no bounds checks
/// and the op (and where the base is) is hoisted out of the loop.
#[inline(always)]
fn dense_n<W: Word, const N: usize>(op: Op, planes: &[u8], base: DenseBase<'_>, out: &mut [u8]) {
    let n = out.len() / N;
    if planes.len() < n * N || matches!(base, DenseBase::Bytes(b) if b.len() < n * N) {
        return; // lengths are validated by the caller; unreachable on valid input
    }
    let p: [&[u8]; N] = std::array::from_fn(|k| &planes[k * n..(k + 1) * n]);
    let gather = |i: usize| -> W {
        let mut v = W::default();
        for (k, plane) in p.iter().enumerate() {
            v = v.or(W::from_byte(plane[i], N - 1 - k));
        }
        v
    };
    // One loop per (op, base source). Plain `for` loops: with `for_each`
    // the compiler kept the loops as calls to an outlined `fold` that
    // reloaded the plane pointers every element and did not vectorize
    // (4x slower).
    macro_rules! each {
        ($op:expr) => {
            match base {
                DenseBase::InPlace => {
                    for (i, e) in out.chunks_exact_mut(N).enumerate() {
                        W::combine($op, W::load(e), gather(i)).store(e)
                    }
                }
                DenseBase::Zero => {
                    for (i, e) in out.chunks_exact_mut(N).enumerate() {
                        W::combine($op, W::default(), gather(i)).store(e)
                    }
                }
                DenseBase::Bytes(b) => {
                    for (i, (e, x)) in out.chunks_exact_mut(N).zip(b.chunks_exact(N)).enumerate() {
                        W::combine($op, W::load(x), gather(i)).store(e)
                    }
                }
            }
        };
    }
    match op {
        Op::Xor => each!(Op::Xor),
        Op::Add => each!(Op::Add),
        Op::AddZigzag => each!(Op::AddZigzag),
        // The base is not read, wherever it is.
        Op::Replace => {
            for (i, e) in out.chunks_exact_mut(N).enumerate() {
                gather(i).store(e)
            }
        }
        Op::ReplaceRot => each!(Op::ReplaceRot),
    }
}

/// Sparse apply: `out[pos[j]] = op(out[pos[j]], value[j])`, values as byte
/// planes over `positions.len()` elements. Positions were range-checked.
pub fn apply_sparse_planes<W: Word>(op: Op, positions: &[u32], planes: &[u8], out: &mut [u8]) {
    let m = positions.len();
    let planes: Vec<&[u8]> = planes.chunks_exact(m.max(1)).take(W::WIDTH).collect();
    if planes.len() < W::WIDTH && m > 0 {
        return;
    }
    for (j, &p) in positions.iter().enumerate() {
        let mut v = W::default();
        for (k, pl) in planes.iter().enumerate() {
            v = v.or(W::from_byte(pl[j], W::WIDTH - 1 - k));
        }
        let at = p as usize * W::WIDTH;
        if let Some(e) = out.get_mut(at..at + W::WIDTH) {
            W::combine(op, W::load(e), v).store(e);
        }
    }
}

/// Writer side: the dense values (natural layout) with `op(base, v) == target`.
pub fn dense_delta<W: Word>(op: Op, base: Option<&[u8]>, target: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.resize(target.len(), 0);
    match base {
        None => {
            for (o, t) in out
                .chunks_exact_mut(W::WIDTH)
                .zip(target.chunks_exact(W::WIDTH))
            {
                W::delta(op, W::default(), W::load(t)).store(o);
            }
        }
        Some(base) => {
            for ((o, t), b) in out
                .chunks_exact_mut(W::WIDTH)
                .zip(target.chunks_exact(W::WIDTH))
                .zip(base.chunks_exact(W::WIDTH))
            {
                W::delta(op, W::load(b), W::load(t)).store(o);
            }
        }
    }
}

/// Writer side: the byte planes of the dense values with `op(base, v) ==
/// target`, in one pass (no natural-layout intermediate). `out` is resized.
pub fn dense_delta_planes<W: Word>(op: Op, base: Option<&[u8]>, target: &[u8], out: &mut Vec<u8>) {
    out.resize(target.len(), 0);
    match W::WIDTH {
        1 => delta_planes_n::<W, 1>(op, base, target, out),
        2 => delta_planes_n::<W, 2>(op, base, target, out),
        4 => delta_planes_n::<W, 4>(op, base, target, out),
        _ => delta_planes_n::<W, 8>(op, base, target, out),
    }
}

#[inline(always)]
fn delta_planes_n<W: Word, const N: usize>(
    op: Op,
    base: Option<&[u8]>,
    target: &[u8],
    out: &mut [u8],
) {
    let n = target.len() / N;
    let mut planes: [&mut [u8]; N] = split_planes(out, n);
    let mut put = |i: usize, v: W| {
        for (k, plane) in planes.iter_mut().enumerate() {
            plane[i] = v.byte(N - 1 - k);
        }
    };
    match base {
        None => {
            for (i, t) in target.chunks_exact(N).enumerate() {
                put(i, W::delta(op, W::default(), W::load(t)));
            }
        }
        Some(base) => {
            for (i, (t, b)) in target.chunks_exact(N).zip(base.chunks_exact(N)).enumerate() {
                put(i, W::delta(op, W::load(b), W::load(t)));
            }
        }
    }
}

/// Splits `out` into `N` consecutive planes of `n` bytes.
fn split_planes<const N: usize>(out: &mut [u8], n: usize) -> [&mut [u8]; N] {
    let mut rest = out;
    std::array::from_fn(|_| {
        let r = std::mem::take(&mut rest);
        let (head, tail) = r.split_at_mut(n.min(r.len()));
        rest = tail;
        head
    })
}

/// Writer side: how many elements of `target` differ from `base` (all-zero
/// when absent). A straight compare-and-count the compiler vectorizes: the
/// chunk encoder needs positions only when at most half the elements
/// changed, and collecting them is the slow part.
pub fn count_changed<W: Word>(base: Option<&[u8]>, target: &[u8]) -> usize {
    let ts = target.chunks_exact(W::WIDTH);
    match base {
        Some(base) => ts
            .zip(base.chunks_exact(W::WIDTH))
            .map(|(t, b)| usize::from(W::load(t) != W::load(b)))
            .sum(),
        None => ts.map(|t| usize::from(W::load(t) != W::default())).sum(),
    }
}

/// Writer side: positions where `target` differs from `base` (all-zero when
/// absent). Runs of 8 equal elements are skipped with one comparison.
pub fn changed_positions<W: Word>(base: Option<&[u8]>, target: &[u8], out: &mut Vec<u32>) {
    out.clear();
    const RUN: usize = 8;
    let zeros = [0u8; 8 * RUN];
    let step = W::WIDTH * RUN;
    for (blk, t) in target.chunks(step).enumerate() {
        let b = match base {
            Some(base) => &base[blk * step..blk * step + t.len()],
            None => &zeros[..t.len()],
        };
        if t == b {
            continue;
        }
        for (j, (te, be)) in t
            .chunks_exact(W::WIDTH)
            .zip(b.chunks_exact(W::WIDTH))
            .enumerate()
        {
            if te != be {
                out.push((blk * RUN + j) as u32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_wraps_and_inverts_exactly() {
        for (b, t) in [(0xffffu16, 0x0001u16), (3, 2), (0x8000, 0x7fff)] {
            for op in [Op::Xor, Op::Add, Op::Replace, Op::AddZigzag, Op::ReplaceRot] {
                let d = u16::delta(op, b, t);
                assert_eq!(u16::combine(op, b, d), t, "{op:?} {b:#x} {t:#x}");
            }
        }
        assert_eq!(u16::combine(Op::Add, 0xffff, 2), 1);
    }

    #[test]
    fn zigzag_maps_small_differences_to_small_values() {
        // d = target - base: 0, -1, 1, -2, 2 -> 0, 1, 2, 3, 4
        for (d, z) in [(0i32, 0u32), (-1, 1), (1, 2), (-2, 3), (2, 4)] {
            let base = 1000u32;
            let target = base.wrapping_add(d as u32);
            assert_eq!(u32::delta(Op::AddZigzag, base, target), z);
            assert_eq!(u32::combine(Op::AddZigzag, base, z), target);
        }
        // Extremes wrap exactly.
        for (b, t) in [(0u8, 255u8), (255, 0), (0x80, 0x7f), (0, 0x80)] {
            assert_eq!(
                u8::combine(Op::AddZigzag, b, u8::delta(Op::AddZigzag, b, t)),
                t
            );
        }
    }

    #[test]
    fn nan_payloads_and_negative_zero_survive() {
        // f32 bit patterns float arithmetic would lose: -0.0, a signalling NaN payload.
        let base = [0.0f32.to_bits(), 1.0f32.to_bits()];
        let target = [(-0.0f32).to_bits(), 0x7fa0_0001];
        for op in [Op::Xor, Op::Add] {
            for (b, t) in base.iter().zip(&target) {
                assert_eq!(u32::combine(op, *b, u32::delta(op, *b, *t)), *t);
            }
        }
    }

    /// (v1.4, spec §6.1) The F32 `-1.5` (`0xbfc00000`) is stored as
    /// `0x7f800001`: the exponent fills the top byte, the sign is bit 0.
    #[test]
    fn replace_rot_is_the_spec_rotation_at_every_width() {
        assert_eq!(u32::delta(Op::ReplaceRot, 0, 0xbfc0_0000), 0x7f80_0001);
        assert_eq!(
            u32::combine(Op::ReplaceRot, 0x1234, 0x7f80_0001),
            0xbfc0_0000
        );
        assert_eq!(u8::delta(Op::ReplaceRot, 0, 0x81), 0x03);
        assert_eq!(u16::combine(Op::ReplaceRot, 0, 0x0001), 0x8000);
        assert_eq!(u64::combine(Op::ReplaceRot, 0, 3), 0x8000_0000_0000_0001);
    }
}
