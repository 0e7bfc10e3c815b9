//! A task's checkpoint and restore, as the runtime sees them: the shim dumps a running task
//! into a directory of CRIU images, and a task is created to be restored from such a
//! directory (the shim restores it at Start). What becomes content of the images is
//! `core::checkpoint`'s.

use super::{CreateTask, Tasks};
use crate::core::context::Namespace;
use crate::core::error::Result;
use crate::core::metadata::containers::AnyValue;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What the checkpoint directory of a task created for restore is called in its work dir.
const RESTORE_DIR: &str = "checkpoint";

impl Tasks {
    /// A new, empty directory for CRIU images, on the filesystem of the tasks' work
    /// directories (so a restore can move it there); the caller removes it.
    pub fn checkpoint_scratch(&self) -> Result<PathBuf> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let parent = self.cfg.root.join("checkpoints");
        super::bundle::private_dir(&parent)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        super::bundle::private_dir(&dir)?;
        Ok(dir)
    }

    /// Dumps the running task of container `id` into `images` (CheckpointOptions in
    /// `options` say whether it exits).
    pub async fn checkpoint(
        &self,
        ns: &Namespace,
        id: &str,
        images: &Path,
        options: Option<AnyValue>,
    ) -> Result<()> {
        let task = self.live(ns, id)?;
        task.client.checkpoint(id, images, options).await
    }

    /// Creates container `req.container_id`'s task to be restored from the CRIU images in
    /// `images` when it starts; the directory moves into the task's work directory and goes
    /// with the task.
    pub async fn restore(&self, ns: Namespace, req: CreateTask, images: PathBuf) -> Result<u32> {
        self.create_with(ns, req, Some(images)).await
    }

    /// Where a restored task's images go: moved into its (new) work directory.
    pub(super) fn adopt_images(&self, work: &Path, images: &Path) -> Result<PathBuf> {
        let to = work.join(RESTORE_DIR);
        std::fs::rename(images, &to).map_err(super::bundle::io(format!(
            "move checkpoint {} to {}",
            images.display(),
            to.display()
        )))?;
        Ok(to)
    }
}
