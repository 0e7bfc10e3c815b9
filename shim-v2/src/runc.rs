//! Driving the low-level runtime: the [`Runtime`] trait the task service calls, and [`Runc`],
//! which runs the runc binary. Exit statuses come from the reaper, which owns waiting.

use crate::error::Error;
use crate::reaper::Reaper;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

pub struct Runc {
    pub binary: String,
    pub root: PathBuf,
    pub reaper: Arc<Reaper>,
}

/// Where a runc'd process's stdio goes.
#[derive(Default)]
pub struct Stdio3 {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// A runtime's failure, with its kind: berth's own (internal) unless the runtime found it to
/// be the container's (see [`crate::error::fold`]).
#[derive(Debug)]
pub struct Failed(pub Error);

impl Failed {
    /// A failure of the runtime itself.
    pub fn new(m: impl Into<String>) -> Self {
        Failed(Error::internal(m))
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Failed> for Error {
    fn from(f: Failed) -> Self {
        f.0
    }
}

/// What the task service asks of a low-level runtime (runc's command line). A double in the
/// tests stands in for runc, so the service's state machine is tested without root.
pub trait Runtime: Send + Sync {
    /// Runs a command to completion; returns its stdout, or the error it printed.
    fn run(&self, args: &[&str], stdio: Stdio3) -> Result<Vec<u8>, Failed>;
    /// Runs a command that starts a container process (create, exec) with `stdio`; errors
    /// come from its JSON log at `log`. The process's pid is written to `--pid-file`.
    fn launch(&self, args: &[&str], stdio: Stdio3, log: &Path) -> Result<(), Failed>;
}

/// The pid a runtime wrote to its `--pid-file`.
pub fn read_pid(path: &Path) -> Result<i32, Failed> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Failed::new(format!("runc wrote no pid to {}", path.display())))
}

impl Runtime for Runc {
    /// Runs `runc --root R <args>`; returns stdout, or the error runc printed.
    fn run(&self, args: &[&str], stdio: Stdio3) -> Result<Vec<u8>, Failed> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root).args(args);
        let capture_out = stdio.stdout.is_none();
        cmd.stdin(stdio.stdin.map(Stdio::from).unwrap_or_else(Stdio::null));
        cmd.stdout(stdio.stdout.map(Stdio::from).unwrap_or_else(Stdio::piped));
        cmd.stderr(stdio.stderr.map(Stdio::from).unwrap_or_else(Stdio::piped));
        let mut child = cmd.spawn().map_err(|e| {
            Failed::new(format!(
                "cannot run {}: {e}; is runc installed (apt-get install runc)?",
                self.binary
            ))
        })?;
        let err_pipe = child.stderr.take();
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = err_pipe {
                let _ = p.read_to_string(&mut s);
            }
            s
        });
        let mut out = vec![];
        if capture_out {
            if let Some(mut p) = child.stdout.take() {
                let _ = p.read_to_end(&mut out);
            }
        }
        let exit = self.reaper.wait(child.id() as i32);
        let err = err_reader.join().unwrap_or_default();
        if exit.status != 0 {
            let msg = err.trim();
            return Err(Failed::new(format!(
                "runc {} failed (exit {}): {}",
                args.first().copied().unwrap_or(""),
                exit.status,
                if msg.is_empty() { "no message" } else { msg }
            )));
        }
        Ok(out)
    }

    /// Runs a runc command that starts a container process (create, exec). The process
    /// inherits runc's stdio, so nothing is captured from it: missing stdio is /dev/null and
    /// runc reports errors through its JSON log at `log`.
    fn launch(&self, args: &[&str], stdio: Stdio3, log: &Path) -> Result<(), Failed> {
        let _ = std::fs::remove_file(log);
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(log)
            .args(["--log-format", "json"])
            .args(args);
        cmd.stdin(stdio.stdin.map(Stdio::from).unwrap_or_else(Stdio::null));
        cmd.stdout(stdio.stdout.map(Stdio::from).unwrap_or_else(Stdio::null));
        cmd.stderr(stdio.stderr.map(Stdio::from).unwrap_or_else(Stdio::null));
        let child = cmd.spawn().map_err(|e| {
            Failed::new(format!(
                "cannot run {}: {e}; is runc installed (apt-get install runc)?",
                self.binary
            ))
        })?;
        let exit = self.reaper.wait(child.id() as i32);
        if exit.status == 0 {
            return Ok(());
        }
        let msgs: Vec<String> = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["level"] == "error")
            .filter_map(|v| v["msg"].as_str().map(str::to_string))
            .collect();
        let said = format!(
            "runc {} failed (exit {}): {}",
            args.first().copied().unwrap_or(""),
            exit.status,
            if msgs.is_empty() {
                "no message".to_string()
            } else {
                msgs.join("; ")
            }
        );
        Err(Failed(crate::error::fold(&said, &launched_process(args))))
    }
}

/// The OCI process a create (`--bundle B`) or exec (`--process P`) runs, to say its failure
/// in words (Null when neither is given or readable).
fn launched_process(args: &[&str]) -> serde_json::Value {
    let flag = |name: &str| {
        args.iter()
            .position(|a| *a == name)
            .and_then(|i| args.get(i + 1))
            .map(Path::new)
    };
    match (flag("--process"), flag("--bundle")) {
        (Some(p), _) => crate::error::read_json(p),
        (None, Some(b)) => crate::error::bundle_process(b),
        (None, None) => serde_json::Value::Null,
    }
}
