//! The shim start protocol and a shim's lifecycle around it: berthd drives containerd 2.x's
//! shims (which answer `start` with a bootstrap message, not a bare address) as well as
//! Debian's 1.6 one; a start that fails halfway leaves no shim process and no socket; a
//! shim's socket goes with it; a shim nobody asked a task of gives up when the daemon that
//! started it is gone; and berth's shim joins the cgroup its caller names (ShimCgroup).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{bin, oci, ok, pids_matching, Containerd, Daemon};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const IMAGE: &str = "test.local/base:latest";
const RUNC_SHIM: &str = "io.containerd.runc.v2";
const BERTH_SHIM: &str = "io.containerd.berth.v2";

fn with_busybox(d: &Daemon) -> tempfile::TempDir {
    let (work, archive) = oci::busybox_archive();
    berth_tests::import_as_base(d, &archive);
    work
}

/// The shim processes serving task `id` (not their children that have not exec'd yet: a
/// created container's init, forked from berth's shim).
fn shims_for(id: &str) -> Vec<i32> {
    let all = pids_matching(format!("-id\x00{id}\x00").as_bytes());
    let parent = |pid: i32| -> Option<i32> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))?
            .trim()
            .parse()
            .ok()
    };
    all.iter()
        .copied()
        .filter(|p| parent(*p).is_none_or(|pp| !all.contains(&pp)))
        .collect()
}

/// What is left in a daemon's shim socket directory, `<state>/s`.
fn sockets(d: &Daemon) -> Vec<PathBuf> {
    std::fs::read_dir(d.state().join("s"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Waits (up to 10 s) until `done` holds; whether it did.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

/// An id long enough that the shim's socket cannot live in its bundle (a sockaddr holds
/// 108 bytes) and goes to `<state>/s`, as a CRI pod's 64-character ids do.
fn long_id(tag: &str) -> String {
    format!("{tag}-{}", "0123456789abcdef".repeat(3))
}

/// containerd 2.x's runc shim, where the machine has one: `$BERTH_TEST_SHIM2`, or the
/// containerd suite's build (`../shared/containerd-suite`).
fn shim_2x() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("BERTH_TEST_SHIM2").map(PathBuf::from),
        Some(PathBuf::from(
            "/tmp/containerd-suite/bin/containerd-shim-runc-v2",
        )),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// A daemon whose PATH finds the shim binaries in `dir` first.
fn daemon_with_path_first(dir: &Path) -> Daemon {
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Daemon::start_with(move |cmd| {
        cmd.env("PATH", &path);
    })
    .unwrap()
}

/// Runs a detached sleeper `id` on `runtime`'s shim.
fn run_detached(d: &Daemon, runtime: &str, id: &str) {
    ok(&d.ctr(&[
        "run",
        "-d",
        "--runtime",
        runtime,
        IMAGE,
        id,
        "/bin/sleep",
        "1000",
    ]));
}

/// Kills task `id`, deletes it and its container, and waits for its shim to exit.
fn kill_and_delete(d: &Daemon, id: &str) {
    ok(&d.ctr(&["tasks", "kill", "-s", "SIGKILL", id]));
    let stopped = || {
        ok(&d.ctr(&["tasks", "ls"]))
            .lines()
            .any(|l| l.starts_with(id) && l.contains("STOPPED"))
    };
    assert!(eventually(stopped), "{id} stops");
    ok(&d.ctr(&["tasks", "rm", id]));
    ok(&d.ctr(&["containers", "rm", id]));
    assert!(
        eventually(|| shims_for(id).is_empty()),
        "the shim of {id} exits once its task is deleted"
    );
}

/// A task's whole life through berthd (create, start, exec, kill, delete) on `runtime`'s
/// shim; afterwards no shim process of it is left.
fn task_lifecycle(d: &Daemon, runtime: &str, id: &str) {
    run_detached(d, runtime, id);
    let ls = ok(&d.ctr(&["tasks", "ls"]));
    assert!(ls.contains(id) && ls.contains("RUNNING"), "{ls}");
    let out = ok(&d.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        id,
        "/bin/echo",
        "exec works",
    ]));
    assert_eq!(out.trim(), "exec works");
    assert_eq!(shims_for(id).len(), 1, "one shim serves {id}");
    kill_and_delete(d, id);
}

#[test]
fn berthd_drives_a_containerd_2x_shim() {
    let Some(shim) = shim_2x() else {
        eprintln!(
            "SKIPPED: no containerd 2.x shim on this machine (set BERTH_TEST_SHIM2 to a containerd-shim-runc-v2 from containerd 2.x, or build ../shared/containerd-suite)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&shim, dir.path().join("containerd-shim-runc-v2")).unwrap();
    let mut d = daemon_with_path_first(dir.path());
    let _w = with_busybox(&d);
    let id = long_id("v2x");
    run_detached(&d, RUNC_SHIM, &id);
    // The 2.x shim serves it (not Debian's), with its socket where berthd asked for it.
    let serving = shims_for(&id);
    assert_eq!(serving.len(), 1, "one shim serves {id}");
    let exe = std::fs::read_link(format!("/proc/{}/exe", serving[0])).unwrap();
    assert_eq!(exe, std::fs::canonicalize(&shim).unwrap());
    assert_eq!(sockets(&d).len(), 1, "its socket is in <state>/s");
    // A berthd that crashed finds it again.
    d.restart().unwrap();
    let ls = ok(&d.ctr(&["tasks", "ls"]));
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&id) && l.contains("RUNNING")),
        "{ls}"
    );
    assert_eq!(shims_for(&id), serving, "the same shim");
    kill_and_delete(&d, &id);
    assert!(eventually(|| sockets(&d).is_empty()), "{:?}", sockets(&d));

    task_lifecycle(&d, RUNC_SHIM, "v2x-short");
    let out = d.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNC_SHIM,
        IMAGE,
        "v2x-rm",
        "/bin/sh",
        "-c",
        "echo hi; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi");
}

#[test]
fn a_containerd_2x_drives_berths_shim() {
    let bin = std::env::var_os("BERTH_TEST_CONTAINERD2")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/containerd-suite/bin"));
    if !bin.join("containerd").is_file() || !bin.join("ctr").is_file() {
        eprintln!(
            "SKIPPED: no containerd 2.x on this machine (set BERTH_TEST_CONTAINERD2 to a directory with containerd and ctr from containerd 2.x, or build ../shared/containerd-suite)"
        );
        return;
    }
    berth_tests::require_root();
    let c = Containerd::start_from(&bin).unwrap();
    let (_w, archive) = oci::busybox_archive();
    let archive = archive.to_str().unwrap();
    ok(&c.ctr(&[
        "images",
        "import",
        "--base-name",
        "test.local/base",
        archive,
    ]));
    let id = long_id("c2");
    let out = ok(&c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        BERTH_SHIM,
        IMAGE,
        &id,
        "/bin/echo",
        "hello",
    ]));
    assert_eq!(out.trim(), "hello");
    let log = std::fs::read_to_string(c.dir.path().join("containerd.log")).unwrap();
    let connected = format!("connecting to shim {id}");
    assert!(
        log.lines()
            .any(|l| l.contains(&connected) && l.contains("protocol=ttrpc version=2")),
        "{log}"
    );
    assert!(eventually(|| shims_for(&id).is_empty()), "the shim exits");
}

#[test]
fn debians_shim_and_berths_keep_working() {
    let d = Daemon::start().unwrap();
    let _w = with_busybox(&d);
    task_lifecycle(&d, RUNC_SHIM, "v16-task");
    task_lifecycle(&d, BERTH_SHIM, "berth-task");
}

#[test]
fn a_deleted_tasks_socket_goes_with_its_shim() {
    let d = Daemon::start().unwrap();
    let _w = with_busybox(&d);
    let id = long_id("sock");
    run_detached(&d, BERTH_SHIM, &id);
    assert_eq!(sockets(&d).len(), 1, "the shim listens in <state>/s");
    kill_and_delete(&d, &id);
    assert!(
        eventually(|| sockets(&d).is_empty()),
        "the shim's socket is left behind: {:?}",
        sockets(&d)
    );
}

/// A shim (berth's, wrapped) whose `start` starts a real serving shim and then answers
/// that it speaks gRPC there, which berth cannot.
fn grpc_answering_shim(dir: &Path) {
    let script = format!(
        "#!/bin/sh\n\
         real={real}\n\
         for last; do :; done\n\
         if [ \"$last\" = start ]; then\n\
           addr=$(\"$real\" \"$@\") || exit 1\n\
           printf '{{\"version\":3,\"address\":\"%s\",\"protocol\":\"grpc\"}}' \"$addr\"\n\
         else\n\
           exec \"$real\" \"$@\"\n\
         fi\n",
        real = bin("containerd-shim-berth-v2").display()
    );
    let path = dir.join("containerd-shim-grpcish-v2");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_start_refused_halfway_leaves_no_shim_and_no_socket() {
    let dir = tempfile::tempdir().unwrap();
    grpc_answering_shim(dir.path());
    let d = daemon_with_path_first(dir.path());
    let _w = with_busybox(&d);
    let id = long_id("grpcish");
    let out = d.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.grpcish.v2",
        IMAGE,
        &id,
        "/bin/true",
    ]);
    assert!(!out.status.success());
    let err = berth_tests::stderr(&out);
    assert!(err.contains("ttrpc only"), "a clear refusal: {err}");
    assert!(
        eventually(|| shims_for(&id).is_empty()),
        "the shim berthd could not use still runs: {:?}",
        shims_for(&id)
    );
    assert!(sockets(&d).is_empty(), "{:?}", sockets(&d));
    ok(&d.ctr(&["version"]));
}

/// A bundle berth's shim can be started in by hand: `<root>/<state>/io.containerd.runtime.v2.task/<ns>/<id>`.
fn bundle_for(root: &Path, id: &str) -> PathBuf {
    let bundle = root.join("state/io.containerd.runtime.v2.task/t").join(id);
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), r#"{"ociVersion":"1.0.2"}"#).unwrap();
    bundle
}

#[test]
fn a_shim_gives_up_when_the_daemon_that_started_it_is_gone() {
    berth_tests::require_root();
    let root = tempfile::tempdir().unwrap();
    let id = long_id("orphan");
    let bundle = bundle_for(root.path(), &id);
    let daemon = root.path().join("berth.sock");
    // A stand-in daemon: runs `start`, then stays until it is killed.
    let mut requester = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "'{shim}' -namespace t -id {id} -address '{daemon}' start > address.out; exec sleep 600",
            shim = bin("containerd-shim-berth-v2").display(),
            daemon = daemon.display(),
        ))
        .current_dir(&bundle)
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(|| std::fs::read_to_string(bundle.join("address.out"))
            .is_ok_and(|a| a.starts_with("unix://"))),
        "start answered"
    );
    let address = std::fs::read_to_string(bundle.join("address.out")).unwrap();
    let socket = PathBuf::from(address.trim().trim_start_matches("unix://"));
    assert!(
        socket.starts_with(root.path().join("state/s")),
        "{socket:?}"
    );
    assert_eq!(shims_for(&id).len(), 1, "the shim serves");
    assert!(socket.exists());

    requester.kill().unwrap();
    requester.wait().unwrap();
    assert!(
        eventually(|| shims_for(&id).is_empty()),
        "a shim nobody will drive stays after its daemon died"
    );
    assert!(!socket.exists(), "its socket stays: {socket:?}");
}

/// runc's options naming only a shim cgroup (containerd.runc.v1.Options field 3,
/// `shim_cgroup`), encoded.
fn shim_cgroup_value(cgroup: &str) -> Vec<u8> {
    let mut options = vec![0x1a, cgroup.len() as u8];
    options.extend_from_slice(cgroup.as_bytes());
    options
}

/// The same options as an `Any`, as a shim reads them on stdin.
fn shim_cgroup_options(cgroup: &str) -> Vec<u8> {
    let type_url = b"containerd.runc.v1.Options";
    let value = shim_cgroup_value(cgroup);
    let mut any = vec![0x0a, type_url.len() as u8];
    any.extend_from_slice(type_url);
    any.extend_from_slice(&[0x12, value.len() as u8]);
    any.extend_from_slice(&value);
    any
}

/// A cgroup made for the test in every hierarchy (v1) or the one tree (v2); removed on drop.
struct TestCgroup(Vec<PathBuf>);

impl TestCgroup {
    fn make(rel: &str) -> TestCgroup {
        let root = Path::new("/sys/fs/cgroup");
        let dirs: Vec<PathBuf> = if root.join("cgroup.controllers").exists() {
            vec![root.join(rel)]
        } else {
            std::fs::read_dir(root)
                .unwrap()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path().join(rel))
                .collect()
        };
        let made: Vec<PathBuf> = dirs
            .into_iter()
            .filter(|d| std::fs::create_dir_all(d).is_ok())
            .collect();
        // A new v1 cpuset has no cpus or mems, and takes no process until it has some (as
        // containerd's cgroup1.New, the test copies its parent's).
        for d in &made {
            for knob in ["cpuset.cpus", "cpuset.mems"] {
                if let (Some(parent), true) = (d.parent(), d.join(knob).exists()) {
                    let value = std::fs::read_to_string(parent.join(knob)).unwrap_or_default();
                    let _ = std::fs::write(d.join(knob), value.trim());
                }
            }
        }
        assert!(!made.is_empty(), "cannot make a cgroup {rel}");
        TestCgroup(made)
    }

    fn procs(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|d| std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default())
            .collect()
    }

    /// The processes containerd's TestShimInCgroup looks at: the v1 devices hierarchy's (a
    /// 2.x shim leaves hybrid hierarchies alone), or v2's one tree's.
    fn devices_procs(&self) -> String {
        let dir = match self.0.as_slice() {
            [only] => only,
            all => all
                .iter()
                .find(|d| d.parent().is_some_and(|p| p.ends_with("devices")))
                .expect("a devices hierarchy"),
        };
        std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Runs berth's shim's `start` in `bundle` with `stdin`, as its caller would.
fn start_by_hand(root: &Path, bundle: &Path, id: &str, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut start = Command::new(bin("containerd-shim-berth-v2"))
        .args(["-namespace", "t", "-id", id, "-address"])
        .arg(root.join("berth.sock"))
        .arg("start")
        .current_dir(bundle)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    start.stdin.take().unwrap().write_all(stdin).unwrap();
    start.wait_with_output().unwrap()
}

#[test]
fn berths_shim_joins_the_cgroup_its_caller_names() {
    berth_tests::require_root();
    let root = tempfile::tempdir().unwrap();
    let id = format!("cg-{}", std::process::id());
    let bundle = bundle_for(root.path(), &id);
    let cgroup = TestCgroup::make(&format!("berth-test-shim-{}", std::process::id()));
    let rel = format!("/berth-test-shim-{}", std::process::id());
    let out = start_by_hand(root.path(), &bundle, &id, &shim_cgroup_options(&rel));
    assert!(out.status.success(), "{out:?}");
    let serving = shims_for(&id);
    assert_eq!(serving.len(), 1);
    let pid = serving[0].to_string();
    for procs in cgroup.procs() {
        assert!(
            procs.lines().any(|p| p == pid),
            "shim {pid} is not in its cgroup: {procs:?}"
        );
    }
    // SAFETY: SIGKILL to the shim this test started.
    unsafe { libc::kill(serving[0], libc::SIGKILL) };
    assert!(eventually(|| shims_for(&id).is_empty()));

    // A cgroup that is not there fails the start, and leaves no shim.
    let id2 = format!("cg2-{}", std::process::id());
    let bundle2 = bundle_for(root.path(), &id2);
    let out = start_by_hand(
        root.path(),
        &bundle2,
        &id2,
        &shim_cgroup_options("/berth-test-no-such-cgroup"),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such cgroup"),
        "{out:?}"
    );
    assert!(shims_for(&id2).is_empty());
    assert!(!bundle2.join("shim.sock").exists());
}

/// Tasks.Create with runc options naming a shim cgroup (TestShimInCgroup in containerd's
/// suite): berthd gives the options to the shim at `start`, and the shim joins the cgroup.
async fn shim_cgroup_through_berthd(d: &Daemon, runtime: &str, id: &str) {
    shim_cgroup_task(d, runtime, id, |pid, cgroup| {
        let procs = cgroup.devices_procs();
        assert!(
            procs.lines().any(|p| p == pid.to_string()),
            "{runtime}: shim {pid} is not in the cgroup it was given: {procs:?}"
        );
    })
    .await
}

/// Creates task `id` on `runtime` with a shim cgroup, runs `check` with its shim's pid and
/// the cgroup, and removes the task.
async fn shim_cgroup_task(
    d: &Daemon,
    runtime: &str,
    id: &str,
    check: impl FnOnce(i32, &TestCgroup),
) {
    use containerd_client::services::v1::CreateTaskRequest;
    use containerd_client::with_namespace;
    use tonic::Request;
    let cgroup = TestCgroup::make(&format!("berth-test-{id}"));
    ok(&d.ctr(&[
        "containers",
        "create",
        "--runtime",
        runtime,
        IMAGE,
        id,
        "/bin/sleep",
        "1000",
    ]));
    let client = containerd_client::Client::from_path(d.socket())
        .await
        .unwrap();
    client
        .tasks()
        .create(with_namespace!(
            CreateTaskRequest {
                container_id: id.into(),
                options: Some(prost_types::Any {
                    type_url: "containerd.runc.v1.Options".into(),
                    value: shim_cgroup_value(&format!("/berth-test-{id}")),
                }),
                ..Default::default()
            },
            "default"
        ))
        .await
        .unwrap();
    let serving = shims_for(id);
    assert_eq!(serving.len(), 1, "one shim serves {id}");
    check(serving[0], &cgroup);
    kill_and_delete(d, id);
}

#[tokio::test]
async fn berthd_hands_the_shim_cgroup_to_the_shim() {
    let dir = tempfile::tempdir().unwrap();
    let shim2 = shim_2x();
    if let Some(shim) = &shim2 {
        std::os::unix::fs::symlink(shim, dir.path().join("containerd-shim-runc-v2")).unwrap();
    }
    let d = daemon_with_path_first(dir.path());
    let _w = with_busybox(&d);
    shim_cgroup_through_berthd(&d, BERTH_SHIM, "cg-berth").await;
    shim_cgroup_through_berthd(&d, RUNC_SHIM, "cg-runc").await;
    if shim2.is_none() {
        eprintln!("the runc shim was Debian's 1.6 one: no containerd 2.x shim on this machine");
    }
}

/// The standby shim of daemon `d` (started ahead of its next task), if there is one.
fn standby_of(d: &Daemon) -> Option<i32> {
    let socket = d.socket();
    let mut marker = b"-address\x00".to_vec();
    marker.extend_from_slice(socket.as_os_str().as_encoded_bytes());
    pids_matching(&marker)
        .into_iter()
        .find(|p| pids_matching(b"\x00standby\x00").contains(p))
}

/// The scheduling policy of `pid` (the 41st field of its stat: 0 normal, 5 idle).
fn policy(pid: i32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(38)?.parse().ok()
}

/// The native-runtime zygote forked by shim `pid`.
fn zygote_of(pid: i32) -> Option<i32> {
    pids_matching(b"native-runtime-zygote")
        .into_iter()
        .find(|z| {
            std::fs::read_to_string(format!("/proc/{z}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.to_string()))
                .and_then(|r| r.split_whitespace().nth(1).map(str::to_string))
                == Some(pid.to_string())
        })
}

/// berthd keeps a standby shim (idle class, zygote forked) once its own shim ran a task; the
/// next task gets that very process, in the normal class, with the command line `launch`
/// would have had, in (with its zygote) the cgroup the task names; and a daemon that is
/// killed takes its standby shim along.
#[tokio::test]
async fn a_standby_shim_takes_the_next_task_and_goes_with_its_daemon() {
    let mut d = Daemon::start().unwrap();
    let _w = with_busybox(&d);
    let run = "containers run --rm --network none".split(' ');
    let args: Vec<&str> = run.chain([IMAGE, "first", "/bin/echo", "one"]).collect();
    let out = ok(&d.berth(&args, None));
    assert_eq!(out.trim(), "one");
    let mut standby = None;
    assert!(eventually(|| {
        standby = standby_of(&d);
        standby.is_some()
    }));
    let standby = standby.unwrap();
    assert!(
        eventually(|| policy(standby) == Some(5)),
        "standby shim not in the idle class"
    );

    shim_cgroup_task(&d, BERTH_SHIM, "second", |shim, cgroup| {
        assert_eq!(shim, standby, "the standby shim did not take the task");
        // Forked before it read its task; looked for once the shim serves (on a loaded
        // machine, a process in the idle class forks late).
        let zygote = zygote_of(shim).expect("the standby shim's zygote");
        assert_eq!(policy(shim), Some(0), "the shim stays in the idle class");
        assert_eq!(
            policy(zygote),
            Some(0),
            "the zygote stays in the idle class"
        );
        let cmd = std::fs::read(format!("/proc/{shim}/cmdline")).unwrap();
        let words: Vec<&[u8]> = cmd.split(|b| *b == 0).filter(|w| !w.is_empty()).collect();
        assert_eq!(
            &words[words.len() - 3..],
            [&b"-id"[..], b"second", b"launch"]
        );
        assert!(words
            .windows(2)
            .any(|w| w == [&b"-namespace"[..], b"default"]));
        let procs = cgroup.devices_procs();
        for p in [shim, zygote] {
            assert!(
                procs.lines().any(|l| l == p.to_string()),
                "{p} not in {procs:?}"
            );
        }
    })
    .await;
    let mut next = None;
    assert!(eventually(|| {
        next = standby_of(&d).filter(|p| *p != standby);
        next.is_some()
    }));
    let next = next.unwrap();
    d.kill().unwrap();
    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    };
    assert!(
        eventually(|| gone(next)),
        "the standby shim outlived its daemon"
    );
}
