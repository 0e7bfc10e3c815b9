//! Seccomp seen from inside real containers on runc and the native runtime: berth's RuntimeDefault profile keeps
//! glibc's threads and posix_spawn working (clone3 answers ENOSYS, so glibc falls back to
//! clone) and refuses what Docker's and containerd's default refuse, under `berth run` and
//! in a CRI pod; `berth run --security-opt` turns it off or puts a profile file in its place.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_proto::cri::v1 as cri;
use berth_tests::{oci, ok, stderr, Daemon};
use cri::runtime_service_client::RuntimeServiceClient;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const IMAGE: &str = "test.local/probe:v1";

/// pthread_create, then posix_spawn of /bin/true: both go through clone3 first in glibc
/// 2.34 and later.
const THREADS_C: &str = r#"
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
extern char **environ;
static void *work(void *arg) { return arg; }
int main(void) {
    pthread_t t;
    int rc = pthread_create(&t, NULL, work, NULL);
    if (rc) { printf("pthread_create: %s\n", strerror(rc)); return 1; }
    pthread_join(t, NULL);
    pid_t pid;
    char *argv[] = {"/bin/true", NULL};
    rc = posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ);
    if (rc) { printf("posix_spawn: %s\n", strerror(rc)); return 1; }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) {
        printf("posix_spawn: child status %d\n", status);
        return 1;
    }
    printf("threads ok\n");
    return 0;
}
"#;

/// Makes system calls a filter may refuse and prints `name=ok` or `name=ERRNO` for each.
/// Calls from 424 on have one number on every architecture.
const SYSCALLS_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
static void report(const char *name, long rc) {
    printf("%s=%s\n", name, rc < 0 ? strerrorname_np(errno) : "ok");
}
int main(void) {
    report("unshare", syscall(SYS_unshare, CLONE_NEWUTS));
    long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, NULL, 0);
    report("clone_newuser", pid);
    report("clone3", syscall(435, NULL, 0));
    report("io_uring_setup", syscall(425, 1, NULL));
    report("pidfd_getfd", syscall(438, -1, 0, 0));
    report("listmount", syscall(458, NULL, NULL, 0, 0));
    report("vsock", socket(40, SOCK_STREAM, 0));
    report("keyctl", syscall(SYS_keyctl, 0, -3, 0));
    long persona = syscall(SYS_personality, 0xffffffffUL);
    report("personality_query", persona);
    long r = syscall(SYS_personality, ADDR_NO_RANDOMIZE);
    report("personality_no_aslr", r);
    if (r >= 0) syscall(SYS_personality, persona);
    report("mkdir", mkdir("/tmp/probe-dir", 0755));
    return 0;
}
"#;

/// The probe image as an OCI archive: busybox with /probe/threads and /probe/syscalls.
struct Probes {
    dir: tempfile::TempDir,
    archive: PathBuf,
}

fn compile(dir: &Path, name: &str, source: &str) -> Vec<u8> {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(name);
    let cc = Command::new("cc")
        .args(["-static", "-pthread", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| {
            panic!("cc could not run ({e}): apt-get install gcc libc6-dev (scripts/setup-deps.sh)")
        });
    assert!(
        cc.status.success(),
        "cc -static {name}.c failed (apt-get install gcc libc6-dev; scripts/setup-deps.sh): {}",
        stderr(&cc)
    );
    std::fs::read(out).unwrap()
}

fn probe_image() -> Probes {
    let dir = tempfile::tempdir().unwrap();
    let threads = compile(dir.path(), "threads", THREADS_C);
    let syscalls = compile(dir.path(), "syscalls", SYSCALLS_C);
    let probes = oci::layer(&[
        oci::Entry::Dir("probe", 0o755),
        oci::Entry::File("probe/threads", &threads, 0o755),
        oci::Entry::File("probe/syscalls", &syscalls, 0o755),
    ]);
    let layout = dir.path().join("layout");
    oci::layout_with(
        &layout,
        "v1",
        &[oci::busybox_layer(), probes],
        serde_json::json!({"Cmd": ["/bin/sleep", "1000000"], "Env": ["PATH=/bin"]}),
    );
    let archive = dir.path().join("probe.tar");
    oci::archive(&layout, &archive);
    Probes { dir, archive }
}

/// Imports the probe image into `namespace` of `d` as [`IMAGE`].
fn import(d: &Daemon, probes: &Probes, namespace: &str) {
    let archive = probes.archive.to_str().unwrap();
    ok(&d.berth(
        &[
            "-n",
            namespace,
            "images",
            "import",
            "--base-name",
            "test.local/probe",
            archive,
        ],
        None,
    ));
}

/// `berth run --rm` on runc, with `opts` before the image and `cmd` after the id.
fn run(d: &Daemon, id: &str, opts: &[&str], cmd: &[&str]) -> Output {
    let mut args = vec!["containers", "run", "--rm", "--runc-binary", "runc"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[IMAGE, id]);
    args.extend_from_slice(cmd);
    d.berth(&args, None)
}

/// The probe's `name=result` lines.
fn results(out: &str) -> HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The `Seccomp:` mode in a /proc/PID/status (0 none, 2 filter).
fn seccomp_mode(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .unwrap_or_else(|| panic!("no Seccomp line in {status}"))
        .trim()
        .to_string()
}

/// What RuntimeDefault answers, as Docker's and containerd's default profile do.
fn assert_runtime_default(probe: &HashMap<String, String>) {
    for (name, expected) in [
        ("unshare", "EPERM"),
        ("clone_newuser", "EPERM"),
        ("clone3", "ENOSYS"),
        ("io_uring_setup", "EPERM"),
        ("pidfd_getfd", "EPERM"),
        ("listmount", "ENOSYS"),
        ("vsock", "EPERM"),
        ("keyctl", "EPERM"),
        ("personality_query", "ok"),
        ("personality_no_aslr", "ENOSYS"),
        ("mkdir", "ok"),
    ] {
        assert_eq!(
            probe.get(name).map(String::as_str),
            Some(expected),
            "{name}: {probe:?}"
        );
    }
}

/// The probe's answers under `berth run` with `opts`.
fn probe(d: &Daemon, id: &str, opts: &[&str]) -> HashMap<String, String> {
    results(&ok(&run(d, id, opts, &["/probe/syscalls"])))
}

/// The Seccomp mode of a process under `berth run` with `opts`.
fn mode(d: &Daemon, id: &str, opts: &[&str]) -> String {
    seccomp_mode(&ok(&run(d, id, opts, &["/bin/cat", "/proc/self/status"])))
}

/// `--security-opt seccomp=FILE` for `profile` written to `dir/name`.
fn profile_option(dir: &Path, name: &str, profile: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, profile).unwrap();
    format!("seccomp={}", path.display())
}

/// `berth run --security-opt opt` fails, saying `why`, and leaves no container.
fn refused(d: &Daemon, opt: &str, why: &str) {
    let out = run(d, "refused", &["--security-opt", opt], &["/bin/true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(why), "{}", stderr(&out));
    assert!(ok(&d.berth(&["ps", "-aq"], None)).trim().is_empty());
}

#[test]
fn berth_run_applies_runtime_default() {
    let probes = probe_image();
    let d = Daemon::start().unwrap();
    import(&d, &probes, "default");
    let out = run(&d, "threads", &[], &["/probe/threads"]);
    assert_eq!(ok(&out).trim(), "threads ok", "{}", stderr(&out));
    assert_eq!(mode(&d, "status", &[]), "2");
    assert_runtime_default(&probe(&d, "probe", &[]));
}

/// The same on the native runtime (berth run's default), for the container's first process
/// and for a process exec'd into it: libcontainer applies neither the filter to an exec nor
/// masked compares as the spec means them; the shim mends both.
#[test]
fn runtime_default_holds_on_native_for_the_init_and_execs() {
    let probes = probe_image();
    let d = Daemon::start().unwrap();
    import(&d, &probes, "default");
    let native = |args: &[&str]| {
        let mut all = vec!["containers", "run", "--rm"];
        all.extend_from_slice(args);
        d.berth(&all, None)
    };
    let out = native(&[IMAGE, "threads", "/probe/threads"]);
    assert_eq!(ok(&out).trim(), "threads ok", "{}", stderr(&out));
    assert_eq!(
        seccomp_mode(&ok(&native(&[
            IMAGE,
            "status",
            "/bin/cat",
            "/proc/self/status"
        ]))),
        "2"
    );
    assert_runtime_default(&results(&ok(&native(&[IMAGE, "probe", "/probe/syscalls"]))));
    ok(&d.berth(
        &[
            "containers",
            "run",
            "-d",
            IMAGE,
            "held",
            "/bin/sleep",
            "1000",
        ],
        None,
    ));
    assert!(
        d.state().join("native/default/held/state.json").exists(),
        "the container did not run on the native runtime"
    );
    let exec = d.berth(&["exec", "held", "/probe/syscalls"], None);
    assert_runtime_default(&results(&ok(&exec)));
    let exec = d.berth(&["exec", "held", "/probe/threads"], None);
    assert_eq!(ok(&exec).trim(), "threads ok", "{}", stderr(&exec));
    let status = d.berth(&["exec", "held", "/bin/cat", "/proc/self/status"], None);
    assert_eq!(seccomp_mode(&ok(&status)), "2");
}

#[test]
fn berth_run_security_opt_unconfined_and_profile_files() {
    let probes = probe_image();
    let d = Daemon::start().unwrap();
    import(&d, &probes, "default");
    let unconfined = ["--security-opt", "seccomp=unconfined"];
    assert_eq!(mode(&d, "u1", &unconfined), "0");
    let answers = probe(&d, "u2", &unconfined);
    // What the kernel itself answers these (bad) arguments, no filter in the way.
    assert_eq!(answers["clone3"], "EINVAL", "{answers:?}");
    assert_eq!(answers["pidfd_getfd"], "EBADF", "{answers:?}");
    assert_eq!(answers["listmount"], "EFAULT", "{answers:?}");
    assert_eq!(answers["personality_no_aslr"], "ok", "{answers:?}");
    assert_ne!(answers["vsock"], "EPERM", "{answers:?}");

    // An OCI profile file: mkdir answers EXDEV, everything else is allowed.
    let oci = profile_option(
        probes.dir.path(),
        "oci.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18}]}"#,
    );
    let answers = probe(&d, "f1", &["--security-opt", &oci]);
    assert_eq!(answers["mkdir"], "EXDEV", "{answers:?}");
    assert_eq!(answers["clone3"], "EINVAL", "{answers:?}");
    // Docker's format: entries for capabilities the container lacks are left out.
    let docker = profile_option(
        probes.dir.path(),
        "docker.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
            "syscalls": [
              {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18,
               "includes": {"caps": ["CAP_KILL"]}, "comment": "a default capability"},
              {"names": ["listmount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18,
               "includes": {"caps": ["CAP_SYS_ADMIN"]}}]}"#,
    );
    let answers = probe(&d, "f2", &["--security-opt", &docker]);
    assert_eq!(answers["mkdir"], "EXDEV", "{answers:?}");
    assert_eq!(answers["listmount"], "EFAULT", "{answers:?}");

    // Mistakes fail before anything is made.
    refused(
        &d,
        "seccomp=/nonexistent/profile.json",
        "/nonexistent/profile.json",
    );
    let broken = profile_option(probes.dir.path(), "broken.json", "{\"syscalls\": []}");
    refused(&d, &broken, "defaultAction");
    refused(&d, "apparmor=x", "seccomp=unconfined");
}

/// Polls `f` until it holds (20 s at most).
async fn until<F: FnMut() -> Fut, Fut: std::future::Future<Output = bool>>(what: &str, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn runtime_default_container(name: &str, command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_cri_pod_under_runtime_default_runs_threads() {
    let probes = probe_image();
    // A host-network pod needs no CNI; the probe image is the sandbox image too.
    let config = probes.dir.path().join("berthd.toml");
    let no_cni = probes.dir.path().join("net.d");
    std::fs::create_dir(&no_cni).unwrap();
    std::fs::write(
        &config,
        format!(
            "[cri]\nsandbox_image = \"{IMAGE}\"\ncni_conf_dir = \"{}\"\nrestrict_oom_score_adj = true\n",
            no_cni.display()
        ),
    )
    .unwrap();
    let d = Daemon::start_with(move |cmd| {
        cmd.arg("--config").arg(&config);
    })
    .unwrap();
    import(&d, &probes, "k8s.io");
    let mut rt = RuntimeServiceClient::new(d.client().await.unwrap().channel());
    let logs = probes.dir.path().join("pod-logs");
    let pod_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "seccomp".into(),
            uid: "uid-seccomp".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: logs.display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let start = |c: cri::ContainerConfig| {
        let (mut rt, pod, pod_config) = (rt.clone(), pod.clone(), pod_config.clone());
        async move {
            let id = rt
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod,
                    config: Some(c),
                    sandbox_config: Some(pod_config),
                })
                .await
                .unwrap()
                .into_inner()
                .container_id;
            rt.start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap();
            id
        }
    };

    let threads = start(runtime_default_container("threads", &["/probe/threads"])).await;
    let status = |id: String| {
        let mut rt = rt.clone();
        async move {
            rt.container_status(cri::ContainerStatusRequest {
                container_id: id,
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
        }
    };
    until("the threads container to exit", || {
        let s = status(threads.clone());
        async move { s.await.state == cri::ContainerState::ContainerExited as i32 }
    })
    .await;
    let log = std::fs::read_to_string(logs.join("threads.log")).unwrap_or_default();
    assert_eq!(status(threads.clone()).await.exit_code, 0, "log: {log}");
    assert!(log.contains("threads ok"), "{log}");

    let sleeper = start(runtime_default_container(
        "probe",
        &["/bin/sleep", "1000000"],
    ))
    .await;
    let exec = |cmd: &[&str]| {
        let (mut rt, id) = (rt.clone(), sleeper.clone());
        let cmd = cmd.iter().map(|s| s.to_string()).collect();
        async move {
            let r = rt
                .exec_sync(cri::ExecSyncRequest {
                    container_id: id,
                    cmd,
                    timeout: 30,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
            String::from_utf8_lossy(&r.stdout).into_owned()
        }
    };
    assert_eq!(exec(&["/probe/threads"]).await.trim(), "threads ok");
    assert_eq!(
        seccomp_mode(&exec(&["/bin/cat", "/proc/self/status"]).await),
        "2"
    );
    assert_runtime_default(&results(&exec(&["/probe/syscalls"]).await));
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
}
