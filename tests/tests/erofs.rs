//! The EROFS snapshotter through berthd: images unpacked into EROFS layer images, containers
//! run on them by berth's CLI and by Debian's ctr (its runc shim), a container's changes
//! committed and run again, hostile layers refused exactly as on overlayfs, and snapshots
//! removed leaving no image mounted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::oci::{self, Entry};
use berth_tests::{mount_points_under, ok, stderr, Daemon};
use std::path::{Path, PathBuf};

const SNAP: &str = "erofs";

fn erofs_root(d: &Daemon) -> PathBuf {
    d.root().join("io.containerd.snapshotter.v1.erofs")
}

/// The layer images the snapshotter holds.
fn layer_images(d: &Daemon) -> Vec<PathBuf> {
    let snaps = erofs_root(d).join("snapshots");
    let mut found: Vec<PathBuf> = std::fs::read_dir(snaps)
        .unwrap()
        .map(|e| e.unwrap().path().join("layer.erofs"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
}

/// Removes every snapshot, children before parents.
fn remove_all_snapshots(d: &Daemon) {
    for _ in 0..16 {
        let ls = ok(&d.ctr(&["snapshots", "--snapshotter", SNAP, "ls"]));
        let keys: Vec<&str> = ls
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        if keys.is_empty() {
            return;
        }
        for k in keys {
            let _ = d.ctr(&["snapshots", "--snapshotter", SNAP, "rm", k]);
        }
    }
    panic!("snapshots would not go");
}

fn import(d: &Daemon, archive: &Path, snapshotter: &str) -> std::process::Output {
    d.berth(
        &[
            "images",
            "import",
            "--snapshotter",
            snapshotter,
            "--base-name",
            "test.local/base",
            archive.to_str().unwrap(),
        ],
        None,
    )
}

fn run(d: &Daemon, image: &str, id: &str, cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["containers", "run", "--snapshotter", SNAP, image, id];
    args.extend(cmd);
    d.berth(&args, None)
}

#[test]
fn berth_runs_and_commits_containers_on_erofs() {
    let d = Daemon::start().unwrap();
    let (_w, archive) = oci::busybox_archive();
    ok(&import(&d, &archive, SNAP));
    assert_eq!(layer_images(&d).len(), 1, "one layer, one image");
    let out = ok(&run(
        &d,
        "test.local/base:latest",
        "hello",
        &["echo", "hi from erofs"],
    ));
    assert_eq!(out, "hi from erofs\n");
    let mounted = mount_points_under(&erofs_root(&d));
    assert!(!mounted.is_empty(), "the layer is mounted from its image");

    // A container's changes (a file added, one of the image's deleted) committed as a
    // layer of its own, which a container on erofs then runs on.
    ok(&run(
        &d,
        "test.local/base:latest",
        "changer",
        &["sh", "-c", "echo committed > /etc/motd2; rm /bin/ls"],
    ));
    ok(&d.berth(&["tasks", "rm", "changer"], None));
    ok(&d.berth(&["commit", "changer", "test.local/committed:v1"], None));
    let motd = ok(&run(
        &d,
        "test.local/committed:v1",
        "after1",
        &["cat", "/etc/motd2"],
    ));
    assert_eq!(motd, "committed\n");
    let gone = run(&d, "test.local/committed:v1", "after2", &["ls", "/bin/ls"]);
    assert!(!gone.status.success(), "the deleted file came back");
    assert_eq!(
        layer_images(&d).len(),
        2,
        "the committed layer is an image too"
    );

    // (A container whose command failed may be gone already.)
    let _ = d.berth(&["rm", "-f", "hello", "changer", "after1", "after2"], None);
    remove_all_snapshots(&d);
    assert_eq!(layer_images(&d), Vec::<PathBuf>::new());
    assert_eq!(mount_points_under(&erofs_root(&d)), Vec::<PathBuf>::new());
}

#[test]
fn ctr_runs_a_container_on_erofs() {
    let d = Daemon::start().unwrap();
    let (_w, archive) = oci::busybox_archive();
    ok(&d.ctr(&[
        "images",
        "import",
        "--snapshotter",
        SNAP,
        "--base-name",
        "test.local/base",
        archive.to_str().unwrap(),
    ]));
    let out = ok(&d.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        SNAP,
        "test.local/base:latest",
        "c1",
        "/bin/echo",
        "ctr on erofs",
    ]));
    assert_eq!(out.trim_end(), "ctr on erofs");
    assert_eq!(layer_images(&d).len(), 1);
}

/// The hostile layer of the overlayfs tests (a symlink out of the root, then a file through
/// it), imported into each snapshotter: the same refusal, nothing written outside, and on
/// erofs no layer image made.
#[test]
fn hostile_layers_are_refused_as_on_overlayfs() {
    let d = Daemon::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "secret").unwrap();
    let evil = oci::layer(&[
        Entry::Symlink("escape", outside.to_str().unwrap()),
        Entry::File("escape/secret", b"pwned", 0o644),
    ]);
    let layout = work.path().join("layout");
    oci::layout(&layout, "latest", &[evil]);
    let archive = work.path().join("evil.tar");
    oci::archive(&layout, &archive);
    let refusals: Vec<String> = ["overlayfs", SNAP]
        .iter()
        .map(|s| {
            let out = import(&d, &archive, s);
            assert!(!out.status.success(), "{s} took the hostile layer");
            assert_eq!(
                std::fs::read_to_string(outside.join("secret")).unwrap(),
                "secret"
            );
            stderr(&out).replace(s, "SNAPSHOTTER")
        })
        .collect();
    assert!(refusals[0].contains("escape/secret"), "{}", refusals[0]);
    assert_eq!(refusals[0], refusals[1]);
    assert_eq!(layer_images(&d), Vec::<PathBuf>::new());
    ok(&d.berth(&["version"], None));
}
