//! Markdown and JSON output: one table per pair, the tpde delta detail
//! (bits per changed element), and the issue-5 targets checked against the
//! numbers of this same run.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::bench::{Method, Row, Timed};
use crate::pairs::{Kind, Pair};

/// Everything one run measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// How the run was set up.
    pub env: Env,
    /// Pairs, in order.
    pub pairs: Vec<PairResult>,
    /// Pairs not measured, with why.
    pub skipped: Vec<String>,
    /// Notes about the run (tools missing, etc.).
    pub notes: Vec<String>,
}

/// Machine, tools and command.
#[derive(Debug, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Env {
    /// `date -u`.
    pub date: String,
    /// The command to rerun this.
    pub command: String,
    /// git commit of the tree measured.
    pub commit: String,
    /// CPU model (lscpu).
    pub cpu: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// RAM.
    pub mem: String,
    /// "All threads".
    pub threads: usize,
    /// /proc/loadavg at the start.
    pub load_start: String,
    /// /proc/loadavg at the end.
    pub load_end: String,
    /// Tool versions.
    pub tools: Vec<String>,
    /// Total run time, seconds.
    pub elapsed_s: f64,
}

/// One pair's rows.
#[derive(Debug, Serialize, Deserialize)]
pub struct PairResult {
    /// The pair.
    pub pair: Pair,
    /// sha256 of the target file (hex).
    #[serde(default)]
    pub target_sha256: String,
    /// sha256 of the base file (hex).
    #[serde(default)]
    pub base_sha256: Option<String>,
    /// Target size, bytes.
    pub target_bytes: u64,
    /// Base size, bytes.
    pub base_bytes: Option<u64>,
    /// One row per method.
    pub rows: Vec<Row>,
}

fn fmt_bytes(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mbs(t: &[Timed], threads: usize) -> String {
    match t.iter().find(|x| x.threads == threads) {
        Some(x) if x.mb_s >= 100.0 => format!("{:.0}", x.mb_s),
        Some(x) if x.mb_s >= 10.0 => format!("{:.1}", x.mb_s),
        Some(x) => format!("{:.2}", x.mb_s),
        None => "—".into(),
    }
}

fn rss(t: &[Timed]) -> String {
    t.iter()
        .map(|x| x.maxrss_kib)
        .max()
        .map(|k| format!("{:.0}", k as f64 / 1024.0))
        .unwrap_or_else(|| "—".into())
}

fn row_of(p: &PairResult, m: Method) -> Option<&Row> {
    p.rows.iter().find(|r| r.method == m && r.size.is_some())
}

impl Report {
    /// The whole report as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let e = &self.env;
        let n = e.threads;
        let _ = writeln!(
            s,
            "Measured {} on {} ({} CPUs, {} RAM), commit {}.",
            e.date, e.cpu, e.cpus, e.mem, e.commit
        );
        let _ = writeln!(
            s,
            "Command: `{}` ({:.0} s). Load average at start / end: {} / {}.",
            e.command, e.elapsed_s, e.load_start, e.load_end
        );
        let _ = writeln!(s, "Tools: {}.", e.tools.join("; "));
        let _ = writeln!(s);
        let _ = writeln!(s, "Ratio = target bytes / archive bytes. MB/s = target MB (10^6 B) per second of wall time of the child process (best of the repetitions), 1 thread and {n} threads. Peak RSS = `ru_maxrss` of the child from `wait4`, highest over its runs. Every reconstruction is checked against the target's sha256; `✓` = all matched. **Bold** = smallest archive that does not embed the base.");
        for note in &self.notes {
            let _ = writeln!(s, "\n- {note}");
        }
        for p in &self.pairs {
            let _ = writeln!(s, "\n### {}\n", p.pair.name);
            let base = match (&p.pair.base, p.base_bytes) {
                (Some(b), Some(n)) => format!("base `{}` ({} B)", b.display(), fmt_bytes(n)),
                _ => "no base".into(),
            };
            let _ = writeln!(
                s,
                "target `{}` ({} B), {base}\n",
                p.pair.target.display(),
                fmt_bytes(p.target_bytes)
            );
            let _ = writeln!(s, "| method | size (B) | ratio | pack MB/s 1T | pack MB/s {n}T | unpack MB/s 1T | unpack MB/s {n}T | pack RSS MiB | unpack RSS MiB | ok | notes |");
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|:-:|---|");
            let best = p
                .rows
                .iter()
                .filter(|r| r.method != Method::TpdeInline)
                .filter_map(|r| r.size)
                .min();
            for r in &p.rows {
                let size = match r.size {
                    Some(x) if Some(x) == best => format!("**{}**", fmt_bytes(x)),
                    Some(x) => fmt_bytes(x),
                    None => "—".into(),
                };
                let ratio = r
                    .ratio
                    .map(|x| format!("{x:.3}"))
                    .unwrap_or_else(|| "—".into());
                let ok = if r.size.is_none() {
                    ""
                } else if r.verified {
                    "✓"
                } else {
                    "✗"
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.label,
                    size,
                    ratio,
                    mbs(&r.pack, 1),
                    mbs(&r.pack, n),
                    mbs(&r.unpack, 1),
                    mbs(&r.unpack, n),
                    rss(&r.pack),
                    rss(&r.unpack),
                    ok,
                    r.notes.join("; ")
                );
            }
        }
        self.delta_detail(&mut s);
        self.targets(&mut s);
        if !self.skipped.is_empty() {
            let _ = writeln!(s, "\nNot measured:");
            for x in &self.skipped {
                let _ = writeln!(s, "- {x}");
            }
        }
        s
    }

    fn delta_detail(&self, s: &mut String) {
        let rows: Vec<_> = self
            .pairs
            .iter()
            .filter_map(|p| Some((p, row_of(p, Method::TpdeExt)?)))
            .filter_map(|(p, r)| Some((p, r, r.delta.as_ref()?)))
            .collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(s, "\n### tpde delta detail (external-base archive)\n");
        let _ = writeln!(s, "Bits per changed element = stored bytes × 8 / elements that differ from the base; positions and values are over sparse chunks only (positions: sum of `positions.stored_len`).\n");
        let _ = writeln!(s, "| pair | delta tensors | changed elements | chunks zero / sparse / dense | position bits per changed (sparse) | value bits per changed (sparse) | archive chunk bits per changed (all) | ratio vs target |");
        let _ = writeln!(s, "|---|---:|---:|---|---:|---:|---:|---:|");
        let f = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "—".into());
        for (p, r, d) in rows {
            let share = if d.elements > 0 {
                100.0 * d.changed as f64 / d.elements as f64
            } else {
                0.0
            };
            let _ = writeln!(
                s,
                "| {} | {} / {} | {} ({share:.1}%) | {} / {} / {} | {} | {} | {} | {} |",
                p.pair.name,
                d.delta_tensors,
                d.tensors,
                fmt_bytes(d.changed),
                d.zero_chunks,
                d.sparse_chunks,
                d.dense_chunks,
                f(d.position_bits()),
                f(d.value_bits()),
                f(d.total_bits()),
                r.ratio.map(|x| format!("{x:.2}×")).unwrap_or_default()
            );
        }
    }

    fn targets(&self, s: &mut String) {
        let _ = writeln!(s, "\n### Issue 5 targets, checked on this run\n");
        let _ = writeln!(s, "Size: tpde (external base) must be ≤ the best reference row and, on pairs with a base, ≥ 5% smaller than ZipNN delta and XOR + byte planes (i.e. ≤ 0.95× each). Columns are tpde size / that row's size.\n");
        let _ = writeln!(s, "| pair | tpde B | best reference | tpde / best | tpde / ZipNN | tpde / XOR | verdict |");
        let _ = writeln!(s, "|---|---:|---|---:|---:|---:|---|");
        for p in &self.pairs {
            let Some(t) = row_of(p, Method::TpdeExt).and_then(|r| r.size) else {
                continue;
            };
            let best = p
                .rows
                .iter()
                .filter(|r| r.method.is_baseline())
                .filter_map(|r| Some((r.size?, r)))
                .min_by_key(|(sz, _)| *sz);
            let rel = |m: Method| {
                row_of(p, m)
                    .and_then(|r| r.size)
                    .map(|x| t as f64 / x as f64)
            };
            let (zn, xr) = (rel(Method::Zipnn), rel(Method::Xor));
            let f = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "—".into());
            let mut miss = Vec::new();
            if let Some((b, _)) = best {
                if t > b {
                    miss.push(format!(
                        "{:.1}% larger than best",
                        100.0 * (t as f64 / b as f64 - 1.0)
                    ));
                }
            }
            // The 5% margins are over delta codecs; a pair with no base has none.
            let delta_pair = p.pair.base.is_some();
            if delta_pair && zn.is_some_and(|v| v > 0.95) {
                miss.push("not 5% under ZipNN".into());
            }
            if delta_pair && xr.is_some_and(|v| v > 0.95) {
                miss.push("not 5% under XOR".into());
            }
            let verdict = if miss.is_empty() {
                "met".into()
            } else {
                format!("missed: {}", miss.join(", "))
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                p.pair.name,
                fmt_bytes(t),
                best.map(|(b, r)| format!("{} ({})", fmt_bytes(b), r.label))
                    .unwrap_or_default(),
                f(best.map(|(b, _)| t as f64 / b as f64)),
                f(zn),
                f(xr),
                verdict
            );
        }
        let _ = writeln!(s, "\nSparse fine-tunes: tpde (external base) ≥ 20× smaller than the target alone on the frozen-layer pair (other fine-tune pairs shown for reference).\n");
        for p in &self.pairs {
            if !matches!(p.pair.kind, Kind::FineTune | Kind::FineTuneFrozen) {
                continue;
            }
            if let Some(r) = row_of(p, Method::TpdeExt).and_then(|r| r.ratio) {
                let goal = if p.pair.kind == Kind::FineTuneFrozen {
                    if r >= 20.0 {
                        " — target met"
                    } else {
                        " — target (≥ 20×) missed"
                    }
                } else {
                    ""
                };
                let _ = writeln!(s, "- {}: {r:.2}×{goal}", p.pair.name);
            }
        }
        let n = self.env.threads;
        let _ = writeln!(s, "\nSpeed (tpde external base, default level; pairs with a target ≥ 10 MB only, smaller ones are dominated by process start-up). Targets: pack ≥ 250 MB/s per thread; unpack ≥ 1000 MB/s per thread; {n}T ≥ 0.80 × {n} × 1T. Each cell is `wall / CPU`: MB/s over the 1-thread run's wall time, and over its CPU time (user + system), which is the per-thread speed whatever else the machine was running. Unpack is shown twice: writing the safetensors file (with fsync), and `decode` (every file streamed through the decoder with digests checked, output discarded) — the codec alone. Per-thread verdicts use the CPU figures; scaling uses wall time of decode.\n");
        let load: f64 = self
            .env
            .load_start
            .split_whitespace()
            .chain(self.env.load_end.split_whitespace())
            .filter_map(|x| x.parse().ok())
            .fold(0.0, f64::max);
        if load > self.env.cpus as f64 {
            let _ = writeln!(s, "**Load average reached {load:.1} on {} CPUs during this run**: other processes competed for the CPUs, so wall-clock MB/s are depressed and the scaling column says little. The CPU-time figures are not affected by waiting, only by cache and memory-bandwidth contention.\n", self.env.cpus);
        }
        let _ = writeln!(s, "| pair | pack 1T | unpack 1T | decode 1T | pack {n}T | decode {n}T | decode scaling | verdict |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---|");
        let tb = |p: &PairResult| p.target_bytes as f64 / 1e6;
        for p in &self.pairs {
            if p.target_bytes < 10_000_000 {
                continue;
            }
            let Some(r) = row_of(p, Method::TpdeExt) else {
                continue;
            };
            let at = |t: &[Timed], k: usize| t.iter().find(|x| x.threads == k).cloned();
            let cpu = |t: Option<Timed>| t.map(|x| tb(p) / x.cpu_s.max(1e-9));
            let both = |t: &[Timed]| match at(t, 1) {
                Some(x) => format!("{:.0} / {:.0}", x.mb_s, tb(p) / x.cpu_s.max(1e-9)),
                None => "—".into(),
            };
            let (pc, uc, dc) = (
                cpu(at(&r.pack, 1)),
                cpu(at(&r.unpack, 1)),
                cpu(at(&r.decode, 1)),
            );
            let (d1, dn) = (
                at(&r.decode, 1).map(|x| x.mb_s),
                at(&r.decode, n).map(|x| x.mb_s),
            );
            let scaling = d1.zip(dn).map(|(a, b)| b / (a * n as f64));
            let mut miss = Vec::new();
            if pc.is_some_and(|v| v < 250.0) {
                miss.push("pack");
            }
            if uc.is_some_and(|v| v < 1000.0) {
                miss.push("unpack");
            }
            if dc.is_some_and(|v| v < 1000.0) {
                miss.push("decode");
            }
            if scaling.is_some_and(|v| v < 0.8) {
                miss.push("scaling");
            }
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                p.pair.name,
                both(&r.pack),
                both(&r.unpack),
                both(&r.decode),
                mbs(&r.pack, n),
                mbs(&r.decode, n),
                scaling
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_else(|| "—".into()),
                if miss.is_empty() {
                    "met".into()
                } else {
                    format!("missed: {}", miss.join(", "))
                }
            );
        }
    }
}

/// The part of an earlier `results.json` that `--reuse-baselines` reads.
#[derive(Debug, Deserialize)]
pub struct Previous {
    pairs: Vec<PreviousPair>,
}

#[derive(Debug, Deserialize)]
struct PreviousPair {
    target_sha256: String,
    base_sha256: Option<String>,
    rows: Vec<Row>,
}

impl Previous {
    /// Baseline rows that measured and round-tripped, keyed by label (which
    /// names level and version) and the two files' digests.
    pub fn baselines(self) -> std::collections::HashMap<(String, String, Option<String>), Row> {
        let mut m = std::collections::HashMap::new();
        for p in self.pairs {
            for mut r in p.rows {
                if !r.method.is_baseline()
                    || r.size.is_none()
                    || !r.verified
                    || r.measured.is_empty()
                {
                    continue;
                }
                r.notes
                    .retain(|n| !n.starts_with("reused from") && !n.starts_with("same target:"));
                m.insert(
                    (
                        r.label.clone(),
                        p.target_sha256.clone(),
                        p.base_sha256.clone(),
                    ),
                    r,
                );
            }
        }
        m
    }
}
