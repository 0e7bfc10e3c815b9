//! berth cp: files between the host and a container, either way, recursively. Inside the
//! container every path is resolved by the kernel within its root (openat2
//! RESOLVE_IN_ROOT) and every file made or read with a `*at` call relative to a directory
//! opened that way, never following a final symlink: a container's own symlinks cannot send a
//! copy out to the host's files. On the host the same holds below the destination the user
//! names: every entry is made, chmodded or replaced relative to a directory descriptor and
//! never through a symlink already there, since an earlier copy out may have brought one
//! the container chose. A running container is reached through its init's root
//! (`/proc/PID/root`, so its volumes are there too); a stopped one through its snapshot,
//! mounted for the copy.

use anyhow::{anyhow, bail, Context};
use berth_client::Client;
use berth_proto::snapshots::MountsRequest;
use berth_snapshotters::layer::root::{clean, lstat_at, remove_at, Root};
use berth_snapshotters::mount::TempMount;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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

/// `mkdirat(dir, name, mode)`.
fn mkdir_at(dir: &OwnedFd, name: &OsStr, mode: u32) -> std::io::Result<()> {
    let c = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: mkdirat relative to a descriptor we own.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `symlinkat(target, dir, name)`.
fn symlink_at(target: &OsStr, dir: &OwnedFd, name: &OsStr) -> anyhow::Result<()> {
    let (t, c) = (cstr(target)?, cstr(name)?);
    // SAFETY: symlinkat with two NUL-terminated strings, relative to our descriptor.
    if unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("symlink {name:?}"));
    }
    Ok(())
}

/// `readlinkat(dir, name)`.
fn read_link_at(dir: &OwnedFd, name: &OsStr) -> anyhow::Result<std::ffi::OsString> {
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
        return Err(std::io::Error::last_os_error()).with_context(|| format!("readlink {name:?}"));
    }
    buf.truncate(n as usize);
    Ok(std::ffi::OsString::from_vec(buf))
}

/// `fchmod(fd, mode)`: the mode goes to what we opened, never to a path.
fn fchmod(fd: &OwnedFd, mode: u32) -> std::io::Result<()> {
    // SAFETY: fchmod on a descriptor we own.
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes room for an entry of type `want` at `name` in the host directory `dir`. An earlier
/// copy may have left there a symlink the container chose, so whatever is not already a
/// real directory where a directory goes, or a regular file where a file goes, is removed
/// (as Docker does), never followed; a symlink is always replaced.
fn clear_for(dir: &OwnedFd, name: &OsStr, want: u32) -> anyhow::Result<()> {
    let Some(st) = lstat_at(dir, name).map_err(|e| anyhow!("{e}"))? else {
        return Ok(());
    };
    if kind(&st) == want && want != libc::S_IFLNK {
        return Ok(());
    }
    remove_at(dir, name).map_err(|e| anyhow!("{e}"))
}

/// The host directory `name` in `dir`, made if missing; an existing one is reused only if
/// it is a real directory, opened without following a symlink.
fn host_dir_at(dir: &OwnedFd, name: &OsStr) -> anyhow::Result<OwnedFd> {
    clear_for(dir, name, libc::S_IFDIR)?;
    match mkdir_at(dir, name, 0o700) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
            return Err(e).with_context(|| format!("mkdir {name:?}"))
        }
        _ => {}
    }
    openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
        .with_context(|| format!("open directory {name:?}"))
}

/// Copies `name` in `dir` (inside the container) to `to_name` in the host directory `to`.
/// Every host change is made relative to `to` and never follows a symlink.
fn copy_out(dir: &OwnedFd, name: &OsStr, to: &OwnedFd, to_name: &OsStr) -> anyhow::Result<()> {
    let st = fstatat(dir, name).with_context(|| format!("stat {name:?}"))?;
    match kind(&st) {
        libc::S_IFDIR => {
            let out = host_dir_at(to, to_name)?;
            fchmod(&out, st.st_mode & 0o7777).with_context(|| format!("chmod {to_name:?}"))?;
            let sub = openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            for n in names(&sub)? {
                copy_out(&sub, &n, &out, &n)?;
            }
        }
        libc::S_IFREG => {
            let mut from = std::fs::File::from(openat(dir, name, libc::O_RDONLY, 0)?);
            clear_for(to, to_name, libc::S_IFREG)?;
            let out = openat(
                to,
                to_name,
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                0o600,
            )
            .with_context(|| format!("create {to_name:?}"))?;
            let mut out = std::fs::File::from(out);
            std::io::copy(&mut from, &mut out)?;
            out.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(
                st.st_mode & 0o7777,
            ))
            .with_context(|| format!("chmod {to_name:?}"))?;
        }
        libc::S_IFLNK => {
            let target = read_link_at(dir, name)?;
            clear_for(to, to_name, libc::S_IFLNK)?;
            symlink_at(&target, to, to_name)?;
        }
        _ => eprintln!("berth: skipping {name:?}: not a file, directory or symlink"),
    }
    Ok(())
}

/// `path` on the host, opened as a directory the way any path the user types is resolved.
fn open_host_dir(path: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)?;
    Ok(dir.into())
}

/// Where a copy out of `name` lands: under its own name in the directory `dst` names, else
/// at `dst` itself. The path the user names is resolved normally, but `dst`'s own last
/// entry, when it is not a directory, is replaced and never followed: an earlier copy may
/// have put a container's symlink there.
fn host_destination(dst: &Path, name: &OsStr) -> anyhow::Result<(OwnedFd, std::ffi::OsString)> {
    match open_host_dir(dst) {
        Ok(dir) => return Ok((dir, name.to_os_string())),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {}
        Err(e) => return Err(e).with_context(|| format!("open {}", dst.display())),
    }
    let last = dst
        .file_name()
        .ok_or_else(|| anyhow!("{}: name a file or directory", dst.display()))?;
    let parent = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = open_host_dir(parent).with_context(|| format!("open {}", parent.display()))?;
    Ok((dir, last.to_os_string()))
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
            None => mkdir_at(dir, name, mode).with_context(|| format!("mkdir {name:?}"))?,
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
        symlink_at(target.as_os_str(), dir, name)?;
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
            let (to, to_name) = host_destination(Path::new(&a.dst), &name)?;
            copy_out(&dir, &name, &to, &to_name)
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
