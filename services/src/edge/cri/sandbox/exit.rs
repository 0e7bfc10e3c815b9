//! The pause process's exit: waited for, and the pod marked not ready.

use super::*;

impl Cri {
    /// Waits for the pause process to end, then marks the sandbox not ready.
    pub(in crate::edge::cri) fn watch_sandbox(&self, id: &str) {
        let this = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if this
                .tasks
                .wait(this.ns.clone(), init_ref(&id))
                .await
                .is_ok()
            {
                let lock = this.lock_for(&id);
                let _held = lock.lock().await;
                this.sandbox_exited(&id).await;
            }
        });
    }

    /// The pause process is gone: its task is deleted (the shim goes) and the pod is not
    /// ready; its network stays until StopPodSandbox.
    pub(in crate::edge::cri) async fn sandbox_exited(&self, id: &str) {
        self.pause_gone(id, true).await;
    }

    /// As [`Cri::sandbox_exited`]; without `record`, the pod's record is left to the caller,
    /// which writes it next anyway (StopPodSandbox: one write of the stopped pod, not two).
    pub(super) async fn pause_gone(&self, id: &str, record: bool) {
        match self.tasks.delete(self.ns.clone(), id.to_string()).await {
            Ok(_) => {}
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => tracing::warn!(sandbox = id, error = %e, "cannot delete the pause task"),
        }
        let Ok(mut sb) = self.sandbox(id) else { return };
        if sb.meta.pid != 0 {
            sb.meta.pid = 0;
            if !record {
                self.sandboxes.insert(id, sb.clone());
            } else if let Err(e) = self.persist_sandbox(&sb).await {
                tracing::warn!(sandbox = id, error = %e, "cannot record the sandbox's exit");
            }
            self.sandbox_event(&sb, cri::ContainerEventType::ContainerStoppedEvent);
        }
    }
}
