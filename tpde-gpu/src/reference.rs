//! The kernels' CPU reference: the whole GPU pipeline — plan, batches,
//! staging, descriptor tables, host→device copies, the two apply phases —
//! run on the CPU over a simulated device address space.
//!
//! It shares every line of host code with the GPU path ([`crate::plan`],
//! [`crate::stage`]) and mirrors the CUDA kernels element by element, reading
//! the same 64-byte descriptors from the same staging bytes. Tests compare
//! it with `tpde_format`'s CPU reader on every dtype width, chunk kind,
//! combine op and base mode, so the device logic is checked where there is
//! no GPU (CI). Out-of-range device addresses in a plan are errors here
//! rather than memory faults.

use std::collections::HashMap;

use tpde_format::codec::dequant;
use tpde_format::codec::entropy::Lanes;
use tpde_format::codec::rans_layout::{self, PlaneMode, RansLayout};
use tpde_format::format::{Dtype, Op};
use tpde_format::read::Table;
use tpde_format::{Archive, BaseProvider};

use crate::error::{GpuError, Result};
use crate::plan::{self, BasePlan, Batch, Desc, Input, Job, JobKind, Piece, DESC_BYTES};
use crate::stage;

/// Address of the first simulated buffer; buffer `i` starts at `(i + 1) << 40`.
const BUFFER_SHIFT: u32 = 40;

/// A simulated device address space: buffers at distinct, aligned addresses.
#[derive(Debug, Default)]
pub struct HostMemory {
    buffers: Vec<Vec<u8>>,
}

impl HostMemory {
    /// Allocates `len` bytes filled with `fill` (poison, so unwritten bytes
    /// show); returns the buffer's address.
    pub fn alloc(&mut self, len: usize, fill: u8) -> u64 {
        self.buffers.push(vec![fill; len]);
        (self.buffers.len() as u64) << BUFFER_SHIFT
    }

    /// Allocates a buffer holding `bytes`.
    pub fn upload(&mut self, bytes: &[u8]) -> u64 {
        self.buffers.push(bytes.to_vec());
        (self.buffers.len() as u64) << BUFFER_SHIFT
    }

    /// The bytes of the buffer at `addr` (as returned by `alloc`).
    pub fn buffer(&self, addr: u64) -> Option<&[u8]> {
        let i = (addr >> BUFFER_SHIFT).checked_sub(1)? as usize;
        self.buffers.get(i).map(|b| b.as_slice())
    }

    fn locate(&self, addr: u64, len: u64) -> Result<(usize, usize)> {
        let oob = || GpuError::Usage(format!("reference: {len} bytes at {addr:#x} out of range"));
        let i = (addr >> BUFFER_SHIFT).checked_sub(1).ok_or_else(oob)? as usize;
        let off = (addr & ((1 << BUFFER_SHIFT) - 1)) as usize;
        let b = self.buffers.get(i).ok_or_else(oob)?;
        let end = off.checked_add(len as usize).ok_or_else(oob)?;
        if end > b.len() {
            return Err(oob());
        }
        Ok((i, off))
    }

    /// `len` bytes at `addr`.
    pub fn get(&self, addr: u64, len: u64) -> Result<&[u8]> {
        let (i, off) = self.locate(addr, len)?;
        Ok(&self.buffers[i][off..off + len as usize])
    }

    /// `len` bytes at `addr`, writable.
    pub fn get_mut(&mut self, addr: u64, len: u64) -> Result<&mut [u8]> {
        let (i, off) = self.locate(addr, len)?;
        Ok(&mut self.buffers[i][off..off + len as usize])
    }
}

impl stage::DeviceRead for HostMemory {
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<()> {
        out.copy_from_slice(self.get(addr, out.len() as u64)?);
        Ok(())
    }
}

/// The device reads staging makes (base contexts over a device base),
/// recorded so that [`reconstruct`] can check none of them reads bytes an
/// earlier batch writes: on the GPU, staging of a batch overlaps the
/// kernels and copies of the batches before it.
struct Recorder<'m> {
    mem: &'m HostMemory,
    reads: std::sync::Mutex<Vec<Span>>,
}

impl stage::DeviceRead for Recorder<'_> {
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<()> {
        self.mem.read(addr, out)?;
        if let Ok(mut r) = self.reads.lock() {
            r.push((addr, addr + out.len() as u64));
        }
        Ok(())
    }
}

/// How the reference gets each target's base, mirroring the GPU API.
#[derive(Clone, Copy)]
pub enum BaseMode<'a> {
    /// Bases from the archive (inline) or from `host` (external), as
    /// `GpuArchive::load_all_with` does.
    Host(&'a dyn BaseProvider),
    /// Bases already in device memory, left unchanged (`load_onto`).
    DeviceBorrowed,
    /// Bases already in device memory, reconstructed in place (`load_all_onto`).
    DeviceInPlace,
}

impl std::fmt::Debug for BaseMode<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaseMode::Host(h) => write!(f, "Host({})", h.describe()),
            BaseMode::DeviceBorrowed => f.write_str("DeviceBorrowed"),
            BaseMode::DeviceInPlace => f.write_str("DeviceInPlace"),
        }
    }
}

/// Reconstructs every target tensor of `archive` through the pipeline's
/// CPU mirror, with staging slots of `slot_bytes`. In the device modes,
/// `device_bases` holds base tensors by name (bytes as they would sit in
/// device memory); a target whose base is missing there takes its base from
/// the archive. `opts` picks how sparse positions are staged. Returns the
/// targets' bytes in index order.
pub fn reconstruct<D: AsRef<[u8]> + Sync>(
    archive: &Archive<D>,
    mode: BaseMode<'_>,
    device_bases: &HashMap<String, Vec<u8>>,
    slot_bytes: usize,
    opts: plan::PlanOptions,
) -> Result<Vec<Vec<u8>>> {
    let mut mem = HostMemory::default();
    let no_base = tpde_format::NoBase;
    let host: &dyn BaseProvider = match mode {
        BaseMode::Host(h) => h,
        _ => &no_base,
    };
    let n = archive.index().tensors.len();
    let mut outs = Vec::with_capacity(n);
    let mut jobs: Vec<Job<'_>> = Vec::new();
    let mut plans = Vec::with_capacity(n);
    let mut shared = plan::Scratch::default();
    for t in 0..n {
        let rec = archive.record(Table::Target, t);
        let len = rec.byte_len().unwrap_or(0);
        let device_mode = matches!(mode, BaseMode::DeviceBorrowed | BaseMode::DeviceInPlace);
        // A quantized base on the device is two tensors, codes and scales,
        // read (never updated) into a new buffer.
        if let (true, Some(dq)) = (device_mode, device_dequant(archive, t, device_bases)?) {
            let (q, s) = dq;
            let (q, s) = (mem.upload(q), mem.upload(s));
            let base = plan::device_dequant_plan(archive, t, q, s)
                .ok_or_else(|| plan_error("quantized base without a quantized plan"))?;
            let dst = mem.alloc(len as usize, 0xA5);
            if len > 0 {
                plans.push(plan::Target {
                    t,
                    dst,
                    base,
                    cut: false,
                });
            }
            outs.push(dst);
            continue;
        }
        let dev_base = plan::base_name(archive, t).and_then(|name| device_bases.get(name));
        let dev_base = dev_base.filter(|_| plan::dequant_names(archive, t).is_none());
        let in_place_ok = plan::base_fits_in_place(archive, t);
        let (dst, base) = match (mode, dev_base, in_place_ok) {
            // A narrower or row-mapped base on the device is read into a
            // new buffer in both device modes (it cannot be reconstructed
            // in place).
            (BaseMode::DeviceBorrowed | BaseMode::DeviceInPlace, Some(b), false) => {
                let from = plan::base_dtype(archive, t).unwrap_or(rec.dtype);
                let want = plan::base_shape(archive, t)
                    .unwrap_or(&rec.shape)
                    .iter()
                    .try_fold(from.width() as u64, |a, &d| a.checked_mul(d))
                    .unwrap_or(u64::MAX);
                check_len(rec.name.as_str(), b.len() as u64, want)?;
                let a = mem.upload(b);
                (
                    mem.alloc(len as usize, 0xA5),
                    plan::device_base_plan(archive, t, a),
                )
            }
            (BaseMode::DeviceBorrowed, Some(b), true) => {
                check_len(rec.name.as_str(), b.len() as u64, len)?;
                let a = mem.upload(b);
                (mem.alloc(len as usize, 0xA5), BasePlan::Device(a))
            }
            (BaseMode::DeviceInPlace, Some(b), true) => {
                check_len(rec.name.as_str(), b.len() as u64, len)?;
                (mem.upload(b), BasePlan::InPlace)
            }
            _ => {
                let base = plan::host_base_plan(archive, t, host)?;
                // One scratch per base tensor, shared by the targets that
                // read it (as the device loader does).
                let base =
                    shared.assign(archive, base, &mut |n| Ok(mem.alloc(n as usize, 0xA5)))?;
                (mem.alloc(len as usize, 0xA5), base)
            }
        };
        if len > 0 {
            plans.push(plan::Target {
                t,
                dst,
                base,
                cut: false,
            });
        }
        outs.push(dst);
    }
    plan::targets_jobs(archive, &plans, opts, &mut jobs)?;
    // Decode areas as large as the slots, or as the largest job needs.
    let slot_bytes = slot_bytes.max(plan::min_slot_bytes(&jobs));
    let decode_bytes = slot_bytes.max(plan::min_decode_bytes(&jobs));
    let batches = plan::make_batches_with(&jobs, slot_bytes, decode_bytes)?;
    let staging_addr = mem.alloc(
        batches
            .iter()
            .map(|b| b.device_bytes(&jobs))
            .max()
            .unwrap_or(0),
        0,
    );
    let mut touched: Vec<Span> = Vec::new();
    let mut written: Vec<Span> = Vec::new();
    for b in &batches {
        check_hazards(&jobs, b, &mut touched)?;
        run_batch(archive, &jobs, b, staging_addr, &mut mem, &written)?;
        written.extend(batch_writes(&jobs, b));
    }
    Ok(outs
        .iter()
        .map(|&a| mem.buffer(a).unwrap_or_default().to_vec())
        .collect())
}

/// The codes and scales of quantized target `t` in `device_bases`: both,
/// or `None` when neither is there (the base then comes from the archive);
/// one without the other is the typed error, as on the GPU.
fn device_dequant<'b, D: AsRef<[u8]> + Sync>(
    archive: &Archive<D>,
    t: usize,
    device_bases: &'b HashMap<String, Vec<u8>>,
) -> Result<Option<(&'b [u8], &'b [u8])>> {
    let Some((qn, sn)) = plan::dequant_names(archive, t) else {
        return Ok(None);
    };
    let rec = archive.record(Table::Target, t);
    match (device_bases.get(qn), device_bases.get(sn)) {
        (None, None) => Ok(None),
        (Some(q), Some(s)) => {
            check_len(&rec.name, q.len() as u64, rec.elem_count().unwrap_or(0))?;
            let scales = plan::dequant_scale_shape(archive, t)
                .unwrap_or(&[])
                .iter()
                .try_fold(4u64, |a, &d| a.checked_mul(d))
                .unwrap_or(u64::MAX);
            check_len(&rec.name, s.len() as u64, scales)?;
            Ok(Some((q, s)))
        }
        (q, _) => Err(GpuError::DeviceBase {
            tensor: rec.name.clone(),
            reason: format!(
                "a quantized base needs both its codes {qn:?} and its scales {sn:?}; {:?} is missing",
                if q.is_none() { qn } else { sn }
            ),
        }),
    }
}

fn check_len(name: &str, got: u64, want: u64) -> Result<()> {
    if got != want {
        return Err(GpuError::DeviceBase {
            tensor: name.to_owned(),
            reason: format!("{got} bytes, the archive's base has {want}"),
        });
    }
    Ok(())
}

/// Stages, copies and applies one batch, as the GPU pipeline does.
fn run_batch<D: AsRef<[u8]> + Sync>(
    archive: &Archive<D>,
    jobs: &[Job<'_>],
    b: &Batch,
    staging_addr: u64,
    mem: &mut HostMemory,
    written: &[Span],
) -> Result<()> {
    // Host staging (pinned on the GPU path), poisoned.
    let mut host = vec![0x5Au8; b.used_bytes(jobs)];
    let rec = Recorder {
        mem,
        reads: Default::default(),
    };
    for (k, ji) in b.jobs.clone().enumerate() {
        let o = b.offsets[k];
        stage::fill_region(archive, &jobs[ji], &mut host[o..], &rec)?;
    }
    let reads = rec.reads.into_inner().unwrap_or_default();
    let overlap = |a: Span, c: Span| a.0 < c.1 && c.0 < a.1;
    if reads
        .iter()
        .any(|&r| written.iter().any(|&w| overlap(r, w)))
    {
        return Err(plan_error(
            "staging reads device bytes an earlier batch writes (it may not have run yet)",
        ));
    }
    b.write_descriptors(jobs, staging_addr, &mut host);
    // Host → device: the kernel region to staging, raw pieces to their place.
    mem.get_mut(staging_addr, b.kernel_bytes as u64)?
        .copy_from_slice(&host[..b.kernel_bytes]);
    for &(o, dst, len) in &b.raw {
        mem.get_mut(dst, len as u64)?
            .copy_from_slice(&host[o..o + len]);
    }
    // Phase 0 (entropy), phase 1, then phase 2, reading the descriptors
    // from device staging.
    let table = |i: usize, base: usize, mem: &HostMemory| -> Result<Desc> {
        Ok(Desc::read(mem.get(
            staging_addr + (base + i * DESC_BYTES) as u64,
            DESC_BYTES as u64,
        )?))
    };
    for i in 0..b.phase0.len() {
        let d = table(i, b.phase0_table(), mem)?;
        if d.tile_start as usize != i {
            return Err(plan_error("entropy descriptor out of its slot"));
        }
        // The launch's first blocks take the 4-state jobs, the others the
        // 32-state ones.
        let lanes = if i < b.phase0_narrow {
            Lanes::Four
        } else {
            Lanes::ThirtyTwo
        };
        if let Some((reason, _plane)) = apply_entropy(&d, lanes, mem)? {
            // The kernel's error word, for this batch alone (index 0).
            let word = 0x8000_0000 | u64::from(reason) << 24 | (i as u64 + 1);
            return Err(
                plan::entropy_error(archive, jobs, std::slice::from_ref(b), word)
                    .unwrap_or_else(|| plan_error("entropy error word not recognised")),
            );
        }
    }
    let mut tile = 0u32;
    for i in 0..b.phase1.len() {
        let d = table(i, 0, mem)?;
        check_tiles(&d, &mut tile)?;
        apply_phase1(&d, mem)?;
    }
    if tile != b.tiles1 {
        return Err(plan_error("phase-1 grid size differs from its jobs' tiles"));
    }
    let mut tile = 0u32;
    for i in 0..b.phase2.len() {
        let d = table(i, b.phase2_table(), mem)?;
        check_tiles(&d, &mut tile)?;
        apply_sparse(&d, mem)?;
    }
    if tile != b.tiles2 {
        return Err(plan_error("phase-2 grid size differs from its jobs' tiles"));
    }
    let mut tile = 0u32;
    for i in 0..b.phase3.len() {
        let d = table(i, b.phase3_table(), mem)?;
        check_tiles(&d, &mut tile)?;
        if !apply_varint(&d, mem)? {
            let ji = b.phase3_job(i).unwrap_or(0);
            return Err(plan::bad_positions(archive, &jobs[ji]));
        }
    }
    if tile != b.tiles3 {
        return Err(plan_error("phase-3 grid size differs from its jobs' tiles"));
    }
    Ok(())
}

/// A byte range `[start, end)` of device memory.
type Span = (u64, u64);

/// Mirror of `tpde_entropy`: decodes the planes of one phase-0 job, whose
/// planes have `lanes` states (the kernel's group size, from the job's
/// place in the table), from its entropy input (layout:
/// `stage::fill_entropy`'s docs) into its device-only region, with the
/// device's tables (coarse index, then a step forward while
/// `cum[s + 1] <= slot`) and the device's checks. Returns
/// `Some((reason, plane))` where the kernel reports an error (reason 1 a
/// word past the end, 2 words left over, 3 a final state other than
/// `2^16`, 4 an invalid gap stream).
fn apply_entropy(d: &Desc, lanes: Lanes, mem: &mut HostMemory) -> Result<Option<(u32, u32)>> {
    let w = usize::from(d.width);
    let m = d.m as usize;
    let head = mem.get(d.vals, plan::ENTROPY_HEAD as u64)?.to_vec();
    let u64_at = |b: &[u8], o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    };
    // The kernel does not read the header's lane count (its group size
    // says it); a plan that put a job in the wrong part is a bug.
    if u32::from_le_bytes([head[12], head[13], head[14], head[15]]) as usize != lanes.count() {
        return Err(plan_error(
            "entropy job in the table part of another lane count",
        ));
    }
    let ctx_bytes = d.flags & 2 != 0;
    let mut out = vec![0u8; m * w + if ctx_bytes { m } else { 0 }];
    if ctx_bytes {
        // Positions of the values, then byte w - 1 of the base under each.
        let positions: Option<Vec<u64>> = match d.kind {
            1 => Some((0..d.m).collect()),
            2 => {
                let raw = mem.get(d.pos, d.m * 4)?;
                Some(
                    raw.chunks_exact(4)
                        .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                        .collect(),
                )
                .filter(|p: &Vec<u64>| p.iter().all(|&p| p < d.n))
            }
            _ => gaps(mem.get(d.pos, u64_at(&head, 0))?, d.m, d.n),
        };
        let Some(positions) = positions else {
            return Ok(Some((4, 0)));
        };
        for (i, p) in positions.into_iter().enumerate() {
            out[m * w + i] = if d.base == 0 {
                0
            } else {
                mem.get(d.base + p * w as u64 + w as u64 - 1, 1)?[0]
            };
        }
    }
    for k in 0..w {
        let e = mem
            .get(
                d.vals + (plan::ENTROPY_HEAD + plan::ENTROPY_PLANE * k) as u64,
                64,
            )?
            .to_vec();
        let (data, len, tables) = (u64_at(&e, 24), u64_at(&e, 32), u64_at(&e, 40));
        let (done, rest) = out.split_at_mut(k * m);
        let (o, after) = rest.split_at_mut(m);
        match e[0] {
            0 => o.copy_from_slice(mem.get(d.vals + data, m as u64)?),
            1 => o.fill(e[4]),
            _ => {
                let (scale, buckets) = (u32::from(e[2]), usize::from(e[3]));
                let t = mem.get(d.vals + tables, plan::entropy_tables_len(buckets) as u64)?;
                let words = mem.get(d.vals + data, len)?;
                let ctx: Option<&[u8]> = match e[1] {
                    0 => None,
                    1 => Some(&done[(k - 1) * m..]),
                    _ => Some(&after[(w - k - 1) * m..]),
                };
                // Four states in the entry, 32 at its states offset.
                let raw = match lanes {
                    Lanes::Four => &e[8..24],
                    Lanes::ThirtyTwo => {
                        mem.get(d.vals + u64_at(&e, 48), plan::ENTROPY_STATES as u64)?
                    }
                };
                let mut x: Vec<u32> = raw
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                if let Some(reason) = decode_rans_device(t, words, &mut x, scale, ctx, o) {
                    return Ok(Some((reason, k as u32)));
                }
            }
        }
    }
    mem.get_mut(d.dst, out.len() as u64)?.copy_from_slice(&out);
    Ok(None)
}

/// The kernel's rANS loop for one plane: device `tables`
/// ([`plan::entropy_tables_len`]), 16-bit `words`, the final encoder
/// states `x` (4 or 32: symbol `i` is state `i mod x.len()`'s, as thread
/// `i mod G` of the kernel's group decodes it; a step of the group takes
/// the words of the threads that renormalize in thread order, which is
/// symbol order, so this sequential loop consumes them identically),
/// precision `scale`, the context plane (`None` for one bucket) into
/// `out`. Returns the kernel's reason code for a plane it refuses: 1 a
/// word needed past the end, 2 words left over, 3 a final state other
/// than `2^16`.
fn decode_rans_device(
    t: &[u8],
    words: &[u8],
    x: &mut [u32],
    scale: u32,
    ctx: Option<&[u8]>,
    out: &mut [u8],
) -> Option<u32> {
    let mask = (1u32 << scale) - 1;
    let sh = scale - 8;
    let nw = words.len() / 2;
    let mut p = 0usize;
    let mut truncated = false;
    let lanes = x.len();
    for (i, oi) in out.iter_mut().enumerate() {
        let j = i % lanes;
        let b = ctx.map_or(0, |c| usize::from(t[usize::from(c[i])]));
        let tb = &t[256 + b * plan::ENTROPY_BUCKET..][..plan::ENTROPY_BUCKET];
        let tab =
            |s: usize| u32::from_le_bytes([tb[4 * s], tb[4 * s + 1], tb[4 * s + 2], tb[4 * s + 3]]);
        let slot = x[j] & mask;
        // Coarse index, then step forward while cum[s + 1] <= slot.
        let mut s = usize::from(tb[1024 + (slot >> sh) as usize]);
        let mut ent = tab(s);
        while ent >> 16 <= slot && s < 255 {
            s += 1;
            ent = tab(s);
        }
        *oi = s as u8;
        let st = ent & 0xffff;
        x[j] = ((ent >> 16) - st)
            .wrapping_mul(x[j] >> scale)
            .wrapping_add(slot.wrapping_sub(st));
        if x[j] < 1 << 16 {
            if p < nw {
                x[j] = x[j] << 16 | u32::from(u16::from_le_bytes([words[2 * p], words[2 * p + 1]]));
            } else {
                truncated = true;
            }
            p += 1;
        }
    }
    if truncated {
        Some(1)
    } else if p != nw {
        Some(2)
    } else if x.iter().any(|&s| s != 1 << 16) {
        Some(3)
    } else {
        None
    }
}

/// Decodes one coded 4-state plane (spec §5.6) of `out.len()` bytes the
/// way the device path does; see [`decode_plane_as_device_lanes`].
pub fn decode_plane_as_device(
    coded: &[u8],
    context: Option<&[u8]>,
    out: &mut [u8],
) -> std::result::Result<(), &'static str> {
    decode_plane_as_device_lanes(coded, context, Lanes::Four, out)
}

/// Decodes one coded plane (spec §5.6) of `lanes` interleaved states and
/// `out.len()` bytes the way the device path does: header and tables
/// parsed on the host by [`rans_layout::parse_plane`], the device tables
/// built by [`stage::device_tables`], then the kernel's loop
/// (`decode_rans_device`). Errors carry the CPU decoder's reasons
/// ([`tpde_format::codec::entropy::decode_plane_lanes`]), so tests can
/// compare the two on any stream, hostile ones included.
pub fn decode_plane_as_device_lanes(
    coded: &[u8],
    context: Option<&[u8]>,
    lanes: Lanes,
    out: &mut [u8],
) -> std::result::Result<(), &'static str> {
    let mut layout = RansLayout::default();
    match rans_layout::parse_plane(
        coded,
        out.len(),
        context.map(<[u8]>::len),
        lanes,
        &mut layout,
    )? {
        PlaneMode::Raw(r) => {
            out.copy_from_slice(&coded[r]);
            Ok(())
        }
        PlaneMode::Constant(b) => {
            out.fill(b);
            Ok(())
        }
        PlaneMode::Rans => {
            let mut t = vec![0u8; plan::entropy_tables_len(layout.buckets)];
            stage::device_tables(&layout, &mut t);
            let ctx = context.filter(|_| layout.buckets > 1);
            let words = &coded[layout.words.clone()];
            let mut states = layout.states;
            let x = &mut states[..lanes.count()];
            match decode_rans_device(&t, words, x, layout.scale, ctx, out) {
                None => Ok(()),
                Some(reason) => Err(plan::entropy_reason(reason)),
            }
        }
    }
}

/// Positions from a gap stream (spec §5.5), checked as the kernel checks
/// them; `None` for an invalid stream.
fn gaps(b: &[u8], m: u64, n: u64) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    let (mut e, mut next) = (0usize, 0u64);
    while e < b.len() {
        let (mut v, mut sh, mut len, mut done) = (0u64, 0u32, 0, false);
        while e < b.len() && len < 5 {
            let c = b[e];
            e += 1;
            len += 1;
            v |= u64::from(c & 0x7f) << sh;
            sh += 7;
            if c & 0x80 == 0 {
                done = true;
                break;
            }
        }
        let p = next + v;
        if !done || out.len() as u64 >= m || p >= n {
            return None;
        }
        out.push(p);
        next = p + 1;
    }
    (out.len() as u64 == m).then_some(out)
}

/// Device-side ordering checks the sequential mirror cannot see by running:
/// - jobs of one launch run concurrently, so no job may write a byte another
///   job of the same launch reads or writes;
/// - a batch's raw copies are not ordered after earlier batches' kernels on
///   other streams, so they may not land on bytes any earlier kernel touched.
///
/// `touched` accumulates the byte ranges kernels of earlier batches touched.
fn check_hazards(jobs: &[Job<'_>], b: &Batch, touched: &mut Vec<Span>) -> Result<()> {
    let overlap = |a: Span, c: Span| a.0 < c.1 && c.0 < a.1;
    for &(_, dst, len) in &b.raw {
        let r = (dst, dst + len as u64);
        if touched.iter().any(|&t| overlap(r, t)) {
            return Err(plan_error(
                "a raw copy lands on bytes an earlier kernel touched",
            ));
        }
    }
    for table in [&b.phase1, &b.phase2, &b.phase3] {
        // (writes, reads) of each job of this launch
        let acc: Vec<(Span, Vec<Span>)> = table
            .iter()
            .map(|&ji| {
                let j = &jobs[ji];
                let len = j.n * j.width as u64;
                let w = (j.dst, j.dst + len);
                if j.kind == JobKind::Widen {
                    // Reads its narrow source from device memory unless staged.
                    let fw = plan::widen_from_width(j.m as u8) as u64;
                    let src = (j.staged == 0).then_some((j.base, j.base + j.n * fw));
                    return (w, src.into_iter().collect());
                }
                if let Input::Dequant { q, scales, .. } = j.input {
                    // Reads codes and scales from device memory unless staged.
                    let mut reads = Vec::new();
                    if let Piece::Device(a) = q {
                        reads.push((a, a + j.n));
                    }
                    if let Piece::Device(a) = scales {
                        reads.push((a, a + 4 * dequant_scales_used(j)));
                    }
                    return (w, reads);
                }
                let reads_base = j.base != 0
                    && j.base != j.dst
                    && matches!(j.kind, JobKind::Fill | JobKind::Dense)
                    && !(j.kind == JobKind::Dense && matches!(j.op, Op::Replace | Op::ReplaceRot));
                (
                    w,
                    reads_base
                        .then_some((j.base, j.base + len))
                        .into_iter()
                        .collect(),
                )
            })
            .collect();
        for (x, (wx, _)) in acc.iter().enumerate() {
            for (y, (wy, ry)) in acc.iter().enumerate() {
                if x != y && (overlap(*wx, *wy) || ry.iter().any(|&r| overlap(*wx, r))) {
                    return Err(plan_error("two jobs of one launch touch the same bytes"));
                }
            }
        }
        for (w, r) in acc {
            touched.push(w);
            touched.extend(r);
        }
    }
    Ok(())
}

/// The device bytes batch `b` writes: its kernels' output ranges and its
/// raw copies.
fn batch_writes(jobs: &[Job<'_>], b: &Batch) -> Vec<Span> {
    let kernels = [&b.phase1, &b.phase2, &b.phase3]
        .into_iter()
        .flatten()
        .map(|&ji| {
            let j = &jobs[ji];
            (j.dst, j.dst + j.n * j.width as u64)
        });
    let raw = b.raw.iter().map(|&(_, dst, len)| (dst, dst + len as u64));
    kernels.chain(raw).collect()
}

/// How many scales dequant job `j` reads, from its first one: what its
/// descriptor's index arithmetic reaches (mirrors [`apply_dequant`]).
fn dequant_scales_used(j: &Job<'_>) -> u64 {
    let Input::Dequant {
        code,
        row_elems,
        column,
        ..
    } = j.input
    else {
        return 0;
    };
    if j.n == 0 {
        return 0;
    }
    match code & 3 {
        1 => (column + j.n - 1) / row_elems.max(1) + 1,
        2 if code & 8 != 0 => j.n,
        2 => row_elems.min(column + j.n),
        _ => 1,
    }
}

fn plan_error(what: &str) -> GpuError {
    GpuError::Usage(format!("reference: {what}"))
}

/// The kernels find a block's job by `tile_start`; the tables must tile the
/// grid exactly and each job's blocks must cover its work.
fn check_tiles(d: &Desc, next: &mut u32) -> Result<()> {
    if d.tile_start != *next {
        return Err(plan_error("job tiles are not contiguous"));
    }
    let (work, per_tile) = match d.kind {
        0 => (d.n * u64::from(d.width), plan::FILL_BYTES_PER_TILE),
        1 => (d.n, plan::dense_elems_per_tile(usize::from(d.width))),
        5 => (d.n, plan::WIDEN_PER_TILE),
        6 => (d.n, plan::DEQUANT_PER_TILE),
        2 => (d.m, plan::SPARSE_PER_TILE),
        _ => (d.base, plan::VARINT_SEGMENT),
    };
    let t = u64::from(d.tiles);
    let minimal = (t > 0 && (t - 1) * per_tile >= work) && !(work == 0 && t == 1);
    if t * per_tile < work || minimal {
        return Err(plan_error("job tiles do not cover its work exactly"));
    }
    *next += d.tiles;
    Ok(())
}

fn op_of(code: u8) -> Op {
    match code {
        0 => Op::Xor,
        1 => Op::Add,
        3 => Op::AddZigzag,
        4 => Op::ReplaceRot,
        _ => Op::Replace,
    }
}

/// `op(base, value)` on the unsigned little-endian word of `width` bytes.
fn combine(op: Op, width: usize, base: u64, value: u64) -> u64 {
    let mask = if width >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * width)) - 1
    };
    match op {
        Op::Xor => base ^ value,
        Op::Add => base.wrapping_add(value) & mask,
        Op::Replace => value,
        Op::AddZigzag => {
            let d = (value >> 1) ^ (value & 1).wrapping_neg();
            base.wrapping_add(d) & mask
        }
        Op::ReplaceRot => rotr1(width, value),
    }
}

/// `value` rotated right by one bit within `width` bytes (v1.4 `ReplaceRot`).
fn rotr1(width: usize, value: u64) -> u64 {
    let bits = 8 * width.min(8) as u32;
    let mask = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    ((value >> 1) | (value << (bits - 1))) & mask
}

fn load(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

fn store(v: u64, b: &mut [u8]) {
    for (k, o) in b.iter_mut().enumerate() {
        *o = (v >> (8 * k)) as u8;
    }
}

/// Element `i` of `count` values stored as byte planes, most significant first.
fn from_planes(planes: &[u8], width: usize, count: usize, i: usize) -> u64 {
    (0..width).fold(0u64, |v, k| {
        v | (u64::from(planes[k * count + i]) << (8 * (width - 1 - k)))
    })
}

/// Mirror of `tpde_phase1`: fill and dense jobs.
fn apply_phase1(d: &Desc, mem: &mut HostMemory) -> Result<()> {
    let w = usize::from(d.width);
    let bytes = d.n * w as u64;
    match d.kind {
        0 => {
            let src = if d.base == 0 {
                vec![0u8; bytes as usize]
            } else {
                mem.get(d.base, bytes)?.to_vec()
            };
            mem.get_mut(d.dst, bytes)?.copy_from_slice(&src);
            Ok(())
        }
        1 => {
            let planes = mem.get(d.vals, bytes)?.to_vec();
            let op = op_of(d.op);
            let base = if d.base == 0 || matches!(op, Op::Replace | Op::ReplaceRot) {
                None
            } else {
                Some(mem.get(d.base, bytes)?.to_vec())
            };
            let out = mem.get_mut(d.dst, bytes)?;
            let n = d.n as usize;
            for (i, o) in out.chunks_exact_mut(w).enumerate() {
                let v = from_planes(&planes, w, n, i);
                let b = base.as_ref().map_or(0, |b| load(&b[i * w..(i + 1) * w]));
                store(combine(op, w, b, v), o);
            }
            Ok(())
        }
        5 => {
            let (from, to) = match d.op {
                0 => (Dtype::BF16, Dtype::F32),
                1 => (Dtype::F16, Dtype::F32),
                2 => (Dtype::BF16, Dtype::F64),
                3 => (Dtype::F16, Dtype::F64),
                _ => (Dtype::F32, Dtype::F64),
            };
            if to.width() != w {
                return Err(plan_error("widen job width differs from its conversion"));
            }
            let src = mem.get(d.vals, d.n * from.width() as u64)?.to_vec();
            let out = mem.get_mut(d.dst, bytes)?;
            tpde_format::codec::widen::widen(from, to, &src, out);
            Ok(())
        }
        6 => apply_dequant(d, mem),
        _ => Err(plan_error("phase-1 table holds a job of another kind")),
    }
}

/// Mirror of the kernel's `dequant`: element `i` of the job is
/// `f32(code) × scale[k]`, with `k` from the descriptor exactly as the
/// kernel computes it (see [`plan::dequant_code`]); the product itself is
/// the format's definition ([`dequant::dequant`]: one binary32 multiply,
/// NaN made canonical), which `__fmul_rn` computes on the device.
fn apply_dequant(d: &Desc, mem: &mut HostMemory) -> Result<()> {
    if d.width != 4 {
        return Err(plan_error("dequant job of a width other than 4"));
    }
    let codes = mem.get(d.base, d.n)?.to_vec();
    let (axis, signed, from_column) = (d.op & 3, d.op & 4 != 0, d.op & 8 != 0);
    let (row, col) = (d.pos, d.m);
    if axis != 0 && row == 0 {
        return Err(plan_error(
            "dequant job per row or column with no row length",
        ));
    }
    let mut out = vec![0u8; d.n as usize * 4];
    for (i, (&c, o)) in codes.iter().zip(out.chunks_exact_mut(4)).enumerate() {
        let e = col + i as u64;
        let k = match axis {
            0 => 0,
            1 => e / row,
            2 => (e % row)
                .checked_sub(if from_column { col } else { 0 })
                .ok_or_else(|| plan_error("dequant scale index below the job's first"))?,
            _ => return Err(plan_error("dequant job with an unknown scale axis")),
        };
        let s = mem.get(d.vals + 4 * k, 4)?;
        let scale = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        o.copy_from_slice(&dequant::dequant(c, signed, scale).to_le_bytes());
    }
    mem.get_mut(d.dst, d.n * 4)?.copy_from_slice(&out);
    Ok(())
}

/// Mirror of `tpde_varint_count` + `tpde_varint_apply`: decodes the LEB128
/// gaps at `pos` (`base` bytes) as the device does — every byte without the
/// continuation bit ends a gap, whose value is read back over at most five
/// bytes; position = running sum of (gap + 1) − 1 — and scatter-combines the
/// values. Returns false for a stream the CPU reader would refuse (a varint
/// over five bytes, a position past the chunk, more or fewer than `m`
/// positions, trailing bytes).
fn apply_varint(d: &Desc, mem: &mut HostMemory) -> Result<bool> {
    let w = usize::from(d.width);
    let m = d.m as usize;
    let bytes = mem.get(d.pos, d.base)?.to_vec();
    let planes = mem.get(d.vals, d.m * w as u64)?.to_vec();
    let op = op_of(d.op);
    let out = mem.get_mut(d.dst, d.n * w as u64)?;
    let mut j = 0usize;
    let mut next = 0u64;
    for (e, &c) in bytes.iter().enumerate() {
        if c & 0x80 != 0 {
            continue;
        }
        let mut g = u64::from(c & 0x7f);
        let mut k = e;
        for _ in 0..4 {
            if k == 0 || bytes[k - 1] & 0x80 == 0 {
                break;
            }
            g = (g << 7) | u64::from(bytes[k - 1] & 0x7f);
            k -= 1;
        }
        if k > 0 && bytes[k - 1] & 0x80 != 0 {
            return Ok(false); // longer than five bytes
        }
        let p = next + g;
        next = p + 1;
        if j >= m || p >= d.n {
            return Ok(false);
        }
        let at = p as usize * w;
        let v = from_planes(&planes, w, m, j);
        let e = &mut out[at..at + w];
        store(combine(op, w, load(e), v), e);
        j += 1;
    }
    Ok(j == m && bytes.last().is_some_and(|&c| c & 0x80 == 0))
}

/// Mirror of `tpde_sparse`: scatter-combine values at positions, in place.
fn apply_sparse(d: &Desc, mem: &mut HostMemory) -> Result<()> {
    if d.kind != JobKind::Sparse as u8 {
        return Err(plan_error("phase-2 table holds a job of another kind"));
    }
    let w = usize::from(d.width);
    let m = d.m as usize;
    let pos = mem.get(d.pos, d.m * 4)?.to_vec();
    let planes = mem.get(d.vals, d.m * w as u64)?.to_vec();
    let op = op_of(d.op);
    let out = mem.get_mut(d.dst, d.n * w as u64)?;
    for j in 0..m {
        let p = u32::from_le_bytes([pos[4 * j], pos[4 * j + 1], pos[4 * j + 2], pos[4 * j + 3]])
            as usize;
        let e = out
            .get_mut(p * w..(p + 1) * w)
            .ok_or_else(|| plan_error("sparse position past the chunk"))?;
        let v = from_planes(&planes, w, m, j);
        store(combine(op, w, load(e), v), e);
    }
    Ok(())
}
