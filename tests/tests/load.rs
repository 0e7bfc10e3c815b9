//! Load: 32 clients at once, for a fixed time (BERTH_LOAD_SECS, default 20), doing imports,
//! pulls, runs, execs, label updates and deletes against one berthd over loopback. No
//! unexpected error; berthd's memory flat after warm-up; no descriptor or mount left behind.
//! Prints the figures (operations, RSS, descriptors) for the README.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{bin, busybox_everywhere, ok, Daemon, LoadMix};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 32;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn mounts_under(d: &Daemon) -> usize {
    berth_tests::mount_points_under(&d.root()).len()
        + berth_tests::mount_points_under(&d.state()).len()
}

#[test]
fn thirty_two_clients_at_once_leave_nothing_behind() {
    let secs = std::env::var("BERTH_LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20u64);
    let d = Daemon::start().unwrap();
    let socket = d.socket();
    let pid = d.pid().unwrap();
    let image = busybox_everywhere(&d, "load/busybox");
    let (reference, archive) = (image.reference.clone(), image.archive.clone());
    ok(&d.berth(
        &[
            "containers",
            "run",
            "-d",
            "test.local/base:v1",
            "load-svc",
            "sleep",
            "3600",
        ],
        None,
    ));
    let (fds_before, mounts_before) = (fds(pid), mounts_under(&d));

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let started = Instant::now();
    let mut threads = vec![];
    for c in 0..CLIENTS {
        let (socket, stop, done, errors) =
            (socket.clone(), stop.clone(), done.clone(), errors.clone());
        let mix = LoadMix {
            archive: archive.to_str().unwrap().to_string(),
            reference: reference.clone(),
            base: "test.local/base:v1".into(),
            service: "load-svc".into(),
        };
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let (kind, op) = mix.step(c, i);
                let args: Vec<&str> = op.iter().map(String::as_str).collect();
                // A hang is a failure, not a stuck run: every command has 120 s.
                let out = std::process::Command::new("timeout")
                    .arg("120")
                    .arg(bin("berth"))
                    .arg("--address")
                    .arg(&socket)
                    .args(&args)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                let expected = out.status.success() || LoadMix::expected_failure(kind, &err);
                if !expected {
                    errors.lock().unwrap().push(format!("{args:?}: {err}"));
                }
                done.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        }));
    }
    let warm = secs / 4;
    std::thread::sleep(Duration::from_secs(warm));
    let rss_warm = rss_kib(pid);
    std::thread::sleep(Duration::from_secs(secs - warm));
    let rss_end = rss_kib(pid);
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} unexpected errors, first: {}",
        errors.len(),
        errors[0]
    );
    // Let deletions' collections finish, then count what is held.
    std::thread::sleep(Duration::from_secs(2));
    let (fds_after, mounts_after) = (fds(pid), mounts_under(&d));
    let ops = done.load(Ordering::SeqCst);
    eprintln!(
        "load: {CLIENTS} clients, {ops} operations in {elapsed:.1}s ({:.1}/s); berthd RSS {} MiB after warm-up, {} MiB at the end; fds {fds_before} -> {fds_after}; mounts {mounts_before} -> {mounts_after}",
        ops as f64 / elapsed,
        rss_warm / 1024,
        rss_end / 1024
    );
    assert!(
        rss_end <= rss_warm + rss_warm / 2 + 16 * 1024,
        "berthd memory grew from {rss_warm} KiB to {rss_end} KiB"
    );
    assert!(
        fds_after <= fds_before + 4,
        "descriptors {fds_before} -> {fds_after}"
    );
    assert_eq!(mounts_after, mounts_before, "mounts left behind");
    ok(&d.berth(&["tasks", "kill", "load-svc", "--signal", "KILL"], None));
}
