//! Warming the kernel's cgroup migration lock before a container needs it.
//!
//! Every write to a `cgroup.procs` file takes the kernel's `cgroup_threadgroup_rwsem` for
//! writing; after a quiet spell that first waits for an RCU grace period, and a write soon
//! after another does not (the lock stays in its writer-friendly mode for about one more
//! grace period). On this project's machines the wait is 5–20 ms (median ~12 ms), and every
//! container start pays it once, when its init is moved into the container's cgroup: a
//! third of a `run --rm`. berthd therefore moves itself into the cgroup it is already in, on
//! a thread of its own, as soon as a task is to be created: the wait runs while the shim
//! starts and mounts the rootfs, and the container's own move finds the lock warm. An exec's
//! process moves too, so the start of an exec (and the CRI's ExecSync and Exec) warms it as
//! well.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static IN_FLIGHT: AtomicBool = AtomicBool::new(false);

/// Starts a warm-up unless one is already waiting.
pub fn begin() {
    let Some(procs) = own_procs_file() else {
        return;
    };
    if IN_FLIGHT.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("cgroup-warmup".into())
        .stack_size(64 << 10)
        .spawn(move || {
            // Moving berthd where it already is changes nothing; an error (a cgroup v2
            // parent with controllers on, say) only means no warm-up.
            let _ = std::fs::write(procs, std::process::id().to_string());
            IN_FLIGHT.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        IN_FLIGHT.store(false, Ordering::Release);
    }
}

/// The `cgroup.procs` of the cgroup berthd is in, in any one hierarchy (the lock is global).
fn own_procs_file() -> Option<&'static PathBuf> {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        candidates(&text).into_iter().find(|p| p.is_file())
    })
    .as_ref()
}

/// Where each line of /proc/self/cgroup puts berthd under /sys/fs/cgroup: the v2 tree (at
/// the top, or under `unified` on a hybrid host), a v1 controller's (mounted under its own
/// name or its comma-joined co-mounted names).
fn candidates(proc_cgroup: &str) -> Vec<PathBuf> {
    let root = PathBuf::from("/sys/fs/cgroup");
    let mut out = vec![];
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if ctrls.is_empty() {
            out.push(root.join(rel).join("cgroup.procs"));
            out.push(root.join("unified").join(rel).join("cgroup.procs"));
            continue;
        }
        out.push(root.join(ctrls).join(rel).join("cgroup.procs"));
        for c in ctrls.split(',') {
            let c = c.strip_prefix("name=").unwrap_or(c);
            out.push(root.join(c).join(rel).join("cgroup.procs"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hierarchy_line_gives_its_procs_file() {
        let c = candidates("4:cpu,cpuacct:/berth\n1:name=systemd:/\n0::/system.slice/berthd\n");
        let s: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            s,
            [
                "/sys/fs/cgroup/cpu,cpuacct/berth/cgroup.procs",
                "/sys/fs/cgroup/cpu/berth/cgroup.procs",
                "/sys/fs/cgroup/cpuacct/berth/cgroup.procs",
                "/sys/fs/cgroup/name=systemd/cgroup.procs",
                "/sys/fs/cgroup/systemd/cgroup.procs",
                "/sys/fs/cgroup/system.slice/berthd/cgroup.procs",
                "/sys/fs/cgroup/unified/system.slice/berthd/cgroup.procs",
            ]
        );
        assert!(candidates("garbage\n").is_empty());
    }
}
