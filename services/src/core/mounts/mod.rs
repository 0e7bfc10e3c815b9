//! containerd 2.2's Mount Manager: mounts berthd performs on the host for a named activation
//! (directories made, templates filled from earlier mounts, mounts made under
//! `<state>/mounts/<id>/<n>`), recorded per namespace in the metadata store so none leaks.
//! An activation made under a lease goes with the lease; a record left half-made by a crash
//! is undone at the next start.

mod transform;

use crate::core::context::{Ctx, Namespace};
use crate::core::error::{blocking, Error, Result};
use crate::core::filters::{key_label_field, Fields, Filter};
use crate::core::metadata::{apply_label_path, now, validate_labels, Labels, MetadataStore};
use berth_snapshotters::mount::{mount, unmount};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use transform::split_type;

/// (namespace, name) -> activation record (JSON).
pub(crate) const ACTIVATIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("mount_activations");

const MAX_NAME: usize = 1024;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MountSpec {
    pub kind: String,
    pub source: String,
    pub target: String,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ActiveMount {
    pub mount: MountSpec,
    pub mounted_at: i64,
    pub mount_point: String,
    pub data: Labels,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Activation {
    pub name: String,
    pub active: Vec<ActiveMount>,
    pub system: Vec<MountSpec>,
    pub labels: Labels,
    pub activated_at: i64,
    /// The lease holding it (gone with the lease).
    pub lease: Option<String>,
    /// Where its mounts are: `<state>/mounts/<id>`.
    pub dir: String,
    /// Recorded before mounting: a record still pending at start was cut short.
    pub pending: bool,
}

impl Fields for Activation {
    fn field(&self, path: &[String]) -> Option<String> {
        key_label_field("name", &self.name, &self.labels, path)
    }
}

#[derive(Clone)]
pub struct MountManager {
    store: MetadataStore,
    /// `<state>/mounts`: one directory per activation.
    targets: PathBuf,
    /// Where `mkdir/` may create directories.
    roots: Vec<PathBuf>,
    /// Activations and deactivations one at a time.
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The store's lease deletions the last sweep saw (none yet: `u64::MAX`); a sweep with
    /// no lease deleted since has nothing to do.
    swept: Arc<AtomicU64>,
}

impl MountManager {
    /// Opens the manager, undoing activations a crash left half-made and directories no
    /// record names.
    pub fn open(store: MetadataStore, targets: PathBuf, root: &Path) -> Result<Self> {
        std::fs::create_dir_all(&targets)
            .map_err(|e| Error::io(format!("create {}", targets.display()), e))?;
        let mm = MountManager {
            store,
            roots: vec![targets.clone(), root.to_path_buf()],
            targets,
            lock: Arc::default(),
            swept: Arc::new(AtomicU64::new(u64::MAX)),
        };
        mm.recover()?;
        Ok(mm)
    }

    fn recover(&self) -> Result<()> {
        let mut known = std::collections::HashSet::new();
        for (ns, a) in self.all()? {
            if a.pending {
                tracing::warn!(name = a.name, "undoing a mount activation cut short");
                undo_dir(Path::new(&a.dir));
                self.remove_record(&ns, &a.name)?;
            } else {
                known.insert(PathBuf::from(&a.dir));
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.targets) {
            for e in entries.flatten() {
                if !known.contains(&e.path()) {
                    undo_dir(&e.path());
                }
            }
        }
        Ok(())
    }

    /// Performs what `mounts` asks the manager to (transforms, and with `temporary` every
    /// mount); `None` when nothing is the manager's to do (the caller mounts them itself).
    pub async fn activate(
        &self,
        ctx: Ctx,
        name: String,
        mounts: Vec<MountSpec>,
        labels: Labels,
        temporary: bool,
    ) -> Result<Option<Activation>> {
        if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "activation name must be 1 to {MAX_NAME} bytes without control characters"
            )));
        }
        validate_labels(&labels)?;
        if mounts.is_empty() {
            return Err(Error::invalid("activation needs at least one mount"));
        }
        let Some(plan) = Plan::of(mounts, temporary) else {
            return Ok(None);
        };
        self.sweep().await?;
        let _one = self.lock.lock().await;
        if let Some(lease) = &ctx.lease {
            let (store, ns, l) = (self.store.clone(), ctx.ns.clone(), lease.clone());
            if blocking(move || store.lease_get(&ns, &l)).await?.is_none() {
                return Err(Error::not_found(format!("lease {lease:?}")));
            }
        }
        let dir = self.targets.join(uuid::Uuid::new_v4().simple().to_string());
        let record = Activation {
            name: name.clone(),
            labels,
            activated_at: now(),
            lease: ctx.lease.clone(),
            dir: dir.display().to_string(),
            pending: true,
            ..Default::default()
        };
        let (this, ns) = (self.clone(), ctx.ns.clone());
        blocking(move || {
            this.insert_new(&ns, &record)?;
            match this.perform(plan, record, &dir) {
                Ok(done) => {
                    this.put(&ns, &done)?;
                    Ok(Some(done))
                }
                Err(e) => {
                    undo_dir(&dir);
                    let _ = this.remove_record(&ns, &name);
                    Err(e)
                }
            }
        })
        .await
    }

    fn perform(&self, plan: Plan, mut record: Activation, dir: &Path) -> Result<Activation> {
        std::fs::create_dir(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let Plan {
            mut mounts,
            transforms,
            first_system,
            temporary,
        } = plan;
        for (i, m) in mounts.iter_mut().enumerate().take(first_system) {
            for t in &transforms[i] {
                *m = t.apply(std::mem::take(m), &record.active, &self.roots)?;
            }
            // Zero-padded, so a directory listing is the order to undo in.
            let mp = dir.join(format!("{:04}", i + 1));
            std::fs::create_dir(&mp)
                .map_err(|e| Error::io(format!("create {}", mp.display()), e))?;
            let sm = berth_snapshotters::Mount {
                kind: m.kind.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            };
            mount(&sm, &mp).map_err(|e| {
                Error::invalid(format!("mount {} ({}) failed: {e}", m.source, m.kind))
            })?;
            record.active.push(ActiveMount {
                mount: m.clone(),
                mounted_at: now(),
                mount_point: mp.display().to_string(),
                data: Labels::new(),
            });
        }
        let mut system: Vec<MountSpec> = mounts.split_off(first_system);
        if let Some(first) = system.first_mut() {
            for t in &transforms[first_system] {
                *first = t.apply(std::mem::take(first), &record.active, &self.roots)?;
            }
        }
        if temporary {
            if let Some(last) = record.active.last() {
                system.push(MountSpec {
                    kind: "bind".into(),
                    source: last.mount_point.clone(),
                    target: String::new(),
                    options: vec!["rbind".into()],
                });
            }
        }
        record.system = system;
        record.pending = false;
        Ok(record)
    }

    /// Unmounts an activation's mounts, last first, and forgets it.
    pub async fn deactivate(&self, ns: Namespace, name: String) -> Result<()> {
        let _one = self.lock.lock().await;
        let this = self.clone();
        blocking(move || this.deactivate_now(&ns, &name)).await
    }

    fn deactivate_now(&self, ns: &Namespace, name: &str) -> Result<()> {
        let a = self
            .get(ns, name)?
            .ok_or_else(|| Error::not_found(format!("mount activation {name:?}")))?;
        for m in a.active.iter().rev() {
            unmount(Path::new(&m.mount_point));
        }
        undo_dir(Path::new(&a.dir));
        self.remove_record(ns, name)
    }

    pub async fn info(&self, ns: Namespace, name: String) -> Result<Activation> {
        self.sweep().await?;
        let this = self.clone();
        blocking(move || {
            this.get(&ns, &name)?
                .ok_or_else(|| Error::not_found(format!("mount activation {name:?}")))
        })
        .await
    }

    /// Changes labels: `paths` empty replaces them all, else `labels` or `labels.<key>`.
    pub async fn update(
        &self,
        ns: Namespace,
        name: String,
        labels: Labels,
        paths: Vec<String>,
    ) -> Result<Activation> {
        let _one = self.lock.lock().await;
        let this = self.clone();
        blocking(move || {
            let mut a = this
                .get(&ns, &name)?
                .ok_or_else(|| Error::not_found(format!("mount activation {name:?}")))?;
            let paths = if paths.is_empty() {
                vec!["labels".to_string()]
            } else {
                paths
            };
            for p in &paths {
                if !apply_label_path(&mut a.labels, &labels, p)? {
                    return Err(Error::invalid(format!(
                        "cannot update {p:?} of a mount activation: only labels change"
                    )));
                }
            }
            this.put(&ns, &a)?;
            Ok(a)
        })
        .await
    }

    pub async fn list(&self, ns: Namespace, filter: Filter) -> Result<Vec<Activation>> {
        self.sweep().await?;
        let store = self.store.clone();
        let all: Vec<Activation> = blocking(move || store.ns_list(ACTIVATIONS, &ns)).await?;
        Ok(all
            .into_iter()
            .filter(|a| !a.pending && filter.matches(a))
            .collect())
    }

    /// Deactivates what a lease held once the lease is gone (deleted, or expired and
    /// collected). Runs before the manager answers, and from [`MountManager::run`]; reads
    /// the activations only when a lease was deleted since the last sweep (or at the first).
    pub async fn sweep(&self) -> Result<()> {
        let _one = self.lock.lock().await;
        let deletions = self.store.lease_deletions();
        if self.swept.load(Ordering::SeqCst) == deletions {
            return Ok(());
        }
        let this = self.clone();
        blocking(move || {
            let mut failed = false;
            for (ns, a) in this.all()? {
                let Some(lease) = &a.lease else { continue };
                if a.pending || this.store.lease_get(&ns, lease)?.is_some() {
                    continue;
                }
                tracing::info!(name = a.name, lease, "lease gone: deactivating its mounts");
                if let Err(e) = this.deactivate_now(&ns, &a.name) {
                    tracing::warn!(name = a.name, error = %e, "cannot deactivate");
                    failed = true;
                }
            }
            if !failed {
                this.swept.store(deletions, Ordering::SeqCst); // else tried again next time
            }
            Ok(())
        })
        .await
    }

    /// Sweeps every minute, so a lease's mounts go even when nobody asks the manager.
    pub fn run(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                if let Err(e) = this.sweep().await {
                    tracing::warn!(error = %e, "mount manager sweep failed");
                }
            }
        })
    }

    fn get(&self, ns: &Namespace, name: &str) -> Result<Option<Activation>> {
        self.store.ns_get(ACTIVATIONS, ns, name)
    }

    /// Records `a`: a new name, else AlreadyExists.
    fn insert_new(&self, ns: &Namespace, a: &Activation) -> Result<()> {
        self.write_record(ns, a, true)
    }

    fn put(&self, ns: &Namespace, a: &Activation) -> Result<()> {
        self.write_record(ns, a, false)
    }

    fn write_record(&self, ns: &Namespace, a: &Activation, fresh: bool) -> Result<()> {
        self.store.write(|txn| {
            let mut t = txn.open_table(ACTIVATIONS)?;
            let key = (ns.as_str(), a.name.as_str());
            if fresh && t.get(key)?.is_some() {
                return Err(Error::already_exists(format!(
                    "mount activation {:?}",
                    a.name
                )));
            }
            t.insert(key, serde_json::to_vec(a)?.as_slice())?;
            Ok(())
        })
    }

    fn remove_record(&self, ns: &Namespace, name: &str) -> Result<()> {
        self.store.write(|txn| {
            txn.open_table(ACTIVATIONS)?.remove((ns.as_str(), name))?;
            Ok(())
        })
    }

    fn all(&self) -> Result<Vec<(Namespace, Activation)>> {
        let txn = self.store.db()?.begin_read()?;
        let t = txn.open_table(ACTIVATIONS)?;
        let mut out = vec![];
        for entry in t.iter()? {
            let (k, v) = entry?;
            let Ok(ns) = Namespace::parse(k.value().0) else {
                continue;
            };
            out.push((ns, serde_json::from_slice(v.value())?));
        }
        Ok(out)
    }
}

/// What an activation does: the mounts before `first_system` are performed here (each
/// after its transforms); the one at `first_system` is transformed and, with the rest,
/// left to the caller.
struct Plan {
    mounts: Vec<MountSpec>,
    transforms: Vec<Vec<transform::Transform>>,
    first_system: usize,
    temporary: bool,
}

impl Plan {
    /// `None` when no mount needs the manager (containerd answers NotImplemented then).
    fn of(mut mounts: Vec<MountSpec>, temporary: bool) -> Option<Plan> {
        let mut first_system = None;
        let mut transforms = vec![];
        for (i, m) in mounts.iter_mut().enumerate() {
            let (ts, kind) = split_type(&m.kind);
            if !ts.is_empty() {
                first_system = Some(i);
            }
            if temporary {
                first_system = Some(i + 1);
            }
            m.kind = kind;
            transforms.push(ts);
        }
        transforms.push(vec![]);
        Some(Plan {
            mounts,
            transforms,
            first_system: first_system?,
            temporary,
        })
    }
}

/// Unmounts what is mounted under an activation's directory (last first) and removes it.
fn undo_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut points: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    points.sort();
    for p in points.iter().rev() {
        unmount(p);
    }
    for p in points.iter().rev() {
        if let Err(e) = std::fs::remove_dir(p) {
            tracing::warn!(path = %p.display(), error = %e, "mount point left behind");
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str) -> MountSpec {
        MountSpec {
            kind: kind.into(),
            source: "/s".into(),
            ..Default::default()
        }
    }

    #[test]
    fn plain_mounts_are_not_the_managers() {
        assert!(Plan::of(vec![spec("bind"), spec("overlay")], false).is_none());
        assert!(Plan::of(vec![spec("fuse/x")], false).is_none());
    }

    #[test]
    fn transforms_decide_what_is_performed() {
        let p = Plan::of(vec![spec("mkdir/bind"), spec("format/overlay")], false).unwrap();
        assert_eq!(p.first_system, 1);
        assert_eq!(p.mounts[1].kind, "overlay");
        let p = Plan::of(vec![spec("format/bind")], false).unwrap();
        assert_eq!(p.first_system, 0);
        let p = Plan::of(vec![spec("bind")], true).unwrap();
        assert_eq!(p.first_system, 1);
    }

    /// A sweep reads the activations at its first run and after a lease is deleted, and
    /// then deactivates what a gone lease held; between deletions it has nothing to do.
    #[tokio::test]
    async fn a_sweep_looks_again_only_after_a_lease_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(&dir.path().join("meta.redb")).unwrap();
        let mm = MountManager::open(store.clone(), dir.path().join("mounts"), dir.path()).unwrap();
        let ns = Namespace::parse("default").unwrap();
        let held = |name: &str, lease: &str| Activation {
            name: name.into(),
            lease: Some(lease.into()),
            dir: dir.path().join(name).display().to_string(),
            ..Default::default()
        };
        let names = |mm: &MountManager| -> Vec<String> {
            mm.all().unwrap().into_iter().map(|(_, a)| a.name).collect()
        };
        mm.put(&ns, &held("first", "never-made")).unwrap();
        mm.sweep().await.unwrap();
        assert!(
            names(&mm).is_empty(),
            "the first sweep reads every activation"
        );

        // Recorded behind the manager's back: no lease deletion since, so not looked at.
        mm.put(&ns, &held("second", "never-made")).unwrap();
        mm.sweep().await.unwrap();
        assert_eq!(names(&mm), ["second"]);

        let lease = crate::core::metadata::leases::LeaseRecord {
            id: "l".into(),
            ..Default::default()
        };
        store.lease_create(&ns, &lease).unwrap();
        mm.put(&ns, &held("third", "l")).unwrap();
        store.lease_delete(&ns, "l").unwrap();
        mm.sweep().await.unwrap();
        assert!(
            names(&mm).is_empty(),
            "a lease deletion makes the next sweep look"
        );
    }
}
