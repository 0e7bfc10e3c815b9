//! A remote (lazy-pull) snapshotter through berthd: containerd's stargz snapshotter as a
//! proxy plugin, and an image converted to eStargz. The pull stores the documents only (the
//! snapshotter answers each layer's Prepare itself, so berth fetches no layer blob), and the
//! container's first output comes from files the snapshotter reads from the registry when
//! they are opened. The same image pulled into overlayfs is whole, as before.
//!
//! Needs `containerd-stargz-grpc` and `ctr-remote`, which are not in Debian: built from
//! containerd/stargz-snapshotter (docs/images.md says how) and found in BERTH_STARGZ_BIN_DIR
//! or on PATH; without them the test says so and passes. ctr-remote converts with its
//! registry-to-registry `image optimize --no-optimize --plain-http` (v0.2.0's command line).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_tests::{oci, ok, require_root, require_tool, Daemon};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PLUGIN: &str = "stargz";
const HELLO: &str = "hello from a lazy layer";

/// Where `name` is: BERTH_STARGZ_BIN_DIR, else PATH.
fn stargz_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("BERTH_STARGZ_BIN_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Some(paths) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&paths));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// containerd-stargz-grpc on its own root and socket, logging at debug level (its log says
/// which Prepare it served remotely).
struct Stargz {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Stargz {
    fn start(bin: &Path, dir: &Path) -> Stargz {
        let config = dir.join("stargz.toml");
        // Nothing fetched but what is read: no prefetch, no background fetch of whole layers.
        std::fs::write(&config, "noprefetch = true\nno_background_fetch = true\n").unwrap();
        let socket = dir.join("stargz.sock");
        let log = dir.join("stargz.log");
        let child = Command::new(bin)
            .arg("--root")
            .arg(dir.join("stargz-root"))
            .arg("--address")
            .arg(&socket)
            .arg("--config")
            .arg(&config)
            .args(["--log-level", "debug"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start containerd-stargz-grpc");
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "containerd-stargz-grpc did not listen on {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Stargz {
            child,
            dir: dir.to_path_buf(),
            socket,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Stargz {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its FUSE mounts outlive it.
        berth_tests::unmount_under(&self.dir);
    }
}

/// The test image: busybox, and a layer of 8 MiB of noise beside the one small file the
/// container prints, pushed as `plain` and converted to eStargz as `esgz`.
fn images(registry: &oci::Registry, ctr_remote: &Path, work: &Path) -> (String, String) {
    let blobs: Vec<Vec<u8>> = (0..4).map(|i| oci::noise(2 << 20, i + 1)).collect();
    let mut entries = vec![
        oci::Entry::Dir("data", 0o755),
        oci::Entry::File("data/hello.txt", HELLO.as_bytes(), 0o644),
    ];
    let names: Vec<String> = (0..blobs.len()).map(|i| format!("data/blob{i}")).collect();
    for (name, data) in names.iter().zip(&blobs) {
        entries.push(oci::Entry::File(name, data, 0o644));
    }
    let layout = work.join("layout");
    oci::layout_with(
        &layout,
        "plain",
        &[oci::busybox_layer(), oci::layer(&entries)],
        serde_json::json!({"Entrypoint": ["/bin/cat"], "Cmd": ["/data/hello.txt"], "Env": ["PATH=/bin"]}),
    );
    let plain = registry.push(&layout, "plain", "lazy").unwrap();
    let esgz = format!("{}/lazy:esgz", registry.addr);
    let out = Command::new(ctr_remote)
        .args(["image", "optimize", "--no-optimize", "--plain-http"])
        .arg(format!("http://{plain}"))
        .arg(format!("http://{esgz}"))
        .output()
        .unwrap();
    ok(&out);
    (plain, esgz)
}

#[test]
fn an_estargz_image_runs_through_a_remote_snapshotter_without_fetching_its_layers() {
    let (Some(stargz_bin), Some(ctr_remote)) = (
        stargz_tool("containerd-stargz-grpc"),
        stargz_tool("ctr-remote"),
    ) else {
        eprintln!(
            "skipped: containerd-stargz-grpc and ctr-remote not found in BERTH_STARGZ_BIN_DIR or PATH \
             (build them from containerd/stargz-snapshotter, see docs/images.md)"
        );
        return;
    };
    require_root();
    // The stargz snapshotter mounts its layers with FUSE through fusermount.
    require_tool("fusermount");
    let work = tempfile::tempdir().unwrap();
    let registry = oci::Registry::start().unwrap();
    let (plain, esgz) = images(&registry, &ctr_remote, work.path());
    let stargz = Stargz::start(&stargz_bin, work.path());
    let config = work.path().join("berthd.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy_plugins.{PLUGIN}]\ntype = \"snapshot\"\naddress = \"{}\"\n",
            stargz.socket.display()
        ),
    )
    .unwrap();
    let d = Daemon::start_with(move |cmd| {
        cmd.arg("--config").arg(&config);
    })
    .unwrap();

    ok(&d.berth(
        &[
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            PLUGIN,
            &esgz,
        ],
        None,
    ));
    // Both layers were served by the snapshotter: berth stored the documents only.
    let checked = ok(&d.ctr(&["images", "check"]));
    let line = checked.lines().find(|l| l.starts_with(&esgz)).unwrap();
    assert!(line.contains("incomplete (1/3)"), "{checked}");
    let log = stargz.log_text();
    assert_eq!(
        log.matches(r#""remote-snapshot-prepared":"true""#).count(),
        2,
        "{log}"
    );
    let snapshots = ok(&d.ctr(&["snapshots", "--snapshotter", PLUGIN, "ls"]));
    assert_eq!(snapshots.matches("Committed").count(), 2, "{snapshots}");

    let out = ok(&d.berth(&["run", "--rm", "--snapshotter", PLUGIN, &esgz], None));
    assert!(out.contains(HELLO), "{out}");

    // With berth's own snapshotter nothing changes: the eStargz image (valid gzip) and the
    // plain one are pulled whole and unpacked.
    for image in [&esgz, &plain] {
        ok(&d.berth(&["images", "pull", "--plain-http", image], None));
        let out = ok(&d.berth(&["run", "--rm", image], None));
        assert!(out.contains(HELLO), "{out}");
    }
    let checked = ok(&d.ctr(&["images", "check"]));
    assert_eq!(checked.matches("complete (3/3)").count(), 2, "{checked}");
}
