//! Plugins berthd starts itself from `plugin_path`: each executable named `NN-name` gets
//! one end of a socket pair as fd 3 (NRI_PLUGIN_SOCKET=3) and joins like a dialled one.

use super::{join, Inner};
use crate::core::error::{blocking, Error, Result};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::Arc;

pub(super) fn start_all(inner: &Arc<Inner>) -> Result<()> {
    let dir = &inner.cfg.plugin_path;
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    names.sort();
    for path in names {
        if let Err(e) = start_one(inner, &path) {
            tracing::warn!(plugin = %path.display(), error = %e, "NRI plugin not started");
        }
    }
    Ok(())
}

fn start_one(inner: &Arc<Inner>, path: &Path) -> Result<()> {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let Some((idx, name)) = file.split_once('-') else {
        return Err(Error::invalid("plugin file names are NN-name"));
    };
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| Error::io("socket pair for a plugin", e))?;
    ours.set_nonblocking(true)
        .map_err(|e| Error::io("socket pair for a plugin", e))?;
    let fd = std::os::fd::OwnedFd::from(theirs);
    let mut cmd = std::process::Command::new(path);
    cmd.env("NRI_PLUGIN_NAME", name)
        .env("NRI_PLUGIN_IDX", idx)
        .env("NRI_PLUGIN_SOCKET", "3")
        .stdin(std::process::Stdio::null());
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: between fork and exec only dup2 and fcntl run, both async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself keeps close-on-exec set: fd 3 already, it is cleared instead.
            let done = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3)
            };
            if done < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("start {}", path.display()), e))?;
    drop(fd);
    let conn = tokio::net::UnixStream::from_std(ours)
        .map_err(|e| Error::io("socket pair for a plugin", e))?;
    let inner = inner.clone();
    tokio::spawn(async move {
        join(conn, inner).await;
        let mut child = child;
        let _ = child.kill();
        let _ = blocking(move || {
            child
                .wait()
                .map_err(|e| Error::io("wait for an NRI plugin", e))
        })
        .await;
    });
    Ok(())
}
