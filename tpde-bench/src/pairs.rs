//! The (base, target) pairs a run measures: the built-in list over the
//! example in the repo, the fine-tunes in `../shared/corpus/ft/` and the
//! fetched corpus, or pairs given on the command line.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// What kind of pair this is; decides which targets of issue 5 apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Two related checkpoints (dense delta).
    Related,
    /// A fine-tune against an earlier checkpoint (sparse in bf16).
    FineTune,
    /// A fine-tune with frozen layers: the "≥ 20× smaller than the target alone" target.
    FineTuneFrozen,
    /// fp32 target against a lower-precision copy of itself as the base.
    Precision,
    /// A target with no base.
    Alone,
    /// Given on the command line.
    Custom,
}

/// One pair to measure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pair {
    /// Short name used in tables and `--only`.
    pub name: String,
    /// The base checkpoint, if any.
    pub base: Option<PathBuf>,
    /// The target checkpoint.
    pub target: PathBuf,
    /// What kind of pair.
    pub kind: Kind,
}

fn pair(name: &str, base: Option<PathBuf>, target: PathBuf, kind: Kind) -> Pair {
    Pair {
        name: name.to_owned(),
        base,
        target,
        kind,
    }
}

/// The built-in list. `root` is the repository, `shared` holds `corpus/ft/`,
/// `corpus` is the fetched corpus' `st/` directory.
pub fn builtin(root: &Path, shared: &Path, corpus: &Path) -> Vec<Pair> {
    let ex = root.join("examples/silero-vad");
    let ft = shared.join("corpus/ft");
    let c = |f: &str| corpus.join(f);
    vec![
        pair(
            "silero-vad example (v6.2 -> v6.2-16k)",
            Some(ex.join("v6.2.safetensors")),
            ex.join("v6.2-16k.safetensors"),
            Kind::Related,
        ),
        pair(
            "ft bf16: step0 -> full.step700",
            Some(ft.join("ftA.full.step0.bf16.safetensors")),
            ft.join("ftA.full.step700.bf16.safetensors"),
            Kind::FineTune,
        ),
        pair(
            "ft bf16: step0 -> partial.step700 (frozen layers)",
            Some(ft.join("ftA.full.step0.bf16.safetensors")),
            ft.join("ftA.partial.step700.bf16.safetensors"),
            Kind::FineTuneFrozen,
        ),
        pair(
            "ft bf16: full.step560 -> full.step700",
            Some(ft.join("ftA.full.step560.bf16.safetensors")),
            ft.join("ftA.full.step700.bf16.safetensors"),
            Kind::FineTune,
        ),
        pair(
            "minilm6 fp32, base = its bf16 cast",
            Some(c("minilm6.bf16.safetensors")),
            c("minilm6.fp32.safetensors"),
            Kind::Precision,
        ),
        pair(
            "minilm6 fp32, base = its fp16 cast",
            Some(c("minilm6.fp16.safetensors")),
            c("minilm6.fp32.safetensors"),
            Kind::Precision,
        ),
        pair(
            "minilm6 fp32, base = int8 release dequantised",
            Some(c("minilm6.int8deq.fp32.safetensors")),
            c("minilm6.fp32.safetensors"),
            Kind::Precision,
        ),
        pair(
            "minilm6 fp32, base = int8 release (codes + scales)",
            Some(c("minilm6.int8native.safetensors")),
            c("minilm6.fp32.safetensors"),
            Kind::Precision,
        ),
        pair(
            "corpus silero.v62 -> silero.16k",
            Some(c("silero.v62.fp32.safetensors")),
            c("silero.16k.fp32.safetensors"),
            Kind::Related,
        ),
        pair(
            "akiki vad: safetensors, base = its ONNX export (renamed, reshaped, gates reordered)",
            Some(c("akiki.onnx.fp32.safetensors")),
            c("akiki.st.fp32.safetensors"),
            Kind::Related,
        ),
        pair(
            "minilm6 fp32 alone (no base)",
            None,
            c("minilm6.fp32.safetensors"),
            Kind::Alone,
        ),
    ]
}

/// Parses `NAME=BASE:TARGET` (or `NAME=:TARGET` for no base).
pub fn parse_custom(s: &str) -> Result<Pair> {
    let Some((name, rest)) = s.split_once('=') else {
        bail!("--pair wants NAME=BASE:TARGET or NAME=:TARGET, got {s:?}");
    };
    let Some((base, target)) = rest.split_once(':') else {
        bail!("--pair wants NAME=BASE:TARGET or NAME=:TARGET, got {s:?}");
    };
    Ok(pair(
        name,
        (!base.is_empty()).then(|| PathBuf::from(base)),
        PathBuf::from(target),
        Kind::Custom,
    ))
}
