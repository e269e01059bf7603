//! The fixed 64-byte file header (spec §2).

use crate::error::{Error, Result};

/// Magic bytes at offset 0. The high-bit first byte and the CR LF / SUB tail
/// catch 7-bit and text-mode transfers, as PNG's signature does.
pub const MAGIC: [u8; 8] = *b"\x89TPDE\r\n\x1a";
/// Length of the header in bytes; the data section starts here.
pub const HEADER_LEN: usize = 64;
/// Format major version this crate writes and reads. Readers refuse any other major.
pub const VERSION_MAJOR: u16 = 1;
/// Newest format minor version this crate reads and writes. Writers record the
/// lowest minor whose features a file uses; readers refuse a newer minor than
/// they know (spec §8), since it may hold variants they cannot decode.
pub const VERSION_MINOR: u16 = 7;
/// Alignment of every blob in the data section and of the index (spec §3).
pub const ALIGN: u64 = 64;
/// Flag bits 0..16 are "required": a reader that does not know a set bit must refuse the file.
pub const REQUIRED_FLAGS_MASK: u32 = 0x0000_ffff;
/// Required flag bit 0 (v1.3): the index is stored as one zstd frame
/// (spec §4.0, §8.3). Only valid with `minor >= 3`.
pub const FLAG_INDEX_ZSTD: u32 = 1;
/// Required flags this version knows.
pub const KNOWN_REQUIRED_FLAGS: u32 = FLAG_INDEX_ZSTD;

/// Decoded header fields (spec §2). Plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format major version.
    pub major: u16,
    /// Format minor version.
    pub minor: u16,
    /// Feature flags.
    pub flags: u32,
    /// Total length of the file in bytes.
    pub file_len: u64,
    /// Offset of the index.
    pub index_offset: u64,
    /// Length of the index in bytes.
    pub index_len: u64,
    /// Blob alignment; MUST be 64 in v1.
    pub align: u32,
    /// CRC-32 over header bytes 0..60 followed by the index bytes.
    pub crc32: u32,
}

impl Header {
    /// Serializes to the 64-byte on-disk form (with `self.crc32` as given).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.major.to_le_bytes());
        b[10..12].copy_from_slice(&self.minor.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.file_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.index_offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.index_len.to_le_bytes());
        b[40..44].copy_from_slice(&self.align.to_le_bytes());
        b[60..64].copy_from_slice(&self.crc32.to_le_bytes());
        b
    }

    /// Parses the first 64 bytes of `file`, checking magic, version, flags,
    /// alignment and reserved bytes (spec §2). The CRC is checked by the reader
    /// once the index is in hand.
    pub fn parse(file: &[u8]) -> Result<Header> {
        let Some(b) = file.get(..HEADER_LEN) else {
            return Err(Error::NotAnArchive {
                reason: "shorter than the 64-byte header",
            });
        };
        if b[0..8] != MAGIC {
            return Err(Error::NotAnArchive {
                reason: "bad magic bytes",
            });
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let h = Header {
            major: u16_at(8),
            minor: u16_at(10),
            flags: u32_at(12),
            file_len: u64_at(16),
            index_offset: u64_at(24),
            index_len: u64_at(32),
            align: u32_at(40),
            crc32: u32_at(60),
        };
        // The major decides the layout, so it is checked first; the minor
        // and flags are checked by `check_features` once the CRC has shown
        // the header is intact (a corrupted minor is damage, not a newer file).
        if h.major != VERSION_MAJOR {
            return Err(Error::UnsupportedVersion {
                major: h.major,
                minor: h.minor,
            });
        }
        if u64::from(h.align) != ALIGN || b[44..60].iter().any(|&x| x != 0) {
            return Err(Error::BadHeader {
                reason: "alignment must be 64 and reserved bytes 44..60 zero",
            });
        }
        Ok(h)
    }

    /// Refuses a newer minor than this reader knows, and unknown required
    /// flags (spec §8). Call after the CRC check.
    pub fn check_features(&self) -> Result<()> {
        if self.minor > VERSION_MINOR {
            return Err(Error::UnsupportedVersion {
                major: self.major,
                minor: self.minor,
            });
        }
        let unknown = self.flags & REQUIRED_FLAGS_MASK & !KNOWN_REQUIRED_FLAGS;
        if unknown != 0 {
            return Err(Error::UnknownFlags { flags: unknown });
        }
        // A flag is part of the minor that defines it (spec §8.2.3): a
        // minor-2 file with a compressed index breaks §8.2.1, and a 1.2
        // reader would refuse it, so this reader does too.
        if self.flags & FLAG_INDEX_ZSTD != 0 && self.minor < 3 {
            return Err(Error::BadHeader {
                reason:
                    "flag 0x1 (zstd index) in a file whose header says minor 0 to 2 (spec §8.2.3)",
            });
        }
        Ok(())
    }

    /// CRC-32 over header bytes 0..60 followed by `index` (spec §2).
    pub fn compute_crc(&self, index: &[u8]) -> u32 {
        let bytes = self.to_bytes();
        let mut h = crc32fast::Hasher::new();
        h.update(&bytes[..60]);
        h.update(index);
        h.finalize()
    }
}

/// Rounds `x` up to the next multiple of [`ALIGN`], or `None` on overflow.
pub fn align_up(x: u64) -> Option<u64> {
    x.checked_add(ALIGN - 1).map(|v| v & !(ALIGN - 1))
}
