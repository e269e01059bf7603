//! `tpde`: pack, inspect, verify and unpack `.tpde` archives.
//!
//! A thin shell over `tpde-format`: argument parsing, progress bars and
//! printing. Every decision about bytes (what to store, how to check it,
//! where temp files go) is the library's.
//!
//! Exit status: 0 success; 1 verification or corruption failure
//! ([`tpde_format::Error::is_corruption`]); 2 usage or I/O error.

mod cli;
mod progress;
mod table;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser as _;
use indicatif::HumanBytes;
use tpde_format::codec::stream::PlaneCoder;
use tpde_format::format::VERSION_MINOR;
use tpde_format::pack::{pack, BaseMode, PackOptions};
use tpde_format::safetensors::Checkpoint;
use tpde_format::unpack::{unpack, verify_with, UnpackOptions};
use tpde_format::{Archive, BaseProvider, Error, NoBase, WriteOptions};

use cli::{Cli, Command, Common, InspectArgs, PackArgs, UnpackArgs, VerifyArgs};

/// Exit status for a verification or corruption failure.
const EXIT_CORRUPT: u8 = 1;
/// Exit status for a usage or I/O error (clap uses 2 for usage errors too).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    ignore_sigxfsz();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed; every other
            // parse error is a usage error: exit 2, as the contract says.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Pack(a) => cmd_pack(a),
        Command::Inspect(a) => cmd_inspect(a),
        Command::Verify(a) => cmd_verify(a),
        Command::Unpack(a) => cmd_unpack(a),
    };
    match result {
        Ok(out) => print_out(&out),
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "tpde: error: {}",
                table::printable(&e.to_string())
            );
            ExitCode::from(if e.is_corruption() {
                EXIT_CORRUPT
            } else {
                EXIT_USAGE
            })
        }
    }
}

/// A file-size limit (`ulimit -f`) makes the kernel send SIGXFSZ on the
/// write that crosses it, and its default action kills the process at once:
/// no error message, and the library never gets to remove its temp file.
/// Ignored, the write fails with EFBIG instead, which surfaces as an I/O
/// error (exit 2) and the temp file is cleaned up like on a full disk.
fn ignore_sigxfsz() {
    // SAFETY: called first thing in main, before any other thread exists;
    // SIG_IGN installs no handler code, so nothing can run in signal context.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Writes the result to stdout. A reader that went away (`tpde inspect a |
/// head`) is not an error worth a message; any other write failure is.
fn print_out(out: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "tpde: error: writing to stdout: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

type Result<T> = std::result::Result<T, Error>;

/// Sizes the global rayon pool (used by the library for chunk work).
fn threads(c: &Common) -> Result<()> {
    if let Some(n) = c.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(usize::from(n))
            .build_global()
            .map_err(|e| Error::Usage(format!("cannot start {n} threads: {e}")))?;
    }
    Ok(())
}

/// True when `a` and `b` name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Elapsed time for humans: milliseconds under a second.
fn took(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1e3)
    } else {
        format!("{secs:.2} s")
    }
}

fn mb_per_s(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{:.1} MB/s", bytes as f64 / secs / 1e6)
}

fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        return "-".into();
    }
    format!("{:.2}x", a as f64 / b as f64)
}

fn cmd_pack(a: PackArgs) -> Result<String> {
    threads(&a.common)?;
    for input in std::iter::once(&a.target).chain(&a.base) {
        if same_file(input, &a.output) {
            return Err(Error::Usage(format!(
                "-o {} is an input of this pack; choose another output path",
                a.output.display()
            )));
        }
    }
    let target = Checkpoint::open(&a.target)?;
    let base = a.base.as_ref().map(Checkpoint::open).transpose()?;
    let base_mode = if a.external_base {
        BaseMode::External
    } else if a.plain_base {
        BaseMode::InlinePlain
    } else {
        BaseMode::Inline
    };
    let mut write = WriteOptions::default();
    if let Some(ce) = a.chunk_elems {
        write = write.with_chunk_elems(ce);
    }
    let opts = PackOptions {
        write: write
            .with_level(a.level)
            .with_plane_coder(match a.planes {
                cli::Planes::Rans => PlaneCoder::Rans,
                cli::Planes::Zstd => PlaneCoder::Zstd,
            })
            .with_max_minor(if a.format_1_0 {
                0
            } else {
                a.format.minor().min(VERSION_MINOR)
            })
            .with_overwrite(a.force),
        base_mode,
    };
    let pb = progress::bar(target.total_bytes(), "packing", a.common.quiet);
    let start = Instant::now();
    let r = pack(&target, base.as_ref(), &a.output, &opts, &mut |n| pb.inc(n));
    pb.finish_and_clear();
    let r = r?;
    let secs = start.elapsed().as_secs_f64();
    let standalone = r.tensors - r.delta_tensors;
    let how = match (&a.base, base_mode) {
        (None, _) => format!("{standalone} standalone (no base)"),
        (Some(b), mode) => {
            let kept = match mode {
                BaseMode::External => "not embedded: reading needs --base",
                BaseMode::InlinePlain => "base embedded uncompressed",
                BaseMode::Inline => "base embedded",
            };
            let mut kinds = Vec::new();
            if r.row_mapped_tensors > 0 {
                kinds.push(format!(
                    "{} row-mapped: base of another row count",
                    r.row_mapped_tensors
                ));
            }
            if r.quantized_tensors > 0 {
                kinds.push(format!(
                    "{} against quantized codes x scales",
                    r.quantized_tensors
                ));
            }
            if r.sliced_tensors > 0 {
                kinds.push(format!(
                    "{} sliced: rows of a base of another shape or order",
                    r.sliced_tensors
                ));
            }
            let rows = if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            };
            format!(
                "{} as deltas against {}{rows} ({kept}), {standalone} standalone",
                r.delta_tensors,
                b.display()
            )
        }
    };
    if a.json {
        return Ok(json_line(&serde_json::json!({
            "target": a.target.display().to_string(),
            "archive": a.output.display().to_string(),
            "archive_bytes": r.archive_bytes,
            "target_bytes": r.target_bytes,
            "ratio": r.target_bytes as f64 / r.archive_bytes.max(1) as f64,
            "tensors": r.tensors,
            "delta_tensors": r.delta_tensors,
            "row_mapped_tensors": r.row_mapped_tensors,
            "quantized_tensors": r.quantized_tensors,
            "sliced_tensors": r.sliced_tensors,
            "base_mode": match (&a.base, base_mode) {
                (None, _) => "none",
                (Some(_), BaseMode::External) => "external",
                (Some(_), BaseMode::InlinePlain) => "inline_plain",
                (Some(_), BaseMode::Inline) => "inline",
            },
            "seconds": secs,
        })));
    }
    Ok(format!(
        "packed   {} -> {}\n\
         tensors  {}: {how}\n\
         size     {} target -> {} archive ({})\n\
         time     {} ({})\n",
        a.target.display(),
        a.output.display(),
        r.tensors,
        HumanBytes(r.target_bytes),
        HumanBytes(r.archive_bytes),
        ratio(r.target_bytes, r.archive_bytes),
        took(secs),
        mb_per_s(r.target_bytes, secs),
    ))
}

/// One pretty JSON document and a newline.
fn json_line(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

fn cmd_inspect(a: InspectArgs) -> Result<String> {
    let archive = Archive::open(&a.archive)?;
    let summary = tpde_format::inspect::summarize_archive(&archive);
    if a.json {
        let mut s = serde_json::to_string_pretty(&summary)
            .map_err(|e| Error::Usage(format!("cannot encode the summary as JSON: {e}")))?;
        s.push('\n');
        Ok(s)
    } else {
        Ok(table::render(&a.archive.display().to_string(), &summary))
    }
}

/// The base for reading: the checkpoint given with `--base`, or none.
fn open_base(base: Option<&PathBuf>) -> Result<Box<dyn BaseProvider>> {
    Ok(match base {
        Some(b) => Box::new(Checkpoint::open(b)?),
        None => Box::new(NoBase),
    })
}

/// Warns when `--base` was given to an archive that needs none.
fn note_unused_base<D: AsRef<[u8]> + Sync>(archive: &Archive<D>, base: Option<&PathBuf>) {
    if let Some(b) = base {
        if archive.index().base_files.is_empty() {
            let _ = writeln!(
                std::io::stderr(),
                "tpde: note: this archive embeds its base (or has none); --base {} is not used",
                b.display()
            );
        }
    }
}

fn cmd_verify(a: VerifyArgs) -> Result<String> {
    threads(&a.common)?;
    let archive = Archive::open(&a.archive)?;
    note_unused_base(&archive, a.base.as_ref());
    let base = open_base(a.base.as_ref())?;
    let against = a.against.as_ref().map(Checkpoint::open).transpose()?;
    let total: u64 = archive.index().files.iter().map(|f| f.size).sum();
    let stored: u64 = archive
        .index()
        .bases
        .iter()
        .chain(&archive.index().tensors)
        .map(|t| t.stored_bytes())
        .sum();
    // One bar per pass: the checksums of the stored bytes, then the rebuild
    // (started, replacing the first, when the first rebuilt bytes arrive).
    let crc_bar = progress::bar(stored, "checksums", a.common.quiet);
    let mut pb = None;
    let start = Instant::now();
    let r = verify_with(
        &archive,
        base.as_ref(),
        against.as_ref(),
        &mut |n| crc_bar.inc(n),
        &mut |n| {
            pb.get_or_insert_with(|| {
                crc_bar.finish_and_clear();
                progress::bar(total, "verifying", a.common.quiet)
            })
            .inc(n)
        },
    );
    crc_bar.finish_and_clear();
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let r = r?;
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        return Ok(json_line(&serde_json::json!({
            "archive": a.archive.display().to_string(),
            "ok": true,
            "files": r.files,
            "tensors": r.tensors,
            "bytes": r.bytes,
            "compared": r.compared,
            "seconds": secs,
        })));
    }
    let mut out = format!(
        "ok       {}: every chunk checksum, {} tensor digest{} and {} file digest{} match\n\
         rebuilt  {} in {} ({})\n",
        a.archive.display(),
        r.tensors,
        plural(r.tensors),
        r.files,
        plural(r.files),
        HumanBytes(r.bytes),
        took(secs),
        mb_per_s(r.bytes, secs),
    );
    if let Some(t) = &a.against {
        out.push_str(&format!("same     byte for byte as {}\n", t.display()));
    }
    Ok(out)
}

/// Keeps the first of each repeated `--tensor` name: the output holds each
/// tensor once.
fn dedup(names: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .into_iter()
        .filter(|n| seen.insert(n.clone()))
        .collect()
}

fn cmd_unpack(a: UnpackArgs) -> Result<String> {
    threads(&a.common)?;
    if same_file(&a.archive, &a.output) {
        return Err(Error::Usage(format!(
            "-o {} is the archive itself; choose another output path",
            a.output.display()
        )));
    }
    let archive = Archive::open(&a.archive)?;
    note_unused_base(&archive, a.base.as_ref());
    let base = open_base(a.base.as_ref())?;
    let tensors = dedup(a.tensors);
    let idx = archive.index();
    let total: u64 = if tensors.is_empty() {
        idx.files.iter().map(|f| f.size).sum::<u64>()
            + idx
                .extra_files
                .iter()
                .map(|x| x.contents.len() as u64)
                .sum::<u64>()
    } else {
        tensors
            .iter()
            .filter_map(|n| archive.tensor_index(n).ok())
            .filter_map(|t| idx.tensors[t].byte_len())
            .sum()
    };
    let opts = UnpackOptions {
        overwrite: a.force,
        tensors,
    };
    let pb = progress::bar(total, "unpacking", a.common.quiet);
    let start = Instant::now();
    let r = unpack(&archive, base.as_ref(), &a.output, &opts, &mut |n| {
        pb.inc(n)
    });
    pb.finish_and_clear();
    let r = r?;
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        return Ok(json_line(&serde_json::json!({
            "archive": a.archive.display().to_string(),
            "output": a.output.display().to_string(),
            "directory": r.directory,
            "files": r.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "bytes": r.bytes,
            "tensors": opts.tensors,
            "seconds": secs,
        })));
    }
    let mut out = format!(
        "unpacked {} -> {}{}\n\
         wrote    {} in {} file{} in {} ({}); every tensor matched its digests\n",
        a.archive.display(),
        a.output.display(),
        if r.directory { "/" } else { "" },
        HumanBytes(r.bytes),
        r.files.len(),
        plural(r.files.len()),
        took(secs),
        mb_per_s(r.bytes, secs),
    );
    if r.directory {
        for f in &r.files {
            out.push_str(&format!(
                "         {}\n",
                table::printable(&f.display().to_string())
            ));
        }
    }
    if !opts.tensors.is_empty() {
        out.push_str(&format!(
            "tensors  {} (a new safetensors file holding only these)\n",
            opts.tensors.len()
        ));
    }
    Ok(out)
}
