//! Stream compression (spec §5.3): one zstd frame, or the bytes as they are
//! when compression does not pay.

use std::cell::RefCell;

use super::entropy::log2_q16;
use super::entropy::Lanes;
use crate::format::{Codec, Plane, PlaneCodec, Stream};

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// zstd-compresses `raw` with this thread's reusable context.
fn zstd_compress(raw: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
        }
        c.as_mut().and_then(|(_, z)| z.compress(raw).ok())
    })
}

/// Estimated stored bytes of byte planes (`width` planes over `planes.len() /
/// width` elements), for the writer's choices between ops and between sparse
/// and dense chunks without compressing every candidate. Each plane costs the
/// smaller of its order-0 entropy and its entropy conditioned on 16 buckets
/// of the previous plane's byte (what the rANS coder can exploit), plus a
/// rough table cost, capped at raw. Sampled on large planes.
pub fn estimate_planes(planes: &[u8], width: usize) -> f64 {
    estimate_planes_with(planes, width, None)
}

/// [`estimate_planes`], also costing each plane conditioned on the base's
/// byte under each value (`base_ctx`, one per element: spec §5.7), as a
/// `RansBase` plane would be coded.
pub fn estimate_planes_with(planes: &[u8], width: usize, base_ctx: Option<&[u8]>) -> f64 {
    estimate_planes_for(planes, width, base_ctx, PlaneCoder::Rans)
}

/// [`estimate_planes_with`] for the plane coder `coder`: zstd planes see no
/// context (a plane is one frame, its entropy stage order 0), so for
/// [`PlaneCoder::Zstd`] each plane costs its order-0 entropy only. (Pricing
/// zstd planes with the rANS coder's contexts made the op trial pick `Add`
/// over `AddZigzag` on sparse bf16 deltas, whose `Add` planes split into
/// 0x00 / 0xFF halves that a context separates and zstd does not: +4.4% on
/// a fine-tune packed with `--planes zstd`.)
pub fn estimate_planes_for(
    planes: &[u8],
    width: usize,
    base_ctx: Option<&[u8]>,
    coder: PlaneCoder,
) -> f64 {
    if planes.is_empty() {
        return 0.0;
    }
    let n = planes.len() / width;
    let base_ctx = base_ctx.filter(|c| c.len() == n && n >= BASE_CTX_MIN_PLANE);
    let mut total = 0.0;
    let mut prev: Option<&[u8]> = None;
    for plane in planes.chunks_exact(n) {
        let prev_ctx = prev.filter(|_| coder == PlaneCoder::Rans);
        let c = plane_costs(plane, prev_ctx, base_ctx);
        // As the coder does: a plane that is noise at order 0 is stored
        // raw, whatever a context would have saved.
        total += if c.noise {
            n as f64
        } else {
            c.best().min(n as f64)
        };
        prev = Some(plane);
    }
    total
}

/// Estimated coded bytes of one plane under each context the coder can use.
#[derive(Debug, Clone, Copy)]
struct PlaneCosts {
    /// No context.
    order0: f64,
    /// Order-0 entropy at least [`RAW_ENTROPY_BITS`]: the writer stores
    /// the plane raw without trying a coder.
    noise: bool,
    /// 16 signed-log2 buckets of the previous plane's byte.
    prev: Option<f64>,
    /// Each value of the base's byte its own bucket, its table paid per
    /// symbol used (the encoder merges them into at most 16, so sparse
    /// contexts are not overrated).
    base: Option<f64>,
}

impl PlaneCosts {
    /// The cheapest way without the base context.
    fn without_base(self) -> f64 {
        self.prev.map_or(self.order0, |p| p.min(self.order0))
    }

    /// The cheapest way.
    fn best(self) -> f64 {
        self.base
            .map_or(self.without_base(), |b| b.min(self.without_base()))
    }
}

/// Entropy estimates of `plane` (sampled on large planes).
fn plane_costs(plane: &[u8], prev: Option<&[u8]>, base: Option<&[u8]>) -> PlaneCosts {
    let n = plane.len();
    let step = match n {
        0..=0xffff => 1,
        0x1_0000..=0x3_ffff => 4,
        _ => 8,
    };
    let scale = step as f64 / 8.0; // bits per sampled symbol -> bytes
    let h = |counts: &[u32]| -> (f64, usize) {
        let total: u32 = counts.iter().sum();
        if total == 0 {
            return (0.0, 0);
        }
        // T log2 T - sum c log2 c with the integer logarithm of the rANS
        // encoder (Q16): several times faster than a float log per bin, and
        // the same on every platform.
        let mut sum = 0u64;
        let mut used = 0;
        for &c in counts.iter().filter(|&&c| c > 0) {
            sum += u64::from(c) * log2_q16(u64::from(c));
            used += 1;
        }
        let t = u64::from(total);
        let bits = (t * log2_q16(t)).saturating_sub(sum) as f64 / 65536.0;
        (bits, used)
    };
    let cost = |(bits, used): (f64, usize)| bits * scale + used as f64 * 1.5;
    // Signed-log2 buckets of the context byte: 0, 1, 2-3, ..., 64-127 | 128-191, ..., 254, 255.
    let bucket = |b: u8| -> usize {
        if b < 128 {
            (8 - b.leading_zeros() as usize).min(7)
        } else {
            8 + (8 - (!b).leading_zeros() as usize).min(7)
        }
    };
    // One pass fills every histogram the contexts need.
    let prev = prev.filter(|c| c.len() == n);
    let base = base.filter(|c| c.len() == n);
    let mut h0 = [0u32; 256];
    let mut h1 = [[0u32; 256]; 16];
    // Counts per base byte get a row only for the bytes that occur (a few
    // dozen exponents on real weights), so they stay in cache.
    let mut row_of = [u16::MAX; 256];
    let mut rows = 0usize;
    if let Some(b) = base {
        for i in (0..n).step_by(step) {
            let c = usize::from(b[i]);
            if row_of[c] == u16::MAX {
                row_of[c] = rows as u16;
                rows += 1;
            }
        }
    }
    let mut t = vec![[0u32; 256]; rows];
    // Samples alternate between two copies of each histogram, summed at the
    // end: a skewed plane increments one counter sample after sample, and
    // each increment waited for the last one's store (this loop was a tenth
    // of packing). The counts, hence the estimates, are the same.
    let (mut h0b, mut h1b, mut tb) = ([0u32; 256], [[0u32; 256]; 16], vec![[0u32; 256]; rows]);
    let count = |i: usize, h0: &mut [u32; 256], h1: &mut [[u32; 256]; 16], t: &mut [[u32; 256]]| {
        let x = usize::from(plane[i]);
        h0[x] += 1;
        if let Some(p) = prev {
            h1[bucket(p[i])][x] += 1;
        }
        if let Some(b) = base {
            t[usize::from(row_of[usize::from(b[i])])][x] += 1;
        }
    };
    let mut i = 0;
    while i + step < n {
        count(i, &mut h0, &mut h1, &mut t);
        count(i + step, &mut h0b, &mut h1b, &mut tb);
        i += 2 * step;
    }
    if i < n {
        count(i, &mut h0, &mut h1, &mut t);
    }
    let add = |a: &mut [u32; 256], b: &[u32; 256]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    add(&mut h0, &h0b);
    h1.iter_mut().zip(&h1b).for_each(|(a, b)| add(a, b));
    t.iter_mut().zip(&tb).for_each(|(a, b)| add(a, b));
    let (bits0, used0) = h(&h0);
    let samples = n.div_ceil(step) as f64;
    let noise = bits0 >= RAW_ENTROPY_BITS * samples;
    let order0 = cost((bits0, used0));
    // A noise plane is stored raw: its context costs (thousands of
    // logarithms on a full 256-symbol plane) are never looked at.
    let prev = prev.map(|_| {
        if noise {
            f64::MAX
        } else {
            h1.iter().map(|t| cost(h(t))).sum()
        }
    });
    let base = base.map(|_| {
        if noise {
            return f64::MAX;
        }
        // Summed in base-byte order, as always (the same float result).
        row_of
            .iter()
            .filter(|&&r| r != u16::MAX)
            .map(|&r| cost(h(&t[usize::from(r)])))
            .sum()
    });
    PlaneCosts {
        order0,
        noise,
        prev,
        base,
    }
}

/// True when the order-0 entropy of `bytes` (sampled on large inputs) is at
/// least [`RAW_ENTROPY_BITS`] bits per byte: the writer stores such a plane
/// raw. Integer arithmetic with the rANS encoder's `log2_q16`, so the
/// decision (and the archive) is the same on every platform; a float `log2`
/// from the platform's libm could differ in its last bit on a plane at the
/// threshold.
fn is_noise(bytes: &[u8]) -> bool {
    let step = if bytes.len() > 1 << 16 { 4 } else { 1 };
    let mut hist = [0u32; 256];
    let mut n = 0u64;
    for &b in bytes.iter().step_by(step) {
        hist[usize::from(b)] += 1;
        n += 1;
    }
    if n == 0 {
        return false;
    }
    // n log2 n - sum c log2 c, in Q16 bits (at most 2^32 samples x 32 bits
    // x 2^16: fits in u64 with room to spare).
    let sum: u64 = hist
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| u64::from(c) * log2_q16(u64::from(c)))
        .sum();
    let bits_q16 = (n * log2_q16(n)).saturating_sub(sum);
    u128::from(bits_q16) * RAW_ENTROPY_DEN >= u128::from(n) * RAW_ENTROPY_NUM * 65536
}

/// Planes whose estimated entropy is at least this many bits per byte are
/// stored raw without trying zstd: it could save at most ~1.5%, and skipping
/// it is what makes packing fast (low mantissa bytes are noise).
const RAW_ENTROPY_BITS: f64 = 7.88;
/// [`RAW_ENTROPY_BITS`] as the exact fraction the integer test uses.
const RAW_ENTROPY_NUM: u128 = 788;
/// Denominator of [`RAW_ENTROPY_NUM`].
const RAW_ENTROPY_DEN: u128 = 100;

/// The coder the writer uses for byte planes that are not noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlaneCoder {
    /// zstd at the writer's level: fastest to decode.
    Zstd,
    /// Context-modelled rANS ([`crate::codec::entropy`]): smallest (below
    /// zstd -19 on every real pair measured), decodes at about half zstd's speed.
    #[default]
    Rans,
}

/// Compresses a values stream given as byte planes of `width`-byte elements
/// (spec §5.3): for `width > 1`, each plane separately ([`Codec::PerPlane`]),
/// noise planes raw, the others with `coder` (a rANS plane after the first
/// uses the previous plane as its context); for `width == 1`, as [`compress`].
pub fn compress_planes(
    planes: &[u8],
    width: usize,
    level: i32,
    coder: PlaneCoder,
    out: &mut Vec<u8>,
) -> Stream {
    compress_planes_with(planes, width, level, coder, None, None, out)
}

/// [`compress_planes`] given the base's most significant byte under each
/// value (`base_ctx`, one byte per element; format 1.2): each rANS plane is
/// then coded with its usual context or with the base's byte as context
/// ([`PlaneCodec::RansBase`], spec §5.7), whichever the entropy estimates
/// say is smaller. With `wide_min = Some(k)` (format 1.6), rANS planes of
/// at least `k` symbols get 32 interleaved states ([`PlaneCodec::Rans32`],
/// [`PlaneCodec::RansBase32`]; the writer's default `k` is [`WIDE_MIN_PLANE`]).
pub fn compress_planes_with(
    planes: &[u8],
    width: usize,
    level: i32,
    coder: PlaneCoder,
    base_ctx: Option<&[u8]>,
    wide_min: Option<usize>,
    out: &mut Vec<u8>,
) -> Stream {
    if width == 1 || planes.is_empty() {
        return compress(planes, level, out);
    }
    let n = planes.len() / width;
    let lanes = if wide_min.is_some_and(|k| n >= k) {
        Lanes::ThirtyTwo
    } else {
        Lanes::Four
    };
    let mut entries = Vec::with_capacity(width);
    let mut prev: Option<&[u8]> = None;
    for plane in planes.chunks_exact(n) {
        let packed = if is_noise(plane) {
            None
        } else {
            match coder {
                PlaneCoder::Zstd => zstd_compress(plane, level).map(|p| (p, PlaneCodec::Zstd)),
                // Tiny planes: the coder's tables and set-up cost more than
                // they could save; only a constant plane (2 bytes) pays.
                PlaneCoder::Rans if n < RANS_MIN_PLANE && plane.iter().any(|&b| b != plane[0]) => {
                    None
                }
                PlaneCoder::Rans => {
                    // Code with the base as context or with the usual
                    // context, whichever is estimated smaller. (Coding both
                    // when the estimates were within 5% changed the choice
                    // on 1 of 91 such planes of four corpus pairs, by 30
                    // bytes, and coded a quarter of MiniLM-vs-fp16's
                    // symbols twice.)
                    let ctx = base_ctx.filter(|c| c.len() == n && n >= BASE_CTX_MIN_PLANE);
                    let (try_usual, try_base) = match ctx {
                        None => (true, false),
                        Some(c) => {
                            let costs = plane_costs(plane, prev, Some(c));
                            let usual = costs.without_base();
                            let base = costs.base.unwrap_or(f64::MAX);
                            (base >= usual, base < usual)
                        }
                    };
                    let (usual_codec, base_codec) = match lanes {
                        Lanes::Four => (PlaneCodec::Rans, PlaneCodec::RansBase),
                        Lanes::ThirtyTwo => (PlaneCodec::Rans32, PlaneCodec::RansBase32),
                    };
                    let usual = try_usual.then(|| {
                        let mut p = Vec::with_capacity(plane.len() / 2);
                        super::entropy::encode_plane_with(
                            plane,
                            prev,
                            super::entropy::default_tuning(n),
                            lanes,
                            &mut p,
                        );
                        (p, usual_codec)
                    });
                    let with_base = ctx.filter(|_| try_base).map(|c| {
                        let mut q = Vec::with_capacity(plane.len() / 2);
                        super::entropy::encode_plane_with(
                            plane,
                            Some(c),
                            &BASE_TUNING,
                            lanes,
                            &mut q,
                        );
                        (q, base_codec)
                    });
                    match (usual, with_base) {
                        (Some(u), Some(b)) => Some(if b.0.len() < u.0.len() { b } else { u }),
                        (u, b) => u.or(b),
                    }
                    // A plane that coded to the constant (or raw) mode has
                    // no states: its bytes are the same for 4 and 32, so it
                    // keeps the 4-state codec and does not raise the
                    // archive's minor (spec §5.6.6).
                    .map(|(p, codec)| {
                        let stateless = p.first() != Some(&super::entropy::MODE_RANS);
                        let codec = match codec {
                            PlaneCodec::Rans32 if stateless => PlaneCodec::Rans,
                            PlaneCodec::RansBase32 if stateless => PlaneCodec::RansBase,
                            c => c,
                        };
                        (p, codec)
                    })
                }
            }
            .filter(|(p, _)| p.len() < plane.len())
        };
        prev = Some(plane);
        entries.push(match packed {
            Some((p, codec)) => {
                out.extend_from_slice(&p);
                Plane {
                    stored_len: p.len() as u64,
                    codec,
                }
            }
            None => {
                out.extend_from_slice(plane);
                Plane {
                    stored_len: plane.len() as u64,
                    codec: PlaneCodec::Raw,
                }
            }
        });
    }
    Stream {
        stored_len: entries.iter().map(|p| p.stored_len).sum(),
        raw_len: planes.len() as u64,
        codec: Codec::PerPlane(entries),
    }
}

/// Planes shorter than this are stored raw rather than rANS-coded unless
/// they are constant (a frequency table alone takes tens of bytes).
const RANS_MIN_PLANE: usize = 64;

/// Planes of at least this many symbols get 32 rANS states in format 1.6:
/// the 28 more states cost ~80 bytes a plane (0.1–0.2% of a 2^20-symbol
/// plane's coded size on the fine-tune pair, ~2% of a skewed 2^16-symbol
/// one), and only large planes decode long enough for the speed to count.
pub const WIDE_MIN_PLANE: usize = 1 << 16;

/// Planes shorter than this are not tried with the base as context: the
/// partition search from every context value costs about as much on a tiny
/// plane as on a large one (a fuzzer's 2-element chunks spent 2 ms each),
/// and up to 16 frequency tables cannot pay for themselves there.
const BASE_CTX_MIN_PLANE: usize = 4096;

/// Encoder settings for planes coded against the base's byte: its values
/// cluster in a few exponents (bf16 weights: 0x3c..0x3f and 0xbc..0xbf),
/// which the signed-log2 starting buckets of the plane-to-plane context
/// cannot tell apart, so the partition starts from every value.
const BASE_TUNING: super::entropy::Tuning = super::entropy::Tuning {
    scale_bits: 0,
    max_buckets: 16,
    every_value: true,
    ctx_min_gain_permille: 20,
};

/// Compresses `raw` at zstd `level` and appends the stored form to `out`.
/// Falls back to [`Codec::Raw`] when the frame would not be smaller.
/// Deterministic: same bytes and level give the same output on any thread.
pub fn compress(raw: &[u8], level: i32, out: &mut Vec<u8>) -> Stream {
    let raw_len = raw.len() as u64;
    if raw.is_empty() {
        return Stream::EMPTY;
    }
    match zstd_compress(raw, level) {
        Some(p) if p.len() < raw.len() => {
            out.extend_from_slice(&p);
            Stream {
                stored_len: p.len() as u64,
                raw_len,
                codec: Codec::Zstd,
            }
        }
        _ => {
            out.extend_from_slice(raw);
            Stream {
                stored_len: raw_len,
                raw_len,
                codec: Codec::Raw,
            }
        }
    }
}

/// Decompresses one stream into `out` (resized to `stream.raw_len`, which the
/// caller has bounded by the limits). The zstd frame is decoded into a buffer
/// of exactly the declared size, so a frame that expands further fails rather
/// than allocating (no decompression bombs); one that yields fewer bytes fails too.
pub fn decompress(stream: &Stream, stored: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    decompress_with(stream, stored, None, out)
}

/// [`decompress`] with the base's most significant byte under each value
/// (`base_ctx`, one byte per element), which [`PlaneCodec::RansBase`]
/// planes need as their context (spec §5.7).
pub fn decompress_with(
    stream: &Stream,
    stored: &[u8],
    base_ctx: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    let raw_len = usize::try_from(stream.raw_len).map_err(|_| "raw length too large")?;
    // Every byte is overwritten: only grown bytes are zero-filled.
    out.resize(raw_len, 0);
    decompress_into_with(stream, stored, base_ctx, out)
}

/// Decompresses one stream into `out`, which must be exactly `stream.raw_len`
/// bytes (a caller's buffer: pinned staging memory, a tensor slice). Same
/// rules as [`decompress`]; nothing is allocated.
pub fn decompress_into(stream: &Stream, stored: &[u8], out: &mut [u8]) -> Result<(), &'static str> {
    decompress_into_with(stream, stored, None, out)
}

/// [`decompress_into`] with the base context of [`decompress_with`]. A
/// [`PlaneCodec::RansBase`] plane without one (or with one of another
/// length) is an error, never decoded against a guess.
pub fn decompress_into_with(
    stream: &Stream,
    stored: &[u8],
    base_ctx: Option<&[u8]>,
    out: &mut [u8],
) -> Result<(), &'static str> {
    if stream.raw_len != out.len() as u64 {
        return Err("output length differs from the stream's raw length");
    }
    match &stream.codec {
        Codec::Raw => {
            if stored.len() != out.len() {
                return Err("raw stream length differs from its declared length");
            }
            out.copy_from_slice(stored);
            Ok(())
        }
        Codec::Zstd => zstd_into(stored, out),
        Codec::PerPlane(planes) => {
            // Validated at open: one entry per element byte, raw_len a
            // multiple of their count, stored lengths summing to `stored`.
            if planes.is_empty() || out.len() % planes.len() != 0 {
                return Err("per-plane stream has no planes or a ragged length");
            }
            let n = out.len() / planes.len();
            let mut rest = stored;
            for (k, p) in planes.iter().enumerate() {
                let len = usize::try_from(p.stored_len).map_err(|_| "plane too long")?;
                let (src, tail) = rest
                    .split_at_checked(len)
                    .ok_or("plane runs past the stream")?;
                rest = tail;
                // Planes before k are decoded: the last of them is k's context.
                let (done, todo) = out.split_at_mut(k * n);
                let dst = &mut todo[..n];
                match p.codec {
                    PlaneCodec::Raw if src.len() == dst.len() => dst.copy_from_slice(src),
                    PlaneCodec::Raw => return Err("raw plane length differs from the plane size"),
                    PlaneCodec::Zstd => zstd_into(src, dst)?,
                    PlaneCodec::Rans | PlaneCodec::Rans32 => {
                        let context = k.checked_sub(1).map(|j| &done[j * n..]);
                        let lanes = p.codec.rans_lanes().unwrap_or(Lanes::Four);
                        super::entropy::decode_plane_lanes(src, context, lanes, dst)?;
                    }
                    PlaneCodec::RansBase | PlaneCodec::RansBase32 => {
                        let ctx = base_ctx
                            .filter(|c| c.len() == n)
                            .ok_or("rANS plane needs the base as context, and none was given")?;
                        let lanes = p.codec.rans_lanes().unwrap_or(Lanes::Four);
                        super::entropy::decode_plane_lanes(src, Some(ctx), lanes, dst)?;
                    }
                }
            }
            if !rest.is_empty() {
                return Err("bytes left after the last plane");
            }
            Ok(())
        }
    }
}

/// Decodes one zstd frame into exactly `dst` (no decompression bombs: the
/// output buffer is the declared size, and a mismatch either way fails).
pub(crate) fn zstd_into(stored: &[u8], dst: &mut [u8]) -> Result<(), &'static str> {
    // A frame that declares its content size must declare exactly the
    // expected length: refuse a mismatch before decoding anything.
    match zstd::zstd_safe::get_frame_content_size(stored) {
        Ok(Some(n)) if n != dst.len() as u64 => {
            return Err("zstd frame declares a size other than the stream's raw length")
        }
        Err(_) => return Err("zstd frame header is corrupt"),
        _ => {}
    }
    // Exactly one frame, filling the stored bytes: libzstd would decode a
    // second frame appended after the first, which the spec forbids (§5.3).
    match zstd::zstd_safe::find_frame_compressed_size(stored) {
        Ok(n) if n == stored.len() => {}
        Ok(_) => return Err("bytes after the zstd frame"),
        Err(_) => return Err("zstd frame is truncated or corrupt"),
    }
    let n = DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = zstd::bulk::Decompressor::new().ok();
        }
        match d.as_mut() {
            Some(d) => d
                .decompress_to_buffer(stored, dst)
                .map_err(|_| "zstd frame is corrupt or larger than declared"),
            None => Err("cannot create a zstd decoder"),
        }
    })?;
    if n != dst.len() {
        return Err("zstd frame is shorter than declared");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zstd_stream(raw: &[u8]) -> (Stream, Vec<u8>) {
        let mut out = Vec::new();
        let s = compress(raw, 1, &mut out);
        assert_eq!(s.codec, Codec::Zstd);
        (s, out)
    }

    #[test]
    fn a_second_zstd_frame_is_refused() {
        let raw = vec![7u8; 4096];
        let (mut s, mut bytes) = zstd_stream(&raw);
        let mut out = vec![0u8; raw.len()];
        decompress_into(&s, &bytes, &mut out).unwrap();
        assert_eq!(out, raw);
        // Append a frame of nothing: libzstd alone would accept it.
        let empty = zstd::bulk::compress(&[], 1).unwrap();
        bytes.extend_from_slice(&empty);
        s.stored_len = bytes.len() as u64;
        assert_eq!(
            decompress_into(&s, &bytes, &mut out),
            Err("bytes after the zstd frame")
        );
    }

    #[test]
    fn per_plane_streams_keep_noise_planes_raw() {
        // Plane 0 compressible (constant), plane 1 pseudo-random noise.
        let n = 1 << 16;
        let mut x = 0x9e37_79b9u32;
        let mut planes = vec![3u8; n];
        planes.extend((0..n).map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        }));
        let mut bytes = Vec::new();
        let s = compress_planes(&planes, 2, 1, PlaneCoder::Zstd, &mut bytes);
        let Codec::PerPlane(p) = &s.codec else {
            panic!("not per-plane: {s:?}");
        };
        assert_eq!(p[0].codec, PlaneCodec::Zstd);
        assert_eq!(p[1].codec, PlaneCodec::Raw);
        let mut out = Vec::new();
        decompress(&s, &bytes, &mut out).unwrap();
        assert_eq!(out, planes);
    }

    /// Format 1.6 (spec §5.6.6): planes of at least the threshold get 32
    /// states, smaller ones 4, and a plane that codes to the constant mode
    /// keeps the 4-state codec (its bytes are the same) so that it does not
    /// raise the archive's minor; every stream decodes back.
    #[test]
    fn wide_planes_from_the_threshold_on_and_never_for_constant_planes() {
        let n = WIDE_MIN_PLANE;
        let mut x = 0x1234_5678u32;
        let mut skewed = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x % 5) as u8
                })
                .collect()
        };
        for (len, wide) in [(n - 1, false), (n, true)] {
            // Plane 0 skewed (rANS), plane 1 constant.
            let mut planes = skewed(len);
            planes.extend(std::iter::repeat_n(0x3f, len));
            let mut bytes = Vec::new();
            let s =
                compress_planes_with(&planes, 2, 1, PlaneCoder::Rans, None, Some(n), &mut bytes);
            let Codec::PerPlane(p) = &s.codec else {
                panic!("not per-plane: {s:?}");
            };
            let want = if wide {
                PlaneCodec::Rans32
            } else {
                PlaneCodec::Rans
            };
            assert_eq!((p[0].codec, p[1].codec), (want, PlaneCodec::Rans), "{len}");
            assert_eq!(p[1].stored_len, 2, "a constant plane");
            let mut out = Vec::new();
            decompress(&s, &bytes, &mut out).unwrap();
            assert_eq!(out, planes);
            // Without the option (format 1.5 and older): 4 states.
            let mut bytes = Vec::new();
            let s = compress_planes_with(&planes, 2, 1, PlaneCoder::Rans, None, None, &mut bytes);
            assert!(!s.uses_wide_rans(), "{len}");
        }
    }
}
