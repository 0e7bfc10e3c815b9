//! EROFS, as containerd 2.1's `erofs` snapshotter lays it out: an active snapshot is an
//! overlayfs upper directory (`fs`, with `work`), exactly as overlayfs' own; committing packs
//! `fs` into a read-only EROFS image (`layer.erofs`) and empties it. A committed layer's
//! image is mounted on its `fs` when a snapshot above it is handed out, so consumers get
//! plain overlay and bind mounts of directories, as from the overlayfs snapshotter. Layers
//! are applied by berth's own confined applier into the directory first, then packed.

mod attach;
mod image;

use crate::fs::{usage_of, Driver};
use crate::overlay::Overlay;
use crate::{Error, Kind, Mount, Result, Usage};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const NAME: &str = "erofs";

/// A committed snapshot's image, beside its (then empty) `fs`.
const IMAGE: &str = "layer.erofs";

#[derive(Default)]
pub struct Erofs {
    /// The `fs` directories this instance found or put an image on, taken off when it goes.
    mounted: Mutex<HashSet<PathBuf>>,
    /// Deletions of packed files still running, waited for when it goes.
    tidying: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Erofs {
    /// Checks that the kernel has EROFS and overlayfs and that `mkfs.erofs` can be run; the
    /// error says what is missing.
    pub fn check_support(root: &Path) -> Result<()> {
        Overlay::check_support(root)?;
        if !crate::overlay::kernel_has("erofs") {
            return Err(Error::FailedPrecondition(format!(
                "EROFS is not available in this kernel (needed under {}); `modprobe erofs` or use the overlayfs snapshotter",
                root.display()
            )));
        }
        if !image::mkfs_available() {
            return Err(Error::FailedPrecondition(format!(
                "the erofs snapshotter needs {} (Debian's erofs-utils) on PATH",
                image::MKFS
            )));
        }
        Ok(())
    }

    fn mounted(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.mounted.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tidying(&self) -> std::sync::MutexGuard<'_, Vec<std::thread::JoinHandle<()>>> {
        self.tidying.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Driver for Erofs {
    fn populate(&self, dir: &Path, kind: Kind, parent: Option<&Path>) -> Result<()> {
        Overlay.populate(dir, kind, parent)
    }

    fn mounts(&self, dir: &Path, kind: Kind, lowers: &[PathBuf]) -> Vec<Mount> {
        Overlay.mounts(dir, kind, lowers)
    }

    fn independent_layers(&self) -> bool {
        true
    }

    fn seal(&self, dir: &Path) -> Result<()> {
        image::pack(&dir.join("fs"), &dir.join(IMAGE))
    }

    /// The files just packed go: the image stands for them from now on. They are deleted
    /// in the background, as deleting a layer's thousands of files would hold up an unpack
    /// as long as packing them; a crash leaves them to the next start's cleanup (`new-`).
    fn committed(&self, dir: &Path) -> Result<()> {
        let _ = std::fs::remove_dir_all(dir.join("work"));
        let packed = image::set_aside(&dir.join("fs"))?;
        let mut tidying = self.tidying();
        tidying.retain(|h| !h.is_finished());
        tidying.push(std::thread::spawn(move || {
            let _ = std::fs::remove_dir_all(packed);
        }));
        Ok(())
    }

    fn ready_lower(&self, dir: &Path) -> Result<()> {
        let fs = dir.join("fs");
        // A crash while the packed files were set aside leaves no `fs`.
        if let Err(e) = std::fs::create_dir(&fs) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(Error::io(format!("create {}", fs.display()), e));
            }
        }
        let mut mounted = self.mounted();
        if attach::is_mountpoint(&fs)? {
            mounted.insert(fs);
            return Ok(());
        }
        let image = dir.join(IMAGE);
        if !image.exists() {
            return Err(Error::FailedPrecondition(format!(
                "committed snapshot {} has no EROFS image",
                dir.display()
            )));
        }
        // A crash between packing and emptying leaves the files the image replaced.
        image::empty(&fs)?;
        attach::mount(&image, &fs)?;
        mounted.insert(fs);
        Ok(())
    }

    fn release(&self, dir: &Path) -> Result<()> {
        let fs = dir.join("fs");
        self.mounted().remove(&fs);
        match attach::unmount(&fs) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(())
            }
            other => other,
        }
    }

    fn usage(&self, dir: &Path, kind: Kind) -> Result<Usage> {
        if kind != Kind::Committed {
            return usage_of(&dir.join("fs"));
        }
        use std::os::unix::fs::MetadataExt;
        let image = dir.join(IMAGE);
        let m = std::fs::metadata(&image)
            .map_err(|e| Error::io(format!("stat {}", image.display()), e))?;
        Ok(Usage {
            size: (m.blocks() * 512) as i64,
            inodes: 1,
        })
    }
}

/// Layers stay mounted while the process lives; going, it takes them off. Containers
/// running on them keep them (an overlay holds its lower directories) until they stop.
impl Drop for Erofs {
    fn drop(&mut self) {
        for fs in self.mounted().drain() {
            let _ = attach::unmount(&fs);
        }
        for h in self.tidying().drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests;
