//! Owners, modes, xattrs and times: set through a descriptor of the entry itself, or with
//! `*at` calls that never follow a symlink on names that cannot be opened. Directory times
//! wait for the end of the layer.

use super::{entry_err, Applier, Meta, Place};
use crate::layer::root::{cstr, last_os_error};
use crate::Result;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// What a name just made has already (see [`super::Creates`]).
#[derive(Clone, Copy)]
pub(super) struct Born {
    /// The entry's owner.
    pub owner: bool,
    /// The entry's mode.
    pub mode: bool,
}

impl Applier {
    /// Owner, mode, xattrs and (for files) times, set on an open descriptor; the owner and
    /// the mode only where `born` says the name does not have them already.
    pub(super) fn finish_fd(
        &self,
        fd: &OwnedFd,
        meta: &Meta,
        mtime: Option<libc::timespec>,
        born: Born,
        raw: &Path,
    ) -> Result<()> {
        let (uid, gid, mode, xattrs) = (meta.uid, meta.gid, meta.mode, &meta.xattrs);
        // SAFETY: plain syscalls on a descriptor we own.
        unsafe {
            if !born.owner && libc::fchown(fd.as_raw_fd(), uid, gid) != 0 {
                return Err(entry_err(raw, last_os_error("chown")));
            }
            // After chown, which clears set-id bits (a mode born exact has none to lose).
            if !born.mode && libc::fchmod(fd.as_raw_fd(), mode) != 0 {
                return Err(entry_err(raw, last_os_error("chmod")));
            }
        }
        for (k, v) in xattrs {
            let ck = cstr(k)?;
            // SAFETY: NUL-terminated name, value pointer and length from a live Vec.
            let rc = unsafe {
                libc::fsetxattr(fd.as_raw_fd(), ck.as_ptr(), v.as_ptr().cast(), v.len(), 0)
            };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                // Filesystems without xattr support lose only the xattr, as containerd does.
                if e.raw_os_error() != Some(libc::ENOTSUP) {
                    return Err(entry_err(raw, format!("set xattr {k:?}: {e}")));
                }
            }
        }
        if let Some(t) = mtime {
            let times = [t, t];
            // SAFETY: two timespecs for futimens on our descriptor.
            if unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) } != 0 {
                return Err(entry_err(raw, last_os_error("set times")));
            }
        }
        Ok(())
    }

    /// Owner and times of a name that cannot be opened (symlink, device, fifo).
    pub(super) fn finish_at(&self, place: &Place<'_>, meta: &Meta) -> Result<()> {
        let Place {
            raw,
            dir,
            cname: name,
            ..
        } = *place;
        let (uid, gid, mtime) = (meta.uid, meta.gid, meta.mtime);
        let times = [mtime, mtime];
        // SAFETY: *at calls on a directory fd we hold; AT_SYMLINK_NOFOLLOW acts on the link.
        unsafe {
            if libc::fchownat(
                dir.as_raw_fd(),
                name.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            ) != 0
            {
                return Err(entry_err(raw, last_os_error("chown")));
            }
            if libc::utimensat(
                dir.as_raw_fd(),
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            ) != 0
            {
                return Err(entry_err(raw, last_os_error("set times")));
            }
        }
        Ok(())
    }

    /// Sets the directory times held back while the layer was applied.
    pub(super) fn finish(&mut self) -> Result<()> {
        // Deepest first, so setting a child's time does not disturb its parent's.
        self.dir_times
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (p, t) in &self.dir_times {
            if let Ok(fd) = self
                .root
                .open_in(p, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW)
            {
                let times = [*t, *t];
                // SAFETY: futimens on a descriptor we own.
                unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) };
            }
        }
        Ok(())
    }
}
