//! Writing archives.

mod source;
mod writer;

pub use source::{ByteSource, FileRange, SliceSource};
pub use writer::{ArchiveWriter, BaseInput, WriteOptions};
