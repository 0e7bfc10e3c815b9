//! Leases service core.

use crate::core::context::{Ctx, Namespace};
use crate::core::error::{blocking, Error, Result};
use crate::core::filters::{key_label_field, Fields, Filter};
use crate::core::gc::fence::GcHandle;
use crate::core::metadata::leases::{LeaseRecord, LeaseResource};
use crate::core::metadata::{now, validate_labels, Labels, MetadataStore};

const MAX_LEASE_ID: usize = 1024;

impl Fields for LeaseRecord {
    fn field(&self, path: &[String]) -> Option<String> {
        key_label_field("id", &self.id, &self.labels, path)
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
    /// Adding a resource holds what nothing held a moment ago: it waits for a collection
    /// in progress; deleting a lease asks for one.
    gc: GcHandle,
}

impl Leases {
    pub fn new(store: MetadataStore, gc: GcHandle) -> Self {
        Leases { store, gc }
    }

    /// Runs `f` under a lease of its own, expiring within the hour should berthd die meanwhile
    /// (unless `ctx` brings one), with no collection running: what a transfer writes, or
    /// found present, stays until the image record that refers to it exists.
    pub async fn with_temporary<T, F, Fut>(
        &self,
        gc: &crate::core::gc::Gc,
        ctx: Ctx,
        f: F,
    ) -> Result<T>
    where
        F: FnOnce(Ctx) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let _op = gc.operation().await;
        if ctx.lease.is_some() {
            return f(ctx).await;
        }
        let id = format!("berth-transfer-{}", uuid::Uuid::new_v4().simple());
        let expire = berth_proto::vocab::time::rfc3339(
            std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
        );
        self.create(
            ctx.ns.clone(),
            id.clone(),
            Labels::from([(berth_proto::vocab::labels::GC_EXPIRE.to_string(), expire)]),
        )
        .await?;
        let leased = Ctx {
            ns: ctx.ns.clone(),
            lease: Some(id.clone()),
        };
        let out = f(leased).await;
        // What the transfer kept is referred to by now; the lease's end asks no collection.
        let store = self.store.clone();
        let (ns, lease) = (ctx.ns.clone(), id.clone());
        if let Err(e) = blocking(move || store.lease_delete(&ns, &lease)).await {
            tracing::warn!(lease = id, error = %e, "cannot remove a transfer's lease");
        }
        out
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

    /// Deletes a lease; what only it held is collected soon.
    pub async fn delete(&self, ns: Namespace, id: String) -> Result<()> {
        self.delete_then_collect(ns, id, false).await
    }

    /// Deletes a lease; what only it held is collected before this returns when `now` (so
    /// never call it inside an operation: the collection would wait for it), soon otherwise.
    pub async fn delete_then_collect(&self, ns: Namespace, id: String, now: bool) -> Result<()> {
        let store = self.store.clone();
        blocking(move || store.lease_delete(&ns, &id)).await?;
        self.gc.after_delete(now).await
    }

    pub async fn list(&self, ns: Namespace, filter: Filter) -> Result<Vec<LeaseRecord>> {
        let store = self.store.clone();
        let all = blocking(move || store.lease_list(&ns)).await?;
        Ok(all.into_iter().filter(|l| filter.matches(l)).collect())
    }

    pub async fn add_resource(&self, ns: Namespace, id: String, r: LeaseResource) -> Result<()> {
        validate_resource(&r)?;
        let _op = self.gc.operation().await;
        let store = self.store.clone();
        blocking(move || store.lease_add_resource(&ns, &id, &r)).await
    }

    pub async fn delete_resource(&self, ns: Namespace, id: String, r: LeaseResource) -> Result<()> {
        validate_resource(&r)?;
        let _op = self.gc.operation().await;
        let store = self.store.clone();
        blocking(move || store.lease_delete_resource(&ns, &id, &r)).await
    }

    pub async fn resources(&self, ns: Namespace, id: String) -> Result<Vec<LeaseResource>> {
        let store = self.store.clone();
        blocking(move || store.lease_resources(&ns, &id)).await
    }
}
