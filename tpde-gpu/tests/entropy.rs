//! The device entropy decoder's CPU mirror (host-parsed layout, device
//! tables, the kernel's loop) against the format crate's reference decoder,
//! plane by plane, for 4-state planes and the 32-state planes of format
//! 1.6: every table precision (8..=15), bucket counts from 1 to 16, with
//! and without a context, planes shaped like real bf16 deltas, and hostile
//! streams (truncated, garbled, extra words, wrong states), which both must
//! refuse with the same reason and without a panic.

use tpde_format::codec::entropy::{
    decode_plane, decode_plane_lanes, encode_plane_with, Lanes, Tuning,
};
use tpde_format::codec::rans_layout::{parse_plane, PlaneMode, RansLayout};
use tpde_gpu::reference::{decode_plane_as_device, decode_plane_as_device_lanes};

const LANES: [Lanes; 2] = [Lanes::Four, Lanes::ThirtyTwo];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A skewed plane whose distribution depends on `ctx` (so buckets pay).
fn plane_with_context(rng: &mut Rng, ctx: &[u8], spread: u64) -> Vec<u8> {
    ctx.iter()
        .map(|&c| {
            let r = rng.next();
            let mag = (r >> 8) % (1 + (u64::from(c) % 7 + 1) * spread);
            let v = if r & 0x100 != 0 {
                mag as u8
            } else {
                (mag as u8).wrapping_neg()
            };
            v.wrapping_add(c / 32)
        })
        .collect()
}

/// The two planes of bf16 zigzag-ADD deltas of a fine-tune (most weights
/// moved by 0, ±1 or ±2 units in the last place, a few by more).
fn bf16_delta_planes(rng: &mut Rng, n: usize) -> (Vec<u8>, Vec<u8>) {
    let (mut hi, mut lo) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let r = rng.next();
        let d: i32 = match r % 16 {
            0..=7 => 0,
            8..=10 => 1,
            11..=13 => -1,
            14 => {
                if r & 16 == 0 {
                    2
                } else {
                    -2
                }
            }
            _ => ((r >> 8) % 4000) as i32 - 2000,
        };
        let z = ((d << 1) ^ (d >> 31)) as u16;
        hi.push((z >> 8) as u8);
        lo.push(z as u8);
    }
    (hi, lo)
}

/// Both decoders on one coded plane of `lanes` states; the decoded bytes
/// or the common reason.
fn check(
    coded: &[u8],
    ctx: Option<&[u8]>,
    n: usize,
    lanes: Lanes,
    what: &str,
) -> Result<Vec<u8>, &'static str> {
    let mut want = vec![0u8; n];
    let w = decode_plane_lanes(coded, ctx, lanes, &mut want);
    let mut got = vec![0x5Au8; n];
    let g = decode_plane_as_device_lanes(coded, ctx, lanes, &mut got);
    if lanes == Lanes::Four {
        // The 4-state entry points are the same decoders.
        let mut a = vec![0u8; n];
        assert_eq!(decode_plane(coded, ctx, &mut a), w, "{what}");
        let mut b = vec![0x5Au8; n];
        assert_eq!(decode_plane_as_device(coded, ctx, &mut b), g, "{what}");
        assert!(a == want && b == got, "{what}: 4-state entry points differ");
    }
    match (w, g) {
        (Ok(()), Ok(())) => {
            assert!(got == want, "{what}: decoded bytes differ");
            Ok(got)
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "{what}: reasons differ");
            Err(a)
        }
        (a, b) => panic!("{what}: reference {a:?}, device mirror {b:?}"),
    }
}

#[test]
fn every_scale_and_bucket_count_matches_the_reference_decoder() {
    for lanes in LANES {
        every_scale_and_bucket_count(lanes);
    }
}

fn every_scale_and_bucket_count(lanes: Lanes) {
    let mut rng = Rng(0xD1CE_5EED);
    let mut layout = RansLayout::default();
    let mut seen_scales = [false; 16];
    let mut seen_buckets = [false; 17];
    // Sizes around the group sizes (4 and 32: a last step with idle lanes).
    let sizes: &[usize] = match lanes {
        Lanes::Four => &[1, 3, 4, 5, 1000, 9001],
        Lanes::ThirtyTwo => &[1, 5, 31, 32, 33, 1000, 9001],
    };
    for scale in 8..=15u32 {
        for max_buckets in [1usize, 2, 3, 5, 8, 16] {
            for &n in sizes {
                let ctx: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                let spread = 1 + (rng.next() % 9);
                let plane = plane_with_context(&mut rng, &ctx, spread);
                let tuning = Tuning {
                    scale_bits: scale,
                    max_buckets,
                    ctx_min_gain_permille: 0,
                    ..Tuning::default()
                };
                for context in [None, Some(ctx.as_slice())] {
                    let mut coded = Vec::new();
                    encode_plane_with(&plane, context, &tuning, lanes, &mut coded);
                    let what = format!("{lanes:?} scale {scale} buckets<={max_buckets} n {n}");
                    let got = check(&coded, context, n, lanes, &what).unwrap();
                    assert_eq!(got, plane, "{what}");
                    if let Ok(PlaneMode::Rans) =
                        parse_plane(&coded, n, context.map(<[u8]>::len), lanes, &mut layout)
                    {
                        seen_scales[layout.scale as usize] = true;
                        seen_buckets[layout.buckets] = true;
                    }
                }
            }
        }
    }
    for (s, seen) in seen_scales.iter().enumerate().skip(8) {
        assert!(seen, "{lanes:?}: no rANS plane at scale {s}");
    }
    for b in [1, 2, 3] {
        assert!(seen_buckets[b], "{lanes:?}: no rANS plane with {b} buckets");
    }
    assert!(
        (9..=16).any(|b| seen_buckets[b]),
        "{lanes:?}: no rANS plane with more than 8 buckets: {seen_buckets:?}"
    );
}

#[test]
fn real_shaped_bf16_delta_planes_match() {
    let mut rng = Rng(42);
    for lanes in LANES {
        for n in [1 << 14, 1 << 16, 100_003] {
            let (hi, lo) = bf16_delta_planes(&mut rng, n);
            let mut c0 = Vec::new();
            encode_plane_with(&hi, None, &Tuning::default(), lanes, &mut c0);
            let mut c1 = Vec::new();
            encode_plane_with(&lo, Some(&hi), &Tuning::default(), lanes, &mut c1);
            assert_eq!(c0[0], 2, "plane 0 is rANS-coded");
            assert_eq!(c1[0], 2, "plane 1 is rANS-coded");
            let what = format!("{lanes:?} n {n}");
            assert_eq!(check(&c0, None, n, lanes, &what).unwrap(), hi);
            assert_eq!(check(&c1, Some(&hi), n, lanes, &what).unwrap(), lo);
        }
    }
}

/// A plane coded with one lane count and read as the other is refused by
/// both decoders alike (or, rarely, both decode the same bytes).
#[test]
fn a_plane_read_with_the_other_lane_count_is_refused_alike() {
    let mut rng = Rng(7);
    let (hi, _) = bf16_delta_planes(&mut rng, 5000);
    for (coded_as, read_as) in [
        (Lanes::Four, Lanes::ThirtyTwo),
        (Lanes::ThirtyTwo, Lanes::Four),
    ] {
        let mut c = Vec::new();
        encode_plane_with(&hi, None, &Tuning::default(), coded_as, &mut c);
        let what = format!("coded {coded_as:?}, read {read_as:?}");
        assert!(check(&c, None, hi.len(), read_as, &what).is_err(), "{what}");
    }
}

#[test]
fn hostile_planes_are_refused_like_the_reference_decoder() {
    for lanes in LANES {
        hostile_planes(lanes);
    }
}

/// Truncated anywhere (header, tables, states, words), words dropped,
/// words added, bytes garbled, each state changed: both decoders refuse
/// alike, and the three end-of-decode checks (a word past the end, words
/// left over, a final state other than 2^16) each fire.
fn hostile_planes(lanes: Lanes) {
    let mut rng = Rng(99);
    let n = 4099;
    // Few context values, far apart: a context pays, so the plane has buckets.
    let ctx: Vec<u8> = (0..n).map(|_| (rng.next() % 6 * 40) as u8).collect();
    let plane = plane_with_context(&mut rng, &ctx, 3);
    let mut coded = Vec::new();
    let tuning = Tuning {
        ctx_min_gain_permille: 0,
        ..Tuning::default()
    };
    encode_plane_with(&plane, Some(&ctx), &tuning, lanes, &mut coded);
    let mut layout = RansLayout::default();
    assert_eq!(
        parse_plane(&coded, n, Some(n), lanes, &mut layout),
        Ok(PlaneMode::Rans)
    );
    assert!(layout.buckets > 1 && layout.words.len() > 8);
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for cut in (0..coded.len()).step_by(7) {
        cases.push(coded[..cut].to_vec());
    }
    for k in 1..4 {
        cases.push(coded[..coded.len() - 2 * k].to_vec());
        let mut more = coded.clone();
        more.extend(std::iter::repeat_n(0xA5, 2 * k));
        cases.push(more);
    }
    for _ in 0..400 {
        let mut c = coded.clone();
        let i = (rng.next() as usize) % c.len();
        c[i] ^= 1 << (rng.next() % 8);
        cases.push(c);
    }
    // Each stored state changed (the decode then ends in another state),
    // and two states swapped.
    let states = layout.words.start - 4 * lanes.count();
    for j in 0..lanes.count() {
        let mut c = coded.clone();
        c[states + 4 * j] ^= 0x10;
        cases.push(c);
    }
    let mut swapped = coded.clone();
    let (a, b) = (states, states + 4 * (lanes.count() - 1));
    for k in 0..4 {
        swapped.swap(a + k, b + k);
    }
    cases.push(swapped);
    let mut reasons = std::collections::BTreeMap::new();
    for (k, c) in cases.iter().enumerate() {
        for context in [Some(ctx.as_slice()), None] {
            if let Err(r) = check(c, context, n, lanes, &format!("{lanes:?} case {k}")) {
                *reasons.entry(r).or_insert(0) += 1;
            }
        }
    }
    let refused: usize = reasons.values().sum();
    assert!(refused > cases.len(), "{lanes:?}: only {refused} refusals");
    for r in [
        "entropy: truncated stream",
        "entropy: trailing bytes after the last symbol",
        "entropy: final state mismatch",
    ] {
        assert!(
            reasons.contains_key(r),
            "{lanes:?}: never {r:?}: {reasons:?}"
        );
    }
}
