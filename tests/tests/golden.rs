//! Golden vectors of format major 1 (`tests/vectors/v1/`, v1.0 and v1.1): the
//! Rust reader decodes every archive, matches the manifest's digests (computed
//! from the inputs at generation time, not from the archives) and format
//! version, unpacks byte-identically, and the vectors together cover every
//! dtype, chunk kind, combine op, codec, base kind and widening.
//!
//! Vectors are never regenerated, only added to
//! (`cargo run -p tpde-tests --example make_vectors`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tpde_format::codec::chunk::{decode_into, DecodeScratch};
use tpde_format::codec::{stream, widen};
use tpde_format::format::{
    BaseRef, Chunk, ChunkKind, Codec, Op, Payload, PlaneCodec, TensorRecord,
};
use tpde_format::read::Table;
use tpde_format::safetensors::Checkpoint;
use tpde_format::unpack::{unpack, verify, UnpackOptions};
use tpde_format::{Archive, BaseProvider, Dtype, NoBase};
use tpde_tests::{repo_root, sha256_file, sha256_hex, vectors_v1};

fn manifest() -> BTreeMap<String, Value> {
    let p = vectors_v1().join("manifest.json");
    let text = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let v: Value = serde_json::from_slice(&text).unwrap();
    v["vectors"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

fn base_for(entry: &Value) -> Option<Checkpoint> {
    entry["base_file"]
        .as_str()
        .map(|f| Checkpoint::open(vectors_v1().join(f)).unwrap())
}

#[test]
fn manifest_lists_every_archive_and_nothing_else() {
    let m = manifest();
    assert!(
        m.len() >= 14,
        "expected at least 14 vectors, found {}",
        m.len()
    );
    let on_disk: BTreeSet<String> = std::fs::read_dir(vectors_v1())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tpde"))
        .collect();
    let listed: BTreeSet<String> = m
        .values()
        .map(|e| e["archive"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(on_disk, listed);
}

#[test]
fn every_vector_decodes_to_its_manifest_digests_and_unpacks_byte_identically() {
    for (name, entry) in manifest() {
        let path = vectors_v1().join(entry["archive"].as_str().unwrap());
        // The vector itself is unchanged since it was generated.
        assert_eq!(
            sha256_file(&path),
            entry["archive_sha256"].as_str().unwrap(),
            "{name}: archive bytes changed: vectors are never regenerated"
        );
        let a = Archive::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        a.check_crcs().unwrap();
        // The header's version is the one the vector was made for (1.0
        // where the manifest predates v1.1), and it is the lowest that can
        // express the index (spec §8.2).
        let h = a.header();
        let want_version = entry["format_version"].as_str().unwrap_or("1.0");
        assert_eq!(
            format!("{}.{}", h.major, h.minor),
            want_version,
            "{name}: format version"
        );
        // (v1.3) A compressed index (flag bit 0) needs minor 3 itself.
        let zstd_index = h.flags & tpde_format::format::FLAG_INDEX_ZSTD != 0;
        let need = if zstd_index {
            a.index().min_minor().max(3)
        } else {
            a.index().min_minor()
        };
        assert_eq!(need, h.minor, "{name}: lowest minor");
        assert_eq!(
            h.flags & !tpde_format::format::FLAG_INDEX_ZSTD,
            0,
            "{name}: flags"
        );
        let base = base_for(&entry);
        let provider: &dyn BaseProvider = match &base {
            Some(b) => b,
            None => &NoBase,
        };
        let want_tensors = str_map(&entry["tensors"]);
        let have: BTreeSet<&str> = a.index().tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            have,
            want_tensors.keys().map(String::as_str).collect(),
            "{name}: tensor names"
        );
        for (t, want) in &want_tensors {
            let bytes = a
                .decode_tensor(t, provider)
                .unwrap_or_else(|e| panic!("{name}/{t}: {e}"));
            assert_eq!(&sha256_hex(&bytes), want, "{name}/{t}");
        }
        let rep = verify(&a, provider, None, &mut |_| {}).unwrap();
        assert_eq!(rep.tensors, want_tensors.len());

        // Unpack: one file to a file, several (or extra files) to a directory.
        let want_files = str_map(&entry["files"]);
        let dir = tempfile::tempdir().unwrap();
        let idx = a.index();
        let single = idx.files.len() == 1 && idx.extra_files.is_empty();
        let out = if single {
            dir.path().join(&idx.files[0].name)
        } else {
            dir.path().join("out")
        };
        unpack(&a, provider, &out, &UnpackOptions::default(), &mut |_| {}).unwrap();
        let out_dir = if single { dir.path() } else { out.as_path() };
        let got: BTreeMap<String, String> = std::fs::read_dir(out_dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    sha256_file(&e.path()),
                )
            })
            .collect();
        assert_eq!(got, want_files, "{name}: unpacked files");
    }
}

#[test]
fn an_external_vector_needs_its_base() {
    let a = Archive::open(vectors_v1().join("delta_external.tpde")).unwrap();
    let err = a.decode_tensor("f32.xor", &NoBase).unwrap_err();
    assert!(
        matches!(err, tpde_format::Error::MissingBase { .. }),
        "{err}"
    );
}

/// What the vectors exercise, read from their indexes.
#[derive(Default, Debug)]
struct Coverage {
    dtypes: BTreeSet<&'static str>,
    kinds: BTreeSet<&'static str>,
    kind_ops: BTreeSet<(&'static str, &'static str)>,
    position_codecs: BTreeSet<&'static str>,
    value_codecs: BTreeSet<&'static str>,
    target_bases: BTreeSet<&'static str>,
    base_payloads: BTreeSet<&'static str>,
    varint_lengths: BTreeSet<usize>,
    empty: bool,
    scalar: bool,
    short_last_chunk: bool,
    multi_file: bool,
    extra_file: bool,
    standalone_in_delta: bool,
    // v1.1
    plane_codecs: BTreeSet<&'static str>,
    /// (table, chunk kind) of chunks with per-plane values.
    per_plane_in: BTreeSet<(&'static str, &'static str)>,
    /// A one-byte dtype's values stream in a v1.1 archive (whole-stream codec).
    one_byte_values_in_v11: bool,
    /// (base dtype, target dtype, "inline" | "external") of widened bases.
    widen_pairs: BTreeSet<(&'static str, &'static str, &'static str)>,
    /// Chunk kinds decoded over a widened base.
    widened_kinds: BTreeSet<&'static str>,
    /// (narrow dtype, class) of the values in widened bases.
    widened_specials: BTreeSet<(&'static str, &'static str)>,
    /// Base modes in which a target is stored against a base tensor of another name.
    renamed: BTreeSet<&'static str>,
    /// Two targets share one inline base.
    shared_inline_base: bool,
    // v1.2
    /// Base modes of row-mapped bases.
    row_modes: BTreeSet<&'static str>,
    /// What the row maps exercise.
    row_features: BTreeSet<&'static str>,
    // v1.5
    /// Base modes of sliced bases.
    slice_modes: BTreeSet<&'static str>,
    /// What the sliced maps exercise.
    slice_features: BTreeSet<&'static str>,
    /// Base modes of quantized bases.
    dequant_modes: BTreeSet<&'static str>,
    /// (axis, codes dtype) of quantized bases.
    dequant_axes: BTreeSet<(&'static str, &'static str)>,
    /// Classes of the scales of quantized bases.
    dequant_scales: BTreeSet<&'static str>,
    /// A 0-d tensor with a quantized base.
    dequant_scalar: bool,
    /// (chunk kind, plane) of `RansBase` planes (spec §5.7).
    rans_base_in: BTreeSet<(&'static str, usize)>,
    /// A `RansBase` plane over a widened base.
    rans_base_widened: bool,
    minors: BTreeSet<u16>,
    // v1.4
    /// (table, chunk kind) of `ReplaceRot` chunks.
    rot_in: BTreeSet<(&'static str, &'static str)>,
    /// A `ReplaceRot` target chunk whose tensor has a base (which it ignores).
    rot_over_base: bool,
    /// Element widths of `ReplaceRot` target chunks.
    rot_widths: BTreeSet<usize>,
    /// Header minors of the vectors whose index is zstd-compressed.
    zstd_index_minors: BTreeSet<u16>,
    // rANS planes (spec §5.6), read from their first bytes.
    /// Mode bytes of `Rans` planes (§5.6.1).
    rans_modes: BTreeSet<u8>,
    /// (table, chunk kind) of chunks holding a `Rans` plane.
    rans_in: BTreeSet<(&'static str, &'static str)>,
    /// How mode-2 planes use their context (§5.3, §5.6.2).
    rans_context: BTreeSet<&'static str>,
    /// `scale` of mode-2 planes.
    rans_scales: BTreeSet<u8>,
    /// Most context buckets `B` of a mode-2 plane.
    rans_max_buckets: u8,
    /// A mode-2 plane whose size is not a multiple of the 4 lanes (§5.6.5).
    rans_partial_lanes: bool,
    // v1.6
    /// (table, chunk kind, codec) of mode-2 32-state planes (§5.6.4).
    wide_in: BTreeSet<(&'static str, &'static str, &'static str)>,
    /// A mode-2 32-state plane whose size is not a multiple of 32.
    wide_partial_lanes: bool,
    /// A mode-2 32-state plane with context buckets.
    wide_with_buckets: bool,
}

/// Records what the `Rans` planes of chunk `ch` (stored bytes `stored`, in
/// `table`) exercise.
fn cover_rans(c: &mut Coverage, table: &'static str, ch: &Chunk, stored: &[u8]) {
    let Codec::PerPlane(planes) = &ch.values.codec else {
        return;
    };
    let m = (ch.values.raw_len / planes.len() as u64) as usize;
    let mut at = ch.positions.stored_len as usize;
    let mut prev: Option<PlaneCodec> = None;
    for p in planes {
        let bytes = &stored[at..at + p.stored_len as usize];
        at += p.stored_len as usize;
        if p.codec.is_wide() && bytes[0] == 2 {
            c.wide_in.insert((table, ch.kind.name(), p.codec.name()));
            c.wide_partial_lanes |= !m.is_multiple_of(32);
            c.wide_with_buckets |= bytes[2] > 1;
        }
        if p.codec == PlaneCodec::Rans {
            c.rans_in.insert((table, ch.kind.name()));
            c.rans_modes.insert(bytes[0]);
            if bytes[0] == 2 {
                let (scale, buckets) = (bytes[1], bytes[2]);
                c.rans_scales.insert(scale);
                c.rans_max_buckets = c.rans_max_buckets.max(buckets);
                c.rans_partial_lanes |= !m.is_multiple_of(4);
                c.rans_context.insert(match (prev, buckets > 1) {
                    (None, _) => "plane 0, no context",
                    (Some(_), false) => "plane k > 0 without context buckets",
                    (Some(PlaneCodec::Raw), true) => "context buckets over a Raw plane",
                    (Some(_), true) => "context buckets over a Rans plane",
                });
            }
        }
        prev = Some(p.codec);
    }
}

/// The class of a narrow float's bit pattern, for coverage of §6.2.
fn float_class(d: Dtype, x: u64) -> &'static str {
    let (e_bits, m_bits) = match d {
        Dtype::F16 => (5, 10),
        Dtype::BF16 => (8, 7),
        _ => (8, 23),
    };
    let sign = x >> (e_bits + m_bits) & 1;
    let e = (x >> m_bits) & ((1 << e_bits) - 1);
    let m = x & ((1 << m_bits) - 1);
    match (e, m) {
        (0, 0) if sign == 0 => "+0",
        (0, 0) => "-0",
        (0, _) => "subnormal",
        (e, 0) if e == (1 << e_bits) - 1 => "inf",
        (e, m) if e == (1 << e_bits) - 1 && m >> (m_bits - 1) == 1 => "quiet NaN",
        (e, _) if e == (1 << e_bits) - 1 => "signalling NaN",
        _ => "normal",
    }
}

/// The bytes of inline base `i`, decoded here chunk by chunk with the
/// low-level decoder (a base has no base of its own).
fn inline_base_bytes(a: &Archive<Vec<u8>>, i: usize) -> Vec<u8> {
    let rec: &TensorRecord = &a.index().bases[i];
    if let Some(b) = a.plain_bytes(Table::Base, i).unwrap() {
        return b.to_vec();
    }
    let w = rec.dtype.width();
    let mut out = vec![0u8; rec.byte_len().unwrap() as usize];
    if let Payload::Chunked { chunks, .. } = &rec.payload {
        for (ci, c) in chunks.iter().enumerate() {
            let stored = a.chunk_bytes(Table::Base, i, ci, c).unwrap();
            let lo = c.elem_start as usize * w;
            let hi = lo + c.elem_count as usize * w;
            decode_into(
                c,
                w,
                stored,
                &mut out[lo..hi],
                &mut DecodeScratch::default(),
            )
            .unwrap();
        }
    }
    out
}

fn varint_lengths(raw: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut len = 0;
    for &b in raw {
        len += 1;
        if b & 0x80 == 0 {
            out.push(len);
            len = 0;
        }
    }
    out
}

fn cover(a: &Archive<Vec<u8>>, base_file: Option<&Checkpoint>, c: &mut Coverage) {
    let idx = a.index();
    let minor = a.header().minor;
    c.minors.insert(minor);
    if a.header().flags & tpde_format::format::FLAG_INDEX_ZSTD != 0 {
        c.zstd_index_minors.insert(minor);
    }
    c.multi_file |= idx.files.len() > 1;
    c.extra_file |= !idx.extra_files.is_empty();
    for b in &idx.bases {
        c.base_payloads.insert(match b.payload {
            Payload::Plain { .. } => "plain",
            Payload::Chunked { .. } => "chunked",
        });
        if let Payload::Chunked { chunks, .. } = &b.payload {
            for ch in chunks {
                if ch.op == Op::ReplaceRot && ch.kind != ChunkKind::Zero {
                    c.rot_in.insert(("base", ch.kind.name()));
                }
                if let Codec::PerPlane(planes) = &ch.values.codec {
                    c.per_plane_in.insert(("base", ch.kind.name()));
                    c.plane_codecs.extend(planes.iter().map(|p| p.codec.name()));
                }
            }
        }
    }
    for (bi, b) in idx.bases.iter().enumerate() {
        if let Payload::Chunked { chunks, .. } = &b.payload {
            for (ci, ch) in chunks.iter().enumerate() {
                let stored = a.chunk_bytes(Table::Base, bi, ci, ch).unwrap();
                cover_rans(c, "base", ch, stored);
            }
        }
    }
    let mut inline_users: BTreeMap<u32, usize> = BTreeMap::new();
    let has_base = !idx.bases.is_empty() || !idx.base_files.is_empty();
    for (ti, t) in idx.tensors.iter().enumerate() {
        c.dtypes.insert(t.dtype.name());
        c.target_bases.insert(match t.base {
            BaseRef::None => "none",
            BaseRef::Inline { .. } => "inline",
            BaseRef::External { .. } => "external",
            BaseRef::InlineWidened { .. } => "inline-widened",
            BaseRef::ExternalWidened { .. } => "external-widened",
            BaseRef::InlineRows { .. } => "inline-rows",
            BaseRef::ExternalRows { .. } => "external-rows",
            BaseRef::InlineDequant { .. } => "inline-dequant",
            BaseRef::ExternalDequant { .. } => "external-dequant",
            BaseRef::InlineSlices { .. } => "inline-slices",
            BaseRef::ExternalSlices { .. } => "external-slices",
        });
        c.standalone_in_delta |= has_base && t.base == BaseRef::None;
        // v1.1: which bases, under which names, widened from what.
        let (base_name, mode) = match &t.base {
            BaseRef::Inline { index }
            | BaseRef::InlineWidened { index }
            | BaseRef::InlineRows { index, .. }
            | BaseRef::InlineSlices { index, .. }
            | BaseRef::InlineDequant { q: index, .. } => {
                *inline_users.entry(*index).or_default() += 1;
                let b = &idx.bases[*index as usize];
                let mode = match b.payload {
                    Payload::Plain { .. } => "inline_plain",
                    Payload::Chunked { .. } => "inline",
                };
                (Some(b.name.as_str()), mode)
            }
            BaseRef::External { name, .. }
            | BaseRef::ExternalWidened { name, .. }
            | BaseRef::ExternalRows { name, .. }
            | BaseRef::ExternalSlices { name, .. }
            | BaseRef::ExternalDequant { q_name: name, .. } => (Some(name.as_str()), "external"),
            BaseRef::None => (None, "none"),
        };
        // v1.2 quantized bases (spec §6.4): modes, axes, code dtypes, and the
        // classes of the scales.
        let dequant = match &t.base {
            BaseRef::InlineDequant { q, scale, axis } => Some((
                *axis,
                idx.bases[*q as usize].dtype,
                inline_base_bytes(a, *scale as usize),
            )),
            BaseRef::ExternalDequant {
                q_dtype,
                scale_name,
                axis,
                ..
            } => Some((
                *axis,
                *q_dtype,
                base_file
                    .expect("an external vector names its base file")
                    .base_tensor(scale_name)
                    .expect("the base file holds the scales")
                    .data
                    .to_vec(),
            )),
            _ => None,
        };
        let is_dequant = dequant.is_some();
        if let Some((axis, q_dtype, scales)) = dequant {
            c.dequant_modes.insert(mode);
            c.dequant_axes.insert((axis.name(), q_dtype.name()));
            for x in scales.chunks_exact(4) {
                let bits = u32::from_le_bytes(x.try_into().unwrap());
                c.dequant_scales
                    .insert(float_class(Dtype::F32, u64::from(bits)));
            }
            c.dequant_scalar |= t.shape.is_empty();
        }
        if is_dequant {
            // Codes under another name are not a rename.
        } else if let (true, Some((map, row_elems))) = (t.base.is_v15(), t.base.row_map(&t.shape)) {
            // v1.5 (spec §6.3.4).
            c.slice_modes.insert(mode);
            let base_shape = match &t.base {
                BaseRef::InlineSlices { index, .. } => &idx.bases[*index as usize].shape,
                BaseRef::ExternalSlices { shape, .. } => shape,
                _ => unreachable!("is_v15"),
            };
            let n: u64 = t.shape.iter().product();
            let covered: u64 = map.iter().map(|r| r.count).sum();
            for (has, what) in [
                (covered < n / row_elems, "rows predicted by zero"),
                (
                    map.windows(2).any(|p| p[1].base_start < p[0].base_start),
                    "base rows out of order",
                ),
                (base_shape.len() != t.shape.len(), "a base of another rank"),
                (
                    base_shape.len() == t.shape.len() && *base_shape != t.shape,
                    "a base of the same rank, another shape",
                ),
                (
                    t.shape.len() == 1 && row_elems < n,
                    "a 1-d tensor cut into rows",
                ),
                (row_elems == n, "one row: the whole tensor"),
            ] {
                if has {
                    c.slice_features.insert(what);
                }
            }
        } else if let Some(map) = t.base.rows() {
            // v1.2 (spec §6.3).
            c.row_modes.insert(mode);
            let row_elems: u64 = t.shape[1..].iter().product();
            let ce = match &t.payload {
                Payload::Chunked { chunk_elems, .. } => *chunk_elems,
                Payload::Plain { .. } => u64::MAX,
            };
            let covered: u64 = map.iter().map(|r| r.count).sum();
            for (has, what) in [
                (covered < t.shape[0], "rows predicted by zero"),
                (
                    base_name != Some(t.name.as_str()),
                    "rows of a base of another name",
                ),
                (map.len() > 1, "several runs"),
                (
                    map.len() == 1 && map[0].start == 0 && map[0].base_start == 0,
                    "one prefix run",
                ),
                (t.shape.len() > 2, "a tensor of rank 3"),
                (
                    map.iter()
                        .any(|r| !(r.start * row_elems).is_multiple_of(ce)),
                    "a run starting mid-chunk",
                ),
                (
                    map.iter().any(|r| r.start != r.base_start),
                    "runs shifted against the base",
                ),
            ] {
                if has {
                    c.row_features.insert(what);
                }
            }
        } else if base_name.is_some_and(|n| n != t.name) {
            c.renamed.insert(mode);
        }
        let widened_from = match &t.base {
            BaseRef::InlineWidened { index } => {
                let from = idx.bases[*index as usize].dtype;
                c.widen_pairs
                    .insert((from.name(), t.dtype.name(), "inline"));
                Some((from, inline_base_bytes(a, *index as usize)))
            }
            BaseRef::ExternalWidened { name, dtype, .. } => {
                c.widen_pairs
                    .insert((dtype.name(), t.dtype.name(), "external"));
                let bt = base_file
                    .expect("an external vector names its base file")
                    .base_tensor(name)
                    .expect("the base file holds the tensor");
                Some((*dtype, bt.data.to_vec()))
            }
            _ => None,
        };
        if let Some((from, bytes)) = &widened_from {
            for x in bytes.chunks_exact(from.width()) {
                let mut v = [0u8; 8];
                v[..x.len()].copy_from_slice(x);
                c.widened_specials
                    .insert((from.name(), float_class(*from, u64::from_le_bytes(v))));
            }
        }
        let n = t.elem_count().unwrap();
        c.empty |= n == 0;
        c.scalar |= t.shape.is_empty();
        let Payload::Chunked {
            chunk_elems,
            chunks,
            ..
        } = &t.payload
        else {
            continue;
        };
        c.short_last_chunk |= chunks.len() > 1 && n % chunk_elems != 0;
        for (ci, ch) in chunks.iter().enumerate() {
            c.kinds.insert(ch.kind.name());
            if widened_from.is_some() {
                c.widened_kinds.insert(ch.kind.name());
            }
            if let Codec::PerPlane(planes) = &ch.values.codec {
                c.per_plane_in.insert(("target", ch.kind.name()));
                c.plane_codecs.extend(planes.iter().map(|p| p.codec.name()));
                for (k, p) in planes.iter().enumerate() {
                    if p.codec == PlaneCodec::RansBase {
                        c.rans_base_in.insert((ch.kind.name(), k));
                        c.rans_base_widened |= widened_from.is_some();
                    }
                }
                let stored = a.chunk_bytes(Table::Target, ti, ci, ch).unwrap();
                cover_rans(c, "target", ch, stored);
            }
            c.one_byte_values_in_v11 |= minor >= 1 && t.dtype.width() == 1 && ch.values.raw_len > 0;
            if ch.kind == ChunkKind::Zero {
                continue; // a zero chunk's op means nothing
            }
            c.kind_ops.insert((ch.kind.name(), ch.op.name()));
            if ch.op == Op::ReplaceRot {
                c.rot_in.insert(("target", ch.kind.name()));
                c.rot_over_base |= !matches!(t.base, BaseRef::None);
                c.rot_widths.insert(t.dtype.width());
            }
            c.value_codecs.insert(ch.values.codec.name());
            if ch.kind == ChunkKind::Sparse {
                c.position_codecs.insert(ch.positions.codec.name());
                let stored = a.chunk_bytes(Table::Target, ti, ci, ch).unwrap();
                let mut raw = Vec::new();
                stream::decompress(
                    &ch.positions,
                    &stored[..ch.positions.stored_len as usize],
                    &mut raw,
                )
                .unwrap();
                c.varint_lengths.extend(varint_lengths(&raw));
            }
        }
    }
    c.shared_inline_base |= inline_users.values().any(|&n| n > 1);
}

#[test]
fn vectors_cover_every_dtype_kind_op_and_codec() {
    let mut c = Coverage::default();
    for (_, entry) in manifest() {
        let bytes = std::fs::read(vectors_v1().join(entry["archive"].as_str().unwrap())).unwrap();
        let a = Archive::from_bytes(bytes, tpde_format::ReadLimits::default()).unwrap();
        cover(&a, base_for(&entry).as_ref(), &mut c);
    }
    let all: BTreeSet<&str> = Dtype::ALL.iter().map(|d| d.name()).collect();
    assert_eq!(c.dtypes, all, "dtypes");
    assert_eq!(
        c.kinds,
        ["dense", "sparse", "zero"].into(),
        "chunk kinds: {c:?}"
    );
    let mut want_ops = BTreeSet::new();
    for k in ["dense", "sparse"] {
        for op in ["add", "add-zigzag", "replace", "replace-rot", "xor"] {
            want_ops.insert((k, op));
        }
    }
    assert_eq!(c.kind_ops, want_ops, "kind × op");
    assert_eq!(
        c.value_codecs,
        ["planes", "raw", "zstd"].into(),
        "value codecs"
    );
    assert_eq!(c.position_codecs, ["raw", "zstd"].into(), "position codecs");
    assert_eq!(
        c.target_bases,
        [
            "external",
            "external-dequant",
            "external-rows",
            "external-slices",
            "external-widened",
            "inline",
            "inline-dequant",
            "inline-rows",
            "inline-slices",
            "inline-widened",
            "none"
        ]
        .into(),
        "base refs"
    );
    assert_eq!(
        c.base_payloads,
        ["chunked", "plain"].into(),
        "inline base payloads"
    );
    assert_eq!(c.varint_lengths, [1, 2, 3, 4].into(), "LEB128 gap lengths");
    assert!(c.empty, "an empty tensor");
    assert!(c.scalar, "a 0-d tensor");
    assert!(
        c.short_last_chunk,
        "a shape not divisible by the chunk size"
    );
    assert!(c.multi_file, "a sharded target");
    assert!(c.extra_file, "an extra file (shard index json)");
    assert!(
        c.standalone_in_delta,
        "a target tensor without a base counterpart"
    );

    // v1.1 (spec §5.3, §6.2, §8.2, §11).
    assert_eq!(c.minors, [0, 1, 2, 3, 4, 5, 6, 7].into(), "header minors");
    // (v1.4, spec §6.1) ReplaceRot in dense and sparse target chunks, in
    // inline base chunks, and over a base it ignores.
    assert_eq!(
        c.rot_in,
        [("base", "dense"), ("target", "dense"), ("target", "sparse")].into(),
        "ReplaceRot chunks"
    );
    assert!(
        c.rot_over_base,
        "a ReplaceRot chunk of a tensor with a base"
    );
    // Widths 2 (BF16), 4 (F32) and 8 (F64); the writer never rotates 1-byte
    // elements (spec §11), so width 1 is left to the unit tests.
    assert_eq!(c.rot_widths, [2, 4, 8].into(), "ReplaceRot widths");
    // (v1.3, spec §4.0.6) Compressed indexes, from minor 3 on.
    assert_eq!(c.zstd_index_minors, [3, 4, 5, 6, 7].into(), "zstd indexes");
    assert_eq!(
        c.plane_codecs,
        ["rans", "rans-base", "rans-base32", "rans32", "raw", "zstd"].into(),
        "plane codecs"
    );
    // (v1.6, spec §5.6.4) 32-state planes, both codecs, in dense and sparse
    // target chunks and inline base chunks, with context buckets, and of a
    // size that is not a whole number of 32-symbol blocks.
    for want in [
        ("target", "dense", "rans32"),
        ("target", "dense", "rans-base32"),
        ("target", "sparse", "rans32"),
        ("base", "dense", "rans32"),
    ] {
        assert!(
            c.wide_in.contains(&want),
            "a 32-state plane {want:?}: {:?}",
            c.wide_in
        );
    }
    assert!(c.wide_partial_lanes, "a 32-state plane of a partial block");
    assert!(c.wide_with_buckets, "a 32-state plane with context buckets");
    assert_eq!(
        c.per_plane_in,
        [("base", "dense"), ("target", "dense"), ("target", "sparse")].into(),
        "per-plane values in base and target chunks of each kind"
    );
    assert!(
        c.one_byte_values_in_v11,
        "1-byte values (whole-stream codec) in a v1.1 archive"
    );
    let mut pairs = BTreeSet::new();
    for (from, to) in [
        ("BF16", "F32"),
        ("F16", "F32"),
        ("BF16", "F64"),
        ("F16", "F64"),
        ("F32", "F64"),
    ] {
        for how in ["inline", "external"] {
            pairs.insert((from, to, how));
        }
    }
    assert_eq!(c.widen_pairs, pairs, "widened pairs, inline and external");
    assert_eq!(
        c.widened_kinds,
        ["dense", "sparse", "zero"].into(),
        "chunk kinds over a widened base"
    );
    for d in ["BF16", "F16", "F32"] {
        for class in [
            "+0",
            "-0",
            "subnormal",
            "normal",
            "inf",
            "quiet NaN",
            "signalling NaN",
        ] {
            assert!(
                c.widened_specials.contains(&(d, class)),
                "a {class} {d} in a widened base"
            );
        }
    }
    assert_eq!(
        c.renamed,
        ["external", "inline", "inline_plain"].into(),
        "renamed tensors matched by content, each base mode"
    );
    assert!(c.shared_inline_base, "two targets sharing one inline base");

    // v1.2 row-mapped bases (spec §6.3).
    assert_eq!(
        c.row_modes,
        ["external", "inline", "inline_plain"].into(),
        "row-mapped bases in each base mode"
    );
    assert_eq!(
        c.row_features,
        [
            "a run starting mid-chunk",
            "a tensor of rank 3",
            "one prefix run",
            "rows of a base of another name",
            "rows predicted by zero",
            "runs shifted against the base",
            "several runs",
        ]
        .into(),
        "row maps"
    );

    // v1.5 sliced bases (spec §6.3.4).
    assert_eq!(
        c.slice_modes,
        ["external", "inline"].into(),
        "sliced bases in each base mode"
    );
    assert_eq!(
        c.slice_features,
        [
            "a 1-d tensor cut into rows",
            "a base of another rank",
            "a base of the same rank, another shape",
            "base rows out of order",
            "one row: the whole tensor",
            "rows predicted by zero",
        ]
        .into(),
        "sliced maps"
    );

    // v1.2 quantized bases (spec §6.4).
    assert_eq!(
        c.dequant_modes,
        ["external", "inline", "inline_plain"].into(),
        "quantized bases in each base mode"
    );
    for axis in ["tensor", "rows", "columns"] {
        assert!(
            c.dequant_axes.iter().any(|(a, _)| *a == axis),
            "scale axis {axis}: {:?}",
            c.dequant_axes
        );
    }
    for d in ["I8", "U8"] {
        assert!(c.dequant_axes.iter().any(|(_, q)| *q == d), "{d} codes");
    }
    for class in [
        "+0",
        "-0",
        "subnormal",
        "normal",
        "inf",
        "quiet NaN",
        "signalling NaN",
    ] {
        assert!(c.dequant_scales.contains(class), "a {class} scale");
    }
    assert!(c.dequant_scalar, "a 0-d tensor with a quantized base");

    // v1.2 base-context planes (spec §5.7).
    for want in [("dense", 0), ("dense", 1), ("sparse", 0)] {
        assert!(
            c.rans_base_in.contains(&want),
            "a RansBase plane {want:?}: {:?}",
            c.rans_base_in
        );
    }
    assert!(c.rans_base_widened, "a RansBase plane over a widened base");

    // rANS planes (spec §5.6).
    assert_eq!(
        c.rans_modes,
        [0, 1, 2].into(),
        "rANS modes raw, constant, rANS"
    );
    assert_eq!(
        c.rans_in,
        [("base", "dense"), ("target", "dense"), ("target", "sparse")].into(),
        "rANS planes in base and target chunks of each kind"
    );
    assert_eq!(
        c.rans_context,
        [
            "context buckets over a Raw plane",
            "context buckets over a Rans plane",
            "plane 0, no context",
            "plane k > 0 without context buckets",
        ]
        .into(),
        "rANS planes with and without a context"
    );
    assert!(
        c.rans_scales.contains(&8) && c.rans_scales.contains(&15),
        "rANS scales at both ends of 8..=15: {:?}",
        c.rans_scales
    );
    assert_eq!(
        c.rans_max_buckets, 16,
        "a rANS plane with 16 context buckets"
    );
    assert!(
        c.rans_partial_lanes,
        "a rANS plane whose size is not a multiple of 4"
    );
}

/// The `with_max_minor(0)` vector holds the same tensors as a v1.1 vector
/// but is a v1.0 archive: no per-plane stream, no widened base.
/// (v1.7) Spec §4.6.3: a `ChunkedDigests` payload records, per chunk, the
/// SHA-256 of the chunk's reconstructed bytes (`elem_count × width` bytes
/// of the tensor from `elem_start × width`); the reference writer gives
/// them to every target of several chunks, and to no other tensor.
#[test]
fn chunk_digests_are_the_sha256_of_each_chunks_bytes() {
    let (mut digested, mut short_last, mut beside_undigested) = (0, false, false);
    for (name, entry) in manifest() {
        let a = Archive::open(vectors_v1().join(entry["archive"].as_str().unwrap())).unwrap();
        let base = base_for(&entry);
        let provider: &dyn BaseProvider = match &base {
            Some(b) => b,
            None => &NoBase,
        };
        let v17 = a.header().minor >= 7;
        assert!(
            a.index()
                .bases
                .iter()
                .all(|b| !b.payload.has_chunk_digests()),
            "{name}"
        );
        let mut undigested = false;
        for t in &a.index().tensors {
            let Payload::Chunked {
                chunks,
                chunk_sha256,
                ..
            } = &t.payload
            else {
                continue;
            };
            assert_eq!(
                chunk_sha256.is_some(),
                v17 && chunks.len() > 1,
                "{name}/{}",
                t.name
            );
            let Some(digests) = chunk_sha256 else {
                undigested = true;
                continue;
            };
            let bytes = a.decode_tensor(&t.name, provider).unwrap();
            let w = t.dtype.width() as u64;
            for (i, (c, d)) in chunks.iter().zip(digests).enumerate() {
                let range =
                    (c.elem_start * w) as usize..((c.elem_start + c.elem_count) * w) as usize;
                let actual: [u8; 32] = Sha256::digest(&bytes[range]).into();
                assert_eq!(&actual, d, "{name}/{} chunk {i}", t.name);
            }
            digested += 1;
            short_last |= chunks
                .last()
                .is_some_and(|c| c.elem_count < chunks[0].elem_count);
        }
        beside_undigested |= digested > 0 && undigested;
    }
    assert!(digested >= 4, "{digested} tensors with chunk digests");
    assert!(short_last, "a digested tensor with a short last chunk");
    assert!(
        beside_undigested,
        "an index with Chunked and ChunkedDigests payloads"
    );
}

#[test]
fn max_minor_0_vector_is_a_v10_archive_of_a_v11_vectors_inputs() {
    let m = manifest();
    let low: Vec<&Value> = m
        .values()
        .filter(|e| e["max_minor"].as_u64() == Some(0))
        .collect();
    assert!(!low.is_empty(), "no vector written with with_max_minor(0)");
    for e in low {
        let a = Archive::open(vectors_v1().join(e["archive"].as_str().unwrap())).unwrap();
        assert_eq!(a.header().minor, 0);
        assert_eq!(a.index().min_minor(), 0);
        let twin = m
            .values()
            .find(|o| {
                o["tensors"] == e["tensors"]
                    && o["base_mode"] == e["base_mode"]
                    && o["format_version"] == "1.1"
            })
            .expect("a v1.1 vector of the same inputs and base mode");
        let b = Archive::open(vectors_v1().join(twin["archive"].as_str().unwrap())).unwrap();
        assert_eq!(b.header().minor, 1);
        assert!(b.index().min_minor() == 1);
    }
}

/// The widening examples of spec §6.2.3 are what the reference
/// implementation computes.
#[test]
fn spec_widening_table_matches_the_reference_widening() {
    let spec = std::fs::read_to_string(repo_root().join("spec/FORMAT.md")).unwrap();
    let marker = "<!-- widening examples -->";
    let at = spec
        .find(marker)
        .unwrap_or_else(|| panic!("spec/FORMAT.md lacks {marker}"));
    let mut rows = 0;
    let mut pairs = BTreeSet::new();
    for line in spec[at + marker.len()..]
        .lines()
        .skip_while(|l| l.trim().is_empty())
    {
        if !line.starts_with('|') {
            break;
        }
        // | from | bits | to | bits | meaning |
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(from), Some(to)) = (Dtype::from_name(cells[1]), Dtype::from_name(cells[3]))
        else {
            continue; // header and rule rows
        };
        let parse = |c: &str| {
            u64::from_str_radix(
                c.trim_matches('`')
                    .trim_start_matches("0x")
                    .replace('_', "")
                    .as_str(),
                16,
            )
            .unwrap()
        };
        let (x, want) = (parse(cells[2]), parse(cells[4]));
        let mut out = vec![0u8; to.width()];
        widen::widen(from, to, &x.to_le_bytes()[..from.width()], &mut out);
        let mut got = [0u8; 8];
        got[..to.width()].copy_from_slice(&out);
        assert_eq!(u64::from_le_bytes(got), want, "spec §6.2.3 row {line:?}");
        pairs.insert((from.name(), to.name()));
        rows += 1;
    }
    assert!(rows >= 20, "only {rows} widening examples");
    assert_eq!(pairs.len(), 5, "every allowed pair has examples: {pairs:?}");
}

/// Appendices A and B of spec/FORMAT.md dump `minimal.tpde` and
/// `v11_minimal.tpde`; each dump must be the file.
#[test]
fn spec_appendix_hex_dumps_are_the_minimal_vectors() {
    for file in ["minimal.tpde", "v11_minimal.tpde"] {
        check_hex_dump(file);
    }
}

fn check_hex_dump(file: &str) {
    let spec = std::fs::read_to_string(repo_root().join("spec/FORMAT.md")).unwrap();
    let marker = format!("<!-- hexdump: tests/vectors/v1/{file} -->");
    let at = spec
        .find(&marker)
        .unwrap_or_else(|| panic!("spec/FORMAT.md lacks {marker}"));
    let block = &spec[at + marker.len()..];
    let block = &block[block.find("```").unwrap() + 3..];
    let block = &block[block.find('\n').unwrap() + 1..];
    let block = &block[..block.find("```").unwrap()];
    let mut bytes = Vec::new();
    for line in block.lines() {
        // "00000040  01 02 ... |ascii|": offset, then up to 16 hex bytes.
        let mut parts = line.split_whitespace();
        let Some(off) = parts.next() else { continue };
        let off = usize::from_str_radix(off, 16).unwrap();
        assert_eq!(off, bytes.len(), "offset column of line {line:?}");
        for p in parts.take(16) {
            if p.starts_with('|') {
                break;
            }
            bytes.push(u8::from_str_radix(p, 16).unwrap());
        }
    }
    let data = std::fs::read(vectors_v1().join(file)).unwrap();
    assert_eq!(bytes, data, "the spec's hex dump differs from {file}");
}
