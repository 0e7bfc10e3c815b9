//! The Mount Manager's transforms, named by a mount type's prefix: `format/` fills
//! `{{ … }}` templates from the mounts performed before it, `mkdir/` makes the directories
//! its `X-containerd.mkdir.path=` options name (inside the allowed roots).

use super::{ActiveMount, MountSpec};
use crate::core::error::{Error, Result};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The transforms berth knows, by prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    Format,
    Mkdir,
}

impl Transform {
    pub fn named(prefix: &str) -> Option<Self> {
        match prefix {
            "format" => Some(Transform::Format),
            "mkdir" => Some(Transform::Mkdir),
            _ => None,
        }
    }

    pub fn apply(self, m: MountSpec, done: &[ActiveMount], roots: &[PathBuf]) -> Result<MountSpec> {
        match self {
            Transform::Format => format_mount(m, done),
            Transform::Mkdir => mkdir_mount(m, roots),
        }
    }
}

/// Splits a type into its known transforms and the type left (an unknown prefix stays part
/// of the type, as containerd leaves it).
pub fn split_type(kind: &str) -> (Vec<Transform>, String) {
    let mut out = vec![];
    let mut rest = kind;
    while let Some((prefix, tail)) = rest.split_once('/') {
        match Transform::named(prefix) {
            Some(t) => {
                out.push(t);
                rest = tail;
            }
            None => break,
        }
    }
    (out, rest.to_string())
}

fn format_mount(mut m: MountSpec, done: &[ActiveMount]) -> Result<MountSpec> {
    m.source = fill(&m.source, done)?;
    m.target = fill(&m.target, done)?;
    for o in &mut m.options {
        *o = fill(o, done)?;
    }
    Ok(m)
}

/// Replaces each `{{ func args }}` of `s`: `mount N`, `source N`, `target N` (of the Nth
/// mount performed) and `overlay A B` (mount points A..=B, or A down to B, joined by ':').
pub fn fill(s: &str, done: &[ActiveMount]) -> Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| Error::invalid(format!("template {s:?}: '{{{{' is never closed")))?;
        out.push_str(&call(after[..end].trim(), done, s)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn call(expr: &str, done: &[ActiveMount], whole: &str) -> Result<String> {
    let words: Vec<&str> = expr.split_whitespace().collect();
    let index = |w: &str| -> Result<usize> {
        let i: i64 = w.parse().map_err(|_| {
            Error::invalid(format!("template {whole:?}: {w:?} is not a mount index"))
        })?;
        usize::try_from(i)
            .ok()
            .filter(|&i| i < done.len())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "template {whole:?}: index {i} out of bounds, {} mounts performed before it",
                    done.len()
                ))
            })
    };
    match words.as_slice() {
        ["mount", i] => Ok(done[index(i)?].mount_point.clone()),
        ["source", i] => Ok(done[index(i)?].mount.source.clone()),
        ["target", i] => Ok(done[index(i)?].mount.target.clone()),
        ["overlay", a, b] => {
            let (a, b) = (index(a)?, index(b)?);
            let dirs: Vec<&str> = if a <= b {
                (a..=b).map(|i| done[i].mount_point.as_str()).collect()
            } else {
                (b..=a)
                    .rev()
                    .map(|i| done[i].mount_point.as_str())
                    .collect()
            };
            Ok(dirs.join(":"))
        }
        _ => Err(Error::invalid(format!(
            "template {whole:?}: {expr:?} is not one of mount N, source N, target N, overlay A B"
        ))),
    }
}

const MKDIR_OPTION: &str = "X-containerd.mkdir.";

/// Makes the directories of the `X-containerd.mkdir.path=DIR[:MODE[:UID:GID]]` options and
/// drops those options.
fn mkdir_mount(mut m: MountSpec, roots: &[PathBuf]) -> Result<MountSpec> {
    let mut kept = vec![];
    for o in std::mem::take(&mut m.options) {
        match o.strip_prefix(MKDIR_OPTION) {
            Some(opt) => {
                let value = opt.strip_prefix("path=").ok_or_else(|| {
                    Error::invalid(format!("mkdir option {o:?}: only path= is known"))
                })?;
                mkdir(value, roots)?;
            }
            None => kept.push(o),
        }
    }
    m.options = kept;
    Ok(m)
}

fn mkdir(value: &str, roots: &[PathBuf]) -> Result<()> {
    let parts: Vec<&str> = value.split(':').collect();
    let bad = |what: &str| Error::invalid(format!("mkdir path {value:?}: {what}"));
    let (dir, mode, owner) = match parts.as_slice() {
        [d] => (*d, 0o700, None),
        [d, m] => (*d, parse_mode(m).ok_or_else(|| bad("bad mode"))?, None),
        [d, m, u, g] => (
            *d,
            parse_mode(m).ok_or_else(|| bad("bad mode"))?,
            Some((
                u.parse::<u32>().map_err(|_| bad("bad uid"))?,
                g.parse::<u32>().map_err(|_| bad("bad gid"))?,
            )),
        ),
        _ => return Err(bad("expected DIR[:MODE[:UID:GID]]")),
    };
    let path = Path::new(dir);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(bad("must be an absolute path without '..'"));
    }
    let root = roots
        .iter()
        .find(|r| path.starts_with(r) && path != r.as_path())
        .ok_or_else(|| bad("outside the directories the mount manager may create in"))?;
    // No symbolic link on the way may lead out of the root.
    let mut at = root.clone();
    let rel: Vec<_> = path
        .strip_prefix(root)
        .unwrap_or(path)
        .components()
        .collect();
    for (n, c) in rel.iter().enumerate() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(md) if md.file_type().is_symlink() => {
                return Err(bad("a component is a symbolic link"))
            }
            Ok(md) if n + 1 < rel.len() && !md.is_dir() => {
                return Err(bad("a component is not a directory"))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && n + 1 == rel.len() => {}
            Err(e) => return Err(Error::io(format!("mkdir {dir}"), e)),
        }
    }
    match std::fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // A directory already there is used as it is, never changed: chmod or chown of
            // one (berth's own state directories are inside a root) is refused instead.
            let md =
                std::fs::symlink_metadata(path).map_err(|e| Error::io(format!("stat {dir}"), e))?;
            if !md.is_dir() {
                return Err(bad("exists and is not a directory"));
            }
            if md.permissions().mode() & 0o7777 != mode {
                return Err(Error::precondition(format!(
                    "mkdir path {value:?}: exists with mode {:o}; an existing directory's mode is not changed",
                    md.permissions().mode() & 0o7777
                )));
            }
            if owner.is_some_and(|(u, g)| (md.uid(), md.gid()) != (u, g)) {
                return Err(Error::precondition(format!(
                    "mkdir path {value:?}: exists with owner {}:{}; an existing directory's owner is not changed",
                    md.uid(),
                    md.gid()
                )));
            }
            return Ok(());
        }
        Err(e) => return Err(Error::io(format!("mkdir {dir}"), e)),
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {dir}"), e))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| Error::io(format!("chown {dir}"), e))?;
    }
    Ok(())
}

fn parse_mode(s: &str) -> Option<u32> {
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(mp: &str, src: &str) -> ActiveMount {
        ActiveMount {
            mount: MountSpec {
                kind: "bind".into(),
                source: src.into(),
                target: String::new(),
                options: vec![],
            },
            mounted_at: 0,
            mount_point: mp.into(),
            data: Default::default(),
        }
    }

    #[test]
    fn templates_name_earlier_mounts() {
        let done = [active("/m/1", "/a"), active("/m/2", "/b")];
        assert_eq!(
            fill("lowerdir={{ mount 1 }}/x", &done).unwrap(),
            "lowerdir=/m/2/x"
        );
        assert_eq!(fill("{{source 0}}", &done).unwrap(), "/a");
        assert_eq!(fill("{{ overlay 1 0 }}", &done).unwrap(), "/m/2:/m/1");
        assert_eq!(fill("{{ overlay 0 1 }}", &done).unwrap(), "/m/1:/m/2");
        assert_eq!(fill("plain", &done).unwrap(), "plain");
        for bad in [
            "{{ mount 2 }}",
            "{{ mount -1 }}",
            "{{ nope 0 }}",
            "{{ mount 0",
        ] {
            assert!(fill(bad, &done).is_err(), "{bad}");
        }
    }

    #[test]
    fn types_split_into_known_prefixes() {
        assert_eq!(
            split_type("mkdir/format/overlay"),
            (vec![Transform::Mkdir, Transform::Format], "overlay".into())
        );
        assert_eq!(split_type("fuse/x"), (vec![], "fuse/x".into()));
    }

    #[test]
    fn mkdir_stays_inside_its_roots() {
        let root = tempfile::tempdir().unwrap();
        let roots = [root.path().to_path_buf()];
        let d = root.path().join("d");
        mkdir(&format!("{}:0755", d.display()), &roots).unwrap();
        let md = std::fs::metadata(&d).unwrap();
        assert!(md.is_dir());
        assert_eq!(md.permissions().mode() & 0o777, 0o755);
        assert!(mkdir("/etc/berth-nope", &roots).is_err());
        assert!(mkdir(&format!("{}/../x", d.display()), &roots).is_err());
        std::os::unix::fs::symlink("/tmp", root.path().join("l")).unwrap();
        assert!(mkdir(&format!("{}/l/x", root.path().display()), &roots).is_err());
    }

    /// An existing directory (berth's own state is inside a root) is used, never changed.
    #[test]
    fn mkdir_never_changes_an_existing_directory() {
        let root = tempfile::tempdir().unwrap();
        let roots = [root.path().to_path_buf()];
        let d = root.path().join("state");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        let md = std::fs::metadata(&d).unwrap();
        let (uid, gid) = (md.uid(), md.gid());
        mkdir(&d.display().to_string(), &roots).unwrap();
        mkdir(&format!("{}:0700:{uid}:{gid}", d.display()), &roots).unwrap();
        let err = mkdir(&format!("{}:0777", d.display()), &roots).unwrap_err();
        assert_eq!(err.kind(), crate::core::error::Kind::FailedPrecondition);
        let other = format!("{}:0700:{}:{gid}", d.display(), uid + 1);
        assert_eq!(
            mkdir(&other, &roots).unwrap_err().kind(),
            crate::core::error::Kind::FailedPrecondition
        );
        let md = std::fs::metadata(&d).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o700);
        assert_eq!((md.uid(), md.gid()), (uid, gid));
    }
}
