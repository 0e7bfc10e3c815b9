//! Layers into filesystems and back: ctr's import and pull unpacking through berthd's
//! Snapshots and Diff services, the snapshot API's rules, and the differ's round trip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_client::proto::content::InfoRequest;
use berth_client::proto::diff::{ApplyRequest, DiffRequest};
use berth_client::proto::snapshots::{
    CommitSnapshotRequest, ListSnapshotsRequest, MountsRequest, PrepareSnapshotRequest,
    RemoveSnapshotRequest, StatSnapshotRequest, UsageRequest, ViewSnapshotRequest,
};
use berth_client::proto::types::Descriptor;
use berth_tests::oci::{self, Entry, Mounted};
use berth_tests::{ok, Daemon};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use tokio_stream::StreamExt;
use tonic::Code;

/// Two layers: the second deletes a file, replaces a directory (opaque) and adds a file.
fn two_layers() -> Vec<Vec<u8>> {
    let l1 = oci::layer(&[
        Entry::Dir("etc", 0o755),
        Entry::File("etc/motd", b"hello", 0o644),
        Entry::File("etc/remove-me", b"x", 0o644),
        Entry::Dir("bin", 0o755),
        Entry::File("bin/tool", b"#!/bin/sh\n", 0o755),
        Entry::Dir("var/cache", 0o755),
        Entry::File("var/cache/old", b"old", 0o644),
        Entry::Symlink("etc/link", "motd"),
    ]);
    let l2 = oci::layer(&[
        Entry::Whiteout("etc/remove-me"),
        Entry::Dir("var/cache", 0o755),
        Entry::Opaque("var/cache"),
        Entry::File("var/cache/new", b"new", 0o644),
        Entry::File("etc/added", b"added", 0o600),
    ]);
    vec![l1, l2]
}

/// Mounts what ctr reports for `key` (ctr prints a mount command) at `target`.
fn ctr_mount(d: &Daemon, snapshotter: &str, key: &str, target: &Path) -> Mounted {
    std::fs::create_dir_all(target).unwrap();
    let cmd = ok(&d.ctr(&[
        "snapshots",
        "--snapshotter",
        snapshotter,
        "mounts",
        target.to_str().unwrap(),
        key,
    ]));
    let st = Command::new("sh").arg("-c").arg(&cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
    Mounted(target.to_path_buf())
}

fn check_tree(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::read_to_string(root.join("etc/motd")).unwrap(),
        "hello"
    );
    assert!(!root.join("etc/remove-me").exists(), "whiteout not applied");
    assert!(
        !root.join("var/cache/old").exists(),
        "opaque directory kept lower content"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("var/cache/new")).unwrap(),
        "new"
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/link")).unwrap(),
        Path::new("motd")
    );
    let mode = std::fs::metadata(root.join("bin/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let mode = std::fs::metadata(root.join("etc/added"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

fn import_and_check(snapshotter: &str) {
    let d = Daemon::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let built = oci::layout(&layout, "v1", &two_layers());
    let archive = work.path().join("image.tar");
    oci::archive(&layout, &archive);
    ok(&d.ctr(&[
        "images",
        "import",
        "--snapshotter",
        snapshotter,
        "--base-name",
        "test.local/two",
        archive.to_str().unwrap(),
    ]));
    let ls = ok(&d.ctr(&["snapshots", "--snapshotter", snapshotter, "ls"]));
    for chain in &built.chain_ids {
        assert!(ls.contains(chain.as_str()), "{chain} missing:\n{ls}");
    }
    assert_eq!(ls.matches("Committed").count(), 2, "{ls}");
    let top = built.chain_ids.last().unwrap();
    ok(&d.ctr(&[
        "snapshots",
        "--snapshotter",
        snapshotter,
        "prepare",
        "check",
        top,
    ]));
    {
        let _m = ctr_mount(&d, snapshotter, "check", &work.path().join("mnt"));
        check_tree(&work.path().join("mnt"));
    }
    // The config records the unpacked top snapshot for garbage collection, as clients expect.
    let content = ok(&d.ctr(&["content", "ls"]));
    assert!(
        content.contains(&format!(
            "containerd.io/gc.ref.snapshot.{snapshotter}={top}"
        )),
        "{content}"
    );
    assert!(
        content.contains(&format!("containerd.io/uncompressed={}", built.diff_ids[0])),
        "{content}"
    );
    ok(&d.ctr(&["snapshots", "--snapshotter", snapshotter, "rm", "check"]));
    // A parent with children cannot go.
    let rm = d.ctr(&[
        "snapshots",
        "--snapshotter",
        snapshotter,
        "rm",
        &built.chain_ids[0],
    ]);
    assert!(!rm.status.success());
}

#[test]
fn ctr_import_unpacks_with_overlayfs() {
    import_and_check("overlayfs");
}

#[test]
fn ctr_import_unpacks_with_native() {
    import_and_check("native");
}

/// Layers kept as EROFS images, stacked read-only under the overlay (tests/erofs.rs has more).
#[test]
fn ctr_import_unpacks_with_erofs() {
    import_and_check("erofs");
}

#[test]
fn ctr_pull_plain_http_from_a_loopback_registry() {
    let d = Daemon::start().unwrap();
    let reg = oci::Registry::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let built = oci::layout(&layout, "v1", &two_layers());
    let reference = reg.push(&layout, "v1", "berth/two").unwrap();
    ok(&d.ctr(&["images", "pull", "--plain-http", &reference]));
    let images = ok(&d.ctr(&["images", "ls", "-q"]));
    assert!(images.contains(&reference), "{images}");
    let top = built.chain_ids.last().unwrap();
    ok(&d.ctr(&["snapshots", "prepare", "pulled", top]));
    let _m = ctr_mount(&d, "overlayfs", "pulled", &work.path().join("mnt"));
    check_tree(&work.path().join("mnt"));
}

#[tokio::test]
async fn snapshot_api_rules_and_isolation() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let mut s = c.snapshots();
    let prep = |key: &str, parent: &str| PrepareSnapshotRequest {
        snapshotter: "overlayfs".into(),
        key: key.into(),
        parent: parent.into(),
        labels: HashMap::new(),
    };
    let mounts = s.prepare(prep("a", "")).await.unwrap().into_inner().mounts;
    assert_eq!(mounts[0].r#type, "bind");
    assert_eq!(
        s.prepare(prep("a", "")).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    assert_eq!(
        s.prepare(prep("b", "missing")).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        s.prepare(prep("b", "a")).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        s.prepare(prep("", "")).await.unwrap_err().code(),
        Code::InvalidArgument,
        "an empty key names no snapshot"
    );
    s.commit(CommitSnapshotRequest {
        snapshotter: "overlayfs".into(),
        name: "A".into(),
        key: "a".into(),
        labels: HashMap::new(),
    })
    .await
    .unwrap();
    let m = s.prepare(prep("b", "A")).await.unwrap().into_inner().mounts;
    assert_eq!(m[0].r#type, "overlay");
    let v = s
        .view(ViewSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: "v".into(),
            parent: "A".into(),
            labels: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert!(v[0].options.contains(&"ro".to_string()), "{v:?}");
    let e = s
        .remove(RemoveSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: "A".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = s
        .stat(StatSnapshotRequest {
            snapshotter: "zfs".into(),
            key: "A".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("overlayfs"), "{}", e.message());

    // Another namespace sees none of it, and may use the same names.
    let other = c.with_namespace("other").unwrap();
    let e = other
        .snapshots()
        .stat(StatSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: "A".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    other.snapshots().prepare(prep("a", "")).await.unwrap();
    let mut list = s
        .list(ListSnapshotsRequest {
            snapshotter: "overlayfs".into(),
            filters: vec!["kind==active".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<String> = list
        .next()
        .await
        .unwrap()
        .unwrap()
        .info
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["b"]);
    let u = s
        .usage(UsageRequest {
            snapshotter: "overlayfs".into(),
            key: "A".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((u.size, u.inodes), (0, 0), "an empty snapshot uses nothing");
    let m = s
        .mounts(MountsRequest {
            snapshotter: "overlayfs".into(),
            key: "b".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(m[0].r#type, "overlay");
}

#[tokio::test]
async fn diff_round_trip_and_corrupted_blob() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let layer = oci::gzip(&two_layers()[0]);
    let digest = c
        .ingest("l1", layer.as_slice(), 0, None, HashMap::new())
        .await
        .unwrap();
    let desc = Descriptor {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        digest: digest.clone(),
        size: layer.len() as i64,
        annotations: HashMap::new(),
    };
    let mut s = c.snapshots();
    let mounts = s
        .prepare(PrepareSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: "x".into(),
            parent: String::new(),
            labels: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let applied = c
        .diff()
        .apply(ApplyRequest {
            diff: Some(desc.clone()),
            mounts: mounts.clone(),
            payloads: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .applied
        .unwrap();
    assert_eq!(applied.digest, oci::sha256(&two_layers()[0]));
    assert_eq!(applied.media_type, "application/vnd.oci.image.layer.v1.tar");

    // Diff of the snapshot against nothing reproduces the same files in a new layer.
    let out = c
        .diff()
        .diff(DiffRequest {
            left: vec![],
            right: mounts.clone(),
            media_type: String::new(),
            r#ref: "diff-x".into(),
            labels: HashMap::from([("made-by".into(), "test".into())]),
        })
        .await
        .unwrap()
        .into_inner()
        .diff
        .unwrap();
    assert_eq!(
        out.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let info = c
        .content()
        .info(InfoRequest {
            digest: out.digest.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(info.labels["made-by"], "test");
    let raw = c.read_blob(&out.digest, 0, 0).await.unwrap();
    let mut plain = vec![];
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(raw.as_slice()),
        &mut plain,
    )
    .unwrap();
    assert_eq!(
        info.labels["containerd.io/uncompressed"],
        oci::sha256(&plain)
    );
    let names: Vec<String> = tar::Archive::new(plain.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.contains(&"etc/motd".to_string()), "{names:?}");

    // A blob corrupted at rest fails with a digest error, naming the layer.
    let blob = d
        .root()
        .join("io.containerd.content.v1.content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 9;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let mounts = s
        .prepare(PrepareSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: "y".into(),
            parent: String::new(),
            labels: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let e = c
        .diff()
        .apply(ApplyRequest {
            diff: Some(desc),
            mounts,
            payloads: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert!(e.message().contains(&digest), "{}", e.message());
    c.version().version(()).await.unwrap();
}

#[tokio::test]
async fn hostile_layer_through_the_api_changes_nothing_outside() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "secret").unwrap();
    let evil = oci::layer(&[
        Entry::Symlink("escape", outside.path().to_str().unwrap()),
        Entry::File("escape/secret", b"pwned", 0o644),
    ]);
    let layer = oci::gzip(&evil);
    let digest = c
        .ingest("evil", layer.as_slice(), 0, None, HashMap::new())
        .await
        .unwrap();
    let mounts = c
        .snapshots()
        .prepare(PrepareSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: "evil".into(),
            parent: String::new(),
            labels: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let e = c
        .diff()
        .apply(ApplyRequest {
            diff: Some(Descriptor {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                digest,
                size: layer.len() as i64,
                annotations: HashMap::new(),
            }),
            mounts,
            payloads: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("escape/secret"), "{}", e.message());
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret")).unwrap(),
        "secret"
    );
    c.version().version(()).await.unwrap();
}

fn import_no_unpack(d: &Daemon, work: &Path, layers: &[Vec<u8>], name: &str) -> oci::Built {
    let layout = work.join(format!("layout-{}", name.replace(['/', ':'], "_")));
    let built = oci::layout(&layout, "v1", layers);
    let archive = work.join("image.tar");
    oci::archive(&layout, &archive);
    ok(&d.ctr(&[
        "images",
        "import",
        "--no-unpack",
        "--base-name",
        name,
        archive.to_str().unwrap(),
    ]));
    built
}

#[test]
fn berth_unpacks_in_the_daemon() {
    let d = Daemon::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut layers = two_layers();
    // More layers than workers, so the parallel path stacks out-of-order completions.
    for i in 0..6 {
        let name = format!("extra/{i}");
        let body = format!("layer {i}");
        layers.push(oci::layer(&[Entry::File(&name, body.as_bytes(), 0o644)]));
    }
    let built = import_no_unpack(&d, work.path(), &layers, "test.local/many");
    for snapshotter in ["overlayfs", "native"] {
        let out = ok(&d.berth(
            &[
                "images",
                "unpack",
                "--snapshotter",
                snapshotter,
                "test.local/many:v1",
            ],
            None,
        ));
        assert!(out.contains("8 of 8 layers"), "{out}");
        let again = ok(&d.berth(
            &[
                "images",
                "unpack",
                "--snapshotter",
                snapshotter,
                "test.local/many:v1",
            ],
            None,
        ));
        assert!(again.contains("0 of 8 layers"), "{again}");
        let ls = ok(&d.berth(
            &[
                "snapshots",
                "--snapshotter",
                snapshotter,
                "ls",
                "--format",
                "json",
            ],
            None,
        ));
        let v: serde_json::Value = serde_json::from_str(&ls).unwrap();
        let top = built.chain_ids.last().unwrap();
        let entry = v
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["Name"] == top.as_str())
            .unwrap();
        assert_eq!(entry["Parent"], built.chain_ids[6].as_str());
        ok(&d.berth(
            &[
                "snapshots",
                "--snapshotter",
                snapshotter,
                "prepare",
                "c",
                top,
            ],
            None,
        ));
        let target = work.path().join(format!("mnt-{snapshotter}"));
        let _m = ctr_mount(&d, snapshotter, "c", &target);
        check_tree(&target);
        for i in 0..6 {
            assert_eq!(
                std::fs::read_to_string(target.join(format!("extra/{i}"))).unwrap(),
                format!("layer {i}")
            );
        }
    }
    let content = ok(&d.ctr(&["content", "ls"]));
    assert!(
        content.contains("containerd.io/gc.ref.snapshot.overlayfs="),
        "{content}"
    );
}

#[test]
fn unpack_refuses_a_layer_that_does_not_match_its_diff_id() {
    let d = Daemon::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let layers = two_layers();
    oci::layout(&layout, "v1", &layers);
    // Rewrite the config so it claims a different diffID for layer 0.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blobs = layout.join("blobs/sha256");
    let mdig = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&mdig)).unwrap()).unwrap();
    let cdig = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&cdig)).unwrap()).unwrap();
    config["rootfs"]["diff_ids"][0] = serde_json::json!(oci::sha256(b"not this layer"));
    let cbytes = config.to_string();
    let new_c = oci::sha256(cbytes.as_bytes());
    std::fs::write(blobs.join(new_c.trim_start_matches("sha256:")), &cbytes).unwrap();
    manifest["config"]["digest"] = serde_json::json!(new_c);
    manifest["config"]["size"] = serde_json::json!(cbytes.len());
    let mbytes = manifest.to_string();
    let new_m = oci::sha256(mbytes.as_bytes());
    std::fs::write(blobs.join(new_m.trim_start_matches("sha256:")), &mbytes).unwrap();
    let mut index = index;
    index["manifests"][0]["digest"] = serde_json::json!(new_m);
    index["manifests"][0]["size"] = serde_json::json!(mbytes.len());
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    let archive = work.path().join("bad.tar");
    oci::archive(&layout, &archive);
    ok(&d.ctr(&[
        "images",
        "import",
        "--no-unpack",
        "--base-name",
        "test.local/bad",
        archive.to_str().unwrap(),
    ]));
    let out = d.berth(&["images", "unpack", "test.local/bad:v1"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("inconsistent"), "{err}");
    let ls = ok(&d.berth(&["snapshots", "ls", "-q"], None));
    assert!(ls.trim().is_empty(), "half an unpack left behind: {ls}");
    let staged = std::fs::read_dir(
        d.root()
            .join("io.containerd.snapshotter.v1.overlayfs/snapshots"),
    )
    .unwrap()
    .count();
    assert_eq!(staged, 0, "staging directories left behind");
}

#[test]
fn cli_snapshot_commands() {
    let d = Daemon::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let built = import_no_unpack(&d, work.path(), &two_layers(), "test.local/cli");
    ok(&d.berth(&["images", "unpack", "test.local/cli:v1"], None));
    let top = built.chain_ids.last().unwrap().clone();
    let tree = ok(&d.berth(&["snapshots", "tree"], None));
    assert!(tree.contains(&format!("\\_ {top}")), "{tree}");
    let mounts = ok(&d.berth(
        &["snapshots", "prepare", "work", &top, "--target", "/x"],
        None,
    ));
    assert!(
        mounts.starts_with("mount -t overlay overlay /x -o"),
        "{mounts}"
    );
    let target = work.path().join("mnt");
    {
        let _m = ctr_mount(&d, "overlayfs", "work", &target);
        std::fs::write(target.join("etc/changed"), "yes").unwrap();
    }
    // Labelled as a root: an unreferenced blob is garbage any collection may take first.
    let digest = ok(&d.berth(
        &[
            "snapshots",
            "diff",
            "work",
            "--label",
            "containerd.io/gc.root=test",
        ],
        None,
    ));
    let content = ok(&d.berth(&["content", "ls"], None));
    assert!(content.contains(digest.trim()), "{content}");
    ok(&d.berth(&["snapshots", "label", "work", "purpose=test"], None));
    let info = ok(&d.berth(&["snapshots", "info", "work"], None));
    assert!(info.contains("\"purpose\": \"test\""), "{info}");
    let usage = ok(&d.berth(&["snapshots", "usage", "work"], None));
    assert!(usage.contains("work"), "{usage}");
    // Unreferenced, a committed snapshot is garbage a collection may take at any moment
    // (one is due after `snapshots diff` released its lease): keep it as a root.
    ok(&d.berth(
        &[
            "snapshots",
            "commit",
            "done",
            "work",
            "--label",
            "containerd.io/gc.root=test",
        ],
        None,
    ));
    let ls = ok(&d.berth(&["snapshots", "ls"], None));
    assert!(ls.contains("done") && !ls.contains("work "), "{ls}");
    ok(&d.berth(&["snapshots", "rm", "done"], None));
}

/// containerd's remapping labels (`WithRemapperLabels`, as its client suite's
/// TestIDMappedOverlay sets them): the overlay snapshot's own directory belongs to the mapped
/// root and its mounts carry the mappings for the mounter, which stacks the overlay on
/// idmapped layers (the mounting itself is checked in the snapshotters' and the shim's root
/// tests).
#[tokio::test]
async fn remapped_overlay_snapshots_belong_to_the_mapped_root() {
    use std::os::unix::fs::MetadataExt;
    let d = Daemon::start().unwrap();
    let _bb = berth_tests::busybox_everywhere(&d, "remap/busybox");
    let top = ok(&d.berth(&["snapshots", "ls", "-q"], None))
        .lines()
        .next()
        .unwrap()
        .to_string();
    let c = d.client().await.unwrap();
    let labels = HashMap::from([
        (
            "containerd.io/snapshot/uidmapping".to_string(),
            "0:33:100,100:333:65536".to_string(),
        ),
        (
            "containerd.io/snapshot/gidmapping".to_string(),
            "0:66:100,100:666:65536".to_string(),
        ),
    ]);
    let mounts = c
        .snapshots()
        .prepare(PrepareSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: "remapped".into(),
            parent: top,
            labels,
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].r#type, "overlay");
    let opts = &mounts[0].options;
    assert!(
        opts.contains(&"uidmap=0:33:100,100:333:65536".to_string())
            && opts.contains(&"gidmap=0:66:100,100:666:65536".to_string()),
        "{opts:?}"
    );
    let upper = opts
        .iter()
        .find_map(|o| o.strip_prefix("upperdir="))
        .unwrap();
    let meta = std::fs::metadata(upper).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (33, 66));
    let again = c
        .snapshots()
        .mounts(MountsRequest {
            snapshotter: "overlayfs".into(),
            key: "remapped".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(again, mounts);
    // Mappings that give container root no host id are refused.
    let e = c
        .snapshots()
        .prepare(PrepareSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: "no-root".into(),
            parent: String::new(),
            labels: HashMap::from([
                (
                    "containerd.io/snapshot/uidmapping".to_string(),
                    "1:33:10".to_string(),
                ),
                (
                    "containerd.io/snapshot/gidmapping".to_string(),
                    "1:33:10".to_string(),
                ),
            ]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
}
