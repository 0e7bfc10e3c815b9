//! Volumes with real containers: named volumes outlive containers and daemon restarts, a
//! volume in use cannot be removed (also after a restart), image VOLUME entries become
//! anonymous volumes seeded from the image and confined to it, and the API's errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::oci::{self, Entry};
use berth_tests::{ok, stderr, Daemon};

const IMAGE: &str = "test.local/vol:latest";

/// busybox plus /seed/hello.txt and /link -> /etc, with VOLUME /seed and /link.
fn daemon_with_image() -> (Daemon, tempfile::TempDir) {
    let d = Daemon::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let lay = work.path().join("layout");
    let extra = oci::layer(&[
        Entry::Dir("seed", 0o755),
        Entry::File("seed/hello.txt", b"seeded from the image\n", 0o644),
        Entry::Symlink("link", "/etc"),
    ]);
    oci::layout_with(
        &lay,
        "latest",
        &[oci::busybox_layer(), extra],
        serde_json::json!({
            "Cmd": ["/bin/sh"], "Env": ["PATH=/bin"],
            "Volumes": {"/seed": {}, "/link": {}},
        }),
    );
    let archive = work.path().join("vol.tar");
    oci::archive(&lay, &archive);
    ok(&d.berth(
        &[
            "images",
            "import",
            "--no-unpack",
            "--base-name",
            "test.local/vol",
            archive.to_str().unwrap(),
        ],
        None,
    ));
    (d, work)
}

#[test]
fn named_volumes_outlive_containers_and_restarts() {
    let (mut d, _w) = daemon_with_image();
    ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            "-v",
            "data:/data",
            IMAGE,
            "v1",
            "sh",
            "-c",
            "echo kept > /data/x",
        ],
        None,
    ));
    let ls = ok(&d.berth(&["volumes", "ls", "-q"], None));
    assert_eq!(
        ls.trim(),
        "data",
        "named kept, anonymous /seed and /link removed with --rm"
    );
    let out = ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            "--mount",
            "type=volume,src=data,dst=/d",
            IMAGE,
            "v2",
            "cat",
            "/d/x",
        ],
        None,
    ));
    assert_eq!(out, "kept\n");
    d.restart().unwrap();
    assert_eq!(ok(&d.berth(&["volumes", "ls", "-q"], None)).trim(), "data");
    let out = ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            "-v",
            "data:/d:ro",
            IMAGE,
            "v3",
            "cat",
            "/d/x",
        ],
        None,
    ));
    assert_eq!(out, "kept\n");
    let ro = d.berth(
        &[
            "containers",
            "run",
            "--rm",
            "-v",
            "data:/d:ro",
            IMAGE,
            "v4",
            "touch",
            "/d/y",
        ],
        None,
    );
    assert!(!ro.status.success(), "read-only volume was writable");

    // In use: refused, also after a restart; forced or freed, removed.
    ok(&d.berth(
        &[
            "containers",
            "run",
            "-d",
            "-v",
            "data:/data",
            IMAGE,
            "v5",
            "sleep",
            "300",
        ],
        None,
    ));
    let busy = d.berth(&["volumes", "rm", "data"], None);
    assert!(!busy.status.success());
    assert!(
        stderr(&busy).contains("in use by container(s) v5"),
        "{}",
        stderr(&busy)
    );
    d.restart().unwrap();
    let busy = d.berth(&["volumes", "rm", "data"], None);
    assert!(stderr(&busy).contains("v5"), "{}", stderr(&busy));
    let inspect = ok(&d.berth(&["volumes", "inspect", "data"], None));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["used_by"][0], "v5");
    assert_eq!(v[0]["size"], 5, "{inspect}");
    let mountpoint = v[0]["mountpoint"].as_str().unwrap().to_string();
    assert!(
        mountpoint.starts_with(d.root().to_str().unwrap()),
        "{mountpoint}"
    );
    ok(&d.berth(&["tasks", "kill", "-s", "KILL", "v5"], None));
    berth_tests::wait_stopped(&d);
    ok(&d.berth(&["tasks", "rm", "v5"], None));
    ok(&d.berth(&["containers", "rm", "v5"], None));
    // Removing the container left the named volume (and its data) alone.
    assert!(std::path::Path::new(&mountpoint).join("x").exists());
    ok(&d.berth(&["volumes", "rm", "data"], None));
    assert!(!std::path::Path::new(&mountpoint).exists());
}

#[test]
fn image_volumes_are_seeded_from_the_image_and_confined_to_it() {
    let (d, _w) = daemon_with_image();
    let out = ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            IMAGE,
            "s1",
            "sh",
            "-c",
            "cat /seed/hello.txt; ls /link",
        ],
        None,
    ));
    assert!(out.contains("seeded from the image"), "{out}");
    // /link -> /etc resolves inside the image: its passwd and group, never the host's shadow.
    assert!(out.contains("passwd"), "{out}");
    assert!(
        !out.contains("shadow"),
        "host files leaked into a volume: {out}"
    );
    assert!(ok(&d.berth(&["volumes", "ls", "-q"], None))
        .trim()
        .is_empty());
    // Without --rm the anonymous volumes stay until pruned.
    ok(&d.berth(&["containers", "run", IMAGE, "s2", "true"], None));
    let anon = ok(&d.berth(&["volumes", "ls", "-q", "anonymous==true"], None));
    assert_eq!(anon.lines().count(), 2, "{anon}");
    let pruned = ok(&d.berth(&["volumes", "prune"], None));
    assert!(
        pruned.lines().count() <= 1,
        "in-use volumes pruned: {pruned}"
    );
    ok(&d.berth(&["tasks", "rm", "s2"], None));
    ok(&d.berth(&["containers", "rm", "s2"], None));
    let pruned = ok(&d.berth(&["volumes", "prune"], None));
    assert!(pruned.contains("reclaimed"), "{pruned}");
    assert!(ok(&d.berth(&["volumes", "ls", "-q"], None))
        .trim()
        .is_empty());
}

#[test]
fn volume_api_errors_are_clear() {
    let d = Daemon::start().unwrap();
    let bad = d.berth(&["volumes", "create", "../escape"], None);
    assert!(stderr(&bad).contains("invalid"), "{}", stderr(&bad));
    ok(&d.berth(&["volumes", "create", "-l", "team=a", "keep"], None));
    let dup = d.berth(&["volumes", "create", "keep"], None);
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));
    let missing = d.berth(&["volumes", "rm", "nope"], None);
    assert!(
        stderr(&missing).contains("not found"),
        "{}",
        stderr(&missing)
    );
    let anon = ok(&d.berth(&["volumes", "create"], None));
    assert_eq!(anon.trim().len(), 64);
    let labelled = ok(&d.berth(&["volumes", "ls", "-q", "labels.team==a"], None));
    assert_eq!(labelled.trim(), "keep");
    // prune: anonymous only; --all: named too.
    let p = ok(&d.berth(&["volumes", "prune"], None));
    assert!(p.contains(anon.trim()) && !p.contains("keep"), "{p}");
    let p = ok(&d.berth(&["volumes", "prune", "--all"], None));
    assert!(p.contains("keep"), "{p}");
    // A namespace with a volume cannot be removed.
    ok(&d.berth(&["-n", "other", "volumes", "create", "v"], None));
    let ns = d.berth(&["namespaces", "rm", "other"], None);
    assert!(stderr(&ns).contains("volumes"), "{}", stderr(&ns));
}
