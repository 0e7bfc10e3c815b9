//! Producing a changeset layer: the difference between a snapshot and its parent, written as
//! an OCI tar stream (whiteouts for deletions, opaque markers for replaced directories).
//!
//! Two sources: an overlay upper directory already *is* the change set (a 0/0 character
//! device is a deletion, `trusted.overlay.opaque=y` an opaque directory); two full trees are
//! compared entry by entry.

use super::root::Root;
use crate::whiteout::{OPAQUE_MARKER, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX};
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

pub enum Changes<'a> {
    /// An overlay upper directory.
    OverlayUpper(&'a Path),
    /// Compare `upper` against `lower` (None: an empty lower).
    Trees {
        lower: Option<&'a Path>,
        upper: &'a Path,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let c = context.into();
    move |e| Error::io(c, e)
}

/// Sorted entries of a directory (a deterministic layer for the same tree).
fn children(dir: &Path) -> Result<Vec<OsString>> {
    let mut v: Vec<OsString> = fs::read_dir(dir)
        .map_err(io(format!("read {}", dir.display())))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(io(format!("read {}", dir.display())))?;
    v.sort();
    Ok(v)
}

fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return out;
    };
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: llistxattr writes at most names.len() bytes into our buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return out;
    }
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
    {
        let s = String::from_utf8_lossy(name).into_owned();
        // Overlay's own bookkeeping never goes into a layer.
        if s.starts_with("trusted.overlay.") {
            continue;
        }
        let Ok(cn) = std::ffi::CString::new(name) else {
            continue;
        };
        let mut val = vec![0u8; 64 * 1024];
        // SAFETY: lgetxattr writes at most val.len() bytes into our buffer.
        let m =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if m >= 0 {
            val.truncate(m as usize);
            out.insert(s, val);
        }
    }
    out
}

fn is_opaque(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut v = [0u8; 2];
    // SAFETY: lgetxattr writes at most 2 bytes into `v`.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            OVERLAY_OPAQUE_XATTR.as_ptr(),
            v.as_mut_ptr().cast(),
            v.len(),
        )
    };
    n == 1 && v[0] == b'y'
}

fn is_overlay_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

struct Writer<W: Write> {
    tar: tar::Builder<W>,
    /// The upper tree, opened once: file contents are read through it with every path
    /// resolved by the kernel inside it, so a running container that swaps a file or a
    /// directory for a symlink (`-> /etc/shadow`) between our stat and our open never makes
    /// us read a host file.
    root: Root,
    /// (dev, ino) of files already written, for hard links.
    inodes: HashMap<(u64, u64), PathBuf>,
    written_dirs: HashSet<PathBuf>,
}

impl<W: Write> Writer<W> {
    fn header(m: &Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(m.uid() as u64);
        h.set_gid(m.gid() as u64);
        h.set_mtime(m.mtime().max(0) as u64);
        h.set_size(0);
        h
    }

    fn pax(&mut self, path: &Path) -> Result<()> {
        let x = xattrs(path);
        if x.is_empty() {
            return Ok(());
        }
        let recs: Vec<(String, Vec<u8>)> = x
            .into_iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v))
            .collect();
        self.tar
            .append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(io("write layer"))
    }

    /// Writes one entry from `src` (on disk) under `name` (in the layer).
    fn entry(&mut self, src: &Path, name: &Path, m: &Metadata) -> Result<()> {
        let ft = m.file_type();
        let err = io(format!("write layer entry {}", name.display()));
        if ft.is_dir() {
            if !self.written_dirs.insert(name.to_path_buf()) {
                return Ok(());
            }
            self.pax(src)?;
            let mut h = Self::header(m, tar::EntryType::Directory);
            return self
                .tar
                .append_data(&mut h, name, std::io::empty())
                .map_err(err);
        }
        if ft.is_file() && m.nlink() > 1 {
            if let Some(first) = self.inodes.get(&(m.dev(), m.ino())).cloned() {
                let mut h = Self::header(m, tar::EntryType::Link);
                return self.tar.append_link(&mut h, name, &first).map_err(err);
            }
            self.inodes.insert((m.dev(), m.ino()), name.to_path_buf());
        }
        self.pax(src)?;
        if ft.is_file() {
            let mut h = Self::header(m, tar::EntryType::Regular);
            h.set_size(m.len());
            let changed = || {
                Error::FailedPrecondition(format!(
                    "{} changed while it was read; pause the container to commit it",
                    name.display()
                ))
            };
            let fd = self
                .root
                .open_in(name, libc::O_RDONLY | libc::O_NOFOLLOW)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::ELOOP) | Some(libc::ENOENT) | Some(libc::ENOTDIR) => changed(),
                    _ => Error::io(format!("open {}", src.display()), e),
                })?;
            let f = fs::File::from(fd);
            let now = f
                .metadata()
                .map_err(io(format!("stat {}", src.display())))?;
            if !now.is_file() || now.len() != m.len() {
                return Err(changed());
            }
            self.tar.append_data(&mut h, name, f).map_err(err)
        } else if ft.is_symlink() {
            let target = fs::read_link(src).map_err(io(format!("readlink {}", src.display())))?;
            let mut h = Self::header(m, tar::EntryType::Symlink);
            self.tar.append_link(&mut h, name, target).map_err(err)
        } else {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else if ft.is_fifo() {
                tar::EntryType::Fifo
            } else {
                return Ok(()); // sockets are not carried by layers
            };
            let mut h = Self::header(m, kind);
            let rdev = m.rdev();
            h.set_device_major(libc::major(rdev))
                .map_err(io("device"))?;
            h.set_device_minor(libc::minor(rdev))
                .map_err(io("device"))?;
            self.tar
                .append_data(&mut h, name, std::io::empty())
                .map_err(err)
        }
    }

    fn marker(&mut self, name: &Path) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o644);
        self.tar
            .append_data(&mut h, name, std::io::empty())
            .map_err(io(format!("write whiteout {}", name.display())))
    }

    /// Writes the directories above `name` (from `root`) that are not in the layer yet.
    fn parents(&mut self, root: &Path, name: &Path) -> Result<()> {
        let mut chain = vec![];
        let mut p = name.parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            if self.written_dirs.contains(d) {
                break;
            }
            chain.push(d.to_path_buf());
            p = d.parent();
        }
        for d in chain.into_iter().rev() {
            let src = root.join(&d);
            let m = fs::symlink_metadata(&src).map_err(io(format!("stat {}", src.display())))?;
            self.entry(&src, &d, &m)?;
        }
        Ok(())
    }
}

/// Writes the change set as an uncompressed tar stream into `out`.
pub fn write_changes<W: Write>(changes: Changes<'_>, out: W) -> Result<W> {
    let upper = match changes {
        Changes::OverlayUpper(upper) | Changes::Trees { upper, .. } => upper,
    };
    let mut w = Writer {
        tar: tar::Builder::new(out),
        root: Root::open(upper)?,
        inodes: HashMap::new(),
        written_dirs: HashSet::new(),
    };
    w.tar.follow_symlinks(false);
    match changes {
        Changes::OverlayUpper(upper) => overlay(&mut w, upper, Path::new(""))?,
        Changes::Trees { lower, upper } => trees(&mut w, lower, upper, Path::new(""))?,
    }
    w.tar.into_inner().map_err(io("finish layer"))
}

fn overlay<W: Write>(w: &mut Writer<W>, upper: &Path, rel: &Path) -> Result<()> {
    for name in children(&upper.join(rel))? {
        let r = rel.join(&name);
        let src = upper.join(&r);
        let m = fs::symlink_metadata(&src).map_err(io(format!("stat {}", src.display())))?;
        if is_overlay_whiteout(&m) {
            let mut wh = OsString::from(WHITEOUT_PREFIX);
            wh.push(&name);
            w.marker(&rel.join(wh))?;
            continue;
        }
        w.entry(&src, &r, &m)?;
        if m.is_dir() {
            if is_opaque(&src) {
                w.marker(&r.join(OPAQUE_MARKER))?;
            }
            overlay(w, upper, &r)?;
        }
    }
    Ok(())
}

fn same(a: &Metadata, b: &Metadata, pa: &Path, pb: &Path) -> bool {
    let kind = |m: &Metadata| m.mode() & libc::S_IFMT;
    if kind(a) != kind(b) || a.mode() != b.mode() || a.uid() != b.uid() || a.gid() != b.gid() {
        return false;
    }
    if a.file_type().is_symlink() {
        return fs::read_link(pa).ok() == fs::read_link(pb).ok();
    }
    if a.file_type().is_char_device() || a.file_type().is_block_device() {
        return a.rdev() == b.rdev();
    }
    if a.is_dir() {
        return xattrs(pa) == xattrs(pb);
    }
    a.len() == b.len()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && xattrs(pa) == xattrs(pb)
}

fn trees<W: Write>(
    w: &mut Writer<W>,
    lower: Option<&Path>,
    upper: &Path,
    rel: &Path,
) -> Result<()> {
    let up_names = children(&upper.join(rel))?;
    let low_dir = lower
        .map(|l| l.join(rel))
        .filter(|d| d.is_dir() && !d.is_symlink());
    let low_names: Vec<OsString> = match &low_dir {
        Some(d) => children(d)?,
        None => vec![],
    };
    let up_set: HashSet<&OsString> = up_names.iter().collect();
    for name in &low_names {
        if !up_set.contains(name) {
            let mut wh = OsString::from(WHITEOUT_PREFIX);
            wh.push(name);
            let marker = rel.join(wh);
            w.parents(upper, &marker)?;
            w.marker(&marker)?;
        }
    }
    for name in &up_names {
        let r = rel.join(name);
        let src = upper.join(&r);
        let m = fs::symlink_metadata(&src).map_err(io(format!("stat {}", src.display())))?;
        let old = lower.map(|l| l.join(&r));
        let old_m = old.as_ref().and_then(|p| fs::symlink_metadata(p).ok());
        let unchanged = match (&old, &old_m) {
            (Some(p), Some(om)) => same(&m, om, &src, p),
            _ => false,
        };
        if !unchanged {
            w.parents(upper, &r)?;
            w.entry(&src, &r, &m)?;
        }
        if m.is_dir() {
            // A directory that was something else below is new: all of its content is.
            let lower_here = if old_m.as_ref().is_some_and(|om| om.is_dir()) {
                lower
            } else {
                None
            };
            trees(w, lower_here, upper, &r)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::apply::apply;
    use super::*;
    use crate::whiteout::Whiteouts;

    /// Every path with its type, mode, owner, size and content (or link target).
    fn fingerprint(root: &Path) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            for name in children(&root.join(&rel)).unwrap() {
                let r = rel.join(&name);
                let p = root.join(&r);
                let m = fs::symlink_metadata(&p).unwrap();
                let body = if m.is_file() {
                    String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned()
                } else if m.file_type().is_symlink() {
                    fs::read_link(&p).unwrap().display().to_string()
                } else {
                    String::new()
                };
                out.insert(
                    r.clone(),
                    format!(
                        "{:o} {}:{} {} {body}",
                        m.mode(),
                        m.uid(),
                        m.gid(),
                        m.len() * m.is_file() as u64
                    ),
                );
                if m.is_dir() {
                    stack.push(r);
                }
            }
        }
        out
    }

    fn populate_lower(d: &Path) {
        fs::create_dir_all(d.join("etc/sub")).unwrap();
        fs::write(d.join("etc/keep"), "keep").unwrap();
        fs::write(d.join("etc/change"), "before").unwrap();
        fs::write(d.join("etc/gone"), "gone").unwrap();
        fs::write(d.join("etc/sub/x"), "x").unwrap();
        fs::create_dir_all(d.join("replace/deep")).unwrap();
        fs::write(d.join("replace/deep/y"), "y").unwrap();
        std::os::unix::fs::symlink("keep", d.join("etc/link")).unwrap();
    }

    fn change(d: &Path) {
        fs::write(d.join("etc/change"), "after!").unwrap();
        fs::remove_file(d.join("etc/gone")).unwrap();
        fs::remove_dir_all(d.join("etc/sub")).unwrap();
        fs::write(d.join("etc/new"), "new").unwrap();
        fs::remove_dir_all(d.join("replace")).unwrap();
        fs::write(d.join("replace"), "now a file").unwrap();
        fs::hard_link(d.join("etc/new"), d.join("etc/new-link")).unwrap();
        fs::remove_file(d.join("etc/link")).unwrap();
        std::os::unix::fs::symlink("new", d.join("etc/link")).unwrap();
    }

    #[test]
    fn tree_diff_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        let upper = tmp.path().join("upper");
        populate_lower(&lower);
        fs::create_dir(&upper).unwrap();
        let cp = std::process::Command::new("cp")
            .arg("-a")
            .arg(lower.join("."))
            .arg(&upper)
            .status()
            .unwrap();
        assert!(cp.success());
        change(&upper);
        let layer = write_changes(
            Changes::Trees {
                lower: Some(&lower),
                upper: &upper,
            },
            Vec::new(),
        )
        .unwrap();
        // Applying the change set to a copy of the parent reproduces the snapshot exactly.
        let replay = tmp.path().join("replay");
        fs::create_dir(&replay).unwrap();
        let cp = std::process::Command::new("cp")
            .arg("-a")
            .arg(lower.join("."))
            .arg(&replay)
            .status()
            .unwrap();
        assert!(cp.success());
        apply(layer.as_slice(), &replay, Whiteouts::Delete).unwrap();
        assert_eq!(fingerprint(&replay), fingerprint(&upper));
        // Unchanged files are not in the layer.
        let names: Vec<String> = tar::Archive::new(layer.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(!names.iter().any(|n| n == "etc/keep"), "{names:?}");
        assert!(names.iter().any(|n| n == "etc/.wh.gone"), "{names:?}");
        assert!(names.iter().any(|n| n == "etc/.wh.sub"), "{names:?}");
    }

    #[test]
    fn overlay_upper_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        populate_lower(&lower);
        let (upper, work, merged) = (
            tmp.path().join("upper"),
            tmp.path().join("work"),
            tmp.path().join("merged"),
        );
        for d in [&upper, &work, &merged] {
            fs::create_dir(d).unwrap();
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let st = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&merged)
            .status()
            .unwrap();
        assert!(st.success(), "overlay mount (needs root)");
        change(&merged);
        // An opaque directory: removed and recreated with new content.
        fs::create_dir_all(merged.join("etc/sub")).unwrap();
        fs::write(merged.join("etc/sub/only"), "only").unwrap();
        let want = fingerprint(&merged);
        let st = std::process::Command::new("umount")
            .arg(&merged)
            .status()
            .unwrap();
        assert!(st.success());
        let layer = write_changes(Changes::OverlayUpper(&upper), Vec::new()).unwrap();
        let replay = tmp.path().join("replay");
        fs::create_dir(&replay).unwrap();
        let cp = std::process::Command::new("cp")
            .arg("-a")
            .arg(lower.join("."))
            .arg(&replay)
            .status()
            .unwrap();
        assert!(cp.success());
        apply(layer.as_slice(), &replay, Whiteouts::Delete).unwrap();
        assert_eq!(fingerprint(&replay), want);
    }

    /// What a container racing a commit could do: the walk saw a regular file, and by the
    /// time it is opened the file (or a directory above it) is a symlink to a host file.
    #[test]
    fn a_file_swapped_for_a_symlink_never_reads_the_host() {
        let tmp = tempfile::tempdir().unwrap();
        let (upper, host) = (tmp.path().join("upper"), tmp.path().join("host"));
        fs::create_dir_all(&upper).unwrap();
        fs::create_dir_all(&host).unwrap();
        fs::write(host.join("shadow"), "host secret").unwrap();
        fs::write(upper.join("plain"), "host secret".replace("host", "ctr!")).unwrap();
        let seen = fs::symlink_metadata(upper.join("plain")).unwrap();
        std::os::unix::fs::symlink(host.join("shadow"), upper.join("swapped")).unwrap();
        std::os::unix::fs::symlink(&host, upper.join("dir")).unwrap();
        for name in ["swapped", "dir/shadow"] {
            let mut w = Writer {
                tar: tar::Builder::new(Vec::new()),
                root: Root::open(&upper).unwrap(),
                inodes: HashMap::new(),
                written_dirs: HashSet::new(),
            };
            let err = w
                .entry(&upper.join(name), Path::new(name), &seen)
                .unwrap_err();
            assert!(err.to_string().contains("changed while"), "{name}: {err}");
            let bytes = w.tar.into_inner().unwrap();
            assert!(
                !bytes.windows(11).any(|x| x == b"host secret"),
                "{name}: host bytes in the layer"
            );
        }
    }
}
