//! Reading one file of a snapshot's tree straight from the directories its mounts name,
//! without mounting them: a bind mount's source, or an overlay's upper and lower directories
//! looked up as overlayfs looks them up (the topmost layer that has a name wins; a 0/0
//! character device hides the name below it; a directory marked opaque hides the directories
//! below it). Symlinks resolve inside the tree as if it were `/`, as
//! [`Root::open_in`](crate::layer::root::Root::open_in) resolves them, and never lead out of it.
//! Whatever this does not read exactly as the kernel would (other mount shapes or options,
//! overlayfs xattrs other than the opaque marker, a symlink chain near the kernel's limit,
//! a file that is not a regular file) answers None: the caller mounts the tree instead.

use crate::layer::root::{lstat_at, Root};
use crate::whiteout::OVERLAY_OPAQUE_XATTR;
use crate::Mount;
use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path};

/// What reading the file gave, as reading it in the mounted tree would.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// Its first `limit` bytes.
    Contents(Vec<u8>),
    /// Nothing readable there: absent, under a non-directory, or a directory.
    Nothing,
}

/// Symlinks followed in one lookup before giving up on it (below the kernel's 40, so a
/// chain the kernel might refuse is left to the kernel).
const MAX_LINKS: usize = 32;

/// Reads `rel` (relative to the tree's root) of the tree `mounts` stand for, at most
/// `limit` bytes; None when only mounting the tree would say exactly what it holds there.
pub fn read_file(mounts: &[Mount], rel: &Path, limit: u64) -> Option<Found> {
    match mounts {
        [m] if m.kind == "bind" && bind_options_plain(m) => {
            read_bound(Path::new(&m.source), rel, limit)
        }
        [m] if m.kind == "overlay" => {
            let layers = overlay_layers(m)?;
            read_layered(&layers, rel, limit)
        }
        _ => None,
    }
}

fn bind_options_plain(m: &Mount) -> bool {
    m.options
        .iter()
        .all(|o| matches!(o.as_str(), "ro" | "rw" | "bind" | "rbind"))
}

/// An overlay's layer directories, topmost first; None for options beyond berth's own.
fn overlay_layers(m: &Mount) -> Option<Vec<&str>> {
    let (mut upper, mut lowers) = (None, None);
    for o in &m.options {
        match o.split_once('=') {
            Some(("upperdir", v)) => upper = Some(v),
            Some(("lowerdir", v)) => lowers = Some(v),
            Some(("workdir", _)) | Some(("index", "off")) => {}
            None if o == "ro" || o == "rw" => {}
            _ => return None,
        }
    }
    let lowers = lowers?;
    // An escaped separator or an empty layer is for the kernel to parse.
    if lowers.contains('\\') || upper.is_some_and(|u| u.contains('\\')) {
        return None;
    }
    let mut layers: Vec<&str> = upper.into_iter().collect();
    layers.extend(lowers.split(':'));
    (!layers.iter().any(|l| l.is_empty())).then_some(layers)
}

/// A bind mount shows its source: the kernel resolves `rel` there as in the mounted tree.
fn read_bound(source: &Path, rel: &Path, limit: u64) -> Option<Found> {
    let root = Root::open(source).ok()?;
    let found = match root.open_in(rel, libc::O_PATH) {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) if absent(&e) => return Some(Found::Nothing),
        Err(_) => return None,
    };
    let kind = found.metadata().ok()?.file_type();
    if kind.is_dir() {
        return Some(Found::Nothing);
    }
    if !kind.is_file() {
        return None;
    }
    // Opened again for reading through the descriptor: the very file resolved above.
    let again = std::fs::File::open(format!("/proc/self/fd/{}", found.as_raw_fd())).ok()?;
    read_regular(again.into(), limit)
}

fn absent(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// The first `limit` bytes of an open regular file (checked again: it is read only if so).
fn read_regular(fd: OwnedFd, limit: u64) -> Option<Found> {
    let file = std::fs::File::from(fd);
    if !file.metadata().ok()?.file_type().is_file() {
        return None;
    }
    let mut out = vec![];
    file.take(limit).read_to_end(&mut out).ok()?;
    Some(Found::Contents(out))
}

/// One entry of a merged directory, as overlayfs would show it.
enum Entry {
    Missing,
    /// A directory: its directories in the layers that merge into it, topmost first.
    Dir(Vec<OwnedFd>),
    Symlink(OsString),
    /// A regular file, in the layer (an index into the merged directory) that holds it.
    File(usize),
    /// A FIFO, a socket or a device.
    Special,
}

fn read_layered(layers: &[&str], rel: &Path, limit: u64) -> Option<Found> {
    let mut roots = vec![];
    for l in layers {
        roots.push(open_dir_at(libc::AT_FDCWD, OsStr::new(l))?);
    }
    let mut todo: VecDeque<OsString> = components(rel)?;
    // The directories walked into, each as the layer directories merged there.
    let mut walked: Vec<Vec<OwnedFd>> = vec![roots];
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            if walked.len() > 1 {
                walked.pop();
            }
            continue;
        }
        let here = walked.last()?;
        match lookup(here, &name)? {
            Entry::Missing => return Some(Found::Nothing),
            Entry::Dir(merged) => walked.push(merged),
            Entry::Symlink(target) => {
                links += 1;
                if links > MAX_LINKS || target.is_empty() || target.as_bytes().ends_with(b"/") {
                    return None;
                }
                if target.as_bytes().starts_with(b"/") {
                    walked.truncate(1);
                }
                let mut next = components(Path::new(&target))?;
                next.extend(todo);
                todo = next;
            }
            // A non-directory where the path goes on.
            Entry::File(_) | Entry::Special if !todo.is_empty() => return Some(Found::Nothing),
            Entry::File(layer) => return read_layer_file(here.get(layer)?, &name, limit),
            Entry::Special => return None,
        }
    }
    // The path named a directory.
    Some(Found::Nothing)
}

/// The path's names in order, `..` kept for the walk; None for a path that is not relative.
fn components(p: &Path) -> Option<VecDeque<OsString>> {
    let mut out = VecDeque::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push_back(n.to_os_string()),
            Component::ParentDir => out.push_back(OsString::from("..")),
            Component::CurDir | Component::RootDir => {}
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// `name` in the merged directory `dirs` (topmost first); None for what is left to the kernel.
fn lookup(dirs: &[OwnedFd], name: &OsStr) -> Option<Entry> {
    for (i, d) in dirs.iter().enumerate() {
        let Some(st) = lstat_at(d, name).ok()? else {
            continue;
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFCHR if st.st_rdev == 0 => return Some(Entry::Missing),
            libc::S_IFDIR => return merged_dir(&dirs[i..], name).map(Entry::Dir),
            libc::S_IFLNK => return read_link_at(d, name).map(Entry::Symlink),
            libc::S_IFREG => return Some(Entry::File(i)),
            _ => return Some(Entry::Special),
        }
    }
    Some(Entry::Missing)
}

/// The directories named `name` that merge, from the topmost layer (`dirs[0]`, where it is a
/// directory) down: the walk stops at an opaque directory and at a layer where the name is
/// anything but a directory (a whiteout among them); layers without the name are skipped.
fn merged_dir(dirs: &[OwnedFd], name: &OsStr) -> Option<Vec<OwnedFd>> {
    let mut merged = vec![];
    for d in dirs {
        let Some(st) = lstat_at(d, name).ok()? else {
            continue;
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            break;
        }
        let fd = open_dir_at(d.as_raw_fd(), name)?;
        let opaque = overlay_opaque(&fd)?;
        merged.push(fd);
        if opaque {
            break;
        }
    }
    Some(merged)
}

/// Whether the directory is marked opaque; None when it carries any other overlayfs xattr
/// (a redirect, a metacopy, xattr whiteouts), which only the kernel reads exactly.
fn overlay_opaque(fd: &OwnedFd) -> Option<bool> {
    let names = overlay_xattrs(fd)?;
    let mut opaque = false;
    for n in names {
        if n.as_slice() != OVERLAY_OPAQUE_XATTR.to_bytes() {
            return None;
        }
        let mut v = [0u8; 2];
        // SAFETY: a NUL-terminated name and a buffer of the length given.
        let len = unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                OVERLAY_OPAQUE_XATTR.as_ptr(),
                v.as_mut_ptr().cast(),
                v.len(),
            )
        };
        if len != 1 || v[0] != b'y' {
            return None;
        }
        opaque = true;
    }
    Some(opaque)
}

/// The names of the `trusted.overlay.` xattrs on `fd`. Only a privileged reader sees trusted
/// xattrs, so anyone else gets None.
fn overlay_xattrs(fd: &OwnedFd) -> Option<Vec<Vec<u8>>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let mut buf = vec![0u8; 1024];
    // SAFETY: the buffer and its length; the kernel writes at most that many bytes.
    let len = unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        // ENOTSUP: a filesystem without xattrs has no overlayfs ones either. ERANGE (more
        // names than the buffer holds) is left to the kernel.
        let e = std::io::Error::last_os_error();
        return (e.raw_os_error() == Some(libc::ENOTSUP)).then(Vec::new);
    }
    buf.truncate(len as usize);
    Some(
        buf.split(|b| *b == 0)
            .filter(|n| n.starts_with(b"trusted.overlay."))
            .map(<[u8]>::to_vec)
            .collect(),
    )
}

/// Reads `name`, a regular file in `dir`, unless it carries overlayfs xattrs.
fn read_layer_file(dir: &OwnedFd, name: &OsStr, limit: u64) -> Option<Found> {
    let c = CString::new(name.as_bytes()).ok()?;
    let flags =
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: a directory fd we hold and a NUL-terminated single name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel returned a fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // A metacopy or an xattr whiteout is a regular file only the kernel reads right.
    if !overlay_xattrs(&fd)?.is_empty() {
        return None;
    }
    read_regular(fd, limit)
}

fn open_dir_at(dir: libc::c_int, name: &OsStr) -> Option<OwnedFd> {
    let c = CString::new(name.as_bytes()).ok()?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a directory fd we hold (or AT_FDCWD for an absolute layer path) and a
    // NUL-terminated name.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags) };
    // SAFETY: the kernel returned a fresh descriptor.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn read_link_at(dir: &OwnedFd, name: &OsStr) -> Option<OsString> {
    let name = CString::new(name.as_bytes()).ok()?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: a directory fd we hold, a NUL-terminated name and a buffer of the length given.
    let len = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if len < 0 || len as usize >= buf.len() {
        return None;
    }
    buf.truncate(len as usize);
    Some(OsString::from_vec(buf))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::{read_file, Found};
    use crate::layer::apply;
    use crate::layer::root::Root;
    use crate::mount::TempMount;
    use crate::whiteout::Whiteouts;
    use crate::Mount;
    use std::io::Read;
    use std::path::{Path, PathBuf};

    const LIMIT: u64 = 4 << 20;

    /// A tar entry: a file's contents, a symlink's target (`-> target`), or a directory (`/`).
    fn layer(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, what) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_mtime(1_600_000_000);
            if let Some(target) = what.strip_prefix("-> ") {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, name, target).unwrap();
            } else if *what == "/" {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, name, std::io::empty()).unwrap();
            } else {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(what.len() as u64);
                b.append_data(&mut h, name, what.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    /// An active overlay snapshot over `layers` (bottom first), each applied as the overlay
    /// snapshotter applies layers: whiteouts recorded for the kernel.
    struct Stack {
        _dir: tempfile::TempDir,
        mounts: Vec<Mount>,
    }

    fn stack(layers: &[&[(&str, &str)]]) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let mut lowers: Vec<PathBuf> = vec![];
        for (i, entries) in layers.iter().enumerate() {
            let l = dir.path().join(format!("l{i}"));
            std::fs::create_dir(&l).unwrap();
            apply(&layer(entries)[..], &l, Whiteouts::Overlay).unwrap();
            lowers.insert(0, l);
        }
        for d in ["upper", "work"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let lowerdir = lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mounts = vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "index=off".into(),
                format!("workdir={}", dir.path().join("work").display()),
                format!("upperdir={}", dir.path().join("upper").display()),
                format!("lowerdir={lowerdir}"),
            ],
        }];
        Stack { _dir: dir, mounts }
    }

    /// What the mounted tree gives: the kernel resolving `rel` inside it.
    fn mounted(mounts: &[Mount], rel: &str) -> Found {
        let m = TempMount::new(mounts).unwrap();
        let Ok(fd) = Root::open(m.path())
            .unwrap()
            .open_in(Path::new(rel), libc::O_RDONLY)
        else {
            return Found::Nothing;
        };
        let mut out = vec![];
        match std::fs::File::from(fd).take(LIMIT).read_to_end(&mut out) {
            Ok(_) => Found::Contents(out),
            Err(_) => Found::Nothing,
        }
    }

    fn require_root() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "these tests mount overlays: run as root");
    }

    /// Reads `rel` from the layers, checks the kernel agrees, and returns what was read.
    fn read_agreeing(layers: &[&[(&str, &str)]], rel: &str) -> Found {
        let s = stack(layers);
        let direct = read_file(&s.mounts, Path::new(rel), LIMIT).expect("read without a mount");
        assert_eq!(
            direct,
            mounted(&s.mounts, rel),
            "the mounted tree disagrees"
        );
        direct
    }

    fn contents(s: &str) -> Found {
        Found::Contents(s.as_bytes().to_vec())
    }

    #[test]
    fn the_topmost_layer_with_the_name_wins() {
        require_root();
        let bottom: &[(&str, &str)] =
            &[("etc/", "/"), ("etc/passwd", "bottom"), ("etc/group", "g")];
        let top: &[(&str, &str)] = &[("etc/", "/"), ("etc/passwd", "top")];
        assert_eq!(read_agreeing(&[bottom, top], "etc/passwd"), contents("top"));
        assert_eq!(read_agreeing(&[bottom, top], "etc/group"), contents("g"));
        assert_eq!(read_agreeing(&[bottom, top], "etc/shadow"), Found::Nothing);
        assert_eq!(read_agreeing(&[bottom, top], "etc"), Found::Nothing);
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_what_is_below() {
        require_root();
        let bottom: &[(&str, &str)] = &[("etc/", "/"), ("etc/passwd", "p"), ("etc/group", "g")];
        let gone: &[(&str, &str)] = &[("etc/", "/"), ("etc/.wh.passwd", "")];
        assert_eq!(read_agreeing(&[bottom, gone], "etc/passwd"), Found::Nothing);
        assert_eq!(read_agreeing(&[bottom, gone], "etc/group"), contents("g"));
        let again: &[(&str, &str)] = &[("etc/", "/"), ("etc/passwd", "again")];
        assert_eq!(
            read_agreeing(&[bottom, gone, again], "etc/passwd"),
            contents("again")
        );
        let opaque: &[(&str, &str)] = &[
            ("etc/", "/"),
            ("etc/.wh..wh..opq", ""),
            ("etc/group", "new"),
        ];
        assert_eq!(
            read_agreeing(&[bottom, opaque], "etc/passwd"),
            Found::Nothing
        );
        assert_eq!(
            read_agreeing(&[bottom, opaque], "etc/group"),
            contents("new")
        );
        let no_etc: &[(&str, &str)] = &[(".wh.etc", "")];
        assert_eq!(
            read_agreeing(&[bottom, no_etc], "etc/passwd"),
            Found::Nothing
        );
        let etc_file: &[(&str, &str)] = &[("etc", "a file")];
        assert_eq!(
            read_agreeing(&[bottom, etc_file], "etc/passwd"),
            Found::Nothing
        );
        // A directory above a file of the same name: the file below is hidden.
        assert_eq!(
            read_agreeing(&[etc_file, bottom], "etc/passwd"),
            contents("p")
        );
    }

    #[test]
    fn symlinks_resolve_in_the_merged_tree() {
        require_root();
        let real: &[(&str, &str)] = &[("usr/", "/"), ("usr/lib/", "/"), ("usr/lib/passwd", "real")];
        let link: &[(&str, &str)] = &[
            ("etc/", "/"),
            ("etc/passwd", "-> /usr/lib/passwd"),
            ("etc/group", "-> ../usr/lib/passwd"),
            ("etc/shadow", "-> ../../../../usr/./lib//passwd"),
            ("data", "-> usr/lib"),
            ("etc/hosts", "-> /data/passwd"),
        ];
        for rel in [
            "etc/passwd",
            "etc/group",
            "etc/shadow",
            "etc/hosts",
            "data/passwd",
        ] {
            assert_eq!(read_agreeing(&[real, link], rel), contents("real"), "{rel}");
        }
        let dangling: &[(&str, &str)] = &[("etc/", "/"), ("etc/passwd", "-> missing")];
        assert_eq!(read_agreeing(&[dangling], "etc/passwd"), Found::Nothing);
    }

    /// An image's symlink naming a host file never reaches it: absolute or through `..`,
    /// it resolves inside the tree, where the name is absent.
    #[test]
    fn hostile_symlinks_stay_inside_the_tree() {
        require_root();
        let host = tempfile::tempdir().unwrap();
        let secret = host.path().join("secret");
        std::fs::write(&secret, "host secret").unwrap();
        let absolute = format!("-> {}", secret.display());
        let climbing = format!("-> ../../../../../../../..{}", secret.display());
        let dir_out = format!("-> {}", host.path().display());
        let hostile: &[(&str, &str)] = &[
            ("etc/", "/"),
            ("etc/passwd", &absolute),
            ("etc/group", &climbing),
            ("hostdir", &dir_out),
        ];
        for rel in ["etc/passwd", "etc/group", "hostdir/secret"] {
            assert_eq!(read_agreeing(&[hostile], rel), Found::Nothing, "{rel}");
        }
        // The same names inside the tree are what is read.
        let inside = format!("{}/", secret.parent().unwrap().display());
        let shadowing: &[(&str, &str)] = &[
            (inside.trim_start_matches('/'), "/"),
            (
                secret.to_str().unwrap().trim_start_matches('/'),
                "image file",
            ),
        ];
        let s = stack(&[shadowing, hostile]);
        for rel in ["etc/passwd", "etc/group", "hostdir/secret"] {
            let direct = read_file(&s.mounts, Path::new(rel), LIMIT).unwrap();
            assert_eq!(direct, contents("image file"), "{rel}");
            assert_eq!(direct, mounted(&s.mounts, rel), "{rel}");
        }
    }

    #[test]
    fn what_only_the_kernel_reads_exactly_is_left_to_a_mount() {
        require_root();
        let looped: &[(&str, &str)] = &[("etc/", "/"), ("etc/a", "-> b"), ("etc/b", "-> a")];
        let s = stack(&[looped]);
        assert_eq!(read_file(&s.mounts, Path::new("etc/a"), LIMIT), None);
        // A redirected directory.
        let base: &[(&str, &str)] = &[("etc/", "/"), ("etc/passwd", "p")];
        let s = stack(&[base, base]);
        let top = s.mounts[0].options[3]
            .trim_start_matches("lowerdir=")
            .split(':')
            .next()
            .unwrap()
            .to_string();
        let etc = std::ffi::CString::new(format!("{top}/etc")).unwrap();
        // SAFETY: NUL-terminated path, name and value.
        let rc = unsafe {
            libc::setxattr(
                etc.as_ptr(),
                c"trusted.overlay.redirect".as_ptr(),
                b"/x".as_ptr().cast(),
                2,
                0,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        assert_eq!(read_file(&s.mounts, Path::new("etc/passwd"), LIMIT), None);
        // Options berth's snapshotters do not write, and other shapes.
        let s = stack(&[base]);
        let mut remapped = s.mounts.clone();
        remapped[0].options.push("uidmap=0:1000:65536".into());
        assert_eq!(read_file(&remapped, Path::new("etc/passwd"), LIMIT), None);
        assert_eq!(read_file(&[], Path::new("etc/passwd"), LIMIT), None);
    }

    #[test]
    fn a_bind_mount_is_read_in_its_source() {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        apply(
            &layer(&[("etc/", "/"), ("etc/passwd", "-> /real"), ("real", "r")])[..],
            dir.path(),
            Whiteouts::Delete,
        )
        .unwrap();
        let mounts = vec![Mount {
            kind: "bind".into(),
            source: dir.path().display().to_string(),
            options: vec!["ro".into(), "rbind".into()],
        }];
        for rel in ["etc/passwd", "real", "etc/group", "etc"] {
            let direct = read_file(&mounts, Path::new(rel), LIMIT).unwrap();
            assert_eq!(direct, mounted(&mounts, rel), "{rel}");
        }
        assert_eq!(
            read_file(&mounts, Path::new("etc/passwd"), LIMIT),
            Some(contents("r"))
        );
    }
}
