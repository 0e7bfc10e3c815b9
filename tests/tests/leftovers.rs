//! Nothing left on the host: `berthd cleanup` takes away what a daemon killed with its
//! containers running left there — shims and containers, mounts under its root and state,
//! its bridge, veths and iptables rules — with its root deleted too; the test harness's
//! daemons use it on teardown; `berth network rm` removes the default network and its bridge.
//! Everything asserted is this test's daemon's own (its tag, its bridge, its paths): other
//! daemons on the host are never looked at.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{daemon_with_busybox, free_port, ok, require_tool, Daemon};
use std::path::{Path, PathBuf};
use std::time::Duration;

const IMAGE: &str = "test.local/left:latest";
/// The containers left running: ids no other test uses (cgroup paths are per namespace and
/// id, not per daemon).
const KILLED_ID: &str = "left-killed";
const DROPPED_ID: &str = "left-dropped";

/// The daemon's identity on the host: the tag in its CNI ids and on its bridges.
fn tag(d: &Daemon) -> String {
    let dir = d.state().join("io.berth.network.v1");
    berth_tests::sha256(dir.as_os_str().as_encoded_bytes())["sha256:".len()..][..8].to_string()
}

fn bridge_of(d: &Daemon) -> String {
    let out = ok(&d.berth(&["network", "inspect", "bridge"], None));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["bridge"].as_str().unwrap().to_string()
}

fn alias_of(link: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{link}/ifalias"))
        .ok()
        .map(|a| a.trim().to_string())
}

/// Links carrying this daemon's alias.
fn links_marked(tag: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| alias_of(n).as_deref() == Some(&format!("berth:{tag}")))
        .collect()
}

/// iptables lines naming one of this daemon's CNI ids, or carrying the comment of its
/// in-process bridge's rules.
fn rules_of(tag: &str) -> Vec<String> {
    let out = std::process::Command::new(require_tool("iptables-save"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("-{tag}\\\"")) || l.contains(&format!("berth:{tag}:")))
        .map(str::to_string)
        .collect()
}

/// Shim processes started for this daemon (told to publish to its socket).
fn shims_of(d: &Daemon) -> Vec<u32> {
    let socket = d.socket();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            args.first()
                .is_some_and(|a| String::from_utf8_lossy(a).contains("containerd-shim"))
                && args
                    .iter()
                    .any(|a| *a == socket.as_os_str().as_encoded_bytes())
        })
        .collect()
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    berth_tests::mount_points_under(dir)
}

/// A container with a published port on the default network, and the daemon SIGKILLed under
/// it: everything it made is still on the host.
fn killed_daemon_with_a_running_container(id: &str) -> (Daemon, tempfile::TempDir, String, u16) {
    require_tool("/usr/lib/cni/bridge");
    let (mut d, img) = daemon_with_busybox("test.local/left");
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    ok(&d.berth(
        &[
            "containers",
            "run",
            "-d",
            "-p",
            &publish,
            IMAGE,
            id,
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/etc",
        ],
        None,
    ));
    let bridge = bridge_of(&d);
    let tag = tag(&d);
    assert_eq!(
        alias_of(&bridge).as_deref(),
        Some(format!("berth:{tag}").as_str()),
        "a claimed bridge carries its daemon's alias"
    );
    assert!(
        !rules_of(&tag).is_empty(),
        "the network's rules name the tag"
    );
    d.kill().unwrap();
    assert!(
        !shims_of(&d).is_empty(),
        "the shim outlives a killed berthd"
    );
    assert!(
        !mounts_under(&d.state()).is_empty(),
        "the pinned network namespace"
    );
    (d, img, bridge, port)
}

fn assert_nothing_left(d: &Daemon, bridge: &str, port: u16) {
    let tag = tag(d);
    assert_eq!(links_marked(&tag), Vec::<String>::new(), "bridges left");
    // Another daemon may have claimed the name since; ours is gone if it is not ours.
    assert_ne!(
        alias_of(bridge).as_deref(),
        Some(format!("berth:{tag}").as_str())
    );
    assert_eq!(rules_of(&tag), Vec::<String>::new(), "iptables rules left");
    assert_eq!(shims_of(d), Vec::<u32>::new(), "shims left");
    assert_eq!(mounts_under(d.dir.path()), Vec::<PathBuf>::new());
    let cgroups: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|h| h.path().join("berth/default").join(KILLED_ID))
        .chain([Path::new("/sys/fs/cgroup/berth/default").join(KILLED_ID)])
        .filter(|p| p.exists())
        .collect();
    assert_eq!(cgroups, Vec::<PathBuf>::new(), "the container's cgroups");
    assert!(
        std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(1)
        )
        .is_err(),
        "the published port still answers"
    );
}

#[test]
fn cleanup_removes_what_a_killed_daemon_left_even_without_its_root() {
    let (d, _img, bridge, port) = killed_daemon_with_a_running_container(KILLED_ID);
    // The root goes (as a test's temporary directory does): only the tag says what was its.
    std::fs::remove_dir_all(d.root()).unwrap();
    let out = d.cleanup();
    let report = ok(&out);
    assert!(
        report.contains(&format!("removed bridge {bridge}")),
        "{report}"
    );
    assert!(report.contains("removed shim process"), "{report}");
    assert_nothing_left(&d, &bridge, port);
    // Nothing is left to remove the second time.
    assert!(ok(&d.cleanup()).contains("nothing to remove"));
}

#[test]
fn cleanup_refuses_while_the_daemon_serves() {
    let d = Daemon::start().unwrap();
    let out = d.cleanup();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop berthd"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::os::unix::net::UnixStream::connect(d.socket()).is_ok());
}

#[test]
fn a_test_daemon_takes_everything_along_when_dropped() {
    let (d, _img, bridge, port) = killed_daemon_with_a_running_container(DROPPED_ID);
    let (tag, state, shims) = (tag(&d), d.state(), shims_of(&d));
    drop(d);
    assert_eq!(links_marked(&tag), Vec::<String>::new(), "bridges left");
    assert_ne!(alias_of(&bridge), Some(format!("berth:{tag}")));
    assert_eq!(rules_of(&tag), Vec::<String>::new(), "iptables rules left");
    assert!(mounts_under(&state).is_empty());
    for pid in shims {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "shim {pid} still runs"
        );
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn network_rm_removes_the_default_network_and_its_bridge() {
    require_tool("/usr/lib/cni/bridge");
    let (d, _img) = daemon_with_busybox("test.local/left");
    ok(&d.berth(&["containers", "run", "--rm", IMAGE, "once", "true"], None));
    let bridge = bridge_of(&d);
    assert!(Path::new("/sys/class/net").join(&bridge).exists());
    ok(&d.berth(&["network", "rm", "bridge"], None));
    assert_ne!(
        alias_of(&bridge).as_deref(),
        Some(format!("berth:{}", tag(&d)).as_str()),
        "the bridge is gone"
    );
    assert!(!ok(&d.berth(&["network", "ls"], None)).contains("bridge"));
    // It comes back on next use.
    ok(&d.berth(&["containers", "run", "--rm", IMAGE, "again", "true"], None));
    assert_eq!(links_marked(&tag(&d)).len(), 1);
}
