//! Whiteout (`.wh.<name>`) and opaque-marker entries. For an overlay upper directory they are
//! recorded as overlayfs records them (a 0/0 character device, the opaque xattr); for a whole
//! tree they delete, an opaque marker only what lower layers put there. Every directory is
//! opened inside the root and every removal is a `*at` call that never follows a symlink.

use super::{entry_err, Applier};
use crate::layer::root::{cstr, last_os_error, remove_at};
use crate::whiteout::{Whiteouts, OPAQUE_MARKER, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX};
use crate::{Error, Result};
use std::ffi::{OsStr, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

impl Applier {
    /// Applies the entry at `path` (last component `name`) when it is a whiteout or an opaque
    /// marker; None when it is neither.
    pub(super) fn whiteout_entry(
        &mut self,
        path: &Path,
        name: &OsStr,
        raw: &Path,
    ) -> Option<Result<()>> {
        let name_bytes = name.as_bytes();
        let dir = path.parent().unwrap_or(Path::new(""));
        if name_bytes == OPAQUE_MARKER.as_bytes() {
            return Some(self.opaque(dir, raw));
        }
        let hidden = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes())?;
        if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
            return Some(Err(entry_err(raw, "whiteout names no entry")));
        }
        Some(self.whiteout(dir, OsStr::from_bytes(hidden), raw))
    }

    fn whiteout(&mut self, dir: &Path, hidden: &OsStr, raw: &Path) -> Result<()> {
        let dfd = self.root.dir(dir, true).map_err(|e| entry_err(raw, e))?;
        remove_at(&dfd, hidden)?;
        if self.whiteouts == Whiteouts::Overlay {
            let c = cstr(hidden)?;
            // SAFETY: mknodat of a single name in a directory fd we hold.
            if unsafe {
                libc::mknodat(
                    dfd.as_raw_fd(),
                    c.as_ptr(),
                    libc::S_IFCHR,
                    libc::makedev(0, 0),
                )
            } != 0
            {
                return Err(entry_err(raw, last_os_error("create overlay whiteout")));
            }
        }
        Ok(())
    }

    fn opaque(&mut self, dir: &Path, raw: &Path) -> Result<()> {
        let fd = self
            .root
            .open_in(dir, libc::O_RDONLY | libc::O_DIRECTORY)
            .or_else(|_| {
                self.root.dir(dir, true)?;
                self.root
                    .open_in(dir, libc::O_RDONLY | libc::O_DIRECTORY)
                    .map_err(|e| Error::io("open", e))
            })
            .map_err(|e| entry_err(raw, e))?;
        match self.whiteouts {
            Whiteouts::Overlay => {
                // SAFETY: NUL-terminated name and a one-byte value.
                if unsafe {
                    libc::fsetxattr(
                        fd.as_raw_fd(),
                        OVERLAY_OPAQUE_XATTR.as_ptr(),
                        b"y".as_ptr().cast(),
                        1,
                        0,
                    )
                } != 0
                {
                    return Err(entry_err(raw, last_os_error("mark directory opaque")));
                }
            }
            Whiteouts::Delete => {
                // Everything a lower layer put here goes; what this layer made stays.
                let listing = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                let names: Vec<OsString> = std::fs::read_dir(&listing)
                    .map_err(|e| entry_err(raw, e))?
                    .filter_map(|e| e.ok().map(|e| e.file_name()))
                    .collect();
                for n in names {
                    if !self.created.contains(&dir.join(&n)) {
                        remove_at(&fd, &n)?;
                    }
                }
            }
        }
        Ok(())
    }
}
