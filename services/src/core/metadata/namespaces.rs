//! Namespace records.

use super::{
    namespace_has_records, Labels, MetadataStore, CONTAINERS, CONTENT, IMAGES, LEASES, NAMESPACES,
    VOLUMES,
};
use crate::core::context::Namespace;
use crate::core::error::{Error, Result};
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NamespaceRecord {
    pub labels: Labels,
}

impl MetadataStore {
    pub fn namespace_get(&self, ns: &Namespace) -> Result<Option<NamespaceRecord>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(NAMESPACES)?;
        let found = table.get(ns.as_str())?;
        Ok(match found {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    pub fn namespace_list(&self) -> Result<Vec<(String, NamespaceRecord)>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(NAMESPACES)?;
        let mut out = vec![];
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), serde_json::from_slice(v.value())?));
        }
        Ok(out)
    }

    /// Records `ns` if it is not yet known (a write only the first time): everything a
    /// namespace holds, snapshots included, is found through this table (`ctr ns ls`, GC).
    pub fn namespace_ensure(&self, ns: &Namespace) -> Result<()> {
        if self.namespace_get(ns)?.is_some() {
            return Ok(());
        }
        self.write(|txn| super::ensure_namespace(txn, ns).map(|_| ()))
    }

    pub fn namespace_create(&self, ns: &Namespace, record: &NamespaceRecord) -> Result<()> {
        self.write(|txn| {
            let mut table = txn.open_table(NAMESPACES)?;
            if table.get(ns.as_str())?.is_some() {
                return Err(Error::already_exists(format!("namespace {ns}")));
            }
            table.insert(ns.as_str(), serde_json::to_vec(record)?.as_slice())?;
            Ok(())
        })
    }

    /// Replaces the record after `edit` changed it; an unknown namespace is made (empty)
    /// first.
    pub fn namespace_update(
        &self,
        ns: &Namespace,
        edit: impl FnOnce(&mut NamespaceRecord) -> Result<()>,
    ) -> Result<NamespaceRecord> {
        self.write(|txn| {
            let mut table = txn.open_table(NAMESPACES)?;
            // A namespace that does not exist yet is made by its first update, as
            // containerd's SetLabel makes its bucket (its client suite labels `testing`
            // before anything else).
            let mut record: NamespaceRecord = match table.get(ns.as_str())? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => NamespaceRecord::default(),
            };
            edit(&mut record)?;
            table.insert(ns.as_str(), serde_json::to_vec(&record)?.as_slice())?;
            Ok(record)
        })
    }

    /// Deletes an empty namespace; refuses while it still holds images, blobs, leases,
    /// containers, volumes, mount activations or sandboxes.
    pub fn namespace_delete(&self, ns: &Namespace) -> Result<()> {
        self.write(|txn| {
            let mut table = txn.open_table(NAMESPACES)?;
            if table.get(ns.as_str())?.is_none() {
                return Err(Error::not_found(format!("namespace {ns}")));
            }
            for (what, def) in [
                ("images", IMAGES),
                ("content", CONTENT),
                ("leases", LEASES),
                ("containers", CONTAINERS),
                ("volumes", VOLUMES),
                ("mount activations", crate::core::mounts::ACTIVATIONS),
                ("sandboxes", crate::core::sandboxes::SANDBOXES),
            ] {
                if namespace_has_records(&txn.open_table(def)?, ns.as_str())? {
                    return Err(Error::precondition(format!(
                        "namespace {ns} must be empty, but it still has {what}; remove them first"
                    )));
                }
            }
            table.remove(ns.as_str())?;
            Ok(())
        })
    }
}
