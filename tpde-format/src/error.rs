//! The crate's one error type. Variants are grouped by who is at fault and
//! carry typed fields so callers (and tests) can match the exact failure.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong reading or writing an archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- the environment -------------------------------------------------
    /// An I/O error on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The output exists and overwriting was not asked for.
    #[error("{path} already exists (pass --force to overwrite)")]
    OutputExists {
        /// The existing path.
        path: PathBuf,
    },

    // ---- the archive is not one we can read (spec §2) --------------------
    /// Not a `.tpde` file at all.
    #[error("not a tpde archive: {reason}")]
    NotAnArchive {
        /// What was wrong.
        reason: &'static str,
    },
    /// A major version this reader does not know (spec §8).
    #[error("unsupported tpde format version {major}.{minor} (this reader knows 1.0 to 1.4)")]
    UnsupportedVersion {
        /// Major version in the file.
        major: u16,
        /// Minor version in the file.
        minor: u16,
    },
    /// Required feature flags this reader does not know (spec §2).
    #[error("archive needs unknown features (required flags {flags:#06x})")]
    UnknownFlags {
        /// The unknown required bits.
        flags: u32,
    },
    /// A malformed header field (spec §2).
    #[error("bad header: {reason}")]
    BadHeader {
        /// What was wrong.
        reason: &'static str,
    },

    // ---- the archive is damaged -----------------------------------------
    /// The file is shorter or longer than its header says (spec §2).
    #[error("archive is {actual} bytes but its header says {expected}: truncated or appended to")]
    LengthMismatch {
        /// Length recorded in the header.
        expected: u64,
        /// Actual length.
        actual: u64,
    },
    /// The header+index CRC does not match (spec §2).
    #[error("header/index checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    IndexChecksum {
        /// CRC in the header.
        stored: u32,
        /// CRC computed over the bytes read.
        computed: u32,
    },
    /// The index bytes do not decode (spec §4.0).
    #[error("index does not decode: {reason}")]
    IndexDecode {
        /// The decoder's message.
        reason: String,
    },
    /// The index decodes but breaks a rule of the spec.
    #[error("invalid index at {location}: {reason}")]
    InvalidIndex {
        /// Where: tensor, chunk or file.
        location: Location,
        /// Which rule.
        reason: &'static str,
    },
    /// Blobs overlap, leave gaps, run past the index, or padding is not zero (spec §3).
    #[error("invalid data layout at byte {offset}: {reason}")]
    BadLayout {
        /// Offset where the problem starts.
        offset: u64,
        /// Which rule.
        reason: &'static str,
    },
    /// A chunk's stored bytes fail their CRC (spec §5.1).
    #[error("checksum mismatch in {location}: stored {stored:#010x}, computed {computed:#010x}")]
    ChunkChecksum {
        /// The tensor and chunk.
        location: Location,
        /// CRC in the index.
        stored: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
    /// A chunk's streams do not decode to what the index declares (spec §5).
    #[error("cannot decode {location}: {reason}")]
    ChunkDecode {
        /// The tensor and chunk.
        location: Location,
        /// What was wrong.
        reason: &'static str,
    },
    /// A reconstructed tensor does not have the digest recorded at pack time.
    #[error(
        "tensor {tensor:?} reconstructs to sha256 {actual} but the archive recorded {expected}"
    )]
    TensorDigest {
        /// Tensor name.
        tensor: String,
        /// Recorded digest (hex).
        expected: String,
        /// Computed digest (hex).
        actual: String,
    },
    /// (v1.7) A reconstructed chunk does not have the digest recorded at
    /// pack time.
    #[error("{location} reconstructs to sha256 {actual} but the archive recorded {expected}")]
    ChunkDigest {
        /// The tensor and chunk.
        location: Location,
        /// Recorded digest (hex).
        expected: String,
        /// Computed digest (hex).
        actual: String,
    },
    /// A reconstructed file does not have the digest recorded at pack time.
    #[error("file {file:?} reconstructs to sha256 {actual} but the archive recorded {expected}")]
    FileDigest {
        /// File name.
        file: String,
        /// Recorded digest (hex).
        expected: String,
        /// Computed digest (hex).
        actual: String,
    },

    /// The reconstruction is not identical to the original it was compared
    /// with (`verify --against`): a verification failure, so it counts as
    /// corruption for exit codes, unlike a malformed input ([`Error::BadInput`]).
    #[error("{path}: {reason}")]
    NotIdentical {
        /// The original file or checkpoint compared with.
        path: PathBuf,
        /// How it differs.
        reason: String,
    },

    // ---- limits (raise them in ReadLimits if the file is trusted) --------
    /// A declared size or count exceeds a [`crate::ReadLimits`] limit.
    #[error(
        "{what} is {value}, over the limit of {limit} (raise ReadLimits::{what} for trusted files)"
    )]
    LimitExceeded {
        /// The `ReadLimits` field.
        what: &'static str,
        /// The declared value.
        value: u64,
        /// The limit in force.
        limit: u64,
    },

    // ---- the caller ------------------------------------------------------
    /// The archive needs an external base and none (or not this tensor) was given.
    #[error("archive needs its base to rebuild tensor {tensor:?}: pass --base {file} (expected sha256 {file_sha256})")]
    MissingBase {
        /// Target tensor.
        tensor: String,
        /// Base file name recorded at pack time.
        file: String,
        /// Its SHA-256 (hex).
        file_sha256: String,
    },
    /// The given base tensor is not the one the archive was packed against.
    #[error("base tensor {tensor:?} has sha256 {actual}, but the archive was packed against {expected}: wrong --base")]
    BaseMismatch {
        /// Base tensor name.
        tensor: String,
        /// Recorded digest (hex).
        expected: String,
        /// Digest of what was given (hex).
        actual: String,
    },
    /// No tensor of that name.
    #[error("no tensor named {name:?} in the archive")]
    NoSuchTensor {
        /// The name asked for.
        name: String,
    },
    /// An input safetensors file or checkpoint directory is malformed or unsupported.
    #[error("{path}: {reason}")]
    BadInput {
        /// The input path.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Invalid arguments or options.
    #[error("{0}")]
    Usage(String),
}

/// Where in an archive an error was found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// The archive as a whole.
    Archive,
    /// A target file record.
    File {
        /// File name (lossy if hostile).
        name: String,
    },
    /// A target tensor (or, with `base: true`, an inline base tensor).
    Tensor {
        /// Tensor name.
        name: String,
        /// True for an inline base tensor.
        base: bool,
    },
    /// One chunk of a tensor.
    Chunk {
        /// Tensor name.
        tensor: String,
        /// True for an inline base tensor.
        base: bool,
        /// Chunk number within the tensor.
        chunk: u64,
    },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let which = |base: bool| if base { "base tensor" } else { "tensor" };
        match self {
            Location::Archive => f.write_str("archive"),
            Location::File { name } => write!(f, "file {name:?}"),
            Location::Tensor { name, base } => write!(f, "{} {name:?}", which(*base)),
            Location::Chunk {
                tensor,
                base,
                chunk,
            } => write!(f, "{} {tensor:?} chunk {chunk}", which(*base)),
        }
    }
}

impl Error {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the archive itself is damaged or hostile (CLI exit code 1),
    /// as opposed to usage or environment errors (exit code 2).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::NotAnArchive { .. }
                | Error::UnsupportedVersion { .. }
                | Error::UnknownFlags { .. }
                | Error::BadHeader { .. }
                | Error::LengthMismatch { .. }
                | Error::IndexChecksum { .. }
                | Error::IndexDecode { .. }
                | Error::InvalidIndex { .. }
                | Error::BadLayout { .. }
                | Error::ChunkChecksum { .. }
                | Error::ChunkDecode { .. }
                | Error::TensorDigest { .. }
                | Error::ChunkDigest { .. }
                | Error::FileDigest { .. }
                | Error::NotIdentical { .. }
                | Error::LimitExceeded { .. }
                | Error::BaseMismatch { .. }
        )
    }
}

/// Lower-case hex of a digest.
pub fn hex(d: &[u8]) -> String {
    use std::fmt::Write;
    d.iter()
        .fold(String::with_capacity(d.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
