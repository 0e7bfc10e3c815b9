//! Docker Engine (Debian's dockerd 20.10) on berthd: `dockerd --containerd=<berthd socket>`
//! drives the whole container lifecycle through berth's containerd API and Debian's runc
//! shim, as it does on containerd. Every docker command runs under a timeout, so a hang (a
//! missed exit event) fails instead of stalling.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::Daemon;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER: &str = "/usr/bin/docker";

/// A dockerd on private roots, talking to `containerd`; stopped on drop.
struct Dockerd {
    dir: PathBuf,
    child: Child,
}

impl Dockerd {
    fn start(dir: &Path, containerd: &Path) -> Dockerd {
        Self::start_with(dir, containerd, &[])
    }

    fn start_with(dir: &Path, containerd: &Path, extra: &[&str]) -> Dockerd {
        assert!(
            Path::new(DOCKERD).exists() && Path::new(DOCKER).exists(),
            "Docker Engine is missing: run scripts/setup-deps.sh (it installs docker.io without starting it)"
        );
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new(DOCKERD)
            .arg(format!("--containerd={}", containerd.display()))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .args(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Dockerd {
            dir: dir.to_path_buf(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if d.docker(&["version"]).status.success() {
                return d;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("dockerd did not come up: {}", d.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// `docker ARGS`, killed after 60 s.
    fn docker(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("60")
            .arg(DOCKER)
            .args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.join("docker.sock").display()),
            )
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `docker ARGS` that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Dockerd {
    /// SIGTERM, and wait for dockerd to go.
    fn stop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = self.docker(&["rm", "-f", "web", "live", "kept"]);
        self.stop();
        // dockerd leaves its data root bind-mounted on itself.
        berth_tests::unmount_under(&self.dir);
    }
}

/// A busybox image for docker, imported from a root filesystem tar.
fn import_busybox(d: &Dockerd, dir: &Path) {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for app in ["sh", "echo", "sleep", "cat", "true", "ls", "ps"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
    }
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    d.ok(&["import", tar.to_str().unwrap(), "test/busybox:latest"]);
}

#[test]
fn docker_engine_runs_its_whole_container_lifecycle_on_berthd() {
    let mut berthd = Daemon::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let d = Dockerd::start(work.path(), &berthd.socket());
    import_busybox(&d, work.path());
    let img = "test/busybox:latest";

    // Foreground runs end, with the container's exit code.
    assert_eq!(d.ok(&["run", "--rm", img, "echo", "hello"]), "hello\n");
    let failed = d.docker(&["run", "--rm", img, "sh", "-c", "exit 7"]);
    assert_eq!(failed.status.code(), Some(7), "{}", d.log());
    // Limits and a bind mount.
    let host = work.path().join("shared");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("file"), "from the host").unwrap();
    let vol = format!("{}:/host:ro", host.display());
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "--memory",
            "64m",
            "-v",
            &vol,
            img,
            "cat",
            "/host/file"
        ]),
        "from the host"
    );

    // Detached: logs, exec, top, stats, pause/unpause, stop, start, kill, rm.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        img,
        "sh",
        "-c",
        "echo started; exec sleep 300",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.ok(&["logs", "web"]).contains("started") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d.ok(&["logs", "web"]).contains("started"));
    assert_eq!(d.ok(&["exec", "web", "echo", "in-exec"]), "in-exec\n");
    assert_eq!(
        d.docker(&["exec", "web", "sh", "-c", "exit 3"])
            .status
            .code(),
        Some(3)
    );
    assert!(d.ok(&["top", "web"]).contains("sleep 300"));
    let stats = d.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}}",
        "web",
    ]);
    assert!(stats.starts_with("web ") && stats.contains("iB"), "{stats}");
    d.ok(&["pause", "web"]);
    assert!(d.ok(&["ps", "--format", "{{.Status}}"]).contains("Paused"));
    d.ok(&["unpause", "web"]);
    // sleep as pid 1 ignores SIGTERM: stop kills it after the timeout.
    d.ok(&["stop", "-t", "1", "web"]);
    assert!(d
        .ok(&["ps", "-a", "--format", "{{.Status}}"])
        .contains("Exited (137)"));
    d.ok(&["start", "web"]);
    d.ok(&["kill", "web"]);
    d.ok(&["rm", "web"]);

    // berthd SIGKILLed with a container running: docker carries on once it is back.
    d.ok(&["run", "-d", "--name", "live", img, "sleep", "300"]);
    berthd.restart().unwrap();
    // dockerd redials with gRPC's backoff, as after a containerd restart.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut exec = d.docker(&["exec", "live", "echo", "after"]);
    while !exec.status.success() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        exec = d.docker(&["exec", "live", "echo", "after"]);
    }
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout),
        "after\n",
        "{}",
        d.log()
    );
    d.ok(&["stop", "-t", "1", "live"]);
    d.ok(&["rm", "live"]);
    assert_eq!(d.ok(&["run", "--rm", img, "echo", "again"]), "again\n");
}

/// `docker run -it` gets a terminal (through script(1)); `--live-restore` keeps containers
/// running while dockerd restarts, and the restarted dockerd finds them through berthd.
#[test]
fn docker_terminals_and_live_restore() {
    let berthd = Daemon::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut d = Dockerd::start_with(work.path(), &berthd.socket(), &["--live-restore"]);
    import_busybox(&d, work.path());
    let img = "test/busybox:latest";
    let sock = format!("unix://{}", work.path().join("docker.sock").display());
    let out = Command::new("timeout")
        .args(["60", "script", "-qec"])
        .arg(format!("{DOCKER} run --rm -it {img} sh -c 'tty; exit 5'"))
        .arg("/dev/null")
        .env("DOCKER_HOST", &sock)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert_eq!(out.status.code(), Some(5), "{text}");

    d.ok(&["run", "-d", "--name", "kept", img, "sleep", "300"]);
    d.stop();
    let d = Dockerd::start_with(work.path(), &berthd.socket(), &["--live-restore"]);
    assert!(d
        .ok(&["ps", "--format", "{{.Names}} {{.Status}}"])
        .contains("kept Up"));
    assert_eq!(d.ok(&["exec", "kept", "echo", "restored"]), "restored\n");
    d.ok(&["rm", "-f", "kept"]);
}
