//! Writes the golden vectors of format major 1 (v1.0, v1.1 and v1.2) into
//! `tests/vectors/v1/`.
//!
//! Run: `cargo run -p tpde-tests --example make_vectors`.
//!
//! Vectors are never regenerated, only added to: a vector whose archive
//! already exists is left alone (its manifest entry too), and writing one
//! never replaces an existing file. To add a vector, add it to `vectors()`
//! under a new name and run this again; commit the new archive and the
//! grown `manifest.json`.
//!
//! The manifest's digests are computed from the *inputs* (the safetensors
//! files handed to `pack`), not from the archive, so the tests that compare a
//! decode against them check the archive against an independent truth.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use tpde_format::codec::entropy::{encode_plane_tuned, Tuning};
use tpde_format::codec::stream::{PlaneCoder, WIDE_MIN_PLANE};
use tpde_format::format::{Codec, PlaneCodec};
use tpde_format::pack::{pack, BaseMode, PackOptions};
use tpde_format::safetensors::Checkpoint;
use tpde_format::{Dtype, WriteOptions};
use tpde_tests::hostile::{Parts, Table};
use tpde_tests::{safetensors_bytes, sha256_hex, vectors_v1, weight_bits, Rng, TensorData};

/// The shared external base file of the v1.0 vectors, shipped beside the archives.
const BASE_FILE: &str = "base.safetensors";
/// The external base file of the v1.1 vectors (a new file: the v1.0 one is
/// never rewritten).
const BASE_FILE_V11: &str = "base_v11.safetensors";
/// The external base file of the v1.2 (row-mapped base) vectors.
const BASE_FILE_V12: &str = "base_v12.safetensors";
/// The external base file of the v1.2 quantized-base vectors.
const BASE_FILE_V12_DEQUANT: &str = "base_v12_dequant.safetensors";
/// The external base file of the v1.2 base-context (RansBase) vectors.
const BASE_FILE_V12_RANS_BASE: &str = "base_v12_rans_base.safetensors";
const BASE_FILE_V14: &str = "base_v14.safetensors";
const BASE_FILE_V15: &str = "base_v15.safetensors";

enum Target {
    /// One safetensors file: name, tensors, `__metadata__`.
    Single(
        &'static str,
        Vec<TensorData>,
        Option<Vec<(&'static str, &'static str)>>,
    ),
    /// A sharded checkpoint: index file name, shards (name, tensors).
    Sharded(&'static str, Vec<(&'static str, Vec<TensorData>)>),
}

struct Vector {
    name: &'static str,
    description: &'static str,
    chunk_elems: u64,
    target: Target,
    /// Base tensors and how they are kept; `None`: no base at all.
    base: Option<(Vec<TensorData>, BaseMode)>,
    /// The external base file's name (when the mode is external).
    base_file: &'static str,
    /// `WriteOptions::with_max_minor`.
    max_minor: u16,
    /// The header minor the archive must have (recorded in the manifest as
    /// `format_version`: the tests check the header against it).
    expect_minor: u16,
    /// `WriteOptions::with_plane_coder`: zstd for the vectors written before
    /// rANS planes existed (what made them), rANS for the later ones.
    plane_coder: PlaneCoder,
    /// Edits applied to the writer's archive before it is stored (for planes
    /// the reference writer never emits but readers must accept); `None`
    /// for a vector that is the writer's output as it is.
    craft: Option<Craft>,
    /// `WriteOptions::with_wide_min_plane` (format 1.6; ignored below it).
    wide_min_plane: usize,
}

/// Edits a packed archive into the vector's bytes.
type Craft = fn(Vec<u8>) -> Result<Vec<u8>, String>;

fn mask(w: usize) -> u64 {
    if w == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * w)) - 1
    }
}

fn get(buf: &[u8], i: usize, w: usize) -> u64 {
    let mut a = [0u8; 8];
    a[..w].copy_from_slice(&buf[i * w..(i + 1) * w]);
    u64::from_le_bytes(a)
}

fn put(buf: &mut [u8], i: usize, w: usize, v: u64) {
    buf[i * w..(i + 1) * w].copy_from_slice(&v.to_le_bytes()[..w]);
}

/// A random element of dtype `d` (BOOL stays 0/1).
fn random_word(rng: &mut Rng, d: Dtype) -> u64 {
    if d == Dtype::Bool {
        rng.below(2)
    } else {
        rng.next_u64() & mask(d.width())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pattern {
    /// Flip low bits: XOR deltas are tiny, ADD deltas are not.
    Xor,
    /// Add a small number: ADD deltas are tiny, XOR deltas carry.
    Add,
    /// Set to a constant: REPLACE values are all equal, the others random.
    Replace,
}

/// A changed element under `p` (BOOL: flip, or set to 1).
fn changed(rng: &mut Rng, d: Dtype, p: Pattern, b: u64, c: u64) -> u64 {
    let m = mask(d.width());
    match (d, p) {
        (Dtype::Bool, Pattern::Replace) => 1,
        (Dtype::Bool, _) => b ^ 1,
        (_, Pattern::Xor) => b ^ (1 + rng.below(3)),
        (_, Pattern::Add) => b.wrapping_add(1 + rng.below(3)) & m,
        (_, Pattern::Replace) => c,
    }
}

/// A base tensor and a target derived from it with `ce`-element chunks laid
/// out as: chunk 0 unchanged (zero chunk), chunk 1 three changes (sparse),
/// every later chunk fully changed (dense; chunk 2 is the middle chunk the
/// writer tries the combine ops on, so `p` decides the tensor's op).
fn delta_pair(rng: &mut Rng, d: Dtype, n: usize, ce: usize, p: Pattern) -> (Vec<u8>, Vec<u8>) {
    let w = d.width();
    let mut base = vec![0u8; n * w];
    for i in 0..n {
        put(&mut base, i, w, random_word(rng, d));
    }
    let mut target = base.clone();
    let c = random_word(rng, d) | 1;
    for i in ce..n {
        let in_sparse_chunk = i < 2 * ce;
        if in_sparse_chunk && !matches!(i - ce, 5 | 17 | 90) {
            continue;
        }
        let b = get(&base, i, w);
        put(&mut target, i, w, changed(rng, d, p, b, c));
    }
    (base, target)
}

/// A baseless tensor with `ce`-element chunks: chunk 0 all zero, chunk 1
/// three non-zero elements, chunk 2 small values (compresses), later chunks
/// random (stored raw).
fn standalone_tensor(rng: &mut Rng, d: Dtype, n: usize, ce: usize) -> Vec<u8> {
    let w = d.width();
    let mut t = vec![0u8; n * w];
    for i in ce..n {
        let v = match i / ce {
            1 if matches!(i - ce, 3 | 40 | 100) => random_word(rng, d) | 1,
            1 => 0,
            2 if d == Dtype::Bool => rng.below(2),
            2 => rng.below(4),
            _ => random_word(rng, d),
        };
        put(&mut t, i, w, v);
    }
    t
}

fn lower(d: Dtype) -> String {
    d.name().to_lowercase()
}

fn td(name: impl Into<String>, d: Dtype, shape: &[u64], data: Vec<u8>) -> TensorData {
    (name.into(), d, shape.to_vec(), data)
}

/// Target and base tensors of the delta vectors (shared by all base modes).
fn delta_set() -> (Vec<TensorData>, Vec<TensorData>) {
    const CE: usize = 128;
    const N: usize = 3 * CE + 17; // not a multiple of the chunk size
    let mut rng = Rng(0x7d3e_2024_0001);
    let (mut target, mut base) = (Vec::new(), Vec::new());
    for d in Dtype::ALL {
        let patterns: &[Pattern] = if d == Dtype::Bool {
            &[Pattern::Xor, Pattern::Replace]
        } else {
            &[Pattern::Xor, Pattern::Add, Pattern::Replace]
        };
        for &p in patterns {
            let (b, t) = delta_pair(&mut rng, d, N, CE, p);
            let name = format!("{}.{}", lower(d), format!("{p:?}").to_lowercase());
            base.push(td(&name, d, &[N as u64], b));
            target.push(td(&name, d, &[N as u64], t));
        }
    }
    // Sparse chunks whose positions stream compresses: every 4th element.
    {
        let d = Dtype::F32;
        let n = 2 * CE;
        let b: Vec<u8> = (0..n)
            .flat_map(|i| (i as f32 * 0.25).to_le_bytes())
            .collect();
        let mut t = b.clone();
        for i in (0..n).step_by(4) {
            put(&mut t, i, 4, rng.next_u64() & mask(4));
        }
        base.push(td("positions.regular", d, &[16, 16], b));
        target.push(td("positions.regular", d, &[16, 16], t));
    }
    // A 2-d tensor under a non-ASCII name with '/' (never used as a path).
    {
        let (b, t) = delta_pair(&mut rng, Dtype::BF16, 7 * 41, CE, Pattern::Add);
        base.push(td("émbed/wéights.0", Dtype::BF16, &[7, 41], b));
        target.push(td("émbed/wéights.0", Dtype::BF16, &[7, 41], t));
    }
    // Identical in base and target: all zero chunks.
    let same = rng.bytes(300 * 8);
    base.push(td("identical.i64", Dtype::I64, &[300], same.clone()));
    target.push(td("identical.i64", Dtype::I64, &[300], same));
    // Empty and 0-d tensors present in both.
    base.push(td("empty.f32", Dtype::F32, &[0], Vec::new()));
    target.push(td("empty.f32", Dtype::F32, &[0], Vec::new()));
    base.push(td("empty2d.u16", Dtype::U16, &[4, 0], Vec::new()));
    target.push(td("empty2d.u16", Dtype::U16, &[4, 0], Vec::new()));
    base.push(td(
        "scalar.f32",
        Dtype::F32,
        &[],
        1.5f32.to_le_bytes().to_vec(),
    ));
    target.push(td(
        "scalar.f32",
        Dtype::F32,
        &[],
        (-0.0f32).to_le_bytes().to_vec(),
    ));
    base.push(td("scalar.same.u16", Dtype::U16, &[], vec![7, 1]));
    target.push(td("scalar.same.u16", Dtype::U16, &[], vec![7, 1]));
    // Only in the target (stored standalone), dtype and shape changed
    // (stored standalone), only in the base (ignored).
    target.push(td(
        "new.only_in_target",
        Dtype::U8,
        &[3 * CE as u64 + 5],
        standalone_tensor(&mut rng, Dtype::U8, 3 * CE + 5, CE),
    ));
    base.push(td("dtype_changed", Dtype::F32, &[10], rng.bytes(40)));
    target.push(td("dtype_changed", Dtype::BF16, &[10], rng.bytes(20)));
    base.push(td("shape_changed", Dtype::I32, &[2, 5], rng.bytes(40)));
    target.push(td("shape_changed", Dtype::I32, &[5, 2], rng.bytes(40)));
    base.push(td("only_in_base", Dtype::F16, &[33], rng.bytes(66)));
    (target, base)
}

fn standalone_set() -> Vec<TensorData> {
    const CE: usize = 128;
    const N: usize = 3 * CE + 17;
    let mut rng = Rng(0x7d3e_2024_0002);
    let mut out = Vec::new();
    for d in Dtype::ALL {
        out.push(td(
            format!("{}.mixed", lower(d)),
            d,
            &[N as u64],
            standalone_tensor(&mut rng, d, N, CE),
        ));
    }
    out.push(td("empty.f32", Dtype::F32, &[0], Vec::new()));
    out.push(td("empty3d.bf16", Dtype::BF16, &[3, 0, 2], Vec::new()));
    out.push(td(
        "scalar.f64",
        Dtype::F64,
        &[],
        std::f64::consts::PI.to_le_bytes().to_vec(),
    ));
    out.push(td("scalar.zero.i32", Dtype::I32, &[], vec![0; 4]));
    out.push(td("odd.u16", Dtype::U16, &[7, 11], rng.bytes(7 * 11 * 2)));
    out
}

/// Defaults of the v1.0 vectors (written before v1.1 existed).
const V10: Vector = Vector {
    name: "",
    description: "",
    chunk_elems: 0,
    target: Target::Single("", Vec::new(), None),
    base: None,
    base_file: BASE_FILE,
    max_minor: 0,
    expect_minor: 0,
    plane_coder: PlaneCoder::Zstd,
    craft: None,
    wide_min_plane: WIDE_MIN_PLANE,
};

// ---- v1.1: widened bases, per-plane streams, renamed tensors ---------------

/// The exact widening of one narrow float to a wider one (spec §6.2),
/// computed here independently of `tpde_format::codec::widen`: through the
/// hardware's float conversions for every non-NaN value (exact, since the
/// wider format holds every narrower value), and by the spec's bit rule for
/// NaNs only (hardware conversions may quiet a signalling NaN).
fn widen_ref(from: Dtype, to: Dtype, x: u64) -> u64 {
    let as_f32 = match from {
        Dtype::BF16 => (x as u32) << 16,
        Dtype::F16 => {
            let h = x as u32;
            let (sign, exp, man) = (h >> 15, (h >> 10) & 0x1f, h & 0x3ff);
            if exp == 0x1f {
                (sign << 31) | 0x7f80_0000 | (man << 13)
            } else {
                // value = man × 2^-24 (subnormal) or (1024 + man) × 2^(exp-25).
                let v = if exp == 0 {
                    f64::from(man) * 2f64.powi(-24)
                } else {
                    f64::from(1024 + man) * 2f64.powi(exp as i32 - 25)
                };
                let v = if sign == 1 { -v } else { v };
                (v as f32).to_bits()
            }
        }
        _ => x as u32,
    };
    if to == Dtype::F32 {
        return u64::from(as_f32);
    }
    let f = f32::from_bits(as_f32);
    if f.is_nan() {
        (u64::from(as_f32 >> 31) << 63)
            | 0x7ff0_0000_0000_0000
            | (u64::from(as_f32 & 0x7f_ffff) << 29)
    } else {
        f64::from(f).to_bits()
    }
}

/// Bit patterns worth widening: signed zeros, the smallest and largest
/// subnormals, normals at both ends, infinities, quiet and signalling NaNs
/// with payloads.
fn special_floats(d: Dtype) -> Vec<u64> {
    match d {
        Dtype::F16 => vec![
            0x0000, 0x8000, 0x0001, 0x8001, 0x0002, 0x0155, 0x0200, 0x03ff, 0x83ff, 0x0400, 0x3c00,
            0xbc00, 0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x7e00, 0xfe00, 0x7c01, 0xfc01, 0x7d55, 0x7fff,
            0xffff, 0x7e01,
        ],
        Dtype::BF16 => vec![
            0x0000, 0x8000, 0x0001, 0x8001, 0x007f, 0x807f, 0x0080, 0x3f80, 0xbf80, 0x7f7f, 0xff7f,
            0x7f80, 0xff80, 0x7fc0, 0xffc0, 0x7f81, 0xff81, 0x7fa5, 0x7fff, 0xffff,
        ],
        _ => vec![
            0x0000_0000,
            0x8000_0000,
            0x0000_0001,
            0x8000_0001,
            0x0000_0100,
            0x0040_0000,
            0x007f_ffff,
            0x807f_ffff,
            0x0080_0000,
            0x3f80_0000,
            0xbf80_0000,
            0x7f7f_ffff,
            0xff7f_ffff,
            0x7f80_0000,
            0xff80_0000,
            0x7fc0_0000,
            0xffc0_0000,
            0x7f80_0001,
            0xff80_0001,
            0x7fbf_ffff,
            0x7fc1_2345,
            0x7fff_ffff,
            0xffff_ffff,
        ],
    }
}

/// A narrow base of `n` elements (`specials` first, then random bit
/// patterns, NaNs and subnormals included) and the wider target predicted
/// by it, with `ce`-element chunks: chunk 0 the exact widening (a zero
/// chunk), chunk 1 a residual in the low bits of `n_sparse` elements
/// (sparse), chunk 2 a residual in every element (dense, its high byte
/// planes zero and its low ones noise), later chunks exact again.
fn widened_pair(
    rng: &mut Rng,
    from: Dtype,
    to: Dtype,
    base_words: &[u64],
    ce: usize,
    n_sparse: usize,
) -> (Vec<u8>, Vec<u8>) {
    let (fw, tw) = (from.width(), to.width());
    let n = base_words.len();
    let mut base = vec![0u8; n * fw];
    let mut target = vec![0u8; n * tw];
    // Residual bits: the bits a wider format adds below the narrow mantissa.
    let low = if to == Dtype::F64 { 29 } else { 16 };
    let sparse: Vec<usize> = (0..n_sparse)
        .map(|k| ce + 1 + k * (ce - 2) / n_sparse.max(1))
        .collect();
    for (i, &x) in base_words.iter().enumerate() {
        put(&mut base, i, fw, x);
        let mut y = widen_ref(from, to, x);
        if (i / ce == 1 && sparse.contains(&i)) || i / ce == 2 {
            y ^= (rng.next_u64() & ((1u64 << low) - 1)) | 1;
        }
        put(&mut target, i, tw, y);
    }
    (base, target)
}

const WIDEN_PAIRS: [(Dtype, Dtype); 5] = [
    (Dtype::BF16, Dtype::F32),
    (Dtype::F16, Dtype::F32),
    (Dtype::BF16, Dtype::F64),
    (Dtype::F16, Dtype::F64),
    (Dtype::F32, Dtype::F64),
];

/// Targets and bases of the v1.1 vectors, `ce`-element chunks. (Every BF16
/// and F16 bit pattern is widened by `spec_reader.rs` on archives it packs
/// itself: as a stored vector it would cost 64 KiB per dtype, since the
/// writer stores a plane with a flat byte histogram raw.)
fn v11_set(ce: usize) -> (Vec<TensorData>, Vec<TensorData>) {
    let mut rng = Rng(0x7d3e_2024_1101);
    let (mut target, mut base) = (Vec::new(), Vec::new());
    for (from, to) in WIDEN_PAIRS {
        let n = 3 * ce + 17;
        let mut words = special_floats(from);
        let mask = (1u64 << (8 * from.width())) - 1;
        // The specials again in chunk 1 and 2, where residuals are added.
        let specials = words.clone();
        while words.len() < n {
            if words.len() == ce || words.len() == 2 * ce {
                words.extend(&specials);
            } else {
                words.push(rng.next_u64() & mask);
            }
        }
        words.truncate(n);
        let (b, t) = widened_pair(&mut rng, from, to, &words, ce, ce / 4);
        let name = format!("{}.to_{}", lower(from), lower(to));
        base.push(td(&name, from, &[n as u64], b));
        target.push(td(&name, to, &[n as u64], t));
    }
    // Same dtype, per-plane values: small xor deltas in an F32 tensor.
    {
        let (b, t) = delta_pair(&mut rng, Dtype::F32, 3 * ce + 5, ce, Pattern::Xor);
        base.push(td("same.f32", Dtype::F32, &[3 * ce as u64 + 5], b));
        target.push(td("same.f32", Dtype::F32, &[3 * ce as u64 + 5], t));
    }
    // Small signed integer residuals (target = base ± 1..3 ulps): zigzag
    // adds store them with zero high planes (Op::AddZigzag, v1.1). Chunk 0
    // unchanged, chunk 1 sparse, later chunks dense.
    {
        let n = 3 * ce + 5;
        let mut b = vec![0u8; n * 4];
        for i in 0..n {
            put(
                &mut b,
                i,
                4,
                u64::from((0.001 * rng.below(1000) as f32 - 0.5).to_bits()),
            );
        }
        let mut t = b.clone();
        for i in ce..n {
            if i < 2 * ce && i % 9 != 0 {
                continue;
            }
            let d = 1 + rng.below(3) as u32;
            let x = get(&b, i, 4) as u32;
            let y = if rng.below(2) == 0 {
                x.wrapping_add(d)
            } else {
                x.wrapping_sub(d)
            };
            put(&mut t, i, 4, u64::from(y));
        }
        base.push(td("zigzag.f32", Dtype::F32, &[n as u64], b));
        target.push(td("zigzag.f32", Dtype::F32, &[n as u64], t));
    }
    // One-byte values: whole-stream codecs even in a v1.1 archive.
    {
        let (b, t) = delta_pair(&mut rng, Dtype::U8, 3 * ce, ce, Pattern::Add);
        base.push(td("u8.delta", Dtype::U8, &[3 * ce as u64], b));
        target.push(td("u8.delta", Dtype::U8, &[3 * ce as u64], t));
    }
    // Renamed: the target's bytes equal a base tensor of another name (a
    // decoy of the same dtype and shape comes first); two targets share one.
    let orig = rng.bytes(200 * 2);
    base.push(td("decoy.f16", Dtype::F16, &[10, 20], rng.bytes(200 * 2)));
    base.push(td("orig.f16", Dtype::F16, &[10, 20], orig.clone()));
    target.push(td("copy_a.f16", Dtype::F16, &[10, 20], orig.clone()));
    target.push(td("copy_b.f16", Dtype::F16, &[10, 20], orig));
    let moved = rng.bytes(300 * 4);
    base.push(td("renamed.old", Dtype::I32, &[300], moved.clone()));
    target.push(td("renamed.new", Dtype::I32, &[300], moved));
    // Never narrowed: an F32 base does not predict a BF16 target (stored
    // standalone).
    base.push(td("narrow.bf16", Dtype::F32, &[64], rng.bytes(256)));
    target.push(td("narrow.bf16", Dtype::BF16, &[64], rng.bytes(128)));
    (target, base)
}

fn v11_vectors() -> Vec<Vector> {
    let (small_t, small_b) = v11_set(128);
    // Appendix B: 24 F32 elements predicted by a BF16 base (planes of 24
    // bytes: long enough for zstd to pay on the all-zero ones).
    let mini_base: Vec<u16> = (0..24u16).map(|i| 0x3f80 + i).collect();
    let mini_target: Vec<u8> = mini_base
        .iter()
        .enumerate()
        .flat_map(|(i, &b)| ((u32::from(b) << 16) | (i as u32 * 0x0a0b)).to_le_bytes())
        .collect();
    let mini_base: Vec<u8> = mini_base.iter().flat_map(|b| b.to_le_bytes()).collect();
    let v11 = |name, description, chunk_elems, target, base| Vector {
        name,
        description,
        chunk_elems,
        target,
        base,
        base_file: BASE_FILE_V11,
        max_minor: 1,
        expect_minor: 1,
        plane_coder: PlaneCoder::Zstd,
        craft: None,
        wide_min_plane: WIDE_MIN_PLANE,
    };
    vec![
        v11(
            "v11_minimal",
            "v1.1 in one small archive: an F32 [24] tensor against an inline BF16 base \
             (InlineWidened), one dense chunk whose per-plane values have zstd and raw \
             planes; spec/FORMAT.md appendix B dumps it",
            24,
            Target::Single(
                "minimal_v11.safetensors",
                vec![td("w", Dtype::F32, &[24], mini_target)],
                None,
            ),
            Some((
                vec![td("w", Dtype::BF16, &[24], mini_base)],
                BaseMode::Inline,
            )),
        ),
        v11(
            "v11_widen_inline",
            "v1.1, inline compressed base: specials (signed zeros, subnormals, \
             infinities, quiet and signalling NaNs with payloads) and random bit patterns \
             widened on all five pairs bf16/f16->f32/f64 and f32->f64, with zero, sparse \
             and dense chunks over the widened bases; per-plane values (raw and zstd \
             planes) in targets and inline bases; AddZigzag in sparse and dense \
             chunks; 1-byte values; renamed tensors (two \
             targets sharing one base); an F32 base never narrowed to BF16",
            128,
            Target::Single("target.safetensors", small_t.clone(), None),
            Some((small_b.clone(), BaseMode::Inline)),
        ),
        v11(
            "v11_widen_inline_plain",
            "v1.1: the inputs of v11_widen_inline with plain inline bases",
            128,
            Target::Single("target.safetensors", small_t.clone(), None),
            Some((small_b.clone(), BaseMode::InlinePlain)),
        ),
        v11(
            "v11_widen_external",
            "v1.1: the inputs of v11_widen_inline against the external base \
             base_v11.safetensors (ExternalWidened: digests of the narrow base tensors; \
             renamed tensors referenced by their base names)",
            128,
            Target::Single("target.safetensors", small_t.clone(), None),
            Some((small_b.clone(), BaseMode::External)),
        ),
        Vector {
            max_minor: 0,
            expect_minor: 0,
            ..v11(
                "v11_max_minor0",
                "the inputs of v11_widen_external written by the v1.1 writer with \
                 with_max_minor(0): a v1.0 archive (no per-plane streams; narrower bases \
                 not used, those targets stored standalone; renamed tensors still matched)",
                128,
                Target::Single("target.safetensors", small_t, None),
                Some((small_b, BaseMode::External)),
            )
        },
    ]
}

// ---- v1.1: rANS planes (spec §5.6) -------------------------------------------

/// A skewed small number: 0 with probability 1/2, 1 with 1/4, 2 and 3 with 1/8.
fn skewed(rng: &mut Rng) -> u64 {
    match rng.below(8) {
        0..=3 => 0,
        4 | 5 => 1,
        6 => 2,
        _ => 3,
    }
}

/// A float near ±[2^-7, 1) as an F32 bit pattern: its top byte (sign and
/// high exponent bits) takes few values, the rest is noise.
fn plausible_f32(rng: &mut Rng) -> u64 {
    let sign = rng.below(2) << 31;
    let exp = 120 + skewed(rng) + rng.below(4);
    sign | (exp << 23) | (rng.next_u64() & 0x7f_ffff)
}

/// Targets and bases of the rANS vectors, `ce`-element chunks. Each tensor
/// is shaped so that the default writer takes one path of §5.6.
fn rans_set(ce: usize) -> (Vec<TensorData>, Vec<TensorData>) {
    let mut rng = Rng(0x7d3e_2024_11a5);
    let (mut target, mut base) = (Vec::new(), Vec::new());
    // Plane 1 is a function of plane 0 plus 3 bits of noise: coded with
    // context buckets (B > 1); plane 0 (skewed) without context. No base
    // counterpart: stored standalone, the values are the target. The last
    // chunk's planes are 103 bytes: a rANS plane ending in a partial round
    // of the four lanes.
    {
        let n = 2 * ce + 103;
        let mut t = vec![0u8; n * 2];
        for i in 0..n {
            let hi = skewed(&mut rng);
            put(&mut t, i, 2, hi << 8 | (hi * 64 + rng.below(8)));
        }
        target.push(td("ctx.u16", Dtype::U16, &[n as u64], t));
    }
    // Plane 0 uniform (a `Raw` plane), plane 1 its high nibble plus 2 bits
    // of noise: a `Rans` plane whose context is a raw-stored plane, with
    // many informative buckets.
    {
        let n = 2 * ce;
        let mut t = vec![0u8; n * 2];
        for i in 0..n {
            let hi = rng.below(256);
            put(&mut t, i, 2, hi << 8 | ((hi >> 4) * 16 + rng.below(4)));
        }
        target.push(td("ctx_after_raw.u16", Dtype::U16, &[n as u64], t));
    }
    // target = base ± 1..3 in the low byte: AddZigzag values have a zero
    // high plane (a constant rANS plane, mode 1) and a low plane of a few
    // symbols coded without context (its context is constant). The inline
    // base's high plane (sign and exponent) is a rANS plane too.
    {
        let n = 2 * ce + 7;
        let mut b = vec![0u8; n * 2];
        for i in 0..n {
            put(&mut b, i, 2, plausible_f32(&mut rng) >> 16);
        }
        let mut t = b.clone();
        for i in 0..n {
            let x = get(&b, i, 2) as u16;
            let d = rng.below(4) as u16;
            let y = if rng.below(2) == 0 {
                x.wrapping_add(d)
            } else {
                x.wrapping_sub(d)
            };
            put(&mut t, i, 2, u64::from(y));
        }
        base.push(td("zigzag.bf16", Dtype::BF16, &[n as u64], b));
        target.push(td("zigzag.bf16", Dtype::BF16, &[n as u64], t));
    }
    // Every 8th element changed by an XOR whose bytes are skewed and
    // related (plane 1 follows plane 0): sparse chunks (the regular
    // positions cost less than the zero runs of a dense chunk) whose value
    // planes are rANS-coded, with and without context.
    {
        let n = 3 * ce;
        let mut b = vec![0u8; n * 4];
        for i in 0..n {
            put(&mut b, i, 4, plausible_f32(&mut rng));
        }
        let mut t = b.clone();
        for i in (3..n).step_by(8) {
            let v0 = 1 + skewed(&mut rng);
            let v1 = v0 * 32 + rng.below(2);
            let v2 = skewed(&mut rng) * 7;
            let v3 = rng.below(256);
            let v = v0 << 24 | v1 << 16 | v2 << 8 | v3;
            put(&mut t, i, 4, get(&b, i, 4) ^ v);
        }
        base.push(td("sparse.f32", Dtype::F32, &[n as u64], b));
        target.push(td("sparse.f32", Dtype::F32, &[n as u64], t));
    }
    (target, base)
}

/// Byte range of plane `k` of chunk `c`'s values within the chunk's stored
/// bytes, and the plane size `m`.
fn plane_range(p: &Parts, table: Table, t: usize, c: usize, k: usize) -> (usize, usize, usize) {
    let ch = &p.chunks(table, t)[c];
    let Codec::PerPlane(planes) = &ch.values.codec else {
        return (0, 0, 0);
    };
    let at = ch.positions.stored_len as usize
        + planes[..k]
            .iter()
            .map(|x| x.stored_len as usize)
            .sum::<usize>();
    let m = (ch.values.raw_len / planes.len() as u64) as usize;
    (at, at + planes[k].stored_len as usize, m)
}

/// Replaces plane `k` of chunk `c` of `table[t]` with `codec` and the bytes
/// `f` makes from the decoded plane and its context (the decoded plane
/// `k - 1`, if any); the stream's and chunk's lengths, offsets and CRCs are
/// kept consistent.
fn recode_plane(
    p: &mut Parts,
    (table, t, c, k): (Table, usize, usize, usize),
    codec: PlaneCodec,
    f: impl Fn(&[u8], Option<&[u8]>) -> Vec<u8>,
) -> Result<Vec<u8>, String> {
    let ch = p.chunks(table, t)[c].clone();
    let stored = p.blob_bytes(tpde_tests::hostile::Blob::Chunk(table, t, c));
    let pos = ch.positions.stored_len as usize;
    let mut raw = vec![0u8; ch.values.raw_len as usize];
    tpde_format::codec::stream::decompress_into(&ch.values, &stored[pos..], &mut raw)
        .map_err(|e| format!("decoding the plane to recode: {e}"))?;
    let (lo, hi, m) = plane_range(p, table, t, c, k);
    if m == 0 {
        return Err("not a per-plane chunk".into());
    }
    let plane = &raw[k * m..(k + 1) * m];
    let context = k.checked_sub(1).map(|j| &raw[j * m..(j + 1) * m]);
    let new = f(plane, context);
    let out = new.clone();
    p.edit_chunk(table, t, c, |ch, bytes| {
        bytes.splice(lo..hi, new.iter().copied());
        if let Codec::PerPlane(planes) = &mut ch.values.codec {
            planes[k].stored_len = new.len() as u64;
            planes[k].codec = codec;
            ch.values.stored_len = planes.iter().map(|x| x.stored_len).sum();
        }
    });
    Ok(out)
}

/// The chunk of `table` (tensor `name`) and plane satisfying `pred` on
/// (chunk, plane index, plane codec, plane bytes): (table, tensor, chunk, plane).
fn find_plane(
    p: &Parts,
    table: Table,
    name: &str,
    pred: impl Fn(usize, usize, PlaneCodec, &[u8]) -> bool,
) -> Result<(Table, usize, usize, usize), String> {
    let t = p
        .table(table)
        .iter()
        .position(|r| r.name == name)
        .ok_or_else(|| format!("no tensor {name}"))?;
    for (c, ch) in p.chunks(table, t).iter().enumerate() {
        let Codec::PerPlane(planes) = &ch.values.codec else {
            continue;
        };
        let stored = p.blob_bytes(tpde_tests::hostile::Blob::Chunk(table, t, c));
        for (k, pl) in planes.iter().enumerate() {
            let (lo, hi, _) = plane_range(p, table, t, c, k);
            if pred(c, k, pl.codec, &stored[lo..hi]) {
                return Ok((table, t, c, k));
            }
        }
    }
    Err(format!("{name}: no such plane"))
}

/// `v11_rans_crafted`: the writer's `v11_rans` archive with planes recoded
/// into forms the reference writer never stores but readers must accept
/// (spec §5.6): a raw-mode plane (mode 0, one byte longer than a `Raw`
/// plane), rANS planes at the extreme precisions (scale 8 and 15), and a
/// context plane split into 16 buckets (the most §5.6.2 allows).
fn craft_rans(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut p = Parts::parse(&bytes);
    let rans = |b: &[u8]| b.first() == Some(&2);
    // Mode 0 in place of a `Raw` plane of the inline base.
    let at = find_plane(&p, Table::Base, "zigzag.bf16", |_, _, c, _| {
        c == PlaneCodec::Raw
    })?;
    recode_plane(&mut p, at, PlaneCodec::Rans, |plane, _| {
        [&[0u8][..], plane].concat()
    })?;
    // Scale 8 and scale 15, without and with a context.
    for (name, k, scale) in [("ctx.u16", 0, 8), ("ctx.u16", 1, 15)] {
        let at = find_plane(&p, Table::Target, name, |c, kk, codec, b| {
            c == 0 && kk == k && codec == PlaneCodec::Rans && rans(b)
        })?;
        let tuning = Tuning {
            scale_bits: scale,
            ..Tuning::default()
        };
        let new = recode_plane(&mut p, at, PlaneCodec::Rans, |plane, ctx| {
            let mut out = Vec::new();
            encode_plane_tuned(plane, ctx, &tuning, &mut out);
            out
        })?;
        if new.get(..2) != Some(&[2, scale as u8][..]) || (k == 1 && new.get(2) < Some(&2)) {
            return Err(format!(
                "{name} plane {k}: not recoded at scale {scale}: {:?}",
                &new[..3]
            ));
        }
    }
    // 16 buckets: the merge started from every context value, no minimum gain.
    let at = find_plane(&p, Table::Target, "ctx_after_raw.u16", |c, k, codec, b| {
        c == 0 && k == 1 && codec == PlaneCodec::Rans && rans(b)
    })?;
    let tuning = Tuning {
        max_buckets: 16,
        every_value: true,
        ctx_min_gain_permille: 0,
        ..Tuning::default()
    };
    let new = recode_plane(&mut p, at, PlaneCodec::Rans, |plane, ctx| {
        let mut out = Vec::new();
        encode_plane_tuned(plane, ctx, &tuning, &mut out);
        out
    })?;
    if new.first() != Some(&2) || new.get(2) != Some(&16) {
        return Err(format!(
            "ctx_after_raw.u16: not 16 buckets: {:?}",
            &new[..3]
        ));
    }
    Ok(p.to_bytes())
}

fn rans_vectors() -> Vec<Vector> {
    let (t, b) = rans_set(512);
    let v = |name, description, craft| Vector {
        name,
        description,
        chunk_elems: 512,
        target: Target::Single("rans.safetensors", t.clone(), None),
        base: Some((b.clone(), BaseMode::Inline)),
        base_file: BASE_FILE_V11,
        max_minor: 1,
        expect_minor: 1,
        plane_coder: PlaneCoder::Rans,
        craft,
        wide_min_plane: WIDE_MIN_PLANE,
    };
    vec![
        v(
            "v11_rans",
            "v1.1, the default plane coder (rANS, spec §5.6), inline compressed base: \
             rANS planes with context buckets (plane 1 conditioned on plane 0, also on a \
             raw-stored plane 0) and without (plane 0; a plane whose context is \
             constant), constant rANS planes (mode 1) from AddZigzag values, rANS value \
             planes in sparse chunks, rANS planes in inline base chunks",
            None,
        ),
        v(
            "v11_rans_crafted",
            "v11_rans with planes recoded by the reference encoder into forms the writer \
             never stores but readers must accept: a raw-mode rANS plane (mode 0) in an \
             inline base chunk, rANS planes at scale 8 (no context) and 15 (with \
             context), a context plane split into 16 buckets",
            Some(craft_rans as Craft),
        ),
    ]
}

// ---- v1.2: row-mapped bases (spec §6.3) -------------------------------------

/// `rows` rows of `cols` random elements of dtype `d`.
fn random_rows(rng: &mut Rng, d: Dtype, rows: usize, cols: usize) -> Vec<Vec<u8>> {
    (0..rows)
        .map(|_| {
            let mut r = vec![0u8; cols * d.width()];
            for i in 0..cols {
                put(&mut r, i, d.width(), random_word(rng, d));
            }
            r
        })
        .collect()
}

/// Tensors whose base has another row count. Rows of 12 elements against
/// 128-element chunks, so rows and runs straddle chunk boundaries.
fn v12_set() -> (Vec<TensorData>, Vec<TensorData>) {
    let mut rng = Rng(0x12_0a5e_2026_1126);
    let (mut target, mut base) = (Vec::new(), Vec::new());
    let flat = |rows: &[Vec<u8>]| rows.concat();
    // A pruned vocabulary: every third base row dropped (runs of 2 rows),
    // the rest verbatim (zero chunks).
    let b = random_rows(&mut rng, Dtype::F32, 60, 12);
    let t: Vec<Vec<u8>> = b
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 1)
        .map(|(_, r)| r.clone())
        .collect();
    base.push(td("vocab.pruned", Dtype::F32, &[60, 12], flat(&b)));
    target.push(td("vocab.pruned", Dtype::F32, &[40, 12], flat(&t)));
    // An extended vocabulary, trained: the 40 base rows with a few edited
    // elements in some rows (aligned gaps between verbatim rows), then 10
    // new rows (predicted by zero).
    let b = random_rows(&mut rng, Dtype::BF16, 40, 12);
    let mut t = b.clone();
    for (i, row) in t.iter_mut().enumerate() {
        if i % 4 == 3 {
            let k = rng.below(12) as usize;
            let x = get(row, k, 2);
            put(row, k, 2, x ^ 1);
        }
    }
    t.extend(random_rows(&mut rng, Dtype::BF16, 10, 12));
    base.push(td("vocab.extended", Dtype::BF16, &[40, 12], flat(&b)));
    target.push(td("vocab.extended", Dtype::BF16, &[50, 12], flat(&t)));
    // Rows of a base tensor of another name, with two new rows inserted in
    // the middle and the first base row dropped (a decoy of the same
    // trailing shape comes first).
    base.push(td(
        "decoy.i16",
        Dtype::I16,
        &[30, 12],
        flat(&random_rows(&mut rng, Dtype::I16, 30, 12)),
    ));
    let b = random_rows(&mut rng, Dtype::I16, 30, 12);
    let mut t: Vec<Vec<u8>> = b[1..15].to_vec();
    t.extend(random_rows(&mut rng, Dtype::I16, 2, 12));
    t.extend(b[15..].iter().cloned());
    base.push(td("embed.old", Dtype::I16, &[30, 12], flat(&b)));
    target.push(td("embed.new", Dtype::I16, &[31, 12], flat(&t)));
    // Same name, every row trained, fewer rows: no verbatim row, so row i
    // predicts row i (one prefix run) and the delta holds the training.
    let b = random_rows(&mut rng, Dtype::F16, 24, 12);
    let mut t: Vec<Vec<u8>> = b[..20].to_vec();
    for row in &mut t {
        let x = get(row, 5, 2);
        put(row, 5, 2, x ^ 3);
    }
    base.push(td("vocab.cut_trained", Dtype::F16, &[24, 12], flat(&b)));
    target.push(td("vocab.cut_trained", Dtype::F16, &[20, 12], flat(&t)));
    // A 3-d tensor (rows are [4, 3] slices) grown by one row.
    let b = random_rows(&mut rng, Dtype::U8, 16, 12);
    let mut t = b.clone();
    t.insert(7, random_rows(&mut rng, Dtype::U8, 1, 12).remove(0));
    base.push(td("cube.u8", Dtype::U8, &[16, 4, 3], flat(&b)));
    target.push(td("cube.u8", Dtype::U8, &[17, 4, 3], flat(&t)));
    (target, base)
}

/// F32 scales covering every case of spec §6.4.2: signed zeros,
/// subnormals, infinities, quiet and signalling NaNs with payloads, the
/// largest normal, and ordinary values.
const SPECIAL_SCALES: [u32; 12] = [
    0x0000_0000,
    0x8000_0000,
    0x0000_0005,
    0x8000_0001,
    0x7f80_0000,
    0xff80_0000,
    0x7fa0_0001,
    0xffc0_0123,
    0x7f7f_ffff,
    0x3c23_d70a, // 0.01
    0xbf00_0000, // -0.5
    0x3f80_0001, // 1 + 2^-23: ties in the rounding
];

#[allow(clippy::too_many_arguments)]
/// A quantized pair: codes and scales (base), and an F32 target that is the
/// predictor plus residuals: none over the first `ce` elements (a zero
/// chunk), a few over the next `ce` (sparse), everywhere after (dense).
fn quantized(
    rng: &mut Rng,
    name: &str,
    shape: &[u64],
    signed: bool,
    scale_shape: &[u64],
    axis: tpde_format::format::ScaleAxis,
    suffix: (&str, &str),
    ce: usize,
) -> (TensorData, Vec<TensorData>) {
    use tpde_format::codec::dequant;
    let n: u64 = shape.iter().product();
    let scale_n: u64 = scale_shape.iter().product();
    let mut q = rng.bytes(n as usize);
    q[0] = 0x80;
    if n > 2 {
        q[1] = 0;
        q[2] = 0x7f;
    }
    let row_elems: u64 = shape.get(1..).map_or(1, |r| r.iter().product());
    // The first element using scale 4 (+inf) and 5 (-inf) has code 0 (a NaN
    // product), the first using scale 8 (largest normal) code 127 (+inf).
    for (k, code) in [(4u64, 0u8), (5, 0), (8, 0x7f)] {
        let e = match axis {
            tpde_format::format::ScaleAxis::Rows => k * row_elems,
            tpde_format::format::ScaleAxis::Columns => k,
            tpde_format::format::ScaleAxis::Tensor => continue,
        };
        if k < scale_n && e < n {
            q[e as usize] = code;
        }
    }
    let scales: Vec<u8> = (0..scale_n)
        .flat_map(|k| {
            let bits = if (k as usize) < SPECIAL_SCALES.len() && scale_n > 1 {
                SPECIAL_SCALES[k as usize]
            } else {
                (0.001 * (1 + rng.below(100)) as f32).to_bits()
            };
            bits.to_le_bytes()
        })
        .collect();
    let sr = dequant::scale_range(axis, row_elems, 0..n);
    let mut pred = vec![0u8; n as usize * 4];
    dequant::predict(&q, signed, &scales, sr.start, axis, row_elems, 0, &mut pred);
    let mut t = pred.clone();
    for i in 0..n as usize {
        let touch = match i / ce {
            0 => false,
            1 => i % 11 == 0,
            _ => true,
        };
        if touch {
            let x = get(&t, i, 4);
            put(
                &mut t,
                i,
                4,
                x.wrapping_add(rng.below(64)).wrapping_sub(32) & 0xffff_ffff,
            );
        }
    }
    let qd = if signed { Dtype::I8 } else { Dtype::U8 };
    (
        td(name, Dtype::F32, shape, t),
        vec![
            td(format!("{name}{}", suffix.0), qd, shape, q),
            td(
                format!("{name}{}", suffix.1),
                Dtype::F32,
                scale_shape,
                scales,
            ),
        ],
    )
}

/// F32 tensors predicted by quantized codes and scales (spec §6.4).
fn v12_dequant_set(ce: usize) -> (Vec<TensorData>, Vec<TensorData>) {
    use tpde_format::format::ScaleAxis;
    let mut rng = Rng(0xdec0_de12_2026_1126);
    let (mut target, mut base) = (Vec::new(), Vec::new());
    let dot = (".q", ".scale");
    let under = ("_q", "_scale");
    for (name, shape, signed, scale_shape, axis, suffix) in [
        // Per-row scales [rows, 1]: 12 rows of 32, every special scale.
        (
            "w.rows",
            vec![12u64, 32],
            true,
            vec![12u64, 1],
            ScaleAxis::Rows,
            dot,
        ),
        // Per-column scales [c] with U8 codes, rows shorter than a chunk.
        (
            "w.cols",
            vec![10, 40],
            false,
            vec![40],
            ScaleAxis::Columns,
            under,
        ),
        // Per-column scales [1, c], rows longer than a chunk.
        (
            "w.cols_long",
            vec![2, 300],
            true,
            vec![1, 300],
            ScaleAxis::Columns,
            dot,
        ),
        // One scale for the tensor, and a 0-d tensor with a 0-d scale.
        (
            "w.tensor",
            vec![3, 100],
            true,
            vec![1],
            ScaleAxis::Tensor,
            dot,
        ),
        ("w.scalar", vec![], true, vec![], ScaleAxis::Tensor, dot),
    ] {
        let (t, b) = quantized(
            &mut rng,
            name,
            &shape,
            signed,
            &scale_shape,
            axis,
            suffix,
            ce,
        );
        target.push(t);
        base.extend(b);
    }
    // A same-name F32 base too: an ordinary delta beside the quantized ones.
    let (b, t) = delta_pair(&mut rng, Dtype::F32, 2 * ce, ce, Pattern::Xor);
    base.push(td("plain.f32", Dtype::F32, &[2 * ce as u64], b));
    target.push(td("plain.f32", Dtype::F32, &[2 * ce as u64], t));
    (target, base)
}

/// A trained weight: a bf16 `w` with |w| in 2^-8..1, and `w + d` with an
/// update `d` of about the same size whatever `w` (as an optimizer makes
/// it), both as f32 values.
fn trained(rng: &mut Rng, size: f32) -> (f32, f32) {
    let bits =
        0x3b80_0000 + ((rng.below(8) as u32) << 23) + ((rng.next_u64() as u32) & 0x007f_0000);
    let w = f32::from_bits(bits | ((rng.below(2) as u32) << 31));
    let d = size * (rng.below(1 << 16) as f32 / 65536.0 - 0.5);
    (w, w + d)
}

/// bf16 bits of an f32, rounded to nearest even.
fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// Trained bf16 and f32 weights whose deltas the base's exponent predicts
/// (spec §5.7): the writer codes their planes with the base as context.
fn v12_rans_base_set(ce: usize) -> (Vec<TensorData>, Vec<TensorData>) {
    let mut rng = Rng(0xba5e_c0de_2026_1126);
    let (mut target, mut base) = (Vec::new(), Vec::new());
    // BF16 [256, 64] in 4-chunk tensors: chunk 0 unchanged, chunk 1 a third
    // of the elements updated (sparse), chunks 2-3 every element (dense).
    // Small updates (plane 1 carries them) and large ones (plane 0 too).
    let n = 4 * ce;
    for (name, size) in [("attn.w", 2e-3), ("mlp.w", 5e-2)] {
        let (mut b, mut t) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (w, u) = trained(&mut rng, size);
            let touched = match i / ce {
                0 => false,
                1 => i % 3 == 0,
                _ => true,
            };
            b.extend_from_slice(&to_bf16(w).to_le_bytes());
            t.extend_from_slice(&to_bf16(if touched { u } else { w }).to_le_bytes());
        }
        base.push(td(name, Dtype::BF16, &[n as u64 / 64, 64], b));
        target.push(td(name, Dtype::BF16, &[n as u64 / 64, 64], t));
    }
    // F32 target over its BF16 cast (a widened base): the context is the
    // widened predictor's top byte.
    let (mut b, mut t) = (Vec::new(), Vec::new());
    for _ in 0..2 * ce {
        let (w, u) = trained(&mut rng, 2e-3);
        b.extend_from_slice(&to_bf16(w).to_le_bytes());
        t.extend_from_slice(&u.to_le_bytes());
    }
    base.push(td("head.w", Dtype::BF16, &[2 * ce as u64], b));
    target.push(td("head.w", Dtype::F32, &[2 * ce as u64], t));
    (target, base)
}

fn v12_vectors() -> Vec<Vector> {
    let (rt, rb) = v12_rans_base_set(4096);
    let rb_vec = |name, description, mode| Vector {
        name,
        description,
        chunk_elems: 4096,
        target: Target::Single("trained.safetensors", rt.clone(), None),
        base: Some((rb.clone(), mode)),
        base_file: BASE_FILE_V12_RANS_BASE,
        max_minor: 2,
        expect_minor: 2,
        plane_coder: PlaneCoder::Rans,
        craft: None,
        wide_min_plane: WIDE_MIN_PLANE,
    };
    let (dt, db) = v12_dequant_set(128);
    let dq = |name, description, mode| Vector {
        name,
        description,
        chunk_elems: 128,
        target: Target::Single("quantized.safetensors", dt.clone(), None),
        base: Some((db.clone(), mode)),
        base_file: BASE_FILE_V12_DEQUANT,
        max_minor: 2,
        expect_minor: 2,
        plane_coder: PlaneCoder::Rans,
        craft: None,
        wide_min_plane: WIDE_MIN_PLANE,
    };
    let (t, b) = v12_set();
    let v = |name, description, mode| Vector {
        name,
        description,
        chunk_elems: 128,
        target: Target::Single("target.safetensors", t.clone(), None),
        base: Some((b.clone(), mode)),
        base_file: BASE_FILE_V12,
        max_minor: 2,
        expect_minor: 2,
        plane_coder: PlaneCoder::Rans,
        craft: None,
        wide_min_plane: WIDE_MIN_PLANE,
    };
    vec![
        v(
            "v12_rows_inline",
            "v1.2 row-mapped bases (InlineRows), inline compressed base: a pruned \
             vocabulary (runs of 2 rows), an extended and trained one (aligned gaps \
             filled, new rows predicted by zero), rows of a renamed base with rows \
             inserted and dropped, a cut and trained vocabulary (one prefix run), a 3-d \
             tensor grown by a row; rows straddle 128-element chunks",
            BaseMode::Inline,
        ),
        v(
            "v12_rows_inline_plain",
            "v1.2: the inputs of v12_rows_inline with plain inline bases",
            BaseMode::InlinePlain,
        ),
        v(
            "v12_rows_external",
            "v1.2: the inputs of v12_rows_inline against the external base \
             base_v12.safetensors (ExternalRows: the base tensor's digest and shape)",
            BaseMode::External,
        ),
        dq(
            "v12_dequant_inline",
            "v1.2 quantized bases (InlineDequant), inline compressed codes and scales: \
             F32 targets predicted by f32(q) x scale with per-row, per-column (rows \
             shorter and longer than a chunk) and per-tensor scales, I8 and U8 codes \
             (.q/.scale and _q/_scale names), a 0-d tensor; scales holding signed \
             zeros, subnormals, infinities, NaNs with payloads (canonical NaN \
             predictors), the largest normal and rounding ties; zero, sparse and \
             dense chunks over them; one ordinary same-name delta beside them",
            BaseMode::Inline,
        ),
        dq(
            "v12_dequant_inline_plain",
            "v1.2: the inputs of v12_dequant_inline with plain inline codes and scales",
            BaseMode::InlinePlain,
        ),
        dq(
            "v12_dequant_external",
            "v1.2: the inputs of v12_dequant_inline against the external base \
             base_v12_dequant.safetensors (ExternalDequant: digests, codes dtype, \
             scales shape)",
            BaseMode::External,
        ),
        rb_vec(
            "v12_rans_base",
            "v1.2 RansBase planes (spec §5.7): trained bf16 weights (a zero, a sparse \
             and two dense chunks) and an F32 tensor over its widened bf16 cast, \
             against the external base base_v12_rans_base.safetensors; values planes \
             coded with the base's top byte as context",
            BaseMode::External,
        ),
        rb_vec(
            "v12_rans_base_inline",
            "v1.2: the inputs of v12_rans_base with an inline compressed base",
            BaseMode::Inline,
        ),
    ]
}

/// v1.3: the same inputs as earlier vectors, written with a compressed
/// index (header flag bit 0, spec §4.0.5).
fn v13_vectors() -> Vec<Vector> {
    let (t, b) = v12_set();
    let (dt, db) = delta_set();
    vec![
        Vector {
            name: "v13_rows_external",
            description: "v1.3 zstd-compressed index (header flag 0x1): the inputs of \
                          v12_rows_external (row maps in the index) against \
                          base_v12.safetensors",
            chunk_elems: 128,
            target: Target::Single("target.safetensors", t, None),
            base: Some((b, BaseMode::External)),
            base_file: BASE_FILE_V12,
            max_minor: 3,
            expect_minor: 3,
            plane_coder: PlaneCoder::Rans,
            craft: None,
            wide_min_plane: WIDE_MIN_PLANE,
        },
        Vector {
            name: "v13_delta_inline",
            description: "v1.3 zstd-compressed index: the inputs of delta_inline (every \
                          dtype, op and chunk kind; an inline compressed base) written by \
                          the 1.3 writer",
            chunk_elems: 128,
            target: Target::Single("target.safetensors", dt, Some(vec![("format", "pt")])),
            base: Some((db, BaseMode::Inline)),
            base_file: BASE_FILE,
            max_minor: 3,
            expect_minor: 3,
            plane_coder: PlaneCoder::Rans,
            craft: None,
            wide_min_plane: WIDE_MIN_PLANE,
        },
    ]
}

/// A tensor of 4 chunks of 1024 weight-like elements of `w` bytes
/// ([`weight_bits`]): dense, sparse (nonzero only at the three offsets of
/// `sparse`), zero, dense.
fn rot_chunks(rng: &mut Rng, w: usize, sparse: [usize; 3]) -> Vec<u8> {
    let n = 4096;
    let mut t = vec![0u8; n * w];
    for i in 0..n {
        let v = match i / 1024 {
            1 if sparse.contains(&(i - 1024)) => weight_bits(rng, w),
            1 | 2 => 0,
            _ => weight_bits(rng, w),
        };
        put(&mut t, i, w, v);
    }
    t
}

/// v1.4 `ReplaceRot` (spec §6.1): 4 chunks of 1024 elements per tensor.
/// `a.f32`, `b.bf16`: no base; chunks dense, sparse (3 nonzero), zero,
/// dense. `c.f32`: a base of the same name, unrelated (every op with it
/// loses to `ReplaceRot`, so the op has a base it ignores); that base,
/// inline, is stored with `ReplaceRot` too. `d.f32`: small adds against its
/// base (`AddZigzag`), so the archive mixes rotated and other ops.
fn v14_set() -> (Vec<TensorData>, Vec<TensorData>) {
    let mut rng = Rng(0x0014_0014);
    let n = 4096;
    let a = rot_chunks(&mut rng, 4, [7, 300, 1000]);
    let b = rot_chunks(&mut rng, 2, [7, 300, 1000]);
    let words = |rng: &mut Rng| -> Vec<u8> {
        let mut t = vec![0u8; n * 4];
        for i in 0..n {
            put(&mut t, i, 4, weight_bits(rng, 4));
        }
        t
    };
    let (c_base, c) = (words(&mut rng), words(&mut rng));
    let d_base = words(&mut rng);
    let mut d = d_base.clone();
    for i in 0..n {
        let v = get(&d_base, i, 4);
        let step = rng.below(5);
        put(&mut d, i, 4, if i % 2 == 0 { v + step } else { v - step });
    }
    let shape = [16, 256];
    (
        vec![
            td("a.f32", Dtype::F32, &shape, a),
            td("b.bf16", Dtype::BF16, &shape, b),
            td("c.f32", Dtype::F32, &shape, c),
            td("d.f32", Dtype::F32, &shape, d),
        ],
        vec![
            td("c.f32", Dtype::F32, &shape, c_base),
            td("d.f32", Dtype::F32, &shape, d_base),
        ],
    )
}

/// v1.4 `ReplaceRot` at width 8: an F64 tensor of weights, no base
/// (dense, sparse, zero and dense chunks of 1024 elements).
fn v14_f64_set() -> Vec<TensorData> {
    let t = rot_chunks(&mut Rng(0x0014_0064), 8, [11, 512, 1023]);
    vec![td("e.f64", Dtype::F64, &[16, 256], t)]
}

/// v1.4: the `ReplaceRot` op, with an inline and an external base.
fn v14_vectors() -> Vec<Vector> {
    let (t, b) = v14_set();
    let v = |name, description, mode| Vector {
        name,
        description,
        chunk_elems: 1024,
        target: Target::Single("target.safetensors", t.clone(), None),
        base: Some((b.clone(), mode)),
        base_file: BASE_FILE_V14,
        max_minor: 4,
        expect_minor: 4,
        plane_coder: PlaneCoder::Rans,
        craft: None,
        wide_min_plane: WIDE_MIN_PLANE,
    };
    vec![
        v(
            "v14_rot_inline",
            "v1.4 ReplaceRot (spec §6.1): weight-like F32 and BF16 tensors with no base \
             (dense, sparse, zero chunks), an F32 tensor with an unrelated base, that base \
             stored inline with ReplaceRot, and an AddZigzag tensor",
            BaseMode::Inline,
        ),
        v(
            "v14_rot_external",
            "v1.4 ReplaceRot: the inputs of v14_rot_inline against base_v14.safetensors",
            BaseMode::External,
        ),
        Vector {
            name: "v14_rot_f64",
            description: "v1.4 ReplaceRot at width 8: an F64 tensor of weights with no base \
                          (dense, sparse, zero chunks)",
            chunk_elems: 1024,
            target: Target::Single("target.safetensors", v14_f64_set(), None),
            base: None,
            base_file: BASE_FILE_V14,
            max_minor: 4,
            expect_minor: 4,
            plane_coder: PlaneCoder::Rans,
            craft: None,
            wide_min_plane: WIDE_MIN_PLANE,
        },
    ]
}

/// v1.5 sliced bases (spec §6.3.4), the shapes of an RNN exported twice
/// (the real pair behind it: `akiki.st` against `akiki.onnx` in the shared
/// corpus). Base (ONNX-style names): `onnx.w` `[1, 12, 8]`, `onnx.b`
/// `[1, 96]`, `onnx.h` `[16, 1]`, all F32 weights. Target:
/// - `gru.w` `[12, 8]`: `onnx.w`'s rows with its first two gate blocks of 4
///   rows swapped, and one row retrained (no base row equals it: predicted
///   by zero);
/// - `gru.b` `[48]`: the first half of `onnx.b` as 3 rows of 16, the first
///   two swapped (a sliced base of another rank, base rows out of order);
/// - `head.w` `[1, 16]`: `onnx.h`'s bytes (the same elements, reshaped).
fn v15_set() -> (Vec<TensorData>, Vec<TensorData>) {
    let mut rng = Rng(0x0015_0015);
    let words = |rng: &mut Rng, n: usize| -> Vec<u8> {
        let mut t = vec![0u8; n * 4];
        for i in 0..n {
            put(&mut t, i, 4, weight_bits(rng, 4));
        }
        t
    };
    let (w, b, h) = (
        words(&mut rng, 96),
        words(&mut rng, 96),
        words(&mut rng, 16),
    );
    let row = |x: &[u8], r: usize, len: usize| x[r * len * 4..(r + 1) * len * 4].to_vec();
    let mut gw: Vec<u8> = [4, 5, 6, 7, 0, 1, 2, 3, 8, 9, 10, 11]
        .iter()
        .flat_map(|&r| row(&w, r, 8))
        .collect();
    for i in 0..8 {
        put(&mut gw, 9 * 8 + i, 4, weight_bits(&mut rng, 4));
    }
    let gb: Vec<u8> = [1, 0, 2].iter().flat_map(|&r| row(&b, r, 16)).collect();
    (
        vec![
            td("gru.w", Dtype::F32, &[12, 8], gw),
            td("gru.b", Dtype::F32, &[48], gb),
            td("head.w", Dtype::F32, &[1, 16], h.clone()),
        ],
        vec![
            td("onnx.w", Dtype::F32, &[1, 12, 8], w),
            td("onnx.b", Dtype::F32, &[1, 96], b),
            td("onnx.h", Dtype::F32, &[16, 1], h),
        ],
    )
}

/// v1.5: sliced bases, inline and external.
fn v15_vectors() -> Vec<Vector> {
    let (t, b) = v15_set();
    let v = |name, description, mode| Vector {
        name,
        description,
        chunk_elems: 32,
        target: Target::Single("target.safetensors", t.clone(), None),
        base: Some((b.clone(), mode)),
        base_file: BASE_FILE_V15,
        max_minor: 5,
        expect_minor: 5,
        plane_coder: PlaneCoder::Rans,
        craft: None,
        wide_min_plane: WIDE_MIN_PLANE,
    };
    vec![
        v(
            "v15_slices_inline",
            "v1.5 sliced bases (spec §6.3.4): an RNN's weight with gate blocks reordered \
             and one row retrained, a bias cut from a fused one of another rank with its \
             gates swapped, and a [1, 16] tensor stored as [16, 1]; bases inline",
            BaseMode::Inline,
        ),
        v(
            "v15_slices_external",
            "v1.5 sliced bases: the inputs of v15_slices_inline against base_v15.safetensors \
             (ExternalSlices: the base tensor's digest, shape and row length)",
            BaseMode::External,
        ),
    ]
}

fn vectors() -> Vec<Vector> {
    let (dt, db) = delta_set();
    let half = dt.len() / 2;
    let shard1: Vec<TensorData> = dt[..half].to_vec();
    let shard2: Vec<TensorData> = dt[half..].to_vec();
    let meta = Some(vec![("format", "pt")]);
    // 1, 2, 3 and 4-byte LEB128 gaps inside one 2^22-element chunk.
    let mut gaps = vec![0u8; (1 << 22) + 5696];
    for (p, v) in [(3usize, 9u8), (200, 1), (20_000, 0x80), (4_000_000, 0xff)] {
        gaps[p] = v;
    }
    gaps[(1 << 22) + 100] = 42;
    vec![
        Vector {
            name: "minimal",
            description:
                "smallest useful archive: one F16 [2,2] tensor, no base, 2-element chunks \
                          (one sparse chunk, one zero chunk); spec/FORMAT.md appendix A dumps it",
            chunk_elems: 2,
            target: Target::Single(
                "minimal.safetensors",
                vec![td(
                    "w",
                    Dtype::F16,
                    &[2, 2],
                    vec![0x00, 0x3c, 0, 0, 0, 0, 0, 0],
                )],
                None,
            ),
            base: None,
            ..V10
        },
        Vector {
            name: "standalone",
            description: "no base: all 15 dtypes (zero, sparse, dense-zstd and dense-raw chunks, \
                          last chunk short), empty, 0-d and odd-shaped tensors",
            chunk_elems: 128,
            target: Target::Single("standalone.safetensors", standalone_set(), None),
            base: None,
            ..V10
        },
        Vector {
            name: "delta_inline",
            description: "inline compressed base: every dtype under xor/add/replace deltas with \
                          zero, sparse and dense chunks; missing, extra, dtype- and shape-changed \
                          tensors; empty and 0-d tensors; __metadata__ in the header",
            chunk_elems: 128,
            target: Target::Single("target.safetensors", dt.clone(), meta.clone()),
            base: Some((db.clone(), BaseMode::Inline)),
            ..V10
        },
        Vector {
            name: "delta_inline_plain",
            description:
                "as delta_inline, with the inline base stored plain (aligned, uncompressed)",
            chunk_elems: 128,
            target: Target::Single("target.safetensors", dt.clone(), meta.clone()),
            base: Some((db.clone(), BaseMode::InlinePlain)),
            ..V10
        },
        Vector {
            name: "delta_external",
            description: "as delta_inline, against the external base base.safetensors",
            chunk_elems: 128,
            target: Target::Single("target.safetensors", dt, meta),
            base: Some((db.clone(), BaseMode::External)),
            ..V10
        },
        Vector {
            name: "sharded_external",
            description: "sharded target (index json + 2 shards) against the external base \
                          base.safetensors",
            chunk_elems: 128,
            target: Target::Sharded(
                "model.safetensors.index.json",
                vec![
                    ("model-00001-of-00002.safetensors", shard1),
                    ("model-00002-of-00002.safetensors", shard2),
                ],
            ),
            base: Some((db, BaseMode::External)),
            ..V10
        },
        Vector {
            name: "large_gaps",
            description: "no base, 2^22-element chunks: sparse positions with 1-, 2-, 3- and \
                          4-byte LEB128 gaps",
            chunk_elems: 1 << 22,
            target: Target::Single(
                "large_gaps.safetensors",
                vec![td("gaps.u8", Dtype::U8, &[gaps.len() as u64], gaps)],
                None,
            ),
            base: None,
            ..V10
        },
    ]
    .into_iter()
    .chain(v11_vectors())
    .chain(rans_vectors())
    .chain(v12_vectors())
    .chain(v13_vectors())
    .chain(v14_vectors())
    .chain(v15_vectors())
    .chain(v16_vectors())
    .chain(v17_vectors())
    .collect()
}

/// v1.6: 32-state rANS planes (spec §5.6.4). The inputs of `v12_rans_base`
/// (BF16 weights with small and large updates in dense and sparse chunks,
/// an F32 target over its BF16 cast) written with every rANS plane given 32
/// states (`with_wide_min_plane(0)`), so that small vectors hold `Rans32`
/// and `RansBase32` planes of sizes around and below the 32-symbol block:
/// target chunks dense and sparse, and inline base chunks.
fn v16_vectors() -> Vec<Vector> {
    let (rt, rb) = v12_rans_base_set(4096);
    let v = |name, description, mode| Vector {
        name,
        description,
        chunk_elems: 4096,
        target: Target::Single("trained.safetensors", rt.clone(), None),
        base: Some((rb.clone(), mode)),
        base_file: BASE_FILE_V12_RANS_BASE,
        max_minor: 6,
        expect_minor: 6,
        plane_coder: PlaneCoder::Rans,
        craft: None,
        wide_min_plane: 0,
    };
    let (pt, pb) = rans_set(512);
    vec![
        Vector {
            name: "v16_rans32_planes",
            description: "v1.6: the inputs of v11_rans (512-element chunks, inline base) with \
                          every rANS plane coded with 32 states: Rans32 planes with context \
                          buckets over a Rans32 and over a Raw plane, without (plane 0; a \
                          constant context), constant Rans32 planes, sparse chunks, inline \
                          base chunks; no base-context planes, so every plane decodes alone",
            chunk_elems: 512,
            target: Target::Single("rans.safetensors", pt, None),
            base: Some((pb, BaseMode::Inline)),
            base_file: BASE_FILE_V11,
            max_minor: 6,
            expect_minor: 6,
            plane_coder: PlaneCoder::Rans,
            craft: None,
            wide_min_plane: 0,
        },
        v(
            "v16_rans32_inline",
            "v1.6 32-state rANS planes (spec §5.6.4): the inputs of v12_rans_base with \
             every rANS plane coded with 32 states: Rans32 planes with and without \
             context buckets and RansBase32 planes, in dense and sparse target chunks \
             (1,366 values: not a multiple of 32) and in the inline base's chunks",
            BaseMode::Inline,
        ),
        v(
            "v16_rans32_external",
            "v1.6: the inputs of v16_rans32_inline against base_v12_rans_base.safetensors \
             (RansBase32 planes over the base and over its widened BF16 cast)",
            BaseMode::External,
        ),
    ]
}

/// v1.7: chunk digests (spec §4.6.3). The inputs of `v12_rans_base` (BF16
/// tensors of four 4096-element chunks, Zero, sparse and dense; an F32
/// target of two chunks over its BF16 cast) plus a baseless BF16 tensor of
/// two and a half chunks (a short last chunk) and an F32 one of a single
/// chunk, which records no chunk digests (`Chunked`, beside
/// `ChunkedDigests` payloads in the same index).
fn v17_vectors() -> Vec<Vector> {
    let (mut rt, rb) = v12_rans_base_set(4096);
    let mut rng = Rng(0x17c0_ded1_6e57_2026);
    let emb: Vec<u8> = (0..10_240)
        .flat_map(|_| to_bf16(trained(&mut rng, 2e-3).0).to_le_bytes())
        .collect();
    rt.push(td("emb.w", Dtype::BF16, &[160, 64], emb));
    let ln: Vec<u8> = (0..1000)
        .flat_map(|_| trained(&mut rng, 2e-3).1.to_le_bytes())
        .collect();
    rt.push(td("ln.b", Dtype::F32, &[1000], ln));
    let v = |name, description, mode| Vector {
        name,
        description,
        chunk_elems: 4096,
        target: Target::Single("digests.safetensors", rt.clone(), None),
        base: Some((rb.clone(), mode)),
        base_file: BASE_FILE_V12_RANS_BASE,
        max_minor: 7,
        expect_minor: 7,
        plane_coder: PlaneCoder::Rans,
        craft: None,
        wide_min_plane: WIDE_MIN_PLANE,
    };
    vec![
        v(
            "v17_chunk_digests_inline",
            "v1.7 chunk digests (spec §4.6.3): the inputs of v12_rans_base (Zero, sparse and \
             dense chunks, a widened base), inline base, plus a baseless tensor of 2.5 chunks \
             and a single-chunk one without chunk digests: every target of several chunks \
             has a ChunkedDigests payload",
            BaseMode::Inline,
        ),
        v(
            "v17_chunk_digests_external",
            "v1.7: the inputs of v17_chunk_digests_inline against \
             base_v12_rans_base.safetensors",
            BaseMode::External,
        ),
    ]
}

fn mode_name(m: Option<BaseMode>) -> &'static str {
    match m {
        None => "none",
        Some(BaseMode::Inline) => "inline",
        Some(BaseMode::InlinePlain) => "inline_plain",
        Some(BaseMode::External) => "external",
    }
}

/// Writes `bytes` to `path`, never replacing a file (an identical existing
/// file is accepted: the shared base is written by the first vector needing it).
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), String> {
    match std::fs::read(path) {
        Ok(old) if old == bytes => Ok(()),
        Ok(_) => Err(format!(
            "{} exists with other contents: vectors are never regenerated",
            path.display()
        )),
        Err(_) => std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display())),
    }
}

fn make(v: &Vector, dir: &Path) -> Result<Value, String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut tensors = BTreeMap::new();
    let mut files = BTreeMap::new();
    let target_path = match &v.target {
        Target::Single(name, ts, meta) => {
            let bytes = safetensors_bytes(ts, meta.as_deref());
            let p = tmp.path().join(name);
            std::fs::write(&p, &bytes).map_err(|e| e.to_string())?;
            files.insert(name.to_string(), sha256_hex(&bytes));
            for (n, _, _, data) in ts {
                tensors.insert(n.clone(), sha256_hex(data));
            }
            p
        }
        Target::Sharded(index_name, shards) => {
            let root = tmp.path().join("target");
            std::fs::create_dir(&root).map_err(|e| e.to_string())?;
            let mut weight_map = Map::new();
            let mut total = 0usize;
            for (shard, ts) in shards {
                let bytes = safetensors_bytes(ts, Some(&[("format", "pt")]));
                std::fs::write(root.join(shard), &bytes).map_err(|e| e.to_string())?;
                files.insert(shard.to_string(), sha256_hex(&bytes));
                for (n, _, _, data) in ts {
                    tensors.insert(n.clone(), sha256_hex(data));
                    weight_map.insert(n.clone(), Value::from(*shard));
                    total += data.len();
                }
            }
            let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
            let mut text = serde_json::to_vec_pretty(&index).map_err(|e| e.to_string())?;
            text.push(b'\n');
            std::fs::write(root.join(index_name), &text).map_err(|e| e.to_string())?;
            files.insert(index_name.to_string(), sha256_hex(&text));
            root
        }
    };
    let (base_ckpt, mode, base_name) = match &v.base {
        None => (None, None, None),
        Some((ts, mode)) => {
            let bytes = safetensors_bytes(ts, None);
            let p = if *mode == BaseMode::External {
                dir.join(v.base_file)
            } else {
                tmp.path().join(v.base_file)
            };
            write_new(&p, &bytes)?;
            let name = (*mode == BaseMode::External).then_some(v.base_file);
            let c = Checkpoint::open(&p).map_err(|e| e.to_string())?;
            (Some(c), Some(*mode), name)
        }
    };
    let target = Checkpoint::open(&target_path).map_err(|e| e.to_string())?;
    let archive = dir.join(format!("{}.tpde", v.name));
    // A crafted vector is packed beside the inputs, edited, then stored.
    let packed = match v.craft {
        Some(_) => tmp.path().join("packed.tpde"),
        None => archive.clone(),
    };
    let opts = PackOptions {
        // Refuses to overwrite: `with_overwrite` is left off.
        write: WriteOptions::default()
            .with_chunk_elems(v.chunk_elems)
            .with_level(3)
            .with_max_minor(v.max_minor)
            .with_plane_coder(v.plane_coder)
            .with_wide_min_plane(v.wide_min_plane),
        base_mode: mode.unwrap_or_default(),
    };
    pack(&target, base_ckpt.as_ref(), &packed, &opts, &mut |_| {})
        .map_err(|e| format!("{}: {e}", v.name))?;
    let mut archive_bytes = std::fs::read(&packed).map_err(|e| e.to_string())?;
    if let Some(craft) = v.craft {
        archive_bytes = craft(archive_bytes).map_err(|e| format!("{}: {e}", v.name))?;
        write_new(&archive, &archive_bytes)?;
    }
    let minor = u16::from_le_bytes([archive_bytes[10], archive_bytes[11]]);
    if minor != v.expect_minor {
        return Err(format!(
            "{}: the writer recorded minor {minor}, the vector expects {}",
            v.name, v.expect_minor
        ));
    }
    let archive_sha = sha256_hex(&archive_bytes);
    Ok(json!({
        "format_version": format!("1.{}", v.expect_minor),
        "max_minor": v.max_minor,
        "archive": format!("{}.tpde", v.name),
        "archive_sha256": archive_sha,
        "description": v.description,
        "chunk_elems": v.chunk_elems,
        "base_mode": mode_name(mode),
        "base_file": base_name,
        "tensors": tensors,
        "files": files,
    }))
}

/// `make_vectors [--out DIR] [NAME ...]`: into DIR instead of
/// `tests/vectors/v1/` (to preview new vectors), only the vectors named.
fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut dir: PathBuf = vectors_v1();
    let mut only = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => dir = args.next().ok_or("--out needs a directory")?.into(),
            _ => only.push(a),
        }
    }
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let manifest_path = dir.join("manifest.json");
    let mut manifest: Map<String, Value> = match std::fs::read(&manifest_path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("manifest.json: {e}"))?,
        Err(_) => Map::new(),
    };
    manifest.insert(
        "format".into(),
        Value::from("tpde 1 (each vector's format_version; 1.0 where absent)"),
    );
    manifest.entry("note").or_insert_with(|| {
        Value::from(
            "Golden vectors: never regenerated, only added to (cargo run -p tpde-tests \
                 --example make_vectors). Digests are of the inputs given to pack.",
        )
    });
    let mut entries = match manifest.remove("vectors") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut added = 0;
    for v in vectors() {
        if !only.is_empty() && !only.iter().any(|n| n == v.name) {
            continue;
        }
        let archive = dir.join(format!("{}.tpde", v.name));
        match (archive.exists(), entries.contains_key(v.name)) {
            (true, true) => {
                println!("{}: exists, left alone", v.name);
                continue;
            }
            (true, false) => {
                return Err(format!(
                    "{} exists but manifest.json has no entry for it: restore manifest.json \
                     from git rather than regenerate",
                    archive.display()
                ))
            }
            (false, true) => {
                return Err(format!(
                    "manifest.json lists {} but {} is missing: restore it from git rather \
                     than regenerate",
                    v.name,
                    archive.display()
                ))
            }
            (false, false) => {}
        }
        let entry = make(&v, &dir)?;
        println!("{}: written", v.name);
        entries.insert(v.name.to_owned(), entry);
        added += 1;
    }
    manifest.insert("vectors".into(), Value::Object(entries));
    if added > 0 {
        let mut text = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        text.push(b'\n');
        std::fs::write(&manifest_path, text).map_err(|e| e.to_string())?;
    }
    println!("{added} vector(s) added");
    Ok(())
}
