//! Hostile input against the v1.1 additions (spec §4.5, §5.1.2 rule 3, §5.3,
//! §5.6, §6.2, §8.2): one named test per attack, each asserting the exact error
//! variant (and where it points) the reader must give.
//!
//! The inputs are the v1.1 golden vectors (`tests/vectors/v1/v11_*.tpde`),
//! taken apart with `tpde_tests::hostile::Parts`, changed in exactly one way
//! and put back together with the header lengths, header/index CRC and (where
//! bytes moved) chunk CRCs fixed — so each attack reaches the check it
//! targets instead of being stopped early by a checksum.

use std::collections::HashMap;

use tpde_format::format::{BaseRef, ChunkKind, Codec, Dtype, Plane, PlaneCodec, Stream};
use tpde_format::pack::{pack, BaseMode, PackOptions};
use tpde_format::safetensors::Checkpoint;
use tpde_format::{Error, Location, WriteOptions};
use tpde_tests::assert_err;
use tpde_tests::hostile::*;
use tpde_tests::vectors_v1;

/// A golden vector's bytes.
fn vector(name: &str) -> Vec<u8> {
    std::fs::read(vectors_v1().join(name)).unwrap()
}

/// v1.1, inline chunked bases: widened targets with zero, sparse and dense
/// chunks, per-plane values with zstd and raw planes, `u8.delta` (1-byte
/// values), `same.f32` (a same-dtype inline base).
fn inline() -> Vec<u8> {
    vector("v11_widen_inline.tpde")
}

/// The same inputs against the external base `base_v11.safetensors`.
fn external() -> Vec<u8> {
    vector("v11_widen_external.tpde")
}

fn external_base() -> Checkpoint {
    Checkpoint::open(vectors_v1().join("base_v11.safetensors")).unwrap()
}

fn set_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

/// A target chunk of `name` satisfying `pred`, as (tensor, chunk).
fn chunk_of(
    p: &Parts,
    name: &str,
    pred: impl Fn(&tpde_format::format::Chunk) -> bool,
) -> (usize, usize) {
    let t = p.target(name);
    let c = p
        .chunks(Table::Target, t)
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("{name}: no such chunk"));
    (t, c)
}

/// The per-plane dense chunk of `bf16.to_f32`: planes Zstd, Zstd, Raw, Raw.
fn dense_planes(p: &Parts) -> (usize, usize) {
    chunk_of(p, "bf16.to_f32", |c| {
        c.kind == ChunkKind::Dense && matches!(c.values.codec, Codec::PerPlane(_))
    })
}

fn planes_of(s: &Stream) -> &Vec<Plane> {
    match &s.codec {
        Codec::PerPlane(p) => p,
        other => panic!("not per-plane: {other:?}"),
    }
}

fn planes_mut(s: &mut Stream) -> &mut Vec<Plane> {
    match &mut s.codec {
        Codec::PerPlane(p) => p,
        other => panic!("not per-plane: {other:?}"),
    }
}

/// Replaces plane `k` of a chunk's values (its table entry and its stored
/// bytes, or removes both with `None`), keeping the values stream's and the
/// chunk's stored lengths consistent: only the plane itself is the attack.
fn replace_plane(p: &mut Parts, (t, c): (usize, usize), k: usize, new: Option<(Plane, Vec<u8>)>) {
    p.edit_chunk(Table::Target, t, c, |ch, bytes| {
        let before: u64 = planes_of(&ch.values)[..k]
            .iter()
            .map(|x| x.stored_len)
            .sum();
        let start = (ch.positions.stored_len + before) as usize;
        let end = start + planes_of(&ch.values)[k].stored_len as usize;
        let planes = planes_mut(&mut ch.values);
        match new {
            Some((plane, data)) => {
                bytes.splice(start..end, data);
                planes[k] = plane;
            }
            None => {
                bytes.drain(start..end);
                planes.remove(k);
            }
        }
        ch.values.stored_len = planes.iter().map(|x| x.stored_len).sum();
    });
}

fn plane(stored_len: usize, codec: PlaneCodec) -> Plane {
    Plane {
        stored_len: stored_len as u64,
        codec,
    }
}

/// Bytes per plane of a chunk's values.
fn plane_size(p: &Parts, (t, c): (usize, usize)) -> usize {
    let v = &p.chunks(Table::Target, t)[c].values;
    (v.raw_len / planes_of(v).len() as u64) as usize
}

fn is_chunk(loc: &Location, (_, c): (usize, usize)) -> bool {
    matches!(loc, Location::Chunk { chunk, base: false, .. } if *chunk == c as u64)
}

#[test]
fn the_unmodified_v11_vectors_are_valid() {
    // The control for every test below.
    decode_all(&inline()).unwrap();
    decode_all_with(&external(), &external_base()).unwrap();
    assert_eq!(Parts::parse(&inline()).to_bytes(), inline());
    let p = Parts::parse(&inline());
    let at = dense_planes(&p);
    let codecs: Vec<PlaneCodec> = planes_of(&p.chunks(Table::Target, at.0)[at.1].values)
        .iter()
        .map(|x| x.codec)
        .collect();
    assert_eq!(
        codecs,
        [
            PlaneCodec::Zstd,
            PlaneCodec::Zstd,
            PlaneCodec::Raw,
            PlaneCodec::Raw
        ]
    );
    // Re-laying a plane out unchanged keeps the archive valid: the edits
    // below change only what they say.
    let mut p = Parts::parse(&inline());
    let m = plane_size(&p, at);
    let raw = p.blob_bytes(Blob::Chunk(Table::Target, at.0, at.1));
    let last = raw[raw.len() - m..].to_vec();
    replace_plane(&mut p, at, 3, Some((plane(m, PlaneCodec::Raw), last)));
    decode_all(&p.to_bytes()).unwrap();
}

// ---- per-plane streams: the plane table (spec §5.1.2 rule 3) --------------

#[test]
fn per_plane_with_fewer_or_more_planes_than_the_width() {
    let mut p = Parts::parse(&inline());
    let at = dense_planes(&p);
    replace_plane(&mut p, at, 3, None);
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex { location, reason }
            if is_chunk(&location, at) && reason.contains("one plane per element byte")
    );
    // A fifth plane of the right size for an F32 stream of 4 planes.
    let mut p = Parts::parse(&inline());
    let m = plane_size(&p, at);
    p.edit_chunk(Table::Target, at.0, at.1, |ch, bytes| {
        bytes.extend(std::iter::repeat_n(0u8, m));
        planes_mut(&mut ch.values).push(plane(m, PlaneCodec::Raw));
        ch.values.stored_len += m as u64;
    });
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex { location, reason }
            if is_chunk(&location, at) && reason.contains("one plane per element byte")
    );
}

#[test]
fn per_plane_on_a_positions_stream() {
    let mut p = Parts::parse(&inline());
    let at = chunk_of(&p, "bf16.to_f32", |c| c.kind == ChunkKind::Sparse);
    p.edit_chunk(Table::Target, at.0, at.1, |ch, _| {
        let codec = match ch.positions.codec {
            Codec::Zstd => PlaneCodec::Zstd,
            _ => PlaneCodec::Raw,
        };
        ch.positions.codec = Codec::PerPlane(vec![Plane {
            stored_len: ch.positions.stored_len,
            codec,
        }]);
    });
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex { location, reason }
            if is_chunk(&location, at) && reason.contains("positions")
    );
}

#[test]
fn per_plane_on_one_byte_values() {
    let mut p = Parts::parse(&inline());
    let at = chunk_of(&p, "u8.delta", |c| c.kind == ChunkKind::Dense);
    p.edit_chunk(Table::Target, at.0, at.1, |ch, _| {
        let codec = match ch.values.codec {
            Codec::Zstd => PlaneCodec::Zstd,
            _ => PlaneCodec::Raw,
        };
        ch.values.codec = Codec::PerPlane(vec![Plane {
            stored_len: ch.values.stored_len,
            codec,
        }]);
    });
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex { location, reason }
            if is_chunk(&location, at) && reason.contains("1-byte")
    );
}

#[test]
fn plane_lengths_not_adding_up_to_the_stream() {
    let mut p = Parts::parse(&inline());
    let at = dense_planes(&p);
    p.edit_chunk(Table::Target, at.0, at.1, |ch, _| {
        planes_mut(&mut ch.values)[0].stored_len += 1;
    });
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex { location, reason }
            if is_chunk(&location, at) && reason.contains("add up")
    );
    // Plane lengths whose sum overflows u64 (each one alone plausible).
    let mut p = Parts::parse(&inline());
    p.edit_chunk(Table::Target, at.0, at.1, |ch, _| {
        let planes = planes_mut(&mut ch.values);
        planes[0].stored_len = u64::MAX - 5;
        planes[1].stored_len = 100;
    });
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex { location, .. } if is_chunk(&location, at)
    );
}

#[test]
fn raw_plane_of_the_wrong_length() {
    // Shorter and longer than the plane, with the stream's and chunk's
    // lengths made consistent with it.
    for delta in [-1i64, 1] {
        let mut p = Parts::parse(&inline());
        let at = dense_planes(&p);
        let m = plane_size(&p, at);
        let len = (m as i64 + delta) as usize;
        replace_plane(
            &mut p,
            at,
            3,
            Some((plane(len, PlaneCodec::Raw), vec![7; len])),
        );
        assert_err!(
            open(&p.to_bytes()),
            Error::InvalidIndex { location, reason }
                if is_chunk(&location, at) && reason.contains("raw plane")
        );
    }
}

#[test]
fn empty_zstd_plane() {
    let mut p = Parts::parse(&inline());
    let at = dense_planes(&p);
    replace_plane(
        &mut p,
        at,
        0,
        Some((plane(0, PlaneCodec::Zstd), Vec::new())),
    );
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex { location, reason }
            if is_chunk(&location, at) && reason.contains("empty zstd plane")
    );
}

// ---- per-plane streams: the planes' bytes (spec §5.3) ----------------------

/// A zstd frame header claiming `content_size` bytes, then `blocks` RLE
/// blocks of 128 KiB each.
fn rle_bomb(content_size: u64, blocks: usize) -> Vec<u8> {
    let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
    f.push(0b1100_0000); // 8-byte content size, not single segment, no checksum
    f.push(0x38); // window descriptor: 128 KiB
    f.extend_from_slice(&content_size.to_le_bytes());
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let header = last | (1 << 1) | ((128 << 10) << 3);
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.push(0x42);
    }
    f
}

/// Each frame as zstd plane 0 of the dense per-plane chunk must give a
/// decode error naming that chunk.
fn assert_plane_frame_refused(frames: Vec<Vec<u8>>, needle: &str) {
    for frame in frames {
        let mut p = Parts::parse(&inline());
        let at = dense_planes(&p);
        replace_plane(
            &mut p,
            at,
            0,
            Some((plane(frame.len(), PlaneCodec::Zstd), frame.clone())),
        );
        assert_err!(
            decode_all(&p.to_bytes()),
            Error::ChunkDecode { location, reason }
                if is_chunk(&location, at) && reason.contains(needle)
        );
    }
}

#[test]
fn zstd_plane_expanding_past_its_size() {
    let m = plane_size(
        &Parts::parse(&inline()),
        dense_planes(&Parts::parse(&inline())),
    );
    // Declaring its (larger) size: refused before decoding.
    assert_plane_frame_refused(
        vec![
            zstd::bulk::compress(&vec![0u8; m + 1], 3).unwrap(),
            zstd::bulk::compress(&vec![0u8; m * 64], 3).unwrap(),
            rle_bomb(1 << 40, 8),
        ],
        "declares",
    );
    // Declaring nothing: refused when the output would pass the plane.
    assert_plane_frame_refused(
        vec![zstd::stream::encode_all(&vec![9u8; m * 64][..], 3).unwrap()],
        "larger",
    );
}

#[test]
fn zstd_plane_shorter_than_its_size() {
    let m = plane_size(
        &Parts::parse(&inline()),
        dense_planes(&Parts::parse(&inline())),
    );
    assert_plane_frame_refused(
        vec![zstd::bulk::compress(&vec![0u8; m - 1], 3).unwrap()],
        "declares",
    );
    assert_plane_frame_refused(
        vec![zstd::stream::encode_all(&vec![0u8; m - 1][..], 3).unwrap()],
        "shorter",
    );
}

#[test]
fn zstd_plane_with_a_second_frame() {
    // Exactly one frame per zstd plane (spec §5.3): a frame of the right
    // size followed by an empty frame, or by a skippable frame.
    let m = plane_size(
        &Parts::parse(&inline()),
        dense_planes(&Parts::parse(&inline())),
    );
    let mut two = zstd::bulk::compress(&vec![0u8; m], 3).unwrap();
    two.extend(zstd::bulk::compress(&[], 3).unwrap());
    let mut skippable = zstd::bulk::compress(&vec![0u8; m], 3).unwrap();
    skippable.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
    skippable.extend_from_slice(&4u32.to_le_bytes());
    skippable.extend_from_slice(b"junk");
    assert_plane_frame_refused(vec![two, skippable], "after");
}

#[test]
fn zstd_plane_garbage() {
    let mut p = Parts::parse(&inline());
    let at = dense_planes(&p);
    let len = planes_of(&p.chunks(Table::Target, at.0)[at.1].values)[1].stored_len as usize;
    replace_plane(
        &mut p,
        at,
        1,
        Some((plane(len, PlaneCodec::Zstd), vec![0x5a; len])),
    );
    assert_err!(
        decode_all(&p.to_bytes()),
        Error::ChunkDecode { location, .. } if is_chunk(&location, at)
    );
}

// ---- widened bases (spec §4.5, §6.2) ----------------------------------------

#[test]
fn inline_widened_base_with_a_pair_not_allowed() {
    let p0 = Parts::parse(&inline());
    let retarget = |name: &str, base: fn(u32) -> BaseRef| {
        let mut p = p0.clone();
        let t = p.target(name);
        let index = match p.index.tensors[t].base {
            BaseRef::Inline { index } | BaseRef::InlineWidened { index } => index,
            ref other => panic!("{name}: {other:?}"),
        };
        p.index.tensors[t].base = base(index);
        open(&p.to_bytes()).map(|_| ())
    };
    let widened = |index| BaseRef::InlineWidened { index };
    // Same dtype (F32 base, F32 target) and integers (U8) are not widened.
    for name in ["same.f32", "u8.delta"] {
        assert_err!(
            retarget(name, widened),
            Error::InvalidIndex { location: Location::Tensor { name: n, base: false }, reason }
                if n == name && reason.contains("dtype")
        );
    }
    // A narrower base named as a plain inline base: the dtypes differ.
    assert_err!(
        retarget("f16.to_f64", |index| BaseRef::Inline { index }),
        Error::InvalidIndex { location: Location::Tensor { name, base: false }, .. }
            if name == "f16.to_f64"
    );
    // The control: the record as written is accepted.
    retarget("f16.to_f64", widened).unwrap();
}

#[test]
fn external_widened_base_with_a_pair_not_allowed() {
    let p0 = Parts::parse(&external());
    // bf16.to_f32 recorded as widened from F64 (narrowing), F32 (same), I16
    // (an integer) and U8; f32.to_f64 recorded as widened from F64.
    for (name, dtype) in [
        ("bf16.to_f32", Dtype::F64),
        ("bf16.to_f32", Dtype::F32),
        ("bf16.to_f32", Dtype::I16),
        ("bf16.to_f32", Dtype::U8),
        ("f32.to_f64", Dtype::F64),
    ] {
        let mut p = p0.clone();
        let t = p.target(name);
        match &mut p.index.tensors[t].base {
            BaseRef::ExternalWidened { dtype: d, .. } => *d = dtype,
            other => panic!("{name}: {other:?}"),
        }
        assert_err!(
            open(&p.to_bytes()),
            Error::InvalidIndex { location: Location::Tensor { name: n, base: false }, reason }
                if n == name && reason.contains("widened")
        );
    }
}

/// The external base as an in-memory provider, to hand out altered copies.
fn base_map() -> HashMap<String, (Dtype, Vec<u64>, Vec<u8>)> {
    let ck = external_base();
    let mut m = HashMap::new();
    for f in &ck.files {
        for t in &f.tensors {
            let data = f.bytes()[t.offset as usize..(t.offset + t.len) as usize].to_vec();
            m.insert(t.name.clone(), (t.dtype, t.shape.clone(), data));
        }
    }
    m
}

#[test]
fn external_widened_base_is_checked_narrow() {
    let a = external();
    let right = base_map();
    decode_all_with(&a, &right).unwrap();
    // The same bytes under another narrow dtype (F16 for BF16): the
    // recorded dtype is part of what is checked.
    let mut relabelled = right.clone();
    relabelled.get_mut("bf16.to_f32").unwrap().0 = Dtype::F16;
    assert_err!(
        decode_all_with(&a, &relabelled),
        Error::BaseMismatch { tensor, .. } if tensor == "bf16.to_f32"
    );
    // The base already widened (the target's dtype, the widened bytes): the
    // digest is of the narrow bytes, so this is not the base.
    let mut wide = right.clone();
    let (_, shape, narrow) = right["bf16.to_f32"].clone();
    let mut bytes = vec![0u8; narrow.len() * 2];
    tpde_format::codec::widen::widen(Dtype::BF16, Dtype::F32, &narrow, &mut bytes);
    wide.insert("bf16.to_f32".into(), (Dtype::F32, shape, bytes));
    assert_err!(
        decode_all_with(&a, &wide),
        Error::BaseMismatch { tensor, .. } if tensor == "bf16.to_f32"
    );
    // A recorded dtype changed to another allowed pair (F16 -> F32): the
    // index is valid, the supplied BF16 tensor no longer matches.
    let mut p = Parts::parse(&a);
    let t = p.target("bf16.to_f32");
    if let BaseRef::ExternalWidened { dtype, .. } = &mut p.index.tensors[t].base {
        *dtype = Dtype::F16;
    }
    let b = p.to_bytes();
    open(&b).unwrap();
    assert_err!(
        decode_all_with(&b, &right),
        Error::BaseMismatch { tensor, .. } if tensor == "bf16.to_f32"
    );
    // Short bytes whose digest a hostile archive recorded: refused by length.
    let mut short = right.clone();
    short.get_mut("f16.to_f64").unwrap().2.truncate(10);
    let mut p = Parts::parse(&a);
    let t = p.target("f16.to_f64");
    if let BaseRef::ExternalWidened { sha256, .. } = &mut p.index.tensors[t].base {
        use sha2::Digest as _;
        *sha256 = sha2::Sha256::digest(&short["f16.to_f64"].2).into();
    }
    assert_err!(
        decode_all_with(&p.to_bytes(), &short),
        Error::BaseMismatch { tensor, .. } if tensor == "f16.to_f64"
    );
    assert_err!(decode_all(&a), Error::MissingBase { .. });
}

// ---- version policy (spec §2.2 check 8, §8.2) --------------------------------

#[test]
fn a_newer_minor_is_refused_after_the_crc() {
    let newer = tpde_format::format::VERSION_MINOR + 1;
    let mut a = inline();
    set_u16(&mut a, 10, newer);
    // Without the CRC fixed it is damage, not a newer file.
    assert_err!(open(&a), Error::IndexChecksum { .. });
    refix_crc(&mut a);
    assert_err!(open(&a), Error::UnsupportedVersion { major: 1, minor } if minor == newer);
    // Likewise an unknown required flag (bit 0 is known since v1.3).
    let mut a = inline();
    a[12] = 2;
    assert_err!(open(&a), Error::IndexChecksum { .. });
    refix_crc(&mut a);
    assert_err!(open(&a), Error::UnknownFlags { flags: 2 });
}

/// Packs `target` (and `base`, in `mode`) in memory with default options.
fn pack_pair(target: &[RawTensor], base: &[RawTensor], mode: BaseMode) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (tp, bp) = (
        dir.path().join("t.safetensors"),
        dir.path().join("b.safetensors"),
    );
    write_safetensors(&tp, target);
    write_safetensors(&bp, base);
    let out = dir.path().join("a.tpde");
    let opts = PackOptions {
        // At most 1.2: these tests rewrite the header's minor, which a
        // compressed index (1.3, tested in hostile_v13.rs) would pin to 3.
        write: WriteOptions::default()
            .with_chunk_elems(256)
            .with_max_minor(2),
        base_mode: mode,
    };
    let (t, b) = (
        Checkpoint::open(&tp).unwrap(),
        Checkpoint::open(&bp).unwrap(),
    );
    pack(&t, Some(&b), &out, &opts, &mut |_| {}).unwrap();
    std::fs::read(out).unwrap()
}

#[test]
fn minor_0_file_using_a_v11_variant_is_refused() {
    // Per-plane streams (and widened bases) in a file whose header says 1.0:
    // the first v1.1 use is named — here an inline base chunk.
    let mut a = inline();
    set_u16(&mut a, 10, 0);
    refix_crc(&mut a);
    assert_err!(
        open(&a),
        Error::InvalidIndex { location: Location::Chunk { base: true, .. }, reason }
            if reason.contains("minor 0")
    );
    // A widened base alone: the target is the exact widening of its
    // external base, so every chunk is Zero and no stream is per-plane.
    let n = 512usize;
    let narrow: Vec<u8> = (0..n as u16).flat_map(|x| (x * 97).to_le_bytes()).collect();
    let mut wide = vec![0u8; n * 4];
    tpde_format::codec::widen::widen(Dtype::BF16, Dtype::F32, &narrow, &mut wide);
    let a = pack_pair(
        &[("w".into(), Dtype::F32, vec![n as u64], wide)],
        &[("w".into(), Dtype::BF16, vec![n as u64], narrow)],
        BaseMode::External,
    );
    let p = Parts::parse(&a);
    assert!(matches!(
        p.index.tensors[0].base,
        BaseRef::ExternalWidened { .. }
    ));
    assert_eq!(p.header.minor, 1);
    let mut a = a;
    set_u16(&mut a, 10, 0);
    refix_crc(&mut a);
    assert_err!(
        open(&a),
        Error::InvalidIndex { location: Location::Tensor { name, base: false }, reason }
            if name == "w" && reason.contains("minor 0")
    );
    // Per-plane streams alone (same dtypes, no widening), in a target chunk.
    let f: Vec<u8> = (0..n)
        .flat_map(|i| (i as f32 * 0.37).to_le_bytes())
        .collect();
    let g: Vec<u8> = (0..n)
        .flat_map(|i| (i as f32 * 0.38).to_le_bytes())
        .collect();
    let mut a = pack_pair(
        &[("w".into(), Dtype::F32, vec![n as u64], g)],
        &[("w".into(), Dtype::F32, vec![n as u64], f)],
        BaseMode::External,
    );
    assert_eq!(Parts::parse(&a).header.minor, 1);
    set_u16(&mut a, 10, 0);
    refix_crc(&mut a);
    assert_err!(
        open(&a),
        Error::InvalidIndex { location: Location::Chunk { base: false, .. }, reason }
            if reason.contains("minor 0")
    );
}

#[test]
fn minor_0_file_using_the_zigzag_op_is_refused() {
    // AddZigzag is a v1.1 variant wherever it appears, even on a zero chunk
    // (where the op means nothing).
    let p0 = Parts::parse(&vector("v11_max_minor0.tpde"));
    assert_eq!(p0.header.minor, 0);
    for kind in [ChunkKind::Zero, ChunkKind::Dense] {
        let mut p = p0.clone();
        let (t, c) = p.find_chunk(Table::Target, |_, c| c.kind == kind).unwrap();
        p.chunks_mut(Table::Target, t)[c].op = tpde_format::format::Op::AddZigzag;
        assert_err!(
            open(&p.to_bytes()),
            Error::InvalidIndex { location: Location::Chunk { chunk, base: false, .. }, reason }
                if chunk == c as u64 && reason.contains("minor 0")
        );
        // With minor 1 the same index is valid.
        p.header.minor = 1;
        open(&p.to_bytes()).unwrap();
    }
}

#[test]
fn minor_1_file_using_no_v11_variant_is_read() {
    // Writers record the lowest minor (spec §8.2.1), but a higher one than
    // the index needs misleads nobody: readers accept it.
    let mut a = vector("v11_max_minor0.tpde");
    assert_eq!(a[10], 0);
    set_u16(&mut a, 10, 1);
    refix_crc(&mut a);
    decode_all_with(&a, &external_base()).unwrap();
}

// ---- rANS planes: the coded plane itself (spec §5.3, §5.6) -------------------
//
// Container-level attacks on rANS planes (bit flips, truncation, an empty
// plane) are in `rans_planes.rs`. These build coded planes by hand, with a
// small encoder written from spec §5.6 (not the reference encoder), put them
// into a chunk of `v11_rans.tpde` in place of a plane, and break one rule
// of §5.6 at a time.

/// The rANS golden vector: planes coded by the default writer.
fn rans() -> Vec<u8> {
    vector("v11_rans.tpde")
}

/// A static model: precision, bucket cuts (`cut[1..B)`) and one frequency
/// table per bucket.
struct Model {
    scale: u8,
    cuts: Vec<u8>,
    tables: Vec<[u32; 256]>,
}

impl Model {
    fn bucket(&self, v: u8) -> usize {
        self.cuts.iter().filter(|&&c| c <= v).count()
    }

    /// A model fitted to `plane` (each bucket's counts, every count scaled
    /// to `2^scale` and at least 1, the rounding put on the most frequent
    /// symbol).
    fn fit(plane: &[u8], context: Option<&[u8]>, scale: u8, cuts: Vec<u8>) -> Model {
        let mut m = Model {
            scale,
            cuts,
            tables: Vec::new(),
        };
        let mut counts = vec![[0u64; 256]; m.cuts.len() + 1];
        for (i, &s) in plane.iter().enumerate() {
            let t = context.map_or(0, |c| m.bucket(c[i]));
            counts[t][usize::from(s)] += 1;
        }
        let total = 1u64 << scale;
        for c in counts {
            let n: u64 = c.iter().sum::<u64>().max(1);
            let mut f = [0u32; 256];
            for s in 0..256 {
                if c[s] > 0 {
                    f[s] = (c[s] * total / n).max(1) as u32;
                }
            }
            if f.iter().all(|&x| x == 0) {
                f[0] = 1; // an empty bucket still needs a table
            }
            let top = (0..256).max_by_key(|&s| f[s]).unwrap();
            let sum: u64 = f.iter().map(|&x| u64::from(x)).sum();
            f[top] = (i64::from(f[top]) + total as i64 - sum as i64) as u32;
            m.tables.push(f);
        }
        m
    }
}

/// LSB-first bits (spec §5.6.3.3).
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    n: usize,
}

impl Bits {
    fn put(&mut self, v: u64, w: u32) {
        for i in 0..w {
            if self.n.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if v >> i & 1 == 1 {
                *self.bytes.last_mut().unwrap() |= 1 << (self.n % 8);
            }
            self.n += 1;
        }
    }

    /// An exp-Golomb code of order `k` (spec §5.6.3.3).
    fn golomb(&mut self, v: u64, k: u32) {
        let u = (v >> k) + 1;
        let q = 63 - u.leading_zeros();
        self.put((1 << q) - 1, q);
        self.put(0, 1);
        self.put(u - (1 << q), q);
        self.put(v & ((1 << k) - 1), k);
    }
}

/// A frequency table (spec §5.6.3) with exp-Golomb order `k`.
fn table_bytes(f: &[u32; 256], k: u32) -> Vec<u8> {
    let present: Vec<usize> = (0..256).filter(|&s| f[s] > 0).collect();
    let mut runs: Vec<(usize, usize)> = Vec::new(); // (first, last)
    for &s in &present {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == s => *last = s,
            _ => runs.push((s, s)),
        }
    }
    let mut out = vec![runs.len() as u8];
    let mut pos = 0;
    for (first, last) in runs {
        out.extend([(first - pos) as u8, (last - first) as u8]);
        pos = last + 1;
    }
    if present.len() > 1 {
        out.push(k as u8);
        let mut bits = Bits::default();
        for &s in &present[..present.len() - 1] {
            bits.golomb(u64::from(f[s]) - 1, k);
        }
        out.extend(bits.bytes);
    }
    out
}

/// Header and tables of a mode-2 coded plane (spec §5.6.2, §5.6.3).
fn rans_head(model: &Model, k: u32) -> Vec<u8> {
    let mut out = vec![2, model.scale, model.cuts.len() as u8 + 1];
    out.extend(&model.cuts);
    for f in &model.tables {
        out.extend(table_bytes(f, k));
    }
    out
}

/// A coded plane of `plane` under `model` (the coding steps of spec §5.6.6):
/// (the bytes, where the states start).
fn rans_encode(model: &Model, plane: &[u8], context: Option<&[u8]>, k: u32) -> (Vec<u8>, usize) {
    const L: u64 = 1 << 16;
    let scale = u32::from(model.scale);
    let starts: Vec<[u64; 256]> = model
        .tables
        .iter()
        .map(|f| {
            let mut st = [0u64; 256];
            for s in 1..256 {
                st[s] = st[s - 1] + u64::from(f[s - 1]);
            }
            st
        })
        .collect();
    let mut x = [L; 4];
    let mut words: Vec<u16> = Vec::new();
    for i in (0..plane.len()).rev() {
        let j = i % 4;
        let t = context.map_or(0, |c| model.bucket(c[i]));
        let s = usize::from(plane[i]);
        let f = u64::from(model.tables[t][s]);
        assert!(f > 0, "symbol {s} absent from table {t}");
        if x[j] >= f << (32 - scale) {
            words.push(x[j] as u16);
            x[j] >>= 16;
        }
        x[j] = ((x[j] / f) << scale) + x[j] % f + starts[t][s];
    }
    let mut out = rans_head(model, k);
    let states_at = out.len();
    for xs in x {
        out.extend((xs as u32).to_le_bytes());
    }
    for w in words.iter().rev() {
        out.extend(w.to_le_bytes());
    }
    (out, states_at)
}

/// `ctx.u16`'s first chunk (dense, planes Rans, Rans with context) and its
/// two decoded planes.
fn ctx_chunk(p: &Parts) -> ((usize, usize), Vec<u8>, Vec<u8>) {
    let at = chunk_of(p, "ctx.u16", |c| c.kind == ChunkKind::Dense);
    let ch = &p.chunks(Table::Target, at.0)[at.1];
    let stored = p.blob_bytes(Blob::Chunk(Table::Target, at.0, at.1));
    let mut raw = vec![0u8; ch.values.raw_len as usize];
    tpde_format::codec::stream::decompress_into(&ch.values, &stored, &mut raw).unwrap();
    let m = raw.len() / 2;
    (at, raw[..m].to_vec(), raw[m..].to_vec())
}

/// `v11_rans.tpde` with plane `k` of `ctx.u16`'s first chunk replaced by the
/// coded plane `bytes`.
fn with_ctx_plane(k: usize, bytes: Vec<u8>) -> (Vec<u8>, (usize, usize)) {
    let mut p = Parts::parse(&rans());
    let (at, _, _) = ctx_chunk(&p);
    replace_plane(
        &mut p,
        at,
        k,
        Some((plane(bytes.len(), PlaneCodec::Rans), bytes)),
    );
    (p.to_bytes(), at)
}

/// Plane `k` of `ctx.u16` replaced by `bytes` must fail to decode, naming
/// the chunk, with a reason containing `needle`.
fn assert_rans_refused(k: usize, bytes: Vec<u8>, needle: &str) {
    let (a, at) = with_ctx_plane(k, bytes);
    assert_err!(
        decode_all(&a),
        Error::ChunkDecode { location, reason }
            if is_chunk(&location, at) && reason.contains(needle)
    );
}

/// Plane 0 of `ctx.u16` coded by the hand encoder (scale 10, one bucket):
/// (coded plane, where its states start).
fn hand_plane0() -> (Vec<u8>, usize) {
    let (_, p0, _) = ctx_chunk(&Parts::parse(&rans()));
    rans_encode(&Model::fit(&p0, None, 10, Vec::new()), &p0, None, 2)
}

#[test]
fn hand_coded_rans_planes_decode_in_the_container() {
    // The controls: planes coded from the spec by a second encoder decode
    // to the right tensor, plane 1 with plane 0 as its context (§5.3).
    let (_, p0, p1) = ctx_chunk(&Parts::parse(&rans()));
    let (a, _) = with_ctx_plane(0, hand_plane0().0);
    decode_all(&a).unwrap();
    for (scale, cuts, k) in [(12, vec![1, 2], 0), (15, vec![1], 5), (8, vec![3], 14)] {
        let model = Model::fit(&p1, Some(&p0), scale, cuts);
        let (bytes, _) = rans_encode(&model, &p1, Some(&p0), k);
        let (a, _) = with_ctx_plane(1, bytes);
        decode_all(&a).unwrap_or_else(|e| panic!("scale {scale}: {e}"));
    }
    // A one-symbol table at mode 2 (the writer would use mode 1): the state
    // never changes and no word is read.
    let mut p = Parts::parse(&rans());
    let at = chunk_of(&p, "zigzag.bf16", |c| c.kind == ChunkKind::Dense);
    let mut one = vec![2, 8, 1, 1, 0, 0];
    for _ in 0..4 {
        one.extend((1u32 << 16).to_le_bytes());
    }
    replace_plane(
        &mut p,
        at,
        0,
        Some((plane(one.len(), PlaneCodec::Rans), one)),
    );
    decode_all(&p.to_bytes()).unwrap();
}

#[test]
fn rans_plane_0_with_context_buckets() {
    // Plane 0 has no context (spec §5.3): a stream declaring buckets there
    // is refused, though the same stream decodes as plane 1.
    let (_, p0, _) = ctx_chunk(&Parts::parse(&rans()));
    let model = Model::fit(&p0, Some(&p0), 12, vec![1]);
    let (bytes, _) = rans_encode(&model, &p0, Some(&p0), 0);
    assert_rans_refused(0, bytes, "needs a context plane");
}

#[test]
fn rans_plane_with_a_bad_mode_or_size() {
    let m = ctx_chunk(&Parts::parse(&rans())).1.len();
    assert_rans_refused(0, vec![3, 0], "unknown mode");
    assert_rans_refused(0, vec![0xff; 40], "unknown mode");
    // Mode 0 (raw) one byte short and one byte long.
    assert_rans_refused(0, [vec![0], vec![1; m - 1]].concat(), "raw plane length");
    assert_rans_refused(0, [vec![0], vec![1; m + 1]].concat(), "raw plane length");
    // Mode 1 (constant) with no byte and with two.
    assert_rans_refused(0, vec![1], "constant plane");
    assert_rans_refused(0, vec![1, 0, 0], "constant plane");
    // Mode 2 cut inside its header, its tables, its states.
    let (good, states_at) = hand_plane0();
    assert_rans_refused(0, vec![2, 12], "truncated header");
    assert_rans_refused(0, good[..5].to_vec(), "truncated");
    assert_rans_refused(0, good[..states_at + 15].to_vec(), "truncated states");
    // Ending inside a table's code region (spec §5.6.3.3): f[0] = 128 takes
    // two bytes of codes, the plane stops after the first.
    let t = table_of(&[(0, 1)], &[128]);
    assert_rans_refused(
        0,
        [vec![2, 8, 1], t[..t.len() - 1].to_vec()].concat(),
        "truncated",
    );
}

#[test]
fn rans_plane_with_scale_out_of_range() {
    for scale in [0u8, 7, 16, 255] {
        let mut b = hand_plane0().0;
        b[1] = scale;
        assert_rans_refused(0, b, "scale out of range");
    }
}

#[test]
fn rans_plane_with_more_context_buckets_than_allowed() {
    // B must be 1..=16 (spec §5.6.2): 0 and 17 are refused before any cut
    // or table is read, with or without a context.
    for k in [0, 1] {
        for b in [0u8, 17, 255] {
            let mut s = hand_plane0().0;
            s[2] = b;
            assert_rans_refused(k, s, "bucket count out of range");
        }
    }
}

#[test]
fn rans_plane_with_cuts_not_increasing() {
    let (_, p0, p1) = ctx_chunk(&Parts::parse(&rans()));
    for cuts in [vec![0, 1], vec![2, 2], vec![3, 1], vec![1, 2, 2]] {
        // The cuts are written as given (bucketing only matters for coding).
        let model = Model::fit(&p1, Some(&p0), 12, vec![1, 2, 3][..cuts.len()].to_vec());
        let (mut s, _) = rans_encode(&model, &p1, Some(&p0), 0);
        s[3..3 + cuts.len()].copy_from_slice(&cuts);
        assert_rans_refused(1, s, "strictly increasing");
    }
}

/// A mode-2 plane at `scale` with one bucket whose table is `table`, then
/// four states of 2^16 (never reached: the table is refused first).
fn with_table(scale: u8, table: Vec<u8>) -> Vec<u8> {
    let mut s = [vec![2, scale, 1], table].concat();
    for _ in 0..4 {
        s.extend((1u32 << 16).to_le_bytes());
    }
    s
}

/// A one-bucket table: `runs` of present symbols, exp-Golomb order 0, the
/// codes of `freqs` (the explicit frequencies, all but the last symbol's).
fn table_of(runs: &[(u8, u8)], freqs: &[u64]) -> Vec<u8> {
    let mut t = vec![runs.len() as u8];
    for (gap, len1) in runs {
        t.extend([*gap, *len1]);
    }
    t.push(0);
    let mut bits = Bits::default();
    for &f in freqs {
        bits.golomb(f - 1, 0);
    }
    t.extend(bits.bytes);
    t
}

#[test]
fn rans_frequency_table_over_its_total() {
    // Frequencies sum to exactly 2^scale, the last one implied: an explicit
    // frequency, or running sum, reaching 2^scale leaves nothing for the
    // last symbol and is refused (spec §5.6.3.2).
    for (scale, runs, freqs) in [
        (8u8, vec![(0u8, 1u8)], vec![256u64]),      // f[0] = M
        (8, vec![(0, 1)], vec![300]),               // f[0] > M
        (12, vec![(10, 2)], vec![2048, 2048]),      // 2048 + 2048 = M
        (12, vec![(0, 0), (5, 1)], vec![4000, 96]), // 4096 at the second
    ] {
        assert_rans_refused(
            0,
            with_table(scale, table_of(&runs, &freqs)),
            "exceed the table total",
        );
    }
    // All 256 symbols at scale 8: 255 explicit 1s leave 1 for the last
    // symbol (a valid table: the plane fails later, at its states) ...
    let ones = vec![1u64; 255];
    let (a, at) = with_ctx_plane(0, with_table(8, table_of(&[(0, 255)], &ones)));
    assert_err!(
        decode_all(&a),
        Error::ChunkDecode { location, reason }
            if is_chunk(&location, at) && !reason.contains("table")
    );
    // ... and a 2 in the last explicit place reaches 256 and is refused.
    let mut over = ones;
    over[254] = 2;
    assert_rans_refused(
        0,
        with_table(8, table_of(&[(0, 255)], &over)),
        "exceed the table total",
    );
}

#[test]
fn rans_table_with_bad_runs() {
    // R = 0 and R = 129 (spec §5.6.3.1).
    assert_rans_refused(0, with_table(8, vec![0]), "run count out of range");
    assert_rans_refused(
        0,
        with_table(8, [vec![129], vec![1; 2 * 129]].concat()),
        "run count out of range",
    );
    // A second run with gap 0: two runs that should have been one.
    assert_rans_refused(0, with_table(8, vec![2, 0, 0, 0, 0, 0, 0]), "not separated");
    // A run past symbol 255: 250 + 7 symbols, and after an earlier run.
    assert_rans_refused(0, with_table(8, vec![1, 250, 6]), "past symbol 255");
    assert_rans_refused(0, with_table(8, vec![2, 0, 100, 1, 155]), "past symbol 255");
}

#[test]
fn rans_table_with_bad_codes() {
    // Exp-Golomb order above 14 (spec §5.6.3.2).
    assert_rans_refused(
        0,
        with_table(12, vec![1, 0, 1, 15, 0, 0]),
        "exp-Golomb order out of range",
    );
    // A code with more leading 1s than `scale` (spec §5.6.3.3): 9 at scale 8.
    let mut b = Bits::default();
    b.put(0x1ff, 9);
    b.put(0, 1);
    let mut t = vec![1, 0, 1, 0];
    t.extend(&b.bytes);
    t.extend([0, 0]);
    assert_rans_refused(0, with_table(8, t), "frequency code too long");
    // A padding bit set after the last code: f[0] = 128 takes 15 bits.
    let mut b = Bits::default();
    b.golomb(127, 0);
    assert_eq!(b.n, 15);
    b.bytes[1] |= 0x80;
    let mut t = vec![1, 0, 1, 0];
    t.extend(&b.bytes);
    assert_rans_refused(0, with_table(8, t), "nonzero table padding");
    // The control: the same table without the padding bit is read, and the
    // plane then fails only at its states (4 × 2^16 is not this plane).
    let mut b = Bits::default();
    b.golomb(127, 0);
    let mut t = vec![1, 0, 1, 0];
    t.extend(&b.bytes);
    let (a, at) = with_ctx_plane(0, with_table(8, t));
    assert_err!(
        decode_all(&a),
        Error::ChunkDecode { location, reason }
            if is_chunk(&location, at) && !reason.contains("table")
    );
}

#[test]
fn rans_plane_with_bad_states_or_words() {
    let (good, states_at) = hand_plane0();
    // A state below 2^16 (spec §5.6.4).
    let mut s = good.clone();
    s[states_at + 4..states_at + 8].copy_from_slice(&0xffffu32.to_le_bytes());
    assert_rans_refused(0, s, "state below 2^16");
    // An odd number of word bytes.
    assert_rans_refused(0, [good.clone(), vec![0]].concat(), "odd number");
    // A word too many, and a word too few (spec §5.6.5).
    assert_rans_refused(0, [good.clone(), vec![0, 0]].concat(), "trailing bytes");
    assert_rans_refused(0, good[..good.len() - 2].to_vec(), "truncated stream");
    // Final states other than 2^16: a one-symbol table leaves the states
    // unchanged, so a state of 2^16 + 1 is still 2^16 + 1 at the end.
    let mut p = Parts::parse(&rans());
    let at = chunk_of(&p, "zigzag.bf16", |c| c.kind == ChunkKind::Dense);
    let mut one = vec![2, 8, 1, 1, 0, 0];
    for x in [1u32 << 16, (1 << 16) + 1, 1 << 16, 1 << 16] {
        one.extend(x.to_le_bytes());
    }
    replace_plane(
        &mut p,
        at,
        0,
        Some((plane(one.len(), PlaneCodec::Rans), one)),
    );
    assert_err!(
        decode_all(&p.to_bytes()),
        Error::ChunkDecode { location, reason }
            if is_chunk(&location, at) && reason.contains("final state")
    );
}
