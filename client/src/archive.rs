//! Image archives: OCI image layouts and `docker save` tarballs, imported into and exported
//! from the daemon's content store through the Content and Images services. An export is
//! both at once (an OCI layout with a docker `manifest.json`), so `ctr images import`,
//! `docker load` and berth all read it.

use crate::{Client, Error, Result};
use berth_proto::images::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, UpdateImageRequest,
};
use berth_proto::types::Descriptor;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::SeekFrom;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Largest index, manifest or config read from an archive.
const MAX_DOCUMENT: u64 = 4 << 20;

use berth_proto::vocab::labels::IMAGE_NAME_ANNOTATION as NAME_ANNOTATION;
use berth_proto::vocab::media::{
    DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX,
    OCI_MANIFEST,
};
const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

fn bad(msg: impl Into<String>) -> Error {
    Error::Protocol(msg.into())
}

/// Where a file's bytes sit in the archive.
#[derive(Debug, Clone, Copy)]
struct Span {
    offset: u64,
    size: u64,
}

/// The archive's table of contents, read once.
struct Toc {
    files: HashMap<String, Span>,
}

fn clean(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

fn read_toc(path: &Path) -> Result<Toc> {
    let mut f = std::fs::File::open(path)?;
    let mut magic = [0u8; 2];
    if std::io::Read::read(&mut f, &mut magic)? == 2 && magic == [0x1f, 0x8b] {
        return Err(bad(format!(
            "{} is gzip-compressed; decompress it first (gunzip), then import the .tar",
            path.display()
        )));
    }
    let f = std::fs::File::open(path)?;
    let mut archive = tar::Archive::new(f);
    let mut files = HashMap::new();
    let mut links = vec![];
    for entry in archive.entries()? {
        let entry = entry?;
        let name = clean(&entry.path()?.to_string_lossy());
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                files.insert(
                    name,
                    Span {
                        offset: entry.raw_file_position(),
                        size: entry.size(),
                    },
                );
            }
            // docker save links layers shared between images.
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Some(target) = entry.link_name()? {
                    let t = target.to_string_lossy().to_string();
                    let resolved = if entry.header().entry_type() == tar::EntryType::Symlink {
                        let base = Path::new(&name).parent().unwrap_or(Path::new(""));
                        normalize(&base.join(&t).to_string_lossy())
                    } else {
                        clean(&t)
                    };
                    links.push((name, resolved));
                }
            }
            _ => {}
        }
    }
    for (name, target) in links {
        if let Some(span) = files.get(&target).copied() {
            files.insert(name, span);
        }
    }
    Ok(Toc { files })
}

/// Resolves `.` and `..` lexically (within the archive's own namespace).
fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = vec![];
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            x => out.push(x),
        }
    }
    out.join("/")
}

/// docker's short names made whole: `busybox` is `docker.io/library/busybox:latest`.
pub fn normalize_name(name: &str) -> String {
    let (repo, suffix) = match name.find('@') {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, ""),
    };
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let (repo, tag) = match last.rfind(':') {
        Some(i) => {
            let cut = repo.len() - last.len() + i;
            (&repo[..cut], &repo[cut..])
        }
        None => (repo, if suffix.is_empty() { ":latest" } else { "" }),
    };
    let first = repo.split('/').next().unwrap_or("");
    let is_host =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if is_host {
        repo.to_string()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    format!("{full}{tag}{suffix}")
}

/// The name docker shows for a full name (`docker.io/library/x:1` is `x:1`).
fn docker_name(full: &str) -> String {
    full.strip_prefix("docker.io/library/")
        .or_else(|| full.strip_prefix("docker.io/"))
        .unwrap_or(full)
        .to_string()
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// Image names created or updated, with their target digests.
    pub images: Vec<(String, String)>,
    pub blobs: usize,
}

impl Client {
    async fn read_span(&self, archive: &Path, span: Span, cap: u64, what: &str) -> Result<Vec<u8>> {
        if span.size > cap {
            return Err(bad(format!(
                "{what} is {} bytes; documents larger than {cap} bytes are refused",
                span.size
            )));
        }
        let mut f = tokio::fs::File::open(archive).await?;
        f.seek(SeekFrom::Start(span.offset)).await?;
        let mut buf = vec![0u8; span.size as usize];
        f.read_exact(&mut buf).await?;
        Ok(buf)
    }

    async fn ingest_span(
        &self,
        archive: &Path,
        span: Span,
        expected: Option<&str>,
    ) -> Result<String> {
        let mut f = tokio::fs::File::open(archive).await?;
        f.seek(SeekFrom::Start(span.offset)).await?;
        let reference = format!(
            "import-{}",
            expected
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}-{}", span.offset, span.size))
        );
        self.ingest(
            &reference,
            f.take(span.size),
            span.size as i64,
            expected,
            HashMap::new(),
        )
        .await
    }

    async fn ingest_bytes(&self, data: &[u8]) -> Result<String> {
        let digest = crate::sha256_digest(data);
        self.ingest(
            &format!("import-{digest}"),
            data,
            data.len() as i64,
            Some(&digest),
            HashMap::new(),
        )
        .await
    }

    async fn put_image(&self, name: &str, target: Descriptor) -> Result<()> {
        let image = Image {
            name: name.to_string(),
            target: Some(target),
            ..Default::default()
        };
        match self
            .images()
            .create(CreateImageRequest {
                image: Some(image.clone()),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                self.images()
                    .update(UpdateImageRequest {
                        image: Some(image),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["target".into()],
                        }),
                    })
                    .await?;
                Ok(())
            }
            Err(s) => Err(s.into()),
        }
    }

    /// Records every image of an import, or none: a name the daemon refuses undoes the ones
    /// recorded before it (new names removed, replaced ones restored to their old target).
    async fn put_images(&self, images: &[(String, Descriptor)]) -> Result<()> {
        let mut done: Vec<(String, Option<Descriptor>)> = vec![];
        for (name, target) in images {
            let before = self
                .images()
                .get(GetImageRequest { name: name.clone() })
                .await
                .ok()
                .and_then(|r| r.into_inner().image)
                .and_then(|i| i.target);
            if let Err(e) = self.put_image(name, target.clone()).await {
                for (n, prev) in done.into_iter().rev() {
                    let _ = match prev {
                        Some(t) => self.put_image(&n, t).await,
                        None => self
                            .images()
                            .delete(DeleteImageRequest {
                                name: n,
                                sync: false,
                            })
                            .await
                            .map(|_| ())
                            .map_err(Error::from),
                    };
                }
                return Err(bad(format!("image {name}: {e}; nothing was imported")));
            }
            done.push((name.clone(), before));
        }
        Ok(())
    }

    /// Imports every image of an OCI layout or `docker save` archive. Images without a name
    /// in the archive are named `<base_name>:<tag>` or `<base_name>@<digest>`.
    pub async fn import_archive(
        &self,
        archive: &Path,
        base_name: Option<&str>,
        progress: impl FnMut(&str),
    ) -> Result<Imported> {
        // Blobs land before the images that refer to them: a lease keeps them meanwhile.
        let (leased, lease) = self.temporary_lease().await?;
        let r = leased.import_leased(archive, base_name, progress).await;
        let _ = self.release_lease(&lease).await;
        r
    }

    async fn import_leased(
        &self,
        archive: &Path,
        base_name: Option<&str>,
        mut progress: impl FnMut(&str),
    ) -> Result<Imported> {
        let path = archive.to_path_buf();
        let toc = tokio::task::spawn_blocking(move || read_toc(&path))
            .await
            .map_err(|e| bad(format!("reading the archive failed: {e}")))??;
        let mut out = Imported::default();
        if let Some(span) = toc.files.get("index.json").copied() {
            // OCI layout: every blob, verified by its name, then one image per entry.
            let raw = self
                .read_span(archive, span, MAX_DOCUMENT, "index.json")
                .await?;
            let index: Value = serde_json::from_slice(&raw)
                .map_err(|e| bad(format!("index.json is not valid JSON: {e}")))?;
            let mut blobs: Vec<(&String, &Span)> = toc
                .files
                .iter()
                .filter(|(k, _)| k.starts_with("blobs/sha256/"))
                .collect();
            blobs.sort_by_key(|(_, s)| s.offset);
            for (name, span) in blobs {
                let hex = name.trim_start_matches("blobs/sha256/");
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(format!("{name} is not named by a sha256 digest")));
                }
                let digest = format!("sha256:{hex}");
                progress(&format!("{digest} importing {} bytes", span.size));
                self.ingest_span(archive, *span, Some(&digest))
                    .await
                    .map_err(|e| bad(format!("blob {digest}: {e}")))?;
                out.blobs += 1;
            }
            let entries = index["manifests"].as_array().cloned().unwrap_or_default();
            let mut images = vec![];
            for e in entries {
                let desc: Descriptor = descriptor_of(&e)?;
                // An entry whose document is neither in the archive nor already stored would
                // make an image that can never be used: refused, as containerd does.
                let file = format!("blobs/sha256/{}", desc.digest.trim_start_matches("sha256:"));
                if !toc.files.contains_key(&file)
                    && self
                        .content()
                        .info(berth_proto::content::InfoRequest {
                            digest: desc.digest.clone(),
                        })
                        .await
                        .is_err()
                {
                    return Err(bad(format!(
                        "index.json names {}, which is neither in the archive nor stored here; nothing was imported",
                        desc.digest
                    )));
                }
                let annotations = e["annotations"].as_object();
                let get = |k: &str| {
                    annotations
                        .and_then(|a| a.get(k))
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                };
                let name = match (get(NAME_ANNOTATION), get(REF_ANNOTATION), base_name) {
                    (Some(n), _, _) => n,
                    (None, Some(r), Some(base)) if !r.contains('/') && !r.contains(':') => {
                        format!("{base}:{r}")
                    }
                    (None, Some(r), _) if r.contains('/') || r.contains(':') => normalize_name(&r),
                    (None, _, Some(base)) => format!("{base}@{}", desc.digest),
                    (None, _, None) => {
                        return Err(bad(format!(
                            "manifest {} in index.json has no image name; give --base-name",
                            desc.digest
                        )))
                    }
                };
                images.push((name, desc));
            }
            self.put_images(&images).await?;
            for (name, desc) in images {
                progress(&format!("{name} imported ({})", desc.digest));
                out.images.push((name, desc.digest));
            }
            return Ok(out);
        }
        let span = toc.files.get("manifest.json").copied().ok_or_else(|| {
            bad("the archive has neither index.json (OCI layout) nor manifest.json (docker save)")
        })?;
        let raw = self
            .read_span(archive, span, MAX_DOCUMENT, "manifest.json")
            .await?;
        let list: Vec<Value> = serde_json::from_slice(&raw)
            .map_err(|e| bad(format!("manifest.json is not a docker save manifest: {e}")))?;
        let mut images = vec![];
        for item in list {
            let file = |p: &str| {
                toc.files
                    .get(&clean(p))
                    .copied()
                    .ok_or_else(|| bad(format!("manifest.json names {p}, which the archive lacks")))
            };
            let cfg_path = item["Config"]
                .as_str()
                .ok_or_else(|| bad("manifest.json entry without Config"))?;
            let cfg_span = file(cfg_path)?;
            let cfg = self
                .read_span(archive, cfg_span, MAX_DOCUMENT, cfg_path)
                .await?;
            let cfg_digest = self.ingest_bytes(&cfg).await?;
            let mut layers = vec![];
            for l in item["Layers"].as_array().cloned().unwrap_or_default() {
                let p = l
                    .as_str()
                    .ok_or_else(|| bad("manifest.json layer is not a path"))?;
                let span = file(p)?;
                let head = self
                    .read_span(
                        archive,
                        Span {
                            offset: span.offset,
                            size: span.size.min(2),
                        },
                        2,
                        p,
                    )
                    .await?;
                progress(&format!("{p} importing {} bytes", span.size));
                let digest = self.ingest_span(archive, span, None).await?;
                out.blobs += 1;
                let media = if head == [0x1f, 0x8b] {
                    DOCKER_LAYER_GZIP
                } else {
                    DOCKER_LAYER
                };
                layers.push(json!({"mediaType": media, "digest": digest, "size": span.size}));
            }
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": DOCKER_CONFIG, "digest": cfg_digest, "size": cfg.len()},
                "layers": layers,
            });
            let mbytes = serde_json::to_vec(&manifest).map_err(|e| bad(e.to_string()))?;
            let mdigest = self.ingest_bytes(&mbytes).await?;
            let target = Descriptor {
                media_type: DOCKER_MANIFEST.into(),
                digest: mdigest.clone(),
                size: mbytes.len() as i64,
                annotations: HashMap::new(),
            };
            let mut names: Vec<String> = item["RepoTags"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|t| t.as_str().map(normalize_name))
                .collect();
            if names.is_empty() {
                names.push(format!("{}@{mdigest}", base_name.unwrap_or("import")));
            }
            for name in names {
                images.push((name, target.clone()));
            }
        }
        self.put_images(&images).await?;
        for (name, target) in images {
            progress(&format!("{name} imported ({})", target.digest));
            out.images.push((name, target.digest));
        }
        Ok(out)
    }

    /// Writes `images` into one archive at `out` (OCI layout plus docker's manifest.json).
    /// Index entries are kept for `platforms` (all when empty) when their content is local.
    /// The file appears only once complete.
    pub async fn export_archive(
        &self,
        out: &Path,
        images: &[String],
        platforms: &[(String, String)],
        mut progress: impl FnMut(&str),
    ) -> Result<usize> {
        let mut blobs: Vec<Descriptor> = vec![];
        let mut seen = std::collections::HashSet::new();
        let mut index_entries = vec![];
        let mut docker = vec![];
        for name in images {
            let img = self
                .images()
                .get(GetImageRequest { name: name.clone() })
                .await?
                .into_inner()
                .image
                .ok_or_else(|| bad(format!("image {name} not found")))?;
            let target = img
                .target
                .clone()
                .ok_or_else(|| bad(format!("image {name} has no target")))?;
            let mut manifests = vec![]; // (descriptor, platform)
            let mut top = vec![target.clone()];
            if target.media_type == OCI_INDEX || target.media_type == DOCKER_LIST {
                let raw = self.read_blob(&target.digest, 0, 0).await?;
                let index: Value = serde_json::from_slice(&raw).map_err(|e| bad(e.to_string()))?;
                let entries = index["manifests"].as_array().cloned().unwrap_or_default();
                let mut kept = vec![];
                for e in &entries {
                    let d = descriptor_of(e)?;
                    let p = (
                        e["platform"]["os"].as_str().unwrap_or("").to_string(),
                        e["platform"]["architecture"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                    );
                    let wanted = platforms.is_empty() || platforms.contains(&p);
                    let local = self
                        .content()
                        .info(berth_proto::content::InfoRequest {
                            digest: d.digest.clone(),
                        })
                        .await
                        .is_ok();
                    if wanted && local {
                        kept.push((d, Some(e["platform"].clone())));
                    }
                }
                if kept.is_empty() {
                    return Err(bad(format!(
                        "{name} has no local manifest for the platforms asked for"
                    )));
                }
                if kept.len() != entries.len() {
                    top = kept.iter().map(|(d, _)| d.clone()).collect();
                } else if seen.insert(target.digest.clone()) {
                    blobs.push(target.clone());
                }
                manifests = kept;
            } else {
                manifests.push((target.clone(), None));
            }
            for t in &top {
                let mut e = json!({"mediaType": t.media_type, "digest": t.digest, "size": t.size,
                    "annotations": {NAME_ANNOTATION: name, REF_ANNOTATION: tag_of(name)}});
                if let Some((_, Some(p))) = manifests.iter().find(|(d, _)| d.digest == t.digest) {
                    e["platform"] = p.clone();
                }
                index_entries.push(e);
            }
            for (m, _) in &manifests {
                let raw = self.read_blob(&m.digest, 0, 0).await?;
                let doc: Value = serde_json::from_slice(&raw).map_err(|e| bad(e.to_string()))?;
                if seen.insert(m.digest.clone()) {
                    blobs.push(m.clone());
                }
                let config = descriptor_of(&doc["config"])?;
                let layers = doc["layers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(descriptor_of)
                    .collect::<Result<Vec<_>>>()?;
                if manifests.len() == 1 {
                    docker.push(json!({
                        "Config": format!("blobs/sha256/{}", hex_of(&config.digest)),
                        "RepoTags": [docker_name(name)],
                        "Layers": layers.iter().map(|l| format!("blobs/sha256/{}", hex_of(&l.digest))).collect::<Vec<_>>(),
                    }));
                }
                for d in std::iter::once(config).chain(layers) {
                    if seen.insert(d.digest.clone()) {
                        blobs.push(d);
                    }
                }
            }
        }
        let dir = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.partial-{}",
            out.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            std::process::id()
        ));
        let written = async {
            let mut w = TarWriter {
                file: tokio::io::BufWriter::with_capacity(
                    1 << 20,
                    tokio::fs::File::create(&tmp).await?,
                ),
            };
            w.add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
                .await?;
            w.dir("blobs/").await?;
            w.dir("blobs/sha256/").await?;
            for b in &blobs {
                progress(&format!("{} exporting {} bytes", b.digest, b.size));
                w.add_blob(self, b).await?;
            }
            let index =
                json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index_entries});
            w.add(
                "index.json",
                &serde_json::to_vec(&index).map_err(|e| bad(e.to_string()))?,
            )
            .await?;
            if !docker.is_empty() {
                w.add(
                    "manifest.json",
                    &serde_json::to_vec(&docker).map_err(|e| bad(e.to_string()))?,
                )
                .await?;
            }
            w.finish().await
        }
        .await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, out).await?;
        Ok(blobs.len())
    }
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

fn tag_of(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, t)) => t.split('@').next().unwrap_or(t).to_string(),
        None => "latest".into(),
    }
}

fn descriptor_of(v: &Value) -> Result<Descriptor> {
    let digest = v["digest"]
        .as_str()
        .ok_or_else(|| bad("descriptor without digest"))?;
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!(
            "descriptor digest {digest:?} is not a sha256 digest"
        )));
    }
    let size = v["size"]
        .as_i64()
        .filter(|s| *s >= 0)
        .ok_or_else(|| bad(format!("descriptor {digest} has no size")))?;
    let mut media_type = v["mediaType"].as_str().unwrap_or("").to_string();
    if media_type.is_empty() {
        media_type = OCI_MANIFEST.into();
    }
    let annotations: BTreeMap<String, String> = v["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(Descriptor {
        media_type,
        digest: digest.to_string(),
        size,
        annotations: annotations.into_iter().collect(),
    })
}

/// A tar stream written as it goes: blobs stream from the daemon into the file.
struct TarWriter {
    file: tokio::io::BufWriter<tokio::fs::File>,
}

impl TarWriter {
    async fn header(&mut self, path: &str, size: u64, kind: tar::EntryType) -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path)?;
        h.set_size(size);
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(0);
        h.set_cksum();
        self.file.write_all(h.as_bytes()).await?;
        Ok(())
    }

    async fn pad(&mut self, size: u64) -> Result<()> {
        let rem = (512 - size % 512) % 512;
        self.file.write_all(&vec![0u8; rem as usize]).await?;
        Ok(())
    }

    async fn dir(&mut self, path: &str) -> Result<()> {
        self.header(path, 0, tar::EntryType::Directory).await
    }

    async fn add(&mut self, path: &str, data: &[u8]) -> Result<()> {
        self.header(path, data.len() as u64, tar::EntryType::Regular)
            .await?;
        self.file.write_all(data).await?;
        self.pad(data.len() as u64).await
    }

    async fn add_blob(&mut self, client: &Client, d: &Descriptor) -> Result<()> {
        use tokio_stream::StreamExt;
        let size = d.size as u64;
        self.header(
            &format!("blobs/sha256/{}", hex_of(&d.digest)),
            size,
            tar::EntryType::Regular,
        )
        .await?;
        let mut stream = client
            .content()
            .read(berth_proto::content::ReadContentRequest {
                digest: d.digest.clone(),
                offset: 0,
                size: 0,
            })
            .await?
            .into_inner();
        let mut n = 0u64;
        while let Some(msg) = stream.next().await {
            let data = msg?.data;
            n += data.len() as u64;
            if n > size {
                break;
            }
            self.file.write_all(&data).await?;
        }
        if n != size {
            return Err(bad(format!(
                "blob {} is {n} bytes locally, its descriptor says {size}",
                d.digest
            )));
        }
        self.pad(size).await
    }

    async fn finish(mut self) -> Result<()> {
        self.file.write_all(&[0u8; 1024]).await?;
        self.file.flush().await?;
        self.file.get_ref().sync_all().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_names_normalize() {
        assert_eq!(
            normalize_name("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_name("busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(normalize_name("me/app"), "docker.io/me/app:latest");
        assert_eq!(
            normalize_name("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(normalize_name("reg.io/a/b:v1"), "reg.io/a/b:v1");
        assert_eq!(docker_name("docker.io/library/busybox:1"), "busybox:1");
        assert_eq!(tag_of("reg.io:5000/a/b:v1"), "v1");
        assert_eq!(tag_of("reg.io:5000/a/b"), "latest");
        assert_eq!(normalize("blobs/x/../sha256/ab"), "blobs/sha256/ab");
    }
}
