//! Leases service core.

use crate::context::Namespace;
use crate::error::{blocking, Error, Result};
use crate::filters::{label_field, Fields, Filter};
use crate::metadata::leases::{LeaseRecord, LeaseResource};
use crate::metadata::{now, validate_labels, Labels, MetadataStore};

const MAX_LEASE_ID: usize = 1024;

impl Fields for LeaseRecord {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("id") => Some(self.id.clone()),
            Some("labels") => label_field(&self.labels, path),
            _ => None,
        }
    }
}

/// Resource types a lease may hold, as containerd names them.
fn validate_resource(r: &LeaseResource) -> Result<()> {
    let known = matches!(r.kind.as_str(), "content" | "ingests")
        || r.kind
            .strip_prefix("snapshots/")
            .is_some_and(|s| !s.is_empty());
    if !known {
        return Err(Error::invalid(format!(
            "lease resource type {:?} is not one of content, ingests, snapshots/<snapshotter>",
            r.kind
        )));
    }
    if r.id.is_empty() {
        return Err(Error::invalid("lease resource id must not be empty"));
    }
    Ok(())
}

#[derive(Clone)]
pub struct Leases {
    store: MetadataStore,
}

impl Leases {
    pub fn new(store: MetadataStore) -> Self {
        Leases { store }
    }

    /// Creates a lease; an empty id gets a random one.
    pub async fn create(&self, ns: Namespace, id: String, labels: Labels) -> Result<LeaseRecord> {
        let id = if id.is_empty() {
            format!("berth-{}", uuid::Uuid::new_v4().simple())
        } else {
            // containerd takes any name here (ctr uses mount paths); only keep it sane.
            if id.len() > MAX_LEASE_ID || id.chars().any(char::is_control) {
                return Err(Error::invalid(format!(
                    "lease id must be at most {MAX_LEASE_ID} bytes without control characters"
                )));
            }
            id
        };
        validate_labels(&labels)?;
        let lease = LeaseRecord {
            id,
            created_at: now(),
            labels,
        };
        let store = self.store.clone();
        blocking(move || {
            store.lease_create(&ns, &lease)?;
            Ok(lease)
        })
        .await
    }

    pub async fn delete(&self, ns: Namespace, id: String) -> Result<()> {
        let store = self.store.clone();
        blocking(move || store.lease_delete(&ns, &id)).await
    }

    pub async fn list(&self, ns: Namespace, filter: Filter) -> Result<Vec<LeaseRecord>> {
        let store = self.store.clone();
        let all = blocking(move || store.lease_list(&ns)).await?;
        Ok(all.into_iter().filter(|l| filter.matches(l)).collect())
    }

    pub async fn add_resource(&self, ns: Namespace, id: String, r: LeaseResource) -> Result<()> {
        validate_resource(&r)?;
        let store = self.store.clone();
        blocking(move || store.lease_add_resource(&ns, &id, &r)).await
    }

    pub async fn delete_resource(&self, ns: Namespace, id: String, r: LeaseResource) -> Result<()> {
        validate_resource(&r)?;
        let store = self.store.clone();
        blocking(move || store.lease_delete_resource(&ns, &id, &r)).await
    }

    pub async fn resources(&self, ns: Namespace, id: String) -> Result<Vec<LeaseResource>> {
        let store = self.store.clone();
        blocking(move || store.lease_resources(&ns, &id)).await
    }
}
