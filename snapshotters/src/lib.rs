//! The snapshotter interface: filesystem trees kept as parent chains of committed layers,
//! with writable (active) and read-only (view) snapshots on top. Every implementation passes
//! the same conformance suite.

pub mod erofs;
pub mod fs;
pub mod hash;
pub mod idmap;
pub mod layer;
pub mod mount;
pub mod native;
pub mod overlay;
pub mod storage;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;
pub mod view;
pub mod whiteout;

use std::collections::BTreeMap;

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    View,
    Active,
    Committed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    pub name: String,
    pub parent: Option<String>,
    pub kind: Kind,
    pub labels: Labels,
    /// Nanoseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub size: i64,
    pub inodes: i64,
}

/// A mount as handed to consumers; they choose the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snapshot {0:?} not found")]
    NotFound(String),
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A snapshotter in another process (a proxy plugin) did not answer: it is down, or
    /// missed its deadline.
    #[error("{0}")]
    Unavailable(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// containerd's snapshotter semantics. Calls block (filesystem work); async callers run them
/// on a blocking thread.
impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Opens the named snapshotter under `root` (its own directory).
pub fn open(name: &str, root: &std::path::Path) -> Result<Box<dyn Snapshotter>> {
    match name {
        overlay::NAME => {
            overlay::Overlay::check_support(root)?;
            Ok(Box::new(fs::FsSnapshotter::open(root, overlay::Overlay)?))
        }
        native::NAME => Ok(Box::new(fs::FsSnapshotter::open(root, native::Native)?)),
        erofs::NAME => {
            erofs::Erofs::check_support(root)?;
            let driver = erofs::Erofs::default();
            Ok(Box::new(fs::FsSnapshotter::open(root, driver)?))
        }
        other => Err(Error::NotFound(format!("snapshotter {other}"))),
    }
}

pub trait Snapshotter: Send + Sync {
    fn stat(&self, key: &str) -> Result<Info>;
    /// Changes labels only; `paths` as in an update mask (`labels`, `labels.<k>`).
    fn update(&self, info: Info, paths: &[String]) -> Result<Info>;
    fn usage(&self, key: &str) -> Result<Usage>;
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;
    /// A writable snapshot on top of the committed `parent`.
    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>>;
    /// A read-only snapshot of the committed `parent`.
    fn view(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>>;
    /// Turns the active snapshot `key` into the committed snapshot `name`.
    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()>;
    /// Removes a snapshot; refused while it has children.
    fn remove(&self, key: &str) -> Result<()>;
    /// Visits every snapshot until `visit` returns false.
    fn walk(&self, visit: &mut dyn FnMut(&Info) -> bool) -> Result<()>;
    /// Deletes directories no snapshot owns (left by a crash).
    fn cleanup(&self) -> Result<()>;

    /// Whether this snapshotter may serve a layer itself from labels that say where the layer
    /// lives (containerd's remote snapshotters: stargz, SOCI, nydus). Unpack then passes those
    /// labels on Prepare, and neither fetches nor applies a layer whose Prepare answers
    /// AlreadyExists with its chain ID committed. berth's own snapshotters never do, so their
    /// unpack asks nothing more; any other (a proxy plugin) is asked, as containerd asks every
    /// snapshotter.
    fn remote_snapshots(&self) -> bool {
        true
    }

    /// For a snapshotter in another process (a proxy plugin), which may be stuck or gone: a
    /// count that moves whenever a call that may change its snapshots (prepare, view, commit,
    /// update, remove) starts or ends. The collector lists such a snapshotter before it stops
    /// writers, and trusts that list only while the count has not moved. None (berth's own,
    /// in process): listed while writers are stopped.
    fn changes(&self) -> Option<u64> {
        None
    }

    /// For snapshotters whose committed layers hold only their own changes (overlayfs):
    /// a fresh staging directory whose `fs` a caller fills with one layer, independently of
    /// its parents, so layers can be extracted in parallel. None: layers must be applied
    /// in order on a prepared snapshot.
    fn stage(&self) -> Option<Result<Staged>> {
        None
    }

    /// Commits a filled staging directory as snapshot `name` on top of `parent`.
    fn commit_staged(
        &self,
        staged: Staged,
        name: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<()> {
        let _ = (name, parent, labels);
        let _ = std::fs::remove_dir_all(&staged.dir);
        Err(Error::FailedPrecondition(
            "this snapshotter does not stage layers".into(),
        ))
    }
}

/// A staging directory from [`Snapshotter::stage`]; fill `fs()` with one layer.
#[derive(Debug)]
pub struct Staged {
    pub dir: std::path::PathBuf,
}

impl Staged {
    pub fn fs(&self) -> std::path::PathBuf {
        self.dir.join("fs")
    }

    /// Drops an unused staging directory.
    pub fn discard(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
