//! Resolving a pull: the reference's top document, the index entries for the wanted
//! platforms, each manifest with its config, all verified and capped in size; then stored.

use super::{Puller, MAX_DOCUMENT};
use crate::core::content::Content;
use crate::core::context::Ctx;
use crate::core::error::{blocking, Error, Result};
use crate::core::images::Descriptor;
use crate::core::metadata::Labels;
use crate::core::oci::{self, DocDescriptor, Document, Platform};
use crate::core::registry::Remote;
use crate::core::unpack::Resolved;
use futures::StreamExt;

/// What a pull resolved to.
pub(super) struct Resolution {
    /// The reference's top document (index or manifest).
    pub target: Descriptor,
    /// Every document with the labels that tie it to its parts, to be stored.
    pub docs: Vec<(Descriptor, Vec<u8>, Labels)>,
    /// The chosen manifests, in platform order: the first is the one unpacked.
    pub manifests: Vec<Resolved>,
}

/// The index entries a pull wants: all manifests (and nested indexes) with `all`, else per
/// platform the first matching entry (or the first with no platform), without repeats.
pub(super) fn choose<'a>(
    entries: &'a [DocDescriptor],
    platforms: &[Platform],
    all: bool,
) -> Vec<&'a DocDescriptor> {
    if all {
        return entries
            .iter()
            .filter(|e| oci::is_manifest(&e.media_type) || oci::is_index(&e.media_type))
            .collect();
    }
    let mut chosen: Vec<&DocDescriptor> = vec![];
    for p in platforms {
        let hit = entries
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(|mp| p.matches(mp)))
            .or_else(|| entries.iter().find(|m| m.platform.is_none()));
        if let Some(h) = hit {
            if !chosen.iter().any(|x| x.digest == h.digest) {
                chosen.push(h);
            }
        }
    }
    chosen
}

impl Puller {
    /// Fetches and checks the documents under `top` (already fetched): indexes are followed
    /// to the wanted platforms' manifests (three levels at most), each manifest's config
    /// is read. `source` labels every document.
    pub(super) async fn resolve(
        &self,
        remote: &Remote,
        name: &str,
        (platforms, all): (&[Platform], bool),
        source: &Labels,
    ) -> Result<Resolution> {
        let (top_bytes, top_digest) = remote.fetch_document(None).await?;
        let target = Descriptor {
            media_type: detect_media_type(&top_bytes),
            digest: top_digest,
            size: top_bytes.len() as i64,
            annotations: Labels::new(),
        };
        let mut out = Resolution {
            target: target.clone(),
            docs: vec![],
            manifests: vec![],
        };
        let mut queue = vec![(target, top_bytes, 0usize)];
        while let Some((desc, bytes, depth)) = queue.pop() {
            if depth > 3 {
                return Err(Error::invalid("image indexes nest too deeply"));
            }
            match oci::parse_document(&desc, &bytes)? {
                Document::Index(entries) => {
                    let chosen = choose(&entries, platforms, all);
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
                    out.docs.push((desc.clone(), bytes, labels));
                    // Children are fetched in order; the first chosen is unpacked.
                    for c in chosen.iter().rev() {
                        queue.push((c.descriptor(), fetch_manifest(remote, c).await?, depth + 1));
                    }
                }
                Document::Manifest { config, layers } => {
                    let cbytes = fetch_small(remote, &config).await?;
                    let resolved =
                        Resolved::new(&desc, config.clone(), layers.clone(), cbytes.clone())?;
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
                    out.docs.push((desc.clone(), bytes, labels));
                    out.docs.push((config.descriptor(), cbytes, source.clone()));
                    out.manifests.push(resolved);
                }
            }
        }
        Ok(out)
    }

    /// Stores the resolved documents (verified already) with their labels.
    pub(super) async fn store_documents(
        &self,
        ctx: &Ctx,
        docs: Vec<(Descriptor, Vec<u8>, Labels)>,
    ) -> Result<()> {
        let content = self.content.clone();
        let ctx = ctx.clone();
        blocking(move || {
            for (d, b, l) in docs {
                store_document(&content, &ctx, &d, &b, l)?;
            }
            Ok(())
        })
        .await
    }
}

/// A manifest an index names, capped and checked against its descriptor's size.
async fn fetch_manifest(remote: &Remote, c: &DocDescriptor) -> Result<Vec<u8>> {
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
    Ok(b)
}

/// Reads a config blob whole, capped and verified.
async fn fetch_small(remote: &Remote, desc: &DocDescriptor) -> Result<Vec<u8>> {
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
    let got = crate::core::content::digest::Digest::of(&out).to_string();
    if got != desc.digest || out.len() as i64 != desc.size {
        return Err(Error::precondition(format!(
            "{} was served as {got} ({} bytes); the registry sent different content",
            desc.digest,
            out.len()
        )));
    }
    Ok(out)
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

    fn entry(digest: &str, platform: Option<&str>) -> DocDescriptor {
        serde_json::from_value(serde_json::json!({
            "mediaType": oci::OCI_MANIFEST,
            "digest": digest,
            "size": 1,
            "platform": platform.map(|p| {
                let (os, arch) = p.split_once('/').unwrap();
                serde_json::json!({"os": os, "architecture": arch})
            }),
        }))
        .unwrap()
    }

    #[test]
    fn platforms_choose_entries_once_in_order() {
        let entries = vec![
            entry("sha256:a", Some("linux/arm64")),
            entry("sha256:b", Some("linux/amd64")),
            entry("sha256:c", None),
        ];
        let p = |s: &str| Platform::parse(s).unwrap();
        let digests =
            |v: Vec<&DocDescriptor>| v.iter().map(|d| d.digest.clone()).collect::<Vec<_>>();
        assert_eq!(
            digests(choose(&entries, &[p("linux/amd64")], false)),
            ["sha256:b"]
        );
        assert_eq!(
            digests(choose(
                &entries,
                &[p("linux/amd64"), p("linux/arm64"), p("linux/amd64")],
                false
            )),
            ["sha256:b", "sha256:a"]
        );
        assert_eq!(
            digests(choose(&entries, &[p("linux/s390x")], false)),
            ["sha256:c"]
        );
        assert_eq!(choose(&entries, &[], true).len(), 3);
        assert!(choose(&entries[..2], &[p("linux/s390x")], false).is_empty());
    }

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
