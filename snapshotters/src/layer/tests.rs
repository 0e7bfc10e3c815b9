//! The hostile-layer corpus (shared/reference/security.md, "Layer extraction") and the
//! fidelity checks: every case asserts nothing outside the target changed.

use super::apply::apply;
use crate::whiteout::Whiteouts;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Builds tar streams entry by entry, with raw names that `tar::Builder` would refuse.
struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let bytes = name.as_bytes();
        h.as_gnu_mut().unwrap().name[..bytes.len()].copy_from_slice(bytes);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h
    }

    fn push(mut self, mut h: tar::Header, data: &[u8]) -> Self {
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        let h = Self::header(name, tar::EntryType::Regular, data.len() as u64, 0o644);
        self.push(h, data)
    }

    fn dir(self, name: &str, mode: u32) -> Self {
        let h = Self::header(name, tar::EntryType::Directory, 0, mode);
        self.push(h, &[])
    }

    fn link(self, name: &str, target: &str, kind: tar::EntryType) -> Self {
        let mut h = Self::header(name, kind, 0, 0o777);
        let t = target.as_bytes();
        h.as_gnu_mut().unwrap().linkname[..t.len()].copy_from_slice(t);
        self.push(h, &[])
    }

    fn symlink(self, name: &str, target: &str) -> Self {
        self.link(name, target, tar::EntryType::Symlink)
    }

    fn hardlink(self, name: &str, target: &str) -> Self {
        self.link(name, target, tar::EntryType::Link)
    }

    fn bytes(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// A target directory with a sibling "outside" directory holding a secret.
struct Scene {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

impl Scene {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "secret").unwrap();
        std::fs::set_permissions(
            outside.join("secret"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        Scene {
            _tmp: tmp,
            root,
            outside,
        }
    }

    fn apply(&self, layer: &[u8], w: Whiteouts) -> crate::Result<super::Applied> {
        apply(layer, &self.root, w)
    }

    /// The outside directory still holds exactly the secret, unchanged.
    fn assert_outside_intact(&self) {
        let names: Vec<_> = std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"], "something appeared outside the root");
        let m = std::fs::symlink_metadata(self.outside.join("secret")).unwrap();
        assert!(m.is_file());
        assert_eq!(
            m.permissions().mode() & 0o7777,
            0o600,
            "secret's mode changed"
        );
        assert_eq!(m.nlink(), 1, "secret was hard-linked");
        assert_eq!(
            std::fs::read_to_string(self.outside.join("secret")).unwrap(),
            "secret"
        );
        let o = std::fs::metadata(&self.outside).unwrap();
        assert_eq!(o.uid(), 0);
    }
}

fn outside_abs(s: &Scene) -> String {
    s.outside.display().to_string()
}

#[test]
fn dotdot_and_absolute_entries_are_rerooted() {
    let s = Scene::new();
    let l = Layer::new()
        .file("../outside/evil", b"x")
        .file("/etc/evil", b"y")
        .file("a/../../../b", b"z")
        .bytes();
    s.apply(&l, Whiteouts::Delete).unwrap();
    s.assert_outside_intact();
    assert_eq!(std::fs::read(s.root.join("outside/evil")).unwrap(), b"x");
    assert_eq!(std::fs::read(s.root.join("etc/evil")).unwrap(), b"y");
    assert_eq!(std::fs::read(s.root.join("b")).unwrap(), b"z");
}

#[test]
fn symlink_then_file_through_it_stays_inside() {
    let s = Scene::new();
    let out = outside_abs(&s);
    let l = Layer::new()
        .symlink("link", &out)
        .file("link/pwned", b"x")
        .bytes();
    let err = s.apply(&l, Whiteouts::Delete).unwrap_err();
    assert!(
        err.to_string().contains("link/pwned"),
        "error names the entry: {err}"
    );
    s.assert_outside_intact();

    let s = Scene::new();
    let l = Layer::new()
        .symlink("rel", "../../../../../../..")
        .file("rel/pwned", b"x")
        .symlink("abs", "/")
        .dir("abs/made", 0o755)
        .bytes();
    s.apply(&l, Whiteouts::Delete).unwrap();
    s.assert_outside_intact();
    assert!(s.root.join("pwned").is_file());
    assert!(s.root.join("made").is_dir());
}

#[test]
fn symlink_across_layers_stays_inside() {
    let s = Scene::new();
    let out = outside_abs(&s);
    s.apply(
        &Layer::new()
            .symlink("l", &out)
            .symlink("sec", &format!("{out}/secret"))
            .bytes(),
        Whiteouts::Delete,
    )
    .unwrap();
    let l2 = Layer::new().file("l/secret", b"overwritten").bytes();
    assert!(s.apply(&l2, Whiteouts::Delete).is_err());
    // A directory entry or file entry at the symlink's own path replaces the link itself.
    s.apply(&Layer::new().dir("sec", 0o777).bytes(), Whiteouts::Delete)
        .unwrap();
    s.apply(
        &Layer::new().file("l", b"replaced").bytes(),
        Whiteouts::Delete,
    )
    .unwrap();
    s.assert_outside_intact();
    assert!(s.root.join("sec").is_dir());
    assert_eq!(std::fs::read(s.root.join("l")).unwrap(), b"replaced");
}

#[test]
fn hostile_hardlinks() {
    let s = Scene::new();
    let out = outside_abs(&s);
    for target in [
        format!("{out}/secret"),
        "../outside/secret".to_string(),
        "../../../../../../etc/shadow".to_string(),
    ] {
        let l = Layer::new().hardlink("h", &target).bytes();
        let err = s.apply(&l, Whiteouts::Delete).unwrap_err();
        assert!(err.to_string().contains("\"h\""), "{err}");
    }
    // Hard link to a symlink that points outside, then written through: the link is
    // replaced, the outside file untouched.
    let l = Layer::new()
        .symlink("s", &format!("{out}/secret"))
        .hardlink("h", "s")
        .file("h", b"through")
        .bytes();
    s.apply(&l, Whiteouts::Delete).unwrap();
    s.assert_outside_intact();
    // A hard link then a file at its path must not change the original.
    let l = Layer::new()
        .file("a", b"orig")
        .hardlink("b", "a")
        .file("b", b"new")
        .bytes();
    s.apply(&l, Whiteouts::Delete).unwrap();
    assert_eq!(std::fs::read(s.root.join("a")).unwrap(), b"orig");
    assert_eq!(std::fs::read(s.root.join("b")).unwrap(), b"new");
    let l = Layer::new().file("c", b"shared").hardlink("d", "c").bytes();
    s.apply(&l, Whiteouts::Delete).unwrap();
    assert_eq!(
        std::fs::metadata(s.root.join("c")).unwrap().ino(),
        std::fs::metadata(s.root.join("d")).unwrap().ino()
    );
}

#[test]
fn hostile_whiteouts() {
    for name in [".wh.", "dir/.wh..", "dir/.wh..."] {
        let s = Scene::new();
        let err = s
            .apply(
                &Layer::new().dir("dir", 0o755).file(name, b"").bytes(),
                Whiteouts::Delete,
            )
            .unwrap_err();
        assert!(err.to_string().contains("whiteout"), "{name}: {err}");
        s.assert_outside_intact();
    }
    let s = Scene::new();
    let out = outside_abs(&s);
    s.apply(&Layer::new().symlink("l", &out).bytes(), Whiteouts::Delete)
        .unwrap();
    let _ = s.apply(
        &Layer::new().file("l/.wh.secret", b"").bytes(),
        Whiteouts::Delete,
    );
    let _ = s.apply(
        &Layer::new().file("l/.wh..wh..opq", b"").bytes(),
        Whiteouts::Delete,
    );
    let _ = s.apply(
        &Layer::new().file("l/.wh.secret", b"").bytes(),
        Whiteouts::Overlay,
    );
    s.assert_outside_intact();
    // A directory named like a whiteout with a file inside is just a directory.
    s.apply(
        &Layer::new().file("d/.wh.../x", b"ok").bytes(),
        Whiteouts::Delete,
    )
    .unwrap();
    assert_eq!(std::fs::read(s.root.join("d/.wh.../x")).unwrap(), b"ok");
}

#[test]
fn whiteouts_delete_or_mark() {
    let s = Scene::new();
    s.apply(
        &Layer::new()
            .file("keep", b"k")
            .file("gone", b"g")
            .file("d/old", b"o")
            .file("d/older", b"o")
            .bytes(),
        Whiteouts::Delete,
    )
    .unwrap();
    s.apply(
        &Layer::new()
            .file(".wh.gone", b"")
            .file("d/new", b"n")
            .file("d/.wh..wh..opq", b"")
            .bytes(),
        Whiteouts::Delete,
    )
    .unwrap();
    assert!(s.root.join("keep").exists());
    assert!(!s.root.join("gone").exists());
    let mut d: Vec<_> = std::fs::read_dir(s.root.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    d.sort();
    assert_eq!(d, ["new"]);

    let s = Scene::new();
    s.apply(
        &Layer::new()
            .file(".wh.gone", b"")
            .dir("o", 0o755)
            .file("o/.wh..wh..opq", b"")
            .bytes(),
        Whiteouts::Overlay,
    )
    .unwrap();
    let m = std::fs::symlink_metadata(s.root.join("gone")).unwrap();
    assert!(
        m.file_type().is_char_device() && m.rdev() == 0,
        "overlay whiteout is a 0/0 char device"
    );
    let mut v = [0u8; 4];
    let path = std::ffi::CString::new(s.root.join("o").to_str().unwrap()).unwrap();
    // SAFETY: reading an xattr into a local buffer.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            v.as_mut_ptr().cast(),
            v.len(),
        )
    };
    assert_eq!(&v[..n as usize], b"y");
}

#[test]
fn pax_size_overrides_ustar_size() {
    // ustar says 0 bytes; PAX says 1024. The 1024 bytes hold what looks like another
    // header: a parser that trusts the ustar size would create "smuggled".
    let inner = Layer::new().file("smuggled", b"x").bytes();
    let payload = &inner[..1024];
    let mut pax = Vec::new();
    let rec = format!("size={}\n", payload.len());
    let line = format!(
        "{} {rec}",
        rec.len() + 1 + (rec.len() + 1).to_string().len()
    );
    pax.extend_from_slice(line.as_bytes());
    let l = Layer::new().push(
        Layer::header(
            "././@PaxHeader",
            tar::EntryType::XHeader,
            pax.len() as u64,
            0o644,
        ),
        &pax,
    );
    let mut h = Layer::header("carrier", tar::EntryType::Regular, 0, 0o644);
    h.set_cksum();
    let mut b = l.b;
    b.get_mut().write_all(h.as_bytes()).unwrap();
    b.get_mut().write_all(payload).unwrap();
    let bytes = b.into_inner().unwrap();
    let s = Scene::new();
    s.apply(&bytes, Whiteouts::Delete).unwrap();
    assert!(
        !s.root.join("smuggled").exists(),
        "an entry was smuggled past the PAX size"
    );
    assert_eq!(
        std::fs::metadata(s.root.join("carrier")).unwrap().len(),
        1024
    );
}

#[test]
fn owner_mode_times_xattrs_devices() {
    let s = Scene::new();
    let mut l = Layer::new();
    let mut h = Layer::header("owned", tar::EntryType::Regular, 2, 0o4755);
    h.set_uid(1234);
    h.set_gid(5678);
    l = l.push(h, b"hi");
    let mut dev = Layer::header("null", tar::EntryType::Char, 0, 0o666);
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    l = l
        .push(dev, &[])
        .push(Layer::header("fifo", tar::EntryType::Fifo, 0, 0o600), &[])
        .dir("dir", 0o750);
    s.apply(&l.bytes(), Whiteouts::Delete).unwrap();
    let m = std::fs::metadata(s.root.join("owned")).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777, m.mtime()),
        (1234, 5678, 0o4755, 1_600_000_000)
    );
    let d = std::fs::symlink_metadata(s.root.join("null")).unwrap();
    assert!(d.file_type().is_char_device());
    assert_eq!(d.rdev(), libc::makedev(1, 3));
    assert!(std::fs::symlink_metadata(s.root.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let dm = std::fs::metadata(s.root.join("dir")).unwrap();
    assert_eq!((dm.mode() & 0o7777, dm.mtime()), (0o750, 1_600_000_000));
}

/// Owners and modes come out as the tar says whether they were set by a call or the name was
/// made with them (root's own files under the umask): a set-gid directory's group and its
/// set-gid bit are not passed on, modes the umask would cut are set in full.
#[test]
fn owners_and_modes_are_exact_whether_set_or_made_so() {
    let s = Scene::new();
    let owned = |name: &str, kind, mode, (uid, gid): (u64, u64)| {
        let mut h = Layer::header(name, kind, 0, mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h
    };
    use tar::EntryType::{Directory as D, Regular as R};
    let l = Layer::new()
        .push(owned("sg", D, 0o2775, (0, 4321)), &[])
        .push(owned("sg/f", R, 0o644, (0, 0)), &[])
        .push(owned("sg/d", D, 0o755, (0, 0)), &[])
        .push(owned("sg/d/f", R, 0o640, (0, 0)), &[])
        .push(owned("wide", R, 0o777, (0, 0)), &[])
        .push(owned("ro", D, 0o555, (0, 0)), &[])
        .push(owned("ro/f", R, 0o444, (0, 0)), &[])
        .push(owned("theirs", R, 0o644, (1234, 5678)), &[])
        .push(owned("sticky", D, 0o1777, (0, 0)), &[]);
    s.apply(&l.bytes(), Whiteouts::Delete).unwrap();
    let got = |p: &str| {
        let m = std::fs::symlink_metadata(s.root.join(p)).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    assert_eq!(got("sg"), (0, 4321, 0o2775));
    assert_eq!(got("sg/f"), (0, 0, 0o644));
    assert_eq!(got("sg/d"), (0, 0, 0o755));
    assert_eq!(got("sg/d/f"), (0, 0, 0o640));
    assert_eq!(got("wide"), (0, 0, 0o777));
    assert_eq!(got("ro"), (0, 0, 0o555));
    assert_eq!(got("ro/f"), (0, 0, 0o444));
    assert_eq!(got("theirs"), (1234, 5678, 0o644));
    assert_eq!(got("sticky"), (0, 0, 0o1777));
}

#[test]
fn owner_ids_out_of_range_are_refused() {
    let s = Scene::new();
    let mut h = Layer::header("f", tar::EntryType::Regular, 0, 0o644);
    h.set_uid(u32::MAX as u64);
    let err = s
        .apply(&Layer::new().push(h, &[]).bytes(), Whiteouts::Delete)
        .unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
}

#[test]
fn compressed_layers_and_diff_id() {
    use sha2::Digest;
    let plain = Layer::new()
        .file("a", b"alpha")
        .dir("d", 0o755)
        .file("d/b", b"beta")
        .bytes();
    let want = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&plain)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(plain.as_slice(), 3).unwrap();
    for (what, bytes) in [("tar", plain.clone()), ("gzip", gz), ("zstd", zst)] {
        let s = Scene::new();
        let got = s.apply(&bytes, Whiteouts::Delete).unwrap();
        assert_eq!(got.diff_id, want, "{what}");
        assert_eq!(got.size, plain.len() as u64, "{what}");
        assert_eq!(
            std::fs::read(s.root.join("d/b")).unwrap(),
            b"beta",
            "{what}"
        );
    }
    let s = Scene::new();
    assert!(s.apply(b"definitely not a tar stream, but long enough to look at: ..............................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................", Whiteouts::Delete).is_err());
}

#[test]
fn decompression_bomb_streams_in_bounded_memory() {
    // 128 MiB of zeros in one file compresses ~1000:1; it must stream, never buffer.
    let size = 128u64 << 20;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    {
        let mut b = tar::Builder::new(&mut gz);
        let mut h = Layer::header("zeros", tar::EntryType::Regular, size, 0o644);
        h.set_cksum();
        b.append(&h, std::io::repeat(0).take_bytes(size)).unwrap();
        b.finish().unwrap();
    }
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 1 << 20, "{}", gz.len());
    let s = Scene::new();
    let got = s.apply(&gz, Whiteouts::Delete).unwrap();
    assert!(got.size > size);
    assert_eq!(std::fs::metadata(s.root.join("zeros")).unwrap().len(), size);
}

trait TakeBytes: std::io::Read + Sized {
    fn take_bytes(self, n: u64) -> std::io::Take<Self> {
        std::io::Read::take(self, n)
    }
}
impl<R: std::io::Read> TakeBytes for R {}

#[test]
fn many_entries_and_deep_nesting() {
    let mut l = Layer::new();
    for i in 0..20_000 {
        l = l.file(&format!("many/{:02}/{i}", i % 97), b"");
    }
    let deep: String = (0..40).map(|_| "d/").collect();
    l = l.file(&format!("{deep}leaf"), b"deep");
    let s = Scene::new();
    let got = s.apply(&l.bytes(), Whiteouts::Delete).unwrap();
    assert_eq!(got.entries, 20_001);
    assert_eq!(
        std::fs::read(s.root.join(format!("{deep}leaf"))).unwrap(),
        b"deep"
    );
    let _ = Path::new("");
}

/// A name already taken (by a lower layer or earlier in the same layer) is cleared and made
/// anew by the entry, whatever stood there, and a symlink standing there is never followed.
#[test]
fn names_in_the_way_are_replaced() {
    let s = Scene::new();
    let secret = s.outside.join("secret").display().to_string();
    let lower = Layer::new()
        .symlink("f", &secret)
        .symlink("k", &secret)
        .dir("d", 0o755)
        .file("d/inner", b"inner")
        .file("g", b"g")
        .file("h", b"h")
        .bytes();
    s.apply(&lower, Whiteouts::Delete).unwrap();
    let upper = Layer::new()
        .file("f", b"new f")
        .hardlink("k", "f")
        .file("d", b"d is a file now")
        .dir("g", 0o755)
        .symlink("h", "f")
        .file("twice", b"first")
        .file("twice", b"second")
        .bytes();
    s.apply(&upper, Whiteouts::Delete).unwrap();
    s.assert_outside_intact();
    let read = |n: &str| std::fs::read(s.root.join(n)).unwrap();
    assert_eq!(read("f"), b"new f");
    assert!(std::fs::symlink_metadata(s.root.join("k"))
        .unwrap()
        .is_file());
    assert_eq!(std::fs::metadata(s.root.join("f")).unwrap().nlink(), 2);
    assert_eq!(read("d"), b"d is a file now");
    assert!(std::fs::symlink_metadata(s.root.join("g"))
        .unwrap()
        .is_dir());
    let h = std::fs::read_link(s.root.join("h")).unwrap();
    assert_eq!(h, Path::new("f"));
    assert_eq!(read("twice"), b"second");
}

/// File contents are written from the stream's chunks as they arrive: every size across
/// block and chunk boundaries (the reading thread's chunks are 256 KiB) arrives whole.
#[test]
fn contents_of_every_size_arrive_whole() {
    let s = Scene::new();
    let sizes = [
        0usize, 1, 511, 512, 513, 4096, 262_143, 262_144, 262_145, 700_001,
    ];
    let mut l = Layer::new();
    for (i, n) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..*n).map(|j| (j * 7 + i) as u8).collect();
        l = l.file(&format!("f{i}"), &data);
    }
    let tar = l.bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let applied = s.apply(&gz.finish().unwrap(), Whiteouts::Delete).unwrap();
    assert_eq!(applied.size, tar.len() as u64);
    for (i, n) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..*n).map(|j| (j * 7 + i) as u8).collect();
        assert_eq!(
            std::fs::read(s.root.join(format!("f{i}"))).unwrap(),
            data,
            "f{i}"
        );
    }
}
