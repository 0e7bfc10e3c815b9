//! Leases and the resources they hold.

use super::{ensure_namespace, Labels, MetadataStore, Timestamp, LEASES, LEASE_RESOURCES};
use crate::core::context::Namespace;
use crate::core::error::{Error, Result};
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LeaseRecord {
    pub id: String,
    pub created_at: Timestamp,
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeaseResource {
    pub kind: String,
    pub id: String,
}

impl MetadataStore {
    pub fn lease_create(&self, ns: &Namespace, lease: &LeaseRecord) -> Result<()> {
        self.write(|txn| {
            ensure_namespace(txn, ns)?;
            let mut table = txn.open_table(LEASES)?;
            if table.get((ns.as_str(), lease.id.as_str()))?.is_some() {
                return Err(Error::already_exists(format!("lease {:?}", lease.id)));
            }
            table.insert(
                (ns.as_str(), lease.id.as_str()),
                serde_json::to_vec(lease)?.as_slice(),
            )?;
            Ok(())
        })
    }

    pub fn lease_get(&self, ns: &Namespace, id: &str) -> Result<Option<LeaseRecord>> {
        self.ns_get(LEASES, ns, id)
    }

    pub fn lease_list(&self, ns: &Namespace) -> Result<Vec<LeaseRecord>> {
        self.ns_list(LEASES, ns)
    }

    /// Deletes the lease and its resource records together.
    pub fn lease_delete(&self, ns: &Namespace, id: &str) -> Result<()> {
        self.write(|txn| {
            let mut table = txn.open_table(LEASES)?;
            if table.remove((ns.as_str(), id))?.is_none() {
                return Err(Error::not_found(format!("lease {id:?}")));
            }
            let mut resources = txn.open_table(LEASE_RESOURCES)?;
            let keys = collect_resources(&resources, ns.as_str(), id)?;
            for r in keys {
                resources.remove((ns.as_str(), id, r.kind.as_str(), r.id.as_str()))?;
            }
            Ok(())
        })?;
        self.inner.lease_deletions.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// How many leases were deleted since the store opened: what holds things by lease
    /// (mount activations) looks for gone leases only when this moved.
    pub(crate) fn lease_deletions(&self) -> u64 {
        self.inner.lease_deletions.load(Ordering::SeqCst)
    }

    pub fn lease_add_resource(&self, ns: &Namespace, id: &str, r: &LeaseResource) -> Result<()> {
        self.write(|txn| {
            let table = txn.open_table(LEASES)?;
            if table.get((ns.as_str(), id))?.is_none() {
                return Err(Error::not_found(format!("lease {id:?}")));
            }
            let mut resources = txn.open_table(LEASE_RESOURCES)?;
            resources.insert((ns.as_str(), id, r.kind.as_str(), r.id.as_str()), ())?;
            Ok(())
        })
    }

    pub fn lease_delete_resource(&self, ns: &Namespace, id: &str, r: &LeaseResource) -> Result<()> {
        self.write(|txn| {
            let table = txn.open_table(LEASES)?;
            if table.get((ns.as_str(), id))?.is_none() {
                return Err(Error::not_found(format!("lease {id:?}")));
            }
            let mut resources = txn.open_table(LEASE_RESOURCES)?;
            resources.remove((ns.as_str(), id, r.kind.as_str(), r.id.as_str()))?;
            Ok(())
        })
    }

    pub fn lease_resources(&self, ns: &Namespace, id: &str) -> Result<Vec<LeaseResource>> {
        let txn = self.db()?.begin_read()?;
        if txn.open_table(LEASES)?.get((ns.as_str(), id))?.is_none() {
            return Err(Error::not_found(format!("lease {id:?}")));
        }
        let resources = txn.open_table(LEASE_RESOURCES)?;
        collect_resources(&resources, ns.as_str(), id)
    }
}

fn collect_resources(
    table: &impl ReadableTable<(&'static str, &'static str, &'static str, &'static str), ()>,
    ns: &str,
    id: &str,
) -> Result<Vec<LeaseResource>> {
    let mut out = vec![];
    for entry in table.range((ns, id, "", "")..)? {
        let (k, _) = entry?;
        let (kns, kid, kind, rid) = k.value();
        if kns != ns || kid != id {
            break;
        }
        out.push(LeaseResource {
            kind: kind.to_string(),
            id: rid.to_string(),
        });
    }
    Ok(out)
}
