//! EROFS passes the conformance suite, keeps committed layers as images mounted read-only,
//! honours overlay whiteouts packed into them, and leaves no mount or loop device behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::{attach, Erofs, IMAGE};
use crate::fs::FsSnapshotter;
use crate::layer::apply;
use crate::whiteout::Whiteouts;
use crate::{Kind, Labels, Snapshotter};
use std::path::Path;

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "EROFS tests mount; run as root");
    Erofs::check_support(Path::new("/")).expect("EROFS in the kernel and mkfs.erofs on PATH");
}

fn open(root: &Path) -> FsSnapshotter<Erofs> {
    FsSnapshotter::open(root, Erofs::default()).unwrap()
}

/// The filesystem type mounted on `dir`, from this process' mount table.
fn fstype_on(dir: &Path) -> Option<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = dir.display().to_string();
    table.lines().rev().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        (fields.get(4) == Some(&want.as_str())).then(|| fields[sep + 1].to_string())
    })
}

fn layer(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(if *kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_600_000_000);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn erofs_conforms() {
    require_root();
    crate::testsuite::run(&|root| Box::new(open(root)));
}

/// Layers staged as an unpack stages them: applied with overlay whiteouts, packed on
/// commit, their directories emptied; a view above shows the merged tree from images.
#[test]
fn staged_layers_become_images_and_keep_whiteouts() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let s = open(root.path());
    let dir = tar::EntryType::Directory;
    let file = tar::EntryType::Regular;
    let layers = [
        layer(&[
            ("etc", dir, b""),
            ("etc/gone", file, b"x"),
            ("etc/motd", file, b"hello"),
            ("cache", dir, b""),
            ("cache/old", file, b"old"),
        ]),
        layer(&[
            ("etc/.wh.gone", file, b""),
            ("cache", dir, b""),
            ("cache/.wh..wh..opq", file, b""),
            ("cache/new", file, b"new"),
        ]),
    ];
    for (i, l) in layers.iter().enumerate() {
        let staged = s.stage().unwrap().unwrap();
        apply(l.as_slice(), &staged.fs(), Whiteouts::Overlay).unwrap();
        let parent = (i > 0).then(|| format!("L{}", i - 1));
        s.commit_staged(staged, &format!("L{i}"), parent.as_deref(), Labels::new())
            .unwrap();
    }
    let top = root.path().join("snapshots/2");
    assert!(top.join(IMAGE).is_file());
    assert_eq!(std::fs::read_dir(top.join("fs")).unwrap().count(), 0);
    let image_size = std::fs::metadata(top.join(IMAGE)).unwrap().len() as i64;
    let u = s.usage("L1").unwrap();
    assert!(u.size >= image_size && u.inodes == 1, "{u:?}");

    let m = s.view("v", Some("L1"), Labels::new()).unwrap();
    assert_eq!(fstype_on(&top.join("fs")).as_deref(), Some("erofs"));
    crate::testsuite::with_mounted(&m, |d| {
        assert_eq!(
            std::fs::read_to_string(d.join("etc/motd")).unwrap(),
            "hello"
        );
        assert!(!d.join("etc/gone").exists(), "whiteout lost in the image");
        assert!(
            !d.join("cache/old").exists(),
            "opaque marker lost in the image"
        );
        assert_eq!(std::fs::read_to_string(d.join("cache/new")).unwrap(), "new");
    });
    // An image is read-only even to root.
    assert!(std::fs::write(top.join("fs/cache/new"), "changed").is_err());
}

/// Removing a committed layer takes its image off and deletes it; dropping the
/// snapshotter takes off the rest, and a new one mounts them again on demand.
#[test]
fn removal_and_restart_leave_no_mounts() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("snapshots/1");
    {
        let s = open(root.path());
        let m = s.prepare("a", None, Labels::new()).unwrap();
        let upper = crate::mount::bind_source(&m).unwrap();
        std::fs::write(upper.join("f"), "kept").unwrap();
        s.commit("A", "a", Labels::new()).unwrap();
        assert!(
            fstype_on(&base.join("fs")).is_none(),
            "mounted before it is needed"
        );
        s.prepare("b", Some("A"), Labels::new()).unwrap();
        assert_eq!(fstype_on(&base.join("fs")).as_deref(), Some("erofs"));
    }
    assert!(
        fstype_on(&base.join("fs")).is_none(),
        "left mounted on drop"
    );
    let leftovers: Vec<_> = std::fs::read_dir(root.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("new-"))
        .collect();
    assert!(leftovers.is_empty(), "packed files left: {leftovers:?}");
    let s = open(root.path());
    let m = s.mounts("b").unwrap();
    crate::testsuite::with_mounted(&m, |d| {
        assert_eq!(std::fs::read_to_string(d.join("f")).unwrap(), "kept");
    });
    assert_eq!(s.stat("A").unwrap().kind, Kind::Committed);
    s.remove("b").unwrap();
    s.remove("A").unwrap();
    assert!(fstype_on(&base.join("fs")).is_none());
    assert!(!base.exists());
}

/// Kernels before 6.12 mount images through a loop device: it shows the image, and it is
/// released when the mount goes.
#[test]
fn loop_devices_go_with_their_mount() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (src, target) = (tmp.path().join("src"), tmp.path().join("mnt"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(src.join("f"), "through a loop").unwrap();
    let image = tmp.path().join("img");
    super::image::pack(&src, &image).unwrap();
    attach::mount_loop(&image, &target).unwrap();
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = table
        .lines()
        .find(|l| l.contains(&format!(" {} ", target.display())))
        .unwrap()
        .to_string();
    let device = line
        .split(" - erofs ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_string();
    assert!(device.starts_with("/dev/loop"), "{line}");
    assert_eq!(
        std::fs::read_to_string(target.join("f")).unwrap(),
        "through a loop"
    );
    attach::unmount(&target).unwrap();
    let name = device.trim_start_matches("/dev/");
    let backing = format!("/sys/block/{name}/loop/backing_file");
    // Autoclear runs when the last user of the device closes it, just after the unmount.
    for _ in 0..100 {
        if !Path::new(&backing).exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!(
        "{device} still bound to {}",
        std::fs::read_to_string(&backing).unwrap()
    );
}

/// A committed layer whose image is gone or is not EROFS (damaged on disk) is refused when
/// a snapshot above it is asked for: nothing is mounted and no snapshot is made.
#[test]
fn a_missing_or_damaged_image_is_refused() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("snapshots/1");
    let s = open(root.path());
    s.prepare("a", None, Labels::new()).unwrap();
    s.commit("A", "a", Labels::new()).unwrap();
    std::fs::write(base.join(IMAGE), vec![0x5a; 8192]).unwrap();
    assert!(s.prepare("b", Some("A"), Labels::new()).is_err());
    std::fs::remove_file(base.join(IMAGE)).unwrap();
    let e = s.prepare("c", Some("A"), Labels::new()).unwrap_err();
    assert!(matches!(e, crate::Error::FailedPrecondition(_)), "{e}");
    assert!(fstype_on(&base.join("fs")).is_none());
    for key in ["b", "c"] {
        assert!(matches!(s.stat(key), Err(crate::Error::NotFound(_))));
    }
}
