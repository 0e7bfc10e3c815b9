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
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::path::Path;

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

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Io {
        context: "snapshot metadata".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

pub struct Storage {
    db: Database,
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
        let txn = db.begin_write().map_err(store_err)?;
        {
            let mut meta = txn.open_table(META).map_err(store_err)?;
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
        }
        txn.open_table(SNAPSHOTS).map_err(store_err)?;
        txn.open_table(CHILDREN).map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        Ok(Storage { db })
    }

    pub fn get(&self, key: &str) -> Result<Record> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let t = txn.open_table(SNAPSHOTS).map_err(store_err)?;
        let v = t.get(key).map_err(store_err)?;
        match v {
            Some(v) => serde_json::from_slice(v.value()).map_err(store_err),
            None => Err(Error::NotFound(key.to_string())),
        }
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
        let txn = self.db.begin_read().map_err(store_err)?;
        let t = txn.open_table(SNAPSHOTS).map_err(store_err)?;
        let mut out = vec![];
        for e in t.iter().map_err(store_err)? {
            let (k, v) = e.map_err(store_err)?;
            out.push((
                k.value().to_string(),
                serde_json::from_slice(v.value()).map_err(store_err)?,
            ));
        }
        Ok(out)
    }

    /// Runs `f` in one write transaction; nothing is stored unless it returns Ok.
    pub fn write<T>(&self, f: impl FnOnce(&mut Txn<'_>) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_write().map_err(store_err)?;
        let out = {
            let mut t = Txn { txn: &txn };
            f(&mut t)?
        };
        txn.commit().map_err(store_err)?;
        Ok(out)
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
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(store_err)?)),
            None => Ok(None),
        }
    }

    pub fn put(&mut self, key: &str, r: &Record) -> Result<()> {
        let mut t = self.txn.open_table(SNAPSHOTS).map_err(store_err)?;
        let bytes = serde_json::to_vec(r).map_err(store_err)?;
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
