//! Resource limits applied before trusting any declared length (spec §7).

/// Limits a reader enforces while opening and decoding an archive. Each
/// default is generous for real checkpoints and small enough that a hostile
/// file cannot make the reader allocate without bound; exceeding one gives
/// [`crate::Error::LimitExceeded`] naming the field to raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Largest index, in bytes. Default 1 GiB.
    pub max_index_bytes: u64,
    /// Most target plus inline-base tensors. Default 10 million.
    pub max_tensors: u64,
    /// Largest chunk, as elements × element width (the raw length of its
    /// dense values), in bytes. Default 1 GiB. Every other decoded stream of
    /// the chunk is bounded by it: sparse values are at most as long, and
    /// positions at most 5 bytes per element (so up to 5× this for 1-byte
    /// dtypes).
    pub max_chunk_raw_bytes: u64,
    /// Largest single reconstructed tensor, in bytes. Default 1 TiB (a
    /// tensor is decoded into caller-sized or streamed buffers; this bounds
    /// what `decode_tensor` will allocate).
    pub max_tensor_bytes: u64,
    /// Most bytes all target tensors may reconstruct to, plus (format 1.2)
    /// the base bytes row-mapped bases make a reader decode or hash (spec
    /// §6.3.1). Default 16 TiB.
    pub max_total_output: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_index_bytes: 1 << 30,
            max_tensors: 10_000_000,
            max_chunk_raw_bytes: 1 << 30,
            max_tensor_bytes: 1 << 40,
            max_total_output: 1 << 44,
        }
    }
}

impl ReadLimits {
    /// Tight limits for fuzzing and untrusted previews: 16 MiB index, 10k
    /// tensors, 16 MiB chunks, 64 MiB tensors, 256 MiB total.
    pub fn strict() -> Self {
        ReadLimits {
            max_index_bytes: 16 << 20,
            max_tensors: 10_000,
            max_chunk_raw_bytes: 16 << 20,
            max_tensor_bytes: 64 << 20,
            max_total_output: 256 << 20,
        }
    }
}
