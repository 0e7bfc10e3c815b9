//! Real containers through berthd's Containers and Tasks services, run by Debian's
//! containerd-shim-runc-v2 and runc, driven by Debian's ctr.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::oci;
use berth_tests::{ok, pids_matching, Daemon};

const IMAGE: &str = "test.local/busybox:latest";

/// Imports (and unpacks) a busybox image into the daemon.
fn with_busybox(d: &Daemon) -> tempfile::TempDir {
    let (work, archive) = oci::busybox_archive();
    ok(&d.ctr(&[
        "images",
        "import",
        "--base-name",
        "test.local/busybox",
        archive.to_str().unwrap(),
    ]));
    work
}

fn bundles(d: &Daemon) -> usize {
    std::fs::read_dir(d.state().join("io.containerd.runtime.v2.task/default"))
        .map(|r| r.count())
        .unwrap_or(0)
}

const RUNC_SHIM: &str = "io.containerd.runc.v2";
const BERTH_SHIM: &str = "io.containerd.berth.v2";

fn run_rm_output_and_exit_code(runtime: &str) {
    let d = Daemon::start().unwrap();
    let _w = with_busybox(&d);
    let rt = ["run", "--rm", "--runtime", runtime, IMAGE];
    // Ids differ per runtime: tests run in parallel and cgroup paths follow the id.
    let sfx = runtime.split('.').nth(2).unwrap_or("x");
    let (hello, fails, who) = (
        format!("hello-{sfx}"),
        format!("fails-{sfx}"),
        format!("who-{sfx}"),
    );
    let out = ok(&d.ctr(&[&rt[..], &[hello.as_str(), "/bin/echo", "hello from berth"]].concat()));
    assert_eq!(out.trim(), "hello from berth");
    let out = d.ctr(&[&rt[..], &[fails.as_str(), "/bin/sh", "-c", "exit 3"]].concat());
    assert_eq!(out.status.code(), Some(3));
    let out = ok(&d.ctr(&[&rt[..], &[who.as_str(), "/bin/id", "-u"]].concat()));
    assert_eq!(out.trim(), "0");
    // Everything is cleaned up: no task, no container, no bundle, no container snapshot.
    assert!(!ok(&d.ctr(&["containers", "ls", "-q"])).contains(&hello));
    assert_eq!(bundles(&d), 0);
    assert_eq!(
        ok(&d.ctr(&["snapshots", "ls"])).lines().count(),
        2,
        "only the image layer should remain"
    );
    // The low-level runtime's state lives under berthd's state directory: runc's, or the
    // native runtime's (berth's shim, unless BERTH_SHIM_RUNTIME names a binary).
    let native = runtime == BERTH_SHIM
        && matches!(
            std::env::var("BERTH_SHIM_RUNTIME").as_deref(),
            Err(_) | Ok("") | Ok("native")
        );
    let dir = if native {
        "native/default"
    } else {
        "runc/default"
    };
    assert!(d.state().join(dir).is_dir(), "{dir}");
}

#[test]
fn run_rm_with_runc_shim() {
    run_rm_output_and_exit_code(RUNC_SHIM);
}

#[test]
fn run_rm_with_berth_shim() {
    run_rm_output_and_exit_code(BERTH_SHIM);
}

fn detached_task_lifecycle(runtime: &str) {
    let d = Daemon::start().unwrap();
    let _w = with_busybox(&d);
    // Ids differ per runtime: tests run in parallel and cgroup paths follow the id.
    let bg = format!("bg-{}", runtime.split('.').nth(2).unwrap_or("x"));
    ok(&d.ctr(&[
        "run",
        "-d",
        "--runtime",
        runtime,
        IMAGE,
        &bg,
        "/bin/sleep",
        "1000",
    ]));
    let ls = ok(&d.ctr(&["tasks", "ls"]));
    assert!(ls.contains(&bg) && ls.contains("RUNNING"), "{ls}");
    let ps = ok(&d.ctr(&["tasks", "ps", &bg]));
    assert_eq!(ps.lines().count(), 2, "{ps}");
    let out = ok(&d.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        &bg,
        "/bin/echo",
        "exec works",
    ]));
    assert_eq!(out.trim(), "exec works");
    ok(&d.ctr(&["tasks", "pause", &bg]));
    assert!(ok(&d.ctr(&["tasks", "ls"])).contains("PAUSED"));
    ok(&d.ctr(&["tasks", "resume", &bg]));
    assert!(ok(&d.ctr(&["tasks", "ls"])).contains("RUNNING"));
    // Both shims report cgroup metrics that containerd's own ctr decodes.
    let metrics = ok(&d.ctr(&["tasks", "metrics", &bg]));
    assert!(
        metrics.contains("memory") || metrics.contains("pids"),
        "{metrics}"
    );
    // A running task cannot be deleted; a killed one can.
    assert!(!d.ctr(&["tasks", "rm", &bg]).status.success());
    ok(&d.ctr(&["tasks", "kill", "-s", "SIGKILL", &bg]));
    for _ in 0..50 {
        if ok(&d.ctr(&["tasks", "ls"])).contains("STOPPED") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    ok(&d.ctr(&["tasks", "rm", &bg]));
    ok(&d.ctr(&["containers", "rm", &bg]));
    assert_eq!(bundles(&d), 0);
}

#[test]
fn detached_lifecycle_with_runc_shim() {
    detached_task_lifecycle(RUNC_SHIM);
}

#[test]
fn detached_lifecycle_with_berth_shim() {
    detached_task_lifecycle(BERTH_SHIM);
}

fn sleepers() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| c.starts_with(b"/bin/sleep\x00424242"))
                .unwrap_or(false)
        })
        .count()
}

fn survive_a_daemon_crash(runtime: &str) {
    let mut d = Daemon::start().unwrap();
    let _w = with_busybox(&d);
    ok(&d.ctr(&[
        "run",
        "-d",
        "--runtime",
        runtime,
        IMAGE,
        "survivor",
        "/bin/sleep",
        "424242",
    ]));
    // runc's start returns once the container's init is told to go, before it has exec'd
    // its program: the sleeper shows up within moments.
    for _ in 0..50 {
        if sleepers() == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(sleepers(), 1);
    d.kill().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(sleepers(), 1, "the container died with the daemon");
    d.restart().unwrap();
    let ls = ok(&d.ctr(&["tasks", "ls"]));
    assert!(ls.contains("survivor") && ls.contains("RUNNING"), "{ls}");
    ok(&d.ctr(&["tasks", "kill", "-s", "SIGKILL", "survivor"]));
    for _ in 0..50 {
        if sleepers() == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(sleepers(), 0);
    ok(&d.ctr(&["tasks", "rm", "survivor"]));
    ok(&d.ctr(&["containers", "rm", "survivor"]));
}

// Both variants use the same sleeper command line, so they must not overlap.
#[test]
fn containers_survive_a_daemon_crash() {
    survive_a_daemon_crash(RUNC_SHIM);
    survive_a_daemon_crash(BERTH_SHIM);
}

#[test]
fn missing_shim_or_runc_is_a_clear_error() {
    let d = Daemon::start().unwrap();
    let _w = with_busybox(&d);
    let out = d.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.nope.v2",
        IMAGE,
        "x",
        "/bin/true",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("containerd-shim-nope-v2 not found"), "{err}");
    assert_eq!(bundles(&d), 0);

    // runc options naming a runtime binary that is not there, or cannot be run.
    let not_executable = tempfile::NamedTempFile::new().unwrap();
    let bad = not_executable.path().to_str().unwrap();
    for binary in ["/nonexistent/runc", bad] {
        let out = d.berth(
            &[
                "containers",
                "run",
                "--rm",
                "--runc-binary",
                binary,
                IMAGE,
                "badruntime",
                "/bin/true",
            ],
            None,
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(binary)
                && (err.contains("not found") || err.contains("not executable"))
                && !err.contains("internal"),
            "{binary}: {err}"
        );
        assert_eq!(bundles(&d), 0, "{binary}: a failed create leaves no bundle");
        let left = ok(&d.berth(&["containers", "ls", "-q"], None));
        assert!(!left.contains("badruntime"), "run --rm removes it: {left}");
    }

    // A daemon whose PATH has the shim but no runc.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        berth_tests::require_tool("containerd-shim-runc-v2"),
        dir.path().join("containerd-shim-runc-v2"),
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let mut d2 = Daemon::start_with(move |cmd| {
        cmd.env("PATH", &path);
    })
    .unwrap();
    let _w2 = with_busybox(&d2);
    let out = d2.ctr(&["run", "--rm", IMAGE, "norunc", "/bin/true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("runc"), "{err}");
    assert_eq!(bundles(&d2), 0, "a failed create leaves no bundle");
    ok(&d2.ctr(&["version"]));
    let _ = d2.kill();
}

#[test]
fn containerd_drives_berths_shim() {
    let c = berth_tests::Containerd::start().unwrap();
    let (_work, archive) = oci::busybox_archive();
    ok(&c.ctr(&[
        "images",
        "import",
        "--base-name",
        "test.local/busybox",
        archive.to_str().unwrap(),
    ]));
    let out = ok(&c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        BERTH_SHIM,
        IMAGE,
        "via-containerd",
        "/bin/echo",
        "containerd drives berth",
    ]));
    assert_eq!(out.trim(), "containerd drives berth");
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        BERTH_SHIM,
        IMAGE,
        "via-containerd-2",
        "/bin/sh",
        "-c",
        "exit 9",
    ]);
    assert_eq!(out.status.code(), Some(9));
}

fn shim_killed(runtime: &str, id: &str, marker: &str) {
    let d = Daemon::start().unwrap();
    let _w = with_busybox(&d);
    ok(&d.ctr(&[
        "run",
        "-d",
        "--runtime",
        runtime,
        IMAGE,
        id,
        "/bin/sleep",
        marker,
    ]));
    let shim = pids_matching(format!("-id\x00{id}\x00").as_bytes());
    assert_eq!(shim.len(), 1, "one shim for {id}");
    // SAFETY: SIGKILL to the shim process found above.
    unsafe { libc::kill(shim[0], libc::SIGKILL) };
    let mut stopped = false;
    for _ in 0..100 {
        let ls = ok(&d.ctr(&["tasks", "ls"]));
        if ls.contains(id) && ls.contains("STOPPED") {
            stopped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(stopped, "task not reported exited after its shim died");
    ok(&d.ctr(&["tasks", "rm", id]));
    ok(&d.ctr(&["containers", "rm", id]));
    ok(&d.ctr(&["version"]));
    for _ in 0..50 {
        if pids_matching(format!("/bin/sleep\x00{marker}").as_bytes()).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        pids_matching(format!("/bin/sleep\x00{marker}").as_bytes()).is_empty(),
        "container outlived its cleanup"
    );
    assert_eq!(bundles(&d), 0);
}

#[test]
fn a_killed_berth_shim_reports_its_task_exited() {
    shim_killed(BERTH_SHIM, "orphan-berth", "515151");
}

#[test]
fn a_killed_runc_shim_reports_its_task_exited() {
    shim_killed(RUNC_SHIM, "orphan-runc", "525252");
}

#[test]
fn an_exit_while_the_daemon_is_down_is_still_reported() {
    let mut d = Daemon::start().unwrap();
    let _w = with_busybox(&d);
    ok(&d.ctr(&[
        "run",
        "-d",
        "--runtime",
        BERTH_SHIM,
        IMAGE,
        "brief",
        "/bin/sh",
        "-c",
        "sleep 1; exit 7",
    ]));
    d.kill().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    d.restart().unwrap();
    let ls = ok(&d.ctr(&["tasks", "ls"]));
    assert!(ls.contains("brief") && ls.contains("STOPPED"), "{ls}");
    let out = ok(&d.berth(&["tasks", "rm", "brief"], None));
    assert!(out.contains("exit status 7"), "{out}");
    ok(&d.ctr(&["containers", "rm", "brief"]));
}

/// A seccomp profile holds for processes exec'd into the container as for its first one,
/// with either shim. (libcontainer, berth's native runtime, applies a profile to the init
/// only; berth's shim runs a container that has one under runc.)
fn seccomp_holds_for_execs(runtime: &str) {
    let d = Daemon::start().unwrap();
    let _w = with_busybox(&d);
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
            "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    let id = format!("sc-{}", runtime.split('.').nth(2).unwrap_or("x"));
    let profile = profile.to_str().unwrap();
    let with_profile = [
        "--runtime",
        runtime,
        "--seccomp",
        "--seccomp-profile",
        profile,
    ];
    let mut args = vec!["run", "-d"];
    args.extend(with_profile);
    args.extend([IMAGE, &id, "/bin/sleep", "1000"]);
    ok(&d.ctr(&args));
    let exec = d.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "mk",
        &id,
        "/bin/busybox",
        "mkdir",
        "/tmp/made",
    ]);
    assert!(
        !exec.status.success(),
        "mkdir in an exec escaped the profile"
    );
    assert!(
        String::from_utf8_lossy(&exec.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&exec.stderr)
    );
    // Without the profile, the same exec makes its directory: the refusal was the filter's.
    let free = format!("{id}-free");
    ok(&d.ctr(&[
        "run",
        "-d",
        "--runtime",
        runtime,
        IMAGE,
        &free,
        "/bin/sleep",
        "1000",
    ]));
    ok(&d.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "mk",
        &free,
        "/bin/busybox",
        "mkdir",
        "/tmp/made",
    ]));
    // (The daemon's drop removes both containers.)
}

#[test]
fn seccomp_holds_for_execs_with_runc_shim() {
    seccomp_holds_for_execs(RUNC_SHIM);
}

#[test]
fn seccomp_holds_for_execs_with_berth_shim() {
    seccomp_holds_for_execs(BERTH_SHIM);
}
