//! Snapshots service core: the snapshotters by name, with namespaced keys. Inside a
//! snapshotter a key is stored as `<namespace>/<key>`; namespaces contain no `/`, so keys of
//! different namespaces never meet. This module is the one place keys are scoped and
//! unscoped, and snapshots recorded in leases; pull and unpack use it.

use crate::core::context::Ctx;
use crate::core::context::Namespace;
use crate::core::error::{blocking, Error, Result};
use crate::core::events::{Event, Exchange};
use crate::core::filters::{label_field, Fields, Filter};
use crate::core::gc::fence::GcFence;
use crate::core::metadata::leases::LeaseResource;
use crate::core::metadata::{validate_labels, Labels, MetadataStore};
use berth_proto::vocab::labels::SNAPSHOT_REF;
use berth_snapshotters::{Info, Kind, Mount, Snapshotter, Usage};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A snapshot as a namespace sees it (names without the namespace prefix).
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo(pub Info);

impl Fields for SnapshotInfo {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("name") => Some(self.0.name.clone()),
            Some("parent") => Some(self.0.parent.clone().unwrap_or_default()),
            Some("kind") => Some(
                match self.0.kind {
                    Kind::View => "view",
                    Kind::Active => "active",
                    Kind::Committed => "committed",
                }
                .into(),
            ),
            Some("labels") => label_field(&self.0.labels, path),
            _ => None,
        }
    }
}

/// The key a snapshotter stores for `key` in namespace `ns`.
pub(crate) fn scoped(ns: &Namespace, key: &str) -> String {
    format!("{ns}/{key}")
}

/// A key a client names a new snapshot by: anything but empty.
fn check_new_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid(format!("{what} must be set")));
    }
    Ok(())
}

/// A remote snapshotter commits a layer it serves as the snapshot named by the
/// `containerd.io/snapshot.ref` label (a client names the chain ID); inside the snapshotter
/// that name is scoped like every other.
fn scope_remote_target(ns: &Namespace, mut labels: Labels) -> Labels {
    if let Some(target) = labels.get_mut(SNAPSHOT_REF) {
        if unscope(ns, target).is_none() {
            *target = scoped(ns, target);
        }
    }
    labels
}

/// The namespace's own key for a snapshotter key (None for other namespaces' keys).
pub(crate) fn unscope<'a>(ns: &Namespace, stored: &'a str) -> Option<&'a str> {
    stored.strip_prefix(ns.as_str())?.strip_prefix('/')
}

/// The namespace a snapshotter key belongs to (what [`scoped`] put before the first `/`).
pub fn key_namespace(stored: &str) -> Option<Namespace> {
    let (ns, _) = stored.split_once('/')?;
    Namespace::parse(ns).ok()
}

fn unscoped(ns: &Namespace, mut info: Info) -> Option<Info> {
    info.name = unscope(ns, &info.name)?.to_string();
    info.parent = match info.parent {
        Some(p) => Some(unscope(ns, &p)?.to_string()),
        None => None,
    };
    Some(info)
}

/// Errors name snapshots by the client's key, never the scoped one.
fn unscope_message(what: &str) -> String {
    what.split(' ')
        .map(|w| match w.split_once('/') {
            Some((ns, key)) if Namespace::parse(ns).is_ok() => key,
            _ => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl From<berth_snapshotters::Error> for Error {
    fn from(e: berth_snapshotters::Error) -> Self {
        use berth_snapshotters::Error as S;
        match e {
            S::NotFound(what) => Error::not_found(format!("snapshot {}", unscope_message(&what))),
            S::AlreadyExists(what) => {
                Error::already_exists(format!("snapshot {}", unscope_message(&what)))
            }
            S::InvalidArgument(m) => Error::invalid(m),
            S::FailedPrecondition(m) => Error::precondition(m),
            S::Unavailable(m) => Error::new(crate::core::error::Kind::Unavailable, m),
            S::Io { context, source } => Error::io(context, source),
        }
    }
}

#[derive(Clone)]
pub struct Snapshots {
    backends: Arc<BTreeMap<String, Arc<dyn Snapshotter>>>,
    store: MetadataStore,
    events: Exchange,
    /// Snapshots made on a parent, commits and removals exclude collections: a parent
    /// nothing held a moment ago is not swept under its new child.
    fence: GcFence,
}

impl Snapshots {
    pub fn new(
        backends: BTreeMap<String, Arc<dyn Snapshotter>>,
        store: MetadataStore,
        events: Exchange,
    ) -> Self {
        Snapshots {
            backends: Arc::new(backends),
            store,
            events,
            fence: GcFence::default(),
        }
    }

    /// The same snapshots, fenced by the daemon's collector (the one [`crate::core::gc::Gc`]
    /// is built with) rather than a fence of their own.
    pub fn with_gc_fence(mut self, fence: GcFence) -> Self {
        self.fence = fence;
        self
    }

    pub fn names(&self) -> Vec<String> {
        self.backends.keys().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Result<Arc<dyn Snapshotter>> {
        let name = if name.is_empty() { "overlayfs" } else { name };
        self.backends.get(name).cloned().ok_or_else(|| {
            Error::not_found(format!(
                "snapshotter {name:?} is not available here; available: {}",
                self.names().join(", ")
            ))
        })
    }

    /// Records the snapshot `key` in the context's lease, if any (blocking: a redb write).
    pub(crate) fn record_in_lease(&self, ctx: &Ctx, snapshotter: &str, key: &str) -> Result<()> {
        if let Some(lease) = &ctx.lease {
            self.store.lease_add_resource(
                &ctx.ns,
                lease,
                &LeaseResource {
                    kind: format!("snapshots/{snapshotter}"),
                    id: key.to_string(),
                },
            )?;
        }
        Ok(())
    }

    pub async fn stat(
        &self,
        ns: Namespace,
        snapshotter: &str,
        key: String,
    ) -> Result<SnapshotInfo> {
        let s = self.get(snapshotter)?;
        blocking(move || {
            let info = s.stat(&scoped(&ns, &key))?;
            unscoped(&ns, info)
                .map(SnapshotInfo)
                .ok_or_else(|| Error::not_found(format!("snapshot {key}")))
        })
        .await
    }

    async fn create(
        &self,
        ctx: Ctx,
        snapshotter: &str,
        key: String,
        parent: String,
        labels: Labels,
        kind: Kind,
    ) -> Result<Vec<Mount>> {
        let _op = self.fence.operation().await;
        validate_labels(&labels)?;
        check_new_key("snapshot key", &key)?;
        let s = self.get(snapshotter)?;
        let this = self.clone();
        let name = snapshotter.to_string();
        let (k, p) = (key.clone(), parent.clone());
        let c = ctx.clone();
        let mounts = blocking(move || {
            let parent = (!p.is_empty()).then(|| scoped(&c.ns, &p));
            let sk = scoped(&c.ns, &k);
            if let Some(lease) = &c.lease {
                if this.store.lease_get(&c.ns, lease)?.is_none() {
                    return Err(Error::not_found(format!("lease {lease:?} does not exist")));
                }
            }
            this.store.namespace_ensure(&c.ns)?;
            // Only a snapshotter that may serve layers itself reads the target.
            let target = s
                .remote_snapshots()
                .then(|| labels.get(SNAPSHOT_REF).cloned())
                .flatten();
            let labels = match target {
                Some(_) => scope_remote_target(&c.ns, labels),
                None => labels,
            };
            let made = match kind {
                Kind::View => s.view(&sk, parent.as_deref(), labels),
                _ => s.prepare(&sk, parent.as_deref(), labels),
            };
            if let (Err(berth_snapshotters::Error::AlreadyExists(_)), Some(t)) = (&made, &target) {
                // A remote snapshotter served the layer as `t`: the client's lease holds it
                // as it would have held the prepared snapshot.
                if s.stat(&scoped(&c.ns, t)).is_ok() {
                    this.record_in_lease(&c, &name, t)?;
                }
            }
            let m = made?;
            this.record_in_lease(&c, &name, &k)?;
            Ok(m)
        })
        .await?;
        if kind == Kind::Active {
            self.events
                .publish(&ctx.ns, Event::SnapshotPrepare { key, parent });
        }
        Ok(mounts)
    }

    pub async fn prepare(
        &self,
        ctx: Ctx,
        snapshotter: &str,
        key: String,
        parent: String,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        self.create(ctx, snapshotter, key, parent, labels, Kind::Active)
            .await
    }

    pub async fn view(
        &self,
        ctx: Ctx,
        snapshotter: &str,
        key: String,
        parent: String,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        self.create(ctx, snapshotter, key, parent, labels, Kind::View)
            .await
    }

    pub async fn mounts(
        &self,
        ns: Namespace,
        snapshotter: &str,
        key: String,
    ) -> Result<Vec<Mount>> {
        let s = self.get(snapshotter)?;
        blocking(move || Ok(s.mounts(&scoped(&ns, &key))?)).await
    }

    pub async fn commit(
        &self,
        ctx: Ctx,
        snapshotter: &str,
        name: String,
        key: String,
        labels: Labels,
    ) -> Result<()> {
        validate_labels(&labels)?;
        check_new_key("snapshot name", &name)?;
        check_new_key("active snapshot key", &key)?;
        let s = self.get(snapshotter)?;
        let _op = self.fence.operation().await;
        let this = self.clone();
        let sn = snapshotter.to_string();
        let (n, k, c) = (name.clone(), key.clone(), ctx.clone());
        blocking(move || {
            s.commit(&scoped(&c.ns, &n), &scoped(&c.ns, &k), labels)?;
            this.committed(&c, &sn, &k, &n)
        })
        .await
    }

    /// What follows a commit done here or by unpack: the lease records the committed
    /// snapshot, and subscribers hear of it (blocking: a redb write).
    pub(crate) fn committed(
        &self,
        ctx: &Ctx,
        snapshotter: &str,
        key: &str,
        name: &str,
    ) -> Result<()> {
        self.record_in_lease(ctx, snapshotter, name)?;
        self.events.publish(
            &ctx.ns,
            Event::SnapshotCommit {
                key: key.to_string(),
                name: name.to_string(),
            },
        );
        Ok(())
    }

    pub async fn remove(&self, ns: Namespace, snapshotter: &str, key: String) -> Result<()> {
        let s = self.get(snapshotter)?;
        let _op = self.fence.operation().await;
        let (k, n) = (key.clone(), ns.clone());
        blocking(move || Ok(s.remove(&scoped(&n, &k))?)).await?;
        self.events.publish(&ns, Event::SnapshotRemove { key });
        Ok(())
    }

    pub async fn update(
        &self,
        ns: Namespace,
        snapshotter: &str,
        mut info: Info,
        paths: Vec<String>,
    ) -> Result<SnapshotInfo> {
        validate_labels(&info.labels)?;
        let s = self.get(snapshotter)?;
        blocking(move || {
            info.name = scoped(&ns, &info.name);
            let updated = s.update(info, &paths)?;
            unscoped(&ns, updated)
                .map(SnapshotInfo)
                .ok_or_else(|| Error::not_found("snapshot"))
        })
        .await
    }

    pub async fn list(
        &self,
        ns: Namespace,
        snapshotter: &str,
        filter: Filter,
    ) -> Result<Vec<Info>> {
        let s = self.get(snapshotter)?;
        blocking(move || {
            let mut out = vec![];
            s.walk(&mut |i| {
                if let Some(i) = unscoped(&ns, i.clone()) {
                    let si = SnapshotInfo(i);
                    if filter.matches(&si) {
                        out.push(si.0);
                    }
                }
                true
            })?;
            Ok(out)
        })
        .await
    }

    pub async fn usage(&self, ns: Namespace, snapshotter: &str, key: String) -> Result<Usage> {
        let s = self.get(snapshotter)?;
        blocking(move || Ok(s.usage(&scoped(&ns, &key))?)).await
    }

    pub async fn cleanup(&self, snapshotter: &str) -> Result<()> {
        let s = self.get(snapshotter)?;
        blocking(move || Ok(s.cleanup()?)).await
    }
}

/// Where snapshotter `name` keeps its data under berthd's root (containerd's plugin layout).
pub fn snapshotter_root(root: &std::path::Path, name: &str) -> std::path::PathBuf {
    root.join(format!("io.containerd.snapshotter.v1.{name}"))
}
