//! Real checkpoint pairs round-trip byte-identically (issue: tpde-format v1).

use std::path::Path;

use tpde_format::pack::{pack, BaseMode, PackOptions};
use tpde_format::safetensors::Checkpoint;
use tpde_format::unpack::{unpack, verify, UnpackOptions};
use tpde_format::{Archive, BaseProvider, NoBase, WriteOptions};
use tpde_tests::{example, sha256_file, shared};

fn round_trip(target: &Path, base: Option<&Path>, mode: BaseMode) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.tpde");
    let t = Checkpoint::open(target).unwrap();
    let b = base.map(|b| Checkpoint::open(b).unwrap());
    let opts = PackOptions {
        write: WriteOptions::default().with_chunk_elems(1 << 16),
        base_mode: mode,
    };
    let rep = pack(&t, b.as_ref(), &out, &opts, &mut |_| {}).unwrap();
    let a = Archive::open(&out).unwrap();
    let provider: &dyn BaseProvider = match (&b, mode) {
        (Some(b), BaseMode::External) => b,
        _ => &NoBase,
    };
    verify(&a, provider, Some(&t), &mut |_| {}).unwrap();
    let back = dir.path().join("back.safetensors");
    unpack(&a, provider, &back, &UnpackOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(
        sha256_file(&back),
        sha256_file(target),
        "unpacked file differs"
    );
    (rep.archive_bytes, rep.target_bytes)
}

#[test]
fn silero_example_round_trips_in_every_base_mode() {
    let target = example("v6.2-16k.safetensors");
    let base = example("v6.2.safetensors");
    for mode in [BaseMode::Inline, BaseMode::InlinePlain, BaseMode::External] {
        round_trip(&target, Some(&base), mode);
    }
    let (archive, raw) = round_trip(&target, None, BaseMode::Inline);
    assert!(
        archive < raw,
        "standalone archive {archive} not smaller than {raw}"
    );
}

#[test]
fn external_base_delta_is_smaller_than_the_target() {
    let (archive, raw) = round_trip(
        &example("v6.2-16k.safetensors"),
        Some(&example("v6.2.safetensors")),
        BaseMode::External,
    );
    assert!(archive * 5 < raw * 4, "delta {archive} vs target {raw}");
}

/// The bf16 fine-tune corpus in ../shared (present in CI): every pair round-trips.
#[test]
fn shared_finetune_corpus_round_trips() {
    let Some(shared) = shared() else {
        eprintln!("skipped: ../shared not present");
        return;
    };
    let ft = shared.join("corpus/ft");
    let base = ft.join("ftA.full.step0.bf16.safetensors");
    for t in [
        "ftA.full.step700.bf16.safetensors",
        "ftA.partial.step700.bf16.safetensors",
    ] {
        let (archive, raw) = round_trip(&ft.join(t), Some(&base), BaseMode::External);
        eprintln!(
            "{t}: {raw} -> {archive} ({:.2}x)",
            raw as f64 / archive as f64
        );
    }
}
