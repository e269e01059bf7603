//! Golden vectors of format v1 (`tests/vectors/v1/`): the Rust reader decodes
//! every archive, matches the manifest's digests (computed from the inputs at
//! generation time, not from the archives), unpacks byte-identically, and the
//! vectors together cover every dtype, chunk kind, combine op and codec.
//!
//! Vectors are never regenerated, only added to
//! (`cargo run -p tpde-tests --example make_vectors`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use tpde_format::codec::stream;
use tpde_format::format::{BaseRef, ChunkKind, Payload};
use tpde_format::read::Table;
use tpde_format::safetensors::Checkpoint;
use tpde_format::unpack::{unpack, verify, UnpackOptions};
use tpde_format::{Archive, BaseProvider, Dtype, NoBase};
use tpde_tests::{repo_root, sha256_file, sha256_hex, vectors_v1};

fn manifest() -> BTreeMap<String, Value> {
    let p = vectors_v1().join("manifest.json");
    let text = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let v: Value = serde_json::from_slice(&text).unwrap();
    v["vectors"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

fn base_for(entry: &Value) -> Option<Checkpoint> {
    entry["base_file"]
        .as_str()
        .map(|f| Checkpoint::open(vectors_v1().join(f)).unwrap())
}

#[test]
fn manifest_lists_every_archive_and_nothing_else() {
    let m = manifest();
    assert!(
        m.len() >= 7,
        "expected at least 7 vectors, found {}",
        m.len()
    );
    let on_disk: BTreeSet<String> = std::fs::read_dir(vectors_v1())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tpde"))
        .collect();
    let listed: BTreeSet<String> = m
        .values()
        .map(|e| e["archive"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(on_disk, listed);
}

#[test]
fn every_vector_decodes_to_its_manifest_digests_and_unpacks_byte_identically() {
    for (name, entry) in manifest() {
        let path = vectors_v1().join(entry["archive"].as_str().unwrap());
        // The vector itself is unchanged since it was generated.
        assert_eq!(
            sha256_file(&path),
            entry["archive_sha256"].as_str().unwrap(),
            "{name}: archive bytes changed: vectors are never regenerated"
        );
        let a = Archive::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        a.check_crcs().unwrap();
        let base = base_for(&entry);
        let provider: &dyn BaseProvider = match &base {
            Some(b) => b,
            None => &NoBase,
        };
        let want_tensors = str_map(&entry["tensors"]);
        let have: BTreeSet<&str> = a.index().tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            have,
            want_tensors.keys().map(String::as_str).collect(),
            "{name}: tensor names"
        );
        for (t, want) in &want_tensors {
            let bytes = a
                .decode_tensor(t, provider)
                .unwrap_or_else(|e| panic!("{name}/{t}: {e}"));
            assert_eq!(&sha256_hex(&bytes), want, "{name}/{t}");
        }
        let rep = verify(&a, provider, None, &mut |_| {}).unwrap();
        assert_eq!(rep.tensors, want_tensors.len());

        // Unpack: one file to a file, several (or extra files) to a directory.
        let want_files = str_map(&entry["files"]);
        let dir = tempfile::tempdir().unwrap();
        let idx = a.index();
        let single = idx.files.len() == 1 && idx.extra_files.is_empty();
        let out = if single {
            dir.path().join(&idx.files[0].name)
        } else {
            dir.path().join("out")
        };
        unpack(&a, provider, &out, &UnpackOptions::default(), &mut |_| {}).unwrap();
        let out_dir = if single { dir.path() } else { out.as_path() };
        let got: BTreeMap<String, String> = std::fs::read_dir(out_dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    sha256_file(&e.path()),
                )
            })
            .collect();
        assert_eq!(got, want_files, "{name}: unpacked files");
    }
}

#[test]
fn an_external_vector_needs_its_base() {
    let a = Archive::open(vectors_v1().join("delta_external.tpde")).unwrap();
    let err = a.decode_tensor("f32.xor", &NoBase).unwrap_err();
    assert!(
        matches!(err, tpde_format::Error::MissingBase { .. }),
        "{err}"
    );
}

/// What the vectors exercise, read from their indexes.
#[derive(Default, Debug)]
struct Coverage {
    dtypes: BTreeSet<&'static str>,
    kinds: BTreeSet<&'static str>,
    kind_ops: BTreeSet<(&'static str, &'static str)>,
    position_codecs: BTreeSet<&'static str>,
    value_codecs: BTreeSet<&'static str>,
    target_bases: BTreeSet<&'static str>,
    base_payloads: BTreeSet<&'static str>,
    varint_lengths: BTreeSet<usize>,
    empty: bool,
    scalar: bool,
    short_last_chunk: bool,
    multi_file: bool,
    extra_file: bool,
    standalone_in_delta: bool,
}

fn varint_lengths(raw: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut len = 0;
    for &b in raw {
        len += 1;
        if b & 0x80 == 0 {
            out.push(len);
            len = 0;
        }
    }
    out
}

fn cover(a: &Archive<Vec<u8>>, c: &mut Coverage) {
    let idx = a.index();
    c.multi_file |= idx.files.len() > 1;
    c.extra_file |= !idx.extra_files.is_empty();
    for b in &idx.bases {
        c.base_payloads.insert(match b.payload {
            Payload::Plain { .. } => "plain",
            Payload::Chunked { .. } => "chunked",
        });
    }
    let has_base = !idx.bases.is_empty() || !idx.base_files.is_empty();
    for (ti, t) in idx.tensors.iter().enumerate() {
        c.dtypes.insert(t.dtype.name());
        c.target_bases.insert(match t.base {
            BaseRef::None => "none",
            BaseRef::Inline { .. } => "inline",
            BaseRef::External { .. } => "external",
            BaseRef::InlineWidened { .. } => "inline-widened",
            BaseRef::ExternalWidened { .. } => "external-widened",
        });
        c.standalone_in_delta |= has_base && t.base == BaseRef::None;
        let n = t.elem_count().unwrap();
        c.empty |= n == 0;
        c.scalar |= t.shape.is_empty();
        let Payload::Chunked {
            chunk_elems,
            chunks,
        } = &t.payload
        else {
            continue;
        };
        c.short_last_chunk |= chunks.len() > 1 && n % chunk_elems != 0;
        for (ci, ch) in chunks.iter().enumerate() {
            c.kinds.insert(ch.kind.name());
            if ch.kind == ChunkKind::Zero {
                continue; // a zero chunk's op means nothing
            }
            c.kind_ops.insert((ch.kind.name(), ch.op.name()));
            c.value_codecs.insert(ch.values.codec.name());
            if ch.kind == ChunkKind::Sparse {
                c.position_codecs.insert(ch.positions.codec.name());
                let stored = a.chunk_bytes(Table::Target, ti, ci, ch).unwrap();
                let mut raw = Vec::new();
                stream::decompress(
                    &ch.positions,
                    &stored[..ch.positions.stored_len as usize],
                    &mut raw,
                )
                .unwrap();
                c.varint_lengths.extend(varint_lengths(&raw));
            }
        }
    }
}

#[test]
fn vectors_cover_every_dtype_kind_op_and_codec() {
    let mut c = Coverage::default();
    for (_, entry) in manifest() {
        let bytes = std::fs::read(vectors_v1().join(entry["archive"].as_str().unwrap())).unwrap();
        let a = Archive::from_bytes(bytes, tpde_format::ReadLimits::default()).unwrap();
        cover(&a, &mut c);
    }
    let all: BTreeSet<&str> = Dtype::ALL.iter().map(|d| d.name()).collect();
    assert_eq!(c.dtypes, all, "dtypes");
    assert_eq!(
        c.kinds,
        ["dense", "sparse", "zero"].into(),
        "chunk kinds: {c:?}"
    );
    let mut want_ops = BTreeSet::new();
    for k in ["dense", "sparse"] {
        for op in ["add", "replace", "xor"] {
            want_ops.insert((k, op));
        }
    }
    assert_eq!(c.kind_ops, want_ops, "kind × op");
    assert_eq!(c.value_codecs, ["raw", "zstd"].into(), "value codecs");
    assert_eq!(c.position_codecs, ["raw", "zstd"].into(), "position codecs");
    assert_eq!(
        c.target_bases,
        ["external", "inline", "none"].into(),
        "base refs"
    );
    assert_eq!(
        c.base_payloads,
        ["chunked", "plain"].into(),
        "inline base payloads"
    );
    assert_eq!(c.varint_lengths, [1, 2, 3, 4].into(), "LEB128 gap lengths");
    assert!(c.empty, "an empty tensor");
    assert!(c.scalar, "a 0-d tensor");
    assert!(
        c.short_last_chunk,
        "a shape not divisible by the chunk size"
    );
    assert!(c.multi_file, "a sharded target");
    assert!(c.extra_file, "an extra file (shard index json)");
    assert!(
        c.standalone_in_delta,
        "a target tensor without a base counterpart"
    );
}

/// Appendix A of spec/FORMAT.md dumps `minimal.tpde`; the dump must be the file.
#[test]
fn spec_appendix_hex_dump_is_the_minimal_vector() {
    let spec = std::fs::read_to_string(repo_root().join("spec/FORMAT.md")).unwrap();
    let marker = "<!-- hexdump: tests/vectors/v1/minimal.tpde -->";
    let at = spec
        .find(marker)
        .unwrap_or_else(|| panic!("spec/FORMAT.md lacks {marker}"));
    let block = &spec[at + marker.len()..];
    let block = &block[block.find("```").unwrap() + 3..];
    let block = &block[block.find('\n').unwrap() + 1..];
    let block = &block[..block.find("```").unwrap()];
    let mut bytes = Vec::new();
    for line in block.lines() {
        // "00000040  01 02 ... |ascii|": offset, then up to 16 hex bytes.
        let mut parts = line.split_whitespace();
        let Some(off) = parts.next() else { continue };
        let off = usize::from_str_radix(off, 16).unwrap();
        assert_eq!(off, bytes.len(), "offset column of line {line:?}");
        for p in parts.take(16) {
            if p.starts_with('|') {
                break;
            }
            bytes.push(u8::from_str_radix(p, 16).unwrap());
        }
    }
    let file = std::fs::read(vectors_v1().join("minimal.tpde")).unwrap();
    assert_eq!(bytes, file, "spec appendix A differs from minimal.tpde");
}
