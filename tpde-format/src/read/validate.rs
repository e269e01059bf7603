//! Index validation (spec §3, §4, §7): every rule checked before any length
//! from the file is trusted for slicing or allocation.

use std::collections::HashSet;

use crate::codec::widen::can_widen;
use crate::codec::{dequant, rows};
use crate::error::{Error, Location, Result};
use crate::format::{
    align_up, BaseRef, Chunk, ChunkKind, Codec, Dtype, Header, Index, Op, Payload, PlaneCodec,
    Stream, TensorRecord, HEADER_LEN,
};
use crate::limits::ReadLimits;

/// Largest element count of one chunk: positions are `u32` (spec §5.5).
pub const MAX_CHUNK_ELEMS: u64 = 1 << 32;

fn bad(location: Location, reason: &'static str) -> Error {
    Error::InvalidIndex { location, reason }
}

/// True when `name` is a single, plain path component: not empty, not `.` or
/// `..`, no `/`, `\`, NUL or other control characters (spec §4.3). Archive
/// file names become paths under the user's output directory, so this is
/// what keeps unpack from writing anywhere else.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
        && !(name.len() >= 2 && name.as_bytes()[1] == b':') // Windows drive prefix
}

/// Validates `index` for a file of `file_len` bytes whose header is `header`.
pub fn validate(data: &[u8], header: &Header, index: &Index, limits: &ReadLimits) -> Result<()> {
    let total = (index.tensors.len() as u64).saturating_add(index.bases.len() as u64);
    if total > limits.max_tensors {
        return Err(Error::LimitExceeded {
            what: "max_tensors",
            value: total,
            limit: limits.max_tensors,
        });
    }

    // Names (spec §4.3, §4.4).
    let mut names = HashSet::with_capacity(index.tensors.len());
    for t in &index.tensors {
        if !names.insert(t.name.as_str()) {
            return Err(bad(tensor_loc(t, false), "duplicate tensor name"));
        }
    }
    let mut base_names = HashSet::with_capacity(index.bases.len());
    for t in &index.bases {
        if !base_names.insert(t.name.as_str()) {
            return Err(bad(tensor_loc(t, true), "duplicate base tensor name"));
        }
    }
    let mut file_names = HashSet::new();
    for name in index
        .files
        .iter()
        .map(|f| &f.name)
        .chain(index.extra_files.iter().map(|f| &f.name))
    {
        if !is_safe_file_name(name) {
            return Err(bad(
                Location::File { name: name.clone() },
                "file name is not a single plain path component",
            ));
        }
        if !file_names.insert(name.as_str()) {
            return Err(bad(
                Location::File { name: name.clone() },
                "duplicate file name",
            ));
        }
    }

    // Tensors (spec §4.4–§4.6, §5.1).
    for t in &index.bases {
        if t.base != BaseRef::None {
            return Err(bad(
                tensor_loc(t, true),
                "an inline base must not itself have a base",
            ));
        }
        check_tensor(t, true, limits)?;
    }
    let mut total_out: u64 = 0;
    for t in &index.tensors {
        let bytes = check_tensor(t, false, limits)?;
        total_out = total_out.saturating_add(bytes);
        match &t.base {
            BaseRef::None => {}
            BaseRef::Inline { index: i } | BaseRef::InlineWidened { index: i } => {
                let Some(b) = index.bases.get(*i as usize) else {
                    return Err(bad(tensor_loc(t, false), "inline base index out of range"));
                };
                let dtype_ok = match t.base {
                    BaseRef::Inline { .. } => b.dtype == t.dtype,
                    _ => can_widen(b.dtype, t.dtype),
                };
                if !dtype_ok || b.shape != t.shape {
                    return Err(bad(
                        tensor_loc(t, false),
                        "inline base dtype or shape does not fit the tensor (spec §4.5)",
                    ));
                }
                check_base_chunks(t, b)?;
            }
            BaseRef::InlineRows { index: i, rows } => {
                let Some(b) = index.bases.get(*i as usize) else {
                    return Err(bad(tensor_loc(t, false), "inline base index out of range"));
                };
                if b.dtype != t.dtype {
                    return Err(bad(
                        tensor_loc(t, false),
                        "row-mapped base dtype differs from the tensor's (spec §6.3)",
                    ));
                }
                check_rows(t, &b.shape, rows)?;
                check_base_chunks(t, b)?;
                // A run can take a single row from each of many base chunks,
                // and a reader decodes each of those chunks whole: the base
                // bytes decoded are bounded by the runs, not by this tensor's
                // size. They are charged to the output budget, so a small
                // index cannot make the reader decode without bound.
                let row_elems = rows::row_bytes(&t.shape, 1).unwrap_or(0);
                total_out = total_out.saturating_add(rows_base_work(t, b, rows, row_elems));
            }
            BaseRef::InlineSlices {
                index: i,
                row_elems,
                rows,
            } => {
                let Some(b) = index.bases.get(*i as usize) else {
                    return Err(bad(tensor_loc(t, false), "inline base index out of range"));
                };
                if b.dtype != t.dtype {
                    return Err(bad(
                        tensor_loc(t, false),
                        "sliced base dtype differs from the tensor's (spec §6.3.4)",
                    ));
                }
                // Both element counts fit: their byte lengths passed the
                // tensor checks above.
                check_slices(t, element_count(&b.shape), *row_elems, rows)?;
                check_base_chunks(t, b)?;
                // Charged like a row-mapped base's runs (spec §6.3.4).
                total_out = total_out.saturating_add(rows_base_work(t, b, rows, *row_elems));
            }
            BaseRef::InlineDequant { q, scale, axis } => {
                let (Some(qb), Some(sb)) = (
                    index.bases.get(*q as usize),
                    index.bases.get(*scale as usize),
                ) else {
                    return Err(bad(tensor_loc(t, false), "inline base index out of range"));
                };
                dequant::check(
                    (t.dtype, &t.shape),
                    (qb.dtype, &qb.shape),
                    (sb.dtype, &sb.shape),
                    *axis,
                )
                .map_err(|reason| bad(tensor_loc(t, false), reason))?;
                // Each target chunk reads the codes under it and the scales
                // its elements use (at most one chunk's worth, or one row's).
                check_base_chunks(t, qb)?;
                check_base_chunks(t, sb)?;
            }
            BaseRef::ExternalDequant {
                file,
                q_dtype,
                scale_shape,
                axis,
                ..
            } => {
                if *file as usize >= index.base_files.len() {
                    return Err(bad(
                        tensor_loc(t, false),
                        "external base file index out of range",
                    ));
                }
                // Bounded like any tensor: the count is checked against the
                // axis next, but a huge shape must not overflow first.
                let scale_bytes = scale_shape.iter().try_fold(4u64, |a, &d| a.checked_mul(d));
                if scale_bytes.is_none_or(|b| b > limits.max_tensor_bytes) {
                    return Err(Error::LimitExceeded {
                        what: "max_tensor_bytes",
                        value: scale_bytes.unwrap_or(u64::MAX),
                        limit: limits.max_tensor_bytes,
                    });
                }
                dequant::check(
                    (t.dtype, &t.shape),
                    (*q_dtype, &t.shape),
                    (Dtype::F32, scale_shape),
                    *axis,
                )
                .map_err(|reason| bad(tensor_loc(t, false), reason))?;
            }
            BaseRef::ExternalRows {
                file, shape, rows, ..
            }
            | BaseRef::ExternalSlices {
                file, shape, rows, ..
            } => {
                if *file as usize >= index.base_files.len() {
                    return Err(bad(
                        tensor_loc(t, false),
                        "external base file index out of range",
                    ));
                }
                let base_bytes = shape
                    .iter()
                    .try_fold(1u64, |a, &d| a.checked_mul(d))
                    .and_then(|n| n.checked_mul(t.dtype.width() as u64));
                match base_bytes {
                    None => return Err(bad(tensor_loc(t, false), "base element count overflows")),
                    Some(b) if b > limits.max_tensor_bytes => {
                        return Err(Error::LimitExceeded {
                            what: "max_tensor_bytes",
                            value: b,
                            limit: limits.max_tensor_bytes,
                        })
                    }
                    // The supplied base is hashed whole for this tensor,
                    // whatever the tensor's own size: charge it to the
                    // output budget.
                    Some(b) => total_out = total_out.saturating_add(b),
                }
                match &t.base {
                    BaseRef::ExternalSlices { row_elems, .. } => {
                        check_slices(t, element_count(shape), *row_elems, rows)?
                    }
                    _ => check_rows(t, shape, rows)?,
                }
            }
            BaseRef::External { file, .. } | BaseRef::ExternalWidened { file, .. } => {
                if *file as usize >= index.base_files.len() {
                    return Err(bad(
                        tensor_loc(t, false),
                        "external base file index out of range",
                    ));
                }
                if let BaseRef::ExternalWidened { dtype, .. } = &t.base {
                    if !can_widen(*dtype, t.dtype) {
                        return Err(bad(
                            tensor_loc(t, false),
                            "external base dtype cannot be widened to the tensor's (spec §6.2)",
                        ));
                    }
                }
            }
        }
        if matches!(t.payload, Payload::Plain { .. }) && t.base != BaseRef::None {
            return Err(bad(
                tensor_loc(t, false),
                "a plain payload cannot have a base",
            ));
        }
    }
    if total_out > limits.max_total_output {
        return Err(Error::LimitExceeded {
            what: "max_total_output",
            value: total_out,
            limit: limits.max_total_output,
        });
    }
    check_minor_features(header, index)?;

    // Files (spec §4.2): every tensor in exactly one file; sizes add up.
    let mut owner = vec![false; index.tensors.len()];
    for f in &index.files {
        let loc = || Location::File {
            name: f.name.clone(),
        };
        let mut size = 8u64.checked_add(f.header.len() as u64);
        for &ti in &f.tensors {
            let Some(slot) = owner.get_mut(ti as usize) else {
                return Err(bad(loc(), "tensor index out of range"));
            };
            if std::mem::replace(slot, true) {
                return Err(bad(loc(), "tensor listed in more than one file"));
            }
            let len = index.tensors[ti as usize].byte_len();
            size = size.zip(len).and_then(|(a, b)| a.checked_add(b));
        }
        if size != Some(f.size) {
            return Err(bad(
                loc(),
                "file size differs from header plus tensor bytes",
            ));
        }
    }
    if let Some(i) = owner.iter().position(|o| !o) {
        return Err(bad(
            tensor_loc(&index.tensors[i], false),
            "tensor belongs to no file",
        ));
    }

    check_layout(data, header, index)
}

/// Each target chunk decodes the base chunks under its range. A base chunk
/// larger than the target's would be decoded once per target chunk it
/// overlaps: work unbounded by the output (a small file could spin the
/// reader for hours). With base chunks no larger, each target chunk touches
/// at most ceil(target/base) + 1 of them.
fn check_base_chunks(t: &TensorRecord, b: &TensorRecord) -> Result<()> {
    if let (
        Payload::Chunked {
            chunk_elems: base_ce,
            ..
        },
        Payload::Chunked {
            chunk_elems: ce, ..
        },
    ) = (&b.payload, &t.payload)
    {
        if base_ce > ce {
            return Err(bad(
                tensor_loc(t, false),
                "inline base has larger chunks than the tensor",
            ));
        }
    }
    Ok(())
}

/// Base bytes a reader decodes for the row map `map` of target `t` over
/// the inline base `b` (spec §6.3.1): every base chunk a run touches, once
/// per run, plus one boundary chunk per target chunk; the whole base when
/// it is stored plain (it is read, not decoded, but counted all the same).
fn rows_base_work(
    t: &TensorRecord,
    b: &TensorRecord,
    map: &[crate::format::RowRun],
    row_elems: u64,
) -> u64 {
    let w = t.dtype.width() as u64;
    let Payload::Chunked {
        chunk_elems: bce, ..
    } = &b.payload
    else {
        return b.byte_len().unwrap_or(u64::MAX);
    };
    let target_chunks = match &t.payload {
        Payload::Chunked { chunks, .. } => chunks.len() as u64,
        Payload::Plain { .. } => 1,
    };
    // Validated: runs lie within the base, whose byte length fits in u64.
    let touched = map
        .iter()
        .filter(|r| r.count > 0 && row_elems > 0)
        .map(|r| {
            let lo = r.base_start * row_elems;
            let hi = (r.base_start + r.count) * row_elems;
            (hi - 1) / bce - lo / bce + 1
        })
        .fold(target_chunks, u64::saturating_add);
    touched.saturating_mul(bce.saturating_mul(w))
}

/// (v1.5) The row map of a sliced base (spec §6.3.4), see [`rows::check_slices`].
fn check_slices(
    t: &TensorRecord,
    base_elems: Option<u64>,
    row_elems: u64,
    map: &[crate::format::RowRun],
) -> Result<()> {
    let (Some(n), Some(m)) = (element_count(&t.shape), base_elems) else {
        return Err(bad(tensor_loc(t, false), "element count overflows"));
    };
    rows::check_slices(n, m, row_elems, map).map_err(|reason| bad(tensor_loc(t, false), reason))
}

/// Elements of a tensor of `shape` (`None` on overflow).
fn element_count(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
}

/// The row map of a row-mapped base (spec §6.3), see [`rows::check`].
fn check_rows(t: &TensorRecord, base_shape: &[u64], map: &[crate::format::RowRun]) -> Result<()> {
    rows::check(&t.shape, base_shape, map).map_err(|reason| bad(tensor_loc(t, false), reason))
}

/// The first chunk (inline bases first, then targets, each in index order)
/// for which `pred` holds.
fn first_chunk(index: &Index, pred: impl Fn(&Chunk) -> bool) -> Option<Location> {
    [(&index.bases, true), (&index.tensors, false)]
        .into_iter()
        .flat_map(|(table, base)| table.iter().map(move |t| (t, base)))
        .find_map(|(t, base)| match &t.payload {
            Payload::Chunked { chunks, .. } => {
                chunks.iter().position(&pred).map(|i| Location::Chunk {
                    tensor: t.name.clone(),
                    base,
                    chunk: i as u64,
                })
            }
            Payload::Plain { .. } => None,
        })
}

/// A file uses only variants its minor defines (spec §8.2): a v1.0 reader
/// refuses a minor-0 file holding a v1.1 variant, so a newer reader refuses
/// it too, and whether a file is valid never depends on the reader's version
/// (it also catches writers that record too low a minor).
fn check_minor_features(header: &Header, index: &Index) -> Result<()> {
    if header.minor < 7 {
        let tables = [(&index.bases, true), (&index.tensors, false)];
        for (table, base) in tables {
            if let Some(t) = table.iter().find(|t| t.payload.has_chunk_digests()) {
                return Err(bad(
                    tensor_loc(t, base),
                    "chunk digests (v1.7) in a file whose header says minor 6 or lower (spec §8.2)",
                ));
            }
        }
    }
    if header.minor < 6 {
        if let Some(at) = first_chunk(index, |c| c.values.uses_wide_rans()) {
            return Err(bad(
                at,
                "32-state rANS plane (v1.6) in a file whose header says minor 5 or lower (spec §8.2)",
            ));
        }
    }
    if header.minor < 5 {
        if let Some(t) = index.tensors.iter().find(|t| t.base.is_v15()) {
            return Err(bad(
                tensor_loc(t, false),
                "sliced base (v1.5) in a file whose header says minor 4 or lower (spec §8.2)",
            ));
        }
    }
    if header.minor < 4 {
        if let Some(at) = first_chunk(index, |c| c.op.is_rotated()) {
            return Err(bad(
                at,
                "op ReplaceRot (v1.4) in a file whose header says minor 3 or lower (spec §8.2)",
            ));
        }
    }
    if header.minor < 2 {
        if let Some(t) = index.tensors.iter().find(|t| t.base.is_v12()) {
            return Err(bad(
                tensor_loc(t, false),
                "row-mapped or quantized base (v1.2) in a file whose header says minor 0 or 1 (spec §8.2)",
            ));
        }
        if let Some(at) = first_chunk(index, |c| c.values.uses_base_context()) {
            return Err(bad(
                at,
                "rANS plane with the base as context (v1.2) in a file whose header says minor 0 or 1 (spec §8.2)",
            ));
        }
    }
    if header.minor >= 1 {
        return Ok(());
    }
    for (table, base) in [(&index.bases, true), (&index.tensors, false)] {
        for t in table {
            if matches!(
                t.base,
                BaseRef::InlineWidened { .. } | BaseRef::ExternalWidened { .. }
            ) {
                return Err(bad(
                    tensor_loc(t, base),
                    "widened base (v1.1) in a file whose header says minor 0 (spec §8.2)",
                ));
            }
            if let Payload::Chunked { chunks, .. } = &t.payload {
                let per_plane = |s: &Stream| matches!(s.codec, Codec::PerPlane(_));
                if let Some(i) = chunks.iter().position(|c| {
                    per_plane(&c.positions) || per_plane(&c.values) || c.op == Op::AddZigzag
                }) {
                    return Err(bad(
                        Location::Chunk {
                            tensor: t.name.clone(),
                            base,
                            chunk: i as u64,
                        },
                        "per-plane stream or zigzag op (v1.1) in a file whose header says minor 0 (spec §8.2)",
                    ));
                }
            }
        }
    }
    Ok(())
}

fn tensor_loc(t: &TensorRecord, base: bool) -> Location {
    Location::Tensor {
        name: t.name.clone(),
        base,
    }
}

/// Checks one tensor record; returns its byte length.
fn check_tensor(t: &TensorRecord, base: bool, limits: &ReadLimits) -> Result<u64> {
    let loc = || tensor_loc(t, base);
    let (Some(n), Some(bytes)) = (t.elem_count(), t.byte_len()) else {
        return Err(bad(loc(), "element count overflows"));
    };
    if bytes > limits.max_tensor_bytes {
        return Err(Error::LimitExceeded {
            what: "max_tensor_bytes",
            value: bytes,
            limit: limits.max_tensor_bytes,
        });
    }
    let w = t.dtype.width() as u64;
    match &t.payload {
        Payload::Plain { offset, len, .. } => {
            if *len != bytes {
                return Err(bad(
                    loc(),
                    "plain payload length differs from the tensor size",
                ));
            }
            if *len == 0 && *offset != 0 {
                return Err(bad(loc(), "empty plain payload must have offset 0"));
            }
        }
        Payload::Chunked {
            chunk_elems,
            chunks,
            chunk_sha256,
        } => {
            // (v1.7) Chunk digests prove a target's reconstruction; an
            // inline base is proven through its targets' (spec §4.6.3).
            if let Some(d) = chunk_sha256 {
                if base {
                    return Err(bad(loc(), "an inline base cannot have chunk digests"));
                }
                if d.len() != chunks.len() {
                    return Err(bad(
                        loc(),
                        "chunk digest count differs from the chunk count",
                    ));
                }
            }
            let ce = *chunk_elems;
            if ce == 0 || ce > MAX_CHUNK_ELEMS {
                return Err(bad(loc(), "chunk_elems must be in 1..=2^32"));
            }
            let raw = ce.saturating_mul(w);
            if raw > limits.max_chunk_raw_bytes {
                return Err(Error::LimitExceeded {
                    what: "max_chunk_raw_bytes",
                    value: raw,
                    limit: limits.max_chunk_raw_bytes,
                });
            }
            if chunks.len() as u64 != n.div_ceil(ce) {
                return Err(bad(
                    loc(),
                    "chunk count differs from ceil(elements / chunk_elems)",
                ));
            }
            for (i, c) in chunks.iter().enumerate() {
                let cl = || Location::Chunk {
                    tensor: t.name.clone(),
                    base,
                    chunk: i as u64,
                };
                let start = i as u64 * ce;
                if c.elem_start != start || c.elem_count != ce.min(n - start) {
                    return Err(bad(cl(), "element range is not the chunk's slot"));
                }
                if c.positions.stored_len.checked_add(c.values.stored_len) != Some(c.stored_len) {
                    return Err(bad(
                        cl(),
                        "stored length differs from the sum of its streams",
                    ));
                }
                if c.stored_len == 0 && c.offset != 0 {
                    return Err(bad(cl(), "empty chunk must have offset 0"));
                }
                check_stream(&c.positions, None).map_err(|r| bad(cl(), r))?;
                check_stream(&c.values, Some(w)).map_err(|r| bad(cl(), r))?;
                match c.kind {
                    ChunkKind::Zero => {
                        if c.stored_len != 0 || c.changed != 0 {
                            return Err(bad(cl(), "zero chunk must store nothing"));
                        }
                    }
                    ChunkKind::Dense => {
                        if c.positions != Stream::EMPTY {
                            return Err(bad(cl(), "dense chunk has a positions stream"));
                        }
                        if c.values.raw_len != c.elem_count * w {
                            return Err(bad(
                                cl(),
                                "dense values length differs from elements × width",
                            ));
                        }
                        if c.changed > c.elem_count {
                            return Err(bad(cl(), "more changed elements than elements"));
                        }
                    }
                    ChunkKind::Sparse => {
                        if c.changed == 0 || c.changed > c.elem_count {
                            return Err(bad(cl(), "sparse chunk needs 1..=elements positions"));
                        }
                        if c.values.raw_len != c.changed * w {
                            return Err(bad(
                                cl(),
                                "sparse values length differs from positions × width",
                            ));
                        }
                        if c.positions.raw_len < c.changed || c.positions.raw_len > c.changed * 5 {
                            return Err(bad(
                                cl(),
                                "positions length impossible for the position count",
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(bytes)
}

/// Checks a stream's lengths against its codec (spec §5.3). Per-plane
/// storage is only for values streams, with one plane per element byte.
fn check_stream(s: &Stream, values_width: Option<u64>) -> std::result::Result<(), &'static str> {
    match &s.codec {
        Codec::Raw if s.stored_len != s.raw_len => Err("raw stream stored and raw lengths differ"),
        Codec::Zstd if s.stored_len == 0 || s.raw_len == 0 => Err("empty zstd stream"),
        Codec::PerPlane(planes) => {
            let Some(w) = values_width.filter(|&w| w > 1) else {
                return Err("per-plane codec on a positions stream or 1-byte values");
            };
            if planes.len() as u64 != w || s.raw_len == 0 || s.raw_len % w != 0 {
                return Err("per-plane stream needs one plane per element byte");
            }
            let plane_len = s.raw_len / w;
            let mut sum: u64 = 0;
            for p in planes {
                match p.codec {
                    PlaneCodec::Raw if p.stored_len != plane_len => {
                        return Err("raw plane length differs from the plane size")
                    }
                    PlaneCodec::Zstd if p.stored_len == 0 => return Err("empty zstd plane"),
                    PlaneCodec::Rans
                    | PlaneCodec::RansBase
                    | PlaneCodec::Rans32
                    | PlaneCodec::RansBase32
                        if p.stored_len == 0 =>
                    {
                        return Err("empty rans plane")
                    }
                    _ => {}
                }
                sum = sum
                    .checked_add(p.stored_len)
                    .ok_or("plane lengths overflow")?;
            }
            if sum != s.stored_len {
                return Err("plane lengths do not add up to the stream's stored length");
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Every byte accounted for (spec §3): blobs aligned, in one contiguous run
/// after the header, zero padding between them, the index right after.
fn check_layout(data: &[u8], header: &Header, index: &Index) -> Result<()> {
    let mut blobs: Vec<(u64, u64)> = Vec::new();
    for t in index.bases.iter().chain(&index.tensors) {
        match &t.payload {
            Payload::Plain { offset, len, .. } if *len > 0 => blobs.push((*offset, *len)),
            Payload::Plain { .. } => {}
            Payload::Chunked { chunks, .. } => blobs.extend(
                chunks
                    .iter()
                    .filter(|c| c.stored_len > 0)
                    .map(|c| (c.offset, c.stored_len)),
            ),
        }
    }
    blobs.sort_unstable();
    let mut cursor = HEADER_LEN as u64;
    for (offset, len) in blobs {
        check_padding(data, cursor, offset)?;
        cursor = offset.checked_add(len).ok_or(Error::BadLayout {
            offset,
            reason: "blob end overflows",
        })?;
        if cursor > header.index_offset {
            return Err(Error::BadLayout {
                offset,
                reason: "blob runs into the index",
            });
        }
    }
    check_padding(data, cursor, header.index_offset)
}

/// The next blob (or the index) at `next` must start at `align_up(cursor)`
/// with zero bytes in between.
fn check_padding(data: &[u8], cursor: u64, next: u64) -> Result<()> {
    if next < cursor {
        return Err(Error::BadLayout {
            offset: next,
            reason: "blob overlaps the previous blob or the header",
        });
    }
    if Some(next) != align_up(cursor) {
        return Err(Error::BadLayout {
            offset: cursor,
            reason: "gap between blobs: the next blob is not at the next 64-byte boundary",
        });
    }
    let pad = data
        .get(cursor as usize..next as usize)
        .ok_or(Error::BadLayout {
            offset: cursor,
            reason: "blob past the end of the file",
        })?;
    if pad.iter().any(|&b| b != 0) {
        return Err(Error::BadLayout {
            offset: cursor,
            reason: "padding bytes are not zero",
        });
    }
    Ok(())
}
