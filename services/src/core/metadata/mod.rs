//! The metadata store: every namespaced record berthd keeps, in one redb database at
//! `<root>/io.containerd.metadata.v1.redb/meta.redb`. Each write commits durably (fsync)
//! before the RPC that caused it answers.
//!
//! Schema, version 3 (keys are tuples; values are JSON documents):
//! ```text
//! meta             "schema_version"                -> u32 (little endian)
//!                  "server_uuid"                   -> utf-8 uuid
//! namespaces       ns                              -> NamespaceRecord {labels}
//! images           (ns, name)                      -> ImageRecord
//! content          (ns, digest)                    -> BlobRecord {size, created_at, updated_at, labels}
//! leases           (ns, lease id)                  -> LeaseRecord {created_at, labels}
//! lease_resources  (ns, lease id, type, resource)  -> ()
//! containers       (ns, container id)              -> ContainerRecord        (since v2)
//! volumes          (ns, volume name)               -> VolumeRecord           (since v3)
//! ```
//! A schema change bumps [`SCHEMA_VERSION`] and adds a step to `migrate` with its test.
//! v1 -> v2: the containers table is created; nothing else changes.
//! v2 -> v3: the volumes table is created; nothing else changes.

pub mod containers;
pub mod content;
pub mod images;
pub mod leases;
pub mod namespaces;
pub mod volumes;

use crate::core::context::Namespace;
use crate::core::error::{Error, Result, StoreFault};
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

pub const SCHEMA_VERSION: u32 = 3;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const NAMESPACES: TableDefinition<&str, &[u8]> = TableDefinition::new("namespaces");
pub(crate) const IMAGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("images");
pub(crate) const CONTENT: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("content");
pub(crate) const LEASES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("leases");
pub(crate) const CONTAINERS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("containers");
pub(crate) const VOLUMES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("volumes");
pub(crate) const LEASE_RESOURCES: TableDefinition<(&str, &str, &str, &str), ()> =
    TableDefinition::new("lease_resources");

pub type Labels = BTreeMap<String, String>;

/// Nanoseconds since the Unix epoch.
pub type Timestamp = i64;

pub fn now() -> Timestamp {
    berth_proto::vocab::time::now_nanos()
}

/// Largest total of one record's labels (keys plus values). containerd has no such bound; an
/// unbounded record (85 MB was seen) breaks every listing of its namespace.
pub const MAX_LABELS_TOTAL: usize = 256 << 10;

/// Largest key plus value of one label, as containerd enforces.
pub const MAX_LABEL_SIZE: usize = 4096;

pub fn validate_labels(labels: &Labels) -> Result<()> {
    let total: usize = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_LABELS_TOTAL {
        return Err(Error::invalid(format!(
            "labels would total {total} bytes; a record holds at most {MAX_LABELS_TOTAL}"
        )));
    }
    for (k, v) in labels {
        if k.is_empty() {
            return Err(Error::invalid("label key must not be empty"));
        }
        if k.len() + v.len() > MAX_LABEL_SIZE {
            return Err(Error::invalid(format!(
                "label {:?}: key and value together exceed {MAX_LABEL_SIZE} bytes",
                truncate(k, 64)
            )));
        }
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Applies an update mask to a label map: `labels` replaces all, `labels.<k>` sets or
/// removes one key. Returns false when a path is not about labels; an error when the
/// result would break the bounds, so the update is refused before anything is committed.
pub fn apply_label_path(current: &mut Labels, update: &Labels, path: &str) -> Result<bool> {
    if path == "labels" {
        *current = update.clone();
    } else if let Some(key) = path.strip_prefix("labels.") {
        match update.get(key) {
            Some(v) if !v.is_empty() => {
                current.insert(key.to_string(), v.clone());
            }
            _ => {
                current.remove(key);
            }
        }
    } else {
        return Ok(false);
    }
    validate_labels(current)?;
    Ok(true)
}

#[derive(Clone)]
pub struct MetadataStore {
    inner: Arc<Handle>,
}

/// The open database, or none while it must be opened again: redb refuses every transaction
/// after one I/O error (a full disk) until the file is closed and re-opened. Callers hold a
/// clone of the `Arc` for one transaction; redb's file lock lets the new `Database` open only
/// once every clone of the old one is gone, so a re-open that finds one still held is tried
/// again on the next call.
struct Handle {
    path: PathBuf,
    db: RwLock<Option<Arc<Database>>>,
    /// Leases deleted since the store opened (see [`MetadataStore::lease_deletions`]).
    lease_deletions: std::sync::atomic::AtomicU64,
}

impl MetadataStore {
    pub fn open(path: &Path) -> Result<Self> {
        let db = open_database(path)?;
        let store = MetadataStore {
            inner: Arc::new(Handle {
                path: path.to_path_buf(),
                db: RwLock::new(Some(Arc::new(db))),
                lease_deletions: Default::default(),
            }),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Creates every table and brings an older database up to [`SCHEMA_VERSION`].
    fn migrate(&self) -> Result<()> {
        self.write(|txn| {
            let found = {
                let mut meta = txn.open_table(META)?;
                let found = meta
                    .get("schema_version")?
                    .map(|v| {
                        let b = v.value();
                        b.try_into().map(u32::from_le_bytes).unwrap_or(0)
                    })
                    .unwrap_or(0);
                if found > SCHEMA_VERSION {
                    return Err(Error::precondition(format!(
                        "metadata schema version {found} is newer than this berthd understands ({SCHEMA_VERSION}); run a newer berthd"
                    )));
                }
                meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
                found
            };
            txn.open_table(NAMESPACES)?;
            txn.open_table(IMAGES)?;
            txn.open_table(CONTENT)?;
            txn.open_table(LEASES)?;
            txn.open_table(LEASE_RESOURCES)?;
            // Tables whose records need no migration: made here so every read finds them.
            txn.open_table(crate::core::mounts::ACTIVATIONS)?;
            txn.open_table(crate::core::sandboxes::SANDBOXES)?;
            if found < 2 {
                // v2: containers.
                txn.open_table(CONTAINERS)?;
            }
            if found < 3 {
                // v3: volumes.
                txn.open_table(VOLUMES)?;
            }
            Ok(())
        })
    }

    pub fn schema_version(&self) -> Result<u32> {
        self.read(|txn| {
            let meta = txn.open_table(META)?;
            Ok(meta
                .get("schema_version")?
                .and_then(|v| v.value().try_into().ok().map(u32::from_le_bytes))
                .unwrap_or(0))
        })
    }

    /// The server's identity, made once and kept for the life of the root directory.
    pub fn server_uuid(&self) -> Result<String> {
        self.write(|txn| {
            let mut meta = txn.open_table(META)?;
            let existing = meta
                .get("server_uuid")?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            Ok(match existing {
                Some(u) => u,
                None => {
                    let u = uuid::Uuid::new_v4().to_string();
                    meta.insert("server_uuid", u.as_bytes())?;
                    u
                }
            })
        })
    }

    /// The database, for one transaction: hold the `Arc` no longer than that, as a re-open
    /// waits for every one of them. Opens it again first when a failed write left it closed.
    pub(crate) fn db(&self) -> Result<Arc<Database>> {
        let slot = self.inner.db.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        drop(slot);
        self.reopen()
    }

    fn reopen(&self) -> Result<Arc<Database>> {
        let mut slot = self
            .inner
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone()); // another caller opened it first
        }
        let db = Arc::new(open_database(&self.inner.path)?);
        *slot = Some(db.clone());
        tracing::info!(path = %self.inner.path.display(), "metadata database re-opened after an I/O error");
        Ok(db)
    }

    /// Answers `out`; when redb failed it with an I/O error first closes `db` (every later
    /// transaction on it would fail) and opens the file again, which waits for space no more
    /// than any other write: a re-open that fails now is tried again on the next call.
    fn checked<T>(&self, db: Arc<Database>, out: Result<T>) -> Result<T> {
        if let Err(e) = &out {
            if must_reopen(e) {
                {
                    let mut slot = self
                        .inner
                        .db
                        .write()
                        .unwrap_or_else(PoisonError::into_inner);
                    if slot.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, &db)) {
                        tracing::warn!(path = %self.inner.path.display(), error = %e, "metadata database closed after an I/O error");
                        *slot = None;
                    }
                }
                drop(db);
                if let Err(again) = self.db() {
                    tracing::warn!(error = %again, "metadata database not yet re-opened; trying again on the next call");
                }
            }
        }
        out
    }

    /// Runs `f` in one write transaction and commits it durably.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
        let db = self.db()?;
        let out = (|| {
            let txn = db.begin_write()?;
            let out = f(&txn)?;
            txn.commit()?;
            Ok(out)
        })();
        self.checked(db, out)
    }

    /// Runs `f` in one read transaction.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let db = self.db()?;
        let out = (|| f(&db.begin_read()?))();
        self.checked(db, out)
    }
}

fn open_database(path: &Path) -> Result<Database> {
    Database::create(path).map_err(|e| {
        Error::from(e).context(format!("cannot open metadata database {}", path.display()))
    })
}

/// Whether redb failed with an error after which it refuses every transaction until the
/// database is opened again: an I/O error (a full disk), or the refusal itself. Errors that
/// came from redb say which (`Error::Store`'s fault).
fn must_reopen(e: &Error) -> bool {
    matches!(
        e,
        Error::Store {
            fault: StoreFault::Io | StoreFault::DiskFull,
            ..
        }
    )
}

/// A namespace comes into being on its first write.
pub(crate) fn ensure_namespace(txn: &WriteTransaction, ns: &Namespace) -> Result<bool> {
    let mut table = txn.open_table(NAMESPACES)?;
    if table.get(ns.as_str())?.is_some() {
        return Ok(false);
    }
    let record = namespaces::NamespaceRecord::default();
    table.insert(ns.as_str(), serde_json::to_vec(&record)?.as_slice())?;
    Ok(true)
}

/// A namespaced JSON record table: (namespace, key) -> document.
pub(crate) type NsTable = TableDefinition<'static, (&'static str, &'static str), &'static [u8]>;

impl MetadataStore {
    /// One record of a namespaced table, if present.
    pub(crate) fn ns_get<T: serde::de::DeserializeOwned>(
        &self,
        table: NsTable,
        ns: &Namespace,
        key: &str,
    ) -> Result<Option<T>> {
        self.read(|txn| {
            let t = txn.open_table(table)?;
            let found = t.get((ns.as_str(), key))?;
            Ok(match found {
                Some(v) => Some(serde_json::from_slice(v.value())?),
                None => None,
            })
        })
    }

    /// Every record of a namespace in a namespaced table, in key order.
    pub(crate) fn ns_list<T: serde::de::DeserializeOwned>(
        &self,
        table: NsTable,
        ns: &Namespace,
    ) -> Result<Vec<T>> {
        self.read(|txn| {
            let t = txn.open_table(table)?;
            let mut out = vec![];
            for entry in t.range((ns.as_str(), "")..)? {
                let (k, v) = entry?;
                if k.value().0 != ns.as_str() {
                    break;
                }
                out.push(serde_json::from_slice(v.value())?);
            }
            Ok(out)
        })
    }
}

/// True when any record of the namespace exists in a table keyed by (ns, ...).
pub(crate) fn namespace_has_records<
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
>(
    table: &T,
    ns: &str,
) -> Result<bool> {
    let mut range = table.range((ns, "")..)?;
    Ok(match range.next() {
        Some(entry) => entry?.0.value().0 == ns,
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_version_and_uuid_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let uuid = {
            let store = MetadataStore::open(&path).unwrap();
            assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
            store.server_uuid().unwrap()
        };
        let store = MetadataStore::open(&path).unwrap();
        assert_eq!(store.server_uuid().unwrap(), uuid);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let store = MetadataStore::open(&path).unwrap();
            store
                .write(|txn| {
                    let mut meta = txn.open_table(META)?;
                    meta.insert("schema_version", 99u32.to_le_bytes().as_slice())?;
                    Ok(())
                })
                .unwrap();
        }
        let err = MetadataStore::open(&path).err().unwrap();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn migrates_v1_to_v2_keeping_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            // A v1 database: its tables, no containers table, version 1.
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("schema_version", 1u32.to_le_bytes().as_slice())
                    .unwrap();
                let mut ns = txn.open_table(NAMESPACES).unwrap();
                ns.insert("kept", br#"{"labels":{"a":"b"}}"#.as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let store = MetadataStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let ns = Namespace::parse("kept").unwrap();
        assert_eq!(store.namespace_get(&ns).unwrap().unwrap().labels["a"], "b");
        assert!(store.container_list(&ns).unwrap().is_empty());
        assert!(store.volume_list(&ns).unwrap().is_empty());
    }

    /// A failed write on a full disk leaves redb refusing every transaction ("Previous I/O
    /// error occurred") until the file is opened again: the store does so itself, so once
    /// space is freed the next write succeeds.
    #[test]
    fn a_full_disk_does_not_poison_the_store() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "this test mounts a tmpfs; run as root");
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("small");
        std::fs::create_dir(&mnt).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(status.success());
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(self.0).status();
            }
        }
        let _unmount = Unmount(&mnt);
        let store = MetadataStore::open(&mnt.join("meta.redb")).unwrap();
        let uuid = store.server_uuid().unwrap();
        // Fill what is left.
        let filler = mnt.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 64 << 10];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        drop(f);
        let value = vec![b'v'; 3000];
        let put = |i: usize| {
            store.write(|txn| {
                let mut meta = txn.open_table(META)?;
                meta.insert(format!("k{i}").as_str(), value.as_slice())?;
                Ok(())
            })
        };
        let err = (0..10_000)
            .find_map(|i| put(i).err())
            .expect("the store never ran out of room");
        assert_eq!(
            err.kind(),
            crate::core::error::Kind::ResourceExhausted,
            "{err}"
        );
        assert!(err.to_string().contains("No space left on device"), "{err}");
        // Still full: refused (if at all) for the same reason, not as poisoned.
        if let Err(again) = put(99_999) {
            assert!(!again.to_string().contains("Previous I/O error"), "{again}");
        }
        std::fs::remove_file(&filler).unwrap();
        put(100_000).unwrap();
        assert_eq!(store.server_uuid().unwrap(), uuid);
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn label_paths() {
        let mut cur: Labels = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        let upd: Labels = [("a".into(), "9".into())].into();
        assert!(apply_label_path(&mut cur, &upd, "labels.a").unwrap());
        assert!(apply_label_path(&mut cur, &upd, "labels.b").unwrap());
        assert_eq!(cur, upd);
        assert!(!apply_label_path(&mut cur, &upd, "target").unwrap());
        let big: Labels = [("k".into(), "v".repeat(MAX_LABEL_SIZE))].into();
        assert!(validate_labels(&big).is_err());
    }
}
