//! Packing a safetensors checkpoint (against an optional base) into an archive.

use std::io::Read;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::format::{BaseFile, Digest, FileRecord};
use std::collections::HashMap;

use crate::codec::widen::can_widen;
use crate::digest::FileDigest;
use crate::format::{Dtype, ScaleAxis};
use crate::safetensors::{Checkpoint, SourceFile, SourceTensor};
use crate::write::{ArchiveWriter, BaseInput, ByteSource, WriteOptions};

mod row_match;

/// How the base is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaseMode {
    /// Embed the base tensors the target needs, compressed.
    #[default]
    Inline,
    /// Embed them uncompressed and aligned, for zero-copy mapping.
    InlinePlain,
    /// Do not embed; record digests. Reading needs the base file(s).
    External,
}

/// Options for [`pack`].
#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// Writer options (level, chunk size, overwrite).
    pub write: WriteOptions,
    /// How the base is kept.
    pub base_mode: BaseMode,
}

/// What [`pack`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackReport {
    /// Archive size in bytes.
    pub archive_bytes: u64,
    /// Size of the target checkpoint's files.
    pub target_bytes: u64,
    /// Target tensors.
    pub tensors: usize,
    /// Target tensors stored as a delta against a base tensor.
    pub delta_tensors: usize,
    /// Of those, tensors stored against rows of a base tensor of another
    /// row count (spec §6.3).
    pub row_mapped_tensors: usize,
    /// Of those, F32 tensors stored against quantized codes and scales
    /// (spec §6.4).
    pub quantized_tensors: usize,
    /// Of those, tensors stored against slices of a base tensor of another
    /// shape, or its rows in another order (spec §6.3.4).
    pub sliced_tensors: usize,
}

/// Packs `target` against `base` into `out`. `progress` is called with the
/// number of target bytes consumed as the work advances.
pub fn pack(
    target: &Checkpoint,
    base: Option<&Checkpoint>,
    out: &Path,
    opts: &PackOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<PackReport> {
    let mut w = ArchiveWriter::create(
        out,
        opts.write
            .clone()
            .with_plain_bases(opts.base_mode == BaseMode::InlinePlain),
    )?;
    let mut report = PackReport {
        target_bytes: target.total_bytes(),
        ..PackReport::default()
    };
    // External base: record each base file's digest for messages.
    let mut base_file_ids = Vec::new();
    // The digests of its tensors come from the same pass over each file.
    let mut base_digests: HashMap<(usize, u64, u64), Digest> = HashMap::new();
    if let (Some(b), BaseMode::External) = (base, opts.base_mode) {
        for f in &b.files {
            let (sha256, tensors) = if rayon::current_num_threads() > 1 {
                // Hashing is most of the set-up: on several threads the
                // file and its tensors are hashed at once (each read apart).
                use rayon::prelude::*;
                let (file, tensors) = rayon::join(
                    || file_sha256(&f.path),
                    || {
                        f.tensors
                            .par_iter()
                            .map(|t| source_sha256(&f.source(t), t.len))
                            .collect::<Result<Vec<_>>>()
                    },
                );
                (file?, tensors?)
            } else {
                file_and_tensor_sha256(f)?
            };
            for (t, d) in f.tensors.iter().zip(tensors) {
                base_digests.insert((std::ptr::from_ref(f) as usize, t.offset, t.len), d);
            }
            base_file_ids.push(w.add_base_file(BaseFile {
                name: f.name.clone(),
                size: f.size(),
                sha256,
            }));
        }
    }
    let renamed = match base {
        Some(b) => find_renamed(target, b, opts.write.max_minor() >= 1)?,
        None => HashMap::new(),
    };
    let row_maps = match base {
        Some(b) if opts.write.max_minor() >= 2 => {
            let widen_ok = opts.write.max_minor() >= 1;
            let unmatched: Vec<_> = target
                .files
                .iter()
                .flat_map(|f| f.tensors.iter().map(move |t| (f, t)))
                .filter(|&(f, t)| match_base(b, f, t, &renamed, widen_ok).is_none())
                .collect();
            let mut maps = row_match::find_row_maps(b, &unmatched)?;
            if opts.write.max_minor() >= 5 {
                let embedded = opts.base_mode != BaseMode::External;
                let kept = |bf: &SourceFile, bt: &SourceTensor| -> bool {
                    // Another target uses the base tensor as it is, so it
                    // is embedded anyway.
                    target.files.iter().any(|f| {
                        f.tensors.iter().any(|t| {
                            match_base(b, f, t, &renamed, widen_ok).is_some_and(|(xf, xt)| {
                                std::ptr::eq(xf, bf) && std::ptr::eq(xt, bt)
                            })
                        })
                    })
                };
                add_slice_maps(b, unmatched, &mut maps, embedded, &kept)?;
            }
            maps
        }
        _ => HashMap::new(),
    };
    let mut inline_ids: HashMap<String, u32> = HashMap::new();
    for f in &target.files {
        // The file's digest and each tensor's, from one pass (the writer
        // feeds both as it reads the tensor).
        let mut file_sha = FileDigest::new();
        file_sha.update_file(&(f.header_len as u64).to_le_bytes());
        file_sha.update_file(f.header());
        let mut ids = Vec::with_capacity(f.tensors.len());
        for t in &f.tensors {
            let src = f.source(t);
            let widen_ok = opts.write.max_minor() >= 1;
            // A whole-tensor match first; else a row map (which exists only
            // for tensors with no whole-tensor match).
            let mut row_map = None;
            let matched = base.and_then(|b| {
                let (bf, bt) = match_base(b, f, t, &renamed, widen_ok).or_else(|| {
                    let m = row_maps.get(&(f.name.clone(), t.name.clone()))?;
                    row_map = Some(m);
                    let bf = b.files.get(m.file)?;
                    Some((bf, bf.tensors.get(m.tensor)?))
                })?;
                Some((b, bf, bt))
            });
            // No whole-tensor or row match: quantized codes and scales (v1.2).
            let quantized = match (base, &matched) {
                (Some(b), None) if opts.write.max_minor() >= 2 => find_quantized(b, t),
                _ => None,
            };
            let mut on_bytes = |bytes: &[u8]| progress(bytes.len() as u64);
            // The tensor against `input`, its bytes into the file's digest.
            macro_rules! add {
                ($input:expr) => {
                    w.add_tensor_in_file(
                        &t.name,
                        t.dtype,
                        &t.shape,
                        &src,
                        $input,
                        &mut file_sha,
                        &mut on_bytes,
                    )?
                };
            }
            let id = match (matched, quantized) {
                (None, Some((b, bf, qt, st, axis))) => {
                    report.delta_tensors += 1;
                    report.quantized_tensors += 1;
                    let (qsrc, ssrc) = (bf.source(qt), bf.source(st));
                    let (q, scale) = match opts.base_mode {
                        BaseMode::External => {
                            let file = base_file_id(b, bf, &base_file_ids);
                            (
                                BaseInput::External {
                                    file,
                                    name: &qt.name,
                                    sha256: base_sha256(&base_digests, bf, qt)?,
                                    dtype: qt.dtype,
                                    source: &qsrc,
                                },
                                BaseInput::External {
                                    file,
                                    name: &st.name,
                                    sha256: base_sha256(&base_digests, bf, st)?,
                                    dtype: st.dtype,
                                    source: &ssrc,
                                },
                            )
                        }
                        BaseMode::Inline | BaseMode::InlinePlain => (
                            BaseInput::Inline {
                                index: inline_index(&mut w, &mut inline_ids, qt, &qsrc)?,
                                dtype: qt.dtype,
                                source: &qsrc,
                            },
                            BaseInput::Inline {
                                index: inline_index(&mut w, &mut inline_ids, st, &ssrc)?,
                                dtype: st.dtype,
                                source: &ssrc,
                            },
                        ),
                    };
                    let input = BaseInput::Dequant {
                        q: &q,
                        scale: &scale,
                        scale_shape: &st.shape,
                        axis,
                    };
                    add!(input)
                }
                (None, None) => add!(BaseInput::None),
                (Some((b, bf, bt)), _) => {
                    report.delta_tensors += 1;
                    let bsrc = bf.source(bt);
                    let input = match opts.base_mode {
                        BaseMode::External => BaseInput::External {
                            file: base_file_id(b, bf, &base_file_ids),
                            name: &bt.name,
                            sha256: base_sha256(&base_digests, bf, bt)?,
                            dtype: bt.dtype,
                            source: &bsrc,
                        },
                        BaseMode::Inline | BaseMode::InlinePlain => BaseInput::Inline {
                            index: inline_index(&mut w, &mut inline_ids, bt, &bsrc)?,
                            dtype: bt.dtype,
                            source: &bsrc,
                        },
                    };
                    match row_map {
                        Some(m) => {
                            match m.row_elems {
                                None => report.row_mapped_tensors += 1,
                                Some(_) => report.sliced_tensors += 1,
                            }
                            let rows = BaseInput::Rows {
                                base: &input,
                                base_shape: &bt.shape,
                                rows: &m.rows,
                                row_elems: m.row_elems,
                            };
                            add!(rows)
                        }
                        None => add!(input),
                    }
                }
            };
            ids.push(id);
        }
        w.add_file(FileRecord {
            name: f.name.clone(),
            size: f.size(),
            sha256: file_sha.finish().unwrap_or_default(),
            header: f.header().to_vec(),
            tensors: ids,
        });
        check_unchanged(f)?;
    }
    for (name, contents) in &target.extra_files {
        w.add_extra_file(name.clone(), contents.clone());
    }
    report.tensors = w.tensor_count();
    report.archive_bytes = w.finish()?;
    Ok(report)
}

/// (v1.5) Adds sliced maps (spec §6.3.4) to the row maps `maps`: for
/// targets with no base yet (nor quantized codes), slices of any base
/// tensor; for targets whose row map leaves rows without a predictor, rows
/// of that map's base tensor in any order, kept where they match more bytes
/// than the row map covers (rows it maps in place, trained, predict well).
/// When the archive embeds its bases (`embedded`), a base tensor that only
/// sliced targets use is embedded for them alone: its slices are kept only
/// if together they match at least its size, or `kept` says it is embedded
/// anyway.
fn add_slice_maps(
    b: &Checkpoint,
    unmatched: Vec<(&SourceFile, &SourceTensor)>,
    maps: &mut HashMap<(String, String), row_match::RowMatch>,
    embedded: bool,
    kept: &dyn Fn(&SourceFile, &SourceTensor) -> bool,
) -> Result<()> {
    let left: Vec<row_match::SliceWanted<'_>> = unmatched
        .into_iter()
        .filter_map(|(f, t)| match maps.get(&(f.name.clone(), t.name.clone())) {
            Some(m) if m.covered_bytes < t.len => Some((f, t, Some((m.file, m.tensor)))),
            Some(_) => None,
            None => find_quantized(b, t).is_none().then_some((f, t, None)),
        })
        .collect();
    let mut found: Vec<_> = row_match::find_slice_maps(b, &left)?
        .into_iter()
        .filter(|(k, m)| {
            maps.get(k)
                .is_none_or(|old| m.matched_bytes > old.covered_bytes)
        })
        .collect();
    if embedded {
        // Bytes each base tensor predicts verbatim, over the sliced targets.
        let mut matched: HashMap<(usize, usize), u64> = HashMap::new();
        for (_, m) in &found {
            *matched.entry((m.file, m.tensor)).or_default() += m.matched_bytes;
        }
        let in_row_maps: Vec<(usize, usize)> = maps.values().map(|m| (m.file, m.tensor)).collect();
        found.retain(|(_, m)| {
            let bf = &b.files[m.file];
            let bt = &bf.tensors[m.tensor];
            matched[&(m.file, m.tensor)] >= bt.len
                || in_row_maps.contains(&(m.file, m.tensor))
                || kept(bf, bt)
        });
    }
    maps.extend(found);
    Ok(())
}

/// The index of `bf` among the base checkpoint's files, as registered.
fn base_file_id(b: &Checkpoint, bf: &SourceFile, ids: &[u32]) -> u32 {
    let fi = b
        .files
        .iter()
        .position(|x| std::ptr::eq(x, bf))
        .unwrap_or(0);
    ids.get(fi).copied().unwrap_or(0)
}

/// The inline base index of base tensor `bt`, adding it on first use: a
/// base tensor several targets use (a renamed copy, shared scales) is
/// stored once.
fn inline_index(
    w: &mut ArchiveWriter,
    ids: &mut HashMap<String, u32>,
    bt: &SourceTensor,
    src: &dyn ByteSource,
) -> Result<u32> {
    if let Some(&i) = ids.get(&bt.name) {
        return Ok(i);
    }
    let i = w.add_base(&bt.name, bt.dtype, &bt.shape, src)?;
    ids.insert(bt.name.clone(), i);
    Ok(i)
}

/// Quantized codes and scales for an F32 target `t` (spec §6.4): in one
/// base file, codes `{name}.q` or `{name}_q` (I8 or U8, `t`'s shape) and
/// scales `{name}.scale` or `{name}_scale` (F32). The axis follows the
/// scales' shape: one element per tensor; `[rows, 1, …]` or `[rows]` per
/// row (the latter is PyTorch's per-output-channel layout, so it wins for a
/// square weight); the target's trailing dimensions (`[c]`, `[1, c]`) per
/// column.
type Quantized<'b> = (
    &'b Checkpoint,
    &'b SourceFile,
    &'b SourceTensor,
    &'b SourceTensor,
    ScaleAxis,
);

fn find_quantized<'b>(b: &'b Checkpoint, t: &SourceTensor) -> Option<Quantized<'b>> {
    if t.dtype != Dtype::F32 || t.len == 0 {
        return None;
    }
    for (qs, ss) in [(".q", ".scale"), ("_q", "_scale")] {
        let Some((bf, qt)) = b.tensor(&format!("{}{qs}", t.name)) else {
            continue;
        };
        let Some(st) = bf
            .tensors
            .iter()
            .find(|x| x.name == format!("{}{ss}", t.name))
        else {
            continue;
        };
        if !matches!(qt.dtype, Dtype::I8 | Dtype::U8)
            || qt.shape != t.shape
            || st.dtype != Dtype::F32
        {
            continue;
        }
        let count: u64 = st.shape.iter().product();
        let rest = t.shape.get(1..).unwrap_or_default();
        let ones = |s: &[u64]| s.iter().all(|&d| d == 1);
        let axis = if count == 1 {
            ScaleAxis::Tensor
        } else if (st.shape.len() == t.shape.len()
            && st.shape.first() == t.shape.first()
            && ones(&st.shape[1..]))
            || (st.shape.len() == 1 && t.shape.len() > 1 && st.shape.first() == t.shape.first())
        {
            // `[rows, 1, …]`, or `[rows]`: PyTorch's per-output-channel
            // scales of an `[out, in]` weight (also when it is square).
            ScaleAxis::Rows
        } else if st.shape == rest
            || (st.shape.len() == t.shape.len() && st.shape[0] == 1 && st.shape[1..] == *rest)
        {
            ScaleAxis::Columns
        } else {
            continue;
        };
        if crate::codec::dequant::check(
            (t.dtype, &t.shape),
            (qt.dtype, &qt.shape),
            (st.dtype, &st.shape),
            axis,
        )
        .is_ok()
        {
            return Some((b, bf, qt, st, axis));
        }
    }
    None
}

/// The base tensor a target tensor is stored against (spec §4.5): the one of
/// the same name and shape, in the same dtype or a narrower float that widens
/// exactly to it; else an identical tensor under another name.
fn match_base<'b>(
    b: &'b Checkpoint,
    f: &SourceFile,
    t: &SourceTensor,
    renamed: &HashMap<(String, String), (usize, usize)>,
    widen_ok: bool,
) -> Option<(&'b SourceFile, &'b SourceTensor)> {
    if let Some((bf, bt)) = b.tensor(&t.name) {
        if bt.shape == t.shape
            && (bt.dtype == t.dtype || (widen_ok && can_widen(bt.dtype, t.dtype)))
        {
            return Some((bf, bt));
        }
    }
    let &(fi, ti) = renamed.get(&(f.name.clone(), t.name.clone()))?;
    let bf = b.files.get(fi)?;
    Some((bf, bf.tensors.get(ti)?))
}

/// Finds target tensors with no usable same-name base tensor whose bytes
/// equal a base tensor's of the same dtype and shape (renamed or moved
/// tensors): stored against it, they cost only an index entry.
fn find_renamed(
    target: &Checkpoint,
    base: &Checkpoint,
    widen_ok: bool,
) -> Result<HashMap<(String, String), (usize, usize)>> {
    // (dtype, shape) -> (file, tensor) indices of base tensors.
    type ByShape<'a> = HashMap<(Dtype, &'a [u64]), Vec<(usize, usize)>>;
    let mut by_shape: ByShape<'_> = HashMap::new();
    for (fi, f) in base.files.iter().enumerate() {
        for (ti, t) in f.tensors.iter().enumerate() {
            if t.len > 0 {
                by_shape
                    .entry((t.dtype, &t.shape))
                    .or_default()
                    .push((fi, ti));
            }
        }
    }
    let mut found = HashMap::new();
    for f in &target.files {
        for t in &f.tensors {
            let has_same_name = base.tensor(&t.name).is_some_and(|(_, bt)| {
                bt.shape == t.shape
                    && (bt.dtype == t.dtype || (widen_ok && can_widen(bt.dtype, t.dtype)))
            });
            if has_same_name || t.len == 0 {
                continue;
            }
            for &(fi, ti) in by_shape
                .get(&(t.dtype, t.shape.as_slice()))
                .into_iter()
                .flatten()
            {
                let bf = &base.files[fi];
                if same_bytes(&f.source(t), &bf.source(&bf.tensors[ti]), t.len)? {
                    found.insert((f.name.clone(), t.name.clone()), (fi, ti));
                    break;
                }
            }
        }
    }
    Ok(found)
}

/// True when two sources hold the same `len` bytes (stops at the first difference).
fn same_bytes(a: &dyn ByteSource, b: &dyn ByteSource, len: u64) -> Result<bool> {
    let step = len.min(1 << 20) as usize;
    let (mut x, mut y) = (vec![0u8; step], vec![0u8; step]);
    let mut off = 0;
    while off < len {
        let n = (len - off).min(step as u64) as usize;
        a.read_at(off, &mut x[..n])
            .map_err(|e| Error::io(a.path(), e))?;
        b.read_at(off, &mut y[..n])
            .map_err(|e| Error::io(b.path(), e))?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
        off += n as u64;
    }
    Ok(true)
}

/// The input must not change while it is packed: a size change is caught
/// here, a content change by the digest check at unpack.
fn check_unchanged(f: &SourceFile) -> Result<()> {
    let now = f.file.metadata().map_err(|e| Error::io(&f.path, e))?.len();
    if now != f.size() {
        return Err(Error::BadInput {
            path: f.path.clone(),
            reason: "file changed size while it was being packed".into(),
        });
    }
    Ok(())
}

/// SHA-256 of a whole file, streamed.
pub fn file_sha256(path: &Path) -> Result<Digest> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// SHA-256 of the file `f` and of each of its tensors' bytes (in
/// `f.tensors` order), in one read of the file: an external base's tensors
/// are recorded by digest, and reading the file twice cost a copy of it.
/// The file's stream and the current tensor's run interleaved
/// ([`FileDigest`]).
fn file_and_tensor_sha256(f: &SourceFile) -> Result<(Digest, Vec<Digest>)> {
    let mut file = std::fs::File::open(&f.path).map_err(|e| Error::io(&f.path, e))?;
    let mut order: Vec<usize> = (0..f.tensors.len()).collect();
    order.sort_by_key(|&i| (f.tensors[i].offset, f.tensors[i].len, i));
    // Tensor byte ranges in file order, each fed while the file passes it.
    // Safetensors tensors do not overlap (the reader refuses it); one that
    // repeats its predecessor's range (a zero-length tensor included) is
    // hashed on its own.
    let mut digests: Vec<Option<Digest>> = vec![None; f.tensors.len()];
    let mut d = FileDigest::new();
    // 1 MiB: the bytes are still in cache when both streams read them.
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    let mut next = 0usize;
    let mut current: Option<usize> = None;
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(&f.path, e))?;
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            // Where the bytes at `pos` belong: the current tensor up to its
            // end, else the file up to the next tensor's start.
            if current.is_none() {
                while let Some(&i) = order.get(next) {
                    let t = &f.tensors[i];
                    if t.len > 0 && t.offset >= pos {
                        break;
                    }
                    next += 1;
                }
                if let Some(&i) = order.get(next).filter(|&&i| f.tensors[i].offset == pos) {
                    d.begin_tensor();
                    current = Some(i);
                    next += 1;
                }
            }
            let end = match current {
                Some(i) => f.tensors[i].offset + f.tensors[i].len,
                None => order.get(next).map_or(u64::MAX, |&i| f.tensors[i].offset),
            };
            let take = (end - pos).min(chunk.len() as u64) as usize;
            let (here, rest) = chunk.split_at(take);
            match current {
                Some(_) => d.update_tensor(here),
                None => d.update_file(here),
            }
            pos += take as u64;
            chunk = rest;
            if let Some(i) = current.filter(|_| pos == end) {
                digests[i] = Some(d.end_tensor());
                current = None;
            }
        }
    }
    let file_digest = d.finish().unwrap_or_default();
    // Empty tensors, repeated ranges, or a file shorter than its header
    // says (it changed under us: hashed as it reads now).
    let tensors = digests
        .into_iter()
        .zip(&f.tensors)
        .map(|(d, t)| d.map_or_else(|| source_sha256(&f.source(t), t.len), Ok))
        .collect::<Result<Vec<_>>>()?;
    Ok((file_digest, tensors))
}

/// The digest of base tensor `t` of `bf`: from the pass over its file when
/// one was made (external bases), else read now.
fn base_sha256(
    known: &HashMap<(usize, u64, u64), Digest>,
    bf: &SourceFile,
    t: &SourceTensor,
) -> Result<Digest> {
    match known.get(&(std::ptr::from_ref(bf) as usize, t.offset, t.len)) {
        Some(d) => Ok(*d),
        None => source_sha256(&bf.source(t), t.len),
    }
}

fn source_sha256(src: &dyn ByteSource, len: u64) -> Result<Digest> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; len.min(4 << 20) as usize];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        src.read_at(off, &mut buf[..n])
            .map_err(|e| Error::io(src.path(), e))?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safetensors::make_header;

    /// The one-pass digests of a file and its tensors (used for an external
    /// base on one thread) equal each digest taken alone: tensors listed out
    /// of file order, an empty one, and tensors across the 1 MiB read
    /// boundaries.
    #[test]
    fn file_and_tensor_digests_in_one_pass_equal_each_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.safetensors");
        let sizes: [(&str, u64); 5] = [
            ("big", 700_001),
            ("empty", 0),
            ("odd", 77),
            ("across", 400_003),
            ("tail", 5),
        ];
        let list: Vec<(&str, Dtype, Vec<u64>)> = sizes
            .iter()
            .map(|&(n, len)| (n, Dtype::U8, vec![len]))
            .collect();
        let header = make_header(
            &list
                .iter()
                .map(|(n, d, s)| (*n, *d, s.as_slice()))
                .collect::<Vec<_>>(),
        );
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&header);
        let mut x = 1u32;
        for &(_, len) in &sizes {
            bytes.extend((0..len).map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            }));
        }
        std::fs::write(&path, &bytes).unwrap();
        let f = SourceFile::open(&path).unwrap();
        let (file, tensors) = file_and_tensor_sha256(&f).unwrap();
        assert_eq!(file, file_sha256(&path).unwrap());
        let want: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(file, want);
        for (t, d) in f.tensors.iter().zip(&tensors) {
            assert_eq!(
                *d,
                source_sha256(&f.source(t), t.len).unwrap(),
                "{}",
                t.name
            );
        }
        assert_eq!(tensors.len(), sizes.len());
    }
}
