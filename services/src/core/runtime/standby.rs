//! Standby shims: one of berth's own shims started before a task asks for it, so that a
//! task's start does not wait for the shim's exec, dynamic loader (whose CPUID probes each
//! trap to the hypervisor in a VM), runtime start-up and zygote fork: about 1.5 ms of every
//! `run --rm` on the project's machines (`docs/perf/run-rm-2026-12-07c.md`).
//!
//! berthd keeps one standby shim per launch identity ([`Key`]: the shim binary, berthd's
//! sockets and executable), made after a launch of its own shim took the previous one (the
//! first task of a daemon starts its shim as before). Until it is taken, the standby shim
//! is in the idle scheduling class: its start-up only takes CPU time no other process wants.
//! A launch takes it by moving it back to the normal class and writing the task on its
//! stdin (see `containerd-shim-berth-v2 standby`); from there it is that task's shim,
//! exactly as one launched for it. A standby shim ends when its stdin closes without a
//! task: when berthd exits, however it exits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use tokio::process::{Child, Command};

/// What a standby shim was started for; only a launch of the same takes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub binary: PathBuf,
    /// berthd's gRPC socket.
    pub address: PathBuf,
    pub ttrpc_address: PathBuf,
    /// berthd's executable (the shim's `-publish-binary`).
    pub daemon: PathBuf,
}

/// The mark a task given to a standby shim begins with.
const TASK_MARK: &[u8] = b"berth-standby-1";

/// Room kept in a standby shim's argument area for the `-namespace` and `-id` it learns
/// with its task (its command line is rewritten to the one `launch` would have had).
const SLOT: usize = 256;

/// Whether a task's namespace and id fit the room a standby shim keeps for them (containerd
/// allows 76 characters for each; berth's own checks are stricter).
pub(crate) fn fits(namespace: &str, id: &str) -> bool {
    namespace.len() + id.len() <= SLOT - 24
}

fn ready() -> &'static Mutex<HashMap<Key, Child>> {
    static READY: OnceLock<Mutex<HashMap<Key, Child>>> = OnceLock::new();
    READY.get_or_init(Default::default)
}

/// The standby shim for `key`, moved back to the normal scheduling class; None if there is
/// none, or it ended (it is then reaped).
pub(crate) fn take(key: &Key) -> Option<Child> {
    let mut child = ready().lock().ok()?.remove(key)?;
    if !matches!(child.try_wait(), Ok(None)) {
        return None;
    }
    set_class(&child, libc::SCHED_OTHER);
    Some(child)
}

/// Starts a standby shim for `key` unless one is there, in `dir` (berthd's state
/// directory, as a shim's working directory is under it). A shim that cannot be started is
/// no loss: the next launch starts its own.
pub(crate) fn replenish(key: Key, dir: PathBuf) {
    let Ok(mut ready) = ready().lock() else {
        return;
    };
    if ready.contains_key(&key) {
        return;
    }
    let spawned = command(&key, &dir).spawn();
    match spawned {
        Ok(child) => {
            set_class(&child, libc::SCHED_IDLE);
            ready.insert(key, child);
        }
        Err(e) => tracing::debug!(binary = %key.binary.display(), error = %e, "no standby shim"),
    }
}

fn command(key: &Key, dir: &Path) -> Command {
    let mut cmd = Command::new(&key.binary);
    cmd.arg("-address")
        .arg(&key.address)
        .arg("-publish-binary")
        .arg(&key.daemon)
        .arg("-slot")
        .arg(".".repeat(SLOT))
        .arg("standby")
        .current_dir(dir)
        .env("TTRPC_ADDRESS", &key.ttrpc_address)
        .env("GRPC_ADDRESS", &key.address)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// What a standby shim is told: the mark, the namespace, the id, the bundle and the
/// low-level runtime (empty: the one berthd runs with), each ended by a NUL, then what
/// `launch` reads on stdin.
pub(crate) fn task(
    namespace: &str,
    id: &str,
    bundle: &Path,
    runtime: Option<&str>,
    input: &[u8],
) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut m = Vec::with_capacity(input.len() + 256);
    let bundle = bundle.as_os_str().as_bytes();
    for word in [
        TASK_MARK,
        namespace.as_bytes(),
        id.as_bytes(),
        bundle,
        runtime.unwrap_or("").as_bytes(),
    ] {
        m.extend_from_slice(word);
        m.push(0);
    }
    m.extend_from_slice(input);
    m
}

/// Puts the child in scheduling class `policy` (a child that is gone is left as it is).
fn set_class(child: &Child, policy: libc::c_int) {
    if let Some(pid) = child.id() {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler with our child's pid and a local param.
        unsafe { libc::sched_setscheduler(pid as i32, policy, &param) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_five_words_then_the_input() {
        let m = task("k8s.io", "c1", Path::new("/run/b/c1"), None, b"\x0a\x01x");
        assert_eq!(
            m,
            b"berth-standby-1\0k8s.io\0c1\0/run/b/c1\0\0\x0a\x01x".to_vec()
        );
        let m = task("default", "c2", Path::new("/b"), Some("runc"), b"");
        assert_eq!(m, b"berth-standby-1\0default\0c2\0/b\0runc\0".to_vec());
        assert!(fits(&"n".repeat(76), &"i".repeat(76)));
        assert!(!fits(&"n".repeat(200), &"i".repeat(76)));
    }
}
