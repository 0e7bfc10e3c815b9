//! Push: an image's blobs (layers, then configs), then its manifests, then the index, to a
//! registry. Blobs the registry already has are skipped; blobs stream from the content store.

use crate::core::content::Content;
use crate::core::context::Ctx;
use crate::core::error::{blocking, Error, Result};
use crate::core::images::{Descriptor, Images};
use crate::core::oci::{self, Document, Platform, MAX_DOCUMENT};
use crate::core::pull::{Progress, ProgressTx};
use crate::core::registry::{self, Access};
use futures::StreamExt;

#[derive(Clone, Default)]
pub struct PushRequest {
    /// Local image name.
    pub image: String,
    /// Where to push; empty means the image's own name.
    pub reference: String,
    /// Only these platforms' manifests (pushed alone when one matches); empty: everything.
    pub platforms: Vec<Platform>,
    pub access: Access,
}

#[derive(Debug, Clone)]
pub struct Pushed {
    pub reference: String,
    pub digest: String,
    /// Blobs uploaded (the rest the registry already had).
    pub uploaded: usize,
    pub skipped: usize,
}

#[derive(Clone)]
pub struct Pusher {
    content: Content,
    images: Images,
    config: crate::core::registry::SharedConfig,
}

fn send(tx: &Option<ProgressTx>, event: &str, name: &str, p: i64, t: i64) {
    if let Some(tx) = tx {
        let _ = tx.send(Progress {
            event: event.into(),
            name: name.into(),
            parents: vec![],
            progress: p,
            total: t,
        });
    }
}

/// What a push sends: the documents in push order and the blobs they name.
struct PushPlan {
    /// The document pushed under the tag.
    top: Descriptor,
    documents: Vec<(Descriptor, Vec<u8>)>,
    blobs: Vec<Descriptor>,
}

impl Pusher {
    pub fn new(
        content: Content,
        images: Images,
        config: crate::core::registry::SharedConfig,
    ) -> Self {
        Pusher {
            content,
            images,
            config,
        }
    }

    pub async fn push(
        &self,
        ctx: Ctx,
        req: PushRequest,
        progress: Option<ProgressTx>,
    ) -> Result<Pushed> {
        if req.image.is_empty() {
            return Err(Error::invalid("the image to push must be named"));
        }
        let record = self.images.get(ctx.ns.clone(), req.image.clone()).await?;
        let target_ref = if req.reference.is_empty() {
            req.image.clone()
        } else {
            req.reference.clone()
        };
        let reference = registry::parse_reference(&target_ref)?;
        let plan = self.walk(&ctx, &req, record.target).await?;
        let remote = registry::connect(
            &self.config.get(),
            &reference,
            &req.access,
            oci_client::RegistryOperation::Push,
        )
        .await?;
        let (uploaded, skipped) = self
            .upload_blobs(&ctx, &remote, &plan.blobs, &progress)
            .await?;
        // Manifests by digest, then the top document under the tag.
        for (d, bytes) in plan.documents.iter().rev() {
            let by_digest = reference.clone_with_digest(d.digest.clone());
            let target = if d.digest == plan.top.digest {
                match reference.tag() {
                    Some(_) => reference.clone(),
                    None => by_digest,
                }
            } else {
                by_digest
            };
            remote
                .push_document(&target, bytes.clone(), &d.media_type)
                .await?;
            send(&progress, "manifest", &d.digest, d.size, d.size);
        }
        send(&progress, "pushed", &target_ref, 0, 0);
        Ok(Pushed {
            reference: registry::image_name(&reference),
            digest: plan.top.digest,
            uploaded,
            skipped,
        })
    }

    /// Walks the image from its target: documents in push order (children before
    /// parents), and the blobs they name.
    async fn walk(&self, ctx: &Ctx, req: &PushRequest, target: Descriptor) -> Result<PushPlan> {
        let mut plan = PushPlan {
            top: target.clone(),
            documents: vec![],
            blobs: vec![],
        };
        let mut stack = vec![(target, 0usize)];
        while let Some((desc, depth)) = stack.pop() {
            if depth > 3 {
                return Err(Error::invalid("image indexes nest too deeply"));
            }
            let bytes = {
                let content = self.content.clone();
                let ns = ctx.ns.clone();
                let d = desc.clone();
                blocking(move || content.read_document_sync(&ns, &d.digest, d.size, MAX_DOCUMENT))
                    .await?
            };
            match oci::parse_document(&desc, &bytes)? {
                Document::Index(entries) => {
                    let present = self.present_entries(ctx, req, &entries).await;
                    if !req.platforms.is_empty() && present.len() == 1 && depth == 0 {
                        // One platform asked for: push its manifest alone under the tag.
                        plan.top = present[0].descriptor();
                        stack.push((plan.top.clone(), depth + 1));
                        continue;
                    }
                    if present.len() != entries.len() {
                        return Err(Error::precondition(format!(
                            "{} has {} of its {} platform manifests locally; pull it with --all-platforms, or push one platform with --platform",
                            req.image,
                            present.len(),
                            entries.len()
                        )));
                    }
                    plan.documents.push((desc.clone(), bytes));
                    for e in present {
                        stack.push((e.descriptor(), depth + 1));
                    }
                }
                Document::Manifest { config, layers } => {
                    plan.documents.push((desc.clone(), bytes));
                    plan.blobs.extend(layers.iter().map(|l| l.descriptor()));
                    plan.blobs.push(config.descriptor());
                }
            }
        }
        Ok(plan)
    }

    /// The index entries the request wants (every one, or its platforms') that the content
    /// store holds.
    async fn present_entries<'e>(
        &self,
        ctx: &Ctx,
        req: &PushRequest,
        entries: &'e [oci::DocDescriptor],
    ) -> Vec<&'e oci::DocDescriptor> {
        let wanted = entries.iter().filter(|e| {
            req.platforms.is_empty()
                || e.platform
                    .as_ref()
                    .is_some_and(|p| req.platforms.iter().any(|w| w.matches(p)))
        });
        let mut present = vec![];
        for e in wanted {
            if self
                .content
                .info(ctx.ns.clone(), e.digest.clone())
                .await
                .is_ok()
            {
                present.push(e);
            }
        }
        present
    }

    /// Uploads each blob once, skipping those the registry has; (uploaded, skipped).
    async fn upload_blobs(
        &self,
        ctx: &Ctx,
        remote: &registry::Remote,
        blobs: &[Descriptor],
        progress: &Option<ProgressTx>,
    ) -> Result<(usize, usize)> {
        let mut uploaded = 0;
        let mut skipped = 0;
        let mut seen = std::collections::HashSet::new();
        for b in blobs {
            if !seen.insert(b.digest.clone()) {
                continue;
            }
            if remote.has_blob(&b.digest).await? {
                send(progress, "exists", &b.digest, b.size, b.size);
                skipped += 1;
                continue;
            }
            send(progress, "uploading", &b.digest, 0, b.size);
            self.upload(ctx, remote, b).await?;
            send(progress, "complete", &b.digest, b.size, b.size);
            uploaded += 1;
        }
        Ok((uploaded, skipped))
    }

    async fn upload(&self, ctx: &Ctx, remote: &registry::Remote, b: &Descriptor) -> Result<()> {
        let (file, rec) = {
            let content = self.content.clone();
            let ns = ctx.ns.clone();
            let d = b.digest.clone();
            blocking(move || content.open_blob_sync(&ns, &d)).await?
        };
        if rec.size != b.size {
            return Err(Error::precondition(format!(
                "blob {} is {} bytes locally but the manifest says {}",
                b.digest, rec.size, b.size
            )));
        }
        let file = tokio::fs::File::from_std(file);
        let stream = futures::stream::unfold(file, |mut f| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 4 << 20];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(bytes::Bytes::from(buf)), f))
                }
                Err(e) => Some((Err(oci_client::errors::OciDistributionError::IoError(e)), f)),
            }
        })
        .boxed();
        remote
            .push_blob_stream(&b.digest, stream, b.size as u64)
            .await
    }
}
