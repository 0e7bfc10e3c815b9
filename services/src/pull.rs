//! Server-side pull: resolve a reference at its registry, fetch the documents, then fetch the
//! layers concurrently, each one unpacked into its own staging directory *while it
//! downloads* (the stream is teed into the content store and the decompressor), and commit
//! the snapshots in order. Layers already present are neither fetched nor unpacked again; an
//! interrupted download resumes from the bytes already in its ingest.

use crate::content::{Content, Ctx, NamespacedWriter};
use crate::diff::apply_blob_with;
use crate::error::{blocking, Error, Kind, Result};
use crate::images::{Descriptor, Images};
use crate::leases::Leases;
use crate::metadata::images::ImageRecord;
use crate::metadata::Labels;
use crate::oci::{self, DocDescriptor, Document, Platform, MAX_DOCUMENT};
use crate::registry::{self, Access, RegistryConfig, Remote};
use crate::snapshots::scoped;
use crate::snapshots::Snapshots;
use crate::unpack::{stage_n, Resolved, Unpacker};
use berth_snapshotters::layer::{self, Whiteouts};
use berth_snapshotters::Staged;
use futures::StreamExt;
use std::collections::HashMap;
use std::io::Read;
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

fn report(tx: &Option<ProgressTx>, event: &str, name: &str, parents: &[String], p: i64, t: i64) {
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
    config: Arc<RegistryConfig>,
    gc: crate::gc::Gc,
    /// One lock per image name and per blob: concurrent pulls share the work.
    inflight: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// What happens to one layer of a pull.
struct LayerJob {
    desc: DocDescriptor,
    /// Index in the unpacked manifest and its staging directory, when it gets unpacked.
    unpack: Option<(usize, std::path::PathBuf)>,
}

impl Puller {
    pub fn new(
        content: Content,
        images: Images,
        leases: Leases,
        snapshots: Snapshots,
        unpacker: Unpacker,
        config: RegistryConfig,
        gc: crate::gc::Gc,
    ) -> Self {
        Puller {
            content,
            images,
            leases,
            snapshots,
            unpacker,
            config: Arc::new(config),
            gc,
            inflight: Arc::default(),
        }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
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
        // No collection runs meanwhile: what the operation found present stays.
        let _op = self.gc.operation().await;
        if ctx.lease.is_some() {
            return f(ctx).await;
        }
        let id = format!("berth-transfer-{}", uuid::Uuid::new_v4().simple());
        let expire = berth_proto::vocab::time::rfc3339(
            std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
        );
        self.leases
            .create(
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
        if let Err(e) = self.leases.delete(ctx.ns.clone(), id.clone()).await {
            tracing::warn!(lease = id, error = %e, "cannot remove the pull's lease");
        }
        out
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
        self.with_lease(ctx, move |ctx| async move {
            this.pull_leased(ctx, req, reference, name, progress).await
        })
        .await
    }

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
            &self.config,
            &reference,
            &req.access,
            oci_client::RegistryOperation::Pull,
        )
        .await?;
        let (top_bytes, top_digest) = remote.fetch_document(None).await?;
        let target = Descriptor {
            media_type: detect_media_type(&top_bytes),
            digest: top_digest.clone(),
            size: top_bytes.len() as i64,
            annotations: Labels::new(),
        };
        report(&progress, "resolved", &name, &[], 0, 0);
        let source = Labels::from([(
            format!(
                "{}{}",
                berth_proto::vocab::labels::DISTRIBUTION_SOURCE,
                reference.registry()
            ),
            reference.repository().to_string(),
        )]);
        let platforms = if req.platforms.is_empty() {
            vec![Platform::host()]
        } else {
            req.platforms.clone()
        };

        // Documents: the index (if any) and the chosen manifests with their configs.
        let mut manifests: Vec<Resolved> = vec![];
        let mut docs: Vec<(Descriptor, Vec<u8>, Labels)> = vec![];
        let mut queue = vec![(target.clone(), top_bytes, 0usize)];
        while let Some((desc, bytes, depth)) = queue.pop() {
            if depth > 3 {
                return Err(Error::invalid("image indexes nest too deeply"));
            }
            match oci::parse_document(&desc, &bytes)? {
                Document::Index(entries) => {
                    let chosen: Vec<&DocDescriptor> = if req.all_platforms {
                        entries
                            .iter()
                            .filter(|e| {
                                oci::is_manifest(&e.media_type) || oci::is_index(&e.media_type)
                            })
                            .collect()
                    } else {
                        let mut c: Vec<&DocDescriptor> = vec![];
                        for p in &platforms {
                            let hit = entries
                                .iter()
                                .find(|m| m.platform.as_ref().is_some_and(|mp| p.matches(mp)))
                                .or_else(|| entries.iter().find(|m| m.platform.is_none()));
                            if let Some(h) = hit {
                                if !c.iter().any(|x| x.digest == h.digest) {
                                    c.push(h);
                                }
                            }
                        }
                        c
                    };
                    if chosen.is_empty() {
                        return Err(Error::not_found(format!(
                            "{name} has no manifest for platform {}",
                            platforms
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                    let mut labels = source.clone();
                    for (i, c) in chosen.iter().enumerate() {
                        labels.insert(
                            berth_proto::vocab::labels::gc_ref_manifest(i),
                            c.digest.clone(),
                        );
                    }
                    docs.push((desc.clone(), bytes, labels));
                    // Children are fetched in order; the first chosen is unpacked.
                    for c in chosen.iter().rev() {
                        if c.size > MAX_DOCUMENT {
                            return Err(Error::invalid(format!(
                                "manifest {} is {} bytes; documents larger than {MAX_DOCUMENT} bytes are refused",
                                c.digest, c.size
                            )));
                        }
                        let (b, _) = remote.fetch_document(Some(&c.digest)).await?;
                        if b.len() as i64 != c.size {
                            return Err(Error::precondition(format!(
                                "manifest {} is {} bytes, its descriptor says {}",
                                c.digest,
                                b.len(),
                                c.size
                            )));
                        }
                        queue.push((c.descriptor(), b, depth + 1));
                    }
                }
                Document::Manifest { config, layers } => {
                    let cbytes = self.fetch_small(&remote, &config).await?;
                    let resolved = Resolved::new(&desc, config.clone(), layers.clone(), &cbytes)?;
                    let mut labels = source.clone();
                    labels.insert(
                        berth_proto::vocab::labels::gc_ref_config(),
                        config.digest.clone(),
                    );
                    for (i, l) in layers.iter().enumerate() {
                        labels.insert(
                            berth_proto::vocab::labels::gc_ref_layer(i),
                            l.digest.clone(),
                        );
                    }
                    docs.push((desc.clone(), bytes, labels));
                    docs.push((config.descriptor(), cbytes, source.clone()));
                    manifests.push(resolved);
                }
            }
        }
        {
            let content = self.content.clone();
            let ctx2 = ctx.clone();
            blocking(move || {
                for (d, b, l) in docs {
                    store_document(&content, &ctx2, &d, &b, l)?;
                }
                Ok(())
            })
            .await?;
        }

        // Layers: which to fetch, which to unpack and where.
        let snap_name = req.unpack.clone().map(|s| {
            if s.is_empty() {
                "overlayfs".to_string()
            } else {
                s
            }
        });
        let snap = match &snap_name {
            Some(n) => Some(self.snapshots.get(n)?),
            None => None,
        };
        let first = manifests
            .first()
            .ok_or_else(|| Error::not_found(format!("{name} has no manifest")))?;
        let chains = oci::chain_ids(&first.diff_ids);
        let mut missing: Vec<usize> = vec![];
        let mut staged: Vec<Option<Staged>> = vec![];
        let mut sequential_unpack = false;
        if let Some(snap) = &snap {
            let present = chains
                .iter()
                .take_while(|c| snap.stat(&scoped(&ctx.ns, c)).is_ok())
                .count();
            missing = (present..chains.len()).collect();
            match stage_n(snap.as_ref(), missing.len())? {
                Some(dirs) => staged = dirs.into_iter().map(Some).collect(),
                None => sequential_unpack = true,
            }
        }
        let mut jobs: Vec<LayerJob> = vec![];
        let mut seen = std::collections::HashSet::new();
        for (mi, m) in manifests.iter().enumerate() {
            for (i, l) in m.layers.iter().enumerate() {
                let unpack = if mi == 0 && !sequential_unpack {
                    missing
                        .iter()
                        .position(|&x| x == i)
                        .and_then(|j| staged[j].as_ref().map(|s| (i, s.fs())))
                } else {
                    None
                };
                if unpack.is_some() || seen.insert(l.digest.clone()) {
                    jobs.push(LayerJob {
                        desc: l.clone(),
                        unpack,
                    });
                }
            }
        }

        // Largest first: the biggest layer is the longest pipeline.
        jobs.sort_by_key(|j| std::cmp::Reverse(j.desc.size));
        let downloads = Arc::new(tokio::sync::Semaphore::new(
            self.config.max_concurrent_downloads.max(1),
        ));
        let parents = vec![first.manifest.digest.clone()];
        let mut set = tokio::task::JoinSet::new();
        for job in jobs {
            let this = self.clone();
            let ctx = ctx.clone();
            let remote = remote.clone();
            let downloads = downloads.clone();
            let progress = progress.clone();
            let parents = parents.clone();
            let source = source.clone();
            set.spawn(async move {
                let r = this
                    .layer(&ctx, &remote, &job, downloads, &progress, &parents, source)
                    .await;
                (job.unpack.map(|(i, _)| i), r)
            });
        }
        let mut fetched = 0usize;
        let mut bytes = 0u64;
        let mut failure: Option<Error> = None;
        while let Some(joined) = set.join_next().await {
            let (index, r) = match joined {
                Ok(v) => v,
                Err(e) => {
                    failure.get_or_insert(Error::new(
                        Kind::Internal,
                        format!("layer task failed: {e}"),
                    ));
                    continue;
                }
            };
            match r {
                Ok(outcome) => {
                    if outcome.fetched > 0 {
                        fetched += 1;
                        bytes += outcome.fetched;
                    }
                    if let (Some(i), Some(diff_id)) = (index, outcome.diff_id) {
                        if diff_id != first.diff_ids[i] {
                            failure.get_or_insert(Error::precondition(format!(
                                "layer {} unpacks to {diff_id}, but the image config says {}; the image is inconsistent",
                                first.layers[i].digest, first.diff_ids[i]
                            )));
                        }
                    }
                }
                Err(e) => {
                    if failure.is_none() {
                        set.abort_all();
                    }
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            staged.into_iter().flatten().for_each(Staged::discard);
            return Err(e);
        }

        // Snapshots, in order; labels that tie them to the image.
        let mut chain_id = None;
        if let (Some(snap), Some(sname)) = (snap.clone(), snap_name.clone()) {
            if !sequential_unpack {
                let unpacker = self.unpacker.clone();
                let ctx2 = ctx.clone();
                let resolved = first.clone();
                let chains2 = chains.clone();
                let missing2 = missing.clone();
                let top = blocking(move || {
                    unpacker.commit_staged(
                        &ctx2,
                        &sname,
                        snap.as_ref(),
                        staged,
                        &chains2,
                        &missing2,
                    )?;
                    unpacker.label_unpacked(&ctx2, &sname, &resolved, &chains2)
                })
                .await?;
                chain_id = Some(top);
            }
        }

        // The image record: created, or moved to the new target.
        let record = ImageRecord {
            name: name.clone(),
            labels: req.labels.clone(),
            target: target.clone(),
            created_at: 0,
            updated_at: 0,
        };
        self.images.put(ctx.ns.clone(), record).await?;
        if sequential_unpack {
            let u = self
                .unpacker
                .unpack(
                    ctx.clone(),
                    name.clone(),
                    snap_name.clone().unwrap_or_default(),
                    platforms.first().cloned(),
                )
                .await?;
            chain_id = Some(u.chain_id);
        }
        report(&progress, "saved", &name, &[], 0, 0);
        report(&progress, "complete", &name, &[], 0, 0);
        Ok(Pulled {
            name,
            target,
            chain_id,
            layers: first.layers.len(),
            fetched,
            bytes,
        })
    }

    /// Reads a config blob whole, capped and verified.
    async fn fetch_small(&self, remote: &Remote, desc: &DocDescriptor) -> Result<Vec<u8>> {
        if desc.size > MAX_DOCUMENT {
            return Err(Error::invalid(format!(
                "{} is {} bytes; documents larger than {MAX_DOCUMENT} bytes are refused",
                desc.digest, desc.size
            )));
        }
        let (mut stream, _) = remote.open_blob(&desc.digest, desc.size, 0).await?;
        let mut out = Vec::with_capacity(desc.size as usize);
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
            if out.len() as i64 > desc.size {
                return Err(Error::precondition(format!(
                    "{} is larger than its descriptor's {} bytes",
                    desc.digest, desc.size
                )));
            }
        }
        let got = crate::content::digest::Digest::of(&out).to_string();
        if got != desc.digest || out.len() as i64 != desc.size {
            return Err(Error::precondition(format!(
                "{} was served as {got} ({} bytes); the registry sent different content",
                desc.digest,
                out.len()
            )));
        }
        Ok(out)
    }

    /// One layer: fetched (teed into the unpack when it has a staging directory), or
    /// unpacked from the content store when only the snapshot is missing.
    #[allow(clippy::too_many_arguments)]
    async fn layer(
        &self,
        ctx: &Ctx,
        remote: &Remote,
        job: &LayerJob,
        downloads: Arc<tokio::sync::Semaphore>,
        progress: &Option<ProgressTx>,
        parents: &[String],
        source: Labels,
    ) -> Result<LayerOutcome> {
        let digest = job.desc.digest.clone();
        let size = job.desc.size;
        let blob_lock = self.lock_for(&format!("blob {digest}"));
        let _held = blob_lock.lock().await;
        let ref_name = format!("layer-{digest}");
        let mut repaired = false;
        let writer = loop {
            match self
                .content
                .writer(ctx.clone(), ref_name.clone(), size, digest.clone())
                .await
            {
                Ok(w) => break w,
                Err(e) if e.kind() == Kind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            // Present already: only its snapshot may be missing.
            let diff_id = match &job.unpack {
                Some((_, dir)) => {
                    let content = self.content.clone();
                    let ns = ctx.ns.clone();
                    let desc = job.desc.descriptor();
                    let staged = dir.clone();
                    let applied = blocking(move || {
                        apply_blob_with(&content, &ns, &desc, |rd| {
                            layer::apply(rd, &staged, Whiteouts::Overlay)
                        })
                    })
                    .await;
                    match applied {
                        Ok(d) => Some(d.digest),
                        // Damaged at rest: dropped and fetched again (a re-pull repairs it).
                        Err(e)
                            if !repaired
                                && e.to_string().contains("corrupted in the content store") =>
                        {
                            tracing::warn!(blob = %digest, "stored blob is corrupted; fetching it again");
                            self.refetch(ctx, &digest, dir).await?;
                            repaired = true;
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                None => None,
            };
            report(progress, "already exists", &digest, parents, size, size);
            return Ok(LayerOutcome {
                fetched: 0,
                diff_id,
            });
        };
        let _permit = downloads
            .acquire_owned()
            .await
            .map_err(|_| Error::new(Kind::Internal, "download limiter closed"))?;
        let resumed = writer.inner.offset() as u64;
        if resumed > 0 {
            tracing::info!(blob = %digest, offset = resumed, "resuming download from byte {resumed}");
        }
        report(
            progress,
            "downloading",
            &digest,
            parents,
            resumed as i64,
            size,
        );

        let (tx, rx) = mpsc::channel::<std::result::Result<bytes::Bytes, String>>(32);
        let content = self.content.clone();
        let unpack_dir = job.unpack.as_ref().map(|(_, d)| d.clone());
        let digest2 = digest.clone();
        let sink = tokio::task::spawn_blocking(move || {
            consume(content, writer, rx, unpack_dir, &digest2, size, source)
        });

        let mut sent = resumed;
        let mut attempts = 0u32;
        let mut last_report = std::time::Instant::now();
        'fetch: while sent < size as u64 || (size == 0 && attempts == 0) {
            attempts += 1;
            let opened = remote.open_blob(&digest, size, sent).await;
            let (mut stream, ranged) = match opened {
                Ok(s) => s,
                Err(e) if e.kind() == Kind::Unavailable && attempts < MAX_ATTEMPTS => {
                    backoff(attempts).await;
                    continue;
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string())).await;
                    break;
                }
            };
            let mut skip = if ranged { 0 } else { sent };
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(mut b) => {
                        if skip > 0 {
                            let k = skip.min(b.len() as u64);
                            b = b.slice(k as usize..);
                            skip -= k;
                        }
                        if b.is_empty() {
                            continue;
                        }
                        sent += b.len() as u64;
                        if sent > size as u64 {
                            let _ = tx
                                .send(Err(format!(
                                    "blob {digest} is larger than the {size} bytes its descriptor says"
                                )))
                                .await;
                            break 'fetch;
                        }
                        if tx.send(Ok(b)).await.is_err() {
                            break 'fetch; // the unpack failed; its error is reported below
                        }
                        if last_report.elapsed() >= std::time::Duration::from_millis(100) {
                            last_report = std::time::Instant::now();
                            report(progress, "downloading", &digest, parents, sent as i64, size);
                        }
                    }
                    Err(e) if attempts < MAX_ATTEMPTS => {
                        tracing::info!(blob = %digest, at = sent, error = %e, "download interrupted; resuming");
                        backoff(attempts).await;
                        continue 'fetch;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string())).await;
                        break 'fetch;
                    }
                }
            }
            if sent < size as u64 {
                if attempts < MAX_ATTEMPTS {
                    tracing::info!(blob = %digest, at = sent, "connection closed early; resuming");
                    backoff(attempts).await;
                    continue;
                }
                let _ = tx
                    .send(Err(format!("blob {digest}: the registry closed the connection at byte {sent} of {size}")))
                    .await;
            }
            break;
        }
        drop(tx);
        let diff_id = sink
            .await
            .map_err(|e| Error::new(Kind::Internal, format!("unpack task failed: {e}")))??;
        report(progress, "complete", &digest, parents, size, size);
        Ok(LayerOutcome {
            fetched: (sent - resumed).max(1),
            diff_id,
        })
    }
}

impl Puller {
    /// Clears a corrupted blob and the staging directory its failed unpack wrote into.
    async fn refetch(&self, ctx: &Ctx, digest: &str, dir: &std::path::Path) -> Result<()> {
        let (content, ns, d, dir) = (
            self.content.clone(),
            ctx.ns.clone(),
            digest.to_string(),
            dir.to_path_buf(),
        );
        blocking(move || {
            content.discard_corrupt_sync(&ns, &d)?;
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("recreate a staging directory", e))
        })
        .await
    }
}

struct LayerOutcome {
    /// Bytes downloaded (0: the blob was present).
    fetched: u64,
    diff_id: Option<String>,
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt.min(5))).await;
}

/// The blocking end of a download: every chunk goes into the ingest (hashed as it is
/// written) and, when there is an `unpack_dir`, on to a second thread that decompresses and
/// applies it, so writing and unpacking overlap. The blob commits only if its digest and
/// size match; a mismatch drops the ingest, so nothing is stored under that digest.
fn consume(
    content: Content,
    mut writer: NamespacedWriter,
    mut rx: mpsc::Receiver<std::result::Result<bytes::Bytes, String>>,
    unpack_dir: Option<std::path::PathBuf>,
    digest: &str,
    size: i64,
    labels: Labels,
) -> Result<Option<String>> {
    let reference = writer.reference().to_string();
    let ns = writer.ctx().ns.clone();
    let (atx, arx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(64);
    let applier = match unpack_dir {
        Some(dir) => {
            let prefix = writer.inner.received()?;
            Some(std::thread::spawn(move || {
                let mut rd = ChannelReader {
                    prefix: Some(prefix),
                    rx: arx,
                    chunk: bytes::Bytes::new(),
                };
                layer::apply(&mut rd, &dir, Whiteouts::Overlay).map(|a| a.diff_id)
            }))
        }
        None => None,
    };
    let mut to_apply = applier.is_some().then_some(atx);
    let mut transport = None;
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Ok(b) => {
                let at = writer.inner.offset();
                if let Err(e) = writer.inner.write_at(at, &b) {
                    transport = Some(e);
                    break;
                }
                // An unpack that failed stops listening; the download still completes so
                // a blob that is not what its digest says is reported as exactly that.
                if to_apply.as_ref().is_some_and(|t| t.send(b).is_err()) {
                    to_apply = None;
                }
            }
            Err(m) => {
                transport = Some(Error::new(Kind::Unavailable, m));
                break;
            }
        }
    }
    drop(rx);
    drop(to_apply);
    let applied = applier.map(|h| {
        h.join()
            .map_err(|_| Error::new(Kind::Internal, format!("unpack of {digest} panicked")))
            .and_then(|r| r.map_err(Error::from))
    });
    let complete = writer.inner.offset() == size;
    let got = writer.inner.digest_so_far().to_string();
    if writer.inner.offset() > size || (complete && got != digest) {
        let offset = writer.inner.offset();
        drop(writer);
        let _ = content.abort_sync(&ns, &reference);
        return Err(Error::precondition(format!(
            "blob {digest} was served as {got} ({offset} bytes); the registry sent different content, nothing was stored"
        )));
    }
    // Otherwise the bytes received so far stay in the ingest for a resume.
    if let Some(e) = transport {
        return Err(e);
    }
    if !complete {
        return Err(Error::new(
            Kind::Unavailable,
            format!(
                "blob {digest}: download ended at byte {} of {size}",
                writer.inner.offset()
            ),
        ));
    }
    let diff_id = match applied {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => return Err(Error::new(e.kind(), format!("layer {digest}: {e}"))),
        None => None,
    };
    content.commit_sync(writer, size, digest, labels)?;
    Ok(diff_id)
}

/// Replays the bytes an ingest already holds, then reads the chunks that arrive.
struct ChannelReader {
    prefix: Option<std::io::Take<std::fs::File>>,
    rx: std::sync::mpsc::Receiver<bytes::Bytes>,
    chunk: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(p) = &mut self.prefix {
            let n = p.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            self.prefix = None;
        }
        while self.chunk.is_empty() {
            match self.rx.recv() {
                Ok(b) => self.chunk = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// Stores a verified document (unless present) and adds its labels.
fn store_document(
    content: &Content,
    ctx: &Ctx,
    desc: &Descriptor,
    bytes: &[u8],
    labels: Labels,
) -> Result<()> {
    if content.has_blob_sync(&ctx.ns, &desc.digest)? {
        content.label_sync(&ctx.ns, &desc.digest, labels)?;
        return Ok(());
    }
    content.ingest_sync(ctx, &format!("doc-{}", desc.digest), labels, |w| {
        w.write_all(bytes)
            .map_err(|e| Error::io(format!("write {}", desc.digest), e))
    })?;
    Ok(())
}

/// A document's media type from its own `mediaType`, or its shape.
pub fn detect_media_type(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Probe {
            manifests: Some(_), ..
        }) => oci::OCI_INDEX.to_string(),
        _ => oci::OCI_MANIFEST.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_detected() {
        assert_eq!(detect_media_type(br#"{"manifests":[]}"#), oci::OCI_INDEX);
        assert_eq!(detect_media_type(br#"{"config":{}}"#), oci::OCI_MANIFEST);
        assert_eq!(
            detect_media_type(
                br#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#
            ),
            oci::DOCKER_MANIFEST
        );
    }
}
