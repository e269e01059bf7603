//! One test per rule of format 1.3 a hostile archive can break: the
//! zstd-compressed index (header flag bit 0, spec §2.2, §4.0.5, §8.2.3,
//! §8.3). Each asserts the reference reader's exact error; the independent
//! reader's refusals are in `spec_reader.rs`.

use tpde_format::format::{Header, FLAG_INDEX_ZSTD};
use tpde_format::{Error, ReadLimits};
use tpde_tests::assert_err;
use tpde_tests::hostile::*;

fn index_error(bytes: &[u8], want: &str) {
    assert_err!(open(bytes), Error::IndexDecode { reason } if reason == want);
}

/// The bincode index of a 1.3 vector, decompressed.
fn raw_index(bytes: &[u8]) -> Vec<u8> {
    Parts::parse(bytes).index_bytes()
}

#[test]
fn the_v13_vectors_have_compressed_indexes_and_decode() {
    for name in ["v13_rows_external", "v13_delta_inline"] {
        let a = vector(name);
        let h = Header::parse(&a).unwrap();
        assert_eq!((h.minor, h.flags), (3, FLAG_INDEX_ZSTD), "{name}");
        // Smaller than the bincode index it holds.
        assert!(h.index_len < raw_index(&a).len() as u64, "{name}");
        // Rebuilt through the test harness (decompress, recompress): same index.
        let again = Parts::parse(&a).to_bytes();
        assert_eq!(Parts::parse(&again).index, Parts::parse(&a).index);
    }
    decode_all(&vector("v13_delta_inline")).unwrap();
}

#[test]
fn a_zstd_index_in_a_minor_2_file() {
    // §8.2.3: the flag belongs to minor 3.
    let mut p = Parts::parse(&vector("v13_delta_inline"));
    p.header.minor = 2;
    assert_err!(
        open(&p.to_bytes()),
        Error::BadHeader { reason } if reason.contains("minor 0 to 2")
    );
}

#[test]
fn the_flag_without_a_compressed_index() {
    // The bincode bytes stored as they are under the flag: not a zstd frame.
    let p = Parts::parse(&vector("v13_delta_inline"));
    let raw = p.index_bytes();
    index_error(&p.with_stored_index(&raw), "the index is not a zstd frame");
}

#[test]
fn a_compressed_index_without_the_flag() {
    let mut p = Parts::parse(&vector("v13_delta_inline"));
    let stored = zstd::bulk::compress(&p.index_bytes(), 3).unwrap();
    p.header.flags = 0;
    // The frame's bytes read as bincode: a count or tag out of range.
    assert_err!(
        open(&p.with_stored_index(&stored)),
        Error::IndexDecode { .. }
    );
}

#[test]
fn a_frame_that_does_not_declare_its_size() {
    let p = Parts::parse(&vector("v13_rows_external"));
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_contentsize(false).unwrap();
    std::io::Write::write_all(&mut enc, &p.index_bytes()).unwrap();
    index_error(
        &p.with_stored_index(&enc.finish().unwrap()),
        "the zstd index does not declare its size",
    );
}

/// `frame` (one zstd frame, no dictionary) with its header rewritten to
/// declare `size` content bytes in an 8-byte `Frame_Content_Size` field
/// (RFC 8878 §3.1.1.1: descriptor bits 7-6 = 3), its blocks unchanged.
fn declaring(frame: &[u8], size: u64) -> Vec<u8> {
    let fhd = frame[4];
    assert_eq!(fhd & 0x03, 0, "no dictionary id");
    let single_segment = fhd & 0x20 != 0;
    let fcs_bytes = match fhd >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let fcs_at = 5 + usize::from(!single_segment);
    let mut out = frame[..4].to_vec();
    out.push((fhd & 0x3f) | 0xc0);
    out.extend_from_slice(&frame[5..fcs_at]);
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&frame[fcs_at + fcs_bytes..]);
    out
}

#[test]
fn a_declared_size_over_the_limit_is_refused_before_allocating() {
    let p = Parts::parse(&vector("v13_rows_external"));
    let raw = p.index_bytes();
    let frame = zstd::bulk::compress(&raw, 3).unwrap();
    // The rewritten header is read as intended: the true size decodes.
    let same = p.with_stored_index(&declaring(&frame, raw.len() as u64));
    assert_eq!(open(&same).unwrap().index(), &p.index);
    // A frame declaring 2^40 bytes (a decompression bomb's header): refused
    // from the header alone, under the default limits.
    index_error(
        &p.with_stored_index(&declaring(&frame, 1 << 40)),
        "the zstd index declares more bytes than max_index_bytes",
    );
    // The true size, over a reader's own limit.
    let limits = ReadLimits {
        max_index_bytes: raw.len() as u64 - 1,
        ..ReadLimits::default()
    };
    let ok = p.with_stored_index(&frame);
    assert_err!(
        tpde_format::Archive::from_bytes(&ok[..], limits),
        Error::IndexDecode { reason } if reason == "the zstd index declares more bytes than max_index_bytes"
    );
}

#[test]
fn a_frame_shorter_or_longer_than_it_declares() {
    let p = Parts::parse(&vector("v13_rows_external"));
    let raw = p.index_bytes();
    let frame = zstd::bulk::compress(&raw, 3).unwrap();
    for size in [raw.len() as u64 - 1, raw.len() as u64 + 1] {
        assert_err!(
            open(&p.with_stored_index(&declaring(&frame, size))),
            Error::IndexDecode { .. }
        );
    }
    // A whole frame followed by anything.
    let mut trailing = frame.clone();
    trailing.extend_from_slice(&zstd::bulk::compress(&[], 1).unwrap());
    index_error(
        &p.with_stored_index(&trailing),
        "bytes after the zstd frame",
    );
    // Cut short.
    index_error(
        &p.with_stored_index(&frame[..frame.len() - 3]),
        "zstd frame is truncated or corrupt",
    );
}

#[test]
fn the_decompressed_index_must_be_exactly_one_index() {
    // Bincode rules apply to the decompressed bytes (§4.0.2): a byte left
    // over, or one missing, is refused.
    let p = Parts::parse(&vector("v13_delta_inline"));
    let mut raw = p.index_bytes();
    raw.push(0);
    assert_err!(open(&p.with_index_bytes(&raw)), Error::IndexDecode { .. });
    raw.truncate(raw.len() - 2);
    assert_err!(open(&p.with_index_bytes(&raw)), Error::IndexDecode { .. });
}

#[test]
fn the_crc_covers_the_stored_frame() {
    let mut a = vector("v13_rows_external");
    let h = Header::parse(&a).unwrap();
    let at = h.index_offset as usize + h.index_len as usize / 2;
    a[at] ^= 0x10;
    assert_err!(open(&a), Error::IndexChecksum { .. });
}

#[test]
fn writing_1_2_keeps_the_index_uncompressed() {
    let dir = tempfile::tempdir().unwrap();
    let (t, b) = synthetic_pair(dir.path());
    for (minor, flags) in [(2u16, 0u32), (3, FLAG_INDEX_ZSTD)] {
        let a = pack_minor(
            &t,
            Some(&b),
            tpde_format::pack::BaseMode::Inline,
            256,
            minor,
        );
        let h = Header::parse(&a).unwrap();
        assert_eq!(h.flags, flags, "max minor {minor}");
        assert!(h.minor <= minor);
        decode_all(&a).unwrap();
    }
}

#[test]
fn a_frame_expanding_more_than_64_times_is_refused() {
    // 32 MiB declared from a frame of a few KiB (a decompression bomb's
    // ratio): refused before anything is allocated, whatever the limits.
    let p = Parts::parse(&vector("v13_rows_external"));
    let bomb = zstd::bulk::compress(&vec![0u8; 32 << 20], 3).unwrap();
    index_error(
        &p.with_stored_index(&bomb),
        "the zstd index declares more than 64 bytes per stored byte",
    );
    // A skippable frame (RFC 8878 §3.1.2) is not an index.
    let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 0, 0, 0, 0];
    skippable.extend_from_slice(&zstd::bulk::compress(&p.index_bytes(), 3).unwrap());
    index_error(
        &p.with_stored_index(&skippable),
        "the index is not a zstd frame",
    );
}
