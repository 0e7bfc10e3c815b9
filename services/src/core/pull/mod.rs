//! Server-side pull: resolve a reference at its registry, fetch the documents, then fetch the
//! layers concurrently, each one unpacked into its own staging directory *while it
//! downloads* (the stream is teed into the content store and the decompressor), and commit
//! the snapshots in order. Layers already present are neither fetched nor unpacked again; an
//! interrupted download resumes from the bytes already in its ingest. A snapshotter that may
//! serve layers itself (a remote, lazy-pull one) is offered them before anything is fetched,
//! and the layers it serves are not fetched at all.
//!
//! - [`resolve`]: documents, platforms, verification, storing them.
//! - [`plan`]: which layers are fetched and which are unpacked where.
//! - [`fetch`]: the concurrent downloads, teed into the store and the unpack.

mod fetch;
mod plan;
mod resolve;
pub(crate) mod space;

pub use resolve::detect_media_type;

use crate::core::content::Content;
use crate::core::context::Ctx;
use crate::core::error::{blocking, Error, Result};
use crate::core::images::{Descriptor, Images};
use crate::core::leases::Leases;
use crate::core::metadata::images::ImageRecord;
use crate::core::metadata::Labels;
use crate::core::oci::{Platform, MAX_DOCUMENT};
use crate::core::registry::{self, Access, RegistryConfig};
use crate::core::snapshots::Snapshots;
use crate::core::unpack::{Resolved, Stack, Unpacker};
use fetch::LayerFetch;
use plan::{layer_jobs, LayerPlan, UnpackPlan};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Attempts per blob before a flaky connection fails the pull.
const MAX_ATTEMPTS: u32 = 6;

/// One progress report, as containerd's Transfer service sends them.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub event: String,
    pub name: String,
    pub parents: Vec<String>,
    pub progress: i64,
    pub total: i64,
}

pub type ProgressTx = mpsc::UnboundedSender<Progress>;

pub(crate) fn report(
    tx: &Option<ProgressTx>,
    event: &str,
    name: &str,
    parents: &[String],
    p: i64,
    t: i64,
) {
    if let Some(tx) = tx {
        let _ = tx.send(Progress {
            event: event.into(),
            name: name.into(),
            parents: parents.to_vec(),
            progress: p,
            total: t,
        });
    }
}

#[derive(Clone, Default)]
pub struct PullRequest {
    pub reference: String,
    /// Name to store the image under; the normalized reference by default.
    pub name: Option<String>,
    /// Platforms whose manifests (and layers) are fetched; empty means the host's.
    pub platforms: Vec<Platform>,
    pub all_platforms: bool,
    /// Snapshotter to unpack into (the first platform's manifest); None: content only.
    pub unpack: Option<String>,
    pub labels: Labels,
    pub access: Access,
}

#[derive(Debug, Clone)]
pub struct Pulled {
    pub name: String,
    pub target: Descriptor,
    /// Top snapshot, when unpacked.
    pub chain_id: Option<String>,
    pub layers: usize,
    /// Blobs downloaded by this pull (the rest were present).
    pub fetched: usize,
    pub bytes: u64,
}

#[derive(Clone)]
pub struct Puller {
    content: Content,
    images: Images,
    leases: Leases,
    snapshots: Snapshots,
    unpacker: Unpacker,
    config: crate::core::registry::SharedConfig,
    gc: crate::core::gc::Gc,
    /// One lock per image name and per blob: concurrent pulls share the work.
    inflight: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Puller {
    pub fn new(
        content: Content,
        images: Images,
        leases: Leases,
        snapshots: Snapshots,
        unpacker: Unpacker,
        config: crate::core::registry::SharedConfig,
        gc: crate::core::gc::Gc,
    ) -> Self {
        Puller {
            content,
            images,
            leases,
            snapshots,
            unpacker,
            config,
            gc,
            inflight: Arc::default(),
        }
    }

    pub fn config(&self) -> Arc<RegistryConfig> {
        self.config.get()
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, v| Arc::strong_count(v) > 1);
        m.entry(key.to_string()).or_default().clone()
    }

    /// Runs `f` under a temporary lease (unless the caller brought one), so nothing the pull
    /// writes can be collected before the image record refers to it.
    pub async fn with_lease<T, F, Fut>(&self, ctx: Ctx, f: F) -> Result<T>
    where
        F: FnOnce(Ctx) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.leases.with_temporary(&self.gc, ctx, f).await
    }

    pub async fn pull(
        &self,
        ctx: Ctx,
        req: PullRequest,
        progress: Option<ProgressTx>,
    ) -> Result<Pulled> {
        let reference = registry::parse_reference(&req.reference)?;
        let name = req
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| registry::image_name(&reference));
        let image_lock = self.lock_for(&format!("image {} {name}", ctx.ns));
        let _held = image_lock.lock().await;
        let this = self.clone();
        let start = std::time::Instant::now();
        let pulled = self
            .with_lease(ctx, move |ctx| async move {
                this.pull_leased(ctx, req, reference, name, progress).await
            })
            .await;
        crate::core::metrics::registry().pull_done(
            pulled.as_ref().map(|p| p.bytes).unwrap_or(0),
            start.elapsed(),
            pulled.is_ok(),
        );
        crate::core::memory::release().await;
        pulled
    }

    /// A pull in steps: resolve the documents, store them, plan the layers, fetch (and
    /// unpack) them, commit the snapshots, record the image.
    async fn pull_leased(
        &self,
        ctx: Ctx,
        req: PullRequest,
        reference: oci_client::Reference,
        name: String,
        progress: Option<ProgressTx>,
    ) -> Result<Pulled> {
        report(&progress, "resolving", &name, &[], 0, 0);
        let remote = registry::connect(
            &self.config.get(),
            &reference,
            &req.access,
            oci_client::RegistryOperation::Pull,
        )
        .await?;
        let source = source_labels(&reference);
        let platforms = if req.platforms.is_empty() {
            vec![Platform::host()]
        } else {
            req.platforms.clone()
        };
        let resolution = self
            .resolve(&remote, &name, (&platforms, req.all_platforms), &source)
            .await?;
        report(&progress, "resolved", &name, &[], 0, 0);
        self.store_documents(&ctx, resolution.docs).await?;
        let first = resolution
            .manifests
            .first()
            .ok_or_else(|| Error::not_found(format!("{name} has no manifest")))?;

        let plan = {
            let (this, ctx, first) = (self.clone(), ctx.clone(), first.clone());
            let (unpack, image) = (req.unpack.clone(), name.clone());
            blocking(move || this.plan_unpack(&ctx, unpack, (&first, &image))).await?
        };
        tracing::debug!(image = %name, "pull resolved and planned");
        let jobs = layer_jobs(&resolution.manifests, |i| {
            plan.as_ref().map_or(LayerPlan::Fetch, |p| p.layer(i))
        });
        let fetch = LayerFetch {
            puller: self.clone(),
            ctx: ctx.clone(),
            remote,
            downloads: Arc::new(tokio::sync::Semaphore::new(
                self.config.get().max_concurrent_downloads.max(1),
            )),
            progress: progress.clone(),
            parents: vec![first.manifest.digest.clone()],
            source,
            budget: berth_snapshotters::layer::PullBudget::new(),
        };
        let fetched = match fetch.fetch_all(jobs, first).await {
            Ok(f) => f,
            Err(e) => {
                plan.into_iter().for_each(UnpackPlan::discard);
                return Err(e);
            }
        };

        let record = ImageRecord {
            name: name.clone(),
            labels: req.labels.clone(),
            target: resolution.target.clone(),
            created_at: 0,
            updated_at: 0,
        };
        tracing::debug!(image = %name, "pull's layers fetched and unpacked");
        let chain_id = self
            .record_image(&ctx, plan, first, record, platforms.first().cloned())
            .await?;
        tracing::debug!(image = %name, "pull's snapshots committed, image recorded");
        report(&progress, "saved", &name, &[], 0, 0);
        report(&progress, "complete", &name, &[], 0, 0);
        Ok(Pulled {
            name,
            target: resolution.target,
            chain_id,
            layers: first.layers.len(),
            fetched: fetched.blobs,
            bytes: fetched.bytes,
        })
    }

    /// Commits the staged snapshots (or, when the layers were not staged, unpacks once the
    /// image is recorded) and records the image; the top snapshot's chain ID, if unpacked.
    async fn record_image(
        &self,
        ctx: &Ctx,
        plan: Option<UnpackPlan>,
        first: &Resolved,
        record: ImageRecord,
        platform: Option<Platform>,
    ) -> Result<Option<String>> {
        let name = record.name.clone();
        let (mut chain_id, unpack_after) = match plan {
            Some(p) if p.staged.is_some() => (Some(self.commit_plan(ctx, p, first).await?), None),
            Some(p) => (None, Some(p.snapshotter)),
            None => (None, None),
        };
        self.images.put(ctx.ns.clone(), record).await?;
        if let Some(snapshotter) = unpack_after {
            let u = self
                .unpacker
                .unpack(ctx.clone(), name, snapshotter, platform)
                .await?;
            chain_id = Some(u.chain_id);
        }
        Ok(chain_id)
    }

    /// Commits the staged layers as snapshots, in order, and labels the config with the top
    /// one; returns its chain ID.
    async fn commit_plan(&self, ctx: &Ctx, plan: UnpackPlan, first: &Resolved) -> Result<String> {
        let unpacker = self.unpacker.clone();
        let ctx = ctx.clone();
        let resolved = first.clone();
        blocking(move || {
            let stack = Stack {
                ctx: &ctx,
                snapshotter: &plan.snapshotter,
                snap: plan.snap.as_ref(),
                resolved: &resolved,
                chains: &plan.chains,
                missing: &plan.missing,
                remote: None,
            };
            let staged = plan.staged.into_iter().flatten().map(Some).collect();
            unpacker.commit_staged(&stack, staged)?;
            unpacker.label_unpacked(&ctx, &plan.snapshotter, &resolved, &plan.chains)
        })
        .await
    }
}

/// The label every blob of a pull gets: the registry and repository it came from, the
/// registry named by its host alone (no port), as containerd keys it.
fn source_labels(reference: &oci_client::Reference) -> Labels {
    Labels::from([(
        format!(
            "{}{}",
            berth_proto::vocab::labels::DISTRIBUTION_SOURCE,
            host_of(reference.registry())
        ),
        reference.repository().to_string(),
    )])
}

/// A registry's host without its port (`[::1]:5000` gives `::1`).
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_label_names_the_registry_host_without_its_port() {
        let r: oci_client::Reference = "127.0.0.1:5050/team/app:1".parse().unwrap();
        let labels = source_labels(&r);
        let key = format!(
            "{}127.0.0.1",
            berth_proto::vocab::labels::DISTRIBUTION_SOURCE
        );
        assert_eq!(labels.get(&key).map(String::as_str), Some("team/app"));
        assert_eq!(host_of("[::1]:5000"), "::1");
        assert_eq!(host_of("registry.example"), "registry.example");
    }
}
