//! One test per rule of format 1.4 a hostile archive can break: the
//! `ReplaceRot` op (spec §6.1, §8.2.3). Each asserts the reference reader's
//! exact error; the independent reader's refusals are in `spec_reader.rs`.

use tpde_format::format::{Header, Op, Payload};
use tpde_format::{Error, Location};
use tpde_tests::hostile::*;
use tpde_tests::vectors_v1;

/// Every `(table, tensor, chunk)` whose op is `ReplaceRot`.
fn rotated(p: &Parts) -> Vec<(Table, usize, usize)> {
    let mut out = Vec::new();
    for (table, records) in [
        (Table::Base, &p.index.bases),
        (Table::Target, &p.index.tensors),
    ] {
        for (t, rec) in records.iter().enumerate() {
            if let Payload::Chunked { chunks, .. } = &rec.payload {
                for (c, ch) in chunks.iter().enumerate() {
                    if ch.op == Op::ReplaceRot {
                        out.push((table, t, c));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn the_inline_v14_vector_needs_minor_4_and_decodes() {
    let a = vector("v14_rot_inline");
    assert_eq!(Header::parse(&a).unwrap().minor, 4);
    let p = Parts::parse(&a);
    let rot = rotated(&p);
    assert!(rot.iter().any(|r| r.0 == Table::Base), "{rot:?}");
    assert!(rot.iter().any(|r| r.0 == Table::Target), "{rot:?}");
    decode_all(&a).unwrap();
}

#[test]
fn a_replace_rot_chunk_in_a_minor_3_file() {
    // §8.2.3: a 1.3 reader meets op 4 as an unknown variant, so a 1.4
    // reader refuses it under minor 3 too, naming the chunk. Inline bases
    // are checked first.
    let mut p = Parts::parse(&vector("v14_rot_inline"));
    p.header.minor = 3;
    let e = open_err(&p.to_bytes());
    assert!(
        matches!(&e, Error::InvalidIndex { location: Location::Chunk { tensor, base: true, chunk: 0 }, reason }
            if tensor == "c.f32" && reason.contains("ReplaceRot (v1.4)") && reason.contains("minor 3")),
        "{e:?}"
    );
    // With the bases' chunks relabelled, the first target chunk is named.
    for (table, t, c) in rotated(&p) {
        if table == Table::Base {
            p.edit_chunk(table, t, c, |ch, _| ch.op = Op::Replace);
        }
    }
    let e = open_err(&p.to_bytes());
    assert!(
        matches!(&e, Error::InvalidIndex { location: Location::Chunk { tensor, base: false, chunk: 0 }, reason }
            if tensor == "a.f32" && reason.contains("ReplaceRot (v1.4)")),
        "{e:?}"
    );
}

#[test]
fn a_replace_rot_chunk_relabelled_replace_fails_its_digest() {
    // The op is not covered by the chunk CRC (it sits in the index, whose
    // CRC the harness recomputes): read as plain `Replace` the values come
    // out rotated, and the tensor's digest says so.
    let mut p = Parts::parse(&vector("v14_rot_external"));
    let (table, t, c) = rotated(&p)[0];
    let name = p.index.tensors[t].name.clone();
    p.edit_chunk(table, t, c, |ch, _| ch.op = Op::Replace);
    let bytes = p.to_bytes();
    let a = open(&bytes).unwrap();
    let base =
        tpde_format::safetensors::Checkpoint::open(vectors_v1().join("base_v14.safetensors"))
            .unwrap();
    let e = a.decode_tensor(&name, &base).unwrap_err();
    assert!(
        matches!(&e, Error::TensorDigest { tensor, .. } if *tensor == name),
        "{e:?}"
    );
}

/// A writer capped at an older minor (`--format 1.0` to `1.3`) never
/// stores `ReplaceRot`, even where it would win: a tensor large enough for
/// the op trial's piecewise re-comparison (over 65,536 elements) whose
/// base is noise, so `Replace` wins the whole-sample trial. (A review
/// found the re-comparison brought `ReplaceRot` back below minor 4.)
#[test]
fn a_writer_capped_below_1_4_never_rotates() {
    use tpde_format::pack::{pack, BaseMode, PackOptions};
    use tpde_format::safetensors::Checkpoint;
    use tpde_format::{Dtype, WriteOptions};
    let n = 1usize << 17;
    let mut rng = tpde_tests::Rng(0x0014_cafe);
    let target: Vec<u8> = (0..n)
        .flat_map(|_| (tpde_tests::weight_bits(&mut rng, 4) as u32).to_le_bytes())
        .collect();
    let noise = rng.bytes(4 * n);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.safetensors");
    let b = dir.path().join("b.safetensors");
    let one = |data: Vec<u8>| vec![("w".to_string(), Dtype::F32, vec![n as u64], data)];
    std::fs::write(&t, tpde_tests::safetensors_bytes(&one(target), None)).unwrap();
    std::fs::write(&b, tpde_tests::safetensors_bytes(&one(noise), None)).unwrap();
    let (t, b) = (Checkpoint::open(&t).unwrap(), Checkpoint::open(&b).unwrap());
    for max in 0..=4u16 {
        for mode in [BaseMode::External, BaseMode::Inline] {
            let out = dir.path().join(format!("a{max}{mode:?}.tpde"));
            let opts = PackOptions {
                write: WriteOptions::default().with_max_minor(max),
                base_mode: mode,
            };
            pack(&t, Some(&b), &out, &opts, &mut |_| {}).unwrap();
            let bytes = std::fs::read(&out).unwrap();
            let minor = Header::parse(&bytes).unwrap().minor;
            let rot = rotated(&Parts::parse(&bytes));
            assert!(minor <= max, "max {max} {mode:?}: header minor {minor}");
            if max < 4 {
                assert!(rot.is_empty(), "max {max} {mode:?}: {rot:?}");
            } else {
                // Writing 1.4 the target is stored rotated: the case is real.
                assert!(rot.iter().any(|r| r.0 == Table::Target), "{mode:?}");
            }
            decode_all_with(&bytes, &b).unwrap();
        }
    }
}
