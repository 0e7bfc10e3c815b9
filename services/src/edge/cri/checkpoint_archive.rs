//! The container checkpoint archive as CRI-O and containerd 2.x write it for the kubelet
//! (and `checkpointctl` reads it): its member names, the `config.dump` record, and the
//! writable layer's change split into `rootfs-diff.tar` (what was added or changed) and
//! `deleted.files` (a JSON list of absolute paths removed from the image). Reading one
//! back: only regular files and directories are unpacked, and a diff is turned back into
//! a layer (deletions as whiteouts) for the snapshot of the restored container.

use crate::core::error::{Error, Result};
use berth_snapshotters::whiteout::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// CRIU's image directory.
pub const CHECKPOINT_DIR: &str = "checkpoint";
pub const CONFIG_DUMP: &str = "config.dump";
pub const SPEC_DUMP: &str = "spec.dump";
/// The CRI ContainerStatus at checkpoint time.
pub const STATUS_DUMP: &str = "status.dump";
/// containerd's own record of the container's state (created, started, pid...).
pub const STATUS: &str = "status";
pub const ROOTFS_DIFF: &str = "rootfs-diff.tar";
pub const DELETED_FILES: &str = "deleted.files";
/// CRIU's statistics of the dump, read by `checkpointctl show --stats`.
pub const STATS_DUMP: &str = "stats-dump";
pub const CONTAINER_LOG: &str = "container.log";

/// Annotations on an OCI image's index or manifest that mark it as holding a checkpoint
/// archive: checkpointctl's (containerd, Podman, buildah) and CRI-O's older one.
pub const CHECKPOINT_ANNOTATIONS: [&str; 2] = [
    "org.criu.checkpoint.container.name",
    "io.kubernetes.cri-o.annotations.checkpoint.name",
];

/// `config.dump`: who the container was, in checkpointctl's field names.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct ConfigDump {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(
        rename = "rootfsImage",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub rootfs_image: String,
    #[serde(
        rename = "rootfsImageRef",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub rootfs_image_ref: String,
    #[serde(
        rename = "rootfsImageName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub rootfs_image_name: String,
    #[serde(rename = "runtime", default, skip_serializing_if = "String::is_empty")]
    pub runtime: String,
    #[serde(rename = "createdTime", default)]
    pub created_time: String,
    #[serde(rename = "checkpointedTime", default)]
    pub checkpointed_time: String,
}

fn tar_err(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(what.to_string(), e)
}

/// A layer's name as an absolute path inside the rootfs ("./etc/x" -> "/etc/x").
fn rooted(p: &Path) -> String {
    let rel: PathBuf = p
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    format!("/{}", rel.display())
}

/// Splits an OCI diff layer (`diff`, uncompressed) into `out`, the layer without its
/// whiteouts, and the list of deleted paths. An opaque directory deletes what `lower` (the
/// image's tree, when it is at hand) has there and the diff does not bring back.
pub fn split_diff(diff: impl Read, out: impl Write, lower: Option<&Path>) -> Result<Vec<String>> {
    let read = tar_err("read the rootfs diff");
    let write = tar_err("write rootfs-diff.tar");
    let mut kept = BTreeSet::new();
    let (mut deleted, mut opaque) = (vec![], vec![]);
    let mut b = tar::Builder::new(out);
    let mut a = tar::Archive::new(diff);
    for e in a.entries().map_err(&read)? {
        let mut e = e.map_err(&read)?;
        let path = e.path().map_err(&read)?.into_owned();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        match name.as_deref() {
            Some(OPAQUE_MARKER) => {
                opaque.push(dir);
                continue;
            }
            Some(n) if n.starts_with(WHITEOUT_PREFIX) => {
                deleted.push(rooted(&dir.join(&n[WHITEOUT_PREFIX.len()..])));
                continue;
            }
            _ => {}
        }
        kept.insert(rooted(&path));
        let mut h = e.header().clone();
        match e.link_name().map_err(&read)? {
            Some(to) => b.append_link(&mut h, &path, to).map_err(&write)?,
            None => b.append_data(&mut h, &path, &mut e).map_err(&write)?,
        }
    }
    b.into_inner()
        .and_then(|mut out| out.flush())
        .map_err(&write)?;
    if let Some(lower) = lower {
        for dir in opaque {
            let Ok(names) = std::fs::read_dir(lower.join(&dir)) else {
                continue;
            };
            for n in names.flatten() {
                let p = rooted(&dir.join(n.file_name()));
                if !kept.contains(&p) {
                    deleted.push(p);
                }
            }
        }
    }
    deleted.sort();
    deleted.dedup();
    Ok(deleted)
}

/// The deleted paths as a layer of whiteouts, to apply after `rootfs-diff.tar`. A path
/// that is not a plain absolute path inside the rootfs (`..`, empty) is refused.
pub fn deletions_layer(deleted: &[String]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(vec![]);
    let write = tar_err("write the deletions layer");
    for d in deleted {
        let p = Path::new(d);
        let plain = p
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        let (Some(name), Some(dir), true) = (p.file_name(), p.parent(), plain) else {
            return Err(Error::invalid(format!(
                "{DELETED_FILES} names {d:?}: not a path inside the container"
            )));
        };
        let rel = dir
            .strip_prefix("/")
            .unwrap_or(dir)
            .join(format!("{WHITEOUT_PREFIX}{}", name.to_string_lossy()));
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o600);
        h.set_size(0);
        b.append_data(&mut h, rel, std::io::empty())
            .map_err(&write)?;
    }
    b.into_inner().map_err(&write)
}

/// A layer stream as it was written: gzip (containerd's rootfs-diff.tar is the gzip layer
/// of its checkpoint image) or plain tar (CRI-O's).
pub fn decompressed(mut r: impl Read + 'static) -> Result<Box<dyn Read>> {
    let mut magic = [0u8; 2];
    let mut n = 0;
    while n < 2 {
        match r.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read rootfs-diff.tar", e)),
        }
    }
    let whole = std::io::Cursor::new(magic[..n].to_vec()).chain(r);
    Ok(if magic[..n] == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(whole))
    } else {
        Box::new(whole)
    })
}

/// Unpacks a checkpoint archive into `dir`: regular files and directories only (an archive
/// never needs more, and a link could point restore's readers elsewhere); entries that would
/// land outside `dir` are refused by the tar crate. `skip` names top-level members to leave
/// out.
pub fn unpack(r: impl Read, dir: &Path, skip: &[&str]) -> Result<()> {
    let read = tar_err("read the checkpoint archive");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let mut a = tar::Archive::new(r);
    a.set_preserve_permissions(true);
    for e in a.entries().map_err(&read)? {
        let mut e = e.map_err(&read)?;
        let kind = e.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        let path = e.path().map_err(&read)?.into_owned();
        let top = path
            .components()
            .find(|c| matches!(c, Component::Normal(_)))
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        if top.is_some_and(|t| skip.contains(&t.as_str())) {
            continue;
        }
        e.unpack_in(dir).map_err(|err| {
            Error::io(
                format!("unpack {} from the checkpoint archive", path.display()),
                err,
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(vec![]);
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            if name.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
            } else {
                h.set_mode(0o644);
            }
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn names(tar_bytes: &[u8]) -> Vec<String> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn whiteouts_become_deleted_files_and_the_rest_stays_a_layer() {
        let diff = layer(&[
            ("etc/", b""),
            ("etc/motd", b"hello"),
            ("etc/.wh.passwd", b""),
            ("var/.wh.log", b""),
        ]);
        let mut out = vec![];
        let deleted = split_diff(diff.as_slice(), &mut out, None).unwrap();
        assert_eq!(deleted, ["/etc/passwd", "/var/log"]);
        assert_eq!(names(&out), ["etc/", "etc/motd"]);
    }

    #[test]
    fn an_opaque_directory_deletes_what_the_image_had_there_but_not_what_came_back() {
        let lower = tempfile::tempdir().unwrap();
        std::fs::create_dir(lower.path().join("data")).unwrap();
        for f in ["old", "kept"] {
            std::fs::write(lower.path().join("data").join(f), b"x").unwrap();
        }
        let diff = layer(&[
            ("data/", b""),
            ("data/.wh..wh..opq", b""),
            ("data/kept", b"new"),
        ]);
        let deleted = split_diff(diff.as_slice(), vec![], Some(lower.path())).unwrap();
        assert_eq!(deleted, ["/data/old"]);
    }

    #[test]
    fn deleted_files_go_back_as_whiteouts_and_escapes_are_refused() {
        let t = deletions_layer(&["/etc/passwd".into(), "/top".into()]).unwrap();
        assert_eq!(names(&t), ["etc/.wh.passwd", ".wh.top"]);
        for bad in ["/etc/../../x", "/", ""] {
            assert!(deletions_layer(&[bad.into()]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn gzip_and_plain_layers_read_the_same() {
        let plain = layer(&[("a", b"1")]);
        let mut gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        for bytes in [plain.clone(), gz] {
            let mut r = decompressed(std::io::Cursor::new(bytes)).unwrap();
            let mut got = vec![];
            r.read_to_end(&mut got).unwrap();
            assert_eq!(got, plain);
        }
    }

    #[test]
    fn unpack_keeps_files_and_directories_only_and_skips_what_it_is_told() {
        let mut b = tar::Builder::new(vec![]);
        for (name, data) in [("config.dump", &b"{}"[..]), ("rootfs-diff.tar", b"big")] {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o600);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, data).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "spec.dump", "/etc/shadow").unwrap();
        let bytes = b.into_inner().unwrap();
        let top = tempfile::tempdir().unwrap();
        let to = top.path().join("not-yet");
        unpack(bytes.as_slice(), &to, &[ROOTFS_DIFF]).unwrap();
        assert!(to.join(CONFIG_DUMP).is_file());
        assert!(!to.join(ROOTFS_DIFF).exists());
        assert!(std::fs::symlink_metadata(to.join(SPEC_DUMP)).is_err());
    }

    /// A hostile archive (the kubelet hands berthd a path; anyone may have written the file)
    /// writes nothing outside the scratch directory: entries climbing out with `..` are not
    /// unpacked, absolute ones land inside.
    #[test]
    fn unpack_keeps_climbing_and_absolute_entries_inside() {
        let mut b = tar::Builder::new(vec![]);
        for name in ["../escaped", "checkpoint/../../escaped2", "/abs-escaped"] {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o600);
            h.set_size(3);
            // set_path refuses these names: write them into the header as an attacker would.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, &b"bad"[..]).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let top = tempfile::tempdir().unwrap();
        let to = top.path().join("scratch");
        let _ = unpack(bytes.as_slice(), &to, &[]);
        for outside in ["escaped", "escaped2"] {
            assert!(!top.path().join(outside).exists(), "{outside} escaped");
        }
        assert!(!Path::new("/abs-escaped").exists());
        assert!(to.join("abs-escaped").is_file());
    }

    #[test]
    fn config_dump_uses_checkpointctls_names() {
        let c = ConfigDump {
            id: "c1".into(),
            rootfs_image_ref: "sha256:ab".into(),
            ..Default::default()
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["rootfsImageRef"], "sha256:ab");
        assert!(v.get("checkpointedTime").is_some());
        let back: ConfigDump = serde_json::from_value(v).unwrap();
        assert_eq!(back.id, "c1");
    }
}
