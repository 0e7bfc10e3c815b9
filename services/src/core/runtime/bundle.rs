//! Where a task's files live, and the shim's log: `<state>/io.containerd.runtime.v2.task/<ns>/<id>`
//! is the bundle (config.json, rootfs/, the `log` FIFO, the shim's `address`),
//! `<root>/io.containerd.runtime.v2.task/<ns>/<id>` its work directory, and runc's own state
//! goes to `<state>/runc`.

use crate::core::error::{Error, Result};
use std::path::{Path, PathBuf};

const TASK_DIR: &str = "io.containerd.runtime.v2.task";

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub root: PathBuf,
    pub state: PathBuf,
    /// berthd's gRPC socket (shims get it as -address; events go to `<it>.ttrpc`).
    pub address: PathBuf,
}

impl RuntimeConfig {
    pub fn ttrpc_address(&self) -> PathBuf {
        let mut s = self.address.as_os_str().to_owned();
        s.push(".ttrpc");
        PathBuf::from(s)
    }
    /// Every namespace's bundles live below this.
    pub(super) fn bundles(&self) -> PathBuf {
        self.state.join(TASK_DIR)
    }
    pub(super) fn bundle(&self, ns: &str, id: &str) -> PathBuf {
        self.bundles().join(ns).join(id)
    }
    pub(super) fn work(&self, ns: &str, id: &str) -> PathBuf {
        self.root.join(TASK_DIR).join(ns).join(id)
    }
    pub(super) fn runc_root(&self) -> PathBuf {
        self.state.join("runc")
    }
}

pub(super) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let c = context.into();
    move |e| Error::io(c, e)
}

pub(super) fn private_dir(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(p).map_err(io(format!("create {}", p.display())))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).map_err(io("chmod 0700"))
}

/// A directory others may pass through but not list: a user-namespaced container's root, a
/// different host uid, must reach what is bind-mounted from it (a bundle's rootfs, a pod's
/// hostname and resolv.conf); what is secret in it (a bundle's spec) is readable by root
/// alone.
pub(crate) fn passable_dir(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(p).map_err(io(format!("create {}", p.display())))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o711)).map_err(io("chmod 0711"))
}

/// Writes the bundle a shim is started in: the spec, an empty rootfs mount point, and a link
/// to the work directory.
pub(super) fn prepare(bundle: &Path, work: &Path, spec: &[u8]) -> Result<()> {
    serde_json::from_slice::<serde_json::Value>(spec)
        .map_err(|e| Error::invalid(format!("container spec is not valid JSON: {e}")))?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(bundle.join("config.json"))
            .map_err(io("write config.json"))?;
        f.write_all(spec).map_err(io("write config.json"))?;
    }
    std::fs::create_dir(bundle.join("rootfs")).map_err(io("create rootfs"))?;
    std::os::unix::fs::symlink(work, bundle.join("work")).map_err(io("link work dir"))?;
    Ok(())
}

/// Removes a task's bundle and work directory; what cannot be removed stays for recovery.
pub(super) fn remove(bundle: &Path, work: &Path) {
    let _ = std::fs::remove_dir_all(bundle);
    let _ = std::fs::remove_dir_all(work);
}

/// Where retired bundles and work directories wait to be removed: `.retired` beside the
/// namespaces' directories (no namespace can be so named).
const RETIRED: &str = ".retired";

/// Takes a deleted task's bundle and work directory out of their places, a rename each (their
/// names are free at once for a new task of the same id), for [`remove_retired`] to remove
/// off the answer's path; returns where they went. What cannot be moved is removed in place
/// now. A daemon that stops before removing them leaves them to [`sweep_retired`].
pub(super) fn retire(cfg: &RuntimeConfig, bundle: &Path, work: &Path) -> Vec<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut moved = vec![];
    for (dir, top) in [(bundle, cfg.bundles()), (work, cfg.root.join(TASK_DIR))] {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let to = top
            .join(RETIRED)
            .join(format!("{}-{n}", std::process::id()));
        let renamed = made_private(&top.join(RETIRED)).then(|| std::fs::rename(dir, &to));
        match renamed {
            Some(Ok(())) => moved.push(to),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            _ => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    moved
}

/// Whether `dir` is there, made 0700 if it was not.
fn made_private(dir: &Path) -> bool {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::AlreadyExists,
    }
}

/// Removes what [`retire`] moved.
pub(super) fn remove_retired(dirs: &[PathBuf]) {
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Removes whatever a previous daemon retired and did not get to remove.
pub(super) fn sweep_retired(cfg: &RuntimeConfig) {
    let _ = std::fs::remove_dir_all(cfg.bundles().join(RETIRED));
    let _ = std::fs::remove_dir_all(cfg.root.join(TASK_DIR).join(RETIRED));
}

/// The socket a shim left in its bundle's `address` file.
pub(super) fn shim_socket(bundle: &Path) -> PathBuf {
    let address = std::fs::read_to_string(bundle.join("address")).unwrap_or_default();
    let a = address.trim();
    PathBuf::from(a.strip_prefix("unix://").unwrap_or(a))
}

/// The shim writes its log to the `log` FIFO in the bundle, opening it for writing: the
/// daemon opens the reading end first and copies every line into its own log.
pub(super) fn open_log(bundle: &Path, id: &str) -> Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::ffi::OsStrExt;
    let path = bundle.join("log");
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("bundle path has a NUL byte"))?;
    // SAFETY: mkfifo with a NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(Error::io(
            "create shim log fifo",
            std::io::Error::last_os_error(),
        ));
    }
    follow_log(&path, id)
}

/// Copies the shim's log lines into berthd's log until the task goes (the handle is aborted
/// then: the FIFO is held open read-write so a shim restart never sees a closed pipe).
pub(super) fn follow_log(path: &Path, id: &str) -> Result<tokio::task::JoinHandle<()>> {
    let rx = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .map_err(io("open shim log fifo"))?;
    let id = id.to_string();
    Ok(tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(rx).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "berth_services::shim", id = %id, "{line}");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_bundle_files() {
        let cfg = RuntimeConfig {
            root: "/var/lib/berth".into(),
            state: "/run/berth".into(),
            address: "/run/berth/berth.sock".into(),
        };
        assert_eq!(
            cfg.ttrpc_address(),
            PathBuf::from("/run/berth/berth.sock.ttrpc")
        );
        assert_eq!(
            cfg.bundle("default", "c1"),
            PathBuf::from("/run/berth/io.containerd.runtime.v2.task/default/c1")
        );
        assert_eq!(
            cfg.work("default", "c1"),
            PathBuf::from("/var/lib/berth/io.containerd.runtime.v2.task/default/c1")
        );

        let dir = tempfile::tempdir().unwrap();
        let (bundle, work) = (dir.path().join("b"), dir.path().join("w"));
        private_dir(&bundle).unwrap();
        private_dir(&work).unwrap();
        assert!(prepare(&bundle, &work, b"not json").is_err());
        prepare(&bundle, &work, br#"{"ociVersion":"1.0.2"}"#).unwrap();
        assert!(bundle.join("rootfs").is_dir());
        assert_eq!(std::fs::read_link(bundle.join("work")).unwrap(), work);

        std::fs::write(bundle.join("address"), "unix:///run/x.sock\n").unwrap();
        assert_eq!(shim_socket(&bundle), PathBuf::from("/run/x.sock"));
        remove(&bundle, &work);
        assert!(!bundle.exists() && !work.exists());
    }

    #[test]
    fn retired_directories_free_their_names_at_once_and_go_later_or_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RuntimeConfig {
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            address: dir.path().join("berth.sock"),
        };
        let lay_out = || {
            let (bundle, work) = (cfg.bundle("default", "c1"), cfg.work("default", "c1"));
            passable_dir(&bundle).unwrap();
            private_dir(&work).unwrap();
            prepare(&bundle, &work, br#"{"ociVersion":"1.0.2"}"#).unwrap();
            (bundle, work)
        };
        let (bundle, work) = lay_out();
        let retired = retire(&cfg, &bundle, &work);
        assert_eq!(retired.len(), 2);
        assert!(!bundle.exists() && !work.exists(), "the names are free");
        assert!(retired.iter().all(|d| d.is_dir()), "kept until removed");
        let again = lay_out();
        let left = retire(&cfg, &again.0, &again.1);
        remove_retired(&retired);
        assert!(retired.iter().all(|d| !d.exists()));
        assert!(
            left.iter().all(|d| d.exists()),
            "a daemon that stopped left these"
        );
        sweep_retired(&cfg);
        assert!(
            left.iter().all(|d| !d.exists()),
            "the next start sweeps them"
        );
        let nothing = retire(&cfg, &bundle, &work);
        assert!(nothing.is_empty(), "nothing there, nothing moved");
    }
}
