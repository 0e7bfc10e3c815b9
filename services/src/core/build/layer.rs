//! Files for a build: the context tar unpacked (confined, like any layer) into a private
//! directory, and COPY/ADD written as layer tars straight from it. Source paths are resolved
//! by the kernel inside the context, as Docker does: `..` that climbs out is refused, and a
//! symlink in the context (`evil -> /etc`, `up -> ../../..`) leads to the context's own
//! files, never the host's. Trees are walked without following symlinks.

use crate::core::content::Content;
use crate::core::context::Ctx;
use crate::core::context::Namespace;
use crate::core::diff::{Hashing, UNCOMPRESSED_LABEL};
use crate::core::error::{Error, Result};
use crate::core::metadata::content::BlobRecord;
use crate::core::metadata::Labels;
use berth_snapshotters::layer::{self, root::clean, Whiteouts};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// Unpacks the context tar `digest` into `dir`.
pub fn extract_context(content: &Content, ns: &Namespace, digest: &str, dir: &Path) -> Result<()> {
    let (file, _) = content.open_blob_sync(ns, digest)?;
    layer::apply(std::io::BufReader::new(file), dir, Whiteouts::Delete)
        .map_err(|e| Error::invalid(format!("the build context is not a usable tar: {e}")))?;
    Ok(())
}

pub struct CopyPlan {
    pub sources: Vec<String>,
    pub dest: String,
    pub workdir: String,
    pub chown: Option<(u32, u32)>,
    /// ADD: local tar archives are extracted at the destination.
    pub extract_archives: bool,
}

/// A source path relative to the context, refusing `..` that would leave it.
fn relative(src: &str) -> Result<PathBuf> {
    let mut rel = PathBuf::new();
    for c in Path::new(src).components() {
        match c {
            Component::Normal(n) => rel.push(n),
            // A `..` with nothing left to pop leaves the context.
            Component::ParentDir if !rel.pop() => {
                return Err(Error::invalid(format!(
                    "{src:?} is outside the build context"
                )));
            }
            _ => {}
        }
    }
    Ok(rel)
}

/// Where `src` leads inside the context, every symlink resolved by the kernel within it.
fn resolve(context: &layer::root::Root, src: &str) -> Result<PathBuf> {
    let rel = relative(src)?;
    context.resolve(&rel).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) => Error::invalid(format!(
            "{src}: no such file or directory in the build context"
        )),
        _ => Error::io(format!("resolve {src} in the build context"), e),
    })
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git@")
}

/// Writes the layer for a COPY/ADD into `out` (an uncompressed tar); returns its diffID.
pub fn write_copy_layer(context: &Path, plan: &CopyPlan, out: &Path) -> Result<String> {
    let dest = if plan.dest.starts_with('/') {
        plan.dest.clone()
    } else {
        format!("{}/{}", plan.workdir.trim_end_matches('/'), plan.dest)
    };
    let into_dir = plan.dest.ends_with('/') || plan.sources.len() > 1;
    let dest_rel = clean(Path::new(&dest)).unwrap_or_default();
    let file = std::fs::File::create(out).map_err(|e| Error::io("create a layer", e))?;
    let mut hashing = Hashing::new(std::io::BufWriter::new(file));
    let root = layer::root::Root::open(context)
        .map_err(|e| Error::invalid(format!("the build context cannot be opened: {e}")))?;
    {
        let mut b = tar::Builder::new(&mut hashing);
        b.follow_symlinks(false);
        let mut written_dirs = std::collections::HashSet::new();
        let mut parents =
            |b: &mut tar::Builder<&mut Hashing<std::io::BufWriter<std::fs::File>>>,
             path: &Path|
             -> Result<()> {
                let mut acc = PathBuf::new();
                for c in path.components() {
                    acc.push(c);
                    if written_dirs.insert(acc.clone()) {
                        let mut h = header(tar::EntryType::Directory, 0, 0o755, plan.chown, 0);
                        b.append_data(&mut h, &acc, std::io::empty())
                            .map_err(|e| Error::io("write a layer", e))?;
                    }
                }
                Ok(())
            };
        for src in &plan.sources {
            if is_url(src) {
                return Err(Error::invalid(format!(
                    "{src}: remote sources are not supported; put the file in the context"
                )));
            }
            let path = resolve(&root, src)?;
            let md = std::fs::symlink_metadata(&path).map_err(|_| {
                Error::invalid(format!(
                    "{src}: no such file or directory in the build context"
                ))
            })?;
            if md.is_dir() {
                parents(&mut b, &dest_rel)?;
                append_tree(&mut b, &path, &dest_rel, plan.chown)?;
            } else if plan.extract_archives && md.is_file() && is_archive(&path) {
                parents(&mut b, &dest_rel)?;
                append_archive(&mut b, &path, &dest_rel, plan.chown)?;
            } else {
                let name = Path::new(src)
                    .file_name()
                    .map(PathBuf::from)
                    .unwrap_or_default();
                let target = if into_dir {
                    dest_rel.join(name)
                } else {
                    dest_rel.clone()
                };
                if let Some(p) = target.parent() {
                    parents(&mut b, p)?;
                }
                append_one(&mut b, &path, &target, &md, plan.chown)?;
            }
        }
        b.finish().map_err(|e| Error::io("write a layer", e))?;
    }
    hashing.flush().map_err(|e| Error::io("write a layer", e))?;
    Ok(hashing.digest())
}

fn header(
    kind: tar::EntryType,
    size: u64,
    mode: u32,
    chown: Option<(u32, u32)>,
    mtime: u64,
) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(mtime);
    let (u, g) = chown.unwrap_or((0, 0));
    h.set_uid(u as u64);
    h.set_gid(g as u64);
    h
}

fn append_one<W: Write>(
    b: &mut tar::Builder<W>,
    path: &Path,
    target: &Path,
    md: &std::fs::Metadata,
    chown: Option<(u32, u32)>,
) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = md.permissions().mode() & 0o7777;
    let mtime = md.mtime().max(0) as u64;
    let io = |e| Error::io(format!("add {} to a layer", path.display()), e);
    if md.file_type().is_symlink() {
        let link = std::fs::read_link(path).map_err(io)?;
        let mut h = header(tar::EntryType::Symlink, 0, 0o777, chown, mtime);
        b.append_link(&mut h, target, link).map_err(io)?;
    } else if md.is_dir() {
        let mut h = header(tar::EntryType::Directory, 0, mode, chown, mtime);
        b.append_data(&mut h, target, std::io::empty())
            .map_err(io)?;
    } else if md.is_file() {
        let f = std::fs::File::open(path).map_err(io)?;
        let mut h = header(tar::EntryType::Regular, md.len(), mode, chown, mtime);
        b.append_data(&mut h, target, f).map_err(io)?;
    }
    Ok(())
}

/// The contents of `dir` under `target`, in a stable order.
fn append_tree<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &Path,
    target: &Path,
    chown: Option<(u32, u32)>,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("read {}", dir.display()), e))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let md = std::fs::symlink_metadata(&path)
            .map_err(|err| Error::io(format!("stat {}", path.display()), err))?;
        let t = target.join(e.file_name());
        append_one(b, &path, &t, &md, chown)?;
        if md.is_dir() {
            append_tree(b, &path, &t, chown)?;
        }
    }
    Ok(())
}

fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    layer::apply::is_compressed(&head[..n]) || (n >= 262 && &head[257..262] == b"ustar")
}

/// ADD of a local archive: its entries, cleaned, under `target`.
fn append_archive<W: Write>(
    b: &mut tar::Builder<W>,
    path: &Path,
    target: &Path,
    chown: Option<(u32, u32)>,
) -> Result<()> {
    let f = std::fs::File::open(path).map_err(|e| Error::io("open an archive", e))?;
    let rd = layer::apply::decompress(f).map_err(|e| Error::invalid(e.to_string()))?;
    let mut archive = tar::Archive::new(rd);
    let bad = |e: std::io::Error| {
        Error::invalid(format!("{} is not a valid archive: {e}", path.display()))
    };
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry.path().map_err(bad)?.into_owned();
        let Some(rel) = clean(&name) else { continue };
        let mut h = entry.header().clone();
        if let Some((u, g)) = chown {
            h.set_uid(u as u64);
            h.set_gid(g as u64);
        }
        let t = target.join(rel);
        match h.entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(bad)?
                    .unwrap_or_default()
                    .into_owned();
                b.append_link(&mut h, &t, link).map_err(bad)?;
            }
            _ => {
                b.append_data(&mut h, &t, &mut entry).map_err(bad)?;
            }
        }
    }
    Ok(())
}

/// Stores the tar at `path` gzip-compressed as a blob labelled with its diffID (unless the
/// same bytes are there already).
pub fn store_gzip(content: &Content, ctx: &Ctx, path: &Path, diff_id: &str) -> Result<BlobRecord> {
    let labels = Labels::from([(UNCOMPRESSED_LABEL.to_string(), diff_id.to_string())]);
    content.ingest_sync(ctx, &format!("build-layer-{diff_id}"), labels, |w| {
        let mut f = std::fs::File::open(path).map_err(|e| Error::io("read a layer", e))?;
        let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::new(6));
        std::io::copy(&mut f, &mut gz).map_err(|e| Error::io("compress a layer", e))?;
        gz.finish().map_err(|e| Error::io("compress a layer", e))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_cannot_leave_the_context() {
        assert_eq!(relative("a/../b").unwrap(), Path::new("b"));
        assert_eq!(relative("/abs/x").unwrap(), Path::new("abs/x"));
        assert!(relative("../etc/passwd").is_err());
        assert!(relative("a/../../x").is_err());
    }

    /// Every file name in a layer tar, with its contents.
    fn entries(tar_path: &Path) -> Vec<(String, Vec<u8>)> {
        let mut a = tar::Archive::new(std::fs::File::open(tar_path).unwrap());
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let mut data = vec![];
                e.read_to_end(&mut data).unwrap();
                (name, data)
            })
            .collect()
    }

    #[test]
    fn symlinks_in_the_context_never_reach_host_files() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        let host = dir.path().join("host");
        std::fs::create_dir_all(ctx.join("etc")).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("shadow"), "host secret").unwrap();
        std::fs::write(ctx.join("etc/shadow"), "context file").unwrap();
        std::fs::write(ctx.join("plain"), "plain").unwrap();
        std::os::unix::fs::symlink(&host, ctx.join("abs")).unwrap();
        std::os::unix::fs::symlink("/etc", ctx.join("evil")).unwrap();
        std::os::unix::fs::symlink("../../../../../..", ctx.join("up")).unwrap();
        std::os::unix::fs::symlink("plain", ctx.join("link")).unwrap();
        let hostname = std::fs::read("/etc/hostname").ok();

        let copy = |src: &str, add: bool| {
            let out = dir.path().join("layer.tar");
            let plan = CopyPlan {
                sources: vec![src.into()],
                dest: "/x".into(),
                workdir: "/".into(),
                chown: None,
                extract_archives: add,
            };
            write_copy_layer(&ctx, &plan, &out).map(|_| entries(&out))
        };
        // Absolute and relative symlinks resolve inside the context...
        for src in ["evil/shadow", "up/etc/shadow"] {
            let got = copy(src, false).unwrap();
            assert_eq!(got, [("x".to_string(), b"context file".to_vec())], "{src}");
        }
        // ...where the host's paths do not exist.
        let abs = copy("abs/shadow", false).unwrap_err();
        assert!(abs.to_string().contains("no such file"), "{abs}");
        let hostname_copy = copy("evil/hostname", true);
        assert!(hostname_copy.is_err());
        if let (Some(h), Ok(got)) = (hostname, &hostname_copy) {
            assert!(got.iter().all(|(_, d)| d != &h));
        }
        // A symlink inside the context to a file inside it is followed, as Docker does.
        let got = copy("link", false).unwrap();
        assert_eq!(got, [("x".to_string(), b"plain".to_vec())]);
        // A directory copied whole keeps its symlinks as symlinks.
        let got = copy(".", false).unwrap();
        assert!(
            got.iter().any(|(n, d)| n == "x/evil" && d.is_empty()),
            "{got:?}"
        );
        assert!(!got.iter().any(|(_, d)| d == b"host secret"));
    }
}
