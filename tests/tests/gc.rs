//! Garbage collection: removing an image collects what only it held (content and
//! snapshots) and keeps what another image, a container or a lease still needs; expired
//! leases go with what they held.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_client::proto::leases::{CreateRequest, DeleteRequest};
use berth_tests::oci::{self, Entry, Registry};
use berth_tests::{ok, Daemon};
use std::collections::HashMap;

fn pushed(reg: &Registry, repo: &str, marker: &str) -> (tempfile::TempDir, oci::Built, String) {
    let work = tempfile::tempdir().unwrap();
    let extra = oci::layer(&[
        Entry::Dir("etc", 0o755),
        Entry::File("etc/marker", marker.as_bytes(), 0o644),
    ]);
    let built = oci::layout(
        &work.path().join("layout"),
        "v1",
        &[oci::busybox_layer(), extra],
    );
    let reference = reg.push(&work.path().join("layout"), "v1", repo).unwrap();
    (work, built, reference)
}

fn lines(out: String) -> Vec<String> {
    out.lines().map(str::to_string).collect()
}

#[test]
fn removing_images_collects_only_what_nothing_else_needs() {
    let d = Daemon::start().unwrap();
    let reg = Registry::start().unwrap();
    let (_wa, a, ra) = pushed(&reg, "gc/a", "a");
    let (_wb, b, rb) = pushed(&reg, "gc/b", "b");
    ok(&d.berth(&["images", "pull", "--plain-http", &ra], None));
    ok(&d.berth(&["images", "pull", "--plain-http", &rb], None));
    let before = lines(ok(&d.berth(&["content", "ls", "-q"], None)));
    assert_eq!(before.len(), 7, "busybox layer shared: {before:?}");

    ok(&d.berth(&["images", "rm", "--sync", &ra], None));
    let content = lines(ok(&d.berth(&["content", "ls", "-q"], None)));
    assert_eq!(
        content.len(),
        4,
        "a's manifest, config and layer go: {content:?}"
    );
    let snaps = ok(&d.berth(&["snapshots", "ls", "-q"], None));
    assert!(!snaps.contains(&a.chain_ids[1]), "{snaps}");
    assert!(
        snaps.contains(&b.chain_ids[0]) && snaps.contains(&b.chain_ids[1]),
        "{snaps}"
    );
    let marker = ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            &rb,
            "gc-b",
            "cat",
            "/etc/marker",
        ],
        None,
    ));
    assert_eq!(marker, "b");

    // A container keeps its snapshot and the layers under it, not the image's content.
    ok(&d.berth(
        &["containers", "run", "-d", &rb, "keeper", "sleep", "300"],
        None,
    ));
    ok(&d.berth(&["images", "rm", "--sync", &rb], None));
    assert!(ok(&d.berth(&["content", "ls", "-q"], None))
        .trim()
        .is_empty());
    let snaps = ok(&d.berth(&["snapshots", "ls", "-q"], None));
    assert!(
        snaps.contains("keeper") && snaps.contains(&b.chain_ids[1]),
        "{snaps}"
    );
    let ps = ok(&d.berth(&["tasks", "ps", "keeper"], None));
    assert!(ps.lines().count() >= 2, "{ps}");
    ok(&d.berth(&["tasks", "kill", "-s", "KILL", "keeper"], None));
    berth_tests::wait_stopped(&d);
    ok(&d.berth(&["tasks", "rm", "keeper"], None));
    // Removing the container (and its snapshot) asks for a collection in the background.
    ok(&d.berth(&["containers", "rm", "keeper"], None));
    let mut left = String::new();
    for _ in 0..50 {
        left = ok(&d.berth(&["snapshots", "ls", "-q"], None));
        if left.trim().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(left.trim().is_empty(), "{left}");
}

#[tokio::test]
async fn leases_protect_until_they_end_or_expire() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let lease = |id: &str, labels: HashMap<String, String>| CreateRequest {
        id: id.to_string(),
        labels,
    };
    c.leases()
        .create(lease("keep", HashMap::new()))
        .await
        .unwrap();
    c.leases()
        .create(lease(
            "old",
            HashMap::from([(
                "containerd.io/gc.expire".to_string(),
                "2020-01-01T00:00:00Z".to_string(),
            )]),
        ))
        .await
        .unwrap();
    let kept = c
        .with_lease(Some("keep"))
        .unwrap()
        .ingest("k", &b"kept by a lease"[..], 15, None, HashMap::new())
        .await
        .unwrap();
    let expired = c
        .with_lease(Some("old"))
        .unwrap()
        .ingest(
            "o",
            &b"held by an expired lease"[..],
            24,
            None,
            HashMap::new(),
        )
        .await
        .unwrap();
    let loose = c
        .ingest("l", &b"nobody holds this"[..], 17, None, HashMap::new())
        .await
        .unwrap();
    // A synchronous delete of some other lease runs a collection.
    c.leases()
        .create(lease("trigger", HashMap::new()))
        .await
        .unwrap();
    c.leases()
        .delete(DeleteRequest {
            id: "trigger".into(),
            sync: true,
        })
        .await
        .unwrap();
    let content = ok(&d.berth(&["content", "ls", "-q"], None));
    assert!(content.contains(&kept), "{content}");
    assert!(
        !content.contains(&expired) && !content.contains(&loose),
        "{content}"
    );
    let leases = ok(&d.berth(&["leases", "ls", "-q"], None));
    assert!(
        leases.contains("keep") && !leases.contains("old"),
        "{leases}"
    );
    c.leases()
        .delete(DeleteRequest {
            id: "keep".into(),
            sync: true,
        })
        .await
        .unwrap();
    assert!(ok(&d.berth(&["content", "ls", "-q"], None))
        .trim()
        .is_empty());
}

/// An unpack interrupted by a daemon crash leaves its active `extract-*` snapshot; the
/// collection at the next start takes it, and leaves every other active snapshot alone.
#[test]
fn snapshots_of_interrupted_unpacks_go_at_the_next_start() {
    let mut d = Daemon::start().unwrap();
    for key in ["extract-1700000000-abc sha256:0123", "kept-active"] {
        ok(&d.berth(&["snapshots", "prepare", key], None));
    }
    d.kill().unwrap();
    d.restart().unwrap();
    let mut left = String::new();
    for _ in 0..100 {
        left = ok(&d.berth(&["snapshots", "ls", "-q"], None));
        if !left.contains("extract-") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!left.contains("extract-"), "{left}");
    assert!(left.contains("kept-active"), "{left}");
}

async fn plain_lease(c: &berth_client::Client, id: &str) {
    c.leases()
        .create(CreateRequest {
            id: id.to_string(),
            labels: HashMap::new(),
        })
        .await
        .unwrap();
}

/// Collections running back to back while the same bytes are written again and again, each
/// time under a fresh lease that ends right after: a blob found on disk and recorded in the
/// writer's lease is never swept between the two steps (a build's context went missing so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_never_races_a_collection() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut runs = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("trigger-{runs}");
                plain_lease(&c, &id).await;
                c.leases()
                    .delete(DeleteRequest { id, sync: true })
                    .await
                    .unwrap();
                runs += 1;
            }
            runs
        })
    };
    let data = b"the same context, sent again".repeat(64);
    for round in 0..300 {
        let id = format!("writer-{round}");
        plain_lease(&c, &id).await;
        let leased = c.with_lease(Some(&id)).unwrap();
        let digest = leased
            .ingest(
                &format!("ctx-{round}"),
                &data[..],
                data.len() as i64,
                None,
                HashMap::new(),
            )
            .await
            .unwrap();
        let back = leased.read_blob(&digest, 0, 0).await;
        assert!(
            back.as_ref().is_ok_and(|b| b == &data),
            "round {round}: {digest} is gone although lease {id} holds it: {:?}",
            back.err()
        );
        c.leases()
            .delete(DeleteRequest { id, sync: false })
            .await
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = collector.await.unwrap();
    assert!(runs > 10, "only {runs} collections ran beside the writes");
}

/// Runs a collection now: a synchronous delete of a lease made for the purpose.
fn collect(d: &Daemon) {
    ok(&d.berth(&["leases", "create", "-i", "gc-trigger"], None));
    ok(&d.berth(&["leases", "rm", "--sync", "gc-trigger"], None));
}

/// The content records, digest -> labels.
fn content_labels(d: &Daemon) -> HashMap<String, HashMap<String, String>> {
    let out = ok(&d.berth(&["content", "ls", "--format", "json"], None));
    let mut all = HashMap::new();
    for v in serde_json::Deserializer::from_str(&out).into_iter::<serde_json::Value>() {
        let rows = match v.unwrap() {
            serde_json::Value::Array(rows) => rows,
            one => vec![one],
        };
        for r in rows {
            let labels = r["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            all.insert(r["digest"].as_str().unwrap().to_string(), labels);
        }
    }
    all
}

/// containerd's discard of unpacked layers (`WithChildLabelMap(ChildGCLabelsFilterLayers)`,
/// the CRI's `discard_unpacked_layers`): once the manifest no longer names its layers, the
/// collector takes the layer blobs, and the image still runs from its snapshots (the config
/// keeps them).
#[test]
fn layers_a_client_discards_after_unpacking_are_collected() {
    let d = Daemon::start().unwrap();
    let reg = Registry::start().unwrap();
    let (_w, built, reference) = pushed(&reg, "gc/discard", "discarded");
    ok(&d.berth(&["images", "pull", "--plain-http", &reference], None));
    let labels = content_labels(&d);
    let manifest = &labels[&built.manifest_digest];
    let layers: Vec<String> = manifest
        .iter()
        .filter(|(k, _)| k.starts_with("containerd.io/gc.ref.content.l."))
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(layers.len(), 2, "{manifest:?}");
    for key in manifest
        .keys()
        .filter(|k| k.starts_with("containerd.io/gc.ref.content.l."))
    {
        ok(&d.berth(
            &[
                "content",
                "label",
                &built.manifest_digest,
                &format!("{key}="),
            ],
            None,
        ));
    }
    collect(&d);
    let left = content_labels(&d);
    for l in &layers {
        assert!(
            !left.contains_key(l),
            "layer {l} must be collected: {left:?}"
        );
    }
    assert!(left.contains_key(&built.manifest_digest), "{left:?}");
    assert_eq!(left.len(), 2, "the manifest and its config stay: {left:?}");
    let snaps = ok(&d.berth(&["snapshots", "ls", "-q"], None));
    for chain in &built.chain_ids {
        assert!(snaps.contains(chain), "snapshot {chain} stays: {snaps}");
    }
    let marker = ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            &reference,
            "discard",
            "cat",
            "/etc/marker",
        ],
        None,
    ));
    assert_eq!(marker, "discarded");
}

/// What berth writes itself (an import here; pulls and builds likewise) carries the
/// references containerd's image handlers write, so the collector, which reads only labels,
/// keeps the image whole; a client cannot label what it never wrote.
#[test]
fn berth_labels_the_parts_of_what_it_imports() {
    let (d, _work) = berth_tests::daemon_with_busybox("test.local/gc");
    let labels = content_labels(&d);
    let named = |prefix: &str| {
        labels
            .values()
            .flat_map(|l| l.keys())
            .filter(|k| k.starts_with(prefix))
            .count()
    };
    assert!(
        named("containerd.io/gc.ref.content.m.") > 0,
        "the archive's index names its manifests: {labels:?}"
    );
    assert_eq!(
        named("containerd.io/gc.ref.content.config"),
        1,
        "{labels:?}"
    );
    assert_eq!(named("containerd.io/gc.ref.content.l."), 1, "{labels:?}");
    collect(&d);
    let kept = content_labels(&d);
    assert_eq!(kept.len(), 3, "manifest, config and layer stay: {kept:?}");
    let images = ok(&d.berth(&["images", "ls", "-q"], None));
    let name = images.lines().next().unwrap().to_string();
    let out = ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            &name,
            "imported",
            "echo",
            "whole",
        ],
        None,
    ));
    assert_eq!(out.trim(), "whole");
}

/// An image labelled `containerd.io/gc.expire` with a time past is no root: the collector
/// removes it with what only it held.
#[test]
fn expired_images_are_collected() {
    let (d, _work) = berth_tests::daemon_with_busybox("test.local/expiring");
    let name = ok(&d.berth(&["images", "ls", "-q"], None))
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(!content_labels(&d).is_empty());
    ok(&d.berth(
        &[
            "images",
            "label",
            &name,
            "containerd.io/gc.expire=2020-01-01T00:00:00Z",
        ],
        None,
    ));
    collect(&d);
    let images = ok(&d.berth(&["images", "ls", "-q"], None));
    assert!(!images.contains(&name), "{images}");
    assert!(content_labels(&d).is_empty());
}

/// Images an older berth imported carry no references (it read the documents instead): the
/// first collection after a start labels their parts, so an upgrade loses no layer.
#[test]
fn unlabelled_images_of_an_older_berth_are_labelled_at_start() {
    let (mut d, _work) = berth_tests::daemon_with_busybox("test.local/old");
    let labels = content_labels(&d);
    let (manifest, refs) = labels
        .iter()
        .find(|(_, l)| l.contains_key("containerd.io/gc.ref.content.config"))
        .map(|(m, l)| (m.clone(), l.clone()))
        .unwrap();
    for key in refs
        .keys()
        .filter(|k| k.starts_with("containerd.io/gc.ref."))
    {
        ok(&d.berth(&["content", "label", &manifest, &format!("{key}=")], None));
    }
    assert!(!content_labels(&d)[&manifest]
        .keys()
        .any(|k| k.starts_with("containerd.io/gc.ref.")));
    d.kill().unwrap();
    d.restart().unwrap();
    let mut now = HashMap::new();
    for _ in 0..100 {
        now = content_labels(&d)[&manifest].clone();
        if now.contains_key("containerd.io/gc.ref.content.config") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let wanted: HashMap<&String, &String> = refs
        .iter()
        .filter(|(k, _)| k.starts_with("containerd.io/gc.ref.content"))
        .collect();
    let got: HashMap<&String, &String> = now
        .iter()
        .filter(|(k, _)| k.starts_with("containerd.io/gc.ref.content"))
        .collect();
    assert_eq!(got, wanted);
    collect(&d);
    assert_eq!(
        content_labels(&d).len(),
        3,
        "manifest, config and layer stay"
    );
}
