//! Byte sources the writer pulls tensor data from, range by range, so a
//! checkpoint is never held in memory whole.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::codec::{dequant, rows};
use crate::format::{RowRun, ScaleAxis};

/// Random-access bytes of one tensor.
pub trait ByteSource: Sync {
    /// Fills `buf` with the bytes at `offset` (relative to the tensor start).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
    /// Path for error messages.
    fn path(&self) -> &Path;
}

/// An in-memory tensor.
#[derive(Debug, Clone, Copy)]
pub struct SliceSource<'a>(pub &'a [u8]);

impl ByteSource for SliceSource<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let src = self
            .0
            .get(start..start.saturating_add(buf.len()))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn path(&self) -> &Path {
        Path::new("<memory>")
    }
}

/// A byte range of a file read with positioned reads (`pread`): no mmap, so
/// resident memory stays at the size of the buffers in flight.
#[derive(Debug)]
pub struct FileRange<'a> {
    /// The open file.
    pub file: &'a File,
    /// Its path, for messages.
    pub path: &'a PathBuf,
    /// Offset of the tensor's first byte in the file.
    pub offset: u64,
}

impl ByteSource for FileRange<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, self.offset + offset)
    }
    fn path(&self) -> &Path {
        self.path
    }
}

/// (v1.2) The predictor of a row-mapped base (spec §6.3) as a byte source:
/// target bytes read from the base rows that predict them, zero elsewhere.
pub struct RowMapped<'a> {
    /// The base tensor's bytes.
    pub base: &'a dyn ByteSource,
    /// The row map (checked with [`crate::codec::rows::check`]).
    pub rows: &'a [RowRun],
    /// Bytes per row.
    pub row_bytes: u64,
}

impl std::fmt::Debug for RowMapped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowMapped")
            .field("base", &self.base.path())
            .field("runs", &self.rows.len())
            .field("row_bytes", &self.row_bytes)
            .finish()
    }
}

impl ByteSource for RowMapped<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        buf.fill(0);
        let range = offset..offset + buf.len() as u64;
        for s in rows::segments(self.rows, self.row_bytes, range) {
            let at = (s.target - offset) as usize;
            self.base
                .read_at(s.base, &mut buf[at..at + s.len as usize])?;
        }
        Ok(())
    }
    fn path(&self) -> &Path {
        self.base.path()
    }
}

/// (v1.2) The predictor of a quantized base (spec §6.4) as a byte source
/// over the target's F32 bytes: codes and the scales they use, multiplied.
pub struct Dequantized<'a> {
    /// The codes (one byte per element).
    pub q: &'a dyn ByteSource,
    /// True for I8 codes.
    pub signed: bool,
    /// The F32 scales.
    pub scale: &'a dyn ByteSource,
    /// Which elements share a scale.
    pub axis: ScaleAxis,
    /// Elements per row of the target.
    pub row_elems: u64,
}

impl std::fmt::Debug for Dequantized<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dequantized")
            .field("q", &self.q.path())
            .field("axis", &self.axis)
            .finish()
    }
}

impl ByteSource for Dequantized<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if offset % 4 != 0 || buf.len() % 4 != 0 {
            return Err(std::io::Error::other("unaligned read of an F32 predictor"));
        }
        let range = offset / 4..(offset + buf.len() as u64) / 4;
        let mut q = vec![0u8; buf.len() / 4];
        self.q.read_at(range.start, &mut q)?;
        let sr = dequant::scale_range(self.axis, self.row_elems, range.clone());
        let mut scales = vec![0u8; ((sr.end - sr.start) * 4) as usize];
        self.scale.read_at(sr.start * 4, &mut scales)?;
        dequant::predict(
            &q,
            self.signed,
            &scales,
            sr.start,
            self.axis,
            self.row_elems,
            range.start,
            buf,
        );
        Ok(())
    }
    fn path(&self) -> &Path {
        self.q.path()
    }
}
