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
    let marker = ok(&d.berth(&["run", "--rm", &rb, "gc-b", "cat", "/etc/marker"], None));
    assert_eq!(marker, "b");

    // A container keeps its snapshot and the layers under it, not the image's content.
    ok(&d.berth(&["run", "-d", &rb, "keeper", "sleep", "300"], None));
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
