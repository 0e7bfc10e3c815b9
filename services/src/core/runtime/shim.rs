//! Launching a shim with containerd's shim v2 start protocol, and cleaning up after one
//! that is gone (`<shim> delete`).

use super::driver::ShimWire;
use super::types::Exited;
use crate::core::error::{Error, Kind, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// `io.containerd.runc.v2` -> `containerd-shim-runc-v2`.
pub fn binary_name(runtime: &str) -> Result<String> {
    let parts: Vec<&str> = runtime.split('.').collect();
    if parts.len() < 2
        || parts.iter().any(|p| {
            p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
    {
        return Err(Error::invalid(format!(
            "runtime {runtime:?} is not a shim v2 runtime name like io.containerd.runc.v2"
        )));
    }
    let n = parts.len();
    Ok(format!("containerd-shim-{}-{}", parts[n - 2], parts[n - 1]))
}

/// Finds the shim binary: next to berthd first, then on PATH.
pub fn find_binary(runtime: &str) -> Result<PathBuf> {
    let name = binary_name(runtime)?;
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    locate(&name, beside).ok_or_else(|| {
        Error::precondition(format!(
            "runtime {runtime}: shim binary {name} not found next to berthd or on PATH; install it (containerd-shim-runc-v2 comes with Debian's containerd package)"
        ))
    })
}

/// `name` itself when it is a path, else the first file so named in `first` (when given),
/// then on PATH.
pub fn locate(name: &str, first: Option<PathBuf>) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    first
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The environment variable berth's shim reads its low-level runtime from (`native`,
/// `runc`, or a runc-compatible binary).
pub const RUNTIME_ENV: &str = "BERTH_SHIM_RUNTIME";

pub struct Launch<'a> {
    pub binary: &'a Path,
    pub namespace: &'a str,
    pub id: &'a str,
    pub bundle: &'a Path,
    /// berthd's gRPC socket.
    pub address: &'a Path,
    pub ttrpc_address: PathBuf,
    /// The low-level runtime the caller's runc options name (`binary_name`), for berth's
    /// shim; None: the one berthd runs with.
    pub runtime: Option<&'a str>,
    /// Reads what `delete` prints.
    pub shims: &'a dyn ShimWire,
}

impl Launch<'_> {
    fn command(&self, action: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.binary);
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("berthd"));
        cmd.arg("-namespace")
            .arg(self.namespace)
            .arg("-address")
            .arg(self.address)
            .arg("-publish-binary")
            .arg(exe)
            .arg("-id")
            .arg(self.id);
        if action == "delete" {
            cmd.arg("-bundle").arg(self.bundle);
        }
        cmd.arg(action)
            .current_dir(self.bundle)
            .env("TTRPC_ADDRESS", &self.ttrpc_address)
            .envs(self.runtime.map(|r| (RUNTIME_ENV, r)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        cmd
    }

    /// Runs `<shim> start`; returns the socket the shim listens on.
    pub async fn start(&self) -> Result<PathBuf> {
        let child = self
            .command("start")
            .spawn()
            .map_err(|e| Error::io(format!("start shim {}", self.binary.display()), e))?;
        let out =
            tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
                .await
                .map_err(|_| Error::new(Kind::Unavailable, "shim start did not finish within 30s"))?
                .map_err(|e| Error::io("wait for shim start", e))?;
        if !out.status.success() {
            return Err(Error::precondition(format!(
                "shim {} failed to start ({}): {}",
                self.binary.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let addr = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let path = addr.strip_prefix("unix://").unwrap_or(&addr);
        if path.is_empty() || path.starts_with('@') {
            return Err(Error::precondition(format!(
                "shim answered with address {addr:?}; berth only talks to shims on filesystem sockets"
            )));
        }
        Ok(PathBuf::from(path))
    }

    /// Runs `<shim> delete` for a shim that is gone; returns how its task ended.
    pub async fn delete(&self) -> Result<Exited> {
        let child = self
            .command("delete")
            .spawn()
            .map_err(|e| Error::io(format!("run {} delete", self.binary.display()), e))?;
        let out =
            tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
                .await
                .map_err(|_| {
                    Error::new(Kind::Unavailable, "shim delete did not finish within 30s")
                })?
                .map_err(|e| Error::io("wait for shim delete", e))?;
        if !out.status.success() {
            return Err(Error::precondition(format!(
                "{} delete failed: {}",
                self.binary.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(self.shims.decode_deleted(&out.stdout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_map_to_binaries() {
        assert_eq!(
            binary_name("io.containerd.runc.v2").unwrap(),
            "containerd-shim-runc-v2"
        );
        assert_eq!(
            binary_name("io.containerd.berth.v2").unwrap(),
            "containerd-shim-berth-v2"
        );
        for bad in ["", "runc", "io.containerd../x", "a.b/c.d", "io..v2"] {
            assert!(binary_name(bad).is_err(), "{bad}");
        }
    }
}
