//! OCI and Docker image documents: indexes, manifests and configs, parsed with size caps and
//! checked for the confusions attackers use (a document that is both index and manifest, a
//! media type that disagrees with its descriptor).

use crate::core::content::digest::Digest;
use crate::core::error::{Error, Result};
use crate::core::images::Descriptor;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Largest manifest, index or config read into memory.
pub const MAX_DOCUMENT: i64 = 4 << 20;

pub use berth_proto::vocab::chain::chain_ids;
pub use berth_proto::vocab::media::{
    is_index, is_manifest, DOCKER_CONFIG, DOCKER_LIST, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX,
    OCI_MANIFEST,
};

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: String,
}

impl Platform {
    /// The platform this daemon runs containers for.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "aarch64" => ("arm64", "v8"),
            "arm" => ("arm", "v7"),
            "x86" => ("386", ""),
            other => (other, ""),
        };
        Platform {
            architecture: architecture.into(),
            os: std::env::consts::OS.into(),
            variant: variant.into(),
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: String::new(),
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: variant.to_string(),
            }),
            _ => Err(Error::invalid(format!(
                "platform {s:?} is not os/arch[/variant]"
            ))),
        }
    }

    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_empty()
                || other.variant.is_empty()
                || self.variant == other.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DocDescriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl DocDescriptor {
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: self.annotations.clone(),
        }
    }

    fn validate(&self) -> Result<()> {
        Digest::parse(&self.digest)?;
        if self.size < 0 {
            return Err(Error::invalid(format!(
                "descriptor {} has a negative size",
                self.digest
            )));
        }
        Ok(())
    }
}

/// Fields of both kinds, so a document claiming to be both is caught.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyDocument {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<DocDescriptor>>,
    #[serde(default)]
    config: Option<DocDescriptor>,
    #[serde(default)]
    layers: Option<Vec<DocDescriptor>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Index(Vec<DocDescriptor>),
    Manifest {
        config: DocDescriptor,
        layers: Vec<DocDescriptor>,
    },
}

/// Parses an index or manifest that `desc` points at.
pub fn parse_document(desc: &Descriptor, bytes: &[u8]) -> Result<Document> {
    let doc: AnyDocument = serde_json::from_slice(bytes).map_err(|e| {
        Error::invalid(format!(
            "{} is not a valid image document: {e}",
            desc.digest
        ))
    })?;
    if doc.manifests.is_some() && (doc.config.is_some() || doc.layers.is_some()) {
        return Err(Error::invalid(format!(
            "{} is both an index and a manifest; refusing the ambiguous document",
            desc.digest
        )));
    }
    if let Some(mt) = &doc.media_type {
        if !desc.media_type.is_empty() && mt != &desc.media_type {
            return Err(Error::invalid(format!(
                "{} says it is {mt} but its descriptor says {}",
                desc.digest, desc.media_type
            )));
        }
    }
    if let Some(m) = doc.manifests {
        if !is_index(&desc.media_type) && !desc.media_type.is_empty() {
            return Err(Error::invalid(format!(
                "{} is an index but was described as {}",
                desc.digest, desc.media_type
            )));
        }
        for d in &m {
            d.validate()?;
        }
        return Ok(Document::Index(m));
    }
    match (doc.config, doc.layers) {
        (Some(config), layers) => {
            if !is_manifest(&desc.media_type) && !desc.media_type.is_empty() {
                return Err(Error::invalid(format!(
                    "{} is a manifest but was described as {}",
                    desc.digest, desc.media_type
                )));
            }
            config.validate()?;
            let layers = layers.unwrap_or_default();
            for l in &layers {
                l.validate()?;
            }
            Ok(Document::Manifest { config, layers })
        }
        _ => Err(Error::invalid(format!(
            "{} is neither an index nor a manifest",
            desc.digest
        ))),
    }
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub rootfs: RootFs,
}

pub fn parse_config(desc: &DocDescriptor, bytes: &[u8]) -> Result<ImageConfig> {
    let c: ImageConfig = serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(format!("config {} is not valid: {e}", desc.digest)))?;
    for d in &c.rootfs.diff_ids {
        Digest::parse(d)?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(mt: &str) -> Descriptor {
        Descriptor {
            media_type: mt.into(),
            digest: Digest::of(b"x").to_string(),
            size: 1,
            annotations: Default::default(),
        }
    }

    #[test]
    fn both_index_and_manifest_is_refused() {
        let d = Digest::of(b"c").to_string();
        let doc = format!(
            r#"{{"schemaVersion":2,"manifests":[],"config":{{"digest":"{d}","size":1}},"layers":[]}}"#
        );
        let e = parse_document(&desc(OCI_MANIFEST), doc.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("both"), "{e}");
    }

    #[test]
    fn media_type_must_agree() {
        let doc = format!(r#"{{"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(parse_document(&desc(OCI_MANIFEST), doc.as_bytes()).is_err());
        assert!(matches!(
            parse_document(&desc(OCI_INDEX), doc.as_bytes()).unwrap(),
            Document::Index(_)
        ));
    }

    #[test]
    fn bad_digests_in_documents_are_refused() {
        let doc = r#"{"config":{"digest":"sha256:../../x","size":1},"layers":[]}"#;
        assert!(parse_document(&desc(OCI_MANIFEST), doc.as_bytes()).is_err());
    }

    #[test]
    fn chain_ids_match_containerd() {
        let a = Digest::of(b"a").to_string();
        let b = Digest::of(b"b").to_string();
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(
            ids[1],
            Digest::of(format!("{a} {b}").as_bytes()).to_string()
        );
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert!(p.matches(&Platform::parse("linux/arm64").unwrap()));
        assert!(!p.matches(&Platform::parse("linux/amd64").unwrap()));
        assert!(Platform::parse("linux").is_err());
    }
}
