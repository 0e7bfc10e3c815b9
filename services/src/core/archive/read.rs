//! An archive read once, in order, from a stream, and the index that describes what arrived
//! (the archive's own, or one made from docker's `manifest.json`). Each entry is placed from
//! its header first: too many entries, or one no image archive holds, refuse the archive
//! before it costs an ingest. Small files wait in memory until the archive has been read and
//! counted; large ones go into the content store as they pass (docker's `manifest.json`
//! comes last, so they cannot wait for it).

use super::{index_entries, oci_ref_name, walk, Found, MAX_DEPTH};
use crate::core::content::digest::Digest;
use crate::core::content::Content;
use crate::core::context::{Ctx, Namespace};
use crate::core::error::{Error, Kind, Result};
use crate::core::images::Descriptor;
use crate::core::metadata::Labels;
use crate::core::oci::{
    DocDescriptor, Platform, DOCKER_CONFIG, DOCKER_MANIFEST, MAX_DOCUMENT, OCI_INDEX,
};
use berth_proto::vocab::labels::{IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION};
use berth_proto::vocab::media::{is_index, is_non_distributable, DOCKER_LAYER, DOCKER_LAYER_GZIP};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;

/// Entries (files, directories, links) an archive may hold. Image archives hold a few per
/// blob; the count is checked at every header, before the entry costs anything.
const MAX_ENTRIES: usize = 50_000;
/// The longest path an image archive uses (`blobs/sha512/<128 hex>` is 141 bytes).
const MAX_PATH: usize = 256;
/// Small files wait in memory until the whole archive has been read and counted, so a flood
/// of them is refused before any becomes an ingest: each at most this large...
const MAX_HELD_FILE: u64 = 64 << 10;
/// ...and all of them together at most this large (beyond it, files are ingested as they
/// pass, which costs time in proportion to the bytes sent).
const MAX_HELD_BYTES: u64 = 16 << 20;
/// What the two formats hold, for the error that refuses anything else.
const FORMATS: &str = "an OCI layout holds oci-layout, index.json and blobs/<algorithm>/<digest>; \
a docker save archive manifest.json, repositories, <id>.json and <id>/layer.tar, json, VERSION";

/// One image of a `docker save` archive.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Layout {
    image_layout_version: String,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::invalid(format!("the archive is not usable: {what}"))
}

/// A tar reader's complaint, without the raw header bytes it quotes (binary garbage on the
/// user's terminal).
fn tar_error(e: &std::io::Error) -> Error {
    let text: String = e
        .to_string()
        .chars()
        .take_while(|c| !c.is_control() && *c != '\u{fffd}')
        .take(120)
        .collect();
    bad(format!(
        "it is not a tar archive, or a damaged one ({})",
        text.trim_end_matches([':', ' '])
    ))
}

/// A path inside the archive, with `.` and `..` resolved within the archive's own names.
fn clean(path: &str) -> String {
    let mut out: Vec<&str> = vec![];
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    out.join("/")
}

/// An archive path fit for an error message: a long one keeps its first and last parts
/// (`blobs/…/leaf`), so the reason after it survives the cap on a status message's length;
/// control characters never reach the user's terminal.
fn shown(path: &str) -> String {
    const WHOLE: usize = 96;
    const PART: usize = 40;
    let printable = |s: &str, max: usize| {
        let mut out: String = s
            .chars()
            .take(max)
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect();
        if s.chars().count() > max {
            out.push('…');
        }
        out
    };
    match (path.split_once('/'), path.rsplit_once('/')) {
        _ if path.chars().count() <= WHOLE => printable(path, WHOLE),
        (Some((first, _)), Some((_, last))) => {
            let between = if first.len() + last.len() + 1 < path.len() {
                "/…/"
            } else {
                "/"
            };
            format!(
                "{}{between}{}",
                printable(first, PART),
                printable(last, PART)
            )
        }
        _ => printable(path, WHOLE),
    }
}

/// Where an entry sits in an image archive, decided from its header alone.
#[derive(Debug, PartialEq)]
enum Place {
    /// `oci-layout`, read as it passes.
    Layout,
    /// docker's `manifest.json`, read as it passes.
    DockerManifest,
    /// A file an image may be made of, its digest given when its name is one: blobs,
    /// `index.json`, docker's `<id>.json` configs and `<id>/layer.tar` (or `<id>.tar`) layers.
    Content(Option<Digest>),
    /// Part of the format, never of an image: `repositories`, a docker layer's `json` and
    /// `VERSION`, the directories holding the rest, PAX global headers.
    Skipped,
}

/// Where `path` (cleaned) sits, or why an image archive cannot hold it.
fn place(path: &str, kind: tar::EntryType) -> Result<Place> {
    use tar::EntryType as T;
    let file = matches!(kind, T::Regular | T::Continuous | T::Symlink | T::Link);
    if file {
        if let Some(digest) = named_digest(path) {
            return Ok(Place::Content(Some(digest?)));
        }
    }
    let outside = || {
        bad(format!(
            "{} cannot be part of an image archive ({FORMATS})",
            shown(path)
        ))
    };
    if path.len() > MAX_PATH {
        return Err(outside());
    }
    let parts: Vec<&str> = path.split('/').collect();
    match (kind, parts.as_slice()) {
        (T::XGlobalHeader, _) => Ok(Place::Skipped),
        (T::Directory, [_] | ["blobs", _]) => Ok(Place::Skipped),
        (T::Directory, _) => Err(outside()),
        _ if !file => Err(bad(format!(
            "{} is a {kind:?} entry: an image archive holds files, directories and links",
            shown(path)
        ))),
        (_, ["oci-layout"]) => Ok(Place::Layout),
        (_, ["manifest.json"]) => Ok(Place::DockerManifest),
        (_, ["repositories"] | [_, "json" | "VERSION"]) => Ok(Place::Skipped),
        (_, ["index.json"] | [_, "layer.tar"]) => Ok(Place::Content(None)),
        (_, [name]) if name.ends_with(".json") || name.ends_with(".tar") => {
            Ok(Place::Content(None))
        }
        _ => Err(outside()),
    }
}

/// The digest a `blobs/<algorithm>/<hex>` path names, if it is one.
fn named_digest(path: &str) -> Option<Result<Digest>> {
    let rest = path.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    Some(
        Digest::parse(&format!("{alg}:{hex}"))
            .map_err(|_| bad(format!("{} is not named by a sha256 digest", shown(path)))),
    )
}

fn read_small(entry: &mut impl Read, what: &str) -> Result<Vec<u8>> {
    let mut bytes = vec![];
    entry
        .take(MAX_DOCUMENT as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("read {what} from the archive"), e))?;
    if bytes.len() as i64 > MAX_DOCUMENT {
        return Err(bad(format!("{what} is larger than {MAX_DOCUMENT} bytes")));
    }
    Ok(bytes)
}

/// What the stream held: each file's blob by path, and the two documents kept aside.
#[derive(Default)]
struct Files {
    blobs: HashMap<String, (Digest, i64)>,
    links: Vec<(String, String)>,
    layout: Option<String>,
    docker: Option<Vec<DockerEntry>>,
}

/// Reads the whole archive into the content store; returns the index that describes it.
pub(super) fn read_archive(
    content: &Content,
    ctx: &Ctx,
    source: Box<dyn Read + Send>,
) -> Result<Descriptor> {
    let stream = berth_snapshotters::layer::apply::decompress(source)
        .map_err(|e| bad(format!("cannot read its compression: {e}")))?;
    let mut reader = Reader::new(content, ctx);
    let mut archive = tar::Archive::new(stream);
    let entries = archive.entries().map_err(|e| tar_error(&e))?;
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(bad(format!(
                "it holds more than {MAX_ENTRIES} entries (files, directories and links), more than any image archive needs"
            )));
        }
        reader.entry(n, entry.map_err(|e| tar_error(&e))?)?;
    }
    let files = reader.finish()?;
    match files.layout.as_deref() {
        Some(version) => oci_layout(&files, version),
        None => docker_index(content, ctx, files),
    }
}

fn cut_short(path: &str, got: u64, size: u64) -> Error {
    bad(format!(
        "it ends inside {} ({got} of its {size} bytes): the archive is cut short",
        shown(path)
    ))
}

/// A small file read whole, ingested once the whole archive has been read and counted.
struct Held {
    n: usize,
    path: String,
    expected: Option<Digest>,
    bytes: Vec<u8>,
}

/// The archive's entries as they pass: each placed from its header, then read aside (the
/// two format documents), held (small files), ingested (large ones) or skipped.
struct Reader<'a> {
    content: &'a Content,
    ctx: &'a Ctx,
    /// Names this import's ingest refs apart from another's of the same archive.
    run: String,
    files: Files,
    held: Vec<Held>,
    held_bytes: u64,
    /// Paths of the files and links seen: a second entry of one path is refused.
    seen: HashSet<String>,
}

impl<'a> Reader<'a> {
    fn new(content: &'a Content, ctx: &'a Ctx) -> Self {
        Reader {
            content,
            ctx,
            run: uuid::Uuid::new_v4().simple().to_string(),
            files: Files::default(),
            held: vec![],
            held_bytes: 0,
            seen: HashSet::new(),
        }
    }

    /// Entry `n`, refused before anything is read from it when an image archive cannot
    /// hold it.
    fn entry(&mut self, n: usize, mut entry: tar::Entry<'_, impl Read>) -> Result<()> {
        let path = clean(&String::from_utf8_lossy(&entry.path_bytes()));
        let kind = entry.header().entry_type();
        let place = place(&path, kind)?;
        if place != Place::Skipped && !self.seen.insert(path.clone()) {
            return Err(bad(format!("it holds {} twice", shown(&path))));
        }
        if kind == tar::EntryType::Symlink || kind == tar::EntryType::Link {
            return match place {
                Place::Content(_) => {
                    let target = link_target(&entry, &path, kind);
                    self.files.links.push((path, target));
                    Ok(())
                }
                Place::Skipped => Ok(()),
                _ => Err(bad(format!("{} is a link, not a file", shown(&path)))),
            };
        }
        match place {
            Place::Skipped => {}
            Place::Layout => {
                let raw = read_small(&mut entry, "oci-layout")?;
                let l: Layout = serde_json::from_slice(&raw)
                    .map_err(|e| bad(format!("oci-layout is not valid: {e}")))?;
                self.files.layout = Some(l.image_layout_version);
            }
            Place::DockerManifest => {
                let raw = read_small(&mut entry, "manifest.json")?;
                self.files.docker = Some(serde_json::from_slice(&raw).map_err(|e| {
                    bad(format!("manifest.json is not a docker save manifest: {e}"))
                })?);
            }
            Place::Content(expected) => {
                let size = entry.size();
                self.keep(n, path, expected, size, &mut entry)?;
            }
        }
        Ok(())
    }

    /// A file an image may be made of: held while it is small and the budget allows, else
    /// ingested as it passes.
    fn keep(
        &mut self,
        n: usize,
        path: String,
        expected: Option<Digest>,
        size: u64,
        source: &mut dyn Read,
    ) -> Result<()> {
        if size > MAX_HELD_FILE || self.held_bytes + size > MAX_HELD_BYTES {
            let blob = self.ingest(n, &path, expected, size, source)?;
            self.files.blobs.insert(path, blob);
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(size as usize);
        source
            .take(size)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(format!("read {} from the archive", shown(&path)), e))?;
        if bytes.len() as u64 != size {
            return Err(cut_short(&path, bytes.len() as u64, size));
        }
        self.held_bytes += size;
        self.held.push(Held {
            n,
            path,
            expected,
            bytes,
        });
        Ok(())
    }

    /// File `n` of the archive, `size` bytes from `source`, into the content store; one
    /// named by a digest must hash to it.
    fn ingest(
        &self,
        n: usize,
        path: &str,
        expected: Option<Digest>,
        size: u64,
        source: &mut dyn Read,
    ) -> Result<(Digest, i64)> {
        let reference = format!("archive-{}-{n}", self.run);
        let blob = self
            .content
            .ingest_expected_sync(self.ctx, &reference, expected.clone(), Labels::new(), |w| {
                let got = copy_into(source, w, path, &reference)?;
                if got != size {
                    return Err(cut_short(path, got, size));
                }
                Ok(())
            })
            .map_err(|e| match (&expected, e.kind()) {
                (Some(d), Kind::FailedPrecondition) => bad(format!(
                    "{} does not hold {d}: its bytes hash to something else",
                    shown(path)
                )),
                _ => e,
            })?;
        Ok((Digest::parse(&blob.digest)?, blob.size))
    }

    /// Once the whole archive is read and counted: refuses one of neither format, then
    /// ingests the files held and points each link at its target's blob.
    fn finish(mut self) -> Result<Files> {
        if self.files.layout.is_none() && self.files.docker.is_none() {
            return Err(bad(
                "it is neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)",
            ));
        }
        for h in std::mem::take(&mut self.held) {
            let blob = self.ingest(
                h.n,
                &h.path,
                h.expected,
                h.bytes.len() as u64,
                &mut h.bytes.as_slice(),
            )?;
            self.files.blobs.insert(h.path, blob);
        }
        let mut files = self.files;
        for (name, target) in std::mem::take(&mut files.links) {
            if let Some(b) = files.blobs.get(&target).cloned() {
                files.blobs.insert(name, b);
            }
        }
        Ok(files)
    }
}

/// Where a link entry points, as an archive path: a symlink is relative to its own
/// directory, a hard link names an archive path.
/// Copies an archive file into its ingest; a failed read names the archive's file, a failed
/// write (a full disk above all) the ingest it was going into.
fn copy_into(
    source: &mut dyn Read,
    w: &mut dyn std::io::Write,
    path: &str,
    reference: &str,
) -> Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0u64;
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::io(
                    format!("read {} from the archive", shown(path)),
                    e,
                ))
            }
        };
        w.write_all(&buf[..n]).map_err(|e| {
            Error::io(
                format!(
                    "write {} into the content store (ingest {reference})",
                    shown(path)
                ),
                e,
            )
        })?;
        got += n as u64;
    }
}

fn link_target(entry: &tar::Entry<'_, impl Read>, path: &str, kind: tar::EntryType) -> String {
    let target = entry
        .link_name_bytes()
        .map(|t| String::from_utf8_lossy(&t).into_owned())
        .unwrap_or_default();
    if kind == tar::EntryType::Symlink {
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        clean(&format!("{dir}/{target}"))
    } else {
        clean(&target)
    }
}

fn oci_layout(files: &Files, version: &str) -> Result<Descriptor> {
    if version != "1.0.0" {
        return Err(bad(format!(
            "OCI image layout version {version:?} is not 1.0.0"
        )));
    }
    let (digest, size) = files
        .blobs
        .get("index.json")
        .ok_or_else(|| bad("an OCI image layout without index.json"))?;
    Ok(Descriptor {
        media_type: OCI_INDEX.into(),
        digest: digest.to_string(),
        size: *size,
        annotations: Default::default(),
    })
}

/// Ingests a document berth made (a manifest or index for a docker save archive).
fn put_document(
    content: &Content,
    ctx: &Ctx,
    media_type: &str,
    doc: &serde_json::Value,
) -> Result<Descriptor> {
    let bytes = serde_json::to_vec(doc).map_err(|e| Error::invalid(e.to_string()))?;
    let digest = Digest::of(&bytes);
    content.ingest_expected_sync(
        ctx,
        &format!("archive-{digest}"),
        Some(digest.clone()),
        Labels::new(),
        |w| {
            w.write_all(&bytes)
                .map_err(|e| Error::io("write a document", e))
        },
    )?;
    Ok(Descriptor {
        media_type: media_type.into(),
        digest: digest.to_string(),
        size: bytes.len() as i64,
        annotations: Default::default(),
    })
}

/// The index of a `docker save` archive: a schema 2 manifest per image, one entry per tag
/// (named as containerd names them), the platform taken from the config.
fn docker_index(content: &Content, ctx: &Ctx, files: Files) -> Result<Descriptor> {
    let blob = |p: &str| {
        files.blobs.get(&clean(p)).cloned().ok_or_else(|| {
            bad(format!(
                "manifest.json names {}, which the archive lacks",
                shown(p)
            ))
        })
    };
    let mut entries = vec![];
    for image in files.docker.iter().flatten() {
        let (cfg, cfg_size) = blob(&image.config)?;
        let cfg_bytes =
            content.read_document_sync(&ctx.ns, &cfg.to_string(), cfg_size, MAX_DOCUMENT)?;
        let cfg_desc = DocDescriptor {
            media_type: DOCKER_CONFIG.into(),
            digest: cfg.to_string(),
            size: cfg_size,
            annotations: BTreeMap::new(),
            platform: None,
        };
        let config = crate::core::oci::parse_config(&cfg_desc, &cfg_bytes)?;
        let mut layers = vec![];
        for l in &image.layers {
            let (d, size) = blob(l)?;
            let (mut f, _) = content.open_blob_sync(&ctx.ns, &d.to_string())?;
            let mut head = [0u8; 4];
            let n = f
                .read(&mut head)
                .map_err(|e| Error::io("read a layer", e))?;
            let media = if berth_snapshotters::layer::apply::is_compressed(&head[..n]) {
                DOCKER_LAYER_GZIP
            } else {
                DOCKER_LAYER
            };
            layers.push(
                serde_json::json!({"mediaType": media, "digest": d.to_string(), "size": size}),
            );
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": cfg.to_string(), "size": cfg_size},
            "layers": layers,
        });
        let m = put_document(content, ctx, DOCKER_MANIFEST, &manifest)?;
        let mut entry = serde_json::json!({
            "mediaType": m.media_type, "digest": m.digest, "size": m.size,
        });
        if !config.os.is_empty() {
            entry["platform"] =
                serde_json::json!({"os": config.os, "architecture": config.architecture});
        }
        let tags = image.repo_tags.clone().unwrap_or_default();
        if tags.is_empty() {
            entries.push(entry.clone());
        }
        for tag in tags {
            let reference = crate::core::registry::parse_reference(&tag).map_err(|e| {
                bad(format!(
                    "manifest.json has a tag berth cannot use ({e}); nothing was imported"
                ))
            })?;
            let name = crate::core::registry::image_name(&reference);
            let mut e = entry.clone();
            e["annotations"] = serde_json::json!({
                IMAGE_NAME_ANNOTATION: name, REF_NAME_ANNOTATION: oci_ref_name(&name),
            });
            entries.push(e);
        }
    }
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    put_document(content, ctx, OCI_INDEX, &index)
}

/// The archive's entries, each checked whole for the platforms wanted (all when empty): its
/// documents readable, its layers present (a non-distributable one may be missing); the
/// documents are labelled with their parts (see [`super::label_parts`]), the archive's own
/// index with the entries.
pub(super) fn checked_entries(
    content: &Content,
    ns: &Namespace,
    index: &Descriptor,
    platforms: &[Platform],
) -> Result<Vec<DocDescriptor>> {
    let entries = index_entries(content, ns, index)?;
    let keep = |p: Option<&Platform>| {
        platforms.is_empty() || p.is_none_or(|p| platforms.iter().any(|w| w.matches(p)))
    };
    let mut top = Found::default();
    top.indexes.push((
        index.clone(),
        entries
            .iter()
            .filter(|e| keep(e.platform.as_ref()))
            .map(DocDescriptor::descriptor)
            .collect(),
    ));
    super::label_parts(content, ns, &top)?;
    for e in &entries {
        let mut found = Found::default();
        walk(content, ns, e, &keep, 0, &mut found)?;
        for (m, _, layers) in &found.manifests {
            for l in layers {
                if !is_non_distributable(&l.media_type) && !content.has_blob_sync(ns, &l.digest)? {
                    return Err(bad(format!(
                        "manifest {} names layer {}, which the archive lacks",
                        m.digest, l.digest
                    )));
                }
            }
        }
        super::label_parts(content, ns, &found)?;
    }
    Ok(entries)
}

/// The manifest of `entry` for `platform`, None when it has none.
pub(super) fn manifest_for(
    content: &Content,
    ns: &Namespace,
    entry: &DocDescriptor,
    platform: &Platform,
    depth: usize,
) -> Result<Option<Descriptor>> {
    if entry
        .platform
        .as_ref()
        .is_some_and(|p| !platform.matches(p))
    {
        return Ok(None);
    }
    if !is_index(&entry.media_type) {
        return Ok(Some(entry.descriptor()));
    }
    if depth >= MAX_DEPTH {
        return Err(bad("its indexes nest too deeply"));
    }
    for child in index_entries(content, ns, &entry.descriptor())? {
        if let Some(m) = manifest_for(content, ns, &child, platform, depth + 1)? {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_placed_from_their_headers() {
        use tar::EntryType as T;
        let hex = "c".repeat(64);
        let blob = format!("blobs/sha256/{hex}");
        assert!(matches!(
            place(&blob, T::Regular),
            Ok(Place::Content(Some(_)))
        ));
        for (path, kind, want) in [
            ("oci-layout", T::Regular, Place::Layout),
            ("manifest.json", T::Regular, Place::DockerManifest),
            ("index.json", T::Regular, Place::Content(None)),
            (&format!("{hex}.json"), T::Regular, Place::Content(None)),
            ("aaaa/layer.tar", T::Symlink, Place::Content(None)),
            ("aaaa/VERSION", T::Regular, Place::Skipped),
            ("repositories", T::Regular, Place::Skipped),
            ("", T::Directory, Place::Skipped),
            ("blobs/sha256", T::Directory, Place::Skipped),
            ("aaaa", T::Directory, Place::Skipped),
        ] {
            assert_eq!(place(path, kind).unwrap(), want, "{path}");
        }
        for (path, kind) in [
            ("etc/passwd", T::Regular),
            ("notes.txt", T::Regular),
            ("a/b/layer.tar", T::Regular),
            ("blobs/sha256/x/y", T::Directory),
            ("dev", T::Fifo),
            (&format!("{}.json", "n".repeat(300)), T::Regular),
        ] {
            assert!(place(path, kind).is_err(), "{path} {kind:?}");
        }
        let deep = format!("blobs/{}leaf", "nested/".repeat(400));
        let e = place(&deep, T::Regular).unwrap_err().to_string();
        assert!(
            e.contains(": blobs/…/leaf is not named by a sha256 digest"),
            "{e}"
        );
    }

    #[test]
    fn long_paths_are_shown_by_their_first_and_last_parts() {
        assert_eq!(shown("blobs/sha256/abc"), "blobs/sha256/abc");
        let deep = format!("a/{}z", "b/".repeat(100));
        assert_eq!(shown(&deep), "a/…/z");
        let wide = format!("{}/{}", "x".repeat(100), "y".repeat(100));
        let s = shown(&wide);
        assert!(
            s.starts_with("xxx") && s.ends_with("y…") && !s.contains("/…/"),
            "{s}"
        );
        assert!(s.chars().count() < 90, "{s}");
        assert_eq!(shown("a\nb"), "a\u{fffd}b");
    }

    #[test]
    fn archive_paths_resolve_inside_the_archive() {
        assert_eq!(clean("./blobs/sha256/../sha256/ab"), "blobs/sha256/ab");
        assert_eq!(clean("../../etc/passwd"), "etc/passwd");
        assert!(named_digest("blobs/sha256/zz").unwrap().is_err());
        assert!(named_digest("abc/layer.tar").is_none());
        let hex = "c".repeat(64);
        assert_eq!(
            named_digest(&format!("blobs/sha256/{hex}"))
                .unwrap()
                .unwrap()
                .to_string(),
            format!("sha256:{hex}")
        );
    }
}
