//! The streaming archive writer (spec §3): blobs are appended as they are
//! encoded, the index goes last, and the header is patched in at the end.
//! Output goes to a temp file beside the destination, renamed on `finish`.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bincode::Options;
use sha2::{Digest as _, Sha256};

use super::plan;
use super::source::{ByteSource, Dequantized, RowMapped};
use crate::codec::chunk::{self, EncodeScratch, EncodedChunk};
use crate::codec::dequant;
use crate::codec::rows as row_map;
use crate::codec::stream::PlaneCoder;
use crate::codec::widen;
use crate::digest::FileDigest;
use crate::error::{Error, Result};
use crate::format::{
    align_up, bincode_options, BaseFile, BaseRef, Chunk, Digest, Dtype, ExtraFile, FileRecord,
    Header, Index, Payload, RowRun, ScaleAxis, TensorRecord, ALIGN, FLAG_INDEX_ZSTD, HEADER_LEN,
    VERSION_MAJOR, VERSION_MINOR,
};
use crate::read::validate::MAX_CHUNK_ELEMS;

/// Writer options. Defaults: zstd level 1 (on byte-planed deltas it is both
/// smaller and twice as fast as level 3: 5.03x vs 4.81x on a real bf16 fine-tune),
/// chunk size chosen per tensor (128 Ki to 1 Mi elements), inline bases
/// compressed, refuse to overwrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    level: i32,
    /// `None`: chosen per tensor by estimate.
    chunk_elems: Option<u64>,
    plain_bases: bool,
    overwrite: bool,
    max_minor: u16,
    plane_coder: PlaneCoder,
    wide_min_plane: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            level: 1,
            chunk_elems: None,
            plain_bases: false,
            overwrite: false,
            max_minor: VERSION_MINOR,
            plane_coder: PlaneCoder::default(),
            wide_min_plane: crate::codec::stream::WIDE_MIN_PLANE,
        }
    }
}

impl WriteOptions {
    /// zstd level (1..=22; higher is smaller and slower).
    #[must_use]
    pub fn with_level(mut self, level: i32) -> Self {
        self.level = level;
        self
    }
    /// Elements per chunk, the same for every tensor: the unit of
    /// parallelism and random access. Without it the writer chooses per
    /// tensor among 2^17..=2^20 by an entropy estimate on a sample.
    #[must_use]
    pub fn with_chunk_elems(mut self, n: u64) -> Self {
        self.chunk_elems = Some(n);
        self
    }
    /// Store inline bases uncompressed and aligned, so readers can map them zero-copy.
    #[must_use]
    pub fn with_plain_bases(mut self, yes: bool) -> Self {
        self.plain_bases = yes;
        self
    }
    /// Replace an existing destination on `finish`.
    #[must_use]
    pub fn with_overwrite(mut self, yes: bool) -> Self {
        self.overwrite = yes;
        self
    }
    /// Newest format minor the archive may use (default: the newest this
    /// crate knows). `0` writes archives that v1.0 readers can read: no
    /// per-plane streams, no widened bases (spec §8).
    #[must_use]
    pub fn with_max_minor(mut self, minor: u16) -> Self {
        self.max_minor = minor.min(VERSION_MINOR);
        self
    }
    /// Coder for byte planes (v1.1): rANS (default, smallest) or zstd
    /// (faster to decode).
    #[must_use]
    pub fn with_plane_coder(mut self, coder: PlaneCoder) -> Self {
        self.plane_coder = coder;
        self
    }
    /// (v1.6) rANS planes of at least `n` symbols get 32 interleaved states
    /// instead of 4 (default 65,536: they decode faster on AVX2 and a GPU
    /// warp, for ~80 more bytes a plane). `0` gives every rANS plane 32
    /// states; `usize::MAX` none. Ignored below format 1.6.
    #[must_use]
    pub fn with_wide_min_plane(mut self, n: usize) -> Self {
        self.wide_min_plane = n;
        self
    }
    /// Newest format minor the archive may use.
    pub fn max_minor(&self) -> u16 {
        self.max_minor
    }
    /// The zstd level.
    pub fn level(&self) -> i32 {
        self.level
    }
    /// Elements per chunk when fixed with [`WriteOptions::with_chunk_elems`],
    /// else the largest size the writer chooses (the one it uses for a
    /// tensor whose statistics do not change along it).
    pub fn chunk_elems(&self) -> u64 {
        self.chunk_elems.unwrap_or(super::plan::CANDIDATES[0])
    }
    /// The fixed chunk size, if any (`None`: chosen per tensor).
    pub fn fixed_chunk_elems(&self) -> Option<u64> {
        self.chunk_elems
    }
}

/// The base a tensor is written against.
#[derive(Clone, Copy)]
pub enum BaseInput<'a> {
    /// No base (standalone).
    None,
    /// An inline base already added with [`ArchiveWriter::add_base`].
    Inline {
        /// Its index in the archive's base table.
        index: u32,
        /// Its dtype: the target's, or a narrower float widened exactly (spec §6.2).
        dtype: Dtype,
        /// Its bytes.
        source: &'a dyn ByteSource,
    },
    /// A tensor of an external base file registered with [`ArchiveWriter::add_base_file`].
    External {
        /// The base file's index.
        file: u32,
        /// Tensor name in the base.
        name: &'a str,
        /// SHA-256 of the base tensor's bytes.
        sha256: Digest,
        /// Its dtype: the target's, or a narrower float widened exactly (spec §6.2).
        dtype: Dtype,
        /// Its bytes.
        source: &'a dyn ByteSource,
    },
    /// (v1.2) Rows of an inline or external base of the target's dtype
    /// whose shape differs only in the first dimension (spec §6.3); or
    /// (v1.5, `row_elems` given) slices of one of any shape, both tensors
    /// read as rows of `row_elems` elements, base rows in any order (§6.3.4).
    Rows {
        /// The base tensor, as [`BaseInput::Inline`] or [`BaseInput::External`].
        base: &'a BaseInput<'a>,
        /// Its shape.
        base_shape: &'a [u64],
        /// Target rows predicted by base rows; the other rows by zero bits.
        rows: &'a [RowRun],
        /// `None`: rows are slices along the first dimension (a row-mapped
        /// base, v1.2); `Some(r)`: rows of `r` elements (a sliced base, v1.5).
        row_elems: Option<u64>,
    },
    /// (v1.2) A quantized base predicting an F32 target (spec §6.4): codes
    /// and scales, both [`BaseInput::Inline`] or both [`BaseInput::External`]
    /// (of one base file).
    Dequant {
        /// The I8 or U8 codes (the target's shape).
        q: &'a BaseInput<'a>,
        /// The F32 scales.
        scale: &'a BaseInput<'a>,
        /// The scales' shape.
        scale_shape: &'a [u64],
        /// Which elements share a scale.
        axis: ScaleAxis,
    },
}

impl std::fmt::Debug for BaseInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaseInput::None => f.write_str("None"),
            BaseInput::Inline { index, .. } => write!(f, "Inline({index})"),
            BaseInput::External { name, .. } => write!(f, "External({name:?})"),
            BaseInput::Rows { base, rows, .. } => write!(f, "Rows({base:?}, {} runs)", rows.len()),
            BaseInput::Dequant { q, scale, axis, .. } => {
                write!(f, "Dequant({q:?}, {scale:?}, {})", axis.name())
            }
        }
    }
}

/// Streams tensors into a new archive.
#[derive(Debug)]
pub struct ArchiveWriter {
    dest: PathBuf,
    tmp: tempfile::TempPath,
    out: BufWriter<File>,
    pos: u64,
    index: Index,
    opts: WriteOptions,
    /// Chunks being encoded, oldest first.
    pending: std::collections::VecDeque<PendingChunk>,
    /// Most chunks in flight: two per pool thread.
    window: usize,
    /// Buffers of finished chunks, for the next reads.
    spare: Vec<Vec<u8>>,
    /// An `add_tensor`/`add_base` failed part way: the index may hold a
    /// half-built record, so [`ArchiveWriter::finish`] refuses (rather than
    /// write an archive every reader rejects).
    failed: bool,
}

/// Which table of the index a record is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Bases,
    Tensors,
}

/// A chunk handed to the thread pool: where its descriptor goes, and the
/// channel its encoding and CRC come back on.
#[derive(Debug)]
struct PendingChunk {
    table: Table,
    id: usize,
    elem_start: u64,
    elem_count: u64,
    rx: std::sync::mpsc::Receiver<Encoded>,
}

/// A chunk's encoding, CRC and (v1.7) digest, with the target and base
/// buffers it came from (handed back for reuse).
struct Encoded {
    chunk: EncodedChunk,
    crc32: u32,
    /// SHA-256 of the chunk's target bytes, when its tensor records them.
    sha256: Option<Digest>,
    target: Vec<u8>,
    base: Option<Vec<u8>>,
}

/// A buffer of `len` bytes, reused from `spare` when there is one. Its
/// contents are overwritten by the caller.
fn take_buf(spare: &mut Vec<Vec<u8>>, len: usize) -> Vec<u8> {
    let mut v = spare.pop().unwrap_or_default();
    v.resize(len, 0);
    v
}

/// Reads `count` elements from element `start` of `target` and of its base
/// (widened to the target's dtype) into buffers from `spare`.
fn read_chunk(
    (target, base, dtype): (&dyn ByteSource, Option<(&dyn ByteSource, Dtype)>, Dtype),
    start: u64,
    count: u64,
    spare: &mut Vec<Vec<u8>>,
) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    let w = dtype.width() as u64;
    let mut t = take_buf(spare, (count * w) as usize);
    target
        .read_at(start * w, &mut t)
        .map_err(|e| Error::io(target.path(), e))?;
    let b = match base {
        Some((src, bd)) => {
            let bw = bd.width() as u64;
            let mut b = take_buf(spare, (count * bw) as usize);
            src.read_at(start * bw, &mut b)
                .map_err(|e| Error::io(src.path(), e))?;
            if bd != dtype {
                let mut wide = take_buf(spare, t.len());
                widen::widen(bd, dtype, &b, &mut wide);
                spare.push(b);
                b = wide;
            }
            Some(b)
        }
        None => None,
    };
    Ok((t, b))
}

impl ArchiveWriter {
    /// Starts an archive that `finish` will move to `dest`.
    pub fn create(dest: impl AsRef<Path>, opts: WriteOptions) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        if let Some(ce) = opts.chunk_elems.filter(|&c| c == 0 || c > MAX_CHUNK_ELEMS) {
            return Err(Error::Usage(format!(
                "chunk size must be 1..={MAX_CHUNK_ELEMS} elements, got {ce}"
            )));
        }
        if !(1..=22).contains(&opts.level) {
            return Err(Error::Usage(format!(
                "zstd level must be 1..=22, got {}",
                opts.level
            )));
        }
        if !opts.overwrite && dest.exists() {
            return Err(Error::OutputExists { path: dest });
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = super::temp_file_in(&dir)?;
        let (file, tmp) = tmp.into_parts();
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER_LEN])
            .map_err(|e| Error::io(&*tmp, e))?;
        Ok(ArchiveWriter {
            dest,
            tmp,
            out,
            pos: HEADER_LEN as u64,
            index: Index::default(),
            opts,
            pending: std::collections::VecDeque::new(),
            window: (rayon::current_num_threads() * 2).max(1),
            spare: Vec::new(),
            failed: false,
        })
    }

    /// Records a target file (its tensors must be added with `add_tensor`).
    pub fn add_file(&mut self, rec: FileRecord) {
        self.index.files.push(rec);
    }

    /// Records a small file to reproduce verbatim.
    pub fn add_extra_file(&mut self, name: String, contents: Vec<u8>) {
        let sha256 = Sha256::digest(&contents).into();
        self.index.extra_files.push(ExtraFile {
            name,
            sha256,
            contents,
        });
    }

    /// Registers an external base file; returns its index.
    pub fn add_base_file(&mut self, rec: BaseFile) -> u32 {
        self.index.base_files.push(rec);
        (self.index.base_files.len() - 1) as u32
    }

    /// Number of target tensors added so far.
    pub fn tensor_count(&self) -> usize {
        self.index.tensors.len()
    }

    /// Pads to the next 64-byte boundary; returns the new position.
    fn align(&mut self) -> Result<u64> {
        let at = align_up(self.pos).ok_or(Error::Usage("archive too large".into()))?;
        let pad = (at - self.pos) as usize;
        self.write_raw(&[0u8; ALIGN as usize][..pad])?;
        Ok(at)
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(&*self.tmp, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Writes one aligned blob; returns its offset.
    fn write_blob(&mut self, bytes: &[u8]) -> Result<u64> {
        let at = self.align()?;
        self.write_raw(bytes)?;
        Ok(at)
    }

    /// Adds an inline base tensor (stored without a base of its own);
    /// returns its index for [`BaseInput::Inline`].
    pub fn add_base(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: &[u64],
        source: &dyn ByteSource,
    ) -> Result<u32> {
        let r = if self.opts.plain_bases {
            // Written straight to the output: every chunk before it first,
            // so the layout does not depend on the thread count.
            self.drain_all().and_then(|()| {
                let rec = self.encode_plain(name, dtype, shape, source)?;
                self.index.bases.push(rec);
                Ok((self.index.bases.len() - 1) as u32)
            })
        } else {
            self.encode_tensor(
                name,
                dtype,
                shape,
                source,
                BaseInput::None,
                Table::Bases,
                &mut FileDigest::tensors_only(),
                &mut |_| {},
            )
        };
        self.failed |= r.is_err();
        r
    }

    /// Adds a target tensor against `base`. `on_bytes` sees the target's
    /// bytes in order (for file digests and progress). Returns its index.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: &[u64],
        target: &dyn ByteSource,
        base: BaseInput<'_>,
        on_bytes: &mut dyn FnMut(&[u8]),
    ) -> Result<u32> {
        let mut digest = FileDigest::tensors_only();
        self.add_tensor_in_file(name, dtype, shape, target, base, &mut digest, on_bytes)
    }

    /// [`ArchiveWriter::add_tensor`] for a tensor of the file `file` hashes:
    /// the target's bytes feed the file's digest and the tensor's in one
    /// pass (see [`FileDigest`]); `on_bytes` still sees them (for progress).
    #[allow(clippy::too_many_arguments)]
    pub fn add_tensor_in_file(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: &[u64],
        target: &dyn ByteSource,
        base: BaseInput<'_>,
        file: &mut FileDigest,
        on_bytes: &mut dyn FnMut(&[u8]),
    ) -> Result<u32> {
        let r = self.encode_tensor(
            name,
            dtype,
            shape,
            target,
            base,
            Table::Tensors,
            file,
            on_bytes,
        );
        self.failed |= r.is_err();
        r
    }

    /// The smallest chunk size a tensor over `base` may use: an inline base
    /// tensor's (readers refuse a base with larger chunks than its target,
    /// spec §5.1).
    fn min_chunk_elems(&self, base: &BaseInput<'_>) -> u64 {
        let of = |b: &BaseInput<'_>| match b {
            BaseInput::Inline { index, .. } => self
                .index
                .bases
                .get(*index as usize)
                .and_then(|r| match &r.payload {
                    Payload::Chunked { chunk_elems, .. } => Some(*chunk_elems),
                    Payload::Plain { .. } => None,
                })
                .unwrap_or(1),
            _ => 1,
        };
        match base {
            BaseInput::Rows { base, .. } => of(base),
            BaseInput::Dequant { q, scale, .. } => of(q).max(of(scale)),
            b => of(b),
        }
    }

    fn encode_plain(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: &[u64],
        source: &dyn ByteSource,
    ) -> Result<TensorRecord> {
        let len = byte_len(name, dtype, shape)?;
        let mut sha = Sha256::new();
        let mut crc = crc32fast::Hasher::new();
        let start = if len == 0 { 0 } else { self.align()? };
        let mut buf = vec![0u8; len.min(8 << 20) as usize];
        let mut offset = 0u64;
        while offset < len {
            let n = (len - offset).min(buf.len() as u64) as usize;
            source
                .read_at(offset, &mut buf[..n])
                .map_err(|e| Error::io(source.path(), e))?;
            sha.update(&buf[..n]);
            crc.update(&buf[..n]);
            self.write_raw(&buf[..n])?;
            offset += n as u64;
        }
        Ok(TensorRecord {
            name: name.to_owned(),
            dtype,
            shape: shape.to_vec(),
            sha256: sha.finalize().into(),
            base: BaseRef::None,
            payload: Payload::Plain {
                offset: start,
                len,
                crc32: crc.finalize(),
            },
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn encode_tensor(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: &[u64],
        target: &dyn ByteSource,
        base: BaseInput<'_>,
        table: Table,
        digest: &mut FileDigest,
        on_bytes: &mut dyn FnMut(&[u8]),
    ) -> Result<u32> {
        let len = byte_len(name, dtype, shape)?;
        let w = dtype.width() as u64;
        let n = len / w;
        let comp = chunk::Compression {
            level: self.opts.level,
            max_minor: self.opts.max_minor,
            coder: self.opts.plane_coder,
            wide_min_plane: self.opts.wide_min_plane,
        };
        let mapped;
        let dequantized;
        let base_src: Option<(&dyn ByteSource, Dtype)> = match base {
            BaseInput::None => None,
            BaseInput::Inline { source, dtype, .. } | BaseInput::External { source, dtype, .. } => {
                Some((source, dtype))
            }
            BaseInput::Rows {
                base: inner,
                base_shape,
                rows,
                row_elems,
            } => {
                let (BaseInput::Inline {
                    source, dtype: bd, ..
                }
                | BaseInput::External {
                    source, dtype: bd, ..
                }) = *inner
                else {
                    return Err(Error::Usage(format!(
                        "tensor {name:?}: a row-mapped base must be an inline or external base"
                    )));
                };
                let (minor, kind) = match row_elems {
                    None => (2, "row-mapped"),
                    Some(_) => (5, "sliced"),
                };
                if self.opts.max_minor < minor || bd != dtype {
                    return Err(Error::Usage(format!(
                        "tensor {name:?}: a {kind} {bd} base needs format 1.{minor} and the target's dtype ({dtype})"
                    )));
                }
                let row_bytes = match row_elems {
                    None => {
                        row_map::check(shape, base_shape, rows)
                            .map_err(|why| Error::Usage(format!("tensor {name:?}: {why}")))?;
                        row_map::row_bytes(shape, dtype.width()).unwrap_or(0)
                    }
                    Some(r) => {
                        let usage = |why: &str| Error::Usage(format!("tensor {name:?}: {why}"));
                        let m = base_shape
                            .iter()
                            .try_fold(1u64, |a, &d| a.checked_mul(d))
                            .filter(|m| m.checked_mul(w).is_some())
                            .ok_or_else(|| usage("the base shape's byte length overflows"))?;
                        row_map::check_slices(n, m, r, rows).map_err(&usage)?;
                        r.checked_mul(w)
                            .ok_or_else(|| usage("sliced rows' byte length overflows"))?
                    }
                };
                mapped = RowMapped {
                    base: source,
                    rows,
                    row_bytes,
                };
                Some((&mapped as &dyn ByteSource, dtype))
            }
            BaseInput::Dequant {
                q,
                scale,
                scale_shape,
                axis,
            } => {
                let parts = match (*q, *scale) {
                    (
                        BaseInput::Inline {
                            source: qs,
                            dtype: qd,
                            ..
                        },
                        BaseInput::Inline {
                            source: ss,
                            dtype: sd,
                            ..
                        },
                    )
                    | (
                        BaseInput::External {
                            source: qs,
                            dtype: qd,
                            ..
                        },
                        BaseInput::External {
                            source: ss,
                            dtype: sd,
                            ..
                        },
                    ) => Some((qs, qd, ss, sd)),
                    _ => None,
                };
                let Some((qs, qd, ss, sd)) = parts else {
                    return Err(Error::Usage(format!(
                        "tensor {name:?}: quantized codes and scales must both be inline or both external"
                    )));
                };
                if self.opts.max_minor < 2 {
                    return Err(Error::Usage(format!(
                        "tensor {name:?}: a quantized base needs format 1.2"
                    )));
                }
                dequant::check((dtype, shape), (qd, shape), (sd, scale_shape), axis)
                    .map_err(|why| Error::Usage(format!("tensor {name:?}: {why}")))?;
                dequantized = Dequantized {
                    q: qs,
                    signed: qd == Dtype::I8,
                    scale: ss,
                    axis,
                    row_elems: row_map::row_bytes(shape, 1).unwrap_or(0),
                };
                Some((&dequantized as &dyn ByteSource, dtype))
            }
        };
        if let Some((_, bd)) = base_src {
            if bd != dtype && (self.opts.max_minor < 1 || !widen::can_widen(bd, dtype)) {
                return Err(Error::Usage(format!(
                    "tensor {name:?}: a {bd} base cannot predict a {dtype} target"
                )));
            }
        }
        let read_range = |start: u64, count: u64| -> Result<(Vec<u8>, Option<Vec<u8>>)> {
            let mut t = vec![0u8; (count * w) as usize];
            target
                .read_at(start * w, &mut t)
                .map_err(|e| Error::io(target.path(), e))?;
            let b = match base_src {
                Some((src, bd)) => {
                    let bw = bd.width() as u64;
                    let mut b = vec![0u8; (count * bw) as usize];
                    src.read_at(start * bw, &mut b)
                        .map_err(|e| Error::io(src.path(), e))?;
                    if bd != dtype {
                        let mut wide = vec![0u8; t.len()];
                        widen::widen(bd, dtype, &b, &mut wide);
                        b = wide;
                    }
                    Some(b)
                }
                None => None,
            };
            Ok((t, b))
        };
        // (v1.7) A target tensor of several chunks records each chunk's
        // digest, so readers prove it chunk by chunk in parallel (spec
        // §4.6.3); one chunk's digest would be the tensor's. The chunk-size
        // estimate counts them.
        let digests_allowed = table == Table::Tensors && self.opts.max_minor >= 7;
        // One combine op per tensor and its chunk size, from samples.
        let plan = plan::plan(
            n,
            w as usize,
            base_src.is_some(),
            comp,
            self.opts.chunk_elems,
            self.min_chunk_elems(&base),
            digests_allowed,
            &read_range,
        )?;
        let (op, ce) = (plan.op, plan.chunk_elems);
        // Readers refuse a chunk size over their max_chunk_raw_bytes (spec
        // §4.6.2, §7) whatever the tensor's length: refuse to write one the
        // default limits reject rather than an archive nobody opens.
        let limit = crate::ReadLimits::default().max_chunk_raw_bytes;
        if ce.saturating_mul(w) > limit {
            return Err(Error::Usage(format!(
                "tensor {name:?}: chunks of {ce} elements of {w} bytes exceed the {limit} bytes \
                 readers accept by default (max_chunk_raw_bytes); use a smaller --chunk-elems"
            )));
        }
        let nchunks = n.div_ceil(ce);
        let chunk_digests = digests_allowed && nchunks > 1;

        let base_ref = match base {
            BaseInput::None => BaseRef::None,
            BaseInput::Rows {
                base: BaseInput::Inline { index, .. },
                rows,
                row_elems,
                ..
            } => {
                let (index, rows) = (*index, rows.to_vec());
                match row_elems {
                    None => BaseRef::InlineRows { index, rows },
                    Some(row_elems) => BaseRef::InlineSlices {
                        index,
                        row_elems,
                        rows,
                    },
                }
            }
            BaseInput::Rows {
                base:
                    BaseInput::External {
                        file, name, sha256, ..
                    },
                base_shape,
                rows,
                row_elems,
            } => {
                let (file, name, sha256) = (*file, (*name).to_owned(), *sha256);
                let (shape, rows) = (base_shape.to_vec(), rows.to_vec());
                match row_elems {
                    None => BaseRef::ExternalRows {
                        file,
                        name,
                        sha256,
                        shape,
                        rows,
                    },
                    Some(row_elems) => BaseRef::ExternalSlices {
                        file,
                        name,
                        sha256,
                        shape,
                        row_elems,
                        rows,
                    },
                }
            }
            // Refused before any chunk was written (`base_src` above).
            BaseInput::Rows { .. } => {
                return Err(Error::Usage(format!(
                    "tensor {name:?}: a row-mapped base must be an inline or external base"
                )))
            }
            BaseInput::Dequant {
                q: BaseInput::Inline { index: qi, .. },
                scale: BaseInput::Inline { index: si, .. },
                axis,
                ..
            } => BaseRef::InlineDequant {
                q: *qi,
                scale: *si,
                axis,
            },
            BaseInput::Dequant {
                q:
                    BaseInput::External {
                        file,
                        name: q_name,
                        sha256: q_sha256,
                        dtype: q_dtype,
                        ..
                    },
                scale:
                    BaseInput::External {
                        name: scale_name,
                        sha256: scale_sha256,
                        ..
                    },
                scale_shape,
                axis,
            } => BaseRef::ExternalDequant {
                file: *file,
                q_name: (*q_name).to_owned(),
                q_sha256: *q_sha256,
                q_dtype: *q_dtype,
                scale_name: (*scale_name).to_owned(),
                scale_sha256: *scale_sha256,
                scale_shape: scale_shape.to_vec(),
                axis,
            },
            BaseInput::Dequant { .. } => {
                return Err(Error::Usage(format!(
                "tensor {name:?}: quantized codes and scales must both be inline or both external"
            )))
            }
            BaseInput::Inline {
                index, dtype: bd, ..
            } if bd == dtype => BaseRef::Inline { index },
            BaseInput::Inline { index, .. } => BaseRef::InlineWidened { index },
            BaseInput::External {
                file,
                name,
                sha256,
                dtype: bd,
                ..
            } if bd == dtype => BaseRef::External {
                file,
                name: name.to_owned(),
                sha256,
            },
            BaseInput::External {
                file,
                name,
                sha256,
                dtype: bd,
                ..
            } => BaseRef::ExternalWidened {
                file,
                name: name.to_owned(),
                sha256,
                dtype: bd,
            },
        };
        let record = TensorRecord {
            name: name.to_owned(),
            dtype,
            shape: shape.to_vec(),
            sha256: [0; 32],
            base: base_ref,
            payload: Payload::Chunked {
                chunk_elems: ce,
                chunks: Vec::with_capacity(nchunks.min(1 << 20) as usize),
                chunk_sha256: chunk_digests
                    .then(|| Vec::with_capacity(nchunks.min(1 << 20) as usize)),
            },
        };
        let records = self.table_mut(table);
        records.push(record);
        let id = records.len() - 1;
        // Chunks are read, hashed and handed to `on_bytes` here, in order,
        // and encoded on the thread pool while this thread goes on reading
        // (this tensor's next chunks, or the next tensors': small tensors
        // no longer run one after another). They are written in submission
        // order as they finish, so the archive is the same whatever the
        // thread count; at most `window` chunks are in flight.
        digest.begin_tensor();
        for i in 0..nchunks {
            let start = i * ce;
            let (t, b) = read_chunk(
                (target, base_src, dtype),
                start,
                ce.min(n - start),
                &mut self.spare,
            )?;
            digest.update_tensor(&t);
            on_bytes(&t);
            while self.pending.len() >= self.window {
                self.drain_one()?;
            }
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let width = w as usize;
            let job = move || {
                // A panic (none is reachable: the library denies them) must
                // not abort the process, as it would inside `rayon::spawn`:
                // the sender is dropped instead and the writer reports it.
                let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let e = ENCODE_SCRATCH.with(|s| {
                        chunk::encode(width, &t, b.as_deref(), op, comp, &mut s.borrow_mut())
                    });
                    let crc = if e.bytes.is_empty() {
                        0
                    } else {
                        crc32fast::hash(&e.bytes)
                    };
                    let sha256 = chunk_digests.then(|| Sha256::digest(&t).into());
                    (e, crc, sha256)
                }));
                if let Ok((chunk, crc32, sha256)) = encoded {
                    // The writer may have failed and gone: nobody to tell.
                    let _ = tx.send(Encoded {
                        chunk,
                        crc32,
                        sha256,
                        target: t,
                        base: b,
                    });
                }
            };
            // A tiny chunk costs less to encode here than to hand to the
            // pool (a wake-up and a channel round trip per tensor: 15 µs,
            // which dominated checkpoints of many tiny tensors).
            if ce.min(n - start) * w < INLINE_CHUNK_BYTES {
                job();
            } else {
                rayon::spawn(job);
            }
            self.pending.push_back(PendingChunk {
                table,
                id,
                elem_start: i * ce,
                elem_count: ce.min(n - i * ce),
                rx,
            });
        }
        let sha256 = digest.end_tensor();
        if let Some(r) = self.table_mut(table).get_mut(id) {
            r.sha256 = sha256;
        }
        Ok(id as u32)
    }

    fn table_mut(&mut self, table: Table) -> &mut Vec<TensorRecord> {
        match table {
            Table::Bases => &mut self.index.bases,
            Table::Tensors => &mut self.index.tensors,
        }
    }

    /// Waits for the oldest chunk in flight, writes it, and appends its
    /// descriptor to its tensor (chunks of a tensor finish in order: FIFO).
    fn drain_one(&mut self) -> Result<()> {
        let Some(p) = self.pending.pop_front() else {
            return Ok(());
        };
        let Encoded {
            chunk: e,
            crc32,
            sha256,
            target,
            base,
        } = wait(&p.rx)?;
        // The chunk's buffers serve the next reads (no zeroing, no page
        // faults): as many as are in flight, plus a widening's spare.
        for buf in std::iter::once(target).chain(base) {
            if self.spare.len() < 2 * self.window + 2 {
                self.spare.push(buf);
            }
        }
        let offset = if e.bytes.is_empty() {
            0
        } else {
            self.write_blob(&e.bytes)?
        };
        let chunk = Chunk {
            offset,
            stored_len: e.bytes.len() as u64,
            crc32,
            elem_start: p.elem_start,
            elem_count: p.elem_count,
            kind: e.kind,
            op: e.op,
            changed: e.changed,
            positions: e.positions,
            values: e.values,
        };
        if let Some(TensorRecord {
            payload:
                Payload::Chunked {
                    chunks,
                    chunk_sha256,
                    ..
                },
            ..
        }) = self.table_mut(p.table).get_mut(p.id)
        {
            chunks.push(chunk);
            if let (Some(all), Some(d)) = (chunk_sha256, sha256) {
                all.push(d);
            }
        }
        Ok(())
    }

    /// Writes every chunk still in flight.
    fn drain_all(&mut self) -> Result<()> {
        while !self.pending.is_empty() {
            self.drain_one()?;
        }
        Ok(())
    }

    /// Writes the index and header, syncs, and renames the temp file onto
    /// the destination. Returns the archive's length in bytes.
    pub fn finish(mut self) -> Result<u64> {
        if self.failed {
            return Err(Error::Usage(
                "a tensor failed to be added: the archive is incomplete and was not written".into(),
            ));
        }
        self.drain_all()?;
        let index_offset = align_up(self.pos).ok_or(Error::Usage("archive too large".into()))?;
        let index = bincode_options(u64::MAX)
            .serialize(&self.index)
            .map_err(|e| Error::Usage(format!("cannot encode index: {e}")))?;
        // Format 1.3 stores the index as a zstd frame (header flag bit 0).
        let (index, flags) = crate::codec::index::encode(index, self.opts.max_minor >= 3);
        self.align()?;
        self.write_raw(&index)?;
        let mut header = Header {
            major: VERSION_MAJOR,
            // The lowest minor whose features this archive uses, so readers
            // of older minors can still read archives that need nothing newer.
            minor: if flags & FLAG_INDEX_ZSTD != 0 {
                self.index.min_minor().max(3)
            } else {
                self.index.min_minor()
            },
            flags,
            file_len: self.pos,
            index_offset,
            index_len: index.len() as u64,
            align: ALIGN as u32,
            crc32: 0,
        };
        header.crc32 = header.compute_crc(&index);
        let tmp_path = self.tmp.to_path_buf();
        let io = |e| Error::io(&tmp_path, e);
        self.out.flush().map_err(io)?;
        let mut file = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header.to_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        let len = header.file_len;
        if self.opts.overwrite {
            self.tmp
                .persist(&self.dest)
                .map_err(|e| Error::io(&self.dest, e.error))?;
        } else {
            self.tmp
                .persist_noclobber(&self.dest)
                .map_err(|e| match e.error.kind() {
                    std::io::ErrorKind::AlreadyExists => Error::OutputExists {
                        path: self.dest.clone(),
                    },
                    _ => Error::io(&self.dest, e.error),
                })?;
        }
        Ok(len)
    }
}

/// Waits for a chunk's result. A caller on a pool thread (inside
/// `ThreadPool::install`) runs pool jobs meanwhile: the chunk may be queued
/// behind it on that very thread, and blocking would deadlock a pool of one.
/// Chunks of fewer bytes are encoded on the calling thread.
const INLINE_CHUNK_BYTES: u64 = 16 << 10;

fn wait(rx: &std::sync::mpsc::Receiver<Encoded>) -> Result<Encoded> {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            match rx.try_recv() {
                Ok(r) => return Ok(r),
                Err(std::sync::mpsc::TryRecvError::Empty) => continue,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
            }
        }
        match rx.recv_timeout(std::time::Duration::from_millis(1)) {
            Ok(r) => return Ok(r),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    Err(Error::Usage(
        "a chunk encoder stopped without a result (it panicked)".into(),
    ))
}

thread_local! {
    static ENCODE_SCRATCH: std::cell::RefCell<EncodeScratch> = std::cell::RefCell::new(EncodeScratch::default());
}

fn byte_len(name: &str, dtype: Dtype, shape: &[u64]) -> Result<u64> {
    shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.width() as u64))
        .ok_or_else(|| Error::Usage(format!("tensor {name:?}: shape {shape:?} overflows")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::SliceSource;
    use crate::{Archive, NoBase, ReadLimits};

    /// Pseudo-random f32 weights and a perturbed copy (the base).
    fn weights(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
        let mut x = seed | 1;
        let (mut t, mut b) = (Vec::with_capacity(n * 4), Vec::with_capacity(n * 4));
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let w = 0x3c00_0000u32 | (x as u32 & 0x00ff_ffff);
            // Low-precision stretch at the start, as an embedding's untrained rows.
            let w = if i < n / 5 { w & !0x1fff } else { w };
            t.extend_from_slice(&w.to_le_bytes());
            let d = if (x >> 40) % 3 == 0 {
                0
            } else {
                (x >> 50) as u32 & 0xff
            };
            b.extend_from_slice(&w.wrapping_sub(d).to_le_bytes());
        }
        (t, b)
    }

    #[test]
    fn sliced_maps_a_reader_would_reject_are_refused_before_writing() {
        // A base shape whose element count overflows (the reader refuses
        // it), rows whose byte length overflows (an empty F32 target: any
        // row length divides 0), and rows that do not tile the base.
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            ArchiveWriter::create(dir.path().join("a.tpde"), WriteOptions::default()).unwrap();
        let file = w.add_base_file(BaseFile {
            name: "b".into(),
            size: 0,
            sha256: [0; 32],
        });
        let empty = SliceSource(&[]);
        for (dtype, shape, base_shape, row_elems, want) in [
            (
                Dtype::U8,
                vec![12u64],
                vec![1u64 << 40, 1 << 40],
                3u64,
                "overflows",
            ),
            (Dtype::F32, vec![0], vec![0], u64::MAX, "overflows"),
            (Dtype::U8, vec![12], vec![7], 3, "do not tile"),
        ] {
            let twelve = [0u8; 12];
            let src = SliceSource(&twelve[..shape[0] as usize]);
            let ext = BaseInput::External {
                file,
                name: "b",
                sha256: [0; 32],
                dtype,
                source: &empty,
            };
            let rows = BaseInput::Rows {
                base: &ext,
                base_shape: &base_shape,
                rows: &[],
                row_elems: Some(row_elems),
            };
            let e = w
                .add_tensor("t", dtype, &shape, &src, rows, &mut |_| {})
                .unwrap_err();
            assert!(
                matches!(&e, Error::Usage(m) if m.contains(want)),
                "{shape:?} {base_shape:?} {row_elems}: {e}"
            );
        }
    }

    /// Many tensors, small and large (several chunks, chosen sizes), with
    /// inline bases: the archive is the same bytes on 1, 2 and 3 threads
    /// (chunks of several tensors are in flight at once), and decodes.
    fn pack_on(threads: usize, dir: &Path, plain: bool) -> Vec<u8> {
        let shapes: &[usize] = &[384, 5000, 300_000, 7, 140_000, 1];
        let data: Vec<_> = shapes
            .iter()
            .enumerate()
            .map(|(i, &n)| weights(n, 1234 + i as u64))
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let dest = dir.join(format!("t{threads}-{plain}.tpde"));
        pool.install(|| {
            let mut w = ArchiveWriter::create(
                &dest,
                WriteOptions::default()
                    .with_plain_bases(plain)
                    .with_overwrite(true),
            )
            .unwrap();
            let names: Vec<String> = (0..data.len()).map(|i| format!("t{i}")).collect();
            let shapes: Vec<[u64; 1]> = data.iter().map(|(t, _)| [(t.len() / 4) as u64]).collect();
            let header = crate::safetensors::make_header(
                &names
                    .iter()
                    .zip(&shapes)
                    .map(|(n, s)| (n.as_str(), Dtype::F32, &s[..]))
                    .collect::<Vec<_>>(),
            );
            let mut file = Sha256::new();
            file.update((header.len() as u64).to_le_bytes());
            file.update(&header);
            let size =
                8 + header.len() as u64 + data.iter().map(|(t, _)| t.len() as u64).sum::<u64>();
            let mut ids = Vec::new();
            for (i, (t, b)) in data.iter().enumerate() {
                let shape = [(t.len() / 4) as u64];
                let bsrc = SliceSource(b);
                let index = w
                    .add_base(&format!("b{i}"), Dtype::F32, &shape, &bsrc)
                    .unwrap();
                let base = BaseInput::Inline {
                    index,
                    dtype: Dtype::F32,
                    source: &bsrc,
                };
                ids.push(
                    w.add_tensor(
                        &format!("t{i}"),
                        Dtype::F32,
                        &shape,
                        &SliceSource(t),
                        base,
                        &mut |bytes| file.update(bytes),
                    )
                    .unwrap(),
                );
            }
            w.add_file(FileRecord {
                name: "m.safetensors".into(),
                size,
                sha256: file.finalize().into(),
                header,
                tensors: ids,
            });
            w.finish().unwrap();
        });
        let bytes = std::fs::read(&dest).unwrap();
        let a = Archive::from_bytes(bytes.as_slice(), ReadLimits::default()).unwrap();
        for (i, (t, _)) in data.iter().enumerate() {
            assert_eq!(&a.decode_tensor(&format!("t{i}"), &NoBase).unwrap(), t);
        }
        bytes
    }

    #[test]
    fn archives_do_not_depend_on_the_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        for plain in [false, true] {
            let one = pack_on(1, dir.path(), plain);
            assert_eq!(one, pack_on(2, dir.path(), plain), "plain bases: {plain}");
            assert_eq!(one, pack_on(3, dir.path(), plain), "plain bases: {plain}");
        }
    }

    /// A source that fails once reads pass `fail_at` bytes.
    struct Failing<'a>(&'a [u8], u64);

    impl ByteSource for Failing<'_> {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            if offset + buf.len() as u64 > self.1 {
                return Err(std::io::Error::other("disk went away"));
            }
            let at = offset as usize;
            buf.copy_from_slice(&self.0[at..at + buf.len()]);
            Ok(())
        }
        fn path(&self) -> &Path {
            Path::new("failing")
        }
    }

    #[test]
    fn a_failed_tensor_poisons_finish() {
        // The source fails part way through the second chunk: the record is
        // half built, so finish must refuse and write nothing.
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.tpde");
        let (t, _) = weights(3 << 16, 7);
        let mut w = ArchiveWriter::create(&dest, WriteOptions::default().with_chunk_elems(1 << 16))
            .unwrap();
        let n = (t.len() / 4) as u64;
        let bad = Failing(&t, (t.len() / 2) as u64);
        assert!(w
            .add_tensor("t", Dtype::F32, &[n], &bad, BaseInput::None, &mut |_| {})
            .is_err());
        assert!(matches!(w.finish(), Err(Error::Usage(m)) if m.contains("incomplete")));
        assert!(!dest.exists());
    }

    #[test]
    fn chunks_readers_refuse_are_not_written() {
        // 2^29 F32 elements are 2 GiB per chunk: over every default reader's
        // max_chunk_raw_bytes, even for a 10-element tensor.
        let dir = tempfile::tempdir().unwrap();
        let mut w = ArchiveWriter::create(
            dir.path().join("x.tpde"),
            WriteOptions::default().with_chunk_elems(1 << 29),
        )
        .unwrap();
        let t = vec![0u8; 40];
        let r = w.add_tensor(
            "t",
            Dtype::F32,
            &[10],
            &SliceSource(&t),
            BaseInput::None,
            &mut |_| {},
        );
        assert!(matches!(r, Err(Error::Usage(m)) if m.contains("max_chunk_raw_bytes")));
        // 2^28 two-byte elements (512 MiB) are fine.
        let mut w = ArchiveWriter::create(
            dir.path().join("y.tpde"),
            WriteOptions::default().with_chunk_elems(1 << 28),
        )
        .unwrap();
        let t = vec![0u8; 20];
        w.add_tensor(
            "t",
            Dtype::BF16,
            &[10],
            &SliceSource(&t),
            BaseInput::None,
            &mut |_| {},
        )
        .unwrap();
    }
}
