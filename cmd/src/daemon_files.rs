//! What berth's daemons (berthd, berth-snapshotter) share at start and stop: one process per
//! root, a unix socket created with its final mode, and SIGTERM/SIGINT as the stop request.

use anyhow::{bail, Context};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// An exclusive lock on `<root>/<file>` holding the owner's pid, kept as long as the value
/// lives; a second daemon of the same kind on the same root is refused, naming the holder.
pub struct RootLock {
    _file: std::fs::File,
}

pub fn lock_root(root: &Path, file: &str, daemon: &str) -> anyhow::Result<RootLock> {
    let path = root.join(file);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // A predecessor just SIGKILLed may still be exiting (kill returns before the process has
    // closed its files): give it a second before calling the root taken.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let rc = loop {
        // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 || std::time::Instant::now() > deadline {
            break rc;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    if rc != 0 {
        let mut pid = String::new();
        let _ = f.read_to_string(&mut pid);
        bail!(
            "another {daemon} (pid {}) is already using root {}; stop it or pass a different --root",
            pid.trim(),
            root.display()
        );
    }
    f.set_len(0)?;
    f.rewind()?;
    write!(f, "{}", std::process::id())?;
    Ok(RootLock { _file: f })
}

/// Listens on `address` with `mode` from the moment the socket exists (no window in which a
/// looser socket accepts a connection), replacing a stale socket: the caller holds its root's
/// lock, so a socket file left at the address is no live server's. A missing parent
/// directory is made owner-only.
pub fn bind_socket(address: &Path, mode: u32) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(parent) = address.parent() {
        if !parent.exists() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("chmod 0700 {}", parent.display()))?;
        }
    }
    match std::fs::remove_file(address) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove stale {}", address.display())),
    }
    // Startup is single-minded here (nothing else makes files), so the process-wide umask is
    // briefly ours.
    // SAFETY: umask only swaps the process's file mode mask.
    let old = unsafe { libc::umask(!mode & 0o777) };
    let bound = tokio::net::UnixListener::bind(address);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("listen on {}", address.display()))?;
    std::fs::set_permissions(address, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", address.display()))?;
    Ok(listener)
}

/// Resolves at SIGTERM or SIGINT (^C): stop taking calls, finish those in flight.
pub async fn stop_requested() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without the handlers the default actions stop the process instead.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_root_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_root(dir.path(), "x.lock", "xd").unwrap();
        let e = lock_root(dir.path(), "x.lock", "xd")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(&format!("another xd (pid {})", std::process::id())),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_socket_has_its_mode_and_replaces_a_stale_file() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sub/d.sock");
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        std::fs::write(&sock, b"stale").unwrap();
        let _l = bind_socket(&sock, 0o600).unwrap();
        let meta = std::fs::metadata(&sock).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
}
