//! A snapshotter proxy plugin (berth-snapshotter, serving overlayfs on a socket) configured
//! in berthd as containerd configures one: listed by Introspection, used by `ctr run
//! --snapshotter` and `berth run --snapshotter`; a plugin that hangs or is killed mid-call
//! costs its own calls a clear error and nothing else, and once it is back, it is used again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_tests::{bin, oci, ok, require_root, stderr, Daemon};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NAME: &str = "berthsnap";
const IMAGE: &str = "test.local/base:latest";

/// A berth-snapshotter process.
struct Plugin {
    child: Option<Child>,
    root: PathBuf,
    socket: PathBuf,
}

impl Plugin {
    fn start(root: &Path, socket: &Path) -> Plugin {
        let mut p = Plugin {
            child: None,
            root: root.to_path_buf(),
            socket: socket.to_path_buf(),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let child = Command::new(bin("berth-snapshotter"))
            .args(["--snapshotter", "overlayfs", "--root"])
            .arg(&self.root)
            .arg("--address")
            .arg(&self.socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("start berth-snapshotter");
        self.child = Some(child);
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "berth-snapshotter did not listen on {}",
                self.socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("plugin running").id();
        // SAFETY: a signal to a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: as in signal; SIGCONT first so a stopped plugin can die.
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.child.take().unwrap().wait().unwrap()
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Debian's ctr against `d`, started without waiting.
fn ctr_spawn(d: &Daemon, args: &[&str]) -> Child {
    Command::new(berth_tests::require_tool("ctr"))
        .arg("--address")
        .arg(d.socket())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ctr")
}

/// `ctr run --rm --snapshotter NAME` of the image, echoing `text`.
fn ctr_run_echo(d: &Daemon, id: &str, text: &str) {
    let args = [
        "run",
        "--rm",
        "--snapshotter",
        NAME,
        IMAGE,
        id,
        "echo",
        text,
    ];
    let out = ok(&d.ctr(&args));
    assert!(out.contains(text), "{out}");
}

/// What berthd keeps answering while the plugin is stuck or gone.
fn other_rpcs_answer(d: &Daemon) {
    ok(&d.ctr(&["version"]));
    ok(&d.ctr(&["containers", "ls"]));
    ok(&d.ctr(&["images", "ls"]));
    ok(&d.ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"]));
    // The audit of berthd's root leaves the plugin's store to the plugin.
    ok(&d.berth(&["check"], None));
}

/// The error of a failed call through the plugin names it and its socket.
fn names_the_plugin(text: &str, plugin: &Plugin) {
    assert!(text.contains(&format!("{NAME:?}")), "{text}");
    assert!(
        text.contains(&plugin.socket.display().to_string()),
        "{text}"
    );
}

/// berthd with the plugin on `socket` configured, each call under `timeout`.
fn daemon_with_plugin(work: &Path, socket: &Path, timeout: &str) -> Daemon {
    let config = work.join("berthd.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy_plugins.{NAME}]\ntype = \"snapshot\"\naddress = \"{}\"\ntimeout = \"{timeout}\"\n",
            socket.display()
        ),
    )
    .unwrap();
    Daemon::start_with(move |cmd| {
        cmd.arg("--config").arg(&config);
    })
    .unwrap()
}

/// The test image as [`IMAGE`], not unpacked.
fn import_image(d: &Daemon) {
    let (_image_dir, archive) = oci::busybox_archive();
    ok(&d.berth(
        &[
            "images",
            "import",
            "--no-unpack",
            "--base-name",
            "test.local/base",
            archive.to_str().unwrap(),
        ],
        None,
    ));
}

#[test]
fn berthd_uses_a_proxy_snapshotter_and_outlives_its_failures() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("plugin.sock");
    let mut plugin = Plugin::start(&work.path().join("plugin-root"), &socket);
    let d = daemon_with_plugin(work.path(), &socket, "10s");

    // Listed as containerd lists a proxy plugin.
    let plugins = ok(&d.ctr(&["plugins", "ls"]));
    assert!(
        plugins
            .lines()
            .any(|l| l.contains("io.containerd.snapshotter.v1")
                && l.contains(NAME)
                && l.trim_end().ends_with("ok")),
        "{plugins}"
    );

    import_image(&d);
    ctr_run_echo(&d, "via-ctr", "through the plugin");
    let out = ok(&d.berth(
        &[
            "run",
            "--rm",
            "--snapshotter",
            NAME,
            IMAGE,
            "echo",
            "berth too",
        ],
        None,
    ));
    assert!(out.contains("berth too"), "{out}");
    let listed = ok(&d.ctr(&["snapshots", "--snapshotter", NAME, "ls"]));
    assert!(listed.contains("Committed"), "{listed}");
    let held = std::fs::read_dir(plugin.root.join("snapshots"))
        .unwrap()
        .count();
    assert!(held > 0, "the layers live in the plugin's root");

    // Stuck (SIGSTOP): its call waits for the deadline; every other call is answered
    // meanwhile (the stuck one is still waiting when they are done).
    plugin.signal(libc::SIGSTOP);
    let mut stuck = ctr_spawn(&d, &["snapshots", "--snapshotter", NAME, "ls"]);
    std::thread::sleep(Duration::from_millis(300));
    other_rpcs_answer(&d);
    assert!(
        stuck.try_wait().unwrap().is_none(),
        "the stuck plugin's call ended before the others were answered"
    );
    let out = stuck.wait_with_output().unwrap();
    assert!(!out.status.success());
    names_the_plugin(&stderr(&out), &plugin);
    assert!(
        stderr(&out).contains("no answer within 10s"),
        "{}",
        stderr(&out)
    );

    // Still stuck: the next call does not wait out another deadline.
    let out = d.ctr(&["snapshots", "--snapshotter", NAME, "ls"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("missed its 10s deadline"),
        "{}",
        stderr(&out)
    );
    // Going again (SIGCONT): used again once that deadline has passed.
    plugin.signal(libc::SIGCONT);
    let started = Instant::now();
    while !d
        .ctr(&["snapshots", "--snapshotter", NAME, "ls"])
        .status
        .success()
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the plugin was not used again after SIGCONT"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Killed mid-Prepare: the call in flight fails at once, naming the plugin.
    plugin.signal(libc::SIGSTOP);
    let midway = ctr_spawn(
        &d,
        &["snapshots", "--snapshotter", NAME, "prepare", "midway"],
    );
    std::thread::sleep(Duration::from_millis(300));
    plugin.kill();
    let out = midway.wait_with_output().unwrap();
    assert!(!out.status.success());
    names_the_plugin(&stderr(&out), &plugin);
    // Gone: refused at once, Unavailable; the rest is unaffected.
    let out = d.ctr(&["snapshots", "--snapshotter", NAME, "ls"]);
    assert!(!out.status.success());
    names_the_plugin(&stderr(&out), &plugin);
    assert!(stderr(&out).contains("unavailable"), "{}", stderr(&out));
    other_rpcs_answer(&d);

    // Back on the same socket: used again, with what it kept.
    plugin.spawn();
    let again = ok(&d.ctr(&["snapshots", "--snapshotter", NAME, "ls"]));
    assert!(again.contains("Committed"), "{again}");
    ctr_run_echo(&d, "after-restart", "back again");

    // SIGTERM: a clean stop that takes its socket along.
    let status = plugin.terminate();
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "the socket outlived the plugin");
}

#[test]
fn a_bad_proxy_plugin_setting_stops_berthd_saying_which() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("berthd.toml");
    std::fs::write(
        &config,
        "[proxy_plugins.odd]\ntype = \"content\"\naddress = \"/run/odd.sock\"\n",
    )
    .unwrap();
    let err = Daemon::start_with(move |cmd| {
        cmd.arg("--config").arg(&config);
    })
    .err()
    .expect("berthd started with a content proxy plugin");
    let text = format!("{err:#}");
    assert!(text.contains("proxy_plugins.odd"), "{text}");
}

mod cri_kit;

/// The CRI's `snapshotter` naming the plugin: the image unpacks into it, and a pod and its
/// container run on rootfs it prepared.
#[tokio::test(flavor = "multi_thread")]
async fn cri_pods_run_on_a_proxy_snapshotter() {
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("plugin.sock");
    let plugin = Plugin::start(&work.path().join("plugin-root"), &socket);
    let k = cri_kit::Kit::start_configured(&format!(
        "snapshotter = \"{NAME}\"\n[proxy_plugins.{NAME}]\ntype = \"snapshot\"\naddress = \"{}\"\n",
        socket.display()
    ));
    cri_kit::pull(&k, &k.busybox).await.unwrap();
    let (pod, config) = cri_kit::run_pod(&k, "on-proxy").await;
    let c = k.container_config("hello", "echo from a proxy rootfs");
    cri_kit::run_container(&k, &pod, &config, c).await;
    let log = k.logs().join("on-proxy").join("hello.log");
    cri_kit::until("the container's log", || async {
        std::fs::read_to_string(&log)
            .map(|t| t.contains("from a proxy rootfs"))
            .unwrap_or(false)
    })
    .await;
    // The pod's and the container's rootfs are the plugin's snapshots, in namespace k8s.io.
    let listed = ok(&k
        .d
        .ctr(&["-n", "k8s.io", "snapshots", "--snapshotter", NAME, "ls"]));
    assert_eq!(listed.matches("Active").count(), 2, "{listed}");
    assert!(
        plugin.root.join("snapshots").read_dir().unwrap().count() >= 3,
        "the layer and both rootfs live in the plugin's root"
    );
    // ImageFsInfo reports what the plugin's Usage says of those snapshots (berthd's own
    // directory for the snapshotter is empty).
    let fs = k
        .img()
        .await
        .image_fs_info(berth_proto::cri::v1::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let image_fs = &fs.image_filesystems[0];
    let used = image_fs.used_bytes.as_ref().map_or(0, |v| v.value);
    let inodes = image_fs.inodes_used.as_ref().map_or(0, |v| v.value);
    assert!(used > 0 && inodes > 0, "{image_fs:?}");
}

/// The rows of `ctr snapshots --snapshotter SNAPSHOTTER ls` (no header).
fn snapshot_rows(d: &Daemon, snapshotter: &str) -> Vec<String> {
    let out = ok(&d.ctr(&["snapshots", "--snapshotter", snapshotter, "ls"]));
    out.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The digests `ctr content ls` lists.
fn content_digests(d: &Daemon) -> Vec<String> {
    ok(&d.ctr(&["content", "ls"]))
        .split_whitespace()
        .filter(|w| w.starts_with("sha256:"))
        .map(str::to_string)
        .collect()
}

/// Waits (bounded) until `done`; else fails saying `what`, with berthd's leases and
/// snapshots.
fn wait_until(d: &Daemon, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > Duration::from_secs(120) {
            let leases = d.ctr(&["leases", "ls"]);
            let overlay = d.ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"]);
            let log = d.log_text();
            let collections: Vec<&str> = log.lines().filter(|l| l.contains("collect")).collect();
            panic!(
                "{what}\nleases: {}\noverlayfs: {}\nberthd: {}",
                String::from_utf8_lossy(&leases.stdout),
                String::from_utf8_lossy(&overlay.stdout),
                collections.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Garbage collection with the plugin stopped: it is left out (its snapshots kept), the rest
/// is collected, and writers on overlayfs never wait for the plugin's deadline; once it is
/// going again, what nothing refers to in it is collected too.
#[test]
fn collections_leave_a_stopped_plugin_out_and_collect_the_rest() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("plugin.sock");
    let plugin = Plugin::start(&work.path().join("plugin-root"), &socket);
    let d = daemon_with_plugin(work.path(), &socket, "20s");
    import_image(&d);
    // Unpacked in both: the plugin and overlayfs.
    ctr_run_echo(&d, "on-plugin", "in the plugin");
    let out = ok(&d.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        "overlayfs",
        IMAGE,
        "on-overlayfs",
        "echo",
        "on overlayfs",
    ]));
    assert!(out.contains("on overlayfs"), "{out}");
    let blobs = content_digests(&d);
    assert!(!blobs.is_empty(), "the image's blobs are listed");
    assert!(!snapshot_rows(&d, NAME).is_empty());
    let overlay_keys: Vec<String> = snapshot_rows(&d, "overlayfs")
        .iter()
        .filter_map(|r| r.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(!overlay_keys.is_empty());
    let on_disk = || {
        std::fs::read_dir(plugin.root.join("snapshots"))
            .unwrap()
            .count()
    };
    let held = on_disk();

    plugin.signal(libc::SIGSTOP);
    // A call that ends when the stopped plugin's deadline does.
    let mut witness = ctr_spawn(&d, &["snapshots", "--snapshotter", NAME, "ls"]);
    std::thread::sleep(Duration::from_millis(300));
    // The deletion wakes a collection, which meets the stopped plugin.
    ok(&d.ctr(&["images", "rm", IMAGE]));
    std::thread::sleep(Duration::from_millis(500));
    ok(&d.ctr(&[
        "snapshots",
        "--snapshotter",
        "overlayfs",
        "prepare",
        "while-stopped",
    ]));
    ok(&d.ctr(&[
        "snapshots",
        "--snapshotter",
        "overlayfs",
        "commit",
        "committed-while-stopped",
        "while-stopped",
    ]));
    assert!(
        witness.try_wait().unwrap().is_none(),
        "a Prepare and a commit on overlayfs waited for the stopped plugin's deadline"
    );
    let out = witness.wait_with_output().unwrap();
    assert!(!out.status.success());

    // Still stopped: the image's content and its overlayfs snapshots are collected, the
    // plugin's snapshots are all kept.
    wait_until(&d, "the deleted image's content was not collected", || {
        let left = content_digests(&d);
        !blobs.iter().any(|b| left.contains(b))
    });
    // (ctr's own snapshots are gc roots, as containerd's ctr labels them.)
    wait_until(
        &d,
        "the image's overlayfs snapshots were not collected",
        || {
            let left = snapshot_rows(&d, "overlayfs").join("\n");
            !overlay_keys.iter().any(|k| left.contains(k.as_str()))
        },
    );
    assert_eq!(on_disk(), held, "a snapshot of the stopped plugin went");

    // Going again: the next collections take what nothing refers to in it.
    plugin.signal(libc::SIGCONT);
    wait_until(
        &d,
        "the plugin's unreferenced snapshots were not collected",
        || {
            let lease = ok(&d.ctr(&["leases", "create"]));
            let id = lease.split_whitespace().next().unwrap().to_string();
            // Deleting a lease with --sync runs a collection before it answers.
            let _ = d.ctr(&["leases", "rm", "--sync", &id]);
            d.ctr(&["snapshots", "--snapshotter", NAME, "ls"])
                .status
                .success()
                && snapshot_rows(&d, NAME).is_empty()
        },
    );
    assert!(
        on_disk() < held,
        "the plugin's root holds as much as before"
    );
}
