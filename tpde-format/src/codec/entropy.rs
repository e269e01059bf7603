//! Static, context-modelled rANS coder for one byte plane (spec §5.6).
//!
//! Why: the byte planes of weight deltas are very skewed but not repetitive —
//! an ADD delta of a bf16 fine-tune has an upper plane of mostly `00`/`FF`
//! and a lower plane whose distribution depends strongly on that upper byte.
//! zstd's LZ stage finds almost nothing there and its entropy stage codes
//! whole bits; an arithmetic coder gets within a fraction of a percent of
//! the entropy, and conditioning a plane on a few buckets of the more
//! significant plane of the same element captures most of the remaining
//! structure (bf16 fine-tune ADD deltas: 6.1× against zstd-1's 4.2× and
//! zstd-19's 4.7×).
//!
//! Design (the bitstream is specified byte by byte in `spec/FORMAT.md` §5.6):
//! - one mode byte: raw (incompressible or tiny planes), constant, or rANS;
//! - static frequency tables normalized to `2^scale` (the encoder tries 12
//!   to 14 per plane: 14 is up to 5% smaller on skewed planes, where rare
//!   symbols would otherwise each take `2^-12` of the range), one per
//!   context bucket, storing only the present symbols (byte runs) and their
//!   frequencies as exp-Golomb codes with a per-table parameter, the last
//!   frequency implied by the total;
//! - the context byte (the more significant plane of the same element) is
//!   mapped to at most [`MAX_BUCKETS`] buckets by an interval partition of
//!   `0..=255` stored in the stream, so encoders may improve the partition
//!   search without changing the format. The reference encoder starts from
//!   one interval per context value (so a bucket can isolate one exponent
//!   byte) and greedily merges adjacent buckets, keeping the partition
//!   with the smallest estimated size *including table bytes*; one bucket
//!   means no context;
//! - [`LANES`] interleaved 32-bit rANS states (lane `i mod LANES` codes
//!   symbol `i`) with 16-bit renormalization, states in `[2^16, 2^32)`; the
//!   decoder reads the final encoder states first and must end with every
//!   state back at `2^16` and every byte consumed, which rejects most
//!   corruption (the chunk CRC catches the rest);
//! - decoding uses, per bucket, a slot → symbol byte table and a symbol →
//!   (frequency, start) table (kept per thread and reused, so a plane pays
//!   only for the entries its tables define); renormalization is a branch on
//!   skewed planes (at most 2 coded bits per symbol, where it is rare) and
//!   branch-free otherwise. Both loops are instantiated per precision.
//!
//! Encoder decisions use integer fixed-point logarithms ([`log2_q16`]), so
//! the output is the same on every platform.

/// Mode byte: the plane is stored verbatim after the mode byte.
pub(crate) const MODE_RAW: u8 = 0;
/// Mode byte: every symbol equals the one byte that follows.
pub(crate) const MODE_CONST: u8 = 1;
/// Mode byte: rANS-coded (spec §5.6.2).
pub(crate) const MODE_RANS: u8 = 2;

/// Lower bound of the normalized state interval `[RANS_L, 2^32)`.
pub(crate) const RANS_L: u32 = 1 << 16;
/// Interleaved rANS states of a `Rans`/`RansBase` plane; symbol `i` is
/// coded by state `i % LANES`.
pub const LANES: usize = 4;
/// Interleaved rANS states of a (v1.6) `Rans32`/`RansBase32` plane: 32
/// independent states decode as four AVX2 vectors of eight, or one GPU warp.
pub const WIDE_LANES: usize = 32;

/// How many interleaved states a coded plane has (spec §5.6.4). The plane's
/// bytes do not say: like its length and its context, the container does
/// (the plane codec in the index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lanes {
    /// [`LANES`] states (format 1.1 on).
    Four,
    /// [`WIDE_LANES`] states (format 1.6 on).
    ThirtyTwo,
}

impl Lanes {
    /// The number of states.
    pub const fn count(self) -> usize {
        match self {
            Lanes::Four => LANES,
            Lanes::ThirtyTwo => WIDE_LANES,
        }
    }
}
/// Most context buckets a stream may declare (bounds decoder table memory:
/// `MAX_BUCKETS × 2^MAX_SCALE_BITS` bytes = 512 KiB).
pub const MAX_BUCKETS: usize = 16;
/// Smallest frequency-table precision (`log2` of the table total) a stream may declare.
pub const MIN_SCALE_BITS: u32 = 8;
/// Largest frequency-table precision a stream may declare. With states of
/// at least `2^16`, `x >> scale >= 2` keeps one 16-bit renormalization per
/// symbol sufficient and the coding loss negligible.
pub const MAX_SCALE_BITS: u32 = 15;
/// Precisions the reference encoder tries per plane (it keeps the smallest).
const SCALE_CANDIDATES: [u32; 3] = [12, 13, 14];
/// Precision the partition search estimates table costs at.
const SEARCH_SCALE_BITS: u32 = 14;
/// Average coded bits per symbol up to which the decoder renormalizes with
/// a branch (measured crossover on the fine-tune planes).
const BRANCHY_MAX_BITS: u64 = 2;
/// The reference encoder uses a context only where it saves at least this
/// many thousandths of the plane's estimated size: below that the speed cost
/// (see `choose_partition`) outweighs the gain.
const CTX_MIN_GAIN_PERMILLE: u32 = 20;
/// Largest exp-Golomb parameter a table may declare.
const MAX_GOLOMB_K: u32 = 14;
/// Buckets the reference encoder starts its merge from: the start of each
/// "signed log2" interval of the context byte.
const SIGNED_LOG2_STARTS: [u8; 16] = [
    0, 1, 2, 4, 8, 16, 32, 64, 128, 192, 224, 240, 248, 252, 254, 255,
];

/// Encoder knobs, exposed for the tuning benchmark only; the stream records
/// every choice, so any setting decodes with [`decode_plane`].
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// Frequency-table precision, clamped to `MIN_SCALE_BITS..=MAX_SCALE_BITS`;
    /// 0 tries [`SCALE_CANDIDATES`] and keeps the smallest.
    pub scale_bits: u32,
    /// Most buckets the encoder may choose (clamped to `1..=MAX_BUCKETS`).
    pub max_buckets: usize,
    /// Start the merge from every context value instead of the signed-log2 intervals.
    pub every_value: bool,
    /// Use a context only if it shrinks the estimated size by at least this
    /// many thousandths (it slows encoding and decoding; 0 = any gain).
    pub ctx_min_gain_permille: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        DEFAULT_TUNING
    }
}

/// The reference encoder's settings for planes of at least
/// [`EVERY_VALUE_MIN_PLANE`] bytes.
const DEFAULT_TUNING: Tuning = Tuning {
    scale_bits: 0,
    max_buckets: 16,
    every_value: true,
    ctx_min_gain_permille: CTX_MIN_GAIN_PERMILLE,
};

/// Encodes `plane` (one byte per element). `context`, when given, is the more
/// significant plane of the same elements (same length); the symbol model is
/// conditioned on a small bucket of it. A context of another length is
/// ignored (the plane is then coded without one, which still decodes).
///
/// The output never exceeds `plane.len() + 1` bytes (the raw fallback).
pub fn encode_plane(plane: &[u8], context: Option<&[u8]>, out: &mut Vec<u8>) {
    encode_plane_with(
        plane,
        context,
        default_tuning(plane.len()),
        Lanes::Four,
        out,
    )
}

/// The reference encoder's settings for a plane of `n` symbols.
#[doc(hidden)]
pub fn default_tuning(n: usize) -> &'static Tuning {
    if n < EVERY_VALUE_MIN_PLANE {
        &SMALL_PLANE_TUNING
    } else {
        &DEFAULT_TUNING
    }
}

/// Planes shorter than this start the context partition search from the 16
/// signed-log2 intervals, not from every context value: the search from
/// every value costs about the same (a few milliseconds) on a tiny plane as
/// on a large one, which made a fuzzer's checkpoint of ~6,000 small chunks
/// take 22 s to pack, and small planes' tables cannot pay for 16 buckets.
const EVERY_VALUE_MIN_PLANE: usize = 4096;

/// The encoder settings for planes under [`EVERY_VALUE_MIN_PLANE`] bytes
/// (those of the session-2 writer).
const SMALL_PLANE_TUNING: Tuning = Tuning {
    scale_bits: 0,
    max_buckets: 8,
    every_value: false,
    ctx_min_gain_permille: CTX_MIN_GAIN_PERMILLE,
};

/// [`encode_plane`] with [`WIDE_LANES`] states (a v1.6 `Rans32` plane):
/// the same model and tables, a stream that decodes 1.5–2× faster with
/// AVX2 for 112 more bytes of states.
pub fn encode_plane_wide(plane: &[u8], context: Option<&[u8]>, out: &mut Vec<u8>) {
    encode_plane_with(
        plane,
        context,
        default_tuning(plane.len()),
        Lanes::ThirtyTwo,
        out,
    )
}

/// [`encode_plane`] with explicit encoder knobs (benchmarks and tests).
#[doc(hidden)]
pub fn encode_plane_tuned(
    plane: &[u8],
    context: Option<&[u8]>,
    tuning: &Tuning,
    out: &mut Vec<u8>,
) {
    encode_plane_with(plane, context, tuning, Lanes::Four, out)
}

/// [`encode_plane_tuned`] with `lanes` interleaved states.
#[doc(hidden)]
pub fn encode_plane_with(
    plane: &[u8],
    context: Option<&[u8]>,
    tuning: &Tuning,
    lanes: Lanes,
    out: &mut Vec<u8>,
) {
    let n = plane.len();
    let Some(&first) = plane.first() else {
        out.push(MODE_RAW);
        return;
    };
    if plane.iter().all(|&b| b == first) {
        out.extend_from_slice(&[MODE_CONST, first]);
        return;
    }
    let start = out.len();
    let max_buckets = tuning.max_buckets.clamp(1, MAX_BUCKETS);
    let context = context.filter(|c| c.len() == n && max_buckets > 1);
    let model = match context {
        Some(ctx) => choose_partition(
            plane,
            ctx,
            max_buckets,
            tuning.every_value,
            tuning.ctx_min_gain_permille,
        ),
        None => {
            let mut h = vec![0u64; 256];
            histogram(plane, &mut h);
            Model {
                starts: vec![0],
                hists: h,
            }
        }
    };
    let buckets = model.starts.len();
    // Frequency tables at the precision that minimizes tables + payload.
    let scales: &[u32] = if tuning.scale_bits == 0 {
        &SCALE_CANDIDATES
    } else {
        &[0]
    };
    let mut best: Option<(u128, u32, Vec<[u32; 256]>)> = None;
    for &s in scales {
        let scale = if s == 0 {
            tuning.scale_bits.clamp(MIN_SCALE_BITS, MAX_SCALE_BITS)
        } else {
            s
        };
        let mut cost: u128 = 0;
        let mut tables = Vec::with_capacity(buckets);
        let mut scratch = Vec::new();
        for h in model.hists.chunks_exact(256) {
            let f = normalize(h, scale);
            scratch.clear();
            write_table(&f, &mut scratch);
            cost += (scratch.len() as u128) << 19; // bytes -> Q16 bits
            for (&c, &fs) in h.iter().zip(f.iter()) {
                if c > 0 {
                    let bits = (u64::from(scale) << 16) - log2_q16(u64::from(fs));
                    cost += u128::from(c) * u128::from(bits);
                }
            }
            tables.push(f);
        }
        if best.as_ref().is_none_or(|(c, _, _)| cost < *c) {
            best = Some((cost, scale, tables));
        }
    }
    // Clearly incompressible (estimate, tables included, above the raw size
    // by more than its ~0.1% error): store raw without running the coder.
    // (`best` is always set: there is at least one candidate scale.)
    let Some((best_cost, scale, tables)) =
        best.filter(|(c, _, _)| c >> 19 <= (n as u128 + 1) * 1025 / 1024)
    else {
        out.push(MODE_RAW);
        out.extend_from_slice(plane);
        return;
    };
    out.push(MODE_RANS);
    out.push(scale as u8);
    out.push(buckets as u8);
    out.extend(model.starts.iter().skip(1).map(|&s| s as u8));
    let mut enc: Box<[EncSym; ENC_LEN]> = Box::new([EncSym::default(); ENC_LEN]);
    for (f, e) in tables.iter().zip(enc.chunks_exact_mut(256)) {
        write_table(f, out);
        enc_symbols(f, scale, e);
    }
    // Context byte -> bucket << 8 (the bucket's rows in `enc`).
    let mut bucket_of = [0u16; 256];
    for (b, w) in model.starts.windows(2).enumerate() {
        for slot in bucket_of.iter_mut().skip(usize::from(w[1])) {
            *slot = ((b + 1) << 8) as u16;
        }
    }
    // Emit with a branch where words are rare (as the decoder does).
    let branchy = best_cost >> 16 <= u128::from(BRANCHY_MAX_BITS) * n as u128;
    // The word buffer is this thread's, reused: a fresh one per plane was
    // zeroed and page-faulted in (2 bytes per symbol) every time.
    let buf = WORD_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    let ctx = context.filter(|_| buckets > 1);
    let mut states = [0u32; WIDE_LANES];
    macro_rules! encode {
        ($n:expr) => {{
            let (x, wb) = match (ctx, branchy) {
                (Some(c), true) => {
                    rans_encode::<true, true, $n>(plane, c, &bucket_of, &enc, scale, buf)
                }
                (Some(c), false) => {
                    rans_encode::<true, false, $n>(plane, c, &bucket_of, &enc, scale, buf)
                }
                (None, true) => {
                    rans_encode::<false, true, $n>(plane, plane, &bucket_of, &enc, scale, buf)
                }
                (None, false) => {
                    rans_encode::<false, false, $n>(plane, plane, &bucket_of, &enc, scale, buf)
                }
            };
            states[..$n].copy_from_slice(&x);
            wb
        }};
    }
    let wb = match lanes {
        Lanes::Four => encode!(LANES),
        Lanes::ThirtyTwo => encode!(WIDE_LANES),
    };
    let states = &states[..lanes.count()];
    let words = wb.words();
    let coded = out.len() - start + states.len() * 4 + 2 * words.len();
    if coded > n {
        out.truncate(start);
        out.push(MODE_RAW);
        out.extend_from_slice(plane);
    } else {
        for s in states {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.reserve(2 * words.len());
        for w in words {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    WORD_BUF.with(|b| *b.borrow_mut() = wb.buf);
}

thread_local! {
    /// The encoder's word buffer ([`rans_encode`]), kept per thread.
    static WORD_BUF: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The chosen context model: bucket `b` covers context bytes
/// `starts[b] .. starts[b + 1]` (the last up to 255) and has symbol counts
/// `hists[256 b .. 256 (b + 1)]`.
struct Model {
    starts: Vec<u16>,
    hists: Vec<u64>,
}

/// Adds the symbol counts of `data` to `h` (256 entries). Four sub-histograms
/// so runs of one symbol do not serialize on one counter.
fn histogram(data: &[u8], h: &mut [u64]) {
    let mut sub = [[0u32; 256]; 4];
    // u32 counters: flush before any of them could overflow.
    for part in data.chunks(1 << 30) {
        let mut quads = part.chunks_exact(4);
        for q in &mut quads {
            sub[0][usize::from(q[0])] += 1;
            sub[1][usize::from(q[1])] += 1;
            sub[2][usize::from(q[2])] += 1;
            sub[3][usize::from(q[3])] += 1;
        }
        for &b in quads.remainder() {
            sub[0][usize::from(b)] += 1;
        }
        for s in sub.iter_mut() {
            for (t, c) in h.iter_mut().zip(s.iter_mut()) {
                *t += u64::from(*c);
                *c = 0;
            }
        }
    }
}

/// Picks the interval partition of the context byte (at most `max_buckets`
/// buckets) with the smallest estimated size, tables included.
fn choose_partition(
    plane: &[u8],
    ctx: &[u8],
    max_buckets: usize,
    every_value: bool,
    min_gain_permille: u32,
) -> Model {
    // Initial intervals: index of the interval of each context byte.
    let init_starts: Vec<u16> = if every_value {
        (0..256).collect()
    } else {
        SIGNED_LOG2_STARTS.iter().map(|&s| u16::from(s)).collect()
    };
    // Only the intervals some context byte falls in get a row of the joint
    // histogram (bf16 planes use a few dozen exponent bytes of 256), so the
    // counters stay in cache; `init_starts` keeps one entry per row. Empty
    // intervals would be dropped below anyway: the partition is the same.
    let mut seen = [false; 256];
    for &c in ctx {
        seen[usize::from(c)] = true;
    }
    let mut interval_of = [0usize; 256];
    for (i, w) in init_starts.iter().enumerate() {
        for slot in interval_of.iter_mut().skip(usize::from(*w)) {
            *slot = i;
        }
    }
    let mut used = vec![false; init_starts.len()];
    for (c, &s) in seen.iter().enumerate() {
        if s {
            used[interval_of[c]] = true;
        }
    }
    let mut row_of = vec![0usize; init_starts.len()];
    let init_starts: Vec<u16> = init_starts
        .iter()
        .zip(&used)
        .enumerate()
        .filter(|(_, (_, &u))| u)
        .enumerate()
        .map(|(row, (i, (&s, _)))| {
            row_of[i] = row;
            s
        })
        .collect();
    let mut init_of = [0u16; 256];
    for (c, slot) in init_of.iter_mut().enumerate() {
        *slot = (row_of[interval_of[c]] << 8) as u16;
    }
    let k = init_starts.len();
    let mut joint = vec![0u64; k * 256];
    {
        // Four u32 sub-histograms (runs of one bin would otherwise
        // serialize on one counter), flushed to u64 per part.
        let len = k * 256;
        let mut sub = vec![0u32; 4 * len];
        for (pp, cp) in plane.chunks(1 << 30).zip(ctx.chunks(1 << 30)) {
            let mut quads_p = pp.chunks_exact(4);
            let mut quads_c = cp.chunks_exact(4);
            let bin = |p: u8, c: u8| usize::from(init_of[usize::from(c)]) | usize::from(p);
            for (p, c) in (&mut quads_p).zip(&mut quads_c) {
                sub[bin(p[0], c[0])] += 1;
                sub[len + bin(p[1], c[1])] += 1;
                sub[2 * len + bin(p[2], c[2])] += 1;
                sub[3 * len + bin(p[3], c[3])] += 1;
            }
            for (&p, &c) in quads_p.remainder().iter().zip(quads_c.remainder()) {
                sub[bin(p, c)] += 1;
            }
            for part in sub.chunks_exact_mut(len) {
                for (j, x) in joint.iter_mut().zip(part.iter_mut()) {
                    *j += u64::from(*x);
                    *x = 0;
                }
            }
        }
    }
    // Non-empty intervals become the initial buckets; an empty interval's
    // context bytes join the bucket before it (or the first one).
    let mut starts: Vec<u16> = Vec::with_capacity(k);
    let mut hists: Vec<u64> = Vec::with_capacity(k * 256);
    for (i, h) in joint.chunks_exact(256).enumerate() {
        if h.iter().any(|&c| c > 0) {
            starts.push(if starts.is_empty() { 0 } else { init_starts[i] });
            hists.extend_from_slice(h);
        }
    }
    let mut costs: Vec<u64> = hists.chunks_exact(256).map(bucket_cost).collect();
    // Cost change of merging bucket i with bucket i + 1 (one cut byte fewer).
    let merged_delta = |hists: &[u64], costs: &[u64], i: usize| -> i128 {
        let mut m = [0u64; 256];
        for (s, slot) in m.iter_mut().enumerate() {
            *slot = hists[i * 256 + s] + hists[(i + 1) * 256 + s];
        }
        i128::from(bucket_cost(&m))
            - i128::from(costs[i])
            - i128::from(costs[i + 1])
            - i128::from(CUT_COST)
    };
    let mut deltas: Vec<i128> = (0..starts.len().saturating_sub(1))
        .map(|i| merged_delta(&hists, &costs, i))
        .collect();
    let total = |costs: &[u64]| -> u128 {
        costs.iter().map(|&c| u128::from(c)).sum::<u128>()
            + u128::from(CUT_COST) * (costs.len() as u128).saturating_sub(1)
    };
    let mut best: Option<(u128, Vec<u16>)> = None;
    if starts.len() <= max_buckets {
        best = Some((total(&costs), starts.clone()));
    }
    while starts.len() > 1 {
        let Some((i, _)) = deltas.iter().enumerate().min_by_key(|&(i, &d)| (d, i)) else {
            break;
        };
        for s in 0..256 {
            hists[i * 256 + s] += hists[(i + 1) * 256 + s];
        }
        hists.drain((i + 1) * 256..(i + 2) * 256);
        starts.remove(i + 1);
        costs[i] = bucket_cost(&hists[i * 256..(i + 1) * 256]);
        costs.remove(i + 1);
        deltas.remove(i);
        if i < deltas.len() {
            deltas[i] = merged_delta(&hists, &costs, i);
        }
        if i > 0 {
            deltas[i - 1] = merged_delta(&hists, &costs, i - 1);
        }
        if starts.len() <= max_buckets {
            let t = total(&costs);
            if best.as_ref().is_none_or(|(b, _)| t < *b) {
                best = Some((t, starts.clone()));
            }
        }
    }
    // The loop ends at one bucket, whose cost `total(&costs)` now is: keep
    // a context only where it saves at least `min_gain_permille`, since it
    // costs speed (encode ~25-40% slower, decode ~15-20%).
    let one = total(&costs);
    let chosen = match best {
        Some((b, s)) if b * 1000 < one * u128::from(1000 - min_gain_permille.min(1000)) => s,
        _ => vec![0],
    };
    // Recount per chosen bucket from the joint initial-interval counts.
    let mut out_h = vec![0u64; chosen.len() * 256];
    for (i, h) in joint.chunks_exact(256).enumerate() {
        let b = chosen
            .iter()
            .rposition(|&s| s <= init_starts[i])
            .unwrap_or(0);
        for (t, &c) in out_h[b * 256..(b + 1) * 256].iter_mut().zip(h) {
            *t += c;
        }
    }
    Model {
        starts: chosen,
        hists: out_h,
    }
}

/// One cut byte, in Q16 bits.
const CUT_COST: u64 = 8 << 16;

/// Estimated bits (Q16) to code the symbols counted in `h` plus their table,
/// at [`SEARCH_SCALE_BITS`] (frequencies approximated proportionally).
fn bucket_cost(h: &[u64]) -> u64 {
    let total: u64 = h.iter().sum();
    if total == 0 {
        return 0;
    }
    // Entropy: N log2 N - sum c log2 c.
    let mut sum_clogc: u128 = 0;
    let mut run_bytes: u64 = 1;
    let mut prev_present = false;
    let mut fm1 = [0u64; 256];
    let mut present = 0usize;
    for &c in h {
        let here = c > 0;
        if here {
            sum_clogc += u128::from(c) * u128::from(log2_q16(c));
            let f = ((u128::from(c) << SEARCH_SCALE_BITS) / u128::from(total)).max(1) as u64;
            fm1[present] = f - 1;
            present += 1;
            if !prev_present {
                run_bytes += 2;
            }
        }
        prev_present = here;
    }
    let coded = &fm1[..present.saturating_sub(1)];
    let table_bits = run_bytes * 8
        + if coded.is_empty() {
            0
        } else {
            8 + best_golomb(coded).1
        };
    let ent = (u128::from(total) * u128::from(log2_q16(total))).saturating_sub(sum_clogc);
    (ent.min(u128::from(u64::MAX >> 1)) as u64).saturating_add(table_bits << 16)
}

/// `log2(1 + i/256)` in Q16 for `i = 0..=256`, computed at compile time by
/// integer squaring so the encoder's decisions are platform-independent.
const LOG2_FRAC: [u32; 257] = {
    let mut t = [0u32; 257];
    let mut i = 0;
    while i <= 256 {
        // y = 1 + i/256 in Q62.
        let mut y: u128 = (256 + i as u128) << 54;
        let mut r: u32 = 0;
        let mut bit = 0;
        while bit < 20 {
            y = (y * y) >> 62;
            r <<= 1;
            if y >= 2 << 62 {
                y >>= 1;
                r |= 1;
            }
            bit += 1;
        }
        // r is log2 in Q20; round to Q16.
        t[i] = (r + 8) >> 4;
        i += 1;
    }
    t
};

/// `log2(x)` in Q16 fixed point for `x >= 1` (0 for 0), by table and linear
/// interpolation; error below 2e-5 bits, monotone.
#[doc(hidden)]
pub fn log2_q16(x: u64) -> u64 {
    if x == 0 {
        return 0;
    }
    let e = 63 - x.leading_zeros();
    // Mantissa bits below the leading one, left-aligned in 63 bits.
    let m = (x << (63 - e)) & !(1u64 << 63);
    let idx = (m >> 55) as usize; // top 8 fraction bits
    let frac = (m >> 39) & 0xffff; // next 16 bits
    let (a, b) = (u64::from(LOG2_FRAC[idx]), u64::from(LOG2_FRAC[idx + 1]));
    (u64::from(e) << 16) + a + (((b - a) * frac) >> 16)
}

/// Quantizes counts `h` (256 entries, not all zero) to frequencies summing
/// to exactly `2^scale`, every present symbol at least 1: proportional
/// rounding, then the cheapest unit corrections by marginal cost.
fn normalize(h: &[u64], scale: u32) -> [u32; 256] {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let m = 1u64 << scale;
    let total: u64 = h.iter().sum();
    let mut f = [0u32; 256];
    let mut sum: u64 = 0;
    for (fs, &c) in f.iter_mut().zip(h) {
        if c > 0 {
            let v = ((u128::from(c) << scale) + u128::from(total / 2)) / u128::from(total);
            *fs = (v as u64).clamp(1, m) as u32;
            sum += u64::from(*fs);
        }
    }
    // Marginal cost (Q16 bits) of f -> f - 1, and gain of f -> f + 1.
    let step = |f: u64| log2_q16(f + 1).saturating_sub(log2_q16(f));
    let dec_cost = |c: u64, f: u32| c.saturating_mul(step(u64::from(f) - 1));
    let inc_gain = |c: u64, f: u32| c.saturating_mul(step(u64::from(f)));
    if sum > m {
        // Present symbols <= 256 <= m, so enough units can always be taken.
        let mut heap: BinaryHeap<Reverse<(u64, u8)>> = f
            .iter()
            .enumerate()
            .filter(|&(_, &fs)| fs > 1)
            .map(|(s, &fs)| Reverse((dec_cost(h[s], fs), s as u8)))
            .collect();
        while sum > m {
            let Some(Reverse((_, s))) = heap.pop() else {
                break;
            };
            let s = usize::from(s);
            f[s] -= 1;
            sum -= 1;
            if f[s] > 1 {
                heap.push(Reverse((dec_cost(h[s], f[s]), s as u8)));
            }
        }
    } else if sum < m {
        let mut heap: BinaryHeap<(u64, Reverse<u8>)> = f
            .iter()
            .enumerate()
            .filter(|&(_, &fs)| fs > 0)
            .map(|(s, &fs)| (inc_gain(h[s], fs), Reverse(s as u8)))
            .collect();
        while sum < m {
            let Some((_, Reverse(s))) = heap.pop() else {
                break;
            };
            let s = usize::from(s);
            f[s] += 1;
            sum += 1;
            heap.push((inc_gain(h[s], f[s]), Reverse(s as u8)));
        }
    }
    f
}

/// The order `k <= MAX_GOLOMB_K` that codes `values` in about the fewest
/// bits, and about those bits. Estimated from the values' bit lengths (a
/// value of bit length `e > k` takes `2 (e - k - 1) + 1 + k` bits, one fewer
/// than exact when `v >> k` is all ones), so choosing costs O(values + 15·17)
/// instead of 15 passes; any order decodes, this only picks a good one.
fn best_golomb(values: &[u64]) -> (u32, u64) {
    let mut lens = [0u64; 65];
    for &v in values {
        lens[(64 - v.leading_zeros()) as usize] += 1;
    }
    (0..=MAX_GOLOMB_K)
        .map(|k| {
            let bits = lens
                .iter()
                .enumerate()
                .map(|(e, &c)| {
                    let e = e as u64;
                    let k = u64::from(k);
                    c * if e <= k {
                        1 + k
                    } else {
                        2 * (e - k - 1) + 1 + k
                    }
                })
                .sum::<u64>();
            (k, bits)
        })
        .min_by_key(|&(k, bits)| (bits, k))
        .unwrap_or((0, 0))
}

/// LSB-first bit writer (spec §5.6.3.3).
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter<'_> {
    /// Appends the low `bits` bits of `v` (`bits <= 32`), least significant first.
    fn put(&mut self, v: u64, bits: u32) {
        self.acc |= (v & ((1u64 << bits) - 1)) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }
    /// Pads with zero bits to a byte boundary.
    fn finish(self) {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
    }
}

/// Appends a frequency table (spec §5.6.3): present-symbol runs,
/// then, unless one symbol has everything, the exp-Golomb order and the
/// codes of `f - 1` for every present symbol but the last.
fn write_table(f: &[u32; 256], out: &mut Vec<u8>) {
    let count_at = out.len();
    out.push(0);
    let mut runs = 0u8;
    let mut s = 0usize;
    let mut prev_end = 0usize;
    while s < 256 {
        if f[s] == 0 {
            s += 1;
            continue;
        }
        let run_start = s;
        while s < 256 && f[s] > 0 {
            s += 1;
        }
        out.push((run_start - prev_end) as u8);
        out.push((s - run_start - 1) as u8);
        prev_end = s;
        runs += 1;
    }
    out[count_at] = runs;
    let mut values: Vec<u64> = f
        .iter()
        .filter(|&&x| x > 0)
        .map(|&x| u64::from(x) - 1)
        .collect();
    values.pop(); // the last frequency is implied
    if values.is_empty() {
        return;
    }
    let (k, _) = best_golomb(&values);
    out.push(k as u8);
    let mut w = BitWriter { out, acc: 0, n: 0 };
    for v in values {
        let u = (v >> k) + 1;
        let m = 63 - u.leading_zeros();
        w.put((1u64 << m) - 1, m); // m one bits
        w.put(0, 1);
        w.put(u, m); // u without its leading one
        w.put(v, k);
    }
    w.finish();
}

/// Precomputed encoder step for one (bucket, symbol): the division by `freq`
/// replaced by a multiply (Granlund–Montgomery, exact for 32-bit states).
#[derive(Clone, Copy, Default)]
struct EncSym {
    /// Low 32 bits of `m = ceil(2^(32+shift) / freq)` (`m` is in `[2^32, 2^33)`).
    m_lo: u32,
    /// Renormalize (emit 16 bits) when `x >> (32 - scale) >= freq`.
    freq: u16,
    /// Cumulative frequency of the symbols before this one.
    start: u16,
    /// `2^scale - freq`.
    cmpl: u16,
    /// `ceil(log2(freq))`.
    shift: u8,
}

fn enc_symbols(f: &[u32; 256], scale: u32, enc: &mut [EncSym]) {
    let mut start = 0u32;
    for (&fs, e) in f.iter().zip(enc.iter_mut()) {
        if fs == 0 {
            continue;
        }
        let shift = 32 - (fs - 1).leading_zeros(); // ceil(log2 fs); 0 for 1
        let m = (1u128 << (32 + shift)).div_ceil(u128::from(fs));
        *e = EncSym {
            m_lo: (m - (1u128 << 32)) as u32,
            freq: fs as u16,
            start: start as u16,
            cmpl: ((1u32 << scale) - fs) as u16,
            shift: shift as u8,
        };
        start += fs;
    }
}

/// `floor(x / freq)` through the precomputed reciprocal.
#[inline(always)]
fn enc_div(x: u32, e: &EncSym) -> u32 {
    let x = u64::from(x);
    ((x + ((x * u64::from(e.m_lo)) >> 32)) >> e.shift) as u32
}

/// Entries of the encoder's `(bucket << 8) | symbol` table.
const ENC_LEN: usize = MAX_BUCKETS * 256;

/// rANS-encodes `plane` backwards, filling a word buffer from its end, so
/// the words come out in stream order. Returns the final states (lane
/// order) and the words. `bucket_of` maps a context byte to `bucket << 8`;
/// without a context (`CTX == false`) `ctx` is not read. `BRANCHY` emits
/// with a branch (cheaper where words are rare, i.e. on skewed planes).
fn rans_encode<const CTX: bool, const BRANCHY: bool, const N: usize>(
    plane: &[u8],
    ctx: &[u8],
    bucket_of: &[u16; 256],
    enc: &[EncSym; ENC_LEN],
    scale: u32,
    mut buf: Vec<u16>,
) -> ([u32; N], WordBuf) {
    let n = plane.len();
    let mut x = [RANS_L; N];
    // At most one word per symbol, written downwards from the end; one
    // spare slot absorbs the unconditional store of the branch-free emit.
    // Only written words are read back: a reused buffer is not cleared.
    buf.resize(n + 1, 0);
    let mut wp = buf.len();
    let shift = 32 - scale;
    let mut put = |x: u32, s: u8, c: u8| -> u32 {
        let b = if CTX {
            usize::from(bucket_of[usize::from(c)])
        } else {
            0
        };
        let e = &enc[(b | usize::from(s)) & (ENC_LEN - 1)];
        let need = (x >> shift) >= u32::from(e.freq);
        let x = if BRANCHY {
            if need {
                wp -= 1;
                if let Some(w) = buf.get_mut(wp) {
                    *w = x as u16;
                }
                x >> 16
            } else {
                x
            }
        } else {
            // Always store, advance only when needed; arithmetic select
            // (an `if` compiles to a mispredicted branch).
            if let Some(w) = buf.get_mut(wp.wrapping_sub(1)) {
                *w = x as u16;
            }
            wp -= usize::from(need);
            x >> (u32::from(need) << 4)
        };
        let q = enc_div(x, e);
        x.wrapping_add(u32::from(e.start))
            .wrapping_add(q.wrapping_mul(u32::from(e.cmpl)))
    };
    let full = n - n % N;
    for i in (full..n).rev() {
        let c = if CTX {
            ctx.get(i).copied().unwrap_or(0)
        } else {
            0
        };
        x[i % N] = put(x[i % N], plane[i], c);
    }
    let ctx_full = if CTX { &ctx[..full] } else { &plane[..full] };
    for (p, c) in plane[..full]
        .chunks_exact(N)
        .zip(ctx_full.chunks_exact(N))
        .rev()
    {
        for j in (0..N).rev() {
            x[j] = put(x[j], p[j], c[j]);
        }
    }
    (x, WordBuf { buf, start: wp })
}

/// Encoded words: `buf[start..]`.
struct WordBuf {
    buf: Vec<u16>,
    start: usize,
}

impl WordBuf {
    fn words(&self) -> &[u16] {
        self.buf.get(self.start..).unwrap_or(&[])
    }
}

/// Decodes exactly `out.len()` symbols. Hostile input: never panics, allocates
/// only the decode tables (at most `MAX_BUCKETS × 2^15` bytes plus 16 KiB),
/// and rejects malformed tables or streams — including any byte left unread
/// and final states other than the encoder's initial ones — with `Err`.
pub fn decode_plane(
    bytes: &[u8],
    context: Option<&[u8]>,
    out: &mut [u8],
) -> Result<(), &'static str> {
    decode_plane_lanes(bytes, context, Lanes::Four, out)
}

/// [`decode_plane`] for a plane of `lanes` interleaved states (the
/// container says how many: spec §5.6.4). A 32-state plane decodes with
/// AVX2 where the CPU has it, else with the portable loop; both give the
/// same bytes and the same errors for any input.
pub fn decode_plane_lanes(
    bytes: &[u8],
    context: Option<&[u8]>,
    lanes: Lanes,
    out: &mut [u8],
) -> Result<(), &'static str> {
    decode_plane_impl(bytes, context, lanes, simd_available(), out)
}

/// [`decode_plane_lanes`] on the portable loop only (tests and fuzzing
/// compare it with the AVX2 decoder).
#[doc(hidden)]
pub fn decode_plane_portable(
    bytes: &[u8],
    context: Option<&[u8]>,
    lanes: Lanes,
    out: &mut [u8],
) -> Result<(), &'static str> {
    decode_plane_impl(bytes, context, lanes, false, out)
}

/// Whether the wide decoder's AVX2 loop can run here (detected once by
/// `std` and cached).
fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn decode_plane_impl(
    bytes: &[u8],
    context: Option<&[u8]>,
    lanes: Lanes,
    simd: bool,
    out: &mut [u8],
) -> Result<(), &'static str> {
    let (&mode, rest) = bytes.split_first().ok_or("entropy: empty stream")?;
    match mode {
        MODE_RAW => {
            if rest.len() != out.len() {
                return Err("entropy: raw plane length mismatch");
            }
            out.copy_from_slice(rest);
            Ok(())
        }
        MODE_CONST => match rest {
            [b] => {
                out.fill(*b);
                Ok(())
            }
            _ => Err("entropy: constant plane must be one byte"),
        },
        MODE_RANS => decode_rans(rest, context, lanes, simd, out),
        _ => Err("entropy: unknown mode"),
    }
}

/// A bounds-checked reader over the header and tables.
pub(crate) struct Cursor<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) p: usize,
}

impl Cursor<'_> {
    pub(crate) fn u8(&mut self) -> Result<u8, &'static str> {
        let v = *self.b.get(self.p).ok_or("entropy: truncated header")?;
        self.p += 1;
        Ok(v)
    }
}

/// LSB-first bit reader over a cursor's bytes (spec §5.6.3.3).
struct BitReader<'c, 'a> {
    c: &'c mut Cursor<'a>,
    acc: u64,
    n: u32,
}

impl BitReader<'_, '_> {
    fn get(&mut self, bits: u32) -> Result<u64, &'static str> {
        while self.n < bits {
            self.acc |= u64::from(self.c.u8()?) << self.n;
            self.n += 8;
        }
        let v = self.acc & ((1u64 << bits) - 1);
        self.acc >>= bits;
        self.n -= bits;
        Ok(v)
    }
}

/// Entries of the slot -> symbol table: every bucket at the largest precision.
pub(crate) const SYM_LEN: usize = MAX_BUCKETS << MAX_SCALE_BITS;
/// Bytes after the slot -> symbol table's last entry: the AVX2 decoder
/// gathers each symbol as the low byte of a 4-byte load.
pub(crate) const SYM_PAD: usize = 4;
/// Entries of the `(bucket, symbol)` -> `freq << 16 | start` table.
pub(crate) const INFO_LEN: usize = MAX_BUCKETS * 256;

/// Decode tables, sized for the largest stream so that every index can be
/// masked into range (no bounds checks in the hot loop). Only the entries a
/// stream's tables define are read; stale ones from an earlier plane are not.
pub(crate) struct DecTables {
    /// `(bucket << scale) | slot` -> symbol, then [`SYM_PAD`] spare bytes.
    pub(crate) sym: Box<[u8; SYM_LEN + SYM_PAD]>,
    /// `(bucket << 8) | symbol` -> `freq << 16 | start`.
    pub(crate) info: Box<[u32; INFO_LEN]>,
}

impl DecTables {
    fn new() -> Option<Box<DecTables>> {
        Some(Box::new(DecTables {
            sym: vec![0u8; SYM_LEN + SYM_PAD]
                .into_boxed_slice()
                .try_into()
                .ok()?,
            info: vec![0u32; INFO_LEN].into_boxed_slice().try_into().ok()?,
        }))
    }
}

thread_local! {
    /// One set of decode tables per thread (528 KiB), reused across planes:
    /// building a plane's tables then costs only the entries it defines, not
    /// an allocation and clearing of the whole size.
    static TABLES: std::cell::RefCell<Option<Box<DecTables>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's decode tables (fresh ones if they are in use
/// or thread-local storage is gone).
pub(crate) fn with_tables<R>(
    f: impl FnOnce(&mut DecTables) -> Result<R, &'static str>,
) -> Result<R, &'static str> {
    let cached = TABLES
        .try_with(|t| t.try_borrow_mut().ok().map(|mut b| b.take()))
        .ok()
        .flatten()
        .flatten();
    let mut tables = match cached {
        Some(t) => t,
        None => DecTables::new().ok_or("entropy: cannot allocate decode tables")?,
    };
    let r = f(&mut tables);
    let _ = TABLES.try_with(|t| {
        if let Ok(mut slot) = t.try_borrow_mut() {
            *slot = Some(tables);
        }
    });
    r
}

/// Reads a rANS plane's `scale`, bucket count and cuts (spec §5.6.2), after
/// its mode byte: returns the scale, the bucket count and the context byte
/// -> bucket map. Shared with [`super::rans_layout`], so both readers check
/// the same things in the same order.
pub(crate) fn read_header(c: &mut Cursor<'_>) -> Result<(u32, usize, [u8; 256]), &'static str> {
    let scale = u32::from(c.u8()?);
    if !(MIN_SCALE_BITS..=MAX_SCALE_BITS).contains(&scale) {
        return Err("entropy: scale out of range");
    }
    let buckets = usize::from(c.u8()?);
    if !(1..=MAX_BUCKETS).contains(&buckets) {
        return Err("entropy: bucket count out of range");
    }
    // Context byte -> bucket.
    let mut bucket_of = [0u8; 256];
    let mut prev = 0u8;
    for b in 1..buckets {
        let cut = c.u8()?;
        if cut <= prev {
            return Err("entropy: bucket cuts not strictly increasing");
        }
        for slot in bucket_of.iter_mut().skip(usize::from(cut)) {
            *slot = b as u8;
        }
        prev = cut;
    }
    Ok((scale, buckets, bucket_of))
}

fn decode_rans(
    bytes: &[u8],
    context: Option<&[u8]>,
    lanes: Lanes,
    simd: bool,
    out: &mut [u8],
) -> Result<(), &'static str> {
    let mut c = Cursor { b: bytes, p: 0 };
    let (scale, buckets, bucket_of) = read_header(&mut c)?;
    let ctx = if buckets > 1 {
        match context {
            Some(ctx) if ctx.len() == out.len() => ctx,
            Some(_) => return Err("entropy: context length differs from the plane"),
            None => return Err("entropy: stream needs a context plane"),
        }
    } else {
        &[][..]
    };
    with_tables(|t| {
        for b in 0..buckets {
            read_table(&mut c, scale, b, t)?;
        }
        match lanes {
            Lanes::Four => decode_body(bytes.get(c.p..), t, &bucket_of, ctx, scale, out),
            Lanes::ThirtyTwo => {
                decode_body_wide(bytes.get(c.p..), t, &bucket_of, ctx, scale, simd, out)
            }
        }
    })
}

/// Splits the bytes after the tables into `N` states (each `>= 2^16`) and
/// the words (an even number of bytes).
fn states_and_words<const N: usize>(
    body: Option<&[u8]>,
) -> Result<([u32; N], &[u8]), &'static str> {
    let body = body.ok_or("entropy: truncated header")?;
    let (state_bytes, words) = body
        .split_at_checked(N * 4)
        .ok_or("entropy: truncated states")?;
    let mut x = [0u32; N];
    for (xs, b) in x.iter_mut().zip(state_bytes.chunks_exact(4)) {
        *xs = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if *xs < RANS_L {
            return Err("entropy: initial state below 2^16");
        }
    }
    if words.len() % 2 != 0 {
        return Err("entropy: odd number of word bytes");
    }
    Ok((x, words))
}

/// Checks the end of a decode (spec §5.6.5): every word consumed, every
/// state back at the encoder's initial `2^16`.
fn check_end(used: usize, words: &[u8], x: &[u32]) -> Result<(), &'static str> {
    if used != words.len() {
        return Err("entropy: trailing bytes after the last symbol");
    }
    if x.iter().any(|&s| s != RANS_L) {
        return Err("entropy: final state mismatch");
    }
    Ok(())
}

/// [`decode_body`] for a 32-state plane: full blocks of 32 symbols on AVX2
/// (when `simd`) while a block's worst case of 32 words is left, the rest
/// on the portable loop, which continues from the same states and word.
fn decode_body_wide(
    body: Option<&[u8]>,
    t: &DecTables,
    bucket_of: &[u8; 256],
    ctx: &[u8],
    scale: u32,
    simd: bool,
    out: &mut [u8],
) -> Result<(), &'static str> {
    let (mut x, words) = states_and_words::<WIDE_LANES>(body)?;
    if !ctx.is_empty() && ctx.len() != out.len() {
        return Err("entropy: context length differs from the plane");
    }
    let (mut done, mut p) = (0usize, 0usize);
    #[cfg(target_arch = "x86_64")]
    if simd {
        (done, p) = super::rans_avx2::decode(t, bucket_of, ctx, scale, &mut x, words, out);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    macro_rules! go {
        ($($s:literal)*) => {
            match scale {
                $($s => if ctx.is_empty() {
                    wide_portable::<false, $s>(t, bucket_of, ctx, &mut x, words, &mut p, done, out)?
                } else {
                    wide_portable::<true, $s>(t, bucket_of, ctx, &mut x, words, &mut p, done, out)?
                },)*
                _ => return Err("entropy: scale out of range"),
            }
        };
    }
    go!(8 9 10 11 12 13 14 15);
    check_end(p, words, &x)
}

/// Decodes symbols `from..` of a 32-state plane (`from` a multiple of 32),
/// word bytes from `*p` on, renormalizing with a bounds check.
#[allow(clippy::too_many_arguments)]
fn wide_portable<const CTX: bool, const SCALE: u32>(
    t: &DecTables,
    bucket_of: &[u8; 256],
    ctx: &[u8],
    x: &mut [u32; WIDE_LANES],
    words: &[u8],
    p: &mut usize,
    from: usize,
    out: &mut [u8],
) -> Result<(), &'static str> {
    let out = out
        .get_mut(from..)
        .ok_or("entropy: decoder overran the plane")?;
    let ctx = if CTX {
        ctx.get(from..)
            .ok_or("entropy: context length differs from the plane")?
    } else {
        &[][..]
    };
    for (k, blk) in out.chunks_mut(WIDE_LANES).enumerate() {
        for (j, (o, xj)) in blk.iter_mut().zip(x.iter_mut()).enumerate() {
            let (so, io) = if CTX {
                let b = usize::from(
                    bucket_of[usize::from(ctx.get(k * WIDE_LANES + j).copied().unwrap_or(0))],
                );
                (b << SCALE, b << 8)
            } else {
                (0, 0)
            };
            *o = dec_get(xj, t, so, io, SCALE);
            renorm_checked(xj, words, p)?;
        }
    }
    Ok(())
}

/// Decodes the states and words after the tables.
fn decode_body(
    body: Option<&[u8]>,
    t: &DecTables,
    bucket_of: &[u8; 256],
    ctx: &[u8],
    scale: u32,
    out: &mut [u8],
) -> Result<(), &'static str> {
    let (mut x, words) = states_and_words::<LANES>(body)?;
    // Renormalization is rare on skewed planes (one word per 16 bits of
    // output): there a plain branch is cheaper than branch-free selects,
    // which pay off only once the branch would mispredict often.
    let branchy = (words.len() as u64) * 8 <= BRANCHY_MAX_BITS * out.len() as u64;
    // One instance per (context, renormalization, precision): constant
    // shifts and masks keep the hot loop's state in registers.
    macro_rules! go {
        ($c:literal, $b:literal) => {
            match scale {
                8 => rans_decode::<$c, $b, 8>(t, bucket_of, ctx, &mut x, words, out),
                9 => rans_decode::<$c, $b, 9>(t, bucket_of, ctx, &mut x, words, out),
                10 => rans_decode::<$c, $b, 10>(t, bucket_of, ctx, &mut x, words, out),
                11 => rans_decode::<$c, $b, 11>(t, bucket_of, ctx, &mut x, words, out),
                12 => rans_decode::<$c, $b, 12>(t, bucket_of, ctx, &mut x, words, out),
                13 => rans_decode::<$c, $b, 13>(t, bucket_of, ctx, &mut x, words, out),
                14 => rans_decode::<$c, $b, 14>(t, bucket_of, ctx, &mut x, words, out),
                15 => rans_decode::<$c, $b, 15>(t, bucket_of, ctx, &mut x, words, out),
                _ => Err("entropy: scale out of range"),
            }
        };
    }
    let used = match (ctx.is_empty(), branchy) {
        (true, true) => go!(false, true)?,
        (true, false) => go!(false, false)?,
        (false, true) => go!(true, true)?,
        (false, false) => go!(true, false)?,
    };
    check_end(used, words, &x)
}

/// Parses bucket `b`'s table (spec §5.6.3) into `t`.
pub(crate) fn read_table(
    c: &mut Cursor<'_>,
    scale: u32,
    b: usize,
    t: &mut DecTables,
) -> Result<(), &'static str> {
    let runs = c.u8()?;
    if runs == 0 || runs > 128 {
        return Err("entropy: table run count out of range");
    }
    let mut present = [false; 256];
    let mut s = 0usize;
    for r in 0..runs {
        let gap = usize::from(c.u8()?);
        let len = usize::from(c.u8()?) + 1;
        if r > 0 && gap == 0 {
            return Err("entropy: table runs not separated");
        }
        s += gap;
        if s + len > 256 {
            return Err("entropy: table run past symbol 255");
        }
        present[s..s + len].fill(true);
        s += len;
    }
    let m = 1u32 << scale;
    let count = present.iter().filter(|&&p| p).count();
    let k = if count > 1 {
        let k = u32::from(c.u8()?);
        if k > MAX_GOLOMB_K {
            return Err("entropy: exp-Golomb order out of range");
        }
        k
    } else {
        0
    };
    let mut bits = BitReader { c, acc: 0, n: 0 };
    let sym_base = b << scale;
    let mut start = 0u32;
    let mut seen = 0usize;
    for (sym, _) in present.iter().enumerate().filter(|(_, &p)| p) {
        seen += 1;
        let f = if seen == count {
            m - start // start < m: every earlier symbol left room
        } else {
            let mut ones = 0u32;
            while bits.get(1)? == 1 {
                ones += 1;
                if ones > scale {
                    return Err("entropy: frequency code too long");
                }
            }
            let u = (1u64 << ones) | bits.get(ones)?;
            let v = ((u - 1) << k) | bits.get(k)?;
            // A non-last symbol must leave at least 1 for the last one.
            if v + 1 >= u64::from(m - start) {
                return Err("entropy: frequencies exceed the table total");
            }
            v as u32 + 1
        };
        let slots = t
            .sym
            .get_mut(sym_base + start as usize..sym_base + (start + f) as usize)
            .ok_or("entropy: frequencies exceed the table total")?; // unreachable: checked above
        slots.fill(sym as u8);
        if let Some(e) = t.info.get_mut(b << 8 | sym) {
            *e = f << 16 | start;
        }
        start += f;
    }
    // Padding bits of the last code byte must be zero.
    if bits.acc != 0 {
        return Err("entropy: nonzero table padding");
    }
    Ok(())
}

/// Decodes one symbol from state `x`; `soff = bucket << scale`,
/// `ioff = bucket << 8`. Indexes are masked into the fixed-size tables (they
/// are in range anyway: `bucket < MAX_BUCKETS`, slot `< 2^scale`).
#[inline(always)]
fn dec_get(x: &mut u32, t: &DecTables, soff: usize, ioff: usize, scale: u32) -> u8 {
    let slot = *x & ((1u32 << scale) - 1);
    let s = t.sym[(soff | slot as usize) & (SYM_LEN - 1)];
    let inf = t.info[(ioff | usize::from(s)) & (INFO_LEN - 1)];
    // No overflow: slot - start < freq, so the result is < freq * ((x >> scale) + 1) <= 2^32.
    *x = (inf >> 16)
        .wrapping_mul(*x >> scale)
        .wrapping_add(slot.wrapping_sub(inf & 0xffff));
    s
}

/// Decodes all symbols; returns how many word bytes were consumed.
fn rans_decode<const CTX: bool, const BRANCHY: bool, const SCALE: u32>(
    t: &DecTables,
    bucket_of: &[u8; 256],
    ctx: &[u8],
    x: &mut [u32; LANES],
    words: &[u8],
    out: &mut [u8],
) -> Result<usize, &'static str> {
    let n = out.len();
    let full = n - n % LANES;
    // Context byte -> table offsets of its bucket.
    let mut soff = [0u32; 256];
    let mut ioff = [0u16; 256];
    for ((so, io), &b) in soff.iter_mut().zip(ioff.iter_mut()).zip(bucket_of) {
        *so = u32::from(b) << SCALE;
        *io = u16::from(b) << 8;
    }
    let offs = |c: u8| -> (usize, usize) {
        if CTX {
            (
                soff[usize::from(c)] as usize,
                usize::from(ioff[usize::from(c)]),
            )
        } else {
            (0, 0)
        }
    };
    let (head, tail) = out.split_at_mut(full);
    // Without a context the plane's own (unread) bytes stand in for it.
    let ctx_head: &[u8] = if CTX {
        ctx.get(..full)
            .ok_or("entropy: context length differs from the plane")?
    } else {
        &[]
    };
    let [mut x0, mut x1, mut x2, mut x3] = *x;
    let mut p = 0usize;
    let blocks = head.chunks_exact_mut(LANES);
    let mut cblocks = ctx_head.chunks_exact(LANES);
    for blk in blocks {
        let c: [u8; LANES] = if CTX {
            let Some(c) = cblocks.next() else { break };
            [c[0], c[1], c[2], c[3]]
        } else {
            [0; LANES]
        };
        if let Some(win) = words
            .get(p..p + 2 * LANES)
            .and_then(|w| <&[u8; 2 * LANES]>::try_from(w).ok())
            .filter(|_| !BRANCHY)
        {
            // Fast path: enough bytes for every lane to renormalize, so the
            // renormalization is branch-free: a lane that needs a word takes
            // the low 16 bits of the window, which then shifts down.
            let wv = u64::from_le_bytes(*win);
            // Words taken so far in this block: a short add chain, and each
            // lane shifts its word out of the untouched window.
            let mut taken = 0u32;
            macro_rules! lane {
                ($x:ident, $j:expr) => {
                    let (so, io) = offs(c[$j]);
                    blk[$j] = dec_get(&mut $x, t, so, io, SCALE);
                    let w = (wv >> (taken << 4)) as u32 & 0xffff;
                    let renormed = $x << 16 | w;
                    let need = $x < RANS_L;
                    // Arithmetic select: compilers turn an `if` here into a
                    // branch, which mispredicts on every other renormalization.
                    let m = u32::from(need).wrapping_neg();
                    $x = (renormed & m) | ($x & !m);
                    taken += u32::from(need);
                };
            }
            lane!(x0, 0);
            lane!(x1, 1);
            lane!(x2, 2);
            lane!(x3, 3);
            let used = taken << 4;
            p += (used >> 3) as usize;
        } else {
            macro_rules! lane {
                ($x:ident, $j:expr) => {
                    let (so, io) = offs(c[$j]);
                    blk[$j] = dec_get(&mut $x, t, so, io, SCALE);
                    renorm_checked(&mut $x, words, &mut p)?;
                };
            }
            lane!(x0, 0);
            lane!(x1, 1);
            lane!(x2, 2);
            lane!(x3, 3);
        }
    }
    let mut xs = [x0, x1, x2, x3];
    for ((j, o), xj) in tail.iter_mut().enumerate().zip(xs.iter_mut()) {
        let c = if CTX {
            ctx.get(full + j).copied().unwrap_or(0)
        } else {
            0
        };
        let (so, io) = offs(c);
        *o = dec_get(xj, t, so, io, SCALE);
        renorm_checked(xj, words, &mut p)?;
    }
    *x = xs;
    Ok(p)
}

#[inline(always)]
fn renorm_checked(x: &mut u32, words: &[u8], p: &mut usize) -> Result<(), &'static str> {
    if *x < RANS_L {
        let w = words.get(*p..*p + 2).ok_or("entropy: truncated stream")?;
        *x = *x << 16 | u32::from(u16::from_le_bytes([w[0], w[1]]));
        *p += 2;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic test data without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        /// Below `2^b` for a random `b < bits`: log-uniform-ish magnitudes.
        fn magnitude(&mut self, bits: u64) -> u64 {
            let b = self.below(bits);
            self.below(1 << b)
        }
    }

    fn round_trip_with(plane: &[u8], ctx: Option<&[u8]>, tuning: &Tuning) -> Vec<u8> {
        let mut enc = Vec::new();
        encode_plane_tuned(plane, ctx, tuning, &mut enc);
        assert!(
            enc.len() <= plane.len() + 1,
            "expanded: {} > {}",
            enc.len(),
            plane.len() + 1
        );
        let mut dec = vec![0xa5u8; plane.len()];
        decode_plane(&enc, ctx, &mut dec).unwrap();
        assert_eq!(dec, plane);
        enc
    }

    fn round_trip(plane: &[u8], ctx: Option<&[u8]>) -> Vec<u8> {
        round_trip_with(plane, ctx, &Tuning::default())
    }

    /// A skewed plane: mostly small two's complement values, and a context
    /// plane correlated with it (an ADD delta's upper and lower bytes).
    fn delta_planes(rng: &mut Rng, n: usize) -> (Vec<u8>, Vec<u8>) {
        let mut hi = Vec::with_capacity(n);
        let mut lo = Vec::with_capacity(n);
        for _ in 0..n {
            let bits = rng.below(12);
            let mag = rng.below(1 << bits) as i32;
            let v = if rng.next() & 1 == 0 { mag } else { -mag } as u16;
            hi.push((v >> 8) as u8);
            lo.push(v as u8);
        }
        (lo, hi)
    }

    #[test]
    fn log2_is_accurate() {
        for x in [1u64, 2, 3, 5, 7, 100, 1000, 4095, 65_537, 1 << 40, u64::MAX] {
            let want = (x as f64).log2();
            let got = log2_q16(x) as f64 / 65536.0;
            assert!((want - got).abs() < 2e-5, "{x}: {got} vs {want}");
        }
        assert_eq!(log2_q16(1), 0);
        assert_eq!(log2_q16(1 << 20), 20 << 16);
    }

    #[test]
    fn reciprocal_division_is_exact() {
        let mut rng = Rng(7);
        // Every frequency the largest precision allows.
        for f in 1..=1u32 << MAX_SCALE_BITS {
            let mut fr = [0u32; 256];
            fr[0] = f;
            fr[1] = (1 << MAX_SCALE_BITS) - f;
            let mut enc = [EncSym::default(); 256];
            enc_symbols(&fr, MAX_SCALE_BITS, &mut enc);
            let e = enc[0];
            for x in [
                0u32,
                1,
                f - 1,
                f,
                f + 1,
                u32::MAX,
                u32::MAX - 1,
                u32::MAX / f * f,
            ]
            .into_iter()
            .chain((0..16).map(|_| rng.next() as u32))
            {
                assert_eq!(enc_div(x, &e), x / f, "x={x} f={f}");
            }
        }
    }

    /// Random frequency tables of every shape survive write_table -> read_table.
    #[test]
    fn tables_round_trip() {
        let mut rng = Rng(11);
        let mut t = DecTables::new().unwrap();
        for trial in 0..3000 {
            let scale =
                MIN_SCALE_BITS + (trial % (MAX_SCALE_BITS - MIN_SCALE_BITS + 1) as usize) as u32;
            // Random present set (single symbol, all 256, runs, scattered), random counts.
            let mut h = [0u64; 256];
            match trial % 4 {
                0 => h[rng.below(256) as usize] = 1 + rng.below(1000),
                1 => h.iter_mut().for_each(|c| *c = 1 + rng.below(50)),
                2 => {
                    let a = rng.below(256) as usize;
                    let b = a + rng.below((256 - a) as u64) as usize;
                    h[a..=b].iter_mut().for_each(|c| *c = 1 + rng.magnitude(20));
                }
                _ => {
                    for _ in 0..1 + rng.below(40) {
                        h[rng.below(256) as usize] += 1 + rng.magnitude(30);
                    }
                }
            }
            let f = normalize(&h, scale);
            assert_eq!(f.iter().map(|&x| u64::from(x)).sum::<u64>(), 1 << scale);
            for (&c, &fs) in h.iter().zip(f.iter()) {
                assert_eq!(c > 0, fs > 0);
            }
            let mut bytes = Vec::new();
            write_table(&f, &mut bytes);
            let b = trial % MAX_BUCKETS;
            let mut c = Cursor { b: &bytes, p: 0 };
            read_table(&mut c, scale, b, &mut t).unwrap();
            assert_eq!(c.p, bytes.len(), "table bytes not all read");
            let mut start = 0u32;
            for (sym, &fs) in f.iter().enumerate().filter(|(_, &fs)| fs > 0) {
                assert_eq!(t.info[b << 8 | sym], fs << 16 | start);
                let at = (b << scale) + start as usize;
                assert!(t.sym[at..at + fs as usize]
                    .iter()
                    .all(|&x| x as usize == sym));
                start += fs;
            }
        }
    }

    /// The encoder's branchy and branch-free emits write the same stream, and
    /// the decoder's branchy and branch-free renormalizations both run here.
    #[test]
    fn both_renormalization_paths() {
        let mut rng = Rng(12);
        // ~0.3 bits/symbol (decoded with a branch) and ~4 bits/symbol (branch-free).
        let skewed: Vec<u8> = (0..50_000)
            .map(|_| {
                if rng.below(32) == 0 {
                    rng.next() as u8
                } else {
                    0
                }
            })
            .collect();
        let uniform: Vec<u8> = (0..50_000).map(|_| rng.below(16) as u8).collect();
        for (p, want_branchy) in [(skewed, true), (uniform, false)] {
            let mut h = vec![0u64; 256];
            histogram(&p, &mut h);
            let f = normalize(&h, 13);
            let mut enc = Box::new([EncSym::default(); ENC_LEN]);
            enc_symbols(&f, 13, &mut enc[..256]);
            let none = [0u16; 256];
            let (sa, wa) = rans_encode::<false, true, LANES>(&p, &p, &none, &enc, 13, Vec::new());
            let (sb, wb) = rans_encode::<false, false, LANES>(&p, &p, &none, &enc, 13, Vec::new());
            assert_eq!(sa, sb);
            assert_eq!(wa.words(), wb.words());
            let e = round_trip(&p, None);
            assert_eq!(e[0], MODE_RANS);
            let words = e.len() - 3 - 4 * LANES; // upper bound on word bytes
            let branchy = (words as u64) * 8 <= BRANCHY_MAX_BITS * p.len() as u64;
            assert_eq!(branchy, want_branchy);
        }
    }

    /// A context that saves less than the gate is dropped; gate 0 keeps it.
    #[test]
    fn context_gate() {
        let mut rng = Rng(13);
        let (lo, hi) = delta_planes(&mut rng, 100_000);
        let always = Tuning {
            ctx_min_gain_permille: 0,
            ..Tuning::default()
        };
        let never = Tuning {
            ctx_min_gain_permille: 1000,
            ..Tuning::default()
        };
        assert!(round_trip_with(&lo, Some(&hi), &always)[2] > 1);
        assert_eq!(round_trip_with(&lo, Some(&hi), &never)[2], 1);
        // An unrelated context: nothing to gain, so no buckets by default.
        let noise: Vec<u8> = (0..lo.len()).map(|_| rng.next() as u8).collect();
        assert_eq!(round_trip(&lo, Some(&noise))[2], 1);
    }

    #[test]
    fn empty_constant_and_short_planes() {
        assert_eq!(round_trip(&[], None), [MODE_RAW]);
        assert_eq!(round_trip(&[], Some(&[])), [MODE_RAW]);
        assert_eq!(round_trip(&[7; 1000], None), [MODE_CONST, 7]);
        assert_eq!(round_trip(&[0; 1], Some(&[3])), [MODE_CONST, 0]);
        let mut rng = Rng(1);
        for n in 1..=17 {
            for _ in 0..6 {
                let k = 1 + rng.below(4);
                let p: Vec<u8> = (0..n).map(|_| rng.below(k) as u8).collect();
                let c: Vec<u8> = (0..n).map(|_| rng.below(3) as u8 * 127).collect();
                round_trip(&p, None);
                round_trip(&p, Some(&c));
                // Every scale and lane tail, forcing rANS by a large skewed prefix.
                let mut long = vec![0u8; 1500];
                long.extend_from_slice(&p);
                let mut lc = vec![255u8; 1500];
                lc.extend_from_slice(&c);
                for scale in MIN_SCALE_BITS..=MAX_SCALE_BITS {
                    let t = Tuning {
                        scale_bits: scale,
                        ..Tuning::default()
                    };
                    let e = round_trip_with(&long, Some(&lc), &t);
                    if long.iter().any(|&b| b != 0) {
                        assert_eq!(e[0], MODE_RANS);
                    }
                }
            }
        }
    }

    #[test]
    fn random_planes_fall_back_to_raw() {
        let mut rng = Rng(2);
        let p: Vec<u8> = (0..10_000).map(|_| rng.next() as u8).collect();
        let e = round_trip(&p, None);
        assert_eq!(e[0], MODE_RAW);
        assert_eq!(e.len(), p.len() + 1);
    }

    #[test]
    fn skewed_planes_compress_near_entropy() {
        let mut rng = Rng(3);
        let (lo, hi) = delta_planes(&mut rng, 200_000);
        let e_hi = round_trip(&hi, None);
        let e_lo0 = round_trip(&lo, None);
        let e_lo1 = round_trip(&lo, Some(&hi));
        // Order-0 entropy bound, in bytes, for comparison.
        let ent = |d: &[u8]| {
            let mut h = [0f64; 256];
            d.iter().for_each(|&b| h[b as usize] += 1.0);
            let n = d.len() as f64;
            h.iter()
                .filter(|&&c| c > 0.0)
                .map(|&c| -c * (c / n).log2())
                .sum::<f64>()
                / 8.0
        };
        for (e, d) in [(&e_hi, &hi), (&e_lo0, &lo)] {
            assert_eq!(e[0], MODE_RANS);
            let bound = ent(d);
            assert!(
                (e.len() as f64) < bound * 1.01 + 600.0,
                "{} vs entropy {bound}",
                e.len()
            );
        }
        // The context must help here: the low byte depends on the high one.
        assert!(
            e_lo1.len() * 100 < e_lo0.len() * 95,
            "{} vs {}",
            e_lo1.len(),
            e_lo0.len()
        );
        assert!(e_lo1[2] > 1, "expected several buckets");
        // Every-value partition and bucket caps also round trip.
        for max_buckets in [1, 2, 3, 16] {
            for every_value in [false, true] {
                let t = Tuning {
                    max_buckets,
                    every_value,
                    ..Tuning::default()
                };
                let e = round_trip_with(&lo, Some(&hi), &t);
                assert!(usize::from(e[2]) <= max_buckets);
            }
        }
    }

    #[test]
    fn single_symbol_buckets_and_mismatched_context() {
        // Given the context the plane is constant per bucket: single-symbol tables.
        let ctx: Vec<u8> = (0..5000u32)
            .map(|i| if i % 3 == 0 { 0 } else { 255 })
            .collect();
        let plane: Vec<u8> = ctx.iter().map(|&c| if c == 0 { 9 } else { 200 }).collect();
        let e = round_trip(&plane, Some(&ctx));
        assert_eq!(e[0], MODE_RANS);
        assert!(e.len() < 40, "{}", e.len());
        // A context of the wrong length is ignored by the encoder.
        let e = round_trip_with(&plane, Some(&ctx[1..]), &Tuning::default());
        let mut dec = vec![0; plane.len()];
        decode_plane(&e, None, &mut dec).unwrap();
        // A bucketed stream refuses a missing or short context.
        let e = round_trip(&plane, Some(&ctx));
        assert!(decode_plane(&e, None, &mut dec).is_err());
        assert!(decode_plane(&e, Some(&ctx[1..]), &mut dec).is_err());
    }

    #[test]
    fn random_round_trips() {
        let mut rng = Rng(4);
        for _ in 0..300 {
            let n = rng.below(3000) as usize;
            let alpha = 1 + rng.below(256);
            let skew = rng.below(4) as u32;
            let p: Vec<u8> = (0..n)
                .map(|_| {
                    let mut v = rng.below(alpha);
                    for _ in 0..skew {
                        v = v.min(rng.below(alpha));
                    }
                    v as u8
                })
                .collect();
            let c: Vec<u8> = p
                .iter()
                .map(|&b| b.wrapping_mul(37) ^ (rng.below(4) as u8))
                .collect();
            round_trip(&p, None);
            round_trip(&p, Some(&c));
        }
    }

    #[test]
    fn truncated_and_garbled_streams_are_rejected_without_panic() {
        let mut rng = Rng(5);
        let (lo, hi) = delta_planes(&mut rng, 3000);
        let mut streams = Vec::new();
        for (p, c) in [(&lo, Some(&hi[..])), (&lo, None), (&hi, None)] {
            let mut e = Vec::new();
            encode_plane(p, c, &mut e);
            assert_eq!(e[0], MODE_RANS);
            streams.push((e, p.clone(), c));
        }
        let mut dec = vec![0u8; lo.len()];
        for (e, _, c) in &streams {
            for cut in 0..e.len() {
                assert!(decode_plane(&e[..cut], *c, &mut dec).is_err(), "cut {cut}");
            }
            let mut longer = e.clone();
            longer.push(0);
            assert!(decode_plane(&longer, *c, &mut dec).is_err());
            // Wrong output length.
            assert!(decode_plane(e, *c, &mut dec[1..]).is_err());
        }
        // Random corruption: must not panic; whatever it returns, Ok must
        // mean a full-length output (and is rare: final states are checked).
        let mut accepted = 0;
        for trial in 0..6000 {
            let (e, p, c) = &streams[trial % streams.len()];
            let mut g = e.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(g.len() as u64) as usize;
                g[at] ^= 1 << rng.below(8);
            }
            if decode_plane(&g, *c, &mut dec).is_ok() && dec != **p {
                accepted += 1;
            }
        }
        assert!(
            accepted < 60,
            "{accepted} corrupted streams decoded to wrong data"
        );
        // Pure noise as a stream.
        for _ in 0..5000 {
            let len = rng.below(300) as usize;
            let mut g: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if let Some(b) = g.first_mut() {
                *b = MODE_RANS;
            }
            let out_len = rng.below(40) as usize;
            let ctx: Vec<u8> = (0..out_len).map(|_| rng.next() as u8).collect();
            let mut o = vec![0u8; out_len];
            let _ = decode_plane(&g, Some(&ctx), &mut o);
            let _ = decode_plane(&g, None, &mut o);
        }
    }

    #[test]
    fn malformed_headers_are_rejected() {
        let mut o = [0u8; 4];
        let ctx = [0u8; 4];
        assert!(decode_plane(&[], None, &mut o).is_err());
        assert!(decode_plane(&[9], None, &mut o).is_err());
        assert!(decode_plane(&[MODE_RAW, 1, 2, 3], None, &mut o).is_err());
        assert!(decode_plane(&[MODE_CONST], None, &mut o).is_err());
        assert!(decode_plane(&[MODE_CONST, 1, 2], None, &mut o).is_err());
        // scale 13 / 7, 0 and 17 buckets, non-increasing cuts.
        let states: Vec<u8> = (0..LANES).flat_map(|_| RANS_L.to_le_bytes()).collect();
        let with = |head: &[u8]| [head, &states[..]].concat();
        // A valid single-symbol stream: 1 run, gap 3, len 1 -> symbol 3 only.
        let ok = with(&[MODE_RANS, 12, 1, 1, 3, 0]);
        decode_plane(&ok, None, &mut o).unwrap();
        assert_eq!(o, [3; 4]);
        for bad in [
            with(&[MODE_RANS, 16, 1, 1, 3, 0]),
            with(&[MODE_RANS, 7, 1, 1, 3, 0]),
            with(&[MODE_RANS, 12, 0, 1, 3, 0]),
            with(&[MODE_RANS, 12, 17, 1, 3, 0]),
            with(&[MODE_RANS, 12, 2, 0, 1, 3, 0, 1, 3, 0]),
            with(&[MODE_RANS, 12, 1, 0]),             // zero runs
            with(&[MODE_RANS, 12, 1, 129]),           // too many runs
            with(&[MODE_RANS, 12, 1, 2, 0, 0, 0, 0]), // unseparated runs
            with(&[MODE_RANS, 12, 1, 1, 255, 1]),     // run past 255
            with(&[MODE_RANS, 12, 1, 1, 0, 1, 15]),   // exp-Golomb order 15
            with(&[MODE_RANS, 12, 1, 1, 0, 1, 12, 0xfe, 0x1f]), // f = 4096 leaves none
            with(&[MODE_RANS, 12, 1, 1, 0, 1, 0, 0xff, 0xff]), // code too long
            with(&[MODE_RANS, 12, 1, 1, 0, 1, 0, 0x02]), // nonzero padding
        ] {
            assert!(decode_plane(&bad, Some(&ctx), &mut o).is_err(), "{bad:?}");
        }
        // State below 2^16.
        let mut low = ok.clone();
        let at = low.len() - 4;
        low[at..].copy_from_slice(&1u32.to_le_bytes());
        assert!(decode_plane(&low, None, &mut o).is_err());
    }

    /// Decodes a 32-state plane with both decoders (AVX2, where present,
    /// and the portable loop), which must agree on the result, the output
    /// bytes and the error.
    fn decode_wide_both(
        e: &[u8],
        ctx: Option<&[u8]>,
        out_len: usize,
    ) -> Result<Vec<u8>, &'static str> {
        let mut a = vec![0x5au8; out_len];
        let mut b = vec![0x5au8; out_len];
        let ra = decode_plane_lanes(e, ctx, Lanes::ThirtyTwo, &mut a);
        let rb = decode_plane_portable(e, ctx, Lanes::ThirtyTwo, &mut b);
        assert_eq!(ra, rb, "AVX2 and portable decoders disagree on the result");
        if ra.is_ok() {
            assert_eq!(a, b, "AVX2 and portable decoders disagree on the bytes");
        }
        ra.map(|()| a)
    }

    fn wide_round_trip(plane: &[u8], ctx: Option<&[u8]>) -> Vec<u8> {
        let mut e = Vec::new();
        encode_plane_wide(plane, ctx, &mut e);
        assert!(e.len() <= plane.len() + 1);
        assert_eq!(decode_wide_both(&e, ctx, plane.len()).unwrap(), plane);
        e
    }

    /// Spec §5.6.4 (v1.6): a 32-state plane has the same header and tables
    /// as the 4-state plane of the same data, then 32 states and its words;
    /// both decoders reproduce it, with and without a context, at every
    /// length around the 32-symbol block and the 64-byte word margin.
    #[test]
    fn wide_planes_round_trip_on_both_decoders() {
        if !simd_available() {
            eprintln!("note: no AVX2 on this CPU: only the portable 32-state decoder runs");
        }
        let mut rng = Rng(32);
        let (lo, hi) = delta_planes(&mut rng, 200_000);
        for n in [
            1usize, 31, 32, 33, 63, 64, 65, 100, 1000, 4095, 4096, 50_000, 200_000,
        ] {
            for ctx in [None, Some(&hi[..n])] {
                let wide = wide_round_trip(&lo[..n], ctx);
                let mut four = Vec::new();
                encode_plane(&lo[..n], ctx, &mut four);
                if wide[0] == MODE_RANS && four[0] == MODE_RANS {
                    // Same model: the bytes up to the states are equal.
                    let head = four.len().min(wide.len());
                    let tables = (0..head).take_while(|&i| four[i] == wide[i]).count();
                    assert!(tables >= 3, "n={n}: headers differ");
                }
            }
        }
        // Every precision, skewed and flat planes, contexts of 16 buckets.
        for scale in MIN_SCALE_BITS..=MAX_SCALE_BITS {
            let t = Tuning {
                scale_bits: scale,
                ctx_min_gain_permille: 0,
                ..Tuning::default()
            };
            for (p, c) in [(&lo[..70_000], Some(&hi[..70_000])), (&hi[..70_000], None)] {
                let mut e = Vec::new();
                encode_plane_with(p, c, &t, Lanes::ThirtyTwo, &mut e);
                assert_eq!(decode_wide_both(&e, c, p.len()).unwrap(), p);
                if e[0] != MODE_RANS {
                    // Too coarse a precision for this plane: stored raw.
                    assert!(scale < 10, "scale {scale}: mode {}", e[0]);
                    continue;
                }
                assert_eq!(e[1] as u32, scale);
                // Read as a 4-state plane it fails (states, words, or end check).
                let mut o = vec![0u8; p.len()];
                assert!(decode_plane(&e, c, &mut o).is_err());
            }
        }
        let uniform: Vec<u8> = (0..100_000).map(|_| rng.next() as u8 & 0x3f).collect();
        wide_round_trip(&uniform, None);
    }

    /// The two 32-state decoders agree on damaged and hostile streams (the
    /// AVX2 loop must reproduce the portable arithmetic exactly, wrapping
    /// included), reject truncation, and never panic.
    #[test]
    fn wide_decoders_agree_on_hostile_streams() {
        let mut rng = Rng(33);
        let (lo, hi) = delta_planes(&mut rng, 20_000);
        let mut streams = Vec::new();
        for (p, c) in [(&lo, Some(&hi[..])), (&lo, None), (&hi, None)] {
            let mut e = Vec::new();
            encode_plane_wide(p, c, &mut e);
            assert_eq!(e[0], MODE_RANS);
            streams.push((e, p.clone(), c));
        }
        for (e, p, c) in &streams {
            for cut in (0..e.len()).step_by(7) {
                assert!(
                    decode_wide_both(&e[..cut], *c, p.len()).is_err(),
                    "cut {cut}"
                );
            }
            assert!(decode_wide_both(e, *c, p.len() - 1).is_err());
        }
        let mut accepted = 0;
        for trial in 0..3000 {
            let (e, p, c) = &streams[trial % streams.len()];
            let mut g = e.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(g.len() as u64) as usize;
                g[at] ^= 1 << rng.below(8);
            }
            if decode_wide_both(&g, *c, p.len()).is_ok_and(|d| d != **p) {
                accepted += 1;
            }
        }
        assert!(
            accepted < 30,
            "{accepted} corrupted streams decoded to wrong data"
        );
        // Random states and words after a valid table: states that wrap,
        // drop below 2^16 and renormalize from garbage.
        for _ in 0..2000 {
            let mut g = vec![MODE_RANS, 12, 1, 1, 0, 15, rng.below(15) as u8];
            g.extend((0..8).map(|_| rng.next() as u8));
            g.extend((0..4 * WIDE_LANES + 2 * rng.below(400) as usize).map(|_| rng.next() as u8));
            let _ = decode_wide_both(&g, None, rng.below(700) as usize);
        }
    }
}
