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

/// Outputs are ordinary files: `0666` less the umask, like `File::create`
/// (tempfile's `0600` default once made archives unreadable to others).
#[test]
fn archives_and_unpacked_files_get_ordinary_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    std::fs::File::create(&reference).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let want = mode(&reference);
    let t = Checkpoint::open(example("v6.2-16k.safetensors")).unwrap();
    let out = dir.path().join("a.tpde");
    pack(&t, None, &out, &PackOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(mode(&out), want, "archive");
    let a = Archive::open(&out).unwrap();
    let back = dir.path().join("back.safetensors");
    unpack(&a, &NoBase, &back, &UnpackOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(mode(&back), want, "unpacked file");
}

/// `unpack` with overwrite onto an existing directory replaces it and leaves
/// nothing else beside it: no `PATH.tpde-old`, no temp directories.
#[test]
fn unpack_overwrites_a_directory_without_side_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = tpde_tests::hostile::sharded_checkpoint(dir.path(), "ckpt");
    let t = Checkpoint::open(&src).unwrap();
    let archive = dir.path().join("a.tpde");
    pack(&t, None, &archive, &PackOptions::default(), &mut |_| {}).unwrap();
    let a = Archive::open(&archive).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = work.join("model");
    let opts = UnpackOptions {
        overwrite: true,
        ..UnpackOptions::default()
    };
    unpack(&a, &NoBase, &out, &UnpackOptions::default(), &mut |_| {}).unwrap();
    std::fs::write(out.join("stale.txt"), b"from an older unpack").unwrap();
    assert!(matches!(
        unpack(&a, &NoBase, &out, &UnpackOptions::default(), &mut |_| {}),
        Err(tpde_format::Error::OutputExists { .. })
    ));
    unpack(&a, &NoBase, &out, &opts, &mut |_| {}).unwrap();
    let beside: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(beside, ["model"]);
    assert!(!out.join("stale.txt").exists(), "old directory replaced");
    for f in &t.files {
        assert_eq!(sha256_file(&out.join(&f.name)), sha256_file(&f.path));
    }
}
