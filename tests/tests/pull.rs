//! Server-side pull and push through the Transfer service, against a real docker-registry on
//! loopback: unpack while downloading, resume after dropped connections and a daemon
//! restart, a registry serving wrong bytes, basic auth, mirrors, and containerd's ctr pulling
//! what berth pushed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::oci::{self, Entry, Fault, Proxy, Registry};
use berth_tests::{ok, stderr, Daemon};
use std::path::{Path, PathBuf};

/// busybox plus a layer with /etc/motd and `big` bytes of noise in /data/blob.
fn image(dir: &Path, tag: &str, big: usize) -> oci::Built {
    let noise = oci::noise(big, 7);
    let extra = oci::layer(&[
        Entry::Dir("etc", 0o755),
        Entry::File("etc/motd", b"pulled by berth\n", 0o644),
        Entry::Dir("data", 0o755),
        Entry::File("data/blob", &noise, 0o644),
    ]);
    oci::layout(dir, tag, &[oci::busybox_layer(), extra])
}

fn pushed(reg: &Registry, repo: &str, big: usize) -> (tempfile::TempDir, oci::Built, String) {
    let work = tempfile::tempdir().unwrap();
    let built = image(&work.path().join("layout"), "v1", big);
    let reference = reg.push(&work.path().join("layout"), "v1", repo).unwrap();
    (work, built, reference)
}

/// Digest of layer `i` of the image in an OCI layout `image` wrote.
fn layer_digest(layout: &Path, i: usize) -> String {
    let read = |p: PathBuf| {
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).unwrap()).unwrap()
    };
    let index = read(layout.join("index.json"));
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = read(
        layout
            .join("blobs/sha256")
            .join(m.trim_start_matches("sha256:")),
    );
    manifest["layers"][i]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn pull_unpacks_runs_and_skips_what_is_present() {
    let d = Daemon::start().unwrap();
    let reg = Registry::start().unwrap();
    let (_w, built, reference) = pushed(&reg, "berth/app", 64 << 10);
    let out = ok(&d.berth(&["images", "pull", "--plain-http", &reference], None));
    assert!(out.contains("2 blobs fetched"), "{out}");
    // Non-terminal output is one line per state change.
    assert!(out.contains("downloading"), "{out}");
    let images = ok(&d.berth(&["images", "ls", "-q"], None));
    assert!(images.contains(&reference), "{images}");
    // Unpacked: the top snapshot is committed under its chain ID.
    let snaps = ok(&d.berth(&["snapshots", "ls"], None));
    assert!(snaps.contains(built.chain_ids.last().unwrap()), "{snaps}");
    let motd = ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            &reference,
            "pull-run",
            "cat",
            "/etc/motd",
        ],
        None,
    ));
    assert_eq!(motd, "pulled by berth\n");
    // Again: nothing is fetched or unpacked twice.
    let again = ok(&d.berth(&["images", "pull", "--plain-http", &reference], None));
    assert!(again.contains("0 blobs fetched"), "{again}");
    assert!(again.contains("2 already present"), "{again}");
    // Two pulls of one image at once both succeed.
    ok(&d.berth(&["images", "rm", &reference], None));
    let a = d.berth_spawn(&["images", "pull", "--plain-http", &reference]);
    let b = d.berth_spawn(&["images", "pull", "--plain-http", &reference]);
    ok(&a.wait_with_output().unwrap());
    ok(&b.wait_with_output().unwrap());
}

#[test]
fn pull_errors_are_clear() {
    let d = Daemon::start().unwrap();
    let reg = Registry::start().unwrap();
    let bad = d.berth(&["images", "pull", "--plain-http", "Not A Reference"], None);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("not a valid image reference"),
        "{}",
        stderr(&bad)
    );
    let missing = d.berth(
        &[
            "images",
            "pull",
            "--plain-http",
            &format!("{}/no/such:tag", reg.addr),
        ],
        None,
    );
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("not found") || stderr(&missing).contains("unknown"),
        "{}",
        stderr(&missing)
    );
    // HTTPS is the default: a plain-HTTP registry does not answer it.
    let tls = d.berth(
        &["images", "pull", &format!("{}/no/such:tag", reg.addr)],
        None,
    );
    assert!(!tls.status.success());
    ok(&d.berth(&["version"], None));
}

#[test]
fn pull_resumes_after_dropped_connections() {
    let d = Daemon::start().unwrap();
    let reg = Registry::start().unwrap();
    let (_w, built, _) = pushed(&reg, "berth/big", 4 << 20);
    // The proxy drops the first two connections that carry more than 1 MiB.
    let proxy = Proxy::start(&reg.addr, 1 << 20, 2, Fault::Cut).unwrap();
    let via = format!("{}/berth/big:v1", proxy.addr);
    let out = ok(&d.berth(&["images", "pull", "--plain-http", &via], None));
    assert_eq!(
        proxy.faults.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "{out}"
    );
    assert!(d.log_text().contains("resuming"), "{}", d.log_text());
    let snaps = ok(&d.berth(&["snapshots", "ls"], None));
    assert!(snaps.contains(built.chain_ids.last().unwrap()), "{snaps}");
}

#[test]
fn pull_resumes_after_a_daemon_restart() {
    let mut d = Daemon::start().unwrap();
    let reg = Registry::start().unwrap();
    let (_w, built, reference) = pushed(&reg, "berth/stall", 4 << 20);
    let proxy = Proxy::start(&reg.addr, 2 << 20, 100, Fault::Stall).unwrap();
    let via = format!("{}/berth/stall:v1", proxy.addr);
    let mut stuck = d.berth_spawn(&["images", "pull", "--plain-http", &via]);
    // Wait until the ingest holds part of the big layer, then kill the daemon.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let active = ok(&d.berth(&["content", "active", "--format", "json"], None));
        let partial = serde_json::from_str::<serde_json::Value>(&active)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .any(|s| {
                s["ref"].as_str().is_some_and(|r| r.starts_with("layer-"))
                    && s["offset"].as_i64().unwrap_or(0) > 1 << 20
            });
        if partial {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no partial ingest: {active}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    d.kill().unwrap();
    let _ = stuck.kill();
    let _ = stuck.wait();
    d.restart().unwrap();
    let out = ok(&d.berth(&["images", "pull", "--plain-http", &reference], None));
    assert!(
        d.log_text().contains("resuming download from byte"),
        "{out}\n{}",
        d.log_text()
    );
    let snaps = ok(&d.berth(&["snapshots", "ls"], None));
    assert!(snaps.contains(built.chain_ids.last().unwrap()), "{snaps}");
    let data = ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            &reference,
            "resumed-run",
            "wc",
            "-c",
            "/data/blob",
        ],
        None,
    ));
    assert!(data.contains(&(4u64 << 20).to_string()), "{data}");
}

#[test]
fn a_registry_serving_wrong_bytes_stores_nothing() {
    let d = Daemon::start().unwrap();
    let reg = Registry::start().unwrap();
    let (w, _built, reference) = pushed(&reg, "berth/evil", 256 << 10);
    // Damage the big layer inside the registry: same size, different bytes.
    let layer = layer_digest(&w.path().join("layout"), 1);
    let path = reg.blob_path(&layer);
    let original = std::fs::read(&path).unwrap();
    let mut evil = original.clone();
    let mid = evil.len() / 2;
    evil[mid] ^= 0xff;
    std::fs::write(&path, &evil).unwrap();

    let out = d.berth(&["images", "pull", "--plain-http", &reference], None);
    assert!(!out.status.success(), "pull of a damaged blob succeeded");
    assert!(stderr(&out).contains(&layer), "{}", stderr(&out));
    let content = ok(&d.berth(&["content", "ls", "-q"], None));
    assert!(!content.contains(&layer), "damaged blob stored: {content}");
    let images = ok(&d.berth(&["images", "ls", "-q"], None));
    assert!(!images.contains(&reference), "{images}");
    // The registry repaired: the same pull now works (no poisoned ingest left behind).
    std::fs::write(&path, &original).unwrap();
    ok(&d.berth(&["images", "pull", "--plain-http", &reference], None));
}

#[test]
fn push_and_pull_with_basic_auth_and_ctr_pulls_what_berth_pushed() {
    let d = Daemon::start().unwrap();
    let open = Registry::start().unwrap();
    let (_w, _built, reference) = pushed(&open, "berth/src", 32 << 10);
    ok(&d.berth(&["images", "pull", "--plain-http", &reference], None));

    let locked = Registry::start_with_auth("alice", "s3cret").unwrap();
    let target = format!("{}/team/app:v2", locked.addr);
    let anon = d.berth(
        &["images", "push", "--plain-http", &reference, &target],
        None,
    );
    assert!(!anon.status.success());
    assert!(stderr(&anon).contains("credentials"), "{}", stderr(&anon));
    let wrong = d.berth(
        &[
            "images",
            "push",
            "--plain-http",
            "--user",
            "alice:nope",
            &reference,
            &target,
        ],
        None,
    );
    assert!(!wrong.status.success(), "wrong password accepted");
    let push_args = [
        "images",
        "push",
        "--plain-http",
        "--user",
        "alice:s3cret",
        &reference,
        &target,
    ];
    let out = ok(&d.berth(&push_args, None));
    assert!(out.contains("pushed"), "{out}");
    // A second push skips every blob the registry has.
    let again = ok(&d.berth(&push_args, None));
    assert!(again.contains("0 blobs uploaded"), "{again}");

    // A fresh daemon: anonymous pull refused with a clear error, credentials work.
    let d2 = Daemon::start().unwrap();
    let refused = d2.berth(&["images", "pull", "--plain-http", &target], None);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("--user"), "{}", stderr(&refused));
    ok(&d2.berth(
        &[
            "images",
            "pull",
            "--plain-http",
            "-u",
            "alice:s3cret",
            &target,
        ],
        None,
    ));
    let motd = ok(&d2.berth(
        &[
            "containers",
            "run",
            "--rm",
            &target,
            "auth-run",
            "cat",
            "/etc/motd",
        ],
        None,
    ));
    assert_eq!(motd, "pulled by berth\n");

    // containerd's own client pulls what berth pushed.
    let d3 = Daemon::start().unwrap();
    ok(&d3.ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--user",
        "alice:s3cret",
        &target,
    ]));
}

#[test]
fn mirrors_serve_when_the_registry_is_down() {
    let reg = Registry::start().unwrap();
    let (_w, _built, _) = pushed(&reg, "library/app", 16 << 10);
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("berthd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[registry.hosts.\"127.0.0.1:9\"]\nmirrors = [\"{0}\"]\n[registry.hosts.\"{0}\"]\nplain_http = true\n",
            reg.addr
        ),
    )
    .unwrap();
    let cfg_path = cfg.clone();
    let d = Daemon::start_with(move |c| {
        c.arg("--config").arg(&cfg_path);
    })
    .unwrap();
    let out = ok(&d.berth(&["images", "pull", "127.0.0.1:9/library/app:v1"], None));
    assert!(out.contains("pulled"), "{out}");
}

#[test]
fn a_blob_corrupted_at_rest_is_repaired_by_a_pull() {
    let d = Daemon::start().unwrap();
    let reg = Registry::start().unwrap();
    let (w, _built, reference) = pushed(&reg, "berth/repair", 128 << 10);
    ok(&d.berth(&["images", "pull", "--plain-http", &reference], None));
    // Damage the big layer in berth's content store.
    let layer = layer_digest(&w.path().join("layout"), 1);
    let blob = d
        .root()
        .join("io.containerd.content.v1.content/blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    // Another namespace needs it unpacked: the damage is found, the blob fetched again.
    let out = ok(&d.berth(
        &["-n", "other", "images", "pull", "--plain-http", &reference],
        None,
    ));
    assert!(out.contains("pulled"), "{out}");
    assert!(d.log_text().contains("corrupted"), "{}", d.log_text());
    let motd = ok(&d.berth(
        &[
            "-n",
            "other",
            "containers",
            "run",
            "--rm",
            &reference,
            "repaired",
            "cat",
            "/etc/motd",
        ],
        None,
    ));
    assert_eq!(motd, "pulled by berth\n");
    assert_eq!(berth_tests::sha256(&std::fs::read(&blob).unwrap()), layer);
}
