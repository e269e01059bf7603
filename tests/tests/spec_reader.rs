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
use tpde_format::codec::widen;
use tpde_format::format::{BaseRef, Chunk, Codec, Payload, PlaneCodec, Stream, TensorRecord};
use tpde_format::pack::{pack, BaseMode, PackOptions};
use tpde_format::safetensors::Checkpoint;
use tpde_format::{Archive, Dtype, WriteOptions};
use tpde_tests::{
    example, hex, repo_root, safetensors_bytes, sha256_file, vectors_v1, Rng, TensorData,
};

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

fn rows_json(rows: &[tpde_format::format::RowRun]) -> Value {
    rows.iter()
        .map(|r| json!([r.start, r.base_start, r.count]))
        .collect()
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
        BaseRef::InlineRows { index, rows } => {
            json!({"kind": "inline_rows", "index": index, "rows": rows_json(rows)})
        }
        BaseRef::ExternalRows {
            file,
            name,
            sha256,
            shape,
            rows,
        } => json!({"kind": "external_rows", "file": file, "name": name,
                    "sha256": hex(sha256), "shape": shape, "rows": rows_json(rows)}),
        BaseRef::InlineSlices {
            index,
            row_elems,
            rows,
        } => json!({"kind": "inline_slices", "index": index, "row_elems": row_elems,
                    "rows": rows_json(rows)}),
        BaseRef::ExternalSlices {
            file,
            name,
            sha256,
            shape,
            row_elems,
            rows,
        } => json!({"kind": "external_slices", "file": file, "name": name,
                    "sha256": hex(sha256), "shape": shape, "row_elems": row_elems,
                    "rows": rows_json(rows)}),
        BaseRef::InlineDequant { q, scale, axis } => {
            json!({"kind": "inline_dequant", "q": q, "scale": scale, "axis": axis.name()})
        }
        BaseRef::ExternalDequant {
            file,
            q_name,
            q_sha256,
            q_dtype,
            scale_name,
            scale_sha256,
            scale_shape,
            axis,
        } => json!({"kind": "external_dequant", "file": file, "q_name": q_name,
                    "q_sha256": hex(q_sha256), "q_dtype": q_dtype.name(),
                    "scale_name": scale_name, "scale_sha256": hex(scale_sha256),
                    "scale_shape": scale_shape, "axis": axis.name()}),
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
            chunk_sha256,
        } => {
            m.insert("payload".into(), json!("chunked"));
            m.insert("chunk_elems".into(), json!(chunk_elems));
            m.insert(
                "chunks".into(),
                Value::Array(chunks.iter().map(chunk_json).collect()),
            );
            if let Some(d) = chunk_sha256 {
                let d: Vec<String> = d.iter().map(|d| hex(d)).collect();
                m.insert("chunk_sha256".into(), json!(d));
            }
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

/// What the `Rans` planes of an archive hold (spec §5.6), read from their
/// first bytes, in the shape of the spec reader's `rans` report: plane
/// count, count per mode, mode-2 planes with context buckets, the scales and
/// the most buckets of the mode-2 planes.
fn rans_stats(archive: &Path) -> Value {
    let a = Archive::open(archive).unwrap();
    let (mut planes, mut modes, mut with_context) = (0u64, [0u64; 3], 0u64);
    let (mut scales, mut max_buckets) = (std::collections::BTreeSet::new(), 0u8);
    for (table, list) in [
        (tpde_format::read::Table::Base, &a.index().bases),
        (tpde_format::read::Table::Target, &a.index().tensors),
    ] {
        for (t, rec) in list.iter().enumerate() {
            let Payload::Chunked { chunks, .. } = &rec.payload else {
                continue;
            };
            for (ci, ch) in chunks.iter().enumerate() {
                let Codec::PerPlane(pl) = &ch.values.codec else {
                    continue;
                };
                let stored = a.chunk_bytes(table, t, ci, ch).unwrap();
                let mut at = ch.positions.stored_len as usize;
                for p in pl {
                    let bytes = &stored[at..at + p.stored_len as usize];
                    at += p.stored_len as usize;
                    if p.codec.rans_lanes().is_none() {
                        continue;
                    }
                    planes += 1;
                    modes[usize::from(bytes[0])] += 1;
                    if bytes[0] == 2 {
                        scales.insert(bytes[1]);
                        max_buckets = max_buckets.max(bytes[2]);
                        with_context += u64::from(bytes[2] > 1);
                    }
                }
            }
        }
    }
    json!({"planes": planes, "modes": {"0": modes[0], "1": modes[1], "2": modes[2]},
           "with_context": with_context, "scales": scales, "max_buckets": max_buckets})
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
        assert_eq!(report["rans"], rans_stats(&archive), "{name}: rANS planes");
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
    let mut with_context = 0;
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
        // The default writer's rANS planes were what the spec reader decoded.
        let rans = rans_stats(&archive);
        assert_eq!(report["rans"], rans, "{mode:?}: rANS planes");
        assert!(
            rans["modes"]["2"].as_u64() > Some(10),
            "{mode:?}: the writer should code planes with rANS: {rans}"
        );
        with_context += rans["with_context"].as_u64().unwrap();
    }
    assert!(with_context > 0, "no rANS plane coded with a context");
}

/// Every BF16 and F16 bit pattern widened to F32 and to F64 (and random F32
/// patterns to F64), packed by the current writer in every base mode: the
/// spec reader's widening, written from spec §6.2, agrees with the Rust
/// writer's on all of them. Renamed tensors and `with_max_minor(0)` output
/// are read too.
#[test]
fn spec_reader_widens_every_half_precision_pattern_like_the_rust_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x5eed_0011);
    let all: Vec<u8> = (0..=u16::MAX).flat_map(|x| x.to_le_bytes()).collect();
    let f32s = rng.bytes(4 * 20_000);
    let (mut base, mut target): (Vec<TensorData>, Vec<TensorData>) = (Vec::new(), Vec::new());
    for (name, from, to, narrow) in [
        ("bf16.f32", Dtype::BF16, Dtype::F32, &all),
        ("bf16.f64", Dtype::BF16, Dtype::F64, &all),
        ("f16.f32", Dtype::F16, Dtype::F32, &all),
        ("f16.f64", Dtype::F16, Dtype::F64, &all),
        ("f32.f64", Dtype::F32, Dtype::F64, &f32s),
    ] {
        let n = narrow.len() / from.width();
        let mut wide = vec![0u8; n * to.width()];
        widen::widen(from, to, narrow, &mut wide);
        // A residual in the low byte of every 5th element of the second
        // half: zero chunks first, then dense ones.
        for i in (n / 2..n).step_by(5) {
            wide[i * to.width()] ^= 0x5a;
        }
        let shape = vec![n as u64];
        base.push((name.into(), from, shape.clone(), narrow.clone()));
        target.push((name.into(), to, shape, wide));
    }
    let moved = rng.bytes(2 * 999);
    base.push(("old".into(), Dtype::I16, vec![999], moved.clone()));
    target.push(("new".into(), Dtype::I16, vec![999], moved));
    let (tp, bp) = (
        dir.path().join("t.safetensors"),
        dir.path().join("b.safetensors"),
    );
    std::fs::write(&tp, safetensors_bytes(&target, None)).unwrap();
    std::fs::write(&bp, safetensors_bytes(&base, None)).unwrap();
    let (t, b) = (
        Checkpoint::open(&tp).unwrap(),
        Checkpoint::open(&bp).unwrap(),
    );
    let want = sha256_file(&tp);
    for (mode, max_minor) in [
        (BaseMode::Inline, 1),
        (BaseMode::InlinePlain, 1),
        (BaseMode::External, 1),
        (BaseMode::External, 0),
    ] {
        let what = format!("{mode:?}, max minor {max_minor}");
        let sub = dir.path().join(format!("{mode:?}{max_minor}"));
        std::fs::create_dir(&sub).unwrap();
        let archive = sub.join("a.tpde");
        let opts = PackOptions {
            write: WriteOptions::default()
                .with_chunk_elems(1 << 12)
                .with_max_minor(max_minor),
            base_mode: mode,
        };
        pack(&t, Some(&b), &archive, &opts, &mut |_| {}).unwrap();
        let a = Archive::open(&archive).unwrap();
        assert_eq!(a.header().minor, max_minor, "{what}");
        let widened = a
            .index()
            .tensors
            .iter()
            .filter(|r| {
                matches!(
                    r.base,
                    BaseRef::InlineWidened { .. } | BaseRef::ExternalWidened { .. }
                )
            })
            .count();
        assert_eq!(widened, if max_minor == 1 { 5 } else { 0 }, "{what}");
        let out = sub.join("out");
        let ext = (mode == BaseMode::External).then_some(bp.as_path());
        let report = run_ok(&archive, ext, Some(&out));
        assert_eq!(files_in(&out).get("t.safetensors"), Some(&want), "{what}");
        assert_same_index(&what, &archive, &report);
        assert_eq!(report["rans"], rans_stats(&archive), "{what}: rANS planes");
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

/// The spec reader refuses what spec §2.2, §4.5, §5.1.2 and §8.2 say v1.1
/// readers refuse (the Rust side of each is in `hostile_v11.rs`).
#[test]
fn spec_reader_refuses_v11_violations() {
    use tpde_format::format::{Dtype, Plane, PlaneCodec};
    use tpde_tests::hostile::{refix_crc, Parts, Table};
    let good = std::fs::read(vectors_v1().join("v11_minimal.tpde")).unwrap();
    let set_minor = |minor: u16, fix: bool| {
        let mut b = good.clone();
        b[10..12].copy_from_slice(&minor.to_le_bytes());
        if fix {
            refix_crc(&mut b);
        }
        b
    };
    // A newer minor, checked after the CRC.
    let newer = tpde_format::format::VERSION_MINOR + 1;
    assert!(failing(&set_minor(newer, false), None).contains("header/index CRC"));
    assert!(failing(&set_minor(newer, true), None).contains("newer reader"));
    // A minor-0 header over v1.1 variants.
    assert!(failing(&set_minor(0, true), None).contains("minor 0"));
    let low = std::fs::read(vectors_v1().join("v11_max_minor0.tpde")).unwrap();
    let mut p = Parts::parse(&low);
    p.chunks_mut(Table::Target, 0)[0].op = tpde_format::format::Op::AddZigzag;
    let base = vectors_v1().join("base_v11.safetensors");
    assert!(failing(&p.to_bytes(), Some(&base)).contains("AddZigzag (v1.1) in a minor 0 file"));
    // Four planes of F32 values cut to three.
    let mut p = Parts::parse(&good);
    p.edit_chunk(Table::Target, 0, 0, |ch, bytes| {
        let Codec::PerPlane(planes) = &mut ch.values.codec else {
            panic!("not per-plane")
        };
        let last = planes.pop().unwrap();
        bytes.truncate(bytes.len() - last.stored_len as usize);
        ch.values.stored_len -= last.stored_len;
    });
    assert!(failing(&p.to_bytes(), None).contains("one plane per element byte"));
    // A raw plane one byte short, lengths kept consistent.
    let mut p = Parts::parse(&good);
    p.edit_chunk(Table::Target, 0, 0, |ch, bytes| {
        let Codec::PerPlane(planes) = &mut ch.values.codec else {
            panic!("not per-plane")
        };
        planes[3] = Plane {
            stored_len: planes[3].stored_len - 1,
            codec: PlaneCodec::Raw,
        };
        bytes.pop();
        ch.values.stored_len -= 1;
    });
    assert!(failing(&p.to_bytes(), None).contains("raw plane 3"));
    // A zstd plane followed by a second frame.
    let mut p = Parts::parse(&good);
    p.edit_chunk(Table::Target, 0, 0, |ch, bytes| {
        let Codec::PerPlane(planes) = &mut ch.values.codec else {
            panic!("not per-plane")
        };
        let extra = zstd::bulk::compress(&[], 3).unwrap();
        let at = planes[0].stored_len as usize;
        bytes.splice(at..at, extra.iter().copied());
        planes[0].stored_len += extra.len() as u64;
        ch.values.stored_len += extra.len() as u64;
    });
    let err = failing(&p.to_bytes(), None);
    assert!(
        err.contains("chunk 0: plane 0") && err.contains("after the end of the zstd frame"),
        "{err}"
    );
    // An inline base of a dtype that does not widen to the target's.
    let mut p = Parts::parse(&good);
    p.index.tensors[0].base = tpde_format::format::BaseRef::Inline { index: 0 };
    assert!(failing(&p.to_bytes(), None).contains("inline base dtype differs"));
    let ext = std::fs::read(vectors_v1().join("v11_widen_external.tpde")).unwrap();
    let mut p = Parts::parse(&ext);
    let t = p.target("f32.to_f64");
    if let BaseRef::ExternalWidened { dtype, .. } = &mut p.index.tensors[t].base {
        *dtype = Dtype::F64;
    }
    assert!(failing(&p.to_bytes(), Some(&base)).contains("cannot be widened"));
}

/// A coded plane for appendix C: (stored bytes, plane size, context plane,
/// interleaved states: 4, or 32 for a v1.6 `Rans32` plane).
type CodedPlane = (Vec<u8>, usize, Option<Vec<u8>>, usize);

/// Every `Rans` and `Rans32` plane of the golden vectors: (stored bytes,
/// plane size, context plane, states, the plane as the reference decoder
/// decodes it).
type RansCase = (Vec<u8>, usize, Option<Vec<u8>>, usize, Vec<u8>);

/// Makes a plane's new bytes from chunk 0's two planes.
type PlaneEdit<'a> = &'a dyn Fn(&[u8], &[u8]) -> Vec<u8>;

fn golden_rans_planes() -> Vec<RansCase> {
    let mut out = Vec::new();
    for (_, entry) in manifest() {
        let a = Archive::open(vectors_v1().join(entry["archive"].as_str().unwrap())).unwrap();
        for (table, list) in [
            (tpde_format::read::Table::Base, &a.index().bases),
            (tpde_format::read::Table::Target, &a.index().tensors),
        ] {
            for (t, rec) in list.iter().enumerate() {
                let Payload::Chunked { chunks, .. } = &rec.payload else {
                    continue;
                };
                for (ci, ch) in chunks.iter().enumerate() {
                    let Codec::PerPlane(planes) = &ch.values.codec else {
                        continue;
                    };
                    // Base-context planes (v1.2) need the chunk's base to
                    // decode; the spec reader decodes them in every vector.
                    if ch.values.uses_base_context() {
                        continue;
                    }
                    let stored = a.chunk_bytes(table, t, ci, ch).unwrap();
                    let values = &stored[ch.positions.stored_len as usize..];
                    let mut raw = vec![0u8; ch.values.raw_len as usize];
                    tpde_format::codec::stream::decompress_into(&ch.values, values, &mut raw)
                        .unwrap();
                    let m = raw.len() / planes.len();
                    let mut at = 0;
                    for (k, p) in planes.iter().enumerate() {
                        let bytes = values[at..at + p.stored_len as usize].to_vec();
                        at += p.stored_len as usize;
                        if matches!(p.codec, PlaneCodec::Rans | PlaneCodec::Rans32) {
                            let ctx = k.checked_sub(1).map(|j| raw[j * m..(j + 1) * m].to_vec());
                            let lanes = if p.codec.is_wide() { 32 } else { 4 };
                            out.push((bytes, m, ctx, lanes, raw[k * m..(k + 1) * m].to_vec()));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Runs spec appendix C's code block on `cases` (coded plane, size,
/// context): the decoded planes in hex, or "reject: why".
fn appendix_c_decode(cases: &[CodedPlane]) -> Vec<String> {
    require_python();
    let spec = std::fs::read_to_string(repo_root().join("spec/FORMAT.md")).unwrap();
    let marker = "<!-- python: rans plane decoder -->";
    let at = spec
        .find(marker)
        .unwrap_or_else(|| panic!("spec/FORMAT.md lacks {marker}"));
    let block = &spec[at + marker.len()..];
    let block = &block[block.find("```python\n").expect("a python block") + 10..];
    let code = &block[..block.find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("cases.json");
    let list: Vec<Value> = cases
        .iter()
        .map(|(s, m, c, n)| json!([hex(s), m, c.as_ref().map(|c| hex(c)), n]))
        .collect();
    std::fs::write(&input, serde_json::to_vec(&list).unwrap()).unwrap();
    let driver = format!(
        "{code}\nimport json, sys\nout = []\nfor s, m, c, n in json.load(open(sys.argv[1])):\n    \
         try:\n        out.append(decode_plane(bytes.fromhex(s), m, \
         None if c is None else bytes.fromhex(c), n).hex())\n    except Reject as e:\n        \
         out.append('reject: ' + str(e))\njson.dump(out, sys.stdout)\n"
    );
    let o = Command::new("python3")
        .args(["-c", &driver])
        .arg(&input)
        .output()
        .expect("run python3");
    assert!(
        o.status.success(),
        "appendix C: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Spec appendix C, run exactly as printed, decodes every `Rans` plane of
/// the golden vectors to the reference decoder's bytes, and refuses what
/// §5.6 says to refuse.
#[test]
fn spec_appendix_c_decoder_agrees_with_the_reference_decoder() {
    let planes = golden_rans_planes();
    assert!(planes.len() >= 40, "only {} rANS planes", planes.len());
    let cases: Vec<_> = planes
        .iter()
        .map(|(s, m, c, n, _)| (s.clone(), *m, c.clone(), *n))
        .collect();
    assert!(
        planes.iter().any(|p| p.3 == 32),
        "no 32-state plane in the vectors"
    );
    let got = appendix_c_decode(&cases);
    assert_eq!(got.len(), planes.len());
    for (i, (g, (s, _, c, _, want))) in got.iter().zip(&planes).enumerate() {
        assert_eq!(
            g,
            &hex(want),
            "plane {i} (mode {}, context {})",
            s[0],
            c.is_some()
        );
    }
    // Refusals: a context-bucket plane given no context, a word too many, a
    // scale of 16, and (the control) the same plane unchanged.
    // Each with 4 and with 32 states, and read with the other number of
    // states (rejected: a state, word or end check fails).
    for lanes in [4, 32] {
        let (s, m, c, n, want) = planes
            .iter()
            .find(|(s, _, _, n, _)| s[0] == 2 && s[2] > 1 && *n == lanes)
            .expect("a plane with context buckets")
            .clone();
        let mut scale16 = s.clone();
        scale16[1] = 16;
        let got = appendix_c_decode(&[
            (s.clone(), m, None, n),
            ([s.clone(), vec![0, 0]].concat(), m, c.clone(), n),
            (scale16, m, c.clone(), n),
            (s.clone(), m, c.clone(), 36 - n),
            (s, m, c, n),
        ]);
        assert_eq!(got[0], "reject: context");
        assert_eq!(got[1], "reject: trailing words");
        assert_eq!(got[2], "reject: scale");
        assert!(got[3].starts_with("reject: "), "{lanes}: {}", got[3]);
        assert_eq!(got[4], hex(&want));
    }
}

/// The spec reader refuses hostile rANS planes (the Rust side of each is in
/// `hostile_v11.rs` and `rans_planes.rs`), naming the chunk and plane.
#[test]
fn spec_reader_refuses_bad_rans_planes() {
    use tpde_tests::hostile::{Parts, Table};
    let good = std::fs::read(vectors_v1().join("v11_rans.tpde")).unwrap();
    let p0 = Parts::parse(&good);
    let t = p0.target("ctx.u16");
    // Plane `k` of ctx.u16's chunk 0 (planes: Rans, Rans with context).
    let edit = |k: usize, f: PlaneEdit| {
        let mut p = p0.clone();
        p.edit_chunk(Table::Target, t, 0, |ch, bytes| {
            let Codec::PerPlane(planes) = &mut ch.values.codec else {
                panic!("not per-plane")
            };
            let l0 = planes[0].stored_len as usize;
            let (a, b) = (bytes[..l0].to_vec(), bytes[l0..].to_vec());
            let new = f(&a, &b);
            let range = if k == 0 { 0..l0 } else { l0..bytes.len() };
            bytes.splice(range, new.iter().copied());
            planes[k].stored_len = new.len() as u64;
            ch.values.stored_len = planes.iter().map(|x| x.stored_len).sum();
        });
        p.to_bytes()
    };
    // The control: the planes put back as they were.
    let same = edit(1, &|_, b| b.to_vec());
    assert_eq!(same, good);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // An empty rans plane is an invalid index (§5.1.2 rule 3).
        (edit(1, &|_, _| Vec::new()), "empty rans plane 1"),
        // Plane 1's stream (context buckets) as plane 0: no context (§5.3).
        (
            edit(0, &|_, b| b.to_vec()),
            "plane 0: rans plane with context buckets",
        ),
        // 17 buckets (§5.6.2).
        (
            edit(1, &|_, b| [&b[..2], &[17], &b[3..]].concat()),
            "plane 1: rans bucket count 17",
        ),
        // A word missing, a word too many (§5.6.5).
        (
            edit(1, &|_, b| b[..b.len() - 2].to_vec()),
            "plane 1: rans plane runs out of words",
        ),
        (
            edit(1, &|_, b| [b, &[0, 0]].concat()),
            "plane 1: rans plane has 1 unread words",
        ),
        // Mode 3 (§5.6.1).
        (
            edit(0, &|a, _| [&[3], &a[1..]].concat()),
            "plane 0: rans plane mode 3 unknown",
        ),
    ];
    for (bytes, needle) in cases {
        let err = failing(&bytes, None);
        assert!(err.contains(needle), "{needle}: {err}");
        if !needle.starts_with("empty") {
            assert!(err.contains("'ctx.u16' chunk 0:"), "{err}");
        }
    }
    // A flipped bit in the words of plane 1, CRC fixed: refused (by §5.6 or
    // by the tensor digest).
    let bad = edit(1, &|_, b| {
        let mut b = b.to_vec();
        let i = b.len() - 7;
        b[i] ^= 0x08;
        b
    });
    failing(&bad, None);
}

/// The v1.2 rules of §6.3.1 and §8.2.3, each broken in a copy of a
/// row-mapped vector: the spec reader refuses every one.
#[test]
fn spec_reader_refuses_v12_violations() {
    use tpde_format::format::RowRun;
    use tpde_tests::hostile::{refix_crc, Parts};
    let good = std::fs::read(vectors_v1().join("v12_rows_inline.tpde")).unwrap();
    let pruned = |p: &Parts| {
        p.index
            .tensors
            .iter()
            .position(|t| t.name == "vocab.pruned")
            .unwrap()
    };
    let edit = |f: &dyn Fn(&mut Vec<RowRun>, &mut Vec<u64>)| {
        let mut p = Parts::parse(&good);
        let t = pruned(&p);
        let rec = &mut p.index.tensors[t];
        let mut shape = rec.shape.clone();
        let BaseRef::InlineRows { rows, .. } = &mut rec.base else {
            panic!("vocab.pruned is row-mapped")
        };
        f(rows, &mut shape);
        rec.shape = shape;
        p.to_bytes()
    };
    // A minor-1 header over a row-mapped base.
    let mut b = good.clone();
    b[10..12].copy_from_slice(&1u16.to_le_bytes());
    refix_crc(&mut b);
    assert!(failing(&b, None).contains("(v1.2) in a minor 1 file"));
    // Runs out of order, empty, past the last row of either tensor.
    let err = failing(&edit(&|r, _| r.swap(0, 1)), None);
    assert!(err.contains("out of order"), "{err}");
    let err = failing(&edit(&|r, _| r[0].count = 0), None);
    assert!(err.contains("empty row run"), "{err}");
    let err = failing(&edit(&|r, _| r.last_mut().unwrap().count += 1), None);
    assert!(err.contains("past the last row"), "{err}");
    let err = failing(&edit(&|r, _| r[0].base_start = 59), None);
    assert!(
        err.contains("out of order") || err.contains("past the last row"),
        "{err}"
    );
    // Runs overlapping in base rows only.
    let err = failing(&edit(&|r, _| r[1].base_start = r[0].base_start), None);
    assert!(err.contains("out of order"), "{err}");
    // A base-context plane (v1.2) in a minor-1 file.
    let mut b = std::fs::read(vectors_v1().join("v12_rans_base_inline.tpde")).unwrap();
    b[10..12].copy_from_slice(&1u16.to_le_bytes());
    refix_crc(&mut b);
    assert!(failing(&b, None).contains("rans-base plane (v1.2) in a minor 1 file"));
    // Other trailing dimensions than the base's (same element count).
    let err = failing(&edit(&|_, s| *s = vec![80, 6]), None);
    assert!(err.contains("does not fit"), "{err}");
}

#[test]
fn spec_reader_refuses_v13_violations() {
    use tpde_tests::hostile::Parts;
    require_python();
    let good = std::fs::read(vectors_v1().join("v13_delta_inline.tpde")).unwrap();
    let p = Parts::parse(&good);
    let raw = p.index_bytes();
    // The flag in a minor-2 file (§8.2.3).
    let mut q = p.clone();
    q.header.minor = 2;
    let err = failing(&q.to_bytes(), None);
    assert!(
        err.contains("zstd index") && err.contains("minor 0 to 2"),
        "{err}"
    );
    // The flag over an uncompressed index, and a frame with no content size.
    let err = failing(&p.with_stored_index(&raw), None);
    assert!(err.contains("index: not a zstd frame"), "{err}");
    // A frame expanding more than 64 times (and past 16 MiB).
    let bomb = zstd::bulk::compress(&vec![0u8; 32 << 20], 3).unwrap();
    let err = failing(&p.with_stored_index(&bomb), None);
    assert!(err.contains("more than 64 bytes per stored byte"), "{err}");
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_contentsize(false).unwrap();
    std::io::Write::write_all(&mut enc, &raw).unwrap();
    let err = failing(&p.with_stored_index(&enc.finish().unwrap()), None);
    assert!(err.contains("does not declare its size"), "{err}");
    // Trailing bytes after the frame, and a byte left over after the index.
    let mut trailing = zstd::bulk::compress(&raw, 3).unwrap();
    trailing.push(0);
    let err = failing(&p.with_stored_index(&trailing), None);
    assert!(err.contains("after the end of the zstd frame"), "{err}");
    let mut longer = raw.clone();
    longer.push(0);
    failing(&p.with_index_bytes(&longer), None);
    // An unknown required flag beside the known one.
    let mut q = p.clone();
    q.header.flags |= 2;
    let err = failing(&q.to_bytes(), None);
    assert!(err.contains("unknown required flags 0x0002"), "{err}");
}

#[test]
fn spec_reader_refuses_v14_violations() {
    use tpde_format::format::Op;
    use tpde_tests::hostile::{Parts, Table};
    require_python();
    let good = std::fs::read(vectors_v1().join("v14_rot_inline.tpde")).unwrap();
    // A ReplaceRot chunk in a minor-3 file (§8.2.3).
    let mut p = Parts::parse(&good);
    p.header.minor = 3;
    let err = failing(&p.to_bytes(), None);
    assert!(
        err.contains("op ReplaceRot (v1.4) in a minor 3 file"),
        "{err}"
    );
    // Relabelled plain Replace: the values come out rotated, and the
    // tensor's digest says so.
    let mut p = Parts::parse(&good);
    let t = p
        .index
        .tensors
        .iter()
        .position(|t| t.name == "a.f32")
        .unwrap();
    let Payload::Chunked { chunks, .. } = &p.index.tensors[t].payload else {
        panic!("a.f32 is chunked")
    };
    assert_eq!(chunks[0].op, Op::ReplaceRot);
    p.edit_chunk(Table::Target, t, 0, |ch, _| ch.op = Op::Replace);
    let err = failing(&p.to_bytes(), None);
    assert!(err.contains("a.f32") && err.contains("sha256"), "{err}");
}

/// The v1.5 rules of §6.3.4 and §8.2.3, each broken in a copy of a sliced
/// vector (gru.w [12, 8], gru.b [48] and head.w [1, 16] over inline bases
/// [1, 12, 8], [1, 96] and [16, 1]): the spec reader refuses every one,
/// and accepts base rows out of order or taken twice.
/// The spec reader refuses the v1.6 violations `hostile_v16.rs` checks in
/// the Rust reader: a 32-state plane under minor 5, and a plane read with
/// the wrong number of states.
#[test]
fn spec_reader_refuses_v17_violations() {
    use tpde_tests::hostile::Parts;
    require_python();
    let good = std::fs::read(vectors_v1().join("v17_chunk_digests_inline.tpde")).unwrap();
    let edit = |f: &dyn Fn(&mut Parts)| {
        let mut p = Parts::parse(&good);
        f(&mut p);
        failing(&p.to_bytes(), None)
    };
    fn digests(p: &mut Parts) -> &mut Vec<[u8; 32]> {
        let t = p.target("attn.w");
        match &mut p.index.tensors[t].payload {
            Payload::Chunked {
                chunk_sha256: Some(d),
                ..
            } => d,
            _ => panic!("attn.w has chunk digests"),
        }
    }
    let err = edit(&|p| p.header.minor = 6);
    assert!(
        err.contains("chunk digests (v1.7) in a minor 6 file"),
        "{err}"
    );
    let err = edit(&|p| {
        digests(p).pop();
    });
    assert!(err.contains("chunk digest count differs"), "{err}");
    let err = edit(&|p| digests(p)[2][5] ^= 1);
    assert!(err.contains("chunk 2: reconstructs to sha256"), "{err}");
    let err = edit(&|p| {
        if let Payload::Chunked {
            chunks,
            chunk_sha256,
            ..
        } = &mut p.index.bases[0].payload
        {
            *chunk_sha256 = Some(vec![[0; 32]; chunks.len()]);
        }
    });
    assert!(
        err.contains("an inline base cannot have chunk digests"),
        "{err}"
    );
}

#[test]
fn spec_reader_refuses_v16_violations() {
    use tpde_tests::hostile::{Parts, Table};
    require_python();
    let good = std::fs::read(vectors_v1().join("v16_rans32_planes.tpde")).unwrap();
    let mut p = Parts::parse(&good);
    p.header.minor = 5;
    let err = failing(&p.to_bytes(), None);
    assert!(
        err.contains("32-state rans plane (v1.6) in a minor 5 file"),
        "{err}"
    );
    // A Rans32 plane relabelled Rans: read with 4 states, it fails.
    let mut p = Parts::parse(&good);
    let t = (0..p.table(Table::Target).len())
        .find(|&t| {
            matches!(&p.chunks(Table::Target, t)[0].values.codec,
                Codec::PerPlane(pl) if pl.iter().any(|x| x.codec == PlaneCodec::Rans32))
        })
        .expect("a target with a Rans32 plane");
    p.edit_chunk(Table::Target, t, 0, |ch, _| {
        if let Codec::PerPlane(planes) = &mut ch.values.codec {
            for x in planes.iter_mut().filter(|x| x.codec == PlaneCodec::Rans32) {
                x.codec = PlaneCodec::Rans;
            }
        }
    });
    let err = failing(&p.to_bytes(), None);
    assert!(err.contains("chunk 0") && err.contains("rans"), "{err}");
}

#[test]
fn spec_reader_refuses_v15_violations() {
    use tpde_format::format::RowRun;
    use tpde_tests::hostile::Parts;
    require_python();
    let good = std::fs::read(vectors_v1().join("v15_slices_inline.tpde")).unwrap();
    let edit = |name: &str, f: &dyn Fn(&mut u64, &mut Vec<RowRun>)| {
        let mut p = Parts::parse(&good);
        let t = p.target(name);
        let BaseRef::InlineSlices {
            row_elems, rows, ..
        } = &mut p.index.tensors[t].base
        else {
            panic!("{name} has a sliced base")
        };
        f(row_elems, rows);
        p.to_bytes()
    };
    // The control: the vector taken apart and put back unchanged (its index
    // recompressed), whose runs take base rows out of order (gru.w: 4..,
    // then 0..; gru.b: 1, then 0), is read.
    let p = Parts::parse(&good);
    let BaseRef::InlineSlices { rows, .. } = &p.index.tensors[p.target("gru.b")].base else {
        panic!("gru.b has a sliced base")
    };
    assert!(rows[1].base_start < rows[0].base_start, "{rows:?}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("same.tpde");
    std::fs::write(&path, edit("gru.b", &|_, _| {})).unwrap();
    run_ok(&path, None, None);
    // (a) A minor-4 header over a sliced base.
    let mut p = Parts::parse(&good);
    p.header.minor = 4;
    let err = failing(&p.to_bytes(), None);
    assert!(
        err.contains("sliced base (v1.5) in a minor 4 file"),
        "{err}"
    );
    // (b) row_elems 0.
    let err = failing(&edit("gru.w", &|r, _| *r = 0), None);
    assert!(
        err.contains("'gru.w'") && err.contains("row_elems 0"),
        "{err}"
    );
    // (c) row_elems not dividing the target's element count (96)...
    let err = failing(&edit("gru.w", &|r, _| *r = 7), None);
    assert!(
        err.contains("row_elems 7 does not divide the tensor's 96 elements"),
        "{err}"
    );
    // ... or the base's: every divisor of an inline base's count here
    // divides its target's too, so an external base's recorded shape.
    let ext = std::fs::read(vectors_v1().join("v15_slices_external.tpde")).unwrap();
    let mut p = Parts::parse(&ext);
    let t = p.target("gru.w");
    let BaseRef::ExternalSlices { shape, .. } = &mut p.index.tensors[t].base else {
        panic!("gru.w has a sliced base")
    };
    *shape = vec![1, 100];
    let base = vectors_v1().join("base_v15.safetensors");
    let err = failing(&p.to_bytes(), Some(&base));
    assert!(
        err.contains("row_elems 8 does not divide the base's 100 elements"),
        "{err}"
    );
    // (d) Runs out of order, and overlapping, in the target.
    let err = failing(&edit("gru.w", &|_, r| r.swap(0, 1)), None);
    assert!(err.contains("out of order"), "{err}");
    let err = failing(&edit("gru.w", &|_, r| r[1].start = 2), None);
    assert!(err.contains("overlap"), "{err}");
    // (e) A run past the last row: of the target (12 rows of 8)...
    let err = failing(
        &edit("gru.w", &|_, r| r.last_mut().unwrap().count += 1),
        None,
    );
    assert!(err.contains("past the last row of the tensor"), "{err}");
    // ... and of the base (6 rows of 16).
    let err = failing(&edit("gru.b", &|_, r| r[2].base_start = 6), None);
    assert!(err.contains("past the last row of the base"), "{err}");
    let err = failing(&edit("gru.b", &|_, r| r[0].base_start = u64::MAX), None);
    assert!(err.contains("overflows"), "{err}");
    // An empty run.
    let err = failing(&edit("head.w", &|_, r| r[0].count = 0), None);
    assert!(err.contains("empty row run"), "{err}");
    // Two runs taking the same base row are a valid map (§6.3.4 rule 3):
    // the reader builds the predictor, and only the digest tells it is
    // not the one the tensor was packed with.
    let err = failing(&edit("gru.b", &|_, r| r[1].base_start = 1), None);
    assert!(
        err.contains("'gru.b'") && err.contains("sha256") && !err.contains("row run"),
        "{err}"
    );
}
