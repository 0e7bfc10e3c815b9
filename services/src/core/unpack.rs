//! Unpack: an image's layers into a chain of committed snapshots named by chain ID, as
//! containerd's clients expect to find them. With a snapshotter whose layers are independent
//! (overlayfs) every missing layer is extracted at once, in parallel, then stacked in order.
//! A snapshotter that may serve layers itself (a proxy plugin) is asked first ([`remote`]).

mod remote;

pub(crate) use remote::Remote;

use crate::core::content::Content;
use crate::core::context::Ctx;
use crate::core::context::Namespace;
use crate::core::diff::{apply_blob, apply_blob_with, UNCOMPRESSED_LABEL};
use crate::core::error::{blocking, Error, Kind, Result};
use crate::core::metadata::{Labels, MetadataStore};
use crate::core::oci::{self, DocDescriptor, Document, Platform, MAX_DOCUMENT};
use crate::core::snapshots::{scoped, Snapshots};
use berth_snapshotters::layer::{self, Whiteouts};
use berth_snapshotters::{Snapshotter, Staged};
use remote::Prepared;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq)]
pub struct Unpacked {
    pub chain_id: String,
    pub layers: usize,
    /// Layers extracted by this call (the rest were already there).
    pub extracted: usize,
    /// Their compressed bytes.
    pub extracted_bytes: u64,
    /// The image config document of the platform unpacked.
    pub config: Vec<u8>,
}

/// An image resolved to one platform's manifest.
#[derive(Clone)]
pub struct Resolved {
    pub manifest: DocDescriptor,
    pub config: DocDescriptor,
    pub layers: Vec<DocDescriptor>,
    pub diff_ids: Vec<String>,
    /// The config document as stored.
    pub config_bytes: Vec<u8>,
}

impl Resolved {
    /// The manifest `desc` with its config (`config_bytes`) parsed and checked: one diffID
    /// per layer.
    pub fn new(
        desc: &crate::core::images::Descriptor,
        config: DocDescriptor,
        layers: Vec<DocDescriptor>,
        config_bytes: Vec<u8>,
    ) -> Result<Self> {
        let cfg = oci::parse_config(&config, &config_bytes)?;
        if cfg.rootfs.diff_ids.len() != layers.len() {
            return Err(Error::invalid(format!(
                "config {} lists {} diff_ids for {} layers",
                config.digest,
                cfg.rootfs.diff_ids.len(),
                layers.len()
            )));
        }
        Ok(Resolved {
            manifest: DocDescriptor {
                media_type: desc.media_type.clone(),
                digest: desc.digest.clone(),
                size: desc.size,
                annotations: desc.annotations.clone(),
                platform: None,
            },
            config,
            layers,
            diff_ids: cfg.rootfs.diff_ids,
            config_bytes,
        })
    }
}

/// An image's layers on their way into one snapshotter: what the sequential, parallel and
/// staged (pull) unpacks share.
#[derive(Clone, Copy)]
pub(crate) struct Stack<'a> {
    pub ctx: &'a Ctx,
    pub snapshotter: &'a str,
    pub snap: &'a dyn Snapshotter,
    pub resolved: &'a Resolved,
    /// The chain ID of every layer.
    pub chains: &'a [String],
    /// The layers whose snapshots are missing, bottom-up.
    pub missing: &'a [usize],
    /// Set when the snapshotter may serve layers itself.
    pub remote: Option<Remote<'a>>,
}

/// A fresh key for layer `i`'s extraction snapshot.
pub(crate) fn extract_key(stack: &Stack<'_>, i: usize) -> String {
    scoped(
        &stack.ctx.ns,
        &format!(
            "extract-{} {}",
            uuid::Uuid::new_v4().simple(),
            stack.chains[i]
        ),
    )
}

#[derive(Clone)]
pub struct Unpacker {
    content: Content,
    snapshots: Snapshots,
    store: MetadataStore,
    gc: crate::core::gc::Gc,
}

/// Resolves `target` (index or manifest) to the manifest for `platform`.
pub fn resolve(
    content: &Content,
    ns: &Namespace,
    target: &crate::core::images::Descriptor,
    platform: &Platform,
) -> Result<Resolved> {
    let mut desc = target.clone();
    for _ in 0..4 {
        let bytes = content.read_document_sync(ns, &desc.digest, desc.size, MAX_DOCUMENT)?;
        match oci::parse_document(&desc, &bytes)? {
            Document::Index(manifests) => {
                let chosen = manifests
                    .iter()
                    .find(|m| m.platform.as_ref().is_some_and(|p| platform.matches(p)))
                    .or_else(|| manifests.iter().find(|m| m.platform.is_none()))
                    .ok_or_else(|| {
                        Error::not_found(format!("image has no manifest for platform {platform}"))
                    })?;
                desc = chosen.descriptor();
            }
            Document::Manifest { config, layers } => {
                let cbytes =
                    content.read_document_sync(ns, &config.digest, config.size, MAX_DOCUMENT)?;
                return Resolved::new(&desc, config, layers, cbytes);
            }
        }
    }
    Err(Error::invalid("image indexes nest too deeply"))
}

/// `n` staging directories, or None when the snapshotter does not stage layers; on an
/// error the ones already made are discarded.
pub(crate) fn stage_n(snap: &dyn Snapshotter, n: usize) -> Result<Option<Vec<Staged>>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        match snap.stage() {
            Some(Ok(s)) => out.push(s),
            Some(Err(e)) => {
                out.into_iter().for_each(Staged::discard);
                return Err(e.into());
            }
            None => {
                out.into_iter().for_each(Staged::discard);
                return Ok(None);
            }
        }
    }
    Ok(Some(out))
}

impl Unpacker {
    pub fn new(
        content: Content,
        snapshots: Snapshots,
        store: MetadataStore,
        gc: crate::core::gc::Gc,
    ) -> Self {
        Unpacker {
            content,
            snapshots,
            store,
            gc,
        }
    }

    /// The name `image` is stored under: as given, or else docker's whole form of it
    /// (`busybox` is docker.io/library/busybox:latest, as `berth images pull busybox`
    /// stores it) when an image has that one. Unchanged when neither is stored.
    pub fn stored_name(&self, ns: &Namespace, image: &str) -> String {
        if self.store.image_get(ns, image).is_ok() {
            return image.to_string();
        }
        match crate::core::registry::parse_reference(image)
            .map(|r| crate::core::registry::image_name(&r))
        {
            Ok(full) if self.store.image_get(ns, &full).is_ok() => full,
            _ => image.to_string(),
        }
    }

    /// Unpacks the image named `image`.
    pub async fn unpack(
        &self,
        ctx: Ctx,
        image: String,
        snapshotter: String,
        platform: Option<Platform>,
    ) -> Result<Unpacked> {
        let record = {
            let (store, ns) = (self.store.clone(), ctx.ns.clone());
            let image = image.clone();
            blocking(move || store.image_get(&ns, &image)).await?
        };
        self.unpack_named(ctx, record.target, Some(image), snapshotter, platform)
            .await
    }

    /// Unpacks the image whose root document is `target` (an import's, before it is named).
    pub async fn unpack_target(
        &self,
        ctx: Ctx,
        target: crate::core::images::Descriptor,
        snapshotter: String,
        platform: Option<Platform>,
    ) -> Result<Unpacked> {
        self.unpack_named(ctx, target, None, snapshotter, platform)
            .await
    }

    /// Unpacks `target`, stored as `image` when it has a name (a remote snapshotter fetches
    /// the layers it serves by it).
    async fn unpack_named(
        &self,
        ctx: Ctx,
        target: crate::core::images::Descriptor,
        image: Option<String>,
        snapshotter: String,
        platform: Option<Platform>,
    ) -> Result<Unpacked> {
        // Layers committed one after another are unreferenced until the top one exists:
        // no collection runs meanwhile.
        let _op = self.gc.operation().await;
        let this = self.clone();
        let start = std::time::Instant::now();
        let unpacked = blocking(move || {
            this.unpack_sync(
                &ctx,
                (&target, image.as_deref()),
                &snapshotter,
                &platform.unwrap_or_else(Platform::host),
            )
        })
        .await;
        if let Ok(u) = &unpacked {
            crate::core::metrics::registry().unpack_done(
                u.extracted,
                u.extracted_bytes,
                start.elapsed(),
            );
        }
        crate::core::memory::release().await;
        unpacked
    }

    fn unpack_sync(
        &self,
        ctx: &Ctx,
        (target, image): (&crate::core::images::Descriptor, Option<&str>),
        snapshotter: &str,
        platform: &Platform,
    ) -> Result<Unpacked> {
        let resolved = resolve(&self.content, &ctx.ns, target, platform)?;
        let name = if snapshotter.is_empty() {
            "overlayfs"
        } else {
            snapshotter
        };
        let snap = self.snapshots.get(name)?;
        let chains = oci::chain_ids(&resolved.diff_ids);
        let present = chains
            .iter()
            .take_while(|c| snap.stat(&scoped(&ctx.ns, c)).is_ok())
            .count();
        let missing: Vec<usize> = (present..chains.len()).collect();
        let stack = Stack {
            ctx,
            snapshotter: name,
            snap: snap.as_ref(),
            resolved: &resolved,
            chains: &chains,
            missing: &missing,
            remote: snap.remote_snapshots().then_some(Remote { image }),
        };
        let extracted = if missing.is_empty() {
            vec![]
        } else if stack.remote.is_some() {
            self.sequential(&stack)?
        } else {
            match snap.stage() {
                Some(Ok(first)) if missing.len() > 1 => {
                    self.parallel(&stack, first)?;
                    missing.clone()
                }
                Some(staged) => {
                    if let Ok(s) = staged {
                        s.discard();
                    }
                    self.sequential(&stack)?
                }
                None => self.sequential(&stack)?,
            }
        };
        let top = self.label_unpacked(ctx, name, &resolved, &chains)?;
        let extracted_bytes = extracted
            .iter()
            .map(|&i| resolved.layers[i].size.max(0) as u64)
            .sum();
        Ok(Unpacked {
            chain_id: top,
            layers: chains.len(),
            extracted: extracted.len(),
            extracted_bytes,
            config: resolved.config_bytes,
        })
    }

    /// Labels the layers with their diffIDs and the config with the top snapshot (so the
    /// snapshots are kept with the image); returns the top chain ID. A layer a client
    /// discarded once it was unpacked (containerd's discard of unpacked layers) is gone from
    /// the store: its snapshot is all the image needs.
    pub(crate) fn label_unpacked(
        &self,
        ctx: &Ctx,
        name: &str,
        resolved: &Resolved,
        chains: &[String],
    ) -> Result<String> {
        for (l, d) in resolved.layers.iter().zip(&resolved.diff_ids) {
            let labelled = self.content.label_sync(
                &ctx.ns,
                &l.digest,
                Labels::from([(UNCOMPRESSED_LABEL.to_string(), d.clone())]),
            );
            match labelled {
                Err(e) if e.kind() == Kind::NotFound => {}
                other => {
                    other?;
                }
            }
        }
        let top = chains.last().cloned().unwrap_or_default();
        if !top.is_empty() {
            self.content.label_sync(
                &ctx.ns,
                &resolved.config.digest,
                Labels::from([(
                    berth_proto::vocab::labels::gc_ref_snapshot(name),
                    top.clone(),
                )]),
            )?;
        }
        Ok(top)
    }

    fn check_diff_id(
        &self,
        ns: &Namespace,
        i: usize,
        resolved: &Resolved,
        got: &str,
    ) -> Result<()> {
        if got != resolved.diff_ids[i] {
            // A blob damaged at rest says so; otherwise the image itself is inconsistent.
            self.content
                .verify_blob_sync(ns, &resolved.layers[i].digest)?;
            return Err(Error::precondition(format!(
                "layer {} unpacks to {got}, but the image config says {}; the image is inconsistent",
                resolved.layers[i].digest, resolved.diff_ids[i]
            )));
        }
        Ok(())
    }

    /// One layer at a time: prepare on the parent, apply, commit; the layers applied (a
    /// remote snapshotter serves the others).
    fn sequential(&self, stack: &Stack<'_>) -> Result<Vec<usize>> {
        let Stack {
            ctx,
            snapshotter: name,
            snap,
            resolved,
            chains,
            missing,
            ..
        } = *stack;
        let mut applied = Vec::with_capacity(missing.len());
        for &i in missing {
            let key = extract_key(stack, i);
            let mounts = match self.prepare_layer(stack, i, &key)? {
                Prepared::Mounts(m) => m,
                Prepared::Served => continue,
            };
            let desc = resolved.layers[i].descriptor();
            let result = apply_blob(&self.content, &ctx.ns, &desc, &mounts)
                .map_err(|e| e.context(format_args!("unpack layer {}", desc.digest)))
                .and_then(|applied| self.check_diff_id(&ctx.ns, i, resolved, &applied.digest))
                .and_then(|()| {
                    match snap.commit(&scoped(&ctx.ns, &chains[i]), &key, Labels::new()) {
                        Err(berth_snapshotters::Error::AlreadyExists(_)) => Ok(()),
                        other => other.map_err(Error::from),
                    }
                });
            if let Err(e) = result {
                let _ = snap.remove(&key);
                return Err(e);
            }
            if snap.stat(&key).is_ok() {
                let _ = snap.remove(&key);
            }
            self.snapshots
                .committed(ctx, name, &chains[i], &chains[i])?;
            applied.push(i);
        }
        Ok(applied)
    }

    /// Every missing layer extracted at once into its own staging directory, then
    /// committed bottom-up. A failure discards every staged layer.
    fn parallel(&self, stack: &Stack<'_>, first: Staged) -> Result<()> {
        let Stack {
            ctx,
            snap,
            resolved,
            missing,
            ..
        } = *stack;
        let rest = match stage_n(snap, missing.len() - 1) {
            Ok(Some(rest)) => rest,
            Ok(None) => {
                first.discard();
                return Err(Error::new(
                    Kind::Internal,
                    "snapshotter stopped staging layers",
                ));
            }
            Err(e) => {
                first.discard();
                return Err(e);
            }
        };
        let staged: Vec<Option<Staged>> = std::iter::once(first).chain(rest).map(Some).collect();
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 8)
            .min(missing.len());
        let next = AtomicUsize::new(0);
        let errors: Mutex<Vec<Error>> = Mutex::new(vec![]);
        let dirs: Vec<std::path::PathBuf> = staged.iter().flatten().map(Staged::fs).collect();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = missing.get(j) else { break };
                    let dir = &dirs[j];
                    let desc = resolved.layers[i].descriptor();
                    let r = apply_blob_with(&self.content, &ctx.ns, &desc, |rd| {
                        layer::apply(rd, dir, Whiteouts::Overlay)
                    })
                    .map_err(|e| {
                        e.context(format_args!(
                            "unpack layer {} into {}",
                            desc.digest,
                            dir.display()
                        ))
                    })
                    .and_then(|applied| self.check_diff_id(&ctx.ns, i, resolved, &applied.digest));
                    if let Err(e) = r {
                        if let Ok(mut v) = errors.lock() {
                            v.push(e);
                        }
                        break;
                    }
                });
            }
        });
        let mut errs = errors.into_inner().unwrap_or_default();
        if let Some(e) = errs.pop() {
            staged.into_iter().flatten().for_each(Staged::discard);
            return Err(e);
        }
        self.commit_staged(stack, staged)
    }

    /// Commits staged layers bottom-up (`staged[j]` holds layer `missing[j]`); a failure
    /// discards the rest.
    pub(crate) fn commit_staged(
        &self,
        stack: &Stack<'_>,
        mut staged: Vec<Option<Staged>>,
    ) -> Result<()> {
        let Stack {
            ctx,
            snapshotter: name,
            snap,
            chains,
            missing,
            ..
        } = *stack;
        for (j, &i) in missing.iter().enumerate() {
            let Some(s) = staged[j].take() else { continue };
            let parent = (i > 0).then(|| scoped(&ctx.ns, &chains[i - 1]));
            match snap.commit_staged(
                s,
                &scoped(&ctx.ns, &chains[i]),
                parent.as_deref(),
                Labels::new(),
            ) {
                Ok(()) | Err(berth_snapshotters::Error::AlreadyExists(_)) => {}
                Err(e) => {
                    staged.into_iter().flatten().for_each(Staged::discard);
                    return Err(e.into());
                }
            }
            self.snapshots
                .committed(ctx, name, &chains[i], &chains[i])?;
        }
        Ok(())
    }
}
