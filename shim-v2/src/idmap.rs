//! Idmapped root filesystems for containers in a user namespace: the rootfs mount is replaced
//! by a clone whose files appear owned through the container's uid/gid mappings (files of
//! host uid 0 are uid 0 inside), so a user-namespaced container needs no chowned copy of its
//! image. runc 1.2 does this for its own mounts; runc 1.1 does not, so the shim does it before
//! `runc create` (Linux 5.19 for overlayfs).

use crate::error::{Error, Result};
use crate::fork;
use crate::reaper::Reaper;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const SYS_OPEN_TREE: libc::c_long = 428;
const SYS_MOVE_MOUNT: libc::c_long = 429;
const SYS_MOUNT_SETATTR: libc::c_long = 442;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_EMPTY_PATH: libc::c_uint = 0x1000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// (container id, host id, size)
pub type Mapping = (u32, u32, u32);

/// The user namespace mappings of a spec that creates or joins a user namespace.
pub fn mappings(spec: &serde_json::Value) -> Option<(Vec<Mapping>, Vec<Mapping>)> {
    let linux = &spec["linux"];
    let has_user = linux["namespaces"]
        .as_array()?
        .iter()
        .any(|n| n["type"] == "user");
    if !has_user {
        return None;
    }
    let read = |v: &serde_json::Value| -> Vec<Mapping> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| {
                        Some((
                            m["containerID"].as_u64()? as u32,
                            m["hostID"].as_u64()? as u32,
                            m["size"].as_u64()? as u32,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (u, g) = (read(&linux["uidMappings"]), read(&linux["gidMappings"]));
    (!u.is_empty() && !g.is_empty()).then_some((u, g))
}

fn map_text(m: &[Mapping]) -> String {
    m.iter().map(|(c, h, s)| format!("{c} {h} {s}\n")).collect()
}

/// A user namespace with the mappings, held by a descriptor (its helper process is gone).
fn userns(uids: &[Mapping], gids: &[Mapping], reaper: &Reaper) -> Result<OwnedFd> {
    let mut ready = [0i32; 2];
    let mut hold = [0i32; 2];
    // SAFETY: pipe2 fills the array with two fresh descriptors.
    let a = unsafe { libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) };
    // SAFETY: as above.
    let b = unsafe { libc::pipe2(hold.as_mut_ptr(), libc::O_CLOEXEC) };
    if a != 0 || b != 0 {
        return Err(Error::internal(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: the child makes only async-signal-safe calls (close, unshare, write, read).
    let child = unsafe { fork::spawn(|| unshare_and_hold(ready, hold)) }
        .map_err(|e| Error::internal(format!("fork: {e}")))?;
    // SAFETY: closing the ends this process does not use.
    unsafe {
        libc::close(ready[1]);
        libc::close(hold[0]);
    }
    let finish = |fd: i32| {
        // SAFETY: closing our end lets the helper exit.
        unsafe { libc::close(fd) };
        // The reaper owns waiting (it waits for any child).
        reaper.wait(child);
    };
    let mut ok = 0u8;
    // SAFETY: reading one byte into a local.
    let n = unsafe { libc::read(ready[0], &mut ok as *mut u8 as *mut libc::c_void, 1) };
    // SAFETY: our read end is done.
    unsafe { libc::close(ready[0]) };
    if n != 1 || ok != 1 {
        finish(hold[1]);
        return Err(Error::internal(
            "cannot create a user namespace for the idmapped rootfs",
        ));
    }
    let written = std::fs::write(format!("/proc/{child}/uid_map"), map_text(uids))
        .and_then(|()| std::fs::write(format!("/proc/{child}/gid_map"), map_text(gids)));
    let opened = written.and_then(|()| std::fs::File::open(format!("/proc/{child}/ns/user")));
    finish(hold[1]);
    let f = opened.map_err(|e| Error::internal(format!("user namespace mappings: {e}")))?;
    Ok(OwnedFd::from(f))
}

/// In the forked child: moves into a new user namespace, says on `ready` whether it could
/// (one byte, 1 or 0), and stays there, for its mappings to be written and the namespace
/// opened, until `hold`'s write end is closed.
fn unshare_and_hold(ready: [i32; 2], hold: [i32; 2]) -> i32 {
    // SAFETY: close, unshare, write and read on this child's own descriptors and locals.
    unsafe {
        libc::close(ready[0]);
        libc::close(hold[1]);
        let ok: u8 = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
            1
        } else {
            0
        };
        libc::write(ready[1], &ok as *const u8 as *const libc::c_void, 1);
        let mut b = 0u8;
        libc::read(hold[0], &mut b as *mut u8 as *mut libc::c_void, 1);
    }
    0
}

fn last_error(what: &str) -> Error {
    Error::invalid(format!(
        "idmapped rootfs ({what}): {} (user namespaces need idmapped mounts, Linux 5.19)",
        std::io::Error::last_os_error()
    ))
}

/// An idmapped, detached clone of the mount tree at `src`.
fn idmapped_clone(src: &Path, ns: &OwnedFd) -> Result<OwnedFd> {
    let path = CString::new(src.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("mount path has a NUL"))?;
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
        return Err(last_error("open_tree"));
    }
    // SAFETY: a fresh descriptor from open_tree.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: ns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr on the detached tree with a properly sized attribute struct.
    let rc = unsafe {
        libc::syscall(
            SYS_MOUNT_SETATTR,
            tree.as_raw_fd(),
            c"".as_ptr(),
            AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(last_error(&format!("mount_setattr {}", src.display())));
    }
    Ok(tree)
}

/// Attaches a detached tree at `dst`.
fn attach(tree: &OwnedFd, dst: &Path) -> Result<()> {
    let path = CString::new(dst.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("mount path has a NUL"))?;
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

/// Mounts the rootfs for a container in a user namespace: an overlay is mounted over
/// idmapped clones of its layers (overlayfs itself cannot be idmapped on every kernel, its
/// layers can), anything else is mounted and then replaced by an idmapped clone.
pub fn mount_rootfs(
    mounts: &[berth_snapshotters::Mount],
    rootfs: &Path,
    scratch: &Path,
    uids: &[Mapping],
    gids: &[Mapping],
    reaper: &Reaper,
) -> Result<()> {
    let ns = userns(uids, gids, reaper)?;
    if let [m] = mounts {
        if m.kind == "overlay" {
            return mount_overlay(m, rootfs, scratch, &ns, uids, gids);
        }
    }
    berth_snapshotters::mount::mount_all(mounts, rootfs)
        .map_err(|e| Error::internal(format!("mount rootfs: {e}")))?;
    let clone = idmapped_clone(rootfs, &ns);
    berth_snapshotters::mount::unmount(rootfs);
    attach(&clone?, rootfs)
}

/// The host id container id 0 maps to.
fn host_root(m: &[Mapping]) -> u32 {
    m.iter()
        .find(|(c, _, _)| *c == 0)
        .map(|(_, h, _)| *h)
        .unwrap_or(0)
}

fn mount_overlay(
    m: &berth_snapshotters::Mount,
    rootfs: &Path,
    scratch: &Path,
    ns: &OwnedFd,
    uids: &[Mapping],
    gids: &[Mapping],
) -> Result<()> {
    let mut lower = Vec::new();
    let (mut upper, mut work) = (None, None);
    let mut rest = Vec::new();
    for o in &m.options {
        if let Some(v) = o.strip_prefix("lowerdir=") {
            lower.extend(v.split(':').map(std::path::PathBuf::from));
        } else if let Some(v) = o.strip_prefix("upperdir=") {
            upper = Some(std::path::PathBuf::from(v));
        } else if let Some(v) = o.strip_prefix("workdir=") {
            work = Some(std::path::PathBuf::from(v));
        } else {
            rest.push(o.clone());
        }
    }
    std::fs::create_dir_all(scratch)
        .map_err(|e| Error::internal(format!("{}: {e}", scratch.display())))?;
    let mut attached = Vec::new();
    let result = (|| -> Result<String> {
        let mut place = |src: &Path, name: String| -> Result<std::path::PathBuf> {
            let dst = scratch.join(name);
            std::fs::create_dir_all(&dst)
                .map_err(|e| Error::internal(format!("{}: {e}", dst.display())))?;
            attach(&idmapped_clone(src, ns)?, &dst)?;
            attached.push(dst.clone());
            Ok(dst)
        };
        let mut lowers = Vec::new();
        for (i, l) in lower.iter().enumerate() {
            lowers.push(place(l, format!("l{i}"))?.display().to_string());
        }
        let mut opts = vec![format!("lowerdir={}", lowers.join(":"))];
        // The upper layer stays as it is (overlayfs works in it with the mounter's
        // credentials, which an idmapped upper cannot map); its root belongs to the
        // container's root, and what the container writes is stored under mapped ids.
        if let (Some(u), Some(w)) = (&upper, &work) {
            let (uid, gid) = (host_root(uids), host_root(gids));
            std::os::unix::fs::chown(u, Some(uid), Some(gid))
                .map_err(|e| Error::internal(format!("chown {}: {e}", u.display())))?;
            opts.push(format!("upperdir={}", u.display()));
            opts.push(format!("workdir={}", w.display()));
        }
        opts.extend(rest.iter().cloned());
        Ok(opts.join(","))
    })();
    let outcome = result.and_then(|data| {
        let mounted = berth_snapshotters::Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: data.split(',').map(str::to_string).collect(),
        };
        berth_snapshotters::mount::mount_all(std::slice::from_ref(&mounted), rootfs)
            .map_err(|e| Error::internal(format!("mount idmapped overlay: {e}")))
    });
    // The overlay keeps its own references to its layers: the clones can go now.
    for d in attached {
        berth_snapshotters::mount::unmount(&d);
        let _ = std::fs::remove_dir(&d);
    }
    let _ = std::fs::remove_dir(scratch);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_only_with_a_user_namespace() {
        let spec = serde_json::json!({"linux": {
            "namespaces": [{"type": "user"}],
            "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 65536}]
        }});
        assert_eq!(
            mappings(&spec),
            Some((vec![(0, 1000, 65536)], vec![(0, 1000, 65536)]))
        );
        let none = serde_json::json!({"linux": {"namespaces": [{"type": "pid"}]}});
        assert_eq!(mappings(&none), None);
        assert_eq!(map_text(&[(0, 1000, 5)]), "0 1000 5\n");
    }
}

#[cfg(test)]
mod root_tests {
    use super::*;

    #[test]
    fn an_overlay_rootfs_is_mounted_over_idmapped_layers() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        for s in ["lo", "snap/fs", "snap/work", "mnt"] {
            std::fs::create_dir_all(d.path().join(s)).unwrap();
        }
        std::fs::write(d.path().join("lo/f"), b"x").unwrap();
        let p = |s: &str| d.path().join(s).display().to_string();
        let m = berth_snapshotters::Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                format!("lowerdir={}", p("lo")),
                format!("upperdir={}", p("snap/fs")),
                format!("workdir={}", p("snap/work")),
            ],
        };
        let maps = [(0, 1000, 100000)];
        mount_rootfs(
            &[m],
            &d.path().join("mnt"),
            &d.path().join("scratch"),
            &maps,
            &maps,
            &crate::reaper::for_tests(),
        )
        .unwrap();
        let owner = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(d.path().join("mnt/f")).unwrap(),
        );
        berth_snapshotters::mount::unmount(&d.path().join("mnt"));
        assert_eq!(owner, 1000, "host uid 0 shows as the mapped 1000");
        assert!(!d.path().join("scratch").exists());
    }
}
