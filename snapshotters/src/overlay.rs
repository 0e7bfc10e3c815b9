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
        let supported = std::fs::read_to_string("/proc/filesystems")
            .map(|s| s.lines().any(|l| l.trim_end().ends_with("overlay")))
            .unwrap_or(false);
        if !supported {
            return Err(Error::FailedPrecondition(format!(
                "overlayfs is not available in this kernel (needed under {}); load the overlay module or use the native snapshotter",
                root.display()
            )));
        }
        Ok(())
    }
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
