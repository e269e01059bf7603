//! GPU parity: reconstruct on the device, copy back, compare digests with
//! the CPU reader, for every dtype width, chunk kind, combine op and base
//! mode (inline chunked, inline plain, external, none), through every load
//! API. Without a CUDA device each test prints "skipped: no CUDA device" and
//! returns; any other failure (NVRTC missing, a kernel fault, a mismatch)
//! fails.

mod common;

use std::collections::HashMap;

use sha2::{Digest as _, Sha256};
use tpde_format::{Archive, ReadLimits};
use tpde_gpu::{DeviceBuffer, DeviceTensor, GpuArchive, GpuError, GpuOptions};

fn device_or_skip() -> bool {
    match tpde_gpu::probe(0) {
        Ok(info) => {
            println!("device: {info:?}");
            true
        }
        Err(e) if e.is_no_device() => {
            println!("skipped: no CUDA device ({e})");
            false
        }
        Err(e) => panic!("CUDA is present but unusable: {e}"),
    }
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Option sets that force many batches, one stream, several streams.
fn option_sets() -> Vec<GpuOptions> {
    vec![
        GpuOptions::default().with_entropy_on_device(true),
        GpuOptions::default()
            .with_slot_bytes(0)
            .with_slots(3)
            .with_streams(1)
            .with_threads(2)
            .with_entropy_on_device(true),
        GpuOptions::default()
            .with_slot_bytes(8192)
            .with_slots(4)
            .with_streams(4)
            .with_positions_on_device(false)
            .with_entropy_on_device(true),
        GpuOptions::default()
            .with_slot_bytes(1 << 16)
            .with_slots(2)
            .with_streams(2)
            .with_entropy_on_device(true),
        // Chunks of 32-state planes decoded on the device, 4-state ones on
        // the CPU.
        GpuOptions::default().with_entropy_on_device_for(tpde_gpu::plan::EntropyOnDevice::Wide),
        // rANS planes decoded on the CPU (the default).
        GpuOptions::default(),
    ]
}

#[test]
fn no_device_is_a_typed_error_not_a_panic() {
    let built = common::build(&common::matrix(9));
    let a = Archive::from_bytes(built.bytes, ReadLimits::default()).unwrap();
    match GpuArchive::new(a, 0, GpuOptions::default()) {
        Ok(_) => println!("device present: nothing to check here"),
        Err(e) => assert!(e.is_no_device(), "unexpected error without a device: {e}"),
    }
    // An ordinal past the last device is always a typed error.
    let built = common::build(&common::matrix(9));
    let a = Archive::from_bytes(built.bytes, ReadLimits::default()).unwrap();
    let err = GpuArchive::new(a, 4096, GpuOptions::default()).unwrap_err();
    assert!(
        matches!(err, GpuError::NoDevice { .. } | GpuError::NoDriver),
        "{err}"
    );
}

#[test]
fn load_all_matches_the_cpu_reader() {
    if !device_or_skip() {
        return;
    }
    for (seed, opts) in option_sets().into_iter().enumerate() {
        let built = common::build(&common::matrix(seed as u64 + 11));
        let a = Archive::from_bytes(built.bytes.as_slice(), ReadLimits::default()).unwrap();
        let want: Vec<[u8; 32]> = a.index().tensors.iter().map(|t| t.sha256).collect();
        let gpu = GpuArchive::new(a, 0, opts.clone()).unwrap();
        let got = gpu.load_all_with(&built.external).unwrap();
        assert_eq!(got.len(), want.len());
        for (t, w) in got.iter().zip(&want) {
            let host = t.copy_to_host().unwrap();
            let cpu = gpu
                .archive()
                .decode_tensor(&t.name, &built.external)
                .unwrap();
            assert_eq!(sha(&host), sha(&cpu), "{} with {opts:?}", t.name);
            assert_eq!(&sha(&host), w, "{}", t.name);
        }
        // Twice on the same archive: the ring is reused.
        let again = gpu.load_all_with(&built.external).unwrap();
        for (t, w) in again.iter().zip(&want) {
            assert_eq!(
                &sha(&t.copy_to_host().unwrap()),
                w,
                "{} (second load)",
                t.name
            );
        }
    }
}

/// Targets sliced from one embedded base (`q`, `k`, `v` from `qkv`)
/// share its device scratch in one load, which decodes each base chunk
/// once; one of them loaded alone decodes only the chunks under its rows.
#[test]
fn targets_sliced_from_one_inline_base_on_the_device() {
    if !device_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = common::qkv_archive(tmp.path());
    for opts in option_sets() {
        let a = Archive::open(&path).unwrap();
        let gpu = GpuArchive::new(a, 0, opts.clone()).unwrap();
        let base = tpde_format::NoBase;
        for t in gpu.load_all_with(&base).unwrap() {
            let cpu = gpu.archive().decode_tensor(&t.name, &base).unwrap();
            assert_eq!(
                sha(&t.copy_to_host().unwrap()),
                sha(&cpu),
                "{} {opts:?}",
                t.name
            );
        }
        let k = gpu.load_with("k", &base).unwrap();
        let cpu = gpu.archive().decode_tensor("k", &base).unwrap();
        assert_eq!(
            sha(&k.copy_to_host().unwrap()),
            sha(&cpu),
            "k alone {opts:?}"
        );
    }
}

#[test]
fn load_one_by_name_and_verify_option() {
    if !device_or_skip() {
        return;
    }
    let built = common::build(&common::matrix(21));
    let a = Archive::from_bytes(built.bytes.as_slice(), ReadLimits::default()).unwrap();
    let names: Vec<String> = a.index().tensors.iter().map(|t| t.name.clone()).collect();
    let gpu = GpuArchive::new(a, 0, GpuOptions::default().with_verify_digests(true)).unwrap();
    for name in &names {
        let t = gpu.load_with(name, &built.external).unwrap();
        let cpu = gpu.archive().decode_tensor(name, &built.external).unwrap();
        assert_eq!(sha(&t.copy_to_host().unwrap()), sha(&cpu), "{name}");
    }
    // An external base that is not supplied is the format's typed error.
    let ext = names.iter().find(|n| n.contains("External")).unwrap();
    let err = gpu.load(ext).unwrap_err();
    assert!(
        matches!(
            err,
            GpuError::Format(tpde_format::Error::MissingBase { .. })
        ),
        "{err}"
    );
}

fn upload(gpu: &GpuArchive<&[u8]>, name: &str, t: usize, bytes: &[u8]) -> DeviceTensor {
    let rec = &gpu.archive().index().tensors[t];
    DeviceTensor {
        name: name.to_owned(),
        // A widened base goes up at its own, narrower dtype, a row-mapped
        // one at its own row count.
        dtype: tpde_gpu::plan::base_dtype(gpu.archive(), t).unwrap_or(rec.dtype),
        shape: tpde_gpu::plan::base_shape(gpu.archive(), t)
            .unwrap_or(&rec.shape)
            .to_vec(),
        buffer: DeviceBuffer::from_host(gpu.context(), bytes).unwrap(),
    }
}

#[test]
fn device_bases_borrowed_and_in_place() {
    if !device_or_skip() {
        return;
    }
    for (seed, opts) in option_sets().into_iter().enumerate() {
        let built = common::build(&common::matrix(seed as u64 + 31));
        let a = Archive::from_bytes(built.bytes.as_slice(), ReadLimits::default()).unwrap();
        let gpu = GpuArchive::new(a, 0, opts.clone()).unwrap();
        let n = gpu.archive().index().tensors.len();
        // Borrowed: one target at a time; the base must come back unchanged.
        for t in 0..n {
            let rec = gpu.archive().index().tensors[t].clone();
            let Some(bname) = base_name(&rec) else {
                continue;
            };
            let base = upload(&gpu, &bname, t, &built.bases[&bname]);
            let out = gpu.load_onto(&rec.name, &base).unwrap();
            assert_eq!(
                sha(&out.copy_to_host().unwrap()),
                rec.sha256,
                "{}",
                rec.name
            );
            assert_eq!(
                base.copy_to_host().unwrap(),
                built.bases[&bname],
                "{}: base changed",
                rec.name
            );
        }
        // In place: every base handed over at once.
        let mut bases = HashMap::new();
        for t in 0..n {
            let rec = &gpu.archive().index().tensors[t];
            if let Some(bname) = base_name(rec) {
                bases.insert(bname.clone(), upload(&gpu, &bname, t, &built.bases[&bname]));
            }
        }
        let ptrs: HashMap<String, u64> = bases
            .iter()
            .map(|(k, v)| (k.clone(), v.device_ptr()))
            .collect();
        let got = gpu.load_all_onto(bases).unwrap();
        for (t, dt) in got.iter().enumerate() {
            let rec = &gpu.archive().index().tensors[t];
            assert_eq!(dt.name, rec.name);
            assert_eq!(
                sha(&dt.copy_to_host().unwrap()),
                rec.sha256,
                "{} {opts:?}",
                rec.name
            );
            if let Some(bname) = base_name(rec) {
                let in_place = tpde_gpu::plan::base_fits_in_place(gpu.archive(), t);
                if dt.byte_len() > 0 && in_place {
                    assert_eq!(dt.device_ptr(), ptrs[&bname], "{}: not in place", rec.name);
                }
            }
        }
    }
}

#[test]
fn a_wrong_device_base_is_refused() {
    if !device_or_skip() {
        return;
    }
    let built = common::build(&common::matrix(41));
    let a = Archive::from_bytes(built.bytes.as_slice(), ReadLimits::default()).unwrap();
    let gpu = GpuArchive::new(a, 0, GpuOptions::default()).unwrap();
    let (t, rec) = gpu
        .archive()
        .index()
        .tensors
        .iter()
        .enumerate()
        .find(|(_, r)| base_name(r).is_some() && r.byte_len().unwrap() > 8)
        .unwrap();
    let bname = base_name(rec).unwrap();
    let mut short = built.bases[&bname].clone();
    short.truncate(short.len() - 8);
    let mut base = upload(&gpu, &bname, t, &short);
    base.shape = vec![0];
    let err = gpu.load_onto(&rec.name, &base).unwrap_err();
    assert!(matches!(err, GpuError::DeviceBase { .. }), "{err}");
}

fn base_name(rec: &tpde_format::format::TensorRecord) -> Option<String> {
    match &rec.base {
        tpde_format::format::BaseRef::None => None,
        tpde_format::format::BaseRef::Inline { .. } => Some(format!("{}.base", rec.name)),
        tpde_format::format::BaseRef::External { name, .. }
        | tpde_format::format::BaseRef::ExternalWidened { name, .. } => Some(name.clone()),
        tpde_format::format::BaseRef::InlineWidened { .. }
        | tpde_format::format::BaseRef::InlineRows { .. }
        | tpde_format::format::BaseRef::InlineSlices { .. } => Some(format!("{}.base", rec.name)),
        tpde_format::format::BaseRef::ExternalRows { name, .. }
        | tpde_format::format::BaseRef::ExternalSlices { name, .. } => Some(name.clone()),
        // Two tensors (codes, scales): see `dequant_bases_on_the_device`.
        tpde_format::format::BaseRef::InlineDequant { .. }
        | tpde_format::format::BaseRef::ExternalDequant { .. } => None,
    }
}

#[test]
fn inline_bases_load_as_stored() {
    if !device_or_skip() {
        return;
    }
    let built = common::build(&common::matrix(51));
    let a = Archive::from_bytes(built.bytes.as_slice(), ReadLimits::default()).unwrap();
    let gpu = GpuArchive::new(a, 0, GpuOptions::default()).unwrap();
    let bases = gpu.load_inline_bases().unwrap();
    assert_eq!(bases.len(), gpu.archive().index().bases.len());
    for b in &bases {
        assert_eq!(
            b.copy_to_host().unwrap(),
            built.bases[&b.name],
            "{}",
            b.name
        );
    }
}

/// CRC-valid but hostile positions streams: the device decoder (and the CPU
/// one) refuse them with the chunk's typed error, write nothing out of
/// bounds (the context stays usable: the next load succeeds).
#[test]
fn hostile_positions_are_refused_on_the_device() {
    use common::Tamper;
    if !device_or_skip() {
        return;
    }
    for t in [
        Tamper::PastEnd,
        Tamper::EndsEarly,
        Tamper::TooLong,
        Tamper::Trailing,
    ] {
        for dtype in [tpde_format::Dtype::U8, tpde_format::Dtype::BF16] {
            let bytes = common::tampered(t, dtype);
            for on_device in [true, false] {
                let a = Archive::from_bytes(bytes.as_slice(), ReadLimits::default()).unwrap();
                let opts = GpuOptions::default().with_positions_on_device(on_device);
                let gpu = GpuArchive::new(a, 0, opts).unwrap();
                let err = gpu.load_all().unwrap_err();
                match &err {
                    GpuError::Format(tpde_format::Error::ChunkDecode { location, .. }) => {
                        assert!(location.to_string().contains("t1"), "{t:?}: {location}")
                    }
                    e => panic!(
                        "{t:?} on_device={on_device}: expected a chunk decode error, got {e}"
                    ),
                }
                // The good tensors still load, bit-exact.
                for name in ["t0", "t2"] {
                    let dt = gpu.load(name).unwrap();
                    let cpu = gpu
                        .archive()
                        .decode_tensor(name, &tpde_format::NoBase)
                        .unwrap();
                    assert_eq!(sha(&dt.copy_to_host().unwrap()), sha(&cpu), "{name}");
                }
            }
        }
    }
}

/// CRC-valid rANS planes (4- and 32-state) with a flipped or a missing
/// word: the device entropy decoder refuses them with the chunk's typed
/// error and the CPU decoder's reason, writes nothing out of bounds (the
/// next loads on the same context succeed); so does the CPU path.
#[test]
fn hostile_rans_planes_are_refused_on_the_device() {
    use common::Tamper;
    if !device_or_skip() {
        return;
    }
    let builds: [fn(Tamper, tpde_format::Dtype) -> Vec<u8>; 2] =
        [common::tampered, common::tampered_wide];
    for (t, build) in [Tamper::RansFlip, Tamper::RansShort]
        .into_iter()
        .flat_map(|t| builds.map(|b| (t, b)))
    {
        for dtype in [tpde_format::Dtype::BF16, tpde_format::Dtype::F32] {
            let bytes = build(t, dtype);
            for on_device in [true, false] {
                let a = Archive::from_bytes(bytes.as_slice(), ReadLimits::default()).unwrap();
                let want = match a.decode_tensor("t1", &tpde_format::NoBase) {
                    Err(tpde_format::Error::ChunkDecode { reason, .. }) => reason,
                    r => panic!("{t:?} {dtype}: the CPU reader gives {r:?}"),
                };
                let opts = GpuOptions::default().with_entropy_on_device(on_device);
                let gpu = GpuArchive::new(a, 0, opts).unwrap();
                let err = gpu.load_all().unwrap_err();
                match &err {
                    GpuError::Format(tpde_format::Error::ChunkDecode { location, reason }) => {
                        assert!(location.to_string().contains("t1"), "{t:?}: {location}");
                        assert_eq!(*reason, want, "{t:?} {dtype} on_device={on_device}");
                    }
                    e => panic!(
                        "{t:?} on_device={on_device}: expected a chunk decode error, got {e}"
                    ),
                }
                for name in ["t0", "t2"] {
                    let dt = gpu.load(name).unwrap();
                    let cpu = gpu
                        .archive()
                        .decode_tensor(name, &tpde_format::NoBase)
                        .unwrap();
                    assert_eq!(sha(&dt.copy_to_host().unwrap()), sha(&cpu), "{name}");
                }
            }
        }
    }
}

/// Every 16-bit pattern (bf16 and f16: subnormals, infinities, NaN payloads)
/// and f32 edge patterns, widened on the device, must equal the format's
/// bit rules; the delta then applies on top.
#[test]
fn widening_every_half_pattern() {
    use common::{BaseKind, Rng, Spec};
    use tpde_format::format::{Dtype, Op};
    if !device_or_skip() {
        return;
    }
    let mut rng = Rng::new(5);
    let halves: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    let mut f32s: Vec<u8> = Vec::new();
    for bits in [
        0u32,
        1,
        2,
        3,
        0x7f_ffff,
        0x40_0000,
        0x80_0001,
        0x7f80_0000,
        0x7f80_0001,
        0x7fc0_0000,
        0xff80_0000,
        0x0080_0000,
        0x3f80_0000,
    ] {
        for sign in [0u32, 0x8000_0000] {
            f32s.extend_from_slice(&(bits | sign).to_le_bytes());
        }
    }
    f32s.extend(rng.bytes(4 * 4096));
    let mut specs = Vec::new();
    for (from, to, narrow) in [
        (Dtype::BF16, Dtype::F32, &halves),
        (Dtype::F16, Dtype::F32, &halves),
        (Dtype::BF16, Dtype::F64, &halves),
        (Dtype::F16, Dtype::F64, &halves),
        (Dtype::F32, Dtype::F64, &f32s),
    ] {
        for kind in [BaseKind::Inline { plain: false }, BaseKind::External] {
            let n = narrow.len() / from.width();
            let mut wide = vec![0u8; n * to.width()];
            tpde_format::codec::widen::widen(from, to, narrow, &mut wide);
            let target = common::perturb(&mut rng, &wide, to.width(), 4096.min(n / 5));
            specs.push(Spec {
                name: format!("{from}->{to} {kind:?}"),
                dtype: to,
                shape: vec![n as u64],
                base: Some(narrow.clone()),
                target,
                kind,
                op: Op::Xor,
                chunk_elems: 4096,
                tamper: None,
                narrow: Some(from),
                rows: None,
                quant: None,
            });
        }
    }
    let built = common::build(&specs);
    let a = Archive::from_bytes(built.bytes.as_slice(), ReadLimits::default()).unwrap();
    let gpu = GpuArchive::new(a, 0, GpuOptions::default()).unwrap();
    let got = gpu.load_all_with(&built.external).unwrap();
    for (t, dt) in got.iter().enumerate() {
        let cpu = gpu
            .archive()
            .decode_tensor(&dt.name, &built.external)
            .unwrap();
        assert_eq!(dt.copy_to_host().unwrap(), cpu, "{}", dt.name);
        assert_eq!(sha(&cpu), gpu.archive().index().tensors[t].sha256);
    }
    // The narrow base handed in on the device (borrowed; widened into a new
    // buffer).
    for (t, rec) in gpu.archive().index().tensors.iter().enumerate() {
        let bname = base_name(rec).unwrap();
        let base = upload(&gpu, &bname, t, &built.bases[&bname]);
        let out = gpu.load_onto(&rec.name, &base).unwrap();
        assert_eq!(
            sha(&out.copy_to_host().unwrap()),
            rec.sha256,
            "{} onto",
            rec.name
        );
    }
}

/// Row-mapped bases (format v1.2) from every source, through every load
/// API, bit-exact against the CPU reader: inline chunked (decoded into
/// device scratch, then copied run by run), inline plain and external
/// (predictor built on the host), and a base handed in on the device
/// (borrowed by `load_onto`, read by `load_all_onto`); includes gaps, runs
/// that start and end mid-chunk, and more one-row runs than a batch holds.
/// A device base of the wrong row count is the typed error.
#[test]
fn row_mapped_bases_on_the_device() {
    if !device_or_skip() {
        return;
    }
    for (seed, opts) in option_sets().into_iter().enumerate() {
        let built = common::build(&common::row_specs(&mut common::Rng::new(seed as u64 + 61)));
        let a = Archive::from_bytes(built.bytes.as_slice(), ReadLimits::default()).unwrap();
        let gpu = GpuArchive::new(a, 0, opts.clone()).unwrap();
        let cpu: Vec<Vec<u8>> = gpu
            .archive()
            .index()
            .tensors
            .iter()
            .map(|t| {
                gpu.archive()
                    .decode_tensor(&t.name, &built.external)
                    .unwrap()
            })
            .collect();
        let got = gpu.load_all_with(&built.external).unwrap();
        for (t, dt) in got.iter().enumerate() {
            assert_eq!(dt.copy_to_host().unwrap(), cpu[t], "{} {opts:?}", dt.name);
            assert_eq!(sha(&cpu[t]), gpu.archive().index().tensors[t].sha256);
        }
        let n = gpu.archive().index().tensors.len();
        let mut bases = HashMap::new();
        for (t, want) in cpu.iter().enumerate() {
            let rec = gpu.archive().index().tensors[t].clone();
            let bname = base_name(&rec).unwrap();
            let base = upload(&gpu, &bname, t, &built.bases[&bname]);
            let out = gpu.load_onto(&rec.name, &base).unwrap();
            assert_eq!(&out.copy_to_host().unwrap(), want, "{} onto", rec.name);
            assert_eq!(
                base.copy_to_host().unwrap(),
                built.bases[&bname],
                "{}: base changed",
                rec.name
            );
            bases.insert(bname, base);
        }
        let got = gpu.load_all_onto(bases).unwrap();
        assert_eq!(got.len(), n);
        for (t, dt) in got.iter().enumerate() {
            assert_eq!(dt.copy_to_host().unwrap(), cpu[t], "{} all onto", dt.name);
        }
    }
    // The target's shape instead of the base's (other row count).
    let built = common::build(&common::row_specs(&mut common::Rng::new(71)));
    let a = Archive::from_bytes(built.bytes.as_slice(), ReadLimits::default()).unwrap();
    let gpu = GpuArchive::new(a, 0, GpuOptions::default()).unwrap();
    let (t, rec) = gpu
        .archive()
        .index()
        .tensors
        .iter()
        .enumerate()
        .find(|(_, r)| r.name.starts_with("rows.pruned"))
        .unwrap();
    let bname = base_name(rec).unwrap();
    let wrong = vec![0u8; rec.byte_len().unwrap() as usize];
    let mut base = upload(&gpu, &bname, t, &wrong);
    base.shape = rec.shape.clone();
    let err = gpu.load_onto(&rec.name, &base).unwrap_err();
    assert!(matches!(err, GpuError::DeviceBase { .. }), "{err}");
    let err = gpu
        .load_all_onto(HashMap::from([(bname.clone(), base)]))
        .unwrap_err();
    assert!(matches!(err, GpuError::DeviceBase { .. }), "{err}");
}

/// A quantized base's codes and scales as device tensors, under the names
/// the archive gives them.
fn upload_dequant(
    gpu: &GpuArchive<&[u8]>,
    built: &common::Built,
    t: usize,
) -> (DeviceTensor, DeviceTensor) {
    let a = gpu.archive();
    let rec = &a.index().tensors[t];
    let (qn, sn) = tpde_gpu::plan::dequant_names(a, t).unwrap();
    let q = DeviceTensor {
        name: qn.to_owned(),
        dtype: tpde_gpu::plan::base_dtype(a, t).unwrap(),
        shape: rec.shape.clone(),
        buffer: DeviceBuffer::from_host(gpu.context(), &built.bases[qn]).unwrap(),
    };
    let s = DeviceTensor {
        name: sn.to_owned(),
        dtype: tpde_format::Dtype::F32,
        shape: tpde_gpu::plan::dequant_scale_shape(a, t).unwrap().to_vec(),
        buffer: DeviceBuffer::from_host(gpu.context(), &built.bases[sn]).unwrap(),
    };
    (q, s)
}

/// Quantized bases (format v1.2) from every source, through every load
/// API, bit-exact against the CPU reader: inline codes and scales each
/// plain (staged) or chunked (decoded into device scratch), external
/// (staged), and codes and scales handed in on the device (borrowed by
/// `load_onto_quantized`, read by `load_all_onto`, both left unchanged);
/// every axis, I8 and U8, special scales, chunks starting mid-row, rows
/// longer than a chunk and than a job. `load_onto` refuses a quantized
/// target, and a half pair or a wrong scale shape is the typed error.
#[test]
fn dequant_bases_on_the_device() {
    if !device_or_skip() {
        return;
    }
    let long_row = tpde_gpu::plan::DEQUANT_PIECE + 4000;
    for (seed, opts) in option_sets().into_iter().enumerate() {
        let mut rng = common::Rng::new(seed as u64 + 81);
        let mut specs = common::dequant_specs(&mut rng, long_row);
        if seed == 0 {
            specs.extend(common::every_code_times_many_scales(&mut rng));
        }
        let built = common::build(&specs);
        let a = Archive::from_bytes(built.bytes.as_slice(), ReadLimits::default()).unwrap();
        let gpu = GpuArchive::new(a, 0, opts.clone()).unwrap();
        let names: Vec<String> = gpu
            .archive()
            .index()
            .tensors
            .iter()
            .map(|t| t.name.clone())
            .collect();
        let cpu: Vec<Vec<u8>> = names
            .iter()
            .map(|n| gpu.archive().decode_tensor(n, &built.external).unwrap())
            .collect();
        let got = gpu.load_all_with(&built.external).unwrap();
        for (t, dt) in got.iter().enumerate() {
            assert_eq!(dt.copy_to_host().unwrap(), cpu[t], "{} {opts:?}", dt.name);
            assert_eq!(sha(&cpu[t]), gpu.archive().index().tensors[t].sha256);
        }
        drop(got);
        let mut bases = HashMap::new();
        for (t, want) in cpu.iter().enumerate() {
            let (q, s) = upload_dequant(&gpu, &built, t);
            let out = gpu.load_onto_quantized(&names[t], &q, &s).unwrap();
            assert_eq!(&out.copy_to_host().unwrap(), want, "{} onto", names[t]);
            assert_eq!(
                q.copy_to_host().unwrap(),
                built.bases[&q.name],
                "codes changed"
            );
            assert_eq!(
                s.copy_to_host().unwrap(),
                built.bases[&s.name],
                "scales changed"
            );
            if t == 0 {
                let err = gpu.load_onto(&names[t], &q).unwrap_err();
                assert!(matches!(err, GpuError::DeviceBase { .. }), "{err}");
            }
            bases.insert(q.name.clone(), q);
            bases.insert(s.name.clone(), s);
        }
        let got = gpu.load_all_onto(bases).unwrap();
        for (t, dt) in got.iter().enumerate() {
            assert_eq!(dt.copy_to_host().unwrap(), cpu[t], "{} all onto", dt.name);
        }
    }
    // Typed errors: scales of the wrong shape; codes without their scales.
    let built = common::build(&common::dequant_specs(&mut common::Rng::new(91), 100));
    let a = Archive::from_bytes(built.bytes.as_slice(), ReadLimits::default()).unwrap();
    let gpu = GpuArchive::new(a, 0, GpuOptions::default()).unwrap();
    let t = gpu.archive().tensor_index("dq.rows.external").unwrap();
    let (q, mut s) = upload_dequant(&gpu, &built, t);
    s.shape = vec![s.shape[0] - 1];
    let err = gpu
        .load_onto_quantized("dq.rows.external", &q, &s)
        .unwrap_err();
    assert!(matches!(err, GpuError::DeviceBase { .. }), "{err}");
    let qname = q.name.clone();
    let err = gpu.load_all_onto(HashMap::from([(qname, q)])).unwrap_err();
    assert!(matches!(err, GpuError::DeviceBase { .. }), "{err}");
}

/// `RansBase` planes (format v1.2, spec §5.7) in dense and sparse chunks
/// over plain, widened, row-mapped and quantized bases, each inline
/// chunked, inline plain and external: loaded with host bases (context
/// from host bytes, or inline base chunks decoded on the CPU), onto
/// borrowed device bases (`load_onto`, `load_onto_quantized`: context
/// bytes copied device -> host, bases unchanged) and with every base
/// handed over at once (`load_all_onto`, in place where the base fits),
/// bit-exact against the CPU reader.
#[test]
fn base_context_planes_on_the_device() {
    if !device_or_skip() {
        return;
    }
    for (seed, opts) in option_sets().into_iter().enumerate() {
        let built = common::build(&common::base_ctx_specs(&mut common::Rng::new(
            seed as u64 + 101,
        )));
        let a = Archive::from_bytes(built.bytes.as_slice(), ReadLimits::default()).unwrap();
        assert!(a.index().uses_base_context());
        let gpu = GpuArchive::new(a, 0, opts.clone()).unwrap();
        let names: Vec<String> = gpu
            .archive()
            .index()
            .tensors
            .iter()
            .map(|t| t.name.clone())
            .collect();
        let cpu: Vec<Vec<u8>> = names
            .iter()
            .map(|n| gpu.archive().decode_tensor(n, &built.external).unwrap())
            .collect();
        let got = gpu.load_all_with(&built.external).unwrap();
        for (t, dt) in got.iter().enumerate() {
            assert_eq!(dt.copy_to_host().unwrap(), cpu[t], "{} {opts:?}", dt.name);
        }
        drop(got);
        let mut bases = HashMap::new();
        for (t, want) in cpu.iter().enumerate() {
            if tpde_gpu::plan::dequant_names(gpu.archive(), t).is_some() {
                let (q, s) = upload_dequant(&gpu, &built, t);
                let out = gpu.load_onto_quantized(&names[t], &q, &s).unwrap();
                assert_eq!(&out.copy_to_host().unwrap(), want, "{} onto", names[t]);
                assert_eq!(q.copy_to_host().unwrap(), built.bases[&q.name]);
                assert_eq!(s.copy_to_host().unwrap(), built.bases[&s.name]);
                bases.insert(q.name.clone(), q);
                bases.insert(s.name.clone(), s);
                continue;
            }
            let rec = gpu.archive().index().tensors[t].clone();
            let bname = base_name(&rec).unwrap();
            let base = upload(&gpu, &bname, t, &built.bases[&bname]);
            let out = gpu.load_onto(&rec.name, &base).unwrap();
            assert_eq!(
                &out.copy_to_host().unwrap(),
                want,
                "{} onto {opts:?}",
                rec.name
            );
            assert_eq!(base.copy_to_host().unwrap(), built.bases[&bname]);
            bases.insert(bname, base);
        }
        let got = gpu.load_all_onto(bases).unwrap();
        for (t, dt) in got.iter().enumerate() {
            assert_eq!(
                dt.copy_to_host().unwrap(),
                cpu[t],
                "{} all onto {opts:?}",
                dt.name
            );
        }
    }
}

/// 32-state rANS planes (format 1.6) decoded on the device, one warp per
/// chunk, beside 4-state planes in the same launches: the matrix (every
/// width, op and base mode) and the base-context fixture (`RansBase32`
/// planes, dense and sparse) with host bases and with every base handed
/// over on the device (`load_all_onto`: the context read from device
/// memory), and an archive the public writer packed with 65,536-element
/// chunks; every option set, byte-for-byte against the CPU reader.
#[test]
fn wide_planes_on_the_device() {
    if !device_or_skip() {
        return;
    }
    for (seed, opts) in option_sets().into_iter().enumerate() {
        let seed = seed as u64;
        for built in [common::wide_matrix(seed + 61), common::wide_ctx(seed + 71)] {
            let a = Archive::from_bytes(built.bytes.as_slice(), ReadLimits::default()).unwrap();
            assert!(!common::wide_chunks(a.index()).is_empty());
            let gpu = GpuArchive::new(a, 0, opts.clone()).unwrap();
            let n = gpu.archive().index().tensors.len();
            let cpu: Vec<Vec<u8>> = (0..n)
                .map(|t| {
                    let name = &gpu.archive().index().tensors[t].name;
                    gpu.archive().decode_tensor(name, &built.external).unwrap()
                })
                .collect();
            let got = gpu.load_all_with(&built.external).unwrap();
            for (t, dt) in got.iter().enumerate() {
                assert!(dt.copy_to_host().unwrap() == cpu[t], "{} {opts:?}", dt.name);
            }
            drop(got);
            let mut bases = HashMap::new();
            for t in 0..n {
                if tpde_gpu::plan::dequant_names(gpu.archive(), t).is_some() {
                    let (q, s) = upload_dequant(&gpu, &built, t);
                    bases.insert(q.name.clone(), q);
                    bases.insert(s.name.clone(), s);
                } else if let Some(bname) = base_name(&gpu.archive().index().tensors[t]) {
                    let b = upload(&gpu, &bname, t, &built.bases[&bname]);
                    bases.insert(bname, b);
                }
            }
            let got = gpu.load_all_onto(bases).unwrap();
            for (t, dt) in got.iter().enumerate() {
                assert!(
                    dt.copy_to_host().unwrap() == cpu[t],
                    "{} all onto {opts:?}",
                    dt.name
                );
            }
        }
    }
    // The writer's archive, and (v1.6) one whose constant plane, labelled
    // 4-state, sits beside a 32-state plane in one chunk (a device job).
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2) = (tmp.path().join("writer"), tmp.path().join("const"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    for (path, host_bases) in [
        common::wide_writer_archive(&d1),
        common::constant_beside_wide_archive(&d2),
    ] {
        let bytes = std::fs::read(&path).unwrap();
        for opts in option_sets() {
            let a = Archive::from_bytes(bytes.as_slice(), ReadLimits::default()).unwrap();
            let gpu = GpuArchive::new(a, 0, opts.clone()).unwrap();
            let n = gpu.archive().index().tensors.len();
            let cpu: Vec<Vec<u8>> = (0..n)
                .map(|t| {
                    let name = &gpu.archive().index().tensors[t].name;
                    gpu.archive()
                        .decode_tensor(name, &tpde_format::NoBase)
                        .unwrap()
                })
                .collect();
            let got = gpu.load_all().unwrap();
            for (t, dt) in got.iter().enumerate() {
                assert!(dt.copy_to_host().unwrap() == cpu[t], "{} {opts:?}", dt.name);
            }
            drop(got);
            let mut bases = HashMap::new();
            for t in 0..n {
                let bname = tpde_gpu::plan::base_name(gpu.archive(), t)
                    .unwrap()
                    .to_owned();
                let b = upload(&gpu, &bname, t, &host_bases[&bname]);
                bases.insert(bname, b);
            }
            let got = gpu.load_all_onto(bases).unwrap();
            for (t, dt) in got.iter().enumerate() {
                assert!(
                    dt.copy_to_host().unwrap() == cpu[t],
                    "{} writer archive all onto {opts:?}",
                    dt.name
                );
            }
        }
    }
}
