//! Packing a directory into an EROFS image with erofs-utils' `mkfs.erofs`, durably.

use crate::{Error, Result};
use std::path::Path;
use std::process::Command;

/// The program that packs images (Debian's erofs-utils).
pub const MKFS: &str = "mkfs.erofs";

/// Whether `mkfs.erofs` can be run (it answers `--help` with its usage, whatever its exit).
pub fn mkfs_available() -> bool {
    Command::new(MKFS)
        .arg("--help")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Packs `dir` into the image `image`: every entry with its owner, mode, times, xattrs
/// (overlayfs' whiteouts and opaque markers among them) and hard links. The image is
/// written beside its final name, synced, then renamed, so `image` is whole or absent.
pub fn pack(dir: &Path, image: &Path) -> Result<()> {
    let parent = image.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".packing-")
        .tempfile_in(parent)
        .map_err(|e| Error::io(format!("create an image in {}", parent.display()), e))?;
    let out = Command::new(MKFS)
        .args(["--quiet", "--preserve-mtime"])
        .arg(tmp.path())
        .arg(dir)
        .output()
        .map_err(|e| Error::io(format!("run {MKFS}"), e))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        return Err(Error::io(
            format!("{MKFS} {}", dir.display()),
            std::io::Error::other(said.trim().to_string()),
        ));
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(format!("sync {}", tmp.path().display()), e))?;
    tmp.persist(image)
        .map_err(|e| Error::io(format!("place {}", image.display()), e.error))?;
    Ok(())
}

/// Empties `dir`, keeping the directory itself (a mount point).
pub fn empty(dir: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
    for e in entries {
        let e = e.map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
        let path = e.path();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let removed = match is_dir {
            true => std::fs::remove_dir_all(&path),
            false => std::fs::remove_file(&path),
        };
        removed.map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
    }
    Ok(())
}

/// Moves the directory `fs` out of its snapshot, beside the snapshot directories under a
/// `new-` name (what cleanup removes), and puts an empty one in its place; returns where
/// it went.
pub fn set_aside(fs: &Path) -> Result<std::path::PathBuf> {
    let snapshot = fs.parent().unwrap_or(Path::new("."));
    let snapshots = snapshot.parent().unwrap_or(Path::new("."));
    let id = snapshot
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let place = tempfile::Builder::new()
        .prefix(&format!("new-packed-{id}-"))
        .tempdir_in(snapshots)
        .map_err(|e| Error::io(format!("make room in {}", snapshots.display()), e))?
        .keep();
    let aside = place.join("fs");
    std::fs::rename(fs, &aside).map_err(|e| Error::io(format!("set {} aside", fs.display()), e))?;
    std::fs::create_dir(fs).map_err(|e| Error::io(format!("create {}", fs.display()), e))?;
    Ok(place)
}
