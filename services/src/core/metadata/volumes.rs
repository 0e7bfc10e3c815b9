//! Volume records: a name, labels, and whether the engine made it for one container.

use super::{ensure_namespace, Labels, MetadataStore, Timestamp, VOLUMES};
use crate::core::context::Namespace;
use crate::core::error::{Error, Result};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VolumeRecord {
    pub name: String,
    pub labels: Labels,
    pub created_at: Timestamp,
    /// Made from an image's VOLUME entry for one container; named volumes are never
    /// removed with a container.
    pub anonymous: bool,
}

impl MetadataStore {
    pub fn volume_get(&self, ns: &Namespace, name: &str) -> Result<VolumeRecord> {
        self.ns_get(VOLUMES, ns, name)?
            .ok_or_else(|| Error::not_found(format!("volume {name:?}")))
    }

    pub fn volume_list(&self, ns: &Namespace) -> Result<Vec<VolumeRecord>> {
        self.ns_list(VOLUMES, ns)
    }

    pub fn volume_create(&self, ns: &Namespace, v: &VolumeRecord) -> Result<()> {
        self.write(|txn| {
            ensure_namespace(txn, ns)?;
            let mut table = txn.open_table(VOLUMES)?;
            if table.get((ns.as_str(), v.name.as_str()))?.is_some() {
                return Err(Error::already_exists(format!("volume {:?}", v.name)));
            }
            table.insert(
                (ns.as_str(), v.name.as_str()),
                serde_json::to_vec(v)?.as_slice(),
            )?;
            Ok(())
        })
    }

    pub fn volume_delete(&self, ns: &Namespace, name: &str) -> Result<VolumeRecord> {
        self.write(|txn| {
            let mut table = txn.open_table(VOLUMES)?;
            let removed = table.remove((ns.as_str(), name))?;
            match removed {
                Some(v) => Ok(serde_json::from_slice(v.value())?),
                None => Err(Error::not_found(format!("volume {name:?}"))),
            }
        })
    }
}
