//! CPU side of the pipeline: turns one job's stored bytes into the staged
//! form the kernels read, written straight into its region of a (pinned)
//! staging slot.
//!
//! - dense chunk: the values stream decompressed into the region (byte
//!   planes, most significant plane first, exactly as stored raw);
//! - sparse chunk: the gap-encoded positions, either as their raw LEB128
//!   bytes (decoded and validated on the device: the default, about half the
//!   CPU work and PCIe bytes) or decoded here to little-endian `u32`; then
//!   the values planes;
//! - raw piece: the bytes as they are;
//! - row-mapped predictor piece: base rows and zeros, built from the whole
//!   (SHA-256-checked) base held on the host;
//! - dequant piece: the codes (one byte per element), then at the job's
//!   `values_at` the F32 scales they use, each where it lives on the host
//!   (the device multiplies: a code byte crosses PCIe instead of four
//!   predictor bytes).
//!
//! (v1.2) A values stream with `RansBase` planes (spec §5.7) is decoded with
//! the *base context*: the most significant byte of the base element under
//! each value (every element of a dense chunk, the element at each position
//! of a sparse one), where "base" is what the chunk decodes over (zeros, or
//! the widened / row-mapped / dequantized predictor). The kernels build
//! that predictor on the device, so the CPU computes the bytes it needs
//! itself, per chunk and only for such chunks ([`Input::Chunk`]'s `base`):
//! - from host bytes (external or plain inline bases), with the format
//!   crate's pure predictor functions: no extra copy for a plain base, a
//!   chunk-sized predictor otherwise;
//! - from a chunked inline base (which the device decodes into the output or
//!   scratch), by decoding the base chunks under the range on the CPU too:
//!   CPU decode work for those chunks about doubles;
//! - from base memory on the device (`load_onto`, `load_onto_quantized`,
//!   `load_all_onto`), by a synchronous device→host copy of the base bytes
//!   under the chunk (the whole chunk's range, also for a sparse chunk; for
//!   a row-mapped base the span of base rows it uses) before the values
//!   decode. That memory is the caller's, or an in-place target's own
//!   chunk range, which no earlier kernel of the load writes, so the copy
//!   needs no ordering with the pipeline's streams (the CPU reference checks
//!   this for every plan). For a sparse chunk decoded on the device
//!   ([`JobKind::SparseVarint`]) the positions are decoded on the CPU as
//!   well, for the context.
//!
//! With device entropy decoding ([`Job::decoded`], opt-in) a chunk whose
//! values stream is `PerPlane` with rANS planes and no zstd plane is not
//! decoded here: its positions are staged as above and its planes as an
//! *entropy input* (`fill_entropy`: parsed headers, device tables, the
//! coded words), and the `tpde_entropy` kernel decodes them (a group of
//! four threads per chunk of 4-state planes, a warp per chunk of 32-state
//! ones), reading a `RansBase` plane's context from the base in device
//! memory (no base bytes are read on the CPU for it).
//!
//! Every chunk's stored bytes pass their CRC ([`Archive::chunk_bytes`]) and
//! every stream must decode to exactly its declared length, as in the CPU
//! reader.

use std::cell::RefCell;
use std::ops::Range;

use tpde_format::codec::entropy::Lanes;
use tpde_format::codec::rans_layout::{self, PlaneMode, RansLayout};
use tpde_format::codec::{chunk, dequant, positions, rows, stream, widen};
use tpde_format::format::{Chunk, Codec, Dtype, Payload, PlaneCodec, Stream};
use tpde_format::read::Table;
use tpde_format::{Archive, Error as FormatError, Location};

use crate::error::{GpuError, Result};
use crate::plan::{self, BasePlan, Input, Job, JobKind, Piece, WidenSrc};

/// Device memory the CPU side of staging may read: the base bytes under a
/// chunk whose values need the base context when the base lives on the
/// device (see the module docs).
pub trait DeviceRead: Sync {
    /// Copies `out.len()` bytes at device address `addr` into `out`.
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<()>;
}

/// A [`DeviceRead`] for plans with no device memory to read: every read is
/// an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDeviceRead;

impl DeviceRead for NoDeviceRead {
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<()> {
        Err(GpuError::Usage(format!(
            "cannot read {} device bytes at {addr:#x} for a base context: no device",
            out.len()
        )))
    }
}

/// Per-thread buffers, reused across jobs.
#[derive(Default)]
struct Scratch {
    raw: Vec<u8>,
    pos: Vec<u32>,
    ctx: Vec<u8>,
    bufs: Bufs,
    layout: Box<RansLayout>,
}

/// Buffers of the base-context computation.
#[derive(Default)]
struct Bufs {
    /// The predictor under the chunk.
    pred: Vec<u8>,
    /// Narrow elements, codes, or a row-mapped base's span.
    a: Vec<u8>,
    /// Scales.
    b: Vec<u8>,
    /// The inline base chunk decoded last.
    held: Held,
}

/// One decoded chunk of an inline base, kept while one context is computed
/// (a row-mapped base reads many runs from the same chunk).
#[derive(Default)]
struct Held {
    key: Option<(usize, usize)>,
    buf: Vec<u8>,
    scratch: chunk::DecodeScratch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Fills `region` (at least `job.staged` bytes) with the staged form of
/// `job`. `dev` reads base bytes on the device for the base context of
/// chunks over a device base (see the module docs).
pub fn fill_region<D: AsRef<[u8]> + Sync>(
    archive: &Archive<D>,
    job: &Job<'_>,
    region: &mut [u8],
    dev: &dyn DeviceRead,
) -> Result<()> {
    let region = &mut region[..job.staged];
    match job.input {
        Input::None => Ok(()),
        Input::Bytes(b) => {
            region.copy_from_slice(b);
            Ok(())
        }
        Input::Rows {
            base,
            rows: map,
            row_bytes,
            at,
        } => {
            rows::predict(map, row_bytes, base, at..at + region.len() as u64, region);
            Ok(())
        }
        Input::Dequant { q, scales, .. } => {
            // Codes first, scales at `values_at`; what lives in device
            // memory is not staged.
            if let Piece::Host(b) = q {
                region[..b.len()].copy_from_slice(b);
            }
            if let Piece::Host(b) = scales {
                region[job.values_at..job.values_at + b.len()].copy_from_slice(b);
            }
            Ok(())
        }
        Input::Chunk {
            table,
            tensor,
            chunk,
            base,
        } => {
            let rec = archive.record(table, tensor);
            let Payload::Chunked { chunks, .. } = &rec.payload else {
                return Err(GpuError::Usage("staged chunk of a plain tensor".into()));
            };
            let c = &chunks[chunk];
            let stored = archive.chunk_bytes(table, tensor, chunk, c)?;
            let loc = || Location::Chunk {
                tensor: rec.name.clone(),
                base: table == Table::Base,
                chunk: chunk as u64,
            };
            let err = |reason| {
                GpuError::Format(FormatError::ChunkDecode {
                    location: loc(),
                    reason,
                })
            };
            let pos_len = c.positions.stored_len as usize; // validated <= stored_len
            let (pos_bytes, val_bytes) = stored.split_at(pos_len.min(stored.len()));
            let needs_ctx = c.values.uses_base_context();
            let ctx_of = |s: &mut Scratch, positions: bool| -> Result<()> {
                let ps = positions.then_some(s.pos.as_slice());
                let cx = CtxJob {
                    plan: base,
                    chunk_dst: job.dst,
                    dtype: rec.dtype,
                    chunk: c,
                };
                base_context(archive, &cx, ps, dev, &mut s.bufs, &mut s.ctx)
            };
            if job.decoded > 0 {
                return SCRATCH.with(|cell| {
                    let s = &mut *cell.borrow_mut();
                    fill_entropy(job, c, pos_bytes, val_bytes, region, s).map_err(err)
                });
            }
            SCRATCH.with(|cell| -> Result<()> {
                let s = &mut *cell.borrow_mut();
                match job.kind {
                    JobKind::Dense => {
                        if needs_ctx {
                            ctx_of(s, false)?;
                        }
                        let ctx = needs_ctx.then_some(s.ctx.as_slice());
                        stream::decompress_into_with(&c.values, val_bytes, ctx, region).map_err(err)
                    }
                    JobKind::Sparse => {
                        let (pos_out, rest) = region.split_at_mut(job.values_at);
                        stream::decompress(&c.positions, pos_bytes, &mut s.raw).map_err(err)?;
                        positions::decode(&s.raw, job.m as usize, c.elem_count, &mut s.pos)
                            .map_err(err)?;
                        for (o, p) in pos_out.chunks_exact_mut(4).zip(s.pos.iter()) {
                            o.copy_from_slice(&p.to_le_bytes());
                        }
                        if needs_ctx {
                            ctx_of(s, true)?;
                        }
                        let ctx = needs_ctx.then_some(s.ctx.as_slice());
                        stream::decompress_into_with(&c.values, val_bytes, ctx, rest).map_err(err)
                    }
                    JobKind::SparseVarint => {
                        // The gap bytes go up as they are; the device decodes
                        // and validates them.
                        let (pos_out, rest) = region.split_at_mut(job.values_at);
                        let gaps = &mut pos_out[..job.pos_bytes];
                        decompress_into(&c.positions, pos_bytes, gaps).map_err(err)?;
                        if needs_ctx {
                            // The context sits at the positions: decode them
                            // here too (validated as the device would).
                            positions::decode(gaps, job.m as usize, c.elem_count, &mut s.pos)
                                .map_err(err)?;
                            ctx_of(s, true)?;
                        }
                        let ctx = needs_ctx.then_some(s.ctx.as_slice());
                        stream::decompress_into_with(&c.values, val_bytes, ctx, rest).map_err(err)
                    }
                    JobKind::Fill | JobKind::Raw | JobKind::Widen | JobKind::Dequant => Ok(()),
                }
            })
        }
    }
}

/// Stages a chunk whose values the device entropy-decodes
/// ([`Job::decoded`]): the positions as for any sparse chunk (gap bytes or
/// CPU-decoded `u32`s, no base context needed here), then at `values_at`
/// the *entropy input* the `tpde_entropy` kernel reads (all little-endian,
/// offsets from the input's start, every piece 16-byte aligned):
///
/// - header (16 bytes): `u64` gap-stream length (device-decoded positions,
///   else 0), `u32` planes (= width), `u32` interleaved states of the rANS
///   planes (4 or 32: which kernel decodes the job, [`Job::wide`]);
/// - one 64-byte entry per plane: `u8` kind (0 copy, 1 constant, 2 rANS),
///   `u8` context (0 none, 1 the previous decoded plane, 2 the base
///   context), `u8` scale, `u8` buckets, `u8` constant value, 3 zero bytes,
///   `u32` states `x_0..x_3` (4-state planes; zeros for 32-state ones),
///   `u64` data offset (raw bytes or words), `u64` data length in bytes,
///   `u64` tables offset, `u64` offset of the 32 `u32` states (32-state
///   planes; else 0), 8 zero bytes;
/// - per rANS plane its tables ([`plan::entropy_tables_len`]: the context
///   byte -> bucket map, then per bucket `u32 cum[s] | cum[s + 1] << 16` and
///   the 256-entry coarse slot -> symbol index), then (32-state planes)
///   its states ([`plan::ENTROPY_STATES`] bytes), then every plane's data.
///
/// Each rANS plane's header and frequency tables are parsed and checked
/// here by the format crate's own table reader
/// ([`tpde_format::codec::rans_layout`]), so a malformed table is the
/// same error as on the CPU path; the device checks what needs the decode
/// (no word past the end, every word used, final states `2^16`). The
/// planner sends a job here only when all its rANS planes have one lane
/// count ([`plan::entropy_input`]); that is checked again.
fn fill_entropy(
    job: &Job<'_>,
    c: &Chunk,
    pos_stored: &[u8],
    val_bytes: &[u8],
    region: &mut [u8],
    s: &mut Scratch,
) -> Result<(), &'static str> {
    let Codec::PerPlane(planes) = &c.values.codec else {
        return Err("entropy job without a per-plane values stream");
    };
    let w = job.width;
    let (pos_out, input) = region.split_at_mut(job.values_at);
    let m = match job.kind {
        JobKind::Dense => job.n as usize,
        JobKind::Sparse => {
            stream::decompress(&c.positions, pos_stored, &mut s.raw)?;
            positions::decode(&s.raw, job.m as usize, c.elem_count, &mut s.pos)?;
            for (o, p) in pos_out.chunks_exact_mut(4).zip(s.pos.iter()) {
                o.copy_from_slice(&p.to_le_bytes());
            }
            job.m as usize
        }
        JobKind::SparseVarint => {
            decompress_into(&c.positions, pos_stored, &mut pos_out[..job.pos_bytes])?;
            job.m as usize
        }
        _ => return Err("entropy job of a kind without values"),
    };
    if planes.len() != w || c.values.raw_len != (m * w) as u64 {
        return Err("per-plane stream has no planes or a ragged length");
    }
    let lanes = if job.wide {
        Lanes::ThirtyTwo
    } else {
        Lanes::Four
    };
    let head = plan::ENTROPY_HEAD + plan::ENTROPY_PLANE * w;
    let short = "entropy input larger than planned (archive changed?)";
    let pos_len = if job.kind == JobKind::SparseVarint {
        job.pos_bytes as u64
    } else {
        0
    };
    input
        .get_mut(..plan::ENTROPY_HEAD)
        .ok_or(short)?
        .copy_from_slice(
            &[
                &pos_len.to_le_bytes()[..],
                &(w as u32).to_le_bytes(),
                &(lanes.count() as u32).to_le_bytes(),
            ]
            .concat(),
        );
    let layout = &mut s.layout;
    let mut at = head;
    let mut rest = val_bytes;
    for (k, p) in planes.iter().enumerate() {
        let len = usize::try_from(p.stored_len).map_err(|_| "plane too long")?;
        let (src, tail) = rest
            .split_at_checked(len)
            .ok_or("plane runs past the stream")?;
        rest = tail;
        let mut e = [0u8; plan::ENTROPY_PLANE];
        // (data offset, data length) once the data is placed.
        let data: &[u8] = match p.codec {
            PlaneCodec::Raw if src.len() == m => src,
            PlaneCodec::Raw => return Err("raw plane length differs from the plane size"),
            PlaneCodec::Zstd => return Err("zstd plane in an entropy job"),
            PlaneCodec::Rans
            | PlaneCodec::RansBase
            | PlaneCodec::Rans32
            | PlaneCodec::RansBase32 => {
                let base = p.codec.uses_base_context();
                let ctx_len = if base || k > 0 { Some(m) } else { None };
                // The plane's own lane count: a constant or raw-mode plane
                // has no states, so only a coded one must match the job's.
                let own = p.codec.rans_lanes().unwrap_or(lanes);
                let mode = rans_layout::parse_plane(src, m, ctx_len, own, layout)?;
                if mode == PlaneMode::Rans && own != lanes {
                    return Err("entropy job's rANS planes differ in lane count from its plan");
                }
                match mode {
                    PlaneMode::Raw(r) => &src[r],
                    PlaneMode::Constant(b) => {
                        e[0] = 1;
                        e[4] = b;
                        &[]
                    }
                    PlaneMode::Rans => {
                        e[0] = 2;
                        e[1] = match (layout.buckets > 1, base) {
                            (false, _) => 0,
                            (true, false) => 1,
                            (true, true) => 2,
                        };
                        e[2] = layout.scale as u8;
                        e[3] = layout.buckets as u8;
                        let tl = plan::entropy_tables_len(layout.buckets);
                        let t = input.get_mut(at..at + tl).ok_or(short)?;
                        device_tables(layout, t);
                        e[40..48].copy_from_slice(&(at as u64).to_le_bytes());
                        at = plan::align_up(at + tl, 16);
                        // Four states fit in the entry; 32 follow the tables.
                        let x = if job.wide {
                            e[48..56].copy_from_slice(&(at as u64).to_le_bytes());
                            let x = input.get_mut(at..at + plan::ENTROPY_STATES).ok_or(short)?;
                            at = plan::align_up(at + plan::ENTROPY_STATES, 16);
                            x
                        } else {
                            &mut e[8..24]
                        };
                        for (o, x) in x.chunks_exact_mut(4).zip(&layout.states[..lanes.count()]) {
                            o.copy_from_slice(&x.to_le_bytes());
                        }
                        &src[layout.words.clone()]
                    }
                }
            }
        };
        if e[0] != 1 {
            input
                .get_mut(at..at + data.len())
                .ok_or(short)?
                .copy_from_slice(data);
            e[24..32].copy_from_slice(&(at as u64).to_le_bytes());
            e[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
            at = plan::align_up(at + data.len(), 16);
        }
        let eo = plan::ENTROPY_HEAD + plan::ENTROPY_PLANE * k;
        input
            .get_mut(eo..eo + plan::ENTROPY_PLANE)
            .ok_or(short)?
            .copy_from_slice(&e);
    }
    if !rest.is_empty() {
        return Err("bytes left after the last plane");
    }
    Ok(())
}

/// A rANS plane's device tables ([`plan::entropy_tables_len`] bytes) from
/// its parsed layout: the context byte -> bucket map, then per bucket the
/// `u32 cum[s] | cum[s + 1] << 16` of every symbol (absent symbols span
/// nothing) and, for each of 256 equal slices of the slot range, the
/// symbol holding the slice's first slot. The device starts at that symbol
/// and steps forward while `cum[s + 1] <= slot`: it always ends on the
/// present symbol holding the slot, and never past symbol 255 (`cum[256]`
/// is the table total, above every slot).
pub fn device_tables(layout: &RansLayout, out: &mut [u8]) {
    out[..256].copy_from_slice(&layout.bucket_of);
    let sh = layout.scale - 8;
    for b in 0..layout.buckets {
        let t = &mut out[256 + b * plan::ENTROPY_BUCKET..][..plan::ENTROPY_BUCKET];
        let mut cums = [0u32; 257];
        for (s, &f) in layout.freq[b].iter().enumerate() {
            cums[s + 1] = cums[s] + u32::from(f);
        }
        for (o, c) in t[..1024].chunks_exact_mut(4).zip(cums.windows(2)) {
            o.copy_from_slice(&(c[0] | c[1] << 16).to_le_bytes());
        }
        let mut s = 0usize;
        for bin in 0..256u32 {
            let slot = bin << sh;
            while s < 255 && cums[s + 1] <= slot {
                s += 1;
            }
            t[1024 + bin as usize] = s as u8;
        }
    }
}

/// Decompresses one stream into exactly `out` (its declared raw length),
/// with no intermediate buffer: the decoder writes into pinned memory.
pub fn decompress_into(s: &Stream, stored: &[u8], out: &mut [u8]) -> Result<(), &'static str> {
    tpde_format::codec::stream::decompress_into(s, stored, out)
}

/// A target chunk whose base context is wanted.
struct CtxJob<'a, 'c> {
    /// The base the chunk decodes over.
    plan: BasePlan<'a>,
    /// Device address of the chunk's first output byte (the base, for
    /// [`BasePlan::InPlace`]).
    chunk_dst: u64,
    /// The target's dtype.
    dtype: Dtype,
    /// The chunk.
    chunk: &'c Chunk,
}

/// The base context of `cx`'s chunk (spec §5.7) into `out`: byte `w - 1`
/// of each base element of the chunk's range, or of those at `positions`.
fn base_context<D: AsRef<[u8]> + Sync>(
    archive: &Archive<D>,
    cx: &CtxJob<'_, '_>,
    positions: Option<&[u32]>,
    dev: &dyn DeviceRead,
    bufs: &mut Bufs,
    out: &mut Vec<u8>,
) -> Result<()> {
    let w = cx.dtype.width();
    let c = cx.chunk;
    let range = c.elem_start..c.elem_start + c.elem_count;
    let bytes =
        |r: &Range<u64>, w: usize| (r.start * w as u64) as usize..(r.end * w as u64) as usize;
    match cx.plan {
        BasePlan::Zero => {
            out.clear();
            out.resize(positions.map_or(c.elem_count as usize, <[u32]>::len), 0);
        }
        BasePlan::HostBytes(b) => {
            let base = b
                .get(bytes(&range, w))
                .ok_or_else(|| GpuError::Usage("host base shorter than its target".into()))?;
            chunk::base_context(base, w, positions, out);
        }
        plan => {
            let mut pred = std::mem::take(&mut bufs.pred);
            pred.clear();
            pred.resize(bytes(&range, w).len(), 0);
            bufs.held.key = None; // another archive or load may have filled it
            let r = predict(
                archive,
                plan,
                cx.dtype,
                cx.chunk_dst,
                range,
                dev,
                bufs,
                &mut pred,
            );
            if r.is_ok() {
                chunk::base_context(&pred, w, positions, out);
            }
            bufs.pred = pred;
            r?;
        }
    }
    Ok(())
}

/// The predictor of `plan` for elements `range` of a target of `dtype`
/// into `out` (`range`'s bytes): the bytes its chunks decode over, as the
/// device builds them ([`BasePlan::InPlace`]: read from the device at
/// `at`, the address of the range's first byte). Chunked inline bases
/// are decoded on the CPU; device memory is read through `dev`.
pub fn predictor<D: AsRef<[u8]> + Sync>(
    archive: &Archive<D>,
    plan: BasePlan<'_>,
    dtype: Dtype,
    at: u64,
    range: Range<u64>,
    dev: &dyn DeviceRead,
    out: &mut [u8],
) -> Result<()> {
    let want = (range.end - range.start).checked_mul(dtype.width() as u64);
    if want != Some(out.len() as u64) {
        return Err(GpuError::Usage(
            "predictor: output length differs from the range".into(),
        ));
    }
    predict(
        archive,
        plan,
        dtype,
        at,
        range,
        dev,
        &mut Bufs::default(),
        out,
    )
}

/// [`predictor`] with the caller's buffers.
#[allow(clippy::too_many_arguments)]
fn predict<D: AsRef<[u8]> + Sync>(
    archive: &Archive<D>,
    plan: BasePlan<'_>,
    dtype: Dtype,
    at: u64,
    range: Range<u64>,
    dev: &dyn DeviceRead,
    bufs: &mut Bufs,
    out: &mut [u8],
) -> Result<()> {
    let w = dtype.width() as u64;
    let n = range.end - range.start;
    let by = |r: &Range<u64>, k: u64| r.start * k..r.end * k;
    match plan {
        BasePlan::Zero => out.fill(0),
        BasePlan::HostBytes(b) => read_src(
            archive,
            WidenSrc::HostBytes(b),
            by(&range, w),
            dev,
            &mut bufs.held,
            out,
        )?,
        BasePlan::InlineChunked(bi) => read_src(
            archive,
            WidenSrc::InlineChunked { bi, scratch: 0 },
            by(&range, w),
            dev,
            &mut bufs.held,
            out,
        )?,
        BasePlan::Device(a) => dev.read(a + range.start * w, out)?,
        BasePlan::InPlace => dev.read(at, out)?,
        BasePlan::Widened { src, from } => {
            let fw = from.width() as u64;
            bufs.a.clear();
            bufs.a.resize((n * fw) as usize, 0);
            read_src(
                archive,
                src,
                by(&range, fw),
                dev,
                &mut bufs.held,
                &mut bufs.a,
            )?;
            widen::widen(from, dtype, &bufs.a, out);
        }
        BasePlan::Rows {
            src,
            rows: map,
            row_bytes,
        } => {
            let target = by(&range, w);
            if let WidenSrc::HostBytes(b) = src {
                rows::predict(map, row_bytes, b, target, out);
                return Ok(());
            }
            out.fill(0);
            // One read of the span of base bytes the runs use (one
            // device→host copy rather than one per run), unless the runs lie
            // far apart in the base (a sliced base's rows in any order, or
            // a hostile map): then one read per run, so the buffer stays
            // the size of the output, not of the base.
            let segs: Vec<rows::Segment> = rows::segments(map, row_bytes, target.clone()).collect();
            let (Some(lo), Some(hi)) = (
                segs.iter().map(|s| s.base).min(),
                segs.iter().map(|s| s.base + s.len).max(),
            ) else {
                return Ok(());
            };
            if hi - lo > 2 * out.len() as u64 {
                for s in segs {
                    let t = (s.target - target.start) as usize;
                    let dst = &mut out[t..t + s.len as usize];
                    read_src(
                        archive,
                        src,
                        s.base..s.base + s.len,
                        dev,
                        &mut bufs.held,
                        dst,
                    )?;
                }
                return Ok(());
            }
            bufs.a.clear();
            bufs.a.resize((hi - lo) as usize, 0);
            read_src(archive, src, lo..hi, dev, &mut bufs.held, &mut bufs.a)?;
            for s in segs {
                let t = (s.target - target.start) as usize;
                let f = (s.base - lo) as usize;
                out[t..t + s.len as usize].copy_from_slice(&bufs.a[f..f + s.len as usize]);
            }
        }
        BasePlan::Dequant {
            q,
            signed,
            scale,
            axis,
            row_elems,
        } => {
            let sr = dequant::scale_range(axis, row_elems, range.clone());
            bufs.a.clear();
            bufs.a.resize(n as usize, 0);
            read_src(archive, q, range.clone(), dev, &mut bufs.held, &mut bufs.a)?;
            bufs.b.clear();
            bufs.b.resize(((sr.end - sr.start) * 4) as usize, 0);
            read_src(archive, scale, by(&sr, 4), dev, &mut bufs.held, &mut bufs.b)?;
            dequant::predict(
                &bufs.a,
                signed,
                &bufs.b,
                sr.start,
                axis,
                row_elems,
                range.start,
                out,
            );
        }
    }
    Ok(())
}

/// Bytes `bytes` of a base tensor as stored, into `out` (their length):
/// from host memory, from the device, or decoded on the CPU from a chunked
/// inline base (which has no base of its own).
fn read_src<D: AsRef<[u8]> + Sync>(
    archive: &Archive<D>,
    src: WidenSrc<'_>,
    bytes: Range<u64>,
    dev: &dyn DeviceRead,
    held: &mut Held,
    out: &mut [u8],
) -> Result<()> {
    let short = || GpuError::Usage("base context: base bytes out of range".into());
    match src {
        WidenSrc::HostBytes(b) => {
            let r = bytes.start as usize..bytes.end as usize;
            out.copy_from_slice(b.get(r).ok_or_else(short)?);
            Ok(())
        }
        WidenSrc::Device(a) => dev.read(a + bytes.start, out),
        WidenSrc::InlineChunked { bi, .. } => {
            let rec = archive.record(Table::Base, bi);
            let w = rec.dtype.width().max(1) as u64;
            let chunks = match &rec.payload {
                Payload::Chunked { chunks, .. } => chunks,
                Payload::Plain { .. } => {
                    let b = archive.plain_bytes(Table::Base, bi)?.unwrap_or_default();
                    let r = bytes.start as usize..bytes.end as usize;
                    out.copy_from_slice(b.get(r).ok_or_else(short)?);
                    return Ok(());
                }
            };
            let mut at = bytes.start;
            while at < bytes.end {
                // Chunks tile the tensor in order (validated at open).
                let e = at / w;
                let ci = chunks.partition_point(|c| c.elem_start + c.elem_count <= e);
                let c = chunks.get(ci).ok_or_else(short)?;
                let (cs, ce) = (c.elem_start * w, (c.elem_start + c.elem_count) * w);
                if ce <= at || cs > at {
                    return Err(short());
                }
                if held.key != Some((bi, ci)) {
                    held.key = None;
                    held.buf.clear();
                    held.buf.resize((ce - cs) as usize, 0);
                    let stored = archive.chunk_bytes(Table::Base, bi, ci, c)?;
                    chunk::decode_into(c, w as usize, stored, &mut held.buf, &mut held.scratch)
                        .map_err(|reason| FormatError::ChunkDecode {
                            location: Location::Chunk {
                                tensor: rec.name.clone(),
                                base: true,
                                chunk: ci as u64,
                            },
                            reason,
                        })?;
                    held.key = Some((bi, ci));
                }
                let hi = bytes.end.min(ce);
                let o = (at - bytes.start) as usize;
                out[o..o + (hi - at) as usize]
                    .copy_from_slice(&held.buf[(at - cs) as usize..(hi - cs) as usize]);
                at = hi;
            }
            Ok(())
        }
    }
}
