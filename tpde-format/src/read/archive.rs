//! The archive reader: a validated view over the archive's bytes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use bincode::Options;
use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use super::base::BaseProvider;
use super::validate;
use crate::codec::chunk::{self, DecodeScratch};
use crate::codec::combine::DenseBase;
use crate::codec::{dequant, rows, widen};
use crate::digest::sha256_two;
use crate::error::{hex, Error, Location, Result};
use crate::format::{
    bincode_options, BaseRef, Chunk, Dtype, Header, Index, Payload, RowRun, ScaleAxis,
    TensorRecord, FLAG_INDEX_ZSTD, HEADER_LEN,
};
use crate::limits::ReadLimits;

thread_local! {
    static SCRATCH: RefCell<DecodeScratch> = RefCell::new(DecodeScratch::default());
    /// Narrow base elements of one chunk, before widening.
    static WIDEN_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A validated archive over bytes `D` (an mmap, a `Vec<u8>`, a `&[u8]`).
///
/// Opening checks the header, the index checksum and every rule of the
/// index and layout (spec §2–§4) before any length is trusted; chunk CRCs
/// are checked as chunks are decoded.
#[derive(Debug)]
pub struct Archive<D> {
    data: D,
    header: Header,
    index: Index,
    by_name: HashMap<String, usize>,
    /// CRC of each plain blob, computed once (bases first, then targets).
    plain_crc: Vec<OnceLock<u32>>,
}

/// Which table a tensor lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// [`Index::tensors`].
    Target,
    /// [`Index::bases`] (inline bases).
    Base,
}

/// The base a target tensor combines with, resolved and checked.
#[derive(Debug, Clone, Copy)]
pub enum BaseView<'a> {
    /// All-zero bits.
    Zero,
    /// Bytes already in memory (an external base, or a plain inline base).
    Bytes(&'a [u8]),
    /// A chunked inline base: decode its ranges on demand.
    Inline(usize),
    /// (v1.1) A narrower float base, widened exactly to the target's dtype
    /// (spec §6.2): its source and its dtype.
    Widened(WidenSource<'a>, Dtype),
    /// (v1.2) Rows of a base of the same dtype (spec §6.3): the base's bytes,
    /// the row map, and the bytes per row.
    Rows(WidenSource<'a>, &'a [RowRun], u64),
    /// (v1.2) A quantized base (spec §6.4).
    Dequant(DequantView<'a>),
}

/// (v1.2) A quantized base, resolved: where its codes and scales come from.
#[derive(Debug, Clone, Copy)]
pub struct DequantView<'a> {
    /// The codes (one byte per target element).
    pub q: WidenSource<'a>,
    /// True for I8 codes, false for U8.
    pub signed: bool,
    /// The F32 scales.
    pub scale: WidenSource<'a>,
    /// Which elements share a scale.
    pub axis: ScaleAxis,
    /// Elements per row of the target.
    pub row_elems: u64,
}

/// Where a widened or row-mapped base's elements come from.
#[derive(Debug, Clone, Copy)]
pub enum WidenSource<'a> {
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// A chunked inline base.
    Inline(usize),
}

impl<'a> From<WidenSource<'a>> for BaseView<'a> {
    fn from(src: WidenSource<'a>) -> Self {
        match src {
            WidenSource::Bytes(b) => BaseView::Bytes(b),
            WidenSource::Inline(i) => BaseView::Inline(i),
        }
    }
}

/// `actual`, the SHA-256 computed over the bytes of tensor `rec` as
/// reconstructed, against the digest recorded for it (spec §9 step 3):
/// [`Error::TensorDigest`] naming the tensor when they differ.
pub fn check_tensor_digest(rec: &TensorRecord, actual: &[u8; 32]) -> Result<()> {
    if *actual != rec.sha256 {
        return Err(Error::TensorDigest {
            tensor: rec.name.clone(),
            expected: hex(&rec.sha256),
            actual: hex(actual),
        });
    }
    Ok(())
}

impl Archive<memmap2::Mmap> {
    /// Memory-maps and opens the archive at `path` with default limits.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_limits(path, ReadLimits::default())
    }

    /// Memory-maps and opens the archive at `path`.
    pub fn open_with_limits(path: impl AsRef<Path>, limits: ReadLimits) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only. Another process truncating or
        // rewriting the file while it is mapped can change the bytes under
        // us (or raise SIGBUS); tpde's own writers never modify a file in
        // place (they write a temp file and rename), and every byte read is
        // still validated, so such a change yields an error, not UB in Rust.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Archive::from_bytes(map, limits)
    }
}

impl<D: AsRef<[u8]> + Sync> Archive<D> {
    /// Parses and validates an archive held in `data`.
    pub fn from_bytes(data: D, limits: ReadLimits) -> Result<Self> {
        let bytes = data.as_ref();
        let header = Header::parse(bytes)?;
        let actual = bytes.len() as u64;
        if header.file_len != actual {
            return Err(Error::LengthMismatch {
                expected: header.file_len,
                actual,
            });
        }
        if header.index_offset < HEADER_LEN as u64
            || header.index_offset.checked_add(header.index_len) != Some(header.file_len)
        {
            return Err(Error::BadHeader {
                reason: "index must lie between the header and the end of the file",
            });
        }
        if header.index_len > limits.max_index_bytes {
            return Err(Error::LimitExceeded {
                what: "max_index_bytes",
                value: header.index_len,
                limit: limits.max_index_bytes,
            });
        }
        // In range: index_offset + index_len == file_len == bytes.len().
        let index_bytes = &bytes[header.index_offset as usize..];
        let computed = header.compute_crc(index_bytes);
        if computed != header.crc32 {
            return Err(Error::IndexChecksum {
                stored: header.crc32,
                computed,
            });
        }
        header.check_features()?;
        let unpacked;
        let index_bytes = if header.flags & FLAG_INDEX_ZSTD != 0 {
            unpacked = crate::codec::index::decode(index_bytes, limits.max_index_bytes).map_err(
                |reason| Error::IndexDecode {
                    reason: reason.to_string(),
                },
            )?;
            &unpacked[..]
        } else {
            index_bytes
        };
        let index: Index = bincode_options(index_bytes.len() as u64)
            .deserialize(index_bytes)
            .map_err(|e| Error::IndexDecode {
                reason: e.to_string(),
            })?;
        validate::validate(bytes, &header, &index, &limits)?;
        let by_name = index
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let plain_crc = (0..index.bases.len() + index.tensors.len())
            .map(|_| OnceLock::new())
            .collect();
        Ok(Archive {
            data,
            header,
            index,
            by_name,
            plain_crc,
        })
    }

    /// The decoded header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The validated index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The archive's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.data.as_ref()
    }

    /// Index of the target tensor called `name`.
    pub fn tensor_index(&self, name: &str) -> Result<usize> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| Error::NoSuchTensor {
                name: name.to_owned(),
            })
    }

    /// A tensor record by table and index (indices come from this index).
    pub fn record(&self, table: Table, i: usize) -> &TensorRecord {
        match table {
            Table::Target => &self.index.tensors[i],
            Table::Base => &self.index.bases[i],
        }
    }

    /// A chunk's stored bytes after checking its CRC (spec §5.1).
    pub fn chunk_bytes(&self, table: Table, t: usize, i: usize, c: &Chunk) -> Result<&[u8]> {
        // Validated: the blob lies inside the data section.
        let bytes = &self.bytes()[c.offset as usize..(c.offset + c.stored_len) as usize];
        let computed = crc32fast::hash(bytes);
        if computed != c.crc32 {
            return Err(Error::ChunkChecksum {
                location: self.chunk_loc(table, t, i),
                stored: c.crc32,
                computed,
            });
        }
        Ok(bytes)
    }

    /// A plain payload's bytes, zero-copy, after checking its CRC once.
    pub fn plain_bytes(&self, table: Table, t: usize) -> Result<Option<&[u8]>> {
        let rec = self.record(table, t);
        let Payload::Plain { offset, len, crc32 } = rec.payload else {
            return Ok(None);
        };
        let bytes = &self.bytes()[offset as usize..(offset + len) as usize];
        let slot = match table {
            Table::Base => t,
            Table::Target => self.index.bases.len() + t,
        };
        let computed = *self.plain_crc[slot].get_or_init(|| crc32fast::hash(bytes));
        if computed != crc32 {
            return Err(Error::ChunkChecksum {
                location: Location::Tensor {
                    name: rec.name.clone(),
                    base: table == Table::Base,
                },
                stored: crc32,
                computed,
            });
        }
        Ok(Some(bytes))
    }

    fn chunk_loc(&self, table: Table, t: usize, i: usize) -> Location {
        Location::Chunk {
            tensor: self.record(table, t).name.clone(),
            base: table == Table::Base,
            chunk: i as u64,
        }
    }

    /// Resolves the base of target tensor `t`. An external base tensor is
    /// looked up in `base` and its SHA-256 checked against the archive.
    pub fn resolve_base<'a>(
        &'a self,
        t: usize,
        base: &'a dyn BaseProvider,
    ) -> Result<BaseView<'a>> {
        self.resolve_base_checked(t, base, true)
    }

    /// [`Archive::resolve_base`], computing an external base tensor's
    /// SHA-256 only when `check_digest` is set (its dtype, shape and length
    /// are checked always). Unchecked is for a caller that checks the
    /// reconstruction's own digest before handing anything out, and checks
    /// the base's digest only to name it as the cause of a mismatch
    /// (spec §4.5, §9): a pass of SHA-256 over the base saved.
    pub fn resolve_base_checked<'a>(
        &'a self,
        t: usize,
        base: &'a dyn BaseProvider,
        check_digest: bool,
    ) -> Result<BaseView<'a>> {
        let rec = &self.index.tensors[t];
        let inline = |index: u32| -> Result<WidenSource<'a>> {
            let i = index as usize;
            Ok(match self.plain_bytes(Table::Base, i)? {
                Some(b) => WidenSource::Bytes(b),
                None => WidenSource::Inline(i),
            })
        };
        let external =
            |file: u32, name: &String, sha256: &[u8; 32], dtype: Dtype, shape: &[u64]| {
                let bf = &self.index.base_files[file as usize];
                let missing = || Error::MissingBase {
                    tensor: rec.name.clone(),
                    file: bf.name.clone(),
                    file_sha256: hex(&bf.sha256),
                };
                let bt = base.base_tensor(name).ok_or_else(missing)?;
                let actual: Option<[u8; 32]> = check_digest.then(|| Sha256::digest(bt.data).into());
                // The length too: a provider handing out fewer bytes than
                // the shape needs must not reach the slicing below, even if
                // a hostile archive recorded the digest of those bytes.
                let want = shape
                    .iter()
                    .try_fold(dtype.width() as u64, |a, &d| a.checked_mul(d));
                if bt.dtype != dtype
                    || bt.shape != shape
                    || want != Some(bt.data.len() as u64)
                    || actual.is_some_and(|a| &a != sha256)
                {
                    return Err(Error::BaseMismatch {
                        tensor: name.clone(),
                        expected: hex(sha256),
                        actual: hex(&Sha256::digest(bt.data)),
                    });
                }
                Ok(bt.data)
            };
        // Validated at open: a row map fits both shapes (a 0-d tensor or an
        // overflowing row size, possible only with zero rows, has no runs),
        // and a sliced base's rows tile both tensors.
        let row_bytes = rec
            .base
            .row_map(&rec.shape)
            .map_or(0, |(_, e)| e.saturating_mul(rec.dtype.width() as u64));
        // A quantized base's per-row scales: rows along the first dimension.
        let row_elems = rows::row_bytes(&rec.shape, 1).unwrap_or(0);
        Ok(match &rec.base {
            BaseRef::None => BaseView::Zero,
            BaseRef::Inline { index } => inline(*index)?.into(),
            BaseRef::InlineWidened { index } => {
                let from = self.index.bases[*index as usize].dtype;
                BaseView::Widened(inline(*index)?, from)
            }
            BaseRef::External { file, name, sha256 } => {
                BaseView::Bytes(external(*file, name, sha256, rec.dtype, &rec.shape)?)
            }
            BaseRef::InlineRows { index, rows } | BaseRef::InlineSlices { index, rows, .. } => {
                BaseView::Rows(inline(*index)?, rows, row_bytes)
            }
            BaseRef::InlineDequant { q, scale, axis } => BaseView::Dequant(DequantView {
                q: inline(*q)?,
                signed: self.index.bases[*q as usize].dtype == Dtype::I8,
                scale: inline(*scale)?,
                axis: *axis,
                row_elems,
            }),
            BaseRef::ExternalDequant {
                file,
                q_name,
                q_sha256,
                q_dtype,
                scale_name,
                scale_sha256,
                scale_shape,
                axis,
            } => BaseView::Dequant(DequantView {
                q: WidenSource::Bytes(external(*file, q_name, q_sha256, *q_dtype, &rec.shape)?),
                signed: *q_dtype == Dtype::I8,
                scale: WidenSource::Bytes(external(
                    *file,
                    scale_name,
                    scale_sha256,
                    Dtype::F32,
                    scale_shape,
                )?),
                axis: *axis,
                row_elems,
            }),
            BaseRef::ExternalRows {
                file,
                name,
                sha256,
                shape,
                rows,
            }
            | BaseRef::ExternalSlices {
                file,
                name,
                sha256,
                shape,
                rows,
                ..
            } => BaseView::Rows(
                WidenSource::Bytes(external(*file, name, sha256, rec.dtype, shape)?),
                rows,
                row_bytes,
            ),
            BaseRef::ExternalWidened {
                file,
                name,
                sha256,
                dtype,
            } => BaseView::Widened(
                WidenSource::Bytes(external(*file, name, sha256, *dtype, &rec.shape)?),
                *dtype,
            ),
        })
    }

    /// Fills `out` with elements `range` of `table[t]`, which must have no base
    /// (an inline base or a standalone tensor).
    fn read_baseless(
        &self,
        table: Table,
        t: usize,
        range: Range<u64>,
        out: &mut [u8],
    ) -> Result<()> {
        let rec = self.record(table, t);
        let w = rec.dtype.width() as u64;
        if let Some(b) = self.plain_bytes(table, t)? {
            out.copy_from_slice(&b[(range.start * w) as usize..(range.end * w) as usize]);
            return Ok(());
        }
        let Payload::Chunked {
            chunk_elems,
            chunks,
            ..
        } = &rec.payload
        else {
            return Ok(());
        };
        let first = range.start / chunk_elems;
        let last = range.end.div_ceil(*chunk_elems);
        for ci in first..last {
            let c = &chunks[ci as usize];
            let lo = range.start.max(c.elem_start);
            let hi = range.end.min(c.elem_start + c.elem_count);
            let dst =
                &mut out[((lo - range.start) * w) as usize..((hi - range.start) * w) as usize];
            if lo == c.elem_start && hi == c.elem_start + c.elem_count {
                dst.fill(0);
                self.decode_chunk(table, t, ci as usize, dst)?;
            } else {
                let mut tmp = vec![0u8; (c.elem_count * w) as usize];
                self.decode_chunk(table, t, ci as usize, &mut tmp)?;
                dst.copy_from_slice(
                    &tmp[((lo - c.elem_start) * w) as usize..((hi - c.elem_start) * w) as usize],
                );
            }
        }
        Ok(())
    }

    /// Fills `out` with the predictor of a row-mapped or sliced base (spec
    /// §6.3) for the target bytes starting at `start`. A chunked inline base
    /// is decoded chunk by chunk as the segments walk it, one chunk held at a
    /// time (a sliced base's segments may return to a chunk, which is then
    /// decoded again: §6.3.1's work bound counts every run's chunks).
    fn predict_rows(
        &self,
        src: WidenSource<'_>,
        map: &[RowRun],
        row_bytes: u64,
        start: u64,
        out: &mut [u8],
    ) -> Result<()> {
        let range = start..start + out.len() as u64;
        let bi = match src {
            WidenSource::Bytes(b) => {
                rows::predict(map, row_bytes, b, range, out);
                return Ok(());
            }
            WidenSource::Inline(bi) => bi,
        };
        out.fill(0);
        let rec = self.record(Table::Base, bi);
        let w = rec.dtype.width() as u64;
        let Payload::Chunked { chunks, .. } = &rec.payload else {
            return Ok(()); // a plain base resolves to `WidenSource::Bytes`
        };
        let mut held: Option<(usize, Vec<u8>)> = None;
        for s in rows::segments(map, row_bytes, range) {
            let mut dst = (s.target - start) as usize;
            let (mut e, end) = (s.base / w, (s.base + s.len) / w);
            while e < end {
                // Chunks tile the tensor in order (validated at open).
                let ci = chunks.partition_point(|c| c.elem_start + c.elem_count <= e);
                let c = &chunks[ci];
                if held.as_ref().map(|h| h.0) != Some(ci) {
                    let mut buf = vec![0u8; (c.elem_count * w) as usize];
                    self.decode_chunk(Table::Base, bi, ci, &mut buf)?;
                    held = Some((ci, buf));
                }
                let Some((_, buf)) = &held else { break };
                let hi = end.min(c.elem_start + c.elem_count);
                let n = ((hi - e) * w) as usize;
                let from = ((e - c.elem_start) * w) as usize;
                out[dst..dst + n].copy_from_slice(&buf[from..from + n]);
                dst += n;
                e = hi;
            }
        }
        Ok(())
    }

    /// Fills `out` with the predictor of a quantized base (spec §6.4) for
    /// target elements `range`: the codes under the range, the scales its
    /// elements use.
    fn predict_dequant(&self, d: DequantView<'_>, range: Range<u64>, out: &mut [u8]) -> Result<()> {
        let sr = dequant::scale_range(d.axis, d.row_elems, range.clone());
        let mut scale_buf = Vec::new();
        let scales: &[u8] = match d.scale {
            WidenSource::Bytes(b) => &b[(sr.start * 4) as usize..(sr.end * 4) as usize],
            WidenSource::Inline(si) => {
                scale_buf.resize(((sr.end - sr.start) * 4) as usize, 0);
                self.read_baseless(Table::Base, si, sr.clone(), &mut scale_buf)?;
                &scale_buf
            }
        };
        WIDEN_SCRATCH.with(|s| -> Result<()> {
            let mut codes = s.borrow_mut();
            let q: &[u8] = match d.q {
                WidenSource::Bytes(b) => &b[range.start as usize..range.end as usize],
                WidenSource::Inline(qi) => {
                    codes.clear();
                    codes.resize((range.end - range.start) as usize, 0);
                    self.read_baseless(Table::Base, qi, range.clone(), &mut codes)?;
                    &codes
                }
            };
            dequant::predict(
                q,
                d.signed,
                scales,
                sr.start,
                d.axis,
                d.row_elems,
                range.start,
                out,
            );
            Ok(())
        })
    }

    /// Decodes chunk `i` of `table[t]` over `out`, which holds the base range.
    fn decode_chunk(&self, table: Table, t: usize, i: usize, out: &mut [u8]) -> Result<()> {
        self.decode_chunk_over(table, t, i, DenseBase::InPlace, out)
    }

    /// [`Archive::decode_chunk`] with the chunk's base read from `base`.
    fn decode_chunk_over(
        &self,
        table: Table,
        t: usize,
        i: usize,
        base: DenseBase<'_>,
        out: &mut [u8],
    ) -> Result<()> {
        let rec = self.record(table, t);
        let Payload::Chunked { chunks, .. } = &rec.payload else {
            return Ok(());
        };
        let c = &chunks[i];
        let stored = self.chunk_bytes(table, t, i, c)?;
        SCRATCH
            .with(|s| {
                let w = rec.dtype.width();
                chunk::decode_over(c, w, stored, base, out, &mut s.borrow_mut())
            })
            .map_err(|reason| Error::ChunkDecode {
                location: self.chunk_loc(table, t, i),
                reason,
            })
    }

    /// Decodes the chunks `chunks` of target tensor `t` into `out` (whose
    /// length is those chunks' bytes), in parallel, against `base`. No
    /// digest is checked (the chunks' CRCs are).
    pub fn decode_chunks_into(
        &self,
        t: usize,
        chunks: Range<usize>,
        base: BaseView<'_>,
        out: &mut [u8],
    ) -> Result<()> {
        self.decode_chunks(t, chunks, base, out, false)
    }

    /// [`Archive::decode_chunks_into`], then each chunk's SHA-256 checked
    /// against its recorded digest where the payload has them (v1.7, spec
    /// §4.6.3), on the thread that decoded it: the chunks are then proven
    /// in parallel, where a tensor digest is one serial SHA-256 stream.
    pub fn decode_chunks_checked(
        &self,
        t: usize,
        chunks: Range<usize>,
        base: BaseView<'_>,
        out: &mut [u8],
    ) -> Result<()> {
        self.decode_chunks(t, chunks, base, out, true)
    }

    fn decode_chunks(
        &self,
        t: usize,
        chunks: Range<usize>,
        base: BaseView<'_>,
        out: &mut [u8],
        check: bool,
    ) -> Result<()> {
        let rec = &self.index.tensors[t];
        let w = rec.dtype.width() as u64;
        match &rec.payload {
            Payload::Plain { .. } => {
                let b = self.plain_bytes(Table::Target, t)?.unwrap_or_default();
                out.copy_from_slice(b);
                Ok(())
            }
            Payload::Chunked {
                chunk_elems,
                chunks: cs,
                ..
            } => {
                let Some(sel) = cs.get(chunks.clone()) else {
                    return Err(Error::Usage(format!("chunk range {chunks:?} out of range")));
                };
                let want: u64 = sel.iter().map(|c| c.elem_count * w).sum();
                if want != out.len() as u64 {
                    return Err(Error::Usage("output buffer has the wrong length".into()));
                }
                let step = (chunk_elems * w) as usize;
                // With chunk digests to check, chunks go two at a time, so
                // that their digests are computed together (two SHA-256
                // streams interleave: `sha256_two`). Chunks are uniform but
                // for a tensor's last, so byte and chunk pairs line up.
                let per = if check && rec.payload.has_chunk_digests() {
                    2
                } else {
                    1
                };
                // `find_first`, not `try_for_each`: when several chunks are
                // bad, report the lowest-numbered one, so the error does not
                // depend on thread count or scheduling (found by the
                // `equivalence` fuzz target). Within a pair, too, chunk
                // order decides which error is reported.
                out.par_chunks_mut((step * per).max(1))
                    .zip(sel.par_chunks(per))
                    .enumerate()
                    .map(|(j, (o, cs))| -> Result<()> {
                        let first = chunks.start + j * per;
                        let Some((c0, rest)) = cs.split_first() else {
                            return Ok(());
                        };
                        if per == 1 {
                            return self.decode_target_chunk(t, first, c0, base, o);
                        }
                        let (o0, o1) = o.split_at_mut((c0.elem_count * w) as usize);
                        self.decode_target_chunk(t, first, c0, base, o0)?;
                        let second = rest
                            .first()
                            .map(|c1| self.decode_target_chunk(t, first + 1, c1, base, o1));
                        let (d0, d1) = match second {
                            Some(Ok(())) => {
                                let (d0, d1) = sha256_two(o0, o1);
                                (d0, Some(d1))
                            }
                            _ => (Sha256::digest(&*o0).into(), None),
                        };
                        self.check_chunk_digest(t, first, &d0)?;
                        second.transpose()?;
                        match d1 {
                            Some(d1) => self.check_chunk_digest(t, first + 1, &d1),
                            None => Ok(()),
                        }
                    })
                    .find_first(Result::is_err)
                    .unwrap_or(Ok(()))
            }
        }
    }

    /// Decodes chunk `i` (descriptor `c`) of target tensor `t` into `o`
    /// against `base`, checking nothing but its CRC.
    fn decode_target_chunk(
        &self,
        t: usize,
        i: usize,
        c: &Chunk,
        base: BaseView<'_>,
        o: &mut [u8],
    ) -> Result<()> {
        let rec = &self.index.tensors[t];
        let w = rec.dtype.width() as u64;
        let range = c.elem_start..c.elem_start + c.elem_count;
        // A base the chunk reads where it is (no copy into `o` first), else
        // one built in `o`.
        let mut over = DenseBase::InPlace;
        match base {
            BaseView::Zero => over = DenseBase::Zero,
            BaseView::Bytes(b) => {
                over = DenseBase::Bytes(&b[(range.start * w) as usize..(range.end * w) as usize])
            }
            BaseView::Inline(bi) => self.read_baseless(Table::Base, bi, range, o)?,
            BaseView::Rows(src, map, row_bytes) => {
                self.predict_rows(src, map, row_bytes, range.start * w, o)?
            }
            BaseView::Dequant(d) => self.predict_dequant(d, range, o)?,
            BaseView::Widened(src, from) => {
                let fw = from.width() as u64;
                WIDEN_SCRATCH.with(|s| -> Result<()> {
                    let mut narrow = s.borrow_mut();
                    narrow.clear();
                    match src {
                        WidenSource::Bytes(b) => narrow.extend_from_slice(
                            &b[(range.start * fw) as usize..(range.end * fw) as usize],
                        ),
                        WidenSource::Inline(bi) => {
                            narrow.resize(((range.end - range.start) * fw) as usize, 0);
                            self.read_baseless(Table::Base, bi, range, &mut narrow)?;
                        }
                    }
                    widen::widen(from, rec.dtype, &narrow, o);
                    Ok(())
                })?
            }
        }
        self.decode_chunk_over(Table::Target, t, i, over, o)
    }

    /// `actual`, the SHA-256 of chunk `i` of target tensor `t` as
    /// reconstructed, against the digest recorded for it (if any).
    fn check_chunk_digest(&self, t: usize, i: usize, actual: &[u8; 32]) -> Result<()> {
        match self.index.tensors[t].payload.chunk_digest(i) {
            Some(expected) if expected != actual => Err(Error::ChunkDigest {
                location: self.chunk_loc(Table::Target, t, i),
                expected: hex(expected),
                actual: hex(actual),
            }),
            _ => Ok(()),
        }
    }

    /// Number of chunks of target tensor `t` (1 for a plain payload).
    pub fn chunk_count(&self, t: usize) -> usize {
        match &self.index.tensors[t].payload {
            Payload::Plain { .. } => 1,
            Payload::Chunked { chunks, .. } => chunks.len(),
        }
    }

    /// Byte length of chunks `range` of target tensor `t`.
    pub fn chunks_byte_len(&self, t: usize, range: Range<usize>) -> u64 {
        let rec = &self.index.tensors[t];
        match &rec.payload {
            Payload::Plain { len, .. } => *len,
            Payload::Chunked { chunks, .. } => chunks
                .get(range)
                .unwrap_or_default()
                .iter()
                .map(|c| c.elem_count * rec.dtype.width() as u64)
                .sum(),
        }
    }

    /// Decodes target tensor `t` into `out` (exactly its byte length) and
    /// checks its digest: each chunk's where the payload records them
    /// (v1.7, in parallel), else the tensor's SHA-256 (spec §9). The
    /// external base's digest is checked first.
    pub fn decode_into(&self, t: usize, base: &dyn BaseProvider, out: &mut [u8]) -> Result<()> {
        let view = self.resolve_base(t, base)?;
        self.decode_proven(t, view, out)
    }

    /// Decodes target tensor `t` over `view` into `out` and checks its
    /// chunk digests (v1.7) or, without them, its tensor digest.
    pub(crate) fn decode_proven(&self, t: usize, view: BaseView<'_>, out: &mut [u8]) -> Result<()> {
        let rec = &self.index.tensors[t];
        let all = 0..self.chunk_count(t);
        if rec.payload.has_chunk_digests() {
            return self.decode_chunks_checked(t, all, view, out);
        }
        self.decode_chunks_into(t, all, view, out)?;
        check_tensor_digest(rec, &Sha256::digest(&*out).into())
    }

    /// Decodes the target tensor called `name`, checking its digest.
    pub fn decode_tensor(&self, name: &str, base: &dyn BaseProvider) -> Result<Vec<u8>> {
        let t = self.tensor_index(name)?;
        // Validated against ReadLimits::max_tensor_bytes at open.
        let len = self.index.tensors[t].byte_len().unwrap_or(0);
        let mut out = vec![0u8; len as usize];
        self.decode_into(t, base, &mut out)?;
        Ok(out)
    }

    /// Checks every chunk and plain blob CRC without decoding (fast).
    pub fn check_crcs(&self) -> Result<()> {
        self.check_crcs_with(&mut |_| {})
    }

    /// [`Archive::check_crcs`], calling `progress` with the stored bytes
    /// checked as it goes (after each group of tensors of about 32 MiB).
    pub fn check_crcs_with(&self, progress: &mut dyn FnMut(u64)) -> Result<()> {
        const GROUP_BYTES: u64 = 32 << 20;
        for (table, list) in [
            (Table::Base, &self.index.bases),
            (Table::Target, &self.index.tensors),
        ] {
            let mut first = 0;
            while first < list.len() {
                let mut end = first;
                let mut bytes = 0u64;
                while end < list.len() && (end == first || bytes < GROUP_BYTES) {
                    bytes = bytes.saturating_add(list[end].stored_bytes());
                    end += 1;
                }
                // The first bad blob in index order, whatever the scheduling.
                list[first..end]
                    .par_iter()
                    .enumerate()
                    .map(|(k, rec)| {
                        let t = first + k;
                        match &rec.payload {
                            Payload::Plain { .. } => self.plain_bytes(table, t).map(|_| ()),
                            Payload::Chunked { chunks, .. } => chunks
                                .par_iter()
                                .enumerate()
                                .map(|(i, c)| self.chunk_bytes(table, t, i, c).map(|_| ()))
                                .find_first(Result::is_err)
                                .unwrap_or(Ok(())),
                        }
                    })
                    .find_first(Result::is_err)
                    .unwrap_or(Ok(()))?;
                progress(bytes);
                first = end;
            }
        }
        Ok(())
    }
}
