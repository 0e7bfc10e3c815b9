//! What every core call runs in: the validated [`Namespace`] every core API takes, and the
//! [`Ctx`] of a request (its namespace and, optionally, the lease that holds what it writes).

use crate::core::error::{Error, Result};
use std::fmt;

pub const MAX_LEN: usize = 76;

/// A namespace name matching `^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$`, at most 76 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

impl Namespace {
    pub fn parse(name: &str) -> Result<Self> {
        if is_valid(name) {
            Ok(Namespace(name.to_string()))
        } else {
            Err(Error::invalid(format!(
                "namespace {name:?} is invalid: use letters and digits separated by single '.', '_' or '-', at most {MAX_LEN} characters"
            )))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request's namespace and the lease (if any) that what it creates is added to.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub ns: Namespace,
    pub lease: Option<String>,
}

fn is_valid(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_LEN {
        return false;
    }
    let mut prev_sep = true; // a separator may not start the name
    for b in name.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => prev_sep = false,
            b'.' | b'_' | b'-' if !prev_sep => prev_sep = true,
            _ => return false,
        }
    }
    !prev_sep
}

/// Identifiers (lease ids, container ids) follow the same rule as namespaces.
pub fn validate_identifier(what: &str, id: &str) -> Result<()> {
    if is_valid(id) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} {id:?} is invalid: use letters and digits separated by single '.', '_' or '-', at most {MAX_LEN} characters"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_containerd_style_names() {
        for ok in ["default", "k8s.io", "a", "a-b_c.d", "A1"] {
            assert!(Namespace::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        let long = "a".repeat(MAX_LEN + 1);
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "a/b",
            "../x",
            "a b",
            "ü",
            long.as_str(),
        ] {
            assert!(Namespace::parse(bad).is_err(), "{bad}");
        }
        assert!(Namespace::parse(&"a".repeat(MAX_LEN)).is_ok());
    }
}
