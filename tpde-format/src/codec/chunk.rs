//! Chunk encoding and decoding (spec §5): pure functions from bytes to bytes.
//!
//! The decoder here is the low-level layer another runtime (or `tpde-gpu`)
//! can drive itself: it needs only the [`Chunk`] descriptor, the chunk's
//! stored bytes and a buffer holding the base range.

use super::combine::{self, DenseBase};
use super::{positions, stream};
use crate::format::{Chunk, ChunkKind, Op, Stream};
use crate::with_word;

/// What the writer chose for one chunk, and its stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedChunk {
    /// Encoding.
    pub kind: ChunkKind,
    /// Combine op.
    pub op: Op,
    /// Elements that differ from the base.
    pub changed: u64,
    /// Positions stream.
    pub positions: Stream,
    /// Values stream.
    pub values: Stream,
    /// Stored bytes: positions then values.
    pub bytes: Vec<u8>,
}

/// How the writer compresses streams. Built with [`Compression::new`] and
/// the `with_*` methods outside this crate (`#[non_exhaustive]`: a later
/// format's knob is a new field, which would break struct literals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compression {
    /// zstd level.
    pub level: i32,
    /// Newest format minor the output may use: from 1 on, multi-byte values
    /// are stored per plane ([`crate::format::Codec::PerPlane`]) and
    /// [`Op::AddZigzag`] is tried.
    pub max_minor: u16,
    /// Coder for byte planes that are not noise (v1.1 per-plane streams).
    pub coder: stream::PlaneCoder,
    /// From format 1.6 on, rANS planes of at least this many symbols get 32
    /// interleaved states (default [`stream::WIDE_MIN_PLANE`]).
    pub wide_min_plane: usize,
}

impl Compression {
    /// zstd `level`, format minors up to `max_minor`, byte planes coded with
    /// `coder`, and 32 rANS states from [`stream::WIDE_MIN_PLANE`] symbols.
    pub fn new(level: i32, max_minor: u16, coder: stream::PlaneCoder) -> Self {
        Compression {
            level,
            max_minor,
            coder,
            wide_min_plane: stream::WIDE_MIN_PLANE,
        }
    }

    /// From format 1.6 on, rANS planes of at least `n` symbols get 32 states.
    pub fn with_wide_min_plane(mut self, n: usize) -> Self {
        self.wide_min_plane = n;
        self
    }

    /// `base_ctx`: the base's most significant byte under each value, used
    /// as a rANS context from format 1.2 on (spec §5.7).
    fn values(self, planes: &[u8], width: usize, base_ctx: &[u8], out: &mut Vec<u8>) -> Stream {
        if self.max_minor >= 1 {
            let ctx = (self.max_minor >= 2 && !base_ctx.is_empty()).then_some(base_ctx);
            let wide = (self.max_minor >= 6).then_some(self.wide_min_plane);
            stream::compress_planes_with(planes, width, self.level, self.coder, ctx, wide, out)
        } else {
            stream::compress(planes, self.level, out)
        }
    }
}

/// The base's most significant byte (little-endian: the last) of each
/// element of `base` (spec §5.7), or of the elements at `positions` only.
pub fn base_context(base: &[u8], width: usize, positions: Option<&[u32]>, out: &mut Vec<u8>) {
    out.clear();
    let w = width.max(1);
    match positions {
        None => out.extend(base.chunks_exact(w).map(|e| e[w - 1])),
        Some(ps) => out.extend(ps.iter().map(|&p| base[p as usize * w + w - 1])),
    }
}

/// Reusable buffers for [`encode`].
#[derive(Debug, Default)]
pub struct EncodeScratch {
    positions: Vec<u32>,
    natural: Vec<u8>,
    planes: Vec<u8>,
    varints: Vec<u8>,
    base_ctx: Vec<u8>,
}

/// Encodes `target` (little-endian elements of `width` bytes) against `base`
/// (same length; `None` means all-zero bits) with combine `op` at zstd
/// `comp`. Picks Zero, Sparse or Dense, whichever stores fewer bytes.
pub fn encode(
    width: usize,
    target: &[u8],
    base: Option<&[u8]>,
    op: Op,
    comp: Compression,
    s: &mut EncodeScratch,
) -> EncodedChunk {
    // With no base every op means the same as `Replace`, or (v1.4) as
    // `ReplaceRot` for the rotated ones; record the plainest.
    let op = match (base, op.is_rotated()) {
        (Some(_), _) => op,
        (None, false) => Op::Replace,
        (None, true) => Op::ReplaceRot,
    };
    let n = target.len() / width;
    // Count first: positions are needed only for a sparse candidate.
    let changed = with_word!(width, W => combine::count_changed::<W>(base, target)) as u64;
    if changed == 0 {
        return EncodedChunk {
            kind: ChunkKind::Zero,
            op: Op::Xor,
            changed: 0,
            positions: Stream::EMPTY,
            values: Stream::EMPTY,
            bytes: Vec::new(),
        };
    }

    // Dense: every element's value.
    with_word!(width, W => combine::dense_delta_planes::<W>(op, base, target, &mut s.planes));
    let dense = |s: &mut EncodeScratch| {
        let mut bytes = Vec::new();
        match base {
            Some(b) if width > 1 => base_context(b, width, None, &mut s.base_ctx),
            _ => s.base_ctx.clear(),
        }
        let values = comp.values(&s.planes, width, &s.base_ctx, &mut bytes);
        EncodedChunk {
            kind: ChunkKind::Dense,
            op,
            changed,
            positions: Stream::EMPTY,
            values,
            bytes,
        }
    };
    // Sparse only has a chance when at most half the elements changed.
    if changed as usize * 2 > n {
        return dense(s);
    }
    with_word!(width, W => combine::changed_positions::<W>(base, target, &mut s.positions));
    s.varints.clear();
    positions::encode(&s.positions, &mut s.varints);
    // Values at the changed positions only, plane by plane from the dense planes.
    let m = s.positions.len();
    s.natural.clear();
    s.natural.resize(m * width, 0);
    for (dense, sparse) in s.planes.chunks_exact(n).zip(s.natural.chunks_exact_mut(m)) {
        for (d, &p) in sparse.iter_mut().zip(&s.positions) {
            *d = dense[p as usize];
        }
    }
    // Compress only the form estimated smaller (entropy estimates: this
    // decision runs for every chunk); when the estimates are within 10% of
    // each other, compress both and keep the smaller.
    let sparse_est =
        stream::estimate_planes(&s.varints, 1) + stream::estimate_planes(&s.natural, width);
    let dense_est = stream::estimate_planes(&s.planes, width);
    if sparse_est >= dense_est * 1.1 {
        return dense(s);
    }
    let mut bytes = Vec::new();
    let positions = stream::compress(&s.varints, comp.level, &mut bytes);
    match base {
        Some(b) if width > 1 => base_context(b, width, Some(&s.positions), &mut s.base_ctx),
        _ => s.base_ctx.clear(),
    }
    let values = comp.values(&s.natural, width, &s.base_ctx, &mut bytes);
    let sparse = EncodedChunk {
        kind: ChunkKind::Sparse,
        op,
        changed,
        positions,
        values,
        bytes,
    };
    if sparse_est * 1.1 > dense_est {
        let d = dense(s);
        if d.bytes.len() <= sparse.bytes.len() {
            return d;
        }
    }
    sparse
}

/// The ops the writer tries, in trial order (ties go to the earlier one):
/// with a base `Xor`, `Add` and (v1.1) `AddZigzag`; then `Replace` and
/// (v1.4, multi-byte elements) `ReplaceRot`. Rotating a 1-byte element
/// only moves its top bit, so it is not tried there.
pub fn candidate_ops(width: usize, has_base: bool, max_minor: u16) -> Vec<Op> {
    let mut ops = if has_base {
        vec![Op::Xor, Op::Add]
    } else {
        vec![]
    };
    if has_base && max_minor >= 1 {
        ops.push(Op::AddZigzag);
    }
    ops.push(Op::Replace);
    if width > 1 && max_minor >= 4 {
        ops.push(Op::ReplaceRot);
    }
    ops
}

/// Tries each candidate op ([`candidate_ops`]) on a sample and returns
/// the one whose byte planes are estimated to store fewest bytes.
///
/// (v1.4) When the winner is `Replace` or `ReplaceRot`, the two are
/// compared again with the sample split into `pieces` equal runs, each
/// estimated on its own statistics, as separate chunks are coded. The two
/// store the same bits, and differ only in which plane holds a float
/// exponent's last bit; how predictable that bit
/// is depends on the exponents of one region of the tensor, which a sample
/// drawn from all over it blurs (MiniLM's F32 word embedding: `Replace` on
/// the whole sample, `ReplaceRot` on pieces, 115 KB smaller). The other ops
/// keep the whole-sample comparison: on pieces, the bf16 fine-tune's
/// embedding picked `Add` over `AddZigzag`, 69 KB larger.
pub fn choose_op(
    width: usize,
    target: &[u8],
    base: Option<&[u8]>,
    comp: Compression,
    pieces: usize,
) -> Op {
    let ops = candidate_ops(width, base.is_some(), comp.max_minor);
    if let [only] = ops[..] {
        return only;
    }
    let mut s = EncodeScratch::default();
    let mut base_msb = Vec::new();
    // Writing 1.2 with rANS planes, planes may use the base as context
    // (spec §5.7): the op that is cheapest that way may be another one.
    let use_base_ctx = comp.max_minor >= 2 && comp.coder == stream::PlaneCoder::Rans && width > 1;
    let mut estimate = |op: Op, pieces: usize| -> u64 {
        let n = target.len() / width.max(1);
        let piece = n.div_ceil(pieces.max(1)).max(1) * width;
        let mut est = 0u64;
        for (k, t) in target.chunks(piece).enumerate() {
            let b = base.and_then(|b| b.get(k * piece..k * piece + t.len()));
            let ctx = match b {
                Some(b) if use_base_ctx => {
                    base_context(b, width, None, &mut base_msb);
                    Some(base_msb.as_slice())
                }
                _ => None,
            };
            with_word!(width, W => combine::dense_delta_planes::<W>(op, b, t, &mut s.planes));
            // An entropy estimate, not a trial compression: a few candidates per tensor.
            est += stream::estimate_planes_for(&s.planes, width, ctx, comp.coder) as u64;
        }
        est
    };
    let mut best = (u64::MAX, Op::Xor);
    for &op in &ops {
        let est = estimate(op, 1);
        if est < best.0 {
            best = (est, op);
        }
    }
    // Only where ReplaceRot is a candidate (writing 1.4, 2 bytes or more):
    // a file capped at an older minor must never get it from here.
    if pieces <= 1
        || !ops.contains(&Op::ReplaceRot)
        || !matches!(best.1, Op::Replace | Op::ReplaceRot)
    {
        return best.1;
    }
    if estimate(Op::ReplaceRot, pieces) < estimate(Op::Replace, pieces) {
        Op::ReplaceRot
    } else {
        Op::Replace
    }
}

/// Reusable buffers for [`decode_into`].
#[derive(Debug, Default)]
pub struct DecodeScratch {
    raw: Vec<u8>,
    positions: Vec<u32>,
    base_ctx: Vec<u8>,
}

/// Decodes one chunk whose descriptor was validated (spec §5.1) and whose
/// `stored` bytes passed their CRC. `out` holds the chunk's base range on
/// entry (zeros when the tensor has no base) and the target range on return.
pub fn decode_into(
    chunk: &Chunk,
    width: usize,
    stored: &[u8],
    out: &mut [u8],
    s: &mut DecodeScratch,
) -> Result<(), &'static str> {
    decode_over(chunk, width, stored, DenseBase::InPlace, out, s)
}

/// [`decode_into`] with the chunk's base range read from `base` (or `out`,
/// for [`DenseBase::InPlace`]). A dense chunk then writes `out` once; other
/// chunks (zero, sparse) first copy the base into `out` and apply in place.
/// `out`'s bytes on entry are not read unless `base` is `InPlace`.
pub fn decode_over(
    chunk: &Chunk,
    width: usize,
    stored: &[u8],
    base: DenseBase<'_>,
    out: &mut [u8],
    s: &mut DecodeScratch,
) -> Result<(), &'static str> {
    if out.len() as u64 != chunk.elem_count.saturating_mul(width as u64) {
        return Err("output range does not match the chunk's element count");
    }
    if matches!(base, DenseBase::Bytes(b) if b.len() != out.len()) {
        return Err("base range does not match the chunk's element count");
    }
    // Only a dense chunk over a base elsewhere, whose values need no base
    // context from a zero base, skips putting the base into `out`.
    let dense_over = chunk.kind == ChunkKind::Dense
        && match base {
            DenseBase::InPlace => false,
            DenseBase::Bytes(_) => true,
            DenseBase::Zero => !chunk.values.uses_base_context(),
        };
    if !dense_over {
        match base {
            DenseBase::InPlace => {}
            DenseBase::Zero => out.fill(0),
            DenseBase::Bytes(b) => out.copy_from_slice(b),
        }
        return decode_in_place(chunk, width, stored, out, s);
    }
    let (_, val_bytes) = split_streams(chunk, stored)?;
    decode_dense(chunk, width, val_bytes, base, out, s)
}

/// A chunk's stored bytes: its positions stream, then its values stream.
fn split_streams<'a>(
    chunk: &Chunk,
    stored: &'a [u8],
) -> Result<(&'a [u8], &'a [u8]), &'static str> {
    let pos_len = usize::try_from(chunk.positions.stored_len).map_err(|_| "stream too long")?;
    stored
        .split_at_checked(pos_len)
        .ok_or("positions stream longer than the chunk")
}

/// A dense chunk's values (`val_bytes`) applied over `base`: in `out`, or
/// elsewhere. Base-context planes read the base where it is (never a zero
/// base: [`decode_over`] puts zeros into `out` for those).
fn decode_dense(
    chunk: &Chunk,
    width: usize,
    val_bytes: &[u8],
    base: DenseBase<'_>,
    out: &mut [u8],
    s: &mut DecodeScratch,
) -> Result<(), &'static str> {
    let ctx = if chunk.values.uses_base_context() {
        let under: &[u8] = match base {
            DenseBase::Bytes(b) => b,
            DenseBase::InPlace | DenseBase::Zero => out,
        };
        base_context(under, width, None, &mut s.base_ctx);
        Some(s.base_ctx.as_slice())
    } else {
        None
    };
    stream::decompress_with(&chunk.values, val_bytes, ctx, &mut s.raw)?;
    if s.raw.len() != out.len() {
        return Err("dense values length differs from the element count");
    }
    with_word!(width, W => combine::apply_dense_planes_over::<W>(chunk.op, &s.raw, base, out));
    Ok(())
}

/// [`decode_into`]'s body: `out` holds the base.
fn decode_in_place(
    chunk: &Chunk,
    width: usize,
    stored: &[u8],
    out: &mut [u8],
    s: &mut DecodeScratch,
) -> Result<(), &'static str> {
    let (pos_bytes, val_bytes) = split_streams(chunk, stored)?;
    match chunk.kind {
        ChunkKind::Zero => Ok(()),
        ChunkKind::Dense => decode_dense(chunk, width, val_bytes, DenseBase::InPlace, out, s),
        ChunkKind::Sparse => {
            stream::decompress(&chunk.positions, pos_bytes, &mut s.raw)?;
            let count = usize::try_from(chunk.changed).map_err(|_| "too many positions")?;
            positions::decode(&s.raw, count, chunk.elem_count, &mut s.positions)?;
            let ctx = if chunk.values.uses_base_context() {
                // Positions were checked against the element count above.
                base_context(out, width, Some(&s.positions), &mut s.base_ctx);
                Some(s.base_ctx.as_slice())
            } else {
                None
            };
            stream::decompress_with(&chunk.values, val_bytes, ctx, &mut s.raw)?;
            if s.raw.len() != count * width {
                return Err("sparse values length differs from the position count");
            }
            with_word!(width, W => combine::apply_sparse_planes::<W>(chunk.op, &s.positions, &s.raw, out));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_COMP: Compression = Compression {
        level: 1,
        max_minor: 2,
        coder: stream::PlaneCoder::Rans,
        wide_min_plane: stream::WIDE_MIN_PLANE,
    };

    fn chunk_of(e: &EncodedChunk, n: u64) -> Chunk {
        Chunk {
            offset: 0,
            stored_len: e.bytes.len() as u64,
            crc32: 0,
            elem_start: 0,
            elem_count: n,
            kind: e.kind,
            op: e.op,
            changed: e.changed,
            positions: e.positions.clone(),
            values: e.values.clone(),
        }
    }

    #[test]
    fn few_changes_encode_sparse_and_round_trip() {
        let base: Vec<u8> = (0..4096u32)
            .flat_map(|i| (i as u16).to_le_bytes())
            .collect();
        let mut target = base.clone();
        target[20] ^= 0x40;
        target[2000] = target[2000].wrapping_add(3);
        let mut s = EncodeScratch::default();
        for op in [Op::Xor, Op::Add, Op::Replace, Op::AddZigzag] {
            let e = encode(2, &target, Some(&base), op, TEST_COMP, &mut s);
            assert_eq!(e.kind, ChunkKind::Sparse);
            assert_eq!(e.changed, 2);
            let mut out = base.clone();
            decode_into(
                &chunk_of(&e, 4096),
                2,
                &e.bytes,
                &mut out,
                &mut DecodeScratch::default(),
            )
            .unwrap();
            assert_eq!(out, target);
        }
    }

    /// Trained bf16 weights: the update's size in integer steps follows the
    /// base's exponent, so the base's high byte is the better context
    /// (spec §5.7). The planes say so, and the chunk decodes only with the
    /// base under it.
    #[test]
    fn base_context_planes_round_trip_and_need_the_base() {
        let n = 1 << 14;
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut base, mut target) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let r = next();
            let w = f32::from_bits(
                0x3800_0000 + ((r as u32 & 0x0f) << 23) + (r as u32 >> 9 & 0x7f_ffff),
            );
            let w = if r >> 40 & 1 == 1 { -w } else { w };
            let t = w + 1e-3 * ((r >> 48) as f32 / 65536.0 - 0.5);
            base.extend_from_slice(&((w.to_bits() >> 16) as u16).to_le_bytes());
            target.extend_from_slice(&((t.to_bits() >> 16) as u16).to_le_bytes());
        }
        let e = encode(
            2,
            &target,
            Some(&base),
            Op::AddZigzag,
            TEST_COMP,
            &mut EncodeScratch::default(),
        );
        assert!(e.values.uses_base_context(), "{:?}", e.values);
        let mut out = base.clone();
        decode_into(
            &chunk_of(&e, n as u64),
            2,
            &e.bytes,
            &mut out,
            &mut DecodeScratch::default(),
        )
        .unwrap();
        assert_eq!(out, target);
        // The context is read from a base elsewhere as from the output.
        let mut got = vec![0u8; out.len()];
        let over = DenseBase::Bytes(&base);
        let c = chunk_of(&e, n as u64);
        decode_over(
            &c,
            2,
            &e.bytes,
            over,
            &mut got,
            &mut DecodeScratch::default(),
        )
        .unwrap();
        assert_eq!(got, target);
        // Another base under the chunk: the context is wrong, and the
        // decode fails or differs; never the target by accident.
        let mut other = base.clone();
        other.iter_mut().skip(1).step_by(2).for_each(|b| *b ^= 0x01);
        let r = decode_into(
            &chunk_of(&e, n as u64),
            2,
            &e.bytes,
            &mut other,
            &mut DecodeScratch::default(),
        );
        assert!(r.is_err() || other != target);
        // Before format 1.2 the writer does not use it.
        let v11 = Compression {
            max_minor: 1,
            ..TEST_COMP
        };
        let e = encode(
            2,
            &target,
            Some(&base),
            Op::AddZigzag,
            v11,
            &mut EncodeScratch::default(),
        );
        assert!(!e.values.uses_base_context());
    }

    #[test]
    fn identical_ranges_store_nothing() {
        let base = vec![7u8; 64];
        let e = encode(
            4,
            &base,
            Some(&base),
            Op::Add,
            TEST_COMP,
            &mut EncodeScratch::default(),
        );
        assert_eq!(e.kind, ChunkKind::Zero);
        assert!(e.bytes.is_empty());
    }

    #[test]
    fn dense_round_trips_for_every_width_and_op() {
        for w in [1usize, 2, 4, 8] {
            let n = 1000;
            let base: Vec<u8> = (0..n * w).map(|i| (i * 7 % 251) as u8).collect();
            let target: Vec<u8> = (0..n * w).map(|i| (i * 13 % 241) as u8).collect();
            for op in [Op::Xor, Op::Add, Op::Replace, Op::AddZigzag, Op::ReplaceRot] {
                let e = encode(
                    w,
                    &target,
                    Some(&base),
                    op,
                    TEST_COMP,
                    &mut EncodeScratch::default(),
                );
                assert_eq!(e.kind, ChunkKind::Dense);
                let mut out = base.clone();
                decode_into(
                    &chunk_of(&e, n as u64),
                    w,
                    &e.bytes,
                    &mut out,
                    &mut DecodeScratch::default(),
                )
                .unwrap();
                assert_eq!(out, target, "w={w} op={op:?}");
            }
        }
    }

    /// `decode_over` reads a base from elsewhere (or none) as `decode_into`
    /// reads it from the output: same result for every chunk kind, width
    /// and op, with or without base-context planes, whatever `out` held.
    #[test]
    fn decoding_over_a_base_elsewhere_is_decoding_in_place() {
        for w in [1usize, 2, 4, 8] {
            let n = 3000;
            let base: Vec<u8> = (0..n * w).map(|i| (i * 7 % 251) as u8).collect();
            let dense: Vec<u8> = (0..n * w).map(|i| (i * 13 % 241) as u8).collect();
            let mut sparse = base.clone();
            sparse[w * 17] ^= 0x40;
            let zero = vec![0u8; n * w];
            for target in [&dense, &sparse, &base, &zero] {
                for op in [Op::Xor, Op::Add, Op::Replace, Op::AddZigzag, Op::ReplaceRot] {
                    for (b, over) in [(&base, DenseBase::Bytes(&base)), (&zero, DenseBase::Zero)] {
                        let has_base = over_is_bytes(over);
                        let e = encode(
                            w,
                            target,
                            has_base.then_some(b.as_slice()),
                            op,
                            TEST_COMP,
                            &mut EncodeScratch::default(),
                        );
                        let c = chunk_of(&e, n as u64);
                        let mut want = b.clone();
                        let mut sc = DecodeScratch::default();
                        decode_into(&c, w, &e.bytes, &mut want, &mut sc).unwrap();
                        assert_eq!(&want, target, "w={w} op={op:?} {:?}", e.kind);
                        let mut got = vec![0xA5u8; n * w];
                        decode_over(&c, w, &e.bytes, over, &mut got, &mut sc).unwrap();
                        assert_eq!(got, want, "w={w} op={op:?} {:?} {over:?}", e.kind);
                    }
                }
            }
        }
    }

    fn over_is_bytes(b: DenseBase<'_>) -> bool {
        matches!(b, DenseBase::Bytes(_))
    }

    /// Weight-like F32 values: random sign and mantissa, exponent 121 or
    /// 122, so the exponent's last bit follows from its upper bits.
    fn weightish_f32(n: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let exp = 121 + (x >> 40 & 1) as u32;
                let v = (x as u32 & 0x8000_0000) | exp << 23 | (x >> 8) as u32 & 0x7f_ffff;
                v.to_le_bytes()
            })
            .collect()
    }

    /// (v1.4, spec §6.1) With the exponent split over two planes, its last
    /// bit costs a whole bit in a raw plane; rotated, the top plane holds
    /// the exponent whole and the sign moves into the noise. The trial
    /// finds that with no base and with an unrelated one, only when writing
    /// 1.4, and the chunk decodes back exactly.
    #[test]
    fn weights_are_stored_rotated_from_format_1_4() {
        let n = 1 << 16;
        let target = weightish_f32(n);
        let other: Vec<u8> = weightish_f32(n + 7)[28..].to_vec();
        let v14 = Compression {
            max_minor: 4,
            ..TEST_COMP
        };
        for base in [None, Some(other.as_slice())] {
            assert_eq!(choose_op(4, &target, base, v14, 1), Op::ReplaceRot);
            assert_eq!(choose_op(4, &target, base, v14, 8), Op::ReplaceRot);
            assert!(!choose_op(4, &target, base, TEST_COMP, 8).is_rotated());
            let mut s = EncodeScratch::default();
            let rot = encode(4, &target, base, Op::ReplaceRot, v14, &mut s);
            let plain = encode(4, &target, base, Op::Replace, v14, &mut s);
            assert_eq!(rot.op, Op::ReplaceRot);
            // Close to one bit per element smaller.
            assert!(
                rot.bytes.len() + n / 8 * 9 / 10 < plain.bytes.len(),
                "{} vs {}",
                rot.bytes.len(),
                plain.bytes.len()
            );
            let mut out = base.map_or(vec![0u8; 4 * n], <[u8]>::to_vec);
            decode_into(
                &chunk_of(&rot, n as u64),
                4,
                &rot.bytes,
                &mut out,
                &mut DecodeScratch::default(),
            )
            .unwrap();
            assert_eq!(out, target);
        }
        // 1-byte elements are never rotated.
        assert_eq!(choose_op(1, &target, None, v14, 8), Op::Replace);
        // Over a noise base `Replace` wins the whole-sample trial, so the
        // piecewise re-comparison runs: below 1.4 it must not bring the
        // rotated op back.
        let noise: Vec<u8> = weightish_f32(n + 3)
            .iter()
            .map(|b| b.wrapping_mul(167).wrapping_add(13))
            .skip(5)
            .take(4 * n)
            .collect();
        assert_eq!(
            choose_op(4, &target, Some(&noise), TEST_COMP, 8),
            Op::Replace
        );
        assert_eq!(choose_op(4, &target, Some(&noise), v14, 8), Op::ReplaceRot);
    }
}
