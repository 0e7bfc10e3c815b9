//! Image references (`[host[:port]/]path[:tag][@digest]`), parsed by hand to docker's
//! grammar and normalized as docker and containerd do ("busybox" is
//! docker.io/library/busybox:latest), and the name an image is stored under. The same
//! grammar as berthd's (`services/src/core/reference.rs`), so the CLI refuses what a pull
//! would.

use std::fmt;

/// A reference docker would refuse, shown as berthd shows an invalid argument (so a mistake
/// reads the same whichever side finds it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: invalid argument")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A parsed reference: the registry, the repository within it (docker.io's official images
/// under `library/`), and a tag (`latest` when neither tag nor digest is given) or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
}

/// The name an image is stored under: the full reference, tag defaulted to latest.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => write!(f, ":{t}@{d}"),
            (Some(t), None) => write!(f, ":{t}"),
            (None, Some(d)) => write!(f, "@{d}"),
            (None, None) => write!(f, ":latest"),
        }
    }
}

const MAX_NAME: usize = 255;
const MAX_TAG: usize = 128;
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";

pub fn parse(s: &str) -> Result<Reference> {
    let bad = |why: &str| Error::Invalid(format!("{s:?} is not a valid image reference: {why}"));
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        check_digest(d).map_err(|why| bad(&why))?;
    }
    // A tag follows the last colon after the last slash (a colon before it is a port's).
    let after_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[after_slash..].rfind(':') {
        Some(i) => (&rest[..after_slash + i], Some(&rest[after_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        if !valid_tag(t) {
            return Err(bad(&format!(
                "tag {t:?}: letters, digits, '_', '.' and '-', not starting with '.' or '-', at most {MAX_TAG}"
            )));
        }
    }
    if name.is_empty() {
        return Err(bad("no repository name"));
    }
    if name.len() > MAX_NAME {
        return Err(bad(&format!(
            "the name is longer than {MAX_NAME} characters"
        )));
    }
    // The first component names a registry when it looks like a host: a dot, a port, or
    // localhost (or anything with a capital letter, which a repository cannot have).
    let (domain, path) = match name.split_once('/') {
        Some((first, path))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, path)
        }
        _ => (DOCKER_HUB, name),
    };
    if domain != DOCKER_HUB {
        check_domain(domain).map_err(|why| bad(&why))?;
    }
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad("repository names are lowercase"));
    }
    if let Some(c) = path.split('/').find(|c| !valid_component(c)) {
        return Err(bad(&format!(
            "path component {c:?}: lowercase letters and digits, joined by '.', '_', '__' or dashes"
        )));
    }
    let domain = if domain == DOCKER_HUB_LEGACY {
        DOCKER_HUB
    } else {
        domain
    };
    let repository = if domain == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    let tag = match (tag, digest) {
        (None, None) => Some("latest"),
        (tag, _) => tag,
    };
    Ok(Reference {
        registry: domain.to_string(),
        repository,
        tag: tag.map(str::to_string),
        digest: digest.map(str::to_string),
    })
}

/// `algorithm:hex`, for the algorithms registries use, with the hex length each implies.
fn check_digest(d: &str) -> std::result::Result<(), String> {
    let (algorithm, hex) = d
        .split_once(':')
        .ok_or_else(|| format!("digest {d:?} is not ALGORITHM:HEX"))?;
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        other => return Err(format!("digest algorithm {other:?} is not supported")),
    };
    if hex.len() != want || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("digest {d:?}: {algorithm} takes {want} hex digits"));
    }
    Ok(())
}

fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// Lowercase letters and digits in runs, joined by one '.', one or two '_', or any dashes.
fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|s| s == b'-')) {
            return false;
        }
    }
    true
}

/// `host[:port]`: dot-separated labels of letters, digits and inner dashes.
fn check_domain(d: &str) -> std::result::Result<(), String> {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("registry {d:?}: the port is not a number"));
        }
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    };
    if !host.split('.').all(label_ok) {
        return Err(format!("registry {d:?} is not a host name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = parse(s).unwrap();
        (
            r.registry().to_string(),
            r.repository().to_string(),
            r.tag().map(str::to_string),
            r.digest().map(str::to_string),
        )
    }

    #[test]
    fn normalizes_like_docker() {
        let d = format!("sha256:{}", "a".repeat(64));
        let o = |s: &str| Some(s.to_string());
        let cases = [
            (
                "busybox",
                ("docker.io", "library/busybox", o("latest"), None),
            ),
            (
                "busybox:1.36",
                ("docker.io", "library/busybox", o("1.36"), None),
            ),
            ("user/app", ("docker.io", "user/app", o("latest"), None)),
            (
                "index.docker.io/user/app:v",
                ("docker.io", "user/app", o("v"), None),
            ),
            ("localhost/app", ("localhost", "app", o("latest"), None)),
            (
                "localhost:5000/a/b:v1",
                ("localhost:5000", "a/b", o("v1"), None),
            ),
            (
                "127.0.0.1:5000/a/b",
                ("127.0.0.1:5000", "a/b", o("latest"), None),
            ),
            ("Registry/app", ("Registry", "app", o("latest"), None)),
            (
                "registry.k8s.io/pause:3.9",
                ("registry.k8s.io", "pause", o("3.9"), None),
            ),
            (
                "a__b/c-----d/e.f_g",
                ("docker.io", "a__b/c-----d/e.f_g", o("latest"), None),
            ),
        ];
        for (s, (reg, repo, tag, dig)) in cases {
            assert_eq!(parts(s), (reg.into(), repo.into(), tag, dig), "{s}");
        }
        let r = parts(&format!("quay.io/x/y@{d}"));
        assert_eq!((r.2, r.3), (None, Some(d.clone())));
        let r = parts(&format!("x:v2@{d}"));
        assert_eq!((r.2, r.3), (o("v2"), Some(d)));
    }

    #[test]
    fn names_images_as_pulls_store_them() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parse("busybox").unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            parse("127.0.0.1:5000/a/b:v1").unwrap().to_string(),
            "127.0.0.1:5000/a/b:v1"
        );
        assert_eq!(
            parse(&format!("quay.io/x/y@{d}")).unwrap().to_string(),
            format!("quay.io/x/y@{d}")
        );
        assert_eq!(
            parse(&format!("x:v2@{d}")).unwrap().to_string(),
            format!("docker.io/library/x:v2@{d}")
        );
    }

    #[test]
    fn refuses_what_docker_refuses() {
        let long = format!("a/{}", "b".repeat(MAX_NAME));
        let bad_digest = format!("x@sha256:{}", "a".repeat(63));
        let odd_algorithm = format!("x@md5:{}", "a".repeat(32));
        let long_tag = format!("x:{}", "t".repeat(MAX_TAG + 1));
        for s in [
            "",
            ":tag",
            "has space",
            "a/b:bad:tag",
            "UPPER",
            "host.io/Repo",
            "a//b",
            "a/b/",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "x:.tag",
            "x:",
            "host:port/x",
            "bad_host.io/x",
            "-host.io/x",
            &long,
            &bad_digest,
            &odd_algorithm,
            &long_tag,
            "x@sha256",
        ] {
            assert!(parse(s).is_err(), "{s:?} was accepted");
        }
    }
}
