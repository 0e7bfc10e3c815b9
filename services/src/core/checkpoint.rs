//! Checkpoints as content, as containerd's Tasks service keeps them: a running task dumped
//! by CRIU (through its shim) becomes a tar of the image directory
//! ([`media::CHECKPOINT_CRIU_TAR`]) and the container's spec
//! ([`media::CHECKPOINT_CONFIG`]) in the content store; a task created with such a tar is
//! restored from it instead of started fresh. The index that ties them to an image, the
//! rootfs diff and the options is the client's (`ctr c checkpoint`, `berth checkpoint`).

use crate::core::content::Content;
use crate::core::context::{Ctx, Namespace};
use crate::core::error::{blocking, Error, Result};
use crate::core::metadata::containers::AnyValue;
use crate::core::metadata::images::Descriptor;
use crate::core::metadata::{Labels, MetadataStore};
use crate::core::runtime::{CreateTask, Tasks};
use berth_proto::vocab::media;
use std::path::{Path, PathBuf};

#[derive(Clone)]
pub struct Checkpoints {
    pub tasks: Tasks,
    pub content: Content,
    pub store: MetadataStore,
}

/// A request to checkpoint a running task.
#[derive(Debug, Clone, Default)]
pub struct CheckpointTask {
    pub container_id: String,
    /// The runtime's checkpoint options (runc's `CheckpointOptions`), handed to the shim.
    pub options: Option<AnyValue>,
    /// Where the caller wants the images (the options' `image_path`): left there, and
    /// nothing written to the content store, as containerd does.
    pub image_path: Option<PathBuf>,
}

/// Removes a scratch directory however the work in it ends.
pub struct Scratch(pub PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Checkpoints {
    /// Dumps the task and, unless the caller named its own image path, stores the images'
    /// tar and the container's spec (encoded by `encode_spec`, the wire's business) as
    /// content; their descriptors, in that order.
    pub async fn checkpoint(
        &self,
        ctx: Ctx,
        req: CheckpointTask,
        encode_spec: fn(&AnyValue) -> Vec<u8>,
    ) -> Result<Vec<Descriptor>> {
        let container = self.store.container_get(&ctx.ns, &req.container_id)?;
        if let Some(path) = &req.image_path {
            self.tasks
                .checkpoint(&ctx.ns, &req.container_id, path, req.options)
                .await?;
            return Ok(vec![]);
        }
        let scratch = Scratch(self.tasks.checkpoint_scratch()?);
        self.tasks
            .checkpoint(&ctx.ns, &req.container_id, &scratch.0, req.options)
            .await?;
        let (content, id) = (self.content.clone(), req.container_id.clone());
        let spec = container.spec.as_ref().map(encode_spec).unwrap_or_default();
        blocking(move || {
            let images = &scratch.0;
            let criu = content.ingest_sync(
                &ctx,
                &format!("checkpoint-{id}-criu"),
                Labels::default(),
                |w| tar_dir(images, w),
            )?;
            let config = content.ingest_sync(
                &ctx,
                &format!("checkpoint-{id}-spec"),
                Labels::default(),
                |w| w.write_all(&spec).map_err(|e| Error::io("write spec", e)),
            )?;
            Ok(vec![
                descriptor(media::CHECKPOINT_CRIU_TAR, criu),
                descriptor(media::CHECKPOINT_CONFIG, config),
            ])
        })
        .await
    }

    /// Creates a task restored from the CRIU tar `checkpoint` (a descriptor of
    /// [`media::CHECKPOINT_CRIU_TAR`]): it is unpacked, and the shim restores from it at
    /// Start.
    pub async fn restore(
        &self,
        ns: Namespace,
        req: CreateTask,
        checkpoint: Descriptor,
    ) -> Result<u32> {
        if checkpoint.media_type != media::CHECKPOINT_CRIU_TAR {
            return Err(Error::invalid(format!(
                "unsupported checkpoint type {:?}: want {}",
                checkpoint.media_type,
                media::CHECKPOINT_CRIU_TAR
            )));
        }
        let scratch = Scratch(self.tasks.checkpoint_scratch()?);
        let (content, dir, n) = (self.content.clone(), scratch.0.clone(), ns.clone());
        blocking(move || {
            let (blob, _) = content.open_blob_sync(&n, &checkpoint.digest)?;
            untar_into(blob, &dir)
        })
        .await?;
        // The task takes the directory; what is left of it on failure goes with `scratch`.
        self.tasks.restore(ns, req, scratch.0.clone()).await
    }
}

fn descriptor(media_type: &str, blob: crate::core::metadata::content::BlobRecord) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: blob.digest,
        size: blob.size,
        annotations: Labels::default(),
    }
}

/// The directory's files as a tar, named relative to it (CRIU's image directory is flat).
pub fn tar_dir(dir: &Path, w: &mut dyn std::io::Write) -> Result<()> {
    let io = |e| Error::io(format!("tar {}", dir.display()), e);
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<std::io::Result<_>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    let mut tar = tar::Builder::new(w);
    tar.follow_symlinks(false);
    for e in entries {
        let name = e.file_name();
        if e.file_type().map_err(io)?.is_dir() {
            tar.append_dir_all(&name, e.path()).map_err(io)?;
        } else {
            tar.append_path_with_name(e.path(), &name).map_err(io)?;
        }
    }
    tar.finish().map_err(io)
}

/// Unpacks a tar into `dir`; the tar crate refuses entries that would land outside it.
pub fn untar_into(r: impl std::io::Read, dir: &Path) -> Result<()> {
    let mut a = tar::Archive::new(r);
    a.set_preserve_permissions(true);
    a.unpack(dir)
        .map_err(|e| Error::io(format!("unpack checkpoint into {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_survives_tar_and_untar() {
        let from = tempfile::tempdir().unwrap();
        std::fs::write(from.path().join("inventory.img"), b"inv").unwrap();
        std::fs::create_dir(from.path().join("sub")).unwrap();
        std::fs::write(from.path().join("sub/x"), b"x").unwrap();
        let mut buf = vec![];
        tar_dir(from.path(), &mut buf).unwrap();
        let to = tempfile::tempdir().unwrap();
        untar_into(buf.as_slice(), to.path()).unwrap();
        assert_eq!(
            std::fs::read(to.path().join("inventory.img")).unwrap(),
            b"inv"
        );
        assert_eq!(std::fs::read(to.path().join("sub/x")).unwrap(), b"x");
    }

    /// A tar entry named `name` (written raw: the builder refuses `..`) holding `data`, or
    /// a symlink to `link`.
    fn raw_entry(t: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8], link: Option<&str>) {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        if let Some(to) = link {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_link_name(to).unwrap();
        }
        h.set_cksum();
        t.append(&h, data).unwrap();
    }

    #[test]
    fn a_checkpoint_tar_writes_nothing_outside_its_directory() {
        let top = tempfile::tempdir().unwrap();
        let (to, outside) = (top.path().join("to"), top.path().join("outside"));
        std::fs::create_dir_all(&to).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        for (name, link) in [
            ("../escaped", None),
            ("link", Some(outside.to_str().unwrap())),
        ] {
            let mut t = tar::Builder::new(vec![]);
            raw_entry(&mut t, name, b"", link);
            if link.is_some() {
                raw_entry(&mut t, "link/escaped", b"x", None);
            }
            let tar = t.into_inner().unwrap();
            let mut a = tar::Archive::new(tar.as_slice());
            let first = a.entries().unwrap().next().unwrap().unwrap();
            assert_eq!(&*first.path_bytes(), name.as_bytes(), "the tar is hostile");
            // Refused or skipped; either way nothing lands outside.
            let _ = untar_into(tar.as_slice(), &to);
            assert!(!top.path().join("escaped").exists(), "{name}");
            assert!(!outside.join("escaped").exists(), "{name}");
        }
    }
}
