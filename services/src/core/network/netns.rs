//! Network namespaces of berth's own: bind-mounted under the state directory, so they
//! outlive berthd restarts, and removed by unmounting the pin.

use crate::core::error::{Error, Result};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("{} has a NUL byte", p.display())))
}

/// Pins the namespace file `ns` at `path` (a bind mount onto a file made for it); the file
/// goes again if the mount fails. `bind` runs the mount (on a thread of its own for a
/// namespace that only that thread is in).
fn pin(
    ns: &str,
    path: &Path,
    bind: impl FnOnce(CString, CString) -> std::io::Result<()>,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    std::fs::File::create(path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    let (src, target) = (cstr(Path::new(ns))?, cstr(path)?);
    if let Err(e) = bind(src, target) {
        let _ = std::fs::remove_file(path);
        return Err(Error::io(
            format!("pin network namespace {ns} at {}", path.display()),
            e,
        ));
    }
    Ok(())
}

fn bind_mount(src: &CString, target: &CString) -> std::io::Result<()> {
    // SAFETY: a bind mount between two NUL-terminated paths.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Creates a new network namespace and pins it at `path`, from a thread of its own so no
/// other thread changes namespace.
pub fn create_netns(path: &Path) -> Result<()> {
    pin("/proc/thread-self/ns/net", path, |src, target| {
        std::thread::spawn(move || {
            // SAFETY: unshare only changes this (short-lived, dedicated) thread's namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            bind_mount(&src, &target)
        })
        .join()
        .map_err(|_| std::io::Error::other("the network namespace thread panicked"))?
    })
}

/// Pins an existing network namespace (`/proc/<pid>/ns/net`) at `path`.
pub fn pin_netns(ns: &str, path: &Path) -> Result<()> {
    pin(ns, path, |src, target| bind_mount(&src, &target))
}

/// Unpins and removes a network namespace made by [`create_netns`]; absent is fine.
pub fn remove_netns(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let c = cstr(path)?;
    // SAFETY: umount2 on a NUL-terminated path; EINVAL means "not a mount point".
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(Error::io(format!("unmount {}", path.display()), e));
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_is_pinned_and_removed() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ns1");
        create_netns(&p).unwrap();
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", p.display()))
            .args(["ip", "-o", "link"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let links = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            links.lines().count(),
            1,
            "a new namespace has only lo: {links}"
        );
        remove_netns(&p).unwrap();
        assert!(!p.exists());
        remove_netns(&p).unwrap();
    }
}
