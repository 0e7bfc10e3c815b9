//! berth's own CLI against a real daemon.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{ok, sha256, Daemon};

#[test]
fn cli_namespaces_content_images_leases() {
    let d = Daemon::start().unwrap();
    ok(&d.berth(&["namespaces", "create", "cli-ns", "k=v"], None));
    let ls = ok(&d.berth(&["namespaces", "ls"], None));
    assert!(ls.lines().next().unwrap().starts_with("NAME"), "{ls}");
    assert!(ls.contains("cli-ns") && ls.contains("k=v"), "{ls}");
    let json = ok(&d.berth(&["namespaces", "ls", "--format", "json"], None));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["name"], "cli-ns");

    let data = b"cli blob".to_vec();
    // Referenced by nothing, so a root for garbage collection.
    let digest = ok(&d.berth(
        &[
            "-n",
            "cli-ns",
            "content",
            "ingest",
            "r1",
            "--label",
            "containerd.io/gc.root=cli",
        ],
        Some(&data),
    ));
    assert_eq!(digest.trim(), sha256(&data));
    let q = ok(&d.berth(&["-n", "cli-ns", "content", "ls", "-q"], None));
    assert_eq!(q.trim(), sha256(&data));
    let got = d.berth(&["-n", "cli-ns", "content", "get", digest.trim()], None);
    assert_eq!(got.stdout, data);
    ok(&d.berth(
        &["-n", "cli-ns", "content", "label", digest.trim(), "x=y"],
        None,
    ));
    assert!(ok(&d.berth(&["-n", "cli-ns", "content", "ls"], None)).contains("x=y"));

    let lease = ok(&d.berth(&["leases", "create", "--id", "l1", "--expires", "1h"], None));
    assert_eq!(lease.trim(), "l1");
    assert!(ok(&d.berth(&["leases", "ls"], None)).contains("containerd.io/gc.expire"));
    ok(&d.berth(&["leases", "rm", "l1"], None));

    // Refusals are clear and exit non-zero.
    let rm = d.berth(&["namespaces", "rm", "cli-ns"], None);
    assert!(!rm.status.success());
    assert!(String::from_utf8_lossy(&rm.stderr).contains("must be empty"));
    let tag = d.berth(&["images", "tag", "missing", "other"], None);
    assert!(!tag.status.success());
    assert!(String::from_utf8_lossy(&tag.stderr).contains("not found"));

    ok(&d.berth(&["-n", "cli-ns", "content", "rm", digest.trim()], None));
    ok(&d.berth(&["namespaces", "rm", "cli-ns"], None));
}

#[test]
fn cli_explains_a_missing_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(berth_tests::bin("berth"))
        .arg("--address")
        .arg(dir.path().join("nothing.sock"))
        .arg("version")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is berthd running"), "{err}");
}

#[test]
fn cli_images_tag_and_label() {
    let d = Daemon::start().unwrap();
    // Make an image record with ctr-free means: a manifest blob plus Images.Create via tag.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = d.client().await.unwrap();
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":100},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1000}]}"#;
        let dg = c.ingest("m", &manifest[..], 0, None, Default::default()).await.unwrap();
        c.images()
            .create(berth_client::proto::images::CreateImageRequest {
                image: Some(berth_client::proto::images::Image {
                    name: "example.com/app:1".into(),
                    target: Some(berth_client::proto::types::Descriptor {
                        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                        digest: dg,
                        size: manifest.len() as i64,
                        annotations: Default::default(),
                    }),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    });
    ok(&d.berth(
        &["images", "tag", "example.com/app:1", "example.com/app:2"],
        None,
    ));
    let again = d.berth(
        &["images", "tag", "example.com/app:1", "example.com/app:2"],
        None,
    );
    assert!(!again.status.success());
    ok(&d.berth(
        &[
            "images",
            "tag",
            "--force",
            "example.com/app:1",
            "example.com/app:2",
        ],
        None,
    ));
    ok(&d.berth(&["images", "label", "example.com/app:2", "team=x"], None));
    let ls = ok(&d.berth(&["images", "ls"], None));
    assert!(
        ls.contains("example.com/app:2") && ls.contains("team=x"),
        "{ls}"
    );
    // Size sums manifest, config and layers.
    assert!(ls.contains("1.5 KiB"), "{ls}");
    let ctr_ls = ok(&d.ctr(&["images", "ls", "-q"]));
    assert!(ctr_ls.contains("example.com/app:1"), "{ctr_ls}");
    ok(&d.berth(&["images", "rm", "example.com/app:2"], None));
    assert!(!ok(&d.berth(&["images", "ls", "-q"], None)).contains("app:2"));
}

#[test]
fn completions_and_man_pages_come_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    // No berthd anywhere: these come from the CLI definition alone.
    let run = |bin: &str, args: &[&str]| -> String {
        let out = std::process::Command::new(berth_tests::bin(bin))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{bin} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let script = run(
        "berth",
        &["--address", "/nonexistent/berth.sock", "completion", "bash"],
    );
    assert!(
        script.contains("_berth()") && script.contains("complete -F"),
        "{script}"
    );
    run(
        "berth",
        &[
            "--address",
            "/nonexistent/berth.sock",
            "man",
            dir.path().to_str().unwrap(),
        ],
    );
    for page in ["berth.1", "berth-run.1", "berth-images-pull.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}: {text}");
    }
    assert!(run("berthd", &["completion", "fish"]).contains("complete -c berthd"));
}
