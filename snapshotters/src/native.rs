//! native: every snapshot is a full copy of its parent (reflinked where the filesystem
//! can), mounted with a plain bind mount. Works on any filesystem.

use crate::fs::Driver;
use crate::{Error, Kind, Mount, Result};
use std::path::{Path, PathBuf};

pub const NAME: &str = "native";

pub struct Native;

impl Driver for Native {
    fn populate(&self, dir: &Path, _kind: Kind, parent: Option<&Path>) -> Result<()> {
        let fs = dir.join("fs");
        std::fs::create_dir(&fs).map_err(|source| Error::Io {
            context: "create fs".into(),
            source,
        })?;
        if let Some(parent) = parent {
            // GNU cp keeps ownership, modes, times, xattrs, devices and hard links, and
            // shares extents where the filesystem supports reflinks.
            let mut src = parent.as_os_str().to_owned();
            src.push("/.");
            let out = std::process::Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(&src)
                .arg(&fs)
                .output()
                .map_err(|source| Error::Io {
                    context: "run cp".into(),
                    source,
                })?;
            if !out.status.success() {
                return Err(Error::Io {
                    context: format!("copy parent {}", parent.display()),
                    source: std::io::Error::other(
                        String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    ),
                });
            }
        }
        Ok(())
    }

    fn mounts(&self, dir: &Path, kind: Kind, _lowers: &[PathBuf]) -> Vec<Mount> {
        let rw = if kind == Kind::View { "ro" } else { "rw" };
        vec![Mount {
            kind: "bind".into(),
            source: dir.join("fs").display().to_string(),
            options: vec![rw.into(), "rbind".into()],
        }]
    }
}
