//! User-namespace remapping of snapshots, as containerd's overlayfs snapshotter and mounter do
//! it: a snapshot labelled `containerd.io/snapshot/uidmapping` and `.../gidmapping`
//! (`<container id>:<host id>:<size>[,...]`) gets its own directory owned by the mapped root,
//! and mounts carrying `uidmap=`/`gidmap=` options; the mounter stacks the overlay on
//! idmapped clones of the lower directories, so files of host uid 0 in the image show as the
//! mapped root, with no chowned copy of the image. Needs idmapped mounts under overlayfs
//! (Linux 5.19).

use crate::{Error, Labels, Result};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// containerd's label for a snapshot's uid mappings.
pub const UID_MAPPING_LABEL: &str = "containerd.io/snapshot/uidmapping";
/// containerd's label for a snapshot's gid mappings.
pub const GID_MAPPING_LABEL: &str = "containerd.io/snapshot/gidmapping";
/// The capability a snapshotter that honours the labels with idmapped mounts advertises
/// (containerd's clients then leave the remapping to it).
pub const REMAP_IDS_CAPABILITY: &str = "remap-ids";

/// One mapping: `size` ids from `container` inside are `host` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// A snapshot's uid and gid mappings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    pub uids: Vec<Mapping>,
    pub gids: Vec<Mapping>,
}

fn parse_list(what: &str, text: &str) -> Result<Vec<Mapping>> {
    let bad = |m: &str| {
        Error::InvalidArgument(format!(
            "{what} {m:?} is not <container id>:<host id>:<size>"
        ))
    };
    text.split(',')
        .filter(|m| !m.is_empty())
        .map(|m| {
            let parts: Vec<&str> = m.split(':').collect();
            let [c, h, s] = parts.as_slice() else {
                return Err(bad(m));
            };
            let n = |v: &str| v.trim().parse::<u32>().ok().filter(|&n| n != u32::MAX);
            match (n(c), n(h), n(s)) {
                (Some(container), Some(host), Some(size)) => Ok(Mapping {
                    container,
                    host,
                    size,
                }),
                _ => Err(bad(m)),
            }
        })
        .collect()
}

fn text(m: &[Mapping]) -> String {
    m.iter()
        .map(|m| format!("{}:{}:{}", m.container, m.host, m.size))
        .collect::<Vec<_>>()
        .join(",")
}

/// The host id of container id 0 in `m`.
fn host_root(what: &str, m: &[Mapping]) -> Result<u32> {
    m.iter()
        .find(|m| m.container == 0 && m.size > 0)
        .map(|m| m.host)
        .ok_or_else(|| Error::InvalidArgument(format!("{what} maps no container id 0")))
}

impl IdMap {
    /// Parses the two label (or option) values; both must be given.
    pub fn parse(uidmap: &str, gidmap: &str) -> Result<IdMap> {
        let map = IdMap {
            uids: parse_list("uid mapping", uidmap)?,
            gids: parse_list("gid mapping", gidmap)?,
        };
        if map.uids.is_empty() || map.gids.is_empty() {
            return Err(Error::InvalidArgument(
                "a remapped snapshot needs both uid and gid mappings".into(),
            ));
        }
        Ok(map)
    }

    /// The mappings a snapshot's labels ask for, if any.
    pub fn from_labels(labels: &Labels) -> Result<Option<IdMap>> {
        let (u, g) = (labels.get(UID_MAPPING_LABEL), labels.get(GID_MAPPING_LABEL));
        if u.is_none() && g.is_none() {
            return Ok(None);
        }
        IdMap::parse(
            u.map(String::as_str).unwrap_or(""),
            g.map(String::as_str).unwrap_or(""),
        )
        .map(Some)
    }

    /// The host (uid, gid) of the container's root.
    pub fn root_pair(&self) -> Result<(u32, u32)> {
        Ok((
            host_root("the uid mapping", &self.uids)?,
            host_root("the gid mapping", &self.gids)?,
        ))
    }

    /// The snapshot labels that ask a snapshotter for these mappings.
    pub fn labels(&self) -> Labels {
        Labels::from([
            (UID_MAPPING_LABEL.to_string(), text(&self.uids)),
            (GID_MAPPING_LABEL.to_string(), text(&self.gids)),
        ])
    }

    /// The mount options that carry the mappings to the mounter.
    pub fn options(&self) -> [String; 2] {
        [
            format!("uidmap={}", text(&self.uids)),
            format!("gidmap={}", text(&self.gids)),
        ]
    }
}

/// Whether this kernel can stack overlayfs on idmapped layers (Linux 5.19 or later).
pub fn supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release
            .trim()
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (major, minor) >= (5, 19)
    })
}

const SYS_OPEN_TREE: libc::c_long = 428;
const SYS_MOVE_MOUNT: libc::c_long = 429;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_EMPTY_PATH: libc::c_uint = 0x1000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// mount_setattr(2): sets `attr_set` (`libc::MOUNT_ATTR_*`) on the mount at `path` from
/// `dirfd`, as `flags` say (AT_EMPTY_PATH, AT_RECURSIVE); `userns` is the user namespace of
/// MOUNT_ATTR_IDMAP. Only the system call, on memory the caller prepared: safe in a forked
/// child. Returns its result, 0 or -1 with errno set (ENOSYS before Linux 5.12).
pub fn mount_setattr(
    dirfd: libc::c_int,
    path: &CStr,
    flags: libc::c_uint,
    attr_set: u64,
    userns: Option<&OwnedFd>,
) -> libc::c_long {
    let attr = libc::mount_attr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |fd| fd.as_raw_fd() as u64),
    };
    // SAFETY: mount_setattr on a NUL-terminated path with a properly sized attribute struct.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    }
}

fn last_error(what: &str) -> Error {
    Error::io(
        format!("idmapped mount ({what}; idmapped mounts need Linux 5.19)"),
        std::io::Error::last_os_error(),
    )
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument("mount path contains a NUL byte".into()))
}

fn pipe() -> Result<[i32; 2]> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills the array with two fresh descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("pipe", std::io::Error::last_os_error()));
    }
    Ok(fds)
}

/// A user namespace with `map`'s mappings, held by a descriptor. A short-lived child
/// process makes it; `wait` collects that child (a process with a reaper of its own passes
/// the reaper's wait).
pub fn userns(map: &IdMap, wait: &dyn Fn(libc::pid_t)) -> Result<OwnedFd> {
    let ready = pipe()?;
    let hold = match pipe() {
        Ok(h) => h,
        Err(e) => {
            // SAFETY: closing the descriptors pipe() just made.
            unsafe {
                libc::close(ready[0]);
                libc::close(ready[1]);
            }
            return Err(e);
        }
    };
    // SAFETY: the child makes only async-signal-safe calls (close, unshare, write, read,
    // _exit) on descriptors and locals prepared before the fork.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: as above; the child never returns into the caller's code.
        unsafe {
            libc::close(ready[0]);
            libc::close(hold[1]);
            let ok: u8 = u8::from(libc::unshare(libc::CLONE_NEWUSER) == 0);
            libc::write(ready[1], (&ok as *const u8).cast(), 1);
            let mut b = 0u8;
            libc::read(hold[0], (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    // SAFETY: closing the ends this process does not use.
    unsafe {
        libc::close(ready[1]);
        libc::close(hold[0]);
    }
    if child < 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: our own descriptors.
        unsafe {
            libc::close(ready[0]);
            libc::close(hold[1]);
        }
        return Err(Error::io("fork", e));
    }
    let mut ok = 0u8;
    // SAFETY: reading one byte into a local.
    let n = unsafe { libc::read(ready[0], (&mut ok as *mut u8).cast(), 1) };
    // SAFETY: our read end is done.
    unsafe { libc::close(ready[0]) };
    let opened = if n == 1 && ok == 1 {
        std::fs::write(format!("/proc/{child}/uid_map"), map_text(&map.uids))
            .and_then(|()| std::fs::write(format!("/proc/{child}/gid_map"), map_text(&map.gids)))
            .and_then(|()| std::fs::File::open(format!("/proc/{child}/ns/user")))
            .map_err(|e| Error::io("user namespace mappings", e))
    } else {
        Err(Error::FailedPrecondition(
            "cannot create a user namespace for an idmapped mount".into(),
        ))
    };
    // SAFETY: closing our end lets the child exit.
    unsafe { libc::close(hold[1]) };
    wait(child);
    opened.map(OwnedFd::from)
}

fn map_text(m: &[Mapping]) -> String {
    m.iter()
        .map(|m| format!("{} {} {}\n", m.container, m.host, m.size))
        .collect()
}

/// Waits for a child of this process (for callers with no reaper of their own).
pub fn wait_child(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid writes the status into a local.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// An idmapped, detached clone of the mount tree at `src`, seen through `ns`'s mappings.
pub fn idmapped_clone(src: &Path, ns: &OwnedFd) -> Result<OwnedFd> {
    let path = cpath(src)?;
    // SAFETY: open_tree on a NUL-terminated path; the result is a new descriptor or -1.
    let tree = unsafe {
        libc::syscall(
            SYS_OPEN_TREE,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(last_error(&format!("open_tree {}", src.display())));
    }
    // SAFETY: a fresh descriptor from open_tree.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let rc = mount_setattr(
        tree.as_raw_fd(),
        c"",
        AT_EMPTY_PATH,
        libc::MOUNT_ATTR_IDMAP,
        Some(ns),
    );
    if rc != 0 {
        return Err(last_error(&format!("mount_setattr {}", src.display())));
    }
    Ok(tree)
}

/// Attaches a detached tree at `dst`.
pub fn attach(tree: &OwnedFd, dst: &Path) -> Result<()> {
    let path = cpath(dst)?;
    // SAFETY: move_mount from our descriptor to a NUL-terminated path.
    let rc = unsafe {
        libc::syscall(
            SYS_MOVE_MOUNT,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            path.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(last_error(&format!("move_mount {}", dst.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_as_containerd_writes_them() {
        let labels = Labels::from([
            (
                UID_MAPPING_LABEL.to_string(),
                "0:33:100,100:333:65536".to_string(),
            ),
            (GID_MAPPING_LABEL.to_string(), "0:66:100".to_string()),
        ]);
        let map = IdMap::from_labels(&labels).unwrap().unwrap();
        assert_eq!(map.root_pair().unwrap(), (33, 66));
        assert_eq!(
            map.options(),
            ["uidmap=0:33:100,100:333:65536", "gidmap=0:66:100"]
        );
        assert_eq!(IdMap::from_labels(&Labels::new()).unwrap(), None);
        for (u, g) in [("0:1", "0:1:1"), ("x:1:1", "0:1:1"), ("0:1:1", "")] {
            assert!(IdMap::parse(u, g).is_err(), "{u} {g}");
        }
        let no_root = IdMap::parse("5:1:1", "0:1:1").unwrap();
        assert!(no_root.root_pair().is_err());
    }
}
