//! The conformance suite every snapshotter passes. It mounts what the snapshotter hands out
//! (with mount(8)), so it runs as root. It is test code: a failed check panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::{Error, Kind, Labels, Mount, Snapshotter};
use std::path::Path;
use std::process::Command;

/// Mounts `mounts` on a fresh directory, runs `f` inside, unmounts.
pub fn with_mounted<T>(mounts: &[Mount], f: impl FnOnce(&Path) -> T) -> T {
    let target = tempfile::tempdir().expect("mount target");
    let m = &mounts[0];
    let mut cmd = Command::new("mount");
    if m.kind == "bind" {
        cmd.arg("--rbind");
        cmd.arg(&m.source).arg(target.path());
    } else {
        cmd.args(["-t", &m.kind, "-o", &m.options.join(",")]);
        cmd.arg(&m.source).arg(target.path());
    }
    let out = cmd.output().expect("run mount");
    assert!(
        out.status.success(),
        "mount {m:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if m.kind == "bind" && m.options.iter().any(|o| o == "ro") {
        let out = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(target.path())
            .output()
            .expect("remount ro");
        assert!(out.status.success());
    }
    let r = f(target.path());
    let out = Command::new("umount")
        .arg("-R")
        .arg(target.path())
        .output()
        .expect("umount");
    assert!(
        out.status.success(),
        "umount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    r
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs every case against snapshotters made by `make` (each gets a fresh root).
pub fn run(make: &dyn Fn(&Path) -> Box<dyn Snapshotter>) {
    type Case = fn(&dyn Snapshotter, &Path);
    let cases: &[(&str, Case)] = &[
        ("chain", chain),
        ("views", views),
        ("remove_order", remove_order),
        ("labels", labels_case),
        ("usage", usage),
        ("errors", errors),
        ("cleanup", cleanup),
    ];
    for (name, case) in cases {
        let root = tempfile::tempdir().expect("root");
        let s = make(root.path());
        eprintln!("conformance: {name}");
        case(s.as_ref(), root.path());
    }
    // Metadata survives reopening.
    let root = tempfile::tempdir().expect("root");
    {
        let s = make(root.path());
        s.prepare("a", None, Labels::new()).unwrap();
        s.commit("A", "a", Labels::new()).unwrap();
    }
    let s = make(root.path());
    assert_eq!(s.stat("A").unwrap().kind, Kind::Committed);
}

fn chain(s: &dyn Snapshotter, _: &Path) {
    let m = s.prepare("a", None, Labels::new()).unwrap();
    with_mounted(&m, |d| {
        std::fs::write(d.join("one"), "1").unwrap();
        std::fs::create_dir(d.join("dir")).unwrap();
        std::fs::write(d.join("dir/keep"), "k").unwrap();
    });
    s.commit("A", "a", Labels::new()).unwrap();
    assert!(matches!(s.stat("a"), Err(Error::NotFound(_))));
    let m = s.prepare("b", Some("A"), Labels::new()).unwrap();
    with_mounted(&m, |d| {
        assert_eq!(std::fs::read_to_string(d.join("one")).unwrap(), "1");
        std::fs::remove_file(d.join("one")).unwrap();
        std::fs::write(d.join("two"), "2").unwrap();
    });
    let active = s.stat("b").unwrap();
    s.commit("B", "b", Labels::new()).unwrap();
    let info = s.stat("B").unwrap();
    assert_eq!(info.parent.as_deref(), Some("A"));
    assert_eq!(info.kind, Kind::Committed);
    // A committed snapshot is made when it is committed (containerd's suite checks it).
    assert_eq!(info.created_at, info.updated_at);
    assert!(info.created_at >= active.created_at);
    let m = s.prepare("c", Some("B"), Labels::new()).unwrap();
    with_mounted(&m, |d| {
        assert!(!d.join("one").exists());
        assert_eq!(std::fs::read_to_string(d.join("two")).unwrap(), "2");
        assert_eq!(std::fs::read_to_string(d.join("dir/keep")).unwrap(), "k");
    });
    let mut names = vec![];
    s.walk(&mut |i| {
        names.push((i.name.clone(), i.kind));
        true
    })
    .unwrap();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        names,
        [
            ("A".into(), Kind::Committed),
            ("B".into(), Kind::Committed),
            ("c".into(), Kind::Active)
        ]
    );
}

fn views(s: &dyn Snapshotter, _: &Path) {
    let m = s.prepare("a", None, Labels::new()).unwrap();
    with_mounted(&m, |d| std::fs::write(d.join("f"), "x").unwrap());
    s.commit("A", "a", Labels::new()).unwrap();
    let m = s.view("v", Some("A"), Labels::new()).unwrap();
    with_mounted(&m, |d| {
        assert_eq!(std::fs::read_to_string(d.join("f")).unwrap(), "x");
        assert!(
            std::fs::write(d.join("g"), "y").is_err(),
            "a view must be read-only"
        );
    });
    assert_eq!(s.stat("v").unwrap().kind, Kind::View);
    assert!(matches!(
        s.commit("V", "v", Labels::new()),
        Err(Error::FailedPrecondition(_))
    ));
    assert!(
        s.mounts("A").is_err(),
        "committed snapshots are not mounted directly"
    );
    assert_eq!(s.mounts("v").unwrap(), m);
}

fn remove_order(s: &dyn Snapshotter, _: &Path) {
    s.prepare("a", None, Labels::new()).unwrap();
    s.commit("A", "a", Labels::new()).unwrap();
    s.prepare("b", Some("A"), Labels::new()).unwrap();
    assert!(matches!(s.remove("A"), Err(Error::FailedPrecondition(_))));
    s.remove("b").unwrap();
    s.remove("A").unwrap();
    assert!(matches!(s.remove("A"), Err(Error::NotFound(_))));
}

fn labels_case(s: &dyn Snapshotter, _: &Path) {
    s.prepare("a", None, labels(&[("x", "1"), ("y", "2")]))
        .unwrap();
    let mut info = s.stat("a").unwrap();
    info.labels = labels(&[("x", "9")]);
    let got = s
        .update(info.clone(), &["labels.x".into(), "labels.y".into()])
        .unwrap();
    assert_eq!(got.labels, labels(&[("x", "9")]));
    assert!(s.update(info, &["parent".into()]).is_err());
    s.commit("A", "a", labels(&[("z", "3")])).unwrap();
    assert_eq!(
        s.stat("A").unwrap().labels,
        labels(&[("x", "9"), ("z", "3")])
    );
}

fn usage(s: &dyn Snapshotter, _: &Path) {
    let m = s.prepare("a", None, Labels::new()).unwrap();
    with_mounted(&m, |d| {
        std::fs::write(d.join("big"), vec![1u8; 1 << 20]).unwrap()
    });
    let u = s.usage("a").unwrap();
    assert!(u.size >= 1 << 20, "{u:?}");
    assert!(u.inodes >= 1, "{u:?}");
}

fn errors(s: &dyn Snapshotter, _: &Path) {
    s.prepare("a", None, Labels::new()).unwrap();
    assert!(matches!(
        s.prepare("a", None, Labels::new()),
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        s.prepare("b", Some("a"), Labels::new()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        s.prepare("c", Some("missing"), Labels::new()),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        s.prepare("", None, Labels::new()),
        Err(Error::InvalidArgument(_))
    ));
    s.prepare("with space and / slash", None, Labels::new())
        .unwrap();
    s.commit("A", "a", Labels::new()).unwrap();
    s.prepare("d", None, Labels::new()).unwrap();
    assert!(matches!(
        s.commit("A", "d", Labels::new()),
        Err(Error::AlreadyExists(_))
    ));
    assert!(
        s.stat("d").is_ok(),
        "a refused commit leaves the snapshot active"
    );
}

fn cleanup(s: &dyn Snapshotter, root: &Path) {
    s.prepare("a", None, Labels::new()).unwrap();
    let orphan = root.join("snapshots/424242");
    std::fs::create_dir_all(orphan.join("fs/deep")).unwrap();
    let half = root.join("snapshots/new-deadbeef");
    std::fs::create_dir_all(&half).unwrap();
    s.cleanup().unwrap();
    assert!(!orphan.exists() && !half.exists());
    assert!(s.mounts("a").is_ok());
    let count = std::fs::read_dir(root.join("snapshots")).unwrap().count();
    assert_eq!(count, 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::FsSnapshotter;

    fn require_root() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "the conformance suite mounts; run as root");
    }

    #[test]
    fn overlayfs_conforms() {
        require_root();
        run(&|root| Box::new(FsSnapshotter::open(root, crate::overlay::Overlay).unwrap()));
    }

    #[test]
    fn native_conforms() {
        require_root();
        run(&|root| Box::new(FsSnapshotter::open(root, crate::native::Native).unwrap()));
    }
}
