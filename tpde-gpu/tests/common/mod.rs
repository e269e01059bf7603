//! Test archives with every dtype width, chunk kind, combine op and base
//! mode. The public writer picks one op per tensor by trial; these tests need
//! each op on purpose, so archives are assembled here from
//! `tpde_format::codec::chunk::encode` (the writer's own chunk encoder) and
//! the format's plain-data index, then opened with the validating reader.

#![allow(dead_code)]

use std::collections::HashMap;

use bincode::Options;
use sha2::{Digest as _, Sha256};
use tpde_format::codec::chunk::{encode, EncodeScratch};
use tpde_format::codec::{dequant, rows};
use tpde_format::format::{
    align_up, bincode_options, BaseFile, BaseRef, Chunk, ChunkKind, Dtype, FileRecord, Header,
    Index, Op, Payload, RowRun, ScaleAxis, TensorRecord, ALIGN, HEADER_LEN,
};

/// Where a test tensor's base comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseKind {
    /// No base; `plain` stores the target uncompressed.
    None { plain: bool },
    /// An inline base, chunked or plain.
    Inline { plain: bool },
    /// An external base supplied at read time.
    External,
}

/// One tensor to put in a test archive.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    pub base: Option<Vec<u8>>,
    pub target: Vec<u8>,
    pub kind: BaseKind,
    pub op: Op,
    pub chunk_elems: u64,
    /// Replace the positions stream of the first sparse chunk with a hostile
    /// one (see [`hostile_positions`]); CRCs stay valid.
    pub tamper: Option<Tamper>,
    /// A base of this narrower float dtype (format v1.1), widened to
    /// `dtype` by the reader; `base` then holds the narrow bytes.
    pub narrow: Option<Dtype>,
    /// A row-mapped base (format v1.2) of another row count; `base` then
    /// holds the base tensor's bytes (shape `RowMap::base_shape`).
    pub rows: Option<RowMap>,
    /// A quantized base (format v1.2) predicting this F32 tensor; `base` is
    /// unused. Inline (see `Quant::plain`) or external per `kind`.
    pub quant: Option<Quant>,
}

/// A quantized base (spec §6.4): codes and scales; the target is encoded
/// against `f32(q) × scale`. Stored as base tensors `{name}.q` and
/// `{name}.scale`.
#[derive(Debug, Clone)]
pub struct Quant {
    /// One code per target element.
    pub q: Vec<u8>,
    /// I8 codes (else U8).
    pub signed: bool,
    /// Little-endian F32 scales.
    pub scales: Vec<u8>,
    pub scale_shape: Vec<u64>,
    pub axis: ScaleAxis,
    /// For an inline base: whether the codes and the scales are stored
    /// plain (else chunked).
    pub plain: (bool, bool),
    /// Chunk elements of chunked inline scales.
    pub scale_chunk: u64,
}

/// A row-mapped base's shape and row map (spec §6.3); with `row_elems`, a
/// sliced base (v1.5, §6.3.4): rows of that many elements, any base order.
#[derive(Debug, Clone)]
pub struct RowMap {
    pub base_shape: Vec<u64>,
    pub runs: Vec<RowRun>,
    pub row_elems: Option<u64>,
}

/// Ways to break a positions stream the CRC cannot catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// The last position lies past the chunk.
    PastEnd,
    /// The stream ends inside a varint (one position short).
    EndsEarly,
    /// A varint of six bytes.
    TooLong,
    /// One position too many.
    Trailing,
    /// (Not positions) one bit of the last word of the first rANS-coded
    /// plane flipped: the decode ends in another state.
    RansFlip,
    /// (Not positions) the last word of the first rANS-coded plane
    /// dropped (plane and stream lengths shortened to match): the decoder
    /// runs out of words.
    RansShort,
}

impl Tamper {
    /// True for the variants that break a rANS plane rather than positions.
    pub fn is_rans(self) -> bool {
        matches!(self, Tamper::RansFlip | Tamper::RansShort)
    }
}

/// Applies a rANS tamper to an encoded chunk's first rANS-coded plane;
/// false when the chunk has none.
fn tamper_rans(t: Tamper, e: &mut tpde_format::codec::chunk::EncodedChunk) -> bool {
    use tpde_format::format::Codec;
    let Codec::PerPlane(planes) = &mut e.values.codec else {
        return false;
    };
    let m = (e.values.raw_len as usize) / planes.len();
    let mut layout = tpde_format::codec::rans_layout::RansLayout::default();
    let mut at = e.positions.stored_len as usize;
    for p in planes.iter_mut() {
        let len = p.stored_len as usize;
        // Mode 2 (rANS) with at least one word.
        let words = p.codec.rans_lanes().is_some_and(|lanes| {
            tpde_format::codec::rans_layout::parse_plane(
                &e.bytes[at..at + len],
                m,
                Some(m),
                lanes,
                &mut layout,
            ) == Ok(tpde_format::codec::rans_layout::PlaneMode::Rans)
        }) && !layout.words.is_empty();
        if words {
            let end = at + len;
            match t {
                Tamper::RansFlip => e.bytes[end - 1] ^= 0x01,
                _ => {
                    e.bytes.drain(end - 2..end);
                    p.stored_len -= 2;
                    e.values.stored_len -= 2;
                }
            }
            return true;
        }
        at += len;
    }
    false
}

/// A hostile gap stream for `m` positions in a chunk of `n` elements.
pub fn hostile_positions(t: Tamper, m: usize, n: u64) -> Vec<u8> {
    let mut v = vec![0u8; m.saturating_sub(1)];
    match t {
        Tamper::PastEnd => {
            let mut g = n;
            while g >= 0x80 {
                v.push((g as u8) | 0x80);
                g >>= 7;
            }
            v.push(g as u8);
        }
        Tamper::EndsEarly => v.push(0x80),
        Tamper::TooLong => {
            v.truncate(m.saturating_sub(2));
            v.splice(0..0, [0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
            v.push(0);
        }
        Tamper::Trailing => {
            v.push(0);
            v.push(0);
        }
        // Not a positions tamper: the stream stays valid.
        Tamper::RansFlip | Tamper::RansShort => v.push(0),
    }
    v
}

/// Deterministic bytes.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A base/target pair of `chunks` chunks (plus a short tail) whose chunks
/// are, in turn: identical (zero chunk), a few elements changed (sparse),
/// every element changed (dense), half changed. With no base the "base" is
/// zeros.
pub fn pair(rng: &mut Rng, width: usize, ce: usize, has_base: bool) -> (Vec<u8>, Vec<u8>, u64) {
    let n = ce * 4 + ce / 3 + 1;
    let base = if has_base {
        rng.bytes(n * width)
    } else {
        vec![0u8; n * width]
    };
    let mut target = base.clone();
    // chunk 1: three small changes
    for k in [1usize, ce / 2, ce - 2] {
        let at = (ce + k) * width;
        target[at] = target[at].wrapping_add(1 + (rng.next() % 3) as u8);
    }
    // chunk 2: everything changes (small arithmetic changes, like updates)
    for i in 2 * ce..3 * ce {
        let at = i * width;
        let d = 1 + (rng.next() % 5) as u8;
        target[at] = target[at].wrapping_add(d);
        if width > 1 && rng.next() % 4 == 0 {
            target[at + 1] ^= 1;
        }
    }
    // chunk 3: half the elements change
    for i in 3 * ce..4 * ce {
        if rng.next() % 2 == 0 {
            let at = i * width + (rng.next() as usize % width);
            target[at] ^= 1 + (rng.next() % 200) as u8;
        }
    }
    // tail: random
    for b in &mut target[4 * ce * width..] {
        *b = rng.next() as u8;
    }
    (base, target, n as u64)
}

/// `base` changed chunk by chunk like [`pair`]'s target: identical, a few
/// elements, every element, half the elements, then random.
pub fn perturb(rng: &mut Rng, base: &[u8], width: usize, ce: usize) -> Vec<u8> {
    let mut target = base.to_vec();
    for k in [1usize, ce / 2, ce - 2] {
        let at = (ce + k) * width;
        target[at] = target[at].wrapping_add(1 + (rng.next() % 3) as u8);
    }
    for i in 2 * ce..3 * ce {
        target[i * width] = target[i * width].wrapping_add(1 + (rng.next() % 5) as u8);
    }
    for i in 3 * ce..4 * ce {
        if rng.next() % 2 == 0 {
            target[i * width + (rng.next() as usize % width)] ^= 1 + (rng.next() % 200) as u8;
        }
    }
    for b in &mut target[4 * ce * width..] {
        *b = rng.next() as u8;
    }
    target
}

/// The archive's bytes and the external base tensors it needs.
pub struct Built {
    pub bytes: Vec<u8>,
    pub external: HashMap<String, (Dtype, Vec<u64>, Vec<u8>)>,
    /// Base bytes by base tensor name (inline and external).
    pub bases: HashMap<String, Vec<u8>>,
}

struct Out {
    data: Vec<u8>,
    /// Newest format minor the chunks may use (2 unless [`build_with`]
    /// asks otherwise).
    max_minor: u16,
    /// From minor 6: rANS planes of at least this many symbols get 32
    /// states.
    wide_min_plane: usize,
}
impl Out {
    fn blob(&mut self, bytes: &[u8]) -> u64 {
        if bytes.is_empty() {
            return 0;
        }
        let at = align_up(self.data.len() as u64).unwrap() as usize;
        self.data.resize(at, 0);
        self.data.extend_from_slice(bytes);
        at as u64
    }
}

fn chunked(
    out: &mut Out,
    dtype: Dtype,
    target: &[u8],
    base: Option<&[u8]>,
    op: Op,
    ce: u64,
    mut tamper: Option<Tamper>,
) -> Payload {
    let w = dtype.width();
    let n = (target.len() / w) as u64;
    // `encode` records Replace (or ReplaceRot) for a chunk with no base;
    // explicit zeros keep the op asked for, and decode the same way.
    let zeros;
    let base = match base {
        None if !matches!(op, Op::Replace | Op::ReplaceRot) => {
            zeros = vec![0u8; target.len()];
            Some(zeros.as_slice())
        }
        b => b,
    };
    let mut chunks = Vec::new();
    let mut s = EncodeScratch::default();
    let mut i = 0u64;
    while i < n {
        let count = ce.min(n - i);
        let r = (i as usize * w)..((i + count) as usize * w);
        // Format 1.2 unless asked otherwise: a chunk with a base may get
        // `RansBase` planes (spec §5.7) where they are smaller; from 1.6,
        // planes of `wide_min_plane` symbols 32 states.
        let comp = tpde_format::codec::chunk::Compression::new(
            3,
            out.max_minor,
            tpde_format::codec::stream::PlaneCoder::Rans,
        )
        .with_wide_min_plane(out.wide_min_plane);
        let mut e = encode(w, &target[r.clone()], base.map(|b| &b[r]), op, comp, &mut s);
        if let Some(t) = tamper.filter(|t| t.is_rans()) {
            if tamper_rans(t, &mut e) {
                tamper = None;
            }
        }
        if e.kind == ChunkKind::Sparse && tamper.is_some_and(|t| !t.is_rans()) {
            if let Some(t) = tamper.take() {
                let pos = hostile_positions(t, e.changed as usize, count);
                let vals = e.bytes[e.positions.stored_len as usize..].to_vec();
                e.positions = tpde_format::format::Stream {
                    stored_len: pos.len() as u64,
                    raw_len: pos.len() as u64,
                    codec: tpde_format::format::Codec::Raw,
                };
                e.bytes = [pos, vals].concat();
            }
        }
        let offset = out.blob(&e.bytes);
        chunks.push(Chunk {
            offset,
            stored_len: e.bytes.len() as u64,
            crc32: if e.bytes.is_empty() {
                0
            } else {
                crc32fast::hash(&e.bytes)
            },
            elem_start: i,
            elem_count: count,
            kind: e.kind,
            op: e.op,
            changed: e.changed,
            positions: e.positions,
            values: e.values,
        });
        i += count;
    }
    assert!(
        !tamper.is_some_and(|t| t.is_rans()),
        "no rANS-coded plane to tamper with"
    );
    Payload::Chunked {
        chunk_elems: ce,
        chunks,
        chunk_sha256: None,
    }
}

fn plain(out: &mut Out, bytes: &[u8]) -> Payload {
    Payload::Plain {
        offset: out.blob(bytes),
        len: bytes.len() as u64,
        crc32: crc32fast::hash(bytes),
    }
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Assembles a valid v1 archive holding `specs`, its chunks coded as
/// format 1.2 allows (4-state rANS planes).
pub fn build(specs: &[Spec]) -> Built {
    build_with(specs, 2, tpde_format::codec::stream::WIDE_MIN_PLANE)
}

/// [`build`] with chunks coded as format minor `max_minor` allows; from
/// minor 6, rANS planes of at least `wide_min_plane` symbols get 32
/// interleaved states (`Rans32`, `RansBase32`), smaller ones 4.
pub fn build_with(specs: &[Spec], max_minor: u16, wide_min_plane: usize) -> Built {
    let mut out = Out {
        data: vec![0u8; HEADER_LEN],
        max_minor,
        wide_min_plane,
    };
    let mut index = Index::default();
    let mut external = HashMap::new();
    let mut bases = HashMap::new();
    let mut file_size = 8 + 2u64;
    for s in specs {
        let base_name = format!("{}.base", s.name);
        if let Some(qd) = &s.quant {
            // A quantized base (spec §6.4): the target is encoded against
            // the predictor the reader computes from codes and scales.
            let row_elems = rows::row_bytes(&s.shape, 1).unwrap_or(0);
            let mut pred = vec![0u8; s.target.len()];
            dequant::predict(
                &qd.q, qd.signed, &qd.scales, 0, qd.axis, row_elems, 0, &mut pred,
            );
            let (qn, sn) = (format!("{}.q", s.name), format!("{}.scale", s.name));
            let qdt = if qd.signed { Dtype::I8 } else { Dtype::U8 };
            let base_ref = match s.kind {
                BaseKind::Inline { .. } => {
                    let mut push = |name: &str, dtype, shape: &[u64], b: &[u8], p: bool, ce| {
                        let payload = if p {
                            plain(&mut out, b)
                        } else {
                            chunked(&mut out, dtype, b, None, Op::Replace, ce, None)
                        };
                        index.bases.push(TensorRecord {
                            name: name.to_owned(),
                            dtype,
                            shape: shape.to_vec(),
                            sha256: sha(b),
                            base: BaseRef::None,
                            payload,
                        });
                        (index.bases.len() - 1) as u32
                    };
                    let q = push(&qn, qdt, &s.shape, &qd.q, qd.plain.0, s.chunk_elems);
                    let scale = push(
                        &sn,
                        Dtype::F32,
                        &qd.scale_shape,
                        &qd.scales,
                        qd.plain.1,
                        qd.scale_chunk,
                    );
                    BaseRef::InlineDequant {
                        q,
                        scale,
                        axis: qd.axis,
                    }
                }
                _ => {
                    if index.base_files.is_empty() {
                        index.base_files.push(BaseFile {
                            name: "base.safetensors".into(),
                            size: 0,
                            sha256: [0; 32],
                        });
                    }
                    external.insert(qn.clone(), (qdt, s.shape.clone(), qd.q.clone()));
                    external.insert(
                        sn.clone(),
                        (Dtype::F32, qd.scale_shape.clone(), qd.scales.clone()),
                    );
                    BaseRef::ExternalDequant {
                        file: 0,
                        q_name: qn.clone(),
                        q_sha256: sha(&qd.q),
                        q_dtype: qdt,
                        scale_name: sn.clone(),
                        scale_sha256: sha(&qd.scales),
                        scale_shape: qd.scale_shape.clone(),
                        axis: qd.axis,
                    }
                }
            };
            bases.insert(qn, qd.q.clone());
            bases.insert(sn, qd.scales.clone());
            let payload = chunked(
                &mut out,
                s.dtype,
                &s.target,
                Some(&pred),
                s.op,
                s.chunk_elems,
                s.tamper,
            );
            index.tensors.push(TensorRecord {
                name: s.name.clone(),
                dtype: s.dtype,
                shape: s.shape.clone(),
                sha256: sha(&s.target),
                base: base_ref,
                payload,
            });
            file_size += s.target.len() as u64;
            continue;
        }
        if let (Some(r), Some(b)) = (&s.rows, &s.base) {
            // A row-mapped base (spec §6.3): the target is encoded against
            // the predictor the reader builds from the base's rows.
            let rb = match r.row_elems {
                Some(e) => e * s.dtype.width() as u64,
                None => rows::row_bytes(&s.shape, s.dtype.width()).unwrap(),
            };
            let mut pred = vec![0u8; s.target.len()];
            rows::predict(&r.runs, rb, b, 0..s.target.len() as u64, &mut pred);
            let base_ref = match s.kind {
                BaseKind::Inline { plain: p } => {
                    let payload = if p {
                        plain(&mut out, b)
                    } else {
                        chunked(&mut out, s.dtype, b, None, Op::Replace, s.chunk_elems, None)
                    };
                    index.bases.push(TensorRecord {
                        name: base_name.clone(),
                        dtype: s.dtype,
                        shape: r.base_shape.clone(),
                        sha256: sha(b),
                        base: BaseRef::None,
                        payload,
                    });
                    let index = (index.bases.len() - 1) as u32;
                    match r.row_elems {
                        None => BaseRef::InlineRows {
                            index,
                            rows: r.runs.clone(),
                        },
                        Some(row_elems) => BaseRef::InlineSlices {
                            index,
                            row_elems,
                            rows: r.runs.clone(),
                        },
                    }
                }
                _ => {
                    if index.base_files.is_empty() {
                        index.base_files.push(BaseFile {
                            name: "base.safetensors".into(),
                            size: 0,
                            sha256: [0; 32],
                        });
                    }
                    external.insert(
                        base_name.clone(),
                        (s.dtype, r.base_shape.clone(), b.clone()),
                    );
                    match r.row_elems {
                        None => BaseRef::ExternalRows {
                            file: 0,
                            name: base_name.clone(),
                            sha256: sha(b),
                            shape: r.base_shape.clone(),
                            rows: r.runs.clone(),
                        },
                        Some(row_elems) => BaseRef::ExternalSlices {
                            file: 0,
                            name: base_name.clone(),
                            sha256: sha(b),
                            shape: r.base_shape.clone(),
                            row_elems,
                            rows: r.runs.clone(),
                        },
                    }
                }
            };
            bases.insert(base_name.clone(), b.clone());
            let payload = chunked(
                &mut out,
                s.dtype,
                &s.target,
                Some(&pred),
                s.op,
                s.chunk_elems,
                s.tamper,
            );
            index.tensors.push(TensorRecord {
                name: s.name.clone(),
                dtype: s.dtype,
                shape: s.shape.clone(),
                sha256: sha(&s.target),
                base: base_ref,
                payload,
            });
            file_size += s.target.len() as u64;
            continue;
        }
        if let (Some(from), Some(b)) = (s.narrow, &s.base) {
            // A narrower base, widened by the reader (spec §6.2).
            let n = b.len() / from.width();
            let mut wide = vec![0u8; n * s.dtype.width()];
            tpde_format::codec::widen::widen(from, s.dtype, b, &mut wide);
            let base_ref = match s.kind {
                BaseKind::Inline { plain: p } => {
                    let payload = if p {
                        plain(&mut out, b)
                    } else {
                        chunked(&mut out, from, b, None, Op::Replace, s.chunk_elems, None)
                    };
                    index.bases.push(TensorRecord {
                        name: base_name.clone(),
                        dtype: from,
                        shape: s.shape.clone(),
                        sha256: sha(b),
                        base: BaseRef::None,
                        payload,
                    });
                    BaseRef::InlineWidened {
                        index: (index.bases.len() - 1) as u32,
                    }
                }
                _ => {
                    if index.base_files.is_empty() {
                        index.base_files.push(BaseFile {
                            name: "base.safetensors".into(),
                            size: 0,
                            sha256: [0; 32],
                        });
                    }
                    external.insert(base_name.clone(), (from, s.shape.clone(), b.clone()));
                    BaseRef::ExternalWidened {
                        file: 0,
                        name: base_name.clone(),
                        sha256: sha(b),
                        dtype: from,
                    }
                }
            };
            bases.insert(base_name.clone(), b.clone());
            let payload = chunked(
                &mut out,
                s.dtype,
                &s.target,
                Some(&wide),
                s.op,
                s.chunk_elems,
                s.tamper,
            );
            index.tensors.push(TensorRecord {
                name: s.name.clone(),
                dtype: s.dtype,
                shape: s.shape.clone(),
                sha256: sha(&s.target),
                base: base_ref,
                payload,
            });
            file_size += s.target.len() as u64;
            continue;
        }
        let base_ref = match (s.kind, &s.base) {
            (BaseKind::None { .. }, _) | (_, None) => BaseRef::None,
            (BaseKind::Inline { plain: p }, Some(b)) => {
                let payload = if p {
                    plain(&mut out, b)
                } else {
                    chunked(&mut out, s.dtype, b, None, Op::Replace, s.chunk_elems, None)
                };
                index.bases.push(TensorRecord {
                    name: base_name.clone(),
                    dtype: s.dtype,
                    shape: s.shape.clone(),
                    sha256: sha(b),
                    base: BaseRef::None,
                    payload,
                });
                bases.insert(base_name.clone(), b.clone());
                BaseRef::Inline {
                    index: (index.bases.len() - 1) as u32,
                }
            }
            (BaseKind::External, Some(b)) => {
                if index.base_files.is_empty() {
                    index.base_files.push(BaseFile {
                        name: "base.safetensors".into(),
                        size: 0,
                        sha256: [0; 32],
                    });
                }
                external.insert(base_name.clone(), (s.dtype, s.shape.clone(), b.clone()));
                bases.insert(base_name.clone(), b.clone());
                BaseRef::External {
                    file: 0,
                    name: base_name.clone(),
                    sha256: sha(b),
                }
            }
        };
        let base_bytes = match base_ref {
            BaseRef::None => None,
            _ => s.base.as_deref(),
        };
        let payload = match s.kind {
            BaseKind::None { plain: true } => plain(&mut out, &s.target),
            _ => chunked(
                &mut out,
                s.dtype,
                &s.target,
                base_bytes,
                s.op,
                s.chunk_elems,
                s.tamper,
            ),
        };
        index.tensors.push(TensorRecord {
            name: s.name.clone(),
            dtype: s.dtype,
            shape: s.shape.clone(),
            sha256: sha(&s.target),
            base: base_ref,
            payload,
        });
        file_size += s.target.len() as u64;
    }
    index.files.push(FileRecord {
        name: "model.safetensors".into(),
        size: file_size,
        sha256: [0; 32],
        header: b"{}".to_vec(),
        tensors: (0..specs.len() as u32).collect(),
    });
    let index_offset = align_up(out.data.len() as u64).unwrap();
    out.data.resize(index_offset as usize, 0);
    let ib = bincode_options(u64::MAX).serialize(&index).unwrap();
    out.data.extend_from_slice(&ib);
    let mut h = Header {
        major: 1,
        // The lowest minor defining the variants used (spec §8.2): the
        // chunks above are per-plane (v1.1), and readers refuse those in a
        // minor-0 file.
        minor: index.min_minor(),
        flags: 0,
        file_len: out.data.len() as u64,
        index_offset,
        index_len: ib.len() as u64,
        align: ALIGN as u32,
        crc32: 0,
    };
    h.crc32 = h.compute_crc(&ib);
    out.data[..HEADER_LEN].copy_from_slice(&h.to_bytes());
    Built {
        bytes: out.data,
        external,
        bases,
    }
}

/// The full matrix: every width (1, 2, 4, 8) × op (v1.4 `ReplaceRot`
/// included) × base mode, with an
/// aligned (256) and an unaligned (100) chunk size, plus an empty and a 0-d
/// tensor.
pub fn matrix(seed: u64) -> Vec<Spec> {
    let mut rng = Rng::new(seed);
    let mut specs = Vec::new();
    let dtypes = [Dtype::U8, Dtype::BF16, Dtype::F32, Dtype::I64];
    let kinds = [
        BaseKind::None { plain: false },
        BaseKind::None { plain: true },
        BaseKind::Inline { plain: false },
        BaseKind::Inline { plain: true },
        BaseKind::External,
    ];
    for dtype in dtypes {
        for kind in kinds {
            // With no base every op is kept too (its chunks are encoded
            // against explicit zeros, see `chunked`): the writer records
            // only Replace or ReplaceRot there, but a reader must apply
            // each chunk's op over the zero base (spec §6.1).
            for op in [Op::Xor, Op::Add, Op::Replace, Op::AddZigzag, Op::ReplaceRot] {
                for ce in [256usize, 100] {
                    let has_base = !matches!(kind, BaseKind::None { .. });
                    let (base, target, n) = pair(&mut rng, dtype.width(), ce, has_base);
                    specs.push(Spec {
                        name: format!("{dtype}.{kind:?}.{op:?}.{ce}"),
                        dtype,
                        shape: vec![n],
                        base: has_base.then_some(base),
                        target,
                        kind,
                        op,
                        chunk_elems: ce as u64,
                        tamper: None,
                        narrow: None,
                        rows: None,
                        quant: None,
                    });
                }
            }
        }
    }
    // Widened bases (v1.1): every defined pair, from random narrow bit
    // patterns (subnormals, infinities and NaN payloads included).
    for (from, to) in [
        (Dtype::BF16, Dtype::F32),
        (Dtype::F16, Dtype::F32),
        (Dtype::BF16, Dtype::F64),
        (Dtype::F16, Dtype::F64),
        (Dtype::F32, Dtype::F64),
    ] {
        for kind in [
            BaseKind::Inline { plain: false },
            BaseKind::Inline { plain: true },
            BaseKind::External,
        ] {
            for op in [Op::Xor, Op::AddZigzag] {
                let ce = 256usize;
                let n = ce * 4 + ce / 3 + 1;
                let narrow = rng.bytes(n * from.width());
                let mut wide = vec![0u8; n * to.width()];
                tpde_format::codec::widen::widen(from, to, &narrow, &mut wide);
                let target = perturb(&mut rng, &wide, to.width(), ce);
                specs.push(Spec {
                    name: format!("widen.{from}.{to}.{kind:?}.{op:?}"),
                    dtype: to,
                    shape: vec![n as u64],
                    base: Some(narrow),
                    target,
                    kind,
                    op,
                    chunk_elems: ce as u64,
                    tamper: None,
                    narrow: Some(from),
                    rows: None,
                    quant: None,
                });
            }
        }
    }
    specs.extend(row_specs(&mut rng));
    specs.push(Spec {
        name: "empty".into(),
        dtype: Dtype::F32,
        shape: vec![0, 7],
        base: Some(Vec::new()),
        target: Vec::new(),
        kind: BaseKind::Inline { plain: false },
        op: Op::Xor,
        chunk_elems: 256,
        tamper: None,
        narrow: None,
        rows: None,
        quant: None,
    });
    let b = rng.bytes(2);
    let mut t = b.clone();
    t[0] ^= 3;
    specs.push(Spec {
        name: "scalar".into(),
        dtype: Dtype::F16,
        shape: vec![],
        base: Some(b),
        target: t,
        kind: BaseKind::External,
        op: Op::Add,
        chunk_elems: 256,
        tamper: None,
        narrow: None,
        rows: None,
        quant: None,
    });
    specs
}

/// A small archive of good tensors around one whose first sparse chunk has
/// a hostile (CRC-valid) positions stream.
pub fn tampered(t: Tamper, dtype: Dtype) -> Vec<u8> {
    build(&tampered_specs(t, dtype)).bytes
}

/// The tensors of [`tampered`]: three of 2048-element chunks, the middle one
/// tampered.
fn tampered_specs(t: Tamper, dtype: Dtype) -> Vec<Spec> {
    let mut rng = Rng::new(77);
    let mut specs = Vec::new();
    for (i, tamper) in [None, Some(t), None].into_iter().enumerate() {
        let (base, target, n) = pair(&mut rng, dtype.width(), 2048, true);
        specs.push(Spec {
            name: format!("t{i}"),
            dtype,
            shape: vec![n],
            base: Some(base),
            target,
            kind: BaseKind::Inline { plain: false },
            op: Op::Xor,
            chunk_elems: 2048,
            tamper,
            narrow: None,
            rows: None,
            quant: None,
        });
    }
    specs
}

/// (kind, op) pairs the archive's target chunks use.
pub fn coverage(index: &Index) -> Vec<(ChunkKind, Op)> {
    let mut seen = Vec::new();
    for t in &index.tensors {
        if let Payload::Chunked { chunks, .. } = &t.payload {
            for c in chunks {
                let k = (
                    c.kind,
                    if c.kind == ChunkKind::Zero {
                        Op::Xor
                    } else {
                        c.op
                    },
                );
                if !seen.contains(&k) {
                    seen.push(k);
                }
            }
        }
    }
    seen
}

fn run(start: u64, base_start: u64, count: u64) -> RowRun {
    RowRun::new(start, base_start, count)
}

/// Target rows predicted by base row `2 i` one row at a time (never
/// mergeable), every ninth row a gap: more device jobs than one batch holds.
pub fn one_row_runs(target_rows: u64) -> Vec<RowRun> {
    (0..target_rows)
        .filter(|i| i % 9 != 4)
        .map(|i| run(i, 2 * i, 1))
        .collect()
}

/// Row-mapped tensors (format v1.2) for every base source (inline chunked,
/// inline plain, external): a pruned map, one with gaps (zero-predicted
/// rows) inside and at both ends, a rank-1 tensor (one-byte rows), runs
/// starting and ending mid-chunk, an empty map, a base of zero rows, and
/// many one-row runs. Then sliced ones (v1.5): a bias cut from a fused one
/// with its gates swapped, a matrix from a rank-3 base with runs out of
/// order and overlapping in the base, base rows used twice, and many
/// one-row runs walking the base backwards.
pub fn row_specs(rng: &mut Rng) -> Vec<Spec> {
    // (name, dtype, trailing dims, base rows, target rows, runs, chunk elems)
    type Case = (&'static str, Dtype, Vec<u64>, u64, u64, Vec<RowRun>, u64);
    // (name, dtype, target shape, base shape, row elems, runs, chunk elems)
    type Sliced = (
        &'static str,
        Dtype,
        Vec<u64>,
        Vec<u64>,
        u64,
        Vec<RowRun>,
        u64,
    );
    let sliced: Vec<Sliced> = vec![
        (
            "gates",
            Dtype::F32,
            vec![384],
            vec![1, 768],
            128,
            vec![run(0, 1, 1), run(1, 0, 1), run(2, 2, 1)],
            100,
        ),
        (
            "reordered",
            Dtype::BF16,
            vec![48, 16],
            vec![1, 60, 16],
            16,
            vec![
                run(0, 20, 10),
                run(10, 0, 10),
                run(20, 40, 8),
                run(30, 5, 18),
            ],
            64,
        ),
        (
            "repeated",
            Dtype::U8,
            vec![1000],
            vec![250],
            50,
            (0..20)
                .filter(|i| i % 6 != 5)
                .map(|i| run(i, (i * 3) % 5, 1))
                .collect(),
            128,
        ),
        (
            "backwards",
            Dtype::BF16,
            vec![1400, 8],
            vec![24_000],
            8,
            (0..1400)
                .filter(|i| i % 9 != 4)
                .map(|i| run(i, 2999 - 2 * i, 1))
                .collect(),
            256,
        ),
    ];
    let cases: Vec<Case> = vec![
        (
            "pruned",
            Dtype::BF16,
            vec![24],
            60,
            40,
            vec![
                run(0, 0, 10),
                run(10, 12, 7),
                run(17, 30, 13),
                run(30, 50, 10),
            ],
            100,
        ),
        (
            "gaps",
            Dtype::F32,
            vec![3, 5],
            30,
            45,
            vec![run(2, 0, 10), run(15, 10, 12), run(30, 22, 8)],
            64,
        ),
        (
            "vector",
            Dtype::U8,
            vec![],
            900,
            1000,
            vec![run(0, 0, 300), run(310, 305, 400), run(720, 710, 190)],
            100,
        ),
        (
            "one-row-runs",
            Dtype::BF16,
            vec![8],
            3000,
            1400,
            one_row_runs(1400),
            256,
        ),
        ("no-runs", Dtype::I64, vec![4], 10, 12, vec![], 16),
        ("zero-row-base", Dtype::F32, vec![2], 0, 5, vec![], 4),
    ];
    let kinds = [
        BaseKind::Inline { plain: false },
        BaseKind::Inline { plain: true },
        BaseKind::External,
    ];
    let ops = [Op::Xor, Op::Add, Op::AddZigzag, Op::Replace];
    let mut specs = Vec::new();
    let rows_cases = cases
        .into_iter()
        .map(|(name, dtype, trailing, b_rows, t_rows, runs, ce)| {
            let row_elems: u64 = trailing.iter().product();
            let shape: Vec<u64> = std::iter::once(t_rows).chain(trailing.clone()).collect();
            let base_shape: Vec<u64> = std::iter::once(b_rows).chain(trailing).collect();
            (name, dtype, shape, base_shape, row_elems, None, runs, ce)
        });
    let sliced_cases = sliced
        .into_iter()
        .map(|(name, dtype, shape, base_shape, r, runs, ce)| {
            (name, dtype, shape, base_shape, r, Some(r), runs, ce)
        });
    for (ci, (name, dtype, shape, base_shape, row_elems, sliced, runs, ce)) in
        rows_cases.chain(sliced_cases).enumerate()
    {
        let w = dtype.width();
        let rb = row_elems * w as u64;
        let base_rows = base_shape.iter().product::<u64>() / row_elems.max(1);
        let target_rows = shape.iter().product::<u64>() / row_elems.max(1);
        for (ki, kind) in kinds.into_iter().enumerate() {
            let base = rng.bytes((base_rows * rb) as usize);
            let mut target = vec![0u8; (target_rows * rb) as usize];
            rows::predict(&runs, rb, &base, 0..target.len() as u64, &mut target);
            let covered: Vec<bool> = (0..target_rows)
                .map(|r| {
                    runs.iter()
                        .any(|x| (x.start..x.start + x.count).contains(&r))
                })
                .collect();
            // Chunk by chunk as in `pair`: unchanged, a few elements, every
            // element (small steps), half; new (gap) rows are random.
            let n = (target_rows * row_elems) as usize;
            for i in 0..n {
                let at = i * w;
                match (i as u64 / ce) % 4 {
                    1 if i as u64 % ce == ce / 2 => target[at] ^= 0x11,
                    2 => target[at] = target[at].wrapping_add(1 + (rng.next() % 5) as u8),
                    3 if rng.next() % 2 == 0 => target[at + w - 1] ^= 1 + (rng.next() % 200) as u8,
                    _ => {}
                }
                if !covered[i / row_elems as usize] {
                    for b in &mut target[at..at + w] {
                        *b = rng.next() as u8;
                    }
                }
            }
            specs.push(Spec {
                name: format!("rows.{name}.{kind:?}"),
                dtype,
                shape: shape.clone(),
                base: Some(base),
                target,
                kind,
                op: ops[(ci + ki) % ops.len()],
                chunk_elems: ce,
                tamper: None,
                narrow: None,
                rows: Some(RowMap {
                    base_shape: base_shape.clone(),
                    runs: runs.clone(),
                    row_elems: sliced,
                }),
                quant: None,
            });
        }
    }
    specs
}

/// F32 bit patterns a scale takes besides ordinary values: ±0, subnormals
/// (smallest, largest, negative), the smallest normal, ±inf, NaNs with
/// payloads (signalling, negative quiet, canonical), the largest finite
/// (products overflow to inf), and 1 + 2^-23 (products round to even).
pub const SPECIAL_SCALES: [u32; 14] = [
    0x0000_0000,
    0x8000_0000,
    0x0000_0001,
    0x007f_ffff,
    0x8000_0003,
    0x0080_0000,
    0x7f80_0000,
    0xff80_0000,
    0x7f80_0001,
    0xffc1_2345,
    0x7fc0_0000,
    0x7f7f_ffff,
    0x3f80_0001,
    0xbf80_0001,
];

/// Random scales: a third special patterns, a third any bits, a third
/// ordinary small scales (what a quantizer writes).
pub fn scale_bits(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|_| {
            let r = rng.next();
            let bits = match r % 3 {
                0 => SPECIAL_SCALES[(r >> 8) as usize % SPECIAL_SCALES.len()],
                1 => (r >> 16) as u32,
                _ => (1e-4f32 + ((r >> 16) % 10_000) as f32 * 1e-5).to_bits(),
            };
            bits.to_le_bytes()
        })
        .collect()
}

/// Quantized-base tensors (format v1.2) for every source (inline: codes
/// and scales chunked, both plain, and mixed either way; external), every
/// scale axis, I8 and U8 codes: per-tensor scales that are subnormal, a
/// NaN with payload, -inf (with zero codes: inf × 0); per-row scales with
/// chunks starting mid-row and a rank-1 tensor; per-column scales over a
/// rank-3 tensor, rows longer than a chunk, and rows longer than a dequant
/// job (`plan::DEQUANT_PIECE`); a 0-d and an empty tensor. Scales mix
/// ±0, subnormals, ±inf and NaN payloads with ordinary values; an eighth of
/// the codes are zero. Targets are the predictor changed chunk by chunk as
/// in `row_specs`.
pub fn dequant_specs(rng: &mut Rng, long_row: u64) -> Vec<Spec> {
    // (name, shape, axis, signed, chunk elems, fixed scales)
    type Case = (
        &'static str,
        Vec<u64>,
        ScaleAxis,
        bool,
        u64,
        Option<Vec<u32>>,
    );
    let cases: Vec<Case> = vec![
        (
            "tensor-subnormal",
            vec![37, 19],
            ScaleAxis::Tensor,
            true,
            100,
            Some(vec![3]),
        ),
        (
            "tensor-nan",
            vec![300],
            ScaleAxis::Tensor,
            false,
            64,
            Some(vec![0xffc1_2345]),
        ),
        (
            "tensor-neg-inf",
            vec![5, 40],
            ScaleAxis::Tensor,
            true,
            64,
            Some(vec![0xff80_0000]),
        ),
        ("rows", vec![40, 24], ScaleAxis::Rows, false, 100, None),
        ("rows-rank1", vec![1000], ScaleAxis::Rows, true, 128, None),
        (
            "columns-rank3",
            vec![50, 3, 5],
            ScaleAxis::Columns,
            true,
            64,
            None,
        ),
        (
            "columns-long-rows",
            vec![3, 700],
            ScaleAxis::Columns,
            false,
            256,
            None,
        ),
        (
            "columns-longer-than-a-job",
            vec![2, long_row],
            ScaleAxis::Columns,
            true,
            4096,
            None,
        ),
        ("scalar", vec![], ScaleAxis::Tensor, true, 16, None),
        ("empty", vec![0, 7], ScaleAxis::Rows, false, 16, None),
    ];
    // (name, kind, (codes plain, scales plain))
    let sources = [
        ("chunked", BaseKind::Inline { plain: false }, (false, false)),
        ("plain", BaseKind::Inline { plain: true }, (true, true)),
        ("q-plain", BaseKind::Inline { plain: true }, (true, false)),
        ("s-plain", BaseKind::Inline { plain: false }, (false, true)),
        ("external", BaseKind::External, (false, false)),
    ];
    let ops = [Op::Xor, Op::Add, Op::AddZigzag, Op::Replace];
    let mut specs = Vec::new();
    for (ci, (name, shape, axis, signed, ce, fixed)) in cases.into_iter().enumerate() {
        let n = shape.iter().product::<u64>() as usize;
        let row_elems = rows::row_bytes(&shape, 1).unwrap_or(0);
        let ns = dequant::scale_count(&shape, axis).unwrap() as usize;
        for (si, (sname, kind, plain)) in sources.into_iter().enumerate() {
            let q: Vec<u8> = (0..n)
                .map(|_| {
                    let r = rng.next();
                    if r % 8 == 0 {
                        0
                    } else {
                        (r >> 8) as u8
                    }
                })
                .collect();
            let scales = match &fixed {
                Some(v) => v.iter().flat_map(|b| b.to_le_bytes()).collect(),
                None => scale_bits(rng, ns),
            };
            let mut target = vec![0u8; n * 4];
            dequant::predict(&q, signed, &scales, 0, axis, row_elems, 0, &mut target);
            for i in 0..n {
                let at = i * 4;
                match (i as u64 / ce) % 4 {
                    1 if i as u64 % ce == ce / 2 => target[at] ^= 0x11,
                    2 => target[at] = target[at].wrapping_add(1 + (rng.next() % 5) as u8),
                    3 if rng.next() % 2 == 0 => target[at + 3] ^= 1 + (rng.next() % 200) as u8,
                    _ => {}
                }
            }
            specs.push(Spec {
                name: format!("dq.{name}.{sname}"),
                dtype: Dtype::F32,
                shape: shape.clone(),
                base: None,
                target,
                kind,
                op: ops[(ci + si) % ops.len()],
                chunk_elems: ce,
                tamper: None,
                narrow: None,
                rows: None,
                quant: Some(Quant {
                    q,
                    signed,
                    scales,
                    scale_shape: if shape.is_empty() && axis == ScaleAxis::Tensor {
                        vec![]
                    } else {
                        vec![ns as u64]
                    },
                    axis,
                    plain,
                    // No larger than the target's chunks (spec: bounded work).
                    scale_chunk: (ns as u64 / 3).clamp(1, ce),
                }),
            });
        }
    }
    specs
}

/// Every code (I8 and U8) times scales of every special kind and many
/// random bit patterns: `__fmul_rn` on the device must give the format's
/// product bit for bit (subnormals kept, ties to even, NaN canonical).
pub fn every_code_times_many_scales(rng: &mut Rng) -> Vec<Spec> {
    let cols = 4096usize;
    let mut scales: Vec<u8> = SPECIAL_SCALES
        .iter()
        .flat_map(|b| b.to_le_bytes())
        .collect();
    // Subnormal and near-overflow scales, then any bits.
    for k in 0..256u32 {
        scales.extend_from_slice(&(k * 0x7fff).to_le_bytes());
        scales.extend_from_slice(&(0x7f00_0000 | (k << 12)).to_le_bytes());
    }
    while scales.len() < cols * 4 {
        scales.extend_from_slice(&(rng.next() as u32).to_le_bytes());
    }
    let mut specs = Vec::new();
    for signed in [true, false] {
        let q: Vec<u8> = (0..256 * cols).map(|i| (i / cols) as u8).collect();
        let mut target = vec![0u8; q.len() * 4];
        tpde_format::codec::dequant::predict(
            &q,
            signed,
            &scales,
            0,
            ScaleAxis::Columns,
            cols as u64,
            0,
            &mut target,
        );
        for i in (0..q.len()).step_by(7) {
            target[4 * i] ^= 1;
        }
        specs.push(Spec {
            name: format!("every-code.{}", if signed { "i8" } else { "u8" }),
            dtype: Dtype::F32,
            shape: vec![256, cols as u64],
            base: None,
            target,
            kind: BaseKind::External,
            op: Op::Xor,
            chunk_elems: 1 << 16,
            tamper: None,
            narrow: None,
            rows: None,
            quant: Some(Quant {
                q,
                signed,
                scales: scales.clone(),
                scale_shape: vec![cols as u64],
                axis: ScaleAxis::Columns,
                plain: (false, false),
                scale_chunk: 1024,
            }),
        });
    }
    specs
}

/// Trained weights: sign, exponent 0x68..0x7f (magnitudes 2^-23 .. 1),
/// random mantissa.
fn weight(rng: &mut Rng) -> f32 {
    let r = rng.next();
    let w = f32::from_bits(0x3400_0000 + ((r as u32 % 24) << 23) + (r as u32 >> 9 & 0x7f_ffff));
    if r >> 40 & 1 == 1 {
        -w
    } else {
        w
    }
}

/// The target over predictor `pred` (elements of `w` bytes): each element
/// [`ctx_changes`] picks moves by a number of integer steps of its bit
/// pattern set by the predictor's top byte (plus noise), as an optimizer's
/// update of about the same size everywhere moves a small weight by more
/// steps than a large one — what the base context of `RansBase` planes
/// (spec §5.7) predicts. Stylized so that the writer picks those planes
/// even for the few values of a sparse chunk.
fn stepped(rng: &mut Rng, pred: &[u8], w: usize, ce: u64) -> Vec<u8> {
    let mut out = pred.to_vec();
    for (i, e) in out.chunks_exact_mut(w).enumerate() {
        if !ctx_changes(rng, i as u64, ce) {
            continue;
        }
        // Fewer steps the larger the exponent (the top byte's low 7 bits).
        let step = 1 + u64::from(0x3f_u8.saturating_sub(e[w - 1] & 0x7f)) * 4 + rng.next() % 2;
        let mut x = [0u8; 8];
        x[..w].copy_from_slice(e);
        let v = u64::from_le_bytes(x).wrapping_add(step);
        e.copy_from_slice(&v.to_le_bytes()[..w]);
    }
    out
}

fn bf16(x: f32) -> [u8; 2] {
    ((x.to_bits() >> 16) as u16).to_le_bytes()
}

/// Whether element `i` of a [`base_ctx_specs`] tensor changes: chunk 0 and
/// the tail every element (dense), chunk 1 most of a block of 15/32 of it (sparse: enough values
/// that the base context's frequency tables pay off), chunk 2
/// none (zero).
fn ctx_changes(rng: &mut Rng, i: u64, ce: u64) -> bool {
    match i / ce {
        // A block: its gaps cost next to nothing, so sparse wins.
        1 => (ce / 8..ce / 8 + ce * 15 / 32).contains(&(i % ce)) && rng.next() % 8 != 0,
        2 => false,
        _ => true,
    }
}

/// Chunk elements of [`base_ctx_specs`] tensors.
pub const CTX_CHUNK: u64 = 32768;

/// Trained-weight-like pairs (format v1.2) whose dense and sparse chunks
/// the writer codes with `RansBase` planes (spec §5.7), over a plain BF16
/// base, a BF16 base widened to F32, a row-mapped BF16 base (rows no run
/// covers predicted by zero), a sliced one (v1.5, runs scattered over the
/// base) and a quantized base (I8 codes, per-row F32
/// scales), each inline chunked, inline plain and external. Chunks: dense,
/// sparse, zero, and a dense tail.
pub fn base_ctx_specs(rng: &mut Rng) -> Vec<Spec> {
    let ce = CTX_CHUNK;
    let row = 64u64;
    let n = 3 * ce + ce / 2;
    let rows_t = n / row; // 1792 target rows
    let kinds = [
        ("inline", BaseKind::Inline { plain: false }),
        ("inline-plain", BaseKind::Inline { plain: true }),
        ("external", BaseKind::External),
    ];
    let spec = |name: String, dtype, shape: Vec<u64>, base, target, kind| Spec {
        name,
        dtype,
        shape,
        base,
        target,
        kind,
        op: Op::AddZigzag,
        chunk_elems: ce,
        tamper: None,
        narrow: None,
        rows: None,
        quant: None,
    };
    let mut specs = Vec::new();
    for (kn, kind) in kinds {
        // Plain BF16 base.
        let base: Vec<u8> = (0..n).flat_map(|_| bf16(weight(rng))).collect();
        let target = stepped(rng, &base, 2, ce);
        specs.push(spec(
            format!("ctx-plain-{kn}"),
            Dtype::BF16,
            vec![rows_t, row],
            Some(base),
            target,
            kind,
        ));
        // BF16 base widened to F32.
        let base: Vec<u8> = (0..n).flat_map(|_| bf16(weight(rng))).collect();
        let mut wide = vec![0u8; (n * 4) as usize];
        tpde_format::codec::widen::widen(Dtype::BF16, Dtype::F32, &base, &mut wide);
        let target = stepped(rng, &wide, 4, ce);
        let mut s = spec(
            format!("ctx-widened-{kn}"),
            Dtype::F32,
            vec![rows_t, row],
            Some(base),
            target,
            kind,
        );
        s.narrow = Some(Dtype::BF16);
        specs.push(s);
        // Row-mapped BF16 base: rows dropped, rows inserted (predicted by
        // zero), runs starting and ending mid-chunk.
        let rows_b = rows_t + 40;
        let runs = vec![
            run(0, 0, 400),
            run(400, 430, 240),
            run(680, 700, 600),
            run(1320, 1350, 472),
        ];
        let base: Vec<u8> = (0..rows_b * row).flat_map(|_| bf16(weight(rng))).collect();
        let rb = row * 2;
        let mut pred = vec![0u8; (n * 2) as usize];
        rows::predict(&runs, rb, &base, 0..n * 2, &mut pred);
        let target = stepped(rng, &pred, 2, ce);
        let mut s = spec(
            format!("ctx-rows-{kn}"),
            Dtype::BF16,
            vec![rows_t, row],
            Some(base),
            target,
            kind,
        );
        s.rows = Some(RowMap {
            base_shape: vec![rows_b, row],
            runs,
            row_elems: None,
        });
        specs.push(s);
        // Sliced BF16 base (v1.5) of another shape: one-row runs scattered
        // over the whole base (row `37 i mod rows_b`, base rows reused), so
        // a chunk's runs span far more base bytes than the chunk holds and
        // the base context is read run by run; every seventh row
        // predicted by zero.
        let runs: Vec<RowRun> = (0..rows_t)
            .filter(|i| i % 7 != 3)
            .map(|i| run(i, (37 * i) % rows_b, 1))
            .collect();
        let base: Vec<u8> = (0..rows_b * row).flat_map(|_| bf16(weight(rng))).collect();
        let mut pred = vec![0u8; (n * 2) as usize];
        rows::predict(&runs, rb, &base, 0..n * 2, &mut pred);
        let target = stepped(rng, &pred, 2, ce);
        let mut s = spec(
            format!("ctx-sliced-{kn}"),
            Dtype::BF16,
            vec![rows_t, row],
            Some(base),
            target,
            kind,
        );
        s.rows = Some(RowMap {
            base_shape: vec![1, rows_b * row],
            runs,
            row_elems: Some(row),
        });
        specs.push(s);
        // Quantized base: I8 codes, per-row scales.
        let q: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        let scales: Vec<u8> = (0..rows_t)
            .flat_map(|_| (2f32.powi(-(8 + (rng.next() % 8) as i32))).to_le_bytes())
            .collect();
        let mut pred = vec![0u8; (n * 4) as usize];
        dequant::predict(&q, true, &scales, 0, ScaleAxis::Rows, row, 0, &mut pred);
        let target = stepped(rng, &pred, 4, ce);
        let mut s = spec(
            format!("ctx-dequant-{kn}"),
            Dtype::F32,
            vec![rows_t, row],
            None,
            target,
            kind,
        );
        s.quant = Some(Quant {
            q,
            signed: true,
            scales,
            scale_shape: vec![rows_t],
            axis: ScaleAxis::Rows,
            plain: match kind {
                BaseKind::Inline { plain } => (plain, plain),
                _ => (false, false),
            },
            scale_chunk: 100,
        });
        specs.push(s);
    }
    specs
}

/// Per tensor: the kinds of the chunks whose values have a `RansBase`
/// plane (format v1.2).
pub fn rans_base_chunks(index: &Index) -> Vec<(String, Vec<ChunkKind>)> {
    index
        .tensors
        .iter()
        .map(|t| {
            let kinds = match &t.payload {
                Payload::Chunked { chunks, .. } => chunks
                    .iter()
                    .filter(|c| c.values.uses_base_context())
                    .map(|c| c.kind)
                    .collect(),
                Payload::Plain { .. } => Vec::new(),
            };
            (t.name.clone(), kinds)
        })
        .collect()
}

/// An archive whose targets `q`, `k` and `v` (`[rows, cols]` F32) are the
/// three thirds of its one embedded base `qkv` (`[3 rows, cols]`), packed
/// by the public writer with `ce`-element chunks into `dir`: sliced bases
/// that share one chunked inline base. Returns the archive's path and
/// `(rows, cols, ce)`.
pub fn qkv_archive(dir: &std::path::Path) -> (std::path::PathBuf, (u64, u64, u64)) {
    use tpde_format::safetensors::{make_header, Checkpoint};
    let (rows, cols, ce) = (64u64, 256u64, 4096u64);
    let mut rng = Rng::new(11);
    let qkv = rng.bytes((3 * rows * cols * 4) as usize);
    let third = (rows * cols * 4) as usize;
    let write = |name: &str, tensors: &[(&str, &[u64], &[u8])]| {
        let list: Vec<_> = tensors
            .iter()
            .map(|(n, s, _)| (*n, Dtype::F32, *s))
            .collect();
        let header = make_header(&list);
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&header);
        for (_, _, b) in tensors {
            out.extend_from_slice(b);
        }
        let p = dir.join(name);
        std::fs::write(&p, out).unwrap();
        Checkpoint::open(&p).unwrap()
    };
    let shape = [rows, cols];
    let base = write("base.st", &[("qkv", &[3 * rows, cols], &qkv)]);
    let target = write(
        "target.st",
        &[
            ("q", &shape, &qkv[..third]),
            ("k", &shape, &qkv[third..2 * third]),
            ("v", &shape, &qkv[2 * third..]),
        ],
    );
    let out = dir.join("qkv.tpde");
    let opts = tpde_format::pack::PackOptions {
        write: tpde_format::WriteOptions::default().with_chunk_elems(ce),
        base_mode: tpde_format::pack::BaseMode::Inline,
    };
    tpde_format::pack::pack(&target, Some(&base), &out, &opts, &mut |_| {}).unwrap();
    (out, (rows, cols, ce))
}

/// Per target chunk whose values have 32-state rANS planes (format v1.6):
/// its kind and whether a plane uses the base as context (`RansBase32`).
pub fn wide_chunks(index: &Index) -> Vec<(ChunkKind, bool)> {
    index
        .tensors
        .iter()
        .flat_map(|t| match &t.payload {
            Payload::Chunked { chunks, .. } => chunks.as_slice(),
            Payload::Plain { .. } => &[],
        })
        .filter(|c| c.values.uses_wide_rans())
        .map(|c| (c.kind, c.values.uses_base_context()))
        .collect()
}

/// Per target chunk whose values have 4-state rANS planes: its kind and
/// its number of values (bytes per plane).
pub fn narrow_rans_chunks(index: &Index) -> Vec<(ChunkKind, u64)> {
    use tpde_format::format::{Codec, PlaneCodec};
    index
        .tensors
        .iter()
        .flat_map(|t| match &t.payload {
            Payload::Chunked { chunks, .. } => chunks.as_slice(),
            Payload::Plain { .. } => &[],
        })
        .filter_map(|c| match &c.values.codec {
            Codec::PerPlane(p)
                if p.iter()
                    .any(|p| matches!(p.codec, PlaneCodec::Rans | PlaneCodec::RansBase)) =>
            {
                Some((c.kind, c.values.raw_len / p.len().max(1) as u64))
            }
            _ => None,
        })
        .collect()
}

/// [`matrix`] coded as format 1.6 with 32-state planes from 128 symbols:
/// full 256-element chunks get them, short chunks and tails keep 4
/// states, so batches hold both.
pub fn wide_matrix(seed: u64) -> Built {
    build_with(&matrix(seed), 6, 128)
}

/// [`base_ctx_specs`] coded as format 1.6 with 32-state planes from 4096
/// symbols: `Rans32` and `RansBase32` planes in dense and sparse chunks.
pub fn wide_ctx(seed: u64) -> Built {
    build_with(&base_ctx_specs(&mut Rng::new(seed)), 6, 4096)
}

/// Chunk elements of [`wide_writer_archive`]: the GPU-oriented setting,
/// whose full chunks get 32-state planes from the writer's defaults.
pub const WIDE_CHUNK: u64 = 1 << 16;

/// Writes a safetensors file of `tensors` (name, dtype, shape) holding
/// `data` (one byte vector per tensor, in order) and opens it.
fn write_checkpoint(
    path: &std::path::Path,
    tensors: &[(&str, Dtype, &[u64])],
    data: &[Vec<u8>],
) -> tpde_format::safetensors::Checkpoint {
    let header = tpde_format::safetensors::make_header(tensors);
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    for d in data {
        out.extend_from_slice(d);
    }
    std::fs::write(path, out).unwrap();
    tpde_format::safetensors::Checkpoint::open(path).unwrap()
}

/// A small bf16 fine-tune pair packed by the public writer with
/// [`WIDE_CHUNK`]-element chunks and its defaults (format 1.6, 32-state
/// planes from 65,536 symbols), the base inline, into `dir`: full dense
/// chunks with 32-state planes, tails and sparse chunks with 4-state ones.
/// Returns the archive's path and the base tensors by name.
pub fn wide_writer_archive(
    dir: &std::path::Path,
) -> (std::path::PathBuf, HashMap<String, Vec<u8>>) {
    let mut rng = Rng::new(65);
    // (name, shape, fraction of elements the fine-tune moves, in 1/16)
    let tensors: [(&str, [u64; 2], u64); 3] = [
        ("w.dense", [256, 1024], 12),
        ("w.tail", [300, 700], 16),
        ("w.sparse", [128, 1024], 1),
    ];
    let mut base = Vec::new();
    let mut target = Vec::new();
    for (_, shape, moved) in tensors {
        let n = (shape[0] * shape[1]) as usize;
        let b: Vec<u8> = (0..n).flat_map(|_| bf16(weight(&mut rng))).collect();
        let mut t = b.clone();
        for e in t.chunks_exact_mut(2) {
            let r = rng.next();
            if r % 16 < moved {
                // One to three steps of the bit pattern, either way.
                let v = u16::from_le_bytes([e[0], e[1]]);
                let step = 1 + (r >> 8) as u16 % 3;
                let v = if r >> 20 & 1 == 0 {
                    v.wrapping_add(step)
                } else {
                    v.wrapping_sub(step)
                };
                e.copy_from_slice(&v.to_le_bytes());
            }
        }
        base.push(b);
        target.push(t);
    }
    let list: Vec<_> = tensors
        .iter()
        .map(|(n, s, _)| (*n, Dtype::BF16, &s[..]))
        .collect();
    let b = write_checkpoint(&dir.join("base.st"), &list, &base);
    let t = write_checkpoint(&dir.join("target.st"), &list, &target);
    let out = dir.join("wide.tpde");
    let opts = tpde_format::pack::PackOptions {
        write: tpde_format::WriteOptions::default().with_chunk_elems(WIDE_CHUNK),
        base_mode: tpde_format::pack::BaseMode::Inline,
    };
    tpde_format::pack::pack(&t, Some(&b), &out, &opts, &mut |_| {}).unwrap();
    let bases = tensors
        .iter()
        .zip(base)
        .map(|((n, _, _), b)| (n.to_string(), b))
        .collect();
    (out, bases)
}

/// A bf16 tensor of one 65,536-element chunk whose fine-tune adds 0 to 99
/// to every bit pattern, packed by the public writer (base inline): the
/// delta's upper plane is constant (a `Rans` plane in the constant mode:
/// no states, labelled 4-state) beside a coded `Rans32` lower plane.
pub fn constant_beside_wide_archive(
    dir: &std::path::Path,
) -> (std::path::PathBuf, HashMap<String, Vec<u8>>) {
    let mut rng = Rng::new(66);
    let n = WIDE_CHUNK as usize;
    let b: Vec<u8> = (0..n).flat_map(|_| bf16(weight(&mut rng))).collect();
    let t: Vec<u8> = b
        .chunks_exact(2)
        .flat_map(|e| {
            let v = u16::from_le_bytes([e[0], e[1]]);
            v.wrapping_add((rng.next() % 100) as u16).to_le_bytes()
        })
        .collect();
    let list = [("w", Dtype::BF16, &[256u64, 256][..])];
    let bc = write_checkpoint(&dir.join("base.st"), &list, std::slice::from_ref(&b));
    let tc = write_checkpoint(&dir.join("target.st"), &list, &[t]);
    let out = dir.join("const-wide.tpde");
    let opts = tpde_format::pack::PackOptions {
        write: tpde_format::WriteOptions::default().with_chunk_elems(WIDE_CHUNK),
        base_mode: tpde_format::pack::BaseMode::Inline,
    };
    tpde_format::pack::pack(&tc, Some(&bc), &out, &opts, &mut |_| {}).unwrap();
    (out, HashMap::from([("w".to_string(), b)]))
}

/// [`tampered`] coded as format 1.6 with 32-state planes from 128
/// symbols, so the tampered plane (the first rANS-coded one) has 32
/// states.
pub fn tampered_wide(t: Tamper, dtype: Dtype) -> Vec<u8> {
    build_with(&tampered_specs(t, dtype), 6, 128).bytes
}
