//! Image archives (OCI image layouts and `docker save` tarballs) to and from byte streams, as
//! containerd's Transfer service moves them for `ctr images import/export`:
//! - [`read`]: a tar stream into the content store, each file hashed as it passes (a blob
//!   named by its digest must hash to it), then one index for everything the archive holds;
//!   too many entries, or one no image archive holds, refuse it before anything is ingested;
//! - [`write`]: images, narrowed to the platforms asked for, into a tar stream that is both
//!   an OCI layout and a `docker load` archive;
//! - [`Naming`]: which names an import gives what it found (containerd's ImageStore rules).

mod read;
mod write;

use crate::core::content::Content;
use crate::core::context::Ctx;
use crate::core::error::{blocking, Error, Result};
use crate::core::gc::Gc;
use crate::core::images::{Descriptor, Images};
use crate::core::leases::Leases;
use crate::core::metadata::images::ImageRecord;
use crate::core::metadata::Labels;
use crate::core::oci::{DocDescriptor, Document, Platform, MAX_DOCUMENT};
use crate::core::pull::ProgressTx;
use crate::core::unpack::Unpacker;
use berth_proto::vocab::labels::{IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION};

/// Index nesting an archive may use before it is refused.
const MAX_DEPTH: usize = 4;

/// A name an import stores, or a rule that makes names (containerd's `ImageReference`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reference {
    pub name: String,
    /// `name` prefixes the references the archive carries (`prefix:tag`).
    pub is_prefix: bool,
    /// A whole name the archive carries is kept even when it lies outside the prefix.
    pub allow_overwrite: bool,
    /// Also `name@digest`, the only name of an image the archive leaves unnamed.
    pub add_digest: bool,
    /// No `name@digest` for an image the archive does name.
    pub skip_named_digest: bool,
}

/// The names an import or tag gives: `index_name` for the archive's top index (or the
/// tagged image), and `references` for what the archive names.
#[derive(Debug, Clone, Default)]
pub struct Naming {
    pub index_name: String,
    pub labels: Labels,
    pub references: Vec<Reference>,
}

#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    pub naming: Naming,
    /// Platforms whose manifests must be whole in the archive; empty: every one.
    pub platforms: Vec<Platform>,
    /// (platform, snapshotter) to unpack into; the host's platform when None.
    pub unpacks: Vec<(Option<Platform>, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    pub images: Vec<String>,
    /// Empty: the host's platform, unless `all_platforms`.
    pub platforms: Vec<Platform>,
    pub all_platforms: bool,
    /// No docker `manifest.json` beside the OCI index.
    pub skip_docker_manifest: bool,
    pub skip_non_distributable: bool,
}

#[derive(Clone)]
pub struct Archives {
    content: Content,
    images: Images,
    leases: Leases,
    unpacker: Unpacker,
    gc: Gc,
}

/// A step with no byte counts, as containerd's import and export report them.
fn report(tx: &Option<ProgressTx>, event: &str, name: &str) {
    crate::core::pull::report(tx, event, name, &[], 0, 0);
}

/// The tag of a full name (`reg/app:1.0` -> `1.0`), else the name itself: what OCI layouts
/// put in `org.opencontainers.image.ref.name`.
pub fn oci_ref_name(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) if !last.contains('@') => tag,
        _ => name,
    }
}

/// docker's short form of a full name (`docker.io/library/busybox:1` -> `busybox:1`).
pub fn familiar_name(name: &str) -> &str {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
}

/// containerd's reference translation: a bare tag becomes `prefix:tag`; a whole reference is
/// kept, unless `within` and it lies outside the prefix.
fn translate(prefix: &str, reference: &str, within: bool) -> Option<String> {
    if prefix.is_empty() {
        return None;
    }
    if !reference.contains(['/', ':', '@']) {
        return Some(format!("{prefix}:{reference}"));
    }
    let inside = reference.strip_prefix(prefix).is_some_and(|rest| {
        rest.is_empty() || rest.starts_with('/') || rest.starts_with(':') || rest.starts_with('@')
    });
    (!within || inside).then(|| reference.to_string())
}

impl Naming {
    /// The names an index entry of an imported archive gets (its annotations name it).
    fn for_entry(&self, entry: &DocDescriptor) -> Vec<String> {
        let mut names = vec![];
        for r in self.references.iter().filter(|r| r.is_prefix) {
            let within = !r.allow_overwrite;
            let name = match entry.annotations.get(IMAGE_NAME_ANNOTATION) {
                // A full name is used as it is, or not at all.
                Some(n) if !n.is_empty() => translate(&r.name, n, within).filter(|t| t == n),
                _ => entry
                    .annotations
                    .get(REF_NAME_ANNOTATION)
                    .filter(|n| !n.is_empty())
                    .and_then(|n| translate(&r.name, n, within)),
            };
            let named = name.is_some();
            names.extend(name);
            if r.add_digest && (!named || !r.skip_named_digest) {
                names.push(format!("{}@{}", r.name, entry.digest));
            }
        }
        names
    }

    /// The names the archive's top index (or a tagged image) gets: `index_name`, and every
    /// reference that is a whole name or asks for a digest.
    fn for_top(&self, target: &Descriptor) -> Vec<String> {
        let mut names: Vec<String> = Some(self.index_name.clone())
            .filter(|n| !n.is_empty())
            .into_iter()
            .collect();
        for r in &self.references {
            match (r.is_prefix, r.add_digest) {
                (true, false) => {}
                (_, true) => names.push(format!("{}@{}", r.name, target.digest)),
                (false, false) => names.push(r.name.clone()),
            }
        }
        names
    }
}

impl Archives {
    pub fn new(
        content: Content,
        images: Images,
        leases: Leases,
        unpacker: Unpacker,
        gc: Gc,
    ) -> Self {
        Archives {
            content,
            images,
            leases,
            unpacker,
            gc,
        }
    }

    /// Imports the archive `source` yields (plain, gzip or zstd): its blobs, the unpacks
    /// asked for, then the names. Nothing is named unless every step succeeded.
    pub async fn import(
        &self,
        ctx: Ctx,
        source: Box<dyn std::io::Read + Send>,
        req: ImportRequest,
        progress: Option<ProgressTx>,
    ) -> Result<Vec<ImageRecord>> {
        let this = self.clone();
        let imported = self
            .leases
            .with_temporary(&self.gc, ctx, move |ctx| async move {
                report(&progress, "Importing", "");
                let (content, c2) = (this.content.clone(), ctx.clone());
                let index = blocking(move || read::read_archive(&content, &c2, source)).await?;
                let (content, ns, platforms) =
                    (this.content.clone(), ctx.ns.clone(), req.platforms.clone());
                let idx = index.clone();
                let entries =
                    blocking(move || read::checked_entries(&content, &ns, &idx, &platforms))
                        .await?;
                for (platform, snapshotter) in &req.unpacks {
                    let platform = platform.clone().unwrap_or_else(Platform::host);
                    this.unpack(&ctx, &entries, &platform, snapshotter, &progress)
                        .await?;
                }
                let mut named: Vec<(String, Descriptor)> = req
                    .naming
                    .for_top(&index)
                    .into_iter()
                    .map(|n| (n, index.clone()))
                    .collect();
                for e in &entries {
                    let mut target = e.descriptor();
                    target.annotations.clear();
                    named.extend(req.naming.for_entry(e).into_iter().map(|n| (n, target.clone())));
                }
                if named.is_empty() {
                    let carried: Vec<&str> = entries
                        .iter()
                        .flat_map(|e| {
                            [IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION]
                                .into_iter()
                                .filter_map(|k| e.annotations.get(k).map(String::as_str))
                                .take(1)
                        })
                        .collect();
                    return Err(Error::not_found(format!(
                        "nothing in the archive gets a name ({}): give a name prefix the archive's names fall under (ctr: --base-name), --digests, or an index name",
                        if carried.is_empty() {
                            "it names no image".to_string()
                        } else {
                            format!("it names {}", carried.join(", "))
                        }
                    )));
                }
                let stored = this.name_all(&ctx, named, &req.naming.labels).await?;
                for image in &stored {
                    report(&progress, "saved", &image.name);
                }
                report(&progress, "Completed import", "");
                Ok(stored)
            })
            .await;
        crate::core::memory::release().await;
        imported
    }

    /// Records every name, or none: a name the store refuses undoes the ones recorded before
    /// it (new names removed, replaced ones pointed back at their old target).
    async fn name_all(
        &self,
        ctx: &Ctx,
        named: Vec<(String, Descriptor)>,
        labels: &Labels,
    ) -> Result<Vec<ImageRecord>> {
        let mut done: Vec<(ImageRecord, Option<ImageRecord>)> = vec![];
        for (name, target) in named {
            let before = self.images.get(ctx.ns.clone(), name.clone()).await.ok();
            let image = ImageRecord {
                name: name.clone(),
                labels: labels.clone(),
                target,
                ..Default::default()
            };
            match self.images.put(ctx.ns.clone(), image).await {
                Ok(stored) => done.push((stored, before)),
                Err(e) => {
                    for (stored, before) in done.into_iter().rev() {
                        let undone = match before {
                            Some(old) => self.images.put(ctx.ns.clone(), old).await.map(|_| ()),
                            None => self.images.delete(ctx.ns.clone(), stored.name).await,
                        };
                        if let Err(u) = undone {
                            tracing::warn!(error = %u, "cannot undo an image name of a failed import");
                        }
                    }
                    return Err(Error::new(
                        e.kind(),
                        format!("image {name:?}: {e}; nothing was imported"),
                    ));
                }
            }
        }
        Ok(done.into_iter().map(|(s, _)| s).collect())
    }

    /// Unpacks every entry of the archive that has a manifest for `platform` (containerd
    /// leaves the others packed, and so does berth).
    async fn unpack(
        &self,
        ctx: &Ctx,
        entries: &[DocDescriptor],
        platform: &Platform,
        snapshotter: &str,
        progress: &Option<ProgressTx>,
    ) -> Result<()> {
        let (content, ns, list, p) = (
            self.content.clone(),
            ctx.ns.clone(),
            entries.to_vec(),
            platform.clone(),
        );
        let manifests = blocking(move || {
            let mut out: Vec<Descriptor> = vec![];
            for e in &list {
                if let Some(m) = read::manifest_for(&content, &ns, e, &p, 0)? {
                    if !out.iter().any(|o| o.digest == m.digest) {
                        out.push(m);
                    }
                }
            }
            Ok(out)
        })
        .await?;
        for m in manifests {
            let u = self
                .unpacker
                .unpack_target(ctx.clone(), m, snapshotter.into(), Some(platform.clone()))
                .await?;
            report(progress, "unpacked", &u.chain_id);
        }
        Ok(())
    }

    /// Writes the named images into `out` as one archive.
    pub async fn export(
        &self,
        ctx: Ctx,
        req: ExportRequest,
        out: Box<dyn std::io::Write + Send>,
        progress: Option<ProgressTx>,
    ) -> Result<()> {
        if req.images.is_empty() {
            return Err(Error::invalid("name at least one image to export"));
        }
        let this = self.clone();
        self.leases
            .with_temporary(&self.gc, ctx, move |ctx| async move {
                report(&progress, "Exporting", "");
                let mut images = vec![];
                for name in &req.images {
                    images.push(this.images.get(ctx.ns.clone(), name.clone()).await?);
                }
                let content = this.content.clone();
                blocking(move || write::write_archive(&content, &ctx.ns, &images, &req, out))
                    .await?;
                report(&progress, "Completed export", "");
                Ok(())
            })
            .await
    }

    /// Names `source`'s target as `naming` says (a Transfer from image store to image store).
    pub async fn tag(&self, ctx: Ctx, source: &str, naming: &Naming) -> Result<Vec<ImageRecord>> {
        let image = self.images.get(ctx.ns.clone(), source.to_string()).await?;
        let names = naming.for_top(&image.target);
        if names.is_empty() {
            return Err(Error::invalid("give the new name of the image"));
        }
        let mut out = vec![];
        for name in names {
            let record = ImageRecord {
                name,
                labels: if naming.labels.is_empty() {
                    image.labels.clone()
                } else {
                    naming.labels.clone()
                },
                target: image.target.clone(),
                ..Default::default()
            };
            out.push(self.images.put(ctx.ns.clone(), record).await?);
        }
        Ok(out)
    }
}

/// The root documents an index lists, read with the size cap every document has.
fn index_entries(
    content: &Content,
    ns: &crate::core::context::Namespace,
    index: &Descriptor,
) -> Result<Vec<crate::core::oci::DocDescriptor>> {
    let bytes = content.read_document_sync(ns, &index.digest, index.size, MAX_DOCUMENT)?;
    match crate::core::oci::parse_document(index, &bytes)? {
        Document::Index(m) => Ok(m),
        Document::Manifest { .. } => Err(Error::invalid(format!(
            "{} is a manifest where an index was expected",
            index.digest
        ))),
    }
}

/// Labels each document of `found` with references to its parts, as containerd's image
/// handlers do (an index to the manifests kept, a manifest to its config and layers): the
/// collector keeps an image's parts only as far as these labels say.
pub(crate) fn label_parts(
    content: &Content,
    ns: &crate::core::context::Namespace,
    found: &Found,
) -> Result<()> {
    use berth_proto::vocab::labels::{gc_ref_config, gc_ref_layer, gc_ref_manifest};
    for (index, children) in &found.indexes {
        let labels: Labels = children
            .iter()
            .enumerate()
            .map(|(i, c)| (gc_ref_manifest(i), c.digest.clone()))
            .collect();
        content.label_sync(ns, &index.digest, labels)?;
    }
    for (manifest, config, layers) in &found.manifests {
        let mut labels = Labels::from([(gc_ref_config(), config.digest.clone())]);
        for (i, l) in layers.iter().enumerate() {
            // A non-distributable layer the archive left out is no part to keep.
            if content.has_blob_sync(ns, &l.digest)? {
                labels.insert(gc_ref_layer(i), l.digest.clone());
            }
        }
        content.label_sync(ns, &manifest.digest, labels)?;
    }
    Ok(())
}

/// What a walk from a root document found, parents before children.
#[derive(Default)]
pub(crate) struct Found {
    /// Every document and layer, each once.
    pub blobs: Vec<Descriptor>,
    /// (manifest, config, layers) of each manifest kept.
    pub manifests: Vec<(Descriptor, Descriptor, Vec<Descriptor>)>,
    /// (index, the children kept) of each index passed.
    pub indexes: Vec<(Descriptor, Vec<Descriptor>)>,
}

impl Found {
    fn add(&mut self, d: Descriptor) {
        if !self.blobs.iter().any(|b| b.digest == d.digest) {
            self.blobs.push(d);
        }
    }
}

/// Walks `root`: every index it passes, and each manifest `keep` selects by platform (an
/// entry without one is kept) with its config and layers. The documents must be readable;
/// whether the layers are present is the caller's to judge.
pub(crate) fn walk(
    content: &Content,
    ns: &crate::core::context::Namespace,
    root: &DocDescriptor,
    keep: &dyn Fn(Option<&Platform>) -> bool,
    depth: usize,
    found: &mut Found,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::invalid("image indexes nest too deeply"));
    }
    let desc = root.descriptor();
    let bytes = content.read_document_sync(ns, &desc.digest, desc.size, MAX_DOCUMENT)?;
    match crate::core::oci::parse_document(&desc, &bytes)? {
        Document::Index(children) => {
            found.add(desc.clone());
            let kept: Vec<&DocDescriptor> = children
                .iter()
                .filter(|c| keep(c.platform.as_ref()))
                .collect();
            for c in &kept {
                walk(content, ns, c, keep, depth + 1, found)?;
            }
            found
                .indexes
                .push((desc, kept.iter().map(|c| c.descriptor()).collect()));
        }
        Document::Manifest { config, layers } => {
            // The config is read too: a manifest whose config is missing is not whole.
            let config = config.descriptor();
            content.read_document_sync(ns, &config.digest, config.size, MAX_DOCUMENT)?;
            let layers: Vec<Descriptor> = layers.iter().map(DocDescriptor::descriptor).collect();
            found.add(desc.clone());
            found.add(config.clone());
            for l in &layers {
                found.add(l.clone());
            }
            found.manifests.push((desc, config, layers));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: Option<&str>, r: Option<&str>) -> DocDescriptor {
        let mut d = DocDescriptor {
            media_type: crate::core::oci::OCI_MANIFEST.into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 1,
            annotations: Default::default(),
            platform: None,
        };
        if let Some(n) = name {
            d.annotations.insert(IMAGE_NAME_ANNOTATION.into(), n.into());
        }
        if let Some(r) = r {
            d.annotations.insert(REF_NAME_ANNOTATION.into(), r.into());
        }
        d
    }

    fn prefix(name: &str, overwrite: bool, digest: bool) -> Naming {
        Naming {
            references: vec![Reference {
                name: name.into(),
                is_prefix: true,
                allow_overwrite: overwrite,
                add_digest: digest,
                skip_named_digest: true,
            }],
            ..Default::default()
        }
    }

    /// The names `ctr images import` (containerd 2.x) gets from containerd for each kind of
    /// entry, with and without --base-name and --digests.
    #[test]
    fn imported_entries_are_named_as_containerd_names_them() {
        let d = format!("sha256:{}", "a".repeat(64));
        let ctr_default = prefix("import-2026-11-30", true, false);
        assert_eq!(
            ctr_default.for_entry(&entry(Some("docker.io/library/busybox:1"), Some("1"))),
            vec!["docker.io/library/busybox:1"]
        );
        assert_eq!(
            ctr_default.for_entry(&entry(None, Some("v2"))),
            vec!["import-2026-11-30:v2"]
        );
        assert!(ctr_default.for_entry(&entry(None, None)).is_empty());
        // --base-name: only names inside the prefix.
        let base = prefix("reg.io/app", false, false);
        assert!(base
            .for_entry(&entry(Some("docker.io/library/busybox:1"), None))
            .is_empty());
        assert_eq!(
            base.for_entry(&entry(Some("reg.io/app:2"), None)),
            vec!["reg.io/app:2"]
        );
        assert!(base
            .for_entry(&entry(Some("reg.io/application:2"), None))
            .is_empty());
        // --digests: the unnamed get prefix@digest; the named keep only their name.
        let digests = prefix("reg.io/app", false, true);
        assert_eq!(
            digests.for_entry(&entry(None, None)),
            vec![format!("reg.io/app@{d}")]
        );
        assert_eq!(
            digests.for_entry(&entry(None, Some("3"))),
            vec!["reg.io/app:3"]
        );
    }

    #[test]
    fn the_top_index_is_named_by_index_name_and_whole_references() {
        let top = entry(None, None).descriptor();
        let mut n = prefix("import", true, false);
        assert!(n.for_top(&top).is_empty());
        n.index_name = "my/index:1".into();
        n.references.push(Reference {
            name: "other:2".into(),
            ..Default::default()
        });
        assert_eq!(n.for_top(&top), vec!["my/index:1", "other:2"]);
    }

    #[test]
    fn reference_names_and_familiar_names() {
        assert_eq!(oci_ref_name("docker.io/library/busybox:1.36"), "1.36");
        assert_eq!(oci_ref_name("reg.io:5000/app"), "reg.io:5000/app");
        let pinned = format!("reg.io/app@sha256:{}", "b".repeat(64));
        assert_eq!(oci_ref_name(&pinned), pinned);
        assert_eq!(familiar_name("docker.io/library/busybox:1"), "busybox:1");
        assert_eq!(familiar_name("docker.io/me/app:2"), "me/app:2");
        assert_eq!(familiar_name("reg.io/app:2"), "reg.io/app:2");
    }
}
