//! Hostile input against the v1.2 additions (spec §4.5, §6.3, §6.4, §8.2):
//! one named test per attack on a row-mapped or quantized base, each
//! asserting the exact error variant (and where it points) the reader must
//! give.
//!
//! The inputs are the v1.2 golden vectors (`tests/vectors/v1/v12_*`),
//! taken apart with `tpde_tests::hostile::Parts`, changed in exactly one way
//! and put back together with lengths and CRCs fixed, so each attack reaches
//! the check it targets.

use sha2::Digest as _;
use tpde_format::format::{BaseRef, PlaneCodec, RowRun, ScaleAxis};
use tpde_format::safetensors::Checkpoint;
use tpde_format::{Archive, BaseProvider, Error, Location, NoBase, ReadLimits};
use tpde_tests::assert_err;
use tpde_tests::hostile::*;
use tpde_tests::vectors_v1;

fn base_v12() -> Checkpoint {
    Checkpoint::open(vectors_v1().join("base_v12.safetensors")).unwrap()
}

/// True when `e` is `InvalidIndex` at target tensor `name` for `reason`.
fn invalid_at(e: &Error, name: &str, reason: &str) -> bool {
    matches!(e, Error::InvalidIndex { location: Location::Tensor { name: n, base: false }, reason: r }
        if n == name && r.contains(reason))
}

/// The inline vector with target `name`'s row map edited by `f`.
fn edit_rows(name: &str, f: impl FnOnce(&mut Vec<RowRun>)) -> Vec<u8> {
    let mut p = Parts::parse(&vector("v12_rows_inline"));
    let t = p.target(name);
    let BaseRef::InlineRows { rows, .. } = &mut p.index.tensors[t].base else {
        panic!("{name} is row-mapped")
    };
    f(rows);
    p.to_bytes()
}

#[test]
fn the_v12_vectors_decode() {
    decode_all_with(&vector("v12_rows_inline"), &NoBase).unwrap();
    decode_all_with(&vector("v12_rows_inline_plain"), &NoBase).unwrap();
    decode_all_with(&vector("v12_rows_external"), &base_v12()).unwrap();
}

#[test]
fn a_row_mapped_base_in_a_minor_1_file() {
    let mut a = vector("v12_rows_inline");
    a[10..12].copy_from_slice(&1u16.to_le_bytes());
    refix_crc(&mut a);
    let e = open_err(&a);
    assert!(invalid_at(&e, "vocab.pruned", "(v1.2)"), "{e:?}");
}

#[test]
fn row_runs_out_of_order() {
    let e = open_err(&edit_rows("vocab.pruned", |r| r.swap(0, 1)));
    assert!(invalid_at(&e, "vocab.pruned", "out of order"), "{e:?}");
}

#[test]
fn row_runs_overlapping_in_target_rows() {
    let e = open_err(&edit_rows("vocab.pruned", |r| r[1].start = r[0].start));
    assert!(invalid_at(&e, "vocab.pruned", "overlap"), "{e:?}");
}

#[test]
fn row_runs_overlapping_in_base_rows_only() {
    // Target rows disjoint, base rows shared: a reordering the format forbids.
    let e = open_err(&edit_rows("vocab.pruned", |r| {
        r[1].base_start = r[0].base_start
    }));
    assert!(invalid_at(&e, "vocab.pruned", "overlap"), "{e:?}");
}

#[test]
fn an_empty_row_run() {
    let e = open_err(&edit_rows("vocab.pruned", |r| r[0].count = 0));
    assert!(invalid_at(&e, "vocab.pruned", "empty row run"), "{e:?}");
}

#[test]
fn a_row_run_past_the_last_target_row() {
    let e = open_err(&edit_rows("vocab.extended", |r| r[0].count = 51));
    assert!(
        invalid_at(&e, "vocab.extended", "past the last row"),
        "{e:?}"
    );
}

#[test]
fn a_row_run_past_the_last_base_row() {
    // Shift vocab.extended's last run one base row past the base's 40 rows.
    let e = open_err(&edit_rows("vocab.extended", |r| {
        let last = r.last_mut().unwrap();
        last.base_start = 40 - last.count + 1;
    }));
    assert!(
        invalid_at(&e, "vocab.extended", "past the last row"),
        "{e:?}"
    );
}

#[test]
fn a_row_run_whose_end_overflows() {
    let e = open_err(&edit_rows("vocab.pruned", |r| {
        let last = r.last_mut().unwrap();
        last.start = u64::MAX;
    }));
    assert!(invalid_at(&e, "vocab.pruned", "overflows"), "{e:?}");
}

#[test]
fn a_row_mapped_base_with_other_trailing_dimensions() {
    // Same element count (40 × 12 = 80 × 6), so only the row rule can object.
    let mut p = Parts::parse(&vector("v12_rows_inline"));
    let t = p.target("vocab.pruned");
    p.index.tensors[t].shape = vec![80, 6];
    let e = open_err(&p.to_bytes());
    assert!(
        invalid_at(&e, "vocab.pruned", "more than its first dimension"),
        "{e:?}"
    );
}

#[test]
fn a_row_mapped_base_of_another_rank() {
    let mut p = Parts::parse(&vector("v12_rows_inline"));
    let t = p.target("vocab.pruned");
    p.index.tensors[t].shape = vec![40, 12, 1];
    let e = open_err(&p.to_bytes());
    assert!(
        invalid_at(&e, "vocab.pruned", "more than its first dimension"),
        "{e:?}"
    );
}

#[test]
fn a_row_mapped_inline_base_index_out_of_range() {
    let mut p = Parts::parse(&vector("v12_rows_inline"));
    let t = p.target("vocab.pruned");
    let BaseRef::InlineRows { index, .. } = &mut p.index.tensors[t].base else {
        panic!()
    };
    *index = 99;
    let e = open_err(&p.to_bytes());
    assert!(
        invalid_at(&e, "vocab.pruned", "index out of range"),
        "{e:?}"
    );
}

#[test]
fn a_row_mapped_inline_base_of_another_dtype() {
    // vocab.pruned (F32) pointed at the BF16 base of vocab.extended.
    let mut p = Parts::parse(&vector("v12_rows_inline"));
    let t = p.target("vocab.pruned");
    let ext = p.target("vocab.extended");
    let BaseRef::InlineRows { index: other, .. } = p.index.tensors[ext].base.clone() else {
        panic!()
    };
    let BaseRef::InlineRows { index, .. } = &mut p.index.tensors[t].base else {
        panic!()
    };
    *index = other;
    let e = open_err(&p.to_bytes());
    assert!(invalid_at(&e, "vocab.pruned", "dtype differs"), "{e:?}");
}

#[test]
fn a_row_mapped_inline_base_with_larger_chunks() {
    // As for `Inline` (spec §4.5): base chunks larger than the target's
    // would be decoded once per target chunk. Refused at open; smaller base
    // chunks decode.
    assert_larger_base_chunks_refused("v12_rows_inline", "base_v12.safetensors", 64, 256);
}

#[test]
fn an_external_row_base_file_index_out_of_range() {
    let mut p = Parts::parse(&vector("v12_rows_external"));
    let t = p.target("vocab.pruned");
    let BaseRef::ExternalRows { file, .. } = &mut p.index.tensors[t].base else {
        panic!()
    };
    *file = 7;
    let e = open_err(&p.to_bytes());
    assert!(
        invalid_at(&e, "vocab.pruned", "file index out of range"),
        "{e:?}"
    );
}

#[test]
fn an_external_row_base_shape_that_overflows() {
    let mut p = Parts::parse(&vector("v12_rows_external"));
    let t = p.target("vocab.pruned");
    let BaseRef::ExternalRows { shape, .. } = &mut p.index.tensors[t].base else {
        panic!()
    };
    *shape = vec![u64::MAX / 2, 12];
    let e = open_err(&p.to_bytes());
    assert!(invalid_at(&e, "vocab.pruned", "overflows"), "{e:?}");
}

#[test]
fn an_external_row_base_shape_past_the_tensor_limit() {
    let mut p = Parts::parse(&vector("v12_rows_external"));
    let t = p.target("vocab.pruned");
    let BaseRef::ExternalRows { shape, .. } = &mut p.index.tensors[t].base else {
        panic!()
    };
    *shape = vec![1 << 40, 12];
    assert_err!(
        open(&p.to_bytes()),
        Error::LimitExceeded {
            what: "max_tensor_bytes",
            ..
        }
    );
}

#[test]
fn an_external_row_base_with_the_wrong_digest() {
    let mut p = Parts::parse(&vector("v12_rows_external"));
    let t = p.target("vocab.pruned");
    let BaseRef::ExternalRows { sha256, .. } = &mut p.index.tensors[t].base else {
        panic!()
    };
    sha256[0] ^= 1;
    assert_err!(
        decode_all_with(&p.to_bytes(), &base_v12()),
        Error::BaseMismatch { tensor, .. } if tensor == "vocab.pruned"
    );
}

#[test]
fn an_external_row_base_recorded_with_another_shape() {
    // The supplied tensor is [60, 12]; the record says [61, 12] (the map is
    // valid for it), with the digest of the supplied bytes: the shape check
    // fails.
    let mut p = Parts::parse(&vector("v12_rows_external"));
    let t = p.target("vocab.pruned");
    let BaseRef::ExternalRows { shape, .. } = &mut p.index.tensors[t].base else {
        panic!()
    };
    *shape = vec![61, 12];
    assert_err!(
        decode_all_with(&p.to_bytes(), &base_v12()),
        Error::BaseMismatch { tensor, .. } if tensor == "vocab.pruned"
    );
}

#[test]
fn an_external_row_base_that_is_too_short() {
    // A provider handing out fewer bytes than the recorded shape needs,
    // with a record whose digest matches those bytes: refused on length.
    let b = base_v12();
    let bt = b.base_tensor("vocab.pruned").unwrap();
    let short: Vec<u8> = bt.data[..bt.data.len() - 48].to_vec();
    let mut p = Parts::parse(&vector("v12_rows_external"));
    let t = p.target("vocab.pruned");
    let BaseRef::ExternalRows { sha256, .. } = &mut p.index.tensors[t].base else {
        panic!()
    };
    *sha256 = sha2::Sha256::digest(&short).into();
    let mut provider = std::collections::HashMap::new();
    for name in [
        "vocab.pruned",
        "vocab.extended",
        "embed.old",
        "vocab.cut_trained",
        "cube.u8",
    ] {
        let x = b.base_tensor(name).unwrap();
        provider.insert(
            name.to_owned(),
            (x.dtype, x.shape.to_vec(), x.data.to_vec()),
        );
    }
    provider.get_mut("vocab.pruned").unwrap().2 = short;
    assert_err!(
        decode_all_with(&p.to_bytes(), &provider),
        Error::BaseMismatch { tensor, .. } if tensor == "vocab.pruned"
    );
}

#[test]
fn an_external_row_base_not_supplied() {
    assert_err!(
        decode_all_with(&vector("v12_rows_external"), &NoBase),
        Error::MissingBase { .. }
    );
}

#[test]
fn a_corrupt_inline_base_chunk_under_a_row_map() {
    // Flip a byte of the first chunk of vocab.pruned's inline base: the
    // error names that base chunk, not the target.
    let mut p = Parts::parse(&vector("v12_rows_inline"));
    let t = p.target("vocab.pruned");
    let BaseRef::InlineRows { index, .. } = p.index.tensors[t].base.clone() else {
        panic!()
    };
    let (start, _) = p.blob_range(Blob::Chunk(Table::Base, index as usize, 0));
    p.data[start as usize - tpde_format::format::HEADER_LEN] ^= 0x40;
    let bytes = p.to_bytes();
    let a = open(&bytes).unwrap();
    assert_err!(
        a.decode_tensor("vocab.pruned", &NoBase),
        Error::ChunkChecksum { location: Location::Chunk { tensor, base: true, chunk: 0 }, .. }
            if tensor == "vocab.pruned"
    );
}

// ---- quantized bases (spec §4.5, §6.4) ----------------------------------------

fn base_v12_dequant() -> Checkpoint {
    Checkpoint::open(vectors_v1().join("base_v12_dequant.safetensors")).unwrap()
}

/// The inline quantized vector with target `name`'s base edited by `f`
/// (`q`, `scale`, `axis`), given the base table to look names up in.
fn edit_dequant(
    name: &str,
    f: impl FnOnce(&mut u32, &mut u32, &mut ScaleAxis, &[tpde_format::format::TensorRecord]),
) -> Vec<u8> {
    let mut p = Parts::parse(&vector("v12_dequant_inline"));
    let t = p.target(name);
    let bases = p.index.bases.clone();
    let BaseRef::InlineDequant { q, scale, axis } = &mut p.index.tensors[t].base else {
        panic!("{name} has a quantized base")
    };
    f(q, scale, axis, &bases);
    p.to_bytes()
}

fn base_index(bases: &[tpde_format::format::TensorRecord], name: &str) -> u32 {
    bases.iter().position(|b| b.name == name).unwrap() as u32
}

#[test]
fn a_quantized_base_in_a_minor_1_file() {
    let mut a = vector("v12_dequant_inline");
    a[10..12].copy_from_slice(&1u16.to_le_bytes());
    refix_crc(&mut a);
    let e = open_err(&a);
    assert!(invalid_at(&e, "w.rows", "(v1.2)"), "{e:?}");
}

#[test]
fn a_quantized_base_under_a_target_that_is_not_f32() {
    // I32 has F32's width: only the dtype rule can object.
    let mut p = Parts::parse(&vector("v12_dequant_inline"));
    let t = p.target("w.rows");
    p.index.tensors[t].dtype = tpde_format::Dtype::I32;
    let e = open_err(&p.to_bytes());
    assert!(invalid_at(&e, "w.rows", "only an F32 tensor"), "{e:?}");
}

#[test]
fn quantized_codes_that_are_not_i8_or_u8() {
    let e = open_err(&edit_dequant("w.rows", |q, s, _, _| *q = *s));
    assert!(invalid_at(&e, "w.rows", "I8 or U8"), "{e:?}");
}

#[test]
fn quantized_codes_of_another_shape() {
    let e = open_err(&edit_dequant("w.rows", |q, _, _, b| {
        *q = base_index(b, "w.cols_q")
    }));
    assert!(
        invalid_at(&e, "w.rows", "differ from the tensor in shape"),
        "{e:?}"
    );
}

#[test]
fn quantization_scales_that_are_not_f32() {
    let e = open_err(&edit_dequant("w.rows", |q, s, _, _| *s = *q));
    assert!(invalid_at(&e, "w.rows", "scales must be F32"), "{e:?}");
}

#[test]
fn a_scale_count_that_does_not_fit_the_axis() {
    // 12 per-row scales read as per-column (32 needed).
    let e = open_err(&edit_dequant("w.rows", |_, _, a, _| {
        *a = ScaleAxis::Columns
    }));
    assert!(invalid_at(&e, "w.rows", "scale count"), "{e:?}");
}

#[test]
fn a_per_row_scale_on_a_0d_tensor() {
    let e = open_err(&edit_dequant("w.scalar", |_, _, a, _| *a = ScaleAxis::Rows));
    assert!(invalid_at(&e, "w.scalar", "scale count"), "{e:?}");
}

#[test]
fn a_quantized_inline_base_index_out_of_range() {
    let e = open_err(&edit_dequant("w.rows", |_, s, _, _| *s = 1000));
    assert!(invalid_at(&e, "w.rows", "index out of range"), "{e:?}");
}

/// The external quantized vector with target `name`'s base edited by `f`.
fn edit_external_dequant(name: &str, f: impl FnOnce(&mut BaseRef)) -> Vec<u8> {
    let mut p = Parts::parse(&vector("v12_dequant_external"));
    let t = p.target(name);
    f(&mut p.index.tensors[t].base);
    p.to_bytes()
}

#[test]
fn an_external_quantized_base_file_index_out_of_range() {
    let e = open_err(&edit_external_dequant("w.rows", |b| {
        if let BaseRef::ExternalDequant { file, .. } = b {
            *file = 3;
        }
    }));
    assert!(invalid_at(&e, "w.rows", "file index out of range"), "{e:?}");
}

#[test]
fn external_quantization_scales_past_the_tensor_limit() {
    let bytes = edit_external_dequant("w.rows", |b| {
        if let BaseRef::ExternalDequant { scale_shape, .. } = b {
            *scale_shape = vec![u64::MAX / 2, 3];
        }
    });
    assert_err!(
        open(&bytes),
        Error::LimitExceeded {
            what: "max_tensor_bytes",
            ..
        }
    );
}

#[test]
fn external_quantized_codes_with_the_wrong_digest() {
    let bytes = edit_external_dequant("w.cols", |b| {
        if let BaseRef::ExternalDequant { q_sha256, .. } = b {
            q_sha256[5] ^= 1;
        }
    });
    assert_err!(
        decode_all_with(&bytes, &base_v12_dequant()),
        Error::BaseMismatch { tensor, .. } if tensor == "w.cols_q"
    );
}

#[test]
fn external_quantization_scales_with_the_wrong_digest() {
    let bytes = edit_external_dequant("w.cols", |b| {
        if let BaseRef::ExternalDequant { scale_sha256, .. } = b {
            scale_sha256[0] ^= 0x80;
        }
    });
    assert_err!(
        decode_all_with(&bytes, &base_v12_dequant()),
        Error::BaseMismatch { tensor, .. } if tensor == "w.cols_scale"
    );
}

#[test]
fn external_quantization_scales_recorded_with_another_shape() {
    // [12, 1] supplied, [12] recorded: same count, so the index is valid;
    // the supplied tensor's shape is then refused.
    let bytes = edit_external_dequant("w.rows", |b| {
        if let BaseRef::ExternalDequant { scale_shape, .. } = b {
            *scale_shape = vec![12];
        }
    });
    assert_err!(
        decode_all_with(&bytes, &base_v12_dequant()),
        Error::BaseMismatch { tensor, .. } if tensor == "w.rows.scale"
    );
}

#[test]
fn external_quantized_codes_recorded_as_the_other_signedness() {
    // I8 codes recorded as U8 (the digest still matches the bytes): the
    // supplied tensor's dtype is refused, never read with the wrong sign.
    let bytes = edit_external_dequant("w.rows", |b| {
        if let BaseRef::ExternalDequant { q_dtype, .. } = b {
            *q_dtype = tpde_format::Dtype::U8;
        }
    });
    assert_err!(
        decode_all_with(&bytes, &base_v12_dequant()),
        Error::BaseMismatch { tensor, .. } if tensor == "w.rows.q"
    );
}

#[test]
fn an_external_quantized_base_not_supplied() {
    assert_err!(
        decode_all_with(&vector("v12_dequant_external"), &NoBase),
        Error::MissingBase { .. }
    );
}

#[test]
fn the_quantized_vectors_decode() {
    decode_all_with(&vector("v12_dequant_inline"), &NoBase).unwrap();
    decode_all_with(&vector("v12_dequant_inline_plain"), &NoBase).unwrap();
    decode_all_with(&vector("v12_dequant_external"), &base_v12_dequant()).unwrap();
}

// ---- base-context planes (spec §5.3, §5.7) -------------------------------------

/// Chunk index and plane index of the first `RansBase` plane of `tensor`.
fn rans_base_plane(p: &Parts, tensor: &str) -> (usize, usize, usize) {
    let t = p.target(tensor);
    for (ci, ch) in p.chunks(Table::Target, t).iter().enumerate() {
        if let tpde_format::format::Codec::PerPlane(planes) = &ch.values.codec {
            if let Some(k) = planes.iter().position(|x| x.codec == PlaneCodec::RansBase) {
                return (t, ci, k);
            }
        }
    }
    panic!("{tensor} has no RansBase plane")
}

#[test]
fn a_base_context_plane_in_a_minor_1_file() {
    let mut a = vector("v12_rans_base_inline");
    a[10..12].copy_from_slice(&1u16.to_le_bytes());
    refix_crc(&mut a);
    let e = open_err(&a);
    assert!(
        matches!(&e, Error::InvalidIndex { location: Location::Chunk { .. }, reason } if reason.contains("(v1.2)")),
        "{e:?}"
    );
}

#[test]
fn an_empty_base_context_plane() {
    let mut p = Parts::parse(&vector("v12_rans_base_inline"));
    let (t, c, k) = rans_base_plane(&p, "attn.w");
    p.edit_chunk(Table::Target, t, c, |ch, bytes| {
        let tpde_format::format::Codec::PerPlane(planes) = &mut ch.values.codec else {
            panic!()
        };
        let start = ch.positions.stored_len + planes[..k].iter().map(|x| x.stored_len).sum::<u64>();
        let len = planes[k].stored_len;
        bytes.drain(start as usize..(start + len) as usize);
        planes[k].stored_len = 0;
        ch.values.stored_len -= len;
    });
    let e = open_err(&p.to_bytes());
    assert!(
        matches!(&e, Error::InvalidIndex { location: Location::Chunk { tensor, .. }, reason }
            if tensor == "attn.w" && reason.contains("empty rans plane")),
        "{e:?}"
    );
}

#[test]
fn damaged_base_context_planes_fail_typed() {
    // Every byte of the plane flipped in turn (chunk CRC fixed, so the
    // damage reaches the rANS decoder): a typed error or a digest mismatch,
    // never a panic or a wrong tensor returned as good.
    let p0 = Parts::parse(&vector("v12_rans_base_inline"));
    let (t, c, k) = rans_base_plane(&p0, "mlp.w");
    let ch = &p0.chunks(Table::Target, t)[c];
    let tpde_format::format::Codec::PerPlane(planes) = &ch.values.codec else {
        panic!()
    };
    let start = ch.positions.stored_len + planes[..k].iter().map(|x| x.stored_len).sum::<u64>();
    for i in 0..planes[k].stored_len {
        let mut p = p0.clone();
        p.edit_chunk(Table::Target, t, c, |_, bytes| {
            bytes[(start + i) as usize] ^= 0x5a
        });
        match decode_all_with(&p.to_bytes(), &NoBase) {
            Err(Error::ChunkDecode {
                location: Location::Chunk { tensor, .. },
                ..
            })
            | Err(Error::TensorDigest { tensor, .. }) => assert_eq!(tensor, "mlp.w"),
            Err(e) => panic!("byte {i}: unexpected error {e:?}"),
            Ok(()) => panic!("byte {i}: damaged plane decoded as good"),
        }
    }
}

#[test]
fn a_base_context_plane_decoded_without_its_base() {
    // The low-level stream decoder refuses to guess a context.
    let p = Parts::parse(&vector("v12_rans_base_inline"));
    let (t, c, _) = rans_base_plane(&p, "attn.w");
    let ch = p.chunks(Table::Target, t)[c].clone();
    let stored = p.blob_bytes(Blob::Chunk(Table::Target, t, c));
    let mut raw = vec![0u8; ch.values.raw_len as usize];
    let err = tpde_format::codec::stream::decompress_into(
        &ch.values,
        &stored[ch.positions.stored_len as usize..],
        &mut raw,
    )
    .unwrap_err();
    assert!(err.contains("needs the base as context"), "{err}");
}

// ---- reader work of row maps (spec §6.3.1, §7) ---------------------------------

/// A base `[65536, 16]` of distinct random rows, and 8 targets of 64 rows
/// each taken from it `stride` rows apart, packed with 4096-element chunks
/// (256 base rows per chunk) and an inline base.
fn strided_rows(stride: usize) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = tpde_tests::Rng(0x05ee_d0f5_ca1e);
    let base = rng.bytes(65536 * 16);
    let row = |r: usize| base[r * 16..(r + 1) * 16].to_vec();
    let mut targets = Vec::new();
    for k in 0..8 {
        let rows: Vec<u8> = (0..64)
            .flat_map(|i| row((k * 64 + i) * stride % 65536))
            .collect();
        targets.push((
            format!("t{k}"),
            tpde_format::Dtype::U8,
            vec![64u64, 16],
            rows,
        ));
    }
    let (tp, bp) = (
        dir.path().join("t.safetensors"),
        dir.path().join("b.safetensors"),
    );
    write_safetensors(&tp, &targets);
    write_safetensors(
        &bp,
        &[(
            "emb".to_string(),
            tpde_format::Dtype::U8,
            vec![65536, 16],
            base,
        )],
    );
    pack_bytes_with(
        &tp,
        Some(&bp),
        tpde_format::pack::BaseMode::Inline,
        tpde_format::WriteOptions::default().with_chunk_elems(4096),
    )
}

#[test]
fn row_maps_that_scatter_over_base_chunks_count_against_the_output_limit() {
    // Each target row from another base chunk: a reader decodes 64 base
    // chunks (256 KiB) for a 1 KiB target; 8 targets are charged about 2 MiB.
    let limits = ReadLimits {
        max_total_output: 1 << 20,
        ..ReadLimits::default()
    };
    let scattered = strided_rows(1024);
    let p = Parts::parse(&scattered);
    assert!(p
        .index
        .tensors
        .iter()
        .all(|t| t.base.rows().is_some_and(|r| r.len() == 64)));
    assert_err!(
        Archive::from_bytes(scattered.as_slice(), limits),
        Error::LimitExceeded {
            what: "max_total_output",
            ..
        }
    );
    // Rows taken in order from one or two chunks: a few KiB each, accepted.
    let dense = strided_rows(1);
    Archive::from_bytes(dense.as_slice(), limits).unwrap();
    decode_all(&dense).unwrap();
    decode_all(&scattered).unwrap();
}

#[test]
fn an_external_row_base_counts_against_the_output_limit() {
    // The supplied base is hashed whole for each row-mapped tensor: its
    // bytes are charged too, so the targets' own bytes are not enough.
    let a = vector("v12_rows_external");
    let p = Parts::parse(&a);
    let targets: u64 = p.index.tensors.iter().map(|t| t.byte_len().unwrap()).sum();
    let limits = ReadLimits {
        max_total_output: targets,
        ..ReadLimits::default()
    };
    assert_err!(
        Archive::from_bytes(a.as_slice(), limits),
        Error::LimitExceeded {
            what: "max_total_output",
            ..
        }
    );
}
