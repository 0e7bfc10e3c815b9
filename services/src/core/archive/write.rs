//! Images into one tar stream: an OCI image layout (`oci-layout`, `blobs/`, `index.json`
//! naming each image) that is also a `docker load` archive (`manifest.json`, for each image
//! with a single manifest for the platforms asked for).

use super::{familiar_name, oci_ref_name, walk, ExportRequest, Found};
use crate::core::content::Content;
use crate::core::context::Namespace;
use crate::core::error::{Error, Result};
use crate::core::images::Descriptor;
use crate::core::metadata::images::ImageRecord;
use crate::core::oci::{DocDescriptor, Platform, OCI_INDEX};
use berth_proto::vocab::labels::{IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION};
use berth_proto::vocab::media::is_non_distributable;
use std::io::{Read, Write};

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// What goes into the archive, gathered before the first byte is written: an image that
/// cannot be exported fails the export while nothing has been sent.
struct Plan {
    blobs: Vec<Descriptor>,
    index: Vec<serde_json::Value>,
    docker: Vec<serde_json::Value>,
}

impl Plan {
    /// The image's blobs the archive carries (each once), all of which must be stored.
    fn add_blobs(
        &mut self,
        content: &Content,
        ns: &Namespace,
        image: &ImageRecord,
        blobs: Vec<Descriptor>,
        req: &ExportRequest,
    ) -> Result<()> {
        for b in blobs {
            if req.skip_non_distributable && is_non_distributable(&b.media_type) {
                continue;
            }
            if !content.has_blob_sync(ns, &b.digest)? {
                return Err(Error::not_found(format!(
                    "image {}: {} is not in the content store (pull the image again)",
                    image.name, b.digest
                )));
            }
            if !self.blobs.iter().any(|p| p.digest == b.digest) {
                self.blobs.push(b);
            }
        }
        Ok(())
    }
}

/// The image's entry in Docker's `manifest.json`: its config, tags and layers.
fn docker_entry(
    image: &ImageRecord,
    config: &Descriptor,
    layers: &[Descriptor],
    req: &ExportRequest,
) -> serde_json::Value {
    let tagged = !image.name.contains('@') && oci_ref_name(&image.name) != image.name;
    let tags: Vec<&str> = tagged
        .then(|| familiar_name(&image.name))
        .into_iter()
        .collect();
    serde_json::json!({
        "Config": blob_path(&config.digest),
        "RepoTags": tags,
        "Layers": layers
            .iter()
            .filter(|l| !(req.skip_non_distributable && is_non_distributable(&l.media_type)))
            .map(|l| blob_path(&l.digest))
            .collect::<Vec<_>>(),
    })
}

fn plan(
    content: &Content,
    ns: &Namespace,
    images: &[ImageRecord],
    req: &ExportRequest,
) -> Result<Plan> {
    let platforms = if req.platforms.is_empty() {
        vec![Platform::host()]
    } else {
        req.platforms.clone()
    };
    let keep = |p: Option<&Platform>| {
        req.all_platforms || p.is_none_or(|p| platforms.iter().any(|w| w.matches(p)))
    };
    let mut plan = Plan {
        blobs: vec![],
        index: vec![],
        docker: vec![],
    };
    for image in images {
        let root = DocDescriptor {
            media_type: image.target.media_type.clone(),
            digest: image.target.digest.clone(),
            size: image.target.size,
            annotations: Default::default(),
            platform: None,
        };
        let mut found = Found::default();
        walk(content, ns, &root, &keep, 0, &mut found)?;
        if found.manifests.is_empty() {
            return Err(Error::not_found(format!(
                "image {} has no manifest for {}; export with --all-platforms or --platform",
                image.name,
                platforms
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        plan.add_blobs(content, ns, image, found.blobs, req)?;
        plan.index.push(serde_json::json!({
            "mediaType": image.target.media_type,
            "digest": image.target.digest,
            "size": image.target.size,
            "annotations": {
                IMAGE_NAME_ANNOTATION: image.name,
                REF_NAME_ANNOTATION: oci_ref_name(&image.name),
            },
        }));
        if let [(_, config, layers)] = found.manifests.as_slice() {
            if !req.skip_docker_manifest {
                plan.docker.push(docker_entry(image, config, layers, req));
            }
        }
    }
    Ok(plan)
}

fn header(path: &str, size: u64, kind: tar::EntryType) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)
        .map_err(|e| Error::invalid(format!("archive path {path}: {e}")))?;
    h.set_size(size);
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(0);
    h.set_cksum();
    Ok(h)
}

/// Reads a blob while hashing it, so a blob damaged at rest is caught before the archive
/// ends (the client then sees an error, not a corrupt archive).
struct Verified<R> {
    inner: R,
    hasher: berth_snapshotters::hash::Sha256,
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

pub(super) fn write_archive(
    content: &Content,
    ns: &Namespace,
    images: &[ImageRecord],
    req: &ExportRequest,
    out: Box<dyn Write + Send>,
) -> Result<()> {
    let plan = plan(content, ns, images, req)?;
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| Error::io(format!("write {what} to the archive"), e)
    };
    let mut tar = tar::Builder::new(std::io::BufWriter::with_capacity(256 << 10, out));
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    let add = |tar: &mut tar::Builder<_>, path: &str, data: &[u8]| -> Result<()> {
        let h = header(path, data.len() as u64, tar::EntryType::Regular)?;
        tar.append(&h, data).map_err(io(path))
    };
    add(&mut tar, "oci-layout", layout)?;
    for dir in ["blobs/", "blobs/sha256/"] {
        let h = header(dir, 0, tar::EntryType::Directory)?;
        tar.append(&h, std::io::empty()).map_err(io(dir))?;
    }
    for b in &plan.blobs {
        let (file, rec) = content.open_blob_sync(ns, &b.digest)?;
        let path = blob_path(&b.digest);
        let h = header(&path, rec.size as u64, tar::EntryType::Regular)?;
        let mut r = Verified {
            inner: file.take(rec.size as u64),
            hasher: berth_snapshotters::hash::Sha256::new(),
        };
        tar.append(&h, &mut r).map_err(io(&path))?;
        let got = crate::core::content::digest::Digest::from_hasher(&r.hasher).to_string();
        if got != b.digest {
            return Err(Error::precondition(format!(
                "{} is corrupted in the content store (reads as {got}); remove it and pull again",
                b.digest
            )));
        }
    }
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": plan.index});
    let json =
        |v: &serde_json::Value| serde_json::to_vec(v).map_err(|e| Error::invalid(e.to_string()));
    add(&mut tar, "index.json", &json(&index)?)?;
    if !plan.docker.is_empty() {
        add(
            &mut tar,
            "manifest.json",
            &json(&serde_json::Value::from(plan.docker))?,
        )?;
    }
    let mut w = tar.into_inner().map_err(io("the end"))?;
    w.flush().map_err(io("the end"))
}
