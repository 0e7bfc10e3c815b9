//! The runtime plugin's extra information: a shim describes itself when run as
//! `<shim> -info`, reading the task options it would be created with on stdin and printing
//! its RuntimeInfo (options understood, version, OCI features) on stdout. berthd passes both
//! through as bytes: their encoding is the edge's business.

use crate::core::error::{Error, Kind, Result};
use crate::core::runtime::shim::{find_binary, run_fed};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A shim that has not answered by then is stuck, not thinking.
const INFO_TIMEOUT: Duration = Duration::from_secs(60);
/// More than any RuntimeInfo (runc's features are a few KiB).
const MAX_INFO: usize = 4 << 20;

/// The shim binary for `runtime`: an absolute path as it is, or a runtime name
/// (`io.containerd.runc.v2`) looked up as a task's shim is. Relative paths are refused.
pub fn resolve(runtime: &str) -> Result<PathBuf> {
    if runtime.is_empty() {
        return Err(Error::invalid(
            "no runtime named: give a runtime name like io.containerd.runc.v2 or a shim's absolute path",
        ));
    }
    if runtime.starts_with('/') {
        let p = Path::new(runtime);
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(Error::not_found(format!("runtime binary {runtime}")))
        };
    }
    if runtime.contains('/') {
        return Err(Error::invalid(format!(
            "runtime {runtime:?} is neither a name like io.containerd.runc.v2 nor an absolute path"
        )));
    }
    find_binary(runtime)
}

/// Runs `<shim for runtime> -info` with `options` (an encoded `Any`, or nothing) on stdin and
/// returns what it printed.
pub async fn ask(runtime: &str, options: Vec<u8>) -> Result<Vec<u8>> {
    let binary = resolve(runtime)?;
    let mut cmd = tokio::process::Command::new(&binary);
    cmd.arg("-info");
    let what = format!("{} -info", binary.display());
    let out = tokio::time::timeout(INFO_TIMEOUT, run_fed(cmd, &what, options, MAX_INFO))
        .await
        .map_err(|_| {
            Error::new(
                Kind::DeadlineExceeded,
                format!("{what} did not answer within {INFO_TIMEOUT:?}"),
            )
        })??;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::precondition(format!(
            "runtime {runtime}: {} -info failed ({}): {}; shims from containerd 2.0 on answer -info",
            binary.display(),
            out.status,
            stderr.trim()
        )));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("shim");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn names_and_paths_resolve_as_containerd_resolves_them() {
        assert_eq!(resolve("").unwrap_err().kind(), Kind::InvalidArgument);
        assert_eq!(
            resolve("bin/shim").unwrap_err().kind(),
            Kind::InvalidArgument
        );
        assert_eq!(
            resolve("/nonexistent/shim").unwrap_err().kind(),
            Kind::NotFound
        );
        assert_eq!(resolve("/bin/sh").unwrap(), PathBuf::from("/bin/sh"));
    }

    #[tokio::test]
    async fn the_shim_reads_the_options_and_its_answer_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        // Echoes its stdin after a marker, so both directions are seen.
        let shim = script(
            dir.path(),
            r#"[ "$1" = -info ] || exit 3; printf 'info:'; cat"#,
        );
        let got = ask(shim.to_str().unwrap(), b"opts".to_vec()).await.unwrap();
        assert_eq!(got, b"info:opts");
    }

    #[tokio::test]
    async fn a_shim_without_info_is_a_failed_precondition_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let shim = script(
            dir.path(),
            "echo 'flag provided but not defined: -info' >&2; exit 2",
        );
        let e = ask(shim.to_str().unwrap(), vec![]).await.unwrap_err();
        assert_eq!(e.kind(), Kind::FailedPrecondition);
        assert!(e.to_string().contains("not defined: -info"), "{e}");
    }
}
