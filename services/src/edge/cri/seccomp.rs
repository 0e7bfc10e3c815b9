//! The CRI's Localhost seccomp profiles: a file on this host, named by an absolute path
//! (with a `localhost/` prefix in the deprecated annotation form). Profiles themselves
//! live in `crate::core::seccomp`.

use crate::core::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The profile a Localhost reference names, read and checked.
pub fn localhost(reference: &str) -> Result<Value> {
    let path = reference.strip_prefix("localhost/").unwrap_or(reference);
    if !path.starts_with('/') {
        return Err(Error::invalid(format!(
            "seccomp profile {reference:?} must be an absolute path"
        )));
    }
    crate::core::seccomp::load(Path::new(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_profiles_are_absolute_paths() {
        assert!(localhost("relative.json").is_err());
        assert!(localhost("/nonexistent/profile.json").is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.json");
        std::fs::write(&p, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
        assert!(localhost(&format!("localhost/{}", p.display())).is_ok());
        assert!(localhost(p.to_str().unwrap()).is_ok());
    }
}
