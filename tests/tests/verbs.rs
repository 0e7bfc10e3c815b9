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
    ok(&d.berth(
        &["containers", "run", "-d", IMAGE, "svc", "sh", "-c", script],
        None,
    ));

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
    run_box(&d, "box");
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

/// A host directory and a host file (0600) a container must never reach through `berth cp`.
struct Victims {
    _tmp: tempfile::TempDir,
    file: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Victims {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("secret");
        std::fs::write(&file, "host secret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let dir = tmp.path().join("private");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Victims {
            file,
            dir,
            _tmp: tmp,
        }
    }

    fn untouched(&self, after: &str) {
        assert_eq!(
            (
                format!("{:o}", mode_of(&self.file)),
                std::fs::read_to_string(&self.file).unwrap()
            ),
            ("600".to_string(), "host secret\n".to_string()),
            "{after}: the host file a container's symlink names was written"
        );
        let entries: Vec<_> = std::fs::read_dir(&self.dir).unwrap().collect();
        assert!(
            self.dir.is_dir() && mode_of(&self.dir) == 0o700 && entries.is_empty(),
            "{after}: the host directory a container's symlink names was changed: {:o} {entries:?}",
            mode_of(&self.dir)
        );
    }
}

/// Runs `name` as a long sleep. Each test names its own container: the cgroup path is
/// `/berth/<namespace>/<id>` host-wide, so two test daemons must not run the same id at once.
fn run_box(d: &Daemon, name: &str) {
    ok(&d.berth(
        &[
            "containers",
            "run",
            "-d",
            "--network",
            "none",
            IMAGE,
            name,
            "sleep",
            "300",
        ],
        None,
    ));
}

fn in_box(d: &Daemon, name: &str, script: &str) {
    ok(&d.berth(&["exec", name, "sh", "-c", script], None));
}

fn mode_of(p: &std::path::Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::symlink_metadata(p).unwrap().permissions())
        & 0o7777
}

/// A running container whose `/tmp/d` is copied out again and again into one host
/// directory, and the host victims the container's symlinks name.
struct CopyOut {
    d: Daemon,
    _img: tempfile::TempDir,
    name: &'static str,
    host: tempfile::TempDir,
    v: Victims,
}

impl CopyOut {
    fn start(name: &'static str) -> Self {
        let (d, _img) = daemon_with_busybox("test.local/verbs");
        run_box(&d, name);
        CopyOut {
            d,
            _img,
            name,
            host: tempfile::tempdir().unwrap(),
            v: Victims::new(),
        }
    }

    fn host(&self, rel: &str) -> std::path::PathBuf {
        self.host.path().join(rel)
    }

    /// Runs `script` in the container, copies its `/tmp/d` out again and checks that the
    /// victims are as they were.
    fn change_and_copy(&self, script: &str, after: &str) {
        in_box(&self.d, self.name, script);
        let from = format!("{}:/tmp/d", self.name);
        ok(&self
            .d
            .berth(&["cp", &from, self.host.path().to_str().unwrap()], None));
        self.v.untouched(after);
    }
}

#[test]
fn cp_out_replaces_a_host_symlink_to_a_file_never_writes_through_it() {
    let t = CopyOut::start("cp-file-links");
    let secret = t.v.file.to_str().unwrap();
    let f = t.host("d/f");

    t.change_and_copy("mkdir /tmp/d && echo one > /tmp/d/f", "first copy");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "one\n");

    // The container swaps its file for a link to a host path: the link is copied as a link.
    t.change_and_copy(
        &format!("rm /tmp/d/f && /bin/busybox ln -s {secret} /tmp/d/f"),
        "a link over a file",
    );
    assert_eq!(std::fs::read_link(&f).unwrap(), t.v.file);

    // And back to a setuid file: the host link is replaced, not written through or chmodded.
    t.change_and_copy(
        "rm /tmp/d/f && echo pwned > /tmp/d/f && /bin/busybox chmod 4777 /tmp/d/f",
        "a file over a link",
    );
    assert!(std::fs::symlink_metadata(&f).unwrap().is_file());
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "pwned\n");
    assert_eq!(mode_of(&f), 0o4777);

    // The same for a single file copied over a link an earlier copy made.
    in_box(
        &t.d,
        t.name,
        &format!("/bin/busybox ln -s {secret} /tmp/top"),
    );
    let top = t.host("top");
    let to = top.to_str().unwrap();
    ok(&t.d.berth(&["cp", "cp-file-links:/tmp/top", to], None));
    assert_eq!(std::fs::read_link(&top).unwrap(), t.v.file);
    ok(&t.d.berth(&["cp", "cp-file-links:/tmp/d/f", to], None));
    t.v.untouched("a file over a top-level link");
    assert!(std::fs::symlink_metadata(&top).unwrap().is_file());
    assert_eq!(std::fs::read_to_string(&top).unwrap(), "pwned\n");
}

#[test]
fn cp_out_replaces_a_host_symlink_to_a_directory_never_writes_into_it() {
    let t = CopyOut::start("cp-dir-links");
    let private = t.v.dir.to_str().unwrap();
    let sub = t.host("d/sub");

    t.change_and_copy(
        &format!("mkdir /tmp/d && /bin/busybox ln -s {private} /tmp/d/sub"),
        "first copy",
    );
    assert_eq!(std::fs::read_link(&sub).unwrap(), t.v.dir);

    // The link becomes a real directory: the host link goes, a directory takes its place.
    t.change_and_copy(
        "rm /tmp/d/sub && mkdir /tmp/d/sub && echo g > /tmp/d/sub/g && /bin/busybox chmod 777 /tmp/d/sub",
        "a directory over a link",
    );
    assert!(std::fs::symlink_metadata(&sub).unwrap().is_dir());
    assert_eq!(mode_of(&sub), 0o777);
    assert_eq!(std::fs::read_to_string(sub.join("g")).unwrap(), "g\n");

    // And back to a link: the host directory is replaced by the link, as Docker does.
    t.change_and_copy(
        &format!("rm -r /tmp/d/sub && /bin/busybox ln -s {private} /tmp/d/sub"),
        "a link over a directory",
    );
    assert_eq!(std::fs::read_link(&sub).unwrap(), t.v.dir);
}
