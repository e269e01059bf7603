//! The pipeline's CPU mirror against `tpde_format`'s CPU reader, on every
//! dtype width, chunk kind, combine op and base mode. Runs everywhere (CI
//! has no GPU): it checks the plan, the batching, the staging code and the
//! kernels' per-element logic that the GPU path shares.

mod common;

use std::collections::HashMap;

use sha2::{Digest as _, Sha256};
use tpde_format::format::{ChunkKind, Op};
use tpde_format::{Archive, ReadLimits};
use tpde_gpu::plan::PlanOptions;
use tpde_gpu::reference::{reconstruct, BaseMode};
use tpde_gpu::GpuError;

/// Both ways of staging sparse positions.
const PLANS: [PlanOptions; 2] = [
    PlanOptions {
        positions_on_device: true,
    },
    PlanOptions {
        positions_on_device: false,
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
        for op in [Op::Xor, Op::Add, Op::Replace, Op::AddZigzag] {
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
