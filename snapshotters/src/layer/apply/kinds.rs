//! Making an entry by its kind: directories, regular files, symlinks, devices and fifos
//! (hard links in `hardlink`). Each is made with a `*at` call on its parent's descriptor,
//! opened inside the root, by a name of one component and never through a symlink: whatever
//! stands at the name already is removed first (a directory is kept for a directory).

use super::metadata::Born;
use super::{entry_err, link_target, Applier, Meta, Place};
use crate::layer::root::{cstr, last_os_error, lstat_at};
use crate::Result;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

impl Applier {
    pub(super) fn make<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: tar::EntryType,
        place: &Place<'_>,
        meta: &Meta,
    ) -> Result<()> {
        use tar::EntryType as T;
        match kind {
            T::Directory => self.directory(place, meta),
            T::Regular | T::Continuous | T::GNUSparse => self.regular(entry, place, meta),
            T::Symlink => {
                let target = link_target(entry, place.raw, "symlink without a target")?;
                self.symlink(&target, place, meta)
            }
            T::Link => self.hardlink(entry, place),
            T::Char | T::Block | T::Fifo => self.device(entry.header(), kind, place, meta),
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => Ok(()),
            other => Err(entry_err(
                place.raw,
                format!("unsupported entry type {other:?}"),
            )),
        }
    }

    /// A directory already there is kept (a later layer changes its metadata only); its
    /// times are set once the layer is done.
    fn directory(&mut self, place: &Place<'_>, meta: &Meta) -> Result<()> {
        let Place {
            raw,
            path,
            dir,
            name,
            cname,
            ..
        } = *place;
        let exact = self.creates.exact_mode(meta.mode);
        let mode = exact.unwrap_or(0o700);
        // A directory already there is kept; anything else there is replaced.
        let mut made = true;
        if let Err(e) = mkdir(dir, cname, mode, raw) {
            match lstat_at(dir, name)? {
                Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => made = false,
                Some(_) => {
                    place.clear()?;
                    mkdir(dir, cname, mode, raw)?;
                }
                None => return Err(e),
            }
        }
        let fd = open_at(
            dir,
            cname,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
            raw,
        )?;
        let born = Born {
            owner: made && place.born_owned,
            mode: made && exact.is_some() && !place.setgid,
        };
        self.finish_fd(&fd, meta, None, born, raw)?;
        self.dir_times.push((path.to_path_buf(), meta.mtime));
        Ok(())
    }

    /// A new file (O_EXCL: never an existing one, never through a symlink) with the entry's
    /// contents.
    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        place: &Place<'_>,
        meta: &Meta,
    ) -> Result<()> {
        let Place {
            raw, dir, cname, ..
        } = *place;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // Made with its final mode when that comes out exact, else private until chmod'ed.
        let exact = self.creates.exact_mode(meta.mode);
        let mode = exact.unwrap_or(0o600);
        // SAFETY: openat of a single name in a directory fd we hold; O_EXCL|O_NOFOLLOW never
        // opens what is there, and never through a symlink.
        let fd = place.create("open", || unsafe {
            libc::openat(dir.as_raw_fd(), cname.as_ptr(), flags, mode)
        })?;
        // SAFETY: a fresh descriptor from the kernel, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        self.copy_contents(entry, &fd, raw)?;
        // O_EXCL: the file is new, so it has the owner and mode it was made with.
        let born = Born {
            owner: place.born_owned,
            mode: exact.is_some(),
        };
        self.finish_fd(&fd, meta, Some(meta.mtime), born, raw)
    }

    fn copy_contents<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        fd: &OwnedFd,
        raw: &Path,
    ) -> Result<()> {
        // SAFETY: fd is owned by `fd`; the File borrows it only for the copy.
        let mut file =
            std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) });
        let direct = self.direct.clone();
        let _to = direct.to(fd.as_raw_fd());
        loop {
            let before = direct.sunk();
            let n = entry
                .read(&mut self.buf)
                .map_err(|e| match direct.take_error() {
                    Some(w) => entry_err(raw, format!("write: {w}")),
                    None => entry_err(raw, format!("read: {e}")),
                })?;
            if n == 0 {
                return Ok(());
            }
            // Bytes the parser made up (holes, padding) were not written on the way.
            if direct.sunk() == before {
                std::io::Write::write_all(&mut *file, &self.buf[..n])
                    .map_err(|e| entry_err(raw, format!("write: {e}")))?;
            }
        }
    }

    /// The link itself, whatever it points to: nothing here ever follows it.
    fn symlink(&self, target: &Path, place: &Place<'_>, meta: &Meta) -> Result<()> {
        let Place { dir, cname, .. } = *place;
        let ctarget = cstr(target.as_os_str())?;
        // SAFETY: NUL-terminated target and name; dir fd owned for the call.
        place.create("symlink", || unsafe {
            libc::symlinkat(ctarget.as_ptr(), dir.as_raw_fd(), cname.as_ptr())
        })?;
        self.finish_at(place, meta)
    }

    /// A character or block device or a fifo.
    fn device(
        &self,
        header: &tar::Header,
        kind: tar::EntryType,
        place: &Place<'_>,
        meta: &Meta,
    ) -> Result<()> {
        let Place {
            raw, dir, cname, ..
        } = *place;
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        let fmt = match kind {
            tar::EntryType::Char => libc::S_IFCHR,
            tar::EntryType::Block => libc::S_IFBLK,
            _ => libc::S_IFIFO,
        };
        // SAFETY: mknodat of a single name in a directory fd we hold.
        place.create("mknod", || unsafe {
            libc::mknodat(
                dir.as_raw_fd(),
                cname.as_ptr(),
                fmt | 0o600,
                libc::makedev(major, minor),
            )
        })?;
        self.finish_at(place, meta)?;
        // SAFETY: fchmodat on a name in a directory fd we hold (not a symlink).
        if unsafe { libc::fchmodat(dir.as_raw_fd(), cname.as_ptr(), meta.mode, 0) } != 0 {
            return Err(entry_err(raw, last_os_error("chmod")));
        }
        Ok(())
    }
}

fn mkdir(dir: &OwnedFd, name: &std::ffi::CStr, mode: u32, raw: &Path) -> Result<()> {
    // SAFETY: mkdirat of a single name in a directory fd we hold.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) } != 0 {
        return Err(entry_err(raw, last_os_error("mkdir")));
    }
    Ok(())
}

fn open_at(
    dir: &OwnedFd,
    name: &std::ffi::CStr,
    flags: i32,
    mode: u32,
    raw: &Path,
) -> Result<OwnedFd> {
    // SAFETY: openat of a single name in a directory fd we hold; O_NOFOLLOW is in `flags`.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode,
        )
    };
    if fd < 0 {
        return Err(entry_err(raw, last_os_error("open")));
    }
    // SAFETY: a fresh descriptor from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
