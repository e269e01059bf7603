//! Hostile input against the v1.7 addition, chunk digests (spec §4.6.3,
//! §8.2, §9, §10.2): one named test per rule a hostile archive can break,
//! each asserting the exact error (and where it points) the reader must
//! give; the independent reader's refusals are in `spec_reader.rs`.
//!
//! The inputs are the v1.7 golden vectors (`tests/vectors/v1/v17_*`), taken
//! apart with `tpde_tests::hostile::Parts`, changed in exactly one way and
//! put back together with lengths and CRCs fixed.

use tpde_format::format::Payload;
use tpde_format::safetensors::Checkpoint;
use tpde_format::unpack::{stream_file_with, unpack, verify, Digests, UnpackOptions};
use tpde_format::{Archive, BaseProvider, Error, Location, NoBase, ReadLimits};
use tpde_tests::hostile::*;
use tpde_tests::vectors_v1;

const INLINE: &str = "v17_chunk_digests_inline";
const EXTERNAL: &str = "v17_chunk_digests_external";

/// The first target of `p` with chunk digests, and its chunk count.
fn digested(p: &Parts) -> (usize, usize) {
    p.index
        .tensors
        .iter()
        .enumerate()
        .find_map(|(t, r)| match &r.payload {
            Payload::Chunked {
                chunks,
                chunk_sha256: Some(_),
                ..
            } => Some((t, chunks.len())),
            _ => None,
        })
        .expect("a target with chunk digests")
}

fn digests_mut(p: &mut Parts, t: usize) -> &mut Vec<[u8; 32]> {
    match &mut p.index.tensors[t].payload {
        Payload::Chunked {
            chunk_sha256: Some(d),
            ..
        } => d,
        _ => unreachable!(),
    }
}

/// Every way the library hands out a file: decode each tensor, stream the
/// file under each digest policy, verify, unpack (which must leave nothing).
fn every_reader_refuses(bytes: &[u8], base: &dyn BaseProvider, is: &dyn Fn(&Error) -> bool) {
    let a = Archive::from_bytes(bytes, ReadLimits::default()).unwrap();
    let decoded = a
        .index()
        .tensors
        .iter()
        .map(|t| a.decode_tensor(&t.name, base))
        .find_map(Result::err);
    let streamed = [Digests::Parts, Digests::All].map(|d| {
        stream_file_with(&a, 0, base, d, &mut |_| Ok(())).expect_err("streamed a bad file")
    });
    let verified = verify(&a, base, None, &mut |_| {}).expect_err("verified a bad file");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let unpacked = unpack(&a, base, &out, &UnpackOptions::default(), &mut |_| {})
        .expect_err("unpacked a bad file");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no partial output"
    );
    for e in decoded
        .iter()
        .chain(&streamed)
        .chain([&verified, &unpacked])
    {
        assert!(is(e), "{e:?}");
    }
}

#[test]
fn the_v17_vectors_decode() {
    decode_all(&vector(INLINE)).unwrap();
    let base = Checkpoint::open(vectors_v1().join("base_v12_rans_base.safetensors")).unwrap();
    decode_all_with(&vector(EXTERNAL), &base).unwrap();
}

/// §8.2.3: chunk digests in a file whose header says minor 6 or lower are
/// refused at open, naming the tensor.
#[test]
fn chunk_digests_under_minor_6_are_refused() {
    let mut p = Parts::parse(&vector(INLINE));
    assert_eq!(p.header.minor, 7);
    let (t, _) = digested(&p);
    let name = p.index.tensors[t].name.clone();
    p.header.minor = 6;
    let e = open_err(&p.to_bytes());
    assert!(
        matches!(&e, Error::InvalidIndex { location: Location::Tensor { name: n, base: false }, reason }
            if *n == name && reason.contains("chunk digests (v1.7)")),
        "{e:?}"
    );
}

/// §4.6.3: one digest per chunk, no more, no fewer.
#[test]
fn a_digest_count_other_than_the_chunk_count_is_refused() {
    for delta in [-1i64, 1] {
        let mut p = Parts::parse(&vector(INLINE));
        let (t, n) = digested(&p);
        let name = p.index.tensors[t].name.clone();
        let d = digests_mut(&mut p, t);
        if delta < 0 {
            d.pop();
        } else {
            d.push([7; 32]);
        }
        let e = open_err(&p.to_bytes());
        assert!(
            matches!(&e, Error::InvalidIndex { location: Location::Tensor { name: n, .. }, reason }
                if *n == name && reason.contains("chunk digest count")),
            "{n} chunks, {delta:+} digests: {e:?}"
        );
    }
}

/// §4.6.3: an inline base is proven through its targets, and may not
/// record chunk digests.
#[test]
fn chunk_digests_on_an_inline_base_are_refused() {
    let mut p = Parts::parse(&vector(INLINE));
    let b = p
        .index
        .bases
        .iter()
        .position(|b| matches!(&b.payload, Payload::Chunked { chunks, .. } if chunks.len() > 1))
        .expect("an inline base of several chunks");
    if let Payload::Chunked {
        chunks,
        chunk_sha256,
        ..
    } = &mut p.index.bases[b].payload
    {
        *chunk_sha256 = Some(vec![[0; 32]; chunks.len()]);
    }
    let name = p.index.bases[b].name.clone();
    let e = open_err(&p.to_bytes());
    assert!(
        matches!(&e, Error::InvalidIndex { location: Location::Tensor { name: n, base: true }, reason }
            if *n == name && reason.contains("inline base cannot have chunk digests")),
        "{e:?}"
    );
}

/// §9: a chunk whose reconstruction does not have its recorded digest is
/// refused by every reader path, naming the tensor and the chunk, even
/// though the tensor's own digest is untouched. Every chunk in turn (the
/// last one shorter), and two at once: the lower-numbered is named, whatever
/// the order the threads check them in.
#[test]
fn a_wrong_chunk_digest_is_refused_naming_the_chunk() {
    let p = Parts::parse(&vector(INLINE));
    let t = p.target("emb.w");
    let n = p.chunks(Table::Target, t).len();
    assert_eq!(n, 3, "emb.w: 2.5 chunks");
    let name = p.index.tensors[t].name.clone();
    let cases = (0..n).map(|c| vec![c]).chain([vec![1, 2], vec![0, 2]]);
    for bad in cases {
        let mut q = Parts::parse(&vector(INLINE));
        for &c in &bad {
            digests_mut(&mut q, t)[c][0] ^= 1;
        }
        every_reader_refuses(&q.to_bytes(), &NoBase, &|e| {
            matches!(e, Error::ChunkDigest { location: Location::Chunk { tensor, base: false, chunk }, .. }
                if *tensor == name && *chunk == bad[0] as u64)
        });
    }
}

/// §4.5, §10.2: under the tensor-digest policy an external base's digest
/// waits for a mismatch; a wrong base (same dtype and shape, other bytes)
/// makes a chunk digest fail, and the error then names the base.
#[test]
fn a_wrong_external_base_is_named_when_a_chunk_digest_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.safetensors");
    let mut bytes = std::fs::read(vectors_v1().join("base_v12_rans_base.safetensors")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let wrong = Checkpoint::open(&path).unwrap();
    every_reader_refuses(&vector(EXTERNAL), &wrong, &|e| {
        matches!(e, Error::BaseMismatch { .. })
    });
}
