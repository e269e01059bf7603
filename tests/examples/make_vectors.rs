//! Writes the golden vectors of format v1 into `tests/vectors/v1/`.
//!
//! Run: `cargo run -p tpde-tests --example make_vectors`.
//!
//! Vectors are never regenerated, only added to: a vector whose archive
//! already exists is left alone (its manifest entry too), and writing one
//! never replaces an existing file. To add a vector, add it to `vectors()`
//! under a new name and run this again; commit the new archive and the
//! grown `manifest.json`.
//!
//! The manifest's digests are computed from the *inputs* (the safetensors
//! files handed to `pack`), not from the archive, so the tests that compare a
//! decode against them check the archive against an independent truth.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use tpde_format::pack::{pack, BaseMode, PackOptions};
use tpde_format::safetensors::Checkpoint;
use tpde_format::{Dtype, WriteOptions};
use tpde_tests::{safetensors_bytes, sha256_hex, vectors_v1, Rng, TensorData};

/// The shared external base file, shipped beside the archives.
const BASE_FILE: &str = "base.safetensors";

enum Target {
    /// One safetensors file: name, tensors, `__metadata__`.
    Single(
        &'static str,
        Vec<TensorData>,
        Option<Vec<(&'static str, &'static str)>>,
    ),
    /// A sharded checkpoint: index file name, shards (name, tensors).
    Sharded(&'static str, Vec<(&'static str, Vec<TensorData>)>),
}

struct Vector {
    name: &'static str,
    description: &'static str,
    chunk_elems: u64,
    target: Target,
    /// Base tensors and how they are kept; `None`: no base at all.
    base: Option<(Vec<TensorData>, BaseMode)>,
}

fn mask(w: usize) -> u64 {
    if w == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * w)) - 1
    }
}

fn get(buf: &[u8], i: usize, w: usize) -> u64 {
    let mut a = [0u8; 8];
    a[..w].copy_from_slice(&buf[i * w..(i + 1) * w]);
    u64::from_le_bytes(a)
}

fn put(buf: &mut [u8], i: usize, w: usize, v: u64) {
    buf[i * w..(i + 1) * w].copy_from_slice(&v.to_le_bytes()[..w]);
}

/// A random element of dtype `d` (BOOL stays 0/1).
fn random_word(rng: &mut Rng, d: Dtype) -> u64 {
    if d == Dtype::Bool {
        rng.below(2)
    } else {
        rng.next_u64() & mask(d.width())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pattern {
    /// Flip low bits: XOR deltas are tiny, ADD deltas are not.
    Xor,
    /// Add a small number: ADD deltas are tiny, XOR deltas carry.
    Add,
    /// Set to a constant: REPLACE values are all equal, the others random.
    Replace,
}

/// A changed element under `p` (BOOL: flip, or set to 1).
fn changed(rng: &mut Rng, d: Dtype, p: Pattern, b: u64, c: u64) -> u64 {
    let m = mask(d.width());
    match (d, p) {
        (Dtype::Bool, Pattern::Replace) => 1,
        (Dtype::Bool, _) => b ^ 1,
        (_, Pattern::Xor) => b ^ (1 + rng.below(3)),
        (_, Pattern::Add) => b.wrapping_add(1 + rng.below(3)) & m,
        (_, Pattern::Replace) => c,
    }
}

/// A base tensor and a target derived from it with `ce`-element chunks laid
/// out as: chunk 0 unchanged (zero chunk), chunk 1 three changes (sparse),
/// every later chunk fully changed (dense; chunk 2 is the middle chunk the
/// writer tries the combine ops on, so `p` decides the tensor's op).
fn delta_pair(rng: &mut Rng, d: Dtype, n: usize, ce: usize, p: Pattern) -> (Vec<u8>, Vec<u8>) {
    let w = d.width();
    let mut base = vec![0u8; n * w];
    for i in 0..n {
        put(&mut base, i, w, random_word(rng, d));
    }
    let mut target = base.clone();
    let c = random_word(rng, d) | 1;
    for i in ce..n {
        let in_sparse_chunk = i < 2 * ce;
        if in_sparse_chunk && !matches!(i - ce, 5 | 17 | 90) {
            continue;
        }
        let b = get(&base, i, w);
        put(&mut target, i, w, changed(rng, d, p, b, c));
    }
    (base, target)
}

/// A baseless tensor with `ce`-element chunks: chunk 0 all zero, chunk 1
/// three non-zero elements, chunk 2 small values (compresses), later chunks
/// random (stored raw).
fn standalone_tensor(rng: &mut Rng, d: Dtype, n: usize, ce: usize) -> Vec<u8> {
    let w = d.width();
    let mut t = vec![0u8; n * w];
    for i in ce..n {
        let v = match i / ce {
            1 if matches!(i - ce, 3 | 40 | 100) => random_word(rng, d) | 1,
            1 => 0,
            2 if d == Dtype::Bool => rng.below(2),
            2 => rng.below(4),
            _ => random_word(rng, d),
        };
        put(&mut t, i, w, v);
    }
    t
}

fn lower(d: Dtype) -> String {
    d.name().to_lowercase()
}

fn td(name: impl Into<String>, d: Dtype, shape: &[u64], data: Vec<u8>) -> TensorData {
    (name.into(), d, shape.to_vec(), data)
}

/// Target and base tensors of the delta vectors (shared by all base modes).
fn delta_set() -> (Vec<TensorData>, Vec<TensorData>) {
    const CE: usize = 128;
    const N: usize = 3 * CE + 17; // not a multiple of the chunk size
    let mut rng = Rng(0x7d3e_2024_0001);
    let (mut target, mut base) = (Vec::new(), Vec::new());
    for d in Dtype::ALL {
        let patterns: &[Pattern] = if d == Dtype::Bool {
            &[Pattern::Xor, Pattern::Replace]
        } else {
            &[Pattern::Xor, Pattern::Add, Pattern::Replace]
        };
        for &p in patterns {
            let (b, t) = delta_pair(&mut rng, d, N, CE, p);
            let name = format!("{}.{}", lower(d), format!("{p:?}").to_lowercase());
            base.push(td(&name, d, &[N as u64], b));
            target.push(td(&name, d, &[N as u64], t));
        }
    }
    // Sparse chunks whose positions stream compresses: every 4th element.
    {
        let d = Dtype::F32;
        let n = 2 * CE;
        let b: Vec<u8> = (0..n)
            .flat_map(|i| (i as f32 * 0.25).to_le_bytes())
            .collect();
        let mut t = b.clone();
        for i in (0..n).step_by(4) {
            put(&mut t, i, 4, rng.next_u64() & mask(4));
        }
        base.push(td("positions.regular", d, &[16, 16], b));
        target.push(td("positions.regular", d, &[16, 16], t));
    }
    // A 2-d tensor under a non-ASCII name with '/' (never used as a path).
    {
        let (b, t) = delta_pair(&mut rng, Dtype::BF16, 7 * 41, CE, Pattern::Add);
        base.push(td("émbed/wéights.0", Dtype::BF16, &[7, 41], b));
        target.push(td("émbed/wéights.0", Dtype::BF16, &[7, 41], t));
    }
    // Identical in base and target: all zero chunks.
    let same = rng.bytes(300 * 8);
    base.push(td("identical.i64", Dtype::I64, &[300], same.clone()));
    target.push(td("identical.i64", Dtype::I64, &[300], same));
    // Empty and 0-d tensors present in both.
    base.push(td("empty.f32", Dtype::F32, &[0], Vec::new()));
    target.push(td("empty.f32", Dtype::F32, &[0], Vec::new()));
    base.push(td("empty2d.u16", Dtype::U16, &[4, 0], Vec::new()));
    target.push(td("empty2d.u16", Dtype::U16, &[4, 0], Vec::new()));
    base.push(td(
        "scalar.f32",
        Dtype::F32,
        &[],
        1.5f32.to_le_bytes().to_vec(),
    ));
    target.push(td(
        "scalar.f32",
        Dtype::F32,
        &[],
        (-0.0f32).to_le_bytes().to_vec(),
    ));
    base.push(td("scalar.same.u16", Dtype::U16, &[], vec![7, 1]));
    target.push(td("scalar.same.u16", Dtype::U16, &[], vec![7, 1]));
    // Only in the target (stored standalone), dtype and shape changed
    // (stored standalone), only in the base (ignored).
    target.push(td(
        "new.only_in_target",
        Dtype::U8,
        &[3 * CE as u64 + 5],
        standalone_tensor(&mut rng, Dtype::U8, 3 * CE + 5, CE),
    ));
    base.push(td("dtype_changed", Dtype::F32, &[10], rng.bytes(40)));
    target.push(td("dtype_changed", Dtype::BF16, &[10], rng.bytes(20)));
    base.push(td("shape_changed", Dtype::I32, &[2, 5], rng.bytes(40)));
    target.push(td("shape_changed", Dtype::I32, &[5, 2], rng.bytes(40)));
    base.push(td("only_in_base", Dtype::F16, &[33], rng.bytes(66)));
    (target, base)
}

fn standalone_set() -> Vec<TensorData> {
    const CE: usize = 128;
    const N: usize = 3 * CE + 17;
    let mut rng = Rng(0x7d3e_2024_0002);
    let mut out = Vec::new();
    for d in Dtype::ALL {
        out.push(td(
            format!("{}.mixed", lower(d)),
            d,
            &[N as u64],
            standalone_tensor(&mut rng, d, N, CE),
        ));
    }
    out.push(td("empty.f32", Dtype::F32, &[0], Vec::new()));
    out.push(td("empty3d.bf16", Dtype::BF16, &[3, 0, 2], Vec::new()));
    out.push(td(
        "scalar.f64",
        Dtype::F64,
        &[],
        std::f64::consts::PI.to_le_bytes().to_vec(),
    ));
    out.push(td("scalar.zero.i32", Dtype::I32, &[], vec![0; 4]));
    out.push(td("odd.u16", Dtype::U16, &[7, 11], rng.bytes(7 * 11 * 2)));
    out
}

fn vectors() -> Vec<Vector> {
    let (dt, db) = delta_set();
    let half = dt.len() / 2;
    let shard1: Vec<TensorData> = dt[..half].to_vec();
    let shard2: Vec<TensorData> = dt[half..].to_vec();
    let meta = Some(vec![("format", "pt")]);
    // 1, 2, 3 and 4-byte LEB128 gaps inside one 2^22-element chunk.
    let mut gaps = vec![0u8; (1 << 22) + 5696];
    for (p, v) in [(3usize, 9u8), (200, 1), (20_000, 0x80), (4_000_000, 0xff)] {
        gaps[p] = v;
    }
    gaps[(1 << 22) + 100] = 42;
    vec![
        Vector {
            name: "minimal",
            description:
                "smallest useful archive: one F16 [2,2] tensor, no base, 2-element chunks \
                          (one sparse chunk, one zero chunk); spec/FORMAT.md appendix A dumps it",
            chunk_elems: 2,
            target: Target::Single(
                "minimal.safetensors",
                vec![td(
                    "w",
                    Dtype::F16,
                    &[2, 2],
                    vec![0x00, 0x3c, 0, 0, 0, 0, 0, 0],
                )],
                None,
            ),
            base: None,
        },
        Vector {
            name: "standalone",
            description: "no base: all 15 dtypes (zero, sparse, dense-zstd and dense-raw chunks, \
                          last chunk short), empty, 0-d and odd-shaped tensors",
            chunk_elems: 128,
            target: Target::Single("standalone.safetensors", standalone_set(), None),
            base: None,
        },
        Vector {
            name: "delta_inline",
            description: "inline compressed base: every dtype under xor/add/replace deltas with \
                          zero, sparse and dense chunks; missing, extra, dtype- and shape-changed \
                          tensors; empty and 0-d tensors; __metadata__ in the header",
            chunk_elems: 128,
            target: Target::Single("target.safetensors", dt.clone(), meta.clone()),
            base: Some((db.clone(), BaseMode::Inline)),
        },
        Vector {
            name: "delta_inline_plain",
            description:
                "as delta_inline, with the inline base stored plain (aligned, uncompressed)",
            chunk_elems: 128,
            target: Target::Single("target.safetensors", dt.clone(), meta.clone()),
            base: Some((db.clone(), BaseMode::InlinePlain)),
        },
        Vector {
            name: "delta_external",
            description: "as delta_inline, against the external base base.safetensors",
            chunk_elems: 128,
            target: Target::Single("target.safetensors", dt, meta),
            base: Some((db.clone(), BaseMode::External)),
        },
        Vector {
            name: "sharded_external",
            description: "sharded target (index json + 2 shards) against the external base \
                          base.safetensors",
            chunk_elems: 128,
            target: Target::Sharded(
                "model.safetensors.index.json",
                vec![
                    ("model-00001-of-00002.safetensors", shard1),
                    ("model-00002-of-00002.safetensors", shard2),
                ],
            ),
            base: Some((db, BaseMode::External)),
        },
        Vector {
            name: "large_gaps",
            description: "no base, 2^22-element chunks: sparse positions with 1-, 2-, 3- and \
                          4-byte LEB128 gaps",
            chunk_elems: 1 << 22,
            target: Target::Single(
                "large_gaps.safetensors",
                vec![td("gaps.u8", Dtype::U8, &[gaps.len() as u64], gaps)],
                None,
            ),
            base: None,
        },
    ]
}

fn mode_name(m: Option<BaseMode>) -> &'static str {
    match m {
        None => "none",
        Some(BaseMode::Inline) => "inline",
        Some(BaseMode::InlinePlain) => "inline_plain",
        Some(BaseMode::External) => "external",
    }
}

/// Writes `bytes` to `path`, never replacing a file (an identical existing
/// file is accepted: the shared base is written by the first vector needing it).
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), String> {
    match std::fs::read(path) {
        Ok(old) if old == bytes => Ok(()),
        Ok(_) => Err(format!(
            "{} exists with other contents: vectors are never regenerated",
            path.display()
        )),
        Err(_) => std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display())),
    }
}

fn make(v: &Vector, dir: &Path) -> Result<Value, String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut tensors = BTreeMap::new();
    let mut files = BTreeMap::new();
    let target_path = match &v.target {
        Target::Single(name, ts, meta) => {
            let bytes = safetensors_bytes(ts, meta.as_deref());
            let p = tmp.path().join(name);
            std::fs::write(&p, &bytes).map_err(|e| e.to_string())?;
            files.insert(name.to_string(), sha256_hex(&bytes));
            for (n, _, _, data) in ts {
                tensors.insert(n.clone(), sha256_hex(data));
            }
            p
        }
        Target::Sharded(index_name, shards) => {
            let root = tmp.path().join("target");
            std::fs::create_dir(&root).map_err(|e| e.to_string())?;
            let mut weight_map = Map::new();
            let mut total = 0usize;
            for (shard, ts) in shards {
                let bytes = safetensors_bytes(ts, Some(&[("format", "pt")]));
                std::fs::write(root.join(shard), &bytes).map_err(|e| e.to_string())?;
                files.insert(shard.to_string(), sha256_hex(&bytes));
                for (n, _, _, data) in ts {
                    tensors.insert(n.clone(), sha256_hex(data));
                    weight_map.insert(n.clone(), Value::from(*shard));
                    total += data.len();
                }
            }
            let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
            let mut text = serde_json::to_vec_pretty(&index).map_err(|e| e.to_string())?;
            text.push(b'\n');
            std::fs::write(root.join(index_name), &text).map_err(|e| e.to_string())?;
            files.insert(index_name.to_string(), sha256_hex(&text));
            root
        }
    };
    let (base_ckpt, mode, base_name) = match &v.base {
        None => (None, None, None),
        Some((ts, mode)) => {
            let bytes = safetensors_bytes(ts, None);
            let p = if *mode == BaseMode::External {
                dir.join(BASE_FILE)
            } else {
                tmp.path().join(BASE_FILE)
            };
            write_new(&p, &bytes)?;
            let name = (*mode == BaseMode::External).then_some(BASE_FILE);
            let c = Checkpoint::open(&p).map_err(|e| e.to_string())?;
            (Some(c), Some(*mode), name)
        }
    };
    let target = Checkpoint::open(&target_path).map_err(|e| e.to_string())?;
    let archive = dir.join(format!("{}.tpde", v.name));
    let opts = PackOptions {
        // Refuses to overwrite: `with_overwrite` is left off.
        write: WriteOptions::default()
            .with_chunk_elems(v.chunk_elems)
            .with_level(3),
        base_mode: mode.unwrap_or_default(),
    };
    pack(&target, base_ckpt.as_ref(), &archive, &opts, &mut |_| {})
        .map_err(|e| format!("{}: {e}", v.name))?;
    let archive_sha = sha256_hex(&std::fs::read(&archive).map_err(|e| e.to_string())?);
    Ok(json!({
        "archive": format!("{}.tpde", v.name),
        "archive_sha256": archive_sha,
        "description": v.description,
        "chunk_elems": v.chunk_elems,
        "base_mode": mode_name(mode),
        "base_file": base_name,
        "tensors": tensors,
        "files": files,
    }))
}

fn main() -> Result<(), String> {
    let dir: PathBuf = vectors_v1();
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let manifest_path = dir.join("manifest.json");
    let mut manifest: Map<String, Value> = match std::fs::read(&manifest_path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("manifest.json: {e}"))?,
        Err(_) => Map::new(),
    };
    manifest
        .entry("format")
        .or_insert_with(|| Value::from("tpde 1.0"));
    manifest.entry("note").or_insert_with(|| {
        Value::from(
            "Golden vectors: never regenerated, only added to (cargo run -p tpde-tests \
                 --example make_vectors). Digests are of the inputs given to pack.",
        )
    });
    let mut entries = match manifest.remove("vectors") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut added = 0;
    for v in vectors() {
        let archive = dir.join(format!("{}.tpde", v.name));
        match (archive.exists(), entries.contains_key(v.name)) {
            (true, true) => {
                println!("{}: exists, left alone", v.name);
                continue;
            }
            (true, false) => {
                return Err(format!(
                    "{} exists but manifest.json has no entry for it: restore manifest.json \
                     from git rather than regenerate",
                    archive.display()
                ))
            }
            (false, true) => {
                return Err(format!(
                    "manifest.json lists {} but {} is missing: restore it from git rather \
                     than regenerate",
                    v.name,
                    archive.display()
                ))
            }
            (false, false) => {}
        }
        let entry = make(&v, &dir)?;
        println!("{}: written", v.name);
        entries.insert(v.name.to_owned(), entry);
        added += 1;
    }
    manifest.insert("vectors".into(), Value::Object(entries));
    if added > 0 {
        let mut text = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        text.push(b'\n');
        std::fs::write(&manifest_path, text).map_err(|e| e.to_string())?;
    }
    println!("{added} vector(s) added");
    Ok(())
}
