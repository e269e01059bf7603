//! `tpde-bench`: measures tpde against zstd and reference delta codecs on
//! real checkpoint pairs, all in one run on the same files, and prints one
//! Markdown table per pair (also written to `target/bench/results.md` and
//! `results.json`).
//!
//! Every operation runs in its own child process (this binary re-executed
//! with the hidden `child` subcommand, the zstd CLI, the `tpde` CLI, or a
//! Python script for ZipNN) so that wall time and peak RSS (`wait4` rusage)
//! belong to that operation alone.
//!
//! Rerun: `cargo build --release -p tpde-cli && cargo run --release -p tpde-bench`
//! (the corpus comes from `bash ../shared/corpus/fetch.sh target/corpus`;
//! ZipNN from a venv, see BENCHMARKS.md).

mod bench;
mod child;
mod derive;
mod measure;
mod pairs;
mod refcodec;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use bench::{Cache, Ctx, Method, Row};
use report::{Env, PairResult, Report};

/// The ZipNN child script, written next to the results at run time.
const ZIPNN_SCRIPT: &str = include_str!("../zipnn_child.py");

#[derive(Debug, Parser)]
#[command(
    name = "tpde-bench",
    about = "tpde vs zstd, zstd --patch-from, XOR/SUB + byte planes + zstd and ZipNN: same files, same run",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print the Markdown report of an earlier run's results.json (e.g. after
    /// the report format changed), without measuring anything.
    Render {
        /// The results.json to render.
        json: PathBuf,
    },
    /// Internal: run one measured operation (used by the harness itself).
    #[command(hide = true, subcommand)]
    Child(child::Child),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Repository root (default: the workspace this binary was built from).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Fetched corpus (`fetch.sh` output's st/ directory). Default: ROOT/target/corpus/st.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// The shared directory holding corpus/ft/. Default: ROOT/../shared.
    #[arg(long)]
    shared: Option<PathBuf>,
    /// Where results.md, results.json and scratch files go. Default: ROOT/target/bench.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// "All threads" (default: available parallelism).
    #[arg(long)]
    threads: Option<usize>,
    /// Only pairs whose name contains one of these (case-insensitive).
    #[arg(long)]
    only: Vec<String>,
    /// Instead of the built-in list: NAME=BASE:TARGET (or NAME=:TARGET). Repeatable.
    #[arg(long = "pair")]
    pairs: Vec<String>,
    /// Methods to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    methods: Vec<Method>,
    /// Skip the level-19 methods (zstd -19, --patch-from, reference codecs): a fast check.
    #[arg(long)]
    quick: bool,
    /// Also pack the level-19 methods on all threads (slow: they run on 1 thread by default).
    #[arg(long)]
    slow_all_threads: bool,
    /// Reuse baseline rows (zstd, reference codecs, ZipNN) from the previous
    /// results.json in OUT_DIR when the files' sha256 and the label (level,
    /// version) match; only tpde is measured again. Such rows say so.
    #[arg(long)]
    reuse_baselines: bool,
    /// zstd level of the reference codecs (planes, XOR, SUB).
    #[arg(long, default_value_t = 19)]
    ref_level: i32,
    /// Minimum repetitions of runs shorter than a second.
    #[arg(long, default_value_t = 3)]
    min_reps: u32,
    /// Maximum repetitions.
    #[arg(long, default_value_t = 10)]
    max_reps: u32,
    /// zstd CLI.
    #[arg(long, default_value = "/usr/bin/zstd")]
    zstd: PathBuf,
    /// The `tpde` CLI (default: ROOT/target/release/tpde; skipped if absent).
    #[arg(long)]
    tpde_cli: Option<PathBuf>,
    /// Python with zipnn installed (default: ROOT/target/bench/venv/bin/python; skipped if absent).
    #[arg(long)]
    python: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Some(Cmd::Child(c)) => child::run(c),
        Some(Cmd::Render { json }) => render(&json),
        None => run(cli.run),
    };
    if let Err(e) = res {
        eprintln!("tpde-bench: {e:#}");
        std::process::exit(1);
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine(root: &Path, threads: usize) -> Env {
    let cpu = sh("lscpu", &[])
        .lines()
        .find_map(|l| l.strip_prefix("Model name:").map(|m| m.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kb: f64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        })
        .unwrap_or_default();
    let r = root.to_string_lossy();
    let mut commit = sh("git", &["-C", &r, "rev-parse", "--short", "HEAD"]);
    let dirty = sh(
        "git",
        &[
            "-C",
            &r,
            "status",
            "--porcelain",
            "--",
            "tpde-format",
            "tpde-cli",
            "tpde-bench",
        ],
    );
    if !dirty.is_empty() {
        commit.push_str(" + uncommitted changes in tpde-format/tpde-cli/tpde-bench");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = if args.is_empty() {
        "cargo run --release -p tpde-bench".to_owned()
    } else {
        format!("cargo run --release -p tpde-bench -- {}", args.join(" "))
    };
    Env {
        date: sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        command,
        commit,
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem,
        threads,
        load_start: loadavg(),
        ..Env::default()
    }
}

/// Finds the `tpde` CLI and checks it answers `--version`.
fn find_cli(
    arg: Option<PathBuf>,
    root: &Path,
    notes: &mut Vec<String>,
) -> Option<(PathBuf, String)> {
    let p = arg.unwrap_or_else(|| root.join("target/release/tpde"));
    if !p.exists() {
        notes.push(format!(
            "`tpde` CLI rows skipped: {} not found (build it: cargo build --release -p tpde-cli).",
            p.display()
        ));
        return None;
    }
    match Command::new(&p).arg("--version").output() {
        Ok(o) if o.status.success() => {
            Some((p, String::from_utf8_lossy(&o.stdout).trim().to_owned()))
        }
        _ => {
            notes.push(format!(
                "`tpde` CLI rows skipped: {} --version failed.",
                p.display()
            ));
            None
        }
    }
}

/// Finds a Python with zipnn, writes the child script, returns both and the version.
fn find_zipnn(
    arg: Option<PathBuf>,
    root: &Path,
    out_dir: &Path,
    notes: &mut Vec<String>,
) -> Option<((PathBuf, PathBuf), String)> {
    let py = arg.unwrap_or_else(|| root.join("target/bench/venv/bin/python"));
    let how = "python3 -m venv target/bench/venv && target/bench/venv/bin/pip install zipnn==0.5.4 zstandard";
    if !py.exists() {
        notes.push(format!(
            "ZipNN rows skipped: no Python at {} (set it up: {how}).",
            py.display()
        ));
        return None;
    }
    let out = Command::new(&py)
        .args([
            "-c",
            "import importlib.metadata as m, zipnn, zstandard, numpy; print(m.version('zipnn'))",
        ])
        .output();
    let version = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => {
            notes.push(format!(
                "ZipNN rows skipped: {} cannot import zipnn, zstandard and numpy ({how}).",
                py.display()
            ));
            return None;
        }
    };
    let script = out_dir.join("zipnn_child.py");
    if let Err(e) = std::fs::write(&script, ZIPNN_SCRIPT) {
        notes.push(format!(
            "ZipNN rows skipped: cannot write {}: {e}",
            script.display()
        ));
        return None;
    }
    Some(((py, script), version))
}

fn run(a: RunArgs) -> Result<()> {
    let started = Instant::now();
    let root = match a.root {
        Some(r) => r,
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("manifest dir has no parent")?
            .to_path_buf(),
    };
    let corpus = a.corpus.unwrap_or_else(|| root.join("target/corpus/st"));
    let shared = a.shared.unwrap_or_else(|| root.join("../shared"));
    let out_dir = a.out_dir.unwrap_or_else(|| root.join("target/bench"));
    let work = out_dir.join("work");
    std::fs::create_dir_all(&work)?;
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut env = machine(&root, threads);
    let mut notes = Vec::new();

    let zstd = match bench::zstd_version(&a.zstd) {
        Ok(v) => {
            env.tools.push(v);
            Some(a.zstd)
        }
        Err(e) => {
            notes.push(format!(
                "zstd rows skipped: {e:#} (install zstd, or pass --zstd PATH)."
            ));
            None
        }
    };
    let cli = find_cli(a.tpde_cli, &root, &mut notes);
    if let Some((p, v)) = &cli {
        env.tools.push(format!("{v} ({})", p.display()));
    }
    let zipnn = find_zipnn(a.python, &root, &out_dir, &mut notes);
    if let Some((_, v)) = &zipnn {
        env.tools.push(format!("zipnn {v} (Python child; MB/s from its own timer, which excludes interpreter and torch start-up; RSS includes them)"));
    }
    let ctx = Ctx {
        self_exe: std::env::current_exe()?,
        zstd,
        tpde_cli: cli.map(|c| c.0),
        zipnn_version: zipnn.as_ref().map(|z| z.1.clone()).unwrap_or_default(),
        zipnn: zipnn.map(|z| z.0),
        threads,
        ref_level: a.ref_level,
        slow_all_threads: a.slow_all_threads,
        min_reps: a.min_reps.max(1),
        max_reps: a.max_reps.max(a.min_reps.max(1)),
        work: work.clone(),
    };
    notes.push("tpde unpack fsyncs its output before renaming it into place (part of its time); zstd and the reference codecs do not.".into());
    notes.push("tpde rows run the library calls behind `tpde pack`/`unpack` (`pack::pack`, `unpack::unpack`, default options) in a child process of this harness; the `tpde` CLI row runs the binary.".into());
    if !a.slow_all_threads {
        notes.push("Level-19 methods (zstd -19, --patch-from, reference codecs) are packed on 1 thread only, to keep the run short; their unpack runs on both thread counts.".into());
    }
    notes.push("Results of target-only methods (zstd -3, zstd -19, byte planes) are measured once per target file and reused by later pairs with the same target (noted in the row).".into());

    let mut pairs = if a.pairs.is_empty() {
        let mut list = pairs::builtin(&root, &shared, &corpus);
        let derived = derive::vocab_pairs(&shared, &out_dir)?;
        if !derived.is_empty() {
            notes.push("Derived pairs (no such pair ships in ../shared): tpde-bench/src/derive.rs writes them from the real fine-tunes into OUT_DIR/derived/ — step0 with a fixed pseudo-random 40% of its word-embedding rows removed, and full.step700 with 1,000 appended rows (bf16 means of two existing rows).".into());
        }
        list.extend(derived);
        list
    } else {
        a.pairs
            .iter()
            .map(|s| pairs::parse_custom(s))
            .collect::<Result<_>>()?
    };
    if !a.only.is_empty() {
        let only: Vec<String> = a.only.iter().map(|s| s.to_lowercase()).collect();
        pairs.retain(|p| only.iter().any(|o| p.name.to_lowercase().contains(o)));
    }
    let methods: Vec<Method> = bench::ALL
        .into_iter()
        .filter(|m| a.methods.is_empty() || a.methods.contains(m))
        .filter(|m| !(a.quick && m.slow()))
        .collect();

    let mut report = Report {
        env,
        pairs: Vec::new(),
        skipped: Vec::new(),
        notes,
    };
    let mut cache = Cache::default();
    let md_path = out_dir.join("results.md");
    let json_path = out_dir.join("results.json");
    let previous = if a.reuse_baselines {
        let prev = std::fs::read(&json_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<report::Previous>(&b).ok());
        if prev.is_none() {
            report.notes.push(format!(
                "--reuse-baselines: no readable {}; everything measured.",
                json_path.display()
            ));
        }
        prev.map(report::Previous::baselines).unwrap_or_default()
    } else {
        Default::default()
    };
    let mut seen: Vec<(String, [u8; 32], Option<[u8; 32]>)> = Vec::new();
    for pair in &pairs {
        let missing: Vec<_> = std::iter::once(&pair.target)
            .chain(pair.base.as_ref())
            .filter(|p| !p.exists())
            .collect();
        if !missing.is_empty() {
            let list: Vec<_> = missing.iter().map(|p| p.display().to_string()).collect();
            let msg = format!("{}: missing {}", pair.name, list.join(", "));
            eprintln!("skip: {msg}");
            report.skipped.push(msg);
            continue;
        }
        let target_sha = bench::file_sha256(&pair.target)?;
        let base_sha = pair.base.as_deref().map(bench::file_sha256).transpose()?;
        if let Some((name, ..)) = seen
            .iter()
            .find(|(_, t, b)| *t == target_sha && *b == base_sha)
        {
            let msg = format!(
                "{}: same files (sha256) as \"{name}\", not measured twice",
                pair.name
            );
            eprintln!("skip: {msg}");
            report.skipped.push(msg);
            continue;
        }
        seen.push((pair.name.clone(), target_sha, base_sha));
        let target_bytes = std::fs::metadata(&pair.target)?.len();
        let base_bytes = pair
            .base
            .as_ref()
            .map(|b| std::fs::metadata(b).map(|m| m.len()))
            .transpose()?;
        let mut rows = Vec::new();
        for &m in &methods {
            let label = m.label(pair, &ctx);
            if let Some(why) = m.applies(pair, &ctx) {
                if pair.base.is_some()
                    || !matches!(
                        m,
                        Method::TpdeInline | Method::Zstd19Patch | Method::Xor | Method::Sub
                    )
                {
                    rows.push(Row::skipped(m, label, why.to_owned()));
                }
                continue;
            }
            let key = (
                label.clone(),
                hex(&target_sha),
                base_sha.as_ref().map(|b| hex(b)),
            );
            if let Some(r) = previous.get(&key) {
                let mut r = r.clone();
                r.notes
                    .push(format!("reused from the run of {}", r.measured));
                rows.push(r);
                continue;
            }
            if let Some(r) = cache.get(m, &pair.target) {
                rows.push(r);
                continue;
            }
            let t0 = Instant::now();
            let progress = |what: &str| {
                eprintln!(
                    "[{:>6.1}s] {} | {label}: {what}",
                    started.elapsed().as_secs_f64(),
                    pair.name
                );
            };
            let row =
                match bench::measure_method(&ctx, pair, m, target_bytes, &target_sha, &progress) {
                    Ok(mut r) => {
                        r.measured = report.env.date.clone();
                        r
                    }
                    Err(e) => {
                        eprintln!("  failed: {e:#}");
                        Row::skipped(m, label, format!("FAILED: {e:#}"))
                    }
                };
            eprintln!(
                "  -> {:?} bytes, {:.1}s",
                row.size,
                t0.elapsed().as_secs_f64()
            );
            cache.put(m, &pair.target, &pair.name, &row);
            rows.push(row);
        }
        report.pairs.push(PairResult {
            pair: pair.clone(),
            target_sha256: hex(&target_sha),
            base_sha256: base_sha.as_ref().map(|b| hex(b)),
            target_bytes,
            base_bytes,
            rows,
        });
        report.env.elapsed_s = started.elapsed().as_secs_f64();
        report.env.load_end = loadavg();
        write_outputs(&report, &md_path, &json_path)?;
    }
    report.env.elapsed_s = started.elapsed().as_secs_f64();
    report.env.load_end = loadavg();
    let md = write_outputs(&report, &md_path, &json_path)?;
    println!("{md}");
    eprintln!("wrote {} and {}", md_path.display(), json_path.display());
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn write_outputs(r: &Report, md: &Path, json: &Path) -> Result<String> {
    let text = r.markdown();
    std::fs::write(md, &text)?;
    std::fs::write(json, serde_json::to_string_pretty(r)?)?;
    Ok(text)
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn render(json: &Path) -> Result<()> {
    let bytes = std::fs::read(json).with_context(|| format!("reading {}", json.display()))?;
    let r: Report = serde_json::from_slice(&bytes).context("not a tpde-bench results.json")?;
    println!("{}", r.markdown());
    Ok(())
}
