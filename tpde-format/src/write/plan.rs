//! Per-tensor encoding decisions made before any chunk is encoded: the
//! combine op and (unless the caller fixed it) the chunk size. Both are
//! chosen from a sample of the tensor by entropy estimates, never by
//! encoding a candidate, and with integer arithmetic only, so the choice
//! (and the archive) is the same on every platform and thread count.

use crate::codec::chunk::{self, Compression};
use crate::codec::combine;
use crate::codec::entropy::log2_q16;
use crate::error::Result;
use crate::format::Op;
use crate::with_word;

/// Elements per sampled run: long enough that the planes' byte-to-byte
/// structure (and the base-context estimate, which needs 4096) is there.
const RUN: u64 = 1024;
/// The op trial's sample: this many runs of [`OP_RUN`] elements (64 Ki
/// elements), one in the middle of each equal stratum of the tensor.
const OP_RUNS: u64 = 64;
const OP_RUN: u64 = 1024;
/// The op trial compares `Replace` and `ReplaceRot` on this many pieces of consecutive
/// strata, each on its own statistics (see [`chunk::choose_op`]).
const OP_PIECES: usize = 8;
/// The finest chunk size the writer chooses, and the unit of its
/// statistics: every candidate is a multiple of it.
const BLOCK: u64 = 1 << 17;
/// Chunk sizes the writer chooses among, largest (the default) first.
/// Smaller chunks follow local statistics (an embedding's untrained rows
/// stored at low precision) but pay a descriptor and frequency tables each.
pub(super) const CANDIDATES: [u64; 4] = [1 << 20, 1 << 19, 1 << 18, 1 << 17];
/// One run of [`RUN`] elements is sampled per this many elements (1/8)
/// for the chunk-size estimate.
const SAMPLE_STRIDE: u64 = 8 * RUN;
/// Fixed bytes a chunk costs besides its planes: its index descriptor
/// (~100 B), alignment padding (32 B on average), and per plane the rANS
/// header and final states.
const CHUNK_OVERHEAD: u64 = 132;
const PLANE_OVERHEAD: u64 = 24;
/// (v1.7) What recording chunk digests costs a tensor cut into several
/// chunks: per chunk a SHA-256 (incompressible, unlike the descriptors),
/// plus the list's length.
const DIGEST_BYTES: u64 = 32;
const DIGEST_LIST_BYTES: u64 = 8;
/// What a coded (not raw) plane pays per chunk beyond the estimate's
/// tables: the coder's context tables are richer than the estimate's (up
/// to 16 buckets, on the base's byte too), so splitting a coded plane costs
/// more than the estimate sees. Calibrated on the corpus (bf16 fine-tunes
/// lose about 260 B per extra chunk of their embedding).
const CODED_PLANE_OVERHEAD: u64 = 160;
/// Estimated bytes of a frequency table, per symbol it lists (its run and
/// exp-Golomb coded frequency), in Q16 bits.
const TABLE_Q16_PER_SYMBOL: u64 = 12 << 16;
/// Planes whose order-0 entropy is at least this (Q16 bits per byte) are
/// stored raw (the writer's noise test, `RAW_ENTROPY_BITS` in stream.rs).
const RAW_Q16: u64 = (788 << 16) / 100;
/// Miller–Madow bias correction per used symbol of a sampled histogram:
/// `1 / (2 ln 2)` bits, in Q16. Without it, estimates from fewer samples
/// (smaller chunks, more context buckets) look cheaper than they are.
const MM_Q16: u64 = 47_274;

/// The decisions for one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    /// Combine op of every chunk.
    pub op: Op,
    /// Elements per chunk.
    pub chunk_elems: u64,
}

/// Reads `count` elements from element `start`: the target's bytes and the
/// base's (widened to the target's dtype), if any.
pub(super) type ReadRange<'a> = dyn Fn(u64, u64) -> Result<(Vec<u8>, Option<Vec<u8>>)> + 'a;

/// Chooses the op (by trial on [`OP_RUNS`] runs spread over the tensor)
/// and the chunk size: `fixed` when given, else the candidate of at least
/// `min_ce` elements with the smallest estimated size.
#[allow(clippy::too_many_arguments)]
pub(super) fn plan(
    n: u64,
    width: usize,
    has_base: bool,
    comp: Compression,
    fixed: Option<u64>,
    min_ce: u64,
    chunk_digests: bool,
    read: &ReadRange<'_>,
) -> Result<Plan> {
    let op = match chunk::candidate_ops(width, has_base, comp.max_minor)[..] {
        _ if n == 0 => Op::Replace,
        // Nothing to choose: no sample is read.
        [only] => only,
        _ => {
            let (t, b) = sample(n, width, read)?;
            // `Replace` and `ReplaceRot` are compared again on OP_PIECES
            // runs of strata (8192 elements each) of a sampled tensor; a
            // small one is one chunk, compared whole.
            let pieces = if n <= OP_RUNS * OP_RUN { 1 } else { OP_PIECES };
            chunk::choose_op(width, &t, b.as_deref(), comp, pieces)
        }
    };
    let chunk_elems = match fixed {
        Some(ce) => ce,
        None => choose_chunk_elems(n, width, op, min_ce, chunk_digests, read)?,
    };
    Ok(Plan { op, chunk_elems })
}

/// The op trial's sample: the whole tensor when it is small, else
/// [`OP_RUNS`] runs of [`OP_RUN`] elements, one centred in each of as many
/// equal strata (so neither end of the tensor is over-represented: an
/// embedding's first and last rows may be special), concatenated.
fn sample(n: u64, width: usize, read: &ReadRange<'_>) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    if n <= OP_RUNS * OP_RUN {
        return read(0, n);
    }
    let cap = (OP_RUNS * OP_RUN) as usize * width;
    let (mut t, mut b) = (Vec::with_capacity(cap), None::<Vec<u8>>);
    for j in 0..OP_RUNS {
        let centre = (2 * j + 1) * n / (2 * OP_RUNS);
        let start = centre.saturating_sub(OP_RUN / 2).min(n - OP_RUN);
        let (rt, rb) = read(start, OP_RUN)?;
        t.extend_from_slice(&rt);
        if let Some(rb) = rb {
            b.get_or_insert_with(|| Vec::with_capacity(cap))
                .extend_from_slice(&rb);
        }
    }
    Ok((t, b))
}

/// Sampled symbol counts of one plane over a range of elements: order 0,
/// and conditioned on 16 signed-log2 buckets of the previous plane's byte
/// (the plane-to-plane context of the rANS coder). Counts add, so a chunk's
/// statistics are the sum of its blocks'.
#[derive(Clone)]
struct PlaneStats {
    h0: [u32; 256],
    h1: Vec<[u32; 256]>,
    /// Conditioned on the base's most significant byte (the coder's
    /// base context, spec §5.7), 16 buckets of it: sign and low 3 bits,
    /// which tell apart the few exponents trained weights use.
    h2: Vec<[u32; 256]>,
}

impl PlaneStats {
    fn new() -> Self {
        PlaneStats {
            h0: [0; 256],
            h1: vec![[0; 256]; 16],
            h2: vec![[0; 256]; 16],
        }
    }

    fn add(&mut self, o: &PlaneStats) {
        for (a, b) in self.h0.iter_mut().zip(&o.h0) {
            *a += b;
        }
        for (ha, hb) in self.h1.iter_mut().zip(&o.h1) {
            for (a, b) in ha.iter_mut().zip(hb) {
                *a += b;
            }
        }
        for (ha, hb) in self.h2.iter_mut().zip(&o.h2) {
            for (a, b) in ha.iter_mut().zip(hb) {
                *a += b;
            }
        }
    }

    fn clear(&mut self) {
        self.h0 = [0; 256];
        self.h1.iter_mut().for_each(|h| *h = [0; 256]);
        self.h2.iter_mut().for_each(|h| *h = [0; 256]);
    }
}

/// Signed-log2 bucket of each context byte (as the estimates in stream.rs):
/// 0, 1, 2-3, ..., 64-127 | 128-191, ..., 254, 255.
const BUCKET: [usize; 256] = {
    let mut t = [0usize; 256];
    let mut b = 0;
    while b < 256 {
        let x = b as u8;
        t[b] = if x < 128 {
            let l = 8 - x.leading_zeros() as usize;
            if l < 7 {
                l
            } else {
                7
            }
        } else {
            let l = 8 - (!x).leading_zeros() as usize;
            8 + if l < 7 { l } else { 7 }
        };
        b += 1;
    }
    t
};

/// Q16 bits to code the `m` sampled symbols of `h` (plug-in entropy plus
/// the Miller–Madow correction) and the number of symbols used.
fn sampled_bits(h: &[u32; 256]) -> (u64, u64) {
    let m: u64 = h.iter().map(|&c| u64::from(c)).sum();
    if m == 0 {
        return (0, 0);
    }
    let mut sum = 0u64;
    let mut used = 0u64;
    for &c in h.iter().filter(|&&c| c > 0) {
        sum += u64::from(c) * log2_q16(u64::from(c));
        used += 1;
    }
    let bits = (m * log2_q16(m)).saturating_sub(sum) + (used - 1) * MM_Q16;
    (bits, used)
}

/// Estimated stored bytes of a plane of `elems` elements whose sample is
/// `s` (`sampled` elements): the cheaper of order 0 and the previous-plane
/// context, tables included, and raw when it is noise or cheaper.
fn plane_bytes(s: &PlaneStats, first: bool, base: bool, elems: u64, sampled: u64) -> u64 {
    if sampled == 0 {
        return 0;
    }
    let (b0, u0) = sampled_bits(&s.h0);
    // Noise: the writer stores the plane raw without trying a coder.
    if b0 >= RAW_Q16 * sampled {
        return elems;
    }
    let scale = |bits: u64, used: u64| -> u64 {
        let real = u128::from(bits) * u128::from(elems) / u128::from(sampled);
        ((real as u64).saturating_add(used * TABLE_Q16_PER_SYMBOL)) >> 19
    };
    let mut best = scale(b0, u0);
    let ctx_cost = |hs: &[[u32; 256]]| {
        let (mut bits, mut used) = (0u64, 0u64);
        for h in hs {
            let (b, u) = sampled_bits(h);
            bits += b;
            used += u;
        }
        scale(bits, used)
    };
    if !first {
        best = best.min(ctx_cost(&s.h1));
    }
    if base {
        best = best.min(ctx_cost(&s.h2));
    }
    if best < elems {
        best + CODED_PLANE_OVERHEAD
    } else {
        elems
    }
}

/// Sampled statistics of a range: per plane over the changed elements,
/// and the unchanged elements' count and base-context buckets (their
/// symbols are all 0, so the dense statistics follow from these).
#[derive(Clone)]
struct RangeStats {
    planes: Vec<PlaneStats>,
    /// Sampled elements.
    sampled: u64,
    /// Of those, unchanged, by base-context bucket.
    zeros: [u32; 16],
    /// Of those, in sampled runs without any change.
    still: u64,
}

impl RangeStats {
    fn new(width: usize) -> Self {
        RangeStats {
            planes: vec![PlaneStats::new(); width],
            sampled: 0,
            zeros: [0; 16],
            still: 0,
        }
    }

    fn add(&mut self, o: &RangeStats) {
        for (a, b) in self.planes.iter_mut().zip(&o.planes) {
            a.add(b);
        }
        self.sampled += o.sampled;
        self.still += o.still;
        for (a, b) in self.zeros.iter_mut().zip(&o.zeros) {
            *a += b;
        }
    }

    fn clear(&mut self) {
        self.planes.iter_mut().for_each(PlaneStats::clear);
        self.sampled = 0;
        self.still = 0;
        self.zeros = [0; 16];
    }

    /// Estimated stored bytes of one chunk of `elems` elements: nothing but
    /// its descriptor when no sampled element changed (a Zero chunk); else
    /// the changed values, plus, in a dense chunk (more than half changed),
    /// the entropy of which elements lie in unchanged stretches (whole
    /// sampled runs without a change). Scattered
    /// unchanged elements (updates below the dtype's resolution) are not
    /// counted: they cost about the same however the tensor is cut, and
    /// counting them makes such an update look like it wants small chunks
    /// (it does not: measured on the bf16 fine-tunes). Unchanged stretches
    /// are what smaller chunks can turn into Zero chunks (an embedding's
    /// rows that the base already holds exactly).
    fn chunk_bytes(&self, base: bool, elems: u64) -> u64 {
        let zeros: u64 = self.zeros.iter().map(|&z| u64::from(z)).sum();
        let changed = self.sampled - zeros;
        if changed == 0 {
            return CHUNK_OVERHEAD;
        }
        let fixed = CHUNK_OVERHEAD + PLANE_OVERHEAD * self.planes.len() as u64;
        let real = (u128::from(elems) * u128::from(changed) / u128::from(self.sampled)) as u64;
        let values: u64 = self
            .planes
            .iter()
            .enumerate()
            .map(|(k, p)| plane_bytes(p, k == 0, base, real, changed))
            .sum();
        // Sparse chunks (at most half changed) code unchanged stretches as
        // long position gaps, almost free; only dense ones pay for them.
        if changed * 2 <= self.sampled {
            return fixed + values;
        }
        let (m, z) = (self.sampled, self.still.min(self.sampled));
        let mask_bits = (m * log2_q16(m))
            .saturating_sub(z * log2_q16(z))
            .saturating_sub((m - z) * log2_q16(m - z));
        let mask = (u128::from(mask_bits) * u128::from(elems) / u128::from(m)) as u64 >> 19;
        fixed + values + mask
    }
}

/// The candidate chunk size (at least `min_ce`) whose chunks are estimated
/// to store fewest bytes, from the dense delta planes under `op` of one
/// [`RUN`] per [`SAMPLE_STRIDE`] elements, counting a digest per chunk
/// when a tensor of several chunks records them. Ties go to the larger
/// size.
fn choose_chunk_elems(
    n: u64,
    width: usize,
    op: Op,
    min_ce: u64,
    chunk_digests: bool,
    read: &ReadRange<'_>,
) -> Result<u64> {
    let cands: Vec<u64> = CANDIDATES
        .iter()
        .copied()
        .filter(|&c| c >= min_ce)
        .collect();
    let Some(&largest) = cands.first() else {
        // Only when an inline base has larger chunks than any candidate
        // (a caller-fixed size): follow it.
        return Ok(min_ce);
    };
    // One chunk whatever the size: nothing to choose. Such tensors record
    // the smallest candidate, so they never bind a target over them (an
    // inline base may not have larger chunks than its target, §5.1).
    if n <= BLOCK || cands.len() == 1 {
        return Ok(if n <= BLOCK {
            cands.last().copied().unwrap_or(largest)
        } else {
            largest
        });
    }
    let blocks = n.div_ceil(BLOCK);
    let mut has_base = false;
    let mut block = RangeStats::new(width);
    // Per candidate: the running chunk's statistics and element count, and
    // the estimated total so far.
    let mut acc: Vec<(RangeStats, u64, u64)> = cands
        .iter()
        .map(|_| (RangeStats::new(width), 0, 0))
        .collect();
    let mut planes = Vec::new();
    let mut changed = Vec::new();
    let mut ctx = Vec::new();
    for bi in 0..blocks {
        let start = bi * BLOCK;
        let end = (start + BLOCK).min(n);
        block.clear();
        let mut at = start;
        while at < end {
            let count = RUN.min(end - at);
            let (t, b) = read(at, count)?;
            has_base = b.is_some() && width > 1;
            with_word!(width, W => combine::dense_delta_planes::<W>(op, b.as_deref(), &t, &mut planes));
            let m = count as usize;
            ctx.clear();
            match b.as_deref() {
                Some(b) if width > 1 => ctx.extend(
                    b.chunks_exact(width)
                        .map(|e| (e[width - 1] >> 4 & 8) | (e[width - 1] & 7)),
                ),
                _ => ctx.resize(m, 0),
            }
            changed.clear();
            changed.resize(m, false);
            for k in 0..width {
                for (c, &x) in changed.iter_mut().zip(&planes[k * m..(k + 1) * m]) {
                    *c |= x != 0;
                }
            }
            // Unchanged elements of this run, by base bucket.
            let mut still = [0u32; 16];
            for (&c, &b) in changed.iter().zip(&ctx) {
                still[usize::from(b)] += u32::from(!c);
            }
            let unchanged: u32 = still.iter().sum();
            if unchanged as usize == m {
                block.still += count;
            }
            for (z, s) in block.zeros.iter_mut().zip(&still) {
                *z += s;
            }
            // Every element is counted (branch-free loops), then the
            // unchanged ones are taken back out: their byte is 0 in every
            // plane, so they sit at symbol 0, previous-plane bucket 0.
            for k in 0..width {
                let plane = &planes[k * m..(k + 1) * m];
                let s = &mut block.planes[k];
                for (&x, &c) in plane.iter().zip(&ctx) {
                    s.h0[usize::from(x)] += 1;
                    s.h2[usize::from(c) & 15][usize::from(x)] += 1;
                }
                if k > 0 {
                    let prev = &planes[(k - 1) * m..k * m];
                    for (&x, &p) in plane.iter().zip(prev) {
                        s.h1[BUCKET[usize::from(p)]][usize::from(x)] += 1;
                    }
                    s.h1[0][0] -= unchanged;
                }
                s.h0[0] -= unchanged;
                for (h, &z) in s.h2.iter_mut().zip(&still) {
                    h[0] -= z;
                }
            }
            block.sampled += count;
            at += SAMPLE_STRIDE;
        }
        for (&c, (stats, elems, total)) in cands.iter().zip(acc.iter_mut()) {
            stats.add(&block);
            *elems += end - start;
            if end % c == 0 || end == n {
                *total += stats.chunk_bytes(has_base, *elems);
                stats.clear();
                *elems = 0;
            }
        }
    }
    // From the largest down, a smaller size must beat the best so far by
    // more than 1/512 of it: the estimates are from a sample, and where
    // sizes are about even, smaller chunks only cost (index, decode setup).
    let mut best = (largest, u64::MAX);
    for (&c, a) in cands.iter().zip(&acc) {
        let chunks = n.div_ceil(c);
        let total = if chunk_digests && chunks > 1 {
            a.2 + DIGEST_LIST_BYTES + DIGEST_BYTES * chunks
        } else {
            a.2
        };
        if total.saturating_add(best.1 / 512) < best.1 {
            best = (c, total);
        }
    }
    Ok(best.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 weights whose first rows keep only 10 mantissa bits (as an
    /// embedding's untrained rows stored at low precision): smaller chunks
    /// isolate them, and the estimate sees that; uniform noise-like weights
    /// keep the default size.
    #[test]
    fn low_precision_rows_choose_smaller_chunks() {
        let n = 1u64 << 21;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut bytes = Vec::with_capacity(n as usize * 4);
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut v = 0x3c00_0000u32 | (x as u32 & 0x00ff_ffff) | ((x >> 40) as u32 & 1) << 31;
            if i < 200_000 {
                v &= !0x1fff;
            }
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let read = |start: u64, count: u64| -> Result<(Vec<u8>, Option<Vec<u8>>)> {
            Ok((
                bytes[(start * 4) as usize..((start + count) * 4) as usize].to_vec(),
                None,
            ))
        };
        let ce = choose_chunk_elems(n, 4, Op::Replace, 1, true, &read).unwrap();
        assert!(ce < 1 << 20, "chose {ce}");
        // The same weights at full precision everywhere: one size fits all.
        let uniform: Vec<u8> = bytes
            .chunks_exact(4)
            .enumerate()
            .flat_map(|(i, e)| {
                let mut e: [u8; 4] = e.try_into().unwrap();
                if i < 200_000 {
                    e[0] = (i * 37) as u8;
                    e[1] = (e[1] & 0xe0) | ((i * 11) as u8 & 0x1f);
                }
                e
            })
            .collect();
        let read = |start: u64, count: u64| -> Result<(Vec<u8>, Option<Vec<u8>>)> {
            Ok((
                uniform[(start * 4) as usize..((start + count) * 4) as usize].to_vec(),
                None,
            ))
        };
        assert_eq!(
            choose_chunk_elems(n, 4, Op::Replace, 1, true, &read).unwrap(),
            1 << 20
        );
        // An inline base's chunk size bounds the choice from below.
        let read_low = |start: u64, count: u64| -> Result<(Vec<u8>, Option<Vec<u8>>)> {
            Ok((
                bytes[(start * 4) as usize..((start + count) * 4) as usize].to_vec(),
                None,
            ))
        };
        assert_eq!(
            choose_chunk_elems(n, 4, Op::Replace, 1 << 20, true, &read_low).unwrap(),
            1 << 20
        );
    }
}
