//! The container's root filesystem: the mounts the daemon sends, mounted on the bundle's
//! `rootfs` with the same mount code the snapshotters use (read-only binds stay read-only).

use crate::error::{Error, Result};
use berth_proto::types::Mount as WireMount;
use berth_snapshotters::mount as mnt;
use std::path::Path;

/// Mounts the rootfs mounts onto `target`, in order; nothing stays mounted on failure.
pub fn mount_rootfs(mounts: &[WireMount], target: &Path) -> Result<()> {
    let mounts: Vec<berth_snapshotters::Mount> = mounts.iter().cloned().map(Into::into).collect();
    mnt::mount_all(&mounts, target).map_err(|e| Error::internal(format!("mount rootfs: {e}")))
}

/// Detaches the bundle's rootfs.
pub fn unmount_rootfs(bundle: &Path) {
    mnt::unmount(&bundle.join("rootfs"));
}
