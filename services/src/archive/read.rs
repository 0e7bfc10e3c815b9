//! An archive read once, in order, from a stream: every file goes into the content store as
//! it passes (docker's `manifest.json` comes last, so nothing can wait for it), and the
//! archive's own index — or one made from `manifest.json` — describes what arrived.

use super::{index_entries, oci_ref_name, walk, Found, MAX_DEPTH};
use crate::content::digest::Digest;
use crate::content::Content;
use crate::context::{Ctx, Namespace};
use crate::error::{Error, Kind, Result};
use crate::images::Descriptor;
use crate::metadata::Labels;
use crate::oci::{
    DocDescriptor, Platform, DOCKER_CONFIG, DOCKER_MANIFEST, MAX_DOCUMENT, OCI_INDEX,
};
use berth_proto::vocab::labels::{IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION};
use berth_proto::vocab::media::{is_index, is_non_distributable, DOCKER_LAYER, DOCKER_LAYER_GZIP};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;

/// Files an archive may hold: each becomes a blob, and a flood of tiny ones is refused.
const MAX_FILES: usize = 100_000;

/// One image of a `docker save` archive.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Layout {
    image_layout_version: String,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::invalid(format!("the archive is not usable: {what}"))
}

/// A tar reader's complaint, without the raw header bytes it quotes (binary garbage on the
/// user's terminal).
fn tar_error(e: &std::io::Error) -> Error {
    let text: String = e
        .to_string()
        .chars()
        .take_while(|c| !c.is_control() && *c != '\u{fffd}')
        .take(120)
        .collect();
    bad(format!(
        "it is not a tar archive, or a damaged one ({})",
        text.trim_end_matches([':', ' '])
    ))
}

/// A path inside the archive, with `.` and `..` resolved within the archive's own names.
fn clean(path: &str) -> String {
    let mut out: Vec<&str> = vec![];
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    out.join("/")
}

/// The digest a `blobs/<algorithm>/<hex>` path names, if it is one.
fn named_digest(path: &str) -> Option<Result<Digest>> {
    let rest = path.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    Some(
        Digest::parse(&format!("{alg}:{hex}"))
            .map_err(|_| bad(format!("{path} is not named by a sha256 digest"))),
    )
}

fn read_small(entry: &mut impl Read, what: &str) -> Result<Vec<u8>> {
    let mut bytes = vec![];
    entry
        .take(MAX_DOCUMENT as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("read {what} from the archive"), e))?;
    if bytes.len() as i64 > MAX_DOCUMENT {
        return Err(bad(format!("{what} is larger than {MAX_DOCUMENT} bytes")));
    }
    Ok(bytes)
}

/// What the stream held: each file's blob by path, and the two documents kept aside.
#[derive(Default)]
struct Files {
    blobs: HashMap<String, (Digest, i64)>,
    links: Vec<(String, String)>,
    layout: Option<String>,
    docker: Option<Vec<DockerEntry>>,
}

/// Reads the whole archive into the content store; returns the index that describes it.
pub(super) fn read_archive(
    content: &Content,
    ctx: &Ctx,
    source: Box<dyn Read + Send>,
) -> Result<Descriptor> {
    let stream = berth_snapshotters::layer::apply::decompress(source)
        .map_err(|e| bad(format!("cannot read its compression: {e}")))?;
    let files = ingest_files(content, ctx, stream)?;
    match (files.layout.as_deref(), files.docker.is_some()) {
        (Some(version), _) => oci_layout(&files, version),
        (None, true) => docker_index(content, ctx, files),
        (None, false) => Err(bad(
            "it is neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)",
        )),
    }
}

fn ingest_files(content: &Content, ctx: &Ctx, stream: Box<dyn Read + '_>) -> Result<Files> {
    let mut archive = tar::Archive::new(stream);
    let mut files = Files::default();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let entries = archive.entries().map_err(|e| tar_error(&e))?;
    for (n, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| tar_error(&e))?;
        if n >= MAX_FILES {
            return Err(bad(format!("it holds more than {MAX_FILES} files")));
        }
        let path = clean(&String::from_utf8_lossy(&entry.path_bytes()));
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::Symlink || kind == tar::EntryType::Link {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            // Symlinks are relative to their own directory; hard links name an archive path.
            let resolved = if kind == tar::EntryType::Symlink {
                let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                clean(&format!("{dir}/{target}"))
            } else {
                clean(&target)
            };
            files.links.push((path, resolved));
            continue;
        }
        if !matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
            continue;
        }
        match path.as_str() {
            "oci-layout" => {
                let raw = read_small(&mut entry, "oci-layout")?;
                let l: Layout = serde_json::from_slice(&raw)
                    .map_err(|e| bad(format!("oci-layout is not valid: {e}")))?;
                files.layout = Some(l.image_layout_version);
            }
            "manifest.json" => {
                let raw = read_small(&mut entry, "manifest.json")?;
                files.docker = Some(serde_json::from_slice(&raw).map_err(|e| {
                    bad(format!("manifest.json is not a docker save manifest: {e}"))
                })?);
            }
            "repositories" => {}
            _ => {
                let expected = named_digest(&path).transpose()?;
                let reference = format!("archive-{run}-{n}");
                let size = entry.size();
                let blob = content
                    .ingest_expected_sync(ctx, &reference, expected.clone(), Labels::new(), |w| {
                        let n = std::io::copy(&mut entry, w)
                            .map_err(|e| Error::io(format!("read {path} from the archive"), e))?;
                        if n != size {
                            return Err(bad(format!(
                                "it ends inside {path} ({n} of its {size} bytes): the archive is cut short"
                            )));
                        }
                        Ok(())
                    })
                    .map_err(|e| match (&expected, e.kind()) {
                        (Some(d), Kind::FailedPrecondition) => bad(format!(
                            "{path} does not hold {d}: its bytes hash to something else"
                        )),
                        _ => e,
                    })?;
                let digest = Digest::parse(&blob.digest)?;
                files.blobs.insert(path, (digest, blob.size));
            }
        }
    }
    for (name, target) in std::mem::take(&mut files.links) {
        if let Some(b) = files.blobs.get(&target).cloned() {
            files.blobs.insert(name, b);
        }
    }
    Ok(files)
}

fn oci_layout(files: &Files, version: &str) -> Result<Descriptor> {
    if version != "1.0.0" {
        return Err(bad(format!(
            "OCI image layout version {version:?} is not 1.0.0"
        )));
    }
    let (digest, size) = files
        .blobs
        .get("index.json")
        .ok_or_else(|| bad("an OCI image layout without index.json"))?;
    Ok(Descriptor {
        media_type: OCI_INDEX.into(),
        digest: digest.to_string(),
        size: *size,
        annotations: Default::default(),
    })
}

/// Ingests a document berth made (a manifest or index for a docker save archive).
fn put_document(
    content: &Content,
    ctx: &Ctx,
    media_type: &str,
    doc: &serde_json::Value,
) -> Result<Descriptor> {
    let bytes = serde_json::to_vec(doc).map_err(|e| Error::invalid(e.to_string()))?;
    let digest = Digest::of(&bytes);
    content.ingest_expected_sync(
        ctx,
        &format!("archive-{digest}"),
        Some(digest.clone()),
        Labels::new(),
        |w| {
            w.write_all(&bytes)
                .map_err(|e| Error::io("write a document", e))
        },
    )?;
    Ok(Descriptor {
        media_type: media_type.into(),
        digest: digest.to_string(),
        size: bytes.len() as i64,
        annotations: Default::default(),
    })
}

/// The index of a `docker save` archive: a schema 2 manifest per image, one entry per tag
/// (named as containerd names them), the platform taken from the config.
fn docker_index(content: &Content, ctx: &Ctx, files: Files) -> Result<Descriptor> {
    let blob = |p: &str| {
        files
            .blobs
            .get(&clean(p))
            .cloned()
            .ok_or_else(|| bad(format!("manifest.json names {p}, which the archive lacks")))
    };
    let mut entries = vec![];
    for image in files.docker.iter().flatten() {
        let (cfg, cfg_size) = blob(&image.config)?;
        let cfg_bytes =
            content.read_document_sync(&ctx.ns, &cfg.to_string(), cfg_size, MAX_DOCUMENT)?;
        let cfg_desc = DocDescriptor {
            media_type: DOCKER_CONFIG.into(),
            digest: cfg.to_string(),
            size: cfg_size,
            annotations: BTreeMap::new(),
            platform: None,
        };
        let config = crate::oci::parse_config(&cfg_desc, &cfg_bytes)?;
        let mut layers = vec![];
        for l in &image.layers {
            let (d, size) = blob(l)?;
            let (mut f, _) = content.open_blob_sync(&ctx.ns, &d.to_string())?;
            let mut head = [0u8; 4];
            let n = f
                .read(&mut head)
                .map_err(|e| Error::io("read a layer", e))?;
            let media = if berth_snapshotters::layer::apply::is_compressed(&head[..n]) {
                DOCKER_LAYER_GZIP
            } else {
                DOCKER_LAYER
            };
            layers.push(
                serde_json::json!({"mediaType": media, "digest": d.to_string(), "size": size}),
            );
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": cfg.to_string(), "size": cfg_size},
            "layers": layers,
        });
        let m = put_document(content, ctx, DOCKER_MANIFEST, &manifest)?;
        let mut entry = serde_json::json!({
            "mediaType": m.media_type, "digest": m.digest, "size": m.size,
        });
        if !config.os.is_empty() {
            entry["platform"] =
                serde_json::json!({"os": config.os, "architecture": config.architecture});
        }
        let tags = image.repo_tags.clone().unwrap_or_default();
        if tags.is_empty() {
            entries.push(entry.clone());
        }
        for tag in tags {
            let reference = crate::registry::parse_reference(&tag).map_err(|e| {
                bad(format!(
                    "manifest.json has a tag berth cannot use ({e}); nothing was imported"
                ))
            })?;
            let name = crate::registry::image_name(&reference);
            let mut e = entry.clone();
            e["annotations"] = serde_json::json!({
                IMAGE_NAME_ANNOTATION: name, REF_NAME_ANNOTATION: oci_ref_name(&name),
            });
            entries.push(e);
        }
    }
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    put_document(content, ctx, OCI_INDEX, &index)
}

/// The archive's entries, each checked whole for the platforms wanted (all when empty): its
/// documents readable, its layers present (a non-distributable one may be missing).
pub(super) fn checked_entries(
    content: &Content,
    ns: &Namespace,
    index: &Descriptor,
    platforms: &[Platform],
) -> Result<Vec<DocDescriptor>> {
    let entries = index_entries(content, ns, index)?;
    let keep = |p: Option<&Platform>| {
        platforms.is_empty() || p.is_none_or(|p| platforms.iter().any(|w| w.matches(p)))
    };
    for e in &entries {
        let mut found = Found::default();
        walk(content, ns, e, &keep, 0, &mut found)?;
        for (m, _, layers) in &found.manifests {
            for l in layers {
                if !is_non_distributable(&l.media_type) && !content.has_blob_sync(ns, &l.digest)? {
                    return Err(bad(format!(
                        "manifest {} names layer {}, which the archive lacks",
                        m.digest, l.digest
                    )));
                }
            }
        }
    }
    Ok(entries)
}

/// The manifest of `entry` for `platform`, None when it has none.
pub(super) fn manifest_for(
    content: &Content,
    ns: &Namespace,
    entry: &DocDescriptor,
    platform: &Platform,
    depth: usize,
) -> Result<Option<Descriptor>> {
    if entry
        .platform
        .as_ref()
        .is_some_and(|p| !platform.matches(p))
    {
        return Ok(None);
    }
    if !is_index(&entry.media_type) {
        return Ok(Some(entry.descriptor()));
    }
    if depth >= MAX_DEPTH {
        return Err(bad("its indexes nest too deeply"));
    }
    for child in index_entries(content, ns, &entry.descriptor())? {
        if let Some(m) = manifest_for(content, ns, &child, platform, depth + 1)? {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_resolve_inside_the_archive() {
        assert_eq!(clean("./blobs/sha256/../sha256/ab"), "blobs/sha256/ab");
        assert_eq!(clean("../../etc/passwd"), "etc/passwd");
        assert!(named_digest("blobs/sha256/zz").unwrap().is_err());
        assert!(named_digest("abc/layer.tar").is_none());
        let hex = "c".repeat(64);
        assert_eq!(
            named_digest(&format!("blobs/sha256/{hex}"))
                .unwrap()
                .unwrap()
                .to_string(),
            format!("sha256:{hex}")
        );
    }
}
