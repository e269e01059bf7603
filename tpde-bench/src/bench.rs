//! Methods and the measuring loop: for each method on a pair, pack on 1 and
//! N threads, unpack on 1 and N threads, each run in its own child process
//! (wall time, peak RSS from `wait4`), and check every reconstruction against
//! the target's sha256 — a method that does not round-trip is reported as
//! failed, not measured.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::measure::{self, Captured, RunStats};
use crate::pairs::Pair;
use crate::refcodec::Codec;

/// The methods, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
pub enum Method {
    /// tpde, base referenced (not stored). For a pair with no base: tpde alone.
    TpdeExt,
    /// tpde, base embedded (the archive alone reconstructs the target).
    TpdeInline,
    /// The `tpde` CLI binary, base referenced.
    TpdeCli,
    /// `zstd -3` of the target alone.
    Zstd3,
    /// `zstd -19` of the target alone.
    Zstd19,
    /// `zstd -19 --long=27 --patch-from=BASE`.
    Zstd19Patch,
    /// Byte planes + zstd of the target alone (reference codec).
    Planes,
    /// XOR + byte planes + zstd (reference codec).
    Xor,
    /// Wrapping SUB + zigzag + byte planes + zstd (reference codec).
    Sub,
    /// ZipNN: delta (XOR) against the base, or the target alone.
    Zipnn,
}

/// Every method, in table order.
pub const ALL: [Method; 10] = [
    Method::TpdeExt,
    Method::TpdeInline,
    Method::TpdeCli,
    Method::Zstd3,
    Method::Zstd19,
    Method::Zstd19Patch,
    Method::Planes,
    Method::Xor,
    Method::Sub,
    Method::Zipnn,
];

/// Tools and settings shared by all measurements of a run.
#[derive(Debug)]
pub struct Ctx {
    /// This harness' own executable (for `child` runs).
    pub self_exe: PathBuf,
    /// The zstd CLI, when present.
    pub zstd: Option<PathBuf>,
    /// The `tpde` CLI, when present and working.
    pub tpde_cli: Option<PathBuf>,
    /// Python with zipnn, and the child script path, when usable.
    pub zipnn: Option<(PathBuf, PathBuf)>,
    /// ZipNN version string.
    pub zipnn_version: String,
    /// "All threads".
    pub threads: usize,
    /// zstd level of the reference codecs.
    pub ref_level: i32,
    /// Also pack the slow (level-19) methods on all threads.
    pub slow_all_threads: bool,
    /// Repetitions for runs shorter than a second: at least this many...
    pub min_reps: u32,
    /// ...and at most this many.
    pub max_reps: u32,
    /// Scratch directory for archives and reconstructions.
    pub work: PathBuf,
}

impl Method {
    /// Whether the method is defined for this pair.
    pub fn applies(self, pair: &Pair, ctx: &Ctx) -> Option<&'static str> {
        let has_base = pair.base.is_some();
        match self {
            Method::TpdeInline | Method::Zstd19Patch | Method::Xor | Method::Sub if !has_base => {
                Some("needs a base")
            }
            Method::TpdeCli if ctx.tpde_cli.is_none() => Some("tpde CLI not available"),
            Method::Zstd3 | Method::Zstd19 | Method::Zstd19Patch if ctx.zstd.is_none() => {
                Some("zstd CLI not available")
            }
            Method::Zipnn if ctx.zipnn.is_none() => Some("ZipNN not available"),
            _ => None,
        }
    }

    /// A baseline (anything but tpde): reusable by `--reuse-baselines`.
    pub fn is_baseline(self) -> bool {
        !matches!(self, Method::TpdeExt | Method::TpdeInline | Method::TpdeCli)
    }

    /// Whether its result depends only on the target (cacheable across pairs).
    pub fn target_only(self) -> bool {
        matches!(self, Method::Zstd3 | Method::Zstd19 | Method::Planes)
    }

    /// Level-19 methods: packed on one thread only unless asked.
    pub fn slow(self) -> bool {
        matches!(
            self,
            Method::Zstd19 | Method::Zstd19Patch | Method::Planes | Method::Xor | Method::Sub
        )
    }

    /// Table label.
    pub fn label(self, pair: &Pair, ctx: &Ctx) -> String {
        let b = pair.base.is_some();
        let l = ctx.ref_level;
        match self {
            Method::TpdeExt if b => "tpde, external base".into(),
            Method::TpdeExt => "tpde (no base)".into(),
            Method::TpdeInline => "tpde, inline base (archive holds base)".into(),
            Method::TpdeCli if b => "`tpde` CLI, external base".into(),
            Method::TpdeCli => "`tpde` CLI (no base)".into(),
            Method::Zstd3 => "zstd -3, target alone".into(),
            Method::Zstd19 => "zstd -19, target alone".into(),
            Method::Zstd19Patch => "zstd -19 --long=27 --patch-from".into(),
            Method::Planes => format!("byte planes + zstd-{l}, target alone"),
            Method::Xor => format!("XOR + byte planes + zstd-{l}"),
            Method::Sub => format!("SUB (zigzag) + byte planes + zstd-{l}"),
            Method::Zipnn if b => format!("ZipNN {} delta", ctx.zipnn_version),
            Method::Zipnn => format!("ZipNN {}, target alone", ctx.zipnn_version),
        }
    }

    fn self_child(ctx: &Ctx, threads: usize) -> Command {
        let mut c = Command::new(&ctx.self_exe);
        c.env("RAYON_NUM_THREADS", threads.to_string()).arg("child");
        c
    }

    /// The command that packs `pair` into `out` on `threads` threads.
    fn pack_cmd(self, pair: &Pair, ctx: &Ctx, threads: usize, out: &Path) -> Result<Command> {
        let t = &pair.target;
        let n = threads.to_string();
        let base = pair.base.as_ref();
        let mut c = match self {
            Method::TpdeExt | Method::TpdeInline => {
                let mut c = Self::self_child(ctx, threads);
                c.arg("tpde-pack").arg("--target").arg(t);
                if let Some(b) = base {
                    c.arg("--base").arg(b);
                }
                if self == Method::TpdeExt && base.is_some() {
                    c.arg("--external-base");
                }
                c
            }
            Method::TpdeCli => {
                let mut c = Command::new(ctx.tpde_cli.as_ref().context("no CLI")?);
                c.arg("pack").arg("--target").arg(t);
                if let Some(b) = base {
                    c.arg("--base").arg(b).arg("--external-base");
                }
                c
            }
            Method::Zstd3 | Method::Zstd19 | Method::Zstd19Patch => {
                let mut c = Command::new(ctx.zstd.as_ref().context("no zstd")?);
                c.arg("-q").arg("-f").arg(format!("-T{threads}"));
                match self {
                    Method::Zstd3 => c.arg("-3"),
                    Method::Zstd19 => c.arg("-19"),
                    _ => {
                        let b = base.context("patch-from needs a base")?;
                        let mut p = std::ffi::OsString::from("--patch-from=");
                        p.push(b);
                        c.arg("-19").arg("--long=27").arg(p)
                    }
                };
                c.arg(t);
                c
            }
            Method::Planes | Method::Xor | Method::Sub => {
                let mut c = Self::self_child(ctx, threads);
                let codec = match self {
                    Method::Planes => Codec::Planes,
                    Method::Xor => Codec::Xor,
                    _ => Codec::Sub,
                };
                c.arg("ref-pack")
                    .arg("--codec")
                    .arg(format!("{codec:?}").to_lowercase())
                    .arg("--level")
                    .arg(ctx.ref_level.to_string())
                    .arg("--target")
                    .arg(t);
                if let (Some(b), false) = (base, codec == Codec::Planes) {
                    c.arg("--base").arg(b);
                }
                c
            }
            Method::Zipnn => {
                let (py, script) = ctx.zipnn.as_ref().context("no ZipNN")?;
                let mut c = Command::new(py);
                c.arg(script).arg("pack").arg("--target").arg(t);
                if let Some(b) = base {
                    c.arg("--base").arg(b);
                }
                c
            }
        };
        c.arg("-o").arg(out);
        if !matches!(self, Method::Zstd3 | Method::Zstd19 | Method::Zstd19Patch) {
            c.arg("--threads").arg(&n);
        }
        c.env("RAYON_NUM_THREADS", &n);
        Ok(c)
    }

    /// The command that reconstructs the target from `archive` into `out`.
    fn unpack_cmd(
        self,
        pair: &Pair,
        ctx: &Ctx,
        threads: usize,
        archive: &Path,
        out: &Path,
    ) -> Result<Command> {
        let n = threads.to_string();
        let base = pair.base.as_ref();
        let mut c = match self {
            Method::TpdeExt | Method::TpdeInline => {
                let mut c = Self::self_child(ctx, threads);
                c.arg("tpde-unpack").arg(archive);
                if let (Some(b), Method::TpdeExt) = (base, self) {
                    c.arg("--base").arg(b);
                }
                c.arg("--threads").arg(&n);
                c
            }
            Method::TpdeCli => {
                let mut c = Command::new(ctx.tpde_cli.as_ref().context("no CLI")?);
                c.arg("unpack").arg(archive);
                if let Some(b) = base {
                    c.arg("--base").arg(b);
                }
                c
            }
            Method::Zstd3 | Method::Zstd19 | Method::Zstd19Patch => {
                let mut c = Command::new(ctx.zstd.as_ref().context("no zstd")?);
                c.arg("-q").arg("-f").arg("-d").arg(format!("-T{threads}"));
                if self == Method::Zstd19Patch {
                    let b = base.context("patch-from needs a base")?;
                    let mut p = std::ffi::OsString::from("--patch-from=");
                    p.push(b);
                    c.arg("--long=27").arg(p);
                }
                c.arg(archive);
                c
            }
            Method::Planes | Method::Xor | Method::Sub => {
                let mut c = Self::self_child(ctx, threads);
                c.arg("ref-unpack").arg(archive);
                if let (Some(b), false) = (base, self == Method::Planes) {
                    c.arg("--base").arg(b);
                }
                c.arg("--threads").arg(&n);
                c
            }
            Method::Zipnn => {
                let (py, script) = ctx.zipnn.as_ref().context("no ZipNN")?;
                let mut c = Command::new(py);
                c.arg(script).arg("unpack").arg(archive);
                if let Some(b) = base {
                    c.arg("--base").arg(b);
                }
                c.arg("--threads").arg(&n);
                c
            }
        };
        c.arg("-o").arg(out);
        c.env("RAYON_NUM_THREADS", &n);
        Ok(c)
    }
}

/// One timed operation at one thread count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timed {
    /// Threads given to the method.
    pub threads: usize,
    /// Seconds used for MB/s: the best wall time over the repetitions (for
    /// ZipNN: its own timer, which excludes Python and torch start-up).
    pub secs: f64,
    /// Target MB (10^6 bytes) per second.
    pub mb_s: f64,
    /// Target MB per CPU-second (user + system) of the best run: per-thread
    /// speed that does not depend on how busy the machine was.
    #[serde(default)]
    pub mb_cpu_s: f64,
    /// Best wall time of the child process, seconds.
    pub wall_s: f64,
    /// Highest peak RSS over the repetitions, KiB.
    pub maxrss_kib: u64,
    /// CPU seconds (user + system) of the best run.
    pub cpu_s: f64,
    /// Repetitions.
    pub reps: u32,
}

/// Per-chunk statistics of a tpde archive packed against a base.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeltaStats {
    /// Target tensors stored as deltas against a base tensor.
    pub delta_tensors: u64,
    /// All target tensors.
    pub tensors: u64,
    /// Elements of all target tensors.
    pub elements: u64,
    /// Elements that differ from the base (sum of `changed` over chunks).
    pub changed: u64,
    /// Chunks by encoding.
    pub zero_chunks: u64,
    /// Sparse chunks.
    pub sparse_chunks: u64,
    /// Dense chunks.
    pub dense_chunks: u64,
    /// Changed elements inside sparse chunks.
    pub sparse_changed: u64,
    /// Stored bytes of the positions streams (sparse chunks).
    pub positions_bytes: u64,
    /// Stored bytes of the values streams of sparse chunks.
    pub sparse_values_bytes: u64,
    /// Stored bytes of all chunks.
    pub chunk_bytes: u64,
}

impl DeltaStats {
    /// Bits of positions per changed element, over sparse chunks.
    pub fn position_bits(&self) -> Option<f64> {
        (self.sparse_changed > 0)
            .then(|| self.positions_bytes as f64 * 8.0 / self.sparse_changed as f64)
    }
    /// Bits of values per changed element, over sparse chunks.
    pub fn value_bits(&self) -> Option<f64> {
        (self.sparse_changed > 0)
            .then(|| self.sparse_values_bytes as f64 * 8.0 / self.sparse_changed as f64)
    }
    /// All chunk bits per changed element.
    pub fn total_bits(&self) -> Option<f64> {
        (self.changed > 0).then(|| self.chunk_bytes as f64 * 8.0 / self.changed as f64)
    }
}

fn delta_stats(archive: &Path) -> Result<DeltaStats> {
    use tpde_format::format::{BaseRef, ChunkKind, Payload};
    let a = tpde_format::Archive::open(archive)?;
    let mut s = DeltaStats::default();
    for t in &a.index().tensors {
        s.tensors += 1;
        if !matches!(t.base, BaseRef::None) {
            s.delta_tensors += 1;
        }
        let Payload::Chunked { chunks, .. } = &t.payload else {
            continue;
        };
        for c in chunks {
            s.elements += c.elem_count;
            s.changed += c.changed;
            s.chunk_bytes += c.stored_len;
            match c.kind {
                ChunkKind::Zero => s.zero_chunks += 1,
                ChunkKind::Dense => s.dense_chunks += 1,
                ChunkKind::Sparse => {
                    s.sparse_chunks += 1;
                    s.sparse_changed += c.changed;
                    s.positions_bytes += c.positions.stored_len;
                    s.sparse_values_bytes += c.values.stored_len;
                }
            }
        }
    }
    Ok(s)
}

/// One table row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Which method.
    pub method: Method,
    /// Table label.
    pub label: String,
    /// Archive bytes (`None` when the method failed or was skipped).
    pub size: Option<u64>,
    /// Target bytes / archive bytes.
    pub ratio: Option<f64>,
    /// Pack runs by thread count.
    pub pack: Vec<Timed>,
    /// Unpack runs by thread count.
    pub unpack: Vec<Timed>,
    /// tpde external-base row only: decode without writing, by thread count.
    pub decode: Vec<Timed>,
    /// Every reconstruction matched the target's sha256.
    pub verified: bool,
    /// tpde only: chunk statistics.
    pub delta: Option<DeltaStats>,
    /// Notes (skips, failures, reuse).
    pub notes: Vec<String>,
    /// Date of the run that measured this row.
    #[serde(default)]
    pub measured: String,
}

impl Row {
    /// A row for a method that was not run.
    pub fn skipped(method: Method, label: String, why: String) -> Row {
        Row {
            method,
            label,
            size: None,
            ratio: None,
            pack: Vec::new(),
            unpack: Vec::new(),
            decode: Vec::new(),
            verified: false,
            delta: None,
            notes: vec![why],
            measured: String::new(),
        }
    }
}

/// SHA-256 of a file.
pub fn file_sha256(p: &Path) -> Result<[u8; 32]> {
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().into())
}

fn remove(p: &Path) {
    let _ = std::fs::remove_file(p);
    let _ = std::fs::remove_dir_all(p);
}

/// Runs `make()` repeatedly (removing `out` first each time): once if the
/// run takes ≥ 4 s, else until `min_reps` runs and ≥ 0.5 s in total (or 4 s
/// in total), at most `max_reps`. Returns the best (shortest) run, the highest peak RSS, the
/// run count, and the captured output of the best run.
fn repeat(
    ctx: &Ctx,
    out: &Path,
    make: &dyn Fn() -> Result<Command>,
    secs_of: &dyn Fn(&RunStats, &Captured) -> f64,
) -> Result<(f64, RunStats, u64, u32)> {
    let mut best: Option<(f64, RunStats)> = None;
    let mut maxrss = 0;
    let mut total = 0.0;
    let mut reps = 0;
    loop {
        remove(out);
        let mut cmd = make()?;
        let (st, cap) = measure::run(&mut cmd, &ctx.work)?;
        reps += 1;
        total += st.wall_s;
        maxrss = maxrss.max(st.maxrss_kib);
        let secs = secs_of(&st, &cap);
        if best.as_ref().is_none_or(|(s, _)| secs < *s) {
            best = Some((secs, st));
        }
        // Long runs once; short ones until min_reps and 0.5 s, or 4 s in all.
        let first_long = reps == 1 && st.wall_s >= 4.0;
        let enough = (reps >= ctx.min_reps && total >= 0.5) || total >= 4.0;
        if first_long || enough || reps >= ctx.max_reps {
            break;
        }
    }
    let (secs, st) = best.context("no run")?;
    Ok((secs, st, maxrss, reps))
}

/// ZipNN's own timer (excludes interpreter and torch import); wall otherwise.
fn zipnn_secs(st: &RunStats, cap: &Captured) -> f64 {
    cap.stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["work_s"].as_f64())
        .unwrap_or(st.wall_s)
}

fn timed(
    threads: usize,
    target_bytes: u64,
    secs: f64,
    st: &RunStats,
    maxrss: u64,
    reps: u32,
) -> Timed {
    Timed {
        threads,
        secs,
        mb_s: target_bytes as f64 / 1e6 / secs.max(1e-9),
        mb_cpu_s: target_bytes as f64 / 1e6 / (st.user_s + st.sys_s).max(1e-9),
        wall_s: st.wall_s,
        maxrss_kib: maxrss,
        cpu_s: st.user_s + st.sys_s,
        reps,
    }
}

/// Measures one method on one pair.
pub fn measure_method(
    ctx: &Ctx,
    pair: &Pair,
    method: Method,
    target_bytes: u64,
    target_sha: &[u8; 32],
    progress: &dyn Fn(&str),
) -> Result<Row> {
    let label = method.label(pair, ctx);
    let archive = ctx.work.join("archive");
    let recon = ctx.work.join("recon.safetensors");
    let mut row = Row::skipped(method, label, String::new());
    row.notes.clear();
    let secs_of: &dyn Fn(&RunStats, &Captured) -> f64 = if method == Method::Zipnn {
        &zipnn_secs
    } else {
        &|st, _| st.wall_s
    };
    let mut thread_counts = vec![1];
    if ctx.threads > 1 {
        thread_counts.push(ctx.threads);
    }
    let pack_threads: Vec<usize> = if method.slow() && !ctx.slow_all_threads {
        vec![1]
    } else {
        thread_counts.clone()
    };
    // Pack: the last thread count's archive is kept for the unpack runs.
    for &t in &pack_threads {
        progress(&format!("pack, {t} thread(s)"));
        let (secs, st, rss, reps) = repeat(
            ctx,
            &archive,
            &|| method.pack_cmd(pair, ctx, t, &archive),
            secs_of,
        )?;
        let size = std::fs::metadata(&archive)
            .with_context(|| format!("{} wrote no archive", row.label))?
            .len();
        match row.size {
            None => row.size = Some(size),
            Some(s) if s != size => row
                .notes
                .push(format!("{t} threads: {size} bytes (1 thread: {s})")),
            Some(_) => {}
        }
        row.pack.push(timed(t, target_bytes, secs, &st, rss, reps));
    }
    if pack_threads.len() < thread_counts.len() {
        row.notes.push("packed on 1 thread only (slow)".into());
    }
    row.ratio = row.size.map(|s| target_bytes as f64 / s.max(1) as f64);
    if matches!(method, Method::TpdeExt | Method::TpdeCli) && pair.base.is_some() {
        row.delta = delta_stats(&archive).ok();
    }
    // Unpack, and check the reconstruction after every thread count.
    row.verified = true;
    for &t in &thread_counts {
        progress(&format!("unpack, {t} thread(s)"));
        let (secs, st, rss, reps) = repeat(
            ctx,
            &recon,
            &|| method.unpack_cmd(pair, ctx, t, &archive, &recon),
            secs_of,
        )?;
        row.unpack
            .push(timed(t, target_bytes, secs, &st, rss, reps));
        if &file_sha256(&recon)? != target_sha {
            row.verified = false;
            row.notes.push(format!(
                "ROUND TRIP FAILED: {t}-thread reconstruction differs"
            ));
        }
    }
    if method == Method::TpdeExt {
        for &t in &thread_counts {
            progress(&format!("decode without writing, {t} thread(s)"));
            let (secs, st, rss, reps) = repeat(
                ctx,
                &recon,
                &|| {
                    let mut c = Method::self_child(ctx, t);
                    c.arg("tpde-decode").arg(&archive);
                    if let Some(b) = &pair.base {
                        c.arg("--base").arg(b);
                    }
                    c.arg("--threads").arg(t.to_string());
                    Ok(c)
                },
                secs_of,
            )?;
            row.decode
                .push(timed(t, target_bytes, secs, &st, rss, reps));
        }
    }
    remove(&archive);
    remove(&recon);
    Ok(row)
}

/// Results of target-only methods, reused by later pairs with the same target.
#[derive(Debug, Default)]
pub struct Cache {
    rows: HashMap<(Method, PathBuf), (String, Row)>,
}

impl Cache {
    /// A cached row for this method and target, with a note naming its pair.
    pub fn get(&self, m: Method, target: &Path) -> Option<Row> {
        let (pair, row) = self.rows.get(&(m, target.to_path_buf()))?;
        let mut r = row.clone();
        r.notes
            .push(format!("same target: measured with \"{pair}\""));
        Some(r)
    }
    /// Stores a row.
    pub fn put(&mut self, m: Method, target: &Path, pair: &str, row: &Row) {
        if m.target_only() {
            self.rows
                .insert((m, target.to_path_buf()), (pair.to_owned(), row.clone()));
        }
    }
}

/// Checks that `zstd` runs, returning its version line.
pub fn zstd_version(zstd: &Path) -> Result<String> {
    let out = Command::new(zstd).arg("--version").output()?;
    if !out.status.success() {
        bail!("{} --version failed", zstd.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
