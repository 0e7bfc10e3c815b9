//! berth run: the default spec, the image's config, resource limits, bind mounts and exit
//! codes, with real containers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::oci;
use berth_tests::{daemon_with_busybox, ok, Daemon};

const IMAGE: &str = "test.local/busybox:latest";

fn run(d: &Daemon, args: &[&str]) -> std::process::Output {
    let mut a = vec!["containers", "run"];
    a.extend_from_slice(args);
    d.berth(&a, None)
}

#[test]
fn run_output_exit_codes_and_config() {
    let (d, _w) = daemon_with_busybox("test.local/busybox");
    let out = ok(&run(
        &d,
        &["--rm", IMAGE, "c1", "/bin/echo", "hello", "from", "berth"],
    ));
    assert_eq!(out.trim(), "hello from berth");
    let out = run(
        &d,
        &[
            "--rm",
            IMAGE,
            "c2",
            "/bin/sh",
            "-c",
            "echo oops >&2; exit 42",
        ],
    );
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "oops");
    let out = ok(&run(
        &d,
        &[
            "--rm",
            "--env",
            "GREETING=hi",
            "--cwd",
            "/tmp",
            IMAGE,
            "c3",
            "/bin/sh",
            "-c",
            "echo $GREETING $(pwd) $(hostname) $PATH",
        ],
    ));
    assert_eq!(out.trim(), "hi /tmp c3 /bin");
    let out = ok(&run(
        &d,
        &["--rm", "--user", "nobody", IMAGE, "c4", "/bin/id"],
    ));
    assert!(
        out.contains("uid=65534(nobody) gid=65534(nogroup)"),
        "{out}"
    );
    let out = ok(&run(
        &d,
        &["--rm", "--user", "1234:5678", IMAGE, "c5", "/bin/id", "-u"],
    ));
    assert_eq!(out.trim(), "1234");
    // No container, task or snapshot stays behind after --rm.
    assert!(ok(&d.ctr(&["containers", "ls", "-q"])).trim().is_empty());
    assert_eq!(
        ok(&d.berth(&["snapshots", "ls", "-q"], None))
            .lines()
            .count(),
        1
    );
}

#[test]
fn run_refuses_bad_users_and_reused_ids() {
    let (d, _w) = daemon_with_busybox("test.local/busybox");
    let out = run(
        &d,
        &["--rm", "--user", "nosuchuser", IMAGE, "u1", "/bin/true"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the image's /etc/passwd"));
    let out = run(
        &d,
        &["--rm", "--user", "4294967296", IMAGE, "u2", "/bin/true"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of range"));
    // An image that is not there, by short name: named as given, with what to do.
    let out = run(&d, &["--rm", "nosuch", "u3", "/bin/true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("image nosuch:") && err.contains("pull or import it first"),
        "{err}"
    );
    assert!(!ok(&d.berth(&["ps", "-aq"], None)).contains("u3"));
    ok(&run(&d, &["-d", IMAGE, "dup", "/bin/sleep", "100"]));
    let out = run(&d, &["--rm", IMAGE, "dup", "/bin/true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    ok(&d.ctr(&["tasks", "kill", "-s", "SIGKILL", "dup"]));
    std::thread::sleep(std::time::Duration::from_millis(500));
    ok(&d.ctr(&["tasks", "rm", "dup"]));
    ok(&d.ctr(&["containers", "rm", "dup"]));
}

#[test]
fn run_limits_and_bind_mounts() {
    let (d, w) = daemon_with_busybox("test.local/busybox");
    let out = ok(&run(&d, &["--rm", "--memory", "64m", "--pids-limit", "32", IMAGE, "lim", "/bin/sh", "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"]));
    assert_eq!(out.trim(), (64u64 << 20).to_string());
    let host = w.path().join("shared");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("from-host"), "host data").unwrap();
    let m = format!("type=bind,src={},dst=/data", host.display());
    let out = ok(&run(
        &d,
        &[
            "--rm",
            "--mount",
            &m,
            IMAGE,
            "bind",
            "/bin/sh",
            "-c",
            "cat /data/from-host; echo written > /data/from-container",
        ],
    ));
    assert_eq!(out.trim(), "host data");
    assert_eq!(
        std::fs::read_to_string(host.join("from-container"))
            .unwrap()
            .trim(),
        "written"
    );
    let ro = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        host.display()
    );
    let out = run(
        &d,
        &[
            "--rm",
            "--mount",
            &ro,
            IMAGE,
            "ro",
            "/bin/sh",
            "-c",
            "echo x > /data/nope",
        ],
    );
    assert!(!out.status.success(), "a read-only bind mount was writable");
    // With --network none the container has only loopback.
    let out = ok(&run(
        &d,
        &[
            "--rm",
            "--network",
            "none",
            IMAGE,
            "net",
            "/bin/cat",
            "/proc/net/dev",
        ],
    ));
    assert_eq!(out.lines().filter(|l| l.contains(':')).count(), 1, "{out}");
}

#[test]
fn cli_containers_and_tasks() {
    let (d, _w) = daemon_with_busybox("test.local/busybox");
    ok(&run(&d, &["-d", IMAGE, "svc", "/bin/sleep", "1000"]));
    let ls = ok(&d.berth(&["containers", "ls"], None));
    assert!(
        ls.contains("svc") && ls.contains("io.containerd.berth.v2"),
        "{ls}"
    );
    let info = ok(&d.berth(&["containers", "info", "svc"], None));
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["Spec"]["process"]["args"][0], "/bin/sleep");
    ok(&d.berth(&["containers", "label", "svc", "tier=web"], None));
    assert!(ok(&d.berth(&["containers", "ls"], None)).contains("tier=web"));
    let tasks = ok(&d.berth(&["tasks", "ls"], None));
    assert!(
        tasks.contains("svc") && tasks.contains("RUNNING"),
        "{tasks}"
    );
    assert_eq!(
        ok(&d.berth(&["tasks", "ps", "svc"], None)).lines().count(),
        2
    );
    ok(&d.berth(&["tasks", "pause", "svc"], None));
    assert!(ok(&d.berth(&["tasks", "ls"], None)).contains("PAUSED"));
    ok(&d.berth(&["tasks", "resume", "svc"], None));
    // A container with a live task is not removed.
    let rm = d.berth(&["containers", "rm", "svc"], None);
    assert!(!rm.status.success());
    assert!(String::from_utf8_lossy(&rm.stderr).contains("still has a task"));
    ok(&d.berth(&["tasks", "kill", "-s", "KILL", "svc"], None));
    berth_tests::wait_stopped(&d);
    let out = ok(&d.berth(&["tasks", "rm", "svc"], None));
    assert!(out.contains("exit status 137"), "{out}");
    ok(&d.berth(&["containers", "rm", "svc"], None));
    assert!(ok(&d.berth(&["containers", "ls", "-q"], None))
        .trim()
        .is_empty());
    assert_eq!(
        ok(&d.berth(&["snapshots", "ls", "-q"], None))
            .lines()
            .count(),
        1
    );
}

#[test]
fn run_with_a_terminal() {
    let (d, _w) = daemon_with_busybox("test.local/busybox");
    // script(1) gives berth a real terminal to put in raw mode and to size.
    let cmd = format!(
        "{} --address {} containers run --rm -it {IMAGE} tty1 /bin/sh -c 'tty; stty size; exit 3'",
        berth_tests::bin("berth").display(),
        d.socket().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env("COLUMNS", "100")
        .env("LINES", "40")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/"),
        "no terminal in the container: {text}"
    );
    assert_eq!(out.status.code(), Some(3), "{text}");
    // exec -t: a second terminal, in a running container, through berth's shim.
    ok(&run(&d, &["-d", IMAGE, "tty2", "sleep", "300"]));
    let cmd = format!(
        "{} --address {} tasks exec -t tty2 /bin/sh -c 'tty; echo exec-tty; exit 4'",
        berth_tests::bin("berth").display(),
        d.socket().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/") && text.contains("exec-tty"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(4), "{text}");
    ok(&d.berth(&["tasks", "kill", "-s", "KILL", "tty2"], None));
}

#[test]
fn exec_attach_and_the_images_stop_signal() {
    let d = Daemon::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let lay = work.path().join("layout");
    oci::layout_with(
        &lay,
        "latest",
        &[oci::busybox_layer()],
        serde_json::json!({"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "StopSignal": "SIGUSR1"}),
    );
    let archive = work.path().join("img.tar");
    oci::archive(&lay, &archive);
    ok(&d.berth(
        &[
            "images",
            "import",
            "--base-name",
            "test.local/stopsig",
            archive.to_str().unwrap(),
        ],
        None,
    ));
    let log = work.path().join("svc.log");
    ok(&d.berth(
        &[
            "containers",
            "run",
            "-d",
            "--log",
            log.to_str().unwrap(),
            "test.local/stopsig:latest",
            "svc2",
            "sh",
            "-c",
            "echo started; trap 'echo got usr1; exit 5' USR1; while true; do sleep 0.1; done",
        ],
        None,
    ));
    // exec: output, exit code, extra environment.
    let out = d.berth(
        &["tasks", "exec", "svc2", "sh", "-c", "echo in-exec; exit 3"],
        None,
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in-exec\n");
    let env = ok(&d.berth(
        &[
            "tasks",
            "exec",
            "-e",
            "FOO=bar",
            "svc2",
            "sh",
            "-c",
            "echo $FOO",
        ],
        None,
    ));
    assert_eq!(env, "bar\n");
    let ps = ok(&d.berth(&["tasks", "ps", "svc2"], None));
    assert!(ps.lines().count() >= 2, "{ps}");
    // attach follows the log until the task exits; kill sends the image's STOPSIGNAL.
    let attach = d.berth_spawn(&["tasks", "attach", "svc2"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    ok(&d.berth(&["tasks", "kill", "svc2"], None));
    let out = attach.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("started") && text.contains("got usr1"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(5), "{text}");
    ok(&d.berth(&["tasks", "rm", "svc2"], None));
    ok(&d.berth(&["containers", "rm", "svc2"], None));
    // Without --log, -d keeps the output in a log of its own (beside a non-default
    // daemon's socket), which `berth logs` reads.
    ok(&d.berth(
        &[
            "containers",
            "run",
            "-d",
            "test.local/stopsig:latest",
            "nolog",
            "sh",
            "-c",
            "echo to the default log; exec sleep 30",
        ],
        None,
    ));
    let log = d.dir.path().join("logs/default/nolog.log");
    for _ in 0..50 {
        if std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        ok(&d.berth(&["logs", "nolog"], None)),
        "to the default log\n"
    );
    ok(&d.berth(&["tasks", "kill", "-s", "KILL", "nolog"], None));
}

#[test]
fn metrics_and_oom_events_from_berths_shim() {
    let (d, _w) = daemon_with_busybox("test.local/busybox");
    ok(&run(
        &d,
        &[
            "-d",
            "--memory",
            "32m",
            "--pids-limit",
            "50",
            IMAGE,
            "meter",
            "sleep",
            "300",
        ],
    ));
    let m = ok(&d.berth(&["tasks", "metrics", "meter"], None));
    let v: serde_json::Value = serde_json::from_str(&m).unwrap();
    assert_eq!(v["memory"]["limit"], 32u64 << 20, "{m}");
    assert_eq!(v["pids"]["limit"], 50, "{m}");
    assert!(v["pids"]["current"].as_u64().unwrap() >= 1, "{m}");
    assert!(v["memory"]["usage"].as_u64().unwrap() > 0, "{m}");
    ok(&d.berth(&["tasks", "kill", "-s", "KILL", "meter"], None));

    // A container that outgrows its memory limit is OOM-killed and /tasks/oom is published.
    let events = d.berth_spawn(&["events", "topic==\"/tasks/oom\""]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = run(
        &d,
        &[
            "--rm",
            "--memory",
            "16m",
            IMAGE,
            "hog",
            "sh",
            "-c",
            "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(137),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(events.id() as i32, libc::SIGTERM) };
    let seen = String::from_utf8_lossy(&events.wait_with_output().unwrap().stdout).into_owned();
    assert!(
        seen.contains("/tasks/oom") && seen.contains("hog"),
        "{seen}\n{}",
        d.log_text()
    );
}

/// An image config too large to ride in the Unpack answer (over 1 MiB) is read as content,
/// and the run takes the config's Env and Cmd as with any other image.
#[test]
fn an_image_with_a_large_config_runs() {
    let d = Daemon::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    oci::layout_with(
        &layout,
        "latest",
        &[oci::busybox_layer()],
        serde_json::json!({
            "Env": ["PATH=/bin", "BIG=yes"],
            "Cmd": ["/bin/sh", "-c", "echo big=$BIG"],
            "x-padding": "p".repeat(1536 << 10),
        }),
    );
    let archive = work.path().join("big.tar");
    oci::archive(&layout, &archive);
    ok(&d.berth(
        &[
            "images",
            "import",
            "--base-name",
            "test.local/big",
            archive.to_str().unwrap(),
        ],
        None,
    ));
    let small = work.path().join("small");
    oci::layout_with(
        &small,
        "latest",
        &[oci::busybox_layer()],
        serde_json::json!({"Env": ["PATH=/bin"]}),
    );
    let small_archive = work.path().join("small.tar");
    oci::archive(&small, &small_archive);
    ok(&d.berth(
        &[
            "images",
            "import",
            "--base-name",
            "test.local/small",
            small_archive.to_str().unwrap(),
        ],
        None,
    ));
    // The answer leaves the 1.5 MiB config out, carries an ordinary one, and names the
    // image found for a short name.
    let answers = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use berth_proto::berth::services::unpack::v1::UnpackRequest;
        let c = d.client().await.unwrap();
        let mut answers = vec![];
        for name in [
            "test.local/big:latest",
            "test.local/big",
            "test.local/small",
        ] {
            let a = c
                .unpack()
                .unpack(UnpackRequest {
                    name: name.into(),
                    snapshotter: String::new(),
                    platform: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            answers.push((a.config.len(), a.name));
        }
        answers
    });
    assert_eq!(answers[0], (0, "test.local/big:latest".to_string()));
    assert_eq!(answers[1], (0, "test.local/big:latest".to_string()));
    assert!(answers[2].0 > 0, "{answers:?}");
    assert_eq!(answers[2].1, "test.local/small:latest");
    let out = ok(&run(&d, &["--rm", "test.local/big:latest", "big1"]));
    assert_eq!(out, "big=yes\n");
}
