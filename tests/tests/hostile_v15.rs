//! Hostile input against the v1.5 addition, sliced bases (spec §4.5,
//! §6.3.4, §8.2): one named test per rule a hostile archive can break, each
//! asserting the exact error (and where it points) the reader must give;
//! the independent reader's refusals are in `spec_reader.rs`.
//!
//! The inputs are the v1.5 golden vectors (`tests/vectors/v1/v15_*`), taken
//! apart with `tpde_tests::hostile::Parts`, changed in exactly one way and
//! put back together with lengths and CRCs fixed, so each attack reaches the
//! check it targets.

use tpde_format::format::{BaseRef, RowRun};
use tpde_format::pack::BaseMode;
use tpde_format::safetensors::Checkpoint;
use tpde_format::{Archive, Error, Location, NoBase, ReadLimits, WriteOptions};
use tpde_tests::assert_err;
use tpde_tests::hostile::*;
use tpde_tests::vectors_v1;

fn base_v15() -> Checkpoint {
    Checkpoint::open(vectors_v1().join("base_v15.safetensors")).unwrap()
}

/// True when `e` is `InvalidIndex` at target tensor `name` for `reason`.
fn invalid_at(e: &Error, name: &str, reason: &str) -> bool {
    matches!(e, Error::InvalidIndex { location: Location::Tensor { name: n, base: false }, reason: r }
        if n == name && r.contains(reason))
}

/// The inline vector with target `name`'s sliced map edited by `f`.
fn edit_slices(name: &str, f: impl FnOnce(&mut u64, &mut Vec<RowRun>)) -> Vec<u8> {
    let mut p = Parts::parse(&vector("v15_slices_inline"));
    let t = p.target(name);
    let BaseRef::InlineSlices {
        row_elems, rows, ..
    } = &mut p.index.tensors[t].base
    else {
        panic!("{name} is sliced")
    };
    f(row_elems, rows);
    p.to_bytes()
}

fn run(start: u64, base_start: u64, count: u64) -> RowRun {
    RowRun::new(start, base_start, count)
}

#[test]
fn the_v15_vectors_decode_and_take_base_rows_out_of_order() {
    decode_all_with(&vector("v15_slices_inline"), &NoBase).unwrap();
    decode_all_with(&vector("v15_slices_external"), &base_v15()).unwrap();
    // §6.3.4 rule 3: base rows in any order (gru.b swaps two gates).
    let p = Parts::parse(&vector("v15_slices_inline"));
    let rows = p.index.tensors[p.target("gru.b")].base.rows().unwrap();
    assert!(rows.windows(2).any(|r| r[1].base_start < r[0].base_start));
}

#[test]
fn a_sliced_base_in_a_minor_4_file() {
    // §8.2.3: a 1.4 reader meets variant 9 as unknown; a 1.5 reader refuses
    // it under minor 4 too, naming the first sliced tensor.
    let mut p = Parts::parse(&vector("v15_slices_inline"));
    p.header.minor = 4;
    let e = open_err(&p.to_bytes());
    assert!(invalid_at(&e, "gru.w", "sliced base (v1.5)"), "{e:?}");
}

#[test]
fn sliced_rows_of_zero_elements() {
    let e = open_err(&edit_slices("gru.b", |r, _| *r = 0));
    assert!(invalid_at(&e, "gru.b", "rows of 0 elements"), "{e:?}");
}

#[test]
fn sliced_rows_that_do_not_tile_the_target() {
    // 48 elements in rows of 7 (runs emptied, so only the tiling is wrong).
    let e = open_err(&edit_slices("gru.b", |r, rows| {
        *r = 7;
        rows.clear();
    }));
    assert!(invalid_at(&e, "gru.b", "do not tile"), "{e:?}");
}

#[test]
fn sliced_rows_that_do_not_tile_the_base() {
    // The recorded base shape [1, 97]: 97 elements in rows of 16.
    let mut p = Parts::parse(&vector("v15_slices_external"));
    let t = p.target("gru.b");
    let BaseRef::ExternalSlices { shape, .. } = &mut p.index.tensors[t].base else {
        panic!("gru.b is sliced")
    };
    *shape = vec![1, 97];
    let e = open_err(&p.to_bytes());
    assert!(invalid_at(&e, "gru.b", "do not tile"), "{e:?}");
}

#[test]
fn sliced_runs_out_of_order_in_the_target() {
    let e = open_err(&edit_slices("gru.b", |_, rows| rows.swap(0, 1)));
    assert!(invalid_at(&e, "gru.b", "out of order"), "{e:?}");
}

#[test]
fn sliced_runs_overlapping_in_the_target() {
    let e = open_err(&edit_slices("gru.b", |_, rows| rows[1].start = 0));
    assert!(invalid_at(&e, "gru.b", "out of order"), "{e:?}");
}

#[test]
fn an_empty_sliced_run() {
    let e = open_err(&edit_slices("gru.b", |_, rows| rows[0].count = 0));
    assert!(invalid_at(&e, "gru.b", "empty row run"), "{e:?}");
}

#[test]
fn a_sliced_run_past_the_last_target_row() {
    // gru.b has 3 rows of 16.
    let e = open_err(&edit_slices("gru.b", |_, rows| {
        *rows = vec![run(2, 0, 2)];
    }));
    assert!(invalid_at(&e, "gru.b", "past the last row"), "{e:?}");
}

#[test]
fn a_sliced_run_past_the_last_base_row() {
    // onnx.b has 96 elements: 6 rows of 16.
    let e = open_err(&edit_slices("gru.b", |_, rows| rows[2].base_start = 6));
    assert!(invalid_at(&e, "gru.b", "past the last row"), "{e:?}");
}

#[test]
fn a_sliced_run_whose_end_overflows() {
    let e = open_err(&edit_slices("gru.b", |_, rows| {
        rows[2].base_start = u64::MAX;
    }));
    assert!(invalid_at(&e, "gru.b", "overflows"), "{e:?}");
}

#[test]
fn a_sliced_inline_base_index_out_of_range() {
    let mut p = Parts::parse(&vector("v15_slices_inline"));
    let t = p.target("head.w");
    let BaseRef::InlineSlices { index, .. } = &mut p.index.tensors[t].base else {
        panic!("head.w is sliced")
    };
    *index = 99;
    let e = open_err(&p.to_bytes());
    assert!(invalid_at(&e, "head.w", "index out of range"), "{e:?}");
}

#[test]
fn a_sliced_inline_base_of_another_dtype() {
    // Same bytes as U32: slices are bytes, but the dtypes must agree.
    let mut p = Parts::parse(&vector("v15_slices_inline"));
    let t = p.target("head.w");
    let BaseRef::InlineSlices { index, .. } = p.index.tensors[t].base else {
        panic!("head.w is sliced")
    };
    p.index.bases[index as usize].dtype = tpde_format::Dtype::U32;
    let e = open_err(&p.to_bytes());
    assert!(invalid_at(&e, "head.w", "dtype differs"), "{e:?}");
}

#[test]
fn a_sliced_external_base_file_index_out_of_range() {
    let mut p = Parts::parse(&vector("v15_slices_external"));
    let t = p.target("gru.w");
    let BaseRef::ExternalSlices { file, .. } = &mut p.index.tensors[t].base else {
        panic!("gru.w is sliced")
    };
    *file = 5;
    let e = open_err(&p.to_bytes());
    assert!(invalid_at(&e, "gru.w", "file index out of range"), "{e:?}");
}

#[test]
fn a_sliced_external_base_shape_that_overflows() {
    let mut p = Parts::parse(&vector("v15_slices_external"));
    let t = p.target("gru.w");
    let BaseRef::ExternalSlices { shape, .. } = &mut p.index.tensors[t].base else {
        panic!("gru.w is sliced")
    };
    *shape = vec![1 << 40, 1 << 40];
    let e = open_err(&p.to_bytes());
    assert!(invalid_at(&e, "gru.w", "overflows"), "{e:?}");
}

#[test]
fn a_sliced_external_base_with_the_wrong_digest() {
    let mut p = Parts::parse(&vector("v15_slices_external"));
    let t = p.target("gru.w");
    let BaseRef::ExternalSlices { sha256, .. } = &mut p.index.tensors[t].base else {
        panic!("gru.w is sliced")
    };
    sha256[0] ^= 1;
    assert_err!(
        decode_all_with(&p.to_bytes(), &base_v15()),
        Error::BaseMismatch { tensor, .. } if tensor == "onnx.w"
    );
}

#[test]
fn a_sliced_external_base_recorded_with_another_shape() {
    // The supplied onnx.h is [16, 1]; the record says [1, 16] (same element
    // count, so the map stays valid): the shape check fails.
    let mut p = Parts::parse(&vector("v15_slices_external"));
    let t = p.target("head.w");
    let BaseRef::ExternalSlices { shape, .. } = &mut p.index.tensors[t].base else {
        panic!("head.w is sliced")
    };
    *shape = vec![1, 16];
    assert_err!(
        decode_all_with(&p.to_bytes(), &base_v15()),
        Error::BaseMismatch { tensor, .. } if tensor == "onnx.h"
    );
}

/// A `[1024, 64]` U8 target `emb2` whose rows are those of base `emb` (a
/// different name, so it is not its delta base), in the order `order`
/// gives, packed by the writer with 4096-element chunks.
fn reordered_rows(order: impl Fn(u64) -> u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (tp, bp) = (dir.path().join("t.st"), dir.path().join("b.st"));
    let mut rng = tpde_tests::Rng(0x15);
    let base: Vec<u8> = (0..1024 * 64).map(|_| rng.next_u64() as u8).collect();
    let target: Vec<u8> = (0..1024)
        .flat_map(|r| {
            let b = order(r) as usize;
            base[b * 64..(b + 1) * 64].to_vec()
        })
        .collect();
    let u8 = tpde_format::Dtype::U8;
    write_safetensors(&tp, &[("emb2".into(), u8, vec![1024, 64], target)]);
    write_safetensors(&bp, &[("emb".into(), u8, vec![1024, 64], base)]);
    pack_bytes_with(
        &tp,
        Some(&bp),
        BaseMode::Inline,
        WriteOptions::default().with_chunk_elems(4096),
    )
}

#[test]
fn sliced_runs_that_revisit_base_chunks_count_against_the_output_limit() {
    // Rows reversed: 1024 one-row runs, each decoding a 4 KiB base chunk
    // for 64 target bytes (§6.3.4 counts every run's chunks): about 4 MiB
    // charged for a 64 KiB target. A rotation (two runs) is charged a few
    // chunks and passes the same limit.
    let limits = ReadLimits {
        max_total_output: 1 << 20,
        ..ReadLimits::default()
    };
    let reversed = reordered_rows(|r| 1023 - r);
    let p = Parts::parse(&reversed);
    let BaseRef::InlineSlices {
        row_elems, rows, ..
    } = &p.index.tensors[0].base
    else {
        panic!("a sliced base: {:?}", p.index.tensors[0].base)
    };
    assert_eq!((*row_elems, rows.len()), (64, 1024));
    assert_err!(
        Archive::from_bytes(reversed.as_slice(), limits),
        Error::LimitExceeded {
            what: "max_total_output",
            ..
        }
    );
    decode_all(&reversed).unwrap();
    let rotated = reordered_rows(|r| (r + 512) % 1024);
    let p = Parts::parse(&rotated);
    assert_eq!(p.index.tensors[0].base.rows().unwrap().len(), 2);
    Archive::from_bytes(rotated.as_slice(), limits).unwrap();
    decode_all(&rotated).unwrap();
}

#[test]
fn a_writer_capped_below_1_5_never_slices() {
    // The reversed rows again, written for 1.4 readers: no sliced base (the
    // target is stored baseless), and the header says so.
    let dir = tempfile::tempdir().unwrap();
    let (tp, bp) = (dir.path().join("t.st"), dir.path().join("b.st"));
    let u8 = tpde_format::Dtype::U8;
    let base: Vec<u8> = (0..64 * 64).map(|i| (i * 7 % 251) as u8).collect();
    let target: Vec<u8> = (0..64)
        .rev()
        .flat_map(|r: usize| base[r * 64..(r + 1) * 64].to_vec())
        .collect();
    write_safetensors(&tp, &[("t".into(), u8, vec![64, 64], target)]);
    write_safetensors(&bp, &[("b".into(), u8, vec![64, 64], base)]);
    for (minor, sliced) in [(4u16, false), (5, true)] {
        let a = pack_bytes_with(
            &tp,
            Some(&bp),
            BaseMode::External,
            WriteOptions::default().with_max_minor(minor),
        );
        let p = Parts::parse(&a);
        assert_eq!(p.index.tensors[0].base.is_v15(), sliced, "cap 1.{minor}");
        assert!(p.header.minor <= minor, "cap 1.{minor}: {}", p.header.minor);
        decode_all_with(&a, &Checkpoint::open(&bp).unwrap()).unwrap();
    }
}

#[test]
fn a_sliced_inline_base_with_larger_chunks() {
    // As for `Inline` (spec §4.5): base chunks larger than the target's
    // would be decoded once per target chunk. Refused at open; smaller base
    // chunks decode.
    assert_larger_base_chunks_refused("v15_slices_inline", "base_v15.safetensors", 16, 64);
}

#[test]
fn a_sliced_external_base_shape_past_the_tensor_limit() {
    let mut p = Parts::parse(&vector("v15_slices_external"));
    let t = p.target("gru.w");
    let BaseRef::ExternalSlices { shape, .. } = &mut p.index.tensors[t].base else {
        panic!("gru.w is sliced")
    };
    *shape = vec![1 << 40, 8];
    assert_err!(
        open(&p.to_bytes()),
        Error::LimitExceeded {
            what: "max_tensor_bytes",
            ..
        }
    );
}

#[test]
fn a_sliced_base_under_a_plain_payload() {
    // §4.6: a plain payload has no base. gru.w's chunked payload replaced
    // by head.w's plain-sized one is refused for the base, not decoded.
    let mut p = Parts::parse(&vector("v15_slices_inline"));
    let t = p.target("gru.w");
    p.index.tensors[t].payload = tpde_format::format::Payload::Plain {
        offset: 0,
        len: 0,
        crc32: 0,
    };
    p.index.tensors[t].shape = vec![0, 8];
    let e = open_err(&p.to_bytes());
    assert!(e.to_string().contains("gru.w"), "{e}");
}

/// Packs `target` against `base` (written as safetensors, F32) with the
/// default options and the base mode given; returns the archive's parts.
fn pack_f32(
    target: &[(&str, &[u64], Vec<u8>)],
    base: &[(&str, &[u64], Vec<u8>)],
    mode: BaseMode,
) -> Parts {
    let dir = tempfile::tempdir().unwrap();
    let (tp, bp) = (dir.path().join("t.st"), dir.path().join("b.st"));
    let f32 = tpde_format::Dtype::F32;
    let raw = |x: &[(&str, &[u64], Vec<u8>)]| -> Vec<RawTensor> {
        x.iter()
            .map(|(n, s, d)| (n.to_string(), f32, s.to_vec(), d.clone()))
            .collect()
    };
    write_safetensors(&tp, &raw(target));
    write_safetensors(&bp, &raw(base));
    let a = pack_bytes_with(&tp, Some(&bp), mode, WriteOptions::default());
    decode_all_with(&a, &Checkpoint::open(&bp).unwrap()).unwrap();
    Parts::parse(&a)
}

fn f32_words(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = tpde_tests::Rng(seed);
    (0..n)
        .flat_map(|_| (tpde_tests::weight_bits(&mut rng, 4) as u32).to_le_bytes())
        .collect()
}

#[test]
fn a_row_map_keeps_its_trained_rows_over_a_sliced_map_that_matches_more() {
    // A vocabulary of 100 rows: rows 0..40 trained (low bits changed), 40..100
    // verbatim, and a new row 100 copied from row 5 (out of order). The row
    // map covers 100 rows (40 of them trained, predicted in place); a sliced
    // map would match 61 verbatim but predict the trained rows by zero.
    let base = f32_words(1, 100 * 64);
    let mut target = base.clone();
    for i in 0..40 * 64 {
        target[i * 4] ^= 0x35;
    }
    target.extend_from_slice(&base[5 * 256..6 * 256]);
    let p = pack_f32(
        &[("emb", &[101, 64], target)],
        &[("emb", &[100, 64], base)],
        BaseMode::External,
    );
    assert!(
        matches!(&p.index.tensors[0].base, BaseRef::ExternalRows { .. }),
        "{:?}",
        p.index.tensors[0].base
    );
}

#[test]
fn embedded_slices_are_taken_only_when_they_pay_for_their_base() {
    // A [1, 768] base tensor nothing else uses: one [384] half of it alone
    // would embed 3 KiB to predict 1.5 KiB (stored baseless); both halves
    // together pay for it (sliced).
    let fused = f32_words(2, 768);
    let half = |i: usize| fused[i * 1536..(i + 1) * 1536].to_vec();
    let base = [("fused", &[1u64, 768][..], fused.clone())];
    let one = pack_f32(&[("a", &[384], half(0))], &base, BaseMode::Inline);
    assert_eq!(one.index.tensors[0].base, BaseRef::None);
    let both = pack_f32(
        &[("a", &[384], half(0)), ("b", &[384], half(1))],
        &base,
        BaseMode::Inline,
    );
    assert!(
        both.index.tensors.iter().all(|t| t.base.is_v15()),
        "{:?}",
        both.index.tensors
    );
    // With the base kept outside the archive, one half is sliced too.
    let ext = pack_f32(&[("a", &[384], half(0))], &base, BaseMode::External);
    assert!(ext.index.tensors[0].base.is_v15());
}
