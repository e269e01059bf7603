//! The pipeline's CPU mirror against `tpde_format`'s CPU reader, on every
//! dtype width, chunk kind, combine op and base mode. Runs everywhere (CI
//! has no GPU): it checks the plan, the batching, the staging code and the
//! kernels' per-element logic that the GPU path shares.

mod common;

use std::collections::HashMap;

use sha2::{Digest as _, Sha256};
use tpde_format::format::{ChunkKind, Op};
use tpde_format::{Archive, ReadLimits};
use tpde_gpu::plan::{EntropyOnDevice, PlanOptions};
use tpde_gpu::reference::{reconstruct, BaseMode};
use tpde_gpu::GpuError;

/// Both ways of staging sparse positions, and the ways of entropy
/// decoding rANS planes (device kernel mirror for every chunk, CPU decode
/// into staging, the mirror for 32-state chunks only).
const PLANS: [PlanOptions; 4] = [
    PlanOptions {
        positions_on_device: true,
        entropy_on_device: EntropyOnDevice::All,
    },
    PlanOptions {
        positions_on_device: false,
        entropy_on_device: EntropyOnDevice::All,
    },
    PlanOptions {
        positions_on_device: true,
        entropy_on_device: EntropyOnDevice::Never,
    },
    PlanOptions {
        positions_on_device: true,
        entropy_on_device: EntropyOnDevice::Wide,
    },
];

fn open(bytes: &[u8]) -> Archive<&[u8]> {
    Archive::from_bytes(bytes, ReadLimits::default()).unwrap()
}

#[test]
fn matrix_covers_every_kind_and_op() {
    let built = common::build(&common::matrix(1));
    let a = open(&built.bytes);
    let seen = common::coverage(a.index());
    for kind in [ChunkKind::Dense, ChunkKind::Sparse] {
        for op in [Op::Xor, Op::Add, Op::Replace, Op::AddZigzag, Op::ReplaceRot] {
            assert!(seen.contains(&(kind, op)), "no {kind:?} {op:?} chunk");
        }
    }
    assert!(seen.contains(&(ChunkKind::Zero, Op::Xor)));
    // Widened bases (v1.1): inline chunked, inline plain and external.
    let idx = a.index();
    let widened_inline: Vec<_> = idx
        .tensors
        .iter()
        .filter_map(|t| match t.base {
            tpde_format::format::BaseRef::InlineWidened { index } => Some(matches!(
                idx.bases[index as usize].payload,
                tpde_format::format::Payload::Plain { .. }
            )),
            _ => None,
        })
        .collect();
    assert!(widened_inline.contains(&true) && widened_inline.contains(&false));
    assert!(idx
        .tensors
        .iter()
        .any(|t| matches!(t.base, tpde_format::format::BaseRef::ExternalWidened { .. })));
}

/// A descriptor limit the row-map fixture's one-row runs exceed, so that
/// batches spill on it (the pipeline's own limit,
/// `plan::MAX_JOBS_PER_BATCH`, is larger: device entropy decoding wants
/// thousands of chunks per launch).
const SPILL_DESCS: usize = 1024;

/// Every slot size from "one job per batch" to "everything in one batch".
const SLOTS: [usize; 3] = [0, 4096, 64 << 20];

#[test]
fn host_bases_match_the_cpu_reader() {
    for seed in [1, 2] {
        let built = common::build(&common::matrix(seed));
        let a = open(&built.bytes);
        for (slot, plan) in SLOTS.into_iter().flat_map(|s| PLANS.map(|p| (s, p))) {
            let got = reconstruct(
                &a,
                BaseMode::Host(&built.external),
                &HashMap::new(),
                slot,
                plan,
            )
            .unwrap();
            for (t, bytes) in got.iter().enumerate() {
                let rec = &a.index().tensors[t];
                let want = a.decode_tensor(&rec.name, &built.external).unwrap();
                assert_eq!(bytes, &want, "{} slot {slot} {plan:?}", rec.name);
                let d: [u8; 32] = Sha256::digest(bytes).into();
                assert_eq!(d, rec.sha256, "{}", rec.name);
            }
        }
    }
}

#[test]
fn device_bases_borrowed_and_in_place_match_the_cpu_reader() {
    let built = common::build(&common::matrix(3));
    let a = open(&built.bytes);
    for mode in [BaseMode::DeviceBorrowed, BaseMode::DeviceInPlace] {
        for (slot, plan) in SLOTS.into_iter().flat_map(|s| PLANS.map(|p| (s, p))) {
            let got = reconstruct(&a, mode, &built.bases, slot, plan).unwrap();
            for (t, bytes) in got.iter().enumerate() {
                let rec = &a.index().tensors[t];
                let want = a.decode_tensor(&rec.name, &built.external).unwrap();
                assert_eq!(bytes, &want, "{} {mode:?} slot {slot} {plan:?}", rec.name);
            }
        }
    }
}

#[test]
fn a_wrong_sized_device_base_is_a_typed_error() {
    let built = common::build(&common::matrix(4));
    let a = open(&built.bytes);
    let mut bases = built.bases.clone();
    let (name, b) = bases.iter_mut().find(|(_, b)| b.len() > 8).unwrap();
    let name = name.clone();
    b.pop();
    let err = reconstruct(&a, BaseMode::DeviceInPlace, &bases, 0, PLANS[0]).unwrap_err();
    assert!(matches!(&err, GpuError::DeviceBase { .. }), "{name}: {err}");
}

#[test]
fn a_corrupt_chunk_names_tensor_and_chunk() {
    let built = common::build(&common::matrix(5));
    let a = open(&built.bytes);
    // Flip a byte inside the first stored blob of a chunked target.
    let (name, off) = a
        .index()
        .tensors
        .iter()
        .find_map(|t| match &t.payload {
            tpde_format::format::Payload::Chunked { chunks, .. } => chunks
                .iter()
                .find(|c| c.stored_len > 0)
                .map(|c| (t.name.clone(), c.offset)),
            _ => None,
        })
        .unwrap();
    let mut bytes = built.bytes.clone();
    bytes[off as usize] ^= 0x40;
    let a = open(&bytes);
    let err = reconstruct(
        &a,
        BaseMode::Host(&built.external),
        &HashMap::new(),
        0,
        PLANS[0],
    )
    .unwrap_err();
    match err {
        GpuError::Format(tpde_format::Error::ChunkChecksum { location, .. }) => {
            assert!(location.to_string().contains(&name), "{location}");
        }
        e => panic!("expected a chunk checksum error, got {e}"),
    }
}

#[test]
fn a_missing_external_base_is_a_typed_error() {
    let built = common::build(&common::matrix(6));
    let a = open(&built.bytes);
    let err = reconstruct(
        &a,
        BaseMode::Host(&tpde_format::NoBase),
        &HashMap::new(),
        0,
        PLANS[0],
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            GpuError::Format(tpde_format::Error::MissingBase { .. })
        ),
        "{err}"
    );
}

/// The real fine-tune pair from ../shared (skipped when absent), packed with
/// the public writer, through the mirror.
#[test]
fn real_fine_tune_pair_matches() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/ft");
    let base = dir.join("ftA.full.step560.bf16.safetensors");
    let target = dir.join("ftA.full.step700.bf16.safetensors");
    if !base.exists() || !target.exists() {
        println!("skipped: ../shared not present");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ft.tpde");
    let t = tpde_format::safetensors::Checkpoint::open(&target).unwrap();
    let b = tpde_format::safetensors::Checkpoint::open(&base).unwrap();
    tpde_format::pack::pack(&t, Some(&b), &out, &Default::default(), &mut |_| {}).unwrap();
    let a = Archive::open(&out).unwrap();
    let got = reconstruct(
        &a,
        BaseMode::Host(&tpde_format::NoBase),
        &HashMap::new(),
        0,
        PLANS[0],
    )
    .unwrap();
    for (i, bytes) in got.iter().enumerate() {
        let d: [u8; 32] = Sha256::digest(bytes).into();
        assert_eq!(
            d,
            a.index().tensors[i].sha256,
            "{}",
            a.index().tensors[i].name
        );
    }
}

/// Positions streams that pass their CRC but break the format: both staging
/// ways (CPU decode, device decode mirrored here) refuse them with the
/// chunk's typed error, as the CPU reader does.
#[test]
fn hostile_positions_are_refused_in_both_modes() {
    use common::Tamper;
    for t in [
        Tamper::PastEnd,
        Tamper::EndsEarly,
        Tamper::TooLong,
        Tamper::Trailing,
    ] {
        for dtype in [tpde_format::Dtype::U8, tpde_format::Dtype::BF16] {
            let bytes = common::tampered(t, dtype);
            let a = open(&bytes);
            assert!(
                a.decode_tensor("t1", &tpde_format::NoBase).is_err(),
                "{t:?}: the CPU reader accepts it, so the test proves nothing"
            );
            for plan in PLANS {
                let err = reconstruct(
                    &a,
                    BaseMode::Host(&tpde_format::NoBase),
                    &HashMap::new(),
                    0,
                    plan,
                )
                .unwrap_err();
                match &err {
                    GpuError::Format(tpde_format::Error::ChunkDecode { location, .. }) => {
                        assert!(location.to_string().contains("t1"), "{t:?}: {location}")
                    }
                    e => panic!("{t:?} {plan:?}: expected a chunk decode error, got {e}"),
                }
            }
        }
    }
}

fn row_archive(seed: u64) -> common::Built {
    common::build(&common::row_specs(&mut common::Rng::new(seed)))
}

/// The row-mapped fixtures (format v1.2) and sliced ones (v1.5) hold what
/// the tests below claim to cover: every base source for both, gaps, runs
/// that start or end mid-chunk, more one-row runs than a batch holds jobs,
/// and (sliced) runs out of base order and base rows used twice.
#[test]
fn row_mapped_fixtures_cover_every_source_and_shape() {
    use tpde_format::format::{BaseRef, Payload};
    let built = row_archive(1);
    let a = open(&built.bytes);
    let idx = a.index();
    let mut sources = (false, false, false);
    let mut sliced_sources = (false, false, false);
    let (mut gaps, mut mid_chunk, mut many) = (false, false, false);
    let (mut out_of_order, mut reused) = (false, false);
    for t in &idx.tensors {
        let Some((runs, row_elems)) = t.base.row_map(&t.shape) else {
            continue;
        };
        let plain = |i: &u32| matches!(idx.bases[*i as usize].payload, Payload::Plain { .. });
        match &t.base {
            BaseRef::InlineRows { index, .. } if plain(index) => sources.0 = true,
            BaseRef::InlineRows { .. } => sources.1 = true,
            BaseRef::ExternalRows { .. } => sources.2 = true,
            BaseRef::InlineSlices { index, .. } if plain(index) => sliced_sources.0 = true,
            BaseRef::InlineSlices { .. } => sliced_sources.1 = true,
            BaseRef::ExternalSlices { .. } => sliced_sources.2 = true,
            _ => {}
        }
        if t.base.is_v15() {
            out_of_order |= runs.windows(2).any(|p| p[1].base_start < p[0].base_start);
            reused |= runs.iter().enumerate().any(|(i, a)| {
                runs[i + 1..].iter().any(|b| {
                    a.base_start < b.base_start + b.count && b.base_start < a.base_start + a.count
                })
            });
        }
        let rows = t.shape.iter().product::<u64>() / row_elems.max(1);
        gaps |= runs.iter().map(|r| r.count).sum::<u64>() < rows;
        if let Payload::Chunked { chunk_elems, .. } = t.payload {
            mid_chunk |= runs.iter().any(|r| {
                (r.start * row_elems) % chunk_elems != 0
                    && ((r.start + r.count) * row_elems) % chunk_elems != 0
            });
        }
        many |= runs.len() > SPILL_DESCS;
    }
    assert_eq!(sources, (true, true, true));
    assert_eq!(sliced_sources, (true, true, true));
    assert!(gaps && mid_chunk && many && out_of_order && reused);
    // The whole matrix carries them too (every other test sees them).
    let m = common::build(&common::matrix(1));
    assert!(open(&m.bytes)
        .index()
        .tensors
        .iter()
        .any(|t| t.base.rows().is_some()));
}

/// Row-mapped bases from every source (inline chunked: decoded into device
/// scratch, then copied row run by row run; inline plain and external:
/// predictor built on the host; on the device: copied from the caller's
/// buffer, borrowed or handed over) against the CPU reader.
#[test]
fn row_mapped_bases_match_the_cpu_reader_in_every_mode() {
    let built = row_archive(2);
    let a = open(&built.bytes);
    for mode in [
        BaseMode::Host(&built.external),
        BaseMode::DeviceBorrowed,
        BaseMode::DeviceInPlace,
    ] {
        for (slot, plan) in SLOTS.into_iter().flat_map(|s| PLANS.map(|p| (s, p))) {
            let got = reconstruct(&a, mode, &built.bases, slot, plan).unwrap();
            for (t, bytes) in got.iter().enumerate() {
                let rec = &a.index().tensors[t];
                let want = a.decode_tensor(&rec.name, &built.external).unwrap();
                assert_eq!(bytes, &want, "{} {mode:?} slot {slot} {plan:?}", rec.name);
                let d: [u8; 32] = Sha256::digest(bytes).into();
                assert_eq!(d, rec.sha256, "{}", rec.name);
            }
        }
    }
}

/// Many one-row runs give more row-copy jobs than one batch holds; they
/// spill into several batches, each a plain launch of independent copies.
#[test]
fn many_one_row_runs_span_several_batches() {
    use tpde_gpu::plan::{self, JobKind};
    let built = row_archive(3);
    let a = open(&built.bytes);
    let t = a
        .tensor_index("rows.one-row-runs.Inline { plain: false }")
        .unwrap();
    let base = plan::device_base_plan(&a, t, 1 << 40);
    let mut jobs = Vec::new();
    plan::tensor_jobs(&a, t, 2 << 40, base, PLANS[0], &mut jobs).unwrap();
    let fills = jobs.iter().filter(|j| j.kind == JobKind::Fill).count();
    assert!(fills > SPILL_DESCS, "{fills} fills");
    let batches = plan::make_batches_limited(&jobs, 64 << 20, 64 << 20, SPILL_DESCS).unwrap();
    let with_fills = batches
        .iter()
        .filter(|b| b.phase1.iter().any(|&j| jobs[j].kind == JobKind::Fill))
        .count();
    assert!(with_fills >= 2, "{with_fills} batches");
    assert!(batches.iter().all(|b| b.phase1.len() <= SPILL_DESCS));
}

/// A device base for a row-mapped tensor must have the base's row count;
/// one of the target's size is the typed error, in both device modes.
#[test]
fn a_wrong_shape_row_mapped_device_base_is_a_typed_error() {
    let built = row_archive(4);
    let a = open(&built.bytes);
    let rec = a
        .index()
        .tensors
        .iter()
        .find(|t| t.name.starts_with("rows.pruned"))
        .unwrap();
    let bname = format!("{}.base", rec.name);
    let mut bases = built.bases.clone();
    // Target-sized (40 rows) instead of the base's 60.
    bases.insert(bname, vec![0u8; rec.byte_len().unwrap() as usize]);
    for mode in [BaseMode::DeviceBorrowed, BaseMode::DeviceInPlace] {
        let err = reconstruct(&a, mode, &bases, 0, PLANS[0]).unwrap_err();
        match &err {
            GpuError::DeviceBase { tensor, .. } => assert_eq!(tensor, &rec.name),
            e => panic!("{mode:?}: expected a device base error, got {e}"),
        }
    }
}

fn dequant_archive(seed: u64) -> common::Built {
    let long_row = tpde_gpu::plan::DEQUANT_PIECE + 4000;
    common::build(&common::dequant_specs(
        &mut common::Rng::new(seed),
        long_row,
    ))
}

/// The quantized fixtures (format v1.2) hold what the tests below claim to
/// cover: every source (codes and scales each plain or chunked inline, and
/// external), every axis, I8 and U8 codes, chunks starting mid-row, a
/// per-column tensor whose rows are longer than a chunk and than a dequant
/// job, and predictors that hit the special cases: canonical NaN from NaN
/// payloads and from inf × 0, ±inf, subnormal and signed-zero products.
#[test]
fn dequant_fixtures_cover_every_source_axis_and_special_value() {
    use tpde_format::codec::dequant::{self, CANONICAL_NAN};
    use tpde_format::format::{BaseRef, Dtype, Payload, ScaleAxis};
    let specs = common::dequant_specs(&mut common::Rng::new(1), 70_000);
    let built = common::build(&specs);
    let a = open(&built.bytes);
    let idx = a.index();
    let plain = |i: u32| matches!(idx.bases[i as usize].payload, Payload::Plain { .. });
    let mut sources = std::collections::HashSet::new();
    let mut axes = std::collections::HashSet::new();
    let mut dtypes = std::collections::HashSet::new();
    let (mut mid_row, mut long_rows, mut longer_than_job) = (false, false, false);
    for t in &idx.tensors {
        let axis = match &t.base {
            BaseRef::InlineDequant { q, scale, axis } => {
                sources.insert((plain(*q), plain(*scale)));
                dtypes.insert(idx.bases[*q as usize].dtype);
                *axis
            }
            BaseRef::ExternalDequant { q_dtype, axis, .. } => {
                dtypes.insert(*q_dtype);
                *axis
            }
            _ => continue,
        };
        axes.insert(axis);
        let row: u64 = t.shape.iter().skip(1).product();
        if let Payload::Chunked {
            chunk_elems,
            chunks,
            ..
        } = &t.payload
        {
            mid_row |= t.shape.len() > 1 && chunks.iter().any(|c| c.elem_start % row != 0);
            long_rows |= axis == ScaleAxis::Columns && t.shape.len() > 1 && row > *chunk_elems;
        }
        longer_than_job |= axis == ScaleAxis::Columns && row > tpde_gpu::plan::DEQUANT_PIECE;
    }
    assert_eq!(sources.len(), 4, "{sources:?}");
    assert!(idx
        .tensors
        .iter()
        .any(|t| matches!(t.base, BaseRef::ExternalDequant { .. })));
    assert_eq!(axes.len(), 3);
    assert!(dtypes.contains(&Dtype::I8) && dtypes.contains(&Dtype::U8));
    assert!(mid_row && long_rows && longer_than_job);
    // Special products, from the fixtures' own codes and scales.
    let mut seen = [false; 6]; // canon NaN from payload, inf*0, ±inf, subnormal, -0, +0
    for s in &specs {
        let q = s.quant.as_ref().unwrap();
        let row = tpde_format::codec::rows::row_bytes(&s.shape, 1).unwrap_or(0);
        for (i, &c) in q.q.iter().enumerate() {
            let k = match q.axis {
                ScaleAxis::Tensor => 0,
                ScaleAxis::Rows => i / row as usize,
                ScaleAxis::Columns => i % row as usize,
            };
            let sb = u32::from_le_bytes(q.scales[4 * k..4 * k + 4].try_into().unwrap());
            let p = dequant::dequant(c, q.signed, f32::from_bits(sb));
            let sf = f32::from_bits(sb);
            seen[0] |= p == CANONICAL_NAN && sf.is_nan() && sb != CANONICAL_NAN;
            seen[1] |= p == CANONICAL_NAN && sf.is_infinite() && c == 0;
            seen[2] |= f32::from_bits(p).is_infinite();
            seen[3] |= f32::from_bits(p).is_subnormal();
            seen[4] |= p == 0x8000_0000;
            seen[5] |= p == 0;
        }
    }
    assert_eq!(seen, [true; 6]);
}

/// Quantized bases from every source — inline codes and scales each plain
/// (staged) or chunked (decoded into device scratch), external (staged),
/// and on the device (codes and scales handed in, read in both device
/// modes) — against the CPU reader, at every slot size and both ways of
/// staging positions.
#[test]
fn dequant_bases_match_the_cpu_reader_in_every_mode() {
    let built = dequant_archive(2);
    let a = open(&built.bytes);
    let want: Vec<Vec<u8>> = a
        .index()
        .tensors
        .iter()
        .map(|t| a.decode_tensor(&t.name, &built.external).unwrap())
        .collect();
    for mode in [
        BaseMode::Host(&built.external),
        BaseMode::DeviceBorrowed,
        BaseMode::DeviceInPlace,
    ] {
        for (slot, plan) in SLOTS.into_iter().flat_map(|s| PLANS.map(|p| (s, p))) {
            let got = reconstruct(&a, mode, &built.bases, slot, plan).unwrap();
            for (t, bytes) in got.iter().enumerate() {
                let rec = &a.index().tensors[t];
                assert_eq!(
                    bytes, &want[t],
                    "{} {mode:?} slot {slot} {plan:?}",
                    rec.name
                );
                let d: [u8; 32] = Sha256::digest(bytes).into();
                assert_eq!(d, rec.sha256, "{}", rec.name);
            }
        }
    }
}

/// The plan stages what a dequant job reads from the host — its codes and
/// only the scales it uses — and nothing for what lives on the device; a
/// per-column job never needs more scales than it has elements.
#[test]
fn dequant_jobs_stage_codes_and_only_the_scales_they_use() {
    use tpde_gpu::plan::{self, Input, JobKind, Piece, DEQUANT_PIECE};
    let built = dequant_archive(3);
    let a = open(&built.bytes);
    let t = a
        .tensor_index("dq.columns-longer-than-a-job.external")
        .unwrap();
    let base = plan::host_base_plan(&a, t, &built.external).unwrap();
    let mut jobs = Vec::new();
    plan::tensor_jobs(&a, t, 1 << 40, base, PLANS[0], &mut jobs).unwrap();
    let dq: Vec<_> = jobs.iter().filter(|j| j.kind == JobKind::Dequant).collect();
    assert!(dq.len() >= 4, "{} jobs", dq.len());
    for j in &dq {
        let Input::Dequant { q, scales, .. } = j.input else {
            panic!("dequant job without dequant input");
        };
        let (Piece::Host(q), Piece::Host(s)) = (q, scales) else {
            panic!("external codes and scales are staged");
        };
        assert_eq!(q.len() as u64, j.n);
        assert!(j.n <= DEQUANT_PIECE);
        assert_eq!(
            s.len() as u64,
            4 * j.n,
            "one scale per element of a row piece"
        );
    }
    // On the device: nothing staged.
    let base = plan::device_dequant_plan(&a, t, 1 << 40, 2 << 40).unwrap();
    let mut jobs = Vec::new();
    plan::tensor_jobs(&a, t, 3 << 40, base, PLANS[0], &mut jobs).unwrap();
    assert!(jobs
        .iter()
        .filter(|j| j.kind == JobKind::Dequant)
        .all(|j| j.staged == 0));
}

/// Codes and scales on the device must come as a pair and fit the archive:
/// one without the other, or scales of the wrong length, is the typed error
/// naming the target, in both device modes.
#[test]
fn a_wrong_or_missing_quantized_device_base_is_a_typed_error() {
    let built = dequant_archive(4);
    let a = open(&built.bytes);
    let name = "dq.rows.chunked";
    for mutate in 0..2 {
        let mut bases = built.bases.clone();
        if mutate == 0 {
            bases.remove(&format!("{name}.scale"));
        } else {
            bases.get_mut(&format!("{name}.scale")).unwrap().pop();
        }
        for mode in [BaseMode::DeviceBorrowed, BaseMode::DeviceInPlace] {
            let err = reconstruct(&a, mode, &bases, 0, PLANS[0]).unwrap_err();
            match &err {
                GpuError::DeviceBase { tensor, .. } => assert_eq!(tensor, name),
                e => panic!("{mode:?}: expected a device base error, got {e}"),
            }
        }
    }
}

/// Every code (I8 and U8) times special and random scales through the
/// mirror (the same fixture the GPU test multiplies with `__fmul_rn`).
#[test]
fn every_code_times_many_scales_matches_the_cpu_reader() {
    let built = common::build(&common::every_code_times_many_scales(
        &mut common::Rng::new(8),
    ));
    let a = open(&built.bytes);
    let got = reconstruct(
        &a,
        BaseMode::Host(&built.external),
        &HashMap::new(),
        0,
        PLANS[0],
    )
    .unwrap();
    for (t, bytes) in got.iter().enumerate() {
        let rec = &a.index().tensors[t];
        let d: [u8; 32] = Sha256::digest(bytes).into();
        assert_eq!(d, rec.sha256, "{}", rec.name);
    }
}

fn ctx_archive(seed: u64) -> common::Built {
    common::build(&common::base_ctx_specs(&mut common::Rng::new(seed)))
}

/// The fixture does what the tests below rely on: every tensor (plain,
/// widened, row-mapped, sliced and quantized bases, each inline chunked,
/// inline plain and external) has a dense and a sparse chunk with
/// `RansBase` planes, so `decompress_into` without the base context would
/// fail.
#[test]
fn base_context_fixtures_have_rans_base_planes_in_dense_and_sparse_chunks() {
    let built = ctx_archive(11);
    let a = open(&built.bytes);
    // The sliced bases need 1.5.
    assert_eq!(a.header().minor, 5);
    let got = common::rans_base_chunks(a.index());
    assert_eq!(got.len(), 15);
    for (name, kinds) in got {
        assert!(kinds.contains(&ChunkKind::Dense), "{name}: {kinds:?}");
        assert!(kinds.contains(&ChunkKind::Sparse), "{name}: {kinds:?}");
    }
}

/// `RansBase` planes (format v1.2) through the mirror, with host bases
/// (the context from host bytes, or from inline base chunks decoded on the
/// CPU), borrowed device bases and in-place device bases (the context read
/// from simulated device memory; the mirror also checks no such read
/// touches bytes an earlier batch writes), both ways of staging positions.
#[test]
fn base_context_planes_match_the_cpu_reader_in_every_mode() {
    assert_every_mode_matches_the_cpu_reader(&ctx_archive(12));
}

/// `built` through the mirror with host, borrowed device and in-place device
/// bases, every slot size and plan, bit-exact against the CPU reader.
fn assert_every_mode_matches_the_cpu_reader(built: &common::Built) {
    let a = open(&built.bytes);
    let want: Vec<Vec<u8>> = a
        .index()
        .tensors
        .iter()
        .map(|r| a.decode_tensor(&r.name, &built.external).unwrap())
        .collect();
    let modes = [
        BaseMode::Host(&built.external),
        BaseMode::DeviceBorrowed,
        BaseMode::DeviceInPlace,
    ];
    for mode in modes {
        for (slot, plan) in SLOTS.into_iter().flat_map(|s| PLANS.map(|p| (s, p))) {
            let got = reconstruct(&a, mode, &built.bases, slot, plan).unwrap();
            for (t, bytes) in got.iter().enumerate() {
                let name = &a.index().tensors[t].name;
                assert!(bytes == &want[t], "{name} {mode:?} slot {slot} {plan:?}");
            }
        }
    }
}

/// A `RansBase` plane decodes only with its base under it: staging with
/// the wrong base bytes on the "device" fails or gives other bytes, never
/// the target (so the mirror really reads the device base for the context).
#[test]
fn base_context_from_a_wrong_device_base_never_gives_the_target() {
    let built = ctx_archive(13);
    let a = open(&built.bytes);
    let mut bases = built.bases.clone();
    for b in bases.values_mut() {
        // Flip the top byte's lowest exponent bit of every element.
        b.iter_mut().skip(1).step_by(2).for_each(|x| *x ^= 0x01);
    }
    for mode in [BaseMode::DeviceBorrowed, BaseMode::DeviceInPlace] {
        match reconstruct(&a, mode, &bases, 0, PLANS[0]) {
            Err(e) => assert!(matches!(e, GpuError::Format(_)), "{e}"),
            Ok(got) => {
                for (t, bytes) in got.iter().enumerate() {
                    let rec = &a.index().tensors[t];
                    let d: [u8; 32] = Sha256::digest(bytes).into();
                    assert_ne!(d, rec.sha256, "{}", rec.name);
                }
            }
        }
    }
}

/// rANS planes that pass their CRC but break the bitstream (a flipped bit
/// in the last word, a dropped last word), with 4 and with 32 states:
/// refused by the device decoder's mirror with the chunk's typed error and
/// the CPU decoder's own reason, and by the CPU staging path alike.
#[test]
fn hostile_rans_planes_are_refused_like_the_cpu_reader() {
    use common::Tamper;
    let builds: [fn(Tamper, tpde_format::Dtype) -> Vec<u8>; 2] =
        [common::tampered, common::tampered_wide];
    for (t, build) in [Tamper::RansFlip, Tamper::RansShort]
        .into_iter()
        .flat_map(|t| builds.map(|b| (t, b)))
    {
        for dtype in [tpde_format::Dtype::BF16, tpde_format::Dtype::F32] {
            let bytes = build(t, dtype);
            let a = open(&bytes);
            let want = match a.decode_tensor("t1", &tpde_format::NoBase) {
                Err(tpde_format::Error::ChunkDecode { reason, .. }) => reason,
                r => panic!("{t:?} {dtype}: the CPU reader gives {r:?}"),
            };
            for plan in PLANS {
                let err = reconstruct(
                    &a,
                    BaseMode::Host(&tpde_format::NoBase),
                    &HashMap::new(),
                    0,
                    plan,
                )
                .unwrap_err();
                match &err {
                    GpuError::Format(tpde_format::Error::ChunkDecode { location, reason }) => {
                        assert!(location.to_string().contains("t1"), "{t:?}: {location}");
                        assert_eq!(*reason, want, "{t:?} {dtype} {plan:?}");
                    }
                    e => panic!("{t:?} {plan:?}: expected a chunk decode error, got {e}"),
                }
            }
        }
    }
}

/// The fixtures send rANS planes through the device entropy path: dense
/// and sparse chunks, with and without `RansBase` planes, and positions
/// staged both ways; with `entropy_on_device` off none are.
#[test]
fn rans_chunks_are_planned_for_the_device_entropy_decoder() {
    use tpde_gpu::plan::{self, BasePlan, JobKind};
    for built in [common::build(&common::matrix(3)), ctx_archive(14)] {
        let a = open(&built.bytes);
        for plan_opts in PLANS {
            let mut jobs = Vec::new();
            for t in 0..a.index().tensors.len() {
                let base = if plan::base_name(&a, t).is_some() {
                    BasePlan::InPlace
                } else {
                    BasePlan::Zero
                };
                plan::tensor_jobs(&a, t, (t as u64 + 1) << 40, base, plan_opts, &mut jobs).unwrap();
            }
            let dev: Vec<_> = jobs.iter().filter(|j| j.decoded > 0).collect();
            match plan_opts.entropy_on_device {
                EntropyOnDevice::Never => {
                    assert!(dev.is_empty());
                    continue;
                }
                // Only chunks of 32-state planes.
                EntropyOnDevice::Wide => {
                    assert!(dev.iter().all(|j| j.wide), "{plan_opts:?}");
                    continue;
                }
                EntropyOnDevice::All => {}
            }
            let kinds: Vec<JobKind> = dev.iter().map(|j| j.kind).collect();
            assert!(kinds.contains(&JobKind::Dense), "{plan_opts:?}");
            let sparse = if plan_opts.positions_on_device {
                JobKind::SparseVarint
            } else {
                JobKind::Sparse
            };
            assert!(kinds.contains(&sparse), "{plan_opts:?}");
        }
    }
    // Base-context planes: one context byte per value besides the planes.
    let built = ctx_archive(15);
    let a = open(&built.bytes);
    let mut jobs = Vec::new();
    for t in 0..a.index().tensors.len() {
        plan::tensor_jobs(
            &a,
            t,
            (t as u64 + 1) << 40,
            BasePlan::InPlace,
            PLANS[0],
            &mut jobs,
        )
        .unwrap();
    }
    assert!(jobs.iter().any(|j| {
        let vals = if j.kind == JobKind::Dense { j.n } else { j.m };
        j.decoded > 0 && j.decoded == vals as usize * (j.width + 1)
    }));
}

/// Targets sliced from one fused inline base (a fine-tune that split a
/// `qkv` weight into `q`, `k` and `v`): the loader gives them one scratch
/// buffer, decodes each of its chunks once, and only the chunks under the
/// rows its targets read — so a hostile archive of many small targets over
/// one large inline base costs the device what the reader charged at open
/// (spec §6.3.1), not the whole base once per target.
#[test]
fn targets_sliced_from_one_inline_base_decode_each_base_chunk_they_read_once() {
    use tpde_format::read::Table;
    use tpde_gpu::plan::{self, Input, Target};
    let tmp = tempfile::tempdir().unwrap();
    let (out, (rows, cols, ce)) = common::qkv_archive(tmp.path());
    let a = Archive::open(&out).unwrap();
    assert_eq!(a.index().bases.len(), 1, "one embedded base, qkv");
    let base_chunks = match &a.index().bases[0].payload {
        tpde_format::format::Payload::Chunked { chunks, .. } => chunks.len(),
        p => panic!("the embedded base is chunked, not {p:?}"),
    };
    assert_eq!(base_chunks as u64, 3 * rows * cols / ce);
    for t in &a.index().tensors {
        assert!(
            t.base.row_map(&t.shape).is_some(),
            "{} is row-mapped",
            t.name
        );
    }
    // The mirror (which shares the scratch the same way) rebuilds all three.
    let got = reconstruct(
        &a,
        BaseMode::Host(&tpde_format::NoBase),
        &HashMap::new(),
        0,
        PLANS[2],
    );
    for (i, bytes) in got.unwrap().iter().enumerate() {
        let name = &a.index().tensors[i].name;
        assert_eq!(
            bytes,
            &a.decode_tensor(name, &tpde_format::NoBase).unwrap(),
            "{name}"
        );
    }
    // The base chunks the plan of `names`, loaded together, decodes.
    let planned = |names: &[&str]| -> Vec<usize> {
        let mut shared = plan::Scratch::default();
        let mut next = 0u64;
        let targets: Vec<Target<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let t = a.tensor_index(n).unwrap();
                let base = plan::host_base_plan(&a, t, &tpde_format::NoBase).unwrap();
                let base = shared
                    .assign(&a, base, &mut |_| {
                        next += 1;
                        Ok(next << 40)
                    })
                    .unwrap();
                Target {
                    t,
                    dst: (i as u64 + 8) << 40,
                    base,
                    cut: false,
                }
            })
            .collect();
        let mut jobs = Vec::new();
        plan::targets_jobs(&a, &targets, PLANS[2], &mut jobs).unwrap();
        let mut chunks: Vec<usize> = jobs
            .iter()
            .filter_map(|j| match j.input {
                Input::Chunk {
                    table: Table::Base,
                    chunk,
                    ..
                } => Some(chunk),
                _ => None,
            })
            .collect();
        chunks.sort_unstable();
        chunks
    };
    // The jobs that decode the whole base once.
    let mut once = Vec::new();
    plan::base_tensor_jobs(&a, 0, 1 << 40, PLANS[2], &mut once).unwrap();
    let mut whole: Vec<usize> = once
        .iter()
        .filter_map(|j| match j.input {
            Input::Chunk { chunk, .. } => Some(chunk),
            _ => None,
        })
        .collect();
    whole.sort_unstable();
    assert_eq!(planned(&["q", "k", "v"]), whole, "each base chunk once");
    // `k` alone reads base rows 64..128: the middle third of the chunks.
    let per_third = base_chunks / 3;
    let middle: Vec<usize> = (per_third..2 * per_third).collect();
    let mut k = planned(&["k"]);
    k.dedup();
    assert_eq!(k, middle, "only the chunks under k's rows");
}

/// Planning tolerates bases given one scratch address (a caller's
/// placeholder, as a CPU-only timing harness uses): each base keeps its own
/// record of decoded chunks, so nothing indexes past a shorter base's record
/// or skips a longer base's chunks (found by review in session 6: the plan
/// panicked on these archives).
#[test]
fn bases_sharing_one_placeholder_address_plan_all_their_chunks() {
    use tpde_format::read::Table;
    use tpde_gpu::plan::{self, Input, Target};
    for built in [row_archive(5), dequant_archive(5)] {
        let a = open(&built.bytes);
        let base_jobs = |assign: bool| -> usize {
            let mut shared = plan::Scratch::default();
            let mut next = 0u64;
            let targets: Vec<Target<'_>> = (0..a.index().tensors.len())
                .filter_map(|t| {
                    let base = plan::host_base_plan(&a, t, &built.external).ok()?;
                    let base = if assign {
                        let mut alloc = |_| {
                            next += 1;
                            Ok(next << 40)
                        };
                        shared.assign(&a, base, &mut alloc).unwrap()
                    } else {
                        base // every scratch address 0
                    };
                    let dst = (t as u64 + 1000) << 40;
                    Some(Target {
                        t,
                        dst,
                        base,
                        cut: false,
                    })
                })
                .collect();
            let mut jobs = Vec::new();
            plan::targets_jobs(&a, &targets, PLANS[2], &mut jobs).unwrap();
            jobs.iter()
                .filter(|j| {
                    matches!(
                        j.input,
                        Input::Chunk {
                            table: Table::Base,
                            ..
                        }
                    )
                })
                .count()
        };
        let placeholder = base_jobs(false);
        assert!(placeholder > 0);
        assert_eq!(placeholder, base_jobs(true));
    }
}

/// The 32-state fixtures do what the tests below rely on: format 1.6,
/// `Rans32` planes in full chunks beside 4-state planes in short ones (the
/// matrix), `Rans32` and `RansBase32` planes in dense and sparse chunks
/// (the base-context fixture), and every rANS plane of the hostile
/// archives 32-state.
#[test]
fn wide_fixtures_have_32_state_planes_where_the_tests_need_them() {
    let built = common::wide_matrix(4);
    let a = open(&built.bytes);
    assert_eq!(a.header().minor, 6);
    let wide = common::wide_chunks(a.index());
    assert!(wide.contains(&(ChunkKind::Dense, false)), "{wide:?}");
    assert!(!common::narrow_rans_chunks(a.index()).is_empty());
    let built = common::wide_ctx(5);
    let a = open(&built.bytes);
    let wide = common::wide_chunks(a.index());
    for kind in [ChunkKind::Dense, ChunkKind::Sparse] {
        assert!(wide.contains(&(kind, true)), "{kind:?}: {wide:?}");
    }
    let bytes = common::tampered_wide(common::Tamper::RansFlip, tpde_format::Dtype::BF16);
    let a = open(&bytes);
    assert!(!common::wide_chunks(a.index()).is_empty());
    // 4-state planes only under the rANS minimum (64 symbols): constant or
    // raw, no words to tamper with.
    let narrow = common::narrow_rans_chunks(a.index());
    assert!(narrow.iter().all(|&(_, m)| m < 64), "{narrow:?}");
}

/// 32-state planes (format 1.6) through the mirror of the warp-per-chunk
/// decoder, beside 4-state ones in the same batches: host bases, borrowed
/// and in-place device bases (the base context read from device memory),
/// every slot size, both ways of staging positions.
#[test]
fn wide_planes_match_the_cpu_reader_in_every_mode() {
    for built in [common::wide_matrix(6), common::wide_ctx(7)] {
        assert_every_mode_matches_the_cpu_reader(&built);
    }
}

/// Chunks of 32-state planes are planned for the warp-per-chunk kernel
/// ([`tpde_gpu::plan::Job::wide`]), dense and sparse, with and without
/// base-context planes; a batch's entropy table holds its 4-state jobs
/// first, then its 32-state ones, and a batch can hold both.
#[test]
fn wide_chunks_are_planned_for_the_warp_per_chunk_kernel() {
    use tpde_gpu::plan::{self, BasePlan, JobKind};
    let mut mixed = false;
    let builds = [common::wide_matrix(8), common::wide_ctx(9)];
    for plan_opts in PLANS {
        let mut wide = Vec::new();
        for built in &builds {
            let a = open(&built.bytes);
            let mut jobs = Vec::new();
            for t in 0..a.index().tensors.len() {
                let base = if plan::base_name(&a, t).is_some() {
                    BasePlan::InPlace
                } else {
                    BasePlan::Zero
                };
                plan::tensor_jobs(&a, t, (t as u64 + 1) << 40, base, plan_opts, &mut jobs).unwrap();
            }
            assert!(jobs.iter().all(|j| !j.wide || j.decoded > 0));
            wide.extend(jobs.iter().filter(|j| j.wide).map(|j| j.kind));
            for slot in [4096, 64 << 20] {
                let slot = slot.max(plan::min_slot_bytes(&jobs));
                let dec = slot.max(plan::min_decode_bytes(&jobs));
                for b in plan::make_batches_with(&jobs, slot, dec).unwrap() {
                    let (narrow, rest) = b.phase0.split_at(b.phase0_narrow);
                    assert!(narrow.iter().all(|&ji| !jobs[ji].wide));
                    assert!(rest.iter().all(|&ji| jobs[ji].wide));
                    mixed |= !narrow.is_empty() && !rest.is_empty();
                }
            }
        }
        if plan_opts.entropy_on_device == EntropyOnDevice::Never {
            assert!(wide.is_empty());
            continue;
        }
        assert!(wide.contains(&JobKind::Dense), "{plan_opts:?}");
        let sparse = if plan_opts.positions_on_device {
            JobKind::SparseVarint
        } else {
            JobKind::Sparse
        };
        assert!(wide.contains(&sparse), "{plan_opts:?}");
    }
    assert!(mixed, "no batch decodes 4- and 32-state chunks together");
}

/// A chunk whose constant upper plane is labelled 4-state (it has no
/// states) beside a coded 32-state plane is planned for the device as a
/// 32-state job, not sent back to the CPU path, and decodes bit-exact.
#[test]
fn a_constant_plane_beside_a_wide_one_keeps_the_device_path() {
    use tpde_format::codec::entropy::Lanes;
    use tpde_format::format::{Codec, Payload, PlaneCodec};
    let tmp = tempfile::tempdir().unwrap();
    let (path, bases) = common::constant_beside_wide_archive(tmp.path());
    let bytes = std::fs::read(&path).unwrap();
    let a = Archive::from_bytes(&bytes[..], ReadLimits::default()).unwrap();
    let rec = &a.index().tensors[0];
    let Payload::Chunked { chunks, .. } = &rec.payload else {
        panic!("not chunked")
    };
    let c = &chunks[0];
    let Codec::PerPlane(planes) = &c.values.codec else {
        panic!("not per-plane: {:?}", c.values.codec)
    };
    let codecs: Vec<_> = planes.iter().map(|p| p.codec).collect();
    assert_eq!(codecs, [PlaneCodec::Rans, PlaneCodec::Rans32], "{c:?}");
    assert_eq!(planes[0].stored_len, 2, "plane 0 is constant");
    let (_, lanes) = tpde_gpu::plan::entropy_input(&bytes, c, 2).expect("a device job");
    assert_eq!(lanes, Lanes::ThirtyTwo);
    let host = tpde_format::NoBase;
    for mode in [BaseMode::Host(&host), BaseMode::DeviceInPlace] {
        for plan in PLANS {
            let got = reconstruct(&a, mode, &bases, 64 << 20, plan).unwrap();
            let d: [u8; 32] = Sha256::digest(&got[0]).into();
            assert_eq!(d, rec.sha256, "{mode:?} {plan:?}");
        }
    }
}

/// A bf16 fine-tune packed by the public writer with 65,536-element chunks
/// (its defaults give full chunks 32-state planes, tails and sparse chunks
/// 4-state ones), through the mirror with the base from the archive and
/// on the "device", bit-exact against the CPU reader.
#[test]
fn writer_packed_wide_planes_match_the_cpu_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, bases) = common::wide_writer_archive(tmp.path());
    let a = tpde_format::Archive::open(&path).unwrap();
    assert_eq!(
        a.header().minor,
        7,
        "32-state planes (v1.6) and chunk digests (v1.7)"
    );
    let wide = common::wide_chunks(a.index());
    assert!(wide.iter().any(|&(k, _)| k == ChunkKind::Dense), "{wide:?}");
    assert!(!common::narrow_rans_chunks(a.index()).is_empty());
    let host = tpde_format::NoBase;
    for mode in [
        BaseMode::Host(&host),
        BaseMode::DeviceBorrowed,
        BaseMode::DeviceInPlace,
    ] {
        for plan in PLANS {
            let got = reconstruct(&a, mode, &bases, 64 << 20, plan).unwrap();
            for (t, bytes) in got.iter().enumerate() {
                let rec = &a.index().tensors[t];
                let d: [u8; 32] = Sha256::digest(bytes).into();
                assert_eq!(d, rec.sha256, "{} {mode:?} {plan:?}", rec.name);
            }
        }
    }
}
