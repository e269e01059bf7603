//! Codecs: pure functions over byte slices (spec §5–§6). No I/O here.

pub mod chunk;
pub mod combine;
pub mod dequant;
pub mod entropy;
pub mod index;
pub mod planes;
pub mod positions;
#[cfg(target_arch = "x86_64")]
mod rans_avx2;
pub mod rans_layout;
pub mod rows;
pub mod stream;
pub mod widen;
