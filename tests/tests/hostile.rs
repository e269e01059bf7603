//! Hostile input (issue 4): one named test per attack, each asserting the
//! exact error variant the reader must give.
//!
//! Every hostile archive here is a valid one taken apart with
//! `tpde_tests::hostile::Parts`, changed in exactly one way, and put back
//! together with the header lengths, header/index CRC and (where bytes
//! moved) chunk CRCs fixed — so each attack reaches the check it targets
//! instead of being stopped early by a checksum.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use bincode::Options;
use sha2::{Digest, Sha256};
use tpde_format::format::{
    bincode_options, BaseRef, ChunkKind, Codec, Dtype, Index, Payload, Plane, PlaneCodec, Stream,
};
use tpde_format::pack::BaseMode;
use tpde_format::read::validate::is_safe_file_name;
use tpde_format::safetensors::Checkpoint;
use tpde_format::unpack::{unpack, verify, UnpackOptions};
use tpde_format::{Archive, Error, Location, NoBase, ReadLimits};
use tpde_tests::assert_err;
use tpde_tests::hostile::*;

/// The example pair, inline base, 4096-element chunks (packed once).
fn example() -> &'static [u8] {
    static A: OnceLock<Vec<u8>> = OnceLock::new();
    A.get_or_init(example_archive)
}

/// The synthetic pair, inline base, 1024-element chunks: `w.f32` has sparse
/// chunks 0 and 2 and a zero chunk 1.
fn synthetic() -> &'static [u8] {
    static A: OnceLock<Vec<u8>> = OnceLock::new();
    A.get_or_init(|| synthetic_archive(BaseMode::Inline, 1024))
}

fn set_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn set_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Byte offset, within the serialized index, of the `tensors` length
/// prefix: it is the last field, so serializing the index without tensors
/// ends with it.
fn tensors_count_offset(index: &Index) -> usize {
    let without = Index {
        tensors: Vec::new(),
        ..index.clone()
    };
    bincode_options(u64::MAX).serialize(&without).unwrap().len() - 8
}

#[test]
fn the_unmodified_archives_are_valid() {
    // The control for every test below: the inputs they start from decode.
    decode_all(example()).unwrap();
    decode_all(synthetic()).unwrap();
    assert_eq!(Parts::parse(example()).to_bytes(), example());
}

// ---- header and file length ----------------------------------------------

#[test]
fn truncated_file_is_a_length_mismatch() {
    let a = example();
    for cut in [a.len() - 1, a.len() - 4096, a.len() / 2, 65, 64] {
        assert_err!(
            open(&a[..cut]),
            Error::LengthMismatch { expected, actual }
                if expected == a.len() as u64 && actual == cut as u64
        );
    }
    for cut in [0, 8, 63] {
        assert_err!(open(&a[..cut]), Error::NotAnArchive { .. });
    }
}

#[test]
fn trailing_bytes_after_the_index_are_refused() {
    let mut a = example().to_vec();
    a.extend_from_slice(b"PK\x03\x04 a polyglot tail");
    assert_err!(open(&a), Error::LengthMismatch { .. });
    // Even when the header's file length (and CRC) are made to cover them,
    // the index must end the file.
    let len = a.len() as u64;
    set_u64(&mut a, 16, len);
    refix_crc(&mut a);
    assert_err!(open(&a), Error::BadHeader { .. });
}

#[test]
fn trailing_bytes_inside_the_declared_index_are_refused() {
    let p = Parts::parse(example());
    let mut index = p.index_bytes();
    index.extend_from_slice(&[0u8; 16]);
    assert_err!(open(&p.with_index_bytes(&index)), Error::IndexDecode { .. });
}

#[test]
fn index_length_past_the_end_of_the_file() {
    let mut a = example().to_vec();
    let index_len = u64::from_le_bytes(a[32..40].try_into().unwrap());
    set_u64(&mut a, 32, index_len + 64);
    refix_crc(&mut a);
    assert_err!(open(&a), Error::BadHeader { .. });
    set_u64(&mut a, 32, u64::MAX);
    refix_crc(&mut a);
    assert_err!(open(&a), Error::BadHeader { .. });
}

#[test]
fn index_offset_past_the_end_or_inside_the_header() {
    let a = example();
    for offset in [a.len() as u64 + 64, u64::MAX, 0, 32] {
        let mut b = a.to_vec();
        set_u64(&mut b, 24, offset);
        refix_crc(&mut b);
        assert_err!(open(&b), Error::BadHeader { .. });
    }
}

#[test]
fn index_vector_count_past_the_end_of_the_index() {
    // A length prefix promising more elements than the index holds: the
    // decoder must fail on the bytes, not allocate from the count.
    let p = Parts::parse(example());
    let at = tensors_count_offset(&p.index);
    for count in [p.index.tensors.len() as u64 + 1, 1 << 40, u64::MAX] {
        let mut index = p.index_bytes();
        set_u64(&mut index, at, count);
        assert_err!(open(&p.with_index_bytes(&index)), Error::IndexDecode { .. });
    }
    // The first field: the number of files.
    let mut index = p.index_bytes();
    set_u64(&mut index, 0, u64::MAX);
    assert_err!(open(&p.with_index_bytes(&index)), Error::IndexDecode { .. });
}

#[test]
fn index_string_length_past_the_end_of_the_index() {
    // files[0].name's length prefix sits right after the files count.
    let p = Parts::parse(example());
    for len in [p.header.index_len, 1 << 40, u64::MAX] {
        let mut index = p.index_bytes();
        set_u64(&mut index, 8, len);
        assert_err!(open(&p.with_index_bytes(&index)), Error::IndexDecode { .. });
    }
}

#[test]
fn unknown_enum_tag_in_the_index() {
    // tensors[0]: name length (8), name bytes, then the dtype tag (u32).
    let p = Parts::parse(example());
    let at = tensors_count_offset(&p.index) + 8 + 8 + p.index.tensors[0].name.len();
    let mut index = p.index_bytes();
    assert_eq!(index[at..at + 4], 11u32.to_le_bytes(), "F32's code");
    set_u32(&mut index, at, 99);
    assert_err!(open(&p.with_index_bytes(&index)), Error::IndexDecode { .. });
}

#[test]
fn index_larger_than_the_limit() {
    let a = example();
    let index_len = u64::from_le_bytes(a[32..40].try_into().unwrap());
    let limits = ReadLimits {
        max_index_bytes: index_len - 1,
        ..ReadLimits::default()
    };
    assert_err!(
        Archive::from_bytes(a, limits),
        Error::LimitExceeded { what: "max_index_bytes", value, .. } if value == index_len
    );
}

#[test]
fn more_tensors_than_the_limit() {
    let limits = ReadLimits {
        max_tensors: 29,
        ..ReadLimits::default()
    };
    assert_err!(
        Archive::from_bytes(example(), limits),
        Error::LimitExceeded {
            what: "max_tensors",
            value: 30,
            limit: 29
        }
    );
}

#[test]
fn bad_magic_is_not_an_archive() {
    let mut a = example().to_vec();
    a[1] = b'Z';
    assert_err!(open(&a), Error::NotAnArchive { .. });
    assert_err!(open(&[0u8; 4096]), Error::NotAnArchive { .. });
}

#[test]
fn unknown_major_version() {
    for major in [0u16, 2, u16::MAX] {
        let mut a = example().to_vec();
        set_u16(&mut a, 8, major);
        refix_crc(&mut a);
        assert_err!(
            open(&a),
            Error::UnsupportedVersion { major: m, minor: 0 } if m == major
        );
    }
}

#[test]
fn newer_minor_version_is_refused() {
    // Spec §8: a minor may add enum variants this reader cannot decode, so
    // a newer minor is refused by name rather than failing deep in the index.
    let newer = tpde_format::format::VERSION_MINOR + 1;
    let mut a = example().to_vec();
    set_u16(&mut a, 10, newer);
    refix_crc(&mut a);
    assert_err!(open(&a), Error::UnsupportedVersion { major: 1, minor } if minor == newer);
    // Every minor up to the reader's own is read.
    for minor in 0..=tpde_format::format::VERSION_MINOR {
        let mut a = example().to_vec();
        set_u16(&mut a, 10, minor);
        refix_crc(&mut a);
        decode_all(&a).unwrap();
    }
}

#[test]
fn unknown_required_flag() {
    // Bit 0 is known since v1.3 (a compressed index): the others are not.
    for flag in [2u32, 0x8000, 0xffff] {
        let mut a = example().to_vec();
        set_u32(&mut a, 12, flag);
        refix_crc(&mut a);
        assert_err!(open(&a), Error::UnknownFlags { flags } if flags == flag & !1);
    }
    // Bits 16.. are optional: a reader that does not know them reads on.
    let mut a = example().to_vec();
    set_u32(&mut a, 12, 0x0001_0000);
    refix_crc(&mut a);
    decode_all(&a).unwrap();
}

#[test]
fn bad_alignment_or_reserved_header_bytes() {
    let mut a = example().to_vec();
    set_u32(&mut a, 40, 4096);
    refix_crc(&mut a);
    assert_err!(open(&a), Error::BadHeader { .. });
    let mut a = example().to_vec();
    a[50] = 1;
    refix_crc(&mut a);
    assert_err!(open(&a), Error::BadHeader { .. });
}

#[test]
fn header_or_index_bytes_changed_without_the_crc() {
    let a = example();
    let index_offset = u64::from_le_bytes(a[24..32].try_into().unwrap()) as usize;
    for at in [11, 14, 61, index_offset, a.len() - 1] {
        let mut b = a.to_vec();
        b[at] ^= 0x10;
        assert_err!(open(&b), Error::IndexChecksum { .. });
    }
}

// ---- data layout -----------------------------------------------------------

#[test]
fn chunk_offsets_overlapping() {
    let mut p = Parts::parse(example());
    let blobs = p.blobs();
    let k = (0..blobs.len() - 1)
        .find(|&k| p.blob_range(blobs[k]).1 > 64)
        .unwrap();
    let (offset, _) = p.blob_range(blobs[k]);
    p.set_blob_offset(blobs[k + 1], offset + 64);
    assert_err!(
        open(&p.to_bytes()),
        Error::BadLayout { reason, .. } if reason.contains("overlaps")
    );
    // Two chunks at the very same offset.
    let mut p = Parts::parse(example());
    p.set_blob_offset(blobs[k + 1], offset);
    assert_err!(open(&p.to_bytes()), Error::BadLayout { .. });
}

#[test]
fn chunk_offsets_out_of_order() {
    // Swapping where two chunks of different lengths live breaks the
    // contiguous layout.
    let base = Parts::parse(example());
    let blobs = base.blobs();
    let (i, j) = (0..blobs.len())
        .flat_map(|i| (i + 1..blobs.len()).map(move |j| (i, j)))
        .find(|&(i, j)| base.blob_range(blobs[i]).1 != base.blob_range(blobs[j]).1)
        .unwrap();
    let mut p = base.clone();
    let (oi, oj) = (p.blob_range(blobs[i]).0, p.blob_range(blobs[j]).0);
    p.set_blob_offset(blobs[i], oj);
    p.set_blob_offset(blobs[j], oi);
    assert_err!(open(&p.to_bytes()), Error::BadLayout { .. });

    // Two chunks of equal length swapped keep a valid layout; each then
    // fails its own CRC when read, naming the chunk.
    let (i, j) = (0..blobs.len())
        .flat_map(|i| (i + 1..blobs.len()).map(move |j| (i, j)))
        .find(|&(i, j)| {
            base.blob_range(blobs[i]).1 == base.blob_range(blobs[j]).1
                && base.blob_bytes(blobs[i]) != base.blob_bytes(blobs[j])
        })
        .expect("the example has two raw bias chunks of equal length");
    let mut p = base.clone();
    let (oi, oj) = (p.blob_range(blobs[i]).0, p.blob_range(blobs[j]).0);
    p.set_blob_offset(blobs[i], oj);
    p.set_blob_offset(blobs[j], oi);
    let bytes = p.to_bytes();
    let a = open(&bytes).unwrap();
    assert_err!(
        a.check_crcs(),
        Error::ChunkChecksum {
            location: Location::Chunk { .. },
            ..
        }
    );
    assert_err!(decode_all(&bytes), Error::ChunkChecksum { .. });
}

#[test]
fn chunk_offset_past_the_end_of_the_data() {
    let mut p = Parts::parse(example());
    let last = *p.blobs().last().unwrap();
    let index_offset = p.to_bytes().len() as u64 - p.header.index_len;
    for offset in [index_offset, index_offset + 4096, u64::MAX - 63] {
        p.set_blob_offset(last, offset);
        assert_err!(open(&p.to_bytes()), Error::BadLayout { .. });
    }
}

#[test]
fn chunk_running_into_the_index() {
    // The last chunk claims 128 more stored bytes than it has: its end
    // passes the index offset. (In the synthetic archive the last chunk is
    // zstd-coded, whose stored length is not tied to its raw length.)
    let mut p = Parts::parse(synthetic());
    let Blob::Chunk(table, t, c) = *p.blobs().last().unwrap() else {
        panic!("last blob is a chunk");
    };
    let ch = &mut p.chunks_mut(table, t)[c];
    assert_eq!(ch.values.codec, Codec::Zstd);
    ch.values.stored_len += 128;
    ch.stored_len += 128;
    assert_err!(
        open(&p.to_bytes()),
        Error::BadLayout { reason, .. } if reason.contains("into the index")
    );
}

#[test]
fn gap_between_chunks() {
    let mut p = Parts::parse(example());
    let blobs = p.blobs();
    let (o, _) = p.blob_range(blobs[3]);
    p.set_blob_offset(blobs[3], o + 64);
    assert_err!(
        open(&p.to_bytes()),
        Error::BadLayout { reason, .. } if reason.contains("gap") || reason.contains("overlap")
    );
}

#[test]
fn nonzero_padding() {
    let p = Parts::parse(example());
    let blobs = p.blobs();
    // Padding after a blob whose length is not a multiple of 64.
    let b = blobs
        .iter()
        .find(|&&b| !p.blob_range(b).1.is_multiple_of(64))
        .copied()
        .unwrap();
    let (o, l) = p.blob_range(b);
    let mut a = p.to_bytes();
    a[(o + l) as usize] = 0xff; // not covered by any CRC
    assert_err!(
        open(&a),
        Error::BadLayout { offset, reason } if offset == o + l && reason.contains("padding")
    );
}

// ---- decompression bombs and stream lengths ------------------------------

/// A dense zstd chunk of the example's target `conv1.weight`.
fn dense_zstd_chunk(p: &Parts) -> (usize, usize) {
    p.find_chunk(Table::Target, |_, c| {
        c.kind == ChunkKind::Dense && c.values.codec == Codec::Zstd
    })
    .unwrap()
}

#[test]
fn zstd_frame_expanding_past_the_declared_size() {
    let mut p = Parts::parse(example());
    let (t, c) = dense_zstd_chunk(&p);
    let raw_len = p.chunks(Table::Target, t)[c].values.raw_len as usize;
    // A real frame of 64× the declared size (its header says so)...
    let bomb = zstd::bulk::compress(&vec![0u8; raw_len * 64], 3).unwrap();
    assert!(bomb.len() < 200);
    p.edit_chunk(Table::Target, t, c, |ch, bytes| {
        ch.values.stored_len = bomb.len() as u64;
        *bytes = bomb.clone();
    });
    assert_err!(
        decode_all(&p.to_bytes()),
        Error::ChunkDecode { location: Location::Chunk { chunk, base: false, .. }, .. } if chunk == c as u64
    );
    // ...and one from a streaming encoder, whose header declares no size.
    let mut p = Parts::parse(example());
    let bomb = zstd::stream::encode_all(&vec![7u8; raw_len * 64][..], 3).unwrap();
    p.edit_chunk(Table::Target, t, c, |ch, bytes| {
        ch.values.stored_len = bomb.len() as u64;
        *bytes = bomb.clone();
    });
    assert_err!(decode_all(&p.to_bytes()), Error::ChunkDecode { .. });
}

/// A zstd frame header claiming `content_size` bytes, followed by `blocks`
/// RLE blocks of 128 KiB each (4 bytes apiece): a terabyte claim costs
/// nothing to write.
fn rle_bomb(content_size: u64, blocks: usize) -> Vec<u8> {
    let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
    f.push(0b1100_0000); // 8-byte content size, not single segment, no checksum
    f.push(0x38); // window descriptor: 2^(10+7) = 128 KiB
    f.extend_from_slice(&content_size.to_le_bytes());
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let header = last | (1 << 1) | ((128 << 10) << 3); // RLE, 128 KiB
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.push(0x42);
    }
    f
}

#[test]
fn zstd_frame_claiming_a_terabyte() {
    let mut p = Parts::parse(example());
    let (t, c) = dense_zstd_chunk(&p);
    for bomb in [rle_bomb(1 << 40, 64), rle_bomb(u64::MAX - 1, 4)] {
        p.edit_chunk(Table::Target, t, c, |ch, bytes| {
            ch.values.stored_len = bomb.len() as u64;
            *bytes = bomb.clone();
        });
        assert_err!(decode_all(&p.to_bytes()), Error::ChunkDecode { .. });
    }
}

#[test]
fn zstd_frame_shorter_than_declared() {
    // Stored length tiny, claimed raw length the whole chunk: with the size
    // in the frame header (refused before allocating) and without it
    // (refused after decoding into the declared-size buffer).
    let (t, c) = dense_zstd_chunk(&Parts::parse(example()));
    for tiny in [
        zstd::bulk::compress(&[0u8; 100], 3).unwrap(),
        zstd::stream::encode_all(&[0u8; 100][..], 3).unwrap(),
    ] {
        let mut p = Parts::parse(example());
        p.edit_chunk(Table::Target, t, c, |ch, bytes| {
            ch.values.stored_len = tiny.len() as u64;
            *bytes = tiny.clone();
        });
        assert_err!(
            decode_all(&p.to_bytes()),
            Error::ChunkDecode { reason, .. } if reason.contains("declare")
        );
    }
}

#[test]
fn zstd_garbage_is_a_decode_error() {
    let mut p = Parts::parse(example());
    let (t, c) = dense_zstd_chunk(&p);
    p.edit_chunk(Table::Target, t, c, |_, bytes| {
        for b in bytes.iter_mut().skip(6).step_by(3) {
            *b ^= 0x5a;
        }
    });
    assert_err!(decode_all(&p.to_bytes()), Error::ChunkDecode { .. });
}

#[test]
fn declared_raw_length_beyond_the_chunk() {
    // The bomb's other half: a huge raw length is refused at open, before
    // anything is allocated, because a dense chunk's raw length is fixed by
    // its element count.
    let mut p = Parts::parse(example());
    let (t, c) = dense_zstd_chunk(&p);
    p.chunks_mut(Table::Target, t)[c].values.raw_len = 1 << 40;
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex {
            location: Location::Chunk { .. },
            ..
        }
    );
}

#[test]
fn chunk_size_beyond_the_limits() {
    // One chunk of 2^23 f32 elements = 32 MiB of raw stream, over the strict
    // 16 MiB limit: refused at open, nothing decoded or allocated.
    let dir = tempfile::tempdir().unwrap();
    let (t, b) = synthetic_pair(dir.path());
    let a = pack_bytes(&t, Some(&b), BaseMode::Inline, 1 << 23);
    Archive::from_bytes(&a[..], ReadLimits::default()).unwrap();
    assert_err!(
        Archive::from_bytes(&a[..], ReadLimits::strict()),
        Error::LimitExceeded { what: "max_chunk_raw_bytes", value, .. } if value == 1 << 25
    );
}

#[test]
fn raw_stream_lengths_disagree() {
    let mut p = Parts::parse(example());
    let (t, c) = p
        .find_chunk(Table::Target, |_, c| {
            c.values.codec == Codec::Raw && c.stored_len > 0
        })
        .unwrap();
    let ch = &mut p.chunks_mut(Table::Target, t)[c];
    ch.values.raw_len += 4;
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
}

#[test]
fn empty_zstd_stream() {
    let mut p = Parts::parse(example());
    let (t, c) = dense_zstd_chunk(&p);
    p.edit_chunk(Table::Target, t, c, |ch, bytes| {
        ch.values.stored_len = 0;
        bytes.clear();
    });
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
}

#[test]
fn stored_length_differs_from_its_streams() {
    let mut p = Parts::parse(example());
    let (t, c) = dense_zstd_chunk(&p);
    p.chunks_mut(Table::Target, t)[c].values.stored_len -= 1;
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
}

// ---- element ranges and chunk tables ---------------------------------------

#[test]
fn element_range_past_the_tensor_end() {
    let mut p = Parts::parse(example());
    let t = p.target("conv1.weight");
    let chunks = p.chunks_mut(Table::Target, t);
    let last = chunks.len() - 1;
    chunks[last].elem_count += 1;
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex { location: Location::Chunk { tensor, base: false, chunk }, .. }
            if tensor == "conv1.weight" && chunk == last as u64
    );
}

#[test]
fn element_range_not_the_chunk_slot() {
    let mut p = Parts::parse(example());
    let t = p.target("conv1.weight");
    p.chunks_mut(Table::Target, t)[1].elem_start += 1;
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex {
            location: Location::Chunk { chunk: 1, .. },
            ..
        }
    );
    let mut p = Parts::parse(example());
    let chunks = p.chunks_mut(Table::Target, t);
    chunks.swap(1, 2);
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
}

#[test]
fn chunk_count_differs_from_the_shape() {
    let mut p = Parts::parse(example());
    let t = p.target("conv1.weight");
    let chunks = p.chunks_mut(Table::Target, t);
    let extra = chunks[0].clone();
    chunks.push(extra);
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
    let mut p = Parts::parse(example());
    p.chunks_mut(Table::Target, t).pop();
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
}

#[test]
fn chunk_elems_zero_or_too_large() {
    for ce in [0u64, (1 << 32) + 1, u64::MAX] {
        let mut p = Parts::parse(example());
        let t = p.target("conv1.bias");
        if let Payload::Chunked { chunk_elems, .. } = &mut p.index.tensors[t].payload {
            *chunk_elems = ce;
        }
        assert_err!(
            open(&p.to_bytes()),
            Error::InvalidIndex {
                location: Location::Tensor { .. },
                ..
            }
        );
    }
}

#[test]
fn chunk_kind_rules() {
    let p0 = Parts::parse(synthetic());
    // A zero chunk that stores bytes.
    let mut p = p0.clone();
    let (t, c) = p
        .find_chunk(Table::Target, |_, c| c.kind == ChunkKind::Dense)
        .unwrap();
    p.chunks_mut(Table::Target, t)[c].kind = ChunkKind::Zero;
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
    // A dense chunk with a positions stream.
    let mut p = p0.clone();
    let (t, c) = p
        .find_chunk(Table::Target, |_, c| c.kind == ChunkKind::Sparse)
        .unwrap();
    p.chunks_mut(Table::Target, t)[c].kind = ChunkKind::Dense;
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
    // A sparse chunk with no positions, or more than its elements.
    for changed in [0, 1025] {
        let mut p = p0.clone();
        p.chunks_mut(Table::Target, t)[c].changed = changed;
        assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
    }
    // An empty chunk that still claims an offset.
    let mut p = p0.clone();
    let (t, c) = p
        .find_chunk(Table::Target, |_, c| c.kind == ChunkKind::Zero)
        .unwrap();
    p.chunks_mut(Table::Target, t)[c].offset = 64;
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
}

// ---- sparse positions ------------------------------------------------------
//
// Positions are gap-encoded (spec §5.5): each is stored as its distance
// past the previous one (`p[i] - p[i-1] - 1`, an unsigned LEB128), so a
// stream that is "not increasing" cannot be written at all: every decoded
// position is at least one more than the last. What a hostile stream *can*
// do is overflow (a gap or a varint too large, positions past the chunk),
// end early, or carry trailing bytes; those are tested below.

/// Replaces sparse chunk 0 of `w.f32` (1024 elements) with `changed`
/// positions given as raw bytes `pos`, and raw values.
fn with_positions(changed: u64, pos: &[u8]) -> Vec<u8> {
    let mut p = Parts::parse(synthetic());
    let t = p.target("w.f32");
    assert_eq!(p.chunks(Table::Target, t)[0].kind, ChunkKind::Sparse);
    p.edit_chunk(Table::Target, t, 0, |ch, bytes| {
        let values = vec![0x11u8; changed as usize * 4];
        ch.changed = changed;
        ch.positions = Stream {
            stored_len: pos.len() as u64,
            raw_len: pos.len() as u64,
            codec: Codec::Raw,
        };
        ch.values = Stream {
            stored_len: values.len() as u64,
            raw_len: values.len() as u64,
            codec: Codec::Raw,
        };
        *bytes = [pos, &values].concat();
    });
    p.to_bytes()
}

fn assert_positions_error(a: &[u8], needle: &str) {
    assert_err!(
        decode_all(a),
        Error::ChunkDecode { location: Location::Chunk { tensor, base: false, chunk: 0 }, reason }
            if tensor == "w.f32" && reason.contains(needle)
    );
}

#[test]
fn sparse_control_positions_decode() {
    // The helper itself makes a decodable chunk (the digest then differs).
    assert_err!(
        decode_all(&with_positions(2, &[3, 5])),
        Error::TensorDigest { tensor, .. } if tensor == "w.f32"
    );
}

#[test]
fn sparse_position_past_the_chunk_end() {
    // 1024 = LEB128 0x80 0x08: the chunk has elements 0..1024.
    assert_positions_error(&with_positions(1, &[0x80, 0x08]), "past the end");
}

#[test]
fn sparse_gaps_summing_past_the_chunk_end() {
    // 1000, then 1000 + 1 + 100.
    assert_positions_error(&with_positions(2, &[0xe8, 0x07, 100]), "past the end");
}

#[test]
fn sparse_gap_overflowing_u32() {
    // Two maximal 5-byte varints (2^35 - 1): past any chunk, and past u32.
    let max = [0xff, 0xff, 0xff, 0xff, 0x7f];
    assert_positions_error(&with_positions(2, &[max, max].concat()), "past the end");
}

#[test]
fn sparse_varint_longer_than_five_bytes() {
    assert_positions_error(
        &with_positions(2, &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00]),
        "longer than 5 bytes",
    );
}

#[test]
fn sparse_positions_ending_early() {
    assert_positions_error(&with_positions(2, &[0x80, 0x80]), "ends early");
}

#[test]
fn sparse_positions_with_trailing_bytes() {
    assert_positions_error(&with_positions(1, &[0, 0]), "trailing");
}

#[test]
fn sparse_positions_length_impossible_for_the_count() {
    // Fewer bytes than positions, or more than 5 per position: refused at open.
    assert_err!(
        open(&with_positions(3, &[0, 0])),
        Error::InvalidIndex {
            location: Location::Chunk { .. },
            ..
        }
    );
    assert_err!(
        open(&with_positions(1, &[0x80, 0x80, 0x80, 0x80, 0x80, 0x00])),
        Error::InvalidIndex { .. }
    );
}

// ---- shapes -----------------------------------------------------------------

#[test]
fn shape_element_count_overflows() {
    for shape in [
        vec![u64::MAX, 2],
        vec![1 << 32, 1 << 32],
        vec![1 << 62], // elements fit in u64, bytes (× 4) do not
    ] {
        let mut p = Parts::parse(example());
        let t = p.target("conv1.weight");
        p.index.tensors[t].shape = shape;
        assert_err!(
            open(&p.to_bytes()),
            Error::InvalidIndex { location: Location::Tensor { name, base: false }, reason }
                if name == "conv1.weight" && reason.contains("overflow")
        );
    }
}

#[test]
fn shape_larger_than_the_limits() {
    let mut p = Parts::parse(example());
    let t = p.target("conv1.weight");
    p.index.tensors[t].shape = vec![1 << 30];
    assert_err!(
        Archive::from_bytes(&p.to_bytes()[..], ReadLimits::strict()),
        Error::LimitExceeded {
            what: "max_tensor_bytes",
            ..
        }
    );
}

#[test]
fn shape_not_matching_the_chunks_or_the_base() {
    let mut p = Parts::parse(example());
    let t = p.target("conv1.weight");
    p.index.tensors[t].shape[0] += 1;
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
}

// ---- names ------------------------------------------------------------------

#[test]
fn duplicate_tensor_names() {
    let mut p = Parts::parse(example());
    p.index.tensors[1].name = p.index.tensors[0].name.clone();
    let dup = p.index.tensors[0].name.clone();
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex { location: Location::Tensor { name, base: false }, reason }
            if name == dup && reason.contains("duplicate")
    );
    let mut p = Parts::parse(example());
    p.index.bases[1].name = p.index.bases[0].name.clone();
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex {
            location: Location::Tensor { base: true, .. },
            ..
        }
    );
}

const HOSTILE_NAMES: &[&str] = &[
    "../evil.safetensors",
    "sub/model.safetensors",
    "..",
    ".",
    "",
    "/etc/passwd",
    "/tmp/evil",
    "model\0.safetensors",
    "..\\evil",
    "C:evil",
    "line\nbreak",
];

fn sharded_archive() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let root = sharded_checkpoint(dir.path(), "ckpt");
    pack_bytes(&root, None, BaseMode::Inline, 1024)
}

#[test]
fn hostile_file_names_are_refused() {
    let a = sharded_archive();
    let p = Parts::parse(&a);
    assert_eq!((p.index.files.len(), p.index.extra_files.len()), (2, 1));
    for name in HOSTILE_NAMES {
        assert!(!is_safe_file_name(name), "{name:?}");
        let mut q = p.clone();
        q.index.files[1].name = (*name).to_owned();
        assert_err!(
            open(&q.to_bytes()),
            Error::InvalidIndex { location: Location::File { name: n }, .. } if n == *name
        );
        let mut q = p.clone();
        q.index.extra_files[0].name = (*name).to_owned();
        assert_err!(
            open(&q.to_bytes()),
            Error::InvalidIndex { location: Location::File { name: n }, .. } if n == *name
        );
    }
    // A target file and an extra file of the same name.
    let mut q = p.clone();
    q.index.extra_files[0].name = q.index.files[0].name.clone();
    assert_err!(
        open(&q.to_bytes()),
        Error::InvalidIndex { reason, .. } if reason.contains("duplicate")
    );
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn unpack_never_writes_outside_its_output_directory() {
    let a = sharded_archive();
    let p = Parts::parse(&a);
    let sandbox = tempfile::tempdir().unwrap();
    let out = sandbox.path().join("inner").join("out");
    std::fs::create_dir(sandbox.path().join("inner")).unwrap();
    // Hostile names never get as far as an archive to unpack.
    for name in HOSTILE_NAMES {
        let mut q = p.clone();
        q.index.files[0].name = (*name).to_owned();
        let bytes = q.to_bytes();
        let res = open(&bytes)
            .and_then(|a| unpack(&a, &NoBase, &out, &UnpackOptions::default(), &mut |_| {}));
        assert_err!(res, Error::InvalidIndex { .. });
        assert_eq!(tree(sandbox.path()), ["inner"], "{name:?} wrote something");
    }
    // The control: valid names land inside `out` and nowhere else.
    let a = open(&a).unwrap();
    unpack(&a, &NoBase, &out, &UnpackOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(
        tree(sandbox.path()),
        [
            "inner",
            "inner/out",
            "inner/out/model-00001-of-00002.safetensors",
            "inner/out/model-00002-of-00002.safetensors",
            "inner/out/model.safetensors.index.json",
        ]
    );
}

// ---- bases --------------------------------------------------------------------

#[test]
fn external_base_with_the_wrong_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (t, b) = synthetic_pair(dir.path());
    let a = pack_bytes(&t, Some(&b), BaseMode::External, 1024);
    let right = Checkpoint::open(&b).unwrap();
    decode_all_with(&a, &right).unwrap();

    // The target file passed as the base: same names, dtypes and shapes,
    // different bytes.
    let wrong = Checkpoint::open(&t).unwrap();
    assert_err!(
        decode_all_with(&a, &wrong),
        Error::BaseMismatch { tensor, expected, actual } if tensor == "w.f32" && expected != actual
    );
    // The archive's recorded digest tampered with: the right base is refused.
    let mut p = Parts::parse(&a);
    let ti = p.target("w.u16");
    if let BaseRef::External { sha256, .. } = &mut p.index.tensors[ti].base {
        sha256[0] ^= 1;
    }
    assert_err!(
        decode_all_with(&p.to_bytes(), &right),
        Error::BaseMismatch { tensor, .. } if tensor == "w.u16"
    );
    // No base at all.
    assert_err!(decode_all(&a), Error::MissingBase { .. });
    // Whole-file streaming checks only the file digest as it goes (spec §9:
    // it covers every byte); the mismatch is then traced to the base, by
    // name, and unpack leaves nothing behind.
    let archive = open(&a).unwrap();
    assert_err!(
        tpde_format::unpack::stream_file(&archive, 0, &wrong, &mut |_| Ok(())),
        Error::BaseMismatch { tensor, .. } if tensor == "w.f32"
    );
    let out = dir.path().join("out.safetensors");
    assert_err!(
        tpde_format::unpack::unpack(&archive, &wrong, &out, &Default::default(), &mut |_| {}),
        Error::BaseMismatch { tensor, .. } if tensor == "w.f32"
    );
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "a temp file left behind"
    );
    // A wrong recorded base digest over the right base: the output is still
    // proven right by the file digest, so whole-file streaming returns it
    // (spec §12.3); verify, which checks every digest, refuses it.
    let tampered = p.to_bytes();
    let tampered = open(&tampered).unwrap();
    tpde_format::unpack::stream_file(&tampered, 0, &right, &mut |_| Ok(())).unwrap();
    assert_err!(
        tpde_format::unpack::verify(&tampered, &right, None, &mut |_| {}),
        Error::BaseMismatch { tensor, .. } if tensor == "w.u16"
    );
}

#[test]
fn external_base_with_the_wrong_shape_or_length() {
    let dir = tempfile::tempdir().unwrap();
    let (t, b) = synthetic_pair(dir.path());
    let a = pack_bytes(&t, Some(&b), BaseMode::External, 1024);
    let right = Checkpoint::open(&b).unwrap();
    let mut base: HashMap<String, (Dtype, Vec<u64>, Vec<u8>)> = HashMap::new();
    for f in &right.files {
        for t in &f.tensors {
            let data = f.bytes()[t.offset as usize..(t.offset + t.len) as usize].to_vec();
            base.insert(t.name.clone(), (t.dtype, t.shape.clone(), data));
        }
    }
    decode_all_with(&a, &base).unwrap();
    let mut short = base.clone();
    short.get_mut("w.f32").unwrap().2.truncate(16);
    assert_err!(decode_all_with(&a, &short), Error::BaseMismatch { .. });
    // Even when the (hostile) archive recorded the digest of those short
    // bytes, they are refused rather than sliced past their end.
    let mut p = Parts::parse(&a);
    let ti = p.target("w.f32");
    if let BaseRef::External { sha256, .. } = &mut p.index.tensors[ti].base {
        *sha256 = Sha256::digest(&short["w.f32"].2).into();
    }
    assert_err!(
        decode_all_with(&p.to_bytes(), &short),
        Error::BaseMismatch { tensor, .. } if tensor == "w.f32"
    );
    let mut reshaped = base.clone();
    reshaped.get_mut("w.f32").unwrap().1 = vec![3000];
    assert_err!(decode_all_with(&a, &reshaped), Error::BaseMismatch { .. });
    let mut retyped = base;
    retyped.get_mut("w.f32").unwrap().0 = Dtype::U32;
    assert_err!(decode_all_with(&a, &retyped), Error::BaseMismatch { .. });
}

#[test]
fn base_references_out_of_range() {
    let mut p = Parts::parse(example());
    p.index.tensors[0].base = BaseRef::Inline { index: 15 };
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
    let mut p = Parts::parse(example());
    p.index.tensors[0].base = BaseRef::External {
        file: 0,
        name: "x".into(),
        sha256: [0; 32],
    };
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
}

#[test]
fn inline_base_of_another_dtype_or_with_a_base_itself() {
    let mut p = Parts::parse(example());
    p.index.bases[1].dtype = Dtype::I32;
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
    let mut p = Parts::parse(example());
    p.index.bases[1].base = BaseRef::Inline { index: 0 };
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex {
            location: Location::Tensor { base: true, .. },
            ..
        }
    );
}

#[test]
fn inline_base_with_larger_chunks_than_its_target() {
    // Each target chunk decodes the base range under it; a base chunk many
    // times the target's chunk size would be decoded once per target chunk,
    // turning a small file into unbounded work. Refused at open.
    let mut p = Parts::parse(&synthetic_archive(BaseMode::Inline, 256));
    let big = Parts::parse(&synthetic_archive(BaseMode::Inline, 4096));
    p.graft_bases(&big);
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex { location: Location::Tensor { base: false, .. }, reason }
            if reason.contains("chunk")
    );
    // Smaller base chunks are fine: each target chunk touches a bounded
    // number of them.
    let mut p = Parts::parse(&synthetic_archive(BaseMode::Inline, 1024));
    p.graft_bases(&Parts::parse(&synthetic_archive(BaseMode::Inline, 256)));
    decode_all(&p.to_bytes()).unwrap();
}

#[test]
fn plain_payload_rules() {
    let a = synthetic_archive(BaseMode::InlinePlain, 1024);
    decode_all(&a).unwrap();
    let p0 = Parts::parse(&a);
    assert!(matches!(p0.index.bases[0].payload, Payload::Plain { .. }));
    // Length not the tensor's size.
    let mut p = p0.clone();
    if let Payload::Plain { len, .. } = &mut p.index.bases[0].payload {
        *len -= 4;
    }
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
    // A plain payload with a base.
    let mut p = p0.clone();
    let plain = p.index.bases[0].payload.clone();
    p.index.tensors[0].payload = plain;
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
    // Its bytes changed: CRC error naming the base tensor.
    let mut b = p0.to_bytes();
    let Payload::Plain { offset, .. } = p0.index.bases[0].payload else {
        unreachable!()
    };
    b[offset as usize + 5] ^= 1;
    let name = p0.index.bases[0].name.clone();
    assert_err!(
        decode_all(&b),
        Error::ChunkChecksum { location: Location::Tensor { name: n, base: true }, .. } if n == name
    );
}

// ---- files and digests --------------------------------------------------------

#[test]
fn tensors_and_files_must_match() {
    let p0 = Parts::parse(&sharded_archive());
    // A tensor in two files.
    let mut p = p0.clone();
    let t = p.index.files[0].tensors[0];
    p.index.files[1].tensors.push(t);
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex {
            location: Location::File { .. },
            ..
        }
    );
    // A tensor in no file.
    let mut p = p0.clone();
    p.index.files[1].tensors.clear();
    p.index.files[1].size = 8 + p.index.files[1].header.len() as u64;
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex {
            location: Location::Tensor { .. },
            ..
        }
    );
    // A tensor index out of range.
    let mut p = p0.clone();
    p.index.files[0].tensors[0] = 7;
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
    // A size that does not add up.
    let mut p = p0.clone();
    p.index.files[0].size += 1;
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
}

#[test]
fn tensor_digest_mismatch() {
    let mut p = Parts::parse(example());
    let t = p.target("conv2.bias");
    p.index.tensors[t].sha256[31] ^= 1;
    assert_err!(
        decode_all(&p.to_bytes()),
        Error::TensorDigest { tensor, .. } if tensor == "conv2.bias"
    );
}

#[test]
fn file_digest_mismatch() {
    // A file digest that disagrees with its tensors (the index CRC
    // recomputed over it): `verify` and the file-digest policy refuse it,
    // leaving no output. `unpack` proves the file through its tensors and
    // header (spec §10.2) and writes what they describe, the original.
    let mut p = Parts::parse(example());
    p.index.files[0].sha256[0] ^= 1;
    let bytes = p.to_bytes();
    let a = open(&bytes).unwrap();
    assert_err!(
        verify(&a, &NoBase, None, &mut |_| {}),
        Error::FileDigest { .. }
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let file_policy = |sink: &mut dyn FnMut(&[u8]) -> Result<(), Error>| {
        tpde_format::unpack::stream_file_with(&a, 0, &NoBase, Digests::File, sink)
    };
    assert_err!(file_policy(&mut |_| Ok(())), Error::FileDigest { .. });
    unpack(&a, &NoBase, &out, &UnpackOptions::default(), &mut |_| {}).unwrap();
    let good = open(example()).unwrap();
    let mut want = Vec::new();
    tpde_format::unpack::stream_file_with(&good, 0, &NoBase, Digests::All, &mut |b| {
        want.extend_from_slice(b);
        Ok(())
    })
    .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), want);
}

#[test]
fn a_header_that_does_not_describe_the_tensors_falls_back_to_the_file_digest() {
    // Spec §10.2: proving the tensors proves the file only with a header
    // that describes them. A header edited (index CRC recomputed) so that a
    // tensor's name or offsets no longer match, or that is not JSON, makes
    // unpack check the file digest, which refuses it, leaving no output.
    let p = Parts::parse(example());
    let header = String::from_utf8(p.index.files[0].header.clone()).unwrap();
    let name = &p.index.tensors[p.index.files[0].tensors[0] as usize].name;
    let edits = [
        header.replacen(
            &format!("\"{name}\""),
            &format!("\"{}x\"", &name[..name.len() - 1]),
            1,
        ),
        header.replacen("\"data_offsets\":[0,", "\"data_offsets\":[1,", 1),
        header.replacen('{', "[", 1),
    ];
    for (k, edited) in edits.iter().enumerate() {
        assert_ne!(*edited, header, "edit {k} changed nothing");
        let mut q = Parts::parse(example());
        q.index.files[0].header = edited.clone().into_bytes();
        q.index.files[0].size = 8
            + edited.len() as u64
            + q.index.files[0]
                .tensors
                .iter()
                .map(|&t| q.index.tensors[t as usize].byte_len().unwrap())
                .sum::<u64>();
        let bytes = q.to_bytes();
        let a = open(&bytes).unwrap();
        assert_err!(
            tpde_format::unpack::stream_file(&a, 0, &NoBase, &mut |_| Ok(())),
            Error::FileDigest { .. }
        );
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.safetensors");
        assert_err!(
            unpack(&a, &NoBase, &out, &UnpackOptions::default(), &mut |_| {}),
            Error::FileDigest { .. }
        );
        assert_eq!(tree(dir.path()), Vec::<String>::new(), "no partial output");
        assert_err!(
            verify(&a, &NoBase, None, &mut |_| {}),
            Error::FileDigest { .. }
        );
    }
}

#[test]
fn extra_file_digest_mismatch() {
    let mut p = Parts::parse(&sharded_archive());
    p.index.extra_files[0].contents.push(b' ');
    let bytes = p.to_bytes();
    let a = open(&bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert_err!(
        unpack(&a, &NoBase, &dir.path().join("out"), &UnpackOptions::default(), &mut |_| {}),
        Error::FileDigest { file, .. } if file == "model.safetensors.index.json"
    );
    assert_eq!(tree(dir.path()), Vec::<String>::new(), "no partial output");
}

#[test]
fn chunk_crc_mismatch_names_the_chunk() {
    let p = Parts::parse(example());
    let (t, c) = dense_zstd_chunk(&p);
    let (offset, _) = p.blob_range(Blob::Chunk(Table::Target, t, c));
    let mut b = p.to_bytes();
    b[offset as usize + 3] ^= 0x80;
    let name = p.index.tensors[t].name.clone();
    assert_err!(
        decode_all(&b),
        Error::ChunkChecksum { location: Location::Chunk { tensor, base: false, chunk }, stored, computed }
            if tensor == name && chunk == c as u64 && stored != computed
    );
}

// ---- v1.1: per-plane value streams, widened bases, one zstd frame ----------

fn v11() -> &'static [u8] {
    static A: OnceLock<Vec<u8>> = OnceLock::new();
    A.get_or_init(|| v11_archive(BaseMode::Inline, 1024))
}

/// A dense chunk of `noisy` whose values are stored per plane, zstd planes
/// included.
fn per_plane_chunk(p: &Parts) -> (usize, usize) {
    let t = p.target("noisy");
    let c = p
        .chunks(Table::Target, t)
        .iter()
        .position(|c| matches!(&c.values.codec, Codec::PerPlane(planes) if planes.iter().any(|pl| pl.codec == PlaneCodec::Zstd)))
        .expect("noisy has per-plane zstd chunks");
    (t, c)
}

#[test]
fn v11_control_decodes() {
    decode_all(v11()).unwrap();
    let p = Parts::parse(v11());
    assert_eq!(p.header.minor, 1);
    assert!(matches!(
        p.index.tensors[p.target("w")].base,
        BaseRef::InlineWidened { .. }
    ));
}

#[test]
fn per_plane_stream_with_the_wrong_plane_count() {
    let mut p = Parts::parse(v11());
    let (t, c) = per_plane_chunk(&p);
    if let Codec::PerPlane(planes) = &mut p.chunks_mut(Table::Target, t)[c].values.codec {
        let last = planes.pop().unwrap();
        planes[0].stored_len += last.stored_len;
    }
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex { location: Location::Chunk { chunk, .. }, .. } if chunk == c as u64
    );
}

#[test]
fn per_plane_lengths_not_adding_up() {
    let mut p = Parts::parse(v11());
    let (t, c) = per_plane_chunk(&p);
    if let Codec::PerPlane(planes) = &mut p.chunks_mut(Table::Target, t)[c].values.codec {
        planes[0].stored_len += 1;
    }
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
    // A raw plane must be exactly one plane long.
    let mut p = Parts::parse(v11());
    let (t, c) = p
        .find_chunk(
            Table::Target,
            |_, c| matches!(&c.values.codec, Codec::PerPlane(pl) if pl[0].codec == PlaneCodec::Raw),
        )
        .unwrap();
    let ch = &mut p.chunks_mut(Table::Target, t)[c];
    if let Codec::PerPlane(planes) = &mut ch.values.codec {
        planes[0].stored_len += 1;
        planes[1].stored_len -= 1;
    }
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
}

#[test]
fn per_plane_codec_on_a_positions_stream() {
    let mut p = Parts::parse(synthetic());
    let (t, c) = p
        .find_chunk(Table::Target, |_, c| c.kind == ChunkKind::Sparse)
        .unwrap();
    let ch = &mut p.chunks_mut(Table::Target, t)[c];
    let len = ch.positions.stored_len;
    ch.positions.codec = Codec::PerPlane(vec![Plane {
        stored_len: len,
        codec: PlaneCodec::Raw,
    }]);
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
}

#[test]
fn per_plane_zstd_plane_expanding_past_its_size() {
    let (t, c) = per_plane_chunk(&Parts::parse(v11()));
    let plane_len = {
        let p = Parts::parse(v11());
        let ch = &p.chunks(Table::Target, t)[c];
        (ch.values.raw_len / 4) as usize
    };
    // With the size in the frame header, and without (streaming encoder).
    for bomb in [
        zstd::bulk::compress(&vec![0u8; plane_len * 64], 3).unwrap(),
        zstd::stream::encode_all(&vec![1u8; plane_len * 64][..], 3).unwrap(),
    ] {
        assert!(bomb.len() < 256, "a 64x plane costs a few bytes");
        let mut p = Parts::parse(v11());
        p.edit_chunk(Table::Target, t, c, |ch, bytes| {
            let Codec::PerPlane(planes) = &mut ch.values.codec else {
                unreachable!()
            };
            let k = planes
                .iter()
                .position(|pl| pl.codec == PlaneCodec::Zstd)
                .unwrap();
            let at = planes[..k].iter().map(|pl| pl.stored_len).sum::<u64>() as usize;
            let end = at + planes[k].stored_len as usize;
            *bytes = [&bytes[..at], &bomb[..], &bytes[end..]].concat();
            ch.values.stored_len = ch.values.stored_len - planes[k].stored_len + bomb.len() as u64;
            planes[k].stored_len = bomb.len() as u64;
        });
        assert_err!(
            decode_all(&p.to_bytes()),
            Error::ChunkDecode { location: Location::Chunk { tensor, chunk, .. }, .. }
                if tensor == "noisy" && chunk == c as u64
        );
    }
}

#[test]
fn zstd_stream_with_a_second_frame() {
    // libzstd would happily decode frames appended after the first; the
    // spec allows exactly one, so a polyglot tail is refused.
    let mut p = Parts::parse(example());
    let (t, c) = dense_zstd_chunk(&p);
    let raw_len = p.chunks(Table::Target, t)[c].values.raw_len as usize;
    p.edit_chunk(Table::Target, t, c, |ch, bytes| {
        let first = zstd::bulk::compress(&vec![3u8; raw_len / 2], 3).unwrap();
        let second = zstd::bulk::compress(&vec![4u8; raw_len / 2], 3).unwrap();
        *bytes = [first, second].concat();
        ch.values.stored_len = bytes.len() as u64;
    });
    assert_err!(
        decode_all(&p.to_bytes()),
        Error::ChunkDecode { reason, .. } if reason.contains("frame")
    );
}

#[test]
fn widened_base_that_cannot_widen() {
    // An inline base of an integer dtype under an f32 tensor: not a
    // widening the spec defines.
    let mut p = Parts::parse(v11());
    let t = p.target("w");
    let BaseRef::InlineWidened { index } = p.index.tensors[t].base else {
        panic!("w has a widened inline base");
    };
    p.index.bases[index as usize].dtype = Dtype::I16;
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex { location: Location::Tensor { name, base: false }, .. } if name == "w"
    );
    // Widening to a narrower or equal dtype.
    let mut p = Parts::parse(v11());
    p.index.tensors[t].dtype = Dtype::BF16;
    p.index.tensors[t].shape = vec![64, 128];
    assert_err!(open(&p.to_bytes()), Error::InvalidIndex { .. });
    // External: the recorded base dtype is not a narrower float.
    let a = v11_archive(BaseMode::External, 1024);
    let mut p = Parts::parse(&a);
    let t = p.target("w");
    if let BaseRef::ExternalWidened { dtype, .. } = &mut p.index.tensors[t].base {
        *dtype = Dtype::U16;
    } else {
        panic!("w has a widened external base");
    }
    assert_err!(
        open(&p.to_bytes()),
        Error::InvalidIndex { location: Location::Tensor { name, .. }, .. } if name == "w"
    );
}

#[test]
fn widened_external_base_with_the_wrong_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (tp, bp) = v11_pair(dir.path());
    let a = pack_minor(&tp, Some(&bp), BaseMode::External, 1024, 1);
    let right = Checkpoint::open(&bp).unwrap();
    decode_all_with(&a, &right).unwrap();
    let mut wrong: HashMap<String, (Dtype, Vec<u64>, Vec<u8>)> = HashMap::new();
    for f in &right.files {
        for t in &f.tensors {
            let mut data = f.bytes()[t.offset as usize..(t.offset + t.len) as usize].to_vec();
            data[0] ^= 1;
            wrong.insert(t.name.clone(), (t.dtype, t.shape.clone(), data));
        }
    }
    assert_err!(
        decode_all_with(&a, &wrong),
        Error::BaseMismatch { tensor, .. } if tensor == "w" || tensor == "noisy"
    );
    // The right bytes under the target's dtype rather than the recorded one.
    let mut retyped = wrong;
    for f in &right.files {
        for t in &f.tensors {
            let data = f.bytes()[t.offset as usize..(t.offset + t.len) as usize].to_vec();
            retyped.insert(t.name.clone(), (Dtype::F16, t.shape.clone(), data));
        }
    }
    assert_err!(decode_all_with(&a, &retyped), Error::BaseMismatch { .. });
}

// ---- whole-file streaming (unpack's pipelined decode) ---------------------------

use tpde_format::unpack::Digests;

#[test]
fn windowed_streaming_matches_and_reports_the_first_bad_chunk_in_file_order() {
    // 256-element chunks and windows of 1 KiB: every tensor of the synthetic
    // pair (3000 elements) streams as several windows, and small runs are
    // cut at every tensor, so both kinds of pipelined segment are driven.
    let a = synthetic_archive(BaseMode::Inline, 256);
    let archive = open(&a).unwrap();
    let whole = |a: &Archive<&[u8]>| {
        let mut out = Vec::new();
        tpde_format::unpack::stream_file(a, 0, &NoBase, &mut |b| {
            out.extend_from_slice(b);
            Ok(())
        })
        .map(|()| out)
    };
    let reference = whole(&archive).unwrap();
    for (window, digests) in [1u64, 1024, 4096, 1 << 20]
        .into_iter()
        .flat_map(|w| [(w, Digests::Parts), (w, Digests::File), (w, Digests::All)])
    {
        let mut out = Vec::new();
        tpde_format::unpack::stream_file_windowed(
            &archive,
            0,
            &NoBase,
            digests,
            window,
            &mut |b| {
                out.extend_from_slice(b);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(out, reference, "window {window}, {digests:?}");
    }
    // Called from inside a pool of one thread, the pipeline's own tasks run
    // on the thread that waits for them (no deadlock), in file order.
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for digests in [Digests::Parts, Digests::File, Digests::All] {
        let mut out = Vec::new();
        one.install(|| {
            tpde_format::unpack::stream_file_windowed(
                &archive,
                0,
                &NoBase,
                digests,
                1024,
                &mut |b| {
                    out.extend_from_slice(b);
                    Ok(())
                },
            )
        })
        .unwrap();
        assert_eq!(out, reference, "one-thread pool, {digests:?}");
    }
    // Two damaged chunks, in the second and the last tensor: the error names
    // the earlier one, whatever the window and thread timing.
    let mut p = Parts::parse(&a);
    for name in ["w.u16", "new.bf16"] {
        let t = p.target(name);
        let (start, _) = p.blob_range(Blob::Chunk(Table::Target, t, 5));
        p.data[start as usize - tpde_format::format::HEADER_LEN] ^= 1;
    }
    let bad = p.to_bytes();
    let bad = open(&bad).unwrap();
    for window in [1u64, 1024, 1 << 20] {
        assert_err!(
            tpde_format::unpack::stream_file_windowed(&bad, 0, &NoBase, Digests::File, window, &mut |_| Ok(())),
            Error::ChunkChecksum { location: Location::Chunk { tensor, chunk: 5, .. }, .. }
                if tensor == "w.u16"
        );
    }
    // A wrong recorded tensor digest: with every digest checked, a tensor
    // streamed in windows is refused by name; the file digest alone (which
    // does not cover the index) lets the right bytes through.
    let mut p = Parts::parse(&a);
    let t = p.target("w.u16");
    p.index.tensors[t].sha256[3] ^= 1;
    let tampered = p.to_bytes();
    let tampered = open(&tampered).unwrap();
    for window in [1u64, 1024, 1 << 20] {
        assert_err!(
            tpde_format::unpack::stream_file_windowed(&tampered, 0, &NoBase, Digests::All, window, &mut |_| Ok(())),
            Error::TensorDigest { tensor, .. } if tensor == "w.u16"
        );
        tpde_format::unpack::stream_file_windowed(
            &tampered,
            0,
            &NoBase,
            Digests::File,
            window,
            &mut |_| Ok(()),
        )
        .unwrap();
    }
    // A failing sink stops the stream with its error.
    let mut calls = 0;
    assert_err!(
        tpde_format::unpack::stream_file_windowed(&archive, 0, &NoBase, Digests::File, 1024, &mut |_| {
            calls += 1;
            if calls == 4 {
                Err(Error::Usage("sink full".into()))
            } else {
                Ok(())
            }
        }),
        Error::Usage(m) if m == "sink full"
    );
}

#[test]
fn checksum_progress_adds_up_to_the_stored_bytes_and_stops_at_the_first_bad_chunk() {
    let a = synthetic_archive(BaseMode::Inline, 256);
    let archive = open(&a).unwrap();
    let idx = archive.index();
    let want: u64 = idx
        .bases
        .iter()
        .chain(&idx.tensors)
        .map(|t| t.stored_bytes())
        .sum();
    let (mut seen, mut calls) = (0u64, 0);
    archive
        .check_crcs_with(&mut |n| {
            seen += n;
            calls += 1;
        })
        .unwrap();
    assert_eq!(seen, want);
    assert!(calls >= 2, "one report per group, bases and targets apart");
    // A damaged chunk: the same first error as `check_crcs`, and progress
    // stops short of the total.
    let mut p = Parts::parse(&a);
    let t = p.target("w.u16");
    let (start, _) = p.blob_range(Blob::Chunk(Table::Target, t, 2));
    p.data[start as usize - tpde_format::format::HEADER_LEN] ^= 1;
    let bad = p.to_bytes();
    let bad = open(&bad).unwrap();
    let mut seen = 0;
    assert_err!(
        bad.check_crcs_with(&mut |n| seen += n),
        Error::ChunkChecksum { location: Location::Chunk { tensor, chunk: 2, .. }, .. } if tensor == "w.u16"
    );
    assert!(seen < want);
}

#[test]
fn windowed_streaming_reuses_buffers_without_leaking_stale_bytes() {
    // Tensors of 2 MiB streamed in 1 MiB windows: unpack's buffer pool
    // (buffers of 1 MiB and more) hands a window's buffer, full of the
    // previous window's bytes, to a later one. A zero chunk over a base,
    // an all-zero standalone tensor and a sparse delta after a dense noisy
    // tensor must still come out exactly: the file digest checks it.
    let dir = tempfile::tempdir().unwrap();
    let n = 1usize << 19; // F32: 2 MiB
    let mut x = 0x9e37_79b9u32;
    let mut noise = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let dense: Vec<u8> = (0..n).flat_map(|_| noise().to_le_bytes()).collect();
    let base_same: Vec<u8> = (0..n).flat_map(|_| noise().to_le_bytes()).collect();
    let mut sparse = base_same.clone();
    for i in (0..sparse.len()).step_by(4099) {
        sparse[i] ^= 0x40;
    }
    let zeros = vec![0u8; n * 4];
    let f32 = |name: &str, b: &[u8]| (name.to_string(), Dtype::F32, vec![n as u64], b.to_vec());
    let tp = dir.path().join("t.safetensors");
    let bp = dir.path().join("b.safetensors");
    write_safetensors(
        &tp,
        &[
            f32("a.dense", &dense),
            f32("b.same", &base_same),
            f32("c.zeros", &zeros),
            f32("d.sparse", &sparse),
        ],
    );
    write_safetensors(
        &bp,
        &[f32("b.same", &base_same), f32("d.sparse", &base_same)],
    );
    let bytes = pack_minor(&tp, Some(&bp), BaseMode::Inline, 1 << 16, 3);
    let archive = open(&bytes).unwrap();
    let want = std::fs::read(&tp).unwrap();
    for digests in [Digests::File, Digests::All] {
        let mut out = Vec::new();
        tpde_format::unpack::stream_file_windowed(
            &archive,
            0,
            &NoBase,
            digests,
            1 << 20,
            &mut |b| {
                out.extend_from_slice(b);
                Ok(())
            },
        )
        .unwrap();
        assert!(
            out == want,
            "{digests:?}: stream differs from the target file"
        );
    }
}
