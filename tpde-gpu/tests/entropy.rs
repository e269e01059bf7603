//! The device entropy decoder's CPU mirror (host-parsed layout, device
//! tables, the kernel's loop) against the format crate's reference decoder,
//! plane by plane: every table precision (8..=15), bucket counts from 1 to
//! 16, with and without a context, planes shaped like real bf16 deltas, and
//! hostile streams (truncated, garbled, extra words), which both must
//! refuse with the same reason and without a panic.

use tpde_format::codec::entropy::{decode_plane, encode_plane_tuned, Tuning};
use tpde_format::codec::rans_layout::{parse_plane, PlaneMode, RansLayout};
use tpde_gpu::reference::decode_plane_as_device;

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

fn check(coded: &[u8], ctx: Option<&[u8]>, n: usize, what: &str) -> Result<Vec<u8>, &'static str> {
    let mut want = vec![0u8; n];
    let w = decode_plane(coded, ctx, &mut want);
    let mut got = vec![0x5Au8; n];
    let g = decode_plane_as_device(coded, ctx, &mut got);
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
    let mut rng = Rng(0xD1CE_5EED);
    let mut layout = RansLayout::default();
    let mut seen_scales = [false; 16];
    let mut seen_buckets = [false; 17];
    for scale in 8..=15u32 {
        for max_buckets in [1usize, 2, 3, 5, 8, 16] {
            for n in [1usize, 3, 4, 5, 1000, 9001] {
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
                    encode_plane_tuned(&plane, context, &tuning, &mut coded);
                    let what = format!("scale {scale} buckets<={max_buckets} n {n}");
                    let got = check(&coded, context, n, &what).unwrap();
                    assert_eq!(got, plane, "{what}");
                    if let Ok(PlaneMode::Rans) =
                        parse_plane(&coded, n, context.map(<[u8]>::len), &mut layout)
                    {
                        seen_scales[layout.scale as usize] = true;
                        seen_buckets[layout.buckets] = true;
                    }
                }
            }
        }
    }
    for (s, seen) in seen_scales.iter().enumerate().skip(8) {
        assert!(seen, "no rANS plane at scale {s}");
    }
    for b in [1, 2, 3] {
        assert!(seen_buckets[b], "no rANS plane with {b} buckets");
    }
    assert!(
        (9..=16).any(|b| seen_buckets[b]),
        "no rANS plane with more than 8 buckets: {seen_buckets:?}"
    );
}

#[test]
fn real_shaped_bf16_delta_planes_match() {
    let mut rng = Rng(42);
    for n in [1 << 14, 1 << 16, 100_003] {
        let (hi, lo) = bf16_delta_planes(&mut rng, n);
        let mut c0 = Vec::new();
        encode_plane_tuned(&hi, None, &Tuning::default(), &mut c0);
        let mut c1 = Vec::new();
        encode_plane_tuned(&lo, Some(&hi), &Tuning::default(), &mut c1);
        assert_eq!(c0[0], 2, "plane 0 is rANS-coded");
        assert_eq!(c1[0], 2, "plane 1 is rANS-coded");
        assert_eq!(check(&c0, None, n, "hi").unwrap(), hi);
        assert_eq!(check(&c1, Some(&hi), n, "lo").unwrap(), lo);
    }
}

#[test]
fn hostile_planes_are_refused_like_the_reference_decoder() {
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
    encode_plane_tuned(&plane, Some(&ctx), &tuning, &mut coded);
    let mut layout = RansLayout::default();
    assert_eq!(
        parse_plane(&coded, n, Some(n), &mut layout),
        Ok(PlaneMode::Rans)
    );
    assert!(layout.buckets > 1 && layout.words.len() > 8);
    let mut refused = 0;
    let mut cases: Vec<Vec<u8>> = Vec::new();
    // Truncated anywhere (header, tables, states, words), words dropped,
    // words added, bytes garbled, states moved.
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
    let states = layout.words.start - 16;
    for j in 0..4 {
        let mut c = coded.clone();
        c[states + 4 * j] ^= 0x10;
        cases.push(c);
    }
    for (k, c) in cases.iter().enumerate() {
        for context in [Some(ctx.as_slice()), None] {
            if check(c, context, n, &format!("case {k}")).is_err() {
                refused += 1;
            }
        }
    }
    assert!(refused > cases.len(), "only {refused} refusals");
}
