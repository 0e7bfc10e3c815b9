//! Idmapped root filesystems for containers in a user namespace: the rootfs mount is replaced
//! by a clone whose files appear owned through the container's uid/gid mappings (files of
//! host uid 0 are uid 0 inside), so a user-namespaced container needs no chowned copy of its
//! image. runc 1.2 does this for its own mounts; runc 1.1 does not, so the shim does it before
//! `runc create` (Linux 5.19 for overlayfs), with the snapshotters' mount code: the mappings
//! become the `uidmap=`/`gidmap=` options a remapped snapshot's mounts carry.

use crate::error::{Error, Result};
use crate::reaper::Reaper;
use berth_snapshotters::idmap::{self, IdMap};
use berth_snapshotters::Mount;
use std::path::Path;

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

fn id_map(uids: &[Mapping], gids: &[Mapping]) -> IdMap {
    let each = |m: &[Mapping]| {
        m.iter()
            .map(|&(container, host, size)| idmap::Mapping {
                container,
                host,
                size,
            })
            .collect()
    };
    IdMap {
        uids: each(uids),
        gids: each(gids),
    }
}

/// Whether the mounts carry mappings of their own (a remapped snapshot's): the mount code
/// honours them, and the spec's mappings must not be applied a second time.
pub fn carried(mounts: &[Mount]) -> bool {
    mounts
        .iter()
        .any(|m| m.options.iter().any(|o| o.starts_with("uidmap=")))
}

/// Mounts the rootfs for a container in a user namespace: an overlay is mounted over
/// idmapped clones of its layers (overlayfs itself cannot be idmapped on every kernel, its
/// layers can), anything else is mounted and then replaced by an idmapped clone.
pub fn mount_rootfs(
    mounts: &[Mount],
    rootfs: &Path,
    uids: &[Mapping],
    gids: &[Mapping],
    reaper: &Reaper,
) -> Result<()> {
    let map = id_map(uids, gids);
    let wait = |pid: libc::pid_t| {
        reaper.wait(pid);
    };
    let failed = |e: berth_snapshotters::Error| Error::invalid(format!("idmapped rootfs: {e}"));
    if let [m] = mounts {
        let mut m = m.clone();
        if m.kind == "overlay" {
            // The upper layer stays as it is (overlayfs works in it with the mounter's
            // credentials, which an idmapped upper cannot map); its root belongs to the
            // container's root, and what the container writes is stored under mapped ids.
            if let Some(u) = berth_snapshotters::mount::overlay_upper(std::slice::from_ref(&m)) {
                let (uid, gid) = map.root_pair().map_err(failed)?;
                std::os::unix::fs::chown(&u, Some(uid), Some(gid))
                    .map_err(|e| Error::internal(format!("chown {}: {e}", u.display())))?;
            }
        }
        let mut options = map.options().to_vec();
        options.append(&mut m.options);
        m.options = options;
        return berth_snapshotters::mount::mount_all_with(&[m], rootfs, &wait).map_err(failed);
    }
    let ns = idmap::userns(&map, &wait).map_err(failed)?;
    berth_snapshotters::mount::mount_all(mounts, rootfs)
        .map_err(|e| Error::internal(format!("mount rootfs: {e}")))?;
    let clone = idmap::idmapped_clone(rootfs, &ns);
    berth_snapshotters::mount::unmount(rootfs);
    idmap::attach(&clone.map_err(failed)?, rootfs).map_err(failed)
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
        assert_eq!(
            id_map(&[(0, 1000, 5)], &[(0, 7, 1)]).options(),
            ["uidmap=0:1000:5", "gidmap=0:7:1"]
        );
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
    }
}
