//! Talking to OCI registries: per-host settings (mirrors, plain HTTP), credentials asked for
//! only when a registry wants them and sent only to that registry, manifests read with a size
//! cap, blobs streamed with resume from an offset. Built on `oci-client`.

use crate::core::error::{Error, Kind, Result};
use crate::core::oci;
use futures::future::BoxFuture;
use futures::StreamExt;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol, SizedStream};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Once};

/// Layers fetched at once by default.
pub const DEFAULT_CONCURRENT_DOWNLOADS: usize = 3;

/// Media types asked for when resolving a reference.
pub const MANIFEST_TYPES: &[&str] = &[
    oci::OCI_INDEX,
    oci::OCI_MANIFEST,
    oci::DOCKER_LIST,
    oci::DOCKER_MANIFEST,
];

/// berthd's `[registry]` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Layers downloaded at once by one pull.
    pub max_concurrent_downloads: usize,
    /// Per-registry settings, keyed by host[:port] as written in references ("docker.io").
    pub hosts: BTreeMap<String, HostConfig>,
    /// A directory of `<host>/hosts.toml` files in containerd's layout (server, mirrors,
    /// plain HTTP, skip_verify, capabilities); read at each pull, so edits apply at once.
    pub config_path: std::path::PathBuf,
}

/// The registry settings pulls and pushes read, replaceable while berthd runs (SIGHUP): each
/// operation takes the settings current when it starts.
#[derive(Clone, Default)]
pub struct SharedConfig(Arc<std::sync::RwLock<Arc<RegistryConfig>>>);

impl SharedConfig {
    pub fn new(c: RegistryConfig) -> Self {
        SharedConfig(Arc::new(std::sync::RwLock::new(Arc::new(c))))
    }

    pub fn get(&self) -> Arc<RegistryConfig> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, c: RegistryConfig) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(c);
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_concurrent_downloads: DEFAULT_CONCURRENT_DOWNLOADS,
            hosts: BTreeMap::new(),
            config_path: std::path::PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Hosts tried before this one, in order (each reached with its own `[hosts]` settings).
    pub mirrors: Vec<String>,
    /// Talk plain HTTP to this host.
    pub plain_http: bool,
    /// Accept any TLS certificate from this host.
    pub skip_verify: bool,
}

/// What a registry said when it asked for credentials.
#[derive(Debug, Clone)]
pub struct AuthChallenge {
    pub host: String,
    pub reference: String,
}

/// Username and secret for one registry.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <secret>)", self.username)
    }
}

/// Asked once per registry that answers 401; `None` means "no credentials".
pub type CredentialsFn =
    Arc<dyn Fn(AuthChallenge) -> BoxFuture<'static, Result<Option<Credentials>>> + Send + Sync>;

/// How one pull or push reaches its registry.
#[derive(Clone, Default)]
pub struct Access {
    /// Plain HTTP for the reference's host (`--plain-http`).
    pub plain_http: bool,
    pub credentials: Option<CredentialsFn>,
}

fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Maps an `oci-client` failure to a core error that says what to do.
pub fn remote_error(what: &str, e: OciDistributionError) -> Error {
    use OciDistributionError as E;
    match e {
        E::UnauthorizedError { url } => Error::new(
            Kind::Unauthenticated,
            format!("{what}: the registry refused access to {url}; give credentials (--user USER:PASSWORD)"),
        ),
        E::AuthenticationFailure(m) => Error::new(
            Kind::Unauthenticated,
            format!("{what}: authentication failed: {}", m.trim()),
        ),
        E::ImageManifestNotFoundError(m) => Error::not_found(format!("{what}: {m}")),
        E::RegistryError { envelope, url } => {
            let text = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            let unknown = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::BlobUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                )
            });
            let denied = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::Unauthorized
                        | oci_client::errors::OciErrorCode::Denied
                )
            });
            let kind = if unknown {
                Kind::NotFound
            } else if denied {
                Kind::Unauthenticated
            } else {
                Kind::FailedPrecondition
            };
            Error::new(kind, format!("{what}: registry said {text} ({url})"))
        }
        E::ServerError {
            code: 404,
            url,
            message,
        } => {
            Error::not_found(format!("{what}: {url} not found: {message}"))
        }
        E::ServerError { code, url, message } if code == 401 || code == 403 => Error::new(
            Kind::Unauthenticated,
            format!("{what}: {url} answered {code}: {message}; give credentials (--user USER:PASSWORD)"),
        ),
        E::RequestError(r) if matches!(r.status().map(|s| s.as_u16()), Some(401 | 403)) => {
            Error::new(
                Kind::Unauthenticated,
                format!("{what}: the registry refused access ({r}); give credentials (--user USER:PASSWORD)"),
            )
        }
        E::RequestError(r) if r.status().map(|s| s.as_u16()) == Some(404) => {
            Error::not_found(format!("{what}: {r}"))
        }
        E::RequestError(r) if r.status().is_some() => {
            Error::new(Kind::FailedPrecondition, format!("{what}: {r}"))
        }
        E::RequestError(r) => Error::new(
            Kind::Unavailable,
            format!("{what}: cannot reach the registry: {r}{}", source_chain(&r)),
        ),
        other => Error::new(Kind::FailedPrecondition, format!("{what}: {other}")),
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// A connection to the registry (or the mirror) serving one reference.
#[derive(Clone)]
pub struct Remote {
    client: Client,
    /// The reference as addressed to the host actually used.
    pub reference: Reference,
    pub host: String,
}

/// Resolves `reference`'s hosts (mirrors first) and returns the first that answers, with
/// credentials asked for if it wants them.
pub async fn connect(
    config: &RegistryConfig,
    reference: &Reference,
    access: &Access,
    op: RegistryOperation,
) -> Result<Remote> {
    install_crypto();
    let registry = reference.registry().to_string();
    let (config, upstream) = with_hosts_dir(config, &registry, op)?;
    let config = &config;
    let host_cfg = config.hosts.get(&registry).cloned().unwrap_or_default();
    let mut candidates: Vec<String> = if op == RegistryOperation::Pull {
        host_cfg.mirrors.clone()
    } else {
        vec![]
    };
    if upstream {
        candidates.push(registry.clone());
    }
    let mut last = None;
    for host in candidates {
        match connect_host(config, reference, access, op, &host, host != registry).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                tracing::debug!(host, error = %e, "registry host failed");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::not_found(format!("no host serves {reference}"))))
}

/// `config` with `<config_path>/<registry>/hosts.toml` applied: its `[host."URL"]` entries
/// (that may pull) become mirrors tried first, an `http://` URL means plain HTTP, and a
/// `server` other than the registry itself replaces it. Returns whether the registry itself
/// is still tried.
fn with_hosts_dir(
    config: &RegistryConfig,
    registry: &str,
    op: RegistryOperation,
) -> Result<(RegistryConfig, bool)> {
    let mut out = config.clone();
    if config.config_path.as_os_str().is_empty() {
        return Ok((out, true));
    }
    let dir_name = if registry == "docker.io" {
        "docker.io"
    } else {
        registry
    };
    let file = config.config_path.join(dir_name).join("hosts.toml");
    let file = if file.exists() {
        file
    } else {
        config.config_path.join("_default").join("hosts.toml")
    };
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Ok((out, true));
    };
    let doc: toml::Table =
        toml::from_str(&text).map_err(|e| Error::invalid(format!("{}: {e}", file.display())))?;
    // "http://127.0.0.1:5000/v2" -> ("127.0.0.1:5000", plain)
    let split = |url: &str| -> (String, bool) {
        let (plain, rest) = match url.split_once("://") {
            Some(("http", r)) => (true, r),
            Some((_, r)) => (false, r),
            None => (false, url),
        };
        (rest.split('/').next().unwrap_or(rest).to_string(), plain)
    };
    let wanted = if op == RegistryOperation::Pull {
        "pull"
    } else {
        "push"
    };
    let mut mirrors = Vec::new();
    if let Some(hosts) = doc.get("host").and_then(|h| h.as_table()) {
        for (url, h) in hosts {
            let caps: Vec<&str> = h
                .get("capabilities")
                .and_then(|c| c.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_else(|| vec!["pull", "resolve"]);
            if !caps.contains(&wanted) {
                continue;
            }
            let (host, plain) = split(url);
            let entry = out.hosts.entry(host.clone()).or_default();
            entry.plain_http |= plain;
            entry.skip_verify |= h
                .get("skip_verify")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if host != registry {
                mirrors.push(host);
            }
        }
    }
    let mut upstream = true;
    if let Some(server) = doc.get("server").and_then(|v| v.as_str()) {
        let (host, plain) = split(server);
        let same = host == registry || (registry == "docker.io" && host == "registry-1.docker.io");
        if !same {
            upstream = false;
            if !mirrors.contains(&host) {
                mirrors.push(host.clone());
            }
        }
        out.hosts.entry(host).or_default().plain_http |= plain;
    }
    let reg = out.hosts.entry(registry.to_string()).or_default();
    let mut all = mirrors;
    all.extend(reg.mirrors.iter().cloned());
    reg.mirrors = all;
    Ok((out, upstream))
}

fn client_for(config: &RegistryConfig, host: &str, plain_http: bool) -> Result<Client> {
    let hc = config.hosts.get(host).cloned().unwrap_or_default();
    let mut insecure: Vec<String> = config
        .hosts
        .iter()
        .filter(|(_, h)| h.plain_http)
        .map(|(k, _)| k.clone())
        .collect();
    if plain_http || hc.plain_http {
        insecure.push(host.to_string());
    }
    let cfg = ClientConfig {
        protocol: ClientProtocol::HttpsExcept(insecure),
        accept_invalid_certificates: hc.skip_verify,
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        read_timeout: Some(std::time::Duration::from_secs(120)),
        user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    };
    Client::try_from(cfg).map_err(|e| remote_error(&format!("registry client for {host}"), e))
}

async fn connect_host(
    config: &RegistryConfig,
    reference: &Reference,
    access: &Access,
    op: RegistryOperation,
    host: &str,
    mirror: bool,
) -> Result<Remote> {
    let target = if mirror {
        let mut r = reference.clone();
        r.set_mirror_registry(host.to_string());
        r
    } else {
        reference.clone()
    };
    let plain = access.plain_http && !mirror;
    let client = client_for(config, host, plain)?;
    let what = format!("registry {host}");
    let anonymous = client
        .auth(&target, &RegistryAuth::Anonymous, op)
        .await
        .map_err(|e| remote_error(&what, e));
    let needs_credentials = match &anonymous {
        Ok(_) => probe_unauthorized(&client, &target, op).await,
        Err(e) => e.kind() == Kind::Unauthenticated,
    };
    if !needs_credentials {
        anonymous?;
        return Ok(Remote {
            client,
            reference: target,
            host: host.to_string(),
        });
    }
    let creds = match &access.credentials {
        Some(ask) => {
            ask(AuthChallenge {
                host: host.to_string(),
                reference: reference.to_string(),
            })
            .await?
        }
        None => None,
    };
    let Some(creds) = creds else {
        return Err(Error::new(
            Kind::Unauthenticated,
            format!("registry {host} requires credentials; give them with --user USER:PASSWORD"),
        ));
    };
    let client = client_for(config, host, plain)?;
    client
        .auth(
            &target,
            &RegistryAuth::Basic(creds.username.clone(), creds.secret.clone()),
            op,
        )
        .await
        .map_err(|e| remote_error(&what, e))?;
    Ok(Remote {
        client,
        reference: target,
        host: host.to_string(),
    })
}

/// Whether the registry still answers 401 to the (anonymous) client: basic-auth registries
/// give no token to fail on, so `/v2/` tells.
async fn probe_unauthorized(client: &Client, reference: &Reference, op: RegistryOperation) -> bool {
    let probe = if op == RegistryOperation::Pull {
        client
            .fetch_manifest_digest(reference, &RegistryAuth::Anonymous)
            .await
            .err()
    } else {
        client
            .blob_exists(
                reference,
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            )
            .await
            .err()
    };
    match probe {
        Some(e) => remote_error("", e).kind() == Kind::Unauthenticated,
        None => false,
    }
}

impl Remote {
    /// Fetches a manifest or index by the remote reference (or `digest`), capped at
    /// [`oci::MAX_DOCUMENT`] and checked against `digest` when given.
    pub async fn fetch_document(&self, digest: Option<&str>) -> Result<(Vec<u8>, String)> {
        let reference = match digest {
            Some(d) => self.reference.clone_with_digest(d.to_string()),
            None => self.reference.clone(),
        };
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&reference, &RegistryAuth::Anonymous, MANIFEST_TYPES)
            .await
            .map_err(|e| remote_error(&format!("manifest {reference}"), e))?;
        if bytes.len() as i64 > oci::MAX_DOCUMENT {
            return Err(Error::invalid(format!(
                "manifest {reference} is {} bytes; documents larger than {} bytes are refused",
                bytes.len(),
                oci::MAX_DOCUMENT
            )));
        }
        let actual = crate::core::content::digest::Digest::of(&bytes).to_string();
        let wanted = digest
            .map(str::to_string)
            .or_else(|| self.reference.digest().map(str::to_string));
        if let Some(w) = wanted {
            if w != actual {
                return Err(Error::precondition(format!(
                    "manifest {reference} has digest {actual}, expected {w}; the registry served different content"
                )));
            }
        }
        Ok((bytes.to_vec(), actual))
    }

    /// Opens the blob `digest` at byte `offset`. The stream starts at `offset` when the
    /// registry honoured the range, at 0 otherwise (the bool says which).
    pub async fn open_blob(
        &self,
        digest: &str,
        size: i64,
        offset: u64,
    ) -> Result<(
        futures::stream::BoxStream<'static, Result<bytes::Bytes>>,
        bool,
    )> {
        let desc = oci_client::manifest::OciDescriptor {
            media_type: String::new(),
            digest: digest.to_string(),
            size,
            ..Default::default()
        };
        let what = format!("blob {digest}");
        // Always a range request when there are bytes to ask for: a 206 answer is not hashed
        // by oci-client, and berth hashes every byte into the ingest anyway.
        let (stream, ranged): (SizedStream, bool) = if size == 0 {
            let s = self
                .client
                .pull_blob_stream(&self.reference, &desc)
                .await
                .map_err(|e| remote_error(&what, e))?;
            (s, false)
        } else {
            match self
                .client
                .pull_blob_stream_partial(&self.reference, &desc, offset, None)
                .await
                .map_err(|e| remote_error(&what, e))?
            {
                BlobResponse::Full(s) => (s, false),
                BlobResponse::Partial(s) => (s, true),
            }
        };
        let what2 = what.clone();
        let s = stream
            .stream
            .map(move |r| {
                r.map_err(|e| {
                    Error::new(
                        Kind::Unavailable,
                        format!("{what2}: download interrupted: {e}{}", source_chain(&e)),
                    )
                })
            })
            .boxed();
        Ok((s, ranged))
    }

    /// Whether the registry already has `digest`.
    pub async fn has_blob(&self, digest: &str) -> Result<bool> {
        self.client
            .blob_exists(&self.reference, digest)
            .await
            .map_err(|e| remote_error(&format!("blob {digest}"), e))
    }

    /// Uploads a blob from a stream of its bytes.
    pub async fn push_blob_stream(
        &self,
        digest: &str,
        data: futures::stream::BoxStream<'static, oci_client::errors::Result<bytes::Bytes>>,
        size: u64,
    ) -> Result<()> {
        self.client
            .push_blob_stream(&self.reference, data, digest, Some(size))
            .await
            .map(|_| ())
            .map_err(|e| remote_error(&format!("push blob {digest}"), e))
    }

    /// Uploads a manifest or index under `reference` (tag or digest).
    pub async fn push_document(
        &self,
        reference: &Reference,
        body: Vec<u8>,
        media_type: &str,
    ) -> Result<()> {
        let ct = media_type.parse().map_err(|_| {
            Error::invalid(format!("media type {media_type:?} is not a header value"))
        })?;
        self.client
            .push_manifest_raw(reference, body, ct)
            .await
            .map(|_| ())
            .map_err(|e| remote_error(&format!("push manifest {reference}"), e))
    }
}

/// Parses an image reference the way docker and containerd do ("busybox" is
/// docker.io/library/busybox:latest).
pub fn parse_reference(s: &str) -> Result<Reference> {
    crate::core::reference::parse(s)
}

/// The name an image is stored under: the full reference, tag defaulted to latest.
pub fn image_name(r: &Reference) -> String {
    let mut s = format!("{}/{}", r.registry(), r.repository());
    match (r.tag(), r.digest()) {
        (Some(t), Some(d)) => s.push_str(&format!(":{t}@{d}")),
        (Some(t), None) => s.push_str(&format!(":{t}")),
        (None, Some(d)) => s.push_str(&format!("@{d}")),
        (None, None) => s.push_str(":latest"),
    }
    s
}

#[cfg(test)]
mod hosts_dir_tests {
    use super::*;

    #[test]
    fn hosts_toml_mirrors_and_server() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("registry.k8s.io");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("hosts.toml"),
            "server = \"http://127.0.0.1:5000\"\n[host.\"http://127.0.0.1:5000\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
        )
        .unwrap();
        let cfg = RegistryConfig {
            config_path: dir.path().to_path_buf(),
            ..Default::default()
        };
        let (eff, upstream) =
            with_hosts_dir(&cfg, "registry.k8s.io", RegistryOperation::Pull).unwrap();
        assert!(!upstream);
        assert_eq!(eff.hosts["registry.k8s.io"].mirrors, vec!["127.0.0.1:5000"]);
        assert!(eff.hosts["127.0.0.1:5000"].plain_http);
        let (_, upstream) = with_hosts_dir(&cfg, "docker.io", RegistryOperation::Pull).unwrap();
        assert!(upstream);
        std::fs::write(d.join("hosts.toml"), "server = [").unwrap();
        assert!(with_hosts_dir(&cfg, "registry.k8s.io", RegistryOperation::Pull).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalize_like_containerd() {
        let r = parse_reference("busybox").unwrap();
        assert_eq!(image_name(&r), "docker.io/library/busybox:latest");
        let r = parse_reference("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(image_name(&r), "127.0.0.1:5000/a/b:v1");
        assert!(parse_reference("has space").is_err());
        assert!(parse_reference("a/b:bad:tag").is_err());
        assert!(parse_reference("").is_err());
    }

    #[test]
    fn config_parses_hosts() {
        let c: RegistryConfig = toml_like();
        assert_eq!(c.max_concurrent_downloads, 3);
        assert!(c.hosts["127.0.0.1:5000"].plain_http);
    }

    fn toml_like() -> RegistryConfig {
        serde_json::from_str(r#"{"hosts":{"127.0.0.1:5000":{"plain_http":true}}}"#).unwrap()
    }
}
