//! GPU loading benchmark: a `.tpde` archive onto the device against what
//! users do today, same machine, same run. See `tpde-gpu/bench/run.sh`.
//!
//! ```text
//! tpde-gpu-bench gen  --dir D [--layers 8] [--small] [--corpus ARCHIVE]
//!                     [--planes rans|zstd|rans,zstd] [--modes inline,plain]
//!                     [--chunk-elems 1048576,65536]
//! tpde-gpu-bench run  --dir D [--reps 7] [--device 0] [--configs default,wide,cpupos,gpuent]
//! tpde-gpu-bench pack --base B --target T --out A [--planes rans|zstd]
//!                     (packs a pair, inline base)
//! ```
//!
//! `gen` writes a synthetic bf16 model slice with Llama-3-8B projection
//! shapes (base and fine-tuned target safetensors) and packs them once per
//! plane coder and base mode: `inline-<coder>.tpde` (inline compressed base)
//! and `plain-<coder>.tpde` (inline plain base). Given a corpus archive (a
//! pair with its base inline) it writes that archive's target and base as
//! safetensors and repacks them the same way, so every coder is measured on
//! the same tensors. `--planes` defaults to the library's default coder
//! (rANS); `--modes` to both base modes. `run` benches every `*.tpde` in
//! `D/synth` and `D/corpus` and prints one table:
//! - A: read the target safetensors (page cache, mmap) and copy each tensor
//!   to its own device buffer with a pageable `cuMemcpyHtoD`;
//! - B: the same through pinned staging (parallel memcpy into a ring of
//!   pinned buffers, async copies on two streams);
//! - tpde end to end: `GpuArchive::load_all` (inline base, compressed or
//!   plain), and `load_all_onto` with the base already on the device;
//! - tpde CPU decode alone (no GPU), to show what bounds end to end;
//! - the apply kernels alone against a device-to-device copy (HBM ceiling).
//!
//! End-to-end times are host wall clock around the call with the device
//! synchronized; kernel times are CUDA events. Every case is warmed up and
//! the median of `--reps` runs is reported. Results are checked: every tpde
//! tensor is copied back and hashed against the archive once per case.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{result as cu, CudaContext, CudaStream};
use rayon::prelude::*;
use sha2::{Digest as _, Sha256};
use tpde_format::codec::stream::PlaneCoder;
use tpde_format::format::{ChunkKind, Codec, Dtype, Op, Payload, PlaneCodec};
use tpde_format::pack::{pack, BaseMode, PackOptions};
use tpde_format::read::Table;
use tpde_format::safetensors::{make_header, Checkpoint, SourceFile};
use tpde_format::{Archive, NoBase};
use tpde_gpu::plan::{self, Desc, Job, JobKind};
use tpde_gpu::{DeviceBuffer, DeviceTensor, GpuArchive, GpuOptions};

type Res<T> = Result<T, Box<dyn std::error::Error>>;
/// Times a closure of device work with CUDA events.
type Timer<'a> = dyn FnMut(&mut dyn FnMut() -> Res<()>) -> Res<(f64, f64)> + 'a;

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|s| s.as_str())
}

/// The file-name tag of a plane coder.
fn coder_name(c: PlaneCoder) -> &'static str {
    match c {
        PlaneCoder::Rans => "rans",
        PlaneCoder::Zstd => "zstd",
    }
}

/// `--planes`: a comma-separated list of plane coders; absent means the
/// library's default coder.
fn parse_coders(s: Option<&str>) -> Res<Vec<PlaneCoder>> {
    let Some(s) = s else {
        return Ok(vec![PlaneCoder::default()]);
    };
    let mut v = Vec::new();
    for name in s.split(',').filter(|n| !n.is_empty()) {
        let c = match name {
            "rans" => PlaneCoder::Rans,
            "zstd" => PlaneCoder::Zstd,
            "both" => {
                v.extend([PlaneCoder::Rans, PlaneCoder::Zstd]);
                continue;
            }
            other => return Err(format!("--planes: unknown coder {other:?} (rans|zstd)").into()),
        };
        if !v.contains(&c) {
            v.push(c);
        }
    }
    if v.is_empty() {
        return Err("--planes: no coder named".into());
    }
    Ok(v)
}

/// `--modes`: which inline base modes `gen` packs (inline = compressed
/// base, plain = base stored raw).
fn parse_modes(s: Option<&str>) -> Res<Vec<(BaseMode, &'static str)>> {
    let mut v = Vec::new();
    for name in s
        .unwrap_or("inline,plain")
        .split(',')
        .filter(|n| !n.is_empty())
    {
        v.push(match name {
            "inline" => (BaseMode::Inline, "inline"),
            "plain" => (BaseMode::InlinePlain, "plain"),
            other => return Err(format!("--modes: unknown mode {other:?} (inline|plain)").into()),
        });
    }
    if v.is_empty() {
        return Err("--modes: no mode named".into());
    }
    Ok(v)
}

fn real_main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(arg(&args, "--dir").unwrap_or("bench-data"));
    match args.first().map(|s| s.as_str()) {
        Some("gen") => {
            let layers: usize = arg(&args, "--layers").unwrap_or("8").parse()?;
            let small = args.iter().any(|a| a == "--small");
            let coders = parse_coders(arg(&args, "--planes"))?;
            let modes = parse_modes(arg(&args, "--modes"))?;
            let chunks: Vec<u64> = arg(&args, "--chunk-elems")
                .unwrap_or("1048576")
                .split(',')
                .map(|c| c.parse::<u64>())
                .collect::<Result<_, _>>()?;
            gen_synth(&dir.join("synth"), layers, small, &coders, &modes, &chunks)?;
            if let Some(c) = arg(&args, "--corpus") {
                gen_corpus(&dir.join("corpus"), Path::new(c), &coders)?;
            }
            Ok(())
        }
        Some("run") => {
            let reps: usize = arg(&args, "--reps").unwrap_or("7").parse()?;
            let device: usize = arg(&args, "--device").unwrap_or("0").parse()?;
            let configs = arg(&args, "--configs").unwrap_or("default,wide,cpupos");
            run(&dir, reps.max(1), device, configs)
        }
        Some("cpu") => {
            // The CPU half alone, for machines without a GPU.
            let path = arg(&args, "--archive").ok_or("cpu needs --archive")?;
            let a = Archive::open(path)?;
            let st = stats(&a);
            println!(
                "{path}: {:.3} GB archive, {:.3} GB targets, {:.3} GB staged for delta chunks; {}; streams {}",
                st.bytes as f64 / 1e9,
                st.target_bytes as f64 / 1e9,
                st.staged as f64 / 1e9,
                st.kinds,
                st.codecs
            );
            let rings = Rings::new();
            for (onto, dev) in [(false, true), (true, true), (true, false)] {
                let (ms, _) = time_ms(3, || cpu_decode_ms(&a, onto, dev, false, &rings))?;
                println!(
                    "CPU decode ({}, positions {}): {ms:.1} ms, {:.2} GB/s of target, {} threads",
                    if onto {
                        "delta only"
                    } else {
                        "with inline base"
                    },
                    if dev {
                        "raw for the device"
                    } else {
                        "decoded to u32"
                    },
                    st.target_bytes as f64 / ms / 1e6,
                    rayon::current_num_threads()
                );
            }
            Ok(())
        }
        Some("pack") => {
            let (Some(b), Some(t), Some(o)) = (
                arg(&args, "--base"),
                arg(&args, "--target"),
                arg(&args, "--out"),
            ) else {
                return Err("pack needs --base --target --out".into());
            };
            let coders = parse_coders(arg(&args, "--planes"))?;
            let [coder] = coders[..] else {
                return Err("pack takes one coder in --planes".into());
            };
            let r = pack_pair(
                Path::new(b),
                Path::new(t),
                Path::new(o),
                BaseMode::Inline,
                coder,
                1 << 20,
            )?;
            println!("{o}: {r} bytes, {} planes", coder_name(coder));
            Ok(())
        }
        _ => Err("usage: tpde-gpu-bench gen|run|pack [options] (see the source header)".into()),
    }
}

// ---------------------------------------------------------------- inputs

/// splitmix64: fast, seedable per block so generation is parallel and
/// deterministic.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn f32_to_bf16(f: f32) -> u16 {
    let b = f.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// One base/target pair of bf16 weights: base ~ N(0, 0.02); in the target
/// about half the elements are unchanged and the rest moved by 1–2 units
/// in the last place (what optimizer steps smaller than bf16's resolution
/// leave after rounding; the corpus fine-tunes keep 55–88% of elements).
fn gen_tensor(seed: u64, n: usize, base: &mut [u8], target: &mut [u8]) {
    const BLOCK: usize = 1 << 16;
    base.par_chunks_mut(BLOCK * 2)
        .zip(target.par_chunks_mut(BLOCK * 2))
        .enumerate()
        .for_each(|(bi, (b, t))| {
            let mut s = splitmix(seed ^ (bi as u64).wrapping_mul(0xA24B_AED4_963E_E407));
            for (eb, et) in b.chunks_exact_mut(2).zip(t.chunks_exact_mut(2)) {
                s = splitmix(s);
                // Sum of four uniforms: close enough to a Gaussian.
                let u = (0..4).map(|k| ((s >> (16 * k)) & 0xFFFF) as f32 / 65536.0);
                let g = (u.sum::<f32>() - 2.0) * 1.732 * 0.02;
                let w = f32_to_bf16(g);
                let r = splitmix(s ^ 0x5555);
                let tw = if r & 1 == 0 {
                    w
                } else {
                    let step: i32 = if r & 0x30 == 0 { 2 } else { 1 };
                    let step = if r & 2 == 0 { step } else { -step };
                    let sign = w & 0x8000;
                    let mag = ((w & 0x7FFF) as i32 + step).clamp(0, 0x7F7F) as u16;
                    sign | mag
                };
                eb.copy_from_slice(&w.to_le_bytes());
                et.copy_from_slice(&tw.to_le_bytes());
            }
        });
    let _ = n;
}

fn gen_synth(
    dir: &Path,
    layers: usize,
    small: bool,
    coders: &[PlaneCoder],
    modes: &[(BaseMode, &'static str)],
    chunks: &[u64],
) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    let (h, kv, ff) = if small {
        (256u64, 64u64, 896u64)
    } else {
        (4096, 1024, 14336)
    };
    let mut tensors: Vec<(String, Vec<u64>)> = Vec::new();
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        tensors.push((format!("{p}.input_layernorm.weight"), vec![h]));
        tensors.push((format!("{p}.self_attn.q_proj.weight"), vec![h, h]));
        tensors.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
        tensors.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
        tensors.push((format!("{p}.self_attn.o_proj.weight"), vec![h, h]));
        tensors.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        tensors.push((format!("{p}.mlp.gate_proj.weight"), vec![ff, h]));
        tensors.push((format!("{p}.mlp.up_proj.weight"), vec![ff, h]));
        tensors.push((format!("{p}.mlp.down_proj.weight"), vec![h, ff]));
    }
    let list: Vec<(&str, Dtype, &[u64])> = tensors
        .iter()
        .map(|(n, s)| (n.as_str(), Dtype::BF16, s.as_slice()))
        .collect();
    let header = make_header(&list);
    let base_path = dir.join("base.safetensors");
    let target_path = dir.join("target.safetensors");
    let t0 = Instant::now();
    let mut fb = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(&base_path)?);
    let mut ft = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(&target_path)?);
    for f in [&mut fb, &mut ft] {
        f.write_all(&(header.len() as u64).to_le_bytes())?;
        f.write_all(&header)?;
    }
    let mut total = 0u64;
    for (i, (_, shape)) in tensors.iter().enumerate() {
        let n = shape.iter().product::<u64>() as usize;
        let mut b = vec![0u8; n * 2];
        let mut t = vec![0u8; n * 2];
        gen_tensor(splitmix(i as u64 + 1), n, &mut b, &mut t);
        fb.write_all(&b)?;
        ft.write_all(&t)?;
        total += (n * 2) as u64;
    }
    fb.flush()?;
    ft.flush()?;
    println!(
        "synth: {} tensors, {:.2} GB per checkpoint, generated in {:.1} s",
        tensors.len(),
        total as f64 / 1e9,
        t0.elapsed().as_secs_f64()
    );
    pack_all(
        dir,
        "synth",
        &base_path,
        &target_path,
        coders,
        modes,
        chunks,
    )
}

/// Packs `base`/`target` into `dir/<mode>-<coder>.tpde` for every pair,
/// and `dir/<mode>-rans-c<log2>.tpde` for every other chunk size in
/// `chunks` (rANS only: smaller chunks give the device entropy decoder more
/// independent streams; zstd chunks are decoded on the CPU either way).
fn pack_all(
    dir: &Path,
    label: &str,
    base: &Path,
    target: &Path,
    coders: &[PlaneCoder],
    modes: &[(BaseMode, &'static str)],
    chunks: &[u64],
) -> Res<()> {
    const DEFAULT_CHUNK: u64 = 1 << 20;
    for &(mode, mode_name) in modes {
        let mut runs: Vec<(PlaneCoder, u64)> = coders.iter().map(|&c| (c, DEFAULT_CHUNK)).collect();
        if coders.contains(&PlaneCoder::Rans) {
            runs.extend(
                chunks
                    .iter()
                    .filter(|&&c| c != DEFAULT_CHUNK)
                    .map(|&c| (PlaneCoder::Rans, c)),
            );
        }
        for (coder, ce) in runs {
            let name = if ce == DEFAULT_CHUNK {
                format!("{mode_name}-{}.tpde", coder_name(coder))
            } else {
                format!("{mode_name}-{}-c{}.tpde", coder_name(coder), ce.ilog2())
            };
            let t0 = Instant::now();
            let bytes = pack_pair(base, target, &dir.join(&name), mode, coder, ce)?;
            println!(
                "{label}: packed {name} ({:.4} GB) in {:.1} s on {} threads",
                bytes as f64 / 1e9,
                t0.elapsed().as_secs_f64(),
                rayon::current_num_threads()
            );
        }
    }
    Ok(())
}

fn pack_pair(
    base: &Path,
    target: &Path,
    out: &Path,
    mode: BaseMode,
    coder: PlaneCoder,
    chunk_elems: u64,
) -> Res<u64> {
    let t = Checkpoint::open(target)?;
    let b = Checkpoint::open(base)?;
    let opts = PackOptions {
        write: tpde_format::WriteOptions::default()
            .with_overwrite(true)
            .with_plane_coder(coder)
            .with_chunk_elems(chunk_elems),
        base_mode: mode,
    };
    Ok(pack(&t, Some(&b), out, &opts, &mut |_| {})?.archive_bytes)
}

/// Writes the corpus archive's target and its inline base tables as
/// safetensors, then repacks them with every coder (inline compressed
/// base), so the coders are compared on the same real pair.
fn gen_corpus(dir: &Path, archive: &Path, coders: &[PlaneCoder]) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    let a = Archive::open(archive)?;
    let target = dir.join("target.safetensors");
    let opts = tpde_format::unpack::UnpackOptions {
        overwrite: true,
        tensors: Vec::new(),
    };
    tpde_format::unpack::unpack(&a, &NoBase, &target, &opts, &mut |_| {})?;
    let base = dir.join("base.safetensors");
    write_inline_bases(&a, &base)?;
    println!(
        "corpus: wrote {} and {} ({} base tensors) from {}",
        target.display(),
        base.display(),
        a.index().bases.len(),
        archive.display()
    );
    pack_all(
        dir,
        "corpus",
        &base,
        &target,
        coders,
        &[(BaseMode::Inline, "inline")],
        &[1 << 20],
    )
}

/// The archive's inline base table as one safetensors file (CPU decode,
/// CRC-checked, digests compared with the archive's).
fn write_inline_bases<D: AsRef<[u8]> + Sync>(a: &Archive<D>, out: &Path) -> Res<()> {
    let bases = &a.index().bases;
    if bases.is_empty() {
        return Err("corpus archive has no inline base".into());
    }
    let list: Vec<(&str, Dtype, &[u64])> = bases
        .iter()
        .map(|r| (r.name.as_str(), r.dtype, r.shape.as_slice()))
        .collect();
    let header = make_header(&list);
    let mut f = std::io::BufWriter::new(std::fs::File::create(out)?);
    f.write_all(&(header.len() as u64).to_le_bytes())?;
    f.write_all(&header)?;
    let mut scratch = tpde_format::codec::chunk::DecodeScratch::default();
    for (i, r) in bases.iter().enumerate() {
        let len = r.byte_len().ok_or("base tensor size overflows")? as usize;
        let w = r.dtype.width();
        let mut buf = vec![0u8; len];
        match a.plain_bytes(Table::Base, i)? {
            Some(b) => buf.copy_from_slice(b),
            None => {
                if let Payload::Chunked { chunks, .. } = &r.payload {
                    for (ci, c) in chunks.iter().enumerate() {
                        let stored = a.chunk_bytes(Table::Base, i, ci, c)?;
                        let lo = c.elem_start as usize * w;
                        let hi = lo + c.elem_count as usize * w;
                        tpde_format::codec::chunk::decode_into(
                            c,
                            w,
                            stored,
                            &mut buf[lo..hi],
                            &mut scratch,
                        )
                        .map_err(|e| format!("base {}: chunk {ci}: {e}", r.name))?;
                    }
                }
            }
        }
        let digest: [u8; 32] = Sha256::digest(&buf).into();
        if digest != r.sha256 {
            return Err(format!("base {}: digest differs from the archive's", r.name).into());
        }
        f.write_all(&buf)?;
    }
    f.flush()?;
    Ok(())
}

// ---------------------------------------------------------------- timing

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Warm-up once, then `reps` timed runs; returns (median, min) in ms.
fn time_ms(reps: usize, mut f: impl FnMut() -> Res<f64>) -> Res<(f64, f64)> {
    f()?;
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        v.push(f()?);
    }
    let min = v.iter().cloned().fold(f64::MAX, f64::min);
    Ok((median(v), min))
}

struct Row {
    case: String,
    ms: f64,
    min_ms: f64,
    gbps: f64,
    note: String,
}

fn check(call: &'static str, r: Result<(), cudarc::driver::DriverError>) -> Res<()> {
    r.map_err(|e| format!("{call}: {e}").into())
}

// ---------------------------------------------------------------- baselines

/// The tensors (offset, length) of a safetensors file.
fn st_tensors(path: &Path) -> Res<Vec<(u64, usize)>> {
    let f = SourceFile::open(path)?;
    Ok(f.tensors
        .iter()
        .map(|t| (t.offset, t.len as usize))
        .collect())
}

/// Baseline A: from the mapped file (page cache), one device buffer and one
/// pageable copy per tensor. The map stays open across runs, as the
/// archive's does, so neither side pays page faults after the warm-up.
fn baseline_a(
    ctx: &Arc<CudaContext>,
    map: &[u8],
    tensors: &[(u64, usize)],
) -> Res<(f64, Vec<DeviceBuffer>)> {
    let t0 = Instant::now();
    let mut bufs = Vec::with_capacity(tensors.len());
    for &(off, len) in tensors {
        let b = DeviceBuffer::alloc(ctx, len)?;
        if len > 0 {
            // SAFETY: `b` holds `len` bytes; the source range is in the map.
            check("cuMemcpyHtoD", unsafe {
                cu::memcpy_htod_sync(b.device_ptr(), &map[off as usize..off as usize + len])
            })?;
        }
        bufs.push(b);
    }
    check("cuCtxSynchronize", ctx.synchronize())?;
    Ok((t0.elapsed().as_secs_f64() * 1e3, bufs))
}

/// Pinned staging ring for baseline B.
struct PinnedRing {
    bufs: Vec<(
        cudarc::driver::PinnedHostSlice<u8>,
        *mut u8,
        cudarc::driver::CudaEvent,
    )>,
    streams: Vec<Arc<CudaStream>>,
    size: usize,
}

impl PinnedRing {
    fn new(ctx: &Arc<CudaContext>, n: usize, size: usize) -> Res<PinnedRing> {
        let mut bufs = Vec::new();
        for _ in 0..n {
            // SAFETY: written before any copy reads it.
            let mut p = unsafe { ctx.alloc_pinned_with_flags::<u8>(size, 0)? };
            let ptr = p.as_mut_ptr()?;
            bufs.push((p, ptr, ctx.new_event(None)?));
        }
        let streams = (0..2)
            .map(|_| ctx.new_stream())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PinnedRing {
            bufs,
            streams,
            size,
        })
    }
}

struct SendPtr(*mut u8);
// SAFETY: used for disjoint pieces of one pinned buffer in a rayon loop.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Baseline B: mmap, parallel memcpy of each piece into a pinned buffer,
/// async copy to the tensor's device buffer; buffers rotate on two streams.
fn baseline_b(
    ctx: &Arc<CudaContext>,
    ring: &PinnedRing,
    map: &[u8],
    tensors: &[(u64, usize)],
) -> Res<(f64, Vec<DeviceBuffer>)> {
    let t0 = Instant::now();
    let mut bufs = Vec::with_capacity(tensors.len());
    let mut k = 0usize;
    for &(off, len) in tensors {
        let b = DeviceBuffer::alloc(ctx, len)?;
        let mut done = 0usize;
        while done < len {
            let n = (len - done).min(ring.size);
            let (_, host, ev) = &ring.bufs[k % ring.bufs.len()];
            let stream = &ring.streams[k % ring.streams.len()];
            check("cuEventSynchronize", ev.synchronize())?;
            let src = &map[off as usize + done..off as usize + done + n];
            let dst = SendPtr(*host);
            src.par_chunks(1 << 20).enumerate().for_each(|(i, c)| {
                let d = &dst;
                // SAFETY: piece i of the pinned buffer, disjoint per task.
                unsafe { std::ptr::copy_nonoverlapping(c.as_ptr(), d.0.add(i << 20), c.len()) };
            });
            // SAFETY: the pinned buffer holds `n` staged bytes; the device
            // range lies inside `b`.
            unsafe {
                let h = std::slice::from_raw_parts(*host as *const u8, n);
                check(
                    "cuMemcpyHtoDAsync",
                    cu::memcpy_htod_async(b.device_ptr() + done as u64, h, stream.cu_stream()),
                )?;
            }
            check("cuEventRecord", ev.record(stream))?;
            done += n;
            k += 1;
        }
        bufs.push(b);
    }
    for s in &ring.streams {
        check("cuStreamSynchronize", s.synchronize())?;
    }
    Ok((t0.elapsed().as_secs_f64() * 1e3, bufs))
}

// ---------------------------------------------------------------- tpde cases

fn digest_check<D: AsRef<[u8]> + Sync>(
    a: &Archive<D>,
    table: Table,
    got: &[DeviceTensor],
) -> Res<()> {
    let hosts: Vec<Vec<u8>> = got
        .iter()
        .map(|t| t.copy_to_host())
        .collect::<Result<_, _>>()?;
    hosts.par_iter().enumerate().try_for_each(|(i, h)| {
        let d: [u8; 32] = Sha256::digest(h).into();
        if d != a.record(table, i).sha256 {
            return Err(format!("{}: digest mismatch", a.record(table, i).name));
        }
        Ok(())
    })?;
    Ok(())
}

/// Per-thread output rings for [`cpu_decode_ms`], allocated (and faulted
/// in) once, outside the timed region.
struct Rings(Vec<std::sync::Mutex<(Vec<u8>, usize)>>);

impl Rings {
    fn new() -> Rings {
        const RING: usize = 32 << 20;
        let n = rayon::current_num_threads() + 1;
        Rings(
            (0..n)
                .map(|_| std::sync::Mutex::new((vec![1u8; RING], 0)))
                .collect(),
        )
    }
}

/// The CPU half alone: every job decoded on all cores into a per-thread
/// ring the size of a staging ring (so the writes go to DRAM, as they do
/// into pinned slots, rather than staying in cache).
fn cpu_decode_ms<D: AsRef<[u8]> + Sync>(
    a: &Archive<D>,
    onto_device: bool,
    positions_on_device: bool,
    entropy_on_device: bool,
    rings: &Rings,
) -> Res<f64> {
    let opts = plan::PlanOptions {
        positions_on_device,
        entropy_on_device: if entropy_on_device {
            plan::EntropyOnDevice::All
        } else {
            plan::EntropyOnDevice::Never
        },
    };
    // Bases "on the device": the simulated memory holds each base's
    // predictor, which the base context of `RansBase` planes reads (the
    // GPU path copies those bytes device -> host). Built before the clock.
    let mut mem = tpde_gpu::reference::HostMemory::default();
    let mut targets = Vec::new();
    // Scratch for narrow, row-mapped and quantized inline bases, one per
    // base tensor as a load assigns it (addresses only: jobs are decoded
    // on the CPU here, never run).
    let mut shared = plan::Scratch::default();
    let mut next_scratch = 2u64 << 40;
    for t in 0..a.index().tensors.len() {
        let (base, dst) = if onto_device && plan::base_name(a, t).is_some() {
            let rec = a.record(Table::Target, t);
            let n = rec.elem_count().unwrap_or(0);
            let mut pred = vec![0u8; rec.byte_len().unwrap_or(0) as usize];
            // Inline bases only (as below); an external one stays unread
            // unless a chunk needs its context, which is then an error.
            if let Ok(host) = plan::host_base_plan(a, t, &NoBase) {
                tpde_gpu::stage::predictor(
                    a,
                    host,
                    rec.dtype,
                    0,
                    0..n,
                    &tpde_gpu::stage::NoDeviceRead,
                    &mut pred,
                )?;
            }
            (plan::BasePlan::InPlace, mem.upload(&pred))
        } else {
            let base = shared.assign(a, plan::host_base_plan(a, t, &NoBase)?, &mut |_| {
                next_scratch += 1 << 40;
                Ok(next_scratch)
            })?;
            (base, 1 << 40)
        };
        targets.push(plan::Target {
            t,
            dst,
            base,
            cut: false,
        });
    }
    let t0 = Instant::now();
    let mut jobs: Vec<Job<'_>> = Vec::new();
    plan::targets_jobs(a, &targets, opts, &mut jobs)?;
    jobs.par_iter().try_for_each(|j| -> Result<(), String> {
        let i = rayon::current_thread_index().unwrap_or(0) % rings.0.len();
        let mut g = rings.0[i].lock().map_err(|_| "ring lock".to_string())?;
        let (buf, at) = &mut *g;
        if *at + j.staged > buf.len() {
            *at = 0;
        }
        if j.staged > buf.len() {
            buf.resize(j.staged, 1);
        }
        tpde_gpu::stage::fill_region(a, j, &mut buf[*at..], &mem).map_err(|e| e.to_string())?;
        *at += j.staged;
        Ok(())
    })?;
    Ok(t0.elapsed().as_secs_f64() * 1e3)
}

/// The last load's pipeline profile, for the note column.
fn pipe(s: &tpde_gpu::LoadStats) -> String {
    format!(
        "last run: {} batches, waited {:.0} ms on decode, {:.0} ms on slots",
        s.batches, s.wait_decode_ms, s.wait_slot_ms
    )
}

struct ArchiveStats {
    bytes: u64,
    target_bytes: u64,
    delta_stored: u64,
    staged: u64,
    kinds: String,
    /// Streams / planes per codec, over every chunk (bases too).
    codecs: String,
}

fn stats<D: AsRef<[u8]> + Sync>(a: &Archive<D>) -> ArchiveStats {
    let mut s = ArchiveStats {
        bytes: a.bytes().len() as u64,
        target_bytes: 0,
        delta_stored: 0,
        staged: 0,
        kinds: String::new(),
        codecs: String::new(),
    };
    let mut count: HashMap<(ChunkKind, Op), usize> = HashMap::new();
    let mut codecs: HashMap<&'static str, (usize, u64)> = HashMap::new();
    for r in a.index().tensors.iter().chain(&a.index().bases) {
        let Payload::Chunked { chunks, .. } = &r.payload else {
            continue;
        };
        for st in chunks.iter().flat_map(|c| [&c.positions, &c.values]) {
            let mut add = |k: &'static str, n: u64| {
                let e = codecs.entry(k).or_default();
                e.0 += 1;
                e.1 += n;
            };
            match &st.codec {
                Codec::Raw if st.raw_len == 0 => {}
                Codec::Raw => add("raw", st.stored_len),
                Codec::Zstd => add("zstd", st.stored_len),
                Codec::PerPlane(planes) => {
                    for p in planes {
                        match p.codec {
                            PlaneCodec::Raw => add("plane raw", p.stored_len),
                            PlaneCodec::Zstd => add("plane zstd", p.stored_len),
                            PlaneCodec::Rans => add("plane rans", p.stored_len),
                            PlaneCodec::RansBase => add("plane rans-base", p.stored_len),
                            PlaneCodec::Rans32 => add("plane rans32", p.stored_len),
                            PlaneCodec::RansBase32 => add("plane rans-base32", p.stored_len),
                        }
                    }
                }
            }
        }
    }
    let mut cv: Vec<_> = codecs.into_iter().collect();
    cv.sort();
    s.codecs = cv
        .iter()
        .map(|(k, (n, b))| format!("{k}:{n} ({:.3} GB)", *b as f64 / 1e9))
        .collect::<Vec<_>>()
        .join(" ");
    for t in &a.index().tensors {
        s.target_bytes += t.byte_len().unwrap_or(0);
        s.delta_stored += t.stored_bytes();
        if let Payload::Chunked { chunks, .. } = &t.payload {
            for c in chunks {
                *count.entry((c.kind, c.op)).or_default() += 1;
                // rANS-coded values go up coded (with their tables) and
                // are entropy-decoded on the device (the default).
                let values = plan::entropy_input_len(a.bytes(), c, t.dtype.width())
                    .map_or(c.values.raw_len, |n| n as u64);
                s.staged += match c.kind {
                    ChunkKind::Zero => 0,
                    ChunkKind::Dense => values,
                    // gap bytes go up raw (positions decoded on the device)
                    ChunkKind::Sparse => c.positions.raw_len + values,
                };
            }
        }
    }
    let mut v: Vec<_> = count.into_iter().collect();
    v.sort_by_key(|((k, o), _)| (k.name(), o.name()));
    s.kinds = v
        .iter()
        .map(|((k, o), n)| format!("{}/{}:{n}", k.name(), o.name()))
        .collect::<Vec<_>>()
        .join(" ");
    s
}

fn restore_bases(
    ctx: &Arc<CudaContext>,
    pristine: &[DeviceTensor],
) -> Res<HashMap<String, DeviceTensor>> {
    let mut m = HashMap::new();
    for p in pristine {
        let b = DeviceBuffer::alloc(ctx, p.byte_len())?;
        if p.byte_len() > 0 {
            // SAFETY: both buffers hold byte_len bytes.
            check("cuMemcpyDtoD", unsafe {
                cu::memcpy_dtod_sync(b.device_ptr(), p.device_ptr(), p.byte_len())
            })?;
        }
        m.insert(
            p.name.clone(),
            DeviceTensor {
                name: p.name.clone(),
                dtype: p.dtype,
                shape: p.shape.clone(),
                buffer: b,
            },
        );
    }
    check("cuCtxSynchronize", ctx.synchronize())?;
    Ok(m)
}

fn dataset(
    rows: &mut Vec<Row>,
    name: &str,
    dir: &Path,
    reps: usize,
    device: usize,
    configs_wanted: &str,
) -> Res<()> {
    let target = dir.join("target.safetensors");
    if !target.exists() {
        println!("{name}: {} missing, skipped", target.display());
        return Ok(());
    }
    // Every archive `gen` wrote, sorted: inline-rans, inline-zstd, plain-...
    let mut archives: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tpde"))
        .collect();
    archives.sort();
    let tensors = st_tensors(&target)?;
    let target_bytes: u64 = tensors.iter().map(|t| t.1 as u64).sum();
    let file = std::fs::File::open(&target)?;
    // SAFETY: read-only map of a file nobody modifies during the bench.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let gb = |ms: f64| target_bytes as f64 / ms / 1e6;
    let ctx = CudaContext::new(device)?;

    // Warm the page cache for every input.
    for f in std::iter::once("target.safetensors").chain(archives.iter().map(|s| s.as_str())) {
        let _ = std::fs::read(dir.join(f))?;
    }

    let (a_ms, a_min) = time_ms(reps, || Ok(baseline_a(&ctx, &map, &tensors)?.0))?;
    rows.push(Row {
        case: format!(
            "{name}: A safetensors (mapped, page cache), pageable cuMemcpyHtoD per tensor"
        ),
        ms: a_ms,
        min_ms: a_min,
        gbps: gb(a_ms),
        note: format!("{:.2} GB of tensors", target_bytes as f64 / 1e9),
    });
    let ring = PinnedRing::new(&ctx, 4, 64 << 20)?;
    let (b_ms, b_min) = time_ms(reps, || Ok(baseline_b(&ctx, &ring, &map, &tensors)?.0))?;
    drop(ring);
    rows.push(Row {
        case: format!("{name}: B safetensors, pinned staging (4x64 MiB, 2 streams)"),
        ms: b_ms,
        min_ms: b_min,
        gbps: gb(b_ms),
        note: String::new(),
    });
    let vs = |ms: f64| format!("{:.2}x vs A, {:.2}x vs B", a_ms / ms, b_ms / ms);

    let configs: Vec<_> = [
        (
            "default",
            "default 8x32 MiB, 2 streams",
            GpuOptions::default(),
        ),
        (
            "wide",
            "16x16 MiB, 4 streams",
            GpuOptions::default()
                .with_slots(16)
                .with_slot_bytes(16 << 20)
                .with_streams(4),
        ),
        (
            "cpupos",
            "default, positions decoded on the CPU",
            GpuOptions::default().with_positions_on_device(false),
        ),
        (
            "gpuent",
            "rANS planes entropy-decoded on the device, 8x32 MiB + 128 MiB decode areas",
            GpuOptions::default().with_entropy_on_device(true),
        ),
        (
            "gpuentbig",
            "rANS planes entropy-decoded on the device, 4x96 MiB + 512 MiB decode areas",
            GpuOptions::default()
                .with_entropy_on_device(true)
                .with_slots(4)
                .with_slot_bytes(96 << 20)
                .with_decode_bytes(512 << 20),
        ),
        (
            "gpuenthuge",
            "rANS planes entropy-decoded on the device, 2x256 MiB + 2 GiB decode areas",
            GpuOptions::default()
                .with_entropy_on_device(true)
                .with_slots(2)
                .with_slot_bytes(256 << 20)
                .with_decode_bytes(2 << 30),
        ),
        (
            "gpuent4",
            "rANS planes entropy-decoded on the device, 4x128 MiB + 1 GiB decode areas, 4 streams",
            GpuOptions::default()
                .with_entropy_on_device(true)
                .with_slots(4)
                .with_slot_bytes(128 << 20)
                .with_decode_bytes(1 << 30)
                .with_streams(4),
        ),
    ]
    .into_iter()
    .filter(|(key, _, _)| configs_wanted.split(',').any(|w| w == *key))
    .collect();
    // The device entropy configurations only where they differ from the
    // default and take seconds rather than minutes: archives with rANS
    // planes in chunks smaller than 2^20 elements (with 2^20-element
    // chunks a launch has too few chunks: see BENCHMARKS-gpu.md run 9).
    let applies = |key: &str, file: &str| !key.starts_with("gpuent") || file.contains("rans-c");
    emit(rows, 0);
    for file in &archives {
        let path = dir.join(file);
        let t_open = Instant::now();
        let a = Archive::open(&path)?;
        let open_ms = t_open.elapsed().as_secs_f64() * 1e3;
        let st = stats(&a);
        println!(
            "{name}/{file}: {:.4} GB archive, {:.4} GB stored for targets, {:.3} GB staged (cross PCIe) for delta chunks, open+validate {open_ms:.1} ms; chunks {}; streams {}",
            st.bytes as f64 / 1e9,
            st.delta_stored as f64 / 1e9,
            st.staged as f64 / 1e9,
            st.kinds,
            st.codecs
        );
        let first_row = rows.len();
        for (key, label, opts) in &configs {
            if !applies(key, file) {
                continue;
            }
            let a = Archive::open(&path)?;
            let gpu = GpuArchive::new(a, device, opts.clone())?;
            let mut checked = false;
            let (ms, min) = time_ms(reps, || {
                let t0 = Instant::now();
                let got = gpu.load_all()?;
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                if !checked {
                    digest_check(gpu.archive(), Table::Target, &got)?;
                    checked = true;
                }
                Ok(ms)
            })?;
            rows.push(Row {
                case: format!("{name}: tpde {file} -> device, load_all ({label})"),
                ms,
                min_ms: min,
                gbps: gb(ms),
                note: format!("{}; {}", vs(ms), pipe(&gpu.last_load_stats())),
            });
        }
        if file.starts_with("inline") && !a.index().bases.is_empty() {
            for (key, label, opts) in &configs {
                if !applies(key, file) {
                    continue;
                }
                let a = Archive::open(&path)?;
                let gpu = GpuArchive::new(a, device, opts.clone())?;
                let pristine = gpu.load_inline_bases()?;
                digest_check(gpu.archive(), Table::Base, &pristine)?;
                let mut checked = false;
                let (ms, min) = time_ms(reps, || {
                    let bases = restore_bases(&ctx, &pristine)?;
                    let t0 = Instant::now();
                    let got = gpu.load_all_onto(bases)?;
                    let ms = t0.elapsed().as_secs_f64() * 1e3;
                    if !checked {
                        digest_check(gpu.archive(), Table::Target, &got)?;
                        checked = true;
                    }
                    Ok(ms)
                })?;
                rows.push(Row {
                    case: format!(
                        "{name}: tpde {file}, base already on device, load_all_onto ({label})"
                    ),
                    ms,
                    min_ms: min,
                    gbps: gb(ms),
                    note: format!("{}; {}", vs(ms), pipe(&gpu.last_load_stats())),
                });
            }
        }
        let rings = Rings::new();
        let (ms, min) = time_ms(reps, || cpu_decode_ms(&a, false, true, false, &rings))?;
        rows.push(Row {
            case: format!("{name}: tpde {file}, CPU decode only (all cores, no GPU)"),
            ms,
            min_ms: min,
            gbps: gb(ms),
            note: format!("{} threads", rayon::current_num_threads()),
        });
        if !a.index().bases.is_empty() {
            let (ms, min) = time_ms(reps, || cpu_decode_ms(&a, true, true, false, &rings))?;
            rows.push(Row {
                case: format!("{name}: tpde {file}, CPU decode of the delta only"),
                ms,
                min_ms: min,
                gbps: gb(ms),
                note: String::new(),
            });
            // What the CPU does with device entropy decoding: headers
            // parsed, words and tables staged, rANS planes left to the device.
            let (ms, min) = time_ms(reps, || cpu_decode_ms(&a, true, true, true, &rings))?;
            rows.push(Row {
                case: format!(
                    "{name}: tpde {file}, CPU staging of the delta only, rANS planes left to the device"
                ),
                ms,
                min_ms: min,
                gbps: gb(ms),
                note: String::new(),
            });
        }
        emit(rows, first_row);
    }
    Ok(())
}

// ---------------------------------------------------------------- kernels

/// Times the apply kernels alone on a 256 MiB-per-operand slab (5x the L2)
/// against a device-to-device copy of the same bytes, with CUDA events.
fn kernel_rows(rows: &mut Vec<Row>, reps: usize, device: usize) -> Res<()> {
    // A tiny archive only to get a context and the compiled kernels.
    let ctx = {
        let info = tpde_gpu::probe(device)?;
        println!(
            "device: {} (cc {}.{}), {:.1} GiB",
            info.name,
            info.compute_capability.0,
            info.compute_capability.1,
            info.total_mem as f64 / (1u64 << 30) as f64
        );
        CudaContext::new(device)?
    };
    let kernels = tpde_gpu::kernels::kernels_for(&ctx)?;
    let stream = ctx.new_stream()?;
    let bytes: usize = 256 << 20;
    let mut host = vec![0u8; bytes];
    host.par_chunks_mut(1 << 16).enumerate().for_each(|(i, c)| {
        let mut s = splitmix(i as u64 + 99);
        for b in c.chunks_mut(8) {
            s = splitmix(s);
            let v = s.to_le_bytes();
            b.copy_from_slice(&v[..b.len()]);
        }
    });
    let dst = DeviceBuffer::from_host(&ctx, &host)?;
    let src = DeviceBuffer::from_host(&ctx, &host)?;
    let planes = DeviceBuffer::from_host(&ctx, &host)?;
    let table = DeviceBuffer::alloc(&ctx, 1 << 20)?;
    let ev0 = ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?;
    let ev1 = ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?;
    let mut time_events = |f: &mut dyn FnMut() -> Res<()>| -> Res<(f64, f64)> {
        time_ms(reps * 3, || {
            ev0.record(&stream)?;
            f()?;
            ev1.record(&stream)?;
            ev1.synchronize()?;
            Ok(ev0.elapsed_ms(&ev1)? as f64)
        })
    };
    // Ceiling: D2D copy.
    let (copy_ms, copy_min) = time_events(&mut || {
        // SAFETY: both buffers hold `bytes` bytes.
        check("cuMemcpyDtoDAsync", unsafe {
            cu::memcpy_dtod_async(
                dst.device_ptr(),
                src.device_ptr(),
                bytes,
                stream.cu_stream(),
            )
        })
    })?;
    let copy_gbps = 2.0 * bytes as f64 / copy_ms / 1e6;
    rows.push(Row {
        case: "kernel: device-to-device copy 256 MiB (HBM ceiling)".into(),
        ms: copy_ms,
        min_ms: copy_min,
        gbps: copy_gbps,
        note: "GB/s = bytes read + written".into(),
    });
    // Jobs of 1 Mi elements, like the writer's default chunks.
    let chunk_elems = 1u64 << 20;
    let mut cases: Vec<(String, Vec<Desc>, f64, bool)> = Vec::new();
    for (width, op, in_place) in [
        (2usize, Op::Xor, true),
        (2, Op::Add, true),
        (2, Op::Replace, true),
        (2, Op::Xor, false),
        (4, Op::Add, true),
        (1, Op::Xor, true),
        (8, Op::Xor, true),
    ] {
        let n_total = (bytes / width) as u64;
        let descs = dense_descs(
            n_total,
            chunk_elems,
            width,
            op,
            dst.device_ptr(),
            if in_place {
                dst.device_ptr()
            } else {
                src.device_ptr()
            },
            planes.device_ptr(),
        );
        let traffic = if op == Op::Replace { 2.0 } else { 3.0 } * bytes as f64;
        cases.push((
            format!(
                "kernel: dense {} w{width} {}",
                op.name(),
                if in_place {
                    "in place"
                } else {
                    "base -> new buffer"
                }
            ),
            descs,
            traffic,
            false,
        ));
    }
    // Pinned host -> device copy bandwidth (the PCIe ceiling of the pipeline).
    {
        // SAFETY: written before it is read.
        let mut pinned = unsafe { ctx.alloc_pinned_with_flags::<u8>(bytes, 0)? };
        let hp = pinned.as_mut_ptr()?;
        // SAFETY: `hp` addresses `bytes` bytes of pinned memory.
        let hs = unsafe { std::slice::from_raw_parts_mut(hp, bytes) };
        hs.copy_from_slice(&host);
        let (ms, min) = time_events(&mut || {
            // SAFETY: `dst` holds `bytes` bytes.
            check("cuMemcpyHtoDAsync", unsafe {
                cu::memcpy_htod_async(dst.device_ptr(), &*hs, stream.cu_stream())
            })
        })?;
        rows.push(Row {
            case: "pcie: pinned host -> device copy 256 MiB".into(),
            ms,
            min_ms: min,
            gbps: bytes as f64 / ms / 1e6,
            note: "the pipeline's copy ceiling".into(),
        });
    }
    // Sparse with the gap bytes decoded on the device, bf16, 12% and 50%.
    for pct in [12u64, 50] {
        let width = 2usize;
        let nchunks = (bytes / width) as u64 / chunk_elems;
        let stride = 100 / pct; // 8 or 2
        let per_chunk = chunk_elems / stride;
        let positions: Vec<u32> = (0..per_chunk).map(|j| (j * stride) as u32).collect();
        let mut gaps = Vec::new();
        tpde_format::codec::positions::encode(&positions, &mut gaps);
        let seg = plan::VARINT_SEGMENT;
        let mut host_gaps = Vec::new();
        let mut descs = Vec::new();
        let mut tile = 0u32;
        for c in 0..nchunks {
            let off = host_gaps.len() as u64;
            host_gaps.extend_from_slice(&gaps);
            while host_gaps.len() % 256 != 0 {
                host_gaps.push(0);
            }
            let tiles = (gaps.len() as u64).div_ceil(seg) as u32;
            descs.push((
                Desc {
                    dst: dst.device_ptr() + c * chunk_elems * width as u64,
                    base: gaps.len() as u64,
                    vals: planes.device_ptr() + c * per_chunk * width as u64,
                    pos: off,
                    n: chunk_elems,
                    m: per_chunk,
                    tile_start: tile,
                    tiles,
                    width: width as u8,
                    kind: JobKind::SparseVarint as u8,
                    op: plan::op_code(Op::Xor),
                    flags: 0,
                },
                off,
            ));
            tile += tiles;
        }
        let gaps_dev = DeviceBuffer::from_host(&ctx, &host_gaps)?;
        let descs: Vec<Desc> = descs
            .into_iter()
            .map(|(mut d, off)| {
                d.pos = gaps_dev.device_ptr() + off;
                d
            })
            .collect();
        let stats = DeviceBuffer::alloc(&ctx, 16 * tile as usize)?;
        let err = DeviceBuffer::from_host(&ctx, &[0u8; 8])?;
        upload_descs(&table, &descs)?;
        let n = descs.len() as u32;
        let (ms, min) = time_events(&mut || {
            // SAFETY: table, gap bytes, values, scratch and error word are
            // live device memory sized for these descriptors.
            unsafe {
                kernels.launch_varint(
                    &stream,
                    table.device_ptr(),
                    n,
                    tile,
                    stats.device_ptr(),
                    err.device_ptr(),
                    0,
                )?
            };
            Ok(())
        })?;
        stream.synchronize()?;
        if err.copy_to_host()? != [0u8; 8] {
            return Err("varint kernel reported a valid stream as bad".into());
        }
        let m_total = per_chunk * nchunks;
        // gap bytes read twice, values read, elements read and written
        let useful = (2 * gaps.len() as u64 * nchunks + m_total * 3 * width as u64) as f64;
        // every 32-byte sector of the output is read and written at these densities
        let sectors =
            (2 * bytes) as f64 + (2 * gaps.len() as u64 * nchunks + m_total * width as u64) as f64;
        rows.push(Row {
            case: format!(
                "kernel: sparse xor w2, {pct}% of elements, gap bytes decoded on the device"
            ),
            ms,
            min_ms: min,
            gbps: useful / ms / 1e6,
            note: format!(
                "useful bytes; {:.0}% of D2D counting touched sectors; {:.2} G positions/s",
                100.0 * sectors / ms / 1e6 / copy_gbps,
                m_total as f64 / ms / 1e6
            ),
        });
    }
    // Sparse, bf16, 12% of elements (the corpus's consecutive checkpoints).
    {
        let width = 2usize;
        let n_total = (bytes / width) as u64;
        let per_chunk = chunk_elems * 12 / 100;
        let mut descs = Vec::new();
        let mut pos_host = Vec::new();
        let mut tile = 0u32;
        let nchunks = n_total / chunk_elems;
        // positions: every 8th-ish element, deterministic gaps
        let stride = chunk_elems / per_chunk;
        for c in 0..nchunks {
            let pos_off = pos_host.len() as u64;
            for j in 0..per_chunk {
                pos_host.extend_from_slice(&((j * stride) as u32).to_le_bytes());
            }
            let d = Desc {
                dst: dst.device_ptr() + c * chunk_elems * width as u64,
                base: dst.device_ptr() + c * chunk_elems * width as u64,
                vals: planes.device_ptr() + c * per_chunk * width as u64,
                pos: 0,
                n: chunk_elems,
                m: per_chunk,
                tile_start: tile,
                tiles: per_chunk.div_ceil(plan::SPARSE_PER_TILE) as u32,
                width: width as u8,
                kind: JobKind::Sparse as u8,
                op: plan::op_code(Op::Xor),
                flags: 0,
            };
            tile += d.tiles;
            descs.push((d, pos_off));
        }
        let pos_dev = DeviceBuffer::from_host(&ctx, &pos_host)?;
        let descs: Vec<Desc> = descs
            .into_iter()
            .map(|(mut d, off)| {
                d.pos = pos_dev.device_ptr() + off;
                d
            })
            .collect();
        let m_total = per_chunk * nchunks;
        // positions + values read, element read + written
        let traffic = (m_total * (4 + width as u64) + 2 * m_total * width as u64) as f64;
        let sectors = (2 * bytes) as f64 + (m_total * (4 + width as u64)) as f64;
        let ms = run_descs(
            &ctx,
            &kernels,
            &stream,
            &table,
            &descs,
            true,
            &mut time_events,
        )?;
        rows.push(Row {
            case: "kernel: sparse xor w2, 12% of elements, u32 positions from the CPU".into(),
            ms: ms.0,
            min_ms: ms.1,
            gbps: traffic / ms.0 / 1e6,
            note: format!(
                "useful bytes; {:.0}% of D2D counting touched sectors",
                100.0 * sectors / ms.0 / 1e6 / copy_gbps
            ),
        });
        drop(pos_dev);
    }
    for (case, descs, traffic, _) in cases {
        let ms = run_descs(
            &ctx,
            &kernels,
            &stream,
            &table,
            &descs,
            false,
            &mut time_events,
        )?;
        let g = traffic / ms.0 / 1e6;
        rows.push(Row {
            case,
            ms: ms.0,
            min_ms: ms.1,
            gbps: g,
            note: format!("{:.0}% of D2D copy GB/s", 100.0 * g / copy_gbps),
        });
    }
    // Correctness of the timed kernel on this data: dense xor in place twice
    // restores the input.
    let check_descs = dense_descs(
        (bytes / 2) as u64,
        chunk_elems,
        2,
        Op::Xor,
        dst.device_ptr(),
        dst.device_ptr(),
        planes.device_ptr(),
    );
    let before = dst.copy_to_host()?;
    upload_descs(&table, &check_descs)?;
    let tiles: u32 = check_descs.iter().map(|d| d.tiles).sum();
    for _ in 0..2 {
        // SAFETY: the table and every address in it are live device memory.
        unsafe {
            kernels.launch_phase1(&stream, table.device_ptr(), check_descs.len() as u32, tiles)?
        };
    }
    stream.synchronize()?;
    let after = dst.copy_to_host()?;
    if before != after {
        return Err("kernel check: xor applied twice did not restore the buffer".into());
    }
    // One xor must equal the CPU's xor.
    // SAFETY: as above.
    unsafe { kernels.launch_phase1(&stream, table.device_ptr(), check_descs.len() as u32, tiles)? };
    stream.synchronize()?;
    let once_out = dst.copy_to_host()?;
    let ok = once_out
        .par_chunks(2)
        .zip(before.par_chunks(2))
        .enumerate()
        .all(|(i, (o, b))| {
            let c = (i as u64 / chunk_elems) as usize;
            let k = i % chunk_elems as usize;
            let base = c * chunk_elems as usize * 2;
            let hi = host[base + k];
            let lo = host[base + chunk_elems as usize + k];
            o[0] == b[0] ^ lo && o[1] == b[1] ^ hi
        });
    if !ok {
        return Err("kernel check: dense xor differs from the CPU".into());
    }
    println!("kernel check: dense xor matches the CPU on 128 Mi elements");
    Ok(())
}

fn dense_descs(
    n_total: u64,
    chunk: u64,
    width: usize,
    op: Op,
    dst: u64,
    base: u64,
    planes: u64,
) -> Vec<Desc> {
    let mut tile = 0u32;
    let mut v = Vec::new();
    let mut start = 0u64;
    while start < n_total {
        let n = chunk.min(n_total - start);
        let off = start * width as u64;
        let tiles = n.div_ceil(plan::dense_elems_per_tile(width)) as u32;
        v.push(Desc {
            dst: dst + off,
            base: base + off,
            vals: planes + off,
            pos: 0,
            n,
            m: 0,
            tile_start: tile,
            tiles,
            width: width as u8,
            kind: JobKind::Dense as u8,
            op: plan::op_code(op),
            flags: 1,
        });
        tile += tiles;
        start += n;
    }
    v
}

fn upload_descs(table: &DeviceBuffer, descs: &[Desc]) -> Res<()> {
    let mut bytes = vec![0u8; descs.len() * plan::DESC_BYTES];
    for (d, o) in descs.iter().zip(bytes.chunks_exact_mut(plan::DESC_BYTES)) {
        d.write(o);
    }
    if bytes.len() > table.len() {
        return Err("descriptor table too large".into());
    }
    // SAFETY: the table buffer is larger than `bytes`.
    check("cuMemcpyHtoD", unsafe {
        cu::memcpy_htod_sync(table.device_ptr(), &bytes)
    })
}

fn run_descs(
    _ctx: &Arc<CudaContext>,
    kernels: &tpde_gpu::Kernels,
    stream: &Arc<CudaStream>,
    table: &DeviceBuffer,
    descs: &[Desc],
    sparse: bool,
    time_events: &mut Timer<'_>,
) -> Res<(f64, f64)> {
    upload_descs(table, descs)?;
    let tiles: u32 = descs.iter().map(|d| d.tiles).sum();
    let n = descs.len() as u32;
    let r = time_events(&mut || {
        // SAFETY: the table and every address in it are live device memory.
        unsafe {
            if sparse {
                kernels.launch_sparse(stream, table.device_ptr(), n, tiles)?;
            } else {
                kernels.launch_phase1(stream, table.device_ptr(), n, tiles)?;
            }
        }
        Ok(())
    })?;
    stream.synchronize()?;
    Ok(r)
}

// ---------------------------------------------------------------- report

/// Prints `rows[from..]` at once (the full table comes at the end), so a
/// run cut short still leaves its measurements in the log.
fn emit(rows: &[Row], from: usize) {
    for r in rows.get(from..).unwrap_or_default() {
        println!(
            "row | {} | {:.2} | {:.2} | {:.1} | {} |",
            r.case, r.ms, r.min_ms, r.gbps, r.note
        );
    }
    let _ = std::io::stdout().flush();
}

fn run(dir: &Path, reps: usize, device: usize, configs: &str) -> Res<()> {
    let mut rows = Vec::new();
    kernel_rows(&mut rows, reps, device)?;
    for name in ["synth", "corpus"] {
        dataset(&mut rows, name, &dir.join(name), reps, device, configs)?;
    }
    println!();
    println!("| case | median ms | min ms | GB/s | note |");
    println!("|---|---:|---:|---:|---|");
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.1} | {} |",
            r.case, r.ms, r.min_ms, r.gbps, r.note
        );
    }
    println!();
    println!(
        "GB/s: end-to-end rows = target tensor bytes / time; kernel rows = bytes moved through HBM / time. Median of {reps} runs after a warm-up ({} for kernels).",
        reps * 3
    );
    Ok(())
}
