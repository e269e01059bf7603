//! Packing a safetensors checkpoint (against an optional base) into an archive.

use std::io::Read;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::format::{BaseFile, Digest, FileRecord};
use crate::safetensors::{Checkpoint, SourceFile};
use crate::write::{ArchiveWriter, BaseInput, ByteSource, WriteOptions};

/// How the base is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaseMode {
    /// Embed the base tensors the target needs, compressed.
    #[default]
    Inline,
    /// Embed them uncompressed and aligned, for zero-copy mapping.
    InlinePlain,
    /// Do not embed; record digests. Reading needs the base file(s).
    External,
}

/// Options for [`pack`].
#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// Writer options (level, chunk size, overwrite).
    pub write: WriteOptions,
    /// How the base is kept.
    pub base_mode: BaseMode,
}

/// What [`pack`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackReport {
    /// Archive size in bytes.
    pub archive_bytes: u64,
    /// Size of the target checkpoint's files.
    pub target_bytes: u64,
    /// Target tensors.
    pub tensors: usize,
    /// Target tensors stored as a delta against a base tensor.
    pub delta_tensors: usize,
}

/// Packs `target` against `base` into `out`. `progress` is called with the
/// number of target bytes consumed as the work advances.
pub fn pack(
    target: &Checkpoint,
    base: Option<&Checkpoint>,
    out: &Path,
    opts: &PackOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<PackReport> {
    let mut w = ArchiveWriter::create(
        out,
        opts.write
            .clone()
            .with_plain_bases(opts.base_mode == BaseMode::InlinePlain),
    )?;
    let mut report = PackReport {
        target_bytes: target.total_bytes(),
        ..PackReport::default()
    };
    // External base: record each base file's digest for messages.
    let mut base_file_ids = Vec::new();
    if let (Some(b), BaseMode::External) = (base, opts.base_mode) {
        for f in &b.files {
            let sha256 = file_sha256(&f.path)?;
            base_file_ids.push(w.add_base_file(BaseFile {
                name: f.name.clone(),
                size: f.size(),
                sha256,
            }));
        }
    }
    for f in &target.files {
        let mut file_sha = Sha256::new();
        file_sha.update((f.header_len as u64).to_le_bytes());
        file_sha.update(f.header());
        let mut ids = Vec::with_capacity(f.tensors.len());
        for t in &f.tensors {
            let src = f.source(t);
            let matched = base.and_then(|b| {
                let (bf, bt) = b.tensor(&t.name)?;
                (bt.dtype == t.dtype && bt.shape == t.shape).then_some((b, bf, bt))
            });
            let mut on_bytes = |bytes: &[u8]| {
                file_sha.update(bytes);
                progress(bytes.len() as u64);
            };
            let id = match matched {
                None => w.add_tensor(
                    &t.name,
                    t.dtype,
                    &t.shape,
                    &src,
                    BaseInput::None,
                    &mut on_bytes,
                )?,
                Some((b, bf, bt)) => {
                    report.delta_tensors += 1;
                    let bsrc = bf.source(bt);
                    let input = match opts.base_mode {
                        BaseMode::External => {
                            let fi = b
                                .files
                                .iter()
                                .position(|x| std::ptr::eq(x, bf))
                                .unwrap_or(0);
                            BaseInput::External {
                                file: base_file_ids.get(fi).copied().unwrap_or(0),
                                name: &bt.name,
                                sha256: source_sha256(&bsrc, bt.len)?,
                                source: &bsrc,
                            }
                        }
                        BaseMode::Inline | BaseMode::InlinePlain => BaseInput::Inline {
                            index: w.add_base(&bt.name, bt.dtype, &bt.shape, &bsrc)?,
                            source: &bsrc,
                        },
                    };
                    w.add_tensor(&t.name, t.dtype, &t.shape, &src, input, &mut on_bytes)?
                }
            };
            ids.push(id);
        }
        w.add_file(FileRecord {
            name: f.name.clone(),
            size: f.size(),
            sha256: file_sha.finalize().into(),
            header: f.header().to_vec(),
            tensors: ids,
        });
        check_unchanged(f)?;
    }
    for (name, contents) in &target.extra_files {
        w.add_extra_file(name.clone(), contents.clone());
    }
    report.tensors = w.tensor_count();
    report.archive_bytes = w.finish()?;
    Ok(report)
}

/// The input must not change while it is packed: a size change is caught
/// here, a content change by the digest check at unpack.
fn check_unchanged(f: &SourceFile) -> Result<()> {
    let now = f.file.metadata().map_err(|e| Error::io(&f.path, e))?.len();
    if now != f.size() {
        return Err(Error::BadInput {
            path: f.path.clone(),
            reason: "file changed size while it was being packed".into(),
        });
    }
    Ok(())
}

/// SHA-256 of a whole file, streamed.
pub fn file_sha256(path: &Path) -> Result<Digest> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

fn source_sha256(src: &dyn ByteSource, len: u64) -> Result<Digest> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; len.min(4 << 20) as usize];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        src.read_at(off, &mut buf[..n])
            .map_err(|e| Error::io(src.path(), e))?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(h.finalize().into())
}
