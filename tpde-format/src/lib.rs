//! # tpde-format
//!
//! Reader and writer for `.tpde` archives: lossless, delta-compressed model
//! weights. An archive reconstructs a target checkpoint bit-exactly from a
//! base (inline, external, or none) plus chunked deltas. The byte layout is
//! specified in `spec/FORMAT.md`; section numbers in these docs refer to it.
//! This crate reads formats 1.0 to 1.2 and writes the lowest of them that
//! the archive's features need ([`WriteOptions::with_max_minor`]).
//!
//! Layers, from the bytes up:
//! - [`format`](mod@format): on-disk structures as plain data;
//! - [`codec`]: pure functions over bytes (byte planes, gap-encoded
//!   positions, combine ops on bit patterns, exact float widening, row maps
//!   and dequantization (the predictors of row-mapped and quantized bases), zstd and
//!   context-modelled rANS streams, chunk encode/decode) — the low-level
//!   layer another runtime can drive chunk by chunk;
//! - [`digest`]: SHA-256 of a file and of each tensor in it, from one pass;
//! - [`read`] / [`write`](mod@write): the validated archive view and streaming writer;
//! - [`safetensors`]: the input/output adapter;
//! - [`pack`], [`unpack`], [`inspect`]: whole-checkpoint operations.

#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod codec;
pub mod digest;
pub mod error;
pub mod format;
pub mod inspect;
pub mod limits;
pub mod pack;
pub mod read;
pub mod safetensors;
pub mod unpack;
pub mod write;

pub use error::{Error, Location, Result};
pub use format::Dtype;
pub use limits::ReadLimits;
pub use read::{Archive, BaseProvider, NoBase};
pub use write::{ArchiveWriter, WriteOptions};
