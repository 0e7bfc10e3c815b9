//! Applying an OCI layer (tar, tar+gzip, tar+zstd) onto a directory. Every entry is made
//! through [`Root`], so nothing outside the directory is ever written, chmod'ed, chown'ed,
//! linked or deleted. Whiteouts become overlay whiteouts (for an overlay upper directory) or
//! deletions (for a full tree).
//!
//! The steps, one file each: `stream` decompresses, hashes and feeds the tar parser; `entry`
//! reads a header into where the entry goes (`Place`) and what it carries (`Meta`);
//! `kinds` makes directories, files, symlinks and devices, `hardlink` links, `whiteouts`
//! deletes or records deletions; `metadata` sets owners, modes, xattrs and times.

mod entry;
mod hardlink;
mod kinds;
mod metadata;
mod stream;
mod whiteouts;

pub use stream::{decompress, decompress_buffered, is_compressed};

use super::limits::{Bounded, PullBudget};
use super::root::{self, remove_at, Root};
use crate::whiteout::Whiteouts;
use crate::{Error, Result};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `sha256:` digest of the uncompressed tar stream (the layer's diffID).
    pub diff_id: String,
    /// Bytes of the uncompressed tar stream.
    pub size: u64,
    pub entries: u64,
}

/// Applies the layer read from `r` to the directory `target`. Decompressing runs on this
/// thread, hashing the decompressed stream (the diffID) on a second, and parsing the tar and
/// writing the files on a third: the largest layer of a pull, the one still running when
/// the others are done, keeps both cores busy instead of one (perf: its inflate and hash on
/// one thread were the last second of a pull).
/// The uncompressed stream is bounded by the limits in force ([`super::limits`]).
pub fn apply(r: impl Read, target: &Path, whiteouts: Whiteouts) -> Result<Applied> {
    apply_bounded(decompress(r)?, target, whiteouts, None)
}

/// [`apply`] for one of a pull's layers: its uncompressed bytes count against `budget`, which
/// the pull's other layers share, as well. `r` buffers already: its buffer is decompressed
/// in place.
pub fn apply_in_pull(
    r: impl BufRead,
    target: &Path,
    whiteouts: Whiteouts,
    budget: &PullBudget,
) -> Result<Applied> {
    apply_bounded(decompress_buffered(r)?, target, whiteouts, Some(budget))
}

/// Applies the uncompressed tar stream `tar`.
fn apply_bounded(
    tar: impl Read,
    target: &Path,
    whiteouts: Whiteouts,
    budget: Option<&PullBudget>,
) -> Result<Applied> {
    let stream = Bounded::new(tar, target, budget);
    let mut applier = Applier::new(Root::open(target)?, whiteouts);
    applier.creates.exact_modes = modes_are_as_asked(target);
    let (read, parsed, (hasher, count)) = stream::run(stream, applier);
    // A broken stream (bad compression, a failed read) is reported as such: the parser
    // only saw it end early.
    read?;
    let entries = parsed?;
    Ok(Applied {
        diff_id: hasher.digest(),
        size: count,
        entries,
    })
}

/// The target a symlink or hard link entry names; `missing` is the error when it names none.
fn link_target<R: Read>(entry: &tar::Entry<'_, R>, raw: &Path, missing: &str) -> Result<PathBuf> {
    Ok(entry
        .link_name()
        .map_err(|e| entry_err(raw, e))?
        .ok_or_else(|| entry_err(raw, missing))?
        .into_owned())
}

fn entry_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!(
        "layer entry {:?} refused: {what}",
        path.display().to_string()
    ))
}

/// The state of one layer being applied; its steps are `impl` blocks in the child modules.
struct Applier {
    root: Root,
    whiteouts: Whiteouts,
    /// Paths this layer created, so an opaque marker deletes only what lower layers had.
    created: HashSet<PathBuf>,
    /// Directory times are set last: later entries would change them.
    dir_times: Vec<(PathBuf, libc::timespec)>,
    /// The directory of the previous entry: consecutive files in one directory (the common
    /// case) reuse it instead of resolving it again.
    /// Whether it is set-gid, too (see [`Creates`]).
    parent_cache: Option<(PathBuf, OwnedFd, bool)>,
    creates: Creates,
    buf: Vec<u8>,
    /// Regular files' contents, written from the stream's chunks (see [`stream::Direct`]).
    direct: std::sync::Arc<stream::Direct>,
}

impl Applier {
    fn new(root: Root, whiteouts: Whiteouts) -> Self {
        Applier {
            root,
            whiteouts,
            created: HashSet::new(),
            dir_times: vec![],
            parent_cache: None,
            creates: Creates::new(),
            buf: vec![0u8; 256 << 10],
            direct: Default::default(),
        }
    }
}

/// What a name the applying thread makes is born with, so that owner and mode calls that
/// would change nothing are left out (fchown and fchmod on every file were ~2% of a pull's
/// CPU, perf): a new name is owned by the thread's effective user and group (the parent's
/// group when the parent is set-gid, which [`Place::born_owned`] rules out), and its mode is
/// the one asked for, as the thread's umask is 0 ([`own_umask`]) and no default ACL decides
/// it instead.
struct Creates {
    uid: u32,
    gid: u32,
    /// The thread has a umask of its own, 0, and no default ACL is in the way (see
    /// [`modes_are_as_asked`]); false once the layer sets a default ACL on a directory.
    exact_modes: bool,
}

impl Creates {
    fn new() -> Self {
        Creates {
            // SAFETY: plain getters without arguments.
            uid: unsafe { libc::geteuid() },
            // SAFETY: as above.
            gid: unsafe { libc::getegid() },
            exact_modes: false,
        }
    }

    /// Whether a name made now has the entry's owner already (its parent aside).
    fn owns(&self, meta: &Meta) -> bool {
        meta.uid == self.uid && meta.gid == self.gid
    }

    /// The mode to make a name with, when making it so leaves it with exactly `mode` (no
    /// set-id or sticky bit: those are set after the owner).
    fn exact_mode(&self, mode: u32) -> Option<u32> {
        (self.exact_modes && mode & 0o7000 == 0).then_some(mode)
    }
}

/// Gives the calling thread a umask of its own, 0, so the names it makes get the modes it
/// asks for, whatever the process's umask is or becomes meanwhile (berthd narrows it for a
/// moment around socket binds). `unshare(CLONE_FS)` detaches only this thread's umask, root
/// and working directory (copied, so paths resolve as before). False when it failed.
fn own_umask() -> bool {
    // SAFETY: unshare of this thread's filesystem attributes; umask only sets its mask.
    unsafe {
        if libc::unshare(libc::CLONE_FS) != 0 {
            return false;
        }
        libc::umask(0);
    }
    true
}

/// Whether names made under `target` get the modes asked for (with a umask of 0): it is
/// empty (a pull's staging directory; a tree with contents could hold a directory with a
/// default ACL from a lower layer) and has no default ACL of its own.
fn modes_are_as_asked(target: &Path) -> bool {
    let empty = std::fs::read_dir(target).is_ok_and(|mut d| d.next().is_none());
    empty && xattr_absent(target, "system.posix_acl_default\0")
}

/// Whether `path` has no xattr `name` (NUL-terminated); false when that cannot be told.
fn xattr_absent(path: &Path, name: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(cpath) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: NUL-terminated path and name; a NULL buffer of size 0 only asks for the size.
    let rc = unsafe {
        libc::getxattr(
            cpath.as_ptr(),
            name.as_ptr().cast(),
            std::ptr::null_mut(),
            0,
        )
    };
    // ENOTSUP: a filesystem without xattrs has no ACLs either.
    rc < 0
        && matches!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENODATA | libc::ENOTSUP)
        )
}

/// Where an entry goes: its path in the layer and the directory it is created in.
#[derive(Clone, Copy)]
struct Place<'a> {
    /// The path as the tar names it (for errors).
    raw: &'a Path,
    path: &'a Path,
    /// The parent directory, opened inside the root.
    dir: &'a OwnedFd,
    name: &'a OsStr,
    cname: &'a std::ffi::CStr,
    /// A name made here gets the entry's owner without a chown (see [`Creates`]).
    born_owned: bool,
    /// The directory is set-gid: a directory made in it is set-gid as well.
    setgid: bool,
}

impl Place<'_> {
    /// Removes whatever stands at the entry's name (a directory with all it holds), without
    /// following a symlink, so the entry can be made there.
    fn clear(&self) -> Result<()> {
        remove_at(self.dir, self.name)
    }

    /// Runs `make`, a `*at` call that creates the entry's name and fails with EEXIST when
    /// the name is taken (O_EXCL, mkdirat, symlinkat, mknodat, linkat: none follows a
    /// symlink there); when it is taken, clears it and runs `make` once more. Almost every
    /// name of a layer is new, so the name is looked at only when it is in the way (a stat
    /// of every name first was 2.7% of a pull's CPU, perf). `what` names the call for errors.
    fn create(&self, what: &str, mut make: impl FnMut() -> libc::c_int) -> Result<libc::c_int> {
        let mut rc = make();
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) {
            self.clear()?;
            rc = make();
        }
        if rc < 0 {
            return Err(entry_err(self.raw, root::last_os_error(what)));
        }
        Ok(rc)
    }
}

/// What an entry carries besides its contents.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: libc::timespec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}
