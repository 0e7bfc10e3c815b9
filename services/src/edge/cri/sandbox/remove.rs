//! RemovePodSandbox, and the teardown that also undoes a failed Run.

use super::*;

impl Cri {
    /// Stops the sandbox if needed, removes its containers and everything it owns.
    pub async fn remove_sandbox(&self, id: &str) -> Result<()> {
        let sb = match self.sandbox(id) {
            Ok(s) => s,
            Err(e) if e.kind() == Kind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop_sandbox(&sb.id).await?;
        for c in self.members(&sb.id) {
            self.remove_container(&c.id).await?;
        }
        let lock = self.lock_for(&sb.id);
        let _held = lock.lock().await;
        self.teardown_sandbox(&sb.id, false).await;
        self.sandboxes.remove(&sb.id);
        self.names.release(&sb.meta.name);
        self.sandbox_event(&sb, cri::ContainerEventType::ContainerDeletedEvent);
        drop(_held);
        self.nri_pod_event(&sb, true).await;
        Ok(())
    }

    /// Removes whatever of a sandbox exists: task, network, netns, shm, files, snapshot,
    /// record. Used by Remove and to undo a failed Run.
    pub(in crate::edge::cri) async fn teardown_sandbox(&self, id: &str, undo_network: bool) {
        let snapshotter = match self.sandbox(id) {
            Ok(sb) => self.pod_snapshotter(&sb),
            Err(_) => self.cfg.snapshotter.clone(),
        };
        let _ = self
            .tasks
            .kill(self.ns.clone(), init_ref(id), libc::SIGKILL as u32, true)
            .await;
        let _ = self.tasks.delete(self.ns.clone(), id.to_string()).await;
        if undo_network {
            if let Ok(sb) = self.sandbox(id) {
                if sb.meta.network_ready || !sb.meta.netns.is_empty() {
                    let _ = self.network_down(&sb).await;
                }
            }
        }
        let (netns, state, dir) = (
            self.netns_path(id),
            self.sandbox_state_dir(id),
            self.sandbox_dir(id),
        );
        // The pod's files and its snapshot are apart: both removals wait on the disk at once.
        let files = blocking(move || {
            let _ = netns::remove_netns(&netns);
            unmount(&state.join("shm"));
            let _ = std::fs::remove_dir_all(&state);
            let _ = std::fs::remove_dir_all(&dir);
            Ok(())
        });
        let snapshot = self
            .snapshots
            .remove(self.ns.clone(), &snapshotter, id.to_string());
        let (_, removed) = tokio::join!(files, snapshot);
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => {
                tracing::warn!(sandbox = id, error = %e, "cannot remove the sandbox snapshot")
            }
        }
        match self.records.delete(self.ns.clone(), id.to_string()).await {
            Ok(_) => {}
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => tracing::warn!(sandbox = id, error = %e, "cannot remove the sandbox record"),
        }
    }
}
