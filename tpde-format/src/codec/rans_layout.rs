//! The layout of one coded plane (spec §5.6), parsed without decoding it:
//! mode, precision, bucket cuts, every bucket's frequency and start tables,
//! the final encoder states (4, or 32 for a v1.6 32-state plane) and where
//! the words are.
//!
//! Why: a decoder that is not [`super::entropy::decode_plane`] — a GPU
//! kernel decoding planes in device memory (`tpde-gpu`), or a reference
//! written against it — needs the parsed tables and the word stream, and
//! must reject exactly the streams the reference decoder rejects. The
//! header and tables are parsed here by the reference decoder's own table
//! reader, with the same checks in the same order and the same error
//! strings; what is left to the caller are the checks that need the decode
//! itself (spec §5.6.5): no word read past the end, every word consumed,
//! final states all `2^16`. [`decode_with_layout`] is that decode, in plain
//! Rust, for tests and as a model of what a kernel must do.

use std::ops::Range;

use super::entropy::{
    read_table, with_tables, Cursor, Lanes, MAX_BUCKETS, MODE_CONST, MODE_RANS, MODE_RAW, RANS_L,
    WIDE_LANES,
};

/// What a coded plane holds (its mode byte, spec §5.6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaneMode {
    /// Mode 0: the plane's bytes are stored verbatim at this byte range of
    /// the coded plane (exactly `m` bytes after the mode byte).
    Raw(Range<usize>),
    /// Mode 1: every byte of the plane is this value.
    Constant(u8),
    /// Mode 2: rANS-coded; the layout was filled in.
    Rans,
}

/// The parsed header, tables and states of a rANS-coded plane (spec
/// §5.6.2–§5.6.4). Reusable: [`parse_plane`] overwrites every field it
/// defines (entries of buckets `>= buckets` are left as they were).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RansLayout {
    /// Table precision: every table sums to `2^scale` (8..=15).
    pub scale: u32,
    /// Context buckets (1..=16); 1 means the context is not read.
    pub buckets: usize,
    /// The bucket of each context byte (from the stored cuts:
    /// `bucket_of[v]` is the number of cuts `<= v`).
    pub bucket_of: [u8; 256],
    /// `freq[b][s]`: frequency of symbol `s` in bucket `b`'s table; 0 for
    /// symbols absent from it. Each bucket's row sums to `2^scale`.
    pub freq: [[u16; 256]; MAX_BUCKETS],
    /// `start[b][s]`: cumulative frequency of the symbols before `s` in
    /// bucket `b` (`start[b][s] + freq[b][s] <= 2^scale`).
    pub start: [[u16; 256]; MAX_BUCKETS],
    /// Interleaved states: symbol `i` is decoded by state `i % lanes` (4,
    /// or 32 for a v1.6 32-state plane).
    pub lanes: usize,
    /// The final encoder states `x_0 .. x_{lanes-1}`, each `>= 2^16`
    /// (entries from `lanes` on are unused).
    pub states: [u32; WIDE_LANES],
    /// Byte range of the 16-bit little-endian words within the coded
    /// plane (an even length; the last word ends the plane).
    pub words: Range<usize>,
}

impl Default for RansLayout {
    fn default() -> Self {
        RansLayout {
            scale: 0,
            buckets: 0,
            bucket_of: [0; 256],
            freq: [[0; 256]; MAX_BUCKETS],
            start: [[0; 256]; MAX_BUCKETS],
            lanes: 0,
            states: [0; WIDE_LANES],
            words: 0..0,
        }
    }
}

impl RansLayout {
    /// The symbol of bucket `b` whose slots hold `slot` (`< 2^scale`):
    /// the present symbol `s` with `start[s] <= slot < start[s] + freq[s]`.
    /// A linear search; decoders build a faster index from the tables.
    pub fn symbol(&self, b: usize, slot: u32) -> u8 {
        let (f, st) = (&self.freq[b % MAX_BUCKETS], &self.start[b % MAX_BUCKETS]);
        let mut s = 0usize;
        while s < 255 && !(f[s] > 0 && u32::from(st[s]) + u32::from(f[s]) > slot) {
            s += 1;
        }
        s as u8
    }
}

/// Parses coded plane `bytes` of `lanes` states (the plane codec says how
/// many) that decodes to `m` bytes, with a context plane of `context_len`
/// bytes if one is available (`None`: none is).
/// Checks everything [`super::entropy::decode_plane`] checks before its
/// decode loop, in the same order and with the same error strings: mode,
/// raw and constant lengths, precision, bucket count and cuts, the context
/// a stream with buckets needs, every table (present-symbol runs, codes,
/// totals, padding), truncated states, states below `2^16`, an odd number
/// of word bytes. For [`PlaneMode::Rans`] the tables, states and word range
/// are written into `layout`.
///
/// Allocates nothing beyond this thread's reusable decode tables.
pub fn parse_plane(
    bytes: &[u8],
    m: usize,
    context_len: Option<usize>,
    lanes: Lanes,
    layout: &mut RansLayout,
) -> Result<PlaneMode, &'static str> {
    let (&mode, rest) = bytes.split_first().ok_or("entropy: empty stream")?;
    match mode {
        MODE_RAW => {
            if rest.len() != m {
                return Err("entropy: raw plane length mismatch");
            }
            Ok(PlaneMode::Raw(1..bytes.len()))
        }
        MODE_CONST => match rest {
            [b] => Ok(PlaneMode::Constant(*b)),
            _ => Err("entropy: constant plane must be one byte"),
        },
        MODE_RANS => {
            parse_rans(rest, m, context_len, lanes.count(), layout)?;
            // Offsets relative to the whole coded plane (after the mode byte).
            layout.words = layout.words.start + 1..layout.words.end + 1;
            Ok(PlaneMode::Rans)
        }
        _ => Err("entropy: unknown mode"),
    }
}

/// [`parse_plane`] after the mode byte (offsets relative to `bytes`).
fn parse_rans(
    bytes: &[u8],
    m: usize,
    context_len: Option<usize>,
    lanes: usize,
    layout: &mut RansLayout,
) -> Result<(), &'static str> {
    let mut c = Cursor { b: bytes, p: 0 };
    let (scale, buckets, bucket_of) = super::entropy::read_header(&mut c)?;
    if buckets > 1 {
        match context_len {
            Some(n) if n == m => {}
            Some(_) => return Err("entropy: context length differs from the plane"),
            None => return Err("entropy: stream needs a context plane"),
        }
    }
    layout.scale = scale;
    layout.buckets = buckets;
    layout.bucket_of = bucket_of;
    with_tables(|t| {
        for b in 0..buckets {
            // read_table writes the entries of present symbols only: clear
            // the bucket's row so that absent symbols read as frequency 0.
            let row = t
                .info
                .get_mut(b << 8..(b + 1) << 8)
                .ok_or("entropy: bucket count out of range")?;
            row.fill(0);
            read_table(&mut c, scale, b, t)?;
            for s in 0..256 {
                let e = t.info[(b << 8 | s) & (MAX_BUCKETS * 256 - 1)];
                layout.freq[b][s] = (e >> 16) as u16;
                layout.start[b][s] = (e & 0xffff) as u16;
            }
        }
        Ok(())
    })?;
    // Frequencies are at most 2^15, so `freq << 16 | start` never loses a
    // bit; a lone symbol of a 2^15 table is the one case near the limit.
    let body = bytes.get(c.p..).ok_or("entropy: truncated header")?;
    let (state_bytes, words) = body
        .split_at_checked(lanes * 4)
        .ok_or("entropy: truncated states")?;
    layout.lanes = lanes;
    for (xs, b) in layout.states.iter_mut().zip(state_bytes.chunks_exact(4)) {
        *xs = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if *xs < RANS_L {
            return Err("entropy: initial state below 2^16");
        }
    }
    if words.len() % 2 != 0 {
        return Err("entropy: odd number of word bytes");
    }
    let at = c.p + lanes * 4;
    layout.words = at..at + words.len();
    Ok(())
}

/// Decodes a coded plane from its parsed layout into `out` (`m` bytes,
/// with `context` of `m` bytes when the plane has buckets), exactly as
/// spec §5.6.5 says and with the reference decoder's error strings:
/// a word needed past the end, words left over, or final states other
/// than `2^16` are rejected. `bytes` is the coded plane `layout` was parsed
/// from. Plain and slow (a linear symbol search): a model of the decode for
/// tests of other decoders, not a replacement for
/// [`super::entropy::decode_plane`].
pub fn decode_with_layout(
    bytes: &[u8],
    mode: &PlaneMode,
    layout: &RansLayout,
    context: Option<&[u8]>,
    out: &mut [u8],
) -> Result<(), &'static str> {
    match mode {
        PlaneMode::Raw(r) => {
            let src = bytes
                .get(r.clone())
                .ok_or("entropy: raw plane length mismatch")?;
            if src.len() != out.len() {
                return Err("entropy: raw plane length mismatch");
            }
            out.copy_from_slice(src);
            Ok(())
        }
        PlaneMode::Constant(b) => {
            out.fill(*b);
            Ok(())
        }
        PlaneMode::Rans => {
            let words = bytes
                .get(layout.words.clone())
                .ok_or("entropy: truncated stream")?;
            let ctx = if layout.buckets > 1 {
                match context {
                    Some(c) if c.len() == out.len() => Some(c),
                    Some(_) => return Err("entropy: context length differs from the plane"),
                    None => return Err("entropy: stream needs a context plane"),
                }
            } else {
                None
            };
            let mask = (1u32 << layout.scale) - 1;
            let lanes = layout.lanes.clamp(1, WIDE_LANES);
            let mut x = layout.states;
            let x = &mut x[..lanes];
            let mut p = 0usize;
            for (i, o) in out.iter_mut().enumerate() {
                let j = i % lanes;
                let b = ctx.map_or(0, |c| usize::from(layout.bucket_of[usize::from(c[i])]));
                let slot = x[j] & mask;
                let s = layout.symbol(b, slot);
                let (f, st) = (
                    u32::from(layout.freq[b][usize::from(s)]),
                    u32::from(layout.start[b][usize::from(s)]),
                );
                *o = s;
                x[j] = f * (x[j] >> layout.scale) + (slot - st);
                if x[j] < RANS_L {
                    let w = words.get(p..p + 2).ok_or("entropy: truncated stream")?;
                    x[j] = x[j] << 16 | u32::from(u16::from_le_bytes([w[0], w[1]]));
                    p += 2;
                }
            }
            if p != words.len() {
                return Err("entropy: trailing bytes after the last symbol");
            }
            if x.iter().any(|&s| s != RANS_L) {
                return Err("entropy: final state mismatch");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::entropy::{decode_plane_lanes, encode_plane_with, Tuning};
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    fn skewed(rng: &mut Rng, n: usize, spread: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let r = rng.next();
                let mag = (r >> 8) % (1 + (r & 7) * spread);
                if r & 0x100 != 0 {
                    mag as u8
                } else {
                    (mag as u8).wrapping_neg()
                }
            })
            .collect()
    }

    #[test]
    fn layout_decode_matches_the_reference_decoder() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut layout = RansLayout::default();
        let mut with_buckets = 0;
        for (n, spread) in [
            (1usize, 3u64),
            (7, 2),
            (1000, 1),
            (4099, 9),
            (70_000, 4),
            (5000, 40),
        ] {
            let ctx = skewed(&mut rng, n, 2);
            let plane: Vec<u8> = skewed(&mut rng, n, spread)
                .iter()
                .zip(&ctx)
                .map(|(&v, &c)| v.wrapping_add(c.wrapping_mul(3)))
                .collect();
            for (context, lanes) in [None, Some(ctx.as_slice())]
                .into_iter()
                .flat_map(|c| [(c, Lanes::Four), (c, Lanes::ThirtyTwo)])
            {
                let mut coded = Vec::new();
                encode_plane_with(&plane, context, &Tuning::default(), lanes, &mut coded);
                let mut want = vec![0u8; n];
                decode_plane_lanes(&coded, context, lanes, &mut want).unwrap();
                assert_eq!(want, plane);
                let mode =
                    parse_plane(&coded, n, context.map(<[u8]>::len), lanes, &mut layout).unwrap();
                if mode == PlaneMode::Rans && layout.buckets > 1 {
                    with_buckets += 1;
                }
                let mut got = vec![0xAAu8; n];
                decode_with_layout(&coded, &mode, &layout, context, &mut got).unwrap();
                assert_eq!(
                    got,
                    plane,
                    "n {n} spread {spread} ctx {}",
                    context.is_some()
                );
            }
        }
        assert!(with_buckets >= 2, "too few planes coded with a context");
    }

    #[test]
    fn hostile_planes_fail_like_the_reference_decoder() {
        for lanes in [Lanes::Four, Lanes::ThirtyTwo] {
            hostile_planes_fail_like_the_reference_decoder_with(lanes);
        }
    }

    fn hostile_planes_fail_like_the_reference_decoder_with(lanes: Lanes) {
        let mut rng = Rng(7);
        let n = 3000;
        let plane = skewed(&mut rng, n, 5);
        let mut coded = Vec::new();
        encode_plane_with(&plane, None, &Tuning::default(), lanes, &mut coded);
        assert_eq!(coded[0], MODE_RANS);
        let mut layout = RansLayout::default();
        let mut out = vec![0u8; n];
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for cut in 0..coded.len().min(400) {
            cases.push(coded[..cut].to_vec());
        }
        cases.push(coded[..coded.len() - 2].to_vec());
        let mut extra = coded.clone();
        extra.extend_from_slice(&[0, 0]);
        cases.push(extra);
        for i in 0..coded.len().min(300) {
            let mut c = coded.clone();
            c[i] ^= 1 << (rng.next() % 8);
            cases.push(c);
        }
        for c in &cases {
            let want = decode_plane_lanes(c, None, lanes, &mut out);
            let got = parse_plane(c, n, None, lanes, &mut layout)
                .and_then(|mode| decode_with_layout(c, &mode, &layout, None, &mut out));
            match (want, got) {
                (Ok(()), Ok(())) => {}
                (Err(a), Err(b)) => assert_eq!(a, b),
                (a, b) => panic!("reference {a:?}, layout {b:?}"),
            }
        }
    }
}
