//! The CRI's images: pulled with berth's own puller into namespace `k8s.io`, stored under
//! three names as the kubelet expects to find them (tag, repo@digest, and the image id — the
//! config digest), looked up by any of them.

mod fs_info;
mod list;
mod pull;
mod remove;
mod status;

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
