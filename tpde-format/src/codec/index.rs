//! The index's stored form (spec §4.0, §8.3): the bincode index as it is,
//! or (v1.3, header flag [`FLAG_INDEX_ZSTD`]) one zstd frame of it.
//!
//! Why compress it: the index is mostly fixed-width integers (chunk
//! descriptors, row maps) that are small numbers in wide fields. On archives
//! of sparse fine-tunes it is 2–3% of the file, and where the whole delta is
//! a row map (a pruned vocabulary) it is all of it; zstd shrinks it 4–7×.

use crate::format::FLAG_INDEX_ZSTD;

/// zstd level of the index: it is small (tens of KiB to a few MiB), so the
/// slow levels cost milliseconds; 19 is within 1% of the best level on the
/// archives measured.
const INDEX_LEVEL: i32 = 19;

/// The index's stored bytes and the header flags that describe them: `raw`
/// compressed (flag [`FLAG_INDEX_ZSTD`]) when `compress` is set and the frame
/// is smaller, else `raw` itself (no flag).
pub fn encode(raw: Vec<u8>, compress: bool) -> (Vec<u8>, u32) {
    if !compress {
        return (raw, 0);
    }
    match zstd::bulk::compress(&raw, INDEX_LEVEL) {
        // The frame header declares the content size (zstd's bulk API
        // writes it), which readers require: they allocate from it.
        Ok(frame) if frame.len() < raw.len() => (frame, FLAG_INDEX_ZSTD),
        _ => (raw, 0),
    }
}

/// Decodes a compressed index's stored bytes into the bincode index bytes.
/// The frame must declare its content size, at most `max_len` (the reader's
/// `max_index_bytes`), and be the whole of `stored`; nothing larger than the
/// declared size is allocated or produced.
pub fn decode(stored: &[u8], max_len: u64) -> Result<Vec<u8>, &'static str> {
    let len = match zstd::zstd_safe::get_frame_content_size(stored) {
        Ok(Some(n)) if n <= max_len => n,
        Ok(Some(_)) => return Err("the zstd index declares more bytes than max_index_bytes"),
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
}
