//! Helpers shared by the integration tests.

pub mod hostile;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The example pair shipped in the repo.
pub fn example(name: &str) -> PathBuf {
    repo_root().join("examples/silero-vad").join(name)
}

/// `../shared` beside the repo, when present.
pub fn shared() -> Option<PathBuf> {
    let p = repo_root().join("../shared");
    p.is_dir().then_some(p)
}

/// Hex SHA-256 of a file.
pub fn sha256_file(p: &Path) -> String {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    hex(&Sha256::digest(&bytes))
}

/// Lower-case hex.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The golden vectors of format v1.
pub fn vectors_v1() -> PathBuf {
    repo_root().join("tests/vectors/v1")
}

/// A small deterministic PRNG (splitmix64) for test inputs: no dependency,
/// and the same seed gives the same bytes on every platform.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// A weight-like float of `w` bytes (8: F64, 4: F32, else BF16): random sign and
/// mantissa, exponent 121 or 122 (|x| in [2^-6, 2^-4)). The exponent's
/// last bit is set by its upper bits, so it costs nothing once the
/// exponent sits whole in one plane (`ReplaceRot`), and a full bit when
/// it shares a plane with seven mantissa bits (`Replace`).
pub fn weight_bits(rng: &mut Rng, w: usize) -> u64 {
    let exp = 121 + rng.below(2);
    let sign = rng.below(2);
    match w {
        // F64: exponent 1000 to 1015. Unrotated, its low 4 bits make the
        // second plane noise (stored raw) and the top plane holds the sign
        // and exponent bits 10-4 (2 bits of entropy); rotated, the top
        // plane is exponent bits 10-3, whose bit 3 follows from the rest
        // (1 bit): ReplaceRot wins by the sign's bit.
        8 => sign << 63 | (1000 + rng.below(16)) << 52 | (rng.next_u64() & 0xf_ffff_ffff_ffff),
        4 => sign << 31 | exp << 23 | (rng.next_u64() & 0x7f_ffff),
        _ => sign << 15 | exp << 7 | (rng.next_u64() & 0x7f),
    }
}

/// One tensor for [`safetensors_bytes`]: name, dtype, shape, little-endian bytes.
pub type TensorData = (String, tpde_format::Dtype, Vec<u64>, Vec<u8>);

/// A safetensors file holding `tensors` back to back in this order, with the
/// header built by `tpde_format::safetensors::make_header`; with `metadata`,
/// a `__metadata__` object is added to the header.
pub fn safetensors_bytes(tensors: &[TensorData], metadata: Option<&[(&str, &str)]>) -> Vec<u8> {
    let list: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, _)| (n.as_str(), *d, s.as_slice()))
        .collect();
    let mut header = tpde_format::safetensors::make_header(&list);
    if let Some(meta) = metadata {
        let mut v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&header).expect("make_header writes JSON");
        let m = meta
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        v.insert("__metadata__".into(), serde_json::Value::Object(m));
        header = serde_json::to_vec(&v).expect("JSON");
        while !header.len().is_multiple_of(8) {
            header.push(b' ');
        }
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    out
}
