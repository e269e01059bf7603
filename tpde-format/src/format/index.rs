//! The tensor index (spec §4): plain data, serialized with bincode 1 in its
//! fixed-int little-endian configuration (spec §4.0 spells out every byte).
//!
//! Field order is the wire order: never reorder fields or enum variants.

use serde::{Deserialize, Serialize};

use super::dtype::Dtype;

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// The whole index: what the archive reconstructs and where every byte lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Index {
    /// The target safetensors files, in the order they were packed.
    pub files: Vec<FileRecord>,
    /// Small files reproduced verbatim beside the targets (e.g. `model.safetensors.index.json`).
    pub extra_files: Vec<ExtraFile>,
    /// External base files this archive needs (referenced, not embedded).
    pub base_files: Vec<BaseFile>,
    /// Base tensors stored inline in this archive.
    pub bases: Vec<TensorRecord>,
    /// Target tensors.
    pub tensors: Vec<TensorRecord>,
}

/// One target safetensors file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// File name: a single path component (spec §4.3).
    pub name: String,
    /// Size of the original file in bytes.
    pub size: u64,
    /// SHA-256 of the original file.
    pub sha256: Digest,
    /// The original safetensors JSON header bytes, verbatim (padding included).
    pub header: Vec<u8>,
    /// Indices into [`Index::tensors`], in the order their data appears in the file.
    pub tensors: Vec<u32>,
}

/// A small file stored verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraFile {
    /// File name: a single path component.
    pub name: String,
    /// SHA-256 of `contents`.
    pub sha256: Digest,
    /// The bytes.
    pub contents: Vec<u8>,
}

/// An external base file the archive was packed against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseFile {
    /// File name as it was packed (for messages; matching is by tensor digest).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: Digest,
}

/// One tensor: a target, or an inline base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorRecord {
    /// Tensor name (any UTF-8; never used as a path).
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape; empty for a 0-d scalar.
    pub shape: Vec<u64>,
    /// SHA-256 of the tensor's reconstructed bytes (little-endian, row-major).
    pub sha256: Digest,
    /// Where the base this tensor's chunks combine with comes from.
    pub base: BaseRef,
    /// How the bytes are stored.
    pub payload: Payload,
}

/// The base a tensor is reconstructed against (spec §4.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BaseRef {
    /// No base: the base is all-zero bits.
    None,
    /// An inline base: index into [`Index::bases`] (same dtype and shape).
    Inline {
        /// Index into [`Index::bases`].
        index: u32,
    },
    /// A tensor of an external base file, supplied by the user at read time.
    External {
        /// Index into [`Index::base_files`].
        file: u32,
        /// Name of the tensor in the base checkpoint.
        name: String,
        /// SHA-256 of the base tensor's bytes; readers MUST check it.
        sha256: Digest,
    },
    /// (v1.1) An inline base of a narrower float dtype (same shape), widened
    /// exactly to the target's dtype before combining (spec §6.2).
    InlineWidened {
        /// Index into [`Index::bases`].
        index: u32,
    },
    /// (v1.1) An external base tensor of a narrower float dtype, widened
    /// exactly to the target's dtype before combining (spec §6.2).
    ExternalWidened {
        /// Index into [`Index::base_files`].
        file: u32,
        /// Name of the tensor in the base checkpoint.
        name: String,
        /// SHA-256 of the base tensor's bytes (before widening).
        sha256: Digest,
        /// The base tensor's dtype.
        dtype: Dtype,
    },
    /// (v1.2) Rows of an inline base of the same dtype whose shape differs
    /// only in its first dimension (a vocabulary pruned or extended): target
    /// rows covered by `rows` are predicted by base rows, the others by zero
    /// bits (spec §6.3).
    InlineRows {
        /// Index into [`Index::bases`].
        index: u32,
        /// The row map: ordered, non-overlapping runs, increasing in both tensors.
        rows: Vec<RowRun>,
    },
    /// (v1.2) Rows of an external base tensor of the same dtype whose shape
    /// differs only in its first dimension (spec §6.3).
    ExternalRows {
        /// Index into [`Index::base_files`].
        file: u32,
        /// Name of the tensor in the base checkpoint.
        name: String,
        /// SHA-256 of the base tensor's bytes; readers MUST check it.
        sha256: Digest,
        /// The base tensor's shape (its dtype is the target's).
        shape: Vec<u64>,
        /// The row map, as in [`BaseRef::InlineRows`].
        rows: Vec<RowRun>,
    },
    /// (v1.2) A quantized inline base: integer codes `q` (I8 or U8, the
    /// target's shape) and F32 scales, dequantized as `f32(q) × scale` in
    /// IEEE binary32 to predict an F32 target (spec §6.4).
    InlineDequant {
        /// Index into [`Index::bases`] of the codes.
        q: u32,
        /// Index into [`Index::bases`] of the scales.
        scale: u32,
        /// Which elements share a scale.
        axis: ScaleAxis,
    },
    /// (v1.2) A quantized external base: two tensors of a base file (spec §6.4).
    ExternalDequant {
        /// Index into [`Index::base_files`].
        file: u32,
        /// Name of the codes tensor (I8 or U8, the target's shape).
        q_name: String,
        /// SHA-256 of the codes' bytes; readers MUST check it.
        q_sha256: Digest,
        /// The codes' dtype: I8 or U8.
        q_dtype: Dtype,
        /// Name of the scales tensor (F32).
        scale_name: String,
        /// SHA-256 of the scales' bytes; readers MUST check it.
        scale_sha256: Digest,
        /// The scales' shape.
        scale_shape: Vec<u64>,
        /// Which elements share a scale.
        axis: ScaleAxis,
    },
    /// (v1.5) Slices of an inline base of the same dtype and any shape: both
    /// tensors are read as flat sequences of rows of `row_elems` elements,
    /// and target rows covered by `rows` are predicted by base rows taken in
    /// any order, the others by zero bits (spec §6.3.4). Rows reordered (RNN
    /// gates exported in another order), a tensor reshaped, or a slice of a
    /// fused tensor.
    InlineSlices {
        /// Index into [`Index::bases`].
        index: u32,
        /// Elements per row, in both tensors (at least 1).
        row_elems: u64,
        /// The row map: runs increasing and disjoint in the target, their
        /// base rows in any order.
        rows: Vec<RowRun>,
    },
    /// (v1.5) Slices of an external base tensor of the same dtype and any
    /// shape (spec §6.3.4).
    ExternalSlices {
        /// Index into [`Index::base_files`].
        file: u32,
        /// Name of the tensor in the base checkpoint.
        name: String,
        /// SHA-256 of the base tensor's bytes; readers MUST check it.
        sha256: Digest,
        /// The base tensor's shape (its dtype is the target's).
        shape: Vec<u64>,
        /// Elements per row, in both tensors (at least 1).
        row_elems: u64,
        /// The row map, as in [`BaseRef::InlineSlices`].
        rows: Vec<RowRun>,
    },
}

/// (v1.2) Which target elements share one scale of a quantized base (spec §6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScaleAxis {
    /// One scale for the whole tensor.
    Tensor,
    /// One scale per row (a slice along the first dimension).
    Rows,
    /// One scale per position within a row (per column of a matrix).
    Columns,
}

impl ScaleAxis {
    /// Lower-case name for tables and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            ScaleAxis::Tensor => "tensor",
            ScaleAxis::Rows => "rows",
            ScaleAxis::Columns => "columns",
        }
    }
}

/// (v1.2) A run of target rows predicted by as many consecutive base rows
/// (spec §6.3). A row is a slice along the first dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RowRun {
    /// First target row of the run.
    pub start: u64,
    /// The base row that predicts target row `start`.
    pub base_start: u64,
    /// Rows in the run (at least 1).
    pub count: u64,
}

impl RowRun {
    /// Target rows `start..start + count` predicted by base rows from `base_start`.
    pub const fn new(start: u64, base_start: u64, count: u64) -> RowRun {
        RowRun {
            start,
            base_start,
            count,
        }
    }
}

impl BaseRef {
    /// True for the variants format 1.2 added (row-mapped and quantized bases).
    pub fn is_v12(&self) -> bool {
        matches!(
            self,
            BaseRef::InlineRows { .. }
                | BaseRef::ExternalRows { .. }
                | BaseRef::InlineDequant { .. }
                | BaseRef::ExternalDequant { .. }
        )
    }

    /// True for the variants format 1.5 added (sliced bases).
    pub fn is_v15(&self) -> bool {
        matches!(
            self,
            BaseRef::InlineSlices { .. } | BaseRef::ExternalSlices { .. }
        )
    }

    /// The row map of a row-mapped (v1.2) or sliced (v1.5) base, if this is one.
    pub fn rows(&self) -> Option<&[RowRun]> {
        match self {
            BaseRef::InlineRows { rows, .. }
            | BaseRef::ExternalRows { rows, .. }
            | BaseRef::InlineSlices { rows, .. }
            | BaseRef::ExternalSlices { rows, .. } => Some(rows),
            _ => None,
        }
    }

    /// The row map of a row-mapped or sliced base and its row length in
    /// elements: a row-mapped base's rows are slices along the first
    /// dimension of the target's `shape` (spec §6.3.1), a sliced base states
    /// its own (§6.3.4). `None` for other bases; a row length of 0 for a
    /// row-mapped base of a 0-d target (which validation rejects).
    pub fn row_map(&self, shape: &[u64]) -> Option<(&[RowRun], u64)> {
        match self {
            BaseRef::InlineRows { rows, .. } | BaseRef::ExternalRows { rows, .. } => {
                Some((rows, crate::codec::rows::row_bytes(shape, 1).unwrap_or(0)))
            }
            BaseRef::InlineSlices {
                rows, row_elems, ..
            }
            | BaseRef::ExternalSlices {
                rows, row_elems, ..
            } => Some((rows, *row_elems)),
            _ => None,
        }
    }
}

/// How a tensor's bytes are stored (spec §4.6).
///
/// On the wire a chunked payload is variant 1 (`Chunked`) without chunk
/// digests and variant 2 (`ChunkedDigests`, v1.7) with them; in memory both
/// are [`Payload::Chunked`], so code that does not care about the digests
/// matches one variant (see [`wire::Payload`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "wire::Payload", into = "wire::Payload")]
pub enum Payload {
    /// The tensor's natural little-endian bytes in one aligned blob, for
    /// zero-copy memory mapping. Only with [`BaseRef::None`].
    Plain {
        /// Absolute file offset (a multiple of 64; 0 when `len` is 0).
        offset: u64,
        /// Length in bytes: element count × width.
        len: u64,
        /// CRC-32 of the blob.
        crc32: u32,
    },
    /// Fixed-size element ranges that decode independently.
    Chunked {
        /// Elements per chunk (the last chunk may be shorter).
        chunk_elems: u64,
        /// The chunks, in element order.
        chunks: Vec<Chunk>,
        /// (v1.7) The SHA-256 of each chunk's reconstructed bytes, one per
        /// chunk, so a reader can prove a large tensor chunk by chunk, in
        /// parallel, instead of with one serial SHA-256 over the whole
        /// tensor (spec §4.6.3). `None`: the tensor digest only.
        chunk_sha256: Option<Vec<Digest>>,
    },
}

/// The payload as the index stores it (spec §4.0.3): the digests of a
/// chunked payload are a separate variant, appended in v1.7 so that older
/// files keep their bytes.
pub mod wire {
    use serde::{Deserialize, Serialize};

    use super::{Chunk, Digest};

    /// [`super::Payload`] on the wire.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum Payload {
        /// Variant 0.
        Plain {
            /// See [`super::Payload::Plain`].
            offset: u64,
            /// See [`super::Payload::Plain`].
            len: u64,
            /// See [`super::Payload::Plain`].
            crc32: u32,
        },
        /// Variant 1: chunks, no chunk digests.
        Chunked {
            /// See [`super::Payload::Chunked`].
            chunk_elems: u64,
            /// See [`super::Payload::Chunked`].
            chunks: Vec<Chunk>,
        },
        /// Variant 2 (v1.7): chunks and one SHA-256 per chunk.
        ChunkedDigests {
            /// See [`super::Payload::Chunked`].
            chunk_elems: u64,
            /// See [`super::Payload::Chunked`].
            chunks: Vec<Chunk>,
            /// See [`super::Payload::Chunked`]; validation checks there is
            /// one per chunk.
            sha256: Vec<Digest>,
        },
    }

    impl From<Payload> for super::Payload {
        fn from(p: Payload) -> Self {
            match p {
                Payload::Plain { offset, len, crc32 } => {
                    super::Payload::Plain { offset, len, crc32 }
                }
                Payload::Chunked {
                    chunk_elems,
                    chunks,
                } => super::Payload::Chunked {
                    chunk_elems,
                    chunks,
                    chunk_sha256: None,
                },
                Payload::ChunkedDigests {
                    chunk_elems,
                    chunks,
                    sha256,
                } => super::Payload::Chunked {
                    chunk_elems,
                    chunks,
                    chunk_sha256: Some(sha256),
                },
            }
        }
    }

    impl From<super::Payload> for Payload {
        fn from(p: super::Payload) -> Self {
            match p {
                super::Payload::Plain { offset, len, crc32 } => {
                    Payload::Plain { offset, len, crc32 }
                }
                super::Payload::Chunked {
                    chunk_elems,
                    chunks,
                    chunk_sha256: None,
                } => Payload::Chunked {
                    chunk_elems,
                    chunks,
                },
                super::Payload::Chunked {
                    chunk_elems,
                    chunks,
                    chunk_sha256: Some(sha256),
                } => Payload::ChunkedDigests {
                    chunk_elems,
                    chunks,
                    sha256,
                },
            }
        }
    }
}

impl Payload {
    /// The recorded SHA-256 of chunk `i` (v1.7), if the payload has chunk
    /// digests.
    pub fn chunk_digest(&self, i: usize) -> Option<&Digest> {
        match self {
            Payload::Chunked {
                chunk_sha256: Some(d),
                ..
            } => d.get(i),
            _ => None,
        }
    }

    /// True when the payload records a digest per chunk (v1.7).
    pub fn has_chunk_digests(&self) -> bool {
        matches!(
            self,
            Payload::Chunked {
                chunk_sha256: Some(_),
                ..
            }
        )
    }
}

/// One chunk: an element range of a tensor (spec §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Absolute file offset of the stored bytes (multiple of 64; 0 when `stored_len` is 0).
    pub offset: u64,
    /// Stored bytes: `positions.stored_len + values.stored_len`.
    pub stored_len: u64,
    /// CRC-32 of the stored bytes.
    pub crc32: u32,
    /// First element of the range.
    pub elem_start: u64,
    /// Elements in the range.
    pub elem_count: u64,
    /// How the range is encoded.
    pub kind: ChunkKind,
    /// How values combine with the base.
    pub op: Op,
    /// Elements whose value differs from the base (for sparse chunks: the number of positions).
    pub changed: u64,
    /// The gap-encoded positions stream (empty unless sparse).
    pub positions: Stream,
    /// The byte-planed values stream.
    pub values: Stream,
}

/// A stored byte stream inside a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    /// Bytes stored in the file.
    pub stored_len: u64,
    /// Bytes after decompression.
    pub raw_len: u64,
    /// Compression applied.
    pub codec: Codec,
}

impl Stream {
    /// An empty stream.
    pub const EMPTY: Stream = Stream {
        stored_len: 0,
        raw_len: 0,
        codec: Codec::Raw,
    };
}

/// Chunk encodings (spec §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChunkKind {
    /// Target equals base over the range; nothing stored.
    Zero,
    /// One value per element.
    Dense,
    /// Values at gap-encoded positions; other elements equal the base.
    Sparse,
}

/// Combine operations on bit patterns (spec §6). Exact for every dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// `target = base XOR value`.
    Xor,
    /// `target = (base + value) mod 2^bits`, on the unsigned little-endian integer.
    Add,
    /// `target = value`.
    Replace,
    /// (v1.1) `target = (base + unzigzag(value)) mod 2^bits`: the difference
    /// stored zigzag-coded (`0, -1, 1, -2, … → 0, 1, 2, 3, …`), so small negative
    /// residuals have zero high bytes instead of 0xff ones (spec §6.1).
    AddZigzag,
    /// (v1.4) `target = rotr1(value)`: the value is the target rotated left
    /// by one bit within its width, so a float's sign drops to bit 0 and its
    /// whole exponent fills the top byte plane (an F32 or BF16 exponent
    /// otherwise straddles two planes, its last bit in the noise plane).
    ReplaceRot,
}

/// Stream compression (spec §5.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Codec {
    /// Stored as is.
    Raw,
    /// One zstd frame.
    Zstd,
    /// (v1.1) A values stream whose byte planes are stored one after another,
    /// each with its own codec: noise planes (low mantissa bytes) stay raw and
    /// cost no compression time. One entry per plane, most significant first.
    PerPlane(Vec<Plane>),
}

/// (v1.1) One byte plane of a [`Codec::PerPlane`] stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Plane {
    /// Bytes stored for this plane.
    pub stored_len: u64,
    /// How they are stored.
    pub codec: PlaneCodec,
}

/// (v1.1) Codec of one plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlaneCodec {
    /// Stored as is.
    Raw,
    /// One zstd frame.
    Zstd,
    /// A static context-modelled rANS stream (spec §5.6): plane `k > 0` is
    /// coded with plane `k - 1` of the same stream as its context.
    Rans,
    /// (v1.2) A rANS stream (spec §5.6) whose context is the base's most
    /// significant byte under each value (spec §5.7): for trained weights
    /// the base's exponent predicts the size of the update.
    RansBase,
    /// (v1.6) [`PlaneCodec::Rans`] with 32 interleaved states instead of 4
    /// (spec §5.6.4): decodes on AVX2 vectors or one GPU warp per plane.
    Rans32,
    /// (v1.6) [`PlaneCodec::RansBase`] with 32 interleaved states.
    RansBase32,
}

impl PlaneCodec {
    /// The interleaved states of a rANS plane (`None` for raw and zstd).
    pub const fn rans_lanes(self) -> Option<crate::codec::entropy::Lanes> {
        use crate::codec::entropy::Lanes;
        match self {
            PlaneCodec::Raw | PlaneCodec::Zstd => None,
            PlaneCodec::Rans | PlaneCodec::RansBase => Some(Lanes::Four),
            PlaneCodec::Rans32 | PlaneCodec::RansBase32 => Some(Lanes::ThirtyTwo),
        }
    }

    /// True for the planes whose context is the base (spec §5.7).
    pub const fn uses_base_context(self) -> bool {
        matches!(self, PlaneCodec::RansBase | PlaneCodec::RansBase32)
    }

    /// True for the (v1.6) 32-state planes.
    pub const fn is_wide(self) -> bool {
        matches!(self, PlaneCodec::Rans32 | PlaneCodec::RansBase32)
    }
}

impl ChunkKind {
    /// Lower-case name for tables and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            ChunkKind::Zero => "zero",
            ChunkKind::Dense => "dense",
            ChunkKind::Sparse => "sparse",
        }
    }
}

impl Op {
    /// Lower-case name for tables and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Op::Xor => "xor",
            Op::Add => "add",
            Op::Replace => "replace",
            Op::AddZigzag => "add-zigzag",
            Op::ReplaceRot => "replace-rot",
        }
    }

    /// (v1.4) True for the ops whose value is rotated (only [`Op::ReplaceRot`]).
    pub const fn is_rotated(self) -> bool {
        matches!(self, Op::ReplaceRot)
    }
}

impl Codec {
    /// Lower-case name for tables and JSON.
    pub const fn name(&self) -> &'static str {
        match self {
            Codec::Raw => "raw",
            Codec::Zstd => "zstd",
            Codec::PerPlane(_) => "planes",
        }
    }
}

impl PlaneCodec {
    /// Lower-case name for tables and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            PlaneCodec::Raw => "raw",
            PlaneCodec::Zstd => "zstd",
            PlaneCodec::Rans => "rans",
            PlaneCodec::RansBase => "rans-base",
            PlaneCodec::Rans32 => "rans32",
            PlaneCodec::RansBase32 => "rans-base32",
        }
    }
}

impl Index {
    /// The lowest format minor version that can express this index (spec §8):
    /// 7 when a payload has chunk digests; 6 when a plane has 32 rANS states; 5 when a target has a sliced base;
    /// 4 when a chunk uses a rotated op; 2 when it uses row-mapped or
    /// quantized bases; 1 when it uses per-plane streams, widened bases or
    /// zigzag adds; else 0. (Minor 3 is a header flag, not an index variant.)
    pub fn min_minor(&self) -> u16 {
        if self
            .bases
            .iter()
            .chain(&self.tensors)
            .any(|t| t.payload.has_chunk_digests())
        {
            return 7;
        }
        if self.uses_wide_rans() {
            return 6;
        }
        if self.tensors.iter().any(|t| t.base.is_v15()) {
            return 5;
        }
        if self.uses_rotated_ops() {
            return 4;
        }
        if self.tensors.iter().any(|t| t.base.is_v12()) || self.uses_base_context() {
            return 2;
        }
        let widened = self.tensors.iter().any(|t| {
            matches!(
                t.base,
                BaseRef::InlineWidened { .. } | BaseRef::ExternalWidened { .. }
            )
        });
        let chunk_v11 = self
            .bases
            .iter()
            .chain(&self.tensors)
            .any(|t| match &t.payload {
                Payload::Chunked { chunks, .. } => chunks
                    .iter()
                    .any(|c| matches!(c.values.codec, Codec::PerPlane(_)) || c.op == Op::AddZigzag),
                Payload::Plain { .. } => false,
            });
        u16::from(widened || chunk_v11)
    }
}

impl Index {
    /// True when any chunk (of a target or an inline base) has a rotated op (v1.4).
    pub fn uses_rotated_ops(&self) -> bool {
        self.bases
            .iter()
            .chain(&self.tensors)
            .any(|t| match &t.payload {
                Payload::Chunked { chunks, .. } => chunks.iter().any(|c| c.op.is_rotated()),
                Payload::Plain { .. } => false,
            })
    }

    /// True when any values stream has a 32-state rANS plane (v1.6).
    pub fn uses_wide_rans(&self) -> bool {
        self.bases
            .iter()
            .chain(&self.tensors)
            .any(|t| match &t.payload {
                Payload::Chunked { chunks, .. } => chunks.iter().any(|c| c.values.uses_wide_rans()),
                Payload::Plain { .. } => false,
            })
    }

    /// True when any values stream has a [`PlaneCodec::RansBase`] plane (v1.2).
    pub fn uses_base_context(&self) -> bool {
        self.bases
            .iter()
            .chain(&self.tensors)
            .any(|t| match &t.payload {
                Payload::Chunked { chunks, .. } => {
                    chunks.iter().any(|c| c.values.uses_base_context())
                }
                Payload::Plain { .. } => false,
            })
    }
}

impl Stream {
    /// True when a plane of this stream is [`PlaneCodec::RansBase`] (v1.2).
    pub fn uses_base_context(&self) -> bool {
        matches!(&self.codec, Codec::PerPlane(p) if p.iter().any(|p| p.codec.uses_base_context()))
    }

    /// True when a plane of this stream has 32 rANS states (v1.6).
    pub fn uses_wide_rans(&self) -> bool {
        matches!(&self.codec, Codec::PerPlane(p) if p.iter().any(|p| p.codec.is_wide()))
    }
}

impl TensorRecord {
    /// Element count (product of the shape), `None` on overflow.
    pub fn elem_count(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }

    /// Byte length of the reconstructed tensor, `None` on overflow.
    pub fn byte_len(&self) -> Option<u64> {
        self.elem_count()?.checked_mul(self.dtype.width() as u64)
    }

    /// Bytes this tensor occupies in the data section.
    pub fn stored_bytes(&self) -> u64 {
        match &self.payload {
            Payload::Plain { len, .. } => *len,
            Payload::Chunked { chunks, .. } => chunks.iter().map(|c| c.stored_len).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bincode::Options as _;

    fn wire(b: &BaseRef) -> Vec<u8> {
        super::super::bincode_options(1 << 20).serialize(b).unwrap()
    }

    fn le(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn run(start: u64, base_start: u64, count: u64) -> RowRun {
        RowRun::new(start, base_start, count)
    }

    #[test]
    fn spec_4_0_5_row_map_example() {
        // `InlineRows { index: 0, rows: [(0, 0, 2), (2, 3, 2)] }`: the
        // variant, the index, then the 56-byte run list the spec spells out.
        let b = BaseRef::InlineRows {
            index: 0,
            rows: vec![run(0, 0, 2), run(2, 3, 2)],
        };
        let mut want = vec![5, 0, 0, 0, 0, 0, 0, 0];
        want.extend(le(&[2, 0, 0, 2, 2, 3, 2]));
        assert_eq!(wire(&b), want);
    }

    #[test]
    fn spec_4_0_8_sliced_base_example() {
        // A [384] bias from a fused [1, 768] one, first two gates of 128
        // swapped: 96 bytes.
        let b = BaseRef::InlineSlices {
            index: 2,
            row_elems: 128,
            rows: vec![run(0, 1, 1), run(1, 0, 1), run(2, 2, 1)],
        };
        let mut want = vec![9, 0, 0, 0, 2, 0, 0, 0];
        want.extend(le(&[128, 3, 0, 1, 1, 1, 0, 1, 2, 2, 1]));
        assert_eq!(want.len(), 96);
        assert_eq!(wire(&b), want);
        // ExternalSlices is variant 10 (`0A 00 00 00`), `row_elems` after
        // the base shape.
        let e = BaseRef::ExternalSlices {
            file: 0,
            name: "b".into(),
            sha256: [7; 32],
            shape: vec![1, 768],
            row_elems: 128,
            rows: vec![],
        };
        let mut want = vec![10, 0, 0, 0, 0, 0, 0, 0];
        want.extend(le(&[1]));
        want.push(b'b');
        want.extend([7u8; 32]);
        want.extend(le(&[2, 1, 768, 128, 0]));
        assert_eq!(wire(&e), want);
    }
}
