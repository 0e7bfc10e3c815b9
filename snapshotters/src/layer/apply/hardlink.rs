//! Hard links. The target is a path in the layer like any other: cleaned, resolved inside the
//! root, and it must exist and not be a directory. `linkat` without AT_SYMLINK_FOLLOW links
//! the target entry itself, so a symlink target never hands out a host file.

use super::{entry_err, link_target, Applier, Place};
use crate::layer::root::{clean, cstr, lstat_at};
use crate::Result;
use std::io::Read;
use std::os::fd::AsRawFd;

impl Applier {
    pub(super) fn hardlink<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        place: &Place<'_>,
    ) -> Result<()> {
        let Place {
            raw, dir, cname, ..
        } = *place;
        let target = link_target(entry, raw, "hard link without a target")?;
        let target = clean(&target).ok_or_else(|| entry_err(raw, "hard link to the root"))?;
        let (tdir, tname) = self
            .root
            .parent_of(&target)
            .map_err(|e| entry_err(raw, e))?;
        match lstat_at(&tdir, &tname)? {
            Some(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => {}
            Some(_) => return Err(entry_err(raw, "hard link to a directory")),
            None => {
                return Err(entry_err(
                    raw,
                    format!("hard link target {} does not exist", target.display()),
                ))
            }
        }
        let ctname = cstr(&tname)?;
        // SAFETY: both names are single components in directory fds we hold; flag 0
        // links the entry itself, never what a symlink points to.
        place.create("link", || unsafe {
            libc::linkat(
                tdir.as_raw_fd(),
                ctname.as_ptr(),
                dir.as_raw_fd(),
                cname.as_ptr(),
                0,
            )
        })?;
        Ok(())
    }
}
