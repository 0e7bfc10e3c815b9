//! The snapshotter conformance suite through a proxy plugin: berth-snapshotter serving
//! overlayfs and native on a unix socket, driven by berthd's proxy client. Mounts, so root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_services::edge::snapshotter_proxy::client::ProxySnapshotter;
use berth_services::edge::snapshotter_proxy::ProxyPlugin;
use berth_snapshotters::{Info, Labels, Mount, Result, Snapshotter, Usage};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A berth-snapshotter process and the client talking to it; stopped with SIGTERM on drop.
struct Served {
    client: ProxySnapshotter,
    server: Child,
}

impl Served {
    fn start(snapshotter: &str, root: &Path) -> Served {
        let socket = root.with_extension("sock");
        let server = Command::new(env!("CARGO_BIN_EXE_berth-snapshotter"))
            .args([
                "--snapshotter",
                snapshotter,
                "--log-level",
                "warn",
                "--root",
            ])
            .arg(root)
            .arg("--address")
            .arg(&socket)
            .spawn()
            .expect("start berth-snapshotter");
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "berth-snapshotter never listened on {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let client = ProxySnapshotter::new(&ProxyPlugin {
            name: "conformance".into(),
            address: socket,
            timeout: Duration::from_secs(60),
            exports: Default::default(),
            capabilities: vec![],
        })
        .unwrap();
        Served { client, server }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: kill on the pid of a child this test started and has not yet reaped.
        unsafe { libc::kill(self.server.id() as i32, libc::SIGTERM) };
        let status = self.server.wait().unwrap();
        assert!(status.success(), "berth-snapshotter stopped with {status}");
    }
}

impl Snapshotter for Served {
    fn stat(&self, key: &str) -> Result<Info> {
        self.client.stat(key)
    }
    fn update(&self, info: Info, paths: &[String]) -> Result<Info> {
        self.client.update(info, paths)
    }
    fn usage(&self, key: &str) -> Result<Usage> {
        self.client.usage(key)
    }
    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        self.client.mounts(key)
    }
    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.client.prepare(key, parent, labels)
    }
    fn view(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.client.view(key, parent, labels)
    }
    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        self.client.commit(name, key, labels)
    }
    fn remove(&self, key: &str) -> Result<()> {
        self.client.remove(key)
    }
    fn walk(&self, visit: &mut dyn FnMut(&Info) -> bool) -> Result<()> {
        self.client.walk(visit)
    }
    fn cleanup(&self) -> Result<()> {
        self.client.cleanup()
    }
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the conformance suite mounts; run as root");
}

#[test]
fn overlayfs_served_by_berth_snapshotter_conforms() {
    require_root();
    berth_snapshotters::testsuite::run(&|root| Box::new(Served::start("overlayfs", root)));
}

#[test]
fn native_served_by_berth_snapshotter_conforms() {
    require_root();
    berth_snapshotters::testsuite::run(&|root| Box::new(Served::start("native", root)));
}

/// A second server on a root in use is refused (one metadata file, one set of directories).
#[test]
fn one_server_per_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let _first = Served::start("native", &root);
    let second = Command::new(env!("CARGO_BIN_EXE_berth-snapshotter"))
        .args(["--snapshotter", "native", "--root"])
        .arg(&root)
        .arg("--address")
        .arg(dir.path().join("second.sock"))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another berth-snapshotter"), "{err}");
}
