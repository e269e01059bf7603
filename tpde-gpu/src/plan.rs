//! The work plan: which jobs reconstruct which device byte ranges, how they
//! are grouped into staging batches, and the 64-byte job descriptors the
//! kernels read. Pure Rust, no CUDA: the GPU pipeline and the CPU reference
//! ([`crate::reference`]) drive the same plan, so CI tests the plan too.
//!
//! Device memory is named by 64-bit addresses. On the GPU they are real
//! device pointers; the CPU reference hands out its own address space.

use std::collections::HashMap;
use std::ops::Range;

use tpde_format::codec::entropy::{Lanes, MAX_BUCKETS, WIDE_LANES};
use tpde_format::codec::{dequant, rows};
use tpde_format::format::{
    BaseRef, Chunk, ChunkKind, Codec, Dtype, Op, Payload, PlaneCodec, RowRun, ScaleAxis,
};
use tpde_format::read::{BaseView, DequantView, Table, WidenSource};
use tpde_format::{Archive, BaseProvider};

use crate::error::{GpuError, Result};

/// Threads per block of every kernel.
pub const THREADS: u32 = 256;
/// Size of one job descriptor in the staging header.
pub const DESC_BYTES: usize = 64;
/// Staging regions start at multiples of this (keeps every vector load aligned).
pub const REGION_ALIGN: usize = 256;
/// Most descriptors in one batch (bounds the binary search in the kernels and
/// the header size: 512 KiB). Large because a chunk entropy-decoded on the
/// device is one sequential stream, so a launch needs thousands of chunks.
pub const MAX_JOBS_PER_BATCH: usize = 8192;
/// Bytes one block of the fill phase copies or zeroes.
pub const FILL_BYTES_PER_TILE: u64 = THREADS as u64 * 16;
/// Elements one block of a widen job converts (4 per thread).
pub const WIDEN_PER_TILE: u64 = THREADS as u64 * 4;
/// Elements one block of a dequant job predicts (4 per thread).
pub const DEQUANT_PER_TILE: u64 = THREADS as u64 * 4;
/// Elements per dequant job. A job stages at most this many code bytes and
/// four bytes per scale it uses (at most this many scales: a per-column job
/// whose rows are longer is cut at row boundaries), so staging stays small
/// however the scales are laid out.
pub const DEQUANT_PIECE: u64 = 1 << 16;
/// Positions one block of the sparse phase applies (4 per thread).
pub const SPARSE_PER_TILE: u64 = THREADS as u64 * 4;
/// Bytes of a gap-encoded positions stream one block of the device varint
/// decoder handles (both passes).
pub const VARINT_SEGMENT: u64 = 16 << 10;
/// Raw byte payloads (plain tensors, host-side bases) are cut into pieces of
/// this size so several CPU threads copy them into staging at once.
pub const RAW_PIECE: usize = 4 << 20;
/// Most blocks one batch launches per phase (the grid limit is 2^31 - 1).
const MAX_TILES_PER_BATCH: u64 = 1 << 30;

/// Elements one thread of the dense kernel handles for element width `w`:
/// 16-byte plane loads for 1- and 2-byte elements, 8 and 4 bytes for wider
/// ones, so every thread moves 16–32 output bytes.
pub const fn dense_elems_per_thread(width: usize) -> u64 {
    match width {
        1 | 2 => 16,
        4 => 8,
        _ => 4,
    }
}

/// Elements one block of the dense kernel handles.
pub const fn dense_elems_per_tile(width: usize) -> u64 {
    THREADS as u64 * dense_elems_per_thread(width)
}

/// What a job does on the device (the descriptor's `kind` byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// `dst = base` over the range, or zeros when there is no base (phase 1).
    Fill = 0,
    /// `dst[i] = op(base[i], value[i])` with values as byte planes (phase 1).
    Dense = 1,
    /// `dst[p[j]] = op(dst[p[j]], value[j])` (phase 2, after the fill).
    Sparse = 2,
    /// Bytes copied host → device as they are; no kernel.
    Raw = 3,
    /// Like `Sparse`, but the positions are staged as their raw LEB128 gap
    /// bytes and decoded on the device (prefix sums over segments), which
    /// halves the CPU work and the PCIe bytes of a sparse chunk. The device
    /// validates them as the CPU reader does and reports a bad stream.
    SparseVarint = 4,
    /// `dst[i] = widen(src[i])`: a narrower float base widened exactly to
    /// the target's dtype (spec §6.2), read from staging or device memory
    /// (phase 1; the delta applies in a later batch).
    Widen = 5,
    /// `dst[i] = bits(f32(q[i]) × scale[k(i)])`, NaN made canonical: the
    /// predictor of a quantized base (spec §6.4), from codes and scales in
    /// staging or device memory (phase 1; the delta applies in a later
    /// batch). See [`dequant_code`] for the descriptor's fields.
    Dequant = 6,
}

/// The descriptor's `op` byte of a [`JobKind::Dequant`] job: bits 0–1 the
/// scale axis (0 tensor, 1 rows, 2 columns), bit 2 signed (I8) codes, bit 3
/// (columns) the job's scales start at its first element's column rather
/// than at column 0. The other fields: `base` the codes' address, `vals`
/// the address of the first scale the job uses, `pos` the target's
/// elements per row, `m` the job's first element's column (its element
/// index modulo `pos`; 0 when `pos` is 0). Element `i` then uses scale
/// `0` (tensor), `(m + i) / pos` (rows: relative to the job's first row)
/// or `(m + i) % pos - (bit 3 ? m : 0)` (columns).
pub const fn dequant_code(axis: ScaleAxis, signed: bool, from_column: bool) -> u8 {
    let a = match axis {
        ScaleAxis::Tensor => 0,
        ScaleAxis::Rows => 1,
        ScaleAxis::Columns => 2,
    };
    a | (signed as u8) << 2 | (from_column as u8) << 3
}

/// The descriptor's `op` byte of a [`JobKind::Widen`] job, or `None` when
/// the format does not define widening `from` → `to`.
pub const fn widen_code(from: Dtype, to: Dtype) -> Option<u8> {
    match (from, to) {
        (Dtype::BF16, Dtype::F32) => Some(0),
        (Dtype::F16, Dtype::F32) => Some(1),
        (Dtype::BF16, Dtype::F64) => Some(2),
        (Dtype::F16, Dtype::F64) => Some(3),
        (Dtype::F32, Dtype::F64) => Some(4),
        _ => None,
    }
}

/// Source element width of widen code `code`.
pub const fn widen_from_width(code: u8) -> usize {
    if code == 4 {
        4
    } else {
        2
    }
}

/// How chunks are planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// Stage sparse positions as raw gap bytes for the device to decode
    /// ([`JobKind::SparseVarint`]) rather than as CPU-decoded `u32`s.
    pub positions_on_device: bool,
    /// Which chunks' rANS-coded values are entropy-decoded on the device
    /// ([`Job::decoded`]) rather than on the CPU: only the coded words and
    /// their tables cross PCIe, and the CPU parses headers instead of
    /// decoding every symbol.
    pub entropy_on_device: EntropyOnDevice,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            positions_on_device: true,
            entropy_on_device: EntropyOnDevice::default(),
        }
    }
}

/// Which chunks the device entropy-decodes (the others are decoded by CPU
/// threads into staging). Chunks with a zstd plane, or mixing 4- and
/// 32-state coded planes, are decoded on the CPU in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EntropyOnDevice {
    /// None (the default).
    ///
    /// Why not [`EntropyOnDevice::Wide`] by default: with the default
    /// staging buffers (8 × 32 MiB slots, 128 MiB decode areas) a first
    /// load decoding 32-state chunks on the device waited on its slots and
    /// took 557 ms against 223–238 ms on the CPU path (1.74 GB model,
    /// H200, BENCHMARKS-gpu.md run 16); it wins with decode areas of
    /// 0.5–1 GiB (run 15), which a default should not allocate.
    #[default]
    Never,
    /// Chunks of 32-state planes (format 1.6), one warp per chunk: with
    /// decode areas of 1 GiB faster than the CPU path in every case
    /// measured, base on the device or inline, 2^16-element or default
    /// chunks (runs 14 and 15). Chunks of 4-state planes stay on the CPU:
    /// groups of four threads pay only with many small chunks (run 9).
    Wide,
    /// Every chunk with rANS planes.
    All,
}

/// Where a job's staged bytes come from.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Nothing is staged (fills).
    None,
    /// A chunk of a tensor table, decoded on the CPU.
    Chunk {
        /// Targets or inline bases.
        table: Table,
        /// Tensor index in that table.
        tensor: usize,
        /// Chunk index in that tensor.
        chunk: usize,
        /// The base the chunk decodes over ([`BasePlan::Zero`] for an
        /// inline base's own chunks). Read on the CPU only when the values
        /// stream has `RansBase` planes (format v1.2, spec §5.7), whose
        /// rANS context is the base's top byte under each value; see
        /// [`crate::stage`].
        base: BasePlan<'a>,
    },
    /// Bytes staged as they are.
    Bytes(&'a [u8]),
    /// The predictor of a row-mapped base (spec §6.3) for target bytes
    /// `at..at + staged`, built on the host from the whole base: base rows
    /// where a run covers, zeros elsewhere. One staged piece then replaces
    /// a copy per run, which matters when a pruned vocabulary leaves
    /// thousands of one-row runs.
    Rows {
        /// The whole base tensor's bytes.
        base: &'a [u8],
        /// The row map.
        rows: &'a [RowRun],
        /// Bytes per row.
        row_bytes: u64,
        /// Target byte offset of the piece's first byte.
        at: u64,
    },
    /// A [`JobKind::Dequant`] job's codes and scales: staged (codes at the
    /// region's start, scales at the job's `values_at`) or read from device
    /// memory.
    Dequant {
        /// The job's codes (one byte per element).
        q: Piece<'a>,
        /// The scales the job uses, from the first one on (little-endian F32).
        scales: Piece<'a>,
        /// [`dequant_code`].
        code: u8,
        /// Elements per row of the target.
        row_elems: u64,
        /// The job's first element's column (element index modulo
        /// `row_elems`; 0 when `row_elems` is 0).
        column: u64,
    },
}

/// Bytes a job reads: staged from the host, or at a device address.
#[derive(Debug, Clone, Copy)]
pub enum Piece<'a> {
    /// Host bytes, staged.
    Host(&'a [u8]),
    /// Device memory at this address, left unchanged.
    Device(u64),
}

/// One unit of work: a chunk, a fill, or a raw piece.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// What the device does.
    pub kind: JobKind,
    /// Where the staged bytes come from.
    pub input: Input<'a>,
    /// Combine op (dense and sparse).
    pub op: Op,
    /// Element width in bytes.
    pub width: usize,
    /// Elements in the range.
    pub n: u64,
    /// Positions (sparse).
    pub m: u64,
    /// Device address of the range's first byte.
    pub dst: u64,
    /// Device address of the base range; 0 means all-zero bits; equal to
    /// `dst` means in place.
    pub base: u64,
    /// Bytes this job stages.
    pub staged: usize,
    /// Sparse: offset of the values planes after the positions.
    pub values_at: usize,
    /// Sparse: bytes of staged positions (`4 m`, or the gap stream's length).
    pub pos_bytes: usize,
    /// Start a new batch at this job: its inputs depend on phase-2 work of
    /// the jobs before it, which a single batch would run after it.
    pub cut_before: bool,
    /// Device-only bytes of a chunk whose values are entropy-decoded on the
    /// device ([`ENTROPY_GROUP`] threads, phase 0 of its batch): its decoded
    /// byte planes (`width ×` values) and, when a plane is `RansBase`, one
    /// base-context byte per value. 0: the values are decoded on the CPU and
    /// staged (everything else). For such a job `staged` holds the
    /// positions (sparse) and, at `values_at`, the entropy input
    /// ([`crate::stage`] writes it; [`entropy_input_len`] sizes it).
    pub decoded: usize,
    /// Entropy-decoded jobs with a `RansBase` plane: device address of the
    /// base element under the chunk's first element as it is when phase 0
    /// of the job's batch runs (0: the base is all zeros). The device reads
    /// byte `width - 1` of the elements under the values there (spec §5.7).
    pub ctx_base: u64,
    /// (v1.6) Entropy-decoded jobs whose rANS planes have 32 interleaved
    /// states: decoded by one warp each rather than a group of four threads
    /// (in the same `tpde_entropy` launch, see [`Batch::phase0_narrow`]).
    /// False for every other job.
    pub wide: bool,
}

/// Threads that decode one entropy-coded chunk of 4-state planes on the
/// device: one per interleaved rANS state (spec §5.6.4). They share the
/// word stream and step together, so each plane still decodes in stream
/// order.
pub const ENTROPY_GROUP: u32 = 4;
/// (v1.6) Threads that decode one chunk of 32-state planes: a whole warp,
/// one thread per state, stepping together like [`ENTROPY_GROUP`].
pub const ENTROPY_GROUP_WIDE: u32 = WIDE_LANES as u32;
/// Threads per block of the entropy kernel.
pub const ENTROPY_THREADS: u32 = 128;
/// Bytes of the entropy input's header: `u64` gap-stream length, `u32`
/// plane count, `u32` 0.
pub const ENTROPY_HEAD: usize = 16;
/// Bytes of one plane's entry in the entropy input (see [`crate::stage`]).
pub const ENTROPY_PLANE: usize = 64;
/// Bytes of a 32-state rANS plane's states in the entropy input (the
/// plane's entry points at them; a 4-state plane's fit in the entry).
pub const ENTROPY_STATES: usize = 4 * WIDE_LANES;
/// Bytes of one bucket's device tables: `u32 (cum[s] | cum[s + 1] << 16)`
/// for every symbol, then a `u8` symbol per 1/256 of the slot range (the
/// symbol whose slots hold the range's first slot): the decoder starts
/// there and steps to the symbol holding its slot.
pub const ENTROPY_BUCKET: usize = 256 * 4 + 256;
/// Bytes of a rANS plane's device tables for `buckets` buckets: the
/// context byte -> bucket map, then the buckets.
pub const fn entropy_tables_len(buckets: usize) -> usize {
    256 + buckets * ENTROPY_BUCKET
}

/// Bytes of the entropy input [`crate::stage`] writes for chunk `c`'s
/// values, or `None` when they are not decoded on the device; see
/// [`entropy_input`].
pub fn entropy_input_len(bytes: &[u8], c: &Chunk, width: usize) -> Option<usize> {
    entropy_input(bytes, c, width).map(|(len, _)| len)
}

/// Bytes of the entropy input [`crate::stage`] writes for chunk `c`'s
/// values and the interleaved states of its rANS planes ([`Lanes::Four`]:
/// a group of four threads decodes it, [`Lanes::ThirtyTwo`]: a warp), or
/// `None` when they are not decoded on the device:
/// only a [`Codec::PerPlane`] values stream with at least one rANS plane,
/// no `Zstd` plane, and the mode-2 (coded) rANS planes all of one lane
/// count is (a chunk with a zstd plane, or one mixing 4- and 32-state coded
/// planes, which the reference writer never produces, keeps the CPU path).
/// A rANS plane in the constant or raw mode has no states and decodes the
/// same in either group size: the writer labels such planes 4-state beside
/// 32-state ones (spec §5.6.6), so they do not decide the lane count (all
/// of them alone: four). `bytes` is the whole archive: each rANS plane's
/// mode and bucket count are read from its header here (unchecked; staging
/// parses and checks the CRC-checked bytes again and refuses a mismatch).
pub fn entropy_input(bytes: &[u8], c: &Chunk, width: usize) -> Option<(usize, Lanes)> {
    let Codec::PerPlane(planes) = &c.values.codec else {
        return None;
    };
    let m = usize::try_from(c.values.raw_len / width.max(1) as u64).ok()?;
    let (mut lanes, mut any_rans) = (None, false);
    let mut at = c.offset.checked_add(c.positions.stored_len)?;
    for p in planes {
        if let Some(l) = p.codec.rans_lanes() {
            any_rans = true;
            let mode = usize::try_from(at).ok().and_then(|a| bytes.get(a)).copied();
            match lanes {
                _ if mode != Some(2) => {}
                None => lanes = Some(l),
                Some(k) if k != l => return None,
                Some(_) => {}
            }
        }
        at = at.checked_add(p.stored_len)?;
    }
    if !any_rans {
        return None;
    }
    let lanes = lanes.unwrap_or(Lanes::Four);
    if m == 0 || planes.len() != width || planes.iter().any(|p| p.codec == PlaneCodec::Zstd) {
        return None;
    }
    let mut at = c.offset.checked_add(c.positions.stored_len)?;
    let mut len = ENTROPY_HEAD + ENTROPY_PLANE * width;
    for p in planes {
        let stored = usize::try_from(p.stored_len).ok()?;
        let rans = p.codec.rans_lanes().is_some();
        // Mode byte 2 = rANS: its bucket count is byte 2 (spec §5.6.2).
        let head = usize::try_from(at)
            .ok()
            .and_then(|a| bytes.get(a..a.checked_add(3)?));
        let tables = match head {
            Some(h) if rans && h[0] == 2 => {
                let states = if lanes == Lanes::ThirtyTwo {
                    ENTROPY_STATES
                } else {
                    0
                };
                entropy_tables_len(usize::from(h[2]).clamp(1, MAX_BUCKETS)) + states
            }
            _ => 0,
        };
        len += align_up(tables, 16) + align_up(stored, 16);
        at = at.checked_add(p.stored_len)?;
    }
    Some((len, lanes))
}

/// True when `c`'s values stream has a `RansBase` plane.
fn has_base_plane(c: &Chunk) -> bool {
    c.values.uses_base_context()
}

/// Where a tensor's base lives when its chunks are applied.
#[derive(Debug, Clone, Copy)]
pub enum BasePlan<'a> {
    /// No base: all-zero bits.
    Zero,
    /// Host bytes (a plain inline base or a checked external base): staged
    /// raw, copied into the output, then the delta applies in place.
    HostBytes(&'a [u8]),
    /// A chunked inline base: its chunks decode into the output first.
    InlineChunked(usize),
    /// A base already on the device at this address, left unchanged.
    Device(u64),
    /// The output buffer already holds the base: apply the delta in place.
    InPlace,
    /// A narrower float base, widened exactly into the output first.
    Widened {
        /// Where the narrow elements are.
        src: WidenSrc<'a>,
        /// Their dtype.
        from: Dtype,
    },
    /// (v1.2) A row-mapped base of the target's dtype and another row count
    /// (spec §6.3): its rows are copied into the output first, uncovered
    /// rows zeroed, then the delta applies in place.
    Rows {
        /// Where the base tensor's bytes are.
        src: WidenSrc<'a>,
        /// The row map (validated at open against both shapes).
        rows: &'a [RowRun],
        /// Bytes per row.
        row_bytes: u64,
    },
    /// (v1.2) A quantized base (spec §6.4): the F32 predictor
    /// `f32(q) × scale` is computed into the output first, then the delta
    /// applies in place.
    Dequant {
        /// Where the codes tensor's bytes are.
        q: WidenSrc<'a>,
        /// True for I8 codes, false for U8.
        signed: bool,
        /// Where the scales tensor's bytes are.
        scale: WidenSrc<'a>,
        /// Which elements share a scale.
        axis: ScaleAxis,
        /// Elements per row of the target.
        row_elems: u64,
    },
}

/// Where a widened base's narrow elements, a row-mapped base's bytes, or a
/// quantized base's codes or scales are.
#[derive(Debug, Clone, Copy)]
pub enum WidenSrc<'a> {
    /// Host bytes (a plain inline base or a checked external base), staged.
    HostBytes(&'a [u8]),
    /// A chunked inline base, decoded on the device into `scratch` (device
    /// memory of the narrow tensor's size that the caller keeps alive).
    InlineChunked {
        /// Index in the base table.
        bi: usize,
        /// Device address of the scratch buffer.
        scratch: u64,
    },
    /// Narrow elements already in device memory, left unchanged.
    Device(u64),
}

/// One target tensor to plan: its output buffer and where its base lives.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Index in the archive's target table.
    pub t: usize,
    /// Device address of the output buffer (its byte length is checked by
    /// the caller).
    pub dst: u64,
    /// The base.
    pub base: BasePlan<'a>,
    /// Start a new batch at this target's first delta job (its base is read
    /// by earlier targets of the same load and updated in place here).
    pub cut: bool,
}

/// Output bytes per planning window: the base jobs of a window's targets
/// come first, then all their delta jobs, so a model of many small tensors
/// with inline bases needs one batch boundary per window rather than one per
/// tensor.
pub const WINDOW_BYTES: u64 = 256 << 20;

/// The jobs of `targets`, appended to `jobs` window by window.
pub fn targets_jobs<'a, D: AsRef<[u8]> + Sync>(
    archive: &'a Archive<D>,
    targets: &[Target<'a>],
    opts: PlanOptions,
    jobs: &mut Vec<Job<'a>>,
) -> Result<()> {
    let mut decoded = Decoded::new();
    let mut at = 0;
    while at < targets.len() {
        let mut end = at;
        let mut bytes = 0u64;
        while end < targets.len() && (end == at || bytes < WINDOW_BYTES) {
            let rec = archive.record(Table::Target, targets[end].t);
            bytes += rec.byte_len().unwrap_or(0);
            end += 1;
        }
        let mut parts = Parts::default();
        for tg in &targets[at..end] {
            let first = parts.delta.len();
            split_jobs(archive, tg, opts, &mut decoded, &mut parts)?;
            if tg.cut {
                if let Some(j) = parts.delta.get_mut(first) {
                    j.cut_before = true;
                }
            }
        }
        // Each part reads what the one before wrote, possibly from later
        // phases of a launch (sparse), so each starts a new batch when the
        // part before it wrote on the device.
        jobs.extend(parts.base);
        let mut prev_wrote = parts.base_on_device;
        if prev_wrote {
            if let Some(j) = parts.widen.first_mut() {
                j.cut_before = true;
            }
        }
        prev_wrote |= !parts.widen.is_empty();
        jobs.extend(parts.widen);
        if prev_wrote {
            if let Some(j) = parts.delta.first_mut() {
                j.cut_before = true;
            }
        }
        jobs.extend(parts.delta);
        at = end;
    }
    Ok(())
}

/// The jobs of one target tensor, appended to `jobs` (base first).
pub fn tensor_jobs<'a, D: AsRef<[u8]> + Sync>(
    archive: &'a Archive<D>,
    t: usize,
    dst: u64,
    base: BasePlan<'a>,
    opts: PlanOptions,
    jobs: &mut Vec<Job<'a>>,
) -> Result<()> {
    let target = Target {
        t,
        dst,
        base,
        cut: false,
    };
    targets_jobs(archive, &[target], opts, jobs)
}

/// The jobs of one planning window, in the order they must run.
#[derive(Default)]
struct Parts<'a> {
    /// Jobs writing bases (raw copies, inline bases decoded on the device,
    /// narrow bases decoded into scratch).
    base: Vec<Job<'a>>,
    /// True when some base job runs a kernel (not only raw copies).
    base_on_device: bool,
    /// Jobs building a predictor in the output from bases written by the
    /// base part or handed in on the device: widening (narrow base →
    /// output) and row copies of row-mapped bases.
    widen: Vec<Job<'a>>,
    /// Delta jobs.
    delta: Vec<Job<'a>>,
}

/// Which chunks of each inline base (by base index and scratch address)
/// already have jobs decoding them earlier in this plan, and how many do
/// not yet: targets of one load that read the same chunked inline base
/// share its scratch (see [`Scratch`]), and each of its chunks is decoded
/// once. Keyed by both, so two bases given one address (a caller's
/// placeholder) never share or overrun each other's record.
type Decoded = HashMap<(usize, u64), (Vec<bool>, usize)>;

/// Which chunks of an inline base a target reads from its scratch.
#[derive(Clone, Copy)]
enum Need<'a> {
    /// Every chunk (a base widened or dequantized element by element).
    All,
    /// The chunks under the rows this row map copies (row-mapped and sliced
    /// bases, `row_bytes` each, over a target of `len` bytes): a target
    /// sliced from a large fused base decodes only what it reads, so the
    /// device's work stays within what the reader charged at open (spec
    /// §6.3.1: every base chunk a run touches) rather than the whole base
    /// once per target.
    Rows(&'a [RowRun], u64, u64),
}

/// Appends the jobs decoding the chunks of inline base `bi` that `need`
/// selects and no earlier target of this plan decoded into `scratch`. The
/// work is the chunks the runs touch (a base read whole: its chunk count,
/// once per load), never a scan of the base per target.
fn scratch_jobs<'a, D: AsRef<[u8]> + Sync>(
    archive: &'a Archive<D>,
    bi: usize,
    scratch: u64,
    need: Need<'_>,
    opts: PlanOptions,
    decoded: &mut Decoded,
    parts: &mut Parts<'a>,
) -> Result<()> {
    let rec = archive.record(Table::Base, bi);
    let Payload::Chunked {
        chunks,
        chunk_elems,
        ..
    } = &rec.payload
    else {
        // A plain inline base (resolved as host bytes, so not reached from
        // the reader's plans): staged raw, once.
        if let std::collections::hash_map::Entry::Vacant(e) = decoded.entry((bi, scratch)) {
            e.insert((Vec::new(), 0));
            parts.base_on_device = true;
            base_tensor_jobs(archive, bi, scratch, opts, &mut parts.base)?;
        }
        return Ok(());
    };
    let w = rec.dtype.width();
    let (done, left) = decoded
        .entry((bi, scratch))
        .or_insert_with(|| (vec![false; chunks.len()], chunks.len()));
    let all_done = *left == 0;
    let mut emit = |i: usize, parts: &mut Parts<'a>| {
        if let (Some(c), Some(d)) = (chunks.get(i), done.get_mut(i)) {
            if !*d {
                *d = true;
                *left -= 1;
                parts.base_on_device = true;
                chunk_jobs(
                    archive.bytes(),
                    Table::Base,
                    bi,
                    i,
                    c,
                    w,
                    scratch,
                    Resolved::Zero,
                    BasePlan::Zero,
                    opts,
                    &mut parts.base,
                );
            }
        }
    };
    match need {
        Need::All if !all_done => (0..chunks.len()).for_each(|i| emit(i, parts)),
        Need::All => {}
        Need::Rows(rows, row_bytes, len) => {
            // Validated at open: chunks are uniform and cover the base, the
            // runs lie within it.
            let chunk_bytes = chunk_elems.saturating_mul(w as u64).max(1);
            for sg in rows::segments(rows, row_bytes, 0..len) {
                let first = sg.base / chunk_bytes;
                let last = (sg.base + sg.len - 1) / chunk_bytes;
                (first..=last).for_each(|k| emit(k as usize, parts));
            }
        }
    }
    Ok(())
}

/// Appends target `tg`'s jobs to the window's parts.
fn split_jobs<'a, D: AsRef<[u8]> + Sync>(
    archive: &'a Archive<D>,
    tg: &Target<'a>,
    opts: PlanOptions,
    decoded: &mut Decoded,
    parts: &mut Parts<'a>,
) -> Result<()> {
    let (t, dst, base) = (tg.t, tg.dst, tg.base);
    let rec = archive.record(Table::Target, t);
    let w = rec.dtype.width();
    match &rec.payload {
        Payload::Plain { .. } => {
            let bytes = archive.plain_bytes(Table::Target, t)?.unwrap_or_default();
            raw_jobs(bytes, dst, w, &mut parts.delta);
            Ok(())
        }
        Payload::Chunked { chunks, .. } => {
            let resolved = match base {
                BasePlan::Zero => Resolved::Zero,
                BasePlan::HostBytes(b) => {
                    raw_jobs(b, dst, w, &mut parts.base);
                    Resolved::InPlace
                }
                BasePlan::InlineChunked(bi) => {
                    base_tensor_jobs(archive, bi, dst, opts, &mut parts.base)?;
                    parts.base_on_device = true;
                    Resolved::InPlace
                }
                BasePlan::Device(addr) => Resolved::Separate(addr),
                BasePlan::InPlace => Resolved::InPlace,
                BasePlan::Widened { src, from } => {
                    let n = rec.elem_count().unwrap_or(0);
                    let Some(code) = widen_code(from, rec.dtype) else {
                        return Err(GpuError::Usage(format!(
                            "tensor {:?}: cannot widen {from} to {}",
                            rec.name, rec.dtype
                        )));
                    };
                    match src {
                        WidenSrc::HostBytes(b) => {
                            widen_jobs(b, None, n, code, w, dst, &mut parts.widen)
                        }
                        WidenSrc::InlineChunked { bi, scratch } => {
                            scratch_jobs(archive, bi, scratch, Need::All, opts, decoded, parts)?;
                            widen_jobs(&[], Some(scratch), n, code, w, dst, &mut parts.widen);
                        }
                        WidenSrc::Device(addr) => {
                            widen_jobs(&[], Some(addr), n, code, w, dst, &mut parts.widen)
                        }
                    }
                    Resolved::InPlace
                }
                BasePlan::Rows {
                    src,
                    rows,
                    row_bytes,
                } => {
                    let len = rec.byte_len().unwrap_or(0); // validated at open
                    match src {
                        WidenSrc::HostBytes(b) => {
                            rows_host_jobs(b, rows, row_bytes, len, dst, w, &mut parts.base)
                        }
                        WidenSrc::InlineChunked { bi, scratch } => {
                            let need = Need::Rows(rows, row_bytes, len);
                            scratch_jobs(archive, bi, scratch, need, opts, decoded, parts)?;
                            rows_device_jobs(
                                scratch,
                                rows,
                                row_bytes,
                                len,
                                dst,
                                w,
                                &mut parts.widen,
                            )
                        }
                        WidenSrc::Device(addr) => {
                            rows_device_jobs(addr, rows, row_bytes, len, dst, w, &mut parts.widen)
                        }
                    }
                    Resolved::InPlace
                }
                BasePlan::Dequant {
                    q,
                    signed,
                    scale,
                    axis,
                    row_elems,
                } => {
                    if rec.dtype != Dtype::F32 {
                        return Err(GpuError::Usage(format!(
                            "tensor {:?}: a quantized base predicts only F32, not {}",
                            rec.name, rec.dtype
                        )));
                    }
                    let mut source = |src: WidenSrc<'a>| -> Result<QSource<'a>> {
                        Ok(match src {
                            WidenSrc::HostBytes(b) => QSource::Host(b),
                            WidenSrc::InlineChunked { bi, scratch } => {
                                scratch_jobs(
                                    archive,
                                    bi,
                                    scratch,
                                    Need::All,
                                    opts,
                                    decoded,
                                    parts,
                                )?;
                                QSource::Device(scratch)
                            }
                            WidenSrc::Device(addr) => QSource::Device(addr),
                        })
                    };
                    let q = source(q)?;
                    let scale = source(scale)?;
                    let n = rec.elem_count().unwrap_or(0); // validated at open
                    dequant_jobs(q, scale, signed, axis, row_elems, n, dst, &mut parts.widen);
                    Resolved::InPlace
                }
            };
            for (i, c) in chunks.iter().enumerate() {
                chunk_jobs(
                    archive.bytes(),
                    Table::Target,
                    t,
                    i,
                    c,
                    w,
                    dst,
                    resolved,
                    base,
                    opts,
                    &mut parts.delta,
                );
            }
            Ok(())
        }
    }
}

/// Widen jobs over `n` elements: from staged host bytes `bytes`, or from
/// device memory at `device` (narrow elements), into `dst` (width `w`).
/// Host bytes are cut into pieces so several threads stage them at once.
fn widen_jobs<'a>(
    bytes: &'a [u8],
    device: Option<u64>,
    n: u64,
    code: u8,
    w: usize,
    dst: u64,
    jobs: &mut Vec<Job<'a>>,
) {
    let fw = widen_from_width(code);
    let piece_elems = (RAW_PIECE / fw) as u64;
    let mut start = 0u64;
    while start < n {
        let count = piece_elems.min(n - start);
        let (input, base, staged) = match device {
            Some(a) => (Input::None, a + start * fw as u64, 0),
            None => {
                let r = (start as usize * fw)..((start + count) as usize * fw);
                (Input::Bytes(&bytes[r]), 0, count as usize * fw)
            }
        };
        jobs.push(Job {
            kind: JobKind::Widen,
            input,
            op: Op::Replace,
            width: w,
            n: count,
            m: u64::from(code),
            dst: dst + start * w as u64,
            base,
            staged,
            values_at: 0,
            pos_bytes: 0,
            cut_before: false,
            decoded: 0,
            ctx_base: 0,
            wide: false,
        });
        start += count;
    }
}

/// A quantized base's codes or scales, whole, as the dequant jobs read them.
#[derive(Debug, Clone, Copy)]
enum QSource<'a> {
    /// The whole tensor's bytes on the host.
    Host(&'a [u8]),
    /// The whole tensor at this device address.
    Device(u64),
}

impl<'a> QSource<'a> {
    /// Bytes `range` of the tensor as a job reads them.
    fn piece(self, range: Range<u64>) -> Piece<'a> {
        match self {
            QSource::Host(b) => Piece::Host(&b[range.start as usize..range.end as usize]),
            QSource::Device(a) => Piece::Device(a + range.start),
        }
    }
}

/// Dequant jobs over a target of `n` F32 elements at `dst`: pieces of
/// [`DEQUANT_PIECE`] elements, cut at row boundaries for per-column scales
/// when a row is longer than a piece (so no job needs more scales than it
/// has elements). Each job stages what lives on the host: its codes, and
/// only the scales its elements use ([`dequant::scale_range`]).
#[allow(clippy::too_many_arguments)]
fn dequant_jobs<'a>(
    q: QSource<'a>,
    scale: QSource<'a>,
    signed: bool,
    axis: ScaleAxis,
    row_elems: u64,
    n: u64,
    dst: u64,
    jobs: &mut Vec<Job<'a>>,
) {
    let mut start = 0u64;
    while start < n {
        let mut end = (start + DEQUANT_PIECE).min(n);
        if axis == ScaleAxis::Columns && row_elems > DEQUANT_PIECE {
            end = end.min((start / row_elems + 1) * row_elems);
        }
        let count = end - start;
        let sr = dequant::scale_range(axis, row_elems, start..end);
        let column = if row_elems == 0 { 0 } else { start % row_elems };
        let from_column = axis == ScaleAxis::Columns && sr.start != 0;
        let q_piece = q.piece(start..end);
        let s_piece = scale.piece(sr.start * 4..sr.end * 4);
        let q_bytes = match q_piece {
            Piece::Host(b) => b.len(),
            Piece::Device(_) => 0,
        };
        let values_at = align_up(q_bytes, 16);
        let staged = match s_piece {
            Piece::Host(b) => values_at + b.len(),
            Piece::Device(_) => q_bytes,
        };
        jobs.push(Job {
            kind: JobKind::Dequant,
            input: Input::Dequant {
                q: q_piece,
                scales: s_piece,
                code: dequant_code(axis, signed, from_column),
                row_elems,
                column,
            },
            op: Op::Replace,
            width: 4,
            n: count,
            m: 0,
            dst: dst + start * 4,
            base: 0,
            staged,
            values_at,
            pos_bytes: 0,
            cut_before: false,
            decoded: 0,
            ctx_base: 0,
            wide: false,
        });
        start = end;
    }
}

/// The predictor of a row-mapped base held on the host, for a target of
/// `len` bytes at `dst`: raw pieces built on the host by
/// [`rows::predict`] (base rows and zeros), cut like any raw payload so
/// several threads stage them at once. No kernel runs, so the delta needs
/// no batch boundary after them.
fn rows_host_jobs<'a>(
    base: &'a [u8],
    rows: &'a [RowRun],
    row_bytes: u64,
    len: u64,
    dst: u64,
    w: usize,
    jobs: &mut Vec<Job<'a>>,
) {
    let mut at = 0u64;
    while at < len {
        let n = (RAW_PIECE as u64).min(len - at);
        jobs.push(Job {
            kind: JobKind::Raw,
            input: Input::Rows {
                base,
                rows,
                row_bytes,
                at,
            },
            op: Op::Replace,
            width: w,
            n: n / w.max(1) as u64,
            m: 0,
            dst: dst + at,
            base: 0,
            staged: n as usize,
            values_at: 0,
            pos_bytes: 0,
            cut_before: false,
            decoded: 0,
            ctx_base: 0,
            wide: false,
        });
        at += n;
    }
}

/// The predictor of a row-mapped base held in device memory at `src` (a
/// caller's buffer, or scratch an inline base decoded into), for a target
/// of `len` bytes at `dst`: one device-to-device fill per run and one
/// zero fill per gap, in target order. Runs are never merged (the map is
/// used as stored); jobs past [`MAX_JOBS_PER_BATCH`] spill into further
/// batches, which may run in any order relative to each other since every
/// job writes its own target bytes and only reads the base.
fn rows_device_jobs<'a>(
    src: u64,
    rows: &[RowRun],
    row_bytes: u64,
    len: u64,
    dst: u64,
    w: usize,
    jobs: &mut Vec<Job<'a>>,
) {
    let wb = w.max(1) as u64;
    let fill = |target: u64, base: u64, bytes: u64, jobs: &mut Vec<Job<'a>>| {
        jobs.push(Job {
            kind: JobKind::Fill,
            input: Input::None,
            op: Op::Replace,
            width: w,
            n: bytes / wb,
            m: 0,
            dst: dst + target,
            base,
            staged: 0,
            values_at: 0,
            pos_bytes: 0,
            cut_before: false,
            decoded: 0,
            ctx_base: 0,
            wide: false,
        })
    };
    let mut at = 0u64;
    for s in rows::segments(rows, row_bytes, 0..len) {
        if s.target > at {
            fill(at, 0, s.target - at, jobs);
        }
        fill(s.target, src + s.base, s.len, jobs);
        at = s.target + s.len;
    }
    if len > at {
        fill(at, 0, len - at, jobs);
    }
}

/// The jobs that decode inline base tensor `bi` (which has no base of its
/// own) into the device buffer at `dst`.
pub fn base_tensor_jobs<'a, D: AsRef<[u8]> + Sync>(
    archive: &'a Archive<D>,
    bi: usize,
    dst: u64,
    opts: PlanOptions,
    jobs: &mut Vec<Job<'a>>,
) -> Result<()> {
    let rec = archive.record(Table::Base, bi);
    let w = rec.dtype.width();
    match &rec.payload {
        Payload::Plain { .. } => {
            let b = archive.plain_bytes(Table::Base, bi)?.unwrap_or_default();
            raw_jobs(b, dst, w, jobs);
        }
        Payload::Chunked { chunks, .. } => {
            for (i, c) in chunks.iter().enumerate() {
                chunk_jobs(
                    archive.bytes(),
                    Table::Base,
                    bi,
                    i,
                    c,
                    w,
                    dst,
                    Resolved::Zero,
                    BasePlan::Zero,
                    opts,
                    jobs,
                );
            }
        }
    }
    Ok(())
}

/// The base plan for target `t` when bases come from the archive or `host`:
/// the host-side resolution of [`Archive::resolve_base`] (which checks an
/// external base's SHA-256), mapped onto the device plan.
pub fn host_base_plan<'a, D: AsRef<[u8]> + Sync>(
    archive: &'a Archive<D>,
    t: usize,
    host: &'a dyn BaseProvider,
) -> Result<BasePlan<'a>> {
    Ok(match archive.resolve_base(t, host)? {
        BaseView::Zero => BasePlan::Zero,
        BaseView::Bytes(b) => BasePlan::HostBytes(b),
        BaseView::Inline(bi) => BasePlan::InlineChunked(bi),
        BaseView::Widened(WidenSource::Bytes(b), from) => BasePlan::Widened {
            src: WidenSrc::HostBytes(b),
            from,
        },
        // The caller swaps in its scratch buffer (see `needs_scratch`).
        BaseView::Widened(WidenSource::Inline(bi), from) => BasePlan::Widened {
            src: WidenSrc::InlineChunked { bi, scratch: 0 },
            from,
        },
        BaseView::Rows(src, rows, row_bytes) => BasePlan::Rows {
            src: match src {
                WidenSource::Bytes(b) => WidenSrc::HostBytes(b),
                WidenSource::Inline(bi) => WidenSrc::InlineChunked { bi, scratch: 0 },
            },
            rows,
            row_bytes,
        },
        BaseView::Dequant(DequantView {
            q,
            signed,
            scale,
            axis,
            row_elems,
        }) => {
            // The caller swaps in scratch for chunked inline codes or scales
            // (see `needs_scratch`).
            let src = |w: WidenSource<'a>| match w {
                WidenSource::Bytes(b) => WidenSrc::HostBytes(b),
                WidenSource::Inline(bi) => WidenSrc::InlineChunked { bi, scratch: 0 },
            };
            BasePlan::Dequant {
                q: src(q),
                signed,
                scale: src(scale),
                axis,
                row_elems,
            }
        }
    })
}

/// The base plan for target `t` when its base tensor (as stored: narrower
/// for a widened base, another row count for a row-mapped one) is already
/// in device memory at `addr` and must stay unchanged.
pub fn device_base_plan<D: AsRef<[u8]> + Sync>(
    archive: &Archive<D>,
    t: usize,
    addr: u64,
) -> BasePlan<'_> {
    let rec = archive.record(Table::Target, t);
    if let Some((rows, row_elems)) = rec.base.row_map(&rec.shape) {
        return BasePlan::Rows {
            src: WidenSrc::Device(addr),
            rows,
            // Validated at open: the map fits the shapes.
            row_bytes: row_elems.saturating_mul(rec.dtype.width() as u64),
        };
    }
    match base_dtype(archive, t) {
        Some(from) if from != rec.dtype => BasePlan::Widened {
            src: WidenSrc::Device(addr),
            from,
        },
        _ => BasePlan::Device(addr),
    }
}

/// The base plan for quantized target `t` when its codes and scales
/// tensors are already in device memory at `q` and `scale` and must stay
/// unchanged; `None` when `t`'s base is not quantized.
pub fn device_dequant_plan<D: AsRef<[u8]> + Sync>(
    archive: &Archive<D>,
    t: usize,
    q: u64,
    scale: u64,
) -> Option<BasePlan<'_>> {
    let rec = archive.record(Table::Target, t);
    let axis = match &rec.base {
        BaseRef::InlineDequant { axis, .. } | BaseRef::ExternalDequant { axis, .. } => *axis,
        _ => return None,
    };
    Some(BasePlan::Dequant {
        q: WidenSrc::Device(q),
        signed: base_dtype(archive, t) == Some(Dtype::I8),
        scale: WidenSrc::Device(scale),
        axis,
        // As the reader computes it (0 for a 0-d tensor, whose axis is
        // `Tensor`).
        row_elems: rows::row_bytes(&rec.shape, 1).unwrap_or(0),
    })
}

/// For a base plan that decodes chunked inline base tensors on the device
/// before reading them (a narrow base to widen, a row-mapped base whose rows
/// are copied, a quantized base's codes and scales): each one's index in
/// the base table and its scratch bytes, in order. The caller allocates
/// them and sets their addresses with [`with_scratch`]; targets of one load
/// that read the same base should share its scratch, which
/// [`targets_jobs`] then decodes once (only the chunks some target reads).
pub fn needs_scratch<D: AsRef<[u8]> + Sync>(
    archive: &Archive<D>,
    base: &BasePlan<'_>,
) -> Vec<(usize, u64)> {
    let len = |src: &WidenSrc<'_>| match src {
        WidenSrc::InlineChunked { bi, .. } => {
            // Validated at open: every tensor's byte length fits.
            Some((
                *bi,
                archive.record(Table::Base, *bi).byte_len().unwrap_or(0),
            ))
        }
        _ => None,
    };
    match base {
        BasePlan::Widened { src, .. } | BasePlan::Rows { src, .. } => {
            len(src).into_iter().collect()
        }
        BasePlan::Dequant { q, scale, .. } => len(q).into_iter().chain(len(scale)).collect(),
        _ => Vec::new(),
    }
}

/// `base` with its scratch buffers at `scratch` (addresses in the order
/// [`needs_scratch`] gave their sizes).
pub fn with_scratch<'a>(base: BasePlan<'a>, scratch: &[u64]) -> BasePlan<'a> {
    let mut next = scratch.iter().copied();
    let mut set = |src: WidenSrc<'a>| match src {
        WidenSrc::InlineChunked { bi, .. } => WidenSrc::InlineChunked {
            bi,
            scratch: next.next().unwrap_or(0),
        },
        other => other,
    };
    match base {
        BasePlan::Widened { src, from } => BasePlan::Widened {
            src: set(src),
            from,
        },
        BasePlan::Rows {
            src,
            rows,
            row_bytes,
        } => BasePlan::Rows {
            src: set(src),
            rows,
            row_bytes,
        },
        BasePlan::Dequant {
            q,
            signed,
            scale,
            axis,
            row_elems,
        } => {
            let q = set(q);
            BasePlan::Dequant {
                q,
                signed,
                scale: set(scale),
                axis,
                row_elems,
            }
        }
        other => other,
    }
}

/// The scratch buffers of one load: one per chunked inline base tensor that
/// its targets read through a widening, a row map or a dequantization,
/// shared by every target of the load that reads it (so that
/// [`targets_jobs`] decodes each of its chunks once).
#[derive(Debug, Default)]
pub struct Scratch {
    /// Base index -> scratch address.
    of: HashMap<usize, u64>,
}

impl Scratch {
    /// `base` with its scratch addresses set; `alloc` makes a buffer of the
    /// given byte length for each base tensor this load has not seen yet
    /// and returns its address.
    pub fn assign<'a, D: AsRef<[u8]> + Sync>(
        &mut self,
        archive: &Archive<D>,
        base: BasePlan<'a>,
        alloc: &mut dyn FnMut(u64) -> Result<u64>,
    ) -> Result<BasePlan<'a>> {
        let mut addrs = Vec::new();
        for (bi, n) in needs_scratch(archive, &base) {
            let a = match self.of.get(&bi) {
                Some(&a) => a,
                None => {
                    let a = alloc(n)?;
                    self.of.insert(bi, a);
                    a
                }
            };
            addrs.push(a);
        }
        Ok(with_scratch(base, &addrs))
    }
}

/// The dtype of target `t`'s base as stored (narrower than the target's for
/// a widened base), if it has one.
pub fn base_dtype<D: AsRef<[u8]> + Sync>(archive: &Archive<D>, t: usize) -> Option<Dtype> {
    let rec = archive.record(Table::Target, t);
    match &rec.base {
        BaseRef::None => None,
        BaseRef::InlineWidened { index } => Some(archive.index().bases[*index as usize].dtype),
        BaseRef::ExternalWidened { dtype, .. } => Some(*dtype),
        // A quantized base: its codes' dtype (I8 or U8).
        BaseRef::InlineDequant { q, .. } => Some(archive.index().bases[*q as usize].dtype),
        BaseRef::ExternalDequant { q_dtype, .. } => Some(*q_dtype),
        _ => Some(rec.dtype),
    }
}

/// The shape of target `t`'s base as stored (another row count for a
/// row-mapped base, v1.2; any shape for a sliced one, v1.5), if it has one.
pub fn base_shape<D: AsRef<[u8]> + Sync>(archive: &Archive<D>, t: usize) -> Option<&[u64]> {
    let rec = archive.record(Table::Target, t);
    match &rec.base {
        BaseRef::None => None,
        BaseRef::InlineRows { index, .. } | BaseRef::InlineSlices { index, .. } => {
            Some(&archive.index().bases[*index as usize].shape)
        }
        BaseRef::ExternalRows { shape, .. } | BaseRef::ExternalSlices { shape, .. } => Some(shape),
        _ => Some(&rec.shape),
    }
}

/// Whether target `t` can be reconstructed in place over its base tensor:
/// the base has the target's dtype and shape (not widened, not row-mapped,
/// not quantized).
pub fn base_fits_in_place<D: AsRef<[u8]> + Sync>(archive: &Archive<D>, t: usize) -> bool {
    let rec = archive.record(Table::Target, t);
    base_dtype(archive, t) == Some(rec.dtype)
        && rec.base.rows().is_none()
        && dequant_names(archive, t).is_none()
}

/// For a target with a quantized base (v1.2): the names of its codes and
/// scales tensors (the base table's names for an inline base).
pub fn dequant_names<D: AsRef<[u8]> + Sync>(
    archive: &Archive<D>,
    t: usize,
) -> Option<(&str, &str)> {
    let bases = &archive.index().bases;
    match &archive.record(Table::Target, t).base {
        BaseRef::InlineDequant { q, scale, .. } => Some((
            bases[*q as usize].name.as_str(),
            bases[*scale as usize].name.as_str(),
        )),
        BaseRef::ExternalDequant {
            q_name, scale_name, ..
        } => Some((q_name.as_str(), scale_name.as_str())),
        _ => None,
    }
}

/// For a target with a quantized base (v1.2): the scales tensor's shape.
pub fn dequant_scale_shape<D: AsRef<[u8]> + Sync>(
    archive: &Archive<D>,
    t: usize,
) -> Option<&[u64]> {
    match &archive.record(Table::Target, t).base {
        BaseRef::InlineDequant { scale, .. } => Some(&archive.index().bases[*scale as usize].shape),
        BaseRef::ExternalDequant { scale_shape, .. } => Some(scale_shape),
        _ => None,
    }
}

/// The name of the base tensor target `t` combines with, if any; for a
/// quantized base, its codes tensor (see [`dequant_names`] for both).
pub fn base_name<D: AsRef<[u8]> + Sync>(archive: &Archive<D>, t: usize) -> Option<&str> {
    match &archive.record(Table::Target, t).base {
        BaseRef::None => None,
        BaseRef::Inline { index } => Some(&archive.index().bases[*index as usize].name),
        BaseRef::External { name, .. } | BaseRef::ExternalWidened { name, .. } => Some(name),
        BaseRef::InlineWidened { index }
        | BaseRef::InlineRows { index, .. }
        | BaseRef::InlineSlices { index, .. } => Some(&archive.index().bases[*index as usize].name),
        BaseRef::ExternalRows { name, .. } | BaseRef::ExternalSlices { name, .. } => Some(name),
        BaseRef::InlineDequant { q, .. } => Some(&archive.index().bases[*q as usize].name),
        BaseRef::ExternalDequant { q_name, .. } => Some(q_name),
    }
}

#[derive(Debug, Clone, Copy)]
enum Resolved {
    Zero,
    InPlace,
    Separate(u64),
}

fn raw_jobs<'a>(bytes: &'a [u8], dst: u64, width: usize, jobs: &mut Vec<Job<'a>>) {
    for (k, piece) in bytes.chunks(RAW_PIECE).enumerate() {
        jobs.push(Job {
            kind: JobKind::Raw,
            input: Input::Bytes(piece),
            op: Op::Replace,
            width,
            n: (piece.len() / width.max(1)) as u64,
            m: 0,
            dst: dst + (k * RAW_PIECE) as u64,
            base: 0,
            staged: piece.len(),
            values_at: 0,
            pos_bytes: 0,
            cut_before: false,
            decoded: 0,
            ctx_base: 0,
            wide: false,
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn chunk_jobs<'a>(
    bytes: &[u8],
    table: Table,
    t: usize,
    i: usize,
    c: &Chunk,
    w: usize,
    dst: u64,
    base: Resolved,
    ctx: BasePlan<'a>,
    opts: PlanOptions,
    jobs: &mut Vec<Job<'a>>,
) {
    let off = c.elem_start * w as u64;
    let dst = dst + off;
    let (base_addr, fill) = match base {
        Resolved::Zero => (0, true),
        Resolved::InPlace => (dst, false),
        Resolved::Separate(a) => (a + off, true),
    };
    let input = Input::Chunk {
        table,
        tensor: t,
        chunk: i,
        base: ctx,
    };
    let mut push = |job: Job<'a>| jobs.push(job);
    // Values entropy-decoded on the device: the staged entropy input's
    // length, and the device-only bytes (planes, base context).
    let (entropy, wide) = match opts.entropy_on_device {
        EntropyOnDevice::Never => (None, false),
        mode => match entropy_input(bytes, c, w) {
            Some((len, Lanes::ThirtyTwo)) => (Some(len), true),
            Some((len, Lanes::Four)) if mode == EntropyOnDevice::All => (Some(len), false),
            _ => (None, false),
        },
    };
    let ctx_bytes = has_base_plane(c);
    let decoded = |values: u64| match entropy {
        Some(_) => values as usize * w + if ctx_bytes { values as usize } else { 0 },
        None => 0,
    };
    let fill_job = Job {
        kind: JobKind::Fill,
        input: Input::None,
        op: Op::Replace,
        width: w,
        n: c.elem_count,
        m: 0,
        dst,
        base: base_addr,
        staged: 0,
        values_at: 0,
        pos_bytes: 0,
        cut_before: false,
        decoded: 0,
        ctx_base: 0,
        wide: false,
    };
    match c.kind {
        ChunkKind::Zero => {
            if fill {
                push(fill_job);
            }
        }
        ChunkKind::Dense => push(Job {
            kind: JobKind::Dense,
            input,
            op: c.op,
            width: w,
            n: c.elem_count,
            m: 0,
            dst,
            base: base_addr,
            staged: entropy.unwrap_or((c.elem_count * w as u64) as usize),
            values_at: 0,
            pos_bytes: 0,
            cut_before: false,
            decoded: decoded(c.elem_count),
            ctx_base: base_addr,
            wide,
        }),
        ChunkKind::Sparse => {
            if fill {
                push(fill_job);
            }
            let (kind, pos_bytes) = if opts.positions_on_device {
                (JobKind::SparseVarint, c.positions.raw_len as usize)
            } else {
                (JobKind::Sparse, c.changed as usize * 4)
            };
            let values_at = align_up(pos_bytes, 16);
            push(Job {
                kind,
                input,
                op: c.op,
                width: w,
                n: c.elem_count,
                m: c.changed,
                dst,
                base: dst,
                staged: values_at + entropy.unwrap_or(c.changed as usize * w),
                values_at,
                pos_bytes,
                cut_before: false,
                decoded: decoded(c.changed),
                ctx_base: base_addr,
                wide,
            })
        }
    }
}

/// Rounds `x` up to a multiple of `a` (a power of two).
pub const fn align_up(x: usize, a: usize) -> usize {
    (x + a - 1) & !(a - 1)
}

/// Blocks job `j` launches in its phase.
pub fn tiles(j: &Job<'_>) -> u64 {
    match j.kind {
        JobKind::Fill => (j.n * j.width as u64).div_ceil(FILL_BYTES_PER_TILE),
        JobKind::Dense => j.n.div_ceil(dense_elems_per_tile(j.width)),
        JobKind::Sparse => j.m.div_ceil(SPARSE_PER_TILE),
        JobKind::SparseVarint => (j.pos_bytes as u64).div_ceil(VARINT_SEGMENT).max(1),
        JobKind::Widen => j.n.div_ceil(WIDEN_PER_TILE),
        JobKind::Dequant => j.n.div_ceil(DEQUANT_PER_TILE),
        JobKind::Raw => 0,
    }
}

/// One batch: jobs staged together into one pinned slot, copied with one
/// host→device copy (plus one per raw piece) and applied with at most four
/// kernel launches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Jobs of the batch (indices into the job list).
    pub jobs: Range<usize>,
    /// Staging offset of each job's region (same order as `jobs`).
    pub offsets: Vec<usize>,
    /// Phase-1 (fill, dense) jobs, in descriptor order.
    pub phase1: Vec<usize>,
    /// Phase-2 (sparse, `u32` positions) jobs, after the phase-1 table.
    pub phase2: Vec<usize>,
    /// Phase-3 (sparse, positions decoded on the device) jobs, after the
    /// phase-2 table; run by two launches (segment counts, then apply).
    pub phase3: Vec<usize>,
    /// Phase-0 jobs: chunks whose values are entropy-decoded on the device
    /// ([`Job::decoded`]), run before every other launch of the batch;
    /// their table follows the phase-3 table. Each job is also in the
    /// table of the phase that applies it. The first
    /// [`Batch::phase0_narrow`] have 4-state planes, the rest 32-state
    /// ones ([`Job::wide`]).
    pub phase0: Vec<usize>,
    /// How many of [`Batch::phase0`]'s jobs, from the first, have 4-state
    /// planes: in the one `tpde_entropy` launch the first blocks decode
    /// them with a group of four threads each, the blocks after decode the
    /// rest with a warp each.
    pub phase0_narrow: usize,
    /// Offset of each job's device-only region ([`Job::decoded`] bytes)
    /// in the decode area (0 when it has none; same order as `jobs`).
    pub decoded_at: Vec<usize>,
    /// Bytes of the decode area the batch uses.
    pub device_end: usize,
    /// Offset of the decode area in the slot's device buffer (the slot
    /// size the batches were made for): after everything copied.
    pub device_area: usize,
    /// True when no phase-0 job reads device memory outside the batch's
    /// own staging (no base context read from a base): the entropy launch
    /// then need not wait for earlier batches' kernels and may overlap
    /// them (it writes only its slot's decode area).
    pub phase0_independent: bool,
    /// Blocks of the phase-1 launch.
    pub tiles1: u32,
    /// Blocks of the phase-2 launch.
    pub tiles2: u32,
    /// Blocks of each phase-3 launch (one per positions segment).
    pub tiles3: u32,
    /// Staging offset of the phase-3 segment statistics (16 bytes per
    /// phase-3 block, written by the device).
    pub stats_at: usize,
    /// Bytes at the start of the slot that go to device staging: the
    /// descriptor tables and the kernel inputs.
    pub kernel_bytes: usize,
    /// Raw pieces: (staging offset, device address, length), copied straight
    /// to their destination.
    pub raw: Vec<(usize, u64, usize)>,
}

/// The staging bytes one job needs in a slot, including alignment (and, for
/// device-decoded positions, its segment statistics).
fn region(j: &Job<'_>) -> usize {
    let stats = if j.kind == JobKind::SparseVarint {
        16 * tiles(j) as usize
    } else {
        0
    };
    align_up(j.staged, REGION_ALIGN) + align_up(stats, REGION_ALIGN)
}

/// The smallest slot that can hold every job of `jobs` in a batch of its own.
pub fn min_slot_bytes(jobs: &[Job<'_>]) -> usize {
    jobs.iter()
        .map(|j| REGION_ALIGN + region(j))
        .max()
        .unwrap_or(REGION_ALIGN)
}

/// The smallest device-only decode area (per slot) that holds the
/// decoded values of every job of `jobs` ([`Job::decoded`]); 0 when no job
/// is entropy-decoded on the device.
pub fn min_decode_bytes(jobs: &[Job<'_>]) -> usize {
    jobs.iter()
        .map(|j| align_up(j.decoded, REGION_ALIGN))
        .max()
        .unwrap_or(0)
}

/// Which launch a job belongs to.
fn phase(j: &Job<'_>) -> usize {
    match j.kind {
        JobKind::Fill | JobKind::Dense | JobKind::Widen | JobKind::Dequant => 1,
        JobKind::Sparse => 2,
        JobKind::SparseVarint => 3,
        JobKind::Raw => 0,
    }
}

/// Groups `jobs` into batches that fit `slot_bytes` of staging each, with
/// a device-only decode area of as many bytes after the slot.
pub fn make_batches(jobs: &[Job<'_>], slot_bytes: usize) -> Result<Vec<Batch>> {
    make_batches_with(jobs, slot_bytes, slot_bytes)
}

/// Groups `jobs` into batches that fit `slot_bytes` of (pinned and device)
/// staging each, and `decode_bytes` of device-only area for the values the
/// device entropy-decodes ([`Job::decoded`]); that area starts at offset
/// `slot_bytes` of the slot's device buffer, which is therefore
/// `slot_bytes + decode_bytes` long ([`Batch::device_bytes`]). Why a
/// separate area: the decoded planes never cross PCIe, and the entropy
/// kernel needs many chunks per launch (one thread group each) to keep the
/// device busy, so a batch may decode several times its staged bytes.
pub fn make_batches_with(
    jobs: &[Job<'_>],
    slot_bytes: usize,
    decode_bytes: usize,
) -> Result<Vec<Batch>> {
    make_batches_limited(jobs, slot_bytes, decode_bytes, MAX_JOBS_PER_BATCH)
}

/// [`make_batches_with`] with at most `max_descs` descriptors per batch
/// (at most [`MAX_JOBS_PER_BATCH`]; tests use fewer to make batches spill).
pub fn make_batches_limited(
    jobs: &[Job<'_>],
    slot_bytes: usize,
    decode_bytes: usize,
    max_descs: usize,
) -> Result<Vec<Batch>> {
    let max_descs = max_descs.clamp(2, MAX_JOBS_PER_BATCH);
    if slot_bytes < min_slot_bytes(jobs) {
        return Err(GpuError::Usage(format!(
            "staging slots of {slot_bytes} bytes cannot hold a job of {} bytes",
            min_slot_bytes(jobs)
        )));
    }
    if decode_bytes < min_decode_bytes(jobs) {
        return Err(GpuError::Usage(format!(
            "decode areas of {decode_bytes} bytes cannot hold a job's {} decoded bytes",
            min_decode_bytes(jobs)
        )));
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start < jobs.len() {
        let mut end = start;
        let mut descs = 0usize;
        let mut data = 0usize;
        let mut dev = 0usize;
        let mut t = [0u64; 4];
        while end < jobs.len() {
            let j = &jobs[end];
            if end > start && j.cut_before {
                break;
            }
            let ph = phase(j);
            let d = descs + usize::from(ph != 0) + usize::from(j.decoded > 0);
            let bytes = align_up(d * DESC_BYTES, REGION_ALIGN) + data + region(j);
            let ndev = dev + align_up(j.decoded, REGION_ALIGN);
            let mut nt = t;
            nt[ph] += tiles(j);
            if end > start
                && (bytes > slot_bytes
                    || ndev > decode_bytes
                    || d > max_descs
                    || nt.iter().any(|&x| x > MAX_TILES_PER_BATCH))
            {
                break;
            }
            descs = d;
            data += region(j);
            dev = ndev;
            t = nt;
            end += 1;
        }
        out.push(layout(jobs, start..end, descs, t, slot_bytes));
        start = end;
    }
    Ok(out)
}

/// Places the jobs of one batch: header, kernel inputs, segment statistics,
/// then raw pieces.
fn layout(
    jobs: &[Job<'_>],
    range: Range<usize>,
    descs: usize,
    t: [u64; 4],
    device_area: usize,
) -> Batch {
    let header = align_up(descs * DESC_BYTES, REGION_ALIGN);
    let mut offsets = vec![0usize; range.len()];
    let mut at = header;
    let mut tables: [Vec<usize>; 4] = Default::default();
    let mut phase0 = Vec::new();
    for (k, j) in jobs[range.clone()].iter().enumerate() {
        let ph = phase(j);
        if ph == 0 {
            continue;
        }
        tables[ph].push(range.start + k);
        if j.decoded > 0 {
            phase0.push(range.start + k);
        }
        offsets[k] = at;
        at += align_up(j.staged, REGION_ALIGN);
    }
    // 4-state jobs first, then 32-state ones (each in job order): one
    // launch of each kernel over its part of the table.
    phase0.sort_by_key(|&ji| jobs[ji].wide);
    let phase0_narrow = phase0.iter().filter(|&&ji| !jobs[ji].wide).count();
    let stats_at = at;
    at += align_up(16 * t[3] as usize, REGION_ALIGN);
    let kernel_bytes = if descs == 0 { 0 } else { at };
    let phase0_independent = phase0.iter().all(|&ji| {
        let j = &jobs[ji];
        let vals = if j.kind == JobKind::Dense { j.n } else { j.m };
        j.ctx_base == 0 || j.decoded <= vals as usize * j.width
    });
    let mut decoded_at = vec![0usize; range.len()];
    let mut device_end = 0;
    for (k, j) in jobs[range.clone()].iter().enumerate() {
        if j.decoded > 0 {
            decoded_at[k] = device_end;
            device_end += align_up(j.decoded, REGION_ALIGN);
        }
    }
    let mut raw = Vec::new();
    for (k, j) in jobs[range.clone()].iter().enumerate() {
        if j.kind == JobKind::Raw {
            offsets[k] = at;
            raw.push((at, j.dst, j.staged));
            at += region(j);
        }
    }
    let [_, phase1, phase2, phase3] = tables;
    Batch {
        jobs: range,
        offsets,
        phase1,
        phase2,
        phase3,
        phase0,
        phase0_narrow,
        decoded_at,
        device_end,
        device_area,
        phase0_independent,
        // Each bounded by MAX_TILES_PER_BATCH.
        tiles1: t[1] as u32,
        tiles2: t[2] as u32,
        tiles3: t[3] as u32,
        stats_at,
        kernel_bytes,
        raw,
    }
}

impl Batch {
    /// Staging bytes the batch uses.
    pub fn used_bytes(&self, jobs: &[Job<'_>]) -> usize {
        self.jobs
            .clone()
            .zip(&self.offsets)
            .map(|(i, &o)| o + align_up(jobs[i].staged, REGION_ALIGN))
            .max()
            .unwrap_or(0)
            .max(self.kernel_bytes)
    }

    /// Bytes of the slot's device buffer the batch uses (staging and its
    /// decode area).
    pub fn device_bytes(&self, jobs: &[Job<'_>]) -> usize {
        if self.device_end == 0 {
            self.used_bytes(jobs)
        } else {
            self.device_area + self.device_end
        }
    }

    /// Byte offset of the phase-0 (entropy) descriptor table.
    pub fn phase0_table(&self) -> usize {
        (self.phase1.len() + self.phase2.len() + self.phase3.len()) * DESC_BYTES
    }

    /// Device address of job `ji`'s decoded values (its device-only
    /// region), for device staging at `staging`; 0 when it has none.
    pub fn decoded_addr(&self, jobs: &[Job<'_>], ji: usize, staging: u64) -> u64 {
        if jobs[ji].decoded == 0 {
            return 0;
        }
        staging + (self.device_area + self.decoded_at[ji - self.jobs.start]) as u64
    }

    /// Byte offset of the phase-2 descriptor table in the staging header.
    pub fn phase2_table(&self) -> usize {
        self.phase1.len() * DESC_BYTES
    }

    /// Byte offset of the phase-3 descriptor table in the staging header.
    pub fn phase3_table(&self) -> usize {
        (self.phase1.len() + self.phase2.len()) * DESC_BYTES
    }

    /// The job behind descriptor `slot` of the phase-3 table.
    pub fn phase3_job(&self, slot: usize) -> Option<usize> {
        self.phase3.get(slot).copied()
    }

    /// Writes the descriptor tables into `header` (the slot's first bytes),
    /// for device staging at address `staging`.
    pub fn write_descriptors(&self, jobs: &[Job<'_>], staging: u64, header: &mut [u8]) {
        for (table, at) in [
            (&self.phase1, 0),
            (&self.phase2, self.phase2_table()),
            (&self.phase3, self.phase3_table()),
        ] {
            let mut tile = 0u32;
            for (slot, &ji) in table.iter().enumerate() {
                tile = self.write_one(
                    jobs,
                    ji,
                    staging,
                    tile,
                    &mut header[at + slot * DESC_BYTES..],
                );
            }
        }
        let at = self.phase0_table();
        for (slot, &ji) in self.phase0.iter().enumerate() {
            self.entropy_desc(jobs, ji, staging, slot as u32)
                .write(&mut header[at + slot * DESC_BYTES..]);
        }
    }

    /// The phase-0 descriptor of entropy job `ji`: `dst` its device-only
    /// region (decoded planes, then the base context), `vals` its entropy
    /// input, `base` [`Job::ctx_base`], `pos` its staged positions (sparse;
    /// gap bytes for [`JobKind::SparseVarint`], whose length the input's
    /// header holds), `n` elements of the chunk, `m` values (bytes per
    /// plane), `kind` the job's kind, flags bit 1: a plane is `RansBase`.
    /// `tile_start` is the descriptor's slot.
    fn entropy_desc(&self, jobs: &[Job<'_>], ji: usize, staging: u64, slot: u32) -> Desc {
        let j = &jobs[ji];
        let region = staging + self.offsets[ji - self.jobs.start] as u64;
        let sparse = matches!(j.kind, JobKind::Sparse | JobKind::SparseVarint);
        let m = if sparse { j.m } else { j.n };
        let ctx = j.decoded > m as usize * j.width;
        Desc {
            dst: self.decoded_addr(jobs, ji, staging),
            base: j.ctx_base,
            vals: region + j.values_at as u64,
            pos: if sparse { region } else { 0 },
            n: j.n,
            m,
            tile_start: slot,
            tiles: 1,
            width: j.width as u8,
            kind: j.kind as u8,
            op: 0,
            flags: u8::from(ctx) << 1,
        }
    }

    fn write_one(&self, jobs: &[Job<'_>], ji: usize, staging: u64, tile: u32, d: &mut [u8]) -> u32 {
        let j = &jobs[ji];
        let region = staging + self.offsets[ji - self.jobs.start] as u64;
        let (vals, pos) = match j.kind {
            _ if j.decoded > 0 => (
                self.decoded_addr(jobs, ji, staging),
                if j.kind == JobKind::Dense { 0 } else { region },
            ),
            JobKind::Sparse | JobKind::SparseVarint => (region + j.values_at as u64, region),
            JobKind::Dense => (region, 0),
            // Widen reads its narrow elements from staging or, when nothing
            // was staged, from device memory at `base`.
            JobKind::Widen if j.staged > 0 => (region, 0),
            JobKind::Widen => (j.base, 0),
            JobKind::Fill | JobKind::Raw | JobKind::Dequant => (0, 0),
        };
        // Device-decoded positions: `base` carries the gap stream's length
        // (the base of a sparse job is always `dst`).
        let base = match j.kind {
            JobKind::SparseVarint => j.pos_bytes as u64,
            JobKind::Widen => 0,
            _ => j.base,
        };
        let n_tiles = tiles(j) as u32;
        let mut desc = Desc {
            dst: j.dst,
            base,
            vals,
            pos,
            n: j.n,
            m: j.m,
            tile_start: tile,
            tiles: n_tiles,
            width: j.width as u8,
            kind: j.kind as u8,
            op: if j.kind == JobKind::Widen {
                j.m as u8
            } else {
                op_code(j.op)
            },
            flags: vector_flags(j),
        };
        // Dequant: codes at `base`, scales at `vals` (staged: codes at the
        // region's start, scales at `values_at`), see [`dequant_code`].
        if let Input::Dequant {
            q,
            scales,
            code,
            row_elems,
            column,
        } = j.input
        {
            desc.base = match q {
                Piece::Host(_) => region,
                Piece::Device(a) => a,
            };
            desc.vals = match scales {
                Piece::Host(_) => region + j.values_at as u64,
                Piece::Device(a) => a,
            };
            desc.pos = row_elems;
            desc.m = column;
            desc.op = code;
        }
        desc.write(d);
        tile + n_tiles
    }
}

/// The error for a job whose staged positions the device (or its CPU
/// mirror) found invalid, naming the tensor and chunk.
pub fn bad_positions<D: AsRef<[u8]> + Sync>(archive: &Archive<D>, job: &Job<'_>) -> GpuError {
    match job.input {
        Input::Chunk {
            table,
            tensor,
            chunk,
            ..
        } => GpuError::Format(tpde_format::Error::ChunkDecode {
            location: tpde_format::Location::Chunk {
                tensor: archive.record(table, tensor).name.clone(),
                base: table == Table::Base,
                chunk: chunk as u64,
            },
            reason: "positions stream is invalid (checked on the device)",
        }),
        _ => GpuError::Usage("device reported bad positions for a job without a chunk".into()),
    }
}

/// Why the entropy kernel (or its CPU mirror) refused a plane: the reason
/// code of its error word, as the CPU decoder's message.
pub const fn entropy_reason(code: u32) -> &'static str {
    match code {
        1 => "entropy: truncated stream",
        2 => "entropy: trailing bytes after the last symbol",
        3 => "entropy: final state mismatch",
        _ => "entropy: device decoder failed",
    }
}

/// The typed error for an entropy kernel's error word (`(batch << 32) |
/// 0x8000_0000 | reason << 24 | plane << 20 | (slot + 1)`), naming the
/// tensor and chunk as the CPU path does; `None` when the word is not the
/// entropy kernel's. Reason 4 (an invalid gap stream met while building a
/// sparse chunk's base context) is the positions error of
/// [`bad_positions`].
pub fn entropy_error<D: AsRef<[u8]> + Sync>(
    archive: &Archive<D>,
    jobs: &[Job<'_>],
    batches: &[Batch],
    word: u64,
) -> Option<GpuError> {
    let low = (word & 0xffff_ffff) as u32;
    if low & 0x8000_0000 == 0 {
        return None;
    }
    let reason = (low >> 24) & 0x7f;
    let slot = ((low & 0xf_ffff) as usize).checked_sub(1)?;
    let job = batches
        .get((word >> 32) as usize)
        .and_then(|b| b.phase0.get(slot))
        .and_then(|&ji| jobs.get(ji));
    Some(match job {
        Some(j) if reason == 4 => bad_positions(archive, j),
        Some(j) => chunk_error(archive, j, entropy_reason(reason)),
        None => GpuError::Usage(format!("device reported an unknown job ({word:#x})")),
    })
}

/// The format's chunk-decode error for job `job`'s chunk.
pub fn chunk_error<D: AsRef<[u8]> + Sync>(
    archive: &Archive<D>,
    job: &Job<'_>,
    reason: &'static str,
) -> GpuError {
    match job.input {
        Input::Chunk {
            table,
            tensor,
            chunk,
            ..
        } => GpuError::Format(tpde_format::Error::ChunkDecode {
            location: tpde_format::Location::Chunk {
                tensor: archive.record(table, tensor).name.clone(),
                base: table == Table::Base,
                chunk: chunk as u64,
            },
            reason,
        }),
        _ => GpuError::Usage(format!(
            "device reported {reason:?} for a job without a chunk"
        )),
    }
}

/// The descriptor's op byte.
pub const fn op_code(op: Op) -> u8 {
    match op {
        Op::Xor => 0,
        Op::Add => 1,
        Op::Replace => 2,
        Op::AddZigzag => 3,
        Op::ReplaceRot => 4,
    }
}

/// Bit 0: the job may use the vector path (every address and plane offset
/// aligned to its vector width). Unaligned jobs take the scalar path.
fn vector_flags(j: &Job<'_>) -> u8 {
    let a16 = |x: u64| x % 16 == 0;
    let ok = match j.kind {
        JobKind::Dense => j.n % dense_elems_per_thread(j.width) == 0 && a16(j.dst) && a16(j.base),
        JobKind::Fill => (j.n * j.width as u64) % 16 == 0 && a16(j.dst) && a16(j.base),
        JobKind::Sparse
        | JobKind::SparseVarint
        | JobKind::Widen
        | JobKind::Dequant
        | JobKind::Raw => false,
    };
    u8::from(ok)
}

/// A decoded job descriptor: the 64 bytes the kernels read (little-endian;
/// the CUDA `struct Job` in [`crate::kernels`] has the same layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    /// Output address.
    pub dst: u64,
    /// Base address (0: zero base); for [`JobKind::SparseVarint`], the
    /// length of the gap stream at `pos`.
    pub base: u64,
    /// Values planes address.
    pub vals: u64,
    /// Positions address (sparse: `u32`s, or the gap stream).
    pub pos: u64,
    /// Elements in the range.
    pub n: u64,
    /// Positions (sparse).
    pub m: u64,
    /// First block of this job in its phase's grid.
    pub tile_start: u32,
    /// Blocks of this job.
    pub tiles: u32,
    /// Element width.
    pub width: u8,
    /// [`JobKind`] code.
    pub kind: u8,
    /// [`op_code`].
    pub op: u8,
    /// Bit 0: vector path allowed.
    pub flags: u8,
}

impl Desc {
    /// Writes the 64-byte form.
    pub fn write(&self, d: &mut [u8]) {
        d[0..8].copy_from_slice(&self.dst.to_le_bytes());
        d[8..16].copy_from_slice(&self.base.to_le_bytes());
        d[16..24].copy_from_slice(&self.vals.to_le_bytes());
        d[24..32].copy_from_slice(&self.pos.to_le_bytes());
        d[32..40].copy_from_slice(&self.n.to_le_bytes());
        d[40..48].copy_from_slice(&self.m.to_le_bytes());
        d[48..52].copy_from_slice(&self.tile_start.to_le_bytes());
        d[52..56].copy_from_slice(&self.tiles.to_le_bytes());
        d[56] = self.width;
        d[57] = self.kind;
        d[58] = self.op;
        d[59] = self.flags;
        d[60..64].fill(0);
    }

    /// Reads the 64-byte form (`d` holds at least 64 bytes).
    pub fn read(d: &[u8]) -> Desc {
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&d[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let u32_at = |o: usize| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&d[o..o + 4]);
            u32::from_le_bytes(a)
        };
        Desc {
            dst: u64_at(0),
            base: u64_at(8),
            vals: u64_at(16),
            pos: u64_at(24),
            n: u64_at(32),
            m: u64_at(40),
            tile_start: u32_at(48),
            tiles: u32_at(52),
            width: d[56],
            kind: d[57],
            op: d[58],
            flags: d[59],
        }
    }
}
