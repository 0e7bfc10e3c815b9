//! The container's root filesystem: the mounts the daemon sends, mounted on the bundle's
//! `rootfs` with the same mount code the snapshotters use (read-only binds stay read-only),
//! idmapped when the container has a user namespace.

use crate::error::{Error, Result};
use crate::reaper::Reaper;
use berth_proto::types::Mount as WireMount;
use berth_snapshotters::mount as mnt;
use std::path::Path;

/// Mounts the rootfs mounts onto `target`, in order; nothing stays mounted on failure.
pub fn mount_rootfs(mounts: &[WireMount], target: &Path) -> Result<()> {
    let mounts: Vec<berth_snapshotters::Mount> = mounts.iter().cloned().map(Into::into).collect();
    mnt::mount_all(&mounts, target).map_err(|e| Error::internal(format!("mount rootfs: {e}")))
}

/// Mounts the rootfs mounts on the bundle's `rootfs`: through the spec's uid/gid mappings
/// when the bundle's spec asks for a user namespace (see [`crate::idmap`]), else as they are.
pub fn mount_bundle_rootfs(mounts: &[WireMount], bundle: &Path, reaper: &Reaper) -> Result<()> {
    let spec: Option<serde_json::Value> = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match spec.as_ref().and_then(crate::idmap::mappings) {
        Some((uids, gids)) => {
            let mounts: Vec<berth_snapshotters::Mount> =
                mounts.iter().cloned().map(Into::into).collect();
            crate::idmap::mount_rootfs(
                &mounts,
                &bundle.join("rootfs"),
                &bundle.join("idmap"),
                &uids,
                &gids,
                reaper,
            )
        }
        None => mount_rootfs(mounts, &bundle.join("rootfs")),
    }
}

/// Detaches the bundle's rootfs.
pub fn unmount_rootfs(bundle: &Path) {
    mnt::unmount(&bundle.join("rootfs"));
}
