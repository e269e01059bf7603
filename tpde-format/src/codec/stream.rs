//! Stream compression (spec §5.3): one zstd frame, or the bytes as they are
//! when compression does not pay.

use std::cell::RefCell;

use crate::format::{Codec, Stream};

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `raw` at zstd `level` and appends the stored form to `out`.
/// Falls back to [`Codec::Raw`] when the frame would not be smaller.
/// Deterministic: same bytes and level give the same output on any thread.
pub fn compress(raw: &[u8], level: i32, out: &mut Vec<u8>) -> Stream {
    let raw_len = raw.len() as u64;
    if raw.is_empty() {
        return Stream::EMPTY;
    }
    let packed = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
        }
        c.as_mut().and_then(|(_, z)| z.compress(raw).ok())
    });
    match packed {
        Some(p) if p.len() < raw.len() => {
            out.extend_from_slice(&p);
            Stream {
                stored_len: p.len() as u64,
                raw_len,
                codec: Codec::Zstd,
            }
        }
        _ => {
            out.extend_from_slice(raw);
            Stream {
                stored_len: raw_len,
                raw_len,
                codec: Codec::Raw,
            }
        }
    }
}

/// Decompresses one stream into `out` (resized to `stream.raw_len`, which the
/// caller has bounded by the limits). The zstd frame is decoded into a buffer
/// of exactly the declared size, so a frame that expands further fails rather
/// than allocating (no decompression bombs); one that yields fewer bytes fails too.
pub fn decompress(stream: &Stream, stored: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    let raw_len = usize::try_from(stream.raw_len).map_err(|_| "raw length too large")?;
    match stream.codec {
        Codec::Raw => {
            if stored.len() != raw_len {
                return Err("raw stream length differs from its declared length");
            }
            out.clear();
            out.extend_from_slice(stored);
            Ok(())
        }
        Codec::Zstd => {
            // A frame that declares its content size must declare exactly
            // `raw_len`: refuse a mismatch before allocating anything.
            match zstd::zstd_safe::get_frame_content_size(stored) {
                Ok(Some(n)) if n != stream.raw_len => {
                    return Err("zstd frame declares a size other than the stream's raw length")
                }
                Err(_) => return Err("zstd frame header is corrupt"),
                _ => {}
            }
            out.clear();
            out.resize(raw_len, 0);
            let n = DECOMPRESSOR.with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = zstd::bulk::Decompressor::new().ok();
                }
                match d.as_mut() {
                    Some(d) => d
                        .decompress_to_buffer(stored, out.as_mut_slice())
                        .map_err(|_| "zstd frame is corrupt or larger than declared"),
                    None => Err("cannot create a zstd decoder"),
                }
            })?;
            if n != raw_len {
                return Err("zstd frame is shorter than declared");
            }
            Ok(())
        }
    }
}
