//! The safetensors adapter: single files and sharded checkpoint directories
//! (`*.safetensors.index.json` + shards), parsed with the `safetensors` crate.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::Dtype;
use crate::read::validate::is_safe_file_name;
use crate::read::{BaseProvider, BaseTensor};
use crate::write::FileRange;

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTensor {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<u64>,
    /// Absolute offset of its first byte in the file.
    pub offset: u64,
    /// Byte length.
    pub len: u64,
}

/// One safetensors file, memory-mapped.
#[derive(Debug)]
pub struct SourceFile {
    /// File name (one path component).
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// The open file (for positioned reads).
    pub file: File,
    map: memmap2::Mmap,
    /// Length of the JSON header (the `N` of the 8-byte prefix).
    pub header_len: usize,
    /// Tensors in the order of their data.
    pub tensors: Vec<SourceTensor>,
}

impl SourceFile {
    /// Opens and parses one safetensors file.
    pub fn open(path: &Path) -> Result<SourceFile> {
        let bad = |reason: String| Error::BadInput {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only map of an input file; if another process changes
        // it meanwhile, the file digest recorded at pack time (and checked at
        // unpack) exposes it. Only the header pages are touched here; tensor
        // bytes are read with pread by the writer.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (n, meta) = ::safetensors::SafeTensors::read_metadata(&map)
            .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let base = 8 + n as u64;
        let infos = meta.tensors();
        let mut tensors = Vec::with_capacity(infos.len());
        for name in meta.offset_keys() {
            let Some(info) = infos.get(&name) else {
                continue;
            };
            let dname = format!("{:?}", info.dtype);
            let dtype = Dtype::from_name(&dname).ok_or_else(|| {
                bad(format!(
                    "tensor {name:?}: dtype {dname} is not supported by tpde v1"
                ))
            })?;
            tensors.push(SourceTensor {
                name,
                dtype,
                shape: info.shape.iter().map(|&d| d as u64).collect(),
                offset: base + info.data_offsets.0 as u64,
                len: (info.data_offsets.1 - info.data_offsets.0) as u64,
            });
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| is_safe_file_name(n))
            .ok_or_else(|| bad("file name is not valid UTF-8".into()))?
            .to_owned();
        Ok(SourceFile {
            name,
            path: path.to_path_buf(),
            file,
            map,
            header_len: n,
            tensors,
        })
    }

    /// The JSON header bytes, verbatim (padding included).
    pub fn header(&self) -> &[u8] {
        &self.map[8..8 + self.header_len]
    }

    /// Size of the file.
    pub fn size(&self) -> u64 {
        self.map.len() as u64
    }

    /// The whole file, mapped.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// A positioned-read source over one tensor.
    pub fn source(&self, t: &SourceTensor) -> FileRange<'_> {
        FileRange {
            file: &self.file,
            path: &self.path,
            offset: t.offset,
        }
    }
}

/// A checkpoint: one safetensors file, or a sharded directory.
#[derive(Debug)]
pub struct Checkpoint {
    /// The path given.
    pub root: PathBuf,
    /// True for a sharded directory.
    pub sharded: bool,
    /// The safetensors files, shards in name order.
    pub files: Vec<SourceFile>,
    /// Other files reproduced verbatim (the shard index JSON).
    pub extra_files: Vec<(String, Vec<u8>)>,
    by_name: HashMap<String, (usize, usize)>,
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

impl Checkpoint {
    /// Opens a `.safetensors` file or a directory holding exactly one
    /// `*.safetensors.index.json` and the shards it names.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let (sharded, files, extra_files) = if meta.is_dir() {
            let bad = |reason: String| Error::BadInput {
                path: path.to_path_buf(),
                reason,
            };
            let mut indexes = Vec::new();
            for e in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
                let e = e.map_err(|e| Error::io(path, e))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".safetensors.index.json") {
                    indexes.push(name);
                }
            }
            let [index_name] = indexes.as_slice() else {
                return Err(bad(format!(
                    "a checkpoint directory needs exactly one *.safetensors.index.json (found {})",
                    indexes.len()
                )));
            };
            let index_path = path.join(index_name);
            let raw = std::fs::read(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let idx: ShardIndex =
                serde_json::from_slice(&raw).map_err(|e| bad(format!("{index_name}: {e}")))?;
            let mut shards: Vec<&String> = idx.weight_map.values().collect();
            shards.sort();
            shards.dedup();
            let mut files = Vec::with_capacity(shards.len());
            for s in shards {
                if !is_safe_file_name(s) {
                    return Err(bad(format!(
                        "{index_name} names shard {s:?} outside the directory"
                    )));
                }
                files.push(SourceFile::open(&path.join(s))?);
            }
            (true, files, vec![(index_name.clone(), raw)])
        } else {
            (false, vec![SourceFile::open(path)?], Vec::new())
        };
        let mut by_name = HashMap::new();
        for (fi, f) in files.iter().enumerate() {
            for (ti, t) in f.tensors.iter().enumerate() {
                if by_name.insert(t.name.clone(), (fi, ti)).is_some() {
                    return Err(Error::BadInput {
                        path: path.to_path_buf(),
                        reason: format!("tensor {:?} appears in more than one shard", t.name),
                    });
                }
            }
        }
        Ok(Checkpoint {
            root: path.to_path_buf(),
            sharded,
            files,
            extra_files,
            by_name,
        })
    }

    /// The tensor called `name` and the file holding it.
    pub fn tensor(&self, name: &str) -> Option<(&SourceFile, &SourceTensor)> {
        let &(fi, ti) = self.by_name.get(name)?;
        let f = self.files.get(fi)?;
        Some((f, f.tensors.get(ti)?))
    }

    /// Total bytes of all safetensors files.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(SourceFile::size).sum()
    }
}

impl BaseProvider for Checkpoint {
    fn base_tensor(&self, name: &str) -> Option<BaseTensor<'_>> {
        let (f, t) = self.tensor(name)?;
        let data = f
            .bytes()
            .get(t.offset as usize..(t.offset + t.len) as usize)?;
        Some(BaseTensor {
            dtype: t.dtype,
            shape: &t.shape,
            data,
        })
    }
    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// A safetensors header for `tensors` laid out back to back in this order,
/// padded with spaces to a multiple of 8 bytes as the reference writer does.
pub fn make_header(tensors: &[(&str, Dtype, &[u64])]) -> Vec<u8> {
    use serde_json::{Map, Value};
    let mut m = Map::new();
    let mut off = 0u64;
    for (name, dtype, shape) in tensors {
        let len = shape.iter().product::<u64>() * dtype.width() as u64;
        let mut t = Map::new();
        t.insert("dtype".into(), Value::from(dtype.name()));
        t.insert("shape".into(), Value::from(shape.to_vec()));
        t.insert("data_offsets".into(), Value::from(vec![off, off + len]));
        m.insert((*name).to_owned(), Value::Object(t));
        off += len;
    }
    let mut h = serde_json::to_vec(&Value::Object(m)).unwrap_or_default();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    h
}

/// True when `header`, a safetensors JSON header, describes exactly
/// `tensors` in data order: the same names, dtypes and shapes, with data
/// offsets that tile the data section from 0. [`crate::unpack::Digests::Parts`]
/// proves a file through its tensors' digests; this check is what ties the
/// header bytes (taken from the index, under its CRC) to those tensors.
/// Without it (a header edited and the index CRC recomputed, or one the
/// `safetensors` crate does not parse) the file digest is checked instead.
pub(crate) fn header_describes(header: &[u8], tensors: &[&crate::format::TensorRecord]) -> bool {
    let Ok(meta) = serde_json::from_slice::<::safetensors::tensor::Metadata>(header) else {
        return false;
    };
    // Records are looked up by name (names are unique, §4.4, and the counts
    // are equal: a bijection), not zipped with the header's offset order,
    // in which empty tensors sharing an offset may come in any order.
    let infos = meta.tensors();
    if infos.len() != tensors.len() {
        return false;
    }
    let mut cursor = 0u64;
    for rec in tensors {
        let Some(info) = infos.get(&rec.name) else {
            return false;
        };
        let len = rec.byte_len().unwrap_or(u64::MAX);
        let (start, end) = (info.data_offsets.0 as u64, info.data_offsets.1 as u64);
        let shape: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
        if Dtype::from_name(&format!("{:?}", info.dtype)) != Some(rec.dtype)
            || shape != rec.shape
            || start != cursor
            || end.checked_sub(start) != Some(len)
        {
            return false;
        }
        cursor = end;
    }
    true
}
