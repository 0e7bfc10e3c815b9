//! Applying an OCI layer (tar, tar+gzip, tar+zstd) onto a directory. Every entry is made
//! through [`Root`], so nothing outside the directory is ever written, chmod'ed, chown'ed,
//! linked or deleted. Whiteouts become overlay whiteouts (for an overlay upper directory) or
//! deletions (for a full tree).

use super::root::{clean, cstr, last_os_error, lstat_at, remove_at, Root};
use crate::hash::Sha256;
use crate::whiteout::{Whiteouts, OPAQUE_MARKER, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX};
use crate::{Error, Result};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `sha256:` digest of the uncompressed tar stream (the layer's diffID).
    pub diff_id: String,
    /// Bytes of the uncompressed tar stream.
    pub size: u64,
    pub entries: u64,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Whether a stream starting with `head` is gzip or zstd (what [`decompress`] unwraps).
pub fn is_compressed(head: &[u8]) -> bool {
    head.starts_with(&GZIP_MAGIC) || head.starts_with(&ZSTD_MAGIC)
}

/// Wraps `r` in the decompressor its first bytes call for.
pub fn decompress<'a, R: Read + 'a>(r: R) -> Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(1 << 20, r);
    let head = br.fill_buf().map_err(|e| Error::io("read layer", e))?;
    Ok(if head.starts_with(&GZIP_MAGIC) {
        Box::new(super::inflate::GzipDecoder::new(br).map_err(|e| Error::io("gzip", e))?)
    } else if head.starts_with(&ZSTD_MAGIC) {
        Box::new(zstd::stream::read::Decoder::with_buffer(br).map_err(|e| Error::io("zstd", e))?)
    } else {
        Box::new(br)
    })
}

fn entry_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!(
        "layer entry {:?} refused: {what}",
        path.display().to_string()
    ))
}

struct Applier {
    root: Root,
    whiteouts: Whiteouts,
    /// Paths this layer created, so an opaque marker deletes only what lower layers had.
    created: HashSet<PathBuf>,
    /// Directory times are set last: later entries would change them.
    dir_times: Vec<(PathBuf, libc::timespec)>,
    /// The directory of the previous entry: consecutive files in one directory (the common
    /// case) reuse it instead of resolving it again.
    parent_cache: Option<(PathBuf, OwnedFd)>,
    buf: Vec<u8>,
}

fn timespec(secs: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: secs.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    }
}

/// Applies the layer read from `r` to the directory `target`. Decompressing runs on this
/// thread, hashing the decompressed stream (the diffID) on a second, and parsing the tar and
/// writing the files on a third: the largest layer of a pull, the one still running when
/// the others are done, keeps both cores busy instead of one (perf: its inflate and hash on
/// one thread were the last second of a pull).
pub fn apply(r: impl Read, target: &Path, whiteouts: Whiteouts) -> Result<Applied> {
    let mut stream = decompress(r)?;
    let mut applier = Applier {
        root: Root::open(target)?,
        whiteouts,
        created: HashSet::new(),
        dir_times: vec![],
        parent_cache: None,
        buf: vec![0u8; 256 << 10],
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(16);
    let (htx, hrx) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(16);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let (read, parsed, (hasher, count)) = std::thread::scope(|scope| {
        let hashing = scope.spawn(move || {
            let (mut hasher, mut count) = (Sha256::new(), 0u64);
            for chunk in hrx {
                hasher.update(&chunk);
                count += chunk.len() as u64;
            }
            (hasher, count)
        });
        let failed = &failed;
        let parser = scope.spawn(move || -> Result<u64> {
            let r = parse(rx, &mut applier);
            if r.is_err() {
                failed.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            r
        });
        fn parse(
            rx: std::sync::mpsc::Receiver<Arc<Vec<u8>>>,
            applier: &mut Applier,
        ) -> Result<u64> {
            let mut chunks = Chunks {
                rx,
                cur: Arc::default(),
                pos: 0,
                total: 0,
                tail: None,
            };
            let mut entries = 0u64;
            let mut archive = tar::Archive::new(&mut chunks);
            archive.set_ignore_zeros(false);
            let iter = archive.entries().map_err(|e| Error::io("read layer", e))?;
            for entry in iter {
                let mut entry = entry.map_err(|e| {
                    Error::InvalidArgument(format!("layer is not a valid tar stream: {e}"))
                })?;
                applier.entry(&mut entry)?;
                entries += 1;
            }
            applier.finish()?;
            Ok(entries)
        }
        // The diffID covers the whole stream, including the end-of-archive padding, so
        // this side reads to the end even after the parser is done.
        let mut parser_gone = false;
        let read = loop {
            let mut buf = vec![0u8; 256 << 10];
            let n = match stream.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(Error::io("read layer", e)),
            };
            buf.truncate(n);
            let buf = Arc::new(buf);
            if htx.send(buf.clone()).is_err() {
                break Err(Error::InvalidArgument("layer hasher stopped".into()));
            }
            if !parser_gone && tx.send(buf).is_err() {
                parser_gone = true;
            }
            if parser_gone && failed.load(std::sync::atomic::Ordering::SeqCst) {
                break Ok(()); // refused: the rest of the stream does not matter
            }
        };
        drop(tx);
        drop(htx);
        let parsed = parser
            .join()
            .unwrap_or_else(|_| Err(Error::InvalidArgument("layer parser panicked".into())));
        let hashed = hashing.join().unwrap_or_else(|_| (Sha256::new(), 0));
        (read, parsed, hashed)
    });
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
}

/// What an entry carries besides its contents.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: libc::timespec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// Reads the chunks another thread sends.
/// The layer's bytes as the parser reads them. A stream that stops without its last
/// block's padding or the end-of-archive blocks (some image builders write such layers, and
/// containerd reads them) is completed with zeros: the bytes that are there were hashed into
/// the diffID, which the caller checks, so nothing unauthenticated is added.
struct Chunks {
    rx: std::sync::mpsc::Receiver<Arc<Vec<u8>>>,
    cur: Arc<Vec<u8>>,
    pos: usize,
    /// Bytes handed out so far.
    total: u64,
    /// Zero bytes still to hand out once the stream has ended (None: not ended yet).
    tail: Option<u64>,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.cur.len() {
            if let Some(left) = self.tail.as_mut() {
                let n = (buf.len() as u64).min(*left) as usize;
                buf[..n].fill(0);
                *left -= n as u64;
                return Ok(n);
            }
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => {
                    let pad = (512 - self.total % 512) % 512;
                    self.tail = Some(pad + 1024);
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        self.total += n as u64;
        Ok(n)
    }
}

impl Applier {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
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
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_MARKER.as_bytes() {
            return self.opaque(path.parent().unwrap_or(Path::new("")), &raw);
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
                return Err(entry_err(&raw, "whiteout names no entry"));
            }
            let dir = path.parent().unwrap_or(Path::new(""));
            return self.whiteout(dir, OsStr::from_bytes(hidden), &raw);
        }
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().map_err(|e| entry_err(&raw, e))? & 0o7777;
        let old = header.as_old();
        let uid = numeric_or_blank(header.uid(), &old.uid).map_err(|e| entry_err(&raw, e))?;
        let gid = numeric_or_blank(header.gid(), &old.gid).map_err(|e| entry_err(&raw, e))?;
        let (uid, gid) = match (u32::try_from(uid), u32::try_from(gid)) {
            (Ok(u), Ok(g)) if u != u32::MAX && g != u32::MAX => (u, g),
            _ => return Err(entry_err(&raw, format!("owner {uid}:{gid} out of range"))),
        };
        let mtime = timespec(header.mtime().unwrap_or(0));
        let xattrs = xattrs(entry)?;
        use tar::EntryType as T;
        // Anything but a plain file may change what a cached directory path resolves to.
        let keeps_dirs = matches!(
            kind,
            T::Regular | T::Continuous | T::GNUSparse | T::Link | T::Char | T::Block | T::Fifo
        );
        if !keeps_dirs
            || self
                .parent_cache
                .as_ref()
                .is_some_and(|(p, _)| p.starts_with(&path))
        {
            self.parent_cache = None;
        }
        let parent_path = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let (dir, name) = match self.parent_cache.take() {
            Some((p, fd)) if p == parent_path => (fd, name.clone()),
            _ => self.root.parent_of(&path).map_err(|e| entry_err(&raw, e))?,
        };
        let cname = cstr(&name)?;
        let place = Place {
            raw: &raw,
            path: &path,
            dir: &dir,
            name: &name,
            cname: &cname,
        };
        let meta = Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        };
        let result = self.make(entry, kind, &place, &meta);
        if keeps_dirs {
            self.parent_cache = Some((parent_path, dir));
        }
        result?;
        self.created.insert(path);
        Ok(())
    }

    fn make<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: tar::EntryType,
        place: &Place<'_>,
        meta: &Meta,
    ) -> Result<()> {
        let Place {
            raw,
            path,
            dir,
            name,
            cname,
        } = *place;
        let (mode, uid, gid, mtime) = (meta.mode, meta.uid, meta.gid, meta.mtime);
        let header = entry.header().clone();
        let raw = raw.to_path_buf();
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                match lstat_at(dir, name)? {
                    Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
                    Some(_) => {
                        remove_at(dir, name)?;
                        mkdir(dir, cname, &raw)?;
                    }
                    None => mkdir(dir, cname, &raw)?,
                }
                let fd = open_at(
                    dir,
                    cname,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                    &raw,
                )?;
                self.finish_fd(&fd, meta, None, &raw)?;
                self.dir_times.push((path.to_path_buf(), mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                remove_at(dir, name)?;
                let fd = open_at(
                    dir,
                    cname,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                    &raw,
                )?;
                // SAFETY: fd is owned by `fd`; the File borrows it only for the copy.
                let mut file = std::mem::ManuallyDrop::new(unsafe {
                    std::fs::File::from_raw_fd(fd.as_raw_fd())
                });
                loop {
                    let n = entry
                        .read(&mut self.buf)
                        .map_err(|e| entry_err(&raw, format!("read: {e}")))?;
                    if n == 0 {
                        break;
                    }
                    std::io::Write::write_all(&mut *file, &self.buf[..n])
                        .map_err(|e| entry_err(&raw, format!("write: {e}")))?;
                }
                self.finish_fd(&fd, meta, Some(mtime), &raw)?;
            }
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| entry_err(&raw, e))?
                    .ok_or_else(|| entry_err(&raw, "symlink without a target"))?;
                remove_at(dir, name)?;
                let ctarget = cstr(target.as_os_str())?;
                // SAFETY: NUL-terminated target and name; dir fd owned for the call.
                if unsafe { libc::symlinkat(ctarget.as_ptr(), dir.as_raw_fd(), cname.as_ptr()) }
                    != 0
                {
                    return Err(entry_err(&raw, last_os_error("symlink")));
                }
                self.finish_at(dir, cname, uid, gid, mtime, &raw)?;
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| entry_err(&raw, e))?
                    .ok_or_else(|| entry_err(&raw, "hard link without a target"))?;
                let target =
                    clean(&target).ok_or_else(|| entry_err(&raw, "hard link to the root"))?;
                let (tdir, tname) = self
                    .root
                    .parent_of(&target)
                    .map_err(|e| entry_err(&raw, e))?;
                match lstat_at(&tdir, &tname)? {
                    Some(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => {}
                    Some(_) => return Err(entry_err(&raw, "hard link to a directory")),
                    None => {
                        return Err(entry_err(
                            &raw,
                            format!("hard link target {} does not exist", target.display()),
                        ))
                    }
                }
                remove_at(dir, name)?;
                let ctname = cstr(&tname)?;
                // SAFETY: both names are single components in directory fds we hold; flag 0
                // links the entry itself, never what a symlink points to.
                let rc = unsafe {
                    libc::linkat(
                        tdir.as_raw_fd(),
                        ctname.as_ptr(),
                        dir.as_raw_fd(),
                        cname.as_ptr(),
                        0,
                    )
                };
                if rc != 0 {
                    return Err(entry_err(&raw, last_os_error("link")));
                }
            }
            T::Char | T::Block | T::Fifo => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let fmt = match kind {
                    T::Char => libc::S_IFCHR,
                    T::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                remove_at(dir, name)?;
                // SAFETY: mknodat of a single name in a directory fd we hold.
                let rc = unsafe {
                    libc::mknodat(
                        dir.as_raw_fd(),
                        cname.as_ptr(),
                        fmt | 0o600,
                        libc::makedev(major, minor),
                    )
                };
                if rc != 0 {
                    return Err(entry_err(&raw, last_os_error("mknod")));
                }
                self.finish_at(dir, cname, uid, gid, mtime, &raw)?;
                // SAFETY: fchmodat on a name in a directory fd we hold (not a symlink).
                if unsafe { libc::fchmodat(dir.as_raw_fd(), cname.as_ptr(), mode, 0) } != 0 {
                    return Err(entry_err(&raw, last_os_error("chmod")));
                }
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => return Ok(()),
            other => return Err(entry_err(&raw, format!("unsupported entry type {other:?}"))),
        }
        Ok(())
    }

    /// Owner, mode, xattrs and (for files) times, set on an open descriptor.
    fn finish_fd(
        &self,
        fd: &OwnedFd,
        meta: &Meta,
        mtime: Option<libc::timespec>,
        raw: &Path,
    ) -> Result<()> {
        let (uid, gid, mode, xattrs) = (meta.uid, meta.gid, meta.mode, &meta.xattrs);
        // SAFETY: plain syscalls on a descriptor we own.
        unsafe {
            if libc::fchown(fd.as_raw_fd(), uid, gid) != 0 {
                return Err(entry_err(raw, last_os_error("chown")));
            }
            // After chown, which clears set-id bits.
            if libc::fchmod(fd.as_raw_fd(), mode) != 0 {
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
    fn finish_at(
        &self,
        dir: &OwnedFd,
        name: &std::ffi::CStr,
        uid: u32,
        gid: u32,
        mtime: libc::timespec,
        raw: &Path,
    ) -> Result<()> {
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
                let k = OVERLAY_OPAQUE_XATTR;
                // SAFETY: NUL-terminated name and a one-byte value.
                if unsafe {
                    libc::fsetxattr(fd.as_raw_fd(), k.as_ptr(), b"y".as_ptr().cast(), 1, 0)
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

    fn finish(&mut self) -> Result<()> {
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

/// Some writers leave owner fields blank (all NUL or spaces): that means 0, as in GNU tar.
fn numeric_or_blank(parsed: std::io::Result<u64>, raw: &[u8]) -> std::io::Result<u64> {
    match parsed {
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        other => other,
    }
}

fn mkdir(dir: &OwnedFd, name: &std::ffi::CStr, raw: &Path) -> Result<()> {
    // SAFETY: mkdirat of a single name in a directory fd we hold.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o700) } != 0 {
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
