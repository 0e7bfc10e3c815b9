//! `berthd cleanup`: takes off the host everything a root's daemon put there, whether or not
//! its root and state still exist — its shims and their containers, the mounts under its
//! root and state (pinned network namespaces, rootfs and diff mounts), and its networks'
//! bridges, veths and iptables rules (found by the daemon's tag, see
//! `berth_services::core::network::host`). The files in the root stay: a daemon started on
//! it again finds its images, and containers that are stopped.

use anyhow::Context;
use berth_services::core::network::host;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What cleanup works from: the daemon's directories and socket, and its conflists.
pub struct Target {
    pub root: PathBuf,
    pub state: PathBuf,
    pub address: PathBuf,
    pub conf_dir: PathBuf,
}

/// Removes what the daemon of `t` left; prints each object removed (and each it could not
/// remove, on stderr). Returns whether everything went.
pub fn run(t: &Target) -> anyhow::Result<bool> {
    // A daemon still serving the root keeps what it made: refuse, as `berthd check` does.
    let _lock = if t.root.join("berthd.lock").exists() {
        Some(crate::lock_root(&t.root).context(
            "berthd cleanup removes what a stopped daemon left: stop berthd on this root first",
        )?)
    } else {
        None
    };
    let mut removed: Vec<String> = vec![];
    let mut failed: Vec<String> = vec![];
    for pid in stop_shims(t) {
        removed.push(format!("shim process {pid} and its containers"));
    }
    for cg in remove_container_cgroups(&t.state, &mut failed) {
        removed.push(format!("cgroup {}", cg.display()));
    }
    for m in host::mounts_under(&[t.root.clone(), t.state.clone()]) {
        berth_snapshotters::mount::unmount(&m);
        removed.push(format!("mount {}", m.display()));
    }
    // A namespace goes a moment after its last pin: its veth with it.
    std::thread::sleep(Duration::from_millis(50));
    let net = host::cleanup(&t.state, &t.conf_dir);
    removed.extend(net.removed);
    failed.extend(net.failed);
    for r in &removed {
        println!("removed {r}");
    }
    for f in &failed {
        eprintln!("could not remove {f}");
    }
    if removed.is_empty() && failed.is_empty() {
        println!("nothing to remove");
    }
    Ok(failed.is_empty())
}

/// A shim process of this daemon: a `containerd-shim*` binary started in a bundle under its
/// state (even one removed since) or told to publish to its socket.
fn is_our_shim(pid: u32, t: &Target) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let argv0 = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(args[0]));
    let is_shim = argv0
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("containerd-shim"));
    if !is_shim {
        return false;
    }
    let address = t.address.as_os_str().as_encoded_bytes();
    let ours_by_address = args
        .windows(2)
        .any(|w| w[0] == b"-address" && w[1] == address);
    let cwd = std::fs::read_link(proc.join("cwd")).unwrap_or_default();
    let cwd = cwd.to_string_lossy();
    let cwd = Path::new(cwd.trim_end_matches(" (deleted)"));
    ours_by_address || cwd.starts_with(&t.state)
}

/// SIGKILLs this daemon's shims and their children (the containers' init processes, whose
/// death ends each container), and waits (up to 5 s) until they are gone. Returns their pids.
fn stop_shims(t: &Target) -> Vec<u32> {
    let me = std::process::id();
    let shims: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|pid| *pid != me && is_our_shim(*pid, t))
                .collect()
        })
        .unwrap_or_default();
    let mut victims = vec![];
    for pid in &shims {
        victims.extend(children(*pid));
        victims.push(*pid);
    }
    for pid in &victims {
        // SAFETY: kill sends a signal to a pid; no memory is shared.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && victims.iter().any(|p| alive(*p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    shims
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Alive and not a zombie (a zombie is already dead; its parent reaps it).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The cgroups of the containers whose bundles are under the state (their specs say where),
/// deepest first, once their shims' containers are dead. Nothing in them is killed: a
/// cgroup path is `/berth/<namespace>/<id>`, the same for another daemon's container of that
/// namespace and id, so only an empty one goes (a non-empty one is reported). Returns those
/// removed.
fn remove_container_cgroups(state: &Path, failed: &mut Vec<String>) -> Vec<PathBuf> {
    let mut removed = vec![];
    for cg in container_cgroups(state) {
        let mut dirs: Vec<PathBuf> = walk_dirs(&cg);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            // Killed processes leave their cgroup a moment after they die.
            let deadline = Instant::now() + Duration::from_secs(1);
            let rmdir = || loop {
                match std::fs::remove_dir(&d) {
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    other => return other,
                }
            };
            match rmdir() {
                Ok(()) => removed.push(d),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => failed.push(format!("cgroup {}: {e}", d.display())),
            }
        }
    }
    removed
}

/// Every existing cgroup directory named by a bundle's `linux.cgroupsPath` (a cgroupfs
/// path; systemd's `slice:prefix:name` form is systemd's to remove), in each hierarchy.
fn container_cgroups(state: &Path) -> Vec<PathBuf> {
    let tasks = state.join("io.containerd.runtime.v2.task");
    let mut paths = vec![];
    for ns in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
        for bundle in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            let Ok(spec) = std::fs::read(bundle.path().join("config.json")) else {
                continue;
            };
            let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&spec) else {
                continue;
            };
            if let Some(p) = spec["linux"]["cgroupsPath"].as_str() {
                if p.starts_with('/') && !p.contains("..") {
                    paths.push(p.trim_start_matches('/').to_string());
                }
            }
        }
    }
    let base = Path::new("/sys/fs/cgroup");
    let mut hierarchies = vec![base.to_path_buf()];
    hierarchies.extend(
        std::fs::read_dir(base)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("cgroup.procs").exists()),
    );
    paths
        .iter()
        .flat_map(|p| hierarchies.iter().map(move |h| h.join(p)))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

/// `dir` and every directory below it.
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let below: Vec<PathBuf> = std::fs::read_dir(&out[i])
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        out.extend(below);
        i += 1;
    }
    out
}
