//! The independent reader `spec/reader/tpde_read.py`, written only from
//! `spec/FORMAT.md`, must agree with the Rust reader: same digests as the
//! golden manifest, same reconstructed files, the same index decoded field by
//! field, and the same refusals of damaged archives.
//!
//! Needs `python3` with the `zstandard` module (`pip install zstandard`; CI
//! installs it). Without them these tests FAIL: the spec's sufficiency is
//! part of the format's definition of done, not an optional extra.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use tpde_format::format::{BaseRef, Chunk, Codec, Payload, Stream, TensorRecord};
use tpde_format::pack::{pack, BaseMode, PackOptions};
use tpde_format::safetensors::Checkpoint;
use tpde_format::Archive;
use tpde_tests::{example, hex, repo_root, sha256_file, vectors_v1};

fn reader() -> PathBuf {
    repo_root().join("spec/reader/tpde_read.py")
}

/// Fails (never skips) when the interpreter or `zstandard` is missing.
fn require_python() {
    let probe = Command::new("python3")
        .args([
            "-c",
            "import sys, zstandard; assert sys.version_info >= (3, 11)",
        ])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "the spec reader needs Python >= 3.11 with zstandard: pip install zstandard\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("python3 not found ({e}): install Python 3.11+ and pip install zstandard"),
    }
}

fn run_reader(archive: &Path, base: Option<&Path>, out: Option<&Path>) -> Output {
    require_python();
    let mut cmd = Command::new("python3");
    cmd.arg(reader()).arg(archive).arg("--json");
    if let Some(b) = base {
        cmd.arg("--base").arg(b);
    }
    if let Some(o) = out {
        cmd.arg("--out").arg(o);
    }
    cmd.output().expect("run python3")
}

fn run_ok(archive: &Path, base: Option<&Path>, out: Option<&Path>) -> Value {
    let o = run_reader(archive, base, out);
    assert!(
        o.status.success(),
        "{}: spec reader failed: {}",
        archive.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("spec reader prints JSON")
}

fn stream_json(s: &Stream) -> Value {
    match &s.codec {
        Codec::PerPlane(planes) => {
            let planes: Vec<Value> = planes
                .iter()
                .map(|p| json!([p.stored_len, p.codec.name()]))
                .collect();
            json!([s.stored_len, s.raw_len, s.codec.name(), planes])
        }
        _ => json!([s.stored_len, s.raw_len, s.codec.name()]),
    }
}

fn chunk_json(c: &Chunk) -> Value {
    json!([
        c.offset,
        c.stored_len,
        c.crc32,
        c.elem_start,
        c.elem_count,
        c.kind.name(),
        c.op.name(),
        c.changed,
        stream_json(&c.positions),
        stream_json(&c.values)
    ])
}

/// A Rust tensor record in the shape the spec reader reports it.
fn tensor_json(t: &TensorRecord) -> Value {
    let base = match &t.base {
        BaseRef::None => json!({"kind": "none"}),
        BaseRef::Inline { index } => json!({"kind": "inline", "index": index}),
        BaseRef::External { file, name, sha256 } => {
            json!({"kind": "external", "file": file, "name": name, "sha256": hex(sha256)})
        }
        BaseRef::InlineWidened { index } => json!({"kind": "inline_widened", "index": index}),
        BaseRef::ExternalWidened {
            file,
            name,
            sha256,
            dtype,
        } => json!({"kind": "external_widened", "file": file, "name": name,
                    "sha256": hex(sha256), "dtype": dtype.name()}),
    };
    let mut v = json!({
        "name": t.name,
        "dtype": t.dtype.name(),
        "shape": t.shape,
        "sha256": hex(&t.sha256),
        "base": base,
    });
    let m = v.as_object_mut().unwrap();
    match &t.payload {
        Payload::Plain { offset, len, crc32 } => {
            m.insert("payload".into(), json!("plain"));
            m.insert("offset".into(), json!(offset));
            m.insert("len".into(), json!(len));
            m.insert("crc32".into(), json!(crc32));
        }
        Payload::Chunked {
            chunk_elems,
            chunks,
        } => {
            m.insert("payload".into(), json!("chunked"));
            m.insert("chunk_elems".into(), json!(chunk_elems));
            m.insert(
                "chunks".into(),
                Value::Array(chunks.iter().map(chunk_json).collect()),
            );
        }
    }
    v
}

/// The spec reader decoded the index exactly as the Rust reader did.
fn assert_same_index(name: &str, archive: &Path, report: &Value) {
    let a = Archive::open(archive).unwrap();
    let h = a.header();
    assert_eq!(
        report["format_version"],
        json!(format!("{}.{}", h.major, h.minor)),
        "{name}"
    );
    assert_eq!(report["index_offset"], json!(h.index_offset), "{name}");
    assert_eq!(report["index_len"], json!(h.index_len), "{name}");
    let idx = a.index();
    let files: Vec<Value> = idx
        .files
        .iter()
        .map(|f| {
            json!({"name": f.name, "size": f.size, "sha256": hex(&f.sha256),
                   "header_len": f.header.len(), "tensors": f.tensors})
        })
        .collect();
    assert_eq!(report["index"]["files"], json!(files), "{name}: files");
    let extra: Vec<&str> = idx.extra_files.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(report["index"]["extra_files"], json!(extra), "{name}");
    for (table, list) in [("bases", &idx.bases), ("tensors", &idx.tensors)] {
        let want: Vec<Value> = list.iter().map(tensor_json).collect();
        let got = report["index"][table].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{name}: {table}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{name}: {table} record {}", w["name"]);
        }
    }
    let base_files: Vec<Value> = idx
        .base_files
        .iter()
        .map(|b| json!({"name": b.name, "size": b.size, "sha256": hex(&b.sha256)}))
        .collect();
    assert_eq!(report["base_files"], json!(base_files), "{name}");
}

fn manifest() -> BTreeMap<String, Value> {
    let text = std::fs::read(vectors_v1().join("manifest.json")).unwrap();
    let v: Value = serde_json::from_slice(&text).unwrap();
    v["vectors"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn files_in(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                sha256_file(&e.path()),
            )
        })
        .collect()
}

#[test]
fn spec_reader_decodes_every_golden_vector_like_the_manifest_and_the_rust_reader() {
    for (name, entry) in manifest() {
        let archive = vectors_v1().join(entry["archive"].as_str().unwrap());
        let base = entry["base_file"].as_str().map(|f| vectors_v1().join(f));
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let report = run_ok(&archive, base.as_deref(), Some(&out));
        assert_eq!(
            report["tensors"], entry["tensors"],
            "{name}: tensor digests"
        );
        assert_eq!(report["files"], entry["files"], "{name}: file digests");
        let written = files_in(&out);
        assert_eq!(json!(written), entry["files"], "{name}: files written");
        assert_same_index(&name, &archive, &report);
    }
}

/// Not only the frozen vectors: archives from the current writer, in every
/// base mode, on the real example pair, decode to the original file.
#[test]
fn spec_reader_reads_what_the_current_writer_writes() {
    let target_path = example("v6.2-16k.safetensors");
    let base_path = example("v6.2.safetensors");
    let target = Checkpoint::open(&target_path).unwrap();
    let base = Checkpoint::open(&base_path).unwrap();
    let want = sha256_file(&target_path);
    for mode in [
        None,
        Some(BaseMode::Inline),
        Some(BaseMode::InlinePlain),
        Some(BaseMode::External),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tpde");
        let opts = PackOptions {
            write: tpde_format::WriteOptions::default().with_chunk_elems(1 << 14),
            base_mode: mode.unwrap_or_default(),
        };
        pack(&target, mode.map(|_| &base), &archive, &opts, &mut |_| {}).unwrap();
        let out = dir.path().join("out");
        let ext = (mode == Some(BaseMode::External)).then_some(base_path.as_path());
        let report = run_ok(&archive, ext, Some(&out));
        let got = files_in(&out);
        assert_eq!(got.len(), 1, "{mode:?}");
        assert_eq!(got.values().next().unwrap(), &want, "{mode:?}");
        assert_same_index(&format!("{mode:?}"), &archive, &report);
    }
}

fn failing(bytes: &[u8], base: Option<&Path>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.tpde");
    std::fs::write(&p, bytes).unwrap();
    let out = dir.path().join("out");
    let o = run_reader(&p, base, Some(&out));
    assert_eq!(
        o.status.code(),
        Some(1),
        "spec reader accepted a bad archive: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!out.exists(), "partial output left behind");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn spec_reader_refuses_damaged_archives_naming_where() {
    let path = vectors_v1().join("delta_inline.tpde");
    let good = std::fs::read(&path).unwrap();
    let a = Archive::open(&path).unwrap();
    // A bit flipped in the first stored byte of a target chunk.
    let (t, ci, c) = a
        .index()
        .tensors
        .iter()
        .find_map(|t| match &t.payload {
            Payload::Chunked { chunks, .. } => chunks
                .iter()
                .enumerate()
                .find(|(_, c)| c.stored_len > 0)
                .map(|(i, c)| (t, i, c.clone())),
            _ => None,
        })
        .unwrap();
    let mut bad = good.clone();
    bad[c.offset as usize] ^= 0x10;
    let err = failing(&bad, None);
    assert!(
        err.contains(&t.name) && err.contains(&format!("chunk {ci}:")) && err.contains("CRC"),
        "{err}"
    );
    // A bit flipped in the index.
    let mut bad = good.clone();
    let at = a.header().index_offset as usize + 40;
    bad[at] ^= 0x01;
    assert!(failing(&bad, None).contains("header/index CRC"));
    // Truncated.
    assert!(failing(&good[..good.len() - 1], None).contains("header says"));
    // Unknown major version.
    let mut bad = good.clone();
    bad[8] = 2;
    assert!(failing(&bad, None).contains("major"));
}

#[test]
fn spec_reader_checks_the_external_base() {
    let archive = std::fs::read(vectors_v1().join("delta_external.tpde")).unwrap();
    // No base given.
    assert!(failing(&archive, None).contains("--base"));
    // A base with one byte changed.
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.safetensors");
    let mut bytes = std::fs::read(vectors_v1().join("base.safetensors")).unwrap();
    // The first byte of tensor data (of `bool.xor`, a base the target uses).
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + header_len] ^= 1;
    std::fs::write(&wrong, &bytes).unwrap();
    let err = failing(&archive, Some(&wrong));
    assert!(
        err.contains("not the one the archive was packed against"),
        "{err}"
    );
}
