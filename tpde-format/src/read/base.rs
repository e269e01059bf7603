//! Where external base tensors come from at read time.

use crate::format::Dtype;

/// A base tensor handed to the reader: its dtype, shape and bytes.
#[derive(Debug, Clone, Copy)]
pub struct BaseTensor<'a> {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: &'a [u64],
    /// Little-endian row-major bytes.
    pub data: &'a [u8],
}

/// Supplies the tensors of an external base checkpoint by name. The reader
/// checks each tensor's SHA-256 against the archive before using it.
pub trait BaseProvider: Sync {
    /// The base tensor called `name`, if this base has one.
    fn base_tensor(&self, name: &str) -> Option<BaseTensor<'_>>;
    /// A short description for error messages (e.g. the path).
    fn describe(&self) -> String {
        String::from("the given base")
    }
}

/// No external base: reading a tensor that needs one fails with
/// [`crate::Error::MissingBase`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBase;

impl BaseProvider for NoBase {
    fn base_tensor(&self, _name: &str) -> Option<BaseTensor<'_>> {
        None
    }
}

/// In-memory base tensors, for tests and embedding runtimes.
impl BaseProvider for std::collections::HashMap<String, (Dtype, Vec<u64>, Vec<u8>)> {
    fn base_tensor(&self, name: &str) -> Option<BaseTensor<'_>> {
        self.get(name).map(|(dtype, shape, data)| BaseTensor {
            dtype: *dtype,
            shape,
            data,
        })
    }
}
