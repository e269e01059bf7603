//! Running one measured child process: wall time from spawn to exit, and the
//! child's own peak RSS and CPU time from `wait4`'s rusage, so each number
//! belongs to that one process and not to the harness.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// What one child run cost.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RunStats {
    /// Seconds from spawn to exit.
    pub wall_s: f64,
    /// Peak resident set of the child, KiB (`ru_maxrss`).
    pub maxrss_kib: u64,
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub sys_s: f64,
}

/// The child's stdout and stderr, kept for error messages and for children
/// that report their own timings.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

fn tv_secs(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6
}

/// Runs `cmd` to completion, stdout/stderr captured through files in `scratch`
/// (no pipes to drain, so no deadlock and no extra thread in the timing).
/// Fails if the child exits non-zero, with the tail of its stderr.
pub fn run(cmd: &mut Command, scratch: &Path) -> Result<(RunStats, Captured)> {
    let out_p = scratch.join("child.stdout");
    let err_p = scratch.join("child.stderr");
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_p)?)
        .stderr(File::create(&err_p)?);
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value for wait4 to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own child, not yet reaped (std's Child has not
        // waited on it); the pointers are to live locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("wait4");
        }
    }
    let wall_s = start.elapsed().as_secs_f64();
    // The child is reaped; dropping `Child` neither waits nor kills.
    drop(child);
    let cap = Captured {
        stdout: std::fs::read_to_string(&out_p).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_p).unwrap_or_default(),
    };
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !ok {
        let tail: String = {
            let s = cap.stderr.trim_end();
            let start = s.len().saturating_sub(800);
            s.get(start..).unwrap_or(s).to_owned()
        };
        let how = if libc::WIFEXITED(status) {
            format!("exit code {}", libc::WEXITSTATUS(status))
        } else {
            format!("signal {}", libc::WTERMSIG(status))
        };
        bail!("{:?} failed ({how}): {tail}", cmd_line(cmd));
    }
    Ok((
        RunStats {
            wall_s,
            maxrss_kib: ru.ru_maxrss.max(0) as u64,
            user_s: tv_secs(ru.ru_utime),
            sys_s: tv_secs(ru.ru_stime),
        },
        cap,
    ))
}

/// The command as a shell-like line, for messages.
pub fn cmd_line(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
