//! # tpde-gpu
//!
//! Loads tensors from `.tpde` archives straight into NVIDIA GPU memory,
//! reconstructing each target on the device: CPU threads decompress chunk
//! streams into pinned staging buffers, asynchronous copies move them to the
//! device on several streams, and CUDA kernels re-interleave byte planes and
//! apply dense and sparse deltas (XOR, ADD, REPLACE, zigzag ADD) over the
//! base, widening a narrower float base first where the archive says so,
//! copying the rows of a row-mapped base, or computing the predictor of a
//! quantized base (`f32(q) × scale`, format v1.2) from its one-byte codes.
//! Sparse chunks' gap-encoded positions are decoded on the device by prefix
//! sums. For a delta chunk only its decoded values and raw gap bytes cross
//! PCIe; a base already on the device never does, except that values coded
//! with `RansBase` planes (format v1.2, the default writer's for chunks
//! with a base) need the base's top byte under each value on the CPU: for
//! such chunks the base bytes under the chunk are copied device → host (or
//! computed on the host, see [`stage`]); archives packed with
//! `--planes zstd` have none.
//!
//! With [`GpuOptions::with_entropy_on_device`] the rANS-coded planes
//! (spec §5.6) are entropy-decoded on the device instead, and with
//! [`GpuOptions::with_entropy_on_device_for`]`(`[`plan::EntropyOnDevice::Wide`]`)`
//! only the chunks of format 1.6's 32-state planes (spec §5.6.4) are: the CPU parses
//! each plane's header and tables and stages only the coded words (about
//! an eighth of the decoded bytes on fine-tune deltas), one group of four
//! threads decodes each chunk (the four interleaved states share one word
//! stream, so a chunk is one sequential stream; a chunk of format 1.6's
//! 32-state planes gets a whole warp, one thread per state), and a
//! `RansBase` plane's context is read from the base in device memory.
//! Speed then comes from
//! many chunks in flight. With groups of four it pays only with chunks of
//! 2^16 elements and decode areas of 0.5–1 GiB per slot (load of a 3.5 GB
//! model with the base on the device: 54 ms against 93 ms for a pinned
//! copy of the safetensors on an H200) and loses to the CPU path at the
//! writer's default 2^20-element chunks; a warp per 32-state chunk, with
//! decode areas of 1 GiB, beats the CPU path in every case measured, at the
//! default chunk sizes too (a 1.74 GB model onto its base on the device in
//! 18 ms, 2.4× a pinned copy). Off by default: with the default 128 MiB
//! decode areas a first load is slower than the CPU path
//! ([`plan::EntropyOnDevice`]). Performance and what bounds it:
//! `tpde-gpu/BENCHMARKS-gpu.md`.
//!
//! ```no_run
//! # fn main() -> Result<(), tpde_gpu::GpuError> {
//! let gpu = tpde_gpu::GpuArchive::open("model.tpde", 0)?;
//! let t = gpu.load("model.layers.0.mlp.up_proj.weight")?;
//! println!("{} {:?} at {:#x}", t.dtype, t.shape, t.device_ptr());
//! # Ok(()) }
//! ```
//!
//! CUDA is loaded at run time (cudarc's `dynamic-loading`, CUDA 12.0 API
//! level), so the crate builds and its CPU tests run on machines without
//! CUDA; there, opening an archive returns [`GpuError::NoDriver`] or
//! [`GpuError::NoDevice`]. Kernels are compiled with NVRTC on first use,
//! once per process.
//!
//! Layers: [`plan`] (jobs, batches, descriptors; pure Rust), [`stage`]
//! (CPU decode into staging), [`kernels`] (CUDA source and launches),
//! [`device`] (buffers, ring, pipeline), and [`reference`](mod@reference)
//! (the same pipeline run on the CPU, which the tests compare with
//! `tpde_format`'s reader).

#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod device;
pub mod error;
pub mod kernels;
pub mod plan;
pub mod reference;
pub mod stage;

pub use device::{
    probe, DeviceBuffer, DeviceInfo, DeviceTensor, GpuArchive, GpuOptions, LoadStats,
};
pub use error::{GpuError, Result};
pub use kernels::Kernels;
