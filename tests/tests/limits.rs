//! `[limits]`: a layer that inflates past `max_layer_uncompressed_bytes` (a 10 MB gzip of
//! zeros that decodes to 10 GiB) stops the pull early with ResourceExhausted naming the
//! layer, the limit and the key to raise, and leaves no image and no snapshot; an image
//! below the limits pulls; `max_pull_uncompressed_bytes` bounds a pull's layers together;
//! SIGHUP puts new limits in force.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::oci::{self, Registry};
use berth_tests::{ok, stderr, Daemon};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// One gzip member holding `data`.
fn member(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A gzip'd tar layer of one file, `zeros`, of `members` x 64 MiB of zeros: gzip members
/// one after another, so a 10 MB blob decodes to 10 GiB without this test ever holding
/// it. Its diffID is not computed (the claim is never reached when the limit holds).
fn zero_bomb(members: u64) -> Vec<u8> {
    let chunk = 64 * MIB;
    let mut header = tar::Header::new_gnu();
    header.set_path("zeros").unwrap();
    header.set_size(members * chunk);
    header.set_mode(0o644);
    header.set_cksum();
    let mut blob = member(header.as_bytes());
    let zeros = member(&vec![0u8; chunk as usize]);
    for _ in 0..members {
        blob.extend_from_slice(&zeros);
    }
    blob.extend(member(&[0u8; 1024])); // the end-of-archive blocks
    blob
}

fn push(registry: &Registry, dir: &Path, repo: &str, layers: &[(Vec<u8>, String)]) -> String {
    let layout = dir.join(repo);
    oci::layout_gzipped(
        &layout,
        "v1",
        layers,
        serde_json::json!({"Cmd": ["/zeros"]}),
    );
    registry.push(&layout, "v1", repo).unwrap()
}

/// A layer of one file of `n` zero bytes, gzipped, with its true diffID.
fn zeros_layer(n: u64) -> (Vec<u8>, String) {
    let data = vec![0u8; n as usize];
    let tar = oci::layer(&[oci::Entry::File("zeros", &data, 0o644)]);
    (oci::gzip(&tar), oci::sha256(&tar))
}

fn write_limits(config: &Path, layer: u64, pull: u64) {
    std::fs::write(
        config,
        format!("[limits]\nmax_layer_uncompressed_bytes = {layer}\nmax_pull_uncompressed_bytes = {pull}\n"),
    )
    .unwrap();
}

/// Writes new limits, sends SIGHUP and waits for berthd to say it applied them.
fn reload(d: &Daemon, config: &Path, layer: u64, pull: u64) {
    let before = d.log_text().matches("limits reloaded").count();
    write_limits(config, layer, pull);
    // SAFETY: a signal to our own child by pid.
    unsafe { libc::kill(d.pid().unwrap() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.log_text().matches("limits reloaded").count() == before {
        assert!(Instant::now() < deadline, "no reload: {}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pull(d: &Daemon, reference: &str) -> std::process::Output {
    d.berth(&["images", "pull", "--plain-http", reference], None)
}

/// Bytes allocated under `dir` (as `du` counts them).
fn du_bytes(dir: &Path) -> u64 {
    let out = ok(&std::process::Command::new("du")
        .args(["-s", "-B1", "-x"])
        .arg(dir)
        .output()
        .unwrap());
    out.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn a_layer_past_the_limit_stops_its_pull_early_and_leaves_nothing() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("berthd.toml");
    write_limits(&config, 64 * MIB, 0);
    let cfg = config.clone();
    let d = Daemon::start_with(move |cmd| {
        cmd.arg("--config").arg(&cfg);
    })
    .unwrap();
    let registry = Registry::start().unwrap();
    let bomb = zero_bomb(160);
    assert!(bomb.len() < 12 * MIB as usize, "{} bytes", bomb.len());
    let bomb_digest = oci::sha256(&bomb);
    let claimed = oci::sha256(b"never checked");
    let bomb_ref = push(&registry, work.path(), "bomb", &[(bomb, claimed)]);

    let out = pull(&d, &bomb_ref);
    let err = stderr(&out);
    assert!(!out.status.success(), "the bomb pulled");
    eprintln!("limits: the pull said: {err}");
    for says in [
        bomb_digest.as_str(),
        "limit of 67108864 uncompressed bytes",
        "limits.max_layer_uncompressed_bytes",
        "resource exhausted",
    ] {
        assert!(err.contains(says), "{says:?} missing from: {err}");
    }
    // Stopped early: nothing near 10 GiB was written, nothing is left to see.
    assert!(
        du_bytes(&d.root()) < 512 * MIB,
        "{} bytes",
        du_bytes(&d.root())
    );
    let images = ok(&d.berth(&["images", "ls", "-q"], None));
    assert!(!images.contains("bomb"), "{images}");
    let snapshots = ok(&d.berth(&["snapshots", "ls", "-q"], None));
    assert!(snapshots.trim().is_empty(), "{snapshots}");

    // Below the limit: an image of a 32 MiB file pulls.
    let small = push(&registry, work.path(), "small", &[zeros_layer(32 * MIB)]);
    ok(&pull(&d, &small));
    assert!(ok(&d.berth(&["images", "ls", "-q"], None)).contains("small"));
}

#[test]
fn a_pulls_layers_share_one_bound_and_sighup_changes_it() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("berthd.toml");
    write_limits(&config, 0, 0);
    let cfg = config.clone();
    let d = Daemon::start_with(move |cmd| {
        cmd.arg("--config").arg(&cfg);
    })
    .unwrap();
    let registry = Registry::start().unwrap();
    let two = push(
        &registry,
        work.path(),
        "two",
        &[zeros_layer(24 * MIB), zeros_layer(24 * MIB + 512)],
    );
    reload(&d, &config, 32 * MIB, 40 * MIB);
    let out = pull(&d, &two);
    let err = stderr(&out);
    assert!(!out.status.success(), "48 MiB passed a 40 MiB bound");
    assert!(
        err.contains("limits.max_pull_uncompressed_bytes") && err.contains("resource exhausted"),
        "{err}"
    );
    assert!(!ok(&d.berth(&["images", "ls", "-q"], None)).contains("two"));
    assert!(ok(&d.berth(&["snapshots", "ls", "-q"], None))
        .trim()
        .is_empty());

    reload(&d, &config, 32 * MIB, 64 * MIB);
    ok(&pull(&d, &two));
    assert!(ok(&d.berth(&["images", "ls", "-q"], None)).contains("two"));
}
