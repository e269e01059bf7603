//! Building hostile archives out of valid ones.
//!
//! An attack on the index is useless if it only trips the header/index CRC:
//! the check it targets is never reached. So the tests take a valid archive
//! apart ([`Parts::parse`]), change the decoded [`Index`] (or a chunk's
//! stored bytes), and put it back together with [`Parts::to_bytes`], which
//! re-serializes the index and re-fixes the header (`index_offset`,
//! `index_len`, `file_len`, CRC) — and, when chunk bytes change, re-lays the
//! data section out and re-fixes the chunk CRCs. What is left wrong is
//! exactly the attack.

use std::path::Path;

use bincode::Options;
use tpde_format::format::{
    align_up, bincode_options, Chunk, Dtype, Header, Index, Payload, TensorRecord, FLAG_INDEX_ZSTD,
    HEADER_LEN,
};
use tpde_format::pack::{pack, BaseMode, PackOptions};
use tpde_format::safetensors::{make_header, Checkpoint};
use tpde_format::WriteOptions;

/// A valid archive taken apart: header, data section and decoded index.
#[derive(Debug, Clone)]
pub struct Parts {
    /// The decoded header. [`Parts::to_bytes`] keeps its version, flags and
    /// alignment and recomputes the lengths and the CRC.
    pub header: Header,
    /// Bytes `HEADER_LEN..index_offset`: the data section, padding included.
    pub data: Vec<u8>,
    /// The decoded index.
    pub index: Index,
}

/// Which table a tensor lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `Index::tensors`.
    Target,
    /// `Index::bases`.
    Base,
}

/// One blob of the data section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blob {
    /// A plain payload.
    Plain(Table, usize),
    /// A chunk.
    Chunk(Table, usize, usize),
}

impl Parts {
    /// Takes a valid archive apart. Panics on an archive that does not parse
    /// (the input is meant to be one the writer just made).
    pub fn parse(bytes: &[u8]) -> Parts {
        let header = Header::parse(bytes).expect("valid header");
        let at = header.index_offset as usize;
        let raw = if header.flags & FLAG_INDEX_ZSTD != 0 {
            tpde_format::codec::index::decode(&bytes[at..], u64::MAX).expect("valid zstd index")
        } else {
            bytes[at..].to_vec()
        };
        let index: Index = bincode_options(raw.len() as u64)
            .deserialize(&raw)
            .expect("valid index");
        Parts {
            header,
            data: bytes[HEADER_LEN..at].to_vec(),
            index,
        }
    }

    /// The index serialized as the writer does.
    pub fn index_bytes(&self) -> Vec<u8> {
        bincode_options(u64::MAX)
            .serialize(&self.index)
            .expect("index serializes")
    }

    /// The archive with the current index: header lengths and CRC fixed.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.with_index_bytes(&self.index_bytes())
    }

    /// The archive with `index` as its (bincode) index bytes, verbatim (for
    /// attacks below the `Index` struct: counts, lengths, enum tags); stored
    /// as a zstd frame when the header says the index is compressed (v1.3),
    /// so the attack reaches the bincode decoder either way.
    pub fn with_index_bytes(&self, index: &[u8]) -> Vec<u8> {
        if self.header.flags & FLAG_INDEX_ZSTD != 0 {
            let frame = zstd::bulk::compress(index, 3).expect("zstd compresses");
            seal(&self.header, &self.data, &frame)
        } else {
            seal(&self.header, &self.data, index)
        }
    }

    /// The archive with `stored` as the index's stored bytes, verbatim
    /// (for attacks on a compressed index's frame, spec §4.0.5).
    pub fn with_stored_index(&self, stored: &[u8]) -> Vec<u8> {
        seal(&self.header, &self.data, stored)
    }

    /// The table `table` of the index.
    pub fn table(&self, table: Table) -> &Vec<TensorRecord> {
        match table {
            Table::Target => &self.index.tensors,
            Table::Base => &self.index.bases,
        }
    }

    /// The table `table` of the index, mutable.
    pub fn table_mut(&mut self, table: Table) -> &mut Vec<TensorRecord> {
        match table {
            Table::Target => &mut self.index.tensors,
            Table::Base => &mut self.index.bases,
        }
    }

    /// Target tensor index by name.
    pub fn target(&self, name: &str) -> usize {
        self.index
            .tensors
            .iter()
            .position(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tensor {name:?}"))
    }

    /// The chunks of `table[t]` (panics on a plain payload).
    pub fn chunks(&self, table: Table, t: usize) -> &Vec<Chunk> {
        match &self.table(table)[t].payload {
            Payload::Chunked { chunks, .. } => chunks,
            Payload::Plain { .. } => panic!("tensor {t} is plain"),
        }
    }

    /// The chunks of `table[t]`, mutable (panics on a plain payload).
    pub fn chunks_mut(&mut self, table: Table, t: usize) -> &mut Vec<Chunk> {
        match &mut self.table_mut(table)[t].payload {
            Payload::Chunked { chunks, .. } => chunks,
            Payload::Plain { .. } => panic!("tensor {t} is plain"),
        }
    }

    /// The first chunk of `table` satisfying `pred`, as (tensor, chunk).
    pub fn find_chunk(
        &self,
        table: Table,
        pred: impl Fn(&TensorRecord, &Chunk) -> bool,
    ) -> Option<(usize, usize)> {
        for (t, rec) in self.table(table).iter().enumerate() {
            if let Payload::Chunked { chunks, .. } = &rec.payload {
                if let Some(c) = chunks.iter().position(|c| pred(rec, c)) {
                    return Some((t, c));
                }
            }
        }
        None
    }

    /// Points a blob's descriptor at `offset` without moving any bytes.
    pub fn set_blob_offset(&mut self, blob: Blob, offset: u64) {
        match blob {
            Blob::Chunk(table, t, c) => self.chunks_mut(table, t)[c].offset = offset,
            Blob::Plain(table, t) => {
                if let Payload::Plain { offset: o, .. } = &mut self.table_mut(table)[t].payload {
                    *o = offset;
                }
            }
        }
    }

    /// Offset and length of a blob, as the index says.
    pub fn blob_range(&self, blob: Blob) -> (u64, u64) {
        match blob {
            Blob::Chunk(table, t, c) => {
                let ch = &self.chunks(table, t)[c];
                (ch.offset, ch.stored_len)
            }
            Blob::Plain(table, t) => match self.table(table)[t].payload {
                Payload::Plain { offset, len, .. } => (offset, len),
                Payload::Chunked { .. } => panic!("tensor {t} is chunked"),
            },
        }
    }

    /// Stored bytes of a blob.
    pub fn blob_bytes(&self, blob: Blob) -> Vec<u8> {
        let (offset, len) = self.blob_range(blob);
        let start = offset as usize - HEADER_LEN;
        self.data[start..start + len as usize].to_vec()
    }

    /// Every non-empty blob, in file order.
    pub fn blobs(&self) -> Vec<Blob> {
        let mut out = Vec::new();
        for table in [Table::Base, Table::Target] {
            for (t, rec) in self.table(table).iter().enumerate() {
                match &rec.payload {
                    Payload::Plain { len, .. } if *len > 0 => out.push(Blob::Plain(table, t)),
                    Payload::Plain { .. } => {}
                    Payload::Chunked { chunks, .. } => out.extend(
                        chunks
                            .iter()
                            .enumerate()
                            .filter(|(_, c)| c.stored_len > 0)
                            .map(|(c, _)| Blob::Chunk(table, t, c)),
                    ),
                }
            }
        }
        out.sort_by_key(|&b| self.blob_range(b).0);
        out
    }

    /// Hands chunk `c` of `table[t]` and a copy of its stored bytes to `f`;
    /// whatever `f` leaves is written back: the data section is laid out
    /// again (every blob aligned, in the same order), and this chunk's
    /// `stored_len`, `offset` and `crc32` are fixed to match its new bytes.
    /// Everything else `f` changed in the descriptor (streams, kind, counts)
    /// stays as the attack.
    pub fn edit_chunk(
        &mut self,
        table: Table,
        t: usize,
        c: usize,
        f: impl FnOnce(&mut Chunk, &mut Vec<u8>),
    ) {
        let target = Blob::Chunk(table, t, c);
        let mut contents: Vec<(Blob, Vec<u8>)> = self
            .blobs()
            .into_iter()
            .map(|b| (b, self.blob_bytes(b)))
            .collect();
        let mut bytes = contents
            .iter()
            .find(|(b, _)| *b == target)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let mut chunk = self.chunks(table, t)[c].clone();
        f(&mut chunk, &mut bytes);
        chunk.stored_len = bytes.len() as u64;
        chunk.crc32 = if bytes.is_empty() {
            0
        } else {
            crc32fast::hash(&bytes)
        };
        self.chunks_mut(table, t)[c] = chunk;
        match contents.iter_mut().find(|(b, _)| *b == target) {
            Some(slot) => slot.1 = bytes,
            None => contents.push((target, bytes)),
        }
        self.lay_out(contents);
    }

    /// Replaces this archive's inline bases (descriptors and blobs) with
    /// those of `other`, e.g. the same pair packed with another chunk size.
    pub fn graft_bases(&mut self, other: &Parts) {
        let is_base = |b: &Blob| {
            matches!(
                b,
                Blob::Plain(Table::Base, _) | Blob::Chunk(Table::Base, ..)
            )
        };
        let mut contents: Vec<(Blob, Vec<u8>)> = self
            .blobs()
            .into_iter()
            .filter(|b| !is_base(b))
            .map(|b| (b, self.blob_bytes(b)))
            .collect();
        contents.extend(
            other
                .blobs()
                .into_iter()
                .filter(is_base)
                .map(|b| (b, other.blob_bytes(b))),
        );
        self.index.bases = other.index.bases.clone();
        self.lay_out(contents);
    }

    /// Writes `contents` back to back (aligned) as the new data section and
    /// points each blob's descriptor at its new offset.
    fn lay_out(&mut self, contents: Vec<(Blob, Vec<u8>)>) {
        let mut data = Vec::new();
        for (blob, bytes) in contents {
            let offset = if bytes.is_empty() {
                0
            } else {
                let at = align_up((HEADER_LEN + data.len()) as u64).unwrap();
                data.resize(at as usize - HEADER_LEN, 0);
                data.extend_from_slice(&bytes);
                at
            };
            self.set_blob_offset(blob, offset);
        }
        self.data = data;
    }
}

/// An archive from a header template, data section and index bytes: the
/// index goes at the next 64-byte boundary, and the header's `index_offset`,
/// `index_len`, `file_len` and CRC are set to match.
pub fn seal(template: &Header, data: &[u8], index: &[u8]) -> Vec<u8> {
    let index_offset = align_up((HEADER_LEN + data.len()) as u64).unwrap();
    let mut header = Header {
        index_offset,
        index_len: index.len() as u64,
        file_len: index_offset + index.len() as u64,
        ..*template
    };
    header.crc32 = header.compute_crc(index);
    let mut out = header.to_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(index_offset as usize, 0);
    out.extend_from_slice(index);
    out
}

/// Recomputes the header CRC of an archive in place (after a header edit),
/// so the edit reaches the check it targets.
pub fn refix_crc(bytes: &mut [u8]) {
    let at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    let start = at(24).min(bytes.len());
    let end = start.saturating_add(at(32)).min(bytes.len());
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..60]);
    h.update(&bytes[start..end]);
    let crc = h.finalize();
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// A tensor for [`write_safetensors`]: name, dtype, shape, little-endian bytes.
pub type RawTensor = (String, Dtype, Vec<u64>, Vec<u8>);

/// Writes `tensors` as a safetensors file at `path`, in this order.
pub fn write_safetensors(path: &Path, tensors: &[RawTensor]) {
    let list: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, _)| (n.as_str(), *d, s.as_slice()))
        .collect();
    let header = make_header(&list);
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    for (_, _, _, bytes) in tensors {
        out.extend_from_slice(bytes);
    }
    std::fs::write(path, out).unwrap();
}

/// Packs `target` against `base` (both safetensors paths) into an archive
/// in memory, as format v1.0 (whole-stream codecs: the attacks below edit
/// those structures; v1.1 features have their own tests, on [`v11_archive`]).
pub fn pack_bytes(target: &Path, base: Option<&Path>, mode: BaseMode, chunk_elems: u64) -> Vec<u8> {
    pack_minor(target, base, mode, chunk_elems, 0)
}

/// Packs `target` against `base` with the given writer options.
pub fn pack_bytes_with(
    target: &Path,
    base: Option<&Path>,
    mode: BaseMode,
    write: WriteOptions,
) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.tpde");
    let t = Checkpoint::open(target).unwrap();
    let b = base.map(|b| Checkpoint::open(b).unwrap());
    let opts = PackOptions {
        write,
        base_mode: mode,
    };
    pack(&t, b.as_ref(), &out, &opts, &mut |_| {}).unwrap();
    std::fs::read(&out).unwrap()
}

/// The inputs of golden vector `vector` (an inline-base vector of
/// `tests/vectors/v1/`) packed again with `chunk_elems`: the target
/// reconstructed from the vector, the base read from `base_file` beside it.
pub fn repack_vector(vector: &str, base_file: &str, chunk_elems: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.safetensors");
    let v1 = crate::vectors_v1();
    let a = tpde_format::Archive::open(v1.join(format!("{vector}.tpde"))).unwrap();
    tpde_format::unpack::unpack(
        &a,
        &tpde_format::NoBase,
        &target,
        &Default::default(),
        &mut |_| {},
    )
    .unwrap();
    pack_bytes_with(
        &target,
        Some(&v1.join(base_file)),
        BaseMode::Inline,
        WriteOptions::default().with_chunk_elems(chunk_elems),
    )
}

/// Spec §4.5's chunk-size rule for a row-mapped or sliced inline base,
/// on golden vector `vector`'s inputs repacked ([`repack_vector`]): the
/// bases of a `large`-chunk packing grafted under `small`-chunk targets are
/// refused at open (each base chunk would be decoded once per target chunk
/// over it); the other way round they decode.
pub fn assert_larger_base_chunks_refused(vector: &str, base_file: &str, small: u64, large: u64) {
    let repack = |ce| repack_vector(vector, base_file, ce);
    let mut p = Parts::parse(&repack(small));
    p.graft_bases(&Parts::parse(&repack(large)));
    let e = match open(&p.to_bytes()) {
        Err(e) => e,
        Ok(_) => panic!("{vector}: larger base chunks accepted"),
    };
    assert!(
        matches!(&e, tpde_format::Error::InvalidIndex { location: tpde_format::Location::Tensor { base: false, .. }, reason }
        if reason.contains("larger chunks")),
        "{e:?}"
    );
    let mut p = Parts::parse(&repack(large));
    p.graft_bases(&Parts::parse(&repack(small)));
    decode_all_with(&p.to_bytes(), &tpde_format::NoBase).unwrap();
}

/// Packs like [`pack_bytes`], allowing features up to format minor `max_minor`.
/// Byte planes use zstd (the attacks edit zstd planes; rANS planes are
/// checked by `tpde_format::codec::entropy`'s own hostile-input tests and by
/// `rans_plane_*` tests).
pub fn pack_minor(
    target: &Path,
    base: Option<&Path>,
    mode: BaseMode,
    chunk_elems: u64,
    max_minor: u16,
) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.tpde");
    let t = Checkpoint::open(target).unwrap();
    let b = base.map(|b| Checkpoint::open(b).unwrap());
    let opts = PackOptions {
        write: WriteOptions::default()
            .with_chunk_elems(chunk_elems)
            .with_max_minor(max_minor)
            .with_plane_coder(tpde_format::codec::stream::PlaneCoder::Zstd),
        base_mode: mode,
    };
    pack(&t, b.as_ref(), &out, &opts, &mut |_| {}).unwrap();
    std::fs::read(&out).unwrap()
}

/// The shipped example pair packed with an inline base, 4096-element chunks
/// (so tensors have several chunks of every kind).
pub fn example_archive() -> Vec<u8> {
    pack_bytes(
        &crate::example("v6.2-16k.safetensors"),
        Some(&crate::example("v6.2.safetensors")),
        BaseMode::Inline,
        4096,
    )
}

/// A small synthetic pair in `dir`: base and target safetensors with an F32
/// tensor of a few sparse changes (sparse chunks), a U16 tensor rewritten
/// everywhere (dense chunks), an untouched I8 tensor (zero chunks) and a
/// BF16 tensor new in the target (no base). Returns (target, base) paths.
pub fn synthetic_pair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let n = 3000usize;
    let f32_base: Vec<u8> = (0..n)
        .flat_map(|i| (i as f32 * 0.25).to_le_bytes())
        .collect();
    let mut f32_target = f32_base.clone();
    for i in [3usize, 700, 701, 2999] {
        f32_target[i * 4] ^= 0x5a;
    }
    let u16_base: Vec<u8> = (0..n).flat_map(|i| (i as u16).to_le_bytes()).collect();
    let u16_target: Vec<u8> = (0..n)
        .flat_map(|i| ((i * 7 + 1) as u16).to_le_bytes())
        .collect();
    let i8s: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let bf16: Vec<u8> = (0..n)
        .flat_map(|i| ((i * 3) as u16).to_le_bytes())
        .collect();
    let shape = vec![30u64, 100];
    let base = vec![
        ("w.f32".to_string(), Dtype::F32, shape.clone(), f32_base),
        ("w.u16".to_string(), Dtype::U16, shape.clone(), u16_base),
        ("w.i8".to_string(), Dtype::I8, shape.clone(), i8s.clone()),
    ];
    let target = vec![
        ("w.f32".to_string(), Dtype::F32, shape.clone(), f32_target),
        ("w.u16".to_string(), Dtype::U16, shape.clone(), u16_target),
        ("w.i8".to_string(), Dtype::I8, shape.clone(), i8s),
        ("new.bf16".to_string(), Dtype::BF16, shape, bf16),
    ];
    let (tp, bp) = (dir.join("target.safetensors"), dir.join("base.safetensors"));
    write_safetensors(&tp, &target);
    write_safetensors(&bp, &base);
    (tp, bp)
}

/// The [`synthetic_pair`] packed in `mode` with `chunk_elems`-element chunks.
pub fn synthetic_archive(mode: BaseMode, chunk_elems: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (t, b) = synthetic_pair(dir.path());
    pack_bytes(&t, Some(&b), mode, chunk_elems)
}

/// A sharded checkpoint directory `dir/name`: two shards and the
/// `model.safetensors.index.json` naming them. Returns the directory.
pub fn sharded_checkpoint(dir: &Path, name: &str) -> std::path::PathBuf {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).unwrap();
    let shard = |i: u8| -> RawTensor {
        let bytes: Vec<u8> = (0..256u32)
            .flat_map(|x| (x * u32::from(i)).to_le_bytes())
            .collect();
        (format!("layer{i}.weight"), Dtype::U32, vec![16, 16], bytes)
    };
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    write_safetensors(&root.join(names[0]), &[shard(1)]);
    write_safetensors(&root.join(names[1]), &[shard(2)]);
    let index = format!(
        r#"{{"metadata": {{}}, "weight_map": {{"layer1.weight": "{}", "layer2.weight": "{}"}}}}"#,
        names[0], names[1]
    );
    std::fs::write(root.join("model.safetensors.index.json"), index).unwrap();
    root
}

/// xorshift bytes.
fn noise(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A pair using the v1.1 features, in `dir`: `w` is an f32 tensor over a
/// bf16 base of the same values (a widened base); `noisy` is f32 with
/// incompressible low mantissa bytes (per-plane value streams, noise planes
/// raw). Returns (target, base) paths.
pub fn v11_pair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let n = 4096usize;
    let bf: Vec<u8> = (0..n)
        .flat_map(|i| (0x3f80u16 + (i as u16 % 97)).to_le_bytes())
        .collect();
    let mut wide: Vec<u8> = bf
        .chunks_exact(2)
        .flat_map(|h| (u32::from(u16::from_le_bytes([h[0], h[1]])) << 16).to_le_bytes())
        .collect();
    for i in [1usize, 77, 2000] {
        wide[i * 4] ^= 0x21;
    }
    let mut noisy = noise(n * 4, 0x9e37_79b9_7f4a_7c15);
    for (i, e) in noisy.chunks_exact_mut(4).enumerate() {
        e[3] = 0x3f;
        e[2] = 0x80 | (i % 5) as u8;
    }
    let mut noisy_t = noisy.clone();
    for e in noisy_t.chunks_exact_mut(4) {
        e[0] ^= 0x5a;
        e[1] = e[1].wrapping_add(3);
    }
    let shape = vec![64u64, 64];
    let base = vec![
        ("w".to_string(), Dtype::BF16, shape.clone(), bf),
        ("noisy".to_string(), Dtype::F32, shape.clone(), noisy),
    ];
    let target = vec![
        ("w".to_string(), Dtype::F32, shape.clone(), wide),
        ("noisy".to_string(), Dtype::F32, shape, noisy_t),
    ];
    let (tp, bp) = (
        dir.join("target11.safetensors"),
        dir.join("base11.safetensors"),
    );
    write_safetensors(&tp, &target);
    write_safetensors(&bp, &base);
    (tp, bp)
}

/// The [`v11_pair`] packed in `mode` with every feature up to format 1.2
/// (not 1.3's compressed index: the tests built on it rewrite the header's
/// minor, which a compressed index pins to 3; hostile_v13.rs covers it).
pub fn v11_archive(mode: BaseMode, chunk_elems: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (t, b) = v11_pair(dir.path());
    pack_minor(&t, Some(&b), mode, chunk_elems, 2)
}

/// Asserts that `$res` is `Err` matching `$pat` (and the guard), printing
/// the actual outcome otherwise: the one assertion of every hostile test.
#[macro_export]
macro_rules! assert_err {
    ($res:expr, $pat:pat $(if $guard:expr)?) => {
        match $res {
            Err($pat) $(if $guard)? => {}
            Err(e) => panic!("wrong error: {e:?}\n  ({e})"),
            Ok(_) => panic!("hostile input accepted"),
        }
    };
}

/// The golden vector `name` (`tests/vectors/v1/<name>.tpde`), as bytes.
pub fn vector(name: &str) -> Vec<u8> {
    std::fs::read(crate::vectors_v1().join(format!("{name}.tpde"))).unwrap()
}

/// The error [`open`] gives for hostile `bytes`; panics if they open.
pub fn open_err(bytes: &[u8]) -> tpde_format::Error {
    match open(bytes) {
        Err(e) => e,
        Ok(_) => panic!("hostile input accepted"),
    }
}

/// Opens `bytes` as an archive with the default limits.
pub fn open(bytes: &[u8]) -> Result<tpde_format::Archive<&[u8]>, tpde_format::Error> {
    tpde_format::Archive::from_bytes(bytes, tpde_format::ReadLimits::default())
}

/// Opens and decodes every target tensor (checking digests) against `base`.
pub fn decode_all_with(
    bytes: &[u8],
    base: &dyn tpde_format::BaseProvider,
) -> Result<(), tpde_format::Error> {
    let a = open(bytes)?;
    for t in &a.index().tensors {
        a.decode_tensor(&t.name, base)?;
    }
    Ok(())
}

/// [`decode_all_with`] without a base.
pub fn decode_all(bytes: &[u8]) -> Result<(), tpde_format::Error> {
    decode_all_with(bytes, &tpde_format::NoBase)
}
