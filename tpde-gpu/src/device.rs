//! The GPU loader: device buffers, the staging ring, and the pipeline that
//! overlaps CPU decode, host→device copies and the apply kernels.
//!
//! Pipeline of one load:
//! 1. plan the jobs of every requested tensor and group them into batches
//!    ([`crate::plan`]);
//! 2. rayon threads decode each batch's chunks straight into one pinned
//!    staging slot of a ring ([`crate::stage`]); several batches decode at
//!    once;
//! 3. the calling thread submits finished batches in order: one async copy
//!    of the slot's kernel region into its device staging buffer (raw pieces
//!    copy straight to their tensors), then the two apply kernels;
//! 4. batches alternate between streams, so batch `b + 1`'s copy runs while
//!    batch `b`'s kernels do. Kernels run in batch order (each waits on the
//!    previous batch's kernels through an event), which orders a base's
//!    chunks before the delta that applies over them. A pinned slot is
//!    refilled once the copy out of it finished; its device staging buffer
//!    is reused by a later batch on the same stream, after its kernels.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::CUresult;
use cudarc::driver::{result as cu, CudaContext, CudaEvent, CudaStream, PinnedHostSlice};
use sha2::{Digest as _, Sha256};
use tpde_format::format::Dtype;
use tpde_format::read::Table;
use tpde_format::{Archive, BaseProvider, NoBase, ReadLimits};

use crate::error::{cuda, GpuError, Result};
use crate::kernels::{kernels_for, Kernels};
use crate::plan::{self, BasePlan, Batch, Job};
use crate::stage;

/// Checks that the CUDA driver library can be loaded, without letting
/// cudarc's loader panic when it cannot.
pub(crate) fn driver_available() -> Result<()> {
    // SAFETY: only tries to dlopen the driver library by its usual names.
    let present = catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() });
    match present {
        Ok(true) => Ok(()),
        _ => Err(GpuError::NoDriver),
    }
}

/// Checks that NVRTC can be loaded (cudarc panics on first use otherwise).
pub(crate) fn nvrtc_available() -> Result<()> {
    // SAFETY: only tries to dlopen the NVRTC library by its usual names.
    let present = catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() });
    match present {
        Ok(true) => Ok(()),
        _ => Err(GpuError::NoNvrtc),
    }
}

/// Runs a driver call that may hit cudarc's loader (which panics on a
/// missing symbol) and turns such a panic into a typed error.
fn guarded<T>(what: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let detail = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "unknown loader failure".into());
        Err(GpuError::DriverUnusable {
            detail: format!("{what}: {detail}"),
        })
    })
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device ordinal.
    pub ordinal: usize,
    /// Devices the driver reports.
    pub device_count: usize,
    /// Device name.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Device memory in bytes.
    pub total_mem: usize,
}

/// Finds device `ordinal` and opens its primary context. No driver or no
/// device gives [`GpuError::NoDriver`] / [`GpuError::NoDevice`]
/// ([`GpuError::is_no_device`]), never a panic.
pub fn probe(ordinal: usize) -> Result<DeviceInfo> {
    let ctx = open_context(ordinal)?;
    Ok(DeviceInfo {
        ordinal,
        device_count: guarded("cuDeviceGetCount", || {
            cuda("cuDeviceGetCount", CudaContext::device_count())
        })? as usize,
        name: cuda("cuDeviceGetName", ctx.name())?,
        compute_capability: cuda("cuDeviceGetAttribute", ctx.compute_capability())?,
        total_mem: cuda("cuDeviceTotalMem", ctx.total_mem())?,
    })
}

fn open_context(ordinal: usize) -> Result<Arc<CudaContext>> {
    driver_available()?;
    guarded("cuInit", || match cu::init() {
        Ok(()) => Ok(()),
        Err(e) if e.0 == CUresult::CUDA_ERROR_NO_DEVICE => {
            Err(GpuError::NoDevice { ordinal, count: 0 })
        }
        // The toolkit's stub libcuda (found before the real driver, or on a
        // machine with the toolkit and no driver) answers every call so.
        Err(e) if e.0 == CUresult::CUDA_ERROR_STUB_LIBRARY => Err(GpuError::NoDriver),
        Err(source) => Err(GpuError::Cuda {
            call: "cuInit",
            source,
        }),
    })?;
    let count = guarded("cuDeviceGetCount", || {
        cuda("cuDeviceGetCount", CudaContext::device_count())
    })?;
    if ordinal >= count.max(0) as usize {
        return Err(GpuError::NoDevice {
            ordinal,
            count: count.max(0) as usize,
        });
    }
    guarded("cuDevicePrimaryCtxRetain", || {
        cuda("cuDevicePrimaryCtxRetain", CudaContext::new(ordinal))
    })
}

/// Device memory owned by tpde (freed on drop) or borrowed from another
/// runtime (never freed here).
#[derive(Debug)]
pub struct DeviceBuffer {
    ptr: u64,
    len: usize,
    ctx: Arc<CudaContext>,
    owned: bool,
}

impl DeviceBuffer {
    /// Allocates `len` bytes of device memory (`cuMemAlloc`). A zero-length
    /// buffer has address 0 and allocates nothing.
    pub fn alloc(ctx: &Arc<CudaContext>, len: usize) -> Result<DeviceBuffer> {
        cuda("cuCtxSetCurrent", ctx.bind_to_thread())?;
        let ptr = if len == 0 {
            0
        } else {
            // SAFETY: plain device allocation in the current context.
            cuda("cuMemAlloc", unsafe { cu::malloc_sync(len) })?
        };
        Ok(DeviceBuffer {
            ptr,
            len,
            ctx: ctx.clone(),
            owned: true,
        })
    }

    /// Allocates a buffer holding a copy of `bytes` (synchronous copy).
    pub fn from_host(ctx: &Arc<CudaContext>, bytes: &[u8]) -> Result<DeviceBuffer> {
        let b = DeviceBuffer::alloc(ctx, bytes.len())?;
        if !bytes.is_empty() {
            // SAFETY: `b` holds exactly `bytes.len()` bytes of device memory.
            cuda("cuMemcpyHtoD", unsafe {
                cu::memcpy_htod_sync(b.ptr, bytes)
            })?;
        }
        Ok(b)
    }

    /// Wraps device memory another runtime owns; tpde never frees it.
    ///
    /// # Safety
    /// `ptr` must address `len` bytes of device memory of `ctx`'s device
    /// that stay allocated, and are not used by anyone else, for as long as
    /// the buffer (or a tensor built on it) is in use by tpde.
    pub unsafe fn from_raw(ctx: &Arc<CudaContext>, ptr: u64, len: usize) -> DeviceBuffer {
        DeviceBuffer {
            ptr,
            len,
            ctx: ctx.clone(),
            owned: false,
        }
    }

    /// The device address (a `CUdeviceptr`), for other runtimes.
    pub fn device_ptr(&self) -> u64 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The context the memory belongs to.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Copies the buffer to host memory (synchronous).
    pub fn copy_to_host(&self) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.len];
        if self.len > 0 {
            cuda("cuCtxSetCurrent", self.ctx.bind_to_thread())?;
            // SAFETY: `ptr` addresses `len` bytes of device memory.
            cuda("cuMemcpyDtoH", unsafe {
                cu::memcpy_dtoh_sync(&mut out, self.ptr)
            })?;
        }
        Ok(out)
    }

    /// Gives up ownership: the memory is no longer freed on drop. Returns the
    /// device address; free it with `cuMemFree`.
    pub fn leak(mut self) -> u64 {
        self.owned = false;
        self.ptr
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.owned && self.ptr != 0 {
            // Errors cannot be returned from drop; cudarc records them on
            // the context (`CudaContext::check_err`).
            self.ctx.record_err(self.ctx.bind_to_thread());
            // SAFETY: allocated by `alloc` with cuMemAlloc and not yet freed.
            self.ctx.record_err(unsafe { cu::free_sync(self.ptr) });
        }
    }
}

/// A tensor in device memory.
#[derive(Debug)]
pub struct DeviceTensor {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<u64>,
    /// The bytes (little-endian, row-major, exactly the safetensors layout).
    pub buffer: DeviceBuffer,
}

impl DeviceTensor {
    /// The device address of the first byte (a `CUdeviceptr`), for other
    /// runtimes (DLPack, PyTorch's `from_blob`, ...).
    pub fn device_ptr(&self) -> u64 {
        self.buffer.device_ptr()
    }

    /// Byte length.
    pub fn byte_len(&self) -> usize {
        self.buffer.len()
    }

    /// Copies the tensor's bytes to the host.
    pub fn copy_to_host(&self) -> Result<Vec<u8>> {
        self.buffer.copy_to_host()
    }
}

/// Pipeline settings. Defaults suit a whole checkpoint on one GPU: 8 slots
/// of 32 MiB pinned staging (and as much device staging), 2 streams, one
/// decode thread per core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuOptions {
    slots: usize,
    slot_bytes: usize,
    decode_bytes: usize,
    streams: usize,
    threads: usize,
    verify_digests: bool,
    positions_on_device: bool,
    entropy_on_device: plan::EntropyOnDevice,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            slots: 8,
            slot_bytes: 32 << 20,
            decode_bytes: 128 << 20,
            streams: 2,
            threads: 0,
            verify_digests: false,
            positions_on_device: true,
            entropy_on_device: plan::EntropyOnDevice::default(),
        }
    }
}

impl GpuOptions {
    /// Staging slots in the ring (rounded up to a multiple of the stream
    /// count): how many batches decode while earlier ones copy and apply.
    #[must_use]
    pub fn with_slots(mut self, n: usize) -> Self {
        self.slots = n.max(1);
        self
    }
    /// Bytes per staging slot (raised to fit the largest chunk).
    #[must_use]
    pub fn with_slot_bytes(mut self, n: usize) -> Self {
        self.slot_bytes = n;
        self
    }
    /// Bytes of device-only decode area per slot, for the values the device
    /// entropy-decodes (raised to fit the largest chunk; allocated only
    /// when a load has such chunks). The entropy kernel decodes each chunk
    /// sequentially with one group of four threads (a warp of 32 for
    /// 32-state planes), so it needs many chunks per launch: a batch may
    /// decode several times the bytes it stages (the coded words are a
    /// fraction of the decoded planes).
    #[must_use]
    pub fn with_decode_bytes(mut self, n: usize) -> Self {
        self.decode_bytes = n;
        self
    }
    /// CUDA streams batches alternate between (at least 1).
    #[must_use]
    pub fn with_streams(mut self, n: usize) -> Self {
        self.streams = n.max(1);
        self
    }
    /// Decode threads; 0 means one per available core.
    #[must_use]
    pub fn with_threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }
    /// Decode sparse chunks' gap-encoded positions on the device (default)
    /// rather than on the CPU. On the device the CPU only decompresses the
    /// gap bytes, and fewer bytes cross PCIe (about one byte per position
    /// instead of four); the device checks the stream as the CPU reader would.
    #[must_use]
    pub fn with_positions_on_device(mut self, yes: bool) -> Self {
        self.positions_on_device = yes;
        self
    }
    /// Entropy-decode every rANS-coded chunk on the device (`true`), or
    /// none (`false`, the default; [`plan::EntropyOnDevice`] says why, and
    /// `BENCHMARKS-gpu.md` runs 9, 14, 15 and 16 when each mode pays). On the device only the coded words and their
    /// parsed tables are staged and cross PCIe, and the CPU parses plane
    /// headers instead of decoding every symbol; a `RansBase` plane's base
    /// context is read from the base in device memory (no device → host
    /// copy). Chunks with a zstd plane are decoded on the CPU either way.
    #[must_use]
    pub fn with_entropy_on_device(mut self, yes: bool) -> Self {
        self.entropy_on_device = if yes {
            plan::EntropyOnDevice::All
        } else {
            plan::EntropyOnDevice::Never
        };
        self
    }
    /// Which chunks are entropy-decoded on the device (see
    /// [`GpuOptions::with_entropy_on_device`]); for format 1.6 archives,
    /// [`plan::EntropyOnDevice::Wide`] with decode areas of 0.5–1 GiB
    /// (`with_decode_bytes`) is the fastest load measured.
    #[must_use]
    pub fn with_entropy_on_device_for(mut self, mode: plan::EntropyOnDevice) -> Self {
        self.entropy_on_device = mode;
        self
    }
    /// After loading, copy every tensor back and check its SHA-256 against
    /// the archive. Slow (it moves every byte back over PCIe and hashes it on
    /// one core per tensor); without it the GPU path relies on the CRC-32 of
    /// every stored chunk and the validated index, as streaming readers do.
    #[must_use]
    pub fn with_verify_digests(mut self, yes: bool) -> Self {
        self.verify_digests = yes;
        self
    }
}

/// Where one load's pipeline spent its time, as seen by the submitting
/// thread. `wait_decode_ms` dominating means CPU decode bounds the load;
/// `wait_slot_ms` dominating means the copies (PCIe) do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadStats {
    /// Batches submitted.
    pub batches: usize,
    /// Bytes staged and copied (descriptor tables and raw pieces included).
    pub staged_bytes: u64,
    /// Waiting for batches to finish decoding.
    pub wait_decode_ms: f64,
    /// Waiting for a slot's copy to finish before refilling it.
    pub wait_slot_ms: f64,
    /// Queuing copies and kernels.
    pub submit_ms: f64,
    /// From the first decode to the last submission (the device may still
    /// be working afterwards).
    pub pipeline_ms: f64,
}

/// One pinned staging slot and its device twin.
struct Slot {
    _pinned: PinnedHostSlice<u8>,
    host: *mut u8,
    len: usize,
    device: DeviceBuffer,
    /// Recorded after the last copy out of the pinned buffer.
    copied: CudaEvent,
}

// SAFETY: `host` points into `_pinned`, which the slot owns; the ring is
// only used by the thread holding its mutex, and tasks get disjoint slices.
unsafe impl Send for Slot {}

struct Ring {
    slots: Vec<Slot>,
    slot_bytes: usize,
    decode_bytes: usize,
}

/// A raw slice pointer that may cross to a decode thread.
struct SendPtr(*mut u8, usize);
// SAFETY: each SendPtr covers a disjoint region of a pinned slot that no
// other thread and no device copy touches until the batch is submitted.
unsafe impl Send for SendPtr {}

/// An archive opened on one GPU.
pub struct GpuArchive<D: AsRef<[u8]> + Sync = memmap2::Mmap> {
    archive: Archive<D>,
    ctx: Arc<CudaContext>,
    kernels: Arc<Kernels>,
    streams: Vec<Arc<CudaStream>>,
    kernels_done: Vec<CudaEvent>,
    /// One device `u64` the position decoder reports a bad stream in.
    error_word: DeviceBuffer,
    ring: Mutex<Option<Ring>>,
    stats: Mutex<LoadStats>,
    pool: rayon::ThreadPool,
    opts: GpuOptions,
}

impl<D: AsRef<[u8]> + Sync> std::fmt::Debug for GpuArchive<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuArchive")
            .field("device", &self.ctx.ordinal())
            .field("tensors", &self.archive.index().tensors.len())
            .field("opts", &self.opts)
            .finish()
    }
}

impl GpuArchive<memmap2::Mmap> {
    /// Memory-maps the archive at `path` and opens it on device `ordinal`.
    pub fn open(path: impl AsRef<Path>, ordinal: usize) -> Result<Self> {
        let archive = Archive::open_with_limits(path, ReadLimits::default())?;
        GpuArchive::new(archive, ordinal, GpuOptions::default())
    }
}

impl<D: AsRef<[u8]> + Sync> GpuArchive<D> {
    /// Opens an already validated archive on device `ordinal`: creates the
    /// context and streams and compiles the kernels (NVRTC, once per
    /// process). Staging memory is allocated on the first load.
    pub fn new(archive: Archive<D>, ordinal: usize, opts: GpuOptions) -> Result<Self> {
        let ctx = open_context(ordinal)?;
        let kernels = guarded("loading the kernels", || kernels_for(&ctx))?;
        let nstreams = opts.streams.max(1);
        let mut streams = Vec::with_capacity(nstreams);
        let mut kernels_done = Vec::with_capacity(nstreams);
        for _ in 0..nstreams {
            streams.push(cuda("cuStreamCreate", ctx.new_stream())?);
            kernels_done.push(cuda("cuEventCreate", ctx.new_event(None))?);
        }
        let mut b = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("tpde-gpu-{i}"));
        if opts.threads > 0 {
            b = b.num_threads(opts.threads);
        }
        let pool = b
            .build()
            .map_err(|e| GpuError::Usage(format!("cannot start decode threads: {e}")))?;
        let error_word = DeviceBuffer::alloc(&ctx, 8)?;
        Ok(GpuArchive {
            archive,
            ctx,
            kernels,
            streams,
            kernels_done,
            error_word,
            ring: Mutex::new(None),
            stats: Mutex::new(LoadStats::default()),
            pool,
            opts,
        })
    }

    /// Where the last load's pipeline spent its time (for tuning and
    /// benchmarks).
    pub fn last_load_stats(&self) -> LoadStats {
        self.stats.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// The archive.
    pub fn archive(&self) -> &Archive<D> {
        &self.archive
    }

    /// The device context (the device's primary context).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The compiled kernels (also usable on their own; see [`Kernels`]).
    pub fn kernels(&self) -> &Arc<Kernels> {
        &self.kernels
    }

    /// Loads target tensor `name`. An external base is an error
    /// ([`tpde_format::Error::MissingBase`]); use [`GpuArchive::load_with`].
    pub fn load(&self, name: &str) -> Result<DeviceTensor> {
        self.load_with(name, &NoBase)
    }

    /// Loads target tensor `name`, taking external base tensors from `base`
    /// (their SHA-256 is checked against the archive on the host).
    pub fn load_with(&self, name: &str, base: &dyn BaseProvider) -> Result<DeviceTensor> {
        let t = self.archive.tensor_index(name)?;
        let mut v = self.load_targets(&[t], base, Vec::new())?;
        v.pop()
            .ok_or_else(|| GpuError::Usage("load produced no tensor".into()))
    }

    /// Loads every target tensor, in index order.
    pub fn load_all(&self) -> Result<Vec<DeviceTensor>> {
        self.load_all_with(&NoBase)
    }

    /// Loads every target tensor, taking external bases from `base`.
    pub fn load_all_with(&self, base: &dyn BaseProvider) -> Result<Vec<DeviceTensor>> {
        let all: Vec<usize> = (0..self.archive.index().tensors.len()).collect();
        self.load_targets(&all, base, Vec::new())
    }

    /// Loads target `name` against a base tensor already in device memory,
    /// which is left unchanged; only the delta crosses PCIe. The base must
    /// have the dtype, shape and byte length the archive records for it:
    /// the target's, except a widened base's narrower dtype and a
    /// row-mapped base's own row count (format v1.2). Its contents are
    /// trusted: they are not hashed on the device.
    ///
    /// A quantized base (format v1.2) is two tensors, codes and scales:
    /// hand them in with [`GpuArchive::load_onto_quantized`]; here such a
    /// target is [`GpuError::DeviceBase`].
    pub fn load_onto(&self, name: &str, base: &DeviceTensor) -> Result<DeviceTensor> {
        let t = self.archive.tensor_index(name)?;
        if let Some((qn, sn)) = plan::dequant_names(&self.archive, t) {
            return Err(GpuError::DeviceBase {
                tensor: name.to_owned(),
                reason: format!(
                    "has a quantized base of two tensors (codes {qn:?}, scales {sn:?}): \
                     use load_onto_quantized"
                ),
            });
        }
        self.check_device_base(t, base)?;
        let mut v = self.load_targets(
            &[t],
            &NoBase,
            vec![(t, DeviceBaseUse::Borrow(base.device_ptr()))],
        )?;
        v.pop()
            .ok_or_else(|| GpuError::Usage("load produced no tensor".into()))
    }

    /// Loads target `name`, whose base is quantized (format v1.2, spec
    /// §6.4), against its codes `q` (I8 or U8, the target's shape) and
    /// scales `scale` (F32, the archive's scale shape) already in device
    /// memory; both are left unchanged and only the delta crosses PCIe. The
    /// predictor `f32(q) × scale` is computed on the device into the new
    /// tensor. Contents are trusted (not hashed); dtype, shape, byte length,
    /// device and the scales' 4-byte alignment are checked
    /// ([`GpuError::DeviceBase`]).
    pub fn load_onto_quantized(
        &self,
        name: &str,
        q: &DeviceTensor,
        scale: &DeviceTensor,
    ) -> Result<DeviceTensor> {
        let t = self.archive.tensor_index(name)?;
        self.check_device_dequant(t, q, scale)?;
        let use_ = DeviceBaseUse::Dequant {
            q: q.device_ptr(),
            scale: scale.device_ptr(),
        };
        let mut v = self.load_targets(&[t], &NoBase, vec![(t, use_)])?;
        v.pop()
            .ok_or_else(|| GpuError::Usage("load produced no tensor".into()))
    }

    /// Loads every target tensor, reconstructing each one in place over its
    /// base tensor from `bases` (keyed by base tensor name: the inline base's
    /// name, or the external base tensor's name). Only the deltas cross
    /// PCIe. A base used by several targets is copied for all but the last.
    /// Targets whose base is not in `bases` load as [`GpuArchive::load_all`]
    /// does; bases no target uses are freed. On error the bases handed in are
    /// freed too (they may be half-updated). Base contents are trusted.
    ///
    /// A quantized base (format v1.2) is handed in as two entries, its codes
    /// and its scales tensors under their names (the archive's base-table
    /// names for an inline base); both are read, never updated, and one
    /// without the other is [`GpuError::DeviceBase`].
    pub fn load_all_onto(
        &self,
        mut bases: HashMap<String, DeviceTensor>,
    ) -> Result<Vec<DeviceTensor>> {
        let n = self.archive.index().tensors.len();
        let mut uses: HashMap<&str, (usize, usize)> = HashMap::new();
        // Quantized targets whose codes and scales were handed in.
        let mut dequant = Vec::new();
        for t in 0..n {
            if let Some((qn, sn)) = plan::dequant_names(&self.archive, t) {
                match (bases.get(qn), bases.get(sn)) {
                    (None, None) => {}
                    (Some(q), Some(s)) => {
                        self.check_device_dequant(t, q, s)?;
                        for b in [qn, sn] {
                            let u = uses.entry(b).or_default();
                            u.0 += 1;
                            u.1 += 1;
                        }
                        dequant.push(t);
                    }
                    (q, _) => {
                        return Err(GpuError::DeviceBase {
                            tensor: self.archive.record(Table::Target, t).name.clone(),
                            reason: format!(
                                "a quantized base needs both its codes {qn:?} and its scales \
                                 {sn:?}; {:?} is missing",
                                if q.is_none() { qn } else { sn }
                            ),
                        });
                    }
                }
                continue;
            }
            let Some(b) = plan::base_name(&self.archive, t) else {
                continue;
            };
            if let Some(dt) = bases.get(b) {
                self.check_device_base(t, dt)?;
                let u = uses.entry(b).or_default();
                u.0 += 1;
                u.1 += 1;
            }
        }
        let mut dev = Vec::new();
        let mut in_place = Vec::new();
        // Narrower (widened) and row-mapped bases are read into new
        // buffers, never updated in place; they are kept until the load is
        // done.
        let mut keep = Vec::new();
        for t in 0..n {
            if let Some((qn, sn)) = plan::dequant_names(&self.archive, t) {
                if !dequant.contains(&t) {
                    continue;
                }
                let ptr = |b: &str| bases.get(b).map_or(0, |dt| dt.device_ptr());
                dev.push((
                    t,
                    DeviceBaseUse::Dequant {
                        q: ptr(qn),
                        scale: ptr(sn),
                    },
                ));
                for b in [qn, sn] {
                    if let Some((_, left)) = uses.get_mut(b) {
                        *left -= 1;
                        if *left == 0 {
                            keep.extend(bases.remove(b));
                        }
                    }
                }
                continue;
            }
            let Some(b) = plan::base_name(&self.archive, t) else {
                continue;
            };
            let Some((total, left)) = uses.get_mut(b) else {
                continue;
            };
            *left -= 1;
            // Narrower (widened) and row-mapped bases differ from the
            // target in dtype or shape: read into a new buffer, never
            // updated in place.
            if !plan::base_fits_in_place(&self.archive, t) {
                let ptr = bases.get(b).map_or(0, |dt| dt.device_ptr());
                dev.push((t, DeviceBaseUse::Borrow(ptr)));
                if *left == 0 {
                    keep.extend(bases.remove(b));
                }
            } else if *left > 0 {
                let ptr = bases.get(b).map_or(0, |dt| dt.device_ptr());
                dev.push((t, DeviceBaseUse::Borrow(ptr)));
            } else if let Some(dt) = bases.remove(b) {
                // Earlier targets read this base; its in-place update must
                // not share a batch (and so a kernel launch) with them.
                dev.push((t, DeviceBaseUse::InPlace { cut: *total > 1 }));
                in_place.push((t, dt));
            }
        }
        drop(bases);
        let all: Vec<usize> = (0..n).collect();
        let out = self.load_targets_inner(&all, &NoBase, dev, &mut in_place);
        drop(keep);
        out
    }

    /// Checks a quantized target's codes and scales handed in on the device.
    fn check_device_dequant(&self, t: usize, q: &DeviceTensor, scale: &DeviceTensor) -> Result<()> {
        let rec = self.archive.record(Table::Target, t);
        let bad = |reason: String| GpuError::DeviceBase {
            tensor: rec.name.clone(),
            reason,
        };
        let (Some(qd), Some(shape)) = (
            plan::base_dtype(&self.archive, t),
            plan::dequant_scale_shape(&self.archive, t),
        ) else {
            return Err(bad("its base is not quantized: use load_onto".into()));
        };
        for (what, dt, dtype, shape) in [
            ("codes", q, qd, rec.shape.as_slice()),
            ("scales", scale, Dtype::F32, shape),
        ] {
            if dt.dtype != dtype || dt.shape != shape {
                return Err(bad(format!(
                    "{what} are {} {:?}, the archive's are {dtype} {shape:?}",
                    dt.dtype, dt.shape
                )));
            }
            let bytes = shape
                .iter()
                .try_fold(dtype.width() as u64, |a, &d| a.checked_mul(d));
            if Some(dt.byte_len() as u64) != bytes {
                return Err(bad(format!("{what} buffer holds {} bytes", dt.byte_len())));
            }
            if dt.buffer.context().cu_device() != self.ctx.cu_device() {
                return Err(bad(format!("{what} live on another device")));
            }
        }
        // The kernel loads scales as aligned 4-byte floats.
        if scale.device_ptr() % 4 != 0 {
            return Err(bad("scales are not 4-byte aligned".into()));
        }
        Ok(())
    }

    fn check_device_base(&self, t: usize, base: &DeviceTensor) -> Result<()> {
        let rec = self.archive.record(Table::Target, t);
        let bad = |reason: String| GpuError::DeviceBase {
            tensor: rec.name.clone(),
            reason,
        };
        // A widened base is handed in at its own (narrower) dtype, a
        // row-mapped one at its own row count.
        let want = plan::base_dtype(&self.archive, t).unwrap_or(rec.dtype);
        let shape = plan::base_shape(&self.archive, t).unwrap_or(&rec.shape);
        if base.dtype != want || base.shape != shape {
            return Err(bad(format!(
                "is {} {:?}, the archive's base is {} {:?}",
                base.dtype, base.shape, want, shape
            )));
        }
        let bytes = shape
            .iter()
            .try_fold(want.width() as u64, |a, &d| a.checked_mul(d));
        if Some(base.byte_len() as u64) != bytes {
            return Err(bad(format!("buffer holds {} bytes", base.byte_len())));
        }
        if base.buffer.context().cu_device() != self.ctx.cu_device() {
            return Err(bad("lives on another device".into()));
        }
        Ok(())
    }

    fn load_targets(
        &self,
        targets: &[usize],
        host: &dyn BaseProvider,
        dev: Vec<(usize, DeviceBaseUse)>,
    ) -> Result<Vec<DeviceTensor>> {
        self.load_targets_inner(targets, host, dev, &mut Vec::new())
    }

    /// Loads `targets`; `dev` says which use a device base (borrowed, or in
    /// place over the tensor in `in_place` with the same index).
    fn load_targets_inner(
        &self,
        targets: &[usize],
        host: &dyn BaseProvider,
        dev: Vec<(usize, DeviceBaseUse)>,
        in_place: &mut Vec<(usize, DeviceTensor)>,
    ) -> Result<Vec<DeviceTensor>> {
        cuda("cuCtxSetCurrent", self.ctx.bind_to_thread())?;
        let mut outs: Vec<DeviceTensor> = Vec::with_capacity(targets.len());
        let mut plans: Vec<plan::Target<'_>> = Vec::with_capacity(targets.len());
        // Device scratch for chunked inline bases read through a widening,
        // row map or dequantization: one per base tensor, shared by the
        // targets that read it, freed once the load is done.
        let mut scratch: Vec<DeviceBuffer> = Vec::new();
        let mut shared = plan::Scratch::default();
        for &t in targets {
            let rec = self.archive.record(Table::Target, t);
            let len = rec.byte_len().unwrap_or(0) as usize; // validated at open
            let use_ = dev.iter().find(|(dt, _)| *dt == t).map(|(_, u)| u);
            let mut cut = false;
            let (buffer, base) = match use_ {
                Some(&DeviceBaseUse::InPlace { cut: c }) => {
                    let Some(k) = in_place.iter().position(|(it, _)| *it == t) else {
                        return Err(GpuError::Usage("in-place base missing".into()));
                    };
                    let (_, dt) = in_place.swap_remove(k);
                    cut = c;
                    (dt.buffer, BasePlan::InPlace)
                }
                Some(&DeviceBaseUse::Borrow(ptr)) => (
                    DeviceBuffer::alloc(&self.ctx, len)?,
                    plan::device_base_plan(&self.archive, t, ptr),
                ),
                Some(&DeviceBaseUse::Dequant { q, scale }) => {
                    let base =
                        plan::device_dequant_plan(&self.archive, t, q, scale).ok_or_else(|| {
                            GpuError::Usage(format!(
                                "tensor {:?}: its base is not quantized",
                                rec.name
                            ))
                        })?;
                    (DeviceBuffer::alloc(&self.ctx, len)?, base)
                }
                None => {
                    let base = plan::host_base_plan(&self.archive, t, host)?;
                    // Chunked inline bases that are widened, row-mapped or
                    // quantized (codes, scales) decode into device scratch
                    // first.
                    let base = shared.assign(&self.archive, base, &mut |n| {
                        let sb = DeviceBuffer::alloc(&self.ctx, n as usize)?;
                        let a = sb.device_ptr();
                        scratch.push(sb);
                        Ok(a)
                    })?;
                    (DeviceBuffer::alloc(&self.ctx, len)?, base)
                }
            };
            if len > 0 {
                plans.push(plan::Target {
                    t,
                    dst: buffer.device_ptr(),
                    base,
                    cut,
                });
            }
            outs.push(DeviceTensor {
                name: rec.name.clone(),
                dtype: rec.dtype,
                shape: rec.shape.clone(),
                buffer,
            });
        }
        let mut jobs: Vec<Job<'_>> = Vec::new();
        plan::targets_jobs(&self.archive, &plans, self.plan_options(), &mut jobs)?;
        self.run_and_check(&jobs, &outs, Table::Target, targets)?;
        Ok(outs)
    }

    /// Loads every inline base tensor (named as in the archive's base
    /// table), e.g. to keep a base model resident and apply fine-tunes onto
    /// it later with [`GpuArchive::load_all_onto`].
    pub fn load_inline_bases(&self) -> Result<Vec<DeviceTensor>> {
        cuda("cuCtxSetCurrent", self.ctx.bind_to_thread())?;
        let n = self.archive.index().bases.len();
        let mut outs = Vec::with_capacity(n);
        let mut jobs = Vec::new();
        for bi in 0..n {
            let rec = self.archive.record(Table::Base, bi);
            let len = rec.byte_len().unwrap_or(0) as usize; // validated at open
            let buffer = DeviceBuffer::alloc(&self.ctx, len)?;
            if len > 0 {
                plan::base_tensor_jobs(
                    &self.archive,
                    bi,
                    buffer.device_ptr(),
                    self.plan_options(),
                    &mut jobs,
                )?;
            }
            outs.push(DeviceTensor {
                name: rec.name.clone(),
                dtype: rec.dtype,
                shape: rec.shape.clone(),
                buffer,
            });
        }
        let all: Vec<usize> = (0..n).collect();
        self.run_and_check(&jobs, &outs, Table::Base, &all)?;
        Ok(outs)
    }

    /// Runs the pipeline, waits for the device, and checks digests when
    /// asked to.
    fn run_and_check(
        &self,
        jobs: &[Job<'_>],
        outs: &[DeviceTensor],
        table: Table,
        which: &[usize],
    ) -> Result<()> {
        let run = self.run(jobs);
        // Whatever happened, no copy or kernel may still be using the
        // buffers when they are returned or freed.
        let synced = self.sync_all();
        let batches = run?;
        synced?;
        self.check_error_word(jobs, &batches)?;
        if self.opts.verify_digests {
            for (dt, &t) in outs.iter().zip(which) {
                let rec = self.archive.record(table, t);
                let actual: [u8; 32] = Sha256::digest(dt.copy_to_host()?).into();
                tpde_format::read::check_tensor_digest(rec, &actual)?;
            }
        }
        Ok(())
    }

    fn plan_options(&self) -> plan::PlanOptions {
        plan::PlanOptions {
            positions_on_device: self.opts.positions_on_device,
            entropy_on_device: self.opts.entropy_on_device,
        }
    }

    fn sync_all(&self) -> Result<()> {
        let mut first = Ok(());
        for s in &self.streams {
            let r = cuda("cuStreamSynchronize", s.synchronize());
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// Takes (allocating or growing) the staging ring.
    fn ring_for(
        &self,
        slot_bytes: usize,
        decode_bytes: usize,
    ) -> Result<std::sync::MutexGuard<'_, Option<Ring>>> {
        let mut guard = self
            .ring
            .lock()
            .map_err(|_| GpuError::Usage("staging ring poisoned by a panic".into()))?;
        if guard
            .as_ref()
            .is_some_and(|r| r.slot_bytes >= slot_bytes && r.decode_bytes >= decode_bytes)
        {
            return Ok(guard);
        }
        *guard = None; // free the old ring first
        let s = self.streams.len();
        let nslots = self.opts.slots.div_ceil(s).max(1) * s;
        let mut slots = Vec::with_capacity(nslots);
        for _ in 0..nslots {
            // Plain page-locked memory, not write-combined: the decoder
            // reads back what it wrote (zstd match copies), which is very
            // slow on write-combined pages.
            // SAFETY: the bytes are written before any copy reads them.
            let mut pinned = cuda("cuMemHostAlloc", unsafe {
                self.ctx.alloc_pinned_with_flags::<u8>(slot_bytes, 0)
            })?;
            let host = cuda("cuMemHostAlloc", pinned.as_mut_ptr())?;
            slots.push(Slot {
                _pinned: pinned,
                host,
                len: slot_bytes,
                device: DeviceBuffer::alloc(&self.ctx, slot_bytes + decode_bytes)?,
                // Blocking sync: the thread waiting for a slot sleeps
                // instead of spinning on a core the decoders need.
                copied: cuda(
                    "cuEventCreate",
                    self.ctx.new_event(Some(
                        cudarc::driver::sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC,
                    )),
                )?,
            });
        }
        *guard = Some(Ring {
            slots,
            slot_bytes,
            decode_bytes,
        });
        Ok(guard)
    }

    /// Reads the device decoder's error word: a bad positions stream is the
    /// format's typed error for that chunk.
    fn check_error_word(&self, jobs: &[Job<'_>], batches: &[Batch]) -> Result<()> {
        if !batches
            .iter()
            .any(|b| !b.phase3.is_empty() || !b.phase0.is_empty())
        {
            return Ok(());
        }
        let w = self.error_word.copy_to_host()?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&w);
        let word = u64::from_le_bytes(a);
        if word == 0 {
            return Ok(());
        }
        if let Some(e) = plan::entropy_error(&self.archive, jobs, batches, word) {
            return Err(e);
        }
        let job = batches
            .get((word >> 32) as usize)
            .and_then(|b| b.phase3_job(((word & 0xffff_ffff) as usize).saturating_sub(1)))
            .and_then(|ji| jobs.get(ji));
        Err(match job {
            Some(j) => plan::bad_positions(&self.archive, j),
            None => GpuError::Usage(format!("device reported an unknown job ({word:#x})")),
        })
    }

    /// Runs the pipeline over `jobs`; returns its batches.
    fn run(&self, jobs: &[Job<'_>]) -> Result<Vec<Batch>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let slot_bytes = self.opts.slot_bytes.max(plan::min_slot_bytes(jobs));
        let decode_bytes = match plan::min_decode_bytes(jobs) {
            0 => 0,
            n => self.opts.decode_bytes.max(n),
        };
        let batches = plan::make_batches_with(jobs, slot_bytes, decode_bytes)?;
        if batches
            .iter()
            .any(|b| !b.phase3.is_empty() || !b.phase0.is_empty())
        {
            // Zero the error word before any kernel can write it.
            // SAFETY: the word is 8 bytes of device memory.
            cuda("cuMemsetD8", unsafe {
                cu::memset_d8_sync(self.error_word.device_ptr(), 0, 8)
            })?;
        }
        let mut guard = self.ring_for(slot_bytes, decode_bytes)?;
        let Some(ring) = guard.as_mut() else {
            return Err(GpuError::Usage("staging ring missing".into()));
        };
        let nslots = ring.slots.len();
        let t_start = std::time::Instant::now();
        let mut st = LoadStats {
            batches: batches.len(),
            staged_bytes: batches.iter().map(|b| b.used_bytes(jobs) as u64).sum(),
            ..LoadStats::default()
        };
        let archive = &self.archive;
        let dev = &CudaRead(&self.ctx);
        self.pool.in_place_scope(|scope| -> Result<()> {
            let (tx, rx) = mpsc::channel::<(usize, Result<()>)>();
            let mut pending: Vec<usize> = batches.iter().map(|b| b.jobs.len()).collect();
            let mut failed: Option<GpuError> = None;
            let mut next_decode = 0usize;
            for submit in 0..batches.len() {
                // Start decoding batches into free slots. A slot is free
                // once the copy out of it finished; prefer slots whose copy
                // was queued at least one submission ago (so the wait is
                // short) and never leave the next batch to submit undecoded.
                while failed.is_none()
                    && next_decode < batches.len()
                    && (next_decode < nslots
                        || next_decode + 2 <= submit + nslots
                        || next_decode == submit)
                {
                    let b = &batches[next_decode];
                    let slot = &ring.slots[next_decode % nslots];
                    // The copy out of this slot (batch next_decode - nslots,
                    // already submitted) is done.
                    let t = std::time::Instant::now();
                    cuda("cuEventSynchronize", slot.copied.synchronize())?;
                    st.wait_slot_ms += t.elapsed().as_secs_f64() * 1e3;
                    let used = b.used_bytes(jobs);
                    if used > slot.len || b.device_bytes(jobs) > slot.device.len() {
                        return Err(GpuError::Usage("batch larger than its slot".into()));
                    }
                    // SAFETY: the slot's pinned memory is `len` bytes, no
                    // copy reads it any more (event above), and no other
                    // batch is decoding into it (slots are reused only after
                    // their batch was submitted).
                    let mem = unsafe { std::slice::from_raw_parts_mut(slot.host, used) };
                    b.write_descriptors(jobs, slot.device.device_ptr(), mem);
                    let idx = next_decode;
                    for (k, ji) in b.jobs.clone().enumerate() {
                        let job = &jobs[ji];
                        let o = b.offsets[k];
                        if job.staged == 0 {
                            pending[idx] -= 1;
                            continue;
                        }
                        let region = SendPtr(mem[o..].as_mut_ptr(), job.staged);
                        let tx = tx.clone();
                        scope.spawn(move |_| {
                            let region = region;
                            // SAFETY: a disjoint region of the slot (see SendPtr).
                            let dst = unsafe { std::slice::from_raw_parts_mut(region.0, region.1) };
                            let r = stage::fill_region(archive, job, dst, dev);
                            let _ = tx.send((idx, r));
                        });
                    }
                    next_decode += 1;
                }
                if let Some(e) = failed.take() {
                    return Err(e);
                }
                // Wait until batch `submit` is decoded.
                let t = std::time::Instant::now();
                while pending[submit] > 0 {
                    let Ok((b, r)) = rx.recv() else {
                        return Err(GpuError::Usage("decode threads vanished".into()));
                    };
                    pending[b] -= 1;
                    if let Err(e) = r {
                        failed.get_or_insert(e);
                    }
                }
                if let Some(e) = failed.take() {
                    return Err(e);
                }
                st.wait_decode_ms += t.elapsed().as_secs_f64() * 1e3;
                let t = std::time::Instant::now();
                self.submit(&batches[submit], submit, &ring.slots[submit % nslots])?;
                st.submit_ms += t.elapsed().as_secs_f64() * 1e3;
            }
            Ok(())
        })?;
        st.pipeline_ms = t_start.elapsed().as_secs_f64() * 1e3;
        if let Ok(mut g) = self.stats.lock() {
            *g = st;
        }
        Ok(batches)
    }

    /// Queues batch `b`'s copies and kernels (see the module docs for the
    /// ordering rules).
    fn submit(&self, b: &Batch, index: usize, slot: &Slot) -> Result<()> {
        let s = index % self.streams.len();
        let stream = &self.streams[s];
        let cs = stream.cu_stream();
        // SAFETY: the slot holds `used` staged bytes (decode finished), the
        // device twin is `len >= kernel_bytes` long, and every raw piece's
        // destination lies inside a live output buffer; the host memory stays
        // untouched until `copied` completes.
        unsafe {
            let host = std::slice::from_raw_parts(slot.host, slot.len);
            if b.kernel_bytes > 0 {
                cuda(
                    "cuMemcpyHtoDAsync",
                    cu::memcpy_htod_async(slot.device.device_ptr(), &host[..b.kernel_bytes], cs),
                )?;
            }
            for &(o, dst, len) in &b.raw {
                cuda(
                    "cuMemcpyHtoDAsync",
                    cu::memcpy_htod_async(dst, &host[o..o + len], cs),
                )?;
            }
        }
        cuda("cuEventRecord", slot.copied.record(stream))?;
        let table = slot.device.device_ptr();
        let entropy = || {
            // SAFETY: the phase-0 table was written for this slot's device
            // staging address; its inputs were copied above on this stream
            // and its outputs are this slot's decode area. Its first
            // `phase0_narrow` jobs have 4-state planes, the rest 32-state
            // ones.
            unsafe {
                self.kernels.launch_entropy(
                    stream,
                    table + b.phase0_table() as u64,
                    b.phase0.len() as u32,
                    b.phase0_narrow as u32,
                    self.error_word.device_ptr(),
                    index as u32,
                )
            }
        };
        // Entropy decoding that reads nothing earlier batches write runs
        // before the wait on the previous batch's kernels, so consecutive
        // batches' decodes overlap (each is one sequential stream per chunk:
        // more chunks in flight is what makes it fast).
        if b.phase0_independent {
            entropy()?;
        }
        if index > 0 {
            let prev = (index - 1) % self.streams.len();
            if prev != s {
                cuda("cuStreamWaitEvent", stream.wait(&self.kernels_done[prev]))?;
            }
        }
        if !b.phase0_independent {
            entropy()?;
        }
        // SAFETY: the descriptor tables were written for this slot's device
        // staging address and point at live output, base and staging memory.
        unsafe {
            self.kernels
                .launch_phase1(stream, table, b.phase1.len() as u32, b.tiles1)?;
            self.kernels.launch_sparse(
                stream,
                table + b.phase2_table() as u64,
                b.phase2.len() as u32,
                b.tiles2,
            )?;
            self.kernels.launch_varint(
                stream,
                table + b.phase3_table() as u64,
                b.phase3.len() as u32,
                b.tiles3,
                table + b.stats_at as u64,
                self.error_word.device_ptr(),
                index as u32,
            )?;
        }
        cuda("cuEventRecord", self.kernels_done[s].record(stream))
    }
}

/// How a target uses a base already on the device.
#[derive(Debug, Clone, Copy)]
enum DeviceBaseUse {
    /// Read from the base at this device address, which stays unchanged.
    Borrow(u64),
    /// Reconstruct in place over the base tensor handed over; `cut`: other
    /// targets read this base first.
    InPlace { cut: bool },
    /// A quantized base's codes and scales at these device addresses, read
    /// (never updated) into a new buffer.
    Dequant { q: u64, scale: u64 },
}

/// Device reads for the base context of chunks over a device base
/// ([`stage`]'s module docs): a synchronous copy on the legacy default
/// stream, which does not wait for the pipeline's non-blocking streams —
/// the bytes read are never written by the load's earlier kernels.
struct CudaRead<'a>(&'a Arc<CudaContext>);

impl stage::DeviceRead for CudaRead<'_> {
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        cuda("cuCtxSetCurrent", self.0.bind_to_thread())?;
        // SAFETY: `addr` addresses `out.len()` bytes of a base buffer the
        // load holds (checked against the archive's base length), or of the
        // output buffer it reconstructs in place.
        cuda("cuMemcpyDtoH", unsafe { cu::memcpy_dtoh_sync(out, addr) })
    }
}
