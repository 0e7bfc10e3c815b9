//! A container's exit: waited for, recorded (code, reason, times), and picked up again
//! after a berthd restart.

use super::*;
use crate::edge::cri::nri::Happened;

impl Cri {
    /// After a berthd restart: the log copiers and exit waiter of a container that was
    /// running, or its exit recorded if it ended meanwhile.
    pub(in crate::edge::cri) async fn reattach(&self, c: &Container) {
        match self.tasks.state(self.ns.clone(), init_ref(&c.id)).await {
            Ok(p)
                if p.status == crate::core::runtime::Status::Running
                    || p.status == crate::core::runtime::Status::Paused =>
            {
                drop(self.attach_logs(c));
                self.watch_container(&c.id);
            }
            Ok(p) => {
                drop(self.attach_logs(c));
                self.container_exited(&c.id, Some((p.exit_status, p.exited_at)))
                    .await;
            }
            Err(_) => self.container_exited(&c.id, None).await,
        }
    }

    pub(in crate::edge::cri) fn watch_container(&self, id: &str) {
        let this = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            match this.tasks.wait(this.ns.clone(), init_ref(&id)).await {
                Ok(e) => {
                    let lock = this.lock_for(&id);
                    let _held = lock.lock().await;
                    this.container_exited(&id, Some((e.exit_status, e.exited_at)))
                        .await;
                }
                Err(e) => tracing::debug!(container = id, error = %e, "wait ended"),
            }
        });
    }

    /// Records how the container ended (once): the task is deleted, the log flushed, exit
    /// code, time and reason kept. `None`: the task is gone and its exit unknown.
    pub(in crate::edge::cri) async fn container_exited(&self, id: &str, exit: Option<(u32, i64)>) {
        let Ok(mut c) = self.container(id) else {
            return;
        };
        if c.meta.finished_at != 0 {
            return;
        }
        let deleted = self.tasks.delete(self.ns.clone(), id.to_string()).await;
        let (status, at) = match (exit, deleted) {
            (Some((s, at)), _) => (s, at),
            (None, Ok(e)) => (e.exit_status, e.exited_at),
            (None, Err(_)) => (crate::core::runtime::KILLED_EXIT_STATUS, 0),
        };
        self.detach_logs(id).await;
        c.meta.finished_at = if at > 0 {
            at
        } else {
            crate::core::metadata::now()
        };
        c.meta.exit_code = status as i32;
        c.meta.pid = 0;
        let oom = self.oom.take(id);
        c.meta.reason = if oom {
            "OOMKilled".into()
        } else if status == 0 {
            "Completed".into()
        } else {
            "Error".into()
        };
        if let Err(e) = self.persist_container(&c).await {
            tracing::warn!(container = id, error = %e, "cannot record the container's exit");
        }
        self.event(&c, cri::ContainerEventType::ContainerStoppedEvent);
        self.nri_container_event(&c, Happened::Stopped).await;
    }
}
