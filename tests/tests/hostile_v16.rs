//! Hostile input against the v1.6 addition, 32-state rANS planes (spec
//! §5.3, §5.6.4, §8.2): one named test per rule a hostile archive can
//! break, each asserting the exact error (and where it points) the reader
//! must give; the independent reader's refusals are in `spec_reader.rs`.
//! (Damaged 32-state plane bytes — bit flips with the CRC fixed, truncation,
//! an empty plane — are in `rans_planes.rs`, for both state counts.)
//!
//! The inputs are the v1.6 golden vectors (`tests/vectors/v1/v16_*`), taken
//! apart with `tpde_tests::hostile::Parts`, changed in exactly one way and
//! put back together with lengths and CRCs fixed.

use tpde_format::format::{Codec, PlaneCodec};
use tpde_format::{Error, Location, NoBase};
use tpde_tests::hostile::*;

/// The first (table, tensor, chunk, plane) of `p` whose plane codec is `codec`.
fn find(p: &Parts, codec: PlaneCodec) -> (Table, usize, usize, usize) {
    for table in [Table::Base, Table::Target] {
        for t in 0..p.table(table).len() {
            for (c, ch) in p.chunks(table, t).iter().enumerate() {
                if let Codec::PerPlane(planes) = &ch.values.codec {
                    if let Some(k) = planes.iter().position(|x| x.codec == codec) {
                        return (table, t, c, k);
                    }
                }
            }
        }
    }
    panic!("no {codec:?} plane")
}

#[test]
fn the_v16_vectors_decode() {
    for name in ["v16_rans32_planes", "v16_rans32_inline"] {
        decode_all_with(&vector(name), &NoBase).unwrap();
    }
}

/// §8.2.3: a 32-state plane in a file whose header says minor 5 or lower
/// is refused at open, naming the first chunk holding one.
#[test]
fn a_32_state_plane_under_minor_5_is_refused() {
    let mut p = Parts::parse(&vector("v16_rans32_planes"));
    assert_eq!(p.header.minor, 6);
    let (table, t, c, _) = find(&p, PlaneCodec::Rans32);
    let name = p.table(table)[t].name.clone();
    p.header.minor = 5;
    let e = open_err(&p.to_bytes());
    assert!(
        matches!(&e, Error::InvalidIndex { location: Location::Chunk { tensor, chunk, .. }, reason }
            if *tensor == name && *chunk == c as u64 && reason.contains("32-state rANS plane (v1.6)")),
        "{e:?}"
    );
}

/// §5.6.4: the plane codec, not the plane's bytes, says how many states
/// there are: a 32-state plane relabelled as a 4-state one (or the
/// reverse) is read with the wrong number of states and fails its checks
/// (a chunk decode error naming the chunk), never decodes to other bytes.
#[test]
fn a_plane_read_with_the_wrong_number_of_states_is_a_decode_error() {
    for (from, to) in [
        (PlaneCodec::Rans32, PlaneCodec::Rans),
        (PlaneCodec::RansBase32, PlaneCodec::RansBase),
    ] {
        let mut p = Parts::parse(&vector("v16_rans32_inline"));
        let (table, t, c, k) = find(&p, from);
        p.edit_chunk(table, t, c, |ch, _| {
            if let Codec::PerPlane(planes) = &mut ch.values.codec {
                planes[k].codec = to;
            }
        });
        let e = decode_all_with(&p.to_bytes(), &NoBase).unwrap_err();
        assert!(
            matches!(&e, Error::ChunkDecode { location: Location::Chunk { chunk, .. }, .. }
                if *chunk == c as u64),
            "{from:?} -> {to:?}: {e:?}"
        );
    }
    // And the reverse: a 4-state mode-2 plane (of a v1.1 vector, its header
    // raised to minor 6) relabelled as a 32-state one.
    let mut p = Parts::parse(&vector("v11_rans"));
    p.header.minor = 6;
    let mut done = false;
    'find: for t in 0..p.table(Table::Target).len() {
        for (c, ch) in p.chunks(Table::Target, t).clone().iter().enumerate() {
            let Codec::PerPlane(planes) = &ch.values.codec else {
                continue;
            };
            let stored = p.blob_bytes(Blob::Chunk(Table::Target, t, c));
            let mut at = ch.positions.stored_len as usize;
            for (k, pl) in planes.iter().enumerate() {
                if pl.codec == PlaneCodec::Rans && stored[at] == 2 {
                    p.edit_chunk(Table::Target, t, c, |ch, _| {
                        if let Codec::PerPlane(planes) = &mut ch.values.codec {
                            planes[k].codec = PlaneCodec::Rans32;
                        }
                    });
                    let e = decode_all_with(&p.to_bytes(), &NoBase).unwrap_err();
                    assert!(
                        matches!(&e, Error::ChunkDecode { location: Location::Chunk { chunk, .. }, .. }
                            if *chunk == c as u64),
                        "Rans -> Rans32: {e:?}"
                    );
                    done = true;
                    break 'find;
                }
                at += pl.stored_len as usize;
            }
        }
    }
    assert!(done, "no mode-2 Rans plane in v11_rans");
}
