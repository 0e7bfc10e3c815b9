//! The container's root filesystem: the mounts the daemon sends, mounted on the bundle's
//! `rootfs` with the same mount code the snapshotters use (read-only binds stay read-only),
//! idmapped when the container has a user namespace.

use crate::error::{Error, Result};
use crate::reaper::Reaper;
use berth_proto::types::Mount as WireMount;
use berth_snapshotters::mount as mnt;
use std::path::Path;

/// Mounts the rootfs mounts on the bundle's `rootfs`. Mounts of a remapped snapshot carry
/// their own uid/gid mappings (`uidmap=`/`gidmap=`), which the mount code honours; otherwise
/// the spec's mappings are used when it asks for a user namespace (see [`crate::idmap`]);
/// else the mounts are mounted as they are.
pub fn mount_bundle_rootfs(mounts: &[WireMount], bundle: &Path, reaper: &Reaper) -> Result<()> {
    let mounts: Vec<berth_snapshotters::Mount> = mounts.iter().cloned().map(Into::into).collect();
    let rootfs = bundle.join("rootfs");
    let wait = |pid: libc::pid_t| {
        reaper.wait(pid);
    };
    if crate::idmap::carried(&mounts) {
        return mnt::mount_all_with(&mounts, &rootfs, &wait)
            .map_err(|e| Error::internal(format!("mount rootfs: {e}")));
    }
    let spec: Option<serde_json::Value> = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match spec.as_ref().and_then(crate::idmap::mappings) {
        Some((uids, gids)) => crate::idmap::mount_rootfs(&mounts, &rootfs, &uids, &gids, reaper),
        None => mnt::mount_all_with(&mounts, &rootfs, &wait)
            .map_err(|e| Error::internal(format!("mount rootfs: {e}"))),
    }
}

/// Detaches the bundle's rootfs.
pub fn unmount_rootfs(bundle: &Path) {
    mnt::unmount(&bundle.join("rootfs"));
}

#[cfg(test)]
mod root_tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A remapped snapshot's mounts carry their mappings: the rootfs shows the layers through
    /// them whether or not the spec asks for a user namespace.
    #[test]
    fn mounts_carrying_mappings_are_mounted_through_them() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || !berth_snapshotters::idmap::supported() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        for s in ["lo", "up", "work", "bundle/rootfs"] {
            std::fs::create_dir_all(d.path().join(s)).unwrap();
        }
        std::fs::write(d.path().join("lo/f"), b"x").unwrap();
        std::fs::write(d.path().join("bundle/config.json"), b"{}").unwrap();
        let p = |s: &str| d.path().join(s).display().to_string();
        let m = WireMount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "uidmap=0:33:65535".into(),
                "gidmap=0:66:65535".into(),
                format!("workdir={}", p("work")),
                format!("upperdir={}", p("up")),
                format!("lowerdir={}", p("lo")),
            ],
        };
        let bundle = d.path().join("bundle");
        mount_bundle_rootfs(&[m], &bundle, &crate::reaper::for_tests()).unwrap();
        let meta = std::fs::metadata(bundle.join("rootfs/f")).unwrap();
        unmount_rootfs(&bundle);
        assert_eq!((meta.uid(), meta.gid()), (33, 66));
    }
}
