//! CRI restore (containerd 2.1's, CRI-O's): a CreateContainer whose image is a checkpoint
//! archive (a tar on this host, as the kubelet and crictl pass it) or an image holding
//! one (marked by a checkpoint annotation on its index or manifest) makes a container of
//! the checkpoint's base image, with the archive's `rootfs-diff.tar` applied to its
//! snapshot and its `deleted.files` removed, in the new pod. Its CRIU images wait in the
//! container's state directory, and StartContainer restores the process tree from them
//! (`runc restore`, in the new pod's namespaces) instead of starting it fresh. Restoring
//! needs runc and CRIU: a pod on the native runtime is refused, saying so. Off unless
//! `[cri] enable_experimental_restore_via_create` (containerd 2.3's key and default).

use super::checkpoint_archive as archive;
use super::image::ImageInfo;
use super::{Cri, Sandbox};
use crate::core::checkpoint::Scratch;
use crate::core::error::{blocking, Error, Result};
use crate::core::metadata::Labels;
use crate::core::runtime::CreateTask;
use berth_proto::cri::v1 as cri;
use std::path::{Path, PathBuf};

/// Where a checkpoint came from.
pub(super) enum Source {
    Archive(PathBuf),
    Image(ImageInfo),
}

/// A checkpoint CreateContainer was asked to restore: where it is and who it was.
pub(super) struct Checkpointed {
    source: Source,
    config: archive::ConfigDump,
    /// `status.dump`, the CRI ContainerStatus at checkpoint time (null when absent).
    status: serde_json::Value,
}

/// Documents larger than this are not an image index or manifest worth reading.
const MAX_DOCUMENT: i64 = 4 << 20;

/// Archive members left out when only who the container was is wanted.
const BULK: [&str; 6] = [
    archive::CHECKPOINT_DIR,
    archive::ROOTFS_DIFF,
    archive::DELETED_FILES,
    archive::CONTAINER_LOG,
    archive::STATS_DUMP,
    "dump.log",
];

impl Cri {
    /// The checkpoint `image_ref` names, if it names one, with the container's config made
    /// the restored container's: its image the checkpoint's base image (returned, to be
    /// looked up as any), the original annotations under the request's, and containerd's
    /// `restored`, `checkpointedAt` and `checkpointImage`.
    ///
    /// Answers what the container is made of: the checkpoint if any, the image reference and
    /// the image it names (looked up once here, for a checkpoint and a plain image alike).
    pub(super) async fn checkpoint_named(
        &self,
        sb: &Sandbox,
        config: &mut cri::ContainerConfig,
        image_ref: String,
    ) -> Result<(Option<Checkpointed>, String, Option<ImageInfo>)> {
        let source = match self.checkpoint_source(&image_ref).await? {
            Ok(source) => source,
            Err(plain) => return Ok((None, image_ref, plain)),
        };
        let image_ref = image_ref.as_str();
        if !self.cfg.enable_experimental_restore_via_create {
            return Err(Error::precondition(format!(
                "image {image_ref:?} is a checkpoint, and restoring one through CreateContainer is off: \
                 set [cri] enable_experimental_restore_via_create = true in berthd's config to allow it"
            )));
        }
        self.require_runc(sb)?;
        let (config_dump, status) = match &source {
            Source::Archive(path) => {
                let path = path.clone();
                let scratch = Scratch(self.tasks.checkpoint_scratch()?);
                blocking(move || {
                    let f = std::fs::File::open(&path)
                        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
                    archive::unpack(std::io::BufReader::new(f), &scratch.0, &BULK)?;
                    read_who(&scratch.0)
                })
                .await?
            }
            Source::Image(image) => self.in_image_tree(sb, image, read_who).await?,
        };
        let base = self.base_image(&config_dump).await?;
        let mut annotations: std::collections::HashMap<String, String> = status["annotations"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        annotations.extend(config.annotations.drain());
        annotations.insert("restored".into(), "true".into());
        annotations.insert(
            "checkpointedAt".into(),
            config_dump.checkpointed_time.clone(),
        );
        annotations.insert("checkpointImage".into(), image_ref.to_string());
        config.annotations = annotations;
        let image = config.image.get_or_insert_with(Default::default);
        image.image = base.clone();
        if let Some(u) = status["image"]["user_specified_image"].as_str() {
            image.user_specified_image = u.to_string();
        }
        let base_image = self.image_find(&base).await?;
        Ok((
            Some(Checkpointed {
                source,
                config: config_dump,
                status,
            }),
            base,
            base_image,
        ))
    }

    /// An archive on this host, or an image carrying a checkpoint annotation; else (Err) the
    /// plain image `image_ref` names, if present.
    async fn checkpoint_source(
        &self,
        image_ref: &str,
    ) -> Result<std::result::Result<Source, Option<ImageInfo>>> {
        let path = Path::new(image_ref);
        if path.is_absolute() {
            if let Ok(m) = tokio::fs::metadata(path).await {
                if m.is_file() {
                    return Ok(Ok(Source::Archive(path.to_path_buf())));
                }
            }
        }
        let Some(image) = self.image_find(image_ref).await? else {
            return Ok(Err(None));
        };
        let target = image.target.clone();
        let mut marked = archive::CHECKPOINT_ANNOTATIONS
            .iter()
            .any(|a| target.annotations.contains_key(*a));
        if !marked {
            let (content, ns) = (self.content.clone(), self.ns.clone());
            let doc = blocking(move || {
                content.read_document_sync(&ns, &target.digest, target.size, MAX_DOCUMENT)
            })
            .await?;
            let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap_or_default();
            marked = archive::CHECKPOINT_ANNOTATIONS
                .iter()
                .any(|a| doc["annotations"].get(*a).is_some());
        }
        Ok(if marked {
            Ok(Source::Image(image))
        } else {
            Err(Some(image))
        })
    }

    /// Restoring runs `runc restore`: the pod's runtime must be runc.
    fn require_runc(&self, sb: &Sandbox) -> Result<()> {
        let mut binary = self.pod_handler(sb).runtime_binary;
        if binary.is_empty() {
            binary = std::env::var(crate::core::runtime::shim::RUNTIME_ENV).unwrap_or_default();
        }
        if binary.is_empty() || binary == "native" {
            return Err(Error::precondition(format!(
                "restoring a checkpoint needs runc and CRIU, and pod {} runs on berth's native runtime \
                 (runtime handler {:?}); run the pod under a runtime handler whose runtime is runc",
                sb.id, sb.meta.runtime_handler
            )));
        }
        Ok(())
    }

    /// The checkpointed container's image, as present here: by the reference it was
    /// checkpointed with, else by its name.
    async fn base_image(&self, c: &archive::ConfigDump) -> Result<String> {
        for r in [&c.rootfs_image_ref, &c.rootfs_image_name, &c.rootfs_image] {
            if !r.is_empty() && self.image_find(r).await?.is_some() {
                return Ok(r.clone());
            }
        }
        Err(Error::not_found(format!(
            "the checkpoint's base image {:?} is not present: pull it first",
            if c.rootfs_image_name.is_empty() {
                &c.rootfs_image_ref
            } else {
                &c.rootfs_image_name
            }
        )))
    }

    /// Runs `f` on the files of `image` (an image holding a checkpoint archive's members),
    /// mounted read-only for the while.
    async fn in_image_tree<T: Send + 'static>(
        &self,
        sb: &Sandbox,
        image: &ImageInfo,
        f: impl FnOnce(&Path) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let snapshotter = self.pod_snapshotter(sb);
        let parent = self.image_unpack(image, &snapshotter).await?;
        let key = format!("restore-view-{}", uuid::Uuid::new_v4().simple());
        let mounts = self
            .snapshots
            .view(self.ctx(), &snapshotter, key.clone(), parent, Labels::new())
            .await?;
        let done = blocking(move || {
            let m = berth_snapshotters::mount::TempMount::new(&mounts)?;
            f(m.path())
        })
        .await;
        let _ = self
            .snapshots
            .remove(self.ns.clone(), &snapshotter, key)
            .await;
        done
    }

    /// Where container `id`'s checkpoint waits for StartContainer.
    fn restore_dir(&self, id: &str) -> PathBuf {
        self.container_state_dir(id).join("restore")
    }

    /// CreateContainer's last step for a restored container `id` (in pod `sb`): the CRIU
    /// images put where StartContainer finds them, the archive's rootfs changes applied to
    /// its snapshot, and its log carried over.
    pub(super) async fn prepare_restore(
        &self,
        id: &str,
        sb: &Sandbox,
        from: Checkpointed,
    ) -> Result<()> {
        let dir = self.restore_dir(id);
        let keep = [
            archive::CONFIG_DUMP,
            archive::SPEC_DUMP,
            archive::STATUS_DUMP,
        ];
        match from.source {
            Source::Archive(path) => {
                let dir = dir.clone();
                blocking(move || {
                    let f = std::fs::File::open(&path)
                        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
                    archive::unpack(std::io::BufReader::new(f), &dir, &keep)
                })
                .await?
            }
            Source::Image(image) => {
                let to = dir.clone();
                self.in_image_tree(sb, &image, move |tree| copy_tree(tree, &to))
                    .await?
            }
        }
        let inventory = dir.join(archive::CHECKPOINT_DIR).join("inventory.img");
        if !tokio::fs::try_exists(&inventory).await.unwrap_or(false) {
            return Err(Error::invalid(format!(
                "the checkpoint has no CRIU images ({}/inventory.img): nothing to restore",
                archive::CHECKPOINT_DIR
            )));
        }
        let record = self.records.get(self.ns.clone(), id.to_string()).await?;
        let mounts = self
            .snapshots
            .mounts(self.ns.clone(), &record.snapshotter, id.to_string())
            .await?;
        let log = self.container(id)?.meta.log_path;
        tracing::info!(
            container = id,
            checkpoint = from.config.id,
            name = from.status["metadata"]["name"].as_str().unwrap_or(""),
            "restoring container from checkpoint"
        );
        blocking(move || apply_rootfs_changes(&dir, &mounts, &log)).await
    }

    /// StartContainer's task: restored from the container's checkpoint when it has one,
    /// else created fresh.
    pub(super) async fn create_or_restore_task(&self, id: &str, req: CreateTask) -> Result<u32> {
        let dir = self.restore_dir(id);
        let images = dir.join(archive::CHECKPOINT_DIR);
        if !tokio::fs::try_exists(&images).await.unwrap_or(false) {
            return self.tasks.create(self.ns.clone(), req).await;
        }
        // The task adopts its images by renaming them into its work directory, on the
        // daemon's root filesystem; the state directory may be elsewhere.
        let scratch = Scratch(self.tasks.checkpoint_scratch()?);
        let to = scratch.0.clone();
        blocking(move || move_files(&images, &to)).await?;
        let restored = self
            .tasks
            .restore(self.ns.clone(), req, scratch.0.clone())
            .await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        restored
    }
}

/// config.dump and status.dump from an unpacked archive.
fn read_who(dir: &Path) -> Result<(archive::ConfigDump, serde_json::Value)> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| {
            Error::invalid(format!(
                "the checkpoint has no readable {name}: {e}; is it a container checkpoint archive?"
            ))
        })
    };
    let config = serde_json::from_slice(&read(archive::CONFIG_DUMP)?)
        .map_err(|e| Error::invalid(format!("the checkpoint's {}: {e}", archive::CONFIG_DUMP)))?;
    let status = match read(archive::STATUS_DUMP) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    };
    Ok((config, status))
}

/// `rootfs-diff.tar` applied to the snapshot `mounts` and `deleted.files` removed from it
/// (then both dropped from `dir`); the checkpointed log copied to `log`.
fn apply_rootfs_changes(dir: &Path, mounts: &[berth_snapshotters::Mount], log: &str) -> Result<()> {
    let io = |what: String| move |e| Error::io(what, e);
    let diff = dir.join(archive::ROOTFS_DIFF);
    if diff.is_file() {
        let f = std::fs::File::open(&diff).map_err(io(format!("open {}", diff.display())))?;
        let layer = archive::decompressed(std::io::BufReader::new(f))?;
        berth_snapshotters::layer::apply_to_mounts(layer, mounts)?;
        std::fs::remove_file(&diff).map_err(io(format!("remove {}", diff.display())))?;
    }
    let deleted = dir.join(archive::DELETED_FILES);
    if deleted.is_file() {
        let list = std::fs::read(&deleted).map_err(io(format!("read {}", deleted.display())))?;
        let list: Vec<String> = serde_json::from_slice(&list).map_err(|e| {
            Error::invalid(format!("the checkpoint's {}: {e}", archive::DELETED_FILES))
        })?;
        let layer = archive::deletions_layer(&list)?;
        berth_snapshotters::layer::apply_to_mounts(layer.as_slice(), mounts)?;
        std::fs::remove_file(&deleted).map_err(io(format!("remove {}", deleted.display())))?;
    }
    let old_log = dir.join(archive::CONTAINER_LOG);
    if !log.is_empty() && old_log.is_file() {
        if let Some(parent) = Path::new(log).parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
        }
        std::fs::copy(&old_log, log).map_err(io(format!("restore the log into {log}")))?;
    }
    Ok(())
}

/// Copies the regular files and directories under `from` into `to` (an image's tree:
/// links and devices are no part of a checkpoint and are left behind).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let io = |what: String| move |e| Error::io(what, e);
    std::fs::create_dir_all(to).map_err(io(format!("create {}", to.display())))?;
    for e in std::fs::read_dir(from).map_err(io(format!("read {}", from.display())))? {
        let e = e.map_err(io(format!("read {}", from.display())))?;
        let kind = e
            .file_type()
            .map_err(io(format!("stat {}", e.path().display())))?;
        let target = to.join(e.file_name());
        if kind.is_dir() {
            copy_tree(&e.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(e.path(), &target).map_err(io(format!("copy {}", e.path().display())))?;
        }
    }
    Ok(())
}

/// Moves the files of directory `from` into the existing directory `to`: renamed where
/// both are on one filesystem, copied where not.
fn move_files(from: &Path, to: &Path) -> Result<()> {
    let io = |what: String| move |e| Error::io(what, e);
    for e in std::fs::read_dir(from).map_err(io(format!("read {}", from.display())))? {
        let e = e.map_err(io(format!("read {}", from.display())))?;
        let target = to.join(e.file_name());
        if std::fs::rename(e.path(), &target).is_err() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                copy_tree(&e.path(), &target)?;
            } else {
                std::fs::copy(e.path(), &target)
                    .map_err(io(format!("copy {}", e.path().display())))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_move_whole_and_links_are_not_copied() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(a.path().join("inventory.img"), b"inv").unwrap();
        std::fs::create_dir(a.path().join("sub")).unwrap();
        std::fs::write(a.path().join("sub/x"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", a.path().join("sub/link")).unwrap();
        let copied = b.path().join("copy");
        copy_tree(a.path(), &copied).unwrap();
        assert_eq!(std::fs::read(copied.join("sub/x")).unwrap(), b"x");
        assert!(std::fs::symlink_metadata(copied.join("sub/link")).is_err());
        let moved = b.path().join("moved");
        std::fs::create_dir(&moved).unwrap();
        move_files(a.path(), &moved).unwrap();
        assert_eq!(std::fs::read(moved.join("inventory.img")).unwrap(), b"inv");
        assert!(!a.path().join("inventory.img").exists());
    }

    #[test]
    fn rootfs_changes_apply_to_a_tree_and_deletions_remove() {
        let (root, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/passwd"), b"root").unwrap();
        let mut b = tar::Builder::new(vec![]);
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(3);
        b.append_data(&mut h, "etc/motd", &b"new"[..]).unwrap();
        std::fs::write(
            dir.path().join(archive::ROOTFS_DIFF),
            b.into_inner().unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join(archive::DELETED_FILES),
            br#"["/etc/passwd"]"#,
        )
        .unwrap();
        let mounts = vec![berth_snapshotters::Mount {
            kind: "bind".into(),
            source: root.path().display().to_string(),
            options: vec!["rbind".into(), "rw".into()],
        }];
        apply_rootfs_changes(dir.path(), &mounts, "").unwrap();
        assert_eq!(std::fs::read(root.path().join("etc/motd")).unwrap(), b"new");
        assert!(!root.path().join("etc/passwd").exists());
        assert!(!dir.path().join(archive::ROOTFS_DIFF).exists());
    }
}
