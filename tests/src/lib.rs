//! Shared fixtures for the black-box suites: a real `berthd` on a temporary root and socket,
//! the Rust client connected to it, and helpers to run Debian's `ctr` against it. Test code:
//! a failed step panics with what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod oci;

use anyhow::{bail, Context, Result};
use berth_client::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where cargo put the workspace binaries: next to this test executable's `deps/` folder,
/// unless BERTH_BIN_DIR says otherwise.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BERTH_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let deps = exe.parent().unwrap_or(Path::new("."));
    deps.parent().unwrap_or(deps).to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

/// Tests that start daemons run as root, as CI does; elsewhere they fail saying so.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and touches no memory.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test runs real daemons and must run as root (CI does)"
    );
}

pub fn require_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{name} is not installed: run `apt-get install containerd` (or .ci/run), which provides it")
    })
}

/// Adjusts a daemon's command line or environment before it starts.
type Customize = Box<dyn Fn(&mut Command)>;

/// A running berthd on its own temporary root, state and socket.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    customize: Option<Customize>,
}

impl Daemon {
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("berth.sock")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("berthd.log")
    }

    pub fn start() -> Result<Self> {
        Self::start_with(|_| {})
    }

    /// Starts a daemon whose command line or environment `customize` adjusts.
    pub fn start_with(customize: impl Fn(&mut Command) + 'static) -> Result<Self> {
        require_root();
        let dir = tempfile::Builder::new().prefix("berth-test-").tempdir()?;
        Self::start_in(dir, customize)
    }

    /// Starts a daemon in `dir` (its root, state and socket go there as in [`Daemon::start`]):
    /// for tests that prepare the directory first, such as a root on a filesystem of its own.
    pub fn start_in(
        dir: tempfile::TempDir,
        customize: impl Fn(&mut Command) + 'static,
    ) -> Result<Self> {
        require_root();
        let mut d = Daemon {
            dir,
            child: None,
            customize: Some(Box::new(customize)),
        };
        d.spawn()?;
        Ok(d)
    }

    /// The command line that starts this daemon (for tests that want to vary it).
    pub fn command(&self) -> Command {
        let mut cmd = self.berthd_on_dirs();
        cmd.arg("--log-level").arg("debug");
        cmd
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())?;
        let mut cmd = self.command();
        if let Some(c) = &self.customize {
            c(&mut cmd);
        }
        let child = cmd
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start berthd")?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("berthd exited early ({status}): {}", self.log_text());
                }
            }
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("berthd did not listen within 20s: {}", self.log_text())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait for a graceful exit; returns the exit status.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("daemon not running")?;
        // SAFETY: sending a signal to our own child process by pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                c.kill()?;
                bail!("berthd did not stop within 20s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn()
    }

    pub async fn client(&self) -> Result<Client> {
        Ok(Client::connect(self.socket()).await?)
    }

    /// Runs Debian's `ctr` against this daemon.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_stdin(args, None)
    }

    pub fn ctr_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let ctr = require_tool("ctr");
        let mut cmd = Command::new(ctr);
        cmd.arg("--address").arg(self.socket()).args(args);
        run_with_stdin(cmd, stdin)
    }

    /// Starts berth's own CLI against this daemon without waiting for it.
    pub fn berth_spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(bin("berth"))
            .arg("--address")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth")
    }

    /// Runs berth's own CLI against this daemon.
    /// (Under `timeout 300`: a hang fails the test instead of stalling the whole run.)
    pub fn berth(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.arg("300")
            .arg(bin("berth"))
            .arg("--address")
            .arg(self.socket())
            .args(args);
        run_with_stdin(cmd, stdin)
    }
}

fn run_with_stdin(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn command");
    if let Some(data) = stdin {
        let mut s = child.stdin.take().expect("stdin");
        s.write_all(data).expect("write stdin");
    }
    child.wait_with_output().expect("wait for command")
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Containers a test left go with their daemon, so their networks' veths, leases and
        // rules do not outlive the test.
        if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
            let ids = self.berth(&["ps", "-aq"], None);
            let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = self.berth(&args, None);
            }
        }
        let _ = self.kill();
        // The bridges of its networks outlive a daemon by design, as do its shims: a test's
        // daemon takes everything it put on the host along.
        let out = self.cleanup();
        if !out.status.success() {
            eprintln!(
                "berthd cleanup of {} failed: {}{}",
                self.dir.path().display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Daemon {
    /// `berthd cleanup` on this daemon's root and state (the daemon must be stopped): its
    /// shims, mounts, bridges, veths and iptables rules leave the host.
    pub fn cleanup(&self) -> Output {
        let mut cmd = self.berthd_on_dirs();
        cmd.arg("cleanup");
        run_with_stdin(cmd, None)
    }

    /// berthd with this daemon's root, state and socket.
    fn berthd_on_dirs(&self) -> Command {
        let mut cmd = Command::new(bin("berthd"));
        cmd.arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .arg("--address")
            .arg(self.socket());
        cmd
    }
}

impl Daemon {
    /// The Linux bridges of the networks this daemon made.
    pub fn bridges(&self) -> Vec<String> {
        let dir = self.root().join("io.berth.network.v1").join("net.d");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return vec![];
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter_map(|v| v["berth"]["bridge"].as_str().map(str::to_string))
            .collect()
    }
}

/// The busybox test image three ways: pushed to a loopback registry as `reference`, as an
/// OCI archive, and imported (and unpacked) into a daemon as `test.local/base:v1`.
pub struct Busybox {
    pub registry: oci::Registry,
    pub reference: String,
    pub archive: PathBuf,
    _work: tempfile::TempDir,
}

/// [`Busybox`] for `d`, pushed to the registry under `repo`.
pub fn busybox_everywhere(d: &Daemon, repo: &str) -> Busybox {
    let registry = oci::Registry::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    oci::layout(&layout, "v1", &[oci::busybox_layer()]);
    let reference = registry.push(&layout, "v1", repo).unwrap();
    let archive = work.path().join("busybox.tar");
    oci::archive(&layout, &archive);
    import_as_base(d, &archive);
    Busybox {
        registry,
        reference,
        archive,
        _work: work,
    }
}

/// Imports (and unpacks) `archive` into `d` under the base name `test.local/base`.
pub fn import_as_base(d: &Daemon, archive: &std::path::Path) {
    ok(&d.berth(
        &[
            "images",
            "import",
            "--base-name",
            "test.local/base",
            archive.to_str().unwrap(),
        ],
        None,
    ));
}

/// A daemon with the busybox test image imported (not unpacked) as `<base>:latest`; keep
/// the directory alive while the daemon runs.
pub fn daemon_with_busybox(base: &str) -> (Daemon, tempfile::TempDir) {
    let d = Daemon::start().unwrap();
    let (work, archive) = oci::busybox_archive();
    ok(&d.berth(
        &[
            "images",
            "import",
            "--no-unpack",
            "--base-name",
            base,
            archive.to_str().unwrap(),
        ],
        None,
    ));
    (d, work)
}

/// Waits (up to 5 s) until `berth tasks ls` shows a stopped task.
pub fn wait_stopped(d: &Daemon) {
    for _ in 0..50 {
        if ok(&d.berth(&["tasks", "ls"], None)).contains("STOPPED") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A command's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a command succeeded and returns its stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}): stdout={} stderr={}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// The pids whose command line holds `needle` (its arguments NUL-separated, as
/// `/proc/PID/cmdline` has them).
pub fn pids_matching(needle: &[u8]) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            cmd.windows(needle.len())
                .any(|w| w == needle)
                .then_some(pid)
        })
        .collect()
}

/// Debian's containerd on its own temporary root, state and socket (never the system one),
/// with this workspace's binaries first on its PATH so it can find berth's shim.
/// The mount points under `dir` (itself included), from this process's mount table.
pub fn mount_points_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Unmounts (lazily, deepest first) whatever is still mounted under `dir`: what a foreign
/// daemon a test ran (dockerd) left behind when it stopped.
pub fn unmount_under(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let mut points = mount_points_under(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) {
            // SAFETY: a NUL-terminated path that lives across the call.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// A containerd daemon on its own temporary root (CRI off) that finds berth's shim on its
/// PATH; stopped on drop.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    child: Child,
    ctr: PathBuf,
}

impl Containerd {
    /// Debian's containerd (1.6), with its ctr.
    pub fn start() -> Result<Self> {
        Self::start_binaries(require_tool("containerd"), require_tool("ctr"))
    }

    /// The `containerd` and `ctr` in `dir` (containerd 2.x's build, say).
    pub fn start_from(dir: &Path) -> Result<Self> {
        Self::start_binaries(dir.join("containerd"), dir.join("ctr"))
    }

    fn start_binaries(bin: PathBuf, ctr: PathBuf) -> Result<Self> {
        require_root();
        let dir = tempfile::Builder::new().prefix("berth-ctrd-").tempdir()?;
        let d = dir.path();
        let sock = d.join("containerd.sock");
        std::fs::write(
            d.join("config.toml"),
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n[debug]\n  address = \"\"\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
                root = d.join("root").display(),
                state = d.join("state").display(),
                sock = sock.display(),
                opt = d.join("opt").display(),
            ),
        )?;
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(d.join("containerd.log"))?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(d.join("config.toml"))
            .env("PATH", path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                return Ok(Containerd { dir, child, ctr });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("containerd did not listen within 20s")
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.ctr);
        cmd.arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(args);
        run_with_stdin(cmd, None)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The load mix `load.rs` runs for seconds and `soak.rs` for hours: imports and pulls in a
/// namespace of the client's own, runs and execs, tags made and removed.
#[derive(Clone)]
pub struct LoadMix {
    /// The busybox OCI archive imported.
    pub archive: String,
    /// Its reference in a plain-HTTP loopback registry.
    pub reference: String,
    /// The imported (unpacked) image containers run.
    pub base: String,
    /// A running container execs go into.
    pub service: String,
}

impl LoadMix {
    /// Client `c`'s `i`th operation: its kind and berth's arguments.
    pub fn step(&self, c: usize, i: u64) -> (&'static str, Vec<String>) {
        let ns = format!("load{c}");
        let tag = format!("test.local/t{c}:{i}");
        // The untag step follows the tag step, so it removes the tag made the step before;
        // any other index names a tag no step made, and tags would pile up for the whole run
        // (issue #30: 3,400 in a soak's hour, the metadata file growing with them).
        let old_tag = format!("test.local/t{c}:{}", i.saturating_sub(1));
        let (run_id, exec_id) = (format!("c{c}-{i}"), format!("e{c}-{i}"));
        let (kind, args): (&str, Vec<&str>) = match (c + i as usize) % 6 {
            0 => (
                "import",
                vec![
                    "--namespace",
                    &ns,
                    "images",
                    "import",
                    "--no-unpack",
                    "--base-name",
                    "test.local/imp",
                    &self.archive,
                ],
            ),
            1 => (
                "pull",
                vec![
                    "--namespace",
                    &ns,
                    "images",
                    "pull",
                    "--plain-http",
                    &self.reference,
                ],
            ),
            2 => (
                "run",
                vec!["containers", "run", "--rm", &self.base, &run_id, "true"],
            ),
            3 => (
                "exec",
                vec![
                    "tasks",
                    "exec",
                    "--exec-id",
                    &exec_id,
                    &self.service,
                    "true",
                ],
            ),
            4 => ("tag", vec!["images", "tag", &self.base, &tag]),
            _ => ("untag", vec!["images", "rm", &old_tag]),
        };
        (kind, args.into_iter().map(str::to_string).collect())
    }

    /// Whether a step that failed with `stderr` failed as it may: removing a tag whose tag
    /// step failed (that failure is counted by itself) is "not found".
    pub fn expected_failure(kind: &str, stderr: &str) -> bool {
        kind == "untag" && stderr.contains("not found")
    }
}

#[cfg(test)]
mod load_mix_tests {
    use super::LoadMix;
    use std::collections::BTreeSet;

    /// Every tag a client makes is removed by its own next step, so the tags alive stay
    /// bounded however long the mix runs.
    #[test]
    fn untag_removes_every_tag_made() {
        let mix = LoadMix {
            archive: "a.tar".into(),
            reference: "r".into(),
            base: "b".into(),
            service: "s".into(),
        };
        for c in 0..32 {
            let mut alive = BTreeSet::new();
            let (mut tags, mut removed) = (0, 0);
            for i in 0..600 {
                let (kind, args) = mix.step(c, i);
                let name = args.last().unwrap().clone();
                match kind {
                    "tag" => {
                        tags += 1;
                        assert!(alive.insert(name));
                    }
                    "untag" if alive.remove(&name) => removed += 1,
                    _ => {}
                }
                assert!(alive.len() <= 1, "client {c} step {i}: {alive:?} alive");
            }
            assert_eq!(tags, 100);
            assert!(
                removed >= tags - 1,
                "client {c}: {removed} of {tags} tags removed"
            );
        }
    }
}
