//! Writing archives.

mod plan;
mod source;
mod writer;

pub use source::{ByteSource, Dequantized, FileRange, RowMapped, SliceSource};
pub use writer::{ArchiveWriter, BaseInput, WriteOptions};

/// A temp file in `dir`, for building an output beside its destination and
/// renaming it into place. Named `.tpde-*.partial` so a leftover from a killed
/// process is recognizable; created `0666` less the umask, like any new file
/// (tempfile's default of `0600` would leave archives unreadable to others).
pub(crate) fn temp_file_in(dir: &std::path::Path) -> crate::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(".tpde-")
        .suffix(".partial")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(|e| crate::Error::io(dir, e))
}

/// A temp directory in `dir` (see [`temp_file_in`]).
pub(crate) fn temp_dir_in(dir: &std::path::Path) -> crate::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(".tpde-")
        .suffix(".partial")
        .tempdir_in(dir)
        .map_err(|e| crate::Error::io(dir, e))
}
