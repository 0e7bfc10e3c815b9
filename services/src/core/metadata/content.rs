//! Which blobs each namespace can see, with their labels. The bytes live in the content
//! store on disk, shared by all namespaces.

use super::{ensure_namespace, Labels, MetadataStore, Timestamp, CONTENT, NAMESPACES};
use crate::core::context::Namespace;
use crate::core::error::{Error, Result};
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BlobRecord {
    pub digest: String,
    pub size: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub labels: Labels,
}

impl MetadataStore {
    pub fn blob_get(&self, ns: &Namespace, digest: &str) -> Result<Option<BlobRecord>> {
        self.ns_get(CONTENT, ns, digest)
    }

    pub fn blob_list(&self, ns: &Namespace) -> Result<Vec<BlobRecord>> {
        self.ns_list(CONTENT, ns)
    }

    /// Records a committed blob in a namespace. Returns Ok(false) if it was already there
    /// (labels are then merged in), Ok(true) if newly recorded.
    pub fn blob_add(&self, ns: &Namespace, record: &BlobRecord) -> Result<bool> {
        self.write(|txn| {
            ensure_namespace(txn, ns)?;
            let mut table = txn.open_table(CONTENT)?;
            let key = (ns.as_str(), record.digest.as_str());
            let existing: Option<BlobRecord> = match table.get(key)? {
                Some(v) => Some(serde_json::from_slice(v.value())?),
                None => None,
            };
            let (record, added) = match existing {
                Some(mut old) => {
                    if record.labels.is_empty() {
                        return Ok(false);
                    }
                    old.labels.extend(record.labels.clone());
                    old.updated_at = record.updated_at;
                    (old, false)
                }
                None => (record.clone(), true),
            };
            table.insert(key, serde_json::to_vec(&record)?.as_slice())?;
            Ok(added)
        })
    }

    pub fn blob_update(
        &self,
        ns: &Namespace,
        digest: &str,
        edit: impl FnOnce(&mut BlobRecord) -> Result<()>,
    ) -> Result<BlobRecord> {
        self.write(|txn| {
            let mut table = txn.open_table(CONTENT)?;
            let mut record: BlobRecord = match table.get((ns.as_str(), digest))? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => return Err(Error::not_found(format!("content {digest}"))),
            };
            edit(&mut record)?;
            table.insert(
                (ns.as_str(), digest),
                serde_json::to_vec(&record)?.as_slice(),
            )?;
            Ok(record)
        })
    }

    /// Removes the blob from the namespace; returns whether any namespace still uses it.
    pub fn blob_remove(&self, ns: &Namespace, digest: &str) -> Result<bool> {
        self.write(|txn| {
            let mut table = txn.open_table(CONTENT)?;
            if table.remove((ns.as_str(), digest))?.is_none() {
                return Err(Error::not_found(format!("content {digest}")));
            }
            let namespaces = txn.open_table(NAMESPACES)?;
            for entry in namespaces.iter()? {
                let (other, _) = entry?;
                if table.get((other.value(), digest))?.is_some() {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    /// Whether any namespace references the digest (used before deleting blob files).
    pub fn blob_referenced(&self, digest: &str) -> Result<bool> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(CONTENT)?;
        let namespaces = txn.open_table(NAMESPACES)?;
        for entry in namespaces.iter()? {
            let (ns, _) = entry?;
            if table.get((ns.value(), digest))?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
