//! A summary of an archive for tables and JSON (`tpde inspect`). Derived
//! from the index alone: nothing is decoded.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::hex;
use crate::format::{BaseRef, Codec, Payload, TensorRecord};
use crate::read::Archive;

/// One target tensor's line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TensorSummary {
    /// Name.
    pub name: String,
    /// safetensors dtype name.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Reconstructed bytes.
    pub raw_bytes: u64,
    /// Bytes stored in the archive for this tensor's chunks (inline base not included).
    pub stored_bytes: u64,
    /// raw / stored (0 stored gives `null` in JSON).
    pub ratio: Option<f64>,
    /// Elements that differ from the base.
    pub changed_elements: u64,
    /// changed / elements (`null` for empty tensors).
    pub changed_share: Option<f64>,
    /// Chunk count by encoding, e.g. `{"dense": 3, "zero": 1}`.
    pub encodings: BTreeMap<String, u64>,
    /// Chunk count by combine op.
    pub ops: BTreeMap<String, u64>,
    /// Stream count by codec.
    pub codecs: BTreeMap<String, u64>,
    /// `none`, `inline`, `external`, `inline-widened`, `external-widened`,
    /// `inline-rows`, `external-rows`, `inline-dequant`, `external-dequant`,
    /// `inline-slices` or `external-slices`.
    pub base: String,
    /// The base tensor's name, when there is one.
    pub base_tensor: Option<String>,
    /// For a row-mapped or sliced base (`*-rows`, `*-slices`): target rows
    /// predicted by base rows (the others are predicted by zero).
    pub mapped_rows: Option<u64>,
    /// For a row-mapped or sliced base: elements per row (a sliced base
    /// states its own; a row-mapped base's rows are slices along the first
    /// dimension).
    pub row_elems: Option<u64>,
    /// sha256 of the reconstructed tensor (hex).
    pub sha256: String,
    /// (v1.7) True when each chunk's digest is recorded too, so readers
    /// prove the tensor chunk by chunk in parallel.
    pub chunk_digests: bool,
}

/// The whole archive.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ArchiveSummary {
    /// `major.minor`.
    pub format_version: String,
    /// Archive size in bytes.
    pub archive_bytes: u64,
    /// Target files, with size and sha256.
    pub files: Vec<FileSummary>,
    /// External base files the archive needs.
    pub external_base_files: Vec<FileSummary>,
    /// Inline base tensors and the bytes they occupy.
    pub inline_base: InlineBaseSummary,
    /// Target tensors.
    pub tensors: Vec<TensorSummary>,
    /// Totals over the target tensors.
    pub totals: Totals,
}

/// A file and its digest.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileSummary {
    /// Name.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// sha256 (hex).
    pub sha256: String,
}

/// Inline bases.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InlineBaseSummary {
    /// Number of tensors.
    pub tensors: usize,
    /// Their reconstructed bytes.
    pub raw_bytes: u64,
    /// Their stored bytes.
    pub stored_bytes: u64,
}

/// Totals.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Totals {
    /// Target tensors.
    pub tensors: usize,
    /// Reconstructed bytes of all target tensors.
    pub raw_bytes: u64,
    /// Stored bytes of all target tensors' chunks.
    pub stored_bytes: u64,
    /// Size of the target files / archive size.
    pub ratio_vs_archive: Option<f64>,
    /// Changed elements / elements.
    pub changed_share: Option<f64>,
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn summarize(t: &TensorRecord, bases: &[TensorRecord]) -> TensorSummary {
    let raw = t.byte_len().unwrap_or(0);
    let n = t.elem_count().unwrap_or(0);
    let mut encodings = BTreeMap::new();
    let mut ops = BTreeMap::new();
    let mut codecs = BTreeMap::new();
    let mut changed = 0;
    match &t.payload {
        Payload::Plain { .. } => {
            *encodings.entry("plain".into()).or_default() += 1;
            *codecs.entry("raw".into()).or_default() += 1;
            changed = n;
        }
        Payload::Chunked { chunks, .. } => {
            for c in chunks {
                *encodings.entry(c.kind.name().into()).or_default() += 1;
                if c.stored_len > 0 {
                    *ops.entry(c.op.name().into()).or_default() += 1;
                }
                for s in [&c.positions, &c.values] {
                    match &s.codec {
                        // Per-plane streams count each plane's codec.
                        Codec::PerPlane(planes) => {
                            for p in planes {
                                *codecs.entry(p.codec.name().into()).or_default() += 1;
                            }
                        }
                        codec if s.stored_len > 0 => {
                            *codecs.entry(codec.name().into()).or_default() += 1;
                        }
                        _ => {}
                    }
                }
                changed += c.changed;
            }
        }
    }
    let inline_name = |i: &u32| bases.get(*i as usize).map(|b| b.name.clone());
    let (base, base_tensor) = match &t.base {
        BaseRef::None => ("none", None),
        BaseRef::Inline { index } => ("inline", inline_name(index)),
        BaseRef::External { name, .. } => ("external", Some(name.clone())),
        BaseRef::InlineWidened { index } => ("inline-widened", inline_name(index)),
        BaseRef::ExternalWidened { name, .. } => ("external-widened", Some(name.clone())),
        BaseRef::InlineRows { index, .. } => ("inline-rows", inline_name(index)),
        BaseRef::ExternalRows { name, .. } => ("external-rows", Some(name.clone())),
        BaseRef::InlineDequant { q, .. } => ("inline-dequant", inline_name(q)),
        BaseRef::ExternalDequant { q_name, .. } => ("external-dequant", Some(q_name.clone())),
        BaseRef::InlineSlices { index, .. } => ("inline-slices", inline_name(index)),
        BaseRef::ExternalSlices { name, .. } => ("external-slices", Some(name.clone())),
    };
    let mapped_rows = t.base.rows().map(|r| r.iter().map(|r| r.count).sum());
    let row_elems = t.base.row_map(&t.shape).map(|(_, r)| r);
    let stored = t.stored_bytes();
    TensorSummary {
        name: t.name.clone(),
        dtype: t.dtype.name().into(),
        shape: t.shape.clone(),
        raw_bytes: raw,
        stored_bytes: stored,
        ratio: ratio(raw, stored),
        changed_elements: changed,
        changed_share: (n > 0).then(|| changed as f64 / n as f64),
        encodings,
        ops,
        codecs,
        base: base.into(),
        base_tensor,
        mapped_rows,
        row_elems,
        sha256: hex(&t.sha256),
        chunk_digests: t.payload.has_chunk_digests(),
    }
}

/// Summarizes `a` from its index.
pub fn summarize_archive<D: AsRef<[u8]> + Sync>(a: &Archive<D>) -> ArchiveSummary {
    let idx = a.index();
    let h = a.header();
    let tensors: Vec<TensorSummary> = idx
        .tensors
        .iter()
        .map(|t| summarize(t, &idx.bases))
        .collect();
    let raw: u64 = tensors.iter().map(|t| t.raw_bytes).sum();
    let stored: u64 = tensors.iter().map(|t| t.stored_bytes).sum();
    let elems: u64 = idx
        .tensors
        .iter()
        .map(|t| t.elem_count().unwrap_or(0))
        .sum();
    let changed: u64 = tensors.iter().map(|t| t.changed_elements).sum();
    let file_bytes: u64 = idx.files.iter().map(|f| f.size).sum();
    ArchiveSummary {
        format_version: format!("{}.{}", h.major, h.minor),
        archive_bytes: h.file_len,
        files: idx
            .files
            .iter()
            .map(|f| FileSummary {
                name: f.name.clone(),
                bytes: f.size,
                sha256: hex(&f.sha256),
            })
            .collect(),
        external_base_files: idx
            .base_files
            .iter()
            .map(|f| FileSummary {
                name: f.name.clone(),
                bytes: f.size,
                sha256: hex(&f.sha256),
            })
            .collect(),
        inline_base: InlineBaseSummary {
            tensors: idx.bases.len(),
            raw_bytes: idx.bases.iter().map(|b| b.byte_len().unwrap_or(0)).sum(),
            stored_bytes: idx.bases.iter().map(TensorRecord::stored_bytes).sum(),
        },
        totals: Totals {
            tensors: tensors.len(),
            raw_bytes: raw,
            stored_bytes: stored,
            ratio_vs_archive: ratio(file_bytes, h.file_len),
            changed_share: (elems > 0).then(|| changed as f64 / elems as f64),
        },
        tensors,
    }
}
