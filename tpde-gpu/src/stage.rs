//! CPU side of the pipeline: turns one job's stored bytes into the staged
//! form the kernels read, written straight into its region of a (pinned)
//! staging slot.
//!
//! - dense chunk: the values stream decompressed into the region (byte
//!   planes, most significant plane first, exactly as stored raw);
//! - sparse chunk: the gap-encoded positions, either as their raw LEB128
//!   bytes (decoded and validated on the device: the default, about half the
//!   CPU work and PCIe bytes) or decoded here to little-endian `u32`; then
//!   the values planes;
//! - raw piece: the bytes as they are;
//! - row-mapped predictor piece: base rows and zeros, built from the whole
//!   (SHA-256-checked) base held on the host;
//! - dequant piece: the codes (one byte per element), then at the job's
//!   `values_at` the F32 scales they use, each where it lives on the host
//!   (the device multiplies: a code byte crosses PCIe instead of four
//!   predictor bytes).
//!
//! Every chunk's stored bytes pass their CRC ([`Archive::chunk_bytes`]) and
//! every stream must decode to exactly its declared length, as in the CPU
//! reader.

use std::cell::RefCell;

use tpde_format::codec::{positions, rows, stream};
use tpde_format::format::{Payload, Stream};
use tpde_format::read::Table;
use tpde_format::{Archive, Error as FormatError, Location};

use crate::plan::{Input, Job, JobKind, Piece};

thread_local! {
    static SCRATCH: RefCell<(Vec<u8>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Fills `region` (at least `job.staged` bytes) with the staged form of `job`.
pub fn fill_region<D: AsRef<[u8]> + Sync>(
    archive: &Archive<D>,
    job: &Job<'_>,
    region: &mut [u8],
) -> Result<(), FormatError> {
    let region = &mut region[..job.staged];
    match job.input {
        Input::None => Ok(()),
        Input::Bytes(b) => {
            region.copy_from_slice(b);
            Ok(())
        }
        Input::Rows {
            base,
            rows: map,
            row_bytes,
            at,
        } => {
            rows::predict(map, row_bytes, base, at..at + region.len() as u64, region);
            Ok(())
        }
        Input::Dequant { q, scales, .. } => {
            // Codes first, scales at `values_at`; what lives in device
            // memory is not staged.
            if let Piece::Host(b) = q {
                region[..b.len()].copy_from_slice(b);
            }
            if let Piece::Host(b) = scales {
                region[job.values_at..job.values_at + b.len()].copy_from_slice(b);
            }
            Ok(())
        }
        Input::Chunk {
            table,
            tensor,
            chunk,
        } => {
            let rec = archive.record(table, tensor);
            let Payload::Chunked { chunks, .. } = &rec.payload else {
                return Err(FormatError::Usage("staged chunk of a plain tensor".into()));
            };
            let c = &chunks[chunk];
            let stored = archive.chunk_bytes(table, tensor, chunk, c)?;
            let loc = || Location::Chunk {
                tensor: rec.name.clone(),
                base: table == Table::Base,
                chunk: chunk as u64,
            };
            let err = |reason| FormatError::ChunkDecode {
                location: loc(),
                reason,
            };
            let pos_len = c.positions.stored_len as usize; // validated <= stored_len
            let (pos_bytes, val_bytes) = stored.split_at(pos_len.min(stored.len()));
            match job.kind {
                JobKind::Dense => decompress_into(&c.values, val_bytes, region).map_err(err),
                JobKind::Sparse => {
                    let (pos_out, rest) = region.split_at_mut(job.values_at);
                    SCRATCH
                        .with(|s| {
                            let (raw, pos) = &mut *s.borrow_mut();
                            stream::decompress(&c.positions, pos_bytes, raw)?;
                            positions::decode(raw, job.m as usize, c.elem_count, pos)?;
                            for (o, p) in pos_out.chunks_exact_mut(4).zip(pos.iter()) {
                                o.copy_from_slice(&p.to_le_bytes());
                            }
                            Ok(())
                        })
                        .map_err(err)?;
                    decompress_into(&c.values, val_bytes, rest).map_err(err)
                }
                JobKind::SparseVarint => {
                    // The gap bytes go up as they are; the device decodes and
                    // validates them.
                    let (pos_out, rest) = region.split_at_mut(job.values_at);
                    decompress_into(&c.positions, pos_bytes, &mut pos_out[..job.pos_bytes])
                        .map_err(err)?;
                    decompress_into(&c.values, val_bytes, rest).map_err(err)
                }
                JobKind::Fill | JobKind::Raw | JobKind::Widen | JobKind::Dequant => Ok(()),
            }
        }
    }
}

/// Decompresses one stream into exactly `out` (its declared raw length),
/// with no intermediate buffer: the decoder writes into pinned memory.
pub fn decompress_into(s: &Stream, stored: &[u8], out: &mut [u8]) -> Result<(), &'static str> {
    tpde_format::codec::stream::decompress_into(s, stored, out)
}
