//! On-disk structures: plain data, no I/O (spec §2–§5).

pub mod dtype;
pub mod header;
pub mod index;

pub use dtype::Dtype;
pub use header::{
    align_up, Header, ALIGN, FLAG_INDEX_ZSTD, HEADER_LEN, MAGIC, VERSION_MAJOR, VERSION_MINOR,
};
pub use index::{
    BaseFile, BaseRef, Chunk, ChunkKind, Codec, Digest, ExtraFile, FileRecord, Index, Op, Payload,
    Plane, PlaneCodec, RowRun, ScaleAxis, Stream, TensorRecord,
};

use bincode::Options;

/// The bincode configuration of the index (spec §4.0): fixed-width integers,
/// little-endian, no trailing bytes, and a byte limit so no declared length
/// can make the decoder read or allocate past the index.
pub fn bincode_options(limit: u64) -> impl bincode::Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(limit)
}
