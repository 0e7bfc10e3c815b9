//! The build cache's bound: with `[build] cache_max_bytes` small, builds with ever new
//! build-args keep `<root>/io.berth.build.v1` within it (least recently used records go),
//! the latest build still hits; `builder prune -a` empties it (`system df` says 0); and a
//! record a running build uses survives a prune until that build ends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{oci, ok, stderr, Daemon};
use std::io::{Read, Write};
use std::path::Path;

/// Small enough that ten builds (two ~4 KiB records each) pass it several times over.
const MAX_BYTES: u64 = 32 * 1024;
/// One record's blocks: what a build may add past the bound before the policy runs.
const RECORD_SLACK: u64 = 4096;

/// A daemon with `[build] cache_max_bytes = MAX_BYTES` and busybox imported.
fn daemon() -> (Daemon, tempfile::TempDir) {
    let (work, archive) = oci::busybox_archive();
    let config = work.path().join("berthd.toml");
    std::fs::write(&config, format!("[build]\ncache_max_bytes = {MAX_BYTES}\n")).unwrap();
    let d = Daemon::start_with(move |cmd| {
        cmd.arg("--config").arg(&config);
    })
    .unwrap();
    ok(&d.berth(
        &[
            "images",
            "import",
            "--no-unpack",
            "--base-name",
            "test.local/busybox",
            archive.to_str().unwrap(),
        ],
        None,
    ));
    (d, work)
}

fn du(path: &Path) -> u64 {
    if !path.exists() {
        return 0;
    }
    let out = ok(&std::process::Command::new("du")
        .args(["-s", "-B1"])
        .arg(path)
        .output()
        .unwrap());
    out.split_whitespace().next().unwrap().parse().unwrap()
}

fn records(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

/// Whether the build's RUN step (the line after its `Step`) says CACHED.
fn run_hit(out: &str) -> bool {
    let mut lines = out.lines().skip_while(|l| !l.contains(": RUN "));
    lines.next().is_some() && lines.next().is_some_and(|l| l.contains("CACHED"))
}

fn build_cache_row(d: &Daemon) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&d.berth(&["system", "df", "--format", "json"], None))).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Build Cache")
        .unwrap_or_else(|| panic!("no Build Cache row: {v}"))
        .clone()
}

/// A context whose RUN step's result depends on the build-arg N.
fn arg_context(work: &Path) -> std::path::PathBuf {
    let ctx = work.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM test.local/busybox:latest\nARG N\nRUN echo $N > /n\n",
    )
    .unwrap();
    ctx
}

/// Builds `ctx` with N=`n` as `test.local/<name>:<n>`.
fn build_with_arg(d: &Daemon, ctx: &Path, name: &str, n: u32) -> std::process::Output {
    d.berth(
        &[
            "build",
            "-t",
            &format!("test.local/{name}:{n}"),
            "--build-arg",
            &format!("N={n}"),
            ctx.to_str().unwrap(),
        ],
        None,
    )
}

#[test]
fn builds_with_new_args_stay_within_the_bound_and_prune_empties_it() {
    let (d, work) = daemon();
    let ctx = arg_context(work.path());
    let build = |n: u32| build_with_arg(&d, &ctx, "bounded", n);
    let cache = d.root().join("io.berth.build.v1");
    let mut most = 0;
    for n in 0..10 {
        ok(&build(n));
        let used = du(&cache);
        most = most.max(used);
        assert!(
            used <= MAX_BYTES + RECORD_SLACK,
            "after build {n}: du {used} > {MAX_BYTES} + {RECORD_SLACK}"
        );
    }
    let kept = records(&cache.join("cache")) + records(&cache.join("images"));
    assert!(
        kept < 20,
        "ten builds wrote 20 records and {kept} are kept: none went"
    );
    eprintln!("largest du after a build: {most} bytes; {kept} records kept");

    // The most recent build is the most recently used: repeated, its RUN step hits.
    let again = ok(&build(9));
    assert!(run_hit(&again), "the last build missed: {again}");

    let out = ok(&d.berth(&["builder", "prune", "-a"], None));
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert_eq!(du(&cache), 0, "prune -a left {}", cache.display());
    let row = build_cache_row(&d);
    assert_eq!(
        (row["total"].as_i64(), row["size"].as_i64()),
        (Some(0), Some(0)),
        "{row}"
    );
    // Emptied, the next build misses and the cache starts over.
    let fresh = ok(&build(9));
    assert!(!run_hit(&fresh), "hit after prune -a: {fresh}");
    assert!(records(&cache.join("cache")) >= 1);
    // system prune -a takes the build cache too, as Docker's does.
    let out = ok(&d.berth(&["system", "prune", "-a", "-f"], None));
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert_eq!(build_cache_row(&d)["total"].as_i64(), Some(0));
}

/// A record a running build has written is kept through a `prune -a` until the build ends.
/// The build's second RUN waits on a connection to the test, so the prune happens while
/// the build runs whatever the timing.
#[test]
fn a_record_in_use_by_a_running_build_is_not_pruned() {
    let (d, work) = daemon();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM test.local/busybox:latest\nRUN echo held > /held\n\
             RUN busybox wget -q -O /dev/null http://127.0.0.1:{port}/\n"
        ),
    )
    .unwrap();
    let mut berth = std::process::Command::new(berth_tests::bin("berth"));
    berth
        .arg("--address")
        .arg(d.socket())
        .args(["build", "-t", "test.local/held:v1"])
        .arg(&ctx)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = berth.spawn().unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait().unwrap() {
                    let out = child.wait_with_output().unwrap();
                    panic!(
                        "the build ended ({status}) before its wget: {}",
                        stderr(&out)
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    let cache = d.root().join("io.berth.build.v1/cache");
    assert_eq!(records(&cache), 1, "the first RUN's record");
    ok(&d.berth(&["builder", "prune", "-a"], None));
    assert_eq!(
        records(&cache),
        1,
        "a record the running build holds was pruned"
    );

    conn.set_nonblocking(false).unwrap();
    let mut request = [0u8; 1024];
    let _ = conn.read(&mut request);
    conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    drop(conn);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the build failed: {}", stderr(&out));
    ok(&d.berth(&["builder", "prune", "-a"], None));
    assert_eq!(records(&cache), 0, "the build ended: its records may go");
}

/// Without `-a`, a prune takes only the records that can no longer hit: those of an image
/// removed (its layer collected), not those of an image still there.
#[test]
fn prune_without_all_takes_only_records_whose_layers_are_gone() {
    let (d, work) = daemon();
    let ctx = arg_context(work.path());
    let build = |n: u32| ok(&build_with_arg(&d, &ctx, "dangling", n));
    build(1);
    build(2);
    let cache = d.root().join("io.berth.build.v1");
    let count = || records(&cache.join("cache")) + records(&cache.join("images"));
    assert_eq!(count(), 4, "a RUN record and an image record per build");
    ok(&d.berth(&["rmi", "--sync", "test.local/dangling:1"], None));
    let out = ok(&d.berth(&["builder", "prune"], None));
    assert!(out.contains("records: 2"), "{out}");
    assert_eq!(
        count(),
        2,
        "the removed image's two records go, the other's stay"
    );
    assert!(
        run_hit(&build(2)),
        "the kept image's RUN record no longer hits"
    );
}

/// SIGHUP reloads `[build]`: a bound lowered while berthd runs applies after the next build.
#[test]
fn a_lowered_bound_applies_after_sighup() {
    let (d, work) = daemon();
    let ctx = arg_context(work.path());
    for n in 1..=2 {
        ok(&build_with_arg(&d, &ctx, "reloaded", n));
    }
    let cache = d.root().join("io.berth.build.v1");
    let count = || records(&cache.join("cache")) + records(&cache.join("images"));
    assert_eq!(count(), 4);
    std::fs::write(
        work.path().join("berthd.toml"),
        "[build]\ncache_max_bytes = 1\n",
    )
    .unwrap();
    let pid = d.pid().unwrap() as i32;
    // SAFETY: a signal to the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let reloaded = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        d.log_text().contains("build cache bound reloaded")
    });
    assert!(reloaded, "no reload logged: {}", d.log_text());
    ok(&build_with_arg(&d, &ctx, "reloaded", 3));
    assert_eq!(
        count(),
        0,
        "a 1-byte bound keeps no record once the build ends"
    );
}
