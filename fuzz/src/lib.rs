//! Bodies of the tpde fuzz targets (issue 4), kept apart from libFuzzer so
//! that `tests/tests/fuzz_regressions.rs` replays the very same code on
//! stable (it includes this file by path).
//!
//! - [`open_decode`]: raw bytes → open, validate, summarize, check CRCs and
//!   decode every tensor and file under [`ReadLimits::strict`]. The property:
//!   no panic, no unbounded allocation, no hang, and anything handed back as
//!   good has its recorded digest.
//! - [`roundtrip`]: structured input (tensors, dtypes, shapes, bases,
//!   options, built with `arbitrary`) → safetensors → pack → read →
//!   bit-exact equality, and the same archive bytes whatever the thread count.
//! - [`equivalence`]: raw bytes → the in-memory reader and the mmap reader,
//!   serial (one-thread pool) and parallel decode, whole-tensor and
//!   chunk-by-chunk decode: identical results or identical errors.
//! - [`rans_plane`]: the rANS byte-plane decoder on raw bytes, and
//!   encode → decode round trips of arbitrary planes.
//! - [`gpu_reference`]: raw bytes → open under [`ReadLimits::strict`] →
//!   tpde-gpu's host-side pipeline (plan, batches, staging, descriptors)
//!   through its CPU mirror (`tpde_gpu::reference::reconstruct`) → the same
//!   bytes as the format crate's chunk decoder wherever both decode.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use sha2::{Digest as _, Sha256};
use tpde_format::codec::entropy::{self, Lanes};
use tpde_format::codec::stream::PlaneCoder;
use tpde_format::format::{BaseRef, Payload, TensorRecord};
use tpde_format::pack::{pack, BaseMode, PackOptions};
use tpde_format::safetensors::{make_header, Checkpoint};
use tpde_format::unpack::{stream_file, stream_file_with, unpack, verify, Digests, UnpackOptions};
use tpde_format::{Archive, BaseProvider, Dtype, NoBase, ReadLimits, WriteOptions};

/// In-memory base tensors by name: dtype, shape, bytes.
pub type MemBase = HashMap<String, (Dtype, Vec<u64>, Vec<u8>)>;

/// Largest external base tensor [`zero_base`] makes up.
const ZERO_BASE_MAX: u64 = 1 << 20;

/// All-zero external base tensors shaped as the archive's own index asks
/// (plain, widened, row-mapped and sliced bases, and a quantized base's
/// codes and scales; up to 1 MiB each), so the external-base paths are
/// exercised: a seed packed against an all-zero base passes the digest
/// check, and mutants of it reach the decoder.
pub fn zero_base<D: AsRef<[u8]> + Sync>(a: &Archive<D>) -> MemBase {
    let mut base = MemBase::new();
    for rec in &a.index().tensors {
        // The name, dtype and shape each kind of external base must have.
        let wanted: Vec<(&String, Dtype, &Vec<u64>)> = match &rec.base {
            BaseRef::External { name, .. } => vec![(name, rec.dtype, &rec.shape)],
            BaseRef::ExternalWidened { name, dtype, .. } => vec![(name, *dtype, &rec.shape)],
            BaseRef::ExternalRows { name, shape, .. }
            | BaseRef::ExternalSlices { name, shape, .. } => vec![(name, rec.dtype, shape)],
            BaseRef::ExternalDequant {
                q_name,
                q_dtype,
                scale_name,
                scale_shape,
                ..
            } => vec![
                (q_name, *q_dtype, &rec.shape),
                (scale_name, Dtype::F32, scale_shape),
            ],
            _ => continue,
        };
        for (name, dtype, shape) in wanted {
            let len = shape
                .iter()
                .try_fold(dtype.width() as u64, |a, &d| a.checked_mul(d));
            if let Some(len) = len.filter(|&l| l <= ZERO_BASE_MAX) {
                base.entry(name.clone())
                    .or_insert_with(|| (dtype, shape.clone(), vec![0; len as usize]));
            }
        }
    }
    base
}

/// Target 1: open + validate + decode everything under strict limits; then
/// the same bytes with the header CRC recomputed. The CRC covers the header
/// and the index, so nearly every mutation of an index fails it and never
/// reaches the index's decoding and validation (found in session 5: the
/// sliced-base checks were reached by 5 of 3,552 corpus inputs); with the
/// CRC fixed, mutations of an uncompressed index do.
pub fn open_decode(data: &[u8]) {
    with_crc_variants(data, open_decode_once);
}

/// Runs `once` on `data` and on `data` with its header CRC recomputed
/// ([`with_header_crc_fixed`]), and again on each input `once` hands back:
/// an opened archive with its chunk and plain-payload CRCs recomputed
/// ([`with_payload_crcs_fixed`]). Without these, a mutated index stops at
/// the header CRC and a mutated chunk at its own, and the validation and
/// decoders behind them see only the seeds' bytes (found for the index in
/// session 5, for payloads by the `gpu_reference` target in session 6).
fn with_crc_variants(data: &[u8], once: fn(&[u8]) -> Option<Vec<u8>>) {
    let fixed = with_header_crc_fixed(data);
    for d in std::iter::once(data).chain(fixed.as_deref()) {
        if let Some(refixed) = once(d) {
            once(&refixed);
        }
    }
}

/// `data` with its header CRC (bytes 60..64) recomputed over the header and
/// the index range the header names (clipped to the data), as a writer
/// would; `None` when the data has no header or the CRC is already right.
pub fn with_header_crc_fixed(data: &[u8]) -> Option<Vec<u8>> {
    let header = data.get(..64)?;
    let at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[o..o + 8]);
        usize::try_from(u64::from_le_bytes(b)).unwrap_or(usize::MAX)
    };
    let start = at(24).min(data.len());
    let end = start.saturating_add(at(32)).min(data.len());
    let mut h = crc32fast::Hasher::new();
    h.update(&header[..60]);
    h.update(&data[start..end]);
    let crc = h.finalize().to_le_bytes();
    if header[60..64] == crc {
        return None;
    }
    let mut fixed = data.to_vec();
    fixed[60..64].copy_from_slice(&crc);
    Some(fixed)
}

/// Returns the archive with its payload CRCs fixed when it opened and
/// some were wrong.
fn open_decode_once(data: &[u8]) -> Option<Vec<u8>> {
    let a = Archive::from_bytes(data, ReadLimits::strict()).ok()?;
    let base = zero_base(&a);
    let _ = tpde_format::inspect::summarize_archive(&a);
    let _ = a.check_crcs();
    for rec in &a.index().tensors {
        if let Ok(bytes) = a.decode_tensor(&rec.name, &base) {
            assert_eq!(Some(bytes.len() as u64), rec.byte_len(), "{}", rec.name);
            assert_proven(rec, &bytes);
        }
    }
    for (fi, rec) in a.index().files.iter().enumerate() {
        let mut out = Vec::new();
        let res = stream_file(&a, fi, &base, &mut |b| {
            out.extend_from_slice(b);
            Ok(())
        });
        if res.is_ok() {
            // The length and header are the index's. The file is proven by
            // its digest or, under unpack's policy (spec §10.2), through
            // its parts: then every tensor matches its digests, and only
            // the file digest, which verify checks, may still differ.
            assert_eq!(out.len() as u64, rec.size, "file {}", rec.name);
            let mut at = 8 + rec.header.len();
            assert_eq!(out[..8], (rec.header.len() as u64).to_le_bytes());
            assert_eq!(out[8..at], rec.header[..], "file {}", rec.name);
            let digest: [u8; 32] = Sha256::digest(&out).into();
            if digest != rec.sha256 {
                for &t in &rec.tensors {
                    let tr = &a.index().tensors[t as usize];
                    let n = tr.byte_len().unwrap_or(0) as usize;
                    assert_proven(tr, &out[at..at + n]);
                    at += n;
                }
                let all = stream_file_with(&a, fi, &base, Digests::All, &mut |_| Ok(()));
                assert!(
                    all.is_err(),
                    "file {}: another digest passed verify",
                    rec.name
                );
            }
        }
    }
    with_payload_crcs_fixed(&a, data)
}

/// `bytes`, returned as tensor `rec`, match its chunk digests (format 1.7)
/// where it records them, else its own digest (spec §9 step 3).
fn assert_proven(rec: &TensorRecord, bytes: &[u8]) {
    if let Payload::Chunked {
        chunks,
        chunk_sha256: Some(digests),
        ..
    } = &rec.payload
    {
        let w = rec.dtype.width() as u64;
        for (i, (c, d)) in chunks.iter().zip(digests).enumerate() {
            let range = (c.elem_start * w) as usize..((c.elem_start + c.elem_count) * w) as usize;
            let digest: [u8; 32] = Sha256::digest(&bytes[range]).into();
            assert_eq!(
                &digest, d,
                "{} chunk {i} returned with another digest",
                rec.name
            );
        }
        return;
    }
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    assert_eq!(
        digest, rec.sha256,
        "{} returned with another digest",
        rec.name
    );
}

/// A result reduced to something comparable: the bytes, or the error's
/// full debug form (variant, location, reason, values).
type Outcome = Result<Vec<u8>, String>;

fn outcome(r: tpde_format::Result<Vec<u8>>) -> Outcome {
    r.map_err(|e| format!("{e:?}"))
}

fn serial_pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("one-thread pool")
    })
}

/// A scratch file for the mmap reader, one per thread (the replay test runs
/// inputs on several threads of one process).
fn scratch_path() -> PathBuf {
    let id = format!("{:?}", std::thread::current().id());
    let id: String = id.chars().filter(char::is_ascii_digit).collect();
    std::env::temp_dir().join(format!("tpde-fuzz-{}-{id}.tpde", std::process::id()))
}

/// Target 3: readers and schedules that must agree.
pub fn equivalence(data: &[u8]) {
    // As for `open_decode`: with the CRCs recomputed, mutated indexes and
    // payloads reach both readers' validation and decoders.
    with_crc_variants(data, equivalence_once);
}

/// Returns the archive with its payload CRCs fixed when it opened and
/// some were wrong.
fn equivalence_once(data: &[u8]) -> Option<Vec<u8>> {
    let path = scratch_path();
    std::fs::write(&path, data).expect("write scratch file");
    let mem = Archive::from_bytes(data, ReadLimits::strict());
    let map = Archive::open_with_limits(&path, ReadLimits::strict());
    let (mem, map) = match (mem, map) {
        (Ok(m), Ok(p)) => (m, p),
        (Err(a), Err(b)) => {
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "open errors differ");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        (a, b) => panic!(
            "in-memory open {:?} but mmap open {:?}",
            a.map(|_| ()),
            b.map(|_| ())
        ),
    };
    assert_eq!(mem.index(), map.index());
    assert_eq!(mem.header(), map.header());
    let base = zero_base(&mem);
    let serial = serial_pool();
    assert_eq!(
        format!("{:?}", mem.check_crcs()),
        format!("{:?}", serial.install(|| mem.check_crcs())),
        "check_crcs: parallel and serial differ"
    );
    for (t, rec) in mem.index().tensors.iter().enumerate() {
        let par = outcome(mem.decode_tensor(&rec.name, &base));
        let ser = outcome(serial.install(|| mem.decode_tensor(&rec.name, &base)));
        let mapped = outcome(map.decode_tensor(&rec.name, &base));
        assert_eq!(par, ser, "{}: parallel and serial decode differ", rec.name);
        assert_eq!(
            par, mapped,
            "{}: in-memory and mmap decode differ",
            rec.name
        );
        // Random access: each chunk decoded alone is the matching slice of
        // the whole tensor (digests are per tensor, so only compare when
        // the whole decoded as good).
        if let (Ok(whole), Ok(view)) = (&par, mem.resolve_base(t, &base)) {
            let mut at = 0usize;
            for i in 0..mem.chunk_count(t) {
                let len = mem.chunks_byte_len(t, i..i + 1) as usize;
                let mut out = vec![0u8; len];
                mem.decode_chunks_into(t, i..i + 1, view, &mut out)
                    .unwrap_or_else(|e| panic!("{} chunk {i} alone: {e}", rec.name));
                assert!(out == whole[at..at + len], "{} chunk {i} differs", rec.name);
                at += len;
            }
            assert_eq!(at, whole.len());
        }
    }
    drop(map);
    let _ = std::fs::remove_file(&path);
    with_payload_crcs_fixed(&mem, data)
}

// ---- rANS planes -------------------------------------------------------------

/// Target 4: the rANS byte-plane coder (spec §5.6) on its own, where the
/// fuzzer reaches its tables and state machine without an archive around
/// them. Input: a 16-bit plane length, a flags byte (bit 0: with a context
/// plane; bit 1: 32 interleaved states, format 1.6), then the bytes.
/// Properties: (1) decoding the bytes as a coded plane never panics; (2)
/// with 32 states, the AVX2 decoder (where the CPU has it) and the portable
/// loop agree on the result, the error and the bytes, for any input; (3) the
/// bytes taken as a plane encode and decode back exactly.
pub fn rans_plane(data: &[u8]) {
    let [a, b, flags, rest @ ..] = data else {
        return;
    };
    let n = usize::from(u16::from_le_bytes([*a, *b])) % 8192;
    let context: Vec<u8> = (0..n)
        .map(|i| (i as u8).wrapping_mul(37) ^ flags.rotate_left(3))
        .collect();
    let ctx = (flags & 1 == 1).then_some(&context[..]);
    let lanes = if flags & 2 == 2 {
        Lanes::ThirtyTwo
    } else {
        Lanes::Four
    };
    let encode = |plane: &[u8], ctx: Option<&[u8]>, out: &mut Vec<u8>| {
        let tuning = entropy::default_tuning(plane.len());
        entropy::encode_plane_with(plane, ctx, tuning, lanes, out)
    };
    let mut out = vec![0u8; n];
    let decoded = entropy::decode_plane_lanes(rest, ctx, lanes, &mut out);
    if lanes == Lanes::ThirtyTwo {
        let mut portable = vec![0u8; n];
        let p = entropy::decode_plane_portable(rest, ctx, lanes, &mut portable);
        assert_eq!(decoded, p, "AVX2 and portable 32-state decoders disagree");
        assert!(
            decoded.is_err() || out == portable,
            "32-state decoders differ in bytes"
        );
    }
    if decoded.is_ok() {
        // Whatever decodes must re-encode to something that decodes the same.
        let mut again = Vec::new();
        encode(&out, ctx, &mut again);
        let mut back = vec![0u8; n];
        entropy::decode_plane_lanes(&again, ctx, lanes, &mut back)
            .expect("re-encoded plane decodes");
        assert!(back == out, "re-encoded plane differs");
    }
    let plane = &rest[..rest.len().min(n)];
    let ctx = ctx.map(|c| &c[..plane.len()]);
    let mut coded = Vec::new();
    encode(plane, ctx, &mut coded);
    let mut back = vec![0u8; plane.len()];
    entropy::decode_plane_lanes(&coded, ctx, lanes, &mut back).expect("an encoded plane decodes");
    assert!(back == plane, "rANS round trip differs");
}

// ---- round trip -------------------------------------------------------------

/// Structured input of the round-trip target.
#[derive(Debug, Arbitrary)]
pub struct RoundtripInput {
    /// Elements per chunk: `1 + chunk_elems % 3000`.
    pub chunk_elems: u16,
    /// zstd level: `1 + level % 3`; bit 7 set gives every rANS plane 32
    /// states (`with_wide_min_plane(0)`, format 1.6) instead of the
    /// default threshold, which the fuzzer's small chunks never reach.
    pub level: u8,
    /// Base mode: inline, inline plain, external, or no base at all.
    pub mode: u8,
    /// Write format v1.0 only (no per-plane streams or widened bases).
    pub v10: bool,
    /// Code byte planes with zstd rather than the default rANS coder.
    pub zstd_planes: bool,
    /// The target's tensors (at most 8 are used).
    pub tensors: Vec<TensorSpec>,
}

/// One target tensor and how its base relates to it.
#[derive(Debug, Arbitrary)]
pub struct TensorSpec {
    /// Name (empty, repeated or reserved names are replaced by `t<i>`).
    pub name: String,
    /// Dtype: `Dtype::ALL[dtype % 15]`.
    pub dtype: u8,
    /// Shape: up to 3 dimensions of `d % 24` (0 gives an empty tensor, no
    /// dimension a 0-d scalar).
    pub shape: Vec<u8>,
    /// Byte pattern the target's bytes are made from.
    pub fill: Vec<u8>,
    /// The base tensor of the same name.
    pub base: BaseSpec,
}

/// How the base of one tensor differs from the target.
#[derive(Debug, Arbitrary)]
pub enum BaseSpec {
    /// No base tensor of that name (stored standalone).
    Missing,
    /// Identical (zero chunks).
    Same,
    /// A few elements differ (sparse chunks).
    Sparse {
        /// Element positions, taken modulo the element count.
        positions: Vec<u16>,
        /// Xor applied to the first byte of each.
        xor: u8,
    },
    /// Every element may differ (dense chunks).
    Dense {
        /// Byte pattern of the base.
        fill: Vec<u8>,
    },
    /// Same name, another dtype (not a match: stored standalone).
    OtherDtype,
    /// (v1.1) Same name, a narrower float dtype (bf16/f16 under f32/f64,
    /// f32 under f64): a widened base. Other dtypes get no base.
    Narrower {
        /// Byte pattern of the base.
        fill: Vec<u8>,
        /// f16 rather than bf16 (under f64: f32 when set).
        f16: bool,
    },
    /// The same bytes under another name (a content-matched rename).
    Renamed,
    /// (v1.2) Another row count (a row-mapped base, spec §6.3): the base
    /// keeps the target rows not dropped, in order, with new rows inserted
    /// between them; rows are slices along the first dimension.
    Rows {
        /// Target row `r` is left out of the base when `drop[r % len]`.
        drop: Vec<bool>,
        /// A new base row follows target row `r` when `insert[r % len]` is odd.
        insert: Vec<u8>,
        /// Byte pattern of the inserted rows.
        fill: Vec<u8>,
        /// Under another name (matched by row content) instead of the target's.
        renamed: bool,
    },
    /// (v1.2) For an F32 target: codes `NAME.q` (I8, or U8 when `unsigned`)
    /// and F32 scales `NAME.scale` (a quantized base, spec §6.4); other
    /// dtypes get no base.
    Quantized {
        /// Byte pattern of the codes.
        codes: Vec<u8>,
        /// Byte pattern of the scales (any bits: NaNs, infinities, subnormals).
        scales: Vec<u8>,
        /// U8 codes instead of I8.
        unsigned: bool,
        /// 0: one scale; 1: per row (`[rows, 1]`); 2: per column (`[cols]`).
        axis: u8,
    },
}

/// Bytes from a pattern: `fill` cycled, varied per cycle so long tensors
/// are not one repeated block.
fn pattern(fill: &[u8], len: usize) -> Vec<u8> {
    if fill.is_empty() {
        return vec![0; len];
    }
    (0..len)
        .map(|i| fill[i % fill.len()].wrapping_add((i / fill.len()) as u8))
        .collect()
}

/// A safetensors file of `tensors` in this order.
fn safetensors_bytes(tensors: &[(String, Dtype, Vec<u64>, Vec<u8>)]) -> Vec<u8> {
    let list: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, _)| (n.as_str(), *d, s.as_slice()))
        .collect();
    let header = make_header(&list);
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    for (_, _, _, b) in tensors {
        out.extend_from_slice(b);
    }
    out
}

/// The target and base checkpoints an input describes.
type Pair = (
    Vec<(String, Dtype, Vec<u64>, Vec<u8>)>,
    Vec<(String, Dtype, Vec<u64>, Vec<u8>)>,
);

fn build(input: &RoundtripInput) -> Pair {
    let mut target = Vec::new();
    let mut base = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, spec) in input.tensors.iter().take(8).enumerate() {
        let mut name: String = spec.name.chars().take(40).collect();
        // safetensors reserves `__metadata__`; empty and repeated names get
        // a unique one instead.
        if name.is_empty() || name.starts_with("__") || seen.contains(&name) {
            name = format!("t{i}");
        }
        if !seen.insert(name.clone()) {
            continue;
        }
        let dtype = Dtype::ALL[spec.dtype as usize % Dtype::ALL.len()];
        let shape: Vec<u64> = spec
            .shape
            .iter()
            .take(3)
            .map(|&d| u64::from(d % 24))
            .collect();
        let n = shape.iter().product::<u64>() as usize;
        let w = dtype.width();
        let bytes = pattern(&spec.fill, n * w);
        let base_bytes = match &spec.base {
            BaseSpec::Missing => None,
            BaseSpec::Same => Some((dtype, bytes.clone())),
            BaseSpec::Sparse { positions, xor } => {
                let mut b = bytes.clone();
                if n > 0 {
                    for &p in positions {
                        b[(p as usize % n) * w] ^= xor | 1;
                    }
                }
                Some((dtype, b))
            }
            BaseSpec::Dense { fill } => Some((dtype, pattern(fill, n * w))),
            BaseSpec::OtherDtype => {
                let other = if w == 1 { Dtype::U16 } else { Dtype::U8 };
                Some((other, pattern(&spec.fill, n * other.width())))
            }
            BaseSpec::Narrower { fill, f16 } => {
                let narrow = match (dtype, f16) {
                    (Dtype::F32, false) | (Dtype::F64, false) => Some(Dtype::BF16),
                    (Dtype::F32, true) => Some(Dtype::F16),
                    (Dtype::F64, true) => Some(Dtype::F32),
                    _ => None,
                };
                narrow.map(|d| (d, pattern(fill, n * d.width())))
            }
            BaseSpec::Rows {
                drop,
                insert,
                fill,
                renamed,
            } if !shape.is_empty() => {
                let rows = shape[0] as usize;
                let row_bytes = (n * w).checked_div(rows).unwrap_or(0);
                let mut b = Vec::new();
                let mut base_rows = 0u64;
                for r in 0..rows {
                    if !drop.get(r % drop.len().max(1)).copied().unwrap_or(false) {
                        b.extend_from_slice(&bytes[r * row_bytes..(r + 1) * row_bytes]);
                        base_rows += 1;
                    }
                    if insert
                        .get(r % insert.len().max(1))
                        .is_some_and(|x| x % 2 == 1)
                    {
                        b.extend(pattern(fill, row_bytes + r).into_iter().skip(r));
                        base_rows += 1;
                    }
                }
                let mut bshape = shape.clone();
                if let Some(d0) = bshape.first_mut() {
                    *d0 = base_rows;
                }
                let bname = if *renamed {
                    format!("{name}.rows")
                } else {
                    name.clone()
                };
                base.push((bname, dtype, bshape, b));
                None
            }
            // A 0-d tensor has no rows.
            BaseSpec::Rows { .. } => None,
            BaseSpec::Quantized {
                codes,
                scales,
                unsigned,
                axis,
            } if dtype == Dtype::F32 => {
                let rest: Vec<u64> = shape.get(1..).unwrap_or_default().to_vec();
                let scale_shape = match (axis % 3, shape.first()) {
                    (1, Some(&rows)) => vec![rows, 1],
                    (2, Some(_)) => rest,
                    _ => vec![1],
                };
                let count: u64 = scale_shape.iter().product();
                let q = if *unsigned { Dtype::U8 } else { Dtype::I8 };
                base.push((format!("{name}.q"), q, shape.clone(), pattern(codes, n)));
                base.push((
                    format!("{name}.scale"),
                    Dtype::F32,
                    scale_shape,
                    pattern(scales, count as usize * 4),
                ));
                None
            }
            BaseSpec::Quantized { .. } => None,
            BaseSpec::Renamed => {
                base.push((
                    format!("{name}.renamed"),
                    dtype,
                    shape.clone(),
                    bytes.clone(),
                ));
                None
            }
        };
        if let Some((d, b)) = base_bytes {
            base.push((name.clone(), d, shape.clone(), b));
        }
        target.push((name, dtype, shape, bytes));
    }
    // Derived base names (`x.renamed`, `x.rows`) may repeat a name: keep the
    // first, since a safetensors file holds each name once.
    let mut names = std::collections::HashSet::new();
    base.retain(|(n, ..)| names.insert(n.clone()));
    (target, base)
}

/// Target 2 on raw fuzzer bytes, decoded as libFuzzer's typed targets do.
pub fn roundtrip_bytes(data: &[u8]) {
    if let Ok(input) = RoundtripInput::arbitrary_take_rest(Unstructured::new(data)) {
        roundtrip(&input);
    }
}

fn pack_to(
    out: &Path,
    target: &Checkpoint,
    base: Option<&Checkpoint>,
    opts: &PackOptions,
) -> Vec<u8> {
    pack(target, base, out, opts, &mut |_| {}).expect("pack a valid checkpoint");
    std::fs::read(out).expect("read the archive back")
}

/// Target 2: pack → read → bit-exact equality, deterministic output.
pub fn roundtrip(input: &RoundtripInput) {
    let (target, base) = build(input);
    let dir = tempfile::tempdir().expect("temp dir");
    let tp = dir.path().join("target.safetensors");
    let bp = dir.path().join("base.safetensors");
    let target_file = safetensors_bytes(&target);
    std::fs::write(&tp, &target_file).expect("write target");
    std::fs::write(&bp, safetensors_bytes(&base)).expect("write base");
    let t = Checkpoint::open(&tp).expect("our own safetensors file opens");
    let b = Checkpoint::open(&bp).expect("our own safetensors file opens");
    let mode = input.mode % 4;
    let base_mode = match mode {
        0 => BaseMode::Inline,
        1 => BaseMode::InlinePlain,
        _ => BaseMode::External,
    };
    let base_ck = (mode != 3).then_some(&b);
    let max_minor = if input.v10 {
        0
    } else {
        tpde_format::format::VERSION_MINOR
    };
    let opts = PackOptions {
        write: WriteOptions::default()
            .with_chunk_elems(1 + u64::from(input.chunk_elems) % 3000)
            .with_level(1 + i32::from(input.level % 3))
            .with_wide_min_plane(if input.level & 0x80 != 0 {
                0
            } else {
                tpde_format::codec::stream::WIDE_MIN_PLANE
            })
            .with_plane_coder(if input.zstd_planes {
                PlaneCoder::Zstd
            } else {
                PlaneCoder::Rans
            })
            .with_max_minor(max_minor),
        base_mode,
    };
    let bytes = pack_to(&dir.path().join("a.tpde"), &t, base_ck, &opts);
    let serial = serial_pool().install(|| pack_to(&dir.path().join("b.tpde"), &t, base_ck, &opts));
    assert!(bytes == serial, "archive bytes depend on the thread count");

    let a = Archive::from_bytes(&bytes[..], ReadLimits::default()).expect("own archive opens");
    // The writer keeps to the minor it was capped at (spec §8.2.1).
    assert!(a.header().minor <= max_minor, "minor over the writer's cap");
    let provider: &dyn BaseProvider = if mode == 2 { &b } else { &NoBase };
    verify(&a, provider, Some(&t), &mut |_| {}).expect("verify against the original");
    for (name, _, _, want) in &target {
        let got = a.decode_tensor(name, provider).expect("decode");
        assert!(&got == want, "{name} differs");
    }
    let out = dir.path().join("out.safetensors");
    unpack(&a, provider, &out, &UnpackOptions::default(), &mut |_| {}).expect("unpack");
    let back = std::fs::read(&out).expect("read unpacked");
    assert!(
        back == target_file,
        "unpacked file differs from the original"
    );
}

// ---- GPU pipeline (CPU mirror) -----------------------------------------------

/// Staging slot sizes the mirror is run with: 0 (the smallest slot the
/// largest job fits: many batches, every batch boundary exercised) up to
/// 1 MiB (small archives in one batch). Capped so a unit's staging stays
/// small; a job larger than the slot gets a slot of its own size, as on
/// the GPU.
const GPU_SLOTS: [usize; 4] = [0, 4096, 64 << 10, 1 << 20];

/// Every combination of the two plan options: sparse positions staged as
/// gap bytes (decoded by the device) or as CPU-decoded `u32`s, and rANS
/// planes entropy-decoded on the CPU (the default), by the device for every
/// chunk, or by the device for 32-state chunks only.
const GPU_PLANS: [tpde_gpu::plan::PlanOptions; 6] = {
    use tpde_gpu::plan::{EntropyOnDevice as E, PlanOptions as P};
    [
        P {
            positions_on_device: true,
            entropy_on_device: E::Never,
        },
        P {
            positions_on_device: false,
            entropy_on_device: E::Never,
        },
        P {
            positions_on_device: true,
            entropy_on_device: E::All,
        },
        P {
            positions_on_device: false,
            entropy_on_device: E::All,
        },
        P {
            positions_on_device: true,
            entropy_on_device: E::Wide,
        },
        P {
            positions_on_device: false,
            entropy_on_device: E::Wide,
        },
    ]
};

/// Target 5: tpde-gpu's host-side code — plan (jobs, windows, batches,
/// descriptors), staging (chunk decode into slots, base contexts, entropy
/// inputs) — run on raw archive bytes through the pipeline's CPU mirror
/// (`tpde_gpu::reference::reconstruct`), which also checks the plan's device
/// accesses (every address inside its buffer, no two jobs of a launch on the
/// same bytes, tiles covering each job exactly). Each input runs as given
/// and with its header CRC recomputed (as [`open_decode`]); each of those
/// that opens runs again with its chunk and plain-payload CRCs recomputed
/// (index re-serialized, stored uncompressed), so that mutated payloads
/// reach the decoders behind the CRCs: staging's stream decoders and the
/// mirrored device checks of gap streams and rANS words.
///
/// Only an archive that `Archive::from_bytes` opens under
/// [`ReadLimits::strict`] reaches the mirror (it takes an opened archive).
/// External bases are all-zero tensors shaped as the index asks
/// ([`zero_base`], plus codes and scales of external quantized bases). The
/// mirror runs twice, with settings taken from the input's CRC-32 (so every
/// mutation may land on another combination):
/// 1. bases from the archive and the host provider (`BaseMode::Host`, as
///    `GpuArchive::load_all_with`; an external base's SHA-256 is checked, so
///    only archives packed over zeros get past it), one of the four
///    [`GPU_PLANS`] and one of the [`GPU_SLOTS`];
/// 2. when the archive names external bases: the same zero bases handed in
///    "on the device" (`BaseMode::DeviceBorrowed` or `DeviceInPlace`, as
///    `load_onto` / `load_all_onto`: lengths checked, no digest), another
///    plan and slot. Base names that are also inline base tensors' names are
///    left out (the device API would take them over the archive's own
///    base, which the CPU reader never does).
///
/// The property:
/// - no panic, no hang, no allocation past the limits;
/// - the mirror never fails with `GpuError::Usage`: on an opened archive,
///   bad data must be a typed `Format` (naming tensor and chunk) or
///   `DeviceBase` error; `Usage` is the plan or staging disagreeing with
///   itself (a device address out of its buffer — a memory fault on the
///   GPU —, two jobs of one launch on the same bytes, tiles not covering a
///   job, a context read of bytes an earlier batch writes);
/// - where the mirror returns every target and the format crate's chunk
///   decoder also decodes target `t` (`resolve_base_checked` without the
///   base digest, then `decode_chunks_into` over all chunks, no tensor
///   digest: the GPU path checks neither), the two byte strings are
///   identical.
///
/// Not asserted: one refusing what the other decodes. The mirror stops at
/// the first bad tensor, checks external bases' digests in host mode, and
/// never checks targets' digests, while the CPU decoder is asked per
/// tensor. With `TPDE_FUZZ_GPU_LOG` set, each such divergence is logged to
/// stderr (`gpu_reference divergence: ...`), and so is each comparison
/// (`gpu_reference compared K of N targets: ...`).
pub fn gpu_reference(data: &[u8]) {
    // With the CRCs recomputed (see `with_crc_variants`), mutated payloads
    // reach staging and the device's own checks of gap streams and rANS
    // words, not only the seeds' payloads.
    with_crc_variants(data, gpu_reference_once);
}

/// The opened archive `a` (of bytes `data`) with every chunk's and plain
/// payload's CRC recomputed over its stored bytes, the index re-serialized
/// (stored uncompressed) and the header re-sealed; `None` when every CRC is
/// already right.
fn with_payload_crcs_fixed(a: &Archive<&[u8]>, data: &[u8]) -> Option<Vec<u8>> {
    use bincode::Options as _;
    use tpde_format::format::{bincode_options, Payload, FLAG_INDEX_ZSTD, HEADER_LEN};
    let mut index = a.index().clone();
    let mut changed = false;
    let mut fix = |crc: &mut u32, offset: u64, len: u64| {
        // Validated at open: every blob lies inside the data section.
        let bytes = data.get(offset as usize..offset.checked_add(len)? as usize)?;
        let c = crc32fast::hash(bytes);
        changed |= *crc != c;
        *crc = c;
        Some(())
    };
    for rec in index.bases.iter_mut().chain(index.tensors.iter_mut()) {
        match &mut rec.payload {
            Payload::Plain { offset, len, crc32 } => fix(crc32, *offset, *len)?,
            Payload::Chunked { chunks, .. } => {
                for c in chunks {
                    fix(&mut c.crc32, c.offset, c.stored_len)?;
                }
            }
        }
    }
    if !changed {
        return None;
    }
    let raw = bincode_options(u64::MAX).serialize(&index).ok()?;
    let mut header = *a.header();
    header.flags &= !FLAG_INDEX_ZSTD;
    header.index_len = raw.len() as u64;
    header.file_len = header.index_offset.checked_add(header.index_len)?;
    header.crc32 = header.compute_crc(&raw);
    let mut out = data.get(..header.index_offset as usize)?.to_vec();
    out.get_mut(..HEADER_LEN)?
        .copy_from_slice(&header.to_bytes());
    out.extend_from_slice(&raw);
    Some(out)
}

fn gpu_log() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("TPDE_FUZZ_GPU_LOG").is_some())
}

/// One archive through the mirror and the CPU reader (see
/// [`gpu_reference`]); returns the archive with its payload CRCs fixed when
/// it opened and some were wrong.
fn gpu_reference_once(data: &[u8]) -> Option<Vec<u8>> {
    use tpde_gpu::reference::{reconstruct, BaseMode};
    let a = Archive::from_bytes(data, ReadLimits::strict()).ok()?;
    let base = zero_base(&a);
    let tensors = &a.index().tensors;
    // The format crate's reconstruction of each target, digests unchecked.
    let cpu: Vec<Outcome> = (0..tensors.len())
        .map(|t| {
            let len = tensors[t].byte_len().unwrap_or(0) as usize;
            let mut out = vec![0u8; len];
            a.resolve_base_checked(t, &base, false)
                .and_then(|view| a.decode_chunks_into(t, 0..a.chunk_count(t), view, &mut out))
                .map(|()| out)
                .map_err(|e| format!("{e:?}"))
        })
        .collect();
    // The same zero bases as device memory, but for names the archive's
    // base table also uses.
    let inline_names: std::collections::HashSet<&str> =
        a.index().bases.iter().map(|b| b.name.as_str()).collect();
    let device: HashMap<String, Vec<u8>> = base
        .iter()
        .filter(|(n, _)| !inline_names.contains(n.as_str()))
        .map(|(n, (_, _, b))| (n.clone(), b.clone()))
        .collect();
    let sel = crc32fast::hash(data) as usize;
    let mut runs = vec![(
        BaseMode::Host(&base),
        GPU_PLANS[sel % 4],
        GPU_SLOTS[(sel >> 2) % 4],
    )];
    if !device.is_empty() {
        let mode = if sel >> 4 & 1 == 0 {
            BaseMode::DeviceBorrowed
        } else {
            BaseMode::DeviceInPlace
        };
        runs.push((mode, GPU_PLANS[(sel >> 5) % 4], GPU_SLOTS[(sel >> 7) % 4]));
    }
    let no_device = HashMap::new();
    for (mode, plan, slot) in runs {
        let dev = if matches!(mode, BaseMode::Host(_)) {
            &no_device
        } else {
            &device
        };
        let setting = format!("{mode:?} {plan:?} slot {slot}");
        match reconstruct(&a, mode, dev, slot, plan) {
            Ok(got) => {
                assert_eq!(got.len(), tensors.len(), "{setting}: target count");
                for (t, (g, c)) in got.iter().zip(&cpu).enumerate() {
                    match c {
                        Ok(want) => assert!(
                            g == want,
                            "{setting}: {} differs from the CPU reader ({} / {} bytes)",
                            tensors[t].name,
                            g.len(),
                            want.len()
                        ),
                        Err(e) if gpu_log() => eprintln!(
                            "gpu_reference divergence: {setting}: mirror decodes {} (CPU reader: {e})",
                            tensors[t].name
                        ),
                        Err(_) => {}
                    }
                }
                if gpu_log() {
                    let same = cpu.iter().filter(|c| c.is_ok()).count();
                    eprintln!(
                        "gpu_reference compared {same} of {} targets: {setting}",
                        cpu.len()
                    );
                }
            }
            Err(e) => {
                assert!(
                    !matches!(e, tpde_gpu::GpuError::Usage(_)),
                    "{setting}: the mirror disagrees with its own plan: {e}"
                );
                if gpu_log() && cpu.iter().all(Result::is_ok) {
                    eprintln!(
                        "gpu_reference divergence: {setting}: mirror refuses ({e:?}), CPU reader decodes all {} targets",
                        cpu.len()
                    );
                }
            }
        }
    }
    with_payload_crcs_fixed(&a, data)
}
