//! One tar entry, read: its path cleaned below the root, whiteouts and opaque markers handed
//! to `whiteouts`, its header read into `Meta`, its parent directory opened inside the root
//! (`Place`), and then made by its kind.

use super::{entry_err, Applier, Meta, Place};
use crate::layer::root::{clean, cstr};
use crate::{Error, Result};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

impl Applier {
    pub(super) fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry
            .path()
            .map_err(|e| {
                Error::InvalidArgument(format!("layer entry with an unreadable path: {e}"))
            })?
            .into_owned();
        let Some(path) = clean(&raw) else {
            // The root itself: only its metadata could change; keep the snapshot's.
            return Ok(());
        };
        let name = path
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_default();
        if let Some(done) = self.whiteout_entry(&path, &name, &raw) {
            return done;
        }
        let kind = entry.header().entry_type();
        let meta = meta(entry, &raw)?;
        let keeps_dirs = keeps_dirs(kind);
        let (parent_path, dir, name, setgid) = self.parent(&path, name, keeps_dirs, &raw)?;
        let cname = cstr(&name)?;
        let place = Place {
            raw: &raw,
            path: &path,
            dir: &dir,
            name: &name,
            cname: &cname,
            born_owned: !setgid && self.creates.owns(&meta),
            setgid,
        };
        if meta.xattrs.iter().any(|(k, _)| k == DEFAULT_ACL) {
            // Names made below it take their modes from the ACL, not from the umask.
            self.creates.exact_modes = false;
        }
        let result = self.make(entry, kind, &place, &meta);
        if keeps_dirs {
            self.parent_cache = Some((parent_path, dir, setgid));
        }
        result?;
        self.created.insert(path);
        Ok(())
    }

    /// The directory `path` is made in (the cached one when it is the same), its path, the
    /// entry's name in it, and whether the directory is set-gid (names made in it take its
    /// group). The cache goes when this entry may change what it resolves to.
    fn parent(
        &mut self,
        path: &Path,
        name: OsString,
        keeps_dirs: bool,
        raw: &Path,
    ) -> Result<(PathBuf, OwnedFd, OsString, bool)> {
        if !keeps_dirs
            || self
                .parent_cache
                .as_ref()
                .is_some_and(|(p, _, _)| p.starts_with(path))
        {
            self.parent_cache = None;
        }
        let parent_path = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let (dir, name, setgid) = match self.parent_cache.take() {
            Some((p, fd, setgid)) if p == parent_path => (fd, name, setgid),
            _ => {
                let (fd, name) = self.root.parent_of(path).map_err(|e| entry_err(raw, e))?;
                // Unknown (a failed stat) counts as set-gid: owners are then always set.
                let setgid = fstat(&fd).is_none_or(|st| st.st_mode & libc::S_ISGID != 0);
                (fd, name, setgid)
            }
        };
        Ok((parent_path, dir, name, setgid))
    }
}

/// The xattr holding a directory's default ACL.
const DEFAULT_ACL: &str = "system.posix_acl_default";

fn fstat(fd: &OwnedFd) -> Option<libc::stat> {
    use std::os::fd::AsRawFd;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the stat buffer for a descriptor we hold (O_PATH is allowed).
    (unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } == 0)
        // SAFETY: fstat succeeded, so it initialised the buffer.
        .then(|| unsafe { st.assume_init() })
}

/// Anything but a plain file may change what a cached directory path resolves to.
fn keeps_dirs(kind: tar::EntryType) -> bool {
    use tar::EntryType as T;
    matches!(
        kind,
        T::Regular | T::Continuous | T::GNUSparse | T::Link | T::Char | T::Block | T::Fifo
    )
}

/// Mode, owner, mtime and xattrs from the entry's header and PAX records.
fn meta<R: Read>(entry: &mut tar::Entry<'_, R>, raw: &Path) -> Result<Meta> {
    let header = entry.header().clone();
    let mode = header.mode().map_err(|e| entry_err(raw, e))? & 0o7777;
    let old = header.as_old();
    let uid = numeric_or_blank(header.uid(), &old.uid).map_err(|e| entry_err(raw, e))?;
    let gid = numeric_or_blank(header.gid(), &old.gid).map_err(|e| entry_err(raw, e))?;
    let (uid, gid) = match (u32::try_from(uid), u32::try_from(gid)) {
        (Ok(u), Ok(g)) if u != u32::MAX && g != u32::MAX => (u, g),
        _ => return Err(entry_err(raw, format!("owner {uid}:{gid} out of range"))),
    };
    let mtime = timespec(header.mtime().unwrap_or(0));
    let xattrs = xattrs(entry)?;
    Ok(Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs,
    })
}

fn timespec(secs: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: secs.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    }
}

/// Some writers leave owner fields blank (all NUL or spaces): that means 0, as in GNU tar.
fn numeric_or_blank(parsed: std::io::Result<u64>, raw: &[u8]) -> std::io::Result<u64> {
    match parsed {
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        other => other,
    }
}

/// PAX `SCHILY.xattr.*` records of an entry.
fn xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<(OsString, Vec<u8>)>> {
    let mut out = vec![];
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Some(k) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                out.push((
                    OsStr::from_bytes(k).to_os_string(),
                    ext.value_bytes().to_vec(),
                ));
            }
        }
    }
    Ok(out)
}
