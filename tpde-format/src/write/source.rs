//! Byte sources the writer pulls tensor data from, range by range, so a
//! checkpoint is never held in memory whole.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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
