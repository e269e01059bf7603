//! The `tpde inspect` table, rendered from the library's summary. Pure
//! formatting: every number comes from `tpde_format::inspect`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use indicatif::HumanBytes;
use tpde_format::inspect::{ArchiveSummary, TensorSummary};

/// Names longer than this are shortened in the middle so one long name
/// cannot push every other column off the screen (`--json` has them whole).
const MAX_NAME: usize = 48;

/// Archive names come from untrusted bytes: show control characters
/// escaped so a hostile name cannot drive the terminal.
pub fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let esc: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            esc
        })
        .collect()
}

/// Shortens `s` to at most `max` characters, keeping both ends.
fn elide(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_owned();
    }
    let keep = max.saturating_sub(1);
    let head = keep / 2;
    let tail = keep - head;
    let mut out: String = s.chars().take(head).collect();
    out.push('…');
    out.extend(s.chars().skip(n - tail));
    out
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{}:{v}", printable(k)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ratio(raw: u64, r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{r:.2}x"),
        None if raw > 0 => "∞".into(),
        None => "-".into(),
    }
}

fn percent(p: Option<f64>) -> String {
    p.map_or_else(|| "-".into(), |p| format!("{:.1}%", p * 100.0))
}

fn shape(s: &[u64]) -> String {
    let dims: Vec<String> = s.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

fn base(t: &TensorSummary) -> String {
    let mut s = printable(&t.base);
    let mut notes = Vec::new();
    match &t.base_tensor {
        Some(b) if b != &t.name => notes.push(printable(b)),
        _ => {}
    }
    match (t.mapped_rows, t.row_elems) {
        // A sliced base's rows are its own length, not the first dimension.
        (Some(m), Some(r)) if t.base.ends_with("-slices") && r > 0 => {
            let n = t.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let rows = n.unwrap_or(0) / r;
            notes.push(format!("{m}/{rows} rows of {r}"));
        }
        (Some(m), _) => {
            if let Some(&rows) = t.shape.first() {
                notes.push(format!("{m}/{rows} rows"));
            }
        }
        _ => {}
    }
    if !notes.is_empty() {
        s = format!("{s} ({})", notes.join(", "));
    }
    s
}

fn row(t: &TensorSummary) -> [String; 10] {
    [
        elide(&printable(&t.name), MAX_NAME),
        printable(&t.dtype),
        shape(&t.shape),
        HumanBytes(t.raw_bytes).to_string(),
        HumanBytes(t.stored_bytes).to_string(),
        ratio(t.raw_bytes, t.ratio),
        // Against no base, "changed" would only count non-zero elements.
        if t.base == "none" {
            "-".into()
        } else {
            percent(t.changed_share)
        },
        counts(&t.encodings),
        counts(&t.ops),
        base(t),
    ]
}

const HEADS: [&str; 10] = [
    "name",
    "dtype",
    "shape",
    "raw",
    "stored",
    "ratio",
    "changed",
    "encodings",
    "op",
    "base",
];
/// Columns aligned right (numbers).
const RIGHT: [bool; 10] = [
    false, false, false, true, true, true, true, false, false, false,
];

fn line(out: &mut String, cells: &[String; 10], widths: &[usize; 10]) {
    let mut s = String::new();
    for (i, c) in cells.iter().enumerate() {
        let pad = widths[i].saturating_sub(c.chars().count());
        if i > 0 {
            s.push_str("  ");
        }
        if RIGHT[i] {
            s.extend(std::iter::repeat_n(' ', pad));
            s.push_str(c);
        } else {
            s.push_str(c);
            if i + 1 < cells.len() {
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
    }
    let _ = writeln!(out, "{}", s.trim_end());
}

/// The whole `inspect` report: archive facts, one row per tensor, totals.
pub fn render(archive: &str, s: &ArchiveSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "archive  {archive}  (tpde format {}, {})",
        printable(&s.format_version),
        HumanBytes(s.archive_bytes)
    );
    for f in &s.files {
        let _ = writeln!(
            out,
            "target   {}  {}  sha256 {}",
            printable(&f.name),
            HumanBytes(f.bytes),
            f.sha256
        );
    }
    if s.inline_base.tensors > 0 {
        let _ = writeln!(
            out,
            "base     inline: {} tensors, {} raw, {} stored",
            s.inline_base.tensors,
            HumanBytes(s.inline_base.raw_bytes),
            HumanBytes(s.inline_base.stored_bytes)
        );
    }
    for f in &s.external_base_files {
        let _ = writeln!(
            out,
            "base     external (reading needs --base): {}  {}  sha256 {}",
            printable(&f.name),
            HumanBytes(f.bytes),
            f.sha256
        );
    }
    if s.inline_base.tensors == 0 && s.external_base_files.is_empty() {
        let _ = writeln!(out, "base     none (standalone archive)");
    }
    let _ = writeln!(out);

    let heads = HEADS.map(str::to_owned);
    let rows: Vec<[String; 10]> = s.tensors.iter().map(row).collect();
    let t = &s.totals;
    let total = [
        format!("total ({} tensors)", t.tensors),
        String::new(),
        String::new(),
        HumanBytes(t.raw_bytes).to_string(),
        HumanBytes(t.stored_bytes).to_string(),
        ratio(
            t.raw_bytes,
            (t.stored_bytes > 0).then(|| t.raw_bytes as f64 / t.stored_bytes as f64),
        ),
        percent(t.changed_share),
        String::new(),
        String::new(),
        String::new(),
    ];
    let mut widths = [0usize; 10];
    for r in std::iter::once(&heads)
        .chain(&rows)
        .chain(std::iter::once(&total))
    {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    line(&mut out, &heads, &widths);
    let rule = widths.map(|w| "-".repeat(w));
    line(&mut out, &rule, &widths);
    for r in &rows {
        line(&mut out, r, &widths);
    }
    line(&mut out, &rule, &widths);
    line(&mut out, &total, &widths);
    let target: u64 = s.files.iter().map(|f| f.bytes).sum();
    let _ = writeln!(
        out,
        "\ntarget files {} / archive {} = {}",
        HumanBytes(target),
        HumanBytes(s.archive_bytes),
        ratio(target, s.totals.ratio_vs_archive)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elide_keeps_both_ends_and_width() {
        let long = "model.layers.31.self_attn.q_proj.weight.with.a.very.long.suffix";
        let e = elide(long, 20);
        assert_eq!(e.chars().count(), 20);
        assert!(e.starts_with("model.lay"));
        assert!(e.ends_with("ng.suffix"));
        assert_eq!(elide("short", 20), "short");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("ok.name"), "ok.name");
    }
}
