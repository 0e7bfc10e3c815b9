//! Mounting what snapshotters hand out (for the differ when it cannot work on the
//! directories directly), and reading mounts back into the directories they stand for.

use crate::idmap;
use crate::whiteout::Whiteouts;
use crate::{Error, Mount, Result};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Splits mount options into flags and the data string the filesystem gets.
fn parse_options(options: &[String]) -> (libc::c_ulong, bool, String) {
    let mut flags: libc::c_ulong = 0;
    let mut ro = false;
    let mut data = vec![];
    for o in options {
        match o.as_str() {
            "ro" => ro = true,
            "rw" => ro = false,
            "bind" => flags |= libc::MS_BIND,
            "rbind" => flags |= libc::MS_BIND | libc::MS_REC,
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            other => data.push(other.to_string()),
        }
    }
    (flags, ro, data.join(","))
}

fn c(s: &[u8]) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidArgument("mount argument contains a NUL byte".into()))
}

/// Mounts `m` on `target`, honouring `uidmap=`/`gidmap=` options (see [`mount_with`]).
pub fn mount(m: &Mount, target: &Path) -> Result<()> {
    mount_with(m, target, &idmap::wait_child)
}

/// Mounts `m` on `target`. With `uidmap=` and `gidmap=` options (a remapped snapshot's), as
/// containerd's mounter: an overlay is stacked on idmapped clones of its lower directories,
/// anything else is mounted and replaced by an idmapped clone of itself. `wait` collects
/// the short-lived child that makes the user namespace.
pub fn mount_with(m: &Mount, target: &Path, wait: &dyn Fn(libc::pid_t)) -> Result<()> {
    let (map, plain) = split_mappings(m)?;
    let Some(map) = map else {
        return mount_plain(&plain, target);
    };
    let ns = idmap::userns(&map, wait)?;
    if plain.kind == "overlay" {
        return mount_idmapped_overlay(&plain, target, &ns);
    }
    mount_plain(&plain, target)?;
    let clone = idmap::idmapped_clone(target, &ns);
    unmount(target);
    idmap::attach(&clone?, target)
}

/// The mappings a mount's options carry, and the mount without them.
fn split_mappings(m: &Mount) -> Result<(Option<idmap::IdMap>, Mount)> {
    let (mut uids, mut gids) = (None, None);
    let mut plain = m.clone();
    plain.options.retain(|o| {
        if let Some(v) = o.strip_prefix("uidmap=") {
            uids = Some(v.to_string());
        } else if let Some(v) = o.strip_prefix("gidmap=") {
            gids = Some(v.to_string());
        } else {
            return true;
        }
        false
    });
    let map = match (uids, gids) {
        (None, None) => None,
        (Some(u), Some(g)) => Some(idmap::IdMap::parse(&u, &g)?),
        _ => {
            return Err(Error::InvalidArgument(
                "a mount remaps both uids and gids (uidmap= and gidmap=) or neither".into(),
            ))
        }
    };
    Ok((map, plain))
}

/// Mounts an overlay whose lower directories are idmapped clones, attached in a scratch
/// directory for the mount call and detached after it (the overlay holds its own
/// references to them).
fn mount_idmapped_overlay(m: &Mount, target: &Path, ns: &std::os::fd::OwnedFd) -> Result<()> {
    let lowers: Vec<&str> = option(m, "lowerdir")
        .map(|l| l.split(':').collect())
        .unwrap_or_default();
    if lowers.is_empty() {
        return Err(Error::InvalidArgument(
            "an idmapped overlay needs lower directories".into(),
        ));
    }
    let scratch = tempfile::Builder::new()
        .prefix("berth-idmap-")
        .tempdir()
        .map_err(|e| Error::io("create a scratch directory for idmapped layers", e))?;
    let mut attached = vec![];
    let mounted = (|| {
        let mut mapped = vec![];
        for (i, l) in lowers.iter().enumerate() {
            let dst = scratch.path().join(i.to_string());
            std::fs::create_dir(&dst).map_err(|e| Error::io("create a layer mount point", e))?;
            idmap::attach(&idmap::idmapped_clone(Path::new(l), ns)?, &dst)?;
            attached.push(dst.clone());
            mapped.push(dst.display().to_string());
        }
        let mut over = m.clone();
        for o in &mut over.options {
            if o.starts_with("lowerdir=") {
                *o = format!("lowerdir={}", mapped.join(":"));
            }
        }
        mount_plain(&over, target)
    })();
    for d in attached {
        unmount(&d);
    }
    mounted
}

/// Mounts `m` on `target` as its options say.
fn mount_plain(m: &Mount, target: &Path) -> Result<()> {
    let (mut flags, ro, data) = parse_options(&m.options);
    let kind = if m.kind == "bind" {
        flags |= libc::MS_BIND;
        "none"
    } else {
        m.kind.as_str()
    };
    let src = c(m.source.as_bytes())?;
    let tgt = c(target.as_os_str().as_bytes())?;
    let fstype = c(kind.as_bytes())?;
    let cdata = c(data.as_bytes())?;
    if ro && flags & libc::MS_BIND == 0 {
        flags |= libc::MS_RDONLY;
    }
    // SAFETY: all pointers are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fstype.as_ptr(),
            flags,
            cdata.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(Error::io(
            format!("mount {} ({}) on {}", m.source, m.kind, target.display()),
            std::io::Error::last_os_error(),
        ));
    }
    if ro && flags & libc::MS_BIND != 0 {
        // A bind mount becomes read-only only by remounting it.
        // SAFETY: as above.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                tgt.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            unmount(target);
            return Err(Error::io("remount read-only", e));
        }
    }
    Ok(())
}

/// Mounts each of `mounts` on `target` in order; on failure, what was mounted is undone.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    mount_all_with(mounts, target, &idmap::wait_child)
}

/// [`mount_all`] for a process that collects its children itself (`wait`, see
/// [`mount_with`]).
pub fn mount_all_with(mounts: &[Mount], target: &Path, wait: &dyn Fn(libc::pid_t)) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_with(m, target, wait) {
            for _ in 0..i {
                unmount(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Detaches whatever is mounted on `target`; failures only leave a mount behind.
pub fn unmount(target: &Path) {
    if let Ok(t) = CString::new(target.as_os_str().as_bytes()) {
        // SAFETY: NUL-terminated path; MNT_DETACH never blocks on busy mounts.
        unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    }
}

/// A mount on a temporary directory, undone on drop.
pub struct TempMount {
    dir: tempfile::TempDir,
}

impl TempMount {
    pub fn new(mounts: &[Mount]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("berth-mount-")
            .tempdir()
            .map_err(|e| Error::io("create mount point", e))?;
        mount_all(mounts, dir.path())?;
        Ok(TempMount { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        unmount(self.dir.path());
    }
}

fn option<'a>(m: &'a Mount, key: &str) -> Option<&'a str> {
    m.options
        .iter()
        .find_map(|o| o.strip_prefix(key)?.strip_prefix('='))
}

/// Where a layer applied to `mounts` should be written, without mounting when the mounts
/// are berth's own shapes: an overlay's upper directory, or a bind mount's source.
pub fn apply_target(mounts: &[Mount]) -> Option<(PathBuf, Whiteouts)> {
    match mounts {
        [m] if m.kind == "overlay" => {
            option(m, "upperdir").map(|u| (PathBuf::from(u), Whiteouts::Overlay))
        }
        [m] if m.kind == "bind" => Some((PathBuf::from(&m.source), Whiteouts::Delete)),
        _ => None,
    }
}

/// The overlay upper directory of an active overlay snapshot's mounts.
pub fn overlay_upper(mounts: &[Mount]) -> Option<PathBuf> {
    match mounts {
        [m] if m.kind == "overlay" => option(m, "upperdir").map(PathBuf::from),
        _ => None,
    }
}

/// The directory a single bind mount shows.
pub fn bind_source(mounts: &[Mount]) -> Option<PathBuf> {
    match mounts {
        [m] if m.kind == "bind" => Some(PathBuf::from(&m.source)),
        _ => None,
    }
}

/// The one conversion between wire mounts (`containerd.types.Mount`) and core mounts.
impl From<berth_proto::types::Mount> for Mount {
    fn from(m: berth_proto::types::Mount) -> Self {
        Mount {
            kind: m.r#type,
            source: m.source,
            options: m.options,
        }
    }
}

impl From<Mount> for berth_proto::types::Mount {
    fn from(m: Mount) -> Self {
        berth_proto::types::Mount {
            r#type: m.kind,
            source: m.source,
            target: String::new(),
            options: m.options,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split() {
        let (f, ro, d) = parse_options(&["ro".into(), "rbind".into(), "lowerdir=/a:/b".into()]);
        assert!(ro);
        assert_eq!(f, libc::MS_BIND | libc::MS_REC);
        assert_eq!(d, "lowerdir=/a:/b");
    }

    #[test]
    fn targets() {
        let ov = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "workdir=/w".into(),
                "upperdir=/u".into(),
                "lowerdir=/l".into(),
            ],
        };
        assert_eq!(
            apply_target(std::slice::from_ref(&ov)),
            Some((PathBuf::from("/u"), Whiteouts::Overlay))
        );
        let b = Mount {
            kind: "bind".into(),
            source: "/s".into(),
            options: vec!["rw".into()],
        };
        assert_eq!(
            apply_target(&[b]),
            Some((PathBuf::from("/s"), Whiteouts::Delete))
        );
    }

    /// The shim mounts rootfs with this code too: a read-only bind (a native View) must
    /// really be read-only.
    #[test]
    fn read_only_binds_are_read_only() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "mounting needs root");
        let dir = tempfile::tempdir().unwrap();
        let (src, target) = (dir.path().join("src"), dir.path().join("target"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&target).unwrap();
        let ro = Mount {
            kind: "bind".into(),
            source: src.display().to_string(),
            options: vec!["rbind".into(), "ro".into()],
        };
        mount_all(std::slice::from_ref(&ro), &target).unwrap();
        let write = std::fs::write(target.join("x"), "x");
        unmount(&target);
        let err = write.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        assert!(!src.join("x").exists());
    }
}
