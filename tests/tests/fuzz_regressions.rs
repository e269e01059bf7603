//! Replays the fuzz targets' inputs on stable (issue 4): every minimized
//! crash under `fuzz/regressions/<target>/` (named after the bug it found;
//! see FUZZING.md), the committed seeds under `fuzz/seeds/<target>/`, and
//! for the archive targets the golden vectors in `tests/vectors/v1/`. The
//! target bodies are `fuzz/src/lib.rs`, included here by path, so this is
//! exactly the code libFuzzer runs.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod fuzz;

/// Every file directly under `dirs` (relative to the repo root), sorted.
fn inputs(dirs: &[&str]) -> Vec<(PathBuf, Vec<u8>)> {
    let root = tpde_tests::repo_root();
    let mut out = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(root.join(d)) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_file() && !name.starts_with('.') && name != "README.md" {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Runs `body` on every input; fails naming each input that panicked.
fn replay(target: &str, extra: &[&str], min: usize, body: fn(&[u8])) {
    let regressions = format!("fuzz/regressions/{target}");
    let seeds = format!("fuzz/seeds/{target}");
    let mut dirs = vec![regressions.as_str(), seeds.as_str()];
    dirs.extend_from_slice(extra);
    let all = inputs(&dirs);
    assert!(
        all.len() >= min,
        "{target}: only {} inputs found under {dirs:?}",
        all.len()
    );
    let failed: Vec<String> = all
        .iter()
        .filter(|(_, bytes)| catch_unwind(AssertUnwindSafe(|| body(bytes))).is_err())
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: inputs that fail: {failed:#?}");
    eprintln!("{target}: {} inputs replayed", all.len());
}

#[test]
fn open_decode_replays() {
    replay("open_decode", &["tests/vectors/v1"], 8, fuzz::open_decode);
}

#[test]
fn equivalence_replays() {
    replay("equivalence", &["tests/vectors/v1"], 8, fuzz::equivalence);
}

#[test]
fn roundtrip_replays() {
    replay("roundtrip", &[], 4, fuzz::roundtrip_bytes);
}

#[test]
fn rans_plane_replays() {
    replay("rans_plane", &[], 4, fuzz::rans_plane);
}

#[test]
fn gpu_reference_replays() {
    // Raw archive bytes, as for `open_decode`: its seeds and the vectors.
    replay(
        "gpu_reference",
        &["fuzz/seeds/open_decode", "tests/vectors/v1"],
        8,
        fuzz::gpu_reference,
    );
}
