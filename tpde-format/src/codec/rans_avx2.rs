//! AVX2 decoding of 32-state rANS planes (spec §5.6.4, v1.6 `Rans32` and
//! `RansBase32`).
//!
//! Why: the 4-state decoder is bound by its instruction count, not by the
//! states' dependency chains (decoding two planes interleaved, 8 states,
//! was no faster; BENCHMARKS.md, session 6). 32 states decode as four
//! vectors of eight lanes: per vector, one gather of the lanes' symbols
//! (a 4-byte load at each slot of the byte table, low byte kept), one gather
//! of their `freq << 16 | start` entries, a multiply-add, and the
//! renormalization words handed to the lanes that need them by a
//! permutation picked by the lanes' need mask (lane order within the
//! vector, vectors in order: exactly the word order of §5.6.5). With a
//! context, the 32 context bytes' buckets are counted with one byte compare
//! per cut of the partition (a gather of them per vector cost a third of
//! the speed).
//!
//! The arithmetic is the portable decoder's, lane for lane (wrapping 32-bit
//! multiply and add, renormalize when the state is below `2^16`), so both
//! give the same bytes and states for any input; the caller finishes the
//! plane on the portable loop (which checks every word read) and applies
//! the end checks to the states this returns.
//!
//! `unsafe`: the intrinsics need AVX2, which [`decode`] checks at run time
//! before entering the `#[target_feature]` function; every gather index is
//! in range by construction (below), loads of words and context bytes are
//! within slices whose lengths the loop checks.

use std::arch::x86_64::*;

use super::entropy::{DecTables, INFO_LEN, SYM_LEN, SYM_PAD, WIDE_LANES};

/// Lane `j` of a vector takes word number `popcount(mask & ((1 << j) - 1))`
/// of the next eight: `PERM[mask]` is that permutation for each need mask.
static PERM: [[u32; 8]; 256] = {
    let mut t = [[0u32; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let mut k = 0u32;
        let mut j = 0;
        while j < 8 {
            if (m >> j) & 1 == 1 {
                t[m][j] = k;
                k += 1;
            }
            j += 1;
        }
        m += 1;
    }
    t
};

/// Word bytes a block of 32 symbols reads at most (every lane renormalizes).
const BLOCK_WORD_BYTES: usize = 2 * WIDE_LANES;

/// Decodes as many whole 32-symbol blocks of `out` as can be decoded
/// without a bounds check on the words (while a block's worst case, 64
/// bytes, is left), updating the states `x`. Returns the symbols decoded
/// (a multiple of 32) and the word bytes consumed; `(0, 0)` without AVX2.
/// `ctx` is empty (no context) or exactly `out.len()` bytes.
pub(crate) fn decode(
    t: &DecTables,
    bucket_of: &[u8; 256],
    ctx: &[u8],
    scale: u32,
    x: &mut [u32; WIDE_LANES],
    words: &[u8],
    out: &mut [u8],
) -> (usize, usize) {
    if !std::arch::is_x86_feature_detected!("avx2") || (!ctx.is_empty() && ctx.len() != out.len()) {
        return (0, 0);
    }
    // The partition's cuts (spec §5.6.2): a context byte's bucket is the
    // number of cuts at or below it, counted 32 bytes at a time.
    let mut cuts = [0u8; 16];
    let mut ncuts = 0usize;
    for v in 1..256 {
        if bucket_of[v] != bucket_of[v - 1] && ncuts < 15 {
            cuts[ncuts] = v as u8;
            ncuts += 1;
        }
    }
    let cuts = &cuts[..ncuts];
    macro_rules! go {
        ($($s:literal)*) => {
            match scale {
                // SAFETY: AVX2 was detected above.
                $($s => unsafe {
                    if ctx.is_empty() {
                        blocks::<false, $s>(t, cuts, ctx, x, words, out)
                    } else {
                        blocks::<true, $s>(t, cuts, ctx, x, words, out)
                    }
                },)*
                _ => (0, 0),
            }
        };
    }
    go!(8 9 10 11 12 13 14 15)
}

/// The AVX2 loop. In-range indexes, given `scale == SCALE <= 15` and
/// buckets `<= 15` (masked by the caller):
/// - symbol gather: `bucket << SCALE | slot < 16 << 15 = SYM_LEN`, and the
///   4-byte load ends at most 3 bytes later, inside `SYM_LEN + SYM_PAD`;
/// - info gather: `bucket << 8 | symbol < 16 << 8 = INFO_LEN`;
/// - bucket gather: a context byte `< 256`;
/// - words: a block starts only with 64 bytes left, and reads at most 16
///   bytes past its fourth vector's start, which is at most 48 bytes in;
/// - context: 32 bytes at `32 k`, for block `k < out.len() / 32`, of a
///   context exactly `out.len()` bytes long.
#[target_feature(enable = "avx2")]
unsafe fn blocks<const CTX: bool, const SCALE: i32>(
    t: &DecTables,
    cuts: &[u8],
    ctx: &[u8],
    x: &mut [u32; WIDE_LANES],
    words: &[u8],
    out: &mut [u8],
) -> (usize, usize) {
    const { assert!(SYM_LEN == 16 << 15 && INFO_LEN == 16 << 8 && SYM_PAD >= 3) };
    const { assert!(SCALE >= 8 && SCALE <= 15) };
    let sym = t.sym.as_ptr().cast::<i32>();
    let info = t.info.as_ptr().cast::<i32>();
    let mut cutv = [_mm256_setzero_si256(); 15];
    for (v, &c) in cutv.iter_mut().zip(cuts) {
        *v = _mm256_set1_epi8(c as i8);
    }
    let cutv = &cutv[..cuts.len().min(15)];
    let slot_mask = _mm256_set1_epi32((1 << SCALE) - 1);
    let low8 = _mm256_set1_epi32(0xff);
    let low16 = _mm256_set1_epi32(0xffff);
    // packus works within 128-bit halves: this puts the 32 bytes in order.
    let fix = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut xs = [_mm256_setzero_si256(); 4];
    for (v, xv) in xs.iter_mut().enumerate() {
        // SAFETY: 8 u32 at 8 v of a 32-element array.
        *xv = unsafe { _mm256_loadu_si256(x.as_ptr().add(8 * v).cast()) };
    }
    let mut p = 0usize;
    let mut done = 0usize;
    for blk in out.chunks_exact_mut(WIDE_LANES) {
        if words.len() - p < BLOCK_WORD_BYTES {
            break;
        }
        let mut s = [_mm256_setzero_si256(); 4];
        let mut bk = [_mm256_setzero_si256(); 4];
        if CTX {
            // SAFETY: 32 context bytes at `done`, inside ctx (see above).
            let c = unsafe { _mm256_loadu_si256(ctx.as_ptr().add(done).cast()) };
            let mut b = _mm256_setzero_si256();
            for &cut in cutv {
                // 0xff where c >= cut: subtracting it adds 1.
                b = _mm256_sub_epi8(b, _mm256_cmpeq_epi8(_mm256_max_epu8(c, cut), c));
            }
            let lo = _mm256_castsi256_si128(b);
            let hi = _mm256_extracti128_si256::<1>(b);
            bk = [
                _mm256_cvtepu8_epi32(lo),
                _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(lo)),
                _mm256_cvtepu8_epi32(hi),
                _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(hi)),
            ];
        }
        for v in 0..4 {
            let slot = _mm256_and_si256(xs[v], slot_mask);
            let (sidx, iofs) = if CTX {
                let b = bk[v];
                (
                    _mm256_or_si256(_mm256_slli_epi32::<SCALE>(b), slot),
                    _mm256_slli_epi32::<8>(b),
                )
            } else {
                (slot, _mm256_setzero_si256())
            };
            // SAFETY: indexes in range (see above).
            let sv = _mm256_and_si256(unsafe { _mm256_i32gather_epi32::<1>(sym, sidx) }, low8);
            // SAFETY: indexes in range (see above).
            let e = unsafe { _mm256_i32gather_epi32::<4>(info, _mm256_or_si256(iofs, sv)) };
            let freq = _mm256_srli_epi32::<16>(e);
            let bias = _mm256_sub_epi32(slot, _mm256_and_si256(e, low16));
            let nx = _mm256_add_epi32(
                _mm256_mullo_epi32(freq, _mm256_srli_epi32::<SCALE>(xs[v])),
                bias,
            );
            // Below 2^16: renormalize with the next word.
            let need = _mm256_cmpeq_epi32(_mm256_min_epu32(nx, low16), nx);
            let mask = _mm256_movemask_ps(_mm256_castsi256_ps(need)) as usize;
            // SAFETY: 16 bytes at p, at most 48 bytes into a block that
            // started with 64 left.
            let w8 = unsafe { _mm_loadu_si128(words.as_ptr().add(p).cast()) };
            // SAFETY: one 8-entry row of the table.
            let idx = unsafe { _mm256_loadu_si256(PERM[mask & 255].as_ptr().cast()) };
            let wv = _mm256_permutevar8x32_epi32(_mm256_cvtepu16_epi32(w8), idx);
            let renormed = _mm256_or_si256(_mm256_slli_epi32::<16>(nx), wv);
            xs[v] = _mm256_blendv_epi8(nx, renormed, need);
            p += 2 * mask.count_ones() as usize;
            s[v] = sv;
        }
        let a = _mm256_packus_epi32(s[0], s[1]);
        let b = _mm256_packus_epi32(s[2], s[3]);
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, b), fix);
        // SAFETY: blk is 32 bytes.
        unsafe { _mm256_storeu_si256(blk.as_mut_ptr().cast(), bytes) };
        done += WIDE_LANES;
    }
    for (v, xv) in xs.iter().enumerate() {
        // SAFETY: 8 u32 at 8 v of a 32-element array.
        unsafe { _mm256_storeu_si256(x.as_mut_ptr().add(8 * v).cast(), *xv) };
    }
    (done, p)
}
