//! The snapshotter both drivers share: metadata, ids, directories, usage, cleanup. A driver
//! only decides how a snapshot directory is filled and how it is mounted.

use crate::idmap::IdMap;
use crate::storage::{now, Record, Storage, StoredKind, Txn};
use crate::{Error, Info, Kind, Labels, Mount, Result, Snapshotter, Usage};
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// How one kind of snapshotter lays out and mounts its snapshots.
pub trait Driver: Send + Sync + 'static {
    /// Fills a new snapshot directory (`dir` exists, empty). `parent` is the nearest
    /// committed ancestor's directory.
    fn populate(&self, dir: &Path, kind: Kind, parent: Option<&Path>) -> Result<()>;
    /// Mounts of an active or view snapshot; `lowers` are ancestor directories, nearest first.
    fn mounts(&self, dir: &Path, kind: Kind, lowers: &[PathBuf]) -> Vec<Mount>;
    /// Whether a committed snapshot holds only its own layer (so layers can be staged).
    fn independent_layers(&self) -> bool {
        false
    }
    /// Whether the driver honours the uid/gid remapping labels ([`crate::idmap`]): a new
    /// snapshot's directory belongs to the mapped root (else to its parent's owner), and
    /// its mounts carry the mappings for the mounter when the kernel can idmap layers.
    fn remaps_ids(&self) -> bool {
        false
    }
    /// Turns a filled snapshot directory into its committed form before the commit is
    /// recorded (EROFS packs `fs` into an image). A refused commit leaves what this made
    /// beside the still-active `fs`; the next commit makes it again.
    fn seal(&self, _dir: &Path) -> Result<()> {
        Ok(())
    }
    /// Tidies a snapshot directory once its commit is recorded.
    fn committed(&self, dir: &Path) -> Result<()> {
        // The work directory only serves an active overlay.
        let _ = fs::remove_dir_all(dir.join("work"));
        Ok(())
    }
    /// Makes a committed snapshot's `fs` ready to be a lower directory (EROFS mounts its
    /// image there); called each time mounts above it are handed out.
    fn ready_lower(&self, _dir: &Path) -> Result<()> {
        Ok(())
    }
    /// Undoes [`Driver::ready_lower`] before a snapshot directory is deleted.
    fn release(&self, _dir: &Path) -> Result<()> {
        Ok(())
    }
    /// What a snapshot takes on disk.
    fn usage(&self, dir: &Path, _kind: Kind) -> Result<Usage> {
        usage_of(&dir.join("fs"))
    }
}

pub struct FsSnapshotter<D: Driver> {
    root: PathBuf,
    storage: Storage,
    driver: D,
}

/// Longest snapshot key accepted; keys are names, never paths.
const MAX_KEY: usize = 4096;

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument(
            "snapshot key must not be empty".into(),
        ));
    }
    if key.len() > MAX_KEY {
        return Err(Error::InvalidArgument(format!(
            "snapshot key is {} bytes; at most {MAX_KEY}",
            key.len()
        )));
    }
    Ok(())
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

impl<D: Driver> FsSnapshotter<D> {
    pub fn open(root: &Path, driver: D) -> Result<Self> {
        fs::create_dir_all(root.join("snapshots"))
            .map_err(io(format!("create {}", root.display())))?;
        let storage = Storage::open(&root.join("metadata.redb"))?;
        Ok(FsSnapshotter {
            root: root.to_path_buf(),
            storage,
            driver,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    /// The directory holding a snapshot's own files (its `fs`).
    pub fn fs_dir(&self, key: &str) -> Result<PathBuf> {
        Ok(self.dir(self.storage.get(key)?.id).join("fs"))
    }

    fn lowers(&self, parent: Option<&str>) -> Result<Vec<PathBuf>> {
        self.storage
            .ancestors(parent)?
            .into_iter()
            .map(|(_, r)| {
                let dir = self.dir(r.id);
                self.driver.ready_lower(&dir)?;
                Ok(dir.join("fs"))
            })
            .collect()
    }

    fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
        kind: Kind,
    ) -> Result<Vec<Mount>> {
        check_key(key)?;
        let parent = parent.filter(|p| !p.is_empty());
        if let Some(p) = parent {
            let rec = self.storage.get(p).map_err(|e| match e {
                Error::NotFound(_) => Error::NotFound(format!("parent {p}")),
                e => e,
            })?;
            if rec.kind != StoredKind::Committed {
                return Err(Error::InvalidArgument(format!(
                    "parent {p:?} is not committed; commit it before building on it"
                )));
            }
        }
        let remap = match self.driver.remaps_ids() {
            true => IdMap::from_labels(&labels)?,
            false => None,
        };
        let owner = match &remap {
            Some(map) => Some(map.root_pair()?),
            None => None,
        };
        let lowers = self.lowers(parent)?;
        // Build in a temporary directory, then rename it into place inside the transaction.
        let tmp = tempdir_in(&self.root.join("snapshots"))?;
        let parent_dir = match parent {
            Some(p) => Some(self.fs_dir(p)?),
            None => None,
        };
        let filled = self
            .driver
            .populate(&tmp, kind, parent_dir.as_deref())
            .and_then(|()| self.own(&tmp.join("fs"), owner, parent_dir.as_deref()));
        if let Err(e) = filled {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let result = self.storage.write(|txn| {
            if txn.get(key)?.is_some() {
                return Err(Error::AlreadyExists(key.to_string()));
            }
            self.place(txn, key, kind.into(), parent, labels, &tmp)
        });
        let id = match result {
            Ok(id) => id,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let mounts = self.driver.mounts(&self.dir(id), kind, &lowers);
        Ok(with_mappings(mounts, remap.as_ref()))
    }

    /// Gives a remapping driver's new `fs` its owner: the mapped root, else the parent's
    /// owner (so the stacked root directory keeps the owner the layers below gave it).
    fn own(&self, fs: &Path, owner: Option<(u32, u32)>, parent: Option<&Path>) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        if !self.driver.remaps_ids() {
            return Ok(());
        }
        let owner = match (owner, parent) {
            (Some(o), _) => o,
            (None, Some(p)) => {
                let m = fs::metadata(p).map_err(io(format!("stat {}", p.display())))?;
                (m.uid(), m.gid())
            }
            (None, None) => return Ok(()),
        };
        std::os::unix::fs::lchown(fs, Some(owner.0), Some(owner.1))
            .map_err(io(format!("chown {}", fs.display())))
    }

    /// A committed snapshot made from an already-filled directory: parallel unpack extracts
    /// each layer on its own, then stacks them in order.
    fn commit_dir(
        &self,
        name: &str,
        parent: Option<&str>,
        filled: &Path,
        labels: Labels,
    ) -> Result<()> {
        check_key(name)?;
        self.driver.seal(filled)?;
        let id = self.storage.write(|txn| {
            if txn.get(name)?.is_some() {
                return Err(Error::AlreadyExists(name.to_string()));
            }
            if let Some(p) = parent {
                match txn.get(p)? {
                    Some(r) if r.kind == StoredKind::Committed => {}
                    Some(_) => {
                        return Err(Error::InvalidArgument(format!(
                            "parent {p:?} is not committed"
                        )))
                    }
                    None => return Err(Error::NotFound(format!("parent {p}"))),
                }
            }
            self.place(txn, name, StoredKind::Committed, parent, labels, filled)
        })?;
        self.driver.committed(&self.dir(id))
    }

    /// Records a new snapshot `key` in `txn` and renames its filled directory into place;
    /// returns its id. The record only commits with the transaction, after the rename.
    fn place(
        &self,
        txn: &mut Txn<'_>,
        key: &str,
        kind: StoredKind,
        parent: Option<&str>,
        labels: Labels,
        filled: &Path,
    ) -> Result<u64> {
        let id = txn.next_id()?;
        let t = now();
        txn.put(
            key,
            &Record {
                id,
                kind,
                parent: parent.map(str::to_string),
                labels,
                created_at: t,
                updated_at: t,
            },
        )?;
        if let Some(p) = parent {
            txn.link(p, key)?;
        }
        let dir = self.dir(id);
        // An id is never handed out twice, so anything here is a crash's leftover.
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io("remove orphan snapshot dir"))?;
        }
        fs::rename(filled, &dir).map_err(io("place snapshot dir"))?;
        Ok(id)
    }
}

/// `mounts` carrying `remap`'s mappings as options (first, as containerd puts them), when
/// the kernel can idmap the layers; the mounter honours them ([`crate::mount`]).
fn with_mappings(mut mounts: Vec<Mount>, remap: Option<&IdMap>) -> Vec<Mount> {
    if let Some(map) = remap.filter(|_| crate::idmap::supported()) {
        for m in &mut mounts {
            let mut options = map.options().to_vec();
            options.append(&mut m.options);
            m.options = options;
        }
    }
    mounts
}

fn tempdir_in(parent: &Path) -> Result<PathBuf> {
    for _ in 0..16 {
        let mut b = [0u8; 8];
        getrandom(&mut b);
        let p = parent.join(format!("new-{}", hex::encode(b)));
        match fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::Io {
                    context: "create snapshot dir".into(),
                    source: e,
                })
            }
        }
    }
    Err(Error::FailedPrecondition(
        "could not pick a fresh snapshot directory name".into(),
    ))
}

fn getrandom(buf: &mut [u8]) {
    // SAFETY: getrandom writes at most buf.len() bytes into the buffer we own.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        // Fall back to time and pid; names only need to be unlikely to collide.
        let seed = now() as u64 ^ ((std::process::id() as u64) << 32);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 8) * 8)) as u8;
        }
    }
}

/// Disk usage of a tree: allocated bytes and distinct inodes, hard links counted once.
pub fn usage_of(dir: &Path) -> Result<Usage> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut u = Usage::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).map_err(io(format!("read {}", d.display())))?;
        for e in entries {
            let e = e.map_err(io("read dir entry"))?;
            let m = e.metadata().map_err(io("stat"))?;
            if seen.insert((m.dev(), m.ino())) {
                u.inodes += 1;
                u.size += (m.blocks() * 512) as i64;
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(u)
}

impl<D: Driver> Snapshotter for FsSnapshotter<D> {
    fn stat(&self, key: &str) -> Result<Info> {
        Ok(self.storage.get(key)?.info(key))
    }

    fn update(&self, info: Info, paths: &[String]) -> Result<Info> {
        for p in paths {
            if p != "labels" && !p.starts_with("labels.") {
                return Err(Error::InvalidArgument(format!(
                    "cannot update {p:?} of snapshot {}: only labels can change",
                    info.name
                )));
            }
        }
        self.storage.write(|txn| {
            let mut rec = txn
                .get(&info.name)?
                .ok_or_else(|| Error::NotFound(info.name.clone()))?;
            if paths.is_empty() {
                rec.labels = info.labels.clone();
            }
            for p in paths {
                if p == "labels" {
                    rec.labels = info.labels.clone();
                } else if let Some(k) = p.strip_prefix("labels.") {
                    match info.labels.get(k) {
                        Some(v) if !v.is_empty() => {
                            rec.labels.insert(k.to_string(), v.clone());
                        }
                        _ => {
                            rec.labels.remove(k);
                        }
                    }
                }
            }
            rec.updated_at = now();
            txn.put(&info.name, &rec)?;
            Ok(rec.info(&info.name))
        })
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let rec = self.storage.get(key)?;
        self.driver.usage(&self.dir(rec.id), rec.kind.into())
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let rec = self.storage.get(key)?;
        if rec.kind == StoredKind::Committed {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {key:?} is committed; make a view of it to mount it"
            )));
        }
        let mounts = self.driver.mounts(
            &self.dir(rec.id),
            rec.kind.into(),
            &self.lowers(rec.parent.as_deref())?,
        );
        let remap = match self.driver.remaps_ids() {
            true => IdMap::from_labels(&rec.labels)?,
            false => None,
        };
        Ok(with_mappings(mounts, remap.as_ref()))
    }

    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.create(key, parent, labels, Kind::Active)
    }

    fn view(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.create(key, parent, labels, Kind::View)
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        check_key(name)?;
        let active = self.storage.get(key)?;
        if active.kind == StoredKind::Active {
            self.driver.seal(&self.dir(active.id))?;
        }
        self.storage.write(|txn| {
            let mut rec = txn
                .get(key)?
                .ok_or_else(|| Error::NotFound(key.to_string()))?;
            if rec.kind != StoredKind::Active {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {key:?} is not active; only active snapshots can be committed"
                )));
            }
            if txn.get(name)?.is_some() {
                return Err(Error::AlreadyExists(name.to_string()));
            }
            txn.delete(key)?;
            if let Some(p) = &rec.parent {
                txn.unlink(p, key)?;
                txn.link(p, name)?;
            }
            rec.kind = StoredKind::Committed;
            rec.labels.extend(labels);
            // A committed snapshot is a new record: made and last changed now, as
            // containerd's storage dates it (its client suite checks Created == Updated).
            let t = now();
            rec.created_at = t;
            rec.updated_at = t;
            txn.put(name, &rec)
        })?;
        self.driver.committed(&self.dir(active.id))
    }

    fn remove(&self, key: &str) -> Result<()> {
        let id = self.storage.write(|txn| {
            let rec = txn
                .get(key)?
                .ok_or_else(|| Error::NotFound(key.to_string()))?;
            if txn.has_children(key)? {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {key:?} has children; remove them first"
                )));
            }
            txn.delete(key)?;
            if let Some(p) = &rec.parent {
                txn.unlink(p, key)?;
            }
            Ok(rec.id)
        })?;
        // Metadata is gone first; a crash before this line leaves an orphan for Cleanup.
        let dir = self.dir(id);
        self.driver.release(&dir)?;
        fs::remove_dir_all(&dir)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(io(format!("remove {}", dir.display())))
    }

    fn walk(&self, visit: &mut dyn FnMut(&Info) -> bool) -> Result<()> {
        for (k, r) in self.storage.all()? {
            if !visit(&r.info(&k)) {
                break;
            }
        }
        Ok(())
    }

    fn remote_snapshots(&self) -> bool {
        false
    }

    fn stage(&self) -> Option<Result<crate::Staged>> {
        if !self.driver.independent_layers() {
            return None;
        }
        Some(tempdir_in(&self.root.join("snapshots")).and_then(|dir| {
            fs::create_dir(dir.join("fs")).map_err(io("create staging fs"))?;
            Ok(crate::Staged { dir })
        }))
    }

    fn commit_staged(
        &self,
        staged: crate::Staged,
        name: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<()> {
        let r = self.commit_dir(name, parent, &staged.dir, labels);
        if r.is_err() {
            staged.discard();
        }
        r
    }

    fn cleanup(&self) -> Result<()> {
        let ids: HashSet<String> = self
            .storage
            .all()?
            .into_iter()
            .map(|(_, r)| r.id.to_string())
            .collect();
        let snaps = self.root.join("snapshots");
        for e in fs::read_dir(&snaps).map_err(io("list snapshots"))? {
            let e = e.map_err(io("list snapshots"))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !ids.contains(&name) {
                self.driver.release(&e.path())?;
                fs::remove_dir_all(e.path()).map_err(io(format!("remove orphan {name}")))?;
            }
        }
        Ok(())
    }
}
