//! Reading archives: validation, random access, parallel decode.

mod archive;
mod base;
pub mod validate;

pub use archive::{check_tensor_digest, Archive, BaseView, DequantView, Table, WidenSource};
pub use base::{BaseProvider, BaseTensor, NoBase};
