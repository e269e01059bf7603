//! The hidden `child` subcommands: the harness re-executes itself to run one
//! operation in a fresh process, so that its peak RSS, CPU time and thread
//! count are its own. tpde runs through the same library calls the `tpde` CLI
//! makes (`pack::pack`, `unpack::unpack`) with default options.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use tpde_format::pack::{BaseMode, PackOptions};
use tpde_format::safetensors::Checkpoint;
use tpde_format::unpack::UnpackOptions;
use tpde_format::{Archive, BaseProvider, NoBase, WriteOptions};

use crate::refcodec::{self, Codec};

/// `--digests` of `child tpde-decode`: [`tpde_format::unpack::Digests`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DigestPolicy {
    /// Every tensor proven by its chunk digests or its own.
    Parts,
    /// The file's SHA-256 only.
    File,
    /// Every digest.
    All,
}

/// One operation, run in its own process.
#[derive(Debug, Subcommand)]
pub enum Child {
    /// tpde pack with default options (the library call behind `tpde pack`).
    TpdePack {
        #[arg(long)]
        target: PathBuf,
        #[arg(long)]
        base: Option<PathBuf>,
        #[arg(short = 'o')]
        out: PathBuf,
        /// Reference the base instead of embedding it.
        #[arg(long)]
        external_base: bool,
        /// zstd level; default: the library default.
        #[arg(long)]
        level: Option<i32>,
        #[arg(long)]
        threads: usize,
    },
    /// tpde unpack (the library call behind `tpde unpack`).
    TpdeUnpack {
        archive: PathBuf,
        #[arg(long)]
        base: Option<PathBuf>,
        #[arg(short = 'o')]
        out: PathBuf,
        #[arg(long)]
        threads: usize,
    },
    /// tpde decode without writing: every file streamed through the decoder
    /// (digests checked) into a sink, to time the codec apart from disk writes.
    TpdeDecode {
        archive: PathBuf,
        #[arg(long)]
        base: Option<PathBuf>,
        #[arg(long)]
        threads: usize,
        /// The digests checked: `parts` (what unpack checks, the default),
        /// `file` (the file's SHA-256 only, unpack's policy before format
        /// 1.7) or `all` (what verify checks).
        #[arg(long, value_enum, default_value_t = DigestPolicy::Parts)]
        digests: DigestPolicy,
        /// Decode this many times in the one process, printing each pass's
        /// time: passes after the first find the maps' pages already faulted
        /// in, which separates that cost (and the process's start and exit)
        /// from decoding.
        #[arg(long, default_value_t = 1)]
        repeat: u32,
    },
    /// A reference codec's pack.
    RefPack {
        #[arg(long, value_enum)]
        codec: Codec,
        #[arg(long)]
        target: PathBuf,
        #[arg(long)]
        base: Option<PathBuf>,
        #[arg(short = 'o')]
        out: PathBuf,
        #[arg(long)]
        level: i32,
        #[arg(long)]
        threads: usize,
    },
    /// A reference codec's unpack.
    RefUnpack {
        archive: PathBuf,
        #[arg(long)]
        base: Option<PathBuf>,
        #[arg(short = 'o')]
        out: PathBuf,
        #[arg(long)]
        threads: usize,
    },
}

fn pool(threads: usize) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build_global()
        .context("building the rayon pool")
}

/// Runs one child operation.
pub fn run(c: Child) -> Result<()> {
    match c {
        Child::TpdePack {
            target,
            base,
            out,
            external_base,
            level,
            threads,
        } => {
            pool(threads)?;
            let t = Checkpoint::open(&target)?;
            let b = base.as_deref().map(Checkpoint::open).transpose()?;
            let mut write = WriteOptions::default().with_overwrite(true);
            if let Some(l) = level {
                write = write.with_level(l);
            }
            // `..default()` so options the library adds later keep their defaults.
            #[allow(clippy::needless_update)]
            let opts = PackOptions {
                write,
                base_mode: if external_base {
                    BaseMode::External
                } else {
                    BaseMode::Inline
                },
                ..PackOptions::default()
            };
            let r = tpde_format::pack::pack(&t, b.as_ref(), &out, &opts, &mut |_| {})?;
            println!(
                "{{\"archive_bytes\":{},\"delta_tensors\":{},\"tensors\":{}}}",
                r.archive_bytes, r.delta_tensors, r.tensors
            );
        }
        Child::TpdeUnpack {
            archive,
            base,
            out,
            threads,
        } => {
            pool(threads)?;
            let a = Archive::open(&archive)?;
            let b = base.as_deref().map(Checkpoint::open).transpose()?;
            let provider: &dyn BaseProvider = match &b {
                Some(c) => c,
                None => &NoBase,
            };
            let opts = UnpackOptions {
                overwrite: true,
                ..UnpackOptions::default()
            };
            tpde_format::unpack::unpack(&a, provider, &out, &opts, &mut |_| {})?;
        }
        Child::TpdeDecode {
            archive,
            base,
            threads,
            digests,
            repeat,
        } => {
            use tpde_format::unpack::Digests;
            let digests = match digests {
                DigestPolicy::Parts => Digests::Parts,
                DigestPolicy::File => Digests::File,
                DigestPolicy::All => Digests::All,
            };
            pool(threads)?;
            let a = Archive::open(&archive)?;
            let b = base.as_deref().map(Checkpoint::open).transpose()?;
            let provider: &dyn BaseProvider = match &b {
                Some(c) => c,
                None => &NoBase,
            };
            let mut bytes = 0u64;
            let mut passes_ms = Vec::new();
            for _ in 0..repeat.max(1) {
                let start = std::time::Instant::now();
                bytes = 0;
                for fi in 0..a.index().files.len() {
                    tpde_format::unpack::stream_file_with(&a, fi, provider, digests, &mut |x| {
                        bytes += x.len() as u64;
                        Ok(())
                    })?;
                }
                passes_ms.push(format!("{:.1}", start.elapsed().as_secs_f64() * 1e3));
            }
            println!(
                "{{\"decoded_bytes\":{bytes},\"passes_ms\":[{}]}}",
                passes_ms.join(",")
            );
        }
        Child::RefPack {
            codec,
            target,
            base,
            out,
            level,
            threads,
        } => {
            pool(threads)?;
            refcodec::pack(codec, &target, base.as_deref(), &out, level)?;
        }
        Child::RefUnpack {
            archive,
            base,
            out,
            threads,
        } => {
            pool(threads)?;
            refcodec::unpack(&archive, base.as_deref(), &out)?;
        }
    }
    Ok(())
}
