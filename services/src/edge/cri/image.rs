//! The CRI's images: pulled with berth's own puller into namespace `k8s.io`, stored under
//! three names as the kubelet expects to find them (tag, repo@digest, and the image id — the
//! config digest), looked up by any of them.

use super::Cri;
use crate::core::error::{blocking, Error, Kind, Result};
use crate::core::images::Descriptor;
use crate::core::metadata::images::ImageRecord;
use crate::core::oci::Platform;
use crate::core::pull::PullRequest;
use crate::core::registry::{Access, Credentials};
use berth_proto::cri::v1 as cri;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Label on the records the CRI made.
pub const MANAGED_LABEL: &str = "io.berth.cri.image";

/// An image as the CRI sees it: one id, many names.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The config digest.
    pub id: String,
    pub names: Vec<String>,
    pub target: Descriptor,
    pub size: u64,
    pub config: Value,
    pub chain_id: String,
}

impl ImageInfo {
    pub fn tags(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|n| !n.contains('@') && !n.starts_with("sha256:"))
            .cloned()
            .collect()
    }

    pub fn digests(&self) -> Vec<String> {
        let mut d: Vec<String> = self
            .names
            .iter()
            .filter(|n| n.contains('@'))
            .cloned()
            .collect();
        if d.is_empty() {
            for t in self.tags() {
                let repo = repo_of(&t);
                d.push(format!("{repo}@{}", self.target.digest));
            }
        }
        d.sort();
        d.dedup();
        d
    }

    /// (uid, username) from the config's User.
    pub fn user(&self) -> (Option<i64>, String) {
        let u = self.config["config"]["User"].as_str().unwrap_or("");
        let user = u.split(':').next().unwrap_or("");
        match user.parse::<i64>() {
            Ok(n) => (Some(n), String::new()),
            Err(_) if user.is_empty() => (Some(0), String::new()),
            Err(_) => (None, user.to_string()),
        }
    }

    pub fn to_cri(&self) -> cri::Image {
        let (uid, username) = self.user();
        cri::Image {
            id: self.id.clone(),
            repo_tags: self.tags(),
            repo_digests: self.digests(),
            size: self.size,
            uid: uid.map(|value| cri::Int64Value { value }),
            username,
            spec: Some(cri::ImageSpec {
                image: self.id.clone(),
                ..Default::default()
            }),
            pinned: false,
        }
    }
}

/// The repository part of a normalized name (without tag or digest).
fn repo_of(name: &str) -> String {
    let base = name.split('@').next().unwrap_or(name);
    match base.rfind(':') {
        Some(i) if !base[i..].contains('/') => base[..i].to_string(),
        _ => base.to_string(),
    }
}

/// What a CRI caller may name an image by: an id ("sha256:…" or the bare hex, or a unique
/// prefix of it), or a reference normalized the docker way.
enum Lookup {
    Id(String),
    Name(String),
}

fn lookup(s: &str) -> Result<Lookup> {
    if s.is_empty() {
        return Err(Error::invalid("no image given"));
    }
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    if hex.len() >= 12
        && hex.len() <= 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Ok(Lookup::Id(format!("sha256:{hex}")));
    }
    let r = crate::core::registry::parse_reference(s)?;
    Ok(Lookup::Name(crate::core::registry::image_name(&r)))
}

/// Decodes standard base64 (for AuthConfig.auth).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        })
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|b| *b != b'=' && !b.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            acc |= val(*b)? << (18 - 6 * i);
        }
        let n = chunk.len();
        if n < 2 {
            return None;
        }
        out.push((acc >> 16) as u8);
        if n > 2 {
            out.push((acc >> 8) as u8);
        }
        if n > 3 {
            out.push(acc as u8);
        }
    }
    Some(out)
}

fn credentials(auth: Option<&cri::AuthConfig>) -> Result<Option<Credentials>> {
    let Some(a) = auth else { return Ok(None) };
    if !a.username.is_empty() {
        return Ok(Some(Credentials {
            username: a.username.clone(),
            secret: a.password.clone(),
        }));
    }
    if !a.auth.is_empty() {
        let decoded = base64_decode(&a.auth)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Error::invalid("auth is not base64 of user:password"))?;
        let (u, p) = decoded
            .split_once(':')
            .ok_or_else(|| Error::invalid("auth is not base64 of user:password"))?;
        return Ok(Some(Credentials {
            username: u.into(),
            secret: p.into(),
        }));
    }
    if !a.identity_token.is_empty() {
        return Ok(Some(Credentials {
            username: String::new(),
            secret: a.identity_token.clone(),
        }));
    }
    Ok(None)
}

impl Cri {
    /// Every CRI-visible image, grouped by id.
    pub async fn image_list(&self) -> Result<Vec<ImageInfo>> {
        let records = self
            .images
            .list(self.ns.clone(), Default::default())
            .await?;
        // What no record points at any more leaves the cache.
        self.described
            .retain(|digest| records.iter().any(|r| r.target.digest == digest));
        let mut by_id: BTreeMap<String, ImageInfo> = BTreeMap::new();
        for r in records {
            let Ok(info) = self.describe(&r).await else {
                continue;
            };
            match by_id.get_mut(&info.id) {
                Some(existing) => existing.names.push(r.name.clone()),
                None => {
                    by_id.insert(info.id.clone(), info);
                }
            }
        }
        Ok(by_id.into_values().collect())
    }

    /// The image `r` refers to, resolved for this host's platform. Targets are
    /// content-addressed, so what one resolves to is read once and kept.
    async fn describe(&self, r: &ImageRecord) -> Result<ImageInfo> {
        if let Some(known) = self.described.get(&r.target.digest) {
            return Ok(ImageInfo {
                names: vec![r.name.clone()],
                ..known
            });
        }
        let info = self.resolve_image(r).await?;
        self.described.insert(&r.target.digest, info.clone());
        Ok(info)
    }

    async fn resolve_image(&self, r: &ImageRecord) -> Result<ImageInfo> {
        let content = self.content.clone();
        let ns = self.ns.clone();
        let target = r.target.clone();
        let name = r.name.clone();
        blocking(move || {
            let resolved = crate::core::unpack::resolve(&content, &ns, &target, &Platform::host())?;
            let cbytes = content.read_document_sync(
                &ns,
                &resolved.config.digest,
                resolved.config.size,
                crate::core::oci::MAX_DOCUMENT,
            )?;
            let config: Value = serde_json::from_slice(&cbytes)?;
            let size = resolved
                .layers
                .iter()
                .map(|l| l.size.max(0) as u64)
                .sum::<u64>()
                + resolved.config.size.max(0) as u64
                + resolved.manifest.size.max(0) as u64;
            let chain_id =
                berth_proto::vocab::chain::chain_id(&resolved.diff_ids).unwrap_or_default();
            Ok(ImageInfo {
                id: resolved.config.digest.clone(),
                names: vec![name],
                target,
                size,
                config,
                chain_id,
            })
        })
        .await
    }

    /// Finds an image by tag, digest reference or id; None when absent.
    pub async fn image_find(&self, spec: &str) -> Result<Option<ImageInfo>> {
        match lookup(spec)? {
            Lookup::Name(name) => {
                let rec = match self.images.get(self.ns.clone(), name).await {
                    Ok(r) => r,
                    Err(e) if e.kind() == Kind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                let id = self.describe(&rec).await?.id;
                Ok(self.image_list().await?.into_iter().find(|i| i.id == id))
            }
            Lookup::Id(id) => {
                let all = self.image_list().await?;
                let hits: Vec<ImageInfo> =
                    all.into_iter().filter(|i| i.id.starts_with(&id)).collect();
                match hits.len() {
                    0 => Ok(None),
                    1 => Ok(hits.into_iter().next()),
                    _ => Err(Error::invalid(format!(
                        "image id prefix {spec:?} is ambiguous"
                    ))),
                }
            }
        }
    }

    /// Pulls `reference` and records it under its tag, digest and id.
    pub async fn image_pull(
        &self,
        reference: &str,
        auth: Option<&cri::AuthConfig>,
    ) -> Result<ImageInfo> {
        let r = crate::core::registry::parse_reference(reference)?;
        let name = crate::core::registry::image_name(&r);
        let creds = credentials(auth)?;
        let access = Access {
            plain_http: false,
            credentials: creds.map(|c| {
                let c = Arc::new(c);
                let f: crate::core::registry::CredentialsFn = Arc::new(move |_challenge| {
                    let c = c.clone();
                    Box::pin(async move { Ok(Some((*c).clone())) })
                });
                f
            }),
        };
        let req = PullRequest {
            reference: reference.to_string(),
            name: Some(name.clone()),
            unpack: Some(self.cfg.snapshotter.clone()),
            labels: [(MANAGED_LABEL.to_string(), "managed".to_string())].into(),
            access,
            ..Default::default()
        };
        let pulled = self.puller.pull(self.ctx(), req, None).await?;
        let rec = self
            .images
            .get(self.ns.clone(), pulled.name.clone())
            .await?;
        let info = self.describe(&rec).await?;
        let repo = repo_of(&name);
        for alias in [format!("{repo}@{}", pulled.target.digest), info.id.clone()] {
            if alias == name {
                continue;
            }
            let rec = ImageRecord {
                name: alias,
                labels: [(MANAGED_LABEL.to_string(), "managed".to_string())].into(),
                target: pulled.target.clone(),
                ..Default::default()
            };
            self.images.put(self.ns.clone(), rec).await?;
        }
        self.image_find(&info.id).await?.ok_or_else(|| {
            Error::new(
                Kind::Internal,
                format!("image {name} vanished after its pull"),
            )
        })
    }

    /// The image, pulled when missing (the sandbox image).
    pub async fn image_ensure(&self, reference: &str) -> Result<ImageInfo> {
        match self.image_find(reference).await? {
            Some(i) => Ok(i),
            None => self.image_pull(reference, None).await,
        }
    }

    /// Removes every name of the image; absent is not an error.
    pub async fn image_remove(&self, spec: &str) -> Result<()> {
        let Some(info) = self.image_find(spec).await? else {
            return Ok(());
        };
        for name in &info.names {
            match self.images.delete(self.ns.clone(), name.clone()).await {
                Ok(()) => {}
                Err(e) if e.kind() == Kind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.gc.schedule();
        Ok(())
    }

    /// Makes sure the image's layers are unpacked; returns the top snapshot's name.
    pub async fn image_unpack(&self, info: &ImageInfo) -> Result<String> {
        let snapshotter = self.cfg.snapshotter.clone();
        if self
            .snapshots
            .stat(self.ns.clone(), &snapshotter, info.chain_id.clone())
            .await
            .is_ok()
        {
            return Ok(info.chain_id.clone());
        }
        let name = info.names.first().cloned().unwrap_or_default();
        let u = self
            .unpacker
            .unpack(self.ctx(), name, snapshotter, None)
            .await?;
        Ok(u.chain_id)
    }

    /// Bytes and inodes the snapshotter's directory holds.
    pub async fn image_fs_usage(&self) -> Result<(String, u64, u64)> {
        let dir = self.snapshotter_root();
        // The kubelet asks every few seconds; a walk of a big store is not free.
        if let Some((at, bytes, inodes)) = self.fs_usage.get() {
            if at.elapsed() < std::time::Duration::from_secs(10) {
                return Ok((dir, bytes, inodes));
            }
        }
        let d2 = std::path::PathBuf::from(&dir);
        let (bytes, inodes) = blocking(move || Ok(du(&d2))).await?;
        self.fs_usage.set(bytes, inodes);
        Ok((dir, bytes, inodes))
    }
}

/// Disk usage of a tree: (bytes in allocated blocks, inodes), hard links counted once.
fn du(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if seen.insert((m.dev(), m.ino())) {
                bytes += m.blocks() * 512;
                inodes += 1;
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_and_ids_are_recognized() {
        match lookup("busybox").unwrap() {
            Lookup::Name(n) => assert_eq!(n, "docker.io/library/busybox:latest"),
            Lookup::Id(_) => panic!("a name"),
        }
        let hex = "a".repeat(64);
        assert!(matches!(
            lookup(&format!("sha256:{hex}")).unwrap(),
            Lookup::Id(_)
        ));
        assert!(matches!(lookup(&hex[..12]).unwrap(), Lookup::Id(_)));
        assert!(lookup("").is_err());
        assert_eq!(
            repo_of("registry.k8s.io/pause:3.6"),
            "registry.k8s.io/pause"
        );
        assert_eq!(
            repo_of("127.0.0.1:5000/a/b@sha256:00"),
            "127.0.0.1:5000/a/b"
        );
        assert_eq!(repo_of("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b");
    }

    #[test]
    fn auth_decodes() {
        assert_eq!(base64_decode("dXNlcjpwYXNz").unwrap(), b"user:pass");
        let a = cri::AuthConfig {
            auth: "dXNlcjpwYXNz".into(),
            ..Default::default()
        };
        let c = credentials(Some(&a)).unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("user", "pass"));
        let bad = cri::AuthConfig {
            auth: "!!!".into(),
            ..Default::default()
        };
        assert!(credentials(Some(&bad)).is_err());
    }
}
