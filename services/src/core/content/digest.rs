//! Digest strings are validated before any path is built from them.

use crate::core::error::{Error, Result};
use berth_snapshotters::hash::Sha256;

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self> {
        let Some((algo, hex)) = s.split_once(':') else {
            return Err(Error::invalid(format!(
                "digest {s:?} is invalid: expected sha256:<64 hex characters>"
            )));
        };
        if algo != "sha256" {
            return Err(Error::invalid(format!(
                "digest {s:?}: unsupported algorithm {algo:?}; only sha256 is supported"
            )));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::invalid(format!(
                "digest {s:?} is invalid: expected 64 lowercase hex characters after sha256:"
            )));
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    pub fn from_hasher(h: &Sha256) -> Self {
        Digest { hex: h.hex() }
    }

    pub fn of(data: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(data);
        Digest::from_hasher(&h)
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_digests_are_rejected() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(Digest::parse(&good).is_ok());
        for bad in [
            "sha256:../../etc/passwd".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}/", "a".repeat(64)),
            format!("md5:{}", "a".repeat(32)),
            "sha256".to_string(),
            String::new(),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        let d = Digest::of(b"hello");
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
    }
}
