//! The index's stored form (spec §4.0, §8.3): the bincode index as it is,
//! or (v1.3, header flag [`FLAG_INDEX_ZSTD`]) one zstd frame of it.
//!
//! Why compress it: the index is mostly fixed-width integers (chunk
//! descriptors, row maps) that are small numbers in wide fields. On archives
//! of sparse fine-tunes it is 2–3% of the file, and where the whole delta is
//! a row map (a pruned vocabulary) it is all of it; zstd shrinks it 4–7×.

use crate::format::FLAG_INDEX_ZSTD;

/// The magic number of a zstd frame (RFC 8878 §3.1.1), little-endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// zstd level of an index of up to [`SLOW_LEVEL_MAX`] bytes: the slow levels
/// cost milliseconds there, and 19 is within 1% of the best level on the
/// archives measured.
const INDEX_LEVEL: i32 = 19;
/// Larger indexes (many tensors or small chunks: 100,000 tensors make a
/// ~10 MB index, which level 19 takes 20 s to compress) use [`BIG_LEVEL`].
const SLOW_LEVEL_MAX: usize = 1 << 20;
/// zstd level of an index larger than [`SLOW_LEVEL_MAX`] (40× faster than
/// 19 there, frames ~5% larger).
const BIG_LEVEL: i32 = 9;

/// Most bytes a compressed index may declare per stored byte (spec §4.0.5):
/// real indexes compress 4–7×; a frame of repetitive records compresses
/// over 10,000×, which would let a 100 KB file make a reader decode and
/// allocate gigabytes of index. Declared sizes up to [`EXPANSION_FLOOR`]
/// are allowed whatever the ratio.
pub const MAX_EXPANSION: u64 = 64;
/// Declared size always allowed (16 MiB), see [`MAX_EXPANSION`].
pub const EXPANSION_FLOOR: u64 = 1 << 24;

/// The largest decompressed size a compressed index of `stored_len` bytes
/// may declare (before the reader's own `max_index_bytes`).
pub fn max_declared(stored_len: u64) -> u64 {
    stored_len
        .saturating_mul(MAX_EXPANSION)
        .max(EXPANSION_FLOOR)
}

/// The index's stored bytes and the header flags that describe them: `raw`
/// compressed (flag [`FLAG_INDEX_ZSTD`]) when `compress` is set and the frame
/// is smaller, else `raw` itself (no flag).
pub fn encode(raw: Vec<u8>, compress: bool) -> (Vec<u8>, u32) {
    if !compress {
        return (raw, 0);
    }
    let level = if raw.len() <= SLOW_LEVEL_MAX {
        INDEX_LEVEL
    } else {
        BIG_LEVEL
    };
    match zstd::bulk::compress(&raw, level) {
        // The frame header declares the content size (zstd's bulk API
        // writes it), which readers require: they allocate from it. A frame
        // that expands more than readers accept is not used.
        Ok(frame)
            if frame.len() < raw.len() && raw.len() as u64 <= max_declared(frame.len() as u64) =>
        {
            (frame, FLAG_INDEX_ZSTD)
        }
        _ => (raw, 0),
    }
}

/// Decodes a compressed index's stored bytes into the bincode index bytes.
/// The frame must be a zstd frame (not a skippable one), declare its content
/// size, at most `max_len` (the reader's `max_index_bytes`) and at most
/// [`max_declared`] of the stored length, and be the whole of `stored`;
/// nothing larger than the declared size is allocated or produced.
pub fn decode(stored: &[u8], max_len: u64) -> Result<Vec<u8>, &'static str> {
    if stored.get(..4) != Some(&ZSTD_MAGIC[..]) {
        return Err("the index is not a zstd frame");
    }
    let len = match zstd::zstd_safe::get_frame_content_size(stored) {
        Ok(Some(n)) if n > max_len => {
            return Err("the zstd index declares more bytes than max_index_bytes")
        }
        Ok(Some(n)) if n > max_declared(stored.len() as u64) => {
            return Err("the zstd index declares more than 64 bytes per stored byte")
        }
        Ok(Some(n)) => n,
        Ok(None) => return Err("the zstd index does not declare its size"),
        Err(_) => return Err("the zstd index's frame header is corrupt"),
    };
    let len = usize::try_from(len).map_err(|_| "the zstd index is too large")?;
    let mut out = vec![0u8; len];
    super::stream::zstd_into(stored, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_raw_fallback() {
        let raw: Vec<u8> = (0..4096u32)
            .flat_map(|i| u64::from(i).to_le_bytes())
            .collect();
        let (stored, flags) = encode(raw.clone(), true);
        assert_eq!(flags, FLAG_INDEX_ZSTD);
        assert!(stored.len() < raw.len() / 4);
        assert_eq!(decode(&stored, raw.len() as u64).unwrap(), raw);
        // Too small a limit: refused before allocating.
        assert!(decode(&stored, raw.len() as u64 - 1).is_err());
        // Not asked to compress, or nothing to gain: raw, no flag.
        assert_eq!(encode(raw.clone(), false), (raw, 0));
        let tiny = vec![1u8, 2, 3];
        assert_eq!(encode(tiny.clone(), true), (tiny, 0));
    }

    #[test]
    fn frames_without_a_size_or_with_trailing_bytes_are_refused() {
        let raw = vec![5u8; 1000];
        let (mut stored, _) = encode(raw.clone(), true);
        stored.push(0);
        assert!(decode(&stored, 1 << 20).is_err());
        // A streaming frame (no content size in its header).
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut enc, &raw).unwrap();
        let frame = enc.finish().unwrap();
        assert_eq!(
            decode(&frame, 1 << 20),
            Err("the zstd index does not declare its size")
        );
        assert!(decode(b"garbage!", 1 << 20).is_err());
    }

    #[test]
    fn expansion_is_bounded_and_the_writer_stays_within_it() {
        // 32 MiB of one byte: a frame of a few KiB, over 64x its size and
        // over the 16 MiB floor. Readers refuse it before allocating; the
        // writer stores such an index raw instead.
        let raw = vec![9u8; 32 << 20];
        let frame = zstd::bulk::compress(&raw, 3).unwrap();
        assert!((frame.len() as u64) * MAX_EXPANSION < raw.len() as u64);
        assert_eq!(
            decode(&frame, 1 << 30),
            Err("the zstd index declares more than 64 bytes per stored byte")
        );
        assert_eq!(encode(raw.clone(), true).1, 0);
        // Up to the floor, any ratio.
        let small = vec![9u8; 1 << 20];
        let (stored, flags) = encode(small.clone(), true);
        assert_eq!(flags, FLAG_INDEX_ZSTD);
        assert_eq!(decode(&stored, 1 << 30).unwrap(), small);
        // A skippable frame is not an index.
        let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0];
        skippable.extend_from_slice(&[0; 4]);
        assert_eq!(
            decode(&skippable, 1 << 20),
            Err("the index is not a zstd frame")
        );
    }
}
