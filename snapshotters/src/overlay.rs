//! overlayfs: each snapshot keeps only its own changes (`fs`, the upper directory); mounts
//! stack the ancestors as lower directories.

use crate::fs::Driver;
use crate::{Error, Kind, Mount, Result};
use std::path::{Path, PathBuf};

pub const NAME: &str = "overlayfs";

pub struct Overlay;

impl Overlay {
    /// Checks that the kernel can mount overlayfs on `root`'s filesystem, with a mount in a
    /// scratch directory; the error says what to use instead.
    pub fn check_support(root: &Path) -> Result<()> {
        if !kernel_has("overlay") {
            return Err(Error::FailedPrecondition(format!(
                "overlayfs is not available in this kernel (needed under {}); load the overlay module or use the native snapshotter",
                root.display()
            )));
        }
        Ok(())
    }
}

/// Whether the running kernel has the filesystem `fstype` (/proc/filesystems lists it).
pub(crate) fn kernel_has(fstype: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.split('\t').next_back() == Some(fstype)))
        .unwrap_or(false)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

impl Driver for Overlay {
    fn populate(&self, dir: &Path, kind: Kind, _parent: Option<&Path>) -> Result<()> {
        let mk = |sub: &str| {
            std::fs::create_dir(dir.join(sub)).map_err(|source| Error::Io {
                context: format!("create {sub}"),
                source,
            })
        };
        mk("fs")?;
        if kind == Kind::Active {
            mk("work")?;
        }
        Ok(())
    }

    fn independent_layers(&self) -> bool {
        true
    }

    fn remaps_ids(&self) -> bool {
        true
    }

    fn mounts(&self, dir: &Path, kind: Kind, lowers: &[PathBuf]) -> Vec<Mount> {
        let fs = dir.join("fs");
        let bind = |src: &Path, rw: &str| Mount {
            kind: "bind".into(),
            source: path(src),
            options: vec![rw.into(), "rbind".into()],
        };
        match (kind, lowers) {
            (Kind::Active, []) => vec![bind(&fs, "rw")],
            (Kind::View, []) => vec![bind(&fs, "ro")],
            (Kind::View, [only]) => vec![bind(only, "ro")],
            (Kind::View, _) => vec![Mount {
                kind: "overlay".into(),
                source: "overlay".into(),
                options: vec![format!(
                    "lowerdir={}",
                    lowers.iter().map(|p| path(p)).collect::<Vec<_>>().join(":")
                )],
            }],
            _ => vec![Mount {
                kind: "overlay".into(),
                source: "overlay".into(),
                options: vec![
                    "index=off".into(),
                    format!("workdir={}", path(&dir.join("work"))),
                    format!("upperdir={}", path(&fs)),
                    format!(
                        "lowerdir={}",
                        lowers.iter().map(|p| path(p)).collect::<Vec<_>>().join(":")
                    ),
                ],
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::idmap::{GID_MAPPING_LABEL, UID_MAPPING_LABEL};
    use crate::{Labels, Snapshotter};
    use std::os::unix::fs::MetadataExt;

    /// containerd's remapping labels: the new snapshot's own directory belongs to the mapped
    /// root, its mounts carry the mappings, and mounted, the image's files (owned by 0 on
    /// disk) show as the mapped ids through idmapped layers.
    #[test]
    fn remapped_snapshots_show_their_layers_through_the_mappings() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "mounting needs root");
        if !crate::idmap::supported() {
            eprintln!("skipped: this kernel cannot idmap overlayfs layers (Linux 5.19)");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let s = crate::fs::FsSnapshotter::open(root.path(), super::Overlay).unwrap();
        for (i, name) in ["one", "two"].iter().enumerate() {
            let parent = (i > 0).then_some("L0");
            let m = s.prepare(name, parent, Labels::new()).unwrap();
            let upper = crate::mount::overlay_upper(&m)
                .or_else(|| crate::mount::bind_source(&m))
                .unwrap();
            std::fs::write(upper.join(name), name).unwrap();
            s.commit(&format!("L{i}"), name, Labels::new()).unwrap();
        }
        let labels = Labels::from([
            (UID_MAPPING_LABEL.to_string(), "0:33:65535".to_string()),
            (GID_MAPPING_LABEL.to_string(), "0:66:65535".to_string()),
        ]);
        let mounts = s.prepare("remapped", Some("L1"), labels).unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].kind, "overlay");
        assert!(mounts[0].options.contains(&"uidmap=0:33:65535".to_string()));
        assert!(mounts[0].options.contains(&"gidmap=0:66:65535".to_string()));
        assert_eq!(s.mounts("remapped").unwrap(), mounts);
        let upper = crate::mount::overlay_upper(&mounts).unwrap();
        let meta = std::fs::metadata(&upper).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (33, 66),
            "the upper belongs to the mapped root"
        );

        let target = tempfile::tempdir().unwrap();
        crate::mount::mount_all(&mounts, target.path()).unwrap();
        let owners: Vec<(u32, u32)> = ["one", "two"]
            .iter()
            .map(|f| {
                let m = std::fs::metadata(target.path().join(f)).unwrap();
                (m.uid(), m.gid())
            })
            .collect();
        std::fs::write(target.path().join("new"), "x").unwrap();
        crate::mount::unmount(target.path());
        assert_eq!(owners, vec![(33, 66), (33, 66)]);
        let lower = std::fs::metadata(root.path().join("snapshots/1/fs/one")).unwrap();
        assert_eq!(lower.uid(), 0, "the layers themselves are not chowned");
        assert!(upper.join("new").exists());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let scratch = mounts[0].options.iter().any(|o| o.contains("berth-idmap-"));
        assert!(
            !scratch,
            "the snapshot's own mounts never name the scratch clones"
        );
        let attached: Vec<&str> = mountinfo
            .lines()
            .filter(|l| {
                l.contains(&format!("{}/", root.path().display())) && l.contains("berth-idmap-")
            })
            .collect();
        assert!(
            attached.is_empty(),
            "idmapped clones stay attached: {attached:?}"
        );
    }

    #[test]
    fn bad_mappings_are_refused_before_anything_is_made() {
        let root = tempfile::tempdir().unwrap();
        let s = crate::fs::FsSnapshotter::open(root.path(), super::Overlay).unwrap();
        let labels = Labels::from([(UID_MAPPING_LABEL.to_string(), "0:33".to_string())]);
        let e = s.prepare("bad", None, labels).unwrap_err();
        assert!(matches!(e, crate::Error::InvalidArgument(_)), "{e}");
        assert!(s.stat("bad").is_err());
    }
}
