//! berth cp: files between the host and a container, either way, recursively. Inside the
//! container every path is resolved by the kernel within its root (openat2
//! RESOLVE_IN_ROOT) and every file made or read with a `*at` call relative to a directory
//! opened that way, never following a final symlink: a container's own symlinks cannot send a
//! copy out to the host's files. A running container is reached through its init's root
//! (`/proc/PID/root`, so its volumes are there too); a stopped one through its snapshot,
//! mounted for the copy.

use anyhow::{anyhow, bail, Context};
use berth_client::Client;
use berth_proto::snapshots::MountsRequest;
use berth_snapshotters::layer::root::{clean, lstat_at, Root};
use berth_snapshotters::mount::TempMount;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct CpArgs {
    /// CONTAINER:PATH or a host path
    src: String,
    /// CONTAINER:PATH or a host path (exactly one side is a container)
    dst: String,
}

/// `ID:PATH` names a container's path; a host path with a colon is written `./a:b`.
fn container_side(s: &str) -> Option<(&str, &str)> {
    let (id, path) = s.split_once(':')?;
    (!id.is_empty() && !id.contains('/')).then_some((id, path))
}

/// The container's root, and the mount that keeps it there for a stopped container.
async fn open_root(client: &Client, id: &str) -> anyhow::Result<(Root, Option<TempMount>)> {
    let task = crate::docker::task_of(client, id).await;
    if let Some(p) =
        task.filter(|p| p.pid > 0 && crate::containers::status_name(p.status) != "STOPPED")
    {
        let root = Root::open(Path::new(&format!("/proc/{}/root", p.pid)))
            .map_err(|e| anyhow!("container {id}: cannot open its root: {e}"))?;
        return Ok((root, None));
    }
    let c = crate::containers::container(client, id).await?;
    if c.snapshot_key.is_empty() {
        bail!("container {id} has no snapshot to copy from or to");
    }
    let mounts = client
        .snapshots()
        .mounts(MountsRequest {
            snapshotter: c.snapshotter.clone(),
            key: c.snapshot_key.clone(),
        })
        .await
        .map_err(|e| anyhow!("container {id}: its snapshot: {}", e.message()))?
        .into_inner()
        .mounts;
    let mounted = TempMount::new(&crate::run::local_mounts(&mounts))
        .context("mount the container's rootfs")?;
    let root = Root::open(mounted.path()).map_err(|e| anyhow!("{e}"))?;
    Ok((root, Some(mounted)))
}

fn cstr(name: &OsStr) -> anyhow::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| anyhow!("{name:?} has a NUL byte"))
}

fn fstatat(dir: &OwnedFd, name: &OsStr) -> anyhow::Result<libc::stat> {
    lstat_at(dir, name)
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| anyhow!("{name:?}: no such file or directory"))
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)`.
fn openat(dir: &OwnedFd, name: &OsStr, flags: i32, mode: u32) -> std::io::Result<OwnedFd> {
    let c = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: openat relative to a descriptor we own; the result is a fresh fd we own.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn kind(st: &libc::stat) -> u32 {
    st.st_mode & libc::S_IFMT
}

/// Names in the directory `dir` (listed through its /proc/self/fd entry).
fn names(dir: &OwnedFd) -> std::io::Result<Vec<std::ffi::OsString>> {
    let mut v: Vec<_> = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    v.sort();
    Ok(v)
}

/// Copies `name` in `dir` (inside the container) to `to` on the host.
fn copy_out(dir: &OwnedFd, name: &OsStr, to: &Path) -> anyhow::Result<()> {
    let st = fstatat(dir, name).with_context(|| format!("stat {name:?}"))?;
    match kind(&st) {
        libc::S_IFDIR => {
            match std::fs::create_dir(to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && to.is_dir() => {}
                Err(e) => return Err(e).with_context(|| format!("create {}", to.display())),
            }
            std::fs::set_permissions(
                to,
                std::os::unix::fs::PermissionsExt::from_mode(st.st_mode & 0o7777),
            )?;
            let sub = openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            for n in names(&sub)? {
                copy_out(&sub, &n, &to.join(&n))?;
            }
        }
        libc::S_IFREG => {
            let f = openat(dir, name, libc::O_RDONLY, 0)?;
            let mut from = std::fs::File::from(f);
            let mut out =
                std::fs::File::create(to).with_context(|| format!("create {}", to.display()))?;
            std::io::copy(&mut from, &mut out)?;
            std::fs::set_permissions(
                to,
                std::os::unix::fs::PermissionsExt::from_mode(st.st_mode & 0o7777),
            )?;
        }
        libc::S_IFLNK => {
            let c = cstr(name)?;
            let mut buf = vec![0u8; libc::PATH_MAX as usize];
            // SAFETY: readlinkat into a buffer of the given length, relative to our fd.
            let n = unsafe {
                libc::readlinkat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("readlink {name:?}"));
            }
            buf.truncate(n as usize);
            let _ = std::fs::remove_file(to);
            std::os::unix::fs::symlink(OsStr::from_bytes(&buf), to)
                .with_context(|| format!("symlink {}", to.display()))?;
        }
        _ => eprintln!("berth: skipping {name:?}: not a file, directory or symlink"),
    }
    Ok(())
}

/// Copies the host's `from` to `name` in `dir` (inside the container).
fn copy_in(from: &Path, dir: &OwnedFd, name: &OsStr) -> anyhow::Result<()> {
    let meta =
        std::fs::symlink_metadata(from).with_context(|| format!("stat {}", from.display()))?;
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
    let existing = fstatat(dir, name).ok();
    let ft = meta.file_type();
    if ft.is_dir() {
        match existing.map(|s| kind(&s)) {
            Some(libc::S_IFDIR) => {}
            Some(_) => bail!("{name:?} exists in the container and is not a directory"),
            None => {
                let c = cstr(name)?;
                // SAFETY: mkdirat relative to a descriptor we own.
                if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) } != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("mkdir {name:?}"));
                }
            }
        }
        let sub = openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let mut entries: Vec<_> = std::fs::read_dir(from)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            copy_in(&e.path(), &sub, &e.file_name())?;
        }
    } else if ft.is_file() {
        if existing.is_some_and(|s| kind(&s) != libc::S_IFREG) {
            bail!("{name:?} exists in the container and is not a regular file");
        }
        let f = openat(
            dir,
            name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            mode,
        )
        .with_context(|| format!("create {name:?} in the container"))?;
        let mut out = std::fs::File::from(f);
        std::io::copy(&mut std::fs::File::open(from)?, &mut out)?;
    } else if ft.is_symlink() {
        let target = std::fs::read_link(from)?;
        let c = cstr(name)?;
        if existing.is_some_and(|s| kind(&s) != libc::S_IFDIR) {
            // SAFETY: unlinkat of a non-directory, relative to our descriptor.
            unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
        }
        let t = cstr(target.as_os_str())?;
        // SAFETY: symlinkat with two NUL-terminated strings, relative to our descriptor.
        if unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("symlink {name:?}"));
        }
    } else {
        eprintln!(
            "berth: skipping {}: not a file, directory or symlink",
            from.display()
        );
    }
    Ok(())
}

/// A container path split into its (cleaned) parent and last name; the root has none.
fn split(path: &str) -> anyhow::Result<(PathBuf, std::ffi::OsString)> {
    let rel = clean(Path::new(path)).ok_or_else(|| anyhow!("{path:?}: name a path below /"))?;
    let name = rel
        .file_name()
        .ok_or_else(|| anyhow!("{path:?} has no name"))?
        .to_os_string();
    Ok((
        rel.parent().map(Path::to_path_buf).unwrap_or_default(),
        name,
    ))
}

pub async fn run(client: &Client, a: CpArgs) -> anyhow::Result<()> {
    match (container_side(&a.src), container_side(&a.dst)) {
        (Some((id, path)), None) => {
            let (root, _mounted) = open_root(client, id).await?;
            let (parent, name) = split(path)?;
            let dir = root
                .open_in(&parent, libc::O_RDONLY | libc::O_DIRECTORY)
                .map_err(|e| anyhow!("{id}:{path}: {e}"))?;
            fstatat(&dir, &name).map_err(|e| anyhow!("{id}:{path}: {e}"))?;
            let dst = PathBuf::from(&a.dst);
            let to = if dst.is_dir() { dst.join(&name) } else { dst };
            copy_out(&dir, &name, &to)
        }
        (None, Some((id, path))) => {
            let from = PathBuf::from(&a.src);
            let src_name = from
                .file_name()
                .ok_or_else(|| anyhow!("{}: name a file or directory", a.src))?
                .to_os_string();
            std::fs::symlink_metadata(&from).with_context(|| format!("{}", from.display()))?;
            let (root, _mounted) = open_root(client, id).await?;
            // Into an existing directory: under the source's own name.
            let target = clean(Path::new(path)).unwrap_or_default();
            if let Ok(d) = root.open_in(&target, libc::O_RDONLY | libc::O_DIRECTORY) {
                return copy_in(&from, &d, &src_name);
            }
            let (parent, name) = split(path)?;
            let dir = root
                .open_in(&parent, libc::O_RDONLY | libc::O_DIRECTORY)
                .map_err(|e| anyhow!("{id}:{}: {e}", parent.display()))?;
            copy_in(&from, &dir, &name)
        }
        (Some(_), Some(_)) => {
            bail!("copy between two containers is not supported: copy through the host")
        }
        (None, None) => bail!("one side must be CONTAINER:PATH"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides() {
        assert_eq!(
            container_side("web:/etc/passwd"),
            Some(("web", "/etc/passwd"))
        );
        assert_eq!(container_side("./a:b"), None);
        assert_eq!(container_side("/tmp/x"), None);
        assert_eq!(container_side(":/x"), None);
        assert!(split("/").is_err());
        assert_eq!(
            split("/a/../b/c").unwrap(),
            (PathBuf::from("b"), "c".into())
        );
    }
}
