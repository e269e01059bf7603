//! Command-line grammar. The flag names here are the user-facing contract
//! of issue 3; defaults come from the library so there is one source.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tpde_format::WriteOptions;

/// Lossless, delta-compressed model weights.
///
/// A `.tpde` archive rebuilds a safetensors checkpoint (a file, or a sharded
/// directory) bit-exactly from a base checkpoint plus chunked, compressed
/// deltas. Unpacking gives back the very same bytes, so `sha256sum` of the
/// result matches the original.
#[derive(Debug, Parser)]
#[command(
    name = "tpde",
    version,
    propagate_version = true,
    after_help = "Exit status: 0 success; 1 verification or corruption failure; 2 usage or I/O error.\n\
                  Run `tpde <COMMAND> --help` for each command's options."
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The four commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pack a target checkpoint (optionally as a delta against a base) into an archive.
    #[command(after_help = "Examples:\n  \
        tpde pack --target new.safetensors --base old.safetensors -o new.tpde\n  \
        tpde pack --target ckpt-dir/ --base base-dir/ --external-base -o ckpt.tpde\n  \
        tpde pack --target model.safetensors -o model.tpde     (standalone, no base)")]
    Pack(PackArgs),
    /// Show what an archive holds: one row per tensor, with totals.
    Inspect(InspectArgs),
    /// Check every checksum and rebuild every tensor against its digest, writing nothing.
    #[command(after_help = "Exit status 1 names the tensor/chunk that failed. \
                            With --against, also compares byte for byte with the original.")]
    Verify(VerifyArgs),
    /// Write the target checkpoint back as safetensors, byte-identical to what was packed.
    #[command(
        after_help = "A single-file target is written to the file PATH; a sharded target to the \
                      directory PATH (shards plus their index JSON). Output is built in a temp \
                      file beside PATH and renamed into place only when every tensor matched its digests."
    )]
    Unpack(UnpackArgs),
}

/// Options shared by the commands that show progress.
#[derive(Debug, Args)]
pub struct Common {
    /// No progress bar (it is also off when stderr is not a terminal).
    #[arg(short, long)]
    pub quiet: bool,
    /// Worker threads [default: all cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

/// `tpde pack`.
#[derive(Debug, Args)]
pub struct PackArgs {
    /// The checkpoint to store: a .safetensors file, or a directory holding
    /// a sharded checkpoint (*.safetensors.index.json + shards).
    #[arg(long, short = 't', value_name = "T")]
    pub target: PathBuf,
    /// A related checkpoint (file or sharded directory) to store the target
    /// as a delta against. A target tensor uses the base tensor of the same
    /// name and shape, in the same dtype or a narrower float that widens
    /// exactly (bf16/f16 -> f32/f64, f32 -> f64); failing that, a base tensor
    /// with identical bytes under another name. The others are stored
    /// standalone. Without --base the archive is a standalone compressed copy.
    #[arg(long, short = 'b', value_name = "B")]
    pub base: Option<PathBuf>,
    /// The archive to write.
    #[arg(short = 'o', long = "output", value_name = "OUT.tpde")]
    pub output: PathBuf,
    /// zstd level, 1..=22 (higher is smaller and slower).
    #[arg(long, value_name = "N", default_value_t = WriteOptions::default().level(),
          value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: i32,
    /// Coder for the byte planes of multi-byte values: `rans` (smallest) or
    /// `zstd` (about twice as fast to decode, 5-30% larger on fine-tunes).
    #[arg(long, value_name = "CODER", value_enum, default_value_t = Planes::Rans)]
    pub planes: Planes,
    /// Newest format version to write, for older readers: 1.0 (no per-plane
    /// streams, widened bases or zigzag adds), 1.1 (no row-mapped bases), 1.2
    /// (no compressed index), 1.3 (no rotated ops), 1.4 (no sliced bases),
    /// 1.5 (no 32-state rANS planes), 1.6 (no chunk digests) or 1.7 (the
    /// default). The archive records the lowest version it needs.
    #[arg(long, value_name = "VERSION", value_enum, default_value_t = Format::V1_7)]
    pub format: Format,
    /// Same as `--format 1.0`.
    #[arg(long, conflicts_with = "format")]
    pub format_1_0: bool,
    /// Elements per chunk, the same for every tensor: the unit of parallel
    /// work and random access. Default: chosen per tensor (2^17 to 2^20) by
    /// an entropy estimate.
    #[arg(long, value_name = "N")]
    pub chunk_elems: Option<u64>,
    /// Do not embed the base: record its sha256 instead. Reading the archive
    /// then needs `--base B` (the same bytes).
    #[arg(long, requires = "base", conflicts_with = "plain_base")]
    pub external_base: bool,
    /// Embed the base uncompressed and aligned, so readers can map it zero-copy
    /// (bigger archive).
    #[arg(long, requires = "base")]
    pub plain_base: bool,
    /// Replace OUT.tpde if it exists.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Print one JSON document on success instead of the text summary
    /// (errors stay text on stderr, with the exit codes of the README).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: Common,
}

/// `tpde inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The archive.
    #[arg(value_name = "ARCHIVE")]
    pub archive: PathBuf,
    /// Print one JSON document instead of the table (its shape is in the README).
    #[arg(long)]
    pub json: bool,
}

/// `tpde verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The archive.
    #[arg(value_name = "ARCHIVE")]
    pub archive: PathBuf,
    /// The base checkpoint, for an archive packed with --external-base.
    #[arg(long, short = 'b', value_name = "B")]
    pub base: Option<PathBuf>,
    /// The original target checkpoint: also compare the rebuilt bytes with it.
    #[arg(long, value_name = "T")]
    pub against: Option<PathBuf>,
    /// Print one JSON document on success instead of the text summary
    /// (errors stay text on stderr, with the exit codes of the README).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: Common,
}

/// `tpde unpack`.
#[derive(Debug, Args)]
pub struct UnpackArgs {
    /// The archive.
    #[arg(value_name = "ARCHIVE")]
    pub archive: PathBuf,
    /// The base checkpoint, for an archive packed with --external-base.
    #[arg(long, short = 'b', value_name = "B")]
    pub base: Option<PathBuf>,
    /// Where to write: a file, or a directory for a sharded target.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: PathBuf,
    /// Extract only this tensor (repeat for several) into one new
    /// safetensors file, in the order given.
    #[arg(long = "tensor", value_name = "NAME")]
    pub tensors: Vec<String>,
    /// Replace PATH if it exists.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Print one JSON document on success instead of the text summary
    /// (errors stay text on stderr, with the exit codes of the README).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: Common,
}

/// `--format`: the newest format version `pack` may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// 1.0
    #[value(name = "1.0")]
    V1_0,
    /// 1.1
    #[value(name = "1.1")]
    V1_1,
    /// 1.2
    #[value(name = "1.2")]
    V1_2,
    /// 1.3
    #[value(name = "1.3")]
    V1_3,
    /// 1.4
    #[value(name = "1.4")]
    V1_4,
    /// 1.5
    #[value(name = "1.5")]
    V1_5,
    /// 1.6
    #[value(name = "1.6")]
    V1_6,
    /// 1.7
    #[value(name = "1.7")]
    V1_7,
}

impl Format {
    /// The format minor version.
    pub fn minor(self) -> u16 {
        match self {
            Format::V1_0 => 0,
            Format::V1_1 => 1,
            Format::V1_2 => 2,
            Format::V1_3 => 3,
            Format::V1_4 => 4,
            Format::V1_5 => 5,
            Format::V1_6 => 6,
            Format::V1_7 => 7,
        }
    }
}

/// `--planes`: the byte-plane coder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Planes {
    /// Context-modelled rANS: smallest archives.
    Rans,
    /// zstd at --level: fastest to decode.
    Zstd,
}
