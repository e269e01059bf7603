//! Pairs derived from the real fine-tune checkpoints for row-level matching
//! (issue 5, lesson 4): a vocabulary pruned, and a vocabulary extended and
//! then trained. No such pair ships in `../shared`, so the harness makes
//! them from real weights, deterministically, into `OUT_DIR/derived/`, and
//! says how in the report.
//!
//! - pruned: the base checkpoint with 40% of the word-embedding rows removed
//!   (a fixed pseudo-random choice; every other tensor as is), as when a
//!   multilingual vocabulary is cut to one language's tokens;
//! - extended: the fully fine-tuned checkpoint with 1,000 new word-embedding
//!   rows appended, each the bf16 mean of two existing rows (a common
//!   initialisation of added tokens), against the base checkpoint.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tpde_format::safetensors::{make_header, Checkpoint};
use tpde_format::Dtype;

use crate::pairs::{Kind, Pair};

/// The tensor whose rows are pruned or extended.
const VOCAB: &str = "embeddings.word_embeddings.weight";
/// Rows appended by the extended pair.
const NEW_ROWS: usize = 1000;

/// Writes (once) and returns the derived pairs, if the fine-tunes exist.
pub fn vocab_pairs(shared: &Path, out_dir: &Path) -> Result<Vec<Pair>> {
    let ft = shared.join("corpus/ft");
    let base = ft.join("ftA.full.step0.bf16.safetensors");
    let tuned = ft.join("ftA.full.step700.bf16.safetensors");
    if !base.exists() || !tuned.exists() {
        return Ok(Vec::new());
    }
    let dir = out_dir.join("derived");
    std::fs::create_dir_all(&dir)?;
    let pruned = dir.join("ftA.step0.vocab-pruned.bf16.safetensors");
    if !pruned.exists() {
        rewrite(&base, &pruned, |rows, row_bytes| {
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            let mut out = Vec::new();
            for r in rows.chunks_exact(row_bytes) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if rng % 10 >= 4 {
                    out.extend_from_slice(r);
                }
            }
            out
        })?;
    }
    let extended = dir.join("ftA.step700.vocab-extended.bf16.safetensors");
    if !extended.exists() {
        rewrite(&tuned, &extended, |rows, row_bytes| {
            let n = rows.len() / row_bytes;
            let mut out = rows.to_vec();
            for k in 0..NEW_ROWS {
                let a = &rows[(k * 7919 % n) * row_bytes..][..row_bytes];
                let b = &rows[(k * 104_729 % n) * row_bytes..][..row_bytes];
                for (x, y) in a.chunks_exact(2).zip(b.chunks_exact(2)) {
                    out.extend_from_slice(&bf16_mean(x, y));
                }
            }
            out
        })?;
    }
    Ok(vec![
        Pair {
            name: "ft bf16: step0 -> step0 with 40% of vocab rows pruned (derived)".into(),
            base: Some(base.clone()),
            target: pruned,
            kind: Kind::Related,
        },
        Pair {
            name: "ft bf16: step0 -> full.step700 + 1000 new vocab rows (derived)".into(),
            base: Some(base),
            target: extended,
            kind: Kind::FineTune,
        },
    ])
}

/// The mean of two bf16 values, rounded to nearest even (a plausible
/// initialisation; any deterministic value would do).
fn bf16_mean(x: &[u8], y: &[u8]) -> [u8; 2] {
    let f = |b: &[u8]| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
    let m = (f(x) + f(y)) / 2.0;
    let bits = m.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
    ((rounded >> 16) as u16).to_le_bytes()
}

/// Copies the single-file checkpoint `src` to `dst` with the rows of
/// [`VOCAB`] replaced by `edit(rows, row_bytes)` (the row count follows).
fn rewrite(src: &Path, dst: &Path, edit: impl Fn(&[u8], usize) -> Vec<u8>) -> Result<()> {
    let c = Checkpoint::open(src)?;
    let [f] = c.files.as_slice() else {
        bail!("{}: expected one safetensors file", src.display());
    };
    let bytes = f.bytes();
    let mut list: Vec<(String, Dtype, Vec<u64>, Vec<u8>)> = Vec::new();
    for t in &f.tensors {
        let data = &bytes[t.offset as usize..(t.offset + t.len) as usize];
        if t.name == VOCAB {
            let row_bytes = (t.len / t.shape[0]) as usize;
            let data = edit(data, row_bytes);
            let mut shape = t.shape.clone();
            shape[0] = (data.len() / row_bytes) as u64;
            list.push((t.name.clone(), t.dtype, shape, data));
        } else {
            list.push((t.name.clone(), t.dtype, t.shape.clone(), data.to_vec()));
        }
    }
    if !list.iter().any(|t| t.0 == VOCAB) {
        bail!("{}: no tensor {VOCAB}", src.display());
    }
    let header = make_header(
        &list
            .iter()
            .map(|(n, d, s, _)| (n.as_str(), *d, s.as_slice()))
            .collect::<Vec<_>>(),
    );
    let tmp = PathBuf::from(format!("{}.partial", dst.display()));
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    for (_, _, _, d) in &list {
        out.extend_from_slice(d);
    }
    std::fs::write(&tmp, &out).with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, dst)?;
    Ok(())
}
