//! rANS-coded byte planes (format v1.1, spec §5.6; and v1.6's 32-state
//! planes, §5.6.4) under attack: every damaged plane ends in a typed error —
//! never a panic, never a tensor returned as good. The coder's own
//! stream-level fuzzing lives in `tpde_format::codec::entropy`'s unit
//! tests; these go through the archive.

use std::sync::OnceLock;

use tpde_format::format::{Codec, PlaneCodec};
use tpde_format::pack::BaseMode;
use tpde_format::{Archive, Error, NoBase, ReadLimits};
use tpde_tests::example;
use tpde_tests::hostile::{pack_bytes_with, Parts, Table};

/// The shipped pair, inline base, 4096-element chunks: with the default
/// writer (4-state rANS planes: the chunks are under the 32-state
/// threshold), or (`wide`) with every coded rANS plane given 32 states.
fn packed(wide: bool) -> &'static [u8] {
    static A: [OnceLock<Vec<u8>>; 2] = [OnceLock::new(), OnceLock::new()];
    A[usize::from(wide)].get_or_init(|| {
        let threshold = if wide {
            0
        } else {
            tpde_format::codec::stream::WIDE_MIN_PLANE
        };
        pack_bytes_with(
            &example("v6.2-16k.safetensors"),
            Some(&example("v6.2.safetensors")),
            BaseMode::Inline,
            tpde_format::WriteOptions::default()
                .with_chunk_elems(4096)
                .with_wide_min_plane(threshold),
        )
    })
}

fn archive() -> &'static [u8] {
    packed(false)
}

fn wide_archive() -> &'static [u8] {
    packed(true)
}

/// Both archives: the tests below run on each.
fn archives() -> [&'static [u8]; 2] {
    [archive(), wide_archive()]
}

fn decode_all(bytes: &[u8]) -> Result<(), Error> {
    let a = Archive::from_bytes(bytes, ReadLimits::default())?;
    for t in &a.index().tensors {
        a.decode_tensor(&t.name, &NoBase)?;
    }
    Ok(())
}

/// (tensor, chunk, plane index, byte offset of the plane in the chunk, plane length).
fn rans_planes(p: &Parts) -> Vec<(usize, usize, usize, usize, usize)> {
    let mut out = Vec::new();
    for t in 0..p.table(Table::Target).len() {
        for (c, ch) in p.chunks(Table::Target, t).iter().enumerate() {
            let Codec::PerPlane(planes) = &ch.values.codec else {
                continue;
            };
            let mut at = ch.positions.stored_len as usize;
            for (k, pl) in planes.iter().enumerate() {
                if matches!(pl.codec, PlaneCodec::Rans | PlaneCodec::Rans32) {
                    out.push((t, c, k, at, pl.stored_len as usize));
                }
                at += pl.stored_len as usize;
            }
        }
    }
    out
}

#[test]
fn the_default_writer_codes_planes_with_rans_and_decodes_them() {
    for (bytes, wide) in [(archive(), false), (wide_archive(), true)] {
        let p = Parts::parse(bytes);
        let planes = rans_planes(&p);
        assert!(
            planes.len() >= 10,
            "the example should have many rANS planes"
        );
        // Only the 32-state archive has 32-state planes. Both record 1.7
        // (their tensors of several chunks have chunk digests); with 1.7
        // left out, only the 32-state one would need 1.6.
        for &(t, c, k, _, _) in &planes {
            let Codec::PerPlane(pl) = &p.chunks(Table::Target, t)[c].values.codec else {
                unreachable!()
            };
            assert_eq!(pl[k].codec.is_wide(), wide);
        }
        assert_eq!(p.header.minor, 7);
        assert_eq!(p.index.uses_wide_rans(), wide);
        decode_all(bytes).unwrap();
    }
}

/// The 4-state and 32-state archives reconstruct the same tensors.
#[test]
fn four_and_thirty_two_state_archives_decode_to_the_same_bytes() {
    let (a, b) = (
        Archive::from_bytes(archive(), ReadLimits::default()).unwrap(),
        Archive::from_bytes(wide_archive(), ReadLimits::default()).unwrap(),
    );
    for t in &a.index().tensors {
        assert_eq!(
            a.decode_tensor(&t.name, &NoBase).unwrap(),
            b.decode_tensor(&t.name, &NoBase).unwrap(),
            "{}",
            t.name
        );
    }
}

#[test]
fn bit_flips_in_rans_planes_are_errors_even_with_the_crc_fixed() {
    for bytes in archives() {
        bit_flips_in(bytes);
    }
}

fn bit_flips_in(archive: &[u8]) {
    let p0 = Parts::parse(archive);
    let planes = rans_planes(&p0);
    let mut cases = 0;
    for (i, &(t, c, _, at, len)) in planes.iter().enumerate().step_by(3) {
        for probe in [0, 1, len / 2, len - 1] {
            let bit = (i + probe) % 8;
            let mut p = Parts::parse(archive);
            p.edit_chunk(Table::Target, t, c, |_, bytes| {
                bytes[at + probe] ^= 1 << bit
            });
            match decode_all(&p.to_bytes()) {
                Err(Error::ChunkDecode { .. } | Error::TensorDigest { .. }) => {}
                Err(e) => panic!("unexpected error kind: {e:?}"),
                Ok(()) => panic!("flipped plane byte {probe} of chunk {c} decoded as good"),
            }
            cases += 1;
        }
    }
    assert!(cases >= 20, "{cases} cases");
}

#[test]
fn a_truncated_rans_plane_is_a_decode_error() {
    for bytes in archives() {
        let mut p = Parts::parse(bytes);
        let (t, c, k, at, len) = rans_planes(&p)[0];
        p.edit_chunk(Table::Target, t, c, |ch, bytes| {
            bytes.remove(at + len - 1);
            if let Codec::PerPlane(planes) = &mut ch.values.codec {
                planes[k].stored_len -= 1;
            }
            ch.values.stored_len -= 1;
        });
        assert!(matches!(
            decode_all(&p.to_bytes()),
            Err(Error::ChunkDecode { .. })
        ));
    }
}

#[test]
fn an_empty_rans_plane_is_an_invalid_index() {
    for bytes in archives() {
        empty_plane_in(bytes);
    }
}

fn empty_plane_in(archive: &[u8]) {
    let mut p = Parts::parse(archive);
    let (t, c, k, at, len) = rans_planes(&p)[0];
    p.edit_chunk(Table::Target, t, c, |ch, bytes| {
        bytes.drain(at..at + len);
        if let Codec::PerPlane(planes) = &mut ch.values.codec {
            planes[k].stored_len = 0;
        }
        ch.values.stored_len -= len as u64;
    });
    assert!(matches!(
        Archive::from_bytes(&p.to_bytes()[..], ReadLimits::default()),
        Err(Error::InvalidIndex { reason, .. }) if reason.contains("empty rans plane")
    ));
}
