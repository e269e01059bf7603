//! Crash-safe writes (issue 4): killing `tpde pack` or `tpde unpack` at any
//! moment leaves the destination holding nothing or the previous file,
//! byte-identical; a full disk gives a clear error, exit 2, and no file.
//!
//! The writers build their output in a `.tpde-*.partial` temp file beside
//! the destination and rename it into place only when it is complete (and
//! synced). A SIGKILL cannot run cleanup, so the temp file of a killed run
//! stays behind: that is expected and documented (it is not the
//! destination, and its name says what it is); these tests check that it is
//! the only thing left.
//!
//! Kill points are chosen by how far the write has got — before the temp
//! file exists, as soon as it does, and once it holds a few sizes of bytes —
//! so they land mid-write on a fast machine as on a slow one. The inputs are
//! ~100 MB so that the write takes long enough to be caught in progress.

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tpde_format::safetensors::make_header;
use tpde_format::Dtype;

const TPDE: &str = env!("CARGO_BIN_EXE_tpde");
const MIB: u64 = 1 << 20;
/// Tensors of 4 MiB each: 25 make the ~100 MB input.
const TENSORS: usize = 25;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Writes a safetensors file of `TENSORS` f32 tensors of 1024×1024, whose
/// bytes come from `fill` (tensor index, buffer).
fn write_big(path: &Path, fill: impl Fn(usize, &mut [u8])) {
    let names: Vec<String> = (0..TENSORS)
        .map(|i| format!("layer{i:02}.weight"))
        .collect();
    let shape = [1024u64, 1024];
    let list: Vec<_> = names
        .iter()
        .map(|n| (n.as_str(), Dtype::F32, &shape[..]))
        .collect();
    let header = make_header(&list);
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    let mut buf = vec![0u8; 4 * MIB as usize];
    for i in 0..TENSORS {
        fill(i, &mut buf);
        out.extend_from_slice(&buf);
    }
    std::fs::write(path, out).unwrap();
}

/// Incompressible bytes (xorshift), so the archive is as big as the input
/// and `pack` writes for a long time.
fn noise(i: usize, buf: &mut [u8]) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64 + 1);
    for c in buf.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
}

/// Shared inputs, made once per test binary in a directory that lives as
/// long as the process: the ~100 MB random target, and an archive whose
/// target is ~100 MB of (mostly) zeros — tiny to store, long to write out.
struct Inputs {
    _dir: tempfile::TempDir,
    noise: PathBuf,
    zeros_archive: PathBuf,
}

fn inputs() -> &'static Inputs {
    static I: OnceLock<Inputs> = OnceLock::new();
    I.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let noise_path = dir.path().join("noise.safetensors");
        write_big(&noise_path, noise);
        let zeros = dir.path().join("zeros.safetensors");
        write_big(&zeros, |i, buf| {
            buf.fill(0);
            buf[i] = 1; // each tensor a little different
        });
        let zeros_archive = dir.path().join("zeros.tpde");
        let o = Command::new(TPDE)
            .args(["pack", "-q", "--level", "1", "-t", p(&zeros), "-o"])
            .arg(&zeros_archive)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Inputs {
            _dir: dir,
            noise: noise_path,
            zeros_archive,
        }
    })
}

/// Temp outputs the writers leave beside `dest` (files or directories).
fn partials(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tpde-") && name.ends_with(".partial") {
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((e.path(), size));
        }
    }
    out
}

/// When to send SIGKILL.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// Right after spawning.
    Spawn,
    /// As soon as the temp file exists.
    TempExists,
    /// Once the temp file holds this many bytes.
    TempBytes(u64),
}

/// How a killed run ended.
#[derive(Debug)]
struct Killed {
    status: ExitStatus,
    /// Bytes in the temp file when the signal was sent (None: no temp file).
    temp_bytes: Option<u64>,
}

/// Spawns `cmd`, kills it with SIGKILL at `at` (polling the temp file in
/// `dir`), and waits for it.
fn run_and_kill(mut cmd: Command, dir: &Path, at: KillAt) -> Killed {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let temp_bytes = loop {
        let temp = partials(dir).first().map(|(_, n)| *n);
        let fire = match at {
            KillAt::Spawn => true,
            KillAt::TempExists => temp.is_some(),
            KillAt::TempBytes(n) => temp.is_some_and(|t| t >= n),
        };
        if fire {
            break temp;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("finished ({status}) before the kill point {at:?}: input too small?");
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "never reached {at:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    child.kill().unwrap();
    let status = child.wait().unwrap();
    Killed { status, temp_bytes }
}

/// After a kill: `dest` holds exactly `previous` (or nothing), and the only
/// other new entries are `.tpde-*.partial` leftovers, which are removed.
fn check_after_kill(dir: &Path, dest: &Path, previous: Option<&[u8]>, k: &Killed, what: &str) {
    assert_eq!(
        k.status.signal(),
        Some(9),
        "{what}: not killed: {:?}",
        k.status
    );
    match previous {
        None => assert!(!dest.exists(), "{what}: a partial file at the destination"),
        Some(prev) => {
            let now = std::fs::read(dest).unwrap();
            assert!(
                now == prev,
                "{what}: the previous file at the destination was changed"
            );
        }
    }
    for (path, _) in partials(dir) {
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let want: Vec<String> = previous
        .map(|_| dest.file_name().unwrap().to_string_lossy().into_owned())
        .into_iter()
        .collect();
    assert_eq!(
        left, want,
        "{what}: unexpected files beside the destination"
    );
}

const KILL_POINTS: [KillAt; 5] = [
    KillAt::Spawn,
    KillAt::TempExists,
    KillAt::TempBytes(MIB),
    KillAt::TempBytes(4 * MIB),
    KillAt::TempBytes(12 * MIB),
];

/// Runs every kill point twice — onto an empty destination and over a
/// previous file with `--force` — and checks that most of them caught the
/// write in progress (so the test is testing something).
fn kill_sweep(what: &str, args: impl Fn(&Path) -> Vec<String>, previous: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    let mut mid_write = 0;
    for at in KILL_POINTS {
        for prev in [None, Some(previous)] {
            if let Some(bytes) = prev {
                std::fs::write(&dest, bytes).unwrap();
            }
            let mut cmd = Command::new(TPDE);
            cmd.args(args(&dest));
            if prev.is_some() {
                cmd.arg("--force");
            }
            let case = format!("{what} killed at {at:?}, previous file: {}", prev.is_some());
            let k = run_and_kill(cmd, dir.path(), at);
            if k.temp_bytes.is_some_and(|n| n > 0) {
                mid_write += 1;
            }
            check_after_kill(dir.path(), &dest, prev, &k, &case);
            if prev.is_some() {
                std::fs::remove_file(&dest).unwrap();
            }
        }
    }
    assert!(
        mid_write >= 6,
        "{what}: only {mid_write} kills landed mid-write"
    );
}

#[test]
fn killing_pack_leaves_nothing_or_the_previous_archive() {
    let i = inputs();
    // The previous file: any earlier archive at the destination.
    let previous = std::fs::read(&i.zeros_archive).unwrap();
    let target = i.noise.clone();
    kill_sweep(
        "pack",
        |dest| {
            vec![
                "pack".into(),
                "-q".into(),
                "--level".into(),
                "1".into(),
                "-t".into(),
                p(&target).into(),
                "-o".into(),
                p(dest).into(),
            ]
        },
        &previous,
    );
}

#[test]
fn killing_unpack_leaves_nothing_or_the_previous_file() {
    let i = inputs();
    let previous = b"an earlier unpacked file that must survive".to_vec();
    let archive = i.zeros_archive.clone();
    kill_sweep(
        "unpack",
        |dest| {
            vec![
                "unpack".into(),
                "-q".into(),
                p(&archive).into(),
                "-o".into(),
                p(dest).into(),
            ]
        },
        &previous,
    );
}

// ---- full disk ---------------------------------------------------------------

/// Runs tpde under `ulimit -f` (512- or 1024-byte blocks, by shell) so that
/// writes past ~`blocks` blocks fail with EFBIG (the CLI ignores SIGXFSZ):
/// what a full disk looks like to the writer.
fn tpde_limited(blocks: u32, args: &[&str]) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -f {blocks} && exec \"$0\" \"$@\""))
        .arg(TPDE)
        .args(args)
        .output()
        .unwrap()
}

fn check_full_disk(o: &std::process::Output, dir: &Path, dest: &Path, previous: Option<&[u8]>) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "exit status; stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("tpde: error:") && err.contains("too large"),
        "not a clear error: {err}"
    );
    match previous {
        None => assert!(!dest.exists(), "a partial file at the destination"),
        Some(prev) => assert!(
            std::fs::read(dest).unwrap() == prev,
            "previous file changed"
        ),
    }
    assert_eq!(
        partials(dir),
        Vec::new(),
        "temp file left after a failed write"
    );
}

#[test]
fn full_disk_during_pack_is_a_clear_error_with_no_file() {
    let i = inputs();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.tpde");
    let args = [
        "pack",
        "-q",
        "--level",
        "1",
        "-t",
        p(&i.noise),
        "-o",
        p(&dest),
    ];
    let o = tpde_limited(2048, &args);
    check_full_disk(&o, dir.path(), &dest, None);
    // Over a previous archive with --force: it survives intact.
    let previous = b"previous archive bytes".to_vec();
    std::fs::write(&dest, &previous).unwrap();
    let o = tpde_limited(2048, &[&args[..], &["--force"]].concat());
    check_full_disk(&o, dir.path(), &dest, Some(&previous));
}

#[test]
fn full_disk_during_unpack_is_a_clear_error_with_no_file() {
    let i = inputs();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.safetensors");
    let args = ["unpack", "-q", p(&i.zeros_archive), "-o", p(&dest)];
    let o = tpde_limited(2048, &args);
    check_full_disk(&o, dir.path(), &dest, None);
    let previous = b"previous output".to_vec();
    std::fs::write(&dest, &previous).unwrap();
    let o = tpde_limited(2048, &[&args[..], &["--force"]].concat());
    check_full_disk(&o, dir.path(), &dest, Some(&previous));
}
