//! Snapshot metadata for one snapshotter, in its own redb file. Schema, version 1:
//! ```text
//! meta       "schema_version" -> u32 LE;  "next_id" -> u64 LE (ids are never reused)
//! snapshots  key -> Record (JSON)
//! children   (parent key, child key) -> ()
//! ```
//! Ordering keeps crashes harmless: a snapshot directory is made before its record commits
//! (a crash leaves an orphan directory, which Cleanup removes), and a record is deleted before
//! its directory (same outcome).

use crate::{Error, Info, Kind, Labels, Result};
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

const SCHEMA_VERSION: u32 = 1;
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const CHILDREN: TableDefinition<(&str, &str), ()> = TableDefinition::new("children");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub id: u64,
    pub kind: StoredKind,
    pub parent: Option<String>,
    pub labels: Labels,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum StoredKind {
    View,
    Active,
    Committed,
}

impl From<StoredKind> for Kind {
    fn from(k: StoredKind) -> Kind {
        match k {
            StoredKind::View => Kind::View,
            StoredKind::Active => Kind::Active,
            StoredKind::Committed => Kind::Committed,
        }
    }
}

impl From<Kind> for StoredKind {
    fn from(k: Kind) -> StoredKind {
        match k {
            Kind::View => StoredKind::View,
            Kind::Active => StoredKind::Active,
            Kind::Committed => StoredKind::Committed,
        }
    }
}

impl Record {
    pub fn info(&self, name: &str) -> Info {
        Info {
            name: name.to_string(),
            parent: self.parent.clone(),
            kind: self.kind.into(),
            labels: self.labels.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

const STORE_CONTEXT: &str = "snapshot metadata";

/// redb's error, kept typed inside the I/O error (its words unchanged) for [`must_reopen`].
fn store_err(e: impl Into<redb::Error>) -> Error {
    let e: redb::Error = e.into();
    let kind = match &e {
        redb::Error::Io(io) => io.kind(),
        _ => std::io::ErrorKind::Other,
    };
    Error::Io {
        context: STORE_CONTEXT.into(),
        source: std::io::Error::new(kind, e),
    }
}

fn json_err(e: serde_json::Error) -> Error {
    Error::Io {
        context: STORE_CONTEXT.into(),
        source: std::io::Error::other(e),
    }
}

/// Whether redb failed with an error after which it refuses every transaction until the
/// database is opened again: an I/O error (a full disk), or that refusal itself.
fn must_reopen(e: &Error) -> bool {
    let Error::Io { context, source } = e else {
        return false;
    };
    context == STORE_CONTEXT
        && matches!(
            source
                .get_ref()
                .and_then(|s| s.downcast_ref::<redb::Error>()),
            Some(redb::Error::Io(_) | redb::Error::PreviousIo)
        )
}

/// The open database, or none while it must be opened again: redb refuses every transaction
/// after one I/O error until the file is closed and re-opened. Each call holds a clone of the
/// `Arc` for its transaction; redb's file lock lets the new `Database` open only once every
/// clone of the old one is gone, so a re-open that finds one still held is tried again on the
/// next call.
pub struct Storage {
    path: PathBuf,
    db: RwLock<Option<Arc<Database>>>,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

impl Storage {
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(store_err)?;
        let storage = Storage {
            path: path.to_path_buf(),
            db: RwLock::new(Some(Arc::new(db))),
        };
        storage.write(|t| {
            let mut meta = t.txn.open_table(META).map_err(store_err)?;
            let found = meta
                .get("schema_version")
                .map_err(store_err)?
                .and_then(|v| v.value().try_into().ok().map(u32::from_le_bytes))
                .unwrap_or(0);
            if found > SCHEMA_VERSION {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot metadata schema {found} is newer than supported ({SCHEMA_VERSION}); run a newer berthd"
                )));
            }
            meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())
                .map_err(store_err)?;
            t.txn.open_table(SNAPSHOTS).map_err(store_err)?;
            t.txn.open_table(CHILDREN).map_err(store_err)?;
            Ok(())
        })?;
        Ok(storage)
    }

    /// The database for one transaction, opened again first when a failed one closed it.
    fn db(&self) -> Result<Arc<Database>> {
        let slot = self.db.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        drop(slot);
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone()); // another caller opened it first
        }
        let db = Arc::new(Database::create(&self.path).map_err(store_err)?);
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Answers `out`; when redb failed it with an I/O error, first closes `db` and opens the
    /// file again (a re-open that fails now is tried again on the next call).
    fn checked<T>(&self, db: Arc<Database>, out: Result<T>) -> Result<T> {
        if matches!(&out, Err(e) if must_reopen(e)) {
            {
                let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
                if slot.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, &db)) {
                    *slot = None;
                }
            }
            drop(db);
            let _ = self.db();
        }
        out
    }

    fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let db = self.db()?;
        let out = (|| f(&db.begin_read().map_err(store_err)?))();
        self.checked(db, out)
    }

    pub fn get(&self, key: &str) -> Result<Record> {
        self.read(|txn| {
            let t = txn.open_table(SNAPSHOTS).map_err(store_err)?;
            let v = t.get(key).map_err(store_err)?;
            match v {
                Some(v) => serde_json::from_slice(v.value()).map_err(json_err),
                None => Err(Error::NotFound(key.to_string())),
            }
        })
    }

    /// The chain of ancestors of `key`, nearest first, as (key, record).
    pub fn ancestors(&self, parent: Option<&str>) -> Result<Vec<(String, Record)>> {
        let mut out = vec![];
        let mut next = parent.map(str::to_string);
        while let Some(k) = next {
            let r = self.get(&k)?;
            next = r.parent.clone();
            out.push((k, r));
            if out.len() > 4096 {
                return Err(Error::FailedPrecondition(
                    "snapshot parent chain too deep".into(),
                ));
            }
        }
        Ok(out)
    }

    pub fn all(&self) -> Result<Vec<(String, Record)>> {
        self.read(|txn| {
            let t = txn.open_table(SNAPSHOTS).map_err(store_err)?;
            let mut out = vec![];
            for e in t.iter().map_err(store_err)? {
                let (k, v) = e.map_err(store_err)?;
                out.push((
                    k.value().to_string(),
                    serde_json::from_slice(v.value()).map_err(json_err)?,
                ));
            }
            Ok(out)
        })
    }

    /// Runs `f` in one write transaction; nothing is stored unless it returns Ok.
    pub fn write<T>(&self, f: impl FnOnce(&mut Txn<'_>) -> Result<T>) -> Result<T> {
        let db = self.db()?;
        let out = (|| {
            let txn = db.begin_write().map_err(store_err)?;
            let out = f(&mut Txn { txn: &txn })?;
            txn.commit().map_err(store_err)?;
            Ok(out)
        })();
        self.checked(db, out)
    }
}

pub struct Txn<'a> {
    txn: &'a WriteTransaction,
}

impl Txn<'_> {
    pub fn get(&self, key: &str) -> Result<Option<Record>> {
        let t = self.txn.open_table(SNAPSHOTS).map_err(store_err)?;
        let v = t.get(key).map_err(store_err)?;
        match v {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(json_err)?)),
            None => Ok(None),
        }
    }

    pub fn put(&mut self, key: &str, r: &Record) -> Result<()> {
        let mut t = self.txn.open_table(SNAPSHOTS).map_err(store_err)?;
        let bytes = serde_json::to_vec(r).map_err(json_err)?;
        t.insert(key, bytes.as_slice()).map_err(store_err)?;
        Ok(())
    }

    pub fn delete(&mut self, key: &str) -> Result<()> {
        let mut t = self.txn.open_table(SNAPSHOTS).map_err(store_err)?;
        t.remove(key).map_err(store_err)?;
        Ok(())
    }

    pub fn next_id(&mut self) -> Result<u64> {
        let mut meta = self.txn.open_table(META).map_err(store_err)?;
        let id = meta
            .get("next_id")
            .map_err(store_err)?
            .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(1);
        meta.insert("next_id", (id + 1).to_le_bytes().as_slice())
            .map_err(store_err)?;
        Ok(id)
    }

    pub fn link(&mut self, parent: &str, child: &str) -> Result<()> {
        let mut t = self.txn.open_table(CHILDREN).map_err(store_err)?;
        t.insert((parent, child), ()).map_err(store_err)?;
        Ok(())
    }

    pub fn unlink(&mut self, parent: &str, child: &str) -> Result<()> {
        let mut t = self.txn.open_table(CHILDREN).map_err(store_err)?;
        t.remove((parent, child)).map_err(store_err)?;
        Ok(())
    }

    pub fn has_children(&self, key: &str) -> Result<bool> {
        let t = self.txn.open_table(CHILDREN).map_err(store_err)?;
        let mut r = t.range((key, "")..).map_err(store_err)?;
        let found = match r.next() {
            Some(e) => e.map_err(store_err)?.0.value().0 == key,
            None => false,
        };
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The re-open is decided by redb's typed error, whose words the message keeps.
    #[test]
    fn only_redb_io_failures_make_a_reopen() {
        let refused = store_err(redb::StorageError::PreviousIo);
        assert!(must_reopen(&refused));
        assert!(
            refused.to_string().contains("Previous I/O error"),
            "{refused}"
        );
        let full = redb::StorageError::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(must_reopen(&store_err(redb::CommitError::Storage(full))));
        assert!(!must_reopen(&store_err(redb::StorageError::Corrupted(
            "I/O error".into()
        ))));
        let json = serde_json::from_slice::<Record>(b"I/O error").unwrap_err();
        assert!(!must_reopen(&json_err(json)));
    }

    /// A failed write on a full disk leaves redb refusing every transaction ("Previous I/O
    /// error occurred") until the file is opened again: the storage does so itself, so once
    /// space is freed the next write succeeds.
    #[test]
    fn a_full_disk_does_not_poison_the_storage() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "this test mounts a tmpfs; run as root");
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("small");
        std::fs::create_dir(&mnt).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(mounted.success());
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(self.0).status();
            }
        }
        let _unmount = Unmount(&mnt);
        let storage = Storage::open(&mnt.join("metadata.redb")).unwrap();
        let filler = mnt.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![1u8; 64 << 10];
        while std::io::Write::write_all(&mut f, &block).is_ok() {}
        drop(f);
        let labels: Labels = [("k".to_string(), "v".repeat(3000))].into();
        let put = |i: usize| {
            storage.write(|t| {
                let record = Record {
                    id: t.next_id()?,
                    kind: StoredKind::Committed,
                    parent: None,
                    labels: labels.clone(),
                    created_at: 0,
                    updated_at: 0,
                };
                t.put(&format!("s{i}"), &record)
            })
        };
        let err = (0..10_000)
            .find_map(|i| put(i).err())
            .expect("the storage never ran out of room");
        assert!(err.to_string().contains("No space left on device"), "{err}");
        if let Err(again) = put(99_999) {
            assert!(!again.to_string().contains("Previous I/O error"), "{again}");
        }
        std::fs::remove_file(&filler).unwrap();
        put(100_000).unwrap();
        assert!(storage.get("s100000").is_ok());
    }
}
