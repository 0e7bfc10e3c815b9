//! Many execs in one long-running container, on both of the shim's runtimes (native, and runc
//! with `BERTH_SHIM_RUNTIME=runc`): each exec's files in the task's state directory and its
//! descriptors in the shim go with its Delete (a soak of 3000 execs left 5000+ files), and
//! execs started side by side all answer (a fork of the serving shim once copied a lock
//! another thread held, and an exec's Start then never answered).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{bin, import_as_base, oci, ok, pids_matching, require_root, stderr, Daemon};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A daemon on `runtime` with a container `id` that sleeps, running; the busybox archive's
/// directory, to keep while the daemon runs. (Each test's container has its own id: the
/// cgroup path is the namespace's and the id's, shared by every daemon.)
fn daemon_with_sleeper(runtime: &str, id: &str) -> (Daemon, tempfile::TempDir) {
    require_root();
    let d = if runtime == "runc" {
        berth_tests::require_tool("runc");
        Daemon::start_with(|c| {
            c.env("BERTH_SHIM_RUNTIME", "runc");
        })
        .unwrap()
    } else {
        Daemon::start().unwrap()
    };
    let (work, archive) = oci::busybox_archive();
    import_as_base(&d, &archive);
    ok(&d.berth(
        &[
            "containers",
            "run",
            "-d",
            "test.local/base:latest",
            id,
            "sleep",
            "100000",
        ],
        None,
    ));
    (d, work)
}

fn task_dir(d: &Daemon, id: &str) -> PathBuf {
    d.state()
        .join("io.containerd.runtime.v2.task/default")
        .join(id)
}

/// The names of the exec files in the task's state directory.
fn exec_files(d: &Daemon, id: &str) -> Vec<String> {
    std::fs::read_dir(task_dir(d, id))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("exec-"))
        .collect()
}

/// The serving shim of the container (its command line names this daemon's socket and the
/// container's id).
fn shim_pid(d: &Daemon, id: &str) -> i32 {
    let id_arg = format!("-id\0{id}\0");
    let socket = d.socket().display().to_string();
    let pids: Vec<i32> = pids_matching(id_arg.as_bytes())
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.windows(socket.len()).any(|w| w == socket.as_bytes()))
        })
        .collect();
    assert_eq!(pids.len(), 1, "the shim of {id}: {pids:?}");
    pids[0]
}

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// `berth tasks exec` (Exec, Start, Wait, Delete); its failure, if it failed.
fn exec(d: &Daemon, id: &str, exec_id: &str) -> Option<String> {
    exec_at(&d.socket(), id, exec_id)
}

/// [`exec`] against the daemon at `socket` (a [`Daemon`] stays on its test's thread).
fn exec_at(socket: &Path, id: &str, exec_id: &str) -> Option<String> {
    let out = Command::new(bin("berth"))
        .arg("--address")
        .arg(socket)
        .args(["tasks", "exec", "--exec-id", exec_id, id, "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (!out.status.success()).then(|| format!("exec {exec_id}: {}", stderr(&out)))
}

fn execs_leave_nothing_behind(runtime: &str) {
    let id = &format!("churn-{runtime}");
    let (d, _work) = daemon_with_sleeper(runtime, id);
    let shim = shim_pid(&d, id);
    // One exec first: what the shim opens once (its connection to the daemon's events, a
    // first thread's) is not what each exec leaves.
    assert_eq!(exec(&d, id, "warm"), None);
    let before = fds(shim);
    for i in 0..50 {
        assert_eq!(exec(&d, id, &format!("e{i}")), None);
    }
    assert_eq!(exec_files(&d, id), Vec::<String>::new());
    // The last exec's descriptors close as its request threads end, after the answer.
    let mut after = fds(shim);
    for _ in 0..50 {
        if after <= before {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        after = fds(shim);
    }
    assert_eq!(
        after,
        before,
        "the shim's descriptors after 50 execs: {:?}",
        std::fs::read_dir(format!("/proc/{shim}/fd"))
            .unwrap()
            .map(|e| std::fs::read_link(e.unwrap().path()).unwrap_or_default())
            .collect::<Vec<_>>()
    );
}

#[test]
fn exec_files_and_descriptors_go_with_delete_native() {
    execs_leave_nothing_behind("native");
}

#[test]
fn exec_files_and_descriptors_go_with_delete_runc() {
    execs_leave_nothing_behind("runc");
}

/// Four clients exec into one container at once, `each` execs apiece: every one answers.
fn parallel_execs_all_answer(runtime: &str, each: usize) {
    let id = format!("parallel-{runtime}");
    let (d, _work) = daemon_with_sleeper(runtime, &id);
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (socket, id) = (d.socket(), id.clone());
            std::thread::spawn(move || {
                (0..each)
                    .filter_map(|i| exec_at(&socket, &id, &format!("p{c}-{i}")))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let failures: Vec<String> = clients
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    assert_eq!(exec_files(&d, &id), Vec::<String>::new());
}

#[test]
fn parallel_execs_all_answer_native() {
    parallel_execs_all_answer("native", 200);
}

#[test]
fn parallel_execs_all_answer_runc() {
    parallel_execs_all_answer("runc", 50);
}
