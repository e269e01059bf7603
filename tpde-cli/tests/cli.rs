//! End-to-end tests of the `tpde` binary: every command, every exit code,
//! the `--json` shape, refusal to overwrite, corruption, missing bases,
//! `--tensor` extraction and sharded round trips. They run the real binary
//! (`CARGO_BIN_EXE_tpde`) with stdout/stderr piped, as a script would.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest as _, Sha256};
use tpde_format::format::Payload;
use tpde_format::safetensors::{make_header, Checkpoint};
use tpde_format::{Archive, Dtype};

/// Published sha256 of the example target (examples/silero-vad/PROVENANCE.md).
const TARGET_SHA: &str = "c59271c284ae9c8335d795d60e0bfdb71aaaceec578d9bd9ffc1b8153c319ea1";
/// Published sha256 of the example base.
const BASE_SHA: &str = "d7fb67a5b4de0414a0178270ee81439b9e3067c883c304aa758c247d50ffd79d";

/// The shipped example pair (static paths, so they can sit in `&str` arg lists).
const TARGET: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/silero-vad/v6.2-16k.safetensors"
);
const BASE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/silero-vad/v6.2.safetensors"
);

fn target() -> &'static Path {
    Path::new(TARGET)
}

fn base() -> &'static Path {
    Path::new(BASE)
}

/// Runs `tpde` with `args`; asserts it never panics (exit 101).
fn tpde<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_tpde"))
        .args(args)
        .output()
        .expect("run tpde");
    check_no_panic(&out);
    out
}

fn check_no_panic(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(101) && !err.contains("panicked"),
        "tpde panicked: {err}"
    );
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, showing both streams when it is wrong.
fn expect_code(out: &Output, want: i32) {
    assert_eq!(
        code(out),
        want,
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

fn sha256_file(p: &Path) -> String {
    let bytes = fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    hex(&Sha256::digest(&bytes))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Names in `dir`, sorted: used to check that nothing else (temp files,
/// partial outputs) was left behind.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Packs the example pair into `dir/name` with `extra` flags.
/// `tpde pack --target T --base B -o ARCHIVE EXTRA…` (must succeed), then
/// `inspect --json`; `unpack --base B` must rebuild `target` byte for byte.
/// Returns pack's stdout and the inspect JSON.
fn pack_inspect_unpack(
    target: &Path,
    base: &Path,
    archive: &Path,
    extra: &[&str],
) -> (String, serde_json::Value) {
    let mut args = vec![
        "pack",
        "--target",
        p(target),
        "--base",
        p(base),
        "-o",
        p(archive),
    ];
    args.extend(extra.iter().copied());
    let o = tpde(&args);
    expect_code(&o, 0);
    let out = stdout(&o);
    let o = tpde(["inspect", p(archive), "--json"]);
    expect_code(&o, 0);
    let v = serde_json::from_slice(&o.stdout).unwrap();
    let back = archive.with_extension("out");
    let o = tpde(["unpack", p(archive), "--base", p(base), "-o", p(&back)]);
    expect_code(&o, 0);
    assert!(
        fs::read(&back).unwrap() == fs::read(target).unwrap(),
        "{}: unpacked file differs",
        archive.display()
    );
    (out, v)
}

fn pack_example(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut args = vec!["pack", "--target", TARGET, "--base", BASE, "-o", p(&out)];
    args.extend(extra);
    let o = tpde(&args);
    expect_code(&o, 0);
    out
}

#[test]
fn version_and_help_are_complete() {
    let o = tpde(["--version"]);
    expect_code(&o, 0);
    assert_eq!(
        stdout(&o).trim(),
        format!("tpde {}", env!("CARGO_PKG_VERSION"))
    );

    let o = tpde(["--help"]);
    expect_code(&o, 0);
    let h = stdout(&o);
    for cmd in ["pack", "inspect", "verify", "unpack", "Exit status"] {
        assert!(h.contains(cmd), "tpde --help lacks {cmd}:\n{h}");
    }
    let want: &[(&str, &[&str])] = &[
        (
            "pack",
            &[
                "--target",
                "--base",
                "--output",
                "--level",
                "--threads",
                "--chunk-elems",
                "--external-base",
                "--plain-base",
                "--force",
                "--quiet",
            ],
        ),
        ("inspect", &["--json", "<ARCHIVE>"]),
        ("verify", &["--base", "--against", "--quiet", "<ARCHIVE>"]),
        (
            "unpack",
            &["--base", "--output", "--tensor", "--force", "--quiet"],
        ),
    ];
    for (cmd, flags) in want {
        let o = tpde([cmd, &"--help"]);
        expect_code(&o, 0);
        let h = stdout(&o);
        for f in *flags {
            assert!(h.contains(f), "tpde {cmd} --help lacks {f}:\n{h}");
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    let t = target();
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["frobnicate"],
        vec!["pack", "--target", p(t)],
        vec!["pack", "--target", p(t), "-o", "x.tpde", "--bogus"],
        vec!["pack", "--target", p(t), "-o", "x.tpde", "--level", "0"],
        vec!["pack", "--target", p(t), "-o", "x.tpde", "--level", "23"],
        vec!["pack", "--target", p(t), "-o", "x.tpde", "--threads", "0"],
        vec!["pack", "--target", p(t), "-o", "x.tpde", "--external-base"],
        vec![
            "pack",
            "--target",
            p(t),
            "-o",
            "x.tpde",
            "--chunk-elems",
            "-1",
        ],
        vec!["inspect"],
        vec!["unpack", "a.tpde"],
    ];
    for args in cases {
        let o = tpde(&args);
        expect_code(&o, 2);
        assert!(o.stdout.is_empty(), "{args:?} printed to stdout");
        assert!(!stderr(&o).is_empty(), "{args:?} gave no message");
    }
    assert!(!Path::new("x.tpde").exists());
}

#[test]
fn library_usage_and_io_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.tpde");
    // The library rejects a zero chunk size.
    let o = tpde([
        "pack",
        "--target",
        p(target()),
        "-o",
        p(&out),
        "--chunk-elems",
        "0",
    ]);
    expect_code(&o, 2);
    assert!(stderr(&o).contains("chunk size"), "{}", stderr(&o));
    // Missing input files.
    let missing = dir.path().join("nope.safetensors");
    let o = tpde(["pack", "--target", p(&missing), "-o", p(&out)]);
    expect_code(&o, 2);
    assert!(stderr(&o).contains("nope.safetensors"));
    let o = tpde(["inspect", p(&dir.path().join("nope.tpde"))]);
    expect_code(&o, 2);
    let o = tpde(["verify", p(&dir.path().join("nope.tpde"))]);
    expect_code(&o, 2);
    // Output directory that does not exist.
    let o = tpde([
        "pack",
        "--target",
        p(target()),
        "-o",
        p(&dir.path().join("no/such/dir/a.tpde")),
    ]);
    expect_code(&o, 2);
    // Writing the archive over its own input is refused even with --force.
    let copy = dir.path().join("t.safetensors");
    fs::copy(target(), &copy).unwrap();
    let o = tpde(["pack", "--target", p(&copy), "-o", p(&copy), "--force"]);
    expect_code(&o, 2);
    assert_eq!(sha256_file(&copy), TARGET_SHA);
    assert_eq!(entries(dir.path()), ["t.safetensors"]);
}

/// The README's main job on the shipped example: pack against the base,
/// inspect, verify against the original, unpack byte-identical.
#[test]
fn example_round_trip_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let archive = pack_example(dir.path(), "a.tpde", &["--level", "5", "--threads", "2"]);

    let o = tpde(["inspect", p(&archive)]);
    expect_code(&o, 0);

    let o = tpde([
        "verify",
        p(&archive),
        "--against",
        p(target()),
        "--threads",
        "1",
    ]);
    expect_code(&o, 0);
    assert!(stdout(&o).contains("byte for byte"), "{}", stdout(&o));

    let restored = dir.path().join("restored.safetensors");
    let o = tpde(["unpack", p(&archive), "-o", p(&restored)]);
    expect_code(&o, 0);
    assert_eq!(sha256_file(&restored), TARGET_SHA);
    assert_eq!(sha256_file(target()), TARGET_SHA);
    assert_eq!(entries(dir.path()), ["a.tpde", "restored.safetensors"]);

    // The unpacked copy also verifies as the original (another name).
    let o = tpde(["verify", p(&archive), "--against", p(&restored)]);
    expect_code(&o, 0);
}

#[test]
fn standalone_and_plain_base_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let standalone = dir.path().join("s.tpde");
    let o = tpde(["pack", "--target", p(target()), "-o", p(&standalone)]);
    expect_code(&o, 0);
    assert!(stdout(&o).contains("standalone"));
    let plain = pack_example(dir.path(), "p.tpde", &["--plain-base"]);
    for (a, name) in [(&standalone, "s.safetensors"), (&plain, "p.safetensors")] {
        let out = dir.path().join(name);
        let o = tpde(["unpack", p(a), "-o", p(&out), "--quiet"]);
        expect_code(&o, 0);
        assert_eq!(sha256_file(&out), TARGET_SHA);
    }
}

#[test]
fn pack_output_is_the_same_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let one = pack_example(dir.path(), "1.tpde", &["--threads", "1"]);
    let two = pack_example(dir.path(), "2.tpde", &["--threads", "2"]);
    assert_eq!(sha256_file(&one), sha256_file(&two));
}

#[test]
fn progress_stays_off_stderr_when_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let archive = pack_example(dir.path(), "a.tpde", &[]);
    let out = dir.path().join("out.safetensors");
    for args in [
        vec!["verify", p(&archive)],
        vec!["unpack", p(&archive), "-o", p(&out)],
    ] {
        let o = tpde(&args);
        expect_code(&o, 0);
        // Nothing at all on stderr: no bar, no leftover escape codes.
        assert!(o.stderr.is_empty(), "stderr not empty: {:?}", stderr(&o));
        assert!(!o.stdout.is_empty());
    }
}

#[test]
fn inspect_table_lists_every_tensor_with_totals() {
    let dir = tempfile::tempdir().unwrap();
    let archive = pack_example(dir.path(), "a.tpde", &["--external-base"]);
    let o = tpde(["inspect", p(&archive)]);
    expect_code(&o, 0);
    let s = stdout(&o);
    for col in [
        "name",
        "dtype",
        "shape",
        "raw",
        "stored",
        "ratio",
        "changed",
        "encodings",
        "base",
    ] {
        assert!(s.contains(col), "no column {col}:\n{s}");
    }
    let ck = Checkpoint::open(target()).unwrap();
    for t in &ck.files[0].tensors {
        assert!(s.contains(&t.name), "no row for {}:\n{s}", t.name);
    }
    assert!(s.contains("total (15 tensors)"), "{s}");
    assert!(s.contains(BASE_SHA), "external base digest not shown:\n{s}");
    assert!(s.contains("--base"), "{s}");
    // The identical STFT basis is an all-zero delta; the rest are dense.
    let stft = s
        .lines()
        .find(|l| l.starts_with("stft_conv.weight"))
        .unwrap();
    assert!(stft.contains("zero:1") && stft.contains("0.0%"), "{stft}");
}

#[test]
fn inspect_table_survives_long_names() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("model.{}.weight", "very_long_component.".repeat(20));
    let file = dir.path().join("long.safetensors");
    write_safetensors(&file, &[(&long, Dtype::F32, &[4], &[1u8; 16])]);
    let archive = dir.path().join("long.tpde");
    expect_code(&tpde(["pack", "--target", p(&file), "-o", p(&archive)]), 0);
    let o = tpde(["inspect", p(&archive)]);
    expect_code(&o, 0);
    let s = stdout(&o);
    let row = s.lines().find(|l| l.starts_with("model.")).unwrap();
    assert!(row.contains('…'), "{row}");
    assert!(row.chars().count() < 160, "row too wide: {row}");
    // --json keeps the whole name.
    let o = tpde(["inspect", p(&archive), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tensors"][0]["name"], long.as_str());
}

#[test]
fn inspect_json_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let archive = pack_example(dir.path(), "a.tpde", &["--external-base"]);
    let o = tpde(["inspect", p(&archive), "--json"]);
    expect_code(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    // f32 values are stored per plane (v1.1), some rANS planes with the base
    // as context (v1.2), the index compressed (v1.3), and the 65,536-element
    // LSTM weights' planes with 32 states (v1.6): the writer records the
    // lowest version it needs.
    assert_eq!(v["format_version"], "1.6");
    assert_eq!(
        v["archive_bytes"].as_u64().unwrap(),
        fs::metadata(&archive).unwrap().len()
    );
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["name"], "v6.2-16k.safetensors");
    assert_eq!(files[0]["sha256"], TARGET_SHA);
    assert_eq!(
        files[0]["bytes"].as_u64().unwrap(),
        fs::metadata(target()).unwrap().len()
    );
    let bases = v["external_base_files"].as_array().unwrap();
    assert_eq!(bases.len(), 1);
    assert_eq!(bases[0]["sha256"], BASE_SHA);
    assert_eq!(v["inline_base"]["tensors"], 0);
    for k in ["raw_bytes", "stored_bytes"] {
        assert!(v["inline_base"][k].is_u64(), "inline_base.{k}");
    }
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 15);
    let mut raw = 0;
    let mut stored = 0;
    for t in tensors {
        assert!(t["name"].is_string());
        assert_eq!(t["dtype"], "F32");
        assert!(t["shape"].as_array().unwrap().iter().all(|d| d.is_u64()));
        raw += t["raw_bytes"].as_u64().unwrap();
        stored += t["stored_bytes"].as_u64().unwrap();
        assert!(t["ratio"].is_f64() || t["ratio"].is_null());
        assert!(t["changed_elements"].is_u64());
        assert!(t["changed_share"].is_f64());
        for m in ["encodings", "ops", "codecs"] {
            assert!(t[m].is_object(), "{m}");
        }
        assert_eq!(t["base"], "external");
        assert_eq!(t["base_tensor"], t["name"]);
        // Row maps only for row-mapped and sliced bases.
        assert!(t["mapped_rows"].is_null() && t["row_elems"].is_null());
        assert_eq!(t["sha256"].as_str().unwrap().len(), 64);
    }
    let tot = &v["totals"];
    assert_eq!(tot["tensors"], 15);
    assert_eq!(tot["raw_bytes"].as_u64().unwrap(), raw);
    assert_eq!(tot["stored_bytes"].as_u64().unwrap(), stored);
    assert!(tot["ratio_vs_archive"].as_f64().unwrap() > 1.0);
    assert!(tot["changed_share"].is_f64());
}

#[test]
fn refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let archive = pack_example(dir.path(), "a.tpde", &[]);
    let before = sha256_file(&archive);
    // pack onto an existing file
    let taken = dir.path().join("taken.tpde");
    fs::write(&taken, b"keep me").unwrap();
    let args = [
        "pack",
        "--target",
        p(target()),
        "--base",
        p(base()),
        "-o",
        p(&taken),
    ];
    let o = tpde(args);
    expect_code(&o, 2);
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(fs::read(&taken).unwrap(), b"keep me");
    // unpack onto an existing file
    let out = dir.path().join("out.safetensors");
    fs::write(&out, b"keep me too").unwrap();
    let o = tpde(["unpack", p(&archive), "-o", p(&out)]);
    expect_code(&o, 2);
    assert!(stderr(&o).contains("--force"));
    assert_eq!(fs::read(&out).unwrap(), b"keep me too");
    assert_eq!(
        entries(dir.path()),
        ["a.tpde", "out.safetensors", "taken.tpde"]
    );

    // --force replaces both.
    let o = tpde(args.iter().copied().chain(["--force"]));
    expect_code(&o, 0);
    assert_eq!(sha256_file(&taken), before);
    let o = tpde(["unpack", p(&archive), "-o", p(&out), "--force"]);
    expect_code(&o, 0);
    assert_eq!(sha256_file(&out), TARGET_SHA);
    assert_eq!(
        entries(dir.path()),
        ["a.tpde", "out.safetensors", "taken.tpde"]
    );
}

/// Flips one byte inside the stored bytes of `tensor`'s first non-empty chunk.
fn corrupt_chunk(archive: &Path, tensor: &str) -> u64 {
    let (offset, chunk) = {
        let a = Archive::open(archive).unwrap();
        let t = a.tensor_index(tensor).unwrap();
        let Payload::Chunked { chunks, .. } = &a.index().tensors[t].payload else {
            panic!("{tensor} is not chunked");
        };
        let (i, c) = chunks
            .iter()
            .enumerate()
            .find(|(_, c)| c.stored_len > 0)
            .unwrap();
        (c.offset + c.stored_len / 2, i as u64)
    };
    let mut bytes = fs::read(archive).unwrap();
    bytes[offset as usize] ^= 0x40;
    fs::write(archive, bytes).unwrap();
    chunk
}

#[test]
fn corrupted_chunk_exits_1_naming_tensor_and_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let archive = pack_example(dir.path(), "a.tpde", &["--chunk-elems", "16384"]);
    let chunk = corrupt_chunk(&archive, "lstm_cell.weight_ih");
    let place = format!("tensor \"lstm_cell.weight_ih\" chunk {chunk}");

    let o = tpde(["verify", p(&archive)]);
    expect_code(&o, 1);
    assert!(stderr(&o).contains(&place), "{}", stderr(&o));
    assert!(stderr(&o).contains("checksum"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());

    let out = dir.path().join("out.safetensors");
    let o = tpde(["unpack", p(&archive), "-o", p(&out)]);
    expect_code(&o, 1);
    assert!(stderr(&o).contains(&place), "{}", stderr(&o));
    // No partial output, no temp file left behind.
    assert_eq!(entries(dir.path()), ["a.tpde"]);

    // Only the chunk is damaged: the index still reads, and other tensors
    // still extract.
    expect_code(&tpde(["inspect", p(&archive)]), 0);
    let o = tpde([
        "unpack",
        p(&archive),
        "-o",
        p(&out),
        "--tensor",
        "conv1.bias",
    ]);
    expect_code(&o, 0);
}

#[test]
fn damaged_or_foreign_files_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let archive = pack_example(dir.path(), "a.tpde", &[]);
    let bytes = fs::read(&archive).unwrap();

    // A safetensors file is not an archive.
    let o = tpde(["inspect", p(target())]);
    expect_code(&o, 1);

    // Truncated.
    let cut = dir.path().join("cut.tpde");
    fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    for cmd in ["inspect", "verify"] {
        let o = tpde([cmd, p(&cut)]);
        expect_code(&o, 1);
        assert!(stderr(&o).contains("truncated"), "{}", stderr(&o));
    }

    // A flipped bit in the index.
    let flipped = dir.path().join("index.tpde");
    let mut b = bytes.clone();
    let n = b.len();
    b[n - 10] ^= 1;
    fs::write(&flipped, &b).unwrap();
    let o = tpde(["verify", p(&flipped)]);
    expect_code(&o, 1);
    assert!(stderr(&o).contains("checksum"), "{}", stderr(&o));

    // Empty file.
    let empty = dir.path().join("empty.tpde");
    fs::write(&empty, b"").unwrap();
    expect_code(&tpde(["inspect", p(&empty)]), 1);
}

#[test]
fn external_base_is_required_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let archive = pack_example(dir.path(), "x.tpde", &["--external-base"]);
    let out = dir.path().join("out.safetensors");

    // Missing base: exit 2 with a message naming --base and the digest.
    for args in [
        vec!["verify", p(&archive)],
        vec!["unpack", p(&archive), "-o", p(&out)],
    ] {
        let o = tpde(&args);
        expect_code(&o, 2);
        let err = stderr(&o);
        assert!(err.contains("--base v6.2.safetensors"), "{err}");
        assert!(err.contains(BASE_SHA), "{err}");
    }
    assert_eq!(entries(dir.path()), ["x.tpde"]);

    // Wrong base (the target itself): a verification failure, exit 1.
    let o = tpde(["verify", p(&archive), "--base", p(target())]);
    expect_code(&o, 1);
    assert!(stderr(&o).contains("wrong --base"), "{}", stderr(&o));

    // The right base.
    let o = tpde(["verify", p(&archive), "--base", p(base())]);
    expect_code(&o, 0);
    let o = tpde(["unpack", p(&archive), "--base", p(base()), "-o", p(&out)]);
    expect_code(&o, 0);
    assert_eq!(sha256_file(&out), TARGET_SHA);
}

#[test]
fn verify_against_a_different_original_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let archive = pack_example(dir.path(), "a.tpde", &[]);
    // Another size.
    let o = tpde(["verify", p(&archive), "--against", p(base())]);
    expect_code(&o, 1);
    // Same size, one byte changed near the end.
    let changed = dir.path().join("v6.2-16k.safetensors");
    let mut b = fs::read(target()).unwrap();
    let n = b.len();
    b[n - 3] ^= 0xff;
    fs::write(&changed, &b).unwrap();
    let o = tpde(["verify", p(&archive), "--against", p(&changed)]);
    expect_code(&o, 1);
    assert!(
        stderr(&o).contains(&format!("byte {}", n - 3)),
        "{}",
        stderr(&o)
    );
}

#[test]
fn tensor_extraction_writes_only_the_named_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let archive = pack_example(dir.path(), "a.tpde", &[]);
    let out = dir.path().join("two.safetensors");
    let names = ["conv2.weight", "conv1.bias"];
    let o = tpde([
        "unpack",
        p(&archive),
        "-o",
        p(&out),
        "--tensor",
        names[0],
        "--tensor",
        names[1],
        "--tensor",
        names[0],
    ]);
    expect_code(&o, 0);
    let got = Checkpoint::open(&out).unwrap();
    let orig = Checkpoint::open(target()).unwrap();
    let got_names: Vec<&str> = got.files[0]
        .tensors
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(got_names, names);
    for n in names {
        let (gf, gt) = got.tensor(n).unwrap();
        let (of, ot) = orig.tensor(n).unwrap();
        assert_eq!((gt.dtype, &gt.shape), (ot.dtype, &ot.shape));
        let g = &gf.bytes()[gt.offset as usize..(gt.offset + gt.len) as usize];
        let o = &of.bytes()[ot.offset as usize..(ot.offset + ot.len) as usize];
        assert_eq!(g, o, "{n}");
    }

    // An unknown name: exit 2, nothing written.
    let none = dir.path().join("none.safetensors");
    let o = tpde(["unpack", p(&archive), "-o", p(&none), "--tensor", "nope"]);
    expect_code(&o, 2);
    assert!(stderr(&o).contains("nope"));
    assert!(!none.exists());
}

/// Writes a safetensors file with tensors laid out back to back.
fn write_safetensors(path: &Path, tensors: &[(&str, Dtype, &[u64], &[u8])]) {
    let list: Vec<(&str, Dtype, &[u64])> = tensors.iter().map(|t| (t.0, t.1, t.2)).collect();
    let header = make_header(&list);
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(&header);
    for t in tensors {
        b.extend_from_slice(t.3);
    }
    fs::write(path, b).unwrap();
}

/// A sharded checkpoint in `dir`: two shards plus the index JSON. `seed`
/// changes the values of some tensors, so two seeds give a related pair.
fn sharded(dir: &Path, seed: u8) {
    fs::create_dir_all(dir).unwrap();
    let data = |n: usize, salt: u8| -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31) ^ salt.wrapping_mul((i % 7 == 0) as u8))
            .collect()
    };
    let a = data(4 * 1000, seed);
    let b = data(2 * 64, 0);
    let c = data(4 * 300, seed.wrapping_add(1));
    let d = data(8 * 5, 0);
    write_safetensors(
        &dir.join("model-00001-of-00002.safetensors"),
        &[
            ("layer.0.weight", Dtype::F32, &[10, 100], &a),
            ("layer.0.bias", Dtype::BF16, &[64], &b),
        ],
    );
    write_safetensors(
        &dir.join("model-00002-of-00002.safetensors"),
        &[
            ("layer.1.weight", Dtype::F32, &[300], &c),
            ("step", Dtype::I64, &[5], &d),
        ],
    );
    let index = serde_json::json!({
        "metadata": {"total_size": a.len() + b.len() + c.len() + d.len()},
        "weight_map": {
            "layer.0.weight": "model-00001-of-00002.safetensors",
            "layer.0.bias": "model-00001-of-00002.safetensors",
            "layer.1.weight": "model-00002-of-00002.safetensors",
            "step": "model-00002-of-00002.safetensors",
        }
    });
    fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();
}

#[test]
fn sharded_directory_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let tgt = dir.path().join("target");
    let bse = dir.path().join("base");
    sharded(&tgt, 7);
    sharded(&bse, 0);
    for (name, extra) in [
        ("inline.tpde", &[][..]),
        ("external.tpde", &["--external-base"][..]),
    ] {
        let archive = dir.path().join(name);
        let o = tpde(
            [
                "pack",
                "--target",
                p(&tgt),
                "--base",
                p(&bse),
                "-o",
                p(&archive),
                "--chunk-elems",
                "256",
            ]
            .into_iter()
            .chain(extra.iter().copied()),
        );
        expect_code(&o, 0);
        let o = tpde(["inspect", p(&archive), "--json"]);
        expect_code(&o, 0);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["files"].as_array().unwrap().len(), 2);
        assert_eq!(v["tensors"].as_array().unwrap().len(), 4);

        let o = tpde([
            "verify",
            p(&archive),
            "--base",
            p(&bse),
            "--against",
            p(&tgt),
        ]);
        expect_code(&o, 0);

        let out = dir.path().join(format!("{name}.out"));
        let o = tpde(["unpack", p(&archive), "--base", p(&bse), "-o", p(&out)]);
        expect_code(&o, 0);
        assert_eq!(entries(&out), entries(&tgt));
        for f in entries(&tgt) {
            assert_eq!(
                sha256_file(&out.join(&f)),
                sha256_file(&tgt.join(&f)),
                "{f}"
            );
        }
        // A second unpack without --force is refused, with --force it works.
        let o = tpde(["unpack", p(&archive), "--base", p(&bse), "-o", p(&out)]);
        expect_code(&o, 2);
        let o = tpde([
            "unpack",
            p(&archive),
            "--base",
            p(&bse),
            "-o",
            p(&out),
            "--force",
        ]);
        expect_code(&o, 0);
        assert_eq!(entries(&out), entries(&tgt));
    }
    // Nothing but what was asked for was created beside the outputs.
    assert_eq!(
        entries(dir.path()),
        [
            "base",
            "external.tpde",
            "external.tpde.out",
            "inline.tpde",
            "inline.tpde.out",
            "target"
        ]
    );
}

/// A file-size limit must give an I/O error (exit 2) and no partial file,
/// not a process killed by SIGXFSZ.
#[test]
fn file_size_limit_is_an_io_error_without_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.tpde");
    // `ulimit -f` counts 512- or 1024-byte blocks: 64 blocks is well
    // below the ~1.7 MB archive either way.
    let o = Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 64 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_tpde"))
        .args(["pack", "--target", p(target()), "--base", p(base())])
        .args(["-o", p(&out)])
        .output()
        .unwrap();
    check_no_panic(&o);
    expect_code(&o, 2);
    assert!(stderr(&o).contains("too large"), "{}", stderr(&o));
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

/// `tpde inspect a.tpde | head -1`: the reader going away is not a crash.
#[test]
fn closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let archive = pack_example(dir.path(), "a.tpde", &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tpde"))
        .args(["inspect", p(&archive), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    check_no_panic(&o);
    expect_code(&o, 0);
}

/// `--planes` picks the byte-plane coder and `--format-1-0` writes archives
/// for 1.0 readers; every choice unpacks byte-identically.
#[test]
fn plane_coder_and_format_1_0_flags() {
    let dir = tempfile::tempdir().unwrap();
    let json = |archive: &Path| -> serde_json::Value {
        let o = tpde(["inspect", p(archive), "--json"]);
        expect_code(&o, 0);
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let codecs = |v: &serde_json::Value| -> Vec<String> {
        let mut all: Vec<String> = v["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["codecs"].as_object().unwrap().keys().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    };
    let rans = pack_example(dir.path(), "rans.tpde", &["--external-base"]);
    let zstd = pack_example(
        dir.path(),
        "zstd.tpde",
        &["--external-base", "--planes", "zstd"],
    );
    let v10 = pack_example(dir.path(), "v10.tpde", &["--external-base", "--format-1-0"]);
    let zstd12 = pack_example(
        dir.path(),
        "zstd12.tpde",
        &["--external-base", "--planes", "zstd", "--format", "1.2"],
    );
    let (r, z, o) = (json(&rans), json(&zstd), json(&v10));
    assert!(codecs(&r).contains(&"rans".to_string()), "{:?}", codecs(&r));
    assert!(
        !codecs(&z).contains(&"rans".to_string()),
        "{:?}",
        codecs(&z)
    );
    // A compressed index (the default) needs 1.3, and 32-state rANS planes
    // (the LSTM weights' 65,536-symbol planes) 1.6; without a compressed
    // index (`--format 1.2`) zstd planes need only 1.1.
    assert_eq!(r["format_version"], "1.6");
    assert_eq!(z["format_version"], "1.3");
    assert_eq!(json(&zstd12)["format_version"], "1.1");
    assert_eq!(o["format_version"], "1.0");
    assert!(r["archive_bytes"].as_u64() < z["archive_bytes"].as_u64());
    for a in [&rans, &zstd, &v10] {
        let back = dir
            .path()
            .join(format!("{}.out", a.file_name().unwrap().to_str().unwrap()));
        let o = tpde(["unpack", p(a), "--base", BASE, "-o", p(&back)]);
        expect_code(&o, 0);
        let o = tpde(["verify", p(a), "--base", BASE, "--against", TARGET]);
        expect_code(&o, 0);
    }
    let o = tpde([
        "pack",
        "--target",
        TARGET,
        "-o",
        p(&dir.path().join("x.tpde")),
        "--planes",
        "lz4",
    ]);
    expect_code(&o, 2);
}

/// (v1.4) Packed alone, the example's float tensors are mostly stored with
/// `replace-rot` (the exponent whole in the top plane): a 1.4 archive,
/// smaller than `--format 1.3` gives, which never uses the op. Both unpack
/// byte-identically.
#[test]
fn standalone_weights_are_stored_rotated_unless_format_1_3() {
    let dir = tempfile::tempdir().unwrap();
    let pack = |name: &str, extra: &[&str]| -> (PathBuf, serde_json::Value) {
        let out = dir.path().join(name);
        let mut args = vec!["pack", "--target", TARGET, "-o", p(&out)];
        args.extend(extra);
        expect_code(&tpde(&args), 0);
        let o = tpde(["inspect", p(&out), "--json"]);
        expect_code(&o, 0);
        (out, serde_json::from_slice(&o.stdout).unwrap())
    };
    let rotated = |v: &serde_json::Value| -> usize {
        v["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["ops"].get("replace-rot").is_some())
            .count()
    };
    let (a14, v14) = pack("v14.tpde", &[]);
    let (a13, v13) = pack("v13.tpde", &["--format", "1.3"]);
    // 1.4 for the rotated ops; 1.6 for the 32-state planes of the
    // 65,536-element LSTM weights.
    assert_eq!(v14["format_version"], "1.6");
    assert_eq!(v13["format_version"], "1.3");
    assert!(rotated(&v14) >= 5, "{}", v14["tensors"]);
    assert_eq!(rotated(&v13), 0);
    assert!(v14["archive_bytes"].as_u64() < v13["archive_bytes"].as_u64());
    for a in [&a14, &a13] {
        let o = tpde(["verify", p(a), "--against", TARGET]);
        expect_code(&o, 0);
    }
}

/// A vocabulary pruned and extended (format 1.2 row-mapped bases): `pack`
/// says how many tensors are row-mapped, `inspect` shows the mapped rows,
/// `--format 1.1` gives them up (a 1.1 archive, larger), and every archive
/// unpacks byte-identically in every base mode.
#[test]
fn row_mapped_bases_for_a_resized_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    // 200 rows of 64 F32 elements, distinct (an xorshift stream).
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rows: Vec<Vec<u8>> = Vec::new();
    for _ in 0..200 {
        let mut r = Vec::with_capacity(256);
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            r.extend_from_slice(&(x as u32).to_le_bytes());
        }
        rows.push(r);
    }
    let other = vec![7u8; 64];
    let base = dir.path().join("base.safetensors");
    let all = rows.concat();
    write_safetensors(
        &base,
        &[
            ("embed", Dtype::F32, &[200, 64], &all),
            ("bias", Dtype::U8, &[64], &other),
        ],
    );
    // Every third row dropped, then 10 new rows appended.
    let mut kept: Vec<u8> = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .flat_map(|(_, r)| r.clone())
        .collect();
    kept.extend(std::iter::repeat_n(3u8, 10 * 256));
    let n_rows = (kept.len() / 256) as u64;
    let target = dir.path().join("target.safetensors");
    write_safetensors(
        &target,
        &[
            ("embed", Dtype::F32, &[n_rows, 64], &kept),
            ("bias", Dtype::U8, &[64], &other),
        ],
    );
    let size = |a: &Path| fs::metadata(a).unwrap().len();
    let mut sizes = Vec::new();
    for (name, extra) in [
        ("inline.tpde", vec![]),
        ("external.tpde", vec!["--external-base"]),
        ("v11.tpde", vec!["--external-base", "--format", "1.1"]),
    ] {
        let archive = dir.path().join(name);
        let (out, v) = pack_inspect_unpack(&target, &base, &archive, &extra);
        let embed = v["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "embed")
            .unwrap()
            .clone();
        if name == "v11.tpde" {
            assert!(!out.contains("row-mapped"), "{out}");
            assert_eq!(v["format_version"], "1.1");
            assert_eq!(embed["base"], "none");
        } else {
            assert!(out.contains("(1 row-mapped"), "{out}");
            assert_eq!(v["format_version"], "1.3");
            assert!(embed["base"].as_str().unwrap().ends_with("-rows"));
            // 133 kept rows predicted by their base rows; 10 new ones by zero.
            assert_eq!(embed["mapped_rows"], 133);
            let table =
                String::from_utf8_lossy(&tpde(["inspect", p(&archive)]).stdout).into_owned();
            assert!(table.contains("133/143 rows"), "{table}");
        }
        sizes.push(size(&archive));
    }
    // The row map stores nothing for the kept rows; 1.1 stores them all.
    assert!(sizes[1] * 3 < sizes[2], "{sizes:?}");
}

/// An RNN exported twice (format 1.5 sliced bases): the target's weight is
/// the base's rank-3 tensor with two gate blocks swapped, its bias a slice of
/// a fused one with gates swapped, its head a `[1, 64]` stored as `[64, 1]`,
/// all under other names. `pack` says how many tensors are sliced (in a
/// self-contained archive, not the bias, whose base would cost more than it
/// saves), `inspect` shows the rows and their length, `--format 1.4` gives them up (stored
/// standalone: the archive holds every element), and every archive unpacks
/// byte-identically.
#[test]
fn sliced_bases_for_an_rnn_exported_under_other_names_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut words = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x as u32).to_le_bytes()
            })
            .collect()
    };
    let (w, b, h) = (words(6 * 64), words(6 * 64), words(64));
    let row = |m: &[u8], r: usize| m[r * 256..(r + 1) * 256].to_vec();
    let base = dir.path().join("export.safetensors");
    write_safetensors(
        &base,
        &[
            ("onnx::GRU_1", Dtype::F32, &[1, 6, 64], &w),
            ("onnx::GRU_2", Dtype::F32, &[1, 384], &b),
            ("onnx::MatMul_3", Dtype::F32, &[64, 1], &h),
        ],
    );
    let gw: Vec<u8> = [2, 3, 0, 1, 4, 5]
        .iter()
        .flat_map(|&r| row(&w, r))
        .collect();
    let gb: Vec<u8> = [4, 3, 5].iter().flat_map(|&r| row(&b, r)).collect();
    let target = dir.path().join("native.safetensors");
    write_safetensors(
        &target,
        &[
            ("rnn.weight", Dtype::F32, &[6, 64], &gw),
            ("rnn.bias", Dtype::F32, &[192], &gb),
            ("head.weight", Dtype::F32, &[1, 64], &h),
        ],
    );
    let mut sizes = Vec::new();
    for (name, extra) in [
        ("inline.tpde", vec![]),
        ("external.tpde", vec!["--external-base"]),
        ("v14.tpde", vec!["--external-base", "--format", "1.4"]),
    ] {
        let archive = dir.path().join(name);
        let (out, v) = pack_inspect_unpack(&target, &base, &archive, &extra);
        let tensors = v["tensors"].as_array().unwrap();
        if name == "v14.tpde" {
            assert!(!out.contains("sliced"), "{out}");
            // The lowest version it needs: 1.3 (a compressed index).
            assert_eq!(v["format_version"], "1.3");
            assert!(tensors.iter().all(|x| x["base"] == "none"), "{v}");
        } else if name == "inline.tpde" {
            // Embedded, the fused bias would cost twice the bytes the target
            // bias takes from it: that one is stored baseless.
            assert!(out.contains("(2 sliced"), "{out}");
            let bias = tensors.iter().find(|x| x["name"] == "rnn.bias").unwrap();
            assert_eq!(bias["base"], "none");
        } else {
            assert!(out.contains("(3 sliced"), "{out}");
            assert_eq!(v["format_version"], "1.5");
            for (tensor, rows, row_elems) in [
                ("rnn.weight", 6, 64),
                ("rnn.bias", 3, 64),
                ("head.weight", 1, 64),
            ] {
                let x = tensors.iter().find(|x| x["name"] == tensor).unwrap();
                assert!(x["base"].as_str().unwrap().ends_with("-slices"), "{x}");
                assert_eq!(
                    (x["mapped_rows"].clone(), x["row_elems"].clone()),
                    (rows.into(), row_elems.into())
                );
            }
            let table =
                String::from_utf8_lossy(&tpde(["inspect", p(&archive)]).stdout).into_owned();
            assert!(table.contains("onnx::GRU_2, 3/3 rows of 64"), "{table}");
        }
        sizes.push(fs::metadata(&archive).unwrap().len());
    }
    // Sliced, the delta is the index; given up, every element is stored.
    assert!(sizes[1] * 2 < sizes[2], "{sizes:?}");
}

/// An int8 release as the base of its F32 original (format 1.2 quantized
/// bases): `pack` finds `NAME.q` and `NAME.scale`, an F32 target that is
/// exactly `f32(q) × scale` costs nothing, and every archive unpacks
/// byte-identically; `--format 1.1` stores the target without that base.
#[test]
fn quantized_base_for_a_dequantized_target() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (64usize, 48usize);
    let q: Vec<u8> = (0..rows * cols).map(|i| (i * 37 % 251) as u8).collect();
    let scales: Vec<f32> = (0..rows).map(|r| 0.001 * (r + 1) as f32).collect();
    let scale_bytes: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
    // The target: exactly the dequantized codes, computed here in f32.
    let target_bytes: Vec<u8> = (0..rows * cols)
        .flat_map(|i| (f32::from(q[i] as i8) * scales[i / cols]).to_le_bytes())
        .collect();
    let base = dir.path().join("int8.safetensors");
    write_safetensors(
        &base,
        &[
            ("w.q", Dtype::I8, &[rows as u64, cols as u64], &q),
            ("w.scale", Dtype::F32, &[rows as u64, 1], &scale_bytes),
        ],
    );
    let target = dir.path().join("f32.safetensors");
    write_safetensors(
        &target,
        &[("w", Dtype::F32, &[rows as u64, cols as u64], &target_bytes)],
    );
    for (name, extra) in [
        ("inline.tpde", vec![]),
        ("external.tpde", vec!["--external-base"]),
        ("v11.tpde", vec!["--format", "1.1"]),
    ] {
        let archive = dir.path().join(name);
        let (out, v) = pack_inspect_unpack(&target, &base, &archive, &extra);
        let w = &v["tensors"][0];
        if name == "v11.tpde" {
            assert_eq!(w["base"], "none", "{name}");
            assert!(w["stored_bytes"].as_u64().unwrap() > 1000, "{name}");
        } else {
            assert!(out.contains("1 against quantized codes x scales"), "{out}");
            assert!(w["base"].as_str().unwrap().ends_with("-dequant"), "{name}");
            assert_eq!(w["base_tensor"], "w.q");
            assert_eq!(w["stored_bytes"], 0, "{name}: the predictor is exact");
        }
    }
}

/// `pack`, `verify` and `unpack` print one JSON document with `--json`
/// (errors stay text on stderr with the usual exit codes).
#[test]
fn pack_verify_unpack_json() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.tpde");
    let parse = |o: &Output| -> serde_json::Value {
        expect_code(o, 0);
        serde_json::from_slice(&o.stdout).expect("one JSON document")
    };
    let v = parse(&tpde([
        "pack",
        "--target",
        TARGET,
        "--base",
        BASE,
        "--external-base",
        "-o",
        p(&archive),
        "--json",
    ]));
    assert_eq!(
        v["archive_bytes"].as_u64().unwrap(),
        fs::metadata(&archive).unwrap().len()
    );
    assert_eq!(
        v["target_bytes"].as_u64().unwrap(),
        fs::metadata(TARGET).unwrap().len()
    );
    assert_eq!(v["tensors"], 15);
    assert_eq!(v["delta_tensors"], 15);
    assert_eq!(v["base_mode"], "external");
    let v = parse(&tpde([
        "verify",
        p(&archive),
        "--base",
        BASE,
        "--against",
        TARGET,
        "--json",
    ]));
    assert_eq!(v["ok"], true);
    assert_eq!(v["compared"], true);
    assert_eq!(v["tensors"], 15);
    assert_eq!(
        v["bytes"].as_u64().unwrap(),
        fs::metadata(TARGET).unwrap().len()
    );
    let out = dir.path().join("out.safetensors");
    let v = parse(&tpde([
        "unpack",
        p(&archive),
        "--base",
        BASE,
        "-o",
        p(&out),
        "--json",
    ]));
    assert_eq!(v["files"][0], "out.safetensors");
    assert_eq!(v["directory"], false);
    assert_eq!(fs::read(&out).unwrap(), fs::read(TARGET).unwrap());
    // An error is not JSON: text on stderr, exit 2 (no base given).
    let o = tpde(["verify", p(&archive), "--json"]);
    expect_code(&o, 2);
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("--base"));
}
