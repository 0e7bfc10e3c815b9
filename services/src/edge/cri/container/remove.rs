//! RemoveContainer: the task, snapshot, record and state of a container.

use super::*;
use crate::edge::cri::nri::Happened;

impl Cri {
    /// Removes a container (stopping it first). Unknown ids are not errors.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let c = match self.container(id) {
            Ok(c) => c,
            Err(e) if e.kind() == Kind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop_container(&c.id, 0).await?;
        let lock = self.lock_for(&c.id);
        let _held = lock.lock().await;
        let _ = self.tasks.delete(self.ns.clone(), c.id.clone()).await;
        self.detach_logs(&c.id).await;
        let snapshotter = self.container_snapshotter(&c);
        self.unmount_image_volumes(&c.id, &c.config.mounts, &snapshotter)
            .await?;
        match self
            .snapshots
            .remove(self.ns.clone(), &snapshotter, c.id.clone())
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => return Err(e),
        }
        match self.records.delete(self.ns.clone(), c.id.clone()).await {
            Ok(_) => {}
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => return Err(e),
        }
        let _ = std::fs::remove_dir_all(self.container_state_dir(&c.id));
        {
            self.containers.remove(&c.id);
            self.names.release(&c.meta.name);
        }
        self.event(&c, cri::ContainerEventType::ContainerDeletedEvent);
        drop(_held);
        self.nri_container_event(&c, Happened::Removed).await;
        Ok(())
    }
}
