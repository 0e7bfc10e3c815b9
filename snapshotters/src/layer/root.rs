//! Paths inside a layer root, resolved by the kernel (openat2 with RESOLVE_IN_ROOT): `..`
//! and symlinks, absolute or relative, can never lead outside the root. Every change is made
//! with a `*at` call on a directory descriptor obtained this way, never by joining strings.

use crate::{Error, Result};
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

pub fn cstr(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("path {s:?} contains a NUL byte")))
}

pub fn last_os_error(context: impl Into<String>) -> Error {
    Error::io(context, std::io::Error::last_os_error())
}

/// Lexically cleans a layer path into components below the root: leading `/` and `.` go,
/// `..` pops but never above the root. Returns None for the root itself.
pub fn clean(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    pub fn open(path: &Path) -> Result<Self> {
        let c = cstr(path.as_os_str())?;
        // SAFETY: a valid NUL-terminated path; the returned fd is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(last_os_error(format!("open layer root {}", path.display())));
        }
        Ok(Root {
            // SAFETY: fd was just returned by open and is owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` (cleaned, relative) inside the root with `flags`.
    pub fn open_in(&self, rel: &Path, flags: i32) -> std::io::Result<OwnedFd> {
        let target = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let c = CString::new(target.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: openat2 reads `how` (size passed) and the NUL-terminated path; both live
        // for the call. The result is an fd we take ownership of.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a fresh descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    /// Where `rel` leads once the kernel has resolved it inside the root, every symlink on
    /// the way (the last one too) taken as if the root were `/`: a path inside the root with
    /// no symlinks left. For reading a tree nobody else writes to meanwhile (a build context).
    pub fn resolve(&self, rel: &Path) -> std::io::Result<PathBuf> {
        let fd = self.open_in(rel, libc::O_PATH)?;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        let root = std::fs::read_link(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))?;
        if !real.starts_with(&root) {
            // Cannot happen with RESOLVE_IN_ROOT; refuse rather than trust it.
            return Err(std::io::Error::from_raw_os_error(libc::EXDEV));
        }
        Ok(real)
    }

    /// The directory that holds `rel`'s last component, created (0755, root-owned) where
    /// missing, and that component's name.
    pub fn parent_of(&self, rel: &Path) -> Result<(OwnedFd, OsString)> {
        let name = rel
            .file_name()
            .ok_or_else(|| Error::InvalidArgument(format!("{} has no file name", rel.display())))?
            .to_os_string();
        let parent = rel.parent().unwrap_or(Path::new(""));
        Ok((self.dir(parent, true)?, name))
    }

    /// Opens directory `rel` inside the root, making missing components when `create`.
    pub fn dir(&self, rel: &Path, create: bool) -> Result<OwnedFd> {
        match self.open_in(rel, libc::O_PATH | libc::O_DIRECTORY) {
            Ok(fd) => return Ok(fd),
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(Error::io(format!("open directory {}", rel.display()), e)),
        }
        let mut fd = self
            .open_in(Path::new(""), libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| Error::io("open layer root", e))?;
        let mut so_far = PathBuf::new();
        for c in rel.components() {
            let Component::Normal(name) = c else { continue };
            so_far.push(name);
            let cname = cstr(name)?;
            // SAFETY: mkdirat on a directory fd we own with a NUL-terminated single name.
            let rc = unsafe { libc::mkdirat(fd.as_raw_fd(), cname.as_ptr(), 0o755) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(Error::io(
                        format!("create directory {}", so_far.display()),
                        e,
                    ));
                }
            }
            // Re-resolve from the root so a symlink met on the way stays confined.
            fd = self
                .open_in(&so_far, libc::O_PATH | libc::O_DIRECTORY)
                .map_err(|e| Error::io(format!("open directory {}", so_far.display()), e))?;
        }
        Ok(fd)
    }
}

/// `fstatat` without following a final symlink; None when the name does not exist.
pub fn lstat_at(dir: &OwnedFd, name: &OsStr) -> Result<Option<libc::stat>> {
    let c = cstr(name)?;
    // SAFETY: zeroed stat is a valid out-parameter; fstatat fills it on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: dir fd and name are valid for the call; st is a valid pointer.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        return Ok(Some(st));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOENT) {
        Ok(None)
    } else {
        Err(Error::io(format!("stat {name:?}"), e))
    }
}

/// Removes `name` from `dir`, recursively for a directory, without following symlinks.
pub fn remove_at(dir: &OwnedFd, name: &OsStr) -> Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    let c = cstr(name)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        // std's remove_dir_all never follows symlinks inside the tree; the /proc path only
        // names the directory we already hold confined.
        let p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        std::fs::remove_dir_all(&p).map_err(|e| Error::io(format!("remove directory {name:?}"), e))
    } else {
        // SAFETY: unlinkat of a single name in a directory fd we own.
        let rc = unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
        if rc != 0 {
            return Err(last_os_error(format!("remove {name:?}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_reroots() {
        assert_eq!(
            clean(Path::new("/etc/passwd")).unwrap(),
            Path::new("etc/passwd")
        );
        assert_eq!(clean(Path::new("../../x")).unwrap(), Path::new("x"));
        assert_eq!(clean(Path::new("a/../../b/./c")).unwrap(), Path::new("b/c"));
        assert!(clean(Path::new("/")).is_none());
        assert!(clean(Path::new("./..")).is_none());
    }

    #[test]
    fn symlinks_stay_inside() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.path().join("up")).unwrap();
        std::fs::create_dir(root.path().join("inside")).unwrap();
        std::os::unix::fs::symlink("/inside", root.path().join("abs")).unwrap();
        let r = Root::open(root.path()).unwrap();
        // A link to a host path resolves inside the root, where it does not exist: refused.
        assert!(r.parent_of(Path::new("escape/new/file")).is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        // An absolute link to a path inside the root lands there.
        r.parent_of(Path::new("abs/made/file")).unwrap();
        assert!(root.path().join("inside/made").is_dir());
        // `..` chains stop at the root.
        r.parent_of(Path::new("up/x/y")).unwrap();
        assert!(
            root.path().join("x").is_dir(),
            "`up` resolves to the root itself"
        );
    }
}
