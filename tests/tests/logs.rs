//! A container's stdio through the shim's relay: the process's fds 1 and 2 are pipes the
//! shim made (on both runtimes), the shim writes `berth run -d`'s log in the kubelet's
//! format, and `berth logs` reads it back by stream and time (`--timestamps`, `--since`,
//! `--until`, `--tail`); every line a process printed before it exited is in the log by the
//! time its exit is seen. `ctr --log-uri file://` still gets the raw output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{daemon_with_busybox, oci, ok, stderr, Daemon};
use std::process::Output;
use std::time::{Duration, Instant};

const IMAGE: &str = "test.local/busybox:latest";

/// A daemon whose berth shim runs containers with runc instead of the native runtime.
fn runc_daemon() -> Daemon {
    Daemon::start_with(|c| {
        c.env("BERTH_SHIM_RUNTIME", "runc");
    })
    .unwrap()
}

fn import_busybox(d: &Daemon) -> tempfile::TempDir {
    let (work, archive) = oci::busybox_archive();
    ok(&d.berth(
        &[
            "images",
            "import",
            "--base-name",
            "test.local/busybox",
            archive.to_str().unwrap(),
        ],
        None,
    ));
    work
}

/// Waits (up to 60 s) until container `name`'s task has stopped.
fn wait_exited(d: &Daemon, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let ps = ok(&d.berth(&["ps", "-a"], None));
        if ps.lines().any(|l| l.contains(name) && l.contains("Exited")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{name} did not exit: {}", ok(&d.berth(&["ps", "-a"], None)));
}

fn logs(d: &Daemon, args: &[&str]) -> Output {
    d.berth(&[&["logs"], args].concat(), None)
}

/// Lines of `--timestamps` output: (nanoseconds since the epoch, text).
fn stamped(text: &str) -> Vec<(i128, String)> {
    text.lines()
        .map(|l| {
            let (stamp, rest) = l.split_once(' ').unwrap_or((l, ""));
            assert!(
                stamp.len() == "2026-12-06T21:00:00.123456789Z".len() && stamp.ends_with('Z'),
                "not Docker's timestamp: {l:?}"
            );
            let at = berth_proto::vocab::crilog::parse_time(stamp)
                .unwrap_or_else(|| panic!("bad time in {l:?}"));
            (at, rest.to_string())
        })
        .collect()
}

fn texts(lines: &[(i128, String)]) -> Vec<&str> {
    lines.iter().map(|(_, t)| t.as_str()).collect()
}

#[test]
fn logs_keep_streams_and_times_and_pick_lines_by_time() {
    let (d, _w) = daemon_with_busybox("test.local/busybox");
    // Lines of the two streams leave on two pipes: a second between them keeps their order
    // in the log, which --tail reads, however loaded the machine.
    let script =
        "echo one; echo oops >&2; sleep 1; echo two; sleep 1; echo three >&2; sleep 1; echo last";
    ok(&d.berth(
        &["run", "-d", "--name", "ts", IMAGE, "sh", "-c", script],
        None,
    ));
    wait_exited(&d, "ts");

    let plain = ok(&logs(&d, &["ts"]));
    assert_eq!(plain, "one\ntwo\nlast\n");
    let out = logs(&d, &["--timestamps", "ts"]);
    let (so, se) = (stamped(&ok(&out)), stamped(&stderr(&out)));
    assert_eq!(texts(&so), ["one", "two", "last"]);
    assert_eq!(texts(&se), ["oops", "three"]);
    assert!(so.windows(2).all(|w| w[0].0 <= w[1].0), "{so:?}");
    assert!(se.windows(2).all(|w| w[0].0 <= w[1].0), "{se:?}");
    // `sleep 1` lies between "one" and "two".
    assert!(so[1].0 - so[0].0 >= 900_000_000, "{so:?}");

    // --since a time between "one" and "two" (Unix seconds with a fraction): the later lines.
    let mid = (so[0].0 + so[1].0) / 2;
    let since = format!("{}.{:09}", mid / 1_000_000_000, mid % 1_000_000_000);
    let out = logs(&d, &["--since", &since, "ts"]);
    assert_eq!(ok(&out), "two\nlast\n");
    assert_eq!(stderr(&out), "three\n");
    // RFC 3339, as --timestamps printed it: --since is inclusive, --until too.
    let two = d
        .berth(&["logs", "-t", "ts"], None)
        .stdout
        .split(|b| *b == b'\n')
        .nth(1)
        .map(|l| {
            String::from_utf8_lossy(l)
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .unwrap();
    assert_eq!(ok(&logs(&d, &["--since", &two, "ts"])), "two\nlast\n");
    assert_eq!(ok(&logs(&d, &["--until", &two, "ts"])), "one\ntwo\n");
    // Durations count back from now; --tail takes the last lines shown.
    assert_eq!(ok(&logs(&d, &["--since", "1h", "ts"])), plain);
    assert_eq!(ok(&logs(&d, &["--since", "0s", "ts"])), "");
    assert_eq!(ok(&logs(&d, &["--tail", "1", "ts"])), "last\n");
    let bad = logs(&d, &["--since", "yesterday", "ts"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("--since \"yesterday\"") && stderr(&bad).contains("RFC 3339"),
        "{}",
        stderr(&bad)
    );
}

/// `logs -f` follows a running container's log with the same parsing: each stream to its
/// own, until the task exits.
#[test]
fn logs_follow_parses_as_it_goes() {
    let (d, _w) = daemon_with_busybox("test.local/busybox");
    let script = "sleep 1; echo a; echo b >&2; sleep 1; printf c; sleep 0.5; echo d";
    ok(&d.berth(
        &["run", "-d", "--name", "fol", IMAGE, "sh", "-c", script],
        None,
    ));
    let out = d
        .berth_spawn(&["logs", "-f", "--timestamps", "fol"])
        .wait_with_output()
        .unwrap();
    let (so, se) = (stamped(&ok(&out)), stamped(&stderr(&out)));
    assert_eq!(texts(&so), ["a", "cd"]);
    assert_eq!(texts(&se), ["b"]);
}

/// A process printing 10000 lines and exiting at once: by the time its exit shows, every
/// line is in the log (the shim reports the exit after the copy of its output drained).
fn the_tail_of_the_output_is_never_lost(d: &Daemon) {
    let script = "seq 1 10000; echo end >&2";
    ok(&d.berth(
        &["run", "-d", "--name", "many", IMAGE, "sh", "-c", script],
        None,
    ));
    wait_exited(d, "many");
    let out = logs(d, &["many"]);
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 10000, "{:?}", lines.last());
    assert_eq!((lines[0], lines[9999]), ("1", "10000"));
    assert_eq!(stderr(&out), "end\n");
}

#[test]
fn the_tail_of_the_output_is_kept_with_the_native_runtime() {
    let (d, _w) = daemon_with_busybox("test.local/busybox");
    the_tail_of_the_output_is_never_lost(&d);
}

#[test]
fn the_tail_of_the_output_is_kept_with_runc() {
    let d = runc_daemon();
    let _w = import_busybox(&d);
    the_tail_of_the_output_is_never_lost(&d);
}

/// The init's and an exec's stdout and stderr are pipes (the shim's), not the client's
/// FIFOs or files; stdin still reaches the process and its end still comes.
fn stdio_is_the_shims_pipes(d: &Daemon) {
    let fds = "readlink /proc/self/fd/1; readlink /proc/self/fd/2";
    let out = ok(&d.berth(&["run", "--rm", IMAGE, "sh", "-c", fds], None));
    let links: Vec<&str> = out.lines().collect();
    assert_eq!(links.len(), 2, "{out}");
    assert!(links.iter().all(|l| l.starts_with("pipe:[")), "{out}");
    let echoed = ok(&d.berth(
        &["run", "--rm", "-i", IMAGE, "sh", "-c", "cat; echo eof"],
        Some(b"through stdin\n"),
    ));
    assert_eq!(echoed, "through stdin\neof\n");

    ok(&d.berth(
        &[
            "run",
            "-d",
            "--name",
            "fds",
            IMAGE,
            "sh",
            "-c",
            &format!("{fds}; sleep 300"),
        ],
        None,
    ));
    let out = ok(&d.berth(&["exec", "fds", "sh", "-c", fds], None));
    assert!(out.lines().all(|l| l.starts_with("pipe:[")), "{out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = String::new();
    while log.lines().count() < 2 && Instant::now() < deadline {
        log = ok(&logs(d, &["fds"]));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        log.lines().count() == 2 && log.lines().all(|l| l.starts_with("pipe:[")),
        "{log}"
    );
    ok(&d.berth(&["rm", "-f", "fds"], None));
}

#[test]
fn stdio_is_pipes_with_the_native_runtime() {
    let (d, _w) = daemon_with_busybox("test.local/busybox");
    stdio_is_the_shims_pipes(&d);
}

#[test]
fn stdio_is_pipes_with_runc() {
    let d = runc_daemon();
    let _w = import_busybox(&d);
    stdio_is_the_shims_pipes(&d);
}

/// Debian's ctr, a real containerd client, naming a log file: the raw output lands there,
/// through berth's shim and through containerd's own runc shim.
#[test]
fn ctr_log_uri_gets_raw_output() {
    let d = Daemon::start().unwrap();
    let _w = import_busybox(&d);
    for (runtime, id) in [
        ("io.containerd.berth.v2", "raw-berth"),
        ("io.containerd.runc.v2", "raw-runc"),
    ] {
        let log = d.dir.path().join(format!("{id}.log"));
        let uri = format!("file://{}", log.display());
        ok(&d.ctr(&[
            "run",
            "--rm",
            "--runtime",
            runtime,
            "--log-uri",
            &uri,
            IMAGE,
            id,
            "sh",
            "-c",
            "echo out; sleep 0.2; echo err >&2",
        ]));
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "out\nerr\n",
            "{runtime}"
        );
    }
}
