//! Image archives both ways: berth imports what containerd's ctr exports and `docker save`
//! tarballs; ctr imports what berth exports; several images per archive; hostile archives
//! are refused with a clear error and leave nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::oci::{self, sha256};
use berth_tests::{ok, stderr, Daemon};
use std::path::Path;

/// A `docker save` tarball: two images sharing the busybox layer (the second through a
/// symlink, as docker writes it).
fn docker_save(out: &Path) {
    let layer = oci::busybox_layer();
    let diff = sha256(&layer);
    let config = |cmd: &str| {
        serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": [cmd], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff]},
        })
        .to_string()
    };
    let (c1, c2) = (config("/bin/sh"), config("/bin/true"));
    let (h1, h2) = (sha256(c1.as_bytes()), sha256(c2.as_bytes()));
    let (h1, h2) = (
        h1.trim_start_matches("sha256:"),
        h2.trim_start_matches("sha256:"),
    );
    let manifest = serde_json::json!([
        {"Config": format!("{h1}.json"), "RepoTags": ["busybox:saved"], "Layers": ["aaaa/layer.tar"]},
        {"Config": format!("{h2}.json"), "RepoTags": ["me/second:v2"], "Layers": ["bbbb/layer.tar"]},
    ])
    .to_string();
    let f = std::fs::File::create(out).unwrap();
    let mut b = tar::Builder::new(f);
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    };
    add(&format!("{h1}.json"), c1.as_bytes());
    add(&format!("{h2}.json"), c2.as_bytes());
    add("aaaa/layer.tar", &layer);
    add("manifest.json", manifest.as_bytes());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "bbbb/layer.tar", "../aaaa/layer.tar")
        .unwrap();
    b.finish().unwrap();
}

#[test]
fn ctr_export_imports_into_berth_and_berth_export_imports_into_ctr() {
    let (_w, busybox) = oci::busybox_archive();
    let work = tempfile::tempdir().unwrap();
    // containerd's client imports and exports against one daemon...
    let d1 = Daemon::start().unwrap();
    ok(&d1.ctr(&[
        "images",
        "import",
        "--base-name",
        "example.com/bb",
        busybox.to_str().unwrap(),
    ]));
    let from_ctr = work.path().join("from-ctr.tar");
    ok(&d1.ctr(&[
        "images",
        "export",
        from_ctr.to_str().unwrap(),
        "example.com/bb:latest",
    ]));
    // ...berth imports that, runs it, and exports it again...
    let d2 = Daemon::start().unwrap();
    let out = ok(&d2.berth(&["images", "import", from_ctr.to_str().unwrap()], None));
    assert!(out.contains("example.com/bb:latest"), "{out}");
    let echo = ok(&d2.berth(
        &[
            "containers",
            "run",
            "--rm",
            "example.com/bb:latest",
            "arch-run",
            "echo",
            "imported",
        ],
        None,
    ));
    assert_eq!(echo, "imported\n");
    let check = ok(&d2.berth(&["images", "check"], None));
    assert!(
        check.contains("complete") && check.contains("true"),
        "{check}"
    );
    let inspect = ok(&d2.berth(&["images", "inspect", "example.com/bb:latest"], None));
    assert!(inspect.contains("diff_ids"), "{inspect}");
    let from_berth = work.path().join("from-berth.tar");
    ok(&d2.berth(
        &[
            "images",
            "export",
            from_berth.to_str().unwrap(),
            "example.com/bb:latest",
        ],
        None,
    ));
    // ...and ctr imports berth's archive into a third daemon, which runs it.
    let d3 = Daemon::start().unwrap();
    ok(&d3.ctr(&["images", "import", from_berth.to_str().unwrap()]));
    let names = ok(&d3.ctr(&["images", "ls", "-q"]));
    assert!(names.contains("example.com/bb:latest"), "{names}");
    let echo = ok(&d3.berth(
        &[
            "containers",
            "run",
            "--rm",
            "example.com/bb:latest",
            "arch-run3",
            "echo",
            "round trip",
        ],
        None,
    ));
    assert_eq!(echo, "round trip\n");
}

#[test]
fn docker_save_archives_import_and_several_images_export_together() {
    let work = tempfile::tempdir().unwrap();
    let saved = work.path().join("saved.tar");
    docker_save(&saved);
    let d = Daemon::start().unwrap();
    let out = ok(&d.berth(&["images", "import", saved.to_str().unwrap()], None));
    assert!(out.contains("docker.io/library/busybox:saved"), "{out}");
    assert!(out.contains("docker.io/me/second:v2"), "{out}");
    let echo = ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            "busybox:saved",
            "saved-run",
            "echo",
            "docker",
        ],
        None,
    ));
    assert_eq!(echo, "docker\n");
    // Both images in one archive, read back by a fresh daemon.
    let both = work.path().join("both.tar");
    ok(&d.berth(
        &[
            "images",
            "export",
            both.to_str().unwrap(),
            "docker.io/library/busybox:saved",
            "docker.io/me/second:v2",
        ],
        None,
    ));
    let d2 = Daemon::start().unwrap();
    let out = ok(&d2.berth(
        &["images", "import", "--no-unpack", both.to_str().unwrap()],
        None,
    ));
    assert!(out.contains("imported 2 image(s)"), "{out}");
    let names = ok(&d2.berth(&["images", "ls", "-q"], None));
    assert!(
        names.contains("docker.io/me/second:v2") && names.contains("busybox:saved"),
        "{names}"
    );
}

#[test]
fn hostile_archives_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let d = Daemon::start().unwrap();
    // A blob whose bytes do not match its name.
    let lay = work.path().join("lay");
    let built = oci::layout(&lay, "v1", &[oci::busybox_layer()]);
    let blobs = lay.join("blobs/sha256");
    let victim = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::metadata(p).unwrap().len() > 100_000)
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let bad = work.path().join("bad.tar");
    oci::archive(&lay, &bad);
    let out = d.berth(
        &[
            "images",
            "import",
            "--base-name",
            "x/y",
            bad.to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success());
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
    assert!(ok(&d.berth(&["images", "ls", "-q"], None))
        .trim()
        .is_empty());
    assert!(!ok(&d.berth(&["content", "ls", "-q"], None)).contains(&name));
    let _ = built;
    // Compressed archives are read through their compression (the damage still found), and
    // docker manifests naming files that are not there are refused.
    let gz = work.path().join("x.tar.gz");
    std::fs::write(&gz, oci::gzip(&std::fs::read(&bad).unwrap())).unwrap();
    let out = d.berth(&["images", "import", gz.to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
    let (_w, good) = oci::busybox_archive();
    let good_gz = work.path().join("good.tar.gz");
    std::fs::write(&good_gz, oci::gzip(&std::fs::read(&good).unwrap())).unwrap();
    let out = ok(&d.berth(
        &[
            "-n",
            "gz",
            "images",
            "import",
            "--base-name",
            "test.local/gz",
            good_gz.to_str().unwrap(),
        ],
        None,
    ));
    assert!(out.contains("test.local/gz:latest imported"), "{out}");
    // An archive cut short inside a blob: said so, nothing named.
    let whole = std::fs::read(&good).unwrap();
    let cut = work.path().join("cut.tar");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let out = d.berth(
        &[
            "-n",
            "cut",
            "images",
            "import",
            "--base-name",
            "test.local/cut",
            cut.to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cut short"), "{}", stderr(&out));
    assert!(ok(&d.berth(&["-n", "cut", "images", "ls", "-q"], None))
        .trim()
        .is_empty());
    let lying = work.path().join("lying.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&lying).unwrap());
        let m = br#"[{"Config":"nope.json","RepoTags":["a:b"],"Layers":["../../etc/shadow"]}]"#;
        let mut h = tar::Header::new_gnu();
        h.set_size(m.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "manifest.json", &m[..]).unwrap();
        b.finish().unwrap();
    }
    let out = d.berth(&["images", "import", lying.to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("lacks"), "{}", stderr(&out));
    // A layout blob whose name is not a sha256 digest never becomes a content path.
    let misnamed = work.path().join("misnamed.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&misnamed).unwrap());
        for (name, data) in [
            ("index.json", &br#"{"schemaVersion":2,"manifests":[]}"#[..]),
            ("blobs/sha256/..%2f..%2fetc", &b"x"[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        }
        b.finish().unwrap();
    }
    let out = d.berth(&["images", "import", misnamed.to_str().unwrap()], None);
    assert!(
        stderr(&out).contains("not named by a sha256 digest"),
        "{}",
        stderr(&out)
    );
    ok(&d.berth(&["version"], None));
}

/// Two imports of one archive at once both succeed: the second waits for the first's
/// ingests instead of failing on their locked refs.
#[test]
fn concurrent_imports_of_one_archive_both_succeed() {
    let d = Daemon::start().unwrap();
    let (_w, busybox) = oci::busybox_archive();
    let path = busybox.to_str().unwrap();
    for round in 0..3 {
        let ns = format!("round{round}");
        let import = || {
            d.berth_spawn(&[
                "--namespace",
                &ns,
                "images",
                "import",
                "--no-unpack",
                "--base-name",
                "test.local/same",
                path,
            ])
        };
        let (a, b) = (import(), import());
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let ls = ok(&d.berth(&["--namespace", &ns, "images", "ls", "-q"], None));
        assert!(ls.contains("test.local/same"), "{ls}");
    }
}

/// An import records all its images or none: a refused name undoes the names before it, and
/// an index entry whose manifest is nowhere makes no image.
#[test]
fn imports_are_all_or_nothing() {
    let work = tempfile::tempdir().unwrap();
    let d = Daemon::start().unwrap();
    // A docker archive whose third name the daemon refuses (a control character).
    let layer = oci::busybox_layer();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
    })
    .to_string();
    let cfg_name = format!(
        "{}.json",
        sha256(config.as_bytes()).trim_start_matches("sha256:")
    );
    let manifest = serde_json::json!([{
        "Config": cfg_name, "Layers": ["l/layer.tar"],
        "RepoTags": ["first:a", "second:b", "third:bad\u{1}tag"],
    }])
    .to_string();
    let tags = work.path().join("tags.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&tags).unwrap());
        for (path, data) in [
            (cfg_name.as_str(), config.as_bytes()),
            ("l/layer.tar", layer.as_slice()),
            ("manifest.json", manifest.as_bytes()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, data).unwrap();
        }
        b.finish().unwrap();
    }
    let out = d.berth(
        &["images", "import", "--no-unpack", tags.to_str().unwrap()],
        None,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nothing was imported"),
        "{}",
        stderr(&out)
    );
    let ls = ok(&d.berth(&["images", "ls", "-q"], None));
    assert!(ls.trim().is_empty(), "{ls}");

    // An OCI layout whose index also names a manifest that exists nowhere.
    let lay = work.path().join("lay");
    oci::layout(&lay, "v1", &[oci::busybox_layer()]);
    let index_path = lay.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let ghost = format!("sha256:{}", "ab".repeat(32));
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": ghost, "size": 500,
            "annotations": {"io.containerd.image.name": "ghost:latest"},
        }));
    std::fs::write(&index_path, index.to_string()).unwrap();
    let ghostly = work.path().join("ghost.tar");
    oci::archive(&lay, &ghostly);
    let out = d.berth(
        &[
            "images",
            "import",
            "--no-unpack",
            "--base-name",
            "test.local/lay",
            ghostly.to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&ghost), "{}", stderr(&out));
    let ls = ok(&d.berth(&["images", "ls", "-q"], None));
    assert!(ls.trim().is_empty(), "{ls}");
}

/// Asks for an import of what `stream` carries, named under `prefix`.
async fn import_stream(
    c: &berth_client::Client,
    stream: &str,
    prefix: &str,
) -> Result<(), tonic::Status> {
    use berth_proto::transfer::TransferRequest;
    use berth_proto::types::transfer::{ImageImportStream, ImageReference, ImageStore};
    let store = ImageStore {
        extra_references: vec![ImageReference {
            name: prefix.into(),
            is_prefix: true,
            allow_overwrite: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    c.transfer()
        .transfer(TransferRequest {
            source: Some(berth_proto::to_any(&ImageImportStream {
                stream: stream.into(),
                ..Default::default()
            })),
            destination: Some(berth_proto::to_any(&store)),
            options: None,
        })
        .await
        .map(drop)
}

/// A stream opened the way containerd 2.x's client opens one: init, then the daemon's ack.
async fn open_stream(
    c: &berth_client::Client,
    id: &str,
) -> (
    tokio::sync::mpsc::Sender<prost_types::Any>,
    tonic::Streaming<prost_types::Any>,
) {
    use berth_proto::streaming::StreamInit;
    let (tx, out) = tokio::sync::mpsc::channel(16);
    tx.send(berth_proto::to_any(&StreamInit { id: id.into() }))
        .await
        .unwrap();
    let mut rx = c
        .streaming()
        .stream(tokio_stream::wrappers::ReceiverStream::new(out))
        .await
        .unwrap()
        .into_inner();
    rx.message().await.unwrap().expect("the stream's ack");
    (tx, rx)
}

/// containerd 2.x's `ctr images import/export` move archive bytes in Data messages of at most
/// 32 KiB, within 64 KiB windows granted again only once less than that is left. A client
/// doing exactly that imports and exports through berthd, and its export is, byte for byte,
/// the one `berth images export` writes.
#[tokio::test]
async fn archive_streams_keep_containerds_flow_control() {
    use berth_proto::transfer::TransferRequest;
    use berth_proto::types::transfer::{
        Data, ImageExportStream, ImageReference, ImageStore, WindowUpdate,
    };
    use prost::Message;
    const MAX_READ: usize = 32 << 10;
    const WINDOW: i32 = 64 << 10;
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let (_w, busybox) = oci::busybox_archive();
    let archive = std::fs::read(&busybox).unwrap();
    assert!(
        archive.len() > 4 * WINDOW as usize,
        "the archive spans many windows"
    );

    let (tx, mut rx) = open_stream(&c, "import-flow").await;
    let sender = tokio::spawn(async move {
        let (mut credit, mut rest) = (0i64, archive.as_slice());
        while !rest.is_empty() {
            while credit <= 0 {
                let m = rx.message().await.unwrap().expect("a window update");
                credit += i64::from(WindowUpdate::decode(m.value.as_slice()).unwrap().update);
            }
            let n = rest.len().min(MAX_READ).min(credit as usize);
            let data = Data {
                data: rest[..n].to_vec(),
            };
            tx.send(berth_proto::to_any(&data)).await.unwrap();
            credit -= n as i64;
            rest = &rest[n..];
        }
        rx
    });
    import_stream(&c, "import-flow", "test.local/flow")
        .await
        .unwrap();
    drop(sender.await.unwrap());
    let names = ok(&d.berth(&["images", "ls", "-q"], None));
    assert!(names.contains("test.local/flow:latest"), "{names}");

    let (tx, mut rx) = open_stream(&c, "export-flow").await;
    let receiver = tokio::spawn(async move {
        let (mut window, mut got) = (0i32, Vec::new());
        loop {
            if window < WINDOW {
                let _ = tx
                    .send(berth_proto::to_any(&WindowUpdate { update: WINDOW }))
                    .await;
                window += WINDOW;
            }
            let Some(m) = rx.message().await.unwrap() else {
                break;
            };
            let data = Data::decode(m.value.as_slice()).unwrap().data;
            assert!(
                data.len() <= window as usize,
                "the daemon sent beyond its window"
            );
            window -= data.len() as i32;
            got.extend(data);
        }
        got
    });
    let source = ImageStore {
        extra_references: vec![ImageReference {
            name: "test.local/flow:latest".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    c.transfer()
        .transfer(TransferRequest {
            source: Some(berth_proto::to_any(&source)),
            destination: Some(berth_proto::to_any(&ImageExportStream {
                stream: "export-flow".into(),
                ..Default::default()
            })),
            options: None,
        })
        .await
        .unwrap();
    let streamed = tokio::time::timeout(std::time::Duration::from_secs(30), receiver)
        .await
        .unwrap()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("berth.tar");
    ok(&d.berth(
        &[
            "images",
            "export",
            file.to_str().unwrap(),
            "test.local/flow:latest",
        ],
        None,
    ));
    assert!(
        streamed == std::fs::read(&file).unwrap(),
        "the two exports differ"
    );
}

/// An import stream that carries something other than Data (here a StreamInit) ends the
/// import with a clear error; nothing is named and the daemon keeps serving.
#[tokio::test]
async fn an_import_stream_carrying_other_messages_is_refused() {
    use berth_proto::streaming::StreamInit;
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let (tx, rx) = open_stream(&c, "import-odd").await;
    tx.send(berth_proto::to_any(&StreamInit { id: "x".into() }))
        .await
        .unwrap();
    let err = import_stream(&c, "import-odd", "test.local/odd")
        .await
        .unwrap_err();
    assert!(err.message().contains("not data"), "{err:?}");
    drop((tx, rx));
    assert!(ok(&d.berth(&["images", "ls", "-q"], None))
        .trim()
        .is_empty());
}

/// Writes a tar (gzip-compressed, so the file stays small) of `count` one-byte files, each
/// in a directory of its own as `docker save` lays out its layers (`<n>/layer.tar`): every
/// entry has a name an image archive may use, so only their number can refuse it.
fn flood(out: &Path, count: usize) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(out).unwrap(),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    for n in 0..count {
        h.set_path(format!("{n}/layer.tar")).unwrap();
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

/// An archive of 200,000 one-byte files is refused by its number of entries before any of
/// them becomes an ingest: quickly (berth once ingested 100,000 of them first, for minutes),
/// with an error that says why, nothing left behind, and the daemon still serving.
#[test]
fn an_archive_of_too_many_entries_is_refused_before_it_is_ingested() {
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("flood.tar.gz");
    flood(&archive, 200_000);
    let d = Daemon::start().unwrap();
    let started = std::time::Instant::now();
    let out = d.berth(
        &[
            "-n",
            "flood",
            "images",
            "import",
            "--base-name",
            "test.local/flood",
            archive.to_str().unwrap(),
        ],
        None,
    );
    let took = started.elapsed();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        took < std::time::Duration::from_secs(20),
        "refused only after {took:?}: {err}"
    );
    assert!(
        err.contains("more than") && err.contains("entries"),
        "the error names the bound: {err}"
    );
    for what in [
        &["images", "ls", "-q"][..],
        &["content", "ls", "-q"],
        &["content", "active"],
    ] {
        let mut args = vec!["-n", "flood"];
        args.extend(what);
        let listed = ok(&d.berth(&args, None));
        assert!(
            listed.lines().filter(|l| !l.starts_with("REF")).count() == 0,
            "{what:?} after the refused import: {listed}"
        );
    }
    // The daemon still serves, imports included.
    let (_w, good) = oci::busybox_archive();
    let out = ok(&d.berth(
        &[
            "-n",
            "flood",
            "images",
            "import",
            "--no-unpack",
            "--base-name",
            "test.local/after",
            good.to_str().unwrap(),
        ],
        None,
    ));
    assert!(out.contains("test.local/after:latest"), "{out}");
}

/// Adds a one-byte file at `path`.
fn add_byte(b: &mut tar::Builder<impl std::io::Write>, path: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, path, &b"x"[..]).unwrap();
}

/// Writes a tar holding one one-byte file at each of `paths`.
fn tar_of(out: &Path, paths: &[&str]) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    for path in paths {
        add_byte(&mut b, path);
    }
    b.finish().unwrap();
}

/// An error about a deeply nested path shows the path shortened (its first and last parts)
/// and keeps its reason, which a status message cut to its first KiB used to lose.
#[test]
fn an_error_about_a_deeply_nested_path_keeps_its_reason() {
    let work = tempfile::tempdir().unwrap();
    let d = Daemon::start().unwrap();
    let deep = format!("blobs/{}leaf", "nested/".repeat(400));
    let archive = work.path().join("deep.tar");
    tar_of(&archive, &["index.json", &deep]);
    let out = d.berth(&["images", "import", archive.to_str().unwrap()], None);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("is not named by a sha256 digest"),
        "the reason survives: {err}"
    );
    assert!(
        err.contains("blobs/") && err.contains("…") && err.contains("/leaf"),
        "{err}"
    );
    assert!(!err.contains("truncated") && err.len() < 1024, "{err}");
    assert!(ok(&d.berth(&["images", "ls", "-q"], None))
        .trim()
        .is_empty());
}

/// A file no image archive holds (outside blobs/, index.json, oci-layout, manifest.json,
/// repositories and docker's per-layer directories) refuses the archive before it is
/// ingested: an OCI layout carrying an extra file imports nothing.
#[test]
fn files_an_image_archive_cannot_hold_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let d = Daemon::start().unwrap();
    let lay = work.path().join("lay");
    oci::layout(&lay, "v1", &[oci::busybox_layer()]);
    let deep = format!("{}passwd", "etc/".repeat(300));
    for (n, stray) in ["etc/passwd", "notes.txt", deep.as_str()]
        .iter()
        .enumerate()
    {
        let archive = work.path().join(format!("stray{n}.tar"));
        {
            let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
            b.append_dir_all(".", &lay).unwrap();
            add_byte(&mut b, stray);
            b.finish().unwrap();
        }
        let out = d.berth(
            &[
                "images",
                "import",
                "--no-unpack",
                "--base-name",
                "test.local/stray",
                archive.to_str().unwrap(),
            ],
            None,
        );
        let err = stderr(&out);
        assert!(!out.status.success(), "{stray} was accepted");
        assert!(err.contains("cannot be part of an image archive"), "{err}");
        assert!(err.contains("passwd") || err.contains("notes.txt"), "{err}");
        assert!(ok(&d.berth(&["images", "ls", "-q"], None))
            .trim()
            .is_empty());
    }
}
