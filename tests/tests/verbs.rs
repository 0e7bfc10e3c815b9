//! The Docker-style verbs on a real daemon: ps, logs, exec, top, stats, inspect, stop, start,
//! rm and the image verbs — their output shapes, exit codes and refusals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{daemon_with_busybox, ok, stderr, Daemon};
use std::time::{Duration, Instant};

const IMAGE: &str = "test.local/verbs:latest";

fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fails(d: &Daemon, args: &[&str], says: &str) {
    let out = d.berth(args, None);
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
}

#[test]
fn container_verbs_follow_docker() {
    let (d, _img) = daemon_with_busybox("test.local/verbs");
    let script = "echo hello; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done";
    ok(&d.berth(&["run", "-d", IMAGE, "svc", "sh", "-c", script], None));

    let ps = ok(&d.berth(&["ps"], None));
    let header = ps.lines().next().unwrap();
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row = ps.lines().find(|l| l.starts_with("svc")).expect(&ps);
    assert!(row.contains(IMAGE) && row.contains("Up"), "{row}");
    assert_eq!(ok(&d.berth(&["ps", "-q"], None)), "svc\n");

    eventually("the log has hello", || {
        ok(&d.berth(&["logs", "svc"], None)) == "hello\n"
    });
    assert_eq!(
        ok(&d.berth(&["exec", "svc", "cat", "/etc/hostname"], None)),
        "svc\n"
    );
    let out = d.berth(&["exec", "svc", "sh", "-c", "exit 7"], None);
    assert_eq!(out.status.code(), Some(7));
    let top = ok(&d.berth(&["top", "svc"], None));
    assert!(top.starts_with("PID") && top.contains("sh -c"), "{top}");
    let stats = ok(&d.berth(&["stats", "--no-stream", "svc"], None));
    assert!(stats.contains("MEM USAGE / LIMIT"), "{stats}");
    assert!(stats.lines().any(|l| l.starts_with("svc ")), "{stats}");

    let inspected: serde_json::Value =
        serde_json::from_str(&ok(&d.berth(&["inspect", "svc"], None))).unwrap();
    let c = &inspected[0];
    assert_eq!(c["Name"], "svc");
    assert_eq!(c["State"]["Running"], true);
    assert!(c["State"]["Pid"].as_u64().unwrap() > 0);
    let ips = c["NetworkSettings"]["Networks"]["bridge"]["IPAddresses"]
        .as_array()
        .unwrap();
    assert_eq!(ips.len(), 1, "{c}");

    // rm refuses a running container and says how; stop sends the stop signal.
    fails(&d, &["rm", "svc"], "rm -f");
    assert_eq!(ok(&d.berth(&["stop", "-t", "5", "svc"], None)), "svc\n");
    assert_eq!(ok(&d.berth(&["ps", "-q"], None)), "");
    let all = ok(&d.berth(&["ps", "-a"], None));
    assert!(all.contains("Exited (0)"), "{all}");
    assert_eq!(ok(&d.berth(&["logs", "svc"], None)), "hello\nbye\n");

    // start runs it again, appending to the same log.
    assert_eq!(ok(&d.berth(&["start", "svc"], None)), "svc\n");
    eventually("the second hello", || {
        ok(&d.berth(&["logs", "svc"], None)) == "hello\nbye\nhello\n"
    });
    assert!(ok(&d.berth(&["ps"], None)).contains("Up"));
    fails(&d, &["start", "svc"], "already running");

    let log = d.dir.path().join("logs/default/svc.log");
    assert!(log.exists());
    assert_eq!(ok(&d.berth(&["rm", "-f", "svc"], None)), "svc\n");
    assert_eq!(ok(&d.berth(&["ps", "-aq"], None)), "");
    assert!(!log.exists(), "rm takes the log along");

    for (args, says) in [
        (vec!["stop", "nosuch"], "nosuch"),
        (vec!["start", "nosuch"], "nosuch"),
        (vec!["rm", "nosuch"], "nosuch"),
        (vec!["logs", "nosuch"], "nosuch"),
        (vec!["inspect", "nosuch"], "no container or image nosuch"),
    ] {
        fails(&d, &args, says);
    }
}

#[test]
fn cp_both_ways_and_never_out_of_the_container() {
    let (d, _img) = daemon_with_busybox("test.local/verbs");
    ok(&d.berth(
        &[
            "run",
            "-d",
            "--network",
            "none",
            IMAGE,
            "box",
            "sleep",
            "300",
        ],
        None,
    ));
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    std::fs::create_dir_all(h.join("tree/sub")).unwrap();
    std::fs::write(h.join("tree/a.txt"), "alpha\n").unwrap();
    std::fs::write(h.join("tree/sub/b.txt"), "beta\n").unwrap();
    std::os::unix::fs::symlink("a.txt", h.join("tree/link")).unwrap();
    let hs = |p: &str| h.join(p).to_str().unwrap().to_string();

    // Host to container: a directory into an existing one lands under its own name.
    ok(&d.berth(&["cp", &hs("tree"), "box:/tmp"], None));
    let got = ok(&d.berth(
        &[
            "exec",
            "box",
            "sh",
            "-c",
            "cat /tmp/tree/a.txt /tmp/tree/sub/b.txt; /bin/busybox readlink /tmp/tree/link",
        ],
        None,
    ));
    assert_eq!(got, "alpha\nbeta\na.txt\n");
    // A file to a new name.
    ok(&d.berth(&["cp", &hs("tree/a.txt"), "box:/tmp/renamed"], None));
    assert_eq!(
        ok(&d.berth(&["exec", "box", "cat", "/tmp/renamed"], None)),
        "alpha\n"
    );

    // Container to host.
    ok(&d.berth(&["cp", "box:/etc/passwd", &hs("passwd")], None));
    assert!(std::fs::read_to_string(h.join("passwd"))
        .unwrap()
        .starts_with("root:x:0:0"));
    std::fs::create_dir(h.join("back")).unwrap();
    ok(&d.berth(&["cp", "box:/tmp/tree", &hs("back")], None));
    assert_eq!(
        std::fs::read_to_string(h.join("back/tree/sub/b.txt")).unwrap(),
        "beta\n"
    );

    // A symlink the container made to a host path: what is written through it stays in the
    // container (its own /etc), and what is read through it comes from the container.
    let marker = format!("berth-cp-escape-{}", std::process::id());
    ok(&d.berth(
        &[
            "exec",
            "box",
            "sh",
            "-c",
            "/bin/busybox ln -s /etc /tmp/evil; /bin/busybox ln -s ../../../../../etc /tmp/evil2",
        ],
        None,
    ));
    std::fs::write(h.join(&marker), "x\n").unwrap();
    for via in ["/tmp/evil", "/tmp/evil2"] {
        ok(&d.berth(&["cp", &hs(&marker), &format!("box:{via}/{marker}")], None));
        assert!(
            !std::path::Path::new("/etc").join(&marker).exists(),
            "cp through {via} wrote on the host"
        );
    }
    assert_eq!(
        ok(&d.berth(&["exec", "box", "cat", &format!("/etc/{marker}")], None)),
        "x\n"
    );
    ok(&d.berth(&["cp", "box:/tmp/evil/group", &hs("group")], None));
    assert_eq!(
        std::fs::read_to_string(h.join("group")).unwrap(),
        "root:x:0:\nnogroup:x:65534:\n"
    );

    // A stopped container: through its snapshot.
    ok(&d.berth(&["stop", "-t", "1", "box"], None));
    ok(&d.berth(&["cp", "box:/tmp/renamed", &hs("from-stopped")], None));
    assert_eq!(
        std::fs::read_to_string(h.join("from-stopped")).unwrap(),
        "alpha\n"
    );

    let out = d.berth(&["cp", "box:/nonexistent", &hs("x")], None);
    assert_eq!(out.status.code(), Some(1));
    let out = d.berth(&["cp", &hs("passwd"), &hs("x")], None);
    assert!(stderr(&out).contains("CONTAINER:PATH"), "{}", stderr(&out));
    ok(&d.berth(&["rm", "-f", "box"], None));
}

#[test]
fn image_verbs_are_the_images_group() {
    let (d, _img) = daemon_with_busybox("test.local/verbs");
    let listed = ok(&d.berth(&["images"], None));
    assert!(listed.contains("test.local/verbs:latest"), "{listed}");
    assert_eq!(
        ok(&d.berth(&["images", "-q"], None)),
        ok(&d.berth(&["images", "ls", "-q"], None))
    );
    ok(&d.berth(&["tag", IMAGE, "test.local/other:v2"], None));
    assert!(ok(&d.berth(&["images", "-q"], None)).contains("test.local/other:v2"));
    let inspected: serde_json::Value =
        serde_json::from_str(&ok(&d.berth(&["inspect", "test.local/other:v2"], None))).unwrap();
    assert!(inspected[0]["manifest"]["layers"].is_array(), "{inspected}");
    ok(&d.berth(&["rmi", "test.local/other:v2"], None));
    assert!(!ok(&d.berth(&["images", "-q"], None)).contains("test.local/other:v2"));
    // Both families show in --help.
    let help = ok(&d.berth(&["--help"], None));
    for verb in [
        "ps",
        "logs",
        "exec",
        "stop",
        "rmi",
        "containers",
        "tasks",
        "network",
    ] {
        assert!(
            help.contains(&format!("  {verb} ")),
            "{verb} missing from --help"
        );
    }
}
